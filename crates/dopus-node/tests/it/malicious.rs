//! A malicious signaling server (a rewriting proxy in front of bob) is caught: swapped one-time
//! keys, flipped ciphertext (where the SDP travels), replayed and misaddressed envelopes, and a
//! call it can neither ring nor join.
//! Every test ends by switching the attack off and checking that delivery then works, so each
//! "nothing happened" assertion is backed by proof that something would have.

use crate::harness::{
    Events, SERIAL, TestNode, TestServer, assert_recording, blocking, eventually, opus_file,
    played_call,
};
use crate::proxy::{Dir, Mode, Proxy};
use serde_json::json;
use std::time::Duration;

const ATTACK: Duration = Duration::from_secs(8);
const RECOVER: Duration = Duration::from_secs(90);

/// Alice talks to the real server; bob goes through the proxy.
async fn setup(server: &TestServer) -> (Proxy, TestNode, TestNode) {
    let proxy = Proxy::start(&server.url).await;
    let mut a = blocking(|| TestNode::create("alice"));
    let mut b = blocking(|| TestNode::create("bob"));
    a.add_contact_offline(&b);
    b.add_contact_offline(&a);
    a.start(&server.url).await;
    b.start(&proxy.url).await;
    (proxy, a, b)
}

fn incoming_messages(events: &Events) -> Vec<String> {
    events
        .seen
        .iter()
        .filter(|e| e["type"] == "message" && e["message"]["outgoing"] == false)
        .map(|e| e["message"]["body"].to_string())
        .collect()
}

