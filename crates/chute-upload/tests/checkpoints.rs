//! Checkpoints against a real `chute serve`: restored before the command, new and
//! changed files synced while it "runs", a file written slowly never uploaded
//! half-written, and a last sync at the end.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use chute_upload::{Checkpoints, SyncOptions, UploadOptions};
use common::*;

/// The object's bytes, or `None` while it does not exist.
async fn try_get(endpoint: &str, key: &str) -> Option<Vec<u8>> {
    reader(endpoint)
        .await
        .get_object(BUCKET, key)
        .await
        .ok()
        .map(|b| b.to_vec())
}

/// Waits (generously: the machine may be loaded) until `key` holds `want`.
async fn wait_for(endpoint: &str, key: &str, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if try_get(endpoint, key).await.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never reached the expected content"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write_atomically(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).expect("write tmp");
    std::fs::rename(&tmp, path).expect("rename");
}

fn sync_options() -> SyncOptions {
    SyncOptions {
        interval: Duration::from_millis(500),
        upload: UploadOptions {
            part_size: chute_upload::MIN_PART_SIZE,
            ..UploadOptions::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_sync_and_final_sync() {
    let server = ServedDir::start().await;
    let ep = server.endpoint();
    // What an earlier (interrupted) run left in S3, plus a neighbour prefix
    // that must not be taken for ours.
    server.put("ckpt/step-100/model.pt", &pattern(200_000, 1));
    server.put("ckpt/latest", b"step-100");
    server.put("ckpt-other/x", b"not ours");

    let local = tempfile::tempdir().expect("tempdir");
    let local = local.path().join("checkpoints");
    let (ckpt, restored) =
        Checkpoints::restore(&source_options(&ep), &format!("s3://{BUCKET}/ckpt"), &local)
            .await
            .expect("restore");
    assert_eq!(restored.objects, 2, "{restored:?}");
    assert_eq!(
        std::fs::read(local.join("step-100/model.pt")).expect("restored file"),
        pattern(200_000, 1)
    );
    assert_eq!(
        std::fs::read(local.join("latest")).expect("restored"),
        b"step-100"
    );
    assert!(!local.join("x").exists());

    let sync = ckpt.start_sync(sync_options());

    // A new checkpoint renamed into place, larger than a part.
    std::fs::create_dir_all(local.join("step-200")).expect("mkdir");
    let big = pattern(11 << 20, 2);
    write_atomically(&local.join("step-200/model.pt"), &big);
    wait_for(&ep, "ckpt/step-200/model.pt", &big).await;
    // A file that changes is uploaded again.
    write_atomically(&local.join("latest"), b"step-200");
    wait_for(&ep, "ckpt/latest", b"step-200").await;

    // Temporary and hidden names are never uploaded.
    std::fs::write(local.join("partial.tmp"), b"half").expect("write");
    std::fs::write(local.join(".hidden"), b"x").expect("write");

    // Written just before the end: not yet stable, but the last sync sends it.
    std::fs::write(local.join("final.pt"), b"last words").expect("write");
    let summary = sync.finish().await.expect("final sync");
    assert_eq!(
        try_get(&ep, "ckpt/final.pt").await.as_deref(),
        Some(&b"last words"[..])
    );
    assert_eq!(try_get(&ep, "ckpt/partial.tmp").await, None);
    assert_eq!(try_get(&ep, "ckpt/.hidden").await, None);
    // The restored model was never sent back; nothing was deleted.
    assert_eq!(summary.uploads, 3, "{summary:?}");
    assert_eq!(
        try_get(&ep, "ckpt/step-100/model.pt").await,
        Some(pattern(200_000, 1))
    );
    assert_eq!(
        try_get(&ep, "ckpt-other/x").await.as_deref(),
        Some(&b"not ours"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_prefix_restores_nothing() {
    let server = ServedDir::start().await;
    let local = tempfile::tempdir().expect("tempdir");
    let (ckpt, restored) = Checkpoints::restore(
        &source_options(&server.endpoint()),
        &format!("s3://{BUCKET}/never-written/"),
        local.path(),
    )
    .await
    .expect("restore of nothing");
    assert_eq!(restored.objects, 0);
    let summary = ckpt
        .start_sync(sync_options())
        .finish()
        .await
        .expect("finish");
    assert_eq!(summary.uploads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_a_clear_error() {
    let server = ServedDir::start().await;
    let local = tempfile::tempdir().expect("tempdir");
    let err = Checkpoints::restore(
        &source_options(&server.endpoint()),
        "s3://no-such-bucket/ckpt",
        local.path(),
    )
    .await
    .err()
    .expect("no such bucket");
    let msg = err.to_string();
    assert!(msg.contains("no-such-bucket"), "{msg}");
}

/// A writer that keeps appending (every 20 ms, far more often than the scan
/// interval) is never caught half-way: whenever the object exists, it is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_slowly_is_not_uploaded_half_written() {
    let server = ServedDir::start().await;
    let ep = server.endpoint();
    let local = tempfile::tempdir().expect("tempdir");
    let (ckpt, _) = Checkpoints::restore(
        &source_options(&ep),
        &format!("s3://{BUCKET}/slow"),
        local.path(),
    )
    .await
    .expect("restore");
    let sync = ckpt.start_sync(SyncOptions {
        interval: Duration::from_secs(1),
        ..sync_options()
    });
    let content = pattern(64 * 4096, 9);
    let path = local.path().join("slow.bin");
    let writer = {
        let content = content.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(&path).expect("create");
            for chunk in content.chunks(4096) {
                f.write_all(chunk).expect("write");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    while !writer.is_finished() {
        if let Some(got) = try_get(&ep, "slow/slow.bin").await {
            assert_eq!(got.len(), content.len(), "a partial file was uploaded");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writer.join().expect("writer thread");
    wait_for(&ep, "slow/slow.bin", &content).await;
    sync.finish().await.expect("finish");
}
