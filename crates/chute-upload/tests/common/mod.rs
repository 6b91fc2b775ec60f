//! Shared set-up for the upload tests: a real `chute serve` endpoint in this
//! process over a temporary directory, writers and readers for it, and a reader
//! of tar.gz objects.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chute_channel::SourceOptions;
use chute_s3::{Client, RetryPolicy, S3Config, S3Store, Writer};
use chute_serve::{ServeConfig, Server};

pub use chute_testkit::data::{pattern, sha256};

pub const BUCKET: &str = "bkt";
pub const ACCESS_KEY: &str = "chute-test-key";
pub const SECRET_KEY: &str = "chute-test-secret-0123456789";

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub server: Server,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(BUCKET)).expect("bucket dir");
        let server = Server::start(ServeConfig {
            root: dir.path().to_path_buf(),
            addr: "127.0.0.1:0".parse().expect("addr"),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        })
        .await
        .expect("start chute serve");
        TestServer { dir, server }
    }

    pub fn endpoint(&self) -> String {
        self.server.endpoint_url()
    }

    /// Writes an object straight into the served directory.
    pub fn put(&self, key: &str, data: &[u8]) {
        let path = self.dir.path().join(BUCKET).join(key);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, data).expect("write");
    }
}

/// Short waits so fault tests finish quickly, enough attempts to outlast them.
pub fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        max_connect_attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        stall_timeout: Duration::from_secs(5),
    }
}

pub fn s3_config(endpoint: &str) -> S3Config {
    S3Config {
        endpoint_url: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        access_key: Some(ACCESS_KEY.into()),
        secret_key: Some(SECRET_KEY.into()),
        connect_timeout: Some(Duration::from_secs(2)),
        read_timeout: Some(Duration::from_secs(20)),
        ..S3Config::default()
    }
}

pub fn source_options(endpoint: &str) -> SourceOptions {
    SourceOptions {
        s3: s3_config(endpoint),
        retry: fast_policy(),
        ..SourceOptions::default()
    }
}

pub async fn writer(endpoint: &str) -> Writer {
    Writer::s3(&s3_config(endpoint), fast_policy())
        .await
        .expect("writer")
}

pub async fn reader(endpoint: &str) -> Client {
    let store = S3Store::new(&s3_config(endpoint)).await.expect("store");
    Client::new(Arc::new(store), fast_policy())
}

/// What a tar entry holds, in a form tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(String),
    Dir,
    Link(String),
}

/// Reads a (possibly multi-member) tar.gz into path → entry.
pub fn read_tar_gz(bytes: &[u8]) -> BTreeMap<String, Entry> {
    let gz = flate2::read::MultiGzDecoder::new(bytes);
    let mut archive = tar::Archive::new(gz);
    let mut out = BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        let kind = entry.header().entry_type();
        let value = if kind.is_dir() {
            Entry::Dir
        } else if kind.is_symlink() {
            Entry::Link(
                entry
                    .link_name()
                    .expect("link name")
                    .expect("link target")
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("entry data");
            Entry::File(sha256(&data))
        };
        out.insert(path, value);
    }
    out
}

/// What a local directory holds, in the same form (links not followed).
pub fn read_dir_tree(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Entry>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = format!("{rel}{name}");
            let meta = std::fs::symlink_metadata(entry.path()).expect("meta");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(entry.path()).expect("readlink");
                out.insert(child, Entry::Link(target.to_string_lossy().into_owned()));
            } else if meta.is_dir() {
                out.insert(child.clone(), Entry::Dir);
                walk(&entry.path(), &format!("{child}/"), out);
            } else {
                let data = std::fs::read(entry.path()).expect("read");
                out.insert(child, Entry::File(sha256(&data)));
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, "", &mut out);
    }
    out
}

/// A python3 with boto3, or `None` (a failure under `CI=true`, where the test
/// environment must provide it).
pub fn python_with_boto3() -> Option<String> {
    for candidate in ["/work/venv-smt/bin/python3", "python3"] {
        let ok = std::process::Command::new(candidate)
            .args(["-c", "import boto3"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(candidate.to_owned());
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("python3 with boto3 is required under CI=true (pip install boto3)");
    }
    eprintln!("SKIPPED: no python3 with boto3 (pip install boto3); this fails under CI=true");
    None
}
