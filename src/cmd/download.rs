//! `chute download SOURCE DEST`: File mode from the command line. The work is
//! in `chute-download`; this parses flags, wires signals and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use chute_channel::open;
use chute_download::{download, DownloadError, DownloadOptions};

use crate::cli::DownloadArgs;
use crate::exit::UsageError;
use crate::options::channel_request;

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
    let channel = open(channel_request(source, &args.src, None)?).await?;
    chute_metrics::global().add_client(
        &chute_metrics::channel_name(&dest),
        channel.client.stats().clone(),
    );
    let (client, plan) = channel.into_host_plan();
    let opts = DownloadOptions {
        concurrency: args.concurrency,
        part_size: args.part_size_mib << 20,
        progress: !args.no_progress,
        space_check: !args.no_space_check,
        fsync: args.fsync,
        resume: !args.no_resume,
        state_file: args.state_file.clone(),
        verify_md5: !args.no_verify_md5,
        ..DownloadOptions::default()
    };
    let result = tokio::select! {
        r = download(&client, &plan, &dest, &opts) => r,
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
        Err(e) => Err(worded(e)),
    }
}

/// The library's message, with the flag that gets past a failed space check.
fn worded(e: DownloadError) -> anyhow::Error {
    match e {
        e @ DownloadError::NotEnoughSpace { .. } => {
            UsageError(format!("{e}; or pass --no-space-check to try anyway")).into()
        }
        other => other.into(),
    }
}
