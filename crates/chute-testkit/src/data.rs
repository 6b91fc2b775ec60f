//! Test data every suite needs: deterministic object contents and their hashes.

use sha2::{Digest, Sha256};

/// Deterministic, non-repeating bytes (xorshift64), so an offset error shows as
/// a mismatch, which a repeating pattern could hide, and a failure reproduces.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Hex SHA-256, the form test assertions compare.
pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_seeded() {
        assert_eq!(pattern(100, 1), pattern(100, 1));
        assert_ne!(pattern(100, 1), pattern(100, 2));
        assert_eq!(pattern(13, 5).len(), 13);
        assert_eq!(pattern(13, 5)[..], pattern(64, 5)[..13]);
    }
}
