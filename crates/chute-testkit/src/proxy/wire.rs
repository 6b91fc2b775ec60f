//! HTTP/1.1 wire handling for the fault proxy: a buffered socket reader,
//! message-head parsing, body framing rules and verbatim body relaying.
//!
//! The proxy never re-encodes anything: heads and bodies are copied byte for
//! byte, and parsing only serves to find where each message ends. That keeps
//! SigV4 signatures (which cover `Host` and other headers) valid upstream.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Big enough that a multi-hundred-MiB transfer costs few syscalls.
const BUF_SIZE: usize = 256 * 1024;
/// Heads above this are treated as malformed, so a peer cannot grow memory
/// unboundedly by never sending CRLF CRLF.
const MAX_HEAD: usize = 64 * 1024;
/// Chunk-size and trailer lines are tiny in practice; the cap only guards
/// against garbage.
const MAX_LINE: usize = 16 * 1024;

pub(crate) fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what.to_string())
}

/// Read half of a socket plus the bytes read from it but not yet consumed.
pub(crate) struct WireReader {
    rd: OwnedReadHalf,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl WireReader {
    pub(crate) fn new(rd: OwnedReadHalf) -> Self {
        WireReader {
            rd,
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            // Rewinding here means the body path almost never needs to
            // compact: every relay step drains the buffer completely.
            self.start = 0;
            self.end = 0;
        }
    }

    /// One read from the socket into the free tail of the buffer; `Ok(0)`
    /// means EOF. A single `read` call keeps this cancel-safe.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(invalid("message line exceeds the read buffer"));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.rd.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    async fn fill_at_least(&mut self, n: usize) -> io::Result<()> {
        while self.buffered().len() < n {
            if self.fill().await? == 0 {
                return Err(eof("connection closed inside a message"));
            }
        }
        Ok(())
    }

    /// Reads one message head including its terminating blank line.
    ///
    /// `Ok(None)` means the peer closed cleanly between messages, which is
    /// how a keep-alive connection normally ends.
    pub(crate) async fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut scanned = 0;
        loop {
            // RFC 9112 §2.2: tolerate stray CRLFs before a message.
            while self.buffered().starts_with(b"\r\n") {
                self.consume(2);
                scanned = 0;
            }
            let data = self.buffered();
            if let Some(pos) = find_head_end(data, scanned) {
                let head = data[..pos].to_vec();
                self.consume(pos);
                return Ok(Some(head));
            }
            if data.len() > MAX_HEAD {
                return Err(invalid("message head too large"));
            }
            // Re-scan the last 3 bytes: the terminator may straddle reads.
            scanned = data.len().saturating_sub(3);
            let was_empty = data.is_empty();
            if self.fill().await? == 0 {
                return if was_empty {
                    Ok(None)
                } else {
                    Err(eof("connection closed inside a message head"))
                };
            }
        }
    }

    /// Length of the next line (including its `\n`) once it is buffered.
    async fn line_len(&mut self) -> io::Result<usize> {
        let mut scanned = 0;
        loop {
            let data = self.buffered();
            if let Some(p) = data[scanned..].iter().position(|&b| b == b'\n') {
                return Ok(scanned + p + 1);
            }
            if data.len() > MAX_LINE {
                return Err(invalid("chunk line too long"));
            }
            scanned = data.len();
            if self.fill().await? == 0 {
                return Err(eof("connection closed inside chunked framing"));
            }
        }
    }

    /// Whether a pooled upstream connection can carry another request: no
    /// stray bytes and no pending EOF/error. Detecting an idle-closed
    /// upstream up front matters because a request with a streamed body
    /// cannot be replayed on a fresh connection afterwards.
    pub(crate) fn looks_reusable(&self) -> bool {
        if !self.buffered().is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.rd.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Offset just past the first CRLF CRLF at or after `from`.
fn find_head_end(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| from + p + 4)
}

/// Header fields in arrival order; names compare case-insensitively.
#[derive(Debug, Default)]
pub(crate) struct Headers(Vec<(String, String)>);

