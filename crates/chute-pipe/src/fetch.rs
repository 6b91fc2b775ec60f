//! The read-ahead pipeline: every epoch's items, split into ranged parts, fetched
//! many at a time and handed to the writer strictly in stream order.
//!
//! The stages, all lazy, for one endless (or N-epoch) sequence of epochs:
//!
//! 1. items of the epoch, sized (`HEAD`, cached) where the size is not known yet —
//!    augmented-manifest references — many at a time, order kept;
//! 2. each item split into parts of at most `part_size` bytes;
//! 3. one part at a time, in order, a claim on the memory budget for its bytes
//!    (claims are made in stream order, so the part the writer needs next always
//!    holds its memory before any later part: the budget cannot deadlock);
//! 4. then one of `concurrency` GET slots, and a task that streams the part's
//!    bytes into a channel of its own as they arrive.
//!
//! The parts' channels reach the writer thread in stream order, so it writes the
//! head part's bytes the moment they arrive while later parts are still being
//! fetched; memory claims travel with the data and are released once it has been
//! written. The GETs keep running while the writer waits on the reader, and the
//! writer finds data waiting whenever it is ready. Fetching runs ahead across
//! epoch boundaries too, so the next epoch's first bytes are there when its reader
//! opens the FIFO — but a next epoch's GETs start only once this epoch's are all
//! done, since sharing bandwidth with them would only delay the current reader.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chute_s3::ReadStream;
use chute_s3::{Client, StoreError};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::order::{Item, ItemSource, Order};

/// HEAD requests in flight while sizing augmented-manifest references.
const HEAD_CONCURRENCY: usize = 32;

/// What the writer receives, in stream order.
pub(crate) enum Msg {
    EpochStart { epoch: u64, items: usize },
    Part(Part),
    EpochEnd { epoch: u64 },
}

/// Some bytes of one item (or why they could not be had).
pub(crate) struct Part {
    pub epoch: u64,
    /// The item's position in the epoch.
    pub index: usize,
    pub item: Arc<Item>,
    /// The item's whole length, when it could be sized.
    pub size: u64,
    pub first: bool,
    pub last: bool,
    pub data: PartData,
}

/// A part's bytes: at hand (inline values, empty parts, errors found before any
/// request), or arriving from its GET as they come.
pub(crate) enum PartData {
    Ready(Result<Bytes, StoreError>),
    Stream {
        chunks: UnboundedReceiver<Result<Bytes, StoreError>>,
        /// Bytes the part will carry.
        len: u64,
        /// The memory claim for them, released when dropped (by the writer,
        /// once the bytes are written).
        permit: OwnedSemaphorePermit,
    },
}

pub(crate) struct FetchConfig {
    pub epochs: Option<u64>,
    pub part_size: u64,
    pub concurrency: usize,
    /// Bytes of fetched-but-unwritten data allowed.
    pub budget: u64,
    /// Ends the GETs in flight when the pipe stops.
    pub stop: CancellationToken,
}

/// An item with its length and pinned version.
struct Sized {
    epoch: u64,
    index: usize,
    item: Arc<Item>,
    size: u64,
    etag: Option<String>,
    error: Option<StoreError>,
}

enum Stage {
    Start { epoch: u64, items: usize },
    Item(Sized),
    End { epoch: u64 },
}

/// One unit of work for stage 3/4.
enum Job {
    Start { epoch: u64, items: usize },
    End { epoch: u64 },
    Part(PartJob),
}

/// A range of one item to fetch (or the error that sizing it met).
struct PartJob {
    epoch: u64,
    index: usize,
    item: Arc<Item>,
    size: u64,
    etag: Option<String>,
    range: Range<u64>,
    first: bool,
    last: bool,
    error: Option<StoreError>,
}

type SizeCache = Arc<Mutex<HashMap<(String, String), (u64, Option<String>)>>>;

