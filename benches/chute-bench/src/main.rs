//! `chute-bench`: measurements of chute against the tools a user would otherwise
//! run and against raw parallel GETs, in the same run and against the same
//! endpoint, so the ratio means something on whatever machine it runs on.
//!
//! The product is measured as users run it: the benches start the `chute`
//! binary (`--chute PATH`, default `target/release/chute`) as child processes.
//! `doc/BENCHMARKING.md` says how to run each one and holds the current figures.

mod download;
mod fastfile;
mod pipe;
mod product;
mod report;
mod shuffle;
mod target;
mod upload;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chute-bench",
    about = "chute's benchmarks (not part of the product binary)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Upload the standard datasets to the target bucket.
    Prepare(target::BenchTarget),
    /// Only the raw parallel-GET baseline.
    Baseline(target::BenchTarget),
    /// Pipe mode: a reader draining the FIFO, and time to first byte.
    Pipe(pipe::PipeBench),
    /// File mode: chute download vs s5cmd vs `aws s3 sync`, into the same disk.
    Download(target::BenchTarget),
    /// FastFile mode: chute mount read by 1 and 8 readers, in listing order, at
    /// random; time to first byte; find / ls -lR over 100,000 objects.
    Fastfile(target::BenchTarget),
    /// A data loader's epochs: worker processes reading every file whole in a
    /// seeded shuffled order, through FastFile, through File mode, and as raw GETs.
    Shuffle(shuffle::ShuffleArgs),
    /// One reader process of `shuffle` (started by it).
    #[command(hide = true)]
    ShuffleWorker(shuffle::WorkerArgs),
    /// A model directory uploaded as model.tar.gz: chute vs `tar -czf - | aws s3 cp -`.
    Upload(upload::UploadArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHUTE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Cmd::ShuffleWorker(args) = cli.cmd {
        // No runtime: a worker is a plain blocking reader, as a data loader's are.
        return shuffle::worker(&args);
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::Prepare(t) => target::prepare(&t).await,
            Cmd::Baseline(t) => target::run_baseline(&t).await,
            Cmd::Pipe(args) => pipe::run(&args).await,
            Cmd::Download(t) => download::run(&t).await,
            Cmd::Fastfile(t) => fastfile::run(&t).await,
            Cmd::Shuffle(args) => shuffle::run(&args).await,
            Cmd::ShuffleWorker(_) => unreachable!("handled above"),
            Cmd::Upload(args) => upload::run(args).await,
        }
    })
}
