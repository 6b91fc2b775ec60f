//! `chute pipe`: Pipe mode from the command line — the channel resolved as for
//! every command, then streamed into `DIR/NAME_0`, `DIR/NAME_1`, ... until the
//! epochs are done or SIGINT/SIGTERM; and the Pipe section of `chute demo`.
//!
//! When an epoch fails (an object that cannot be read, or is not gzip under
//! `--gunzip`), the error is logged the moment it happens, the reader is given
//! the whole objects before the failed one and then EOF (an object small enough
//! to be withheld — up to half the read-ahead budget — never reaches the reader
//! in part; a larger one may have begun), the FIFOs are removed, and the command
//! exits 3 naming the object (2 for an object that is not gzip). A reader must
//! therefore check the exit status before taking an epoch as complete; `chute
//! run` does that for the training command and holds the FIFO open meanwhile.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use chute_channel::{resolve, Channel};
use chute_pipe::{
    fifo_path, run_pipe, CancellationToken, PipeOptions, PipeSource, PipeSummary, RecordWrapper,
};
use chute_plan::{Distribution, Plan};
use sha2::{Digest, Sha256};

use crate::cli::{PipeArgs, RecordWrapperArg};
use crate::exit::UsageError;
use crate::options::{channel_source, distribution, source_options};

pub async fn run(args: PipeArgs) -> anyhow::Result<ExitCode> {
    let source = channel_source(args.source.as_deref(), &args.src)?;
    let (dist, hosts) = distribution(&args.src)?;
    let channel = resolve(&source, &source_options(&args.src)).await?;
    for s in &channel.plan.skipped {
        tracing::warn!(key = %s.key, "skipped key: {}", s.reason);
    }
    let shard = (dist == Distribution::ShardedByS3Key).then(|| hosts.shard());
    let Channel {
        client,
        plan,
        records,
    } = channel;
    let pipe_source = match records {
        Some(records) => PipeSource::Augmented { records },
        None => PipeSource::Objects(plan),
    };
    let mut opts = PipeOptions {
        epochs: args.epochs,
        record_wrapper: match args.record_wrapper {
            RecordWrapperArg::None => RecordWrapper::None,
            RecordWrapperArg::Recordio => RecordWrapper::RecordIo,
        },
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
    .await
    .map_err(|e| -> anyhow::Error {
        if e.is_usage() {
            UsageError(e.to_string()).into()
        } else {
            e.into()
        }
    })?;
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

/// The demo's Pipe section: two epochs of the whole sample channel through real
/// FIFOs, each checked against the source files, with the rate a reader saw.
pub async fn demo(root: &Path, client: &chute_s3::Client, plan: &Plan) -> anyhow::Result<()> {
    println!("\n-- Pipe: two epochs through FIFOs, read like a training script --");
    let mut want = Sha256::new();
    for o in &plan.objects {
        let path = root.join(o.bucket()).join(o.key());
        want.update(
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        );
    }
    let want = want.finalize();
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dir = tmp.path().to_path_buf();
    let pipe = {
        let (client, plan, dir) = (client.clone(), plan.clone(), dir.clone());
        tokio::spawn(async move {
            let opts = PipeOptions {
                epochs: Some(2),
                ..PipeOptions::default()
            };
            let source = PipeSource::Objects(plan);
            run_pipe(
                client,
                source,
                None,
                &dir,
                "train",
                opts,
                CancellationToken::new(),
            )
            .await
        })
    };
    let reader_dir = dir.clone();
    let reads = tokio::task::spawn_blocking(move || {
        read_epochs(&reader_dir, "train", 2, true, Duration::from_secs(30))
    });
    let reads = reads.await.context("the demo reader failed")??;
    let summary = pipe.await.context("the pipe task failed")??;
    for (epoch, r) in reads.iter().enumerate() {
        let (bytes, secs, ttfb) = (r.bytes, r.secs, r.first_byte_secs);
        anyhow::ensure!(
            r.sha256.is_some_and(|d| d[..] == want[..]),
            "epoch {epoch}: the bytes read from the FIFO differ from the dataset"
        );
        println!(
            "  {}: {} objects, {bytes} bytes in {secs:.2}s = {:.0} MB/s, first byte {:.1} ms after open; SHA-256 matches",
            fifo_path(Path::new("."), "train", epoch as u64)
                .display()
                .to_string()
                .trim_start_matches("./"),
            plan.objects.len(),
            bytes as f64 / secs.max(1e-9) / 1e6,
            ttfb * 1000.0
        );
    }
    anyhow::ensure!(
        summary.epochs.len() == 2 && summary.epochs.iter().all(|e| e.complete),
        "the pipe did not complete two epochs"
    );
    Ok(())
}

/// What a reader saw of one epoch.
pub struct EpochRead {
    /// SHA-256 of the epoch's bytes, when asked for.
    pub sha256: Option<[u8; 32]>,
    pub bytes: u64,
    /// From open to EOF.
    pub secs: f64,
    /// From open to the first byte.
    pub first_byte_secs: f64,
}

/// Reads `NAME_0` .. `NAME_{n-1}` as a training script does: open each as soon
/// as it appears, read to EOF, next. Hashing is optional so that a benchmark
/// measures the pipe rather than SHA-256.
pub fn read_epochs(
    dir: &Path,
    channel: &str,
    epochs: u64,
    hash: bool,
    appear_timeout: Duration,
) -> anyhow::Result<Vec<EpochRead>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for epoch in 0..epochs {
        let path: PathBuf = fifo_path(dir, channel, epoch);
        let deadline = Instant::now() + appear_timeout;
        while !path.exists() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} never appeared",
                path.display()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let t = Instant::now();
        let mut f = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut hasher = hash.then(Sha256::new);
        let mut bytes = 0u64;
        let mut first = None;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(|| t.elapsed().as_secs_f64());
            bytes += n as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..n]);
            }
        }
        out.push(EpochRead {
            sha256: hasher.map(|h| h.finalize().into()),
            bytes,
            secs: t.elapsed().as_secs_f64(),
            first_byte_secs: first.unwrap_or(0.0),
        });
    }
    Ok(out)
}
