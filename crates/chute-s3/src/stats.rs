//! Counters shared by everything that uses a [`crate::Client`], for the periodic
//! throughput lines and summaries the modes print.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) list_requests: AtomicU64,
    pub(crate) head_requests: AtomicU64,
    pub(crate) get_requests: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) retries: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub list_requests: u64,
    pub head_requests: u64,
    pub get_requests: u64,
    pub bytes_received: u64,
    pub retries: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            list_requests: self.list_requests.load(Ordering::Relaxed),
            head_requests: self.head_requests.load(Ordering::Relaxed),
            get_requests: self.get_requests.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
