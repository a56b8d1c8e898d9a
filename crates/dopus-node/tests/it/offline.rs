//! The peer is offline (its process killed): the message waits in the server's mailbox and
//! arrives exactly once when the peer comes back.

use crate::harness::{SERIAL, TestServer, contact_pair, send_delivered};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_peer_gets_the_message_from_the_mailbox_exactly_once() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (a, mut b) = contact_pair(&server).await;
    let mut ea = a.events().await;
    let bid = b.user_id.clone();

    // A first exchange, so a session (and maybe a peer connection) exists before the peer dies.
    send_delivered(&a, &bid, "before", WAIT).await;

    b.kill9();
    ea.wait_for(WAIT, "bob offline at alice", |e| {
        e["type"] == "presence" && e["user_id"] == bid.as_str() && e["presence"] == "offline"
    })
    .await;

    let id = a.api().send(&b.user_id, "while you were away");
    let idc = id.clone();
    ea.wait_for(WAIT, "the message handed to the server", |e| {
        e["type"] == "message_state" && e["id"] == idc.as_str() && e["state"] == "sent"
    })
    .await;
    assert_eq!(
        a.api().message(&bid, &id).unwrap()["state"],
        "sent",
        "not delivered while bob is down"
    );

    b.start(&server.url).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !b
        .api()
        .history(&a.user_id)
        .iter()
        .any(|m| m["id"] == id.as_str())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the message did not reach bob within {WAIT:?}; alice's state: {}\n--- alice ---\n{}\n--- bob ---\n{}",
            a.api().message(&bid, &id).unwrap()["state"],
            a.log_tail(),
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let idc = id.clone();
    ea.wait_for(WAIT, "delivered at alice", |e| {
        e["type"] == "message_state" && e["id"] == idc.as_str() && e["state"] == "delivered"
    })
    .await;
    // Retries and mailbox re-delivery must not show it twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h = b.api().history(&a.user_id);
    let bodies: Vec<&str> = h.iter().filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(bodies, ["before", "while you were away"], "bob's history");
    assert_eq!(
        a.api().history(&b.user_id).len(),
        2,
        "alice's history holds her two messages once each"
    );
    server.stop().await;
}

/// More than one window (64) of messages for an offline peer: every one of them reaches the
/// server's mailbox, not only the first window (which waits an hour before it is checked again),
/// so the peer gets them all even if the sender is gone by the time it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_than_a_window_for_an_offline_peer_all_reach_the_mailbox() {
    const N: usize = 80;
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (mut a, mut b) = contact_pair(&server).await;
    let mut ea = a.events().await;
    let (aid, bid) = (a.user_id.clone(), b.user_id.clone());
    send_delivered(&a, &bid, "before", WAIT).await;

    b.kill9();
    ea.wait_for(WAIT, "bob offline at alice", |e| {
        e["type"] == "presence" && e["user_id"] == bid.as_str() && e["presence"] == "offline"
    })
    .await;
    for i in 0..N {
        a.api().send(&bid, &format!("away {i}"));
    }
    crate::harness::eventually(WAIT, "every message handed to the server", || {
        let sent = a
            .api()
            .history(&bid)
            .iter()
            .filter(|m| m["state"] == "sent")
            .count();
        (sent == N).then_some(())
    })
    .await;

    // Alice is gone for good; bob comes back and finds everything in the mailbox.
    a.kill9();
    b.start(&server.url).await;
    let history = crate::harness::eventually(WAIT, "every message at bob", || {
        let h = b.api().history(&aid);
        (h.len() > N).then_some(h)
    })
    .await;
    let bodies: Vec<String> = history
        .iter()
        .filter_map(|m| m["body"].as_str().map(str::to_owned))
        .collect();
    let expected: Vec<String> = std::iter::once("before".to_owned())
        .chain((0..N).map(|i| format!("away {i}")))
        .collect();
    assert_eq!(bodies, expected, "each once, in the order alice wrote them");
    server.stop().await;
}
