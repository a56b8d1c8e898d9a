//! The embedded TURN relay (off by default): turn-server-proto's sans-IO server behind real
//! sockets.
//!
//! Task topology: one actor owns the protocol state (one `TurnServer` per listener: UDP, TCP,
//! TLS) and every relay socket; small reader tasks (the UDP listener, one per TCP/TLS client,
//! one per relay socket) send it what they read through one bounded channel. The actor writes
//! UDP directly and TCP through a bounded queue per client.
//!
//! Our policy sits in front of the library, on every message from a client:
//! - credentials: the TURN REST scheme. A user name `"<unix expiry>:<opaque>"` that has not
//!   expired is added to the library's users with password base64(HMAC-SHA1(secret, name));
//!   anything else stays unknown, so the library answers 401. Requests under a name that expired
//!   after it was accepted are dropped (the client's refresh fails and it allocates again with
//!   the credentials of its next login).
//! - peers: CreatePermission and ChannelBind naming a peer outside public unicast (and outside
//!   `allow_peers`) are answered 403 and never reach the library; Send indications to such peers
//!   are dropped; relay sockets neither send to nor accept from them.
//! - quotas: allocations in total and per user (the opaque id maps to the user who logged in),
//!   bytes per second per allocation and in total (token buckets; excess is dropped like any
//!   lost datagram).
//! - Binding requests on the UDP listener are answered directly (it doubles as the STUN
//!   server).
//!
//! Nothing here logs an address or a credential above debug level.

mod framing;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dopus_proto::signaling::IceServerInfo;
use dopus_types::UserId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use turn_server_proto::api::{
    SocketAllocateError, TcpConnectError, TurnServerApi, TurnServerPollRet,
};
use turn_server_proto::server::TurnServer;
use turn_server_proto::types::attribute::XorPeerAddress;
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, SEND};
use turn_server_proto::types::stun::attribute::{ErrorCode, Username};
use turn_server_proto::types::stun::message::{
    Message, MessageClass, MessageWrite, MessageWriteVec,
};
use turn_server_proto::types::stun::prelude::{AttributeStaticType, MessageWriteExt};
use turn_server_proto::types::{AddressFamily, Instant as TurnInstant, TransportType};

use crate::config::TurnSettings;
use crate::metrics::Metrics;

/// TCP/TLS client connections at once.
const MAX_TCP_CLIENTS: usize = 4096;
/// Bytes waiting to be written to one TCP client before further ones are dropped.
const TCP_QUEUE: usize = 512;
/// Logins remembered for per-user quotas; the oldest expired ones go first.
const MAX_LOGINS: usize = 200_000;

/// The credentials side, shared with the signaling hub: issues REST credentials at login and
/// remembers which user each opaque id belongs to (for per-user quotas only).
#[derive(Debug)]
pub(crate) struct TurnAuth {
    secret: Vec<u8>,
    ttl: Duration,
    urls: Mutex<Vec<String>>,
    logins: Mutex<HashMap<String, (UserId, u64)>>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// base64(HMAC-SHA1(secret, username)), the TURN REST password (coturn's `use-auth-secret`).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    use base64::Engine as _;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = aws_lc_rs::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// The expiry and opaque id of a REST user name: `"<expiry>:<opaque>"`, or a bare `"<expiry>"`
/// (coturn accepts both; ours always carry an opaque part).
fn parse_username(name: &str) -> Option<(u64, &str)> {
    let (expiry, opaque) = name.split_once(':').unwrap_or((name, ""));
    let expiry = expiry.parse().ok()?;
    (opaque.len() <= 64 && name.len() <= 128).then_some((expiry, opaque))
}

impl TurnAuth {
    pub(crate) fn new(secret: Vec<u8>, settings: &TurnSettings, urls: Vec<String>) -> Self {
        Self {
            secret,
            ttl: settings.credential_ttl,
            urls: Mutex::new(urls),
            logins: Mutex::new(HashMap::new()),
        }
    }

