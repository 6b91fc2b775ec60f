//! Test support for chute, used as a dev-dependency by the other crates'
//! tests.
//!
//! * [`data`]: deterministic test bytes and their hashes.
//! * [`proxy`]: a loopback HTTP/1.1 proxy that injects S3-style faults
//!   between an S3 client and a local S3 server.
//! * [`need`]: the real parts a test needs (FUSE, Python), failing under CI
//!   where they are missing.

pub mod data;
pub mod need;
pub mod proxy;
