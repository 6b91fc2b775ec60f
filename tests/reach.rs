//! Reaching other stores through the `chute` binary, against real loopback
//! servers started here: an HTTPS endpoint behind a private CA (`--ca-bundle`,
//! `AWS_CA_BUNDLE`), a public bucket (`--no-sign-request`), requester pays,
//! `--profile` with temporary AWS config files, the bucket's region found
//! without `--region`, and `--role-arn` with session tags through a loopback STS.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use chute_serve::{KeyRing, RequestLog, SeenRequest, ServeConfig, ServeOptions, Server};
use chute_testkit::sts::StsServer;
use chute_testkit::tls::TlsFront;
use common::{chute, pattern, sha256, stderr, stdout, ACCESS_KEY, SECRET_KEY};

const BUCKET: &str = "reach";

/// A `chute serve` in this process over a temporary bucket with three objects.
struct Store {
    root: tempfile::TempDir,
    server: Server,
    log: RequestLog,
}

impl Store {
    async fn start(opts: ServeOptions) -> Store {
        Store::start_with_keys(ACCESS_KEY, SECRET_KEY, opts).await
    }

    async fn start_with_keys(access_key: &str, secret_key: &str, opts: ServeOptions) -> Store {
        let root = tempfile::tempdir().expect("tempdir");
        for (key, data) in objects() {
            common::write_file(&root.path().join(BUCKET).join(key), &data);
        }
        let log = RequestLog::new();
        let server = Server::start_with(
            ServeConfig {
                root: root.path().to_path_buf(),
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                access_key: access_key.into(),
                secret_key: secret_key.into(),
            },
            ServeOptions {
                request_log: Some(log.clone()),
                ..opts
            },
        )
        .await
        .expect("start chute serve");
        Store { root, server, log }
    }

    fn seen(&self) -> Vec<SeenRequest> {
        self.log.snapshot()
    }
}

fn objects() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("train/a.bin", pattern(40_000, 11)),
        ("train/b.bin", pattern(3_000, 12)),
    ]
}

const LISTING: &str = "40000\ta.bin\n3000\tb.bin\n";

/// Runs `cmd` without blocking the runtime that serves it.
async fn output(cmd: Command) -> Output {
    tokio::process::Command::from(cmd)
        .output()
        .await
        .expect("run chute")
}

fn ls(endpoint: &str) -> Command {
    let mut cmd = chute();
    cmd.args([
        "ls",
        &format!("s3://{BUCKET}/train/"),
        "--endpoint-url",
        endpoint,
    ]);
    cmd
}

