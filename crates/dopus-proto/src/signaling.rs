//! The frames between a client and the signaling server (docs/signaling.md is the full spec).
//!
//! Every frame is one WebSocket text message holding one JSON object with a `"type"` field.
//! The server parses only the envelope; every `payload` is an opaque string it never looks
//! into.
//!
//! Protocol flow:
//! - the client opens `GET /ws?v=1` (the versions it speaks, comma-separated);
//! - the server sends [`ServerFrame::Challenge`] naming the chosen version, its server id, 32
//!   random bytes and an expiry;
//! - the client answers [`ClientFrame::Auth`], signing [`auth_signing_bytes`] with its identity
//!   key; the server answers [`ServerFrame::AuthSuccess`] or [`ServerFrame::AuthFailure`] (and
//!   closes);
//! - afterwards the client sends requests carrying a client-chosen `id`; each gets exactly one
//!   answer with the same `id` ([`ServerFrame::Ok`], [`ServerFrame::Error`] or a specific
//!   result), while the server pushes [`ServerFrame::Deliver`], [`ServerFrame::PresenceUpdate`]
//!   and [`ServerFrame::OneTimeKeysLow`] at any time;
//! - mailbox deliveries carry a `mailbox_id` that the client acknowledges with
//!   [`ClientFrame::Ack`] once it has stored them.

use crate::bundle::{ClaimedBundle, DeviceBundle};
use crate::canonical::{self, signing_bytes};
use dopus_types::{DeviceId, Signature, Timestamp, UserId, b64_decode, b64_encode};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The newest protocol version this build speaks.
///
/// Version 2 is version 1 plus [`ServerFrame::AuthSuccess`]'s `ice_servers` (TURN credentials
/// handed out at login); a server sends that field only on connections that negotiated 2.
/// Version 3 is version 2 plus the login option `quiet_relays` (see [`ClientFrame::Auth`]): a
/// relay every target device got live is not answered.
pub const PROTOCOL_VERSION: u32 = 3;
/// Every version this build can speak, oldest first.
pub const SUPPORTED_VERSIONS: &[u32] = &[1, 2, 3];
/// The first version whose `auth_success` carries `ice_servers`.
pub const ICE_SERVERS_VERSION: u32 = 2;
/// The first version in which a client may ask for quiet relays at login.
pub const QUIET_RELAYS_VERSION: u32 = 3;
/// The HTTP path of the WebSocket endpoint.
pub const WS_PATH: &str = "/ws";
/// The query parameter that lists the versions a client offers (`?v=1,2`).
pub const VERSION_PARAM: &str = "v";
/// Length of a login challenge in bytes.
pub const CHALLENGE_LEN: usize = 32;

/// A client-chosen request id; the answer to the request carries the same value.
pub type RequestId = u64;

/// The byte string a client signs with its identity key to log in.
///
/// Binding the server id stops a login proof made for one server from being used at another;
/// binding the device id stops a relay from logging in under another device of the same user.
pub fn auth_signing_bytes(
    server_id: &str,
    challenge: &[u8; CHALLENGE_LEN],
    device: &DeviceId,
) -> Vec<u8> {
    signing_bytes(
        canonical::SIGNALING_AUTH,
        &[server_id.as_bytes(), challenge, device.as_str().as_bytes()],
    )
}

/// How many user ids one `sync_contacts` frame can carry within `max_frame_bytes`: a user id
/// takes 67 bytes in the list (64 characters, two quotes, a comma) and the rest of the frame
/// at most 128. Clients split longer lists into parts (see [`ClientFrame::SyncContacts`]).
pub fn contacts_per_frame(max_frame_bytes: u64) -> usize {
    usize::try_from(max_frame_bytes.saturating_sub(128) / 67)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Picks the highest version both sides speak from the `v` query value (`"1,2"`).
///
/// A missing or empty offer means version 1, so the simplest client needs no query at all.
pub fn negotiate_version(offer: Option<&str>) -> Option<u32> {
    let offer = offer.map(str::trim).unwrap_or("");
    if offer.is_empty() {
        return SUPPORTED_VERSIONS.contains(&1).then_some(1);
    }
    offer
        .split(',')
        .filter_map(|v| v.trim().parse::<u32>().ok())
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .max()
}

/// The 32 random bytes of a login challenge, as base64 on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub [u8; CHALLENGE_LEN]);

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", b64_encode(&self.0))
    }
}

impl Serialize for Nonce {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b64_encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Nonce {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = b64_decode(&text).map_err(serde::de::Error::custom)?;
        let array = <[u8; CHALLENGE_LEN]>::try_from(bytes.as_slice())
            .map_err(|_| serde::de::Error::custom("a challenge is 32 bytes"))?;
        Ok(Self(array))
    }
}

/// A presence status. Clients may set any of them; others only ever see `online`, `away`,
/// `busy` or `offline` (an `invisible` user looks `offline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Connected and available.
    Online,
    /// Connected but idle.
    Away,
    /// Connected, do not disturb.
    Busy,
    /// Connected but shown as offline to everyone.
    Invisible,
    /// Not connected, or said goodbye.
    Offline,
}

impl Status {
    /// How present a status is; a user with several devices shows the most present one.
    pub fn rank(self) -> u8 {
        match self {
            Status::Online => 4,
            Status::Busy => 3,
            Status::Away => 2,
            Status::Invisible => 1,
            Status::Offline => 0,
        }
    }

    /// What contacts are shown: `invisible` becomes `offline`.
    pub fn as_seen_by_others(self) -> Status {
        match self {
            Status::Invisible => Status::Offline,
            other => other,
        }
    }

