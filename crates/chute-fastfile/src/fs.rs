//! The file system itself, free of FUSE types: metadata from the inode table,
//! handles with their prefetchers, and the read path over the block cache.
//! [`crate::fuse`] is a thin adapter from kernel requests to these calls.
//!
//! Errors are errno values, since that is all a reader ever sees of them.

use std::collections::HashMap;
use std::fs::File;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use chute_plan::Plan;
use chute_s3::Client;
use futures::future::BoxFuture;
use lru::LruCache;
use tokio::sync::{watch, Semaphore};

use crate::cache::{BlockCache, BufferPool, Lookup, Origin, Slot, BLOCK};
use crate::disk::DiskCache;
use crate::fetch::{key, Shared};
use crate::object::{ObjectRef, Objects};
use crate::prefetch::{CrossFile, Prefetcher};
use crate::stats::FsStats;
use crate::tree::{NodeKind, Tree};
use crate::{FastFileError, MountOptions, Prefetch};

/// Replies that span blocks are assembled in buffers of the largest FUSE read.
const SCRATCH_SIZE: usize = 1 << 20;
const SCRATCH_KEPT: usize = 16;

/// Bytes of a cached file read from disk ahead when it is looked up.
const ADVISE: u64 = 256 << 10;

/// Read streams kept for reads without an open; each may hold a disk cache
/// file open, so this stays well below the usual descriptor limit.
const STREAMS: usize = 256;

pub(crate) type Errno = i32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// Attributes of one inode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub time: SystemTime,
    pub blksize: u32,
}

/// Ownership and modes every inode gets (S3 has neither).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Presentation {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    pub time: SystemTime,
}

pub(crate) struct DirEntry<'a> {
    pub ino: u64,
    pub kind: Kind,
    pub name: &'a str,
}

