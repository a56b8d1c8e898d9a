//! The sans-IO heart of one peer connection: str0m's `Rtc`, our STUN gatherer, candidate
//! bookkeeping, timers and the state machine. No sockets and no clock: every input carries
//! `now`, every output is pulled with [`Engine::poll_output`], and the caller waits until
//! [`Engine::poll_timeout`]. The tokio task in `peer.rs` is the only thing that does I/O.
//!
//! Protocol flow (offerer; the answerer mirrors it):
//! - bind sockets, add one host candidate per socket, create the offer with the data channel;
//! - STUN from the same sockets; each new mapping becomes a srflx candidate (trickled);
//! - remote candidates arriving before the answer (or carrying an ICE ufrag we do not know yet)
//!   are queued, and applied once the matching description is in;
//! - str0m runs ICE, DTLS (checking the peer certificate against the SDP fingerprint) and SCTP;
//!   the channel opens;
//! - timers: connect timeout before the channel opens, idle timeout after, and a limit on how
//!   long an established connection may stay disconnected.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dopus_types::Redacted;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};

use crate::config::RtcConfig;
use crate::diagnostics::{
    CandidateType, CloseReason, ConnectionState, Connectivity, Diagnostics, FailureReason,
    PathKind, RelayInfo, SelectedPair,
};
use crate::error::PeerError;
use crate::event::PeerEvent;
use crate::gather::{GatherOutput, Mapping, StunGatherer};
use crate::media::{MediaEvent, MediaFrame, MediaStats};
use crate::time::later;
use crate::turn::{Relay, RelayOutput, RelayState, RelayTarget, RelayTransport};

/// Label of the one message channel.
pub(crate) const CHANNEL_LABEL: &str = "dopus";
/// Sub-protocol named in DCEP, so a future incompatible framing can be told apart.
pub(crate) const CHANNEL_PROTOCOL: &str = "dopus/1";
/// Label of the blob channel (file transfers, `dopus-blob/1` frames), beside the message
/// channel on the same association.
pub(crate) const BLOB_LABEL: &str = "dopus-blob";
/// Its sub-protocol.
pub(crate) const BLOB_PROTOCOL: &str = "dopus-blob/1";
/// How often str0m reports the selected pair and RTT.
const STATS_INTERVAL: Duration = Duration::from_millis(500);
/// The blob channel's share is sized to the path: its RTT times this rate (bytes per second),
/// between [`BLOB_SHARE_FLOOR`] and the configured share. sctp-proto's work per packet is
/// linear in the chunks in flight, so a smaller share is cheaper per byte; on loopback 128 KiB
/// moved 2.6x what 768 KiB did at a quarter of the sender's CPU per GiB (docs/benchmarks.md,
/// "Files"), while a WAN path keeps the whole share (768 KiB by default: 6 ms of RTT or more).
const BLOB_SHARE_RATE: f64 = 128.0 * 1024.0 * 1024.0;
/// The smallest blob share: two 64 KiB blob messages in flight (below it a transfer waits on
/// every acknowledgement: 3 to 6 MiB/s on loopback at 64 and 96 KiB).
const BLOB_SHARE_FLOOR: usize = 128 * 1024;
/// Remote candidates kept while waiting for their description; a peer cannot make us hoard more.
const MAX_QUEUED_REMOTE: usize = 64;
/// Remote candidates accepted per connection.
const MAX_REMOTE_CANDIDATES: usize = 256;
/// Guard for the drain loop; str0m ends a drain by itself well before this.
const MAX_DRAIN_STEPS: usize = 100_000;
/// New allocations after losing a working one (5-tuple change, expiry), per connection.
const MAX_REALLOCATIONS: u32 = 8;

/// The `a=ice-ufrag` of an SDP: a new one in an offer on an open connection is an ICE restart.
fn sdp_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(|u| u.trim().to_owned())
}

/// Which side of the negotiation this connection started as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Offerer,
    Answerer,
}

/// What the engine wants done.
#[derive(Debug)]
pub(crate) enum EngineOutput {
    /// Send a datagram from our socket `source`.
    Transmit {
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    /// Tell the application.
    Event(PeerEvent),
    /// Open a TCP connection to a TURN server for relay `relay`; report back with
    /// [`Engine::relay_stream_connected`] or [`Engine::relay_stream_failed`].
    RelayConnect { relay: u32, server: SocketAddr },
    /// Write on relay `relay`'s TCP connection.
    RelayStream { relay: u32, data: Vec<u8> },
    /// Close relay `relay`'s TCP connection.
    RelayClose { relay: u32 },
    /// For the media task attached to the connection.
    Media(MediaEvent),
}

#[derive(Debug, Clone, Copy)]
struct LocalCandidate {
    kind: CandidateType,
    addr: SocketAddr,
}

pub(crate) struct Engine {
    rtc: Rtc,
    role: Role,
    share_host: bool,
    max_message_size: usize,
    low_threshold: usize,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    disconnected_timeout: Duration,
    path_loss_timeout: Option<Duration>,
    stun_configured: bool,
    turn_configured: bool,
    relay_only: bool,

    /// Allocations: at most one working (or being made) at a time, plus failed ones kept for
    /// diagnostics.
    relays: Vec<Relay>,
    /// Every resolved way to a relay, in the order to try (UDP, then TCP, then TLS).
    relay_targets: Vec<RelayTarget>,
    /// Index in `relay_targets` of the attempt in progress or working.
    relay_cursor: usize,
    next_relay_id: u32,
    reallocations: u32,
    relays_started: bool,
    relay_stash: VecDeque<RelayOutput>,

    bases: Vec<SocketAddr>,
    /// Sockets to use once the pending ICE restart is answered.
    pending_bases: Option<Vec<SocketAddr>>,
    stun_servers: Vec<SocketAddr>,
    gatherer: StunGatherer,
    gathering_reported: bool,
    local: Vec<LocalCandidate>,
    signalled_srflx: Vec<SocketAddr>,
    remote: Vec<(SocketAddr, CandidateType)>,
    remote_ufrag: Option<String>,
    queued_remote: Vec<Candidate>,
    had_remote_description: bool,
    pending_offer: Option<SdpPendingOffer>,

    channel: Option<ChannelId>,
    channel_open: bool,
    /// The blob channel, and the most of the send buffer it may fill (so messages always
    /// find room).
    blob: Option<ChannelId>,
    blob_open: bool,
    /// The share in force (see [`BLOB_SHARE_RATE`]), and the configured one, its ceiling.
    blob_share: usize,
    blob_max: usize,
    state: ConnectionState,
    ever_ice_connected: bool,
    dtls_connected: bool,
    created_at: Instant,
    opened_at: Option<Instant>,
    last_activity: Instant,
    disconnected_since: Option<Instant>,
    rtc_timeout: Instant,
    /// When a datagram from the peer (direct or unwrapped from the relay) last reached str0m.
    last_peer_rx: Instant,
    /// When the path was taken for lost (nothing from the peer for `path_loss_timeout`);
    /// cleared by the next datagram from the peer.
    path_lost_at: Option<Instant>,
    /// When the last ICE restart began (our offer, or the peer's accepted).
    restart_at: Option<Instant>,
    /// ICE restarts made or accepted on this connection.
    restarts: u32,
    /// Our relayed candidates as given to str0m, so a lost allocation's can be withdrawn.
    relay_cands: Vec<(SocketAddr, SocketAddr, Candidate)>,

    rtt: Option<Duration>,
    selected: Option<(SocketAddr, SocketAddr)>,
    bytes_sent: u64,
    bytes_received: u64,
    messages_sent: u64,
    messages_received: u64,
    send_waits: u64,
    write_blocked: bool,
    /// A write refused for lack of room may succeed now: the channel opened or the buffered
    /// amount fell below the low-water mark since the last [`Engine::take_room`].
    room: bool,
    failure: Option<FailureReason>,
    closed: Option<CloseReason>,
    out: VecDeque<EngineOutput>,

    /// The negotiated audio m-line (calls), and the one our pending offer adds.
    audio_mid: Option<Mid>,
    pending_audio: Option<Mid>,
    media: MediaStats,
    /// The negotiated video m-line (added with the audio one), and the one our offer adds.
    video_mid: Option<Mid>,
    pending_video: Option<Mid>,
    /// When the last keyframe request went to the peer, and when the last one of the peer's
    /// reached the media task (each throttled to one per `KEYFRAME_REQUEST_INTERVAL`).
    keyframe_out_at: Option<Instant>,
    keyframe_in_at: Option<Instant>,
    /// The video rate from the peer's loss reports.
    video_rate: crate::media::VideoRate,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("channel_open", &self.channel_open)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A new connection on these already-bound sockets. Host candidates are added (and
    /// announced) at once.
    pub(crate) fn new(
        now: Instant,
        config: &RtcConfig,
        role: Role,
        bases: Vec<SocketAddr>,
    ) -> Result<Self, PeerError> {
        config.validate()?;
        let send_buffer = config.effective_send_buffer();
        let max_msg = u32::try_from(config.max_message_size)
            .map_err(|_| crate::config::ConfigError::MaxMessageSize(config.max_message_size))?;
        let mut builder = Rtc::builder()
            .set_sctp_max_buffered_amount(send_buffer)
            .set_sctp_max_message_size(max_msg)
            .set_stats_interval(Some(STATS_INTERVAL))
            // Calls: Opus and VP8 only; audio is held back for at most two packets after a loss
            // instead of str0m's 15 (media-spike.md, pitfall 1).
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_reordering_size_audio(2);
        if let Some(id) = &config.dtls_identity {
            builder = builder.set_dtls_cert(id.cert());
        }
        let rtc = builder.build(now);
        let mut engine = Self {
            rtc,
            role,
            share_host: config.share_host_candidates,
            max_message_size: config.max_message_size,
            low_threshold: send_buffer / 4,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            disconnected_timeout: config.disconnected_timeout,
            path_loss_timeout: config.path_loss_timeout,
            stun_configured: config.stun_servers().next().is_some(),
            turn_configured: config.has_turn(),
            relay_only: config.relay_only,
            relays: Vec::new(),
            relay_targets: Vec::new(),
            relay_cursor: 0,
            next_relay_id: 1,
            reallocations: 0,
            relays_started: false,
            relay_stash: VecDeque::new(),
            bases: Vec::new(),
            pending_bases: None,
            stun_servers: Vec::new(),
            gatherer: StunGatherer::new(config.stun_initial_rto, config.stun_attempts),
            gathering_reported: false,
            local: Vec::new(),
            signalled_srflx: Vec::new(),
            remote: Vec::new(),
            remote_ufrag: None,
            queued_remote: Vec::new(),
            had_remote_description: false,
            pending_offer: None,
            channel: None,
            channel_open: false,
            blob: None,
            blob_open: false,
            blob_share: config.effective_blob_share(),
            blob_max: config.effective_blob_share(),
            state: ConnectionState::New,
            ever_ice_connected: false,
            dtls_connected: false,
            created_at: now,
            opened_at: None,
            last_activity: now,
            disconnected_since: None,
            rtc_timeout: now,
            last_peer_rx: now,
            path_lost_at: None,
            restart_at: None,
            restarts: 0,
            relay_cands: Vec::new(),
            rtt: None,
            selected: None,
            bytes_sent: 0,
            bytes_received: 0,
            messages_sent: 0,
            messages_received: 0,
            send_waits: 0,
            write_blocked: false,
            room: false,
            failure: None,
            closed: None,
            out: VecDeque::new(),
            audio_mid: None,
            pending_audio: None,
            media: MediaStats::default(),
            video_mid: None,
            pending_video: None,
            keyframe_out_at: None,
            keyframe_in_at: None,
            video_rate: crate::media::VideoRate::default(),
        };
        engine.use_bases(bases);
        engine.drain(now);
        Ok(engine)
    }

    fn use_bases(&mut self, bases: Vec<SocketAddr>) {
        self.local.retain(|c| c.kind == CandidateType::Relay);
        self.signalled_srflx.clear();
        for &base in &bases {
            if self.relay_only {
                // Not even known to str0m: it would send checks from it and the peer would
                // learn our address from their source.
                continue;
            }
            let Ok(c) = Candidate::host(base, "udp") else {
                tracing::debug!(addr = ?Redacted::new(base), "address refused as host candidate");
                continue;
            };
            let Some(added) = self.rtc.add_local_candidate(c) else {
                continue;
            };
            let line = added.to_sdp_string();
            self.local.push(LocalCandidate {
                kind: CandidateType::Host,
                addr: base,
            });
            if self.share_host {
                self.out
                    .push_back(EngineOutput::Event(PeerEvent::LocalCandidate(line)));
            }
        }
        self.bases = bases;
    }

    /// Creates the initial offer (offerer only), with the message channel in it.
    pub(crate) fn create_offer(&mut self, now: Instant) -> Result<String, PeerError> {
        let mut api = self.rtc.sdp_api();
        let id = api.add_channel_with_config(ChannelConfig {
            label: CHANNEL_LABEL.to_owned(),
            ordered: true,
            reliability: Reliability::Reliable,
            negotiated: None,
            protocol: CHANNEL_PROTOCOL.to_owned(),
        });
        let blob = api.add_channel_with_config(ChannelConfig {
            label: BLOB_LABEL.to_owned(),
            ordered: true,
            reliability: Reliability::Reliable,
            negotiated: None,
            protocol: BLOB_PROTOCOL.to_owned(),
        });
        let (offer, pending) = api
            .apply()
            .ok_or(PeerError::Negotiation("nothing to offer"))?;
        self.channel = Some(id);
        self.blob = Some(blob);
        self.pending_offer = Some(pending);
        self.kick(now);
        Ok(self.outgoing_sdp(offer.to_sdp_string()))
    }

    /// Applies a remote offer (the first one, or a later ICE restart) and returns our answer.
    pub(crate) fn accept_offer(&mut self, now: Instant, sdp: &str) -> Result<String, PeerError> {
        self.ensure_open()?;
        let offer =
            SdpOffer::from_sdp_string(sdp).map_err(|e| PeerError::InvalidSdp(e.to_string()))?;
        if self.pending_offer.is_some() {
            // Glare. The first offerer's offer wins, and an offer adding audio is never
            // dropped; a restart offer of the first answerer yields (str0m's `accept_offer`
            // invalidates it), and the peer's restart does what ours would have.
            if self.role == Role::Offerer
                || self.pending_audio.is_some()
                || !self.had_remote_description
            {
                return Err(PeerError::Negotiation("an offer of ours is pending"));
            }
            tracing::debug!("crossing ICE restart offers: the peer's wins");
        }
        let restart = self.had_remote_description && sdp_ufrag(sdp) != self.remote_ufrag;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| PeerError::InvalidSdp(e.to_string()))?;
        self.pending_offer = None;
        if restart {
            self.restarted(now, true);
            // str0m kept our candidates (the answer carries them); a NAT may have moved our
            // mappings since: STUN again, and ask the relay where it sees us (a moved mapping
            // means a lost allocation and a fresh one).
            if let Some(bases) = self.pending_bases.take() {
                self.forget_hosts_not_in(&bases);
                self.use_bases(bases);
                self.restart_relays(now);
            } else {
                for r in &mut self.relays {
                    r.probe(now);
                }
                self.pump_relays(now);
            }
            self.restart_gathering(now);
        }
        self.remote_description_applied(now, sdp);
        Ok(self.outgoing_sdp(answer.to_sdp_string()))
    }

