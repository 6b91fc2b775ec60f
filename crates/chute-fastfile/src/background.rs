//! The whole-channel prefetch (`Prefetch::All`): once mounted, every object of
//! the plan is fetched into the disk cache, in plan order, at File mode's
//! concurrency and part size, so that a shuffled reader finds its files on
//! local disk instead of waiting for one GET per file.
//!
//! It stays out of the readers' way: readers' GETs are issued directly and
//! never wait for a prefetch slot; blocks already on disk or in memory (in
//! flight for a reader, or read by one) are skipped, so nothing a reader
//! fetched is fetched again; and it stops, rather than evict an entry no
//! reader has used yet, when the cache is full. Its bytes go to disk only: the
//! memory it holds is one block buffer per GET in flight, which is what
//! bounds its concurrency under a small `max_memory`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chute_s3::StoreError;
use futures::StreamExt;

use crate::cache::BLOCK;
use crate::disk::{DiskCache, Writer};
use crate::fetch::{key, Shared};
use crate::stats::FsStats;

/// A run of blocks of one object, fetched by one GET.
#[derive(Debug, Clone, Copy)]
struct Run {
    object: u32,
    first: u64,
    count: u64,
}

/// Walks the plan in order, handing out runs of blocks not yet local.
struct Cursor {
    next_object: usize,
    runs: VecDeque<Run>,
}

/// Starts the prefetch on the mount's runtime; `None` without a disk cache.
pub(crate) fn start(shared: &Arc<Shared>) -> Option<tokio::task::JoinHandle<()>> {
    let disk = shared.disk.clone()?;
    Some(shared.rt.spawn(run(shared.clone(), disk)))
}

async fn run(shared: Arc<Shared>, disk: Arc<DiskCache>) {
    // Each GET in flight holds a block buffer; keep them within the share of
    // the memory budget set aside for bytes in flight.
    let by_memory = (shared.cache.limit() / 7 / (2 * BLOCK)).max(1) as usize;
    let workers = shared.tuning.background_concurrency.clamp(1, by_memory);
    let cursor = Arc::new(Mutex::new(Cursor {
        next_object: 0,
        runs: VecDeque::new(),
    }));
    let full = Arc::new(AtomicBool::new(false));
    tracing::debug!(workers, "whole-channel prefetch started");
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (shared, disk, cursor, full) =
                (shared.clone(), disk.clone(), cursor.clone(), full.clone());
            shared.rt.clone().spawn(async move {
                loop {
                    let next = {
                        let mut c = cursor.lock().unwrap_or_else(|p| p.into_inner());
                        c.next(&shared, &disk, &full)
                    };
                    let Some(run) = next else { break };
                    fetch(&shared, &disk, run).await;
                }
            })
        })
        .collect();
    // Aborting this task (at unmount) drops the handles but not the workers:
    // abort them too.
    let guard = AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
    for t in tasks {
        let _ = t.await;
    }
    drop(guard);
    let fetched = shared.stats.bytes_background.load(Ordering::Relaxed);
    if full.load(Ordering::Relaxed) {
        tracing::info!(
            fetched,
            limit = disk.limit(),
            "disk cache full: whole-channel prefetch stopped (entries no reader has used are never evicted for it)"
        );
    } else {
        tracing::info!(fetched, "whole-channel prefetch done");
    }
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

impl Cursor {
    fn next(&mut self, shared: &Shared, disk: &DiskCache, full: &AtomicBool) -> Option<Run> {
        loop {
            if full.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(r) = self.runs.pop_front() {
                return Some(r);
            }
            let i = self.next_object;
            if i >= shared.objects.len() {
                return None;
            }
            self.next_object += 1;
            let object = u32::try_from(i).ok()?;
            let o = shared.objects.get(object)?;
            if o.size == 0
                || o.etag.is_none()
                || o.stale.load(Ordering::Relaxed)
                || disk.is_complete(object)
            {
                continue;
            }
            let runs = missing_runs(shared, disk, object, o.size);
            if runs.is_empty() {
                continue;
            }
            if !disk.begin(&shared.objects, object, Writer::Background) {
                if disk.is_complete(object) {
                    continue;
                }
                full.store(true, Ordering::Relaxed);
                return None;
            }
            self.runs.extend(runs);
        }
    }
}

/// Runs of at most a part of blocks that are neither on disk nor in memory.
fn missing_runs(shared: &Shared, disk: &DiskCache, object: u32, size: u64) -> Vec<Run> {
    let max = (shared.tuning.background_part_size / BLOCK).max(1);
    let blocks = size.div_ceil(BLOCK);
    let wanted = |b: u64| !disk.has_block(object, b) && !shared.cache.holds(key(object, b));
    let mut runs = Vec::new();
    let mut b = 0;
    while b < blocks {
        if !wanted(b) {
            b += 1;
            continue;
        }
        let first = b;
        while b < blocks && b - first < max && wanted(b) {
            b += 1;
        }
        runs.push(Run {
            object,
            first,
            count: b - first,
        });
    }
    runs
}

/// One ranged GET, its body written block by block into the disk cache.
async fn fetch(shared: &Shared, disk: &Arc<DiskCache>, run: Run) {
    let Some(o) = shared.objects.get(run.object) else {
        return;
    };
    let start = run.first * BLOCK;
    let end = ((run.first + run.count) * BLOCK).min(o.size);
    let mut stream = shared
        .client
        .read(o.bucket, o.key, start..end, o.etag_string());
    let mut next = run.first;
    let mut buf = Vec::with_capacity(o.block_len(next) as usize);
    while let Some(chunk) = stream.next().await {
        let mut chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                if matches!(e.root(), StoreError::Changed { .. }) {
                    shared.classify(run.object, &o, &e);
                } else {
                    tracing::debug!(object = %o.uri(), "prefetch GET failed: {e}");
                }
                return;
            }
        };
        while !chunk.is_empty() {
            let want = o.block_len(next) as usize - buf.len();
            let take = want.min(chunk.len());
            buf.extend_from_slice(&chunk.split_to(take));
            if buf.len() as u64 == o.block_len(next) {
                disk.put(&shared.objects, run.object, next, &buf, Writer::Background);
                FsStats::add(&shared.stats.bytes_background, buf.len() as u64);
                buf.clear();
                next += 1;
            }
        }
    }
}
