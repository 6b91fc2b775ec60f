//! The free-space check made before any byte moves.
//!
//! Each file is counted rounded up to the file system's block size, which is
//! what it will really occupy; for many small files on 4 KiB blocks that is
//! noticeably more than the sum of the sizes.

use std::path::Path;

use crate::error::DownloadError;

/// Bytes available to an unprivileged writer on the file system of `path`,
/// and its block size.
pub fn available(path: &Path) -> Result<(u64, u64), DownloadError> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| DownloadError::io("measure free space of", path, std::io::Error::from(e)))?;
    let frsize = st.fragment_size().max(1);
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let avail = u64::from(st.blocks_available()).saturating_mul(u64::from(frsize));
    #[allow(clippy::useless_conversion)]
    Ok((avail, u64::from(frsize)))
}

/// Space `sizes` will occupy on a file system with blocks of `block` bytes.
pub fn needed(sizes: impl Iterator<Item = u64>, block: u64) -> u64 {
    let block = block.max(1);
    sizes.fold(0u64, |sum, s| {
        sum.saturating_add(s.div_ceil(block).saturating_mul(block))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_to_blocks() {
        assert_eq!(needed([0, 1, 4096, 4097].into_iter(), 4096), 4096 * 4);
        assert_eq!(needed([10].into_iter(), 0), 10);
        assert_eq!(needed([u64::MAX, 5].into_iter(), 4096), u64::MAX);
    }

    #[test]
    fn measures_the_temp_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (avail, block) = available(dir.path()).expect("statvfs");
        assert!(avail > 0 && block > 0);
    }
}
