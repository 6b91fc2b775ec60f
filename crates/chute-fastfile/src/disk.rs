//! The disk cache: whole objects kept on local disk, across mounts.
//!
//! An entry is one file holding exactly the object's bytes (so the kernel can
//! read it directly through FUSE passthrough), named by a hash of (bucket,
//! key, ETag, size) and tagged with those in an extended attribute. Blocks
//! fetched for readers or by the background prefetch are written into a
//! temporary file created with `O_EXCL` under a name unique to this process.
//! When the last block is in, the file is served from there at once, and is
//! renamed into place only after a sync of the cache's file system that
//! started after it was complete (one `syncfs` about every second covers every
//! file completed since the last, off the read path: a sync per file cost the
//! prefetch much of its speed), so a file under an entry name is complete
//! unless something cut it later. Before use an entry is checked: its length must be the listed size
//! and its tag (where the file system keeps extended attributes) must name
//! the object; anything else is deleted and fetched again. A changed object
//! has a new ETag, hence a new name: the old entry is never found again and
//! ages out.
//!
//! The size limit counts every entry in the directory, found by a scan at
//! mount, and eviction is least-recently-used (file modification time orders
//! the entries of earlier mounts; an entry is touched when first used).
//! Mounts sharing the directory never corrupt each other: writes go to
//! private temporary names and renames are atomic, and an entry deleted under
//! a reader is still readable through its open descriptor. Each mount counts
//! only what it saw at its scan and wrote itself, so mounts running at the
//! same time can together exceed the limit by what they write concurrently.
//! Only complete entries survive the mount: partial files are removed at
//! unmount (or, after a crash, by the next scan once their process is gone).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::cache::BLOCK;
use crate::object::{ObjectRef, Objects};

/// Layout version: a later format gets a new sub-directory.
const LAYOUT: &str = "v1";
const TMP: &str = "partial";
const XATTR: &[u8] = b"user.chute.object\0";

/// Per-object state bits.
const COMPLETE: u8 = 1;
const PARTIAL: u8 = 2;
/// A reader opened the object during this mount.
const READ: u8 = 4;
/// The entry was checked (length and tag) during this mount.
const CHECKED: u8 = 8;
/// Every byte is in the partial file, which waits for a sync to be renamed.
const READY: u8 = 16;

/// How long a complete partial file may wait for the sync that lets it be
/// renamed into place: the cost of a sync is paid once per this interval.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Who wants room in the cache: a reader's bytes may evict anything; the
/// background prefetch never evicts an entry no reader has used yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    Reader,
    Background,
}

type EntryId = u128;

struct Partial {
    file: Arc<File>,
    tmp: PathBuf,
    /// One bit per block.
    have: Vec<u64>,
    missing: u64,
    /// Bytes reserved in the index: the object's size.
    size: u64,
}

impl Partial {
    fn has(&self, index: u64) -> bool {
        self.have
            .get((index / 64) as usize)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// Marks a block present; false if it already was.
    fn set(&mut self, index: u64) -> bool {
        let Some(w) = self.have.get_mut((index / 64) as usize) else {
            return false;
        };
        let bit = 1 << (index % 64);
        if *w & bit != 0 {
            return false;
        }
        *w |= bit;
        self.missing -= 1;
        true
    }
}

struct Index {
    /// Bytes of entries plus room reserved by partial files.
    total: u64,
    /// Complete entries of this plan, by object index; value: size.
    lru: LruCache<u32, u64>,
    /// Entries of other objects (other channels, older versions), oldest first.
    foreign: VecDeque<(EntryId, u64)>,
    partial: HashMap<u32, Partial>,
    /// Complete partial files waiting for the next sync, in completion order.
    ready: Vec<u32>,
    /// Whether a committer (sync, then renames) is running.
    committing: bool,
}

/// What the scan at mount found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ScanReport {
    pub entries: u64,
    pub bytes: u64,
    /// Entries of this plan, ready to use.
    pub reusable: u64,
    pub reusable_bytes: u64,
    /// Entries whose length did not match (cut by a crash or truncated).
    pub discarded: u64,
}

pub(crate) struct DiskCache {
    root: PathBuf,
    limit: u64,
    ids: Vec<EntryId>,
    state: Vec<AtomicU8>,
    index: Mutex<Index>,
    seq: AtomicU64,
    /// Set by [`DiskCache::settle`]: the committer syncs without waiting.
    urgent: AtomicBool,
    rt: tokio::runtime::Handle,
    pub scan: ScanReport,
}

