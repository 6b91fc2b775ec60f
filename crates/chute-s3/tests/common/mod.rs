//! Shared set-up for the S3 layer's tests: a real `chute serve` endpoint in this
//! process, on a free loopback port, over a temporary directory.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chute_s3::{Client, RetryPolicy, S3Config, S3Store};
use chute_serve::{ServeConfig, Server};

pub const BUCKET: &str = "bkt";
pub const ACCESS_KEY: &str = "chute-test-key";
pub const SECRET_KEY: &str = "chute-test-secret-0123456789";

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub server: Server,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(BUCKET)).expect("bucket dir");
        let server = Server::start(ServeConfig {
            root: dir.path().to_path_buf(),
            addr: "127.0.0.1:0".parse().expect("addr"),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        })
        .await
        .expect("start chute serve");
        TestServer { dir, server }
    }

    pub fn path_of(&self, key: &str) -> PathBuf {
        self.dir.path().join(BUCKET).join(key)
    }

    /// Writes an object straight into the served directory (atomically, so a
    /// reader never sees half of it).
    pub fn put(&self, key: &str, data: &[u8]) {
        let path = self.path_of(key);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let tmp = path.with_extension("chute-test-tmp");
        std::fs::write(&tmp, data).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    }

    pub fn endpoint(&self) -> String {
        self.server.endpoint_url()
    }
}

/// A policy with short waits so fault tests finish quickly.
pub fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        max_connect_attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        stall_timeout: Duration::from_millis(500),
    }
}

pub async fn client_for(endpoint: &str, policy: RetryPolicy) -> Client {
    client_with_secret(endpoint, SECRET_KEY, policy).await
}

pub async fn client_with_secret(endpoint: &str, secret: &str, policy: RetryPolicy) -> Client {
    let store = S3Store::new(&S3Config {
        endpoint_url: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        access_key: Some(ACCESS_KEY.into()),
        secret_key: Some(secret.into()),
        connect_timeout: Some(Duration::from_secs(2)),
        read_timeout: Some(Duration::from_secs(5)),
        ..S3Config::default()
    })
    .await
    .expect("s3 store");
    Client::new(Arc::new(store), policy)
}

// Not every test file uses both.
#[allow(unused_imports)]
pub use chute_testkit::data::{pattern, sha256};

pub async fn read_all(
    client: &Client,
    key: &str,
    range: std::ops::Range<u64>,
    etag: Option<String>,
) -> Result<Vec<u8>, chute_s3::StoreError> {
    Ok(client
        .read_to_bytes(BUCKET, key, range, etag)
        .await?
        .to_vec())
}
