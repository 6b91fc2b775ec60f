//! The in-memory store answers as S3 does where chute relies on it, and the
//! fault wrapper fails exactly the requests its rules name; both checked
//! directly and through `chute_s3::Client` (retries, resumption, pinning).

use std::sync::Arc;
use std::time::Duration;

use chute_s3::{Client, ListOptions, ObjectStore, RetryPolicy, StoreError};
use chute_testkit::data::{pattern, sha256};
use chute_testkit::{md5_etag, FaultStore, MemStore, Op, StoreFault, StoreRule};
use futures::StreamExt;

const B: &str = "bkt";

fn quick() -> RetryPolicy {
    chute_testkit::fast_policy()
}

async fn body(store: &dyn ObjectStore, key: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let resp = store.get_range(B, key, range, None).await.expect("get");
    let mut out = Vec::new();
    let mut body = resp.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

/// Follows every page of one listing chain; (keys, common prefixes, pages).
async fn list_chain(
    store: &MemStore,
    prefix: &str,
    delimiter: Option<&str>,
) -> (Vec<String>, Vec<String>, usize) {
    let (mut keys, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut token = None;
    loop {
        let page = store
            .list_page(B, prefix, delimiter, token)
            .await
            .expect("list page");
        pages += 1;
        keys.extend(page.objects.into_iter().map(|o| o.key));
        prefixes.extend(page.common_prefixes);
        token = page.next_token;
        if token.is_none() {
            return (keys, prefixes, pages);
        }
    }
}

fn tree(store: &MemStore) {
    for key in [
        "a", "a/", "a/1", "a/2", "a/b/1", "a/b/2", "ab", "b/x", "b/y", "c", "d/e/f",
    ] {
        store.put(B, key, key.as_bytes().to_vec());
    }
}

#[tokio::test]
async fn listing_pages_and_rolls_up_like_s3() {
    for page_size in [1, 2, 3, 1000] {
        let store = MemStore::new().with_page_size(page_size);
        tree(&store);
        let (keys, prefixes, pages) = list_chain(&store, "", None).await;
        assert_eq!(
            keys,
            ["a", "a/", "a/1", "a/2", "a/b/1", "a/b/2", "ab", "b/x", "b/y", "c", "d/e/f"],
            "page size {page_size}"
        );
        assert!(prefixes.is_empty());
        assert_eq!(pages, 11usize.div_ceil(page_size));

        let (keys, prefixes, _) = list_chain(&store, "", Some("/")).await;
        assert_eq!(keys, ["a", "ab", "c"], "page size {page_size}");
        assert_eq!(prefixes, ["a/", "b/", "d/"], "page size {page_size}");

        // A folder marker under its own prefix is an object, and is not
        // mistaken for the prefix it looks like when a page ends on it.
        let (keys, prefixes, _) = list_chain(&store, "a/", Some("/")).await;
        assert_eq!(keys, ["a/", "a/1", "a/2"], "page size {page_size}");
        assert_eq!(prefixes, ["a/b/"], "page size {page_size}");

        let (keys, _, _) = list_chain(&store, "a", None).await;
        assert_eq!(keys, ["a", "a/", "a/1", "a/2", "a/b/1", "a/b/2", "ab"]);
        let (keys, prefixes, pages) = list_chain(&store, "zzz", Some("/")).await;
        assert!(keys.is_empty() && prefixes.is_empty());
        assert_eq!(pages, 1);
    }
}

#[tokio::test]
async fn the_client_lists_the_same_keys_serially_and_fanned_out() {
    let store = Arc::new(MemStore::new().with_page_size(7));
    let mut want = Vec::new();
    for i in 0..120 {
        let key = format!("p/{:02}/{}/k{i}", i % 9, i % 4);
        store.put(B, &key, pattern(i, i as u64));
        want.push(key);
    }
    store.put(B, "q/outside", b"x".to_vec());
    want.sort();
    let client = Client::new(store.clone(), quick());
    let fanned = client
        .list(B, "p/", &ListOptions::default())
        .await
        .expect("list");
    let serial = client.list_serial(B, "p/").await.expect("list serial");
    let keys: Vec<_> = fanned.iter().map(|m| m.key.clone()).collect();
    assert_eq!(keys, want);
    assert_eq!(fanned, serial);
    assert!(fanned.iter().all(|m| m.etag.is_some()));
    assert!(store.counts().list > 120 / 7);
}

#[tokio::test]
async fn missing_buckets_and_keys_are_named() {
    let store = MemStore::new();
    let err = store.list_page("nope", "", None, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchBucket { ref bucket } if bucket == "nope"));
    store.create_bucket(B);
    let page = store.list_page(B, "", None, None).await.expect("empty");
    assert!(page.objects.is_empty() && page.next_token.is_none());
    let err = store.head(B, "k").await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchKey { ref key, .. } if key == "k"));
    let err = store
        .get_range(B, "k", 0..1, None)
        .await
        .err()
        .expect("no key");
    assert!(matches!(err, StoreError::NoSuchKey { .. }));
    let err = store.list_page(B, "", None, Some("junk".into())).await;
    assert!(err.is_err(), "a token the store never gave is refused");
}

