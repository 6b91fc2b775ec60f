//! Exit codes of the contract (doc/SEMANTICS.md): 2 for bad usage or input, 3 when the
//! data source cannot be reached or read; and the one-line rendering of errors.

use chute_channel::ChannelError;
use chute_plan::{HostError, ManifestError, UriError};
use chute_s3::{ErrorClass, StoreError};

pub const USAGE: u8 = 2;
pub const SOURCE: u8 = 3;

/// A problem with what the user asked for (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<UsageError>()
            || cause.is::<UriError>()
            || cause.is::<ManifestError>()
            || cause.is::<HostError>()
        {
            return USAGE;
        }
        if let Some(c) = cause.downcast_ref::<ChannelError>() {
            return if c.is_usage() { USAGE } else { SOURCE };
        }
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return match s.class() {
                ErrorClass::Usage => USAGE,
                ErrorClass::Source => SOURCE,
            };
        }
    }
    1
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
