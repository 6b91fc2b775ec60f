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
//! - [`disk`]: the optional disk cache of blocks.
//!
//! Read path tuning (defaults measured against `chute serve` on loopback, see
//! doc/BENCHMARKING.md): read-ahead starts at 1 MiB after a first read at
//! offset 0 and doubles per issue up to 64 MiB, in GETs of at most 8 MiB that
//! run in parallel; cross-file read-ahead keeps up to 32 MiB (at most 4 MiB per
//! file) of the next files in listing order in flight.

mod cache;
mod disk;
mod error;
mod fetch;
mod fs;
mod fuse;
mod mount;
mod prefetch;
mod stats;
mod tree;

use std::path::PathBuf;
use std::time::Duration;

pub use error::FastFileError;
pub use mount::{mount, unmount_path, Mount};
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
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            initial_window: 1 << 20,
            max_window: 64 << 20,
            part_size: 8 << 20,
            cross_file_window: 32 << 20,
            cross_file_per_file: 4 << 20,
            cross_file_max: 256,
            prefetch_concurrency: 32,
            kernel_readahead_kb: 1024,
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
    /// Memory for read-ahead and cached blocks, all handles together.
    pub max_memory: u64,
    /// Disk cache of blocks, off when `None`.
    pub cache_dir: Option<PathBuf>,
    pub cache_size: u64,
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
            max_memory: default_max_memory(),
            cache_dir: None,
            cache_size: 0,
            threads: 4,
            stats_interval: Some(Duration::from_secs(10)),
            fs_name: "chute".into(),
            tuning: Tuning::default(),
        }
    }
}

/// An eighth of the memory this process may use (the machine's, or the
/// container's cgroup limit when lower), at most 2 GiB and at least 64 MiB.
pub fn default_max_memory() -> u64 {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let mem = match (ram, cgroup) {
        (Some(r), Some(c)) => r.min(c),
        (Some(r), None) => r,
        (None, Some(c)) => c,
        (None, None) => 8 << 30,
    };
    (mem / 8).clamp(64 << 20, 2 << 30)
}
