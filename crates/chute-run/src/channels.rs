//! The life of each channel under `chute run`: its object list resolved, the
//! channel brought up in its mode, and torn down when the command exits.
//!
//! - **File**: downloaded into `<data>/<channel>` before the command starts; File
//!   channels download in parallel with each other. Nothing to tear down: the
//!   files stay, and a rerun resumes (chute-download keeps its state beside the
//!   directory).
//! - **FastFile**: a read-only FUSE mount at `<data>/<channel>`, unmounted at the
//!   end (and the mount point removed if chute made it).
//! - **Pipe**: FIFOs `<data>/<channel>_<epoch>` served by a background task of this
//!   process, one epoch after another for as long as the command runs; stopped and
//!   its FIFOs removed at the end.
//! - **FileSystemDataSource**: `<data>/<channel>` becomes a *symbolic link* to the
//!   already-mounted directory, removed at the end. A link rather than a bind mount
//!   because it needs no privilege (a job with only EFS/FSx channels should not
//!   need `CAP_SYS_ADMIN`), a killed `chute run` leaves no mount behind, and the
//!   access mode stays that of the real mount (the platform's volume, e.g. a
//!   Kubernetes `readOnly` volume, enforces `ro`; chute does not pretend to). The
//!   one visible difference: tools that do not follow a link given as an argument
//!   (`find DIR` without `-L` or a trailing `/`) see the link itself.
//!
//! Teardown never fails the run: each problem is logged, naming the channel, and
//! the rest is still torn down.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chute_channel::{open, ChannelRequest, ChannelSource, HostChannel, SourceOptions};
use chute_plan::{Classify, ErrorClass, Hosts};
use futures::future::{join_all, try_join_all};

use crate::config::{ChannelData, ChannelSpec, Compression, InputMode};
use crate::container::Layout;
use crate::error::RunError;

/// How long a stopping pipe may take to let go of its FIFOs before teardown moves
/// on (its task is then abandoned and the FIFOs removed here).
const PIPE_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The least read-ahead memory a streaming channel gets, however many share.
const MIN_CHANNEL_MEMORY: u64 = 64 << 20;

/// A validated channel with its object list, when it has one.
pub struct Resolved {
    /// The channel as configured.
    pub spec: ChannelSpec,
    /// Client, (unsharded) plan and this host's place; `None` for file-system
    /// channels.
    pub channel: Option<HostChannel>,
}

/// Lists (or reads the manifests of) every S3 channel, all at once. The first
/// failure in channel order is returned, naming its channel.
pub async fn resolve_all(
    specs: &[ChannelSpec],
    hosts: &Hosts,
    opts: &SourceOptions,
) -> Result<Vec<Resolved>, RunError> {
    let results = join_all(specs.iter().map(|spec| async move {
        let channel = match &spec.data {
            ChannelData::S3 {
                source,
                distribution,
                ..
            } => {
                let t = Instant::now();
                let options =
                    spec.access
                        .source_options(opts)
                        .map_err(|problem| RunError::Resolve {
                            channel: spec.name.clone(),
                            source: Box::new(chute_channel::ChannelError::Usage(problem)),
                        })?;
                let request = ChannelRequest {
                    name: Some(spec.name.clone()),
                    source: source.clone(),
                    options: options.into_owned(),
                    distribution: *distribution,
                    hosts: hosts.clone(),
                };
                let channel = open(request).await.map_err(|source| RunError::Resolve {
                    channel: spec.name.clone(),
                    source: Box::new(source),
                })?;
                chute_metrics::global().add_client(&spec.name, channel.client.stats().clone());
                tracing::info!(
                    channel = %spec.name,
                    "{}: {} objects, {} bytes, listed in {:.2}s",
                    describe(source),
                    channel.plan.objects.len(),
                    channel.plan.total_bytes(),
                    t.elapsed().as_secs_f64()
                );
                Some(channel)
            }
            ChannelData::FileSystem { .. } => None,
        };
        Ok::<_, RunError>(Resolved {
            spec: spec.clone(),
            channel,
        })
    }))
    .await;
    results.into_iter().collect()
}

