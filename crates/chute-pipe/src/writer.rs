//! The writer thread: takes the fetched parts in order and turns them into one
//! FIFO per epoch — waiting for the reader, decompressing and framing, noticing a
//! reader that leaves early — and reports what each epoch delivered.
//!
//! An item (an object, an inline value) no larger than `hold_limit` is withheld
//! until all of it has arrived, so a reader never sees part of an item that then
//! fails; larger ones stream as their bytes arrive. A gzip item that is withheld
//! is checked whole before any of it is written: decoded into memory when the
//! result fits `decode_limit`, else decoded once to measure and validate it and
//! again to write it.
//!
//! It is a plain thread rather than an async task because every FIFO operation may
//! block for as long as the reader likes (`open` until it comes, `write` until it
//! drains); the stop mechanism in [`crate::fifo`] bounds both.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::write::MultiGzDecoder;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use bytes::Bytes;
use chute_s3::StoreError;

use crate::fetch::{Msg, Part, PartData};
use crate::fifo::{is_cancelled, Cancelled, FifoWriter, Gather, Stop};
use crate::order::ItemSource;
use crate::recordio::{BufferedFramer, KnownLengthFramer};
use crate::{fifo_path, EpochSummary, OnFailure, PipeError, RecordWrapper};

/// Compressed bytes fed to a streaming decoder at a time. Deflate expands a
/// byte to at most about a kilobyte, so this bounds the decoded bytes held
/// between decoder and FIFO to about a megabyte.
const GZ_INPUT_SLICE: usize = 1 << 10;
/// Decoded bytes read at a time when a withheld gzip item is too large to hold
/// decoded.
const GZ_READ: usize = 256 << 10;

pub(crate) struct WriterConfig {
    pub dir: PathBuf,
    pub channel: String,
    pub fifo_mode: u32,
    pub epochs: Option<u64>,
    pub record_wrapper: RecordWrapper,
    pub gunzip: bool,
    /// Longest RecordIO record payload (a parameter only so tests can split).
    pub record_limit: u64,
    /// Items up to this size are withheld until complete.
    pub hold_limit: u64,
    /// Decoded bytes of one gzip item held in memory, at most (a share of the
    /// budget the read-ahead does not use).
    pub decode_limit: u64,
    pub on_failure: OnFailure,
}

/// Why an item could not be streamed.
enum ItemError {
    /// The object is not valid gzip.
    Gunzip(io::Error),
    /// Writing to the FIFO failed (reader gone, stop, I/O error).
    Output(io::Error),
}

enum Framer {
    None,
    Known(KnownLengthFramer),
    Buffered(BufferedFramer),
}

/// Where item bytes go: the FIFO's [`Gather`] takes fetched chunks by reference.
trait Sink: Write {
    fn push(&mut self, chunk: Bytes) -> io::Result<()> {
        self.write_all(&chunk)
    }
}

impl Sink for Gather {
    fn push(&mut self, chunk: Bytes) -> io::Result<()> {
        Gather::push(self, chunk)
    }
}

#[cfg(test)]
impl Sink for Vec<u8> {}

/// The transforms of one streamed item between its fetched bytes and the FIFO.
struct ItemWriter {
    gz: Option<MultiGzDecoder<Vec<u8>>>,
    framer: Framer,
}

impl ItemWriter {
    /// `size` is the payload's length when known (not for a gzip item).
    fn begin(
        cfg: &WriterConfig,
        size: u64,
        gunzip: bool,
        out: &mut impl Write,
    ) -> Result<ItemWriter, ItemError> {
        let gz = gunzip.then(|| MultiGzDecoder::new(Vec::new()));
        let framer = match cfg.record_wrapper {
            RecordWrapper::None => Framer::None,
            // The decoded length is unknown until the end, and the item is too
            // large to hold: continuation records of what memory allows.
            RecordWrapper::RecordIo if gz.is_some() => Framer::Buffered(
                BufferedFramer::with_limit(cfg.record_limit.min(cfg.decode_limit.max(1))),
            ),
            RecordWrapper::RecordIo => Framer::Known(
                KnownLengthFramer::with_limit(size, cfg.record_limit, out)
                    .map_err(ItemError::Output)?,
            ),
        };
        Ok(ItemWriter { gz, framer })
    }