/// A read's answer: at once when every block was in memory, else a future.
pub(crate) enum ReadOutcome {
    Now(Result<Bytes, Errno>),
    Later(BoxFuture<'static, Result<Bytes, Errno>>),
}

struct Handle {
    object: u32,
    prefetch: Prefetcher,
    /// The object's disk cache entry, when it was complete at open: reads
    /// are answered from it at once.
    local: Option<Arc<File>>,
}

type SharedHandle = Arc<Mutex<Handle>>;

/// A block of a read: in memory now, or on its way.
enum Part {
    Ready(Bytes),
    Wait(watch::Receiver<Slot>),
    /// Not in memory and not claimed (never for a reader's own blocks).
    Missing,
}

pub(crate) struct FastFs {
    pub tree: Tree,
    pub shared: Arc<Shared>,
    present: Presentation,
    handles: Mutex<HashMap<u64, SharedHandle>>,
    /// Reads that come without an open (see [`FastFs::read_unopened`]), one
    /// handle per (inode, reading task), the least recently used forgotten.
    streams: Mutex<LruCache<(u64, u32), SharedHandle>>,
    next_fh: AtomicU64,
    cross: Mutex<CrossFile>,
}

/// Files are read in chunks of this size by tools that ask `st_blksize`
/// (Python's buffered I/O, coreutils): large, so one read() is one FUSE request.
const BLKSIZE: u32 = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FastFs {
    /// The file system of `plan` (already sharded), ready to be served by a
    /// FUSE session or called directly; reads run on `rt`. Opens (and scans)
    /// the disk cache when `opts.cache` asks for one.
    pub fn build(
        plan: Plan,
        client: Client,
        opts: &MountOptions,
        rt: tokio::runtime::Handle,
    ) -> Result<FastFs, FastFileError> {
        let (tree, conflicts) = Tree::build(&plan);
        for c in &conflicts {
            tracing::warn!(path = %c, "path clashes with another entry of the plan; left out of the mount");
        }
        let objects = Objects::from_plan(plan.objects);
        let disk = match &opts.cache {
            Some(c) => open_disk_cache(c, &objects, &rt)?,
            None => None,
        };
        let stats = Arc::new(FsStats::default());
        // Blocks get seven eighths of the budget; the rest is for bytes in
        // flight outside the cache (HTTP buffers, replies being assembled).
        let block_budget = opts.max_memory / 8 * 7;
        let shared = Arc::new(Shared {
            client,
            objects,
            cache: BlockCache::new(block_budget, stats.clone()),
            pool: BufferPool::blocks(block_budget),
            scratch: BufferPool::new(SCRATCH_SIZE, false, SCRATCH_KEPT),
            disk,
            read_ahead: opts.prefetch_mode() != Prefetch::Off,
            stats,
            rt,
            prefetch_slots: Arc::new(Semaphore::new(opts.tuning.prefetch_concurrency.max(1))),
            tuning: opts.tuning.clone(),
        });
        let present = Presentation {
            uid: opts.uid,
            gid: opts.gid,
            file_mode: opts.file_mode,
            dir_mode: opts.dir_mode,
            time: SystemTime::now(),
        };
        Ok(FastFs::new(tree, shared, present))
    }

    fn new(tree: Tree, shared: Arc<Shared>, present: Presentation) -> Self {
        FastFs {
            tree,
            shared,
            present,
            handles: Mutex::new(HashMap::new()),
            streams: Mutex::new(LruCache::new(
                NonZeroUsize::new(STREAMS).unwrap_or(NonZeroUsize::MIN),
            )),
            next_fh: AtomicU64::new(1),
            cross: Mutex::new(CrossFile::default()),
        }
    }

    pub fn attr(&self, ino: u64) -> Result<Attr, Errno> {
        let node = self.tree.get(ino).ok_or(libc::ENOENT)?;
        let p = &self.present;
        let (kind, size, perm, nlink) = match node {
            NodeKind::Dir { subdirs, .. } => (Kind::Dir, 4096, p.dir_mode, 2 + subdirs),
            NodeKind::File { object } => {
                let size = self.shared.objects.get(object).map_or(0, |o| o.size);
                (Kind::File, size, p.file_mode, 1)
            }
        };
        Ok(Attr {
            ino,
            kind,
            size,
            perm,
            nlink,
            uid: p.uid,
            gid: p.gid,
            time: p.time,
            blksize: BLKSIZE,
        })
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, Errno> {
        self.dir(parent)?;
        let ino = (self.tree)
            .lookup(parent, name, &self.shared.objects)
            .ok_or(libc::ENOENT)?;
        if let (Some(disk), Some(NodeKind::File { object })) =
            (&self.shared.disk, self.tree.get(ino))
        {
            // A lookup usually comes just before an open and a read: start
            // reading the head of the cache file from disk now.
            disk.advise(&self.shared.objects, object, ADVISE);
        }
        self.attr(ino)
    }

    /// Entries of a directory from position `offset` on ("." and ".." first);
    /// each comes with the offset of the entry after it. They are built as
    /// they are taken, so a reply that fills up after a page of them costs a
    /// page, whatever the offset and the size of the directory.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
    ) -> Result<impl Iterator<Item = (u64, DirEntry<'_>)> + '_, Errno> {
        self.dir(ino)?;
        let entries = (self.tree)
            .entries(ino, offset, &self.shared.objects)
            .ok_or(libc::ENOENT)?;
        Ok(entries.map(|(next, e)| {
            let kind = if e.is_dir { Kind::Dir } else { Kind::File };
            (
                next,
                DirEntry {
                    ino: e.ino,
                    kind,
                    name: e.name,
                },
            )
        }))
    }

    /// Ok for a directory; ENOENT or ENOTDIR otherwise.
    fn dir(&self, ino: u64) -> Result<(), Errno> {
        match self.tree.get(ino) {
            None => Err(libc::ENOENT),
            Some(NodeKind::File { .. }) => Err(libc::ENOTDIR),
            Some(NodeKind::Dir { .. }) => Ok(()),
        }
    }

    pub fn is_dir(&self, ino: u64) -> Result<bool, Errno> {
        match self.tree.get(ino) {
            None => Err(libc::ENOENT),
            Some(NodeKind::Dir { .. }) => Ok(true),
            Some(NodeKind::File { .. }) => Ok(false),
        }
    }

    /// The object behind a file opened with `flags`; any write access is
    /// refused with EROFS.
    pub fn check_open(&self, ino: u64, flags: i32) -> Result<u32, Errno> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY
            || flags & (libc::O_TRUNC | libc::O_APPEND | libc::O_CREAT) != 0
        {
            return Err(libc::EROFS);
        }
        match self.tree.get(ino) {
            None => Err(libc::ENOENT),
            Some(NodeKind::Dir { .. }) => Err(libc::EISDIR),
            Some(NodeKind::File { object }) => Ok(object),
        }
    }

    /// Opens a file for reading; any write access is refused with EROFS.
    pub fn open(&self, ino: u64, flags: i32) -> Result<u64, Errno> {
        let object = self.check_open(ino, flags)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let handle = self.new_handle(object);
        lock(&self.handles).insert(fh, Arc::new(Mutex::new(handle)));
        Ok(fh)
    }

    fn new_handle(&self, object: u32) -> Handle {
        let local = self.shared.disk.as_ref().and_then(|d| {
            d.mark_read(object);
            d.entry(&self.shared.objects, object).map(Arc::new)
        });
        FsStats::add(&self.shared.stats.opens, 1);
        Handle {
            object,
            prefetch: Prefetcher::new(&self.shared.tuning),
            local,
        }
    }

    pub fn release(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
    }

    /// The disk cache entry behind an open handle, when the object was
    /// complete on disk at open (for FUSE passthrough).
    pub fn local_file(&self, fh: u64) -> Option<File> {
        let handle = lock(&self.handles).get(&fh).cloned()?;
        let h = lock(&handle);
        h.local.as_ref().and_then(|f| f.try_clone().ok())
    }

    /// Reads `size` bytes at `off`: from the handle's disk entry when it has
    /// one, else from the block cache, claiming and fetching what is missing
    /// (plus the read-ahead the handle's prefetcher asks for).
    pub fn read(&self, fh: u64, off: u64, size: u32) -> ReadOutcome {
        match lock(&self.handles).get(&fh).cloned() {
            Some(handle) => self.read_handle(&handle, off, size),
            None => ReadOutcome::Now(Err(libc::EBADF)),
        }
    }

    /// A read of inode `ino` that came with no open (the kernel is told opens
    /// are not implemented, so it keeps file pages across opens and sends
    /// none): the reading task `pid` stands for the handle, so each reader of
    /// a file still gets its own sequential read-ahead.
    pub fn read_unopened(&self, ino: u64, pid: u32, off: u64, size: u32) -> ReadOutcome {
        let object = match self.tree.get(ino) {
            None => return ReadOutcome::Now(Err(libc::ENOENT)),
            Some(NodeKind::Dir { .. }) => return ReadOutcome::Now(Err(libc::EISDIR)),
            Some(NodeKind::File { object }) => object,
        };
        let found = lock(&self.streams).get(&(ino, pid)).cloned();
        let handle = match found {
            Some(h) => h,
            None => {
                let h = Arc::new(Mutex::new(self.new_handle(object)));
                lock(&self.streams).put((ino, pid), h.clone());
                h
            }
        };
        self.read_handle(&handle, off, size)
    }

    fn read_handle(&self, handle: &Mutex<Handle>, off: u64, size: u32) -> ReadOutcome {
        let shared = &self.shared;
        FsStats::add(&shared.stats.reads, 1);
        let (object, ahead, sequential, local) = self.advance(handle, off, size);
        let Some(o) = shared.objects.get(object) else {
            return ReadOutcome::Now(Err(libc::EIO));
        };
        if o.stale.load(Ordering::Relaxed) {
            FsStats::add(&shared.stats.errors, 1);
            return ReadOutcome::Now(Err(libc::ESTALE));
        }
        let end = off.saturating_add(u64::from(size)).min(o.size);
        if off >= end {
            return ReadOutcome::Now(Ok(Bytes::new()));
        }
        if let Some(data) = local.and_then(|f| DiskCache::read_entry(&f, off, end)) {
            FsStats::add(&shared.stats.bytes_disk, data.len() as u64);
            FsStats::add(&shared.stats.bytes_served, data.len() as u64);
            return ReadOutcome::Now(Ok(data));
        }
        let blocks = off / BLOCK..(end - 1) / BLOCK + 1;
        let mut parts = self.lookup_blocks(object, blocks.clone());
        let claimed = self.claim_blocks(object, o, &mut parts, blocks.start, ahead);
        // The reader's blocks and the read-ahead after them go out as one GET
        // where they are contiguous.
        shared.fetch_claimed(object, claimed);
        if end == o.size && shared.read_ahead {
            self.cross_file(object as usize);
        }
        let consumed = sequential
            .then(|| consumed_blocks(&blocks, end, o.size))
            .flatten();
        self.answer(parts, object, blocks.start, off..end, consumed)
    }

    /// Tells the handle's prefetcher about the read; returns the object, the
    /// read-ahead to issue, whether the handle reads sequentially, and its
    /// disk entry.
    fn advance(
        &self,
        handle: &Mutex<Handle>,
        off: u64,
        size: u32,
    ) -> (u32, Option<Range<u64>>, bool, Option<Arc<File>>) {
        let shared = &self.shared;
        let mut h = lock(handle);
        let object = h.object;
        if h.local.is_none() {
            // Completed on disk since the handle was made: read it from there.
            if let Some(d) = shared.disk.as_ref().filter(|d| d.is_complete(object)) {
                h.local = d.entry(&shared.objects, object).map(Arc::new);
            }
        }
        let fsize = shared.objects.get(object).map_or(0, |o| o.size);
        let end = off.saturating_add(u64::from(size)).min(fsize);
        let ahead = if off < end && h.local.is_none() {
            h.prefetch.on_read(off, end, fsize, &shared.tuning)
        } else {
            None
        };
        let ahead = ahead.filter(|_| shared.read_ahead);
        (object, ahead, h.prefetch.is_sequential(), h.local.clone())
    }

    /// Each block of the read as the cache has it; absent ones are `Missing`.
    fn lookup_blocks(&self, object: u32, blocks: Range<u64>) -> Vec<Part> {
        let stats = &self.shared.stats;
        blocks
            .map(|b| match self.shared.cache.lookup(key(object, b)) {
                Lookup::Ready(d) => {
                    FsStats::add(&stats.block_hits, 1);
                    Part::Ready(d)
                }
                Lookup::Pending(rx) => {
                    FsStats::add(&stats.block_waits, 1);
                    Part::Wait(rx)
                }
                Lookup::Absent => {
                    FsStats::add(&stats.block_misses, 1);
                    Part::Missing
                }
            })
            .collect()
    }

    /// Claims the read's missing blocks (for the reader) and the read-ahead
    /// range (as prefetch); returns the claimed block indexes, each with
    /// whether a reader waits for it.
    fn claim_blocks(
        &self,
        object: u32,
        o: ObjectRef<'_>,
        parts: &mut [Part],
        b0: u64,
        ahead: Option<Range<u64>>,
    ) -> Vec<(u64, bool)> {
        let cache = &self.shared.cache;
        let absent: Vec<_> = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p, Part::Missing))
            .map(|(i, _)| {
                let b = b0 + i as u64;
                (key(object, b), o.block_len(b))
            })
            .collect();
        let mut claimed = Vec::new();
        for (k, rx) in cache.claim(&absent, Origin::Demand) {
            parts[(k.index - b0) as usize] = Part::Wait(rx);
            claimed.push((k.index, true));
        }
        if let Some(range) = ahead {
            let want: Vec<_> = (range.start / BLOCK..range.end.div_ceil(BLOCK))
                .map(|b| (key(object, b), o.block_len(b)))
                .collect();
            for (k, _) in cache.claim(&want, Origin::Prefetch) {
                claimed.push((k.index, false));
            }
        }
        claimed
    }

    /// The reply: at once when every block is in memory, else a future that
    /// waits for the blocks still arriving.
    fn answer(
        &self,
        parts: Vec<Part>,
        object: u32,
        b0: u64,
        range: Range<u64>,
        consumed: Option<Range<u64>>,
    ) -> ReadOutcome {
        if parts.iter().all(|p| matches!(p, Part::Ready(_))) {
            let blocks: Vec<Bytes> = parts
                .into_iter()
                .filter_map(|p| match p {
                    Part::Ready(d) => Some(d),
                    _ => None,
                })
                .collect();
            let res = assemble(&self.shared.scratch, &blocks, b0, range.start, range.end);
            finish(&self.shared, object, consumed, &res);
            return ReadOutcome::Now(res);
        }
        let shared = self.shared.clone();
        ReadOutcome::Later(Box::pin(async move {
            let mut blocks = Vec::with_capacity(parts.len());
            for p in parts {
                match wait_block(p).await {
                    Ok(d) => blocks.push(d),
                    Err(e) => {
                        FsStats::add(&shared.stats.errors, 1);
                        return Err(e);
                    }
                }
            }
            let res = assemble(&shared.scratch, &blocks, b0, range.start, range.end);
            finish(&shared, object, consumed, &res);
            res
        }))
    }

    /// A reader finished object `i`: fetch the start of the objects after it,
    /// in listing order, if readers go through them in that order.
    fn cross_file(&self, i: usize) {
        let t = &self.shared.tuning;
        let budget = lock(&self.cross).on_eof(i, t);
        if budget == 0 {
            return;
        }
        let shared = &self.shared;
        let mut planned = 0u64;
        for (object, o) in shared.objects.iter().skip(i + 1).take(t.cross_file_max) {
            if planned >= budget || shared.cache.prefetch_room() == 0 {
                break;
            }
            if o.size == 0 || o.stale.load(Ordering::Relaxed) {
                continue;
            }
            let bytes = o.size.min(t.cross_file_per_file).min(budget - planned);
            planned += bytes;
            let want: Vec<_> = (0..bytes.div_ceil(BLOCK))
                .map(|b| (key(object, b), o.block_len(b)))
                .collect();
            let claimed: Vec<(u64, bool)> = shared
                .cache
                .claim(&want, Origin::Prefetch)
                .into_iter()
                .map(|(k, _)| (k.index, false))
                .collect();
            shared.fetch_claimed(object, claimed);
        }
    }

    pub fn statfs(&self) -> StatFs {
        let bytes = self.shared.objects.total_bytes();
        StatFs {
            blocks: bytes.div_ceil(4096),
            files: self.tree.len(),
            bsize: 4096,
            namelen: 255,
        }
    }
}

