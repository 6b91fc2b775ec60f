//! Shared set-up for FastFile's own tests: a real `chute serve` endpoint in
//! this process (optionally behind the fault proxy), a plan listed from it, and
//! a real FUSE mount on a fresh temporary directory, unmounted on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chute_fastfile::{Mount, MountOptions};
use chute_plan::{plan_from_listing, ObjectInfo, Plan};
use chute_s3::{Client, RetryPolicy, S3Config, S3Store};
use chute_serve::{ServeConfig, Server};

pub const BUCKET: &str = "bkt";
pub const PREFIX: &str = "data/";
pub const ACCESS_KEY: &str = "fastfile-test-key";
pub const SECRET_KEY: &str = "fastfile-test-secret-0123456789";

/// Whether this machine can mount FUSE file systems: missing, the tests skip
/// loudly on a developer's machine and fail under CI.
pub fn fuse_available() -> bool {
    chute_testkit::need::fuse("chute-fastfile tests")
}

pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub server: Option<Server>,
}

impl Env {
    pub fn start() -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(BUCKET).join(PREFIX)).expect("bucket");
        let server = rt
            .block_on(Server::start(ServeConfig {
                root: dir.path().to_path_buf(),
                addr: "127.0.0.1:0".parse().expect("addr"),
                access_key: ACCESS_KEY.into(),
                secret_key: SECRET_KEY.into(),
            }))
            .expect("start chute serve");
        Env {
            rt,
            dir,
            server: Some(server),
        }
    }

    pub fn endpoint(&self) -> String {
        self.server.as_ref().expect("server").endpoint_url()
    }

    pub fn path_of(&self, rel: &str) -> PathBuf {
        self.dir.path().join(BUCKET).join(PREFIX).join(rel)
    }

    /// Writes an object (atomically) under the prefix.
    pub fn put(&self, rel: &str, data: &[u8]) {
        let path = self.path_of(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let tmp = path.with_extension("tmp-write");
        std::fs::write(&tmp, data).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    }

    pub fn client(&self, endpoint: &str, policy: RetryPolicy) -> Client {
        let store = self
            .rt
            .block_on(S3Store::new(&S3Config {
                endpoint_url: Some(endpoint.to_owned()),
                region: Some("us-east-1".into()),
                access_key: Some(ACCESS_KEY.into()),
                secret_key: Some(SECRET_KEY.into()),
                connect_timeout: Some(Duration::from_secs(2)),
                read_timeout: Some(Duration::from_secs(5)),
                ..S3Config::default()
            }))
            .expect("s3 store");
        Client::new(Arc::new(store), policy)
    }

    pub fn plan(&self, client: &Client) -> Plan {
        let listed = self
            .rt
            .block_on(client.list(BUCKET, PREFIX, &Default::default()))
            .expect("list");
        let infos = listed
            .into_iter()
            .map(|m| ObjectInfo {
                bucket: BUCKET.into(),
                key: m.key,
                size: m.size,
                etag: m.etag,
            })
            .collect();
        plan_from_listing(PREFIX, infos)
    }

    /// Lists the prefix and mounts it.
    pub fn mount_with(&self, client: Client, opts: MountOptions) -> Mounted {
        let plan = self.plan(&client);
        let mp = tempfile::tempdir().expect("mountpoint");
        let mount = chute_fastfile::mount(client, plan, mp.path(), opts, self.rt.handle().clone())
            .expect("mount");
        Mounted {
            mount: Some(mount),
            dir: mp,
        }
    }

    pub fn mount(&self) -> Mounted {
        let client = self.client(&self.endpoint(), fast_policy());
        self.mount_with(client, test_options())
    }
}

pub fn test_options() -> MountOptions {
    MountOptions {
        max_memory: 128 << 20,
        stats_interval: None,
        ..MountOptions::default()
    }
}

/// A live mount; unmounted on drop, lazily if it must, so a failing test
/// never leaves a mount behind.
pub struct Mounted {
    pub mount: Option<Mount>,
    pub dir: tempfile::TempDir,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn unmount(mut self) -> chute_fastfile::MountSummary {
        self.mount
            .take()
            .expect("mounted")
            .unmount()
            .expect("unmount")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            drop(m);
        }
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A policy with short waits so fault tests finish quickly.
pub fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        max_connect_attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        stall_timeout: Duration::from_millis(800),
    }
}

// Not every test file uses both.
#[allow(unused_imports)]
pub use chute_testkit::data::{pattern, sha256};
