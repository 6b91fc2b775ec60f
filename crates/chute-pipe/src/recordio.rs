//! MXNet RecordIO framing (`RecordWrapperType: RecordIO`), as SageMaker Pipe mode
//! writes it.
//!
//! A record on the wire is:
//!
//! | bytes | content |
//! |---|---|
//! | 4 | magic `0xced7230a`, little-endian (`0a 23 d7 ce`) |
//! | 4 | little-endian `u32`: continuation flag in the top 3 bits, payload length in the low 29 |
//! | length | the payload |
//! | 0–3 | zero padding to a multiple of 4 bytes |
//!
//! A payload longer than `2^29 - 1` bytes cannot be described by one header, so it
//! is split into consecutive records with flags `1` (first), `2` (middle) and `3`
//! (last); a payload that fits is one record with flag `0`. A reader joins the
//! payloads of a `1, 2.., 3` run as they are (chute does not escape magic numbers
//! inside payloads, and inserts nothing between parts).
//!
//! Two framers share that layout: [`KnownLengthFramer`] streams a payload whose
//! length is known up front (an object of known size, an inline value) without
//! holding it; [`BufferedFramer`] is for payloads whose length is only known at
//! their end (a decompressed object): it holds at most one record's worth.

use std::io::{self, Write};

/// The record magic number.
pub const MAGIC: u32 = 0xced7_230a;
/// The longest payload one record can carry.
pub const MAX_RECORD_LEN: u64 = (1 << 29) - 1;

/// Continuation flag: the whole payload in one record.
pub const FLAG_WHOLE: u32 = 0;
/// Continuation flag: first record of a split payload.
pub const FLAG_START: u32 = 1;
/// Continuation flag: a middle record of a split payload.
pub const FLAG_MIDDLE: u32 = 2;
/// Continuation flag: last record of a split payload.
pub const FLAG_END: u32 = 3;

/// The 8 header bytes of a record.
pub fn header(flag: u32, len: u32) -> [u8; 8] {
    debug_assert!(flag < 8 && u64::from(len) <= MAX_RECORD_LEN);
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..].copy_from_slice(&((flag << 29) | (len & 0x1fff_ffff)).to_le_bytes());
    out
}

/// Zero bytes that follow a payload of `len` bytes.
pub fn padding(len: u64) -> &'static [u8] {
    const ZEROS: [u8; 3] = [0; 3];
    &ZEROS[..((4 - len % 4) % 4) as usize]
}

fn flag_for(part: u64, parts: u64) -> u32 {
    match (part, parts) {
        (_, 1) => FLAG_WHOLE,
        (0, _) => FLAG_START,
        (p, n) if p + 1 == n => FLAG_END,
        _ => FLAG_MIDDLE,
    }
}

fn len_u32(len: u64) -> u32 {
    // Callers never pass more than MAX_RECORD_LEN, which fits.
    u32::try_from(len).unwrap_or(u32::MAX) & 0x1fff_ffff
}

/// Frames a payload of known length as it streams through.
#[derive(Debug)]
pub struct KnownLengthFramer {
    limit: u64,
    total: u64,
    done: u64,
    /// Payload bytes still to come in the current record.
    left: u64,
    part: u64,
    parts: u64,
}

impl KnownLengthFramer {
    /// A framer for a `total`-byte payload; writes the first header to `out`.
    pub fn begin(total: u64, out: &mut impl Write) -> io::Result<Self> {
        Self::with_limit(total, MAX_RECORD_LEN, out)
    }

    /// As [`begin`](Self::begin) with records of at most `limit` bytes (tests use a
    /// small one; a real split needs half a gigabyte).
    pub fn with_limit(total: u64, limit: u64, out: &mut impl Write) -> io::Result<Self> {
        let limit = limit.max(1);
        let mut framer = KnownLengthFramer {
            limit,
            total,
            done: 0,
            left: 0,
            part: 0,
            parts: total.div_ceil(limit).max(1),
        };
        framer.start_record(out)?;
        Ok(framer)
    }

    fn start_record(&mut self, out: &mut impl Write) -> io::Result<()> {
        let len = self.limit.min(self.total - self.done);
        out.write_all(&header(flag_for(self.part, self.parts), len_u32(len)))?;
        self.left = len;
        Ok(())
    }