    /// Fresh credentials for one login of `user`: a random opaque id, never the user id.
    pub(crate) fn issue(&self, user: UserId) -> Option<IceServerInfo> {
        let mut opaque = [0u8; 12];
        getrandom::fill(&mut opaque).ok()?;
        let opaque: String = opaque.iter().map(|b| format!("{b:02x}")).collect();
        let now = unix_now();
        let expiry = now + self.ttl.as_secs();
        let username = format!("{expiry}:{opaque}");
        let credential = rest_password(&self.secret, &username);
        if let Ok(mut logins) = self.logins.lock() {
            if logins.len() >= MAX_LOGINS {
                logins.retain(|_, (_, exp)| *exp > now);
            }
            if logins.len() < MAX_LOGINS {
                logins.insert(opaque, (user, expiry));
            }
        }
        Some(IceServerInfo {
            urls: self.urls.lock().map(|u| u.clone()).unwrap_or_default(),
            username: Some(username),
            credential: Some(credential),
            ttl_secs: Some(self.ttl.as_secs()),
        })
    }

    pub(crate) fn set_urls(&self, urls: Vec<String>) {
        if let Ok(mut u) = self.urls.lock() {
            *u = urls;
        }
    }

    fn user_of(&self, opaque: &str) -> Option<UserId> {
        self.logins
            .lock()
            .ok()
            .and_then(|l| l.get(opaque).map(|(u, _)| *u))
    }
}

/// Whether the relay may talk to `ip`: public unicast, or inside an allowed network.
pub(crate) fn peer_allowed(ip: IpAddr, allow: &[crate::config::Cidr]) -> bool {
    if allow.iter().any(|c| c.contains(ip)) {
        return true;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64/10 shared (CGNAT)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80) // link local
        }
    }
}

/// A token bucket in bytes per second, one second of burst.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate: rate as f64,
            tokens: rate as f64,
            at: now,
        }
    }

    fn take(&mut self, n: usize, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate.max(2048.0));
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Udp,
    Tcp,
    Tls,
}

struct Listener {
    kind: Kind,
    addr: SocketAddr,
    proto: TurnServer,
}

struct Allocation {
    socket: Arc<UdpSocket>,
    listener: usize,
    user: Option<UserId>,
    bucket: Bucket,
    reader: tokio::task::JoinHandle<()>,
}

/// What the reader tasks send the actor.
#[derive(Debug)]
enum In {
    Udp {
        from: SocketAddr,
        data: Vec<u8>,
    },
    TcpOpen {
        listener: usize,
        client: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    Tcp {
        listener: usize,
        client: SocketAddr,
        data: Vec<u8>,
    },
    TcpClosed {
        listener: usize,
        client: SocketAddr,
    },
    Relay {
        relayed: SocketAddr,
        from: SocketAddr,
        data: Vec<u8>,
    },
}

/// Where the relay listens, for the start-up line and tests.
#[derive(Debug, Clone, Copy)]
pub struct TurnAddrs {
    /// UDP and TCP.
    pub listen: SocketAddr,
    /// TLS, when on.
    pub tls: Option<SocketAddr>,
}

/// How many ephemeral ports to try for a UDP port whose number is free for TCP too.
const SAME_PORT_TRIES: usize = 32;

/// The relay's UDP socket (given, or bound at `listen`) and a TCP listener on the same port.
/// With port 0 the kernel picks the UDP port, and that number may be taken for TCP by someone
/// else: then another UDP port is tried, up to [`SAME_PORT_TRIES`] times.
async fn bind_udp_and_tcp(
    listen: SocketAddr,
    given: Option<UdpSocket>,
) -> std::io::Result<(UdpSocket, TcpListener)> {
    if let Some(udp) = given {
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        return Ok((udp, tcp));
    }
    let tries = if listen.port() == 0 {
        SAME_PORT_TRIES
    } else {
        1
    };
    let mut last = None;
    for _ in 0..tries {
        let udp = UdpSocket::bind(listen).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse)))
}

