//! Mapping S3 names onto the served directory, and the two small encodings that
//! mapping needs.
//!
//! A key becomes a relative path below `ROOT/bucket`. S3 keys are arbitrary strings,
//! but only those that name the same file they would be listed as can be served
//! honestly: `a/../b`, `./a`, `a//b` or `/a` would either escape the bucket or alias
//! another key, so they are refused up front instead of being handed to the
//! filesystem.

use std::path::{Path, PathBuf};

/// Why a key cannot be mapped to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyProblem {
    Empty,
    Absolute,
    /// An empty, `.` or `..` segment: the filesystem would normalise it away, so the
    /// object could never be listed under the key it was stored with.
    NonCanonicalSegment,
    Nul,
    /// A segment longer than a file name may be (255 bytes on Linux file systems).
    SegmentTooLong,
    /// More bytes than S3 allows in a key.
    PathTooLong,
}

/// Longest file name the directory can hold.
const MAX_SEGMENT_BYTES: usize = 255;

/// S3's limit on a key; it also keeps every path below ROOT well within `PATH_MAX`.
const MAX_KEY_BYTES: usize = 1024;

impl KeyProblem {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            KeyProblem::Empty => "the key is empty",
            KeyProblem::Absolute => "the key starts with '/'",
            KeyProblem::NonCanonicalSegment => {
                "the key has an empty, '.' or '..' path segment, which a directory-backed store cannot keep apart from other keys"
            }
            KeyProblem::Nul => "the key contains a NUL character",
            KeyProblem::SegmentTooLong => {
                "a path segment of the key is longer than 255 bytes, the longest file name a directory can hold"
            }
            KeyProblem::PathTooLong => {
                "the key is longer than 1024 bytes, the longest key S3 allows"
            }
        }
    }

    /// S3's error code for the problem: too long is `KeyTooLongError`, as S3 says
    /// for keys over its own limit; anything else is a bad argument.
    pub(crate) fn too_long(self) -> bool {
        matches!(self, KeyProblem::SegmentTooLong | KeyProblem::PathTooLong)
    }
}

/// Checks that `key` names exactly one file below its bucket directory.
///
/// A single trailing `/` is allowed: it is how S3 clients create "directory marker"
/// objects, which s3s-fs stores as directories.
pub(crate) fn check_key(key: &str) -> Result<(), KeyProblem> {
    if key.is_empty() {
        return Err(KeyProblem::Empty);
    }
    if key.starts_with('/') {
        return Err(KeyProblem::Absolute);
    }
    if key.contains('\0') {
        return Err(KeyProblem::Nul);
    }
    let body = key.strip_suffix('/').unwrap_or(key);
    if body
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(KeyProblem::NonCanonicalSegment);
    }
    if body.split('/').any(|seg| seg.len() > MAX_SEGMENT_BYTES) {
        return Err(KeyProblem::SegmentTooLong);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyProblem::PathTooLong);
    }
    Ok(())
}

/// `ROOT/bucket`, or `None` when the name is not a valid S3 bucket name (which also
/// keeps s3s-fs's dot-files in ROOT out of reach).
pub(crate) fn bucket_dir(root: &Path, bucket: &str) -> Option<PathBuf> {
    s3s::path::check_bucket_name(bucket).then(|| root.join(bucket))
}

/// `bucket/key`, relative to ROOT, or `None` when either name cannot be mapped.
pub(crate) fn object_rel_path(bucket: &str, key: &str) -> Option<PathBuf> {
    check_key(key).ok()?;
    s3s::path::check_bucket_name(bucket).then(|| Path::new(bucket).join(key))
}

/// Where s3s-fs keeps an object's sidecar file of the given kind (`metadata` for the
/// content-type and user metadata given at upload, `internal` for its checksums).
/// The naming mirrors s3s-fs 0.14's private layout; see `attrs.rs` for why we read it.
pub(crate) fn sidecar_path(root: &Path, bucket: &str, key: &str, kind: &str) -> PathBuf {
    root.join(format!(
        ".bucket-{}.object-{}.{kind}.json",
        base64_url_no_pad(bucket.as_bytes()),
        base64_url_no_pad(key.as_bytes())
    ))
}

fn base64_url_no_pad(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // A chunk of k bytes carries 8k bits, i.e. k + 1 six-bit digits; without
        // padding the rest are simply left off.
        for i in 0..=chunk.len() {
            let digit = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[digit as usize]));
        }
    }
    out
}

/// Percent-encodes a key for a listing requested with `encoding-type=url`.
///
/// Spaces become `%20` rather than `+`, and `+` itself is escaped, so the result
/// decodes correctly with either plain percent-decoding or the form-style decoding
/// (`unquote_plus`) some SDKs apply. `/` is kept for readability, as S3 does.
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_alias_or_escape_are_refused() {
        assert_eq!(check_key(""), Err(KeyProblem::Empty));
        assert_eq!(check_key("/a"), Err(KeyProblem::Absolute));
        assert_eq!(check_key("a/../b"), Err(KeyProblem::NonCanonicalSegment));
        assert_eq!(check_key(".."), Err(KeyProblem::NonCanonicalSegment));
        assert_eq!(check_key("./a"), Err(KeyProblem::NonCanonicalSegment));
        assert_eq!(check_key("a//b"), Err(KeyProblem::NonCanonicalSegment));
        assert_eq!(check_key("a\0b"), Err(KeyProblem::Nul));
        assert_eq!(check_key("dir/"), Ok(()));
        assert_eq!(check_key("a b/c+d%e=f#g/ünï.bin"), Ok(()));
        assert_eq!(check_key("..a/b..c/.d"), Ok(()));
        let long = "x".repeat(256);
        assert_eq!(
            check_key(&format!("d/{long}")),
            Err(KeyProblem::SegmentTooLong)
        );
        assert_eq!(check_key(&"x".repeat(255)), Ok(()));
        let deep = vec!["y".repeat(200); 16].join("/");
        assert_eq!(check_key(&deep), Err(KeyProblem::PathTooLong));
    }

    #[test]
    fn bucket_names_are_validated() {
        let root = Path::new("/srv");
        assert_eq!(bucket_dir(root, "data"), Some(PathBuf::from("/srv/data")));
        assert_eq!(bucket_dir(root, ".bucket-x"), None);
        assert_eq!(bucket_dir(root, ".."), None);
        assert_eq!(object_rel_path("data", "a/../../x"), None);
        assert_eq!(object_rel_path("..", "x"), None);
        assert_eq!(
            object_rel_path("data", "d/x.bin"),
            Some(PathBuf::from("data/d/x.bin"))
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64_url_no_pad(input.as_bytes()), want, "{input:?}");
        }
        // The URL-safe alphabet, not '+' and '/'.
        assert_eq!(base64_url_no_pad(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn url_encoding_survives_both_decoders() {
        assert_eq!(url_encode("a b+c/%d=é"), "a%20b%2Bc/%25d%3D%C3%A9");
        assert_eq!(url_encode("plain/key-1_2.~"), "plain/key-1_2.~");
    }
}
