//! Direct connections to contacts: when to make one, and the signaling that sets it up.
//!
//! Protocol flow (docs/peer-protocol.md, "Direct connections"):
//! - made on demand, when the outbox sends a window through the server to a contact the server
//!   shows online; never while we are invisible (a direct connection would show we are here);
//! - the offer, the answer and every trickled ICE candidate travel as `rtc` contents inside Olm
//!   envelopes through the server only, never stored, so the server can neither read nor swap
//!   the SDP and its DTLS fingerprint;
//! - `conn` names one attempt; signals for another attempt are ignored;
//! - glare (both sides offer at once): the offer from the smaller user ID wins, the other side
//!   drops its own attempt and answers;
//! - the runtime owns the connection itself and reports what happens to it
//!   ([`super::ConnectionEvent`]); each side says hello on the channel when it opens, and the
//!   hello says whether it reads bulk payloads.

use super::{ConnectionEvent, ConnectionRequest, Event, MachineError, NodeMachine, Output};
use crate::chat::Outgoing;
use crate::store::{EnvelopeId, Store};
use dopus_proto::peer::{Content, Conversation, RtcContent, RtcSignal};
use dopus_proto::signaling::Status;
use dopus_types::{Timestamp, UserId};

/// A connection attempt younger than this is left to finish rather than started again.
pub const CONNECT_GRACE_MS: u64 = 15_000;
/// Our offer adding audio, unanswered this long, is given up: the offer or its answer was lost
/// (signals are not kept by the mailbox). The connection is replaced by a new one, which
/// negotiates from scratch: offering again on the old one could meet a peer that applied the
/// lost offer and would then hold another audio m-line than ours.
pub const MEDIA_OFFER_TIMEOUT_MS: u64 = 8_000;
/// A negotiation that failed on an open connection (a crossing offer, such as an ICE restart,
/// was in the way) is started afresh on a new connection this much later.
pub const MEDIA_RETRY_MS: u64 = 2_000;

/// One contact's direct connection, as far as the machine knows.
#[derive(Debug, Clone)]
pub(super) struct Link {
    /// Which attempt.
    pub conn: String,
    /// We made the offer.
    pub offerer: bool,
    /// When the attempt started.
    pub started: Timestamp,
    /// Where it stands.
    pub state: LinkState,
    /// The peer said hello: it reads frames.
    pub hello: bool,
    /// Its hello said it reads bulk payloads.
    pub bulk: bool,
    /// Why the last attempt ended.
    pub last_error: Option<String>,
    /// The audio m-line of calls on this connection.
    pub audio: AudioState,
    /// The peer's offer adding audio that arrived before this side saw the connection open
    /// (the peer's side opened first); it is taken up when ours opens.
    pub early_media_offer: Option<String>,
}

/// Whether a connection carries the audio m-line calls use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AudioState {
    /// Not negotiated.
    None,
    /// Our offer is out (or being made), since then.
    Offering(Timestamp),
    /// Negotiated (we answered, or our offer was answered).
    Ready,
    /// Negotiation failed on this connection at that time; after [`MEDIA_RETRY_MS`] the
    /// offerer replaces the connection.
    Failed(Timestamp),
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkState {
    /// Being set up.
    Connecting,
    /// The data channel is open.
    Open,
    /// Ended.
    Closed,
}

impl Link {
    pub(super) fn new(conn: String, offerer: bool, now: Timestamp) -> Self {
        Self {
            conn,
            offerer,
            started: now,
            state: LinkState::Connecting,
            hello: false,
            bulk: false,
            last_error: None,
            audio: AudioState::None,
            early_media_offer: None,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.state == LinkState::Open
    }

    /// When our offer adding audio is due on this connection, if it is open and without
    /// audio: at once, or (for a new connection) when the last offer or failure times out.
    pub(super) fn audio_offer_due(&self) -> Option<Timestamp> {
        if !self.is_open() {
            return None;
        }
        match self.audio {
            AudioState::None => Some(Timestamp(0)),
            AudioState::Offering(since) => Some(since.plus_millis(MEDIA_OFFER_TIMEOUT_MS)),
            AudioState::Failed(at) => Some(at.plus_millis(MEDIA_RETRY_MS)),
            AudioState::Ready => None,
        }
    }

    fn live(&self, now: Timestamp) -> bool {
        match self.state {
            LinkState::Open => true,
            LinkState::Connecting => now.millis_since(self.started) < CONNECT_GRACE_MS,
            LinkState::Closed => false,
        }
    }
}

impl NodeMachine {
    /// Starts a connection to `peer` as the offerer, unless one is open or under way, the peer
    /// is away, or we are invisible.
    pub(super) fn maybe_connect(&mut self, now: Timestamp, peer: UserId) {
        if self.status == Status::Invisible {
            return;
        }
        let online = self
            .presence
            .get(&peer)
            .is_some_and(|s| s.as_seen_by_others() != Status::Offline)
            // A voice peer's fresh presence shows it online (it need not be a contact).
            || self.voice_peer(&peer);
        if !online || self.links.get(&peer).is_some_and(|l| l.live(now)) {
            return;
        }
        let conn = self.new_token(12);
        self.links.insert(peer, Link::new(conn.clone(), true, now));
        self.outputs
            .push_back(Output::Connection(ConnectionRequest::Offer { peer, conn }));
    }

