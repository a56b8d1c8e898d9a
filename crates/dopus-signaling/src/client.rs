//! The client: a handle ([`SignalingClient`]) and one task that owns the socket.
//!
//! Task topology:
//!
//! ```text
//! SignalingClient ──commands (mpsc)──► client task ──WebSocket──► server
//!        ▲                                  │
//!        └── oneshot answers ◄──────────────┤
//! event stream (mpsc) ◄── state changes, deliveries, presence, notices
//! ```
//!
//! States: `Disconnected → Connecting → Authenticating → Connected`, and back to
//! `Disconnected` on any failure, followed by a backoff delay and a new attempt. One failure is
//! not retried: when the server says this device logged in on another connection
//! (`session_replaced`), the client stays `Disconnected` until [`SignalingClient::reconnect`]
//! (two copies of one device reconnecting by themselves would take the session from each other
//! forever); [`SignalingClient::is_replaced`] tells it from a network error. Requests made
//! while not connected fail at once with [`ClientError::NotConnected`]; requests in flight when
//! the connection drops fail with [`ClientError::ConnectionLost`]. The node keeps its own outbox
//! and retries; this client never replays a request by itself, only the contact list and
//! status, which are state rather than actions.
//!
//! Quiet relays ([`ClientConfig::quiet_relays`], protocol 3): the server does not answer a relay
//! every target device got live. Answers come in the order requests were written, so the task
//! numbers what it writes and takes the answer to any later request as the confirmation of the
//! unanswered relays before it; when a quiet relay is the last request of a write, the task
//! adds a `ping` so something always confirms it. A client that sends one relay at a time gains
//! nothing (the `pong` replaces the `relay_result`); one that sends bursts gets one answer per
//! burst instead of one per relay.

use crate::backoff::Backoff;
use dopus_proto::bundle::{ClaimedBundle, DeviceBundle};
use dopus_proto::signaling::{
    ClientFrame, DeliveryKind, ErrorCode, IceServerInfo, Limits, PresenceEntry,
    QUIET_RELAYS_VERSION, Refusal, RequestId, SUPPORTED_VERSIONS, Sender, ServerFrame, Status,
    VERSION_PARAM, auth_signing_bytes, contacts_per_frame,
};
use dopus_types::{DeviceId, Signature, Timestamp, UserId};
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Signs login challenges with the user's identity key; the node implements it over its own
/// key storage so the key never enters this crate.
pub trait AuthSigner: Send + Sync {
    /// The user this signer speaks for (its identity key).
    fn user_id(&self) -> UserId;
    /// Signs `message` with the identity key.
    fn sign(&self, message: &[u8]) -> Signature;
}

/// How to reach and talk to a server.
#[derive(Clone)]
pub struct ClientConfig {
    /// `ws://host:port/ws` or `wss://…/ws`; the version query is added by the client.
    pub url: String,
    /// This device.
    pub device_id: DeviceId,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// How long a request may wait for its answer.
    pub request_timeout: Duration,
    /// How long connecting plus logging in may take.
    pub connect_timeout: Duration,
    /// TLS settings for `wss://`; `None` trusts the bundled web PKI roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Ask the server (protocol 3) not to answer relays every target device got live; see the
    /// module docs. Off by default. A relay confirmed this way reports `delivered` as the one
    /// device it named, or empty for a relay to all devices (then every device that was
    /// connected got it).
    pub quiet_relays: bool,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("device_id", &self.device_id)
            .field("backoff", &self.backoff)
            .field("request_timeout", &self.request_timeout)
            .field("quiet_relays", &self.quiet_relays)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults: 250 ms to 30 s backoff, 10 s request and connect timeouts.
    pub fn new(url: impl Into<String>, device_id: DeviceId) -> Self {
        Self {
            url: url.into(),
            device_id,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            tls: None,
            quiet_relays: false,
        }
    }
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// No connection; waiting to retry (or shut down).
    Disconnected,
    /// Opening the WebSocket.
    Connecting,
    /// Answering the challenge.
    Authenticating,
    /// Logged in; requests can be made.
    Connected,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The client is not connected right now.
    #[error("not connected to the signaling server")]
    NotConnected,
    /// The connection dropped before the answer came.
    #[error("the connection was lost before the server answered")]
    ConnectionLost,
    /// No answer within the request timeout.
    #[error("the server did not answer in time")]
    Timeout,
    /// The server answered with an error.
    #[error("the server refused: {code}")]
    Server {
        /// The stable code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server answered with a frame of the wrong kind.
    #[error("unexpected answer from the server")]
    UnexpectedAnswer,
    /// The client was shut down.
    #[error("the client was shut down")]
    Closed,
}

/// A frame from another user.
#[derive(Debug)]
pub struct Incoming {
    /// What it is.
    pub kind: DeliveryKind,
    /// Who sent it, as authenticated by the server.
    pub from: Sender,
    /// The opaque payload.
    pub payload: String,
    /// When the server accepted it.
    pub sent_at: Timestamp,
    /// Present for mailbox items: acknowledge once the item is stored.
    pub ack: Option<AckHandle>,
}

/// Acknowledges one mailbox item; until then the server keeps it and re-delivers it on the
/// next login.
#[derive(Debug, Clone)]
pub struct AckHandle {
    mailbox_id: u64,
    client: SignalingClient,
}

impl AckHandle {
    /// The server's id for the item.
    pub fn mailbox_id(&self) -> u64 {
        self.mailbox_id
    }

