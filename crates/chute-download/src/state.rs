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
//! The state file is also the run's lock: an exclusive `flock` on it keeps two
//! downloads from writing the same DEST at once.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::DownloadError;

const HEADER: &str = "chute-download-state v1";
/// Completed entries may wait this long in memory before they reach the file;
/// losing them (a kill) only means fetching those files again.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(250);

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

/// An open, locked state file.
pub struct State {
    path: PathBuf,
    _lock: Flock<File>,
    out: BufWriter<File>,
    last_flush: Instant,
}

impl State {
    /// Opens (creating) and locks the state file, and returns what it recorded.
    pub fn open(
        path: &Path,
        dest: &Path,
    ) -> Result<(State, HashMap<String, Entry>), DownloadError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| DownloadError::io("open the resume state file", path, e))?;
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
        let entries = read_entries(&lock, path)?;
        let out = lock
            .try_clone()
            .map_err(|e| DownloadError::io("open the resume state file", path, e))?;
        Ok((
            State {
                path: path.to_path_buf(),
                _lock: lock,
                out: BufWriter::with_capacity(64 << 10, out),
                last_flush: Instant::now(),
            },
            entries,
        ))
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

    /// Records one completed file (buffered; see [`FLUSH_EVERY`]).
    pub fn record(&mut self, entry: &Entry) -> Result<(), DownloadError> {
        self.write_entry(entry)?;
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    fn write_entry(&mut self, entry: &Entry) -> Result<(), DownloadError> {
        let line = serde_json::to_string(entry)
            .map_err(|e| DownloadError::Internal(format!("cannot encode a state entry: {e}")))?;
        writeln!(self.out, "{line}")
            .map_err(|e| DownloadError::io("write the resume state file", &self.path, e))
    }

    pub fn flush(&mut self) -> Result<(), DownloadError> {
        self.last_flush = Instant::now();
        self.out
            .flush()
            .map_err(|e| DownloadError::io("write the resume state file", &self.path, e))
    }

    pub fn sync(&mut self) -> Result<(), DownloadError> {
        self.flush()?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| DownloadError::io("sync the resume state file", &self.path, e))
    }
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

    #[test]
    fn entries_survive_a_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".d.chute-state");
        let dest = dir.path().join("d");
        {
            let (mut st, old) = State::open(&path, &dest).expect("open");
            assert!(old.is_empty());
            st.rewrite([].iter()).expect("rewrite");
            st.record(&entry("a/b", 3)).expect("record");
            st.record(&entry("c \"q\"", 0)).expect("record");
            st.flush().expect("flush");
            // A second opener is refused while the first holds the lock.
            let busy = State::open(&path, &dest).err().expect("locked");
            assert!(matches!(busy, DownloadError::Busy { .. }), "{busy}");
        }
        // A kill in the middle of a line leaves a torn tail.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"p\":\"x\",\"s\":").expect("write");
        drop(f);
        let (mut st, got) = State::open(&path, &dest).expect("reopen");
        assert_eq!(got.len(), 2);
        assert_eq!(got["a/b"], entry("a/b", 3));
        assert_eq!(got["c \"q\""], entry("c \"q\"", 0));
        st.rewrite([entry("a/b", 3)].iter()).expect("rewrite");
        drop(st);
        let (_st, got) = State::open(&path, &dest).expect("reopen");
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn unknown_format_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "something else\n{\"p\":\"a\",\"s\":1,\"e\":\"x\"}\n")
            .expect("write");
        let (_st, got) = State::open(&path, dir.path()).expect("open");
        assert!(got.is_empty());
    }
}
