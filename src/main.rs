//! The `chute` binary: command-line parsing, logging, signals and exit codes.
//! Every piece of real work lives in the library crates under `crates/`.

mod cli;
mod cmd;
mod exit;
mod logging;
mod options;

use std::process::ExitCode;

use clap::Parser;

/// `chute --version`: the package version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CHUTE_GIT_COMMIT"),
    ")"
);

fn main() -> ExitCode {
    tune_allocator();
    let cli = cli::Cli::parse_from(cmd::mount_compat::process_argv(&subcommands()));
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
    // `mount --daemon` re-runs itself with the same flags: the process that
    // serves the mount serves the metrics.
    let metrics_addr = match &cli.command {
        cli::Command::Mount(m) if m.daemon => None,
        _ => cli.global.metrics_addr.clone(),
    };
    let work = async move {
        let _metrics = start_metrics(metrics_addr.as_deref()).await?;
        cmd::run(cli.command).await
    };
    match runtime.block_on(work) {
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

/// The subcommands' names, to tell `chute SOURCE MOUNTPOINT` (the mount
/// helper convention) from a subcommand.
fn subcommands() -> Vec<&'static str> {
    let cmd = <cli::Cli as clap::CommandFactory>::command();
    let names: Vec<String> = cmd
        .get_subcommands()
        .flat_map(|c| {
            std::iter::once(c.get_name().to_owned()).chain(c.get_all_aliases().map(str::to_owned))
        })
        .chain(["help".to_owned()])
        .collect();
    // Parsed once per process; the names live as long as it does.
    names
        .into_iter()
        .map(|n| &*Box::leak(n.into_boxed_str()))
        .collect()
}

/// The metrics listener, when `--metrics-addr` asks for one; it lives as long
/// as the command runs.
async fn start_metrics(addr: Option<&str>) -> anyhow::Result<Option<chute_metrics::Server>> {
    let Some(addr) = addr else { return Ok(None) };
    match chute_metrics::serve(addr, chute_metrics::global()).await {
        Ok(server) => Ok(Some(server)),
        Err(e) => Err(exit::UsageError(format!(
            "--metrics-addr / CHUTE_METRICS_ADDR: {e} (give a free HOST:PORT, e.g. 127.0.0.1:9464)"
        ))
        .into()),
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
