//! Resumable, pinned ranged reads.
//!
//! A read of `start..end` is one logical stream of bytes built from as many GET
//! attempts as it takes: when a body is cut short, stalls or errors, the next
//! attempt asks only for the bytes not yet delivered. Every attempt carries the
//! ETag the object had when it was listed (`If-Match`), and the ETag of each
//! response is checked as well, so bytes of two versions are never joined even
//! when a store ignores conditional requests.
//!
//! A body is abandoned and resumed when it stalls (no byte for the policy's
//! stall timeout) and when it crawls (fewer bytes than [`ReadLimits`] asks for
//! over a window of waiting). Only time spent waiting for the body counts, not
//! time the consumer takes between chunks, so a slow reader downstream never
//! looks like a slow server. Progress restarts the count of consecutive
//! failures, but the resumptions of one read are bounded in total, so a server
//! that always sends a little and then fails cannot keep a read alive forever.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::Instant;

use crate::stats::Stats;
use crate::{ObjectStore, ReadLimits, RetryPolicy, StoreError};

/// A stream of the requested bytes, in order, with no gaps or repeats.
pub type ReadStream = BoxStream<'static, Result<Bytes, StoreError>>;

pub(crate) struct ReadRequest {
    pub store: Arc<dyn ObjectStore>,
    pub policy: RetryPolicy,
    pub limits: ReadLimits,
    pub stats: Arc<Stats>,
    pub bucket: String,
    pub key: String,
    pub range: Range<u64>,
    /// ETag to pin to. `None` pins to whatever the first response carries.
    pub etag: Option<String>,
}

/// ETags are compared without quotes and weakness markers: stores differ in how
/// they print them, never in the value.
fn same_etag(a: &str, b: &str) -> bool {
    fn bare(s: &str) -> &str {
        s.trim_start_matches("W/").trim_matches('"')
    }
    bare(a) == bare(b)
}

/// Throughput of one GET body, measured over time spent waiting for it.
struct Pace {
    /// Waiting time in the current window.
    waited: Duration,
    /// Bytes received in the current window.
    bytes: u64,
}

