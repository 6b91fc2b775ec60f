//! [`MemStore`]: an object store held in memory, for testing the logic above
//! [`ObjectStore`] without HTTP, SigV4 or a file system.
//!
//! It answers the way S3 does where chute relies on it: keys list in bytewise
//! order, a delimiter rolls keys up into common prefixes, pages end after
//! `page_size` entries with an opaque continuation token, a ranged GET outside
//! the object is refused, and `If-Match` with another version (quotes or
//! not) fails as `Changed`. ETags are the quoted MD5 of the bytes, as S3 gives for a
//! single-part upload, so a replaced object gets a new ETag exactly when its
//! bytes change. Every request is counted by kind, and every GET's range is
//! recorded, so a test can check how many and how large the reads were.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use chute_s3::{GetResponse, ListPage, ObjectMeta, ObjectStore, StoreError};
use futures::StreamExt;
use md5::{Digest, Md5};

/// S3's page size for ListObjectsV2.
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// Body chunk size: small enough that a body arrives in several pieces, as
/// over the wire, so a fault cutting it part way has somewhere to cut.
pub const DEFAULT_CHUNK_SIZE: usize = 64 << 10;

/// Requests served so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub list: u64,
    pub head: u64,
    pub get: u64,
    /// Body bytes handed out by GETs (whether or not the caller read them all).
    pub get_bytes: u64,
}

/// One GET as the store received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRecord {
    pub bucket: String,
    pub key: String,
    pub range: Range<u64>,
}

#[derive(Clone)]
struct Object {
    data: Bytes,
    etag: String,
}

#[derive(Default)]
struct Contents {
    buckets: BTreeSet<String>,
    objects: BTreeMap<(String, String), Object>,
    gets: Vec<GetRecord>,
}

#[derive(Default)]
struct Counters {
    list: AtomicU64,
    head: AtomicU64,
    get: AtomicU64,
    get_bytes: AtomicU64,
}

