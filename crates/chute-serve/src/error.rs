//! Why a server could not be started.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors from [`crate::Server::start`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The directory to serve is missing or cannot be inspected.
    #[error("cannot serve {}: {source} (ROOT must be an existing directory; each sub-directory is a bucket)", root.display())]
    RootUnavailable {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The path to serve exists but is not a directory.
    #[error("cannot serve {}: not a directory (ROOT must be a directory; each sub-directory is a bucket)", root.display())]
    RootNotADirectory { root: PathBuf },

    /// The storage layer could not be set up over the directory.
    #[error("cannot serve {}: {detail}", root.display())]
    Storage { root: PathBuf, detail: String },

    /// Signed requests need a key pair; an empty one would lock every client out.
    #[error("the access key and the secret key must both be non-empty")]
    MissingCredentials,

    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
