//! The browser leg of a call (docs/media.md, "The browser leg"): the UI's WebRTC connection to
//! its own node over loopback, plugged into the call's media task as a live [`MediaSource`]
//! (what the browser captured goes to the peer) and a [`MediaSink`] (what the peer sends goes
//! down to the browser). Frames are forwarded as they are: never decoded, never re-encoded.
//!
//! ```text
//! browser --SRTP (loopback)--> leg task --LegEvent::Frame--> BrowserSource --> media task --> peer
//! browser <--SRTP (loopback)-- leg task <--send_down------- BrowserSink   <-- media task <-- peer
//! ```

use super::calls::{Live, MediaSink, MediaSource};
use super::{Node, NodeError, NodeResult};
use crate::api::dto;
use dopus_rtc::{BrowserLeg, BrowserLegHandle, LegEvent};
use dopus_types::CallId;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// The cap given to the browser's encoder for a voice call (REMB), bits per second: Opus
/// fullband voice at its best quality fits well under it, and it keeps the browser from
/// aiming at what loopback can carry.
pub const AUDIO_CAP_BPS: u64 = 64_000;
/// The cap for a call whose page offered video, until the path has reported: the video rate a
/// call starts with and the audio beside it. From then on the cap follows the path's video
/// rate (`MediaSink::path_rate`, docs/media.md "Bandwidth from the real path").
pub const VIDEO_CAP_BPS: u64 = dopus_rtc::VIDEO_RATE_START_BPS + AUDIO_CAP_BPS;

/// What the browser captured, as a live source: frames come when the browser sends them.
pub struct BrowserSource {
    events: mpsc::Receiver<LegEvent>,
}

impl MediaSource for BrowserSource {
    fn next_due(&self) -> Option<Duration> {
        None // live: the media task waits in `poll_live`, not on a timer
    }
    fn poll(&mut self, _since_start: Duration) -> Option<(u64, Vec<u8>)> {
        None
    }
    fn total(&self) -> u64 {
        0
    }
    fn is_live(&self) -> bool {
        true
    }
    fn poll_live(&mut self, cx: &mut Context<'_>) -> Poll<Option<Live>> {
        loop {
            return match self.events.poll_recv(cx) {
                Poll::Ready(Some(LegEvent::Frame { rtp_time, data, .. })) => {
                    Poll::Ready(Some(Live::Audio(rtp_time, data)))
                }
                Poll::Ready(Some(LegEvent::Video { rtp_time, data })) => {
                    Poll::Ready(Some(Live::Video(rtp_time, data)))
                }
                Poll::Ready(Some(LegEvent::KeyframeRequest { .. })) => {
                    Poll::Ready(Some(Live::KeyframeRequest))
                }
                Poll::Ready(Some(LegEvent::Connected)) => continue,
                Poll::Ready(Some(LegEvent::Closed { .. }) | None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

/// Sends what the peer sends down to the browser.
pub struct BrowserSink {
    leg: BrowserLegHandle,
}

impl MediaSink for BrowserSink {
    fn push(&mut self, rtp_time: u64, data: &[u8]) -> Result<(), String> {
        // A full queue or a leg that is gone loses the frame (counted in the leg's stats);
        // the call goes on.
        let _ = self.leg.send_down(rtp_time, data.to_vec());
        Ok(())
    }
    fn finish(&mut self) -> Result<(), String> {
        self.leg.close();
        Ok(())
    }
    fn push_video(&mut self, rtp_time: u64, data: &[u8]) -> Result<bool, String> {
        // As audio: a full queue or a leg without video loses the frame, counted by the leg.
        let _ = self.leg.send_video_down(rtp_time, data.to_vec());
        Ok(true)
    }
    fn keyframe_request(&mut self) {
        self.leg.request_keyframe();
    }
    fn path_rate(&mut self, video_bps: u64) {
        // The page's encoder is told the path's video rate and the audio beside it (REMB).
        if self.leg.stats().video {
            self.leg.set_cap(video_bps + AUDIO_CAP_BPS);
        }
    }
}

/// The browser leg's counters for the API.
pub fn leg_dto(leg: &BrowserLegHandle) -> dto::BrowserLegStats {
    let s = leg.stats();
    dto::BrowserLegStats {
        connected: s.connected,
        closed: s.closed,
        frames_up: s.frames_up,
        frames_down: s.frames_down,
        dropped_up: s.dropped_up,
        dropped_down: s.dropped_down,
        throttled_up: s.throttled_up,
        refused_candidates: s.refused_candidates,
        refused_sources: s.refused_sources,
        cap_bps: s.cap_bps,
        remb_sent: s.remb_sent,
        last_refusal: s.last_refusal,
    }
}

/// A call's video counters for the API: the connection's, the media task's and the leg's.
pub fn video_dto(m: &super::calls::MediaStatus, rtc: &dopus_rtc::MediaStats) -> dto::CallVideo {
    let leg = m.browser.as_ref().map(BrowserLegHandle::stats);
    let leg = leg.unwrap_or_default();
    dto::CallVideo {
        negotiated: rtc.video_mid.is_some(),
        browser_video: leg.video,
        sent: m.video_sent,
        received: m.video_received,
        browser_up: leg.video_up,
        browser_down: leg.video_down,
        keyframe_requests_to_peer: rtc.keyframe_requests_sent,
        keyframe_requests_from_peer: m.keyframe_requests_in,
        keyframe_requests_throttled: rtc.keyframe_requests_throttled
            + leg.keyframe_requests_throttled,
        path_rate_bps: rtc.video_rate_bps,
        send_bps: rtc.video_send_bps,
        loss_permille: rtc.video_loss_permille,
    }
}

impl Node {
    /// `POST /calls/{id}/browser`: the UI's offer for its leg of a ringing or active call; the
    /// answer comes back. A second offer replaces the first leg (a reloaded page).
    pub async fn call_browser(
        &self,
        id: &str,
        req: dto::BrowserOffer,
    ) -> NodeResult<dto::BrowserAnswer> {
        let id = CallId::parse(id).map_err(|_| NodeError::Invalid("invalid call id".into()))?;
        let calls = self
            .read(move |v| {
                let c = v.machine.call(&id).ok_or(NodeError::NotFound("call"))?;
                if c.state == dopus_core::machine::CallState::Ended {
                    return Err(NodeError::Conflict("the call has ended".into()));
                }
                Ok(v.live.calls.clone())
            })
            .await?;
        let opened = BrowserLeg::open(&req.sdp, AUDIO_CAP_BPS)
            .map_err(|e| NodeError::Invalid(format!("the browser's offer: {e}")))?;
        if opened.handle.stats().video {
            opened.handle.set_cap(VIDEO_CAP_BPS);
        }
        let leg = opened.handle.clone();
        calls.set_browser(
            id,
            Box::new(BrowserSource {
                events: opened.events,
            }),
            Box::new(BrowserSink { leg: leg.clone() }),
            leg,
        );
        Ok(dto::BrowserAnswer { sdp: opened.answer })
    }
}