async fn size_item(
    client: Client,
    cache: SizeCache,
    epoch: u64,
    index: usize,
    item: Arc<Item>,
) -> Sized {
    let done = |size, etag, error| Sized {
        epoch,
        index,
        item: item.clone(),
        size,
        etag,
        error,
    };
    match &item.source {
        ItemSource::Inline(bytes) => done(bytes.len() as u64, None, None),
        ItemSource::Object {
            size: Some(size),
            etag,
            ..
        } => done(*size, etag.clone(), None),
        ItemSource::Object {
            bucket,
            key,
            size: None,
            ..
        } => {
            let id = (bucket.clone(), key.clone());
            let cached = cache.lock().map(|c| c.get(&id).cloned()).ok().flatten();
            if let Some((size, etag)) = cached {
                return done(size, etag, None);
            }
            match client.head(bucket, key).await {
                Ok(meta) => {
                    if let Ok(mut c) = cache.lock() {
                        c.insert(id, (meta.size, meta.etag.clone()));
                    }
                    done(meta.size, meta.etag, None)
                }
                Err(e) => done(0, None, Some(e)),
            }
        }
    }
}

fn split(s: Sized, part_size: u64) -> Vec<Job> {
    let inline = matches!(s.item.source, ItemSource::Inline(_));
    if s.error.is_some() || inline || s.size == 0 {
        return vec![Job::Part(PartJob {
            epoch: s.epoch,
            index: s.index,
            item: s.item,
            size: s.size,
            etag: s.etag,
            range: 0..s.size,
            first: true,
            last: true,
            error: s.error,
        })];
    }
    let mut jobs = Vec::new();
    let mut start = 0;
    while start < s.size {
        let end = s.size.min(start + part_size);
        jobs.push(Job::Part(PartJob {
            epoch: s.epoch,
            index: s.index,
            item: s.item.clone(),
            size: s.size,
            etag: s.etag.clone(),
            range: start..end,
            first: start == 0,
            last: end == s.size,
            error: None,
        }));
        start = end;
    }
    jobs
}

/// Stage 1 for one epoch: its start, its items sized, its end.
fn epoch_stages(
    order: &Arc<Order>,
    client: &Client,
    cache: &SizeCache,
    epoch: u64,
) -> BoxStream<'static, Stage> {
    let items = order.epoch(epoch);
    let count = items.len();
    let client = client.clone();
    let cache = cache.clone();
    let sized = stream::iter(items.into_iter().enumerate())
        .map(move |(index, item)| size_item(client.clone(), cache.clone(), epoch, index, item))
        .buffered(HEAD_CONCURRENCY)
        .map(Stage::Item);
    stream::iter([Stage::Start {
        epoch,
        items: count,
    }])
    .chain(sized)
    .chain(stream::iter([Stage::End { epoch }]))
    .boxed()
}

/// Stage 2: the jobs of one stage.
fn stage_jobs(stage: Stage, part_size: u64) -> BoxStream<'static, Job> {
    let jobs = match stage {
        Stage::Start { epoch, items } => vec![Job::Start { epoch, items }],
        Stage::End { epoch } => vec![Job::End { epoch }],
        Stage::Item(s) => split(s, part_size),
    };
    stream::iter(jobs).boxed()
}

/// Runs the pipeline until every epoch is fetched or the writer goes away.
pub(crate) async fn run(
    client: Client,
    order: Arc<Order>,
    cfg: FetchConfig,
    skip_below: Arc<AtomicU64>,
    tx: UnboundedSender<Msg>,
) {
    let epochs: Box<dyn Iterator<Item = u64> + Send> = match cfg.epochs {
        Some(n) => Box::new(0..n),
        None => Box::new(0..),
    };
    let mut fetcher = Fetcher::new(client.clone(), &cfg, skip_below);
    let part_size = cfg.part_size.clamp(1, fetcher.budget);
    let sizing = (client, SizeCache::default());
    // Boxed at each step: a spawned future holding these unboxed trips the
    // compiler's higher-ranked `Send` inference.
    let stages: BoxStream<'static, Stage> = stream::iter(epochs)
        .flat_map(move |epoch| epoch_stages(&order, &sizing.0, &sizing.1, epoch))
        .boxed();
    let mut jobs: BoxStream<'static, Job> = stages
        .flat_map(move |stage| stage_jobs(stage, part_size))
        .boxed();
    while let Some(job) = jobs.next().await {
        let msg = match job {
            Job::Start { epoch, items } => Msg::EpochStart { epoch, items },
            Job::End { epoch } => Msg::EpochEnd { epoch },
            Job::Part(job) => match fetcher.part(job).await {
                Some(part) => Msg::Part(part),
                None => break,
            },
        };
        if tx.send(msg).is_err() {
            break;
        }
    }
}

