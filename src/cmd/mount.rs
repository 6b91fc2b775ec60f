//! `chute mount` and `chute unmount`: FastFile mode from the command line.
//!
//! The channel is resolved (listed, or its manifest read) *before* anything is
//! mounted, so a bad source fails with exit 3 and leaves no mount behind.
//!
//! `--daemon` re-executes this binary in the foreground with a hidden
//! `--daemon-child` flag, in its own process group, with its standard output
//! as a pipe back to the parent: the child writes one `ready` line once the
//! mount answers (or an `error` line), and the parent exits 0 on `ready` or
//! with the child's exit code otherwise. Re-exec rather than fork because the
//! tokio runtime's threads already exist and do not survive a fork. After
//! start-up the child's logs go to `--log-file` (default: discarded).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use chute_channel::open;
use chute_fastfile::{CacheOptions, FastFileError, MountOptions, Prefetch, ReadPath};
use chute_plan::Classify;
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::SourceArgs;
use crate::exit::UsageError;
use crate::options::{channel_request, size_option, CACHE_SIZE, MOUNT_MEMORY};

const READY: &str = "chute-mount: ready";
const ERROR_PREFIX: &str = "chute-mount: error: ";

#[derive(Debug, Args)]
pub struct MountArgs {
    /// SOURCE then MOUNTPOINT; give only MOUNTPOINT with --manifest / --augmented-manifest.
    #[arg(value_name = "SOURCE MOUNTPOINT", num_args = 1..=2, required = true)]
    pub paths: Vec<String>,
    /// Stay attached until SIGINT/SIGTERM or `chute unmount` (the default).
    #[arg(long, conflicts_with = "daemon")]
    pub foreground: bool,
    /// Return once the mount is ready, leaving it served by a background process.
    #[arg(long)]
    pub daemon: bool,
    #[arg(long, hide = true)]
    pub daemon_child: bool,
    /// With --daemon: append the background process's log here.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Owner of every file and directory (default: the mounting user).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of every file and directory (default: the mounting user's).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits of files, in octal.
    #[arg(long, value_name = "OCTAL", default_value = "0444")]
    pub file_mode: String,
    /// Permission bits of directories, in octal.
    #[arg(long, value_name = "OCTAL", default_value = "0555")]
    pub dir_mode: String,
    /// Let users other than the mounting one use the mount.
    #[arg(long)]
    pub allow_other: bool,
    /// Memory for read-ahead and cached blocks, e.g. 512MiB (default: 1/8 of RAM, at most 2GiB).
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    /// Disk cache directory, kept across mounts (default: .chute-cache beside the mount point).
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the disk cache may hold, e.g. 20GiB (default: from free space and the channel's size).
    #[arg(long, value_name = "BYTES", conflicts_with = "no_cache")]
    pub cache_size: Option<String>,
    /// No disk cache: objects stream from S3 through memory only.
    #[arg(long)]
    pub no_cache: bool,
    /// What to fetch before it is read: all (the whole channel, into the disk
    /// cache), ahead (read-ahead within and across files), off [default: all
    /// with a disk cache, else ahead].
    #[arg(long, value_name = "MODE", value_parser = ["all", "ahead", "off"])]
    pub prefetch: Option<String>,
    /// How the kernel reaches file contents: page-cache (opens stay in the
    /// kernel and a file's pages are kept across opens; misses come to chute),
    /// passthrough (every open comes to chute; files complete in the disk
    /// cache are read by the kernel from the cache file, Linux 6.9+ as root),
    /// daemon (every open and every page cache miss comes to chute)
    /// [default: page-cache].
    #[arg(long, value_name = "PATH", value_parser = ["page-cache", "passthrough", "daemon"])]
    pub read_path: Option<String>,
    /// Same as --read-path daemon.
    #[arg(long, hide = true, conflicts_with = "read_path")]
    pub no_passthrough: bool,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Seconds between throughput lines at --log info (0: none).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub stats_interval: u64,
    #[command(flatten)]
    pub src: SourceArgs,
    #[command(flatten)]
    pub compat: super::mount_compat::CompatArgs,
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    /// The mount point given to `chute mount`.
    pub mountpoint: PathBuf,
}

pub async fn run(args: MountArgs) -> anyhow::Result<ExitCode> {
    let args = super::mount_compat::apply(args)?;
    if args.daemon {
        return daemonize(&args).await;
    }
    let child = args.daemon_child;
    let res = foreground(args, child).await;
    if child {
        if let Err(e) = &res {
            // The parent shows this line; the log (if any) gets the full error.
            announce(&format!("{ERROR_PREFIX}{}", crate::exit::render(e)));
        }
    }
    res
}

pub async fn unmount(args: UnmountArgs) -> anyhow::Result<ExitCode> {
    let mp = args.mountpoint.clone();
    tokio::task::spawn_blocking(move || chute_fastfile::unmount_path(&mp))
        .await
        .context("unmount task failed")?
        .map_err(fastfile_error)?;
    eprintln!("chute unmount: unmounted {}", args.mountpoint.display());
    Ok(ExitCode::SUCCESS)
}

/// Usage problems exit 2; the rest (no FUSE, no permission) exit 1.
fn fastfile_error(e: FastFileError) -> anyhow::Error {
    // The library's errors name no flags; these are worded in this command's terms.
    let flag_message = match &e {
        FastFileError::Cache { dir, source } => Some(format!(
            "cannot use the disk cache directory {}: {source} (give a writable one with --cache-dir, or --no-cache)",
            dir.display()
        )),
        FastFileError::MemoryTooSmall { given, min } => Some(format!(
            "--max-memory {given} is too small: give at least {}MiB",
            min >> 20
        )),
        FastFileError::ThreadsOutOfRange { given, max } => {
            Some(format!("--threads {given} is out of range (1-{max})"))
        }
        FastFileError::BadMode { file, dir } => Some(format!(
            "--file-mode {file:o} / --dir-mode {dir:o}: permission bits must be within 7777"
        )),
        _ => None,
    };
    if let Some(message) = flag_message {
        return UsageError(message).into();
    }
    if e.is_usage() {
        UsageError(e.to_string()).into()
    } else {
        e.into()
    }
}

fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// SOURCE and MOUNTPOINT from the positional arguments.
fn split_paths(args: &MountArgs) -> anyhow::Result<(Option<String>, PathBuf)> {
    let manifest = args.src.manifest.is_some() || args.src.augmented_manifest.is_some();
    match (args.paths.as_slice(), manifest) {
        ([source, mp], _) => Ok((Some(source.clone()), PathBuf::from(mp))),
        ([mp], true) => Ok((None, PathBuf::from(mp))),
        ([_], false) => Err(UsageError(
            "chute mount needs SOURCE and MOUNTPOINT (or --manifest URI and MOUNTPOINT)".into(),
        )
        .into()),
        _ => Err(UsageError("chute mount takes SOURCE and MOUNTPOINT".into()).into()),
    }
}

fn mount_options(args: &MountArgs, mountpoint: &Path) -> anyhow::Result<MountOptions> {
    let mut o = MountOptions::default();
    if let Some(uid) = args.uid {
        o.uid = uid;
    }
    if let Some(gid) = args.gid {
        o.gid = gid;
    }
    o.file_mode = parse_mode("--file-mode", &args.file_mode)?;
    o.dir_mode = parse_mode("--dir-mode", &args.dir_mode)?;
    o.allow_other = args.allow_other;
    o.auto_unmount = args.compat.auto_unmount;
    if let Some(m) = &args.max_memory {
        o.max_memory = size_option("--max-memory", m, MOUNT_MEMORY)?;
    }
    if !args.no_cache {
        let size = match &args.cache_size {
            Some(s) => Some(size_option("--cache-size", s, CACHE_SIZE)?),
            None => None,
        };
        match &args.cache_dir {
            Some(dir) => {
                o.cache = Some(CacheOptions {
                    dir: dir.clone(),
                    size,
                })
            }
            None => {
                // Beside the mount point, so a later mount of the same place finds it.
                let mp = std::fs::canonicalize(mountpoint).unwrap_or(mountpoint.to_path_buf());
                let dir = chute_fastfile::default_cache_dir(&mp);
                match std::fs::create_dir_all(&dir) {
                    Ok(()) => o.cache = Some(CacheOptions { dir, size }),
                    Err(e) => tracing::warn!(
                        "no disk cache: cannot create {}: {e} (pick a writable place with --cache-dir)",
                        dir.display()
                    ),
                }
            }
        }
    }
    o.prefetch = match args.prefetch.as_deref() {
        Some("all") => {
            if args.no_cache {
                return Err(UsageError(
                    "--prefetch all fetches into the disk cache: drop --no-cache".into(),
                )
                .into());
            }
            Some(Prefetch::All)
        }
        Some("ahead") => Some(Prefetch::Ahead),
        Some("off") => Some(Prefetch::Off),
        _ => None,
    };
    o.read_path = match args.read_path.as_deref() {
        Some("passthrough") => ReadPath::Passthrough,
        Some("daemon") => ReadPath::Daemon,
        _ if args.no_passthrough => ReadPath::Daemon,
        _ => ReadPath::PageCache,
    };
    o.threads = args.threads;
    o.stats_interval = (args.stats_interval > 0).then(|| Duration::from_secs(args.stats_interval));
    Ok(o)
}

fn parse_mode(flag: &str, s: &str) -> anyhow::Result<u16> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u16::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(UsageError(format!(
            "{flag} '{s}' is not an octal mode (for example 0444 or 755)"
        ))
        .into()),
    }
}

