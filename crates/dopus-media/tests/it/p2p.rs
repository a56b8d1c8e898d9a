//! Node-to-node media over str0m 0.25 on loopback: two `Rtc`s, each owned by its own thread's
//! loop from creation (media-spike pitfall 4), SDP exchanged in-process, real UDP on 127.0.0.1.
//!
//! Audio: one side plays an opusenc file in real time, the other records the packets it
//! receives to an Ogg Opus file; the recording must hold the same packets in order.
//! Video: synthetic VP8 frames, bit-exact and in order, and a PLI from the receiver that
//! reaches the sender, which answers it with a keyframe.
//!
//! Figures (setup time, loss, CPU per packet, one-way delay) are logged, never asserted.

use crate::fixtures::opusenc_fixture;
use anyhow::{Context, Result, anyhow, bail};
use dopus_media::{OggOpusFile, OggOpusWriter, OpusHead, OpusPlayer, OpusTags, PushOutcome};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

/// Hard bound on any one test's media phase.
const DEADLINE: Duration = Duration::from_secs(20);

/// CPU time this thread has used, from /proc (Linux), in nanoseconds.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

struct Peer {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    buf: Vec<u8>,
    events: Vec<Event>,
    timeout: Instant,
    /// Loss injection on ingress: drop every n-th RTP datagram (never RTCP, STUN or DTLS).
    drop_every: Option<u64>,
    rtp_seen: u64,
    rtp_dropped: u64,
}

impl Peer {
    fn new(config: RtcConfig) -> Result<Peer> {
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        std_sock.set_nonblocking(true)?;
        let sock = UdpSocket::from_std(std_sock)?;
        let local = sock.local_addr()?;
        let mut rtc = config.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        Ok(Peer {
            rtc,
            sock,
            local,
            buf: vec![0; 2000],
            events: Vec::new(),
            timeout: Instant::now(),
            drop_every: None,
            rtp_seen: 0,
            rtp_dropped: 0,
        })
    }

    /// str0m's rule: after every mutation, drain `poll_output` until it gives a timeout.
    fn drain(&mut self) -> Result<()> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    // A real send(2) on the non-blocking socket. Not tokio's `try_send_to`: it
                    // answers WouldBlock without trying until the reactor has seen the socket
                    // writable, which dropped the first ICE checks and cost a 250 ms STUN
                    // retransmit in a first version. A full buffer drops, as a network would.
                    let addr = socket2::SockAddr::from(t.destination);
                    let _ = socket2::SockRef::from(&self.sock).send_to(&t.contents, &addr);
                }
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    /// Waits for one datagram until `until` at the latest (and str0m's own timeout), feeds it,
    /// then gives str0m the time. (tokio's timer, 1 ms ticks: a socket read timeout rounds to
    /// the kernel's jiffies and added 8 ms to every packet in a first version.)
    async fn pump(&mut self, until: Instant) -> Result<()> {
        let until = until.min(self.timeout);
        let received = if until <= Instant::now() {
            // Already due: no timer (tokio would round up to its next millisecond tick).
            match self.sock.try_recv_from(&mut self.buf) {
                Ok(r) => Some(r),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            tokio::select! {
                r = self.sock.recv_from(&mut self.buf) => Some(r?),
                _ = tokio::time::sleep_until(until.into()) => None,
            }
        };
        let received = received.filter(|&(n, _)| !self.drop_injected(n));
        if let Some((n, source)) = received {
            let contents = self.buf[..n]
                .try_into()
                .map_err(|e| anyhow!("datagram: {e:?}"))?;
            let rx = Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            };
            self.rtc.handle_input(Input::Receive(Instant::now(), rx))?;
            self.drain()?;
        }
        self.rtc.handle_input(Input::Timeout(Instant::now()))?;
        self.drain()
    }
}

