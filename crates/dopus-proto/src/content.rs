//! What a payload says, nested by subsystem: chat, contacts, session control, connection
//! signaling, verification and bulk packing (spaces, calls and transfers add theirs).
//!
//! On the wire every content is one flat JSON object whose `kind` names it (`"text"`,
//! `"contact_request"`, `"rtc"`, …), exactly as before the nesting: the subsystem is found from
//! the kind, so nodes built before the nesting and after it read each other's payloads. Kind
//! names are unique across subsystems; new subsystems use a prefix (`space_`, `call_`, `file_`).
//!
//! Adding a subsystem: an enum with `#[serde(tag = "kind", rename_all = "snake_case",
//! deny_unknown_fields)]`, a `KINDS` list, `validate` and `kind_name`, then one variant here
//! and one line in each `match` below.

mod bulk;
mod call;
mod chat;
mod contact;
mod control;
mod rtc;
mod verify;

pub use bulk::{BulkContent, BulkItem};
pub use call::{CALL_VERSION, CallContent, DeclineReason};
pub use chat::{ChatContent, LinkPreview, ReactionAction, ReceiptKind};
pub use contact::ContactContent;
pub use control::SessionContent;
pub use rtc::{RtcContent, RtcSignal};
pub use verify::{CancelCode, VerificationContent, VerificationStep};

use crate::peer::PeerError;
pub use crate::transfer::TransferContent;
use serde::{Deserialize, Serialize};

/// What a payload says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// People talking: messages, edits, deletes, reactions, typing, receipts.
    Chat(ChatContent),
    /// Contact requests and answers.
    Contact(ContactContent),
    /// The Olm session between the two devices.
    Session(SessionContent),
    /// Signaling for the direct connection.
    Rtc(RtcContent),
    /// SAS verification.
    Verification(VerificationContent),
    /// Several chat messages under one encryption.
    Bulk(BulkContent),
    /// Spaces: control-log ops, sync, invites and joins, Megolm keys and channel messages.
    Space(Box<crate::space::SpaceContent>),
    /// File transfer control: have, revoke, cancel (docs/files.md).
    Transfer(TransferContent),
    /// 1:1 calls: ring, accept, decline, hang up (docs/media.md).
    Call(CallContent),
}

impl Content {
    /// Checks the documented limits.
    pub fn validate(&self) -> Result<(), PeerError> {
        match self {
            Content::Chat(c) => c.validate(),
            Content::Contact(c) => c.validate(),
            Content::Session(c) => c.validate(),
            Content::Rtc(c) => c.validate(),
            Content::Verification(c) => c.validate(),
            Content::Bulk(c) => c.validate(),
            Content::Space(c) => c.validate(),
            Content::Transfer(c) => c.validate(),
            Content::Call(c) => c.validate(),
        }
    }

    /// The wire kind, safe to log.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Content::Chat(c) => c.kind_name(),
            Content::Contact(c) => c.kind_name(),
            Content::Session(c) => c.kind_name(),
            Content::Rtc(c) => c.kind_name(),
            Content::Verification(c) => c.kind_name(),
            Content::Bulk(c) => c.kind_name(),
            Content::Space(c) => c.kind_name(),
            Content::Transfer(c) => c.kind_name(),
            Content::Call(c) => c.kind_name(),
        }
    }

    /// The chat content, if this is one.
    pub fn as_chat(&self) -> Option<&ChatContent> {
        match self {
            Content::Chat(c) => Some(c),
            _ => None,
        }
    }

    /// Whether this content may travel inside a bulk payload: a chat message a sender queues
    /// in its outbox (not receipts or typing, which are never queued, nor control contents).
    pub fn bulk_item_kind(&self) -> bool {
        self.as_chat().is_some_and(ChatContent::is_message)
    }
}

impl From<ChatContent> for Content {
    fn from(c: ChatContent) -> Self {
        Content::Chat(c)
    }
}

impl From<ContactContent> for Content {
    fn from(c: ContactContent) -> Self {
        Content::Contact(c)
    }
}

impl From<SessionContent> for Content {
    fn from(c: SessionContent) -> Self {
        Content::Session(c)
    }
}

impl From<RtcContent> for Content {
    fn from(c: RtcContent) -> Self {
        Content::Rtc(c)
    }
}

impl From<VerificationContent> for Content {
    fn from(c: VerificationContent) -> Self {
        Content::Verification(c)
    }
}

impl From<TransferContent> for Content {
    fn from(c: TransferContent) -> Self {
        Content::Transfer(c)
    }
}

impl From<CallContent> for Content {
    fn from(c: CallContent) -> Self {
        Content::Call(c)
    }
}

impl From<BulkContent> for Content {
    fn from(c: BulkContent) -> Self {
        Content::Bulk(c)
    }
}

impl From<crate::space::SpaceContent> for Content {
    fn from(c: crate::space::SpaceContent) -> Self {
        Content::Space(Box::new(c))
    }
}

impl Serialize for Content {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Content::Chat(c) => c.serialize(s),
            Content::Contact(c) => c.serialize(s),
            Content::Session(c) => c.serialize(s),
            Content::Rtc(c) => c.serialize(s),
            Content::Verification(c) => c.serialize(s),
            Content::Bulk(c) => c.serialize(s),
            Content::Space(c) => c.serialize(s),
            Content::Transfer(c) => c.serialize(s),
            Content::Call(c) => c.serialize(s),
        }
    }
}

/// Reads only the `kind` of a content object (other fields are skipped, not checked).
#[derive(Deserialize)]
struct KindProbe<'a> {
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        let json = raw.get();
        let probe: KindProbe<'_> =
            serde_json::from_str(json).map_err(|_| D::Error::custom("content without a kind"))?;
        let kind = probe.kind.as_ref();
        // Inner errors are not passed on: serde's messages can quote the input.
        let inner = |what: &'static str| move |_| D::Error::custom(what);
        if ChatContent::KINDS.contains(&kind) {
            serde_json::from_str(json)
                .map(Content::Chat)
                .map_err(inner("malformed chat content"))
        } else if ContactContent::KINDS.contains(&kind) {
            serde_json::from_str(json)
                .map(Content::Contact)
                .map_err(inner("malformed contact content"))
        } else if SessionContent::KINDS.contains(&kind) {
            serde_json::from_str(json)
                .map(Content::Session)
                .map_err(inner("malformed session content"))
        } else if RtcContent::KINDS.contains(&kind) {
            serde_json::from_str(json)
                .map(Content::Rtc)
                .map_err(inner("malformed rtc content"))
        } else if VerificationContent::KINDS.contains(&kind) {
            serde_json::from_str(json)
                .map(Content::Verification)
                .map_err(inner("malformed verification content"))
        } else if BulkContent::KINDS.contains(&kind) {
            serde_json::from_str(json)
                .map(Content::Bulk)
                .map_err(inner("malformed bulk content"))
        } else if crate::space::SpaceContent::KINDS.contains(&kind) {
            serde_json::from_str(json)
                .map(|c| Content::Space(Box::new(c)))
                .map_err(inner("malformed space content"))
        } else if TransferContent::KINDS.contains(&kind) {
            serde_json::from_str(json)
                .map(Content::Transfer)
                .map_err(inner("malformed transfer content"))
        } else if CallContent::KINDS.contains(&kind) {
            serde_json::from_str(json)
                .map(Content::Call)
                .map_err(inner("malformed call content"))
        } else {
            Err(D::Error::custom("unknown content kind"))
        }
    }
}