async fn foreground(args: MountArgs, daemon_child: bool) -> anyhow::Result<ExitCode> {
    let (source_arg, mp) = split_paths(&args)?;
    let mopts = mount_options(&args, &mp)?;
    // Cheap checks first: a missing mount point should not cost a listing.
    match std::fs::metadata(&mp) {
        Ok(m) if !m.is_dir() && !chute_fastfile::is_fd_mountpoint(&mp) => {
            return Err(fastfile_error(FastFileError::NotADirectory { path: mp }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fastfile_error(FastFileError::MissingMountPoint {
                path: mp,
            }))
        }
        _ => {}
    }
    // Handlers before the mount exists, so no signal can leave it behind.
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    let request = channel_request(source_arg.as_deref(), &args.src, None)?;
    let started = Instant::now();
    let channel = open(request).await?;
    let metrics_channel = chute_metrics::channel_name(&mp);
    chute_metrics::global().add_client(&metrics_channel, channel.client.stats().clone());
    let (client, plan) = channel.into_host_plan();
    let (objects, bytes) = (plan.objects.len(), plan.total_bytes());
    let handle = tokio::runtime::Handle::current();
    let mp2 = mp.clone();
    let mount = tokio::task::spawn_blocking(move || {
        chute_fastfile::mount(client, plan, &mp2, mopts, handle)
    })
    .await
    .context("mount task failed")?
    .map_err(fastfile_error)?;
    chute_metrics::global().add_mount(&metrics_channel, mount.summary_source());
    let shown = mount.mountpoint().display().to_string();
    if daemon_child {
        announce(&format!(
            "{READY} {objects} objects, {bytes} bytes at {shown} (pid {})",
            std::process::id()
        ));
    } else {
        announce(&format!(
            "chute mount: {objects} objects, {bytes} bytes at {shown} (ready in {:.2}s)",
            started.elapsed().as_secs_f64()
        ));
    }
    let external = tokio::select! {
        _ = term.recv() => false,
        _ = int.recv() => false,
        _ = mount.closed() => true,
    };
    if external {
        tracing::info!(mountpoint = %shown, "unmounted from outside");
    }
    let summary = tokio::task::spawn_blocking(move || mount.unmount())
        .await
        .context("unmount task failed")?
        .map_err(fastfile_error)?;
    eprintln!("chute mount: unmounted {shown}; {summary}");
    Ok(ExitCode::SUCCESS)
}

/// Starts the mount in a background process and waits until it is ready.
async fn daemonize(args: &MountArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the chute executable to re-run")?;
    let child_args: Vec<std::ffi::OsString> = super::mount_compat::args_os()
        .into_iter()
        .skip(1)
        .map(|a| {
            if a == "--daemon" {
                "--daemon-child".into()
            } else {
                a
            }
        })
        .collect();
    let stderr = match &args.log_file {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| UsageError(format!("--log-file {}: {e}", path.display())))?,
        ),
        None => Stdio::null(),
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(child_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    // Its own process group: a Ctrl-C meant for the shell does not reach it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().context("cannot start the background mount")?;
    let Some(out) = child.stdout.take() else {
        anyhow::bail!("cannot read the background mount's status");
    };
    let status = tokio::task::spawn_blocking(move || -> anyhow::Result<Result<String, String>> {
        let mut reader = BufReader::new(out);
        let mut line = String::new();
        let mut error = None;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            let l = line.trim_end();
            if l.starts_with(READY) {
                // Drain nothing more: the child keeps running with the pipe
                // closed on our side; its later output goes to the log file.
                return Ok(Ok(l.to_owned()));
            }
            if let Some(msg) = l.strip_prefix(ERROR_PREFIX) {
                error = Some(msg.to_owned());
            }
        }
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        Ok(Err(error.unwrap_or_else(|| {
            "the background mount exited before it was ready".into()
        })))
    })
    .await
    .context("status reader failed")??;
    match status {
        Ok(line) => {
            println!("{}", line.replacen(READY, "chute mount:", 1));
            Ok(ExitCode::SUCCESS)
        }
        Err(msg) => {
            let code = tokio::task::spawn_blocking(move || child.wait())
                .await
                .context("wait task failed")?
                .context("cannot wait for the background mount")?
                .code()
                .unwrap_or(1);
            eprintln!("chute: error: {msg}");
            let code = u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1);
            Ok(ExitCode::from(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("x", "0444").expect("ok"), 0o444);
        assert_eq!(parse_mode("x", "755").expect("ok"), 0o755);
        assert!(parse_mode("x", "999").is_err());
    }
}