    /// Writes payload bytes, with headers and padding where records end and begin.
    pub fn write(&mut self, mut data: &[u8], out: &mut impl Write) -> io::Result<()> {
        while !data.is_empty() {
            if self.left == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "payload is longer than the {} bytes announced in its record header",
                        self.total
                    ),
                ));
            }
            let take = usize::try_from(self.left)
                .unwrap_or(usize::MAX)
                .min(data.len());
            out.write_all(&data[..take])?;
            data = &data[take..];
            self.left -= take as u64;
            self.done += take as u64;
            if self.left == 0 {
                let record_len = self.limit.min(self.total - self.part * self.limit);
                out.write_all(padding(record_len))?;
                self.part += 1;
                if self.done < self.total {
                    self.start_record(out)?;
                }
            }
        }
        Ok(())
    }

    /// Checks that the whole payload went through.
    pub fn finish(self) -> io::Result<()> {
        if self.done == self.total {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "payload ended after {} of the {} bytes announced in its record header",
                    self.done, self.total
                ),
            ))
        }
    }
}

/// Frames a payload of unknown length, holding up to one record of it.
#[derive(Debug)]
pub struct BufferedFramer {
    limit: usize,
    buf: Vec<u8>,
    parts_written: u64,
}

impl Default for BufferedFramer {
    fn default() -> Self {
        Self::with_limit(MAX_RECORD_LEN)
    }
}

impl BufferedFramer {
    /// A framer with records of at most `limit` bytes.
    pub fn with_limit(limit: u64) -> Self {
        BufferedFramer {
            limit: usize::try_from(limit.clamp(1, MAX_RECORD_LEN)).unwrap_or(usize::MAX),
            buf: Vec::new(),
            parts_written: 0,
        }
    }

    fn emit(&mut self, flag: u32, out: &mut impl Write) -> io::Result<()> {
        let len = self.buf.len() as u64;
        out.write_all(&header(flag, len_u32(len)))?;
        out.write_all(&self.buf)?;
        out.write_all(padding(len))?;
        self.buf.clear();
        self.parts_written += 1;
        Ok(())
    }

