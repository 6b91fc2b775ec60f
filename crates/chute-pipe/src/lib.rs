//! Pipe mode: a channel's objects streamed into one named FIFO per epoch,
//! `DIR/NAME_0`, `DIR/NAME_1`, ..., as SageMaker's Pipe input mode does.
//!
//! A run of [`start_pipe`] (or [`run_pipe`]):
//!
//! - creates `NAME_0` (mode 0600 by default) and starts fetching at once, so the
//!   first bytes are waiting when the reader opens it; logs once per epoch that it
//!   waits for a reader, and otherwise waits quietly;
//! - streams the epoch's items in order (plan order, or the seeded per-epoch
//!   shuffle), each optionally gunzipped and RecordIO-framed; then creates the next
//!   epoch's FIFO, closes this one (the reader sees EOF) and removes it;
//! - when the reader closes early (EPIPE), ends the epoch with a warning saying how
//!   far it got, and moves on to the next FIFO;
//! - when an item cannot be read (missing, changed, retries exhausted) or is not
//!   valid gzip, the epoch fails: see below. It does not go on to the next epoch:
//!   the same object would fail again, and a training job must not take a
//!   cut-short epoch for a whole one;
//! - on `shutdown` (SIGINT/SIGTERM in the binary), stops writing, releases any
//!   reader blocked in `open` (it reads EOF), removes every FIFO and returns the
//!   summary so far.
//!
//! # When an epoch fails
//!
//! Items no larger than half the read-ahead budget (most training objects) are
//! withheld until all their bytes have arrived and, for gzip, decoded without
//! error; so the reader never gets part of such an item. A larger item streams as
//! it arrives, and a failure may come after some of it was written.
//!
//! Either way the failure is reported at once to the owner of the pipe by
//! [`PipeHandle::failed`] (a [`PipeFailure`]: the error, the channel and the
//! item), the reader is given the whole items before the failed one, and then,
//! per [`PipeOptions::on_failure`]:
//!
//! - [`OnFailure::Hold`] (the default): the FIFO stays open **without EOF**, so a
//!   reader cannot mistake the epoch for a complete one. The owner stops the
//!   reader (`chute run` stops the training command) and then cancels the
//!   `shutdown` token, which closes and removes the FIFOs; [`PipeHandle::wait`]
//!   then returns the error. Until the token is cancelled the reader waits, so an
//!   owner that uses `Hold` must act on [`PipeHandle::failed`].
//! - [`OnFailure::Close`]: the reader sees EOF right after the last whole item,
//!   and the pipe ends with the error (`chute pipe`, which reports it and exits
//!   3, or 2 for an object that is not gzip). [`run_pipe`] always closes.
//!
//! Read-ahead lives in [`fetch`]: parts of objects fetched at high concurrency
//! within a byte budget, handed over strictly in order. The FIFO side lives in
//! [`fifo`] and a writer thread. With `gunzip`, a quarter of the budget is kept
//! for decoded bytes and the read-ahead gets the rest. Writes to a reader that
//! has gone away must fail with `EPIPE` rather than kill the process: Rust
//! programs ignore `SIGPIPE` from the start, and a host program embedding this
//! crate must do the same.

// A failure carries the object's S3 error whole (so callers can classify it) and
// where in the epoch it happened; failures end a pipe, so their size costs nothing.
#![allow(clippy::result_large_err)]

mod fetch;
mod fifo;
mod order;
pub mod recordio;
mod writer;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use chute_plan::{AugmentedRecord, Classify, ErrorClass, Plan, Shard};
use chute_s3::{Client, StoreError};
use tokio::sync::{oneshot, watch};
pub use tokio_util::sync::CancellationToken;

use crate::fetch::FetchConfig;
use crate::fifo::Stop;
use crate::order::Order;
use crate::writer::{Ended, Writer, WriterConfig};

/// How each item is wrapped on the wire (`RecordWrapperType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordWrapper {
    /// Bytes as they are, items back to back.
    #[default]
    None,
    /// One MXNet RecordIO record per item; see [`recordio`].
    RecordIo,
}

