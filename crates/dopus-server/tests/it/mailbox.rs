use crate::common::*;
use dopus_proto::signaling::ErrorCode;
use dopus_server::{Config, ManualClock};
use dopus_signaling::{ClientError, Event, Incoming, RelayStatus};
use dopus_types::Timestamp;
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

async fn incoming(c: &mut TestClient) -> Incoming {
    expect(&mut c.events, "an incoming item", |e| match e {
        Event::Incoming(i) => Some(i),
        _ => None,
    })
    .await
}

/// Registers `user`'s device 1 with the server (a login), then disconnects it.
async fn register(url: &str, user: &TestUser) {
    let c = connect(url, user, 1).await;
    c.client.shutdown().await;
}

#[tokio::test]
async fn queued_items_arrive_in_order_and_stay_until_acked() {
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    register(&s.url(), &bob).await;
    let a = connect(&s.url(), &alice, 1).await;
    for i in 0..5 {
        let r = a
            .client
            .relay(bob.id, None, format!("m{i}"), true)
            .await
            .unwrap();
        assert_eq!(r.status(), RelayStatus::Stored);
        assert_eq!(r.queued, vec![bob.device(1)]);
    }
    let mut b = connect(&s.url(), &bob, 1).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let item = incoming(&mut b).await;
        assert_eq!(item.payload, format!("m{i}"));
        assert_eq!(item.from.user, alice.id);
        let ack = item.ack.expect("mailbox item");
        ids.push(ack.mailbox_id());
        if i < 3 {
            ack.ack().await.unwrap();
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    b.client.shutdown().await;
    // Only the two unacknowledged items come back.
    let mut b = connect(&s.url(), &bob, 1).await;
    assert_eq!(incoming(&mut b).await.payload, "m3");
    let last = incoming(&mut b).await;
    assert_eq!(last.payload, "m4");
    b.client.ack(vec![ids[3], ids[4]]).await.unwrap();
    b.client.shutdown().await;
    let mut b = connect(&s.url(), &bob, 1).await;
    a.client
        .relay(bob.id, None, "marker".into(), false)
        .await
        .unwrap();
    match next_app_event(&mut b.events).await {
        Event::Incoming(i) => assert_eq!(i.payload, "marker"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn items_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let server = dopus_server::start(Config::loopback(dir.path()))
        .await
        .unwrap();
    register(&server.ws_url(), &bob).await;
    let a = connect(&server.ws_url(), &alice, 1).await;
    a.client
        .relay(bob.id, None, "kept".into(), true)
        .await
        .unwrap();
    a.client.shutdown().await;
    server.shutdown().await;

    let server = dopus_server::start(Config::loopback(dir.path()))
        .await
        .unwrap();
    let mut b = connect(&server.ws_url(), &bob, 1).await;
    let item = incoming(&mut b).await;
    assert_eq!(item.payload, "kept");
    item.ack.unwrap().ack().await.unwrap();
}

#[tokio::test]
async fn expired_items_are_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let server = dopus_server::start_with_clock(Config::loopback(dir.path()), clock.clone())
        .await
        .unwrap();
    let (alice, bob) = (TestUser::new(), TestUser::new());
    register(&server.ws_url(), &bob).await;
    let a = connect(&server.ws_url(), &alice, 1).await;
    a.client
        .relay(bob.id, None, "old".into(), true)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(29 * 86400));
    a.client
        .relay(bob.id, None, "young".into(), true)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2 * 86400));
    let mut b = connect(&server.ws_url(), &bob, 1).await;
    let item = incoming(&mut b).await;
    assert_eq!(item.payload, "young");
}

#[tokio::test]
async fn the_quota_refuses_with_mailbox_full() {
    let s = start(|c| {
        c.limits.mailbox_max_items = 3;
        c.limits.mailbox_max_bytes = 1000;
        // One sender may fill it all here; shares have their own test.
        c.limits.mailbox_contact_share_percent = 100;
        c.limits.mailbox_stranger_share_percent = 100;
    })
    .await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    register(&s.url(), &bob).await;
    let a = connect(&s.url(), &alice, 1).await;
    for _ in 0..3 {
        a.client
            .relay(bob.id, None, "x".into(), true)
            .await
            .unwrap();
    }
    let err = a
        .client
        .relay(bob.id, None, "x".into(), true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::MailboxFull,
                ..
            }
        ),
        "{err:?}"
    );
    // Bytes count too: a fresh device with a 1000-byte quota refuses a 1001-byte payload.
    let carol = TestUser::new();
    register(&s.url(), &carol).await;
    let err = a
        .client
        .relay(carol.id, None, "y".repeat(1001), true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::MailboxFull,
                ..
            }
        ),
        "{err:?}"
    );
    // Acking makes room again.
    let mut b = connect(&s.url(), &bob, 1).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(incoming(&mut b).await.ack.unwrap().mailbox_id());
    }
    b.client.ack(ids).await.unwrap();
    b.client.shutdown().await;
    a.client
        .relay(bob.id, None, "x".into(), true)
        .await
        .unwrap();
}

fn is_mailbox_full(r: Result<dopus_signaling::RelayOutcome, ClientError>) -> bool {
    matches!(
        r,
        Err(ClientError::Server {
            code: ErrorCode::MailboxFull,
            ..
        })
    )
}

