//! The tokio side: one task per peer connection, owning the engine, its UDP sockets and timers.
//!
//! Task topology:
//!
//! ```text
//!  PeerHandle (clone) --commands (bounded)--->+-----------------------------+---> UDP sockets
//!  PeerHandle::send  --messages (bounded)--->| peer task                    |<--- (one per local
//!                                            |  select! over commands,      |      address)
//!  PeerEvents <------events (bounded)--------|  messages (only while the    |
//!                                            |  SCTP buffer has room),      |
//!                                            |  sockets, timer, event room  |
//!                                            |  Engine (sans-IO, str0m Rtc) |
//!                                            +-----------------------------+
//! ```
//!
//! Backpressure both ways: `send` resolves only when str0m accepted the message into its SCTP
//! send buffer; when the application does not read events, the task stops reading its sockets
//! (the peer's SCTP then slows down) instead of buffering without bound. Commands are always
//! served, so a caller waiting in `send` cannot deadlock the event stream.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::config::RtcConfig;
use crate::diagnostics::{CloseReason, Diagnostics};
use crate::engine::{Engine, EngineOutput, Role};
use crate::error::PeerError;
pub use crate::event::PeerEvent;
use crate::interfaces;
use crate::media::{AudioSender, MediaEvent, MediaStats, OutFrame, OutKind};

/// The events of one connection, in order. Ends after [`PeerEvent::Closed`].
pub type PeerEvents = mpsc::Receiver<PeerEvent>;

/// Constructors for peer connections; see the crate documentation for the flow.
#[derive(Debug)]
pub struct PeerConnection;

impl PeerConnection {
    /// Starts a connection as the offerer. Returns the handle, the event stream and the SDP
    /// offer to send to the peer (encrypted).
    pub async fn offer(config: RtcConfig) -> Result<(PeerHandle, PeerEvents, String), PeerError> {
        config.validate()?;
        let config = with_identity(config).await?;
        let sockets = bind_sockets(&config)?;
        let now = Instant::now();
        let bases = sockets.iter().map(|(a, _)| *a).collect();
        let mut engine = Engine::new(now, &config, Role::Offerer, bases)?;
        let offer = engine.create_offer(now)?;
        let (handle, events) = spawn(engine, sockets, config);
        Ok((handle, events, offer))
    }

    /// Starts a connection as the answerer of `offer`. Returns the handle, the event stream and
    /// the SDP answer to send back (encrypted).
    pub async fn answer(
        config: RtcConfig,
        offer: &str,
    ) -> Result<(PeerHandle, PeerEvents, String), PeerError> {
        config.validate()?;
        let config = with_identity(config).await?;
        let sockets = bind_sockets(&config)?;
        let now = Instant::now();
        let bases = sockets.iter().map(|(a, _)| *a).collect();
        let mut engine = Engine::new(now, &config, Role::Answerer, bases)?;
        let answer = engine.accept_offer(now, offer)?;
        let (handle, events) = spawn(engine, sockets, config);
        Ok((handle, events, answer))
    }
}

/// Controls one connection. Cheap to clone; when every clone is dropped the connection closes.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    commands: mpsc::Sender<Command>,
    media_out: mpsc::Sender<crate::media::OutFrame>,
    messages: mpsc::Sender<Outgoing>,
    blob_messages: mpsc::Sender<Outgoing>,
    max_message_size: usize,
}

type Reply<T> = oneshot::Sender<Result<T, PeerError>>;

#[derive(Debug)]
enum Command {
    AcceptAnswer(String, Reply<()>),
    AcceptOffer(String, Reply<String>),
    AddCandidate(String, Reply<()>),
    RestartIce { rebind: bool, reply: Reply<String> },
    Diagnostics(oneshot::Sender<Diagnostics>),
    Connectivity(oneshot::Sender<crate::diagnostics::Connectivity>),
    UpdateIceServers(Vec<crate::config::IceServer>, oneshot::Sender<()>),
    AddAudio(Reply<String>),
    AttachMedia(mpsc::Sender<MediaEvent>, oneshot::Sender<u64>),
    DetachMedia(oneshot::Sender<()>),
    MediaStats(oneshot::Sender<MediaStats>),
    Close(oneshot::Sender<()>),
}

/// Messages to send in order, as one batch: str0m takes as many as fit, then drains once.
#[derive(Debug)]
struct Outgoing {
    data: Vec<Vec<u8>>,
    /// How many of `data` str0m has taken (their bytes are released).
    written: usize,
    reply: oneshot::Sender<(usize, Result<(), PeerError>)>,
}

impl Outgoing {
    fn finish(self, result: Result<(), PeerError>) {
        let _ = self.reply.send((self.written, result));
    }
}

