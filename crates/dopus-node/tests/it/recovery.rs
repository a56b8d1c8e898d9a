//! A broken session is detected and replaced: one side is restored from an old copy of its data
//! (its Olm sessions roll back), messages both ways stop decrypting, a fresh session is started,
//! everything unacknowledged is re-sent, and both users are told.

use crate::harness::{SERIAL, TestServer, contact_pair, eventually, send_delivered};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_restored_from_an_old_copy_gets_a_new_session_and_nothing_new_is_lost() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (a, mut b) = contact_pair(&server).await;
    let (aid, bid) = (a.user_id.clone(), b.user_id.clone());

    // Both directions have been used, so each side's ratchet has turned at least once.
    send_delivered(&a, &bid, "one", WAIT).await;
    send_delivered(&b, &aid, "two", WAIT).await;

    // Bob's data as it is now: the old copy.
    b.kill9();
    let old = b.backup();
    b.start(&server.url).await;

    // More traffic both ways moves both sessions past the old copy.
    send_delivered(&a, &bid, "three", WAIT).await;
    send_delivered(&b, &aid, "four", WAIT).await;

    // Bob is restored from the old copy: his sessions with alice roll back.
    b.kill9();
    b.restore(&old);
    b.start(&server.url).await;
    let mut ea = a.events().await;
    let mut eb = b.events().await;

    let five = a.api().send(&bid, "five");
    let six = b.api().send(&aid, "six");
    let (bapi, aapi) = (b.api().clone(), a.api().clone());
    eventually(
        WAIT,
        "alice's message after the restore reaches bob",
        || {
            bapi.history(&aid)
                .iter()
                .any(|m| m["id"] == five.as_str())
                .then_some(())
        },
    )
    .await;
    eventually(
        WAIT,
        "bob's message after the restore reaches alice",
        || {
            aapi.history(&bid)
                .iter()
                .any(|m| m["id"] == six.as_str())
                .then_some(())
        },
    )
    .await;

    // Both users were told that the session was replaced.
    ea.wait_for(WAIT, "session_reset at alice", |e| {
        e["type"] == "session_reset" && e["user_id"] == bid.as_str()
    })
    .await;
    eb.wait_for(WAIT, "session_reset at bob", |e| {
        e["type"] == "session_reset" && e["user_id"] == aid.as_str()
    })
    .await;

    // Exactly once, each: nothing shown twice after the re-sends.
    for (api, peer, id) in [(&bapi, &aid, &five), (&aapi, &bid, &six)] {
        let n = api
            .history(peer)
            .iter()
            .filter(|m| m["id"] == id.as_str())
            .count();
        assert_eq!(n, 1, "{id} shown {n} times");
    }
    server.stop().await;
}