/// An in-memory bucket store; see the module doc.
pub struct MemStore {
    contents: Mutex<Contents>,
    counters: Counters,
    page_size: usize,
    chunk_size: usize,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

/// The ETag S3 gives a single-part object: its hex MD5 in double quotes.
pub fn md5_etag(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore {
            contents: Mutex::new(Contents::default()),
            counters: Counters::default(),
            page_size: DEFAULT_PAGE_SIZE,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// Listing pages of at most `n` entries (objects and common prefixes), so
    /// pagination can be tested with a handful of keys.
    pub fn with_page_size(mut self, n: usize) -> MemStore {
        self.page_size = n.max(1);
        self
    }

    /// GET bodies in chunks of `n` bytes.
    pub fn with_chunk_size(mut self, n: usize) -> MemStore {
        self.chunk_size = n.max(1);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Contents> {
        // A test that panicked while holding the lock leaves consistent data:
        // every change is a single map operation.
        self.contents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes an empty bucket (listing a bucket that was never made or written
    /// to fails with `NoSuchBucket`).
    pub fn create_bucket(&self, bucket: &str) {
        self.lock().buckets.insert(bucket.to_owned());
    }

    /// Writes (or replaces) an object, making its bucket if needed; returns
    /// its new ETag.
    pub fn put(&self, bucket: &str, key: &str, data: impl Into<Bytes>) -> String {
        let data = data.into();
        let etag = md5_etag(&data);
        self.put_with_etag(bucket, key, data, &etag);
        etag
    }

    /// Writes (or replaces) an object with a chosen ETag, e.g. one that is
    /// not an MD5, as multipart uploads and some stores give.
    pub fn put_with_etag(&self, bucket: &str, key: &str, data: impl Into<Bytes>, etag: &str) {
        let mut contents = self.lock();
        contents.buckets.insert(bucket.to_owned());
        contents.objects.insert(
            (bucket.to_owned(), key.to_owned()),
            Object {
                data: data.into(),
                etag: etag.to_owned(),
            },
        );
    }

    /// Removes an object; returns whether it existed.
    pub fn remove(&self, bucket: &str, key: &str) -> bool {
        self.lock()
            .objects
            .remove(&(bucket.to_owned(), key.to_owned()))
            .is_some()
    }

    /// The bytes and ETag of an object, if it exists.
    pub fn get(&self, bucket: &str, key: &str) -> Option<(Bytes, String)> {
        self.lock()
            .objects
            .get(&(bucket.to_owned(), key.to_owned()))
            .map(|o| (o.data.clone(), o.etag.clone()))
    }

    pub fn counts(&self) -> RequestCounts {
        RequestCounts {
            list: self.counters.list.load(Ordering::SeqCst),
            head: self.counters.head.load(Ordering::SeqCst),
            get: self.counters.get.load(Ordering::SeqCst),
            get_bytes: self.counters.get_bytes.load(Ordering::SeqCst),
        }
    }

    /// Every GET received so far, in arrival order.
    pub fn gets(&self) -> Vec<GetRecord> {
        self.lock().gets.clone()
    }

    /// The GETs of one key, in arrival order.
    pub fn gets_of(&self, key: &str) -> Vec<GetRecord> {
        self.lock()
            .gets
            .iter()
            .filter(|g| g.key == key)
            .cloned()
            .collect()
    }

    /// Forgets the counts and the recorded GETs (e.g. after setting up).
    pub fn reset_counts(&self) {
        self.counters.list.store(0, Ordering::SeqCst);
        self.counters.head.store(0, Ordering::SeqCst);
        self.counters.get.store(0, Ordering::SeqCst);
        self.counters.get_bytes.store(0, Ordering::SeqCst);
        self.lock().gets.clear();
    }
}

/// Where a listing resumes: after an object key, or after every key under a
/// common prefix. Kept apart so a key that looks like a prefix (`a/`) is
/// never confused with one.
fn encode_token(entry: &Entry) -> String {
    match entry {
        Entry::Key(k) => format!("k{k}"),
        Entry::Prefix(p) => format!("p{p}"),
    }
}

fn decode_token(bucket: &str, token: &str) -> Result<Entry, StoreError> {
    match token.split_at_checked(1) {
        Some(("k", k)) => Ok(Entry::Key(k.to_owned())),
        Some(("p", p)) => Ok(Entry::Prefix(p.to_owned())),
        _ => Err(StoreError::Other {
            bucket: bucket.to_owned(),
            key: String::new(),
            detail: format!("invalid continuation token {token:?}"),
        }),
    }
}

enum Entry {
    Key(String),
    Prefix(String),
}

impl Entry {
    /// Whether `key` was already covered by a page ending at this entry.
    fn covers(&self, key: &str) -> bool {
        match self {
            Entry::Key(k) => key.as_bytes() <= k.as_bytes(),
            Entry::Prefix(p) => key.as_bytes() <= p.as_bytes() || key.starts_with(p.as_str()),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for MemStore {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        self.counters.list.fetch_add(1, Ordering::SeqCst);
        let after = token
            .as_deref()
            .map(|t| decode_token(bucket, t))
            .transpose()?;
        let contents = self.lock();
        if !contents.buckets.contains(bucket) {
            return Err(StoreError::NoSuchBucket {
                bucket: bucket.to_owned(),
            });
        }
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let mut page = ListPage::default();
        let mut entries = 0;
        let mut last: Option<Entry> = None;
        let keys = contents
            .objects
            .range((bucket.to_owned(), prefix.to_owned())..)
            .take_while(|((b, _), _)| b == bucket)
            .map(|((_, k), o)| (k, o))
            .filter(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| !after.as_ref().is_some_and(|a| a.covers(k)));
        for (key, object) in keys {
            let rolled = delimiter.and_then(|d| {
                let rest = &key[prefix.len()..];
                rest.find(d)
                    .map(|at| format!("{prefix}{}", &rest[..at + d.len()]))
            });
            if let (Some(p), Some(Entry::Prefix(lp))) = (&rolled, &last) {
                if p == lp {
                    continue;
                }
            }
            if entries == self.page_size {
                page.next_token = last.as_ref().map(encode_token);
                return Ok(page);
            }
            entries += 1;
            match rolled {
                Some(p) => {
                    page.common_prefixes.push(p.clone());
                    last = Some(Entry::Prefix(p));
                }
                None => {
                    page.objects.push(ObjectMeta {
                        key: key.clone(),
                        size: object.data.len() as u64,
                        etag: Some(object.etag.clone()),
                    });
                    last = Some(Entry::Key(key.clone()));
                }
            }
        }
        Ok(page)
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        self.counters.head.fetch_add(1, Ordering::SeqCst);
        let contents = self.lock();
        let object = find(&contents, bucket, key)?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: object.data.len() as u64,
            etag: Some(object.etag.clone()),
        })
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<GetResponse, StoreError> {
        self.counters.get.fetch_add(1, Ordering::SeqCst);
        let object = {
            let mut contents = self.lock();
            contents.gets.push(GetRecord {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                range: range.clone(),
            });
            find(&contents, bucket, key)?.clone()
        };
        if let Some(want) = if_match {
            if !same_etag(want, &object.etag) {
                return Err(StoreError::Changed {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    expected: want.to_owned(),
                    found: object.etag,
                });
            }
        }
        let size = object.data.len() as u64;
        if range.start >= range.end || range.end > size {
            return Err(StoreError::InvalidRange {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                start: range.start,
                end: range.end,
                size: Some(size),
            });
        }
        let len = range.end - range.start;
        self.counters.get_bytes.fetch_add(len, Ordering::SeqCst);
        // In range by the check above, so these fit in usize.
        let body = object.data.slice(range.start as usize..range.end as usize);
        let chunk = self.chunk_size;
        let chunks: Vec<Result<Bytes, StoreError>> = (0..body.len())
            .step_by(chunk)
            .map(|at| Ok(body.slice(at..(at + chunk).min(body.len()))))
            .collect();
        Ok(GetResponse {
            etag: Some(object.etag),
            content_length: len,
            body: futures::stream::iter(chunks).boxed(),
        })
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

/// Entity tags compared as S3 compares an `If-Match`: with or without their
/// quotes (and a weak `W/` prefix).
fn same_etag(a: &str, b: &str) -> bool {
    let bare = |s: &str| s.trim_start_matches("W/").trim_matches('"').to_owned();
    bare(a) == bare(b)
}

fn find<'a>(contents: &'a Contents, bucket: &str, key: &str) -> Result<&'a Object, StoreError> {
    if !contents.buckets.contains(bucket) {
        return Err(StoreError::NoSuchBucket {
            bucket: bucket.to_owned(),
        });
    }
    contents
        .objects
        .get(&(bucket.to_owned(), key.to_owned()))
        .ok_or_else(|| StoreError::NoSuchKey {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
}
