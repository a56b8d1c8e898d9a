//! Megolm encryption of space channels (vodozemac group sessions), sans-IO.
//!
//! Sessions come in as store records and go out as updated records the node persists
//! (persist before sending: a crash after sending an index that was not persisted would reuse
//! it). vodozemac draws the randomness of a new session itself, as it does for Olm sessions.
//!
//! Protocol flow (docs/spaces.md, "Keys"):
//! - **prepare** ([`ChannelCrypto::prepare`]): before sending in a channel, with the devices
//!   that may read it now (the audience). A new session is made when there is none, after 100
//!   messages or a week, when the "share history" setting changed, or when a device it was
//!   shared with may no longer read the channel (a reader was removed). Devices that lack the
//!   current key get a [`SpaceContent::SpaceRoomKey`] over Olm, from the current index only;
//! - **encrypt** ([`ChannelCrypto::encrypt`]) the channel payload into a [`ChannelMessage`];
//! - **accept keys**: [`ChannelCrypto::accept_room_key`] only from the device that owns the
//!   session (the Olm sender must be the announced owner); forwarded keys
//!   ([`ChannelCrypto::accept_forwarded_key`]) only when asked for and signed by the owner's
//!   certified device key; history bundles ([`ChannelCrypto::accept_history_bundle`]) likewise;
//! - **decrypt** ([`ChannelCrypto::decrypt`]): the message's sender must be the session's
//!   owner, its payload must name the session's space and channel, and a (session, index)
//!   seen before is dropped as a replay. A message whose session is missing waits
//!   (`MegolmWaitingRecord`) while [`super::key_requests::KeyRequests`] asks for the key;
//! - **answer key requests** ([`ChannelCrypto::answer_key_request`]) and build **history
//!   bundles** for new members ([`ChannelCrypto::history_bundles`]).

use super::SpaceSigner;
use super::state::SpaceState;
use crate::identity::pickle::PickleKey;
use crate::store::{Change, MegolmInboundRecord, MegolmOutboundRecord, Pickle};
use dopus_proto::bundle::DeviceCertificate;
use dopus_proto::peer::{Base64Bytes, PeerAddress, PeerError};
use dopus_proto::space::{
    CHANNEL_MESSAGE_VERSION, ChannelContent, ChannelMessage, ChannelPayload, HistorySession,
    MAX_HISTORY_SESSIONS, Permissions, SpaceContent, WithheldCode, session_announcement_bytes,
};
use dopus_types::{ChannelId, DeviceId, Signature, SpaceId, Timestamp, UserId};
use std::collections::BTreeSet;
use vodozemac::megolm::{
    ExportedSessionKey, GroupSession, GroupSessionPickle, InboundGroupSession,
    InboundGroupSessionPickle, MegolmMessage, SessionConfig, SessionKey,
};
use zeroize::Zeroizing;

/// Subkey purpose for vodozemac's Megolm pickles.
pub const MEGOLM_PICKLE: &str = "dopus/v1/pickle/megolm-session";
/// Messages per outbound session before it is replaced.
pub const ROTATE_AFTER_MESSAGES: u64 = 100;
/// Age of an outbound session after which it is replaced (one week).
pub const ROTATE_AFTER_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// One device: (user, device id).
pub type DeviceAddr = (UserId, DeviceId);

/// When outbound sessions are replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Messages per session.
    pub max_messages: u64,
    /// Age of a session, in milliseconds.
    pub max_age_ms: u64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            max_messages: ROTATE_AFTER_MESSAGES,
            max_age_ms: ROTATE_AFTER_MS,
        }
    }
}

/// Why a new outbound session was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationReason {
    /// There was none.
    NoSession,
    /// The old one encrypted its quota of messages.
    MessageCount,
    /// The old one was too old.
    Age,
    /// A device the old one was shared with may no longer read the channel.
    ReaderRemoved,
    /// The space's "share history" setting changed.
    HistorySettingChanged,
    /// The old one's pickle could not be opened.
    Unreadable,
}

/// One key to send over Olm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyShare {
    /// The device to send it to.
    pub to: DeviceAddr,
    /// A [`SpaceContent::SpaceRoomKey`].
    pub content: SpaceContent,
}

