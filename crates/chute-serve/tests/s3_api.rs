//! The server as a real S3 client sees it: the AWS SDK over loopback HTTP, SigV4
//! signed, path-style.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, EncodingType, ObjectIdentifier,
};
use chute_serve::{ServeConfig, ServeError, Server};
use common::{failure, pattern, quoted_md5, Harness, ACCESS_KEY, BUCKET, SECRET_KEY};
use sha2::{Digest, Sha256};

async fn get_bytes(h: &Harness, key: &str) -> (Vec<u8>, Option<String>) {
    let out = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
    let etag = out.e_tag().map(str::to_owned);
    let body = out
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec();
    (body, etag)
}

async fn get_range(h: &Harness, key: &str, range: &str) -> (Vec<u8>, Option<String>, Option<i64>) {
    let out = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .range(range)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key} {range}: {e:?}"));
    let content_range = out.content_range().map(str::to_owned);
    let len = out.content_length();
    let body = out
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec();
    (body, content_range, len)
}

async fn head_etag(h: &Harness, key: &str) -> String {
    h.client
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"))
        .e_tag()
        .unwrap_or_default()
        .to_owned()
}

async fn list_all(h: &Harness, prefix: &str) -> Vec<aws_sdk_s3::types::Object> {
    h.client
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(prefix)
        .send()
        .await
        .expect("list")
        .contents()
        .to_vec()
}

#[tokio::test]
async fn put_then_get_returns_the_same_bytes() {
    let h = Harness::start().await;
    let data = pattern(3 * 1024 * 1024 + 17, 1);
    let put = h
        .client
        .put_object()
        .bucket(BUCKET)
        .key("uploads/blob.bin")
        .content_type("application/x-test")
        .metadata("origin", "unit-test")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.e_tag(), Some(quoted_md5(&data).as_str()));

    let (body, etag) = get_bytes(&h, "uploads/blob.bin").await;
    assert_eq!(Sha256::digest(&body), Sha256::digest(&data));
    assert_eq!(body, data);
    assert_eq!(etag.as_deref(), put.e_tag());

    let head = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("uploads/blob.bin")
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.e_tag(), put.e_tag());
    assert_eq!(head.content_length(), Some(data.len() as i64));
    assert_eq!(head.content_type(), Some("application/x-test"));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("origin"))
            .map(String::as_str),
        Some("unit-test")
    );
    assert_eq!(head.accept_ranges(), Some("bytes"));
    assert!(head.last_modified().is_some());
    h.server.shutdown().await;
}

#[tokio::test]
async fn files_written_directly_are_listed_with_md5_etags_and_served() {
    let h = Harness::start().await;
    let data = pattern(100_000, 2);
    h.write_direct("dir/x.bin", &data);

    let listed = list_all(&h, "dir/").await;
    assert_eq!(listed.len(), 1);
    let obj = &listed[0];
    assert_eq!(obj.key(), Some("dir/x.bin"));
    assert_eq!(obj.size(), Some(data.len() as i64));
    assert_eq!(obj.e_tag(), Some(quoted_md5(&data).as_str()));
    assert!(obj.last_modified().is_some());

    let (body, etag) = get_bytes(&h, "dir/x.bin").await;
    assert_eq!(body, data);
    assert_eq!(etag.as_deref(), obj.e_tag());
    assert_eq!(Some(head_etag(&h, "dir/x.bin").await.as_str()), obj.e_tag());
    let head = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("dir/x.bin")
        .send()
        .await
        .expect("HEAD");
    // Nothing was recorded at upload, so S3's default content type applies.
    assert_eq!(head.content_type(), Some("binary/octet-stream"));

    // The v1 listing gets ETags too.
    let v1 = h
        .client
        .list_objects()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list v1");
    assert_eq!(v1.contents().len(), 1);
    assert_eq!(v1.contents()[0].e_tag(), obj.e_tag());
    h.server.shutdown().await;
}

