//! End-to-end tests of the fault proxy: a minimal HTTP/1.1 origin written
//! here, a raw TCP client speaking HTTP by hand, and the proxy in between.
//! The hand-written client matters: it sees exactly the bytes the proxy
//! sends, which an HTTP library would smooth over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chute_testkit::data::pattern;
use chute_testkit::proxy::{s3_error_body, FaultKind, FaultProxy, FaultRule};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const MIB: usize = 1024 * 1024;

/// Object `n`'s body: sizes differ per object, and the bytes never repeat,
/// so a shifted or spliced body cannot compare equal by accident.
fn object_body(n: usize) -> Vec<u8> {
    pattern(3 * MIB + n * 7919, n as u64)
}

/// A counting body: the chunked-encoding test reads its first bytes off the
/// wire by value.
fn chunked_body() -> Vec<u8> {
    (0..200_000usize).map(|i| (i % 253) as u8).collect()
}

/// `mib` MiB that never repeat, so a duplicated or dropped block is detected.
fn big_body(mib: usize) -> Vec<u8> {
    pattern(mib * MIB, 2000 + mib as u64)
}

// ---------------------------------------------------------------- origin

struct Origin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn start_origin() -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = origin_conn(stream).await;
            });
        }
    });
    Origin { addr, connections }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a start line and headers; `None` on EOF before the first byte.
async fn read_head<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<(String, Vec<(String, String)>)>> {
    let mut start = String::new();
    if r.read_line(&mut start).await? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').unwrap();
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    Ok(Some((start.trim_end().to_string(), headers)))
}

async fn read_chunked<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await?;
        let digits = line.trim_end().split(';').next().unwrap_or_default();
        let size =
            usize::from_str_radix(digits, 16).map_err(|_| std::io::ErrorKind::InvalidData)?;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                line.clear();
                r.read_line(&mut line).await?;
                if line == "\r\n" {
                    return Ok(body);
                }
            }
        }
        let at = body.len();
        body.resize(at + size, 0);
        r.read_exact(&mut body[at..]).await?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).await?;
        assert_eq!(&crlf, b"\r\n");
    }
}

async fn origin_conn(stream: TcpStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(256 * 1024, r);
    while let Some((start, headers)) = read_head(&mut r).await? {
        let mut parts = start.split(' ');
        let req = Request {
            method: parts.next().unwrap().to_string(),
            path: parts.next().unwrap().to_string(),
            headers,
        };
        if header(&req.headers, "expect") == Some("100-continue") {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let body = if header(&req.headers, "transfer-encoding") == Some("chunked") {
            read_chunked(&mut r).await?
        } else {
            let len: usize =
                header(&req.headers, "content-length").map_or(0, |v| v.parse().unwrap());
            let mut body = vec![0; len];
            r.read_exact(&mut body).await?;
            body
        };
        if !respond(&mut w, &req, &body).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// Writes the response; `false` when the origin closes afterwards.
async fn respond(w: &mut OwnedWriteHalf, req: &Request, body: &[u8]) -> std::io::Result<bool> {
    let head_only = req.method == "HEAD";
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let ok = |extra: &str, payload: Vec<u8>| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}\r\n",
            payload.len()
        );
        let mut out = head.into_bytes();
        if !head_only {
            out.extend_from_slice(&payload);
        }
        out
    };
    if let Some(n) = path.strip_prefix("/obj/") {
        w.write_all(&ok("ETag: \"x\"\r\n", object_body(n.parse().unwrap())))
            .await?;
        // `drop` closes without announcing it, like an idle timeout would.
        return Ok(query != "drop");
    }
    if let Some(n) = path.strip_prefix("/big/") {
        w.write_all(&ok("", big_body(n.parse().unwrap()))).await?;
        return Ok(true);
    }
    match (req.method.as_str(), path) {
        ("GET", "/chunked") => {
            let data = chunked_body();
            w.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await?;
            let mut at = 0;
            let mut size = 1;
            while at < data.len() {
                let end = (at + size).min(data.len());
                w.write_all(format!("{:x}\r\n", end - at).as_bytes())
                    .await?;
                w.write_all(&data[at..end]).await?;
                w.write_all(b"\r\n").await?;
                at = end;
                size = size * 3 + 7;
            }
            w.write_all(b"0\r\nx-trailer: done\r\n\r\n").await?;
            Ok(true)
        }
        ("GET", "/close") => {
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await?;
            Ok(false)
        }
        ("PUT", _) => {
            w.write_all(&ok("", format!("len={}", body.len()).into_bytes()))
                .await?;
            Ok(true)
        }
        _ => {
            w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await?;
            Ok(true)
        }
    }
}

