//! The thin adapter between the kernel's FUSE requests (via `fuser`) and
//! [`FastFs`]. Metadata requests are answered inline on the FUSE thread, from
//! memory; a read whose blocks are all in memory is answered inline too, and
//! any other read is handed to the tokio runtime and answered from there when
//! its bytes arrive (fuser's replies are `Send`), so one FUSE thread keeps
//! many reads in flight.
//!
//! Every write-type operation answers EROFS; the mount is read-only as well,
//! so the kernel refuses most of them before they get here.
//!
//! Opens of files complete in the disk cache are answered with FUSE
//! passthrough where the kernel allows it (Linux 6.9+, `CAP_SYS_ADMIN`): the
//! kernel then reads the cache file itself and no read of that handle reaches
//! this process. The kernel requires every handle open on an inode at once
//! to use the same mode (and, for passthrough, the same backing file), so the
//! mode is chosen per inode at its first open and kept until its last close.
//! When the kernel refuses, passthrough is turned off for the mount, the
//! reason logged once, and reads go through [`FastFs::read`] as usual.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::{Attr, FastFs, Kind, ReadOutcome};
use crate::stats::FsStats;
use crate::{MountOptions, ReadPath};

/// The tree never changes while mounted, so the kernel may keep entries and
/// attributes as long as it likes.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

pub(crate) struct Adapter {
    fs: Arc<FastFs>,
    rt: tokio::runtime::Handle,
    /// Kernel read-ahead to ask for, in bytes (capped by what the kernel offers).
    max_readahead: u32,
    /// Whether opens come here at all (see [`ReadPath::PageCache`]).
    opens: bool,
    /// Whether to try passthrough; cleared when the kernel refuses it.
    passthrough: AtomicBool,
    /// The I/O mode of every inode with open handles.
    modes: Mutex<HashMap<u64, InodeMode>>,
}

/// How the open handles of one inode are served.
enum InodeMode {
    /// Through this process.
    Daemon { open: u32 },
    /// By the kernel from the backing file (dropping the id releases it).
    Passthrough { backing: BackingId, open: u32 },
}

impl InodeMode {
    fn open_count(&mut self) -> &mut u32 {
        match self {
            InodeMode::Daemon { open } | InodeMode::Passthrough { open, .. } => open,
        }
    }
}

impl Adapter {
    /// The adapter for `fs` as `opts` set it up: passthrough only where there
    /// is a disk cache to pass reads through to.
    pub fn new(fs: Arc<FastFs>, rt: tokio::runtime::Handle, opts: &MountOptions) -> Adapter {
        let passthrough = opts.read_path == ReadPath::Passthrough && fs.shared.disk.is_some();
        let max_readahead = opts.tuning.kernel_readahead_kb.saturating_mul(1024);
        let opens = opts.read_path != ReadPath::PageCache;
        if !opens {
            tracing::info!(
                "opens stay in the kernel: file pages are kept across opens and only page cache misses reach chute"
            );
        } else if !passthrough {
            tracing::info!("reads go through the FUSE daemon (passthrough off)");
        }
        Adapter {
            fs,
            rt,
            max_readahead,
            opens,
            passthrough: AtomicBool::new(passthrough),
            modes: Mutex::new(HashMap::new()),
        }
    }

    fn refuse_passthrough(&self, why: &str) {
        if self.passthrough.swap(false, Ordering::Relaxed) {
            tracing::info!(
                "FUSE passthrough unavailable ({why}); reads of cached files go through the FUSE daemon"
            );
        }
    }