    /// Takes payload bytes; writes a record only once it is known not to be the last.
    pub fn write(&mut self, mut data: &[u8], out: &mut impl Write) -> io::Result<()> {
        while !data.is_empty() {
            if self.buf.len() == self.limit {
                // More payload follows a full buffer, so the record is a part.
                let flag = if self.parts_written == 0 {
                    FLAG_START
                } else {
                    FLAG_MIDDLE
                };
                self.emit(flag, out)?;
            }
            let take = (self.limit - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Writes the last (or only) record.
    pub fn finish(mut self, out: &mut impl Write) -> io::Result<()> {
        let flag = if self.parts_written == 0 {
            FLAG_WHOLE
        } else {
            FLAG_END
        };
        self.emit(flag, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a RecordIO stream into (flag, payload) records, checking the layout.
    fn parse(mut data: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            assert!(data.len() >= 8, "truncated header");
            let magic = u32::from_le_bytes(data[..4].try_into().unwrap());
            assert_eq!(magic, MAGIC);
            let word = u32::from_le_bytes(data[4..8].try_into().unwrap());
            let (flag, len) = (word >> 29, (word & 0x1fff_ffff) as usize);
            let padded = len + (4 - len % 4) % 4;
            assert!(data.len() >= 8 + padded, "truncated payload");
            assert!(data[8 + len..8 + padded].iter().all(|&b| b == 0));
            out.push((flag, data[8..8 + len].to_vec()));
            data = &data[8 + padded..];
        }
        out
    }

    /// Joins continuation runs back into payloads.
    fn payloads(records: &[(u32, Vec<u8>)]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cur: Option<Vec<u8>> = None;
        for (flag, p) in records {
            match *flag {
                FLAG_WHOLE => {
                    assert!(cur.is_none());
                    out.push(p.clone());
                }
                FLAG_START => {
                    assert!(cur.is_none());
                    cur = Some(p.clone());
                }
                FLAG_MIDDLE => cur.as_mut().expect("middle without start").extend(p),
                FLAG_END => {
                    let mut whole = cur.take().expect("end without start");
                    whole.extend(p);
                    out.push(whole);
                }
                f => panic!("bad flag {f}"),
            }
        }
        assert!(cur.is_none());
        out
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn known(payload: &[u8], limit: u64, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut f = KnownLengthFramer::with_limit(payload.len() as u64, limit, &mut out).unwrap();
        for c in payload.chunks(chunk.max(1)) {
            f.write(c, &mut out).unwrap();
        }
        f.finish().unwrap();
        out
    }

    fn buffered(payload: &[u8], limit: u64, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut f = BufferedFramer::with_limit(limit);
        for c in payload.chunks(chunk.max(1)) {
            f.write(c, &mut out).unwrap();
        }
        f.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn header_layout() {
        assert_eq!(header(0, 5), [0x0a, 0x23, 0xd7, 0xce, 5, 0, 0, 0]);
        assert_eq!(
            header(FLAG_END, 0x1fff_ffff),
            [0x0a, 0x23, 0xd7, 0xce, 0xff, 0xff, 0xff, 0x7f]
        );
        assert_eq!(padding(0).len(), 0);
        assert_eq!(padding(1).len(), 3);
        assert_eq!(padding(6).len(), 2);
        assert_eq!(padding(8).len(), 0);
    }

    #[test]
    fn small_payloads_are_one_record() {
        for n in [0usize, 1, 3, 4, 5, 100] {
            let p = bytes(n);
            let out = known(&p, MAX_RECORD_LEN, 7);
            assert_eq!(out.len() % 4, 0);
            assert_eq!(out.len(), 8 + n + padding(n as u64).len());
            assert_eq!(parse(&out), vec![(FLAG_WHOLE, p.clone())]);
            assert_eq!(buffered(&p, MAX_RECORD_LEN, 7), out);
        }
    }

    #[test]
    fn long_payloads_split_into_continuation_records() {
        // limit 10: 25 bytes -> 10 (start), 10 (middle), 5 (end).
        let p = bytes(25);
        for chunk in [1, 3, 10, 25] {
            let out = known(&p, 10, chunk);
            let recs = parse(&out);
            let flags: Vec<u32> = recs.iter().map(|r| r.0).collect();
            let lens: Vec<usize> = recs.iter().map(|r| r.1.len()).collect();
            assert_eq!(flags, [FLAG_START, FLAG_MIDDLE, FLAG_END]);
            assert_eq!(lens, [10, 10, 5]);
            assert_eq!(payloads(&recs), vec![p.clone()]);
            assert_eq!(buffered(&p, 10, chunk), out, "chunk {chunk}");
        }
        // Exactly two records, and exactly one: no empty trailing part.
        let p = bytes(20);
        let flags: Vec<u32> = parse(&known(&p, 10, 4)).iter().map(|r| r.0).collect();
        assert_eq!(flags, [FLAG_START, FLAG_END]);
        assert_eq!(buffered(&p, 10, 4), known(&p, 10, 4));
        let p = bytes(10);
        assert_eq!(parse(&known(&p, 10, 4)), vec![(FLAG_WHOLE, p.clone())]);
        assert_eq!(buffered(&p, 10, 4), known(&p, 10, 4));
    }

    #[test]
    fn many_payloads_round_trip() {
        let mut out = Vec::new();
        let inputs: Vec<Vec<u8>> = [0usize, 9, 1, 31, 32, 33, 0, 64]
            .iter()
            .map(|&n| bytes(n))
            .collect();
        for p in &inputs {
            out.extend(known(p, 16, 5));
        }
        assert_eq!(payloads(&parse(&out)), inputs);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let mut out = Vec::new();
        let mut f = KnownLengthFramer::with_limit(4, 10, &mut out).unwrap();
        assert!(f.write(&[1, 2, 3, 4, 5], &mut out).is_err());
        let mut out = Vec::new();
        let mut f = KnownLengthFramer::with_limit(4, 10, &mut out).unwrap();
        f.write(&[1, 2], &mut out).unwrap();
        assert!(f.finish().is_err());
    }
}
