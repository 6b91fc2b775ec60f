//! ETags for every file under the root, however it got there.
//!
//! s3s-fs only remembers ETags of objects uploaded through it; for anything written
//! straight into the directory (test fixtures, the demo dataset) it re-hashes the whole
//! file on every GET and HEAD, and after such a file is rewritten it keeps reporting
//! the ETag of the old upload. Here the ETag is the hex MD5 of the content (what S3
//! reports for single-part uploads), computed once per version of a file and kept in
//! memory.
//!
//! A version is identified by (device, inode, size, mtime in ns): rewriting a file in
//! place or replacing it by rename changes at least one of them, so a cached ETag is
//! never served for different bytes. Two same-sized rewrites within one tick of the
//! filesystem clock are indistinguishable; that is the price of not hashing on every
//! request.
//!
//! The hash is read from the same open file the caller then serves bytes from, and the
//! stamp is re-checked after hashing, so the ETag describes the bytes that descriptor
//! yields. Concurrent first requests for one version share a single hashing pass.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use s3s::crypto::{Checksum, Md5};
use tokio::sync::OnceCell;

/// Reads this large keep the hash near memory bandwidth without a large footprint.
const HASH_READ: usize = 1 << 20;

/// A file that keeps changing under us is reported as an error rather than hashed
/// forever.
const MAX_ATTEMPTS: usize = 3;

/// Past this many remembered versions the cache starts over: a crude bound, but
/// recomputing is only slow, never wrong.
const MAX_ENTRIES: usize = 1 << 20;

/// Identity of one version of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    pub(crate) size: u64,
    mtime_ns: i128,
}

impl FileStamp {
    pub(crate) fn of(meta: &Metadata) -> Self {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// A file's version and its ETag, as established from one open descriptor.
#[derive(Debug, Clone)]
pub(crate) struct Versioned {
    pub(crate) stamp: FileStamp,
    pub(crate) modified: SystemTime,
    /// Hex MD5, without the quotes S3 puts around it on the wire.
    pub(crate) etag: String,
}

struct Slot {
    stamp: FileStamp,
    etag: Arc<OnceCell<String>>,
}

enum HashError {
    /// The file changed while being hashed; the caller should look again.
    Changed,
    Io(io::Error),
}

impl From<io::Error> for HashError {
    fn from(e: io::Error) -> Self {
        HashError::Io(e)
    }
}

/// In-memory ETag cache keyed by file identity.
#[derive(Default)]
pub(crate) struct EtagCache {
    /// Keyed by (dev, ino) so that a rewritten file replaces its old entry instead of
    /// accumulating one per version; the slot's stamp completes the identity check.
    slots: Mutex<HashMap<(u64, u64), Slot>>,
}

impl EtagCache {
    /// The version and ETag of the open `file`, hashing it only if this version has
    /// not been seen before.
    pub(crate) async fn versioned(&self, file: &Arc<File>) -> io::Result<Versioned> {
        for _ in 0..MAX_ATTEMPTS {
            // fstat on an already open local file does not block in practice, so it
            // is not worth a trip to the blocking pool.
            let meta = file.metadata()?;
            let stamp = FileStamp::of(&meta);
            let cell = self.cell_for(stamp);
            let reader = Arc::clone(file);
            let result = cell
                .get_or_try_init(|| async move {
                    tokio::task::spawn_blocking(move || md5_hex(&reader, stamp))
                        .await
                        .map_err(|e| HashError::Io(io::Error::other(e)))?
                })
                .await;
            match result {
                Ok(etag) => {
                    return Ok(Versioned {
                        stamp,
                        modified: meta.modified()?,
                        etag: etag.clone(),
                    })
                }
                // Changed under us: take a fresh look at the file.
                Err(HashError::Changed) => {}
                Err(HashError::Io(e)) => return Err(e),
            }
        }
        Err(io::Error::other(
            "the file kept changing while its ETag was being computed",
        ))
    }

    fn cell_for(&self, stamp: FileStamp) -> Arc<OnceCell<String>> {
        // A poisoned lock only means another request panicked mid-update of a plain
        // map; every entry is still self-consistent, so keep using it.
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(&(stamp.dev, stamp.ino)) {
            if slot.stamp == stamp {
                return Arc::clone(&slot.etag);
            }
        }
        if slots.len() >= MAX_ENTRIES {
            slots.clear();
        }
        let etag = Arc::new(OnceCell::new());
        slots.insert(
            (stamp.dev, stamp.ino),
            Slot {
                stamp,
                etag: Arc::clone(&etag),
            },
        );
        etag
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// MD5 of everything `file` holds, provided it is still exactly the version `stamp`
/// once read. Positional reads leave the descriptor's offset alone for other users.
fn md5_hex(file: &File, stamp: FileStamp) -> Result<String, HashError> {
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; HASH_READ];
    let mut offset = 0u64;
    loop {
        let n = match file.read_at(&mut buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        md5.update(&buf[..n]);
        offset += n as u64;
        if offset > stamp.size {
            return Err(HashError::Changed);
        }
    }
    if offset != stamp.size || FileStamp::of(&file.metadata()?) != stamp {
        return Err(HashError::Changed);
    }
    Ok(hex::encode(md5.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn open(path: &std::path::Path) -> Arc<File> {
        Arc::new(File::open(path).expect("open test file"))
    }

    #[tokio::test]
    async fn etag_is_md5_and_follows_rewrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"").expect("write");
        let cache = EtagCache::default();
        let v = cache.versioned(&open(&path)).await.expect("etag");
        assert_eq!(v.etag, "d41d8cd98f00b204e9800998ecf8427e");

        std::fs::write(&path, b"The quick brown fox jumps over the lazy dog").expect("write");
        let v = cache.versioned(&open(&path)).await.expect("etag");
        assert_eq!(v.etag, "9e107d9d372bb6826bd81d3542a419d6");
        assert_eq!(v.stamp.size, 43);
        // Same inode, so the rewrite replaced the old entry.
        assert_eq!(cache.len(), 1);

        // Same size, different bytes, later mtime: must not reuse the old ETag.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open for write");
        f.write_all(b"The quick brown fox jumps over the lazy cog")
            .expect("rewrite");
        drop(f);
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(later))
            .expect("set mtime");
        let v = cache.versioned(&open(&path)).await.expect("etag");
        assert_eq!(v.etag, "1055d3e698d289f2af8663725127bd4b");
    }

    #[tokio::test]
    async fn concurrent_first_requests_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 3 * HASH_READ + 5]).expect("write");
        let cache = Arc::new(EtagCache::default());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let cache = Arc::clone(&cache);
            let file = open(&path);
            tasks.push(tokio::spawn(async move { cache.versioned(&file).await }));
        }
        let mut etags = Vec::new();
        for t in tasks {
            etags.push(t.await.expect("join").expect("etag").etag);
        }
        assert!(etags.windows(2).all(|w| w[0] == w[1]));
    }
}
