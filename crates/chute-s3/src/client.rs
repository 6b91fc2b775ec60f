//! [`Client`]: the retrying, counting front of an [`ObjectStore`], which is what the
//! modes use.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::list::list_all;
use crate::read::{read_stream, with_retries, ReadRequest};
use crate::stats::Stats;
use crate::{
    ListOptions, ObjectMeta, ObjectStore, ReadLimits, ReadStream, RetryPolicy, StoreError,
    MAX_OBJECT_SIZE,
};

/// What [`Client::read_to_bytes`] reserves up front at most: the size asked for
/// comes from a listing or a HEAD, i.e. from the network, and is not trusted
/// with an allocation; the buffer grows as bytes actually arrive.
const MAX_PREALLOCATION: usize = 1 << 20;

#[derive(Clone)]
pub struct Client {
    store: Arc<dyn ObjectStore>,
    policy: RetryPolicy,
    limits: ReadLimits,
    stats: Arc<Stats>,
}

impl Client {
    pub fn new(store: Arc<dyn ObjectStore>, policy: RetryPolicy) -> Self {
        Client {
            store,
            policy,
            limits: ReadLimits::default(),
            stats: Arc::new(Stats::default()),
        }
    }

    /// The same client with other bounds on each read (throughput floor,
    /// total resumptions).
    pub fn with_read_limits(mut self, limits: ReadLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn read_limits(&self) -> &ReadLimits {
        &self.limits
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
        let mut objects = list_all(
            &*self.store,
            &self.policy,
            &self.stats,
            bucket,
            prefix,
            opts,
        )
        .await?;
        for meta in &mut objects {
            clamp_size(bucket, meta);
        }
        Ok(objects)
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
        let mut meta = with_retries(&self.policy, &self.stats, bucket, key, || {
            Stats::add(&self.stats.head_requests, 1);
            self.store.head(bucket, key)
        })
        .await?;
        clamp_size(bucket, &mut meta);
        Ok(meta)
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
            limits: self.limits.clone(),
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
        let mut buf = BytesMut::with_capacity(cap.min(MAX_PREALLOCATION));
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

/// Holds a size from the network to what S3 can store (see [`MAX_OBJECT_SIZE`]).
fn clamp_size(bucket: &str, meta: &mut ObjectMeta) {
    if meta.size > MAX_OBJECT_SIZE {
        tracing::warn!(
            "s3://{bucket}/{}: the server reports {} bytes, more than S3's 5 TiB maximum; \
             treating the object as 5 TiB",
            meta.key,
            meta.size
        );
        meta.size = MAX_OBJECT_SIZE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_from_the_network_are_clamped() {
        let mut meta = ObjectMeta {
            key: "k".into(),
            size: u64::MAX,
            etag: None,
        };
        clamp_size("b", &mut meta);
        assert_eq!(meta.size, 5 << 40);
        meta.size = 7;
        clamp_size("b", &mut meta);
        assert_eq!(meta.size, 7);
    }
}
