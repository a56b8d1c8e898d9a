//! Channel messages: a Megolm ciphertext as it travels, and the plaintext inside.
//!
//! [`ChannelMessage`] is what the server (mailbox or a future space topic) and the data channel
//! carry. In the clear it has only what a receiver needs before it can decrypt: the sending
//! device (which the server knows anyway: it authenticated the connection) and the Megolm
//! session id (random, chosen per session; it links messages of one sender's session, which the
//! server could link by sender and time anyway). Space, channel, names, message kind and time
//! are inside the ciphertext only.
//!
//! [`ChannelPayload`] is the plaintext inside: it repeats the sender (checked against the
//! device the session belongs to), names the space and channel (checked against the channel the
//! session was shared for), and carries the message id, the send time, the control-log heads the
//! sender saw, mentions and the chat content (which carries the reply reference). The chat content type is a
//! parameter ([`ChannelContent`]); channels use the peer protocol's
//! [`ChatContent`](crate::content::ChatContent) (text, edit, delete, reaction, typing,
//! receipt), and tests may use a smaller one.

use super::{MAX_HEADS, OpId, RoleId, check_op_ids, check_size, limit_list, malformed};
use crate::peer::{Base64Bytes, MessageId, PeerAddress, PeerError};
use dopus_types::{ChannelId, SpaceId, Timestamp, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of the channel message format.
pub const CHANNEL_MESSAGE_VERSION: u32 = 1;
/// Version of the plaintext inside it.
pub const CHANNEL_PAYLOAD_VERSION: u32 = 1;
/// Largest encoded channel message (bytes of JSON).
pub const MAX_CHANNEL_MESSAGE_BYTES: usize = 96 * 1024;
/// Largest Megolm ciphertext in a channel message (raw bytes).
pub const MAX_CHANNEL_CIPHERTEXT_BYTES: usize = 64 * 1024;
/// Largest plaintext (bytes of JSON) inside a channel message.
pub const MAX_CHANNEL_PAYLOAD_BYTES: usize = 48 * 1024;
/// Most users plus roles one message may mention.
pub const MAX_MENTIONS: usize = 64;

/// A Megolm-encrypted channel message as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelMessage {
    /// Format version, [`CHANNEL_MESSAGE_VERSION`].
    pub version: u32,
    /// The sending device.
    pub sender: PeerAddress,
    /// The Megolm session that encrypted it.
    pub session_id: String,
    /// vodozemac's Megolm message (index, ciphertext, MAC, signature).
    pub ciphertext: Base64Bytes,
}

#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

fn probe(what: &'static str, bytes: &[u8], expected: u32) -> Result<(), PeerError> {
    let p: VersionProbe = serde_json::from_slice(bytes).map_err(|e| malformed(what, &e))?;
    if p.version != expected {
        return Err(PeerError::UnsupportedVersion {
            what,
            version: p.version,
        });
    }
    Ok(())
}

impl ChannelMessage {
    /// Checks the version and limits.
    pub fn validate(&self) -> Result<(), PeerError> {
        if self.version != CHANNEL_MESSAGE_VERSION {
            return Err(PeerError::UnsupportedVersion {
                what: "channel message",
                version: self.version,
            });
        }
        if self.session_id.is_empty() || self.session_id.len() > 64 {
            return Err(PeerError::InvalidField {
                field: "session_id",
            });
        }
        if self.ciphertext.0.is_empty() {
            return Err(PeerError::InvalidField {
                field: "ciphertext",
            });
        }
        check_size(
            "ciphertext",
            MAX_CHANNEL_CIPHERTEXT_BYTES,
            self.ciphertext.0.len(),
        )
    }

    /// Encodes as JSON after checking the limits.
    pub fn to_json(&self) -> Result<Vec<u8>, PeerError> {
        self.validate()?;
        let out = serde_json::to_vec(self).map_err(|e| malformed("channel message", &e))?;
        check_size("channel message", MAX_CHANNEL_MESSAGE_BYTES, out.len())?;
        Ok(out)
    }

    /// Decodes JSON from an untrusted source, enforcing version and limits.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PeerError> {
        check_size("channel message", MAX_CHANNEL_MESSAGE_BYTES, bytes.len())?;
        probe("channel message", bytes, CHANNEL_MESSAGE_VERSION)?;
        let m: Self =
            serde_json::from_slice(bytes).map_err(|e| malformed("channel message", &e))?;
        m.validate()?;
        Ok(m)
    }
}

