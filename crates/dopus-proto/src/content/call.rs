//! 1:1 calls: ring, accept, decline, hang up (docs/media.md). The media itself is negotiated on
//! the direct connection (`rtc` contents `media_offer`/`media_answer`), never here.

use crate::peer::PeerError;
use dopus_types::CallId;
use serde::{Deserialize, Serialize};

/// The version of the call protocol this node speaks (`call_invite.v`).
pub const CALL_VERSION: u8 = 1;

/// Why a call was declined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// The person said no.
    Declined,
    /// Already in another call.
    Busy,
    /// The invite's protocol version is not one this node speaks.
    Unsupported,
}

/// A call content. Wire kinds: `call_invite`, `call_accept`, `call_decline`, `call_hangup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CallContent {
    /// Rings the peer.
    CallInvite {
        /// The call.
        call: CallId,
        /// The call protocol version of the caller ([`CALL_VERSION`]).
        v: u8,
        /// Audio is offered (the only medium so far).
        audio: bool,
    },
    /// The callee picked up.
    CallAccept {
        /// The call.
        call: CallId,
    },
    /// The callee did not take the call.
    CallDecline {
        /// The call.
        call: CallId,
        /// Why.
        reason: DeclineReason,
    },
    /// Either side ended the call (or the caller stopped ringing).
    CallHangup {
        /// The call.
        call: CallId,
    },
}

impl CallContent {
    /// The wire kinds of this subsystem.
    pub const KINDS: &'static [&'static str] =
        &["call_invite", "call_accept", "call_decline", "call_hangup"];

    /// Checks the documented limits (ids and enums are checked by parsing).
    pub fn validate(&self) -> Result<(), PeerError> {
        match self {
            CallContent::CallInvite { v, .. } if *v == 0 => {
                Err(PeerError::InvalidField { field: "v" })
            }
            _ => Ok(()),
        }
    }

    /// The wire kind, safe to log.
    pub fn kind_name(&self) -> &'static str {
        match self {
            CallContent::CallInvite { .. } => "call_invite",
            CallContent::CallAccept { .. } => "call_accept",
            CallContent::CallDecline { .. } => "call_decline",
            CallContent::CallHangup { .. } => "call_hangup",
        }
    }

    /// The call it is about.
    pub fn call(&self) -> CallId {
        match self {
            CallContent::CallInvite { call, .. }
            | CallContent::CallAccept { call }
            | CallContent::CallDecline { call, .. }
            | CallContent::CallHangup { call } => *call,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Content;

    #[test]
    fn call_contents_round_trip_flat_with_their_kind() {
        let call = CallId::from_bytes([7; 16]);
        for c in [
            CallContent::CallInvite {
                call,
                v: CALL_VERSION,
                audio: true,
            },
            CallContent::CallAccept { call },
            CallContent::CallDecline {
                call,
                reason: DeclineReason::Busy,
            },
            CallContent::CallHangup { call },
        ] {
            let content = Content::Call(c.clone());
            let json = serde_json::to_string(&content).unwrap();
            assert!(
                json.contains(&format!("\"kind\":\"{}\"", c.kind_name())),
                "{json}"
            );
            let back: Content = serde_json::from_str(&json).unwrap();
            assert_eq!(back, content);
            assert!(content.validate().is_ok());
        }
        let bad = r#"{"kind":"call_accept","call":"nope"}"#;
        assert!(serde_json::from_str::<Content>(bad).is_err());
        let extra = format!(r#"{{"kind":"call_hangup","call":"{call}","x":1}}"#);
        assert!(serde_json::from_str::<Content>(&extra).is_err());
        let v0 = Content::Call(CallContent::CallInvite {
            call,
            v: 0,
            audio: true,
        });
        assert!(v0.validate().is_err());
    }
}