    /// The most present of several device statuses (`offline` when there are none).
    pub fn most_present(statuses: impl IntoIterator<Item = Status>) -> Status {
        statuses
            .into_iter()
            .max_by_key(|s| s.rank())
            .unwrap_or(Status::Offline)
    }

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Busy => "busy",
            Status::Invisible => "invisible",
            Status::Offline => "offline",
        }
    }

    /// Parses the wire name.
    pub fn from_name(name: &str) -> Option<Status> {
        Some(match name {
            "online" => Status::Online,
            "away" => Status::Away,
            "busy" => Status::Busy,
            "invisible" => Status::Invisible,
            "offline" => Status::Offline,
            _ => return None,
        })
    }
}

/// Who sent a delivered frame, as authenticated by the server at login.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sender {
    /// The sender's user ID (its identity key).
    #[serde(serialize_with = "user_cache::serialize")]
    pub user: UserId,
    /// The sender's device.
    pub device: DeviceId,
}

/// What kind of frame a [`ServerFrame::Deliver`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// An opaque relay payload.
    ///
    /// The only kind: contact requests travel end-to-end encrypted inside relay payloads. The
    /// `kind` field stays on the wire so clients written against earlier drafts of version 1
    /// keep parsing `deliver` frames.
    Relay,
}

impl DeliveryKind {
    /// The snake_case name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Relay => "relay",
        }
    }

    /// Parses the wire name.
    pub fn from_name(name: &str) -> Option<DeliveryKind> {
        Some(match name {
            "relay" => DeliveryKind::Relay,
            _ => return None,
        })
    }
}

/// Stable error codes. Clients branch on these, never on the message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, no string `type`, or a known type with missing or mistyped fields.
    MalformedFrame,
    /// A `type` this server does not know.
    UnknownType,
    /// The frame is longer than `max_frame_bytes`.
    FrameTooLarge,
    /// A `payload` is longer than `max_payload_bytes`.
    PayloadTooLarge,
    /// A frame other than `auth` before login succeeded.
    NotAuthenticated,
    /// A second `auth` on a logged-in connection.
    AlreadyAuthenticated,
    /// None of the offered protocol versions is supported.
    UnsupportedVersion,
    /// The login signature does not verify under the claimed user ID.
    BadSignature,
    /// The login names a challenge this connection was not given, or one already used.
    BadChallenge,
    /// The challenge expired before the login arrived.
    ChallengeExpired,
    /// Too many frames; the frame was dropped.
    RateLimited,
    /// A published bundle failed verification or names another user.
    InvalidBundle,
    /// The recipient has no device this server knows of, so nothing could be queued.
    UnknownRecipient,
    /// `to_device` names a device the recipient does not have.
    UnknownDevice,
    /// No device of the recipient is online and the frame was not storable.
    RecipientOffline,
    /// The recipient device's connection is not keeping up; try again later.
    RecipientBusy,
    /// The recipient device's mailbox is at its item or byte quota.
    MailboxFull,
    /// A contact list longer than `max_contacts`.
    TooManyContacts,
    /// The user already has `max_devices_per_user` devices; this login is refused.
    TooManyDevices,
    /// An `ack` names more ids than one frame may carry.
    TooManyIds,
    /// The user has no published bundle.
    NoBundle,
    /// Too many connections (per address or in total).
    TooManyConnections,
    /// The same device logged in again elsewhere; this connection is closed.
    SessionReplaced,
    /// The server is shutting down.
    ShuttingDown,
    /// A storage or cluster failure on the server; the request may be retried.
    InternalError,
}

impl ErrorCode {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::BadChallenge => "bad_challenge",
            ErrorCode::ChallengeExpired => "challenge_expired",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidBundle => "invalid_bundle",
            ErrorCode::UnknownRecipient => "unknown_recipient",
            ErrorCode::UnknownDevice => "unknown_device",
            ErrorCode::RecipientOffline => "recipient_offline",
            ErrorCode::RecipientBusy => "recipient_busy",
            ErrorCode::MailboxFull => "mailbox_full",
            ErrorCode::TooManyContacts => "too_many_contacts",
            ErrorCode::TooManyDevices => "too_many_devices",
            ErrorCode::TooManyIds => "too_many_ids",
            ErrorCode::NoBundle => "no_bundle",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::SessionReplaced => "session_replaced",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::InternalError => "internal_error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One device a relay could not reach, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The recipient device.
    pub device: DeviceId,
    /// Why it got nothing: `mailbox_full`, `recipient_busy`, `recipient_offline` or
    /// `internal_error`.
    pub code: ErrorCode,
}

/// One contact's visible status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// The contact.
    pub user: UserId,
    /// What that contact looks like to the requester.
    pub status: Status,
}

/// A relay (or STUN) server a client may use, with time-limited credentials (the TURN REST
/// scheme: `username` is `"<unix expiry>:<opaque id>"`, `credential` is
/// base64(HMAC-SHA1(shared secret, username)), so an external coturn with the same secret
/// accepts them too). The opaque id is random per login, never the user id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServerInfo {
    /// `turn:host:port?transport=udp`, `turn:…?transport=tcp`, `turns:host:5349?transport=tcp`,
    /// `stun:…`.
    pub urls: Vec<String>,
    /// The TURN user name (absent for STUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The TURN password (absent for STUN). Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Seconds the credentials stay valid from `server_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

impl fmt::Debug for IceServerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServerInfo")
            .field("urls", &self.urls)
            .field("username", &self.username.as_ref().map(|_| "<redacted>"))
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

