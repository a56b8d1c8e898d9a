//! Session control: what two devices say about the Olm session between them.

use crate::peer::{MessageId, PeerError, limit_ids};
use serde::{Deserialize, Serialize};

/// A session-control content. Wire kind: `session_reset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SessionContent {
    /// The sender could not decrypt these messages and started a fresh session with this one:
    /// the receiver should re-send them (docs/e2e.md, "Recovery").
    SessionReset {
        /// The envelope ids that failed (may be empty).
        failed: Vec<MessageId>,
    },
}

impl SessionContent {
    /// The wire kinds of this subsystem.
    pub const KINDS: &'static [&'static str] = &["session_reset"];

    /// Checks the documented limits.
    pub fn validate(&self) -> Result<(), PeerError> {
        match self {
            SessionContent::SessionReset { failed } => limit_ids("failed", failed),
        }
    }

    /// The wire kind, safe to log.
    pub fn kind_name(&self) -> &'static str {
        match self {
            SessionContent::SessionReset { .. } => "session_reset",
        }
    }
}