impl Peer {
    /// Whether the datagram just read (`n` bytes in `buf`) is an RTP packet chosen for
    /// injected loss. RTP and RTCP share the first byte's version bits (RFC 7983: 128-191);
    /// RTCP's packet types put 192-223 in the second byte (RFC 5761).
    fn drop_injected(&mut self, n: usize) -> bool {
        let Some(every) = self.drop_every else {
            return false;
        };
        let is_rtp =
            n >= 12 && (128..=191).contains(&self.buf[0]) && !(192..=223).contains(&self.buf[1]);
        if !is_rtp {
            return false;
        }
        self.rtp_seen += 1;
        let drop = self.rtp_seen % every == every / 2;
        self.rtp_dropped += u64::from(drop);
        drop
    }
}

/// What the receiver expects and does.
#[derive(Debug, Clone, Copy)]
struct ReceiverPlan {
    /// Frames to wait for (the loop also ends when frames + dropped RTP datagrams reach this, for
    /// audio, where one packet is one frame and nothing is retransmitted).
    expect: usize,
    /// Send one PLI after this many frames.
    pli_after: Option<usize>,
    drop_every: Option<u64>,
    audio: bool,
}

/// What a sender plays.
trait Source: Send {
    /// Offset from the start of playback at which the next frame is due; `None` when done.
    fn next_due(&self) -> Option<Duration>;
    /// The next frame (RTP time, bytes), if due; `keyframe` asks for a keyframe.
    fn take(&mut self, since_start: Duration, keyframe: bool) -> Option<(MediaTime, Vec<u8>)>;
}

impl Source for OpusPlayer {
    fn next_due(&self) -> Option<Duration> {
        OpusPlayer::next_due(self)
    }
    fn take(&mut self, since_start: Duration, _: bool) -> Option<(MediaTime, Vec<u8>)> {
        let (rtp, p) = self.poll(since_start)?;
        Some((
            MediaTime::new(rtp, Frequency::FORTY_EIGHT_KHZ),
            p.data.clone(),
        ))
    }
}

/// Synthetic VP8 frames at 30 fps: the first byte's bit 0 is the VP8 "not a keyframe" flag
/// (str0m reads it); the rest numbers the frame. Keyframes every `gop` frames or on request.
struct SyntheticVp8 {
    count: u32,
    next: u32,
    gop: u32,
}

impl SyntheticVp8 {
    fn frame(index: u32, key: bool) -> Vec<u8> {
        let len = if key {
            6000
        } else {
            800 + (index as usize * 37) % 1500
        };
        // Frame tag (key: P=0, version 0, show_frame=1), then the keyframe start code.
        let mut f = vec![
            if key { 0x10 } else { 0x11 },
            0x02,
            0x00,
            0x9d,
            0x01,
            0x2a,
            0x40,
            0x01,
            0xf0,
            0x00,
        ];
        f.extend_from_slice(&index.to_be_bytes());
        f.extend((0..len).map(|j| (j as u32 ^ index) as u8));
        f
    }
}

impl Source for SyntheticVp8 {
    fn next_due(&self) -> Option<Duration> {
        (self.next < self.count)
            .then(|| Duration::from_micros(u64::from(self.next) * 1_000_000 / 30))
    }
    fn take(&mut self, since_start: Duration, keyframe: bool) -> Option<(MediaTime, Vec<u8>)> {
        if self.next_due()? > since_start {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let key = keyframe || i.is_multiple_of(self.gop);
        Some((
            MediaTime::new(u64::from(i) * 3000, Frequency::NINETY_KHZ),
            Self::frame(i, key),
        ))
    }
}

#[derive(Debug, Default)]
struct SenderReport {
    built_after: Duration,
    answered_after: Duration,
    ice_after: Option<Duration>,
    connected_after: Option<Duration>,
    sent: Vec<(Instant, Vec<u8>)>,
    keyframe_requests: Vec<(Instant, KeyframeRequestKind)>,
    /// Indices of the frames sent as keyframes because of a request.
    requested_keyframes: Vec<usize>,
    media_cpu_ns: u64,
}

#[derive(Debug, Default)]
struct ReceiverReport {
    ice_after: Option<Duration>,
    connected_after: Option<Duration>,
    /// (emitted by str0m, bytes, keyframe, first packet's arrival).
    received: Vec<(Instant, Vec<u8>, bool, Instant)>,
    /// RTP time of each received frame, in the codec's clock (`MediaData::time`).
    rtp_times: Vec<u64>,
    rtp_dropped: u64,
    pli_sent_at: Option<(Instant, usize)>,
    media_cpu_ns: u64,
}

/// Offerer and sender: builds its `Rtc`, offers one send-only m-line of `kind`, plays `source`
/// once connected, and answers keyframe requests.
async fn sender(
    config: RtcConfig,
    (kind, codec): (MediaKind, Codec),
    mut source: Box<dyn Source>,
    t0: Instant,
    offer_tx: mpsc::Sender<String>,
    answer_rx: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
) -> Result<SenderReport> {
    let mut peer = Peer::new(config)?;
    let built_after = t0.elapsed();
    let mut api = peer.rtc.sdp_api();
    let mid = api.add_media(kind, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().context("an offer")?;
    offer_tx.send(offer.to_sdp_string())?;
    // Blocking is fine here: nothing else runs on this thread's runtime yet.
    let answer = answer_rx
        .recv_timeout(Duration::from_secs(10))
        .context("no answer")?;
    peer.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer)?)?;
    peer.drain()?;