    fn emit(framer: &mut Framer, data: &[u8], out: &mut impl Write) -> Result<(), ItemError> {
        match framer {
            Framer::None => out.write_all(data),
            Framer::Known(f) => f.write(data, out),
            Framer::Buffered(f) => f.write(data, out),
        }
        .map_err(ItemError::Output)
    }

    fn feed(&mut self, data: &Bytes, out: &mut impl Sink) -> Result<(), ItemError> {
        match &mut self.gz {
            // The common case: fetched bytes go out as they are, uncopied.
            None if matches!(self.framer, Framer::None) => {
                out.push(data.clone()).map_err(ItemError::Output)
            }
            None => Self::emit(&mut self.framer, data, out),
            Some(gz) => {
                for slice in data.chunks(GZ_INPUT_SLICE) {
                    gz.write_all(slice).map_err(ItemError::Gunzip)?;
                    let decoded = std::mem::take(gz.get_mut());
                    Self::emit(&mut self.framer, &decoded, out)?;
                    // Hand the allocation back for the next slice.
                    let mut reuse = decoded;
                    reuse.clear();
                    *gz.get_mut() = reuse;
                }
                Ok(())
            }
        }
    }

    fn finish(mut self, out: &mut impl Write) -> Result<(), ItemError> {
        if let Some(mut gz) = self.gz.take() {
            gz.try_finish().map_err(ItemError::Gunzip)?;
            let rest = gz.finish().map_err(ItemError::Gunzip)?;
            Self::emit(&mut self.framer, &rest, out)?;
        }
        match self.framer {
            Framer::None => Ok(()),
            Framer::Known(f) => f.finish().map_err(ItemError::Output),
            Framer::Buffered(f) => f.finish(out).map_err(ItemError::Output),
        }
    }
}

/// Reads a withheld item's chunks as one stream.
struct Chunks<'a> {
    chunks: &'a [Bytes],
    at: usize,
    offset: usize,
}

impl<'a> Chunks<'a> {
    fn new(chunks: &'a [Bytes]) -> Self {
        Chunks {
            chunks,
            at: 0,
            offset: 0,
        }
    }
}

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(chunk) = self.chunks.get(self.at) {
            let rest = &chunk[self.offset..];
            if rest.is_empty() {
                self.at += 1;
                self.offset = 0;
                continue;
            }
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.offset += n;
            return Ok(n);
        }
        Ok(0)
    }
}

fn gz_reader(chunks: &[Bytes]) -> flate2::read::MultiGzDecoder<Chunks<'_>> {
    flate2::read::MultiGzDecoder::new(Chunks::new(chunks))
}

/// Writes a complete gzip item: nothing reaches `out` unless all of it decodes.
fn write_gunzipped(
    cfg: &WriterConfig,
    chunks: &[Bytes],
    out: &mut impl Sink,
) -> Result<(), ItemError> {
    let limit = cfg.decode_limit;
    let mut decoded = Vec::new();
    let mut gz = gz_reader(chunks);
    (&mut gz)
        .take(limit + 1)
        .read_to_end(&mut decoded)
        .map_err(ItemError::Gunzip)?;
    let fits = decoded.len() as u64 <= limit;
    let total = if fits {
        decoded.len() as u64
    } else {
        // Too large to hold decoded: measure (and validate) it, then decode it
        // again on the way out.
        let held = decoded.len() as u64;
        drop(decoded);
        decoded = Vec::new();
        held + io::copy(&mut gz, &mut io::sink()).map_err(ItemError::Gunzip)?
    };
    let mut framer = match cfg.record_wrapper {
        RecordWrapper::None => Framer::None,
        RecordWrapper::RecordIo => Framer::Known(
            KnownLengthFramer::with_limit(total, cfg.record_limit, out)
                .map_err(ItemError::Output)?,
        ),
    };
    if fits {
        match &mut framer {
            Framer::None => out.push(Bytes::from(decoded)).map_err(ItemError::Output)?,
            f => ItemWriter::emit(f, &decoded, out)?,
        }
    } else {
        let mut gz = gz_reader(chunks);
        let mut buf = vec![0u8; GZ_READ];
        loop {
            let n = gz.read(&mut buf).map_err(ItemError::Gunzip)?;
            if n == 0 {
                break;
            }
            ItemWriter::emit(&mut framer, &buf[..n], out)?;
        }
    }
    match framer {
        Framer::Known(f) => f.finish().map_err(ItemError::Output),
        _ => Ok(()),
    }
}

