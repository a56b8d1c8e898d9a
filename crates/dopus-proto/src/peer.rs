//! Peer envelopes: what one device sends another, over a data channel or through the server's
//! mailbox.
//!
//! Two layers, each versioned on its own:
//!
//! - [`PeerEnvelope`] is the outer, clear-text JSON that the signaling server and the data channel
//!   carry. It holds only what routing needs (message id, sender and recipient user + device) and
//!   the Olm message. Kind, conversation and time are *not* here: the server never learns them.
//! - [`PeerPayload`] is the JSON plaintext inside the Olm message. It repeats the id (so a
//!   ciphertext cannot be replayed under another id), binds sender and recipient (user, device
//!   and device keys, plus the sender's device certificate on pre-key messages), and carries the
//!   conversation, the send time and the [`Content`].
//!
//! Protocol flow:
//! - the sender builds a [`PeerPayload`], serialises it with [`PeerPayload::to_json`], encrypts
//!   it with Olm and wraps the result in a [`PeerEnvelope`] ([`PeerEnvelope::to_json`]);
//! - the receiver decodes the envelope ([`PeerEnvelope::from_json`]), checks that it is the
//!   recipient, decrypts, decodes the payload ([`PeerPayload::from_json`]) and checks the binding
//!   (`dopus_core::e2e` does all of this);
//! - decoding enforces the size limits below, so a peer or a server cannot make us allocate or
//!   store more than that.
//!
//! Errors never echo the input: a peer's message text must not reach a log through an error.

use crate::bundle::DeviceCertificate;
use dopus_types::{ChannelId, DeviceId, DeviceKeys, Ed25519Key, SpaceId, Timestamp, UserId};

pub use crate::content::{
    BulkContent, BulkItem, CALL_VERSION, CallContent, CancelCode, ChatContent, ContactContent,
    Content, DeclineReason, ReactionAction, ReceiptKind, RtcContent, RtcSignal, SessionContent,
    VerificationContent, VerificationStep,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Version of the outer envelope format.
pub const ENVELOPE_VERSION: u32 = 1;
/// Version of the inner payload format.
pub const PAYLOAD_VERSION: u32 = 1;

/// Largest encoded envelope accepted (bytes of JSON).
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
/// Largest Olm ciphertext accepted in an envelope (raw bytes, before base64).
pub const MAX_CIPHERTEXT_BYTES: usize = 160 * 1024;
/// Largest encoded payload accepted (bytes of JSON plaintext inside Olm).
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// Longest message body (text and edits), in UTF-8 bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest reaction, in UTF-8 bytes (one emoji with modifiers and joiners fits easily).
pub const MAX_EMOJI_BYTES: usize = 64;
/// Most message ids in one receipt or session reset.
pub const MAX_IDS_PER_MESSAGE: usize = 256;
/// Longest display name in a contact request or answer, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest note in a contact request, in UTF-8 bytes.
pub const MAX_NOTE_BYTES: usize = 1024;
/// Longest SDP offer or answer, in bytes.
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// Longest ICE candidate line or media id, in bytes.
pub const MAX_CANDIDATE_BYTES: usize = 1024;
/// Longest token (group id, connection id, transaction id, key id), in bytes.
pub const MAX_TOKEN_BYTES: usize = 64;
/// Most MACs in one SAS MAC step.
pub const MAX_SAS_MACS: usize = 8;
/// Most messages in one [`Content::Bulk`].
pub const MAX_BULK_ITEMS: usize = 64;

/// Why an envelope or payload was refused. Never contains any part of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The encoded message is larger than its limit.
    #[error("{what} is too large: {actual} bytes, at most {limit}")]
    TooLarge {
        /// Which part is too large.
        what: &'static str,
        /// The limit in bytes.
        limit: usize,
        /// The actual size in bytes.
        actual: usize,
    },
    /// A format version this build does not understand.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// `"envelope"` or `"payload"`.
        what: &'static str,
        /// The version found.
        version: u32,
    },
    /// Not valid JSON for this format (position only: the input is never echoed).
    #[error("malformed {what} at line {line}, column {column}")]
    Malformed {
        /// `"envelope"` or `"payload"`.
        what: &'static str,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// A field is longer than its limit (or a list has too many items).
    #[error("field {field} is too long (at most {limit})")]
    FieldTooLong {
        /// The field's name.
        field: &'static str,
        /// The limit (bytes, or items for lists).
        limit: usize,
    },
    /// A field has a value that is not allowed (empty, wrong characters, wrong id version).
    #[error("field {field} has an invalid value")]
    InvalidField {
        /// The field's name.
        field: &'static str,
    },
}

