//! Shared set-up for the S3 layer's tests: the testkit's real `chute serve`
//! over a temporary directory, clients for it, and a read helper.

#![allow(dead_code, unused_imports)] // each test binary uses a different subset

use chute_s3::{Client, RetryPolicy, S3Config, StoreError};

pub use chute_testkit::data::{pattern, sha256};
pub use chute_testkit::harness::{client_for, fast_policy, ServedDir, BUCKET};

/// A client that signs with `secret` instead of the server's secret.
pub async fn client_with_secret(endpoint: &str, secret: &str, policy: RetryPolicy) -> Client {
    let config = S3Config {
        secret_key: Some(secret.into()),
        ..chute_testkit::harness::s3_config(endpoint)
    };
    chute_testkit::harness::client_with(&config, policy).await
}

pub async fn read_all(
    client: &Client,
    key: &str,
    range: std::ops::Range<u64>,
    etag: Option<String>,
) -> Result<Vec<u8>, StoreError> {
    Ok(client
        .read_to_bytes(BUCKET, key, range, etag)
        .await?
        .to_vec())
}
