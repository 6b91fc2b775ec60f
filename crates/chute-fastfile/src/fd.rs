//! Serving a mount made by someone else: the mount point given as
//! `/dev/fd/N`, where descriptor N is a `/dev/fuse` connection that a
//! privileged helper opened and mounted (`mount(2)` with `fd=N`, as
//! `mount.fuse3 -o drop_privileges`, `chute mount-helper` and Mountpoint's CSI
//! driver do). chute then needs no `CAP_SYS_ADMIN`: it only answers the
//! kernel's requests on the descriptor.
//!
//! The helper owns the mount: chute neither creates nor removes it. When the
//! helper unmounts, the session ends and `chute mount` exits; when chute stops
//! first, the mount answers `ENOTCONN` until the helper removes it.
//!
//! A child of `mount` so that it builds the same [`Mount`] the path case does.

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chute_plan::Plan;
use chute_s3::Client;
use fuser::{BackgroundSession, SessionACL};

use super::Mount;
use crate::fs::FastFs;
use crate::fuse::Adapter;
use crate::{FastFileError, MountOptions, Prefetch};

/// `/dev/fuse` is character device 10:229 on Linux.
const FUSE_DEV: (u64, u64) = (10, 229);

/// The descriptor number in a `/dev/fd/N` mount point, if it is one.
pub fn fd_number(path: &Path) -> Option<RawFd> {
    let n = path.to_str()?.strip_prefix("/dev/fd/")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Whether `path` names a passed FUSE descriptor rather than a directory.
pub fn is_fd_mountpoint(path: &Path) -> bool {
    fd_number(path).is_some()
}

/// Our own copy of descriptor `n`, checked to be an open `/dev/fuse`.
fn take_fuse_fd(path: &Path, n: RawFd) -> Result<OwnedFd, FastFileError> {
    let bad = |detail: String| FastFileError::Options(format!("{}: {detail}", path.display()));
    // SAFETY: F_GETFD only asks whether `n` is open; it changes nothing.
    if n < 0 || unsafe { libc::fcntl(n, libc::F_GETFD) } == -1 {
        return Err(bad(format!(
            "descriptor {n} is not open; pass the descriptor of an open, mounted /dev/fuse"
        )));
    }
    // SAFETY: `n` is open (checked above) and only borrowed here, for fstat and
    // the duplicate; the caller's descriptor stays theirs.
    let borrowed = unsafe { BorrowedFd::borrow_raw(n) };
    let st = nix::sys::stat::fstat(borrowed)
        .map_err(|e| bad(format!("cannot inspect descriptor {n}: {e}")))?;
    let is_char = (st.st_mode & libc::S_IFMT) == libc::S_IFCHR;
    let dev = (
        nix::sys::stat::major(st.st_rdev),
        nix::sys::stat::minor(st.st_rdev),
    );
    if !is_char || dev != FUSE_DEV {
        return Err(bad(format!(
            "descriptor {n} is not /dev/fuse; pass the descriptor a privileged helper opened on /dev/fuse and mounted"
        )));
    }
    borrowed
        .try_clone_to_owned()
        .map_err(|e| bad(format!("cannot duplicate descriptor {n}: {e}")))
}

/// Mounts `plan` on the connection of the passed descriptor at `mountpoint`
/// (`/dev/fd/N`). The kernel's `INIT` request is waiting on it already, so
/// this returns once the session has answered it.
pub(super) fn mount_on_fd(
    client: Client,
    plan: Plan,
    mountpoint: &Path,
    n: RawFd,
    opts: MountOptions,
    runtime: tokio::runtime::Handle,
) -> Result<Mount, FastFileError> {
    super::check_options(&opts)?;
    let fd = take_fuse_fd(mountpoint, n)?;
    let fs = Arc::new(FastFs::build(plan, client.clone(), &opts, runtime.clone())?);
    let session = start_session(fs.clone(), fd, mountpoint, &opts, &runtime)?;
    let mut mount = Mount {
        mountpoint: mountpoint.to_path_buf(),
        fs,
        client,
        session: Some(session),
        // No path of ours to look the connection up by: an unmount leaves the
        // session to the helper (see [`release`]).
        conn: None,
        started: Instant::now(),
        stats_task: None,
        background: None,
    };
    if let Some(every) = opts.stats_interval {
        mount.stats_task = Some(runtime.spawn(super::report_periodically(
            mount.fs.clone(),
            mount.client.clone(),
            mount.mountpoint.clone(),
            every,
            mount.started,
        )));
    }
    if opts.prefetch_mode() == Prefetch::All {
        mount.background = crate::background::start(&mount.fs.shared);
    }
    tracing::info!(
        fd = n,
        max_memory = opts.max_memory,
        "serving a FUSE connection mounted by another process"
    );
    Ok(mount)
}

fn start_session(
    fs: Arc<FastFs>,
    fd: OwnedFd,
    mountpoint: &Path,
    opts: &MountOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<BackgroundSession, FastFileError> {
    let adapter = Adapter::new(fs, runtime.clone(), opts);
    // Mount options (read-only, nosuid, ...) were the helper's to give; what
    // is left is who may use the mount and how many threads serve it.
    let acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let mut config = fuser::Config::default();
    config.acl = acl;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let failed = |hint: &'static str| {
        let path: PathBuf = mountpoint.to_path_buf();
        move |source| FastFileError::Mount { path, hint, source }
    };
    let session = fuser::Session::from_fd(adapter, fd, acl, config).map_err(failed(
        "the descriptor must be a /dev/fuse connection that was mounted and not used yet",
    ))?;
    session
        .spawn()
        .map_err(failed("cannot start the FUSE threads"))
}

/// Ends our side of a passed connection without unmounting: the helper that
/// mounted it removes it. The session threads end with the process (or at
/// once, if the helper has unmounted already).
pub(super) fn release(session: BackgroundSession) {
    if session.guard.is_finished() {
        if let Err(e) = session.join() {
            tracing::debug!("FUSE session ended with: {e}");
        }
    } else {
        // Joining would wait for the helper's unmount.
        std::mem::forget(session);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use chute_plan::Classify as _;

    use super::*;

    #[test]
    fn only_dev_fd_paths_are_descriptors() {
        assert_eq!(fd_number(Path::new("/dev/fd/3")), Some(3));
        assert_eq!(fd_number(Path::new("/dev/fd/17")), Some(17));
        assert_eq!(fd_number(Path::new("/dev/fd/")), None);
        assert_eq!(fd_number(Path::new("/dev/fd/3a")), None);
        assert_eq!(fd_number(Path::new("/mnt/dev/fd/3")), None);
        assert_eq!(fd_number(Path::new("/dev/fd/-1")), None);
    }

    #[test]
    fn a_descriptor_that_is_not_fuse_is_refused_naming_it() {
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        let n = file.as_raw_fd();
        let path = PathBuf::from(format!("/dev/fd/{n}"));
        let err = take_fuse_fd(&path, n).expect_err("not fuse");
        assert!(err.to_string().contains("is not /dev/fuse"), "{err}");
        assert!(err.is_usage());
    }
}
