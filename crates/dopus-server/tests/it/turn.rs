//! The embedded TURN relay: credentials in the login answer, relayed peer connections through
//! it (dopus-rtc, relay-only on both sides), and bad input of every kind.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dopus_proto::signaling::ServerFrame;
use dopus_rtc::{CandidateType, IceServer, PathKind, PeerConnection, PeerEvent, RtcConfig};
use dopus_server::TurnSettings;
use dopus_server::turn::rest_password;
use tokio::net::UdpSocket;
use turn_client_proto::api::{TurnClientApi, TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::types::stun::attribute::ErrorCode;
use turn_client_proto::types::stun::message::Message;
use turn_client_proto::types::{Instant as TurnInstant, TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "loopback-test-secret";

async fn turn_server(tweak: impl FnOnce(&mut TurnSettings)) -> TestServer {
    let mut settings = TurnSettings::loopback();
    tweak(&mut settings);
    start(|c| {
        c.turn = Some(settings);
    })
    .await
}

fn ice(info: &[dopus_proto::signaling::IceServerInfo]) -> Vec<IceServer> {
    info.iter()
        .flat_map(|s| {
            s.urls.iter().filter_map(|u| {
                IceServer::turn(
                    u,
                    s.username.as_deref().unwrap_or_default(),
                    s.credential.as_deref().unwrap_or_default(),
                )
                .ok()
            })
        })
        .collect()
}

#[tokio::test]
async fn login_hands_out_fresh_rest_credentials_on_protocol_2_only() {
    let s = turn_server(|_| {}).await;
    let alice = TestUser::new();
    let c1 = connect(&s.url(), &alice, 1).await;
    let servers = c1.client.ice_servers();
    assert_eq!(servers.len(), 1);
    let info = &servers[0];
    let user = info.username.clone().unwrap();
    let (expiry, opaque) = user.split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expiry > now + 3500 && expiry <= now + 3601,
        "{expiry} vs {now}"
    );
    assert!(!opaque.is_empty() && !alice.id.to_string().contains(opaque));
    assert!(!user.contains(&alice.id.to_string()));
    assert_eq!(
        info.credential.as_deref(),
        Some(rest_password(SECRET.as_bytes(), &user).as_str())
    );
    assert!(info.urls.iter().any(|u| u.ends_with("?transport=udp")));
    assert!(info.urls.iter().any(|u| u.ends_with("?transport=tcp")));
    // The Debug form shows no secret.
    let dbg = format!("{info:?}");
    assert!(!dbg.contains(opaque) && !dbg.contains(info.credential.as_deref().unwrap()));
    // Another login, another opaque name.
    let c2 = connect(&s.url(), &alice, 2).await;
    assert_ne!(c2.client.ice_servers()[0].username, info.username);
    // A version-1 connection gets no new field.
    let mut ws = raw(&s.url()).await;
    let ServerFrame::Challenge { version, .. } = raw_recv(&mut ws).await else {
        panic!("challenge")
    };
    assert_eq!(version, 1);
    drop(ws);
    let mut ws = raw_login(&s.url(), &alice, 3).await;
    let _ = &mut ws;
    c1.client.shutdown().await;
    c2.client.shutdown().await;
}

#[tokio::test]
async fn no_turn_no_credentials() {
    let s = start(|_| {}).await;
    let alice = TestUser::new();
    let c = connect(&s.url(), &alice, 1).await;
    assert!(c.client.ice_servers().is_empty());
    assert!(s.server.turn_addrs.is_none());
    c.client.shutdown().await;
}

fn cfg(servers: &[dopus_proto::signaling::IceServerInfo], only: &str) -> RtcConfig {
    RtcConfig {
        ice_servers: ice(servers)
            .into_iter()
            .filter(|s| format!("{s:?}").contains(only))
            .collect(),
        relay_only: true,
        connect_timeout: Duration::from_secs(15),
        ..RtcConfig::loopback()
    }
}

/// Connects two relay-only peers with the credentials two logins got; returns their handles
/// and event streams (candidates are exchanged by a forwarding task).
async fn relayed_pair(
    s: &TestServer,
    only: &str,
) -> (
    (
        dopus_rtc::PeerHandle,
        tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
    ),
    (
        dopus_rtc::PeerHandle,
        tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
    ),
    Vec<String>,
) {
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let ca = connect(&s.url(), &alice, 1).await;
    let cb = connect(&s.url(), &bob, 1).await;
    let (ha, ea, offer) = PeerConnection::offer(cfg(&ca.client.ice_servers(), only))
        .await
        .unwrap();
    let (hb, eb, answer) = PeerConnection::answer(cfg(&cb.client.ice_servers(), only), &offer)
        .await
        .unwrap();
    ha.accept_answer(&answer).await.unwrap();
    ca.client.shutdown().await;
    cb.client.shutdown().await;
    // Forward candidates both ways; everything else goes to the test.
    let (ta, ra) = tokio::sync::mpsc::unbounded_channel();
    let (tb, rb) = tokio::sync::mpsc::unbounded_channel();
    let announced = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for (mut from, to, out) in [(ea, hb.clone(), ta), (eb, ha.clone(), tb)] {
        let announced = announced.clone();
        tokio::spawn(async move {
            while let Some(e) = from.recv().await {
                match e {
                    PeerEvent::LocalCandidate(c) => {
                        announced.lock().unwrap().push(c.clone());
                        let _ = to.add_remote_candidate(&c).await;
                    }
                    other => {
                        let _ = out.send(other);
                    }
                }
            }
        });
    }
    let list = announced.lock().unwrap().clone();
    ((ha, ra), (hb, rb), list)
}

async fn open(rx: &mut tokio::sync::mpsc::UnboundedReceiver<PeerEvent>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(PeerEvent::ChannelOpen)) => return,
            Ok(Some(PeerEvent::Closed { reason })) => panic!("closed: {reason}"),
            Ok(Some(_)) => {}
            other => panic!("no channel: {other:?}"),
        }
    }
}