impl PeerError {
    fn malformed(what: &'static str, e: &serde_json::Error) -> Self {
        PeerError::Malformed {
            what,
            line: e.line(),
            column: e.column(),
        }
    }
}

/// A message id: a UUIDv7, so ids sort by creation time and never collide across devices.
///
/// The same id names a message in the envelope, in the payload, in receipts, edits, reactions and
/// in the store; receivers deduplicate by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A new id for `now`; `random` must come from a cryptographic random source.
    pub fn new_v7(now: Timestamp, random: [u8; 10]) -> Self {
        Self(uuid::Builder::from_unix_timestamp_millis(now.as_millis(), &random).into_uuid())
    }

    /// Parses the hyphenated text form, refusing anything but a UUIDv7.
    pub fn parse(text: &str) -> Result<Self, PeerError> {
        let uuid = Uuid::try_parse(text).map_err(|_| PeerError::InvalidField { field: "id" })?;
        Self::from_uuid(uuid)
    }

    /// Wraps a UUID, refusing anything but version 7.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, PeerError> {
        if uuid.get_version_num() == 7 && uuid.get_variant() == uuid::Variant::RFC4122 {
            Ok(Self(uuid))
        } else {
            Err(PeerError::InvalidField { field: "id" })
        }
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The creation time embedded in the id (chosen by the sender: informational only).
    pub fn created_at(&self) -> Timestamp {
        let b = self.0.as_bytes();
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&b[..6]);
        Timestamp(u64::from_be_bytes(ms))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0.hyphenated())
    }
}

impl FromStr for MessageId {
    type Err = PeerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(|_| serde::de::Error::custom("not a UUIDv7"))
    }
}

/// One device of one user: where an envelope comes from or goes to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerAddress {
    /// The user.
    pub user: UserId,
    /// The user's device.
    pub device: DeviceId,
}

/// The two kinds of Olm message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OlmMessageType {
    /// Starts a session (carries the sender's Curve25519 key, base key and the prekey used);
    /// sent until the sender has decrypted a reply.
    PreKey,
    /// A message in an established session.
    Normal,
}

impl OlmMessageType {
    /// The number vodozemac and libolm use for this type (`OlmMessage::from_parts`).
    pub const fn as_number(self) -> usize {
        match self {
            OlmMessageType::PreKey => 0,
            OlmMessageType::Normal => 1,
        }
    }

    /// The type for vodozemac's number, if it is one.
    pub const fn from_number(n: usize) -> Option<Self> {
        match n {
            0 => Some(OlmMessageType::PreKey),
            1 => Some(OlmMessageType::Normal),
            _ => None,
        }
    }
}

/// Bytes that travel as standard base64 without padding in JSON.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&dopus_types::b64_encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        dopus_types::b64_decode(&text)
            .map(Base64Bytes)
            .map_err(|_| serde::de::Error::custom("not base64"))
    }
}

/// The outer envelope: routing information and an Olm message, nothing else in the clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEnvelope {
    /// Format version, [`ENVELOPE_VERSION`].
    pub version: u32,
    /// The message id; the payload inside must carry the same one.
    pub id: MessageId,
    /// The sending device.
    pub from: PeerAddress,
    /// The receiving device.
    pub to: PeerAddress,
    /// Which kind of Olm message `ciphertext` is.
    pub olm_type: OlmMessageType,
    /// The Olm message bytes.
    pub ciphertext: Base64Bytes,
}

#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

fn check_size(what: &'static str, limit: usize, actual: usize) -> Result<(), PeerError> {
    if actual > limit {
        Err(PeerError::TooLarge {
            what,
            limit,
            actual,
        })
    } else {
        Ok(())
    }
}

