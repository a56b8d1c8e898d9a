//! Server-reflexive candidate discovery: a sans-IO STUN client.
//!
//! Protocol flow:
//! - for every (local socket, STUN server) pair of the same IP family, send a Binding request
//!   from that socket, so the mapping learned is the one ICE traffic will use;
//! - retransmit with an exponential back-off (RFC 8489 §6.2.1) up to a bounded number of
//!   attempts, then give up on that server;
//! - responses are recognised by transaction ID *and* source address before anything reaches
//!   str0m (ICE connectivity checks are STUN too, on the same socket);
//! - each distinct mapped address becomes one srflx candidate; comparing the mappings one
//!   socket got from different servers tells whether the NAT maps per destination (symmetric).

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dopus_proto::stun::{self, TransactionId};

/// A mapping a STUN server reported for one of our sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// Our socket.
    pub base: SocketAddr,
    /// The STUN server that answered.
    pub server: SocketAddr,
    /// Our address as the server saw it.
    pub mapped: SocketAddr,
}

/// Output of the gatherer.
#[derive(Debug)]
pub(crate) enum GatherOutput {
    /// Send `data` from our socket `from` to `to`.
    Transmit {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    /// A server answered.
    Mapped(Mapping),
}

#[derive(Debug)]
struct Transaction {
    tid: TransactionId,
    base: SocketAddr,
    server: SocketAddr,
    sent: u32,
    rto: Duration,
    deadline: Instant,
    done: bool,
}

/// How our NAT maps addresses, as far as the STUN answers tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatBehavior {
    /// No STUN server configured or none answered: nothing is known.
    Unknown,
    /// A server saw our socket's own address: no NAT on this path.
    NoNat,
    /// Behind a NAT, but only one server answered, so the mapping behaviour is unknown.
    Nat,
    /// Several servers saw the same mapped address: a hole punched towards a peer works.
    EndpointIndependent,
    /// Different servers saw different mapped addresses for one socket (symmetric NAT): a
    /// direct path to a peer behind the same kind of NAT is unlikely; TURN is needed.
    Symmetric,
}

impl fmt::Display for NatBehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown (no STUN answer)",
            Self::NoNat => "no NAT",
            Self::Nat => "behind a NAT (type unknown: one STUN server answered)",
            Self::EndpointIndependent => "behind an endpoint-independent NAT",
            Self::Symmetric => "behind a symmetric NAT",
        })
    }
}

/// Sends Binding requests and collects the mapped addresses.
#[derive(Debug)]
pub(crate) struct StunGatherer {
    initial_rto: Duration,
    attempts: u32,
    transactions: Vec<Transaction>,
    mappings: Vec<Mapping>,
    out: VecDeque<GatherOutput>,
}

impl StunGatherer {
    pub(crate) fn new(initial_rto: Duration, attempts: u32) -> Self {
        Self {
            initial_rto: initial_rto.max(Duration::from_millis(10)),
            attempts: attempts.max(1),
            transactions: Vec::new(),
            mappings: Vec::new(),
            out: VecDeque::new(),
        }
    }

    /// Starts (or, after a rebind, restarts) discovery for these sockets and servers. Earlier
    /// transactions and mappings are forgotten.
    pub(crate) fn start(&mut self, now: Instant, bases: &[SocketAddr], servers: &[SocketAddr]) {
        self.transactions.clear();
        self.mappings.clear();
        self.out.clear();
        for &base in bases {
            for &server in servers {
                if base.is_ipv4() != server.is_ipv4() {
                    continue;
                }
                let mut tid = [0u8; 12];
                if getrandom::fill(&mut tid).is_err() {
                    // Without randomness a response could be forged; skip rather than guess.
                    tracing::warn!("no randomness for a STUN transaction id; skipping STUN");
                    return;
                }
                self.transactions.push(Transaction {
                    tid,
                    base,
                    server,
                    sent: 0,
                    rto: self.initial_rto,
                    deadline: now,
                    done: false,
                });
            }
        }
        self.handle_timeout(now);
    }

    /// Sends due requests and retransmissions; gives up on servers that ran out of attempts.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for t in self.transactions.iter_mut().filter(|t| !t.done) {
            if now < t.deadline {
                continue;
            }
            if t.sent >= self.attempts {
                t.done = true;
                tracing::debug!(server = ?dopus_types::Redacted::new(t.server), "STUN server did not answer");
                continue;
            }
            if t.sent > 0 {
                t.rto = t.rto.saturating_mul(2);
            }
            t.sent += 1;
            t.deadline = crate::time::later(now, t.rto);
            self.out.push_back(GatherOutput::Transmit {
                from: t.base,
                to: t.server,
                data: stun::binding_request(t.tid),
            });
        }
    }

    /// Offers a datagram received on socket `base` from `source`. Returns true when it was the
    /// answer to one of our requests (and so must not be given to the ICE agent).
    pub(crate) fn handle_datagram(
        &mut self,
        source: SocketAddr,
        base: SocketAddr,
        data: &[u8],
    ) -> bool {
        if !stun::looks_like_stun(data) || self.transactions.is_empty() {
            return false;
        }
        let Ok((tid, mapped)) = stun::parse_binding_success(data) else {
            return false;
        };
        let Some(t) = self
            .transactions
            .iter_mut()
            .find(|t| t.tid == tid && t.server == source && t.base == base)
        else {
            return false;
        };
        if t.done {
            return true; // a late duplicate of an answer we already have
        }
        t.done = true;
        let m = Mapping {
            base,
            server: source,
            mapped,
        };
        self.mappings.push(m);
        self.out.push_back(GatherOutput::Mapped(m));
        true
    }

    pub(crate) fn poll_output(&mut self) -> Option<GatherOutput> {
        self.out.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.transactions
            .iter()
            .filter(|t| !t.done)
            .map(|t| t.deadline)
            .min()
    }

    /// All servers answered or gave up.
    pub(crate) fn is_done(&self) -> bool {
        self.transactions.iter().all(|t| t.done)
    }

    /// The mapping behaviour seen so far, worst case over all sockets.
    pub(crate) fn nat_behavior(&self) -> NatBehavior {
        classify(&self.mappings)
    }
}

