//! Signed key bundles: how anyone who knows a user ID can check every key a server hands out.
//!
//! Trust chain:
//!
//! 1. The user ID *is* the identity key (an Ed25519 public key).
//! 2. A [`DeviceCertificate`] is the identity key's signature over one device's keys
//!    (Ed25519 signing key + Curve25519 Olm identity key), its device ID and its creation time.
//! 3. Each [`SignedKey`] (one-time or fallback Curve25519 key) is signed by that device's Ed25519
//!    key, binding it to the user, the device, its key ID and its kind.
//!
//! A server that substitutes any key, drops a signature, moves a key from one device or user to
//! another, or passes a fallback key off as a one-time key (or the reverse) fails verification.
//! A second device is linked later by the identity key signing its certificate; nothing here
//! assumes one device per user.
//!
//! Protocol flow:
//! - the device publishes a [`DeviceBundle`] (certificate, fallback key, one-time keys);
//! - a peer fetches a [`ClaimedBundle`] per device (certificate, fallback key, at most one
//!   one-time key that the server handed out only once);
//! - the peer calls [`ClaimedBundle::verify`] against the user ID it already knows, and starts an
//!   Olm session only with the [`VerifiedBundle`] it gets back.

use crate::canonical::{self, signing_bytes};
use dopus_types::{Curve25519Key, DeviceId, DeviceKeys, Signature, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Current version of the bundle format.
pub const BUNDLE_VERSION: u32 = 1;
/// Most one-time keys one publish may carry.
pub const MAX_ONE_TIME_KEYS_PER_PUBLISH: usize = 100;
/// Longest accepted key ID.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Why a bundle, certificate or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The certificate names a different user than the one we asked about.
    #[error("the device certificate belongs to another user")]
    WrongUser,
    /// The identity key's signature over the device keys does not verify.
    #[error("the device certificate's signature is invalid")]
    BadCertificateSignature,
    /// A one-time key's signature does not verify under the device key.
    #[error("a one-time key's signature is invalid")]
    BadOneTimeKeySignature,
    /// The fallback key's signature does not verify under the device key.
    #[error("the fallback key's signature is invalid")]
    BadFallbackKeySignature,
    /// A bundle version this build does not understand.
    #[error("unsupported bundle version {0}")]
    UnsupportedVersion(u32),
    /// A key ID is empty, too long or contains characters outside `[A-Za-z0-9_+/=-]`.
    #[error("malformed key id")]
    MalformedKeyId,
    /// Two keys in one bundle share a key ID.
    #[error("duplicate one-time key id")]
    DuplicateKeyId,
    /// More one-time keys than one publish may carry.
    #[error("too many one-time keys in one bundle (at most {MAX_ONE_TIME_KEYS_PER_PUBLISH})")]
    TooManyKeys,
}

/// The identity key's signature over one device's keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCertificate {
    /// Whose device this is.
    pub user_id: UserId,
    /// The device's name under that user.
    pub device_id: DeviceId,
    /// The device's public keys.
    pub keys: DeviceKeys,
    /// When the identity key signed this certificate.
    pub created_at: Timestamp,
    /// Identity key signature over [`DeviceCertificate::signing_bytes`].
    pub signature: Signature,
}

impl DeviceCertificate {
    /// The bytes the identity key signs.
    pub fn signing_bytes(
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &DeviceKeys,
        created_at: Timestamp,
    ) -> Vec<u8> {
        signing_bytes(
            canonical::DEVICE_CERTIFICATE,
            &[
                user_id.key().as_bytes(),
                device_id.as_str().as_bytes(),
                keys.ed25519.as_bytes(),
                keys.curve25519.as_bytes(),
                &created_at.as_millis().to_be_bytes(),
            ],
        )
    }

    /// Checks that `expected` signed this certificate.
    pub fn verify(&self, expected: &UserId) -> Result<(), BundleError> {
        if self.user_id != *expected {
            return Err(BundleError::WrongUser);
        }
        let bytes =
            Self::signing_bytes(&self.user_id, &self.device_id, &self.keys, self.created_at);
        expected
            .key()
            .verify(&bytes, &self.signature)
            .map_err(|_| BundleError::BadCertificateSignature)
    }
}