/// The item being written.
enum Pending {
    /// Withheld until its last part: the fetched chunks, and the read-ahead
    /// memory they hold until written.
    Held {
        chunks: Vec<Bytes>,
        _permits: Vec<OwnedSemaphorePermit>,
        size: u64,
        gunzip: bool,
    },
    /// Too large to withhold: written as its bytes arrive.
    Streamed(Box<ItemWriter>),
}

impl Pending {
    fn take(&mut self, data: Bytes, out: &mut Gather) -> Result<(), ItemError> {
        match self {
            Pending::Held { chunks, .. } => {
                if !data.is_empty() {
                    chunks.push(data);
                }
                Ok(())
            }
            Pending::Streamed(w) => w.feed(&data, out),
        }
    }

    fn finish(self, cfg: &WriterConfig, out: &mut Gather) -> Result<(), ItemError> {
        match self {
            Pending::Streamed(w) => w.finish(out),
            Pending::Held {
                chunks,
                gunzip: true,
                ..
            } => write_gunzipped(cfg, &chunks, out),
            Pending::Held { chunks, size, .. } => {
                let mut w = ItemWriter::begin(cfg, size, false, out)?;
                for c in &chunks {
                    w.feed(c, out)?;
                }
                w.finish(out)
            }
        }
    }
}

/// One epoch being streamed to a reader.
struct Open {
    epoch: u64,
    path: PathBuf,
    out: Gather,
    item: Option<Pending>,
    summary: EpochSummary,
    opened: Instant,
}

enum State {
    /// Between epochs.
    Idle,
    Streaming(Box<Open>),
    /// The reader left this epoch; its remaining parts are dropped.
    Discarding {
        epoch: u64,
    },
}

pub(crate) struct Writer {
    cfg: WriterConfig,
    rx: UnboundedReceiver<Msg>,
    stop: Arc<Stop>,
    skip_below: Arc<AtomicU64>,
    /// Tells the owner of a failure the moment it happens.
    report: Box<dyn Fn(Arc<PipeError>) + Send>,
    /// Ends the read-ahead once an epoch has failed.
    fetch_stop: CancellationToken,
    pub summaries: Vec<EpochSummary>,
}

/// How the writer ended without an error.
pub(crate) enum Ended {
    AllEpochs,
    Stopped,
}

impl Writer {
    pub fn new(
        cfg: WriterConfig,
        rx: UnboundedReceiver<Msg>,
        stop: Arc<Stop>,
        skip_below: Arc<AtomicU64>,
        report: Box<dyn Fn(Arc<PipeError>) + Send>,
        fetch_stop: CancellationToken,
    ) -> Writer {
        Writer {
            cfg,
            rx,
            stop,
            skip_below,
            report,
            fetch_stop,
            summaries: Vec::new(),
        }
    }

    fn has_next_epoch(&self, epoch: u64) -> bool {
        self.cfg.epochs.is_none_or(|n| epoch + 1 < n)
    }