/// Space left free on the cache's volume when sizing from free space: 1 % of
/// the volume, between 64 MiB and 1 GiB.
fn reserve(volume: u64) -> u64 {
    (volume / 100).clamp(64 << 20, 1 << 30)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The entry name of an object: a hash of everything that identifies its bytes.
fn entry_id(o: &ObjectRef<'_>) -> Option<EntryId> {
    let etag = o.etag?.to_string();
    let mut h = Sha256::new();
    for part in [o.bucket.as_bytes(), o.key.as_bytes(), etag.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(o.size.to_le_bytes());
    let d = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    Some(u128::from_be_bytes(id))
}

fn tag(o: &ObjectRef<'_>) -> Vec<u8> {
    let etag = o.etag_string().unwrap_or_default();
    format!("{}\n{}\n{etag}\n{}", o.bucket, o.key, o.size).into_bytes()
}

fn set_tag(f: &File, value: &[u8]) -> io::Result<()> {
    // SAFETY: the name is NUL-terminated, the value a valid slice, the fd open.
    let rc = unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            XATTR.as_ptr().cast(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The entry's tag: `Ok(None)` where the file system keeps no extended attributes.
fn get_tag(f: &File) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 8192];
    // SAFETY: as in `set_tag`; the kernel writes at most `buf.len()` bytes.
    let n = unsafe {
        libc::fgetxattr(
            f.as_raw_fd(),
            XATTR.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n >= 0 {
        buf.truncate(n as usize);
        return Ok(Some(buf));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOTSUP) => Ok(None),
        _ => Err(e),
    }
}

fn pid_alive(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    }
}

impl DiskCache {
    /// Opens (creating it if needed) the cache in `dir` for `objects`,
    /// scanning what earlier mounts left. `limit` `None` sizes it from free
    /// space; returns `None` when that leaves no room.
    pub fn open(
        dir: &Path,
        limit: Option<u64>,
        objects: &Objects,
        rt: tokio::runtime::Handle,
    ) -> io::Result<Option<DiskCache>> {
        let root = dir.join(LAYOUT);
        std::fs::create_dir_all(root.join(TMP))?;
        let ids: Vec<EntryId> = objects
            .iter()
            .map(|(_, o)| entry_id(&o).unwrap_or(0))
            .collect();
        let mut cache = DiskCache {
            state: (0..ids.len()).map(|_| AtomicU8::new(0)).collect(),
            ids,
            root,
            limit: 0,
            index: Mutex::new(Index {
                total: 0,
                lru: LruCache::unbounded(),
                foreign: VecDeque::new(),
                partial: HashMap::new(),
                ready: Vec::new(),
                committing: false,
            }),
            seq: AtomicU64::new(0),
            urgent: AtomicBool::new(false),
            rt,
            scan: ScanReport::default(),
        };
        cache.scan(objects)?;
        let held = cache.lock().total;
        cache.limit = match limit {
            Some(l) => l,
            None => {
                let vfs = nix::sys::statvfs::statvfs(&cache.root).map_err(io::Error::from)?;
                let frsize = vfs.fragment_size() as u64;
                let avail = (vfs.blocks_available() as u64).saturating_mul(frsize);
                let volume = (vfs.blocks() as u64).saturating_mul(frsize);
                let needed = objects
                    .total_bytes()
                    .saturating_sub(cache.scan.reusable_bytes);
                held + needed.min(avail.saturating_sub(reserve(volume)))
            }
        };
        if cache.limit == 0 {
            return Ok(None);
        }
        {
            let mut g = cache.lock();
            cache.evict(&mut g, 0, Writer::Reader);
        }
        Ok(Some(cache))
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes the directory holds, as this mount counts them.
    pub fn used(&self) -> u64 {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path_of(&self, id: EntryId) -> PathBuf {
        let h = hex(&id.to_be_bytes());
        self.root.join(&h[..2]).join(&h[2..])
    }

    fn bits(&self, object: u32) -> u8 {
        self.state
            .get(object as usize)
            .map_or(0, |s| s.load(Ordering::Acquire))
    }

    fn set_bits(&self, object: u32, set: u8, clear: u8) {
        if let Some(s) = self.state.get(object as usize) {
            let _ = s.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some((v | set) & !clear)
            });
        }
    }

    /// Reads the directory: entries of this plan become usable, entries cut
    /// short are deleted, the rest are counted (and evicted first), and
    /// temporary files of dead processes are removed.
    fn scan(&mut self, objects: &Objects) -> io::Result<()> {
        let mut found: HashMap<EntryId, (u64, SystemTime)> = HashMap::new();
        for sub in std::fs::read_dir(&self.root)? {
            let sub = sub?;
            let name = sub.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == TMP {
                self.clear_tmp(&sub.path());
                continue;
            }
            if name.len() != 2 || !sub.file_type()?.is_dir() {
                continue;
            }
            for e in std::fs::read_dir(sub.path())? {
                let e = e?;
                let Some(rest) = e.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Ok(id) = u128::from_str_radix(&format!("{name}{rest}"), 16) else {
                    continue;
                };
                if rest.len() != 30 {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.insert(id, (meta.len(), mtime));
            }
        }
        let mut report = ScanReport {
            entries: found.len() as u64,
            bytes: found.values().map(|v| v.0).sum(),
            ..ScanReport::default()
        };
        let mut mine: Vec<(SystemTime, u32, u64)> = Vec::new();
        for (i, o) in objects.iter() {
            let id = self.ids[i as usize];
            if id == 0 {
                continue;
            }
            let Some((len, mtime)) = found.remove(&id) else {
                continue;
            };
            if len == o.size {
                mine.push((mtime, i, len));
            } else {
                tracing::debug!(object = %o.uri(), len, size = o.size, "disk cache entry has the wrong length; deleting it");
                let _ = std::fs::remove_file(self.path_of(id));
                report.discarded += 1;
                report.entries -= 1;
                report.bytes -= len;
            }
        }
        let mut foreign: Vec<(SystemTime, EntryId, u64)> =
            found.into_iter().map(|(id, (l, t))| (t, id, l)).collect();
        foreign.sort_unstable();
        mine.sort_unstable();
        let g = self.index.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, id, len) in foreign {
            g.foreign.push_back((id, len));
            g.total += len;
        }
        for (_, i, len) in mine {
            g.lru.push(i, len);
            g.total += len;
            report.reusable += 1;
            report.reusable_bytes += len;
            self.state[i as usize].store(COMPLETE, Ordering::Release);
        }
        self.scan = report;
        Ok(())
    }

    fn clear_tmp(&self, dir: &Path) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('.').nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if pid.is_none_or(|p| !pid_alive(p)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Frees room for `extra` more bytes: other objects' entries first, then
    /// this plan's least recently used. The background prefetch may evict only
    /// entries a reader has used. Returns whether the bytes fit.
    fn evict(&self, g: &mut Index, extra: u64, who: Writer) -> bool {
        while g.total + extra > self.limit {
            if let Some((id, len)) = g.foreign.pop_front() {
                let _ = std::fs::remove_file(self.path_of(id));
                g.total -= len;
                continue;
            }
            let Some((&victim, _)) = g.lru.peek_lru() else {
                return false;
            };
            if who == Writer::Background && self.bits(victim) & READ == 0 {
                return false;
            }
            if let Some((_, len)) = g.lru.pop_lru() {
                let _ = std::fs::remove_file(self.path_of(self.ids[victim as usize]));
                self.set_bits(victim, 0, COMPLETE | CHECKED);
                g.total -= len;
            }
        }
        true
    }

    /// Whether every byte of the object is on disk (in place, or in a
    /// partial file waiting for its sync).
    pub fn is_complete(&self, object: u32) -> bool {
        self.bits(object) & (COMPLETE | READY) != 0
    }

    /// A reader opened the object: prefetch may now evict its entry for room.
    pub fn mark_read(&self, object: u32) {
        if self.bits(object) & READ == 0 {
            self.set_bits(object, READ, 0);
        }
    }

    fn forget(&self, object: u32) {
        let mut g = self.lock();
        if let Some(len) = g.lru.pop(&object) {
            g.total -= len;
        }
        self.set_bits(object, 0, COMPLETE | CHECKED);
    }

    /// The object's complete entry, checked, opened for reading. An entry that
    /// fails the check is deleted.
    pub fn entry(&self, objects: &Objects, object: u32) -> Option<File> {
        let bits = self.bits(object);
        if bits & COMPLETE == 0 {
            if bits & READY == 0 {
                return None;
            }
            // Written by this mount and not yet renamed: nothing to check.
            let g = self.lock();
            return g.partial.get(&object).and_then(|p| p.file.try_clone().ok());
        }
        let o = objects.get(object)?;
        let id = *self.ids.get(object as usize)?;
        let path = self.path_of(id);
        let Ok(f) = File::open(&path) else {
            // Evicted by another mount sharing the directory.
            self.forget(object);
            return None;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let mut ok = len == o.size;
        if ok && bits & CHECKED == 0 {
            ok = match get_tag(&f) {
                Ok(Some(t)) => t == tag(&o),
                Ok(None) => true,
                Err(_) => false,
            };
            if ok {
                self.set_bits(object, CHECKED, 0);
                // Orders entries by use for the next mount's eviction.
                let _ = f.set_modified(SystemTime::now());
            }
        }
        if !ok {
            tracing::warn!(
                object = %o.uri(),
                path = %path.display(),
                "disk cache entry is cut short or not this object's; deleting it and fetching again"
            );
            let _ = std::fs::remove_file(&path);
            self.forget(object);
            return None;
        }
        self.lock().lru.promote(&object);
        Some(f)
    }

    /// Asks the kernel to read the first `len` bytes of the object's entry
    /// into memory, if it has one in place.
    pub fn advise(&self, objects: &Objects, object: u32, len: u64) {
        if self.bits(object) & COMPLETE == 0 {
            return;
        }
        let Some(id) = self.ids.get(object as usize) else {
            return;
        };
        let size = objects.get(object).map_or(0, |o| o.size);
        if let Ok(f) = File::open(self.path_of(*id)) {
            let len = i64::try_from(len.min(size)).unwrap_or(i64::MAX);
            let _ = nix::fcntl::posix_fadvise(
                &f,
                0,
                len,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// Bytes `off..end` of a complete entry, read from `f`; `None` if the
    /// file came up short (it will be checked and dropped on the next open).
    pub fn read_entry(f: &File, off: u64, end: u64) -> Option<Bytes> {
        let mut buf = vec![0u8; usize::try_from(end - off).ok()?];
        f.read_exact_at(&mut buf, off).ok()?;
        Some(Bytes::from(buf))
    }

    /// Block `index` of the object, from its entry or from this mount's
    /// partial file.
    pub fn block(&self, objects: &Objects, object: u32, index: u64) -> Option<Bytes> {
        let o = objects.get(object)?;
        let (off, end) = (index * BLOCK, (index * BLOCK + BLOCK).min(o.size));
        if off >= end {
            return None;
        }
        if self.is_complete(object) {
            let f = self.entry(objects, object)?;
            return Self::read_entry(&f, off, end);
        }
        let file = {
            let g = self.lock();
            let p = g.partial.get(&object)?;
            if !p.has(index) {
                return None;
            }
            p.file.clone()
        };
        Self::read_entry(&file, off, end)
    }

    /// Whether block `index` is on disk.
    pub fn has_block(&self, object: u32, index: u64) -> bool {
        let bits = self.bits(object);
        if bits & COMPLETE != 0 {
            return true;
        }
        if bits & PARTIAL == 0 {
            return false;
        }
        self.lock()
            .partial
            .get(&object)
            .is_some_and(|p| p.has(index))
    }

    /// Makes sure the object has a partial file with room reserved for all
    /// of it; false when it is complete already or the cache has no room.
    pub fn begin(&self, objects: &Objects, object: u32, who: Writer) -> bool {
        let Some(o) = objects.get(object) else {
            return false;
        };
        let id = self.ids.get(object as usize).copied().unwrap_or(0);
        if id == 0 || o.size == 0 || self.is_complete(object) {
            return false;
        }
        let mut g = self.lock();
        if g.partial.contains_key(&object) {
            return true;
        }
        if o.size > self.limit || !self.evict(&mut g, o.size, who) {
            return false;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join(TMP).join(format!(
            "{}.{}.{seq}",
            hex(&id.to_be_bytes()),
            std::process::id()
        ));
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(path = %tmp.display(), "cannot create a disk cache file: {e}");
                return false;
            }
        };
        let blocks = o.size.div_ceil(BLOCK);
        g.total += o.size;
        g.partial.insert(
            object,
            Partial {
                file: Arc::new(file),
                tmp,
                have: vec![0; blocks.div_ceil(64) as usize],
                missing: blocks,
                size: o.size,
            },
        );
        self.set_bits(object, PARTIAL, 0);
        true
    }

    /// Writes block `index` of the object (reserving room first if needed);
    /// the last block in turns the partial file into an entry.
    pub fn put(
        self: &Arc<Self>,
        objects: &Objects,
        object: u32,
        index: u64,
        data: &[u8],
        who: Writer,
    ) {
        if self.is_complete(object) || !self.begin(objects, object, who) {
            return;
        }
        let file = match self.lock().partial.get(&object) {
            Some(p) if !p.has(index) => p.file.clone(),
            _ => return,
        };
        if let Err(e) = file.write_all_at(data, index * BLOCK) {
            tracing::debug!("disk cache write failed: {e}");
            self.abandon(object);
            return;
        }
        let done = {
            let mut g = self.lock();
            match g.partial.get_mut(&object) {
                Some(p) => p.set(index) && p.missing == 0,
                None => false,
            }
        };
        if done {
            // Tagged now, so the sync that lets the file be renamed covers
            // the tag too.
            let tagged = match objects.get(object) {
                Some(o) => match set_tag(&file, &tag(&o)) {
                    Err(e) if e.raw_os_error() != Some(libc::ENOTSUP) => Err(e),
                    _ => Ok(()),
                },
                None => Ok(()),
            };
            if let Err(e) = tagged {
                tracing::debug!("cannot tag a disk cache file: {e}");
                self.abandon(object);
                return;
            }
            self.set_bits(object, READY, 0);
            let start = {
                let mut g = self.lock();
                g.ready.push(object);
                !std::mem::replace(&mut g.committing, true)
            };
            if start {
                let me = self.clone();
                self.rt.spawn_blocking(move || me.commit());
            }
        }
    }

    /// Waits (at most `limit`) until every complete object is in place, so
    /// that a mount right after this one finds it.
    pub fn settle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        self.urgent.store(true, Ordering::Release);
        while self.lock().committing && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.urgent.store(false, Ordering::Release);
    }

    /// Renames complete partial files into place, a batch at a time, each
    /// batch after one sync of the file system; ends when none is left.
    fn commit(&self) {
        loop {
            let since = Instant::now();
            while since.elapsed() < SYNC_INTERVAL && !self.urgent.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let batch: Vec<(u32, Arc<File>, PathBuf)> = {
                let mut g = self.lock();
                let objects = std::mem::take(&mut g.ready);
                if objects.is_empty() {
                    g.committing = false;
                    return;
                }
                objects
                    .into_iter()
                    .filter_map(|o| {
                        let p = g.partial.get(&o)?;
                        Some((o, p.file.clone(), p.tmp.clone()))
                    })
                    .collect()
            };
            let synced = match batch.first() {
                Some((_, f, _)) => nix::unistd::syncfs(f.as_ref()).map_err(io::Error::from),
                None => Ok(()),
            };
            for (object, _, tmp) in batch {
                let res = synced
                    .as_ref()
                    .map_err(|e| io::Error::new(e.kind(), e.to_string()));
                self.finish(object, &tmp, res.map(|_| ()));
            }
        }
    }

    /// Renames a synced partial file into place (or drops it when the sync
    /// failed).
    fn finish(&self, object: u32, tmp: &Path, synced: io::Result<()>) {
        let dest = self.path_of(self.ids[object as usize]);
        let res = synced
            .and_then(|()| match dest.parent() {
                Some(p) => std::fs::create_dir_all(p),
                None => Ok(()),
            })
            .and_then(|()| std::fs::rename(tmp, &dest));
        let mut g = self.lock();
        let Some(p) = g.partial.remove(&object) else {
            return;
        };
        match res {
            // The reservation becomes the entry.
            Ok(()) => {
                g.lru.push(object, p.size);
                self.set_bits(object, COMPLETE | CHECKED, PARTIAL | READY);
            }
            Err(e) => {
                tracing::debug!(path = %dest.display(), "cannot complete a disk cache entry: {e}");
                let _ = std::fs::remove_file(&p.tmp);
                g.total = g.total.saturating_sub(p.size);
                self.set_bits(object, 0, PARTIAL | READY);
            }
        }
    }

    /// Gives up on a partial file (a write failed).
    fn abandon(&self, object: u32) {
        let mut g = self.lock();
        if let Some(p) = g.partial.remove(&object) {
            let _ = std::fs::remove_file(&p.tmp);
            g.total = g.total.saturating_sub(p.size);
        }
        self.set_bits(object, 0, PARTIAL);
    }
}

impl Drop for DiskCache {
    fn drop(&mut self) {
        let g = self.index.get_mut().unwrap_or_else(|p| p.into_inner());
        for p in g.partial.values() {
            let _ = std::fs::remove_file(&p.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chute_plan::{ETag, PlannedObject};

    fn objects(n: usize, size: u64) -> Objects {
        let bucket: Arc<str> = Arc::from("b");
        Objects::from_plan(
            (0..n)
                .map(|i| {
                    let key = format!("p/k{i}");
                    let etag = ETag::new(&format!("\"{i:032x}\""));
                    PlannedObject::new(bucket.clone(), key.as_str(), size, Some(etag), &key[2..])
                })
                .collect(),
        )
    }

    fn fill(cache: &Arc<DiskCache>, objects: &Objects, i: u32, who: Writer) {
        cache.put(objects, i, 0, &[i as u8; 100], who);
        cache.settle(Duration::from_secs(10));
    }

    #[test]
    fn entries_are_reused_checked_and_kept_within_the_limit() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let objs = objects(4, 100);
        let open = || {
            Arc::new(
                DiskCache::open(dir.path(), Some(300), &objs, rt.handle().clone())
                    .expect("open")
                    .expect("room"),
            )
        };
        let cache = open();
        for i in 0..3 {
            fill(&cache, &objs, i, Writer::Background);
            assert!(cache.is_complete(i));
        }
        // Full of entries no reader used: the prefetch may not evict them...
        assert!(!cache.begin(&objs, 3, Writer::Background));
        // ...once one was read, it may.
        cache.mark_read(0);
        fill(&cache, &objs, 3, Writer::Background);
        assert!(cache.is_complete(3) && !cache.is_complete(0));
        assert!(cache.used() <= 300);
        let f = cache.entry(&objs, 3).expect("entry");
        assert_eq!(
            DiskCache::read_entry(&f, 0, 100),
            Some(Bytes::from(vec![3u8; 100]))
        );
        drop(cache);

        // The next mount finds them; a cut one is deleted, never served.
        let cut = open();
        assert_eq!(cut.scan.reusable, 3);
        let victim = cut.path_of(cut.ids[1]);
        File::options()
            .write(true)
            .open(&victim)
            .and_then(|f| f.set_len(50))
            .expect("truncate");
        assert!(cut.entry(&objs, 1).is_none(), "cut while mounted");
        assert!(!victim.exists());
        drop(cut);
        let again = open();
        assert_eq!(again.scan.reusable, 2);
        assert!(again.block(&objs, 2, 0).is_some());
        assert!(again.block(&objs, 1, 0).is_none());
    }

    #[test]
    fn a_complete_file_is_served_at_once_and_renamed_only_after_a_sync() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let objs = objects(2, 100);
        let cache = Arc::new(
            DiskCache::open(dir.path(), Some(1000), &objs, rt.handle().clone())
                .expect("open")
                .expect("room"),
        );
        let started = Instant::now();
        cache.put(&objs, 0, 0, &[7u8; 100], Writer::Reader);
        assert!(cache.is_complete(0));
        let f = cache.entry(&objs, 0).expect("served from the partial file");
        assert_eq!(
            DiskCache::read_entry(&f, 0, 100),
            Some(Bytes::from(vec![7u8; 100]))
        );
        let dest = cache.path_of(cache.ids[0]);
        if started.elapsed() < SYNC_INTERVAL / 2 {
            assert!(!dest.exists(), "in place before any sync");
        }
        cache.settle(Duration::from_secs(10));
        assert!(dest.exists(), "in place after the sync");
        assert_eq!(std::fs::read(&dest).expect("entry"), vec![7u8; 100]);
        let f = cache.entry(&objs, 0).expect("served from its place");
        assert_eq!(
            DiskCache::read_entry(&f, 99, 100),
            Some(Bytes::from(vec![7u8]))
        );
    }
}
