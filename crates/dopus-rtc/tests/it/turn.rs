//! Relayed connections through a small TURN server built in the test on turn-server-proto
//! (UDP on 127.0.0.1), the same library the embedded server of `discordopus-server` uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dopus_rtc::{CandidateType, IceServer, PathKind, RelayState, RtcConfig};
use tokio::net::UdpSocket;
use turn_server_proto::api::{TurnServerApi, TurnServerPollRet};
use turn_server_proto::server::TurnServer;
use turn_server_proto::types::{Instant as TurnInstant, TransportType};

use crate::common::*;

/// A running test relay: its address and how many peer-data bytes it relayed.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub relayed_bytes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP TURN server on 127.0.0.1 with one user; relay sockets on 127.0.0.1 too.
pub async fn turn_server(user: &str, pass: &str) -> TestRelay {
    turn_server_on(SocketAddr::from(([127, 0, 0, 1], 0)), user, pass).await
}

/// The same on `listen`; relay sockets on its address.
pub async fn turn_server_on(listen: SocketAddr, user: &str, pass: &str) -> TestRelay {
    let relay_ip = listen.ip();
    let listen = UdpSocket::bind(listen).await.unwrap();
    let addr = listen.local_addr().unwrap();
    let mut server = TurnServer::new(TransportType::Udp, addr, "dopus-test".into());
    server.add_user(user.into(), pass.into());
    let relayed_bytes = Arc::new(AtomicU64::new(0));
    let counter = relayed_bytes.clone();
    let task = tokio::spawn(async move {
        let epoch = Instant::now();
        let t = || TurnInstant::from_nanos((Instant::now() - epoch).as_nanos() as i64);
        let mut relays: Vec<(SocketAddr, Arc<UdpSocket>)> = Vec::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(SocketAddr, SocketAddr, Vec<u8>)>(1024);
        let mut buf = vec![0u8; 65_536];
        loop {
            // Work out what to do next: answer a request, allocate a socket, or wait.
            while let Some(out) = server.poll_transmit(t()) {
                let _ = listen.send_to(&out.data, out.to).await;
            }
            let wait = match server.poll(t()) {
                TurnServerPollRet::AllocateSocket {
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                } => {
                    let sock = Arc::new(UdpSocket::bind((relay_ip, 0)).await.unwrap());
                    let relayed = sock.local_addr().unwrap();
                    relays.push((relayed, sock.clone()));
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                            if tx.send((from, relayed, buf[..n].to_vec())).await.is_err() {
                                return;
                            }
                        }
                    });
                    server.allocated_socket(
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                        Ok(relayed),
                        t(),
                    );
                    continue;
                }
                TurnServerPollRet::WaitUntil(w) => {
                    let d = w.saturating_duration_since(t());
                    d.min(Duration::from_millis(100))
                }
                _ => Duration::from_millis(10),
            };
            let (from, to, data) = tokio::select! {
                r = listen.recv_from(&mut buf) => match r {
                    Ok((n, from)) => (from, addr, buf[..n].to_vec()),
                    Err(_) => continue,
                },
                Some(m) = rx.recv() => m,
                () = tokio::time::sleep(wait) => continue,
            };
            if to == addr
                && let Ok(tid) = dopus_proto::stun::parse_binding_request(&data)
            {
                let _ = listen
                    .send_to(&dopus_proto::stun::binding_success(tid, from), from)
                    .await;
                continue;
            }
            let transmit =
                turn_server_proto::api::Transmit::new(data, TransportType::Udp, from, to);
            if let Some(out) = server.recv(transmit, t()) {
                let out = out.build();
                if out.from == addr {
                    let _ = listen.send_to(&out.data, out.to).await;
                } else if let Some((_, sock)) = relays.iter().find(|(a, _)| *a == out.from) {
                    counter.fetch_add(out.data.len() as u64, Ordering::Relaxed);
                    let _ = sock.send_to(&out.data, out.to).await;
                }
            }
        }
    });
    TestRelay {
        addr,
        relayed_bytes,
        task,
    }
}

