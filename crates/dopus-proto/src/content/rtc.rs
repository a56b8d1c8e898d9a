//! WebRTC signaling for the direct connection between two devices, carried inside Olm so the
//! server can neither read nor swap the SDP (and with it the DTLS fingerprint).

use crate::peer::{
    MAX_CANDIDATE_BYTES, MAX_SDP_BYTES, PeerError, check_token, limit_str, non_empty,
};
use serde::{Deserialize, Serialize};

/// WebRTC signaling, carried inside Olm so the server can neither read nor swap the SDP (and
/// with it the DTLS fingerprint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RtcSignal {
    /// An SDP offer.
    Offer {
        /// The SDP text.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// The candidate line.
        candidate: String,
        /// The media stream id it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// The m-line index it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_m_line_index: Option<u16>,
    },
    /// No more candidates for this connection attempt.
    EndOfCandidates,
    /// A renegotiation offer on the open connection `conn` that adds media for a call.
    MediaOffer {
        /// The SDP text.
        sdp: String,
    },
    /// The answer to a [`RtcSignal::MediaOffer`].
    MediaAnswer {
        /// The SDP text.
        sdp: String,
    },
    /// An ICE restart offer on the open connection `conn` (new ICE credentials; the DTLS
    /// session, data channels and media stay): the path was lost or an address changed.
    RestartOffer {
        /// The SDP text.
        sdp: String,
    },
    /// The answer to a [`RtcSignal::RestartOffer`].
    RestartAnswer {
        /// The SDP text.
        sdp: String,
    },
}

/// A connection-signaling content. Wire kind: `rtc`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RtcContent {
    /// WebRTC signaling for one connection attempt.
    Rtc {
        /// Identifies the connection attempt, so stale signals are ignored.
        conn: String,
        /// The signal.
        signal: RtcSignal,
    },
}

impl RtcContent {
    /// The wire kinds of this subsystem.
    pub const KINDS: &'static [&'static str] = &["rtc"];

    /// Checks the documented limits.
    pub fn validate(&self) -> Result<(), PeerError> {
        let RtcContent::Rtc { conn, signal } = self;
        check_token("conn", conn)?;
        match signal {
            RtcSignal::Offer { sdp }
            | RtcSignal::Answer { sdp }
            | RtcSignal::MediaOffer { sdp }
            | RtcSignal::MediaAnswer { sdp }
            | RtcSignal::RestartOffer { sdp }
            | RtcSignal::RestartAnswer { sdp } => non_empty("sdp", sdp, MAX_SDP_BYTES),
            RtcSignal::Candidate {
                candidate, sdp_mid, ..
            } => {
                limit_str("candidate", candidate, MAX_CANDIDATE_BYTES)?;
                limit_str(
                    "sdp_mid",
                    sdp_mid.as_deref().unwrap_or(""),
                    MAX_CANDIDATE_BYTES,
                )
            }
            RtcSignal::EndOfCandidates => Ok(()),
        }
    }

    /// The wire kind, safe to log.
    pub fn kind_name(&self) -> &'static str {
        "rtc"
    }
}
