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

/// Longest URL of a link preview, in bytes.
pub const MAX_PREVIEW_URL_BYTES: usize = 2048;
/// Longest preview title, in UTF-8 bytes.
pub const MAX_PREVIEW_TITLE_BYTES: usize = 512;
/// Longest preview description, in UTF-8 bytes.
pub const MAX_PREVIEW_DESCRIPTION_BYTES: usize = 1024;
/// Largest preview image, as a `data:` URL, in bytes (32 KiB of image, base64).
pub const MAX_PREVIEW_IMAGE_BYTES: usize = 44 * 1024;

/// A link preview: what the *sender's* node found at one of the message's links, sent inside
/// the encrypted message so that no receiver ever fetches anything for it (docs/api.md, "Link
/// previews"). A node from before previews refuses a text that carries one (unknown field), so
/// a sender only adds it when the user turned previews on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkPreview {
    /// The link (`http://` or `https://`).
    pub url: String,
    /// The page's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The page's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A small image as a `data:image/(png|jpeg|gif|webp);base64,…` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl LinkPreview {
    /// Checks the documented limits: an http(s) URL, short texts, and an image that is a small
    /// base64 data URL of a raster type (never a remote address or SVG).
    pub fn validate(&self) -> Result<(), PeerError> {
        non_empty("preview.url", &self.url, MAX_PREVIEW_URL_BYTES)?;
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(PeerError::InvalidField {
                field: "preview.url",
            });
        }
        if let Some(t) = &self.title {
            limit_str("preview.title", t, MAX_PREVIEW_TITLE_BYTES)?;
        }
        if let Some(d) = &self.description {
            limit_str("preview.description", d, MAX_PREVIEW_DESCRIPTION_BYTES)?;
        }
        if let Some(image) = &self.image {
            limit_str("preview.image", image, MAX_PREVIEW_IMAGE_BYTES)?;
            let raster = ["png", "jpeg", "gif", "webp"]
                .iter()
                .any(|t| image.starts_with(&format!("data:image/{t};base64,")));
            if !raster {
                return Err(PeerError::InvalidField {
                    field: "preview.image",
                });
            }
        }
        Ok(())
    }
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
        /// A preview of one of its links, when the sender has previews on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preview: Option<Box<LinkPreview>>,
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
            ChatContent::Text { body, preview, .. } => {
                limit_str("body", body, MAX_BODY_BYTES)?;
                preview.as_deref().map_or(Ok(()), LinkPreview::validate)
            }
            ChatContent::Edit { body, .. } => limit_str("body", body, MAX_BODY_BYTES),
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

#[cfg(test)]
mod preview_tests {
    use super::*;

    fn text(preview: LinkPreview) -> ChatContent {
        ChatContent::Text {
            body: "x".into(),
            reply_to: None,
            preview: Some(Box::new(preview)),
        }
    }

    #[test]
    fn previews_are_checked() {
        let ok = LinkPreview {
            url: "https://example.org/".into(),
            title: Some("t".into()),
            description: None,
            image: Some("data:image/webp;base64,AAAA".into()),
        };
        assert!(text(ok.clone()).validate().is_ok());
        for bad in [
            LinkPreview {
                url: "javascript:alert(1)".into(),
                ..ok.clone()
            },
            LinkPreview {
                image: Some("data:image/svg+xml;base64,AAAA".into()),
                ..ok.clone()
            },
            LinkPreview {
                image: Some("http://example.org/a.png".into()),
                ..ok.clone()
            },
            LinkPreview {
                title: Some("t".repeat(MAX_PREVIEW_TITLE_BYTES + 1)),
                ..ok.clone()
            },
            LinkPreview {
                image: Some(format!(
                    "data:image/png;base64,{}",
                    "A".repeat(MAX_PREVIEW_IMAGE_BYTES)
                )),
                ..ok.clone()
            },
        ] {
            assert!(text(bad.clone()).validate().is_err(), "{bad:?}");
        }
        // A text without a preview is written exactly as before (older nodes read it).
        let plain = ChatContent::Text {
            body: "x".into(),
            reply_to: None,
            preview: None,
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"kind":"text","body":"x"}"#
        );
    }
}
