//! The write half of the object-store layer: single PUTs and multipart uploads,
//! used for a training job's outputs and checkpoints (chute never writes to a
//! channel's source).
//!
//! As on the read side there are two levels: [`ObjectWrite`] is one request deep
//! and [`Writer`] puts the shared [`RetryPolicy`] on top. Every request body is
//! held in memory as [`Bytes`], so a failed PUT or part is simply sent again,
//! whole; S3 keeps the last copy of a part number, which makes those retries safe.
//! Each body can carry its MD5 (`Content-MD5`), so the store itself refuses bytes
//! damaged on the way.

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use crate::read::with_retries;
use crate::stats::Stats;
use crate::{Client, ObjectMeta, ObjectStore, RetryPolicy, S3Config, S3Store, StoreError};

/// One uploaded part, as CompleteMultipartUpload needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    /// 1-based, as S3 numbers parts.
    pub number: i32,
    /// The part's ETag as the store returned it (quotes kept).
    pub etag: String,
}

/// The backend write interface: one attempt per call, no retries.
#[async_trait::async_trait]
pub trait ObjectWrite: Send + Sync + 'static {
    /// One PUT of a whole object; returns its ETag when the store gives one.
    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        md5: Option<[u8; 16]>,
    ) -> Result<Option<String>, StoreError>;

    /// Starts a multipart upload; returns its upload id.
    async fn create_multipart_upload(&self, bucket: &str, key: &str) -> Result<String, StoreError>;

    /// Uploads part `number` (1-based); returns the part's ETag.
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        md5: Option<[u8; 16]>,
    ) -> Result<String, StoreError>;

    /// Joins the parts into the object; returns its ETag when the store gives one.
    async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<Option<String>, StoreError>;

    /// Discards an upload's parts.
    async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StoreError>;
}

fn content_md5(md5: Option<[u8; 16]>) -> Option<String> {
    md5.map(aws_smithy_types::base64::encode)
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_owned)
}

#[async_trait::async_trait]
impl ObjectWrite for S3Store {
    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        md5: Option<[u8; 16]>,
    ) -> Result<Option<String>, StoreError> {
        let out = self
            .client_for(bucket)
            .await?
            .put_object()
            .bucket(bucket)
            .key(key)
            .set_content_md5(content_md5(md5))
            .content_length(i64::try_from(body.len()).unwrap_or(i64::MAX))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.classify(e, bucket, key))?;
        Ok(non_empty(out.e_tag()))
    }

    async fn create_multipart_upload(&self, bucket: &str, key: &str) -> Result<String, StoreError> {
        let out = self
            .client_for(bucket)
            .await?
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify(e, bucket, key))?;
        non_empty(out.upload_id()).ok_or_else(|| {
            StoreError::other(bucket, key, "CreateMultipartUpload returned no upload id")
        })
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        md5: Option<[u8; 16]>,
    ) -> Result<String, StoreError> {
        let out = self
            .client_for(bucket)
            .await?
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .set_content_md5(content_md5(md5))
            .content_length(i64::try_from(body.len()).unwrap_or(i64::MAX))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.classify(e, bucket, key))?;
        non_empty(out.e_tag()).ok_or_else(|| {
            StoreError::other(
                bucket,
                key,
                format!("UploadPart returned no ETag for part {number}"),
            )
        })
    }

    async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<Option<String>, StoreError> {
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(&p.etag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let out = self
            .client_for(bucket)
            .await?
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .map_err(|e| self.classify(e, bucket, key))?;
        Ok(non_empty(out.e_tag()))
    }

    async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        self.client_for(bucket)
            .await?
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.classify(e, bucket, key))?;
        Ok(())
    }
}

/// What [`Writer::complete_multipart_upload`] knows about the finished object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The store answered; its ETag, if it gave one.
    Done(Option<String>),
    /// An earlier attempt was cut off and a retry found the upload already gone:
    /// it most likely completed. The caller must check the object (HEAD) before
    /// trusting it.
    Unconfirmed,
}

/// The retrying front of an [`ObjectWrite`] store, with a read [`Client`] on the
/// same store for verification.
#[derive(Clone)]
pub struct Writer {
    store: Arc<dyn ObjectWrite>,
    reader: Client,
    policy: RetryPolicy,
    stats: Arc<Stats>,
}

impl Writer {
    pub fn new<S: ObjectWrite + ObjectStore>(store: Arc<S>, policy: RetryPolicy) -> Writer {
        let reader = Client::new(store.clone(), policy.clone());
        let stats = reader.stats().clone();
        Writer {
            store,
            reader,
            policy,
            stats,
        }
    }

    /// A writer for the S3 endpoint `cfg` describes.
    pub async fn s3(cfg: &S3Config, policy: RetryPolicy) -> Result<Writer, StoreError> {
        Ok(Writer::new(Arc::new(S3Store::new(cfg).await?), policy))
    }

    /// A retrying reader on the same store (HEADs and GETs for verification).
    pub fn reader(&self) -> &Client {
        &self.reader
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        md5: Option<[u8; 16]>,
    ) -> Result<Option<String>, StoreError> {
        with_retries(&self.policy, &self.stats, bucket, key, || {
            self.store.put_object(bucket, key, body.clone(), md5)
        })
        .await
    }

    pub async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<String, StoreError> {
        with_retries(&self.policy, &self.stats, bucket, key, || {
            self.store.create_multipart_upload(bucket, key)
        })
        .await
    }

    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        md5: Option<[u8; 16]>,
    ) -> Result<UploadedPart, StoreError> {
        let etag = with_retries(&self.policy, &self.stats, bucket, key, || {
            self.store
                .upload_part(bucket, key, upload_id, number, body.clone(), md5)
        })
        .await?;
        Ok(UploadedPart { number, etag })
    }

    /// Completes an upload. A retry that finds the upload gone (a 404: the first
    /// attempt completed but its answer was lost) gives [`Completion::Unconfirmed`].
    pub async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<Completion, StoreError> {
        let mut attempts = 0u32;
        let result = with_retries(&self.policy, &self.stats, bucket, key, || {
            attempts += 1;
            let retry = attempts > 1;
            async move {
                match self
                    .store
                    .complete_multipart_upload(bucket, key, upload_id, parts)
                    .await
                {
                    Ok(etag) => Ok(Completion::Done(etag)),
                    Err(e) if retry && upload_gone(&e) => Ok(Completion::Unconfirmed),
                    Err(e) => Err(e),
                }
            }
        })
        .await?;
        Ok(result)
    }

    pub async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        with_retries(&self.policy, &self.stats, bucket, key, || {
            self.store.abort_multipart_upload(bucket, key, upload_id)
        })
        .await
    }

    /// HEAD of an object, retried.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        self.reader.head(bucket, key).await
    }
}

fn upload_gone(e: &StoreError) -> bool {
    match e {
        StoreError::NoSuchKey { .. } => true,
        StoreError::Other { detail, .. } => detail.contains("NoSuchUpload"),
        _ => false,
    }
}