pub(crate) struct StatFs {
    pub blocks: u64,
    pub files: u64,
    pub bsize: u32,
    pub namelen: u32,
}

fn open_disk_cache(
    c: &crate::CacheOptions,
    objects: &Objects,
    rt: &tokio::runtime::Handle,
) -> Result<Option<Arc<DiskCache>>, FastFileError> {
    let disk = DiskCache::open(&c.dir, c.size, objects, rt.clone()).map_err(|source| {
        FastFileError::Cache {
            dir: c.dir.clone(),
            source,
        }
    })?;
    match &disk {
        Some(d) => tracing::info!(
            dir = %c.dir.display(),
            limit = d.limit(),
            used = d.used(),
            reusable = d.scan.reusable,
            reusable_bytes = d.scan.reusable_bytes,
            discarded = d.scan.discarded,
            "disk cache"
        ),
        None => tracing::info!(
            dir = %c.dir.display(),
            "no room for a disk cache on this volume (free space is below the reserve); running without one"
        ),
    }
    Ok(disk.map(Arc::new))
}

/// Blocks a sequential read finished: the page cache has them now.
fn consumed_blocks(blocks: &Range<u64>, end: u64, size: u64) -> Option<Range<u64>> {
    let last = blocks.end - 1;
    let last_full = if end.is_multiple_of(BLOCK) || end == size {
        Some(last)
    } else {
        last.checked_sub(1)
    };
    last_full.map(|l| blocks.start..l + 1)
}

