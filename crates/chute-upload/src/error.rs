//! Typed errors of the upload side. Each names the object or file it concerns,
//! so the line `chute run` prints says what failed and why.

use std::path::PathBuf;

use chute_s3::{Classify, ErrorClass, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// A URI that cannot be a destination.
    #[error("{what} '{uri}': {reason}")]
    BadUri {
        what: &'static str,
        uri: String,
        reason: String,
    },

    /// The store refused or failed a request for this object.
    #[error("upload of {uri} failed: {source}")]
    Store {
        uri: String,
        #[source]
        source: StoreError,
    },

    /// A local file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The object in the store is not what was sent.
    #[error("upload of {uri} failed verification: {detail}")]
    Verify { uri: String, detail: String },

    /// Restoring checkpoints failed.
    #[error("restoring checkpoints from {uri} into {}: {detail}", path.display())]
    Restore {
        uri: String,
        path: PathBuf,
        detail: String,
    },

    /// A worker stopped unexpectedly (a bug, not an input problem).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Classify for UploadError {
    /// A destination URI is what the user wrote; the rest (the store, the files
    /// to send, a worker) counts as the source of the job's data, exit 3.
    fn class(&self) -> ErrorClass {
        match self {
            UploadError::BadUri { .. } => ErrorClass::Usage,
            UploadError::Store { source, .. } => match source.class() {
                ErrorClass::Usage => ErrorClass::Usage,
                _ => ErrorClass::Source,
            },
            _ => ErrorClass::Source,
        }
    }
}

impl UploadError {
    pub(crate) fn store(uri: &str, source: StoreError) -> Self {
        UploadError::Store {
            uri: uri.to_owned(),
            source,
        }
    }

    pub(crate) fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        UploadError::Read {
            path: path.into(),
            source,
        }
    }
}