    /// Answers an open: with passthrough to the disk cache entry when the
    /// inode can have it, else through this process.
    fn reply_open(&self, ino: u64, fh: u64, reply: ReplyOpen) {
        // The kernel refuses (EIO to the opener) passthrough opens with any
        // flag beyond direct I/O and no-flush: no KEEP_CACHE there (the
        // backing file's own page cache serves instead).
        let keep = FopenFlags::FOPEN_KEEP_CACHE;
        let mut modes = self.modes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mode) = modes.get_mut(&ino) {
            *mode.open_count() += 1;
            match mode {
                InodeMode::Passthrough { backing, .. } => {
                    FsStats::add(&self.fs.shared.stats.passthrough_opens, 1);
                    reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), backing)
                }
                InodeMode::Daemon { .. } => reply.opened(FileHandle(fh), keep),
            }
            return;
        }
        let local = self
            .passthrough
            .load(Ordering::Relaxed)
            .then(|| self.fs.local_file(fh))
            .flatten();
        let backing = local.and_then(|f| match reply.open_backing(&f) {
            Ok(id) => Some(id),
            Err(e) => {
                self.refuse_passthrough(&format!("the kernel refused a backing file: {e}"));
                None
            }
        });
        match backing {
            Some(backing) => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    tracing::info!(
                        "files complete in the disk cache are read through FUSE passthrough"
                    )
                });
                FsStats::add(&self.fs.shared.stats.passthrough_opens, 1);
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing);
                modes.insert(ino, InodeMode::Passthrough { backing, open: 1 });
            }
            None => {
                reply.opened(FileHandle(fh), keep);
                modes.insert(ino, InodeMode::Daemon { open: 1 });
            }
        }
    }

    fn closed(&self, ino: u64) {
        let mut modes = self.modes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mode) = modes.get_mut(&ino) {
            let n = mode.open_count();
            *n = n.saturating_sub(1);
            if *n == 0 {
                modes.remove(&ino);
            }
        }
    }
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.time,
        mtime: a.time,
        ctime: a.time,
        crtime: a.time,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: a.blksize,
        flags: 0,
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

impl fuser::Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Each is best effort: an older kernel without one still works.
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_MAX_PAGES,
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            let _ = config.add_capabilities(cap);
        }
        if let Err(max) = config.set_max_readahead(self.max_readahead.max(1)) {
            let _ = config.set_max_readahead(max);
        }
        // Reads are answered out of order from many tasks: let the kernel keep
        // many read-ahead requests outstanding.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        if self.passthrough.load(Ordering::Relaxed) {
            // Depth 2: the cache directory may itself be on a stacked file
            // system (overlayfs in a container).
            let negotiated = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && match config.set_max_stack_depth(2) {
                    Ok(_) => true,
                    Err(max) => max > 0 && config.set_max_stack_depth(max).is_ok(),
                };
            if !negotiated {
                self.refuse_passthrough(
                    "the kernel does not offer it; it needs Linux 6.9 or later",
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if !self.opens {
            // ENOSYS to a valid open: the kernel sends no more opens or
            // releases, and keeps each file's page cache (FOPEN_KEEP_CACHE).
            match self.fs.check_open(ino.0, flags.0) {
                Ok(_) => reply.error(Errno::ENOSYS),
                Err(e) => reply.error(errno(e)),
            }
            return;
        }
        match self.fs.open(ino.0, flags.0) {
            // Objects never change under the mount: keep the page cache across opens.
            Ok(fh) => self.reply_open(ino.0, fh, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Handle 0 is never given out: the read comes without an open.
        let outcome = if fh.0 == 0 && !self.opens {
            self.fs.read_unopened(ino.0, req.pid(), offset, size)
        } else {
            self.fs.read(fh.0, offset, size)
        };
        match outcome {
            ReadOutcome::Now(Ok(data)) => reply.data(&data),
            ReadOutcome::Now(Err(e)) => reply.error(errno(e)),
            ReadOutcome::Later(fut) => {
                self.rt.spawn(async move {
                    match fut.await {
                        Ok(data) => reply.data(&data),
                        Err(e) => reply.error(errno(e)),
                    }
                });
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        self.closed(ino.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written: ENOSYS makes the kernel stop sending
        // flushes, a round trip saved on every close.
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.is_dir(ino.0) {
            Ok(true) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Ok(false) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(ino.0, offset) {
            Ok(entries) => {
                for (next, e) in entries {
                    if reply.add(INodeNo(e.ino), next, file_type(e.kind), e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.fs.readdir(ino.0, offset) {
            Ok(entries) => {
                for (next, e) in entries {
                    let Ok(a) = self.fs.attr(e.ino) else { continue };
                    if reply.add(
                        INodeNo(e.ino),
                        next,
                        e.name,
                        &TTL,
                        &file_attr(&a),
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(s.blocks, 0, 0, s.files, 0, s.bsize, s.namelen, s.bsize);
    }

    // Objects carry no extended attributes. ENOSYS makes the kernel remember
    // that and answer ENOTSUP itself from then on, so `ls -l` (which asks for
    // security and ACL attributes of every entry) costs no round trips.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.fs.attr(ino.0) {
            Ok(_) if mask.contains(AccessFlags::W_OK) => reply.error(Errno::EROFS),
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        reply.error(Errno::EINVAL);
    }

    // Everything below would change the tree or the bytes: read-only.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}
