//! Who a user is, and which installs speak for them.
//!
//! Key chain (docs/e2e.md, "Key chain"):
//!
//! 1. The **identity key** (Ed25519, [`Identity`]) is the user: the user ID is this public key.
//!    It signs one thing, device certificates (and, through the node, signaling logins and
//!    contact introductions, always via `dopus_proto::canonical` contexts).
//! 2. Each install is a **device** ([`Device`]): a vodozemac Olm account (device Ed25519 key +
//!    Curve25519 key, one-time keys, fallback key) and a `DeviceCertificate` in which the identity
//!    key vouches for the device's two public keys.
//! 3. The device Ed25519 key signs the device's one-time keys and fallback key.
//!
//! Nothing assumes one device per user: a second install creates an uncertified device
//! ([`Device::new_uncertified`]) and gets its certificate from whoever holds the identity key
//! ([`Identity::certify_device`], [`Device::install_certificate`]).
//!
//! Secrets leave memory only as encrypted pickles ([`pickle`]); no secret-bearing type derives
//! `Serialize`, and their `Debug` prints public parts only.

mod device;
pub mod pickle;

pub use device::{Device, DeviceError, FALLBACK_GRACE_MS, ONE_TIME_KEY_TARGET};
pub(crate) use device::{curve_from_vz, curve_to_vz};
pub use pickle::{PickleError, PickleKey, SecureRandom};

use dopus_proto::bundle::DeviceCertificate;
use dopus_types::{DeviceId, DeviceKeys, Ed25519Key, Signature, Timestamp, UserId};
use ed25519_dalek::{Signer, SigningKey};
use std::fmt;
use zeroize::Zeroizing;

/// The prefix every byte string we sign starts with (`dopus_proto::canonical` contexts).
const CANONICAL_PREFIX: &[u8] = b"dopus/v";

/// Why an identity operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The seed gives a public key that is not usable as an identity (a weak key); pick another.
    #[error("the seed does not give a usable identity key")]
    WeakKey,
    /// Asked to sign bytes that do not start with a `dopus/v…` context: refused so the identity
    /// key can never be tricked into signing something that could pass for another purpose.
    #[error("refusing to sign bytes without a dopus signing context")]
    NotCanonical,
    /// The pickle could not be opened.
    #[error(transparent)]
    Pickle(#[from] PickleError),
}

/// The user's identity key pair. Zeroized on drop; `Debug` shows the user ID only.
pub struct Identity {
    key: SigningKey,
    user_id: UserId,
}

impl Identity {
    /// The identity for a 32-byte seed (the caller takes it from a secure random source).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, IdentityError> {
        let key = SigningKey::from_bytes(seed);
        let public = Ed25519Key::from_bytes(key.verifying_key().as_bytes())
            .map_err(|_| IdentityError::WeakKey)?;
        Ok(Self {
            key,
            user_id: UserId::from_key(public),
        })
    }

    /// A fresh identity from `rng`.
    pub fn generate(rng: &mut dyn SecureRandom) -> Result<Self, IdentityError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut_slice());
        Self::from_seed(&seed)
    }

    /// The user ID (the public identity key).
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// The public identity key.
    pub fn public_key(&self) -> Ed25519Key {
        *self.user_id.key()
    }

    /// Signs bytes built by `dopus_proto::canonical::signing_bytes` (or a function built on it,
    /// such as the signaling login's `auth_signing_bytes`). Anything else is refused.
    pub fn sign(&self, canonical_bytes: &[u8]) -> Result<Signature, IdentityError> {
        if !canonical_bytes.starts_with(CANONICAL_PREFIX) || !canonical_bytes.contains(&0) {
            return Err(IdentityError::NotCanonical);
        }
        Ok(Signature::from_bytes(
            self.key.sign(canonical_bytes).to_bytes(),
        ))
    }

    /// Certifies a device's keys as this user's.
    pub fn certify_device(
        &self,
        device_id: &DeviceId,
        keys: &DeviceKeys,
        created_at: Timestamp,
    ) -> DeviceCertificate {
        let bytes = DeviceCertificate::signing_bytes(&self.user_id, device_id, keys, created_at);
        DeviceCertificate {
            user_id: self.user_id,
            device_id: device_id.clone(),
            keys: *keys,
            created_at,
            signature: Signature::from_bytes(self.key.sign(&bytes).to_bytes()),
        }
    }

    /// The seed, encrypted with the pickle key (docs/e2e.md, "Persistence").
    pub fn pickle(&self, key: &PickleKey, rng: &mut dyn SecureRandom) -> String {
        let seed = Zeroizing::new(self.key.to_bytes());
        pickle::seal(key, pickle::IDENTITY, seed.as_slice(), rng)
    }

    /// Restores an identity from [`Identity::pickle`]'s output.
    pub fn from_pickle(text: &str, key: &PickleKey) -> Result<Self, IdentityError> {
        let plain = pickle::open(key, pickle::IDENTITY, text)?;
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            plain
                .as_slice()
                .try_into()
                .map_err(|_| PickleError::Contents)?,
        );
        Self::from_seed(&seed)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.user_id)
    }
}

