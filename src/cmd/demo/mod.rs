//! `chute demo`: the main job on an embedded endpoint, no AWS account needed.
//!
//! It writes a sample dataset (nested prefixes, mixed sizes, an empty object and
//! awkward key characters), serves it with the same S3 endpoint as `chute serve`,
//! then runs each piece of chute against it and prints what each achieved: one
//! submodule per section, all of the demo in this module.

mod fastfile;
mod file;
mod pipe;
mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use chute_channel::{resolve, ChannelSource, SourceOptions};
use chute_download::human_bytes;
use chute_plan::{Plan, Shard, SourceUri};
use chute_s3::S3Config;
use chute_serve::{ServeConfig, Server};
use futures::{StreamExt, TryStreamExt};
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::cli::DemoArgs;

const BUCKET: &str = "demo";
const PREFIX: &str = "datasets/images/";
const HOSTS: usize = 4;

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let tmp;
    let root: PathBuf = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    println!("== chute demo ==");
    let started = Instant::now();
    let (count, bytes) = generate(&root, args.objects)?;
    println!(
        "dataset: {count} objects, {} in {}/{BUCKET}/{PREFIX} (generated in {:.2}s)",
        human_bytes(bytes),
        root.display(),
        started.elapsed().as_secs_f64()
    );

    let mut key = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut key);
    let access_key = format!("demo{}", hex::encode(&key[..6]));
    let secret_key = hex::encode(key);
    let server = Server::start(ServeConfig {
        root: root.clone(),
        addr: "127.0.0.1:0".parse()?,
        access_key: access_key.clone(),
        secret_key: secret_key.clone(),
    })
    .await
    .context("cannot start the embedded S3 endpoint")?;
    println!(
        "endpoint: {} (chute serve, SigV4, path-style)",
        server.endpoint_url()
    );

    let opts = SourceOptions {
        s3: S3Config {
            endpoint_url: Some(server.endpoint_url()),
            region: Some("us-east-1".into()),
            access_key: Some(access_key),
            secret_key: Some(secret_key),
            ..S3Config::default()
        },
        ..SourceOptions::default()
    };
    let result = sections(&root, &opts).await;
    server.shutdown().await;
    result?;
    println!("demo finished in {:.2}s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

async fn sections(root: &Path, opts: &SourceOptions) -> anyhow::Result<()> {
    let source = ChannelSource::Prefix(SourceUri::S3 {
        bucket: BUCKET.into(),
        prefix: PREFIX.into(),
    });

    println!("\n-- plan: list s3://{BUCKET}/{PREFIX} --");
    let t = Instant::now();
    let channel = resolve(&source, opts).await?;
    let listed_in = t.elapsed();
    let plan = channel.plan;
    println!(
        "listed {} objects ({}) in {:.0} ms with {} LIST requests; {} keys skipped",
        plan.objects.len(),
        human_bytes(plan.total_bytes()),
        listed_in.as_secs_f64() * 1000.0,
        channel.client.stats().snapshot().list_requests,
        plan.skipped.len()
    );
    for s in &plan.skipped {
        println!("  skipped {:?}: {}", s.key, s.reason);
    }
    for o in plan.objects.iter().take(3) {
        println!("  {}\t{}", o.size, o.path());
    }
    println!("  ...");
    println!("ShardedByS3Key over {HOSTS} hosts:");
    let mut union = 0;
    for i in 0..HOSTS {
        let shard = plan.clone().shard(&Shard {
            index: i,
            count: HOSTS,
        });
        union += shard.objects.len();
        println!(
            "  host {i}: {} objects, {}",
            shard.objects.len(),
            human_bytes(shard.total_bytes())
        );
    }
    anyhow::ensure!(union == plan.objects.len(), "shards do not cover the plan");

    println!("\n-- read: every object through the S3 layer, checked against the source --");
    let (read_bytes, secs) = read_and_verify(root, &channel.client, &plan).await?;
    let stats = channel.client.stats().snapshot();
    println!(
        "read {} objects, {} in {secs:.2}s = {:.0} MB/s; {} GETs, {} retries; every SHA-256 matches",
        plan.objects.len(),
        human_bytes(read_bytes),
        read_bytes as f64 / secs.max(1e-9) / 1e6,
        stats.get_requests,
        stats.retries
    );
    file::section(root, &channel.client, &plan).await?;
    fastfile::section(root, &channel.client, &plan).await?;
    pipe::section(root, &channel.client, &plan).await?;
    run::section(root, opts).await?;
    Ok(())
}

/// Reads every planned object with pinned ranged reads and compares its SHA-256
/// with the file it was served from.
async fn read_and_verify(
    root: &Path,
    client: &chute_s3::Client,
    plan: &Plan,
) -> anyhow::Result<(u64, f64)> {
    let t = Instant::now();
    let total: u64 = futures::stream::iter(plan.objects.iter())
        .map(|o| async move {
            let mut hasher = Sha256::new();
            let etag = o.etag().map(|e| e.to_string());
            let mut stream = client.read(o.bucket(), o.key(), 0..o.size, etag);
            while let Some(chunk) = stream.next().await {
                hasher.update(&chunk?);
            }
            let got = hasher.finalize();
            let source = root.join(o.bucket()).join(o.key());
            let want = Sha256::digest(std::fs::read(&source)?);
            anyhow::ensure!(got == want, "bytes of {} differ from the source", o.key());
            Ok::<u64, anyhow::Error>(o.size)
        })
        .buffer_unordered(16)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    Ok((total, t.elapsed().as_secs_f64()))
}

/// Writes the sample dataset; returns (objects, bytes).
fn generate(root: &Path, objects: usize) -> anyhow::Result<(usize, u64)> {
    let base = root.join(BUCKET).join(PREFIX);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC4_07E);
    let mut bytes = 0u64;
    let mut count = 0usize;
    let mut write = |rel: &str, size: usize, rng: &mut rand::rngs::StdRng| -> anyhow::Result<()> {
        let path = base.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut data = vec![0u8; size];
        rng.fill_bytes(&mut data);
        std::fs::write(&path, &data).with_context(|| format!("cannot write {}", path.display()))?;
        bytes += size as u64;
        count += 1;
        Ok(())
    };
    let extras = 4;
    for i in 0..objects.saturating_sub(extras) {
        let split = if i % 10 == 9 { "validation" } else { "train" };
        let size = match i % 20 {
            0 => rng.gen_range(2 << 20..6 << 20),
            1..=4 => rng.gen_range(256 << 10..1 << 20),
            _ => rng.gen_range(1 << 10..128 << 10),
        };
        write(
            &format!("{split}/part-{:02}/img-{i:05}.jpg", i % 8),
            size,
            &mut rng,
        )?;
    }
    if objects >= extras {
        write("README.txt", 600, &mut rng)?;
        write("empty-object.bin", 0, &mut rng)?;
        write("labels/cat & dog+1 = 100%.json", 2048, &mut rng)?;
        write("labels/çà-ünïcode #1.json", 1024, &mut rng)?;
    }
    Ok((count, bytes))
}