/// The limits a server enforces, announced at login so clients can stay inside them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest accepted text frame, in bytes.
    pub max_frame_bytes: u64,
    /// Longest `payload`, in bytes.
    pub max_payload_bytes: u64,
    /// Most entries in one `sync_contacts`.
    pub max_contacts: u64,
    /// Most ids in one `ack`.
    pub max_ack_ids: u64,
    /// Frames per second a connection may send on average.
    pub rate_per_sec: u64,
    /// Frames a connection may send in a burst above the average.
    pub rate_burst: u64,
    /// Most items waiting in one device's mailbox.
    pub mailbox_max_items: u64,
    /// Most payload bytes waiting in one device's mailbox.
    pub mailbox_max_bytes: u64,
    /// How long a mailbox item waits for its ack before the server deletes it, in seconds.
    pub mailbox_ttl_secs: u64,
    /// A device is told `one_time_keys_low` when fewer one-time keys than this are left.
    pub one_time_keys_low_threshold: u64,
    /// Percent of a device's mailbox quota (items and bytes) one sender may fill when sender
    /// and recipient list each other as contacts (or are the same user).
    #[serde(default)]
    pub mailbox_contact_share_percent: u64,
    /// Percent of a device's mailbox quota any other sender may fill.
    #[serde(default)]
    pub mailbox_stranger_share_percent: u64,
    /// Most devices the server keeps for one user; a login of a further device is refused
    /// with `too_many_devices`.
    #[serde(default)]
    pub max_devices_per_user: u64,
}

/// Frames a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// The login proof; the only frame accepted before login.
    Auth {
        /// Who logs in: the identity key whose signature follows.
        user_id: UserId,
        /// Which of the user's devices this connection is.
        device_id: DeviceId,
        /// The challenge from this connection's [`ServerFrame::Challenge`], echoed.
        challenge: Nonce,
        /// Identity key signature over [`auth_signing_bytes`].
        signature: Signature,
        /// Protocol 3: do not answer a `relay` that every target device got on its live
        /// connection (nothing queued, nothing refused). Every other request is still answered,
        /// in order, so the answer to any later request confirms the unanswered relays before
        /// it. Absent (the default, and always on versions 1 and 2): every relay is answered.
        /// Not covered by the signature: it changes only what the server writes back to this
        /// connection.
        #[serde(default, skip_serializing_if = "is_false")]
        quiet_relays: bool,
    },
    /// Stores this device's bundle in the key directory (one-time keys are appended; the
    /// fallback key and certificate replace the old ones).
    PublishBundle {
        /// Request id.
        id: RequestId,
        /// The signed bundle; its certificate must name the logged-in user and device.
        bundle: Box<DeviceBundle>,
    },
    /// Asks for one claimed bundle per device of `user`.
    FetchBundle {
        /// Request id.
        id: RequestId,
        /// Whose bundles.
        #[serde(deserialize_with = "user_cache::deserialize")]
        user: UserId,
    },
    /// Forwards an opaque payload to the recipient's devices.
    Relay {
        /// Request id.
        id: RequestId,
        /// The recipient.
        #[serde(deserialize_with = "user_cache::deserialize")]
        to: UserId,
        /// Only this device of the recipient (all devices when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_device: Option<DeviceId>,
        /// Opaque to the server.
        payload: String,
        /// Queue it in the mailbox of each offline device (default `false`: live only).
        #[serde(default, skip_serializing_if = "is_false")]
        store: bool,
    },
    /// Sets this device's status.
    SetStatus {
        /// Request id.
        id: RequestId,
        /// The new status.
        status: Status,
    },
    /// Replaces the user's contact list (presence between mutual contacts, mailbox shares).
    ///
    /// A list too long for one frame is sent in parts: every part but the last says
    /// `more: true`; the server replaces the list when the last part arrives, so contacts never
    /// see a half-synced list.
    SyncContacts {
        /// Request id.
        id: RequestId,
        /// The contacts in this part.
        #[serde(deserialize_with = "user_cache::deserialize_vec")]
        contacts: Vec<UserId>,
        /// More parts of the same list follow (absent: this is the last or only part).
        #[serde(default, skip_serializing_if = "is_false")]
        more: bool,
    },
    /// Confirms mailbox items are stored by the client; the server deletes them.
    Ack {
        /// Request id.
        id: RequestId,
        /// `mailbox_id`s of delivered items.
        ids: Vec<u64>,
    },
    /// Application-level keepalive for clients that cannot see WebSocket pings.
    Ping {
        /// Request id.
        id: RequestId,
    },
}

/// Memoized user-id conversions for the per-frame hot path.
///
/// Parsing a user id validates its key, which decompresses an Edwards point (a field
/// exponentiation, about 10 µs); printing one runs bech32 (about 1 µs). A relay names its
/// recipient and every delivery names its sender, so a busy server would spend a quarter of its
/// time on the same few thousand ids. A small per-thread cache keeps the exact same checks for
/// every id it has not seen and skips them for ids it has: results are identical.
mod user_cache {
    use dopus_types::UserId;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::cell::RefCell;
    use std::collections::HashMap;

    const CAPACITY: usize = 4096;

    thread_local! {
        static PARSED: RefCell<HashMap<String, UserId>> = RefCell::new(HashMap::new());
        static PRINTED: RefCell<HashMap<[u8; 32], String>> = RefCell::new(HashMap::new());
    }

