//! Uploads find the bucket's region too: with no region configured anywhere,
//! PUT and every multipart step are signed for the region the bucket states,
//! as reads are. Its own test binary because it clears the region variables
//! of the whole process.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chute_s3::{Client, S3Config, S3Store, Writer};
use chute_serve::{RequestLog, ServeConfig, ServeOptions, Server};
use chute_testkit::data::{pattern, sha256};
use chute_testkit::harness::{fast_policy, s3_config, BucketDir, ACCESS_KEY, SECRET_KEY};

const BUCKET: &str = "elsewhere";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_signed_for_the_buckets_region() {
    // The only test in this binary: nothing else reads the environment meanwhile.
    std::env::remove_var("AWS_REGION");
    std::env::remove_var("AWS_DEFAULT_REGION");
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/chute-test-config");

    let dir = BucketDir::new(BUCKET);
    let log = RequestLog::new();
    let server = Server::start_with(
        ServeConfig {
            root: dir.root().to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        },
        ServeOptions {
            bucket_region: Some("eu-west-3".into()),
            request_log: Some(log.clone()),
            ..ServeOptions::default()
        },
    )
    .await
    .expect("start chute serve");
    let cfg = S3Config {
        region: None,
        ..s3_config(&server.endpoint_url())
    };
    let writer = Writer::s3(&cfg, fast_policy()).await.expect("writer");

    let small = pattern(10_000, 1);
    writer
        .put_object(BUCKET, "out/small.bin", Bytes::from(small.clone()), None)
        .await
        .expect("put");
    let big = pattern(300_000, 2);
    let id = writer
        .create_multipart_upload(BUCKET, "out/big.bin")
        .await
        .expect("create");
    let part = writer
        .upload_part(
            BUCKET,
            "out/big.bin",
            &id,
            1,
            Bytes::from(big.clone()),
            None,
        )
        .await
        .expect("part");
    writer
        .complete_multipart_upload(BUCKET, "out/big.bin", &id, &[part])
        .await
        .expect("complete");

    let seen = log.snapshot();
    for op in [
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
    ] {
        let of_op: Vec<_> = seen.iter().filter(|r| r.operation == op).collect();
        assert!(!of_op.is_empty(), "{op} in {seen:?}");
        assert!(
            of_op
                .iter()
                .all(|r| r.signed_region.as_deref() == Some("eu-west-3")),
            "{op} signed for the bucket's region: {seen:?}"
        );
    }

    let reader = Client::new(
        Arc::new(S3Store::new(&cfg).await.expect("store")),
        fast_policy(),
    );
    for (key, data) in [("out/small.bin", &small), ("out/big.bin", &big)] {
        let got = reader.get_object(BUCKET, key).await.expect("read back");
        assert_eq!(sha256(&got), sha256(data), "bytes of {key}");
    }
}