#[tokio::test]
async fn ranged_gets_behave_like_s3() {
    let h = Harness::start().await;
    let data = pattern(1000, 3);
    h.write_direct("r.bin", &data);

    let (body, cr, len) = get_range(&h, "r.bin", "bytes=100-199").await;
    assert_eq!(body, &data[100..200]);
    assert_eq!(cr.as_deref(), Some("bytes 100-199/1000"));
    assert_eq!(len, Some(100));

    let (body, cr, _) = get_range(&h, "r.bin", "bytes=999-999").await;
    assert_eq!(body, &data[999..]);
    assert_eq!(cr.as_deref(), Some("bytes 999-999/1000"));

    let (body, cr, _) = get_range(&h, "r.bin", "bytes=-10").await;
    assert_eq!(body, &data[990..]);
    assert_eq!(cr.as_deref(), Some("bytes 990-999/1000"));

    let (body, cr, _) = get_range(&h, "r.bin", "bytes=990-").await;
    assert_eq!(body, &data[990..]);
    assert_eq!(cr.as_deref(), Some("bytes 990-999/1000"));

    // A range running past the end is cut to the object, as S3 does.
    let (body, cr, _) = get_range(&h, "r.bin", "bytes=900-5000").await;
    assert_eq!(body, &data[900..]);
    assert_eq!(cr.as_deref(), Some("bytes 900-999/1000"));

    // A suffix longer than the object is the whole object.
    let (body, _, _) = get_range(&h, "r.bin", "bytes=-5000").await;
    assert_eq!(body, data);

    for range in ["bytes=1000-1001", "bytes=5000-"] {
        let err = h
            .client
            .get_object()
            .bucket(BUCKET)
            .key("r.bin")
            .range(range)
            .send()
            .await
            .expect_err("range past the end");
        assert_eq!(failure(&err), (416, "InvalidRange".to_owned()), "{range}");
        let content_range = err
            .raw_response()
            .and_then(|r| r.headers().get("content-range"))
            .map(str::to_owned);
        assert_eq!(content_range.as_deref(), Some("bytes */1000"));
    }
    h.server.shutdown().await;
}

#[tokio::test]
async fn if_match_pins_reads_to_a_version() {
    let h = Harness::start().await;
    let data = pattern(4096, 4);
    h.write_direct("pinned.bin", &data);
    let etag = list_all(&h, "pinned").await[0]
        .e_tag()
        .expect("etag")
        .to_owned();

    // Quoted, as listed, and unquoted, as some clients send it.
    for cond in [etag.clone(), etag.trim_matches('"').to_owned()] {
        let out = h
            .client
            .get_object()
            .bucket(BUCKET)
            .key("pinned.bin")
            .range("bytes=0-9")
            .if_match(cond)
            .send()
            .await
            .expect("matching If-Match");
        let body = out.body.collect().await.expect("body").into_bytes();
        assert_eq!(&body[..], &data[..10]);
    }

    let err = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("pinned.bin")
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
        .expect_err("mismatching If-Match");
    assert_eq!(failure(&err), (412, "PreconditionFailed".to_owned()));

    let err = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("pinned.bin")
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
        .expect_err("mismatching If-Match on HEAD");
    assert_eq!(failure(&err).0, 412);

    // If-None-Match with the current ETag: 304, for GET and HEAD.
    let err = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("pinned.bin")
        .if_none_match(etag.clone())
        .send()
        .await
        .expect_err("matching If-None-Match");
    assert_eq!(failure(&err).0, 304);
    // Like S3, the 304 repeats the validators.
    let validator = err
        .raw_response()
        .and_then(|r| r.headers().get("etag"))
        .map(str::to_owned);
    assert_eq!(validator, Some(etag.clone()));
    let err = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("pinned.bin")
        .if_none_match(etag.clone())
        .send()
        .await
        .expect_err("matching If-None-Match on HEAD");
    assert_eq!(failure(&err).0, 304);

    // A different If-None-Match is a normal read.
    h.client
        .get_object()
        .bucket(BUCKET)
        .key("pinned.bin")
        .if_none_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
        .expect("non-matching If-None-Match");
    h.server.shutdown().await;
}