    /// Tells the server to delete the item.
    pub async fn ack(self) -> Result<(), ClientError> {
        self.client.ack(vec![self.mailbox_id]).await
    }
}

/// What the client reports.
#[derive(Debug)]
pub enum Event {
    /// The connection state changed.
    State(ConnectionState),
    /// Login succeeded (after every connect).
    Authenticated {
        /// The server's id.
        server_id: String,
        /// The limits the server enforces.
        limits: Limits,
        /// Mailbox items about to be delivered.
        mailbox_pending: u64,
        /// Relay servers with credentials for this login (protocol 2; empty when the server
        /// offers none). They expire after their `ttl_secs`; each login brings fresh ones.
        ice_servers: Vec<IceServerInfo>,
    },
    /// The connection is down and the next attempt starts after `delay` (the backoff), unless
    /// [`SignalingClient::reconnect`] comes first. Sent after each `State(Disconnected)` that
    /// is followed by a retry (not after a replacement, which waits for `reconnect`).
    Retrying {
        /// How long until the next attempt.
        delay: Duration,
    },
    /// Login was refused; the client keeps retrying with backoff.
    AuthFailed {
        /// Why.
        code: ErrorCode,
    },
    /// A relayed payload.
    Incoming(Incoming),
    /// A mutual contact's presence.
    Presence {
        /// The contact.
        user: UserId,
        /// Its visible status.
        status: Status,
    },
    /// This device should publish more one-time keys.
    OneTimeKeysLow {
        /// Keys left.
        remaining: u64,
        /// The server's threshold.
        threshold: u64,
    },
    /// An error the server sent without a request id (rate limit, malformed frame, closing).
    ServerNotice {
        /// The stable code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
}

/// How a relay went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOutcome {
    /// Devices that got it live.
    pub delivered: Vec<DeviceId>,
    /// Devices that will get it from their mailbox.
    pub queued: Vec<DeviceId>,
    /// Devices that got nothing.
    pub refused: Vec<Refusal>,
}

/// A one-word summary of a [`RelayOutcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayStatus {
    /// Every target device got it live.
    Delivered,
    /// Every target device got it, some or all through the mailbox.
    Stored,
    /// Some devices got nothing (see `refused`).
    Partial,
}

impl RelayOutcome {
    /// The summary.
    pub fn status(&self) -> RelayStatus {
        if !self.refused.is_empty() {
            RelayStatus::Partial
        } else if self.queued.is_empty() {
            RelayStatus::Delivered
        } else {
            RelayStatus::Stored
        }
    }
}