    let mut report = SenderReport {
        built_after,
        answered_after: t0.elapsed(),
        ..SenderReport::default()
    };
    let mut playing_since: Option<(Instant, u64)> = None;
    let mut want_keyframe = false;
    let mut done_at: Option<Instant> = None;
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        for e in std::mem::take(&mut peer.events) {
            match e {
                Event::IceConnectionStateChange(state) => {
                    if matches!(
                        state,
                        IceConnectionState::Connected | IceConnectionState::Completed
                    ) {
                        report.ice_after.get_or_insert(t0.elapsed());
                    }
                }
                Event::Connected => {
                    report.connected_after = Some(t0.elapsed());
                    playing_since = Some((Instant::now(), thread_cpu_ns()));
                }
                Event::KeyframeRequest(r) if r.mid == mid => {
                    report.keyframe_requests.push((Instant::now(), r.kind));
                    want_keyframe = true;
                }
                _ => {}
            }
        }
        let mut next_wake = Instant::now() + Duration::from_millis(50);
        if let Some((start, _)) = playing_since {
            let since = start.elapsed();
            while let Some((rtp, data)) = source.take(since, want_keyframe) {
                if want_keyframe {
                    report.requested_keyframes.push(report.sent.len());
                    want_keyframe = false;
                }
                let writer = peer.rtc.writer(mid).context("writer")?;
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == codec)
                    .map(|p| p.pt())
                    .context("negotiated codec")?;
                let now = Instant::now();
                writer.write(pt, now, rtp, data.clone())?;
                peer.drain()?;
                report.sent.push((now, data));
            }
            match source.next_due() {
                Some(due) => next_wake = next_wake.min(start + due),
                None => {
                    // Keep answering RTCP (NACKs) for a moment, until the receiver has all.
                    let d = *done_at.get_or_insert_with(Instant::now);
                    if d.elapsed() > Duration::from_secs(3) {
                        break;
                    }
                }
            }
        }
        peer.pump(next_wake).await?;
    }
    if let Some((_, cpu0)) = playing_since {
        report.media_cpu_ns = thread_cpu_ns().saturating_sub(cpu0);
    }
    Ok(report)
}

