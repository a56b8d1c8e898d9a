//! Public key material and signatures, each with one canonical text form: standard base64
//! without padding (the form vodozemac and Matrix use).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why key material could not be decoded or a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not base64.
    #[error("not valid base64")]
    Base64,
    /// The decoded bytes have the wrong length for this kind of key.
    #[error("expected {expected} bytes, got {actual}")]
    Length {
        /// Bytes this kind of key has.
        expected: usize,
        /// Bytes that were given.
        actual: usize,
    },
    /// The bytes are not a usable Ed25519 public key (not a curve point, or a weak key).
    #[error("not a valid Ed25519 public key")]
    InvalidEd25519,
    /// The signature does not verify for this key and message.
    #[error("signature does not verify")]
    BadSignature,
}

/// Encodes bytes as standard base64 without padding.
pub fn b64_encode(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// Decodes standard base64, with or without padding.
pub fn b64_decode(text: &str) -> Result<Vec<u8>, KeyError> {
    let trimmed = text.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD.decode(text))
        .map_err(|_| KeyError::Base64)
}

fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], KeyError> {
    let bytes = b64_decode(text)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length {
        expected: N,
        actual: bytes.len(),
    })
}

/// An Ed25519 public key: a user's identity key or a device's signing key.
///
/// Only keys that decompress to a curve point of large order are accepted, and verification is
/// strict (RFC 8032 plus the checks of `verify_strict`), so a signature has exactly one valid form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ed25519Key(VerifyingKey);

/// How many accepted Ed25519 keys each thread remembers (see [`Ed25519Key::from_bytes`]).
const ACCEPTED_SLOTS: usize = 256;

impl Ed25519Key {
    /// Length of the key in bytes.
    pub const LEN: usize = 32;

    /// From the 32-byte compressed Edwards point.
    ///
    /// Checking a point means decompressing it (a field square root, tens of microseconds),
    /// and the same few keys (ours, our contacts') are read from every stored row and every
    /// envelope, so each thread remembers the last keys it accepted (a small direct-mapped
    /// cache compared on all 32 bytes; only valid keys are ever in it).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        thread_local! {
            static ACCEPTED: std::cell::RefCell<Vec<Option<VerifyingKey>>> =
                std::cell::RefCell::new(vec![None; ACCEPTED_SLOTS]);
        }
        let slot = usize::from(bytes[0]) % ACCEPTED_SLOTS;
        let hit = ACCEPTED.with(|cache| {
            cache
                .borrow()
                .get(slot)
                .and_then(Option::as_ref)
                .filter(|k| k.as_bytes() == bytes)
                .copied()
        });
        if let Some(key) = hit {
            return Ok(Self(key));
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidEd25519)?;
        if key.is_weak() {
            return Err(KeyError::InvalidEd25519);
        }
        ACCEPTED.with(|cache| {
            if let Some(entry) = cache.borrow_mut().get_mut(slot) {
                *entry = Some(key);
            }
        });
        Ok(Self(key))
    }

    /// From the canonical base64 text.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&decode_array::<32>(text)?)
    }

    /// The 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The key bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The canonical base64 text.
    pub fn to_base64(&self) -> String {
        b64_encode(self.as_bytes())
    }

    /// Checks `signature` over `message` with strict Ed25519 verification.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), KeyError> {
        let sig = DalekSignature::from_bytes(&signature.0);
        self.0
            .verify_strict(message, &sig)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519Key({})", self.to_base64())
    }
}

impl fmt::Display for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl FromStr for Ed25519Key {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

/// A Curve25519 (X25519) public key: a device's Olm identity key, a one-time key or a fallback key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Curve25519Key([u8; 32]);

impl Curve25519Key {
    /// From the 32 key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// From the canonical base64 text.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self(decode_array::<32>(text)?))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The canonical base64 text.
    pub fn to_base64(&self) -> String {
        b64_encode(&self.0)
    }
}

impl fmt::Debug for Curve25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Curve25519Key({})", self.to_base64())
    }
}

