//! Voice channels in spaces (docs/media.md, "Voice channels"): who is in each channel, our own
//! voice state and media, and the requests.

use super::{Timestamp, UserId};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// One participant of a voice channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct VoiceParticipant {
    /// Who.
    pub user_id: UserId,
    /// From which device.
    pub device_id: String,
    /// This is us.
    pub me: bool,
    /// Their microphone is muted (or they are deafened).
    pub muted: bool,
    /// They hear nothing.
    pub deafened: bool,
    /// They have `speak` in the channel (without it every member's node drops their audio).
    pub may_speak: bool,
    /// Audio from them arrived in the last 300 ms (for ourselves: we sent audio in the last
    /// 300 ms). Headless nodes judge by packets, not levels; see docs/media.md.
    pub speaking: bool,
    /// When we saw them join.
    pub joined_at: Timestamp,
    /// When their presence lapses unless refreshed (`null` for ourselves).
    pub expires_at: Option<Timestamp>,
    /// In our media mesh (only while we are in the same channel; at most 8 participants).
    pub in_mesh: bool,
}

/// A voice channel and who is in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct VoiceChannel {
    /// The channel.
    pub channel_id: String,
    /// Its name.
    pub name: String,
    /// We may join it.
    pub can_connect: bool,
    /// We may speak in it.
    pub can_speak: bool,
    /// Who is in it, ourselves first, then by join time.
    pub participants: Vec<VoiceParticipant>,
}

/// One remote participant's media on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct VoicePeerMedia {
    /// Who.
    pub user_id: UserId,
    /// Attached to the connection with them.
    pub attached: bool,
    /// The audio m-line is negotiated with them.
    pub ready: bool,
    /// Frames sent to them.
    #[ts(type = "number")]
    pub sent: u64,
    /// Frames received from them and kept.
    #[ts(type = "number")]
    pub received: u64,
    /// Frames received from them and dropped (no `speak`, or we are deafened).
    #[ts(type = "number")]
    pub dropped: u64,
    /// Where their audio is recorded (a path on the node's machine).
    pub record_path: Option<String>,
    /// The RFC 6464 level of their last frame in dBov (−127 silent to 0 loudest), when their
    /// frames carry one (a browser; a headless source's do not).
    pub level_dbov: Option<i8>,
}

/// One down slot of the browser leg: a receive m-line of the page and who it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct VoiceSlot {
    /// The m-line's media id (`RTCRtpTransceiver.mid` in the page).
    pub mid: String,
    /// Who it carries now (`null`: nobody).
    pub user_id: Option<UserId>,
}

/// The page's browser leg in a voice channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct VoiceBrowser {
    /// Its down slots, in the page's m-line order.
    pub slots: Vec<VoiceSlot>,
    /// Its counters.
    pub leg: super::BrowserLegStats,
}

/// `POST /voice/browser`: the node's answer to the page's offer, and its down slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct VoiceBrowserAnswer {
    /// The SDP answer.
    pub sdp: String,
    /// The media ids of the down slots, in order (who each carries is in `GET /voice`).
    pub slots: Vec<String>,
}

/// Our voice media.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct VoiceMedia {
    /// The media task runs.
    pub running: bool,
    /// Frames our source played (sent to every ready peer unless muted).
    #[ts(type = "number")]
    pub played: u64,
    /// Frames the played file holds.
    #[ts(type = "number")]
    pub play_total: Option<u64>,
    /// The played file has played out.
    pub play_done: bool,
    /// The recordings are closed.
    pub record_done: bool,
    /// The last media error.
    pub error: Option<String>,
    /// Per remote participant, by user ID.
    pub peers: Vec<VoicePeerMedia>,
    /// The page's browser leg, while it has one.
    pub browser: Option<VoiceBrowser>,
}

/// Where we are in voice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct MyVoice {
    /// The space.
    pub space_id: String,
    /// The channel.
    pub channel_id: String,
    /// Our microphone is muted.
    pub muted: bool,
    /// We hear nothing.
    pub deafened: bool,
    /// We have `speak` in the channel.
    pub may_speak: bool,
    /// When we joined.
    pub joined_at: Timestamp,
}

