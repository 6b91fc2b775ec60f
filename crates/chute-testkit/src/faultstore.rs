//! [`FaultStore`]: wraps any [`ObjectStore`] and makes chosen requests fail
//! the ways S3 requests fail, one request at a time, without a network.
//!
//! It is the in-process counterpart of [`crate::proxy`]: the proxy breaks the
//! real wire (HTTP statuses, TCP resets, stalled sockets) between a client and
//! `chute serve`; this wrapper breaks the [`ObjectStore`] calls themselves, so
//! logic above the store (retries, resumption, version pinning, EIO and
//! ESTALE) can be tested deterministically and fast.
//!
//! Rules are consulted in push order for every request; the first rule that
//! matches the request's kind and key, has let its `skip` matching requests
//! pass and still has `times` left, fires. A rule that fires is used up one
//! `times`; skipped requests are forwarded untouched.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chute_s3::{GetResponse, ListPage, ObjectMeta, ObjectStore, StoreError};
use futures::StreamExt;

/// The kind of request a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List,
    Head,
    Get,
}

/// What happens to a request a rule claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreFault {
    /// Fail with an error a retry may fix (throttling, a 5xx, a reset).
    Retryable,
    /// Fail with an error no retry fixes (access denied).
    Fatal,
    /// Forward a GET, deliver the first `after_bytes` bytes of its body, then
    /// fail the body as a dropped connection does.
    CutBody { after_bytes: u64 },
    /// Forward the request after waiting `duration`.
    Delay { duration: Duration },
    /// Forward a GET and wait `pause` before each piece of its body: a body
    /// that crawls, so a transfer can be caught (or dropped) part way.
    SlowBody { pause: Duration },
    /// Forward a GET with the first byte of its body XORed with `xor`: bytes
    /// damaged in transit, which only a checksum can tell.
    Corrupt { xor: u8 },
    /// The object is now another version with this ETag (the bytes stay the
    /// same, as if rewritten): a GET pinned with `If-Match` to the old ETag
    /// fails with `Changed`, an unpinned one is answered with the new ETag,
    /// and a HEAD or listing reports the new ETag. Use `times` to say for how
    /// many requests; `always()` for the rest of the test.
    ChangeEtag { etag: String },
}

/// A fault and the requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRule {
    /// The kind of request to match; every kind when `None`.
    pub op: Option<Op>,
    /// The key to match exactly (for a listing: the prefix); any when `None`.
    pub key: Option<String>,
    /// Matching requests to let through untouched before the rule fires.
    pub skip: u64,
    /// How many more matching requests the rule faults (`u64::MAX`: all).
    pub times: u64,
    pub fault: StoreFault,
}

impl StoreRule {
    /// A rule faulting the next request of any kind once; narrow it with the
    /// builder methods.
    pub fn new(fault: StoreFault) -> StoreRule {
        StoreRule {
            op: None,
            key: None,
            skip: 0,
            times: 1,
            fault,
        }
    }

    /// Shorthand: `fault` on GETs of `key`.
    pub fn get(key: &str, fault: StoreFault) -> StoreRule {
        StoreRule::new(fault).op(Op::Get).key(key)
    }

    pub fn op(mut self, op: Op) -> StoreRule {
        self.op = Some(op);
        self
    }

    pub fn key(mut self, key: &str) -> StoreRule {
        self.key = Some(key.to_owned());
        self
    }

    /// Fires on the `n`th matching request (1-based) and after.
    pub fn nth(mut self, n: u64) -> StoreRule {
        self.skip = n.saturating_sub(1);
        self
    }

    pub fn times(mut self, times: u64) -> StoreRule {
        self.times = times;
        self
    }

    /// Faults every matching request from now on.
    pub fn always(mut self) -> StoreRule {
        self.times = u64::MAX;
        self
    }

    fn matches(&self, op: Op, key: &str) -> bool {
        self.op.is_none_or(|o| o == op) && self.key.as_deref().is_none_or(|k| k == key)
    }
}