/// What to do before sending in a channel.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The outbound session to encrypt with: persist it before sending anything.
    pub outbound: MegolmOutboundRecord,
    /// For a new session, our own inbound copy (to read our own messages, and to answer key
    /// requests): persist it with `outbound`.
    pub own_inbound: Option<MegolmInboundRecord>,
    /// Keys to send over Olm, one message per device, before the channel message.
    pub shares: Vec<KeyShare>,
    /// Why a new session was made, if one was.
    pub rotated: Option<RotationReason>,
}

/// Why sending could not be prepared or encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MegolmError {
    /// A stored pickle could not be opened.
    #[error("a Megolm session pickle could not be opened")]
    Pickle,
    /// The payload is not valid (limits).
    #[error(transparent)]
    Payload(#[from] PeerError),
    /// The payload names another space or channel than the session.
    #[error("the payload is for another channel than the session")]
    WrongChannel,
    /// Not a content kind this call handles.
    #[error("unexpected content kind")]
    WrongKind,
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a content kind this call handles.
    #[error("unexpected content kind")]
    WrongKind,
    /// The owner's signature over the session announcement does not verify (or a room key
    /// came from a device other than the session's owner).
    #[error("the session is not signed by the device it claims")]
    BadAnnouncement,
    /// The owner's device certificate does not verify.
    #[error("the session owner's certificate is invalid")]
    BadCertificate,
    /// The key bytes are not a Megolm session key, or belong to another session.
    #[error("the session key is malformed or for another session")]
    BadKey,
    /// We already hold this session bound to another device.
    #[error("the session is already bound to another device")]
    SenderMismatch,
    /// The sender (owner or forwarder) may not read that channel.
    #[error("the sender may not read that channel")]
    NotAReader,
    /// A forwarded key nobody asked for.
    #[error("a forwarded key that was not requested")]
    Unrequested,
    /// A forwarded or bundled session that its owner did not mark as shareable with later
    /// members, sent by someone other than one of our own devices.
    #[error("the session was not shared for history")]
    NotShareable,
    /// The space or channel does not match.
    #[error("the key is for another space")]
    WrongSpace,
}

/// Why a channel message could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// We do not hold the session: keep the message waiting and ask for the key.
    #[error("waiting for keys: the session is unknown")]
    UnknownSession,
    /// We hold the session only from a later index: keep waiting and ask for an earlier key.
    #[error("waiting for keys: the session is known from index {first_known} only")]
    UnknownIndex {
        /// The first index we can decrypt.
        first_known: u32,
    },
    /// The message claims another sender than the session's owner.
    #[error("the message's sender does not own the session")]
    SenderMismatch,
    /// This (session, index) was decrypted before: a replay, dropped.
    #[error("replayed message")]
    Replay,
    /// The ciphertext is malformed, tampered with, or the signature does not verify.
    #[error("the message could not be decrypted")]
    Invalid,
    /// The plaintext is not a valid payload.
    #[error(transparent)]
    Payload(#[from] PeerError),
    /// The payload names another space, channel or sender than the session.
    #[error("the message names another channel or sender than its session")]
    WrongChannel,
}

/// A decrypted channel message.
#[derive(Debug, Clone)]
pub struct Decrypted<C> {
    /// The payload.
    pub payload: ChannelPayload<C>,
    /// Its index in the session.
    pub index: u32,
    /// What to persist with it (the replay mark).
    pub changes: Vec<Change>,
}

/// The channel encryption of one device.
pub struct ChannelCrypto {
    key: Zeroizing<[u8; 32]>,
    policy: RotationPolicy,
}

impl std::fmt::Debug for ChannelCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelCrypto")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn vz_config() -> SessionConfig {
    SessionConfig::version_1()
}

fn addr_of(cert: &DeviceCertificate) -> DeviceAddr {
    (cert.user_id, cert.device_id.clone())
}

