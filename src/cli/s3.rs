//! How to reach the store: the S3 flags every command that reads or writes S3
//! takes (`ls`, `download`, `pipe`, `mount`, `run`), declared once and flattened
//! into each command, and mapped onto [`S3Config`] in one place.

use chute_s3::S3Config;
use clap::Args;

/// The S3 connection flags.
#[derive(Debug, Args, Clone, Default)]
pub struct S3Args {
    /// Custom S3 endpoint (MinIO, Garage, `chute serve`); also AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// AWS region (default: the AWS region chain, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// Path-style addressing (bucket in the path); on by default with a custom endpoint.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub force_path_style: Option<bool>,
}

impl S3Args {
    /// The store configuration these flags ask for; what they leave unset comes
    /// from the AWS chains.
    pub fn s3_config(&self) -> S3Config {
        S3Config {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            force_path_style: self.force_path_style,
            ..S3Config::default()
        }
    }
}
