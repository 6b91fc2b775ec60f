//! `chute bench pipe`: Pipe mode against the raw parallel-GET baseline, on the
//! same server in the same run — a reader draining each epoch's FIFO as fast as
//! it can (`cat NAME_0 > /dev/null`), and the time from its `open` to the first
//! byte, cold (the reader opens the moment the FIFO appears) and warm (the next
//! epoch, read-ahead already running).

use std::time::Duration;

use anyhow::Context;
use chute_pipe::{run_pipe, CancellationToken, PipeOptions, PipeSource};

use super::{baseline, BenchTarget, Measure, Table};

const CHANNEL: &str = "bench";

/// One epoch as the reader saw it.
struct Epoch {
    measure: Measure,
    first_byte: Duration,
}

/// `chute bench pipe`: the common target, and the pipe's knobs.
#[derive(Debug, clap::Args, Clone)]
pub struct PipeBench {
    #[command(flatten)]
    pub target: BenchTarget,
    /// GETs in flight for the pipe (default: the pipe's default).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Part size of the pipe's ranged GETs, in MiB (default: the pipe's default).
    #[arg(long, value_name = "MIB")]
    pub part_mib: Option<u64>,
    /// Read-ahead budget in MiB (default: the pipe's default for this machine).
    #[arg(long, value_name = "MIB")]
    pub max_memory_mib: Option<u64>,
}

impl PipeBench {
    fn options(&self) -> PipeOptions {
        let mut o = PipeOptions::default();
        if let Some(n) = self.concurrency {
            o.concurrency = n;
        }
        if let Some(m) = self.part_mib {
            o.part_size = m << 20;
        }
        if let Some(m) = self.max_memory_mib {
            o.max_memory = m << 20;
        }
        o
    }
}

pub async fn run(args: &PipeBench) -> anyhow::Result<()> {
    let t = &args.target;
    let client = t.client().await?;
    let o = args.options();
    println!(
        "chute pipe: {} GETs in flight, {} MiB parts, {} MiB read-ahead budget",
        o.concurrency,
        o.part_size >> 20,
        o.max_memory >> 20
    );
    let mut table = Table::new("Pipe mode: a reader draining the FIFO vs raw parallel GETs");
    let mut firsts = Vec::new();
    for d in t.datasets() {
        let objects = t.objects(&client, d).await?;
        let base = baseline(t, &client, &objects).await?;
        table.row(d.label(), "raw parallel GETs", base, base);

        let plan = t.plan(d, &objects);
        let expected: u64 = objects.iter().map(|o| o.size).sum();

        // One epoch on its own: the pipe against the raw GETs, like for like.
        let single = pipe_epochs(&client, &plan, &o, 1).await?;
        check(&single, expected)?;
        table.row(d.label(), "chute pipe, 1 epoch", single[0].measure, base);

        // Two epochs back to back, as training reads them: the second one's
        // read-ahead overlaps the first one's reading.
        let two = pipe_epochs(&client, &plan, &o, 2).await?;
        check(&two, expected)?;
        let both = Measure {
            bytes: two.iter().map(|e| e.measure.bytes).sum(),
            secs: two.iter().map(|e| e.measure.secs).sum(),
        };
        let base2 = Measure {
            bytes: base.bytes * 2,
            secs: base.secs * 2.0,
        };
        table.row(d.label(), "chute pipe, 2 epochs", both, base2);
        firsts.push((d.label(), single[0].first_byte, two[1].first_byte));
    }
    table.print();
    println!("\nTime to first byte after the reader's open()\n");
    println!(
        "| dataset | epoch 0, opened as the FIFO appears | next epoch, opened right after EOF |"
    );
    println!("|---|---:|---:|");
    for (d, cold, warm) in firsts {
        println!(
            "| {d} | {:.1} ms | {:.2} ms |",
            cold.as_secs_f64() * 1e3,
            warm.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// Runs a pipe of the plan for `epochs` epochs and drains them.
async fn pipe_epochs(
    client: &chute_s3::Client,
    plan: &chute_plan::Plan,
    opts: &PipeOptions,
    epochs: u64,
) -> anyhow::Result<Vec<Epoch>> {
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dir = tmp.path().to_path_buf();
    let pipe = {
        let (client, dir, plan) = (client.clone(), dir.clone(), plan.clone());
        let opts = PipeOptions {
            epochs: Some(epochs),
            ..opts.clone()
        };
        tokio::spawn(async move {
            let source = PipeSource::Objects(plan);
            run_pipe(
                client,
                source,
                None,
                &dir,
                CHANNEL,
                opts,
                CancellationToken::new(),
            )
            .await
        })
    };
    let read = tokio::task::spawn_blocking(move || {
        crate::cmd::pipe::read_epochs(&dir, CHANNEL, epochs, false, Duration::from_secs(120))
    })
    .await
    .context("the bench reader failed")??
    .into_iter()
    .map(|r| Epoch {
        measure: Measure {
            bytes: r.bytes,
            secs: r.secs,
        },
        first_byte: Duration::from_secs_f64(r.first_byte_secs),
    })
    .collect();
    pipe.await.context("the pipe task failed")??;
    Ok(read)
}

fn check(epochs: &[Epoch], expected: u64) -> anyhow::Result<()> {
    for (i, e) in epochs.iter().enumerate() {
        anyhow::ensure!(
            e.measure.bytes == expected,
            "epoch {i} delivered {} bytes, expected {expected}",
            e.measure.bytes
        );
    }
    Ok(())
}
