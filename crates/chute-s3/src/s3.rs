//! [`S3Store`]: the [`ObjectStore`] backend that speaks S3 through `aws-sdk-s3`.
//!
//! The SDK's own retries are switched off: [`crate::Client`] retries every kind of
//! failure (including bodies cut short, which the SDK cannot resume) under one
//! policy, and here each SDK error is sorted into a [`StoreError`] that says
//! whether a retry can help.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::types::RequestPayer;
use futures::StreamExt;

use crate::tls::CaBundle;
use crate::{GetResponse, ListPage, ObjectMeta, ObjectStore, S3Config, StoreError};

pub struct S3Store {
    /// Signs for the configured region (or us-east-1 when none was found).
    client: aws_sdk_s3::Client,
    endpoint: String,
    request_payer: Option<RequestPayer>,
    /// Set when no region was configured anywhere: each bucket is then read
    /// with a client for the bucket's own region, asked of S3 once.
    regions: Option<BucketRegions>,
}

struct BucketRegions {
    conf: aws_sdk_s3::Config,
    clients: Mutex<HashMap<String, aws_sdk_s3::Client>>,
}

/// The region S3 assumes when none is known (its global endpoint's).
const DEFAULT_REGION: &str = "us-east-1";

impl S3Store {
    pub async fn new(cfg: &S3Config) -> Result<S3Store, StoreError> {
        let endpoint = cfg.effective_endpoint();
        if let Some(url) = &endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(StoreError::Config(format!(
                    "endpoint URL '{}' must start with http:// or https:// (for example http://127.0.0.1:9000)", chute_plan::redact::redact_uri(url)
                )));
            }
        }
        if let Some(role) = &cfg.assume_role {
            if cfg.no_sign_request {
                return Err(StoreError::Config(
                    "--no-sign-request sends no credentials, so it cannot assume a role (--role-arn): drop one of them".into(),
                ));
            }
            crate::sts::validate(role)?;
        }
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(cfg.connect_timeout.unwrap_or(Duration::from_secs(5)))
            .read_timeout(cfg.read_timeout.unwrap_or(Duration::from_secs(30)))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(profile) = &cfg.profile {
            loader = loader.profile_name(profile.clone());
        }
        if let Some(region) = &cfg.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(path) = cfg.effective_ca_bundle() {
            // The loader's client serves STS and the other credential providers too.
            loader = loader.http_client(CaBundle::load(&path)?.http_client()?);
        }
        if cfg.no_sign_request {
            loader = loader.no_credentials();
        } else if let (Some(ak), Some(sk)) = (&cfg.access_key, &cfg.secret_key) {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                ak.clone(),
                sk.clone(),
                None,
                None,
                "chute-static",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared);
        // On the S3 client only: STS (for --role-arn) has its own endpoint.
        if let Some(url) = &endpoint {
            builder = builder.endpoint_url(url.clone());
        }
        if let Some(role) = &cfg.assume_role {
            builder = builder.credentials_provider(crate::sts::provider(role, &shared).await);
        }
        let detect_regions = shared.region().is_none();
        if detect_regions {
            builder = builder.region(aws_config::Region::new(DEFAULT_REGION));
        }
        let path_style = cfg.force_path_style.unwrap_or(endpoint.is_some());
        builder = builder.force_path_style(path_style);
        let conf = builder.build();
        let client = aws_sdk_s3::Client::from_conf(conf.clone());
        Ok(S3Store {
            client,
            endpoint: endpoint.map_or_else(
                || "AWS S3".to_owned(),
                |e| chute_plan::redact::redact_uri(&e).into_owned(),
            ),
            request_payer: cfg.request_payer.then_some(RequestPayer::Requester),
            regions: detect_regions.then(|| BucketRegions {
                conf,
                clients: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The client for `bucket` (reads and writes): the configured one, or one for the
    /// bucket's own region when no region was configured.
    pub(crate) async fn client_for(&self, bucket: &str) -> Result<aws_sdk_s3::Client, StoreError> {
        let Some(regions) = &self.regions else {
            return Ok(self.client.clone());
        };
        if bucket.is_empty() {
            return Ok(self.client.clone());
        }
        if let Some(c) = lock(&regions.clients).get(bucket) {
            return Ok(c.clone());
        }
        let client = match self.bucket_region(bucket).await? {
            Some(region) if region != DEFAULT_REGION => {
                tracing::info!(bucket, region, "using the bucket's region");
                let conf = regions
                    .conf
                    .to_builder()
                    .region(aws_config::Region::new(region))
                    .build();
                aws_sdk_s3::Client::from_conf(conf)
            }
            _ => self.client.clone(),
        };
        lock(&regions.clients).insert(bucket.to_owned(), client.clone());
        Ok(client)
    }

    /// The bucket's region as S3 states it in `x-amz-bucket-region`: on
    /// HeadBucket's answer, and also on the redirect or error S3 answers a
    /// request signed for another region with. `None` when S3 does not say
    /// (some stores never do), which leaves the default region.
    async fn bucket_region(&self, bucket: &str) -> Result<Option<String>, StoreError> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(out) => Ok(out.bucket_region().map(str::to_owned)),
            Err(SdkError::ServiceError(se)) => {
                let region = se
                    .raw()
                    .headers()
                    .get("x-amz-bucket-region")
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned);
                match (region, se.raw().status().as_u16()) {
                    (Some(r), _) => Ok(Some(r)),
                    (None, 404) => Err(StoreError::NoSuchBucket {
                        bucket: bucket.to_owned(),
                    }),
                    // Denied HeadBucket is common where GETs are allowed; the
                    // requests themselves will say what is wrong, if anything.
                    (None, _) => Ok(None),
                }
            }
            Err(e) => Err(self.classify(e, bucket, "")),
        }
    }

    /// Sorts an SDK error into a [`StoreError`] for the object it concerns.
    pub(crate) fn classify<E>(
        &self,
        err: SdkError<E, HttpResponse>,
        bucket: &str,
        key: &str,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + RequestId + std::error::Error + Send + Sync + 'static,
    {
        let chain = describe_chain(&err);
        let innermost = innermost(&err);
        match err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("").to_owned();
                let message = se.err().message().unwrap_or("").to_owned();
                let rid = se.err().request_id().map(|r| format!(", request id {r}"));
                self.classify_status(bucket, key, status, &code, &message, rid.as_deref())
            }
            SdkError::TimeoutError(_) => {
                StoreError::transient(bucket, key, "timed out waiting for the response")
            }
            SdkError::DispatchFailure(df) => {
                let detail = chain;
                if crate::tls::untrusted_certificate(&detail) {
                    StoreError::other(
                        bucket,
                        key,
                        format!(
                            "the TLS certificate of {} is not trusted ({innermost}): if the endpoint uses a private CA, \
                             pass the CA's certificate with --ca-bundle FILE or AWS_CA_BUNDLE",
                            self.endpoint
                        ),
                    )
                } else if df.is_io() && connect_refused(&detail) {
                    StoreError::Unreachable {
                        endpoint: self.endpoint.clone(),
                        detail: innermost,
                    }
                } else if df.is_user() || detail.contains("credentials") {
                    if detail.contains("credentials") {
                        StoreError::NoCredentials { detail }
                    } else {
                        StoreError::other(bucket, key, detail)
                    }
                } else if df.is_io() || df.is_timeout() || df.is_other() {
                    if detail.contains("dns error") || detail.contains("failed to lookup") {
                        StoreError::Unreachable {
                            endpoint: self.endpoint.clone(),
                            detail,
                        }
                    } else {
                        StoreError::transient(bucket, key, detail)
                    }
                } else {
                    StoreError::transient(bucket, key, detail)
                }
            }
            SdkError::ResponseError(_) => StoreError::transient(bucket, key, chain),
            SdkError::ConstructionFailure(_) => {
                let detail = chain;
                if detail.contains("credentials") {
                    StoreError::NoCredentials { detail }
                } else {
                    StoreError::other(bucket, key, detail)
                }
            }
            _ => StoreError::other(bucket, key, chain),
        }
    }

    fn classify_status(
        &self,
        bucket: &str,
        key: &str,
        status: u16,
        code: &str,
        message: &str,
        request_id: Option<&str>,
    ) -> StoreError {
        let detail = || {
            let mut d = format!("HTTP {status}");
            if !code.is_empty() {
                d.push_str(&format!(" {code}"));
            }
            if !message.is_empty() {
                d.push_str(&format!(": {message}"));
            }
            if let Some(r) = request_id {
                d.push_str(r);
            }
            d
        };
        match (status, code) {
            (_, "NoSuchBucket") => StoreError::NoSuchBucket {
                bucket: bucket.to_owned(),
            },
            (_, "NoSuchKey") => StoreError::NoSuchKey {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            },
            // HEAD responses carry no body, so a 404 has no code to tell which.
            (404, _) if key.is_empty() => StoreError::NoSuchBucket {
                bucket: bucket.to_owned(),
            },
            (404, _) => StoreError::NoSuchKey {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            },
            (401 | 403, _) => StoreError::AccessDenied {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                detail: detail(),
            },
            (412, _) => StoreError::Changed {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                expected: "the listed version".to_owned(),
                found: "a different version (412 Precondition Failed)".to_owned(),
            },
            (416, _) => StoreError::InvalidRange {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                start: 0,
                end: 0,
                size: None,
            },
            (408 | 429 | 500..=599, _) => StoreError::transient(bucket, key, detail()),
            (_, "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable") => {
                StoreError::transient(bucket, key, detail())
            }
            _ => StoreError::other(bucket, key, detail()),
        }
    }
}

