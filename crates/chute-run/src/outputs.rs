//! What a job leaves behind: its checkpoints, restored before the command and
//! synced while and after it runs; its model and output data, uploaded after a
//! successful command; and, after a failed one, the reason it wrote to
//! `output/failure`, printed last. The S3 work itself is `chute-upload`'s.

use std::io::Read;

use chute_channel::SourceOptions;
use chute_upload::{CheckpointSync, Checkpoints, UploadOptions};

use crate::config::OutputCompression;
use crate::container::Layout;
use crate::error::RunError;
use crate::Prepared;

/// How much of `output/failure` is printed: what SageMaker shows as the job's
/// FailureReason.
const FAILURE_REASON_CHARS: usize = 1024;

/// Downloads `CheckpointConfig.S3Uri` into its local path (File mode's engine),
/// so that an interrupted job resumes where it stopped.
pub async fn restore_checkpoints(
    prepared: &Prepared,
    source: &SourceOptions,
) -> Result<Option<Checkpoints>, RunError> {
    let Some(cfg) = &prepared.job.checkpoint else {
        return Ok(None);
    };
    let (checkpoints, summary) = Checkpoints::restore(source, &cfg.s3_uri, &cfg.local_path)
        .await
        .map_err(RunError::Checkpoints)?;
    tracing::info!(
        "checkpoints: {} object(s), {} bytes restored from {} into {} in {:.2}s \
         ({} already there); new files there are uploaded while the command runs",
        summary.objects,
        summary.bytes,
        cfg.s3_uri,
        cfg.local_path.display(),
        summary.seconds,
        summary.already_present
    );
    Ok(Some(checkpoints))
}

/// The last checkpoint sync, once the command has exited.
pub async fn finish_checkpoints(sync: Option<CheckpointSync>) -> Result<(), RunError> {
    let Some(sync) = sync else { return Ok(()) };
    let summary = sync.finish().await.map_err(RunError::Checkpoints)?;
    tracing::info!(
        "checkpoints: {} upload(s), {} bytes",
        summary.uploads,
        summary.bytes
    );
    Ok(())
}

/// Uploads `model/` and `output/data/` to `OutputDataConfig.S3OutputPath`, when
/// one is configured.
pub async fn upload(prepared: &Prepared, source: &SourceOptions) -> Result<(), RunError> {
    let Some(out) = &prepared.job.output else {
        tracing::info!(
            "no S3OutputPath: model and output data stay in {}",
            prepared.layout.base_dir.display()
        );
        return Ok(());
    };
    let cfg = chute_upload::OutputConfig {
        s3_output_path: out.s3_output_path.clone(),
        job_name: prepared.job.job_name.clone(),
        compression: match out.compression {
            OutputCompression::Gzip => chute_upload::Compression::Gzip,
            OutputCompression::None => chute_upload::Compression::None,
        },
    };
    let writer = chute_upload::connect(source)
        .await
        .map_err(RunError::Upload)?;
    let summary = chute_upload::upload_outputs(
        &writer,
        &prepared.layout.base_dir,
        &cfg,
        &UploadOptions::default(),
    )
    .await
    .map_err(RunError::Upload)?;
    tracing::info!("outputs: {}", summary.one_line());
    Ok(())
}

/// Prints the start of `output/failure`, if the command wrote one.
pub fn report_failure(layout: &Layout) {
    let path = layout.output_dir.join("failure");
    let Ok(file) = std::fs::File::open(&path) else {
        return;
    };
    let mut bytes = Vec::new();
    // Enough bytes for the characters shown, whatever their UTF-8 width.
    if file
        .take(4 * FAILURE_REASON_CHARS as u64)
        .read_to_end(&mut bytes)
        .is_err()
    {
        return;
    }
    let text = String::from_utf8_lossy(&bytes);
    let reason: String = text.chars().take(FAILURE_REASON_CHARS).collect();
    let reason = reason.trim_end();
    if reason.is_empty() {
        return;
    }
    eprintln!("chute: the command failed; {}:", path.display());
    for line in reason.lines() {
        eprintln!("  {line}");
    }
}
