//! The standard headers and user metadata given when an object was uploaded.
//!
//! Uploads go through s3s-fs, which keeps `Content-Type`, `x-amz-meta-*` and friends in
//! a JSON sidecar in ROOT. Because GET and HEAD are served here rather than by s3s-fs
//! (see `backend.rs`), the sidecar is read here too, so an object uploaded with a
//! content type still comes back with it. The layout is s3s-fs 0.14's; it is pinned,
//! and a sidecar that is missing or unreadable just means "no stored attributes",
//! which is also the truth for files written straight into the directory.

use std::collections::HashMap;
use std::path::Path;

use s3s::dto::{Metadata, Timestamp, TimestampFormat};
use serde::Deserialize;

use crate::paths::sidecar_path;

/// What s3s-fs stored for an object, as far as reads need it.
// Unknown fields are refused so that the older bare-map format, whose keys are user
// metadata names, is not mistaken for an empty attribute set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredAttributes {
    #[serde(default)]
    pub(crate) user_metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    pub(crate) content_encoding: Option<String>,
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    #[serde(default)]
    pub(crate) content_disposition: Option<String>,
    #[serde(default)]
    pub(crate) content_language: Option<String>,
    #[serde(default)]
    pub(crate) cache_control: Option<String>,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    pub(crate) website_redirect_location: Option<String>,
}

impl StoredAttributes {
    pub(crate) fn metadata(&mut self) -> Option<Metadata> {
        self.user_metadata.take()
    }

    pub(crate) fn expires(&self) -> Option<Timestamp> {
        let s = self.expires.as_deref()?;
        Timestamp::parse(TimestampFormat::DateTime, s).ok()
    }
}

/// The stored attributes of `bucket/key`, or the default when there are none.
pub(crate) async fn load(root: &Path, bucket: &str, key: &str) -> StoredAttributes {
    let path = sidecar_path(root, bucket, key, "metadata");
    let Ok(bytes) = tokio::fs::read(&path).await else {
        return StoredAttributes::default();
    };
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> StoredAttributes {
    if let Ok(attrs) = serde_json::from_slice::<StoredAttributes>(bytes) {
        return attrs;
    }
    // Older s3s-fs releases stored the bare user-metadata map.
    match serde_json::from_slice::<HashMap<String, String>>(bytes) {
        Ok(map) => StoredAttributes {
            user_metadata: Some(map),
            ..StoredAttributes::default()
        },
        Err(e) => {
            tracing::debug!(error = %e, "ignoring unreadable s3s-fs metadata sidecar");
            StoredAttributes::default()
        }
    }
}

/// Drops the sidecars of a deleted object so that a file later written to the same
/// path by other means does not inherit the old upload's content type or checksums.
pub(crate) async fn forget(root: &Path, bucket: &str, key: &str) {
    for kind in ["metadata", "internal"] {
        let path = sidecar_path(root, bucket, key, kind);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "could not remove sidecar")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sidecar_formats_parse() {
        let mut a = parse(br#"{"user_metadata":{"k":"v"},"content_type":"text/plain","expires":"2030-01-02T03:04:05.000Z"}"#);
        assert_eq!(a.content_type.as_deref(), Some("text/plain"));
        assert!(a.expires().is_some());
        assert_eq!(
            a.metadata().and_then(|m| m.get("k").cloned()).as_deref(),
            Some("v")
        );

        let mut old = parse(br#"{"k":"v"}"#);
        assert_eq!(old.metadata().map(|m| m.len()), Some(1));

        let junk = parse(b"not json");
        assert!(junk.content_type.is_none());
    }
}
