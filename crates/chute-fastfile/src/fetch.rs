//! Fetching claimed blocks: one ranged GET per run of contiguous blocks,
//! pinned to the listed ETag, its body cut into blocks that are published to
//! the cache one by one as they fill, so a reader waiting for the first block
//! of an 8 MiB read-ahead GET gets it after 256 KiB, not after 8 MiB.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use chute_s3::{Client, StoreError};
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::cache::{BlockCache, BlockKey, BufferPool, BLOCK};
use crate::disk::{DiskCache, Writer};
use crate::error::BlockError;
use crate::object::{ObjectRef, Objects};
use crate::stats::FsStats;
use crate::Tuning;

/// What the read path shares across handles, FUSE threads and fetch tasks.
pub(crate) struct Shared {
    pub client: Client,
    pub objects: Objects,
    pub cache: BlockCache,
    pub pool: Arc<BufferPool>,
    pub scratch: Arc<BufferPool>,
    pub disk: Option<Arc<DiskCache>>,
    /// Read-ahead within files and across them (off with `Prefetch::Off`).
    pub read_ahead: bool,
    pub stats: Arc<FsStats>,
    pub rt: tokio::runtime::Handle,
    /// Read-ahead GETs in flight; a reader's own GETs do not wait for these.
    pub prefetch_slots: Arc<Semaphore>,
    pub tuning: Tuning,
}

impl Shared {
    /// Starts GETs for claimed blocks of one object: contiguous runs, each cut
    /// at the part size. `demand` tells which of them a reader waits for.
    pub fn fetch_claimed(self: &Arc<Self>, object: u32, mut claimed: Vec<(u64, bool)>) {
        if claimed.is_empty() {
            return;
        }
        claimed.sort_unstable_by_key(|c| c.0);
        let max_blocks = (self.tuning.part_size / BLOCK).max(1);
        let mut i = 0;
        while i < claimed.len() {
            let first = claimed[i].0;
            let mut demand = claimed[i].1;
            let mut n = 1;
            while i + (n as usize) < claimed.len()
                && claimed[i + n as usize].0 == first + n
                && n < max_blocks
            {
                demand |= claimed[i + n as usize].1;
                n += 1;
            }
            i += n as usize;
            let shared = self.clone();
            self.rt.spawn(async move {
                let _permit = if demand {
                    None
                } else {
                    shared.prefetch_slots.clone().acquire_owned().await.ok()
                };
                shared.fetch_run(object, first, n).await;
            });
        }
    }

    async fn fetch_run(&self, object: u32, first: u64, count: u64) {
        let Some(o) = self.objects.get(object) else {
            return;
        };
        let mut next = first;
        let end_block = first + count;
        if let Some(disk) = &self.disk {
            // Serve the leading blocks the disk cache has; fetch from the first gap.
            while next < end_block {
                match disk.block(&self.objects, object, next) {
                    Some(data) => {
                        FsStats::add(&self.stats.bytes_disk, data.len() as u64);
                        self.cache.complete(key(object, next), data);
                        next += 1;
                    }
                    None => break,
                }
            }
            if next == end_block {
                return;
            }
        }
        let start = next * BLOCK;
        let end = (end_block * BLOCK).min(o.size);
        let mut stream = self
            .client
            .read(o.bucket, o.key, start..end, o.etag_string());
        let mut buf = self.pool.take(o.block_len(next));
        while let Some(chunk) = stream.next().await {
            let mut chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let err = self.classify(object, &o, &e);
                    for b in next..end_block {
                        self.cache.fail(key(object, b), err.clone());
                    }
                    return;
                }
            };
            while !chunk.is_empty() && next < end_block {
                let want = o.block_len(next) as usize - buf.len();
                let take = want.min(chunk.len());
                buf.extend_from_slice(&chunk.split_to(take));
                if buf.len() == o.block_len(next) as usize {
                    let full = std::mem::replace(&mut buf, self.pool.take(o.block_len(next + 1)));
                    let full = self.pool.freeze(full);
                    self.publish(object, next, full);
                    next += 1;
                }
            }
        }
        // The client delivers exactly the range or an error; anything left is a bug
        // upstream, and must not leave a reader waiting.
        for b in next..end_block {
            tracing::warn!(object = %o.key, block = b, "GET ended early");
            self.cache.fail(key(object, b), BlockError::Io);
        }
    }

    fn publish(&self, object: u32, index: u64, data: Bytes) {
        if let Some(disk) = &self.disk {
            disk.put(&self.objects, object, index, &data, Writer::Reader);
        }
        self.cache.complete(key(object, index), data);
    }

    /// What a failed GET means for readers; a changed object is marked stale
    /// (and said so once).
    pub fn classify(&self, object: u32, o: &ObjectRef<'_>, e: &StoreError) -> BlockError {
        if matches!(e.root(), StoreError::Changed { .. }) {
            if !o.stale.swap(true, Ordering::Relaxed) {
                let uri = o.uri();
                tracing::error!(
                    object = %uri,
                    "{e}; reads of {uri} now fail with ESTALE (remount to see the new version)"
                );
                self.cache.forget_object(object);
            }
            BlockError::Stale
        } else {
            tracing::warn!(object = %o.uri(), "read failed, answering EIO: {e}");
            BlockError::Io
        }
    }
}

pub(crate) fn key(object: u32, index: u64) -> BlockKey {
    BlockKey { object, index }
}