    /// Makes the connection to `peer` carry audio with us as the offerer: connects when no
    /// connection is open or under way, offers the audio m-line when it is open, and replaces
    /// a connection whose offer went unanswered or failed (see [`MEDIA_OFFER_TIMEOUT_MS`]).
    pub(super) fn offer_audio(&mut self, now: Timestamp, peer: UserId) {
        match self.links.get_mut(&peer) {
            Some(l) if l.audio_offer_due().is_some_and(|t| t <= now) => {
                if l.audio == AudioState::None {
                    l.audio = AudioState::Offering(now);
                    let conn = l.conn.clone();
                    self.outputs
                        .push_back(Output::Connection(ConnectionRequest::AddAudio {
                            peer,
                            conn,
                        }));
                    return;
                }
                tracing::info!(peer = %peer.short(), state = ?l.audio, "audio negotiation stalled; connecting afresh");
                if let Some(old) = self.links.remove(&peer) {
                    self.outputs
                        .push_back(Output::Connection(ConnectionRequest::Close {
                            peer,
                            conn: Some(old.conn),
                        }));
                }
                self.emit(Event::Connection(peer));
                self.maybe_connect(now, peer);
            }
            Some(l) if l.is_open() => {}
            _ => self.maybe_connect(now, peer),
        }
    }

    /// When [`NodeMachine::offer_audio`] has work for `peer`.
    pub(super) fn audio_poll_timeout(&self, peer: &UserId) -> Option<Timestamp> {
        self.links.get(peer).and_then(Link::audio_offer_due)
    }

    /// Closes every direct connection (going invisible, or shutting down).
    pub(super) fn close_links(&mut self) {
        let links = std::mem::take(&mut self.links);
        for (peer, link) in links {
            self.outputs
                .push_back(Output::Connection(ConnectionRequest::Close {
                    peer,
                    conn: Some(link.conn),
                }));
            self.emit(Event::Connection(peer));
        }
    }

    /// Queues a WebRTC signal for `peer` (sealed at prepare, through the server only).
    fn signal(&mut self, now: Timestamp, peer: UserId, conn: String, signal: RtcSignal) {
        let out = Outgoing {
            peer,
            id: EnvelopeId(self.new_id(now).0),
            conversation: Conversation::Direct,
            sent_at: now,
            content: Content::Rtc(RtcContent::Rtc { conn, signal }),
            reliable: false,
        };
        self.signals
            .push((out, now.plus_millis(super::send::EPHEMERAL_WAIT_MS)));
    }

    /// What the runtime reports about a connection.
    pub(super) fn on_connection(
        &mut self,
        now: Timestamp,
        peer: UserId,
        conn: String,
        event: ConnectionEvent,
        _store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let Some(link) = self.links.get_mut(&peer) else {
            // A connection the machine no longer wants (closed meanwhile): close it.
            if !matches!(event, ConnectionEvent::Closed { .. }) {
                self.outputs
                    .push_back(Output::Connection(ConnectionRequest::Close {
                        peer,
                        conn: Some(conn),
                    }));
            }
            return Ok(());
        };
        if link.conn != conn {
            if !matches!(event, ConnectionEvent::Closed { .. }) {
                self.outputs
                    .push_back(Output::Connection(ConnectionRequest::Close {
                        peer,
                        conn: Some(conn),
                    }));
            }
            return Ok(());
        }
        match event {
            ConnectionEvent::Offered { sdp } => {
                self.signal(now, peer, conn, RtcSignal::Offer { sdp })
            }
            ConnectionEvent::Answered { sdp } => {
                self.signal(now, peer, conn, RtcSignal::Answer { sdp });
            }
            ConnectionEvent::LocalCandidate { candidate } => self.signal(
                now,
                peer,
                conn,
                RtcSignal::Candidate {
                    candidate,
                    sdp_mid: None,
                    sdp_m_line_index: None,
                },
            ),
            ConnectionEvent::Progress => {}
            ConnectionEvent::Open => {
                link.state = LinkState::Open;
                link.last_error = None;
                let early = link.early_media_offer.take();
                self.outbox_wake = true;
                self.stalled.remove(&peer);
                self.emit(Event::Connection(peer));
                if let Some(sdp) = early {
                    let rtc = RtcContent::Rtc {
                        conn,
                        signal: RtcSignal::MediaOffer { sdp },
                    };
                    return self.on_signal(now, peer, rtc, _store);
                }
            }
            ConnectionEvent::Hello { bulk } => {
                link.hello = true;
                link.bulk = bulk;
                self.outbox_wake = true;
            }
            ConnectionEvent::MediaOffered { sdp } => {
                self.signal(now, peer, conn, RtcSignal::MediaOffer { sdp });
            }
            ConnectionEvent::MediaAnswered { sdp } => {
                link.audio = AudioState::Ready;
                self.signal(now, peer, conn, RtcSignal::MediaAnswer { sdp });
            }
            ConnectionEvent::MediaFailed { reason } => {
                link.audio = AudioState::Failed(now);
                self.call_refused(
                    &peer,
                    format!("adding audio to the connection failed: {reason}"),
                );
            }
            ConnectionEvent::RestartOffered { sdp } => {
                self.signal(now, peer, conn, RtcSignal::RestartOffer { sdp });
            }
            ConnectionEvent::RestartAnswered { sdp } => {
                self.signal(now, peer, conn, RtcSignal::RestartAnswer { sdp });
            }
            ConnectionEvent::Closed { reason } => {
                link.state = LinkState::Closed;
                link.last_error = reason;
                self.emit(Event::Connection(peer));
            }
        }
        Ok(())
    }

