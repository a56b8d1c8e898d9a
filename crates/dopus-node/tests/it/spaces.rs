//! Spaces end to end (issue 15): three real nodes that are not contacts, a real server. Alice
//! creates a space with the CLI and invites bob and carol, who join with the code; everyone
//! talks in `general` and every message reaches everyone once, in each sender's order; carol
//! goes offline and catches up from the mailbox; alice kicks carol, who gets nothing sent after.
//! The server's data directory holds none of the plaintext (names of spaces and channels
//! included).

use crate::harness::{SERIAL, TestNode, TestServer, blocking, eventually};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn texts(node: &TestNode, channel: &str) -> Vec<(String, String)> {
    let page = node.api().ok(
        "GET",
        &format!("/channels/{channel}/messages?limit=200"),
        None,
    );
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["sender"].as_str().unwrap_or_default().to_owned(),
                m["body"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The id of the channel message with this text.
fn message_id(node: &TestNode, channel: &str, text: &str) -> String {
    let page = node.api().ok(
        "GET",
        &format!("/channels/{channel}/messages?limit=200"),
        None,
    );
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["body"] == text)
        .and_then(|m| m["id"].as_str())
        .unwrap()
        .to_owned()
}

fn space(node: &TestNode, id: &str) -> Value {
    node.api().ok("GET", &format!("/spaces/{id}"), None)
}

fn members(node: &TestNode, id: &str) -> Vec<String> {
    space(node, id)["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["user_id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every file under `dir`, read whole.
fn files_under(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push(b);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_create_join_talk_catch_up_and_kick() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut alice = blocking(|| TestNode::create("alice"));
    let mut bob = blocking(|| TestNode::create("bob"));
    let mut carol = blocking(|| TestNode::create("carol"));
    alice.start(&server.url).await;
    bob.start(&server.url).await;
    carol.start(&server.url).await;

    // Alice creates the space with the CLI; it starts with `general` and `General`.
    let created = alice.cli(&["space", "create", "Zebra Guild"]).unwrap();
    let sid = created["id"].as_str().unwrap().to_owned();
    let general = created["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "general" && c["kind"] == "text")
        .expect("a text channel general")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        created["channels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "General" && c["kind"] == "voice")
    );

    // Bob joins with a single-use code; `space join` waits for the answer.
    let inv = alice
        .cli(&[
            "space",
            "invite",
            &sid,
            "--max-uses",
            "1",
            "--expires",
            "1h",
        ])
        .unwrap();
    let code = inv["code"].as_str().unwrap().to_owned();
    assert_eq!(inv["id"], inv["code"]);
    let joined = bob
        .cli(&["space", "join", &code, "--wait", "60"])
        .unwrap_or_else(|e| panic!("bob could not join: {e}"));
    assert_eq!(joined["membership"], "member");
    assert_eq!(joined["id"], sid.as_str());
    // The code is used up: a second use is refused with a reason.
    let err = carol
        .cli(&["space", "join", &code, "--wait", "60"])
        .expect_err("a used-up code is refused");
    assert!(err.contains("used as many times"), "{err}");

    // Roles from the CLI: alice makes "mods" (may kick, green) and gives it to bob.
    let made = alice
        .cli(&[
            "space",
            "role",
            "create",
            &sid,
            "mods",
            "--permissions",
            "kick,manage_messages",
            "--color",
            "3aa55d",
        ])
        .unwrap();
    let mods = made["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "mods")
        .expect("the role")
        .clone();
    assert_eq!(mods["color"], 0x3a_a5_5d);
    let mods_id = mods["id"].as_str().unwrap().to_owned();
    let given = alice
        .cli(&["space", "role", "assign", &sid, &bob.user_id, &mods_id])
        .unwrap();
    assert!(
        given["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user_id"] == bob.user_id.as_str()
                && m["roles"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| *r == mods_id.as_str())),
        "{given}"
    );

    // A revoked code and an expired code are refused with a reason.
    let inv = alice.cli(&["space", "invite", &sid]).unwrap();
    let invite_id = inv["invite_id"].as_str().unwrap().to_owned();
    assert_eq!(invite_id.len(), 64);
    let listed = alice.cli(&["space", "invites", &sid]).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == invite_id.as_str() && i["revoked"] == false),
        "{listed}"
    );
    alice.cli(&["space", "revoke", &sid, &invite_id]).unwrap();
    let err = carol
        .cli(&[
            "space",
            "join",
            inv["code"].as_str().unwrap(),
            "--wait",
            "60",
        ])
        .expect_err("a revoked code is refused");
    assert!(err.contains("revoked"), "{err}");
    let short = alice
        .cli(&["space", "invite", &sid, "--expires", "1s"])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let err = carol
        .cli(&["space", "join", short["code"].as_str().unwrap()])
        .expect_err("an expired code is refused");
    assert!(err.contains("expired"), "{err}");

    // Carol joins with bob's code while bob is away: the code names alice as an admitter,
    // and alice lets her in.
    let inv = bob
        .cli(&["space", "invite", &sid, "--max-uses", "1"])
        .unwrap();
    let bobs_invite = inv["invite_id"].as_str().unwrap().to_owned();
    {
        let (api, sid, id) = (alice.api().clone(), sid.clone(), bobs_invite.clone());
        eventually(WAIT, "alice holds bob's invite", || {
            let s = api.ok("GET", &format!("/spaces/{sid}"), None);
            s["invites"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["id"] == id.as_str()))
                .then_some(())
        })
        .await;
    }
    bob.kill9();
    let joined = carol
        .cli(&[
            "space",
            "join",
            inv["code"].as_str().unwrap(),
            "--wait",
            "60",
        ])
        .unwrap_or_else(|e| panic!("carol could not join through alice: {e}"));
    assert_eq!(joined["membership"], "member");
    bob.start(&server.url).await;
    for node in [&alice, &bob, &carol] {
        let api = node.api().clone();
        let sid = sid.clone();
        eventually(WAIT, &format!("{} sees three members", node.name), || {
            let s = api.ok("GET", &format!("/spaces/{sid}"), None);
            (s["members"].as_array().map(Vec::len) == Some(3) && s["name"] == "Zebra Guild")
                .then_some(())
        })
        .await;
    }
    let listed = bob.cli(&["space", "list"]).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    // Everyone talks: three rounds, each node in turn.
    let mut expected: Vec<(String, String)> = Vec::new();
    for round in 0..3 {
        for node in [&alice, &bob, &carol] {
            let body = format!("r{round} from {}", node.name);
            let sent = node.cli(&["channel", "send", &general, &body]).unwrap();
            assert!(sent["id"].is_string());
            expected.push((node.user_id.clone(), body));
        }
    }
    for node in [&alice, &bob, &carol] {
        let api_node = node;
        eventually(WAIT, &format!("{} has all nine", node.name), || {
            (texts(api_node, &general).len() >= 9).then_some(())
        })
        .await;
    }
    // A moment for duplicates, if any, to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in [&alice, &bob, &carol] {
        let got = texts(node, &general);
        assert_eq!(got.len(), 9, "{}: exactly once each: {got:?}", node.name);
        for sender in [&alice, &bob, &carol] {
            let mine: Vec<&String> = got
                .iter()
                .filter(|(s, _)| *s == sender.user_id)
                .map(|(_, b)| b)
                .collect();
            let want: Vec<&String> = expected
                .iter()
                .filter(|(s, _)| *s == sender.user_id)
                .map(|(_, b)| b)
                .collect();
            assert_eq!(
                mine, want,
                "{} sees {}'s messages in order",
                node.name, sender.name
            );
        }
    }
    let cli_page = carol.cli(&["channel", "messages", &general]).unwrap();
    assert_eq!(cli_page["messages"].as_array().map(Vec::len), Some(9));

    // Mentions: alice names bob; bob's channel shows an unread mention, carol's only unread
    // messages; reading the channel clears both.
    let general_of = |s: &serde_json::Value| {
        s["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == general.as_str())
            .cloned()
            .unwrap()
    };
    let mention = format!("look <@{}>", bob.user_id);
    alice.cli(&["channel", "send", &general, &mention]).unwrap();
    for (node, want) in [(&bob, 1), (&carol, 0)] {
        let (api, sid) = (node.api().clone(), sid.clone());
        eventually(WAIT, &format!("{} has the mention", node.name), || {
            texts(node, &general)
                .iter()
                .any(|(_, b)| *b == mention)
                .then_some(())
        })
        .await;
        let c = general_of(&api.ok("GET", &format!("/spaces/{sid}"), None));
        assert!(c["unread"].as_u64().unwrap_or(0) >= 1, "{c}");
        assert_eq!(c["mentions"].as_u64(), Some(want), "{}: {c}", node.name);
    }
    let newest = message_id(&bob, &general, &mention);
    let read = bob.api().ok(
        "POST",
        &format!("/channels/{general}/read"),
        Some(serde_json::json!({ "up_to": newest })),
    );
    let c = general_of(&read);
    assert_eq!(
        (c["unread"].as_u64(), c["mentions"].as_u64()),
        (Some(0), Some(0))
    );

    // Carol goes offline; what is said meanwhile reaches her from the mailbox.
    carol.kill9();
    alice
        .cli(&["channel", "send", &general, "while carol is away"])
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    carol.start(&server.url).await;
    eventually(WAIT, "carol catches up", || {
        texts(&carol, &general)
            .iter()
            .any(|(_, b)| b == "while carol is away")
            .then_some(())
    })
    .await;

    // Alice kicks carol; everyone applies it, carol included.
    let kicked = alice.cli(&["space", "kick", &sid, &carol.user_id]).unwrap();
    assert_eq!(kicked["members"].as_array().map(Vec::len), Some(2));
    for node in [&bob, &carol] {
        let (n, sid, cid) = (node, sid.clone(), carol.user_id.clone());
        eventually(WAIT, &format!("{} applied the kick", node.name), || {
            (!members(n, &sid).contains(&cid)).then_some(())
        })
        .await;
    }
    assert_eq!(space(&carol, &sid)["membership"], "former");
    let before = texts(&carol, &general).len();
    alice
        .cli(&["channel", "send", &general, "after the kick from alice"])
        .unwrap();
    bob.cli(&["channel", "send", &general, "after the kick from bob"])
        .unwrap();
    eventually(
        WAIT,
        "bob and alice get the messages after the kick",
        || {
            let b = texts(&bob, &general);
            let a = texts(&alice, &general);
            (b.iter().any(|(_, t)| t == "after the kick from alice")
                && a.iter().any(|(_, t)| t == "after the kick from bob"))
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = texts(&carol, &general);
    assert_eq!(
        after.len(),
        before,
        "carol got nothing after her kick: {after:?}"
    );
    let err = carol
        .cli(&["channel", "send", &general, "let me back"])
        .expect_err("a kicked member cannot post");
    assert!(!err.is_empty());

    // A channel overwrite: @everyone may no longer post in #general; bob's view says so and
    // his node refuses to send. Then alice hands the space to bob, who may post again as owner.
    let everyone = "0".repeat(32);
    let patched = alice.api().ok(
        "PATCH",
        &format!("/spaces/{sid}/channels/{general}"),
        Some(serde_json::json!({
            "overwrites": [{ "role": everyone, "deny": ["send_messages"] }]
        })),
    );
    assert!(
        patched["channels"].as_array().unwrap().iter().any(
            |c| c["id"] == general.as_str() && c["overwrites"][0]["deny"][0] == "send_messages"
        ),
        "{patched}"
    );
    {
        let (api, sid, general) = (bob.api().clone(), sid.clone(), general.clone());
        eventually(WAIT, "bob may no longer post in #general", || {
            let s = api.ok("GET", &format!("/spaces/{sid}"), None);
            s["channels"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == general.as_str() && c["can_send"] == false)
                .then_some(())
        })
        .await;
    }
    bob.cli(&["channel", "send", &general, "muted"])
        .expect_err("the overwrite stops bob");

    // Reordering (the UI's drag): #general moves below the voice channel; an empty list, a bad
    // channel id, and a member without manage_channels are refused.
    let reordered = alice.api().ok(
        "PUT",
        &format!("/spaces/{sid}/channels"),
        Some(serde_json::json!({ "positions": [{ "channel": general, "position": 7 }] })),
    );
    assert!(
        reordered["channels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == general.as_str() && c["position"] == 7),
        "{reordered}"
    );
    for (node, body, status) in [
        (&alice, serde_json::json!({ "positions": [] }), 400),
        (
            &alice,
            serde_json::json!({ "positions": [{ "channel": "dchan1nope", "position": 1 }] }),
            400,
        ),
        (
            &bob,
            serde_json::json!({ "positions": [{ "channel": general, "position": 0 }] }),
            422,
        ),
    ] {
        let (got, answer) = node
            .api()
            .call("PUT", &format!("/spaces/{sid}/channels"), Some(body));
        assert_eq!(got, status, "{answer}");
    }
    let moved = alice
        .cli(&["space", "transfer", &sid, &bob.user_id])
        .unwrap();
    assert_eq!(moved["owner"], bob.user_id.as_str());
    {
        let (api, sid, owner) = (bob.api().clone(), sid.clone(), bob.user_id.clone());
        eventually(WAIT, "bob owns the space", || {
            let s = api.ok("GET", &format!("/spaces/{sid}"), None);
            (s["owner"] == owner.as_str()).then_some(())
        })
        .await;
    }
    bob.cli(&["channel", "send", &general, "the owner speaks"])
        .expect("the owner may post whatever the overwrites say");

    // The server never saw a name or a message in the clear.
    for needle in [
        "Zebra Guild",
        "r0 from alice",
        "while carol is away",
        "after the kick",
    ] {
        for f in files_under(server.data_dir()) {
            assert!(
                !f.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "the server's data holds {needle:?}"
            );
        }
    }
    server.stop().await;
}
