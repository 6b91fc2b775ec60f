//! Parsing of the URIs a user hands to chute: channel sources (`s3://bucket/prefix`,
//! `file:///abs/dir`) and single-object URLs (`s3://bucket/key`, as found in
//! manifests).
//!
//! Prefixes and keys are kept byte for byte. S3 compares keys bytewise, so any
//! "normalisation" (trimming or adding a `/`, decoding `%xx` escapes) would quietly
//! select a different set of objects than the one the user named. For the same reason
//! `file://` paths are taken literally, without percent-decoding.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a channel's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceUri {
    /// `s3://bucket/prefix`; `s3://bucket` and `s3://bucket/` both give an empty
    /// prefix (the whole bucket).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix, exactly as written (it may or may not end in `/`).
        prefix: String,
    },
    /// `file:///abs/dir`: a local directory treated as a bucket prefix.
    Local {
        /// The absolute directory, without a trailing `/` (except for `/` itself).
        root: PathBuf,
    },
}

/// The URL of one S3 object, `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct S3Url {
    /// Bucket name.
    pub bucket: String,
    /// Object key, exactly as written; never empty.
    pub key: String,
}

/// Why a URI was rejected. Every message names the bad input and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Nothing was given.
    #[error("empty URI: expected s3://bucket/prefix or file:///abs/dir")]
    Empty,
    /// No `scheme://` at all.
    #[error(
        "'{input}' has no scheme: did you mean '{suggestion}'? \
         (sources are written s3://bucket/prefix or file:///abs/dir)"
    )]
    MissingScheme {
        /// The URI as given.
        input: String,
        /// The most likely intended URI.
        suggestion: String,
    },
    /// A scheme other than `s3://` or `file://`.
    #[error("'{}': unsupported scheme '{scheme}://': {hint}", crate::redact::redact_uri(.input))]
    UnsupportedScheme {
        /// The URI as given.
        input: String,
        /// The scheme found, without `://`.
        scheme: String,
        /// What to write instead.
        hint: String,
    },
    /// `s3://` followed directly by `/` or nothing.
    #[error("'{}' has an empty bucket name: write s3://bucket/prefix", crate::redact::redact_uri(.input))]
    EmptyBucket {
        /// The URI as given.
        input: String,
    },
    /// The bucket name breaks the naming rules.
    #[error("'{}': invalid bucket name '{}': {reason}", crate::redact::redact_uri(.input), crate::redact::redact_uri(.bucket))]
    InvalidBucket {
        /// The URI as given.
        input: String,
        /// The bucket part of it.
        bucket: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An object URL without a key.
    #[error("'{}' names no object (the key is empty): write s3://bucket/key", crate::redact::redact_uri(.input))]
    MissingKey {
        /// The URI as given.
        input: String,
    },
    /// A `file:` URI whose path is not absolute.
    #[error(
        "'{input}' is not an absolute local directory: write file:///abs/dir \
         (three slashes, then the absolute path)"
    )]
    RelativeFilePath {
        /// The URI as given.
        input: String,
    },
}

/// Longest bucket name accepted. Real S3 stops at 63, but S3-compatible stores
/// (MinIO, Ceph RGW) are laxer and chute should not refuse buckets they serve.
const MAX_BUCKET_LEN: usize = 255;

impl SourceUri {
    /// Parses `s3://bucket[/prefix]` or `file:///abs/dir`.
    pub fn parse(input: &str) -> Result<SourceUri, UriError> {
        match split_scheme(input)? {
            (Scheme::S3, rest) => {
                let (bucket, prefix) = match rest.split_once('/') {
                    Some((bucket, prefix)) => (bucket, prefix),
                    None => (rest, ""),
                };
                check_bucket(input, bucket)?;
                Ok(SourceUri::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                })
            }
            (Scheme::File, rest) => parse_file(input, rest),
        }
    }

    /// True for `file://` sources.
    pub fn is_local(&self) -> bool {
        matches!(self, SourceUri::Local { .. })
    }
}

impl FromStr for SourceUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceUri::parse(s)
    }
}

impl fmt::Display for SourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Always written with the `/` after the bucket: `s3://b/` and `s3://b`
            // parse to the same value, and the slash makes "whole bucket" visible.
            SourceUri::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            SourceUri::Local { root } => write!(f, "file://{}", root.display()),
        }
    }
}

impl S3Url {
    /// Parses `s3://bucket/key` (the key must not be empty).
    pub fn parse(input: &str) -> Result<S3Url, UriError> {
        match split_scheme(input)? {
            (Scheme::S3, rest) => {
                let (bucket, key) = match rest.split_once('/') {
                    Some((bucket, key)) => (bucket, key),
                    None => (rest, ""),
                };
                check_bucket(input, bucket)?;
                if key.is_empty() {
                    return Err(UriError::MissingKey {
                        input: input.to_owned(),
                    });
                }
                Ok(S3Url {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                })
            }
            (Scheme::File, _) => Err(UriError::UnsupportedScheme {
                input: input.to_owned(),
                scheme: "file".to_owned(),
                hint: "an object URL must be s3://bucket/key".to_owned(),
            }),
        }
    }
}

