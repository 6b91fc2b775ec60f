//! Channel planning for chute: everything that decides *what* a channel delivers,
//! kept free of I/O so that it can be tested exhaustively and reused by every mode.
//!
//! - [`uri`]: source URIs (`s3://bucket/prefix`, `file:///abs/dir`) and object URLs.
//! - [`path`]: object key to safe relative path.
//! - [`plan`]: the channel plan built from a listing or a manifest;
//!   [`etag`]: the compact ETags it keeps.
//! - [`shard`]: `ShardedByS3Key` and host discovery.
//! - [`shuffle`]: the seeded, specified permutation of Pipe mode.
//! - [`manifest`]: SageMaker `ManifestFile` and `AugmentedManifestFile`.
//! - [`class`]: the error classification (usage / source / local) every crate shares.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod class;
pub mod etag;
pub mod manifest;
pub mod path;
pub mod plan;
pub mod redact;
pub mod shard;
pub mod shuffle;
pub mod uri;

pub use class::{Classify, ErrorClass};
pub use etag::ETag;
pub use manifest::{
    augmented_objects, parse_augmented_manifest, parse_manifest, AugmentedField, AugmentedParser,
    AugmentedRecord, Manifest, ManifestEntry, ManifestError, ManifestParser, MAX_AUGMENTED_LINE,
    MAX_MANIFEST_ENTRY,
};
pub use path::{check_rel_path, relative_key, PathKind, SkipReason};
pub use plan::{plan_from_entries, plan_from_listing, ObjectInfo, Plan, PlannedObject, Skipped};
pub use shard::{
    discover_hosts, discover_job_hosts, shard_indices, Distribution, DistributionError, HostError,
    HostNames, HostSource, Hosts, JobHosts, Shard, ShardError, MAX_HOSTS,
};
pub use shuffle::{permutation, shuffle_then_shard};
pub use uri::{S3Url, SourceUri, UriError};
