//! The backend interface every object store implements, and the values it returns.
//!
//! The interface is deliberately one request deep: no retries, no pagination loops,
//! no resumption. Policy lives in [`crate::Client`] so that S3, the local backend and
//! fault-injecting test wrappers all get identical retry and pinning behaviour.

use std::ops::Range;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::StoreError;

/// The largest object S3 can hold (5 TiB). A size above it in a listing or a
/// HEAD is a server's mistake; [`crate::Client`] clamps it here, so no buffer,
/// range or budget is ever computed from such a size.
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;

/// One object as a listing or HEAD reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// The entity tag, with the quotes S3 puts around it, when the store gives one.
    pub etag: Option<String>,
}

/// One page of a ListObjectsV2-style listing.
#[derive(Debug, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    /// Sub-prefixes rolled up by the delimiter (each ends with the delimiter).
    pub common_prefixes: Vec<String>,
    /// Token for the next page; `None` when this is the last page.
    pub next_token: Option<String>,
}

/// The head of a successful ranged GET, and its body.
pub struct GetResponse {
    /// ETag of the object that is being served, so the caller can check it is the
    /// version it pinned even when the store ignores `If-Match`.
    pub etag: Option<String>,
    /// Bytes the body will carry.
    pub content_length: u64,
    pub body: BoxStream<'static, Result<Bytes, StoreError>>,
}

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// One page of keys under `prefix` (bytewise order), starting after `token`.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StoreError>;

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError>;

    /// One attempt at `range` (non-empty, end exclusive) of an object. With
    /// `if_match`, a store that supports it refuses a different version.
    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<GetResponse, StoreError>;

    /// A short description for logs ("s3 http://127.0.0.1:9000", "local /data").
    fn describe(&self) -> String;
}
