//! Moving one object from the store into its file under DEST.
//!
//! Two paths, chosen by size:
//! - An object of at most one part is one GET. When it fits the write buffer
//!   (the common case for small objects) it is held in memory, checked, and
//!   then created, written and renamed into place in a single file-system job,
//!   so the request slot is free for the next object while the disk works;
//!   many such GETs in flight hide the per-request latency. A larger
//!   single-part object is streamed to its temporary file as it arrives.
//! - A larger object is split into equal ranged parts fetched in parallel, each
//!   written at its offset (`pwrite`) into a temporary file preallocated to the
//!   full size, so a full disk shows up before the bytes are fetched.
//!
//! Every file is written under `DEST/.chute-tmp/` and renamed to its final name
//! only when complete: all bytes received (the read stream resumes cut
//! connections and pins the listed ETag), the size right, and, for single-GET
//! objects whose ETag is an MD5 digest, the digest right. File-system work runs
//! on the blocking pool, off the async workers that drive the sockets, with
//! one exception: a streamed batch is written in place while the page cache
//! takes it at memory speed (see [`StreamWriter`]).

use std::fs::File;
use std::io::IoSlice;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use chute_plan::PlannedObject;
use chute_s3::Client;
use futures::StreamExt;
use md5::{Digest, Md5};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::digest::Md5Batcher;
use crate::error::{is_no_space, DownloadError};
use crate::paths::{Dirs, Missing, PublishError, TempFile, TmpDir};
use crate::progress::Progress;
use crate::DownloadOptions;

/// Permits of the file-system job tracker; waiting for all of them means no
/// job is running.
pub(crate) const FS_TRACKER_PERMITS: u32 = 1 << 20;

/// A batch written on the async worker is slow when it takes longer than
/// this: far more than a page-cache copy, and more than a scheduler time slice
/// (a worker preempted by the server on a busy machine is not the disk).
const SLOW_WRITE: std::time::Duration = std::time::Duration::from_millis(10);
/// After this many slow writes the kernel is throttling dirty pages, and
/// batches go to the blocking pool for the rest of the download (see
/// [`StreamWriter`]).
const SLOW_WRITES_LIMIT: usize = 3;

/// After this many objects whose ETag turned out not to be their MD5 (two
/// fetches agreed with each other but not with the ETag, as with SSE-KMS),
/// MD5 checks stop for the rest of the run.
const NOT_MD5_LIMIT: usize = 3;

/// One object to fetch.
pub(crate) struct Job {
    /// Position in the plan; names the temporary file.
    pub index: usize,
    pub object: PlannedObject,
    /// Safe path relative to DEST.
    pub rel: PathBuf,
}

/// One download in progress: what each of its transfers reads from and writes
/// to, its settings, the limits on work in flight and what it learns as it goes.
pub(crate) struct Download {
    pub client: Client,
    pub dest: PathBuf,
    pub tmp: TmpDir,
    pub dirs: Dirs,
    pub settings: Settings,
    pub limits: Limits,
    pub adaptive: Adaptive,
    /// Digests of the objects held in memory.
    pub md5: Md5Batcher,
    pub progress: Progress,
}

/// How transfers fetch and write, fixed for the whole download.
pub(crate) struct Settings {
    pub part_size: u64,
    pub write_buffer: usize,
    /// Single-GET objects up to this size are held in memory and written
    /// with one file-system job.
    pub in_memory_max: u64,
    pub fsync: bool,
    pub preallocate: bool,
    /// Streamed batches may be written on the async worker (see
    /// [`StreamWriter`]) until [`Adaptive::slow_writes`] says otherwise.
    pub write_on_workers: bool,
}

/// What bounds the work in flight.
pub(crate) struct Limits {
    /// GETs in flight.
    pub requests: Arc<Semaphore>,
    /// Tracks running file-system jobs (see [`FS_TRACKER_PERMITS`]).
    pub fs_jobs: Arc<Semaphore>,
}

