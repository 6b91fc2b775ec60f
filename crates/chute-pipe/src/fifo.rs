//! The named FIFOs themselves: creating them, opening the write end without
//! stranding anyone, writing that can be cancelled, and removing them so that no
//! reader is left blocked in `open`.
//!
//! Linux semantics relied on: opening a FIFO for writing blocks until a reader
//! opens it; opening it `O_RDWR` never blocks and counts as a reader *and* a
//! writer. The last makes two hazards go away: a writer blocked in `open` is
//! released by our own `O_RDWR` open, and a reader blocked in `open` on a FIFO we
//! are about to remove is released the same way and then reads EOF when we close.
//!
//! The FIFO directory may be shared with other users (an input directory on a
//! shared file system), and a name checked once can be replaced before it is
//! used. So every operation goes through a descriptor of the directory opened
//! once, never follows a symlink at the FIFO's name (`O_NOFOLLOW`), and checks
//! that what it opened is the very FIFO chute made (same device and inode)
//! before it writes to it, changes its mode or removes it.
//!
//! Writes copy the bytes into the pipe (`writev`). Handing the pipe references to
//! chute's own memory instead (`vmsplice`) saves a copy, but a reader that moves
//! the pages on with `splice(2)` or `tee(2)` keeps them referenced in another
//! pipe for as long as it likes, with nothing to tell chute when it lets go: any
//! reuse of that memory would change the bytes that reader sees.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nix::errno::Errno;
use nix::fcntl::{fcntl, openat, AtFlags, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

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

/// A FIFO chute made: where, and which inode, so that a replacement is noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Made {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

fn is_fifo(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO
}

/// The error for a name that no longer holds the FIFO chute made.
fn replaced(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} is no longer the FIFO chute created (something replaced it); refusing to use it",
            path.display()
        ),
    )
}

/// The last component of a FIFO path: every FIFO lives directly in the directory.
fn name_of(path: &Path) -> io::Result<&OsStr> {
    path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a FIFO", path.display()),
        )
    })
}

/// What the writer thread and the stopping side share: the stop flag, a pipe
/// whose read end becomes readable on stop (so a `poll` wakes), the FIFO
/// directory, and the FIFOs that currently exist (so a stop can remove them all).
pub(crate) struct Stop {
    flag: AtomicBool,
    wake_rx: OwnedFd,
    wake_tx: OwnedFd,
    dir: OwnedFd,
    fifos: Mutex<Vec<Made>>,
}

