//! Configuration from flags, the environment and a TOML file.
//!
//! Precedence, highest first: command-line flags, environment variables (`DOPUS_SERVER_*`),
//! the TOML file (`--config PATH`), built-in defaults. Every key has all three spellings: flag
//! `--mailbox-ttl-secs`, variable `DOPUS_SERVER_MAILBOX_TTL_SECS`, TOML key `mailbox_ttl_secs`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP/WebSocket listener binds.
    pub listen: SocketAddr,
    /// Where the SQLite database and the server id live.
    pub data_dir: PathBuf,
    /// The id signed into logins; default: random, persisted in `data_dir/server_id`.
    pub server_id: Option<String>,
    /// Share presence, routing, mailbox and key directory through this Redis server.
    pub redis: Option<String>,
    /// TLS certificate chain and private key (PEM files); plain `ws` when absent.
    pub tls: Option<TlsFiles>,
    /// UDP address for STUN; `None` disables STUN.
    pub stun_listen: Option<SocketAddr>,
    /// Limits and timers.
    pub limits: LimitsConfig,
    /// How long shutdown waits for connections to close.
    pub shutdown_grace: Duration,
    /// The embedded TURN relay; `None` (the default) leaves it off.
    pub turn: Option<TurnSettings>,
}

/// The embedded TURN server (docs/connectivity.md): UDP and TCP on `listen`, TLS on
/// `tls_listen` with the server's certificate, relay sockets on `relay_ip` from `ports`, TURN
/// REST credentials handed out at login.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// UDP and TCP address (default `0.0.0.0:3478`; the UDP socket also answers STUN when it is
    /// the STUN address).
    pub listen: SocketAddr,
    /// TLS address (default `0.0.0.0:5349` when the server has a certificate), `None` for off.
    pub tls_listen: Option<SocketAddr>,
    /// The address relay sockets are bound on and announced with (must be a concrete address
    /// peers can reach; default: `listen`'s address when it is not a wildcard).
    pub relay_ip: std::net::IpAddr,
    /// Relay ports, inclusive (default 49152-65535).
    pub ports: (u16, u16),
    /// Shared secret for the TURN REST credentials (HMAC-SHA1); `None`: random, persisted in
    /// `data_dir/turn_secret`. Give an external coturn the same value to use it instead.
    pub secret: Option<String>,
    /// Lifetime of handed-out credentials (default 1 h).
    pub credential_ttl: Duration,
    /// The long-term credential realm (default `discordopus`).
    pub realm: String,
    /// URLs handed to clients; empty derives `turn:RELAY_IP:PORT?transport=udp|tcp` (and
    /// `turns:` when `tls_host` is set).
    pub urls: Vec<String>,
    /// Host name in the certificate, for the derived `turns:` URL.
    pub tls_host: Option<String>,
    /// Most allocations in total.
    pub max_allocations: usize,
    /// Most allocations per user (counted over that user's logins).
    pub max_allocations_per_user: usize,
    /// Relayed bytes per second per allocation (both directions together).
    pub allocation_bytes_per_sec: u64,
    /// Relayed bytes per second over all allocations.
    pub total_bytes_per_sec: u64,
    /// Peer networks allowed besides public unicast addresses (private, loopback: for LANs and
    /// tests). Everything else non-public is refused, so the relay is no proxy into its own
    /// network.
    pub allow_peers: Vec<Cidr>,
}

impl TurnSettings {
    /// Loopback settings for tests: everything on 127.0.0.1 with ephemeral ports, loopback
    /// peers allowed, a fixed secret.
    pub fn loopback() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_listen: None,
            relay_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            ports: (0, 0),
            secret: Some("loopback-test-secret".into()),
            credential_ttl: Duration::from_secs(3600),
            realm: "discordopus".into(),
            urls: Vec::new(),
            tls_host: None,
            max_allocations: 1000,
            max_allocations_per_user: 16,
            allocation_bytes_per_sec: 64 * 1024 * 1024,
            total_bytes_per_sec: 256 * 1024 * 1024,
            allow_peers: vec!["127.0.0.0/8".parse().expect("a valid CIDR")],
        }
    }
}

