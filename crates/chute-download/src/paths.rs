//! Where files go under DEST, and the checks that keep every write inside it.
//!
//! The plan already refuses unsafe keys; this is the second line of defence, for
//! plans built by hand or by future code: a path is only used under DEST when
//! every component is a plain name. Paths under DEST are never resolved by the
//! kernel as a whole: [`Dirs`] holds DEST open and walks to a file's directory
//! one component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`, making
//! missing directories with `mkdirat`, and files are created and renamed
//! relative to those directory handles. A symbolic link planted anywhere inside
//! DEST, before or during the download, is therefore never followed: it stops
//! the download instead.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};

use chute_plan::{check_rel_path, PathKind};

use crate::error::DownloadError;

/// DEST's own directory for in-flight files: temporary files are renamed from
/// here into place, and the whole directory is removed at the end (or by the
/// next run, after a kill). Hidden, and inside DEST so renames stay on one file
/// system.
pub const TMP_DIR_NAME: &str = ".chute-tmp";

/// The relative path `rel` as a path under a root, or why it is refused.
pub fn safe_relative(rel: &str) -> Result<PathBuf, String> {
    match check_rel_path(rel) {
        Ok(PathKind::File) => {}
        Ok(PathKind::Dir) => return Err("it names a directory, not a file".into()),
        Err(reason) => return Err(reason.to_string()),
    }
    let path = Path::new(rel);
    let mut out = PathBuf::new();
    for (i, c) in path.components().enumerate() {
        match c {
            Component::Normal(name) => {
                if i == 0 && name == TMP_DIR_NAME {
                    return Err(format!(
                        "'{TMP_DIR_NAME}' is reserved for chute's temporary files"
                    ));
                }
                out.push(name);
            }
            Component::ParentDir => return Err("a segment is '..' (would escape the root)".into()),
            Component::CurDir => return Err("a segment is '.'".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("it is an absolute path".into())
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err("it is empty".into());
    }
    Ok(out)
}

/// DEST held open, and the directory walks beneath it (blocking calls).
pub struct Dirs {
    dest: PathBuf,
    root: File,
}

/// How a walk treats a directory that does not exist yet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Stop: nothing below it exists either.
    Stop,
    /// Make it (`mkdirat`).
    Create,
}

impl Dirs {
    /// `root` is DEST (the directory at `dest`), opened by the caller.
    pub fn new(dest: PathBuf, root: File) -> Dirs {
        Dirs { dest, root }
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// DEST's own handle.
    pub fn root(&self) -> &File {
        &self.root
    }

    /// Opens the directory `rel` under DEST one component at a time, never
    /// through a symbolic link. `None` when a component is missing and
    /// `missing` is [`Missing::Stop`]. `for_path` names what the directory is
    /// needed for, in messages.
    pub fn open_dir(
        &self,
        rel: &Path,
        missing: Missing,
        for_path: &Path,
    ) -> Result<Option<OwnedFd>, DownloadError> {
        let mut cur: OwnedFd = self
            .root
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| DownloadError::io("open", &self.dest, e))?;
        let mut so_far = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(DownloadError::Internal(format!(
                    "unchecked path {} reached the file system",
                    rel.display()
                )));
            };
            so_far.push(name);
            cur = match open_subdir(&cur, name) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if missing == Missing::Stop => return Ok(None),
                Err(Errno::ENOENT) => {
                    match mkdirat(&cur, name, Mode::from_bits_truncate(0o777)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(DownloadError::io(
                                "create directory",
                                self.dest.join(&so_far),
                                e.into(),
                            ))
                        }
                    }
                    open_subdir(&cur, name)
                        .map_err(|e| self.walk_error(&cur, name, &so_far, for_path, e))?
                }
                Err(e) => return Err(self.walk_error(&cur, name, &so_far, for_path, e)),
            };
        }
        Ok(Some(cur))
    }

    /// Opens the directory that holds the file `rel` (see [`Dirs::open_dir`]).
    pub fn open_parent(
        &self,
        rel: &Path,
        missing: Missing,
    ) -> Result<Option<OwnedFd>, DownloadError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.open_dir(parent, missing, rel)
    }

    /// Checks the directories leading to the file `rel`: a symbolic link or a
    /// file where a directory must be is an error.
    pub fn check_ancestors(&self, rel: &Path) -> Result<(), DownloadError> {
        self.open_parent(rel, Missing::Stop).map(drop)
    }

    /// Creates the directory `rel` and its parents under DEST.
    pub fn create(&self, rel: &Path) -> Result<(), DownloadError> {
        self.open_dir(rel, Missing::Create, rel).map(drop)
    }

    fn walk_error(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        so_far: &Path,
        for_path: &Path,
        e: Errno,
    ) -> DownloadError {
        let full = self.dest.join(so_far);
        let kind = fstatat(parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT);
        match (e, kind) {
            (Errno::ENOTDIR | Errno::ELOOP, Ok(k)) if k == SFlag::S_IFLNK => DownloadError::Destination {
                path: full,
                detail: format!(
                    "is a symbolic link where the download needs a directory (for {}); chute does not write through links, which could lead outside the destination: remove it",
                    for_path.display()
                ),
            },
            (Errno::ENOTDIR | Errno::ELOOP, _) => DownloadError::Destination {
                path: full,
                detail: format!(
                    "is a file where the download needs a directory (for {}): remove it or choose another destination",
                    for_path.display()
                ),
            },
            (e, _) => DownloadError::io("open directory", full, e.into()),
        }
    }
}

