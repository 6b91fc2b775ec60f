//! Where files go under DEST, and the checks that keep every write inside it.
//!
//! The plan already refuses unsafe keys; this is the second line of defence, for
//! plans built by hand or by future code: a path is only joined to DEST when every
//! component is a plain name, and a directory on the way that is a symbolic link
//! (which could point anywhere) stops the download instead of being followed.

use std::collections::HashSet;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

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

/// Checks, once per directory, that the directories leading to a file under DEST
/// are real directories (or do not exist yet), and creates them on demand.
pub struct Dirs {
    dest: PathBuf,
    checked: Mutex<HashSet<PathBuf>>,
    created: Mutex<HashSet<PathBuf>>,
}

impl Dirs {
    pub fn new(dest: PathBuf) -> Dirs {
        Dirs {
            dest,
            checked: Mutex::new(HashSet::new()),
            created: Mutex::new(HashSet::new()),
        }
    }

    /// Checks the ancestors of `rel` (relative to DEST) before any byte moves:
    /// a symbolic link or a file where a directory must be is an error.
    pub fn check_ancestors(&self, rel: &Path) -> Result<(), DownloadError> {
        let mut cur = PathBuf::new();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for c in parent.components() {
            cur.push(c);
            if lock(&self.checked).contains(&cur) {
                continue;
            }
            let full = self.dest.join(&cur);
            match std::fs::symlink_metadata(&full) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Nothing below can exist either.
                    return Ok(());
                }
                Err(e) => return Err(DownloadError::io("inspect", full, e)),
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(DownloadError::Destination {
                        path: full,
                        detail: format!(
                            "is a symbolic link where the download needs a directory (for {}); chute does not write through links, which could lead outside the destination: remove it",
                            rel.display()
                        ),
                    })
                }
                Ok(m) if !m.is_dir() => {
                    return Err(DownloadError::Destination {
                        path: full,
                        detail: format!(
                            "is a file where the download needs a directory (for {}): remove it or choose another destination",
                            rel.display()
                        ),
                    })
                }
                Ok(_) => {
                    lock(&self.checked).insert(cur.clone());
                }
            }
        }
        Ok(())
    }

    /// Creates the parent directories of `rel` under DEST (blocking).
    pub fn create_parents(&self, rel: &Path) -> Result<(), DownloadError> {
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        self.create(parent)
    }

    /// Creates `rel` and its parents under DEST (blocking).
    pub fn create(&self, rel: &Path) -> Result<(), DownloadError> {
        if lock(&self.created).contains(rel) {
            return Ok(());
        }
        let full = self.dest.join(rel);
        std::fs::create_dir_all(&full).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(nix::libc::ENOTDIR) {
                DownloadError::Destination {
                    path: full.clone(),
                    detail: "cannot be created as a directory: a file is in the way (remove it or choose another destination)".into(),
                }
            } else {
                DownloadError::io("create directory", full.clone(), e)
            }
        })?;
        lock(&self.created).insert(rel.to_path_buf());
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave a set of paths half-updated in a way that
    // matters: the worst case is one more stat or mkdir.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let dirs = Dirs::new(dest.clone());
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
        assert!(dirs.create_parents(Path::new("n/m/x")).is_ok());
        assert!(dest.join("n/m").is_dir());
        assert!(dirs.create_parents(Path::new("file/y")).is_err());
        assert_eq!(
            std::fs::read_dir(outside.path()).expect("read").count(),
            0,
            "nothing written outside"
        );
    }
}