#[tokio::test]
async fn ranged_gets_give_exact_bytes_and_refuse_bad_ranges() {
    let store = MemStore::new().with_chunk_size(1000);
    let data = pattern(10_000, 3);
    let etag = store.put(B, "k", data.clone());
    assert_eq!(etag, md5_etag(&data));
    assert_eq!(store.head(B, "k").await.expect("head").size, 10_000);
    for range in [0..10_000, 0..1, 9_999..10_000, 999..1001, 1234..5678] {
        let got = body(&store, "k", range.clone()).await;
        assert_eq!(got, data[range.start as usize..range.end as usize]);
    }
    let resp = store.get_range(B, "k", 0..2500, None).await.expect("get");
    assert_eq!(resp.content_length, 2500);
    assert_eq!(resp.etag.as_deref(), Some(etag.as_str()));
    let sizes: Vec<usize> = resp.body.map(|c| c.expect("chunk").len()).collect().await;
    assert_eq!(sizes, [1000, 1000, 500], "bodies arrive in chunks");
    for bad in [5..5, 9_000..10_001, 10_000..10_001] {
        let err = store.get_range(B, "k", bad, None).await.err().expect("bad");
        assert!(
            matches!(
                err,
                StoreError::InvalidRange {
                    size: Some(10_000),
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn if_match_refuses_another_version() {
    let store = MemStore::new();
    let old = store.put(B, "k", b"first".to_vec());
    assert!(store.get_range(B, "k", 0..5, Some(&old)).await.is_ok());
    let new = store.put(B, "k", b"second".to_vec());
    assert_ne!(old, new);
    let err = store
        .get_range(B, "k", 0..5, Some(&old))
        .await
        .err()
        .expect("changed");
    assert!(
        matches!(err, StoreError::Changed { ref expected, ref found, .. } if *expected == old && *found == new)
    );
    // The same bytes written again are the same version, as on S3.
    assert_eq!(store.put(B, "k", b"second".to_vec()), new);
    store.put_with_etag(B, "k", b"second".to_vec(), "\"multipart-2\"");
    assert_eq!(store.get(B, "k").expect("k").1, "\"multipart-2\"");
    assert!(store.remove(B, "k"));
    assert!(!store.remove(B, "k"));
    assert!(store.get(B, "k").is_none());
}

#[tokio::test]
async fn requests_are_counted_by_kind_and_gets_recorded() {
    let store = Arc::new(MemStore::new());
    store.put(B, "x", pattern(300_000, 1));
    store.put(B, "y", pattern(10, 2));
    let client = Client::new(store.clone(), quick());
    client.list_serial(B, "").await.expect("list");
    let got = client.get_object(B, "x").await.expect("x");
    assert_eq!(sha256(&got), sha256(&pattern(300_000, 1)));
    client.read_to_bytes(B, "y", 2..7, None).await.expect("y");
    let counts = store.counts();
    assert_eq!((counts.list, counts.head, counts.get), (1, 1, 2));
    assert_eq!(counts.get_bytes, 300_005);
    assert_eq!(store.gets_of("y").len(), 1);
    assert_eq!(store.gets_of("y")[0].range, 2..7);
    assert_eq!(store.gets()[0].key, "x");
    store.reset_counts();
    assert_eq!(store.counts(), Default::default());
    assert!(store.gets().is_empty());
}

fn faulty() -> (Arc<MemStore>, Arc<FaultStore<MemStore>>, Vec<u8>) {
    let mem = Arc::new(MemStore::new());
    let data = pattern(1 << 20, 9);
    mem.put(B, "k", data.clone());
    mem.put(B, "other", b"other".to_vec());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    (mem, faults, data)
}

#[tokio::test]
async fn the_nth_get_fails_and_a_retry_succeeds() {
    let (mem, faults, data) = faulty();
    faults.push(StoreRule::get("k", StoreFault::Retryable).nth(2).times(2));
    let client = Client::new(faults.clone(), quick());
    for _ in 0..2 {
        let got = client
            .read_to_bytes(B, "k", 0..1 << 20, None)
            .await
            .expect("read");
        assert_eq!(sha256(&got), sha256(&data));
    }
    // Reads 1 and 2 each asked once; the second read's two faulted attempts
    // never reached the store.
    assert_eq!(faults.fired(), 2);
    assert_eq!(mem.counts().get, 2);
    assert_eq!(client.stats().snapshot().retries, 2);
    // Other keys were never touched by the rule.
    assert_eq!(
        &client.get_object(B, "other").await.expect("other")[..],
        b"other"
    );
}

#[tokio::test]
async fn a_fatal_error_is_not_retried() {
    let (mem, faults, _) = faulty();
    faults.push(StoreRule::get("k", StoreFault::Fatal));
    let client = Client::new(faults.clone(), quick());
    let err = client.read_to_bytes(B, "k", 0..10, None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AccessDenied { ref key, .. } if key == "k"),
        "{err}"
    );
    assert_eq!(mem.counts().get, 0);
    assert_eq!(faults.fired(), 1);
}

#[tokio::test]
async fn always_failing_gets_exhaust_the_retries() {
    let (_, faults, _) = faulty();
    faults.push(StoreRule::get("k", StoreFault::Retryable).always());
    let client = Client::new(faults.clone(), quick());
    let err = client.read_to_bytes(B, "k", 0..10, None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::RetriesExhausted { attempts, .. } if attempts == quick().max_attempts),
        "{err}"
    );
    assert!(err.to_string().contains("s3://bkt/k"), "{err}");
    assert_eq!(faults.fired(), u64::from(quick().max_attempts));
    faults.clear();
    assert!(client.read_to_bytes(B, "k", 0..10, None).await.is_ok());
}

#[tokio::test]
async fn a_cut_body_resumes_from_the_last_byte() {
    let (mem, faults, data) = faulty();
    faults.push(
        StoreRule::get(
            "k",
            StoreFault::CutBody {
                after_bytes: 100_000,
            },
        )
        .times(3),
    );
    let direct = faults
        .get_range(B, "k", 0..200_000, None)
        .await
        .expect("get");
    let items: Vec<_> = direct.body.collect().await;
    let delivered: usize = items
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .map(|c| c.len())
        .sum();
    assert_eq!(delivered, 100_000);
    assert!(matches!(items.last(), Some(Err(e)) if e.is_retryable()));

    mem.reset_counts();
    let client = Client::new(faults.clone(), quick());
    let got = client
        .read_to_bytes(B, "k", 0..1 << 20, None)
        .await
        .expect("read");
    assert_eq!(sha256(&got), sha256(&data));
    let starts: Vec<u64> = mem.gets_of("k").iter().map(|g| g.range.start).collect();
    assert_eq!(starts, [0, 100_000, 200_000]);

    // A cut at or past the end of a body leaves it whole.
    faults.push(StoreRule::get("k", StoreFault::CutBody { after_bytes: 10 }));
    let whole = faults.get_range(B, "k", 0..10, None).await.expect("get");
    let items: Vec<_> = whole.body.collect().await;
    assert!(items.iter().all(Result::is_ok));
}

#[tokio::test]
async fn a_changed_etag_fails_pinned_reads() {
    let (_, faults, _) = faulty();
    let client = Client::new(faults.clone(), quick());
    let listed = client.list_serial(B, "").await.expect("list");
    let pinned = listed
        .iter()
        .find(|m| m.key == "k")
        .and_then(|m| m.etag.clone());
    faults.push(
        StoreRule::get(
            "k",
            StoreFault::ChangeEtag {
                etag: "\"v2\"".into(),
            },
        )
        .always(),
    );
    let err = client
        .read_to_bytes(B, "k", 0..10, pinned.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Changed { ref found, .. } if found == "\"v2\""),
        "{err}"
    );
    assert!(!err.is_retryable());
    // An unpinned read sees (and pins) the new version.
    let resp = faults
        .get_range(B, "k", 0..10, None)
        .await
        .expect("unpinned");
    assert_eq!(resp.etag.as_deref(), Some("\"v2\""));
    // A HEAD rule reports the new version too; listing rules show in pages.
    faults.push(
        StoreRule::new(StoreFault::ChangeEtag {
            etag: "\"v3\"".into(),
        })
        .op(Op::Head)
        .key("k"),
    );
    assert_eq!(
        client.head(B, "k").await.expect("head").etag.as_deref(),
        Some("\"v3\"")
    );
    faults.push(
        StoreRule::new(StoreFault::ChangeEtag {
            etag: "\"v4\"".into(),
        })
        .op(Op::List)
        .key("k"),
    );
    let relisted = client.list_serial(B, "").await.expect("relist");
    let k = relisted.iter().find(|m| m.key == "k").expect("k");
    assert_eq!(k.etag.as_deref(), Some("\"v4\""));
    assert_ne!(pinned.as_deref(), Some("\"v4\""));
}

#[tokio::test]
async fn delays_hold_a_request_back() {
    let (_, faults, _) = faulty();
    let delay = Duration::from_millis(50);
    faults.push(StoreRule::new(StoreFault::Delay { duration: delay }).op(Op::Head));
    let start = std::time::Instant::now();
    faults.head(B, "k").await.expect("head");
    // A sleep lasts at least as long as asked, however loaded the machine.
    assert!(start.elapsed() >= delay);
    faults.head(B, "k").await.expect("head");
    assert_eq!(faults.fired(), 1, "the rule fired once");
}

#[tokio::test]
async fn list_faults_are_retried_by_the_client() {
    let (_, faults, _) = faulty();
    faults.push(StoreRule::new(StoreFault::Retryable).op(Op::List).times(2));
    let client = Client::new(faults.clone(), quick());
    let listed = client.list_serial(B, "").await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(faults.fired(), 2);
    faults.push(StoreRule::new(StoreFault::Fatal).op(Op::List));
    let err = client.list_serial(B, "").await.unwrap_err();
    assert!(matches!(err, StoreError::AccessDenied { .. }), "{err}");
}

#[tokio::test]
async fn bodies_can_be_corrupted_or_slowed_and_gets_hooked() {
    let mem = Arc::new(MemStore::new().with_chunk_size(1000));
    let data = pattern(5000, 11);
    mem.put(B, "k", data.clone());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let faults = FaultStore::new(mem.clone()).on_get(move |key| {
        log.lock().expect("hook log").push(key.to_owned());
    });
    faults.push(StoreRule::get("k", StoreFault::Corrupt { xor: 0x40 }));
    let damaged = body(&faults, "k", 100..5000).await;
    assert_eq!(damaged.len(), 4900);
    assert_eq!(damaged[0], data[100] ^ 0x40, "the first byte is damaged");
    assert_eq!(damaged[1..], data[101..], "and only that one");
    assert_eq!(
        body(&faults, "k", 0..5000).await,
        data,
        "the rule fired once"
    );

    let pause = Duration::from_millis(20);
    faults.push(StoreRule::get("k", StoreFault::SlowBody { pause }));
    let start = std::time::Instant::now();
    assert_eq!(body(&faults, "k", 0..5000).await, data);
    // Five pieces, each after its pause; a sleep is never shorter than asked.
    assert!(start.elapsed() >= pause * 5);
    assert_eq!(*seen.lock().expect("hook log"), ["k", "k", "k"]);
}

#[tokio::test]
async fn if_match_accepts_the_etag_with_or_without_quotes() {
    let store = MemStore::new();
    let etag = store.put(B, "k", b"abc".to_vec());
    let bare = etag.trim_matches('"');
    assert!(store.get_range(B, "k", 0..3, Some(bare)).await.is_ok());
    assert!(store.get_range(B, "k", 0..3, Some(&etag)).await.is_ok());
    assert!(store.get_range(B, "k", 0..3, Some("abc")).await.is_err());
}
