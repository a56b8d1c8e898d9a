//! Spaces (Discord's servers) on the wire: the signed control-log operation, permissions, invite
//! codes, what spaces send between devices inside Olm, and the Megolm-encrypted channel message.
//!
//! Everything here is pure encode/decode/verify. The rules that give the log a meaning (who may
//! do what, how concurrent operations resolve) live in `dopus_core::space`; docs/spaces.md
//! describes both.
//!
//! - [`SpaceOp`]: one signed operation of a space's control log, `{space, author, parents,
//!   depth, created_at, body, signature}`. Its [`OpId`] is the SHA-256 of its canonical signing
//!   bytes (context [`SPACE_OP_CONTEXT`]); the [`dopus_types::SpaceId`] is the hash of the signed
//!   genesis op ([`SpaceOp::genesis_space_id`]). The author is a device certificate, so every
//!   replica checks every op on its own: the identity key certified the device, the device key
//!   signed the op.
//! - [`Permissions`], [`Overwrite`]: Discord-style permission bits and per-channel allow/deny
//!   overwrites for a role or a member.
//! - [`InviteCode`]: what an invite link or QR code carries, printed `dinvite1…` (bech32m).
//! - [`SpaceContent`]: the space kinds of a peer payload (ops and sync, Megolm room keys, key
//!   requests and forwards, join requests and answers, history key bundles).
//! - [`ChannelMessage`] and [`ChannelPayload`]: a Megolm ciphertext with only routing fields in
//!   the clear, and the plaintext inside it.
//!
//! Protocol flow (the node machine drives it; docs/spaces.md):
//! - a member authors an op (parents = its current heads), inserts it into its own log and sends
//!   it to the space's devices as [`SpaceContent::SpaceOps`];
//! - replicas compare heads ([`SpaceContent::SpaceHeads`]) and fetch what they miss
//!   ([`SpaceContent::SpaceOpsRequest`]);
//! - a joiner proves an invite secret to a member ([`SpaceContent::SpaceJoinRequest`]), who writes
//!   the [`OpBody::Join`] and answers ([`SpaceContent::SpaceJoinAnswer`]);
//! - a sender shares its Megolm session for a channel over Olm with the channel's audience
//!   ([`SpaceContent::SpaceRoomKey`]), then sends [`ChannelMessage`]s.
//!
//! Errors never echo the input.

mod canon;
mod channel_message;
mod content;
mod invite;
mod op;
mod permissions;
mod voice;

pub use channel_message::{
    CHANNEL_MESSAGE_VERSION, CHANNEL_PAYLOAD_VERSION, ChannelContent, ChannelMessage,
    ChannelPayload, MAX_CHANNEL_CIPHERTEXT_BYTES, MAX_CHANNEL_MESSAGE_BYTES,
    MAX_CHANNEL_PAYLOAD_BYTES, MAX_MENTIONS, Mentions,
};
pub use content::{
    HistorySession, JoinRefusal, JoinResult, MAX_HISTORY_MESSAGES, MAX_HISTORY_SESSIONS,
    MAX_OPS_PER_MESSAGE, MAX_SESSION_KEY_BYTES, MAX_WANT, SpaceContent, WithheldCode,
    join_proof_bytes, session_announcement_bytes,
};
pub use invite::{
    INVITE_CODE_HRP, InviteCode, InviteCodeError, InviteSecret, MAX_ADMITTERS, MAX_RELAY_BYTES,
};
pub use op::{
    ChannelKind, ChannelPosition, MAX_COLOR, MAX_DESCRIPTION_BYTES, MAX_MEMBER_NAME_BYTES,
    MAX_NAME_BYTES, MAX_OP_BYTES, MAX_OVERWRITES, MAX_PARENTS, MAX_REORDER, MAX_TOPIC_BYTES,
    OpBody, OpError, SPACE_OP_VERSION, SpaceOp, derive_channel_id, derive_role_id,
};
pub use permissions::{Overwrite, OverwriteTarget, Permissions};
pub use voice::{MAX_VOICE_TTL_MS, VOICE_PRESENCE_CONTEXT, VOICE_PRESENCE_VERSION, VoicePresence};