#[tokio::test]
async fn rewriting_a_file_changes_its_etag() {
    let h = Harness::start().await;
    let first = pattern(2048, 5);
    h.write_direct("v.bin", &first);
    let etag1 = head_etag(&h, "v.bin").await;
    assert_eq!(etag1, quoted_md5(&first));

    // Rewritten in place with the same size; the mtime is pushed forward so the test
    // does not depend on the filesystem clock ticking between the two writes.
    let second = pattern(2048, 6);
    std::fs::write(h.path("v.bin"), &second).expect("rewrite");
    std::fs::File::options()
        .write(true)
        .open(h.path("v.bin"))
        .and_then(|f| f.set_modified(SystemTime::now() + Duration::from_secs(3)))
        .expect("bump mtime");
    let etag2 = head_etag(&h, "v.bin").await;
    assert_eq!(etag2, quoted_md5(&second));
    assert_eq!(list_all(&h, "v.bin").await[0].e_tag(), Some(etag2.as_str()));

    // A read pinned to the old version is refused.
    let err = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("v.bin")
        .if_match(etag1.clone())
        .send()
        .await
        .expect_err("stale pin");
    assert_eq!(failure(&err), (412, "PreconditionFailed".to_owned()));

    // Replaced by rename (a new inode), as many tools write files.
    let third = pattern(999, 7);
    let tmp = h.root.path().join("staging.tmp");
    std::fs::write(&tmp, &third).expect("stage");
    std::fs::rename(&tmp, h.path("v.bin")).expect("rename into place");
    let (body, etag3) = get_bytes(&h, "v.bin").await;
    assert_eq!(body, third);
    assert_eq!(etag3, Some(quoted_md5(&third)));

    // Overwritten through S3.
    let fourth = pattern(5000, 8);
    h.client
        .put_object()
        .bucket(BUCKET)
        .key("v.bin")
        .body(ByteStream::from(fourth.clone()))
        .send()
        .await
        .expect("PUT overwrite");
    assert_eq!(head_etag(&h, "v.bin").await, quoted_md5(&fourth));
    h.server.shutdown().await;
}