/// Classifies mapping behaviour from the answers; the most restrictive socket wins.
pub(crate) fn classify(mappings: &[Mapping]) -> NatBehavior {
    let mut worst = NatBehavior::Unknown;
    let rank = |b: NatBehavior| match b {
        NatBehavior::Unknown => 0,
        NatBehavior::NoNat => 1,
        NatBehavior::EndpointIndependent => 2,
        NatBehavior::Nat => 3,
        NatBehavior::Symmetric => 4,
    };
    let mut bases: Vec<SocketAddr> = mappings.iter().map(|m| m.base).collect();
    bases.sort();
    bases.dedup();
    for base in bases {
        let seen: Vec<&Mapping> = mappings.iter().filter(|m| m.base == base).collect();
        let mut mapped: Vec<SocketAddr> = seen.iter().map(|m| m.mapped).collect();
        mapped.sort();
        mapped.dedup();
        let b = if mapped.len() > 1 {
            NatBehavior::Symmetric
        } else if mapped.first() == Some(&base) {
            NatBehavior::NoNat
        } else if seen.len() > 1 {
            NatBehavior::EndpointIndependent
        } else {
            NatBehavior::Nat
        };
        if rank(b) > rank(worst) {
            worst = b;
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn transmits(g: &mut StunGatherer) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some(o) = g.poll_output() {
            if let GatherOutput::Transmit { from, to, data } = o {
                v.push((from, to, data));
            }
        }
        v
    }

    #[test]
    fn retransmits_with_backoff_then_gives_up() {
        let now = Instant::now();
        let mut g = StunGatherer::new(Duration::from_millis(100), 3);
        g.start(now, &[addr("127.0.0.1:1000")], &[addr("127.0.0.1:3478")]);
        assert_eq!(transmits(&mut g).len(), 1);
        assert_eq!(g.poll_timeout(), Some(now + Duration::from_millis(100)));
        g.handle_timeout(now + Duration::from_millis(50));
        assert!(transmits(&mut g).is_empty(), "not due yet");
        g.handle_timeout(now + Duration::from_millis(100));
        assert_eq!(transmits(&mut g).len(), 1);
        assert_eq!(g.poll_timeout(), Some(now + Duration::from_millis(300)));
        g.handle_timeout(now + Duration::from_millis(300));
        assert_eq!(transmits(&mut g).len(), 1);
        assert!(!g.is_done());
        g.handle_timeout(now + Duration::from_millis(700));
        assert!(transmits(&mut g).is_empty(), "3 attempts is the limit");
        assert!(g.is_done());
        assert_eq!(g.poll_timeout(), None);
        assert_eq!(g.nat_behavior(), NatBehavior::Unknown);
    }

    #[test]
    fn matches_answers_by_transaction_and_source_only() {
        let now = Instant::now();
        let base = addr("127.0.0.1:1000");
        let server = addr("127.0.0.1:3478");
        let mut g = StunGatherer::new(Duration::from_millis(100), 3);
        g.start(now, &[base, addr("[::1]:1000")], &[server]);
        let sent = transmits(&mut g);
        assert_eq!(
            sent.len(),
            1,
            "IPv6 socket is not paired with an IPv4 server"
        );
        let tid = stun::parse_binding_request(&sent[0].2).unwrap();
        let mapped = addr("203.0.113.9:40000");
        let answer = stun::binding_success(tid, mapped);

        // Wrong source, wrong transaction, wrong socket, not STUN: all left to ICE.
        assert!(!g.handle_datagram(addr("127.0.0.1:9999"), base, &answer));
        let other = stun::binding_success([9; 12], mapped);
        assert!(!g.handle_datagram(server, base, &other));
        assert!(!g.handle_datagram(server, addr("127.0.0.1:2000"), &answer));
        assert!(!g.handle_datagram(server, base, b"\x16\xfe\xfd not stun"));

        assert!(g.handle_datagram(server, base, &answer));
        match g.poll_output() {
            Some(GatherOutput::Mapped(m)) => assert_eq!(m.mapped, mapped),
            other => panic!("expected a mapping, got {other:?}"),
        }
        assert!(
            g.handle_datagram(server, base, &answer),
            "duplicate swallowed"
        );
        assert!(g.poll_output().is_none());
        assert!(g.is_done());
        assert_eq!(g.nat_behavior(), NatBehavior::Nat);
    }

    #[test]
    fn classifies_mapping_behaviour() {
        let base = addr("10.0.0.2:5000");
        let m = |server: &str, mapped: &str| Mapping {
            base,
            server: addr(server),
            mapped: addr(mapped),
        };
        assert_eq!(classify(&[]), NatBehavior::Unknown);
        assert_eq!(
            classify(&[m("192.0.2.1:3478", "10.0.0.2:5000")]),
            NatBehavior::NoNat
        );
        assert_eq!(
            classify(&[
                m("192.0.2.1:3478", "198.51.100.1:6000"),
                m("192.0.2.1:3479", "198.51.100.1:6000")
            ]),
            NatBehavior::EndpointIndependent
        );
        assert_eq!(
            classify(&[
                m("192.0.2.1:3478", "198.51.100.1:6000"),
                m("192.0.2.1:3479", "198.51.100.1:6001")
            ]),
            NatBehavior::Symmetric
        );
    }
}
