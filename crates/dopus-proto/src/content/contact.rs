//! Contact requests and their answers, end to end encrypted (the server never learns who asked
//! whom, only that two keys exchanged an envelope).

use crate::peer::{MAX_NAME_BYTES, MAX_NOTE_BYTES, PeerError, limit_str};
use serde::{Deserialize, Serialize};

/// A contact content. Wire kinds: `contact_request`, `contact_accept`, `contact_decline`,
/// `profile`.
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
    /// The sender's profile card, sent to every accepted contact when it changes (and to a
    /// new contact once accepted). The newest `updated_at` wins.
    Profile {
        /// The sender's display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// A short status line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status_text: Option<String>,
        /// A small image as a `data:image/webp|png|jpeg;base64,…` URL (resized by the sender).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avatar: Option<String>,
        /// When the sender last changed it (ms since the epoch).
        updated_at: u64,
    },
}

/// Longest status line of a profile, in bytes.
pub const MAX_STATUS_BYTES: usize = 280;
/// Longest avatar data URL of a profile, in bytes: an envelope carrying it (base64 inside
/// base64 inside JSON) stays under the signaling server's 64 KiB frame.
pub const MAX_AVATAR_BYTES: usize = 40_000;

/// Whether `url` is an avatar a receiver may show: a base64 data URL of a WebP, PNG or JPEG
/// image within [`MAX_AVATAR_BYTES`], nothing that could be fetched.
pub fn valid_avatar(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("data:image/") else {
        return false;
    };
    let Some((kind, data)) = rest.split_once(";base64,") else {
        return false;
    };
    url.len() <= MAX_AVATAR_BYTES
        && matches!(kind, "webp" | "png" | "jpeg")
        && !data.is_empty()
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

impl ContactContent {
    /// The wire kinds of this subsystem.
    pub const KINDS: &'static [&'static str] = &[
        "contact_request",
        "contact_accept",
        "contact_decline",
        "profile",
    ];

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
            ContactContent::Profile {
                name,
                status_text,
                avatar,
                ..
            } => {
                limit_str("name", name.as_deref().unwrap_or(""), MAX_NAME_BYTES)?;
                limit_str(
                    "status_text",
                    status_text.as_deref().unwrap_or(""),
                    MAX_STATUS_BYTES,
                )?;
                match avatar {
                    Some(a) if !valid_avatar(a) => Err(PeerError::InvalidField { field: "avatar" }),
                    _ => Ok(()),
                }
            }
        }
    }

    /// The wire kind, safe to log.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ContactContent::ContactRequest { .. } => "contact_request",
            ContactContent::ContactAccept { .. } => "contact_accept",
            ContactContent::ContactDecline => "contact_decline",
            ContactContent::Profile { .. } => "profile",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_image_data_urls_are_avatars() {
        assert!(valid_avatar("data:image/webp;base64,UklGRg=="));
        assert!(valid_avatar("data:image/png;base64,iVBORw0KGgo="));
        assert!(!valid_avatar("https://example.org/a.png"));
        assert!(!valid_avatar("data:image/svg+xml;base64,PHN2Zz4="));
        assert!(!valid_avatar("data:image/png;base64,<script>"));
        assert!(!valid_avatar("data:image/png;base64,"));
        let big = format!("data:image/png;base64,{}", "A".repeat(MAX_AVATAR_BYTES));
        assert!(!valid_avatar(&big));
    }

    #[test]
    fn a_profile_round_trips_and_is_checked() {
        let p = ContactContent::Profile {
            name: Some("Alice".into()),
            status_text: Some("on holiday".into()),
            avatar: None,
            updated_at: 1_700_000_000_000,
        };
        let json = serde_json::to_string(&p).expect("encodes");
        assert!(json.contains(r#""kind":"profile""#));
        let back: ContactContent = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, p);
        assert!(p.validate().is_ok());
        let bad = ContactContent::Profile {
            name: None,
            status_text: Some("x".repeat(MAX_STATUS_BYTES + 1)),
            avatar: None,
            updated_at: 1,
        };
        assert!(bad.validate().is_err());
    }
}
