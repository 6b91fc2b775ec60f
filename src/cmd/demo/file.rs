//! The demo's File section: `chute download` of the sample channel, every file
//! checked against the file it was served from, and a rerun that resumes.

use anyhow::Context;
use chute_download::{download, DownloadOptions};
use sha2::{Digest, Sha256};

/// `chute demo`'s File section: the plan downloaded into a temporary
/// directory, every file checked against the file it was served from, and a
/// rerun that finds everything complete.
pub async fn section(
    root: &std::path::Path,
    client: &chute_s3::Client,
    plan: &chute_plan::Plan,
) -> anyhow::Result<()> {
    println!("\n-- File mode: chute download, then every file checked against the source --");
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dest = work.path().join("train");
    let opts = DownloadOptions {
        progress: false,
        ..DownloadOptions::default()
    };
    let summary = download(client, plan, &dest, &opts).await?;
    println!("{}", summary.one_line());
    let dest2 = dest.clone();
    let objects = plan.objects.clone();
    let root = root.to_path_buf();
    let checked = tokio::task::spawn_blocking(move || {
        for o in &objects {
            let got = std::fs::read(dest2.join(o.path()))
                .with_context(|| format!("{} is missing from the download", o.path()))?;
            let want = std::fs::read(root.join(o.bucket()).join(o.key()))
                .with_context(|| format!("cannot read the source of {}", o.key()))?;
            anyhow::ensure!(
                Sha256::digest(&got) == Sha256::digest(&want),
                "{} differs from its source",
                o.path()
            );
        }
        Ok::<usize, anyhow::Error>(objects.len())
    })
    .await??;
    println!(
        "{checked} files in {}: every SHA-256 matches the source",
        dest.display()
    );
    let again = download(client, plan, &dest, &opts).await?;
    println!(
        "rerun into the same directory (resume): {}",
        again.one_line()
    );
    Ok(())
}
