//! The server serves regular files and directories below ROOT and nothing else: a
//! symlink, wherever it sits, is neither listed, read, written through nor deleted
//! through; and a key the directory cannot hold is refused with an S3 error that
//! names it. Checked as a client sees it, over HTTP with the AWS SDK.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use common::{failure, Harness, BUCKET};
use tempfile::TempDir;

/// A directory outside ROOT with one file a symlink could expose.
fn outside() -> TempDir {
    let dir = tempfile::tempdir().expect("outside dir");
    std::fs::write(dir.path().join("secret.txt"), b"outside ROOT").expect("secret");
    dir
}

/// The keys a listing returns, with or without a delimiter (keys and prefixes).
async fn listed(h: &Harness, prefix: &str, delimiter: Option<&str>) -> BTreeSet<String> {
    let out = h
        .client
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(prefix)
        .set_delimiter(delimiter.map(str::to_owned))
        .send()
        .await
        .unwrap_or_else(|e| panic!("list {prefix:?} {delimiter:?}: {e:?}"));
    let keys = out.contents().iter().filter_map(|o| o.key());
    let prefixes = out.common_prefixes().iter().filter_map(|p| p.prefix());
    keys.chain(prefixes).map(str::to_owned).collect()
}

async fn get_failure(h: &Harness, bucket: &str, key: &str) -> (u16, String) {
    let err = h
        .client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect_err(&format!("GET {bucket}/{key} must fail"));
    failure(&err)
}

async fn head_status(h: &Harness, bucket: &str, key: &str) -> u16 {
    let err = h
        .client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect_err(&format!("HEAD {bucket}/{key} must fail"));
    failure(&err).0
}

async fn put(h: &Harness, key: &str, body: &'static [u8]) -> Result<(), (u16, String, String)> {
    h.client
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from_static(body))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            let (status, code) = failure(&e);
            let message = e.message().unwrap_or_default().to_owned();
            (status, code, message)
        })
}

fn is_refusal(status: u16) -> bool {
    status == 403 || status == 404
}