fn describe(source: &ChannelSource) -> String {
    match source {
        ChannelSource::Prefix(uri) => uri.to_string(),
        ChannelSource::Manifest(uri) => format!("manifest {uri}"),
        ChannelSource::AugmentedManifest { uri, .. } => format!("augmented manifest {uri}"),
    }
}

/// What must be undone when the command exits, and the failures of channels that
/// live while it runs.
pub struct Active {
    live: Vec<Live>,
    failures_tx: tokio::sync::mpsc::UnboundedSender<ChannelFailure>,
    failures: tokio::sync::mpsc::UnboundedReceiver<ChannelFailure>,
}

impl Default for Active {
    fn default() -> Self {
        let (failures_tx, failures) = tokio::sync::mpsc::unbounded_channel();
        Active {
            live: Vec::new(),
            failures_tx,
            failures,
        }
    }
}

/// A channel that stopped delivering while the command ran.
#[derive(Debug, Clone)]
pub struct ChannelFailure {
    /// The channel.
    pub channel: String,
    /// Its input mode.
    pub mode: InputMode,
    /// What failed, naming the object where one is to blame.
    pub message: String,
}

enum Live {
    Link {
        channel: String,
        path: PathBuf,
    },
    Pipe {
        channel: String,
        dir: PathBuf,
        cancel: chute_pipe::CancellationToken,
        task: tokio::task::JoinHandle<()>,
    },
    Mount {
        channel: String,
        // Boxed: a mount is far larger than the other kinds of channel.
        mount: Box<chute_fastfile::Mount>,
    },
    /// A mount point chute created, removed (when empty) after the unmount.
    MountPoint {
        channel: String,
        path: PathBuf,
    },
    /// A file chute wrote that must not outlive the run.
    File {
        path: PathBuf,
    },
}

/// Brings every channel up: links and pipes first (instant), then all File
/// channels downloading at once. Anything brought up is recorded in `active`
/// as soon as it exists, so an interrupted setup can still be torn down.
pub async fn bring_up(
    resolved: Vec<Resolved>,
    layout: &Layout,
    active: &mut Active,
) -> Result<(), RunError> {
    let file_channels = resolved
        .iter()
        .filter(|r| r.spec.mode == InputMode::File && r.channel.is_some())
        .count();
    // FastFile and Pipe channels read ahead in memory; each takes its share of
    // its mode's machine-sized default rather than the whole of it.
    let streaming = resolved
        .iter()
        .filter(|r| r.spec.mode != InputMode::File && r.channel.is_some())
        .count()
        .max(1) as u64;
    let budget = |whole: u64| (whole / streaming).max(MIN_CHANNEL_MEMORY);
    let mut downloads = Vec::new();
    for r in resolved {
        let spec = r.spec;
        let path = layout.channel_dir(&spec.name);
        match (&spec.data, r.channel) {
            (ChannelData::FileSystem { directory, .. }, _) => {
                link(&spec.name, directory, &path)?;
                active.live.push(Live::Link {
                    channel: spec.name.clone(),
                    path,
                });
            }
            (ChannelData::S3 { .. }, Some(channel)) => match spec.mode {
                InputMode::File => {
                    let (client, plan) = channel.into_host_plan();
                    downloads.push(download(spec, client, plan, path, file_channels));
                }
                InputMode::Pipe => {
                    let budget = budget(chute_pipe::default_max_memory());
                    let failures = active.failures_tx.clone();
                    let live = start_pipe(&spec, channel, layout, budget, failures).await?;
                    active.live.push(live);
                }
                InputMode::FastFile => {
                    let (client, plan) = channel.into_host_plan();
                    let budget = budget(chute_fastfile::default_max_memory());
                    mount(&spec, client, plan, path, budget, active).await?;
                }
            },
            (ChannelData::S3 { .. }, None) => {
                return Err(RunError::Setup {
                    channel: spec.name.clone(),
                    mode: spec.mode,
                    message: "internal error: the channel was not resolved".into(),
                    class: ErrorClass::Local,
                })
            }
        }
    }
    try_join_all(downloads).await?;
    Ok(())
}

