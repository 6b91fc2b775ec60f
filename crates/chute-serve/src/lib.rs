//! `chute serve`: a local directory as an S3 endpoint.
//!
//! Each sub-directory of ROOT is a bucket and the files below it are its objects,
//! keyed by their relative path. Clients speak the real S3 protocol (path-style
//! addressing, SigV4-signed with one configured key pair) through [s3s], so the same
//! client code that talks to AWS works here unchanged: for local debugging, the demo
//! and tests.
//!
//! Storage is [`s3s_fs`], improved where a training-data client notices the
//! difference from S3: every object has an ETag (the quoted hex MD5 of its content),
//! including files written straight into the directory; listings carry those ETags;
//! GET and HEAD honour `If-Match`/`If-None-Match` (and the date conditions); and GET
//! streams large chunks, so a single stream runs at hundreds of MB/s on loopback.
//!
//! ```no_run
//! # async fn demo() -> Result<(), chute_serve::ServeError> {
//! use chute_serve::{ServeConfig, Server};
//! let server = Server::start(ServeConfig {
//!     root: "/tmp/s3root".into(),
//!     addr: "127.0.0.1:0".parse().expect("literal address"),
//!     access_key: "chute".into(),
//!     secret_key: "chute-secret".into(),
//! })
//! .await?;
//! println!("S3 endpoint at {}", server.endpoint_url());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Only regular files and directories below ROOT are served: a symlink, wherever it
//! sits, is not listed, not read, and not written or deleted through (see
//! `confined.rs`).
//!
//! Unix only: file identity for the ETag cache, positional reads and
//! symlink-refusing lookups use Unix APIs.

mod access;
mod attrs;
mod backend;
mod body;
mod conditions;
mod confined;
mod error;
mod etag;
mod list;
mod paths;
mod server;

pub use access::{KeyRing, RequestLog, SeenRequest, ServeOptions};
pub use error::ServeError;
pub use server::{ServeConfig, Server};
