//! Typing and search in a space's channels through the local API (issue 15): two real nodes
//! that are not contacts and a real server. Bob's typing in `general` reaches alice as a
//! `typing` event naming the channel; `GET /spaces/{id}/search` finds decrypted channel
//! messages of that space only, pages, and stops showing a channel once we may not view it.
//! A member who is not a contact shows the name it gave itself in the space.

use crate::harness::{SERIAL, TestNode, TestServer, blocking, eventually};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const EVERYONE: &str = "00000000000000000000000000000000";

fn channel_named(space: &Value, name: &str) -> Option<String> {
    space["channels"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name && c["kind"] == "text")
        .and_then(|c| c["id"].as_str())
        .map(str::to_owned)
}

fn bodies(node: &TestNode, channel: &str) -> Vec<String> {
    node.api().ok(
        "GET",
        &format!("/channels/{channel}/messages?limit=200"),
        None,
    )["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn search(node: &TestNode, space: &str, query: &str) -> Value {
    node.api()
        .ok("GET", &format!("/spaces/{space}/search?{query}"), None)
}

fn hit_bodies(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typing_reaches_the_channel_and_search_stays_within_the_space() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut alice = blocking(|| TestNode::create("alice"));
    let mut bob = blocking(|| TestNode::create("bob"));
    alice.start(&server.url).await;
    bob.start(&server.url).await;

    let created = alice
        .api()
        .ok("POST", "/spaces", Some(json!({ "name": "Otter Den" })));
    let sid = created["id"].as_str().unwrap().to_owned();
    let general = channel_named(&created, "general").expect("general");
    let with_ops = alice.api().ok(
        "POST",
        &format!("/spaces/{sid}/channels"),
        Some(json!({ "name": "ops" })),
    );
    let ops = channel_named(&with_ops, "ops").expect("ops");
    let inv = alice
        .api()
        .ok("POST", &format!("/spaces/{sid}/invites"), Some(json!({})));
    bob.api().ok(
        "POST",
        "/spaces/join",
        Some(json!({ "invite": inv["code"] })),
    );
    eventually(WAIT, "bob is a member and knows ops", || {
        let s = bob.api().ok("GET", &format!("/spaces/{sid}"), None);
        (s["membership"] == "member" && channel_named(&s, "ops").is_some()).then_some(())
    })
    .await;

    // Names: bob is not alice's contact, yet she shows the name he chose (his `profile` op),
    // and a rename follows.
    let bob_id = bob.user_id.clone();
    let name_at_alice = |alice: &TestNode| -> Option<String> {
        let s = alice.api().ok("GET", &format!("/spaces/{sid}"), None);
        s["members"]
            .as_array()?
            .iter()
            .find(|m| m["user_id"] == bob_id.as_str())?["display_name"]
            .as_str()
            .map(str::to_owned)
    };
    eventually(WAIT, "alice shows bob's name", || {
        (name_at_alice(&alice).as_deref() == Some("bob")).then_some(())
    })
    .await;
    bob.api().ok(
        "PUT",
        "/me/profile",
        Some(json!({ "display_name": "Bob the Builder" })),
    );
    eventually(WAIT, "alice shows bob's new name", || {
        (name_at_alice(&alice).as_deref() == Some("Bob the Builder")).then_some(())
    })
    .await;

    // Messages in two channels, from both; and one in another space of bob's.
    alice.api().ok(
        "POST",
        &format!("/channels/{general}/messages"),
        Some(json!({ "body": "zebra crossing one" })),
    );
    alice.api().ok(
        "POST",
        &format!("/channels/{ops}/messages"),
        Some(json!({ "body": "zebra crossing two" })),
    );
    bob.api().ok(
        "POST",
        &format!("/channels/{general}/messages"),
        Some(json!({ "body": "zebra three" })),
    );
    let other = bob
        .api()
        .ok("POST", "/spaces", Some(json!({ "name": "Elsewhere" })));
    let other_general = channel_named(&other, "general").expect("general");
    bob.api().ok(
        "POST",
        &format!("/channels/{other_general}/messages"),
        Some(json!({ "body": "zebra elsewhere" })),
    );
    eventually(WAIT, "bob holds alice's messages", || {
        (bodies(&bob, &general).contains(&"zebra crossing one".to_owned())
            && bodies(&bob, &ops).contains(&"zebra crossing two".to_owned()))
        .then_some(())
    })
    .await;

    // Search: this space's channels only, newest first, every hit counted.
    let found = search(&bob, &sid, "q=zebra&limit=10");
    let mut got = hit_bodies(&found);
    got.sort();
    assert_eq!(
        got,
        ["zebra crossing one", "zebra crossing two", "zebra three"],
        "{found}"
    );
    // Newest first: in the order this node stored them.
    let seqs: Vec<u64> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"]["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    assert_eq!(found["total"], 3);
    assert!(found.get("next_before").is_none_or(Value::is_null));
    let hl = found["results"][0]["highlighted"].as_str().unwrap();
    assert!(hl.contains("\u{2}zebra\u{3}"), "{hl:?}");
    // Paging.
    let first = search(&bob, &sid, "q=zebra&limit=2");
    assert_eq!(hit_bodies(&first).len(), 2);
    let next = first["next_before"].as_u64().expect("a next page");
    let rest = search(&bob, &sid, &format!("q=zebra&limit=2&before={next}"));
    assert_eq!(hit_bodies(&rest), [hit_bodies(&found)[2].clone()]);
    assert!(rest.get("next_before").is_none_or(Value::is_null));
    // The global search still sees the other space.
    let all = bob.api().ok("GET", "/search?q=zebra&limit=10", None);
    assert_eq!(all["total"], 4);

    // Typing: bob types in general; alice is told, with the channel.
    let mut ea = alice.events().await;
    let bid = bob.user_id.clone();
    let general_c = general.clone();
    let (status, _) = bob.api().call(
        "POST",
        &format!("/channels/{general}/typing"),
        Some(json!({ "active": true })),
    );
    assert_eq!(status, 204);
    ea.wait_for(Duration::from_secs(30), "bob typing in general", move |e| {
        e["type"] == "typing"
            && e["user_id"] == bid.as_str()
            && e["channel"] == general_c.as_str()
            && e["active"] == true
    })
    .await;

    // Alice hides ops from @everyone: bob's search no longer shows it, and he may not type there.
    alice.api().ok(
        "PATCH",
        &format!("/spaces/{sid}/channels/{ops}"),
        Some(json!({ "overwrites": [{ "role": EVERYONE, "deny": ["view_channel"] }] })),
    );
    eventually(WAIT, "bob's search drops ops", || {
        let f = search(&bob, &sid, "q=zebra&limit=10");
        (f["total"] == 2).then_some(f)
    })
    .await;
    let (status, err) = bob.api().call(
        "POST",
        &format!("/channels/{ops}/typing"),
        Some(json!({ "active": true })),
    );
    assert_eq!(status, 422, "{err}");
    // The owner still finds all three (administrator).
    assert_eq!(search(&alice, &sid, "q=zebra")["total"], 3);

    // Bad input: a clear error, never a panic.
    let (status, _) = bob.api().call("GET", "/spaces/nonsense/search?q=a", None);
    assert_eq!(status, 400);
    let unknown = other["id"].as_str().unwrap().to_owned();
    let (status, _) = alice
        .api()
        .call("GET", &format!("/spaces/{unknown}/search?q=zebra"), None);
    assert_eq!(status, 404, "a space alice is not in");
    let (status, _) = bob.api().call(
        "POST",
        &format!("/channels/{general}/typing"),
        Some(json!({ "active": "yes" })),
    );
    assert_eq!(status, 400);
    server.stop().await;
}

/// Waiting for keys, end to end: bob's node loses alice's Megolm session (its store keeps the
/// log and the messages, as a restore of an old copy of the keys would leave it), alice's next
/// message reaches him while she is away, so it waits visibly in `ChannelPage.waiting`; the
/// placeholder survives bob's restart, and once alice is back bob's node asks again and the
/// message is decrypted in place (it joins the page, the placeholder leaves).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_whose_key_is_missing_waits_visibly_and_is_decrypted_in_place() {
    use dopus_core::store::{Change, Store};
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut alice = blocking(|| TestNode::create("alice"));
    let mut bob = blocking(|| TestNode::create("bob"));
    alice.start(&server.url).await;
    bob.start(&server.url).await;
    let created = alice
        .api()
        .ok("POST", "/spaces", Some(json!({ "name": "Keys" })));
    let sid = created["id"].as_str().unwrap().to_owned();
    let general = channel_named(&created, "general").expect("general");
    let inv = alice
        .api()
        .ok("POST", &format!("/spaces/{sid}/invites"), Some(json!({})));
    bob.api().ok(
        "POST",
        "/spaces/join",
        Some(json!({ "invite": inv["code"] })),
    );
    eventually(WAIT, "bob is a member", || {
        (bob.api().ok("GET", &format!("/spaces/{sid}"), None)["membership"] == "member")
            .then_some(())
    })
    .await;
    let send = |node: &TestNode, body: &str| {
        node.api().ok(
            "POST",
            &format!("/channels/{general}/messages"),
            Some(json!({ "body": body })),
        );
    };
    send(&alice, "first");
    eventually(WAIT, "bob reads the first message", || {
        bodies(&bob, &general)
            .contains(&"first".to_owned())
            .then_some(())
    })
    .await;

    // Bob's node loses its Megolm sessions of the space (the log and messages stay).
    bob.kill9();
    let space = dopus_types::SpaceId::parse(&sid).unwrap();
    let dir = bob.data_dir().to_owned();
    blocking(move || {
        let mut store = dopus_store::SqliteStore::open(&dir, "pw").expect("bob's store");
        let ops = store.space_ops(&space).expect("ops");
        assert!(!ops.is_empty());
        store.apply_one(Change::RemoveSpace(space)).expect("remove");
        for op in ops {
            store.apply_one(Change::SaveSpaceOp(op)).expect("op");
        }
    });

    // Alice speaks while bob is away, then leaves: her message waits in bob's mailbox, and
    // nobody who holds the key is online when bob reads it.
    send(&alice, "second");
    tokio::time::sleep(Duration::from_secs(1)).await;
    alice.kill9();
    bob.start(&server.url).await;
    let aid = alice.user_id.clone();
    let page = |bob: &TestNode| {
        bob.api().ok(
            "GET",
            &format!("/channels/{general}/messages?limit=50"),
            None,
        )
    };
    let waiting = eventually(WAIT, "a placeholder at bob", || {
        let p = page(&bob);
        let w = p["waiting"].as_array().cloned().unwrap_or_default();
        (!w.is_empty()).then_some(w)
    })
    .await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0]["state"], "waiting_for_keys");
    assert_eq!(waiting[0]["sender"], aid.as_str());
    assert!(!bodies(&bob, &general).contains(&"second".to_owned()));

    // Across a restart the placeholder stays (it is in the store).
    bob.kill9();
    bob.start(&server.url).await;
    assert_eq!(
        page(&bob)["waiting"].as_array().map(Vec::len),
        Some(1),
        "still waiting after the restart"
    );

    // Alice is back: bob's node asks again, gets the key from her, decrypts in place.
    alice.start(&server.url).await;
    eventually(
        Duration::from_secs(120),
        "the message is decrypted in place",
        || {
            let p = page(&bob);
            let decrypted = p["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["body"] == "second"));
            (decrypted && p["waiting"].as_array().is_some_and(Vec::is_empty)).then_some(())
        },
    )
    .await;
    assert_eq!(
        bodies(&bob, &general),
        ["first", "second"],
        "each once, in order"
    );
    server.stop().await;
}
