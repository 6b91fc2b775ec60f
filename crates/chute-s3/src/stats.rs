//! Counters shared by everything that uses a [`crate::Client`], for the periodic
//! throughput lines and summaries the modes print, and for the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::StoreError;

#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) list_requests: AtomicU64,
    pub(crate) head_requests: AtomicU64,
    pub(crate) get_requests: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) retries: AtomicU64,
    /// `retries`, split by [`RetryCause`] (indexed by `cause as usize`).
    pub(crate) retries_by_cause: [AtomicU64; RetryCause::ALL.len()],
    /// Requests and reads that failed for good (retries spent, or an error no
    /// retry can fix).
    pub(crate) failures: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub list_requests: u64,
    pub head_requests: u64,
    pub get_requests: u64,
    pub bytes_received: u64,
    pub retries: u64,
    /// Retries by cause, in the order of [`RetryCause::ALL`].
    pub retries_by_cause: [u64; RetryCause::ALL.len()],
    pub failures: u64,
}

/// Why a request or a read was retried: what an operator needs to tell a
/// throttling store from a flaky network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryCause {
    /// 429, 503 and `SlowDown`: the store asked for less.
    Throttled,
    /// Other 5xx responses.
    ServerError,
    /// Refused, reset or dropped connections, DNS failures.
    Connection,
    /// No response in time, a stalled body, or one below the throughput floor.
    Timeout,
    /// A body that ended before its length; the read resumed from the last byte.
    BodyCut,
    Other,
}

impl RetryCause {
    pub const ALL: [RetryCause; 6] = [
        RetryCause::Throttled,
        RetryCause::ServerError,
        RetryCause::Connection,
        RetryCause::Timeout,
        RetryCause::BodyCut,
        RetryCause::Other,
    ];

    /// The label value (`cause="throttled"`).
    pub fn label(self) -> &'static str {
        match self {
            RetryCause::Throttled => "throttled",
            RetryCause::ServerError => "server_error",
            RetryCause::Connection => "connection",
            RetryCause::Timeout => "timeout",
            RetryCause::BodyCut => "body_cut",
            RetryCause::Other => "other",
        }
    }

    /// The cause of a retryable error. Transient errors carry their cause only
    /// in their wording (the HTTP status leads it), so this reads that.
    pub fn of(err: &StoreError) -> RetryCause {
        let detail = match err {
            StoreError::Unreachable { .. } => return RetryCause::Connection,
            StoreError::Transient { detail, .. } => detail.as_str(),
            _ => return RetryCause::Other,
        };
        let status = detail
            .strip_prefix("HTTP ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        match status {
            Some(429 | 503) => RetryCause::Throttled,
            Some(408) => RetryCause::Timeout,
            Some(500..=599) if detail.contains("SlowDown") => RetryCause::Throttled,
            Some(500..=599) => RetryCause::ServerError,
            Some(_) if detail.contains("SlowDown") => RetryCause::Throttled,
            Some(_) => RetryCause::Other,
            None if detail.contains("body ended") => RetryCause::BodyCut,
            None if ["timed out", "stalled", "too slow"]
                .iter()
                .any(|w| detail.contains(w)) =>
            {
                RetryCause::Timeout
            }
            None => RetryCause::Connection,
        }
    }
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            list_requests: l(&self.list_requests),
            head_requests: l(&self.head_requests),
            get_requests: l(&self.get_requests),
            bytes_received: l(&self.bytes_received),
            retries: l(&self.retries),
            retries_by_cause: std::array::from_fn(|i| l(&self.retries_by_cause[i])),
            failures: l(&self.failures),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one retry of `err`.
    pub(crate) fn retried(&self, err: &StoreError) {
        Stats::add(&self.retries, 1);
        Stats::add(&self.retries_by_cause[RetryCause::of(err) as usize], 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(detail: &str) -> StoreError {
        StoreError::Transient {
            bucket: "b".into(),
            key: "k".into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn retry_causes_from_the_error() {
        let cases = [
            (
                "HTTP 503 SlowDown: Please reduce your request rate",
                RetryCause::Throttled,
            ),
            ("HTTP 429", RetryCause::Throttled),
            ("HTTP 500 InternalError: oops", RetryCause::ServerError),
            ("HTTP 408 RequestTimeout", RetryCause::Timeout),
            ("timed out waiting for the response", RetryCause::Timeout),
            (
                "no data for 30s at byte 5 (stalled connection)",
                RetryCause::Timeout,
            ),
            ("body ended after 10 of 20 bytes", RetryCause::BodyCut),
            (
                "dispatch failure: connection reset by peer",
                RetryCause::Connection,
            ),
        ];
        for (detail, cause) in cases {
            assert_eq!(RetryCause::of(&transient(detail)), cause, "{detail}");
        }
        let down = StoreError::Unreachable {
            endpoint: "http://127.0.0.1:1".into(),
            detail: "refused".into(),
        };
        assert_eq!(RetryCause::of(&down), RetryCause::Connection);
    }

    #[test]
    fn retries_are_counted_by_cause() {
        let stats = Stats::default();
        stats.retried(&transient("HTTP 503 SlowDown"));
        stats.retried(&transient("body ended after 1 of 2 bytes"));
        stats.retried(&transient("HTTP 503"));
        let s = stats.snapshot();
        assert_eq!(s.retries, 3);
        assert_eq!(s.retries_by_cause[RetryCause::Throttled as usize], 2);
        assert_eq!(s.retries_by_cause[RetryCause::BodyCut as usize], 1);
    }
}
