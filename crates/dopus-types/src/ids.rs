//! Typed identifiers for spaces, channels, calls and blobs.
//!
//! Each is a fixed number of bytes printed as bech32m with its own human-readable part, like a
//! user ID (`dopus1…`): `dspace1…`, `dchan1…`, `dcall1…`, `dblob1…`. The prefix says what an id
//! names, so a channel id pasted where a user id belongs is refused with a clear message, and the
//! checksum turns a mistyped id into an error instead of another space. Parsing accepts any
//! letter case; printing is lowercase. On the wire (JSON) each travels as its printed form.
//!
//! - [`SpaceId`]: the hash of a space's signed genesis operation (32 bytes).
//! - [`ChannelId`]: a channel of a space (16 bytes, unique across spaces).
//! - [`CallId`]: one call (16 random bytes).
//! - [`BlobHash`]: the BLAKE3 tree root of a file's ciphertext (32 bytes).

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a string is not the id it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not bech32 at all (wrong characters, no separator, wrong length).
    #[error("not a {what} (expected {hrp}1…)")]
    Format {
        /// What was expected, in words.
        what: &'static str,
        /// The expected prefix.
        hrp: &'static str,
    },
    /// The checksum does not match: at least one character is mistyped.
    #[error("this {what} has a typo: its checksum does not match")]
    Checksum {
        /// What was expected, in words.
        what: &'static str,
    },
    /// A valid bech32m string for something else (another id kind, or a user id).
    #[error("not a {what}: it starts with {found:?} instead of {hrp:?}")]
    Prefix {
        /// What was expected, in words.
        what: &'static str,
        /// The expected prefix.
        hrp: &'static str,
        /// The prefix found.
        found: String,
    },
    /// The right prefix but the wrong number of bytes.
    #[error("this {what} has {actual} bytes instead of {expected}")]
    Length {
        /// What was expected, in words.
        what: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        actual: usize,
    },
}

fn encode(hrp: &'static str, bytes: &[u8]) -> String {
    #[allow(
        clippy::expect_used,
        reason = "constant, valid HRPs and payloads of at most 32 bytes"
    )]
    let text =
        bech32::encode_lower::<Bech32m>(Hrp::parse(hrp).expect("constant HRP is valid"), bytes)
            .expect("at most 32 bytes fit in bech32m");
    text
}

fn decode<const N: usize>(
    what: &'static str,
    hrp: &'static str,
    text: &str,
) -> Result<[u8; N], IdError> {
    let lower = text.trim().to_ascii_lowercase();
    let checked = match CheckedHrpstring::new::<Bech32m>(&lower) {
        Ok(c) => c,
        Err(bech32::primitives::decode::CheckedHrpstringError::Checksum(_)) => {
            return Err(IdError::Checksum { what });
        }
        Err(_) => return Err(IdError::Format { what, hrp }),
    };
    if checked.hrp().as_str() != hrp {
        return Err(IdError::Prefix {
            what,
            hrp,
            found: checked.hrp().to_string(),
        });
    }
    let bytes: Vec<u8> = checked.byte_iter().collect();
    bytes.as_slice().try_into().map_err(|_| IdError::Length {
        what,
        expected: N,
        actual: bytes.len(),
    })
}

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident, $len:literal, $hrp:literal, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; $len]);

        impl $name {
            /// The human-readable part of the printed form.
            pub const HRP: &'static str = $hrp;
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The id with these bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The id's bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// The id from a slice, refusing a wrong length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                bytes.try_into().map(Self).map_err(|_| IdError::Length {
                    what: $what,
                    expected: $len,
                    actual: bytes.len(),
                })
            }

            /// Parses the printed form in any letter case, refusing typos.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                decode::<$len>($what, $hrp, text).map(Self)
            }

            /// A short, stable prefix for logs (`dchan1abcd…wxyz`).
            pub fn short(&self) -> String {
                let s = self.to_string();
                let head = $hrp.len() + 5;
                format!("{}…{}", &s[..head], &s[s.len() - 4..])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&encode($hrp, &self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(
    /// A space: the hash of its signed genesis operation, printed `dspace1…`.
    SpaceId,
    32,
    "dspace",
    "space id"
);
typed_id!(
    /// A channel of a space, printed `dchan1…`; unique across spaces.
    ChannelId,
    16,
    "dchan",
    "channel id"
);
typed_id!(
    /// One call, printed `dcall1…`.
    CallId,
    16,
    "dcall",
    "call id"
);
typed_id!(
    /// The BLAKE3 tree root of a file's ciphertext, printed `dblob1…`.
    BlobHash,
    32,
    "dblob",
    "file id"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn printed_forms_carry_their_kind() {
        let s = SpaceId::from_bytes([7; 32]);
        let c = ChannelId::from_bytes([9; 16]);
        assert!(s.to_string().starts_with("dspace1"));
        assert!(c.to_string().starts_with("dchan1"));
        assert!(
            CallId::from_bytes([1; 16])
                .to_string()
                .starts_with("dcall1")
        );
        assert!(
            BlobHash::from_bytes([2; 32])
                .to_string()
                .starts_with("dblob1")
        );
        assert_eq!(SpaceId::parse(&s.to_string().to_uppercase()), Ok(s));
        assert!(matches!(
            ChannelId::parse(&s.to_string()),
            Err(IdError::Prefix { .. })
        ));
        let mut typo = c.to_string().into_bytes();
        let last = typo.len() - 1;
        typo[last] = if typo[last] == b'q' { b'p' } else { b'q' };
        assert_eq!(
            ChannelId::parse(std::str::from_utf8(&typo).unwrap()),
            Err(IdError::Checksum { what: "channel id" })
        );
        assert!(matches!(
            ChannelId::parse("hello"),
            Err(IdError::Format { .. })
        ));
        // Right prefix, wrong length.
        let short = encode("dchan", &[1; 8]);
        assert!(matches!(
            ChannelId::parse(&short),
            Err(IdError::Length { .. })
        ));
        assert!(c.short().starts_with("dchan1"));
    }

    #[test]
    fn json_is_the_printed_form() {
        let c = ChannelId::from_bytes([3; 16]);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, format!("\"{c}\""));
        assert_eq!(serde_json::from_str::<ChannelId>(&json).unwrap(), c);
        assert!(serde_json::from_str::<SpaceId>(&json).is_err());
    }

    proptest! {
        #[test]
        fn ids_round_trip(b32 in any::<[u8; 32]>(), b16 in any::<[u8; 16]>()) {
            let s = SpaceId::from_bytes(b32);
            prop_assert_eq!(SpaceId::parse(&s.to_string()), Ok(s));
            let b = BlobHash::from_bytes(b32);
            prop_assert_eq!(b.to_string().parse::<BlobHash>(), Ok(b));
            let c = ChannelId::from_bytes(b16);
            prop_assert_eq!(ChannelId::parse(&c.to_string()), Ok(c));
            let k = CallId::from_bytes(b16);
            prop_assert_eq!(CallId::from_slice(k.as_bytes()), Ok(k));
        }

        #[test]
        fn parsing_garbage_never_panics(text in "\\PC{0,80}") {
            let _ = SpaceId::parse(&text);
            let _ = ChannelId::parse(&text);
        }
    }
}