/// Binds the listeners and starts the actor. `udp` is an already bound UDP socket to use (the
/// STUN socket when they share an address).
pub(crate) async fn start(
    settings: TurnSettings,
    auth: Arc<TurnAuth>,
    udp: Option<UdpSocket>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: Arc<Metrics>,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) -> std::io::Result<TurnAddrs> {
    let (udp, tcp) = bind_udp_and_tcp(settings.listen, udp).await?;
    let udp_addr = udp.local_addr()?;
    let tls_listener = match (settings.tls_listen, &tls) {
        (Some(a), Some(_)) => Some(TcpListener::bind(a).await?),
        _ => None,
    };
    let tls_addr = match &tls_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let (tx, rx) = mpsc::channel::<In>(4096);
    let udp = Arc::new(udp);
    let mut listeners = vec![Listener {
        kind: Kind::Udp,
        addr: udp_addr,
        proto: TurnServer::new(TransportType::Udp, udp_addr, settings.realm.clone()),
    }];
    listeners.push(Listener {
        kind: Kind::Tcp,
        addr: udp_addr,
        proto: TurnServer::new(TransportType::Tcp, udp_addr, settings.realm.clone()),
    });
    if let Some(a) = tls_addr {
        listeners.push(Listener {
            kind: Kind::Tls,
            addr: a,
            proto: TurnServer::new(TransportType::Tcp, a, settings.realm.clone()),
        });
    }
    // UDP reader.
    {
        let udp = udp.clone();
        let tx = tx.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let r = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = udp.recv_from(&mut buf) => r,
                };
                let Ok((n, from)) = r else { continue };
                let data = buf.get(..n).unwrap_or_default().to_vec();
                if tx.send(In::Udp { from, data }).await.is_err() {
                    return;
                }
            }
        });
    }
    tasks.spawn(accept_loop(tcp, 1, None, tx.clone(), shutdown.clone()));
    if let (Some(l), Some(acceptor)) = (tls_listener, tls) {
        tasks.spawn(accept_loop(
            l,
            2,
            Some(acceptor),
            tx.clone(),
            shutdown.clone(),
        ));
    }
    let actor = Actor {
        epoch: Instant::now(),
        settings,
        auth,
        metrics,
        udp,
        listeners,
        tcp_writers: HashMap::new(),
        allocations: HashMap::new(),
        per_user: HashMap::new(),
        pending_user: HashMap::new(),
        known_users: HashSet::new(),
        total: None,
        next_port: 0,
        tx,
    };
    tasks.spawn(actor.run(rx, shutdown));
    Ok(TurnAddrs {
        listen: udp_addr,
        tls: tls_addr,
    })
}

async fn accept_loop(
    listener: TcpListener,
    index: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tx: mpsc::Sender<In>,
    shutdown: CancellationToken,
) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, client)) = accepted else {
            continue;
        };
        if open.load(std::sync::atomic::Ordering::Relaxed) >= MAX_TCP_CLIENTS {
            continue; // dropped: the client retries or falls back
        }
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        let tls = tls.clone();
        let open = open.clone();
        let shutdown = shutdown.clone();
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(s)) = handshake.await {
                        serve_stream(s, index, client, tx, shutdown).await;
                    }
                }
                None => serve_stream(stream, index, client, tx, shutdown).await,
            }
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

