//! One client connection of the fault proxy: reads requests one after
//! another, applies the fault chosen for each, and forwards the rest over a
//! dedicated upstream connection.
//!
//! Any I/O or protocol error simply ends the connection; a test proxy has
//! nobody to report to, and closing is what a real server would do.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use super::wire::{
    parse_request, parse_response, relay_body, request_framing, response_framing, BodyEnd, Framing,
    Pace, RequestHead, Sink, WireReader,
};
use super::{bump, default_message, error_body, reason_phrase, FaultKind, Shared};

pub(super) async fn serve(client: TcpStream, shared: Arc<Shared>) {
    if let Err(e) = serve_inner(client, &shared).await {
        tracing::debug!(error = %e, "fault proxy: connection ended");
    }
}

/// The pooled upstream connection of one client connection.
struct Upstream {
    r: WireReader,
    w: OwnedWriteHalf,
}

/// A fault applied while relaying the response body.
#[derive(Clone, Copy)]
enum BodyFault {
    /// Relay `budget` body bytes, hold the socket open for `stall` if given,
    /// then close.
    Cut {
        budget: u64,
        stall: Option<Duration>,
    },
    /// Relay the whole body, slowly.
    Trickle(Pace),
}

impl BodyFault {
    fn budget(self) -> Option<u64> {
        match self {
            BodyFault::Cut { budget, .. } => Some(budget),
            BodyFault::Trickle(_) => None,
        }
    }

    fn pace(self) -> Option<Pace> {
        match self {
            BodyFault::Cut { .. } => None,
            BodyFault::Trickle(pace) => Some(pace),
        }
    }
}

/// Whether the client connection may carry another request.
#[derive(PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

async fn serve_inner(client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_nodelay(true)?;
    let (cr, mut cw) = client.into_split();
    let mut cr = WireReader::new(cr);
    let mut upstream: Option<Upstream> = None;
    loop {
        let Some(raw) = cr.read_head().await? else {
            return Ok(());
        };
        let req = parse_request(&raw)?;
        bump(&shared.counters.requests);
        let framing = request_framing(&req)?;
        // Every fault but the synthetic answers and the reset forwards the
        // request; they differ only in what happens to the response body.
        let body_fault = match shared.take_fault(&req.method, &req.target) {
            None => None,
            Some(FaultKind::ServiceUnavailable) => {
                let next =
                    synthetic(&mut cr, &mut cw, &req, framing, 503, "SlowDown", shared).await?;
                if next == Next::Close {
                    return Ok(());
                }
                continue;
            }
            Some(FaultKind::Status { status, code }) => {
                let next =
                    synthetic(&mut cr, &mut cw, &req, framing, status, &code, shared).await?;
                if next == Next::Close {
                    return Ok(());
                }
                continue;
            }
            Some(FaultKind::CutBody { after_body_bytes }) => Some(BodyFault::Cut {
                budget: after_body_bytes,
                stall: None,
            }),
            Some(FaultKind::Stall {
                after_body_bytes,
                duration,
            }) => Some(BodyFault::Cut {
                budget: after_body_bytes,
                stall: Some(duration),
            }),
            Some(FaultKind::Trickle {
                after_body_bytes,
                step_bytes,
                pause,
            }) => Some(BodyFault::Trickle(Pace {
                free: after_body_bytes,
                step: step_bytes.max(1),
                pause,
            })),
            Some(FaultKind::Delay { duration }) => {
                tokio::time::sleep(duration).await;
                None
            }
            Some(FaultKind::Reset) => {
                // Reading the body first makes the close a clean FIN: closing
                // with unread data would make the kernel send RST instead,
                // racing with the client's own writes.
                if framing != Framing::Empty && !req.expects_continue() {
                    relay_body(&mut cr, &mut Sink::discard(), framing).await?;
                }
                return Ok(());
            }
        };
        let next = forward(
            &mut cr,
            &mut cw,
            &mut upstream,
            &req,
            &raw,
            framing,
            body_fault,
            shared,
        )
        .await?;
        if next == Next::Close {
            return Ok(());
        }
    }
}

