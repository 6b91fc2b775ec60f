//! `chute run`, the container entrypoint: it reads the job's `InputDataConfig`,
//! brings every channel up the way SageMaker would, runs the training command with
//! the SageMaker environment, and tears everything down when the command exits.
//!
//! The order is the container contract of doc/SEMANTICS.md:
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

pub mod access;
pub mod channels;
pub mod child;
pub mod config;
pub mod container;
pub mod env;
pub mod error;
pub mod hosts;
pub mod outputs;
pub mod pyjson;
pub mod request;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use chute_channel::SourceOptions;

pub use config::{
    ChannelData, ChannelSpec, CheckpointConfig, ConfigError, InputMode, JobConfig,
    OutputCompression, OutputConfig,
};
pub use error::RunError;
pub use request::JobFlags;

use crate::channels::Active;
use crate::child::{Limits, Signals, StopReason};
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
    /// `--base-dir` (the CLI's default: `$SAGEMAKER_BASE_DIR`, else `/opt/ml`).
    pub base_dir: PathBuf,
    /// `--input-dir` (default `<base-dir>/input`).
    pub input_dir: Option<PathBuf>,
    /// The flags that stand for request fields (`--job-name`, `--hp`, ...).
    pub job: JobFlags,
    /// `--resource-config`.
    pub resource_config: Option<PathBuf>,
    /// `--shard-index` / `--shard-count`.
    pub shard_flags: Option<(usize, usize)>,
    /// How to reach S3.
    pub source: SourceOptions,
    /// The training command and its arguments.
    pub command: Vec<OsString>,
    /// How long the command has, after SIGTERM from `chute run` itself (run time
    /// out, failed channel), before its process group is killed.
    pub stop_grace: std::time::Duration,
}

/// Runs the job; returns the exit code `chute run` should exit with (the
/// command's), or why it could not run the command, had to stop it, or could not
/// keep what it made.
pub async fn run(opts: RunOptions) -> Result<u8, RunError> {
    let mut signals = Signals::install().map_err(RunError::Signals)?;
    let mut active = Active::default();
    let setup = {
        let setup = async {
            let prepared = prepare_job(&opts, &mut active).await?;
            let checkpoints = outputs::restore_checkpoints(&prepared, &opts.source).await?;
            Ok::<_, RunError>((prepared, checkpoints))
        };
        tokio::select! {
            r = setup => r,
            signo = signals.recv() => Err(RunError::Interrupted(signo)),
        }
    };
    let (prepared, checkpoints) = match setup {
        Ok(s) => s,
        Err(e) => {
            active.teardown().await;
            return Err(e);
        }
    };
    let limits = Limits {
        max_runtime: prepared.job.max_runtime,
        grace: opts.stop_grace,
    };
    let sync = checkpoints.map(|c| c.start_sync(chute_upload::SyncOptions::default()));
    let ended = match child::spawn(&opts.command, &prepared.env) {
        Ok(mut running) => {
            running
                .supervise(&mut signals, &limits, active.failed())
                .await
        }
        Err(e) => {
            outputs::finish_checkpoints(sync).await.ok();
            active.teardown().await;
            return Err(e);
        }
    };
    // Checkpoints are synced once more whatever happened: a stopped or failed job
    // is exactly the one that will resume from them.
    let synced = outputs::finish_checkpoints(sync).await;
    active.teardown().await;
    let ended = ended.map_err(|source| RunError::Spawn {
        program: "the command (waiting for it failed)".into(),
        source,
    })?;
    let code = child::exit_code(ended.status);
    match ended.stopped {
        Some(StopReason::Channel(f)) => {
            tracing::info!("command exited with code {code} after a channel failed");
            if let Err(e) = synced {
                tracing::error!("{e}");
            }
            return Err(RunError::ChannelFailed {
                channel: f.channel,
                mode: f.mode,
                message: f.message,
            });
        }
        Some(StopReason::MaxRuntime(limit)) => {
            tracing::error!(
                "command exited with code {code} after MaxRuntimeInSeconds ({}s) ran out",
                limit.as_secs()
            );
        }
        None => tracing::info!("command exited with code {code}"),
    }
    if code != 0 {
        if let Err(e) = synced {
            tracing::error!("{e}");
        }
        // The command's own reason is the last thing printed, as SageMaker
        // reports the start of this file as the job's FailureReason.
        outputs::report_failure(&prepared.layout);
        return Ok(code);
    }
    synced?;
    outputs::upload(&prepared, &opts.source).await?;
    Ok(code)
}

