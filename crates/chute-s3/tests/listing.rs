//! Listing against a real endpoint: completeness, exact keys, and the concurrent
//! fan-out against a serial listing.

mod common;

use std::time::{Duration, Instant};

use chute_s3::ListOptions;
use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};
use common::*;

/// Key characters that trip up URL encoding, XML escaping or signing.
const AWKWARD: [&str; 9] = [
    "with space",
    "plus+sign",
    "per%cent",
    "eq=uals",
    "hash#tag",
    "ünïcödé",
    "日本語",
    "semi;colon",
    "tilde~amp&",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_2500_nested_keys_exactly() {
    let srv = ServedDir::start().await;
    let mut expected = Vec::new();
    for i in 0..2500usize {
        let name = AWKWARD[i % AWKWARD.len()];
        let key = format!("set/{:02}/{}/{name}-{i}.bin", i % 25, i % 3);
        // Every seventh object is empty.
        let size = if i % 7 == 0 { 0 } else { i % 300 + 1 };
        srv.put(&key, &pattern(size, i as u64));
        expected.push((key, size as u64));
    }
    // Outside the prefix: must not appear.
    srv.put("setx/other.bin", b"x");
    srv.put("elsewhere/y.bin", b"y");
    expected.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

    let client = client_for(&srv.endpoint(), fast_policy()).await;
    let concurrent = client
        .list(BUCKET, "set/", &ListOptions::default())
        .await
        .expect("list");
    let got: Vec<(String, u64)> = concurrent.iter().map(|o| (o.key.clone(), o.size)).collect();
    assert_eq!(got.len(), 2500);
    assert_eq!(got, expected);
    assert!(
        concurrent.iter().all(|o| o.etag.is_some()),
        "every object has an ETag"
    );

    let serial = client
        .list_serial(BUCKET, "set/")
        .await
        .expect("serial list");
    assert_eq!(serial, concurrent, "serial and concurrent listings agree");

    // A prefix that ends inside a name ("partial name") lists what starts with it.
    let partial = client
        .list(BUCKET, "set/0", &ListOptions::default())
        .await
        .expect("partial list");
    let want = expected
        .iter()
        .filter(|(k, _)| k.starts_with("set/0"))
        .count();
    assert_eq!(partial.len(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_named() {
    let srv = ServedDir::start().await;
    let client = client_for(&srv.endpoint(), fast_policy()).await;
    let err = client
        .list("no-such-bucket", "", &ListOptions::default())
        .await
        .expect_err("missing bucket");
    assert!(
        matches!(err, chute_s3::StoreError::NoSuchBucket { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
}

/// 10,000 keys in 100 sub-prefixes, listed serially and with fan-out, directly and
/// through a proxy that adds a 10 ms round trip to every request (a nearby S3
/// region answers a LIST page in 20-100 ms). Times are printed for the record;
/// what is asserted is that both listings are complete and identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_10k_concurrent_vs_serial() {
    let srv = ServedDir::start().await;
    for i in 0..10_000usize {
        srv.put(&format!("big/{:03}/obj-{i:05}", i % 100), &[]);
    }
    let client = client_for(&srv.endpoint(), fast_policy()).await;
    let opts = ListOptions::default();

    let t = Instant::now();
    let serial = client.list_serial(BUCKET, "big/").await.expect("serial");
    let serial_direct = t.elapsed();
    let t = Instant::now();
    let fanned = client
        .list(BUCKET, "big/", &opts)
        .await
        .expect("concurrent");
    let fanned_direct = t.elapsed();
    assert_eq!(serial.len(), 10_000);
    assert_eq!(serial, fanned);

    let proxy = FaultProxy::start(srv.addr()).await.expect("proxy");
    proxy.push(FaultRule {
        method: None,
        path_contains: None,
        kind: FaultKind::Delay {
            duration: Duration::from_millis(10),
        },
        times: usize::MAX,
    });
    let slow = client_for(&proxy.endpoint_url(), fast_policy()).await;
    let t = Instant::now();
    let serial_rtt = slow
        .list_serial(BUCKET, "big/")
        .await
        .expect("serial via proxy");
    let serial_slow = t.elapsed();
    let t = Instant::now();
    let fanned_rtt = slow
        .list(BUCKET, "big/", &opts)
        .await
        .expect("concurrent via proxy");
    let fanned_slow = t.elapsed();
    assert_eq!(serial_rtt, serial);
    assert_eq!(fanned_rtt, serial);

    eprintln!(
        "LIST 10,000 keys: loopback serial {:.0} ms, concurrent {:.0} ms; \
         with 10 ms RTT serial {:.0} ms, concurrent {:.0} ms",
        serial_direct.as_secs_f64() * 1e3,
        fanned_direct.as_secs_f64() * 1e3,
        serial_slow.as_secs_f64() * 1e3,
        fanned_slow.as_secs_f64() * 1e3
    );
}