#[tokio::test]
async fn awkward_keys_round_trip() {
    let h = Harness::start().await;
    let keys = [
        "with space.txt",
        "plus+sign.bin",
        "percent%20literal%.bin",
        "equals=and&amp.bin",
        "hash#tag.bin",
        "question?mark.bin",
        "unicode/ünïcødé/日本語 ファイル.bin",
        "nested/a/b/c/d/e/deep.bin",
        "emoji/🚀.bin",
        "tilde~and'quote\".bin",
    ];
    for (i, key) in keys.iter().enumerate() {
        h.client
            .put_object()
            .bucket(BUCKET)
            .key(*key)
            .body(ByteStream::from(pattern(100 + i, i as u64)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {key:?}: {e:?}"));
    }
    // And one with a space and a plus written straight into the directory.
    h.write_direct("direct dir/a+b c.bin", b"direct");

    let listed: BTreeSet<String> = list_all(&h, "")
        .await
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    let mut expected: BTreeSet<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    expected.insert("direct dir/a+b c.bin".to_owned());
    assert_eq!(listed, expected);

    for (i, key) in keys.iter().enumerate() {
        let (body, etag) = get_bytes(&h, key).await;
        let want = pattern(100 + i, i as u64);
        assert_eq!(body, want, "{key:?}");
        assert_eq!(etag, Some(quoted_md5(&want)), "{key:?}");
    }
    let (body, _) = get_bytes(&h, "direct dir/a+b c.bin").await;
    assert_eq!(body, b"direct");

    let unicode = list_all(&h, "unicode/ünïcødé/").await;
    assert_eq!(unicode.len(), 1);
    assert_eq!(
        unicode[0].key(),
        Some("unicode/ünïcødé/日本語 ファイル.bin")
    );

    // With encoding-type=url the keys come back percent-encoded (this SDK does not
    // decode them), in a form both plain and form-style decoders read correctly.
    let encoded = h
        .client
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("plus")
        .encoding_type(EncodingType::Url)
        .send()
        .await
        .expect("list with encoding-type=url");
    assert_eq!(encoded.contents()[0].key(), Some("plus%2Bsign.bin"));
    h.server.shutdown().await;
}

#[tokio::test]
async fn list_v2_paginates_with_continuation_tokens() {
    let h = Harness::start().await;
    for i in 0..2500 {
        h.write_direct(&format!("many/k{i:05}"), format!("{i}").as_bytes());
    }
    h.write_direct("other/outside", b"not in the prefix");

    let mut pages = Vec::new();
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = h
            .client
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix("many/")
            .max_keys(1000)
            .set_continuation_token(token.clone())
            .send()
            .await
            .expect("list page");
        pages.push(out.contents().len());
        assert_eq!(out.key_count(), Some(out.contents().len() as i32));
        for obj in out.contents() {
            let key = obj.key().expect("key").to_owned();
            let n: usize = key["many/k".len()..].parse().expect("numbered key");
            assert_eq!(
                obj.e_tag(),
                Some(quoted_md5(format!("{n}").as_bytes()).as_str())
            );
            keys.push(key);
        }
        if out.is_truncated() == Some(true) {
            token = out.next_continuation_token().map(str::to_owned);
            assert!(token.is_some(), "a truncated page must carry a token");
        } else {
            break;
        }
    }
    assert_eq!(pages, vec![1000, 1000, 500]);
    let expected: Vec<String> = (0..2500).map(|i| format!("many/k{i:05}")).collect();
    assert_eq!(keys, expected);

    // Asking for more than S3's page limit still yields pages of 1000.
    let out = h
        .client
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("many/")
        .max_keys(5000)
        .send()
        .await
        .expect("oversized page");
    assert_eq!(out.contents().len(), 1000);
    assert_eq!(out.is_truncated(), Some(true));
    h.server.shutdown().await;
}

#[tokio::test]
async fn delimiter_groups_common_prefixes() {
    let h = Harness::start().await;
    for key in ["d/a/1", "d/a/2", "d/b/1", "d/b/c/2", "d/top", "e/elsewhere"] {
        h.write_direct(key, key.as_bytes());
    }
    let out = h
        .client
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("d/")
        .delimiter("/")
        .send()
        .await
        .expect("list with delimiter");
    let prefixes: Vec<&str> = out
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["d/a/", "d/b/"]);
    let keys: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["d/top"]);
    assert_eq!(
        out.contents()[0].e_tag(),
        Some(quoted_md5(b"d/top").as_str())
    );

    let top = h
        .client
        .list_objects_v2()
        .bucket(BUCKET)
        .delimiter("/")
        .send()
        .await
        .expect("top-level listing");
    let prefixes: Vec<&str> = top
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["d/", "e/"]);
    assert!(top.contents().is_empty());
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_secret_key_is_refused() {
    let h = Harness::start().await;
    h.write_direct("secret.bin", b"classified");
    let intruder = common::client(&h.server.endpoint_url(), ACCESS_KEY, "not-the-secret");
    let err = intruder
        .get_object()
        .bucket(BUCKET)
        .key("secret.bin")
        .send()
        .await
        .expect_err("bad signature");
    assert_eq!(failure(&err), (403, "SignatureDoesNotMatch".to_owned()));

    let stranger = common::client(&h.server.endpoint_url(), "unknown-key", SECRET_KEY);
    let err = stranger
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .expect_err("unknown access key");
    assert_eq!(failure(&err).0, 403);
    h.server.shutdown().await;
}

