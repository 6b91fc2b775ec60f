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
//! - **One download per DEST.** DEST itself is locked (see `lock`): a second
//!   download into it fails at once, naming the first.
//! - **Nothing is written outside DEST.** Unsafe keys are skipped and counted;
//!   every path under DEST is walked from DEST's handle without following
//!   symbolic links (see [`paths`]), so a link planted inside DEST stops the
//!   run instead of leading out of it.
//! - **A refused download creates nothing.** DEST, the state and the space are
//!   checked before DEST, its parents or the state file are created.
//! - **Space is checked first.** The bytes still to fetch (rounded to blocks)
//!   are compared with the free space of DEST's file system before any GET.
//!
//! Throughput comes from many requests in flight (`concurrency`), large objects
//! split into `part_size` ranged parts written with `pwrite` into a
//! preallocated file, and small objects held in memory and written with one
//! file-system job each, off the async workers. The defaults were chosen by
//! measurement (doc/BENCHMARKING.md).
//!
//! Durability: a file is recorded complete only after a sync of DEST's file
//! system (`syncfs`) that started after its rename, so after a crash of the
//! machine the state never vouches for a file whose bytes did not reach the
//! disk. One sync covers every file completed since the previous one (at most
//! one runs at a time, about one a second, off the transfers), and the last
//! one runs before `download` returns. With `fsync`, each file is also synced
//! before its rename, so no file under its final name can lose its bytes.

mod digest;
mod error;
mod lock;
pub mod paths;
mod progress;
mod space;
pub mod state;
mod transfer;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chute_plan::{Plan, SkipReason};
use chute_s3::Client;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use error::DownloadError;

use lock::{lock_dest, DestLock};
use paths::{entry_at, is_dir, is_file, safe_relative, Dirs, Missing, TmpDir, TMP_DIR_NAME};
use progress::Progress;
use state::{Entry, State};
use transfer::{Adaptive, Download, Job, Limits, Settings};

/// How a download runs. `Default` is what `chute download` uses.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// GET requests in flight (parts of large objects and whole small objects
    /// alike). Default 64: enough to hide a distant endpoint's latency
    /// (doc/BENCHMARKING.md).
    pub concurrency: usize,
    /// Objects larger than this are fetched as parallel ranged parts of about
    /// this size. Default 16 MiB: fewer requests to set up, still parallel on
    /// mid-sized objects (doc/BENCHMARKING.md).
    pub part_size: u64,
    /// Show a progress bar (only ever drawn when stderr is a terminal).
    pub progress: bool,
    /// Compare the bytes to fetch with DEST's free space before starting.
    pub space_check: bool,
    /// Also sync each file before renaming it into place (see the crate docs).
    pub fsync: bool,
    /// Check single-GET objects against an MD5 ETag.
    pub verify_md5: bool,
    /// Record completed files and skip them on a rerun.
    pub resume: bool,
    /// Where the resume state lives; `None` = `<parent of DEST>/.<name>.chute-state`.
    pub state_file: Option<PathBuf>,
    /// Objects up to this size are held whole in memory, checked, and written
    /// and renamed with one file-system job. Default 1 MiB.
    pub small_object: u64,
    /// Bytes gathered from the network before each write to disk. Default
    /// 256 KiB: small enough that the bytes are still in the CPU cache when
    /// they are copied into the page cache (doc/BENCHMARKING.md). Only with
    /// the `tuning` feature (benchmarks and tests).
    #[cfg(feature = "tuning")]
    pub write_buffer: usize,
    /// Reserve each multi-write file's full size (`fallocate`) before writing,
    /// so a full disk is found before its bytes are fetched. Only with the
    /// `tuning` feature; always on otherwise.
    #[cfg(feature = "tuning")]
    pub preallocate: bool,
    /// Write streamed batches right on the async workers while the page cache
    /// takes them at memory speed, instead of handing each to the blocking
    /// pool (see `transfer::StreamWriter`); a few slow writes turn it off by
    /// themselves for the rest of the download. Only with the `tuning`
    /// feature; always on otherwise.
    #[cfg(feature = "tuning")]
    pub write_on_workers: bool,
}

/// [`DownloadOptions::write_buffer`]'s default.
const WRITE_BUFFER: usize = 256 << 10;