/// An IP network (`192.168.0.0/16`, `fd00::/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: std::net::IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::Invalid(format!("{s:?} is not an IP network (ADDR/PREFIX)"));
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// PKCS#8, PKCS#1 or SEC1 private key.
    pub key: PathBuf,
}

/// Limits and timers; docs/signaling.md lists the defaults.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Longest accepted text frame.
    pub max_frame_bytes: usize,
    /// Longest `payload` / `introduction`.
    pub max_payload_bytes: usize,
    /// Most contacts in one `sync_contacts`.
    pub max_contacts: usize,
    /// Most ids in one `ack`.
    pub max_ack_ids: usize,
    /// Average frames per second per connection.
    pub rate_per_sec: u32,
    /// Burst of frames per connection.
    pub rate_burst: u32,
    /// Most open connections in total.
    pub max_connections: usize,
    /// Most open connections from one IP address (0: no limit).
    pub max_connections_per_ip: usize,
    /// Time a connection has to log in.
    pub auth_timeout: Duration,
    /// Lifetime of a challenge.
    pub challenge_ttl: Duration,
    /// Interval between WebSocket pings.
    pub ping_interval: Duration,
    /// Silence after a ping that closes the connection.
    pub ping_timeout: Duration,
    /// Lifetime of an unacknowledged mailbox item.
    pub mailbox_ttl: Duration,
    /// Most items per device mailbox.
    pub mailbox_max_items: u64,
    /// Most payload bytes per device mailbox.
    pub mailbox_max_bytes: u64,
    /// Percent of a device's mailbox quota one sender may fill when sender and recipient list
    /// each other as contacts (or are the same user).
    pub mailbox_contact_share_percent: u8,
    /// Percent of a device's mailbox quota any other sender may fill.
    pub mailbox_stranger_share_percent: u8,
    /// Most devices kept per user; a login of a further device is refused.
    pub max_devices_per_user: usize,
    /// Fewer one-time keys than this triggers `one_time_keys_low`.
    pub otk_low_threshold: u64,
    /// Frames waiting for one connection before further frames to it are refused.
    pub outbox_capacity: usize,
    /// Bad frames (malformed, unknown, oversized) before the connection is closed.
    pub max_bad_frames: u32,
    /// Rate-limited frames in a row before the connection is closed.
    pub max_rate_violations: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_payload_bytes: 60_000,
            max_contacts: 5_000,
            max_ack_ids: 1_000,
            rate_per_sec: 200,
            rate_burst: 1_000,
            max_connections: 200_000,
            max_connections_per_ip: 256,
            auth_timeout: Duration::from_secs(30),
            challenge_ttl: Duration::from_secs(30),
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(20),
            mailbox_ttl: Duration::from_secs(30 * 24 * 3600),
            mailbox_max_items: 1_000,
            mailbox_max_bytes: 16 * 1024 * 1024,
            mailbox_contact_share_percent: 25,
            mailbox_stranger_share_percent: 5,
            max_devices_per_user: 32,
            otk_low_threshold: 10,
            outbox_capacity: 256,
            max_bad_frames: 50,
            max_rate_violations: 100,
        }
    }
}

impl Config {
    /// Loopback defaults for tests and local use: ephemeral ports, no STUN, no TLS.
    pub fn loopback(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            server_id: None,
            redis: None,
            tls: None,
            stun_listen: None,
            limits: LimitsConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            turn: None,
        }
    }
}