async fn serve_stream<S>(
    stream: S,
    listener: usize,
    client: SocketAddr,
    tx: mpsc::Sender<In>,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
    if tx
        .send(In::TcpOpen {
            listener,
            client,
            writer: wtx,
        })
        .await
        .is_err()
    {
        return;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16_384];
    // Learns whether this client pads ChannelData (RFC 8656 §12.5) and frames both ways to match.
    let mut framing = framing::Framing::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = rd.read(&mut chunk) => {
                let n = match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                let mut broken = false;
                loop {
                    match framing.next_message(&mut buf) {
                        Ok(Some(data)) => {
                            if tx.send(In::Tcp { listener, client, data }).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(framing::Broken) => {
                            broken = true;
                            break;
                        }
                    }
                }
                if broken {
                    tracing::debug!(listener, "TURN stream closed: not TURN framing");
                    break;
                }
            }
            w = wrx.recv() => match w {
                Some(data) => {
                    if wr.write_all(&framing.frame_out(data)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = tx.send(In::TcpClosed { listener, client }).await;
}

struct Actor {
    epoch: Instant,
    settings: TurnSettings,
    auth: Arc<TurnAuth>,
    metrics: Arc<Metrics>,
    udp: Arc<UdpSocket>,
    listeners: Vec<Listener>,
    tcp_writers: HashMap<(usize, SocketAddr), mpsc::Sender<Vec<u8>>>,
    allocations: HashMap<SocketAddr, Allocation>,
    per_user: HashMap<UserId, usize>,
    /// The opaque id of the last Allocate from each client, until its socket is made.
    pending_user: HashMap<(usize, SocketAddr), String>,
    /// REST user names handed to the library (it cannot forget them; see the module docs).
    known_users: HashSet<String>,
    total: Option<Bucket>,
    next_port: u32,
    tx: mpsc::Sender<In>,
}

impl Actor {
    fn t(&self) -> TurnInstant {
        let nanos = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos();
        TurnInstant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<In>, shutdown: CancellationToken) {
        loop {
            let wait = self.poll_all().await;
            let input = tokio::select! {
                _ = shutdown.cancelled() => break,
                i = rx.recv() => i,
                () = tokio::time::sleep(wait) => continue,
            };
            let Some(input) = input else { break };
            self.on_input(input).await;
        }
        for (_, a) in self.allocations.drain() {
            a.reader.abort();
        }
    }

    async fn on_input(&mut self, input: In) {
        match input {
            In::Udp { from, data } => {
                if let Ok(tid) = dopus_proto::stun::parse_binding_request(&data) {
                    let reply = dopus_proto::stun::binding_success(tid, from);
                    if self.udp.send_to(&reply, from).await.is_ok() {
                        Metrics::inc(&self.metrics.stun_requests_total);
                    }
                    return;
                }
                self.on_client(0, from, data).await;
            }
            In::TcpOpen {
                listener,
                client,
                writer,
            } => {
                self.tcp_writers.insert((listener, client), writer);
            }
            In::Tcp {
                listener,
                client,
                data,
            } => self.on_client(listener, client, data).await,
            In::TcpClosed { listener, client } => {
                self.tcp_writers.remove(&(listener, client));
                self.pending_user.remove(&(listener, client));
            }
            In::Relay {
                relayed,
                from,
                data,
            } => self.on_peer(relayed, from, data).await,
        }
    }

    /// Policy checks, then the library.
    async fn on_client(&mut self, idx: usize, client: SocketAddr, data: Vec<u8>) {
        let Some(listen) = self.listeners.get(idx).map(|l| l.addr) else {
            return;
        };
        if let Ok(msg) = Message::from_bytes(&data) {
            if let Ok(user) = msg.attribute::<Username>() {
                let name = user.username().to_owned();
                match parse_username(&name) {
                    Some((expiry, opaque)) if expiry > unix_now() => {
                        if !self.known_users.contains(&name) {
                            let password = rest_password(&self.auth.secret, &name);
                            if let Some(l) = self.listeners.get_mut(idx) {
                                l.proto.add_user(name.clone(), password.clone());
                            }
                            // A client may move between listeners (UDP, then TCP).
                            for l in &mut self.listeners {
                                l.proto.add_user(name.clone(), password.clone());
                            }
                            self.known_users.insert(name.clone());
                        }
                        if msg.has_method(ALLOCATE) && msg.has_class(MessageClass::Request) {
                            self.pending_user.insert((idx, client), opaque.to_owned());
                        }
                    }
                    _ if self.known_users.contains(&name) => {
                        // Accepted once, expired since: refuse by silence (module docs).
                        Metrics::inc(&self.metrics.turn_refused_total);
                        return;
                    }
                    // Unknown to the library: it answers 401.
                    _ => Metrics::inc(&self.metrics.turn_refused_total),
                }
            }
            let peer_checked = (msg.has_method(CREATE_PERMISSION) || msg.has_method(CHANNEL_BIND))
                && msg.has_class(MessageClass::Request);
            let is_send = msg.has_method(SEND) && msg.has_class(MessageClass::Indication);
            if peer_checked || is_send {
                let tid = msg.transaction_id();
                let forbidden = msg
                    .iter_attributes()
                    .filter(|(_, raw)| raw.header.get_type() == XorPeerAddress::TYPE)
                    .filter_map(|(_, raw)| XorPeerAddress::try_from(&raw).ok())
                    .any(|a| !peer_allowed(a.addr(tid).ip(), &self.settings.allow_peers));
                if forbidden {
                    Metrics::inc(&self.metrics.turn_refused_total);
                    if peer_checked {
                        let mut reply = Message::builder_error(&msg, MessageWriteVec::new());
                        if let Ok(code) = ErrorCode::new(ErrorCode::FORBIDDEN, "Forbidden") {
                            let _ = reply.add_attribute(&code);
                        }
                        let reply = reply.finish();
                        self.send_client(idx, client, reply).await;
                    }
                    return;
                }
            }
        }
        let t = self.t();
        let transport = match self.listeners.get(idx).map(|l| l.kind) {
            Some(Kind::Udp) => TransportType::Udp,
            _ => TransportType::Tcp,
        };
        let transmit = turn_server_proto::api::Transmit::new(data, transport, client, listen);
        let out = match self.listeners.get_mut(idx) {
            Some(l) => l.proto.recv(transmit, t).map(|o| o.build()),
            None => None,
        };
        if let Some(out) = out {
            self.route(idx, out.from, out.to, out.data).await;
        }
    }

    async fn on_peer(&mut self, relayed: SocketAddr, from: SocketAddr, data: Vec<u8>) {
        if !peer_allowed(from.ip(), &self.settings.allow_peers) {
            Metrics::inc(&self.metrics.turn_refused_total);
            return;
        }
        let now = Instant::now();
        let Some(a) = self.allocations.get_mut(&relayed) else {
            return;
        };
        if !a.bucket.take(data.len(), now)
            || !self
                .total
                .get_or_insert_with(|| Bucket::new(self.settings.total_bytes_per_sec, now))
                .take(data.len(), now)
        {
            Metrics::inc(&self.metrics.turn_dropped_total);
            return;
        }
        let idx = a.listener;
        let len = data.len() as u64;
        let t = self.t();
        let transmit =
            turn_server_proto::api::Transmit::new(data, TransportType::Udp, from, relayed);
        let out = match self.listeners.get_mut(idx) {
            Some(l) => l.proto.recv(transmit, t).map(|o| o.build()),
            None => None,
        };
        if let Some(out) = out {
            self.metrics
                .turn_relayed_bytes_total
                .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
            Metrics::inc(&self.metrics.turn_relayed_packets_total);
            self.route(idx, out.from, out.to, out.data).await;
        }
    }

    /// Sends what the library produced: to a peer from a relay socket, or to a client.
    async fn route(&mut self, idx: usize, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if let Some(a) = self.allocations.get_mut(&from) {
            if !peer_allowed(to.ip(), &self.settings.allow_peers) {
                Metrics::inc(&self.metrics.turn_refused_total);
                return;
            }
            let now = Instant::now();
            if !a.bucket.take(data.len(), now)
                || !self
                    .total
                    .get_or_insert_with(|| Bucket::new(self.settings.total_bytes_per_sec, now))
                    .take(data.len(), now)
            {
                Metrics::inc(&self.metrics.turn_dropped_total);
                return;
            }
            if a.socket.send_to(&data, to).await.is_ok() {
                self.metrics
                    .turn_relayed_bytes_total
                    .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Metrics::inc(&self.metrics.turn_relayed_packets_total);
            }
            return;
        }
        self.send_client(idx, to, data).await;
    }

    async fn send_client(&mut self, idx: usize, client: SocketAddr, data: Vec<u8>) {
        match self.listeners.get(idx).map(|l| l.kind) {
            Some(Kind::Udp) => {
                let _ = self.udp.send_to(&data, client).await;
            }
            Some(Kind::Tcp | Kind::Tls) => {
                if let Some(w) = self.tcp_writers.get(&(idx, client)) {
                    let _ = w.try_send(data);
                }
            }
            None => {}
        }
    }

    /// Drives every listener's library state: sends, socket requests, timers. Returns how long
    /// to sleep at most.
    async fn poll_all(&mut self) -> Duration {
        let mut wait = Duration::from_secs(1);
        for idx in 0..self.listeners.len() {
            for _ in 0..10_000 {
                let t = self.t();
                let Some(l) = self.listeners.get_mut(idx) else {
                    break;
                };
                if let Some(out) = l.proto.poll_transmit(t) {
                    self.route(idx, out.from, out.to, out.data).await;
                    continue;
                }
                let Some(l) = self.listeners.get_mut(idx) else {
                    break;
                };
                match l.proto.poll(t) {
                    TurnServerPollRet::WaitUntil(at) => {
                        let d = at.saturating_duration_since(t);
                        wait = wait.min(d.max(Duration::from_millis(5)));
                        break;
                    }
                    TurnServerPollRet::AllocateSocket {
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                    } => {
                        let result = self
                            .allocate(idx, client_addr, allocation_transport, family)
                            .await;
                        let t = self.t();
                        if let Some(l) = self.listeners.get_mut(idx) {
                            l.proto.allocated_socket(
                                transport,
                                listen_addr,
                                client_addr,
                                allocation_transport,
                                family,
                                result,
                                t,
                            );
                        }
                    }
                    TurnServerPollRet::SocketClose {
                        transport: _,
                        listen_addr,
                    } => self.release(listen_addr),
                    TurnServerPollRet::TcpConnect {
                        relayed_addr,
                        peer_addr,
                        listen_addr,
                        client_addr,
                    } => {
                        // TCP allocations (RFC 6062) are not offered.
                        let t = self.t();
                        if let Some(l) = self.listeners.get_mut(idx) {
                            l.proto.tcp_connected(
                                relayed_addr,
                                peer_addr,
                                listen_addr,
                                client_addr,
                                Err(TcpConnectError::Forbidden),
                                t,
                            );
                        }
                    }
                    TurnServerPollRet::TcpClose { .. } => {}
                }
            }
        }
        wait
    }

    async fn allocate(
        &mut self,
        idx: usize,
        client: SocketAddr,
        transport: TransportType,
        family: AddressFamily,
    ) -> Result<SocketAddr, SocketAllocateError> {
        let refuse = |m: &Metrics, e| {
            Metrics::inc(&m.turn_refused_total);
            Err(e)
        };
        let want_v4 = family == AddressFamily::IPV4;
        if transport != TransportType::Udp || want_v4 != self.settings.relay_ip.is_ipv4() {
            return refuse(
                &self.metrics,
                SocketAllocateError::AddressFamilyNotSupported,
            );
        }
        if self.allocations.len() >= self.settings.max_allocations {
            return refuse(&self.metrics, SocketAllocateError::InsufficientCapacity);
        }
        let user = self
            .pending_user
            .remove(&(idx, client))
            .and_then(|opaque| self.auth.user_of(&opaque));
        if let Some(u) = user
            && self.per_user.get(&u).copied().unwrap_or(0) >= self.settings.max_allocations_per_user
        {
            return refuse(&self.metrics, SocketAllocateError::InsufficientCapacity);
        }
        let Some(socket) = self.bind_relay().await else {
            return refuse(&self.metrics, SocketAllocateError::InsufficientCapacity);
        };
        let Ok(relayed) = socket.local_addr() else {
            return refuse(&self.metrics, SocketAllocateError::InsufficientCapacity);
        };
        let socket = Arc::new(socket);
        let reader = {
            let socket = socket.clone();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                        continue;
                    };
                    let data = buf.get(..n).unwrap_or_default().to_vec();
                    if tx
                        .send(In::Relay {
                            relayed,
                            from,
                            data,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        };
        if let Some(u) = user {
            *self.per_user.entry(u).or_insert(0) += 1;
        }
        self.allocations.insert(
            relayed,
            Allocation {
                socket,
                listener: idx,
                user,
                bucket: Bucket::new(self.settings.allocation_bytes_per_sec, Instant::now()),
                reader,
            },
        );
        Metrics::inc(&self.metrics.turn_allocations_total);
        self.metrics.turn_allocations.store(
            self.allocations.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(relayed)
    }

    /// A relay socket from the configured range (port 0 in the range means "any").
    async fn bind_relay(&mut self) -> Option<UdpSocket> {
        let (lo, hi) = self.settings.ports;
        if lo == 0 {
            return UdpSocket::bind(SocketAddr::new(self.settings.relay_ip, 0))
                .await
                .ok();
        }
        let span = u32::from(hi) - u32::from(lo) + 1;
        for _ in 0..span.min(256) {
            let port = lo as u32 + self.next_port % span;
            self.next_port = self.next_port.wrapping_add(1);
            let port = u16::try_from(port).unwrap_or(lo);
            if let Ok(s) = UdpSocket::bind(SocketAddr::new(self.settings.relay_ip, port)).await {
                return Some(s);
            }
        }
        None
    }

    fn release(&mut self, relayed: SocketAddr) {
        if let Some(a) = self.allocations.remove(&relayed) {
            a.reader.abort();
            if let Some(u) = a.user
                && let Some(n) = self.per_user.get_mut(&u)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_user.remove(&u);
                }
            }
        }
        self.metrics.turn_allocations.store(
            self.allocations.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// The URLs handed to clients when none are configured.
pub(crate) fn default_urls(settings: &TurnSettings, addrs: &TurnAddrs) -> Vec<String> {
    let host = match settings.relay_ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let port = addrs.listen.port();
    let mut urls = vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ];
    if let (Some(tls), Some(name)) = (addrs.tls, &settings.tls_host) {
        urls.push(format!("turns:{name}:{}?transport=tcp", tls.port()));
    }
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_coturn() {
        // coturn: base64(HMAC-SHA1(static-auth-secret, username)), standard alphabet, padded.
        // Reference value computed with `openssl dgst -sha1 -hmac secret -binary | base64`.
        let p = rest_password(b"secret", "1700000000:abc");
        assert_eq!(p.len(), 28);
        assert!(p.ends_with('='));
        assert_eq!(p, rest_password(b"secret", "1700000000:abc"));
        assert_ne!(p, rest_password(b"other", "1700000000:abc"));
    }

    #[test]
    fn usernames_parse() {
        assert_eq!(
            parse_username("1700000000:abc"),
            Some((1_700_000_000, "abc"))
        );
        assert_eq!(parse_username("abc"), None);
        assert_eq!(parse_username("x:abc"), None);
        assert_eq!(parse_username("1700000000"), Some((1_700_000_000, "")));
    }

    #[test]
    fn only_public_unicast_peers_by_default() {
        let none: &[crate::config::Cidr] = &[];
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!peer_allowed(ip.parse().unwrap(), none), "{ip}");
        }
        for ip in ["8.8.8.8", "203.0.113.9", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(peer_allowed(ip.parse().unwrap(), none), "{ip}");
        }
        let lan = ["192.168.0.0/16".parse().unwrap()];
        assert!(peer_allowed("192.168.1.1".parse().unwrap(), &lan));
        assert!(!peer_allowed("10.0.0.1".parse().unwrap(), &lan));
    }

    #[tokio::test]
    async fn udp_and_tcp_share_a_port_and_a_given_socket_whose_tcp_port_is_taken_is_an_error() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (udp, tcp) = bind_udp_and_tcp(listen, None).await.unwrap();
        assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        // A given socket whose port is taken for TCP: a clear error, not a panic.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        if let Ok(u) = UdpSocket::bind(("127.0.0.1", port)).await {
            let err = bind_udp_and_tcp(listen, Some(u)).await.err().unwrap();
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        }
    }
}
