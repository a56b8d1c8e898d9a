//! User IDs: a user's Ed25519 identity key as a bech32m string.
//!
//! Format: human-readable part `dopus`, separator `1`, the 32 key bytes in bech32's 5-bit
//! alphabet, and a 6-character bech32m checksum: 64 characters in all, lowercase when printed.
//! Parsing accepts any letter case (people retype IDs) and refuses any string whose checksum does
//! not match, so a typo is reported instead of naming another user. Bech32m detects every error
//! of up to 4 characters and, beyond that, lets a random error through with odds of about 1 in 10⁹.

use crate::keys::{Ed25519Key, KeyError};
use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The human-readable part of every user ID.
pub const USER_ID_HRP: &str = "dopus";

/// A user: the Ed25519 identity key, printed as `dopus1…`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(Ed25519Key);

/// Why a string is not a user ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    /// The string is not bech32 at all (wrong characters, no separator, wrong length).
    #[error("not a DiscordOpus user ID (expected dopus1 followed by 58 characters)")]
    Format,
    /// The checksum does not match: at least one character is mistyped.
    #[error("this user ID has a typo: its checksum does not match")]
    Checksum,
    /// A valid bech32m string for something else.
    #[error("not a DiscordOpus user ID: it starts with {0:?} instead of \"dopus\"")]
    Prefix(String),
    /// The payload is not a 32-byte Ed25519 key.
    #[error("this user ID does not contain a valid key: {0}")]
    Key(#[from] KeyError),
}

impl UserId {
    /// The user whose identity key this is.
    pub const fn from_key(key: Ed25519Key) -> Self {
        Self(key)
    }

    /// The identity key.
    pub const fn key(&self) -> &Ed25519Key {
        &self.0
    }

    /// The printed form, `dopus1…`, lowercase.
    pub fn to_bech32(&self) -> String {
        let key = *self.0.as_bytes();
        if let Some(text) = PRINTED.with(|m| m.borrow().get(&key).cloned()) {
            return text;
        }
        let text = self.encode();
        PRINTED.with(|m| m.borrow_mut().put(key, text.clone()));
        text
    }

    fn encode(&self) -> String {
        // The HRP is a valid constant and 32 bytes are far below bech32m's length limit.
        #[allow(
            clippy::expect_used,
            reason = "constant HRP and a fixed 32-byte payload"
        )]
        let hrp = Hrp::parse(USER_ID_HRP).expect("constant HRP is valid");
        #[allow(
            clippy::expect_used,
            reason = "a 32-byte payload is within bech32m limits"
        )]
        bech32::encode_lower::<Bech32m>(hrp, self.0.as_bytes()).expect("32 bytes fit in bech32m")
    }

    /// Parses a user ID in any letter case, refusing typos.
    pub fn parse(text: &str) -> Result<Self, UserIdError> {
        if let Some(id) = PARSED.with(|m| m.borrow().get(text).copied()) {
            return Ok(id);
        }
        let id = Self::decode(text)?;
        PARSED.with(|m| m.borrow_mut().put(text.to_owned(), id));
        Ok(id)
    }

    fn decode(text: &str) -> Result<Self, UserIdError> {
        let lower = text.trim().to_ascii_lowercase();
        let checked = match CheckedHrpstring::new::<Bech32m>(&lower) {
            Ok(c) => c,
            Err(bech32::primitives::decode::CheckedHrpstringError::Checksum(_)) => {
                return Err(UserIdError::Checksum);
            }
            Err(_) => return Err(UserIdError::Format),
        };
        if checked.hrp().as_str() != USER_ID_HRP {
            return Err(UserIdError::Prefix(checked.hrp().to_string()));
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            UserIdError::Key(KeyError::Length {
                expected: 32,
                actual: bytes.len(),
            })
        })?;
        Ok(Self(Ed25519Key::from_bytes(&array)?))
    }

    /// A short, stable prefix for logs and UIs that must not show a whole ID (`dopus1abcd…wxyz`).
    pub fn short(&self) -> String {
        let s = self.to_bech32();
        format!("{}…{}", &s[..10], &s[s.len() - 4..])
    }
}

/// How many IDs each thread remembers in each direction. Printing and parsing are pure, but
/// each costs a checksum over the whole string, and parsing also checks the key is a valid
/// curve point (a square root); a node prints and reads the same few IDs (its own, its
/// contacts') for every message, so remembering the last few saves that work.
const MEMO_SIZE: usize = 8;

/// The last few results of a pure function, replaced round-robin.
struct Memo<K, V> {
    entries: Vec<(K, V)>,
    next: usize,
}

