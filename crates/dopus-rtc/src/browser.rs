//! The browser leg: one WebRTC connection between the UI in a browser and its own node, over
//! loopback only. The browser captures and encodes (Opus), the node forwards its frames into the
//! call without decoding, and the frames of the call come back down the same m-line.
//!
//! Protocol flow:
//! 1. The page creates an offer with one send-and-receive audio m-line and POSTs it to its node
//!    over the authenticated local API.
//! 2. [`BrowserLeg::open`] binds one UDP socket on 127.0.0.1, builds an ICE-lite str0m `Rtc`
//!    whose only candidate is that socket, drops every remote candidate that is not a loopback
//!    address, and answers. The task that owns the `Rtc` owns the socket from the start, so the
//!    browser's first checks wait in the socket, never dropped (media-spike.md, pitfall 4).
//! 3. The browser (ICE controlling) checks and starts DTLS; datagrams whose source is not an
//!    address of this machine are refused and counted (a browser may send from its LAN socket
//!    to our loopback candidate, media-spike.md pitfall 5: that is still this machine).
//! 4. Upstream: each Opus frame from the browser becomes a [`LegEvent::Frame`] (with its RFC
//!    6464 level when the browser sent the `ssrc-audio-level` extension, as Chromium does).
//!    Downstream: [`BrowserLegHandle::send_down`] writes a frame with its RTP time on the first
//!    slot, [`BrowserLegHandle::send_down_to`] on any slot, with a level.
//!
//! Slots: the up m-line is the first audio m-line the browser sends on (`sendrecv` or
//! `sendonly`); the down slots are the audio m-lines it receives on (`sendrecv` or `recvonly`),
//! in offer order ([`OpenedLeg::slots`]). A 1:1 call offers one `sendrecv` m-line: up and the
//! only slot are the same. A voice channel offers one `sendonly` m-line and one `recvonly`
//! m-line per remote participant it can hear; the node says which slot carries whom.
//!    Video: the first video m-line the browser sends on carries its camera (or the screen,
//!    which replaces it on the same m-line): VP8 frames up as [`LegEvent::Video`]; the video
//!    m-lines it receives on are the video slots ([`OpenedLeg::video_slots`], in offer order),
//!    written with [`BrowserLegHandle::send_video_down_to`] (a call's one `sendrecv` video
//!    m-line is both the up one and slot 0, [`BrowserLegHandle::send_video_down`]). Keyframe requests cross it both ways: the browser's
//!    PLI or FIR on the video we send it becomes [`LegEvent::KeyframeRequest`], and
//!    [`BrowserLegHandle::request_keyframe`] sends a PLI to the browser's encoder; each way at
//!    most one per [`crate::KEYFRAME_REQUEST_INTERVAL`], the rest counted and dropped.
//! 5. About once a second the leg sends REMB with the cap set by the node
//!    ([`BrowserLegHandle::set_cap`]): the browser's congestion control sees only loopback,
//!    so without it the encoder would aim at what loopback can carry, not the real path.
//! 6. The leg ends on [`BrowserLegHandle::close`], when every handle is dropped, when the
//!    browser is silent for [`SILENCE_TIMEOUT`] after connecting, or when it does not connect
//!    within [`CONNECT_TIMEOUT`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::media::{Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::error::PeerError;

/// The browser must connect within this time after the answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A connected browser that sends nothing (not even ICE consent checks) for this long is gone.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often REMB is sent to the browser.
const REMB_INTERVAL: Duration = Duration::from_secs(1);
/// The largest offer accepted (Chromium's audio-only offer is about 4 KB).
pub const MAX_OFFER: usize = 64 * 1024;
/// The lowest and highest cap the node may set (Opus needs 6 kbit/s; above 10 Mbit/s a
/// loopback cap means nothing).
const CAP_RANGE: (u64, u64) = (6_000, 10_000_000);
/// A browser that sends more than this many times its cap within one second has the rest of
/// that second's frames dropped: REMB is a request, and a page that ignores it must not push
/// an unbounded rate into the call.
pub const OVER_CAP: u64 = 4;
/// Upstream frames waiting for the node; a full queue drops the newest (live audio).
const UP_QUEUE: usize = 256;
/// Downstream frames waiting for the leg (all slots).
const DOWN_QUEUE: usize = 256;
/// Most audio m-lines a browser may offer (one up, the rest down).
pub const MAX_SLOTS: usize = 16;

/// What the leg tells the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// DTLS is up with the browser: frames flow from now on.
    Connected,
    /// An Opus frame captured by the browser, with its RTP time (48 kHz).
    Frame {
        /// RTP time, extended to 64 bits.
        rtp_time: u64,
        /// The Opus packet, exactly as the browser encoded it.
        data: Vec<u8>,
        /// Its RFC 6464 level in dBov (−127 silent to 0 loudest), if the browser sent one.
        level: Option<i8>,
    },
    /// A VP8 frame captured by the browser (camera or screen), with its RTP time (90 kHz).
    Video {
        /// RTP time, extended to 64 bits.
        rtp_time: u64,
        /// The frame, exactly as the browser encoded it (str0m reassembled its packets).
        data: Vec<u8>,
    },
    /// The browser asks for a keyframe of the video the leg sends it on video slot `slot` (it
    /// lost a picture, or a decoder just started), at most one per
    /// [`crate::KEYFRAME_REQUEST_INTERVAL`] per slot.
    KeyframeRequest {
        /// The video slot whose viewer asked (see [`OpenedLeg::video_slots`]).
        slot: usize,
    },
    /// The leg ended; the last event.
    Closed {
        /// Why (safe to show: no address, no key).
        reason: String,
    },
}