    pub(super) fn parse(text: &str) -> Result<UserId, dopus_types::UserIdError> {
        if let Some(hit) = PARSED.with(|c| c.borrow().get(text).copied()) {
            return Ok(hit);
        }
        let user = UserId::parse(text)?;
        PARSED.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= CAPACITY {
                c.clear();
            }
            c.insert(text.to_owned(), user);
        });
        Ok(user)
    }

    pub(super) fn print(user: &UserId) -> String {
        let key = user.key().to_bytes();
        if let Some(hit) = PRINTED.with(|c| c.borrow().get(&key).cloned()) {
            return hit;
        }
        let text = user.to_bech32();
        PRINTED.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= CAPACITY {
                c.clear();
            }
            c.insert(key, text.clone());
        });
        text
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UserId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub(super) fn deserialize_vec<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<UserId>, D::Error> {
        let texts = <Vec<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        texts
            .iter()
            .map(|t| parse(t).map_err(serde::de::Error::custom))
            .collect()
    }

    pub(super) fn serialize<S: Serializer>(user: &UserId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&print(user))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Frames the server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame on every connection.
    Challenge {
        /// The protocol version chosen from the client's offer.
        version: u32,
        /// This server's id (signed into the login proof).
        server_id: String,
        /// 32 random bytes, valid once, on this connection only.
        challenge: Nonce,
        /// After this time (ms since the epoch, server clock) the challenge is refused.
        expires_at: Timestamp,
    },
    /// Login succeeded.
    AuthSuccess {
        /// The logged-in user.
        user_id: UserId,
        /// The logged-in device.
        device_id: DeviceId,
        /// The server's clock, ms since the epoch.
        server_time: Timestamp,
        /// The server sends a WebSocket ping this often, in ms.
        ping_interval_ms: u64,
        /// The server closes a connection that has sent nothing for this long after a ping, in ms.
        ping_timeout_ms: u64,
        /// The limits in force.
        limits: Limits,
        /// Mailbox items waiting for this device; they follow as `deliver` frames.
        mailbox_pending: u64,
        /// STUN/TURN servers with time-limited credentials for this login (version 2; absent
        /// in version 1 and when the server offers no relay).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServerInfo>,
    },
    /// Login failed; the server closes the connection after this frame.
    AuthFailure {
        /// Why.
        code: ErrorCode,
        /// A human-readable explanation (never needed to act).
        message: String,
    },
    /// A request succeeded and has nothing to return.
    Ok {
        /// The request's id.
        id: RequestId,
    },
    /// A request or frame failed.
    Error {
        /// The request's id, when the frame had a readable one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Why.
        code: ErrorCode,
        /// A human-readable explanation (never needed to act).
        message: String,
    },
    /// Answer to `publish_bundle`.
    BundlePublished {
        /// The request's id.
        id: RequestId,
        /// One-time keys now stored for this device.
        one_time_keys: u64,
    },
    /// Answer to `fetch_bundle`: one claimed bundle per device of the user.
    Bundles {
        /// The request's id.
        id: RequestId,
        /// Whose bundles.
        user: UserId,
        /// One per device; each one-time key in here was handed to nobody else.
        bundles: Vec<ClaimedBundle>,
    },
    /// Answer to `relay` and the contact frames when at least one device was reached.
    RelayResult {
        /// The request's id.
        id: RequestId,
        /// Devices that received it live.
        delivered: Vec<DeviceId>,
        /// Devices that will get it from their mailbox.
        queued: Vec<DeviceId>,
        /// Devices that got nothing, with the reason.
        #[serde(default)]
        refused: Vec<Refusal>,
    },
    /// Answer to `sync_contacts`: the status of every mutual contact.
    ContactsSynced {
        /// The request's id.
        id: RequestId,
        /// Contacts that list the user back, with their visible status.
        presence: Vec<PresenceEntry>,
    },
    /// A frame from another user, live or from the mailbox.
    Deliver {
        /// What it is.
        kind: DeliveryKind,
        /// The authenticated sender.
        from: Sender,
        /// The opaque payload, exactly as sent.
        payload: String,
        /// When the server accepted it (ms since the epoch).
        sent_at: Timestamp,
        /// Present on mailbox items: acknowledge it with `ack` once stored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mailbox_id: Option<u64>,
    },
    /// A mutual contact's visible status changed.
    PresenceUpdate {
        /// The contact.
        #[serde(serialize_with = "user_cache::serialize")]
        user: UserId,
        /// What it looks like now.
        status: Status,
    },
    /// This device's one-time keys are running low; publish more.
    OneTimeKeysLow {
        /// Keys left.
        remaining: u64,
        /// The threshold that triggered this notice.
        threshold: u64,
    },
    /// Answer to `ping`.
    Pong {
        /// The request's id.
        id: RequestId,
    },
}

/// Why a text frame could not be read as a [`ClientFrame`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FrameError {
    /// The stable code to answer with.
    pub code: ErrorCode,
    /// The request id, when one could be read.
    pub id: Option<RequestId>,
    /// What was wrong (names fields, never echoes content).
    pub message: String,
}

const CLIENT_TYPES: &[&str] = &[
    "auth",
    "publish_bundle",
    "fetch_bundle",
    "relay",
    "set_status",
    "sync_contacts",
    "ack",
    "ping",
];

impl ClientFrame {
    /// Parses one text frame, telling malformed frames from unknown types.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => Ok(frame),
            Err(err) => Err(classify(text, &err)),
        }
    }

    /// The request id, for frames that have one.
    pub fn id(&self) -> Option<RequestId> {
        match self {
            ClientFrame::Auth { .. } => None,
            ClientFrame::PublishBundle { id, .. }
            | ClientFrame::FetchBundle { id, .. }
            | ClientFrame::Relay { id, .. }
            | ClientFrame::SetStatus { id, .. }
            | ClientFrame::SyncContacts { id, .. }
            | ClientFrame::Ack { id, .. }
            | ClientFrame::Ping { id } => Some(*id),
        }
    }

    /// The frame as one JSON text.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// A `relay` frame read in place: the server's hot path, which never copies or re-escapes the
/// payload.
///
/// [`ClientFrame::parse_relay`] accepts exactly the well-formed `relay` frames whose `type` is
/// written without escapes, and then yields the same values as [`ClientFrame::parse`]; for
/// anything else it returns `None` and the caller uses the full parser (which also produces the
/// error answers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayRef<'a> {
    /// Request id.
    pub id: RequestId,
    /// The recipient.
    pub to: UserId,
    /// Only this device of the recipient (all devices when absent).
    pub to_device: Option<DeviceId>,
    /// The payload, borrowed from the frame when it holds no escapes.
    pub payload: std::borrow::Cow<'a, str>,
    /// Queue it in the mailbox of each offline device.
    pub store: bool,
}

