//! Server-reflexive candidates from an in-test STUN server, and what diagnostics make of them.

use std::net::SocketAddr;
use std::time::Duration;

use dopus_rtc::{
    CandidateType, CloseReason, FailureReason, IceServer, NatBehavior, PeerEvent, RtcConfig,
};
use tokio::net::UdpSocket;

use crate::common::*;
use crate::connect::wait_diag;

fn with_stun(servers: &[SocketAddr]) -> RtcConfig {
    RtcConfig {
        ice_servers: servers
            .iter()
            .map(|s| IceServer::parse(&format!("stun:{s}")).unwrap())
            .collect(),
        ..config()
    }
}

fn is_srflx(line: &str) -> bool {
    CandidateType::of_candidate(line) == Some(CandidateType::Srflx)
}

/// A hides its host candidates, so B can only reach it at the address the STUN server saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_through_a_server_reflexive_candidate() {
    let stun = stun_server(|from| from).await;
    let a_cfg = RtcConfig {
        share_host_candidates: false,
        ..with_stun(&[stun])
    };
    let (mut a, mut b) = pair_with(a_cfg, config(), pass_all(), pass_all(), |s| s).await;
    wait_for(&mut a.events, "gathering complete", |e| {
        matches!(e, PeerEvent::GatheringComplete)
    })
    .await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;

    let announced = types(&a.announced.lock().unwrap());
    assert_eq!(
        announced,
        vec![CandidateType::Srflx],
        "host candidates stay private"
    );

    a.handle.send(b"via srflx".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut b).await, b"via srflx");

    // B sends to A's server-reflexive address; A sends from the host socket behind it.
    let db = wait_diag(&b, |d| d.selected_pair.is_some()).await;
    let pb = db.selected_pair.clone().unwrap();
    assert_eq!(pb.remote, CandidateType::Srflx, "{db:?}");
    assert_eq!(pb.to_string(), "host -> srflx");
    let da = a.handle.diagnostics().await.unwrap();
    assert!(da.local_candidates.contains(&CandidateType::Srflx));
    assert_eq!(
        da.nat,
        NatBehavior::NoNat,
        "loopback: the mapping is the socket itself"
    );
}

/// Two STUN servers that report different ports for the same socket look like a symmetric
/// NAT; with both sides like that and only unreachable srflx addresses, the reason says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_symmetric_nat_is_named_as_the_reason() {
    // Addresses nobody answers on: bound (so nothing else gets the traffic) and never read.
    let holes: Vec<UdpSocket> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        v
    };
    let hole = |i: usize| holes[i].local_addr().unwrap();
    let (h0, h1, h2, h3) = (hole(0), hole(1), hole(2), hole(3));
    let a_stun = [
        stun_server(move |_| h0).await,
        stun_server(move |_| h1).await,
    ];
    let b_stun = [
        stun_server(move |_| h2).await,
        stun_server(move |_| h3).await,
    ];
    let private = |servers: &[SocketAddr]| RtcConfig {
        share_host_candidates: false,
        connect_timeout: Duration::from_secs(3),
        ..with_stun(servers)
    };
    let (mut a, mut b) = pair_with(
        private(&a_stun),
        private(&b_stun),
        pass_all(),
        pass_all(),
        |s| s,
    )
    .await;

    let reason = wait_closed(&mut a).await;
    let CloseReason::Failed(failure) = reason else {
        panic!("expected a failure, got {reason:?}");
    };
    assert!(
        matches!(
            failure,
            FailureReason::NoDirectPath {
                local_nat: NatBehavior::Symmetric,
                remote_looks_symmetric: true,
                ..
            }
        ),
        "{failure:?}"
    );
    assert_eq!(
        failure.to_string(),
        "no direct path: both sides behind symmetric NAT; configure TURN"
    );
    assert_eq!(types(&a.announced.lock().unwrap()).len(), 2);
    assert!(a.announced.lock().unwrap().iter().all(|l| is_srflx(l)));
    assert!(matches!(wait_closed(&mut b).await, CloseReason::Failed(_)));
    drop(holes);
}

/// A STUN server that never answers: gathering still completes (bounded retries) and the
/// connection is made over host candidates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stun_server_gives_up_and_host_path_works() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = RtcConfig {
        stun_initial_rto: Duration::from_millis(20),
        stun_attempts: 3,
        ..with_stun(&[silent.local_addr().unwrap()])
    };
    let (mut a, mut b) = pair_with(cfg, config(), pass_all(), pass_all(), |s| s).await;
    wait_for(&mut a.events, "gathering complete", |e| {
        matches!(e, PeerEvent::GatheringComplete)
    })
    .await;
    wait_open(&mut b).await;
    let mut buf = [0u8; 1500];
    let mut requests = 0;
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(200), silent.recv_from(&mut buf)).await
    {
        assert!(dopus_proto::stun::parse_binding_request(&buf[..n]).is_ok());
        requests += 1;
    }
    assert_eq!(requests, 3, "exactly stun_attempts requests");
    let d = a.handle.diagnostics().await.unwrap();
    assert_eq!(d.nat, NatBehavior::Unknown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_turn_server_leaves_the_direct_path_working() {
    let cfg = RtcConfig {
        ice_servers: vec![IceServer::turn("turn:127.0.0.1:3478", "u", "p").unwrap()],
        ..config()
    };
    let (mut a, mut b) = pair_with(cfg, config(), pass_all(), pass_all(), |s| s).await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    let d = a.handle.diagnostics().await.unwrap();
    assert!(d.turn_unused);
    assert!(!d.local_candidates.contains(&CandidateType::Relay));
}