    fn fifo_err(path: &std::path::Path, source: io::Error) -> PipeError {
        PipeError::Fifo {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn run(&mut self) -> Result<Ended, PipeError> {
        let mut state = State::Idle;
        loop {
            let msg = match self.rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) => {
                    // Nothing more is ready: let the reader have what is gathered
                    // instead of holding it until the buffer fills.
                    if let State::Streaming(open) = &mut state {
                        if let Err(e) = open.out.flush() {
                            state = self.output_failed(state, e)?;
                            if self.stop.is_set() {
                                return Ok(Ended::Stopped);
                            }
                            continue;
                        }
                    }
                    self.rx.blocking_recv()
                }
            };
            if self.stop.is_set() {
                return Ok(Ended::Stopped);
            }
            let Some(msg) = msg else {
                // The fetch side only stops early when chute is stopping.
                return if self.stop.is_set() {
                    Ok(Ended::Stopped)
                } else {
                    Err(PipeError::Internal(
                        "the read-ahead task ended before the last epoch".into(),
                    ))
                };
            };
            state = match (state, msg) {
                (State::Idle, Msg::EpochStart { epoch, items }) => {
                    match self.open_epoch(epoch, items)? {
                        Some(open) => State::Streaming(Box::new(open)),
                        None => return Ok(Ended::Stopped),
                    }
                }
                (State::Streaming(mut open), Msg::Part(part)) if part.epoch == open.epoch => {
                    match self.write_part(&mut open, part) {
                        Ok(()) => State::Streaming(open),
                        Err(ItemError::Output(e)) => {
                            self.output_failed(State::Streaming(open), e)?
                        }
                        Err(ItemError::Gunzip(source)) => {
                            let s = &open.summary;
                            let error = PipeError::Gunzip {
                                epoch: s.epoch,
                                label: s.failed_at.clone().unwrap_or_default(),
                                records_written: s.records_written,
                                source,
                            };
                            return Err(self.fail(open, error));
                        }
                    }
                }
                (State::Streaming(open), Msg::EpochEnd { epoch }) if epoch == open.epoch => {
                    self.close_epoch(*open)?;
                    if !self.has_next_epoch(epoch) {
                        return Ok(Ended::AllEpochs);
                    }
                    State::Idle
                }
                (State::Discarding { epoch }, Msg::Part(p)) if p.epoch == epoch => {
                    State::Discarding { epoch }
                }
                (State::Discarding { epoch }, Msg::EpochEnd { epoch: e }) if e == epoch => {
                    if !self.has_next_epoch(epoch) {
                        return Ok(Ended::AllEpochs);
                    }
                    State::Idle
                }
                _ => {
                    return Err(PipeError::Internal(
                        "read-ahead messages arrived out of order".into(),
                    ))
                }
            };
        }
    }

    /// Waits for a reader on the epoch's FIFO. `None` when stopped meanwhile.
    fn open_epoch(&mut self, epoch: u64, items: usize) -> Result<Option<Open>, PipeError> {
        let path = fifo_path(&self.cfg.dir, &self.cfg.channel, epoch);
        if !self.stop.fifos().contains(&path) {
            self.stop
                .create(&path, self.cfg.fifo_mode)
                .map_err(|e| Self::fifo_err(&path, e))?;
        }
        tracing::info!(
            "{} is ready (epoch {epoch}, {items} records); waiting for a reader",
            path.display()
        );
        let t = Instant::now();
        let writer = match FifoWriter::open(&path, self.stop.clone()) {
            Ok(w) => w,
            Err(e) if is_cancelled(&e) => return Ok(None),
            Err(e) => return Err(Self::fifo_err(&path, e)),
        };
        let waited = t.elapsed();
        tracing::info!(
            "a reader opened {}; streaming epoch {epoch}",
            path.display()
        );
        Ok(Some(Open {
            epoch,
            path,
            out: Gather::new(writer),
            item: None,
            summary: EpochSummary {
                epoch,
                records: items,
                records_written: 0,
                bytes: 0,
                complete: false,
                waited_for_reader: waited,
                streaming: Duration::ZERO,
                failed_at: None,
            },
            opened: Instant::now(),
        }))
    }