/// The wire shape of a `relay` frame for [`ClientFrame::parse_relay`]. Unknown fields are
/// ignored and duplicate fields refused, as by the tagged [`ClientFrame`].
#[derive(Deserialize)]
struct RelayWire<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    id: RequestId,
    #[serde(deserialize_with = "user_cache::deserialize")]
    to: UserId,
    #[serde(default)]
    to_device: Option<DeviceId>,
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
    #[serde(default)]
    store: bool,
}

impl ClientFrame {
    /// Reads a `relay` frame without building a [`ClientFrame`] (no buffering of the whole
    /// object, no copy of a payload without escapes). `None` means "not a plain relay frame":
    /// parse it with [`ClientFrame::parse`].
    pub fn parse_relay(text: &str) -> Option<RelayRef<'_>> {
        // Cheap refusal of every other frame type before any parsing.
        if !text.contains("\"relay\"") {
            return None;
        }
        let wire: RelayWire<'_> = serde_json::from_str(text).ok()?;
        (wire.ty == "relay").then_some(RelayRef {
            id: wire.id,
            to: wire.to,
            to_device: wire.to_device,
            payload: wire.payload,
            store: wire.store,
        })
    }
}

/// Appends `text` as a JSON string exactly as `serde_json` writes it: verbatim between quotes
/// when nothing needs escaping (the usual case for base64 payloads), else through `serde_json`.
fn push_json_str(out: &mut String, text: &str) {
    // Branch-free per 16-byte chunk so the compiler vectorizes the scan of long payloads.
    let plain = |b: u8| b >= 0x20 && b != b'"' && b != b'\\';
    let clean = text
        .as_bytes()
        .chunks(16)
        .all(|chunk| chunk.iter().fold(true, |ok, &b| ok & plain(b)));
    if !clean {
        out.push_str(&to_json(&text));
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

/// The JSON of a [`ServerFrame::Deliver`], byte for byte what [`ServerFrame::to_json`] gives
/// for it, written without building the frame (so the payload is copied once, never cloned or
/// re-escaped on the relay path).
pub fn deliver_json(
    kind: DeliveryKind,
    from: &Sender,
    payload: &str,
    sent_at: Timestamp,
    mailbox_id: Option<u64>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(payload.len() + 200);
    out.push_str(r#"{"type":"deliver","kind":""#);
    out.push_str(kind.as_str());
    out.push_str(r#"","from":{"user":"#);
    push_json_str(&mut out, &user_cache::print(&from.user));
    out.push_str(r#","device":"#);
    push_json_str(&mut out, from.device.as_str());
    out.push_str(r#"},"payload":"#);
    push_json_str(&mut out, payload);
    let _ = write!(out, r#","sent_at":{}"#, sent_at.0);
    if let Some(id) = mailbox_id {
        let _ = write!(out, r#","mailbox_id":{id}"#);
    }
    out.push('}');
    out
}

impl ServerFrame {
    /// Parses one text frame from the server.
    pub fn parse(text: &str) -> Result<ServerFrame, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The frame as one JSON text.
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Shorthand for an error answer.
    pub fn error(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            id,
            code,
            message: message.into(),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Our frames hold only strings, integers, lists and maps with string keys, which always
    // serialize; an empty object is a harmless answer should that ever change.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

fn classify(text: &str, err: &serde_json::Error) -> FrameError {
    let malformed = |id, message: String| FrameError {
        code: ErrorCode::MalformedFrame,
        id,
        message,
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return malformed(None, "not valid JSON".into());
    };
    let Some(obj) = value.as_object() else {
        return malformed(None, "a frame must be a JSON object".into());
    };
    let id = obj.get("id").and_then(serde_json::Value::as_u64);
    match obj.get("type").and_then(serde_json::Value::as_str) {
        None => malformed(id, "missing string field `type`".into()),
        Some(ty) if !CLIENT_TYPES.contains(&ty) => FrameError {
            code: ErrorCode::UnknownType,
            id,
            message: "unknown frame type".into(),
        },
        // serde's message names the missing or mistyped field and never echoes string values.
        Some(_) => malformed(id, strip_position(&err.to_string())),
    }
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::test_support::{certificate, signed_key};
    use crate::bundle::{BUNDLE_VERSION, PrekeyKind};
    use dopus_types::{Curve25519Key, DeviceKeys, Ed25519Key};
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    fn user(seed: u8) -> UserId {
        let vk = SigningKey::from_bytes(&[seed; 32]).verifying_key();
        UserId::from_key(Ed25519Key::from_bytes(vk.as_bytes()).unwrap())
    }

    fn device(seed: u8) -> DeviceId {
        DeviceId::from_random([seed; 16])
    }

    fn bundle() -> DeviceBundle {
        let identity = SigningKey::from_bytes(&[1; 32]);
        let dev = SigningKey::from_bytes(&[2; 32]);
        let keys = DeviceKeys {
            ed25519: Ed25519Key::from_bytes(dev.verifying_key().as_bytes()).unwrap(),
            curve25519: Curve25519Key::from_bytes([3; 32]),
        };
        let sign_id = |b: &[u8]| Signature::from_bytes(identity.sign(b).to_bytes());
        let sign_dev = |b: &[u8]| Signature::from_bytes(dev.sign(b).to_bytes());
        let cert = certificate(
            user(1),
            device(1),
            keys,
            Timestamp(1_700_000_000_000),
            &sign_id,
        );
        DeviceBundle {
            version: BUNDLE_VERSION,
            fallback_key: signed_key(
                PrekeyKind::Fallback,
                &cert,
                "fb",
                Curve25519Key::from_bytes([4; 32]),
                &sign_dev,
            ),
            one_time_keys: vec![signed_key(
                PrekeyKind::OneTime,
                &cert,
                "otk0",
                Curve25519Key::from_bytes([5; 32]),
                &sign_dev,
            )],
            certificate: cert,
        }
    }

    fn limits() -> Limits {
        Limits {
            max_frame_bytes: 65536,
            max_payload_bytes: 60000,
            max_contacts: 5000,
            max_ack_ids: 1000,
            rate_per_sec: 200,
            rate_burst: 1000,
            mailbox_max_items: 1000,
            mailbox_max_bytes: 16 << 20,
            mailbox_ttl_secs: 30 * 86400,
            one_time_keys_low_threshold: 10,
            mailbox_contact_share_percent: 25,
            mailbox_stranger_share_percent: 5,
            max_devices_per_user: 32,
        }
    }

    fn sender() -> Sender {
        Sender {
            user: user(2),
            device: device(2),
        }
    }

    fn all_client_frames() -> Vec<ClientFrame> {
        let b = bundle();
        vec![
            ClientFrame::Auth {
                user_id: user(1),
                device_id: device(1),
                challenge: Nonce([9; 32]),
                signature: Signature::from_bytes([8; 64]),
                quiet_relays: false,
            },
            ClientFrame::PublishBundle {
                id: 1,
                bundle: Box::new(b),
            },
            ClientFrame::FetchBundle {
                id: 2,
                user: user(2),
            },
            ClientFrame::Relay {
                id: 3,
                to: user(2),
                to_device: None,
                payload: "opaque".into(),
                store: false,
            },
            ClientFrame::Relay {
                id: 4,
                to: user(2),
                to_device: Some(device(2)),
                payload: "opaque".into(),
                store: true,
            },
            ClientFrame::SetStatus {
                id: 8,
                status: Status::Busy,
            },
            ClientFrame::SyncContacts {
                id: 9,
                contacts: vec![user(2), user(3)],
                more: false,
            },
            ClientFrame::SyncContacts {
                id: 12,
                contacts: vec![user(4)],
                more: true,
            },
            ClientFrame::Ack {
                id: 10,
                ids: vec![1, 2, 3],
            },
            ClientFrame::Ping { id: 11 },
            // Protocol 3's login option (last, so the seeds derived from this list keep their
            // names).
            ClientFrame::Auth {
                user_id: user(1),
                device_id: device(1),
                challenge: Nonce([9; 32]),
                signature: Signature::from_bytes([8; 64]),
                quiet_relays: true,
            },
        ]
    }

    fn all_server_frames() -> Vec<ServerFrame> {
        let b = bundle();
        vec![
            ServerFrame::Challenge {
                version: 1,
                server_id: "srv-1".into(),
                challenge: Nonce([7; 32]),
                expires_at: Timestamp(1_700_000_030_000),
            },
            ServerFrame::AuthSuccess {
                user_id: user(1),
                device_id: device(1),
                server_time: Timestamp(1_700_000_000_000),
                ping_interval_ms: 20_000,
                ping_timeout_ms: 20_000,
                limits: limits(),
                mailbox_pending: 2,
                ice_servers: vec![IceServerInfo {
                    urls: vec![
                        "turn:relay.example.org:3478?transport=udp".into(),
                        "turns:relay.example.org:5349?transport=tcp".into(),
                    ],
                    username: Some("1700003600:3q2+7w".into()),
                    credential: Some("c2VjcmV0LWhtYWM=".into()),
                    ttl_secs: Some(3600),
                }],
            },
            ServerFrame::AuthFailure {
                code: ErrorCode::BadSignature,
                message: "the signature does not verify".into(),
            },
            ServerFrame::Ok { id: 8 },
            ServerFrame::error(Some(3), ErrorCode::MailboxFull, "mailbox full"),
            ServerFrame::error(None, ErrorCode::MalformedFrame, "not valid JSON"),
            ServerFrame::BundlePublished {
                id: 1,
                one_time_keys: 1,
            },
            ServerFrame::Bundles {
                id: 2,
                user: user(1),
                bundles: vec![ClaimedBundle {
                    version: BUNDLE_VERSION,
                    certificate: b.certificate.clone(),
                    fallback_key: b.fallback_key.clone(),
                    one_time_key: b.one_time_keys.first().cloned(),
                }],
            },
            ServerFrame::RelayResult {
                id: 3,
                delivered: vec![device(2)],
                queued: vec![device(3)],
                refused: vec![Refusal {
                    device: device(4),
                    code: ErrorCode::MailboxFull,
                }],
            },
            ServerFrame::ContactsSynced {
                id: 9,
                presence: vec![PresenceEntry {
                    user: user(2),
                    status: Status::Away,
                }],
            },
            ServerFrame::Deliver {
                kind: DeliveryKind::Relay,
                from: sender(),
                payload: "opaque".into(),
                sent_at: Timestamp(1_700_000_000_001),
                mailbox_id: None,
            },
            ServerFrame::Deliver {
                kind: DeliveryKind::Relay,
                from: sender(),
                payload: "stored".into(),
                sent_at: Timestamp(1_700_000_000_002),
                mailbox_id: Some(42),
            },
            ServerFrame::PresenceUpdate {
                user: user(2),
                status: Status::Online,
            },
            ServerFrame::OneTimeKeysLow {
                remaining: 3,
                threshold: 10,
            },
            ServerFrame::Pong { id: 11 },
        ]
    }

    #[test]
    fn deliver_json_is_the_serde_encoding() {
        for (payload, mailbox_id) in [
            ("opaque", None),
            ("", Some(42)),
            (
                "quote \" back \\ nl \n tab \t ctl \u{1} del \u{7f} é 😀 </script>",
                Some(0),
            ),
        ] {
            let kind = DeliveryKind::Relay;
            let frame = ServerFrame::Deliver {
                kind,
                from: sender(),
                payload: payload.into(),
                sent_at: Timestamp(1_700_000_000_001),
                mailbox_id,
            };
            assert_eq!(
                deliver_json(
                    kind,
                    &sender(),
                    payload,
                    Timestamp(1_700_000_000_001),
                    mailbox_id
                ),
                frame.to_json()
            );
        }
    }

    #[test]
    fn parse_relay_agrees_with_the_full_parser_or_declines() {
        let to = user(2).to_string();
        let cases = [
            format!(r#"{{"type":"relay","id":3,"to":"{to}","payload":"abc"}}"#),
            format!(
                r#"{{"id":3,"payload":"a\"b","type":"relay","to":"{to}","store":true,"x":[1]}}"#
            ),
            format!(
                r#"{{"type":"relay","id":4,"to":"{to}","to_device":"{}","payload":""}}"#,
                device(2)
            ),
            format!(r#"{{"type":"relay","id":4,"to":"{to}","to_device":null,"payload":"p"}}"#),
            format!(r#"{{"type":"relay","type":"relay","id":3,"to":"{to}","payload":"abc"}}"#),
            format!(r#"{{"type":"relay","id":3,"id":4,"to":"{to}","payload":"abc"}}"#),
            format!(r#"{{"type":"rel\u0061y","id":3,"to":"{to}","payload":"abc"}}"#),
            r#"{"type":"ping","id":3,"note":"relay"}"#.to_owned(),
            format!(r#"{{"type":"relay","id":3,"to":"{to}","payload":3}}"#),
            format!(r#"{{"type":"relay","id":-3,"to":"{to}","payload":"abc"}}"#),
            r#"{"type":"relay","id":3,"to":"dopus1xyz","payload":"abc"}"#.to_owned(),
            format!(r#"{{"type":"relay","id":3,"to":"{to}","payload":"abc"}} x"#),
            format!(r#"{{"type":"relay","id":3,"to":"{to}","payload":"abc","store":"yes"}}"#),
            r#"["relay"]"#.to_owned(),
        ];
        for text in &cases {
            let full = ClientFrame::parse(text);
            match ClientFrame::parse_relay(text) {
                Some(r) => assert_eq!(
                    full,
                    Ok(ClientFrame::Relay {
                        id: r.id,
                        to: r.to,
                        to_device: r.to_device,
                        payload: r.payload.into_owned(),
                        store: r.store,
                    }),
                    "{text}"
                ),
                None => assert!(
                    !matches!(full, Ok(ClientFrame::Relay { ref payload, .. }) if !payload.contains(['"', '\\']) && !text.contains("\\u0061")),
                    "declined a plain relay frame: {text}"
                ),
            }
        }
        assert!(
            ClientFrame::parse_relay(&cases[0])
                .is_some_and(|r| matches!(r.payload, std::borrow::Cow::Borrowed("abc")))
        );
    }

    #[test]
    fn client_frames_snapshot() {
        let json: Vec<serde_json::Value> = all_client_frames()
            .iter()
            .map(|f| serde_json::to_value(f).unwrap())
            .collect();
        insta::assert_json_snapshot!(json);
    }

    #[test]
    fn server_frames_snapshot() {
        let json: Vec<serde_json::Value> = all_server_frames()
            .iter()
            .map(|f| serde_json::to_value(f).unwrap())
            .collect();
        insta::assert_json_snapshot!(json);
    }

    #[test]
    fn every_frame_round_trips() {
        for f in all_client_frames() {
            assert_eq!(ClientFrame::parse(&f.to_json()).unwrap(), f);
        }
        for f in all_server_frames() {
            assert_eq!(ServerFrame::parse(&f.to_json()).unwrap(), f);
        }
    }

    #[test]
    fn bad_frames_get_stable_codes() {
        let e = ClientFrame::parse("{not json").unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::MalformedFrame, None));
        let e = ClientFrame::parse("[1,2]").unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedFrame);
        let e = ClientFrame::parse(r#"{"id":4}"#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::MalformedFrame, Some(4)));
        let e = ClientFrame::parse(r#"{"type":"teleport","id":5}"#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::UnknownType, Some(5)));
        let e = ClientFrame::parse(r#"{"type":"relay","id":6,"payload":"secret"}"#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::MalformedFrame, Some(6)));
        assert!(e.message.contains("to"), "{}", e.message);
        assert!(!e.message.contains("secret"));
        let e =
            ClientFrame::parse(r#"{"type":"set_status","id":7,"status":"napping"}"#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::MalformedFrame, Some(7)));
    }

    #[test]
    fn relay_store_defaults_to_false() {
        let text = format!(
            r#"{{"type":"relay","id":1,"to":"{}","payload":"x"}}"#,
            user(2)
        );
        match ClientFrame::parse(&text).unwrap() {
            ClientFrame::Relay {
                store, to_device, ..
            } => {
                assert!(!store);
                assert!(to_device.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cached_user_ids_behave_like_uncached_ones() {
        let u = user(3);
        let text = u.to_string();
        for _ in 0..3 {
            assert_eq!(user_cache::parse(&text).unwrap(), u);
            assert_eq!(user_cache::print(&u), text);
        }
        // A typo is refused whether or not the genuine id is cached.
        let mut typo = text.clone().into_bytes();
        let last = typo.len() - 1;
        typo[last] = if typo[last] == b'q' { b'p' } else { b'q' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(
            user_cache::parse(&typo).is_err(),
            UserId::parse(&typo).is_err()
        );
        assert!(user_cache::parse(&typo).is_err());
        let frame = format!(r#"{{"type":"fetch_bundle","id":1,"user":"{typo}"}}"#);
        assert_eq!(
            ClientFrame::parse(&frame).unwrap_err().code,
            ErrorCode::MalformedFrame
        );
    }

    #[test]
    fn a_full_part_of_a_contact_list_fits_its_frame() {
        for max in [4_096u64, 65_536, 100_000] {
            let n = contacts_per_frame(max);
            let f = ClientFrame::SyncContacts {
                id: u64::MAX,
                contacts: (0..n).map(|i| user(1 + (i % 200) as u8)).collect(),
                more: true,
            };
            let len = f.to_json().len() as u64;
            assert!(len <= max, "{n} contacts take {len} bytes, more than {max}");
            assert!(
                len + 2 * 67 > max,
                "room for more than {n} contacts in {max} bytes"
            );
        }
        // The documented default: 5,000 contacts in 6 frames of 64 KiB.
        assert_eq!(5_000usize.div_ceil(contacts_per_frame(65_536)), 6);
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate_version(None), Some(1));
        assert_eq!(negotiate_version(Some("")), Some(1));
        assert_eq!(negotiate_version(Some("1,2,7")), Some(2));
        assert_eq!(negotiate_version(Some("1")), Some(1));
        assert_eq!(negotiate_version(Some("2")), Some(2));
        assert_eq!(negotiate_version(Some("3")), Some(3));
        assert_eq!(negotiate_version(Some("1,2,3,4")), Some(3));
        assert_eq!(negotiate_version(Some("4")), None);
        assert_eq!(negotiate_version(Some("x")), None);
    }

    #[test]
    fn most_present_status_wins_and_invisible_looks_offline() {
        use Status::*;
        assert_eq!(Status::most_present([Away, Online, Invisible]), Online);
        assert_eq!(Status::most_present([Away, Busy]), Busy);
        assert_eq!(Status::most_present([Invisible]), Invisible);
        assert_eq!(Status::most_present([]), Offline);
        assert_eq!(Invisible.as_seen_by_others(), Offline);
        for s in [Online, Away, Busy, Invisible, Offline] {
            assert_eq!(Status::from_name(s.as_str()), Some(s));
        }
    }

    #[test]
    fn auth_bytes_bind_server_challenge_and_device() {
        let a = auth_signing_bytes("s1", &[1; 32], &device(1));
        assert_ne!(a, auth_signing_bytes("s2", &[1; 32], &device(1)));
        assert_ne!(a, auth_signing_bytes("s1", &[2; 32], &device(1)));
        assert_ne!(a, auth_signing_bytes("s1", &[1; 32], &device(2)));
        assert!(a.starts_with(canonical::SIGNALING_AUTH.as_bytes()));
    }

    fn arb_status() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Online),
            Just(Status::Away),
            Just(Status::Busy),
            Just(Status::Invisible),
            Just(Status::Offline),
        ]
    }

    fn arb_kind() -> impl Strategy<Value = DeliveryKind> {
        prop_oneof![Just(DeliveryKind::Relay),]
    }

    proptest! {
        #[test]
        fn relay_round_trips(id in any::<u64>(), seed in 1u8..50, dev in proptest::option::of(any::<[u8; 16]>()),
                             payload in "\\PC{0,200}", store in any::<bool>()) {
            let f = ClientFrame::Relay { id, to: user(seed), to_device: dev.map(DeviceId::from_random), payload, store };
            let json = f.to_json();
            prop_assert_eq!(ClientFrame::parse(&json).unwrap(), f.clone());
            // The fast path reads the same frame (serde escapes only `"`, `\` and controls).
            let r = ClientFrame::parse_relay(&json).unwrap();
            prop_assert_eq!(ClientFrame::Relay { id: r.id, to: r.to, to_device: r.to_device, payload: r.payload.into_owned(), store: r.store }, f);
        }

        #[test]
        fn contacts_and_status_round_trip(id in any::<u64>(), seeds in proptest::collection::vec(1u8..50, 0..20),
                                          status in arb_status(), ids in proptest::collection::vec(any::<u64>(), 0..20)) {
            let f = ClientFrame::SyncContacts { id, contacts: seeds.iter().map(|s| user(*s)).collect(), more: id % 2 == 0 };
            prop_assert_eq!(ClientFrame::parse(&f.to_json()).unwrap(), f);
            let f = ClientFrame::SetStatus { id, status };
            prop_assert_eq!(ClientFrame::parse(&f.to_json()).unwrap(), f);
            let f = ClientFrame::Ack { id, ids };
            prop_assert_eq!(ClientFrame::parse(&f.to_json()).unwrap(), f);
        }

        #[test]
        fn deliver_round_trips(kind in arb_kind(), payload in "\\PC{0,200}", sent in any::<u64>(),
                               mailbox_id in proptest::option::of(any::<u64>()), seed in 1u8..50) {
            let f = ServerFrame::Deliver { kind, from: Sender { user: user(seed), device: device(seed) }, payload, sent_at: Timestamp(sent), mailbox_id };
            prop_assert_eq!(ServerFrame::parse(&f.to_json()).unwrap(), f);
        }

        #[test]
        fn deliver_json_matches_serde(kind in arb_kind(), payload in any::<String>(), sent in any::<u64>(),
                                      mailbox_id in proptest::option::of(any::<u64>()), seed in 1u8..50) {
            let from = Sender { user: user(seed), device: device(seed) };
            let f = ServerFrame::Deliver { kind, from: from.clone(), payload: payload.clone(), sent_at: Timestamp(sent), mailbox_id };
            prop_assert_eq!(deliver_json(kind, &from, &payload, Timestamp(sent), mailbox_id), f.to_json());
        }

        #[test]
        fn auth_round_trips(nonce in any::<[u8; 32]>(), sig in proptest::collection::vec(any::<u8>(), 64), seed in 1u8..50) {
            let mut s = [0u8; 64];
            s.copy_from_slice(&sig);
            let f = ClientFrame::Auth { user_id: user(seed), device_id: device(seed), challenge: Nonce(nonce), signature: Signature::from_bytes(s), quiet_relays: seed % 2 == 0 };
            prop_assert_eq!(ClientFrame::parse(&f.to_json()).unwrap(), f);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,300}") {
            let _ = ClientFrame::parse(&text);
            let _ = ServerFrame::parse(&text);
        }
    }
}
