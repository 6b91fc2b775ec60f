//! `chute-bench upload`: a training job's model directory (about 1 GiB by
//! default, files of mixed compressibility like real weights, optimizer state
//! and a tokenizer) uploaded as `model.tar.gz` by chute (tar, gzip on every core
//! and a parallel multipart upload as one stream) and by
//! `tar -czf - DIR | aws s3 cp - s3://...`; plus the same files sent
//! uncompressed as parallel PUTs, the floor of what the endpoint allows.
//!
//! The endpoint is `--endpoint-url` (or `AWS_ENDPOINT_URL`), with credentials from
//! the environment, as `benches/garage.sh` writes them; without one, a
//! `chute serve` is started in this process on a temporary directory.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chute_s3::{RetryPolicy, S3Config, Writer};
use chute_upload::{upload_dir_files, upload_dir_tar_gz, UploadOptions};

#[derive(clap::Args)]
pub struct UploadArgs {
    /// The model directory; created (and reused by later runs) when missing.
    #[arg(long, default_value = "/tmp/chute-bench-model")]
    dir: PathBuf,
    /// Size of the model directory in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// S3 endpoint; default `AWS_ENDPOINT_URL`, else a `chute serve` started here.
    #[arg(long)]
    endpoint_url: Option<String>,
    #[arg(long, default_value = "chute-bench")]
    bucket: String,
    /// Rounds; each runs every tool once, interleaved.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    #[arg(long, default_value_t = 16)]
    part_size_mib: usize,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value_t = 2)]
    gzip_level: u32,
    /// Gzip workers (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Leave out the `tar | aws s3 cp` baseline.
    #[arg(long)]
    skip_aws: bool,
    /// Leave out the raw parallel PUT baseline.
    #[arg(long)]
    skip_raw: bool,
}

/// Where to send objects, and the environment the `aws` CLI needs for it.
struct Endpoint {
    url: String,
    cfg: S3Config,
    env: Vec<(String, String)>,
    /// Keeps the in-process server (and its directory) alive.
    _local: Option<(chute_serve::Server, tempfile::TempDir)>,
}

async fn endpoint(args: &UploadArgs) -> Result<Endpoint> {
    let given = args.endpoint_url.clone().or_else(|| {
        std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|s| !s.is_empty())
    });
    if let Some(url) = given {
        let cfg = S3Config {
            endpoint_url: Some(url.clone()),
            ..S3Config::default()
        };
        return Ok(Endpoint {
            url,
            cfg,
            env: Vec::new(),
            _local: None,
        });
    }
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join(&args.bucket))?;
    let (ak, sk) = ("chute-bench", "chute-bench-secret-key");
    let server = chute_serve::Server::start(chute_serve::ServeConfig {
        root: dir.path().to_path_buf(),
        addr: "127.0.0.1:0".parse()?,
        access_key: ak.into(),
        secret_key: sk.into(),
    })
    .await?;
    let url = server.endpoint_url();
    eprintln!(
        "no endpoint given: serving {} with chute serve (this process)",
        url
    );
    let cfg = S3Config {
        endpoint_url: Some(url.clone()),
        region: Some("us-east-1".into()),
        access_key: Some(ak.into()),
        secret_key: Some(sk.into()),
        ..S3Config::default()
    };
    let env = [
        ("AWS_ACCESS_KEY_ID", ak),
        ("AWS_SECRET_ACCESS_KEY", sk),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_REGION", "us-east-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Ok(Endpoint {
        url,
        cfg,
        env,
        _local: Some((server, dir)),
    })
}

pub async fn run(args: UploadArgs) -> Result<()> {
    prepare_model_dir(&args.dir, args.size_mib << 20)?;
    let input_bytes = dir_bytes(&args.dir)?;
    warm(&args.dir)?;
    let ep = endpoint(&args).await?;
    let writer = Writer::s3(&ep.cfg, RetryPolicy::default()).await?;
    let opts = UploadOptions {
        part_size: args.part_size_mib << 20,
        concurrency: args.concurrency,
        gzip_level: args.gzip_level,
        compress_threads: args.threads,
        ..UploadOptions::default()
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "model dir {} ({} bytes, {} MiB), endpoint {}, {} cores",
        args.dir.display(),
        input_bytes,
        input_bytes >> 20,
        ep.url,
        cores
    );
    let mut rows: Vec<(String, Vec<f64>, u64)> = Vec::new();
    let mut record = |name: &str, secs: f64, size: u64| {
        if let Some(row) = rows.iter_mut().find(|r| r.0 == name) {
            row.1.push(secs);
            row.2 = size;
        } else {
            rows.push((name.to_owned(), vec![secs], size));
        }
    };
    for round in 1..=args.rounds {
        let key = "bench/chute/model.tar.gz";
        let t = Instant::now();
        let (object, _) = upload_dir_tar_gz(&writer, &args.dir, &args.bucket, key, &opts).await?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "round {round}: chute {secs:.2}s ({} parts, verified)",
            object.parts
        );
        record(
            &format!("chute (tar.gz, level {}, verified)", args.gzip_level),
            secs,
            object.bytes,
        );

        if !args.skip_aws {
            let key = "bench/aws/model.tar.gz";
            let secs = tar_aws(&args.dir, &ep, &args.bucket, key)?;
            let size = writer.head(&args.bucket, key).await?.size;
            eprintln!("round {round}: tar -czf - | aws s3 cp - {secs:.2}s");
            record("tar -czf - DIR | aws s3 cp -", secs, size);
        }

        if !args.skip_raw {
            let t = Instant::now();
            let objects =
                upload_dir_files(&writer, &args.dir, &args.bucket, "bench/raw/", &opts).await?;
            let secs = t.elapsed().as_secs_f64();
            eprintln!("round {round}: raw parallel PUT {secs:.2}s");
            record(
                "raw parallel PUT, uncompressed (chute)",
                secs,
                objects.iter().map(|o| o.bytes).sum(),
            );
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let chute = median(&rows[0].1);
    println!(
        "{:<42} {:>9} {:>10} {:>14} {:>12}",
        "tool", "seconds", "MB/s in", "object bytes", "vs chute"
    );
    for (name, secs, size) in &rows {
        let s = median(secs);
        println!(
            "{:<42} {:>9.2} {:>10.1} {:>14} {:>11.2}x",
            name,
            s,
            input_bytes as f64 / s / 1e6,
            size,
            s / chute
        );
    }
    Ok(())
}

/// `tar -czf - -C DIR . | aws s3 cp - s3://bucket/key`, timed.
fn tar_aws(dir: &Path, ep: &Endpoint, bucket: &str, key: &str) -> Result<f64> {
    let script = r#"set -o pipefail; tar -czf - -C "$1" . | aws s3 cp --only-show-errors --endpoint-url "$2" - "s3://$3/$4""#;
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script, "tar-aws"])
        .arg(dir)
        .args([&ep.url, bucket, key])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_CA_BUNDLE");
    for (k, v) in &ep.env {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let status = cmd
        .status()
        .context("running tar | aws s3 cp (is the AWS CLI installed?)")?;
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("tar | aws s3 cp failed: {status}");
    }
    Ok(secs)
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        total += e?.metadata()?.len();
    }
    Ok(total)
}