    /// A WebRTC signal from `peer` (an accepted contact).
    pub(super) fn on_signal(
        &mut self,
        now: Timestamp,
        peer: UserId,
        rtc: RtcContent,
        _store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let RtcContent::Rtc { conn, signal } = rtc;
        match signal {
            RtcSignal::Offer { sdp } => {
                if self.status == Status::Invisible {
                    // Answering would show we are here.
                    return Ok(());
                }
                if let Some(l) = self.links.get(&peer) {
                    // Glare: both offered; the smaller user ID's offer wins.
                    if l.live(now) && l.offerer && !l.is_open() && self.me < peer {
                        return Ok(());
                    }
                }
                if let Some(old) = self.links.remove(&peer) {
                    self.outputs
                        .push_back(Output::Connection(ConnectionRequest::Close {
                            peer,
                            conn: Some(old.conn),
                        }));
                }
                self.links.insert(peer, Link::new(conn.clone(), false, now));
                self.outputs
                    .push_back(Output::Connection(ConnectionRequest::Answer {
                        peer,
                        conn,
                        sdp,
                    }));
            }
            RtcSignal::Answer { sdp } => {
                if self
                    .links
                    .get(&peer)
                    .is_some_and(|l| l.conn == conn && l.offerer)
                {
                    self.outputs
                        .push_back(Output::Connection(ConnectionRequest::AcceptAnswer {
                            peer,
                            conn,
                            sdp,
                        }));
                }
            }
            RtcSignal::Candidate { candidate, .. } => {
                if self.links.get(&peer).is_some_and(|l| l.conn == conn) {
                    self.outputs
                        .push_back(Output::Connection(ConnectionRequest::AddCandidate {
                            peer,
                            conn,
                            candidate,
                        }));
                }
            }
            RtcSignal::EndOfCandidates => {}
            RtcSignal::MediaOffer { sdp } => {
                let Some(link) = self.links.get_mut(&peer).filter(|l| l.conn == conn) else {
                    self.call_refused(&peer, "a media offer for another connection".into());
                    return Ok(());
                };
                if !link.is_open() {
                    if link.state == LinkState::Connecting {
                        // The peer's side opened first: taken up when ours opens.
                        link.early_media_offer = Some(sdp);
                    } else {
                        self.call_refused(&peer, "a media offer on a closed connection".into());
                    }
                    return Ok(());
                }
                if !self.in_call_with(&peer) && !self.voice_peer(&peer) {
                    self.call_refused(
                        &peer,
                        "a media offer from a peer not in a call or voice channel with us".into(),
                    );
                    return Ok(());
                }
                self.outputs
                    .push_back(Output::Connection(ConnectionRequest::AcceptMediaOffer {
                        peer,
                        conn,
                        sdp,
                    }));
            }
            RtcSignal::RestartOffer { sdp } => {
                // Only for the connection that is open now; a stale attempt's restart is
                // dropped (its connection is gone or going).
                if self
                    .links
                    .get(&peer)
                    .is_some_and(|l| l.conn == conn && l.is_open())
                {
                    self.outputs.push_back(Output::Connection(
                        ConnectionRequest::AcceptRestartOffer { peer, conn, sdp },
                    ));
                }
            }
            RtcSignal::RestartAnswer { sdp } => {
                if self
                    .links
                    .get(&peer)
                    .is_some_and(|l| l.conn == conn && l.is_open())
                {
                    self.outputs.push_back(Output::Connection(
                        ConnectionRequest::AcceptRestartAnswer { peer, conn, sdp },
                    ));
                }
            }
            RtcSignal::MediaAnswer { sdp } => {
                if let Some(link) = self
                    .links
                    .get_mut(&peer)
                    .filter(|l| l.conn == conn && matches!(l.audio, AudioState::Offering(_)))
                {
                    link.audio = AudioState::Ready;
                    self.outputs.push_back(Output::Connection(
                        ConnectionRequest::AcceptMediaAnswer { peer, conn, sdp },
                    ));
                } else {
                    self.call_refused(&peer, "a media answer to no media offer of ours".into());
                }
            }
        }
        Ok(())
    }
}
