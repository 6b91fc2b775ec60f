//! The one classification of errors every chute crate shares: whose fault a
//! failure is, which decides the exit code of the contract (doc/SEMANTICS.md).
//!
//! Each library error implements [`Classify`]; the binary and `chute run` ask it
//! and never inspect another crate's variants. It lives in the lowest crate so
//! that every error type can implement it.

use crate::{DistributionError, HostError, ManifestError, ShardError, UriError};

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// What the user asked for or gave is wrong (a bad URI, option, config,
    /// destination): exit 2.
    Usage,
    /// The data source could not be reached or read, or sent bad data: exit 3.
    Source,
    /// The machine failed (no FUSE, a task died, a local file system error): exit 1.
    Local,
}

impl ErrorClass {
    /// The process exit code of the contract for this class.
    pub const fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Usage => 2,
            ErrorClass::Source => 3,
            ErrorClass::Local => 1,
        }
    }
}

/// An error that knows its [`ErrorClass`].
pub trait Classify {
    /// Whose fault this error is.
    fn class(&self) -> ErrorClass;

    /// Bad usage or input (exit 2).
    fn is_usage(&self) -> bool {
        self.class() == ErrorClass::Usage
    }

    /// The data source is at fault (exit 3).
    fn is_source(&self) -> bool {
        self.class() == ErrorClass::Source
    }
}

impl<T: Classify + ?Sized> Classify for std::sync::Arc<T> {
    fn class(&self) -> ErrorClass {
        (**self).class()
    }
}

impl<T: Classify + ?Sized> Classify for Box<T> {
    fn class(&self) -> ErrorClass {
        (**self).class()
    }
}

/// Everything planning rejects is in what the user wrote.
macro_rules! usage {
    ($($t:ty),*) => {$(
        impl Classify for $t {
            fn class(&self) -> ErrorClass {
                ErrorClass::Usage
            }
        }
    )*};
}
usage!(
    UriError,
    ManifestError,
    HostError,
    DistributionError,
    ShardError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_the_contract_exit_codes() {
        assert_eq!(ErrorClass::Usage.exit_code(), 2);
        assert_eq!(ErrorClass::Source.exit_code(), 3);
        assert_eq!(ErrorClass::Local.exit_code(), 1);
        let e = "s3:/x".parse::<crate::Distribution>().unwrap_err();
        assert!(e.is_usage() && !e.is_source());
    }
}
