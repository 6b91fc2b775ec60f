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
    tune_allocator();
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
            eprintln!(
                "chute: error: {}",
                chute_plan::redact::redact_text(&exit::render(&e))
            );
            ExitCode::from(code)
        }
    }
}

/// Every mode holds data in flight in buffers of 128 KiB to 8 MiB that come
/// and go thousands of times a second. glibc serves blocks that large with
/// fresh `mmap`s and gives them back on free, so each would be faulted in and
/// zeroed anew: measured, that was a quarter of the CPU a FastFile mount spent
/// per byte, and it cost the first Pipe epoch 15% of its throughput. Keeping
/// them in the heap (up to 32 MiB, glibc's ceiling) and not trimming it lets
/// freed buffers be reused while still mapped; memory stays bounded by each
/// mode's own budget.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
