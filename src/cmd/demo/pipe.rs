//! The demo's Pipe section: two epochs of the sample channel through real FIFOs,
//! read as a training script reads them and checked against the source.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use chute_pipe::{fifo_path, run_pipe, CancellationToken, PipeOptions, PipeSource};
use chute_plan::Plan;
use sha2::{Digest, Sha256};

/// The demo's Pipe section: two epochs of the whole sample channel through real
/// FIFOs, each checked against the source files, with the rate a reader saw.
pub async fn section(root: &Path, client: &chute_s3::Client, plan: &Plan) -> anyhow::Result<()> {
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
struct EpochRead {
    /// SHA-256 of the epoch's bytes, when asked for.
    sha256: Option<[u8; 32]>,
    bytes: u64,
    /// From open to EOF.
    secs: f64,
    /// From open to the first byte.
    first_byte_secs: f64,
}

/// Reads `NAME_0` .. `NAME_{n-1}` as a training script does: open each as soon
/// as it appears, read to EOF, next. Hashing is optional so that a benchmark
/// measures the pipe rather than SHA-256.
fn read_epochs(
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