use crate::peer::PeerError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Context of a space op's signature (and of its [`OpId`]).
pub const SPACE_OP_CONTEXT: &str = "dopus/v1/space-op";
/// Context of the hash that makes a genesis op a [`dopus_types::SpaceId`].
pub const SPACE_ID_CONTEXT: &str = "dopus/v1/space-id";
/// Context of the hash that makes a `channel_create` op a [`dopus_types::ChannelId`].
pub const CHANNEL_ID_CONTEXT: &str = "dopus/v1/space-channel-id";
/// Context of the hash that makes a `role_create` op a [`RoleId`].
pub const ROLE_ID_CONTEXT: &str = "dopus/v1/space-role-id";
/// Context of the invite key's signature in a join request.
pub const SPACE_JOIN_CONTEXT: &str = "dopus/v1/space-join";
/// Context of a device's signature announcing one of its Megolm sessions.
pub const MEGOLM_SESSION_CONTEXT: &str = "dopus/v1/megolm-session";

/// Most heads one replica may report or one message may cite.
pub const MAX_HEADS: usize = 64;

/// Defines a fixed-size binary id that travels as unpadded standard base64.
macro_rules! b64_id {
    ($(#[$meta:meta])* $name:ident, $len:literal, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The id with these bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The id's bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Parses the base64 form, refusing any other length.
            pub fn parse(text: &str) -> Result<Self, PeerError> {
                let bytes = dopus_types::b64_decode(text)
                    .map_err(|_| PeerError::InvalidField { field: $what })?;
                bytes
                    .as_slice()
                    .try_into()
                    .map(Self)
                    .map_err(|_| PeerError::InvalidField { field: $what })
            }

            /// The first eight hex digits, for logs.
            pub fn short(&self) -> String {
                self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&dopus_types::b64_encode(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&dopus_types::b64_encode(&self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).map_err(|_| serde::de::Error::custom(concat!("not a ", $what)))
            }
        }
    };
}

b64_id!(
    /// One operation of a control log: SHA-256 of its canonical signing bytes.
    OpId,
    32,
    "op id"
);
b64_id!(
    /// A role of a space, derived from the op that created it ([`derive_role_id`]);
    /// [`RoleId::EVERYONE`] names the role every member holds.
    RoleId,
    16,
    "role id"
);

impl RoleId {
    /// The implicit role of every member (`@everyone`): its permissions are the space's base
    /// permissions; it cannot be deleted, assigned or revoked.
    pub const EVERYONE: RoleId = RoleId([0; 16]);
}

/// Nonce that makes two spaces created with the same name at the same time distinct.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpaceNonce(pub [u8; 16]);

impl fmt::Debug for SpaceNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpaceNonce(..)")
    }
}

impl Serialize for SpaceNonce {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&dopus_types::b64_encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for SpaceNonce {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes =
            dopus_types::b64_decode(&text).map_err(|_| serde::de::Error::custom("not a nonce"))?;
        bytes
            .as_slice()
            .try_into()
            .map(SpaceNonce)
            .map_err(|_| serde::de::Error::custom("not a nonce"))
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

pub(crate) fn limit_str(field: &'static str, value: &str, limit: usize) -> Result<(), PeerError> {
    if value.len() > limit {
        Err(PeerError::FieldTooLong { field, limit })
    } else {
        Ok(())
    }
}

/// A display name (space, role, channel): 1 to `limit` bytes, not blank, no control characters.
pub(crate) fn check_name(field: &'static str, value: &str, limit: usize) -> Result<(), PeerError> {
    limit_str(field, value, limit)?;
    if value.trim().is_empty() || value.chars().any(char::is_control) {
        return Err(PeerError::InvalidField { field });
    }
    Ok(())
}

/// Free text (topic, description): up to `limit` bytes, line breaks and tabs allowed, no other
/// control characters.
pub(crate) fn check_text(field: &'static str, value: &str, limit: usize) -> Result<(), PeerError> {
    limit_str(field, value, limit)?;
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(PeerError::InvalidField { field });
    }
    Ok(())
}

pub(crate) fn limit_list<T>(
    field: &'static str,
    list: &[T],
    limit: usize,
) -> Result<(), PeerError> {
    if list.len() > limit {
        Err(PeerError::FieldTooLong { field, limit })
    } else {
        Ok(())
    }
}

/// A list of op ids: at most `limit`, strictly ascending (so distinct, and one canonical order).
pub(crate) fn check_op_ids(
    field: &'static str,
    ids: &[OpId],
    limit: usize,
) -> Result<(), PeerError> {
    limit_list(field, ids, limit)?;
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(PeerError::InvalidField { field });
    }
    Ok(())
}

pub(crate) fn check_size(what: &'static str, limit: usize, actual: usize) -> Result<(), PeerError> {
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

pub(crate) fn malformed(what: &'static str, e: &serde_json::Error) -> PeerError {
    PeerError::Malformed {
        what,
        line: e.line(),
        column: e.column(),
    }
}

#[cfg(test)]
mod tests;
