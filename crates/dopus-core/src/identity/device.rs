//! One install's Olm account, its certificate, and the bookkeeping of its published keys.
//!
//! Protocol flow (docs/e2e.md, "Publishing keys"):
//! - [`Device::prepare_upload`] tops the one-time keys up to [`ONE_TIME_KEY_TARGET`] on the
//!   server, signs every unpublished key and returns the `DeviceBundle`; the account changed, so
//!   the node persists the device pickle *before* uploading (else a crash could publish keys
//!   whose private halves are lost);
//! - only after the server acknowledged the upload, [`Device::mark_published`];
//! - when a session is made from the current fallback key, the key is rotated at once (the old
//!   one stays usable); the next upload publishes the new one, and [`FALLBACK_GRACE_MS`] after
//!   that upload was acknowledged the old private key is forgotten ([`Device::handle_timeout`]).

use super::Identity;
use super::pickle::{self, PickleError, PickleKey, SecureRandom};
use dopus_proto::bundle::{
    BUNDLE_VERSION, BundleError, DeviceBundle, DeviceCertificate, PrekeyKind, SignedKey,
};
use dopus_types::{Curve25519Key, DeviceId, DeviceKeys, Ed25519Key, Signature, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use vodozemac::olm::{Account, AccountPickle};

/// How many one-time keys we keep on the server (vodozemac's `max_number_of_one_time_keys`).
pub const ONE_TIME_KEY_TARGET: usize = 50;
/// How long a replaced fallback key stays usable after its successor was published: long enough
/// for a peer that claimed it just before the switch to send its first message.
pub const FALLBACK_GRACE_MS: u64 = 24 * 60 * 60 * 1000;

const DEVICE_PICKLE_VERSION: u32 = 1;

/// Why a device operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The device has no certificate yet, so it cannot publish keys or send.
    #[error("this device has no certificate from the identity key yet")]
    Uncertified,
    /// The certificate does not verify against our user ID.
    #[error("the device certificate is invalid: {0}")]
    Certificate(#[from] BundleError),
    /// The certificate is valid but for another device id or other keys.
    #[error("the device certificate is for another device")]
    CertificateMismatch,
    /// The acknowledged bundle is not the set of keys waiting for publication (keys were
    /// generated in between): prepare and upload again.
    #[error("the acknowledged bundle does not match the unpublished keys")]
    StaleUpload,
    /// The pickle could not be opened.
    #[error(transparent)]
    Pickle(#[from] PickleError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FallbackKeyInfo {
    key_id: String,
    key: Curve25519Key,
    published: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PreviousFallback {
    key: Curve25519Key,
    /// When the successor's publication was acknowledged: from then on the server no longer
    /// hands this key out, and the grace period runs.
    retired_at: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct FallbackState {
    current: Option<FallbackKeyInfo>,
    used_at: Option<Timestamp>,
    previous: Option<PreviousFallback>,
}

/// What the device pickle holds (inside the AEAD). The Olm account inside is vodozemac's own
/// encrypted pickle: we never serialise secret key material ourselves.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceState {
    version: u32,
    user_id: UserId,
    device_id: DeviceId,
    certificate: Option<DeviceCertificate>,
    account: String,
    fallback: FallbackState,
}

/// This install: its vodozemac Olm account, its certificate and key bookkeeping.
pub struct Device {
    user_id: UserId,
    device_id: DeviceId,
    account: Account,
    certificate: Option<DeviceCertificate>,
    fallback: FallbackState,
}

pub(crate) fn curve_from_vz(k: vodozemac::Curve25519PublicKey) -> Curve25519Key {
    Curve25519Key::from_bytes(k.to_bytes())
}

pub(crate) fn curve_to_vz(k: &Curve25519Key) -> vodozemac::Curve25519PublicKey {
    vodozemac::Curve25519PublicKey::from_bytes(*k.as_bytes())
}

fn account_keys(account: &Account) -> DeviceKeys {
    let ids = account.identity_keys();
    // vodozemac generated this key itself; it is a valid, non-weak point.
    #[allow(
        clippy::expect_used,
        reason = "vodozemac's own signing key is a valid point"
    )]
    let ed25519 = Ed25519Key::from_bytes(ids.ed25519.as_bytes())
        .expect("an account's own Ed25519 key is valid");
    DeviceKeys {
        ed25519,
        curve25519: curve_from_vz(ids.curve25519),
    }
}

impl Device {
    /// A new device for `identity`, certified at `now`, with its first fallback key.
    pub fn new(identity: &Identity, device_id: DeviceId, now: Timestamp) -> Self {
        let mut device = Self::new_uncertified(identity.user_id(), device_id);
        let cert = identity.certify_device(&device.device_id, &device.keys(), now);
        device.certificate = Some(cert);
        device
    }

    /// A new device that still needs a certificate from the identity key (a second install
    /// linked later): show [`Device::keys`] to the device that holds the identity key, have it
    /// call [`Identity::certify_device`], then [`Device::install_certificate`].
    pub fn new_uncertified(user_id: UserId, device_id: DeviceId) -> Self {
        let mut account = Account::new();
        account.generate_fallback_key();
        let mut device = Self {
            user_id,
            device_id,
            account,
            certificate: None,
            fallback: FallbackState::default(),
        };
        device.fallback.current = device.unpublished_fallback();
        device
    }

    /// Installs a certificate made by the identity key for this device.
    pub fn install_certificate(&mut self, cert: DeviceCertificate) -> Result<(), DeviceError> {
        cert.verify(&self.user_id)?;
        if cert.device_id != self.device_id || cert.keys != self.keys() {
            return Err(DeviceError::CertificateMismatch);
        }
        self.certificate = Some(cert);
        Ok(())
    }

    /// Signs canonical bytes (a space op, a Megolm session announcement) with this device's
    /// Ed25519 key; the space module checks the context before calling it.
    pub(crate) fn sign_bytes(&self, bytes: &[u8]) -> Signature {
        Signature::from_bytes(self.account.sign(bytes).to_bytes())
    }

    /// Our user.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// This device's id.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// This device's public keys.
    pub fn keys(&self) -> DeviceKeys {
        account_keys(&self.account)
    }

    /// The certificate, once installed.
    pub fn certificate(&self) -> Option<&DeviceCertificate> {
        self.certificate.as_ref()
    }

    /// Whether there are keys the server does not have yet (new one-time keys or a rotated
    /// fallback key).
    pub fn needs_upload(&self) -> bool {
        !self.account.one_time_keys().is_empty()
            || self.fallback.current.as_ref().is_some_and(|f| !f.published)
    }

    /// Tops up one-time keys so the server will hold [`ONE_TIME_KEY_TARGET`] after the upload,
    /// and returns the signed bundle of everything unpublished, or `None` when nothing is.
    ///
    /// The account changes: persist the device pickle before uploading the bundle.
    pub fn prepare_upload(
        &mut self,
        server_one_time_keys: usize,
    ) -> Result<Option<DeviceBundle>, DeviceError> {
        let cert = self.certificate.clone().ok_or(DeviceError::Uncertified)?;
        let want = ONE_TIME_KEY_TARGET.saturating_sub(server_one_time_keys);
        let have = self.account.one_time_keys().len();
        if want > have {
            self.account.generate_one_time_keys(want - have);
        }
        if !self.needs_upload() {
            return Ok(None);
        }
        let Some(fallback) = self.fallback.current.clone() else {
            // Every constructor and rotation sets a current fallback key.
            return Err(DeviceError::StaleUpload);
        };
        let one_time_keys: BTreeMap<String, Curve25519Key> = self
            .account
            .one_time_keys()
            .into_iter()
            .map(|(id, key)| (id.to_base64(), curve_from_vz(key)))
            .collect();
        let one_time_keys = one_time_keys
            .into_iter()
            .map(|(id, key)| self.sign_key(PrekeyKind::OneTime, &id, key))
            .collect();
        Ok(Some(DeviceBundle {
            version: BUNDLE_VERSION,
            certificate: cert,
            fallback_key: self.sign_key(PrekeyKind::Fallback, &fallback.key_id, fallback.key),
            one_time_keys,
        }))
    }

    fn sign_key(&self, kind: PrekeyKind, key_id: &str, key: Curve25519Key) -> SignedKey {
        let bytes = SignedKey::signing_bytes(kind, &self.user_id, &self.device_id, key_id, &key);
        SignedKey {
            key_id: key_id.to_owned(),
            key,
            signature: Signature::from_bytes(self.account.sign(&bytes).to_bytes()),
        }
    }

    /// Records that the server acknowledged `bundle` (from [`Device::prepare_upload`]). The
    /// account changes: persist the device pickle.
    pub fn mark_published(
        &mut self,
        now: Timestamp,
        bundle: &DeviceBundle,
    ) -> Result<(), DeviceError> {
        let pending: BTreeMap<String, Curve25519Key> = self
            .account
            .one_time_keys()
            .into_iter()
            .map(|(id, key)| (id.to_base64(), curve_from_vz(key)))
            .collect();
        let uploaded: BTreeMap<String, Curve25519Key> = bundle
            .one_time_keys
            .iter()
            .map(|k| (k.key_id.clone(), k.key))
            .collect();
        let fallback_matches = self
            .fallback
            .current
            .as_ref()
            .is_some_and(|f| f.key == bundle.fallback_key.key);
        // A key of this upload may have been used already: the server hands keys out as soon
        // as it has them, so an inbound session can consume one before the ack reaches us.
        // What is still pending must all be in the upload; keys made after it must not be.
        let all_uploaded = pending
            .iter()
            .all(|(id, key)| uploaded.get(id) == Some(key));
        if !all_uploaded {
            return Err(DeviceError::StaleUpload);
        }
        // The one-time keys are the server's now: left unmarked, they would be uploaded again,
        // and one the server has handed out already could be handed out twice.
        self.account.mark_keys_as_published();
        // The fallback key may have been used and rotated meanwhile (a session made from it
        // before the ack): the new one stays unpublished and goes up next. Which fallback key
        // is published is our bookkeeping (`self.fallback`), not vodozemac's.
        if fallback_matches {
            if let Some(f) = self.fallback.current.as_mut() {
                f.published = true;
            }
            if let Some(prev) = self.fallback.previous.as_mut() {
                prev.retired_at.get_or_insert(now);
            }
        }
        Ok(())
    }

    /// When [`Device::handle_timeout`] has work to do (forgetting a replaced fallback key).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let retired = self.fallback.previous.as_ref()?.retired_at?;
        Some(retired.plus_millis(FALLBACK_GRACE_MS))
    }

    /// Forgets a replaced fallback key whose grace period is over. Returns whether the account
    /// changed (then persist the device pickle).
    pub fn handle_timeout(&mut self, now: Timestamp) -> bool {
        match self.poll_timeout() {
            Some(due) if due <= now => {
                self.account.forget_fallback_key();
                self.fallback.previous = None;
                true
            }
            _ => false,
        }
    }

    /// The current fallback key's public half and whether a session was made from it.
    pub fn fallback_key(&self) -> Option<(Curve25519Key, Option<Timestamp>)> {
        self.fallback
            .current
            .as_ref()
            .map(|f| (f.key, self.fallback.used_at))
    }

    /// Called after an inbound session was created from `prekey`: rotates the fallback key if
    /// that is what was used. Returns whether it rotated.
    pub(crate) fn note_prekey_used(&mut self, now: Timestamp, prekey: &Curve25519Key) -> bool {
        let is_current = self
            .fallback
            .current
            .as_ref()
            .is_some_and(|f| f.key == *prekey);
        if !is_current {
            return false;
        }
        self.fallback.used_at = Some(now);
        self.rotate_fallback();
        true
    }

    fn rotate_fallback(&mut self) {
        let old = self.fallback.current.take();
        self.account.generate_fallback_key();
        self.fallback.previous = old.map(|f| PreviousFallback {
            key: f.key,
            retired_at: None,
        });
        self.fallback.current = self.unpublished_fallback();
        self.fallback.used_at = None;
    }

    fn unpublished_fallback(&self) -> Option<FallbackKeyInfo> {
        self.account
            .fallback_key()
            .into_iter()
            .next()
            .map(|(id, key)| FallbackKeyInfo {
                key_id: id.to_base64(),
                key: curve_from_vz(key),
                published: false,
            })
    }

    pub(crate) fn account(&self) -> &Account {
        &self.account
    }

    /// A copy of the account, so a failed inbound session leaves ours untouched.
    pub(crate) fn account_copy(&self) -> Account {
        Account::from_pickle(self.account.pickle())
    }

    pub(crate) fn replace_account(&mut self, account: Account) {
        self.account = account;
    }

    /// The whole device (account, certificate, key bookkeeping), encrypted with the pickle key.
    pub fn pickle(&self, key: &PickleKey, rng: &mut dyn SecureRandom) -> String {
        let olm_key = key.subkey(pickle::OLM_ACCOUNT);
        let state = DeviceState {
            version: DEVICE_PICKLE_VERSION,
            user_id: self.user_id,
            device_id: self.device_id.clone(),
            certificate: self.certificate.clone(),
            account: self.account.pickle().encrypt(&olm_key),
            fallback: self.fallback.clone(),
        };
        // Serialising plain data with string keys cannot fail.
        #[allow(
            clippy::expect_used,
            reason = "plain data with string keys always serialises"
        )]
        let json = serde_json::to_vec(&state).expect("device state serialises");
        pickle::seal(key, pickle::DEVICE, &json, rng)
    }

    /// Restores a device from [`Device::pickle`]'s output.
    pub fn from_pickle(text: &str, key: &PickleKey) -> Result<Self, DeviceError> {
        let plain = pickle::open(key, pickle::DEVICE, text)?;
        let state: DeviceState =
            serde_json::from_slice(&plain).map_err(|_| PickleError::Contents)?;
        if state.version != DEVICE_PICKLE_VERSION {
            return Err(PickleError::Contents.into());
        }
        let olm_key = key.subkey(pickle::OLM_ACCOUNT);
        let account = Account::from_pickle(
            AccountPickle::from_encrypted(&state.account, &olm_key)
                .map_err(|_| PickleError::Olm)?,
        );
        let device = Self {
            user_id: state.user_id,
            device_id: state.device_id,
            account,
            certificate: state.certificate,
            fallback: state.fallback,
        };
        if let Some(cert) = &device.certificate
            && (cert.keys != device.keys()
                || cert.device_id != device.device_id
                || cert.user_id != device.user_id)
        {
            return Err(PickleError::Contents.into());
        }
        Ok(device)
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("keys", &self.keys())
            .field("certified", &self.certificate.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::test_support::SeededRandom;

    fn setup(seed: u8) -> (Identity, Device) {
        let id = Identity::from_seed(&[seed; 32]).unwrap();
        let dev = Device::new(&id, DeviceId::from_random([seed; 16]), Timestamp(1_000));
        (id, dev)
    }

    #[test]
    fn a_new_device_publishes_a_bundle_that_verifies() {
        let (id, mut dev) = setup(1);
        let bundle = dev.prepare_upload(0).unwrap().unwrap();
        bundle.verify(&id.user_id()).unwrap();
        assert_eq!(bundle.one_time_keys.len(), ONE_TIME_KEY_TARGET);
        assert_eq!(bundle.certificate.keys, dev.keys());
        dev.mark_published(Timestamp(2_000), &bundle).unwrap();
        assert!(!dev.needs_upload());
        assert_eq!(dev.prepare_upload(ONE_TIME_KEY_TARGET).unwrap(), None);
    }

    #[test]
    fn replenishes_only_what_the_server_is_missing() {
        let (id, mut dev) = setup(2);
        let first = dev.prepare_upload(0).unwrap().unwrap();
        dev.mark_published(Timestamp(2), &first).unwrap();
        let more = dev
            .prepare_upload(ONE_TIME_KEY_TARGET - 7)
            .unwrap()
            .unwrap();
        more.verify(&id.user_id()).unwrap();
        assert_eq!(more.one_time_keys.len(), 7);
        let old: Vec<_> = first.one_time_keys.iter().map(|k| &k.key_id).collect();
        assert!(more.one_time_keys.iter().all(|k| !old.contains(&&k.key_id)));
    }

    #[test]
    fn publication_is_marked_only_for_the_bundle_that_was_acked() {
        let (_, mut dev) = setup(3);
        let bundle = dev.prepare_upload(40).unwrap().unwrap();
        // More keys appear before the ack arrives: the ack of the older bundle is refused and
        // nothing is marked, so the new keys are not lost.
        let _newer = dev.prepare_upload(0).unwrap().unwrap();
        assert_eq!(
            dev.mark_published(Timestamp(5), &bundle),
            Err(DeviceError::StaleUpload)
        );
        assert!(dev.needs_upload());
    }

    #[test]
    fn a_key_used_before_the_ack_does_not_void_the_ack() {
        let (_, mut dev) = setup(8);
        let bundle = dev.prepare_upload(0).unwrap().unwrap();
        // The server gave one of these keys out and a session consumed it before our ack
        // arrived (seen in a run: a join request made a session between upload and ack).
        let other = vodozemac::olm::Account::new();
        let config = vodozemac::olm::SessionConfig::version_1();
        let mut out = other
            .create_outbound_session(
                config,
                curve_to_vz(&dev.keys().curve25519),
                curve_to_vz(&bundle.one_time_keys[3].key),
            )
            .unwrap();
        let Ok(vodozemac::olm::OlmMessage::PreKey(first)) = out.encrypt(b"hello") else {
            panic!("a new session's first message is a pre-key message");
        };
        dev.account
            .create_inbound_session(config, other.curve25519_key(), &first)
            .unwrap();
        dev.mark_published(Timestamp(5), &bundle).unwrap();
        assert!(!dev.needs_upload(), "nothing is uploaded twice");
    }

    #[test]
    fn a_fallback_rotated_before_the_ack_goes_up_alone_next() {
        let (_, mut dev) = setup(9);
        let bundle = dev.prepare_upload(0).unwrap().unwrap();
        // A session made from the uploaded fallback key rotates it before the ack arrives.
        assert!(dev.note_prekey_used(Timestamp(3), &bundle.fallback_key.key));
        dev.mark_published(Timestamp(5), &bundle).unwrap();
        assert!(
            dev.needs_upload(),
            "the new fallback key is not published yet"
        );
        let next = dev.prepare_upload(ONE_TIME_KEY_TARGET).unwrap().unwrap();
        assert!(
            next.one_time_keys.is_empty(),
            "the acked one-time keys are not sent again"
        );
        assert_ne!(next.fallback_key.key, bundle.fallback_key.key);
        dev.mark_published(Timestamp(9), &next).unwrap();
        assert!(!dev.needs_upload());
    }

    #[test]
    fn an_uncertified_device_cannot_publish_until_linked() {
        let id = Identity::from_seed(&[4; 32]).unwrap();
        let mut second = Device::new_uncertified(id.user_id(), DeviceId::from_random([44; 16]));
        assert_eq!(second.prepare_upload(0), Err(DeviceError::Uncertified));
        // A certificate for another device is refused.
        let wrong = id.certify_device(
            &DeviceId::from_random([45; 16]),
            &second.keys(),
            Timestamp(1),
        );
        assert_eq!(
            second.install_certificate(wrong),
            Err(DeviceError::CertificateMismatch)
        );
        // A certificate from another identity is refused.
        let other = Identity::from_seed(&[5; 32]).unwrap();
        let forged = other.certify_device(second.device_id(), &second.keys(), Timestamp(1));
        assert_eq!(
            second.install_certificate(forged),
            Err(DeviceError::Certificate(BundleError::WrongUser))
        );
        let cert = id.certify_device(second.device_id(), &second.keys(), Timestamp(1));
        second.install_certificate(cert).unwrap();
        second
            .prepare_upload(0)
            .unwrap()
            .unwrap()
            .verify(&id.user_id())
            .unwrap();
    }

    #[test]
    fn fallback_rotation_and_grace_period() {
        let (_, mut dev) = setup(6);
        let b = dev.prepare_upload(0).unwrap().unwrap();
        dev.mark_published(Timestamp(10), &b).unwrap();
        let (fb, used) = dev.fallback_key().unwrap();
        assert_eq!(used, None);
        // A session made from a one-time key does not rotate.
        assert!(!dev.note_prekey_used(Timestamp(20), &b.one_time_keys[0].key));
        // One made from the fallback key does.
        assert!(dev.note_prekey_used(Timestamp(30), &fb));
        let (fb2, _) = dev.fallback_key().unwrap();
        assert_ne!(fb, fb2);
        assert!(dev.needs_upload());
        // Until the new key is published, the old one's grace period does not start.
        assert_eq!(dev.poll_timeout(), None);
        let b2 = dev.prepare_upload(ONE_TIME_KEY_TARGET).unwrap().unwrap();
        assert_eq!(b2.fallback_key.key, fb2);
        assert!(b2.one_time_keys.is_empty());
        dev.mark_published(Timestamp(100), &b2).unwrap();
        assert_eq!(
            dev.poll_timeout(),
            Some(Timestamp(100).plus_millis(FALLBACK_GRACE_MS))
        );
        assert!(!dev.handle_timeout(Timestamp(101)));
        assert!(dev.handle_timeout(Timestamp(100).plus_millis(FALLBACK_GRACE_MS)));
        assert_eq!(dev.poll_timeout(), None);
    }

    #[test]
    fn pickles_round_trip_with_all_bookkeeping() {
        let (_, mut dev) = setup(7);
        let b = dev.prepare_upload(0).unwrap().unwrap();
        dev.mark_published(Timestamp(10), &b).unwrap();
        let (fb, _) = dev.fallback_key().unwrap();
        dev.note_prekey_used(Timestamp(11), &fb);
        let key = PickleKey::from_bytes([9; 32]);
        let mut rng = SeededRandom::new(7);
        let p = dev.pickle(&key, &mut rng);
        let back = Device::from_pickle(&p, &key).unwrap();
        assert_eq!(back.keys(), dev.keys());
        assert_eq!(back.certificate(), dev.certificate());
        assert_eq!(back.fallback, dev.fallback);
        assert_eq!(back.needs_upload(), dev.needs_upload());
        assert!(matches!(
            Device::from_pickle(&p, &PickleKey::from_bytes([8; 32])),
            Err(DeviceError::Pickle(PickleError::Decrypt))
        ));
    }

    #[test]
    fn debug_prints_public_parts_only() {
        let (_, dev) = setup(8);
        let shown = format!("{dev:?}");
        assert!(shown.contains("certified: true"), "{shown}");
        assert!(shown.contains(&dev.keys().curve25519.to_base64()));
    }
}