// ---------------------------------------------------------------- client

struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        Client {
            r: BufReader::with_capacity(256 * 1024, r),
            w,
        }
    }

    async fn send(&mut self, method: &str, path: &str, extra: &str, body: &[u8]) {
        let mut out = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}");
        if !body.is_empty() {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        self.w.write_all(&out).await.unwrap();
    }

    async fn head(&mut self) -> Option<(u16, Vec<(String, String)>)> {
        let (start, headers) = read_head(&mut self.r).await.ok()??;
        Some((start[9..12].parse().unwrap(), headers))
    }

    async fn response(&mut self, head_request: bool) -> Response {
        let (status, headers) = self.head().await.expect("response head");
        let body = if head_request {
            Vec::new()
        } else if header(&headers, "transfer-encoding") == Some("chunked") {
            read_chunked(&mut self.r).await.unwrap()
        } else {
            let len: usize = header(&headers, "content-length").unwrap().parse().unwrap();
            let mut body = vec![0; len];
            self.r.read_exact(&mut body).await.unwrap();
            body
        };
        Response {
            status,
            headers,
            body,
        }
    }

    async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Response {
        self.send(method, path, "", body).await;
        self.response(method == "HEAD").await
    }

    /// Everything until EOF; a reset also counts as the end.
    async fn rest(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.r.read_to_end(&mut out).await;
        out
    }
}