fn probe_version(what: &'static str, bytes: &[u8], expected: u32) -> Result<(), PeerError> {
    let probe: VersionProbe =
        serde_json::from_slice(bytes).map_err(|e| PeerError::malformed(what, &e))?;
    if probe.version != expected {
        return Err(PeerError::UnsupportedVersion {
            what,
            version: probe.version,
        });
    }
    Ok(())
}

impl PeerEnvelope {
    /// Checks the version and the ciphertext size limit.
    pub fn validate(&self) -> Result<(), PeerError> {
        if self.version != ENVELOPE_VERSION {
            return Err(PeerError::UnsupportedVersion {
                what: "envelope",
                version: self.version,
            });
        }
        if self.ciphertext.0.is_empty() {
            return Err(PeerError::InvalidField {
                field: "ciphertext",
            });
        }
        check_size("ciphertext", MAX_CIPHERTEXT_BYTES, self.ciphertext.0.len())
    }

    /// Encodes as JSON after checking the limits.
    pub fn to_json(&self) -> Result<Vec<u8>, PeerError> {
        self.validate()?;
        let out = serde_json::to_vec(self).map_err(|e| PeerError::malformed("envelope", &e))?;
        check_size("envelope", MAX_ENVELOPE_BYTES, out.len())?;
        Ok(out)
    }

    /// Decodes JSON from an untrusted source, enforcing version and limits.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PeerError> {
        check_size("envelope", MAX_ENVELOPE_BYTES, bytes.len())?;
        probe_version("envelope", bytes, ENVELOPE_VERSION)?;
        let env: Self =
            serde_json::from_slice(bytes).map_err(|e| PeerError::malformed("envelope", &e))?;
        env.validate()?;
        Ok(env)
    }
}

/// Who sent a payload, as the sender asserts it inside the encryption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderBinding {
    /// The sending user.
    pub user: UserId,
    /// The sending device.
    pub device: DeviceId,
    /// The sending device's keys (the Curve25519 key must be the Olm sender key).
    pub keys: DeviceKeys,
}

/// For whom the sender encrypted a payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientBinding {
    /// The receiving user.
    pub user: UserId,
    /// The receiving device.
    pub device: DeviceId,
    /// The receiving device's Ed25519 key.
    pub ed25519: Ed25519Key,
}

/// Which conversation a message belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Conversation {
    /// The 1:1 conversation between sender and recipient (also used by control messages).
    Direct,
    /// A channel of a space.
    Channel {
        /// The space.
        space: SpaceId,
        /// The channel.
        channel: ChannelId,
    },
}

impl Conversation {
    /// Checks the value (typed ids are checked when decoded; nothing else to check today).
    pub fn validate(&self) -> Result<(), PeerError> {
        Ok(())
    }
}

/// The plaintext inside an Olm message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerPayload {
    /// Format version, [`PAYLOAD_VERSION`].
    pub version: u32,
    /// Must equal the envelope's id.
    pub id: MessageId,
    /// Who sent it.
    pub sender: SenderBinding,
    /// For whom it was encrypted.
    pub recipient: RecipientBinding,
    /// The sender's device certificate: present on pre-key messages, so a receiver that has never
    /// seen the device can verify it against the sender's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<DeviceCertificate>,
    /// The conversation.
    pub conversation: Conversation,
    /// When the sender sent it (the sender's clock).
    pub sent_at: Timestamp,
    /// What it says.
    pub content: Content,
}

pub(crate) fn limit_str(field: &'static str, value: &str, limit: usize) -> Result<(), PeerError> {
    if value.len() > limit {
        Err(PeerError::FieldTooLong { field, limit })
    } else {
        Ok(())
    }
}

pub(crate) fn non_empty(field: &'static str, value: &str, limit: usize) -> Result<(), PeerError> {
    if value.is_empty() {
        return Err(PeerError::InvalidField { field });
    }
    limit_str(field, value, limit)
}

/// Checks a token: 1 to [`MAX_TOKEN_BYTES`] characters from `[A-Za-z0-9_-]`.
pub fn check_token(field: &'static str, value: &str) -> Result<(), PeerError> {
    limit_str(field, value, MAX_TOKEN_BYTES)?;
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(PeerError::InvalidField { field })
    }
}