#[tokio::test]
async fn missing_buckets_and_keys_are_named_as_s3_names_them() {
    let h = Harness::start().await;
    h.write_direct("present.bin", b"here");

    let err = h
        .client
        .list_objects_v2()
        .bucket("no-such-bucket")
        .send()
        .await
        .expect_err("list of a missing bucket");
    assert_eq!(failure(&err), (404, "NoSuchBucket".to_owned()));

    let err = h
        .client
        .get_object()
        .bucket("no-such-bucket")
        .key("present.bin")
        .send()
        .await
        .expect_err("GET from a missing bucket");
    assert_eq!(failure(&err), (404, "NoSuchBucket".to_owned()));

    let err = h
        .client
        .head_bucket()
        .bucket("no-such-bucket")
        .send()
        .await
        .expect_err("HEAD of a missing bucket");
    assert_eq!(failure(&err).0, 404);

    let err = h
        .client
        .put_object()
        .bucket("no-such-bucket")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("PUT into a missing bucket");
    assert_eq!(failure(&err), (404, "NoSuchBucket".to_owned()));
    assert!(!h.root.path().join("no-such-bucket").exists());

    for key in ["absent.bin", "present.bin/below", "a/../present.bin"] {
        let err = h
            .client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect_err("GET of a missing key");
        assert_eq!(failure(&err), (404, "NoSuchKey".to_owned()), "{key}");
    }
    // A directory is not an object.
    std::fs::create_dir(h.path("folder")).expect("mkdir");
    let err = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("folder")
        .send()
        .await
        .expect_err("GET of a directory");
    assert_eq!(failure(&err), (404, "NoSuchKey".to_owned()));

    let err = h
        .client
        .put_object()
        .bucket(BUCKET)
        .key("x/../../escape.bin")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("PUT of a key with '..'");
    assert_eq!(failure(&err).1, "InvalidArgument");
    assert!(!h.root.path().join("escape.bin").exists());
    h.server.shutdown().await;
}

#[tokio::test]
async fn zero_byte_objects() {
    let h = Harness::start().await;
    h.write_direct("empty-direct", b"");
    h.client
        .put_object()
        .bucket(BUCKET)
        .key("empty-put")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .expect("PUT of an empty object");

    for key in ["empty-direct", "empty-put"] {
        let out = h
            .client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect("GET of an empty object");
        assert_eq!(out.content_length(), Some(0));
        assert_eq!(out.e_tag(), Some("\"d41d8cd98f00b204e9800998ecf8427e\""));
        assert!(out.content_range().is_none());
        let body = out.body.collect().await.expect("body").into_bytes();
        assert!(body.is_empty());

        let err = h
            .client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .range("bytes=0-0")
            .send()
            .await
            .expect_err("any range of an empty object");
        assert_eq!(failure(&err), (416, "InvalidRange".to_owned()));
    }
    let listed = list_all(&h, "empty").await;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|o| o.size() == Some(0)));
    h.server.shutdown().await;
}

#[tokio::test]
async fn multipart_upload_etag_matches_later_reads() {
    let h = Harness::start().await;
    let part1 = pattern(5 * 1024 * 1024, 10);
    let part2 = pattern(1234, 11);
    let created = h
        .client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key("mp/object.bin")
        .send()
        .await
        .expect("create upload");
    let upload_id = created.upload_id().expect("upload id").to_owned();

    let mut completed = Vec::new();
    for (n, data) in [(1, &part1), (2, &part2)] {
        let out = h
            .client
            .upload_part()
            .bucket(BUCKET)
            .key("mp/object.bin")
            .upload_id(&upload_id)
            .part_number(n)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("upload part");
        completed.push(
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build(),
        );
    }
    let parts = h
        .client
        .list_parts()
        .bucket(BUCKET)
        .key("mp/object.bin")
        .upload_id(&upload_id)
        .send()
        .await
        .expect("list parts");
    assert_eq!(parts.parts().len(), 2);

    let done = h
        .client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key("mp/object.bin")
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .expect("complete upload");
    let whole: Vec<u8> = [part1.as_slice(), part2.as_slice()].concat();
    assert_eq!(done.e_tag(), Some(quoted_md5(&whole).as_str()));
    assert_eq!(head_etag(&h, "mp/object.bin").await, quoted_md5(&whole));
    let (body, _) = get_bytes(&h, "mp/object.bin").await;
    assert_eq!(body, whole);

    // An aborted upload leaves nothing behind.
    let aborted = h
        .client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key("mp/aborted.bin")
        .send()
        .await
        .expect("create second upload");
    h.client
        .abort_multipart_upload()
        .bucket(BUCKET)
        .key("mp/aborted.bin")
        .upload_id(aborted.upload_id().expect("upload id"))
        .send()
        .await
        .expect("abort upload");
    let keys: Vec<String> = list_all(&h, "mp/")
        .await
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    assert_eq!(keys, ["mp/object.bin"]);
    h.server.shutdown().await;
}