/// Answerer and receiver: its loop owns its `Rtc` before the offer arrives; collects every
/// frame; asks for one keyframe (PLI) after `pli_after` frames, if set.
async fn receiver(
    config: RtcConfig,
    t0: Instant,
    offer_rx: mpsc::Receiver<String>,
    answer_tx: mpsc::Sender<String>,
    plan: ReceiverPlan,
    stop: Arc<AtomicBool>,
) -> Result<ReceiverReport> {
    let ReceiverPlan {
        expect,
        pli_after,
        drop_every,
        audio,
    } = plan;
    let mut peer = Peer::new(config)?;
    peer.drop_every = drop_every;
    let offer = offer_rx
        .recv_timeout(Duration::from_secs(10))
        .context("no offer")?;
    let answer = peer
        .rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&offer)?)?;
    peer.drain()?;
    answer_tx.send(answer.to_sdp_string())?;

    let mut report = ReceiverReport::default();
    let mut mid: Option<Mid> = None;
    let mut cpu0 = None;
    let end = Instant::now() + DEADLINE;
    let lost = |peer: &Peer| if audio { peer.rtp_dropped as usize } else { 0 };
    while Instant::now() < end && report.received.len() + lost(&peer) < expect {
        for e in std::mem::take(&mut peer.events) {
            match e {
                Event::IceConnectionStateChange(state) => {
                    if matches!(
                        state,
                        IceConnectionState::Connected | IceConnectionState::Completed
                    ) {
                        report.ice_after.get_or_insert(t0.elapsed());
                    }
                }
                Event::Connected => {
                    report.connected_after = Some(t0.elapsed());
                    cpu0 = Some(thread_cpu_ns());
                }
                Event::MediaAdded(m) => mid = Some(m.mid),
                Event::MediaData(d) => {
                    report.rtp_times.push(d.time.numer());
                    report.received.push((
                        Instant::now(),
                        d.data.to_vec(),
                        d.is_keyframe(),
                        d.network_time,
                    ));
                }
                _ => {}
            }
        }
        if let (Some(after), None, Some(mid)) = (pli_after, report.pli_sent_at, mid)
            && report.received.len() >= after
        {
            let mut writer = peer.rtc.writer(mid).context("writer")?;
            writer.request_keyframe(None, KeyframeRequestKind::Pli)?;
            peer.drain()?;
            report.pli_sent_at = Some((Instant::now(), report.received.len()));
        }
        peer.pump(Instant::now() + Duration::from_millis(50))
            .await?;
    }
    if let Some(c) = cpu0 {
        report.media_cpu_ns = thread_cpu_ns().saturating_sub(c);
    }
    report.rtp_dropped = peer.rtp_dropped;
    stop.store(true, Ordering::Relaxed);
    Ok(report)
}

