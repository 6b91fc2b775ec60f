//! What this machine, or the container chute runs in, gives the process: the
//! memory it may use, within its cgroup limit. Every mode sizes its in-memory
//! budget from here, so that FastFile, Pipe and `chute run` agree on one rule.
//!
//! Kept in its own crate, below the modes, because reading `/proc` and
//! `/sys/fs/cgroup` is I/O that the pure planning crate must not do.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::Path;

/// The least any mode is given by default.
pub const MIN_DEFAULT_MEMORY: u64 = 64 << 20;

/// Assumed when neither `/proc/meminfo` nor a cgroup limit can be read.
const UNKNOWN_MEMORY: u64 = 8 << 30;

/// The memory this process may use: the machine's, or the container's cgroup
/// limit when that is lower.
pub fn memory_limit() -> u64 {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| mem_total(&s));
    let cgroup = cgroup_limit(Path::new("/sys/fs/cgroup"));
    match (ram, cgroup) {
        (Some(r), Some(c)) => r.min(c),
        (Some(m), None) | (None, Some(m)) => m,
        (None, None) => UNKNOWN_MEMORY,
    }
}

/// A mode's default memory budget: an eighth of [`memory_limit`] (training
/// shares the machine), at least [`MIN_DEFAULT_MEMORY`] and at most `max`, the
/// most the mode has a use for.
pub fn default_max_memory(max: u64) -> u64 {
    eighth_within(memory_limit(), max)
}

fn eighth_within(memory: u64, max: u64) -> u64 {
    (memory / 8).clamp(MIN_DEFAULT_MEMORY, max.max(MIN_DEFAULT_MEMORY))
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib.saturating_mul(1024))
}

/// The cgroup v2 `memory.max` under `root`, when it sets one (`max` is none).
fn cgroup_limit(root: &Path) -> Option<u64> {
    std::fs::read_to_string(root.join("memory.max"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eighth_within_bounds() {
        assert_eq!(eighth_within(16 << 30, 256 << 20), 256 << 20);
        assert_eq!(eighth_within(1 << 30, 256 << 20), 128 << 20);
        assert_eq!(eighth_within(128 << 20, 2 << 30), MIN_DEFAULT_MEMORY);
        assert_eq!(eighth_within(64 << 30, 2 << 30), 2 << 30);
        let d = default_max_memory(256 << 20);
        assert!((MIN_DEFAULT_MEMORY..=256 << 20).contains(&d), "{d}");
    }

    #[test]
    fn limits_are_read() {
        assert_eq!(
            mem_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16 << 20)
        );
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        let dir = std::env::temp_dir().join(format!("chute-machine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("memory.max"), "max\n").expect("write");
        assert_eq!(cgroup_limit(&dir), None);
        std::fs::write(dir.join("memory.max"), "536870912\n").expect("write");
        assert_eq!(cgroup_limit(&dir), Some(512 << 20));
        std::fs::remove_dir_all(&dir).ok();
        assert!(memory_limit() > 0);
    }
}
