//! Who may do what on `chute serve` beyond its one key pair, for the stores chute
//! must reach: key pairs added while it runs (credentials an STS issued, each with
//! its own expiry), anonymous reads (a public dataset), a bucket region clients must
//! sign for (answered the way AWS answers a client that guessed the region wrong),
//! and a record of every request that got through, so a test can check what a
//! client really sent.
//!
//! All of it is off by default: [`crate::Server::start`] serves exactly one key
//! pair, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, StatusCode};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};

/// What [`crate::Server::start_with`] adds to a plain [`crate::ServeConfig`].
#[derive(Clone, Default, Debug)]
pub struct ServeOptions {
    /// Unsigned requests may list, HEAD and GET (a public bucket); writes still
    /// need a signature.
    pub anonymous_reads: bool,
    /// Every bucket lives in this region: a request signed for another one is
    /// refused with the region in `x-amz-bucket-region` (HeadBucket: 301, others:
    /// 400 AuthorizationHeaderMalformed), as S3 does.
    pub bucket_region: Option<String>,
    /// Key pairs accepted besides the configured one.
    pub extra_keys: Option<KeyRing>,
    /// Where every request that passed authentication is recorded.
    pub request_log: Option<RequestLog>,
}

/// Key pairs accepted besides the configured one; clones share the same set, so
/// a test can add keys while the server runs (as an STS issues them).
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: Arc<Mutex<HashMap<String, IssuedKey>>>,
}

struct IssuedKey {
    secret: String,
    expires: Option<SystemTime>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &lock(&self.keys).len())
            .finish()
    }
}

impl KeyRing {
    #[must_use]
    pub fn new() -> KeyRing {
        KeyRing::default()
    }

    /// Accepts `access_key`/`secret_key` until `expires` (forever with `None`);
    /// after that a request signed with it gets 400 ExpiredToken.
    pub fn insert(&self, access_key: &str, secret_key: &str, expires: Option<SystemTime>) {
        lock(&self.keys).insert(
            access_key.to_owned(),
            IssuedKey {
                secret: secret_key.to_owned(),
                expires,
            },
        );
    }

    fn lookup(&self, access_key: &str) -> Option<(String, Option<SystemTime>)> {
        lock(&self.keys)
            .get(access_key)
            .map(|k| (k.secret.clone(), k.expires))
    }
}

/// One request as the server saw it, once its signature (if any) checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The S3 operation, e.g. `GetObject`, `ListObjectsV2`, `HeadBucket`.
    pub operation: String,
    /// The access key that signed it; `None` for an anonymous request.
    pub access_key: Option<String>,
    /// `x-amz-security-token`, sent with temporary credentials.
    pub security_token: Option<String>,
    /// `x-amz-request-payer`.
    pub request_payer: Option<String>,
    /// The region of the signature's credential scope.
    pub signed_region: Option<String>,
}

/// The requests a server has seen, in arrival order; clones share the record.
#[derive(Clone, Default, Debug)]
pub struct RequestLog {
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl RequestLog {
    #[must_use]
    pub fn new() -> RequestLog {
        RequestLog::default()
    }

    /// A copy of what has been recorded so far.
    #[must_use]
    pub fn snapshot(&self) -> Vec<SeenRequest> {
        lock(&self.seen).clone()
    }

    fn push(&self, req: SeenRequest) {
        lock(&self.seen).push(req);
    }
}

/// A poisoned lock only means a test thread panicked while holding it; the data
/// (a map, a list) is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The configured key pair, then the key ring.
pub(crate) struct Auth {
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) extra: Option<KeyRing>,
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.access_key {
            return Ok(SecretKey::from(self.secret_key.as_str()));
        }
        match self.extra.as_ref().and_then(|ring| ring.lookup(access_key)) {
            Some((_, Some(expires))) if expires <= SystemTime::now() => {
                let mut err = S3Error::with_message(
                    S3ErrorCode::ExpiredToken,
                    "The provided token has expired.",
                );
                err.set_status_code(StatusCode::BAD_REQUEST);
                Err(err)
            }
            Some((secret, _)) => Ok(SecretKey::from(secret)),
            None => Err(s3_error!(InvalidAccessKeyId, "unknown access key")),
        }
    }
}

/// Anonymous reads, the bucket region and the request log.
pub(crate) struct Access {
    pub(crate) opts: ServeOptions,
}

const READ_OPERATIONS: &[&str] = &[
    "GetObject",
    "HeadObject",
    "ListObjects",
    "ListObjectsV2",
    "HeadBucket",
    "GetBucketLocation",
];

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let operation = cx.s3_op().name().to_owned();
        let headers = cx.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let signed_region = signed_region(header("authorization").as_deref(), cx.uri().query());
        let access_key = cx.credentials().map(|c| c.access_key.clone());
        if let Some(log) = &self.opts.request_log {
            log.push(SeenRequest {
                operation: operation.clone(),
                access_key: access_key.clone(),
                security_token: header("x-amz-security-token"),
                request_payer: header("x-amz-request-payer"),
                signed_region: signed_region.clone(),
            });
        }
        if let (Some(want), Some(got)) = (&self.opts.bucket_region, &signed_region) {
            if want != got {
                return Err(wrong_region(&operation, got, want));
            }
        }
        match access_key {
            Some(_) => Ok(()),
            None if self.opts.anonymous_reads && READ_OPERATIONS.contains(&operation.as_str()) => {
                Ok(())
            }
            None => Err(s3_error!(AccessDenied, "Signature is required")),
        }
    }
}

/// S3's answer to a request signed for the wrong region.
fn wrong_region(operation: &str, got: &str, want: &str) -> S3Error {
    let mut err = if operation == "HeadBucket" {
        let mut e = S3Error::with_message(
            S3ErrorCode::PermanentRedirect,
            format!("the bucket is in region '{want}'"),
        );
        e.set_status_code(StatusCode::MOVED_PERMANENTLY);
        e
    } else {
        S3Error::with_message(
            S3ErrorCode::AuthorizationHeaderMalformed,
            format!("the authorization header is malformed; the region '{got}' is wrong; expecting '{want}'"),
        )
    };
    if let Ok(v) = HeaderValue::from_str(want) {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-bucket-region", v);
        err.set_headers(headers);
    }
    err
}

/// The region in a SigV4 credential scope (`AK/DATE/REGION/s3/aws4_request`),
/// from the Authorization header or a presigned URL's `X-Amz-Credential`.
fn signed_region(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    let scope = authorization
        .and_then(|a| a.split("Credential=").nth(1))
        .map(|s| s.split([',', ' ']).next().unwrap_or(s).to_owned())
        .or_else(|| {
            query?.split('&').find_map(|kv| {
                kv.strip_prefix("X-Amz-Credential=")
                    .map(|v| v.replace("%2F", "/").replace("%2f", "/"))
            })
        })?;
    scope.split('/').nth(2).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_from_scope() {
        let auth = "AWS4-HMAC-SHA256 Credential=AK/20261201/eu-west-3/s3/aws4_request, SignedHeaders=host, Signature=00";
        assert_eq!(
            signed_region(Some(auth), None).as_deref(),
            Some("eu-west-3")
        );
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20261201%2Fus-west-2%2Fs3%2Faws4_request";
        assert_eq!(signed_region(None, Some(q)).as_deref(), Some("us-west-2"));
        assert_eq!(signed_region(None, None), None);
    }
}