impl<K: PartialEq, V> Memo<K, V> {
    const fn new() -> Self {
        Self {
            entries: Vec::new(),
            next: 0,
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.entries
            .iter()
            .find(|(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    fn put(&mut self, key: K, value: V) {
        if self.entries.len() < MEMO_SIZE {
            self.entries.push((key, value));
        } else if let Some(slot) = self.entries.get_mut(self.next) {
            *slot = (key, value);
            self.next = (self.next + 1) % MEMO_SIZE;
        }
    }
}

thread_local! {
    static PRINTED: std::cell::RefCell<Memo<[u8; 32], String>> =
        const { std::cell::RefCell::new(Memo::new()) };
    static PARSED: std::cell::RefCell<Memo<String, UserId>> =
        const { std::cell::RefCell::new(Memo::new()) };
}

impl FromStr for UserId {
    type Err = UserIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_bech32())
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.to_bech32())
    }
}

impl PartialOrd for UserId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for UserId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_bytes().cmp(other.0.as_bytes())
    }
}

impl Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_bech32())
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn user(seed: u8) -> UserId {
        let vk = SigningKey::from_bytes(&[seed; 32]).verifying_key();
        UserId::from_key(Ed25519Key::from_bytes(vk.as_bytes()).unwrap())
    }

    #[test]
    fn remembered_results_match_fresh_ones_for_more_ids_than_are_remembered() {
        // Three rounds over more IDs than a thread remembers: every answer, remembered or
        // not, is the one computed from scratch, and a typo is refused every time.
        for _ in 0..3 {
            for seed in 1..=(MEMO_SIZE as u8 * 2) {
                let id = user(seed);
                assert_eq!(id.to_bech32(), id.encode());
                let text = id.to_bech32();
                assert_eq!(UserId::parse(&text), Ok(id));
                assert_eq!(UserId::parse(&text.to_uppercase()), Ok(id));
                let mut typo = text.clone();
                typo.replace_range(20..21, if &text[20..21] == "q" { "p" } else { "q" });
                assert!(UserId::parse(&typo).is_err());
            }
        }
    }

    #[test]
    fn prints_lowercase_with_prefix_and_fixed_length() {
        let id = user(1).to_bech32();
        assert!(id.starts_with("dopus1"), "{id}");
        assert_eq!(id.len(), 64);
        assert_eq!(id, id.to_lowercase());
    }

    #[test]
    fn parsing_is_case_insensitive_and_trims() {
        let u = user(2);
        let text = u.to_bech32();
        assert_eq!(UserId::parse(&text.to_uppercase()), Ok(u));
        assert_eq!(UserId::parse(&format!("  {text}\n")), Ok(u));
        let mixed: String = text
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        assert_eq!(UserId::parse(&mixed), Ok(u));
    }

    #[test]
    fn every_single_character_typo_is_refused() {
        let text = user(3).to_bech32();
        let alphabet = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        for pos in 6..text.len() {
            for c in alphabet.chars() {
                if text.as_bytes()[pos] as char == c {
                    continue;
                }
                let mut typo = text.clone().into_bytes();
                typo[pos] = c as u8;
                let typo = String::from_utf8(typo).unwrap();
                assert!(UserId::parse(&typo).is_err(), "typo accepted: {typo}");
            }
        }
    }

    #[test]
    fn swapped_neighbours_are_refused() {
        let text = user(4).to_bech32();
        for pos in 6..text.len() - 1 {
            let mut b = text.clone().into_bytes();
            if b[pos] == b[pos + 1] {
                continue;
            }
            b.swap(pos, pos + 1);
            let swapped = String::from_utf8(b).unwrap();
            assert!(UserId::parse(&swapped).is_err(), "swap accepted: {swapped}");
        }
    }

    #[test]
    fn refuses_other_prefixes_and_garbage() {
        let hrp = Hrp::parse("npub").unwrap();
        let other = bech32::encode_lower::<Bech32m>(hrp, user(5).key().as_bytes()).unwrap();
        assert_eq!(
            UserId::parse(&other),
            Err(UserIdError::Prefix("npub".into()))
        );
        assert_eq!(UserId::parse("hello"), Err(UserIdError::Format));
        assert_eq!(UserId::parse(""), Err(UserIdError::Format));
        // Bech32 (not bech32m) checksum over the same data is a different code: refused.
        let hrp = Hrp::parse("dopus").unwrap();
        let legacy = bech32::encode_lower::<bech32::Bech32>(hrp, user(5).key().as_bytes()).unwrap();
        assert!(UserId::parse(&legacy).is_err());
        // Wrong payload length.
        let short = bech32::encode_lower::<Bech32m>(hrp, &[1u8; 16]).unwrap();
        assert!(matches!(UserId::parse(&short), Err(UserIdError::Key(_))));
    }

    #[test]
    fn serde_uses_the_printed_form() {
        let u = user(6);
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, format!("\"{}\"", u.to_bech32()));
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), u);
        assert!(serde_json::from_str::<UserId>("\"dopus1qqqq\"").is_err());
    }

    proptest! {
        #[test]
        fn round_trips_every_valid_key(seed in any::<[u8; 32]>()) {
            let vk = SigningKey::from_bytes(&seed).verifying_key();
            let u = UserId::from_key(Ed25519Key::from_bytes(vk.as_bytes()).unwrap());
            prop_assert_eq!(UserId::parse(&u.to_bech32()), Ok(u));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = UserId::parse(&s);
        }
    }
}
