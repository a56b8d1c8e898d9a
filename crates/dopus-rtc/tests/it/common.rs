//! Test peers wired through an in-memory "signaling" relay, and bounded waiting helpers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dopus_rtc::{
    CandidateType, CloseReason, DtlsIdentity, PeerConnection, PeerEvent, PeerEvents, PeerHandle,
    RtcConfig,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// One side of a test connection: its handle, its non-candidate events, and every local
/// candidate line it announced.
pub struct Side {
    pub handle: PeerHandle,
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
    pub announced: Arc<Mutex<Vec<String>>>,
}

/// What the relay does with a candidate line on its way to the peer.
pub type Filter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub fn pass_all() -> Filter {
    Arc::new(|_| true)
}

/// A loopback configuration with its own certificate and short timeouts.
pub fn config() -> RtcConfig {
    RtcConfig {
        dtls_identity: Some(DtlsIdentity::generate().unwrap()),
        connect_timeout: Duration::from_secs(10),
        ..RtcConfig::loopback()
    }
}

/// Forwards `events` of one side: candidates (if `filter` lets them) to `peer`, the rest to the
/// returned receiver. Ends with the event stream.
pub fn relay(
    mut events: PeerEvents,
    peer: PeerHandle,
    filter: Filter,
) -> (mpsc::UnboundedReceiver<PeerEvent>, Arc<Mutex<Vec<String>>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let announced = Arc::new(Mutex::new(Vec::new()));
    let seen = announced.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                PeerEvent::LocalCandidate(c) => {
                    seen.lock().unwrap().push(c.clone());
                    if filter(&c) {
                        let _ = peer.add_remote_candidate(&c).await;
                    }
                }
                other => {
                    if tx.send(other).is_err() {
                        break;
                    }
                }
            }
        }
    });
    (rx, announced)
}

/// Offer, answer, trickle: two connected sides (not yet waited for).
pub async fn pair_with(
    a: RtcConfig,
    b: RtcConfig,
    a_filter: Filter,
    b_filter: Filter,
    tamper_answer: impl FnOnce(String) -> String,
) -> (Side, Side) {
    let (ha, ea, offer) = PeerConnection::offer(a).await.unwrap();
    let (hb, eb, answer) = PeerConnection::answer(b, &offer).await.unwrap();
    // B's candidates reach A before A has the answer: A must queue them.
    let (eb, b_announced) = relay(eb, ha.clone(), b_filter);
    let (ea, a_announced) = relay(ea, hb.clone(), a_filter);
    tokio::time::sleep(Duration::from_millis(20)).await;
    ha.accept_answer(&tamper_answer(answer)).await.unwrap();
    (
        Side {
            handle: ha,
            events: ea,
            announced: a_announced,
        },
        Side {
            handle: hb,
            events: eb,
            announced: b_announced,
        },
    )
}

pub async fn pair() -> (Side, Side) {
    pair_with(config(), config(), pass_all(), pass_all(), |s| s).await
}

/// Waits for the first event matching `want`, skipping others; panics after `WAIT`.
pub async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<PeerEvent>,
    what: &str,
    want: impl Fn(&PeerEvent) -> bool,
) -> PeerEvent {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(ev) = events.recv().await {
            if want(&ev) {
                return Some(ev);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("event stream ended before {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

pub async fn wait_open(side: &mut Side) {
    wait_for(&mut side.events, "channel open", |e| {
        matches!(e, PeerEvent::ChannelOpen)
    })
    .await;
}

pub async fn wait_closed(side: &mut Side) -> CloseReason {
    match wait_for(&mut side.events, "closed", |e| {
        matches!(e, PeerEvent::Closed { .. })
    })
    .await
    {
        PeerEvent::Closed { reason } => reason,
        _ => unreachable!(),
    }
}

/// The next data message; panics on timeout or on any other event but state/candidate ones.
pub async fn next_data(side: &mut Side) -> Vec<u8> {
    match wait_for(&mut side.events, "data", |e| {
        matches!(e, PeerEvent::Data(_) | PeerEvent::Closed { .. })
    })
    .await
    {
        PeerEvent::Data(d) => d,
        other => panic!("connection ended while waiting for data: {other:?}"),
    }
}

pub fn types(lines: &[String]) -> Vec<CandidateType> {
    lines
        .iter()
        .filter_map(|l| CandidateType::of_candidate(l))
        .collect()
}

/// A STUN server on 127.0.0.1 built on `dopus_proto::stun`. `map` decides the address it
/// reports for a client (the truth is the source address). Serves `limit` requests at most.
pub async fn stun_server(map: impl Fn(SocketAddr) -> SocketAddr + Send + 'static) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        for _ in 0..1000 {
            let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_secs(60), socket.recv_from(&mut buf)).await
            else {
                return;
            };
            if let Ok(tid) = dopus_proto::stun::parse_binding_request(&buf[..n]) {
                let resp = dopus_proto::stun::binding_success(tid, map(from));
                let _ = socket.send_to(&resp, from).await;
            }
        }
    });
    addr
}

/// Bytes for message `i` of length `len`: a pattern that changes with every byte and message.
pub fn pattern(i: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = i.wrapping_mul(2_654_435_761).wrapping_add(1);
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x & 0xff) as u8);
    }
    v
}