/// Whether a Curve25519 prekey is single-use or the device's reusable last resort.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrekeyKind {
    /// Handed out once, then deleted by the server.
    OneTime,
    /// Handed out when no one-time key is left; rotated by its device after use.
    Fallback,
}

impl PrekeyKind {
    fn context(self) -> &'static str {
        match self {
            PrekeyKind::OneTime => canonical::ONE_TIME_KEY,
            PrekeyKind::Fallback => canonical::FALLBACK_KEY,
        }
    }
}

/// A one-time or fallback key signed by its device's Ed25519 key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedKey {
    /// The key's ID as the device's Olm account names it.
    pub key_id: String,
    /// The Curve25519 public key.
    pub key: Curve25519Key,
    /// Device signature over [`SignedKey::signing_bytes`].
    pub signature: Signature,
}

impl SignedKey {
    /// The bytes the device key signs for a key of `kind`.
    pub fn signing_bytes(
        kind: PrekeyKind,
        user_id: &UserId,
        device_id: &DeviceId,
        key_id: &str,
        key: &Curve25519Key,
    ) -> Vec<u8> {
        signing_bytes(
            kind.context(),
            &[
                user_id.key().as_bytes(),
                device_id.as_str().as_bytes(),
                key_id.as_bytes(),
                key.as_bytes(),
            ],
        )
    }

    /// Checks this key's signature as a key of `kind` of the device in `cert`.
    pub fn verify(&self, kind: PrekeyKind, cert: &DeviceCertificate) -> Result<(), BundleError> {
        check_key_id(&self.key_id)?;
        let bytes = Self::signing_bytes(
            kind,
            &cert.user_id,
            &cert.device_id,
            &self.key_id,
            &self.key,
        );
        cert.keys
            .ed25519
            .verify(&bytes, &self.signature)
            .map_err(|_| match kind {
                PrekeyKind::OneTime => BundleError::BadOneTimeKeySignature,
                PrekeyKind::Fallback => BundleError::BadFallbackKeySignature,
            })
    }
}

fn check_key_id(id: &str) -> Result<(), BundleError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'/' | b'=' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(BundleError::MalformedKeyId)
    }
}

/// What a device publishes to the key directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceBundle {
    /// Format version, [`BUNDLE_VERSION`].
    pub version: u32,
    /// The device's certificate.
    pub certificate: DeviceCertificate,
    /// The device's current signed fallback key.
    pub fallback_key: SignedKey,
    /// Fresh signed one-time keys (may be empty when only the fallback key changes).
    pub one_time_keys: Vec<SignedKey>,
}

impl DeviceBundle {
    /// Checks every signature in the bundle against `expected`'s identity key.
    ///
    /// The signaling server runs this on publish (so it never serves junk), and so can anyone else.
    pub fn verify(&self, expected: &UserId) -> Result<(), BundleError> {
        if self.version != BUNDLE_VERSION {
            return Err(BundleError::UnsupportedVersion(self.version));
        }
        if self.one_time_keys.len() > MAX_ONE_TIME_KEYS_PER_PUBLISH {
            return Err(BundleError::TooManyKeys);
        }
        self.certificate.verify(expected)?;
        self.fallback_key
            .verify(PrekeyKind::Fallback, &self.certificate)?;
        let mut seen = HashSet::with_capacity(self.one_time_keys.len());
        for key in &self.one_time_keys {
            if !seen.insert(key.key_id.as_str()) {
                return Err(BundleError::DuplicateKeyId);
            }
            key.verify(PrekeyKind::OneTime, &self.certificate)?;
        }
        Ok(())
    }
}

/// What the key directory returns for one device: its certificate, its fallback key and at most
/// one one-time key (claimed for this requester alone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedBundle {
    /// Format version, [`BUNDLE_VERSION`].
    pub version: u32,
    /// The device's certificate.
    pub certificate: DeviceCertificate,
    /// The device's signed fallback key.
    pub fallback_key: SignedKey,
    /// One signed one-time key, or `None` when the device has run out.
    pub one_time_key: Option<SignedKey>,
}