/// What the setup hands to the running of the command.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The variables to add to the command's environment, in order (a later one
    /// wins): `TRAINING_JOB_NAME`, `SAGEMAKER_BASE_DIR`, the toolkit's `SM_*`
    /// variables, then the request's `Environment`. Empty in passthrough.
    pub env: Vec<(String, String)>,
    /// The whole job: channels, name, hyperparameters, output and checkpoint
    /// locations, instance type and count, max run time, environment.
    pub job: JobConfig,
    /// Where things are: `base_dir`, `model_dir`, `output_dir` (`failure`),
    /// `output_data_dir`, `output_intermediate_dir`, `input_dir`, ...
    pub layout: Layout,
    /// The hosts and this host's place among them.
    pub hosts: chute_plan::Hosts,
    /// Inside a real SageMaker job with no chute configuration: the command runs
    /// as it is, with nothing added, uploaded or synced (`job` is empty but for
    /// `job_name`, from `TRAINING_JOB_NAME` when set).
    pub passthrough: bool,
}

/// Steps 1–4: validates the job, finds the hosts, creates the directories,
/// writes the container-side files and brings every channel up; returns what
/// running the command needs.
pub async fn prepare_job(opts: &RunOptions, active: &mut Active) -> Result<Prepared, RunError> {
    let layout = Layout::under(&opts.base_dir, opts.input_dir.as_deref()).map_err(|e| {
        RunError::Usage(format!(
            "cannot use --base-dir {} / --input-dir: {e}",
            opts.base_dir.display()
        ))
    })?;
    if sagemaker_job(opts, &layout) {
        tracing::info!(
            "{} was written by SageMaker and no chute configuration is given: running the \
             command as it is",
            layout.input_data_config_file().display()
        );
        let job = JobConfig {
            job_name: std::env::var("TRAINING_JOB_NAME").unwrap_or_default(),
            ..JobConfig::default()
        };
        let hosts = hosts::find(None, None, &layout, false, &|_| None)?.hosts;
        return Ok(Prepared {
            env: Vec::new(),
            job,
            layout,
            hosts,
            passthrough: true,
        });
    }
    let job = config::load_job(
        opts.input_config.as_deref(),
        &opts.channel_flags,
        opts.input_mode.as_deref(),
        &opts.job,
        &layout.base_dir,
    )?;
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
    check_instance_count(&job, &found)?;

    create_directories(&layout, &job)?;
    let files = write_config_files(&layout, &job, &found)?;
    if files.wrote_resource_config {
        active.remove_at_exit(layout.resource_config_file());
    }
    let env = command_env(&layout, &job, &files)?;

    let resolved = channels::resolve_all(&job.channels, &found.hosts, &opts.source).await?;
    channels::bring_up(resolved, &layout, active).await?;
    Ok(Prepared {
        env,
        job,
        layout,
        hosts: found.hosts,
        passthrough: false,
    })
}

/// The container-side marker saying chute wrote `inputdataconfig.json` (the file
/// itself must keep SageMaker's shape: every key in it is a channel).
fn input_config_marker(layout: &Layout) -> PathBuf {
    layout.config_dir.join(".inputdataconfig.json.chute")
}

/// A real SageMaker job: its `inputdataconfig.json` is there, chute did not write
/// it, and nothing configures chute.
fn sagemaker_job(opts: &RunOptions, layout: &Layout) -> bool {
    let configured = opts.input_config.is_some()
        || !opts.channel_flags.is_empty()
        || opts.input_mode.is_some()
        || opts.resource_config.is_some()
        || opts.shard_flags.is_some()
        || !opts.job.is_empty();
    !configured
        && layout.input_data_config_file().is_file()
        && !input_config_marker(layout).exists()
}

/// `ResourceConfig.InstanceCount` must be the number of hosts found.
fn check_instance_count(job: &JobConfig, found: &hosts::FoundHosts) -> Result<(), RunError> {
    let Some(n) = job.instance_count else {
        return Ok(());
    };
    let have = found.hosts.hosts.len();
    if have == n as usize {
        return Ok(());
    }
    if found.hosts.source == chute_plan::HostSource::Single {
        tracing::warn!(
            "ResourceConfig.InstanceCount is {n} but no host list was found (no \
             resourceconfig.json, SM_HOSTS, Kubernetes, Slurm or NODE_RANK/NNODES): this runs \
             as a single host"
        );
        return Ok(());
    }
    Err(RunError::Usage(format!(
        "ResourceConfig.InstanceCount is {n} but {} gives {have} host(s): make them agree",
        found.origin
    )))
}

