//! A message round trip over the data channel; edits, deletes, reactions, delivery states and
//! read receipts (only when enabled).

use crate::harness::{SERIAL, TestServer, blocking, contact_pair, eventually, wait_direct};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The server's count of relayed frames, from its Prometheus endpoint.
fn relayed_frames(server: &TestServer) -> u64 {
    let url = format!("http://{}/metrics", server.addr());
    let text = blocking(|| {
        ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    });
    text.lines()
        .find_map(|l| l.strip_prefix("dopus_relayed_frames_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .expect("dopus_relayed_frames_total in /metrics")
}

fn state_rank(s: &str) -> u8 {
    match s {
        "pending" => 0,
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        other => panic!("unexpected delivery state {other}"),
    }
}

/// The delivery states `id` went through, as seen in the sender's events, in order: the
/// `message` event's, then each `message_state`.
fn states_of(seen: &[Value], id: &str) -> Vec<String> {
    seen.iter()
        .filter_map(|e| match e["type"].as_str() {
            Some("message" | "message_updated") if e["message"]["id"] == id => {
                e["message"]["state"].as_str()
            }
            Some("message_state") if e["id"] == id => e["state"].as_str(),
            _ => None,
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_over_the_data_channel_with_edits_deletes_reactions_and_receipts() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (a, b) = contact_pair(&server).await;
    let mut ea = a.events().await;
    let mut eb = b.events().await;

    // The first message starts the session and the peer connection.
    a.api().send(&b.user_id, "warm-up");
    eb.wait_for(WAIT, "warm-up at bob", |e| {
        e["type"] == "message" && e["message"]["body"] == "warm-up"
    })
    .await;
    wait_direct(&a, &b, WAIT).await;
    wait_direct(&b, &a, WAIT).await;
    // Let late trickled candidates and receipts settle before counting relayed frames.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ea.drain();

    let relayed_before = relayed_frames(&server);
    let traffic_before = a.api().connection(&b.user_id)["traffic"].clone();
    let sent = a.api().ok(
        "POST",
        &format!("/conversations/{}/messages", b.user_id),
        Some(json!({ "body": "over the channel" })),
    );
    assert_eq!(sent["state"], "pending", "a new message starts pending");
    let id = sent["id"].as_str().unwrap().to_owned();
    let got = eb
        .wait_for(WAIT, "the message at bob", |e| {
            e["type"] == "message" && e["message"]["id"] == id.as_str()
        })
        .await;
    assert_eq!(got["message"]["body"], "over the channel");
    assert_eq!(got["message"]["outgoing"], false);
    let idc = id.clone();
    ea.wait_for(WAIT, "delivered at alice", |e| {
        e["type"] == "message_state" && e["id"] == idc.as_str() && e["state"] == "delivered"
    })
    .await;
    let states = states_of(&ea.seen, &id);
    assert!(
        states.iter().any(|s| s == "sent"),
        "the message was marked sent: {states:?}"
    );
    let ranks: Vec<u8> = states.iter().map(|s| state_rank(s)).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "states never go back: {states:?}"
    );
    assert_eq!(
        relayed_frames(&server),
        relayed_before,
        "message and receipt travelled over the data channel, not through the server"
    );
    // The connection's counters saw it: one envelope out at least, the receipt back.
    let traffic = a.api().connection(&b.user_id)["traffic"].clone();
    let grew = |k: &str| traffic[k].as_u64().unwrap() > traffic_before[k].as_u64().unwrap();
    assert!(
        grew("messages_sent") && grew("bytes_sent") && grew("messages_received"),
        "traffic counters did not move: {traffic_before} -> {traffic}"
    );

    // A window over the channel travels framed (both sides said hello when it opened): 40
    // messages in far fewer channel messages, all arriving once and in order.
    // They are also sealed together (bob's hello said he reads bulk payloads): one Olm
    // message for the window instead of one ~1.2 KB envelope per message.
    let traffic_before = a.api().connection(&b.user_id)["traffic"].clone();
    let before = traffic_before["messages_sent"].as_u64().unwrap();
    let bytes_before = traffic_before["bytes_sent"].as_u64().unwrap();
    let bodies: Vec<String> = (0..40).map(|i| format!("framed {i}")).collect();
    let batch: Vec<Value> = bodies.iter().map(|b| json!({ "body": b })).collect();
    a.api().ok(
        "POST",
        &format!("/conversations/{}/messages/batch", b.user_id),
        Some(json!({ "messages": batch })),
    );
    let mut got = Vec::new();
    while got.len() < bodies.len() {
        let e = eb
            .wait_for(WAIT, "a framed message at bob", |e| {
                e["type"] == "message"
                    && e["message"]["body"]
                        .as_str()
                        .is_some_and(|b| b.starts_with("framed "))
            })
            .await;
        got.push(e["message"]["body"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, bodies, "framed messages arrive once and in order");
    let traffic_after = a.api().connection(&b.user_id)["traffic"].clone();
    let after = traffic_after["messages_sent"].as_u64().unwrap();
    assert!(
        after - before < 10,
        "40 messages took {} channel messages: not framed",
        after - before
    );
    let bytes = traffic_after["bytes_sent"].as_u64().unwrap() - bytes_before;
    assert!(
        bytes < 40 * 600,
        "40 messages took {bytes} bytes on the wire: not sealed as bulk payloads"
    );
    assert_eq!(
        relayed_frames(&server),
        relayed_before,
        "the window travelled over the data channel"
    );

    // Edit: the receiver shows the new text.
    a.api().ok(
        "PUT",
        &format!("/messages/{id}"),
        Some(json!({ "body": "edited text" })),
    );
    let idc = id.clone();
    let e = eb
        .wait_for(WAIT, "the edit at bob", |e| {
            e["type"] == "message_updated"
                && e["message"]["id"] == idc.as_str()
                && e["message"]["body"] == "edited text"
        })
        .await;
    assert!(e["message"]["edited_at"].is_number(), "edited_at set: {e}");
    let (status, _) = b.api().call(
        "PUT",
        &format!("/messages/{id}"),
        Some(json!({ "body": "not mine" })),
    );
    assert_eq!(status, 422, "bob cannot edit alice's message");

    // Reactions: bob adds one, alice sees it aggregated; bob removes it, alice sees it gone.
    b.api().ok(
        "POST",
        &format!("/messages/{id}/reactions"),
        Some(json!({ "emoji": "👍" })),
    );
    let (idc, bid) = (id.clone(), b.user_id.clone());
    let e = ea
        .wait_for(WAIT, "bob's reaction at alice", |e| {
            e["type"] == "message_updated"
                && e["message"]["id"] == idc.as_str()
                && e["message"]["reactions"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["emoji"] == "👍"))
        })
        .await;
    let r = &e["message"]["reactions"][0];
    assert_eq!(r["count"], 1);
    assert_eq!(r["mine"], false);
    assert_eq!(r["users"], json!([bid]));
    b.api().ok(
        "DELETE",
        &format!("/messages/{id}/reactions/%F0%9F%91%8D"),
        None,
    );
    let idc = id.clone();
    ea.wait_for(WAIT, "the reaction removed at alice", |e| {
        e["type"] == "message_updated"
            && e["message"]["id"] == idc.as_str()
            && e["message"]["reactions"]
                .as_array()
                .is_some_and(Vec::is_empty)
    })
    .await;

    // Read receipts are off by default: marking read sends nothing.
    let id2 = a.api().send(&b.user_id, "read me later");
    let idc = id2.clone();
    eb.wait_for(WAIT, "second message at bob", |e| {
        e["type"] == "message" && e["message"]["id"] == idc.as_str()
    })
    .await;
    b.api().ok(
        "POST",
        &format!("/conversations/{}/read", a.user_id),
        Some(json!({ "up_to": id2 })),
    );
    ea.collect_for(Duration::from_secs(3)).await;
    let states = states_of(&ea.seen, &id2);
    assert!(
        !states.iter().any(|s| s == "read"),
        "no read receipt while disabled: {states:?}"
    );
    assert_eq!(
        a.api().message(&b.user_id, &id2).unwrap()["state"],
        "delivered"
    );

    // Enabled: the next read marks alice's message read.
    let s = b
        .api()
        .ok("PUT", "/settings", Some(json!({ "read_receipts": true })));
    assert_eq!(s["read_receipts"], true);
    let id3 = a.api().send(&b.user_id, "read me now");
    let idc = id3.clone();
    eb.wait_for(WAIT, "third message at bob", |e| {
        e["type"] == "message" && e["message"]["id"] == idc.as_str()
    })
    .await;
    b.api().ok(
        "POST",
        &format!("/conversations/{}/read", a.user_id),
        Some(json!({ "up_to": id3 })),
    );
    let idc = id3.clone();
    ea.wait_for(WAIT, "read receipt at alice", |e| {
        e["type"] == "message_state" && e["id"] == idc.as_str() && e["state"] == "read"
    })
    .await;

    // Delete: the receiver keeps a tombstone without the text.
    a.api().ok("DELETE", &format!("/messages/{id}"), None);
    let idc = id.clone();
    let e = eb
        .wait_for(WAIT, "the delete at bob", |e| {
            e["type"] == "message_updated"
                && e["message"]["id"] == idc.as_str()
                && e["message"]["deleted"] == true
        })
        .await;
    assert!(
        e["message"]["body"].is_null(),
        "a deleted message has no body: {e}"
    );
    let api = b.api().clone();
    let aid = a.user_id.clone();
    eventually(WAIT, "the delete in bob's history", || {
        let m = api.message(&aid, &id)?;
        (m["deleted"] == true && m["body"].is_null()).then_some(())
    })
    .await;
    let found = b.api().ok("GET", "/search?q=edited&limit=10", None);
    assert!(
        found["results"].as_array().unwrap().is_empty(),
        "a deleted message is not found by search: {found}"
    );
    let found = b.api().ok("GET", "/search?q=later&limit=10", None);
    assert_eq!(
        found["results"].as_array().unwrap().len(),
        1,
        "search finds live messages: {found}"
    );
    server.stop().await;
}

/// Sends from several API clients at once are stored together (group commit) yet each client
/// gets its own answer (the message as stored), keeps its own order, and each message reaches
/// the peer exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_each_get_their_answer_and_arrive_once_in_order() {
    const CLIENTS: usize = 6;
    const EACH: usize = 20;
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (a, b) = contact_pair(&server).await;
    let mut eb = b.events().await;
    let to = b.user_id.clone();
    let answers: Vec<Vec<Value>> = blocking(|| {
        std::thread::scope(|s| {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let (api, to) = (a.api().clone(), to.clone());
                    s.spawn(move || {
                        (0..EACH)
                            .map(|i| {
                                api.ok(
                                    "POST",
                                    &format!("/conversations/{to}/messages"),
                                    Some(json!({ "body": format!("c{c} m{i}") })),
                                )
                            })
                            .collect::<Vec<Value>>()
                    })
                })
                .collect();
            clients.into_iter().map(|h| h.join().unwrap()).collect()
        })
    });
    let mut ids = std::collections::HashSet::new();
    for (c, list) in answers.iter().enumerate() {
        let mut last_sent_at = 0;
        for (i, m) in list.iter().enumerate() {
            assert_eq!(
                m["body"],
                format!("c{c} m{i}"),
                "each client gets its own answer"
            );
            assert_eq!(m["state"], "pending");
            assert_eq!(m["outgoing"], true);
            let sent_at = m["sent_at"].as_u64().unwrap();
            assert!(sent_at > last_sent_at, "a client's messages keep its order");
            last_sent_at = sent_at;
            assert!(
                ids.insert(m["id"].as_str().unwrap().to_owned()),
                "ids are unique"
            );
        }
    }
    // The answer is the message as stored (apart from its delivery state, which moves on).
    let stored = eventually(WAIT, "every message stored", || {
        let h = a.api().history(&to);
        (h.len() == CLIENTS * EACH).then_some(h)
    })
    .await;
    for list in &answers {
        for m in list {
            let mut s = stored
                .iter()
                .find(|x| x["id"] == m["id"])
                .expect("stored")
                .clone();
            let mut m = m.clone();
            s["state"] = Value::Null;
            m["state"] = Value::Null;
            assert_eq!(m, s);
        }
    }
    // Each message reaches bob once, and each client's messages in its order.
    eventually(WAIT, "every message at bob", || {
        (b.api().history(&a.user_id).len() >= CLIENTS * EACH).then_some(())
    })
    .await;
    eb.collect_for(Duration::from_millis(500)).await;
    let mut shown: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for e in eb.seen.iter().filter(|e| e["type"] == "message") {
        *shown
            .entry(e["message"]["id"].as_str().unwrap())
            .or_default() += 1;
    }
    assert_eq!(shown.len(), CLIENTS * EACH);
    assert!(shown.values().all(|&n| n == 1), "each message shown once");
    let history = b.api().history(&a.user_id);
    assert_eq!(
        history.len(),
        CLIENTS * EACH,
        "nothing twice in bob's history"
    );
    for c in 0..CLIENTS {
        let bodies: Vec<String> = history
            .iter()
            .filter_map(|m| m["body"].as_str())
            .filter(|body| body.starts_with(&format!("c{c} ")))
            .map(str::to_owned)
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("c{c} m{i}")).collect();
        assert_eq!(
            bodies, expected,
            "client {c}'s messages in its order at bob"
        );
    }
}