/// Why the configuration could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not valid.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or two values conflict.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Command-line flags (each also read from its environment variable).
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "discordopus-server",
    version,
    about = "The DiscordOpus signaling server"
)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, env = "DOPUS_SERVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address for HTTP/WebSocket (default 0.0.0.0:8080).
    #[arg(long, env = "DOPUS_SERVER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the database and server id (default ./discordopus-server-data).
    #[arg(long, env = "DOPUS_SERVER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Server id signed into logins (default: random, persisted in the data directory).
    #[arg(long, env = "DOPUS_SERVER_SERVER_ID")]
    pub server_id: Option<String>,
    /// Redis URL for scale-out (redis://host:port/db).
    #[arg(long, env = "DOPUS_SERVER_REDIS")]
    pub redis: Option<String>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "DOPUS_SERVER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "DOPUS_SERVER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// UDP address for STUN (default 0.0.0.0:3478), or "off".
    #[arg(long, env = "DOPUS_SERVER_STUN_LISTEN")]
    pub stun_listen: Option<String>,
    /// Log filter (tracing EnvFilter syntax, default "info").
    #[arg(long, env = "DOPUS_SERVER_LOG")]
    pub log: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "DOPUS_SERVER_LOG_JSON")]
    pub log_json: Option<bool>,
    /// Longest accepted text frame in bytes (default 65536).
    #[arg(long, env = "DOPUS_SERVER_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Longest payload or introduction in bytes (default 60000).
    #[arg(long, env = "DOPUS_SERVER_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Most contacts in one sync_contacts (default 5000).
    #[arg(long, env = "DOPUS_SERVER_MAX_CONTACTS")]
    pub max_contacts: Option<usize>,
    /// Average frames per second per connection (default 200).
    #[arg(long, env = "DOPUS_SERVER_RATE_PER_SEC")]
    pub rate_per_sec: Option<u32>,
    /// Burst of frames per connection (default 1000).
    #[arg(long, env = "DOPUS_SERVER_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// Most open connections in total (default 200000).
    #[arg(long, env = "DOPUS_SERVER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most open connections per IP address, 0 for no limit (default 256).
    #[arg(long, env = "DOPUS_SERVER_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds a connection has to log in (default 30).
    #[arg(long, env = "DOPUS_SERVER_AUTH_TIMEOUT_SECS")]
    pub auth_timeout_secs: Option<u64>,
    /// Milliseconds between WebSocket pings (default 20000).
    #[arg(long, env = "DOPUS_SERVER_PING_INTERVAL_MS")]
    pub ping_interval_ms: Option<u64>,
    /// Milliseconds of silence after a ping that close a connection (default 20000).
    #[arg(long, env = "DOPUS_SERVER_PING_TIMEOUT_MS")]
    pub ping_timeout_ms: Option<u64>,
    /// Seconds an unacknowledged mailbox item is kept (default 2592000, 30 days).
    #[arg(long, env = "DOPUS_SERVER_MAILBOX_TTL_SECS")]
    pub mailbox_ttl_secs: Option<u64>,
    /// Most items per device mailbox (default 1000).
    #[arg(long, env = "DOPUS_SERVER_MAILBOX_MAX_ITEMS")]
    pub mailbox_max_items: Option<u64>,
    /// Most payload bytes per device mailbox (default 16777216).
    #[arg(long, env = "DOPUS_SERVER_MAILBOX_MAX_BYTES")]
    pub mailbox_max_bytes: Option<u64>,
    /// Percent of a mailbox one mutual contact may fill (default 25).
    #[arg(long, env = "DOPUS_SERVER_MAILBOX_CONTACT_SHARE_PERCENT")]
    pub mailbox_contact_share_percent: Option<u8>,
    /// Percent of a mailbox any other sender may fill (default 5).
    #[arg(long, env = "DOPUS_SERVER_MAILBOX_STRANGER_SHARE_PERCENT")]
    pub mailbox_stranger_share_percent: Option<u8>,
    /// Most devices kept per user (default 32).
    #[arg(long, env = "DOPUS_SERVER_MAX_DEVICES_PER_USER")]
    pub max_devices_per_user: Option<usize>,
    /// Warn a device when fewer one-time keys than this are left (default 10).
    #[arg(long, env = "DOPUS_SERVER_OTK_LOW_THRESHOLD")]
    pub otk_low_threshold: Option<u64>,
    /// Seconds shutdown waits for connections to drain (default 10).
    #[arg(long, env = "DOPUS_SERVER_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Run the embedded TURN relay (default off).
    #[arg(long, env = "DOPUS_SERVER_TURN", num_args = 0..=1, default_missing_value = "true")]
    pub turn: Option<bool>,
    /// TURN UDP and TCP address (default 0.0.0.0:3478).
    #[arg(long, env = "DOPUS_SERVER_TURN_LISTEN")]
    pub turn_listen: Option<SocketAddr>,
    /// TURN TLS address (default 0.0.0.0:5349 with a certificate), or "off".
    #[arg(long, env = "DOPUS_SERVER_TURN_TLS_LISTEN")]
    pub turn_tls_listen: Option<String>,
    /// Address relay sockets bind and announce (required when turn_listen is a wildcard).
    #[arg(long, env = "DOPUS_SERVER_TURN_RELAY_IP")]
    pub turn_relay_ip: Option<std::net::IpAddr>,
    /// Relay port range MIN-MAX (default 49152-65535).
    #[arg(long, env = "DOPUS_SERVER_TURN_PORTS")]
    pub turn_ports: Option<String>,
    /// Shared secret of the TURN REST credentials (default: random, kept in the data directory).
    #[arg(long, env = "DOPUS_SERVER_TURN_SECRET")]
    pub turn_secret: Option<String>,
    /// Seconds handed-out TURN credentials stay valid (default 3600).
    #[arg(long, env = "DOPUS_SERVER_TURN_CREDENTIAL_TTL_SECS")]
    pub turn_credential_ttl_secs: Option<u64>,
    /// TURN realm (default discordopus).
    #[arg(long, env = "DOPUS_SERVER_TURN_REALM")]
    pub turn_realm: Option<String>,
    /// TURN URLs handed to clients, comma-separated (default: derived from relay IP and ports).
    #[arg(long, env = "DOPUS_SERVER_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Option<Vec<String>>,
    /// Host name of the certificate, for the derived turns: URL.
    #[arg(long, env = "DOPUS_SERVER_TURN_TLS_HOST")]
    pub turn_tls_host: Option<String>,
    /// Most TURN allocations in total (default 10000).
    #[arg(long, env = "DOPUS_SERVER_TURN_MAX_ALLOCATIONS")]
    pub turn_max_allocations: Option<usize>,
    /// Most TURN allocations per user (default 16).
    #[arg(long, env = "DOPUS_SERVER_TURN_MAX_ALLOCATIONS_PER_USER")]
    pub turn_max_allocations_per_user: Option<usize>,
    /// Relayed bytes per second per allocation (default 4194304).
    #[arg(long, env = "DOPUS_SERVER_TURN_ALLOCATION_BYTES_PER_SEC")]
    pub turn_allocation_bytes_per_sec: Option<u64>,
    /// Relayed bytes per second in total (default 104857600).
    #[arg(long, env = "DOPUS_SERVER_TURN_TOTAL_BYTES_PER_SEC")]
    pub turn_total_bytes_per_sec: Option<u64>,
    /// Non-public peer networks the relay may reach, CIDR[,CIDR…] (default none).
    #[arg(long, env = "DOPUS_SERVER_TURN_ALLOW_PEERS", value_delimiter = ',')]
    pub turn_allow_peers: Option<Vec<String>>,
}

