//! A job's outputs uploaded to a real `chute serve` over HTTP and read back with
//! plain GETs (and by boto3, as users read them), compared byte for byte.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use chute_s3::Classify;
use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};
use chute_upload::{upload_outputs, Compression, OutputConfig, UploadError, UploadOptions};
use common::*;

/// A model directory with nested files, an empty file, an empty directory and
/// a symbolic link; and one output data file.
fn make_base(base: &Path) {
    let model = base.join("model");
    std::fs::create_dir_all(model.join("sub/deeper")).expect("mkdir");
    std::fs::create_dir_all(model.join("empty-dir")).expect("mkdir");
    std::fs::write(model.join("weights.bin"), pattern(3 << 20, 1)).expect("write");
    std::fs::write(model.join("sub/config.json"), br#"{"layers": 4}"#).expect("write");
    std::fs::write(model.join("sub/deeper/tokens.txt"), "a b c\n".repeat(5000)).expect("write");
    std::fs::write(model.join("empty.txt"), b"").expect("write");
    std::os::unix::fs::symlink("sub/config.json", model.join("config-link.json")).expect("symlink");
    let data = base.join("output/data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("metrics.csv"), "step,loss\n1,0.5\n").expect("write");
}

fn small_parts() -> UploadOptions {
    UploadOptions {
        part_size: chute_upload::MIN_PART_SIZE,
        concurrency: 3,
        compress_threads: 2,
        gzip_chunk: 256 << 10,
        ..UploadOptions::default()
    }
}

async fn get(endpoint: &str, key: &str) -> Vec<u8> {
    reader(endpoint)
        .await
        .get_object(BUCKET, key)
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {e}"))
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_and_output_data_round_trip_as_tar_gz() {
    let server = ServedDir::start().await;
    let base = tempfile::tempdir().expect("tempdir");
    make_base(base.path());
    let cfg = OutputConfig {
        s3_output_path: format!("s3://{BUCKET}/jobs/"),
        job_name: "job-1".into(),
        compression: Compression::Gzip,
    };
    let writer = writer(&server.endpoint()).await;
    let summary = upload_outputs(&writer, base.path(), &cfg, &small_parts())
        .await
        .expect("upload outputs");
    assert_eq!(summary.objects.len(), 2, "{summary:?}");
    assert_eq!(summary.archived.symlinks, 1);

    let model = get(&server.endpoint(), "jobs/job-1/output/model.tar.gz").await;
    assert!(model.len() as u64 == summary.objects[0].bytes);
    assert_eq!(
        read_tar_gz(&model),
        read_dir_tree(&base.path().join("model"))
    );
    assert_eq!(
        read_tar_gz(&model).get("config-link.json"),
        Some(&Entry::Link("sub/config.json".into()))
    );
    let data = get(&server.endpoint(), "jobs/job-1/output/output.tar.gz").await;
    assert_eq!(
        read_tar_gz(&data),
        read_dir_tree(&base.path().join("output/data"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_missing_directories_give_valid_empty_archives() {
    let server = ServedDir::start().await;
    let base = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(base.path().join("model")).expect("mkdir");
    // No output/data at all: as empty as an empty directory.
    let cfg = OutputConfig {
        s3_output_path: format!("s3://{BUCKET}"),
        job_name: "empty".into(),
        compression: Compression::Gzip,
    };
    let writer = writer(&server.endpoint()).await;
    upload_outputs(&writer, base.path(), &cfg, &UploadOptions::default())
        .await
        .expect("upload outputs");
    for key in ["empty/output/model.tar.gz", "empty/output/output.tar.gz"] {
        let bytes = get(&server.endpoint(), key).await;
        assert!(!bytes.is_empty(), "{key} is a gzip stream, not nothing");
        assert!(read_tar_gz(&bytes).is_empty(), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_none_uploads_files_as_they_are() {
    let server = ServedDir::start().await;
    let base = tempfile::tempdir().expect("tempdir");
    make_base(base.path());
    let cfg = OutputConfig {
        s3_output_path: format!("s3://{BUCKET}/out"),
        job_name: "plain".into(),
        compression: Compression::None,
    };
    let writer = writer(&server.endpoint()).await;
    let summary = upload_outputs(&writer, base.path(), &cfg, &small_parts())
        .await
        .expect("upload outputs");
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for (rel, content) in [
        ("model/weights.bin", pattern(3 << 20, 1)),
        ("model/sub/config.json", br#"{"layers": 4}"#.to_vec()),
        (
            "model/sub/deeper/tokens.txt",
            "a b c\n".repeat(5000).into_bytes(),
        ),
        ("model/empty.txt", Vec::new()),
        // The link is uploaded as the file it points to.
        ("model/config-link.json", br#"{"layers": 4}"#.to_vec()),
        ("data/metrics.csv", b"step,loss\n1,0.5\n".to_vec()),
    ] {
        expected.insert(format!("out/plain/output/{rel}"), sha256(&content));
    }
    let mut got = BTreeMap::new();
    for key in expected.keys() {
        got.insert(key.clone(), sha256(&get(&server.endpoint(), key).await));
    }
    assert_eq!(got, expected);
    assert_eq!(summary.objects.len(), expected.len());
}

/// A model large enough for several parts, through a proxy that throttles and
/// drops part uploads: retried whole, and the object is still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_survives_503s_and_resets() {
    let server = ServedDir::start().await;
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    for kind in [FaultKind::ServiceUnavailable, FaultKind::Reset] {
        proxy.push(
            FaultRule::new(kind)
                .method("PUT")
                .path_contains("partNumber=2")
                .times(2),
        );
    }
    proxy.push(
        FaultRule::new(FaultKind::Status {
            status: 500,
            code: "InternalError".into(),
        })
        .method("POST")
        .path_contains("uploadId")
        .times(1),
    );
    let base = tempfile::tempdir().expect("tempdir");
    let model = base.path().join("model");
    std::fs::create_dir_all(&model).expect("mkdir");
    // Incompressible, so the archive is about 14 MiB: three 5 MiB parts.
    std::fs::write(model.join("a.bin"), pattern(9 << 20, 7)).expect("write");
    std::fs::write(model.join("b.bin"), pattern(5 << 20, 8)).expect("write");
    let cfg = OutputConfig {
        s3_output_path: format!("s3://{BUCKET}/faulty"),
        job_name: "j".into(),
        compression: Compression::Gzip,
    };
    let writer = writer(&proxy.endpoint_url()).await;
    let summary = upload_outputs(&writer, base.path(), &cfg, &small_parts())
        .await
        .expect("upload through faults");
    assert!(summary.objects[0].parts >= 3, "{summary:?}");
    let faults = proxy.stats();
    assert!(faults.faults.total() >= 5, "faults fired: {faults:?}");
    let bytes = get(&server.endpoint(), "faulty/j/output/model.tar.gz").await;
    assert_eq!(read_tar_gz(&bytes), read_dir_tree(&model));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_names_the_object_and_the_endpoint() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let base = tempfile::tempdir().expect("tempdir");
    make_base(base.path());
    let cfg = OutputConfig {
        s3_output_path: format!("s3://{BUCKET}/x"),
        job_name: "down".into(),
        compression: Compression::Gzip,
    };
    let writer = writer(&format!("http://127.0.0.1:{port}")).await;
    let err = upload_outputs(&writer, base.path(), &cfg, &UploadOptions::default())
        .await
        .expect_err("nothing listens there");
    let msg = err.to_string();
    assert!(matches!(err, UploadError::Store { .. }), "{err:?}");
    assert!(msg.contains("s3://bkt/x/down/output/model.tar.gz"), "{msg}");
    assert!(msg.contains("cannot reach"), "{msg}");
    assert!(!err.is_usage());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_output_path_is_a_usage_error() {
    let server = ServedDir::start().await;
    let writer = writer(&server.endpoint()).await;
    let base = tempfile::tempdir().expect("tempdir");
    for (path, job) in [
        ("file:///tmp/out", "j"),
        ("s3://", "j"),
        ("s3://b/p", "a/b"),
    ] {
        let cfg = OutputConfig {
            s3_output_path: path.into(),
            job_name: job.into(),
            compression: Compression::Gzip,
        };
        let err = upload_outputs(&writer, base.path(), &cfg, &UploadOptions::default())
            .await
            .expect_err("bad destination");
        assert!(err.is_usage(), "{path} {job}: {err}");
    }
}

/// boto3, what users read S3 with, downloads the archive and Python's tarfile
/// unpacks it (multi-member gzip included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_tarfile_read_the_model() {
    let Some(python) = python_with_boto3() else {
        return;
    };
    let server = ServedDir::start().await;
    let base = tempfile::tempdir().expect("tempdir");
    make_base(base.path());
    let cfg = OutputConfig {
        s3_output_path: format!("s3://{BUCKET}/py"),
        job_name: "job".into(),
        compression: Compression::Gzip,
    };
    let writer = writer(&server.endpoint()).await;
    upload_outputs(&writer, base.path(), &cfg, &small_parts())
        .await
        .expect("upload outputs");
    let script = r#"
import boto3, hashlib, io, json, sys, tarfile
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
body = s3.get_object(Bucket=sys.argv[2], Key=sys.argv[3])["Body"].read()
out = {}
with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
    for m in tar.getmembers():
        if m.isdir():
            out[m.name] = "dir"
        elif m.issym():
            out[m.name] = "link:" + m.linkname
        else:
            out[m.name] = hashlib.sha256(tar.extractfile(m).read()).hexdigest()
print(json.dumps(out, sort_keys=True))
"#;
    let output = tokio::process::Command::new(&python)
        .args([
            "-c",
            script,
            &server.endpoint(),
            BUCKET,
            "py/job/output/model.tar.gz",
        ])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .expect("run python");
    assert!(
        output.status.success(),
        "boto3 script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected: BTreeMap<String, String> = read_dir_tree(&base.path().join("model"))
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Entry::Dir => "dir".to_owned(),
                Entry::Link(t) => format!("link:{t}"),
                Entry::File(h) => h,
            };
            (k, v)
        })
        .collect();
    let expected_json = format!(
        "{{{}}}",
        expected
            .iter()
            .map(|(k, v)| format!("\"{k}\": \"{v}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(stdout.trim(), expected_json);
}
