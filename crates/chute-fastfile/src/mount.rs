//! Mounting and unmounting: mount-point checks (including clearing a stale
//! mount a killed process left behind), the FUSE session on its own threads,
//! waiting until the mount answers, the periodic statistics line, and an
//! unmount that never hangs on a busy mount point.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chute_plan::Plan;
use chute_s3::Client;
use fuser::{BackgroundSession, MountOption, SessionACL};
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use crate::background;
use crate::fs::FastFs;
use crate::fuse::Adapter;
use crate::{FastFileError, MountOptions, MountSummary, Prefetch};

#[path = "fd.rs"]
mod fd;
pub use fd::is_fd_mountpoint;

/// `statfs` type of a FUSE file system.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Smallest memory budget: a few blocks per reader and some read-ahead.
const MIN_MEMORY: u64 = 8 << 20;
const MAX_THREADS: usize = 64;

/// A live mount. Dropping it unmounts.
pub struct Mount {
    mountpoint: PathBuf,
    fs: Arc<FastFs>,
    client: Client,
    /// The FUSE session's threads; `None` once unmounted.
    session: Option<BackgroundSession>,
    /// The FUSE connection number (the mount's device minor), to abort it if
    /// an unmount finds the mount busy.
    conn: Option<u64>,
    started: Instant,
    stats_task: Option<tokio::task::JoinHandle<()>>,
    /// The whole-channel prefetch, when on.
    background: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("mountpoint", &self.mountpoint)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

/// Mounts `plan` (already sharded) at `mountpoint`; returns once the mount
/// answers. Reads run on `runtime`.
pub fn mount(
    client: Client,
    plan: Plan,
    mountpoint: &Path,
    opts: MountOptions,
    runtime: tokio::runtime::Handle,
) -> Result<Mount, FastFileError> {
    if let Some(n) = fd::fd_number(mountpoint) {
        return fd::mount_on_fd(client, plan, mountpoint, n, opts, runtime);
    }
    check_options(&opts)?;
    let mp = prepare_mountpoint(mountpoint)?;
    let fs = Arc::new(FastFs::build(plan, client.clone(), &opts, runtime.clone())?);
    let session = start_session(fs.clone(), &mp, &opts, &runtime)?;
    let mut mount = Mount {
        mountpoint: mp.clone(),
        fs,
        client,
        session: Some(session),
        conn: None,
        started: Instant::now(),
        stats_task: None,
        background: None,
    };
    // From here on, dropping `mount` unmounts: no failure leaves a mount behind.
    wait_ready(&mp)?;
    mount.conn = std::fs::metadata(&mp)
        .ok()
        .map(|m| nix::sys::stat::minor(m.dev()));
    if let Some(conn) = mount.conn {
        set_kernel_readahead(conn, opts.tuning.kernel_readahead_kb);
    }
    if let Some(every) = opts.stats_interval {
        mount.stats_task = Some(runtime.spawn(report_periodically(
            mount.fs.clone(),
            mount.client.clone(),
            mp.clone(),
            every,
            mount.started,
        )));
    }
    if opts.prefetch_mode() == Prefetch::All {
        mount.background = background::start(&mount.fs.shared);
    }
    tracing::info!(
        mountpoint = %mp.display(),
        files = mount.fs.tree.files,
        dirs = mount.fs.tree.dirs,
        max_memory = opts.max_memory,
        prefetch = ?opts.prefetch_mode(),
        disk_cache = mount.fs.shared.disk.is_some(),
        "mounted"
    );
    Ok(mount)
}

/// The FUSE session serving `fs` at `mp`, on its own threads.
fn start_session(
    fs: Arc<FastFs>,
    mp: &Path,
    opts: &MountOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<BackgroundSession, FastFileError> {
    let adapter = Adapter::new(fs, runtime.clone(), opts);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fs_name.clone()),
        MountOption::Subtype("chute".into()),
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    if opts.auto_unmount {
        // fusermount3 keeps the watcher only for mounts it may open to others;
        // root and the owner still are the only users let in.
        config.mount_options.push(MountOption::AutoUnmount);
        if config.acl == SessionACL::Owner {
            config.acl = SessionACL::RootAndOwner;
        }
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let session =
        fuser::Session::new(adapter, mp, &config).map_err(|source| FastFileError::Mount {
            path: mp.to_path_buf(),
            hint: mount_hint(&source),
            source,
        })?;
    session.spawn().map_err(|source| FastFileError::Mount {
        path: mp.to_path_buf(),
        hint: "cannot start the FUSE threads",
        source,
    })
}

fn check_options(opts: &MountOptions) -> Result<(), FastFileError> {
    if opts.file_mode > 0o7777 || opts.dir_mode > 0o7777 {
        return Err(FastFileError::BadMode {
            file: opts.file_mode,
            dir: opts.dir_mode,
        });
    }
    if opts.max_memory < MIN_MEMORY {
        return Err(FastFileError::MemoryTooSmall {
            given: opts.max_memory,
            min: MIN_MEMORY,
        });
    }
    if opts.threads == 0 || opts.threads > MAX_THREADS {
        return Err(FastFileError::ThreadsOutOfRange {
            given: opts.threads,
            max: MAX_THREADS,
        });
    }
    Ok(())
}

fn mount_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => {
            "is /dev/fuse present? In a container pass --device /dev/fuse --cap-add SYS_ADMIN"
        }
        io::ErrorKind::PermissionDenied => {
            "run as root, or install fuse3 (fusermount3) for unprivileged mounts"
        }
        _ => "check that /dev/fuse is usable and the mount point is an empty directory",
    }
}

