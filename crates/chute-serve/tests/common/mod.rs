//! Shared harness: the testkit's real `chute serve` over a temporary ROOT, and an
//! AWS SDK client for it.
//!
//! The client is configured explicitly rather than from the environment: the
//! environment's CA bundle setting breaks plain-HTTP endpoints, and nothing here may
//! probe instance metadata.

#![allow(dead_code, unused_imports)] // each test binary uses a different subset

use std::path::PathBuf;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use chute_serve::Server;
use chute_testkit::harness::{write_atomic, BucketDir, ServedDir};
use tempfile::TempDir;

pub use chute_testkit::data::pattern;
pub use chute_testkit::harness::{ACCESS_KEY, SECRET_KEY};
/// The ETag S3 gives a single-part object: its hex MD5 in double quotes.
pub use chute_testkit::md5_etag as quoted_md5;

pub const BUCKET: &str = "test-bucket";

pub struct Harness {
    pub server: Server,
    pub client: Client,
    pub root: TempDir,
}

impl Harness {
    /// A running server with an empty bucket `BUCKET`.
    pub async fn start() -> Harness {
        let ServedDir {
            dir: BucketDir { root, .. },
            server,
        } = ServedDir::start_bucket(BUCKET).await;
        let client = client(&server.endpoint_url(), ACCESS_KEY, SECRET_KEY);
        Harness {
            server,
            client,
            root,
        }
    }

    /// Path of `key` in `BUCKET`, for writing files behind the server's back.
    pub fn path(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// Writes a file straight into the bucket directory.
    pub fn write_direct(&self, key: &str, data: &[u8]) {
        write_atomic(&self.path(key), data);
    }
}

pub fn client(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "chute-serve-tests",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    Client::from_conf(config)
}

/// HTTP status and S3 error code of a failed call.
pub fn failure<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> (u16, String) {
    let status = err.raw_response().map_or(0, |r| r.status().as_u16());
    let code = match err {
        SdkError::ServiceError(service) => service.err().code().unwrap_or_default().to_owned(),
        _ => String::new(),
    };
    (status, code)
}
