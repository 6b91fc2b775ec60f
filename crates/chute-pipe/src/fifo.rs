//! The named FIFOs themselves: creating them, opening the write end without
//! stranding anyone, writing that can be cancelled, and removing them so that no
//! reader is left blocked in `open`.
//!
//! Linux semantics relied on: opening a FIFO for writing blocks until a reader
//! opens it; opening it `O_RDWR` never blocks and counts as a reader *and* a
//! writer. The last makes two hazards go away: a writer blocked in `open` is
//! released by our own `O_RDWR` open, and a reader blocked in `open` on a FIFO we
//! are about to remove is released the same way and then reads EOF when we close.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;

/// The pipe buffer chute asks for: big writes, fewer wake-ups of the reader.
/// 1 MiB is the default `/proc/sys/fs/pipe-max-size`, so unprivileged processes
/// get it too.
const PIPE_SIZE: i32 = 1 << 20;

/// Why a write stopped because chute is stopping (not an I/O failure).
#[derive(Debug)]
pub(crate) struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped")
    }
}

impl std::error::Error for Cancelled {}

pub(crate) fn is_cancelled(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Cancelled>())
}

/// What the writer thread and the stopping side share: the stop flag, a pipe
/// whose read end becomes readable on stop (so a `poll` wakes), and the FIFOs
/// that currently exist (so a stop can remove them all).
pub(crate) struct Stop {
    flag: AtomicBool,
    wake_rx: OwnedFd,
    wake_tx: OwnedFd,
    fifos: Mutex<Vec<PathBuf>>,
}

impl Stop {
    pub fn new() -> io::Result<Arc<Stop>> {
        // CLOEXEC: a training command started by `chute run` must not inherit it.
        let (wake_rx, wake_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Arc::new(Stop {
            flag: AtomicBool::new(false),
            wake_rx,
            wake_tx,
            fifos: Mutex::new(Vec::new()),
        }))
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sets the flag and wakes a writer waiting in `poll`.
    pub fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // Never read: the byte keeps the read end readable for every later poll.
        let _ = nix::unistd::write(&self.wake_tx, &[1]);
    }

    fn registered(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.fifos.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn fifos(&self) -> Vec<PathBuf> {
        self.registered().clone()
    }

    /// Makes a FIFO at `path` with exactly `mode` (not filtered by the umask),
    /// replacing a stale FIFO left by an earlier run, and records it.
    pub fn create(&self, path: &Path, mode: u32) -> io::Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_fifo() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a FIFO; remove it or choose another --dir/--channel",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        nix::unistd::mkfifo(path, Mode::from_bits_truncate(mode & 0o7777))?;
        self.registered().push(path.to_path_buf());
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        Ok(())
    }

