//! Checkpoints (`CheckpointConfig`): restored before the command starts, synced
//! while it runs and once more when it has exited.
//!
//! Restore is File mode's download of the `S3Uri` prefix into `LocalPath`, so a
//! job interrupted (a spot reclaim) resumes from its last checkpoint; an empty
//! or missing prefix simply restores nothing.
//!
//! The sync scans `LocalPath` every `interval` and uploads a file to
//! `<S3Uri>/<relative path>` once it is complete: its size, mtime, inode and
//! device the same in two scans in a row (nothing wrote to it or replaced it in
//! between), and not under a name that marks work in progress (see
//! [`is_in_progress`]). A file renamed into place is complete as soon as it is
//! stable. A file that changes later is uploaded again; one that changed while it
//! was being read is sent again at the next scan. The last pass, at
//! [`CheckpointSync::finish`], runs after the command has exited, so it uploads
//! every file that differs from what was sent, without waiting for stability.
//! Files restored at the start count as already sent. Nothing in S3 is ever
//! deleted: a file removed locally stays in S3.
//!
//! The limit of the stability rule: a writer that pauses longer than `interval`
//! in the middle of a file may have that partial file uploaded; the complete file
//! is uploaded again when it is stable, and the final pass always sends the last
//! version. Writers that save to a temporary name and rename (PyTorch Lightning,
//! Hugging Face, most frameworks) are never caught half-way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chute_channel::{resolve, ChannelSource, SourceOptions};
use chute_plan::SourceUri;
use chute_s3::Writer;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::files::{upload_file, FileVersion, UploadOptions};
use crate::UploadError;

/// How the sync runs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Time between scans of `LocalPath`; a file must look the same in two
    /// scans in a row to be uploaded.
    pub interval: Duration,
    pub upload: UploadOptions,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            interval: Duration::from_secs(1),
            upload: UploadOptions::default(),
        }
    }
}

/// What [`Checkpoints::restore`] fetched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreSummary {
    pub objects: usize,
    pub bytes: u64,
    /// Files already present and complete from an earlier run, not fetched.
    pub already_present: usize,
    pub seconds: f64,
}

/// What a [`CheckpointSync`] uploaded in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncSummary {
    /// Uploads made (a file uploaded twice counts twice).
    pub uploads: usize,
    pub bytes: u64,
    /// Uploads that failed while the command ran (each retried later).
    pub failed_attempts: usize,
}

/// A checkpoint location, its local directory and what S3 already holds.
pub struct Checkpoints {
    writer: Writer,
    bucket: String,
    /// Key prefix, empty or ending in `/`.
    prefix: String,
    local: PathBuf,
    /// Relative path → the local version known to be in S3.
    sent: HashMap<String, FileVersion>,
}

impl Checkpoints {
    /// Parses `s3_uri`, creates `local_path` and downloads what the prefix holds
    /// into it. Call before the command starts.
    pub async fn restore(
        src: &SourceOptions,
        s3_uri: &str,
        local_path: &Path,
    ) -> Result<(Checkpoints, RestoreSummary), UploadError> {
        let (bucket, prefix) = parse_checkpoint_uri(s3_uri)?;
        let restore_err = |detail: String| UploadError::Restore {
            uri: s3_uri.to_owned(),
            path: local_path.to_path_buf(),
            detail,
        };
        std::fs::create_dir_all(local_path).map_err(|e| UploadError::read(local_path, e))?;
        let writer = crate::connect(src).await?;
        let source = ChannelSource::Prefix(SourceUri::S3 {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
        });
        let channel = resolve(&source, src)
            .await
            .map_err(|e| restore_err(e.to_string()))?;
        let started = Instant::now();
        let mut summary = RestoreSummary::default();
        if !channel.plan.objects.is_empty() {
            let opts = chute_download::DownloadOptions {
                progress: false,
                ..chute_download::DownloadOptions::default()
            };
            let done = chute_download::download(&channel.client, &channel.plan, local_path, &opts)
                .await
                .map_err(|e| restore_err(e.to_string()))?;
            summary.objects = done.objects;
            summary.bytes = done.bytes;
            summary.already_present = done.skipped_existing;
        }
        summary.seconds = started.elapsed().as_secs_f64();
        let mut sent = HashMap::new();
        for obj in &channel.plan.objects {
            if let Ok(meta) = std::fs::symlink_metadata(local_path.join(obj.path())) {
                if meta.is_file() && meta.len() == obj.size {
                    sent.insert(obj.path().to_owned(), FileVersion::of(&meta));
                }
            }
        }
        Ok((
            Checkpoints {
                writer,
                bucket,
                prefix,
                local: local_path.to_path_buf(),
                sent,
            },
            summary,
        ))
    }