impl Headers {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values(name)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).any(|t| t.eq_ignore_ascii_case(token))
    }

    /// `Err` when several Content-Length values disagree or one is not a
    /// number: the message boundary is then unknowable.
    fn content_length(&self) -> io::Result<Option<u64>> {
        let mut found: Option<u64> = None;
        for v in self.tokens("content-length") {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("bad Content-Length"));
            }
            let n: u64 = v.parse().map_err(|_| invalid("bad Content-Length"))?;
            if found.is_some_and(|f| f != n) {
                return Err(invalid("conflicting Content-Length"));
            }
            found = Some(n);
        }
        Ok(found)
    }

    /// `None` without Transfer-Encoding; otherwise whether chunked is the
    /// final coding, which is what decides the framing.
    fn chunked(&self) -> Option<bool> {
        self.values("transfer-encoding").next()?;
        let last = self.tokens("transfer-encoding").last();
        Some(last.is_some_and(|t| t.eq_ignore_ascii_case("chunked")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    Http10,
    Http11,
}

fn parse_version(s: &str) -> io::Result<Version> {
    match s {
        "HTTP/1.1" => Ok(Version::Http11),
        "HTTP/1.0" => Ok(Version::Http10),
        _ => Err(invalid("unsupported HTTP version")),
    }
}

/// Whether the connection must end after this message (RFC 9112 §9.3).
fn wants_close(version: Version, headers: &Headers) -> bool {
    match version {
        Version::Http11 => headers.has_token("connection", "close"),
        Version::Http10 => !headers.has_token("connection", "keep-alive"),
    }
}

#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) version: Version,
    pub(crate) headers: Headers,
}

impl RequestHead {
    pub(crate) fn wants_close(&self) -> bool {
        wants_close(self.version, &self.headers)
    }

    pub(crate) fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    pub(crate) fn expects_continue(&self) -> bool {
        self.headers.has_token("expect", "100-continue")
    }
}

#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) version: Version,
    pub(crate) headers: Headers,
}

impl ResponseHead {
    pub(crate) fn wants_close(&self) -> bool {
        wants_close(self.version, &self.headers)
    }
}

/// Splits a raw head into its start line and header fields. Header bytes
/// outside ASCII are kept lossily: only framing headers are ever inspected,
/// and the raw bytes are what gets forwarded.
fn split_head(raw: &[u8]) -> io::Result<(String, Headers)> {
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            return Err(invalid("obsolete header line folding"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("header without colon"))?;
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(invalid("bad header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok((start, Headers(headers)))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(crate) fn parse_request(raw: &[u8]) -> io::Result<RequestHead> {
    let (start, headers) = split_head(raw)?;
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("bad request line"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) || target.is_empty() {
        return Err(invalid("bad request line"));
    }
    Ok(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        version: parse_version(version)?,
        headers,
    })
}

pub(crate) fn parse_response(raw: &[u8]) -> io::Result<ResponseHead> {
    let (start, headers) = split_head(raw)?;
    let mut parts = start.splitn(3, ' ');
    let version = parse_version(parts.next().unwrap_or_default())?;
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("bad status code"));
    }
    let status = code.parse().map_err(|_| invalid("bad status code"))?;
    Ok(ResponseHead {
        status,
        version,
        headers,
    })
}

/// How the end of a message body is found on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// aws-chunked uploads need no special case: on the wire they are framed by
/// Content-Length or chunked transfer coding like any other body.
pub(crate) fn request_framing(head: &RequestHead) -> io::Result<Framing> {
    match head.headers.chunked() {
        Some(true) => Ok(Framing::Chunked),
        // A request body cannot be delimited by close (RFC 9112 §6.3).
        Some(false) => Err(invalid("request Transfer-Encoding without chunked")),
        None => Ok(match head.headers.content_length()? {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        }),
    }
}

pub(crate) fn response_framing(request_is_head: bool, head: &ResponseHead) -> io::Result<Framing> {
    if request_is_head || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(Framing::Empty);
    }
    match head.headers.chunked() {
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Ok(Framing::UntilClose),
        None => Ok(match head.headers.content_length()? {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }),
    }
}

/// How a trickled body is written: `free` bytes at full speed, then `step`
/// bytes after each `pause`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    pub(crate) free: u64,
    pub(crate) step: u64,
    pub(crate) pause: Duration,
}

