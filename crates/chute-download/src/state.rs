//! The resume state: which files under DEST are complete, as (path, size, ETag).
//!
//! It lives beside DEST, not in it (`<parent>/.<name>.chute-state` by default),
//! so the data tree holds exactly the channel's files. The file is a header
//! line followed by one JSON object per completed file, appended after the file
//! has been renamed into place; a line cut short by a kill is ignored on load.
//! A rerun skips a file only when its entry matches the plan's size and ETag and
//! the file on disk still has that size; anything else is fetched again, so the
//! worst a lost or stale state can cost is a re-download.
//!
//! An entry is written only once the data it covers is on disk (the file
//! system was synced after the file was renamed into place), so after a crash
//! of the machine the state never vouches for a file whose bytes were lost.
//!
//! The file is opened without following a symbolic link and must be a regular
//! file. It is locked (`flock`) while a download uses it, so two DESTs that
//! were given the same state file cannot both write it; DEST itself has its
//! own lock.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::DownloadError;

const HEADER: &str = "chute-download-state v1";
/// Completed files wait at least this long for the sync that lets them be
/// recorded: one sync of the file system covers every file completed since
/// the last, and losing the wait's entries (a kill) only means fetching those
/// files again.
pub(crate) const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The default state file for DEST: a hidden sibling of it.
pub fn default_state_path(dest: &Path) -> Option<PathBuf> {
    let name = dest.file_name()?;
    let parent = dest.parent()?;
    let mut file = std::ffi::OsString::from(".");
    file.push(name);
    file.push(".chute-state");
    Some(parent.join(file))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "p")]
    pub path: String,
    #[serde(rename = "s")]
    pub size: u64,
    #[serde(rename = "e")]
    pub etag: String,
}

/// What a state file recorded, by path.
pub type Recorded = HashMap<String, Entry>;

/// An open, locked state file.
pub struct State {
    path: PathBuf,
    _lock: Flock<File>,
    out: BufWriter<File>,
}

impl State {
    /// Opens and locks an existing state file, and returns what it recorded;
    /// `None` when there is none yet.
    pub fn open_existing(
        path: &Path,
        dest: &Path,
    ) -> Result<Option<(State, Recorded)>, DownloadError> {
        let file = match open_no_follow(path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DownloadError::io("open the resume state file", path, e)),
        };
        let st = State::lock(file, path, dest)?;
        let entries = read_entries(&st._lock, path)?;
        Ok(Some((st, entries)))
    }

    /// Creates (or opens, if it appeared meanwhile) and locks the state file.
    pub fn create(path: &Path, dest: &Path) -> Result<State, DownloadError> {
        let file = open_no_follow(path, true)
            .map_err(|e| DownloadError::io("create the resume state file", path, e))?;
        State::lock(file, path, dest)
    }

    fn lock(file: File, path: &Path, dest: &Path) -> Result<State, DownloadError> {
        let meta = file
            .metadata()
            .map_err(|e| DownloadError::io("inspect the resume state file", path, e))?;
        if !meta.is_file() {
            return Err(DownloadError::io(
                "use the resume state file",
                path,
                std::io::Error::other("it is not a regular file"),
            ));
        }
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(DownloadError::Busy {
                    dest: dest.to_path_buf(),
                    state: path.to_path_buf(),
                })
            }
            Err((_, errno)) => {
                return Err(DownloadError::io(
                    "lock the resume state file",
                    path,
                    std::io::Error::from(errno),
                ))
            }
        };
        let out = lock
            .try_clone()
            .map_err(|e| DownloadError::io("open the resume state file", path, e))?;
        Ok(State {
            path: path.to_path_buf(),
            _lock: lock,
            out: BufWriter::with_capacity(64 << 10, out),
        })
    }

    /// Replaces the file's contents with `entries` (those still valid).
    pub fn rewrite<'a>(
        &mut self,
        entries: impl Iterator<Item = &'a Entry>,
    ) -> Result<(), DownloadError> {
        let path = self.path.clone();
        let io = |e| DownloadError::io("write the resume state file", &path, e);
        self.out.flush().map_err(io)?;
        let file = self.out.get_mut();
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(self.out, "{HEADER}").map_err(io)?;
        for e in entries {
            self.write_entry(e)?;
        }
        self.flush()
    }

    /// Records completed files whose data is on disk, and flushes.
    pub fn record_all(&mut self, entries: &[Entry]) -> Result<(), DownloadError> {
        for e in entries {
            self.write_entry(e)?;
        }
        self.flush()
    }

    fn write_entry(&mut self, entry: &Entry) -> Result<(), DownloadError> {
        let line = serde_json::to_string(entry)
            .map_err(|e| DownloadError::Internal(format!("cannot encode a state entry: {e}")))?;
        writeln!(self.out, "{line}")
            .map_err(|e| DownloadError::io("write the resume state file", &self.path, e))
    }

    pub fn flush(&mut self) -> Result<(), DownloadError> {
        self.out
            .flush()
            .map_err(|e| DownloadError::io("write the resume state file", &self.path, e))
    }
}