async fn setup() -> (Origin, FaultProxy) {
    let origin = start_origin().await;
    let proxy = FaultProxy::start(origin.addr).await.unwrap();
    (origin, proxy)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn passthrough_is_byte_exact_over_keepalive() {
    let (origin, proxy) = setup().await;
    assert_eq!(
        proxy.endpoint_url(),
        format!("http://127.0.0.1:{}", proxy.addr().port())
    );
    let mut c = Client::connect(proxy.addr()).await;

    let r = c.request("GET", "/obj/1", b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body == object_body(1));

    let r = c.request("GET", "/chunked", b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body == chunked_body());

    let r = c.request("HEAD", "/obj/2", b"").await;
    assert_eq!(
        header(&r.headers, "content-length").unwrap(),
        object_body(2).len().to_string()
    );

    let upload = vec![7u8; 2 * MIB + 3];
    let r = c.request("PUT", "/b/key", &upload).await;
    assert_eq!(r.body, format!("len={}", upload.len()).as_bytes());

    // aws-chunked style streaming upload framed with chunked coding.
    c.send(
        "PUT",
        "/b/streamed",
        "Transfer-Encoding: chunked\r\nContent-Encoding: aws-chunked\r\nx-amz-decoded-content-length: 10\r\n",
        b"",
    )
    .await;
    c.w.write_all(b"4;chunk-signature=ab\r\nabcd\r\n6;chunk-signature=cd\r\nefghij\r\n0;chunk-signature=ef\r\n\r\n")
        .await
        .unwrap();
    let r = c.response(false).await;
    assert_eq!(r.body, b"len=10");

    let r = c.request("GET", "/obj/3", b"").await;
    assert!(r.body == object_body(3));
    let r = c.request("GET", "/missing", b"").await;
    assert_eq!((r.status, r.body.len()), (404, 0));

    let s = proxy.stats();
    assert_eq!(
        (
            s.connections,
            s.upstream_connections,
            s.requests,
            s.forwarded
        ),
        (1, 1, 7, 7)
    );
    assert_eq!(s.faults.total(), 0);
    assert_eq!(origin.connections.load(Ordering::SeqCst), 1);
    let payload = object_body(1).len() + object_body(3).len() + chunked_body().len();
    assert!(s.bytes_to_client as usize > payload);
    assert!(s.bytes_to_upstream as usize > upload.len());
    assert_eq!(s.bytes_forwarded(), s.bytes_to_client + s.bytes_to_upstream);
}

#[tokio::test]
async fn large_transfer_and_concurrent_connections() {
    let (_origin, proxy) = setup().await;
    let addr = proxy.addr();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                let r = c.request("GET", "/big/16", b"").await;
                assert!(r.body == big_body(16));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = proxy.stats();
    assert_eq!((s.connections, s.forwarded), (4, 4));
    assert!(s.bytes_to_client >= 64 * MIB as u64);
}

#[tokio::test]
async fn service_unavailable_fires_exactly_times_then_passes() {
    let (origin, proxy) = setup().await;
    proxy.push(
        FaultRule::new(FaultKind::ServiceUnavailable)
            .method("GET")
            .path_contains("/obj/")
            .times(2),
    );
    let mut c = Client::connect(proxy.addr()).await;

    for _ in 0..2 {
        let r = c.request("GET", "/obj/1", b"").await;
        assert_eq!(r.status, 503);
        assert_eq!(header(&r.headers, "content-type"), Some("application/xml"));
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.contains(
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
        ));
    }
    // Same connection: the synthetic answer kept it usable.
    let r = c.request("GET", "/obj/1", b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body == object_body(1));

    let s = proxy.stats();
    assert_eq!(
        (s.requests, s.forwarded, s.faults.service_unavailable),
        (3, 1, 2)
    );
    assert_eq!(proxy.rules()[0].times, 0);
    assert_eq!(origin.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn filters_select_requests_and_rules_apply_in_order() {
    let (_origin, proxy) = setup().await;
    proxy.push(
        FaultRule::new(FaultKind::Status {
            status: 500,
            code: "InternalError".into(),
        })
        .method("PUT"),
    );
    proxy.push(
        FaultRule::new(FaultKind::Status {
            status: 403,
            code: "AccessDenied".into(),
        })
        .path_contains("/obj/7")
        .times(2),
    );
    let mut c = Client::connect(proxy.addr()).await;

    assert_eq!(c.request("GET", "/obj/1", b"").await.status, 200);
    // The body of a faulted PUT is consumed so the next request parses.
    let r = c.request("PUT", "/obj/7", &[1u8; 100_000]).await;
    assert_eq!(r.status, 500);
    assert!(String::from_utf8(r.body)
        .unwrap()
        .contains("<Code>InternalError</Code>"));
    assert_eq!(c.request("PUT", "/b/k", b"abc").await.body, b"len=3");

    // HEAD: the error advertises its length but sends no body.
    let r = c.request("HEAD", "/obj/7?x-id=HeadObject", b"").await;
    assert_eq!(r.status, 403);
    let len: usize = header(&r.headers, "content-length")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, s3_error_body("AccessDenied", "Access Denied").len());
    let r = c.request("GET", "/obj/7", b"").await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8(r.body)
        .unwrap()
        .contains("<Code>AccessDenied</Code><Message>Access Denied</Message>"));
    assert_eq!(c.request("GET", "/obj/7", b"").await.status, 200);

    proxy.push(FaultRule::new(FaultKind::ServiceUnavailable).times(5));
    proxy.clear();
    assert_eq!(c.request("GET", "/obj/2", b"").await.status, 200);

    let s = proxy.stats();
    assert_eq!(
        (s.faults.status, s.faults.total(), s.requests, s.forwarded),
        (3, 3, 7, 4)
    );
}

