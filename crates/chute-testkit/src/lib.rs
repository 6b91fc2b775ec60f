//! Test support for chute, used as a dev-dependency by the other crates'
//! tests.
//!
//! * [`data`]: deterministic test bytes and their hashes.
//! * [`harness`]: a real `chute serve` over a temporary directory, clients
//!   for it, a retry policy with short waits, a prefix's plan.
//! * [`memstore`]: an object store in memory, counting its requests.
//! * [`faultstore`]: a wrapper around any object store that fails chosen
//!   requests (errors, cut, slow or corrupted bodies, changed versions,
//!   delays).
//! * [`proxy`]: a loopback HTTP/1.1 proxy that injects S3-style faults
//!   between an S3 client and a local S3 server.
//! * [`tls`]: an HTTPS forwarder with a private test CA; [`sts`]: an
//!   STS endpoint answering AssumeRole with short-lived credentials.
//! * [`need`]: the real parts a test needs (FUSE, Python), failing under CI
//!   where they are missing.

pub mod data;
pub mod faultstore;
pub mod harness;
pub mod memstore;
pub mod need;
pub mod proxy;
pub mod sts;
pub mod tls;

pub use faultstore::{FaultStore, Op, StoreFault, StoreRule};
pub use harness::{fast_policy, BucketDir, ServedDir};
pub use memstore::{md5_etag, GetRecord, MemStore, RequestCounts};
