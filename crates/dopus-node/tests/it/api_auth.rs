//! The local API refuses requests without the token, with a wrong token or a foreign Host; the
//! typing indicator reaches the peer at most once per 3 s.

use crate::harness::{SERIAL, TestServer, contact_pair, raw_status};
use serde_json::json;
use std::time::{Duration, Instant};

fn request(host: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("GET /api/v1/contacts HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_needs_the_token_and_a_local_host() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut a = crate::harness::blocking(|| crate::harness::TestNode::create("alice"));
    a.start(&server.url).await;
    let api = a.api().clone();
    let addr = api.url.trim_start_matches("http://").to_owned();
    let port = addr.rsplit(':').next().unwrap().to_owned();

    assert_eq!(
        raw_status(&addr, &request(&addr, Some(&api.token))),
        200,
        "the real token works"
    );
    assert_eq!(
        raw_status(
            &addr,
            &request(&format!("localhost:{port}"), Some(&api.token))
        ),
        200,
        "localhost is a local host"
    );
    assert_eq!(raw_status(&addr, &request(&addr, None)), 401, "no token");
    let mut wrong = api.token.clone().into_bytes();
    wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    assert_eq!(
        raw_status(&addr, &request(&addr, Some(&wrong))),
        401,
        "wrong token"
    );
    assert_eq!(
        raw_status(&addr, &request(&addr, Some(""))),
        401,
        "empty token"
    );
    assert_eq!(
        raw_status(
            &addr,
            &request(&format!("evil.example:{port}"), Some(&api.token))
        ),
        403,
        "a DNS-rebinding Host is refused even with the token"
    );
    assert_eq!(
        raw_status(
            &addr,
            &format!(
                "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
        ),
        401,
        "the events socket needs the token too"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typing_reaches_the_peer_at_most_once_per_three_seconds() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (a, b) = contact_pair(&server).await;
    let mut eb = b.events().await;
    // A first message so both sides hold a session; typing is ephemeral and never queued.
    a.api().send(&b.user_id, "hi");
    eb.wait_for(Duration::from_secs(30), "hi at bob", |e| {
        e["type"] == "message" && e["message"]["body"] == "hi"
    })
    .await;

    let path = format!("/conversations/{}/typing", b.user_id);
    let started = Instant::now();
    for _ in 0..35 {
        a.api().ok("POST", &path, Some(json!({ "active": true })));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    eb.collect_for(Duration::from_secs(2)).await;
    let aid = a.user_id.clone();
    let typing = eb
        .seen
        .iter()
        .filter(|e| e["type"] == "typing" && e["user_id"] == aid.as_str() && e["active"] == true)
        .count();
    // One at the start, then at most one per full 3 s of the sending time (measured, so a slow
    // machine cannot make this fail).
    let allowed = (elapsed.as_millis() / 3_000) as usize + 1;
    assert!(typing >= 1, "the typing indicator arrived");
    assert!(
        typing <= allowed,
        "{typing} typing events in {elapsed:?} (at most {allowed})"
    );
    assert!(typing < 35, "35 calls were throttled");
    server.stop().await;
}