/// What the download learns about the disk and the store, and acts on.
pub(crate) struct Adaptive {
    /// Batches written on the async worker that were slow (see [`StreamWriter`]).
    pub slow_writes: AtomicUsize,
    /// MD5 checks are on (until the store's ETags turn out not to be MD5s).
    pub verify: AtomicBool,
    /// Objects whose ETag was not their MD5.
    pub not_md5: AtomicUsize,
}

impl From<&DownloadOptions> for Settings {
    fn from(opts: &DownloadOptions) -> Settings {
        let (write_buffer, preallocate, write_on_workers) = opts.write_path();
        Settings {
            part_size: opts.part_size.max(64 << 10),
            write_buffer: write_buffer.max(4096),
            in_memory_max: opts.small_object,
            fsync: opts.fsync,
            preallocate,
            write_on_workers,
        }
    }
}

impl Limits {
    /// `concurrency` GETs in flight; file-system jobs tracked, not limited.
    pub fn new(concurrency: usize) -> Limits {
        Limits {
            requests: Arc::new(Semaphore::new(concurrency)),
            fs_jobs: Arc::new(Semaphore::new(FS_TRACKER_PERMITS as usize)),
        }
    }

    /// Waits until no file-system job is running, and keeps any from starting.
    pub async fn all_fs_jobs_done(&self) -> Result<(), DownloadError> {
        self.fs_jobs
            .acquire_many(FS_TRACKER_PERMITS)
            .await
            .map(|permits| permits.forget())
            .map_err(|_| DownloadError::Internal("file-system job tracker closed".into()))
    }
}

impl Adaptive {
    /// Nothing learnt yet; MD5 checks as asked.
    pub fn new(verify: bool) -> Adaptive {
        Adaptive {
            slow_writes: AtomicUsize::new(0),
            verify: AtomicBool::new(verify),
            not_md5: AtomicUsize::new(0),
        }
    }
}

impl Download {
    /// The usual name of `job`'s temporary file, for messages.
    fn tmp_path(&self, job: &Job) -> PathBuf {
        self.tmp.path.join(format!("{}.part", job.index))
    }

    /// Starts file-system work on the blocking pool now, tracked so that
    /// cleanup can wait for it even when the task that started it is aborted.
    fn spawn_blocking<T, F>(
        &self,
        f: F,
    ) -> Result<tokio::task::JoinHandle<Result<T, DownloadError>>, DownloadError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, DownloadError> + Send + 'static,
    {
        let permit = self
            .limits
            .fs_jobs
            .clone()
            .try_acquire_owned()
            .map_err(|_| DownloadError::Internal("file-system job tracker closed".into()))?;
        Ok(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        }))
    }

    /// Runs file-system work on the blocking pool and waits for it.
    async fn blocking<T, F>(&self, f: F) -> Result<T, DownloadError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, DownloadError> + Send + 'static,
    {
        join(self.spawn_blocking(f)?).await
    }

    /// Waits for one of the `concurrency` request slots.
    async fn request_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, DownloadError> {
        self.limits
            .requests
            .acquire()
            .await
            .map_err(|_| DownloadError::Internal("request limiter closed".into()))
    }

    fn note_not_md5(&self, obj: &PlannedObject) {
        let n = self.adaptive.not_md5.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= NOT_MD5_LIMIT && self.adaptive.verify.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                bucket = %obj.bucket(),
                "ETags of this store are not MD5 digests of the content (server-side encryption with KMS or customer keys does that); MD5 checks are off for the rest of this download, sizes are still checked"
            );
        }
    }
}

async fn join<T>(
    handle: tokio::task::JoinHandle<Result<T, DownloadError>>,
) -> Result<T, DownloadError> {
    handle
        .await
        .map_err(|e| DownloadError::Internal(format!("file-system job failed: {e}")))?
}

