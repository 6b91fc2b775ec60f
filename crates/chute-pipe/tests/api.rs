//! The library API as `chute run` uses it: start a pipe, find `NAME_0` ready at
//! once, read through it, stop it with the token; against a real `chute serve`
//! endpoint in this process.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use chute_pipe::{
    fifo_path, start_pipe, CancellationToken, PipeOptions, PipeSource, RecordWrapper,
};
use chute_plan::{plan_from_listing, ObjectInfo};
use chute_s3::{Client, RetryPolicy, S3Config, S3Store};
use chute_serve::{ServeConfig, Server};
use sha2::{Digest, Sha256};

const BUCKET: &str = "bkt";

async fn serve(dir: &std::path::Path) -> (Server, Client) {
    let server = Server::start(ServeConfig {
        root: dir.to_path_buf(),
        addr: "127.0.0.1:0".parse().expect("addr"),
        access_key: "pipe-test-key".into(),
        secret_key: "pipe-test-secret".into(),
    })
    .await
    .expect("start chute serve");
    let store = S3Store::new(&S3Config {
        endpoint_url: Some(server.endpoint_url()),
        region: Some("us-east-1".into()),
        access_key: Some("pipe-test-key".into()),
        secret_key: Some("pipe-test-secret".into()),
        ..S3Config::default()
    })
    .await
    .expect("store");
    (server, Client::new(Arc::new(store), RetryPolicy::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_read_and_stop() {
    let root = tempfile::tempdir().expect("tempdir");
    let objects: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            let data: Vec<u8> = (0..(i * 100_000 + 3)).map(|b| (b * 31 + i) as u8).collect();
            (format!("p/{i}.bin"), data)
        })
        .collect();
    for (key, data) in &objects {
        let path = root.path().join(BUCKET).join(key);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    }
    let (server, client) = serve(root.path()).await;
    let listed = client
        .list(BUCKET, "p/", &Default::default())
        .await
        .expect("list");
    let plan = plan_from_listing(
        "p/",
        listed
            .into_iter()
            .map(|m| ObjectInfo {
                bucket: BUCKET.into(),
                key: m.key,
                size: m.size,
                etag: m.etag,
            })
            .collect(),
    );
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
    server.shutdown().await;
}
