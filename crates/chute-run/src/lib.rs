//! `chute run`, the container entrypoint: it reads the job's `InputDataConfig`,
//! brings every channel up the way SageMaker would, runs the training command with
//! the SageMaker environment, and tears everything down when the command exits.
//!
//! The order is fixed by DESIGN.md's container contract:
//! 1. validate every channel ([`config`]) — a bad channel fails before any data moves;
//! 2. find the hosts ([`hosts`]);
//! 3. write `<input-dir>/config/inputdataconfig.json` and, if absent,
//!    `resourceconfig.json` ([`container`]);
//! 4. resolve every channel's object list, then bring every channel up: File
//!    channels downloaded (in parallel with each other), FastFile mounted, Pipe
//!    FIFOs served by background tasks, file-system channels linked ([`channels`]);
//! 5. run the command as a child with the `SM_*` variables, forwarding SIGINT and
//!    SIGTERM ([`child`]);
//! 6. tear every channel down and exit with the command's code.
//!
//! SIGINT/SIGTERM during steps 1–4 stop the setup, tear down what is already up
//! and exit with 128 + the signal, without starting the command.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod channels;
pub mod child;
pub mod config;
pub mod container;
pub mod error;
pub mod hosts;

use std::ffi::OsString;
use std::path::PathBuf;

use chute_channel::SourceOptions;

pub use config::{ChannelData, ChannelSpec, ConfigError, InputMode, JobConfig};
pub use error::RunError;

use crate::channels::Active;
use crate::child::Signals;
use crate::container::Layout;

/// Everything `chute run` is given.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `--input-config`: the InputDataConfig JSON.
    pub input_config: Option<PathBuf>,
    /// `--channel NAME=URI,...` values.
    pub channel_flags: Vec<String>,
    /// `--input-mode`: the job's default `TrainingInputMode`.
    pub input_mode: Option<String>,
    /// `--input-dir` (default `/opt/ml/input`).
    pub input_dir: PathBuf,
    /// `--resource-config`.
    pub resource_config: Option<PathBuf>,
    /// `--shard-index` / `--shard-count`.
    pub shard_flags: Option<(usize, usize)>,
    /// How to reach S3.
    pub source: SourceOptions,
    /// The training command and its arguments.
    pub command: Vec<OsString>,
}

/// Runs the job; returns the exit code `chute run` should exit with (the
/// command's), or why it could not run the command.
pub async fn run(opts: RunOptions) -> Result<u8, RunError> {
    let mut signals = Signals::install().map_err(RunError::Signals)?;
    let mut active = Active::default();
    let prepared = {
        let setup = prepare(&opts, &mut active);
        tokio::select! {
            r = setup => r,
            signo = signals.recv() => Err(RunError::Interrupted(signo)),
        }
    };
    let env = match prepared {
        Ok(env) => env,
        Err(e) => {
            active.teardown().await;
            return Err(e);
        }
    };
    let status = match child::spawn(&opts.command, &env) {
        Ok(mut child) => child::supervise(&mut child, &mut signals).await,
        Err(e) => {
            active.teardown().await;
            return Err(e);
        }
    };
    active.teardown().await;
    match status {
        Ok(status) => {
            let code = child::exit_code(status);
            tracing::info!("command exited with code {code}");
            Ok(code)
        }
        Err(source) => Err(RunError::Spawn {
            program: "the command (waiting for it failed)".into(),
            source,
        }),
    }
}

/// Steps 1–4; returns the `SM_*` environment for the command.
async fn prepare(
    opts: &RunOptions,
    active: &mut Active,
) -> Result<Vec<(String, String)>, RunError> {
    let job = config::load(
        opts.input_config.as_deref(),
        &opts.channel_flags,
        opts.input_mode.as_deref(),
    )?;
    let layout = Layout::new(&opts.input_dir).map_err(|source| RunError::Layout {
        what: "cannot use --input-dir",
        path: opts.input_dir.clone(),
        source,
    })?;
    if let Some(path) = &opts.input_config {
        let ours = layout.input_data_config_file();
        if same_file(path, &ours) {
            return Err(RunError::Usage(format!(
                "--input-config {} is the container-side file chute run writes (a different \
                 shape); keep the CreateTrainingJob InputDataConfig elsewhere, e.g. \
                 /opt/ml/input-data-config.json",
                path.display()
            )));
        }
    }
    let sharded = job.channels.iter().any(|c| {
        matches!(
            c.data,
            ChannelData::S3 {
                distribution: chute_plan::Distribution::ShardedByS3Key,
                ..
            }
        )
    });
    let found = hosts::find(
        opts.shard_flags,
        opts.resource_config.as_deref(),
        &layout,
        sharded,
        &|name| std::env::var(name).ok(),
    )?;

    if write_config_files(&layout, &job, &found)? {
        active.remove_at_exit(layout.resource_config_file());
    }
    let idc = container::input_data_config(&job.channels);
    let env = container::sm_env(&layout, &job.channels, &found.hosts, &idc);

    let resolved = channels::resolve_all(&job.channels, &opts.source).await?;
    channels::bring_up(resolved, &found.hosts, &layout, active).await?;
    Ok(env)
}

/// Writes the container-side files; returns whether it wrote
/// `resourceconfig.json`, which is then removed at exit: left behind, it would
/// outrank the environment (SM_HOSTS, Kubernetes, Slurm) of a later run in the
/// same input directory and could make a host believe it is alone.
fn write_config_files(
    layout: &Layout,
    job: &JobConfig,
    found: &hosts::FoundHosts,
) -> Result<bool, RunError> {
    for dir in [&layout.config_dir, &layout.data_dir] {
        std::fs::create_dir_all(dir).map_err(|source| RunError::Layout {
            what: "cannot create",
            path: dir.clone(),
            source,
        })?;
    }
    let idc = container::input_data_config(&job.channels);
    let idc_path = layout.input_data_config_file();
    let mut text = serde_json_pretty(&idc);
    text.push('\n');
    container::write_atomic(&idc_path, text.as_bytes()).map_err(|source| RunError::Layout {
        what: "cannot write",
        path: idc_path.clone(),
        source,
    })?;

    let rc_path = layout.resource_config_file();
    if rc_path.exists() {
        if let Some(from) = &found.resource_config_path {
            if !same_file(from, &rc_path) {
                tracing::warn!(
                    "{} exists and is kept; the hosts come from {}",
                    rc_path.display(),
                    from.display()
                );
            }
        }
        return Ok(false);
    }
    let text = match &found.resource_config_text {
        // Copied as given: it may carry fields chute does not use (instance groups).
        Some(text) => text.clone(),
        None => {
            let mut t = serde_json_pretty(&container::resource_config(&found.hosts));
            t.push('\n');
            t
        }
    };
    container::write_atomic(&rc_path, text.as_bytes()).map_err(|source| RunError::Layout {
        what: "cannot write",
        path: rc_path.clone(),
        source,
    })?;
    Ok(true)
}

/// Pretty JSON with sorted keys, for files people read.
fn serde_json_pretty(v: &serde_json::Value) -> String {
    // Round-trip through the toolkit form: it fixes the key order whatever
    // serde_json's map type is.
    let sorted = container::toolkit_json(v);
    serde_json::from_str::<serde_json::Value>(&sorted)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(sorted)
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
