//! How to reach S3: endpoint, region, addressing style, credentials, TLS roots,
//! timeouts.
//!
//! Values given here win; what is left unset comes from the standard AWS chains
//! (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_CA_BUNDLE`,
//! profiles, web identity, ECS and instance metadata), as every AWS tool does.
//! When no region is found anywhere, each bucket's own region is asked of S3.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// Custom endpoint (MinIO, Garage, `chute serve`). `None` reads
    /// `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, else AWS itself.
    pub endpoint_url: Option<String>,
    /// `None` takes the region chain (environment, profile); when that finds
    /// nothing, each bucket's region is detected with HeadBucket.
    pub region: Option<String>,
    /// `None`: path-style when a custom endpoint is in use (MinIO and most
    /// self-hosted stores need it), virtual-hosted style on AWS.
    pub force_path_style: Option<bool>,
    /// Static credentials; `None` uses the standard credential chain.
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Time allowed to open a connection.
    pub connect_timeout: Option<Duration>,
    /// Time allowed for response headers once a request is sent.
    pub read_timeout: Option<Duration>,
    /// PEM file with the certificate authorities to trust for HTTPS, instead of
    /// the system's (a private CA in front of MinIO or Ceph). `None` reads
    /// `AWS_CA_BUNDLE`. Plain `http://` endpoints are unaffected.
    pub ca_bundle: Option<PathBuf>,
    /// Send every request unsigned (public datasets): no credential chain is
    /// consulted at all.
    pub no_sign_request: bool,
    /// Send `x-amz-request-payer: requester` on listings, HEADs and GETs
    /// (requester-pays buckets).
    pub request_payer: bool,
    /// Named profile of the shared config and credentials files (as `AWS_PROFILE`).
    pub profile: Option<String>,
    /// Read with the temporary credentials of this role, assumed through STS.
    pub assume_role: Option<AssumeRole>,
}

/// A role to assume (STS AssumeRole) with the credentials the chain finds, so
/// that one bucket policy keyed on `aws:PrincipalTag` can separate tenants.
/// The credentials are refreshed before they expire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssumeRole {
    /// `arn:aws:iam::ACCOUNT:role/NAME`.
    pub role_arn: String,
    /// `None`: `chute-<unix time>`.
    pub session_name: Option<String>,
    /// Session tags, in order.
    pub session_tags: Vec<(String, String)>,
    /// STS endpoint; `None` reads `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL`,
    /// else the regional AWS endpoint.
    pub sts_endpoint_url: Option<String>,
    /// Requested session length; `None` leaves it to STS (one hour).
    pub duration: Option<Duration>,
}

impl S3Config {
    /// The endpoint that will be used: the explicit one, else the environment's.
    pub fn effective_endpoint(&self) -> Option<String> {
        self.endpoint_url.clone().or_else(|| {
            ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        })
    }

    /// The CA bundle that will be used: the explicit one, else `AWS_CA_BUNDLE`.
    pub fn effective_ca_bundle(&self) -> Option<PathBuf> {
        self.ca_bundle.clone().or_else(|| {
            std::env::var_os("AWS_CA_BUNDLE")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
    }
}