async fn data(rx: &mut tokio::sync::mpsc::UnboundedReceiver<PeerEvent>) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(PeerEvent::Data(d))) => return d,
            Ok(Some(_)) => {}
            other => panic!("no data: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_peers_talk_through_the_embedded_relay() {
    let s = turn_server(|_| {}).await;
    let ((ha, mut ra), (hb, mut rb), _) = relayed_pair(&s, "turn:").await;
    open(&mut ra).await;
    open(&mut rb).await;
    let before = s
        .server
        .metrics
        .turn_relayed_bytes_total
        .load(Ordering::Relaxed);
    let msg = vec![0x5a; 50_000];
    for _ in 0..4 {
        ha.send(msg.clone()).await.unwrap();
    }
    for _ in 0..4 {
        assert_eq!(data(&mut rb).await, msg);
    }
    hb.send(b"pong".to_vec()).await.unwrap();
    assert_eq!(data(&mut ra).await, b"pong");
    let after = s
        .server
        .metrics
        .turn_relayed_bytes_total
        .load(Ordering::Relaxed);
    // Each byte crosses the relay twice (alice's allocation out, bob's allocation in).
    assert!(after - before >= 2 * 200_000, "{before} -> {after}");
    assert!(s.server.metrics.turn_allocations.load(Ordering::Relaxed) >= 2);
    let deadline = Instant::now() + WAIT;
    loop {
        let c = ha.connectivity().await.unwrap();
        if c.path.is_some() {
            assert_eq!(c.path, Some(PathKind::Relayed), "{c}");
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = ha.diagnostics().await.unwrap();
    assert_eq!(d.selected_pair.map(|p| p.local), Some(CandidateType::Relay));
    let (_, text) = http_get(s.server.addr, "/metrics").await;
    assert!(text.contains("dopus_turn_relayed_bytes_total"), "{text}");
    ha.close().await;
    hb.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_outside_the_allow_list_are_forbidden() {
    // Loopback peers are not public: without the allow-list, nothing is relayed to them.
    let s = turn_server(|t| t.allow_peers.clear()).await;
    let ((_ha, mut ra), (_hb, _rb), _) = relayed_pair(&s, "turn:").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, ra.recv()).await {
            Ok(Some(PeerEvent::ChannelOpen)) => panic!("connected through a forbidden peer"),
            Ok(Some(PeerEvent::Closed { .. })) | Err(_) | Ok(None) => break,
            Ok(Some(_)) => {}
        }
    }
    assert!(s.server.metrics.turn_refused_total.load(Ordering::Relaxed) > 0);
    assert_eq!(
        s.server
            .metrics
            .turn_relayed_bytes_total
            .load(Ordering::Relaxed),
        0
    );
}

/// Drives a turn-client-proto UDP client against the server in real time until it allocates
/// or gives up; returns the error codes the server answered and the relayed address.
async fn allocate(server: SocketAddr, user: &str, pass: &str) -> (Vec<u16>, Option<SocketAddr>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = sock.local_addr().unwrap();
    let mut config = TurnConfig::new(TurnCredentials::new(user, pass));
    config.set_anonymous_username(turn_client_proto::stun::auth::Feature::Disabled);
    let mut client = TurnClientUdp::allocate(local, server, config);
    let epoch = Instant::now();
    let t = || TurnInstant::from_nanos((Instant::now() - epoch).as_nanos() as i64);
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        while let Some(tx) = client.poll_transmit(t()) {
            sock.send_to(&tx.data, tx.to).await.unwrap();
        }
        while let Some(e) = client.poll_event() {
            match e {
                TurnEvent::AllocationCreated(_, relayed) => return (codes, Some(relayed)),
                TurnEvent::AllocationCreateFailed(_) => return (codes, None),
                _ => {}
            }
        }
        if let TurnPollRet::Closed = client.poll(t()) {
            return (codes, None);
        }
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(50), sock.recv_from(&mut buf)).await
        {
            if let Ok(m) = Message::from_bytes(&buf[..n])
                && let Ok(e) = m.attribute::<ErrorCode>()
            {
                codes.push(e.code());
            }
            let transmit = turn_client_proto::api::Transmit::new(
                buf[..n].to_vec(),
                TransportType::Udp,
                from,
                local,
            );
            let _ = matches!(client.recv(transmit, t()), TurnRecvRet::Handled);
        }
    }
    (codes, None)
}