/// A bundle whose every signature checked out: safe to start an Olm session from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBundle {
    /// The verified user.
    pub user_id: UserId,
    /// The verified device.
    pub device_id: DeviceId,
    /// The device's verified keys.
    pub device_keys: DeviceKeys,
    /// The prekey to start the session with: the one-time key if there was one, else the fallback.
    pub prekey: Curve25519Key,
    /// Which kind `prekey` is.
    pub prekey_kind: PrekeyKind,
    /// `prekey`'s key ID.
    pub prekey_id: String,
}

impl ClaimedBundle {
    /// Verifies the whole bundle against the user ID we already know (never against anything the
    /// server says), and picks the prekey to use.
    pub fn verify(&self, expected: &UserId) -> Result<VerifiedBundle, BundleError> {
        if self.version != BUNDLE_VERSION {
            return Err(BundleError::UnsupportedVersion(self.version));
        }
        self.certificate.verify(expected)?;
        self.fallback_key
            .verify(PrekeyKind::Fallback, &self.certificate)?;
        let (chosen, kind) = match &self.one_time_key {
            Some(otk) => {
                otk.verify(PrekeyKind::OneTime, &self.certificate)?;
                (otk, PrekeyKind::OneTime)
            }
            None => (&self.fallback_key, PrekeyKind::Fallback),
        };
        Ok(VerifiedBundle {
            user_id: self.certificate.user_id,
            device_id: self.certificate.device_id.clone(),
            device_keys: self.certificate.keys,
            prekey: chosen.key,
            prekey_kind: kind,
            prekey_id: chosen.key_id.clone(),
        })
    }
}

/// Helpers that build validly signed bundles from raw Ed25519 seeds, for tests in any crate.
#[doc(hidden)]
pub mod test_support {
    use super::*;

    /// Signs `bytes` with a key made from `seed`; returns the public key and signature.
    pub type SignFn<'a> = &'a dyn Fn(&[u8]) -> Signature;

    /// Builds a signed certificate with `sign_identity` and signed keys with `sign_device`.
    pub fn certificate(
        user_id: UserId,
        device_id: DeviceId,
        keys: DeviceKeys,
        created_at: Timestamp,
        sign_identity: SignFn<'_>,
    ) -> DeviceCertificate {
        let bytes = DeviceCertificate::signing_bytes(&user_id, &device_id, &keys, created_at);
        DeviceCertificate {
            signature: sign_identity(&bytes),
            user_id,
            device_id,
            keys,
            created_at,
        }
    }

