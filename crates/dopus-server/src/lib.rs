#![doc = include_str!("../README.md")]

pub mod backend;
pub mod clock;
pub mod config;
mod connection;
mod http;
mod hub;
pub mod metrics;
mod outbox;
mod ratelimit;
mod stun;
pub mod tls;
pub mod turn;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Cidr, Config, LimitsConfig, TlsFiles, TurnSettings};

use backend::Backends;
use backend::memory::{LocalBus, MemoryPresence};
use backend::sqlite::SqliteStore;
use metrics::Metrics;
use outbox::LocalConnections;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A socket could not be bound or the data directory not used.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] backend::StoreError),
    /// The TLS certificate or key could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
}

/// A started server; dropping it does not stop it, [`RunningServer::shutdown`] does.
#[derive(Debug)]
pub struct RunningServer {
    /// Where the HTTP/WebSocket listener is bound.
    pub addr: SocketAddr,
    /// Where the STUN responder is bound, if enabled.
    pub stun_addr: Option<SocketAddr>,
    /// Where the embedded TURN relay listens, if enabled.
    pub turn_addrs: Option<turn::TurnAddrs>,
    /// The id signed into logins.
    pub server_id: String,
    /// Whether clients must use `wss://`.
    pub tls: bool,
    /// The live counters.
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
    grace: Duration,
}

impl RunningServer {
    /// The WebSocket URL clients connect to.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://{}{}",
            self.addr,
            dopus_proto::signaling::WS_PATH
        )
    }

    /// The base HTTP URL (for `/healthz` and `/metrics`).
    pub fn http_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, closes every connection with "going away" (each broadcasts its
    /// offline presence), and waits up to the grace period for them to finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + self.grace;
        while self.metrics.connections.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.tasks.close();
        let _ = tokio::time::timeout_at(deadline, self.tasks.wait()).await;
    }
}

fn random_hex(n: usize) -> Result<String, std::io::Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn server_id(config: &Config) -> Result<String, std::io::Error> {
    if let Some(id) = &config.server_id {
        return Ok(id.clone());
    }
    let path = config.data_dir.join("server_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = random_hex(16)?;
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// Starts a server with the system clock.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Starts a server reading time from `clock` (tests move it to expire things).
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, ServerError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let server_id = server_id(&config)?;
    let node: Arc<str> = random_hex(8)?.into();
    let metrics = Arc::new(Metrics::default());
    let local = Arc::new(LocalConnections::default());
    let shutdown = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let backends = match &config.redis {
        Some(url) => backend::redis::RedisBackend::connect(
            url,
            node.clone(),
            local.clone(),
            &tasks,
            shutdown.clone(),
        )
        .await?
        .backends(),
        None => {
            let store = Arc::new(SqliteStore::open(&config.data_dir)?);
            Backends {
                directory: store.clone(),
                mailbox: store,
                presence: Arc::new(MemoryPresence::default()),
                bus: Arc::new(LocalBus::new(local.clone())),
            }
        }
    };
    let mut hub = hub::Hub::new(
        node,
        server_id.clone(),
        backends,
        local,
        clock,
        config.limits.clone(),
        metrics.clone(),
    );
    let tls = match &config.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(files)?)),
        None => None,
    };
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let mut stun_addr = None;
    let mut stun_socket = match config.stun_listen {
        Some(stun_listen) => {
            let socket = UdpSocket::bind(stun_listen).await?;
            stun_addr = Some(socket.local_addr()?);
            Some(socket)
        }
        None => None,
    };
    let mut turn_addrs = None;
    if let Some(settings) = &config.turn {
        // The relay's UDP socket answers STUN too; share it when the addresses are the same.
        let shared = match (&stun_socket, config.stun_listen) {
            (Some(_), Some(s)) if s == settings.listen => stun_socket.take(),
            _ => None,
        };
        let secret = turn_secret(&config, settings)?;
        let addrs_auth = Arc::new(turn::TurnAuth::new(secret.clone(), settings, Vec::new()));
        let addrs = turn::start(
            settings.clone(),
            addrs_auth.clone(),
            shared,
            tls.clone(),
            metrics.clone(),
            &tasks,
            shutdown.clone(),
        )
        .await?;
        let urls = if settings.urls.is_empty() {
            turn::default_urls(settings, &addrs)
        } else {
            settings.urls.clone()
        };
        // The actor and the hub share the login book; the URLs are only for the hub's answers.
        addrs_auth.set_urls(urls);
        hub.turn = Some(addrs_auth);
        turn_addrs = Some(addrs);
    }
    if let Some(socket) = stun_socket {
        tasks.spawn(stun::serve(socket, metrics.clone(), shutdown.clone()));
    }
    let hub = Arc::new(hub);
    let state = Arc::new(http::AppState {
        hub: hub.clone(),
        per_ip: Default::default(),
        shutdown: shutdown.clone(),
    });
    tasks.spawn(http::accept_loop(
        listener,
        tls.clone(),
        http::router(state),
        shutdown.clone(),
    ));
    tasks.spawn(purge_loop(hub, shutdown.clone()));
    tracing::info!(%addr, tls = tls.is_some(), stun = ?stun_addr, turn = turn_addrs.is_some(), "listening");
    Ok(RunningServer {
        addr,
        stun_addr,
        turn_addrs,
        server_id,
        tls: tls.is_some(),
        metrics,
        shutdown,
        tasks,
        grace: config.shutdown_grace,
    })
}

/// The TURN REST shared secret: configured, or random and kept in `data_dir/turn_secret`.
fn turn_secret(config: &Config, settings: &TurnSettings) -> Result<Vec<u8>, std::io::Error> {
    if let Some(s) = &settings.secret {
        return Ok(s.as_bytes().to_vec());
    }
    let path = config.data_dir.join("turn_secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().as_bytes().to_vec()),
        _ => {
            let s = random_hex(32)?;
            std::fs::write(&path, &s)?;
            Ok(s.into_bytes())
        }
    }
}

/// Deletes expired mailbox items, devices unseen for a mailbox TTL and contact lists kept past
/// theirs, every minute.
async fn purge_loop(hub: Arc<hub::Hub>, shutdown: CancellationToken) {
    let ttl = u64::try_from(hub.limits.mailbox_ttl.as_millis()).unwrap_or(u64::MAX);
    loop {
        match hub.backends.mailbox.purge(hub.now(), ttl).await {
            Ok(n) if n > 0 => tracing::info!(items = n, "expired mailbox items deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "mailbox purge failed"),
        }
        if let Err(e) = hub.backends.presence.prune_contacts(hub.now()).await {
            tracing::warn!(error = %e, "contact list pruning failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}