fn verify_announcement(
    owner: &DeviceCertificate,
    space: &SpaceId,
    channel: &ChannelId,
    session_id: &str,
    shared_history: bool,
    announcement: &Signature,
) -> Result<(), KeyError> {
    let bytes = session_announcement_bytes(
        space,
        channel,
        session_id,
        &owner.user_id,
        &owner.device_id,
        shared_history,
    );
    owner
        .keys
        .ed25519
        .verify(&bytes, announcement)
        .map_err(|_| KeyError::BadAnnouncement)
}

impl ChannelCrypto {
    /// Channel encryption with the default rotation policy.
    pub fn new(pickle_key: &PickleKey) -> Self {
        Self::with_policy(pickle_key, RotationPolicy::default())
    }

    /// Channel encryption with another rotation policy (tests, benchmarks).
    pub fn with_policy(pickle_key: &PickleKey, policy: RotationPolicy) -> Self {
        Self {
            key: pickle_key.subkey(MEGOLM_PICKLE),
            policy,
        }
    }

    fn outbound_session(&self, record: &MegolmOutboundRecord) -> Result<GroupSession, MegolmError> {
        GroupSessionPickle::from_encrypted(record.pickle.as_str(), &self.key)
            .map(GroupSession::from_pickle)
            .map_err(|_| MegolmError::Pickle)
    }

    fn inbound_session(&self, record: &MegolmInboundRecord) -> Option<InboundGroupSession> {
        InboundGroupSessionPickle::from_encrypted(record.pickle.as_str(), &self.key)
            .map(InboundGroupSession::from_pickle)
            .ok()
    }

    fn pickle_inbound(&self, s: &InboundGroupSession) -> Pickle {
        Pickle::new(s.pickle().encrypt(&self.key))
    }

    fn why_rotate(
        &self,
        current: Option<&MegolmOutboundRecord>,
        audience: &BTreeSet<DeviceAddr>,
        share_history: bool,
        now: Timestamp,
    ) -> Option<RotationReason> {
        let Some(c) = current else {
            return Some(RotationReason::NoSession);
        };
        if self.outbound_session(c).is_err() {
            return Some(RotationReason::Unreadable);
        }
        if c.message_count >= self.policy.max_messages {
            return Some(RotationReason::MessageCount);
        }
        if now.millis_since(c.created_at) >= self.policy.max_age_ms {
            return Some(RotationReason::Age);
        }
        if c.shared_history != share_history {
            return Some(RotationReason::HistorySettingChanged);
        }
        if c.shared_with.iter().any(|d| !audience.contains(d)) {
            return Some(RotationReason::ReaderRemoved);
        }
        None
    }

    fn room_key(
        signer: &dyn SpaceSigner,
        space: SpaceId,
        channel: ChannelId,
        session: &GroupSession,
        shared_history: bool,
    ) -> (SpaceContent, Signature) {
        let me = signer.certificate();
        let session_id = session.session_id();
        let announcement = signer.sign(&session_announcement_bytes(
            &space,
            &channel,
            &session_id,
            &me.user_id,
            &me.device_id,
            shared_history,
        ));
        (
            SpaceContent::SpaceRoomKey {
                space,
                channel,
                session_id,
                session_key: Base64Bytes(session.session_key().to_bytes()),
                shared_history,
                announcement,
            },
            announcement,
        )
    }

