//! The demo's FastFile section: the sample channel mounted with FUSE, every file
//! read through the mount and checked against its source, then unmounted.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use chute_fastfile::MountOptions;
use sha2::{Digest, Sha256};

/// The demo's FastFile section: mount the sample channel, read every file
/// through the mount, check each against its source, report MB/s, unmount.
pub async fn section(
    root: &Path,
    client: &chute_s3::Client,
    plan: &chute_plan::Plan,
) -> anyhow::Result<()> {
    println!("\n-- FastFile: mount, read every file, verify --");
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_err()
    {
        println!("skipped: /dev/fuse is not available here (containers need --device /dev/fuse --cap-add SYS_ADMIN)");
        return Ok(());
    }
    let plan = plan.clone();
    let dir = tempfile::tempdir().context("cannot create a mount point")?;
    let mp = dir.path().to_path_buf();
    let handle = tokio::runtime::Handle::current();
    let client = client.clone();
    let plan2 = plan.clone();
    let mp2 = mp.clone();
    let t = Instant::now();
    let mount = tokio::task::spawn_blocking(move || {
        chute_fastfile::mount(client, plan2, &mp2, MountOptions::default(), handle)
    })
    .await??;
    let mounted_in = t.elapsed();
    let root = root.to_path_buf();
    let checked = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, f64)> {
        let t = Instant::now();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for o in &plan.objects {
            let mut f = std::fs::File::open(mp.join(o.path()))
                .with_context(|| format!("open {} through the mount", o.path()))?;
            let mut h = Sha256::new();
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                total += n as u64;
            }
            let want = Sha256::digest(std::fs::read(root.join(o.bucket()).join(o.key()))?);
            anyhow::ensure!(h.finalize() == want, "{} differs from its source", o.path());
        }
        Ok((total, t.elapsed().as_secs_f64()))
    })
    .await?;
    let summary = tokio::task::spawn_blocking(move || mount.unmount()).await??;
    let (bytes, secs) = checked?;
    println!(
        "mounted in {:.0} ms; read {} files, {:.1} MB through the mount in {secs:.2}s = {:.0} MB/s; every SHA-256 matches",
        mounted_in.as_secs_f64() * 1000.0,
        summary.opens,
        bytes as f64 / 1e6,
        bytes as f64 / secs.max(1e-9) / 1e6
    );
    println!(
        "{} GETs, {:.1} MB prefetched (read-ahead and next files in listing order), cache hit rate {:.0}%; unmounted",
        summary.get_requests,
        summary.bytes_prefetched as f64 / 1e6,
        summary.hit_rate() * 100.0
    );
    Ok(())
}