#[tokio::test]
async fn cut_body_delivers_exactly_k_bytes_then_eof() {
    let (_origin, proxy) = setup().await;
    proxy.push(
        FaultRule::new(FaultKind::CutBody {
            after_body_bytes: 100_000,
        })
        .path_contains("/obj/"),
    );
    let mut c = Client::connect(proxy.addr()).await;
    c.send("GET", "/obj/4", "", b"").await;
    let (status, headers) = c.head().await.unwrap();
    assert_eq!(status, 200);
    let full = object_body(4);
    assert_eq!(
        header(&headers, "content-length").unwrap(),
        full.len().to_string()
    );
    let got = timeout(Duration::from_secs(2), c.rest()).await.unwrap();
    assert_eq!(got.len(), 100_000);
    assert!(got[..] == full[..100_000]);

    // Chunked responses are cut on raw wire bytes after the head.
    proxy.push(
        FaultRule::new(FaultKind::CutBody {
            after_body_bytes: 10,
        })
        .path_contains("/chunked"),
    );
    let mut c = Client::connect(proxy.addr()).await;
    c.send("GET", "/chunked", "", b"").await;
    c.head().await.unwrap();
    let got = timeout(Duration::from_secs(2), c.rest()).await.unwrap();
    assert_eq!(got, b"1\r\n\x00\r\na\r\n\x01");

    // K = 0: head only.
    proxy.push(FaultRule::new(FaultKind::CutBody {
        after_body_bytes: 0,
    }));
    let mut c = Client::connect(proxy.addr()).await;
    c.send("GET", "/obj/1", "", b"").await;
    assert_eq!(c.head().await.unwrap().0, 200);
    assert!(timeout(Duration::from_secs(2), c.rest())
        .await
        .unwrap()
        .is_empty());

    // Rules exhausted: a fresh connection passes through untouched.
    let mut c = Client::connect(proxy.addr()).await;
    assert!(c.request("GET", "/obj/4", b"").await.body == full);
    assert_eq!(proxy.stats().faults.cut_body, 3);
}

#[tokio::test]
async fn stall_delivers_k_bytes_then_nothing_for_the_duration() {
    let (_origin, proxy) = setup().await;
    let stall = Duration::from_millis(400);
    proxy.push(FaultRule::new(FaultKind::Stall {
        after_body_bytes: 5000,
        duration: stall,
    }));
    let expected = object_body(2);
    let mut c = Client::connect(proxy.addr()).await;
    let started = Instant::now();
    c.send("GET", "/obj/2", "", b"").await;
    assert_eq!(c.head().await.unwrap().0, 200);
    let mut got = vec![0u8; 5000];
    c.r.read_exact(&mut got).await.unwrap();
    assert!(got[..] == expected[..5000]);

    // Silence while stalled, with the socket still open. On a badly
    // overloaded machine the stall may already be over; then only EOF may
    // follow, never more body bytes.
    let mut one = [0u8; 1];
    if let Ok(read) = timeout(Duration::from_millis(150), c.r.read(&mut one)).await {
        assert_eq!(read.unwrap_or(0), 0, "body bytes after the stall point");
    }

    let rest = timeout(Duration::from_secs(2), c.rest()).await.unwrap();
    assert!(rest.is_empty());
    // The stall began after the request was sent, so EOF cannot come sooner.
    assert!(started.elapsed() >= stall);
    assert_eq!(proxy.stats().faults.stall, 1);
}

#[tokio::test]
async fn reset_closes_without_sending_anything() {
    let (origin, proxy) = setup().await;
    proxy.push(FaultRule::new(FaultKind::Reset).method("PUT"));
    let mut c = Client::connect(proxy.addr()).await;
    c.send("PUT", "/b/k", "", &[9u8; 50_000]).await;
    let got = timeout(Duration::from_secs(1), c.rest()).await.unwrap();
    assert!(got.is_empty());

    let s = proxy.stats();
    assert_eq!((s.requests, s.forwarded, s.faults.reset), (1, 0, 1));
    assert_eq!(origin.connections.load(Ordering::SeqCst), 0);

    let mut c = Client::connect(proxy.addr()).await;
    assert_eq!(c.request("PUT", "/b/k", b"xy").await.body, b"len=2");
}

