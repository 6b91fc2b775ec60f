//! Looking up and opening paths below ROOT without following symlinks.
//!
//! The server serves regular files and directories only. Anything else inside ROOT
//! (above all a symlink, which may point anywhere: `/etc`, another user's files) is
//! treated as if it were not there. Every lookup therefore walks from ROOT one
//! component at a time with `openat(O_NOFOLLOW)`, holding each directory open while
//! it looks at the next name, so a symlink swapped in between a check and an open
//! cannot redirect a read either.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};

/// What a path below ROOT names, looked at without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Nothing there (possibly because a directory on the way is missing).
    Missing,
    File,
    Dir,
    /// A component on the way is a regular file, so nothing can be below it.
    BelowFile,
    /// A symlink (the last component or one on the way), a FIFO, a socket or a
    /// device: never served, never written through.
    NotServed,
}

/// What `path` (relative to `root`) names.
pub(crate) fn lookup(root: &Path, rel: &Path) -> io::Result<Lookup> {
    match descend(root, rel)? {
        Walk::Stopped(found) => Ok(found),
        Walk::At(dir, name) => classify(dir.as_fd(), name),
    }
}

/// Opens the regular file at `rel` below `root`; `Ok(None)` when there is none
/// there (missing, a directory, a symlink anywhere on the way, a special file).
pub(crate) fn open_file(root: &Path, rel: &Path) -> io::Result<Option<File>> {
    let (dir, name) = match descend(root, rel)? {
        Walk::Stopped(_) => return Ok(None),
        Walk::At(dir, name) => (dir, name),
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It
    // does not change reads from a regular file, the only kind kept.
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => fd,
        // ELOOP: the last component is a symlink; ENXIO: a socket.
        Err(e) if absent(e) || matches!(e, Errno::ELOOP | Errno::ENXIO) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let file = File::from(fd);
    Ok(file.metadata()?.is_file().then_some(file))
}

enum Walk<'a> {
    /// The directory holding the last component, opened, and that component's name.
    At(OwnedFd, &'a OsStr),
    /// The walk could not reach the last component's directory.
    Stopped(Lookup),
}

/// Opens every directory on the way to the last component of `rel`, refusing to
/// pass through anything but a real directory.
fn descend<'a>(root: &Path, rel: &'a Path) -> io::Result<Walk<'a>> {
    let mut names = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => names.push(name),
            // Callers pass checked keys; anything else is no object of ours.
            _ => return Ok(Walk::Stopped(Lookup::Missing)),
        }
    }
    let Some((last, parents)) = names.split_last() else {
        return Ok(Walk::Stopped(Lookup::Missing));
    };
    let mut dir = open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for name in parents {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        dir = match openat(dir.as_fd(), *name, flags, Mode::empty()) {
            Ok(next) => next,
            Err(e) if absent(e) => return Ok(Walk::Stopped(Lookup::Missing)),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let stopped = match classify(dir.as_fd(), name)? {
                    Lookup::File => Lookup::BelowFile,
                    Lookup::Missing => Lookup::Missing,
                    _ => Lookup::NotServed,
                };
                return Ok(Walk::Stopped(stopped));
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(Walk::At(dir, last))
}

fn classify(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Lookup> {
    let stat = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(e) if absent(e) => return Ok(Lookup::Missing),
        Err(e) => return Err(e.into()),
    };
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    Ok(if kind == SFlag::S_IFREG {
        Lookup::File
    } else if kind == SFlag::S_IFDIR {
        Lookup::Dir
    } else {
        Lookup::NotServed
    })
}

/// Errors that mean "no such entry": a name too long to exist is not there either.
fn absent(e: Errno) -> bool {
    matches!(e, Errno::ENOENT | Errno::ENAMETOOLONG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_are_never_passed_through() {
        let root = tempfile::tempdir().expect("root");
        let outside = tempfile::tempdir().expect("outside");
        std::fs::write(outside.path().join("f"), b"x").expect("write");
        let r = root.path();
        std::fs::create_dir_all(r.join("b/d")).expect("mkdir");
        std::fs::write(r.join("b/d/file"), b"y").expect("write");
        symlink(outside.path(), r.join("b/link")).expect("symlink");
        symlink(outside.path().join("f"), r.join("b/flink")).expect("symlink");

        let at = |p: &str| lookup(r, Path::new(p)).expect("lookup");
        assert_eq!(at("b/d/file"), Lookup::File);
        assert_eq!(at("b/d"), Lookup::Dir);
        assert_eq!(at("b/missing/x"), Lookup::Missing);
        assert_eq!(at("b/link"), Lookup::NotServed);
        assert_eq!(at("b/link/f"), Lookup::NotServed);
        assert_eq!(at("b/flink"), Lookup::NotServed);
        assert_eq!(at("b/d/file/x"), Lookup::BelowFile);
        assert_eq!(at(&format!("b/{}", "n".repeat(300))), Lookup::Missing);

        let open = |p: &str| open_file(r, Path::new(p)).expect("open").is_some();
        assert!(open("b/d/file"));
        assert!(!open("b/d"));
        assert!(!open("b/link/f"));
        assert!(!open("b/flink"));
    }
}
