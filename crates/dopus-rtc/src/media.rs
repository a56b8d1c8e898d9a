//! Media on a peer connection: one Opus audio m-line and one VP8 video m-line, added together
//! by one renegotiation when the first call starts, frames written by a media task and received
//! frames handed to it, beside (never through) the message channel. The video m-line costs
//! nothing while no one sends on it: camera on and off start and stop the frames, with no
//! renegotiation (docs/media.md, "Video").
//!
//! ```text
//! caller's node (media offerer)                 callee's node
//! h.attach_media(sink) -> AudioSender           h.attach_media(sink) -> AudioSender
//! h.add_audio() -> offer  --- offer (Olm) -->   h.accept_offer(&offer) -> answer
//! h.accept_answer(&answer) <-- answer (Olm) --  sink: MediaEvent::Ready { mid }
//! sink: MediaEvent::Ready { mid }
//! sender.send(rtp_time, opus) ----- SRTP ---->  sink: MediaEvent::Frame(frame)
//! ```
//!
//! What is refused, each counted in [`MediaStats`] with the last reason:
//! - writing before the audio m-line is negotiated, or while no call is attached;
//! - media on an m-line other than the negotiated audio one;
//! - media while no call is attached to the connection (the peer is not in a call with us);
//! - frames the media task has no room for (a slow sink loses frames, never stalls the
//!   connection or its message channel).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// At most one keyframe request per video stream in this time, each way (to the peer, and from
/// the peer to the media task). A keyframe costs five to twenty delta frames: a receiver that
/// asks again before the last one could arrive only makes the sender's rate spike, and a peer
/// that floods requests would keep the sending browser encoding nothing but keyframes. 500 ms
/// is above any round trip a call survives plus the encoder's reaction, so a second request
/// within it is almost always about the same loss, which the keyframe in flight repairs.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Frames at or above this RFC 6464 level (dBov) are marked as voice activity when the node
/// writes the level itself: about −45 dBov, above room noise after a browser's noise
/// suppression and below any voice.
pub const VOICE_ACTIVITY_DBOV: i8 = -45;

/// The video rate a call starts with, before the path has said anything: VP8 at 640×480 and
/// 30 fps looks good at about 1 Mbit/s.
pub const VIDEO_RATE_START_BPS: u64 = 1_000_000;
/// The lowest video rate the controller goes to (VP8 at 320×240 still moves at it).
pub const VIDEO_RATE_MIN_BPS: u64 = 150_000;
/// The highest (a 1:1 call's camera gains nothing visible above it).
pub const VIDEO_RATE_MAX_BPS: u64 = 2_500_000;

/// The video rate of one connection from the path's own reports: the fraction of our video
/// packets the peer lost, from its RTCP receiver reports (str0m's `MediaEgressStats`), drives
/// a loss-based controller of the classic WebRTC kind (RFC 8698's companion, libwebrtc's
/// "loss-based BWE"): above 10 % loss the rate drops by half the loss, under 2 % it grows by
/// 8 % per report while the sender actually uses at least half of it, in between it holds.
/// Why not str0m's TWCC estimator: str0m 0.25 can only enable it when the connection is built,
/// and then pads every connection that has a sending m-line with transport-cc up to 50 kbit/s
/// for as long as it lives, camera on or off, call or no call (docs/media.md, "Bandwidth from
/// the real path").
#[derive(Debug, Clone)]
pub(crate) struct VideoRate {
    cap: u64,
    last: Option<(Instant, u64)>,
}

impl Default for VideoRate {
    fn default() -> Self {
        Self {
            cap: VIDEO_RATE_START_BPS,
            last: None,
        }
    }
}

impl VideoRate {
    /// One egress report of the video m-line: bytes sent so far and the loss the peer reported
    /// since the last one (`None`: no receiver report in between). Returns the new cap and the
    /// rate actually sent since the last report.
    pub(crate) fn on_report(&mut self, now: Instant, bytes: u64, loss: Option<f32>) -> (u64, u64) {
        let sent_bps = match self.last {
            Some((at, b)) if now > at => {
                let secs = now.duration_since(at).as_secs_f64();
                (bytes.saturating_sub(b) as f64 * 8.0 / secs) as u64
            }
            _ => 0,
        };
        self.last = Some((now, bytes));
        if let Some(loss) = loss.filter(|l| l.is_finite()) {
            let loss = f64::from(loss.clamp(0.0, 1.0));
            let cap = self.cap as f64;
            if loss > 0.10 {
                self.cap = ((cap * (1.0 - 0.5 * loss)).round() as u64).max(VIDEO_RATE_MIN_BPS);
            } else if loss < 0.02 && sent_bps >= self.cap / 2 {
                self.cap = ((cap * 1.08).round() as u64).min(VIDEO_RATE_MAX_BPS);
            }
        }
        (self.cap, sent_bps)
    }
}

