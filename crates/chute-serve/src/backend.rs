//! The S3 implementation: s3s-fs for writes and bucket operations, our own reads.
//!
//! s3s-fs does the wire-level work of uploads (chunked signing, checksums, multipart
//! assembly, sidecar metadata) well, so those are delegated, after refusing keys that
//! a directory cannot hold faithfully, paths that pass through a symlink, and buckets
//! that do not exist (s3s-fs would silently create them). Reads are where it falls
//! short of real S3 for a training data client: listings carry no ETags and follow
//! symlinks, objects written straight into the directory are re-hashed on every GET
//! and HEAD, conditional headers are ignored and bodies trickle out in 4 KiB chunks.
//! Listings, GET and HEAD are therefore served here, from regular files only (see
//! [`confined`]), with ETags from [`EtagCache`] for every object.
//!
//! A write or delete is checked here and then performed by s3s-fs, which resolves
//! the path again: a symlink planted in that instant by someone who can already
//! write into ROOT could still redirect it. Reads have no such window.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use s3s_fs::FileSystem;

use crate::attrs;
use crate::body::FileBody;
use crate::conditions::{http_last_modified, Preconditions};
use crate::confined::{self, Lookup};
use crate::etag::{EtagCache, Versioned};
use crate::list;
use crate::paths::{bucket_dir, check_key, object_rel_path, url_encode, KeyProblem};

/// S3 never returns more than this many keys per listing page.
const MAX_KEYS_CAP: i32 = 1000;

/// Files opened and (if new) hashed at once while filling in a listing's ETags.
const LIST_ETAG_CONCURRENCY: usize = 16;

/// A directory served as S3.
pub(crate) struct Backend {
    fs: FileSystem,
    root: PathBuf,
    etags: EtagCache,
}

impl Backend {
    /// `root` must be canonical, so that our paths and s3s-fs's agree.
    pub(crate) fn new(root: PathBuf) -> Result<Self, s3s_fs::Error> {
        let fs = FileSystem::new(&root)?;
        Ok(Backend {
            fs,
            root,
            etags: EtagCache::default(),
        })
    }

    async fn bucket_exists(&self, bucket: &str) -> bool {
        match bucket_dir(&self.root, bucket) {
            // A symlink in ROOT is no bucket, wherever it points.
            Some(dir) => tokio::fs::symlink_metadata(dir)
                .await
                .is_ok_and(|m| m.is_dir()),
            None => false,
        }
    }