/// A poisoned lock only means another task panicked while holding it; the map
/// of clients is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn describe_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}

/// The message of the deepest cause ("Connection refused (os error 111)"),
/// which is what a user can act on.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

fn connect_refused(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("connection refused") || d.contains("connect error") && d.contains("refused")
}

fn strip_quotes_none_if_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_owned)
}

fn size_of(size: Option<i64>) -> u64 {
    size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0)
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let (asked, keep) = crate::express::listing_prefix(bucket, prefix);
        let out = self
            .client_for(bucket)
            .await?
            .list_objects_v2()
            .bucket(bucket)
            .prefix(asked)
            .set_delimiter(delimiter.map(str::to_owned))
            .set_continuation_token(token)
            .set_request_payer(self.request_payer.clone())
            .send()
            .await
            .map_err(|e| self.classify(e, bucket, prefix))?;
        let objects = out
            .contents()
            .iter()
            .filter(|o| keep.is_none_or(|k| o.key().is_some_and(|key| key.starts_with(k))))
            .filter_map(|o| {
                Some(ObjectMeta {
                    key: o.key()?.to_owned(),
                    size: size_of(o.size()),
                    etag: strip_quotes_none_if_empty(o.e_tag()),
                })
            })
            .collect();
        let common_prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(str::to_owned))
            .filter(|p| keep.is_none_or(|k| p.starts_with(k)))
            .collect();
        let next_token = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            common_prefixes,
            next_token,
        })
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        let out = self
            .client_for(bucket)
            .await?
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_request_payer(self.request_payer.clone())
            .send()
            .await
            .map_err(|e| self.classify(e, bucket, key))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: size_of(out.content_length()),
            etag: strip_quotes_none_if_empty(out.e_tag()),
        })
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<GetResponse, StoreError> {
        if range.start >= range.end {
            return Err(StoreError::InvalidRange {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                start: range.start,
                end: range.end,
                size: None,
            });
        }
        let out = self
            .client_for(bucket)
            .await?
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_request_payer(self.request_payer.clone())
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_if_match(if_match.map(str::to_owned))
            .send()
            .await
            .map_err(|e| match self.classify(e, bucket, key) {
                StoreError::InvalidRange { bucket, key, .. } => StoreError::InvalidRange {
                    bucket,
                    key,
                    start: range.start,
                    end: range.end,
                    size: None,
                },
                StoreError::Changed {
                    bucket, key, found, ..
                } => StoreError::Changed {
                    bucket,
                    key,
                    expected: if_match.unwrap_or_default().to_owned(),
                    found,
                },
                other => other,
            })?;
        let etag = strip_quotes_none_if_empty(out.e_tag());
        let content_length = size_of(out.content_length());
        let (b, k) = (bucket.to_owned(), key.to_owned());
        let body = futures::stream::unfold(Some(out.body), move |body| {
            let (b, k) = (b.clone(), k.clone());
            async move {
                let mut body = body?;
                match body.next().await {
                    None => None,
                    Some(Ok(bytes)) => Some((Ok(bytes), Some(body))),
                    Some(Err(e)) => Some((
                        Err(StoreError::transient(
                            &b,
                            &k,
                            format!("connection dropped mid-body: {}", describe_chain(&e)),
                        )),
                        None,
                    )),
                }
            }
        })
        .boxed();
        Ok(GetResponse {
            etag,
            content_length,
            body,
        })
    }

    fn describe(&self) -> String {
        format!("s3 {}", self.endpoint)
    }
}