pub(crate) fn limit_ids(field: &'static str, ids: &[MessageId]) -> Result<(), PeerError> {
    if ids.len() > MAX_IDS_PER_MESSAGE {
        Err(PeerError::FieldTooLong {
            field,
            limit: MAX_IDS_PER_MESSAGE,
        })
    } else {
        Ok(())
    }
}

impl PeerPayload {
    /// Checks the version and every documented limit.
    pub fn validate(&self) -> Result<(), PeerError> {
        if self.version != PAYLOAD_VERSION {
            return Err(PeerError::UnsupportedVersion {
                what: "payload",
                version: self.version,
            });
        }
        self.conversation.validate()?;
        self.content.validate()
    }

    /// Encodes as JSON after checking the limits.
    pub fn to_json(&self) -> Result<Vec<u8>, PeerError> {
        self.validate()?;
        let out = serde_json::to_vec(self).map_err(|e| PeerError::malformed("payload", &e))?;
        check_size("payload", MAX_PAYLOAD_BYTES, out.len())?;
        Ok(out)
    }

    /// Decodes decrypted JSON, enforcing version and limits.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PeerError> {
        check_size("payload", MAX_PAYLOAD_BYTES, bytes.len())?;
        probe_version("payload", bytes, PAYLOAD_VERSION)?;
        let payload: Self =
            serde_json::from_slice(bytes).map_err(|e| PeerError::malformed("payload", &e))?;
        payload.validate()?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::test_support;
    use dopus_types::Curve25519Key;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ed(seed: u8) -> Ed25519Key {
        Ed25519Key::from_bytes(
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .as_bytes(),
        )
        .unwrap()
    }

    fn user(seed: u8) -> UserId {
        UserId::from_key(ed(seed))
    }

    fn keys(seed: u8) -> DeviceKeys {
        DeviceKeys {
            ed25519: ed(seed.wrapping_add(100)),
            curve25519: Curve25519Key::from_bytes([seed; 32]),
        }
    }

    fn id(n: u8) -> MessageId {
        MessageId::new_v7(Timestamp(1_700_000_000_000 + u64::from(n)), [n; 10])
    }

    fn cert(seed: u8) -> DeviceCertificate {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        test_support::certificate(
            user(seed),
            DeviceId::from_random([seed; 16]),
            keys(seed),
            Timestamp(1_700_000_000_000),
            &|b: &[u8]| dopus_types::Signature::from_bytes(sk.sign(b).to_bytes()),
        )
    }

    fn payload(content: Content, with_cert: bool) -> PeerPayload {
        PeerPayload {
            version: PAYLOAD_VERSION,
            id: id(1),
            sender: SenderBinding {
                user: user(1),
                device: DeviceId::from_random([1; 16]),
                keys: keys(1),
            },
            recipient: RecipientBinding {
                user: user(2),
                device: DeviceId::from_random([2; 16]),
                ed25519: keys(2).ed25519,
            },
            certificate: with_cert.then(|| cert(1)),
            conversation: Conversation::Direct,
            sent_at: Timestamp(1_700_000_000_001),
            content,
        }
    }

    fn envelope() -> PeerEnvelope {
        PeerEnvelope {
            version: ENVELOPE_VERSION,
            id: id(1),
            from: PeerAddress {
                user: user(1),
                device: DeviceId::from_random([1; 16]),
            },
            to: PeerAddress {
                user: user(2),
                device: DeviceId::from_random([2; 16]),
            },
            olm_type: OlmMessageType::PreKey,
            ciphertext: Base64Bytes(vec![1, 2, 3, 250]),
        }
    }

