//! What a node configures once and every peer connection then uses.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use dopus_types::Redacted;

use crate::cert::DtlsIdentity;

/// Largest data-channel message by default. Large enough for any chat envelope; files are sent
/// as chunks of at most this size by the transfer layer.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// SCTP send buffer by default. The spike measured str0m's 128 KiB default capping throughput at
/// about 128 KiB per round trip; 1 MiB gave the best loopback numbers without overshoot.
pub const DEFAULT_SEND_BUFFER: usize = 1024 * 1024;

/// Default for [`RtcConfig::blob_in_flight`]: the send buffer less one maximal message.
pub const DEFAULT_BLOB_IN_FLIGHT: usize = 768 * 1024;
const _: () = assert!(DEFAULT_BLOB_IN_FLIGHT + DEFAULT_MAX_MESSAGE_SIZE <= DEFAULT_SEND_BUFFER);

/// Hard ceiling for [`RtcConfig::max_message_size`]: a message must fit the SCTP send buffer in
/// one piece, and SCTP reassembly memory grows with it.
pub const MAX_MESSAGE_SIZE_LIMIT: usize = 16 * 1024 * 1024;

/// Everything a peer connection needs that is not specific to one peer.
///
/// Cheap to clone: the node builds one at start-up (with a [`DtlsIdentity`]) and hands a clone
/// to each connection.
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// STUN servers to learn server-reflexive candidates from, and TURN servers (with
    /// credentials) to allocate relayed candidates on.
    pub ice_servers: Vec<IceServer>,
    /// Which local addresses to bind UDP sockets on.
    pub bind: BindPolicy,
    /// Offer loopback addresses as host candidates. Needed for tests and the one-machine demo;
    /// off by default because a loopback candidate is useless to a remote peer.
    pub include_loopback: bool,
    /// Signal host candidates to the peer. Turning this off hides local (LAN) addresses from the
    /// peer at the price of needing a server-reflexive path; host candidates are still used
    /// locally as the base of those.
    pub share_host_candidates: bool,
    /// Close the connection when no application data moved in either direction for this long.
    /// `None` keeps idle connections open.
    pub idle_timeout: Option<Duration>,
    /// Give up when the data channel is not open this long after the connection was created.
    /// (An ICE restart on an open connection is bounded by `disconnected_timeout` instead.)
    pub connect_timeout: Duration,
    /// Give up when an established connection stays disconnected (no ICE consent) this long.
    pub disconnected_timeout: Duration,
    /// Take the path for lost when nothing at all arrived from the peer for this long on an
    /// open connection (ICE consent checks alone arrive every 3 s or sooner): the connection
    /// goes `Disconnected`, probes its relay at once (a NAT that forgot our mapping shows as a
    /// new address), and begins an ICE restart ([`crate::PeerEvent::RestartOffer`]). `None`
    /// leaves it to str0m's consent checks (about 20 s) and never restarts by itself.
    pub path_loss_timeout: Option<Duration>,
    /// Largest message [`crate::PeerHandle::send`] accepts and the peer may send us.
    pub max_message_size: usize,
    /// SCTP send buffer: how much written data may wait for acknowledgement. `send` awaits when it
    /// is full. Raised to `max_message_size` if smaller.
    pub send_buffer: usize,
    /// The most of the send buffer the bulk (blob) channel may fill; at least one maximal
    /// message of the send buffer is always kept for messages (the value is clamped). It is also
    /// about the most bulk data SCTP has in flight, and sctp-proto's work per packet is linear in
    /// the chunks in flight (docs/benchmarks.md, "Files"): smaller is cheaper per byte as long
    /// as it covers the path's bandwidth-delay product. The connection sizes the share it uses
    /// to the path's RTT, with this as its ceiling (and 128 KiB, or this if smaller, as its
    /// floor). A blob message larger than the share is still admitted when the blob channel
    /// has nothing buffered.
    pub blob_in_flight: usize,
    /// First STUN retransmission timeout; doubled on each retry.
    pub stun_initial_rto: Duration,
    /// STUN Binding requests sent per server before giving up on it.
    pub stun_attempts: u32,
    /// DTLS certificate shared by all connections of this node. `None` generates one per
    /// connection (26-40 ms each, measured in the str0m spike).
    pub dtls_identity: Option<DtlsIdentity>,
    /// Events buffered for the application before the connection stops reading from the network.
    pub event_capacity: usize,
    /// Privacy mode: only relayed candidates are used and signalled, so the peer never learns
    /// our IP address (it sees the TURN server's). Needs a TURN server; without one no
    /// connection can form.
    pub relay_only: bool,
    /// TLS client configuration for `turns:` servers. `None` uses the Mozilla root store
    /// (`webpki-roots`); tests pass one that trusts their own certificate.
    pub turn_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            bind: BindPolicy::AllInterfaces,
            include_loopback: false,
            share_host_candidates: true,
            idle_timeout: Some(Duration::from_secs(300)),
            connect_timeout: Duration::from_secs(15),
            disconnected_timeout: Duration::from_secs(20),
            path_loss_timeout: Some(Duration::from_secs(5)),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            send_buffer: DEFAULT_SEND_BUFFER,
            blob_in_flight: DEFAULT_BLOB_IN_FLIGHT,
            stun_initial_rto: Duration::from_millis(250),
            stun_attempts: 5,
            dtls_identity: None,
            event_capacity: 1024,
            relay_only: false,
            turn_tls: None,
        }
    }
}