    fn write_part(&mut self, open: &mut Open, mut part: Part) -> Result<(), ItemError> {
        open.summary.failed_at = Some(part.item.label.clone());
        let fetch_failed = |source: Option<StoreError>| {
            // Not an output problem: the epoch fails; `output_failed` turns this
            // into the error.
            ItemError::Output(io::Error::other(FetchFailed {
                source,
                index: part.index,
            }))
        };
        if part.first {
            let gunzip = self.cfg.gunzip && matches!(part.item.source, ItemSource::Object { .. });
            open.item = Some(if part.size <= self.cfg.hold_limit {
                Pending::Held {
                    chunks: Vec::new(),
                    _permits: Vec::new(),
                    size: part.size,
                    gunzip,
                }
            } else {
                Pending::Streamed(Box::new(ItemWriter::begin(
                    &self.cfg,
                    part.size,
                    gunzip,
                    &mut open.out,
                )?))
            });
        }
        let Some(item) = open.item.as_mut() else {
            return Err(ItemError::Output(io::Error::other(
                "a part arrived without the start of its record",
            )));
        };
        let ready = PartData::Ready(Ok(Bytes::new()));
        match std::mem::replace(&mut part.data, ready) {
            PartData::Ready(Ok(data)) => item.take(data, &mut open.out)?,
            PartData::Ready(Err(source)) => return Err(fetch_failed(Some(source))),
            PartData::Stream {
                mut chunks,
                len,
                permit,
            } => {
                let mut got = 0u64;
                loop {
                    let chunk = match chunks.try_recv() {
                        Ok(c) => Some(c),
                        Err(TryRecvError::Disconnected) => None,
                        Err(TryRecvError::Empty) => {
                            // The reader gets what is here while the rest is fetched.
                            open.out.flush().map_err(ItemError::Output)?;
                            chunks.blocking_recv()
                        }
                    };
                    match chunk {
                        Some(Ok(data)) => {
                            got += data.len() as u64;
                            item.take(data, &mut open.out)?;
                        }
                        Some(Err(source)) => return Err(fetch_failed(Some(source))),
                        None if got == len => break,
                        None if self.stop.is_set() => {
                            return Err(ItemError::Output(io::Error::other(Cancelled)))
                        }
                        None => return Err(fetch_failed(None)),
                    }
                }
                if let Pending::Held {
                    _permits: permits, ..
                } = item
                {
                    // The bytes stay in memory until written: so does their claim.
                    permits.push(permit);
                }
            }
        }
        if part.last {
            if let Some(item) = open.item.take() {
                item.finish(&self.cfg, &mut open.out)?;
            }
            open.summary.records_written += 1;
        }
        Ok(())
    }

    /// A write failed: the reader left (the epoch ends early), chute is stopping,
    /// a fetch failed, or the FIFO broke.
    fn output_failed(&mut self, state: State, mut e: io::Error) -> Result<State, PipeError> {
        let State::Streaming(mut open) = state else {
            return Ok(state);
        };
        if is_cancelled(&e) {
            self.record(&mut open);
            self.summaries.push(open.summary.clone());
            return Ok(State::Idle);
        }
        if let Some(failed) = e
            .get_mut()
            .and_then(|inner| inner.downcast_mut::<FetchFailed>())
        {
            let index = failed.index;
            let source = failed.source.take();
            self.record(&mut open);
            let summary = &open.summary;
            let label = summary.failed_at.clone().unwrap_or_default();
            let error = match source {
                Some(source) => PipeError::Object {
                    epoch: summary.epoch,
                    label,
                    record: index + 1,
                    records: summary.records,
                    bytes: summary.bytes,
                    source,
                },
                None => PipeError::Internal(format!(
                    "epoch {} failed at {label}: its GET ended early without an error",
                    summary.epoch
                )),
            };
            return Err(self.fail(open, error));
        }
        if e.kind() == io::ErrorKind::BrokenPipe {
            self.record(&mut open);
            let epoch = open.epoch;
            let s = &open.summary;
            self.skip_below.fetch_max(epoch + 1, Ordering::SeqCst);
            let next = if self.has_next_epoch(epoch) {
                format!(
                    "; {} is next",
                    fifo_path(&self.cfg.dir, &self.cfg.channel, epoch + 1).display()
                )
            } else {
                String::new()
            };
            tracing::warn!(
                "the reader closed {} early, after {} bytes and {} of {} records had been written; epoch {epoch} ends here{next}",
                open.path.display(),
                s.bytes,
                s.records_written,
                s.records,
            );
            self.finish_fifo(*open)?;
            return Ok(State::Discarding { epoch });
        }
        let path = open.path.clone();
        self.record(&mut open);
        self.summaries.push(open.summary.clone());
        Err(PipeError::Write { path, source: e })
    }