#[tokio::test]
async fn idle_closed_upstream_is_reopened() {
    let (origin, proxy) = setup().await;
    let mut c = Client::connect(proxy.addr()).await;
    assert!(c.request("GET", "/obj/1?drop", b"").await.body == object_body(1));
    // Let the origin's FIN arrive so the proxy can notice it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(c.request("PUT", "/b/k", b"hello").await.body, b"len=5");
    assert!(c.request("GET", "/obj/2?drop", b"").await.body == object_body(2));
    // No pause this time: the retry path must cover the race.
    assert!(c.request("GET", "/obj/3", b"").await.body == object_body(3));

    let s = proxy.stats();
    assert_eq!(
        (s.connections, s.forwarded, s.upstream_connections),
        (1, 4, 3)
    );
    assert_eq!(origin.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn connection_close_from_upstream_closes_the_client() {
    let (_origin, proxy) = setup().await;
    let mut c = Client::connect(proxy.addr()).await;
    let r = c.request("GET", "/close", b"").await;
    assert_eq!(r.body, b"ok");
    assert!(timeout(Duration::from_secs(1), c.rest())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn expect_continue_interim_response_is_relayed() {
    let (_origin, proxy) = setup().await;
    let mut c = Client::connect(proxy.addr()).await;
    c.send(
        "PUT",
        "/b/k",
        "Expect: 100-continue\r\nContent-Length: 4\r\n",
        b"",
    )
    .await;
    let (status, _) = timeout(Duration::from_secs(1), c.head())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 100);
    c.w.write_all(b"body").await.unwrap();
    let r = c.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"len=4"[..]));
    assert_eq!(c.request("GET", "/obj/1", b"").await.status, 200);
}

#[tokio::test]
async fn malformed_request_closes_only_that_connection() {
    let (_origin, proxy) = setup().await;
    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ] {
        let mut c = Client::connect(proxy.addr()).await;
        c.w.write_all(garbage).await.unwrap();
        assert!(timeout(Duration::from_secs(1), c.rest())
            .await
            .unwrap()
            .is_empty());
    }
    let mut c = Client::connect(proxy.addr()).await;
    assert_eq!(c.request("GET", "/obj/1", b"").await.status, 200);
}

#[tokio::test]
async fn dropping_the_proxy_closes_connections() {
    let (_origin, proxy) = setup().await;
    let addr = proxy.addr();
    let mut c = Client::connect(addr).await;
    assert_eq!(c.request("GET", "/obj/1", b"").await.status, 200);
    drop(proxy);
    assert!(timeout(Duration::from_secs(1), c.rest())
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn unreachable_upstream_gets_bad_gateway() {
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let proxy = FaultProxy::start(addr).await.unwrap();
    let mut c = Client::connect(proxy.addr()).await;
    assert_eq!(c.request("GET", "/obj/1", b"").await.status, 502);
}

#[tokio::test]
async fn trickle_sends_every_byte_a_few_at_a_time() {
    let (_origin, proxy) = setup().await;
    let pause = Duration::from_millis(20);
    proxy.push(
        FaultRule::new(FaultKind::Trickle {
            after_body_bytes: 1000,
            step_bytes: 7,
            pause,
        })
        .path_contains("/obj/"),
    );
    let expected = object_body(1);
    let mut c = Client::connect(proxy.addr()).await;
    c.send("GET", "/obj/1", "", b"").await;
    let (status, headers) = c.head().await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-length").unwrap(),
        expected.len().to_string()
    );
    let mut got = vec![0u8; 1000];
    timeout(Duration::from_secs(5), c.r.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(got[..] == expected[..1000]);

    // After the free bytes the rest comes in order, one step per pause.
    let started = Instant::now();
    let mut drip = Vec::new();
    while drip.len() < 70 {
        let mut buf = [0u8; 4096];
        let n = timeout(Duration::from_secs(5), c.r.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "EOF inside a trickled body");
        drip.extend_from_slice(&buf[..n]);
    }
    // Ten steps at least, each after a pause: the drip cannot be faster.
    assert!(started.elapsed() >= pause * 9);
    assert!(drip[..] == expected[1000..1000 + drip.len()]);

    // The client giving up ends the trickle; the proxy stays usable.
    drop(c);
    let mut c = Client::connect(proxy.addr()).await;
    assert!(c.request("GET", "/obj/1", b"").await.body == expected);
    assert_eq!(proxy.stats().faults.trickle, 1);
    assert_eq!(proxy.stats().faults.total(), 1);
}

#[tokio::test]
async fn trickle_of_a_small_body_completes_then_closes() {
    let (_origin, proxy) = setup().await;
    proxy.push(
        FaultRule::new(FaultKind::Trickle {
            after_body_bytes: 0,
            step_bytes: 0,
            pause: Duration::from_millis(1),
        })
        .path_contains("/close"),
    );
    let mut c = Client::connect(proxy.addr()).await;
    let r = timeout(Duration::from_secs(5), c.request("GET", "/close", b""))
        .await
        .unwrap();
    assert_eq!(r.body, b"ok");
    assert!(timeout(Duration::from_secs(2), c.rest())
        .await
        .unwrap()
        .is_empty());
}
