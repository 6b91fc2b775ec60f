//! Exit codes of the contract (doc/SEMANTICS.md): 2 for bad usage or input, 3 when the
//! data source cannot be reached or read; and the one-line rendering of errors.

use std::error::Error;

use chute_channel::ChannelError;
use chute_download::DownloadError;
use chute_pipe::PipeError;
use chute_plan::{
    Classify, DistributionError, ErrorClass, HostError, ManifestError, ShardError, UriError,
};
use chute_s3::StoreError;

pub const USAGE: u8 = ErrorClass::Usage.exit_code();

/// A problem with what the user asked for (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Classify for UsageError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Usage
    }
}

/// The exit code of the first cause in the chain that knows its class; 1 when
/// none does.
pub fn code_for(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(class_of)
        .map_or(ErrorClass::Local.exit_code(), ErrorClass::exit_code)
}

/// The class of `cause` when it is one of the library errors (each implements
/// [`Classify`]: this only finds which one it is).
fn class_of(cause: &(dyn Error + 'static)) -> Option<ErrorClass> {
    macro_rules! ask {
        ($($t:ty),*) => {$(
            if let Some(e) = cause.downcast_ref::<$t>() {
                return Some(e.class());
            }
        )*};
    }
    ask!(
        UsageError,
        UriError,
        ManifestError,
        HostError,
        DistributionError,
        ShardError,
        ChannelError,
        chute_channel::hosts::HostsError,
        StoreError,
        DownloadError,
        PipeError,
        chute_fastfile::FastFileError,
        chute_run::RunError
    );
    None
}

/// The error and its causes on one line, without repeating a cause that the
/// message before it already contains.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_is_classified_by_its_own_crate() {
        let unknown = "Sharded".parse::<chute_plan::Distribution>().unwrap_err();
        assert_eq!(code_for(&anyhow::Error::new(unknown)), 2);
        let shard = chute_plan::Shard::new(3, 2).unwrap_err();
        assert_eq!(code_for(&anyhow::Error::new(shard)), 2);
        let missing = StoreError::NoSuchBucket { bucket: "b".into() };
        let listing = anyhow::Error::new(ChannelError::Store(missing)).context("listing");
        assert_eq!(code_for(&listing), 3);
        let internal = DownloadError::Internal("a task panicked".into());
        assert_eq!(code_for(&anyhow::Error::new(internal)), 1);
        assert_eq!(code_for(&anyhow::anyhow!("no class")), 1);
    }
}