    /// NoSuchBucket unless `bucket` is a real directory in ROOT.
    async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        if self.bucket_exists(bucket).await {
            Ok(())
        } else {
            Err(no_such_bucket(bucket))
        }
    }

    /// What `bucket/key` names on disk, without following symlinks.
    async fn lookup(&self, rel: PathBuf) -> io::Result<Lookup> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || confined::lookup(&root, &rel))
            .await
            .map_err(io::Error::other)?
    }

    /// The right "not found" for `bucket/key`: S3 reports a missing bucket first.
    async fn not_found(&self, bucket: &str, key: &str) -> S3Error {
        if self.bucket_exists(bucket).await {
            no_such_key(bucket, key)
        } else {
            no_such_bucket(bucket)
        }
    }

    /// Opens the file behind `bucket/key` and establishes its version and ETag from
    /// that same descriptor.
    async fn open_versioned(&self, bucket: &str, key: &str) -> S3Result<(Arc<File>, Versioned)> {
        let Some(rel) = object_rel_path(bucket, key) else {
            return Err(self.not_found(bucket, key).await);
        };
        let file = match open_regular_file(self.root.clone(), rel).await {
            Ok(Some(file)) => Arc::new(file),
            Ok(None) => return Err(self.not_found(bucket, key).await),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(s3_error!(
                    AccessDenied,
                    "the server may not read {bucket}/{key}: {e}"
                ))
            }
            Err(e) => return Err(internal(e, "opening", bucket, key)),
        };
        let versioned = self
            .etags
            .versioned(&file)
            .await
            .map_err(|e| internal(e, "hashing", bucket, key))?;
        Ok((file, versioned))
    }

    /// Refuses uploads that S3 would refuse (missing bucket), that a directory
    /// cannot store under the key they were given, or that would be written
    /// through a symlink.
    async fn check_writable(&self, bucket: &str, key: &str) -> S3Result<()> {
        self.require_bucket(bucket).await?;
        check_key(key).map_err(|problem| key_refused(key, problem))?;
        let found = self
            .lookup(Path::new(bucket).join(key))
            .await
            .map_err(|e| internal(e, "inspecting", bucket, key))?;
        let marker = key.ends_with('/');
        match found {
            Lookup::Missing => Ok(()),
            Lookup::File if !marker => Ok(()),
            Lookup::Dir if marker => Ok(()),
            Lookup::File => Err(s3_error!(
                InvalidArgument,
                "cannot store key {key:?}: an object of that name exists, so it cannot also be a directory"
            )),
            Lookup::Dir => Err(s3_error!(
                InvalidArgument,
                "cannot store key {key:?}: other keys start with {key:?} followed by '/', and a directory-backed store cannot keep an object there too"
            )),
            Lookup::BelowFile => Err(s3_error!(
                InvalidArgument,
                "cannot store key {key:?}: a shorter key that is a prefix of it up to a '/' is an object, so it cannot also be a directory"
            )),
            Lookup::NotServed => Err(s3_error!(
                AccessDenied,
                "cannot store key {key:?}: its path passes through a symlink or a special file, which this server neither follows nor replaces"
            )),
        }
    }

    /// The current ETag of `bucket/key`, or `None` when there is no such object.
    async fn current_etag(&self, bucket: &str, key: &str) -> S3Result<Option<ETag>> {
        match self.open_versioned(bucket, key).await {
            Ok((_, v)) => Ok(Some(ETag::Strong(v.etag))),
            Err(e) if *e.code() == S3ErrorCode::NoSuchKey => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Fills in ETag, size and mtime of every listed object from one look at the file,
    /// so the three always agree; objects that vanished since the scan are dropped.
    async fn with_etags(&self, bucket: &str, objects: Vec<Object>) -> S3Result<Vec<Object>> {
        let filled: Vec<Option<Object>> = futures::stream::iter(objects)
            .map(|mut obj| async move {
                let Some(key) = obj.key.as_deref() else {
                    return Ok(Some(obj));
                };
                match self.open_versioned(bucket, key).await {
                    Ok((_, v)) => {
                        obj.e_tag = Some(ETag::Strong(v.etag));
                        obj.size = Some(to_i64(v.stamp.size)?);
                        obj.last_modified = Some(Timestamp::from(v.modified));
                        Ok(Some(obj))
                    }
                    Err(e) if *e.code() == S3ErrorCode::NoSuchKey => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(LIST_ETAG_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(filled.into_iter().flatten().collect())
    }

    fn root(&self) -> &Path {
        &self.root
    }

    /// One page of `bucket`'s listing: the objects (ETags filled in) and common
    /// prefixes after `after`, and where the next page starts.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max_keys: MaxKeys,
    ) -> S3Result<(Vec<Object>, Vec<CommonPrefix>, Option<String>)> {
        self.require_bucket(bucket).await?;
        let Some(dir) = bucket_dir(&self.root, bucket) else {
            return Err(no_such_bucket(bucket));
        };
        let owned_prefix = prefix.to_owned();
        let scanned = tokio::task::spawn_blocking(move || list::scan(&dir, &owned_prefix))
            .await
            .map_err(io::Error::other)
            .and_then(|scan| scan);
        let keys = scanned.map_err(|e| {
            tracing::warn!(%bucket, error = %e, "I/O error listing bucket");
            S3Error::with_source(S3ErrorCode::InternalError, Box::new(e))
        })?;
        let max_keys = usize::try_from(max_keys).unwrap_or(0);
        let page = list::page(&keys, prefix, delimiter, after, max_keys);
        let objects = page
            .keys
            .into_iter()
            .map(|key| Object {
                key: Some(key),
                ..Default::default()
            })
            .collect();
        let objects = self.with_etags(bucket, objects).await?;
        let prefixes = page
            .common_prefixes
            .into_iter()
            .map(|p| CommonPrefix { prefix: Some(p) })
            .collect();
        Ok((objects, prefixes, page.next))
    }
}

/// Opens `ROOT/rel` for reading; `Ok(None)` when there is no regular file there
/// (missing, a path component is a file or a symlink, or it is a directory such as
/// a "folder" marker).
async fn open_regular_file(root: PathBuf, rel: PathBuf) -> io::Result<Option<File>> {
    tokio::task::spawn_blocking(move || confined::open_file(&root, &rel))
        .await
        .map_err(io::Error::other)?
}

/// The S3 error for a key the directory cannot hold, naming the key.
fn key_refused(key: &str, problem: KeyProblem) -> S3Error {
    if problem.too_long() {
        s3_error!(
            KeyTooLongError,
            "cannot store key {key:?}: {}",
            problem.describe()
        )
    } else {
        s3_error!(
            InvalidArgument,
            "cannot store key {key:?}: {}",
            problem.describe()
        )
    }
}

/// Optional strings as S3 echoes them: absent rather than empty.
fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// The prefix a listing matches: a leading `/` cannot begin a key here.
fn list_prefix(prefix: Option<&str>) -> &str {
    prefix.unwrap_or("").trim_start_matches('/')
}

/// What S3 reports for an object stored without a content type.
fn default_content_type() -> String {
    "binary/octet-stream".to_owned()
}

fn no_such_bucket(bucket: &str) -> S3Error {
    s3_error!(
        NoSuchBucket,
        "The specified bucket does not exist: {bucket}"
    )
}

fn no_such_key(bucket: &str, key: &str) -> S3Error {
    s3_error!(
        NoSuchKey,
        "The specified key does not exist: {bucket}/{key}"
    )
}

fn internal(e: io::Error, doing: &str, bucket: &str, key: &str) -> S3Error {
    tracing::warn!(%bucket, %key, error = %e, "I/O error {doing} object");
    S3Error::with_source(S3ErrorCode::InternalError, Box::new(e))
}

fn to_i64(n: u64) -> S3Result<i64> {
    i64::try_from(n).map_err(|_| {
        s3_error!(
            InternalError,
            "size {n} does not fit S3's 64-bit signed length"
        )
    })
}

/// Start, length and `Content-Range` of the bytes to send.
fn resolve_range(range: Option<Range>, size: u64) -> S3Result<(u64, u64, Option<String>)> {
    let Some(range) = range else {
        return Ok((0, size, None));
    };
    // S3 refuses any range on an empty object; `Range::check` alone would accept a
    // suffix range there and produce a nonsensical `bytes 0--1/0`.
    let checked = if size == 0 {
        None
    } else {
        range.check(size).ok()
    };
    let Some(r) = checked else {
        let mut err = s3_error!(
            InvalidRange,
            "The requested range is not satisfiable: {} of a {size}-byte object",
            range.to_header_string()
        );
        let mut headers = err.headers().cloned().unwrap_or_default();
        if let Ok(value) = format!("bytes */{size}").parse() {
            headers.insert("content-range", value);
        }
        err.set_headers(headers);
        return Err(err);
    };
    let content_range = format!("bytes {}-{}/{size}", r.start, r.end - 1);
    Ok((r.start, r.end - r.start, Some(content_range)))
}

fn check_part_number(part_number: Option<PartNumber>) -> S3Result<()> {
    match part_number {
        // Objects here are never multipart on read, so the whole object is part 1.
        None | Some(1) => Ok(()),
        Some(n) => Err(s3_error!(
            InvalidArgument,
            "part number {n} does not exist: objects on this server have a single part"
        )),
    }
}

fn wants_url_encoding(encoding_type: Option<&EncodingType>) -> bool {
    encoding_type.is_some_and(|e| e.as_str() == EncodingType::URL)
}

fn encode_opt(s: &mut Option<String>) {
    if let Some(v) = s.as_mut() {
        *v = url_encode(v);
    }
}

fn encode_listing(contents: &mut Option<Vec<Object>>, prefixes: &mut Option<Vec<CommonPrefix>>) {
    for obj in contents.iter_mut().flatten() {
        encode_opt(&mut obj.key);
    }
    for p in prefixes.iter_mut().flatten() {
        encode_opt(&mut p.prefix);
    }
}

fn clamp_max_keys(max_keys: Option<MaxKeys>) -> Option<MaxKeys> {
    Some(max_keys.unwrap_or(MAX_KEYS_CAP).clamp(0, MAX_KEYS_CAP))
}

#[async_trait::async_trait]
impl S3 for Backend {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        // A single-owner server: an existing bucket is always the caller's own.
        self.fs.create_bucket(req).await.map_err(|e| {
            if *e.code() == S3ErrorCode::BucketAlreadyExists {
                s3_error!(BucketAlreadyOwnedByYou)
            } else {
                e
            }
        })
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        self.fs.head_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        self.fs.delete_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        self.fs.get_bucket_location(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let max_keys = clamp_max_keys(input.max_keys).unwrap_or(MAX_KEYS_CAP);
        let (contents, prefixes, next) = self
            .list_page(
                &input.bucket,
                list_prefix(input.prefix.as_deref()),
                input.delimiter.as_deref(),
                input.marker.as_deref(),
                max_keys,
            )
            .await?;
        let mut out = ListObjectsOutput {
            contents: non_empty(contents),
            common_prefixes: non_empty(prefixes),
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            prefix: input.prefix,
            marker: input.marker,
            max_keys: Some(max_keys),
            is_truncated: Some(next.is_some()),
            next_marker: next,
            ..Default::default()
        };
        if wants_url_encoding(out.encoding_type.as_ref()) {
            encode_listing(&mut out.contents, &mut out.common_prefixes);
            encode_opt(&mut out.prefix);
            encode_opt(&mut out.delimiter);
            encode_opt(&mut out.marker);
            encode_opt(&mut out.next_marker);
        }
        Ok(S3Response::new(out))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max_keys = clamp_max_keys(input.max_keys).unwrap_or(MAX_KEYS_CAP);
        // Both may be given; the later of the two is where the page starts.
        let after = match (
            input.continuation_token.as_deref(),
            input.start_after.as_deref(),
        ) {
            (Some(token), Some(start)) => Some(token.max(start)),
            (token, start) => token.or(start),
        };
        let (contents, prefixes, next) = self
            .list_page(
                &input.bucket,
                list_prefix(input.prefix.as_deref()),
                input.delimiter.as_deref(),
                after,
                max_keys,
            )
            .await?;
        let count = i32::try_from(contents.len() + prefixes.len()).unwrap_or(i32::MAX);
        let mut out = ListObjectsV2Output {
            key_count: Some(count),
            contents: non_empty(contents),
            common_prefixes: non_empty(prefixes),
            continuation_token: input.continuation_token,
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            prefix: input.prefix,
            start_after: input.start_after,
            max_keys: Some(max_keys),
            is_truncated: Some(next.is_some()),
            next_continuation_token: next,
            ..Default::default()
        };
        if wants_url_encoding(out.encoding_type.as_ref()) {
            encode_listing(&mut out.contents, &mut out.common_prefixes);
            encode_opt(&mut out.prefix);
            encode_opt(&mut out.delimiter);
            encode_opt(&mut out.start_after);
        }
        Ok(S3Response::new(out))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        check_part_number(input.part_number)?;
        let (_file, v) = self.open_versioned(&input.bucket, &input.key).await?;
        let etag = ETag::Strong(v.etag);
        let last_modified = http_last_modified(v.modified);
        Preconditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .check(&etag, &last_modified)?;
        let mut stored = attrs::load(self.root(), &input.bucket, &input.key).await;
        // A Range on HEAD is ignored: s3s always answers HEAD with 200, and a 200 must
        // describe the whole object.
        let output = HeadObjectOutput {
            accept_ranges: Some("bytes".to_owned()),
            content_length: Some(to_i64(v.stamp.size)?),
            e_tag: Some(etag),
            last_modified: Some(last_modified),
            metadata: stored.metadata(),
            expires: stored.expires(),
            content_type: Some(
                stored
                    .content_type
                    .take()
                    .unwrap_or_else(default_content_type),
            ),
            content_encoding: stored.content_encoding.take(),
            content_disposition: stored.content_disposition.take(),
            content_language: stored.content_language.take(),
            cache_control: stored.cache_control.take(),
            website_redirect_location: stored.website_redirect_location.take(),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        check_part_number(input.part_number)?;
        let (file, v) = self.open_versioned(&input.bucket, &input.key).await?;
        let etag = ETag::Strong(v.etag);
        let last_modified = http_last_modified(v.modified);
        // Preconditions come before the range, as RFC 9110 orders them: a stale pin
        // is reported as 412 even when the range would not fit the new version.
        Preconditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .check(&etag, &last_modified)?;
        let (start, len, content_range) = resolve_range(input.range, v.stamp.size)?;
        let mut stored = attrs::load(self.root(), &input.bucket, &input.key).await;
        let body = (len > 0).then(|| StreamingBlob::new(FileBody::spawn(file, start, len)));
        let output = GetObjectOutput {
            accept_ranges: Some("bytes".to_owned()),
            body,
            content_length: Some(to_i64(len)?),
            content_range,
            e_tag: Some(etag),
            last_modified: Some(last_modified),
            metadata: stored.metadata(),
            expires: stored.expires(),
            content_type: Some(
                stored
                    .content_type
                    .take()
                    .unwrap_or_else(default_content_type),
            ),
            content_encoding: stored.content_encoding.take(),
            content_disposition: stored.content_disposition.take(),
            content_language: stored.content_language.take(),
            cache_control: stored.cache_control.take(),
            website_redirect_location: stored.website_redirect_location.take(),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.check_writable(&bucket, &key).await?;
        // Conditional writes are judged by our ETag; s3s-fs's own notion may be stale
        // for files rewritten behind its back, so it never sees the conditions.
        let if_match = req.input.if_match.take();
        let if_none_match = req.input.if_none_match.take();
        if if_match.is_some() || if_none_match.is_some() {
            let current = self.current_etag(&bucket, &key).await?;
            if let Some(cond) = &if_none_match {
                let exists_matching = match (&current, cond) {
                    (Some(_), ETagCondition::Any) => true,
                    (Some(etag), ETagCondition::ETag(want)) => want.weak_cmp(etag),
                    (None, _) => false,
                };
                if exists_matching {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "If-None-Match: {bucket}/{key} already exists"
                    ));
                }
            }
            if let Some(cond) = &if_match {
                let Some(etag) = &current else {
                    return Err(no_such_key(&bucket, &key));
                };
                if let ETagCondition::ETag(want) = cond {
                    if !want.strong_cmp(etag) {
                        return Err(s3_error!(
                            PreconditionFailed,
                            "If-Match: {bucket}/{key} has ETag \"{}\"",
                            etag.value()
                        ));
                    }
                }
            }
        }
        self.fs.put_object(req).await
    }

    async fn copy_object(
        &self,
        mut req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let (src_bucket, src_key) = match &req.input.copy_source {
            CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
            _ => {
                return Err(s3_error!(
                    NotImplemented,
                    "only bucket/key copy sources are supported"
                ))
            }
        };
        let (dst_bucket, dst_key) = (req.input.bucket.clone(), req.input.key.clone());
        let (_src, src_v) = self.open_versioned(&src_bucket, &src_key).await?;
        self.check_writable(&dst_bucket, &dst_key).await?;

        // As for PUT, the source conditions are judged by our ETag. CopyObject answers
        // every failed condition with 412, including the ones a GET would answer 304.
        let input = &mut req.input;
        let (if_match, if_none_match) = (
            input.copy_source_if_match.take(),
            input.copy_source_if_none_match.take(),
        );
        let (if_modified_since, if_unmodified_since) = (
            input.copy_source_if_modified_since.take(),
            input.copy_source_if_unmodified_since.take(),
        );
        Preconditions {
            if_match: if_match.as_ref(),
            if_none_match: if_none_match.as_ref(),
            if_modified_since: if_modified_since.as_ref(),
            if_unmodified_since: if_unmodified_since.as_ref(),
        }
        .check(
            &ETag::Strong(src_v.etag),
            &http_last_modified(src_v.modified),
        )
        .map_err(|e| {
            if *e.code() == S3ErrorCode::NotModified {
                s3_error!(
                    PreconditionFailed,
                    "a copy-source condition did not hold for {src_bucket}/{src_key}"
                )
            } else {
                e
            }
        })?;

        let mut resp = self.fs.copy_object(req).await?;
        let (_dst, dst_v) = self.open_versioned(&dst_bucket, &dst_key).await?;
        let result = resp
            .output
            .copy_object_result
            .get_or_insert_with(Default::default);
        result.e_tag = Some(ETag::Strong(dst_v.etag));
        result.last_modified = Some(Timestamp::from(dst_v.modified));
        Ok(resp)
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        if !self.bucket_exists(&bucket).await {
            return Err(no_such_bucket(&bucket));
        }
        // Deleting a key that cannot exist succeeds, as it does on S3 for any missing
        // key; s3s-fs would instead fail on a directory or resolve `..`.
        if !self.deletable(&bucket, &key).await {
            return Ok(S3Response::new(DeleteObjectOutput::default()));
        }
        let resp = self.fs.delete_object(req).await?;
        attrs::forget(self.root(), &bucket, &key).await;
        Ok(resp)
    }

    async fn delete_objects(
        &self,
        mut req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = req.input.bucket.clone();
        if !self.bucket_exists(&bucket).await {
            return Err(no_such_bucket(&bucket));
        }
        let quiet = req.input.delete.quiet.unwrap_or(false);
        let requested = std::mem::take(&mut req.input.delete.objects);
        let mut real = Vec::with_capacity(requested.len());
        let mut absent = Vec::new();
        for obj in requested {
            if self.deletable(&bucket, &obj.key).await {
                real.push(obj);
            } else {
                absent.push(DeletedObject {
                    key: Some(obj.key),
                    version_id: obj.version_id,
                    ..Default::default()
                });
            }
        }
        let mut resp = if real.is_empty() {
            S3Response::new(DeleteObjectsOutput::default())
        } else {
            req.input.delete.objects = real;
            self.fs.delete_objects(req).await?
        };
        let out = &mut resp.output;
        for key in out
            .deleted
            .iter()
            .flatten()
            .filter_map(|d| d.key.as_deref())
        {
            attrs::forget(self.root(), &bucket, key).await;
        }
        if quiet {
            // Quiet mode reports only failures.
            out.deleted = None;
        } else if !absent.is_empty() {
            out.deleted.get_or_insert_with(Vec::new).extend(absent);
        }
        Ok(resp)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.check_writable(&req.input.bucket, &req.input.key)
            .await?;
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.check_writable(&bucket, &key).await?;
        let mut resp = self.fs.complete_multipart_upload(req).await?;
        if let Some(pending) = resp.output.future.take() {
            resp.output = pending.await?;
        }
        // S3 would report "<md5 of part md5s>-<parts>"; here every object's ETag is the
        // MD5 of its content, and the completion must agree with later HEADs and GETs,
        // or a client pinning reads to it would be refused.
        let (_file, v) = self.open_versioned(&bucket, &key).await?;
        resp.output.e_tag = Some(ETag::Strong(v.etag));
        Ok(resp)
    }
}

impl Backend {
    /// Whether `key` could name an existing object file that s3s-fs can delete: a
    /// valid key, and not a directory addressed without its trailing slash.
    async fn deletable(&self, bucket: &str, key: &str) -> bool {
        let Some(rel) = object_rel_path(bucket, key) else {
            return false;
        };
        match self.lookup(rel).await {
            Ok(Lookup::File) => true,
            Ok(Lookup::Dir) => key.ends_with('/'),
            // Missing is fine: s3s-fs answers that with S3's usual 204.
            Ok(Lookup::Missing) => true,
            // A symlink (or a path through one) is not an object: nothing to delete.
            Ok(Lookup::NotServed | Lookup::BelowFile) => false,
            // s3s-fs meets the same error and reports it.
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_s3() {
        let int = |first, last| Range::Int { first, last };
        assert_eq!(resolve_range(None, 10).ok(), Some((0, 10, None)));
        assert_eq!(resolve_range(None, 0).ok(), Some((0, 0, None)));
        assert_eq!(
            resolve_range(Some(int(9, Some(9))), 10).ok(),
            Some((9, 1, Some("bytes 9-9/10".to_owned())))
        );
        assert_eq!(
            resolve_range(Some(int(5, Some(100))), 10).ok(),
            Some((5, 5, Some("bytes 5-9/10".to_owned())))
        );
        assert_eq!(
            resolve_range(Some(Range::Suffix { length: 3 }), 10).ok(),
            Some((7, 3, Some("bytes 7-9/10".to_owned())))
        );
        for (range, size) in [
            (int(10, None), 10),
            (int(0, Some(0)), 0),
            (Range::Suffix { length: 1 }, 0),
            (Range::Suffix { length: 0 }, 10),
        ] {
            let err = resolve_range(Some(range), size).err();
            assert_eq!(
                err.map(|e| e.code().clone()),
                Some(S3ErrorCode::InvalidRange)
            );
        }
    }

    #[test]
    fn max_keys_is_capped_like_s3() {
        assert_eq!(clamp_max_keys(None), Some(1000));
        assert_eq!(clamp_max_keys(Some(5000)), Some(1000));
        assert_eq!(clamp_max_keys(Some(-1)), Some(0));
        assert_eq!(clamp_max_keys(Some(7)), Some(7));
    }
}
