//! Request bodies and queries. Validation beyond the JSON shape (user ID checksums, body
//! length, known statuses) happens in the handlers and the node, with errors that name the field.

use serde::{Deserialize, Serialize};
use std::fmt;
use ts_rs::TS;

/// `POST /identity`.
#[derive(Clone, Deserialize, Serialize, TS)]
pub struct CreateIdentity {
    /// The name we show to others.
    pub display_name: String,
    /// Encrypts the store; cannot be recovered.
    pub passphrase: String,
}

impl fmt::Debug for CreateIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateIdentity").finish_non_exhaustive()
    }
}

/// `POST /unlock`.
#[derive(Clone, Deserialize, Serialize, TS)]
pub struct Unlock {
    /// The store's passphrase.
    pub passphrase: String,
}

impl fmt::Debug for Unlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unlock").finish_non_exhaustive()
    }
}

/// `PUT /me/status`. Checked by the node (`online`, `away`, `busy` or `invisible`) so the error
/// says which values are allowed.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
pub struct SetStatus {
    /// The new status.
    #[ts(type = "Exclude<Presence, \"offline\">")]
    pub status: String,
}

/// `POST /contacts`.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct AddContact {
    /// Their user ID (checked, with a checksum error for typos).
    #[ts(as = "super::UserId")]
    pub user_id: String,
    /// The name to show for them.
    pub display_name: Option<String>,
}

/// `POST /contacts/{id}/request` (the body may be left out).
#[derive(Clone, Debug, Default, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct ContactRequest {
    /// The name to show for them.
    pub display_name: Option<String>,
    /// A short note sent with the request.
    pub note: Option<String>,
}

/// `PATCH /contacts/{id}`: absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct ContactPatch {
    /// New name.
    pub display_name: Option<String>,
    /// Mark verified (after comparing the safety number) or not.
    pub verified: Option<bool>,
    /// Block (their messages and presence stop) or unblock.
    pub blocked: Option<bool>,
}

/// `GET /conversations/{id}/messages?before=&limit=`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct PageQuery {
    /// Only messages before the one with this `seq`.
    #[ts(as = "Option<f64>")]
    pub before: Option<u64>,
    /// 1 to 200 (default 50).
    #[ts(as = "Option<f64>")]
    pub limit: Option<usize>,
}

/// `POST /conversations/{id}/messages`, and one item of a batch.
#[derive(Clone, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct SendMessage {
    /// The text (1 byte to 16 KiB of UTF-8, not blank).
    pub body: String,
    /// The message it answers.
    #[ts(as = "Option<super::MessageId>")]
    pub reply_to: Option<String>,
}

impl fmt::Debug for SendMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendMessage")
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("reply_to", &self.reply_to)
            .finish()
    }
}

/// `POST /conversations/{id}/messages/batch`.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
pub struct SendMessages {
    /// 1 to 256 messages, stored all or none, sent in order.
    pub messages: Vec<SendMessage>,
}

/// `POST /conversations/{id}/typing`.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
pub struct Typing {
    /// Started (refresh every 3 s) or stopped.
    pub active: bool,
}

/// `POST /conversations/{id}/read`.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
pub struct MarkRead {
    /// The newest message read.
    #[ts(as = "super::MessageId")]
    pub up_to: String,
}

/// `PUT /messages/{id}`.
#[derive(Clone, Deserialize, Serialize, TS)]
pub struct Edit {
    /// The new text.
    pub body: String,
}

impl fmt::Debug for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Edit(<{} bytes>)", self.body.len())
    }
}

/// `POST /messages/{id}/reactions`.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
pub struct React {
    /// Any emoji.
    pub emoji: String,
}

/// `GET /search?q=&limit=`.
#[derive(Clone, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct SearchQuery {
    /// What to look for (every word must match).
    pub q: String,
    /// 1 to 100 (default 20).
    #[ts(as = "Option<f64>")]
    pub limit: Option<usize>,
    /// Only hits older than this `seq` (the previous answer's `next_before`).
    #[ts(as = "Option<f64>")]
    pub before: Option<u64>,
}

impl fmt::Debug for SearchQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchQuery")
            .field("q", &format_args!("<{} bytes>", self.q.len()))
            .field("limit", &self.limit)
            .field("before", &self.before)
            .finish()
    }
}

/// `PUT /settings`: absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct SettingsPatch {
    /// The signaling server URL (`ws://` or `wss://`; `""` removes it).
    pub server_url: Option<String>,
    /// STUN/TURN URLs.
    pub ice_servers: Option<Vec<String>>,
    /// Send read receipts.
    pub read_receipts: Option<bool>,
    /// The UI's theme (checked by the node: `dark` or `light`).
    #[ts(as = "Option<super::Theme>")]
    pub theme: Option<String>,
    /// Fetch link previews for links we send (off by default).
    pub link_previews: Option<bool>,
    /// Connect to contacts through relays only (off by default).
    pub relay_only: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug() {
        let c: CreateIdentity =
            serde_json::from_str(r#"{"display_name":"A","passphrase":"hunter2"}"#).expect("parses");
        assert!(!format!("{c:?}").contains("hunter2"));
        let u: Unlock = serde_json::from_str(r#"{"passphrase":"hunter2"}"#).expect("parses");
        assert!(!format!("{u:?}").contains("hunter2"));
        let e: Edit = serde_json::from_str(r#"{"body":"secret text"}"#).expect("parses");
        assert!(!format!("{e:?}").contains("secret"));
    }

    #[test]
    fn optional_fields_may_be_left_out() {
        let p: ContactPatch = serde_json::from_str("{}").expect("parses");
        assert!(p.display_name.is_none() && p.verified.is_none() && p.blocked.is_none());
        let s: SettingsPatch = serde_json::from_str(r#"{"theme":"light"}"#).expect("parses");
        assert_eq!(s.theme.as_deref(), Some("light"));
        let m: SendMessage = serde_json::from_str(r#"{"body":"hi"}"#).expect("parses");
        assert!(m.reply_to.is_none());
    }
}
