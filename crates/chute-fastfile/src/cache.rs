//! The block cache and the memory budget: every byte the mount holds for
//! readers lives here, in fixed, aligned blocks, and the total stays within
//! `--max-memory` whatever the dataset size or the number of readers.
//!
//! A block is *pending* from the moment a fetch claims it until its bytes have
//! arrived (readers wait on it instead of fetching it again), then *ready* in
//! an LRU. Read-ahead is admitted only while the bytes fetched ahead and not
//! yet read stay under three quarters of the budget, and only when room can be
//! made by evicting ready blocks; a reader's own fetch is always admitted (it
//! is bounded by the kernel's requests in flight), so a full cache slows
//! read-ahead down but never blocks a reader. Blocks a sequential reader has
//! consumed are dropped at once: the kernel's page cache has them now, the
//! budget is better spent ahead of the reader, and their buffers are reused
//! while still hot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use lru::LruCache;
use tokio::sync::watch;

use crate::error::BlockError;
use crate::stats::FsStats;

/// Size of a cache block and the alignment of every ranged GET.
///
/// Small enough that a random 4 KiB - 256 KiB read fetches little it does not
/// need, large enough that the per-block bookkeeping is noise at GB/s.
pub(crate) const BLOCK: u64 = 256 * 1024;

/// Recycles buffers of one size.
///
/// Blocks come and go at thousands per second; left to the allocator, freed
/// 256 KiB buffers fragment its arenas and the process keeps far more memory
/// than the cache holds. Reusing them keeps resident memory at what the
/// budget says. The block pool hands out only exact, full-size blocks: short
/// ones (the tail of a file, small files) are allocated at their exact size,
/// so a 10 KiB object never pins 256 KiB. The scratch pool (replies that span
/// blocks) takes anything up to its size, since those buffers live only until
/// the reply is written.
pub(crate) struct BufferPool {
    size: usize,
    /// Whether only requests of exactly `size` come from the pool.
    exact: bool,
    free: Mutex<Vec<Vec<u8>>>,
    /// Buffers in existence, in use or free.
    allocated: AtomicUsize,
    /// Beyond this many, returned buffers are freed instead of kept.
    cap: usize,
}

struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

impl BufferPool {
    /// Pool of full blocks for a cache of `limit` bytes.
    pub fn blocks(limit: u64) -> Arc<Self> {
        Self::new(
            BLOCK as usize,
            true,
            usize::try_from(limit / BLOCK).unwrap_or(usize::MAX),
        )
    }

    pub fn new(size: usize, exact: bool, cap: usize) -> Arc<Self> {
        Arc::new(BufferPool {
            size,
            exact,
            free: Mutex::new(Vec::new()),
            allocated: AtomicUsize::new(0),
            cap: cap.max(1),
        })
    }

    fn pooled(&self, len: usize) -> bool {
        if self.exact {
            len == self.size
        } else {
            len <= self.size
        }
    }

    /// An empty buffer with room for `len` bytes.
    pub fn take(&self, len: u64) -> Vec<u8> {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if !self.pooled(len) {
            return Vec::with_capacity(len);
        }
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        reused.unwrap_or_else(|| {
            self.allocated.fetch_add(1, Ordering::Relaxed);
            Vec::with_capacity(self.size)
        })
    }

    /// The filled buffer as shared bytes that come back here when dropped.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        if buf.capacity() == self.size {
            Bytes::from_owner(Pooled {
                buf,
                pool: self.clone(),
            })
        } else {
            Bytes::from(buf)
        }
    }

    fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() != self.size {
            return;
        }
        if self.allocated.load(Ordering::Relaxed) > self.cap {
            self.allocated.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        buf.clear();
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(buf);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BlockKey {
    /// The object's index in the plan.
    pub object: u32,
    pub index: u64,
}

/// What a waiter sees of a pending block.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    Loading,
    Ready(Bytes),
    Failed(BlockError),
}

pub(crate) enum Lookup {
    Ready(Bytes),
    Pending(watch::Receiver<Slot>),
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A reader is waiting for these bytes.
    Demand,
    /// Nobody asked yet: read-ahead.
    Prefetch,
}

struct Entry {
    data: Bytes,
    /// Fetched ahead and not yet read by anyone.
    unread: bool,
}

struct PendingBlock {
    tx: watch::Sender<Slot>,
    len: u64,
    origin: Origin,
}

