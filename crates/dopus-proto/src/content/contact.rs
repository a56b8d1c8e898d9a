//! Contact requests and their answers, end to end encrypted (the server never learns who asked
//! whom, only that two keys exchanged an envelope).

use crate::peer::{MAX_NAME_BYTES, MAX_NOTE_BYTES, PeerError, limit_str};
use serde::{Deserialize, Serialize};

/// A contact content. Wire kinds: `contact_request`, `contact_accept`, `contact_decline`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContactContent {
    /// Asks to become contacts.
    ContactRequest {
        /// The name the sender suggests for themselves.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// A short note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Accepts a contact request.
    ContactAccept {
        /// The name the sender suggests for themselves.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Declines a contact request.
    ContactDecline,
}

impl ContactContent {
    /// The wire kinds of this subsystem.
    pub const KINDS: &'static [&'static str] =
        &["contact_request", "contact_accept", "contact_decline"];

    /// Checks the documented limits.
    pub fn validate(&self) -> Result<(), PeerError> {
        match self {
            ContactContent::ContactRequest { name, note } => {
                limit_str("name", name.as_deref().unwrap_or(""), MAX_NAME_BYTES)?;
                limit_str("note", note.as_deref().unwrap_or(""), MAX_NOTE_BYTES)
            }
            ContactContent::ContactAccept { name } => {
                limit_str("name", name.as_deref().unwrap_or(""), MAX_NAME_BYTES)
            }
            ContactContent::ContactDecline => Ok(()),
        }
    }

    /// The wire kind, safe to log.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ContactContent::ContactRequest { .. } => "contact_request",
            ContactContent::ContactAccept { .. } => "contact_accept",
            ContactContent::ContactDecline => "contact_decline",
        }
    }
}
