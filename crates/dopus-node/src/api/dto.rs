//! Every JSON shape of the local API as a typed struct or enum: answers and events (`Serialize`),
//! request bodies and queries (`Deserialize`). The web UI's TypeScript types are generated from
//! these (`web/src/api/generated.ts`, see [`typescript`]), so the contract is written once.
//!
//! Rules that hold for every shape here:
//!
//! - Field names are the JSON names (snake_case); ids are strings, times are milliseconds since
//!   the Unix epoch, counters are numbers (all far below 2^53, so a JavaScript `number` holds
//!   them exactly).
//! - A field whose value is not known is present with `null`, not left out (one shape per type),
//!   except the few documented as optional (`?` in TypeScript), which are left out when empty.
//! - The constructors (`from_record`, `new`, …) are pure: they take domain records from
//!   `dopus_core::store` (and the live facts the runtime holds) and never read the store, so the
//!   runtime only calls them.
//! - Shapes the node cannot produce yet are in [`planned`]; every one says what node support it
//!   waits for (docs/api.md, "Planned").
//!
//! Each shape has an insta snapshot (`api/dto/snapshots/`): a snapshot diff is an API change and
//! needs a note in docs/api.md.

mod call;
mod chat;
mod contact;
mod event;
mod node;
pub mod planned;
mod requests;
mod space;
mod transfer;
pub mod typescript;
mod voice;

pub use call::{
    AcceptCall, BrowserAnswer, BrowserLegStats, BrowserOffer, Call, CallAction, CallEnd, CallMedia,
    CallState, CallVideo, Calls, StartCall,
};
pub use chat::{
    Message, MessageKind, MessagePage, Reaction, SearchResult, SearchResults, SentMessages,
};
pub use contact::{
    CandidateType, Connection, ConnectionMode, ConnectionState, Contact, ContactLive, ContactState,
    PeerFacts, Presence, Safety, SasEmoji, Traffic, Verification, VerificationState,
};
pub use event::Event;
pub use node::{
    DeviceKeys, ErrorBody, ErrorCode, ErrorDetail, Me, NodeState, Settings, SignalingState, Status,
    StatusSignaling, Theme,
};
pub use requests::{
    AddContact, ContactPatch, ContactRequest, CreateIdentity, Edit, MarkRead, PageQuery, React,
    SearchQuery, SendMessage, SendMessages, SetStatus, SettingsPatch, Typing, Unlock,
};
pub use space::{
    ChannelOrder, ChannelOverwrite, ChannelPage, ChannelPatch, ChannelPlace, CreateChannel,
    CreateInvite, CreateRole, CreateSpace, JoinSpace, RolePatch, SendChannelMessage, Space,
    SpaceChannel, SpaceChannelKind, SpaceFormerMember, SpaceInvite, SpaceInviteInfo, SpaceMember,
    SpaceMembership, SpacePatch, SpaceRole, TransferSpace, WaitingMessage, WaitingState,
    WithheldReason, op_id_text, parse_op_id, parse_role_id, permission_names, role_id_text,
};
pub use transfer::{
    DroppedSource, FileDimensions, SaveFile, SendFile, Transfer, TransferAction, TransferDirection,
    TransferProgress, TransferReason, TransferState, Transfers,
};

pub use voice::{
    JoinVoice, MyVoice, SpaceVoice, VoiceBrowser, VoiceBrowserAnswer, VoiceChannel, VoiceMedia,
    VoiceParticipant, VoicePatch, VoicePeerMedia, VoiceSlot, VoiceState,
};

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// A user ID as the API writes it: `dopus1…` (bech32m of the identity key, lowercase; accepted
/// in any case).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(transparent)]
pub struct UserId(pub String);

impl From<&dopus_types::UserId> for UserId {
    fn from(u: &dopus_types::UserId) -> Self {
        Self(u.to_string())
    }
}

/// A message id: the UUIDv7 its sender chose, the same on every device.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(transparent)]
pub struct MessageId(pub String);

impl From<&dopus_core::store::MessageId> for MessageId {
    fn from(id: &dopus_core::store::MessageId) -> Self {
        Self(id.to_string())
    }
}

/// Which conversation: the peer's user ID for a direct conversation, the channel's id for a
/// space channel (`dchan1…`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(transparent)]
pub struct ConversationId(pub String);

impl From<&dopus_core::store::ConversationId> for ConversationId {
    fn from(c: &dopus_core::store::ConversationId) -> Self {
        use dopus_core::store::ConversationId as C;
        Self(match c {
            C::Direct(peer) => peer.to_string(),
            C::Channel(channel) => channel.to_string(),
        })
    }
}

/// Milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, TS)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl From<dopus_types::Timestamp> for Timestamp {
    fn from(t: dopus_types::Timestamp) -> Self {
        Self(t.as_millis())
    }
}

/// How far one of our messages has got. Moves forward only (`pending` → `sent` → `delivered` →
/// `read`); `failed` may replace `pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// In the outbox.
    Pending,
    /// Handed to the peer's data channel or the server mailbox.
    Sent,
    /// The peer's device acknowledged it.
    Delivered,
    /// The peer read it (only with their read receipts on).
    Read,
    /// Gave up sending.
    Failed,
}

impl From<dopus_core::store::DeliveryState> for DeliveryState {
    fn from(s: dopus_core::store::DeliveryState) -> Self {
        use dopus_core::store::DeliveryState as D;
        match s {
            D::Pending => Self::Pending,
            D::Sent => Self::Sent,
            D::Delivered => Self::Delivered,
            D::Read => Self::Read,
            D::Failed => Self::Failed,
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Deterministic domain records for the snapshot tests.

    use dopus_core::store::{self, ConversationId, DeliveryState, MessageKind, Seq};
    use dopus_types::Timestamp;

    /// A real user ID from a seed.
    pub fn user(seed: u8) -> dopus_types::UserId {
        dopus_core::identity::Identity::from_seed(&[seed; 32])
            .expect("a fixed seed makes a valid identity")
            .user_id()
    }

    pub fn message_id(n: u128) -> store::MessageId {
        store::MessageId(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0000 + n,
        ))
    }

    /// A received text message from user 2 to user 1.
    pub fn incoming() -> store::Message {
        store::Message {
            preview: None,
            seq: Seq(41),
            id: message_id(1),
            conversation: ConversationId::Direct(user(2)),
            sender: user(2),
            kind: MessageKind::Text,
            body: "hello **there**".into(),
            reply_to: None,
            edited_at: None,
            deleted: false,
            sent_at: Timestamp(1_700_000_000_000),
            received_at: Timestamp(1_700_000_000_250),
            delivery: DeliveryState::Delivered,
        }
    }

    /// One of ours, edited, answering [`incoming`].
    pub fn outgoing() -> store::Message {
        store::Message {
            preview: None,
            seq: Seq(42),
            id: message_id(2),
            conversation: ConversationId::Direct(user(2)),
            sender: user(1),
            kind: MessageKind::Text,
            body: "hi!".into(),
            reply_to: Some(message_id(1)),
            edited_at: Some(Timestamp(1_700_000_060_000)),
            deleted: false,
            sent_at: Timestamp(1_700_000_030_000),
            received_at: Timestamp(1_700_000_030_000),
            delivery: DeliveryState::Read,
        }
    }

    pub fn contact(state: store::ContactState) -> store::Contact {
        store::Contact {
            user_id: user(2),
            display_name: Some("Bob".into()),
            verified: true,
            blocked: false,
            state,
            request_note: None,
            created_at: Timestamp(1_699_000_000_000),
            updated_at: Timestamp(1_699_000_000_000),
        }
    }
}
