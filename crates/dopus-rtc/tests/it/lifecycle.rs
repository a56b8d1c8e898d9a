//! Backpressure, timeouts, ICE restart and closing.

use std::time::Duration;

use dopus_rtc::{CloseReason, FailureReason, PeerConnection, PeerEvent, RtcConfig};

use crate::common::*;
use crate::connect::wait_diag;

/// 16 MiB in 16 KiB messages through a 64 KiB send buffer: `send` has to wait many times, and
/// every byte arrives in order. B answers with a burst of its own at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_hits_backpressure_and_every_byte_arrives_in_order() {
    const COUNT: u32 = 1024;
    const LEN: usize = 16 * 1024;
    let small = || RtcConfig {
        send_buffer: 64 * 1024,
        max_message_size: LEN,
        ..config()
    };
    let (mut a, mut b) = pair_with(small(), small(), pass_all(), pass_all(), |s| s).await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;

    let sender = |h: dopus_rtc::PeerHandle, salt: u32| {
        tokio::spawn(async move {
            for i in 0..COUNT {
                tokio::time::timeout(WAIT, h.send(pattern(i ^ salt, LEN)))
                    .await
                    .expect("send stalled")
                    .expect("send failed");
            }
        })
    };
    let a_sends = sender(a.handle.clone(), 0);
    let b_sends = sender(b.handle.clone(), 0xABCD);
    for i in 0..COUNT {
        let got = next_data(&mut b).await;
        assert!(got == pattern(i, LEN), "message {i} from a differs");
    }
    for i in 0..COUNT {
        let got = next_data(&mut a).await;
        assert!(
            got == pattern(i ^ 0xABCD, LEN),
            "message {i} from b differs"
        );
    }
    a_sends.await.unwrap();
    b_sends.await.unwrap();
    let d = a.handle.diagnostics().await.unwrap();
    assert_eq!(d.messages_sent, u64::from(COUNT));
    assert_eq!(d.messages_received, u64::from(COUNT));
    assert!(
        d.send_waits > 0,
        "the burst never filled the send buffer: {d:?}"
    );
    assert!(d.bytes_sent > u64::from(COUNT) * LEN as u64);
}

/// The same through `send_all`: batches of 1 to 37 messages, most of them larger than the room
/// left in the send buffer, so batches stop part-way and resume. Every batch is reported whole,
/// every message arrives once and in order, both ways at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_through_a_full_send_buffer_arrive_whole_and_in_order() {
    const COUNT: u32 = 1200;
    const LEN: usize = 4 * 1024;
    let small = || RtcConfig {
        send_buffer: 64 * 1024,
        max_message_size: LEN,
        ..config()
    };
    let (mut a, mut b) = pair_with(small(), small(), pass_all(), pass_all(), |s| s).await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;

    let sender = |h: dopus_rtc::PeerHandle, salt: u32| {
        tokio::spawn(async move {
            let (mut next, mut size) = (0u32, 1u32);
            while next < COUNT {
                let end = (next + size).min(COUNT);
                let batch: Vec<Vec<u8>> = (next..end).map(|i| pattern(i ^ salt, LEN)).collect();
                let (sent, result) = tokio::time::timeout(WAIT, h.send_all(batch))
                    .await
                    .expect("send_all stalled");
                result.expect("send_all failed");
                assert_eq!(sent, (end - next) as usize, "a batch was not taken whole");
                next = end;
                size = size % 37 + 1;
            }
        })
    };
    let a_sends = sender(a.handle.clone(), 0);
    let b_sends = sender(b.handle.clone(), 0x5A5A);
    for i in 0..COUNT {
        let got = next_data(&mut b).await;
        assert!(got == pattern(i, LEN), "message {i} from a differs");
    }
    for i in 0..COUNT {
        let got = next_data(&mut a).await;
        assert!(
            got == pattern(i ^ 0x5A5A, LEN),
            "message {i} from b differs"
        );
    }
    a_sends.await.unwrap();
    b_sends.await.unwrap();
    let d = a.handle.diagnostics().await.unwrap();
    assert_eq!(d.messages_sent, u64::from(COUNT));
    assert_eq!(d.messages_received, u64::from(COUNT));
    assert!(
        d.send_waits > 0,
        "no batch ever filled the send buffer: {d:?}"
    );
}

