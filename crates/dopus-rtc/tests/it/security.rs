//! A substituted DTLS fingerprint must fail the connection, never connect it.

use dopus_rtc::{CloseReason, ConnectionState, DtlsIdentity, FailureReason, PeerEvent};

use crate::common::*;

/// Replaces the `a=fingerprint` lines of an SDP with `fingerprint` (`sha-256 AB:…`).
fn swap_fingerprint(sdp: &str, fingerprint: &str) -> String {
    let mut swapped = 0;
    let out: Vec<String> = sdp
        .split("\r\n")
        .map(|l| {
            if l.starts_with("a=fingerprint:") {
                swapped += 1;
                format!("a=fingerprint:{fingerprint}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert!(swapped > 0, "no fingerprint in the SDP: {sdp}");
    out.join("\r\n")
}

/// A malicious relay swaps the answer's fingerprint for that of a third peer (its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_with_a_third_peers_fingerprint_fails_with_that_reason() {
    let mallory = DtlsIdentity::generate().unwrap();
    let fp = mallory.fingerprint().to_owned();
    let (mut a, mut b) = pair_with(config(), config(), pass_all(), pass_all(), move |s| {
        swap_fingerprint(&s, &fp)
    })
    .await;

    let mut saw_open = false;
    let reason = loop {
        match wait_for(&mut a.events, "the end", |_| true).await {
            PeerEvent::ChannelOpen => saw_open = true,
            PeerEvent::State(ConnectionState::Connected) => saw_open = true,
            PeerEvent::Closed { reason } => break reason,
            _ => {}
        }
    };
    assert!(!saw_open, "must never connect");
    assert_eq!(
        reason,
        CloseReason::Failed(FailureReason::DtlsFingerprintMismatch)
    );
    assert_eq!(
        reason.to_string(),
        "failed: DTLS fingerprint mismatch (the SDP was altered in transit)"
    );
    let d = a.handle.diagnostics().await;
    assert!(d.is_err() || d.unwrap().failure == Some(FailureReason::DtlsFingerprintMismatch));

    // B never gets an open channel either.
    let end = wait_for(&mut b.events, "b ends", |e| {
        matches!(e, PeerEvent::ChannelOpen | PeerEvent::Closed { .. })
    })
    .await;
    assert!(matches!(end, PeerEvent::Closed { .. }), "{end:?}");
}

/// The same attack on the offer is caught by the answerer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_with_a_third_peers_fingerprint_fails_with_that_reason() {
    let mallory = DtlsIdentity::generate().unwrap();
    let (ha, ea, offer) = dopus_rtc::PeerConnection::offer(config()).await.unwrap();
    let tampered = swap_fingerprint(&offer, mallory.fingerprint());
    let (hb, eb, answer) = dopus_rtc::PeerConnection::answer(config(), &tampered)
        .await
        .unwrap();
    let (_ea, _) = relay(ea, hb.clone(), pass_all());
    let (eb, _) = relay(eb, ha.clone(), pass_all());
    ha.accept_answer(&answer).await.unwrap();
    let mut b = Side {
        handle: hb,
        events: eb,
        announced: Default::default(),
    };
    assert_eq!(
        wait_closed(&mut b).await,
        CloseReason::Failed(FailureReason::DtlsFingerprintMismatch)
    );
}
