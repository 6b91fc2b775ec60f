//! ETags as a plan keeps them: one per object for the whole life of a mount, so
//! the common shapes are stored as bytes, not text. S3 ETags are nearly always an
//! MD5 in lower-case hex between quotes, or that plus `-<parts>` for a multipart
//! upload; those fit in 24 bytes with no heap allocation. Any other ETag is kept
//! as given. The text form always round-trips exactly: it is what `If-Match`
//! sends back to the server.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An object's ETag, exactly as listed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Md5 {
        digest: [u8; 16],
        /// The `-N` of a multipart ETag; 0 when there is none.
        parts: u32,
        quoted: bool,
    },
    Text(Box<str>),
}

impl ETag {
    /// The ETag `text`, stored compactly when it has a known shape.
    pub fn new(text: &str) -> ETag {
        match parse_md5(text) {
            Some((digest, parts, quoted)) => ETag(Repr::Md5 {
                digest,
                parts,
                quoted,
            }),
            None => ETag(Repr::Text(text.into())),
        }
    }

    /// The ETag as the server gave it.
    pub fn as_string(&self) -> String {
        self.to_string()
    }
}

impl From<&str> for ETag {
    fn from(text: &str) -> ETag {
        ETag::new(text)
    }
}

impl From<String> for ETag {
    fn from(text: String) -> ETag {
        match parse_md5(&text) {
            Some(_) => ETag::new(&text),
            None => ETag(Repr::Text(text.into_boxed_str())),
        }
    }
}

impl PartialEq<str> for ETag {
    fn eq(&self, other: &str) -> bool {
        match &self.0 {
            Repr::Text(t) => &**t == other,
            Repr::Md5 { .. } => ETag::new(other) == *self,
        }
    }
}

impl PartialEq<&str> for ETag {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Text(t) => f.write_str(t),
            Repr::Md5 {
                digest,
                parts,
                quoted,
            } => {
                let mut hex = [0u8; 32];
                for (i, b) in digest.iter().enumerate() {
                    hex[2 * i] = HEX[usize::from(b >> 4)];
                    hex[2 * i + 1] = HEX[usize::from(b & 0xf)];
                }
                let hex = std::str::from_utf8(&hex).map_err(|_| fmt::Error)?;
                let q = if *quoted { "\"" } else { "" };
                if *parts == 0 {
                    write!(f, "{q}{hex}{q}")
                } else {
                    write!(f, "{q}{hex}-{parts}{q}")
                }
            }
        }
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

impl Serialize for ETag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ETag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ETag, D::Error> {
        String::deserialize(d).map(ETag::from)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `"<32 lower-case hex>"` or `"<32 hex>-<N>"` (N decimal, 1..=u32::MAX, no
/// leading zero), quotes optional; anything else is not ours to reshape.
fn parse_md5(text: &str) -> Option<([u8; 16], u32, bool)> {
    let (body, quoted) = match text.strip_prefix('"') {
        Some(rest) => (rest.strip_suffix('"')?, true),
        None => (text, false),
    };
    let bytes = body.as_bytes();
    if bytes.len() < 32 {
        return None;
    }
    let (hex, tail) = bytes.split_at(32);
    let mut digest = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        digest[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    let parts = match tail {
        [] => 0,
        [b'-', b'1'..=b'9', rest @ ..] if rest.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(&tail[1..]).ok()?.parse::<u32>().ok()?
        }
        _ => return None,
    };
    Some((digest, parts, quoted))
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        for text in [
            "\"d41d8cd98f00b204e9800998ecf8427e\"",
            "d41d8cd98f00b204e9800998ecf8427e",
            "\"d41d8cd98f00b204e9800998ecf8427e-12\"",
            "\"d41d8cd98f00b204e9800998ecf8427e-4294967295\"",
            // Shapes kept as text.
            "\"D41D8CD98F00B204E9800998ECF8427E\"",
            "\"d41d8cd98f00b204e9800998ecf8427e-0\"",
            "\"d41d8cd98f00b204e9800998ecf8427e-01\"",
            "\"d41d8cd98f00b204e9800998ecf8427e-4294967296\"",
            "\"d41d8cd98f00b204e9800998ecf8427e",
            "W/\"d41d8cd98f00b204e9800998ecf8427e\"",
            "\"3\"",
            "",
            "\"\"",
        ] {
            let e = ETag::new(text);
            assert_eq!(e.as_string(), text);
            assert_eq!(e, *text);
            assert_eq!(ETag::from(text.to_owned()), e);
            let json = serde_json::to_string(&e).expect("serialize");
            assert_eq!(serde_json::from_str::<ETag>(&json).expect("parse"), e);
        }
        assert!(matches!(
            ETag::new("\"d41d8cd98f00b204e9800998ecf8427e-12\"").0,
            Repr::Md5 { parts: 12, .. }
        ));
        assert!(matches!(ETag::new("\"3\"").0, Repr::Text(_)));
    }

    #[test]
    fn is_small() {
        assert!(std::mem::size_of::<Option<ETag>>() <= 24);
    }
}