enum Command {
    Request {
        /// Frames written just before `frame`, whose answers nobody waits for (the first parts
        /// of a contact list too long for one frame); written in one go with `frame`, so they
        /// all go on the same connection.
        before: Vec<ClientFrame>,
        frame: Box<ClientFrame>,
        reply: oneshot::Sender<Result<ServerFrame, ClientError>>,
    },
    /// Leave the parked state after a replacement (ignored otherwise).
    Reconnect,
    Shutdown(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct Desired {
    status: Option<Status>,
    contacts: Option<Vec<UserId>>,
}

#[derive(Debug)]
struct Inner {
    cmd: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ConnectionState>,
    next_id: AtomicU64,
    desired: Arc<Mutex<Desired>>,
    request_timeout: Duration,
    replaced: Arc<AtomicBool>,
    /// The server's `max_frame_bytes` (from the last login), which sizes contact list parts.
    max_frame_bytes: Arc<AtomicU64>,
    /// The relay servers and credentials of the last login.
    ice_servers: Arc<Mutex<Vec<IceServerInfo>>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// A handle to the client task; cheap to clone.
#[derive(Debug, Clone)]
pub struct SignalingClient {
    inner: Arc<Inner>,
}

impl SignalingClient {
    /// Starts the client task; it connects at once and keeps reconnecting until
    /// [`SignalingClient::shutdown`]. Events arrive on the returned receiver (unbounded, so a
    /// consumer that awaits a request while events pile up can never deadlock the client).
    pub fn start(
        config: ClientConfig,
        signer: Arc<dyn AuthSigner>,
    ) -> (SignalingClient, mpsc::UnboundedReceiver<Event>) {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(ConnectionState::Disconnected);
        let desired = Arc::new(Mutex::new(Desired::default()));
        let replaced = Arc::new(AtomicBool::new(false));
        let max_frame_bytes = Arc::new(AtomicU64::new(DEFAULT_MAX_FRAME_BYTES));
        let ice_servers = Arc::new(Mutex::new(Vec::new()));
        let client = SignalingClient {
            inner: Arc::new(Inner {
                cmd: cmd_tx,
                state: state_rx,
                next_id: AtomicU64::new(1),
                desired: desired.clone(),
                request_timeout: config.request_timeout,
                replaced: replaced.clone(),
                max_frame_bytes: max_frame_bytes.clone(),
                ice_servers: ice_servers.clone(),
            }),
        };
        let task = Task {
            config,
            signer,
            cmd_rx,
            events: event_tx,
            state: state_tx,
            desired,
            handle: client.downgrade(),
            next_internal: 1 << 62,
            replaced,
            max_frame_bytes,
            ice_servers,
        };
        tokio::spawn(task.run());
        (client, event_rx)
    }

    /// The relay (TURN) servers and time-limited credentials the server handed out at the
    /// last login (protocol 2), for the peer connections' `RtcConfig::ice_servers`. Empty
    /// before the first login or when the server offers no relay. Each login replaces them;
    /// [`Event::Authenticated`] carries the same list.
    pub fn ice_servers(&self) -> Vec<IceServerInfo> {
        self.inner
            .ice_servers
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    fn downgrade(&self) -> WeakClient {
        WeakClient(Arc::downgrade(&self.inner))
    }

    /// Whether the client stopped because this device logged in on another connection (the
    /// server said `session_replaced`). It stays `Disconnected` until
    /// [`SignalingClient::reconnect`]; requests fail with `ClientError::Server` carrying
    /// `ErrorCode::SessionReplaced`.
    pub fn is_replaced(&self) -> bool {
        self.inner.replaced.load(Ordering::Relaxed)
    }

    /// Takes the session back after a replacement (which replaces the other connection in
    /// turn); does nothing otherwise. Meant for an explicit user action, never for a loop.
    pub fn reconnect(&self) {
        let _ = self.inner.cmd.send(Command::Reconnect);
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        *self.inner.state.borrow()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.clone()
    }

    /// Waits until the client is connected and logged in.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut rx = self.inner.state.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s == ConnectionState::Connected))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::Closed)?;
        Ok(())
    }

    fn next_id(&self) -> RequestId {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn request(&self, frame: ClientFrame) -> Result<ServerFrame, ClientError> {
        self.request_after(Vec::new(), frame).await
    }

    /// Writes `before` and then `frame`, and waits for the answer to `frame`.
    async fn request_after(
        &self,
        before: Vec<ClientFrame>,
        frame: ClientFrame,
    ) -> Result<ServerFrame, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(Command::Request {
                before,
                frame: Box::new(frame),
                reply: tx,
            })
            .map_err(|_| ClientError::Closed)?;
        let answer = tokio::time::timeout(self.inner.request_timeout, rx)
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::Closed)??;
        match answer {
            ServerFrame::Error { code, message, .. } => Err(ClientError::Server { code, message }),
            other => Ok(other),
        }
    }

    /// Publishes this device's bundle; returns the one-time keys now stored.
    pub async fn publish_bundle(&self, bundle: DeviceBundle) -> Result<u64, ClientError> {
        let id = self.next_id();
        match self
            .request(ClientFrame::PublishBundle {
                id,
                bundle: Box::new(bundle),
            })
            .await?
        {
            ServerFrame::BundlePublished { one_time_keys, .. } => Ok(one_time_keys),
            _ => Err(ClientError::UnexpectedAnswer),
        }
    }

    /// Claims one bundle per device of `user` (verify each with `ClaimedBundle::verify`).
    pub async fn fetch_bundle(&self, user: UserId) -> Result<Vec<ClaimedBundle>, ClientError> {
        let id = self.next_id();
        match self.request(ClientFrame::FetchBundle { id, user }).await? {
            ServerFrame::Bundles { bundles, .. } => Ok(bundles),
            _ => Err(ClientError::UnexpectedAnswer),
        }
    }

    /// Relays an opaque payload to `to` (one device or all); `store` queues it for offline
    /// devices.
    pub async fn relay(
        &self,
        to: UserId,
        to_device: Option<DeviceId>,
        payload: String,
        store: bool,
    ) -> Result<RelayOutcome, ClientError> {
        self.relay_request(|id| ClientFrame::Relay {
            id,
            to,
            to_device,
            payload,
            store,
        })
        .await
    }

    /// Sends a frame answered like a relay (delivered to / queued for which devices).
    async fn relay_request(
        &self,
        make: impl FnOnce(RequestId) -> ClientFrame,
    ) -> Result<RelayOutcome, ClientError> {
        let id = self.next_id();
        relay_outcome(self.request(make(id)).await?)
    }

    /// Sets this device's status; it is re-sent after every reconnect.
    pub async fn set_status(&self, status: Status) -> Result<(), ClientError> {
        if let Ok(mut d) = self.inner.desired.lock() {
            d.status = Some(status);
        }
        let id = self.next_id();
        match self.request(ClientFrame::SetStatus { id, status }).await? {
            ServerFrame::Ok { .. } => Ok(()),
            _ => Err(ClientError::UnexpectedAnswer),
        }
    }

    /// Replaces the contact list; returns the presence of mutual contacts. The list is
    /// re-sent after every reconnect. A list too long for one frame goes in parts that the
    /// server applies together.
    pub async fn sync_contacts(
        &self,
        contacts: Vec<UserId>,
    ) -> Result<Vec<PresenceEntry>, ClientError> {
        if let Ok(mut d) = self.inner.desired.lock() {
            d.contacts = Some(contacts.clone());
        }
        let per_frame = contacts_per_frame(self.inner.max_frame_bytes.load(Ordering::Relaxed));
        let mut parts = contact_parts(contacts, per_frame, || self.next_id());
        let Some(last) = parts.pop() else {
            return Err(ClientError::UnexpectedAnswer);
        };
        match self.request_after(parts, last).await? {
            ServerFrame::ContactsSynced { presence, .. } => Ok(presence),
            _ => Err(ClientError::UnexpectedAnswer),
        }
    }

    /// Acknowledges mailbox items.
    pub async fn ack(&self, ids: Vec<u64>) -> Result<(), ClientError> {
        let id = self.next_id();
        match self.request(ClientFrame::Ack { id, ids }).await? {
            ServerFrame::Ok { .. } => Ok(()),
            _ => Err(ClientError::UnexpectedAnswer),
        }
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        let id = self.next_id();
        match self.request(ClientFrame::Ping { id }).await? {
            ServerFrame::Pong { .. } => Ok(start.elapsed()),
            _ => Err(ClientError::UnexpectedAnswer),
        }
    }

    /// Says `offline`, closes the connection and stops reconnecting.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.cmd.send(Command::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

/// The `max_frame_bytes` assumed before the first login says otherwise (the protocol default).
const DEFAULT_MAX_FRAME_BYTES: u64 = 65_536;

/// A contact list as `sync_contacts` frames of at most `per_frame` contacts each, all but the
/// last marked `more`; an empty list is one empty frame.
fn contact_parts(
    contacts: Vec<UserId>,
    per_frame: usize,
    mut next_id: impl FnMut() -> RequestId,
) -> Vec<ClientFrame> {
    let chunks: Vec<Vec<UserId>> = if contacts.is_empty() {
        vec![Vec::new()]
    } else {
        contacts
            .chunks(per_frame.max(1))
            .map(<[UserId]>::to_vec)
            .collect()
    };
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, contacts)| ClientFrame::SyncContacts {
            id: next_id(),
            contacts,
            more: i + 1 < n,
        })
        .collect()
}

fn relay_outcome(frame: ServerFrame) -> Result<RelayOutcome, ClientError> {
    match frame {
        ServerFrame::RelayResult {
            delivered,
            queued,
            refused,
            ..
        } => Ok(RelayOutcome {
            delivered,
            queued,
            refused,
        }),
        _ => Err(ClientError::UnexpectedAnswer),
    }
}

#[derive(Debug, Clone)]
struct WeakClient(std::sync::Weak<Inner>);

impl WeakClient {
    fn upgrade(&self) -> Option<SignalingClient> {
        self.0.upgrade().map(|inner| SignalingClient { inner })
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Task {
    config: ClientConfig,
    signer: Arc<dyn AuthSigner>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    state: watch::Sender<ConnectionState>,
    desired: Arc<Mutex<Desired>>,
    handle: WeakClient,
    next_internal: RequestId,
    replaced: Arc<AtomicBool>,
    max_frame_bytes: Arc<AtomicU64>,
    ice_servers: Arc<Mutex<Vec<IceServerInfo>>>,
}

/// Why a session ended.
enum End {
    /// Reconnect after a delay.
    Retry,
    /// The device logged in elsewhere: wait for [`SignalingClient::reconnect`].
    Replaced,
    /// Stop for good.
    Shutdown,
}

/// How long closing waits for the other side's Close frame or end of stream.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Finishes a close: writes our reply to the server's Close (queued when it was read) or our
/// own Close, then reads and discards until the server ends the stream, so nothing the server
/// sent is lost to a reset and the server need not wait for a timeout.
async fn finish_close(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let _ = ws.flush().await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

struct AuthInfo {
    ping_interval: Duration,
    ping_timeout: Duration,
    /// The server will not answer relays every target got live (protocol 3, asked for).
    quiet: bool,
}

type Reply = oneshot::Sender<Result<ServerFrame, ClientError>>;

/// The requests of one connection waiting for their answers, numbered in the order they were
/// written (answers come in that order).
#[derive(Default)]
struct InFlight {
    /// Requests someone waits for: deadline, reply, write number.
    pending: HashMap<RequestId, (Instant, Reply, u64)>,
    /// Requests the task made itself (contact list parts, status, confirmation pings).
    internal: HashMap<RequestId, u64>,
    /// Quiet relays not answered yet, in write order: write number, id, the device it named.
    quiet: VecDeque<(u64, RequestId, Option<DeviceId>)>,
    /// Write numbers handed out so far.
    written: u64,
}

impl InFlight {
    fn number(&mut self) -> u64 {
        self.written += 1;
        self.written
    }

    /// The answer to `id` arrived: every quiet relay written before it was delivered in full.
    /// Returns the request's reply (`None` for internal requests and unknown ids), and whether
    /// the request was internal.
    fn answered(&mut self, id: RequestId) -> (Option<Reply>, bool) {
        let (reply, number, internal) = if let Some(n) = self.internal.remove(&id) {
            (None, Some(n), true)
        } else if let Some((_, reply, n)) = self.pending.remove(&id) {
            (Some(reply), Some(n), false)
        } else {
            (None, None, false)
        };
        if let Some(n) = number {
            while let Some(&(m, quiet_id, _)) = self.quiet.front() {
                if m > n {
                    break;
                }
                let Some((_, _, device)) = self.quiet.pop_front() else {
                    break;
                };
                if m == n {
                    // Answered itself: queued or refused somewhere.
                    continue;
                }
                if let Some((_, waiting, _)) = self.pending.remove(&quiet_id) {
                    let _ = waiting.send(Ok(ServerFrame::RelayResult {
                        id: quiet_id,
                        delivered: device.into_iter().collect(),
                        queued: Vec::new(),
                        refused: Vec::new(),
                    }));
                }
            }
        }
        (reply, internal)
    }
}

impl Task {
    fn set_state(&self, s: ConnectionState) {
        if *self.state.borrow() != s {
            self.state.send_replace(s);
            let _ = self.events.send(Event::State(s));
        }
    }

    async fn run(mut self) {
        let mut attempt: u32 = 0;
        loop {
            self.set_state(ConnectionState::Connecting);
            let end = match tokio::time::timeout(self.config.connect_timeout, self.connect()).await
            {
                Ok(Ok((ws, info))) => {
                    attempt = 0;
                    self.set_state(ConnectionState::Connected);
                    self.session(ws, info).await
                }
                Ok(Err(Some(code))) => {
                    let _ = self.events.send(Event::AuthFailed { code });
                    End::Retry
                }
                Ok(Err(None)) | Err(_) => End::Retry,
            };
            self.set_state(ConnectionState::Disconnected);
            match end {
                End::Shutdown => return,
                End::Replaced => {
                    self.replaced.store(true, Ordering::Relaxed);
                    let stop = self.parked().await;
                    self.replaced.store(false, Ordering::Relaxed);
                    if stop {
                        return;
                    }
                    attempt = 0;
                    continue;
                }
                End::Retry => {}
            }
            let delay = self.config.backoff.next_delay(attempt);
            attempt = attempt.saturating_add(1);
            let _ = self.events.send(Event::Retrying { delay });
            if self.idle(delay).await {
                return;
            }
        }
    }

    /// Waits for [`SignalingClient::reconnect`] after a replacement, refusing requests; `true`
    /// if shut down meanwhile.
    async fn parked(&mut self) -> bool {
        loop {
            match self.cmd_rx.recv().await {
                None => return true,
                Some(Command::Shutdown(done)) => {
                    let _ = done.send(());
                    return true;
                }
                Some(Command::Reconnect) => return false,
                Some(Command::Request { reply, .. }) => {
                    let _ = reply.send(Err(ClientError::Server {
                        code: ErrorCode::SessionReplaced,
                        message: "this device is logged in on another connection".into(),
                    }));
                }
            }
        }
    }

    /// Waits out a backoff delay, refusing requests; `true` if shut down meanwhile.
    async fn idle(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                cmd = self.cmd_rx.recv() => match cmd {
                    None => return true,
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        return true;
                    }
                    Some(Command::Reconnect) => {}
                    Some(Command::Request { reply, .. }) => {
                        let _ = reply.send(Err(ClientError::NotConnected));
                    }
                },
            }
        }
    }

