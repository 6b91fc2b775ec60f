//! Mapping of object keys to relative paths under a channel's root, and the rules
//! that decide whether such a path is safe to materialise.
//!
//! An object key is an arbitrary byte string; a path under the channel root must
//! never escape that root nor trip over file-system limits. Keys that cannot be
//! mapped safely are not "fixed up" (a renamed file would surprise the training
//! script); they are skipped, with a [`SkipReason`] the caller reports once.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest single path segment, in bytes (NAME_MAX on Linux and most file systems).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Longest relative path, in bytes (PATH_MAX on Linux).
pub const MAX_PATH_BYTES: usize = 4096;

/// What a safe relative path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathKind {
    /// A regular file (an object).
    File,
    /// A directory: a folder marker (`a/b/`) or the root marker (the empty path).
    Dir,
}

/// Why an object is left out of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SkipReason {
    /// A segment is empty: the path starts with `/` or contains `//`.
    EmptySegment,
    /// A segment is `.`.
    DotSegment,
    /// A segment is `..`.
    DotDotSegment,
    /// The path contains a NUL byte.
    Nul,
    /// A segment is longer than [`MAX_SEGMENT_BYTES`].
    SegmentTooLong {
        /// Length of the offending segment, in bytes.
        len: usize,
    },
    /// The path is longer than [`MAX_PATH_BYTES`].
    PathTooLong {
        /// Length of the whole relative path, in bytes.
        len: usize,
    },
    /// The path is also a directory (a prefix of other paths); the directory wins.
    Shadowed {
        /// One path under that directory, to show the user why.
        by: String,
    },
    /// The same path appeared earlier in the list; the first one is kept.
    Duplicate,
    /// The key does not start with the source prefix.
    OutsidePrefix,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::EmptySegment => {
                f.write_str("a segment is empty (the path starts with '/' or contains '//')")
            }
            SkipReason::DotSegment => f.write_str("a segment is '.'"),
            SkipReason::DotDotSegment => f.write_str("a segment is '..' (would escape the root)"),
            SkipReason::Nul => f.write_str("it contains a NUL byte"),
            SkipReason::SegmentTooLong { len } => write!(
                f,
                "a segment is {len} bytes long (the limit is {MAX_SEGMENT_BYTES})"
            ),
            SkipReason::PathTooLong { len } => write!(
                f,
                "the path is {len} bytes long (the limit is {MAX_PATH_BYTES})"
            ),
            SkipReason::Shadowed { by } => write!(
                f,
                "it is also a directory (e.g. '{by}'); the directory wins and the object is hidden"
            ),
            SkipReason::Duplicate => {
                f.write_str("the same path appears earlier in the list; the first one is kept")
            }
            SkipReason::OutsidePrefix => {
                f.write_str("the key does not start with the source prefix")
            }
        }
    }
}

/// The path of `key` relative to the channel root for source prefix `prefix`, or
/// `None` when the key is not under the prefix.
///
/// When the prefix ends in `/` (or is empty) it names a directory and the path is the
/// rest of the key. Otherwise its last segment is a partial name (`data/tr` selects
/// `data/train/...` and `data/test/...`), so the path starts after the prefix's last
/// `/`: the partial segment stays part of the path, otherwise `train/x` and `test/x`
/// would both lose their first letters and become the meaningless `ain/x`, `st/x`.
pub fn relative_key<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    if !key.starts_with(prefix) {
        return None;
    }
    let start = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.len()
    } else {
        prefix.rfind('/').map_or(0, |slash| slash + 1)
    };
    key.get(start..)
}