impl DownloadOptions {
    /// The write path's knobs: (write buffer, preallocate, write on workers);
    /// fixed at their defaults unless the `tuning` feature exposes them.
    fn write_path(&self) -> (usize, bool, bool) {
        #[cfg(feature = "tuning")]
        return (self.write_buffer, self.preallocate, self.write_on_workers);
        #[cfg(not(feature = "tuning"))]
        (WRITE_BUFFER, true, true)
    }
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
            small_object: 1 << 20,
            #[cfg(feature = "tuning")]
            write_buffer: WRITE_BUFFER,
            #[cfg(feature = "tuning")]
            preallocate: true,
            #[cfg(feature = "tuning")]
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
    let (jobs, dirs) = jobs_of(plan, &mut summary);
    let (dest_owned, opts_owned) = (dest.to_path_buf(), opts.clone());
    let prepared =
        tokio::task::spawn_blocking(move || prepare(&dest_owned, &opts_owned, jobs, dirs))
            .await
            .map_err(|e| DownloadError::Internal(format!("preparation failed: {e}")))??;
    summary.skipped_existing = prepared.skipped_existing;
    transfer_all(client, prepared, opts, &mut summary).await?;
    summary.retries = client
        .stats()
        .snapshot()
        .retries
        .saturating_sub(retries_before);
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The plan's objects as jobs and its directories, each at a safe path under
/// DEST; what cannot have one is counted as skipped (and warned about, unless
/// planning skipped it: `chute_channel::open` reported those).
fn jobs_of(plan: &Plan, summary: &mut DownloadSummary) -> (Vec<Job>, Vec<PathBuf>) {
    for s in &plan.skipped {
        if is_unsafe(&s.reason) {
            summary.skipped_unsafe += 1;
        } else {
            summary.skipped_other += 1;
        }
    }
    let mut jobs = Vec::with_capacity(plan.objects.len());
    for (index, object) in plan.objects.iter().enumerate() {
        match safe_relative(object.path()) {
            Ok(rel) => jobs.push(Job {
                index,
                object: object.clone(),
                rel,
            }),
            Err(why) => {
                tracing::warn!(key = %object.key(), path = %object.path(), "skipped key: {why}");
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
    (jobs, dirs)
}

/// Fetches every job into the prepared DEST, then removes the temporary files
/// and records (and, with `fsync`, syncs) what was completed, even after a
/// failure, so that a rerun keeps it.
async fn transfer_all(
    client: &Client,
    prepared: Prepared,
    opts: &DownloadOptions,
    summary: &mut DownloadSummary,
) -> Result<(), DownloadError> {
    let Prepared {
        dest,
        state,
        jobs,
        dirs,
        tmp,
        lock: _lock,
        ..
    } = prepared;
    let total: u64 = jobs
        .iter()
        .fold(0u64, |s, j| s.saturating_add(j.object.size));
    tracing::info!(
        dest = %dest.display(),
        objects = jobs.len(),
        bytes = total,
        already_complete = summary.skipped_existing,
        "downloading"
    );
    let tmp_path = tmp.path.clone();
    let mut guard = TmpGuard {
        path: tmp_path.clone(),
        armed: true,
    };
    let fs_handle = Arc::new(
        dirs.root()
            .try_clone()
            .map_err(|e| DownloadError::io("open", &dest, e))?,
    );
    let mut recorder = Recorder {
        state,
        fs: fs_handle.clone(),
        dest: dest.clone(),
        waiting: Vec::new(),
        syncing: None,
    };
    let concurrency = opts.concurrency.max(1);
    let dl = Arc::new(Download {
        client: client.clone(),
        dest: dest.clone(),
        tmp,
        dirs,
        settings: Settings::from(opts),
        limits: Limits::new(concurrency),
        adaptive: Adaptive::new(opts.verify_md5),
        md5: digest::Md5Batcher::start(),
        progress: Progress::new(opts.progress, total, jobs.len()),
    });
    let outcome = run_jobs(&dl, jobs, concurrency, &mut recorder, summary).await;
    dl.progress.finish();
    // Whatever happened, no file-system job may still be writing when the
    // temporary directory goes.
    dl.limits.all_fs_jobs_done().await?;
    let cleanup = remove_tmp_dir(&tmp_path);
    guard.armed = false;
    let recorded = recorder.finish().await;
    outcome?;
    cleanup?;
    let synced_at_end = recorded?;
    if opts.fsync && !synced_at_end {
        sync_fs(&fs_handle, &dest)?;
    }
    Ok(())
}

/// Runs the transfers, `concurrency` objects at a time (each holding at least
/// one request slot), passing each completed file to the recorder and letting
/// it sync and record them regularly. Returns at the first error, after every
/// task has stopped.
async fn run_jobs(
    dl: &Arc<Download>,
    jobs: Vec<Job>,
    concurrency: usize,
    recorder: &mut Recorder,
    summary: &mut DownloadSummary,
) -> Result<(), DownloadError> {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut set: JoinSet<Result<Arc<Job>, DownloadError>> = JoinSet::new();
    let mut pending = jobs.into_iter();
    let mut next = pending.next();
    let mut tick = tokio::time::interval(state::SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        if next.is_none() && set.is_empty() {
            break Ok(());
        }
        tokio::select! {
            biased;
            Some(done) = set.join_next(), if !set.is_empty() => {
                if let Err(e) = completed(done, dl, recorder, summary) {
                    break Err(e);
                }
            }
            permit = slots.clone().acquire_owned(), if next.is_some() => {
                let (Ok(permit), Some(job)) = (permit, next.take()) else {
                    break Err(DownloadError::Internal("object limiter closed".into()));
                };
                let dl = dl.clone();
                let job = Arc::new(job);
                set.spawn(async move {
                    let _permit = permit;
                    transfer::fetch(dl, job.clone()).await.map(|()| job)
                });
                next = pending.next();
            }
            synced = recorder.synced(), if recorder.is_syncing() => {
                if let Err(e) = synced.and_then(|batch| recorder.record(&batch)) {
                    break Err(e);
                }
            }
            _ = tick.tick() => recorder.start_sync(),
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
    dl: &Download,
    recorder: &mut Recorder,
    summary: &mut DownloadSummary,
) -> Result<(), DownloadError> {
    let job = done.map_err(|e| DownloadError::Internal(format!("transfer task failed: {e}")))??;
    summary.objects += 1;
    summary.bytes += job.object.size;
    dl.progress.object_done();
    if let Some(etag) = job.object.etag().map(|e| e.to_string()).as_deref() {
        recorder.add(Entry {
            path: job.object.path().to_owned(),
            size: job.object.size,
            etag: bare_etag(etag).to_owned(),
        });
    }
    Ok(())
}

/// Completed files on their way into the resume state. A batch is recorded
/// only after a sync of DEST's file system that started once all of its files
/// were in place, so a record never outlives its data; at most one sync runs
/// at a time, on the blocking pool.
struct Recorder {
    state: Option<State>,
    /// A handle on DEST's file system, for `syncfs`.
    fs: Arc<File>,
    dest: PathBuf,
    /// Completed since the running sync started.
    waiting: Vec<Entry>,
    /// The running sync, returning the entries it covers.
    syncing: Option<tokio::task::JoinHandle<Result<Vec<Entry>, DownloadError>>>,
}

impl Recorder {
    fn add(&mut self, entry: Entry) {
        if self.state.is_some() {
            self.waiting.push(entry);
        }
    }

    fn is_syncing(&self) -> bool {
        self.syncing.is_some()
    }

    /// Starts a sync covering the waiting entries, unless one is running.
    fn start_sync(&mut self) {
        if self.syncing.is_some() || self.waiting.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.waiting);
        let (fs, dest) = (self.fs.clone(), self.dest.clone());
        self.syncing = Some(tokio::task::spawn_blocking(move || {
            sync_fs(&fs, &dest)?;
            Ok(batch)
        }));
    }

    /// Waits for the running sync (forever if there is none); cancel-safe.
    async fn synced(&mut self) -> Result<Vec<Entry>, DownloadError> {
        let Some(handle) = self.syncing.as_mut() else {
            return std::future::pending().await;
        };
        let done = handle.await;
        self.syncing = None;
        done.map_err(|e| DownloadError::Internal(format!("sync failed: {e}")))?
    }

    fn record(&mut self, batch: &[Entry]) -> Result<(), DownloadError> {
        match self.state.as_mut() {
            Some(st) => st.record_all(batch),
            None => Ok(()),
        }
    }

    /// Syncs and records whatever is left; returns whether the file system
    /// was synced after the last file completed.
    async fn finish(&mut self) -> Result<bool, DownloadError> {
        if self.syncing.is_some() {
            let batch = self.synced().await?;
            self.record(&batch)?;
        }
        if self.waiting.is_empty() {
            return Ok(false);
        }
        self.start_sync();
        let batch = self.synced().await?;
        self.record(&batch)?;
        Ok(true)
    }
}

struct Prepared {
    dest: PathBuf,
    state: Option<State>,
    jobs: Vec<Job>,
    skipped_existing: usize,
    dirs: Dirs,
    tmp: TmpDir,
    lock: DestLock,
}

/// Where DEST is, before anything is created.
struct Place {
    /// Absolute, with the existing part resolved.
    dest: PathBuf,
    /// DEST if it exists, else its deepest existing ancestor.
    existing: PathBuf,
    /// The missing directories down to DEST, outermost first.
    missing: Vec<PathBuf>,
}

/// Everything before the first byte moves (blocking). First what only reads:
/// DEST located and, if it exists, locked; the state loaded; leftovers of an
/// interrupted run removed; complete files skipped; paths checked for links
/// and files in the way; free space measured. Only then are DEST, the state
/// file, the plan's empty directories and the temporary directory created, and
/// a failure there removes what was created: a refused download leaves nothing.
fn prepare(
    dest: &Path,
    opts: &DownloadOptions,
    jobs: Vec<Job>,
    plan_dirs: Vec<PathBuf>,
) -> Result<Prepared, DownloadError> {
    let place = locate(dest)?;
    let dest = place.dest.clone();
    let held = if place.missing.is_empty() {
        Some(open_dest(&dest)?)
    } else {
        None
    };
    let resume = Resume::open(opts, &dest)?;
    if let Some((dirs, _)) = &held {
        remove_leftovers(dirs)?;
    }
    let sorted = sort_jobs(held.as_ref().map(|(dirs, _)| dirs), jobs, &resume.recorded)?;
    if let Some((dirs, _)) = &held {
        for d in &plan_dirs {
            dirs.open_dir(d, Missing::Stop, d)?;
        }
    }
    if opts.space_check && !sorted.fetch.is_empty() {
        check_space(&place, &sorted.fetch)?;
    }
    // From here on, things are created.
    let mut undo = Undo::default();
    match create(held, &place, resume, &sorted.keep, &plan_dirs, &mut undo) {
        Ok((dirs, lock, tmp, state)) => Ok(Prepared {
            dest,
            state,
            jobs: sorted.fetch,
            skipped_existing: sorted.skipped_existing,
            dirs,
            tmp,
            lock,
        }),
        Err(e) => {
            undo.run(&dest);
            Err(e)
        }
    }
}

/// The resume state: what an earlier run recorded, and where this one records.
struct Resume {
    /// The state file, when resuming; `None` once resume is off for this run.
    path: Option<PathBuf>,
    /// The existing state, opened.
    state: Option<State>,
    /// Its entries, by relative path.
    recorded: HashMap<String, Entry>,
}

impl Resume {
    /// Reads the state of an earlier run; a state that cannot be used turns
    /// resume off (with a warning) unless another download holds it.
    fn open(opts: &DownloadOptions, dest: &Path) -> Result<Resume, DownloadError> {
        let path = if opts.resume {
            opts.state_file
                .clone()
                .or_else(|| state::default_state_path(dest))
        } else {
            None
        };
        let Some(p) = path else {
            return Ok(Resume {
                path: None,
                state: None,
                recorded: HashMap::new(),
            });
        };
        match State::open_existing(&p, dest) {
            Ok(Some((st, entries))) => Ok(Resume {
                path: Some(p),
                state: Some(st),
                recorded: entries,
            }),
            Ok(None) => Ok(Resume {
                path: Some(p),
                state: None,
                recorded: HashMap::new(),
            }),
            Err(e @ DownloadError::Busy { .. }) => Err(e),
            Err(e) => {
                tracing::warn!("resume is off for this run: {e}");
                Ok(Resume {
                    path: None,
                    state: None,
                    recorded: HashMap::new(),
                })
            }
        }
    }
}

/// The jobs split into those to fetch and those complete on disk as recorded.
struct Sorted {
    fetch: Vec<Job>,
    /// The recorded entries of the complete ones, kept in the new state.
    keep: Vec<Entry>,
    skipped_existing: usize,
}

/// A job is complete when DEST has its file at the recorded size and the
/// recorded ETag is the plan's.
fn sort_jobs(
    dirs: Option<&Dirs>,
    jobs: Vec<Job>,
    recorded: &HashMap<String, Entry>,
) -> Result<Sorted, DownloadError> {
    let mut sorted = Sorted {
        fetch: Vec::with_capacity(jobs.len()),
        keep: Vec::new(),
        skipped_existing: 0,
    };
    for job in jobs {
        let on_disk = match dirs {
            Some(dirs) => file_on_disk(dirs, &job)?,
            None => None,
        };
        let etag = job.object.etag().map(|e| e.to_string());
        let entry = recorded.get(job.object.path());
        let complete = match (entry, &etag, on_disk) {
            (Some(entry), Some(etag), Some(len)) => {
                len == job.object.size
                    && entry.size == job.object.size
                    && entry.etag == bare_etag(etag)
            }
            _ => false,
        };
        match entry {
            Some(entry) if complete => {
                sorted.skipped_existing += 1;
                sorted.keep.push(entry.clone());
            }
            _ => sorted.fetch.push(job),
        }
    }
    Ok(sorted)
}

/// The free space of DEST's file system against what the jobs need.
fn check_space(place: &Place, fetch: &[Job]) -> Result<(), DownloadError> {
    let (available, block) = space::available(&place.existing)?;
    let needed = space::needed(fetch.iter().map(|j| j.object.size), block);
    if needed > available {
        return Err(DownloadError::NotEnoughSpace {
            dest: place.dest.clone(),
            needed,
            available,
            objects: fetch.len(),
        });
    }
    Ok(())
}

/// Creates DEST (and locks it) if it is missing, the state file, the plan's
/// directories and the temporary directory; `undo` records what to remove if
/// any of it fails.
fn create(
    held: Option<(Dirs, DestLock)>,
    place: &Place,
    resume: Resume,
    keep: &[Entry],
    plan_dirs: &[PathBuf],
    undo: &mut Undo,
) -> Result<(Dirs, DestLock, TmpDir, Option<State>), DownloadError> {
    let dest = &place.dest;
    let (dirs, lock) = match held {
        Some(h) => h,
        None => {
            create_dest(place, undo)?;
            let h = open_dest(dest).inspect_err(|_| {
                // Whoever holds DEST now may be using it.
                undo.dirs.retain(|d| d != dest);
            })?;
            undo.own_dest = true;
            h
        }
    };
    let Resume {
        path, mut state, ..
    } = resume;
    if let (None, Some(p)) = (&state, &path) {
        match State::create(p, dest) {
            Ok(st) => {
                undo.state_file = Some(p.clone());
                state = Some(st);
            }
            Err(e @ DownloadError::Busy { .. }) => return Err(e),
            Err(e) => tracing::warn!("resume is off for this run: {e}"),
        }
    }
    if let Some(st) = state.as_mut() {
        st.rewrite(keep.iter())?;
    }
    for d in plan_dirs {
        dirs.create(d)?;
    }
    let tmp = TmpDir::create(&dirs)?;
    Ok((dirs, lock, tmp, state))
}

/// Finds DEST without creating it: an existing DEST must be a directory (a
/// link to one is taken as given), a missing one needs an existing directory
/// above it.
fn locate(dest: &Path) -> Result<Place, DownloadError> {
    let bad = |path: &Path, detail: String| DownloadError::Destination {
        path: path.to_path_buf(),
        detail,
    };
    let abs = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| DownloadError::io("find the current directory for", dest, e))?
            .join(dest)
    };
    let mut missing: Vec<OsString> = Vec::new();
    let mut cur = abs.as_path();
    let existing = loop {
        match std::fs::metadata(cur) {
            Ok(m) if m.is_dir() => {
                break cur
                    .canonicalize()
                    .map_err(|e| DownloadError::io("resolve", cur, e))?
            }
            Ok(_) if missing.is_empty() => return Err(bad(cur, "is not a directory".into())),
            Ok(_) => {
                return Err(bad(
                    cur,
                    format!(
                        "is not a directory, so {} cannot be created in it",
                        abs.display()
                    ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bad(cur, format!("cannot be used: {e}"))),
        }
        match (cur.components().next_back(), cur.parent()) {
            (Some(Component::Normal(name)), Some(parent)) => {
                missing.push(name.to_owned());
                cur = parent;
            }
            _ => {
                return Err(bad(
                    &abs,
                    "cannot be created: its path goes through '..' or '.' below a directory that does not exist".into(),
                ))
            }
        }
    };
    let mut dest = existing.clone();
    let mut chain = Vec::with_capacity(missing.len());
    for name in missing.iter().rev() {
        dest.push(name);
        chain.push(dest.clone());
    }
    Ok(Place {
        dest,
        existing,
        missing: chain,
    })
}

/// What [`prepare`] created, removed again when it fails.
#[derive(Default)]
struct Undo {
    /// Directories made for DEST, outermost first.
    dirs: Vec<PathBuf>,
    /// DEST was made and locked by this run: nothing else wrote into it.
    own_dest: bool,
    state_file: Option<PathBuf>,
}

impl Undo {
    fn run(self, dest: &Path) {
        if let Some(p) = &self.state_file {
            let _ = std::fs::remove_file(p);
        }
        if self.own_dest {
            let _ = std::fs::remove_dir_all(dest);
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn create_dest(place: &Place, undo: &mut Undo) -> Result<(), DownloadError> {
    for dir in &place.missing {
        match std::fs::create_dir(dir) {
            Ok(()) => undo.dirs.push(dir.clone()),
            // Made by someone else meanwhile: not ours to remove.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => {
                return Err(DownloadError::Destination {
                    path: dir.clone(),
                    detail: format!("cannot be created: {e}"),
                })
            }
        }
    }
    Ok(())
}

/// Opens the directory DEST and takes its lock.
fn open_dest(dest: &Path) -> Result<(Dirs, DestLock), DownloadError> {
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_CLOEXEC)
        .open(dest)
        .map_err(|e| DownloadError::Destination {
            path: dest.to_path_buf(),
            detail: format!("cannot be opened as a directory: {e}"),
        })?;
    let lock = lock_dest(&root, dest)?;
    Ok((Dirs::new(dest.to_path_buf(), root), lock))
}

/// The size of the regular file at `job`'s path, if there is one; a
/// directory there, or a link or file on the way to it, is an error.
fn file_on_disk(dirs: &Dirs, job: &Job) -> Result<Option<u64>, DownloadError> {
    let Some(parent) = dirs.open_parent(&job.rel, Missing::Stop)? else {
        return Ok(None);
    };
    let Some(name) = job.rel.file_name() else {
        return Ok(None);
    };
    let target = dirs.dest().join(&job.rel);
    match entry_at(&parent, name) {
        Ok(Some(st)) if is_dir(&st) => Err(DownloadError::Destination {
            path: target,
            detail: format!(
                "is a directory where the download needs the file of s3://{}/{}: remove it or choose another destination",
                job.object.bucket(), job.object.key()
            ),
        }),
        Ok(Some(st)) if is_file(&st) => Ok(u64::try_from(st.st_size).ok()),
        Ok(_) => Ok(None),
        Err(e) => Err(DownloadError::io("inspect", target, e.into())),
    }
}

/// Removes what an interrupted run left in DEST's temporary directory (DEST
/// is locked: no download is using it).
fn remove_leftovers(dirs: &Dirs) -> Result<(), DownloadError> {
    let tmp_dir = dirs.dest().join(TMP_DIR_NAME);
    match std::fs::symlink_metadata(&tmp_dir) {
        Ok(m) => {
            // `remove_dir_all` does not follow links inside the tree.
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
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DownloadError::io("inspect", &tmp_dir, e)),
    }
}

fn remove_tmp_dir(path: &Path) -> Result<(), DownloadError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DownloadError::io("remove temporary files in", path, e)),
    }
}

fn sync_fs(fs: &File, dest: &Path) -> Result<(), DownloadError> {
    nix::unistd::syncfs(fs)
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