/// Stages 3 and 4: the memory budget and the GET slots, claimed in stream order.
struct Fetcher {
    client: Client,
    /// Bytes of fetched-but-unwritten data allowed.
    budget: u64,
    memory: Arc<Semaphore>,
    concurrency: usize,
    slots: Arc<Semaphore>,
    /// The epoch whose GETs are running.
    fetching_epoch: u64,
    /// Epochs below this one were left by their reader.
    skip_below: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Fetcher {
    fn new(client: Client, cfg: &FetchConfig, skip_below: Arc<AtomicU64>) -> Fetcher {
        let budget = cfg.budget.max(1);
        let concurrency = cfg.concurrency.clamp(1, u32::MAX as usize);
        Fetcher {
            client,
            budget,
            memory: Arc::new(Semaphore::new(
                usize::try_from(budget).unwrap_or(Semaphore::MAX_PERMITS),
            )),
            concurrency,
            slots: Arc::new(Semaphore::new(concurrency)),
            fetching_epoch: 0,
            skip_below,
            stop: cfg.stop.clone(),
        }
    }

    /// The part with its bytes at hand or on their way; `None` when the
    /// limits are closed and the pipeline must end.
    async fn part(&mut self, job: PartJob) -> Option<Part> {
        let data = match (job.error, &job.item.source) {
            (Some(e), _) => PartData::Ready(Err(e)),
            (None, ItemSource::Inline(bytes)) => PartData::Ready(Ok(bytes.clone())),
            // The reader left this epoch: its remaining parts are not wanted.
            _ if job.epoch < self.skip_below.load(Ordering::SeqCst) => {
                PartData::Ready(Ok(Bytes::new()))
            }
            (None, ItemSource::Object { .. }) if job.range.is_empty() => {
                PartData::Ready(Ok(Bytes::new()))
            }
            (None, ItemSource::Object { bucket, key, .. }) => {
                self.get(job.epoch, bucket, key, job.range.clone(), job.etag.clone())
                    .await?
            }
        };
        Some(Part {
            epoch: job.epoch,
            index: job.index,
            item: job.item,
            size: job.size,
            first: job.first,
            last: job.last,
            data,
        })
    }

    /// Claims memory for the range's bytes, then one of the GET slots (both
    /// semaphores are fair, so claims are granted in stream order), and starts
    /// the GET. Neither semaphore is ever closed: `None` does not happen.
    async fn get(
        &mut self,
        epoch: u64,
        bucket: &str,
        key: &str,
        range: Range<u64>,
        etag: Option<String>,
    ) -> Option<PartData> {
        let want = range.end - range.start;
        let n = u32::try_from(want.min(self.budget)).unwrap_or(u32::MAX);
        let permit = self.memory.clone().acquire_many_owned(n).await.ok()?;
        if epoch != self.fetching_epoch {
            // The next epoch's reader cannot start before this epoch's last
            // byte, so its GETs wait for this epoch's to finish instead of
            // taking bandwidth from them.
            drop(
                self.slots
                    .acquire_many(self.concurrency as u32)
                    .await
                    .ok()?,
            );
            self.fetching_epoch = epoch;
        }
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        let (chunks_tx, chunks) = unbounded_channel();
        let read = self.client.read(bucket, key, range, etag);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = forward(read, chunks_tx) => {}
            }
            drop(slot);
        });
        Some(PartData::Stream {
            chunks,
            len: want,
            permit,
        })
    }
}

/// Passes a part's bytes on as they arrive; stops at the first error or when
/// the writer no longer wants them.
async fn forward(mut read: ReadStream, out: UnboundedSender<Result<Bytes, StoreError>>) {
    while let Some(chunk) = read.next().await {
        let failed = chunk.is_err();
        if out.send(chunk).is_err() || failed {
            return;
        }
    }
}
