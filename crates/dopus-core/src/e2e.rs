//! Olm sessions with other devices: start, seal, open, and recover (vodozemac, sans-IO).
//!
//! [`OlmMachine`] holds this device's Olm account in memory (it is expensive to unpickle) and
//! nothing else: sessions come in as store records ([`OlmSessionRecord`], with the peer device's keys) loaded by the node and go back out as
//! updated records that the node must persist. Nothing here reads a clock or a store.
//!
//! Protocol flow (docs/e2e.md):
//! - **start**: the node claims a `ClaimedBundle` for a peer device from the key directory and
//!   calls [`OlmMachine::start_session`], which verifies every signature against the peer's user
//!   ID *before* creating the outbound session, and returns its record;
//! - **seal**: [`OlmMachine::seal`] builds the inner payload (binding sender and recipient, plus
//!   our device certificate while the session is still in its pre-key phase), encrypts it with
//!   the most recently used session for that device and wraps it in a `PeerEnvelope`. The node
//!   persists [`Sealed::session`] in the same transaction as the outbox entry, *before* sending:
//!   a crash after sending but before persisting would reuse a message key;
//! - **open**: [`OlmMachine::open`] checks the envelope is for us, decrypts with the device's
//!   sessions (newest first) or creates an inbound session from a pre-key message, decodes the
//!   payload and checks every binding. The node persists [`Opened::session`] (and
//!   [`Opened::account_pickle`] when present) together with the message;
//! - **recover**: a failure's [`OpenError::recovery`] tells the node whether to ignore it, drop
//!   it, or start a fresh session and send `Content::SessionReset` listing the envelope ids that
//!   failed; the peer then re-sends them on the new session.
//!
//! Ordering: vodozemac keeps at most 40 skipped message keys per receiving chain, so a message
//! that arrives more than 40 messages late on its chain is lost for good. The node must deliver
//! envelopes from each peer device to [`OlmMachine::open`] in the order they were sealed.

use crate::identity::pickle::{self, PickleError, PickleKey, SecureRandom};
use crate::identity::{Device, DeviceError, curve_from_vz, curve_to_vz};
use crate::store::{OlmSessionRecord, Pickle};
use dopus_proto::bundle::{
    BundleError, ClaimedBundle, DeviceBundle, DeviceCertificate, VerifiedBundle,
};
use dopus_proto::peer::{
    Base64Bytes, Content, Conversation, ENVELOPE_VERSION, MessageId, OlmMessageType,
    PAYLOAD_VERSION, PeerAddress, PeerEnvelope, PeerError, PeerPayload, RecipientBinding,
    SenderBinding,
};
use dopus_types::{DeviceId, DeviceKeys, Timestamp, UserId};
use std::fmt;
use vodozemac::olm::{
    DecryptionError, OlmMessage, Session, SessionConfig, SessionCreationError, SessionPickle,
};
use zeroize::Zeroizing;

/// A session just created from a verified bundle.
#[derive(Debug, Clone)]
pub struct StartedSession {
    /// The new session; persist it before sealing with it.
    pub session: OlmSessionRecord,
    /// The peer device's verified certificate, for the node's device list.
    pub certificate: DeviceCertificate,
}

/// Keys to upload to the key directory.
#[derive(Debug, Clone)]
pub struct KeyUpload {
    /// The signed bundle to upload.
    pub bundle: DeviceBundle,
    /// The device pickle with the new keys: persist it *before* uploading.
    pub account_pickle: String,
}

/// What to seal: the payload fields the sender chooses.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The message id (UUIDv7) the node gave the content when the user acted; a re-send keeps
    /// it, which is what lets the receiver deduplicate.
    pub id: MessageId,
    /// The conversation.
    pub conversation: Conversation,
    /// When the user acted (not when this copy is sealed): a re-sent message keeps its time and
    /// so its place in the conversation.
    pub sent_at: Timestamp,
    /// What it says.
    pub content: Content,
}

/// A sealed message: send `envelope` after persisting `session`.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The envelope to send (data channel or mailbox).
    pub envelope: PeerEnvelope,
    /// The advanced session: persist it in the same transaction as the outbox entry, before
    /// sending.
    pub session: OlmSessionRecord,
}

