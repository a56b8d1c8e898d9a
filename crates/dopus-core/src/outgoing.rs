//! What the node's logic hands to the outbox or sends at once: one content for one peer. Below
//! both the chat and the contact logic, which each make them.

use crate::store::EnvelopeId;
use dopus_proto::peer::{self, ChatContent, Content, Conversation, ReceiptKind};
use dopus_types::{Timestamp, UserId};

/// A content to deliver to one peer (every device of theirs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The recipient.
    pub peer: UserId,
    /// The envelope id (for a text message, the message id).
    pub id: EnvelopeId,
    /// Its conversation.
    pub conversation: Conversation,
    /// When it was made.
    pub sent_at: Timestamp,
    /// What it says.
    pub content: Content,
    /// Whether it waits in the outbox until the peer acknowledges it (and goes through the
    /// mailbox when the peer is away). Ephemeral contents (typing, receipts) do not.
    pub reliable: bool,
}

/// The `delivered` receipt for one message from `peer`, sent as envelope `id` (unreliable:
/// a lost receipt is answered again when the sender retries).
pub fn delivered_receipt(
    peer: UserId,
    id: EnvelopeId,
    now: Timestamp,
    message: peer::MessageId,
) -> Outgoing {
    Outgoing {
        peer,
        id,
        conversation: Conversation::Direct,
        sent_at: now,
        content: Content::Chat(ChatContent::Receipt {
            receipt: ReceiptKind::Delivered,
            ids: vec![message],
        }),
        reliable: false,
    }
}
