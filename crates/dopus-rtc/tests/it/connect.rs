//! Connection set-up and the message channel.

use std::time::Duration;

use dopus_rtc::{
    CandidateType, CloseReason, ConnectionState, DEFAULT_MAX_MESSAGE_SIZE, PeerError, PeerEvent,
};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_and_exchanges_messages_both_ways() {
    let (mut a, mut b) = pair().await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;

    tokio::time::timeout(WAIT, a.handle.send(b"hello from a".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next_data(&mut b).await, b"hello from a");
    tokio::time::timeout(WAIT, b.handle.send(b"hello from b".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next_data(&mut a).await, b"hello from b");

    // The largest allowed message, both ways; an empty one is refused.
    let big = pattern(7, DEFAULT_MAX_MESSAGE_SIZE);
    a.handle.send(big.clone()).await.unwrap();
    assert_eq!(next_data(&mut b).await, big);
    assert!(matches!(
        a.handle.send(Vec::new()).await,
        Err(PeerError::EmptyMessage)
    ));
    b.handle.send(big.clone()).await.unwrap();
    assert_eq!(next_data(&mut a).await, big);

    // One byte over the limit is refused up front.
    let too_big = vec![0u8; DEFAULT_MAX_MESSAGE_SIZE + 1];
    assert!(matches!(
        a.handle.send(too_big).await,
        Err(PeerError::MessageTooLarge { .. })
    ));

    // Host candidates only; the pair says so once stats came in.
    assert!(
        types(&a.announced.lock().unwrap())
            .iter()
            .all(|t| *t == CandidateType::Host)
    );
    let d = wait_diag(&a, |d| d.selected_pair.is_some() && d.rtt.is_some()).await;
    assert!(d.rtt.unwrap() < std::time::Duration::from_secs(1), "{d:?}");
    let pair = d.selected_pair.unwrap();
    assert_eq!(
        (pair.local, pair.remote),
        (CandidateType::Host, CandidateType::Host)
    );
    assert_eq!(d.state, ConnectionState::Connected);
    assert!(d.bytes_sent > big.len() as u64 && d.bytes_received > big.len() as u64);
    assert_eq!(d.messages_sent, 2);
    assert_eq!(d.messages_received, 2);
    assert!(d.setup_time.is_some());

    a.handle.close().await;
    assert_eq!(wait_closed(&mut a).await, CloseReason::Local);
    assert_eq!(wait_closed(&mut b).await, CloseReason::Remote);
    assert!(matches!(
        a.handle.send(b"late".to_vec()).await,
        Err(PeerError::Closed)
    ));
}

/// Polls diagnostics until `ok` (bounded by `WAIT`).
pub async fn wait_diag(
    side: &Side,
    ok: impl Fn(&dopus_rtc::Diagnostics) -> bool,
) -> dopus_rtc::Diagnostics {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let d = side.handle.diagnostics().await.unwrap();
        if ok(&d) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "diagnostics never got there: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_before_open_are_state_changes_in_order() {
    let (mut a, _b) = pair().await;
    let mut states = Vec::new();
    loop {
        match wait_for(&mut a.events, "open", |_| true).await {
            PeerEvent::State(s) => states.push(s),
            PeerEvent::ChannelOpen => break,
            _ => {}
        }
    }
    assert_eq!(
        states,
        vec![ConnectionState::Checking, ConnectionState::Connected]
    );
}

/// IPv6 works the same way (loopback `::1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_over_ipv6_loopback() {
    let v6 = || dopus_rtc::RtcConfig {
        bind: dopus_rtc::BindPolicy::Addrs(vec!["[::1]:0".parse().unwrap()]),
        ..config()
    };
    let (mut a, mut b) = pair_with(v6(), v6(), pass_all(), pass_all(), |s| s).await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    a.handle.send(b"over v6".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut b).await, b"over v6");
    let d = wait_diag(&b, |d| d.selected_pair.is_some()).await;
    assert!(d.selected_pair.unwrap().remote_addr.expose().is_ipv6());
}