impl PeerHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, PeerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| PeerError::Closed)?;
        rx.await.map_err(|_| PeerError::Closed)?
    }

    /// Applies the peer's answer to our offer (initial or ICE restart).
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), PeerError> {
        let sdp = sdp.to_owned();
        self.call(|r| Command::AcceptAnswer(sdp, r)).await
    }

    /// Applies an offer the peer made on this connection (its ICE restart) and returns our
    /// answer.
    pub async fn accept_offer(&self, sdp: &str) -> Result<String, PeerError> {
        let sdp = sdp.to_owned();
        self.call(|r| Command::AcceptOffer(sdp, r)).await
    }

    /// Adds a candidate the peer trickled (`candidate:…`, with or without `a=`). May be called
    /// before the answer arrives: it is queued until then.
    pub async fn add_remote_candidate(&self, candidate: &str) -> Result<(), PeerError> {
        let c = candidate.to_owned();
        self.call(|r| Command::AddCandidate(c, r)).await
    }

    /// The largest message [`PeerHandle::send`] accepts.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Sends one message (1 byte up to `max_message_size`) on the reliable, ordered channel.
    /// Waits until the channel is open and the SCTP send buffer has room, then returns once
    /// str0m accepted the message (not when the peer received it).
    pub async fn send(&self, message: Vec<u8>) -> Result<(), PeerError> {
        let (_, result) = self.send_all(vec![message]).await;
        result
    }

    /// Sends several messages in order, as [`PeerHandle::send`] does one, but handed to the
    /// connection together: str0m takes them in one go and packs them into as few datagrams as
    /// it can. Answers how many str0m accepted (a prefix of `messages`; all of them unless the
    /// result is an error) and the result. Nothing is sent if any message is empty or too
    /// large.
    pub async fn send_all(&self, messages: Vec<Vec<u8>>) -> (usize, Result<(), PeerError>) {
        for m in &messages {
            if m.is_empty() {
                return (0, Err(PeerError::EmptyMessage));
            }
            if m.len() > self.max_message_size {
                return (
                    0,
                    Err(PeerError::MessageTooLarge {
                        len: m.len(),
                        max: self.max_message_size,
                    }),
                );
            }
        }
        if messages.is_empty() {
            return (0, Ok(()));
        }
        let (tx, rx) = oneshot::channel();
        let queued = self.messages.send(Outgoing {
            data: messages,
            written: 0,
            reply: tx,
        });
        if queued.await.is_err() {
            return (0, Err(PeerError::Closed));
        }
        rx.await.unwrap_or((0, Err(PeerError::Closed)))
    }

    /// Sends messages on the blob channel, in order, as [`PeerHandle::send_all`] does on the
    /// message channel. The blob channel keeps to its share of the send buffer (three
    /// quarters), so messages always find room beside a transfer.
    pub async fn send_blob_all(&self, messages: Vec<Vec<u8>>) -> (usize, Result<(), PeerError>) {
        for m in &messages {
            if m.is_empty() {
                return (0, Err(PeerError::EmptyMessage));
            }
            if m.len() > self.max_message_size {
                return (
                    0,
                    Err(PeerError::MessageTooLarge {
                        len: m.len(),
                        max: self.max_message_size,
                    }),
                );
            }
        }
        if messages.is_empty() {
            return (0, Ok(()));
        }
        let (tx, rx) = oneshot::channel();
        let queued = self.blob_messages.send(Outgoing {
            data: messages,
            written: 0,
            reply: tx,
        });
        if queued.await.is_err() {
            return (0, Err(PeerError::Closed));
        }
        rx.await.unwrap_or((0, Err(PeerError::Closed)))
    }

    /// Starts an ICE restart on the same sockets and returns the offer for the peer, who
    /// answers with [`PeerHandle::accept_offer`]; apply that answer with `accept_answer`.
    pub async fn restart_ice(&self) -> Result<String, PeerError> {
        self.call(|reply| Command::RestartIce {
            rebind: false,
            reply,
        })
        .await
    }

    /// Like [`PeerHandle::restart_ice`], after closing the current sockets and binding new ones
    /// (the network changed). New candidates are announced once the answer is applied.
    pub async fn restart_ice_rebind(&self) -> Result<String, PeerError> {
        self.call(|reply| Command::RestartIce {
            rebind: true,
            reply,
        })
        .await
    }

    /// A snapshot of the connection.
    pub async fn diagnostics(&self) -> Result<Diagnostics, PeerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Diagnostics(tx))
            .await
            .map_err(|_| PeerError::Closed)?;
        rx.await.map_err(|_| PeerError::Closed)
    }

    /// Which path the connection uses (direct host, direct through NAT, relayed) and why, with
    /// its TURN allocation attempts: what the connection panel shows.
    pub async fn connectivity(&self) -> Result<crate::diagnostics::Connectivity, PeerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Connectivity(tx))
            .await
            .map_err(|_| PeerError::Closed)?;
        rx.await.map_err(|_| PeerError::Closed)
    }

    /// Replaces the connection's STUN/TURN servers, typically with the fresh TURN credentials of
    /// a new signaling login (they expire after their TTL). A working allocation is kept until
    /// it is lost; the next allocation (after a 5-tuple change, expiry or refusal) uses these.
    /// With no working allocation, allocating starts again at once.
    pub async fn update_ice_servers(
        &self,
        servers: Vec<crate::config::IceServer>,
    ) -> Result<(), PeerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::UpdateIceServers(servers, tx))
            .await
            .map_err(|_| PeerError::Closed)?;
        rx.await.map_err(|_| PeerError::Closed)
    }

    /// Adds an Opus audio m-line (send and receive) by renegotiation and returns the offer for
    /// the peer, who answers with [`PeerHandle::accept_offer`]; apply its answer with
    /// [`PeerHandle::accept_answer`]. Both sides then get [`MediaEvent::Ready`] on their
    /// attached sink. Refused while another offer of ours is pending, or when the connection
    /// already has its audio m-line (a later call reuses it).
    pub async fn add_audio(&self) -> Result<String, PeerError> {
        self.call(Command::AddAudio).await
    }

    /// Attaches a call's media task: received frames of the negotiated audio m-line go to
    /// `sink` (a full sink loses frames rather than stall the connection), and the returned
    /// sender writes frames. Replaces any previous attachment, whose sender stops working.
    /// Frames that arrive while nothing is attached are refused and counted.
    pub async fn attach_media(
        &self,
        sink: mpsc::Sender<MediaEvent>,
    ) -> Result<AudioSender, PeerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::AttachMedia(sink, tx))
            .await
            .map_err(|_| PeerError::Closed)?;
        let generation = rx.await.map_err(|_| PeerError::Closed)?;
        Ok(AudioSender {
            generation,
            tx: self.media_out.clone(),
        })
    }

    /// Detaches the call's media task: from now on, media from the peer is refused (it is not
    /// in a call with us) and the old sender's frames too.
    pub async fn detach_media(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::DetachMedia(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The media counters of this connection (with the last refusal and why).
    pub async fn media_stats(&self) -> Result<MediaStats, PeerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::MediaStats(tx))
            .await
            .map_err(|_| PeerError::Closed)?;
        rx.await.map_err(|_| PeerError::Closed)
    }

    /// Closes the connection gracefully (the peer sees [`CloseReason::Remote`]). Returns when
    /// the close went out; closing a closed connection is a no-op.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Certificate generation is tens of milliseconds of CPU: never on the async executor. The
