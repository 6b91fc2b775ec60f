//! Ranged reads: every byte of a large object, in odd-sized ranges that cross
//! any power-of-two boundary a reader or server might use, matches the source.

mod common;

use std::sync::Arc;

use chute_s3::{Client, LocalStore, StoreError};
use common::*;

const SIZE: usize = 20 * 1024 * 1024;

/// Odd sizes, so range edges fall everywhere relative to 4 KiB pages, 64 KiB
/// socket buffers and 1-8 MiB parts.
const STEPS: [u64; 6] = [1, 4095, 65_537, 999_983, 1_048_577, 8_388_609];

async fn check_client(client: &Client, key: &str, data: &[u8]) {
    let size = data.len() as u64;
    let meta = client.head(BUCKET, key).await.expect("head");
    assert_eq!(meta.size, size);
    let etag = meta.etag.clone();

    // Walk the object with a rotating set of odd range sizes.
    let mut joined = Vec::with_capacity(data.len());
    let mut pos = 0u64;
    let mut i = 0;
    while pos < size {
        let end = (pos + STEPS[i % STEPS.len()]).min(size);
        let part = read_all(client, key, pos..end, etag.clone())
            .await
            .expect("range");
        assert_eq!(part.len() as u64, end - pos, "length of {pos}..{end}");
        joined.extend_from_slice(&part);
        pos = end;
        i += 1;
    }
    assert_eq!(
        sha256(&joined),
        sha256(data),
        "joined ranges hash like the source"
    );

    // Random ranges, including the last byte and the first.
    let mut x: u64 = 0x1234_5678;
    for n in 0..150 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let start = match n {
            0 => 0,
            1 => size - 1,
            _ => (x >> 11) % size,
        };
        let len = 1 + (x >> 40) % (3 << 20);
        let end = (start + len).min(size);
        let part = read_all(client, key, start..end, etag.clone())
            .await
            .expect("random range");
        assert!(
            part == data[start as usize..end as usize],
            "bytes of {start}..{end} differ"
        );
    }

    // Past the end: a clean error, not a short read.
    for range in [size..size + 10, size - 1..size + 1, size + 100..size + 200] {
        let err = read_all(client, key, range.clone(), etag.clone())
            .await
            .expect_err("range past the end");
        assert!(
            matches!(err, StoreError::InvalidRange { .. }),
            "{range:?}: {err:?}"
        );
        assert!(err.to_string().contains(key), "error names the key: {err}");
    }
    // An empty range is no bytes, without a request.
    assert!(read_all(client, key, 5..5, etag)
        .await
        .expect("empty")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_mib_in_odd_ranges_over_s3() {
    let srv = ServedDir::start().await;
    let data = pattern(SIZE, 7);
    srv.put("ranged/big.bin", &data);
    let client = client_for(&srv.endpoint(), fast_policy()).await;
    check_client(&client, "ranged/big.bin", &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_mib_in_odd_ranges_local() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = pattern(SIZE, 9);
    std::fs::create_dir_all(dir.path().join("bkt/ranged")).expect("mkdir");
    std::fs::write(dir.path().join("bkt/ranged/big.bin"), &data).expect("write");
    let store = LocalStore::new(dir.path()).expect("local store");
    let client = Client::new(Arc::new(store), fast_policy());
    check_client(&client, "bkt/ranged/big.bin", &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_byte_object_reads_as_empty() {
    let srv = ServedDir::start().await;
    srv.put("empty.bin", b"");
    let client = client_for(&srv.endpoint(), fast_policy()).await;
    let body = client.get_object(BUCKET, "empty.bin").await.expect("get");
    assert!(body.is_empty());
    let err = client
        .get_object(BUCKET, "missing.bin")
        .await
        .expect_err("missing");
    assert!(matches!(err, StoreError::NoSuchKey { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.bin"));
}
