//! Optional disk cache of blocks (`--cache-dir DIR --cache-size BYTES`), for
//! multi-epoch jobs whose data does not fit in memory: every block fetched
//! from S3 is also written here, and a block evicted from memory is read back
//! from disk instead of S3 on the next epoch.
//!
//! The cache lives in a fresh sub-directory of DIR owned by this mount and
//! removed at unmount: blocks are keyed by object and ETag, but a later mount
//! cannot know whether a file left behind was complete, so nothing is reused
//! across mounts. Eviction is least-recently-used within `--cache-size`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use lru::LruCache;

use crate::fetch::ObjectRef;

pub(crate) struct DiskCache {
    dir: PathBuf,
    limit: u64,
    index: Mutex<Index>,
}

struct Index {
    lru: LruCache<(u64, u64), u64>,
    total: u64,
}

impl DiskCache {
    /// Creates the cache's own directory under `parent`.
    pub fn create(parent: &Path, limit: u64) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(parent)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!("chute-blocks-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir)?;
        Ok(DiskCache {
            dir,
            limit,
            index: Mutex::new(Index {
                lru: LruCache::unbounded(),
                total: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn id(o: &ObjectRef) -> u64 {
        let mut h = DefaultHasher::new();
        o.bucket.hash(&mut h);
        o.key.hash(&mut h);
        o.etag.hash(&mut h);
        h.finish()
    }

    fn path(&self, id: u64, index: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}-{index}"))
    }

    /// The block, if this cache holds all of it.
    pub fn get(&self, o: &ObjectRef, index: u64) -> Option<Bytes> {
        let id = Self::id(o);
        self.lock().lru.get(&(id, index))?;
        let data = std::fs::read(self.path(id, index)).ok()?;
        (data.len() as u64 == o.block_len(index)).then(|| Bytes::from(data))
    }

    /// Stores a block; failures only cost a later refetch, so they are logged
    /// once at debug level and otherwise ignored.
    pub fn put(&self, o: &ObjectRef, index: u64, data: &[u8]) {
        let len = data.len() as u64;
        if len > self.limit {
            return;
        }
        let id = Self::id(o);
        {
            let mut g = self.lock();
            if g.lru.contains(&(id, index)) {
                return;
            }
            while g.total + len > self.limit {
                let Some(((vid, vidx), vlen)) = g.lru.pop_lru() else {
                    break;
                };
                g.total -= vlen;
                let _ = std::fs::remove_file(self.path(vid, vidx));
            }
        }
        let path = self.path(id, index);
        let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(data));
        match written {
            Ok(()) => {
                let mut g = self.lock();
                g.total += len;
                g.lru.push((id, index), len);
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), "disk cache write failed: {e}");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

impl Drop for DiskCache {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "cannot remove the disk cache: {e}");
        }
    }
}
