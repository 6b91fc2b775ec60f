//! Listing a bucket: which keys exist, and one page of them as S3 shapes it.
//!
//! The scan sees regular files only and descends into real directories only, so a
//! symlink inside a bucket is neither listed nor followed; ETag, size and date are
//! filled in afterwards from the opened file (see `backend.rs`), which drops
//! anything that is no longer a regular file below the bucket by then.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Every key below `bucket_dir` that starts with `prefix`, sorted bytewise as S3
/// sorts keys.
pub(crate) fn scan(bucket_dir: &Path, prefix: &str) -> io::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut dirs: VecDeque<(PathBuf, String)> =
        VecDeque::from([(bucket_dir.to_owned(), String::new())]);
    while let Some((dir, dir_key)) = dirs.pop_front() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed while we walked: it holds no keys now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            // Names that are not UTF-8 cannot be S3 keys.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let key = format!("{dir_key}{name}");
            // The entry's own type, not its target's: symlinks are skipped here.
            let kind = entry.file_type()?;
            if kind.is_dir() {
                let below = format!("{key}/");
                if below.starts_with(prefix) || prefix.starts_with(&below) {
                    dirs.push_back((entry.path(), below));
                }
            } else if kind.is_file() && key.starts_with(prefix) {
                keys.push(key);
            }
        }
    }
    keys.sort_unstable();
    Ok(keys)
}

/// One page of a listing.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) keys: Vec<String>,
    pub(crate) common_prefixes: Vec<String>,
    /// Where the next page starts (the last key or prefix on this one), when there
    /// is more.
    pub(crate) next: Option<String>,
}

impl Page {
    pub(crate) fn count(&self) -> usize {
        self.keys.len() + self.common_prefixes.len()
    }
}

/// Cuts one page out of sorted `keys` (all starting with `prefix`): keys with the
/// delimiter after the prefix are rolled up into their common prefix, entries at or
/// before `after` are skipped, and at most `max_keys` entries are returned.
pub(crate) fn page(
    keys: &[String],
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max_keys: usize,
) -> Page {
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut page = Page::default();
    let mut last_prefix: Option<&str> = None;
    let mut more = false;
    for key in keys {
        let rest = key.get(prefix.len()..).unwrap_or_default();
        let rolled_up = delimiter
            .and_then(|d| rest.find(d).map(|at| prefix.len() + at + d.len()))
            .and_then(|end| key.get(..end));
        let entry = rolled_up.unwrap_or(key);
        // Keys under one common prefix are adjacent in sorted order.
        if rolled_up.is_some() && last_prefix == Some(entry) {
            continue;
        }
        if after.is_some_and(|after| entry <= after) {
            continue;
        }
        if page.count() == max_keys {
            more = max_keys > 0;
            break;
        }
        if rolled_up.is_some() {
            last_prefix = Some(entry);
            page.common_prefixes.push(entry.to_owned());
        } else {
            page.keys.push(entry.to_owned());
        }
    }
    if more {
        let last_key = page.keys.last();
        let last_prefix = page.common_prefixes.last();
        page.next = last_key.max(last_prefix).cloned();
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn delimiter_rolls_keys_up_in_order() {
        let all = keys(&["a.txt", "a/b", "a/c/d", "b", "c/x"]);
        let p = page(&all, "", Some("/"), None, 1000);
        assert_eq!(p.keys, ["a.txt", "b"]);
        assert_eq!(p.common_prefixes, ["a/", "c/"]);
        assert_eq!(p.next, None);
        let inner = keys(&["a/b", "a/c/d"]);
        let p = page(&inner, "a/", Some("/"), None, 1000);
        assert_eq!(p.keys, ["a/b"]);
        assert_eq!(p.common_prefixes, ["a/c/"]);
    }

    #[test]
    fn pages_resume_after_the_last_entry() {
        let all = keys(&["a.txt", "a/b", "a/c", "b", "c"]);
        let first = page(&all, "", Some("/"), None, 2);
        assert_eq!(
            (first.keys.clone(), first.common_prefixes.clone()),
            (vec!["a.txt".to_owned()], vec!["a/".to_owned()])
        );
        assert_eq!(first.next.as_deref(), Some("a/"));
        let second = page(&all, "", Some("/"), first.next.as_deref(), 2);
        assert_eq!(second.keys, ["b", "c"]);
        assert_eq!(second.next, None);
        let none = page(&all, "", None, None, 0);
        assert_eq!(none, Page::default());
    }
}