/// A store that forwards to `inner` except where a rule says otherwise; see
/// the module doc.
pub struct FaultStore<S> {
    inner: Arc<S>,
    rules: Mutex<Vec<StoreRule>>,
    fired: AtomicU64,
    on_get: Option<Hook>,
}

/// Runs with the key before each GET is answered.
type Hook = Box<dyn Fn(&str) + Send + Sync>;

impl<S: ObjectStore> FaultStore<S> {
    pub fn new(inner: Arc<S>) -> FaultStore<S> {
        FaultStore {
            inner,
            rules: Mutex::new(Vec::new()),
            fired: AtomicU64::new(0),
            on_get: None,
        }
    }

    /// Runs `hook` with the key before every GET is answered (faulted or not):
    /// something else happening while a transfer runs.
    pub fn on_get(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> FaultStore<S> {
        self.on_get = Some(Box::new(hook));
        self
    }

    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// Adds a rule after the existing ones.
    pub fn push(&self, rule: StoreRule) {
        self.rules().push(rule);
    }

    /// Drops every rule: from now on every request is forwarded.
    pub fn clear(&self) {
        self.rules().clear();
    }

    /// How many requests a rule has faulted so far.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::SeqCst)
    }

    fn rules(&self) -> MutexGuard<'_, Vec<StoreRule>> {
        self.rules
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The fault for this request, if a rule claims it.
    fn claim(&self, op: Op, key: &str) -> Option<StoreFault> {
        let mut rules = self.rules();
        for rule in rules.iter_mut() {
            if rule.times == 0 || !rule.matches(op, key) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                return None;
            }
            if rule.times != u64::MAX {
                rule.times -= 1;
            }
            self.fired.fetch_add(1, Ordering::SeqCst);
            return Some(rule.fault.clone());
        }
        None
    }
}

fn retryable(bucket: &str, key: &str) -> StoreError {
    StoreError::Transient {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        detail: "injected fault: 503 SlowDown".to_owned(),
    }
}

fn fatal(bucket: &str, key: &str) -> StoreError {
    StoreError::AccessDenied {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        detail: "injected fault: 403 AccessDenied".to_owned(),
    }
}

#[async_trait::async_trait]
impl<S: ObjectStore> ObjectStore for FaultStore<S> {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let fault = self.claim(Op::List, prefix);
        match fault {
            Some(StoreFault::Retryable) => return Err(retryable(bucket, prefix)),
            Some(StoreFault::Fatal) => return Err(fatal(bucket, prefix)),
            Some(StoreFault::Delay { duration }) => tokio::time::sleep(duration).await,
            _ => {}
        }
        let mut page = self
            .inner
            .list_page(bucket, prefix, delimiter, token)
            .await?;
        // A changed version shows in listings too, for every key it covers.
        for meta in &mut page.objects {
            if let Some(etag) = self.changed_etag(&meta.key) {
                meta.etag = Some(etag);
            }
        }
        Ok(page)
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        match self.claim(Op::Head, key) {
            Some(StoreFault::Retryable) => Err(retryable(bucket, key)),
            Some(StoreFault::Fatal) => Err(fatal(bucket, key)),
            Some(StoreFault::Delay { duration }) => {
                tokio::time::sleep(duration).await;
                self.inner.head(bucket, key).await
            }
            Some(StoreFault::ChangeEtag { etag }) => {
                let mut meta = self.inner.head(bucket, key).await?;
                meta.etag = Some(etag);
                Ok(meta)
            }
            Some(
                StoreFault::CutBody { .. }
                | StoreFault::SlowBody { .. }
                | StoreFault::Corrupt { .. },
            )
            | None => self.inner.head(bucket, key).await,
        }
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<GetResponse, StoreError> {
        if let Some(hook) = &self.on_get {
            hook(key);
        }
        match self.claim(Op::Get, key) {
            None => self.inner.get_range(bucket, key, range, if_match).await,
            Some(StoreFault::Retryable) => Err(retryable(bucket, key)),
            Some(StoreFault::Fatal) => Err(fatal(bucket, key)),
            Some(StoreFault::Delay { duration }) => {
                tokio::time::sleep(duration).await;
                self.inner.get_range(bucket, key, range, if_match).await
            }
            Some(StoreFault::SlowBody { pause }) => {
                let resp = self.inner.get_range(bucket, key, range, if_match).await?;
                let body = resp
                    .body
                    .then(move |chunk| async move {
                        tokio::time::sleep(pause).await;
                        chunk
                    })
                    .boxed();
                Ok(GetResponse { body, ..resp })
            }
            Some(StoreFault::Corrupt { xor }) => {
                let resp = self.inner.get_range(bucket, key, range, if_match).await?;
                let mut first = true;
                let body = resp
                    .body
                    .map(move |chunk| {
                        let chunk = chunk?;
                        if !first || chunk.is_empty() {
                            return Ok(chunk);
                        }
                        first = false;
                        let mut damaged = chunk.to_vec();
                        damaged[0] ^= xor;
                        Ok(bytes::Bytes::from(damaged))
                    })
                    .boxed();
                Ok(GetResponse { body, ..resp })
            }
            Some(StoreFault::CutBody { after_bytes }) => {
                let resp = self.inner.get_range(bucket, key, range, if_match).await?;
                Ok(GetResponse {
                    body: cut(resp.body, after_bytes, bucket, key),
                    ..resp
                })
            }
            Some(StoreFault::ChangeEtag { etag }) => {
                if let Some(want) = if_match.filter(|w| *w != etag) {
                    return Err(StoreError::Changed {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        expected: want.to_owned(),
                        found: etag,
                    });
                }
                // The inner store still holds the old version's ETag; ask it
                // unpinned and answer with the new one.
                let resp = self.inner.get_range(bucket, key, range, None).await?;
                Ok(GetResponse {
                    etag: Some(etag),
                    ..resp
                })
            }
        }
    }