/// Whether `mp` is a FUSE mount whose process is gone. `statfs` always asks
/// the file system (a `stat` may be answered from cached attributes), so it
/// is what reveals a dead connection.
fn is_stale(mp: &Path) -> bool {
    matches!(nix::sys::statfs::statfs(mp), Err(Errno::ENOTCONN))
}

/// Checks the mount point, clearing a stale FUSE mount left on it.
fn prepare_mountpoint(mp: &Path) -> Result<PathBuf, FastFileError> {
    if is_stale(mp) {
        clear_stale(mp)?;
    }
    let meta = match std::fs::metadata(mp) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            clear_stale(mp)?;
            std::fs::metadata(mp).map_err(|source| FastFileError::MountPointIo {
                path: mp.to_path_buf(),
                source,
            })?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FastFileError::MissingMountPoint {
                path: mp.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(FastFileError::MountPointIo {
                path: mp.to_path_buf(),
                source,
            })
        }
        Ok(m) => m,
    };
    if !meta.is_dir() {
        return Err(FastFileError::NotADirectory {
            path: mp.to_path_buf(),
        });
    }
    let mp = mp
        .canonicalize()
        .map_err(|source| FastFileError::MountPointIo {
            path: mp.to_path_buf(),
            source,
        })?;
    if is_mount_point(&mp, &meta) {
        return Err(FastFileError::AlreadyMounted { path: mp });
    }
    Ok(mp)
}

fn is_mount_point(mp: &Path, meta: &std::fs::Metadata) -> bool {
    match mp.parent().map(std::fs::metadata) {
        Some(Ok(parent)) => parent.dev() != meta.dev() || parent.ino() == meta.ino(),
        // The root directory is always a mount point.
        _ => true,
    }
}

/// Detaches a dead FUSE mount ("Transport endpoint is not connected").
fn clear_stale(mp: &Path) -> Result<(), FastFileError> {
    tracing::warn!(
        mountpoint = %mp.display(),
        "found a stale FUSE mount (its process is gone: transport endpoint is not connected); clearing it"
    );
    match umount2(mp, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(Errno::EPERM) => fusermount(mp, true),
        Err(e) => Err(FastFileError::Unmount {
            path: mp.to_path_buf(),
            detail: format!("cannot clear the stale mount: {e}"),
        }),
    }
}