    /// An ICE restart began (our offer or the peer's); with `fresh_window`, a new
    /// `disconnected_timeout` before the connection is given up.
    fn restarted(&mut self, now: Instant, fresh_window: bool) {
        self.restarts += 1;
        self.restart_at = Some(now);
        if let (true, Some(since)) = (fresh_window, self.disconnected_since.as_mut()) {
            *since = now;
        }
    }

    /// Withdraws our host candidates on sockets that are gone (a rebind while str0m kept its
    /// candidates).
    fn forget_hosts_not_in(&mut self, bases: &[SocketAddr]) {
        let gone: Vec<SocketAddr> = self
            .local
            .iter()
            .filter(|c| c.kind == CandidateType::Host && !bases.contains(&c.addr))
            .map(|c| c.addr)
            .collect();
        for addr in gone {
            if let Ok(c) = Candidate::host(addr, "udp") {
                self.rtc.direct_api().invalidate_candidate(&c);
            }
        }
    }

    /// Applies the answer to our pending offer (initial or ICE restart).
    pub(crate) fn accept_answer(&mut self, now: Instant, sdp: &str) -> Result<(), PeerError> {
        self.ensure_open()?;
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| PeerError::InvalidSdp(e.to_string()))?;
        let pending = self
            .pending_offer
            .take()
            .ok_or(PeerError::Negotiation("no offer is pending"))?;
        if sdp_ufrag(sdp).is_none() {
            return Err(PeerError::InvalidSdp("the answer has no ICE ufrag".into()));
        }
        let audio = self.pending_audio.take();
        let video = self.pending_video.take();
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| PeerError::InvalidSdp(e.to_string()))?;
        if let Some(mid) = audio {
            self.on_media_added(mid, MediaKind::Audio);
        }
        if let Some(mid) = video {
            self.on_media_added(mid, MediaKind::Video);
        }
        if let Some(bases) = self.pending_bases.take() {
            // The restart cleared str0m's local candidates; announce the sockets' ones again.
            // New sockets need a new allocation; on the same ones a working allocation is
            // announced again and asked where it sees us (the path-loss probe made a fresh
            // one already if a NAT had moved our mapping).
            let same = bases == self.bases;
            self.use_bases(bases);
            if same {
                self.announce_relays_again(now);
            } else {
                self.restart_relays(now);
            }
            self.restart_gathering(now);
        }
        self.remote_description_applied(now, sdp);
        Ok(())
    }

    fn remote_description_applied(&mut self, now: Instant, sdp: &str) {
        self.had_remote_description = true;
        self.remote_ufrag = sdp_ufrag(sdp);
        for line in sdp.lines() {
            if let Some(c) = line
                .trim()
                .strip_prefix("a=")
                .filter(|l| l.starts_with("candidate:"))
                .and_then(|l| Candidate::from_sdp_string(l).ok())
            {
                self.note_remote(now, &c);
            }
        }
        let queued = std::mem::take(&mut self.queued_remote);
        for c in queued {
            self.apply_remote_candidate(now, c);
        }
        self.kick(now);
    }

    /// Adds a trickled remote candidate; queued until its description is known.
    pub(crate) fn add_remote_candidate(
        &mut self,
        now: Instant,
        line: &str,
    ) -> Result<(), PeerError> {
        self.ensure_open()?;
        let line = line.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() || line == "end-of-candidates" {
            return Ok(());
        }
        let c = Candidate::from_sdp_string(line).map_err(|_| PeerError::InvalidCandidate)?;
        let ufrag_unknown = match (c.ufrag(), &self.remote_ufrag) {
            (Some(theirs), Some(known)) => theirs != known,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !self.had_remote_description || ufrag_unknown || self.pending_offer.is_some() {
            if self.queued_remote.len() < MAX_QUEUED_REMOTE {
                self.queued_remote.push(c);
            } else {
                tracing::debug!("remote candidate queue full; candidate dropped");
            }
            return Ok(());
        }
        self.apply_remote_candidate(now, c);
        self.kick(now);
        Ok(())
    }

    fn apply_remote_candidate(&mut self, now: Instant, c: Candidate) {
        if self.remote.len() >= MAX_REMOTE_CANDIDATES {
            return;
        }
        self.note_remote(now, &c);
        self.rtc.add_remote_candidate(c);
    }

    fn note_remote(&mut self, now: Instant, c: &Candidate) {
        let entry = (c.addr(), CandidateType::from_kind(c.kind()));
        if !self.remote.contains(&entry) && self.remote.len() < MAX_REMOTE_CANDIDATES {
            self.remote.push(entry);
        }
        // Permission and channel on our relay before str0m's checks reach this address:
        // every type, not only relay (one side alone may be behind a symmetric NAT).
        if c.proto() == Protocol::Udp {
            for r in &mut self.relays {
                r.add_peer(now, c.addr());
            }
            self.pump_relays(now);
        }
    }

    /// Starts server-reflexive discovery against these (resolved) STUN servers.
    pub(crate) fn start_gathering(&mut self, now: Instant, servers: Vec<SocketAddr>) {
        self.stun_servers = servers;
        self.restart_gathering(now);
    }

    fn restart_gathering(&mut self, now: Instant) {
        self.gathering_reported = false;
        let bases = self.bases.clone();
        self.gatherer.start(now, &bases, &self.stun_servers);
        self.pump_gatherer();
        self.kick(now);
    }

    fn pump_gatherer(&mut self) {
        let mut steps = 0;
        while let Some(o) = self.gatherer.poll_output() {
            steps += 1;
            if steps > MAX_DRAIN_STEPS {
                break;
            }
            match o {
                GatherOutput::Transmit { from, to, data } => {
                    self.bytes_sent += data.len() as u64;
                    self.out.push_back(EngineOutput::Transmit {
                        source: from,
                        destination: to,
                        contents: data,
                    });
                }
                GatherOutput::Mapped(m) => self.add_srflx(m),
            }
        }
        self.check_gathering_complete();
    }

    fn check_gathering_complete(&mut self) {
        if self.gatherer.is_done() && self.relays_settled() && !self.gathering_reported {
            self.gathering_reported = true;
            self.out
                .push_back(EngineOutput::Event(PeerEvent::GatheringComplete));
        }
    }

    /// No allocation is being made any more (or TURN is not configured).
    fn relays_settled(&self) -> bool {
        !self.turn_configured
            || (self.relays_started && !self.relays.iter().any(|r| r.is_pending()))
    }

    /// Starts allocating on the (resolved) TURN servers, trying them in order until one works.
    /// Call it once, also with an empty list when nothing resolved, when TURN is configured.
    pub(crate) fn start_relays(&mut self, now: Instant, targets: Vec<RelayTarget>) {
        let mut targets = targets;
        targets.sort_by_key(|t| match t.transport {
            RelayTransport::Udp => 0,
            RelayTransport::Tcp => 1,
            RelayTransport::Tls => 2,
        });
        self.relay_targets = targets;
        self.relays_started = true;
        self.relay_cursor = 0;
        self.reallocations = 0;
        self.start_relay(now);
        self.check_gathering_complete();
    }

    /// New credentials (a new login): later allocations use these targets. A working or
    /// pending allocation is kept (its credentials were valid when it was made); with none,
    /// allocating starts again at once.
    pub(crate) fn update_relay_targets(&mut self, now: Instant, targets: Vec<RelayTarget>) {
        let mut targets = targets;
        targets.sort_by_key(|t| match t.transport {
            RelayTransport::Udp => 0,
            RelayTransport::Tcp => 1,
            RelayTransport::Tls => 2,
        });
        if !targets.is_empty() {
            self.turn_configured = true;
        }
        self.relay_targets = targets;
        self.relay_cursor = 0;
        self.relays_started = true;
        let busy = self
            .relays
            .iter()
            .any(|r| r.state() == &RelayState::Ready || r.is_pending());
        if !busy && self.closed.is_none() {
            self.reallocations = 0;
            self.start_relay(now);
        }
        self.check_gathering_complete();
    }

    /// After a restart that dropped str0m's local candidates on the same sockets: the relayed
    /// candidates of working allocations go back in (and to the peer), and each relay is
    /// asked where it sees us, so a moved mapping is noticed and allocated again.
    fn announce_relays_again(&mut self, now: Instant) {
        let ready: Vec<(SocketAddr, SocketAddr)> = self
            .relays
            .iter()
            .filter(|r| r.state() == &RelayState::Ready)
            .filter_map(|r| {
                let relayed = r.relayed()?;
                let base = self
                    .relay_cands
                    .iter()
                    .find(|(a, _, _)| *a == relayed)
                    .map(|(_, b, _)| *b)?;
                Some((relayed, base))
            })
            .collect();
        self.relay_cands.clear();
        self.local.retain(|l| l.kind != CandidateType::Relay);
        for (relayed, base) in ready {
            self.add_relayed(now, relayed, base);
        }
        for r in &mut self.relays {
            r.probe(now);
        }
        self.pump_relays(now);
    }

    fn restart_relays(&mut self, now: Instant) {
        for r in &mut self.relays {
            r.close(now);
        }
        // Only their last datagrams leave: a closed allocation's "lost" must not start
        // another one beside the fresh one started here.
        self.pump_relays_io();
        self.relay_stash.clear();
        self.relays.clear();
        self.forget_dead_relay_candidates();
        if self.relays_started {
            self.relay_cursor = 0;
            self.reallocations = 0;
            self.start_relay(now);
        }
    }

    fn start_relay(&mut self, now: Instant) {
        while let Some(target) = self.relay_targets.get(self.relay_cursor).cloned() {
            let id = self.next_relay_id;
            let relay = match target.transport {
                RelayTransport::Udp => {
                    let Some(base) = self
                        .bases
                        .iter()
                        .copied()
                        .find(|b| b.is_ipv4() == target.server.is_ipv4())
                    else {
                        self.relay_cursor += 1;
                        continue;
                    };
                    Relay::udp(id, target, base, now)
                }
                RelayTransport::Tcp | RelayTransport::Tls => Relay::stream(id, target, now),
            };
            self.next_relay_id += 1;
            let mut relay = relay;
            for (addr, _) in &self.remote {
                relay.add_peer(now, *addr);
            }
            // Keep a few finished attempts for diagnostics, not an unbounded history.
            if self.relays.len() >= 8 {
                self.relays.remove(0);
            }
            self.relays.push(relay);
            self.pump_relays(now);
            return;
        }
    }

    /// Moves relay I/O to our outputs; everything else waits for [`Engine::pump_relays`]
    /// (it mutates str0m, which is not allowed in the middle of a drain).
    fn pump_relays_io(&mut self) {
        for r in &mut self.relays {
            while let Some(o) = r.poll_output() {
                match o {
                    RelayOutput::Datagram { from, to, data } => {
                        self.bytes_sent += data.len() as u64;
                        self.out.push_back(EngineOutput::Transmit {
                            source: from,
                            destination: to,
                            contents: data,
                        });
                    }
                    RelayOutput::Stream { relay, data } => {
                        self.bytes_sent += data.len() as u64;
                        self.out
                            .push_back(EngineOutput::RelayStream { relay, data });
                    }
                    RelayOutput::Connect { relay, server } => {
                        self.out
                            .push_back(EngineOutput::RelayConnect { relay, server });
                    }
                    RelayOutput::CloseStream { relay } => {
                        self.out.push_back(EngineOutput::RelayClose { relay });
                    }
                    other => self.relay_stash.push_back(other),
                }
            }
        }
    }

    /// Moves relay outputs on and acts on what the relays report.
    fn pump_relays(&mut self, now: Instant) {
        for _ in 0..MAX_DRAIN_STEPS {
            self.pump_relays_io();
            let Some(o) = self.relay_stash.pop_front() else {
                break;
            };
            match o {
                RelayOutput::Allocated { relayed, base } => self.add_relayed(now, relayed, base),
                RelayOutput::PeerData {
                    relayed,
                    peer,
                    data,
                } => {
                    if self.closed.is_some() {
                        continue;
                    }
                    match Receive::new(Protocol::Udp, peer, relayed, &data) {
                        Ok(r) => {
                            self.peer_heard(now);
                            if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
                                self.on_rtc_error(now, e);
                            }
                        }
                        Err(_) => tracing::trace!("unparseable relayed datagram dropped"),
                    }
                    self.drain(now);
                }
                RelayOutput::Failed { why } => {
                    tracing::info!(%why, "TURN relay attempt failed; trying the next one if any");
                    self.relay_cursor += 1;
                    if self.closed.is_none() {
                        self.start_relay(now);
                    }
                    self.check_gathering_complete();
                }
                RelayOutput::Lost { why } => {
                    tracing::info!(%why, "TURN allocation lost; allocating again");
                    self.forget_dead_relay_candidates();
                    if self.closed.is_none() {
                        if self.reallocations < MAX_REALLOCATIONS {
                            self.reallocations += 1;
                        } else {
                            self.relay_cursor += 1;
                        }
                        self.start_relay(now);
                    }
                }
                RelayOutput::Datagram { .. }
                | RelayOutput::Stream { .. }
                | RelayOutput::Connect { .. }
                | RelayOutput::CloseStream { .. } => {}
            }
        }
    }

    /// Our relayed address becomes a local candidate (lowest priority by its type) and is
    /// trickled to the peer.
    fn add_relayed(&mut self, now: Instant, relayed: SocketAddr, base: SocketAddr) {
        if self.closed.is_some() {
            return;
        }
        let Ok(c) = Candidate::relayed(relayed, base, "udp") else {
            tracing::debug!("relayed address refused as a candidate");
            return;
        };
        let Some(added) = self.rtc.add_local_candidate(c) else {
            return;
        };
        let line = added.to_sdp_string();
        self.relay_cands.push((relayed, base, added.clone()));
        self.local.push(LocalCandidate {
            kind: CandidateType::Relay,
            addr: relayed,
        });
        self.out
            .push_back(EngineOutput::Event(PeerEvent::LocalCandidate(line)));
        self.check_gathering_complete();
        self.kick(now);
    }

    /// Withdraws from str0m the relayed candidates whose allocation is gone, so no check or
    /// packet is sent from them and a restart does not signal them again.
    fn forget_dead_relay_candidates(&mut self) {
        let relays = &self.relays;
        let alive = |addr: &SocketAddr| {
            relays
                .iter()
                .any(|r| r.relayed() == Some(*addr) && r.state() == &RelayState::Ready)
        };
        let (keep, dead): (Vec<_>, Vec<_>) = std::mem::take(&mut self.relay_cands)
            .into_iter()
            .partition(|(a, _, _)| alive(a));
        self.relay_cands = keep;
        for (addr, _, c) in dead {
            self.rtc.direct_api().invalidate_candidate(&c);
            self.local
                .retain(|l| !(l.kind == CandidateType::Relay && l.addr == addr));
        }
    }

    /// The task connected relay `relay`'s TCP stream from local address `local`.
    pub(crate) fn relay_stream_connected(&mut self, now: Instant, relay: u32, local: SocketAddr) {
        if let Some(r) = self.relays.iter_mut().find(|r| r.id == relay) {
            r.stream_connected(local, now);
        }
        self.pump_relays(now);
    }

    /// Bytes arrived on relay `relay`'s TCP stream.
    pub(crate) fn relay_stream_data(&mut self, now: Instant, relay: u32, data: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        self.bytes_received += data.len() as u64;
        if let Some(r) = self.relays.iter_mut().find(|r| r.id == relay) {
            r.stream_data(now, data);
        }
        self.pump_relays(now);
        self.drain(now);
    }

    /// Relay `relay`'s TCP stream failed to open or closed.
    pub(crate) fn relay_stream_failed(&mut self, now: Instant, relay: u32, why: &str) {
        if let Some(r) = self.relays.iter_mut().find(|r| r.id == relay) {
            r.stream_failed(now, why);
        }
        self.pump_relays(now);
    }

    fn add_srflx(&mut self, m: Mapping) {
        if self.signalled_srflx.contains(&m.mapped) || self.relay_only {
            return;
        }
        if m.mapped == m.base && self.share_host {
            return; // no NAT: the host candidate already says it all
        }
        let Ok(c) = Candidate::server_reflexive(m.mapped, m.base, "udp") else {
            tracing::debug!("STUN mapping refused as srflx candidate");
            return;
        };
        let fallback = c.to_sdp_string();
        // str0m refuses a srflx equal to its host base as redundant; with host candidates
        // hidden it must still be signalled, since it is the only way the peer learns it.
        let line = match self.rtc.add_local_candidate(c) {
            Some(added) => added.to_sdp_string(),
            None => fallback,
        };
        self.signalled_srflx.push(m.mapped);
        self.local.push(LocalCandidate {
            kind: CandidateType::Srflx,
            addr: m.mapped,
        });
        self.out
            .push_back(EngineOutput::Event(PeerEvent::LocalCandidate(line)));
    }

    /// Adds the call's m-lines by renegotiation, a send-and-receive Opus one and a
    /// send-and-receive VP8 one, and returns the offer for the peer (who answers with
    /// [`Engine::accept_offer`]; apply its answer with [`Engine::accept_answer`]). One audio
    /// and one video m-line per connection: later calls reuse them. The video m-line carries
    /// nothing until a camera is on (docs/media.md, "Video").
    pub(crate) fn add_audio(&mut self, now: Instant) -> Result<String, PeerError> {
        self.ensure_open()?;
        if self.audio_mid.is_some() {
            return Err(PeerError::Negotiation("audio is already negotiated"));
        }
        if self.pending_offer.is_some() {
            return Err(PeerError::Negotiation("an offer of ours is pending"));
        }
        let mut api = self.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let (offer, pending) = api
            .apply()
            .ok_or(PeerError::Negotiation("nothing to offer"))?;
        self.pending_offer = Some(pending);
        self.pending_audio = Some(mid);
        self.pending_video = Some(video);
        self.kick(now);
        Ok(self.outgoing_sdp(offer.to_sdp_string()))
    }

    /// The negotiated audio m-line.
    pub(crate) fn audio_mid(&self) -> Option<String> {
        self.audio_mid.map(|m| m.to_string())
    }

    /// The media counters (the task counts what it refuses too).
    pub(crate) fn media_stats(&mut self) -> &mut MediaStats {
        &mut self.media
    }

    /// Writes one Opus frame on the audio m-line.
    #[cfg(test)]
    pub(crate) fn write_audio(
        &mut self,
        now: Instant,
        rtp_time: u64,
        data: Vec<u8>,
    ) -> Result<(), PeerError> {
        self.write_audio_level(now, rtp_time, data, None)
    }

    /// Writes one Opus frame with its RFC 6464 audio level (dBov, −127 to 0), if known.
    pub(crate) fn write_audio_level(
        &mut self,
        now: Instant,
        rtp_time: u64,
        data: Vec<u8>,
        audio_level: Option<i8>,
    ) -> Result<(), PeerError> {
        self.ensure_open()?;
        let Some(mid) = self.audio_mid else {
            let why = "no audio m-line is negotiated on this connection".to_owned();
            self.media.refuse_out(why.clone());
            return Err(PeerError::Media(why));
        };
        let Some(writer) = self.rtc.writer(mid) else {
            let why = format!("m-line {mid} has no writer (not sending)");
            self.media.refuse_out(why.clone());
            return Err(PeerError::Media(why));
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == str0m::format::Codec::Opus)
            .map(|p| p.pt())
        else {
            let why = format!("m-line {mid} negotiated no Opus payload type");
            self.media.refuse_out(why.clone());
            return Err(PeerError::Media(why));
        };
        let time = MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ);
        let writer = match audio_level {
            Some(l) => writer.audio_level(l.clamp(-127, 0), l >= crate::media::VOICE_ACTIVITY_DBOV),
            None => writer,
        };
        match writer.write(pt, now, time, data) {
            Ok(()) => {
                self.media.frames_sent += 1;
                self.drain(now);
                self.pump_relays(now);
                Ok(())
            }
            Err(e) => {
                let why = format!("the engine refused the frame: {e}");
                self.media.refuse_out(why.clone());
                Err(PeerError::Media(why))
            }
        }
    }

    /// Writes one VP8 frame (RTP time at 90 kHz) on the video m-line; str0m packetizes it.
    pub(crate) fn write_video(
        &mut self,
        now: Instant,
        rtp_time: u64,
        data: Vec<u8>,
    ) -> Result<(), PeerError> {
        self.ensure_open()?;
        let Some(mid) = self.video_mid else {
            let why = "no video m-line is negotiated on this connection".to_owned();
            self.media.refuse_out(why.clone());
            return Err(PeerError::Media(why));
        };
        let Some(writer) = self.rtc.writer(mid) else {
            let why = format!("m-line {mid} has no writer (not sending)");
            self.media.refuse_out(why.clone());
            return Err(PeerError::Media(why));
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
            .map(|p| p.pt())
        else {
            let why = format!("m-line {mid} negotiated no VP8 payload type");
            self.media.refuse_out(why.clone());
            return Err(PeerError::Media(why));
        };
        let time = MediaTime::new(rtp_time, Frequency::NINETY_KHZ);
        match writer.write(pt, now, time, data) {
            Ok(()) => {
                self.media.video_frames_sent += 1;
                self.drain(now);
                self.pump_relays(now);
                Ok(())
            }
            Err(e) => {
                let why = format!("the engine refused the video frame: {e}");
                self.media.refuse_out(why.clone());
                Err(PeerError::Media(why))
            }
        }
    }

    /// Asks the peer for a keyframe (PLI) on the video it sends us, at most once per
    /// [`crate::media::KEYFRAME_REQUEST_INTERVAL`]; `Ok(false)` when this one was throttled.
    pub(crate) fn request_keyframe(&mut self, now: Instant) -> Result<bool, PeerError> {
        self.ensure_open()?;
        let Some(mid) = self.video_mid else {
            let why = "a keyframe request, but no video m-line is negotiated".to_owned();
            self.media.refuse_out(why.clone());
            return Err(PeerError::Media(why));
        };
        if self
            .keyframe_out_at
            .is_some_and(|t| now.duration_since(t) < crate::media::KEYFRAME_REQUEST_INTERVAL)
        {
            self.media.keyframe_requests_throttled += 1;
            return Ok(false);
        }
        let result = match self.rtc.writer(mid) {
            None => Err(format!("m-line {mid} has no writer")),
            Some(mut w) => w
                .request_keyframe(None, KeyframeRequestKind::Pli)
                .map_err(|e| format!("the peer sends no video to ask a keyframe of: {e}")),
        };
        match result {
            Ok(()) => {
                self.keyframe_out_at = Some(now);
                self.media.keyframe_requests_sent += 1;
                self.drain(now);
                self.pump_relays(now);
                Ok(true)
            }
            Err(why) => {
                self.media.refuse_out(why.clone());
                Err(PeerError::Media(why))
            }
        }
    }

    /// The negotiated video m-line.
    #[cfg(test)]
    pub(crate) fn video_mid(&self) -> Option<String> {
        self.video_mid.map(|m| m.to_string())
    }

    fn on_media_added(&mut self, mid: Mid, kind: MediaKind) {
        if kind == MediaKind::Video {
            match self.video_mid {
                Some(m) if m == mid => {}
                Some(m) => self.media.refuse_in(format!(
                    "the peer added a second video m-line ({mid}); {m} is the call's"
                )),
                None => {
                    self.video_mid = Some(mid);
                    self.media.video_mid = Some(mid.to_string());
                }
            }
            return;
        }
        match self.audio_mid {
            Some(m) if m == mid => {}
            Some(m) => self.media.refuse_in(format!(
                "the peer added a second audio m-line ({mid}); {m} is the call's"
            )),
            None => {
                self.audio_mid = Some(mid);
                self.media.audio_mid = Some(mid.to_string());
                self.out.push_back(EngineOutput::Media(MediaEvent::Ready {
                    mid: mid.to_string(),
                }));
            }
        }
    }

    /// Starts an ICE restart and returns the offer for it. With `new_bases`, the connection
    /// moves to those sockets (the old ones are gone): candidates are regathered once the peer
    /// answers.
    pub(crate) fn restart_ice(
        &mut self,
        now: Instant,
        new_bases: Option<Vec<SocketAddr>>,
    ) -> Result<String, PeerError> {
        self.make_restart_offer(now, new_bases, true)
    }

    /// [`Engine::restart_ice`]; `fresh_window` gives the connection a new
    /// `disconnected_timeout` (asked for by the application, not the automatic retries, so a
    /// dead path is still given up in the end).
    fn make_restart_offer(
        &mut self,
        now: Instant,
        new_bases: Option<Vec<SocketAddr>>,
        fresh_window: bool,
    ) -> Result<String, PeerError> {
        self.ensure_open()?;
        // A pending restart offer may be replaced (its answer may never come); the first offer
        // and an offer adding audio may not.
        if self.pending_offer.is_some()
            && (self.pending_audio.is_some() || !self.had_remote_description)
        {
            return Err(PeerError::Negotiation("an offer of ours is pending"));
        }
        let keep = new_bases.is_none();
        let mut api = self.rtc.sdp_api();
        api.ice_restart(keep);
        let (offer, pending) = api
            .apply()
            .ok_or(PeerError::Negotiation("nothing to offer"))?;
        self.pending_offer = Some(pending);
        if new_bases.is_some() || self.pending_bases.is_none() {
            self.pending_bases = new_bases;
        }
        self.restarted(now, fresh_window);
        self.kick(now);
        Ok(self.outgoing_sdp(offer.to_sdp_string()))
    }

    /// The path went silent: ask the relays where they see us (a NAT that forgot our mapping
    /// shows as a new address, and a lost allocation is made again), report `Disconnected`,
    /// and begin an ICE restart. The first offerer restarts at once; the first answerer waits
    /// one more timeout for the peer's restart before making its own. A restart that brought
    /// nothing back is made again after two timeouts.
    fn on_path_silent(&mut self, now: Instant, timeout: Duration) {
        let lost_at = match self.path_lost_at {
            Some(at) => at,
            None => {
                tracing::info!(
                    after = ?timeout,
                    "nothing from the peer: path lost; probing the relay and restarting ICE"
                );
                self.path_lost_at = Some(now);
                if self.state == ConnectionState::Connected {
                    self.disconnected_since = Some(now);
                    self.set_state(ConnectionState::Disconnected);
                }
                for r in &mut self.relays {
                    r.probe(now);
                }
                self.pump_relays(now);
                now
            }
        };
        let quiet_since_restart = self
            .restart_at
            .is_none_or(|at| now >= later(at, timeout.saturating_mul(2)));
        let our_turn = self.role == Role::Offerer || now >= later(lost_at, timeout);
        if !(quiet_since_restart && our_turn) {
            return;
        }
        // With the same sockets as new bases: every candidate is gathered again once the peer
        // answers (host, srflx, and a fresh relay allocation from a fresh NAT mapping).
        let bases = self.bases.clone();
        match self.make_restart_offer(now, Some(bases), false) {
            Ok(sdp) => {
                self.out
                    .push_back(EngineOutput::Event(PeerEvent::RestartOffer(sdp)));
            }
            Err(e) => {
                // Another offer is out; try again after the next window.
                self.restart_at = Some(now);
                tracing::debug!(error = %e, "no ICE restart now");
            }
        }
    }

    /// When the path-loss timer fires next, if it runs.
    fn path_deadline(&self) -> Option<Instant> {
        let timeout = self.path_loss_timeout?;
        if self.opened_at.is_none() || self.closed.is_some() {
            return None;
        }
        let silent = later(self.last_peer_rx, timeout);
        Some(match (self.path_lost_at, self.restart_at) {
            (None, _) => silent,
            (Some(lost), restart) => {
                let answerer_turn = if self.role == Role::Answerer {
                    later(lost, timeout)
                } else {
                    lost
                };
                let retry = restart.map_or(lost, |at| later(at, timeout.saturating_mul(2)));
                answerer_turn.max(retry)
            }
        })
    }

    /// str0m writes every local candidate into the SDP; with host candidates private, those
    /// lines must not leave either.
    fn outgoing_sdp(&self, sdp: String) -> String {
        if self.share_host {
            return sdp;
        }
        let kept: Vec<&str> = sdp
            .split_inclusive('\n')
            .filter(|l| {
                !(l.starts_with("a=candidate:")
                    && CandidateType::of_candidate(l) == Some(CandidateType::Host))
            })
            .collect();
        kept.concat()
    }

    /// Processes a datagram received on our socket `destination`.
    pub(crate) fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        if self.closed.is_some() {
            return;
        }
        self.bytes_received += data.len() as u64;
        // The newest attempt first: older, failed ones on the same socket and relay refuse it.
        if self
            .relays
            .iter_mut()
            .rev()
            .filter(|r| r.base() == Some(destination) && r.target().server == source)
            .any(|r| r.recv_datagram(now, source, destination, data))
        {
            self.pump_relays(now);
            self.drain(now);
            return;
        }
        if self.gatherer.handle_datagram(source, destination, data) {
            self.pump_gatherer();
            self.kick(now); // a new srflx candidate may form new pairs
            return;
        }
        match Receive::new(Protocol::Udp, source, destination, data) {
            Ok(r) => {
                self.peer_heard(now);
                if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
                    self.on_rtc_error(now, e);
                }
            }
            Err(_) => tracing::trace!("unparseable datagram dropped"),
        }
        self.drain(now);
    }

    /// A datagram from the peer reached str0m: the path is alive.
    fn peer_heard(&mut self, now: Instant) {
        self.last_peer_rx = now;
        self.path_lost_at = None;
    }

    /// Advances timers to `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        self.gatherer.handle_timeout(now);
        self.pump_gatherer();
        for r in &mut self.relays {
            if r.poll_timeout().is_some_and(|t| t <= now) {
                r.handle_timeout(now);
            }
        }
        self.pump_relays(now);
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.on_rtc_error(now, e);
        }
        self.drain(now);
        self.pump_relays(now);
        self.check_timers(now);
    }

    fn check_timers(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if self.opened_at.is_none() && now >= later(self.created_at, self.connect_timeout) {
            let reason = self.connect_failure_reason();
            self.fail(now, reason);
            return;
        }
        if let (true, Some(idle)) = (self.channel_open, self.idle_timeout)
            && now >= later(self.last_activity, idle)
        {
            self.finish(now, CloseReason::IdleTimeout);
            return;
        }
        if let (ConnectionState::Disconnected, Some(since)) = (&self.state, self.disconnected_since)
            && now >= later(since, self.disconnected_timeout)
        {
            self.fail(now, FailureReason::ConnectionLost { after: now - since });
            return;
        }
        if let (Some(timeout), Some(at)) = (self.path_loss_timeout, self.path_deadline())
            && now >= at
            && now >= later(self.last_peer_rx, timeout)
        {
            self.on_path_silent(now, timeout);
        }
    }

    fn connect_failure_reason(&self) -> FailureReason {
        if !self.had_remote_description {
            FailureReason::NoAnswer
        } else if self.remote.is_empty() {
            FailureReason::NoRemoteCandidates
        } else if !self.ever_ice_connected {
            FailureReason::NoDirectPath {
                local_nat: self.gatherer.nat_behavior(),
                remote_looks_symmetric: self.remote_looks_symmetric(),
                stun_configured: self.stun_configured,
                turn_configured: self.turn_configured,
                local_candidates: self.local.len(),
                remote_candidates: self.remote.len(),
            }
        } else if !self.dtls_connected {
            FailureReason::DtlsHandshake
        } else {
            FailureReason::ChannelNotOpened
        }
    }

    /// A symmetric NAT hands out a new port per destination, so a peer behind one that asked
    /// two STUN servers signals two srflx candidates on one IP with different ports.
    fn remote_looks_symmetric(&self) -> bool {
        let srflx: Vec<SocketAddr> = self
            .remote
            .iter()
            .filter(|(_, t)| *t == CandidateType::Srflx)
            .map(|(a, _)| *a)
            .collect();
        srflx.iter().any(|a| {
            srflx
                .iter()
                .any(|b| a.ip() == b.ip() && a.port() != b.port())
        })
    }

    /// Writes one message. `Ok(false)` means the send buffer is full (or the channel is not open
    /// yet): try again once [`Engine::take_room`] says so.
    #[cfg(test)]
    pub(crate) fn write(&mut self, now: Instant, data: &[u8]) -> Result<bool, PeerError> {
        let (_, result) = self.write_batch(now, &[data]);
        result
    }

    /// Writes `messages` in order until all are in or str0m's send buffer is full, then drains
    /// once. Answers how many were written and `Ok(true)` (all), `Ok(false)` (buffer full:
    /// retry the rest later, as for [`Engine::write`]) or the error that stopped the batch.
    ///
    /// One drain per batch rather than per message: every drain makes SCTP walk its whole
    /// in-flight queue (sctp-proto's `expire_inflight_messages` and retransmit scan), which was
    /// a seventh of the sending node's CPU with one drain per message. str0m asks for a drain
    /// after each mutation; its readiness flags are OR-ed per mutation (`str0m::poll`: an
    /// over-broad wake "can never drop output"), and mutations made inside a drain are
    /// documented as fine, so several writes followed by one complete drain lose nothing: the
    /// batch test below checks order and completeness through a full send buffer.
    pub(crate) fn write_batch<M: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        messages: &[M],
    ) -> (usize, Result<bool, PeerError>) {
        let mut written = 0;
        let mut result = Ok(true);
        for m in messages {
            match self.write_one(m.as_ref()) {
                Ok(true) => written += 1,
                other => {
                    result = other;
                    break;
                }
            }
        }
        if written > 0 {
            self.last_activity = now;
            self.drain(now);
            self.pump_relays(now);
        }
        (written, result)
    }

    /// Hands one message to str0m without draining; see [`Engine::write_batch`].
    fn write_one(&mut self, data: &[u8]) -> Result<bool, PeerError> {
        self.ensure_open()?;
        if data.is_empty() {
            return Err(PeerError::EmptyMessage);
        }
        if data.len() > self.max_message_size {
            return Err(PeerError::MessageTooLarge {
                len: data.len(),
                max: self.max_message_size,
            });
        }
        let (Some(id), true) = (self.channel, self.channel_open) else {
            return Ok(false);
        };
        let Some(mut ch) = self.rtc.channel(id) else {
            return Err(PeerError::Closed);
        };
        match ch.write(true, data) {
            Ok(true) => {
                self.write_blocked = false;
                self.messages_sent += 1;
                Ok(true)
            }
            Ok(false) => {
                if !self.write_blocked {
                    self.write_blocked = true;
                    self.send_waits += 1;
                }
                Ok(false)
            }
            Err(e) => Err(PeerError::Engine(e.to_string())),
        }
    }

    /// Writes blob channel messages in order while the blob channel's buffered amount stays
    /// within its share of the send buffer, then drains once; answers like
    /// [`Engine::write_batch`].
    pub(crate) fn write_blob_batch<M: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        messages: &[M],
    ) -> (usize, Result<bool, PeerError>) {
        let mut written = 0;
        let mut result = Ok(true);
        for m in messages {
            match self.write_blob_one(m.as_ref()) {
                Ok(true) => written += 1,
                other => {
                    result = other;
                    break;
                }
            }
        }
        if written > 0 {
            self.last_activity = now;
            self.drain(now);
        }
        (written, result)
    }

    fn write_blob_one(&mut self, data: &[u8]) -> Result<bool, PeerError> {
        self.ensure_open()?;
        if data.is_empty() {
            return Err(PeerError::EmptyMessage);
        }
        if data.len() > self.max_message_size {
            return Err(PeerError::MessageTooLarge {
                len: data.len(),
                max: self.max_message_size,
            });
        }
        let (Some(id), true) = (self.blob, self.blob_open) else {
            return Ok(false);
        };
        let Some(mut ch) = self.rtc.channel(id) else {
            return Err(PeerError::Closed);
        };
        // Within the share; a message larger than the whole share goes when nothing is buffered.
        let buffered = ch.buffered_amount();
        if buffered > 0 && buffered + data.len() > self.blob_share {
            return Ok(false);
        }
        match ch.write(true, data) {
            Ok(true) => {
                self.messages_sent += 1;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => Err(PeerError::Engine(e.to_string())),
        }
    }

    /// True when the blob channel is open.
    pub(crate) fn blob_open(&self) -> bool {
        self.blob_open && self.closed.is_none()
    }

    /// True once if a write refused for lack of room may succeed now (see [`Engine::write_batch`]):
    /// the channel opened or the send buffer drained below its low-water mark.
    pub(crate) fn take_room(&mut self) -> bool {
        std::mem::take(&mut self.room)
    }

    /// True when the channel is open (writes may succeed).
    pub(crate) fn channel_open(&self) -> bool {
        self.channel_open && self.closed.is_none()
    }

    /// Closes gracefully (DTLS close_notify goes out with the next transmits).
    pub(crate) fn close(&mut self, now: Instant, reason: CloseReason) {
        self.finish(now, reason);
    }

    fn ensure_open(&self) -> Result<(), PeerError> {
        if self.closed.is_some() {
            Err(PeerError::Closed)
        } else {
            Ok(())
        }
    }

    fn on_rtc_error(&mut self, now: Instant, e: RtcError) {
        let reason = match &e {
            RtcError::RemoteSdp(m) if m.contains("fingerprint") => {
                FailureReason::DtlsFingerprintMismatch
            }
            other => FailureReason::Engine(other.to_string()),
        };
        tracing::debug!(error = %e, "str0m error");
        self.fail(now, reason);
    }

    fn fail(&mut self, now: Instant, reason: FailureReason) {
        if self.closed.is_some() {
            return;
        }
        tracing::info!(%reason, "peer connection failed");
        self.failure = Some(reason.clone());
        self.set_state(ConnectionState::Failed(reason.clone()));
        self.finish(now, CloseReason::Failed(reason));
    }

    fn finish(&mut self, now: Instant, reason: CloseReason) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(reason.clone());
        self.channel_open = false;
        self.blob_open = false;
        if self.rtc.is_alive() {
            if let Err(e) = self.rtc.close() {
                tracing::debug!(error = %e, "str0m close");
            }
            self.drain(now);
        }
        for r in &mut self.relays {
            r.close(now);
        }
        self.pump_relays_io();
        if !matches!(self.state, ConnectionState::Failed(_)) {
            self.set_state(ConnectionState::Closed);
        }
        self.out
            .push_back(EngineOutput::Event(PeerEvent::Closed { reason }));
    }

    /// True once closed and every output was taken.
    pub(crate) fn is_finished(&self) -> bool {
        self.closed.is_some() && self.out.is_empty()
    }

    fn set_state(&mut self, state: ConnectionState) {
        if self.state != state {
            tracing::debug!(?state, "peer connection state");
            self.state = state.clone();
            self.out
                .push_back(EngineOutput::Event(PeerEvent::State(state)));
        }
    }

    /// After a change made through the SDP API or new candidates: str0m's ICE agent only starts
    /// (or re-plans) checks on a timeout input, and the timeout it reported before the change
    /// may lie far in the future. Without this, a side whose peer's packets cannot reach it yet
    /// (behind a NAT) would sit idle until some unrelated timer fired.
    fn kick(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.on_rtc_error(now, e);
        }
        self.drain(now);
    }

    /// str0m's rule: after every mutation, poll until it returns a timeout.
    fn drain(&mut self, now: Instant) {
        for _ in 0..MAX_DRAIN_STEPS {
            if !self.rtc.is_alive() {
                return;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.rtc_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let contents: Vec<u8> = t.contents.into();
                    if let Some(r) = self
                        .relays
                        .iter_mut()
                        .find(|r| r.relayed() == Some(t.source))
                    {
                        // str0m sends from our relayed address: wrap it (ChannelData or a Send
                        // indication) and send it to the relay instead.
                        r.send(now, t.destination, contents);
                        self.pump_relays_io();
                        continue;
                    }
                    self.bytes_sent += contents.len() as u64;
                    self.out.push_back(EngineOutput::Transmit {
                        source: t.source,
                        destination: t.destination,
                        contents,
                    });
                }
                Ok(Output::Event(e)) => self.on_event(now, e),
                Err(e) => {
                    self.on_rtc_error(now, e);
                    return;
                }
            }
        }
        // Not reached in practice; come back at once rather than spin here.
        self.rtc_timeout = now;
    }

    fn on_event(&mut self, now: Instant, e: Event) {
        match e {
            Event::IceConnectionStateChange(s) => self.on_ice_state(now, s),
            Event::Connected => {
                self.dtls_connected = true;
                self.set_state(ConnectionState::Connected);
            }
            Event::ChannelOpen(id, label) if label == BLOB_LABEL || self.blob == Some(id) => {
                if self.blob.is_none() && self.role == Role::Answerer {
                    self.blob = Some(id);
                }
                if self.blob != Some(id) {
                    tracing::debug!("extra blob channel from the peer ignored");
                    return;
                }
                if let Some(mut ch) = self.rtc.channel(id) {
                    // Refilled at half its share: the transfer keeps data in flight.
                    ch.set_buffered_amount_low_threshold(self.blob_share / 2);
                }
                self.blob_open = true;
                self.room = true;
                self.last_activity = now;
                self.out.push_back(EngineOutput::Event(PeerEvent::BlobOpen));
            }
            Event::ChannelOpen(id, _label) => {
                if self.channel.is_none() && self.role == Role::Answerer {
                    self.channel = Some(id);
                }
                if self.channel != Some(id) {
                    tracing::debug!("extra data channel from the peer ignored");
                    return;
                }
                if let Some(mut ch) = self.rtc.channel(id) {
                    ch.set_buffered_amount_low_threshold(self.low_threshold);
                }
                self.channel_open = true;
                self.room = true;
                self.last_activity = now;
                self.opened_at.get_or_insert(now);
                self.out
                    .push_back(EngineOutput::Event(PeerEvent::ChannelOpen));
            }
            Event::ChannelData(d) if self.channel == Some(d.id) && self.channel_open => {
                self.messages_received += 1;
                self.last_activity = now;
                self.out
                    .push_back(EngineOutput::Event(PeerEvent::Data(d.data)));
            }
            // The send buffer drained below the low-water mark (a quarter of it): a blocked
            // write is retried now, and finds room for a large batch at once.
            Event::ChannelBufferedAmountLow(id) if self.channel == Some(id) => self.room = true,
            Event::ChannelData(d) if self.blob == Some(d.id) && self.blob_open => {
                self.messages_received += 1;
                self.last_activity = now;
                self.out
                    .push_back(EngineOutput::Event(PeerEvent::BlobData(d.data)));
            }
            Event::ChannelBufferedAmountLow(id) if self.blob == Some(id) => self.room = true,
            Event::ChannelClose(id) if self.blob == Some(id) => self.blob_open = false,
            Event::ChannelClose(id) if self.channel == Some(id) => {
                self.finish(now, CloseReason::Remote);
            }
            Event::Closed => self.finish(now, CloseReason::Remote),
            Event::MediaAdded(m) => self.on_media_added(m.mid, m.kind),
            Event::MediaData(d) if Some(d.mid) == self.video_mid && self.video_mid.is_some() => {
                self.last_activity = now;
                self.media.video_frames_received += 1;
                self.out
                    .push_back(EngineOutput::Media(MediaEvent::Video(MediaFrame {
                        mid: d.mid.to_string(),
                        pt: *d.pt,
                        rtp_time: d.time.numer(),
                        seq_first: **d.seq_range.start(),
                        seq_last: **d.seq_range.end(),
                        contiguous: d.contiguous,
                        data: d.data.to_vec(),
                        audio_level: None,
                    })));
            }
            Event::KeyframeRequest(r) => {
                if Some(r.mid) != self.video_mid {
                    self.media.refuse_in(format!(
                        "a keyframe request for m-line {}, which is not the call's video",
                        r.mid
                    ));
                } else if self.keyframe_in_at.is_some_and(|t| {
                    now.duration_since(t) < crate::media::KEYFRAME_REQUEST_INTERVAL
                }) {
                    self.media.keyframe_requests_throttled += 1;
                } else {
                    self.keyframe_in_at = Some(now);
                    self.out
                        .push_back(EngineOutput::Media(MediaEvent::KeyframeRequest));
                }
            }
            Event::MediaData(d) => {
                if Some(d.mid) != self.audio_mid {
                    self.media.refuse_in(format!(
                        "media on m-line {} that the call did not negotiate",
                        d.mid
                    ));
                    return;
                }
                self.last_activity = now;
                self.out
                    .push_back(EngineOutput::Media(MediaEvent::Frame(MediaFrame {
                        mid: d.mid.to_string(),
                        pt: *d.pt,
                        rtp_time: d.time.numer(),
                        seq_first: **d.seq_range.start(),
                        seq_last: **d.seq_range.end(),
                        contiguous: d.contiguous,
                        data: d.data.to_vec(),
                        audio_level: d.ext_vals.audio_level,
                    })));
            }
            Event::MediaEgressStats(s) if Some(s.mid) == self.video_mid => {
                let (cap, sent) = self.video_rate.on_report(now, s.bytes, s.loss);
                self.media.video_rate_bps = Some(cap);
                self.media.video_send_bps = sent;
                if let Some(l) = s.loss.filter(|l| l.is_finite()) {
                    self.media.video_loss_permille = Some((l.clamp(0.0, 1.0) * 1000.0) as u16);
                }
            }
            Event::PeerStats(s) => {
                if let Some(p) = s.selected_candidate_pair {
                    self.selected = Some((p.local.addr, p.remote.addr));
                    self.rtt = p.current_round_trip_time.or(self.rtt);
                    self.size_blob_share();
                }
            }
            _ => {}
        }
    }

    /// Sizes the blob channel's share to the path's RTT (see [`BLOB_SHARE_RATE`]); the full
    /// configured share until an RTT is known.
    fn size_blob_share(&mut self) {
        let floor = BLOB_SHARE_FLOOR.min(self.blob_max);
        let share = self.rtt.map_or(self.blob_max, |rtt| {
            ((rtt.as_secs_f64() * BLOB_SHARE_RATE) as usize).clamp(floor, self.blob_max)
        });
        if share == self.blob_share {
            return;
        }
        let grew = share > self.blob_share;
        self.blob_share = share;
        if let Some(id) = self.blob
            && let Some(mut ch) = self.rtc.channel(id)
        {
            ch.set_buffered_amount_low_threshold(share / 2);
        }
        // A blocked blob write may fit now.
        self.room |= grew;
    }

    fn on_ice_state(&mut self, now: Instant, s: IceConnectionState) {
        match s {
            IceConnectionState::New => {}
            IceConnectionState::Checking => {
                if self.state == ConnectionState::New {
                    self.set_state(ConnectionState::Checking);
                }
            }
            IceConnectionState::Connected | IceConnectionState::Completed => {
                self.ever_ice_connected = true;
                self.disconnected_since = None;
                if self.state == ConnectionState::Disconnected && self.dtls_connected {
                    self.set_state(ConnectionState::Connected);
                }
            }
            IceConnectionState::Disconnected => {
                if self.state == ConnectionState::Connected {
                    self.disconnected_since = Some(now);
                    self.set_state(ConnectionState::Disconnected);
                }
            }
        }
    }

    pub(crate) fn poll_output(&mut self) -> Option<EngineOutput> {
        self.out.pop_front()
    }

    /// When [`Engine::handle_timeout`] must be called next.
    pub(crate) fn poll_timeout(&self) -> Instant {
        let mut t = self.rtc_timeout;
        let mut at = |d: Instant| t = t.min(d);
        if let Some(g) = self.gatherer.poll_timeout() {
            at(g);
        }
        if self.closed.is_none() {
            for r in &self.relays {
                if let Some(w) = r.poll_timeout() {
                    at(w);
                }
            }
        }
        if self.closed.is_none() {
            if self.opened_at.is_none() {
                at(later(self.created_at, self.connect_timeout));
            }
            if let (true, Some(idle)) = (self.channel_open, self.idle_timeout) {
                at(later(self.last_activity, idle));
            }
            if let Some(since) = self.disconnected_since {
                at(later(since, self.disconnected_timeout));
            }
            if let (Some(timeout), Some(p)) = (self.path_loss_timeout, self.path_deadline()) {
                at(p.max(later(self.last_peer_rx, timeout)));
            }
        }
        t
    }

    /// Which path is in use and why, with the relay attempts.
    pub(crate) fn connectivity(&self) -> Connectivity {
        let d = self.diagnostics();
        let relays: Vec<RelayInfo> = self
            .relays
            .iter()
            .map(|r| RelayInfo {
                server: r.target().label.clone(),
                transport: r.target().transport,
                state: r.state().clone(),
            })
            .collect();
        let relay_ready = self.relays.iter().any(|r| r.state() == &RelayState::Ready);
        let path = d.path();
        let why = match (path, d.selected_pair.as_ref()) {
            (Some(PathKind::Relayed), Some(pair)) => {
                if self.relay_only {
                    "relay-only mode: our address is hidden from the peer".to_owned()
                } else if pair.local != CandidateType::Relay {
                    "the peer relays (relay-only mode or no direct path on its side)".to_owned()
                } else {
                    format!(
                        "no direct pair passed the checks (this side: {})",
                        self.gatherer.nat_behavior()
                    )
                }
            }
            (Some(PathKind::DirectReflexive), Some(pair)) => {
                format!("direct through NAT ({pair}); the NATs let the checks through")
            }
            (Some(PathKind::DirectHost), _) => {
                "direct between host addresses (same network or no NAT)".to_owned()
            }
            _ => match &self.failure {
                Some(f) => f.to_string(),
                None if self.turn_configured && !relay_ready && !self.relays_settled() => {
                    "allocating a relay; checks running".to_owned()
                }
                None => "no path selected yet".to_owned(),
            },
        };
        Connectivity {
            path,
            why,
            relay_only: self.relay_only,
            relays,
        }
    }

    pub(crate) fn diagnostics(&self) -> Diagnostics {
        let selected_pair = self.selected.map(|(l, r)| {
            let local = self
                .local
                .iter()
                .filter(|c| c.addr == l)
                .map(|c| c.kind)
                .min_by_key(|k| k.rank())
                .unwrap_or(CandidateType::Host);
            let remote = self
                .remote
                .iter()
                .filter(|(a, _)| *a == r)
                .map(|(_, k)| *k)
                .min_by_key(|k| k.rank())
                .unwrap_or(CandidateType::Prflx);
            SelectedPair {
                local,
                remote,
                local_addr: Redacted::new(l),
                remote_addr: Redacted::new(r),
            }
        });
        Diagnostics {
            state: self.state.clone(),
            selected_pair,
            rtt: self.rtt,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            messages_sent: self.messages_sent,
            messages_received: self.messages_received,
            send_waits: self.send_waits,
            local_candidates: self.local.iter().map(|c| c.kind).collect(),
            remote_candidates: self.remote.iter().map(|(_, k)| *k).collect(),
            nat: self.gatherer.nat_behavior(),
            turn_unused: self.turn_configured
                && !self.relays.iter().any(|r| r.state() == &RelayState::Ready),
            setup_time: self.opened_at.map(|t| t - self.created_at),
            failure: self.failure.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Two engines wired back to back in virtual time: no sockets, no sleeping, deterministic.

    use super::*;
    use crate::cert::DtlsIdentity;

    const A: &str = "127.0.0.1:10000";
    const B: &str = "127.0.0.1:20000";

    struct Net {
        a: Engine,
        b: Engine,
        now: Instant,
        /// Drop every datagram while true (the path is cut).
        cut: bool,
        /// Drop only what A sends (B is behind a NAT that has no hole for A yet).
        cut_a_to_b: bool,
        /// Datagrams B sent.
        b_sent: usize,
        /// Drop every n-th datagram of A's over 600 bytes (video packets), if set.
        drop_a_big_every: Option<usize>,
        a_big: usize,
        a_events: Vec<PeerEvent>,
        b_events: Vec<PeerEvent>,
        a_media: Vec<MediaEvent>,
        b_media: Vec<MediaEvent>,
    }

    fn cfg(idle: Option<Duration>) -> RtcConfig {
        RtcConfig {
            dtls_identity: Some(DtlsIdentity::generate().unwrap()),
            idle_timeout: idle,
            disconnected_timeout: Duration::from_secs(20),
            ..RtcConfig::loopback()
        }
    }

    impl Net {
        fn new(idle: Option<Duration>) -> Self {
            let now = Instant::now();
            let mut a =
                Engine::new(now, &cfg(idle), Role::Offerer, vec![A.parse().unwrap()]).unwrap();
            let offer = a.create_offer(now).unwrap();
            let mut b =
                Engine::new(now, &cfg(idle), Role::Answerer, vec![B.parse().unwrap()]).unwrap();
            let answer = b.accept_offer(now, &offer).unwrap();
            a.accept_answer(now, &answer).unwrap();
            Self {
                a,
                b,
                now,
                cut: false,
                cut_a_to_b: false,
                b_sent: 0,
                a_events: Vec::new(),
                b_events: Vec::new(),
                a_media: Vec::new(),
                b_media: Vec::new(),
                drop_a_big_every: None,
                a_big: 0,
            }
        }

        /// Moves datagrams and events until both sides are quiet.
        fn exchange(&mut self) {
            for _ in 0..10_000 {
                let mut moved = false;
                while let Some(o) = self.a.poll_output() {
                    moved = true;
                    match o {
                        EngineOutput::Transmit {
                            source,
                            destination,
                            contents,
                        } if !self.cut => {
                            if let (Some(n), true) = (self.drop_a_big_every, contents.len() > 600) {
                                self.a_big += 1;
                                if self.a_big.is_multiple_of(n) {
                                    continue;
                                }
                            }
                            self.b
                                .handle_receive(self.now, source, destination, &contents)
                        }
                        EngineOutput::Transmit { .. } => {}
                        EngineOutput::Event(e) => self.a_events.push(e),
                        EngineOutput::Media(m) => self.a_media.push(m),
                        _ => {}
                    }
                }
                while let Some(o) = self.b.poll_output() {
                    moved = true;
                    if matches!(o, EngineOutput::Transmit { .. }) {
                        self.b_sent += 1;
                    }
                    match o {
                        EngineOutput::Transmit {
                            source,
                            destination,
                            contents,
                        } if !self.cut => {
                            self.a
                                .handle_receive(self.now, source, destination, &contents)
                        }
                        EngineOutput::Transmit { .. } => {}
                        EngineOutput::Event(e) => self.b_events.push(e),
                        EngineOutput::Media(m) => self.b_media.push(m),
                        _ => {}
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("the engines never went quiet");
        }

        /// Runs in virtual time until `until` or `done`, jumping from timeout to timeout.
        fn run(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
            let end = self.now + limit;
            for _ in 0..100_000 {
                self.exchange();
                if done(self) {
                    return true;
                }
                // Like the real task: an engine is woken by its own timer, nothing else.
                let (ta, tb) = (self.a.poll_timeout(), self.b.poll_timeout());
                self.now = ta.min(tb).max(self.now + Duration::from_millis(1)).min(end);
                if self.now >= end {
                    return done(self);
                }
                if self.now >= ta {
                    self.a.handle_timeout(self.now);
                }
                if self.now >= tb {
                    self.b.handle_timeout(self.now);
                }
            }
            false
        }
    }

    fn has(events: &[PeerEvent], want: &PeerEvent) -> bool {
        events.contains(want)
    }

    #[test]
    fn connects_in_virtual_time_and_carries_messages() {
        let mut net = Net::new(None);
        assert!(net.run(Duration::from_secs(5), |n| {
            has(&n.a_events, &PeerEvent::ChannelOpen) && has(&n.b_events, &PeerEvent::ChannelOpen)
        }));
        assert!(net.a.write(net.now, b"ping").unwrap());
        net.exchange();
        assert!(has(&net.b_events, &PeerEvent::Data(b"ping".to_vec())));
        let d = net.b.diagnostics();
        assert_eq!(d.messages_received, 1);
        assert!(d.setup_time.unwrap() < Duration::from_secs(5));
    }

    /// Regression: str0m's agent starts checking only on a timeout input, and the timeout it
    /// reports after `accept_offer` lay ten years ahead, so the answerer waited for the
    /// connect timeout. Found by the namespace NAT test, where the offerer's checks cannot wake
    /// the answerer up as they do on loopback.
    #[test]
    fn answerer_has_a_timer_running_right_after_the_offer() {
        let mut net = Net::new(None);
        let due_in = net.b.poll_timeout() - net.now;
        assert!(due_in < Duration::from_secs(1), "B would sleep {due_in:?}");
        net.cut_a_to_b = true;
        assert!(
            net.run(Duration::from_secs(3), |n| n.b_sent >= 3),
            "B sent {} datagrams",
            net.b_sent
        );
        net.cut_a_to_b = false;
        assert!(net.run(Duration::from_secs(10), |n| has(
            &n.b_events,
            &PeerEvent::ChannelOpen
        )));
    }

    #[test]
    fn cut_path_is_reported_disconnected_then_lost() {
        let mut net = Net::new(None);
        assert!(net.run(Duration::from_secs(5), |n| has(
            &n.a_events,
            &PeerEvent::ChannelOpen
        )));
        net.cut = true;
        let disconnected = PeerEvent::State(ConnectionState::Disconnected);
        assert!(
            net.run(Duration::from_secs(120), |n| has(
                &n.a_events,
                &disconnected
            )),
            "ICE consent loss never noticed: {:?}",
            net.a_events
        );
        assert!(net.run(Duration::from_secs(60), |n| n.a.is_finished()));
        let failed = net.a.diagnostics().failure.unwrap();
        assert!(
            matches!(failed, FailureReason::ConnectionLost { .. }),
            "{failed:?}"
        );
        assert!(failed.to_string().starts_with("connection lost"));
    }

    #[test]
    fn ice_restart_brings_a_disconnected_connection_back() {
        let mut net = Net::new(None);
        assert!(net.run(Duration::from_secs(5), |n| has(
            &n.b_events,
            &PeerEvent::ChannelOpen
        )));
        net.cut = true;
        let disconnected = PeerEvent::State(ConnectionState::Disconnected);
        assert!(net.run(Duration::from_secs(120), |n| has(
            &n.a_events,
            &disconnected
        )));
        net.cut = false;
        net.a_events.clear();
        let offer = net.a.restart_ice(net.now, None).unwrap();
        let answer = net.b.accept_offer(net.now, &offer).unwrap();
        net.a.accept_answer(net.now, &answer).unwrap();
        let connected = PeerEvent::State(ConnectionState::Connected);
        assert!(
            net.run(Duration::from_secs(30), |n| has(&n.a_events, &connected)),
            "{:?}",
            net.a_events
        );
        assert!(net.a.write(net.now, b"back").unwrap());
        net.exchange();
        assert!(has(&net.b_events, &PeerEvent::Data(b"back".to_vec())));
        assert!(net.a.diagnostics().failure.is_none());
    }

    fn restart_offer(events: &[PeerEvent]) -> Option<String> {
        events.iter().find_map(|e| match e {
            PeerEvent::RestartOffer(sdp) => Some(sdp.clone()),
            _ => None,
        })
    }

    fn candidates(events: &mut Vec<PeerEvent>) -> Vec<String> {
        let mut out = Vec::new();
        events.retain(|e| match e {
            PeerEvent::LocalCandidate(c) => {
                out.push(c.clone());
                false
            }
            _ => true,
        });
        out
    }

    fn data(events: &[PeerEvent]) -> Vec<Vec<u8>> {
        events
            .iter()
            .filter_map(|e| match e {
                PeerEvent::Data(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    /// The path goes silent (both directions cut): after `path_loss_timeout` (5 s) the first
    /// offerer reports `Disconnected` and makes an ICE restart offer by itself, the answerer
    /// waits for it; once the path is back and the offer answered, data flows again on the
    /// same channel (no new handshake: no second `ChannelOpen`), long before str0m's own
    /// consent timeout would have noticed.
    #[test]
    fn a_silent_path_restarts_ice_by_itself_and_comes_back() {
        let mut net = Net::new(None);
        assert!(net.run(Duration::from_secs(5), |n| {
            has(&n.a_events, &PeerEvent::ChannelOpen) && has(&n.b_events, &PeerEvent::ChannelOpen)
        }));
        assert!(net.a.write(net.now, b"before").unwrap());
        net.exchange();
        assert_eq!(data(&net.b_events), [b"before".to_vec()]);
        net.cut = true;
        let cut_at = net.now;
        assert!(
            net.run(Duration::from_secs(30), |n| restart_offer(&n.a_events)
                .is_some()),
            "no restart offer: {:?}",
            net.a_events
        );
        let took = net.now - cut_at;
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(7),
            "{took:?}"
        );
        let disconnected = PeerEvent::State(ConnectionState::Disconnected);
        assert!(has(&net.a_events, &disconnected));
        assert!(has(&net.b_events, &disconnected));
        // The answerer leaves the restart to the first offerer.
        assert!(restart_offer(&net.b_events).is_none(), "{:?}", net.b_events);
        let offer = restart_offer(&net.a_events).unwrap();
        net.cut = false;
        net.a_events.clear();
        net.b_events.clear();
        let answer = net.b.accept_offer(net.now, &offer).unwrap();
        assert_ne!(sdp_ufrag(&answer), sdp_ufrag(&offer));
        net.a.accept_answer(net.now, &answer).unwrap();
        let connected = PeerEvent::State(ConnectionState::Connected);
        assert!(
            net.run(Duration::from_secs(10), |n| has(&n.a_events, &connected)
                && has(&n.b_events, &connected)),
            "a: {:?} b: {:?}",
            net.a_events,
            net.b_events
        );
        // The offerer gathered again after the answer and trickles its candidates.
        let trickled = candidates(&mut net.a_events);
        assert!(!trickled.is_empty(), "{:?}", net.a_events);
        for c in trickled {
            net.b.add_remote_candidate(net.now, &c).unwrap();
        }
        assert!(net.a.write(net.now, b"after a").unwrap());
        assert!(net.b.write(net.now, b"after b").unwrap());
        net.exchange();
        assert_eq!(data(&net.b_events), [b"after a".to_vec()]);
        assert_eq!(data(&net.a_events), [b"after b".to_vec()]);
        assert!(!has(&net.a_events, &PeerEvent::ChannelOpen));
        assert!(net.a.diagnostics().failure.is_none());
        assert_eq!((net.a.restarts, net.b.restarts), (1, 1));
        // Quiet again: no second restart once the path is back.
        assert!(!net.run(Duration::from_secs(30), |n| {
            restart_offer(&n.a_events).is_some() || restart_offer(&n.b_events).is_some()
        }));
    }

    /// An idle but healthy connection is not taken for lost: ICE consent checks alone keep
    /// the path alive, in both directions, for minutes.
    #[test]
    fn an_idle_connection_is_never_taken_for_lost() {
        let mut net = Net::new(None);
        assert!(net.run(Duration::from_secs(5), |n| {
            has(&n.a_events, &PeerEvent::ChannelOpen) && has(&n.b_events, &PeerEvent::ChannelOpen)
        }));
        let disconnected = PeerEvent::State(ConnectionState::Disconnected);
        assert!(!net.run(Duration::from_secs(180), |n| {
            has(&n.a_events, &disconnected)
                || has(&n.b_events, &disconnected)
                || restart_offer(&n.a_events).is_some()
                || restart_offer(&n.b_events).is_some()
        }));
        assert_eq!((net.a.restarts, net.b.restarts), (0, 0));
    }

    /// Both sides start a restart at once (say both saw their address change): the first
    /// offerer's offer wins, the first answerer's yields, and the connection comes back on
    /// the winning offer.
    #[test]
    fn crossing_restart_offers_the_first_offerers_wins() {
        let mut net = Net::new(None);
        assert!(net.run(Duration::from_secs(5), |n| {
            has(&n.a_events, &PeerEvent::ChannelOpen) && has(&n.b_events, &PeerEvent::ChannelOpen)
        }));
        let from_a = net.a.restart_ice(net.now, None).unwrap();
        let from_b = net.b.restart_ice(net.now, None).unwrap();
        let refused = net.a.accept_offer(net.now, &from_b).unwrap_err();
        assert!(refused.to_string().contains("pending"), "{refused}");
        let answer = net.b.accept_offer(net.now, &from_a).unwrap();
        net.a.accept_answer(net.now, &answer).unwrap();
        // B's own offer is gone: an answer to it is refused, not applied.
        assert!(net.b.accept_answer(net.now, &answer).is_err());
        net.a_events.clear();
        net.b_events.clear();
        assert!(net.a.write(net.now, b"still here").unwrap());
        assert!(net.run(Duration::from_secs(10), |n| !data(&n.b_events).is_empty()));
        assert_eq!(data(&net.b_events), [b"still here".to_vec()]);
        assert!(net.a.diagnostics().failure.is_none() && net.b.diagnostics().failure.is_none());
    }

    #[test]
    fn idle_timeout_counts_from_the_last_message() {
        let idle = Duration::from_secs(30);
        let mut net = Net::new(Some(idle));
        assert!(net.run(Duration::from_secs(5), |n| has(
            &n.a_events,
            &PeerEvent::ChannelOpen
        )));
        // Traffic at 20 s keeps it open past 30 s after opening.
        assert!(!net.run(Duration::from_secs(20), |n| n.a.is_finished()));
        assert!(net.a.write(net.now, b"keepalive").unwrap());
        let sent_at = net.now;
        assert!(!net.run(Duration::from_secs(20), |n| n.a.is_finished()));
        assert!(net.run(Duration::from_secs(30), |n| n.a.is_finished()
            && n.b.is_finished()));
        assert!(net.now >= sent_at + idle);
        let closed = PeerEvent::Closed {
            reason: CloseReason::IdleTimeout,
        };
        assert!(has(&net.a_events, &closed) || has(&net.b_events, &closed));
    }

    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        fn junk() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..1500),
                // STUN-shaped: first bits zero and the magic cookie.
                proptest::collection::vec(any::<u8>(), 20..300).prop_map(|mut v| {
                    v[0] &= 0x01;
                    v[4..8].copy_from_slice(&dopus_proto::stun::MAGIC_COOKIE.to_be_bytes());
                    v
                }),
                // DTLS-shaped: content type 20..=63.
                proptest::collection::vec(any::<u8>(), 13..1300).prop_map(|mut v| {
                    v[0] = 20 + v[0] % 44;
                    v
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            /// Garbage from the peer's own address, before and after the connection is up.
            #[test]
            fn random_datagrams_from_the_peer(packets in proptest::collection::vec(junk(), 1..8)) {
                let mut net = Net::new(None);
                let (a, b): (SocketAddr, SocketAddr) = (A.parse().unwrap(), B.parse().unwrap());
                for p in &packets {
                    net.b.handle_receive(net.now, a, b, p);
                }
                let opened = net.run(Duration::from_secs(5), |n| {
                    has(&n.b_events, &PeerEvent::ChannelOpen)
                });
                for p in &packets {
                    net.b.handle_receive(net.now, a, b, p);
                    net.b.handle_timeout(net.now);
                }
                net.exchange();
                // Garbage may not break an established connection either.
                if opened && !net.b.is_finished() {
                    prop_assert!(net.a.write(net.now, b"still fine").is_ok());
                }
            }

            #[test]
            fn random_remote_descriptions_and_candidates(sdp in ".{0,400}", cand in ".{0,200}") {
                let now = Instant::now();
                let mut e = Engine::new(now, &cfg(None), Role::Answerer, vec![B.parse().unwrap()]).unwrap();
                let _ = e.accept_offer(now, &sdp);
                let _ = e.accept_answer(now, &sdp);
                let _ = e.add_remote_candidate(now, &cand);
                let _ = e.add_remote_candidate(now, &format!("candidate:{cand}"));
                e.handle_timeout(now + Duration::from_secs(1));
            }

            #[test]
            fn ice_server_urls(url in ".{0,80}") {
                let _ = crate::config::IceServer::parse(&url);
            }
        }
    }

    #[test]
    fn host_candidates_stay_out_of_the_sdp_when_private() {
        let now = Instant::now();
        let config = RtcConfig {
            share_host_candidates: false,
            ..cfg(None)
        };
        let mut a = Engine::new(now, &config, Role::Offerer, vec![A.parse().unwrap()]).unwrap();
        let offer = a.create_offer(now).unwrap();
        assert!(!offer.contains("a=candidate:"), "{offer}");
        assert!(!offer.contains("127.0.0.1 10000"), "{offer}");
        let mut shared =
            Engine::new(now, &cfg(None), Role::Offerer, vec![A.parse().unwrap()]).unwrap();
        assert!(shared.create_offer(now).unwrap().contains("typ host"));
    }

    #[test]
    fn early_and_foreign_candidates_are_queued_then_applied() {
        let now = Instant::now();
        let mut a = Engine::new(now, &cfg(None), Role::Offerer, vec![A.parse().unwrap()]).unwrap();
        let offer = a.create_offer(now).unwrap();
        let mut b = Engine::new(now, &cfg(None), Role::Answerer, vec![B.parse().unwrap()]).unwrap();
        let answer = b.accept_offer(now, &offer).unwrap();
        let ufrag = answer
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .unwrap()
            .trim()
            .to_owned();
        let line = format!("candidate:1 1 udp 2130706431 127.0.0.1 30000 typ host ufrag {ufrag}");
        a.add_remote_candidate(now, &line).unwrap();
        assert_eq!(
            a.diagnostics().remote_candidates.len(),
            0,
            "queued, not applied"
        );
        for _ in 0..100 {
            a.add_remote_candidate(now, &line).unwrap(); // bounded queue, no error
        }
        a.accept_answer(now, &answer).unwrap();
        let remote = a.diagnostics().remote_candidates;
        assert!(
            remote.len() >= 2,
            "SDP candidate and the queued one: {remote:?}"
        );
    }

    fn frames(media: &[MediaEvent]) -> Vec<(u64, Vec<u8>)> {
        media
            .iter()
            .filter_map(|m| match m {
                MediaEvent::Frame(f) => Some((f.rtp_time, f.data.clone())),
                _ => None,
            })
            .collect()
    }

    fn video_frames(media: &[MediaEvent]) -> Vec<(u64, Vec<u8>)> {
        media
            .iter()
            .filter_map(|m| match m {
                MediaEvent::Video(f) => Some((f.rtp_time, f.data.clone())),
                _ => None,
            })
            .collect()
    }

    /// A VP8-shaped frame: the frame tag's bit 0 says "not a keyframe"; 1 to 5 RTP packets.
    fn vp8(index: u32, key: bool) -> Vec<u8> {
        let mut f = vec![if key { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&index.to_be_bytes());
        let len = if key {
            5000
        } else {
            700 + (index as usize * 37) % 1500
        };
        f.extend((0..len).map(|j| (j as u32 ^ index) as u8));
        f
    }

    #[test]
    fn video_rides_the_call_renegotiation_and_keyframe_requests_cross_throttled() {
        let mut net = Net::new(None);
        assert!(net.run(Duration::from_secs(10), |n| {
            has(&n.a_events, &PeerEvent::ChannelOpen) && has(&n.b_events, &PeerEvent::ChannelOpen)
        }));
        let early = net.a.write_video(net.now, 0, vp8(0, true));
        assert!(
            matches!(&early, Err(PeerError::Media(why)) if why.contains("no video m-line")),
            "{early:?}"
        );
        let offer = net.a.add_audio(net.now).unwrap();
        assert!(offer.contains("m=video"), "{offer}");
        assert!(offer.contains("VP8/90000"), "{offer}");
        let answer = net.b.accept_offer(net.now, &offer).unwrap();
        net.a.accept_answer(net.now, &answer).unwrap();
        net.exchange();
        assert!(net.a.video_mid().is_some());
        assert_eq!(net.a.video_mid(), net.b.video_mid());
        assert_ne!(net.a.video_mid(), net.a.audio_mid());

        // 30 frames at 30 fps each way, in virtual time, a keyframe first.
        let mut sent = Vec::new();
        for i in 0..30u32 {
            let data = vp8(i, i == 0);
            let rtp = 90_000 + u64::from(i) * 3000;
            net.a.write_video(net.now, rtp, data.clone()).unwrap();
            net.b.write_video(net.now, rtp, data.clone()).unwrap();
            sent.push(data);
            net.run(Duration::from_millis(33), |_| false);
        }
        net.run(Duration::from_millis(300), |_| false);
        for got in [video_frames(&net.b_media), video_frames(&net.a_media)] {
            assert_eq!(got.len(), 30, "got {}", got.len());
            for (i, (t, d)) in got.iter().enumerate() {
                assert_eq!(d, &sent[i], "frame {i} bit-exact");
                assert_eq!(t - got[0].0, i as u64 * 3000);
            }
        }
        // No audio frame was made of the video.
        assert!(frames(&net.b_media).is_empty());
        assert_eq!(net.a.media_stats().video_frames_sent, 30);

        // b asks a for a keyframe: it crosses once; a second request within the interval is
        // throttled at b, and after the interval one crosses again.
        let kf = |m: &[MediaEvent]| {
            m.iter()
                .filter(|e| matches!(e, MediaEvent::KeyframeRequest))
                .count()
        };
        assert_eq!(kf(&net.a_media), 0);
        assert!(net.b.request_keyframe(net.now).unwrap());
        assert!(!net.b.request_keyframe(net.now).unwrap());
        net.run(Duration::from_millis(100), |_| false);
        assert_eq!(kf(&net.a_media), 1);
        assert_eq!(net.b.media_stats().keyframe_requests_sent, 1);
        assert_eq!(net.b.media_stats().keyframe_requests_throttled, 1);
        net.run(crate::media::KEYFRAME_REQUEST_INTERVAL, |_| false);
        assert!(net.b.request_keyframe(net.now).unwrap());
        net.run(Duration::from_millis(100), |_| false);
        assert_eq!(kf(&net.a_media), 2);

        // A hostile peer floods PLIs (past its own throttle, straight through str0m): a's media
        // task sees one, the rest are counted.
        net.run(Duration::from_millis(600), |_| false);
        let mid = net.b.video_mid.unwrap();
        for _ in 0..10 {
            net.b
                .rtc
                .writer(mid)
                .unwrap()
                .request_keyframe(None, KeyframeRequestKind::Pli)
                .unwrap();
            net.b.kick(net.now);
            net.b.drain(net.now);
            net.run(Duration::from_millis(30), |_| false);
        }
        assert_eq!(kf(&net.a_media), 3);
        assert!(
            net.a.media_stats().keyframe_requests_throttled >= 5,
            "{:?}",
            net.a.media_stats()
        );
    }

    /// Sends `secs` of 30 fps video from A at about 1.9 Mbit/s (8 KB frames).
    fn send_video(net: &mut Net, from: u32, secs: u32) {
        for i in from..from + secs * 30 {
            let mut f = vp8(i, i == 0);
            f.resize(8_000, (i % 251) as u8);
            net.a
                .write_video(net.now, 90_000 + u64::from(i) * 3000, f)
                .unwrap();
            net.run(Duration::from_millis(33), |_| false);
        }
    }

    #[test]
    fn the_video_rate_follows_the_loss_the_peer_reports() {
        let mut net = Net::new(None);
        assert!(net.run(Duration::from_secs(10), |n| {
            has(&n.a_events, &PeerEvent::ChannelOpen) && has(&n.b_events, &PeerEvent::ChannelOpen)
        }));
        let offer = net.a.add_audio(net.now).unwrap();
        let answer = net.b.accept_offer(net.now, &offer).unwrap();
        net.a.accept_answer(net.now, &answer).unwrap();
        net.exchange();
        // A clean path, used: the rate grows from its start to the ceiling.
        send_video(&mut net, 0, 8);
        let clean = net.a.media_stats().clone();
        assert!(clean.video_send_bps > 1_000_000, "{clean:?}");
        assert!(
            clean.video_rate_bps.unwrap() > crate::media::VIDEO_RATE_START_BPS,
            "{clean:?}"
        );
        // One video packet in three lost: the peer's reports bring the rate down.
        net.drop_a_big_every = Some(3);
        send_video(&mut net, 240, 8);
        let lossy = net.a.media_stats().clone();
        assert!(lossy.video_loss_permille.unwrap() > 100, "{lossy:?}");
        assert!(
            lossy.video_rate_bps.unwrap() < crate::media::VIDEO_RATE_START_BPS
                && lossy.video_rate_bps.unwrap() < clean.video_rate_bps.unwrap() * 2 / 3,
            "{clean:?} -> {lossy:?}"
        );
    }

    #[test]
    fn audio_added_by_renegotiation_carries_opus_frames_both_ways() {
        let mut net = Net::new(None);
        assert!(net.run(Duration::from_secs(10), |n| {
            has(&n.a_events, &PeerEvent::ChannelOpen) && has(&n.b_events, &PeerEvent::ChannelOpen)
        }));
        // Before negotiation a write is refused with the reason.
        let early = net.a.write_audio(net.now, 0, vec![0xfc, 1, 2]);
        assert!(
            matches!(&early, Err(PeerError::Media(why)) if why.contains("no audio m-line")),
            "{early:?}"
        );
        assert_eq!(net.a.media_stats().refused_out, 1);

        let offer = net.a.add_audio(net.now).unwrap();
        assert!(offer.contains("m=audio"), "{offer}");
        assert!(offer.contains("opus/48000"), "{offer}");
        // A second offer while the first is pending is refused.
        assert!(net.a.add_audio(net.now).is_err());
        let answer = net.b.accept_offer(net.now, &offer).unwrap();
        net.a.accept_answer(net.now, &answer).unwrap();
        net.exchange();
        assert!(matches!(
            net.a_media.first(),
            Some(MediaEvent::Ready { .. })
        ));
        assert!(matches!(
            net.b_media.first(),
            Some(MediaEvent::Ready { .. })
        ));
        assert_eq!(net.a.audio_mid(), net.b.audio_mid());
        // The data channel still works after the renegotiation.
        assert!(net.a.write(net.now, b"after").unwrap());

        // 50 frames of 20 ms each way, in virtual time.
        let mut sent = Vec::new();
        for i in 0..50u64 {
            let data = vec![0xfc, i as u8, (i * 7) as u8, 0x55];
            net.a
                .write_audio(net.now, 1000 + i * 960, data.clone())
                .unwrap();
            net.b
                .write_audio(net.now, 5000 + i * 960, data.clone())
                .unwrap();
            sent.push(data);
            net.run(Duration::from_millis(20), |_| false);
        }
        net.run(Duration::from_millis(200), |_| false);
        let got_b = frames(&net.b_media);
        let got_a = frames(&net.a_media);
        assert_eq!(got_b.len(), 50, "b got {}", got_b.len());
        assert_eq!(got_a.len(), 50, "a got {}", got_a.len());
        for (i, ((tb, db), (ta, da))) in got_b.iter().zip(&got_a).enumerate() {
            assert_eq!(db, &sent[i]);
            assert_eq!(da, &sent[i]);
            assert_eq!(tb - got_b[0].0, i as u64 * 960);
            assert_eq!(ta - got_a[0].0, i as u64 * 960);
        }
        assert!(has(&net.b_events, &PeerEvent::Data(b"after".to_vec())));
        assert_eq!(net.a.media_stats().frames_sent, 50);
        // Audio is negotiated once per connection.
        assert!(net.b.add_audio(net.now).is_err());
    }
}
