//! FastFile mode: a channel plan mounted as a read-only FUSE file system whose
//! files stream from S3 on demand.
//!
//! The prefix is listed once, before mounting (by `chute-channel`), so every
//! metadata operation is answered from memory. Bytes move in 256 KiB aligned
//! blocks through one block cache bounded by `max_memory`:
//!
//! - [`tree`]: the inode table built from the plan;
//! - [`cache`]: blocks, the memory budget, read-ahead admission;
//! - [`prefetch`]: sequential detection and window growth per handle, and
//!   listing-order detection across files (cross-file read-ahead);
//! - [`fetch`]: ranged GETs pinned to the listed ETag, published block by block;
//! - [`fs`]: the file system operations, free of FUSE types;
//! - [`fuse`]: the thin `fuser` adapter; [`mount`]: mounting, readiness,
//!   stale-mount clean-up and unmounting;
//! - [`disk`]: the disk cache of whole objects, kept across mounts;
//! - [`background`]: the whole-channel prefetch into the disk cache;
//! - [`object`]: the compact per-object table the read path indexes.
//!
//! Read path tuning (defaults measured against `chute serve` on loopback, see
//! doc/BENCHMARKING.md): read-ahead starts at 1 MiB after a first read at
//! offset 0 and doubles per issue up to 64 MiB, in GETs of at most 8 MiB that
//! run in parallel; cross-file read-ahead keeps up to 32 MiB (at most 4 MiB per
//! file) of the next files in listing order in flight.

mod background;
mod cache;
mod disk;
mod error;
mod fetch;
mod fs;
#[cfg(test)]
mod fs_tests;
mod fuse;
mod mount;
mod object;
mod prefetch;
#[cfg(test)]
mod scale_tests;
mod stats;
mod tree;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::FastFileError;
pub use mount::{is_fd_mountpoint, mount, unmount_path, Mount};
pub use stats::MountSummary;

/// Read-path parameters; the defaults are the measured ones.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Read-ahead after the first sequential read.
    pub initial_window: u64,
    /// Read-ahead cap per open handle.
    pub max_window: u64,
    /// Largest single read-ahead GET; a window is fetched as several in parallel.
    pub part_size: u64,
    /// Bytes of the following files fetched ahead when files are read in order.
    pub cross_file_window: u64,
    /// At most this much of each following file.
    pub cross_file_per_file: u64,
    /// At most this many following files.
    pub cross_file_max: usize,
    /// Read-ahead GETs in flight across the mount.
    pub prefetch_concurrency: usize,
    /// Kernel read-ahead per file, in KiB (set on the mount's BDI when allowed).
    pub kernel_readahead_kb: u32,
    /// GETs in flight for the whole-channel prefetch (File mode's number).
    pub background_concurrency: usize,
    /// Largest GET of the whole-channel prefetch (File mode's part size).
    pub background_part_size: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        // The whole-channel prefetch is a download: it runs at File mode's settings.
        let file_mode = chute_download::DownloadOptions::default();
        Tuning {
            initial_window: 1 << 20,
            max_window: 64 << 20,
            part_size: 8 << 20,
            cross_file_window: 32 << 20,
            cross_file_per_file: 4 << 20,
            cross_file_max: 256,
            prefetch_concurrency: 32,
            kernel_readahead_kb: 1024,
            background_concurrency: file_mode.concurrency,
            background_part_size: file_mode.part_size,
        }
    }
}

/// How the mount looks and how much it may hold.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Owner of every file and directory (default: the mounting user).
    pub uid: u32,
    pub gid: u32,
    /// Permission bits of files (default 0444) and directories (default 0555).
    pub file_mode: u16,
    pub dir_mode: u16,
    /// Let users other than the mounting one in (FUSE `allow_other`).
    pub allow_other: bool,
    /// Have the kernel side unmount when this process ends, even by SIGKILL
    /// (FUSE `auto_unmount`, kept by a `fusermount3` watcher).
    pub auto_unmount: bool,
    /// Memory for read-ahead and cached blocks, all handles together.
    pub max_memory: u64,
    /// Disk cache of whole objects, kept across mounts; off when `None`.
    pub cache: Option<CacheOptions>,
    /// What to fetch before readers ask; `None`: [`Prefetch::All`] with a
    /// disk cache, [`Prefetch::Ahead`] without.
    pub prefetch: Option<Prefetch>,
    /// How the kernel reaches file contents.
    pub read_path: ReadPath,
    /// FUSE worker threads (each with its own `/dev/fuse` clone).
    pub threads: usize,
    /// Period of the `info` throughput line; `None` for none.
    pub stats_interval: Option<Duration>,
    /// Shown by `mount` / `df` as the source.
    pub fs_name: String,
    pub tuning: Tuning,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            file_mode: 0o444,
            dir_mode: 0o555,
            allow_other: false,
            auto_unmount: false,
            max_memory: default_max_memory(),
            cache: None,
            prefetch: None,
            read_path: ReadPath::PageCache,
            threads: 4,
            stats_interval: Some(Duration::from_secs(10)),
            fs_name: "chute".into(),
            tuning: Tuning::default(),
        }
    }
}

/// Where the disk cache lives and how large it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// Shared by every mount that names it; entries are keyed by bucket, key,
    /// ETag and size, so channels and mounts never see each other's bytes.
    pub dir: PathBuf,
    /// Most bytes the directory may hold; `None`: what it holds now plus what
    /// the channel still needs, within the free space less a reserve.
    pub size: Option<u64>,
}

/// How the kernel reaches the contents of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPath {
    /// Opens and closes stay in the kernel (it is told they are not
    /// implemented), so a file's pages stay in its page cache across opens
    /// and reading a cached file costs no request at all; what the page cache
    /// lacks is read through this process, from the disk cache or S3.
    #[default]
    PageCache,
    /// Every open comes to this process; files complete in the disk cache are
    /// then read by the kernel straight from the cache file (FUSE
    /// passthrough, Linux 6.9+ with `CAP_SYS_ADMIN`), others as with `Daemon`.
    Passthrough,
    /// Every open comes to this process, and every read the page cache
    /// cannot answer.
    Daemon,
}

/// How much of the channel is fetched before readers ask for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    /// Every object, in plan order, into the disk cache (needs one), plus `Ahead`.
    All,
    /// Read-ahead within open files and into the next files in listing order.
    Ahead,
    /// Only what readers ask for.
    Off,
}

impl MountOptions {
    /// The prefetch mode in effect.
    pub fn prefetch_mode(&self) -> Prefetch {
        match (self.prefetch, &self.cache) {
            (Some(Prefetch::All), None) => Prefetch::Ahead,
            (Some(p), _) => p,
            (None, Some(_)) => Prefetch::All,
            (None, None) => Prefetch::Ahead,
        }
    }
}

/// The default disk cache directory for a mount at (or a channel directory
/// under) `beside`: `.chute-cache` next to it, on the same volume, at a path
/// that does not change between runs so a later mount finds the entries.
pub fn default_cache_dir(beside: &Path) -> PathBuf {
    let parent = match beside.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parent.join(".chute-cache")
}

/// An eighth of the memory this process may use (the machine's, or the
/// container's cgroup limit when lower), at most 2 GiB and at least 64 MiB.
pub fn default_max_memory() -> u64 {
    chute_machine::default_max_memory(2 << 30)
}
