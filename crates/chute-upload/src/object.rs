//! [`ObjectUpload`]: one object written as a stream of bytes of unknown length,
//! sent as a parallel multipart upload (or one PUT when it turns out small), then
//! verified against what the store reports.
//!
//! The caller appends bytes in order; every `part_size` bytes become a part that
//! is hashed and uploaded by its own task while the caller produces the next, at
//! most as many at a time as the shared `slots` semaphore allows (shared, so that
//! several objects uploaded together stay within one budget), so memory stays
//! within about `(slots + 1) * part_size` whatever the objects' sizes. A failed part is
//! retried whole from memory (see [`chute_s3::Writer`]).
//!
//! Verification, in three layers: each body carries its MD5 (`Content-MD5`), so
//! the store refuses bytes damaged on the way; each part's returned ETag is
//! compared with that MD5 when it is one; and after completion a HEAD must report
//! the size sent and an ETag equal to either the multipart form S3 uses (the MD5
//! of the parts' MD5s, `-<parts>`) or the MD5 of the whole object (what some
//! stores, `chute serve` among them, give). The whole-object MD5 is computed on a
//! thread of its own as the bytes go by. An ETag in neither form (SSE-KMS objects
//! on AWS) leaves the size and the per-part checks.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chute_s3::{Completion, UploadedPart, Writer};
use md5::{Digest, Md5};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::UploadError;

/// S3 refuses a multipart upload of more parts than this.
const MAX_PARTS: i32 = 10_000;
/// Parts per part size: after this many, parts double in size, so an object of
/// any size S3 accepts fits in [`MAX_PARTS`] without knowing its size up front.
const PARTS_PER_SIZE: i32 = 1_000;
/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// What was uploaded and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedObject {
    /// `s3://bucket/key`.
    pub uri: String,
    pub bytes: u64,
    /// 0 for a single PUT.
    pub parts: usize,
    /// Hex MD5 of the bytes sent.
    pub md5: String,
    /// The ETag the store reports (quotes removed).
    pub etag: Option<String>,
}

pub(crate) struct ObjectUpload {
    writer: Writer,
    bucket: String,
    key: String,
    uri: String,
    part_size: usize,
    slots: Arc<Semaphore>,
    buf: BytesMut,
    upload_id: Option<String>,
    next_number: i32,
    in_flight: JoinSet<Result<(UploadedPart, [u8; 16]), UploadError>>,
    done: Vec<(UploadedPart, [u8; 16])>,
    total: u64,
    md5_tx: Option<mpsc::Sender<Bytes>>,
    md5_task: JoinHandle<[u8; 16]>,
}

impl ObjectUpload {
    pub(crate) fn new(
        writer: Writer,
        bucket: &str,
        key: &str,
        part_size: usize,
        slots: Arc<Semaphore>,
    ) -> ObjectUpload {
        let (md5_tx, mut md5_rx) = mpsc::channel::<Bytes>(64);
        let md5_task = tokio::task::spawn_blocking(move || {
            let mut h = Md5::new();
            while let Some(b) = md5_rx.blocking_recv() {
                h.update(&b);
            }
            h.finalize().into()
        });
        let part_size = part_size.max(MIN_PART_SIZE);
        ObjectUpload {
            writer,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            uri: format!("s3://{bucket}/{key}"),
            part_size,
            slots,
            buf: BytesMut::with_capacity(part_size),
            upload_id: None,
            next_number: 1,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            total: 0,
            md5_tx: Some(md5_tx),
            md5_task,
        }
    }

    /// The size the part numbered `number` is cut at.
    fn part_size_for(&self, number: i32) -> usize {
        let doublings = u32::try_from((number - 1) / PARTS_PER_SIZE).unwrap_or(0);
        self.part_size.saturating_mul(1usize << doublings.min(10))
    }

    /// Appends bytes; waits while every slot has a part in flight.
    pub(crate) async fn write(&mut self, data: Bytes) -> Result<(), UploadError> {
        if data.is_empty() {
            return Ok(());
        }
        self.total += data.len() as u64;
        if let Some(tx) = &self.md5_tx {
            if tx.send(data.clone()).await.is_err() {
                return Err(UploadError::Internal("the MD5 thread stopped".into()));
            }
        }
        self.buf.extend_from_slice(&data);
        if self.buf.len() >= self.part_size_for(self.next_number) {
            self.cut_part().await?;
        }
        Ok(())
    }