fn bodies(node: &TestNode, peer: &TestNode) -> Vec<String> {
    node.api()
        .history(&peer.user_id)
        .iter()
        .map(|m| m["body"].as_str().unwrap_or("<deleted>").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapped_one_time_key_is_refused() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (proxy, a, b) = setup(&server).await;
    let mut ea = a.events().await;
    proxy.set_mode(Mode::SwapOneTimeKey);
    let id = b.api().send(&a.user_id, "for the real alice");
    ea.collect_for(ATTACK).await;
    assert!(
        proxy.tampered() >= 1,
        "bob fetched alice's bundle through the attacker"
    );
    let sealed_up = proxy
        .log()
        .iter()
        .filter(|(d, v)| *d == Dir::Up && v["type"] == "relay")
        .count();
    assert_eq!(
        sealed_up, 0,
        "bob sealed nothing to a key the attacker swapped in"
    );
    assert!(incoming_messages(&ea).is_empty(), "alice got nothing");
    assert!(bodies(&a, &b).is_empty(), "alice's history is empty");
    assert_eq!(
        b.api().message(&a.user_id, &id).unwrap()["state"],
        "pending",
        "bob's message waits for a bundle he can trust"
    );

    proxy.set_mode(Mode::Pass);
    ea.wait_for(RECOVER, "the message once the attack stops", |e| {
        e["type"] == "message" && e["message"]["body"] == "for the real alice"
    })
    .await;
    let api = b.api().clone();
    let aid = a.user_id.clone();
    eventually(RECOVER, "delivered at bob", || {
        (api.message(&aid, &id)?["state"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(bodies(&a, &b), ["for the real alice"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flipped_ciphertext_and_sdp_are_rejected() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (proxy, a, b) = setup(&server).await;
    let mut eb = b.events().await;
    proxy.set_mode(Mode::FlipCiphertext);
    a.api().send(&b.user_id, "secret one");
    eb.collect_for(ATTACK).await;
    assert!(proxy.tampered() >= 1, "the attacker rewrote envelopes");
    assert!(
        incoming_messages(&eb).is_empty(),
        "no garbage shown: {:?}",
        incoming_messages(&eb)
    );
    assert!(bodies(&b, &a).is_empty(), "bob's history is empty");
    // The offer/answer (with the DTLS fingerprint) only travel inside these envelopes.
    let conn = b.api().connection(&a.user_id);
    assert_ne!(
        conn["state"], "connected",
        "no channel from tampered signaling: {conn}"
    );
    let connected = eb
        .seen
        .iter()
        .any(|e| e["type"] == "connection" && e["connection"]["state"] == "connected");
    assert!(!connected, "no connection came up during the attack");

    proxy.set_mode(Mode::Pass);
    eb.wait_for(RECOVER, "the message once the attack stops", |e| {
        e["type"] == "message" && e["message"]["body"] == "secret one"
    })
    .await;
    eb.collect_for(Duration::from_secs(3)).await;
    assert_eq!(bodies(&b, &a), ["secret one"], "shown exactly once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_envelopes_show_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (proxy, a, b) = setup(&server).await;
    let mut eb = b.events().await;
    for text in ["r1", "r2", "r3"] {
        a.api().send(&b.user_id, text);
    }
    let (api, aid) = (b.api().clone(), a.user_id.clone());
    eventually(RECOVER, "three messages at bob", || {
        (api.history(&aid).len() == 3).then_some(())
    })
    .await;
    let recorded: Vec<_> = proxy
        .log()
        .into_iter()
        .filter(|(d, v)| *d == Dir::Down && v["type"] == "deliver" && v["kind"] == "relay")
        .map(|(_, v)| v)
        .collect();
    assert!(
        !recorded.is_empty(),
        "some envelopes went through the server"
    );
    eb.collect_for(Duration::from_secs(1)).await;
    let shown_before = incoming_messages(&eb).len();
    for frame in &recorded {
        for _ in 0..2 {
            assert!(proxy.inject(frame), "the proxy holds bob's connection");
        }
    }
    eb.collect_for(Duration::from_secs(5)).await;
    assert_eq!(
        incoming_messages(&eb).len(),
        shown_before,
        "replays of {} envelopes showed nothing new",
        recorded.len()
    );
    assert_eq!(bodies(&b, &a), ["r1", "r2", "r3"]);
    // The replays did not break the session.
    a.api().send(&b.user_id, "r4");
    eb.wait_for(RECOVER, "a fresh message after the replays", |e| {
        e["type"] == "message" && e["message"]["body"] == "r4"
    })
    .await;
    assert_eq!(bodies(&b, &a), ["r1", "r2", "r3", "r4"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misaddressed_envelopes_are_rejected() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (proxy, a, b) = setup(&server).await;
    let carol = blocking(|| TestNode::create("carol"));
    proxy.set_other_user(&carol.user_id);
    let mut eb = b.events().await;

    proxy.set_mode(Mode::ChangeToDevice);
    a.api().send(&b.user_id, "m1");
    eb.collect_for(ATTACK).await;
    let after_device = proxy.tampered();
    assert!(
        after_device >= 1,
        "envelopes were readdressed to another device"
    );
    assert!(
        bodies(&b, &a).is_empty(),
        "nothing shown for another device's envelopes"
    );

    proxy.set_mode(Mode::ChangeToUser);
    eb.collect_for(ATTACK).await;
    assert!(
        proxy.tampered() > after_device,
        "envelopes were readdressed to another user"
    );
    assert!(
        bodies(&b, &a).is_empty(),
        "nothing shown for another user's envelopes"
    );
    assert!(incoming_messages(&eb).is_empty());

    proxy.set_mode(Mode::Pass);
    eb.wait_for(RECOVER, "the message once the attack stops", |e| {
        e["type"] == "message" && e["message"]["body"] == "m1"
    })
    .await;
    eb.collect_for(Duration::from_secs(3)).await;
    assert_eq!(bodies(&b, &a), ["m1"], "shown exactly once");
    server.stop().await;
}

/// `fetch_bundle` requests bob sent (each claims one of the owner's one-time keys), by owner.
fn bundle_claims(proxy: &Proxy, owner: &str) -> usize {
    proxy
        .log()
        .iter()
        .filter(|(d, v)| *d == Dir::Up && v["type"] == "fetch_bundle" && v["user"] == owner)
        .count()
}

fn resets(events: &Events) -> usize {
    events
        .seen
        .iter()
        .filter(|e| e["type"] == "session_reset")
        .count()
}

/// Issue 21: the 5 s grace is per envelope. Two envelopes' first copies are flipped 4.5 s
/// apart; each is repaired by alice's own retry within its grace, so nothing may cost a reset:
/// bob claims none of alice's one-time keys and nobody resets a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_flips_repaired_by_retries_cost_no_reset() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (proxy, a, b) = setup(&server).await;
    let mut ea = a.events().await;
    let mut eb = b.events().await;
    // Invisible bob keeps no direct channel: everything of alice's goes through the proxy.
    b.api().ok(
        "PUT",
        "/me/status",
        Some(serde_json::json!({ "status": "invisible" })),
    );
    a.api().send(&b.user_id, "warm");
    eb.wait_for(RECOVER, "the first message", |e| {
        e["type"] == "message" && e["message"]["body"] == "warm"
    })
    .await;
    eb.collect_for(Duration::from_secs(2)).await;
    let claims_before = bundle_claims(&proxy, &a.user_id);

    let tampered = proxy.tampered();
    proxy.set_mode(Mode::FlipOnce);
    a.api().send(&b.user_id, "one");
    eb.collect_for(Duration::from_millis(4500)).await;
    assert_eq!(
        proxy.tampered(),
        tampered + 1,
        "the first copy of one was flipped"
    );
    proxy.set_mode(Mode::FlipOnce);
    a.api().send(&b.user_id, "two");
    eb.wait_for(RECOVER, "the second message, repaired", |e| {
        e["type"] == "message" && e["message"]["body"] == "two"
    })
    .await;
    assert_eq!(
        proxy.tampered(),
        tampered + 2,
        "the first copy of two was flipped"
    );
    // Past both graces (and the point where a per-peer count would have fired).
    eb.collect_for(Duration::from_secs(8)).await;
    ea.collect_for(Duration::from_millis(100)).await;
    assert_eq!(
        bodies(&b, &a),
        ["warm", "one", "two"],
        "each shown exactly once"
    );
    assert_eq!(
        bundle_claims(&proxy, &a.user_id),
        claims_before,
        "bob claimed none of alice's one-time keys"
    );
    assert_eq!(resets(&eb) + resets(&ea), 0, "no session was reset");
    server.stop().await;
}

/// Issue 21: an envelope of bob's handed back to bob (the outer `to` rewritten to him) is
/// dropped before recovery sees it: bob never fetches his own bundle nor resets a session
/// with himself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reflected_envelope_costs_nothing() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (proxy, a, b) = setup(&server).await;
    let mut eb = b.events().await;
    b.api().ok(
        "PUT",
        "/me/status",
        Some(serde_json::json!({ "status": "invisible" })),
    );
    a.api().send(&b.user_id, "hello bob");
    b.api().send(&a.user_id, "hello alice");
    // Both messages shown on both sides: each crossed the proxy (bob is invisible, so there
    // is no direct channel), so a frame of each direction is in its log.
    let (api_a, api_b) = (a.api().clone(), b.api().clone());
    let (aid, bid) = (a.user_id.clone(), b.user_id.clone());
    eventually(RECOVER, "both messages on both sides", || {
        (api_a.history(&bid).len() == 2 && api_b.history(&aid).len() == 2).then_some(())
    })
    .await;
    let p = proxy.clone();
    let (template, mine) = eventually(RECOVER, "a frame each way through the proxy", || {
        let log = p.log();
        let down = log
            .iter()
            .find(|(d, v)| *d == Dir::Down && v["type"] == "deliver")
            .map(|(_, v)| v.clone())?;
        let up = log
            .iter()
            .find(|(d, v)| *d == Dir::Up && v["type"] == "relay")
            .map(|(_, v)| v.clone())?;
        Some((down, up))
    })
    .await;
    let mut envelope: serde_json::Value =
        serde_json::from_str(mine["payload"].as_str().expect("a payload")).expect("JSON");
    envelope["to"]["user"] = serde_json::json!(b.user_id);
    let bob_device = envelope["from"]["device"].clone();
    let mut frame = template.clone();
    frame["from"] = serde_json::json!({ "user": b.user_id, "device": bob_device });
    frame["payload"] = serde_json::json!(envelope.to_string());
    if let Some(f) = frame.as_object_mut() {
        f.remove("mailbox_id");
    }
    let claims_before = bundle_claims(&proxy, &b.user_id);
    assert!(proxy.inject(&frame), "the proxy holds bob's connection");
    eb.collect_for(Duration::from_secs(8)).await;
    assert_eq!(
        bundle_claims(&proxy, &b.user_id),
        claims_before,
        "bob fetched none of his own keys"
    );
    assert_eq!(resets(&eb), 0, "no session reset with himself");
    assert_eq!(
        bodies(&b, &a),
        ["hello bob", "hello alice"],
        "nothing new shown"
    );
    server.stop().await;
}

/// Plaintext a call's signaling would show if it left Olm: SDP lines (the DTLS fingerprint that
/// pins the media keys, ICE credentials and candidates, the audio m-line).
const SDP_MARKERS: [&str; 5] = [
    "a=fingerprint",
    "a=ice-ufrag",
    "a=ice-pwd",
    "a=candidate",
    "m=audio",
];

fn sdp_in_clear(proxy: &Proxy) -> Vec<String> {
    proxy
        .log()
        .iter()
        .map(|(_, v)| v.to_string())
        .filter(|s| SDP_MARKERS.iter().any(|m| s.contains(m)))
        .collect()
}

/// A hostile server can neither ring nor join a call (issue 16, "E2E and privacy"): while it
/// flips the ciphertext of every envelope, alice's call never rings at bob's and no connection
/// comes up from the tampered offer; once it only relays, a call between them carries a played
/// file into the recording bit-exact, and nothing the server saw during all of it (every frame
/// both ways) holds a line of SDP in clear, though the call's offers and answers went through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_server_can_neither_ring_nor_join_a_call() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (proxy, a, b) = setup(&server).await;
    let mut eb = b.events().await;

    // The attack: alice calls while every envelope to and from bob is flipped.
    proxy.set_mode(Mode::FlipCiphertext);
    let call = a
        .api()
        .ok("POST", "/calls", Some(json!({"user_id": b.user_id})));
    let id = call["id"].as_str().unwrap().to_owned();
    eb.collect_for(ATTACK).await;
    assert!(proxy.tampered() >= 1, "the attacker rewrote envelopes");
    let rang = eb.seen.iter().filter(|e| e["type"] == "call").count();
    assert_eq!(rang, 0, "no call event at bob's from a tampered invite");
    let calls = b.api().ok("GET", "/calls", None);
    assert!(
        calls["calls"].as_array().is_some_and(Vec::is_empty),
        "bob has no call: {calls}"
    );
    assert_ne!(b.api().connection(&a.user_id)["state"], "connected");
    a.api()
        .ok("POST", &format!("/calls/{id}/hangup"), Some(json!({})));

    // The server stops tampering: bob rings alice and records, alice plays a file.
    proxy.set_mode(Mode::Pass);
    let relays_before = proxy.log().len();
    let tmp = tempfile::tempdir().unwrap();
    let played = tmp.path().join("in.opus");
    let recorded = tmp.path().join("out.opus");
    let packets = opus_file(&played, 100, 11);
    let (a_call, b_call) = played_call(&a, &b, &played, &recorded, RECOVER).await;
    assert_eq!(a_call["end"], "completed", "{a_call}");
    assert_eq!(b_call["end"], "completed", "{b_call}");
    assert_recording(&recorded, &packets);

    // The call's signaling went through the server, sealed.
    let relayed = proxy.log()[relays_before..]
        .iter()
        .filter(|(_, v)| v["type"] == "relay" || v["type"] == "deliver")
        .count();
    assert!(relayed >= 2, "the media offer and answer passed the server");
    let leaks = sdp_in_clear(&proxy);
    assert!(leaks.is_empty(), "SDP in clear at the server: {leaks:?}");
    server.stop().await;
}
