//! Shared harness: a server over a temporary ROOT and an AWS SDK client for it.
//!
//! The client is configured explicitly rather than from the environment: the
//! environment's CA bundle setting breaks plain-HTTP endpoints, and nothing here may
//! probe instance metadata.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use chute_serve::{ServeConfig, Server};
use s3s::crypto::{Checksum, Md5};
use tempfile::TempDir;

pub const BUCKET: &str = "test-bucket";
pub const ACCESS_KEY: &str = "chute-test-access";
pub const SECRET_KEY: &str = "chute-test-secret";

pub struct Harness {
    pub server: Server,
    pub client: Client,
    pub root: TempDir,
}

impl Harness {
    /// A running server with an empty bucket `BUCKET`.
    pub async fn start() -> Harness {
        let root = tempfile::tempdir().expect("temp ROOT");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket dir");
        let server = Server::start(ServeConfig {
            root: root.path().to_path_buf(),
            addr: "127.0.0.1:0".parse().expect("literal address"),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        })
        .await
        .expect("server starts");
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
        write_file(&self.path(key), data);
    }
}

pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("parent dirs");
    }
    std::fs::write(path, data).expect("write file");
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

/// Deterministic pseudo-random bytes (xorshift64*), so failures are reproducible.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The ETag S3 gives a single-part object: its hex MD5 in double quotes.
pub fn quoted_md5(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::checksum(data)))
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
