//! What a connection can tell about itself: state, path, counters and why it failed.
//!
//! Every `Display` here is safe for the UI and for info-level logs: addresses only appear inside
//! [`Redacted`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use dopus_types::Redacted;

pub use crate::gather::NatBehavior;

/// ICE candidate type (RFC 8445 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateType {
    /// An address of a local interface.
    Host,
    /// Our address as a STUN server saw it (outside our NAT).
    Srflx,
    /// An address learned from a connectivity check, not signalled.
    Prflx,
    /// A TURN relay address.
    Relay,
}

impl CandidateType {
    pub(crate) fn from_kind(kind: str0m::CandidateKind) -> Self {
        match kind {
            str0m::CandidateKind::Host => Self::Host,
            str0m::CandidateKind::ServerReflexive => Self::Srflx,
            str0m::CandidateKind::PeerReflexive => Self::Prflx,
            str0m::CandidateKind::Relayed => Self::Relay,
        }
    }

    /// The type of a signalled candidate line (`candidate:…`, with or without `a=`); `None`
    /// if it does not parse. Lets the node apply policies (e.g. drop host candidates).
    pub fn of_candidate(line: &str) -> Option<Self> {
        let line = line.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        str0m::Candidate::from_sdp_string(line)
            .ok()
            .map(|c| Self::from_kind(c.kind()))
    }

    /// Lower is more specific; used when one address was signalled under several types.
    pub(crate) fn rank(self) -> u8 {
        match self {
            Self::Host => 0,
            Self::Srflx => 1,
            Self::Prflx => 2,
            Self::Relay => 3,
        }
    }
}

impl fmt::Display for CandidateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Host => "host",
            Self::Srflx => "srflx",
            Self::Prflx => "prflx",
            Self::Relay => "relay",
        })
    }
}

/// The candidate pair ICE selected for sending.
///
/// The local side is reported from the socket that sends, so a path that the peer reaches
/// through our NAT shows `host` locally and `srflx` (or `prflx`) on the peer's side, as ICE
/// pairs a server-reflexive candidate with its base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedPair {
    /// Type of our candidate.
    pub local: CandidateType,
    /// Type of the peer's candidate; `prflx` when the peer reached us from an address it never
    /// signalled.
    pub remote: CandidateType,
    /// Our sending socket.
    pub local_addr: Redacted<SocketAddr>,
    /// The peer's address we send to.
    pub remote_addr: Redacted<SocketAddr>,
}

impl fmt::Display for SelectedPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.local, self.remote)
    }
}

/// Connection state as the node shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Created; waiting for the remote description or candidates.
    New,
    /// Connectivity checks running.
    Checking,
    /// ICE and DTLS up (the data channel opens right after, see `PeerEvent::ChannelOpen`).
    Connected,
    /// Consent lost on an established connection; may recover by itself or after an ICE restart.
    Disconnected,
    /// Gave up; the connection is closing. A new connection is needed.
    Failed(FailureReason),
    /// Closed; nothing more will happen.
    Closed,
}