impl RtcConfig {
    /// A configuration for tests and the one-machine demo: loopback only, short timeouts.
    pub fn loopback() -> Self {
        Self {
            bind: BindPolicy::Addrs(vec![SocketAddr::from(([127, 0, 0, 1], 0))]),
            include_loopback: true,
            ..Self::default()
        }
    }

    /// Checks the values that would otherwise fail later, deep inside a connection.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_message_size == 0 || self.max_message_size > MAX_MESSAGE_SIZE_LIMIT {
            return Err(ConfigError::MaxMessageSize(self.max_message_size));
        }
        if let BindPolicy::Addrs(addrs) = &self.bind {
            if addrs.is_empty() {
                return Err(ConfigError::NoBindAddress);
            }
            if addrs.iter().any(|a| a.ip().is_unspecified()) {
                return Err(ConfigError::WildcardBind);
            }
        }
        if self.relay_only && !self.has_turn() {
            return Err(ConfigError::RelayOnlyWithoutTurn);
        }
        if self.stun_attempts == 0 || self.event_capacity == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        Ok(())
    }

    /// The SCTP send buffer actually used: never smaller than one maximal message, since str0m
    /// accepts a message only when it fits the buffer whole.
    pub(crate) fn effective_send_buffer(&self) -> usize {
        self.send_buffer.max(self.max_message_size)
    }

    /// The blob channel's share actually used: [`RtcConfig::blob_in_flight`], leaving at least
    /// one maximal message of the send buffer to the message channel, and at least one byte.
    pub(crate) fn effective_blob_share(&self) -> usize {
        let reserve = self.effective_send_buffer() - self.max_message_size;
        self.blob_in_flight.min(reserve).max(1)
    }

    /// The STUN servers in use (TURN entries are skipped until TURN is implemented).
    pub(crate) fn stun_servers(&self) -> impl Iterator<Item = (&str, u16)> {
        self.ice_servers.iter().filter_map(|s| match s {
            IceServer::Stun { host, port } => Some((host.as_str(), *port)),
            IceServer::Turn { .. } => None,
        })
    }

    /// True when TURN servers (with credentials) are configured.
    pub(crate) fn has_turn(&self) -> bool {
        self.turn_servers().next().is_some()
    }

    /// The TURN servers to allocate on, each with the transports to try in order: a plain
    /// `turn:` URL means UDP then TCP, `?transport=` pins one, `turns:` is TLS. Entries without
    /// credentials are skipped (TURN needs them).
    pub(crate) fn turn_servers(&self) -> impl Iterator<Item = TurnServerSpec> + '_ {
        self.ice_servers.iter().filter_map(|s| match s {
            IceServer::Turn {
                secure,
                host,
                port,
                transport,
                username: Some(username),
                credential: Some(credential),
            } => {
                let transports = match (secure, transport.as_deref()) {
                    (true, _) => vec![crate::turn::RelayTransport::Tls],
                    (false, Some("udp")) => vec![crate::turn::RelayTransport::Udp],
                    (false, Some("tcp")) => vec![crate::turn::RelayTransport::Tcp],
                    (false, _) => vec![
                        crate::turn::RelayTransport::Udp,
                        crate::turn::RelayTransport::Tcp,
                    ],
                };
                Some(TurnServerSpec {
                    host: host.clone(),
                    port: *port,
                    transports,
                    username: username.clone(),
                    credential: credential.clone(),
                })
            }
            _ => None,
        })
    }
}

/// One configured TURN server, before its name is resolved.
#[derive(Clone)]
pub(crate) struct TurnServerSpec {
    pub host: String,
    pub port: u16,
    pub transports: Vec<crate::turn::RelayTransport>,
    pub username: String,
    pub credential: Redacted<String>,
}