    fn url(&self) -> String {
        let sep = if self.config.url.contains('?') {
            '&'
        } else {
            '?'
        };
        let offer: Vec<String> = SUPPORTED_VERSIONS.iter().map(u32::to_string).collect();
        format!(
            "{}{sep}{VERSION_PARAM}={}",
            self.config.url,
            offer.join(",")
        )
    }

    /// Connects and logs in. `Err(Some(code))` is a refused login, `Err(None)` any other failure.
    async fn connect(&mut self) -> Result<(Ws, AuthInfo), Option<ErrorCode>> {
        let connector = self
            .config
            .tls
            .clone()
            .map(tokio_tungstenite::Connector::Rustls);
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20));
        let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            self.url(),
            Some(ws_config),
            true,
            connector,
        )
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "connect failed");
            None
        })?;
        self.set_state(ConnectionState::Authenticating);
        let (server_id, challenge, version) = match next_frame(&mut ws).await? {
            ServerFrame::Challenge {
                version,
                server_id,
                challenge,
                ..
            } if SUPPORTED_VERSIONS.contains(&version) => (server_id, challenge, version),
            ServerFrame::Error { code, .. } => return Err(Some(code)),
            _ => return Err(None),
        };
        let device_id = self.config.device_id.clone();
        let signature = self
            .signer
            .sign(&auth_signing_bytes(&server_id, &challenge.0, &device_id));
        let quiet = self.config.quiet_relays && version >= QUIET_RELAYS_VERSION;
        let auth = ClientFrame::Auth {
            user_id: self.signer.user_id(),
            device_id,
            challenge,
            signature,
            quiet_relays: quiet,
        };
        ws.send(Message::text(auth.to_json()))
            .await
            .map_err(|_| None)?;
        let mut notices = Vec::new();
        let info = loop {
            match next_frame(&mut ws).await? {
                ServerFrame::AuthSuccess {
                    limits,
                    mailbox_pending,
                    ping_interval_ms,
                    ping_timeout_ms,
                    ice_servers,
                    ..
                } => {
                    self.max_frame_bytes
                        .store(limits.max_frame_bytes, Ordering::Relaxed);
                    if let Ok(mut latest) = self.ice_servers.lock() {
                        latest.clone_from(&ice_servers);
                    }
                    let _ = self.events.send(Event::Authenticated {
                        server_id,
                        limits,
                        mailbox_pending,
                        ice_servers,
                    });
                    break AuthInfo {
                        ping_interval: Duration::from_millis(ping_interval_ms),
                        ping_timeout: Duration::from_millis(ping_timeout_ms),
                        quiet,
                    };
                }
                ServerFrame::AuthFailure { code, .. } => return Err(Some(code)),
                other => notices.push(other),
            }
        };
        for frame in notices {
            self.dispatch_push(frame);
        }
        Ok((ws, info))
    }

    fn internal_id(&mut self) -> RequestId {
        self.next_internal += 1;
        self.next_internal
    }

    /// Runs a logged-in connection until it drops or the client shuts down.
    async fn session(&mut self, mut ws: Ws, info: AuthInfo) -> End {
        let mut flight = InFlight::default();
        // Frames fed but not yet flushed, and whether the last request fed was a quiet relay
        // (then a `ping` follows it before the flush, so that something confirms it).
        let mut unflushed = 0usize;
        let mut confirm = false;
        // Re-sync state the user set before this connection.
        let (status, contacts) = match self.desired.lock() {
            Ok(d) => (d.status, d.contacts.clone()),
            Err(_) => (None, None),
        };
        if let Some(contacts) = contacts {
            let per_frame = contacts_per_frame(self.max_frame_bytes.load(Ordering::Relaxed));
            for part in contact_parts(contacts, per_frame, || self.internal_id()) {
                if let Some(id) = part.id() {
                    let n = flight.number();
                    flight.internal.insert(id, n);
                }
                if ws.feed(Message::text(part.to_json())).await.is_err() {
                    return End::Retry;
                }
            }
            if ws.flush().await.is_err() {
                return End::Retry;
            }
        }
        if let Some(status) = status.filter(|s| *s != Status::Online) {
            let id = self.internal_id();
            let n = flight.number();
            flight.internal.insert(id, n);
            if ws
                .send(Message::text(
                    ClientFrame::SetStatus { id, status }.to_json(),
                ))
                .await
                .is_err()
            {
                return End::Retry;
            }
        }
        // The server pings every `ping_interval`; silence for longer than interval + timeout
        // means the path is dead even if TCP has not noticed.
        let silence_limit = info.ping_interval + info.ping_timeout + Duration::from_secs(1);
        let mut last_rx = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        // The server says why before it closes: `session_replaced` must not be retried.
        let mut replaced = false;
        let end = loop {
            tokio::select! {
                // Requests first, so a burst of them leaves in one write; the flush below runs
                // when none is waiting (or after 64 frames).
                biased;
                cmd = self.cmd_rx.recv() => match cmd {
                    None => break End::Shutdown,
                    Some(Command::Shutdown(done)) => {
                        self.say_goodbye(&mut ws).await;
                        let _ = done.send(());
                        break End::Shutdown;
                    }
                    Some(Command::Reconnect) => {}
                    Some(Command::Request { before, frame, reply }) => {
                        let Some(id) = frame.id() else {
                            let _ = reply.send(Err(ClientError::UnexpectedAnswer));
                            continue;
                        };
                        let mut written = true;
                        for part in before {
                            if let Some(id) = part.id() {
                                let n = flight.number();
                                flight.internal.insert(id, n);
                            }
                            written &= ws.feed(Message::text(part.to_json())).await.is_ok();
                            unflushed += 1;
                        }
                        if !written || ws.feed(Message::text(frame.to_json())).await.is_err() {
                            let _ = reply.send(Err(ClientError::ConnectionLost));
                            break End::Retry;
                        }
                        unflushed += 1;
                        let n = flight.number();
                        confirm = false;
                        if info.quiet && let ClientFrame::Relay { to_device, .. } = *frame {
                            flight.quiet.push_back((n, id, to_device));
                            confirm = true;
                        }
                        flight.pending.insert(id, (Instant::now() + self.config.request_timeout, reply, n));
                        if unflushed >= 64 {
                            unflushed = 0;
                            if !self.flush(&mut ws, &mut flight, &mut confirm).await {
                                break End::Retry;
                            }
                        }
                    }
                },
                () = std::future::ready(()), if unflushed > 0 => {
                    unflushed = 0;
                    if !self.flush(&mut ws, &mut flight, &mut confirm).await {
                        break End::Retry;
                    }
                }
                msg = ws.next() => {
                    last_rx = Instant::now();
                    let text = match msg {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(frame))) => {
                            replaced |= frame.is_some_and(|f| f.reason.as_str() == ErrorCode::SessionReplaced.as_str());
                            finish_close(&mut ws).await;
                            break if replaced { End::Replaced } else { End::Retry };
                        }
                        None | Some(Err(_)) => break if replaced { End::Replaced } else { End::Retry },
                        Some(Ok(_)) => continue,
                    };
                    let Ok(frame) = ServerFrame::parse(text.as_str()) else {
                        tracing::debug!("unparseable server frame");
                        continue;
                    };
                    if let Some(id) = answer_id(&frame) {
                        match flight.answered(id) {
                            (_, true) => {
                                if let ServerFrame::ContactsSynced { presence, .. } = frame {
                                    for p in presence {
                                        let _ = self.events.send(Event::Presence { user: p.user, status: p.status });
                                    }
                                }
                            }
                            (Some(reply), _) => {
                                let _ = reply.send(Ok(frame));
                            }
                            (None, false) => {}
                        }
                        continue;
                    }
                    if let ServerFrame::Error { id: None, code: ErrorCode::SessionReplaced, .. } = frame {
                        replaced = true;
                    }
                    self.dispatch_push(frame);
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    flight.pending.retain(|_, (deadline, _, _)| *deadline > now);
                    if now.duration_since(last_rx) > silence_limit {
                        tracing::debug!("server silent; reconnecting");
                        break End::Retry;
                    }
                }
            }
        };
        for (_, (_, reply, _)) in flight.pending.drain() {
            let _ = reply.send(Err(ClientError::ConnectionLost));
        }
        end
    }

    /// Writes what was fed, with a confirming `ping` after a trailing quiet relay; `false` if
    /// the connection failed.
    async fn flush(&mut self, ws: &mut Ws, flight: &mut InFlight, confirm: &mut bool) -> bool {
        if std::mem::take(confirm) {
            let id = self.internal_id();
            let n = flight.number();
            flight.internal.insert(id, n);
            if ws
                .feed(Message::text(ClientFrame::Ping { id }.to_json()))
                .await
                .is_err()
            {
                return false;
            }
        }
        ws.flush().await.is_ok()
    }

    /// Says `offline` (so contacts see it at once, not after a timeout) and closes.
    async fn say_goodbye(&mut self, ws: &mut Ws) {
        let id = self.internal_id();
        let bye = ClientFrame::SetStatus {
            id,
            status: Status::Offline,
        };
        if ws.send(Message::text(bye.to_json())).await.is_ok() {
            let wait = async {
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(t) = msg
                        && let Ok(f) = ServerFrame::parse(t.as_str())
                        && answer_id(&f) == Some(id)
                    {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        }
        if tokio::time::timeout(CLOSE_WAIT, ws.close(None))
            .await
            .is_ok()
        {
            finish_close(ws).await;
        }
    }

    /// Turns a server push into an event.
    fn dispatch_push(&self, frame: ServerFrame) {
        let event = match frame {
            ServerFrame::Deliver {
                kind,
                from,
                payload,
                sent_at,
                mailbox_id,
            } => {
                let ack = match (mailbox_id, self.handle.upgrade()) {
                    (Some(mailbox_id), Some(client)) => Some(AckHandle { mailbox_id, client }),
                    _ => None,
                };
                Event::Incoming(Incoming {
                    kind,
                    from,
                    payload,
                    sent_at,
                    ack,
                })
            }
            ServerFrame::PresenceUpdate { user, status } => Event::Presence { user, status },
            ServerFrame::OneTimeKeysLow {
                remaining,
                threshold,
            } => Event::OneTimeKeysLow {
                remaining,
                threshold,
            },
            ServerFrame::Error {
                id: None,
                code,
                message,
            } => Event::ServerNotice { code, message },
            _ => return,
        };
        let _ = self.events.send(event);
    }
}

fn answer_id(frame: &ServerFrame) -> Option<RequestId> {
    match frame {
        ServerFrame::Ok { id }
        | ServerFrame::Pong { id }
        | ServerFrame::BundlePublished { id, .. }
        | ServerFrame::Bundles { id, .. }
        | ServerFrame::RelayResult { id, .. }
        | ServerFrame::ContactsSynced { id, .. } => Some(*id),
        ServerFrame::Error { id, .. } => *id,
        _ => None,
    }
}

async fn next_frame(ws: &mut Ws) -> Result<ServerFrame, Option<ErrorCode>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return ServerFrame::parse(t.as_str()).map_err(|_| None);
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(None),
            Some(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_status_summarises() {
        let d = DeviceId::from_random([1; 16]);
        let mut o = RelayOutcome {
            delivered: vec![d.clone()],
            queued: vec![],
            refused: vec![],
        };
        assert_eq!(o.status(), RelayStatus::Delivered);
        o.queued.push(d.clone());
        assert_eq!(o.status(), RelayStatus::Stored);
        o.refused.push(Refusal {
            device: d,
            code: ErrorCode::MailboxFull,
        });
        assert_eq!(o.status(), RelayStatus::Partial);
    }
}
