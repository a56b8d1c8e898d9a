//! What spaces send between devices inside Olm: the `space_*` kinds of a peer payload.
//!
//! The node machine nests [`SpaceContent`] in the peer payload's content (as
//! `Content::Space(SpaceContent)`); every kind name starts with `space_`, so the two enums never
//! share a tag. Olm already authenticates the sending device and hides everything here from the
//! server.

use super::ChannelMessage;
use super::{
    MAX_HEADS, MEGOLM_SESSION_CONTEXT, OpId, SPACE_JOIN_CONTEXT, SpaceOp, check_op_ids, limit_list,
};
use crate::bundle::DeviceCertificate;
use crate::canonical::signing_bytes;
use crate::peer::{Base64Bytes, PeerAddress, PeerError, check_token};
use dopus_types::{ChannelId, DeviceId, Ed25519Key, Signature, SpaceId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

/// Most ops in one [`SpaceContent::SpaceOps`] (the payload's byte limit also applies: senders
/// chunk by size).
pub const MAX_OPS_PER_MESSAGE: usize = 64;
/// Most op ids one [`SpaceContent::SpaceOpsRequest`] may ask for by id.
pub const MAX_WANT: usize = 256;
/// Largest Megolm session key (vodozemac's signed or exported form, raw bytes).
pub const MAX_SESSION_KEY_BYTES: usize = 512;
/// Most sessions in one [`SpaceContent::SpaceHistoryBundle`] part.
pub const MAX_HISTORY_SESSIONS: usize = 64;
/// Most channel messages in one [`SpaceContent::SpaceHistoryMessages`] part.
pub const MAX_HISTORY_MESSAGES: usize = 64;
/// Most parts one history bundle may announce.
const MAX_HISTORY_PARTS: u32 = 10_000;

/// Why a key request is not answered with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithheldCode {
    /// The requester may not read that channel (now, or when the session was in use).
    Unauthorized,
    /// The answering device does not hold the session (at that index).
    Unavailable,
    /// The space does not share history with new members, and the session predates the
    /// requester.
    HistoryNotShared,
}

/// Why a join request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinRefusal {
    /// No invite of this space has that key: the code is forged or from another space.
    UnknownInvite,
    /// The invite expired.
    Expired,
    /// The invite was revoked.
    Revoked,
    /// The invite was used as many times as it allows.
    Exhausted,
    /// The joiner is banned.
    Banned,
    /// The proof does not verify (wrong secret or tampered request).
    BadProof,
    /// The answering member may not admit (no create-invite permission, or not a member).
    NotAllowed,
    /// The joiner is already a member.
    AlreadyMember,
    /// Too many requests; try again later.
    RateLimited,
}

impl JoinRefusal {
    /// A sentence for the UI and CLI.
    pub fn message(self) -> &'static str {
        match self {
            JoinRefusal::UnknownInvite => {
                "this invite is not valid for that space (forged or mistyped)"
            }
            JoinRefusal::Expired => "this invite has expired",
            JoinRefusal::Revoked => "this invite was revoked",
            JoinRefusal::Exhausted => "this invite has been used as many times as it allows",
            JoinRefusal::Banned => "you are banned from this space",
            JoinRefusal::BadProof => "the invite secret does not match",
            JoinRefusal::NotAllowed => "this member cannot admit anyone",
            JoinRefusal::AlreadyMember => "you are already a member",
            JoinRefusal::RateLimited => "too many join attempts; try again later",
        }
    }
}

/// The answer to a join request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum JoinResult {
    /// Admitted by this `join` op; the log follows in [`SpaceContent::SpaceOps`].
    Accepted {
        /// The join op.
        join: OpId,
    },
    /// Not admitted.
    Refused {
        /// Why.
        reason: JoinRefusal,
    },
}

/// One Megolm session in a history key bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySession {
    /// The channel it encrypts.
    pub channel: ChannelId,
    /// vodozemac's session id.
    pub session_id: String,
    /// The device that owns (sends with) the session.
    pub owner: DeviceCertificate,
    /// The owner device's signature over [`session_announcement_bytes`] (with
    /// `shared_history = true`): proves the session is the owner's even though the key comes
    /// from someone else.
    pub announcement: Signature,
    /// vodozemac's exported session key (unsigned ratchet at some index).
    pub session_key: Base64Bytes,
}