    /// The epoch failed: tells the owner at once, gives the reader the whole
    /// items before the failed one, then either closes the FIFO (the reader sees
    /// EOF) or keeps it open without EOF until the pipe is stopped, as
    /// configured. Returns the error, shared with the report.
    fn fail(&mut self, mut open: Box<Open>, error: PipeError) -> PipeError {
        // A withheld item's bytes (and their memory) go now, unwritten.
        open.item = None;
        let shared = Arc::new(error);
        (self.report)(shared.clone());
        self.fetch_stop.cancel();
        let _ = open.out.flush();
        self.record(&mut open);
        self.summaries.push(open.summary.clone());
        if self.cfg.on_failure == OnFailure::Hold {
            tracing::info!(
                "holding {} open without EOF until the pipe is stopped",
                open.path.display()
            );
            self.stop.wait();
        }
        drop(open);
        PipeError::Failed(shared)
    }

    fn record(&mut self, open: &mut Open) {
        open.summary.bytes = open.out.fifo.written;
        open.summary.streaming = open.opened.elapsed();
    }

    /// All of the epoch went to the reader: flush, and move on.
    fn close_epoch(&mut self, mut open: Open) -> Result<(), PipeError> {
        if let Err(e) = open.out.flush() {
            let epoch = open.epoch;
            return match self.output_failed(State::Streaming(Box::new(open)), e)? {
                State::Discarding { .. } | State::Idle => Ok(()),
                State::Streaming(_) => Err(PipeError::Internal(format!(
                    "epoch {epoch} could not be closed"
                ))),
            };
        }
        self.record(&mut open);
        open.summary.complete = true;
        open.summary.failed_at = None;
        let s = &open.summary;
        let secs = s.streaming.as_secs_f64();
        tracing::info!(
            "epoch {} done ({}): {} records, {} bytes in {:.2}s ({:.0} MB/s, {} writes)",
            s.epoch,
            open.path.display(),
            s.records_written,
            s.bytes,
            secs,
            s.bytes as f64 / secs.max(1e-9) / 1e6,
            open.out.fifo.writes
        );
        self.finish_fifo(open)
    }

    /// Creates the next epoch's FIFO *before* the reader sees EOF on this one
    /// (so a reader moving straight on finds it), then closes and removes this one.
    fn finish_fifo(&mut self, open: Open) -> Result<(), PipeError> {
        let Open {
            epoch,
            path,
            out,
            summary,
            ..
        } = open;
        let mut result = Ok(());
        if self.has_next_epoch(epoch) && !self.stop.is_set() {
            let next = fifo_path(&self.cfg.dir, &self.cfg.channel, epoch + 1);
            result = self
                .stop
                .create(&next, self.cfg.fifo_mode)
                .map_err(|e| Self::fifo_err(&next, e));
        }
        // Unlinked while still open for writing, so no reader can be caught
        // opening it after the close.
        let unlinked = self.stop.unlink(&path);
        // Whatever is still buffered goes nowhere: the reader left or the data
        // was all flushed already.
        drop(out);
        self.summaries.push(summary);
        unlinked.map_err(|e| Self::fifo_err(&path, e))?;
        result
    }
}

/// A fetch error carried through the write path, to end the epoch in one place.
#[derive(Debug)]
struct FetchFailed {
    source: Option<chute_s3::StoreError>,
    index: usize,
}

impl std::fmt::Display for FetchFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record {} could not be fetched", self.index + 1)
    }
}

