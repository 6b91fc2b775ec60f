//! How to reach the store: the S3 flags every command that reads or writes S3
//! takes (`ls`, `download`, `pipe`, `mount`, `run`), declared once and flattened
//! into each command, and mapped onto [`S3Config`] in one place.
//!
//! Flags that `chute run` needs inside a container (whose `ENTRYPOINT` leaves no
//! room for flags) can also be set from `CHUTE_*` variables; the AWS variables
//! (`AWS_CA_BUNDLE`, `AWS_PROFILE`, `AWS_ENDPOINT_URL_STS`, ...) work as usual.

use std::path::PathBuf;

use chute_s3::{AssumeRole, S3Config};
use clap::Args;

/// The S3 connection flags.
#[derive(Debug, Args, Clone, Default)]
pub struct S3Args {
    /// Custom S3 endpoint (MinIO, Garage, `chute serve`); also AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// AWS region (default: the AWS region chain; when that has none, the bucket's own region).
    #[arg(long)]
    pub region: Option<String>,
    /// Path-style addressing (bucket in the path); on by default with a custom endpoint.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub force_path_style: Option<bool>,
    /// PEM file of the certificate authorities to trust for HTTPS (a private CA);
    /// also AWS_CA_BUNDLE.
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Send requests unsigned, without looking for credentials (public buckets).
    #[arg(long, env = "CHUTE_NO_SIGN_REQUEST", conflicts_with = "role_arn")]
    pub no_sign_request: bool,
    /// Pay for requests to a requester-pays bucket (the only value is `requester`).
    #[arg(long, value_name = "requester", env = "CHUTE_REQUEST_PAYER",
          value_parser = ["requester"])]
    pub request_payer: Option<String>,
    /// Named profile from the AWS config and credentials files (as AWS_PROFILE).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Read with the temporary credentials of this role (STS AssumeRole with the
    /// credentials found as usual), refreshed before they expire.
    #[arg(long, value_name = "ARN", env = "CHUTE_ROLE_ARN")]
    pub role_arn: Option<String>,
    /// A session tag for --role-arn, KEY=VALUE (repeatable; in CHUTE_SESSION_TAGS,
    /// comma-separated).
    #[arg(long = "session-tag", value_name = "KEY=VALUE", env = "CHUTE_SESSION_TAGS",
          value_delimiter = ',', requires = "role_arn",
          value_parser = chute_s3::parse_session_tag)]
    pub session_tags: Vec<(String, String)>,
    /// The session name for --role-arn (default chute-<unix time>).
    #[arg(long, value_name = "NAME", requires = "role_arn")]
    pub role_session_name: Option<String>,
    /// STS endpoint for --role-arn; also AWS_ENDPOINT_URL_STS.
    #[arg(long, value_name = "URL", requires = "role_arn")]
    pub sts_endpoint_url: Option<String>,
}

impl S3Args {
    /// The store configuration these flags ask for; what they leave unset comes
    /// from the AWS chains.
    pub fn s3_config(&self) -> S3Config {
        S3Config {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            force_path_style: self.force_path_style,
            ca_bundle: self.ca_bundle.clone(),
            no_sign_request: self.no_sign_request,
            request_payer: self.request_payer.is_some(),
            profile: self.profile.clone(),
            assume_role: self.role_arn.as_ref().map(|arn| AssumeRole {
                role_arn: arn.clone(),
                session_name: self.role_session_name.clone(),
                session_tags: self.session_tags.clone(),
                sts_endpoint_url: self.sts_endpoint_url.clone(),
                duration: None,
            }),
            ..S3Config::default()
        }
    }
}
