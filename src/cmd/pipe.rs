//! `chute pipe`: Pipe mode from the command line — the channel resolved as for
//! every command, then streamed into `DIR/NAME_0`, `DIR/NAME_1`, ... until the
//! epochs are done or SIGINT/SIGTERM.
//!
//! When an epoch fails (an object that cannot be read, or is not gzip under
//! `--gunzip`), the error is logged the moment it happens, the reader is given
//! the whole objects before the failed one and then EOF (an object small enough
//! to be withheld — up to half the read-ahead budget — never reaches the reader
//! in part; a larger one may have begun), the FIFOs are removed, and the command
//! exits 3 naming the object (2 for an object that is not gzip). A reader must
//! therefore check the exit status before taking an epoch as complete; `chute
//! run` does that for the training command and holds the FIFO open meanwhile.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use chute_channel::{open, HostChannel};
use chute_pipe::{run_pipe, CancellationToken, PipeOptions, PipeSource, PipeSummary};

use crate::cli::PipeArgs;
use crate::options::channel_request;

pub async fn run(args: PipeArgs) -> anyhow::Result<ExitCode> {
    let request = channel_request(args.source.as_deref(), &args.src, Some(&args.channel))?;
    let channel = open(request).await?;
    chute_metrics::global().add_client(&args.channel, channel.client.stats().clone());
    let shard = channel.shard();
    let HostChannel {
        client,
        plan,
        records,
        ..
    } = channel;
    let pipe_source = match records {
        Some(records) => PipeSource::Augmented { records },
        None => PipeSource::Objects(plan),
    };
    let mut opts = PipeOptions {
        epochs: args.epochs,
        record_wrapper: args.record_wrapper,
        shuffle_seed: args.shuffle_seed,
        gunzip: args.gunzip,
        ..PipeOptions::default()
    };
    if let Some(m) = args.max_memory {
        opts.max_memory = m;
    }
    if let Some(n) = args.concurrency {
        opts.concurrency = n;
    }
    if let Some(m) = args.part_size_mib {
        opts.part_size = m << 20;
    }
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        tracing::info!("stopping: removing the FIFOs");
        on_signal.cancel();
    });
    // Writes to a reader that has left must fail with EPIPE, not kill chute: Rust
    // binaries start with SIGPIPE ignored, which the early-close path relies on.
    let started = Instant::now();
    let summary = run_pipe(
        client,
        pipe_source,
        shard,
        &args.dir,
        &args.channel,
        opts,
        stop,
    )
    .await?;
    eprintln!("{}", summary_line(&summary, started.elapsed()));
    Ok(ExitCode::SUCCESS)
}

fn summary_line(s: &PipeSummary, elapsed: Duration) -> String {
    let bytes: u64 = s.epochs.iter().map(|e| e.bytes).sum();
    let streaming: f64 = s.epochs.iter().map(|e| e.streaming.as_secs_f64()).sum();
    let early = s.epochs.iter().filter(|e| !e.complete).count();
    format!(
        "chute pipe: {} epochs ({} ended early), {} records, {bytes} bytes in {:.2}s, {:.0} MB/s while a reader was reading{}",
        s.epochs.len(),
        early,
        s.epochs.iter().map(|e| e.records_written).sum::<usize>(),
        elapsed.as_secs_f64(),
        bytes as f64 / streaming.max(1e-9) / 1e6,
        if s.stopped { "; stopped" } else { "" }
    )
}