/// Answers with an S3 error document without contacting upstream.
async fn synthetic(
    cr: &mut WireReader,
    cw: &mut OwnedWriteHalf,
    req: &RequestHead,
    framing: Framing,
    status: u16,
    code: &str,
    shared: &Shared,
) -> io::Result<Next> {
    let mut close = req.wants_close();
    if framing != Framing::Empty {
        if req.expects_continue() {
            // The client may never send the body now, so the connection
            // cannot be resynchronised.
            close = true;
        } else {
            relay_body(cr, &mut Sink::discard(), framing).await?;
        }
    }
    let id = shared
        .counters
        .synthetic_ids
        .fetch_add(1, Ordering::Relaxed);
    let request_id = format!("CHUTEFAULT{id:06X}");
    let body = error_body(code, default_message(code), &request_id);
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    let bodyless_status = status < 200 || status == 204 || status == 304;
    if !bodyless_status {
        out.push_str("Content-Type: application/xml\r\n");
        // HEAD responses still advertise the length a GET would have had.
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str(&format!(
        "x-amz-request-id: {request_id}\r\nx-amz-id-2: chute-testkit/{request_id}\r\n"
    ));
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    if !bodyless_status && !req.is_head() {
        out.push_str(&body);
    }
    cw.write_all(out.as_bytes()).await?;
    Ok(if close { Next::Close } else { Next::KeepAlive })
}

async fn connect(shared: &Shared) -> io::Result<Upstream> {
    let stream = TcpStream::connect(shared.upstream).await?;
    stream.set_nodelay(true)?;
    bump(&shared.counters.upstream_connections);
    let (r, w) = stream.into_split();
    Ok(Upstream {
        r: WireReader::new(r),
        w,
    })
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    cr: &mut WireReader,
    cw: &mut OwnedWriteHalf,
    upstream: &mut Option<Upstream>,
    req: &RequestHead,
    raw: &[u8],
    framing: Framing,
    fault: Option<BodyFault>,
    shared: &Shared,
) -> io::Result<Next> {
    let has_body = framing != Framing::Empty;
    let mut retried = false;
    loop {
        let reused = matches!(upstream, Some(up) if up.r.looks_reusable());
        if !reused {
            *upstream = None;
            match connect(shared).await {
                Ok(up) => *upstream = Some(up),
                Err(e) => {
                    tracing::debug!(error = %e, "fault proxy: upstream connect failed");
                    return bad_gateway(cw, req).await;
                }
            }
        }
        let Some(up) = upstream.as_mut() else {
            return Err(io::Error::other("upstream connection missing"));
        };

        // A reused connection may have been closed by upstream just now. A
        // request whose body is still on the client socket can be replayed
        // only up to the point its head was written.
        if let Err(e) = up.w.write_all(raw).await {
            *upstream = None;
            if reused && !retried {
                retried = true;
                continue;
            }
            return Err(e);
        }
        shared
            .counters
            .bytes_to_upstream
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        if !retried {
            bump(&shared.counters.forwarded);
        }

        let exchanged = exchange(cr, cw, up, req, framing, fault, shared).await;
        let next = match exchanged {
            Ok(Some(next)) => next,
            Ok(None) if reused && !has_body && !retried => {
                *upstream = None;
                retried = true;
                continue;
            }
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream sent no response",
                ))
            }
            Err(e) => return Err(e),
        };
        if next == Next::Close {
            *upstream = None;
        }
        return Ok(next);
    }
}

/// Sends the request body and relays the response concurrently. Doing both
/// at once is what makes `Expect: 100-continue` work (the interim response
/// must reach the client before it sends the body) and avoids deadlock when
/// upstream answers before it has read the whole body.
///
/// `Ok(None)`: upstream closed without sending any response byte.
async fn exchange(
    cr: &mut WireReader,
    cw: &mut OwnedWriteHalf,
    up: &mut Upstream,
    req: &RequestHead,
    framing: Framing,
    fault: Option<BodyFault>,
    shared: &Shared,
) -> io::Result<Option<Next>> {
    let Upstream { r: ur, w: uw } = up;
    let send_body = async {
        let mut sink = Sink::new(uw, None, &shared.counters.bytes_to_upstream);
        relay_body(cr, &mut sink, framing).await
    };
    let recv = relay_response(ur, cw, req.is_head(), fault, shared);
    tokio::pin!(send_body, recv);
    let mut body_done = framing == Framing::Empty;
    let response = loop {
        tokio::select! {
            sent = &mut send_body, if !body_done => {
                sent?;
                body_done = true;
            }
            received = &mut recv => break received?,
        }
    };
    let Some((outcome, upstream_close)) = response else {
        return Ok(None);
    };
    if let (BodyEnd::BudgetSpent, Some(BodyFault::Cut { stall: Some(d), .. })) = (outcome, fault) {
        tokio::time::sleep(d).await;
    }
    // An early response leaves the unread rest of the request body on the
    // client socket, so the stream cannot carry another request.
    let close = fault.is_some() || upstream_close || !body_done || req.wants_close();
    Ok(Some(if close { Next::Close } else { Next::KeepAlive }))
}

/// Relays interim responses and then the final response, head and body.
/// Returns how the body ended and whether the connection must close after it.
async fn relay_response(
    ur: &mut WireReader,
    cw: &mut OwnedWriteHalf,
    request_is_head: bool,
    fault: Option<BodyFault>,
    shared: &Shared,
) -> io::Result<Option<(BodyEnd, bool)>> {
    let mut first = true;
    loop {
        let raw = match ur.read_head().await {
            Ok(Some(raw)) => raw,
            Ok(None) if first => return Ok(None),
            Err(e) if first && ur.buffered().is_empty() && is_disconnect(&e) => return Ok(None),
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed",
                ))
            }
            Err(e) => return Err(e),
        };
        first = false;
        let head = parse_response(&raw)?;
        cw.write_all(&raw).await?;
        shared
            .counters
            .bytes_to_client
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        if head.status == 101 {
            // Protocol upgrades are not something S3 traffic uses.
            return Ok(Some((BodyEnd::Complete, true)));
        }
        if head.status < 200 {
            continue;
        }
        let framing = response_framing(request_is_head, &head)?;
        let close = head.wants_close() || framing == Framing::UntilClose;
        let budget = fault.and_then(BodyFault::budget);
        let mut sink = Sink::new(cw, budget, &shared.counters.bytes_to_client)
            .paced(fault.and_then(BodyFault::pace));
        let end = relay_body(ur, &mut sink, framing).await?;
        return Ok(Some((end, close)));
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// What a real proxy answers when the origin is unreachable; the client
/// connection is closed because the request body was never read.
async fn bad_gateway(cw: &mut OwnedWriteHalf, req: &RequestHead) -> io::Result<Next> {
    let body = error_body(
        "BadGateway",
        "chute-testkit fault proxy could not reach upstream.",
        "0",
    );
    let mut out = format!(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !req.is_head() {
        out.push_str(&body);
    }
    cw.write_all(out.as_bytes()).await?;
    Ok(Next::Close)
}
