//! One module per subcommand.

pub mod completions;
mod demo;
mod download;
mod ls;
pub mod mount;
pub mod mount_compat;
pub mod mount_helper;
pub mod pipe;
mod run;
mod serve;

use std::process::ExitCode;

use crate::cli::Command;

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Ls(args) => ls::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Pipe(args) => pipe::run(args).await,
        Command::Download(args) => download::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Mount(args) => mount::run(args).await,
        Command::Unmount(args) => mount::unmount(args).await,
        Command::MountHelper(args) => mount_helper::run(args).await,
        Command::Completions(args) => completions::completions(args),
        Command::Man => completions::man(),
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default disposition still ends the process.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
