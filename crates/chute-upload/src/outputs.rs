//! A finished job's artifacts, placed in S3 where SageMaker places them.
//!
//! With `CompressionType: GZIP` (the default) `<base>/model/` becomes
//! `<S3OutputPath>/<job>/output/model.tar.gz` and `<base>/output/data/` becomes
//! `<S3OutputPath>/<job>/output/output.tar.gz`; an empty (or missing) directory
//! still gives a valid, empty archive, as SageMaker's does. With `NONE`, SageMaker
//! uploads the model and the output data as they are, so here every file of
//! `model/` becomes `<job>/output/model/<path>` and every file of `output/data/`
//! becomes `<job>/output/data/<path>`. S3 has no links or empty directories: in
//! that mode a symbolic link to a file is uploaded as the file it points to, a
//! link to a directory is skipped with a warning (it could loop), and empty
//! directories leave no trace.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chute_plan::SourceUri;
use chute_s3::Writer;
use futures::{StreamExt, TryStreamExt};

use crate::archive::{tar_gz_into, ArchiveStats, GzipSettings};
use crate::files::{upload_file, UploadOptions};
use crate::object::{ObjectUpload, UploadedObject};
use crate::UploadError;

/// `OutputDataConfig.CompressionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

impl Compression {
    /// Reads the API's values (`GZIP`, `NONE`, any case; `Gzip`/`None` as the
    /// input channels spell them).
    pub fn parse(s: &str) -> Option<Compression> {
        match s.to_ascii_lowercase().as_str() {
            "gzip" => Some(Compression::Gzip),
            "none" => Some(Compression::None),
            _ => None,
        }
    }
}

/// Where a job's artifacts go.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    /// `OutputDataConfig.S3OutputPath`, `s3://bucket/prefix`.
    pub s3_output_path: String,
    /// `TrainingJobName`.
    pub job_name: String,
    pub compression: Compression,
}

/// What [`upload_outputs`] sent.
#[derive(Debug, Clone, Default)]
pub struct OutputsSummary {
    /// Every object written, verified.
    pub objects: Vec<UploadedObject>,
    /// What went into the archives (gzip mode).
    pub archived: ArchiveStats,
    pub seconds: f64,
}

impl OutputsSummary {
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.bytes).sum()
    }

    /// One line for people.
    pub fn one_line(&self) -> String {
        let names: Vec<&str> = self.objects.iter().map(|o| o.uri.as_str()).collect();
        let shown = if names.len() <= 2 {
            names.join(", ")
        } else {
            format!("{} objects", names.len())
        };
        format!(
            "uploaded {shown}: {} bytes in {:.2}s ({:.1} MB/s), verified",
            self.bytes(),
            self.seconds,
            self.bytes() as f64 / self.seconds.max(1e-9) / 1e6
        )
    }
}

/// The S3 locations of a job's outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLocation {
    pub bucket: String,
    /// `<prefix>/<job>/output/` (no leading `/`).
    pub job_prefix: String,
}

impl OutputLocation {
    /// Checks the output path and job name; the errors name the field to fix.
    pub fn new(cfg: &OutputConfig) -> Result<OutputLocation, UploadError> {
        let bad = |reason: &str| UploadError::BadUri {
            what: "S3OutputPath",
            uri: cfg.s3_output_path.clone(),
            reason: reason.to_owned(),
        };
        let (bucket, prefix) = match SourceUri::parse(&cfg.s3_output_path) {
            Ok(SourceUri::S3 { bucket, prefix }) => (bucket, prefix),
            Ok(SourceUri::Local { .. }) => {
                return Err(bad("must be an s3:// URI (for example s3://bucket/output)"))
            }
            Err(e) => return Err(bad(&e.to_string())),
        };
        let job = &cfg.job_name;
        if job.is_empty() || job.contains('/') || job == "." || job == ".." {
            return Err(UploadError::BadUri {
                what: "TrainingJobName",
                uri: job.clone(),
                reason: "must be a non-empty name without '/' (it becomes a key segment)".into(),
            });
        }
        let prefix = prefix.trim_end_matches('/');
        let job_prefix = if prefix.is_empty() {
            format!("{job}/output/")
        } else {
            format!("{prefix}/{job}/output/")
        };
        Ok(OutputLocation { bucket, job_prefix })
    }

    pub fn model_tar_gz(&self) -> String {
        format!("{}model.tar.gz", self.job_prefix)
    }

    pub fn output_tar_gz(&self) -> String {
        format!("{}output.tar.gz", self.job_prefix)
    }
}