/// The TOML file: the same keys as the flags, in snake_case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    server_id: Option<String>,
    redis: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    stun_listen: Option<String>,
    log: Option<String>,
    log_json: Option<bool>,
    max_frame_bytes: Option<usize>,
    max_payload_bytes: Option<usize>,
    max_contacts: Option<usize>,
    rate_per_sec: Option<u32>,
    rate_burst: Option<u32>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    auth_timeout_secs: Option<u64>,
    ping_interval_ms: Option<u64>,
    ping_timeout_ms: Option<u64>,
    mailbox_ttl_secs: Option<u64>,
    mailbox_max_items: Option<u64>,
    mailbox_max_bytes: Option<u64>,
    mailbox_contact_share_percent: Option<u8>,
    mailbox_stranger_share_percent: Option<u8>,
    max_devices_per_user: Option<usize>,
    otk_low_threshold: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    turn: Option<bool>,
    turn_listen: Option<SocketAddr>,
    turn_tls_listen: Option<String>,
    turn_relay_ip: Option<std::net::IpAddr>,
    turn_ports: Option<String>,
    turn_secret: Option<String>,
    turn_credential_ttl_secs: Option<u64>,
    turn_realm: Option<String>,
    turn_urls: Option<Vec<String>>,
    turn_tls_host: Option<String>,
    turn_max_allocations: Option<usize>,
    turn_max_allocations_per_user: Option<usize>,
    turn_allocation_bytes_per_sec: Option<u64>,
    turn_total_bytes_per_sec: Option<u64>,
    turn_allow_peers: Option<Vec<String>>,
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(e),
        })
    }
}