impl FromStr for S3Url {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        S3Url::parse(s)
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

enum Scheme {
    S3,
    File,
}

/// Splits off the scheme, returning what follows `s3://`, or what follows `file:`
/// for file URIs (their authority part is handled by [`parse_file`]).
fn split_scheme(input: &str) -> Result<(Scheme, &str), UriError> {
    if input.is_empty() {
        return Err(UriError::Empty);
    }
    if let Some(rest) = input.strip_prefix("s3://") {
        return Ok((Scheme::S3, rest));
    }
    if let Some(rest) = input.strip_prefix("file:") {
        return Ok((Scheme::File, rest));
    }
    let Some((scheme, _)) = input.split_once("://") else {
        let suggestion = if input.starts_with('/') {
            format!("file://{input}")
        } else {
            format!("s3://{input}")
        };
        return Err(UriError::MissingScheme {
            input: input.to_owned(),
            suggestion,
        });
    };
    let hint = if scheme.eq_ignore_ascii_case("s3") || scheme.eq_ignore_ascii_case("file") {
        format!(
            "schemes are lowercase: write '{}://{}'",
            scheme.to_ascii_lowercase(),
            &input[scheme.len() + 3..]
        )
    } else if scheme.eq_ignore_ascii_case("s3a") || scheme.eq_ignore_ascii_case("s3n") {
        format!(
            "s3a:// and s3n:// are Hadoop names: write 's3://{}'",
            &input[scheme.len() + 3..]
        )
    } else if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        "write s3://bucket/prefix; for an S3-compatible store (MinIO, ...) \
         pass its address with --endpoint-url"
            .to_owned()
    } else {
        "chute reads s3://bucket/prefix or file:///abs/dir".to_owned()
    };
    Err(UriError::UnsupportedScheme {
        input: input.to_owned(),
        scheme: scheme.to_owned(),
        hint,
    })
}

fn check_bucket(input: &str, bucket: &str) -> Result<(), UriError> {
    if bucket.is_empty() {
        return Err(UriError::EmptyBucket {
            input: input.to_owned(),
        });
    }
    let invalid = |reason: String| UriError::InvalidBucket {
        input: input.to_owned(),
        bucket: bucket.to_owned(),
        reason,
    };
    if bucket.len() > MAX_BUCKET_LEN {
        return Err(invalid(format!(
            "it is {} bytes long; the limit is {MAX_BUCKET_LEN}",
            bucket.len()
        )));
    }
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_');
    if let Some(bad) = bucket.chars().find(|&c| !allowed(c)) {
        let lowered = bucket.to_ascii_lowercase();
        let reason = if bad.is_ascii_uppercase() && lowered.chars().all(allowed) {
            format!("bucket names are lowercase: write '{lowered}'")
        } else {
            format!(
                "it contains {bad:?}; bucket names use only lowercase letters, digits, \
                 '.', '-' and '_'"
            )
        };
        return Err(invalid(reason));
    }
    Ok(())
}