fn creds(expiry: u64) -> (String, String) {
    let user = format!("{expiry}:test{expiry}");
    let pass = rest_password(SECRET.as_bytes(), &user);
    (user, pass)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_and_bad_input_is_survived() {
    let s = turn_server(|_| {}).await;
    let server = s.server.turn_addrs.unwrap().listen;
    // Junk of every shape first: the server must stay up and keep answering.
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut stun_like = vec![0u8; 20];
    stun_like[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    stun_like[1] = 3; // ALLOCATE with a bogus length below
    stun_like[3] = 200;
    for d in [
        vec![],
        vec![0xff; 3],
        vec![0x40, 0x00, 0x00, 0x10],
        stun_like,
        vec![0; 1400],
        vec![0x40, 0x01, 0xff, 0xff, 1, 2, 3],
    ] {
        junk.send_to(&d, server).await.unwrap();
    }
    // Valid REST credentials allocate (after the 401 round).
    let (user, pass) = creds(unix_now() + 600);
    let (codes, relayed) = allocate(server, &user, &pass).await;
    assert!(relayed.is_some(), "{codes:?}");
    assert_eq!(codes.first(), Some(&401));
    // A wrong password: 401 again, no allocation.
    let (codes, relayed) = allocate(server, &user, "wrong").await;
    assert!(relayed.is_none());
    assert!(
        codes.iter().all(|c| *c == 401) && codes.len() >= 2,
        "{codes:?}"
    );
    // Expired credentials: never known to the relay, 401.
    let (old_user, old_pass) = creds(unix_now() - 10);
    let (codes, relayed) = allocate(server, &old_user, &old_pass).await;
    assert!(relayed.is_none());
    assert!(codes.iter().all(|c| *c == 401), "{codes:?}");
    // Not REST-shaped at all.
    let (codes, relayed) = allocate(server, "alice", "secret").await;
    assert!(relayed.is_none() && codes.iter().all(|c| *c == 401));
    assert!(s.server.metrics.turn_refused_total.load(Ordering::Relaxed) >= 3);
    assert_eq!(
        s.server
            .metrics
            .turn_allocations_total
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_quotas_answer_508() {
    let s = turn_server(|t| t.max_allocations = 1).await;
    let server = s.server.turn_addrs.unwrap().listen;
    let (user, pass) = creds(unix_now() + 600);
    let (_, first) = allocate(server, &user, &pass).await;
    assert!(first.is_some());
    let (codes, second) = allocate(server, &user, &pass).await;
    assert!(second.is_none());
    assert!(codes.contains(&508), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_over_tcp_when_only_tcp_is_offered() {
    let s = turn_server(|_| {}).await;
    let ((ha, mut ra), (hb, mut rb), _) = relayed_pair(&s, "transport=tcp").await;
    open(&mut ra).await;
    open(&mut rb).await;
    for i in 0..10u8 {
        ha.send(vec![i; 30_000]).await.unwrap();
    }
    for i in 0..10u8 {
        assert_eq!(data(&mut rb).await, vec![i; 30_000]);
    }
    let c = ha.connectivity().await.unwrap();
    assert_eq!(
        c.relays.last().map(|r| (r.transport, r.state.clone())),
        Some((dopus_rtc::RelayTransport::Tcp, dopus_rtc::RelayState::Ready)),
        "{c:?}"
    );
    assert!(
        s.server
            .metrics
            .turn_relayed_bytes_total
            .load(Ordering::Relaxed)
            >= 600_000
    );
    hb.close().await;
}