impl RecordWrapper {
    /// The API spelling (`RecordWrapperType`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordWrapper::None => "None",
            RecordWrapper::RecordIo => "RecordIO",
        }
    }

    /// The wrapper the API spelling names (case-sensitive, as the API is).
    pub fn from_api(s: &str) -> Option<RecordWrapper> {
        match s {
            "None" => Some(RecordWrapper::None),
            "RecordIO" => Some(RecordWrapper::RecordIo),
            _ => None,
        }
    }
}

/// What the FIFO does after an epoch fails (see the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Stay open without EOF until `shutdown` is cancelled: for an owner that
    /// stops the reader first ([`PipeHandle::failed`] tells it when).
    #[default]
    Hold,
    /// EOF right after the last whole item; the pipe ends with the error.
    Close,
}

/// How a pipe runs.
#[derive(Debug, Clone)]
pub struct PipeOptions {
    /// Epochs to stream; `None` streams until stopped.
    pub epochs: Option<u64>,
    pub record_wrapper: RecordWrapper,
    /// `ShuffleConfig.Seed`: a different, reproducible order every epoch.
    pub shuffle_seed: Option<u64>,
    /// Objects are gzip (`CompressionType: Gzip`): stream them decompressed.
    pub gunzip: bool,
    /// Permission bits of the FIFOs (exactly these; the umask does not apply).
    pub fifo_mode: u32,
    /// Bytes fetched ahead of the reader, at most.
    pub max_memory: u64,
    /// Ranged GETs in flight.
    pub concurrency: usize,
    /// Objects larger than this are fetched as parallel parts of this size (at
    /// most an eighth of `max_memory`: see [`part_size_for`]).
    pub part_size: u64,
    /// What the FIFO does after an epoch fails.
    pub on_failure: OnFailure,
}

impl Default for PipeOptions {
    fn default() -> Self {
        PipeOptions {
            epochs: None,
            record_wrapper: RecordWrapper::None,
            shuffle_seed: None,
            gunzip: false,
            fifo_mode: 0o600,
            max_memory: default_max_memory(),
            concurrency: 64,
            part_size: 32 << 20,
            on_failure: OnFailure::Hold,
        }
    }
}

/// The most read-ahead a pipe has a use for by default: a few hundred MiB of
/// GETs in flight keep the network busy, and more only sits in memory
/// (doc/BENCHMARKING.md, Pipe mode).
pub const MAX_DEFAULT_MEMORY: u64 = 256 << 20;

/// The read-ahead budget for this machine: an eighth of the memory this process
/// may use (cgroup-aware), between 64 MiB and [`MAX_DEFAULT_MEMORY`]; several
/// channels may share a machine with training.
pub fn default_max_memory() -> u64 {
    chute_machine::default_max_memory(MAX_DEFAULT_MEMORY)
}

/// The part size a pipe uses: as asked, but at most an eighth of the read-ahead
/// budget so that several parts are always in flight.
///
/// Large parts are cheaper for the server: each GET costs it a fixed amount of
/// work (metadata lookups, a new response) besides the bytes. Against Garage on
/// loopback, where the server's CPU is what limits throughput, 32 MiB parts
/// drained a 1 GiB object and 40 × 25 MiB objects at 0.92-0.99 x raw GETs
/// against 0.86-0.99 x for 8 MiB parts (two interleaved rounds of five runs,
/// 256 MiB budget: eight 32 MiB parts in flight).
pub fn part_size_for(part_size: u64, max_memory: u64) -> u64 {
    let budget = max_memory.max(1 << 20);
    part_size
        .min(budget / 8)
        .clamp(64 << 10, budget.min(1 << 30))
}

/// What a pipe streams.
#[derive(Debug, Clone)]
pub enum PipeSource {
    /// The objects of a channel plan (unsharded: the whole channel).
    Objects(Plan),
    /// An augmented manifest's lines: one item per requested attribute.
    Augmented { records: Vec<AugmentedRecord> },
}