/// A batch with one bad message is refused whole, before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_bad_message_sends_nothing() {
    let (mut a, mut b) = pair().await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    let too_big = vec![1u8; config().max_message_size + 1];
    let (sent, result) = a.handle.send_all(vec![b"ok".to_vec(), too_big]).await;
    assert_eq!(sent, 0);
    assert!(matches!(
        result,
        Err(dopus_rtc::PeerError::MessageTooLarge { .. })
    ));
    let (sent, result) = a.handle.send_all(vec![b"ok".to_vec(), Vec::new()]).await;
    assert_eq!(sent, 0);
    assert!(matches!(result, Err(dopus_rtc::PeerError::EmptyMessage)));
    let (sent, result) = a
        .handle
        .send_all(vec![b"first".to_vec(), b"second".to_vec()])
        .await;
    assert_eq!((sent, result.is_ok()), (2, true));
    assert_eq!(next_data(&mut b).await, b"first");
    assert_eq!(next_data(&mut b).await, b"second");
    let d = a.handle.diagnostics().await.unwrap();
    assert_eq!(d.messages_sent, 2, "a refused batch reached the wire");
}

/// A reader that stops reading must not make the sender's memory grow without bound: the
/// sender ends up waiting, and everything arrives once the reader reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_pushes_back_to_the_sender() {
    const LEN: usize = 64 * 1024;
    let cfg = || RtcConfig {
        event_capacity: 4,
        ..config()
    };
    let (ha, ea, offer) = PeerConnection::offer(cfg()).await.unwrap();
    let (hb, mut eb_raw, answer) = PeerConnection::answer(cfg(), &offer).await.unwrap();
    let (mut ea, _) = relay(ea, hb.clone(), pass_all());
    ha.accept_answer(&answer).await.unwrap();
    // B's candidates go to A by hand here, since B's raw event stream is the subject.
    let mut b_open = false;
    while !b_open {
        let ev = tokio::time::timeout(WAIT, eb_raw.recv())
            .await
            .unwrap()
            .unwrap();
        match ev {
            PeerEvent::LocalCandidate(c) => ha.add_remote_candidate(&c).await.unwrap(),
            PeerEvent::ChannelOpen => b_open = true,
            _ => {}
        }
    }
    wait_for(&mut ea, "a open", |e| matches!(e, PeerEvent::ChannelOpen)).await;

    // B does not read. A sends until a send takes long: it is blocked by backpressure.
    let mut sent = 0u32;
    let blocked = loop {
        assert!(
            sent < 2000,
            "sender never blocked: memory would grow without bound"
        );
        match tokio::time::timeout(Duration::from_millis(1500), ha.send(pattern(sent, LEN))).await {
            Ok(r) => {
                r.unwrap();
                sent += 1;
            }
            Err(_) => break true,
        }
    };
    assert!(blocked);
    // A blocked send was abandoned by the timeout above (it may still have gone out).
    // Now B reads: everything A completed arrives, in order.
    let mut got = 0u32;
    while got < sent {
        let ev = tokio::time::timeout(WAIT, eb_raw.recv())
            .await
            .unwrap()
            .unwrap();
        if let PeerEvent::Data(d) = ev {
            assert!(d == pattern(got, LEN), "message {got} differs");
            got += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed_on_both_sides() {
    let idle = || RtcConfig {
        idle_timeout: Some(Duration::from_millis(1500)),
        ..config()
    };
    let (mut a, mut b) = pair_with(idle(), idle(), pass_all(), pass_all(), |s| s).await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    a.handle.send(b"one".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut b).await, b"one");
    let ra = wait_closed(&mut a).await;
    let rb = wait_closed(&mut b).await;
    // Whichever timer fired first, the other side may see the close as remote.
    assert!(
        ra == CloseReason::IdleTimeout || rb == CloseReason::IdleTimeout,
        "{ra:?} {rb:?}"
    );
    assert!(matches!(ra, CloseReason::IdleTimeout | CloseReason::Remote));
    assert!(matches!(rb, CloseReason::IdleTimeout | CloseReason::Remote));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_never_answered_times_out_with_a_clear_reason() {
    let cfg = RtcConfig {
        connect_timeout: Duration::from_millis(800),
        ..config()
    };
    let (_h, mut events, _offer) = PeerConnection::offer(cfg).await.unwrap();
    let mut failed = None;
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(ev) = events.recv().await {
            match ev {
                PeerEvent::State(dopus_rtc::ConnectionState::Failed(r)) => failed = Some(r),
                PeerEvent::Closed { reason } => return reason,
                _ => {}
            }
        }
        panic!("stream ended without Closed");
    })
    .await
    .unwrap();
    assert_eq!(failed, Some(FailureReason::NoAnswer));
    assert_eq!(closed, CloseReason::Failed(FailureReason::NoAnswer));
    assert_eq!(
        closed.to_string(),
        "failed: the peer never answered the connection offer"
    );
}