/// `name` in `parent`, if it is a directory and not a link to one.
fn open_subdir(parent: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        parent,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// What is at `name` in `dir`, without following a link; `None` if nothing.
pub fn entry_at(dir: &OwnedFd, name: &OsStr) -> Result<Option<nix::sys::stat::FileStat>, Errno> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a stat result is a directory.
pub fn is_dir(st: &nix::sys::stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Whether a stat result is a regular file.
pub fn is_file(st: &nix::sys::stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// DEST's temporary directory, held open: temporary files are created in it
/// and renamed out of it through this handle, never by path.
pub struct TmpDir {
    fd: OwnedFd,
    /// For messages.
    pub path: PathBuf,
}

/// A temporary file being written, by its name in [`TmpDir`] and its handle.
pub struct TempFile {
    pub name: String,
    pub file: Arc<File>,
}

/// Why a temporary file could not be renamed into place.
pub enum PublishError {
    /// The name no longer refers to the file that was written and checked.
    Replaced(PathBuf),
    /// A directory is where the file should go.
    DirectoryInTheWay,
    Io(io::Error),
}

impl TmpDir {
    /// Makes DEST's temporary directory (which must not exist) and opens it.
    pub fn create(dirs: &Dirs) -> Result<TmpDir, DownloadError> {
        let path = dirs.dest().join(TMP_DIR_NAME);
        match mkdirat(dirs.root(), TMP_DIR_NAME, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                return Err(DownloadError::Destination {
                    path,
                    detail: "appeared while this download started: another process is writing into the destination (wait for it or choose another destination)".into(),
                })
            }
            Err(e) => return Err(DownloadError::io("create the temporary directory", path, e.into())),
        }
        let fd = openat(
            dirs.root(),
            TMP_DIR_NAME,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| DownloadError::io("open the temporary directory", &path, e.into()))?;
        Ok(TmpDir { fd, path })
    }

    /// A new, empty temporary file for the object at plan position `index`,
    /// under a name no other file has (`O_EXCL`): what is later renamed into
    /// place can only be a file this download created.
    pub fn create_file(&self, index: usize) -> io::Result<TempFile> {
        for attempt in 0..1000u32 {
            let name = if attempt == 0 {
                format!("{index}.part")
            } else {
                format!("{index}-{attempt}.part")
            };
            match openat(
                &self.fd,
                name.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o666),
            ) {
                Ok(fd) => {
                    return Ok(TempFile {
                        name,
                        file: Arc::new(File::from(fd)),
                    })
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::other("no free temporary file name"))
    }

    pub fn path_of(&self, t: &TempFile) -> PathBuf {
        self.path.join(&t.name)
    }

    /// Renames `t` to `name` in the directory `to`, once its name is checked
    /// to still refer to the very file that was written (same device and
    /// inode as the handle): a file swapped in by another process is never
    /// published.
    pub fn publish(&self, t: &TempFile, to: &OwnedFd, name: &OsStr) -> Result<(), PublishError> {
        let mine = nix::sys::stat::fstat(t.file.as_fd()).map_err(|e| PublishError::Io(e.into()))?;
        match entry_at(&self.fd, OsStr::new(&t.name)) {
            Ok(Some(st)) if st.st_dev == mine.st_dev && st.st_ino == mine.st_ino => {}
            Ok(_) => return Err(PublishError::Replaced(self.path_of(t))),
            Err(e) => return Err(PublishError::Io(e.into())),
        }
        match nix::fcntl::renameat(&self.fd, t.name.as_str(), to, name) {
            Ok(()) => Ok(()),
            Err(Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST) => {
                Err(PublishError::DirectoryInTheWay)
            }
            Err(e) => Err(PublishError::Io(e.into())),
        }
    }

    /// Removes `t` (a transfer that was not kept); the directory goes at the
    /// end anyway.
    pub fn discard(&self, t: &TempFile) {
        let _ = nix::unistd::unlinkat(
            &self.fd,
            t.name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chute_s3::Classify;

    #[test]
    fn plain_paths_are_kept() {
        assert_eq!(safe_relative("a/b/c.bin"), Ok(PathBuf::from("a/b/c.bin")));
        assert_eq!(safe_relative("x"), Ok(PathBuf::from("x")));
        assert_eq!(safe_relative("..."), Ok(PathBuf::from("...")));
        assert_eq!(
            safe_relative("sub/.chute-tmp"),
            Ok(PathBuf::from("sub/.chute-tmp"))
        );
        assert_eq!(
            safe_relative("cat & dog+1 = 100%.json"),
            Ok(PathBuf::from("cat & dog+1 = 100%.json"))
        );
    }

    #[test]
    fn escaping_paths_are_refused() {
        for bad in [
            "../../etc/x",
            "../x",
            "a/../../x",
            "a/..",
            "/etc/x",
            "//x",
            "a//b",
            "./x",
            "a/./b",
            ".",
            "..",
            "",
            "a/",
            "a\0b",
            ".chute-tmp/3.part",
        ] {
            assert!(safe_relative(bad).is_err(), "{bad:?} must be refused");
        }
        let long = "n".repeat(256);
        assert!(safe_relative(&format!("a/{long}")).is_err());
    }

    #[test]
    fn symlinked_directories_stop_the_download() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let dest = root.path().join("dest");
        std::fs::create_dir_all(dest.join("real")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), dest.join("link")).expect("symlink");
        std::fs::write(dest.join("file"), b"x").expect("write");
        let root = File::open(&dest).expect("open dest");
        let dirs = Dirs::new(dest.clone(), root);
        assert!(dirs.check_ancestors(Path::new("real/x")).is_ok());
        assert!(dirs.check_ancestors(Path::new("new/deeper/x")).is_ok());
        let err = dirs
            .check_ancestors(Path::new("link/x"))
            .expect_err("symlink refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(err.is_usage());
        let err = dirs
            .check_ancestors(Path::new("file/x"))
            .expect_err("file in the way");
        assert!(err.to_string().contains("a file"), "{err}");
        assert!(dirs.create(Path::new("n/m")).is_ok());
        assert!(dest.join("n/m").is_dir());
        assert!(dirs.create(Path::new("file/y")).is_err());
        let err = dirs
            .create(Path::new("link/y"))
            .expect_err("not through the link");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(
            std::fs::read_dir(outside.path()).expect("read").count(),
            0,
            "nothing written outside"
        );
    }
}
