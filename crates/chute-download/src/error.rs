//! Typed errors of a download, each naming the file, object or directory it
//! concerns and, where there is one, the fix.
//!
//! Its [`Classify`] impl gives the exit code of the contract: a destination that
//! cannot hold the data is bad input (2), an object that cannot be read is the
//! source's fault (3), anything else on the local side is a plain failure (1).
//! Messages name no command-line flag: the caller adds its own way out.

use std::io;
use std::path::PathBuf;

use chute_s3::{Classify, ErrorClass, StoreError};

use crate::human_bytes;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// DEST cannot be used: not a directory, not creatable, a symlink or file in
    /// the way of a path the plan needs.
    #[error("destination {}: {detail}", path.display())]
    Destination { path: PathBuf, detail: String },

    /// The up-front free-space check failed.
    #[error(
        "not enough free space in {}: the download needs {} ({needed} bytes) for {objects} objects, but its file system has only {} ({available} bytes) free (free some space or choose another destination)",
        dest.display(),
        human_bytes(*needed),
        human_bytes(*available)
    )]
    NotEnoughSpace {
        dest: PathBuf,
        needed: u64,
        available: u64,
        objects: usize,
    },

    /// The file system filled up (or hit a quota) while the download ran.
    #[error("the file system of {} is full: cannot write {} ({size} bytes): {source}; temporary files were removed and no incomplete file was left under its final name (free some space and rerun: completed files are kept)", dest.display(), path.display())]
    DiskFull {
        dest: PathBuf,
        path: PathBuf,
        size: u64,
        #[source]
        source: io::Error,
    },

    /// Another download is writing into DEST (it holds DEST's lock).
    #[error("another download is writing to {} ({holder}); wait for it to finish or choose another destination", dest.display())]
    DestBusy { dest: PathBuf, holder: String },

    /// Another `chute download` holds the resume state of the same DEST.
    #[error("another chute download is writing to {} (it holds the lock on {}); wait for it or choose another destination", dest.display(), state.display())]
    Busy { dest: PathBuf, state: PathBuf },

    #[error(transparent)]
    Store(#[from] StoreError),

    /// The bytes received do not match what the store says the object is.
    #[error("s3://{bucket}/{key}: downloaded bytes failed verification: {detail}")]
    Verify {
        bucket: String,
        key: String,
        detail: String,
    },

    /// Any other local file-system failure.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A worker task ended abnormally (a bug: a panic in chute).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Classify for DownloadError {
    /// The destination that cannot take the download is bad input; a source
    /// that cannot be read or sent bad data is the source's fault.
    fn class(&self) -> ErrorClass {
        match self {
            DownloadError::Destination { .. }
            | DownloadError::NotEnoughSpace { .. }
            | DownloadError::DiskFull { .. }
            | DownloadError::Busy { .. }
            | DownloadError::DestBusy { .. } => ErrorClass::Usage,
            DownloadError::Store(e) => e.class(),
            DownloadError::Verify { .. } => ErrorClass::Source,
            DownloadError::Io { .. } | DownloadError::Internal(_) => ErrorClass::Local,
        }
    }
}

impl DownloadError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DownloadError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Whether an I/O error means "no room left" (full disk or quota).
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT
    ) || e.kind() == io::ErrorKind::StorageFull
}
