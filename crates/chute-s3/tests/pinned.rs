//! Reads are pinned to the version that was listed: an object overwritten after
//! listing fails the read instead of mixing bytes of two versions.

mod common;

use std::sync::Arc;

use chute_s3::{Client, ListOptions, LocalStore, StoreError};
use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};
use common::*;
use futures::StreamExt;

const KEY: &str = "pinned/object.bin";
const SIZE: usize = 4 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_after_listing_fails_the_read() {
    let srv = ServedDir::start().await;
    srv.put(KEY, &pattern(SIZE, 1));
    let client = client_for(&srv.endpoint(), fast_policy()).await;
    let listed = client
        .list(BUCKET, "pinned/", &ListOptions::default())
        .await
        .expect("list");
    let etag = listed[0].etag.clone();
    assert!(etag.is_some());

    srv.put(KEY, &pattern(SIZE, 2));
    let err = read_all(&client, KEY, 0..SIZE as u64, etag.clone())
        .await
        .expect_err("changed object");
    assert!(matches!(err, StoreError::Changed { .. }), "{err:?}");
    assert!(err.to_string().contains(KEY));
    // The new version is readable when asked for as such.
    let fresh = client.head(BUCKET, KEY).await.expect("head");
    assert_ne!(fresh.etag, etag);
    let body = read_all(&client, KEY, 0..SIZE as u64, fresh.etag)
        .await
        .expect("read v2");
    assert_eq!(sha256(&body), sha256(&pattern(SIZE, 2)));
}

/// The object changes while a read is under way and the connection drops: the
/// resumed request must not continue with the new version's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_mid_read_never_mixes_versions() {
    let srv = ServedDir::start().await;
    let v1 = pattern(SIZE, 1);
    srv.put(KEY, &v1);
    let proxy = FaultProxy::start(srv.addr()).await.expect("proxy");
    proxy.push(FaultRule {
        method: Some("GET".into()),
        path_contains: Some("pinned/object".into()),
        kind: FaultKind::CutBody {
            after_body_bytes: 1 << 20,
        },
        times: 1,
    });
    let client = client_for(&proxy.endpoint_url(), fast_policy()).await;
    let etag = client.head(BUCKET, KEY).await.expect("head").etag;
    let mut stream = client.read(BUCKET, KEY, 0..SIZE as u64, etag);
    let mut got = Vec::new();
    let first = stream
        .next()
        .await
        .expect("a chunk")
        .expect("first chunk ok");
    got.extend_from_slice(&first);
    srv.put(KEY, &pattern(SIZE, 2));
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => got.extend_from_slice(&chunk),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("the read must fail once the version changed");
    assert!(matches!(err, StoreError::Changed { .. }), "{err:?}");
    assert!(got.len() < SIZE);
    assert!(
        got == v1[..got.len()],
        "every byte delivered is from the listed version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_detects_changes_too() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("obj.bin");
    std::fs::write(&path, pattern(1000, 1)).expect("write");
    let client = Client::new(
        Arc::new(LocalStore::new(dir.path()).expect("store")),
        fast_policy(),
    );
    let listed = client
        .list("", "", &ListOptions::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let tmp = dir.path().join("obj.tmp");
    std::fs::write(&tmp, pattern(1000, 2)).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    let err = client
        .read_to_bytes("", "obj.bin", 0..1000, listed[0].etag.clone())
        .await
        .expect_err("changed");
    assert!(matches!(err, StoreError::Changed { .. }), "{err:?}");
}
