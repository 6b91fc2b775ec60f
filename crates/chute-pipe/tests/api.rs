//! The library API as `chute run` uses it: start a pipe, find `NAME_0` ready at
//! once, read through it, stop it with the token, learn of a failed epoch while
//! the FIFO is held open; against a real `chute serve` endpoint in this process
//! (behind the fault-injecting proxy where a failure is needed).

use std::io::Read;
use std::time::Duration;

use chute_pipe::{
    fifo_path, start_pipe, CancellationToken, OnFailure, PipeOptions, PipeSource, RecordWrapper,
};
use chute_plan::{Classify, Plan};
use chute_s3::Client;
use chute_testkit::data::pattern;
use chute_testkit::harness::{fast_policy, plan_of, ServedDir, BUCKET};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_read_and_stop() {
    let srv = ServedDir::start().await;
    let objects: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("p/{i}.bin"), pattern(i * 100_000 + 3, i as u64)))
        .collect();
    for (key, data) in &objects {
        srv.put(key, data);
    }
    let client = srv.client(fast_policy()).await;
    let plan = plan_of(&client, BUCKET, "p/").await;
    let fifos = tempfile::tempdir().expect("fifo dir");
    let dir = fifos.path().join("data");
    let stop = CancellationToken::new();
    let handle = start_pipe(
        client,
        PipeSource::Objects(plan),
        None,
        &dir,
        "train",
        PipeOptions {
            record_wrapper: RecordWrapper::None,
            ..PipeOptions::default()
        },
        stop.clone(),
    )
    .await
    .expect("start");
    let first = handle.first_fifo().expect("NAME_0").to_path_buf();
    assert_eq!(first, fifo_path(&dir, "train", 0));
    assert!(
        first.exists(),
        "NAME_0 exists as soon as start_pipe returns"
    );

    let want = Sha256::digest(
        objects
            .iter()
            .flat_map(|(_, d)| d.clone())
            .collect::<Vec<u8>>(),
    );
    let reader_dir = dir.clone();
    let got = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        std::fs::File::open(fifo_path(&reader_dir, "train", 0))
            .and_then(|mut f| f.read_to_end(&mut out))
            .expect("read NAME_0");
        Sha256::digest(out)
    })
    .await
    .expect("reader");
    assert_eq!(got, want);

    // No --epochs: NAME_1 waits for a reader until the token stops the pipe.
    let next = fifo_path(&dir, "train", 1);
    for _ in 0..500 {
        if next.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(next.exists());
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), handle.wait())
        .await
        .expect("stops promptly")
        .expect("stops cleanly");
    assert!(summary.stopped);
    assert_eq!(summary.epochs.len(), 1);
    assert!(summary.epochs[0].complete);
    assert!(!next.exists(), "FIFOs are removed on stop");
    srv.server.shutdown().await;
}

/// Writes `objects` under `p/` in the served bucket, and lists them back as a
/// plan through `client`.
async fn put_and_plan(srv: &ServedDir, client: &Client, objects: &[(&str, Vec<u8>)]) -> Plan {
    for (name, data) in objects {
        srv.put(&format!("p/{name}"), data);
    }
    plan_of(client, BUCKET, "p/").await
}

/// What a reader thread saw: bytes as they came, then EOF.
enum Seen {
    Bytes(usize),
    Eof,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_epoch_is_reported_at_once_and_held_open_until_cancelled() {
    use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};
    let srv = ServedDir::start().await;
    let proxy = FaultProxy::start(srv.addr()).await.expect("proxy");
    let client = chute_testkit::harness::client_for(&proxy.endpoint_url(), fast_policy()).await;
    let a = pattern(100_000, 1);
    let b = pattern(8_000_000, 2);
    let plan = put_and_plan(&srv, &client, &[("a.bin", a.clone()), ("b.bin", b)]).await;
    // b is larger than a 4 MiB budget lets the pipe withhold, so it streams; its
    // first GET is cut after 300 kB and the one that would resume it is refused.
    proxy.push(
        FaultRule::new(FaultKind::CutBody {
            after_body_bytes: 300_000,
        })
        .method("GET")
        .path_contains("p/b.bin")
        .times(1),
    );
    proxy.push(
        FaultRule::new(FaultKind::Status {
            status: 403,
            code: "AccessDenied".into(),
        })
        .method("GET")
        .path_contains("p/b.bin")
        .times(1_000),
    );
    let fifos = tempfile::tempdir().expect("fifo dir");
    let stop = CancellationToken::new();
    let handle = start_pipe(
        client,
        PipeSource::Objects(plan),
        None,
        fifos.path(),
        "train",
        PipeOptions {
            epochs: Some(2),
            max_memory: 4 << 20,
            concurrency: 1,
            ..PipeOptions::default()
        },
        stop.clone(),
    )
    .await
    .expect("start");
    assert_eq!(PipeOptions::default().on_failure, OnFailure::Hold);