/// `POST …/messages/batch`: the messages are stored in one call, answered in order as stored,
/// and reach the peer once each, in order. A bad message (blank body, bad reply id), an empty
/// batch or one over the limit refuses the whole call: nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_sends_arrive_in_order_and_a_bad_message_refuses_the_whole_batch() {
    const N: usize = 50;
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (a, b) = contact_pair(&server).await;
    let mut ea = a.events().await;
    let mut eb = b.events().await;
    let path = format!("/conversations/{}/messages/batch", b.user_id);

    let refused = [
        json!({ "messages": [{ "body": "fine" }, { "body": "   " }] }),
        json!({ "messages": [{ "body": "fine" }, { "body": "ok", "reply_to": "nope" }] }),
        json!({ "messages": [] }),
        json!({ "messages": (0..257).map(|i| json!({ "body": format!("x{i}") })).collect::<Vec<_>>() }),
        json!({ "body": "not a batch" }),
    ];
    for body in refused {
        let (status, answer) = a.api().call("POST", &path, Some(body));
        assert_eq!(status, 400, "{answer}");
    }
    assert!(
        a.api().history(&b.user_id).is_empty(),
        "a refused batch stores nothing"
    );

    let first = a.api().send(&b.user_id, "before the batch");
    let mut messages: Vec<Value> = (0..N).map(|i| json!({ "body": format!("b{i}") })).collect();
    messages[1]["reply_to"] = json!(first);
    let answer = a
        .api()
        .ok("POST", &path, Some(json!({ "messages": messages })));
    let sent = answer["messages"].as_array().expect("messages").clone();
    assert_eq!(sent.len(), N);
    let mut last_sent_at = 0;
    for (i, m) in sent.iter().enumerate() {
        assert_eq!(m["body"], format!("b{i}"), "answered in order");
        assert_eq!(m["state"], "pending");
        let sent_at = m["sent_at"].as_u64().unwrap();
        assert!(sent_at > last_sent_at, "stored in order");
        last_sent_at = sent_at;
    }
    assert_eq!(sent[1]["reply_to"], json!(first));
    // Each is announced on the sender's event stream, as a single send is.
    for m in &sent {
        let id = m["id"].as_str().unwrap().to_owned();
        ea.wait_for(WAIT, "the sender's event", |e| {
            e["type"] == "message" && e["message"]["id"] == id.as_str()
        })
        .await;
    }
    // Bob gets each once, in order.
    let history = eventually(WAIT, "the batch at bob", || {
        let h = b.api().history(&a.user_id);
        (h.len() > N).then_some(h)
    })
    .await;
    let bodies: Vec<&str> = history.iter().filter_map(|m| m["body"].as_str()).collect();
    let mut expected = vec!["before the batch".to_owned()];
    expected.extend((0..N).map(|i| format!("b{i}")));
    assert_eq!(bodies, expected);
    eb.collect_for(Duration::from_millis(300)).await;
    let shown = eb.seen.iter().filter(|e| e["type"] == "message").count();
    assert_eq!(shown, N + 1, "each message shown once");
}