/// The state file at `path`, never through a symbolic link (`O_NOFOLLOW`),
/// and without blocking should it be a FIFO (`O_NONBLOCK`).
fn open_no_follow(path: &Path, create: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                std::io::Error::other(
                    "it is a symbolic link, and chute does not write through links (remove it or pass another state file)",
                )
            } else {
                e
            }
        })
}

fn read_entries(file: &File, path: &Path) -> Result<HashMap<String, Entry>, DownloadError> {
    let mut entries = HashMap::new();
    let mut lines = BufReader::new(file).lines();
    match lines.next() {
        None => return Ok(entries),
        Some(Ok(h)) if h == HEADER => {}
        Some(Ok(other)) => {
            tracing::warn!(
                state = %path.display(),
                header = %other.chars().take(60).collect::<String>(),
                "resume state file has an unknown format; ignoring it (every file is fetched again)"
            );
            return Ok(entries);
        }
        Some(Err(e)) => return Err(DownloadError::io("read the resume state file", path, e)),
    }
    for line in lines {
        let Ok(line) = line else {
            // Invalid UTF-8 can only be a damaged tail; what came before stands.
            break;
        };
        if let Ok(e) = serde_json::from_str::<Entry>(&line) {
            entries.insert(e.path.clone(), e);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &str, s: u64) -> Entry {
        Entry {
            path: p.into(),
            size: s,
            etag: format!("etag-{p}"),
        }
    }

    #[test]
    fn sibling_of_dest() {
        assert_eq!(
            default_state_path(Path::new("/data/train")),
            Some(PathBuf::from("/data/.train.chute-state"))
        );
        assert_eq!(default_state_path(Path::new("/")), None);
    }

    fn open(path: &Path, dest: &Path) -> (State, HashMap<String, Entry>) {
        match State::open_existing(path, dest).expect("open") {
            Some(found) => found,
            None => (State::create(path, dest).expect("create"), HashMap::new()),
        }
    }

    #[test]
    fn entries_survive_a_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".d.chute-state");
        let dest = dir.path().join("d");
        {
            assert!(State::open_existing(&path, &dest).expect("open").is_none());
            let (mut st, old) = open(&path, &dest);
            assert!(old.is_empty());
            st.rewrite([].iter()).expect("rewrite");
            st.record_all(&[entry("a/b", 3), entry("c \"q\"", 0)])
                .expect("record");
            // A second opener is refused while the first holds the lock.
            let busy = State::open_existing(&path, &dest).err().expect("locked");
            assert!(matches!(busy, DownloadError::Busy { .. }), "{busy}");
        }
        // A kill in the middle of a line leaves a torn tail.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"p\":\"x\",\"s\":").expect("write");
        drop(f);
        let (mut st, got) = open(&path, &dest);
        assert_eq!(got.len(), 2);
        assert_eq!(got["a/b"], entry("a/b", 3));
        assert_eq!(got["c \"q\""], entry("c \"q\"", 0));
        st.rewrite([entry("a/b", 3)].iter()).expect("rewrite");
        drop(st);
        let (_st, got) = open(&path, &dest);
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn links_and_special_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        assert!(State::open_existing(&link, dir.path()).is_err());
        assert!(State::create(&link, dir.path()).is_err());
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep me");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = State::open_existing(&fifo, dir.path())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn unknown_format_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "something else\n{\"p\":\"a\",\"s\":1,\"e\":\"x\"}\n")
            .expect("write");
        let (_st, got) = open(&path, dir.path());
        assert!(got.is_empty());
    }
}