/// Equal, 4 KiB-aligned parts of at most about `part_size` covering `0..size`.
pub(crate) fn split(size: u64, part_size: u64) -> Vec<Range<u64>> {
    if size == 0 {
        #[allow(clippy::single_range_in_vec_init)] // one empty part, on purpose
        return vec![0..0];
    }
    let part_size = part_size.max(1);
    let n = size.div_ceil(part_size);
    let len = size.div_ceil(n).next_multiple_of(4096);
    let mut parts = Vec::with_capacity(n as usize);
    let mut start = 0;
    while start < size {
        let end = (start + len).min(size);
        parts.push(start..end);
        start = end;
    }
    parts
}

/// The MD5 digest an ETag stands for, when it is one: 32 hex digits, no `-`
/// (multipart uploads have `<md5 of md5s>-<parts>`).
pub(crate) fn md5_of_etag(etag: Option<&str>) -> Option<[u8; 16]> {
    let bare = etag?.trim_start_matches("W/").trim_matches('"');
    if bare.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(bare, &mut out).ok()?;
    Some(out)
}

/// Fetches one object into its final place.
pub(crate) async fn fetch(dl: Arc<Download>, job: Arc<Job>) -> Result<(), DownloadError> {
    let size = job.object.size;
    let parts = split(size, dl.settings.part_size);
    if parts.len() > 1 {
        return fetch_parts(&dl, &job, parts).await;
    }
    let want = if dl.adaptive.verify.load(Ordering::Relaxed) {
        md5_of_etag(job.object.etag().map(|e| e.to_string()).as_deref())
    } else {
        None
    };
    let Some(want) = want else {
        fetch_single(&dl, &job, None).await?;
        return Ok(());
    };
    let first = match fetch_single(&dl, &job, Some(Check { want, also: None })).await? {
        Verdict::Kept { .. } => return Ok(()),
        Verdict::Mismatch(got) => got,
    };
    tracing::debug!(key = %job.object.key(), "MD5 differs from the ETag; fetching again");
    match fetch_single(&dl, &job, Some(Check { want, also: Some(first) })).await? {
        Verdict::Kept { matched_etag: true } => {
            tracing::warn!(
                key = %job.object.key(),
                "the first transfer of this object was corrupted (its MD5 did not match the ETag); the second one matched and was kept"
            );
            Ok(())
        }
        Verdict::Kept { matched_etag: false } => {
            dl.note_not_md5(&job.object);
            Ok(())
        }
        Verdict::Mismatch(second) => Err(DownloadError::Verify {
            bucket: job.object.bucket().to_owned(),
            key: job.object.key().to_owned(),
            detail: format!(
                "two transfers gave different bytes (MD5 {} then {}) and neither matches the ETag {}",
                hex::encode(first),
                hex::encode(second),
                hex::encode(want)
            ),
        }),
    }
}

struct Check {
    want: [u8; 16],
    /// A digest also accepted: that of an earlier, identical transfer.
    also: Option<[u8; 16]>,
}

enum Verdict {
    Kept { matched_etag: bool },
    Mismatch([u8; 16]),
}

impl Check {
    fn judge(&self, got: [u8; 16]) -> Verdict {
        if got == self.want {
            Verdict::Kept { matched_etag: true }
        } else if self.also == Some(got) {
            Verdict::Kept {
                matched_etag: false,
            }
        } else {
            Verdict::Mismatch(got)
        }
    }
}

