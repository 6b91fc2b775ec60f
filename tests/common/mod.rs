//! Shared pieces of the end-to-end tests: the `chute` binary run as a user runs
//! it, and a `chute serve` child process over the testkit's temporary bucket
//! directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use chute_testkit::harness::{write_atomic, BucketDir};

pub const ACCESS_KEY: &str = "e2e-access-key";
pub const SECRET_KEY: &str = "e2e-secret-key-do-not-print";
pub const BUCKET: &str = "data";

/// The binary under test, with an environment that can only reach loopback:
/// static credentials, an explicit region, no instance metadata, no profile
/// files, and none of the developer's own AWS settings; `chute run` works under a
/// temporary base directory.
pub fn chute() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chute"));
    for var in [
        "AWS_CA_BUNDLE",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "SM_HOSTS",
        "SM_CURRENT_HOST",
        "JOB_COMPLETION_INDEX",
        "CHUTE_SHARD_COUNT",
        "SLURM_NODEID",
        "SLURM_NNODES",
        "CHUTE_LOG",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        // `chute run`'s base directory (model/, output/, ...) stays out of /opt/ml.
        .env(
            "SAGEMAKER_BASE_DIR",
            std::env::temp_dir().join(format!("chute-test-base-{}", std::process::id())),
        )
        .env("AWS_CONFIG_FILE", "/nonexistent/chute-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/chute-test/credentials",
        )
        .stdin(Stdio::null());
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run chute")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `chute serve` as a child process on a free port, stopped (SIGTERM) on drop.
pub struct Serve {
    pub root: tempfile::TempDir,
    pub endpoint: String,
    child: Child,
}

impl Serve {
    pub fn start() -> Serve {
        let BucketDir { root, .. } = BucketDir::new(BUCKET);
        let mut child = chute()
            .args(["serve"])
            .arg(root.path())
            .args([
                "--addr",
                "127.0.0.1:0",
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chute serve");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("serve prints its address");
        let endpoint = line
            .trim()
            .rsplit(" at ")
            .next()
            .filter(|s| s.starts_with("http://"))
            .unwrap_or_else(|| panic!("unexpected serve output: {line:?}"))
            .to_owned();
        Serve {
            root,
            endpoint,
            child,
        }
    }

    pub fn path_of(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    pub fn put(&self, key: &str, data: &[u8]) {
        write_atomic(&self.path_of(key), data);
    }

    /// `chute` with `--endpoint-url` pointing here, for the subcommand `sub`.
    pub fn chute(&self, sub: &str) -> Command {
        let mut cmd = chute();
        cmd.arg(sub).args(["--endpoint-url", &self.endpoint]);
        cmd
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = nix_kill(self.child.id());
        let _ = self.child.wait();
    }
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("kill failed"))
    }
}

/// Writes a file (atomically), making its parents.
#[allow(unused_imports)]
pub use chute_testkit::harness::write_atomic as write_file;

// Not every test file uses both.
#[allow(unused_imports)]
pub use chute_testkit::data::{pattern, sha256};

/// A port nothing listens on.
pub fn dead_port() -> u16 {
    let sock = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    sock.local_addr().expect("addr").port()
}