/// Each sender fills at most its share of a mailbox: a stranger a small one, a mutual contact
/// a larger one, so neither can shut everyone else out; items count and bytes count.
#[tokio::test]
async fn each_sender_gets_a_share_of_a_mailbox_and_strangers_a_smaller_one() {
    let s = start(|c| {
        c.limits.mailbox_max_items = 20;
        c.limits.mailbox_max_bytes = 10_000;
        c.limits.mailbox_contact_share_percent = 50;
        c.limits.mailbox_stranger_share_percent = 10;
    })
    .await;
    let (alice, bob, mallory, carol) = (
        TestUser::new(),
        TestUser::new(),
        TestUser::new(),
        TestUser::new(),
    );
    // Bob and Alice list each other; the server keeps Bob's list while he is away.
    let b = connect(&s.url(), &bob, 1).await;
    b.client.sync_contacts(vec![alice.id]).await.unwrap();
    b.client.shutdown().await;
    let a = connect(&s.url(), &alice, 1).await;
    a.client.sync_contacts(vec![bob.id]).await.unwrap();
    let m = connect(&s.url(), &mallory, 1).await;
    // Mallory also lists Bob, but Bob does not list her: still a stranger (10 % = 2 items).
    m.client.sync_contacts(vec![bob.id]).await.unwrap();
    for _ in 0..2 {
        m.client
            .relay(bob.id, None, "m".into(), true)
            .await
            .unwrap();
    }
    assert!(is_mailbox_full(
        m.client.relay(bob.id, None, "m".into(), true).await
    ));
    // Alice is a mutual contact: 50 % = 10 items.
    for _ in 0..10 {
        a.client
            .relay(bob.id, None, "a".into(), true)
            .await
            .unwrap();
    }
    assert!(is_mailbox_full(
        a.client.relay(bob.id, None, "a".into(), true).await
    ));
    // Another stranger still has its own share, in items and in bytes (10 % = 1,000 bytes).
    let c = connect(&s.url(), &carol, 1).await;
    assert!(is_mailbox_full(
        c.client.relay(bob.id, None, "c".repeat(1_001), true).await
    ));
    c.client
        .relay(bob.id, None, "c".repeat(1_000), true)
        .await
        .unwrap();
    // Bob takes his items and acknowledges Mallory's: she has room again.
    let mut b = connect(&s.url(), &bob, 1).await;
    let mut from_mallory = Vec::new();
    for _ in 0..13 {
        let i = incoming(&mut b).await;
        if i.from.user == mallory.id {
            from_mallory.push(i.ack.unwrap().mailbox_id());
        }
    }
    assert_eq!(from_mallory.len(), 2);
    b.client.ack(from_mallory).await.unwrap();
    b.client.shutdown().await;
    m.client
        .relay(bob.id, None, "m".into(), true)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_item_queued_for_a_device_that_just_connected_is_delivered_at_once() {
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    register(&s.url(), &bob).await;
    let a = connect(&s.url(), &alice, 1).await;
    let mut b1 = connect(&s.url(), &bob, 1).await;
    // Device 2 is known but offline: storable relays reach b1 live and queue for b2... and
    // b2 logging in later receives its copy.
    let b2 = connect(&s.url(), &bob, 2).await;
    b2.client.shutdown().await;
    let r = a
        .client
        .relay(bob.id, None, "both".into(), true)
        .await
        .unwrap();
    assert_eq!(r.delivered, vec![b1.device.clone()]);
    assert_eq!(r.queued, vec![bob.device(2)]);
    assert_eq!(incoming(&mut b1).await.payload, "both");
    let mut b2 = connect(&s.url(), &bob, 2).await;
    assert_eq!(incoming(&mut b2).await.payload, "both");
}

struct Child9(Child);

impl Drop for Child9 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the real binary and returns it with its WebSocket URL.
fn spawn_binary(dir: &std::path::Path) -> (Child9, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_discordopus-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--stun-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir)
        .env("DOPUS_SERVER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap_or_else(|| panic!("no url in {line:?}"))
        .to_owned();
    (Child9(child), url)
}

fn kill9(child: &mut Child9) {
    // SIGKILL: no shutdown code runs.
    let pid = child.0.id() as i32;
    assert_eq!(unsafe_free_kill(pid), 0);
    let _ = child.0.wait();
}

fn unsafe_free_kill(pid: i32) -> i32 {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map(|s| if s.success() { 0 } else { 1 })
        .unwrap_or(1)
}

#[tokio::test]
async fn nothing_is_lost_across_kill_9_between_accept_and_ack() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let (mut child, url) = spawn_binary(dir.path());
    register(&url, &bob).await;
    let a = connect(&url, &alice, 1).await;
    for i in 0..3 {
        let r = a
            .client
            .relay(bob.id, None, format!("k{i}"), true)
            .await
            .unwrap();
        assert_eq!(r.status(), RelayStatus::Stored);
    }
    a.client.shutdown().await;
    // Killed right after the sender was told "queued".
    kill9(&mut child);

    let (mut child, url) = spawn_binary(dir.path());
    let mut b = connect(&url, &bob, 1).await;
    let first = incoming(&mut b).await;
    assert_eq!(first.payload, "k0");
    first.ack.unwrap().ack().await.unwrap();
    // Delivered but not acknowledged when the server dies.
    assert_eq!(incoming(&mut b).await.payload, "k1");
    assert_eq!(incoming(&mut b).await.payload, "k2");
    kill9(&mut child);
    b.client.shutdown().await;

    let (_child, url) = spawn_binary(dir.path());
    let mut b = connect(&url, &bob, 1).await;
    let again = incoming(&mut b).await;
    assert_eq!(again.payload, "k1");
    assert_eq!(incoming(&mut b).await.payload, "k2");
}
