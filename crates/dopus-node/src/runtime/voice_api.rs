//! The node's voice channel operations for the API: who is where, join (with the headless
//! source and per-participant recordings), leave, mute and deafen (docs/api.md, "Voice").

use super::calls::{FileSource, MediaSource};
use super::views::Live;
use super::voice::{RecordTo, VoiceMediaStatus};
use super::{Node, NodeError, NodeResult};
use crate::api::dto;
use dopus_core::machine::NodeMachine;
use dopus_types::{ChannelId, SpaceId};
use std::path::PathBuf;

/// Most participants a headless join may wait for before playing.
const MAX_WAIT_FOR: u32 = 7;

/// The voice channels of `space` as the API shows them (`None`: no such space).
pub fn space_voice(machine: &NodeMachine, live: &Live, space: &SpaceId) -> Option<dto::SpaceVoice> {
    let media = live.voice.status();
    let me = machine.me();
    let channels = machine.voice_channels(space)?;
    Some(dto::SpaceVoice {
        space_id: space.to_string(),
        channels: channels
            .into_iter()
            .map(|c| dto::VoiceChannel {
                channel_id: c.channel.to_string(),
                name: c.name,
                can_connect: c.can_connect,
                can_speak: c.can_speak,
                participants: c
                    .participants
                    .into_iter()
                    .map(|p| {
                        let mine = p.user == me;
                        dto::VoiceParticipant {
                            user_id: (&p.user).into(),
                            device_id: p.device.to_string(),
                            me: mine,
                            muted: p.muted,
                            deafened: p.deafened,
                            may_speak: p.may_speak,
                            speaking: if mine {
                                media.self_speaking()
                            } else {
                                p.in_mesh && p.may_speak && media.speaking(&p.user)
                            },
                            joined_at: p.joined_at.into(),
                            expires_at: p.expires_at.map(Into::into),
                            in_mesh: p.in_mesh,
                        }
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn media_dto(m: VoiceMediaStatus) -> dto::VoiceMedia {
    dto::VoiceMedia {
        running: m.running,
        played: m.played,
        play_total: m.play_total,
        play_done: m.play_done,
        record_done: m.record_done,
        error: m.error,
        peers: m
            .peers
            .into_iter()
            .map(|(u, p)| dto::VoicePeerMedia {
                user_id: (&u).into(),
                attached: p.attached,
                ready: p.ready,
                sent: p.sent,
                received: p.received,
                dropped: p.dropped,
                record_path: p.record_path,
                level_dbov: p.level,
            })
            .collect(),
        browser: m.browser.map(|b| dto::VoiceBrowser {
            slots: b
                .slots
                .into_iter()
                .map(|(mid, user)| dto::VoiceSlot {
                    mid,
                    user_id: user.as_ref().map(Into::into),
                })
                .collect(),
            leg: super::browser_leg::leg_dto(&b.leg),
        }),
    }
}

fn voice_state(machine: &NodeMachine, live: &Live) -> dto::VoiceState {
    let status = live.voice.status();
    let ever = status.running || status.record_done || !status.peers.is_empty();
    dto::VoiceState {
        current: machine.my_voice().map(|v| dto::MyVoice {
            space_id: v.space.to_string(),
            channel_id: v.channel.to_string(),
            muted: v.muted,
            deafened: v.deafened,
            may_speak: v.may_speak,
            joined_at: v.joined_at.into(),
        }),
        media: ever.then(|| media_dto(status)),
        last_refusal: machine.voice_refusal().map(str::to_owned),
    }
}

/// The headless source and the recordings from the request's paths (read and checked before
/// joining, so a bad path is a clear error and no join).
async fn media(
    play: Option<String>,
    record: Option<String>,
) -> NodeResult<(Option<Box<dyn MediaSource>>, Option<RecordTo>)> {
    for p in play.iter().chain(&record) {
        if !PathBuf::from(p).is_absolute() {
            return Err(NodeError::Invalid(
                "play and record must be absolute paths".into(),
            ));
        }
    }
    tokio::task::spawn_blocking(move || {
        let source = match play {
            Some(p) => Some(Box::new(
                FileSource::open(&PathBuf::from(p)).map_err(NodeError::Invalid)?,
            ) as Box<dyn MediaSource>),
            None => None,
        };
        let record = match record {
            Some(p) => Some(RecordTo::from_path(&PathBuf::from(p)).map_err(NodeError::Invalid)?),
            None => None,
        };
        Ok((source, record))
    })
    .await
    .map_err(|e| NodeError::Internal(e.to_string().into()))?
}

impl Node {
    /// `GET /voice`.
    pub async fn voice(&self) -> NodeResult<dto::VoiceState> {
        self.read(|v| Ok(voice_state(v.machine, v.live))).await
    }

    /// `GET /spaces/{id}/voice`.
    pub async fn space_voice(&self, space: SpaceId) -> NodeResult<dto::SpaceVoice> {
        self.read(move |v| {
            space_voice(v.machine, v.live, &space).ok_or(NodeError::NotFound("space"))
        })
        .await
    }

    /// `POST /voice/join`.
    pub async fn voice_join(&self, req: dto::JoinVoice) -> NodeResult<dto::VoiceState> {
        let channel = ChannelId::parse(&req.channel_id)
            .map_err(|_| NodeError::Invalid("invalid channel id".into()))?;
        let wait_for = req.wait_for.unwrap_or(1);
        if wait_for == 0 || wait_for > MAX_WAIT_FOR {
            return Err(NodeError::Invalid(format!(
                "wait_for must be 1 to {MAX_WAIT_FOR}"
            )));
        }
        let (source, record) = media(req.play, req.record).await?;
        self.write(move |cx| {
            let space = cx
                .machine
                .channel_space(&channel)
                .ok_or(NodeError::NotFound("channel"))?;
            cx.machine
                .voice_join(cx.now, space, channel)
                .map_err(|e| cx.command(e))?;
            // Each join sets its own media (none for a plain join from the UI).
            cx.live
                .voice
                .set_media(channel, source, record, wait_for as usize);
            Ok(voice_state(cx.machine, cx.live))
        })
        .await
    }

    /// `POST /voice/browser`: the page's offer for its leg in the voice channel we are in (one
    /// m-line up, one receive m-line per participant it can hear); the answer and the down
    /// slots come back. A second offer replaces the first leg (a reloaded page).
    pub async fn voice_browser(
        &self,
        req: dto::BrowserOffer,
    ) -> NodeResult<dto::VoiceBrowserAnswer> {
        let (channel, voice) = self
            .read(|v| {
                let mine = v
                    .machine
                    .my_voice()
                    .ok_or_else(|| NodeError::Conflict("not in a voice channel".into()))?;
                Ok((mine.channel, v.live.voice.clone()))
            })
            .await?;
        let opened = dopus_rtc::BrowserLeg::open(&req.sdp, super::browser_leg::AUDIO_CAP_BPS)
            .map_err(|e| NodeError::Invalid(format!("the browser's offer: {e}")))?;
        let answer = dto::VoiceBrowserAnswer {
            sdp: opened.answer.clone(),
            slots: opened.slots.clone(),
        };
        voice.set_browser(channel, opened);
        Ok(answer)
    }

    /// `POST /voice/leave`.
    pub async fn voice_leave(&self) -> NodeResult<dto::VoiceState> {
        self.write(move |cx| {
            cx.machine.voice_leave(cx.now).map_err(|e| cx.command(e))?;
            Ok(voice_state(cx.machine, cx.live))
        })
        .await
    }

    /// `POST /voice/state`.
    pub async fn voice_patch(&self, req: dto::VoicePatch) -> NodeResult<dto::VoiceState> {
        self.write(move |cx| {
            cx.machine
                .voice_set(cx.now, req.muted, req.deafened)
                .map_err(|e| cx.command(e))?;
            Ok(voice_state(cx.machine, cx.live))
        })
        .await
    }
}
