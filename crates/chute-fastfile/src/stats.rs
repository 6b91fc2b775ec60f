//! Counters of one mount, for the periodic `--log info` line and the summary
//! printed on unmount. The S3 client keeps its own (GETs, retries); these say
//! what the file system did with the bytes.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chute_s3::StatsSnapshot;

#[derive(Debug, Default)]
pub(crate) struct FsStats {
    pub reads: AtomicU64,
    pub bytes_served: AtomicU64,
    /// Bytes fetched ahead of any reader (per-file and cross-file read-ahead).
    pub bytes_prefetched: AtomicU64,
    /// Bytes fetched because a reader asked for them and they were not there.
    pub bytes_demand: AtomicU64,
    /// Bytes read from the disk cache instead of S3 (passthrough reads,
    /// which never reach the daemon, are not counted).
    pub bytes_disk: AtomicU64,
    /// Bytes the whole-channel prefetch wrote into the disk cache.
    pub bytes_background: AtomicU64,
    /// Opens answered with FUSE passthrough to a disk cache entry.
    pub passthrough_opens: AtomicU64,
    pub block_hits: AtomicU64,
    pub block_waits: AtomicU64,
    pub block_misses: AtomicU64,
    /// Prefetched blocks evicted before any reader used them.
    pub wasted_blocks: AtomicU64,
    pub opens: AtomicU64,
    pub errors: AtomicU64,
}

impl FsStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self, s3: StatsSnapshot, elapsed: Duration, peak_cache: u64) -> MountSummary {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MountSummary {
            elapsed,
            reads: l(&self.reads),
            opens: l(&self.opens),
            bytes_served: l(&self.bytes_served),
            bytes_prefetched: l(&self.bytes_prefetched),
            bytes_demand: l(&self.bytes_demand),
            bytes_disk: l(&self.bytes_disk),
            bytes_background: l(&self.bytes_background),
            passthrough_opens: l(&self.passthrough_opens),
            block_hits: l(&self.block_hits),
            block_waits: l(&self.block_waits),
            block_misses: l(&self.block_misses),
            wasted_blocks: l(&self.wasted_blocks),
            errors: l(&self.errors),
            get_requests: s3.get_requests,
            bytes_received: s3.bytes_received,
            retries: s3.retries,
            peak_cache_bytes: peak_cache,
        }
    }
}

/// What a mount did, from mount to now (or to unmount).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountSummary {
    pub elapsed: Duration,
    /// FUSE read requests answered.
    pub reads: u64,
    /// Opens answered; on the page-cache read path (no opens reach chute),
    /// files whose reads came through chute, counted once per reading task.
    pub opens: u64,
    pub bytes_served: u64,
    pub bytes_prefetched: u64,
    pub bytes_demand: u64,
    /// Bytes served from the disk cache through the daemon.
    pub bytes_disk: u64,
    /// Bytes the whole-channel prefetch fetched into the disk cache.
    pub bytes_background: u64,
    /// Opens served by FUSE passthrough (their reads bypass the daemon).
    pub passthrough_opens: u64,
    /// Blocks a read found ready in memory.
    pub block_hits: u64,
    /// Blocks a read found in flight (fetched ahead, not yet arrived).
    pub block_waits: u64,
    /// Blocks a read had to fetch itself.
    pub block_misses: u64,
    pub wasted_blocks: u64,
    /// Reads answered with EIO or ESTALE.
    pub errors: u64,
    pub get_requests: u64,
    pub bytes_received: u64,
    pub retries: u64,
    /// Most bytes the block cache held at once.
    pub peak_cache_bytes: u64,
}

impl MountSummary {
    /// Share of block lookups served without waiting for S3.
    pub fn hit_rate(&self) -> f64 {
        let total = self.block_hits + self.block_waits + self.block_misses;
        if total == 0 {
            return 0.0;
        }
        self.block_hits as f64 / total as f64
    }

    /// The counters accumulated since `earlier`, for a rate over an interval.
    pub fn since(&self, earlier: &MountSummary) -> MountSummary {
        MountSummary {
            elapsed: self.elapsed.saturating_sub(earlier.elapsed),
            reads: self.reads - earlier.reads,
            opens: self.opens - earlier.opens,
            bytes_served: self.bytes_served - earlier.bytes_served,
            bytes_prefetched: self.bytes_prefetched - earlier.bytes_prefetched,
            bytes_demand: self.bytes_demand - earlier.bytes_demand,
            bytes_disk: self.bytes_disk - earlier.bytes_disk,
            bytes_background: self.bytes_background - earlier.bytes_background,
            passthrough_opens: self.passthrough_opens - earlier.passthrough_opens,
            block_hits: self.block_hits - earlier.block_hits,
            block_waits: self.block_waits - earlier.block_waits,
            block_misses: self.block_misses - earlier.block_misses,
            wasted_blocks: self.wasted_blocks - earlier.wasted_blocks,
            errors: self.errors - earlier.errors,
            get_requests: self.get_requests - earlier.get_requests,
            bytes_received: self.bytes_received - earlier.bytes_received,
            retries: self.retries - earlier.retries,
            peak_cache_bytes: self.peak_cache_bytes,
        }
    }
}

impl fmt::Display for MountSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "{} GETs, {:.1} MB received ({:.1} MB prefetched into the disk cache, {:.1} MB \
             read ahead, {:.1} MB on demand); {:.1} MB from disk cache; {} of {} opens by \
             passthrough; served {:.1} MB in {} reads ({:.1} MB/s over {:.1}s); \
             cache hit rate {:.1}%; {} retries; {} read errors; peak cache {:.1} MB",
            self.get_requests,
            self.bytes_received as f64 / 1e6,
            self.bytes_background as f64 / 1e6,
            self.bytes_prefetched as f64 / 1e6,
            self.bytes_demand as f64 / 1e6,
            self.bytes_disk as f64 / 1e6,
            self.passthrough_opens,
            self.opens,
            self.bytes_served as f64 / 1e6,
            self.reads,
            self.bytes_served as f64 / 1e6 / secs,
            secs,
            self.hit_rate() * 100.0,
            self.retries,
            self.errors,
            self.peak_cache_bytes as f64 / 1e6,
        )
    }
}