    fn every_content() -> Vec<Content> {
        vec![
            Content::Chat(ChatContent::Text {
                preview: None,
                body: "hello".into(),
                reply_to: Some(id(2)),
            }),
            Content::Chat(ChatContent::Edit {
                target: id(2),
                body: "hello!".into(),
            }),
            Content::Chat(ChatContent::Delete { target: id(2) }),
            Content::Chat(ChatContent::Reaction {
                target: id(2),
                emoji: "👍".into(),
                action: ReactionAction::Add,
            }),
            Content::Chat(ChatContent::Typing { active: true }),
            Content::Chat(ChatContent::Receipt {
                receipt: ReceiptKind::Read,
                ids: vec![id(2), id(3)],
            }),
            Content::Contact(ContactContent::ContactRequest {
                name: Some("Alice".into()),
                note: None,
            }),
            Content::Contact(ContactContent::ContactAccept { name: None }),
            Content::Contact(ContactContent::ContactDecline),
            Content::Session(SessionContent::SessionReset {
                failed: vec![id(4)],
            }),
            Content::Rtc(RtcContent::Rtc {
                conn: "c1".into(),
                signal: RtcSignal::Offer {
                    sdp: "v=0\r\n".into(),
                },
            }),
            Content::Rtc(RtcContent::Rtc {
                conn: "c1".into(),
                signal: RtcSignal::Candidate {
                    candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                },
            }),
            Content::Rtc(RtcContent::Rtc {
                conn: "c1".into(),
                signal: RtcSignal::EndOfCandidates,
            }),
            Content::Verification(VerificationContent::Verification {
                step: VerificationStep::Accept {
                    txn: "t1".into(),
                    commitment: Base64Bytes(vec![7; 32]),
                },
            }),
            Content::Verification(VerificationContent::Verification {
                step: VerificationStep::Mac {
                    txn: "t1".into(),
                    macs: BTreeMap::from([("identity".to_owned(), Base64Bytes(vec![9; 32]))]),
                    keys: Base64Bytes(vec![8; 32]),
                },
            }),
            Content::Verification(VerificationContent::Verification {
                step: VerificationStep::Cancel {
                    txn: "t1".into(),
                    code: CancelCode::KeyMismatch,
                },
            }),
            Content::Bulk(BulkContent::Bulk {
                items: vec![
                    bulk_item(
                        3,
                        Content::Chat(ChatContent::Text {
                            preview: None,
                            body: "one".into(),
                            reply_to: None,
                        }),
                    ),
                    bulk_item(
                        4,
                        Content::Chat(ChatContent::Reaction {
                            target: id(3),
                            emoji: "👍".into(),
                            action: ReactionAction::Add,
                        }),
                    ),
                ],
            }),
        ]
    }

    fn bulk_item(n: u8, content: Content) -> BulkItem {
        let Content::Chat(content) = content else {
            panic!("bulk items hold chat contents")
        };
        BulkItem {
            id: id(n),
            conversation: Conversation::Direct,
            sent_at: Timestamp(1_700_000_000_000 + u64::from(n)),
            content,
        }
    }

