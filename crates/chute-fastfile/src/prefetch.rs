//! Read-ahead decisions, kept apart from the I/O they cause.
//!
//! - [`Prefetcher`] (one per open handle) detects sequential access and grows
//!   a read-ahead window, doubling from `initial_window` to `max_window` each
//!   time it issues more; any jump resets it, so random readers fetch only the
//!   aligned blocks they ask for.
//! - [`CrossFile`] (one per mount) sees readers finish files: when files are
//!   finished in listing order (the usual data-loader loop: open, read to EOF,
//!   next) it names the files after the last one to start fetching before they
//!   are opened.
//!
//! Both only say *what* to fetch; the cache's budget decides how much of it is
//! admitted.

use std::ops::Range;

use crate::Tuning;

/// Reads this close to the previous ones still count as sequential: the
/// kernel issues read-ahead requests concurrently, so they arrive a little out
/// of order.
const SEQ_SLACK: u64 = 8 << 20;

#[derive(Debug)]
pub(crate) struct Prefetcher {
    /// End of the furthest read so far.
    next: u64,
    /// Start of the last read.
    last: u64,
    window: u64,
    /// Bytes up to which read-ahead has been issued.
    issued: u64,
    started: bool,
    sequential: bool,
}

impl Prefetcher {
    pub fn new(t: &Tuning) -> Self {
        Prefetcher {
            next: 0,
            last: 0,
            window: t.initial_window,
            issued: 0,
            started: false,
            sequential: false,
        }
    }

    pub fn is_sequential(&self) -> bool {
        self.sequential
    }

    /// Records a read of `off..end` of a `size`-byte file; returns the bytes to
    /// fetch ahead, if any.
    pub fn on_read(&mut self, off: u64, end: u64, size: u64, t: &Tuning) -> Option<Range<u64>> {
        let sequential = if self.started {
            off + SEQ_SLACK >= self.last && off <= self.next + SEQ_SLACK
        } else {
            off == 0
        };
        self.started = true;
        self.last = off;
        self.sequential = sequential;
        if !sequential {
            self.window = t.initial_window;
            self.next = end;
            self.issued = end;
            return None;
        }
        self.next = self.next.max(end);
        self.issued = self.issued.max(self.next);
        let target = self.next.saturating_add(self.window).min(size);
        if target <= self.issued {
            return None;
        }
        // Keep GETs large: wait until a good part of a window is missing,
        // except for the tail of the file.
        let step = self.window.min(t.part_size) / 2;
        if target < size && target - self.issued < step {
            return None;
        }
        let range = self.issued..target;
        self.issued = target;
        self.window = (self.window * 2).min(t.max_window);
        Some(range)
    }
}

/// Listing-order detection across files.
#[derive(Debug, Default)]
pub(crate) struct CrossFile {
    last_eof: Option<usize>,
    streak: u32,
}

impl CrossFile {
    /// A reader reached the end of object `i`; returns how many bytes of the
    /// following objects to fetch ahead (0: the order looks random).
    pub fn on_eof(&mut self, i: usize, t: &Tuning) -> u64 {
        let in_order = match self.last_eof {
            // Several readers in listing order finish files a little out of order.
            Some(prev) => i > prev && i - prev <= 8,
            None => true,
        };
        self.last_eof = Some(i);
        if in_order {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.streak = 0;
        }
        match self.streak {
            0 => 0,
            // One file seen: fetch the next one only, until the order is confirmed.
            1 => t.cross_file_per_file,
            _ => t.cross_file_window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Tuning {
        Tuning {
            initial_window: 1 << 20,
            max_window: 8 << 20,
            part_size: 4 << 20,
            ..Tuning::default()
        }
    }

    #[test]
    fn sequential_reads_grow_the_window() {
        let t = t();
        let mut p = Prefetcher::new(&t);
        let size = 100 << 20;
        let r = p
            .on_read(0, 128 << 10, size, &t)
            .expect("first read prefetches");
        assert_eq!(r, (128 << 10)..(128 << 10) + (1 << 20));
        let mut issued = r.end;
        let mut off = 128 << 10;
        let mut ranges = vec![];
        while off < size {
            let end = (off + (128 << 10)).min(size);
            if let Some(r) = p.on_read(off, end, size, &t) {
                assert_eq!(r.start, issued.max(end));
                issued = r.end;
                ranges.push(r);
            }
            off = end;
        }
        assert_eq!(issued, size);
        // The window reached its cap.
        assert!(ranges.iter().any(|r| r.end - r.start >= 4 << 20));
        assert!(ranges.iter().all(|r| r.end - r.start <= 8 << 20));
    }

    #[test]
    fn a_jump_resets_to_random() {
        let t = t();
        let mut p = Prefetcher::new(&t);
        let size = 1 << 30;
        assert!(p.on_read(0, 4096, size, &t).is_some());
        assert!(p.on_read(500 << 20, (500 << 20) + 4096, size, &t).is_none());
        assert!(!p.is_sequential());
        // Reading on from there is sequential again.
        assert!(p
            .on_read((500 << 20) + 4096, (500 << 20) + 8192, size, &t)
            .is_some());
    }

    #[test]
    fn random_first_read_does_not_prefetch() {
        let t = t();
        let mut p = Prefetcher::new(&t);
        assert!(p.on_read(1 << 20, 2 << 20, 1 << 30, &t).is_none());
    }

    #[test]
    fn cross_file_needs_listing_order() {
        let t = Tuning::default();
        let mut c = CrossFile::default();
        assert_eq!(c.on_eof(0, &t), t.cross_file_per_file);
        assert_eq!(c.on_eof(1, &t), t.cross_file_window);
        assert_eq!(c.on_eof(2, &t), t.cross_file_window);
        assert_eq!(c.on_eof(900, &t), 0);
        assert_eq!(c.on_eof(3, &t), 0);
        assert_eq!(c.on_eof(4, &t), t.cross_file_per_file);
    }
}
