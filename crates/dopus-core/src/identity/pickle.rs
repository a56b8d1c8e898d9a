//! Encrypted pickles: how secret state leaves memory.
//!
//! Format of a sealed pickle (text, standard base64 without padding):
//! `version (1 byte, = 1) || nonce (24 bytes) || XChaCha20-Poly1305 ciphertext with tag`.
//!
//! The AEAD key is not the node's pickle key itself but a subkey,
//! `HKDF-SHA256(ikm = pickle key, salt = none, info = purpose)`, one per purpose, and the
//! associated data is `purpose || 0x00 || version`. So an identity pickle can never be opened as a
//! device pickle (or the reverse), a future format cannot be confused with this one, and the
//! subkeys handed to vodozemac for its own pickles are unrelated to ours.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

/// Purpose string of the identity seed pickle.
pub const IDENTITY: &str = "dopus/v1/pickle/identity";
/// Purpose string of the device pickle (account + certificate + key bookkeeping).
pub const DEVICE: &str = "dopus/v1/pickle/device";
/// Subkey purpose for vodozemac's own account pickle (nested inside the device pickle).
pub const OLM_ACCOUNT: &str = "dopus/v1/pickle/olm-account";
/// Subkey purpose for vodozemac's session pickles ([`crate::e2e::SessionRecord::pickle`]).
pub const OLM_SESSION: &str = "dopus/v1/pickle/olm-session";

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Where our randomness comes from. The core never reads the OS itself: the node passes an
/// implementation backed by the OS generator, tests pass a seeded one.
pub trait SecureRandom {
    /// Fills `dest` with cryptographically secure random bytes.
    fn fill_bytes(&mut self, dest: &mut [u8]);
}

impl<R: SecureRandom + ?Sized> SecureRandom for &mut R {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        (**self).fill_bytes(dest);
    }
}

impl<R: SecureRandom + ?Sized> SecureRandom for Box<R> {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        (**self).fill_bytes(dest);
    }
}

/// The node's 32-byte key for everything pickled (derived by the store from its master key).
pub struct PickleKey(Zeroizing<[u8; 32]>);

impl PickleKey {
    /// Wraps the key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The subkey for one purpose (HKDF-SHA256, info = `purpose`).
    pub(crate) fn subkey(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(None, self.0.as_slice());
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
        #[allow(
            clippy::expect_used,
            reason = "32 bytes is within HKDF-SHA256's output limit"
        )]
        hk.expand(purpose.as_bytes(), out.as_mut_slice())
            .expect("32 bytes fit HKDF-SHA256");
        out
    }
}

impl fmt::Debug for PickleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickleKey(<redacted>)")
    }
}

/// Why a pickle could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    /// Not base64, or too short to hold a version, nonce and tag.
    #[error("the pickle is malformed")]
    Malformed,
    /// A pickle format this build does not know.
    #[error("unsupported pickle version {0}")]
    UnsupportedVersion(u8),
    /// Authentication failed: wrong pickle key, wrong purpose, or corrupted bytes.
    #[error("the pickle could not be decrypted (wrong key or corrupted)")]
    Decrypt,
    /// The decrypted contents are not what this pickle should hold.
    #[error("the pickle's contents are invalid")]
    Contents,
    /// vodozemac refused its nested pickle.
    #[error("the Olm pickle could not be restored")]
    Olm,
}

fn aad(purpose: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(purpose.len() + 2);
    aad.extend_from_slice(purpose.as_bytes());
    aad.push(0);
    aad.push(VERSION);
    aad
}

fn cipher(key: &PickleKey, purpose: &str) -> XChaCha20Poly1305 {
    let subkey = key.subkey(purpose);
    #[allow(
        clippy::expect_used,
        reason = "the subkey is always 32 bytes, the AEAD key size"
    )]
    XChaCha20Poly1305::new_from_slice(subkey.as_slice()).expect("32-byte key")
}

/// Encrypts `plaintext` for `purpose`.
pub(crate) fn seal(
    key: &PickleKey,
    purpose: &str,
    plaintext: &[u8],
    rng: &mut dyn SecureRandom,
) -> String {
    let cipher = cipher(key, purpose);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let aad = aad(purpose);
    // Encryption with a valid key and nonce only fails for plaintexts beyond 256 GiB.
    #[allow(
        clippy::expect_used,
        reason = "XChaCha20-Poly1305 encryption cannot fail below 256 GiB"
    )]
    let ct = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("encryption of a pickle cannot fail");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    dopus_types::b64_encode(&out)
}

/// Decrypts a pickle sealed for `purpose`.
pub(crate) fn open(
    key: &PickleKey,
    purpose: &str,
    text: &str,
) -> Result<Zeroizing<Vec<u8>>, PickleError> {
    let bytes = dopus_types::b64_decode(text).map_err(|_| PickleError::Malformed)?;
    if bytes.len() < 1 + NONCE_LEN + TAG_LEN {
        return Err(PickleError::Malformed);
    }
    if bytes[0] != VERSION {
        return Err(PickleError::UnsupportedVersion(bytes[0]));
    }
    let cipher = cipher(key, purpose);
    let aad = aad(purpose);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[1..=NONCE_LEN]);
    cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &bytes[1 + NONCE_LEN..],
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| PickleError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::test_support::SeededRandom;

    #[test]
    fn round_trips_and_is_bound_to_key_and_purpose() {
        let key = PickleKey::from_bytes([1; 32]);
        let mut rng = SeededRandom::new(1);
        let sealed = seal(&key, IDENTITY, b"seed bytes", &mut rng);
        assert_eq!(
            open(&key, IDENTITY, &sealed).unwrap().as_slice(),
            b"seed bytes"
        );
        assert_eq!(
            open(&PickleKey::from_bytes([2; 32]), IDENTITY, &sealed),
            Err(PickleError::Decrypt)
        );
        assert_eq!(open(&key, DEVICE, &sealed), Err(PickleError::Decrypt));
        assert!(!sealed.contains("seed"));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let key = PickleKey::from_bytes([3; 32]);
        let mut rng = SeededRandom::new(2);
        let sealed = seal(&key, DEVICE, b"abc", &mut rng);
        let raw = dopus_types::b64_decode(&sealed).unwrap();
        for i in 1..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                open(&key, DEVICE, &dopus_types::b64_encode(&bad)),
                Err(PickleError::Decrypt),
                "byte {i}"
            );
        }
        let mut bad = raw.clone();
        bad[0] = 9;
        assert_eq!(
            open(&key, DEVICE, &dopus_types::b64_encode(&bad)),
            Err(PickleError::UnsupportedVersion(9))
        );
        assert_eq!(open(&key, DEVICE, "AAAA"), Err(PickleError::Malformed));
        assert_eq!(open(&key, DEVICE, "!!"), Err(PickleError::Malformed));
    }

    #[test]
    fn nonces_differ_between_seals() {
        let key = PickleKey::from_bytes([4; 32]);
        let mut rng = SeededRandom::new(3);
        assert_ne!(
            seal(&key, DEVICE, b"x", &mut rng),
            seal(&key, DEVICE, b"x", &mut rng)
        );
    }

    #[test]
    fn subkeys_differ_per_purpose_and_debug_hides_the_key() {
        let key = PickleKey::from_bytes([5; 32]);
        assert_ne!(*key.subkey(OLM_ACCOUNT), *key.subkey(OLM_SESSION));
        assert_ne!(*key.subkey(OLM_ACCOUNT), [5; 32]);
        assert_eq!(format!("{key:?}"), "PickleKey(<redacted>)");
    }
}