    fn describe(&self) -> String {
        format!("faults over {}", self.inner.describe())
    }
}

impl<S: ObjectStore> FaultStore<S> {
    /// The ETag a standing `ChangeEtag` rule gives `key` in listings (without
    /// using the rule up: a listing is not the request the rule counts).
    fn changed_etag(&self, key: &str) -> Option<String> {
        self.rules().iter().find_map(|r| match &r.fault {
            StoreFault::ChangeEtag { etag }
                if r.times > 0
                    && r.skip == 0
                    && r.op.is_none_or(|o| o == Op::List)
                    && r.key.as_deref().is_none_or(|k| k == key) =>
            {
                Some(etag.clone())
            }
            _ => None,
        })
    }
}

/// `body` up to `limit` bytes, then a retryable error, as a connection closed
/// part way through a response reads.
fn cut(
    body: futures::stream::BoxStream<'static, Result<bytes::Bytes, StoreError>>,
    limit: u64,
    bucket: &str,
    key: &str,
) -> futures::stream::BoxStream<'static, Result<bytes::Bytes, StoreError>> {
    let err = StoreError::Transient {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        detail: format!("injected fault: connection closed after {limit} body bytes"),
    };
    // State: the body, bytes delivered, and the error still to deliver (taken
    // once delivered, which ends the stream).
    futures::stream::unfold(
        (body, 0u64, Some(err)),
        move |(mut body, sent, err)| async move {
            let err = err?;
            if sent >= limit {
                // Cut only a body that had more to give.
                let more = body.next().await;
                return more.map(|_| (Err(err), (body, sent, None)));
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    let room = usize::try_from(limit - sent).unwrap_or(usize::MAX);
                    if chunk.len() > room {
                        // The rest stays behind so the next step sees more
                        // to give and cuts there.
                        let part = chunk.slice(..room);
                        let rest = chunk.slice(room..);
                        let body = futures::stream::once(async move { Ok(rest) }).boxed();
                        return Some((Ok(part), (body, limit, Some(err))));
                    }
                    let sent = sent + chunk.len() as u64;
                    Some((Ok(chunk), (body, sent, Some(err))))
                }
                Some(Err(e)) => Some((Err(e), (body, sent, None))),
                None => None,
            }
        },
    )
    .boxed()
}
