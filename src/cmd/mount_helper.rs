//! `chute mount-helper MOUNTPOINT -- CMD ARGS...`: the privileged half of an
//! unprivileged mount.
//!
//! It opens `/dev/fuse`, mounts that connection at MOUNTPOINT (`mount(2)` with
//! the `fd=N` option, which needs `CAP_SYS_ADMIN`), and runs CMD with the
//! descriptor inherited; `{fd}` in CMD's arguments becomes N, so
//! `chute mount SOURCE /dev/fd/{fd}` serves the mount with no privilege at all
//! (run CMD under `setpriv`, `su` or a container without capabilities). When
//! CMD exits the mount is removed and the helper exits with CMD's code.
//! SIGINT and SIGTERM are passed on to CMD.
//!
//! The helper keeps no copy of the descriptor once CMD has it: a FUSE
//! connection whose server is gone must fail fast (ENOTCONN), not hang readers
//! on a descriptor nobody reads.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

use crate::exit::UsageError;

#[derive(Debug, Args)]
#[command(
    after_help = "Example (CMD runs without any capability):\n  chute mount-helper /mnt/data -- setpriv --reuid=1000 --regid=1000 --clear-groups \\\n      --inh-caps=-all chute mount s3://bucket/train/ /dev/fd/{fd}"
)]
pub struct MountHelperArgs {
    /// Directory to mount the FUSE connection on.
    pub mountpoint: PathBuf,
    /// Let users other than the one serving the mount use it.
    #[arg(long)]
    pub allow_other: bool,
    /// The user the mount belongs to (the one CMD serves it as; default: this one).
    #[arg(long)]
    pub uid: Option<u32>,
    /// The group the mount belongs to (default: this user's).
    #[arg(long)]
    pub gid: Option<u32>,
    /// The command that serves the mount; `{fd}` in it becomes the descriptor number.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

pub async fn run(args: MountHelperArgs) -> anyhow::Result<ExitCode> {
    let mp = &args.mountpoint;
    match std::fs::metadata(mp) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(UsageError(format!(
                "mount point {} is not a directory (pass an empty directory)",
                mp.display()
            ))
            .into())
        }
        Err(e) => {
            return Err(UsageError(format!(
                "mount point {}: {e} (create the directory first)",
                mp.display()
            ))
            .into())
        }
    }
    let fd = open_fuse()?;
    let n = fd.as_raw_fd();
    let uid = args.uid.unwrap_or_else(|| nix::unistd::getuid().as_raw());
    let gid = args.gid.unwrap_or_else(|| nix::unistd::getgid().as_raw());
    let mut data =
        format!("fd={n},rootmode=40000,user_id={uid},group_id={gid},default_permissions");
    if args.allow_other {
        data.push_str(",allow_other");
    }
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME;
    mount(Some("chute"), mp, Some("fuse.chute"), flags, Some(data.as_str())).map_err(|e| {
        anyhow::anyhow!(
            "cannot mount a FUSE connection at {}: {e} (chute mount-helper needs CAP_SYS_ADMIN: run it as root or in a privileged container)",
            mp.display()
        )
    })?;

    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| UsageError("chute mount-helper needs a command after --".into()))?;
    let with_fd = |a: &OsString| -> OsString {
        match a.to_str() {
            Some(s) if s.contains("{fd}") => s.replace("{fd}", &n.to_string()).into(),
            _ => a.clone(),
        }
    };
    let spawned = tokio::process::Command::new(with_fd(program))
        .args(rest.iter().map(with_fd))
        .spawn();
    // CMD holds the connection now (or nobody does); ours must not keep it alive.
    drop(fd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            detach(mp);
            return Err(
                UsageError(format!("cannot run {}: {e}", program.to_string_lossy())).into(),
            );
        }
    };
    let status = forward_signals_until_exit(&mut child).await;
    detach(mp);
    let status = status.context("cannot wait for the command")?;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// `/dev/fuse`, open for reading and writing and inherited by children
/// (no close-on-exec: passing it on is the point).
fn open_fuse() -> anyhow::Result<OwnedFd> {
    open("/dev/fuse", OFlag::O_RDWR, Mode::empty())
        .map_err(|e| anyhow::anyhow!("cannot open /dev/fuse: {e} (is the fuse module loaded and the device passed into the container?)"))
}

/// Removes the mount (lazily: a reader still inside it keeps nothing alive).
fn detach(mp: &std::path::Path) {
    if let Err(e) = umount2(mp, MntFlags::MNT_DETACH) {
        tracing::warn!("cannot unmount {}: {e}", mp.display());
    }
}

async fn forward_signals_until_exit(
    child: &mut tokio::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        let sig = tokio::select! {
            status = child.wait() => return status,
            _ = term.recv() => libc::SIGTERM,
            _ = int.recv() => libc::SIGINT,
        };
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
    }
}
