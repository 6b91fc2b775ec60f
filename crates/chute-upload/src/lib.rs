//! The write side of `chute run`: what a training job leaves behind, sent to S3.
//!
//! - [`upload_outputs`]: after a successful command, `<base>/model/` becomes
//!   `<S3OutputPath>/<job>/output/model.tar.gz` and `<base>/output/data/` becomes
//!   `<S3OutputPath>/<job>/output/output.tar.gz`, streamed: tar, gzip on every core
//!   and a parallel multipart upload run as one pipeline, with no copy on disk, in
//!   bounded memory, and checked against the store afterwards.
//! - [`Checkpoints`]: `CheckpointConfig.S3Uri` restored into `LocalPath` before the
//!   command starts, then files that are complete there uploaded while it runs
//!   and once more at exit. Nothing in S3 is ever deleted.
//!
//! Everything goes through a [`chute_s3::Writer`]; [`connect`] makes one from the
//! same options the input channels use.

mod archive;
mod checkpoints;
mod error;
mod files;
mod object;
mod outputs;

pub use archive::ArchiveStats;
pub use checkpoints::{
    is_in_progress, CheckpointSync, Checkpoints, RestoreSummary, SyncOptions, SyncSummary,
};
pub use chute_s3::Writer;
pub use error::UploadError;
pub use files::UploadOptions;
pub use object::{UploadedObject, MIN_PART_SIZE};
pub use outputs::{
    upload_dir_files, upload_dir_tar_gz, upload_outputs, Compression, OutputConfig, OutputLocation,
    OutputsSummary,
};

use chute_channel::SourceOptions;

/// A writer for the S3 endpoint and credentials in `opts`, with its retry policy.
pub async fn connect(opts: &SourceOptions) -> Result<Writer, UploadError> {
    Writer::s3(&opts.s3, opts.retry.clone())
        .await
        .map_err(|source| UploadError::Store {
            uri: opts
                .s3
                .effective_endpoint()
                .unwrap_or_else(|| "AWS S3".to_owned()),
            source,
        })
}
