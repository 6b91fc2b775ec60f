//! A fault-injecting HTTP/1.1 proxy on loopback, placed between an S3 client
//! and a plain-HTTP S3 server so tests can make chosen requests fail in the
//! ways real S3 and real networks fail: throttling and error statuses,
//! bodies cut short, stalled connections, bodies trickled a few bytes at a
//! time and dropped connections.
//!
//! Point the client at [`FaultProxy::endpoint_url`] and queue [`FaultRule`]s
//! with [`FaultProxy::push`]. Requests that no rule claims are forwarded
//! byte for byte, so request signatures stay valid.
//!
//! Behaviour worth knowing when writing tests:
//!
//! * Each client connection gets its own upstream connection, opened on its
//!   first forwarded request and reopened if upstream closed it while idle.
//!   Keep-alive reuse on the client side is therefore visible upstream too.
//! * Synthetic error responses ([`FaultKind::ServiceUnavailable`],
//!   [`FaultKind::Status`]) keep the client connection open, as S3 does for
//!   throttling; the request body is read and discarded first. The exception
//!   is a request with `Expect: 100-continue`, which is answered at once and
//!   then closed, since the client may or may not send its body afterwards.
//! * [`FaultKind::CutBody`] and [`FaultKind::Stall`] count body bytes as they
//!   appear on the wire after the response head. For a chunked response that
//!   includes the chunk-size lines and CRLFs, not just payload bytes. If the
//!   body ends before the budget is reached, the full response is delivered
//!   and the connection is closed right after it.
//! * [`FaultKind::Trickle`] delivers the whole body, but after its first
//!   `after_body_bytes` only `step_bytes` at a time with `pause` between
//!   steps, so every read makes progress while the transfer as a whole
//!   crawls. The connection is closed after the body (or as soon as the
//!   client gives up and closes its side).
//! * Connections are closed with an orderly FIN, so a cut body reads as EOF
//!   before `Content-Length` is satisfied rather than as a reset.
//! * Dropping the [`FaultProxy`] stops accepting and closes all connections;
//!   the sockets are closed by the runtime shortly after the drop returns.

mod conn;
mod wire;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// What happens to a request claimed by a [`FaultRule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer without contacting upstream: `503` with an S3 `SlowDown` XML
    /// error body. The connection stays usable.
    ServiceUnavailable,
    /// Answer without contacting upstream with any status and S3 error code,
    /// e.g. `500 InternalError` or `403 AccessDenied`. The status should be a
    /// final one (200..=999); `204` and `304` are sent without a body.
    Status { status: u16, code: String },
    /// Forward the request, relay the response head and the first
    /// `after_body_bytes` bytes of the body, then close the connection.
    CutBody { after_body_bytes: u64 },
    /// Forward the request, relay the response head and the first
    /// `after_body_bytes` bytes of the body, then send nothing more for
    /// `duration` while holding the socket open, then close it.
    Stall {
        after_body_bytes: u64,
        duration: Duration,
    },
    /// Forward the request and relay the response head and the first
    /// `after_body_bytes` bytes of the body at full speed; then drip the rest
    /// `step_bytes` at a time (at least one) with `pause` before each step:
    /// a server or link that never stalls long enough to look dead but
    /// would take forever to finish.
    Trickle {
        after_body_bytes: u64,
        step_bytes: u64,
        pause: Duration,
    },
    /// Close the connection after reading the request, sending nothing.
    Reset,
    /// Forward the request untouched after waiting `duration`: the round-trip
    /// time of a distant endpoint, for measuring what concurrency hides.
    Delay { duration: Duration },
}

/// A fault and the requests it applies to.
///
/// Rules are consulted in push order for every request; the first one that
/// matches and still has `times > 0` fires and has `times` decremented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// HTTP method to match (case-insensitive), or any method when `None`.
    pub method: Option<String>,
    /// Substring of the request target (path and query) to match, or any
    /// target when `None`.
    pub path_contains: Option<String>,
    pub kind: FaultKind,
    /// How many more requests this rule will fault.
    pub times: usize,
}

