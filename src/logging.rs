//! Logging setup: `tracing` to stderr, human-readable or JSON, filtered by
//! `--log` / `CHUTE_LOG` (RUST_LOG syntax).
//!
//! Colours only when stderr is a terminal and `NO_COLOR` is unset: container
//! runtimes collect stderr through a pipe, and escape sequences in `docker logs`
//! or a Kubernetes log store are noise that breaks grep and log parsers.
//!
//! Credentials never appear in logs, at any level. Whatever the filter asks for,
//! the S3 server's protocol crates are held to warnings and errors: their debug
//! output and their request-carrying spans print whole requests (the
//! `Authorization` header, presigned query strings) and the signature the server
//! expected. And every line goes out through [`redact_text`], since dependencies
//! (the AWS SDK at debug level) print endpoint URLs as they were given, with any
//! `user:password@` or query string.

use std::io::{self, IsTerminal, Write};

use anyhow::Context;
use chute_plan::redact::redact_text;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::{GlobalArgs, LogFormat};

/// chute's own crates log at info; dependencies only warn, since the AWS SDK and
/// hyper are chatty at info and say nothing a user of chute can act on.
const DEFAULT_FILTER: &str =
    "warn,chute=info,chute_channel=info,chute_s3=info,chute_plan=info,chute_serve=info,\
     chute_download=info,chute_pipe=info,chute_fastfile=info,chute_run=info,chute_metrics=info";

/// Crates whose spans and events below `warn` carry request secrets: s3s logs each
/// request and its signature check, s3s-fs instruments every operation (at `info`)
/// with the request, headers included, as a span field.
const SECRET_BEARING: &[&str] = &["s3s", "s3s_fs"];

pub fn init(args: &GlobalArgs) -> anyhow::Result<()> {
    let spec = args
        .log
        .clone()
        .or_else(|| std::env::var("CHUTE_LOG").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_FILTER.to_owned());
    let filter = EnvFilter::try_new(&spec).with_context(|| {
        format!("--log / CHUTE_LOG '{spec}' is not a valid filter (example: info,chute_s3=debug)")
    })?;
    let no_secrets = filter_fn(|meta: &Metadata<'_>| !bears_secrets(meta.target(), *meta.level()));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| RedactingStderr)
        .with_ansi(colours_wanted())
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    match args.log_format {
        LogFormat::Text => registry.with(fmt.with_filter(no_secrets)).try_init(),
        LogFormat::Json => registry.with(fmt.json().with_filter(no_secrets)).try_init(),
    }
    .context("cannot set up logging")
}

/// Whether log lines may carry ANSI colours: only for a person at a terminal
/// who has not asked for none (the common `NO_COLOR` convention: any non-empty
/// `NO_COLOR`).
fn colours_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    io::stderr().is_terminal() && !no_color
}

/// stderr, with every URL in what is written passed through [`redact_text`]. The
/// formatter writes each event in one call, so a URL is never split across two.
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        io::stderr()
            .lock()
            .write_all(redact_text(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Whether a span or event from `target` at `level` may carry a secret and must
/// not be logged.
fn bears_secrets(target: &str, level: Level) -> bool {
    let crate_name = target.split("::").next().unwrap_or(target);
    SECRET_BEARING.contains(&crate_name) && level > Level::WARN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_protocol_crates_are_held_back() {
        assert!(bears_secrets("s3s::service", Level::DEBUG));
        assert!(bears_secrets("s3s_fs::s3", Level::INFO));
        assert!(bears_secrets("s3s", Level::TRACE));
        assert!(!bears_secrets("s3s::ops", Level::ERROR));
        assert!(!bears_secrets("s3s_fs", Level::WARN));
        assert!(!bears_secrets("s3s_extra", Level::DEBUG));
        assert!(!bears_secrets("chute_serve::server", Level::TRACE));
    }
}