    #[test]
    fn bulk_payloads_hold_distinct_chat_messages_only() {
        let text = |n: u8| {
            bulk_item(
                n,
                Content::Chat(ChatContent::Text {
                    preview: None,
                    body: format!("m{n}"),
                    reply_to: None,
                }),
            )
        };
        let bulk =
            |items: Vec<BulkItem>| payload(Content::Bulk(BulkContent::Bulk { items }), false);
        assert!(bulk(vec![text(1), text(2)]).to_json().is_ok());
        let refused = [
            bulk(vec![]),
            bulk(vec![text(1), text(1)]),
            bulk((0..=MAX_BULK_ITEMS as u8).map(text).collect()),
            bulk(vec![bulk_item(
                1,
                Content::Chat(ChatContent::Typing { active: true }),
            )]),
            bulk(vec![bulk_item(
                1,
                Content::Chat(ChatContent::Receipt {
                    receipt: ReceiptKind::Delivered,
                    ids: vec![id(2)],
                }),
            )]),
            bulk(vec![bulk_item(
                1,
                Content::Chat(ChatContent::Text {
                    preview: None,
                    body: "x".repeat(MAX_BODY_BYTES + 1),
                    reply_to: None,
                }),
            )]),
        ];
        for p in refused {
            let kinds: Vec<_> = match &p.content {
                Content::Bulk(BulkContent::Bulk { items }) => {
                    items.iter().map(|i| i.content.kind_name()).collect()
                }
                _ => unreachable!(),
            };
            assert!(p.to_json().is_err(), "accepted a bulk of {kinds:?}");
            // And refused on the way in, too (encoded without the checks).
            let bytes = serde_json::to_vec(&p).unwrap();
            assert!(PeerPayload::from_json(&bytes).is_err());
        }
        // A bulk nested in a bulk cannot be built, and is refused when a peer sends one.
        let mut v = serde_json::to_value(bulk(vec![text(1)])).unwrap();
        let nested = serde_json::to_value(BulkContent::Bulk {
            items: vec![text(2)],
        })
        .unwrap();
        v["content"]["items"][0]["content"] = nested;
        assert!(PeerPayload::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    }

    #[test]
    fn a_bulk_item_stands_for_a_payload_of_its_own() {
        let item = bulk_item(7, Content::Chat(ChatContent::Delete { target: id(3) }));
        let bulk = payload(
            Content::Bulk(BulkContent::Bulk {
                items: vec![item.clone()],
            }),
            true,
        );
        let inner = item.to_payload(&bulk);
        assert_eq!(inner.id, item.id);
        assert_eq!(inner.sent_at, item.sent_at);
        assert_eq!(inner.content, Content::Chat(item.content.clone()));
        assert_eq!(inner.sender, bulk.sender);
        assert_eq!(inner.recipient, bulk.recipient);
        assert_eq!(inner.certificate, None);
        assert!(inner.validate().is_ok());
    }

    #[test]
    fn envelope_wire_format_snapshot() {
        let json = String::from_utf8(envelope().to_json().unwrap()).unwrap();
        insta::assert_snapshot!(json);
    }

    #[test]
    fn payload_wire_format_snapshot() {
        insta::assert_json_snapshot!(payload(
            Content::Chat(ChatContent::Text {
                preview: None,
                body: "hi".into(),
                reply_to: None
            }),
            true
        ));
    }

    #[test]
    fn every_content_kind_snapshot() {
        insta::assert_json_snapshot!(every_content());
    }

    #[test]
    fn every_content_kind_round_trips() {
        for c in every_content() {
            for with_cert in [false, true] {
                let p = payload(c.clone(), with_cert);
                let back = PeerPayload::from_json(&p.to_json().unwrap()).unwrap();
                assert_eq!(back, p);
            }
        }
    }

    #[test]
    fn the_envelope_carries_nothing_but_routing_and_ciphertext() {
        let v: serde_json::Value = serde_json::from_slice(&envelope().to_json().unwrap()).unwrap();
        let mut fields: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        fields.sort();
        assert_eq!(
            fields,
            ["ciphertext", "from", "id", "olm_type", "to", "version"]
        );
    }

    #[test]
    fn unknown_fields_and_versions_are_refused() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&envelope().to_json().unwrap()).unwrap();
        v["kind"] = "text".into();
        assert!(matches!(
            PeerEnvelope::from_json(&serde_json::to_vec(&v).unwrap()),
            Err(PeerError::Malformed { .. })
        ));
        let mut v: serde_json::Value =
            serde_json::from_slice(&envelope().to_json().unwrap()).unwrap();
        v["version"] = 2.into();
        v["something_new"] = true.into();
        assert_eq!(
            PeerEnvelope::from_json(&serde_json::to_vec(&v).unwrap()),
            Err(PeerError::UnsupportedVersion {
                what: "envelope",
                version: 2
            })
        );
        let p = payload(Content::Chat(ChatContent::Typing { active: false }), false);
        let mut v = serde_json::to_value(&p).unwrap();
        v["content"]["extra"] = 1.into();
        assert!(matches!(
            PeerPayload::from_json(&serde_json::to_vec(&v).unwrap()),
            Err(PeerError::Malformed { .. })
        ));
    }

    #[test]
    fn limits_are_enforced_on_decode() {
        let long = "x".repeat(MAX_BODY_BYTES + 1);
        let p = payload(
            Content::Chat(ChatContent::Text {
                preview: None,
                body: long.clone(),
                reply_to: None,
            }),
            false,
        );
        assert_eq!(
            p.to_json(),
            Err(PeerError::FieldTooLong {
                field: "body",
                limit: MAX_BODY_BYTES
            })
        );
        // A peer that skips our encoder is refused by the decoder too.
        let raw = serde_json::to_vec(&p).unwrap();
        assert_eq!(
            PeerPayload::from_json(&raw),
            Err(PeerError::FieldTooLong {
                field: "body",
                limit: MAX_BODY_BYTES
            })
        );
        let huge = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            PeerPayload::from_json(&huge),
            Err(PeerError::TooLarge { .. })
        ));
        let p = payload(
            Content::Chat(ChatContent::Receipt {
                receipt: ReceiptKind::Delivered,
                ids: vec![id(1); MAX_IDS_PER_MESSAGE + 1],
            }),
            false,
        );
        assert!(matches!(
            PeerPayload::from_json(&serde_json::to_vec(&p).unwrap()),
            Err(PeerError::FieldTooLong { field: "ids", .. })
        ));
        let p = payload(
            Content::Chat(ChatContent::Reaction {
                target: id(1),
                emoji: String::new(),
                action: ReactionAction::Remove,
            }),
            false,
        );
        assert_eq!(
            p.validate(),
            Err(PeerError::InvalidField { field: "emoji" })
        );
        let p = payload(Content::Chat(ChatContent::Typing { active: true }), false);
        let mut v = serde_json::to_value(&p).unwrap();
        v["conversation"] =
            serde_json::json!({ "type": "channel", "space": "../etc", "channel": "x" });
        assert!(matches!(
            PeerPayload::from_json(&serde_json::to_vec(&v).unwrap()),
            Err(PeerError::Malformed { .. })
        ));
        let mut e = envelope();
        e.ciphertext = Base64Bytes(vec![0; MAX_CIPHERTEXT_BYTES + 1]);
        assert!(matches!(e.to_json(), Err(PeerError::TooLarge { .. })));
        let huge = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(
            PeerEnvelope::from_json(&huge),
            Err(PeerError::TooLarge { .. })
        ));
    }

    #[test]
    fn errors_never_echo_the_input() {
        let p = payload(
            Content::Chat(ChatContent::Text {
                preview: None,
                body: "secret words".into(),
                reply_to: None,
            }),
            false,
        );
        let mut v = serde_json::to_value(&p).unwrap();
        v["content"]["body"] = 12.into();
        v["content"]["reply_to"] = "secret words".into();
        let err = PeerPayload::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let mut v = serde_json::to_value(&p).unwrap();
        v["id"] = "secret words".into();
        let err = PeerPayload::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn message_ids_must_be_uuid_v7() {
        let v4 = "9b2f2f0e-3c3a-4c8e-9a57-1f6f8f0c1d2e";
        assert_eq!(
            MessageId::parse(v4),
            Err(PeerError::InvalidField { field: "id" })
        );
        let m = id(5);
        assert_eq!(MessageId::parse(&m.to_string()), Ok(m));
        assert_eq!(m.created_at(), Timestamp(1_700_000_000_005));
        assert!(id(1) < id(2));
    }

    #[test]
    fn olm_type_numbers_match_vodozemac() {
        for t in [OlmMessageType::PreKey, OlmMessageType::Normal] {
            assert_eq!(OlmMessageType::from_number(t.as_number()), Some(t));
        }
        assert_eq!(OlmMessageType::from_number(2), None);
    }

    fn arb_text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("(?s).{0,64}").unwrap()
    }

    /// At most 32 characters, so at most 128 UTF-8 bytes: within `MAX_NAME_BYTES`.
    fn arb_name() -> impl Strategy<Value = String> {
        proptest::string::string_regex("(?s).{0,32}").unwrap()
    }

    fn arb_id() -> impl Strategy<Value = MessageId> {
        (0u64..(1 << 47), any::<[u8; 10]>()).prop_map(|(t, r)| MessageId::new_v7(Timestamp(t), r))
    }

    fn arb_token() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[A-Za-z0-9_-]{1,64}").unwrap()
    }

    fn arb_content() -> impl Strategy<Value = Content> {
        prop_oneof![
            (arb_text(), proptest::option::of(arb_id())).prop_map(
                |(body, reply_to)| Content::Chat(ChatContent::Text {
                    preview: None,
                    body,
                    reply_to
                })
            ),
            (arb_id(), arb_text())
                .prop_map(|(target, body)| Content::Chat(ChatContent::Edit { target, body })),
            arb_id().prop_map(|target| Content::Chat(ChatContent::Delete { target })),
            (arb_id(), "[^\\x00]{1,8}", any::<bool>()).prop_map(|(target, emoji, add)| {
                Content::Chat(ChatContent::Reaction {
                    target,
                    emoji,
                    action: if add {
                        ReactionAction::Add
                    } else {
                        ReactionAction::Remove
                    },
                })
            }),
            any::<bool>().prop_map(|active| Content::Chat(ChatContent::Typing { active })),
            (any::<bool>(), proptest::collection::vec(arb_id(), 1..8)).prop_map(|(r, ids)| {
                Content::Chat(ChatContent::Receipt {
                    receipt: if r {
                        ReceiptKind::Read
                    } else {
                        ReceiptKind::Delivered
                    },
                    ids,
                })
            }),
            (
                proptest::option::of(arb_name()),
                proptest::option::of(arb_text())
            )
                .prop_map(|(name, note)| Content::Contact(
                    ContactContent::ContactRequest { name, note }
                )),
            Just(Content::Contact(ContactContent::ContactDecline)),
            proptest::collection::vec(arb_id(), 0..4)
                .prop_map(|failed| Content::Session(SessionContent::SessionReset { failed })),
            (arb_token(), arb_text(), proptest::option::of(any::<u16>())).prop_map(
                |(conn, candidate, idx)| Content::Rtc(RtcContent::Rtc {
                    conn,
                    signal: RtcSignal::Candidate {
                        candidate,
                        sdp_mid: None,
                        sdp_m_line_index: idx,
                    }
                })
            ),
            (arb_token(), any::<[u8; 32]>()).prop_map(|(txn, k)| Content::Verification(
                VerificationContent::Verification {
                    step: VerificationStep::Key {
                        txn,
                        key: Curve25519Key::from_bytes(k),
                    }
                }
            )),
        ]
    }

    proptest! {
        #[test]
        fn payloads_round_trip(content in arb_content(), id in arb_id(), sent in any::<u64>(),
                               channel in proptest::option::of((any::<[u8; 32]>(), any::<[u8; 16]>())), with_cert in any::<bool>()) {
            let mut p = payload(content, with_cert);
            p.id = id;
            p.sent_at = Timestamp(sent);
            if let Some((space, channel)) = channel {
                p.conversation = Conversation::Channel {
                    space: SpaceId::from_bytes(space),
                    channel: ChannelId::from_bytes(channel),
                };
            }
            let back = PeerPayload::from_json(&p.to_json().unwrap()).unwrap();
            prop_assert_eq!(back, p);
        }

        #[test]
        fn envelopes_round_trip(id in arb_id(), ct in proptest::collection::vec(any::<u8>(), 1..512),
                                pre in any::<bool>(), dev in any::<[u8; 16]>()) {
            let mut e = envelope();
            e.id = id;
            e.ciphertext = Base64Bytes(ct);
            e.olm_type = if pre { OlmMessageType::PreKey } else { OlmMessageType::Normal };
            e.to.device = DeviceId::from_random(dev);
            let back = PeerEnvelope::from_json(&e.to_json().unwrap()).unwrap();
            prop_assert_eq!(back, e);
        }

        #[test]
        fn bulk_payloads_round_trip(items in proptest::collection::vec(
            (arb_id(), any::<u64>(), arb_text()), 1..MAX_BULK_ITEMS)
        ) {
            let mut seen = std::collections::HashSet::new();
            let items: Vec<BulkItem> = items
                .into_iter()
                .filter(|(id, _, _)| seen.insert(*id))
                .map(|(id, sent, body)| BulkItem {
                    id,
                    conversation: Conversation::Direct,
                    sent_at: Timestamp(sent),
                    content: ChatContent::Text { preview: None, body, reply_to: None },
                })
                .collect();
            let p = payload(Content::Bulk(BulkContent::Bulk { items }), false);
            let back = PeerPayload::from_json(&p.to_json().unwrap()).unwrap();
            prop_assert_eq!(back, p);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = PeerEnvelope::from_json(&bytes);
            let _ = PeerPayload::from_json(&bytes);
        }
    }
}