/// A node with no event listener (no UI attached) builds no message events, and loses nothing
/// by it: the store still moves every message to `delivered`, and a listener that arrives
/// later gets the events of what happens from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_nobody_listens_to_still_delivers_and_a_later_listener_gets_events() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (a, b) = contact_pair(&server).await;
    let path = format!("/conversations/{}/messages/batch", b.user_id);
    let messages: Vec<Value> = (0..5).map(|i| json!({ "body": format!("q{i}") })).collect();
    a.api()
        .ok("POST", &path, Some(json!({ "messages": messages })));
    let history = eventually(WAIT, "all five delivered at the sender", || {
        let h = a.api().history(&b.user_id);
        (h.len() == 5 && h.iter().all(|m| m["state"] == "delivered")).then_some(h)
    })
    .await;
    let bodies: Vec<&str> = history.iter().filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(bodies, ["q0", "q1", "q2", "q3", "q4"]);
    assert_eq!(b.api().history(&a.user_id).len(), 5);

    let mut ea = a.events().await;
    let id = a.api().send(&b.user_id, "now someone watches");
    ea.wait_for(WAIT, "the new message", |e| {
        e["type"] == "message" && e["message"]["id"] == id.as_str()
    })
    .await;
    let bid = b.user_id.clone();
    ea.wait_for(WAIT, "its delivery", |e| {
        e["type"] == "message_state"
            && e["id"] == id.as_str()
            && e["conversation"] == bid.as_str()
            && e["state"] == "delivered"
    })
    .await;
}