/// One received media frame (an Opus packet for audio), as str0m reassembled it.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaFrame {
    /// The m-line it came on.
    pub mid: String,
    /// RTP payload type.
    pub pt: u8,
    /// RTP time (48 kHz for Opus), extended to 64 bits by str0m.
    pub rtp_time: u64,
    /// The (extended) RTP sequence numbers of the packets that made it up.
    pub seq_first: u64,
    /// The last of them.
    pub seq_last: u64,
    /// False when packets were missing before this one.
    pub contiguous: bool,
    /// The payload (an Opus packet), exactly as sent.
    pub data: Vec<u8>,
    /// Its RFC 6464 audio level in dBov (−127 silent to 0 loudest), when the sender set the
    /// `ssrc-audio-level` header extension.
    pub audio_level: Option<i8>,
}

impl std::fmt::Debug for MediaFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaFrame")
            .field("mid", &self.mid)
            .field("rtp_time", &self.rtp_time)
            .field("seq", &(self.seq_first..=self.seq_last))
            .field("len", &self.data.len())
            .finish()
    }
}

/// What the connection tells the media task attached to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The audio m-line is negotiated on both sides: writes go through from now on (sent once
    /// per attach, at once if it already was).
    Ready {
        /// Its media id.
        mid: String,
    },
    /// A received frame, in order.
    Frame(MediaFrame),
    /// A received video frame (VP8, RTP time at 90 kHz), in order, reassembled from its RTP
    /// packets by the engine (NACK and RTX already recovered what they could).
    Video(MediaFrame),
    /// The peer asks for a keyframe on the video we send (PLI or FIR), at most one per
    /// [`KEYFRAME_REQUEST_INTERVAL`] (more are counted and dropped).
    KeyframeRequest,
}

/// Counters of the media path of one connection, for the call's diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// The negotiated audio m-line, if any.
    pub audio_mid: Option<String>,
    /// A call is attached (frames are delivered and may be written).
    pub attached: bool,
    /// Frames handed to str0m.
    pub frames_sent: u64,
    /// Frames delivered to the attached media task.
    pub frames_received: u64,
    /// Writes refused (not negotiated, not attached, refused by the engine).
    pub refused_out: u64,
    /// Received frames refused (unknown m-line, no call attached, no room).
    pub refused_in: u64,
    /// Why the last refusal happened.
    pub last_refusal: Option<String>,
    /// The negotiated video m-line, if any.
    pub video_mid: Option<String>,
    /// Video frames handed to str0m.
    pub video_frames_sent: u64,
    /// Video frames received from the peer (delivered or not).
    pub video_frames_received: u64,
    /// Keyframe requests sent to the peer (PLI).
    pub keyframe_requests_sent: u64,
    /// Keyframe requests from the peer handed to the media task.
    pub keyframe_requests_received: u64,
    /// Keyframe requests dropped, either way, for coming within
    /// [`KEYFRAME_REQUEST_INTERVAL`] of the previous one.
    pub keyframe_requests_throttled: u64,
    /// The video rate the path allows, from the peer's loss reports (see `VideoRate`); `None`
    /// before the first report on the video m-line.
    pub video_rate_bps: Option<u64>,
    /// The video rate actually sent over the last report interval.
    pub video_send_bps: u64,
    /// The last loss the peer reported on our video, in per mille.
    pub video_loss_permille: Option<u16>,
}

impl MediaStats {
    pub(crate) fn refuse_in(&mut self, why: String) {
        self.refused_in += 1;
        if self.refused_in <= 3 || self.refused_in.is_power_of_two() {
            tracing::debug!(count = self.refused_in, why = %why, "received media refused");
        }
        self.last_refusal = Some(why);
    }

    pub(crate) fn refuse_out(&mut self, why: String) {
        self.refused_out += 1;
        if self.refused_out <= 3 || self.refused_out.is_power_of_two() {
            tracing::debug!(count = self.refused_out, why = %why, "media write refused");
        }
        self.last_refusal = Some(why);
    }
}

/// What a media task asks the connection to send.
#[derive(Debug)]
pub(crate) enum OutKind {
    /// An Opus packet (RTP time at 48 kHz) with its level, if known.
    Audio(Option<i8>),
    /// A VP8 frame (RTP time at 90 kHz).
    Video,
    /// Ask the peer for a keyframe on the video it sends us.
    KeyframeRequest,
}

/// One frame to write: RTP time and the payload.
#[derive(Debug)]
pub(crate) struct OutFrame {
    pub(crate) generation: u64,
    pub(crate) rtp_time: u64,
    pub(crate) data: Vec<u8>,
    pub(crate) kind: OutKind,
}