/// Everything about one Pipe channel except how to run it.
pub struct PipeChannel {
    pub dir: PathBuf,
    pub name: String,
    pub source: PipeSource,
    /// This host's shard under `ShardedByS3Key`; `None` for `FullyReplicated`.
    pub shard: Option<Shard>,
    pub client: Client,
}

impl PipeChannel {
    /// Creates `NAME_0` and starts streaming in the background.
    pub async fn start(
        self,
        opts: PipeOptions,
        shutdown: CancellationToken,
    ) -> Result<PipeHandle, PipeError> {
        start_pipe(
            self.client,
            self.source,
            self.shard,
            &self.dir,
            &self.name,
            opts,
            shutdown,
        )
        .await
    }

    /// Streams every epoch; see [`run_pipe`] (a failure closes the FIFO).
    pub async fn run(
        self,
        opts: PipeOptions,
        shutdown: CancellationToken,
    ) -> Result<PipeSummary, PipeError> {
        let opts = PipeOptions {
            on_failure: OnFailure::Close,
            ..opts
        };
        self.start(opts, shutdown).await?.wait().await
    }
}

/// What one epoch delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochSummary {
    pub epoch: u64,
    /// Items in this host's epoch.
    pub records: usize,
    /// Items written whole.
    pub records_written: usize,
    /// Bytes the reader was given (framing included).
    pub bytes: u64,
    /// Every item was written and the reader stayed to the end.
    pub complete: bool,
    /// From the FIFO's creation until a reader opened it.
    pub waited_for_reader: Duration,
    /// From the reader's open until EOF.
    pub streaming: Duration,
    /// The item being written when the epoch ended early.
    pub failed_at: Option<String>,
}

/// What a pipe did before it ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipeSummary {
    /// Epochs a reader opened, in order.
    pub epochs: Vec<EpochSummary>,
    /// Ended by `shutdown` rather than by finishing its epochs.
    pub stopped: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error("invalid channel name {name:?}: {problem}")]
    InvalidChannel {
        name: String,
        problem: chute_channel::ChannelNameError,
    },

    #[error("cannot use the pipe directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("FIFO {path}: {source}")]
    Fifo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "epoch {epoch} failed at {label} (record {record} of {records}, after {bytes} bytes \
         had been written)"
    )]
    Object {
        epoch: u64,
        label: String,
        record: usize,
        records: usize,
        bytes: u64,
        #[source]
        source: StoreError,
    },

    #[error(
        "epoch {epoch}: {label} is not valid gzip, but the channel is to be decompressed \
         (CompressionType Gzip; {records_written} records were delivered before it): {source}"
    )]
    Gunzip {
        epoch: u64,
        label: String,
        records_written: usize,
        #[source]
        source: std::io::Error,
    },

    #[error("writing to {path} failed: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("internal error in the pipe: {0}")]
    Internal(String),

    /// A failure already handed to [`PipeHandle::failed`], which shares it.
    #[error(transparent)]
    Failed(Arc<PipeError>),
}

impl Classify for PipeError {
    /// What the user asked for or gave (a channel name, a path in the way, data
    /// that is not gzip) is at fault, or reading an object is, or the machine.
    fn class(&self) -> ErrorClass {
        match self {
            PipeError::InvalidChannel { .. } | PipeError::Gunzip { .. } => ErrorClass::Usage,
            PipeError::Fifo { source, .. }
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                ErrorClass::Usage
            }
            PipeError::Object { source, .. } => source.class(),
            PipeError::Failed(e) => e.class(),
            _ => ErrorClass::Local,
        }
    }
}

impl PipeError {
    /// The item that failed (`s3://bucket/key`, or `line N attribute A` of an
    /// augmented manifest), when one is to blame.
    pub fn object(&self) -> Option<&str> {
        match self {
            PipeError::Object { label, .. } | PipeError::Gunzip { label, .. } => Some(label),
            PipeError::Failed(e) => e.object(),
            _ => None,
        }
    }

    /// The storage error behind the failure, when reading an object failed.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            PipeError::Object { source, .. } => Some(source),
            PipeError::Failed(e) => e.store_error(),
            _ => None,
        }
    }
}