/// node should generate one [`crate::DtlsIdentity`] at start-up; this is the fallback.
async fn with_identity(mut config: RtcConfig) -> Result<RtcConfig, PeerError> {
    if config.dtls_identity.is_none() {
        let identity = tokio::task::spawn_blocking(crate::cert::DtlsIdentity::generate)
            .await
            .map_err(|_| crate::cert::CertError::Generate)??;
        config.dtls_identity = Some(identity);
    }
    Ok(config)
}

fn bind_sockets(config: &RtcConfig) -> Result<Vec<(SocketAddr, UdpSocket)>, PeerError> {
    let addrs = interfaces::bind_addrs(&config.bind, config.include_loopback)
        .map_err(|e| PeerError::Bind(e.kind()))?;
    let mut sockets = Vec::new();
    let mut last_err = None;
    for addr in addrs {
        match bind_one(addr) {
            Ok(s) => sockets.push(s),
            Err(e) => {
                tracing::debug!(addr = ?dopus_types::Redacted::new(addr), error = %e, "bind failed");
                last_err = Some(e.kind());
            }
        }
    }
    if sockets.is_empty() {
        return Err(match last_err {
            Some(kind) => PeerError::Bind(kind),
            None => PeerError::NoLocalAddress,
        });
    }
    Ok(sockets)
}

/// Socket buffers asked for. The default (208 KiB receive on Linux) overflows when the SCTP
/// sender's window (1 MiB) arrives in one burst, and every drop costs a retransmission; the
/// kernel caps the request at `net.core.rmem_max`/`wmem_max`.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

fn bind_one(addr: SocketAddr) -> std::io::Result<(SocketAddr, UdpSocket)> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "could not raise the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "could not raise the UDP send buffer");
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    let std_socket: std::net::UdpSocket = socket.into();
    std_socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(std_socket)?;
    Ok((socket.local_addr()?, socket))
}

fn spawn(
    engine: Engine,
    sockets: Vec<(SocketAddr, UdpSocket)>,
    config: RtcConfig,
) -> (PeerHandle, PeerEvents) {
    let (cmd_tx, cmd_rx) = mpsc::channel(32);
    let (msg_tx, msg_rx) = mpsc::channel(16);
    let (blob_tx, blob_rx) = mpsc::channel(4);
    let (ev_tx, ev_rx) = mpsc::channel(config.event_capacity);
    let (media_tx, media_rx) = mpsc::channel(crate::media::OUT_QUEUE);
    let handle = PeerHandle {
        commands: cmd_tx,
        media_out: media_tx,
        messages: msg_tx,
        blob_messages: blob_tx,
        max_message_size: config.max_message_size,
    };
    let (relay_tx, relay_rx) = mpsc::channel(256);
    let watched_ips = match config.bind {
        crate::config::BindPolicy::AllInterfaces => interface_ips(&config),
        crate::config::BindPolicy::Addrs(_) => None,
    };
    let task = PeerTask {
        relay_tx,
        relay_rx,
        streams: HashMap::new(),
        resolving_turn: None,
        turn_update: false,
        engine,
        sockets,
        config,
        commands: cmd_rx,
        messages: msg_rx,
        blob_messages: blob_rx,
        events: ev_tx,
        queued_events: VecDeque::new(),
        blocked: None,
        blob_blocked: None,
        close_waiters: Vec::new(),
        resolving: None,
        buf: vec![0; 65_536],
        next_socket: 0,
        media_rx,
        media_sink: None,
        media_generation: 0,
        watched_ips,
        next_interface_check: crate::time::later(Instant::now(), INTERFACE_POLL),
    };
    tokio::spawn(task.run());
    (handle, ev_rx)
}