impl fmt::Display for Curve25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl FromStr for Curve25519Key {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 64]);

impl Signature {
    /// From the 64 signature bytes.
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// From the canonical base64 text.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self(decode_array::<64>(text)?))
    }

    /// The signature bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// The canonical base64 text.
    pub fn to_base64(&self) -> String {
        b64_encode(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_base64())
    }
}

impl FromStr for Signature {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

macro_rules! serde_as_base64 {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_base64())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$t>::from_base64(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_as_base64!(Ed25519Key);
serde_as_base64!(Curve25519Key);
serde_as_base64!(Signature);

/// The two public keys of one device's Olm account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceKeys {
    /// Signs the device's one-time and fallback keys.
    pub ed25519: Ed25519Key,
    /// The device's Olm identity key, used in the 3DH handshake.
    pub curve25519: Curve25519Key,
}

/// A user's identity key. The user ID is this key in bech32m form.
pub type IdentityKey = Ed25519Key;

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn verifies_and_refuses() {
        let sk = signing_key(7);
        let key = Ed25519Key::from_bytes(sk.verifying_key().as_bytes()).unwrap();
        let sig = Signature::from_bytes(sk.sign(b"hello").to_bytes());
        assert_eq!(key.verify(b"hello", &sig), Ok(()));
        assert_eq!(key.verify(b"hellO", &sig), Err(KeyError::BadSignature));
        let other = Ed25519Key::from_bytes(signing_key(8).verifying_key().as_bytes()).unwrap();
        assert_eq!(other.verify(b"hello", &sig), Err(KeyError::BadSignature));
    }

    #[test]
    fn base64_round_trips_and_rejects_bad_lengths() {
        let key = Curve25519Key::from_bytes([3; 32]);
        assert_eq!(Curve25519Key::from_base64(&key.to_base64()), Ok(key));
        assert_eq!(
            Curve25519Key::from_base64("AAAA"),
            Err(KeyError::Length {
                expected: 32,
                actual: 3
            })
        );
        assert_eq!(Curve25519Key::from_base64("!!"), Err(KeyError::Base64));
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<Curve25519Key>(&json).unwrap(), key);
    }

    #[test]
    fn the_accepted_key_cache_never_changes_an_answer() {
        // Keys that share a cache slot (same first byte), asked for in turns, and an invalid
        // encoding in the same slot after a valid key was cached there.
        let keys: Vec<[u8; 32]> = (0..=255u8)
            .map(|seed| *signing_key(seed).verifying_key().as_bytes())
            .collect();
        let slot = keys[0][0];
        let same_slot: Vec<&[u8; 32]> = keys.iter().filter(|k| k[0] == slot).collect();
        for _ in 0..3 {
            for k in &same_slot {
                assert_eq!(Ed25519Key::from_bytes(k).unwrap().as_bytes(), *k);
            }
        }
        for k in &keys {
            assert_eq!(Ed25519Key::from_bytes(k).unwrap().as_bytes(), k);
        }
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let cached = keys.iter().find(|k| k[0] == 1).copied();
        if let Some(k) = cached {
            Ed25519Key::from_bytes(&k).unwrap();
        }
        assert_eq!(Ed25519Key::from_bytes(&weak), Err(KeyError::InvalidEd25519));
        // An encoding that is not a point on the curve is refused every time.
        let bad = (2..=255u8)
            .map(|b| {
                let mut k = [0u8; 32];
                k[0] = b;
                k
            })
            .find(|k| VerifyingKey::from_bytes(k).is_err())
            .unwrap();
        for _ in 0..2 {
            assert_eq!(Ed25519Key::from_bytes(&bad), Err(KeyError::InvalidEd25519));
        }
    }

    #[test]
    fn refuses_small_order_ed25519_keys() {
        // The identity point (0, 1) encodes as 0x01 followed by zeros: valid encoding, weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            Ed25519Key::from_bytes(&identity),
            Err(KeyError::InvalidEd25519)
        );
    }
}
