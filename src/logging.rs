//! Logging setup: `tracing` to stderr, human-readable or JSON, filtered by
//! `--log` / `CHUTE_LOG` (RUST_LOG syntax).

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, LogFormat};

/// chute's own crates log at info; dependencies only warn, since the AWS SDK and
/// hyper are chatty at info and say nothing a user of chute can act on.
const DEFAULT_FILTER: &str =
    "warn,chute=info,chute_channel=info,chute_s3=info,chute_plan=info,chute_serve=info,\
     chute_download=info,chute_pipe=info,chute_fastfile=info,chute_run=info";

pub fn init(args: &GlobalArgs) -> anyhow::Result<()> {
    let spec = args
        .log
        .clone()
        .or_else(|| std::env::var("CHUTE_LOG").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_FILTER.to_owned());
    let filter = EnvFilter::try_new(&spec).with_context(|| {
        format!("--log / CHUTE_LOG '{spec}' is not a valid filter (example: info,chute_s3=debug)")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
