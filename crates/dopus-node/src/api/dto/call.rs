//! 1:1 calls (docs/media.md): the call state, its media and connection, and the requests.

use super::{Connection, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Ringing (on their side if outgoing, on ours if incoming).
    Ringing,
    /// Both sides picked up.
    Active,
    /// Over.
    Ended,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum CallEnd {
    /// It was active; someone hung up.
    Completed,
    /// Declined (by them if outgoing, by us if incoming).
    Declined,
    /// They were in another call (outgoing), or we were (incoming).
    Busy,
    /// Their node does not speak our call protocol version.
    Unsupported,
    /// Nobody picked up within 45 s (outgoing).
    NoAnswer,
    /// The caller stopped ringing or nobody picked up in time (incoming).
    Missed,
    /// We stopped ringing before they picked up (outgoing).
    Cancelled,
}

/// A call's media on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct CallMedia {
    /// The media task runs (the call is active).
    pub running: bool,
    /// The audio m-line is negotiated with the peer.
    pub ready: bool,
    /// Frames played into the call.
    pub played: u64,
    /// Frames the played file holds.
    pub play_total: Option<u64>,
    /// The played file has played out.
    pub play_done: bool,
    /// Frames received and recorded.
    pub recorded: u64,
    /// Where the recording goes (a path on the node's machine).
    pub record_path: Option<String>,
    /// The recording is closed.
    pub record_done: bool,
    /// The last media error.
    pub error: Option<String>,
    /// Frames handed to the connection.
    pub frames_sent: u64,
    /// Frames received on the call's m-line.
    pub frames_received: u64,
    /// Received media refused (an m-line the call did not negotiate, no call attached).
    pub refused_in: u64,
    /// Writes refused (not negotiated yet, a stale call).
    pub refused_out: u64,
    /// Why the last media was refused.
    pub last_refusal: Option<String>,
    /// The UI's loopback leg, once it opened one.
    pub browser: Option<BrowserLegStats>,
    /// Video (camera or screen) on this call.
    pub video: CallVideo,
}

/// A call's video counters (docs/media.md, "Video in calls").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct CallVideo {
    /// The connection with the peer negotiated its video m-line.
    pub negotiated: bool,
    /// The UI's leg offered a video m-line.
    pub browser_video: bool,
    /// Frames sent to the peer (from the browser's camera or screen).
    pub sent: u64,
    /// Frames received from the peer.
    pub received: u64,
    /// Frames received from the browser / sent down to it.
    pub browser_up: u64,
    /// Frames sent down to the browser.
    pub browser_down: u64,
    /// Keyframe requests: from our browser passed to the peer.
    pub keyframe_requests_to_peer: u64,
    /// From the peer passed to our browser's encoder.
    pub keyframe_requests_from_peer: u64,
    /// Dropped for coming within 500 ms of the previous one (either way, on the connection
    /// and on the leg).
    pub keyframe_requests_throttled: u64,
    /// The video rate the path to the peer allows, from the peer's loss reports (the page's
    /// cap is this and the audio's 64 kbit/s); null before the first report.
    pub path_rate_bps: Option<u64>,
    /// The video rate sent to the peer over the last report interval.
    pub send_bps: u64,
    /// The loss the peer last reported on our video, per mille.
    pub loss_permille: Option<u16>,
}

/// A call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct Call {
    /// `dcall1…`.
    pub id: String,
    /// With whom.
    pub user_id: UserId,
    /// We placed it.
    pub outgoing: bool,
    /// Where it stands.
    pub state: CallState,
    /// When it started ringing.
    pub created_at: Timestamp,
    /// When it was picked up.
    pub answered_at: Option<Timestamp>,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// How it ended.
    pub end: Option<CallEnd>,
    /// We hung up, declined or cancelled.
    pub ended_by_me: bool,
    /// How long it has been (or was) active, in milliseconds.
    pub duration_ms: Option<u64>,
    /// Why a media offer or media from the peer was refused, if one was.
    pub refused: Option<String>,
    /// The connection with the peer: path (direct or relayed, candidate types), RTT.
    pub connection: Connection,
    /// The call's media on this node, once it had any.
    pub media: Option<CallMedia>,
}

/// `GET /calls`: the current call first, then the recent ended ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct Calls {
    /// Newest first.
    pub calls: Vec<Call>,
}

/// `POST /calls`: ring a contact. `play` and `record` are absolute paths on the node's machine
/// (the headless source and sink: an Ogg Opus file played into the call, the received Opus
/// packets recorded into an Ogg Opus file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct StartCall {
    /// Whom to call.
    pub user_id: UserId,
    /// An Ogg Opus file to play into the call once it is active.
    #[serde(default)]
    #[ts(optional)]
    pub play: Option<String>,
    /// Where to record what the peer sends.
    #[serde(default)]
    #[ts(optional)]
    pub record: Option<String>,
}

/// `POST /calls/{id}/accept`: pick up, with the same optional media as [`StartCall`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct AcceptCall {
    /// An Ogg Opus file to play into the call.
    #[serde(default)]
    #[ts(optional)]
    pub play: Option<String>,
    /// Where to record what the peer sends.
    #[serde(default)]
    #[ts(optional)]
    pub record: Option<String>,
}

/// `POST /calls/{id}/{decline|hangup}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum CallAction {
    /// Decline an incoming call that rings.
    Decline,
    /// End the call (or stop ringing, or decline).
    Hangup,
}

/// `POST /calls/{id}/browser`: the UI's SDP offer for its loopback leg of the call (one
/// send-and-receive audio m-line; candidates other than loopback are ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct BrowserOffer {
    /// The offer, as `RTCPeerConnection.createOffer` made it.
    pub sdp: String,
}

/// The node's answer for the browser leg.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct BrowserAnswer {
    /// The answer, for `setRemoteDescription`.
    pub sdp: String,
}

/// The browser leg's counters (docs/media.md, "The browser leg").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct BrowserLegStats {
    /// DTLS is up with the browser.
    pub connected: bool,
    /// The leg ended.
    pub closed: bool,
    /// Frames received from the browser.
    pub frames_up: u64,
    /// Frames sent to the browser.
    pub frames_down: u64,
    /// Frames from the browser the node had no room for.
    pub dropped_up: u64,
    /// Frames from the browser dropped because it sent far more than its cap.
    pub throttled_up: u64,
    /// Frames for the browser dropped (queue full, not negotiated yet).
    pub dropped_down: u64,
    /// Candidates in the offer that were not loopback, ignored.
    pub refused_candidates: u64,
    /// Datagrams from outside this machine, refused.
    pub refused_sources: u64,
    /// The cap the browser's encoder is told (REMB), bits per second.
    pub cap_bps: u64,
    /// REMB messages sent.
    pub remb_sent: u64,
    /// Why the last thing was refused or dropped.
    pub last_refusal: Option<String>,
}
