//! What a connection tells the application ([`PeerEvent`]), below both the engine that makes
//! the events and the task that hands them out.

use crate::diagnostics::{CloseReason, ConnectionState};

/// What a connection tells the application.
///
/// `Debug` leaves out candidate lines (they hold addresses) and message bytes, so events can be
/// logged as they are.
#[derive(Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A local ICE candidate (`candidate:…` attribute value) to send to the peer, encrypted.
    /// Host candidates come first, server-reflexive ones as STUN answers arrive.
    LocalCandidate(String),
    /// STUN discovery finished (answered or timed out); no more candidates until a restart.
    GatheringComplete,
    /// The connection state changed.
    State(ConnectionState),
    /// The message channel is open; `send` goes through from now on.
    ChannelOpen,
    /// A message from the peer, in order, exactly as sent.
    Data(Vec<u8>),
    /// The blob channel (file transfers, beside the message channel) is open;
    /// [`PeerHandle::send_blob_all`](crate::PeerHandle::send_blob_all) goes through from now on.
    BlobOpen,
    /// A message from the peer on the blob channel, in order.
    BlobData(Vec<u8>),
    /// The path was lost (nothing from the peer for [`RtcConfig::path_loss_timeout`](crate::RtcConfig::path_loss_timeout)) and this
    /// side began an ICE restart: send this offer to the peer (encrypted, like the first
    /// one), who applies it with [`PeerHandle::accept_offer`](crate::PeerHandle::accept_offer); apply its answer with
    /// [`PeerHandle::accept_answer`](crate::PeerHandle::accept_answer). The side that made the connection's first offer restarts
    /// at once; the other only when no restart came from it for another timeout, and when both
    /// offer at once the first offerer's offer wins. Data channels and media stay up (no new
    /// DTLS handshake); new candidates (host, srflx, a fresh relay allocation) are trickled as
    /// [`PeerEvent::LocalCandidate`] once the answer is in.
    RestartOffer(String),
    /// The connection ended; the last event.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

impl std::fmt::Debug for PeerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LocalCandidate(c) => {
                let kind = crate::diagnostics::CandidateType::of_candidate(c);
                write!(f, "LocalCandidate({kind:?}, <redacted>)")
            }
            Self::GatheringComplete => f.write_str("GatheringComplete"),
            Self::RestartOffer(_) => f.write_str("RestartOffer(<sdp>)"),
            Self::State(s) => f.debug_tuple("State").field(s).finish(),
            Self::ChannelOpen => f.write_str("ChannelOpen"),
            Self::Data(d) => write!(f, "Data({} bytes)", d.len()),
            Self::BlobOpen => f.write_str("BlobOpen"),
            Self::BlobData(d) => write!(f, "BlobData({} bytes)", d.len()),
            Self::Closed { reason } => f.debug_struct("Closed").field("reason", reason).finish(),
        }
    }
}
