//! Reaching other stores, against real loopback servers: an HTTPS endpoint
//! behind a private CA, a bucket open to anonymous reads, a requester-pays
//! bucket, and reading with an assumed role's session credentials (a test STS
//! on loopback issues short-lived ones; the S3 server accepts only those).
//! Settings that come from the environment (AWS_CA_BUNDLE, profiles, region
//! detection) are tested through the binary, in `tests/reach.rs`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chute_s3::{AssumeRole, Client, S3Config, S3Store, StoreError};
use chute_serve::{KeyRing, RequestLog, ServeConfig, ServeOptions, Server};
use chute_testkit::data::{pattern, sha256};
use chute_testkit::harness::{fast_policy, s3_config, BucketDir, ACCESS_KEY, SECRET_KEY};
use chute_testkit::sts::StsServer;
use chute_testkit::tls::TlsFront;

const BUCKET: &str = "reach";

async fn serve(dir: &BucketDir, opts: ServeOptions) -> Server {
    Server::start_with(
        ServeConfig {
            root: dir.root().to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        },
        opts,
    )
    .await
    .expect("start chute serve")
}

async fn client(cfg: &S3Config) -> Result<Client, StoreError> {
    Ok(Client::new(
        Arc::new(S3Store::new(cfg).await?),
        fast_policy(),
    ))
}

/// Lists the bucket and reads every object, checking its bytes.
async fn read_back(client: &Client, expected: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
    let listed = client.list_serial(BUCKET, "").await?;
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    let want: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, want);
    for (key, data) in expected {
        let got = client.get_object(BUCKET, key).await?;
        assert_eq!(sha256(&got), sha256(data), "bytes of {key}");
    }
    Ok(())
}

fn dataset(dir: &BucketDir) -> Vec<(&'static str, Vec<u8>)> {
    let objects = vec![
        ("a/one.bin", pattern(70_000, 1)),
        ("a/two.bin", pattern(1_000, 2)),
        ("b.bin", pattern(5, 3)),
    ];
    for (key, data) in &objects {
        dir.put(key, data);
    }
    objects
}

#[tokio::test]
async fn private_ca_endpoint_needs_the_bundle() {
    let dir = BucketDir::new(BUCKET);
    let objects = dataset(&dir);
    let server = serve(&dir, ServeOptions::default()).await;
    let front = TlsFront::start(server.addr()).await.expect("TLS front");
    let https = s3_config(&front.endpoint_url());

    // Without the CA: a clear error naming the endpoint and the fix, not retried
    // as if the server were down.
    let err = read_back(&client(&https).await.expect("store"), &objects)
        .await
        .expect_err("an untrusted certificate must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&front.endpoint_url())
            && msg.contains("--ca-bundle")
            && msg.contains("AWS_CA_BUNDLE"),
        "{msg}"
    );
    assert!(!err.is_retryable(), "{err:?}");

    // With it: exact bytes over HTTPS.
    let with_ca = S3Config {
        ca_bundle: Some(front.ca_bundle()),
        ..https.clone()
    };
    read_back(&client(&with_ca).await.expect("store"), &objects)
        .await
        .expect("read through the private CA");

    // The same bundle does not get in the way of a plain http:// endpoint.
    let plain = S3Config {
        ca_bundle: Some(front.ca_bundle()),
        ..s3_config(&server.endpoint_url())
    };
    read_back(&client(&plain).await.expect("store"), &objects)
        .await
        .expect("plain HTTP with a CA bundle configured");
}

#[tokio::test]
async fn unusable_bundles_are_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing.pem");
    let err = client(&S3Config {
        ca_bundle: Some(missing.clone()),
        ..s3_config("https://127.0.0.1:9")
    })
    .await
    .err()
    .expect("a missing bundle is an error");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(
        matches!(err, StoreError::Config(_)),
        "a usage error: {err:?}"
    );

    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    let err = client(&S3Config {
        ca_bundle: Some(junk.clone()),
        ..s3_config("https://127.0.0.1:9")
    })
    .await
    .err()
    .expect("a bundle without certificates is an error");
    let msg = err.to_string();
    assert!(
        msg.contains("junk.pem") && msg.contains("no usable PEM certificate"),
        "{msg}"
    );
}

