//! `chute download SOURCE DEST`: File mode from the command line. The work is
//! in `chute-download`; this parses flags, wires signals and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use chute_channel::{distribute, resolve};
use chute_download::{download, DownloadError, DownloadOptions};
use chute_s3::StoreError;

use crate::cli::DownloadArgs;
use crate::exit::UsageError;
use crate::options::{channel_source, distribution, source_options};

/// Exit code after SIGINT/SIGTERM, as shells report a death by SIGINT.
const INTERRUPTED: u8 = 130;

pub async fn run(args: DownloadArgs) -> anyhow::Result<ExitCode> {
    let manifest = args.src.manifest.is_some() || args.src.augmented_manifest.is_some();
    let (source, dest) = match (args.paths.as_slice(), manifest) {
        ([source, dest], _) => (Some(source.as_str()), PathBuf::from(dest)),
        ([dest], true) => (None, PathBuf::from(dest)),
        ([_], false) => {
            return Err(UsageError(
                "chute download needs SOURCE and DEST (s3://bucket/prefix /local/dir), or DEST alone with --manifest / --augmented-manifest".into(),
            )
            .into())
        }
        _ => return Err(UsageError("chute download takes SOURCE and DEST".into()).into()),
    };
    if args.part_size_mib == 0 || args.concurrency == 0 {
        return Err(
            UsageError("--part-size-mib and --concurrency must be at least 1".into()).into(),
        );
    }
    let source = channel_source(source, &args.src)?;
    let (dist, hosts) = distribution(&args.src)?;
    let channel = resolve(&source, &source_options(&args.src)).await?;
    let plan = distribute(channel.plan, dist, &hosts);
    let opts = DownloadOptions {
        concurrency: args.concurrency,
        part_size: args.part_size_mib << 20,
        progress: !args.no_progress,
        space_check: !args.no_space_check,
        fsync: args.fsync,
        resume: !args.no_resume,
        state_file: args.state_file.clone(),
        verify_md5: !args.no_verify_md5,
        preallocate: !args.no_preallocate,
        write_buffer: args
            .write_buffer_kib
            .map_or(DownloadOptions::default().write_buffer, |k| k << 10),
        write_on_workers: !args.no_write_on_workers,
        ..DownloadOptions::default()
    };
    let result = tokio::select! {
        r = download(&channel.client, &plan, &dest, &opts) => r,
        _ = super::shutdown_signal() => {
            // Dropping the download aborts its transfers and removes its
            // temporary files; completed files and the resume state stay.
            eprintln!(
                "chute: interrupted; completed files are kept in {}, rerun the same command to resume",
                dest.display()
            );
            return Ok(ExitCode::from(INTERRUPTED));
        }
    };
    match result {
        Ok(summary) => {
            eprintln!("{}", summary.one_line());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(classify(e)),
    }
}

/// Destination problems are bad input (exit 2); store errors keep their class
/// (exit 3 for the source) through the error chain; the rest is exit 1.
fn classify(e: DownloadError) -> anyhow::Error {
    match e {
        e if e.is_usage() => UsageError(e.to_string()).into(),
        DownloadError::Store(s) => s.into(),
        DownloadError::Verify {
            bucket,
            key,
            detail,
        } => StoreError::Other {
            bucket,
            key,
            detail: format!("downloaded bytes failed verification: {detail}"),
        }
        .into(),
        other => other.into(),
    }
}

/// `chute demo`'s File section: the plan downloaded into a temporary
/// directory, every file checked against the file it was served from, and a
/// rerun that finds everything complete.
pub async fn demo_section(
    root: &std::path::Path,
    client: &chute_s3::Client,
    plan: &chute_plan::Plan,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use sha2::{Digest, Sha256};

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
