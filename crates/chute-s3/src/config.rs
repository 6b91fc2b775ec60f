//! How to reach S3: endpoint, region, addressing style, credentials, timeouts.
//!
//! Values given here win; what is left unset comes from the standard AWS chains
//! (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, `AWS_REGION`, profiles, web
//! identity, ECS and instance metadata), as every AWS tool does.

use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// Custom endpoint (MinIO, Garage, `chute serve`). `None` reads
    /// `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, else AWS itself.
    pub endpoint_url: Option<String>,
    /// `None` takes the region chain, falling back to `us-east-1`.
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
}