/// Reads every file once, so both tools start from the page cache.
fn warm(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let mut f = std::fs::File::open(e?.path())?;
        std::io::copy(&mut f, &mut std::io::sink())?;
    }
    Ok(())
}

/// Deterministic fast random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Roughly normal (sum of four uniforms), mean 0, about `sd` wide.
    fn normal(&mut self, sd: f32) -> f32 {
        let r = self.next();
        let sum: f32 = (0..4)
            .map(|i| ((r >> (i * 16)) & 0xffff) as f32 / 65535.0)
            .sum();
        (sum - 2.0) * sd * 1.73
    }
}

/// The files of the model directory: name, share of the total, generator.
type Gen = fn(&mut Rng, &mut dyn Write, u64) -> std::io::Result<()>;

fn layout() -> [(&'static str, u64, Gen); 4] {
    [
        // fp32 weights: random mantissas, little to gain from gzip.
        ("model-00001-of-00002.safetensors", 8, |rng, w, n| {
            fill(w, n, |buf| {
                for c in buf.chunks_exact_mut(4) {
                    c.copy_from_slice(&rng.normal(0.02).to_le_bytes());
                }
            })
        }),
        // bf16 weights: half of each value is its sign and exponent.
        ("model-00002-of-00002.safetensors", 4, |rng, w, n| {
            fill(w, n, |buf| {
                for c in buf.chunks_exact_mut(2) {
                    let bits = rng.normal(0.02).to_bits();
                    c.copy_from_slice(&((bits >> 16) as u16).to_le_bytes());
                }
            })
        }),
        // Optimizer state early in training: mostly zeros.
        ("optimizer.pt", 3, |rng, w, n| {
            fill(w, n, |buf| {
                for c in buf.chunks_exact_mut(4) {
                    let v = if rng.next() % 10 == 0 {
                        rng.normal(1e-4)
                    } else {
                        0.0
                    };
                    c.copy_from_slice(&v.to_le_bytes());
                }
            })
        }),
        // A tokenizer: JSON text.
        ("tokenizer.json", 1, |rng, w, n| {
            let syll = ["an", "to", "ke", "ni", "za", "ro", "mu", "shi", "el", "qua"];
            let mut written = 0u64;
            let mut id = 0u64;
            let mut line = String::new();
            while written < n {
                line.clear();
                let parts = 1 + rng.next() % 4;
                line.push_str("    \"");
                for _ in 0..parts {
                    line.push_str(syll[(rng.next() % syll.len() as u64) as usize]);
                }
                line.push_str(&format!("\": {id},\n"));
                id += 1;
                let take = (n - written).min(line.len() as u64) as usize;
                w.write_all(&line.as_bytes()[..take])?;
                written += take as u64;
            }
            Ok(())
        }),
    ]
}

fn fill(w: &mut dyn Write, n: u64, mut gen: impl FnMut(&mut [u8])) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        gen(&mut buf);
        let take = left.min(buf.len() as u64) as usize;
        w.write_all(&buf[..take])?;
        left -= take as u64;
    }
    Ok(())
}

/// Creates the model directory unless it already holds exactly this layout.
fn prepare_model_dir(dir: &Path, total: u64) -> Result<()> {
    let layout = layout();
    let shares: u64 = layout.iter().map(|l| l.1).sum();
    let sizes: Vec<u64> = layout.iter().map(|l| total / shares * l.1).collect();
    let ready = layout
        .iter()
        .zip(&sizes)
        .all(|(l, size)| std::fs::metadata(dir.join(l.0)).is_ok_and(|m| m.len() == *size))
        && std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0) == layout.len();
    if ready {
        return Ok(());
    }
    eprintln!("creating the model directory {} ...", dir.display());
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for ((name, _, gen), size) in layout.iter().zip(&sizes) {
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join(name))?);
        gen(&mut rng, &mut w, *size)?;
        w.flush()?;
    }
    Ok(())
}