/// Logging settings, which the binary applies before anything else.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// EnvFilter directives.
    pub filter: String,
    /// JSON lines instead of text.
    pub json: bool,
}

macro_rules! pick {
    ($args:ident, $file:ident, $field:ident) => {
        $args.$field.clone().or_else(|| $file.$field.clone())
    };
}

/// Merges flags/environment (already combined by clap) over the file over the defaults.
pub fn resolve(args: &Args, file: &FileConfig) -> Result<(Config, LogConfig), ConfigError> {
    let d = LimitsConfig::default();
    let secs = Duration::from_secs;
    let ms = Duration::from_millis;
    let limits = LimitsConfig {
        max_frame_bytes: pick!(args, file, max_frame_bytes).unwrap_or(d.max_frame_bytes),
        max_payload_bytes: pick!(args, file, max_payload_bytes).unwrap_or(d.max_payload_bytes),
        max_contacts: pick!(args, file, max_contacts).unwrap_or(d.max_contacts),
        rate_per_sec: pick!(args, file, rate_per_sec).unwrap_or(d.rate_per_sec),
        rate_burst: pick!(args, file, rate_burst).unwrap_or(d.rate_burst),
        max_connections: pick!(args, file, max_connections).unwrap_or(d.max_connections),
        max_connections_per_ip: pick!(args, file, max_connections_per_ip)
            .unwrap_or(d.max_connections_per_ip),
        auth_timeout: pick!(args, file, auth_timeout_secs)
            .map(secs)
            .unwrap_or(d.auth_timeout),
        ping_interval: pick!(args, file, ping_interval_ms)
            .map(ms)
            .unwrap_or(d.ping_interval),
        ping_timeout: pick!(args, file, ping_timeout_ms)
            .map(ms)
            .unwrap_or(d.ping_timeout),
        mailbox_ttl: pick!(args, file, mailbox_ttl_secs)
            .map(secs)
            .unwrap_or(d.mailbox_ttl),
        mailbox_max_items: pick!(args, file, mailbox_max_items).unwrap_or(d.mailbox_max_items),
        mailbox_max_bytes: pick!(args, file, mailbox_max_bytes).unwrap_or(d.mailbox_max_bytes),
        mailbox_contact_share_percent: pick!(args, file, mailbox_contact_share_percent)
            .unwrap_or(d.mailbox_contact_share_percent),
        mailbox_stranger_share_percent: pick!(args, file, mailbox_stranger_share_percent)
            .unwrap_or(d.mailbox_stranger_share_percent),
        max_devices_per_user: pick!(args, file, max_devices_per_user)
            .unwrap_or(d.max_devices_per_user),
        otk_low_threshold: pick!(args, file, otk_low_threshold).unwrap_or(d.otk_low_threshold),
        ..d
    };
    if limits.max_payload_bytes >= limits.max_frame_bytes {
        return Err(ConfigError::Invalid(
            "max_payload_bytes must be below max_frame_bytes".into(),
        ));
    }
    if limits.mailbox_contact_share_percent > 100
        || limits.mailbox_stranger_share_percent > limits.mailbox_contact_share_percent
    {
        return Err(ConfigError::Invalid(
            "mailbox shares are percentages, the stranger share at most the contact share".into(),
        ));
    }
    if limits.max_devices_per_user == 0 {
        return Err(ConfigError::Invalid(
            "max_devices_per_user must be positive".into(),
        ));
    }
    if limits.ping_interval.is_zero() || limits.ping_timeout.is_zero() {
        return Err(ConfigError::Invalid(
            "ping interval and timeout must be positive".into(),
        ));
    }
    let tls = match (pick!(args, file, tls_cert), pick!(args, file, tls_key)) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Invalid(
                "tls_cert and tls_key must be given together".into(),
            ));
        }
    };
    let stun_listen = match pick!(args, file, stun_listen).as_deref() {
        None => Some(SocketAddr::from(([0, 0, 0, 0], 3478))),
        Some("off") | Some("") => None,
        Some(addr) => Some(
            addr.parse()
                .map_err(|_| ConfigError::Invalid("stun_listen is not ADDR:PORT or off".into()))?,
        ),
    };
    let turn = resolve_turn(args, file, tls.is_some())?;
    let config = Config {
        turn,
        listen: pick!(args, file, listen).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8080))),
        data_dir: pick!(args, file, data_dir)
            .unwrap_or_else(|| PathBuf::from("discordopus-server-data")),
        server_id: pick!(args, file, server_id),
        redis: pick!(args, file, redis),
        tls,
        stun_listen,
        limits,
        shutdown_grace: pick!(args, file, shutdown_grace_secs)
            .map(secs)
            .unwrap_or(Duration::from_secs(10)),
    };
    let log = LogConfig {
        filter: pick!(args, file, log).unwrap_or_else(|| "info".into()),
        json: pick!(args, file, log_json).unwrap_or(false),
    };
    Ok((config, log))
}

