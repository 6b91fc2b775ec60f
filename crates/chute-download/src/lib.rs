//! File mode: a channel plan downloaded into a local directory before training
//! starts — concurrent, ranged, verified, resumable.
//!
//! [`download`] takes a resolved (and sharded) [`Plan`] and a [`Client`] and
//! fills DEST with one file per planned object. The guarantees:
//!
//! - **A file under its final name is always whole.** Bytes go to a temporary
//!   file in `DEST/.chute-tmp/` that is renamed into place only when its size
//!   (and, for single-GET objects with an MD5 ETag, its digest) is right; a
//!   failure, a full disk or a cancelled download removes the temporary files.
//! - **Reruns resume.** Completed files are recorded as (path, size, ETag) in a
//!   state file beside DEST (`<parent>/.<name>.chute-state`, see [`state`]); a
//!   rerun skips files that match, fetches the rest and removes what an
//!   interrupted run left in `.chute-tmp`.
//! - **Nothing is written outside DEST.** Unsafe keys are skipped and counted;
//!   paths are re-checked here, and a symbolic link on the way stops the run.
//! - **Space is checked first.** The bytes still to fetch (rounded to blocks)
//!   are compared with the free space of DEST's file system before any GET.
//!
//! Throughput comes from many requests in flight (`concurrency`), large objects
//! split into `part_size` ranged parts written with `pwrite` into a
//! preallocated file, and small objects held in memory and written with one
//! file-system job each, off the async workers. The defaults were chosen by
//! measurement (README, "Measurements").
//!
//! Durability (`fsync`): off by default. A kill of the process (SIGKILL, OOM)
//! loses nothing the kernel already has, which is what resume relies on; only a
//! crash of the machine could leave a renamed file without its data, and a
//! training container does not survive that anyway. With `fsync`, each file is
//! synced before its rename and the file system is synced at the end.

mod digest;
mod error;
pub mod paths;
mod progress;
mod space;
pub mod state;
mod transfer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use chute_plan::{Plan, SkipReason};
use chute_s3::Client;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use error::DownloadError;

use paths::{safe_relative, Dirs, TMP_DIR_NAME};
use progress::Progress;
use state::{Entry, State};
use transfer::{Job, Shared, FS_TRACKER_PERMITS};

/// How a download runs. `Default` is what `chute download` uses.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// GET requests in flight (parts of large objects and whole small objects
    /// alike). Default 64: on loopback 16 to 128 measured the same for large
    /// objects and 64 was best for 256 KiB objects; a distant endpoint (real
    /// S3, 10-50 ms to first byte) needs at least that many to hide latency.
    pub concurrency: usize,
    /// Objects larger than this are fetched as parallel ranged parts of about
    /// this size. Default 16 MiB: over five interleaved rounds it beat 8 MiB
    /// by 13-20% on 25 MiB and 1 GiB objects (fewer requests for the server to
    /// set up), and 32 MiB, which fetches a 25 MiB object in one GET, lost 30%.
    pub part_size: u64,
    /// Show a progress bar (only ever drawn when stderr is a terminal).
    pub progress: bool,
    /// Compare the bytes to fetch with DEST's free space before starting.
    pub space_check: bool,
    /// Sync each file before renaming it into place (see the crate docs).
    pub fsync: bool,
    /// Check single-GET objects against an MD5 ETag.
    pub verify_md5: bool,
    /// Record completed files and skip them on a rerun.
    pub resume: bool,
    /// Where the resume state lives; `None` = `<parent of DEST>/.<name>.chute-state`.
    pub state_file: Option<PathBuf>,
    /// Bytes gathered from the network before each write to disk. Default
    /// 256 KiB: small enough that the bytes are still in the CPU cache when
    /// they are copied into the page cache (1 MiB batches measured 2-3 times
    /// the system CPU time).
    pub write_buffer: usize,
    /// Objects up to this size are held whole in memory, checked, and written
    /// and renamed with one file-system job. Default 1 MiB.
    pub small_object: u64,
    /// Reserve each multi-write file's full size (`fallocate`) before writing,
    /// so a full disk is found before its bytes are fetched.
    pub preallocate: bool,
    /// Write streamed batches right on the async workers while the page cache
    /// takes them at memory speed, instead of handing each to the blocking
    /// pool. Default on: the hand-off cost a fifth of a large download's CPU
    /// (see `transfer::StreamWriter`); a few slow writes turn it off by
    /// themselves for the rest of the download.
    pub write_on_workers: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            concurrency: 64,
            part_size: 16 << 20,
            progress: true,
            space_check: true,
            fsync: false,
            verify_md5: true,
            resume: true,
            state_file: None,
            write_buffer: 256 << 10,
            small_object: 1 << 20,
            preallocate: true,
            write_on_workers: true,
        }
    }
}

