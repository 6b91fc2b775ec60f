//! A directory as a tar.gz stream compressed on every core, fed straight into an
//! [`ObjectUpload`].
//!
//! One blocking thread walks the directory and writes the tar stream; every
//! `chunk_size` bytes of it become an independent gzip member, compressed on a
//! pool of `threads` workers; the members are appended to the upload in order. A
//! concatenation of gzip members is itself a valid gzip file (RFC 1952, section
//! 2.2): `tar -xzf`, `gunzip`, Python's `tarfile`/`gzip` read it as one stream.
//! (A reader built on flate2 needs `MultiGzDecoder`, not `GzDecoder`, which stops
//! after the first member.) Each member restarts the 32 KiB deflate window, which
//! on multi-MiB chunks costs a negligible fraction of the ratio.
//!
//! Memory is bounded: the tar thread waits for a free worker before it hands over
//! a chunk, and at most `2 * threads` compressed chunks wait for the upload.
//!
//! What goes into the archive: regular files, directories (so empty ones survive)
//! and symbolic links stored as links (their targets are not followed, as
//! `tar` and Python's `tarfile` do by default), with their modes and times. Other
//! kinds (FIFOs, sockets, devices) are skipped with a warning. Paths are relative
//! to the directory, without a leading `./`, in sorted order.

use std::fs::{File, Metadata};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use flate2::write::GzEncoder;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::object::ObjectUpload;
use crate::UploadError;

/// How the stream is compressed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GzipSettings {
    pub chunk_size: usize,
    pub threads: usize,
    pub level: u32,
}

/// What went into an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file content archived (before tar framing and compression).
    pub content_bytes: u64,
    /// FIFOs, sockets and devices left out.
    pub skipped: u64,
}

type Member = JoinHandle<io::Result<Bytes>>;

/// Archives `dir` into `upload`. A `dir` that does not exist gives an empty
/// archive (with a warning), as an empty one does.
pub(crate) async fn tar_gz_into(
    dir: &Path,
    upload: &mut ObjectUpload,
    gz: GzipSettings,
) -> Result<ArchiveStats, UploadError> {
    let threads = gz.threads.max(1);
    let (tx, mut rx) = mpsc::channel::<Member>(threads * 2);
    let sink = GzipChunks {
        buf: Vec::with_capacity(gz.chunk_size),
        chunk_size: gz.chunk_size.max(64 << 10),
        level: gz.level,
        workers: Arc::new(Semaphore::new(threads)),
        rt: Handle::current(),
        tx,
    };
    let root = dir.to_path_buf();
    let producer = tokio::task::spawn_blocking(move || write_archive(&root, sink));

    let mut upload_error = None;
    while let Some(member) = rx.recv().await {
        let bytes = match member.await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                upload_error = Some(UploadError::Internal(format!("gzip failed: {e}")));
                break;
            }
            Err(e) => {
                upload_error = Some(UploadError::Internal(format!("a gzip worker failed: {e}")));
                break;
            }
        };
        if let Err(e) = upload.write(bytes).await {
            upload_error = Some(e);
            break;
        }
    }
    // Closing the receiver stops the tar thread at its next chunk.
    drop(rx);
    let produced = producer
        .await
        .map_err(|e| UploadError::Internal(format!("the tar thread failed: {e}")));
    match upload_error {
        Some(e) => Err(e),
        None => produced?,
    }
}

fn write_archive(root: &Path, sink: GzipChunks) -> Result<ArchiveStats, UploadError> {
    let mut stats = ArchiveStats::default();
    let mut builder = tar::Builder::new(sink);
    builder.follow_symlinks(false);
    match std::fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => add_children(&mut builder, root, Path::new(""), &mut stats)?,
        Ok(_) => {
            return Err(UploadError::read(
                root,
                io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(dir = %root.display(), "directory to archive does not exist; uploading an empty archive");
        }
        Err(e) => return Err(UploadError::read(root, e)),
    }
    let mut sink = builder.into_inner().map_err(|e| sink_error(root, e))?;
    sink.send_chunk().map_err(|e| sink_error(root, e))?;
    Ok(stats)
}

/// An error writing the archive: the upload side stopped (its own error is the
/// one reported), or a file could not be read.
fn sink_error(path: &Path, e: io::Error) -> UploadError {
    UploadError::read(path, e)
}

fn sorted_children(dir: &Path) -> Result<Vec<(std::ffi::OsString, PathBuf)>, UploadError> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| UploadError::read(dir, e))? {
        let entry = entry.map_err(|e| UploadError::read(dir, e))?;
        children.push((entry.file_name(), entry.path()));
    }
    children.sort();
    Ok(children)
}

fn add_children(
    builder: &mut tar::Builder<GzipChunks>,
    dir: &Path,
    rel: &Path,
    stats: &mut ArchiveStats,
) -> Result<(), UploadError> {
    for (name, path) in sorted_children(dir)? {
        let rel = rel.join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| UploadError::read(&path, e))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut header = header_for(&meta);
            builder
                .append_data(&mut header, &rel, io::empty())
                .map_err(|e| sink_error(&path, e))?;
            stats.dirs += 1;
            add_children(builder, &path, &rel, stats)?;
        } else if ft.is_file() {
            add_file(builder, &path, &rel, &meta)?;
            stats.files += 1;
            stats.content_bytes += meta.len();
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| UploadError::read(&path, e))?;
            let mut header = header_for(&meta);
            header.set_size(0);
            builder
                .append_link(&mut header, &rel, &target)
                .map_err(|e| sink_error(&path, e))?;
            stats.symlinks += 1;
        } else {
            tracing::warn!(path = %path.display(), "not a regular file, directory or symbolic link; left out of the archive");
            stats.skipped += 1;
        }
    }
    Ok(())
}

fn header_for(meta: &Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header
}

fn add_file(
    builder: &mut tar::Builder<GzipChunks>,
    path: &Path,
    rel: &Path,
    meta: &Metadata,
) -> Result<(), UploadError> {
    let file = File::open(path).map_err(|e| UploadError::read(path, e))?;
    let mut header = header_for(meta);
    let reader = ExactLen {
        inner: BufReader::with_capacity(1 << 20, file),
        remaining: meta.len(),
    };
    builder
        .append_data(&mut header, rel, reader)
        .map_err(|e| sink_error(path, e))
}

/// A file's content cut or checked to the size its header announced, so a file
/// that changes while it is archived cannot corrupt the archive: growth is left
/// out, a shrink is an error.
struct ExactLen<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file shrank while it was archived ({} bytes missing)",
                    self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// The tar stream's sink: cuts it into chunks and hands each to a gzip worker.
struct GzipChunks {
    buf: Vec<u8>,
    chunk_size: usize,
    level: u32,
    workers: Arc<Semaphore>,
    rt: Handle,
    tx: mpsc::Sender<Member>,
}

impl GzipChunks {
    fn send_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk_size));
        let permit = self
            .rt
            .block_on(self.workers.clone().acquire_owned())
            .map_err(|_| stopped())?;
        let level = self.level;
        let member = self.rt.spawn_blocking(move || {
            let out = gzip_member(&chunk, level);
            drop(permit);
            out
        });
        self.tx.blocking_send(member).map_err(|_| stopped())
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped")
}

impl Write for GzipChunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= self.chunk_size {
            self.send_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One complete gzip member.
fn gzip_member(data: &[u8], level: u32) -> io::Result<Bytes> {
    let out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    let mut enc = GzEncoder::new(out, flate2::Compression::new(level));
    enc.write_all(data)?;
    Ok(Bytes::from(enc.finish()?))
}
