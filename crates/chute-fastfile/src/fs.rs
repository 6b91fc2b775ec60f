//! The file system itself, free of FUSE types: metadata from the inode table,
//! handles with their prefetchers, and the read path over the block cache.
//! [`crate::fuse`] is a thin adapter from kernel requests to these calls.
//!
//! Errors are errno values, since that is all a reader ever sees of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::cache::{BufferPool, Lookup, Origin, Slot, BLOCK};
use crate::fetch::{key, Shared};
use crate::prefetch::{CrossFile, Prefetcher};
use crate::stats::FsStats;
use crate::tree::{NodeKind, Tree, ROOT};

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
}

pub(crate) struct FastFs {
    pub tree: Tree,
    pub shared: Arc<Shared>,
    present: Presentation,
    handles: Mutex<HashMap<u64, Arc<Mutex<Handle>>>>,
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
    pub fn new(tree: Tree, shared: Arc<Shared>, present: Presentation) -> Self {
        FastFs {
            tree,
            shared,
            present,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            cross: Mutex::new(CrossFile::default()),
        }
    }

    pub fn attr(&self, ino: u64) -> Result<Attr, Errno> {
        let node = self.tree.get(ino).ok_or(libc::ENOENT)?;
        let p = &self.present;
        Ok(match &node.kind {
            NodeKind::Dir { subdirs, .. } => Attr {
                ino,
                kind: Kind::Dir,
                size: 4096,
                perm: p.dir_mode,
                nlink: 2 + subdirs,
                uid: p.uid,
                gid: p.gid,
                time: p.time,
                blksize: BLKSIZE,
            },
            NodeKind::File { size, .. } => Attr {
                ino,
                kind: Kind::File,
                size: *size,
                perm: p.file_mode,
                nlink: 1,
                uid: p.uid,
                gid: p.gid,
                time: p.time,
                blksize: BLKSIZE,
            },
        })
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, Errno> {
        match self.tree.get(parent).map(|n| &n.kind) {
            None => return Err(libc::ENOENT),
            Some(NodeKind::File { .. }) => return Err(libc::ENOTDIR),
            Some(NodeKind::Dir { .. }) => {}
        }
        let ino = self.tree.lookup(parent, name).ok_or(libc::ENOENT)?;
        self.attr(ino)
    }

    /// Entries of a directory from position `offset` on ("." and ".." first);
    /// each comes with the offset of the entry after it.
    pub fn readdir(&self, ino: u64, offset: u64) -> Result<Vec<(u64, DirEntry<'_>)>, Errno> {
        let node = self.tree.get(ino).ok_or(libc::ENOENT)?;
        let NodeKind::Dir { children, .. } = &node.kind else {
            return Err(libc::ENOTDIR);
        };
        let mut out = Vec::new();
        let total = children.len() as u64 + 2;
        for pos in offset..total {
            let entry = match pos {
                0 => DirEntry {
                    ino,
                    kind: Kind::Dir,
                    name: ".",
                },
                1 => DirEntry {
                    ino: if ino == ROOT { ROOT } else { node.parent },
                    kind: Kind::Dir,
                    name: "..",
                },
                _ => {
                    let (name, child) = &children[(pos - 2) as usize];
                    let kind = match self.tree.get(*child).map(|n| &n.kind) {
                        Some(NodeKind::Dir { .. }) => Kind::Dir,
                        _ => Kind::File,
                    };
                    DirEntry {
                        ino: *child,
                        kind,
                        name,
                    }
                }
            };
            out.push((pos + 1, entry));
        }
        Ok(out)
    }

    pub fn is_dir(&self, ino: u64) -> Result<bool, Errno> {
        match self.tree.get(ino).map(|n| &n.kind) {
            None => Err(libc::ENOENT),
            Some(NodeKind::Dir { .. }) => Ok(true),
            Some(NodeKind::File { .. }) => Ok(false),
        }
    }

    /// Opens a file for reading; any write access is refused with EROFS.
    pub fn open(&self, ino: u64, flags: i32) -> Result<u64, Errno> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY
            || flags & (libc::O_TRUNC | libc::O_APPEND | libc::O_CREAT) != 0
        {
            return Err(libc::EROFS);
        }
        let object = match self.tree.get(ino).map(|n| &n.kind) {
            None => return Err(libc::ENOENT),
            Some(NodeKind::Dir { .. }) => return Err(libc::EISDIR),
            Some(NodeKind::File { object, .. }) => *object,
        };
        let object = u32::try_from(object).map_err(|_| libc::EFBIG)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let handle = Handle {
            object,
            prefetch: Prefetcher::new(&self.shared.tuning),
        };
        lock(&self.handles).insert(fh, Arc::new(Mutex::new(handle)));
        FsStats::add(&self.shared.stats.opens, 1);
        Ok(fh)
    }

    pub fn release(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
    }