#[tokio::test]
async fn anonymous_reads_of_a_public_bucket() {
    let dir = BucketDir::new(BUCKET);
    let objects = dataset(&dir);
    let log = RequestLog::new();
    let server = serve(
        &dir,
        ServeOptions {
            anonymous_reads: true,
            request_log: Some(log.clone()),
            ..ServeOptions::default()
        },
    )
    .await;
    let anonymous = S3Config {
        no_sign_request: true,
        // Keys given as well must not be used: --no-sign-request wins.
        ..s3_config(&server.endpoint_url())
    };
    read_back(&client(&anonymous).await.expect("store"), &objects)
        .await
        .expect("anonymous reads");
    let seen = log.snapshot();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| r.access_key.is_none()),
        "every request unsigned: {seen:?}"
    );

    // A bucket that does not allow them refuses, and says access was denied.
    let private = serve(&dir, ServeOptions::default()).await;
    let err = read_back(
        &client(&S3Config {
            no_sign_request: true,
            ..s3_config(&private.endpoint_url())
        })
        .await
        .expect("store"),
        &objects,
    )
    .await
    .expect_err("anonymous reads of a private bucket fail");
    assert!(
        matches!(err.root(), StoreError::AccessDenied { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn requester_pays_header_on_list_head_and_get() {
    let dir = BucketDir::new(BUCKET);
    let objects = dataset(&dir);
    let log = RequestLog::new();
    let server = serve(
        &dir,
        ServeOptions {
            request_log: Some(log.clone()),
            ..ServeOptions::default()
        },
    )
    .await;
    let cfg = S3Config {
        request_payer: true,
        ..s3_config(&server.endpoint_url())
    };
    read_back(&client(&cfg).await.expect("store"), &objects)
        .await
        .expect("reads");
    let seen = log.snapshot();
    let ops: HashSet<&str> = seen.iter().map(|r| r.operation.as_str()).collect();
    for op in ["ListObjectsV2", "HeadObject", "GetObject"] {
        assert!(ops.contains(op), "{op} in {ops:?}");
    }
    for r in &seen {
        assert_eq!(r.request_payer.as_deref(), Some("requester"), "{r:?}");
    }

    // And none without the option.
    let before = log.snapshot().len();
    read_back(
        &client(&s3_config(&server.endpoint_url()))
            .await
            .expect("store"),
        &objects,
    )
    .await
    .expect("reads");
    assert!(log.snapshot()[before..]
        .iter()
        .all(|r| r.request_payer.is_none()));
}

#[tokio::test]
async fn session_tag_credentials_for_every_request_and_refreshed() {
    let dir = BucketDir::new(BUCKET);
    let objects = dataset(&dir);
    let ring = KeyRing::new();
    let log = RequestLog::new();
    // The S3 server knows no long-lived key chute could use: its own key pair
    // is one the client is never given.
    let server = Server::start_with(
        ServeConfig {
            root: dir.root().to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_key: "server-only-key".into(),
            secret_key: "server-only-secret".into(),
        },
        ServeOptions {
            extra_keys: Some(ring.clone()),
            request_log: Some(log.clone()),
            ..ServeOptions::default()
        },
    )
    .await
    .expect("start chute serve");
    // Credentials live 20 s; the SDK renews them 10-15 s before they expire,
    // and the S3 server refuses expired ones (400 ExpiredToken).
    let issued_ring = ring.clone();
    let sts = StsServer::start(Duration::from_secs(20), move |c| {
        issued_ring.insert(&c.access_key_id, &c.secret_access_key, Some(c.expires));
    })
    .await
    .expect("STS server");

    let role_arn = "arn:aws:iam::123456789012:role/chute-reader";
    let tags = vec![
        ("tenant".to_owned(), "alpha".to_owned()),
        ("project".to_owned(), "vision".to_owned()),
    ];
    let cfg = S3Config {
        assume_role: Some(AssumeRole {
            role_arn: role_arn.into(),
            session_name: Some("chute-test".into()),
            session_tags: tags.clone(),
            sts_endpoint_url: Some(sts.endpoint_url()),
            duration: None,
        }),
        ..s3_config(&server.endpoint_url())
    };
    let client = client(&cfg).await.expect("store");

    // Read until a second set of credentials has been issued and used; no
    // timing is asserted, only that it happens within a generous bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        read_back(&client, &objects)
            .await
            .expect("reads with session credentials");
        let issued: HashSet<String> = sts
            .calls()
            .iter()
            .map(|c| c.issued.access_key_id.clone())
            .collect();
        let used: HashSet<String> = log
            .snapshot()
            .iter()
            .filter_map(|r| r.access_key.clone())
            .collect();
        if issued.len() >= 2 && used.len() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "credentials were not refreshed: issued {issued:?}, used {used:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let calls = sts.calls();
    for call in &calls {
        assert_eq!(call.role_arn, role_arn);
        assert_eq!(call.session_name, "chute-test");
        assert_eq!(call.tags, tags, "session tags sent on every AssumeRole");
        assert_eq!(
            call.signed_by.as_deref(),
            Some(ACCESS_KEY),
            "AssumeRole signed with the base credentials"
        );
    }
    let seen = log.snapshot();
    for r in &seen {
        let call = calls
            .iter()
            .find(|c| Some(&c.issued.access_key_id) == r.access_key.as_ref())
            .unwrap_or_else(|| panic!("request not signed with session credentials: {r:?}"));
        assert_eq!(
            r.security_token.as_deref(),
            Some(call.issued.session_token.as_str()),
            "the session token goes with its key: {r:?}"
        );
    }
}