fn assert_listed(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
    assert_eq!(stdout(out), LISTING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ca_with_the_flag_and_the_variable() {
    let store = Store::start(ServeOptions::default()).await;
    let front = TlsFront::start(store.server.addr())
        .await
        .expect("TLS front");
    let https = front.endpoint_url();
    let ca = front.ca_bundle();

    // Without the CA: exit 3, the endpoint named, the fix suggested.
    let out = output(ls(&https)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&https), "names the endpoint: {err}");
    assert!(
        err.contains("--ca-bundle") && err.contains("AWS_CA_BUNDLE"),
        "{err}"
    );

    // --ca-bundle.
    let mut cmd = ls(&https);
    cmd.arg("--ca-bundle").arg(&ca);
    assert_listed(&output(cmd).await);

    // AWS_CA_BUNDLE, and exact bytes through a download.
    let dest = tempfile::tempdir().expect("tempdir");
    let mut cmd = chute();
    cmd.args(["download", &format!("s3://{BUCKET}/train/")])
        .arg(dest.path())
        .args(["--endpoint-url", &https])
        .env("AWS_CA_BUNDLE", &ca);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (key, data) in objects() {
        let got = std::fs::read(dest.path().join(key.trim_start_matches("train/"))).expect("read");
        assert_eq!(sha256(&got), sha256(&data), "{key}");
    }

    // A bundle (even the system's, with hundreds of entries) leaves plain HTTP alone.
    for bundle in [ca.clone(), "/etc/ssl/certs/ca-certificates.crt".into()] {
        if !bundle.exists() {
            continue;
        }
        let mut cmd = ls(&store.server.endpoint_url());
        cmd.env("AWS_CA_BUNDLE", &bundle);
        assert_listed(&output(cmd).await);
    }

    // A bundle that is not one: exit 2, the file named.
    let junk = store.root.path().join("junk.pem");
    std::fs::write(&junk, "nothing here\n").expect("write");
    let mut cmd = ls(&https);
    cmd.arg("--ca-bundle").arg(&junk);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("junk.pem"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_bucket_without_credentials() {
    let store = Store::start(ServeOptions {
        anonymous_reads: true,
        ..ServeOptions::default()
    })
    .await;
    let mut cmd = ls(&store.server.endpoint_url());
    cmd.arg("--no-sign-request")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    assert_listed(&output(cmd).await);
    let seen = store.seen();
    assert!(
        !seen.is_empty() && seen.iter().all(|r| r.access_key.is_none()),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requester_pays_flag_sends_the_header() {
    let store = Store::start(ServeOptions::default()).await;
    let mut cmd = ls(&store.server.endpoint_url());
    cmd.args(["--request-payer", "requester"]);
    assert_listed(&output(cmd).await);
    let seen = store.seen();
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|r| r.request_payer.as_deref() == Some("requester")),
        "{seen:?}"
    );

    let mut cmd = ls(&store.server.endpoint_url());
    cmd.args(["--request-payer", "everyone"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("requester"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_profile_from_temporary_config_files() {
    let (key, secret) = ("profile-reader-key", "profile-reader-secret");
    let store = Store::start_with_keys(key, secret, ServeOptions::default()).await;
    let files = tempfile::tempdir().expect("tempdir");
    let config = files.path().join("config");
    let credentials = files.path().join("credentials");
    std::fs::write(&config, "[profile reader]\nregion = us-east-1\n").expect("config");
    std::fs::write(
        &credentials,
        format!("[reader]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
    )
    .expect("credentials");
    let with_files = |cmd: &mut Command| {
        cmd.env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
    };
    let mut cmd = ls(&store.server.endpoint_url());
    with_files(&mut cmd);
    cmd.args(["--profile", "reader"]);
    assert_listed(&output(cmd).await);
    assert!(store
        .seen()
        .iter()
        .all(|r| r.access_key.as_deref() == Some(key)));

    // Another profile has no credentials: exit 3, and the profile is named.
    let mut cmd = ls(&store.server.endpoint_url());
    with_files(&mut cmd);
    cmd.args(["--profile", "nobody"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("nobody"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_found_from_the_bucket() {
    let store = Store::start(ServeOptions {
        bucket_region: Some("eu-west-3".into()),
        ..ServeOptions::default()
    })
    .await;
    // No region anywhere: not in flags, variables or profiles.
    let no_region = |cmd: &mut Command| {
        cmd.env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION");
    };
    let mut cmd = ls(&store.server.endpoint_url());
    no_region(&mut cmd);
    assert_listed(&output(cmd).await);
    let seen = store.seen();
    let listings: Vec<&SeenRequest> = seen
        .iter()
        .filter(|r| r.operation == "ListObjectsV2")
        .collect();
    assert!(!listings.is_empty(), "{seen:?}");
    assert!(
        listings
            .iter()
            .all(|r| r.signed_region.as_deref() == Some("eu-west-3")),
        "listed with the bucket's region: {seen:?}"
    );

    // A region given explicitly is used as given; S3 then refuses, naming the right one.
    let mut cmd = ls(&store.server.endpoint_url());
    no_region(&mut cmd);
    cmd.args(["--region", "us-west-2"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("eu-west-3"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assumed_role_with_session_tags() {
    let ring = KeyRing::new();
    // The S3 server's own key pair is never given to chute: only session
    // credentials can read.
    let store = Store::start_with_keys(
        "server-only-key",
        "server-only-secret",
        ServeOptions {
            extra_keys: Some(ring.clone()),
            ..ServeOptions::default()
        },
    )
    .await;
    let issued = ring.clone();
    let sts = StsServer::start(Duration::from_secs(900), move |c| {
        issued.insert(&c.access_key_id, &c.secret_access_key, Some(c.expires));
    })
    .await
    .expect("STS");
    let role = "arn:aws:iam::123456789012:role/tenant-reader";
    let mut cmd = ls(&store.server.endpoint_url());
    cmd.args(["--role-arn", role, "--session-tag", "tenant=alpha"])
        .args(["--session-tag", "team=vision"])
        .args(["--sts-endpoint-url", &sts.endpoint_url()]);
    assert_listed(&output(cmd).await);
    let calls = sts.calls();
    assert!(!calls.is_empty());
    for c in &calls {
        assert_eq!(c.role_arn, role);
        assert_eq!(c.signed_by.as_deref(), Some(ACCESS_KEY));
        assert_eq!(
            c.tags,
            vec![
                ("tenant".into(), "alpha".into()),
                ("team".into(), "vision".into())
            ]
        );
    }
    let keys: Vec<String> = calls
        .iter()
        .map(|c| c.issued.access_key_id.clone())
        .collect();
    let seen = store.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|r| r.access_key.as_ref().is_some_and(|k| keys.contains(k))),
        "{seen:?}"
    );

    // The same from the environment, as `ENTRYPOINT ["chute", "run", "--"]` needs.
    let mut cmd = ls(&store.server.endpoint_url());
    cmd.env("CHUTE_ROLE_ARN", role)
        .env("CHUTE_SESSION_TAGS", "tenant=beta,team=nlp")
        .env("AWS_ENDPOINT_URL_STS", sts.endpoint_url());
    assert_listed(&output(cmd).await);
    let last = sts.calls().pop().expect("a call");
    assert_eq!(
        last.tags,
        vec![
            ("tenant".into(), "beta".into()),
            ("team".into(), "nlp".into())
        ]
    );

    // A malformed tag is a usage error naming it.
    let mut cmd = ls(&store.server.endpoint_url());
    cmd.args(["--role-arn", role, "--session-tag", "tenant"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("KEY=VALUE"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chute_run_roles_and_tags_per_job_and_per_channel() {
    let ring = KeyRing::new();
    let store = Store::start_with_keys(
        "server-only-key",
        "server-only-secret",
        ServeOptions {
            extra_keys: Some(ring.clone()),
            ..ServeOptions::default()
        },
    )
    .await;
    let issued = ring.clone();
    let sts = StsServer::start(Duration::from_secs(900), move |c| {
        issued.insert(&c.access_key_id, &c.secret_access_key, Some(c.expires));
    })
    .await
    .expect("STS");
    let job_role = "arn:aws:iam::123456789012:role/job";
    let own_role = "arn:aws:iam::123456789012:role/alpha-only";
    let base = tempfile::tempdir().expect("tempdir");
    // The job's role and tags from the environment, as in a container.
    let mut cmd = chute();
    cmd.args(["run", "--endpoint-url", &store.server.endpoint_url()])
        .arg("--base-dir")
        .arg(base.path())
        .env("CHUTE_ROLE_ARN", job_role)
        .env("CHUTE_SESSION_TAGS", "project=vision,tenant=shared")
        .env("AWS_ENDPOINT_URL_STS", sts.endpoint_url())
        .args([
            "--channel",
            &format!("alpha=s3://{BUCKET}/train/,role-arn={own_role},session-tag=tenant=alpha"),
        ])
        .args([
            "--channel",
            &format!("beta=s3://{BUCKET}/train/,session-tag=tenant=beta"),
        ])
        .args(["--channel", &format!("shared=s3://{BUCKET}/train/")])
        .args(["--", "true"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for channel in ["alpha", "beta", "shared"] {
        for (key, data) in objects() {
            let path = base
                .path()
                .join("input/data")
                .join(channel)
                .join(key.trim_start_matches("train/"));
            let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(sha256(&got), sha256(&data), "{channel}/{key}");
        }
    }
    let mut asked: Vec<(String, Vec<(String, String)>)> = sts
        .calls()
        .into_iter()
        .map(|c| (c.role_arn, c.tags))
        .collect();
    asked.sort();
    asked.dedup();
    let tags = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    };
    let mut want = vec![
        (
            own_role.to_owned(),
            tags(&[("project", "vision"), ("tenant", "alpha")]),
        ),
        (
            job_role.to_owned(),
            tags(&[("project", "vision"), ("tenant", "beta")]),
        ),
        (
            job_role.to_owned(),
            tags(&[("project", "vision"), ("tenant", "shared")]),
        ),
    ];
    want.sort();
    assert_eq!(asked, want);
    let keys: Vec<String> = sts
        .calls()
        .iter()
        .map(|c| c.issued.access_key_id.clone())
        .collect();
    assert!(store
        .seen()
        .iter()
        .all(|r| r.access_key.as_ref().is_some_and(|k| keys.contains(k))));

    // Tags for a channel with no role anywhere: exit 2, naming the channel.
    let mut cmd = chute();
    cmd.args(["run", "--endpoint-url", &store.server.endpoint_url()])
        .arg("--base-dir")
        .arg(base.path())
        .args([
            "--channel",
            &format!("lone=s3://{BUCKET}/train/,session-tag=tenant=x"),
        ])
        .args(["--", "true"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lone") && stderr(&out).contains("RoleArn"),
        "{}",
        stderr(&out)
    );
}
