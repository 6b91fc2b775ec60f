//! The listener: `GET /metrics` (and `HEAD`) answered with [`crate::render`],
//! one request per connection. Requests are read with a size and time bound,
//! so a client that connects and says nothing costs one idle task, briefly.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Registry;

/// Largest request head read; a scraper's is a few hundred bytes.
const MAX_REQUEST: usize = 8 << 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running listener; dropping it stops accepting connections.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// The address bound (the port chosen, when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `addr` (`HOST:PORT`; a host name is resolved) and serves the
/// counters of `registry` until the returned [`Server`] is dropped.
pub async fn serve(addr: &str, registry: &'static Registry) -> Result<Server, MetricsError> {
    let listen_err = |source| MetricsError::Listen {
        addr: addr.to_owned(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(listen_err)?;
    let local = listener.local_addr().map_err(listen_err)?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, registry));
                }
                Err(e) => {
                    // Out of descriptors or an aborted handshake: wait, go on.
                    tracing::debug!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tracing::info!(addr = %local, "serving metrics at /metrics");
    Ok(Server { addr: local, task })
}

async fn answer(mut stream: TcpStream, registry: &'static Registry) {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        _ => return,
    };
    let response = respond(&head, registry);
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// The request up to its blank line, or `None` if it is too long or cut off.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

/// The whole HTTP response to the request `head`.
fn respond(head: &[u8], registry: &Registry) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, body, kind) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            crate::render(registry),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "only /metrics is served here\n".to_owned(),
            "text/plain; charset=utf-8",
        ),
        _ => (
            "405 Method Not Allowed",
            "only GET /metrics is served here\n".to_owned(),
            "text/plain; charset=utf-8",
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Family, Sample};

    fn registry() -> &'static Registry {
        let reg: &'static Registry = Box::leak(Box::default());
        reg.add(
            "train",
            Arc::new(|out: &mut Vec<Sample>| out.push(Sample::new(Family::BytesFetched, 42))),
        );
        reg
    }

    async fn request(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let server = serve("127.0.0.1:0", registry()).await.expect("listen");
        let addr = server.local_addr();
        let ok = request(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(
            ok.ends_with("chute_bytes_fetched_total{channel=\"train\"} 42\n"),
            "{ok}"
        );
        let missing = request(addr, "GET /other HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = request(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let head = request(addr, "HEAD /metrics HTTP/1.0\r\n\r\n").await;
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }

    #[tokio::test]
    async fn an_address_in_use_is_an_error_naming_it() {
        let first = serve("127.0.0.1:0", registry()).await.expect("listen");
        let taken = first.local_addr().to_string();
        let err = serve(&taken, registry()).await.expect_err("in use");
        assert!(err.to_string().contains(&taken), "{err}");
    }
}