/// An epoch that failed, as [`PipeHandle::failed`] reports it.
#[derive(Debug, Clone)]
pub struct PipeFailure {
    /// The channel (`NAME`).
    pub channel: String,
    /// What went wrong; [`PipeError::object`] names the item and
    /// its [`Classify::class`] tells bad input (exit 2) from an unreadable
    /// source (exit 3).
    pub error: Arc<PipeError>,
}

impl std::fmt::Display for PipeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "channel {}: {}", self.channel, self.error)
    }
}

/// The FIFO of `epoch`: `DIR/NAME_EPOCH`.
pub fn fifo_path(dir: &Path, channel: &str, epoch: u64) -> PathBuf {
    dir.join(format!("{channel}_{epoch}"))
}

/// The API rule for channel names, which also keeps FIFO names inside `dir`.
fn check_channel(name: &str) -> Result<(), PipeError> {
    chute_channel::check_channel_name(name).map_err(|problem| PipeError::InvalidChannel {
        name: name.to_owned(),
        problem,
    })
}

/// A pipe streaming in the background.
pub struct PipeHandle {
    first_fifo: Option<PathBuf>,
    failure: watch::Receiver<Option<PipeFailure>>,
    task: tokio::task::JoinHandle<Result<PipeSummary, PipeError>>,
}

impl PipeHandle {
    /// `NAME_0`, which exists once [`start_pipe`] has returned (`None` for zero epochs).
    pub fn first_fifo(&self) -> Option<&Path> {
        self.first_fifo.as_deref()
    }

    /// Resolves as soon as an epoch fails, with the failure (`None` once the pipe
    /// has ended without one: every epoch streamed, or stopped). Independent of
    /// the handle, so it can be awaited in a `select!` while the handle is kept
    /// for [`wait`](Self::wait); call it as often as needed.
    ///
    /// With [`OnFailure::Hold`] the FIFO is then open without EOF: stop the
    /// reader, then cancel the `shutdown` token given to [`start_pipe`], then
    /// [`wait`](Self::wait) (which returns the same error).
    pub fn failed(&self) -> impl Future<Output = Option<PipeFailure>> + Send + 'static {
        let mut rx = self.failure.clone();
        async move {
            let found = rx.wait_for(Option::is_some).await.map(|f| f.clone());
            match found {
                Ok(failure) => failure,
                Err(_) => rx.borrow().clone(),
            }
        }
    }

    /// Waits until every epoch is streamed, the pipe fails (with
    /// [`OnFailure::Hold`]: and is then stopped) or it is stopped.
    pub async fn wait(self) -> Result<PipeSummary, PipeError> {
        let PipeHandle { failure, task, .. } = self;
        drop(failure);
        match task.await {
            Ok(Err(PipeError::Failed(shared))) => {
                // The error itself, unless a report of it is still held.
                Err(Arc::try_unwrap(shared).unwrap_or_else(PipeError::Failed))
            }
            Ok(r) => r,
            Err(e) => Err(PipeError::Internal(format!("the pipe task ended: {e}"))),
        }
    }
}

/// Streams `source` into `dir/channel_0`, `dir/channel_1`, ... until `opts.epochs`
/// are done or `shutdown` is cancelled (which is not an error: the summary says
/// `stopped`). See the crate documentation for the behaviour. The caller learns
/// of a failure only when this returns, so a failure closes the FIFO
/// ([`OnFailure::Close`], whatever `opts` says).
pub async fn run_pipe(
    client: Client,
    source: PipeSource,
    shard: Option<Shard>,
    dir: &Path,
    channel: &str,
    opts: PipeOptions,
    shutdown: CancellationToken,
) -> Result<PipeSummary, PipeError> {
    let opts = PipeOptions {
        on_failure: OnFailure::Close,
        ..opts
    };
    start_pipe(client, source, shard, dir, channel, opts, shutdown)
        .await?
        .wait()
        .await
}

