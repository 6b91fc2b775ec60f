//! [`Client`]: the retrying, counting front of an [`ObjectStore`], which is what the
//! modes use.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::list::list_all;
use crate::read::{read_stream, with_retries, ReadRequest};
use crate::stats::Stats;
use crate::{ListOptions, ObjectMeta, ObjectStore, ReadStream, RetryPolicy, StoreError};

#[derive(Clone)]
pub struct Client {
    store: Arc<dyn ObjectStore>,
    policy: RetryPolicy,
    stats: Arc<Stats>,
}

impl Client {
    pub fn new(store: Arc<dyn ObjectStore>, policy: RetryPolicy) -> Self {
        Client {
            store,
            policy,
            stats: Arc::new(Stats::default()),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Every object under `prefix`, sorted bytewise by key, listed with
    /// concurrent sub-prefix chains.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        opts: &ListOptions,
    ) -> Result<Vec<ObjectMeta>, StoreError> {
        list_all(
            &*self.store,
            &self.policy,
            &self.stats,
            bucket,
            prefix,
            opts,
        )
        .await
    }

    /// Every object under `prefix` with one chain of pages (for comparison and
    /// for stores that gain nothing from fan-out).
    pub async fn list_serial(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<ObjectMeta>, StoreError> {
        let opts = ListOptions {
            concurrency: 1,
            fanout_depth: 0,
        };
        self.list(bucket, prefix, &opts).await
    }

    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        with_retries(&self.policy, &self.stats, bucket, key, || {
            Stats::add(&self.stats.head_requests, 1);
            self.store.head(bucket, key)
        })
        .await
    }

    /// The bytes of `range` of an object, as one stream however many attempts it
    /// takes. `etag` pins the version (pass what the listing said); with `None`
    /// the version of the first response is pinned.
    pub fn read(
        &self,
        bucket: &str,
        key: &str,
        range: Range<u64>,
        etag: Option<String>,
    ) -> ReadStream {
        read_stream(ReadRequest {
            store: self.store.clone(),
            policy: self.policy.clone(),
            stats: self.stats.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            range,
            etag,
        })
    }

    /// A whole range collected into memory; for small objects and manifests.
    pub async fn read_to_bytes(
        &self,
        bucket: &str,
        key: &str,
        range: Range<u64>,
        etag: Option<String>,
    ) -> Result<Bytes, StoreError> {
        let cap = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(0);
        let mut buf = BytesMut::with_capacity(cap.min(64 << 20));
        let mut stream = self.read(bucket, key, range, etag);
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }

    /// A whole object (HEAD for its size and version, then a pinned read).
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Bytes, StoreError> {
        let meta = self.head(bucket, key).await?;
        if meta.size == 0 {
            return Ok(Bytes::new());
        }
        self.read_to_bytes(bucket, key, 0..meta.size, meta.etag)
            .await
    }
}
