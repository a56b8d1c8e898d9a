//! Calls between two real nodes: `discordopus call B --record` rings, `discordopus call A
//! --play` picks up and plays an Ogg Opus file, hangs up when it ends; the recording holds
//! exactly the played packets, in order, byte for byte.

use crate::harness::{
    SERIAL, TestServer, assert_recording, contact_pair, eventually, opus_file, played_call,
};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_played_file_arrives_packet_for_packet_in_the_recording() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (a, b) = contact_pair(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let played = tmp.path().join("in.opus");
    let recorded = tmp.path().join("out.opus");
    let packets = opus_file(&played, 150, 7);

    // Bob rings Alice and records until she hangs up; Alice picks up, plays the file and hangs
    // up when it ends.
    let (a_call, b_call) = played_call(&a, &b, &played, &recorded, WAIT).await;
    println!("alice: {a_call}\nbob: {b_call}");
    assert_eq!(a_call["id"], b_call["id"]);
    for c in [&a_call, &b_call] {
        assert_eq!(c["state"], "ended");
        assert_eq!(c["end"], "completed");
    }
    assert_eq!(a_call["ended_by_me"], true);
    assert_eq!(a_call["media"]["played"], packets.len() as u64);
    assert_eq!(b_call["media"]["record_done"], true);

    assert_recording(&recorded, &packets);

    // Both conversations show the call with its duration.
    let entry = |node: &crate::harness::TestNode, peer: &str| {
        node.api()
            .history(peer)
            .into_iter()
            .filter(|m| m["kind"] == "system")
            .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let a_entries = entry(&a, &b.user_id);
    let b_entries = entry(&b, &a.user_id);
    assert!(
        a_entries.len() == 1 && a_entries[0].starts_with("Call ended · 0:0"),
        "{a_entries:?}"
    );
    assert!(
        b_entries.len() == 1 && b_entries[0].starts_with("Call ended · 0:0"),
        "{b_entries:?}"
    );
}

/// A frame the "browser" sends: a CELT 20 ms TOC and a numbered body.
fn leg_frame(tag: u8, i: u32) -> Vec<u8> {
    let mut v = vec![31 << 3, tag];
    v.extend((0..30 + i % 50).map(|k| (i.wrapping_mul(7) + k) as u8));
    v
}

/// Collects `n` frames from a leg's events, up to `limit`.
async fn collect_frames(
    rx: &mut tokio::sync::mpsc::Receiver<dopus_rtc::LegEvent>,
    n: usize,
    limit: Duration,
) -> Vec<(u64, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(dopus_rtc::LegEvent::Frame { rtp_time, data, .. })) => {
                got.push((rtp_time, data))
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// The browser leg through the API, with str0m stand-ins for both browsers: alice's page
/// opens its leg while ringing, bob's once he picked up; frames from alice's "browser" reach
/// bob's "browser" through both nodes bit-exact and in order, and the other way; a bad offer
/// is refused with a reason; hanging up closes both legs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn browser_legs_carry_frames_through_both_nodes() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (a, b) = contact_pair(&server).await;
    let call = a
        .api()
        .ok("POST", "/calls", Some(json!({"user_id": b.user_id})));
    let id = call["id"].as_str().unwrap().to_owned();

    // A malformed offer and one for no call: clear errors, no leg.
    let (st, body) = a.api().call(
        "POST",
        &format!("/calls/{id}/browser"),
        Some(json!({"sdp": "v=0 nonsense"})),
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.to_string().contains("offer"), "{body}");
    let (st, _) = a.api().call(
        "POST",
        "/calls/dcall1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq/browser",
        Some(json!({"sdp": "v=0"})),
    );
    assert!(st == 400 || st == 404, "{st}");

    // Alice's page opens its leg while the call rings.
    let open = |node: &crate::harness::TestNode| {
        let (fake, offer) = dopus_rtc::FakeBrowser::offer().expect("offer");
        let answer = node.api().ok(
            "POST",
            &format!("/calls/{id}/browser"),
            Some(json!({ "sdp": offer })),
        );
        let sdp = answer["sdp"].as_str().expect("an answer");
        assert!(sdp.contains("127.0.0.1"), "the leg's candidate is loopback");
        assert!(!sdp.contains("typ srflx") && !sdp.contains("typ relay"));
        fake.accept(sdp).expect("answer applies")
    };
    let mut alice = open(&a);
    let aid = a.user_id.clone();
    let bapi = b.api().clone();
    eventually(WAIT, "bob's node rings", || {
        let (s, c) = bapi.call("GET", "/calls", None);
        (s == 200
            && c["calls"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["user_id"] == json!(aid) && c["state"] == "ringing")
            }))
        .then_some(())
    })
    .await;
    b.api().ok("POST", &format!("/calls/{id}/accept"), None);
    let mut bob = open(&b);

    // Both nodes negotiated the call's m-line and both legs are up.
    for node in [&a, &b] {
        let api = node.api().clone();
        let path = format!("/calls/{id}");
        eventually(WAIT, "media ready and the leg connected", || {
            let c = api.ok("GET", &path, None);
            (c["media"]["ready"] == true && c["media"]["browser"]["connected"] == true)
                .then_some(())
        })
        .await;
    }
    // The answerer's node holds its first frames for 500 ms after its answer.
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Alice speaks: 100 frames of 20 ms, in real time.
    let n = 100u32;
    let t0 = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(t0 + Duration::from_millis(20) * i).await;
        alice
            .handle
            .send_down(7_000 + u64::from(i) * 960, leg_frame(0xa1, i))
            .expect("queued");
    }
    let got = collect_frames(&mut bob.events, n as usize, Duration::from_secs(20)).await;
    assert_eq!(
        got.len(),
        n as usize,
        "bob's browser got {} of {n}",
        got.len()
    );
    for (i, (t, d)) in got.iter().enumerate() {
        assert_eq!(d, &leg_frame(0xa1, i as u32), "frame {i} bit-exact");
        assert_eq!(t - got[0].0, i as u64 * 960, "frame {i} keeps its RTP time");
    }

    // Bob answers: 50 frames back.
    let t0 = tokio::time::Instant::now();
    for i in 0..50u32 {
        tokio::time::sleep_until(t0 + Duration::from_millis(20) * i).await;
        bob.handle
            .send_down(90_000 + u64::from(i) * 960, leg_frame(0xb0, i))
            .expect("queued");
    }
    let got = collect_frames(&mut alice.events, 50, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 50, "alice's browser got {} of 50", got.len());
    for (i, (_, d)) in got.iter().enumerate() {
        assert_eq!(d, &leg_frame(0xb0, i as u32), "frame {i} bit-exact");
    }

    let c = a.api().ok("GET", &format!("/calls/{id}"), None);
    let leg = &c["media"]["browser"];
    println!("alice's leg: {leg}");
    assert_eq!(leg["frames_up"], json!(n));
    assert_eq!(leg["frames_down"], json!(50));
    assert_eq!(leg["refused_sources"], json!(0));
    assert_eq!(leg["cap_bps"], json!(64_000));

    // Hanging up closes both legs.
    a.api().ok("POST", &format!("/calls/{id}/hangup"), None);
    for node in [&a, &b] {
        let api = node.api().clone();
        let path = format!("/calls/{id}");
        eventually(WAIT, "the leg closed", || {
            let c = api.ok("GET", &path, None);
            (c["state"] == "ended" && c["media"]["browser"]["closed"] == true).then_some(())
        })
        .await;
    }
}