/// Datagrams read in one go before the engine's outputs are flushed.
const RECV_BATCH: usize = 64;
/// Longest wait before a blocked batch is tried again without a low-water-mark event.
const BLOCKED_RETRY: Duration = Duration::from_millis(20);
/// Time allowed for resolving STUN server names.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the TCP/TLS relay streams report to the task.
#[derive(Debug)]
enum RelayIo {
    Connected { relay: u32, local: SocketAddr },
    Data { relay: u32, data: Vec<u8> },
    Failed { relay: u32, why: String },
}

/// Bytes waiting to be written on one relay stream; a full queue drops, as UDP would.
const STREAM_QUEUE: usize = 256;
/// How long a TCP connection to a relay may take.
const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the task compares the machine's addresses with the ones its sockets are bound
/// to (`getifaddrs`, a few microseconds). A periodic diff rather than netlink: portable (macOS,
/// Windows through if-addrs), no extra dependency or privileged socket, and bounded: one call
/// per connection every 2 s. A change is acted on within 2 s, well before the 5 s of silence
/// after which the path would be declared lost.
const INTERFACE_POLL: Duration = Duration::from_secs(2);

/// The IP addresses the bind policy selects now, in a comparable form.
fn interface_ips(config: &RtcConfig) -> Option<Vec<std::net::IpAddr>> {
    let mut ips: Vec<std::net::IpAddr> =
        interfaces::bind_addrs(&config.bind, config.include_loopback)
            .ok()?
            .into_iter()
            .map(|a| a.ip())
            .collect();
    ips.sort();
    ips.dedup();
    Some(ips)
}

/// What woke the task up; handled after `select!` has released its borrows.
enum Wake {
    Relay(Option<RelayIo>),
    RelaysResolved(Vec<crate::turn::RelayTarget>),
    Nothing,
    Command(Option<Command>),
    Resolved(Vec<SocketAddr>),
    Message(Option<Outgoing>),
    BlobMessage(Option<Outgoing>),
    Datagram(Option<(usize, usize, SocketAddr)>),
    MediaOut(Option<OutFrame>),
    Timer,
}

struct PeerTask {
    relay_tx: mpsc::Sender<RelayIo>,
    relay_rx: mpsc::Receiver<RelayIo>,
    /// Writers of the open relay streams, and their reader tasks.
    streams: HashMap<u32, (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>)>,
    resolving_turn: Option<oneshot::Receiver<Vec<crate::turn::RelayTarget>>>,
    /// The TURN servers being resolved replace the current ones (a new login's credentials).
    turn_update: bool,
    engine: Engine,
    sockets: Vec<(SocketAddr, UdpSocket)>,
    config: RtcConfig,
    commands: mpsc::Receiver<Command>,
    messages: mpsc::Receiver<Outgoing>,
    blob_messages: mpsc::Receiver<Outgoing>,
    events: mpsc::Sender<PeerEvent>,
    /// Events the application has not had room for yet.
    queued_events: VecDeque<PeerEvent>,
    /// A batch str0m had no room for (all or part of it), and when it was last tried.
    blocked: Option<(Outgoing, Instant)>,
    /// The same for the blob channel.
    blob_blocked: Option<(Outgoing, Instant)>,
    close_waiters: Vec<oneshot::Sender<()>>,
    resolving: Option<oneshot::Receiver<Vec<SocketAddr>>>,
    buf: Vec<u8>,
    next_socket: usize,
    /// Frames from the attached call's [`AudioSender`].
    media_rx: mpsc::Receiver<OutFrame>,
    /// The attached call's media task, and the generation of its sender.
    media_sink: Option<(u64, mpsc::Sender<MediaEvent>)>,
    media_generation: u64,
    /// The addresses the sockets were bound for, and when to look at the machine's again.
    watched_ips: Option<Vec<std::net::IpAddr>>,
    next_interface_check: Instant,
}

