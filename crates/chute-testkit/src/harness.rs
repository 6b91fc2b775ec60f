//! The one set-up the suites share: a temporary directory served as an S3
//! endpoint by a real `chute serve` in this process, clients for it, a retry
//! policy with short waits, and the channel plan of a prefix.
//!
//! Clients are configured explicitly (loopback endpoint, static credentials,
//! an explicit region), never from the environment, so a test can reach
//! nothing but the server it started.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chute_plan::{plan_from_listing, ObjectInfo, Plan};
use chute_s3::{Client, LocalStore, RetryPolicy, S3Config, S3Store};
use chute_serve::{ServeConfig, Server};
use tempfile::TempDir;

/// The bucket [`ServedDir::start`] makes.
pub const BUCKET: &str = "bkt";
pub const ACCESS_KEY: &str = "chute-test-key";
pub const SECRET_KEY: &str = "chute-test-secret-0123456789";
pub const REGION: &str = "us-east-1";

/// Retries with short waits, so fault tests finish quickly; enough attempts to
/// outlast the few faults a test injects, and a stall timeout that a loaded
/// machine does not trip by accident.
pub fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        max_connect_attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        stall_timeout: Duration::from_millis(800),
    }
}

/// An S3 configuration for a loopback `endpoint` with the test credentials.
pub fn s3_config(endpoint: &str) -> S3Config {
    S3Config {
        endpoint_url: Some(endpoint.to_owned()),
        region: Some(REGION.into()),
        access_key: Some(ACCESS_KEY.into()),
        secret_key: Some(SECRET_KEY.into()),
        connect_timeout: Some(Duration::from_secs(2)),
        read_timeout: Some(Duration::from_secs(20)),
        ..S3Config::default()
    }
}

/// A client of `endpoint` (often a fault proxy's) with the test credentials.
pub async fn client_for(endpoint: &str, policy: RetryPolicy) -> Client {
    client_with(&s3_config(endpoint), policy).await
}

/// A client with another configuration, e.g. a wrong secret.
pub async fn client_with(config: &S3Config, policy: RetryPolicy) -> Client {
    let store = S3Store::new(config)
        .await
        .expect("S3 store for a loopback endpoint");
    Client::new(Arc::new(store), policy)
}

/// A client of the local directory `root` (local mode, as `file://` sources
/// read): keys are paths under it, the bucket is ignored.
pub fn local_client(root: &Path, policy: RetryPolicy) -> Client {
    let store = LocalStore::new(root).expect("local store over an existing directory");
    Client::new(Arc::new(store), policy)
}

/// Writes `data` at `path`, making its parents, through a temporary file and a
/// rename, so a server reading the directory never sees half of it.
pub fn write_atomic(path: &Path, data: &[u8]) {
    let parent = path.parent().expect("a file path has a parent");
    std::fs::create_dir_all(parent).expect("create parent directories");
    let name = path.file_name().expect("a file path has a name");
    let tmp = parent.join(format!(".{}.chute-test-tmp", name.to_string_lossy()));
    std::fs::write(&tmp, data).expect("write temporary file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// A temporary ROOT holding one bucket directory, the layout `chute serve`
/// serves (each sub-directory of ROOT is a bucket).
pub struct BucketDir {
    pub root: TempDir,
    pub bucket: String,
}

impl BucketDir {
    pub fn new(bucket: &str) -> BucketDir {
        let root = tempfile::tempdir().expect("temporary ROOT");
        std::fs::create_dir_all(root.path().join(bucket)).expect("bucket directory");
        BucketDir {
            root,
            bucket: bucket.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The file behind `key`, for writing or changing objects behind the
    /// server's back.
    pub fn path_of(&self, key: &str) -> PathBuf {
        self.root.path().join(&self.bucket).join(key)
    }

    /// Writes an object (atomically).
    pub fn put(&self, key: &str, data: &[u8]) {
        write_atomic(&self.path_of(key), data);
    }
}

/// A real `chute serve` in this process, on a free loopback port, over a
/// [`BucketDir`]. Dropping it stops the server.
pub struct ServedDir {
    pub dir: BucketDir,
    pub server: Server,
}

impl ServedDir {
    /// Serves a fresh directory with the empty bucket [`BUCKET`].
    pub async fn start() -> ServedDir {
        ServedDir::start_bucket(BUCKET).await
    }

    /// Serves a fresh directory with the empty bucket `bucket`.
    pub async fn start_bucket(bucket: &str) -> ServedDir {
        let dir = BucketDir::new(bucket);
        let server = Server::start(ServeConfig {
            root: dir.root().to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        })
        .await
        .expect("start chute serve");
        ServedDir { dir, server }
    }

    pub fn endpoint(&self) -> String {
        self.server.endpoint_url()
    }

    /// The server's address, for a fault proxy in front of it.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn bucket(&self) -> &str {
        &self.dir.bucket
    }

    pub fn path_of(&self, key: &str) -> PathBuf {
        self.dir.path_of(key)
    }

    /// Writes an object (atomically) into the served bucket.
    pub fn put(&self, key: &str, data: &[u8]) {
        self.dir.put(key, data);
    }

    /// A client of this server.
    pub async fn client(&self, policy: RetryPolicy) -> Client {
        client_for(&self.endpoint(), policy).await
    }
}

/// The channel plan of `bucket`/`prefix` as listed by `client` (no sharding,
/// no manifest): what a mode is handed to serve.
pub async fn plan_of(client: &Client, bucket: &str, prefix: &str) -> Plan {
    let listed = client
        .list(bucket, prefix, &Default::default())
        .await
        .expect("list the prefix");
    let infos = listed
        .into_iter()
        .map(|m| ObjectInfo {
            bucket: bucket.to_owned(),
            key: m.key,
            size: m.size,
            etag: m.etag,
        })
        .collect();
    plan_from_listing(prefix, infos)
}