/// Everything the command may expect to exist before it starts.
fn create_directories(layout: &Layout, job: &JobConfig) -> Result<(), RunError> {
    let checkpoint = job.checkpoint.as_ref().map(|c| c.local_path.as_path());
    for dir in layout.directories().into_iter().chain(checkpoint) {
        std::fs::create_dir_all(dir).map_err(|e| {
            RunError::Usage(format!(
                "cannot create {}: {e}; choose a writable --base-dir (or SAGEMAKER_BASE_DIR)",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// What [`write_config_files`] left in `<input-dir>/config`.
struct ConfigFiles {
    /// Whether chute wrote `resourceconfig.json` (rather than keeping the user's).
    wrote_resource_config: bool,
    /// `resourceconfig.json` as it now is.
    resource_config: String,
    /// `inputdataconfig.json` as it now is.
    input_data_config: serde_json::Value,
}

/// Writes `inputdataconfig.json`, `hyperparameters.json` and, unless the user's
/// is in place, `resourceconfig.json`. A `resourceconfig.json` chute writes is
/// removed at exit, and carries this run's id in case it is not (SIGKILL).
fn write_config_files(
    layout: &Layout,
    job: &JobConfig,
    found: &hosts::FoundHosts,
) -> Result<ConfigFiles, RunError> {
    let write = |path: &Path, text: &str| {
        container::write_atomic(path, text.as_bytes()).map_err(|source| RunError::Layout {
            what: "cannot write",
            path: path.to_owned(),
            source,
        })
    };
    let idc = container::input_data_config(&job.channels);
    write(
        &layout.input_data_config_file(),
        &(serde_json_pretty(&idc) + "\n"),
    )?;
    write(&input_config_marker(layout), hosts::run_id())?;
    let hps = serde_json::to_string(&job.hyperparameters).unwrap_or_else(|_| "{}".into());
    write(&layout.hyperparameters_file(), &hps)?;

    let rc_path = layout.resource_config_file();
    if let Ok(existing) = std::fs::read_to_string(&rc_path) {
        if hosts::chute_written(&existing).is_none() {
            if let Some(from) = &found.resource_config_path {
                if !same_file(from, &rc_path) {
                    tracing::warn!(
                        "{} exists and is kept; the hosts come from {}",
                        rc_path.display(),
                        from.display()
                    );
                }
            }
            return Ok(ConfigFiles {
                wrote_resource_config: false,
                resource_config: existing,
                input_data_config: idc,
            });
        }
    }
    let text = match &found.resource_config_text {
        // Copied as given: it may carry fields chute does not use (instance groups).
        Some(text) => text.clone(),
        None => {
            let rc = container::resource_config(
                &found.hosts,
                job.instance_type.as_deref().unwrap_or("local"),
                &container::network_interface(),
            );
            serde_json_pretty(&rc) + "\n"
        }
    };
    write(&rc_path, &text)?;
    Ok(ConfigFiles {
        wrote_resource_config: true,
        resource_config: text,
        input_data_config: idc,
    })
}

/// Linux's limit on one `NAME=value` string of a new program's environment
/// (`MAX_ARG_STRLEN`, 32 pages of 4 KiB, the terminating NUL included).
pub const MAX_ENV_STRING: usize = 128 * 1024;

/// The command's variables: `TRAINING_JOB_NAME`, `SAGEMAKER_BASE_DIR`, the
/// toolkit's `SM_*` set, then the request's `Environment`.
fn command_env(
    layout: &Layout,
    job: &JobConfig,
    files: &ConfigFiles,
) -> Result<Vec<(String, String)>, RunError> {
    let mut vars = vec![
        ("TRAINING_JOB_NAME".to_owned(), job.job_name.clone()),
        (
            "SAGEMAKER_BASE_DIR".to_owned(),
            layout.base_dir.to_string_lossy().into_owned(),
        ),
    ];
    let lookup = |name: &str| {
        job.environment
            .get(name)
            .cloned()
            .or_else(|| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .or_else(|| std::env::var(name).ok())
    };
    let rc = pyjson::loads(&files.resource_config).ok_or_else(|| {
        RunError::Usage(format!(
            "{} is not valid JSON",
            layout.resource_config_file().display()
        ))
    })?;
    let idc = pyjson::loads(&container::toolkit_json(&files.input_data_config))
        .unwrap_or(pyjson::PyValue::Dict(Vec::new()));
    let sm = env::toolkit_env(&env::Inputs {
        layout,
        resource_config: &rc,
        input_data_config: &idc,
        hyperparameters: &job.hyperparameters,
        env: &lookup,
        devices: env::Devices::detect(),
    });
    vars.extend(sm);
    vars.extend(job.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
    check_env_sizes(&vars)?;
    Ok(vars)
}

/// Fails before the command is started when one variable would not fit in a
/// program's environment (`execve` would fail with E2BIG): the host list grows
/// `SM_HOSTS`, `SM_RESOURCE_CONFIG` and `SM_TRAINING_ENV` with every host.
fn check_env_sizes(vars: &[(String, String)]) -> Result<(), RunError> {
    for (k, v) in vars {
        let len = k.len() + 1 + v.len() + 1;
        if len > MAX_ENV_STRING {
            return Err(RunError::Usage(format!(
                "{k} would be {len} bytes, over Linux's limit of {MAX_ENV_STRING} bytes for one \
                 environment variable (MAX_ARG_STRLEN), so the command could not be started; \
                 it grows with the host list and the hyperparameters: use fewer hosts per job \
                 or shorter host names and values"
            )));
        }
    }
    Ok(())
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