    /// Starts the background sync. Call [`CheckpointSync::finish`] once the
    /// command has exited (however it exited).
    pub fn start_sync(self, opts: SyncOptions) -> CheckpointSync {
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(self.run(opts, stop_rx));
        CheckpointSync { stop_tx, task }
    }

    async fn run(
        mut self,
        opts: SyncOptions,
        mut stop: watch::Receiver<bool>,
    ) -> Result<SyncSummary, UploadError> {
        let mut summary = SyncSummary::default();
        let mut previous: HashMap<String, (PathBuf, FileVersion)> = HashMap::new();
        loop {
            let last_pass = tokio::select! {
                _ = tokio::time::sleep(opts.interval) => false,
                _ = stop.changed() => true,
            };
            let local = self.local.clone();
            let current = tokio::task::spawn_blocking(move || scan(&local))
                .await
                .map_err(|e| UploadError::Internal(format!("the checkpoint scan failed: {e}")))?;
            let due: Vec<(String, PathBuf)> = current
                .iter()
                .filter(|(rel, (_, v))| {
                    self.sent.get(*rel) != Some(v)
                        && (last_pass || previous.get(*rel).map(|(_, p)| p) == Some(v))
                })
                .map(|(rel, (path, _))| (rel.clone(), path.clone()))
                .collect();
            previous = current;
            let errors = self.upload_due(due, &opts.upload, &mut summary).await;
            if last_pass {
                return self.finish_pass(errors, &opts.upload, &mut summary).await;
            }
            for (rel, e) in errors {
                summary.failed_attempts += 1;
                tracing::warn!(file = %rel, error = %e, "checkpoint upload failed; retrying at the next scan");
            }
        }
    }

    /// Uploads the files `due`; records what was sent whole; returns the failures.
    async fn upload_due(
        &mut self,
        due: Vec<(String, PathBuf)>,
        opts: &UploadOptions,
        summary: &mut SyncSummary,
    ) -> Vec<(String, UploadError)> {
        let slots = opts.slots();
        let writer = &self.writer;
        let (bucket, prefix) = (&self.bucket, &self.prefix);
        let results: Vec<_> = futures::stream::iter(due)
            .map(|(rel, path)| {
                let key = format!("{prefix}{rel}");
                let slots = slots.clone();
                async move {
                    let r = upload_file(writer, &path, bucket, &key, opts, slots).await;
                    (rel, r)
                }
            })
            .buffer_unordered(opts.file_concurrency.max(1))
            .collect()
            .await;
        let mut errors = Vec::new();
        for (rel, r) in results {
            match r {
                Ok((object, version)) => {
                    summary.uploads += 1;
                    summary.bytes += object.bytes;
                    match version {
                        Some(v) => {
                            tracing::info!(object = %object.uri, bytes = object.bytes, "checkpoint uploaded");
                            self.sent.insert(rel, v);
                        }
                        None => {
                            tracing::debug!(file = %rel, "checkpoint changed while it was uploaded; sending it again");
                        }
                    }
                }
                Err(e) => errors.push((rel, e)),
            }
        }
        errors
    }

    /// The last pass: files that changed under the upload get a few more tries;
    /// any failure left is the error.
    async fn finish_pass(
        &mut self,
        mut errors: Vec<(String, UploadError)>,
        opts: &UploadOptions,
        summary: &mut SyncSummary,
    ) -> Result<SyncSummary, UploadError> {
        for _ in 0..3 {
            let local = self.local.clone();
            let current = tokio::task::spawn_blocking(move || scan(&local))
                .await
                .map_err(|e| UploadError::Internal(format!("the checkpoint scan failed: {e}")))?;
            let due: Vec<(String, PathBuf)> = current
                .iter()
                .filter(|(rel, (_, v))| self.sent.get(*rel) != Some(v))
                .map(|(rel, (path, _))| (rel.clone(), path.clone()))
                .collect();
            if due.is_empty() {
                errors.clear();
                break;
            }
            errors = self.upload_due(due, opts, summary).await;
        }
        match errors.into_iter().next() {
            None => Ok(summary.clone()),
            Some((_, e)) => Err(e),
        }
    }
}