/// Deterministic helpers for tests in this and other crates. Never use outside tests.
#[doc(hidden)]
pub mod test_support {
    use super::SecureRandom;
    use sha2::{Digest, Sha256};

    /// A deterministic byte stream (SHA-256 of seed and counter): reproducible, not secret.
    #[derive(Debug, Clone)]
    pub struct SeededRandom {
        seed: u64,
        counter: u64,
    }

    impl SeededRandom {
        /// A stream for `seed`.
        pub fn new(seed: u64) -> Self {
            Self { seed, counter: 0 }
        }
    }

    impl SecureRandom for SeededRandom {
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(32) {
                let mut h = Sha256::new();
                h.update(self.seed.to_be_bytes());
                h.update(self.counter.to_be_bytes());
                self.counter += 1;
                let block = h.finalize();
                chunk.copy_from_slice(&block[..chunk.len()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::SeededRandom;
    use super::*;
    use dopus_proto::canonical;
    use dopus_types::Curve25519Key;

    #[test]
    fn the_user_id_is_the_public_key_of_the_seed() {
        let id = Identity::from_seed(&[7; 32]).unwrap();
        let expected = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert_eq!(id.user_id().key().as_bytes(), expected.as_bytes());
        assert_eq!(id.public_key(), *id.user_id().key());
    }

    #[test]
    fn certificates_verify_against_the_user_id() {
        let id = Identity::generate(&mut SeededRandom::new(1)).unwrap();
        let other = Identity::generate(&mut SeededRandom::new(2)).unwrap();
        let keys = DeviceKeys {
            ed25519: other.public_key(),
            curve25519: Curve25519Key::from_bytes([9; 32]),
        };
        let cert = id.certify_device(&DeviceId::from_random([1; 16]), &keys, Timestamp(5));
        cert.verify(&id.user_id()).unwrap();
        assert!(cert.verify(&other.user_id()).is_err());
    }

    #[test]
    fn signs_only_canonical_bytes() {
        let id = Identity::from_seed(&[8; 32]).unwrap();
        let bytes = canonical::signing_bytes(canonical::SIGNALING_AUTH, &[b"challenge"]);
        let sig = id.sign(&bytes).unwrap();
        id.public_key().verify(&bytes, &sig).unwrap();
        assert_eq!(id.sign(b"challenge"), Err(IdentityError::NotCanonical));
        assert_eq!(
            id.sign(b"dopus/v1/no-separator"),
            Err(IdentityError::NotCanonical)
        );
    }

    #[test]
    fn pickles_round_trip_and_need_the_right_key() {
        let id = Identity::from_seed(&[9; 32]).unwrap();
        let key = PickleKey::from_bytes([1; 32]);
        let mut rng = SeededRandom::new(3);
        let p = id.pickle(&key, &mut rng);
        let back = Identity::from_pickle(&p, &key).unwrap();
        assert_eq!(back.user_id(), id.user_id());
        assert_eq!(
            Identity::from_pickle(&p, &PickleKey::from_bytes([2; 32])).unwrap_err(),
            IdentityError::Pickle(PickleError::Decrypt)
        );
        // The pickle does not contain the seed in any readable form.
        let raw = dopus_types::b64_decode(&p).unwrap();
        assert!(!raw.windows(32).any(|w| w == [9u8; 32]));
    }

    #[test]
    fn debug_shows_only_the_user_id() {
        let id = Identity::from_seed(&[10; 32]).unwrap();
        let shown = format!("{id:?}");
        assert_eq!(shown, format!("Identity({})", id.user_id()));
        let secret_b64 = dopus_types::b64_encode(&[10; 32]);
        assert!(!shown.contains(&secret_b64));
    }
}
