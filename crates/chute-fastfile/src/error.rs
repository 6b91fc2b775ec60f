//! Typed errors of FastFile mode: what went wrong with a mount point, a mount
//! or an unmount, each naming the path and, where there is one, the fix.

use std::path::PathBuf;

use chute_plan::{Classify, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum FastFileError {
    #[error("mount point {path} does not exist (create the directory first)")]
    MissingMountPoint { path: PathBuf },

    #[error("mount point {path} is not a directory (pass an empty directory)")]
    NotADirectory { path: PathBuf },

    #[error("cannot use mount point {path}: {source}")]
    MountPointIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is already a mount point (unmount it first: chute unmount {path})")]
    AlreadyMounted { path: PathBuf },

    #[error("cannot mount a FUSE file system at {path}: {source} ({hint})")]
    Mount {
        path: PathBuf,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("the FUSE mount at {path} did not answer within {secs} s")]
    NotReady { path: PathBuf, secs: u64 },

    #[error("{path} is not mounted")]
    NotMounted { path: PathBuf },

    #[error("cannot unmount {path}: {detail}")]
    Unmount { path: PathBuf, detail: String },

    #[error(
        "permission bits must be within 0o7777, got {file:o} for files and {dir:o} for directories"
    )]
    BadMode { file: u16, dir: u16 },

    #[error("a memory budget of {given} bytes is too small: at least {min} bytes")]
    MemoryTooSmall { given: u64, min: u64 },

    #[error("{given} FUSE threads is out of range: 1 to {max}")]
    ThreadsOutOfRange { given: usize, max: usize },

    #[error("invalid mount option: {0}")]
    Options(String),

    /// The disk cache directory cannot be created, read or written.
    #[error("cannot use the disk cache directory {dir}: {source}")]
    Cache {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Classify for FastFileError {
    /// What the user asked for (a bad mount point or option) is at fault, or
    /// the machine (no FUSE, no permission).
    fn class(&self) -> ErrorClass {
        match self {
            FastFileError::MissingMountPoint { .. }
            | FastFileError::NotADirectory { .. }
            | FastFileError::AlreadyMounted { .. }
            | FastFileError::NotMounted { .. }
            | FastFileError::BadMode { .. }
            | FastFileError::MemoryTooSmall { .. }
            | FastFileError::ThreadsOutOfRange { .. }
            | FastFileError::Options(_)
            | FastFileError::Cache { .. } => ErrorClass::Usage,
            _ => ErrorClass::Local,
        }
    }
}

/// Why a block could not be read, as a reader sees it.
#[derive(Debug, Clone)]
pub(crate) enum BlockError {
    /// The object changed since it was listed: ESTALE.
    Stale,
    /// Anything else, after retries: EIO.
    Io,
}

impl BlockError {
    pub(crate) fn errno(&self) -> i32 {
        match self {
            BlockError::Stale => libc::ESTALE,
            BlockError::Io => libc::EIO,
        }
    }
}
