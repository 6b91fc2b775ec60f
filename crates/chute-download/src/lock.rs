//! The lock on DEST itself: one download at a time per directory.
//!
//! The lock is an exclusive `flock` on DEST's own directory handle, so it needs
//! no file inside DEST, holds whether or not a resume state is kept, and goes
//! away with the process however it ends. A refused download names the holder
//! when the kernel shows it (`/proc/locks`).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::DownloadError;

/// DEST's lock, held until dropped.
pub(crate) struct DestLock {
    _lock: Option<Flock<File>>,
}

/// Takes DEST's lock through `dir` (DEST opened), or fails at once when another
/// download holds it. A file system without `flock` support gets a warning:
/// downloads there are kept apart only by their unique temporary files.
pub(crate) fn lock_dest(dir: &File, dest: &Path) -> Result<DestLock, DownloadError> {
    let handle = dir
        .try_clone()
        .map_err(|e| DownloadError::io("open", dest, e))?;
    match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(DestLock { _lock: Some(l) }),
        Err((_, Errno::EWOULDBLOCK)) => Err(DownloadError::DestBusy {
            dest: dest.to_path_buf(),
            holder: holder(dir).unwrap_or_else(|| "its process is not known".into()),
        }),
        Err((_, errno @ (Errno::ENOLCK | Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EBADF))) => {
            tracing::warn!(
                dest = %dest.display(),
                "cannot lock the destination on this file system ({errno}); make sure no other download writes into it"
            );
            Ok(DestLock { _lock: None })
        }
        Err((_, errno)) => Err(DownloadError::io("lock", dest, errno.into())),
    }
}

/// The process holding a `flock` on `dir`, as "pid N (name)", from
/// `/proc/locks`.
fn holder(dir: &File) -> Option<String> {
    let meta = dir.metadata().ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = holder_pid(&locks, meta.dev(), meta.ino())?;
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_default();
    Some(if name.is_empty() {
        format!("pid {pid}")
    } else {
        format!("pid {pid}, {name}")
    })
}

/// The pid of the `FLOCK` on the file `dev`/`ino` in `/proc/locks` text.
fn holder_pid(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    // The kernel prints the device as hex major:minor, then the inode.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    locks
        .lines()
        // "->" marks a waiter, not the holder.
        .filter(|l| !l.contains("->"))
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // "1: FLOCK ADVISORY WRITE <pid> <maj:min:ino> <start> <end>"
            match fields.as_slice() {
                [_, "FLOCK", _, _, pid, id, ..] if *id == want => pid.parse().ok(),
                _ => None,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chute_s3::Classify;

    #[test]
    fn finds_the_holder_in_proc_locks() {
        let text = "1: POSIX  ADVISORY  WRITE 10 fd:00:77 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 4242 fd:01:77 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 99 fd:01:77 0 EOF\n";
        let dev = (0xfd << 8) | 0x01;
        assert_eq!(holder_pid(text, dev, 77), Some(4242));
        assert_eq!(holder_pid(text, dev, 78), None);
    }

    #[test]
    fn a_second_lock_is_refused_naming_this_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = File::open(dir.path()).expect("open");
        let b = File::open(dir.path()).expect("open");
        let _held = lock_dest(&a, dir.path()).expect("lock");
        let err = lock_dest(&b, dir.path()).err().expect("busy");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.is_usage());
    }
}
