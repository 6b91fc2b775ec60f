//! Faults between client and server (a real proxy on loopback): throttling,
//! bodies cut short, stalled, trickling and reset connections. Reads still
//! return exact bytes within the retry budget; past it the error names the
//! object.

mod common;

use std::time::Duration;

use chute_s3::{ListOptions, ReadLimits, RetryPolicy, StoreError};
use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};
use common::*;
use futures::StreamExt;

const KEY: &str = "faults/object.bin";
const SIZE: usize = 6 * 1024 * 1024 + 123;

async fn setup() -> (ServedDir, FaultProxy, Vec<u8>) {
    let srv = ServedDir::start().await;
    let data = pattern(SIZE, 3);
    srv.put(KEY, &data);
    let proxy = FaultProxy::start(srv.addr()).await.expect("proxy");
    (srv, proxy, data)
}

fn get_rule(kind: FaultKind, times: usize) -> FaultRule {
    FaultRule {
        method: Some("GET".into()),
        path_contains: Some("faults/object".into()),
        kind,
        times,
    }
}

async fn read_through(
    proxy: &FaultProxy,
    policy: RetryPolicy,
) -> (Result<Vec<u8>, StoreError>, u64) {
    let client = client_for(&proxy.endpoint_url(), policy).await;
    let etag = client.head(BUCKET, KEY).await.expect("head").etag;
    let res = read_all(&client, KEY, 0..SIZE as u64, etag).await;
    (res, client.stats().snapshot().retries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried() {
    let (_srv, proxy, data) = setup().await;
    proxy.push(get_rule(FaultKind::ServiceUnavailable, 3));
    let (res, retries) = read_through(&proxy, fast_policy()).await;
    assert_eq!(sha256(&res.expect("read")), sha256(&data));
    assert_eq!(retries, 3);
    assert_eq!(proxy.stats().faults.service_unavailable, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried() {
    let (_srv, proxy, data) = setup().await;
    proxy.push(get_rule(
        FaultKind::Status {
            status: 500,
            code: "InternalError".into(),
        },
        2,
    ));
    let (res, retries) = read_through(&proxy, fast_policy()).await;
    assert_eq!(sha256(&res.expect("read")), sha256(&data));
    assert_eq!(retries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_bodies_resume_from_the_last_byte() {
    let (_srv, proxy, data) = setup().await;
    // Three cuts at different depths; each resume asks only for what is missing.
    proxy.push(get_rule(
        FaultKind::CutBody {
            after_body_bytes: 1_000_003,
        },
        1,
    ));
    proxy.push(get_rule(
        FaultKind::CutBody {
            after_body_bytes: 17,
        },
        1,
    ));
    proxy.push(get_rule(
        FaultKind::CutBody {
            after_body_bytes: 2_500_000,
        },
        1,
    ));
    let (res, retries) = read_through(&proxy, fast_policy()).await;
    assert_eq!(sha256(&res.expect("read")), sha256(&data));
    assert_eq!(retries, 3);
    assert_eq!(proxy.stats().faults.cut_body, 3);
    // Resumed, not restarted: well under two full copies crossed the proxy.
    assert!(proxy.stats().bytes_to_client < (SIZE as u64) * 3 / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_abandoned_and_resumed() {
    let (_srv, proxy, data) = setup().await;
    proxy.push(get_rule(
        FaultKind::Stall {
            after_body_bytes: 524_288,
            duration: Duration::from_secs(20),
        },
        2,
    ));
    let started = std::time::Instant::now();
    let (res, retries) = read_through(&proxy, fast_policy()).await;
    assert_eq!(sha256(&res.expect("read")), sha256(&data));
    assert_eq!(retries, 2);
    // Two stall timeouts (0.5 s each), not the 20 s stalls.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_are_retried() {
    let (_srv, proxy, data) = setup().await;
    proxy.push(get_rule(FaultKind::Reset, 2));
    let (res, _) = read_through(&proxy, fast_policy()).await;
    assert_eq!(sha256(&res.expect("read")), sha256(&data));
    assert_eq!(proxy.stats().faults.reset, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_budget_the_error_names_the_key() {
    let (_srv, proxy, _data) = setup().await;
    proxy.push(get_rule(FaultKind::ServiceUnavailable, 1000));
    let policy = RetryPolicy {
        max_attempts: 4,
        ..fast_policy()
    };
    let (res, retries) = read_through(&proxy, policy).await;
    let err = res.expect_err("budget exhausted");
    assert!(
        matches!(err, StoreError::RetriesExhausted { attempts: 4, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(KEY) && msg.contains(BUCKET), "{msg}");
    assert!(msg.contains("503") || msg.contains("SlowDown"), "{msg}");
    assert_eq!(retries, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_head_survive_faults() {
    let (srv, proxy, _data) = setup().await;
    for i in 0..30 {
        srv.put(&format!("faults/list/{i:03}"), b"abc");
    }
    proxy.push(FaultRule {
        method: Some("GET".into()),
        path_contains: Some("list-type=2".into()),
        kind: FaultKind::ServiceUnavailable,
        times: 2,
    });
    proxy.push(FaultRule {
        method: Some("HEAD".into()),
        path_contains: None,
        kind: FaultKind::Reset,
        times: 2,
    });
    let client = client_for(&proxy.endpoint_url(), fast_policy()).await;
    let listed = client
        .list(BUCKET, "faults/list/", &ListOptions::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 30);
    let head = client.head(BUCKET, KEY).await.expect("head");
    assert_eq!(head.size, SIZE as u64);
    assert!(client.stats().snapshot().retries >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_fails_fast_and_clearly() {
    // A port nothing listens on.
    let sock = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = sock.local_addr().expect("addr").port();
    drop(sock);
    let client = client_for(&format!("http://127.0.0.1:{port}"), fast_policy()).await;
    let started = std::time::Instant::now();
    let err = client
        .list(BUCKET, "", &ListOptions::default())
        .await
        .expect_err("unreachable");
    assert!(
        matches!(err.root(), StoreError::Unreachable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_access_denied_without_echoing_it() {
    let srv = ServedDir::start().await;
    let client = client_with_secret(&srv.endpoint(), "not-the-secret-xyz", fast_policy()).await;
    let err = client
        .list(BUCKET, "", &ListOptions::default())
        .await
        .expect_err("denied");
    assert!(matches!(err, StoreError::AccessDenied { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(!msg.contains("not-the-secret-xyz"), "{msg}");
    assert!(msg.contains("AWS_SECRET_ACCESS_KEY"), "{msg}");
}

/// Bounds that judge throughput over one second of waiting: far below what
/// loopback delivers, far above a trickle.
fn quick_limits() -> ReadLimits {
    ReadLimits {
        min_bytes_per_sec: 64 << 10,
        window: Duration::from_secs(1),
        ..ReadLimits::default()
    }
}

fn trickle(after_body_bytes: u64) -> FaultKind {
    // 64 bytes every 50 ms: about 1.3 KB/s, so the 6 MiB object would take
    // more than an hour, yet no pause comes near the stall timeout.
    FaultKind::Trickle {
        after_body_bytes,
        step_bytes: 64,
        pause: Duration::from_millis(50),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_bodies_are_abandoned_and_resumed() {
    let (_srv, proxy, data) = setup().await;
    proxy.push(get_rule(trickle(100_000), 2));
    let client = client_for(&proxy.endpoint_url(), fast_policy())
        .await
        .with_read_limits(quick_limits());
    let etag = client.head(BUCKET, KEY).await.expect("head").etag;
    let res = tokio::time::timeout(
        Duration::from_secs(120),
        read_all(&client, KEY, 0..SIZE as u64, etag),
    )
    .await
    .expect("a trickling body kept the read alive");
    assert_eq!(sha256(&res.expect("read")), sha256(&data));
    assert_eq!(client.stats().snapshot().retries, 2);
    assert_eq!(proxy.stats().faults.trickle, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_always_trickles_ends_the_read() {
    let (_srv, proxy, _data) = setup().await;
    // Every attempt makes progress (10 kB at full speed), which resets the
    // count of consecutive failures; only the total bound can end the read.
    proxy.push(get_rule(trickle(10_000), 1000));
    let limits = ReadLimits {
        max_resumes: 3,
        ..quick_limits()
    };
    let client = client_for(&proxy.endpoint_url(), fast_policy())
        .await
        .with_read_limits(limits);
    let etag = client.head(BUCKET, KEY).await.expect("head").etag;
    let res = tokio::time::timeout(
        Duration::from_secs(120),
        read_all(&client, KEY, 0..SIZE as u64, etag),
    )
    .await
    .expect("a server that always trickles kept the read alive");
    let err = res.expect_err("the read must fail");
    assert!(
        matches!(err, StoreError::RetriesExhausted { attempts: 4, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(KEY) && msg.contains("too slow"), "{msg}");
    assert_eq!(proxy.stats().faults.trickle, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_not_a_slow_server() {
    let (_srv, proxy, data) = setup().await;
    let client = client_for(&proxy.endpoint_url(), fast_policy())
        .await
        .with_read_limits(quick_limits());
    let etag = client.head(BUCKET, KEY).await.expect("head").etag;
    let mut stream = client.read(BUCKET, KEY, 0..SIZE as u64, etag);
    let mut got = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.expect("chunk"));
        chunks += 1;
        if chunks <= 2 {
            // The consumer, not the server, is slow: longer than a window.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    assert_eq!(sha256(&got), sha256(&data));
    assert_eq!(client.stats().snapshot().retries, 0);
}
