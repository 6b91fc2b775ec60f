//! Streaming a byte range of an open file as a response body, fast.
//!
//! s3s-fs streams through a 4 KiB `ReaderStream`, which caps a single GET at roughly
//! 170 MB/s. Here one blocking-pool thread per response reads large chunks with
//! positional reads and hands them over a small bounded channel: the disk read of the
//! next chunk overlaps the socket write of the previous one, the bound keeps memory per
//! response at a few MiB, and a client that goes away closes the channel, which stops
//! the reader.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use s3s::stream::{ByteStream, RemainingLength};
use s3s::StdError;
use tokio::sync::mpsc;

/// Bytes per chunk handed to hyper.
const CHUNK: usize = 1 << 20;

/// Chunks read ahead of the socket.
const READ_AHEAD: usize = 4;

/// The bytes `[start, start + len)` of `file`, as a stream of large chunks.
pub(crate) struct FileBody {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl FileBody {
    /// Starts reading at once on the blocking pool; must be called within a tokio
    /// runtime.
    pub(crate) fn spawn(file: Arc<File>, start: u64, len: u64) -> Self {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::task::spawn_blocking(move || read_range(&file, start, len, &tx));
        FileBody {
            chunks: rx,
            remaining: len,
        }
    }
}

fn read_range(file: &File, start: u64, len: u64, tx: &mpsc::Sender<io::Result<Bytes>>) {
    let mut offset = start;
    let end = start.saturating_add(len);
    while offset < end {
        let want = usize::try_from(end - offset).map_or(CHUNK, |left| left.min(CHUNK));
        let mut buf = BytesMut::zeroed(want);
        let chunk = match file.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf.freeze()),
            // The file shrank after the headers promised `len` bytes; failing the body
            // makes hyper cut the connection, so the client sees a short read instead
            // of silently wrong data.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file was truncated while it was being served",
            )),
            Err(e) => Err(e),
        };
        let failed = chunk.is_err();
        if tx.blocking_send(chunk).is_err() || failed {
            // Either the response was dropped (client gone) or we just reported an
            // error; in both cases there is nobody left to read for.
            return;
        }
        offset += want as u64;
    }
}

impl FileBody {
    fn remaining_usize(&self) -> usize {
        usize::try_from(self.remaining).unwrap_or(usize::MAX)
    }
}

impl Stream for FileBody {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.chunks.poll_recv(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &next {
            self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
        }
        next.map(|item| item.map(|chunk| chunk.map_err(|e| Box::new(e) as StdError)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining_usize();
        (n, Some(n))
    }
}

impl ByteStream for FileBody {
    // An exact length lets hyper send a plain Content-Length body rather than
    // falling back to chunked encoding.
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(self.remaining_usize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn streams_exactly_the_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(2 * CHUNK + 123)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let file = Arc::new(File::open(&path).expect("open"));

        for (start, len) in [(0, data.len()), (5, CHUNK), (CHUNK - 1, CHUNK + 2), (17, 0)] {
            let mut body = FileBody::spawn(Arc::clone(&file), start as u64, len as u64);
            assert_eq!(body.size_hint(), (len, Some(len)));
            let mut got = Vec::new();
            while let Some(chunk) = body.next().await {
                got.extend_from_slice(&chunk.expect("chunk"));
            }
            assert_eq!(got, &data[start..start + len]);
            assert_eq!(body.size_hint().0, 0);
        }
    }

    #[tokio::test]
    async fn truncation_is_an_error_not_short_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 100]).expect("write");
        let file = Arc::new(File::open(&path).expect("open"));
        let mut body = FileBody::spawn(file, 50, 100);
        let first = body.next().await.expect("one item");
        assert!(first.is_err());
        assert!(body.next().await.is_none());
    }
}