/// Two nodes in relay-only mode (`--relay-only`) and the server's embedded TURN relay: a chat
/// message, a file and a call all go through the relay. The connection API names `relay` at
/// both ends of the pair on both nodes, and the relay's byte counter grows by at least the
/// file's size, then by at least the call's packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_only_chat_file_and_call_all_go_through_the_relay() {
    use crate::harness::{TestNode, blocking};
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

    // Chat: the first message goes through the server while the relayed channel forms.
    let mut eb = b.events().await;
    a.api().send(&b.user_id, "first");
    eb.wait_for(WAIT, "the first message", |e| {
        e["type"] == "message" && e["message"]["body"] == "first"
    })
    .await;
    for (x, y) in [(&a, &b), (&b, &a)] {
        let api = x.api().clone();
        let peer = y.user_id.clone();
        let conn = eventually(Duration::from_secs(60), "a relayed channel", || {
            let c = api.connection(&peer);
            (c["mode"] == "direct" && c["local_candidate"].is_string()).then_some(c)
        })
        .await;
        assert_eq!(conn["local_candidate"], "relay", "{conn}");
        assert_eq!(conn["remote_candidate"], "relay", "{conn}");
    }
    let before_chat = server.turn_relayed_bytes();
    a.api().send(&b.user_id, "through the relay");
    eb.wait_for(WAIT, "the relayed message", |e| {
        e["type"] == "message" && e["message"]["body"] == "through the relay"
    })
    .await;
    assert!(
        server.turn_relayed_bytes() > before_chat,
        "chat not relayed"
    );

    // A file of 1 MiB.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("relayed.bin");
    let size: usize = 1 << 20;
    let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let before_file = server.turn_relayed_bytes();
    let (status, t) = a.api().call(
        "POST",
        &format!("/conversations/{}/files", b.user_id),
        Some(json!({ "path": file.to_str().unwrap() })),
    );
    assert_eq!(status, 202, "{t}");
    let id = t["id"].as_str().unwrap().to_owned();
    let api = b.api().clone();
    eventually(WAIT, "the relayed file arrived", || {
        let (status, t) = api.call("GET", &format!("/transfers/{id}"), None);
        assert!(
            !(status == 200 && (t["state"] == "failed" || t["state"] == "cancelled")),
            "{t}"
        );
        (status == 200 && t["state"] == "done").then_some(())
    })
    .await;
    let file_bytes = server.turn_relayed_bytes() - before_file;
    assert!(file_bytes >= size as u64, "relayed {file_bytes} bytes");

    // A call: bob records, alice plays; every packet arrives.
    let played = tmp.path().join("in.opus");
    let recorded = tmp.path().join("out.opus");
    let packets = opus_file(&played, 100, 11);
    let before_call = server.turn_relayed_bytes();
    let (a_call, b_call) = played_call(&a, &b, &played, &recorded, WAIT).await;
    assert_eq!(a_call["media"]["played"], packets.len() as u64);
    assert_eq!(b_call["media"]["record_done"], true);
    assert_recording(&recorded, &packets);
    let payload: usize = packets.iter().map(Vec::len).sum();
    let call_bytes = server.turn_relayed_bytes() - before_call;
    assert!(
        call_bytes >= payload as u64,
        "relayed {call_bytes} bytes for {payload} bytes of Opus"
    );
    // Still relayed at both ends after all of it.
    let c = a.api().connection(&b.user_id);
    assert_eq!(c["local_candidate"], "relay", "{c}");
    assert_eq!(c["remote_candidate"], "relay", "{c}");
    println!("relayed: file {file_bytes} bytes, call {call_bytes} bytes ({payload} of Opus)");
    server.stop().await;
}