/// What a download did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DownloadSummary {
    /// Objects fetched by this run.
    pub objects: usize,
    /// Bytes of the objects fetched by this run.
    pub bytes: u64,
    /// Files already complete from an earlier run, not fetched again.
    pub skipped_existing: usize,
    /// Keys left out because they cannot be safe paths under DEST.
    pub skipped_unsafe: usize,
    /// Keys left out for other reasons (shadowed by a directory, duplicates).
    pub skipped_other: usize,
    /// Requests retried along the way.
    pub retries: u64,
    pub seconds: f64,
}

impl DownloadSummary {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9) / 1e6
    }

    /// One line for people: objects, bytes, seconds, MB/s, what was skipped.
    pub fn one_line(&self) -> String {
        let mut line = if self.objects == 0 {
            format!(
                "nothing to download: 0 objects, 0 bytes in {:.2}s",
                self.seconds
            )
        } else {
            format!(
                "downloaded {} objects, {} ({} bytes) in {:.2}s = {:.1} MB/s",
                self.objects,
                human_bytes(self.bytes),
                self.bytes,
                self.seconds,
                self.mb_per_s()
            )
        };
        line.push_str(&format!(
            "; skipped {} already complete, {} unsafe keys",
            self.skipped_existing, self.skipped_unsafe
        ));
        if self.skipped_other > 0 {
            line.push_str(&format!(
                ", {} shadowed or duplicate keys",
                self.skipped_other
            ));
        }
        if self.retries > 0 {
            line.push_str(&format!("; {} retries", self.retries));
        }
        line
    }
}

/// Bytes in binary units, for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn is_unsafe(reason: &SkipReason) -> bool {
    !matches!(
        reason,
        SkipReason::Shadowed { .. } | SkipReason::Duplicate | SkipReason::OutsidePrefix
    )
}

fn bare_etag(e: &str) -> &str {
    e.trim_start_matches("W/").trim_matches('"')
}