/// Which local addresses a connection binds its UDP sockets on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindPolicy {
    /// One socket per usable interface address (IPv4 and global/unique-local IPv6; link-local
    /// IPv6 is skipped because its candidates need a scope the peer cannot use).
    AllInterfaces,
    /// Exactly these addresses (port 0 picks a free port). Wildcard addresses are refused: a
    /// host candidate must name a real address.
    Addrs(Vec<SocketAddr>),
}

/// A configured ICE server, parsed from its URL (RFC 7064 `stun:`, RFC 7065 `turn:`/`turns:`).
#[derive(Clone, PartialEq, Eq)]
pub enum IceServer {
    /// A STUN server used for server-reflexive candidates.
    Stun {
        /// Host name or IP address literal.
        host: String,
        /// UDP port (3478 if the URL named none).
        port: u16,
    },
    /// A TURN server: relayed candidates are allocated on it when it has credentials.
    Turn {
        /// `turns:` (TLS) rather than `turn:`.
        secure: bool,
        /// Host name or IP address literal.
        host: String,
        /// Port (3478, or 5349 for `turns:`, if the URL named none).
        port: u16,
        /// The `?transport=` parameter, if any (`udp` or `tcp`).
        transport: Option<String>,
        /// TURN long-term credential user name.
        username: Option<String>,
        /// TURN long-term credential; never printed.
        credential: Option<Redacted<String>>,
    },
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Host names of the user's own servers are configuration, not peer data; credentials are
        // redacted by their type.
        match self {
            Self::Stun { host, port } => write!(f, "stun:{host}:{port}"),
            Self::Turn {
                secure,
                host,
                port,
                transport,
                ..
            } => {
                let scheme = if *secure { "turns" } else { "turn" };
                write!(f, "{scheme}:{host}:{port}")?;
                if let Some(t) = transport {
                    write!(f, "?transport={t}")?;
                }
                Ok(())
            }
        }
    }
}

impl IceServer {
    /// Parses `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]` or `turns:…`.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once(':')
            .ok_or_else(|| ConfigError::IceServerUrl("missing scheme".into()))?;
        let scheme = scheme.to_ascii_lowercase();
        let (hostport, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let default_port = match scheme.as_str() {
            "stun" | "turn" => 3478,
            "turns" => 5349,
            "stuns" => {
                return Err(ConfigError::IceServerUrl(
                    "stuns: (STUN over TLS) is not supported".into(),
                ));
            }
            _ => {
                return Err(ConfigError::IceServerUrl(
                    "scheme must be stun:, turn: or turns:".into(),
                ));
            }
        };
        let (host, port) = split_host_port(hostport, default_port)?;
        match scheme.as_str() {
            "stun" => {
                if query.is_some() {
                    return Err(ConfigError::IceServerUrl(
                        "stun: URLs take no parameters".into(),
                    ));
                }
                Ok(Self::Stun { host, port })
            }
            _ => {
                let mut transport = None;
                if let Some(q) = query {
                    match q.split_once('=') {
                        Some(("transport", t @ ("udp" | "tcp"))) => transport = Some(t.to_owned()),
                        _ => {
                            return Err(ConfigError::IceServerUrl(
                                "the only TURN parameter is transport=udp|tcp".into(),
                            ));
                        }
                    }
                }
                Ok(Self::Turn {
                    secure: scheme == "turns",
                    host,
                    port,
                    transport,
                    username: None,
                    credential: None,
                })
            }
        }
    }

    /// A TURN server with long-term credentials (for the TURN REST scheme: user name
    /// `expiry:opaque`, credential the base64 HMAC-SHA1 the signaling server handed out).
    pub fn turn(url: &str, username: &str, credential: &str) -> Result<Self, ConfigError> {
        match Self::parse(url)? {
            Self::Turn {
                secure,
                host,
                port,
                transport,
                ..
            } => Ok(Self::Turn {
                secure,
                host,
                port,
                transport,
                username: Some(username.to_owned()),
                credential: Some(Redacted::new(credential.to_owned())),
            }),
            Self::Stun { .. } => Err(ConfigError::IceServerUrl(
                "credentials are only for turn: and turns: URLs".into(),
            )),
        }
    }
}

