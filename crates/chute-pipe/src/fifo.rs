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
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nix::errno::Errno;
use nix::fcntl::{fcntl, vmsplice, FcntlArg, OFlag, SpliceFFlags};
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

impl FifoWriter {
    /// Runs one write-type call until it moves bytes: waits in `poll` while the
    /// pipe is full, gives up when chute stops or the reader is gone.
    fn moved(&mut self, mut call: impl FnMut(&File) -> nix::Result<usize>) -> io::Result<usize> {
        loop {
            if self.stop.is_set() {
                return Err(io::Error::other(Cancelled));
            }
            match call(&self.file) {
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

    /// Hands the slices' pages to the pipe by reference (`vmsplice`): the reader
    /// copies straight out of them, so the bytes are not copied into pipe pages
    /// first. The caller must keep the memory unchanged until the reader has read
    /// it (see [`FifoWriter::unread`]).
    fn splice_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.moved(|file| vmsplice(file, bufs, SpliceFFlags::SPLICE_F_NONBLOCK))
    }

    /// Bytes in the pipe that the reader has not read yet.
    fn unread(&self) -> io::Result<u64> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD on a pipe stores one int through the pointer, which
        // points at a live, writable c_int.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::FIONREAD, &mut n) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// True when no reader has the FIFO open any more (`poll` reports an error
    /// condition on the write end).
    fn reader_gone(&self) -> bool {
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
            Err(_) => false,
        }
    }
}

impl Write for FifoWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.moved(|file| nix::unistd::write(file, buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.moved(|file| nix::sys::uio::writev(file, bufs))
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

/// Spliced bytes (or chunks) held before asking the pipe which were read:
/// `FIONREAD` takes the pipe's lock, which the reader is contending for, and the
/// pipe itself holds at most 1 MiB, so what is kept beyond it is bounded too.
const RELEASE_BYTES: u64 = 2 << 20;
const RELEASE_CHUNKS: usize = 256;

/// A write buffer in front of the FIFO that holds fetched chunks by reference
/// and hands them to the pipe with `vmsplice`, so the only copy of the bytes
/// after the socket is the reader's own `read`. Small writes (record headers,
/// decompressed output, tiny chunks) are gathered by copying.
///
/// Spliced memory stays referenced by the pipe until the reader reads it, so the
/// chunks are kept (in `in_pipe`) until `FIONREAD` shows they were read; one that
/// could be rewritten earlier would hand the reader wrong bytes. Where `vmsplice`
/// is refused (a seccomp filter, say), plain `writev` copies instead.
pub(crate) struct Gather {
    pub fifo: FifoWriter,
    queue: VecDeque<Bytes>,
    small: Vec<u8>,
    pending: usize,
    /// Spliced chunks the reader may not have read, with the stream offset each
    /// ends at.
    in_pipe: VecDeque<(u64, Bytes)>,
    splice: bool,
}

impl Gather {
    pub fn new(fifo: FifoWriter) -> Gather {
        Gather {
            fifo,
            queue: VecDeque::new(),
            small: Vec::new(),
            pending: 0,
            in_pipe: VecDeque::new(),
            splice: true,
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
            let spliced = if self.splice {
                match self.fifo.splice_vectored(&slices) {
                    Err(e) if refused(&e) => {
                        tracing::debug!("vmsplice refused ({e}); writing with writev");
                        self.splice = false;
                        continue;
                    }
                    r => r,
                }
            } else {
                self.fifo.write_vectored(&slices)
            };
            drop(slices);
            let mut n = spliced?;
            while n > 0 {
                let Some(front) = self.queue.front_mut() else {
                    break;
                };
                let done = if n >= front.len() {
                    self.queue.pop_front()
                } else {
                    Some(front.split_to(n))
                };
                if let Some(done) = done {
                    n -= done.len();
                    if self.splice {
                        // `written` already counts all of this call's bytes; the
                        // chunk ends `n` (what is left of them) before that.
                        self.in_pipe.push_back((self.fifo.written - n as u64, done));
                    }
                }
            }
            if self.held() >= RELEASE_BYTES || self.in_pipe.len() >= RELEASE_CHUNKS {
                self.release_read()?;
            }
        }
        self.pending = 0;
        Ok(())
    }

    /// Bytes written since the oldest chunk still kept began.
    fn held(&self) -> u64 {
        self.in_pipe.front().map_or(0, |(end, chunk)| {
            self.fifo.written - (end - chunk.len() as u64)
        })
    }

    /// Drops the spliced chunks the reader has read.
    fn release_read(&mut self) -> io::Result<()> {
        if self.in_pipe.is_empty() {
            return Ok(());
        }
        let read = self.fifo.written.saturating_sub(self.fifo.unread()?);
        while self.in_pipe.front().is_some_and(|(end, _)| *end <= read) {
            self.in_pipe.pop_front();
        }
        Ok(())
    }

    /// Waits until the reader has read every spliced byte, has gone, or chute
    /// stops. True when the chunks may be freed.
    fn settle(&mut self) -> bool {
        let mut pause = Duration::from_micros(50);
        loop {
            if self.release_read().is_err() {
                return false;
            }
            if self.in_pipe.is_empty() {
                return true;
            }
            // With no reader and the FIFO unlinked (the writer unlinks before it
            // drops this), nothing can read the pages any more.
            if self.fifo.reader_gone() {
                return true;
            }
            if self.fifo.stop.is_set() {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }
}

/// Whether `vmsplice` itself is unavailable here (as opposed to the FIFO failing).
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOSYS | Errno::EPERM | Errno::EINVAL | Errno::EOPNOTSUPP)
    )
}

impl Drop for Gather {
    fn drop(&mut self) {
        if !self.settle() {
            // A reader that is still there may yet read these pages: never let
            // the allocator hand them out again. Only the chunks still in the
            // pipe are left (`settle` released the rest), and only when chute
            // stops with a reader mid-epoch.
            for (_, chunk) in self.in_pipe.drain(..) {
                std::mem::forget(chunk);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Chunk memory that is overwritten when chute lets go of it, standing in for
    /// an allocator that reuses it at once: a chunk released while the pipe still
    /// references its pages would show up as 0xAA bytes at the reader.
    struct Poisoned(Vec<u8>);

    impl AsRef<[u8]> for Poisoned {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Poisoned {
        fn drop(&mut self) {
            self.0.fill(0xAA);
        }
    }

    fn pattern(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
    }

    /// A FIFO in a temporary directory, a thread that opens it and runs `read`,
    /// and the `Gather` writing to it (the directory lives as long as the first).
    fn fifo_with_reader<T: Send + 'static>(
        read: impl FnOnce(File) -> T + Send + 'static,
    ) -> (tempfile::TempDir, Gather, std::thread::JoinHandle<T>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c_0");
        let stop = Stop::new().expect("stop pipe");
        stop.create(&path, 0o600).expect("mkfifo");
        let reader_path = path.clone();
        let reader =
            std::thread::spawn(move || read(File::open(&reader_path).expect("open for reading")));
        let out = Gather::new(FifoWriter::open(&path, stop).expect("open FIFO"));
        (dir, out, reader)
    }

    /// Writes `chunks` through a `Gather` to a slow reader and returns what the
    /// reader got, after the `Gather` is dropped (as the writer does at EOF).
    fn through_fifo(chunks: Vec<Vec<u8>>) -> Vec<u8> {
        let (_dir, mut out, reader) = fifo_with_reader(|mut f| {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 48 << 10];
            loop {
                // Slower than the writer, so the pipe stays full of spliced pages.
                std::thread::sleep(Duration::from_micros(200));
                match f.read(&mut buf) {
                    Ok(0) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => panic!("read: {e}"),
                }
            }
        });
        for c in chunks {
            out.push(Bytes::from_owner(Poisoned(c))).expect("push");
        }
        out.flush().expect("flush");
        drop(out);
        reader.join().expect("reader thread")
    }

    #[test]
    fn spliced_chunks_outlive_the_readers_copy() {
        // Sizes around the copy threshold and page size, not page aligned, so
        // pages are shared between chunks and some chunks are gathered by copy.
        let sizes = [COPY_BELOW, COPY_BELOW - 1, 4096, 65_537, 300_000, 1, 40_000];
        let chunks: Vec<Vec<u8>> = (0..400)
            .map(|i| pattern(i, sizes[i % sizes.len()]))
            .collect();
        let want: Vec<u8> = chunks.concat();
        let got = through_fifo(chunks);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the reader saw bytes that were not written");
    }

    #[test]
    fn a_reader_that_leaves_early_does_not_hold_the_writer() {
        let (_dir, mut out, reader) = fifo_with_reader(|mut f| {
            let mut buf = vec![0u8; 64 << 10];
            f.read_exact(&mut buf).expect("first bytes");
        });
        let mut result = Ok(());
        for i in 0..200 {
            result = out.push(Bytes::from_owner(Poisoned(pattern(i, 100_000))));
            if result.is_err() {
                break;
            }
        }
        reader.join().expect("reader thread");
        let e = result
            .and_then(|()| out.flush())
            .expect_err("the write end sees the reader go");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        // Dropping returns although the pipe still holds unread spliced pages.
        drop(out);
    }
}