/// An opened message and what to persist with it.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The verified payload.
    pub payload: PeerPayload,
    /// The session that decrypted it (new or advanced): persist with the message.
    pub session: OlmSessionRecord,
    /// The sending device's certified keys.
    pub peer_keys: DeviceKeys,
    /// Whether `session` was created by this message.
    pub new_session: bool,
    /// The device pickle, when the account changed (a one-time key was used up, or the
    /// fallback key rotated): persist it in the same transaction as `session`.
    pub account_pickle: Option<String>,
    /// The sender's verified device certificate, on pre-key messages: add or update the device
    /// in the node's device list (a changed key under the same device id means the user
    /// re-certified the device).
    pub sender_certificate: Option<DeviceCertificate>,
}

/// What [`OlmMachine::open_in_burst`] found: as [`Opened`], but the session stays live in the
/// [`Burst`] until [`OlmMachine::finish_burst`].
#[derive(Debug)]
pub struct OpenedInBurst {
    /// The verified payload.
    pub payload: PeerPayload,
    /// The sending device's certified keys.
    pub peer_keys: DeviceKeys,
    /// Whether the session was created by this message.
    pub new_session: bool,
    /// The device pickle, when the account changed: persist it in the burst's transaction.
    pub account_pickle: Option<String>,
    /// The sender's verified device certificate, on pre-key messages (see [`Opened`]).
    pub sender_certificate: Option<DeviceCertificate>,
}

/// Sessions advanced by envelopes taken in together, kept live (unpickled) until the burst is
/// finished: see [`OlmMachine::open_in_burst`].
#[derive(Default)]
pub struct Burst {
    live: LiveSessions,
}

impl fmt::Debug for Burst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Burst")
            .field("sessions", &self.live.len())
            .finish()
    }
}

/// Sessions live in a burst by session id: the record, the peer device's keys, the session.
type LiveSessions = std::collections::HashMap<String, LiveSession>;

/// One live session: its record (pickle stale or empty), the peer device's keys, the session.
type LiveSession = (OlmSessionRecord, DeviceKeys, Session);

/// An opened envelope whose session is not pickled yet.
struct OpenedLive {
    payload: PeerPayload,
    /// The session's record with its new last use; its pickle is stale (or empty for a new
    /// session) until the session is pickled.
    record: OlmSessionRecord,
    keys: DeviceKeys,
    session: Session,
    new_session: bool,
    account_pickle: Option<String>,
    sender_certificate: Option<DeviceCertificate>,
}

/// Returns a session taken from a burst, in the state it was taken in.
fn put_back(
    live: Option<&mut LiveSessions>,
    before: Option<(OlmSessionRecord, DeviceKeys, Session)>,
) {
    if let (Some(live), Some((record, keys, session))) = (live, before) {
        live.insert(record.session_id.clone(), (record, keys, session));
    }
}

/// Why a session could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartSessionError {
    /// The bundle does not verify against the peer's user ID: a substituted, unsigned or
    /// mis-signed key. No session was created.
    #[error("the key bundle was refused: {0}")]
    Bundle(#[from] BundleError),
    /// The bundle is valid but for another device than the one asked for.
    #[error("the key bundle is for another device")]
    WrongDevice,
    /// The bundle is this device's own.
    #[error("refusing to start a session with this device itself")]
    OwnDevice,
    /// vodozemac refused the keys (a non-contributory Diffie-Hellman).
    #[error("the bundle's keys cannot form a secure session")]
    InsecureKeys,
}

/// Why a message could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// No session with that device: claim a bundle and [`OlmMachine::start_session`] first.
    #[error("no Olm session with that device")]
    NoSession,
    /// This device has no certificate yet.
    #[error("this device has no certificate yet")]
    Uncertified,
    /// The payload breaks a format limit.
    #[error(transparent)]
    Payload(#[from] PeerError),
    /// A stored session pickle could not be opened.
    #[error("a stored session could not be restored: {0}")]
    LocalState(#[from] PickleError),
    /// vodozemac refused to encrypt (a non-contributory ratchet key).
    #[error("the session cannot encrypt securely")]
    Encrypt,
}

/// The class of an [`OpenError`], for the node's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The message key was already used: a replayed envelope, or a peer that restored an old
    /// copy of its session and is reusing keys.
    Duplicate,
    /// No session can decrypt it: no session with that device, an unknown (used or never
    /// published) one-time key, or a message too far ahead of its chain.
    NoSession,
    /// Authentication failed on every session: tampered in transit, or the sessions are out of
    /// sync (one side restored from an old copy).
    Tampered,
    /// Not a well-formed Olm message or payload.
    Malformed,
    /// Decrypted (or addressed) correctly but the sender or recipient binding does not hold:
    /// misaddressed, wrong sender, forged certificate, spliced id. An attack or a bug.
    Forged,
    /// Our own stored state could not be read.
    LocalState,
}

