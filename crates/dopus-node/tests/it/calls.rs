//! Calls between two real nodes: `discordopus call B --record` rings, `discordopus call A
//! --play` picks up and plays an Ogg Opus file, hangs up when it ends; the recording holds
//! exactly the played packets, in order, byte for byte.

use crate::harness::{Rng, SERIAL, TestServer, contact_pair, eventually};
use dopus_media::{OggOpusFile, OggOpusWriter, OpusHead, OpusTags};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// An Ogg Opus file of `n` 20 ms CELT packets with pseudo-random payloads (never decoded on
/// the way, so any bytes after a valid TOC do).
fn opus_file(path: &std::path::Path, n: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(7);
    let tags = OpusTags {
        vendor: "dopus test".into(),
        comments: Vec::new(),
    };
    let (mut w, mut bytes) = OggOpusWriter::new(42, OpusHead::for_recording(1), &tags);
    let mut packets = Vec::new();
    for _ in 0..n {
        let len = 20 + rng.below(100) as usize;
        let mut p = vec![31 << 3]; // CELT fullband 20 ms, one frame
        p.extend((0..len).map(|_| rng.next_u64() as u8));
        bytes.extend(w.push(&p).unwrap());
        packets.push(p);
    }
    bytes.extend(w.finish());
    std::fs::write(path, bytes).unwrap();
    packets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_played_file_arrives_packet_for_packet_in_the_recording() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (a, b) = contact_pair(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let played = tmp.path().join("in.opus");
    let recorded = tmp.path().join("out.opus");
    let packets = opus_file(&played, 150);

    // Bob rings Alice and records until she hangs up.
    let b_dir = b.data_dir().to_owned();
    let a_id = a.user_id.clone();
    let rec = recorded.clone();
    let bob = std::thread::spawn(move || {
        crate::harness::cli_at(
            &b_dir,
            &[
                "call",
                &a_id,
                "--record",
                rec.to_str().unwrap(),
                "--max-secs",
                "120",
            ],
        )
    });
    let api = a.api().clone();
    let bid = b.user_id.clone();
    eventually(WAIT, "alice's node rings", || {
        let (status, calls) = api.call("GET", "/calls", None);
        (status == 200
            && calls["calls"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["user_id"] == json!(bid) && c["state"] == "ringing" && c["outgoing"] == false
                })
            }))
        .then_some(())
    })
    .await;

    // Alice picks up, plays the file and hangs up when it ends.
    let a_call = a
        .cli(&[
            "call",
            &b.user_id,
            "--play",
            played.to_str().unwrap(),
            "--max-secs",
            "120",
        ])
        .expect("alice's call");
    let b_call = tokio::task::spawn_blocking(move || bob.join().unwrap())
        .await
        .unwrap()
        .expect("bob's call");
    println!("alice: {a_call}\nbob: {b_call}");
    assert_eq!(a_call["id"], b_call["id"]);
    for c in [&a_call, &b_call] {
        assert_eq!(c["state"], "ended");
        assert_eq!(c["end"], "completed");
    }
    assert_eq!(a_call["ended_by_me"], true);
    assert_eq!(a_call["media"]["played"], packets.len() as u64);
    assert_eq!(b_call["media"]["record_done"], true);

    let file = OggOpusFile::parse(&std::fs::read(&recorded).unwrap()).expect("a valid recording");
    assert!(file.complete);
    let got: Vec<&Vec<u8>> = file.packets.iter().map(|p| &p.data).collect();
    assert_eq!(
        got.len(),
        packets.len(),
        "recorded {} of {}",
        got.len(),
        packets.len()
    );
    for (i, (g, w)) in got.iter().zip(&packets).enumerate() {
        assert_eq!(*g, w, "packet {i} differs");
    }

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