    /// Sends what is buffered as the next part.
    async fn cut_part(&mut self) -> Result<(), UploadError> {
        self.reap_finished()?;
        if self.next_number > MAX_PARTS {
            return Err(UploadError::Verify {
                uri: self.uri.clone(),
                detail: format!("more than {MAX_PARTS} parts"),
            });
        }
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self
                    .writer
                    .create_multipart_upload(&self.bucket, &self.key)
                    .await
                    .map_err(|e| UploadError::store(&self.uri, e))?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| UploadError::Internal("upload slots closed".into()))?;
        let cap = self.part_size_for(self.next_number + 1);
        let body = std::mem::replace(&mut self.buf, BytesMut::with_capacity(cap)).freeze();
        let number = self.next_number;
        self.next_number += 1;
        let job = PartJob {
            writer: self.writer.clone(),
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            uri: self.uri.clone(),
            upload_id,
            number,
            body,
        };
        self.in_flight.spawn(job.run(permit));
        Ok(())
    }

    /// Collects parts that have finished, failing fast on the first error.
    fn reap_finished(&mut self) -> Result<(), UploadError> {
        while let Some(joined) = self.in_flight.try_join_next() {
            self.done.push(joined_part(joined)?);
        }
        Ok(())
    }

    /// Sends the rest, completes the upload and verifies it. On failure the
    /// multipart upload is aborted, so no parts are left to pay for.
    pub(crate) async fn finish(mut self) -> Result<UploadedObject, UploadError> {
        match self.finish_inner().await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Gives up: stops the part uploads and aborts the multipart upload.
    pub(crate) async fn abort(&mut self) {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if let Some(id) = self.upload_id.take() {
            if let Err(e) = self
                .writer
                .abort_multipart_upload(&self.bucket, &self.key, &id)
                .await
            {
                tracing::warn!(object = %self.uri, error = %e, "could not abort the multipart upload; its parts stay until a lifecycle rule removes them");
            }
        }
    }

    async fn finish_inner(&mut self) -> Result<UploadedObject, UploadError> {
        drop(self.md5_tx.take());
        if self.upload_id.is_none() {
            return self.put_whole().await;
        }
        if !self.buf.is_empty() {
            self.cut_part().await?;
        }
        while let Some(joined) = self.in_flight.join_next().await {
            self.done.push(joined_part(joined)?);
        }
        let whole_md5 = self.whole_md5().await?;
        self.done.sort_by_key(|(p, _)| p.number);
        let parts: Vec<UploadedPart> = self.done.iter().map(|(p, _)| p.clone()).collect();
        let upload_id = self.upload_id.clone().unwrap_or_default();
        let completion = self
            .writer
            .complete_multipart_upload(&self.bucket, &self.key, &upload_id, &parts)
            .await
            .map_err(|e| UploadError::store(&self.uri, e))?;
        // Completed: there is nothing left to abort.
        self.upload_id = None;
        if let Completion::Done(Some(etag)) = &completion {
            self.check_etag(etag, &whole_md5)?;
        }
        let etag = self.verify_head(&whole_md5).await?;
        Ok(UploadedObject {
            uri: self.uri.clone(),
            bytes: self.total,
            parts: parts.len(),
            md5: hex::encode(whole_md5),
            etag,
        })
    }

    async fn put_whole(&mut self) -> Result<UploadedObject, UploadError> {
        let body = std::mem::take(&mut self.buf).freeze();
        let whole_md5 = self.whole_md5().await?;
        let etag = self
            .writer
            .put_object(&self.bucket, &self.key, body, Some(whole_md5))
            .await
            .map_err(|e| UploadError::store(&self.uri, e))?;
        if let Some(etag) = &etag {
            self.check_etag(etag, &whole_md5)?;
        }
        let etag = self.verify_head(&whole_md5).await?;
        Ok(UploadedObject {
            uri: self.uri.clone(),
            bytes: self.total,
            parts: 0,
            md5: hex::encode(whole_md5),
            etag,
        })
    }

    async fn whole_md5(&mut self) -> Result<[u8; 16], UploadError> {
        drop(self.md5_tx.take());
        (&mut self.md5_task)
            .await
            .map_err(|e| UploadError::Internal(format!("the MD5 thread failed: {e}")))
    }

    /// The ETag the parts sent should give in S3's multipart form.
    fn multipart_etag(&self) -> Option<String> {
        if self.done.is_empty() {
            return None;
        }
        let mut h = Md5::new();
        for (_, md5) in &self.done {
            h.update(md5);
        }
        let digest: [u8; 16] = h.finalize().into();
        Some(format!("{}-{}", hex::encode(digest), self.done.len()))
    }

    fn check_etag(&self, etag: &str, whole_md5: &[u8; 16]) -> Result<(), UploadError> {
        let bare = bare_etag(etag);
        let whole = hex::encode(whole_md5);
        if is_md5_hex(bare) {
            if bare != whole {
                return Err(self.mismatch(format!(
                    "the store reports ETag {bare}, the MD5 of the bytes sent is {whole}"
                )));
            }
        } else if let Some((hash, _)) = bare.split_once('-') {
            if is_md5_hex(hash) {
                let expected = self.multipart_etag().unwrap_or_default();
                if bare != expected {
                    return Err(self.mismatch(format!(
                        "the store reports ETag {bare}, the parts sent give {expected}"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn verify_head(&self, whole_md5: &[u8; 16]) -> Result<Option<String>, UploadError> {
        let meta = self
            .writer
            .head(&self.bucket, &self.key)
            .await
            .map_err(|e| UploadError::Verify {
                uri: self.uri.clone(),
                detail: format!("HEAD after the upload failed: {e}"),
            })?;
        if meta.size != self.total {
            return Err(self.mismatch(format!(
                "the store reports {} bytes, {} were sent",
                meta.size, self.total
            )));
        }
        if let Some(etag) = &meta.etag {
            self.check_etag(etag, whole_md5)?;
        }
        Ok(meta.etag.map(|e| bare_etag(&e).to_owned()))
    }

    fn mismatch(&self, detail: String) -> UploadError {
        UploadError::Verify {
            uri: self.uri.clone(),
            detail,
        }
    }
}

impl Drop for ObjectUpload {
    fn drop(&mut self) {
        // Dropped without finish() or abort(): stop the part tasks at least. The
        // upload itself can only be aborted asynchronously, which the callers do.
        self.in_flight.abort_all();
    }
}

struct PartJob {
    writer: Writer,
    bucket: String,
    key: String,
    uri: String,
    upload_id: String,
    number: i32,
    body: Bytes,
}

impl PartJob {
    async fn run(
        self,
        _permit: OwnedSemaphorePermit,
    ) -> Result<(UploadedPart, [u8; 16]), UploadError> {
        let body = self.body.clone();
        let md5: [u8; 16] = tokio::task::spawn_blocking(move || Md5::digest(&body).into())
            .await
            .map_err(|e| UploadError::Internal(format!("hashing a part failed: {e}")))?;
        let part = self
            .writer
            .upload_part(
                &self.bucket,
                &self.key,
                &self.upload_id,
                self.number,
                self.body,
                Some(md5),
            )
            .await
            .map_err(|e| UploadError::store(&self.uri, e))?;
        let returned = bare_etag(&part.etag);
        if is_md5_hex(returned) && returned != hex::encode(md5) {
            return Err(UploadError::Verify {
                uri: self.uri,
                detail: format!(
                    "part {} came back with ETag {returned}, its MD5 is {}",
                    self.number,
                    hex::encode(md5)
                ),
            });
        }
        Ok((part, md5))
    }
}

fn joined_part(
    joined: Result<Result<(UploadedPart, [u8; 16]), UploadError>, tokio::task::JoinError>,
) -> Result<(UploadedPart, [u8; 16]), UploadError> {
    joined.map_err(|e| UploadError::Internal(format!("a part upload task failed: {e}")))?
}

pub(crate) fn bare_etag(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_forms() {
        assert_eq!(bare_etag("\"abc\""), "abc");
        assert!(is_md5_hex("d41d8cd98f00b204e9800998ecf8427e"));
        assert!(!is_md5_hex("d41d8cd98f00b204e9800998ecf8427e-2"));
    }
}
