//! First contact: a request and its acceptance through the API, then messages both ways.

use crate::harness::{SERIAL, TestNode, TestServer, blocking};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_accept_then_messages_both_ways() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut a = blocking(|| TestNode::create("alice"));
    let mut b = blocking(|| TestNode::create("bob"));
    a.start(&server.url).await;
    b.start(&server.url).await;
    let mut ea = a.events().await;
    let mut eb = b.events().await;

    let (status, _) = a.api().call(
        "POST",
        &format!("/conversations/{}/messages", b.user_id),
        Some(json!({ "body": "too early" })),
    );
    assert_eq!(status, 422, "messaging a stranger is refused");

    let c = a.api().ok(
        "POST",
        &format!("/contacts/{}/request", b.user_id),
        Some(json!({ "display_name": "bob", "note": "hi, it's alice" })),
    );
    assert_eq!(c["state"], "outgoing_request");
    let a_id = a.user_id.clone();
    eb.wait_for(WAIT, "incoming contact request", |e| {
        e["type"] == "contact"
            && e["contact"]["user_id"] == a_id.as_str()
            && e["contact"]["state"] == "incoming_request"
    })
    .await;
    let c = b
        .api()
        .ok("POST", &format!("/contacts/{}/accept", a.user_id), None);
    assert_eq!(c["state"], "accepted");
    let b_id = b.user_id.clone();
    ea.wait_for(WAIT, "the request accepted", |e| {
        e["type"] == "contact"
            && e["contact"]["user_id"] == b_id.as_str()
            && e["contact"]["state"] == "accepted"
    })
    .await;

    let id1 = a.api().send(&b.user_id, "hello bob");
    let m = eb
        .wait_for(WAIT, "alice's message at bob", |e| {
            e["type"] == "message" && e["message"]["body"] == "hello bob"
        })
        .await;
    assert_eq!(m["message"]["outgoing"], false);
    assert_eq!(m["message"]["sender"], a.user_id.as_str());
    assert_eq!(
        m["message"]["id"],
        id1.as_str(),
        "the receiver shows the sender's message id"
    );
    let id2 = b.api().send(&a.user_id, "hi alice");
    ea.wait_for(WAIT, "bob's message at alice", |e| {
        e["type"] == "message"
            && e["message"]["body"] == "hi alice"
            && e["message"]["id"] == id2.as_str()
    })
    .await;

    for (node, peer) in [(&a, &b), (&b, &a)] {
        let h = node.api().history(&peer.user_id);
        let bodies: Vec<&str> = h.iter().filter_map(|m| m["body"].as_str()).collect();
        assert_eq!(bodies, ["hello bob", "hi alice"], "{}'s history", node.name);
    }
    server.stop().await;
}

/// A profile (name, status line, avatar) reaches an accepted contact end to end encrypted, a
/// profile set before a contact is accepted reaches them once it is, and a bad avatar is
/// refused with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profiles_reach_contacts() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut a = blocking(|| TestNode::create("alice"));
    let mut b = blocking(|| TestNode::create("bob"));
    a.start(&server.url).await;
    b.start(&server.url).await;
    let mut eb = b.events().await;

    // Set before bob is a contact: it goes to him once he accepts.
    let avatar = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    let me = a.api().ok(
        "PUT",
        "/me/profile",
        Some(json!({ "display_name": "Alice A.", "status_text": "on holiday", "avatar": avatar })),
    );
    assert_eq!(me["display_name"], "Alice A.");
    assert_eq!(me["profile"]["status_text"], "on holiday");
    let (status, err) = a.api().call(
        "PUT",
        "/me/profile",
        Some(json!({ "avatar": "https://tracker.example/pixel.png" })),
    );
    assert_eq!(status, 400, "a fetchable avatar is refused: {err}");

    a.api()
        .ok("POST", &format!("/contacts/{}/request", b.user_id), None);
    let a_id = a.user_id.clone();
    eb.wait_for(WAIT, "the request", |e| {
        e["type"] == "contact" && e["contact"]["user_id"] == a_id.as_str()
    })
    .await;
    b.api()
        .ok("POST", &format!("/contacts/{}/accept", a.user_id), None);
    let a_id = a.user_id.clone();
    let got = eb
        .wait_for(WAIT, "alice's profile at bob", |e| {
            e["type"] == "contact"
                && e["contact"]["user_id"] == a_id.as_str()
                && e["contact"]["profile"]["status_text"] == "on holiday"
        })
        .await;
    assert_eq!(got["contact"]["profile"]["avatar"], avatar);

    // A change later reaches him too, and clearing works.
    a.api().ok(
        "PUT",
        "/me/profile",
        Some(json!({ "status_text": "back", "avatar": "" })),
    );
    let a_id = a.user_id.clone();
    let got = eb
        .wait_for(WAIT, "the changed profile", |e| {
            e["type"] == "contact"
                && e["contact"]["user_id"] == a_id.as_str()
                && e["contact"]["profile"]["status_text"] == "back"
        })
        .await;
    assert!(got["contact"]["profile"]["avatar"].is_null());
    server.stop().await;
}

/// Privacy mode (issue 18): two nodes run with `--relay-only` against a server with its TURN
/// relay on. Their data channel comes up through the relay (both ends of the selected pair are
/// relayed candidates, so neither learned the other's address) and the relay counts the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_only_nodes_talk_through_the_servers_turn_relay() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start_with_turn().await;
    let mut a = blocking(|| TestNode::create("alice"));
    let mut b = blocking(|| TestNode::create("bob"));
    a.add_contact_offline(&b);
    b.add_contact_offline(&a);
    a.run_args.push("--relay-only");
    b.run_args.push("--relay-only");
    a.start(&server.url).await;
    b.start(&server.url).await;
    let mut eb = b.events().await;
    let before = server.turn_relayed_bytes();
    // The first message goes through the signaling server while the channel is set up (a
    // connection is made when there is something to send).
    a.api().send(&b.user_id, "first, through the server");
    eb.wait_for(WAIT, "the first message", |e| {
        e["type"] == "message" && e["message"]["body"] == "first, through the server"
    })
    .await;
    let api = a.api().clone();
    let bid = b.user_id.clone();
    let conn = crate::harness::eventually(Duration::from_secs(60), "a relayed channel", || {
        // The pair shows once the connection's stats name it (a moment after the channel opens).
        let c = api.connection(&bid);
        (c["mode"] == "direct" && c["local_candidate"].is_string()).then_some(c)
    })
    .await;
    assert_eq!(conn["local_candidate"], "relay", "{conn}");
    assert_eq!(conn["remote_candidate"], "relay", "{conn}");
    a.api().send(&b.user_id, "through the relay");
    eb.wait_for(WAIT, "the message", |e| {
        e["type"] == "message" && e["message"]["body"] == "through the relay"
    })
    .await;
    assert!(
        server.turn_relayed_bytes() > before,
        "the relay carried the channel"
    );
    server.stop().await;
}