async fn fetch_single(
    dl: &Arc<Download>,
    job: &Arc<Job>,
    check: Option<Check>,
) -> Result<Verdict, DownloadError> {
    let obj = &job.object;
    let size = obj.size;
    let in_memory = size <= dl.settings.in_memory_max;
    // Streamed objects are hashed as their chunks pass; in-memory ones by the
    // batcher once whole.
    let mut hasher = check.as_ref().filter(|_| !in_memory).map(|_| Md5::new());
    let mut batch = Batch::default();
    let mut writer = None;
    let mut temp = None;
    if !in_memory {
        let (dl2, job2) = (dl.clone(), job.clone());
        let t = dl.blocking(move || create_temp(&dl2, &job2, size)).await?;
        writer = Some(StreamWriter::new(dl, job, t.file.clone(), 0));
        temp = Some(t);
    }
    if size > 0 {
        let _slot = dl.request_slot().await?;
        let mut stream = dl.client.read(
            obj.bucket(),
            obj.key(),
            0..size,
            obj.etag().map(|e| e.to_string()),
        );
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            dl.progress.bytes(chunk.len() as u64);
            match writer.as_mut() {
                None => batch.push(chunk),
                Some(w) => {
                    if let Some(h) = hasher.as_mut() {
                        h.update(&chunk);
                    }
                    w.push(chunk).await?;
                }
            }
        }
    }
    let (dl2, job2) = (dl.clone(), job.clone());
    let Some(writer) = writer else {
        check_received(job, batch.len as u64)?;
        // The whole object is in memory: check it (its digest computed along
        // with other objects'), then create, write and rename in one job.
        let verdict = match check {
            Some(check) => {
                // One contiguous buffer for the batcher's SIMD lanes; copied
                // while the chunks are still in the CPU cache, this costs a
                // tenth of what batching the digest saves.
                let whole = match batch.chunks.as_slice() {
                    [one] => one.clone(),
                    chunks => {
                        let mut b = bytes::BytesMut::with_capacity(batch.len);
                        for c in chunks {
                            b.extend_from_slice(c);
                        }
                        b.freeze()
                    }
                };
                let digest = dl
                    .md5
                    .digest(whole.clone())
                    .await
                    .ok_or_else(|| DownloadError::Internal("MD5 batcher stopped".into()))?;
                // Through `push`, which keeps an empty object chunk-less.
                batch = Batch::default();
                batch.push(whole);
                check.judge(digest)
            }
            None => Verdict::Kept { matched_etag: true },
        };
        if let Verdict::Kept { .. } = verdict {
            dl.blocking(move || write_whole(&dl2, &job2, &batch))
                .await?;
        }
        return Ok(verdict);
    };
    let (_, end) = writer.finish().await?;
    let Some(temp) = temp else {
        return Err(DownloadError::Internal(
            "streamed without a temporary file".into(),
        ));
    };
    check_received(job, end)?;
    let verdict = match (hasher, check) {
        (Some(h), Some(check)) => check.judge(h.finalize().into()),
        _ => Verdict::Kept { matched_etag: true },
    };
    match verdict {
        Verdict::Kept { .. } => dl.blocking(move || finalize(&dl2, &job2, &temp)).await?,
        // The next transfer writes a new file.
        Verdict::Mismatch(_) => dl.tmp.discard(&temp),
    }
    Ok(verdict)
}

fn check_received(job: &Job, received: u64) -> Result<(), DownloadError> {
    if received == job.object.size {
        return Ok(());
    }
    Err(DownloadError::Verify {
        bucket: job.object.bucket().to_owned(),
        key: job.object.key().to_owned(),
        detail: format!(
            "received {received} bytes, the object has {}",
            job.object.size
        ),
    })
}

async fn fetch_parts(
    dl: &Arc<Download>,
    job: &Arc<Job>,
    parts: Vec<Range<u64>>,
) -> Result<(), DownloadError> {
    let size = job.object.size;
    let temp = {
        let (dl2, job2) = (dl.clone(), job.clone());
        dl.blocking(move || create_temp(&dl2, &job2, size)).await?
    };
    let mut set = JoinSet::new();
    for range in parts {
        set.spawn(fetch_part(
            dl.clone(),
            job.clone(),
            temp.file.clone(),
            range,
        ));
    }
    while let Some(done) = set.join_next().await {
        done.map_err(|e| DownloadError::Internal(format!("part transfer failed: {e}")))??;
    }
    let (dl2, job2) = (dl.clone(), job.clone());
    dl.blocking(move || finalize(&dl2, &job2, &temp)).await
}

