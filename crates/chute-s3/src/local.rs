//! [`LocalStore`]: a local directory served through the [`ObjectStore`] interface,
//! so every mode works on `file:///abs/dir` without S3 (local mode).
//!
//! Keys are paths relative to the root with `/` separators. Listing walks the
//! tree and returns it in one page, sorted bytewise like S3. The "ETag" is made
//! from the file's identity (device, inode, size, modification time), so a file
//! rewritten or replaced after listing is seen as changed, as on S3.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::{GetResponse, ListPage, ObjectMeta, ObjectStore, StoreError};

/// Read size for local bodies: large enough that syscalls are not the bottleneck.
const CHUNK: usize = 1 << 20;

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store over `root`, which must be an existing directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<LocalStore, StoreError> {
        let root = root.into();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(LocalStore { root }),
            Ok(_) => Err(StoreError::Config(format!(
                "local source {} is not a directory",
                root.display()
            ))),
            Err(e) => Err(StoreError::NoSuchBucket {
                bucket: format!("{} ({e})", root.display()),
            }),
        }
    }

    /// The file behind a key, refusing keys that would leave the root.
    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let bad = key.is_empty()
            || key.starts_with('/')
            || key.contains('\0')
            || key
                .split('/')
                .any(|s| s == ".." || s == "." || s.is_empty());
        if bad {
            return Err(StoreError::other(
                "",
                key,
                "key is not a safe relative path",
            ));
        }
        Ok(self.root.join(key))
    }
}

fn etag_of(m: &std::fs::Metadata) -> String {
    format!(
        "\"{:x}-{:x}-{:x}-{:x}.{:x}\"",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    )
}

fn io_error(key: &str, e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NoSuchKey {
            bucket: String::new(),
            key: key.to_owned(),
        },
        std::io::ErrorKind::PermissionDenied => StoreError::AccessDenied {
            bucket: String::new(),
            key: key.to_owned(),
            detail: e.to_string(),
        },
        _ => StoreError::other("", key, e),
    }
}

/// Walks `dir` collecting files whose key starts with `prefix`.
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<ObjectMeta>,
) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&dir.display().to_string(), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&dir.display().to_string(), e))?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let Some(key) = rel.to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        let ft = entry.file_type().map_err(|e| io_error(&key, e))?;
        if ft.is_dir() {
            let as_prefix = format!("{key}/");
            if as_prefix.starts_with(prefix) || prefix.starts_with(&as_prefix) {
                walk(root, &path, prefix, out)?;
            }
            continue;
        }
        if !key.starts_with(prefix) {
            continue;
        }
        // Symlinks to files are followed; to directories they are not (no loops).
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable entry");
                continue;
            }
        };
        out.push(ObjectMeta {
            key,
            size: meta.len(),
            etag: Some(etag_of(&meta)),
        });
    }
    Ok(())
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn list_page(
        &self,
        _bucket: &str,
        prefix: &str,
        _delimiter: Option<&str>,
        _token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        // The delimiter is ignored: a local walk gains nothing from fan-out, so
        // one page with every key answers any listing.
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let objects = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &prefix, &mut out)?;
            out.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
            Ok::<_, StoreError>(out)
        })
        .await
        .map_err(|e| StoreError::other("", "", e))??;
        Ok(ListPage {
            objects,
            common_prefixes: Vec::new(),
            next_token: None,
        })
    }

    async fn head(&self, _bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path_of(key)?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| io_error(key, e))?;
        if !meta.is_file() {
            return Err(StoreError::NoSuchKey {
                bucket: String::new(),
                key: key.to_owned(),
            });
        }
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: meta.len(),
            etag: Some(etag_of(&meta)),
        })
    }

    async fn get_range(
        &self,
        _bucket: &str,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<GetResponse, StoreError> {
        let path = self.path_of(key)?;
        let key_owned = key.to_owned();
        let (file, meta) = tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&path)?;
            let m = f.metadata()?;
            Ok::<_, std::io::Error>((f, m))
        })
        .await
        .map_err(|e| StoreError::other("", key, e))?
        .map_err(|e| io_error(key, e))?;
        let etag = etag_of(&meta);
        if let Some(want) = if_match {
            if want != etag {
                return Err(StoreError::Changed {
                    bucket: String::new(),
                    key: key.to_owned(),
                    expected: want.to_owned(),
                    found: etag,
                });
            }
        }
        if range.start >= range.end || range.end > meta.len() {
            return Err(StoreError::InvalidRange {
                bucket: String::new(),
                key: key.to_owned(),
                start: range.start,
                end: range.end,
                size: Some(meta.len()),
            });
        }
        let len = range.end - range.start;
        // Reads run on the blocking pool, one chunk per step, so a slow disk never
        // stalls the runtime and an abandoned stream stops reading.
        let state = (Some(file), range.start, range.end, key_owned);
        let body = futures::stream::unfold(state, |(file, pos, end, key)| async move {
            let mut f = file?;
            if pos >= end {
                return None;
            }
            let want = usize::try_from(end - pos).unwrap_or(CHUNK).min(CHUNK);
            let key2 = key.clone();
            let res = tokio::task::spawn_blocking(move || {
                let mut buf = BytesMut::zeroed(want);
                f.seek(SeekFrom::Start(pos))?;
                let mut filled = 0;
                while filled < want {
                    let n = f.read(&mut buf[filled..])?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                buf.truncate(filled);
                Ok::<_, std::io::Error>((f, buf.freeze()))
            })
            .await;
            match res {
                Ok(Ok((_, chunk))) if chunk.is_empty() => Some((
                    Err(StoreError::other("", &key2, "file shrank while being read")),
                    (None, end, end, key),
                )),
                Ok(Ok((f, chunk))) => {
                    let next = pos + chunk.len() as u64;
                    Some((Ok::<Bytes, StoreError>(chunk), (Some(f), next, end, key)))
                }
                Ok(Err(e)) => Some((Err(io_error(&key2, e)), (None, end, end, key))),
                Err(e) => Some((Err(StoreError::other("", &key2, e)), (None, end, end, key))),
            }
        })
        .boxed();
        Ok(GetResponse {
            etag: Some(etag),
            content_length: len,
            body,
        })
    }

    fn describe(&self) -> String {
        format!("local {}", self.root.display())
    }
}
