//! The `chute` binary: command-line parsing, logging, signals and exit codes.
//! Every piece of real work lives in the library crates under `crates/`.

mod cli;
mod cmd;
mod exit;
mod logging;
mod options;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if matches!(cli.command, cli::Command::Demo(_)) {
        // The demo never talks to AWS: keep the SDK from probing the instance
        // metadata address. Set before any thread exists.
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    if let Err(e) = logging::init(&cli.global) {
        eprintln!("chute: {e:#}");
        return ExitCode::from(exit::USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chute: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            let code = exit::code_for(&e);
            eprintln!("chute: error: {}", exit::render(&e));
            ExitCode::from(code)
        }
    }
}