    /// Removes a FIFO, first releasing any reader blocked in `open` on it (that
    /// reader then reads EOF). Absent FIFOs are fine.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        let guard = nix::fcntl::open(
            path,
            OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        let res = match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        drop(guard);
        self.registered().retain(|p| p != path);
        res
    }

    /// Removes a FIFO that this process still holds open for writing (no reader
    /// can be blocked in `open` on it).
    pub fn unlink(&self, path: &Path) -> io::Result<()> {
        let res = match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        self.registered().retain(|p| p != path);
        res
    }

    /// Opens every registered FIFO `O_RDWR` and returns the descriptors: while
    /// held, a writer's `open` on them cannot block.
    pub fn hold_open(&self) -> Vec<OwnedFd> {
        self.fifos()
            .iter()
            .filter_map(|p| {
                nix::fcntl::open(
                    p.as_path(),
                    OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .ok()
            })
            .collect()
    }

    /// Removes every FIFO still recorded.
    pub fn remove_all(&self) -> io::Result<()> {
        let mut first_err = None;
        for path in self.fifos() {
            if let Err(e) = self.remove(&path) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The write end of a FIFO: non-blocking underneath, so that waiting for the
/// reader to drain happens in `poll`, which a stop interrupts.
pub(crate) struct FifoWriter {
    file: File,
    stop: Arc<Stop>,
    /// Bytes the reader has been given.
    pub written: u64,
    /// `write` calls that moved bytes (for the log: big writes are the point).
    pub writes: u64,
}

impl FifoWriter {
    /// Opens `path` for writing, blocking until a reader opens it or chute stops
    /// (the stopping side holds the FIFO open to release this call).
    pub fn open(path: &Path, stop: Arc<Stop>) -> io::Result<FifoWriter> {
        if stop.is_set() {
            return Err(io::Error::other(Cancelled));
        }
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        if stop.is_set() {
            return Err(io::Error::other(Cancelled));
        }
        let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
        fcntl(&file, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // Not every kernel or container allows it; the default size still works.
        let _ = fcntl(&file, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        Ok(FifoWriter {
            file,
            stop,
            written: 0,
            writes: 0,
        })
    }
}

impl Write for FifoWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            if self.stop.is_set() {
                return Err(io::Error::other(Cancelled));
            }
            match nix::unistd::write(&self.file, buf) {
                Ok(n) => {
                    self.written += n as u64;
                    self.writes += 1;
                    return Ok(n);
                }
                Err(Errno::EAGAIN) => self.wait_writable()?,
                Err(Errno::EINTR) => {}
                Err(Errno::EPIPE) => return Err(io::ErrorKind::BrokenPipe.into()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            if self.stop.is_set() {
                return Err(io::Error::other(Cancelled));
            }
            match nix::sys::uio::writev(&self.file, bufs) {
                Ok(n) => {
                    self.written += n as u64;
                    self.writes += 1;
                    return Ok(n);
                }
                Err(Errno::EAGAIN) => self.wait_writable()?,
                Err(Errno::EINTR) => {}
                Err(Errno::EPIPE) => return Err(io::ErrorKind::BrokenPipe.into()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FifoWriter {
    /// Waits until the reader has made room, or chute stops.
    fn wait_writable(&self) -> io::Result<()> {
        let mut fds = [
            PollFd::new(self.file.as_fd(), PollFlags::POLLOUT),
            PollFd::new(self.stop.wake_rx.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Chunks this small are copied together; larger ones are written from where
/// they already are.
const COPY_BELOW: usize = 32 << 10;
/// Pending bytes that trigger a write.
const HIGH_WATER: usize = 1 << 20;
/// Slices per `writev` (Linux allows 1024).
const MAX_IOV: usize = 512;

/// A write buffer in front of the FIFO that holds fetched chunks by reference
/// and writes them with `writev`: the bytes are copied once, by the kernel into
/// the pipe, instead of first into a buffer. Small writes (record headers,
/// decompressed output, tiny chunks) are gathered by copying.
pub(crate) struct Gather {
    pub fifo: FifoWriter,
    queue: VecDeque<Bytes>,
    small: Vec<u8>,
    pending: usize,
}

impl Gather {
    pub fn new(fifo: FifoWriter) -> Gather {
        Gather {
            fifo,
            queue: VecDeque::new(),
            small: Vec::new(),
            pending: 0,
        }
    }

    /// Queues a chunk without copying it (unless it is small).
    pub fn push(&mut self, chunk: Bytes) -> io::Result<()> {
        let n = chunk.len();
        if n < COPY_BELOW {
            self.small.extend_from_slice(&chunk);
        } else {
            self.seal();
            self.queue.push_back(chunk);
        }
        self.added(n)
    }

    fn added(&mut self, n: usize) -> io::Result<()> {
        self.pending += n;
        if self.pending >= HIGH_WATER {
            self.write_out()?;
        }
        Ok(())
    }

    fn seal(&mut self) {
        if !self.small.is_empty() {
            let small = std::mem::take(&mut self.small);
            self.queue.push_back(Bytes::from(small));
        }
    }

    /// Writes everything pending.
    fn write_out(&mut self) -> io::Result<()> {
        self.seal();
        while !self.queue.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .queue
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            let mut n = self.fifo.write_vectored(&slices)?;
            drop(slices);
            while n > 0 {
                let Some(front) = self.queue.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    self.queue.pop_front();
                } else {
                    let _ = front.split_to(n);
                    n = 0;
                }
            }
        }
        self.pending = 0;
        Ok(())
    }
}

impl Write for Gather {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.small.extend_from_slice(buf);
        self.added(buf.len())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()
    }
}