/// Makes room at a channel's path: a link left by an earlier run goes; an
/// empty directory goes; anything else stays and is an error for modes that
/// need the path for themselves.
fn clear_path(channel: &str, mode: InputMode, path: &Path) -> Result<(), RunError> {
    let setup_err = |message: String| RunError::Setup {
        channel: channel.to_owned(),
        mode,
        message,
        class: ErrorClass::Local,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(setup_err(format!("cannot use {}: {e}", path.display()))),
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(path).map_err(|e| {
            setup_err(format!(
                "cannot remove the old link {}: {e}",
                path.display()
            ))
        }),
        Ok(m) if m.is_dir() => match std::fs::remove_dir(path) {
            Ok(()) => Ok(()),
            Err(_) => Err(setup_err(format!(
                "{} exists and is not empty (left by an earlier run in another mode?): \
                 remove it or use another --input-dir",
                path.display()
            ))),
        },
        Ok(_) => Err(setup_err(format!(
            "{} exists and is not a directory: remove it or use another --input-dir",
            path.display()
        ))),
    }
}

fn link(channel: &str, target: &Path, path: &Path) -> Result<(), RunError> {
    clear_path(channel, InputMode::File, path)?;
    std::os::unix::fs::symlink(target, path).map_err(|e| RunError::Setup {
        channel: channel.to_owned(),
        mode: InputMode::File,
        message: format!(
            "cannot link {} to {}: {e}",
            path.display(),
            target.display()
        ),
        class: ErrorClass::Local,
    })?;
    tracing::info!(
        channel,
        "{} -> {} (file system)",
        path.display(),
        target.display()
    );
    Ok(())
}

/// FastFile channels keep a disk cache by default, shared by every channel, in
/// `<input-dir>/.chute-cache` (beside `<input-dir>/data`, on the same volume,
/// found again by the next run); sized from free space and the channel.
fn fastfile_cache(mountpoint: &std::path::Path) -> Option<chute_fastfile::CacheOptions> {
    let data_dir = mountpoint.parent()?;
    let dir = chute_fastfile::default_cache_dir(data_dir);
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(chute_fastfile::CacheOptions { dir, size: None }),
        Err(e) => {
            tracing::warn!(
                "FastFile channels run without a disk cache: cannot create {}: {e}",
                dir.display()
            );
            None
        }
    }
}

async fn mount(
    spec: &ChannelSpec,
    client: chute_s3::Client,
    plan: chute_plan::Plan,
    path: PathBuf,
    budget: u64,
    active: &mut Active,
) -> Result<(), RunError> {
    let setup_err = |message: String, class: ErrorClass| RunError::Setup {
        channel: spec.name.clone(),
        mode: spec.mode,
        message,
        class,
    };
    let mut missing = false;
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => {
            clear_path(&spec.name, spec.mode, &path)?;
            missing = true;
        }
        Ok(m) if m.is_dir() && std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some()) => {
            tracing::warn!(
                channel = %spec.name,
                "{} is not empty (an earlier File-mode run?); the mount hides its content",
                path.display()
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing = true,
        // Anything else (a dead mount of an earlier run, which the mount clears;
        // a file in the way) is for the mount to handle or report precisely.
        _ => {}
    }
    if missing {
        std::fs::create_dir(&path).map_err(|e| {
            setup_err(
                format!("cannot create the mount point {}: {e}", path.display()),
                ErrorClass::Local,
            )
        })?;
        active.live.push(Live::MountPoint {
            channel: spec.name.clone(),
            path: path.clone(),
        });
    }
    let objects = plan.objects.len();
    let bytes = plan.total_bytes();
    let opts = chute_fastfile::MountOptions {
        max_memory: budget,
        fs_name: format!("chute:{}", spec.name),
        cache: fastfile_cache(&path),
        ..chute_fastfile::MountOptions::default()
    };
    let runtime = tokio::runtime::Handle::current();
    let target = path.clone();
    let t = Instant::now();
    let mounted = tokio::task::spawn_blocking(move || {
        chute_fastfile::mount(client, plan, &target, opts, runtime)
    })
    .await
    .map_err(|e| setup_err(format!("the mount task failed: {e}"), ErrorClass::Local))?
    .map_err(|e| {
        setup_err(
            e.to_string(),
            if e.is_usage() {
                ErrorClass::Usage
            } else {
                ErrorClass::Local
            },
        )
    })?;
    tracing::info!(
        channel = %spec.name,
        "mounted {objects} objects ({bytes} bytes) read-only at {} in {:.2}s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    chute_metrics::global().add_mount(&spec.name, mounted.summary_source());
    active.live.push(Live::Mount {
        channel: spec.name.clone(),
        mount: Box::new(mounted),
    });
    Ok(())
}

async fn download(
    spec: ChannelSpec,
    client: chute_s3::Client,
    plan: chute_plan::Plan,
    dest: PathBuf,
    file_channels: usize,
) -> Result<(), RunError> {
    // A link left by a FileSystemDataSource run would be refused as a link on
    // the way; an earlier download into the same place is kept and resumed.
    if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink()) {
        clear_path(&spec.name, spec.mode, &dest)?;
    }
    let opts = chute_download::DownloadOptions {
        // Several bars at once would overwrite each other on one terminal.
        progress: file_channels == 1,
        ..chute_download::DownloadOptions::default()
    };
    let summary = chute_download::download(&client, &plan, &dest, &opts)
        .await
        .map_err(|e| setup_failed(&spec, &e))?;
    tracing::info!(channel = %spec.name, "{}", summary.one_line());
    Ok(())
}

