//! Shared set-up for the upload tests: the testkit's real `chute serve` over a
//! temporary directory, writers and readers for it, and a reader of tar.gz
//! objects.

#![allow(dead_code, unused_imports)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use chute_channel::SourceOptions;
use chute_s3::{Client, Writer};
use chute_testkit::harness::s3_config;

pub use chute_testkit::data::{pattern, sha256};
pub use chute_testkit::harness::{fast_policy, ServedDir, ACCESS_KEY, BUCKET, SECRET_KEY};

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
    chute_testkit::harness::client_for(endpoint, fast_policy()).await
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

/// A Python 3 with boto3, or `None` (a failure under `CI=true`, where the test
/// environment must provide it).
pub fn python_with_boto3() -> Option<PathBuf> {
    chute_testkit::need::python("chute-upload boto3 test", &["boto3"])
}