/// Counters of one browser leg, for the call's diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegStats {
    /// DTLS is up with the browser.
    pub connected: bool,
    /// The leg ended.
    pub closed: bool,
    /// Frames received from the browser.
    pub frames_up: u64,
    /// Frames written to the browser.
    pub frames_down: u64,
    /// Upstream frames the node had no room for.
    pub dropped_up: u64,
    /// Upstream frames dropped because the browser sent far more than its cap
    /// ([`OVER_CAP`] times `cap_bps` within one second).
    pub throttled_up: u64,
    /// Downstream frames dropped (queue full, not negotiated yet, refused by the engine).
    pub dropped_down: u64,
    /// Remote candidates removed from the offer (not loopback).
    pub refused_candidates: u64,
    /// Datagrams refused because their source is not an address of this machine.
    pub refused_sources: u64,
    /// The cap sent to the browser by REMB, bits per second.
    pub cap_bps: u64,
    /// REMB messages sent.
    pub remb_sent: u64,
    /// Why the last thing was refused or dropped.
    pub last_refusal: Option<String>,
    /// The offer has a video m-line (camera or screen).
    pub video: bool,
    /// Video frames received from the browser / written to it.
    pub video_up: u64,
    /// Video frames written to the browser.
    pub video_down: u64,
    /// Keyframe requests from the browser passed on / sent to the browser.
    pub keyframe_requests_up: u64,
    /// Keyframe requests sent to the browser's encoder.
    pub keyframe_requests_down: u64,
    /// Keyframe requests dropped (either way) for coming too soon after the last one.
    pub keyframe_requests_throttled: u64,
}

impl LegStats {
    fn refuse(&mut self, why: String) {
        tracing::debug!(why = %why, "browser leg refusal");
        self.last_refusal = Some(why);
    }
}

enum Cmd {
    Cap(u64),
    KeyframeRequest,
    Close,
}

/// One frame for the browser: audio or video, its slot, RTP time, payload and (audio) level.
type DownFrame = (bool, usize, u64, Vec<u8>, Option<i8>);

/// Drives one browser leg; cheap to clone. When every clone is dropped the leg closes.
#[derive(Clone)]
pub struct BrowserLegHandle {
    cmd: mpsc::Sender<Cmd>,
    down: mpsc::Sender<DownFrame>,
    stats: Arc<Mutex<LegStats>>,
}

impl std::fmt::Debug for BrowserLegHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserLegHandle").finish_non_exhaustive()
    }
}

impl BrowserLegHandle {
    /// Queues one Opus frame for the browser. `Err` when the queue is full or the leg is gone;
    /// the frame is lost either way (live audio is never retried) and counted.
    pub fn send_down(&self, rtp_time: u64, data: Vec<u8>) -> Result<(), PeerError> {
        self.send_down_to(0, rtp_time, data, None)
    }

    /// Queues one Opus frame for the browser on down slot `slot` (see [`OpenedLeg::slots`]),
    /// with its RFC 6464 level in dBov if known (sent in the `ssrc-audio-level` extension, so
    /// the page reads who speaks from `getSynchronizationSources()`). Errors as
    /// [`BrowserLegHandle::send_down`]; a slot the leg does not have drops the frame, counted.
    pub fn send_down_to(
        &self,
        slot: usize,
        rtp_time: u64,
        data: Vec<u8>,
        level: Option<i8>,
    ) -> Result<(), PeerError> {
        self.queue_down((false, slot, rtp_time, data, level))
    }

    /// Queues one VP8 frame (RTP time at 90 kHz) for the browser's first video slot (a call's
    /// video m-line). Errors as [`BrowserLegHandle::send_down`]; a leg without video drops it,
    /// counted.
    pub fn send_video_down(&self, rtp_time: u64, data: Vec<u8>) -> Result<(), PeerError> {
        self.send_video_down_to(0, rtp_time, data)
    }

    /// Queues one VP8 frame for video slot `slot` (see [`OpenedLeg::video_slots`]). Errors as
    /// [`BrowserLegHandle::send_down`]; a slot the leg does not have drops the frame, counted.
    pub fn send_video_down_to(
        &self,
        slot: usize,
        rtp_time: u64,
        data: Vec<u8>,
    ) -> Result<(), PeerError> {
        self.queue_down((true, slot, rtp_time, data, None))
    }

    /// Asks the browser's encoder for a keyframe (PLI on the video it sends), at most once per
    /// [`crate::KEYFRAME_REQUEST_INTERVAL`] (more are counted and dropped).
    pub fn request_keyframe(&self) {
        let _ = self.cmd.try_send(Cmd::KeyframeRequest);
    }

    fn queue_down(&self, frame: DownFrame) -> Result<(), PeerError> {
        self.down.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                let why = "the browser leg's queue is full".to_owned();
                let mut s = lock(&self.stats);
                s.dropped_down += 1;
                s.refuse(why.clone());
                PeerError::Media(why)
            }
            mpsc::error::TrySendError::Closed(_) => PeerError::Closed,
        })
    }

    /// Sets the cap the browser's encoder is told (REMB), in bits per second, clamped to a
    /// sane range.
    pub fn set_cap(&self, bps: u64) {
        let _ = self
            .cmd
            .try_send(Cmd::Cap(bps.clamp(CAP_RANGE.0, CAP_RANGE.1)));
    }

    /// Ends the leg (idempotent).
    pub fn close(&self) {
        let _ = self.cmd.try_send(Cmd::Close);
    }

    /// The leg's counters.
    pub fn stats(&self) -> LegStats {
        lock(&self.stats).clone()
    }

    /// The leg ended.
    pub fn is_closed(&self) -> bool {
        self.cmd.is_closed()
    }
}

fn lock(s: &Mutex<LegStats>) -> std::sync::MutexGuard<'_, LegStats> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens browser legs.
#[derive(Debug)]
pub struct BrowserLeg;

/// What [`BrowserLeg::open`] returns: the handle, the SDP answer for the browser, and the
/// leg's events.
pub struct OpenedLeg {
    /// Drives the leg.
    pub handle: BrowserLegHandle,
    /// The answer to give the browser.
    pub answer: String,
    /// The media ids of the down slots, in offer order (slot 0 first).
    pub slots: Vec<String>,
    /// The media ids of the video slots (the video m-lines the browser receives on), in offer
    /// order.
    pub video_slots: Vec<String>,
    /// Upstream frames and the leg's state.
    pub events: mpsc::Receiver<LegEvent>,
}

impl std::fmt::Debug for OpenedLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedLeg").finish_non_exhaustive()
    }
}