/// `rest` is what follows `file:`. Accepted: `///abs`, `//localhost/abs` (RFC 8089)
/// and the short form `/abs`.
fn parse_file(input: &str, rest: &str) -> Result<SourceUri, UriError> {
    let path = match rest.strip_prefix("//") {
        Some(after) => match after.strip_prefix("localhost") {
            Some(p) if p.starts_with('/') => p,
            _ => after,
        },
        None => rest,
    };
    if !path.starts_with('/') {
        return Err(UriError::RelativeFilePath {
            input: input.to_owned(),
        });
    }
    let trimmed = path.trim_end_matches('/');
    let root = if trimmed.is_empty() { "/" } else { trimmed };
    Ok(SourceUri::Local {
        root: PathBuf::from(root),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> SourceUri {
        SourceUri::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn s3_forms() {
        assert_eq!(SourceUri::parse("s3://bucket").unwrap(), s3("bucket", ""));
        assert_eq!(SourceUri::parse("s3://bucket/").unwrap(), s3("bucket", ""));
        assert_eq!(
            SourceUri::parse("s3://bucket/some/prefix").unwrap(),
            s3("bucket", "some/prefix")
        );
        assert_eq!(
            SourceUri::parse("s3://bucket/some/prefix/").unwrap(),
            s3("bucket", "some/prefix/")
        );
        // Kept bytewise, even when odd.
        assert_eq!(
            SourceUri::parse("s3://b_1.x-y//a b%20").unwrap(),
            s3("b_1.x-y", "/a b%20")
        );
        // S3 Express directory bucket names are plain lowercase names.
        assert_eq!(
            SourceUri::parse("s3://data--use1-az4--x-s3/train/").unwrap(),
            s3("data--use1-az4--x-s3", "train/")
        );
    }

    #[test]
    fn file_forms() {
        let local = |p: &str| SourceUri::Local { root: p.into() };
        assert_eq!(
            SourceUri::parse("file:///abs/dir").unwrap(),
            local("/abs/dir")
        );
        assert_eq!(
            SourceUri::parse("file:///abs/dir/").unwrap(),
            local("/abs/dir")
        );
        assert_eq!(SourceUri::parse("file:///").unwrap(), local("/"));
        assert_eq!(
            SourceUri::parse("file://localhost/abs").unwrap(),
            local("/abs")
        );
        assert_eq!(SourceUri::parse("file:/abs").unwrap(), local("/abs"));
        assert!(SourceUri::parse("file:///x").unwrap().is_local());
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "s3://bucket",
            "s3://bucket/",
            "s3://bucket/p",
            "s3://bucket/p/",
            "s3://bucket//x",
            "file:///abs/dir",
            "file:///",
        ] {
            let parsed = SourceUri::parse(input).unwrap();
            let shown = parsed.to_string();
            assert_eq!(
                SourceUri::parse(&shown).unwrap(),
                parsed,
                "{input} -> {shown}"
            );
        }
        assert_eq!(
            SourceUri::parse("s3://bucket/p").unwrap().to_string(),
            "s3://bucket/p"
        );
        assert_eq!(
            SourceUri::parse("file:///abs/dir/").unwrap().to_string(),
            "file:///abs/dir"
        );
        let url = S3Url::parse("s3://b/k/x.bin").unwrap();
        assert_eq!(url.to_string(), "s3://b/k/x.bin");
        assert_eq!(S3Url::parse(&url.to_string()).unwrap(), url);
    }

    #[test]
    fn s3_url() {
        assert_eq!(
            S3Url::parse("s3://b/dir/key.jpg").unwrap(),
            S3Url {
                bucket: "b".into(),
                key: "dir/key.jpg".into()
            }
        );
        assert!(matches!(
            S3Url::parse("s3://b/"),
            Err(UriError::MissingKey { .. })
        ));
        assert!(matches!(
            S3Url::parse("s3://b"),
            Err(UriError::MissingKey { .. })
        ));
        let err = S3Url::parse("file:///x").unwrap_err().to_string();
        assert!(err.contains("s3://bucket/key"), "{err}");
        assert_eq!("s3://b/k".parse::<S3Url>().unwrap().key, "k");
    }

    #[test]
    fn errors_name_input_and_fix() {
        let msg = |s: &str| SourceUri::parse(s).unwrap_err().to_string();

        assert_eq!(SourceUri::parse(""), Err(UriError::Empty));

        let m = msg("s3:///prefix");
        assert!(
            m.contains("'s3:///prefix'") && m.contains("empty bucket"),
            "{m}"
        );
        assert!(matches!(
            SourceUri::parse("s3://"),
            Err(UriError::EmptyBucket { .. })
        ));

        let m = msg("s3://My-Bucket/x");
        assert!(
            m.contains("'My-Bucket'") && m.contains("write 'my-bucket'"),
            "{m}"
        );

        let m = msg("s3://buck et/x");
        assert!(m.contains("' '") && m.contains("lowercase letters"), "{m}");

        let long = format!("s3://{}/x", "a".repeat(256));
        assert!(msg(&long).contains("limit is 255"));
        assert!(SourceUri::parse(&format!("s3://{}/x", "a".repeat(255))).is_ok());

        let m = msg("S3://bucket/x");
        assert!(
            m.contains("'S3://'") && m.contains("write 's3://bucket/x'"),
            "{m}"
        );

        let m = msg("https://bucket.s3.amazonaws.com/x");
        assert!(
            m.contains("'https://'") && m.contains("--endpoint-url"),
            "{m}"
        );

        let m = msg("s3a://bucket/x");
        assert!(m.contains("write 's3://bucket/x'"), "{m}");

        let m = msg("gs://bucket/x");
        assert!(m.contains("s3://bucket/prefix"), "{m}");

        let m = msg("bucket/prefix");
        assert!(m.contains("did you mean 's3://bucket/prefix'"), "{m}");
        let m = msg("/abs/dir");
        assert!(m.contains("did you mean 'file:///abs/dir'"), "{m}");

        for rel in ["file://relative/dir", "file:relative", "file://", "file:"] {
            let m = msg(rel);
            assert!(
                m.contains(&format!("'{rel}'")) && m.contains("file:///abs/dir"),
                "{m}"
            );
        }
    }
}