impl Pace {
    async fn write(
        &mut self,
        out: &mut OwnedWriteHalf,
        data: &[u8],
        counter: Option<&AtomicU64>,
    ) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let n = if self.free > 0 {
                let n = usize::try_from(self.free)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                self.free -= n as u64;
                n
            } else {
                tokio::time::sleep(self.pause).await;
                usize::try_from(self.step)
                    .unwrap_or(usize::MAX)
                    .min(rest.len())
            };
            out.write_all(&rest[..n]).await?;
            if let Some(c) = counter {
                c.fetch_add(n as u64, Ordering::Relaxed);
            }
            rest = &rest[n..];
        }
        Ok(())
    }
}

/// Destination of relayed body bytes, optionally capped at a byte budget
/// (the fault point for CutBody/Stall) or paced (Trickle). Without a writer
/// it discards, which is how bodies of requests answered synthetically are
/// skipped.
pub(crate) struct Sink<'a> {
    out: Option<&'a mut OwnedWriteHalf>,
    budget: Option<u64>,
    pace: Option<Pace>,
    counter: Option<&'a AtomicU64>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(
        out: &'a mut OwnedWriteHalf,
        budget: Option<u64>,
        counter: &'a AtomicU64,
    ) -> Self {
        Sink {
            out: Some(out),
            budget,
            pace: None,
            counter: Some(counter),
        }
    }

    pub(crate) fn paced(mut self, pace: Option<Pace>) -> Self {
        self.pace = pace;
        self
    }

    pub(crate) fn discard() -> Sink<'static> {
        Sink {
            out: None,
            budget: None,
            pace: None,
            counter: None,
        }
    }

    fn exhausted(&self) -> bool {
        self.budget == Some(0)
    }

    /// Writes as much of `data` as the budget allows; `false` once the
    /// budget cut it short.
    async fn send(&mut self, data: &[u8]) -> io::Result<bool> {
        let n = match self.budget {
            Some(b) => usize::try_from(b).unwrap_or(usize::MAX).min(data.len()),
            None => data.len(),
        };
        if n > 0 {
            match (self.out.as_mut(), self.pace.as_mut()) {
                (Some(out), Some(pace)) => pace.write(out, &data[..n], self.counter).await?,
                (out, _) => {
                    if let Some(out) = out {
                        out.write_all(&data[..n]).await?;
                    }
                    if let Some(c) = self.counter {
                        c.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
            if let Some(b) = self.budget.as_mut() {
                *b -= n as u64;
            }
        }
        Ok(n == data.len())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    Complete,
    BudgetSpent,
}

/// Copies one body from `src` to `sink`, leaving `src` positioned at the
/// next message.
pub(crate) async fn relay_body(
    src: &mut WireReader,
    sink: &mut Sink<'_>,
    framing: Framing,
) -> io::Result<BodyEnd> {
    match framing {
        Framing::Empty => Ok(BodyEnd::Complete),
        Framing::Length(n) => relay_exact(src, sink, n).await,
        Framing::Chunked => relay_chunked(src, sink).await,
        Framing::UntilClose => loop {
            if src.buffered().is_empty() {
                if sink.exhausted() {
                    return Ok(BodyEnd::BudgetSpent);
                }
                if src.fill().await? == 0 {
                    return Ok(BodyEnd::Complete);
                }
            }
            let len = src.buffered().len();
            let all = sink.send(src.buffered()).await?;
            src.consume(len);
            if !all {
                return Ok(BodyEnd::BudgetSpent);
            }
        },
    }
}

async fn relay_exact(src: &mut WireReader, sink: &mut Sink<'_>, n: u64) -> io::Result<BodyEnd> {
    let mut remaining = n;
    while remaining > 0 {
        // Cut before waiting for more data, so a fault fires at exactly the
        // budget even when upstream pauses there.
        if sink.exhausted() {
            return Ok(BodyEnd::BudgetSpent);
        }
        if src.buffered().is_empty() && src.fill().await? == 0 {
            return Err(eof("connection closed inside a body"));
        }
        let take = src
            .buffered()
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let all = sink.send(&src.buffered()[..take]).await?;
        src.consume(take);
        remaining -= take as u64;
        if !all {
            return Ok(BodyEnd::BudgetSpent);
        }
    }
    Ok(BodyEnd::Complete)
}

async fn relay_chunked(src: &mut WireReader, sink: &mut Sink<'_>) -> io::Result<BodyEnd> {
    loop {
        if sink.exhausted() {
            return Ok(BodyEnd::BudgetSpent);
        }
        let n = src.line_len().await?;
        let size = parse_chunk_size(&src.buffered()[..n])?;
        let all = sink.send(&src.buffered()[..n]).await?;
        src.consume(n);
        if !all {
            return Ok(BodyEnd::BudgetSpent);
        }
        if size == 0 {
            break;
        }
        if relay_exact(src, sink, size).await? == BodyEnd::BudgetSpent {
            return Ok(BodyEnd::BudgetSpent);
        }
        if sink.exhausted() {
            return Ok(BodyEnd::BudgetSpent);
        }
        src.fill_at_least(2).await?;
        if &src.buffered()[..2] != b"\r\n" {
            return Err(invalid("chunk data not followed by CRLF"));
        }
        let all = sink.send(b"\r\n").await?;
        src.consume(2);
        if !all {
            return Ok(BodyEnd::BudgetSpent);
        }
    }
    // Trailer section, ended by an empty line.
    loop {
        if sink.exhausted() {
            return Ok(BodyEnd::BudgetSpent);
        }
        let n = src.line_len().await?;
        let last = matches!(&src.buffered()[..n], b"\r\n" | b"\n");
        let all = sink.send(&src.buffered()[..n]).await?;
        src.consume(n);
        if !all {
            return Ok(BodyEnd::BudgetSpent);
        }
        if last {
            return Ok(BodyEnd::Complete);
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line
        .split(|&b| b == b';' || b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    // 15 hex digits keep the value well inside u64 with room for arithmetic.
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid("bad chunk size"));
    }
    let mut size = 0u64;
    for &d in digits {
        let v = (d as char).to_digit(16).unwrap_or(0);
        size = (size << 4) | u64::from(v);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_found_across_scan_offsets() {
        let data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        assert_eq!(find_head_end(data, 0), Some(data.len() - 4));
        assert_eq!(find_head_end(data, 22), Some(data.len() - 4));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r", 0), None);
        assert_eq!(find_head_end(b"ab", 5), None);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a\r\n").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"10;chunk-signature=abc\r\n").unwrap(), 16);
        assert_eq!(parse_chunk_size(b"0\r\n").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"FFFF \r\n").unwrap(), 0xffff);
        assert!(parse_chunk_size(b"\r\n").is_err());
        assert!(parse_chunk_size(b"zz\r\n").is_err());
        assert!(parse_chunk_size(b"1234567890abcdef0\r\n").is_err());
    }

    #[test]
    fn request_parsing_and_framing() {
        let req = parse_request(b"PUT /b/k?x=1 HTTP/1.1\r\nHost: h\r\ncontent-length: 12\r\n\r\n")
            .unwrap();
        assert_eq!(req.method, "PUT");
        assert_eq!(req.target, "/b/k?x=1");
        assert_eq!(request_framing(&req).unwrap(), Framing::Length(12));
        assert!(!req.wants_close());

        let req = parse_request(
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap();
        assert_eq!(request_framing(&req).unwrap(), Framing::Chunked);

        let req = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(request_framing(&req).unwrap(), Framing::Empty);
        assert!(req.wants_close());

        let req =
            parse_request(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .unwrap();
        assert!(request_framing(&req).is_err());
        let req = parse_request(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").unwrap();
        assert!(request_framing(&req).is_err());

        assert!(parse_request(b"GET /\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/2\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nA: x\r\n folded\r\n\r\n").is_err());
        assert!(parse_request(b"\xff\xfe / HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn response_framing_rules() {
        let ok = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n").unwrap();
        assert_eq!(response_framing(false, &ok).unwrap(), Framing::Length(7));
        assert_eq!(response_framing(true, &ok).unwrap(), Framing::Empty);

        let nc = parse_response(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n").unwrap();
        assert_eq!(response_framing(false, &nc).unwrap(), Framing::Empty);

        let ch =
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
        assert_eq!(response_framing(false, &ch).unwrap(), Framing::Chunked);

        let raw =
            parse_response(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\n\r\n").unwrap();
        assert_eq!(response_framing(false, &raw).unwrap(), Framing::UntilClose);
        assert!(raw.wants_close());

        assert!(parse_response(b"HTTP/1.1 20 OK\r\n\r\n").is_err());
        assert_eq!(parse_response(b"HTTP/1.1 204\r\n\r\n").unwrap().status, 204);
    }
}