/// What spaces send between devices inside Olm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SpaceContent {
    /// Ops of a space's control log: a new op, or ops someone asked for (in causal order).
    SpaceOps {
        /// The space.
        space: SpaceId,
        /// 1 to [`MAX_OPS_PER_MESSAGE`] ops.
        ops: Vec<SpaceOp>,
    },
    /// "My heads are…": sent on connect and after changes, so peers notice what they miss.
    SpaceHeads {
        /// The space.
        space: SpaceId,
        /// The sender's heads (1 to [`MAX_HEADS`], ascending).
        heads: Vec<OpId>,
    },
    /// "Send me ops…": every op the sender of the request lacks, given its heads, plus these
    /// ids (missing parents).
    SpaceOpsRequest {
        /// The space.
        space: SpaceId,
        /// The requester's heads (ascending; empty: it has nothing).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        have: Vec<OpId>,
        /// Ops wanted by id (ascending).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        want: Vec<OpId>,
    },
    /// A sender's Megolm session for a channel, sent by the owning device itself to each
    /// device of the channel's audience. Accepted only when the Olm sender is the owner.
    SpaceRoomKey {
        /// The space.
        space: SpaceId,
        /// The channel.
        channel: ChannelId,
        /// vodozemac's session id.
        session_id: String,
        /// vodozemac's signed session key (raw bytes).
        session_key: Base64Bytes,
        /// Whether the session may be given to members who join later.
        #[serde(default)]
        shared_history: bool,
        /// The owner device's signature over [`session_announcement_bytes`], kept so the
        /// receiver can later forward the key to others who can check it.
        announcement: Signature,
    },
    /// Asks for a Megolm session the sender cannot decrypt with ("waiting for keys").
    SpaceKeyRequest {
        /// The space.
        space: SpaceId,
        /// The channel the message claims.
        channel: ChannelId,
        /// The missing session.
        session_id: String,
        /// The device that owns the session.
        owner: PeerAddress,
        /// The first message index needed.
        from_index: u32,
        /// The request's id (echoed in the answer).
        request: String,
    },
    /// A session forwarded in answer to a key request (by its owner or by another holder).
    SpaceForwardedKey {
        /// The space.
        space: SpaceId,
        /// The channel.
        channel: ChannelId,
        /// vodozemac's session id.
        session_id: String,
        /// The device that owns the session.
        owner: DeviceCertificate,
        /// The owner's signature over [`session_announcement_bytes`].
        announcement: Signature,
        /// Whether the owner let the session be shared with later members.
        #[serde(default)]
        shared_history: bool,
        /// vodozemac's exported session key (raw bytes).
        session_key: Base64Bytes,
        /// The request this answers.
        request: String,
    },
    /// A key request that will not be answered with a key.
    SpaceKeyWithheld {
        /// The space.
        space: SpaceId,
        /// The session asked for.
        session_id: String,
        /// The request this answers.
        request: String,
        /// Why.
        code: WithheldCode,
    },
    /// A joiner proves an invite's secret to a member who may admit.
    SpaceJoinRequest {
        /// The space.
        space: SpaceId,
        /// The invite's public key (derived from the secret in the code).
        invite_key: Ed25519Key,
        /// The joiner's device certificate.
        certificate: DeviceCertificate,
        /// When the joiner asked (its clock).
        requested_at: Timestamp,
        /// The invite key's signature over [`join_proof_bytes`].
        proof: Signature,
    },
    /// The answer to a join request.
    SpaceJoinAnswer {
        /// The space.
        space: SpaceId,
        /// Admitted or why not.
        result: JoinResult,
    },
    /// A Megolm-encrypted channel message, fanned out over Olm to each reader's devices (direct
    /// connection or mailbox). The Olm layer hides even the session id from the server.
    SpaceMessage {
        /// The space (the payload inside repeats it; the receiver checks both agree).
        space: SpaceId,
        /// The channel (likewise): lets a receiver without the key ask for it.
        channel: ChannelId,
        /// The channel message.
        message: ChannelMessage,
    },
    /// Keys for messages sent before a member joined, from the member who admitted them, when
    /// the space shares history (one part of several).
    SpaceHistoryBundle {
        /// The space.
        space: SpaceId,
        /// This part's number, from 0.
        part: u32,
        /// How many parts there are.
        parts: u32,
        /// Up to [`MAX_HISTORY_SESSIONS`] sessions.
        sessions: Vec<HistorySession>,
    },
    /// Earlier channel messages for a member who just joined a space that shares history,
    /// from a member who kept them: the Megolm ciphertexts exactly as their senders sent them
    /// (each still checked against its session and sender; the relaying member can drop
    /// messages but not forge or alter one).
    SpaceHistoryMessages {
        /// The space.
        space: SpaceId,
        /// The channel they were sent in (each payload repeats it; the receiver checks).
        channel: ChannelId,
        /// Up to [`MAX_HISTORY_MESSAGES`] messages, oldest first.
        messages: Vec<ChannelMessage>,
    },
    /// A member who just joined a space that shares history asks another member (not the
    /// one who admitted it) for the history that member holds: answered with
    /// `space_history_bundle` and `space_history_messages`, as the admitter does. Ephemeral.
    SpaceHistoryRequest {
        /// The space.
        space: SpaceId,
    },
    /// A device's voice channel presence (join, refresh, mute, leave): ephemeral, never in
    /// the mailbox, never stored (docs/media.md, "Voice channels").
    SpaceVoice {
        /// The signed presence (its space is the content's space).
        presence: super::VoicePresence,
    },
}