#[tokio::test]
async fn symlinks_inside_a_bucket_are_not_read() {
    let h = Harness::start().await;
    let out = outside();
    h.write_direct("real.bin", b"real");
    std::fs::create_dir_all(h.path("d")).expect("mkdir");
    symlink(out.path().join("secret.txt"), h.path("file-link")).expect("symlink");
    symlink(out.path(), h.path("d/dir-link")).expect("symlink");

    for key in ["file-link", "d/dir-link/secret.txt"] {
        let (status, code) = get_failure(&h, BUCKET, key).await;
        assert!(is_refusal(status), "GET {key}: {status} {code}");
        let status = head_status(&h, BUCKET, key).await;
        assert!(is_refusal(status), "HEAD {key}: {status}");
    }
    // Regular files beside them are still served.
    let body = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("real.bin")
        .send()
        .await
        .expect("GET real.bin")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert_eq!(&body[..], b"real");
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_symlinked_bucket_is_no_bucket() {
    let h = Harness::start().await;
    let out = outside();
    symlink(out.path(), h.root.path().join("linked-bucket")).expect("symlink");

    let (status, code) = get_failure(&h, "linked-bucket", "secret.txt").await;
    assert_eq!((status, code.as_str()), (404, "NoSuchBucket"));
    let err = h
        .client
        .list_objects_v2()
        .bucket("linked-bucket")
        .send()
        .await
        .expect_err("list of a symlinked bucket");
    assert_eq!(failure(&err), (404, "NoSuchBucket".to_owned()));
    let err = h
        .client
        .put_object()
        .bucket("linked-bucket")
        .key("planted.txt")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("PUT into a symlinked bucket");
    assert_eq!(failure(&err), (404, "NoSuchBucket".to_owned()));
    assert!(!out.path().join("planted.txt").exists());
    h.server.shutdown().await;
}

#[tokio::test]
async fn listings_leave_symlinks_out_and_do_not_fail() {
    let h = Harness::start().await;
    let out = outside();
    h.write_direct("data/a.bin", b"a");
    h.write_direct("data/sub/b.bin", b"b");
    symlink(out.path().join("secret.txt"), h.path("data/file-link")).expect("symlink");
    symlink(out.path(), h.path("data/dir-link")).expect("symlink");
    symlink(out.path().join("missing"), h.path("dangling")).expect("symlink");
    // A short name beside a longer prefix: a listing that treats the symlink as a
    // file slices its name at the prefix length.
    symlink(out.path(), h.path("z")).expect("symlink");

    let all = listed(&h, "", None).await;
    assert_eq!(
        all,
        BTreeSet::from(["data/a.bin".into(), "data/sub/b.bin".into()])
    );
    let top = listed(&h, "", Some("/")).await;
    assert_eq!(top, BTreeSet::from(["data/".into()]));
    let data = listed(&h, "data/", Some("/")).await;
    assert_eq!(
        data,
        BTreeSet::from(["data/a.bin".into(), "data/sub/".into()])
    );
    let long_prefix = listed(&h, "data/sub/", Some("/")).await;
    assert_eq!(long_prefix, BTreeSet::from(["data/sub/b.bin".into()]));

    let v1 = h
        .client
        .list_objects()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list v1");
    let v1: BTreeSet<String> = v1
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    assert_eq!(v1, all);
    h.server.shutdown().await;
}

#[tokio::test]
async fn writes_and_deletes_never_pass_through_a_symlink() {
    let h = Harness::start().await;
    let out = outside();
    symlink(out.path(), h.path("dir-link")).expect("symlink");
    symlink(out.path().join("secret.txt"), h.path("file-link")).expect("symlink");

    let (status, code, _) = put(&h, "dir-link/planted.txt", b"planted")
        .await
        .expect_err("PUT through a symlinked directory");
    assert_eq!(status, 403, "{code}");
    assert!(!out.path().join("planted.txt").exists());

    let (status, code, _) = put(&h, "file-link", b"overwritten")
        .await
        .expect_err("PUT onto a symlink");
    assert_eq!(status, 403, "{code}");
    assert_eq!(
        std::fs::read(out.path().join("secret.txt")).expect("secret"),
        b"outside ROOT"
    );
    assert!(std::fs::symlink_metadata(h.path("file-link"))
        .expect("link kept")
        .file_type()
        .is_symlink());

    // A multipart upload is refused before any part is taken.
    let err = h
        .client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key("dir-link/multi.bin")
        .send()
        .await
        .expect_err("multipart upload through a symlink");
    assert_eq!(failure(&err).0, 403);

    // A copy whose destination passes through a symlink.
    put(&h, "src.bin", b"source").await.expect("PUT src.bin");
    let err = h
        .client
        .copy_object()
        .bucket(BUCKET)
        .key("dir-link/copied.bin")
        .copy_source(format!("{BUCKET}/src.bin"))
        .send()
        .await
        .expect_err("copy through a symlink");
    assert_eq!(failure(&err).0, 403);
    assert!(!out.path().join("copied.bin").exists());

    // Deletes answer as for a missing key and leave the outside alone.
    h.client
        .delete_object()
        .bucket(BUCKET)
        .key("dir-link/secret.txt")
        .send()
        .await
        .expect("DELETE through a symlink answers like a missing key");
    assert!(out.path().join("secret.txt").exists());
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_segment_longer_than_a_file_name_is_refused_by_name() {
    let h = Harness::start().await;
    let key = format!("dir/{}.bin", "x".repeat(300));
    let (status, code, message) = put(&h, &key, b"data")
        .await
        .expect_err("PUT with a 300-byte segment");
    assert_eq!(
        (status, code.as_str()),
        (400, "KeyTooLongError"),
        "{message}"
    );
    assert!(
        message.contains("xxxxxxxx"),
        "the message names the key: {message}"
    );

    let (status, code) = get_failure(&h, BUCKET, &key).await;
    assert_eq!((status, code.as_str()), (404, "NoSuchKey"));
    h.server.shutdown().await;
}

#[tokio::test]
async fn keys_with_empty_or_dot_segments_are_refused_by_name() {
    let h = Harness::start().await;
    for key in ["a//b.bin", "a/./b.bin", "a/../b.bin"] {
        let (status, code, message) = put(&h, key, b"data")
            .await
            .expect_err("PUT of a non-canonical key");
        assert_eq!(
            (status, code.as_str()),
            (400, "InvalidArgument"),
            "{key}: {message}"
        );
        assert!(
            message.contains(key),
            "{key}: the message names the key: {message}"
        );
    }
    assert!(!h.path("b.bin").exists());
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_key_below_an_object_is_refused_by_name() {
    let h = Harness::start().await;
    put(&h, "obj", b"file").await.expect("PUT obj");
    let (status, code, message) = put(&h, "obj/below.bin", b"data")
        .await
        .expect_err("PUT below an object");
    assert_eq!(
        (status, code.as_str()),
        (400, "InvalidArgument"),
        "{message}"
    );
    assert!(message.contains("obj/below.bin"), "{message}");
    h.server.shutdown().await;
}