impl Pace {
    fn new() -> Pace {
        Pace {
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    /// Waiting time left before the current window is judged (forever when
    /// the floor is off).
    fn left(&self, limits: &ReadLimits) -> Duration {
        if Pace::off(limits) {
            return Duration::MAX;
        }
        limits.window.saturating_sub(self.waited)
    }

    fn off(limits: &ReadLimits) -> bool {
        limits.window.is_zero() || limits.min_bytes_per_sec == 0
    }

    /// Records a wait and what it brought; once a window is complete, judges
    /// it and starts the next. `Err` carries the bytes the window delivered.
    fn record(&mut self, waited: Duration, bytes: u64, limits: &ReadLimits) -> Result<(), u64> {
        self.waited += waited;
        self.bytes += bytes;
        if Pace::off(limits) || self.waited < limits.window {
            return Ok(());
        }
        let delivered = self.bytes;
        *self = Pace::new();
        if delivered < limits.window_floor() {
            Err(delivered)
        } else {
            Ok(())
        }
    }
}

pub(crate) fn read_stream(req: ReadRequest) -> ReadStream {
    let ReadRequest {
        store,
        policy,
        limits,
        stats,
        bucket,
        key,
        range,
        mut etag,
    } = req;
    let stream = async_stream::try_stream! {
        let mut pos = range.start;
        let end = range.end;
        let mut attempt: u32 = 0;
        // Every retry of this read, whatever came between.
        let mut retries: u32 = 0;
        while pos < end {
            attempt += 1;
            let outcome = fetch_from(&*store, &stats, &bucket, &key, pos..end, &mut etag).await;
            let (mut body, expected_len) = match outcome {
                Ok(v) => v,
                Err(err) => {
                    let err = within_total(&limits, &bucket, &key, &mut retries, err)
                        .inspect_err(|_| Stats::add(&stats.failures, 1))?;
                    let err = retry_or_fail(&policy, &stats, &bucket, &key, attempt, err).await?;
                    tracing::debug!(bucket = %bucket, key = %key, attempt, error = %err, "retrying ranged GET");
                    continue;
                }
            };
            let attempt_start = pos;
            let mut failure: Option<StoreError> = None;
            let mut pace = Pace::new();
            // Waiting time since the last byte.
            let mut quiet = Duration::ZERO;
            loop {
                let stall_left = policy.stall_timeout.saturating_sub(quiet);
                let window_left = pace.left(&limits);
                let started = Instant::now();
                let next = tokio::time::timeout(stall_left.min(window_left), body.next()).await;
                let waited = started.elapsed();
                let chunk = match next {
                    Err(_) if stall_left <= window_left => {
                        failure = Some(StoreError::transient(&bucket, &key, format!(
                            "no data for {:?} at byte {pos} (stalled connection)", policy.stall_timeout)));
                        break;
                    }
                    // The window ended between chunks: judge it below.
                    Err(_) => Bytes::new(),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        failure = Some(e);
                        break;
                    }
                    Ok(Some(Ok(chunk))) => chunk,
                };
                let len = chunk.len() as u64;
                quiet = if len > 0 { Duration::ZERO } else { quiet + waited };
                if len > end - pos {
                    Err(StoreError::other(&bucket, &key, format!(
                        "server sent more bytes than asked for ({} past byte {end})", len - (end - pos))))?;
                }
                if let Err(delivered) = pace.record(waited, len, &limits) {
                    // The bytes of this chunk are good: keep them, then resume.
                    if len > 0 {
                        pos += len;
                        Stats::add(&stats.bytes_received, len);
                        yield chunk;
                    }
                    failure = Some(StoreError::transient(&bucket, &key, format!(
                        "too slow: {delivered} bytes in {:?} at byte {pos}, below the floor of {} bytes/s",
                        limits.window, limits.min_bytes_per_sec)));
                    break;
                }
                if len > 0 {
                    pos += len;
                    Stats::add(&stats.bytes_received, len);
                    yield chunk;
                }
            }
            if pos > attempt_start {
                // Progress resets the count of consecutive failures; the total
                // is bounded by `within_total`.
                attempt = 0;
            }
            if pos >= end {
                break;
            }
            let err = failure.unwrap_or_else(|| StoreError::transient(&bucket, &key, format!(
                "body ended after {} of {} bytes", pos - attempt_start, expected_len)));
            let err = within_total(&limits, &bucket, &key, &mut retries, err)
                        .inspect_err(|_| Stats::add(&stats.failures, 1))?;
            let attempt_now = attempt.max(1);
            let err = retry_or_fail(&policy, &stats, &bucket, &key, attempt_now, err).await?;
            tracing::debug!(bucket = %bucket, key = %key, resume_at = pos, error = %err, "resuming ranged GET");
        }
    };
    stream.boxed()
}

/// Counts one more retry of a read, or ends the read once it has been
/// retried `max_resumes` times in all. Errors no retry can fix pass through.
fn within_total(
    limits: &ReadLimits,
    bucket: &str,
    key: &str,
    retries: &mut u32,
    err: StoreError,
) -> Result<StoreError, StoreError> {
    if !err.is_retryable() {
        return Ok(err);
    }
    if *retries >= limits.max_resumes {
        return Err(StoreError::RetriesExhausted {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            attempts: retries.saturating_add(1),
            last: Box::new(err),
        });
    }
    *retries += 1;
    Ok(err)
}

/// One GET attempt for `range`, with the pinned ETag checked (or set, the first time).
async fn fetch_from(
    store: &dyn ObjectStore,
    stats: &Stats,
    bucket: &str,
    key: &str,
    range: Range<u64>,
    etag: &mut Option<String>,
) -> Result<(BoxStream<'static, Result<Bytes, StoreError>>, u64), StoreError> {
    Stats::add(&stats.get_requests, 1);
    let resp = store
        .get_range(bucket, key, range.clone(), etag.as_deref())
        .await?;
    match (etag.as_deref(), resp.etag.as_deref()) {
        (Some(pinned), Some(found)) if !same_etag(pinned, found) => {
            return Err(StoreError::Changed {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                expected: pinned.to_owned(),
                found: found.to_owned(),
            });
        }
        (None, Some(found)) => *etag = Some(found.to_owned()),
        _ => {}
    }
    let want = range.end - range.start;
    if resp.content_length != want {
        // A short Content-Length would otherwise read as a body cut short and be
        // retried forever; the object is not what the caller thinks it is.
        return Err(StoreError::InvalidRange {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            start: range.start,
            end: range.end,
            size: None,
        });
    }
    Ok((resp.body, want))
}

/// Sleeps before the next attempt, or returns the error that ends the read.
/// Returns the error that was retried (for the log).
async fn retry_or_fail(
    policy: &RetryPolicy,
    stats: &Stats,
    bucket: &str,
    key: &str,
    attempt: u32,
    err: StoreError,
) -> Result<StoreError, StoreError> {
    if !err.is_retryable() {
        Stats::add(&stats.failures, 1);
        return Err(err);
    }
    let budget = policy.budget_for(&err);
    if attempt >= budget {
        Stats::add(&stats.failures, 1);
        return Err(StoreError::RetriesExhausted {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            attempts: attempt,
            last: Box::new(err),
        });
    }
    stats.retried(&err);
    tokio::time::sleep(policy.delay(attempt)).await;
    Ok(err)
}

/// Runs `op` until it succeeds, fails for good, or the budget is spent.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    stats: &Stats,
    bucket: &str,
    key: &str,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(err) => {
                let err = retry_or_fail(policy, stats, bucket, key, attempt, err).await?;
                tracing::debug!(bucket, key, attempt, error = %err, "retrying request");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_without_quotes() {
        assert!(same_etag("\"abc\"", "abc"));
        assert!(same_etag("W/\"abc\"", "\"abc\""));
        assert!(!same_etag("\"abc\"", "\"abd\""));
    }

    #[test]
    fn pace_off_waits_forever() {
        let off = ReadLimits {
            window: Duration::ZERO,
            ..ReadLimits::default()
        };
        assert_eq!(Pace::new().left(&off), Duration::MAX);
    }

    #[test]
    fn pace_judges_whole_windows_of_waiting() {
        let limits = ReadLimits {
            min_bytes_per_sec: 1000,
            window: Duration::from_secs(2),
            max_resumes: 3,
        };
        let mut pace = Pace::new();
        assert_eq!(pace.left(&limits), Duration::from_secs(2));
        // 1999 bytes over two seconds of waiting is below 1000 bytes/s.
        assert_eq!(pace.record(Duration::from_secs(1), 1500, &limits), Ok(()));
        assert_eq!(pace.left(&limits), Duration::from_secs(1));
        assert_eq!(pace.record(Duration::from_secs(1), 499, &limits), Err(1999));
        // A new window starts after each judgement.
        assert_eq!(pace.left(&limits), Duration::from_secs(2));
        assert_eq!(pace.record(Duration::from_secs(2), 2000, &limits), Ok(()));
        // A zero floor never judges.
        let off = ReadLimits {
            min_bytes_per_sec: 0,
            ..limits.clone()
        };
        assert_eq!(Pace::new().record(Duration::from_secs(60), 0, &off), Ok(()));
    }

    #[test]
    fn retries_are_bounded_in_total() {
        let limits = ReadLimits {
            max_resumes: 2,
            ..ReadLimits::default()
        };
        let mut retries = 0;
        let transient = || StoreError::transient("b", "k", "cut");
        assert!(within_total(&limits, "b", "k", &mut retries, transient()).is_ok());
        assert!(within_total(&limits, "b", "k", &mut retries, transient()).is_ok());
        let err = within_total(&limits, "b", "k", &mut retries, transient()).unwrap_err();
        assert!(
            matches!(err, StoreError::RetriesExhausted { attempts: 3, .. }),
            "{err:?}"
        );
        // What a retry cannot fix is not counted, and passes through.
        let denied = StoreError::NoSuchBucket { bucket: "b".into() };
        assert!(within_total(&limits, "b", "k", &mut retries, denied).is_ok());
    }
}