/// The running sync; [`finish`](CheckpointSync::finish) ends it with a last pass.
pub struct CheckpointSync {
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<Result<SyncSummary, UploadError>>,
}

impl CheckpointSync {
    /// Runs the last sync (every file that differs from what was sent) and
    /// stops. An upload that still fails is the error, naming the object.
    pub async fn finish(self) -> Result<SyncSummary, UploadError> {
        // A send error means the task already ended; its result says how.
        let _ = self.stop_tx.send(true);
        self.task
            .await
            .map_err(|e| UploadError::Internal(format!("the checkpoint sync failed: {e}")))?
    }
}

/// `s3://bucket/prefix` → bucket and a key prefix that is empty or ends in `/`,
/// so `s3://b/ckpt` holds `ckpt/<file>` and never matches `ckpt-old/...`.
fn parse_checkpoint_uri(uri: &str) -> Result<(String, String), UploadError> {
    let bad = |reason: String| UploadError::BadUri {
        what: "CheckpointConfig.S3Uri",
        uri: uri.to_owned(),
        reason,
    };
    match SourceUri::parse(uri) {
        Ok(SourceUri::S3 { bucket, prefix }) => {
            let prefix = if prefix.is_empty() || prefix.ends_with('/') {
                prefix
            } else {
                format!("{prefix}/")
            };
            Ok((bucket, prefix))
        }
        Ok(SourceUri::Local { .. }) => Err(bad(
            "must be an s3:// URI (for example s3://bucket/checkpoints)".into(),
        )),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Whether a name marks a file (or directory) still being written, which is
/// never uploaded: hidden names (`.foo`, as editors, `rsync` and chute's own
/// download use for work in progress), the suffixes `.tmp`, `.temp`, `.part`,
/// `.partial`, `.swp`, `.crdownload` and `~`, and the prefixes `tmp-` and `tmp.`
/// (`mktemp`; Hugging Face writes `tmp-checkpoint-N` and renames it).
pub fn is_in_progress(name: &str) -> bool {
    const SUFFIXES: [&str; 7] = [
        ".tmp",
        ".temp",
        ".part",
        ".partial",
        ".swp",
        ".crdownload",
        "~",
    ];
    const PREFIXES: [&str; 3] = [".", "tmp-", "tmp."];
    let lower = name.to_ascii_lowercase();
    PREFIXES.iter().any(|p| lower.starts_with(p)) || SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// Every regular file under `root` that may be uploaded, by `/`-separated
/// relative path. Links are not followed; names that are not UTF-8 cannot be
/// keys and are left out; unreadable directories are left for the next scan.
fn scan(root: &Path) -> HashMap<String, (PathBuf, FileVersion)> {
    let mut out = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if is_in_progress(&name) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            let child = format!("{rel}{name}");
            if meta.is_dir() {
                stack.push((entry.path(), format!("{child}/")));
            } else if meta.is_file() {
                out.insert(child, (entry.path(), FileVersion::of(&meta)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_progress_names() {
        for name in [
            ".hidden",
            "model.pt.tmp",
            "x.part",
            "tmp-checkpoint-5",
            "a~",
            "W.TMP",
        ] {
            assert!(is_in_progress(name), "{name}");
        }
        for name in ["model.pt", "checkpoint-5", "optimizer.bin", "tmpfile"] {
            assert!(!is_in_progress(name), "{name}");
        }
    }

    #[test]
    fn checkpoint_prefix_ends_in_slash() {
        assert_eq!(
            parse_checkpoint_uri("s3://b/ckpt").ok(),
            Some(("b".into(), "ckpt/".into()))
        );
        assert_eq!(
            parse_checkpoint_uri("s3://b").ok(),
            Some(("b".into(), String::new()))
        );
        assert!(parse_checkpoint_uri("file:///tmp/x").is_err());
    }
}