/// Unmounts through the setuid helper, for users who may not call umount2.
fn fusermount(mp: &Path, lazy: bool) -> Result<(), FastFileError> {
    let mut last = String::from("fusermount3 / fusermount not found (install fuse3)");
    for bin in ["fusermount3", "fusermount"] {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("-u").arg("-q");
        if lazy {
            cmd.arg("-z");
        }
        match cmd.arg("--").arg(mp).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                last = format!(
                    "{bin} -u failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => last = format!("{bin}: {e}"),
        }
    }
    Err(FastFileError::Unmount {
        path: mp.to_path_buf(),
        detail: last,
    })
}

// The type field is `long` or `int` depending on the target.
#[allow(clippy::unnecessary_cast)]
fn is_fuse(mp: &Path) -> bool {
    nix::sys::statfs::statfs(mp)
        .map(|s| s.filesystem_type().0 as i64 == FUSE_SUPER_MAGIC)
        .unwrap_or(false)
}

fn wait_ready(mp: &Path) -> Result<(), FastFileError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        if is_fuse(mp) && std::fs::metadata(mp).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(FastFileError::NotReady {
                path: mp.to_path_buf(),
                secs: READY_TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Raises the kernel's read-ahead for this mount (root only; best effort):
/// FUSE starts at 128 KiB, which caps a buffered sequential reader at one
/// 128 KiB request at a time.
fn set_kernel_readahead(conn: u64, kb: u32) {
    let path = format!("/sys/class/bdi/0:{conn}/read_ahead_kb");
    if let Err(e) = std::fs::write(&path, kb.to_string()) {
        tracing::debug!(%path, "cannot set the kernel read-ahead: {e}");
    }
}

/// Aborts a FUSE connection, so that readers of a lazily detached mount get
/// an error instead of waiting on a file system that is going away.
fn abort_connection(conn: u64) {
    let path = format!("/sys/fs/fuse/connections/{conn}/abort");
    if let Err(e) = std::fs::write(&path, "1") {
        tracing::debug!(%path, "cannot abort the FUSE connection: {e}");
    }
}

async fn report_periodically(
    fs: Arc<FastFs>,
    client: Client,
    mp: PathBuf,
    every: Duration,
    started: Instant,
) {
    let mut last = MountSummary::default();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = summary_of(&fs, &client, started);
        let d = now.since(&last);
        if d.reads > 0 || d.get_requests > 0 {
            let secs = d.elapsed.as_secs_f64().max(1e-9);
            tracing::info!(
                "fastfile {}: {:.1} MB/s served, {} GETs, {:.1} MB prefetched vs {:.1} MB served, \
                 cache hit rate {:.1}%, {} retries, {} read errors",
                mp.display(),
                d.bytes_served as f64 / 1e6 / secs,
                d.get_requests,
                d.bytes_prefetched as f64 / 1e6,
                d.bytes_served as f64 / 1e6,
                d.hit_rate() * 100.0,
                d.retries,
                d.errors
            );
        }
        last = now;
    }
}

fn summary_of(fs: &FastFs, client: &Client, started: Instant) -> MountSummary {
    fs.shared.stats.snapshot(
        client.stats().snapshot(),
        started.elapsed(),
        fs.shared.cache.peak(),
    )
}

impl Mount {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What the mount has done so far.
    pub fn summary(&self) -> MountSummary {
        summary_of(&self.fs, &self.client, self.started)
    }

    /// Reads this mount's counters from elsewhere (the metrics endpoint);
    /// `None` once the mount is gone. Holds no memory of the mount alive.
    pub fn summary_source(&self) -> impl Fn() -> Option<MountSummary> + Send + Sync + 'static {
        let fs = Arc::downgrade(&self.fs);
        let client = self.client.clone();
        let started = self.started;
        move || fs.upgrade().map(|fs| summary_of(&fs, &client, started))
    }

    /// Resolves when the file system has gone away without [`Mount::unmount`]
    /// (`chute unmount`, `umount`, `fusermount3 -u`).
    pub async fn closed(&self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !self.is_closed() {
            tick.tick().await;
        }
    }

    fn is_closed(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts and returns what the mount did. A busy mount point (files
    /// still open) is detached lazily and its connection aborted, so this
    /// never waits on readers.
    pub fn unmount(mut self) -> Result<MountSummary, FastFileError> {
        let res = self.unmount_inner();
        let summary = self.summary();
        res.map(|()| summary)
    }

    fn unmount_inner(&mut self) -> Result<(), FastFileError> {
        let closed = self.is_closed();
        let Some(session) = self.session.take() else {
            return Ok(());
        };

        if let Some(t) = self.stats_task.take() {
            t.abort();
        }
        if let Some(t) = self.background.take() {
            t.abort();
        }
        if fd::is_fd_mountpoint(&self.mountpoint) {
            fd::release(session);
            return Ok(());
        }
        let mp = self.mountpoint.clone();
        let mut result = Ok(());
        if !closed {
            match umount2(&mp, MntFlags::empty()) {
                Ok(()) => {}
                // Already gone (unmounted from outside while we looked).
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(Errno::EBUSY) => {
                    tracing::warn!(
                        mountpoint = %mp.display(),
                        "mount point busy (files still open): detaching it lazily; open files now fail"
                    );
                    if let Err(e) = umount2(&mp, MntFlags::MNT_DETACH) {
                        result = Err(FastFileError::Unmount {
                            path: mp.clone(),
                            detail: e.to_string(),
                        });
                    }
                    if let Some(conn) = self.conn {
                        abort_connection(conn);
                    }
                }
                Err(Errno::EPERM) => {
                    if let Err(e) = fusermount(&mp, false) {
                        tracing::warn!("{e}; detaching lazily");
                        result = fusermount(&mp, true);
                    }
                }
                Err(e) => {
                    result = Err(FastFileError::Unmount {
                        path: mp.clone(),
                        detail: e.to_string(),
                    })
                }
            }
        }
        // The session threads end when the kernel drops the connection; if
        // something still holds it, abort it rather than wait forever.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut aborted = false;
        while !session.guard.is_finished() {
            if Instant::now() > deadline {
                if aborted {
                    tracing::warn!(mountpoint = %mp.display(), "FUSE session did not end; leaving it");
                    // Joining would block; the threads end with the process.
                    std::mem::forget(session);
                    return result;
                }
                if let Some(conn) = self.conn {
                    abort_connection(conn);
                }
                aborted = true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The file system is gone already; this only joins the finished
        // threads (its own unmount attempt finds nothing and says so).
        if let Err(e) = session.umount_and_join() {
            tracing::debug!("FUSE session ended with: {e}");
        }
        if let Some(disk) = &self.fs.shared.disk {
            disk.settle(Duration::from_secs(30));
        }
        result
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::warn!("{e}");
        }
    }
}

/// Unmounts whatever FUSE file system is at `mountpoint` (`chute unmount`);
/// a dead one is detached. A busy one is detached lazily: it disappears from
/// the tree at once and its chute process exits when the last file closes.
pub fn unmount_path(mountpoint: &Path) -> Result<(), FastFileError> {
    if is_stale(mountpoint) {
        return clear_stale(mountpoint);
    }
    match std::fs::metadata(mountpoint) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return clear_stale(mountpoint),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FastFileError::MissingMountPoint {
                path: mountpoint.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(FastFileError::MountPointIo {
                path: mountpoint.to_path_buf(),
                source,
            })
        }
        Ok(_) => {}
    }
    if !is_fuse(mountpoint) {
        return Err(FastFileError::NotMounted {
            path: mountpoint.to_path_buf(),
        });
    }
    match umount2(mountpoint, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::EBUSY) => {
            tracing::warn!(
                mountpoint = %mountpoint.display(),
                "mount point busy (files still open): detached lazily; it goes away when they close"
            );
            umount2(mountpoint, MntFlags::MNT_DETACH).map_err(|e| FastFileError::Unmount {
                path: mountpoint.to_path_buf(),
                detail: e.to_string(),
            })
        }
        Err(Errno::EPERM) => fusermount(mountpoint, false),
        Err(e) => Err(FastFileError::Unmount {
            path: mountpoint.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}
