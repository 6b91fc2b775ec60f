//! A small STS-compatible endpoint on loopback: answers AssumeRole with
//! short-lived credentials and records every call (role, session name, session
//! tags, the access key that signed it), so a test can check what a client asked
//! for and which credentials it then used.
//!
//! It speaks just enough HTTP/1.1 for the SDK's STS client (one request per
//! connection) and checks no signature: the S3 side is where credentials are
//! enforced. Each issued key pair is handed to a callback, which typically adds
//! it to the test S3 server's accepted keys with its expiry.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Credentials the server issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expires: SystemTime,
}

/// One AssumeRole call as received.
#[derive(Debug, Clone)]
pub struct AssumeRoleCall {
    pub role_arn: String,
    pub session_name: String,
    /// `Tags.member.N.Key` / `.Value`, in N order.
    pub tags: Vec<(String, String)>,
    /// The access key in the request's SigV4 credential scope.
    pub signed_by: Option<String>,
    pub issued: IssuedCredentials,
}

type OnIssue = dyn Fn(&IssuedCredentials) + Send + Sync;

struct State {
    lifetime: Duration,
    calls: Mutex<Vec<AssumeRoleCall>>,
    serial: AtomicU64,
    on_issue: Box<OnIssue>,
}

/// The running endpoint; stops when dropped.
pub struct StsServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl StsServer {
    /// Listens on a free loopback port. Every AssumeRole gets new credentials
    /// valid for `lifetime`, passed to `on_issue` before the answer is sent.
    pub async fn start(
        lifetime: Duration,
        on_issue: impl Fn(&IssuedCredentials) + Send + Sync + 'static,
    ) -> io::Result<StsServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            lifetime,
            calls: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
            on_issue: Box::new(on_issue),
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = serve(socket, &state).await;
                });
            }
        });
        Ok(StsServer { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The AssumeRole calls answered so far.
    #[must_use]
    pub fn calls(&self) -> Vec<AssumeRoleCall> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for StsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut socket: TcpStream, state: &State) -> io::Result<()> {
    let (head, body) = read_request(&mut socket).await?;
    let form = parse_form(&String::from_utf8_lossy(&body));
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if field("Action").as_deref() != Some("AssumeRole") {
        let msg = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAction</Code>\
                   <Message>this test STS answers AssumeRole only</Message></Error></ErrorResponse>";
        return respond(&mut socket, "400 Bad Request", msg).await;
    }
    let mut tags = Vec::new();
    for n in 1.. {
        let Some(key) = field(&format!("Tags.member.{n}.Key")) else {
            break;
        };
        tags.push((
            key,
            field(&format!("Tags.member.{n}.Value")).unwrap_or_default(),
        ));
    }
    let serial = state.serial.fetch_add(1, Ordering::SeqCst) + 1;
    let issued = IssuedCredentials {
        access_key_id: format!("ASIACHUTETEST{serial:07}"),
        secret_access_key: format!("chute-sts-secret-{serial}-{}", std::process::id()),
        session_token: format!("chute-sts-session-token-{serial}"),
        expires: SystemTime::now() + state.lifetime,
    };
    (state.on_issue)(&issued);
    let role_arn = field("RoleArn").unwrap_or_default();
    let call = AssumeRoleCall {
        session_name: field("RoleSessionName").unwrap_or_default(),
        signed_by: signer(&head),
        tags,
        issued: issued.clone(),
        role_arn: role_arn.clone(),
    };
    state
        .calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(call);
    let body = format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleResult><AssumedRoleUser><AssumedRoleId>AROACHUTETEST:{serial}</AssumedRoleId>\
         <Arn>{role_arn}/{serial}</Arn></AssumedRoleUser>\
         <Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
         <SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials>\
         </AssumeRoleResult><ResponseMetadata><RequestId>chute-sts-{serial}</RequestId>\
         </ResponseMetadata></AssumeRoleResponse>",
        issued.access_key_id,
        issued.secret_access_key,
        issued.session_token,
        iso8601(issued.expires),
    );
    respond(&mut socket, "200 OK", &body).await
}

async fn read_request(socket: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 << 10 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no request head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((head, body))
}

async fn respond(socket: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(msg.as_bytes()).await?;
    socket.shutdown().await
}

/// The access key of `Credential=AK/DATE/REGION/sts/aws4_request`.
fn signer(head: &str) -> Option<String> {
    let auth = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("authorization").then_some(v)
    })?;
    let scope = auth.split("Credential=").nth(1)?;
    scope.split('/').next().map(str::to_owned)
}

fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as STS writes expirations.
fn iso8601(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_forms() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            iso8601(UNIX_EPOCH + Duration::from_secs(1_796_083_200 + 3_723)),
            "2026-12-01T01:02:03Z"
        );
        assert_eq!(
            parse_form("Action=AssumeRole&Tags.member.1.Value=a%2Fb+c"),
            vec![
                ("Action".into(), "AssumeRole".into()),
                ("Tags.member.1.Value".into(), "a/b c".into())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