/// A channel its mode could not bring up, classed by the mode's error.
fn setup_failed(spec: &ChannelSpec, e: &(impl Classify + std::fmt::Display)) -> RunError {
    RunError::Setup {
        channel: spec.name.clone(),
        mode: spec.mode,
        class: e.class(),
        message: e.to_string(),
    }
}

async fn start_pipe(
    spec: &ChannelSpec,
    channel: HostChannel,
    layout: &Layout,
    budget: u64,
    failures: tokio::sync::mpsc::UnboundedSender<ChannelFailure>,
) -> Result<Live, RunError> {
    // A link left at <data>/<name> by an earlier run would point SM_CHANNEL_<NAME>
    // somewhere stale, and FIFOs left by a killed run would have no writer.
    clear_path(&spec.name, spec.mode, &layout.channel_dir(&spec.name)).ok();
    remove_fifos(&spec.name, &layout.data_dir);
    let shard = channel.shard();
    let source = match channel.records {
        Some(records) => chute_pipe::PipeSource::Augmented { records },
        None => chute_pipe::PipeSource::Objects(channel.plan),
    };
    let opts = chute_pipe::PipeOptions {
        // As in SageMaker: a new FIFO for every epoch the script asks for.
        epochs: None,
        record_wrapper: spec.record_wrapper,
        shuffle_seed: spec.shuffle_seed,
        gunzip: spec.compression == Compression::Gzip,
        max_memory: budget,
        on_failure: chute_pipe::OnFailure::Hold,
        ..chute_pipe::PipeOptions::default()
    };
    let cancel = chute_pipe::CancellationToken::new();
    let handle = chute_pipe::start_pipe(
        channel.client,
        source,
        shard,
        &layout.data_dir,
        &spec.name,
        opts,
        cancel.clone(),
    )
    .await
    .map_err(|e| setup_failed(spec, &e))?;
    tracing::info!(
        channel = %spec.name,
        "serving {}_0, {}_1, ... in {}",
        spec.name,
        spec.name,
        layout.data_dir.display()
    );
    let name = spec.name.clone();
    let mode = spec.mode;
    // The pipe holds its FIFO open without EOF when an epoch fails, so that the
    // reader never takes a cut-short epoch for a whole one; the failure is
    // reported here at once so that the command is stopped before teardown
    // releases the FIFO.
    let failed = handle.failed();
    tokio::spawn(async move {
        if let Some(f) = failed.await {
            let _ = failures.send(ChannelFailure {
                channel: f.channel,
                mode,
                message: f.error.to_string(),
            });
        }
    });
    let task = tokio::spawn(async move {
        match handle.wait().await {
            Ok(summary) => {
                let bytes: u64 = summary.epochs.iter().map(|e| e.bytes).sum();
                tracing::info!(
                    channel = %name,
                    "pipe ended after {} epoch(s), {} bytes",
                    summary.epochs.len(),
                    bytes
                );
            }
            Err(e) => tracing::error!(channel = %name, "pipe failed: {e}"),
        }
    });
    Ok(Live::Pipe {
        channel: spec.name.clone(),
        dir: layout.data_dir.clone(),
        cancel,
        task,
    })
}