impl FaultRule {
    /// A rule matching every request once; narrow it with the builder
    /// methods.
    pub fn new(kind: FaultKind) -> Self {
        FaultRule {
            method: None,
            path_contains: None,
            kind,
            times: 1,
        }
    }

    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    pub fn path_contains(mut self, fragment: impl Into<String>) -> Self {
        self.path_contains = Some(fragment.into());
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| target.contains(p))
    }
}

/// How many faults of each kind have fired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub service_unavailable: u64,
    pub status: u64,
    pub cut_body: u64,
    pub stall: u64,
    pub trickle: u64,
    pub reset: u64,
    pub delay: u64,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.service_unavailable
            + self.status
            + self.cut_body
            + self.stall
            + self.trickle
            + self.reset
            + self.delay
    }
}

/// A snapshot of the proxy's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Upstream connections opened.
    pub upstream_connections: u64,
    /// Request heads parsed, faulted or not.
    pub requests: u64,
    /// Requests sent upstream (including CutBody/Stall/Trickle ones).
    pub forwarded: u64,
    pub faults: FaultCounts,
    /// Request bytes (heads and bodies) written upstream.
    pub bytes_to_upstream: u64,
    /// Response bytes (heads and bodies) relayed from upstream to clients;
    /// synthetic error responses are not included.
    pub bytes_to_client: u64,
}

impl ProxyStats {
    /// All bytes relayed in either direction.
    pub fn bytes_forwarded(&self) -> u64 {
        self.bytes_to_upstream + self.bytes_to_client
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    upstream_connections: AtomicU64,
    requests: AtomicU64,
    forwarded: AtomicU64,
    service_unavailable: AtomicU64,
    status: AtomicU64,
    cut_body: AtomicU64,
    stall: AtomicU64,
    trickle: AtomicU64,
    reset: AtomicU64,
    delay: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
    synthetic_ids: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// State shared by the handle, the accept loop and every connection task.
struct Shared {
    upstream: SocketAddr,
    rules: Mutex<Vec<FaultRule>>,
    counters: Counters,
}

impl Shared {
    fn rules(&self) -> MutexGuard<'_, Vec<FaultRule>> {
        // A panicking test thread must not wedge every later request.
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Picks the fault for one request, consuming one use of the rule.
    fn take_fault(&self, method: &str, target: &str) -> Option<FaultKind> {
        let mut rules = self.rules();
        let rule = rules
            .iter_mut()
            .find(|r| r.times > 0 && r.matches(method, target))?;
        rule.times -= 1;
        let c = &self.counters;
        bump(match rule.kind {
            FaultKind::ServiceUnavailable => &c.service_unavailable,
            FaultKind::Status { .. } => &c.status,
            FaultKind::CutBody { .. } => &c.cut_body,
            FaultKind::Stall { .. } => &c.stall,
            FaultKind::Trickle { .. } => &c.trickle,
            FaultKind::Reset => &c.reset,
            FaultKind::Delay { .. } => &c.delay,
        });
        tracing::debug!(method, target, kind = ?rule.kind, "fault proxy: injecting fault");
        Some(rule.kind.clone())
    }

    fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            connections: get(&c.connections),
            upstream_connections: get(&c.upstream_connections),
            requests: get(&c.requests),
            forwarded: get(&c.forwarded),
            faults: FaultCounts {
                service_unavailable: get(&c.service_unavailable),
                status: get(&c.status),
                cut_body: get(&c.cut_body),
                stall: get(&c.stall),
                trickle: get(&c.trickle),
                reset: get(&c.reset),
                delay: get(&c.delay),
            },
            bytes_to_upstream: get(&c.bytes_to_upstream),
            bytes_to_client: get(&c.bytes_to_client),
        }
    }
}