/// Whether a candidate attribute line (`a=candidate:…` or `candidate:…`) names a loopback
/// address. A line that cannot be read is not.
fn candidate_is_loopback(line: &str) -> bool {
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
    let addr = line.split_whitespace().nth(4);
    addr.and_then(|a| a.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

/// The offer with every non-loopback candidate removed, and how many were removed.
pub fn loopback_only(offer: &str) -> (String, u64) {
    let mut removed = 0;
    let kept: Vec<&str> = offer
        .split_inclusive('\n')
        .filter(|l| {
            let t = l.trim_start();
            if t.starts_with("a=candidate:") && !candidate_is_loopback(t) {
                removed += 1;
                false
            } else {
                true
            }
        })
        .collect();
    (kept.concat(), removed)
}

/// The audio m-lines of an SDP, in order, as (mid, we receive on it, we send on it) from the
/// side that wrote it. An m-section without a direction attribute is `sendrecv` (RFC 8866).
fn audio_lines(sdp: &str) -> Vec<(String, bool, bool)> {
    media_lines(sdp, "audio ")
}

/// [`audio_lines`] for the m-lines whose media is `kind` (with its trailing space).
fn media_lines(sdp: &str, kind: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let mut current: Option<(Option<String>, bool, bool)> = None;
    let flush = |c: Option<(Option<String>, bool, bool)>, out: &mut Vec<(String, bool, bool)>| {
        if let Some((Some(mid), recv, send)) = c {
            out.push((mid, recv, send));
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            flush(current.take(), &mut out);
            if m.starts_with(kind) {
                current = Some((None, true, true));
            }
            continue;
        }
        let Some(c) = current.as_mut() else { continue };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            c.0 = Some(mid.trim().to_owned());
        }
        match line {
            "a=sendrecv" => (c.1, c.2) = (true, true),
            "a=sendonly" => (c.1, c.2) = (false, true),
            "a=recvonly" => (c.1, c.2) = (true, false),
            "a=inactive" => (c.1, c.2) = (false, false),
            _ => {}
        }
    }
    flush(current.take(), &mut out);
    out
}

impl BrowserLeg {
    /// Answers the browser's offer and starts the leg's task (on the current tokio runtime).
    /// `cap_bps` is the first REMB cap.
    pub fn open(offer: &str, cap_bps: u64) -> Result<OpenedLeg, PeerError> {
        if offer.len() > MAX_OFFER {
            return Err(PeerError::InvalidSdp(format!(
                "the offer is {} bytes, more than {MAX_OFFER}",
                offer.len()
            )));
        }
        let (filtered, removed) = loopback_only(offer);
        let offer = SdpOffer::from_sdp_string(&filtered)
            .map_err(|e| PeerError::InvalidSdp(e.to_string()))?;
        if !filtered.lines().any(|l| l.starts_with("m=audio ")) {
            return Err(PeerError::InvalidSdp(
                "the offer has no audio m-line".into(),
            ));
        }
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0))
            .map_err(|e| PeerError::Bind(e.kind()))?;
        std_socket
            .set_nonblocking(true)
            .map_err(|e| PeerError::Bind(e.kind()))?;
        let local = std_socket
            .local_addr()
            .map_err(|e| PeerError::Bind(e.kind()))?;
        let socket = UdpSocket::from_std(std_socket).map_err(|e| PeerError::Bind(e.kind()))?;
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            // Audio is held back for at most two packets after a loss (media-spike.md, pitfall 1).
            .set_reordering_size_audio(2)
            .build(now);
        let cand = Candidate::host(local, "udp")
            .map_err(|e| PeerError::Engine(format!("local candidate: {e}")))?;
        rtc.add_local_candidate(cand);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| PeerError::InvalidSdp(e.to_string()))?
            .to_sdp_string();
        // Our answer says what we do on each m-line: receive on the up one, send on the slots.
        let lines = audio_lines(&answer);
        if lines.len() > MAX_SLOTS {
            return Err(PeerError::InvalidSdp(format!(
                "the offer has {} audio m-lines, more than {MAX_SLOTS}",
                lines.len()
            )));
        }
        let up = lines
            .iter()
            .find(|(_, recv, _)| *recv)
            .map(|(m, _, _)| Mid::from(m.as_str()));
        let down: Vec<Mid> = lines
            .iter()
            .filter(|(_, _, send)| *send)
            .map(|(m, _, _)| Mid::from(m.as_str()))
            .collect();
        if up.is_none() && down.is_empty() {
            return Err(PeerError::InvalidSdp(
                "no audio m-line of the offer sends or receives".into(),
            ));
        }
        // Video: the first m-line we receive on is the browser's camera or screen; the ones we
        // send on are the video slots.
        let video = media_lines(&answer, "video ");
        if video.len() > MAX_SLOTS {
            return Err(PeerError::InvalidSdp(format!(
                "the offer has {} video m-lines, more than {MAX_SLOTS}",
                video.len()
            )));
        }
        let video_up = video
            .iter()
            .find(|(_, recv, _)| *recv)
            .map(|(m, _, _)| Mid::from(m.as_str()));
        let video_down: Vec<Mid> = video
            .iter()
            .filter(|(_, _, send)| *send)
            .map(|(m, _, _)| Mid::from(m.as_str()))
            .collect();
        let stats = Arc::new(Mutex::new(LegStats {
            video: !video.is_empty(),
            refused_candidates: removed,
            cap_bps: cap_bps.clamp(CAP_RANGE.0, CAP_RANGE.1),
            ..LegStats::default()
        }));
        if removed > 0 {
            lock(&stats).refuse(format!(
                "{removed} candidate(s) in the offer were not loopback and were ignored"
            ));
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (down_tx, down_rx) = mpsc::channel(DOWN_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(UP_QUEUE);
        let local_ips = local_ips();
        let task = LegTask {
            rtc,
            socket,
            local,
            local_ips,
            stats: stats.clone(),
            events: ev_tx,
            up,
            down: down.clone(),
            video_up,
            video_down: video_down.clone(),
            keyframe_up_at: vec![None; video_down.len()],
            keyframe_down_at: None,
            connected_at: None,
            opened_at: now,
            last_input: now,
            next_remb: now,
            window: (now, 0),
        };
        tokio::spawn(task.run(cmd_rx, down_rx));
        Ok(OpenedLeg {
            handle: BrowserLegHandle {
                cmd: cmd_tx,
                down: down_tx,
                stats,
            },
            answer,
            slots: down.iter().map(ToString::to_string).collect(),
            video_slots: video_down.iter().map(ToString::to_string).collect(),
            events: ev_rx,
        })
    }
}