/// Downloads every object of `plan` into `dest` (created if missing).
pub async fn download(
    client: &Client,
    plan: &Plan,
    dest: &Path,
    opts: &DownloadOptions,
) -> Result<DownloadSummary, DownloadError> {
    let started = Instant::now();
    let retries_before = client.stats().snapshot().retries;
    let mut summary = DownloadSummary::default();

    for s in &plan.skipped {
        tracing::warn!(key = %s.key, "skipped key: {}", s.reason);
        if is_unsafe(&s.reason) {
            summary.skipped_unsafe += 1;
        } else {
            summary.skipped_other += 1;
        }
    }
    let mut jobs = Vec::with_capacity(plan.objects.len());
    for (index, object) in plan.objects.iter().enumerate() {
        match safe_relative(&object.path) {
            Ok(rel) => jobs.push(Job {
                index,
                object: object.clone(),
                rel,
            }),
            Err(why) => {
                tracing::warn!(key = %object.key, path = %object.path, "skipped key: {why}");
                summary.skipped_unsafe += 1;
            }
        }
    }
    let mut dirs = Vec::new();
    for d in &plan.dirs {
        match safe_relative(d) {
            Ok(rel) => dirs.push(rel),
            Err(why) => tracing::warn!(dir = %d, "skipped directory: {why}"),
        }
    }

    let dest_owned = dest.to_path_buf();
    let opts_owned = opts.clone();
    let prep = tokio::task::spawn_blocking(move || prepare(&dest_owned, &opts_owned, jobs, dirs))
        .await
        .map_err(|e| DownloadError::Internal(format!("preparation failed: {e}")))??;
    summary.skipped_existing = prep.skipped_existing;
    let Prepared {
        dest,
        mut state,
        jobs,
        dirs,
        ..
    } = prep;

    let total: u64 = jobs
        .iter()
        .fold(0u64, |s, j| s.saturating_add(j.object.size));
    if opts.space_check && !jobs.is_empty() {
        let (available, block) = space::available(&dest)?;
        let needed = space::needed(jobs.iter().map(|j| j.object.size), block);
        if needed > available {
            return Err(DownloadError::NotEnoughSpace {
                dest,
                needed,
                available,
                objects: jobs.len(),
            });
        }
    }
    tracing::info!(
        dest = %dest.display(),
        objects = jobs.len(),
        bytes = total,
        already_complete = summary.skipped_existing,
        "downloading"
    );

    let tmp_dir = dest.join(TMP_DIR_NAME);
    std::fs::create_dir(&tmp_dir)
        .map_err(|e| DownloadError::io("create the temporary directory", &tmp_dir, e))?;
    let mut guard = TmpGuard {
        path: tmp_dir.clone(),
        armed: true,
    };

    let concurrency = opts.concurrency.max(1);
    let shared = Arc::new(Shared {
        client: client.clone(),
        dest: dest.clone(),
        tmp_dir: tmp_dir.clone(),
        part_size: opts.part_size.max(64 << 10),
        write_buffer: opts.write_buffer.max(4096),
        in_memory_max: opts.small_object,
        fsync: opts.fsync,
        preallocate: opts.preallocate,
        write_on_workers: opts.write_on_workers,
        slow_writes: AtomicUsize::new(0),
        verify: AtomicBool::new(opts.verify_md5),
        not_md5: AtomicUsize::new(0),
        requests: Arc::new(Semaphore::new(concurrency)),
        fs_jobs: Arc::new(Semaphore::new(FS_TRACKER_PERMITS as usize)),
        md5: digest::Md5Batcher::start(),
        dirs,
        progress: Progress::new(opts.progress, total, jobs.len()),
    });

    let outcome = run_jobs(&shared, jobs, concurrency, &mut state, &mut summary).await;
    shared.progress.finish();
    // Whatever happened, no file-system job may still be writing when the
    // temporary directory goes.
    let _all = shared
        .fs_jobs
        .acquire_many(FS_TRACKER_PERMITS)
        .await
        .map_err(|_| DownloadError::Internal("file-system job tracker closed".into()))?;
    let cleanup = remove_tmp_dir(&tmp_dir);
    guard.armed = false;
    let state_result = match state.as_mut() {
        Some(st) if opts.fsync => st.sync(),
        Some(st) => st.flush(),
        None => Ok(()),
    };
    outcome?;
    cleanup?;
    state_result?;
    if opts.fsync {
        sync_fs(&dest)?;
    }
    summary.retries = client
        .stats()
        .snapshot()
        .retries
        .saturating_sub(retries_before);
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Runs the transfers, `concurrency` objects at a time (each holding at least
/// one request slot), recording each completed file and flushing the record
/// regularly. Returns at the first error, after every task has stopped.
async fn run_jobs(
    shared: &Arc<Shared>,
    jobs: Vec<Job>,
    concurrency: usize,
    state: &mut Option<State>,
    summary: &mut DownloadSummary,
) -> Result<(), DownloadError> {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut set: JoinSet<Result<Arc<Job>, DownloadError>> = JoinSet::new();
    let mut pending = jobs.into_iter();
    let mut next = pending.next();
    let mut tick = tokio::time::interval(state::FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        if next.is_none() && set.is_empty() {
            break Ok(());
        }
        tokio::select! {
            biased;
            Some(done) = set.join_next(), if !set.is_empty() => {
                if let Err(e) = completed(done, shared, state, summary) {
                    break Err(e);
                }
            }
            permit = slots.clone().acquire_owned(), if next.is_some() => {
                let (Ok(permit), Some(job)) = (permit, next.take()) else {
                    break Err(DownloadError::Internal("object limiter closed".into()));
                };
                let sh = shared.clone();
                let job = Arc::new(job);
                set.spawn(async move {
                    let _permit = permit;
                    transfer::fetch(sh, job.clone()).await.map(|()| job)
                });
                next = pending.next();
            }
            _ = tick.tick() => {
                if let Some(st) = state.as_mut() {
                    if let Err(e) = st.flush() {
                        break Err(e);
                    }
                }
            }
        }
    };
    if result.is_err() {
        set.abort_all();
        while set.join_next().await.is_some() {}
    }
    result
}

fn completed(
    done: Result<Result<Arc<Job>, DownloadError>, tokio::task::JoinError>,
    shared: &Shared,
    state: &mut Option<State>,
    summary: &mut DownloadSummary,
) -> Result<(), DownloadError> {
    let job = done.map_err(|e| DownloadError::Internal(format!("transfer task failed: {e}")))??;
    summary.objects += 1;
    summary.bytes += job.object.size;
    shared.progress.object_done();
    if let (Some(st), Some(etag)) = (state.as_mut(), job.object.etag.as_deref()) {
        st.record(&Entry {
            path: job.object.path.clone(),
            size: job.object.size,
            etag: bare_etag(etag).to_owned(),
        })?;
    }
    Ok(())
}

struct Prepared {
    dest: PathBuf,
    state: Option<State>,
    jobs: Vec<Job>,
    skipped_existing: usize,
    dirs: Dirs,
}

/// Everything before the first byte moves (blocking): DEST made and checked,
/// the state loaded and locked, leftovers removed, complete files skipped, the
/// paths checked for links and files in the way, empty directories made.
fn prepare(
    dest: &Path,
    opts: &DownloadOptions,
    jobs: Vec<Job>,
    plan_dirs: Vec<PathBuf>,
) -> Result<Prepared, DownloadError> {
    std::fs::create_dir_all(dest).map_err(|e| DownloadError::Destination {
        path: dest.to_path_buf(),
        detail: format!("cannot be created: {e}"),
    })?;
    let dest = dest
        .canonicalize()
        .map_err(|e| DownloadError::io("resolve", dest, e))?;
    if !dest.is_dir() {
        return Err(DownloadError::Destination {
            path: dest,
            detail: "is not a directory".into(),
        });
    }

    let state_path = if opts.resume {
        opts.state_file
            .clone()
            .or_else(|| state::default_state_path(&dest))
    } else {
        None
    };
    let (mut state, recorded) = match &state_path {
        None => (None, HashMap::new()),
        Some(p) => match State::open(p, &dest) {
            Ok((st, entries)) => (Some(st), entries),
            Err(e @ DownloadError::Busy { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!("resume is off for this run: {e}");
                (None, HashMap::new())
            }
        },
    };

    let tmp_dir = dest.join(TMP_DIR_NAME);
    match std::fs::symlink_metadata(&tmp_dir) {
        Ok(m) => {
            let removed = if m.is_dir() {
                let n = std::fs::read_dir(&tmp_dir).map(|d| d.count()).unwrap_or(0);
                std::fs::remove_dir_all(&tmp_dir).map(|()| n)
            } else {
                std::fs::remove_file(&tmp_dir).map(|()| 1)
            }
            .map_err(|e| DownloadError::io("remove leftovers in", &tmp_dir, e))?;
            if removed > 0 {
                tracing::info!(
                    dir = %tmp_dir.display(),
                    files = removed,
                    "removed temporary files of an interrupted download"
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DownloadError::io("inspect", &tmp_dir, e)),
    }

    let dirs = Dirs::new(dest.clone());
    let mut keep = Vec::new();
    let mut fetch = Vec::with_capacity(jobs.len());
    let mut skipped_existing = 0;
    for job in jobs {
        dirs.check_ancestors(&job.rel)?;
        let target = dest.join(&job.rel);
        let on_disk = match std::fs::symlink_metadata(&target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(DownloadError::io("inspect", &target, e)),
        };
        if let Some(m) = &on_disk {
            if m.is_dir() {
                return Err(DownloadError::Destination {
                    path: target,
                    detail: format!(
                        "is a directory where the download needs the file of s3://{}/{}: remove it or choose another destination",
                        job.object.bucket, job.object.key
                    ),
                });
            }
        }
        let complete = match (recorded.get(&job.object.path), &job.object.etag, &on_disk) {
            (Some(entry), Some(etag), Some(m)) => {
                m.is_file()
                    && m.len() == job.object.size
                    && entry.size == job.object.size
                    && entry.etag == bare_etag(etag)
            }
            _ => false,
        };
        if complete {
            skipped_existing += 1;
            if let Some(entry) = recorded.get(&job.object.path) {
                keep.push(entry.clone());
            }
        } else {
            fetch.push(job);
        }
    }
    for d in &plan_dirs {
        dirs.check_ancestors(&d.join("x"))?;
        dirs.create(d)?;
    }
    if let Some(st) = state.as_mut() {
        st.rewrite(keep.iter())?;
    }
    Ok(Prepared {
        dest,
        state,
        jobs: fetch,
        skipped_existing,
        dirs,
    })
}

fn remove_tmp_dir(path: &Path) -> Result<(), DownloadError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DownloadError::io("remove temporary files in", path, e)),
    }
}

fn sync_fs(dest: &Path) -> Result<(), DownloadError> {
    let dir = std::fs::File::open(dest).map_err(|e| DownloadError::io("open", dest, e))?;
    nix::unistd::syncfs(&dir)
        .map_err(|e| DownloadError::io("sync the file system of", dest, e.into()))
}

/// Removes the temporary directory if the download future is dropped midway
/// (a signal, a timeout in the caller); transfers are aborted with the task set.
struct TmpGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // A file-system job still finishing may add a file as we go; a second
        // pass catches it. What still remains is removed by the next run.
        for _ in 0..3 {
            if remove_tmp_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
