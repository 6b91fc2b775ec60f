//! Shared set-up for FastFile's own tests: the testkit's real `chute serve` in
//! this process (optionally behind the fault proxy), a plan listed from it, and
//! a real FUSE mount on a fresh temporary directory, unmounted on drop.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chute_fastfile::{Mount, MountOptions};
use chute_plan::Plan;
use chute_s3::{Client, RetryPolicy};
use chute_testkit::harness::{client_for, plan_of, ServedDir, BUCKET};

pub use chute_testkit::harness::fast_policy;

pub const PREFIX: &str = "data/";

/// Whether this machine can mount FUSE file systems: missing, the tests skip
/// loudly on a developer's machine and fail under CI.
pub fn fuse_available() -> bool {
    chute_testkit::need::fuse("chute-fastfile tests")
}

/// A runtime of its own (the FUSE session runs outside it) and the served
/// directory; objects live under [`PREFIX`] of the testkit's bucket.
pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub served: ServedDir,
}

impl Env {
    pub fn start() -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let served = rt.block_on(ServedDir::start());
        Env { rt, served }
    }

    pub fn endpoint(&self) -> String {
        self.served.endpoint()
    }

    /// The server's address, for a fault proxy in front of it.
    pub fn addr(&self) -> SocketAddr {
        self.served.addr()
    }

    pub fn path_of(&self, rel: &str) -> PathBuf {
        self.served.path_of(&format!("{PREFIX}{rel}"))
    }

    /// Writes an object (atomically) under the prefix.
    pub fn put(&self, rel: &str, data: &[u8]) {
        self.served.put(&format!("{PREFIX}{rel}"), data);
    }

    pub fn client(&self, endpoint: &str, policy: RetryPolicy) -> Client {
        self.rt.block_on(client_for(endpoint, policy))
    }

    pub fn plan(&self, client: &Client) -> Plan {
        self.rt.block_on(plan_of(client, BUCKET, PREFIX))
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

// Not every test file uses both.
#[allow(unused_imports)]
pub use chute_testkit::data::{pattern, sha256};