    pub fn read(&self, fh: u64, off: u64, size: u32) -> ReadOutcome {
        let Some(handle) = lock(&self.handles).get(&fh).cloned() else {
            return ReadOutcome::Now(Err(libc::EBADF));
        };
        let shared = &self.shared;
        let stats = &shared.stats;
        FsStats::add(&stats.reads, 1);
        let (object, ahead, sequential) = {
            let mut h = lock(&handle);
            let object = h.object;
            let fsize = shared.objects[object as usize].size;
            let end = off.saturating_add(u64::from(size)).min(fsize);
            let ahead = if off < end {
                h.prefetch.on_read(off, end, fsize, &shared.tuning)
            } else {
                None
            };
            (object, ahead, h.prefetch.is_sequential())
        };
        let o = &shared.objects[object as usize];
        if o.stale.load(Ordering::Relaxed) {
            FsStats::add(&stats.errors, 1);
            return ReadOutcome::Now(Err(libc::ESTALE));
        }
        let end = off.saturating_add(u64::from(size)).min(o.size);
        if off >= end {
            return ReadOutcome::Now(Ok(Bytes::new()));
        }
        let b0 = off / BLOCK;
        let b1 = (end - 1) / BLOCK;

        enum Part {
            Ready(Bytes),
            Wait(watch::Receiver<Slot>),
        }
        let mut parts = Vec::with_capacity((b1 - b0 + 1) as usize);
        let mut absent = Vec::new();
        for b in b0..=b1 {
            match shared.cache.lookup(key(object, b)) {
                Lookup::Ready(d) => {
                    FsStats::add(&stats.block_hits, 1);
                    parts.push(Some(Part::Ready(d)));
                }
                Lookup::Pending(rx) => {
                    FsStats::add(&stats.block_waits, 1);
                    parts.push(Some(Part::Wait(rx)));
                }
                Lookup::Absent => {
                    FsStats::add(&stats.block_misses, 1);
                    absent.push((key(object, b), o.block_len(b)));
                    parts.push(None);
                }
            }
        }
        let mut claimed: Vec<(u64, bool)> = Vec::new();
        if !absent.is_empty() {
            for (k, rx) in shared.cache.claim(&absent, Origin::Demand) {
                parts[(k.index - b0) as usize] = Some(Part::Wait(rx));
                claimed.push((k.index, true));
            }
        }
        if let Some(range) = ahead {
            let first = range.start / BLOCK;
            let last = range.end.div_ceil(BLOCK);
            let want: Vec<_> = (first..last)
                .map(|b| (key(object, b), o.block_len(b)))
                .collect();
            for (k, _) in shared.cache.claim(&want, Origin::Prefetch) {
                claimed.push((k.index, false));
            }
        }
        // The reader's blocks and the read-ahead after them go out as one GET
        // where they are contiguous.
        shared.fetch_claimed(object, claimed);
        if end == o.size {
            self.cross_file(object as usize);
        }
        let consumed = if sequential {
            // Blocks this read finished: the page cache has them now.
            let last_full = if end % BLOCK == 0 || end == o.size {
                Some(b1)
            } else {
                b1.checked_sub(1)
            };
            last_full.map(|l| b0..l + 1)
        } else {
            None
        };

        if parts.iter().all(|p| matches!(p, Some(Part::Ready(_)))) {
            let blocks: Vec<Bytes> = parts
                .into_iter()
                .filter_map(|p| match p {
                    Some(Part::Ready(d)) => Some(d),
                    _ => None,
                })
                .collect();
            let res = assemble(&shared.scratch, &blocks, b0, off, end);
            finish(shared, object, consumed, &res);
            return ReadOutcome::Now(res);
        }
        let shared = shared.clone();
        ReadOutcome::Later(Box::pin(async move {
            let mut blocks = Vec::with_capacity(parts.len());
            for p in parts {
                let data = match p {
                    Some(Part::Ready(d)) => Ok(d),
                    Some(Part::Wait(mut rx)) => {
                        match rx.wait_for(|s| !matches!(s, Slot::Loading)).await {
                            Ok(s) => match &*s {
                                Slot::Ready(d) => Ok(d.clone()),
                                Slot::Failed(e) => Err(e.errno()),
                                Slot::Loading => Err(libc::EIO),
                            },
                            // The fetch went away without an answer (shutdown).
                            Err(_) => Err(libc::EIO),
                        }
                    }
                    // Claimed by nobody: the cache refused, which it never does
                    // for a reader; answer rather than hang.
                    None => Err(libc::EIO),
                };
                match data {
                    Ok(d) => blocks.push(d),
                    Err(e) => {
                        FsStats::add(&shared.stats.errors, 1);
                        return Err(e);
                    }
                }
            }
            let res = assemble(&shared.scratch, &blocks, b0, off, end);
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
        for (j, o) in shared
            .objects
            .iter()
            .enumerate()
            .skip(i + 1)
            .take(t.cross_file_max)
        {
            if planned >= budget || shared.cache.prefetch_room() == 0 {
                break;
            }
            if o.size == 0 || o.stale.load(Ordering::Relaxed) {
                continue;
            }
            let Ok(object) = u32::try_from(j) else { break };
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
        let bytes = self.shared.objects.iter().map(|o| o.size).sum::<u64>();
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