async fn fetch_part(
    dl: Arc<Download>,
    job: Arc<Job>,
    file: Arc<File>,
    range: Range<u64>,
) -> Result<(), DownloadError> {
    let obj = &job.object;
    let _slot = dl.request_slot().await?;
    let mut stream = dl.client.read(
        obj.bucket(),
        obj.key(),
        range.clone(),
        obj.etag().map(|e| e.to_string()),
    );
    let mut writer = StreamWriter::new(&dl, &job, file, range.start);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        dl.progress.bytes(chunk.len() as u64);
        writer.push(chunk).await?;
    }
    let (_, end) = writer.finish().await?;
    if end != range.end {
        return Err(DownloadError::Verify {
            bucket: obj.bucket().to_owned(),
            key: obj.key().to_owned(),
            detail: format!("part {}..{} ended at byte {end}", range.start, range.end),
        });
    }
    Ok(())
}

/// Writes a stream's bytes in order from a starting offset, in batches of
/// `write_buffer` bytes. Small batches matter: bytes written soon after they
/// arrive are still in the CPU cache, and the copy into the page cache costs
/// half as much as from a cold megabyte.
///
/// A batch is written right on the async worker while the page cache takes
/// writes at memory speed: handing each one to the blocking pool and back
/// costs more than the write itself (doc/BENCHMARKING.md).
/// Once writes are slow ([`SLOW_WRITES_LIMIT`] over [`SLOW_WRITE`]), the
/// kernel is throttling dirty pages and the disk sets the pace; then every
/// later batch of the download goes to the blocking pool, one being written
/// while the next fills, so the worker keeps reading sockets.
struct StreamWriter {
    dl: Arc<Download>,
    job: Arc<Job>,
    file: Arc<File>,
    offset: u64,
    batch: Batch,
    writing: Option<tokio::task::JoinHandle<Result<(), DownloadError>>>,
}

impl StreamWriter {
    fn new(dl: &Arc<Download>, job: &Arc<Job>, file: Arc<File>, offset: u64) -> StreamWriter {
        StreamWriter {
            dl: dl.clone(),
            job: job.clone(),
            file,
            offset,
            batch: Batch::default(),
            writing: None,
        }
    }

    async fn push(&mut self, chunk: Bytes) -> Result<(), DownloadError> {
        self.batch.push(chunk);
        if self.batch.len >= self.dl.settings.write_buffer {
            self.start().await?;
        }
        Ok(())
    }

    /// Writes the batch now, or waits for the write in flight and starts
    /// this one on the blocking pool.
    async fn start(&mut self) -> Result<(), DownloadError> {
        let data = std::mem::take(&mut self.batch);
        let len = data.len as u64;
        if let Some(w) = self.writing.take() {
            join(w).await?;
        }
        if self.dl.settings.write_on_workers
            && self.dl.adaptive.slow_writes.load(Ordering::Relaxed) < SLOW_WRITES_LIMIT
        {
            let started = std::time::Instant::now();
            data.write_all_at(&self.file, self.offset)
                .map_err(|e| local_error(&self.dl, &self.job, "write", e))?;
            let took = started.elapsed();
            if took > SLOW_WRITE
                && self.dl.adaptive.slow_writes.fetch_add(1, Ordering::Relaxed) + 1
                    == SLOW_WRITES_LIMIT
            {
                tracing::debug!(
                    ?took,
                    "writes to the page cache are slow (the disk sets the pace); writing on the blocking pool from now on"
                );
            }
            self.offset += len;
            return Ok(());
        }
        let (dl, job, file, offset) = (
            self.dl.clone(),
            self.job.clone(),
            self.file.clone(),
            self.offset,
        );
        self.writing = Some(self.dl.spawn_blocking(move || {
            data.write_all_at(&file, offset)
                .map_err(|e| local_error(&dl, &job, "write", e))
        })?);
        self.offset += len;
        Ok(())
    }