impl std::error::Error for FetchFailed {}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gunzip(input: &[u8], slice: usize) -> Result<Vec<u8>, ItemError> {
        let mut w = ItemWriter {
            gz: Some(MultiGzDecoder::new(Vec::new())),
            framer: Framer::None,
        };
        let mut out = Vec::new();
        for c in input.chunks(slice) {
            w.feed(&Bytes::copy_from_slice(c), &mut out)?;
        }
        w.finish(&mut out)?;
        Ok(out)
    }

    fn cfg(record_wrapper: RecordWrapper, decode_limit: u64) -> WriterConfig {
        WriterConfig {
            dir: PathBuf::from("/nonexistent"),
            channel: "c".into(),
            fifo_mode: 0o600,
            epochs: Some(1),
            record_wrapper,
            gunzip: true,
            record_limit: crate::recordio::MAX_RECORD_LEN,
            hold_limit: 1 << 20,
            decode_limit,
            on_failure: OnFailure::Close,
        }
    }

    fn framed(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut f = KnownLengthFramer::begin(data.len() as u64, &mut out).unwrap();
        f.write(data, &mut out).unwrap();
        f.finish().unwrap();
        out
    }

    /// A withheld gzip item's chunks, split unevenly.
    fn held(gz: &[u8]) -> Vec<Bytes> {
        gz.chunks(1000).map(Bytes::copy_from_slice).collect()
    }

    #[test]
    fn withheld_gzip_is_written_whole_or_not_at_all() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let whole = gz(&data);
        // Held decoded in memory, and (a limit below its size) decoded twice.
        for limit in [16 << 20, 1000, 0] {
            let mut out = Vec::new();
            write_gunzipped(&cfg(RecordWrapper::None, limit), &held(&whole), &mut out)
                .ok()
                .expect("decodes");
            assert!(out == data, "limit {limit}");
            let mut out = Vec::new();
            write_gunzipped(
                &cfg(RecordWrapper::RecordIo, limit),
                &held(&whole),
                &mut out,
            )
            .ok()
            .expect("decodes");
            assert!(out == framed(&data), "limit {limit}: one record");
        }
        // Damage anywhere, even in the trailer: nothing is written.
        for bad in [
            &whole[..whole.len() - 4],
            &whole[..whole.len() / 2],
            b"not gzip",
        ] {
            for limit in [16 << 20, 1000] {
                for wrapper in [RecordWrapper::None, RecordWrapper::RecordIo] {
                    let mut out = Vec::new();
                    let r = write_gunzipped(&cfg(wrapper, limit), &held(bad), &mut out);
                    assert!(matches!(r, Err(ItemError::Gunzip(_))));
                    assert!(out.is_empty(), "{} bytes written", out.len());
                }
            }
        }
    }

    #[test]
    fn streamed_gzip_recordio_holds_at_most_the_decode_limit() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let whole = gz(&data);
        let cfg = cfg(RecordWrapper::RecordIo, 64 << 10);
        let mut out = Vec::new();
        let mut w = ItemWriter::begin(&cfg, whole.len() as u64, true, &mut out)
            .ok()
            .expect("begin");
        for c in whole.chunks(5000) {
            w.feed(&Bytes::copy_from_slice(c), &mut out)
                .ok()
                .expect("feed");
        }
        w.finish(&mut out).ok().expect("finish");
        // Continuation records of 64 KiB payloads, joined back to the data.
        let mut rest = &out[..];
        let mut joined = Vec::new();
        let mut records = 0;
        while !rest.is_empty() {
            let word = u32::from_le_bytes(rest[4..8].try_into().unwrap());
            let len = (word & 0x1fff_ffff) as usize;
            assert!(len <= 64 << 10);
            joined.extend_from_slice(&rest[8..8 + len]);
            rest = &rest[8 + len + crate::recordio::padding(len as u64).len()..];
            records += 1;
        }
        assert_eq!(records, data.len().div_ceil(64 << 10));
        assert!(joined == data);
    }

    #[test]
    fn gzip_members_decode_and_damage_is_detected() {
        let a: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut two = gz(&a[..1000]);
        two.extend(gz(&a[1000..]));
        for slice in [1, 777, 1 << 20] {
            assert_eq!(gunzip(&gz(&a), slice).ok(), Some(a.clone()));
            assert_eq!(gunzip(&two, slice).ok(), Some(a.clone()));
        }
        let whole = gz(&a);
        assert!(matches!(
            gunzip(&whole[..whole.len() - 10], 4096),
            Err(ItemError::Gunzip(_))
        ));
        assert!(matches!(
            gunzip(&whole[..whole.len() / 2], 4096),
            Err(ItemError::Gunzip(_))
        ));
        assert!(matches!(
            gunzip(b"not gzip at all", 4096),
            Err(ItemError::Gunzip(_))
        ));
        assert!(matches!(gunzip(b"", 4096), Err(ItemError::Gunzip(_))));
    }
}