/// As [`run_pipe`], but returns as soon as `NAME_0` exists (for `chute run`, which
/// starts the training command only once every channel is ready), and a failure
/// does what `opts.on_failure` says.
pub async fn start_pipe(
    client: Client,
    source: PipeSource,
    shard: Option<Shard>,
    dir: &Path,
    channel: &str,
    opts: PipeOptions,
    shutdown: CancellationToken,
) -> Result<PipeHandle, PipeError> {
    start_with_limit(
        client,
        source,
        shard,
        dir,
        channel,
        opts,
        shutdown,
        recordio::MAX_RECORD_LEN,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn start_with_limit(
    client: Client,
    source: PipeSource,
    shard: Option<Shard>,
    dir: &Path,
    channel: &str,
    opts: PipeOptions,
    shutdown: CancellationToken,
    record_limit: u64,
) -> Result<PipeHandle, PipeError> {
    check_channel(channel)?;
    let (report_tx, failure) = watch::channel(None);
    if opts.epochs == Some(0) {
        return Ok(PipeHandle {
            first_fifo: None,
            failure,
            task: tokio::spawn(async { Ok(PipeSummary::default()) }),
        });
    }
    let (stop, first) = first_fifo(dir, channel, opts.fifo_mode)?;
    let order = Arc::new(match source {
        PipeSource::Objects(plan) => Order::objects(plan, opts.shuffle_seed, shard),
        PipeSource::Augmented { records } => Order::lines(records, opts.shuffle_seed, shard),
    });
    let budget = opts.max_memory.max(1 << 20);
    // Decoded bytes count against the budget too: a share of it is theirs.
    let decode_limit = if opts.gunzip { budget / 4 } else { 0 };
    let fetch_budget = budget - decode_limit;
    let skip_below = Arc::new(AtomicU64::new(0));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let fetch_stop = CancellationToken::new();
    let fetch = tokio::spawn(fetch::run(
        client,
        order,
        FetchConfig {
            epochs: opts.epochs,
            part_size: part_size_for(opts.part_size, fetch_budget),
            concurrency: opts.concurrency.max(1),
            budget: fetch_budget,
            stop: fetch_stop.clone(),
        },
        skip_below.clone(),
        tx,
    ));
    let report_tx = Arc::new(report_tx);
    let report = reporter(&report_tx, channel);
    let writer = Writer::new(
        WriterConfig {
            dir: dir.to_path_buf(),
            channel: channel.to_owned(),
            fifo_mode: opts.fifo_mode,
            epochs: opts.epochs,
            record_wrapper: opts.record_wrapper,
            gunzip: opts.gunzip,
            record_limit,
            // Withheld items leave the read-ahead at least half the budget, and
            // cannot take all of it (claims are in order: no deadlock).
            hold_limit: fetch_budget / 2,
            decode_limit,
            on_failure: opts.on_failure,
        },
        rx,
        stop.clone(),
        skip_below,
        Box::new(report.clone()),
        fetch_stop.clone(),
    );
    let done_rx = match spawn_writer(channel, writer, report) {
        Ok(done_rx) => done_rx,
        Err(e) => {
            fetch.abort();
            let _ = stop.remove_all();
            return Err(PipeError::Internal(format!(
                "cannot start the writer thread: {e}"
            )));
        }
    };
    let task = tokio::spawn(async move {
        let result = supervise(fetch, done_rx, stop, shutdown, fetch_stop.clone()).await;
        fetch_stop.cancel();
        // Ends `failed()` for a pipe that did not fail.
        drop(report_tx);
        result
    });
    Ok(PipeHandle {
        first_fifo: Some(first),
        failure,
        task,
    })
}

/// Creates `dir` if needed and the epoch-0 FIFO in it, with the [`Stop`] that
/// removes the pipe's FIFOs.
fn first_fifo(dir: &Path, channel: &str, mode: u32) -> Result<(Arc<Stop>, PathBuf), PipeError> {
    let in_dir = |source| PipeError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(in_dir)?;
    let stop = Stop::new(dir).map_err(in_dir)?;
    let first = fifo_path(dir, channel, 0);
    stop.create(&first, mode)
        .map_err(|source| PipeError::Fifo {
            path: first.clone(),
            source,
        })?;
    Ok((stop, first))
}

/// Logs a failed epoch and hands it to [`PipeHandle::failed`].
fn reporter(
    tx: &Arc<watch::Sender<Option<PipeFailure>>>,
    channel: &str,
) -> impl Fn(Arc<PipeError>) + Clone + Send + 'static {
    let (tx, name) = (tx.clone(), channel.to_owned());
    move |error: Arc<PipeError>| {
        tracing::error!(channel = %name, "epoch failed: {error}");
        let _ = tx.send(Some(PipeFailure {
            channel: name.clone(),
            error,
        }));
    }
}

/// Runs the writer on its own thread (it blocks on the FIFO); the receiver gets
/// its summaries and how it ended.
fn spawn_writer(
    channel: &str,
    mut writer: Writer,
    report: impl Fn(Arc<PipeError>) + Send + 'static,
) -> std::io::Result<oneshot::Receiver<WriterResult>> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("chute-pipe-{channel}"))
        .spawn(move || {
            let ended = match writer.run() {
                // Failures the writer did not report itself (it reports those
                // of an epoch in progress).
                Err(e) if !matches!(e, PipeError::Failed(_)) => {
                    let shared = Arc::new(e);
                    report(shared.clone());
                    Err(PipeError::Failed(shared))
                }
                other => other,
            };
            let summaries = std::mem::take(&mut writer.summaries);
            // The report's sender goes first, so that `wait` can take the error
            // back whole when nobody kept the report.
            drop(writer);
            drop(report);
            let _ = done_tx.send((summaries, ended));
        })?;
    Ok(done_rx)
}

