//! Bulk payloads: several chat messages sealed as one Olm message (docs/peer-protocol.md,
//! "Bulk payloads").

use super::chat::ChatContent;
use crate::peer::{Conversation, MAX_BULK_ITEMS, MessageId, PeerError, PeerPayload};
use dopus_types::Timestamp;
use serde::{Deserialize, Serialize};

/// A bulk content. Wire kind: `bulk`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BulkContent {
    /// Several of the sender's messages sealed as one Olm message: each item is taken in exactly
    /// as if it had come in an envelope of its own, with the item's id as that envelope's id and
    /// this payload's sender and recipient. Only sent over a direct channel to a peer whose hello
    /// said it reads them.
    Bulk {
        /// The messages, in the order the sender queued them (1 to [`MAX_BULK_ITEMS`], distinct
        /// ids, chat messages only: text, edit, delete, reaction).
        items: Vec<BulkItem>,
    },
}

impl BulkContent {
    /// The wire kinds of this subsystem.
    pub const KINDS: &'static [&'static str] = &["bulk"];

    /// The items.
    pub fn items(&self) -> &[BulkItem] {
        let BulkContent::Bulk { items } = self;
        items
    }

    /// Checks the documented limits.
    pub fn validate(&self) -> Result<(), PeerError> {
        let items = self.items();
        if items.is_empty() {
            return Err(PeerError::InvalidField { field: "items" });
        }
        if items.len() > MAX_BULK_ITEMS {
            return Err(PeerError::FieldTooLong {
                field: "items",
                limit: MAX_BULK_ITEMS,
            });
        }
        let mut ids = std::collections::HashSet::with_capacity(items.len());
        for item in items {
            if !item.content.is_message() || !ids.insert(item.id) {
                return Err(PeerError::InvalidField { field: "items" });
            }
            item.conversation.validate()?;
            item.content.validate()?;
        }
        Ok(())
    }

    /// The wire kind, safe to log.
    pub fn kind_name(&self) -> &'static str {
        "bulk"
    }
}

/// One message of a bulk payload: what a payload of its own would say, less the bindings it
/// shares with the bulk payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkItem {
    /// The message's id (what the envelope's id would be; receipts and dedupe use it).
    pub id: MessageId,
    /// The conversation.
    pub conversation: Conversation,
    /// When the sender sent it (the sender's clock).
    pub sent_at: Timestamp,
    /// What it says.
    pub content: ChatContent,
}

impl BulkItem {
    /// The payload this item stands for: `bulk`'s bindings, the item's own fields, and no
    /// certificate (the bulk payload carried it if one was due).
    pub fn to_payload(&self, bulk: &PeerPayload) -> PeerPayload {
        PeerPayload {
            version: bulk.version,
            id: self.id,
            sender: bulk.sender.clone(),
            recipient: bulk.recipient.clone(),
            certificate: None,
            conversation: self.conversation.clone(),
            sent_at: self.sent_at,
            content: super::Content::Chat(self.content.clone()),
        }
    }
}