/// Why a connection could not be made or was lost; `Display` is the human sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// The offer went out but no answer came back in time.
    NoAnswer,
    /// The peer's description arrived, but no candidate with it or after it.
    NoRemoteCandidates,
    /// Candidates were exchanged but no pair passed connectivity checks.
    NoDirectPath {
        /// What STUN told about our NAT.
        local_nat: NatBehavior,
        /// The peer signalled several server-reflexive addresses with one IP and different
        /// ports, which is what a symmetric NAT produces (a heuristic).
        remote_looks_symmetric: bool,
        /// Whether we had a STUN server to learn our public address from.
        stun_configured: bool,
        /// Whether TURN servers (with credentials) were configured.
        turn_configured: bool,
        /// How many candidates each side had.
        local_candidates: usize,
        /// How many candidates the peer sent.
        remote_candidates: usize,
    },
    /// The certificate the peer presented in DTLS does not match the `a=fingerprint` of the SDP
    /// we received: the description was altered in transit (or is not the peer's).
    DtlsFingerprintMismatch,
    /// ICE connected but the DTLS handshake did not complete in time.
    DtlsHandshake,
    /// DTLS completed but the data channel did not open in time.
    ChannelNotOpened,
    /// An established connection lost consent and did not come back in time.
    ConnectionLost {
        /// How long it stayed disconnected.
        after: Duration,
    },
    /// A local socket failed (bind or send).
    Network(String),
    /// The WebRTC engine refused the session (bad SDP, protocol error).
    Engine(String),
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAnswer => f.write_str("the peer never answered the connection offer"),
            Self::NoRemoteCandidates => f.write_str("no remote candidates received"),
            Self::NoDirectPath {
                local_nat,
                remote_looks_symmetric,
                stun_configured,
                turn_configured,
                local_candidates,
                remote_candidates,
            } => {
                f.write_str("no direct path: ")?;
                let local_sym = *local_nat == NatBehavior::Symmetric;
                match (local_sym, remote_looks_symmetric) {
                    (true, true) => f.write_str("both sides behind symmetric NAT")?,
                    (true, false) => f.write_str("this side is behind a symmetric NAT")?,
                    (false, true) => {
                        f.write_str("the peer appears to be behind a symmetric NAT")?
                    }
                    (false, false) => write!(
                        f,
                        "none of {local_candidates} local x {remote_candidates} remote candidates connected (this side: {local_nat})"
                    )?,
                }
                if !stun_configured {
                    f.write_str("; no STUN server configured, only host addresses were tried")?;
                }
                if *turn_configured {
                    f.write_str("; no TURN relay path connected either")
                } else {
                    f.write_str("; configure TURN")
                }
            }
            Self::DtlsFingerprintMismatch => {
                f.write_str("DTLS fingerprint mismatch (the SDP was altered in transit)")
            }
            Self::DtlsHandshake => f.write_str("the DTLS handshake did not complete"),
            Self::ChannelNotOpened => f.write_str("the data channel did not open"),
            Self::ConnectionLost { after } => write!(
                f,
                "connection lost: no answer from the peer for {} s",
                after.as_secs()
            ),
            Self::Network(e) => write!(f, "network error: {e}"),
            Self::Engine(e) => write!(f, "WebRTC error: {e}"),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// [`crate::PeerHandle::close`] was called or every handle was dropped.
    Local,
    /// The peer closed the connection.
    Remote,
    /// No application data moved for `idle_timeout`.
    IdleTimeout,
    /// The connection failed.
    Failed(FailureReason),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("closed locally"),
            Self::Remote => f.write_str("closed by the peer"),
            Self::IdleTimeout => f.write_str("closed after being idle"),
            Self::Failed(r) => write!(f, "failed: {r}"),
        }
    }
}

/// A snapshot of one connection.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// Current state.
    pub state: ConnectionState,
    /// The pair in use, once ICE selected one (refreshed twice a second).
    pub selected_pair: Option<SelectedPair>,
    /// Round-trip time of the latest ICE consent check on the selected pair.
    pub rtt: Option<Duration>,
    /// UDP payload bytes sent, all protocols (STUN, DTLS, SCTP) included.
    pub bytes_sent: u64,
    /// UDP payload bytes received and accepted.
    pub bytes_received: u64,
    /// Application messages written into the channel.
    pub messages_sent: u64,
    /// Application messages received.
    pub messages_received: u64,
    /// How often a send found the SCTP send buffer full and had to wait (backpressure).
    pub send_waits: u64,
    /// Types of the candidates we gathered (host ones even if not shared).
    pub local_candidates: Vec<CandidateType>,
    /// Types of the candidates the peer signalled.
    pub remote_candidates: Vec<CandidateType>,
    /// What STUN told about our NAT.
    pub nat: NatBehavior,
    /// TURN servers are configured but no allocation is working (see
    /// [`crate::PeerHandle::connectivity`] for why).
    pub turn_unused: bool,
    /// Time from creation to the data channel opening.
    pub setup_time: Option<Duration>,
    /// Why it failed, if it did.
    pub failure: Option<FailureReason>,
}

/// Which kind of path carries the connection, as the connection panel shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// Host address to host address: same network, or no NAT in the way.
    DirectHost,
    /// Direct, through at least one NAT (a server- or peer-reflexive address on one side).
    DirectReflexive,
    /// Through a TURN relay (ours, the peer's, or both).
    Relayed,
}