fn resolve_turn(
    args: &Args,
    file: &FileConfig,
    have_tls: bool,
) -> Result<Option<TurnSettings>, ConfigError> {
    if !pick!(args, file, turn).unwrap_or(false) {
        return Ok(None);
    }
    let listen = pick!(args, file, turn_listen).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 3478)));
    let tls_listen = match pick!(args, file, turn_tls_listen).as_deref() {
        Some("off") | Some("") => None,
        Some(a) => {
            if !have_tls {
                return Err(ConfigError::Invalid(
                    "turn_tls_listen needs tls_cert and tls_key".into(),
                ));
            }
            Some(a.parse().map_err(|_| {
                ConfigError::Invalid("turn_tls_listen is not ADDR:PORT or off".into())
            })?)
        }
        None if have_tls => Some(SocketAddr::new(listen.ip(), 5349)),
        None => None,
    };
    let relay_ip = match pick!(args, file, turn_relay_ip) {
        Some(ip) if ip.is_unspecified() => {
            return Err(ConfigError::Invalid(
                "turn_relay_ip must be a concrete address".into(),
            ));
        }
        Some(ip) => ip,
        None if !listen.ip().is_unspecified() => listen.ip(),
        None => {
            return Err(ConfigError::Invalid(
                "turn needs turn_relay_ip (the address peers reach the relay at) when turn_listen is a wildcard"
                    .into(),
            ));
        }
    };
    let ports = match pick!(args, file, turn_ports) {
        None => (49152, 65535),
        Some(r) => {
            let bad = || ConfigError::Invalid("turn_ports is not MIN-MAX".into());
            let (a, b) = r.split_once('-').ok_or_else(bad)?;
            let (a, b): (u16, u16) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a == 0 || a > b {
                return Err(bad());
            }
            (a, b)
        }
    };
    let allow_peers = pick!(args, file, turn_allow_peers)
        .unwrap_or_default()
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse())
        .collect::<Result<Vec<Cidr>, _>>()?;
    let ttl = pick!(args, file, turn_credential_ttl_secs).unwrap_or(3600);
    if ttl == 0 {
        return Err(ConfigError::Invalid(
            "turn_credential_ttl_secs must be positive".into(),
        ));
    }
    Ok(Some(TurnSettings {
        listen,
        tls_listen,
        relay_ip,
        ports,
        secret: pick!(args, file, turn_secret),
        credential_ttl: Duration::from_secs(ttl),
        realm: pick!(args, file, turn_realm).unwrap_or_else(|| "discordopus".into()),
        urls: pick!(args, file, turn_urls).unwrap_or_default(),
        tls_host: pick!(args, file, turn_tls_host),
        max_allocations: pick!(args, file, turn_max_allocations).unwrap_or(10_000),
        max_allocations_per_user: pick!(args, file, turn_max_allocations_per_user).unwrap_or(16),
        allocation_bytes_per_sec: pick!(args, file, turn_allocation_bytes_per_sec)
            .unwrap_or(4 * 1024 * 1024),
        total_bytes_per_sec: pick!(args, file, turn_total_bytes_per_sec)
            .unwrap_or(100 * 1024 * 1024),
        allow_peers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn turn_is_off_by_default_and_configurable() {
        let (c, _) = resolve(&Args::default(), &FileConfig::default()).unwrap();
        assert!(c.turn.is_none());
        let file = FileConfig::parse(
            "turn = true\nturn_listen = \"127.0.0.1:3478\"\nturn_ports = \"50000-50100\"\nturn_allow_peers = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let (c, _) = resolve(&Args::default(), &file).unwrap();
        let t = c.turn.unwrap();
        assert_eq!(t.relay_ip, "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(t.ports, (50000, 50100));
        assert!(t.allow_peers[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!t.allow_peers[0].contains("11.1.2.3".parse().unwrap()));
        assert!(t.tls_listen.is_none());
        // A wildcard listen address needs the relay address spelled out.
        let args = Args::parse_from(["discordopus-server", "--turn"]);
        assert!(resolve(&args, &FileConfig::default()).is_err());
        let args = Args::parse_from([
            "discordopus-server",
            "--turn",
            "--turn-relay-ip",
            "203.0.113.5",
            "--turn-allow-peers",
            "192.168.0.0/16,fd00::/8",
        ]);
        let (c, _) = resolve(&args, &FileConfig::default()).unwrap();
        let t = c.turn.unwrap();
        assert_eq!(t.allow_peers.len(), 2);
        assert!(t.allow_peers[1].contains("fd00::1".parse().unwrap()));
        assert!("300.1.1.1/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file = FileConfig::parse(
            "listen = \"127.0.0.1:9000\"\nrate_per_sec = 7\nmailbox_ttl_secs = 60\nstun_listen = \"off\"\n",
        )
        .unwrap();
        let args = Args::parse_from(["discordopus-server", "--rate-per-sec", "9"]);
        let (c, log) = resolve(&args, &file).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.limits.rate_per_sec, 9);
        assert_eq!(c.limits.mailbox_ttl, Duration::from_secs(60));
        assert_eq!(c.limits.rate_burst, LimitsConfig::default().rate_burst);
        assert!(c.stun_listen.is_none());
        assert_eq!(log.filter, "info");
    }

    #[test]
    fn unknown_keys_and_half_tls_are_refused() {
        assert!(FileConfig::parse("lisen = \"x\"").is_err());
        let file = FileConfig::parse("tls_cert = \"/c.pem\"").unwrap();
        assert!(resolve(&Args::default(), &file).is_err());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let (c, _) = resolve(&Args::default(), &FileConfig::default()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.stun_listen, Some("0.0.0.0:3478".parse().unwrap()));
        assert_eq!(c.limits.ping_interval, Duration::from_secs(20));
        assert_eq!(c.limits.mailbox_ttl, Duration::from_secs(30 * 86400));
    }
}