impl Stop {
    /// Opens the FIFO directory `dir` (which must exist) once for every later
    /// operation.
    pub fn new(dir: &Path) -> io::Result<Arc<Stop>> {
        // CLOEXEC: a training command started by `chute run` must not inherit these.
        let (wake_rx, wake_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let dir = nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Arc::new(Stop {
            flag: AtomicBool::new(false),
            wake_rx,
            wake_tx,
            dir,
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

    /// Blocks until the flag is set.
    pub fn wait(&self) {
        while !self.is_set() {
            let mut fds = [PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::NONE);
        }
    }

    fn registered(&self) -> std::sync::MutexGuard<'_, Vec<Made>> {
        self.fifos.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn fifos(&self) -> Vec<PathBuf> {
        self.registered().iter().map(|m| m.path.clone()).collect()
    }

    fn made(&self, path: &Path) -> Option<Made> {
        self.registered().iter().find(|m| m.path == path).cloned()
    }

    /// `O_NOFOLLOW` open of a FIFO's name in the directory, checked to be the
    /// FIFO chute made when `made` is given.
    fn open_at(&self, path: &Path, flags: OFlag, made: Option<&Made>) -> io::Result<OwnedFd> {
        let name = name_of(path)?;
        let fd = loop {
            match openat(
                &self.dir,
                name,
                flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Err(Errno::EINTR) => continue,
                Err(Errno::ELOOP) => return Err(replaced(path)),
                r => break r?,
            }
        };
        let st = fstat(&fd)?;
        let same = made.is_none_or(|m| m.dev == st.st_dev && m.ino == st.st_ino);
        if !is_fifo(&st) || !same {
            return Err(replaced(path));
        }
        Ok(fd)
    }

    /// Makes a FIFO at `path` (directly in the directory) with exactly `mode`
    /// (not filtered by the umask), replacing a stale FIFO left by an earlier
    /// run, and records it. A symlink or anything else at the name is refused.
    pub fn create(&self, path: &Path, mode: u32) -> io::Result<()> {
        let name = name_of(path)?;
        let mode = Mode::from_bits_truncate(mode & 0o7777);
        match fstatat(&self.dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_fifo(&st) => unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir)?,
            Ok(_) => return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a FIFO; remove it or choose another directory or channel name",
            )),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        nix::unistd::mkfifoat(&self.dir, name, mode)?;
        // O_PATH: neither a reader nor a writer, so a reader already waiting in
        // `open` is not released by it.
        let fd = self.open_at(path, OFlag::O_PATH, None)?;
        let st = fstat(&fd)?;
        self.registered().push(Made {
            path: path.to_path_buf(),
            dev: st.st_dev,
            ino: st.st_ino,
        });
        if Mode::from_bits_truncate(st.st_mode) & Mode::from_bits_truncate(0o7777) != mode {
            // The umask took bits away. `fchmod` does not take an `O_PATH`
            // descriptor, but its /proc link names exactly the inode opened
            // (never a symlink planted at the name since).
            let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                link.as_str(),
                mode,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
        }
        Ok(())
    }

    /// Opens the FIFO chute made at `path` for writing, blocking until a reader
    /// opens it (or the stopping side's `O_RDWR` open releases it).
    fn open_for_writing(&self, path: &Path) -> io::Result<OwnedFd> {
        let made = self.made(path).ok_or_else(|| replaced(path))?;
        self.open_at(path, OFlag::O_WRONLY, Some(&made))
    }

    /// Removes a FIFO, first releasing any reader blocked in `open` on it (that
    /// reader then reads EOF). Absent FIFOs are fine; a name that no longer holds
    /// the FIFO chute made is left alone.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        let Some(made) = self.made(path) else {
            return Ok(());
        };
        let guard = self.open_at(path, OFlag::O_RDWR | OFlag::O_NONBLOCK, Some(&made));
        // Gone, or no longer chute's FIFO: nothing of ours to remove.
        let res = match &guard {
            Ok(_) => self.unlink_made(path),
            Err(_) => Ok(()),
        };
        drop(guard);
        self.registered().retain(|m| m.path != path);
        res
    }