impl PeerTask {
    async fn run(mut self) {
        self.resolve_stun_servers();
        self.resolve_turn_servers();
        let mut commands_open = true;
        loop {
            self.retry_blocked();
            self.flush().await;
            if self.engine.is_finished() {
                break;
            }
            let mut deadline = self.engine.poll_timeout();
            if let Some((_, tried)) = &self.blocked {
                deadline = deadline.min(crate::time::later(*tried, BLOCKED_RETRY));
            }
            if let Some((_, tried)) = &self.blob_blocked {
                deadline = deadline.min(crate::time::later(*tried, BLOCKED_RETRY));
            }
            if self.watched_ips.is_some() {
                deadline = deadline.min(self.next_interface_check);
            }
            let deadline = tokio::time::Instant::from_std(deadline);
            let can_read = self.queued_events.len() < self.config.event_capacity;
            let can_send = self.blocked.is_none() && self.engine.channel_open();
            let can_send_blob = self.blob_blocked.is_none() && self.engine.blob_open();
            let has_events = !self.queued_events.is_empty();
            let wake = tokio::select! {
                biased;
                cmd = self.commands.recv(), if commands_open => Wake::Command(cmd),
                permit = self.events.reserve(), if has_events => {
                    match permit {
                        Ok(permit) => {
                            if let Some(ev) = self.queued_events.pop_front() {
                                permit.send(ev);
                            }
                        }
                        Err(_) => self.queued_events.clear(), // nobody listens
                    }
                    Wake::Nothing
                }
                servers = wait_resolved(&mut self.resolving) => Wake::Resolved(servers),
                targets = wait_resolved(&mut self.resolving_turn) => Wake::RelaysResolved(targets),
                io = self.relay_rx.recv() => Wake::Relay(io),
                msg = self.messages.recv(), if can_send => Wake::Message(msg),
                msg = self.blob_messages.recv(), if can_send_blob => Wake::BlobMessage(msg),
                frame = self.media_rx.recv() => Wake::MediaOut(frame),
                got = recv_any(&self.sockets, &mut self.buf, &mut self.next_socket), if can_read => {
                    Wake::Datagram(got)
                }
                () = tokio::time::sleep_until(deadline) => Wake::Timer,
            };
            match wake {
                Wake::Nothing => {}
                Wake::Command(Some(cmd)) => self.on_command(cmd),
                Wake::Command(None) => {
                    // Every handle is gone: nobody can use the connection any more.
                    commands_open = false;
                    self.engine.close(Instant::now(), CloseReason::Local);
                }
                Wake::Resolved(servers) => {
                    self.resolving = None;
                    self.engine.start_gathering(Instant::now(), servers);
                }
                Wake::RelaysResolved(targets) => {
                    self.resolving_turn = None;
                    if std::mem::take(&mut self.turn_update) {
                        self.engine.update_relay_targets(Instant::now(), targets);
                    } else {
                        self.engine.start_relays(Instant::now(), targets);
                    }
                }
                Wake::Relay(Some(io)) => self.on_relay_io(io),
                Wake::Relay(None) => {}
                Wake::Message(Some(msg)) => self.write(msg),
                Wake::Message(None) => {}
                Wake::BlobMessage(Some(msg)) => self.write_blob(msg),
                Wake::BlobMessage(None) => {}
                Wake::Datagram(Some((idx, len, from))) => self.on_datagram(idx, len, from),
                Wake::Datagram(None) => {}
                Wake::MediaOut(Some(frame)) => self.write_media(frame),
                Wake::MediaOut(None) => {}
                Wake::Timer => {
                    let now = Instant::now();
                    if now >= self.next_interface_check {
                        self.check_interfaces(now);
                    }
                    self.engine.handle_timeout(now);
                }
            }
        }
        for (_, (_, reader)) in self.streams.drain() {
            reader.abort();
        }
        if let Some((b, _)) = self.blocked.take() {
            b.finish(Err(PeerError::Closed));
        }
        if let Some((b, _)) = self.blob_blocked.take() {
            b.finish(Err(PeerError::Closed));
        }
        for w in self.close_waiters.drain(..) {
            let _ = w.send(());
        }
        // Events still queued go out as long as the application reads them, bounded by time.
        let drain = async {
            while let Some(ev) = self.queued_events.pop_front() {
                if self.events.send(ev).await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    }

    fn resolve_stun_servers(&mut self) {
        let servers: Vec<(String, u16)> = self
            .config
            .stun_servers()
            .map(|(h, p)| (h.to_owned(), p))
            .collect();
        let literal: Option<Vec<SocketAddr>> = servers
            .iter()
            .map(|(h, p)| h.parse().ok().map(|ip| SocketAddr::new(ip, *p)))
            .collect();
        match literal {
            Some(addrs) => self.engine.start_gathering(Instant::now(), addrs),
            None => {
                let (tx, rx) = oneshot::channel();
                self.resolving = Some(rx);
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for (host, port) in servers {
                        let lookup = tokio::net::lookup_host((host.as_str(), port));
                        match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                            Ok(Ok(addrs)) => out.extend(addrs),
                            _ => tracing::info!("a STUN server name did not resolve"),
                        }
                    }
                    let _ = tx.send(out);
                });
            }
        }
    }

    /// Resolves the TURN servers' names (literals at once) and hands the engine one target per
    /// (address, transport), in the configured order.
    fn resolve_turn_servers(&mut self) {
        let specs: Vec<crate::config::TurnServerSpec> = self.config.turn_servers().collect();
        if specs.is_empty() && !self.turn_update {
            return;
        }
        let tls = self.config.turn_tls.clone();
        let (tx, rx) = oneshot::channel();
        self.resolving_turn = Some(rx);
        tokio::spawn(async move {
            let mut out = Vec::new();
            let mut tls_default = None;
            for spec in specs {
                let addrs: Vec<SocketAddr> = match spec.host.parse::<std::net::IpAddr>() {
                    Ok(ip) => vec![SocketAddr::new(ip, spec.port)],
                    Err(_) => {
                        let lookup = tokio::net::lookup_host((spec.host.as_str(), spec.port));
                        match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                            Ok(Ok(addrs)) => addrs.collect(),
                            _ => {
                                tracing::info!("a TURN server name did not resolve");
                                Vec::new()
                            }
                        }
                    }
                };
                // One address per family is enough: the first of each.
                let mut picked: Vec<SocketAddr> = Vec::new();
                for a in addrs {
                    if !picked.iter().any(|p| p.is_ipv4() == a.is_ipv4()) {
                        picked.push(a);
                    }
                }
                for server in picked {
                    for &transport in &spec.transports {
                        let tls = if transport == crate::turn::RelayTransport::Tls {
                            Some(match &tls {
                                Some(c) => c.clone(),
                                None => tls_default.get_or_insert_with(default_tls).clone(),
                            })
                        } else {
                            None
                        };
                        out.push(crate::turn::RelayTarget {
                            label: format!("{}:{}", spec.host, spec.port),
                            host: spec.host.clone(),
                            server,
                            transport,
                            username: spec.username.clone(),
                            password: spec.credential.clone(),
                            tls,
                        });
                    }
                }
            }
            let _ = tx.send(out);
        });
    }

    fn on_relay_io(&mut self, io: RelayIo) {
        let now = Instant::now();
        match io {
            RelayIo::Connected { relay, local } => {
                self.engine.relay_stream_connected(now, relay, local)
            }
            RelayIo::Data { relay, data } => self.engine.relay_stream_data(now, relay, &data),
            RelayIo::Failed { relay, why } => {
                self.streams.remove(&relay);
                self.engine.relay_stream_failed(now, relay, &why);
            }
        }
    }

    /// Opens a TCP connection to a relay: one task reads it and reports to us, writes come
    /// through a bounded queue.
    fn open_stream(&mut self, relay: u32, server: SocketAddr) {
        let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
        let report = self.relay_tx.clone();
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let connect = tokio::net::TcpStream::connect(server);
            let stream = match tokio::time::timeout(STREAM_CONNECT_TIMEOUT, connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let _ = report
                        .send(RelayIo::Failed {
                            relay,
                            why: e.kind().to_string(),
                        })
                        .await;
                    return;
                }
                Err(_) => {
                    let _ = report
                        .send(RelayIo::Failed {
                            relay,
                            why: "timed out".into(),
                        })
                        .await;
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(local) = stream.local_addr() else {
                return;
            };
            if report
                .send(RelayIo::Connected { relay, local })
                .await
                .is_err()
            {
                return;
            }
            let (mut rd, mut wr) = stream.into_split();
            let mut buf = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    n = rd.read(&mut buf) => match n {
                        Ok(0) | Err(_) => {
                            let _ = report.send(RelayIo::Failed { relay, why: "closed".into() }).await;
                            return;
                        }
                        Ok(n) => {
                            let data = buf.get(..n).unwrap_or_default().to_vec();
                            if report.send(RelayIo::Data { relay, data }).await.is_err() {
                                return;
                            }
                        }
                    },
                    w = wrx.recv() => match w {
                        Some(data) => {
                            if wr.write_all(&data).await.is_err() {
                                let _ = report.send(RelayIo::Failed { relay, why: "write failed".into() }).await;
                                return;
                            }
                        }
                        None => return, // closed by the engine
                    },
                }
            }
        });
        self.streams.insert(relay, (wtx, task));
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::AcceptAnswer(sdp, reply) => {
                let _ = reply.send(self.engine.accept_answer(now, &sdp));
            }
            Command::AcceptOffer(sdp, reply) => {
                let _ = reply.send(self.engine.accept_offer(now, &sdp));
            }
            Command::AddCandidate(c, reply) => {
                let _ = reply.send(self.engine.add_remote_candidate(now, &c));
            }
            Command::RestartIce { rebind, reply } => {
                let _ = reply.send(self.restart(now, rebind));
            }
            Command::Diagnostics(reply) => {
                let _ = reply.send(self.engine.diagnostics());
            }
            Command::Connectivity(reply) => {
                let _ = reply.send(self.engine.connectivity());
            }
            Command::UpdateIceServers(servers, reply) => {
                self.config.ice_servers = servers;
                self.turn_update = true;
                self.resolve_turn_servers();
                let _ = reply.send(());
            }
            Command::AddAudio(reply) => {
                let _ = reply.send(self.engine.add_audio(now));
            }
            Command::AttachMedia(sink, reply) => {
                self.media_generation += 1;
                let generation = self.media_generation;
                if let Some(mid) = self.engine.audio_mid() {
                    let _ = sink.try_send(MediaEvent::Ready { mid });
                }
                self.media_sink = Some((generation, sink));
                self.engine.media_stats().attached = true;
                let _ = reply.send(generation);
            }
            Command::DetachMedia(reply) => {
                self.media_sink = None;
                self.media_generation += 1;
                self.engine.media_stats().attached = false;
                let _ = reply.send(());
            }
            Command::MediaStats(reply) => {
                let _ = reply.send(self.engine.media_stats().clone());
            }
            Command::Close(reply) => {
                self.engine.close(now, CloseReason::Local);
                self.close_waiters.push(reply);
            }
        }
    }

    /// The machine's addresses changed (a new network, a DHCP renumbering, a VPN): bind new
    /// sockets and restart ICE at once, as [`PeerHandle::restart_ice_rebind`] does, instead of
    /// waiting for the path to go silent. The offer goes to the application as
    /// [`PeerEvent::RestartOffer`], like the path-loss restart's. Only with
    /// [`crate::config::BindPolicy::AllInterfaces`] (fixed addresses never change) and once the
    /// connection is open; with no address at all it waits for one.
    fn check_interfaces(&mut self, now: Instant) {
        self.next_interface_check = crate::time::later(now, INTERFACE_POLL);
        let Some(watched) = self.watched_ips.as_ref() else {
            return;
        };
        let Some(ips) = interface_ips(&self.config) else {
            return;
        };
        if &ips == watched || ips.is_empty() || !self.engine.channel_open() {
            return;
        }
        tracing::info!("local addresses changed: new sockets and an ICE restart");
        self.watched_ips = Some(ips);
        match self.restart(now, true) {
            Ok(sdp) => {
                let ev = PeerEvent::RestartOffer(sdp);
                if let Err(mpsc::error::TrySendError::Full(ev)) = self.try_deliver(ev) {
                    self.queued_events.push_back(ev);
                }
            }
            Err(e) => tracing::debug!(error = %e, "no ICE restart after the address change"),
        }
    }

    fn restart(&mut self, now: Instant, rebind: bool) -> Result<String, PeerError> {
        if !rebind {
            return self.engine.restart_ice(now, None);
        }
        // The old sockets go first: with a fixed-port bind policy the new ones need their ports.
        let old = std::mem::take(&mut self.sockets);
        drop(old);
        match bind_sockets(&self.config) {
            Ok(sockets) => {
                let bases = sockets.iter().map(|(a, _)| *a).collect();
                self.sockets = sockets;
                self.engine.restart_ice(now, Some(bases))
            }
            Err(e) => {
                self.engine.close(
                    now,
                    CloseReason::Failed(crate::diagnostics::FailureReason::Network(e.to_string())),
                );
                Err(e)
            }
        }
    }

    fn write(&mut self, mut msg: Outgoing) {
        let rest = msg.data.get(msg.written..).unwrap_or_default();
        let (n, result) = self.engine.write_batch(Instant::now(), rest);
        for taken in msg.data.iter_mut().skip(msg.written).take(n) {
            *taken = Vec::new();
        }
        msg.written += n;
        match result {
            Ok(true) => msg.finish(Ok(())),
            Ok(false) => self.blocked = Some((msg, Instant::now())),
            Err(e) => msg.finish(Err(e)),
        }
    }

    fn write_media(&mut self, frame: OutFrame) {
        match &self.media_sink {
            Some((generation, _)) if *generation == frame.generation => {
                // The engine counts and explains its own refusals.
                let now = Instant::now();
                let _ = match frame.kind {
                    OutKind::Audio(level) => {
                        self.engine
                            .write_audio_level(now, frame.rtp_time, frame.data, level)
                    }
                    OutKind::Video => self.engine.write_video(now, frame.rtp_time, frame.data),
                    OutKind::KeyframeRequest => self.engine.request_keyframe(now).map(|_| ()),
                };
            }
            _ => self
                .engine
                .media_stats()
                .refuse_out("a frame from a call no longer attached to this connection".into()),
        }
    }

    /// Hands a media event to the attached call's task; without one, received media is
    /// refused (the peer is not in a call with us).
    fn deliver_media(&mut self, ev: MediaEvent) {
        let Some((_, sink)) = &self.media_sink else {
            if let MediaEvent::Frame(f) | MediaEvent::Video(f) = ev {
                self.engine.media_stats().refuse_in(format!(
                    "media on m-line {} from a peer that is not in a call with us",
                    f.mid
                ));
            }
            return;
        };
        let frame = matches!(ev, MediaEvent::Frame(_));
        let keyframe = matches!(ev, MediaEvent::KeyframeRequest);
        match sink.try_send(ev) {
            Ok(()) if frame => self.engine.media_stats().frames_received += 1,
            Ok(()) if keyframe => self.engine.media_stats().keyframe_requests_received += 1,
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self
                .engine
                .media_stats()
                .refuse_in("the call's media task had no room for a frame".into()),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.media_sink = None;
                self.engine.media_stats().attached = false;
            }
        }
    }

    fn write_blob(&mut self, mut msg: Outgoing) {
        let rest = msg.data.get(msg.written..).unwrap_or_default();
        let (n, result) = self.engine.write_blob_batch(Instant::now(), rest);
        for taken in msg.data.iter_mut().skip(msg.written).take(n) {
            *taken = Vec::new();
        }
        msg.written += n;
        match result {
            Ok(true) => msg.finish(Ok(())),
            Ok(false) => self.blob_blocked = Some((msg, Instant::now())),
            Err(e) => msg.finish(Err(e)),
        }
    }

    /// Retries a blocked batch when the engine says there is room (the channel opened, or the
    /// send buffer drained below its low-water mark), so the retry finds room for many messages
    /// and str0m drains once for all of them. Retrying after every input instead (every SACK)
    /// wrote one or two messages per drain, and each drain walks SCTP's whole in-flight queue.
    /// str0m reports the low-water mark only when the buffered amount crosses it, so a batch
    /// blocked below the mark (one very large message) is also retried [`BLOCKED_RETRY`] after
    /// its last attempt.
    fn retry_blocked(&mut self) {
        let room = self.engine.take_room();
        // The message channel first: it always has room beside the blob channel's share.
        if self.engine.channel_open()
            && let Some((_, tried)) = &self.blocked
            && (room || Instant::now() >= crate::time::later(*tried, BLOCKED_RETRY))
            && let Some((msg, _)) = self.blocked.take()
        {
            self.write(msg);
        }
        if self.engine.blob_open()
            && let Some((_, tried)) = &self.blob_blocked
            && (room || Instant::now() >= crate::time::later(*tried, BLOCKED_RETRY))
            && let Some((msg, _)) = self.blob_blocked.take()
        {
            self.write_blob(msg);
        }
    }

    fn on_datagram(&mut self, idx: usize, len: usize, from: SocketAddr) {
        let Some(&(local, _)) = self.sockets.get(idx) else {
            return;
        };
        let now = Instant::now();
        self.engine
            .handle_receive(now, from, local, self.buf.get(..len).unwrap_or_default());
        // Take what else is already queued on that socket before flushing.
        for _ in 1..RECV_BATCH {
            let Some((_, socket)) = self.sockets.get(idx) else {
                return;
            };
            match socket.try_recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    self.engine.handle_receive(
                        Instant::now(),
                        from,
                        local,
                        self.buf.get(..n).unwrap_or_default(),
                    );
                }
                Err(_) => break,
            }
        }
    }

    /// Sends every transmit and queues every event the engine produced.
    async fn flush(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                EngineOutput::Transmit {
                    source,
                    destination,
                    contents,
                } => {
                    let Some((_, socket)) = self.sockets.iter().find(|(a, _)| *a == source) else {
                        continue; // from a socket given up in a rebind
                    };
                    if let Err(e) = socket.send_to(&contents, destination).await {
                        tracing::debug!(error = %e, "UDP send failed");
                    }
                }
                EngineOutput::Event(ev) => {
                    if let Err(mpsc::error::TrySendError::Full(ev)) = self.try_deliver(ev) {
                        self.queued_events.push_back(ev);
                    }
                }
                EngineOutput::Media(ev) => self.deliver_media(ev),
                EngineOutput::RelayConnect { relay, server } => self.open_stream(relay, server),
                EngineOutput::RelayStream { relay, data } => {
                    if let Some((w, _)) = self.streams.get(&relay) {
                        let _ = w.try_send(data);
                    }
                }
                EngineOutput::RelayClose { relay } => {
                    if let Some((_, reader)) = self.streams.remove(&relay) {
                        reader.abort();
                    }
                }
            }
        }
    }

    fn try_deliver(&mut self, ev: PeerEvent) -> Result<(), mpsc::error::TrySendError<PeerEvent>> {
        if !self.queued_events.is_empty() {
            // Keep order: behind the already queued ones.
            return Err(mpsc::error::TrySendError::Full(ev));
        }
        match self.events.try_send(ev) {
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()), // nobody listens
            other => other,
        }
    }
}