    /// Writes what is left; returns the file and the offset reached.
    async fn finish(mut self) -> Result<(Arc<File>, u64), DownloadError> {
        if self.batch.len > 0 {
            self.start().await?;
        }
        if let Some(w) = self.writing.take() {
            join(w).await?;
        }
        Ok((self.file, self.offset))
    }
}

/// Chunks as they came off the socket, written together with one `pwritev`:
/// no copy into a staging buffer, and few system calls.
#[derive(Default)]
pub(crate) struct Batch {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Batch {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
    }

    /// Writes every byte at `offset`, however the kernel splits the writes.
    pub(crate) fn write_all_at(&self, file: &File, mut offset: u64) -> std::io::Result<()> {
        // Linux takes at most IOV_MAX (1024) buffers per call.
        const MAX_IOV: usize = 1024;
        let (mut idx, mut skip) = (0usize, 0usize);
        while idx < self.chunks.len() {
            let first = &self.chunks[idx][skip..];
            let iov: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(first))
                .chain(
                    self.chunks[idx + 1..]
                        .iter()
                        .take(MAX_IOV - 1)
                        .map(|c| IoSlice::new(c)),
                )
                .collect();
            let at = i64::try_from(offset).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "offset too large")
            })?;
            let mut n = match nix::sys::uio::pwritev(file, &iov, at) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            offset += n as u64;
            while n > 0 {
                let left = self.chunks[idx].len() - skip;
                if n >= left {
                    n -= left;
                    idx += 1;
                    skip = 0;
                } else {
                    skip += n;
                    n = 0;
                }
            }
        }
        Ok(())
    }
}

/// An I/O error on the way to `job`'s file; a full disk is its own error.
fn local_error(dl: &Download, job: &Job, op: &'static str, e: std::io::Error) -> DownloadError {
    if is_no_space(&e) {
        DownloadError::DiskFull {
            dest: dl.dest.clone(),
            path: dl.dest.join(&job.rel),
            size: job.object.size,
            source: e,
        }
    } else {
        DownloadError::io(op, dl.tmp_path(job), e)
    }
}

/// Creates the temporary file and reserves its full size on disk.
fn create_temp(dl: &Download, job: &Job, size: u64) -> Result<TempFile, DownloadError> {
    let temp = dl
        .tmp
        .create_file(job.index)
        .map_err(|e| local_error(dl, job, "create", e))?;
    let file = &temp.file;
    if size > 0 && !dl.settings.preallocate {
        file.set_len(size)
            .map_err(|e| local_error(dl, job, "size", e))?;
    } else if size > 0 {
        let len = i64::try_from(size).map_err(|_| {
            DownloadError::io(
                "create",
                dl.tmp.path_of(&temp),
                std::io::Error::other("object too large for this platform"),
            )
        })?;
        match nix::fcntl::fallocate(file.as_ref(), nix::fcntl::FallocateFlags::empty(), 0, len) {
            Ok(()) => {}
            Err(nix::errno::Errno::EOPNOTSUPP) | Err(nix::errno::Errno::ENOSYS) => {
                // No reservation on this file system: a full disk then shows up
                // as a failed write instead, handled the same way.
                file.set_len(size)
                    .map_err(|e| local_error(dl, job, "size", e))?;
            }
            Err(errno) => return Err(local_error(dl, job, "preallocate", errno.into())),
        }
    }
    Ok(temp)
}

/// Creates, writes and renames a file held wholly in memory.
fn write_whole(dl: &Download, job: &Job, data: &Batch) -> Result<(), DownloadError> {
    let temp = dl
        .tmp
        .create_file(job.index)
        .map_err(|e| local_error(dl, job, "create", e))?;
    data.write_all_at(&temp.file, 0)
        .map_err(|e| local_error(dl, job, "write", e))?;
    finalize(dl, job, &temp)
}