impl PathKind {
    /// The kind of path a selected pair is.
    pub fn of(pair: &SelectedPair) -> Self {
        match (pair.local, pair.remote) {
            (CandidateType::Relay, _) | (_, CandidateType::Relay) => Self::Relayed,
            (CandidateType::Host, CandidateType::Host) => Self::DirectHost,
            _ => Self::DirectReflexive,
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DirectHost => "direct (host)",
            Self::DirectReflexive => "direct (through NAT)",
            Self::Relayed => "relayed",
        })
    }
}

impl Diagnostics {
    /// The kind of path in use, once ICE selected a pair.
    pub fn path(&self) -> Option<PathKind> {
        self.selected_pair.as_ref().map(PathKind::of)
    }
}

/// One TURN allocation attempt of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayInfo {
    /// The configured `host:port` of the TURN server (configuration, not peer data).
    pub server: String,
    /// How we reach it.
    pub transport: crate::turn::RelayTransport,
    /// Where the attempt stands.
    pub state: crate::turn::RelayState,
}

/// Which path a connection uses and why, plus its relay attempts: what the connection panel
/// and the API show. `Display` is safe for logs (no addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connectivity {
    /// The path in use, once ICE selected a pair.
    pub path: Option<PathKind>,
    /// A human sentence: why this path (or why none yet).
    pub why: String,
    /// Relay-only privacy mode is on.
    pub relay_only: bool,
    /// Allocation attempts, oldest first (the last one is current).
    pub relays: Vec<RelayInfo>,
}

impl fmt::Display for Connectivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path {
            Some(p) => write!(f, "{p}: {}", self.why),
            None => f.write_str(&self.why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_sentences() {
        let r = FailureReason::NoDirectPath {
            local_nat: NatBehavior::Symmetric,
            remote_looks_symmetric: true,
            stun_configured: true,
            turn_configured: false,
            local_candidates: 2,
            remote_candidates: 2,
        };
        assert_eq!(
            r.to_string(),
            "no direct path: both sides behind symmetric NAT; configure TURN"
        );
        assert_eq!(
            FailureReason::DtlsFingerprintMismatch.to_string(),
            "DTLS fingerprint mismatch (the SDP was altered in transit)"
        );
        assert_eq!(
            FailureReason::NoRemoteCandidates.to_string(),
            "no remote candidates received"
        );
        let plain = FailureReason::NoDirectPath {
            local_nat: NatBehavior::Unknown,
            remote_looks_symmetric: false,
            stun_configured: false,
            turn_configured: true,
            local_candidates: 1,
            remote_candidates: 3,
        };
        let s = plain.to_string();
        assert!(s.contains("1 local x 3 remote"), "{s}");
        assert!(s.contains("no STUN server configured"), "{s}");
        assert!(s.contains("no TURN relay path connected either"), "{s}");
    }

    #[test]
    fn candidate_lines_are_typed() {
        let host = "candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host";
        let srflx =
            "a=candidate:2 1 udp 1686052607 198.51.100.2 6000 typ srflx raddr 0.0.0.0 rport 0";
        assert_eq!(CandidateType::of_candidate(host), Some(CandidateType::Host));
        assert_eq!(
            CandidateType::of_candidate(srflx),
            Some(CandidateType::Srflx)
        );
        assert_eq!(CandidateType::of_candidate("candidate:junk"), None);
        assert_eq!(CandidateType::Prflx.to_string(), "prflx");
    }

    #[test]
    fn pair_display_hides_addresses() {
        let p = SelectedPair {
            local: CandidateType::Host,
            remote: CandidateType::Srflx,
            local_addr: Redacted::new("192.0.2.1:5000".parse().unwrap()),
            remote_addr: Redacted::new("198.51.100.2:6000".parse().unwrap()),
        };
        assert_eq!(p.to_string(), "host -> srflx");
        let dbg = format!("{p:?}");
        assert!(
            !dbg.contains("192.0.2.1") && !dbg.contains("198.51.100.2"),
            "{dbg}"
        );
    }
}