async fn wait_block(p: Part) -> Result<Bytes, Errno> {
    match p {
        Part::Ready(d) => Ok(d),
        Part::Wait(mut rx) => match rx.wait_for(|s| !matches!(s, Slot::Loading)).await {
            Ok(s) => match &*s {
                Slot::Ready(d) => Ok(d.clone()),
                Slot::Failed(e) => Err(e.errno()),
                Slot::Loading => Err(libc::EIO),
            },
            // The fetch went away without an answer (shutdown).
            Err(_) => Err(libc::EIO),
        },
        // Claimed by nobody: the cache refused, which it never does for a
        // reader; answer rather than hang.
        Part::Missing => Err(libc::EIO),
    }
}

fn finish(
    shared: &Shared,
    object: u32,
    consumed: Option<std::ops::Range<u64>>,
    res: &Result<Bytes, Errno>,
) {
    if let Ok(d) = res {
        FsStats::add(&shared.stats.bytes_served, d.len() as u64);
        if let Some(r) = consumed {
            for b in r {
                shared.cache.release(key(object, b));
            }
        }
    }
}

/// The bytes `off..end` out of consecutive blocks starting at block `b0`.
fn assemble(
    scratch: &Arc<BufferPool>,
    blocks: &[Bytes],
    b0: u64,
    off: u64,
    end: u64,
) -> Result<Bytes, Errno> {
    let first = b0 * BLOCK;
    if let [only] = blocks {
        let lo = (off - first) as usize;
        let hi = (end - first) as usize;
        return if hi <= only.len() {
            Ok(only.slice(lo..hi))
        } else {
            Err(libc::EIO)
        };
    }
    let mut out = scratch.take(end - off);
    for (i, b) in blocks.iter().enumerate() {
        let start = first + i as u64 * BLOCK;
        let lo = off.max(start) - start;
        let hi = end.min(start + BLOCK) - start;
        if hi as usize > b.len() {
            return Err(libc::EIO);
        }
        out.extend_from_slice(&b[lo as usize..hi as usize]);
    }
    Ok(scratch.freeze(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemble_spans_blocks() {
        let a = Bytes::from(vec![1u8; BLOCK as usize]);
        let b = Bytes::from(vec![2u8; 10]);
        let pool = BufferPool::new(1 << 20, false, 2);
        let got = assemble(&pool, &[a.clone(), b], 0, BLOCK - 2, BLOCK + 3).expect("ok");
        assert_eq!(&got[..], &[1, 1, 2, 2, 2]);
        drop(got);
        let again = assemble(&pool, &[a.clone(), a.clone()], 0, 10, BLOCK + 10).expect("ok");
        assert_eq!(again.len() as u64, BLOCK);
        let one = assemble(&pool, &[a], 0, 5, 9).expect("ok");
        assert_eq!(one.len(), 4);
        assert!(assemble(&pool, &[Bytes::from_static(b"ab")], 0, 0, 3).is_err());
    }
}