struct Inner {
    ready: LruCache<BlockKey, Entry>,
    pending: HashMap<BlockKey, PendingBlock>,
    ready_bytes: u64,
    pending_bytes: u64,
    /// Ready blocks fetched ahead and not yet read.
    unread_bytes: u64,
    /// Pending blocks fetched ahead.
    pending_prefetch_bytes: u64,
    peak: u64,
}

impl Inner {
    fn used(&self) -> u64 {
        self.ready_bytes + self.pending_bytes
    }

    /// Evicts cold ready blocks until `extra` more bytes fit in `limit`.
    /// Returns whether they fit.
    fn make_room(&mut self, extra: u64, limit: u64, stats: &FsStats) -> bool {
        while self.used() + extra > limit {
            let Some((_, e)) = self.ready.pop_lru() else {
                return false;
            };
            self.ready_bytes -= e.data.len() as u64;
            if e.unread {
                self.unread_bytes -= e.data.len() as u64;
                FsStats::add(&stats.wasted_blocks, 1);
            }
        }
        true
    }
}

pub(crate) struct BlockCache {
    inner: Mutex<Inner>,
    limit: u64,
    prefetch_limit: u64,
    stats: Arc<FsStats>,
}

impl BlockCache {
    pub fn new(limit: u64, stats: Arc<FsStats>) -> Self {
        BlockCache {
            inner: Mutex::new(Inner {
                ready: LruCache::unbounded(),
                pending: HashMap::new(),
                ready_bytes: 0,
                pending_bytes: 0,
                unread_bytes: 0,
                pending_prefetch_bytes: 0,
                peak: 0,
            }),
            limit,
            prefetch_limit: limit / 4 * 3,
            stats,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only counters half-updated;
        // serving on is better than failing every later read.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes that read-ahead may still claim now.
    pub fn prefetch_room(&self) -> u64 {
        let g = self.lock();
        self.prefetch_limit
            .saturating_sub(g.unread_bytes + g.pending_prefetch_bytes)
    }

    pub fn peak(&self) -> u64 {
        self.lock().peak
    }

    /// The byte budget of the cache.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether the block is in memory or on its way there.
    pub fn holds(&self, key: BlockKey) -> bool {
        let g = self.lock();
        g.ready.contains(&key) || g.pending.contains_key(&key)
    }

    /// A block for a reader: ready bytes (now counted as read), a pending
    /// fetch to wait on, or nothing.
    pub fn lookup(&self, key: BlockKey) -> Lookup {
        let mut g = self.lock();
        if let Some(e) = g.ready.get_mut(&key) {
            let data = e.data.clone();
            let was_unread = std::mem::replace(&mut e.unread, false);
            if was_unread {
                g.unread_bytes -= data.len() as u64;
            }
            return Lookup::Ready(data);
        }
        match g.pending.get(&key) {
            Some(p) => Lookup::Pending(p.tx.subscribe()),
            None => Lookup::Absent,
        }
    }

    /// Marks absent blocks among `blocks` as pending, to be fetched by the
    /// caller, and returns them in order with a receiver for each. Read-ahead
    /// stops at the first block the budget cannot admit.
    pub fn claim(
        &self,
        blocks: &[(BlockKey, u64)],
        origin: Origin,
    ) -> Vec<(BlockKey, watch::Receiver<Slot>)> {
        let mut g = self.lock();
        let mut out = Vec::new();
        for &(key, len) in blocks {
            if g.ready.contains(&key) || g.pending.contains_key(&key) {
                continue;
            }
            if origin == Origin::Prefetch {
                if g.unread_bytes + g.pending_prefetch_bytes + len > self.prefetch_limit {
                    break;
                }
                if !g.make_room(len, self.limit, &self.stats) {
                    break;
                }
                g.pending_prefetch_bytes += len;
            } else {
                g.make_room(len, self.limit, &self.stats);
            }
            let (tx, rx) = watch::channel(Slot::Loading);
            g.pending.insert(key, PendingBlock { tx, len, origin });
            g.pending_bytes += len;
            g.peak = g.peak.max(g.used());
            out.push((key, rx));
        }
        out
    }

    /// A claimed block's bytes have arrived.
    pub fn complete(&self, key: BlockKey, data: Bytes) {
        let mut g = self.lock();
        let Some(p) = g.pending.remove(&key) else {
            return;
        };
        g.pending_bytes -= p.len;
        let unread = p.origin == Origin::Prefetch;
        if unread {
            g.pending_prefetch_bytes -= p.len;
        }
        // Waiters get the bytes even if the cache cannot keep them.
        p.tx.send_replace(Slot::Ready(data.clone()));
        let len = data.len() as u64;
        FsStats::add(
            if unread {
                &self.stats.bytes_prefetched
            } else {
                &self.stats.bytes_demand
            },
            len,
        );
        g.make_room(len, self.limit, &self.stats);
        if unread {
            g.unread_bytes += len;
        }
        g.ready_bytes += len;
        g.ready.push(key, Entry { data, unread });
        g.peak = g.peak.max(g.used());
    }

    /// A claimed block could not be fetched: waiters get the error, and the
    /// next reader tries again.
    pub fn fail(&self, key: BlockKey, err: BlockError) {
        let mut g = self.lock();
        if let Some(p) = g.pending.remove(&key) {
            g.pending_bytes -= p.len;
            if p.origin == Origin::Prefetch {
                g.pending_prefetch_bytes -= p.len;
            }
            p.tx.send_replace(Slot::Failed(err));
        }
    }

    /// The block has been consumed by a sequential reader: drop it now. The
    /// kernel's page cache holds those bytes (the mount keeps it across opens),
    /// and a buffer recycled at once is one the allocator need not fault in
    /// afresh: left in the LRU until the budget pushes it out, every block of a
    /// large file would be new memory.
    pub fn release(&self, key: BlockKey) {
        let mut g = self.lock();
        if let Some(e) = g.ready.pop(&key) {
            g.ready_bytes -= e.data.len() as u64;
            if e.unread {
                g.unread_bytes -= e.data.len() as u64;
            }
        }
    }

    /// Drops every ready block of an object (it changed under the mount).
    pub fn forget_object(&self, object: u32) {
        let mut g = self.lock();
        let keys: Vec<BlockKey> = g
            .ready
            .iter()
            .filter(|(k, _)| k.object == object)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(e) = g.ready.pop(&k) {
                g.ready_bytes -= e.data.len() as u64;
                if e.unread {
                    g.unread_bytes -= e.data.len() as u64;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> BlockKey {
        BlockKey {
            object: 0,
            index: i,
        }
    }

    #[test]
    fn prefetch_respects_the_budget_and_demand_evicts() {
        let stats = Arc::new(FsStats::default());
        let c = BlockCache::new(4 * BLOCK, stats);
        let want: Vec<_> = (0..8).map(|i| (key(i), BLOCK)).collect();
        // Three quarters of four blocks: three admitted ahead of readers.
        let got: Vec<BlockKey> = c
            .claim(&want, Origin::Prefetch)
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(got, [key(0), key(1), key(2)]);
        for k in &got {
            c.complete(*k, Bytes::from(vec![1u8; BLOCK as usize]));
        }
        assert_eq!(c.prefetch_room(), 0);
        // Reading them frees read-ahead room again.
        for k in &got {
            assert!(matches!(c.lookup(*k), Lookup::Ready(_)));
        }
        assert_eq!(c.prefetch_room(), 3 * BLOCK);
        // Demand claims evict the coldest blocks to stay within the limit.
        let d = c.claim(&[(key(10), BLOCK), (key(11), BLOCK)], Origin::Demand);
        assert_eq!(d.len(), 2);
        for (k, _) in &d {
            c.complete(*k, Bytes::from(vec![2u8; BLOCK as usize]));
        }
        assert!(c.lock().used() <= 4 * BLOCK);
        assert!(c.peak() <= 4 * BLOCK);
    }

    #[test]
    fn waiters_see_completion_and_failure() {
        let stats = Arc::new(FsStats::default());
        let c = BlockCache::new(8 * BLOCK, stats);
        c.claim(&[(key(0), 10), (key(1), 10)], Origin::Demand);
        let Lookup::Pending(rx0) = c.lookup(key(0)) else {
            panic!("pending")
        };
        let Lookup::Pending(rx1) = c.lookup(key(1)) else {
            panic!("pending")
        };
        c.complete(key(0), Bytes::from_static(b"0123456789"));
        c.fail(key(1), BlockError::Io);
        assert!(matches!(&*rx0.borrow(), Slot::Ready(b) if b.len() == 10));
        assert!(matches!(&*rx1.borrow(), Slot::Failed(BlockError::Io)));
        assert!(matches!(c.lookup(key(1)), Lookup::Absent));
    }
}