/// `GET /voice`: where we are and our media; `POST /voice/*` answer it too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct VoiceState {
    /// Where we are (`null`: in no voice channel).
    pub current: Option<MyVoice>,
    /// Our media (`null` until we first join).
    pub media: Option<VoiceMedia>,
    /// Why the last voice presence this node received was refused, if one was.
    pub last_refusal: Option<String>,
}

/// `GET /spaces/{id}/voice`: every voice channel of the space and who is in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SpaceVoice {
    /// The space.
    pub space_id: String,
    /// Its voice channels in display order.
    pub channels: Vec<VoiceChannel>,
}

/// `POST /voice/join`: join a voice channel (leaving the current one). `play` and `record` are
/// absolute paths on the node's machine: an Ogg Opus file played into the channel, and the
/// path from which per-participant recordings are named (`out.opus` records
/// `out-<user id>.opus` beside it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct JoinVoice {
    /// The voice channel.
    pub channel_id: String,
    /// An Ogg Opus file to play.
    #[serde(default)]
    #[ts(optional)]
    pub play: Option<String>,
    /// Where to record the other participants.
    #[serde(default)]
    #[ts(optional)]
    pub record: Option<String>,
    /// Start playing once this many participants are connected (default 1).
    #[serde(default)]
    #[ts(optional)]
    pub wait_for: Option<u32>,
}

/// `POST /voice/state`: mute or deafen (fields left out stay as they are).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct VoicePatch {
    /// Mute our microphone.
    #[serde(default)]
    #[ts(optional)]
    pub muted: Option<bool>,
    /// Hear nothing (and send nothing).
    #[serde(default)]
    #[ts(optional)]
    pub deafened: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_shapes_snapshot() {
        let user = UserId("dopus1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqsl6wn4".into());
        insta::assert_json_snapshot!(SpaceVoice {
            space_id: "space".into(),
            channels: vec![VoiceChannel {
                channel_id: "channel".into(),
                name: "General".into(),
                can_connect: true,
                can_speak: true,
                participants: vec![VoiceParticipant {
                    user_id: user.clone(),
                    device_id: "device".into(),
                    me: false,
                    muted: false,
                    deafened: false,
                    may_speak: true,
                    speaking: true,
                    joined_at: Timestamp(1_700_000_000_000),
                    expires_at: Some(Timestamp(1_700_000_040_000)),
                    in_mesh: true,
                }],
            }],
        });
        insta::assert_json_snapshot!(VoiceState {
            current: Some(MyVoice {
                space_id: "space".into(),
                channel_id: "channel".into(),
                muted: true,
                deafened: false,
                may_speak: true,
                joined_at: Timestamp(1_700_000_000_000),
            }),
            media: Some(VoiceMedia {
                running: true,
                played: 10,
                play_total: Some(250),
                play_done: false,
                record_done: false,
                error: None,
                peers: vec![VoicePeerMedia {
                    user_id: user.clone(),
                    attached: true,
                    ready: true,
                    sent: 10,
                    received: 12,
                    dropped: 0,
                    record_path: Some("/tmp/out-dopus1….opus".into()),
                    level_dbov: Some(-30),
                }],
                browser: Some(VoiceBrowser {
                    slots: vec![
                        VoiceSlot {
                            mid: "1".into(),
                            user_id: Some(user),
                        },
                        VoiceSlot {
                            mid: "2".into(),
                            user_id: None,
                        },
                    ],
                    leg: super::super::BrowserLegStats {
                        connected: true,
                        closed: false,
                        frames_up: 500,
                        frames_down: 480,
                        dropped_up: 0,
                        dropped_down: 0,
                        throttled_up: 0,
                        refused_candidates: 1,
                        refused_sources: 0,
                        cap_bps: 64_000,
                        remb_sent: 10,
                        last_refusal: None,
                    },
                }),
            }),
            last_refusal: None,
        });
    }
}
