//! Secrets never reach chute's output: `chute serve --log trace` answering signed
//! and presigned requests prints no Authorization value, signature, credential or
//! secret key; an endpoint given with `user:password@` and a query string is shown
//! without either in errors and logs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A signature no real request would carry, easy to spot if echoed.
const PLANTED_SIGNATURE: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";

/// Sends one raw HTTP request and returns the response's status line.
fn raw_request(endpoint: &str, request: &str) -> String {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect to chute serve");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Every run of 64 hex digits in `text`: what a SigV4 signature looks like.
fn hex64_runs(text: &str) -> Vec<String> {
    let mut runs = Vec::new();
    let mut current = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            current.push(c);
        } else {
            if current.len() >= 64 {
                runs.push(current.clone());
            }
            current.clear();
        }
    }
    runs
}

#[test]
fn serve_at_trace_level_logs_no_signature_or_secret() {
    let root = tempfile::tempdir().expect("ROOT");
    write_file(&root.path().join(BUCKET).join("k.bin"), b"payload");
    let log = root.path().join("serve.log");
    let mut child = chute()
        .arg("serve")
        .arg(root.path())
        .args(["--addr", "127.0.0.1:0", "--access-key", ACCESS_KEY])
        .args(["--secret-key", SECRET_KEY, "--log", "trace"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn chute serve");
    let mut first = String::new();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
        first.push(char::from(byte[0]));
    }
    let endpoint = first.rsplit(" at ").next().unwrap_or_default().to_owned();
    assert!(endpoint.starts_with("http://"), "serve printed {first:?}");

    // A correctly signed request (chute's own client), and one signed with the
    // wrong secret, which makes the server compute the signature it expected.
    let out = run(chute().args([
        "ls",
        &format!("s3://{BUCKET}/"),
        "--endpoint-url",
        &endpoint,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(chute()
        .args([
            "ls",
            &format!("s3://{BUCKET}/"),
            "--endpoint-url",
            &endpoint,
        ])
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret-key"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // A header-signed and a presigned request carrying a planted signature.
    let date = "20260101T000000Z";
    let credential = format!("{ACCESS_KEY}/20260101/us-east-1/s3/aws4_request");
    let status = raw_request(
        &endpoint,
        &format!(
            "GET /{BUCKET}/k.bin HTTP/1.1\r\nHost: {host}\r\nx-amz-date: {date}\r\n\
             x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential={credential}, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={PLANTED_SIGNATURE}\r\n\
             Connection: close\r\n\r\n",
            host = endpoint.trim_start_matches("http://"),
        ),
    );
    assert!(status.contains("403"), "header-signed request: {status}");
    let status = raw_request(
        &endpoint,
        &format!(
            "GET /{BUCKET}/k.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={cred}\
             &X-Amz-Date={date}&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature={PLANTED_SIGNATURE} HTTP/1.1\r\nHost: {host}\r\n\
             Connection: close\r\n\r\n",
            cred = credential.replace('/', "%2F"),
            host = endpoint.trim_start_matches("http://"),
        ),
    );
    assert!(status.contains("403"), "presigned request: {status}");

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("serve log");
    assert!(!text.is_empty(), "trace logging printed nothing at all");
    for secret in [
        SECRET_KEY,
        PLANTED_SIGNATURE,
        "Signature=",
        "AWS4-HMAC-SHA256 Credential",
    ] {
        assert!(!text.contains(secret), "the log shows {secret:?}:\n{text}");
    }
    assert!(
        !text.to_ascii_lowercase().contains("authorization:")
            && !text.to_ascii_lowercase().contains("\"authorization\""),
        "the log shows an Authorization header:\n{text}"
    );
    let runs = hex64_runs(&text);
    assert!(
        runs.is_empty(),
        "signature-like values in the log: {runs:?}"
    );
}

#[test]
fn endpoint_credentials_and_query_never_appear_in_errors_or_logs() {
    let port = dead_port();
    let endpoint =
        format!("http://someuser:hunter2-endpoint-pw@127.0.0.1:{port}/?X-Amz-Signature=abc123sig&token=tok456");
    for sub in ["ls", "download"] {
        let dest = tempfile::tempdir().expect("dest");
        let mut cmd = chute();
        cmd.args([sub, &format!("s3://{BUCKET}/p/")]);
        if sub == "download" {
            cmd.arg(dest.path().join("d"));
        }
        let out = run(cmd.args(["--endpoint-url", &endpoint, "--log", "debug"]));
        assert_eq!(out.status.code(), Some(3), "{sub}: {}", stderr(&out));
        let text = format!("{}{}", stdout(&out), stderr(&out));
        for secret in ["hunter2-endpoint-pw", "abc123sig", "tok456", "someuser:"] {
            assert!(!text.contains(secret), "{sub} shows {secret:?}:\n{text}");
        }
        assert!(
            text.contains(&format!("127.0.0.1:{port}")),
            "{sub}: the error still names the endpoint:\n{text}"
        );
    }
    // A presigned URL given where a source URI belongs is refused without echoing
    // its signature.
    let out = run(chute().args([
        "ls",
        "https://bucket.s3.amazonaws.com/k.bin?X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Signature=feedbeef",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    for secret in ["AKIAEXAMPLE", "feedbeef"] {
        assert!(!text.contains(secret), "shows {secret:?}:\n{text}");
    }
    assert!(text.contains("bucket.s3.amazonaws.com"), "{text}");
}