/// Uploads `<base>/model/` and `<base>/output/data/` (call it only after the
/// command succeeded). Any failure is an error naming the object and the reason;
/// a multipart upload that fails is aborted.
pub async fn upload_outputs(
    writer: &Writer,
    base_dir: &Path,
    cfg: &OutputConfig,
    opts: &UploadOptions,
) -> Result<OutputsSummary, UploadError> {
    let loc = OutputLocation::new(cfg)?;
    let started = Instant::now();
    let model_dir = base_dir.join("model");
    let data_dir = base_dir.join("output").join("data");
    let mut summary = OutputsSummary::default();
    match cfg.compression {
        Compression::Gzip => {
            for (dir, key) in [
                (model_dir, loc.model_tar_gz()),
                (data_dir, loc.output_tar_gz()),
            ] {
                let (object, stats) =
                    upload_dir_tar_gz(writer, &dir, &loc.bucket, &key, opts).await?;
                tracing::info!(object = %object.uri, bytes = object.bytes, files = stats.files, "uploaded");
                summary.objects.push(object);
                add_stats(&mut summary.archived, &stats);
            }
        }
        Compression::None => {
            for (dir, sub) in [(model_dir, "model/"), (data_dir, "data/")] {
                let prefix = format!("{}{sub}", loc.job_prefix);
                let objects = upload_dir_files(writer, &dir, &loc.bucket, &prefix, opts).await?;
                summary.objects.extend(objects);
            }
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn add_stats(total: &mut ArchiveStats, s: &ArchiveStats) {
    total.files += s.files;
    total.dirs += s.dirs;
    total.symlinks += s.symlinks;
    total.content_bytes += s.content_bytes;
    total.skipped += s.skipped;
}

/// `dir` as one tar.gz object at `bucket/key`, streamed and verified.
pub async fn upload_dir_tar_gz(
    writer: &Writer,
    dir: &Path,
    bucket: &str,
    key: &str,
    opts: &UploadOptions,
) -> Result<(UploadedObject, ArchiveStats), UploadError> {
    let mut upload = ObjectUpload::new(writer.clone(), bucket, key, opts.part_size, opts.slots());
    let gz = GzipSettings {
        chunk_size: opts.gzip_chunk,
        threads: opts.threads(),
        level: opts.gzip_level,
    };
    let stats = match tar_gz_into(dir, &mut upload, gz).await {
        Ok(s) => s,
        Err(e) => {
            upload.abort().await;
            return Err(e);
        }
    };
    let object = upload.finish().await?;
    Ok((object, stats))
}

/// Every file under `dir` as its own object `bucket/<prefix><relative path>`.
pub async fn upload_dir_files(
    writer: &Writer,
    dir: &Path,
    bucket: &str,
    prefix: &str,
    opts: &UploadOptions,
) -> Result<Vec<UploadedObject>, UploadError> {
    let files = match std::fs::symlink_metadata(dir) {
        Ok(_) => {
            let mut files = Vec::new();
            collect_files(dir, "", &mut files)?;
            files
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(UploadError::read(dir, e)),
    };
    let slots = opts.slots();
    futures::stream::iter(files)
        .map(|(path, rel)| {
            let key = format!("{prefix}{rel}");
            let slots = slots.clone();
            async move {
                upload_file(writer, &path, bucket, &key, opts, slots)
                    .await
                    .map(|(o, _)| o)
            }
        })
        .buffer_unordered(opts.file_concurrency.max(1))
        .try_collect()
        .await
}

/// Regular files under `dir` (links to files followed, links to directories
/// skipped), with their `/`-separated relative paths, sorted.
fn collect_files(
    dir: &Path,
    rel: &str,
    out: &mut Vec<(PathBuf, String)>,
) -> Result<(), UploadError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| UploadError::read(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| UploadError::read(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "file name is not UTF-8, so it cannot be an S3 key; skipped");
            continue;
        };
        let child_rel = format!("{rel}{name}");
        let lmeta = std::fs::symlink_metadata(&path).map_err(|e| UploadError::read(&path, e))?;
        if lmeta.is_dir() {
            collect_files(&path, &format!("{child_rel}/"), out)?;
            continue;
        }
        let meta = if lmeta.file_type().is_symlink() {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "symbolic link to a directory; skipped (S3 has no links)");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "dangling symbolic link; skipped");
                    continue;
                }
            }
        } else {
            lmeta
        };
        if meta.is_file() {
            out.push((path, child_rel));
        } else {
            tracing::warn!(path = %path.display(), "not a regular file; skipped");
        }
    }
    Ok(())
}