/// A vodozemac session id: unpadded base64 of a 32-byte Ed25519 key.
fn check_session_id(id: &str) -> Result<(), PeerError> {
    match dopus_types::b64_decode(id) {
        Ok(b) if b.len() == 32 && id.len() == 43 => Ok(()),
        _ => Err(PeerError::InvalidField {
            field: "session_id",
        }),
    }
}

fn check_key(key: &Base64Bytes) -> Result<(), PeerError> {
    if key.0.is_empty() {
        return Err(PeerError::InvalidField {
            field: "session_key",
        });
    }
    if key.0.len() > MAX_SESSION_KEY_BYTES {
        return Err(PeerError::FieldTooLong {
            field: "session_key",
            limit: MAX_SESSION_KEY_BYTES,
        });
    }
    Ok(())
}

impl SpaceContent {
    /// Every kind name, for the payload decoder that finds the subsystem from the `kind`.
    pub const KINDS: &'static [&'static str] = &[
        "space_ops",
        "space_heads",
        "space_ops_request",
        "space_room_key",
        "space_key_request",
        "space_forwarded_key",
        "space_key_withheld",
        "space_join_request",
        "space_join_answer",
        "space_history_bundle",
        "space_message",
        "space_history_messages",
        "space_voice",
        "space_history_request",
    ];

    /// The space the content is about.
    pub fn space(&self) -> &SpaceId {
        match self {
            SpaceContent::SpaceOps { space, .. }
            | SpaceContent::SpaceHeads { space, .. }
            | SpaceContent::SpaceOpsRequest { space, .. }
            | SpaceContent::SpaceRoomKey { space, .. }
            | SpaceContent::SpaceKeyRequest { space, .. }
            | SpaceContent::SpaceForwardedKey { space, .. }
            | SpaceContent::SpaceKeyWithheld { space, .. }
            | SpaceContent::SpaceJoinRequest { space, .. }
            | SpaceContent::SpaceJoinAnswer { space, .. }
            | SpaceContent::SpaceHistoryBundle { space, .. }
            | SpaceContent::SpaceHistoryMessages { space, .. }
            | SpaceContent::SpaceHistoryRequest { space }
            | SpaceContent::SpaceMessage { space, .. } => space,
            SpaceContent::SpaceVoice { presence } => &presence.space,
        }
    }

    /// A short name of the kind, safe to log (the JSON tag).
    pub fn kind_name(&self) -> &'static str {
        match self {
            SpaceContent::SpaceOps { .. } => "space_ops",
            SpaceContent::SpaceHeads { .. } => "space_heads",
            SpaceContent::SpaceOpsRequest { .. } => "space_ops_request",
            SpaceContent::SpaceRoomKey { .. } => "space_room_key",
            SpaceContent::SpaceKeyRequest { .. } => "space_key_request",
            SpaceContent::SpaceForwardedKey { .. } => "space_forwarded_key",
            SpaceContent::SpaceKeyWithheld { .. } => "space_key_withheld",
            SpaceContent::SpaceJoinRequest { .. } => "space_join_request",
            SpaceContent::SpaceJoinAnswer { .. } => "space_join_answer",
            SpaceContent::SpaceHistoryBundle { .. } => "space_history_bundle",
            SpaceContent::SpaceMessage { .. } => "space_message",
            SpaceContent::SpaceHistoryMessages { .. } => "space_history_messages",
            SpaceContent::SpaceVoice { .. } => "space_voice",
            SpaceContent::SpaceHistoryRequest { .. } => "space_history_request",
        }
    }

    /// Checks the documented limits (signatures and certificates are checked by
    /// `dopus_core::space`, which knows what to check them against).
    pub fn validate(&self) -> Result<(), PeerError> {
        match self {
            SpaceContent::SpaceOps { ops, .. } => {
                if ops.is_empty() {
                    return Err(PeerError::InvalidField { field: "ops" });
                }
                limit_list("ops", ops, MAX_OPS_PER_MESSAGE)?;
                for op in ops {
                    op.validate().map_err(|e| match e {
                        super::OpError::Format(p) => p,
                        _ => PeerError::InvalidField { field: "ops" },
                    })?;
                }
                Ok(())
            }
            SpaceContent::SpaceHeads { heads, .. } => {
                if heads.is_empty() {
                    return Err(PeerError::InvalidField { field: "heads" });
                }
                check_op_ids("heads", heads, MAX_HEADS)
            }
            SpaceContent::SpaceOpsRequest { have, want, .. } => {
                check_op_ids("have", have, MAX_HEADS)?;
                check_op_ids("want", want, MAX_WANT)
            }
            SpaceContent::SpaceRoomKey {
                session_id,
                session_key,
                ..
            } => {
                check_session_id(session_id)?;
                check_key(session_key)
            }
            SpaceContent::SpaceKeyRequest {
                session_id,
                request,
                ..
            } => {
                check_session_id(session_id)?;
                check_token("request", request)
            }
            SpaceContent::SpaceForwardedKey {
                session_id,
                session_key,
                request,
                ..
            } => {
                check_session_id(session_id)?;
                check_key(session_key)?;
                check_token("request", request)
            }
            SpaceContent::SpaceKeyWithheld {
                session_id,
                request,
                ..
            } => {
                check_session_id(session_id)?;
                check_token("request", request)
            }
            SpaceContent::SpaceJoinRequest { .. }
            | SpaceContent::SpaceJoinAnswer { .. }
            | SpaceContent::SpaceHistoryRequest { .. } => Ok(()),
            SpaceContent::SpaceMessage { message, .. } => message.validate(),
            SpaceContent::SpaceHistoryMessages { messages, .. } => {
                if messages.is_empty() {
                    return Err(PeerError::InvalidField { field: "messages" });
                }
                limit_list("messages", messages, MAX_HISTORY_MESSAGES)?;
                messages.iter().try_for_each(ChannelMessage::validate)
            }
            SpaceContent::SpaceVoice { presence } => presence.validate(),
            SpaceContent::SpaceHistoryBundle {
                part,
                parts,
                sessions,
                ..
            } => {
                if *parts == 0 || *parts > MAX_HISTORY_PARTS || part >= parts {
                    return Err(PeerError::InvalidField { field: "parts" });
                }
                limit_list("sessions", sessions, MAX_HISTORY_SESSIONS)?;
                for s in sessions {
                    check_session_id(&s.session_id)?;
                    check_key(&s.session_key)?;
                }
                Ok(())
            }
        }
    }
}