/// What the node should do about a failed envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// Nothing (re-acknowledge it if it was a replay of a message we have).
    Ignore,
    /// Start a fresh session with the sender's device and send `Content::SessionReset` naming
    /// this envelope id, so the sender re-sends it; rate-limit this per device.
    StartNewSession,
    /// Discard it (and log the kind at warn level, without contents).
    Drop,
}

/// Why an envelope was refused. Nothing in it echoes keys or contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The envelope's recipient is another user or another device.
    #[error("the envelope is addressed to another user or device")]
    Misaddressed,
    /// The ciphertext is not an Olm message of the stated type.
    #[error("the envelope does not hold a valid Olm message")]
    MalformedOlm,
    /// The decrypted payload is malformed or breaks a limit.
    #[error("the payload is invalid: {0}")]
    MalformedPayload(#[from] PeerError),
    /// The message key was already used (replay or a rolled-back peer).
    #[error("the message was already decrypted once (its key is used up)")]
    Duplicate,
    /// No session with the sender's device.
    #[error("no session with the sender's device")]
    NoSession,
    /// The pre-key message names a one-time key we do not have (used up, or never ours).
    #[error("the pre-key message uses an unknown one-time key")]
    UnknownOneTimeKey,
    /// The message is too far ahead of its chain to decrypt.
    #[error("the message is too far ahead of its session")]
    TooFarAhead,
    /// Authentication failed on every session.
    #[error("the message failed authentication on every session")]
    Tampered,
    /// The payload's id is not the envelope's id.
    #[error("the payload id does not match the envelope id")]
    SplicedId,
    /// The payload names another sender than the envelope.
    #[error("the payload names another sender than the envelope")]
    WrongSender,
    /// The payload was encrypted for another user or device than us.
    #[error("the payload was encrypted for another recipient")]
    NotForThisDevice,
    /// A pre-key message without the sender's device certificate.
    #[error("a pre-key message must carry the sender's device certificate")]
    MissingCertificate,
    /// The sender's certificate does not verify against the sender's user ID.
    #[error("the sender's device certificate is forged: {0}")]
    ForgedCertificate(BundleError),
    /// The certificate is valid but for another device or other keys than the sender claims.
    #[error("the sender's certificate does not match the sending device")]
    CertificateMismatch,
    /// The Olm sender key is not the sending device's certified Curve25519 key.
    #[error("the Olm sender key is not the sender's certified key")]
    SenderKeyMismatch,
    /// A stored session pickle could not be opened.
    #[error("a stored session could not be restored: {0}")]
    LocalState(#[from] PickleError),
}

impl OpenError {
    /// The failure's class.
    pub fn kind(&self) -> FailureKind {
        match self {
            OpenError::Duplicate => FailureKind::Duplicate,
            OpenError::NoSession | OpenError::UnknownOneTimeKey | OpenError::TooFarAhead => {
                FailureKind::NoSession
            }
            OpenError::Tampered => FailureKind::Tampered,
            OpenError::MalformedOlm | OpenError::MalformedPayload(_) => FailureKind::Malformed,
            OpenError::Misaddressed
            | OpenError::SplicedId
            | OpenError::WrongSender
            | OpenError::NotForThisDevice
            | OpenError::MissingCertificate
            | OpenError::ForgedCertificate(_)
            | OpenError::CertificateMismatch
            | OpenError::SenderKeyMismatch => FailureKind::Forged,
            OpenError::LocalState(_) => FailureKind::LocalState,
        }
    }

    /// What to do about it. `already_received` tells whether the node already stored an
    /// envelope with this id: a duplicate of one we have is a harmless replay, a "duplicate" of
    /// one we never had means the peer reused message keys (restored an old copy), so the
    /// session must be replaced.
    pub fn recovery(&self, already_received: bool) -> Recovery {
        match self.kind() {
            FailureKind::Duplicate if already_received => Recovery::Ignore,
            FailureKind::Duplicate | FailureKind::NoSession | FailureKind::Tampered => {
                Recovery::StartNewSession
            }
            FailureKind::Malformed | FailureKind::Forged | FailureKind::LocalState => {
                Recovery::Drop
            }
        }
    }
}

fn classify(e: &DecryptionError) -> OpenError {
    match e {
        DecryptionError::MissingMessageKey(_) => OpenError::Duplicate,
        DecryptionError::TooBigMessageGap(..) => OpenError::TooFarAhead,
        DecryptionError::NonContributoryKey => OpenError::MalformedOlm,
        DecryptionError::InvalidMAC(_)
        | DecryptionError::InvalidMACLength(..)
        | DecryptionError::InvalidPadding(_) => OpenError::Tampered,
    }
}

/// This device's Olm account, in memory, and the operations on sessions.
pub struct OlmMachine {
    device: Device,
    pickle_key: PickleKey,
    rng: Box<dyn SecureRandom + Send>,
    /// Sessions as restored from (or last saved to) a pickle, by session id, each with that
    /// exact pickle: a record whose pickle is the same string is the same state, so it need not
    /// be decrypted and parsed again (a pure memo; a record with any other pickle, for example
    /// because a commit failed, is restored from its own pickle as before).
    restored: std::collections::HashMap<String, (String, Session)>,
}

/// Most sessions [`OlmMachine`] keeps restored.
const RESTORED_CAP: usize = 256;

impl fmt::Debug for OlmMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OlmMachine")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl OlmMachine {
    /// Wraps a device. `rng` supplies the nonces of our own pickles.
    pub fn new(device: Device, pickle_key: PickleKey, rng: Box<dyn SecureRandom + Send>) -> Self {
        Self {
            device,
            pickle_key,
            rng,
            restored: std::collections::HashMap::new(),
        }
    }

    /// Restores the machine from a device pickle ([`OlmMachine::account_pickle`]).
    pub fn from_pickle(
        account_pickle: &str,
        pickle_key: PickleKey,
        rng: Box<dyn SecureRandom + Send>,
    ) -> Result<Self, DeviceError> {
        let device = Device::from_pickle(account_pickle, &pickle_key)?;
        Ok(Self::new(device, pickle_key, rng))
    }

    /// The key everything of this device is pickled with.
    pub(crate) fn pickle_key(&self) -> &PickleKey {
        &self.pickle_key
    }

    /// The device account.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The device, for linking (installing a certificate).
    pub fn device_mut(&mut self) -> &mut Device {
        &mut self.device
    }

    /// Our address.
    pub fn address(&self) -> PeerAddress {
        PeerAddress {
            user: self.device.user_id(),
            device: self.device.device_id().clone(),
        }
    }

    /// The device pickle (account, certificate, key bookkeeping), encrypted.
    pub fn account_pickle(&mut self) -> String {
        self.device.pickle(&self.pickle_key, &mut self.rng)
    }

    /// Keys to upload when the server holds `server_one_time_keys` of ours, or `None`.
    pub fn prepare_upload(
        &mut self,
        server_one_time_keys: usize,
    ) -> Result<Option<KeyUpload>, DeviceError> {
        let Some(bundle) = self.device.prepare_upload(server_one_time_keys)? else {
            return Ok(None);
        };
        Ok(Some(KeyUpload {
            bundle,
            account_pickle: self.account_pickle(),
        }))
    }

    /// Records the server's acknowledgement of an upload; returns the device pickle to persist.
    pub fn mark_published(
        &mut self,
        now: Timestamp,
        bundle: &DeviceBundle,
    ) -> Result<String, DeviceError> {
        self.device.mark_published(now, bundle)?;
        Ok(self.account_pickle())
    }

    /// When [`OlmMachine::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.device.poll_timeout()
    }

    /// Does timed key maintenance; returns the device pickle to persist if anything changed.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Option<String> {
        self.device
            .handle_timeout(now)
            .then(|| self.account_pickle())
    }

    /// Verifies a claimed bundle against the peer's user ID (never against anything the server
    /// says) and the device we asked for, then starts an outbound session. Nothing is created
    /// when any check fails.
    pub fn start_session(
        &mut self,
        now: Timestamp,
        peer: &UserId,
        peer_device: &DeviceId,
        claimed: &ClaimedBundle,
    ) -> Result<StartedSession, StartSessionError> {
        let verified = claimed.verify(peer)?;
        if &verified.device_id != peer_device {
            return Err(StartSessionError::WrongDevice);
        }
        let session = self.start_session_verified(now, &verified)?;
        Ok(StartedSession {
            session,
            certificate: claimed.certificate.clone(),
        })
    }

    /// Starts an outbound session from an already verified bundle.
    pub fn start_session_verified(
        &mut self,
        now: Timestamp,
        bundle: &VerifiedBundle,
    ) -> Result<OlmSessionRecord, StartSessionError> {
        if bundle.device_keys == self.device.keys() {
            return Err(StartSessionError::OwnDevice);
        }
        let session = self
            .device
            .account()
            .create_outbound_session(
                SessionConfig::version_1(),
                curve_to_vz(&bundle.device_keys.curve25519),
                curve_to_vz(&bundle.prekey),
            )
            .map_err(|_| StartSessionError::InsecureKeys)?;
        Ok(OlmSessionRecord {
            peer_user: bundle.user_id,
            peer_device: bundle.device_id.clone(),
            peer_curve25519: bundle.device_keys.curve25519,
            session_id: session.session_id(),
            pickle: self.pickle_session(session),
            created_at: now,
            last_used_at: now,
        })
    }

    /// Pickles `session` for its record and keeps it restored under that pickle.
    fn pickle_session(&mut self, session: Session) -> Pickle {
        let pickle = session
            .pickle()
            .encrypt(&self.pickle_key.subkey(pickle::OLM_SESSION));
        if self.restored.len() >= RESTORED_CAP {
            self.restored.clear();
        }
        self.restored
            .insert(session.session_id(), (pickle.clone(), session));
        Pickle::new(pickle)
    }

    /// The session a record holds. Taken out of the restored ones (a session that then fails
    /// to decrypt, or is refused, is simply not put back).
    fn load_session(&mut self, record: &OlmSessionRecord) -> Result<Session, PickleError> {
        if let Some((pickle, _)) = self.restored.get(&record.session_id)
            && pickle == record.pickle.as_str()
            && let Some((_, session)) = self.restored.remove(&record.session_id)
        {
            return Ok(session);
        }
        let pickle = SessionPickle::from_encrypted(
            record.pickle.as_str(),
            &self.pickle_key.subkey(pickle::OLM_SESSION),
        )
        .map_err(|_| PickleError::Olm)?;
        Ok(Session::from_pickle(pickle))
    }

    /// Encrypts `draft` for one peer device with its most recently used session. `now` is when
    /// the session was used (it decides which session seals next time).
    pub fn seal(
        &mut self,
        now: Timestamp,
        to: &PeerAddress,
        peer_keys: &DeviceKeys,
        sessions: &[OlmSessionRecord],
        draft: Draft,
    ) -> Result<Sealed, SealError> {
        let (mut envelopes, session) = self.seal_many(now, to, peer_keys, sessions, vec![draft])?;
        let envelope = envelopes.pop().ok_or(SealError::Encrypt)??;
        Ok(Sealed { envelope, session })
    }

    /// Encrypts several drafts for one peer device, in order, with its most recently used
    /// session: the same envelopes as [`OlmMachine::seal`] one after the other, but the session
    /// is restored from its pickle and pickled again once for all of them (that, not the
    /// encryption, is most of the cost of a small message). One result per draft (a draft that
    /// breaks a format limit fails alone); an `Err` overall means nothing was sealed and the
    /// session must not be saved.
    pub fn seal_many(
        &mut self,
        now: Timestamp,
        to: &PeerAddress,
        peer_keys: &DeviceKeys,
        sessions: &[OlmSessionRecord],
        drafts: Vec<Draft>,
    ) -> Result<(Vec<Result<PeerEnvelope, SealError>>, OlmSessionRecord), SealError> {
        let certificate = self
            .device
            .certificate()
            .cloned()
            .ok_or(SealError::Uncertified)?;
        let record = newest_first(sessions, to)
            .into_iter()
            .next()
            .ok_or(SealError::NoSession)?;
        if record.peer_curve25519 != peer_keys.curve25519 {
            // The device's certified key changed since the session was made: it is not a
            // session with this device any more.
            return Err(SealError::NoSession);
        }
        let mut session = self.load_session(record)?;
        let from = self.address();
        let sender = SenderBinding {
            user: self.device.user_id(),
            device: self.device.device_id().clone(),
            keys: self.device.keys(),
        };
        let recipient = RecipientBinding {
            user: to.user,
            device: to.device.clone(),
            ed25519: peer_keys.ed25519,
        };
        let mut envelopes = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let Draft {
                id,
                conversation,
                sent_at,
                content,
            } = draft;
            let pre_key = !session.has_received_message();
            let payload = PeerPayload {
                version: PAYLOAD_VERSION,
                id,
                sender: sender.clone(),
                recipient: recipient.clone(),
                certificate: pre_key.then(|| certificate.clone()),
                conversation,
                sent_at,
                content,
            };
            let plaintext = match payload.to_json() {
                Ok(p) => Zeroizing::new(p),
                Err(e) => {
                    envelopes.push(Err(e.into()));
                    continue;
                }
            };
            let message = session
                .encrypt(plaintext.as_slice())
                .map_err(|_| SealError::Encrypt)?;
            let (number, bytes) = message.to_parts();
            let olm_type = OlmMessageType::from_number(number).ok_or(SealError::Encrypt)?;
            let envelope = PeerEnvelope {
                version: ENVELOPE_VERSION,
                id,
                from: from.clone(),
                to: to.clone(),
                olm_type,
                ciphertext: Base64Bytes(bytes),
            };
            // Too large once encrypted: this draft fails; its message key is simply skipped.
            envelopes.push(envelope.validate().map(|()| envelope).map_err(Into::into));
        }
        Ok((
            envelopes,
            OlmSessionRecord {
                pickle: self.pickle_session(session),
                last_used_at: now,
                ..record.clone()
            },
        ))
    }

    /// Decrypts and verifies an envelope. `sessions` are the node's sessions with the sending
    /// device (others are ignored). On error nothing changed: persist nothing.
    pub fn open(
        &mut self,
        now: Timestamp,
        envelope: &PeerEnvelope,
        peer_keys: Option<&DeviceKeys>,
        sessions: &[OlmSessionRecord],
    ) -> Result<Opened, OpenError> {
        let opened = self.open_live(now, envelope, peer_keys, sessions, None)?;
        Ok(Opened {
            session: OlmSessionRecord {
                pickle: self.pickle_session(opened.session),
                ..opened.record
            },
            peer_keys: opened.keys,
            payload: opened.payload,
            new_session: opened.new_session,
            account_pickle: opened.account_pickle,
            sender_certificate: opened.sender_certificate,
        })
    }

    /// Like [`OlmMachine::open`], for one of several envelopes taken in under one transaction:
    /// the session it advances (or creates) stays live in `burst` instead of being pickled, and
    /// later envelopes of the burst use it (over the stored record of the same session).
    /// Pickling a session costs more than decrypting a message, so [`OlmMachine::finish_burst`]
    /// pickles each session once, for the caller to persist in the same transaction as the
    /// burst's messages. On error the burst's sessions are as they were before the call.
    pub fn open_in_burst(
        &mut self,
        burst: &mut Burst,
        now: Timestamp,
        envelope: &PeerEnvelope,
        peer_keys: Option<&DeviceKeys>,
        sessions: &[OlmSessionRecord],
    ) -> Result<OpenedInBurst, OpenError> {
        let opened = self.open_live(now, envelope, peer_keys, sessions, Some(&mut burst.live))?;
        burst.live.insert(
            opened.record.session_id.clone(),
            (opened.record, opened.keys, opened.session),
        );
        Ok(OpenedInBurst {
            payload: opened.payload,
            peer_keys: opened.keys,
            new_session: opened.new_session,
            account_pickle: opened.account_pickle,
            sender_certificate: opened.sender_certificate,
        })
    }

    /// The records of every session the burst advanced or created, each pickled once: persist
    /// them in the burst's transaction. (If that transaction fails, the stored records stay as
    /// they were and are restored from next time: nothing here outlives the burst.)
    pub fn finish_burst(&mut self, burst: Burst) -> Vec<OlmSessionRecord> {
        let mut live: Vec<_> = burst.live.into_values().collect();
        // In a stable order, so the store sees the same writes for the same burst.
        live.sort_by(|a, b| a.0.session_id.cmp(&b.0.session_id));
        live.into_iter()
            .map(|(record, _, session)| OlmSessionRecord {
                pickle: self.pickle_session(session),
                ..record
            })
            .collect()
    }

    /// A session to decrypt with: the burst's live one if it holds this session (taken out,
    /// with a copy to put back if the envelope is refused), else the stored record's.
    fn take_session(
        &mut self,
        record: &OlmSessionRecord,
        live: Option<&mut LiveSessions>,
    ) -> Result<(Session, Option<LiveSession>), PickleError> {
        if let Some(live) = live
            && let Some((live_record, keys, session)) = live.remove(&record.session_id)
        {
            // A cheap copy (no encryption): the state to go back to if the envelope is refused.
            let before = Session::from_pickle(session.pickle());
            return Ok((session, Some((live_record, keys, before))));
        }
        Ok((self.load_session(record)?, None))
    }

    /// Decrypts and verifies an envelope, leaving the advanced (or new) session unpickled. With
    /// `live`, its sessions stand in for stored records of the same session id (they are
    /// newer), and a session taken from it goes back unchanged on error.
    fn open_live(
        &mut self,
        now: Timestamp,
        envelope: &PeerEnvelope,
        peer_keys: Option<&DeviceKeys>,
        sessions: &[OlmSessionRecord],
        mut live: Option<&mut LiveSessions>,
    ) -> Result<OpenedLive, OpenError> {
        if envelope.to != self.address() {
            return Err(OpenError::Misaddressed);
        }
        let message = OlmMessage::from_parts(envelope.olm_type.as_number(), &envelope.ciphertext.0)
            .map_err(|_| OpenError::MalformedOlm)?;
        // The sessions with the sending device and its keys: the stored ones (under the keys
        // its device record holds), with the burst's live sessions in place of their stored
        // records.
        let live_ids = |id: &str| live.as_deref().is_some_and(|l| l.contains_key(id));
        let mut known: Vec<Keyed> = match peer_keys {
            Some(keys) => sessions
                .iter()
                .filter(|r| !live_ids(&r.session_id))
                .map(|r| Keyed(r.clone(), *keys))
                .collect(),
            None => Vec::new(),
        };
        if let Some(l) = live.as_deref() {
            known.extend(l.values().map(|(r, k, _)| Keyed(r.clone(), *k)));
        }
        let candidates = newest_first(&known, &envelope.from);
        match &message {
            OlmMessage::PreKey(pre_key) => {
                let olm_sender = curve_from_vz(pre_key.identity_key());
                let session_id = pre_key.session_id();
                if let Some(Keyed(record, keys)) = candidates
                    .iter()
                    .copied()
                    .find(|Keyed(r, _)| r.session_id == session_id)
                {
                    let (mut session, before) = self.take_session(record, live.as_deref_mut())?;
                    let checked = session
                        .decrypt(&message)
                        .map_err(|e| classify(&e))
                        .and_then(|plaintext| {
                            let payload = PeerPayload::from_json(&Zeroizing::new(plaintext))?;
                            let cert = self.check_binding(envelope, &payload, &olm_sender, true)?;
                            if cert.as_ref().is_some_and(|c| c.keys != *keys) {
                                return Err(OpenError::CertificateMismatch);
                            }
                            Ok((payload, cert))
                        });
                    let (payload, cert) = match checked {
                        Ok(ok) => ok,
                        Err(e) => {
                            put_back(live, before);
                            return Err(e);
                        }
                    };
                    return Ok(OpenedLive {
                        payload,
                        record: OlmSessionRecord {
                            last_used_at: now,
                            ..(*record).clone()
                        },
                        keys: *keys,
                        session,
                        new_session: false,
                        account_pickle: None,
                        sender_certificate: cert,
                    });
                }
                // A new inbound session, made on a copy of the account so that a message that
                // fails any check below leaves our one-time keys untouched.
                let mut account = self.device.account_copy();
                let created = account
                    .create_inbound_session(
                        SessionConfig::version_1(),
                        pre_key.identity_key(),
                        pre_key,
                    )
                    .map_err(|e| match e {
                        SessionCreationError::MissingOneTimeKey(_) => OpenError::UnknownOneTimeKey,
                        SessionCreationError::Decryption(d) => classify(&d),
                        SessionCreationError::MismatchedIdentityKey(..)
                        | SessionCreationError::MismatchedSessionConfig { .. }
                        | SessionCreationError::NonContributoryKey => OpenError::MalformedOlm,
                    })?;
                let plaintext = Zeroizing::new(created.plaintext);
                let payload = PeerPayload::from_json(&plaintext)?;
                let cert = self
                    .check_binding(envelope, &payload, &olm_sender, true)?
                    .ok_or(OpenError::MissingCertificate)?;
                self.device.replace_account(account);
                self.device
                    .note_prekey_used(now, &curve_from_vz(pre_key.one_time_key()));
                let record = OlmSessionRecord {
                    peer_user: envelope.from.user,
                    peer_device: envelope.from.device.clone(),
                    peer_curve25519: cert.keys.curve25519,
                    session_id: created.session.session_id(),
                    pickle: Pickle::new(String::new()),
                    created_at: now,
                    last_used_at: now,
                };
                Ok(OpenedLive {
                    payload,
                    record,
                    keys: cert.keys,
                    session: created.session,
                    new_session: true,
                    account_pickle: Some(self.account_pickle()),
                    sender_certificate: Some(cert),
                })
            }
            OlmMessage::Normal(_) => {
                if candidates.is_empty() {
                    return Err(OpenError::NoSession);
                }
                let mut failures = Vec::with_capacity(candidates.len());
                for Keyed(record, keys) in candidates {
                    let (mut session, before) = self.take_session(record, live.as_deref_mut())?;
                    let plaintext = match session.decrypt(&message) {
                        Ok(plaintext) => Zeroizing::new(plaintext),
                        Err(e) => {
                            // Not this session (or a replay): it is unchanged.
                            put_back(live.as_deref_mut(), before);
                            failures.push(classify(&e));
                            continue;
                        }
                    };
                    let checked = PeerPayload::from_json(&plaintext)
                        .map_err(OpenError::from)
                        .and_then(|payload| {
                            self.check_binding(envelope, &payload, &record.peer_curve25519, false)?;
                            if payload.sender.keys != *keys {
                                return Err(OpenError::SenderKeyMismatch);
                            }
                            Ok(payload)
                        });
                    return match checked {
                        Ok(payload) => Ok(OpenedLive {
                            payload,
                            record: OlmSessionRecord {
                                last_used_at: now,
                                ..record.clone()
                            },
                            keys: *keys,
                            session,
                            new_session: false,
                            account_pickle: None,
                            sender_certificate: None,
                        }),
                        Err(e) => {
                            put_back(live, before);
                            Err(e)
                        }
                    };
                }
                // The right session knows the chain: a used-up key there is a duplicate. A
                // wrong session only ever fails authentication or sees a huge gap.
                if failures.contains(&OpenError::Duplicate) {
                    Err(OpenError::Duplicate)
                } else if failures.iter().all(|f| *f == OpenError::TooFarAhead) {
                    Err(OpenError::TooFarAhead)
                } else if failures.contains(&OpenError::MalformedOlm) {
                    Err(OpenError::MalformedOlm)
                } else {
                    Err(OpenError::Tampered)
                }
            }
        }
    }

    /// Checks everything the payload asserts against the envelope, us and the Olm sender key.
    /// Returns the verified certificate when `pre_key` (where it is mandatory).
    fn check_binding(
        &self,
        envelope: &PeerEnvelope,
        payload: &PeerPayload,
        olm_sender: &dopus_types::Curve25519Key,
        pre_key: bool,
    ) -> Result<Option<DeviceCertificate>, OpenError> {
        if payload.id != envelope.id {
            return Err(OpenError::SplicedId);
        }
        if payload.sender.user != envelope.from.user
            || payload.sender.device != envelope.from.device
        {
            return Err(OpenError::WrongSender);
        }
        let me = &payload.recipient;
        if me.user != self.device.user_id()
            || &me.device != self.device.device_id()
            || me.ed25519 != self.device.keys().ed25519
        {
            return Err(OpenError::NotForThisDevice);
        }
        if payload.sender.keys.curve25519 != *olm_sender {
            return Err(OpenError::SenderKeyMismatch);
        }
        if !pre_key {
            return Ok(None);
        }
        let cert = payload
            .certificate
            .as_ref()
            .ok_or(OpenError::MissingCertificate)?;
        cert.verify(&envelope.from.user)
            .map_err(OpenError::ForgedCertificate)?;
        if cert.device_id != envelope.from.device || cert.keys != payload.sender.keys {
            return Err(OpenError::CertificateMismatch);
        }
        Ok(Some(cert.clone()))
    }
}

/// The sessions with `peer`, most recently used first (ties: newest created, then session id,
/// so both the order and the choice for sending are deterministic).
fn newest_first<'a, T: AsRef<OlmSessionRecord>>(items: &'a [T], peer: &PeerAddress) -> Vec<&'a T> {
    let mut out: Vec<&T> = items
        .iter()
        .filter(|r| {
            let r = (*r).as_ref();
            r.peer_user == peer.user && r.peer_device == peer.device
        })
        .collect();
    out.sort_by(|a, b| {
        let (a, b) = ((*a).as_ref(), (*b).as_ref());
        (b.last_used_at, b.created_at, &b.session_id).cmp(&(
            a.last_used_at,
            a.created_at,
            &a.session_id,
        ))
    });
    out
}

impl AsRef<OlmSessionRecord> for OlmSessionRecord {
    fn as_ref(&self) -> &OlmSessionRecord {
        self
    }
}

/// A session record paired with its device's keys reads as the record.
struct Keyed(OlmSessionRecord, DeviceKeys);

impl AsRef<OlmSessionRecord> for Keyed {
    fn as_ref(&self) -> &OlmSessionRecord {
        &self.0
    }
}

#[cfg(test)]
mod tests;