/// The Mozilla root store, for `turns:` servers when the configuration names no TLS setup.
fn default_tls() -> std::sync::Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| rustls::ClientConfig::builder());
    std::sync::Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
}

async fn wait_resolved<T: Default>(rx: &mut Option<oneshot::Receiver<T>>) -> T {
    match rx {
        Some(rx) => rx.await.unwrap_or_default(),
        None => std::future::pending().await,
    }
}

/// Waits for a datagram on any socket, starting the scan at a rotating index for fairness.
async fn recv_any(
    sockets: &[(SocketAddr, UdpSocket)],
    buf: &mut [u8],
    next: &mut usize,
) -> Option<(usize, usize, SocketAddr)> {
    if sockets.is_empty() {
        return std::future::pending().await;
    }
    poll_fn(|cx| {
        let n = sockets.len();
        for k in 0..n {
            let idx = (*next + k) % n;
            let mut rb = ReadBuf::new(buf);
            match sockets[idx].1.poll_recv_from(cx, &mut rb) {
                Poll::Ready(Ok(from)) => {
                    *next = (idx + 1) % n;
                    return Poll::Ready(Some((idx, rb.filled().len(), from)));
                }
                // ICMP errors (port unreachable) surface here; they are not fatal for ICE.
                Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_debug_hides_addresses_and_content() {
        let c = PeerEvent::LocalCandidate(
            "candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host".into(),
        );
        let shown = format!("{c:?}");
        assert_eq!(shown, "LocalCandidate(Some(Host), <redacted>)");
        let d = format!("{:?}", PeerEvent::Data(b"secret text".to_vec()));
        assert_eq!(d, "Data(11 bytes)");
    }
}