/// A running fault-injecting proxy; see the module docs.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds `127.0.0.1:0` and starts accepting on the current tokio runtime.
    /// Upstream is contacted only when a request is forwarded.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(Vec::new()),
            counters: Counters::default(),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FaultProxy {
            addr,
            shared,
            accept_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream this proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// `http://127.0.0.1:PORT`, for the S3 client's endpoint override.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Appends a rule; it applies to requests whose head arrives from now on.
    pub fn push(&self, rule: FaultRule) {
        self.shared.rules().push(rule);
    }

    /// Removes all rules, fired or not. Counters are kept.
    pub fn clear(&self) {
        self.shared.rules().clear();
    }

    /// The current rules with their remaining `times`, in consultation order.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.shared.rules().clone()
    }

    pub fn stats(&self) -> ProxyStats {
        self.shared.stats()
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The connection tasks live in a JoinSet owned by the accept task,
        // so cancelling it also aborts them and drops their sockets.
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    bump(&shared.counters.connections);
                    conns.spawn(conn::serve(stream, shared.clone()));
                }
                Err(e) => {
                    // Usually transient (EMFILE, aborted handshake); back off
                    // briefly instead of spinning.
                    tracing::debug!(error = %e, "fault proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// An S3-style XML error document, as S3 sends it with error statuses.
pub fn s3_error_body(code: &str, message: &str) -> String {
    error_body(code, message, "0000000000000000")
}

fn error_body(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>\
         <RequestId>{}</RequestId><HostId>chute-testkit-fault-proxy</HostId></Error>",
        xml_escape(code),
        xml_escape(message),
        xml_escape(request_id),
    )
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The message S3 uses for well-known codes, so SDK logs look familiar.
fn default_message(code: &str) -> &'static str {
    match code {
        "SlowDown" => "Please reduce your request rate.",
        "InternalError" => "We encountered an internal error. Please try again.",
        "ServiceUnavailable" => "Service is unable to handle request.",
        "AccessDenied" => "Access Denied",
        "NoSuchKey" => "The specified key does not exist.",
        "NoSuchBucket" => "The specified bucket does not exist",
        "RequestTimeout" => {
            "Your socket connection to the server was not read from or written to within the timeout period."
        }
        "InvalidRange" => "The requested range is not satisfiable",
        _ => "Fault injected by chute-testkit.",
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Slow Down",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_escaped_s3_xml() {
        let body = s3_error_body("SlowDown", "a < b & \"c\"");
        assert!(body.starts_with("<?xml"));
        assert!(body.contains(
            "<Error><Code>SlowDown</Code><Message>a &lt; b &amp; &quot;c&quot;</Message>"
        ));
        assert!(body.ends_with("</Error>"));
    }

    #[test]
    fn rules_fire_in_order_and_run_out() {
        let shared = Shared {
            upstream: (Ipv4Addr::LOCALHOST, 1).into(),
            rules: Mutex::new(vec![
                FaultRule::new(FaultKind::Reset).method("put").times(1),
                FaultRule::new(FaultKind::ServiceUnavailable)
                    .path_contains("/a/")
                    .times(2),
            ]),
            counters: Counters::default(),
        };
        assert_eq!(shared.take_fault("GET", "/b/x"), None);
        assert_eq!(shared.take_fault("PUT", "/a/x"), Some(FaultKind::Reset));
        assert_eq!(
            shared.take_fault("PUT", "/a/x"),
            Some(FaultKind::ServiceUnavailable)
        );
        assert_eq!(
            shared.take_fault("GET", "/a/x"),
            Some(FaultKind::ServiceUnavailable)
        );
        assert_eq!(shared.take_fault("GET", "/a/x"), None);
        let faults = shared.stats().faults;
        assert_eq!(
            (faults.reset, faults.service_unavailable, faults.total()),
            (1, 2, 3)
        );
    }
}
