//! `chute serve`: a local directory as an S3 endpoint, until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use chute_serve::{ServeConfig, Server};

use crate::cli::ServeArgs;

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let server = Server::start(ServeConfig {
        root: args.root.clone(),
        addr: args.addr,
        access_key: args.access_key,
        secret_key: args.secret_key,
    })
    .await
    .map_err(|e| crate::exit::UsageError(e.to_string()))
    .with_context(|| format!("cannot serve {}", args.root.display()))?;
    // Scripts and tests read the address from this line (the port may be 0 → picked).
    println!(
        "chute serve: {} at {}",
        args.root.display(),
        server.endpoint_url()
    );
    super::shutdown_signal().await;
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