/// Checks that a relative path can be materialised under a root without escaping it
/// or exceeding file-system limits, and says whether it names a file or a directory.
///
/// A trailing `/` marks a folder (a directory); the empty path is the root marker
/// (also a directory).
pub fn check_rel_path(rel: &str) -> Result<PathKind, SkipReason> {
    if rel.is_empty() {
        return Ok(PathKind::Dir);
    }
    if rel.as_bytes().contains(&0) {
        return Err(SkipReason::Nul);
    }
    if rel.len() > MAX_PATH_BYTES {
        return Err(SkipReason::PathTooLong { len: rel.len() });
    }
    let (body, kind) = match rel.strip_suffix('/') {
        Some(body) => (body, PathKind::Dir),
        None => (rel, PathKind::File),
    };
    for segment in body.split('/') {
        match segment {
            "" => return Err(SkipReason::EmptySegment),
            "." => return Err(SkipReason::DotSegment),
            ".." => return Err(SkipReason::DotDotSegment),
            s if s.len() > MAX_SEGMENT_BYTES => {
                return Err(SkipReason::SegmentTooLong { len: s.len() })
            }
            _ => {}
        }
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_key_directory_prefix() {
        assert_eq!(relative_key("data/", "data/a/b.bin"), Some("a/b.bin"));
        assert_eq!(relative_key("data/", "data/"), Some(""));
        assert_eq!(relative_key("", "a/b"), Some("a/b"));
        assert_eq!(relative_key("data/", "other/x"), None);
        assert_eq!(relative_key("data/", "data"), None);
    }

    #[test]
    fn relative_key_partial_name_prefix() {
        assert_eq!(relative_key("data/tr", "data/train/x"), Some("train/x"));
        assert_eq!(relative_key("data/tr", "data/tr"), Some("tr"));
        assert_eq!(relative_key("data/tr", "data/test/x"), None);
        assert_eq!(relative_key("p", "p1/x"), Some("p1/x"));
        assert_eq!(relative_key("p", "p"), Some("p"));
        assert_eq!(relative_key("p", "q"), None);
        // Multi-byte characters around the cut.
        assert_eq!(relative_key("dé/é", "dé/été/x"), Some("été/x"));
    }

    #[test]
    fn safe_paths() {
        assert_eq!(check_rel_path("a"), Ok(PathKind::File));
        assert_eq!(check_rel_path("a/b/c.bin"), Ok(PathKind::File));
        assert_eq!(check_rel_path("a/b/"), Ok(PathKind::Dir));
        assert_eq!(check_rel_path(""), Ok(PathKind::Dir));
        assert_eq!(check_rel_path("..."), Ok(PathKind::File));
        assert_eq!(check_rel_path(".hidden/..x"), Ok(PathKind::File));
        assert_eq!(check_rel_path("a b\\c"), Ok(PathKind::File));
    }

    #[test]
    fn unsafe_paths() {
        use SkipReason::*;
        assert_eq!(check_rel_path("../x"), Err(DotDotSegment));
        assert_eq!(check_rel_path("a/../../x"), Err(DotDotSegment));
        assert_eq!(check_rel_path(".."), Err(DotDotSegment));
        assert_eq!(check_rel_path("../"), Err(DotDotSegment));
        assert_eq!(check_rel_path("a//b"), Err(EmptySegment));
        assert_eq!(check_rel_path("/a"), Err(EmptySegment));
        assert_eq!(check_rel_path("/"), Err(EmptySegment));
        assert_eq!(check_rel_path("a//"), Err(EmptySegment));
        assert_eq!(check_rel_path("."), Err(DotSegment));
        assert_eq!(check_rel_path("./"), Err(DotSegment));
        assert_eq!(check_rel_path("a/./b"), Err(DotSegment));
        assert_eq!(check_rel_path("a\0b"), Err(Nul));
    }

    #[test]
    fn length_limits() {
        let ok = "s".repeat(255);
        assert_eq!(check_rel_path(&ok), Ok(PathKind::File));
        assert_eq!(check_rel_path(&format!("{ok}/")), Ok(PathKind::Dir));
        let long = "s".repeat(256);
        assert_eq!(
            check_rel_path(&format!("a/{long}/b")),
            Err(SkipReason::SegmentTooLong { len: 256 })
        );
        // 16 segments of 255 bytes + 15 slashes = 4095 bytes: allowed.
        let path = vec![ok.as_str(); 16].join("/");
        assert_eq!(path.len(), 4095);
        assert_eq!(check_rel_path(&path), Ok(PathKind::File));
        assert_eq!(
            check_rel_path(&format!("{path}x")),
            Err(SkipReason::SegmentTooLong { len: 256 })
        );
        let path = format!("{path}/x");
        assert_eq!(
            check_rel_path(&path),
            Err(SkipReason::PathTooLong { len: 4097 })
        );
        // 4096 bytes exactly is allowed.
        assert_eq!(check_rel_path(&path[..4096]), Ok(PathKind::Dir));
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(
            SkipReason::DotDotSegment.to_string(),
            "a segment is '..' (would escape the root)"
        );
        assert_eq!(
            SkipReason::SegmentTooLong { len: 300 }.to_string(),
            "a segment is 300 bytes long (the limit is 255)"
        );
        let shadowed = SkipReason::Shadowed { by: "a/b".into() }.to_string();
        assert!(shadowed.contains("'a/b'") && shadowed.contains("directory wins"));
    }
}