#[tokio::test]
async fn copy_and_delete() {
    let h = Harness::start().await;
    let data = pattern(70_000, 12);
    h.write_direct("src.bin", &data);
    let copied = h
        .client
        .copy_object()
        .bucket(BUCKET)
        .key("copies/dst.bin")
        .copy_source(format!("{BUCKET}/src.bin"))
        .send()
        .await
        .expect("copy");
    assert_eq!(
        copied.copy_object_result().and_then(|r| r.e_tag()),
        Some(quoted_md5(&data).as_str())
    );
    let (body, _) = get_bytes(&h, "copies/dst.bin").await;
    assert_eq!(body, data);

    let err = h
        .client
        .copy_object()
        .bucket(BUCKET)
        .key("copies/never.bin")
        .copy_source(format!("{BUCKET}/src.bin"))
        .copy_source_if_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
        .expect_err("copy with a failing source condition");
    assert_eq!(failure(&err), (412, "PreconditionFailed".to_owned()));

    h.client
        .delete_object()
        .bucket(BUCKET)
        .key("src.bin")
        .send()
        .await
        .expect("delete");
    let err = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("src.bin")
        .send()
        .await
        .expect_err("HEAD after delete");
    assert_eq!(failure(&err).0, 404);
    // Deleting what is not there succeeds, as on S3.
    h.client
        .delete_object()
        .bucket(BUCKET)
        .key("src.bin")
        .send()
        .await
        .expect("delete again");

    for key in ["batch/1", "batch/2", "batch/3"] {
        h.write_direct(key, key.as_bytes());
    }
    let objects = ["batch/1", "batch/2", "batch/missing", "a/../batch/3"]
        .iter()
        .map(|k| {
            ObjectIdentifier::builder()
                .key(*k)
                .build()
                .expect("identifier")
        })
        .collect();
    let out = h
        .client
        .delete_objects()
        .bucket(BUCKET)
        .delete(
            Delete::builder()
                .set_objects(Some(objects))
                .build()
                .expect("delete request"),
        )
        .send()
        .await
        .expect("delete objects");
    assert_eq!(out.deleted().len(), 4);
    assert!(out.errors().is_empty());
    let left: Vec<String> = list_all(&h, "batch/")
        .await
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    assert_eq!(left, ["batch/3"]);
    h.server.shutdown().await;
}

#[tokio::test]
async fn buckets_can_be_created_and_listed() {
    let h = Harness::start().await;
    h.client
        .create_bucket()
        .bucket("second-bucket")
        .send()
        .await
        .expect("create bucket");
    assert!(h.root.path().join("second-bucket").is_dir());
    h.client
        .head_bucket()
        .bucket("second-bucket")
        .send()
        .await
        .expect("head bucket");
    let err = h
        .client
        .create_bucket()
        .bucket("second-bucket")
        .send()
        .await
        .expect_err("create twice");
    assert_eq!(failure(&err), (409, "BucketAlreadyOwnedByYou".to_owned()));

    let names: Vec<String> = h
        .client
        .list_buckets()
        .send()
        .await
        .expect("list buckets")
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names, ["second-bucket", BUCKET]);
    h.server.shutdown().await;
}

#[tokio::test]
async fn start_reports_a_bad_root_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = |root: std::path::PathBuf| ServeConfig {
        root,
        addr: "127.0.0.1:0".parse().expect("literal address"),
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
    };

    let missing = dir.path().join("does-not-exist");
    let err = Server::start(cfg(missing.clone()))
        .await
        .expect_err("missing root");
    assert!(matches!(err, ServeError::RootUnavailable { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").expect("write");
    let err = Server::start(cfg(file.clone()))
        .await
        .expect_err("file root");
    assert!(
        matches!(err, ServeError::RootNotADirectory { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );

    let mut no_secret = cfg(dir.path().to_path_buf());
    no_secret.secret_key.clear();
    assert!(matches!(
        Server::start(no_secret).await,
        Err(ServeError::MissingCredentials)
    ));
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let h = Harness::start().await;
    let addr = h.server.addr();
    assert_ne!(addr.port(), 0);
    assert_eq!(
        h.server.endpoint_url(),
        format!("http://127.0.0.1:{}", addr.port())
    );
    h.client
        .list_buckets()
        .send()
        .await
        .expect("served before shutdown");
    h.server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