/// Runs one sender and one receiver on their own threads and returns both reports.
fn call(
    config: impl Fn() -> RtcConfig,
    kind: MediaKind,
    codec: Codec,
    source: Box<dyn Source>,
    plan: ReceiverPlan,
) -> Result<(SenderReport, ReceiverReport)> {
    let (offer_tx, offer_rx) = mpsc::channel();
    let (answer_tx, answer_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let (c1, c2) = (config(), config());
    let stop_r = stop.clone();
    // One thread per side, each with its own single-threaded runtime, as each node would have.
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let (rt1, rt2) = (rt()?, rt()?);
    let rx = std::thread::spawn(move || {
        rt2.block_on(receiver(c2, t0, offer_rx, answer_tx, plan, stop_r))
    });
    let tx = std::thread::spawn(move || {
        rt1.block_on(sender(
            c1,
            (kind, codec),
            source,
            t0,
            offer_tx,
            answer_rx,
            stop,
        ))
    });
    let rx = rx.join().map_err(|_| anyhow!("receiver panicked"))?;
    let tx = tx.join().map_err(|_| anyhow!("sender panicked"))?;
    Ok((tx?, rx?))
}

/// Pairs each received frame with the sent frame it equals, walking both in order: `None` if
/// the received frames are not an in-order, bit-exact subsequence of the sent ones.
fn match_sent(tx: &SenderReport, rx: &ReceiverReport) -> Option<Vec<(usize, usize)>> {
    let mut pairs = Vec::new();
    let mut next = 0;
    for (r, (_, data, _, _)) in rx.received.iter().enumerate() {
        let s = next + tx.sent[next..].iter().position(|(_, d)| d == data)?;
        pairs.push((s, r));
        next = s + 1;
    }
    Some(pairs)
}

fn log_figures(what: &str, tx: &SenderReport, rx: &ReceiverReport) {
    let pairs = match_sent(tx, rx).unwrap_or_default();
    let sorted = |mut v: Vec<u128>| {
        v.sort_unstable();
        v
    };
    // One-way: write() to MediaData; split into write to first packet's arrival (sender
    // pacing and the wire) and arrival to MediaData (the receiver's hold-back).
    let delays = sorted(
        pairs
            .iter()
            .map(|&(s, r)| {
                rx.received[r]
                    .0
                    .saturating_duration_since(tx.sent[s].0)
                    .as_micros()
            })
            .collect(),
    );
    let wire = sorted(
        pairs
            .iter()
            .map(|&(s, r)| {
                rx.received[r]
                    .3
                    .saturating_duration_since(tx.sent[s].0)
                    .as_micros()
            })
            .collect(),
    );
    let hold = sorted(
        rx.received
            .iter()
            .map(|(r, _, _, a)| r.saturating_duration_since(*a).as_micros())
            .collect(),
    );
    let pct = |v: &[u128], p: usize| {
        v.get(v.len().saturating_sub(1) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    let n_tx = tx.sent.len().max(1) as u64;
    let n_rx = rx.received.len().max(1) as u64;
    tracing::info!(
        "{what}: from start: sender Rtc built {:?}, answer applied {:?}, ICE connected sender {:?} receiver {:?}, \
         DTLS done (Event::Connected) sender {:?} receiver {:?}; \
         sent {} received {} lost {} (RTP datagrams dropped on purpose: {}); \
         one-way delay p50 {} us p99 {} us max {} us; write-to-arrival p50 {} us; \
         arrival-to-frame p50 {} us p99 {} us max {} us; \
         CPU per frame sender {} us receiver {} us",
        tx.built_after,
        tx.answered_after,
        tx.ice_after,
        rx.ice_after,
        tx.connected_after,
        rx.connected_after,
        tx.sent.len(),
        rx.received.len(),
        tx.sent.len().saturating_sub(rx.received.len()),
        rx.rtp_dropped,
        pct(&delays, 50),
        pct(&delays, 99),
        delays.last().copied().unwrap_or(0),
        pct(&wire, 50),
        pct(&hold, 50),
        pct(&hold, 99),
        hold.last().copied().unwrap_or(0),
        tx.media_cpu_ns / n_tx / 1000,
        rx.media_cpu_ns / n_rx / 1000,
    );
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,str0m=warn")
        .with_test_writer()
        .try_init();
}

/// Plays a 2 s opusenc file from one side and records it on the other with `push_at`;
/// `drop_every` injects loss on the receiver's ingress. Returns the original and the recording.
fn audio_call(
    drop_every: Option<u64>,
) -> Result<(OggOpusFile, OggOpusFile, SenderReport, ReceiverReport)> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let original = OggOpusFile::parse(&opusenc_fixture(dir.path(), 2.0))?;
    let n = original.packets.len();
    let config = || {
        RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .set_reordering_size_audio(2)
    };
    let player = OpusPlayer::new(original.clone());
    let plan = ReceiverPlan {
        expect: n,
        pli_after: None,
        drop_every,
        audio: true,
    };
    let (tx, rx) = call(
        config,
        MediaKind::Audio,
        Codec::Opus,
        Box::new(player),
        plan,
    )?;
    log_figures(
        if drop_every.is_some() {
            "audio, lossy"
        } else {
            "audio"
        },
        &tx,
        &rx,
    );
    assert_eq!(tx.sent.len(), n, "the whole file was played");
    assert!(
        match_sent(&tx, &rx).is_some(),
        "what arrived is what was sent, in order, bit-exact"
    );

    // The sink: record what arrived, as `discordopus call --record` will.
    let (mut w, mut recorded) =
        OggOpusWriter::new(2, OpusHead::for_recording(1), &OpusTags::default());
    let mut gaps = 0;
    for ((_, data, _, _), &rtp) in rx.received.iter().zip(&rx.rtp_times) {
        let (bytes, outcome) = w
            .push_at(rtp, data)
            .map_err(|e| anyhow!("received packet: {e}"))?;
        match outcome {
            PushOutcome::InOrder => {}
            PushOutcome::FilledGap { .. } => gaps += 1,
            other => bail!("unexpected {other:?}"),
        }
        recorded.extend(bytes);
    }
    recorded.extend(w.finish());
    let recorded = OggOpusFile::parse(&recorded)?;
    assert!(recorded.complete);
    tracing::info!("audio: {gaps} gaps filled in the recording");
    Ok((original, recorded, tx, rx))
}

#[test]
fn opus_file_played_over_str0m_is_recorded_packet_for_packet() -> Result<()> {
    let (original, recorded, _, rx) = audio_call(None)?;
    assert_eq!(
        rx.received.len(),
        original.packets.len(),
        "no loss on loopback"
    );
    assert_eq!(
        recorded.packets, original.packets,
        "same packets, same order, same bytes"
    );
    Ok(())
}

#[test]
fn with_five_percent_ingress_loss_the_recording_keeps_its_length() -> Result<()> {
    let (original, recorded, _, rx) = audio_call(Some(20))?;
    let n = original.packets.len();
    assert!(
        rx.rtp_dropped >= 4,
        "{} RTP datagrams dropped",
        rx.rtp_dropped
    );
    // Audio has no retransmission: each dropped packet is missing, nothing else.
    assert_eq!(rx.received.len() + rx.rtp_dropped as usize, n);
    // Each loss is a gap filled with concealment, so the recording is as long as the file
    // (a loss of the very last packet could not be filled; it is never the dropped one here).
    assert_eq!(recorded.total_samples(), original.total_samples());
    let fillers = recorded
        .packets
        .iter()
        .filter(|p| p.data.len() == 1)
        .count();
    assert_eq!(fillers as u64, rx.rtp_dropped);
    Ok(())
}

/// 60 synthetic VP8 frames; a PLI after 20; `drop_every` injects loss on the receiver's ingress.
fn video_call(drop_every: Option<u64>) -> Result<(SenderReport, ReceiverReport)> {
    init_tracing();
    let frames = 60; // 2 s at 30 fps, a keyframe every 300 frames (so only the first)
    let config = || RtcConfig::new().clear_codecs().enable_vp8(true);
    let source = SyntheticVp8 {
        count: frames,
        next: 0,
        gop: 300,
    };
    let plan = ReceiverPlan {
        expect: frames as usize,
        pli_after: Some(20),
        drop_every,
        audio: false,
    };
    let (tx, rx) = call(config, MediaKind::Video, Codec::Vp8, Box::new(source), plan)?;
    log_figures(
        if drop_every.is_some() {
            "video, lossy"
        } else {
            "video"
        },
        &tx,
        &rx,
    );

    assert_eq!(rx.received.len(), frames as usize, "every frame arrives");
    let sent: Vec<&Vec<u8>> = tx.sent.iter().map(|(_, d)| d).collect();
    let got: Vec<&Vec<u8>> = rx.received.iter().map(|(_, d, _, _)| d).collect();
    assert!(sent == got, "frames differ (bit-exact, in order)");
    assert!(rx.received[0].2, "the first frame is a keyframe");
    let (pli_at, after_frames) = rx.pli_sent_at.context("the receiver sent a PLI")?;
    let Some(&(seen_at, kind)) = tx.keyframe_requests.first() else {
        bail!("the sender saw no keyframe request");
    };
    tracing::info!(
        "PLI: sent after frame {after_frames}, seen by the sender {:?} later",
        seen_at.saturating_duration_since(pli_at)
    );
    assert_eq!(kind, KeyframeRequestKind::Pli);
    let &k = tx
        .requested_keyframes
        .first()
        .context("the sender answered with a keyframe")?;
    assert!(rx.received[k].2, "frame {k} arrived flagged as a keyframe");
    Ok((tx, rx))
}

#[test]
fn vp8_frames_arrive_bit_exact_and_a_pli_reaches_the_sender() -> Result<()> {
    let (tx, rx) = video_call(None)?;
    assert_eq!(
        tx.keyframe_requests.len(),
        1,
        "one PLI, no others on a clean path"
    );
    let keyframes = rx.received.iter().filter(|r| r.2).count();
    assert_eq!(keyframes, 1 + tx.requested_keyframes.len());
    Ok(())
}

#[test]
fn with_five_percent_ingress_loss_nack_recovers_every_video_frame() -> Result<()> {
    let (_, rx) = video_call(Some(20))?;
    assert!(
        rx.rtp_dropped >= 4,
        "{} RTP datagrams dropped",
        rx.rtp_dropped
    );
    Ok(())
}
