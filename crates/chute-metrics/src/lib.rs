//! The metrics endpoint: every channel's counters in the Prometheus text
//! exposition format, served at `GET /metrics` by a small HTTP listener.
//!
//! The modes already count what they do (the S3 client's [`chute_s3::Stats`],
//! a mount's [`chute_fastfile::MountSummary`]) for their periodic log lines;
//! this crate only reads those counters when scraped, so a process without a
//! listener pays nothing but the registration. One process-wide [`Registry`]
//! ([`global`]) lets each mode register its channel with one call, however
//! deep in `chute run` the channel is brought up.
//!
//! The listener speaks just enough HTTP/1.1 for a scraper (one request per
//! connection, then close); it is not a general web server and serves nothing
//! but the counters.

mod http;
mod text;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use chute_fastfile::MountSummary;
use chute_s3::{RetryCause, Stats};

pub use http::{serve, MetricsError, Server};
pub use text::render;

/// A metric family: its name, type and help line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    S3Requests,
    BytesFetched,
    Retries,
    Failures,
    BytesServed,
    Reads,
    CacheHits,
    CacheWaits,
    CacheMisses,
    DiskCacheBytes,
    ReadaheadBytes,
    ReadaheadWasted,
    Errors,
    CachePeakBytes,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::S3Requests => "chute_s3_requests_total",
            Family::BytesFetched => "chute_bytes_fetched_total",
            Family::Retries => "chute_s3_retries_total",
            Family::Failures => "chute_s3_failures_total",
            Family::BytesServed => "chute_bytes_served_total",
            Family::Reads => "chute_reads_total",
            Family::CacheHits => "chute_cache_hits_total",
            Family::CacheWaits => "chute_cache_waits_total",
            Family::CacheMisses => "chute_cache_misses_total",
            Family::DiskCacheBytes => "chute_disk_cache_bytes_total",
            Family::ReadaheadBytes => "chute_readahead_bytes_total",
            Family::ReadaheadWasted => "chute_readahead_wasted_blocks_total",
            Family::Errors => "chute_errors_total",
            Family::CachePeakBytes => "chute_cache_peak_bytes",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Family::S3Requests => "S3 requests sent, by operation (get, head, list).",
            Family::BytesFetched => "Bytes received from the object store.",
            Family::Retries => "Requests and reads retried, by cause.",
            Family::Failures => "Requests and reads that failed after their retries.",
            Family::BytesServed => "Bytes handed to readers of the FastFile mount.",
            Family::Reads => "FUSE read requests answered.",
            Family::CacheHits => "256 KiB blocks a read found ready in memory.",
            Family::CacheWaits => "Blocks a read found in flight (fetched ahead, not yet arrived).",
            Family::CacheMisses => "Blocks a read had to fetch itself.",
            Family::DiskCacheBytes => "Bytes read from the disk cache instead of the store.",
            Family::ReadaheadBytes => "Bytes fetched ahead of any reader (read-ahead admitted).",
            Family::ReadaheadWasted => "Read-ahead blocks evicted before any reader used them.",
            Family::Errors => "Reads answered with an error (EIO, ESTALE).",
            Family::CachePeakBytes => "Most bytes the block cache has held at once.",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Family::CachePeakBytes => "gauge",
            _ => "counter",
        }
    }
}

/// One value of a family, with its labels besides `channel`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub family: Family,
    pub labels: Vec<(&'static str, &'static str)>,
    pub value: u64,
}

impl Sample {
    pub fn new(family: Family, value: u64) -> Sample {
        Sample {
            family,
            labels: Vec::new(),
            value,
        }
    }

    pub fn with(mut self, name: &'static str, value: &'static str) -> Sample {
        self.labels.push((name, value));
        self
    }
}

/// Something that reports counters of one channel when scraped.
pub trait Source: Send + Sync {
    fn collect(&self, out: &mut Vec<Sample>);
}

impl<F> Source for F
where
    F: Fn(&mut Vec<Sample>) + Send + Sync,
{
    fn collect(&self, out: &mut Vec<Sample>) {
        self(out)
    }
}

/// The S3 client's counters: requests by operation, bytes, retries by cause.
impl Source for Stats {
    fn collect(&self, out: &mut Vec<Sample>) {
        let s = self.snapshot();
        out.push(Sample::new(Family::S3Requests, s.get_requests).with("op", "get"));
        out.push(Sample::new(Family::S3Requests, s.head_requests).with("op", "head"));
        out.push(Sample::new(Family::S3Requests, s.list_requests).with("op", "list"));
        out.push(Sample::new(Family::BytesFetched, s.bytes_received));
        for cause in RetryCause::ALL {
            let n = s.retries_by_cause[cause as usize];
            out.push(Sample::new(Family::Retries, n).with("cause", cause.label()));
        }
        out.push(Sample::new(Family::Failures, s.failures));
    }
}

/// What a FastFile mount did with the bytes (its S3 side comes from the client).
pub fn mount_samples(m: &MountSummary, out: &mut Vec<Sample>) {
    out.extend([
        Sample::new(Family::BytesServed, m.bytes_served),
        Sample::new(Family::Reads, m.reads),
        Sample::new(Family::CacheHits, m.block_hits),
        Sample::new(Family::CacheWaits, m.block_waits),
        Sample::new(Family::CacheMisses, m.block_misses),
        Sample::new(Family::DiskCacheBytes, m.bytes_disk),
        Sample::new(Family::ReadaheadBytes, m.bytes_prefetched),
        Sample::new(Family::ReadaheadWasted, m.wasted_blocks),
        Sample::new(Family::Errors, m.errors),
        Sample::new(Family::CachePeakBytes, m.peak_cache_bytes),
    ]);
}

/// The channels whose counters a scrape reports.
#[derive(Default)]
pub struct Registry {
    sources: Mutex<Vec<(String, Arc<dyn Source>)>>,
}

impl Registry {
    /// Reports `source` under `channel` from now on. A channel may have several
    /// sources (its client, its mount); their families must not overlap.
    pub fn add(&self, channel: &str, source: Arc<dyn Source>) {
        if let Ok(mut sources) = self.sources.lock() {
            sources.push((channel.to_owned(), source));
        }
    }

    /// Reports the S3 client counters `stats` under `channel`.
    pub fn add_client(&self, channel: &str, stats: Arc<Stats>) {
        self.add(channel, stats);
    }

    /// Reports a mount's counters under `channel`; `summary` returns `None`
    /// once the mount is gone, and its last values are kept.
    pub fn add_mount<F>(&self, channel: &str, summary: F)
    where
        F: Fn() -> Option<MountSummary> + Send + Sync + 'static,
    {
        let last = Mutex::new(MountSummary::default());
        self.add(
            channel,
            Arc::new(move |out: &mut Vec<Sample>| {
                let Ok(mut last) = last.lock() else { return };
                if let Some(now) = summary() {
                    *last = now;
                }
                mount_samples(&last, out);
            }),
        );
    }

    /// Every registered channel's samples, in registration order.
    pub fn collect(&self) -> Vec<(String, Vec<Sample>)> {
        let sources: Vec<(String, Arc<dyn Source>)> = match self.sources.lock() {
            Ok(s) => s.clone(),
            Err(_) => return Vec::new(),
        };
        sources
            .into_iter()
            .map(|(channel, source)| {
                let mut out = Vec::new();
                source.collect(&mut out);
                (channel, out)
            })
            .collect()
    }
}

/// The `channel` label of a stand-alone command's data directory: its last
/// component, as SageMaker names `/opt/ml/input/data/<channel>`.
pub fn channel_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// The process-wide registry the modes register their channels with.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(Registry::default)
}
