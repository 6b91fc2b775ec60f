//! Typed errors of the object-store layer.
//!
//! Every variant names the bucket and key it concerns, so a message that reaches a
//! user (a log line, an EIO, a failed download) says which object failed and why.
//! [`StoreError::is_retryable`] is the single place that decides what a retry can fix.

use std::fmt;

use chute_plan::{Classify, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bucket '{bucket}' does not exist (check the bucket name in the URI and the endpoint/region)")]
    NoSuchBucket { bucket: String },

    #[error("object s3://{bucket}/{key} does not exist")]
    NoSuchKey { bucket: String, key: String },

    #[error("access denied to s3://{bucket}/{key}: {detail} (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile's credentials and the bucket policy)")]
    AccessDenied {
        bucket: String,
        key: String,
        detail: String,
    },

    #[error("object s3://{bucket}/{key} changed since it was listed (ETag was {expected}, now {found}); refusing to mix versions")]
    Changed {
        bucket: String,
        key: String,
        expected: String,
        found: String,
    },

    #[error("range {start}..{end} of s3://{bucket}/{key} is outside the object{}", size.map(|s| format!(" ({s} bytes)")).unwrap_or_default())]
    InvalidRange {
        bucket: String,
        key: String,
        start: u64,
        end: u64,
        size: Option<u64>,
    },

    #[error("cannot reach the endpoint {endpoint}: {detail} (check --endpoint-url / AWS_ENDPOINT_URL and that the server is up)")]
    Unreachable { endpoint: String, detail: String },

    /// A failure a retry may fix: throttling, 5xx, timeouts, dropped connections,
    /// bodies cut short.
    #[error("transient error on s3://{bucket}/{key}: {detail}")]
    Transient {
        bucket: String,
        key: String,
        detail: String,
    },

    #[error("s3://{bucket}/{key}: gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        bucket: String,
        key: String,
        attempts: u32,
        last: Box<StoreError>,
    },

    #[error("no usable AWS credentials: {detail} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity / instance role)")]
    NoCredentials { detail: String },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("s3://{bucket}/{key}: {detail}")]
    Other {
        bucket: String,
        key: String,
        detail: String,
    },
}

impl StoreError {
    /// Whether another attempt of the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Transient { .. } | StoreError::Unreachable { .. }
        )
    }

    /// The error at the root of a retry chain.
    pub fn root(&self) -> &StoreError {
        match self {
            StoreError::RetriesExhausted { last, .. } => last.root(),
            other => other,
        }
    }

    pub(crate) fn transient(bucket: &str, key: &str, detail: impl fmt::Display) -> Self {
        StoreError::Transient {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn other(bucket: &str, key: &str, detail: impl fmt::Display) -> Self {
        StoreError::Other {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            detail: detail.to_string(),
        }
    }
}

impl Classify for StoreError {
    /// A bad range or configuration is the caller's; everything else is the
    /// source's, including what retries could not fix.
    fn class(&self) -> ErrorClass {
        match self {
            StoreError::InvalidRange { .. } | StoreError::Config(_) => ErrorClass::Usage,
            StoreError::RetriesExhausted { last, .. } => last.class(),
            _ => ErrorClass::Source,
        }
    }
}