fn relay_only(relay: &TestRelay) -> RtcConfig {
    RtcConfig {
        ice_servers: vec![
            IceServer::turn(
                &format!("turn:{}?transport=udp", relay.addr),
                "alice",
                "secret",
            )
            .unwrap(),
        ],
        relay_only: true,
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_on_both_sides_connects_through_the_relay() {
    let relay = turn_server("alice", "secret").await;
    let (mut a, mut b) = pair_with(
        relay_only(&relay),
        relay_only(&relay),
        pass_all(),
        pass_all(),
        |s| s,
    )
    .await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    // Only relayed candidates were signalled, by both sides.
    for side in [&a, &b] {
        let announced = side.announced.lock().unwrap().clone();
        assert!(!announced.is_empty());
        assert!(
            types(&announced).iter().all(|t| *t == CandidateType::Relay),
            "{:?}",
            types(&announced)
        );
    }
    for i in 0..20u32 {
        a.handle.send(pattern(i, 1000 + i as usize)).await.unwrap();
    }
    for i in 0..20u32 {
        assert_eq!(next_data(&mut b).await, pattern(i, 1000 + i as usize));
    }
    b.handle.send(b"back".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut a).await, b"back");
    // The selected pair is relayed, and the relay counted the bytes.
    let deadline = Instant::now() + WAIT;
    let c = loop {
        let c = a.handle.connectivity().await.unwrap();
        if c.path.is_some() || Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(c.path, Some(PathKind::Relayed), "{c}");
    assert!(c.relay_only);
    assert_eq!(c.relays.last().map(|r| &r.state), Some(&RelayState::Ready));
    let d = a.handle.diagnostics().await.unwrap();
    assert!(!d.turn_unused);
    assert_eq!(d.selected_pair.map(|p| p.local), Some(CandidateType::Relay));
    assert!(relay.relayed_bytes.load(Ordering::Relaxed) > 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_side_relay_only_the_other_direct() {
    let relay = turn_server("alice", "secret").await;
    let (mut a, mut b) =
        pair_with(relay_only(&relay), config(), pass_all(), pass_all(), |s| s).await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    a.handle.send(b"hi".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut b).await, b"hi");
    let announced = a.announced.lock().unwrap().clone();
    assert!(types(&announced).iter().all(|t| *t == CandidateType::Relay));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_relay_configured_a_direct_path_still_wins() {
    let relay = turn_server("alice", "secret").await;
    let cfg = RtcConfig {
        ice_servers: vec![
            IceServer::turn(
                &format!("turn:{}?transport=udp", relay.addr),
                "alice",
                "secret",
            )
            .unwrap(),
        ],
        ..config()
    };
    let (mut a, mut b) = pair_with(cfg.clone(), cfg, pass_all(), pass_all(), |s| s).await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    // Both kinds were offered; the relayed candidate has the lowest priority.
    let deadline = Instant::now() + WAIT;
    let kinds = loop {
        let kinds = types(&a.announced.lock().unwrap().clone());
        if kinds.contains(&CandidateType::Relay) || Instant::now() > deadline {
            break kinds;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(kinds.contains(&CandidateType::Host) && kinds.contains(&CandidateType::Relay));
    a.handle.send(b"x".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut b).await, b"x");
    let deadline = Instant::now() + WAIT;
    loop {
        let c = a.handle.connectivity().await.unwrap();
        if let Some(p) = c.path {
            assert_eq!(p, PathKind::DirectHost, "{c}");
            break;
        }
        assert!(Instant::now() < deadline, "no path selected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_turn_credentials_are_reported() {
    let relay = turn_server("alice", "secret").await;
    let cfg = RtcConfig {
        ice_servers: vec![
            IceServer::turn(
                &format!("turn:{}?transport=udp", relay.addr),
                "alice",
                "wrong",
            )
            .unwrap(),
        ],
        ..config()
    };
    let (mut a, mut b) = pair_with(cfg, config(), pass_all(), pass_all(), |s| s).await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let c = a.handle.connectivity().await.unwrap();
        if let Some(RelayState::Failed(why)) = c.relays.last().map(|r| r.state.clone()) {
            assert!(why.contains("refused"), "{why}");
            break;
        }
        assert!(Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_credentials_replace_refused_ones() {
    let relay = turn_server("alice", "secret").await;
    let url = format!("turn:{}?transport=udp", relay.addr);
    let cfg = RtcConfig {
        ice_servers: vec![IceServer::turn(&url, "alice", "expired").unwrap()],
        ..config()
    };
    let (mut a, mut b) = pair_with(cfg, config(), pass_all(), pass_all(), |s| s).await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    let deadline = Instant::now() + WAIT;
    while !matches!(
        a.handle
            .connectivity()
            .await
            .unwrap()
            .relays
            .last()
            .map(|r| &r.state),
        Some(RelayState::Failed(_))
    ) {
        assert!(Instant::now() < deadline, "the first attempt never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The next login's credentials: allocating starts again and works.
    a.handle
        .update_ice_servers(vec![IceServer::turn(&url, "alice", "secret").unwrap()])
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let c = a.handle.connectivity().await.unwrap();
        if c.relays.last().map(|r| &r.state) == Some(&RelayState::Ready) {
            break;
        }
        assert!(Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kinds = types(&a.announced.lock().unwrap().clone());
    assert!(kinds.contains(&CandidateType::Relay), "{kinds:?}");
}
