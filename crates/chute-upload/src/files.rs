//! Local files uploaded one object each (uncompressed outputs, checkpoints), and
//! the settings every upload shares.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use chute_s3::Writer;
use tokio::sync::Semaphore;

use crate::object::{ObjectUpload, UploadedObject};
use crate::UploadError;

/// How uploads run. `Default` is what `chute run` uses.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Bytes per multipart part (at least 5 MiB, S3's minimum); objects smaller
    /// than this go in one PUT. Parts double in size after every 1000, so any
    /// object S3 accepts fits in its 10,000 parts.
    pub part_size: usize,
    /// Parts in flight at once, across every object being uploaded; with
    /// `part_size` this bounds the memory held for uploads.
    pub concurrency: usize,
    /// Files uploaded at once when they go one object each.
    pub file_concurrency: usize,
    /// Gzip workers; 0 means one per available core.
    pub compress_threads: usize,
    /// Gzip level, 0 (store) to 9 (smallest). The default, 2, gives model
    /// weights the size `gzip -6` gives them at a fraction of the CPU (weights
    /// are mostly random mantissas that no level shrinks much); level 1 is
    /// faster still but, with the zlib-rs backend, about a fifth larger.
    /// Compare with `chute-bench upload --gzip-level N`.
    pub gzip_level: u32,
    /// Bytes of the tar stream per gzip member (the unit of parallel work).
    pub gzip_chunk: usize,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            part_size: 16 << 20,
            concurrency: 8,
            file_concurrency: 4,
            compress_threads: 0,
            gzip_level: 2,
            gzip_chunk: 4 << 20,
        }
    }
}

impl UploadOptions {
    pub(crate) fn threads(&self) -> usize {
        if self.compress_threads > 0 {
            self.compress_threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    pub(crate) fn slots(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.concurrency.max(1)))
    }
}

/// What identifies one version of a local file: if any of it differs, the file
/// was written to (or replaced) in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileVersion {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl FileVersion {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileVersion {
        FileVersion {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// One local file uploaded as `bucket/key`, read part by part (never whole in
/// memory). Returns the object and the version of the file that was read; the
/// second is `None` when the file changed while it was read, so what was sent
/// may be a mix of two versions and must be sent again.
pub(crate) async fn upload_file(
    writer: &Writer,
    path: &Path,
    bucket: &str,
    key: &str,
    opts: &UploadOptions,
    slots: Arc<Semaphore>,
) -> Result<(UploadedObject, Option<FileVersion>), UploadError> {
    let file = File::open(path).map_err(|e| UploadError::read(path, e))?;
    let before = FileVersion::of(&file.metadata().map_err(|e| UploadError::read(path, e))?);
    let file = Arc::new(file);
    let mut upload = ObjectUpload::new(writer.clone(), bucket, key, opts.part_size, slots);
    let mut offset = 0u64;
    let read_size = opts.part_size.max(crate::MIN_PART_SIZE);
    loop {
        let f = file.clone();
        let chunk = tokio::task::spawn_blocking(move || read_at_most(&f, offset, read_size))
            .await
            .map_err(|e| UploadError::Internal(format!("a file read task failed: {e}")))?;
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                upload.abort().await;
                return Err(UploadError::read(path, e));
            }
        };
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len() as u64;
        if let Err(e) = upload.write(chunk.freeze()).await {
            upload.abort().await;
            return Err(e);
        }
    }
    let object = upload.finish().await?;
    let after = std::fs::metadata(path).map(|m| FileVersion::of(&m)).ok();
    let unchanged = after == Some(before) && offset == before.size;
    Ok((object, unchanged.then_some(before)))
}

fn read_at_most(file: &File, offset: u64, len: usize) -> std::io::Result<BytesMut> {
    let mut buf = BytesMut::zeroed(len);
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}