    /// Before sending in `channel`: the session to use and the keys to send first.
    ///
    /// `audience` is every device that may read the channel now (the devices of
    /// [`SpaceState::audience`]); this device is skipped. `share_history` is the space's
    /// current setting.
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per input of the decision"
    )]
    pub fn prepare(
        &self,
        signer: &dyn SpaceSigner,
        space: SpaceId,
        channel: ChannelId,
        current: Option<&MegolmOutboundRecord>,
        audience: &[DeviceAddr],
        share_history: bool,
        now: Timestamp,
    ) -> Result<Prepared, MegolmError> {
        let me = addr_of(signer.certificate());
        let audience: BTreeSet<DeviceAddr> =
            audience.iter().filter(|d| **d != me).cloned().collect();
        let rotated = self.why_rotate(current, &audience, share_history, now);
        let (session, mut record, own_inbound) = match (rotated, current) {
            (None, Some(c)) => (self.outbound_session(c)?, c.clone(), None),
            _ => {
                let session = GroupSession::new(vz_config());
                let (_, announcement) =
                    Self::room_key(signer, space, channel, &session, share_history);
                let inbound = InboundGroupSession::new(&session.session_key(), vz_config());
                let cert_json =
                    serde_json::to_string(signer.certificate()).map_err(|_| MegolmError::Pickle)?;
                let own = MegolmInboundRecord {
                    space,
                    channel,
                    session_id: session.session_id(),
                    sender_user: me.0,
                    sender_device: me.1.clone(),
                    sender_certificate_json: cert_json,
                    announcement,
                    shared_history: share_history,
                    forwarded: false,
                    first_index: inbound.first_known_index(),
                    pickle: self.pickle_inbound(&inbound),
                    created_at: now,
                };
                let record = MegolmOutboundRecord {
                    space,
                    channel,
                    session_id: session.session_id(),
                    pickle: Pickle::new(session.pickle().encrypt(&self.key)),
                    created_at: now,
                    message_count: 0,
                    shared_history: share_history,
                    shared_with: Vec::new(),
                };
                (session, record, Some(own))
            }
        };
        let already: BTreeSet<DeviceAddr> = record.shared_with.iter().cloned().collect();
        let new: Vec<DeviceAddr> = audience.difference(&already).cloned().collect();
        let mut shares = Vec::with_capacity(new.len());
        if !new.is_empty() {
            let (content, _) =
                Self::room_key(signer, space, channel, &session, record.shared_history);
            for to in &new {
                shares.push(KeyShare {
                    to: to.clone(),
                    content: content.clone(),
                });
            }
            let mut all: BTreeSet<DeviceAddr> = already;
            all.extend(new);
            record.shared_with = all.into_iter().collect();
        }
        Ok(Prepared {
            outbound: record,
            own_inbound,
            shares,
            rotated,
        })
    }

    /// Encrypts `payload` with the outbound session. Returns the message and the advanced
    /// session: persist the session before sending the message.
    pub fn encrypt<C: ChannelContent>(
        &self,
        outbound: &MegolmOutboundRecord,
        payload: &ChannelPayload<C>,
    ) -> Result<(ChannelMessage, MegolmOutboundRecord), MegolmError> {
        if payload.space != outbound.space || payload.channel != outbound.channel {
            return Err(MegolmError::WrongChannel);
        }
        let plaintext = payload.to_json()?;
        let mut session = self.outbound_session(outbound)?;
        let message = session.encrypt(&plaintext);
        let mut record = outbound.clone();
        record.pickle = Pickle::new(session.pickle().encrypt(&self.key));
        record.message_count = record.message_count.saturating_add(1);
        let wire = ChannelMessage {
            version: CHANNEL_MESSAGE_VERSION,
            sender: payload.sender.clone(),
            session_id: outbound.session_id.clone(),
            ciphertext: Base64Bytes(message.to_bytes()),
        };
        wire.validate()?;
        Ok((wire, record))
    }

    /// The message index of a channel message, read before decrypting (to drop a replay or
    /// keep a message waiting without the key).
    pub fn message_index(message: &ChannelMessage) -> Result<u32, DecryptError> {
        MegolmMessage::from_bytes(&message.ciphertext.0)
            .map(|m| m.message_index())
            .map_err(|_| DecryptError::Invalid)
    }

    fn better_than_existing(
        existing: Option<&MegolmInboundRecord>,
        owner: &DeviceAddr,
        first_index: u32,
    ) -> Result<bool, KeyError> {
        match existing {
            Some(e) if (e.sender_user, e.sender_device.clone()) != *owner => {
                Err(KeyError::SenderMismatch)
            }
            Some(e) => Ok(first_index < e.first_index),
            None => Ok(true),
        }
    }

    /// A room key that arrived over Olm from `from` (the Olm-authenticated sending device).
    /// Accepted only if `from` owns the session (its device key signed the announcement) and
    /// may read the channel in `state`. `Ok(None)` when the key adds nothing to `existing`.
    pub fn accept_room_key(
        &self,
        state: &SpaceState,
        from: &DeviceCertificate,
        content: &SpaceContent,
        existing: Option<&MegolmInboundRecord>,
        now: Timestamp,
    ) -> Result<Option<MegolmInboundRecord>, KeyError> {
        let SpaceContent::SpaceRoomKey {
            space,
            channel,
            session_id,
            session_key,
            shared_history,
            announcement,
        } = content
        else {
            return Err(KeyError::WrongKind);
        };
        if space != state.id() {
            return Err(KeyError::WrongSpace);
        }
        from.verify(&from.user_id)
            .map_err(|_| KeyError::BadCertificate)?;
        verify_announcement(
            from,
            space,
            channel,
            session_id,
            *shared_history,
            announcement,
        )?;
        if !state
            .permissions(&from.user_id, channel)
            .contains(Permissions::VIEW_CHANNEL)
        {
            return Err(KeyError::NotAReader);
        }
        let key = SessionKey::from_bytes(&session_key.0).map_err(|_| KeyError::BadKey)?;
        let session = InboundGroupSession::new(&key, vz_config());
        if session.session_id() != *session_id {
            return Err(KeyError::BadKey);
        }
        let first_index = session.first_known_index();
        if !Self::better_than_existing(existing, &addr_of(from), first_index)? {
            return Ok(None);
        }
        Ok(Some(MegolmInboundRecord {
            space: *space,
            channel: *channel,
            session_id: session_id.clone(),
            sender_user: from.user_id,
            sender_device: from.device_id.clone(),
            sender_certificate_json: serde_json::to_string(from)
                .map_err(|_| KeyError::BadCertificate)?,
            announcement: *announcement,
            shared_history: *shared_history,
            forwarded: false,
            first_index,
            pickle: self.pickle_inbound(&session),
            created_at: now,
        }))
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of a forwarded session"
    )]
    fn import(
        &self,
        state: &SpaceState,
        space: &SpaceId,
        channel: &ChannelId,
        session_id: &str,
        owner: &DeviceCertificate,
        announcement: &Signature,
        shared_history: bool,
        key: &[u8],
        existing: Option<&MegolmInboundRecord>,
        now: Timestamp,
    ) -> Result<Option<MegolmInboundRecord>, KeyError> {
        if space != state.id() {
            return Err(KeyError::WrongSpace);
        }
        owner
            .verify(&owner.user_id)
            .map_err(|_| KeyError::BadCertificate)?;
        verify_announcement(
            owner,
            space,
            channel,
            session_id,
            shared_history,
            announcement,
        )?;
        let key = ExportedSessionKey::from_bytes(key).map_err(|_| KeyError::BadKey)?;
        let session = InboundGroupSession::import(&key, vz_config());
        if session.session_id() != session_id {
            return Err(KeyError::BadKey);
        }
        let first_index = session.first_known_index();
        if !Self::better_than_existing(existing, &addr_of(owner), first_index)? {
            return Ok(None);
        }
        Ok(Some(MegolmInboundRecord {
            space: *space,
            channel: *channel,
            session_id: session_id.to_owned(),
            sender_user: owner.user_id,
            sender_device: owner.device_id.clone(),
            sender_certificate_json: serde_json::to_string(owner)
                .map_err(|_| KeyError::BadCertificate)?,
            announcement: *announcement,
            shared_history,
            forwarded: true,
            first_index,
            pickle: self.pickle_inbound(&session),
            created_at: now,
        }))
    }

    /// A forwarded key (the answer to our key request) from `from`. Accepted only if we asked
    /// (`requested`), the owner's certified device signed the session, and `from` may read the
    /// channel. Sessions the owner did not mark as shareable are accepted only from our own
    /// devices (`me`).
    #[allow(clippy::too_many_arguments, reason = "one argument per check")]
    pub fn accept_forwarded_key(
        &self,
        state: &SpaceState,
        me: &UserId,
        from: &PeerAddress,
        content: &SpaceContent,
        requested: bool,
        existing: Option<&MegolmInboundRecord>,
        now: Timestamp,
    ) -> Result<Option<MegolmInboundRecord>, KeyError> {
        let SpaceContent::SpaceForwardedKey {
            space,
            channel,
            session_id,
            owner,
            announcement,
            shared_history,
            session_key,
            ..
        } = content
        else {
            return Err(KeyError::WrongKind);
        };
        if !requested {
            return Err(KeyError::Unrequested);
        }
        if !state
            .permissions(&from.user, channel)
            .contains(Permissions::VIEW_CHANNEL)
        {
            return Err(KeyError::NotAReader);
        }
        let from_owner = from.user == owner.user_id && from.device == owner.device_id;
        if !shared_history && !from_owner && from.user != *me {
            return Err(KeyError::NotShareable);
        }
        self.import(
            state,
            space,
            channel,
            session_id,
            owner,
            announcement,
            *shared_history,
            &session_key.0,
            existing,
            now,
        )
    }

    /// A history bundle part from `from` (the member who admitted us). Each session is checked
    /// on its own; `existing` looks up what we already hold. Returns one result per session.
    pub fn accept_history_bundle(
        &self,
        state: &SpaceState,
        from: &PeerAddress,
        content: &SpaceContent,
        existing: &dyn Fn(&str) -> Option<MegolmInboundRecord>,
        now: Timestamp,
    ) -> Result<Vec<Result<Option<MegolmInboundRecord>, KeyError>>, KeyError> {
        let SpaceContent::SpaceHistoryBundle {
            space, sessions, ..
        } = content
        else {
            return Err(KeyError::WrongKind);
        };
        if space != state.id() {
            return Err(KeyError::WrongSpace);
        }
        Ok(sessions
            .iter()
            .map(|s| {
                if !state
                    .permissions(&from.user, &s.channel)
                    .contains(Permissions::VIEW_CHANNEL)
                {
                    return Err(KeyError::NotAReader);
                }
                self.import(
                    state,
                    space,
                    &s.channel,
                    &s.session_id,
                    &s.owner,
                    &s.announcement,
                    true,
                    &s.session_key.0,
                    existing(&s.session_id).as_ref(),
                    now,
                )
            })
            .collect())
    }

    /// Decrypts a channel message with the session it names. `seen` says whether a (session,
    /// index) was decrypted before (the store's `megolm_seen`).
    pub fn decrypt<C: ChannelContent>(
        &self,
        inbound: Option<&MegolmInboundRecord>,
        message: &ChannelMessage,
        seen: &dyn Fn(&str, u32) -> bool,
        now: Timestamp,
    ) -> Result<Decrypted<C>, DecryptError> {
        let inbound = inbound
            .filter(|i| i.session_id == message.session_id)
            .ok_or(DecryptError::UnknownSession)?;
        if message.sender.user != inbound.sender_user
            || message.sender.device != inbound.sender_device
        {
            return Err(DecryptError::SenderMismatch);
        }
        let m =
            MegolmMessage::from_bytes(&message.ciphertext.0).map_err(|_| DecryptError::Invalid)?;
        let index = m.message_index();
        if seen(&inbound.session_id, index) {
            return Err(DecryptError::Replay);
        }
        if index < inbound.first_index {
            return Err(DecryptError::UnknownIndex {
                first_known: inbound.first_index,
            });
        }
        let mut session = self.inbound_session(inbound).ok_or(DecryptError::Invalid)?;
        let plain = session.decrypt(&m).map_err(|e| match e {
            vodozemac::megolm::DecryptionError::UnknownMessageIndex(first, _) => {
                DecryptError::UnknownIndex { first_known: first }
            }
            _ => DecryptError::Invalid,
        })?;
        let payload = ChannelPayload::<C>::from_json(&plain.plaintext)?;
        if payload.space != inbound.space
            || payload.channel != inbound.channel
            || payload.sender != message.sender
        {
            return Err(DecryptError::WrongChannel);
        }
        Ok(Decrypted {
            payload,
            index,
            changes: vec![Change::MarkMegolmSeen {
                session_id: inbound.session_id.clone(),
                index,
                at: now,
            }],
        })
    }

    fn export(&self, inbound: &MegolmInboundRecord, from_index: u32) -> Option<Vec<u8>> {
        let mut s = self.inbound_session(inbound)?;
        let at = from_index.max(s.first_known_index());
        s.export_at(at).map(|k| k.to_bytes())
    }

    /// Answers a key request from `requester` (an Olm-authenticated device). The requester
    /// must be a member who may read the channel now. The session's owner answers a device it
    /// shared the current session with, and anyone when the session is shared for history;
    /// another holder answers the requester's own other devices (`me` is our user) and, when
    /// shared for history, anyone. Everything else gets a withheld code.
    pub fn answer_key_request(
        &self,
        state: &SpaceState,
        me: &UserId,
        requester: &PeerAddress,
        request: &SpaceContent,
        inbound: Option<&MegolmInboundRecord>,
        outbound: Option<&MegolmOutboundRecord>,
    ) -> Result<SpaceContent, MegolmError> {
        let SpaceContent::SpaceKeyRequest {
            space,
            channel,
            session_id,
            from_index,
            request,
            ..
        } = request
        else {
            return Err(MegolmError::WrongKind);
        };
        let withheld = |code| SpaceContent::SpaceKeyWithheld {
            space: *space,
            session_id: session_id.clone(),
            request: request.clone(),
            code,
        };
        if space != state.id()
            || !state
                .permissions(&requester.user, channel)
                .contains(Permissions::VIEW_CHANNEL)
        {
            return Ok(withheld(WithheldCode::Unauthorized));
        }
        let Some(inbound) = inbound
            .filter(|i| i.session_id == *session_id && i.space == *space && i.channel == *channel)
        else {
            return Ok(withheld(WithheldCode::Unavailable));
        };
        let owned = inbound.sender_user == *me && !inbound.forwarded;
        let shared_to_requester = outbound.is_some_and(|o| {
            o.session_id == *session_id
                && o.shared_with
                    .iter()
                    .any(|(u, d)| *u == requester.user && *d == requester.device)
        });
        let allowed =
            inbound.shared_history || requester.user == *me || (owned && shared_to_requester);
        if !allowed {
            return Ok(withheld(WithheldCode::HistoryNotShared));
        }
        let Some(key) = self.export(inbound, *from_index) else {
            return Ok(withheld(WithheldCode::Unavailable));
        };
        let Ok(owner) = serde_json::from_str::<DeviceCertificate>(&inbound.sender_certificate_json)
        else {
            return Ok(withheld(WithheldCode::Unavailable));
        };
        Ok(SpaceContent::SpaceForwardedKey {
            space: *space,
            channel: *channel,
            session_id: session_id.clone(),
            owner,
            announcement: inbound.announcement,
            shared_history: inbound.shared_history,
            session_key: Base64Bytes(key),
            request: request.clone(),
        })
    }

    /// History key bundles for `member`, who just joined: every session in `sessions` that its
    /// owner shared for history and whose channel `member` may read, from its first known
    /// index, in parts of at most [`MAX_HISTORY_SESSIONS`].
    pub fn history_bundles(
        &self,
        state: &SpaceState,
        member: &UserId,
        sessions: &[MegolmInboundRecord],
    ) -> Vec<SpaceContent> {
        let items: Vec<HistorySession> = sessions
            .iter()
            .filter(|s| {
                s.shared_history
                    && s.space == *state.id()
                    && state
                        .permissions(member, &s.channel)
                        .contains(Permissions::VIEW_CHANNEL)
            })
            .filter_map(|s| {
                let owner = serde_json::from_str(&s.sender_certificate_json).ok()?;
                let key = self.export(s, s.first_index)?;
                Some(HistorySession {
                    channel: s.channel,
                    session_id: s.session_id.clone(),
                    owner,
                    announcement: s.announcement,
                    session_key: Base64Bytes(key),
                })
            })
            .collect();
        let parts = items.len().div_ceil(MAX_HISTORY_SESSIONS);
        items
            .chunks(MAX_HISTORY_SESSIONS)
            .enumerate()
            .map(|(i, chunk)| SpaceContent::SpaceHistoryBundle {
                space: *state.id(),
                part: u32::try_from(i).unwrap_or(u32::MAX),
                parts: u32::try_from(parts).unwrap_or(u32::MAX),
                sessions: chunk.to_vec(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