/// A VP8-shaped frame: the frame tag's bit 0 is VP8's "not a keyframe" flag (str0m reads it),
/// then the keyframe start code, the index and a numbered body (1 to 5 RTP packets).
fn vp8_frame(tag: u8, i: u32, key: bool) -> Vec<u8> {
    let mut f = vec![
        if key { 0x10 } else { 0x11 },
        0x02,
        0x00,
        0x9d,
        0x01,
        0x2a,
        tag,
    ];
    f.extend_from_slice(&i.to_be_bytes());
    let len = if key {
        5000
    } else {
        700 + (i as usize * 37) % 1500
    };
    f.extend((0..len).map(|j| (j as u32 ^ i) as u8));
    f
}

/// Video through both nodes (docs/media.md, "Video in calls"): the pages offer a VP8 m-line
/// beside the audio one; 60 camera frames at 30 fps from alice's "browser" reach bob's
/// bit-exact, in order and with contiguous RTP times, forwarded without decoding; a keyframe
/// request from bob's "browser" crosses bob's node, the nodes' connection and alice's node to
/// alice's "browser"; the API counts each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn video_frames_and_keyframe_requests_cross_both_nodes() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (a, b) = contact_pair(&server).await;
    let call = a
        .api()
        .ok("POST", "/calls", Some(json!({"user_id": b.user_id})));
    let id = call["id"].as_str().unwrap().to_owned();
    let open = |node: &crate::harness::TestNode| {
        let (fake, offer) = dopus_rtc::FakeBrowser::offer_with_video().expect("offer");
        let answer = node.api().ok(
            "POST",
            &format!("/calls/{id}/browser"),
            Some(json!({ "sdp": offer })),
        );
        let sdp = answer["sdp"].as_str().expect("an answer");
        assert!(
            sdp.contains("m=video") && sdp.contains("VP8/90000"),
            "{sdp}"
        );
        fake.accept(sdp).expect("answer applies")
    };
    let mut alice = open(&a);
    let aid = a.user_id.clone();
    let bapi = b.api().clone();
    eventually(WAIT, "bob's node rings", || {
        let (s, c) = bapi.call("GET", "/calls", None);
        (s == 200
            && c["calls"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["user_id"] == json!(aid) && c["state"] == "ringing")
            }))
        .then_some(())
    })
    .await;
    b.api().ok("POST", &format!("/calls/{id}/accept"), None);
    let mut bob = open(&b);
    for node in [&a, &b] {
        let api = node.api().clone();
        let path = format!("/calls/{id}");
        eventually(
            WAIT,
            "media ready, video negotiated, the leg connected",
            || {
                let c = api.ok("GET", &path, None);
                (c["media"]["ready"] == true
                    && c["media"]["video"]["negotiated"] == true
                    && c["media"]["browser"]["connected"] == true)
                    .then_some(())
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Alice's camera: 60 frames at 30 fps, a keyframe first.
    let n = 60u32;
    let t0 = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(t0 + Duration::from_micros(33_333) * i).await;
        alice
            .handle
            .send_video_down(3_000 + u64::from(i) * 3_000, vp8_frame(0xa1, i, i == 0))
            .expect("queued");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < n as usize {
        match tokio::time::timeout_at(deadline, bob.events.recv()).await {
            Ok(Some(dopus_rtc::LegEvent::Video { rtp_time, data })) => got.push((rtp_time, data)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(
        got.len(),
        n as usize,
        "bob's browser got {} of {n}",
        got.len()
    );
    for (i, (t, d)) in got.iter().enumerate() {
        assert_eq!(d, &vp8_frame(0xa1, i as u32, i == 0), "frame {i} bit-exact");
        assert_eq!(
            t - got[0].0,
            i as u64 * 3_000,
            "frame {i} keeps its RTP time"
        );
    }

    // Bob's decoder asks for a keyframe: it reaches alice's encoder through both nodes.
    bob.handle.request_keyframe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut crossed = false;
    while !crossed {
        match tokio::time::timeout_at(deadline, alice.events.recv()).await {
            Ok(Some(dopus_rtc::LegEvent::KeyframeRequest { slot: 0 })) => crossed = true,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert!(crossed, "the keyframe request reached alice's browser");

    // The connection's counters are refreshed about every second.
    let (aapi, bapi) = (a.api().clone(), b.api().clone());
    let path = format!("/calls/{id}");
    let (ca, cb) = eventually(WAIT, "the counters refreshed", || {
        let ca = aapi.ok("GET", &path, None);
        let cb = bapi.ok("GET", &path, None);
        (cb["media"]["video"]["keyframe_requests_to_peer"] == json!(1)
            && ca["media"]["video"]["path_rate_bps"].is_u64())
        .then_some((ca, cb))
    })
    .await;
    println!("alice's video: {}", ca["media"]["video"]);
    println!("bob's video: {}", cb["media"]["video"]);
    assert_eq!(ca["media"]["video"]["browser_video"], json!(true));
    assert_eq!(ca["media"]["video"]["browser_up"], json!(n));
    assert_eq!(ca["media"]["video"]["sent"], json!(n));
    assert_eq!(
        ca["media"]["video"]["keyframe_requests_from_peer"],
        json!(1)
    );
    assert_eq!(cb["media"]["video"]["received"], json!(n));
    assert_eq!(cb["media"]["video"]["browser_down"], json!(n));
    assert_eq!(cb["media"]["video"]["keyframe_requests_to_peer"], json!(1));
    // A page with video is capped by the path's video rate and the audio's 64 kbit/s: on
    // this clean path, sending about 300 kbit/s (under half the rate), the rate holds at its
    // start.
    assert_eq!(
        ca["media"]["video"]["path_rate_bps"],
        json!(dopus_rtc::VIDEO_RATE_START_BPS)
    );
    assert_eq!(
        ca["media"]["browser"]["cap_bps"],
        json!(dopus_rtc::VIDEO_RATE_START_BPS + 64_000)
    );
    a.api().ok("POST", &format!("/calls/{id}/hangup"), None);
}