    /// Signs `key` as a key of `kind` for the device in `cert`.
    pub fn signed_key(
        kind: PrekeyKind,
        cert: &DeviceCertificate,
        key_id: &str,
        key: Curve25519Key,
        sign_device: SignFn<'_>,
    ) -> SignedKey {
        let bytes = SignedKey::signing_bytes(kind, &cert.user_id, &cert.device_id, key_id, &key);
        SignedKey {
            key_id: key_id.to_owned(),
            key,
            signature: sign_device(&bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use dopus_types::Ed25519Key;
    use ed25519_dalek::{Signer, SigningKey};

    struct Device {
        identity: SigningKey,
        device: SigningKey,
        cert: DeviceCertificate,
    }

    fn ed(sk: &SigningKey) -> Ed25519Key {
        Ed25519Key::from_bytes(sk.verifying_key().as_bytes()).unwrap()
    }

    fn signer(sk: &SigningKey) -> impl Fn(&[u8]) -> Signature + '_ {
        move |b| Signature::from_bytes(sk.sign(b).to_bytes())
    }

    fn device(seed: u8) -> Device {
        let identity = SigningKey::from_bytes(&[seed; 32]);
        let device = SigningKey::from_bytes(&[seed.wrapping_add(100); 32]);
        let keys = DeviceKeys {
            ed25519: ed(&device),
            curve25519: Curve25519Key::from_bytes([seed; 32]),
        };
        let cert = certificate(
            UserId::from_key(ed(&identity)),
            DeviceId::from_random([seed; 16]),
            keys,
            Timestamp(1_700_000_000_000),
            &signer(&identity),
        );
        Device {
            identity,
            device,
            cert,
        }
    }

    fn bundle(d: &Device, otks: usize) -> DeviceBundle {
        let sign = signer(&d.device);
        DeviceBundle {
            version: BUNDLE_VERSION,
            certificate: d.cert.clone(),
            fallback_key: signed_key(
                PrekeyKind::Fallback,
                &d.cert,
                "fb1",
                Curve25519Key::from_bytes([200; 32]),
                &sign,
            ),
            one_time_keys: (0..otks)
                .map(|i| {
                    signed_key(
                        PrekeyKind::OneTime,
                        &d.cert,
                        &format!("otk{i}"),
                        Curve25519Key::from_bytes([i as u8; 32]),
                        &sign,
                    )
                })
                .collect(),
        }
    }

    fn claimed(b: &DeviceBundle, otk: Option<usize>) -> ClaimedBundle {
        ClaimedBundle {
            version: BUNDLE_VERSION,
            certificate: b.certificate.clone(),
            fallback_key: b.fallback_key.clone(),
            one_time_key: otk.map(|i| b.one_time_keys[i].clone()),
        }
    }

    #[test]
    fn a_genuine_bundle_verifies_and_prefers_the_one_time_key() {
        let d = device(1);
        let b = bundle(&d, 3);
        b.verify(&d.cert.user_id).unwrap();
        let v = claimed(&b, Some(1)).verify(&d.cert.user_id).unwrap();
        assert_eq!(v.prekey, b.one_time_keys[1].key);
        assert_eq!(v.prekey_kind, PrekeyKind::OneTime);
        assert_eq!(v.device_keys, d.cert.keys);
    }

    #[test]
    fn without_one_time_keys_the_fallback_key_is_used() {
        let d = device(2);
        let b = bundle(&d, 0);
        let v = claimed(&b, None).verify(&d.cert.user_id).unwrap();
        assert_eq!(v.prekey_kind, PrekeyKind::Fallback);
        assert_eq!(v.prekey, b.fallback_key.key);
    }

    #[test]
    fn a_substituted_one_time_key_is_refused() {
        let d = device(3);
        let b = bundle(&d, 2);
        let mut c = claimed(&b, Some(0));
        c.one_time_key.as_mut().unwrap().key = Curve25519Key::from_bytes([66; 32]);
        assert_eq!(
            c.verify(&d.cert.user_id),
            Err(BundleError::BadOneTimeKeySignature)
        );
    }

    #[test]
    fn a_one_time_key_signed_by_the_server_is_refused() {
        let d = device(4);
        let b = bundle(&d, 1);
        let server = SigningKey::from_bytes(&[250; 32]);
        let forged = signed_key(
            PrekeyKind::OneTime,
            &d.cert,
            "otk0",
            Curve25519Key::from_bytes([66; 32]),
            &signer(&server),
        );
        let mut c = claimed(&b, None);
        c.one_time_key = Some(forged);
        assert_eq!(
            c.verify(&d.cert.user_id),
            Err(BundleError::BadOneTimeKeySignature)
        );
    }

    #[test]
    fn substituted_device_keys_are_refused() {
        let d = device(5);
        let b = bundle(&d, 1);
        let mut c = claimed(&b, Some(0));
        c.certificate.keys.curve25519 = Curve25519Key::from_bytes([77; 32]);
        assert_eq!(
            c.verify(&d.cert.user_id),
            Err(BundleError::BadCertificateSignature)
        );
        // A whole certificate from another user is refused even though it is validly signed.
        let other = device(6);
        let mut c = claimed(&b, Some(0));
        c.certificate = other.cert.clone();
        assert_eq!(c.verify(&d.cert.user_id), Err(BundleError::WrongUser));
    }

    #[test]
    fn a_server_with_its_own_identity_and_device_cannot_pass_as_the_user() {
        // The server builds a fully self-consistent bundle for a user ID it claims to be ours.
        let real = device(7);
        let fake = device(8);
        let mut b = bundle(&fake, 1);
        b.certificate.user_id = real.cert.user_id;
        assert!(b.verify(&real.cert.user_id).is_err());
        assert!(claimed(&b, Some(0)).verify(&real.cert.user_id).is_err());
    }

    #[test]
    fn unsigned_keys_do_not_even_parse() {
        let d = device(9);
        let b = bundle(&d, 1);
        let mut json = serde_json::to_value(claimed(&b, Some(0))).unwrap();
        json["one_time_key"]
            .as_object_mut()
            .unwrap()
            .remove("signature");
        assert!(serde_json::from_value::<ClaimedBundle>(json).is_err());
        let mut json = serde_json::to_value(claimed(&b, Some(0))).unwrap();
        json["certificate"]["signature"] = serde_json::Value::String(String::new());
        assert!(serde_json::from_value::<ClaimedBundle>(json).is_err());
    }

    #[test]
    fn a_zeroed_signature_is_refused() {
        let d = device(10);
        let b = bundle(&d, 1);
        let mut c = claimed(&b, Some(0));
        c.one_time_key.as_mut().unwrap().signature = Signature::from_bytes([0; 64]);
        assert_eq!(
            c.verify(&d.cert.user_id),
            Err(BundleError::BadOneTimeKeySignature)
        );
    }

    #[test]
    fn a_fallback_key_cannot_pass_as_a_one_time_key_or_the_reverse() {
        let d = device(11);
        let b = bundle(&d, 1);
        let mut c = claimed(&b, None);
        c.one_time_key = Some(b.fallback_key.clone());
        assert_eq!(
            c.verify(&d.cert.user_id),
            Err(BundleError::BadOneTimeKeySignature)
        );
        let mut c = claimed(&b, None);
        c.fallback_key = b.one_time_keys[0].clone();
        assert_eq!(
            c.verify(&d.cert.user_id),
            Err(BundleError::BadFallbackKeySignature)
        );
    }

    #[test]
    fn a_key_moved_to_another_device_is_refused() {
        let d = device(12);
        let b = bundle(&d, 1);
        // Same user, second device certified by the same identity key.
        let dev2 = SigningKey::from_bytes(&[99; 32]);
        let cert2 = certificate(
            d.cert.user_id,
            DeviceId::from_random([42; 16]),
            DeviceKeys {
                ed25519: ed(&dev2),
                curve25519: Curve25519Key::from_bytes([43; 32]),
            },
            Timestamp(1),
            &signer(&d.identity),
        );
        let mut c = claimed(&b, Some(0));
        c.certificate = cert2;
        assert!(c.verify(&d.cert.user_id).is_err());
    }

    #[test]
    fn publish_checks_limits_and_duplicates() {
        let d = device(13);
        let mut b = bundle(&d, 2);
        b.one_time_keys[1] = b.one_time_keys[0].clone();
        assert_eq!(b.verify(&d.cert.user_id), Err(BundleError::DuplicateKeyId));
        let b = bundle(&d, MAX_ONE_TIME_KEYS_PER_PUBLISH + 1);
        assert_eq!(b.verify(&d.cert.user_id), Err(BundleError::TooManyKeys));
        let mut b = bundle(&d, 0);
        b.version = 2;
        assert_eq!(
            b.verify(&d.cert.user_id),
            Err(BundleError::UnsupportedVersion(2))
        );
        let mut b = bundle(&d, 1);
        b.one_time_keys[0].key_id = "bad id".into();
        assert_eq!(b.verify(&d.cert.user_id), Err(BundleError::MalformedKeyId));
        let _ = &d.device;
    }

    #[test]
    fn wire_format_snapshot() {
        let d = device(14);
        insta::assert_json_snapshot!(claimed(&bundle(&d, 1), Some(0)));
    }
}