/// Writes audio frames on one connection for one attached call. Dropped or stale (after a
/// detach or a new attach), its frames are refused.
#[derive(Debug, Clone)]
pub struct AudioSender {
    pub(crate) generation: u64,
    pub(crate) tx: mpsc::Sender<OutFrame>,
}

/// Frames waiting for the connection task; a full queue refuses the frame (audio is live: a
/// late frame is worth nothing).
pub(crate) const OUT_QUEUE: usize = 64;

impl AudioSender {
    /// Queues one Opus packet with its RTP time (48 kHz). `Err` when the queue is full or the
    /// connection is gone; the frame is lost either way (live audio is never retried).
    pub fn send(&self, rtp_time: u64, data: Vec<u8>) -> Result<(), crate::error::PeerError> {
        self.send_with_level(rtp_time, data, None)
    }

    /// Like [`AudioSender::send`], with the frame's RFC 6464 audio level in dBov (−127 to 0),
    /// sent in the `ssrc-audio-level` header extension so the far side sees who speaks
    /// without decoding.
    pub fn send_with_level(
        &self,
        rtp_time: u64,
        data: Vec<u8>,
        audio_level: Option<i8>,
    ) -> Result<(), crate::error::PeerError> {
        self.queue(rtp_time, data, OutKind::Audio(audio_level))
    }

    /// Queues one VP8 frame (a whole frame, as an encoder produced it or a peer's connection
    /// reassembled it) with its RTP time at 90 kHz; str0m packetizes it. Errors as
    /// [`AudioSender::send`].
    pub fn send_video(&self, rtp_time: u64, data: Vec<u8>) -> Result<(), crate::error::PeerError> {
        self.queue(rtp_time, data, OutKind::Video)
    }

    /// Asks the peer for a keyframe of the video it sends (PLI). Requests within
    /// [`KEYFRAME_REQUEST_INTERVAL`] of the last one are dropped and counted.
    pub fn request_keyframe(&self) -> Result<(), crate::error::PeerError> {
        self.queue(0, Vec::new(), OutKind::KeyframeRequest)
    }

    fn queue(
        &self,
        rtp_time: u64,
        data: Vec<u8>,
        kind: OutKind,
    ) -> Result<(), crate::error::PeerError> {
        self.tx
            .try_send(OutFrame {
                generation: self.generation,
                rtp_time,
                data,
                kind,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    crate::error::PeerError::Media("the connection's media queue is full".into())
                }
                mpsc::error::TrySendError::Closed(_) => crate::error::PeerError::Closed,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_video_rate_falls_with_loss_grows_when_clean_and_used_and_holds_otherwise() {
        let t0 = Instant::now();
        let mut r = VideoRate::default();
        assert_eq!(r.on_report(t0, 0, None).0, VIDEO_RATE_START_BPS);
        // 1 Mbit/s sent, 20 % lost: down by 10 %.
        let (cap, sent) = r.on_report(t0 + S, 125_000, Some(0.2));
        assert_eq!(sent, 1_000_000);
        assert_eq!(cap, 900_000);
        // 5 % lost: held.
        assert_eq!(r.on_report(t0 + 2 * S, 250_000, Some(0.05)).0, 900_000);
        // Clean and used (1 Mbit/s of a 900 kbit/s cap): up 8 %.
        assert_eq!(r.on_report(t0 + 3 * S, 375_000, Some(0.0)).0, 972_000);
        // Clean but idle (the camera is off): held, it would grow into nothing.
        assert_eq!(r.on_report(t0 + 4 * S, 375_000, Some(0.0)).0, 972_000);
        // No report in between: held.
        assert_eq!(r.on_report(t0 + 5 * S, 500_000, None).0, 972_000);
        // Bounds: total loss never goes under the floor, a clean path never over the ceiling.
        let mut t = t0 + 5 * S;
        let mut bytes = 500_000;
        for _ in 0..50 {
            t += S;
            bytes += 125_000;
            r.on_report(t, bytes, Some(1.0));
        }
        assert_eq!(r.on_report(t + S, bytes, Some(1.0)).0, VIDEO_RATE_MIN_BPS);
        let mut r = VideoRate::default();
        for i in 1..100u64 {
            r.on_report(t0 + S * i as u32, i * 400_000, Some(0.0));
        }
        assert_eq!(
            r.on_report(t0 + 100 * S, 100 * 400_000, Some(0.0)).0,
            VIDEO_RATE_MAX_BPS
        );
        // Garbage from the wire (NaN) changes nothing.
        let mut r = VideoRate::default();
        r.on_report(t0, 0, None);
        assert_eq!(
            r.on_report(t0 + S, 125_000, Some(f32::NAN)).0,
            VIDEO_RATE_START_BPS
        );
    }
}
