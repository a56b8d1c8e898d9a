//! Chat contents: what people say to each other, and the small signals around it.

use crate::peer::{
    MAX_BODY_BYTES, MAX_EMOJI_BYTES, MessageId, PeerError, limit_ids, limit_str, non_empty,
};
use serde::{Deserialize, Serialize};

/// Whether a reaction is being added or taken back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReactionAction {
    /// Add the reaction.
    Add,
    /// Remove it.
    Remove,
}

/// Which receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// The messages reached the recipient's store (the delivery ack).
    Delivered,
    /// The recipient has seen them (opt-in).
    Read,
}

/// A chat content. Wire kinds: `text`, `file`, `edit`, `delete`, `reaction`, `typing`, `receipt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChatContent {
    /// A chat message.
    Text {
        /// The text.
        body: String,
        /// The message this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
    },
    /// A file: the manifest that lets the recipient fetch, verify and decrypt it
    /// (docs/files.md). Shown in the conversation like a message.
    File {
        /// What was sent.
        file: Box<crate::transfer::FileManifest>,
        /// The message this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
    },
    /// A new text for one of the sender's earlier messages.
    Edit {
        /// The edited message.
        target: MessageId,
        /// Its new text.
        body: String,
    },
    /// Deletes one of the sender's earlier messages.
    Delete {
        /// The deleted message.
        target: MessageId,
    },
    /// Adds or removes a reaction.
    Reaction {
        /// The message reacted to.
        target: MessageId,
        /// The emoji.
        emoji: String,
        /// Add or remove.
        action: ReactionAction,
    },
    /// The sender started or stopped typing (ephemeral, never stored).
    Typing {
        /// Typing now or not.
        active: bool,
    },
    /// Delivery or read receipts.
    Receipt {
        /// Which receipt.
        receipt: ReceiptKind,
        /// The messages it covers (1 to [`crate::peer::MAX_IDS_PER_MESSAGE`]).
        ids: Vec<MessageId>,
    },
}

impl ChatContent {
    /// The wire kinds of this subsystem.
    pub const KINDS: &'static [&'static str] = &[
        "text", "file", "edit", "delete", "reaction", "typing", "receipt",
    ];

    /// Checks the documented limits.
    pub fn validate(&self) -> Result<(), PeerError> {
        match self {
            ChatContent::Text { body, .. } | ChatContent::Edit { body, .. } => {
                limit_str("body", body, MAX_BODY_BYTES)
            }
            ChatContent::File { file, .. } => file.validate(),
            ChatContent::Reaction { emoji, .. } => non_empty("emoji", emoji, MAX_EMOJI_BYTES),
            ChatContent::Receipt { ids, .. } => {
                if ids.is_empty() {
                    return Err(PeerError::InvalidField { field: "ids" });
                }
                limit_ids("ids", ids)
            }
            ChatContent::Delete { .. } | ChatContent::Typing { .. } => Ok(()),
        }
    }

    /// The wire kind, safe to log.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ChatContent::Text { .. } => "text",
            ChatContent::File { .. } => "file",
            ChatContent::Edit { .. } => "edit",
            ChatContent::Delete { .. } => "delete",
            ChatContent::Reaction { .. } => "reaction",
            ChatContent::Typing { .. } => "typing",
            ChatContent::Receipt { .. } => "receipt",
        }
    }

    /// Whether this kind is stored and retried until acknowledged (text, edit, delete,
    /// reaction), as opposed to ephemeral (typing, receipts).
    pub fn is_message(&self) -> bool {
        matches!(
            self,
            ChatContent::Text { .. }
                | ChatContent::File { .. }
                | ChatContent::Edit { .. }
                | ChatContent::Delete { .. }
                | ChatContent::Reaction { .. }
        )
    }
}
