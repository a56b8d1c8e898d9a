//! Voice channels between three real nodes that are not contacts, a real server (issue 16):
//! each joins the space's `General` voice channel with `discordopus voice join --play
//! --record`, plays its own Ogg Opus file and records the other two; every recording holds
//! exactly what the other played, in order, byte for byte. (A kick while in the channel is
//! tested in `dopus-core` `machine::voice::tests` and in the simulated network.)

use crate::harness::{
    SERIAL, TestNode, TestServer, blocking, eventually, opus_file, recorded_packets,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn voice_of(node: &TestNode, space: &str) -> Value {
    node.api()
        .ok("GET", &format!("/spaces/{space}/voice"), None)
}

fn participants(node: &TestNode, space: &str, channel: &str) -> Vec<String> {
    voice_of(node, space)["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel_id"] == channel)
        .and_then(|c| c["participants"].as_array())
        .map(|a| {
            a.iter()
                .map(|p| p["user_id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn join_cli(
    node: &TestNode,
    channel: &str,
    args: &[&str],
) -> std::thread::JoinHandle<Result<Value, String>> {
    let dir = node.data_dir().to_owned();
    let mut all: Vec<String> = vec!["voice".into(), "join".into(), channel.into()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    std::thread::spawn(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        crate::harness::cli_at(&dir, &refs)
    })
}

fn recording_of(base: &Path, stem: &str, user: &str) -> PathBuf {
    base.join(format!("{stem}-{user}.opus"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_in_a_voice_channel_hear_each_other_packet_for_packet() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut alice = blocking(|| TestNode::create("alice"));
    let mut bob = blocking(|| TestNode::create("bob"));
    let mut carol = blocking(|| TestNode::create("carol"));
    alice.start(&server.url).await;
    bob.start(&server.url).await;
    carol.start(&server.url).await;

    let created = alice.cli(&["space", "create", "Voice Guild"]).unwrap();
    let sid = created["id"].as_str().unwrap().to_owned();
    let vc = created["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "General" && c["kind"] == "voice")
        .expect("a voice channel General")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let inv = alice
        .cli(&[
            "space",
            "invite",
            &sid,
            "--max-uses",
            "2",
            "--expires",
            "1h",
        ])
        .unwrap();
    let code = inv["code"].as_str().unwrap().to_owned();
    for n in [&bob, &carol] {
        let joined = n
            .cli(&["space", "join", &code, "--wait", "60"])
            .unwrap_or_else(|e| panic!("{} could not join: {e}", n.name));
        assert_eq!(joined["membership"], "member");
    }
    for n in [&alice, &bob, &carol] {
        let (n, sid) = (n, sid.clone());
        eventually(WAIT, &format!("{} sees three members", n.name), || {
            let s = n.api().ok("GET", &format!("/spaces/{sid}"), None);
            (s["members"].as_array().map(Vec::len) == Some(3)).then_some(())
        })
        .await;
    }

    // Everyone plays a file of their own and records the other two.
    let tmp = tempfile::tempdir().unwrap();
    let nodes = [&alice, &bob, &carol];
    let mut played = Vec::new();
    let mut runs = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let input = tmp.path().join(format!("in-{}.opus", n.name));
        played.push(opus_file(&input, 150, 100 + i as u64));
        let out = tmp.path().join(format!("{}.opus", n.name));
        runs.push(join_cli(
            n,
            &vc,
            &[
                "--play",
                input.to_str().unwrap(),
                "--record",
                out.to_str().unwrap(),
                "--wait-for",
                "2",
                "--idle-secs",
                "3",
                "--max-secs",
                "120",
            ],
        ));
    }
    let mut results = Vec::new();
    for r in runs {
        let r = tokio::task::spawn_blocking(move || r.join().unwrap())
            .await
            .unwrap()
            .expect("voice join");
        results.push(r);
    }
    for (i, r) in results.iter().enumerate() {
        println!("{}: {r}", nodes[i].name);
        assert!(r["current"].is_null(), "{} left", nodes[i].name);
        assert_eq!(r["media"]["played"], 150);
        assert_eq!(r["media"]["record_done"], true);
    }
    for (i, listener) in nodes.iter().enumerate() {
        for (j, speaker) in nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            let got = recorded_packets(&recording_of(tmp.path(), &listener.name, &speaker.user_id));
            assert_eq!(
                got.len(),
                played[j].len(),
                "{} recorded {} of {}'s {} packets",
                listener.name,
                got.len(),
                speaker.name,
                played[j].len()
            );
            for (k, (g, w)) in got.iter().zip(&played[j]).enumerate() {
                assert_eq!(
                    g, w,
                    "{} hears {}: packet {k} differs",
                    listener.name, speaker.name
                );
            }
        }
    }
    // Nobody is left in the channel.
    for n in nodes {
        let (n, sid, vc) = (n, sid.clone(), vc.clone());
        eventually(WAIT, &format!("{} sees an empty channel", n.name), || {
            participants(n, &sid, &vc).is_empty().then_some(())
        })
        .await;
    }
}