impl Active {
    /// Resolves when a channel stops delivering while the command runs: a pipe
    /// whose epoch cannot be completed, or a mount that went away without being
    /// unmounted by us. Never resolves while every channel is healthy.
    pub async fn failed(&mut self) -> ChannelFailure {
        let mounts = self.live.iter().filter_map(|l| match l {
            Live::Mount { channel, mount } => Some(async move {
                mount.closed().await;
                ChannelFailure {
                    channel: channel.clone(),
                    mode: InputMode::FastFile,
                    message: format!(
                        "the FastFile mount at {} went away while the command was running",
                        mount.mountpoint().display()
                    ),
                }
            }),
            _ => None,
        });
        let mounts: Vec<_> = mounts.map(Box::pin).collect();
        let mount_gone = async {
            if mounts.is_empty() {
                std::future::pending().await
            } else {
                futures::future::select_all(mounts).await.0
            }
        };
        tokio::select! {
            Some(f) = self.failures.recv() => f,
            f = mount_gone => f,
        }
    }

    /// Removes `path` at teardown (after every channel, since it was recorded
    /// before them).
    pub fn remove_at_exit(&mut self, path: PathBuf) {
        self.live.push(Live::File { path });
    }

    /// Undoes everything, newest first. Problems are logged, not returned: the
    /// command's exit code is what `chute run` reports.
    pub async fn teardown(&mut self) {
        while let Some(live) = self.live.pop() {
            match live {
                Live::Link { channel, path } => {
                    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                        if let Err(e) = std::fs::remove_file(&path) {
                            tracing::warn!(%channel, "cannot remove {}: {e}", path.display());
                        }
                    }
                }
                Live::Pipe {
                    channel,
                    dir,
                    cancel,
                    mut task,
                } => {
                    cancel.cancel();
                    if tokio::time::timeout(PIPE_STOP_TIMEOUT, &mut task)
                        .await
                        .is_err()
                    {
                        tracing::warn!(%channel, "the pipe did not stop in time; abandoning it");
                        task.abort();
                    }
                    remove_fifos(&channel, &dir);
                }
                Live::Mount { channel, mount } => {
                    let path = mount.mountpoint().to_path_buf();
                    match tokio::task::spawn_blocking(move || mount.unmount()).await {
                        Ok(Ok(summary)) => tracing::info!(
                            %channel,
                            "unmounted {}: served {} bytes in {} reads over {:.1}s",
                            path.display(),
                            summary.bytes_served,
                            summary.reads,
                            summary.elapsed.as_secs_f64()
                        ),
                        Ok(Err(e)) => tracing::warn!(%channel, "{e}"),
                        Err(e) => tracing::warn!(%channel, "the unmount task failed: {e}"),
                    }
                }
                Live::File { path } => {
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!("cannot remove {}: {e}", path.display());
                    }
                }
                Live::MountPoint { channel, path } => {
                    // Only an empty directory goes: never data someone put there.
                    if let Err(e) = std::fs::remove_dir(&path) {
                        tracing::warn!(%channel, "cannot remove the mount point {}: {e}", path.display());
                    }
                }
            }
        }
    }
}

/// Removes any `<channel>_<n>` FIFO in `dir`: left by a killed run before a pipe
/// starts, or by a pipe that had to be abandoned at teardown.
fn remove_fifos(channel: &str, dir: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{channel}_");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_epoch = name
            .strip_prefix(&prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_epoch && entry.file_type().is_ok_and(|t| t.is_fifo()) {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(%channel, "cannot remove {}: {e}", entry.path().display());
            }
        }
    }
}