    let (seen_tx, seen) = std::sync::mpsc::channel();
    let path = fifo_path(fifos.path(), "train", 0);
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(path).expect("open NAME_0");
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match f.read(&mut buf).expect("read") {
                0 => {
                    let _ = seen_tx.send(Seen::Eof);
                    return;
                }
                n => {
                    let _ = seen_tx.send(Seen::Bytes(n));
                }
            }
        }
    });

    let failure = tokio::time::timeout(Duration::from_secs(60), handle.failed())
        .await
        .expect("the failure is reported while the pipe runs")
        .expect("a failure, not a clean end");
    assert_eq!(failure.channel, "train");
    assert_eq!(failure.error.object(), Some("s3://bkt/p/b.bin"));
    assert!(failure.error.store_error().is_some(), "{}", failure.error);
    assert!(!failure.error.is_usage());
    assert!(
        failure.to_string().contains("s3://bkt/p/b.bin"),
        "{failure}"
    );

    // Held open: the reader has a and part of b, and no EOF however long it waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got = 0;
    while let Ok(s) = seen.try_recv() {
        match s {
            Seen::Bytes(n) => got += n,
            Seen::Eof => panic!("the reader saw EOF before the pipe was cancelled"),
        }
    }
    assert!(got > a.len(), "the streamed object had begun: {got} bytes");
    assert!(got < a.len() + 8_000_000);
    assert!(fifo_path(fifos.path(), "train", 0).exists());

    stop.cancel();
    let eof = tokio::task::spawn_blocking(move || loop {
        match seen.recv_timeout(Duration::from_secs(30)) {
            Ok(Seen::Eof) => return true,
            Ok(Seen::Bytes(_)) => {}
            Err(_) => return false,
        }
    })
    .await
    .expect("join");
    assert!(eof, "cancelling closes the FIFO");
    reader.join().expect("reader");
    let e = tokio::time::timeout(Duration::from_secs(10), handle.wait())
        .await
        .expect("ends promptly")
        .expect_err("the failure");
    assert_eq!(e.object(), Some("s3://bkt/p/b.bin"));
    assert!(e.to_string().contains("epoch 0 failed"), "{e}");
    assert!(!fifo_path(fifos.path(), "train", 0).exists());
    assert!(!fifo_path(fifos.path(), "train", 1).exists());
    srv.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_that_does_not_fail_reports_none() {
    let srv = ServedDir::start().await;
    let client = srv.client(fast_policy()).await;
    let plan = put_and_plan(&srv, &client, &[("x", vec![7u8; 1000])]).await;
    let fifos = tempfile::tempdir().expect("fifo dir");
    let handle = start_pipe(
        client,
        PipeSource::Objects(plan),
        None,
        fifos.path(),
        "c",
        PipeOptions {
            epochs: Some(1),
            ..PipeOptions::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect("start");
    let failed = handle.failed();
    let path = fifo_path(fifos.path(), "c", 0);
    let got = tokio::task::spawn_blocking(move || std::fs::read(path).expect("read"))
        .await
        .expect("reader");
    assert_eq!(got, vec![7u8; 1000]);
    let none = tokio::time::timeout(Duration::from_secs(10), failed)
        .await
        .expect("resolves once the pipe ends");
    assert!(none.is_none());
    handle.wait().await.expect("a clean end");
    srv.server.shutdown().await;
}