type WriterResult = (Vec<EpochSummary>, Result<Ended, PipeError>);

/// Waits for the writer to finish or for a stop, then cleans up every FIFO.
async fn supervise(
    fetch: tokio::task::JoinHandle<()>,
    mut done: oneshot::Receiver<WriterResult>,
    stop: Arc<Stop>,
    shutdown: CancellationToken,
    fetch_stop: CancellationToken,
) -> Result<PipeSummary, PipeError> {
    let mut guards = Vec::new();
    let outcome = tokio::select! {
        r = &mut done => r,
        _ = shutdown.cancelled() => {
            stop.set();
            fetch_stop.cancel();
            // Held open, the FIFOs cannot keep the writer blocked in `open`.
            guards = stop.hold_open();
            fetch.abort();
            done.await
        }
    };
    fetch.abort();
    let cleaned = stop.remove_all();
    drop(guards);
    let (epochs, ended) = outcome
        .map_err(|_| PipeError::Internal("the writer thread ended without a result".into()))?;
    let stopped = match ended? {
        Ended::AllEpochs => false,
        Ended::Stopped => true,
    };
    if let Err(e) = cleaned {
        tracing::warn!(error = %e, "could not remove every FIFO");
    }
    Ok(PipeSummary { epochs, stopped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_leaves_several_parts_in_flight() {
        const MIB: u64 = 1 << 20;
        assert_eq!(part_size_for(32 * MIB, 256 * MIB), 32 * MIB);
        assert_eq!(part_size_for(32 * MIB, 64 * MIB), 8 * MIB);
        assert_eq!(part_size_for(4 * MIB, 256 * MIB), 4 * MIB);
        // Tiny budgets still make progress: parts of at least 64 KiB.
        assert_eq!(part_size_for(32 * MIB, MIB), 128 << 10);
        assert_eq!(part_size_for(1, 0), 64 << 10);
    }

    #[test]
    fn fifo_names() {
        assert_eq!(
            fifo_path(Path::new("/opt/ml/input/data"), "train", 3),
            PathBuf::from("/opt/ml/input/data/train_3")
        );
        assert!(check_channel("train-1.v2_x").is_ok());
        for bad in ["", "a/b", "..", ".", "a b", &"x".repeat(65)] {
            assert!(check_channel(bad).is_err(), "{bad:?}");
        }
    }
}
