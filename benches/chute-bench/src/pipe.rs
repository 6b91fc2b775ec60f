//! `chute-bench pipe`: Pipe mode against the raw parallel-GET baseline, on the
//! same server in the same run — a reader draining each epoch's FIFO as fast as
//! it can (`cat NAME_0 > /dev/null`), and the time from its `open` to the first
//! byte, cold (the reader opens the moment the FIFO appears) and warm (the next
//! epoch, read-ahead already running).

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use chute_pipe::{fifo_path, PipeOptions};

use crate::report::{median_duration, Measure, Series, Table};
use crate::target::{baseline, BenchTarget, Dataset};

const CHANNEL: &str = "bench";

/// One epoch as the reader saw it.
struct Epoch {
    measure: Measure,
    first_byte: Duration,
}

/// `chute-bench pipe`: the common target, and the pipe's knobs.
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
    /// The knobs as `chute pipe` flags.
    fn flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        if let Some(n) = self.concurrency {
            f.extend(["--concurrency".into(), n.to_string()]);
        }
        if let Some(m) = self.part_mib {
            f.extend(["--part-size-mib".into(), m.to_string()]);
        }
        if let Some(m) = self.max_memory_mib {
            f.extend(["--max-memory".into(), format!("{m}MiB")]);
        }
        f.extend(self.target.chute_flags());
        f
    }
}

pub async fn run(args: &PipeBench) -> anyhow::Result<()> {
    let t = &args.target;
    let conn = t.connect().await?;
    let d = PipeOptions::default();
    let budget = args.max_memory_mib.map_or(d.max_memory, |m| m << 20);
    let part = args.part_mib.map_or(d.part_size, |m| m << 20);
    println!(
        "chute pipe: {} GETs in flight, {} MiB parts, {} MiB read-ahead budget",
        args.concurrency.unwrap_or(d.concurrency),
        chute_pipe::part_size_for(part, budget) >> 20,
        budget >> 20
    );
    let mut table = Table::new("Pipe mode: a reader draining the FIFO vs raw parallel GETs");
    let mut firsts = Vec::new();
    for d in t.datasets() {
        let objects = t.objects(&conn.client, d).await?;
        let expected: u64 = objects.iter().map(|o| o.size).sum();
        let (mut base, mut single, mut two) =
            (Series::default(), Series::default(), Series::default());
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        for _ in 0..t.runs() {
            base.push(
                d.label(),
                "raw parallel GETs",
                baseline(t, &conn, &objects).await?,
            );

            // One epoch on its own: the pipe against the raw GETs, like for like.
            let one = pipe_epochs(args, d, 1).await?;
            check(&one, expected)?;
            single.push(d.label(), "chute pipe, 1 epoch", one[0].measure);
            cold.push(one[0].first_byte);

            // Two epochs back to back, as training reads them: the second one's
            // read-ahead overlaps the first one's reading.
            let both = pipe_epochs(args, d, 2).await?;
            check(&both, expected)?;
            two.push(
                d.label(),
                "chute pipe, 2 epochs",
                Measure {
                    bytes: both.iter().map(|e| e.measure.bytes).sum(),
                    secs: both.iter().map(|e| e.measure.secs).sum(),
                },
            );
            warm.push(both[1].first_byte);
        }
        table.row(d.label(), "raw parallel GETs", &base, &base);
        table.row(d.label(), "chute pipe, 1 epoch", &single, &base);
        table.row(d.label(), "chute pipe, 2 epochs", &two, &base);
        firsts.push((
            d.label(),
            median_duration(&mut cold),
            median_duration(&mut warm),
        ));
    }
    table.print();
    println!("\nTime to first byte after the reader's open() (median of the runs)\n");
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

/// Runs `chute pipe` on the dataset for `epochs` epochs, as its own process
/// as a user would, and drains its FIFOs from this one, as a training script
/// would.
async fn pipe_epochs(args: &PipeBench, d: Dataset, epochs: u64) -> anyhow::Result<Vec<Epoch>> {
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dir = tmp.path().to_path_buf();
    let exe = args.target.chute.path()?;
    let mut child = tokio::process::Command::new(exe)
        .arg("pipe")
        .arg(args.target.uri(d))
        .arg("--dir")
        .arg(&dir)
        .args([
            "--channel",
            CHANNEL,
            "--epochs",
            &epochs.to_string(),
            "--log",
            "warn",
        ])
        .args(args.flags())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start chute pipe")?;
    let read = tokio::task::spawn_blocking(move || {
        read_epochs(&dir, CHANNEL, epochs, Duration::from_secs(120))
    })
    .await
    .context("the bench reader failed")?;
    let status = child.wait().await.context("chute pipe")?;
    let read = read?;
    anyhow::ensure!(status.success(), "chute pipe exited with {status}");
    drop(tmp);
    Ok(read
        .into_iter()
        .map(|r| Epoch {
            measure: Measure {
                bytes: r.bytes,
                secs: r.secs,
            },
            first_byte: r.first_byte,
        })
        .collect())
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

/// What the reader saw of one epoch.
struct EpochRead {
    bytes: u64,
    /// From open to EOF.
    secs: f64,
    /// From open to the first byte.
    first_byte: Duration,
}

/// Reads `NAME_0` .. `NAME_{n-1}` as a training script does: open each as soon
/// as it appears, read to EOF, next.
fn read_epochs(
    dir: &Path,
    channel: &str,
    epochs: u64,
    appear_timeout: Duration,
) -> anyhow::Result<Vec<EpochRead>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for epoch in 0..epochs {
        let path = fifo_path(dir, channel, epoch);
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
        let mut bytes = 0u64;
        let mut first = None;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(|| t.elapsed());
            bytes += n as u64;
        }
        out.push(EpochRead {
            bytes,
            secs: t.elapsed().as_secs_f64(),
            first_byte: first.unwrap_or_default(),
        });
    }
    Ok(out)
}
