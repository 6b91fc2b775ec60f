//! chute's object-store layer: everything chute knows about reading objects, and
//! nothing about how they are delivered (FUSE, FIFOs and downloads live elsewhere).
//!
//! The layer has two levels:
//! - [`ObjectStore`] is the narrow backend interface: one page of a listing, one
//!   HEAD, one attempt at a ranged GET. [`S3Store`] speaks S3 through `aws-sdk-s3`;
//!   [`LocalStore`] serves a local directory the same way (local mode, `file://`).
//!   Tests wrap a store to inject faults.
//! - [`Client`] puts policy on top of any store: retries with backoff and jitter,
//!   resumable ranged reads pinned to an ETag, concurrent fan-out listing, counters.

mod client;
mod config;
mod error;
mod express;
mod list;
mod local;
mod read;
mod retry;
mod s3;
mod stats;
mod store;
mod sts;
mod tls;
mod write;

pub use chute_plan::{Classify, ErrorClass};
pub use client::Client;
pub use config::{AssumeRole, S3Config};
pub use error::StoreError;
pub use express::{is_directory_bucket, listing_prefix};
pub use list::ListOptions;
pub use local::LocalStore;
pub use read::ReadStream;
pub use retry::{ReadLimits, RetryPolicy};
pub use s3::S3Store;
pub use stats::{RetryCause, Stats, StatsSnapshot};
pub use store::{GetResponse, ListPage, ObjectMeta, ObjectStore, MAX_OBJECT_SIZE};
pub use sts::parse_session_tag;
pub use write::{Completion, ObjectWrite, UploadedPart, Writer};