/// Checks the size, syncs if asked, and renames the file into place through
/// handles on both directories (see [`TmpDir::publish`]).
fn finalize(dl: &Download, job: &Job, temp: &TempFile) -> Result<(), DownloadError> {
    let len = temp
        .file
        .metadata()
        .map_err(|e| DownloadError::io("inspect", dl.tmp.path_of(temp), e))?
        .len();
    if len != job.object.size {
        return Err(DownloadError::Verify {
            bucket: job.object.bucket().to_owned(),
            key: job.object.key().to_owned(),
            detail: format!("the file has {len} bytes, the object {}", job.object.size),
        });
    }
    if dl.settings.fsync {
        temp.file
            .sync_all()
            .map_err(|e| local_error(dl, job, "sync", e))?;
    }
    let target = dl.dest.join(&job.rel);
    let (Some(parent), Some(name)) = (
        dl.dirs.open_parent(&job.rel, Missing::Create)?,
        job.rel.file_name(),
    ) else {
        return Err(DownloadError::Internal(format!(
            "no directory for {}",
            target.display()
        )));
    };
    dl.tmp.publish(temp, &parent, name).map_err(|e| match e {
        PublishError::Replaced(path) => DownloadError::Destination {
            path,
            detail: format!(
                "was replaced or removed while chute wrote it (for {}): another process is writing into the destination; nothing was published (make sure only one download uses it)",
                target.display()
            ),
        },
        PublishError::DirectoryInTheWay => DownloadError::Destination {
            path: target.clone(),
            detail: "is a directory where the download needs a file: remove it or choose another destination".into(),
        },
        PublishError::Io(e) => DownloadError::io("rename into place", target.clone(), e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_object_exactly() {
        for (size, part) in [
            (1u64, 8u64 << 20),
            (8 << 20, 8 << 20),
            ((8 << 20) + 1, 8 << 20),
            (25 << 20, 8 << 20),
            (1 << 30, 8 << 20),
            (300 << 20, 16 << 20),
            (12_345_678, 1 << 20),
        ] {
            let parts = split(size, part);
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts.last().map(|p| p.end), Some(size));
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_eq!(w[0].start % 4096, 0);
            }
            assert!(parts.iter().all(|p| p.end > p.start));
            assert_eq!(parts.len() as u64, size.div_ceil(part), "{size}/{part}");
        }
        assert_eq!(split(25 << 20, 8 << 20)[0].end, 6_553_600);
        assert_eq!(split(0, 8 << 20), vec![0..0]);
    }

    #[test]
    fn batches_of_many_chunks_are_written_whole_at_their_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let file = File::create(&path).expect("create");
        // More chunks than one pwritev call takes, of uneven sizes, and empty
        // ones (which are dropped).
        let mut batch = Batch::default();
        let mut want = vec![0u8; 10];
        for i in 0..2500usize {
            let chunk: Vec<u8> = (0..(i % 7) * 3).map(|j| (i + j) as u8).collect();
            want.extend_from_slice(&chunk);
            batch.push(Bytes::from(chunk));
        }
        assert_eq!(batch.len, want.len() - 10);
        batch.write_all_at(&file, 10).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), want);
    }

    #[test]
    fn md5_etags() {
        let d = "d41d8cd98f00b204e9800998ecf8427e";
        let want = md5_of_etag(Some(&format!("\"{d}\""))).expect("md5");
        assert_eq!(hex::encode(want), d);
        assert_eq!(md5_of_etag(Some(d)), Some(want));
        assert_eq!(md5_of_etag(Some(&format!("W/\"{d}\""))), Some(want));
        assert_eq!(md5_of_etag(Some(&format!("\"{d}-3\""))), None);
        assert_eq!(md5_of_etag(Some("\"1-2-3-4.5\"")), None);
        assert_eq!(md5_of_etag(Some(&"z".repeat(32))), None);
        assert_eq!(md5_of_etag(None), None);
    }
}