impl FromStr for IceServer {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), ConfigError> {
    let bad = |why: &str| ConfigError::IceServerUrl(why.to_owned());
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ', ':']) && !s.starts_with('[') {
        return Err(bad("missing or invalid host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad("invalid port")),
            Ok(p) => p,
        },
    };
    Ok((host.to_owned(), port))
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An ICE server URL could not be parsed.
    #[error("invalid ICE server URL: {0}")]
    IceServerUrl(String),
    /// `max_message_size` is zero or above [`MAX_MESSAGE_SIZE_LIMIT`].
    #[error("max_message_size {0} is out of range (1..={MAX_MESSAGE_SIZE_LIMIT})")]
    MaxMessageSize(usize),
    /// `relay_only` without a TURN server with credentials: nothing could ever connect.
    #[error("relay-only mode needs a TURN server with credentials")]
    RelayOnlyWithoutTurn,
    /// `BindPolicy::Addrs` with no address.
    #[error("no bind address given")]
    NoBindAddress,
    /// `BindPolicy::Addrs` with 0.0.0.0 or ::.
    #[error("bind addresses must be specific, not a wildcard")]
    WildcardBind,
    /// A count that must be at least one is zero.
    #[error("stun_attempts and event_capacity must be at least 1")]
    ZeroLimit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stun_and_turn_urls() {
        assert_eq!(
            IceServer::parse("stun:stun.example.org").unwrap(),
            IceServer::Stun {
                host: "stun.example.org".into(),
                port: 3478
            }
        );
        assert_eq!(
            IceServer::parse("stun:127.0.0.1:19302").unwrap(),
            IceServer::Stun {
                host: "127.0.0.1".into(),
                port: 19302
            }
        );
        assert_eq!(
            IceServer::parse("STUN:[::1]:5000").unwrap(),
            IceServer::Stun {
                host: "::1".into(),
                port: 5000
            }
        );
        let turn = IceServer::parse("turns:turn.example.org?transport=tcp").unwrap();
        assert_eq!(
            turn,
            IceServer::Turn {
                secure: true,
                host: "turn.example.org".into(),
                port: 5349,
                transport: Some("tcp".into()),
                username: None,
                credential: None,
            }
        );
        assert!(matches!(
            IceServer::parse("turn:10.0.0.1").unwrap(),
            IceServer::Turn {
                secure: false,
                port: 3478,
                ..
            }
        ));
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "",
            "stun",
            "http://x",
            "stun:",
            "stun:host:0",
            "stun:host:99999",
            "stun:host?x=1",
            "turn:host?transport=sctp",
            "stun:[::1",
            "stuns:host",
            "stun:user@host",
        ] {
            assert!(IceServer::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn turn_credentials_never_print() {
        let t = IceServer::turn("turn:relay.example:3478", "alice", "s3cret").unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(IceServer::turn("stun:x", "a", "b").is_err());
    }

    #[test]
    fn huge_timeouts_mean_never_not_a_panic() {
        let now = std::time::Instant::now();
        let far = crate::time::later(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(3600));
    }

    #[test]
    fn validate_catches_unusable_values() {
        assert!(RtcConfig::default().validate().is_ok());
        assert!(RtcConfig::loopback().validate().is_ok());
        let mut c = RtcConfig::loopback();
        c.bind = BindPolicy::Addrs(vec!["0.0.0.0:0".parse().unwrap()]);
        assert_eq!(c.validate(), Err(ConfigError::WildcardBind));
        c.bind = BindPolicy::Addrs(vec![]);
        assert_eq!(c.validate(), Err(ConfigError::NoBindAddress));
        let mut c = RtcConfig::loopback();
        c.max_message_size = 0;
        assert!(c.validate().is_err());
        c.max_message_size = 4096;
        c.send_buffer = 10;
        assert_eq!(c.effective_send_buffer(), 4096);
    }

    #[test]
    fn the_blob_share_always_leaves_a_maximal_message_to_chat() {
        let mut c = RtcConfig::default();
        assert_eq!(c.effective_blob_share(), DEFAULT_BLOB_IN_FLIGHT);
        c.blob_in_flight = 256 * 1024;
        assert_eq!(c.effective_blob_share(), 256 * 1024);
        c.blob_in_flight = usize::MAX;
        assert_eq!(
            c.effective_blob_share(),
            DEFAULT_SEND_BUFFER - DEFAULT_MAX_MESSAGE_SIZE
        );
        c.blob_in_flight = 0;
        assert_eq!(c.effective_blob_share(), 1);
        // A send buffer of one maximal message leaves nothing to share: one byte (a blob
        // message then goes only when the blob channel has nothing buffered).
        c.blob_in_flight = 64 * 1024;
        c.send_buffer = 0;
        assert_eq!(c.effective_blob_share(), 1);
    }
}