/// A stand-in for the browser in tests: a str0m offerer with one send-and-receive audio m-line
/// on 127.0.0.1, run by the same task as the leg. Its handle's `send_down` sends "up" to the
/// node, and its events are what the node sent down.
#[cfg(any(test, feature = "fake-browser"))]
pub struct FakeBrowser {
    rtc: Rtc,
    pending: str0m::change::SdpPendingOffer,
    mid: Mid,
    video_mid: Option<Mid>,
    socket: UdpSocket,
    local: SocketAddr,
}

#[cfg(any(test, feature = "fake-browser"))]
impl std::fmt::Debug for FakeBrowser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeBrowser").finish_non_exhaustive()
    }
}

#[cfg(any(test, feature = "fake-browser"))]
impl FakeBrowser {
    /// Binds, creates the offer (with its loopback host candidate) and returns it.
    pub fn offer() -> Result<(Self, String), PeerError> {
        Self::make_offer(false)
    }

    /// [`FakeBrowser::offer`] with a send-and-receive VP8 m-line after the audio one, as a
    /// page offers for a call with video.
    pub fn offer_with_video() -> Result<(Self, String), PeerError> {
        Self::make_offer(true)
    }

    fn make_offer(video: bool) -> Result<(Self, String), PeerError> {
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0))
            .map_err(|e| PeerError::Bind(e.kind()))?;
        std_socket
            .set_nonblocking(true)
            .map_err(|e| PeerError::Bind(e.kind()))?;
        let local = std_socket
            .local_addr()
            .map_err(|e| PeerError::Bind(e.kind()))?;
        let socket = UdpSocket::from_std(std_socket).map_err(|e| PeerError::Bind(e.kind()))?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_reordering_size_audio(2)
            .build(Instant::now());
        let cand = Candidate::host(local, "udp")
            .map_err(|e| PeerError::Engine(format!("local candidate: {e}")))?;
        rtc.add_local_candidate(cand);
        let mut api = rtc.sdp_api();
        let mid = api.add_media(
            MediaKind::Audio,
            str0m::media::Direction::SendRecv,
            None,
            None,
            None,
        );
        let video_mid = video.then(|| {
            api.add_media(
                MediaKind::Video,
                str0m::media::Direction::SendRecv,
                None,
                None,
                None,
            )
        });
        let (offer, pending) = api
            .apply()
            .ok_or(PeerError::Negotiation("nothing to offer"))?;
        Ok((
            Self {
                rtc,
                pending,
                mid,
                video_mid,
                socket,
                local,
            },
            offer.to_sdp_string(),
        ))
    }

    /// Applies the node's answer and starts the task.
    pub fn accept(mut self, answer: &str) -> Result<OpenedLeg, PeerError> {
        let answer = str0m::change::SdpAnswer::from_sdp_string(answer)
            .map_err(|e| PeerError::InvalidSdp(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .map_err(|e| PeerError::InvalidSdp(e.to_string()))?;
        let now = Instant::now();
        // A browser takes whatever its node sends: no cap on what it receives.
        let stats = Arc::new(Mutex::new(LegStats {
            cap_bps: CAP_RANGE.1,
            video: self.video_mid.is_some(),
            ..LegStats::default()
        }));
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (down_tx, down_rx) = mpsc::channel(DOWN_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(UP_QUEUE);
        let task = LegTask {
            rtc: self.rtc,
            socket: self.socket,
            local: self.local,
            local_ips: local_ips(),
            stats: stats.clone(),
            events: ev_tx,
            up: Some(self.mid),
            down: vec![self.mid],
            video_up: self.video_mid,
            video_down: self.video_mid.into_iter().collect(),
            keyframe_up_at: vec![None; usize::from(self.video_mid.is_some())],
            keyframe_down_at: None,
            connected_at: None,
            opened_at: now,
            last_input: now,
            // A browser sends no REMB of its own here.
            next_remb: now + Duration::from_secs(3600),
            window: (now, 0),
        };
        tokio::spawn(task.run(cmd_rx, down_rx));
        Ok(OpenedLeg {
            handle: BrowserLegHandle {
                cmd: cmd_tx,
                down: down_tx,
                stats,
            },
            answer: String::new(),
            slots: vec![self.mid.to_string()],
            video_slots: self.video_mid.iter().map(ToString::to_string).collect(),
            events: ev_rx,
        })
    }
}

/// This machine's addresses: the sources a browser on this machine may send from.
fn local_ips() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default()
}

struct LegTask {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    local_ips: Vec<IpAddr>,
    stats: Arc<Mutex<LegStats>>,
    events: mpsc::Sender<LegEvent>,
    /// The audio m-line the browser sends on.
    up: Option<Mid>,
    /// The audio m-lines the browser receives on: the down slots, in order.
    down: Vec<Mid>,
    /// The video m-line the browser sends on, and the ones it receives on (the video slots).
    video_up: Option<Mid>,
    video_down: Vec<Mid>,
    /// When the last keyframe request from the browser was passed on, and the last one sent to
    /// it (each throttled to one per `KEYFRAME_REQUEST_INTERVAL`).
    keyframe_up_at: Vec<Option<Instant>>,
    keyframe_down_at: Option<Instant>,
    connected_at: Option<Instant>,
    opened_at: Instant,
    last_input: Instant,
    next_remb: Instant,
    /// Upstream bytes in the current one-second window, and when it started.
    window: (Instant, u64),
}

impl LegTask {
    async fn run(mut self, mut cmd: mpsc::Receiver<Cmd>, mut down: mpsc::Receiver<DownFrame>) {
        let mut buf = vec![0u8; 2048];
        let reason = loop {
            let timeout = match self.drain() {
                Ok(t) => t,
                Err(why) => break why,
            };
            let now = Instant::now();
            if let Some(why) = self.expired(now) {
                break why;
            }
            let wake = timeout
                .min(self.next_remb)
                .min(now + Duration::from_secs(1));
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, source)) => self.receive(source, &buf[..n]),
                    Err(e) => break format!("the leg's socket failed: {}", e.kind()),
                },
                c = cmd.recv() => match c {
                    Some(Cmd::Cap(bps)) => lock(&self.stats).cap_bps = bps,
                    Some(Cmd::KeyframeRequest) => self.request_keyframe(),
                    Some(Cmd::Close) | None => break "closed by the node".to_owned(),
                },
                f = down.recv() => match f {
                    Some((false, slot, rtp, data, level)) => self.write_down(slot, rtp, data, level),
                    Some((true, slot, rtp, data, _)) => self.write_video_down(slot, rtp, data),
                    None => break "closed by the node".to_owned(),
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)), if wake > now => {}
                () = std::future::ready(()), if wake <= now => {}
            }
            let now = Instant::now();
            if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                break format!("engine error: {e}");
            }
            if now >= self.next_remb {
                self.remb(now);
            }
        };
        self.rtc.disconnect();
        {
            let mut s = lock(&self.stats);
            s.closed = true;
            s.connected = false;
        }
        tracing::debug!(reason = %reason, "browser leg closed");
        let _ = self.events.try_send(LegEvent::Closed { reason });
    }

    fn expired(&self, now: Instant) -> Option<String> {
        match self.connected_at {
            None if now.duration_since(self.opened_at) > CONNECT_TIMEOUT => {
                Some("the browser did not connect in time".into())
            }
            Some(_) if now.duration_since(self.last_input) > SILENCE_TIMEOUT => {
                Some("the browser went silent".into())
            }
            _ => None,
        }
    }

    fn receive(&mut self, source: SocketAddr, data: &[u8]) {
        if !(source.ip().is_loopback() || self.local_ips.contains(&source.ip())) {
            let mut s = lock(&self.stats);
            s.refused_sources += 1;
            s.refuse("a datagram from outside this machine was refused".into());
            return;
        }
        let now = Instant::now();
        let Ok(r) = Receive::new(Protocol::Udp, source, self.local, data) else {
            return; // not STUN, DTLS or SRTP: nothing str0m can read
        };
        self.last_input = now;
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
            tracing::debug!(error = %e, "browser leg input refused");
        }
    }

    /// Runs str0m's outputs; returns when it wants its next timeout.
    fn drain(&mut self) -> Result<Instant, String> {
        for _ in 0..10_000 {
            if !self.rtc.is_alive() {
                return Err("the browser closed the connection".into());
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => {
                    let contents: Vec<u8> = t.contents.into();
                    // A real non-blocking send: tokio's try_send_to gives up until the reactor
                    // saw the socket writable (docs/media.md, loop bug 1).
                    let _ = socket2::SockRef::from(&self.socket)
                        .send_to(&contents, &t.destination.into());
                }
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => return Err(format!("engine error: {e}")),
            }
        }
        Ok(Instant::now())
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                self.connected_at = Some(Instant::now());
                lock(&self.stats).connected = true;
                let _ = self.events.try_send(LegEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::debug!("browser leg ICE disconnected");
            }
            Event::MediaAdded(m) => {
                let known = match m.kind {
                    MediaKind::Audio => Some(m.mid) == self.up || self.down.contains(&m.mid),
                    MediaKind::Video => {
                        Some(m.mid) == self.video_up || self.video_down.contains(&m.mid)
                    }
                };
                if !known {
                    lock(&self.stats).refuse(format!(
                        "the browser's {:?} m-line {} is not used",
                        m.kind, m.mid
                    ));
                }
            }
            Event::KeyframeRequest(r) => {
                let now = Instant::now();
                let mut s = lock(&self.stats);
                let slot = self.video_down.iter().position(|m| *m == r.mid);
                let last = slot.and_then(|i| self.keyframe_up_at.get_mut(i));
                let Some((slot, last)) = slot.zip(last) else {
                    s.refuse(format!(
                        "a keyframe request for m-line {}, on which the leg sends no video",
                        r.mid
                    ));
                    return;
                };
                if last.is_some_and(|t| {
                    now.duration_since(t) < crate::media::KEYFRAME_REQUEST_INTERVAL
                }) {
                    s.keyframe_requests_throttled += 1;
                } else if self
                    .events
                    .try_send(LegEvent::KeyframeRequest { slot })
                    .is_ok()
                {
                    *last = Some(now);
                    s.keyframe_requests_up += 1;
                }
            }
            Event::MediaData(d) => {
                let video = self.video_up.is_some() && Some(d.mid) == self.video_up;
                if Some(d.mid) != self.up && !video {
                    lock(&self.stats).refuse(format!(
                        "media on m-line {} that the leg did not negotiate",
                        d.mid
                    ));
                    return;
                }
                let now = Instant::now();
                if now.duration_since(self.window.0) >= Duration::from_secs(1) {
                    self.window = (now, 0);
                }
                self.window.1 += d.data.len() as u64;
                let mut s = lock(&self.stats);
                let limit = s.cap_bps.saturating_mul(OVER_CAP) / 8;
                if self.window.1 > limit {
                    s.throttled_up += 1;
                    if s.throttled_up <= 3 || s.throttled_up.is_power_of_two() {
                        let why = format!(
                            "the browser sent more than {} kbit/s (its cap is {} kbit/s): frames dropped",
                            limit * 8 / 1000,
                            s.cap_bps / 1000
                        );
                        s.refuse(why);
                    }
                    return;
                }
                let ev = if video {
                    LegEvent::Video {
                        rtp_time: d.time.numer(),
                        data: d.data.to_vec(),
                    }
                } else {
                    LegEvent::Frame {
                        rtp_time: d.time.numer(),
                        data: d.data.to_vec(),
                        level: d.ext_vals.audio_level,
                    }
                };
                match self.events.try_send(ev) {
                    Ok(()) if video => s.video_up += 1,
                    Ok(()) => s.frames_up += 1,
                    Err(_) => {
                        s.dropped_up += 1;
                        s.refuse("the node had no room for the browser's frame".into());
                    }
                }
            }
            _ => {}
        }
    }

    fn write_down(&mut self, slot: usize, rtp_time: u64, data: Vec<u8>, level: Option<i8>) {
        let now = Instant::now();
        let result = match self.down.get(slot).and_then(|mid| self.rtc.writer(*mid)) {
            None => Err(format!(
                "the browser leg has no audio m-line for slot {slot}"
            )),
            Some(writer) => {
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                    .map(|p| p.pt());
                match pt {
                    None => Err("the browser leg negotiated no Opus".to_owned()),
                    Some(pt) => match level {
                        Some(l) => writer
                            .audio_level(l.clamp(-127, 0), l >= crate::media::VOICE_ACTIVITY_DBOV),
                        None => writer,
                    }
                    .write(
                        pt,
                        now,
                        MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ),
                        data,
                    )
                    .map_err(|e| format!("the engine refused a frame for the browser: {e}")),
                }
            }
        };
        let mut s = lock(&self.stats);
        match result {
            Ok(()) => s.frames_down += 1,
            Err(why) => {
                s.dropped_down += 1;
                s.refuse(why);
            }
        }
    }

    fn write_video_down(&mut self, slot: usize, rtp_time: u64, data: Vec<u8>) {
        let now = Instant::now();
        let result = match self
            .video_down
            .get(slot)
            .and_then(|mid| self.rtc.writer(*mid))
        {
            None => Err(format!(
                "the browser leg has no video m-line for video slot {slot}"
            )),
            Some(writer) => {
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
                    .map(|p| p.pt());
                match pt {
                    None => Err("the browser leg negotiated no VP8".to_owned()),
                    Some(pt) => writer
                        .write(
                            pt,
                            now,
                            MediaTime::new(rtp_time, Frequency::NINETY_KHZ),
                            data,
                        )
                        .map_err(|e| {
                            format!("the engine refused a video frame for the browser: {e}")
                        }),
                }
            }
        };
        let mut s = lock(&self.stats);
        match result {
            Ok(()) => s.video_down += 1,
            Err(why) => {
                s.dropped_down += 1;
                s.refuse(why);
            }
        }
    }

    /// A PLI to the browser's encoder, throttled.
    fn request_keyframe(&mut self) {
        let now = Instant::now();
        if self
            .keyframe_down_at
            .is_some_and(|t| now.duration_since(t) < crate::media::KEYFRAME_REQUEST_INTERVAL)
        {
            lock(&self.stats).keyframe_requests_throttled += 1;
            return;
        }
        let result = match self.video_up.and_then(|mid| self.rtc.writer(mid)) {
            None => Err("a keyframe request, but the browser sends no video".to_owned()),
            Some(mut w) => w
                .request_keyframe(None, str0m::media::KeyframeRequestKind::Pli)
                .map_err(|e| format!("a keyframe request the engine refused: {e}")),
        };
        let mut s = lock(&self.stats);
        match result {
            Ok(()) => {
                self.keyframe_down_at = Some(now);
                s.keyframe_requests_down += 1;
            }
            Err(why) => s.refuse(why),
        }
    }

    fn remb(&mut self, now: Instant) {
        self.next_remb = now + REMB_INTERVAL;
        let cap = lock(&self.stats).cap_bps;
        let mut sent = 0;
        let mut api = self.rtc.direct_api();
        // On every m-line the browser sends on: Chromium takes the lowest REMB as the cap of
        // its whole send side.
        for mid in self.up.iter().chain(self.video_up.iter()) {
            if let Some(rx) = api.stream_rx_by_mid(*mid, None) {
                rx.request_remb(Bitrate::bps(cap));
                sent = 1;
            }
        }
        lock(&self.stats).remb_sent += sent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_candidates_are_kept() {
        let offer = "v=0\r\n\
            a=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host\r\n\
            a=candidate:2 1 udp 2113937151 192.168.1.10 50001 typ host\r\n\
            a=candidate:3 1 udp 1677729535 203.0.113.7 50002 typ srflx raddr 0.0.0.0 rport 0\r\n\
            a=candidate:4 1 udp 2113937151 ::1 50003 typ host\r\n\
            a=candidate:5 1 udp 2113937151 abcd.local 50004 typ host\r\n\
            a=candidate:garbage\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        let (kept, removed) = loopback_only(offer);
        assert_eq!(removed, 4);
        assert!(kept.contains("127.0.0.1 50000"));
        assert!(kept.contains("::1 50003"));
        assert!(!kept.contains("192.168.1.10"));
        assert!(!kept.contains("203.0.113.7"));
        assert!(!kept.contains(".local"));
        assert!(kept.contains("m=audio"));
    }

    async fn next_frame(rx: &mut mpsc::Receiver<LegEvent>) -> Option<(u64, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(LegEvent::Frame { rtp_time, data, .. })) => return Some((rtp_time, data)),
                Ok(Some(
                    LegEvent::Connected | LegEvent::Video { .. } | LegEvent::KeyframeRequest { .. },
                )) => continue,
                Ok(Some(LegEvent::Closed { .. }) | None) | Err(_) => return None,
            }
        }
    }

    async fn wait_connected(rx: &mut mpsc::Receiver<LegEvent>) {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert!(matches!(got, Ok(Some(LegEvent::Connected))), "{got:?}");
    }

    /// An Opus-shaped frame: a CELT 20 ms TOC byte and a numbered body.
    fn frame(i: u32) -> Vec<u8> {
        let mut v = vec![0xfc];
        v.extend((0..40 + i % 60).map(|k| (i.wrapping_mul(31) + k) as u8));
        v
    }

    #[tokio::test]
    async fn frames_cross_the_leg_both_ways_bit_exact_and_in_order() {
        let (fake, offer) = FakeBrowser::offer().expect("offer");
        let node = BrowserLeg::open(&offer, 64_000).expect("leg");
        let mut node_events = node.events;
        let mut browser = fake.accept(&node.answer).expect("answer");
        wait_connected(&mut node_events).await;
        wait_connected(&mut browser.events).await;
        // Up: the "browser" sends 50 frames, 20 ms apart in RTP time (paced lightly so the
        // pacer and queues see a live stream).
        for i in 0..50u32 {
            browser
                .handle
                .send_down(1000 + u64::from(i) * 960, frame(i))
                .expect("queued");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut up = Vec::new();
        while up.len() < 50 {
            let Some(f) = next_frame(&mut node_events).await else {
                break;
            };
            up.push(f);
        }
        assert_eq!(up.len(), 50, "frames from the browser");
        for (i, (t, d)) in up.iter().enumerate() {
            assert_eq!(d, &frame(i as u32), "frame {i} bit-exact");
            assert_eq!(t - up[0].0, i as u64 * 960, "frame {i} RTP time");
        }
        // Down: the node sends 50 frames to the browser.
        for i in 0..50u32 {
            node.handle
                .send_down(5000 + u64::from(i) * 960, frame(i + 100))
                .expect("queued");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut down = Vec::new();
        while down.len() < 50 {
            let Some(f) = next_frame(&mut browser.events).await else {
                break;
            };
            down.push(f);
        }
        assert_eq!(down.len(), 50, "frames to the browser");
        for (i, (_, d)) in down.iter().enumerate() {
            assert_eq!(d, &frame(i as u32 + 100), "frame {i} bit-exact");
        }
        let st = node.handle.stats();
        assert!(st.connected);
        assert_eq!((st.frames_up, st.frames_down), (50, 50));
        assert_eq!(st.refused_sources, 0);
        // REMB went out with the cap once the browser's stream was known.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while node.handle.stats().remb_sent == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(node.handle.stats().remb_sent > 0, "REMB sent");
        node.handle.close();
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match node_events.recv().await {
                    Some(LegEvent::Closed { reason }) => return reason,
                    Some(_) => continue,
                    None => return String::new(),
                }
            }
        })
        .await
        .expect("closed in time");
        assert!(closed.contains("closed by the node"), "{closed}");
        assert!(node.handle.stats().closed);
    }

    fn vp8(index: u32, key: bool) -> Vec<u8> {
        let mut f = vec![if key { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&index.to_be_bytes());
        let len = if key {
            4000
        } else {
            600 + (index as usize * 53) % 1200
        };
        f.extend((0..len).map(|j| (j as u32 ^ index) as u8));
        f
    }

    /// The next video frame or keyframe request, skipping audio and `Connected`.
    async fn next_video(rx: &mut mpsc::Receiver<LegEvent>) -> Option<LegEvent> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e @ (LegEvent::Video { .. } | LegEvent::KeyframeRequest { .. }))) => {
                    return Some(e);
                }
                Ok(Some(LegEvent::Connected | LegEvent::Frame { .. })) => continue,
                Ok(Some(LegEvent::Closed { .. }) | None) | Err(_) => return None,
            }
        }
    }

    #[tokio::test]
    async fn video_and_keyframe_requests_cross_the_leg_both_ways() {
        let (fake, offer) = FakeBrowser::offer_with_video().expect("offer");
        assert!(offer.contains("m=video"), "{offer}");
        let node = BrowserLeg::open(&offer, 1_000_000).expect("leg");
        assert!(node.answer.contains("VP8/90000"), "{}", node.answer);
        let mut node_events = node.events;
        let mut browser = fake.accept(&node.answer).expect("answer");
        wait_connected(&mut node_events).await;
        wait_connected(&mut browser.events).await;
        // Up: 20 frames at 30 fps in RTP time, a keyframe first.
        for i in 0..20u32 {
            browser
                .handle
                .send_video_down(3000 + u64::from(i) * 3000, vp8(i, i == 0))
                .expect("queued");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let mut up = Vec::new();
        while up.len() < 20 {
            match next_video(&mut node_events).await {
                Some(LegEvent::Video { rtp_time, data }) => up.push((rtp_time, data)),
                Some(_) => continue,
                None => break,
            }
        }
        assert_eq!(up.len(), 20, "video frames from the browser");
        for (i, (t, d)) in up.iter().enumerate() {
            assert_eq!(d, &vp8(i as u32, i == 0), "frame {i} bit-exact");
            assert_eq!(t - up[0].0, i as u64 * 3000, "frame {i} RTP time");
        }
        // Down: 20 frames to the browser.
        for i in 0..20u32 {
            node.handle
                .send_video_down(9000 + u64::from(i) * 3000, vp8(i + 100, i == 0))
                .expect("queued");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let mut down = Vec::new();
        while down.len() < 20 {
            match next_video(&mut browser.events).await {
                Some(LegEvent::Video { data, .. }) => down.push(data),
                Some(_) => continue,
                None => break,
            }
        }
        assert_eq!(down.len(), 20, "video frames to the browser");
        for (i, d) in down.iter().enumerate() {
            assert_eq!(d, &vp8(i as u32 + 100, i == 0), "frame {i} bit-exact");
        }
        // The node asks the browser's encoder for a keyframe: twice at once, one goes out.
        node.handle.request_keyframe();
        node.handle.request_keyframe();
        assert_eq!(
            next_video(&mut browser.events).await,
            Some(LegEvent::KeyframeRequest { slot: 0 })
        );
        // The browser asks the node (a viewer lost a picture): it becomes a LegEvent.
        browser.handle.request_keyframe();
        assert_eq!(
            next_video(&mut node_events).await,
            Some(LegEvent::KeyframeRequest { slot: 0 })
        );
        let st = node.handle.stats();
        assert!(st.video);
        assert_eq!((st.video_up, st.video_down), (20, 20));
        assert_eq!(st.keyframe_requests_down, 1);
        assert_eq!(st.keyframe_requests_up, 1);
        assert_eq!(st.keyframe_requests_throttled, 1);
        // REMB goes out on the audio and the video m-line.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while node.handle.stats().remb_sent == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(node.handle.stats().remb_sent > 0, "REMB sent");
        node.handle.close();
    }

    #[tokio::test]
    async fn a_browser_far_over_its_cap_is_throttled_with_a_reason() {
        let (fake, offer) = FakeBrowser::offer().expect("offer");
        // The lowest cap: 6 kbit/s, so more than 3 KB in a second is over 4x.
        let node = BrowserLeg::open(&offer, 0).expect("leg");
        let mut node_events = node.events;
        let mut browser = fake.accept(&node.answer).expect("answer");
        wait_connected(&mut node_events).await;
        wait_connected(&mut browser.events).await;
        // 40 frames of 1000 bytes in about 200 ms: 40 KB against 3 KB allowed per second.
        let t0 = Instant::now();
        for i in 0..40u32 {
            let mut f = frame(i);
            f.resize(1000, 7);
            browser
                .handle
                .send_down(u64::from(i) * 960, f)
                .expect("queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let st = node.handle.stats();
            if st.frames_up + st.throttled_up >= 40 || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let st = node.handle.stats();
        // At most 3 KB per started second passed (a loaded machine may stretch the burst).
        let windows = t0.elapsed().as_secs() + 1;
        assert_eq!(st.frames_up + st.throttled_up, 40, "{st:?}");
        assert!(st.frames_up <= 3 * windows, "{st:?} in {windows} s");
        assert!(st.throttled_up >= 40 - 3 * windows, "{st:?}");
        let why = st.last_refusal.unwrap_or_default();
        assert!(why.contains("more than 24 kbit/s"), "{why}");
        // What passed reached the node in order; nothing else did.
        let mut passed = 0;
        while let Ok(ev) = node_events.try_recv() {
            if let LegEvent::Frame { data, .. } = ev {
                assert_eq!(data[1..40], frame(passed)[1..40]);
                passed += 1;
            }
        }
        assert_eq!(u64::from(passed), st.frames_up);
    }

    #[tokio::test]
    async fn bad_offers_are_refused_with_a_reason() {
        let e = BrowserLeg::open("not sdp", 64_000).expect_err("garbage");
        assert!(matches!(e, PeerError::InvalidSdp(_)), "{e}");
        let big = "a".repeat(MAX_OFFER + 1);
        let e = BrowserLeg::open(&big, 64_000).expect_err("too big");
        assert!(e.to_string().contains("more than"), "{e}");
    }

    #[test]
    fn audio_lines_read_mids_and_directions_in_order() {
        let sdp = "v=0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\na=sendrecv\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=inactive\r\n";
        assert_eq!(
            audio_lines(sdp),
            vec![
                ("0".to_owned(), true, false),
                ("1".to_owned(), false, true),
                ("2".to_owned(), true, true),
            ]
        );
    }

    /// A voice channel's page offers one send m-line and one receive m-line per participant:
    /// the leg receives on the first and has one down slot per receive m-line, in order.
    #[tokio::test]
    async fn a_voice_offer_with_video_gets_one_video_up_and_a_video_slot_per_receive_m_line() {
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(Instant::now());
        let cand = Candidate::host("127.0.0.1:40001".parse().expect("addr"), "udp").expect("cand");
        rtc.add_local_candidate(cand);
        let mut api = rtc.sdp_api();
        use str0m::media::Direction::{RecvOnly, SendOnly};
        let audio_up = api.add_media(MediaKind::Audio, SendOnly, None, None, None);
        let audio_down = api.add_media(MediaKind::Audio, RecvOnly, None, None, None);
        let video_up = api.add_media(MediaKind::Video, SendOnly, None, None, None);
        let video_downs: Vec<Mid> = (0..3)
            .map(|_| api.add_media(MediaKind::Video, RecvOnly, None, None, None))
            .collect();
        let (offer, _pending) = api.apply().expect("offer");
        let leg = BrowserLeg::open(&offer.to_sdp_string(), 64_000).expect("leg");
        assert_eq!(leg.slots, vec![audio_down.to_string()]);
        assert_eq!(
            leg.video_slots,
            video_downs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        for m in [audio_up, video_up] {
            assert!(!leg.video_slots.contains(&m.to_string()));
        }
        assert!(leg.handle.stats().video);
        // A video slot the leg does not have loses the frame, counted, with the reason.
        leg.handle
            .send_video_down_to(3, 0, vp8(0, true))
            .expect("queued");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while leg.handle.stats().dropped_down == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let st = leg.handle.stats();
        assert_eq!(st.dropped_down, 1, "{st:?}");
        assert!(st.last_refusal.unwrap_or_default().contains("video slot 3"));
        leg.handle.close();
    }

    #[tokio::test]
    async fn a_voice_offer_gets_one_up_m_line_and_a_down_slot_per_receive_m_line() {
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(Instant::now());
        let cand = Candidate::host("127.0.0.1:40000".parse().expect("addr"), "udp").expect("cand");
        rtc.add_local_candidate(cand);
        let mut api = rtc.sdp_api();
        let up = api.add_media(
            MediaKind::Audio,
            str0m::media::Direction::SendOnly,
            None,
            None,
            None,
        );
        let downs: Vec<Mid> = (0..3)
            .map(|_| {
                api.add_media(
                    MediaKind::Audio,
                    str0m::media::Direction::RecvOnly,
                    None,
                    None,
                    None,
                )
            })
            .collect();
        let (offer, _pending) = api.apply().expect("offer");
        let leg = BrowserLeg::open(&offer.to_sdp_string(), 64_000).expect("leg");
        assert_eq!(
            leg.slots,
            downs.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
        assert!(!leg.slots.contains(&up.to_string()));
        // A slot the leg does not have loses the frame, counted, with the reason.
        leg.handle
            .send_down_to(7, 0, frame(1), Some(-20))
            .expect("queued");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while leg.handle.stats().dropped_down == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let st = leg.handle.stats();
        assert_eq!(st.dropped_down, 1, "{st:?}");
        assert!(st.last_refusal.unwrap_or_default().contains("slot 7"));
        leg.handle.close();
    }

    /// The level of the next frame (`None`: no frame in time).
    async fn level_of(rx: &mut mpsc::Receiver<LegEvent>) -> Option<Option<i8>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(LegEvent::Frame { level, .. })) => return Some(level),
                Ok(Some(LegEvent::Connected)) => continue,
                _ => return None,
            }
        }
    }

    /// Levels cross the leg both ways in the `ssrc-audio-level` extension.
    #[tokio::test]
    async fn audio_levels_cross_the_leg_both_ways() {
        let (fake, offer) = FakeBrowser::offer().expect("offer");
        let node = BrowserLeg::open(&offer, 64_000).expect("leg");
        assert_eq!(
            node.slots.len(),
            1,
            "a call's single m-line is up and slot 0"
        );
        let mut node_events = node.events;
        let mut browser = fake.accept(&node.answer).expect("answer");
        wait_connected(&mut node_events).await;
        wait_connected(&mut browser.events).await;
        browser
            .handle
            .send_down_to(0, 960, frame(1), Some(-17))
            .expect("queued");
        assert_eq!(level_of(&mut node_events).await, Some(Some(-17)), "up");
        node.handle
            .send_down_to(0, 960, frame(2), Some(-33))
            .expect("queued");
        assert_eq!(level_of(&mut browser.events).await, Some(Some(-33)), "down");
        node.handle.send_down(1920, frame(3)).expect("queued");
        assert_eq!(level_of(&mut browser.events).await, Some(None), "no level");
        node.handle.close();
    }
}