    fn unlink_made(&self, path: &Path) -> io::Result<()> {
        match unlinkat(&self.dir, name_of(path)?, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a FIFO that this process still holds open for writing (no reader
    /// can be blocked in `open` on it).
    pub fn unlink(&self, path: &Path) -> io::Result<()> {
        let Some(made) = self.made(path) else {
            return Ok(());
        };
        let name = name_of(path)?;
        let res = match fstatat(&self.dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_dev == made.dev && st.st_ino == made.ino => self.unlink_made(path),
            _ => Ok(()),
        };
        self.registered().retain(|m| m.path != path);
        res
    }

    /// Opens every registered FIFO `O_RDWR` and returns the descriptors: while
    /// held, a writer's `open` on them cannot block.
    pub fn hold_open(&self) -> Vec<OwnedFd> {
        let made: Vec<Made> = self.registered().clone();
        made.iter()
            .filter_map(|m| {
                self.open_at(&m.path, OFlag::O_RDWR | OFlag::O_NONBLOCK, Some(m))
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
    /// Opens the FIFO chute made at `path` for writing, blocking until a reader
    /// opens it or chute stops (the stopping side holds the FIFO open to release
    /// this call). Refuses anything else found at the name.
    pub fn open(path: &Path, stop: Arc<Stop>) -> io::Result<FifoWriter> {
        if stop.is_set() {
            return Err(io::Error::other(Cancelled));
        }
        let file = File::from(stop.open_for_writing(path)?);
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

/// Slices written from where they are rather than gathered by copying: at and
/// above this, a slice given to [`Gather`]'s `write` goes to the pipe directly.
const WRITE_DIRECT: usize = 64 << 10;
/// Pending bytes that trigger a write.
const HIGH_WATER: usize = 1 << 20;
/// Slices per `writev` (Linux allows 1024).
const MAX_IOV: usize = 512;

/// A write buffer in front of the FIFO: fetched chunks are queued by reference
/// and written together with one `writev` once a megabyte is pending (or the
/// writer has nothing else to do), so the reader is woken for big reads. The
/// pipe copies the bytes, so a chunk is free again once its `writev` returns.
pub(crate) struct Gather {
    pub fifo: FifoWriter,
    queue: VecDeque<Bytes>,
    /// Small borrowed writes (record headers, padding), copied together.
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

    /// Queues a chunk without copying it.
    pub fn push(&mut self, chunk: Bytes) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.seal();
        let n = chunk.len();
        self.queue.push_back(chunk);
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
            let written = self.fifo.write_vectored(&slices);
            drop(slices);
            let mut n = written?;
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
        if buf.len() >= WRITE_DIRECT {
            // Large borrowed bytes (decompressed data) go to the pipe from where
            // they are, after what is queued before them.
            self.write_out()?;
            self.fifo.write_all(buf)?;
            return Ok(buf.len());
        }
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
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::time::Duration;

    /// Chunk memory that is overwritten when chute lets go of it, standing in for
    /// an allocator that reuses it at once: a chunk released while anything still
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
        let stop = Stop::new(dir.path()).expect("stop pipe");
        stop.create(&path, 0o600).expect("mkfifo");
        let reader_path = path.clone();
        let reader =
            std::thread::spawn(move || read(File::open(&reader_path).expect("open for reading")));
        let out = Gather::new(FifoWriter::open(&path, stop).expect("open FIFO"));
        (dir, out, reader)
    }

    /// Writes `chunks` through a `Gather` to `read` and returns what it got,
    /// after the `Gather` is dropped (as the writer does at EOF).
    fn through_fifo(
        chunks: Vec<Vec<u8>>,
        read: impl FnOnce(File) -> Vec<u8> + Send + 'static,
    ) -> Vec<u8> {
        let (_dir, mut out, reader) = fifo_with_reader(read);
        for c in chunks {
            out.push(Bytes::from_owner(Poisoned(c))).expect("push");
        }
        out.flush().expect("flush");
        drop(out);
        reader.join().expect("reader thread")
    }

    /// Reads `f` to EOF, slower than the writer writes.
    fn slow_read(mut f: impl Read) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 48 << 10];
        loop {
            std::thread::sleep(Duration::from_micros(200));
            match f.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// A reader in the manner of `pv`: moves (`splice`) or duplicates (`tee`,
    /// then consumes) the FIFO's pages into a pipe of its own, which a second
    /// thread reads slowly, so the pages stay referenced there long after they
    /// left the FIFO.
    fn zero_copy_read(fifo: File, tee: bool) -> Vec<u8> {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        let lagging = std::thread::spawn(move || slow_read(File::from(r)));
        let mut fifo = fifo;
        loop {
            let n = if tee {
                let n = nix::fcntl::tee(&fifo, &w, 64 << 10, nix::fcntl::SpliceFFlags::empty())
                    .expect("tee");
                let mut left = vec![0u8; n];
                fifo.read_exact(&mut left).expect("consume what was teed");
                n
            } else {
                nix::fcntl::splice(
                    &fifo,
                    None,
                    &w,
                    None,
                    64 << 10,
                    nix::fcntl::SpliceFFlags::empty(),
                )
                .expect("splice")
            };
            if n == 0 {
                break;
            }
        }
        drop(w);
        lagging.join().expect("lagging reader")
    }

    fn chunks() -> Vec<Vec<u8>> {
        // Sizes around the page size, not page aligned, so pages are shared
        // between chunks.
        let sizes = [32 << 10, (32 << 10) - 1, 4096, 65_537, 300_000, 1, 40_000];
        (0..400)
            .map(|i| pattern(i, sizes[i % sizes.len()]))
            .collect()
    }

    #[test]
    fn a_slow_reader_gets_exact_bytes() {
        let chunks = chunks();
        let want: Vec<u8> = chunks.concat();
        let got = through_fifo(chunks, slow_read);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the reader saw bytes that were not written");
    }

    #[test]
    fn a_splice_reader_gets_exact_bytes() {
        let chunks = chunks();
        let want: Vec<u8> = chunks.concat();
        let got = through_fifo(chunks, |f| zero_copy_read(f, false));
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "the splice reader saw bytes that were not written"
        );
    }

    #[test]
    fn a_tee_reader_gets_exact_bytes() {
        let chunks = chunks();
        let want: Vec<u8> = chunks.concat();
        let got = through_fifo(chunks, |f| zero_copy_read(f, true));
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "the tee reader saw bytes that were not written"
        );
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
        drop(out);
    }

    #[test]
    fn fifos_get_exactly_their_mode() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stop = Stop::new(dir.path()).expect("stop");
        for mode in [0o600, 0o666, 0o640] {
            let path = dir.path().join(format!("m_{mode:o}"));
            stop.create(&path, mode).expect("mkfifo");
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            assert!(meta.file_type().is_fifo());
            assert_eq!(meta.permissions().mode() & 0o7777, mode);
        }
        stop.remove_all().expect("remove");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    /// A regular file somewhere else, and its mode and contents.
    fn victim(dir: &Path) -> (PathBuf, u32, Vec<u8>) {
        let path = dir.join("victim");
        std::fs::write(&path, b"not chute's to touch").expect("victim");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        (path, 0o640, b"not chute's to touch".to_vec())
    }

    fn untouched(path: &Path, mode: u32, data: &[u8]) {
        let meta = std::fs::metadata(path).expect("victim stat");
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "mode changed");
        assert_eq!(
            std::fs::read(path).expect("victim read"),
            data,
            "written to"
        );
    }

    #[test]
    fn a_symlink_at_the_name_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let other = tempfile::tempdir().expect("other dir");
        let (target, mode, data) = victim(other.path());
        let stop = Stop::new(dir.path()).expect("stop");
        let path = dir.path().join("c_0");
        std::os::unix::fs::symlink(&target, &path).expect("plant symlink");
        let e = stop.create(&path, 0o666).expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        untouched(&target, mode, &data);
        // Nothing was recorded, so cleaning up leaves the symlink and its target.
        stop.remove_all().expect("remove");
        assert!(std::fs::symlink_metadata(&path).is_ok());
        untouched(&target, mode, &data);
    }

    #[test]
    fn a_fifo_replaced_after_creation_is_not_opened() {
        let dir = tempfile::tempdir().expect("temp dir");
        let other = tempfile::tempdir().expect("other dir");
        let (target, mode, data) = victim(other.path());
        let stop = Stop::new(dir.path()).expect("stop");
        let path = dir.path().join("c_1");
        stop.create(&path, 0o600).expect("mkfifo");

        // Replaced by a symlink to a regular file: opening for writing must
        // neither follow it nor write there.
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink(&target, &path).expect("plant symlink");
        let e = FifoWriter::open(&path, stop.clone())
            .err()
            .expect("a symlink is refused");
        assert!(e.to_string().contains("no longer the FIFO"), "{e}");
        untouched(&target, mode, &data);

        // Replaced by another FIFO: not the one chute made either. (Made while
        // chute's still exists, so that it cannot reuse its inode number.)
        std::fs::remove_file(&path).expect("rm");
        stop.create(&path, 0o600).expect("mkfifo again");
        let elsewhere = dir.path().join("other");
        nix::unistd::mkfifo(&elsewhere, Mode::from_bits_truncate(0o600)).expect("other FIFO");
        std::fs::rename(&elsewhere, &path).expect("replace");
        let holder = nix::fcntl::open(&path, OFlag::O_RDWR | OFlag::O_NONBLOCK, Mode::empty())
            .expect("hold the other FIFO");
        let e = FifoWriter::open(&path, stop.clone())
            .err()
            .expect("another FIFO is refused");
        assert!(e.to_string().contains("no longer the FIFO"), "{e}");
        drop(holder);

        // Cleaning up leaves what is not chute's alone.
        stop.remove_all().expect("remove");
        assert!(std::fs::symlink_metadata(&path).is_ok());
        untouched(&target, mode, &data);
    }

    /// Not a test: the throughput of a `Gather` to a reader copying 1 MiB at a
    /// time (`cargo test -p chute-pipe --lib measure_gather -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn measure_gather_throughput() {
        let total: usize = 4 << 30;
        let chunk = vec![0x5au8; 1 << 20];
        for round in 0..3 {
            let (_dir, mut out, reader) = fifo_with_reader(|mut f| {
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0usize;
                loop {
                    match f.read(&mut buf) {
                        Ok(0) => return n,
                        Ok(k) => n += k,
                        Err(e) => panic!("read: {e}"),
                    }
                }
            });
            let t = std::time::Instant::now();
            for _ in 0..(total >> 20) {
                out.push(Bytes::from(chunk.clone())).expect("push");
            }
            out.flush().expect("flush");
            drop(out);
            let n = reader.join().expect("reader");
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(n, total);
            eprintln!("round {round}: {:.0} MB/s", total as f64 / secs / 1e6);
        }
    }
}
