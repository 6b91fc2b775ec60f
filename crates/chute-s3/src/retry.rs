//! Retry policy: how many attempts, and how long to wait between them.
//!
//! Backoff is exponential with "full jitter" (a uniform wait between zero and the
//! exponential cap), which spreads the retries of many concurrent requests apart
//! after a throttling burst instead of sending them back in lockstep.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request, the first included. A read that makes progress
    /// (receives bytes) starts its count again, so a long body over a flaky link
    /// still completes.
    pub max_attempts: u32,
    /// Attempts when the endpoint refuses connections outright; kept small so a
    /// wrong endpoint fails in seconds, not minutes.
    pub max_connect_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A body that delivers no byte for this long is treated as a dropped
    /// connection and resumed.
    pub stall_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            max_connect_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt number `attempt` (1 = the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let cap = exp.min(self.max_delay);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }

    /// Attempts allowed for a request whose last error was `err`.
    pub(crate) fn budget_for(&self, err: &crate::StoreError) -> u32 {
        match err {
            crate::StoreError::Unreachable { .. } => self.max_connect_attempts,
            _ => self.max_attempts,
        }
    }
}

/// Bounds on one logical read that the per-attempt count cannot give: a body
/// that keeps delivering a few bytes never stalls and keeps resetting that
/// count, so it needs a floor on throughput and a ceiling on resumptions.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// A GET body that delivers fewer bytes per second than this, measured
    /// over each `window`, is abandoned and resumed, as a stalled one is.
    pub min_bytes_per_sec: u64,
    /// The span the throughput floor is measured over; short bursts and
    /// pauses within it average out.
    pub window: Duration,
    /// How many times one read may be resumed in all, progress or not.
    pub max_resumes: u32,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            min_bytes_per_sec: 16 << 10,
            window: Duration::from_secs(30),
            max_resumes: 100,
        }
    }
}

impl ReadLimits {
    /// Bytes a window must deliver.
    pub(crate) fn window_floor(&self) -> u64 {
        let bytes = self.min_bytes_per_sec as f64 * self.window.as_secs_f64();
        bytes as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_capped_and_jittered() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(80),
            ..RetryPolicy::default()
        };
        for attempt in 1..40 {
            let d = p.delay(attempt);
            assert!(d <= Duration::from_millis(80), "attempt {attempt}: {d:?}");
        }
        assert!(p.delay(1) <= Duration::from_millis(10));
    }
}
