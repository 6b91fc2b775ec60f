//! Resumable, pinned ranged reads.
//!
//! A read of `start..end` is one logical stream of bytes built from as many GET
//! attempts as it takes: when a body is cut short, stalls or errors, the next
//! attempt asks only for the bytes not yet delivered. Every attempt carries the
//! ETag the object had when it was listed (`If-Match`), and the ETag of each
//! response is checked as well, so bytes of two versions are never joined even
//! when a store ignores conditional requests.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::stats::Stats;
use crate::{ObjectStore, RetryPolicy, StoreError};

/// A stream of the requested bytes, in order, with no gaps or repeats.
pub type ReadStream = BoxStream<'static, Result<Bytes, StoreError>>;

pub(crate) struct ReadRequest {
    pub store: Arc<dyn ObjectStore>,
    pub policy: RetryPolicy,
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

pub(crate) fn read_stream(req: ReadRequest) -> ReadStream {
    let ReadRequest {
        store,
        policy,
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
        while pos < end {
            attempt += 1;
            let outcome = fetch_from(&*store, &stats, &bucket, &key, pos..end, &mut etag).await;
            let (mut body, expected_len) = match outcome {
                Ok(v) => v,
                Err(err) => {
                    let err = retry_or_fail(&policy, &stats, &bucket, &key, attempt, err).await?;
                    tracing::debug!(bucket = %bucket, key = %key, attempt, error = %err, "retrying ranged GET");
                    continue;
                }
            };
            let attempt_start = pos;
            let mut failure: Option<StoreError> = None;
            loop {
                match tokio::time::timeout(policy.stall_timeout, body.next()).await {
                    Err(_) => {
                        failure = Some(StoreError::transient(&bucket, &key, format!(
                            "no data for {:?} at byte {pos} (stalled connection)", policy.stall_timeout)));
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        failure = Some(e);
                        break;
                    }
                    Ok(Some(Ok(chunk))) => {
                        if chunk.is_empty() {
                            continue;
                        }
                        let room = end - pos;
                        let len = chunk.len() as u64;
                        if len > room {
                            Err(StoreError::other(&bucket, &key, format!(
                                "server sent more bytes than asked for ({} past byte {end})", len - room)))?;
                        }
                        pos += len;
                        Stats::add(&stats.bytes_received, len);
                        yield chunk;
                    }
                }
            }
            if pos > attempt_start {
                // Progress resets the budget: the limit is on consecutive failures.
                attempt = 0;
            }
            if pos >= end {
                break;
            }
            let err = failure.unwrap_or_else(|| StoreError::transient(&bucket, &key, format!(
                "body ended after {} of {} bytes", pos - attempt_start, expected_len)));
            let attempt_now = attempt.max(1);
            let err = retry_or_fail(&policy, &stats, &bucket, &key, attempt_now, err).await?;
            tracing::debug!(bucket = %bucket, key = %key, resume_at = pos, error = %err, "resuming ranged GET");
        }
    };
    stream.boxed()
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
        return Err(err);
    }
    let budget = policy.budget_for(&err);
    if attempt >= budget {
        return Err(StoreError::RetriesExhausted {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            attempts: attempt,
            last: Box::new(err),
        });
    }
    Stats::add(&stats.retries, 1);
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
    use super::same_etag;

    #[test]
    fn etags_compare_without_quotes() {
        assert!(same_etag("\"abc\"", "abc"));
        assert!(same_etag("W/\"abc\"", "\"abc\""));
        assert!(!same_etag("\"abc\"", "\"abd\""));
    }
}