/// The chat content a channel payload carries. The peer protocol's chat content implements it;
/// this module only needs to validate it and name its kind.
pub trait ChannelContent:
    Serialize + DeserializeOwned + Clone + fmt::Debug + PartialEq + Eq
{
    /// Checks the content's own limits.
    fn validate(&self) -> Result<(), PeerError>;
    /// A short name of the kind, safe to log.
    fn kind_name(&self) -> &'static str;
}

/// The peer protocol's chat content (text, edit, delete, reaction, typing, receipt) is what
/// channels carry.
impl ChannelContent for crate::content::ChatContent {
    fn validate(&self) -> Result<(), PeerError> {
        crate::content::ChatContent::validate(self)
    }

    fn kind_name(&self) -> &'static str {
        crate::content::ChatContent::kind_name(self)
    }
}

/// Who a message mentions (highlights for them).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mentions {
    /// Members mentioned by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserId>,
    /// Roles mentioned (everyone holding one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleId>,
    /// `@everyone` (only honoured from senders with the mention-everyone permission).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub everyone: bool,
}

impl Mentions {
    /// Whether nobody is mentioned.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.roles.is_empty() && !self.everyone
    }

    fn validate(&self) -> Result<(), PeerError> {
        limit_list("mentions", &self.users, MAX_MENTIONS)?;
        limit_list("mentions", &self.roles, MAX_MENTIONS)?;
        if self.users.len() + self.roles.len() > MAX_MENTIONS {
            return Err(PeerError::FieldTooLong {
                field: "mentions",
                limit: MAX_MENTIONS,
            });
        }
        Ok(())
    }
}

/// The plaintext inside a [`ChannelMessage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPayload<C> {
    /// Format version, [`CHANNEL_PAYLOAD_VERSION`].
    pub version: u32,
    /// The message id (receivers deduplicate by it; edits, reactions and replies name it).
    pub id: MessageId,
    /// The space.
    pub space: SpaceId,
    /// The channel; must be the channel the session was shared for.
    pub channel: ChannelId,
    /// The sender; must be the device the session belongs to.
    pub sender: PeerAddress,
    /// When the sender sent it (its clock).
    pub sent_at: Timestamp,
    /// The control-log heads the sender had applied (1 to [`MAX_HEADS`], ascending). Receivers
    /// use them to fetch ops they miss; a message from a member whose removal the receiver has
    /// applied is dropped whatever heads it cites.
    pub heads: Vec<OpId>,
    /// Who it mentions. (A reply names its target in the chat content:
    /// `ChatContent::Text::reply_to`.)
    #[serde(default, skip_serializing_if = "Mentions::is_empty")]
    pub mentions: Mentions,
    /// The chat content.
    pub content: C,
}

impl<C: ChannelContent> ChannelPayload<C> {
    /// Checks the version and every limit.
    pub fn validate(&self) -> Result<(), PeerError> {
        if self.version != CHANNEL_PAYLOAD_VERSION {
            return Err(PeerError::UnsupportedVersion {
                what: "channel payload",
                version: self.version,
            });
        }
        if self.heads.is_empty() {
            return Err(PeerError::InvalidField { field: "heads" });
        }
        check_op_ids("heads", &self.heads, MAX_HEADS)?;
        self.mentions.validate()?;
        self.content.validate()
    }

    /// Encodes as JSON after checking the limits.
    pub fn to_json(&self) -> Result<Vec<u8>, PeerError> {
        self.validate()?;
        let out = serde_json::to_vec(self).map_err(|e| malformed("channel payload", &e))?;
        check_size("channel payload", MAX_CHANNEL_PAYLOAD_BYTES, out.len())?;
        Ok(out)
    }

    /// Decodes decrypted JSON, enforcing version and limits.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PeerError> {
        check_size("channel payload", MAX_CHANNEL_PAYLOAD_BYTES, bytes.len())?;
        probe("channel payload", bytes, CHANNEL_PAYLOAD_VERSION)?;
        let p: Self =
            serde_json::from_slice(bytes).map_err(|e| malformed("channel payload", &e))?;
        p.validate()?;
        Ok(p)
    }
}