/// Neither description carries a candidate and none is trickled (a signaling path that loses
/// them): each side names that as the reason. (With candidates on one side only, ICE would
/// still connect through a peer-reflexive candidate.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_candidates_either_way_times_out_with_a_clear_reason() {
    let cfg = || RtcConfig {
        connect_timeout: Duration::from_millis(1500),
        ..config()
    };
    let strip = |sdp: &str| {
        sdp.split("\r\n")
            .filter(|l| !l.starts_with("a=candidate:"))
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    let (ha, ea, offer) = PeerConnection::offer(cfg()).await.unwrap();
    let (hb, eb, answer) = PeerConnection::answer(cfg(), &strip(&offer)).await.unwrap();
    ha.accept_answer(&strip(&answer)).await.unwrap();
    let never = || -> Filter { std::sync::Arc::new(|_| false) };
    let (ea, _) = relay(ea, hb.clone(), never());
    let (eb, _) = relay(eb, ha.clone(), never());
    for events in [ea, eb] {
        let mut side = Side {
            handle: ha.clone(),
            events,
            announced: Default::default(),
        };
        assert_eq!(
            wait_closed(&mut side).await,
            CloseReason::Failed(FailureReason::NoRemoteCandidates)
        );
    }
}

/// B's sockets go away (network change): B rebinds, restarts ICE, and the same channel keeps
/// working over the new sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_after_rebind_keeps_the_channel() {
    let (mut a, mut b) = pair().await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    a.handle.send(b"before".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut b).await, b"before");
    let before = wait_diag(&b, |d| d.selected_pair.is_some()).await;
    let old_local = *before.selected_pair.unwrap().local_addr.expose();

    let offer = b.handle.restart_ice_rebind().await.unwrap();
    let answer = a.handle.accept_offer(&offer).await.unwrap();
    b.handle.accept_answer(&answer).await.unwrap();

    // Messages sent during the switch are delivered once the new path is up.
    a.handle.send(b"during".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut b).await, b"during");
    b.handle.send(b"after".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut a).await, b"after");
    let after = wait_diag(&b, |d| {
        d.selected_pair
            .as_ref()
            .is_some_and(|p| *p.local_addr.expose() != old_local)
    })
    .await;
    assert!(after.failure.is_none());
}

/// A restart on the same sockets (e.g. after `Disconnected`) also works, from the answerer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_without_rebind() {
    let (mut a, mut b) = pair().await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    let offer = a.handle.restart_ice().await.unwrap();
    let answer = b.handle.accept_offer(&offer).await.unwrap();
    a.handle.accept_answer(&answer).await.unwrap();
    b.handle.send(b"still here".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut a).await, b"still here");
    // Out-of-order negotiation is refused, not fatal.
    assert!(a.handle.accept_answer(&answer).await.is_err());
    a.handle.send(b"and here".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut b).await, b"and here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_the_connection() {
    let (handle, mut events, _offer) = PeerConnection::offer(config()).await.unwrap();
    let second = handle.clone();
    drop(handle);
    second.diagnostics().await.unwrap(); // still alive while a clone exists
    drop(second);
    let reason = tokio::time::timeout(WAIT, async {
        while let Some(ev) = events.recv().await {
            if let PeerEvent::Closed { reason } = ev {
                return reason;
            }
        }
        panic!("stream ended without Closed");
    })
    .await
    .unwrap();
    assert_eq!(reason, CloseReason::Local);
    assert!(
        tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_from_the_peer_is_an_error_not_a_panic() {
    let (a, _b) = pair().await;
    for junk in ["", "v=0", "garbage\r\n\r\n", "a=fingerprint:sha-256 00"] {
        assert!(a.handle.accept_offer(junk).await.is_err());
    }
    for junk in [
        "candidate:",
        "candidate:1 1 udp x 127.0.0.1 9 typ host",
        "hello",
    ] {
        assert!(a.handle.add_remote_candidate(junk).await.is_err(), "{junk}");
    }
    // Empty lines and end-of-candidates are accepted silently.
    a.handle.add_remote_candidate("").await.unwrap();
    a.handle
        .add_remote_candidate("a=end-of-candidates")
        .await
        .unwrap();
}