/// The bytes an invite key signs in a join request: the space, the invite key itself, the
/// joiner's user, device and device key, and the request time. Binding the joiner's device key
/// means a request seen in transit cannot be replayed for another device.
pub fn join_proof_bytes(
    space: &SpaceId,
    invite_key: &Ed25519Key,
    joiner: &DeviceCertificate,
    requested_at: Timestamp,
) -> Vec<u8> {
    signing_bytes(
        SPACE_JOIN_CONTEXT,
        &[
            space.as_bytes(),
            invite_key.as_bytes(),
            joiner.user_id.key().as_bytes(),
            joiner.device_id.as_str().as_bytes(),
            joiner.keys.ed25519.as_bytes(),
            &requested_at.as_millis().to_be_bytes(),
        ],
    )
}

/// The bytes a device signs to announce one of its Megolm sessions. The session id is the
/// session's own Ed25519 key, so a forwarded copy of the session can be checked against the
/// owner's certified device key: a member who forwards a session cannot pass off a session of
/// its own as someone else's.
pub fn session_announcement_bytes(
    space: &SpaceId,
    channel: &ChannelId,
    session_id: &str,
    owner_user: &UserId,
    owner_device: &DeviceId,
    shared_history: bool,
) -> Vec<u8> {
    signing_bytes(
        MEGOLM_SESSION_CONTEXT,
        &[
            space.as_bytes(),
            channel.as_bytes(),
            session_id.as_bytes(),
            owner_user.key().as_bytes(),
            owner_device.as_str().as_bytes(),
            &[u8::from(shared_history)],
        ],
    )
}
