//! The name of a blob: the BLAKE3 root of its bytes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The id of a content-addressed blob: the 32-byte BLAKE3 root hash of its bytes (for files,
/// of the ciphertext; docs/files.md). Its one text form is 64 lowercase hex digits, which is
/// what `b3sum` prints for the same bytes.
///
/// A blob hash is not secret (it names ciphertext), but it is an identifier a peer chose, so
/// parsing is strict: exactly 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobHash([u8; 32]);

/// Why a text is not a blob hash. Never contains the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a blob hash (64 hex digits)")]
pub struct BlobHashError;

impl BlobHash {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// From the raw 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits (either case).
    pub fn parse(text: &str) -> Result<Self, BlobHashError> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(BlobHashError);
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(Self(out))
    }

    /// The first 8 hex digits, for logs and short displays.
    pub fn short(&self) -> String {
        let mut s = String::with_capacity(8);
        for b in &self.0[..4] {
            push_hex(&mut s, *b);
        }
        s
    }
}

fn nibble(c: u8) -> Result<u8, BlobHashError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(BlobHashError),
    }
}

fn push_hex(s: &mut String, b: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    s.push(char::from(DIGITS[usize::from(b >> 4)]));
    s.push(char::from(DIGITS[usize::from(b & 15)]));
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(64);
        for b in &self.0 {
            push_hex(&mut s, *b);
        }
        f.write_str(&s)
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.short())
    }
}

impl FromStr for BlobHash {
    type Err = BlobHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<[u8; 32]> for BlobHash {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl Serialize for BlobHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(|_| serde::de::Error::custom("not a blob hash"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_form_is_lowercase_hex() {
        let h = BlobHash::from_bytes([0xab; 32]);
        assert_eq!(h.to_string(), "ab".repeat(32));
        assert_eq!(h.short(), "abababab");
        assert_eq!(format!("{h:?}"), "BlobHash(abababab)");
        assert_eq!(BlobHash::parse(&"AB".repeat(32)), Ok(h));
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            format!("\"{}\"", "ab".repeat(32))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in ["", "ab", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            assert_eq!(BlobHash::parse(bad), Err(BlobHashError));
        }
        assert!(serde_json::from_str::<BlobHash>("\"secret\"").is_err());
        assert!(!BlobHashError.to_string().contains("secret"));
    }

    proptest! {
        #[test]
        fn round_trips(bytes in any::<[u8; 32]>()) {
            let h = BlobHash::from_bytes(bytes);
            prop_assert_eq!(BlobHash::parse(&h.to_string()), Ok(h));
            let json = serde_json::to_string(&h).unwrap();
            prop_assert_eq!(serde_json::from_str::<BlobHash>(&json).unwrap(), h);
        }
    }
}
