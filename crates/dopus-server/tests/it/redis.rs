//! Two server processes sharing one real `redis-server`.

use crate::common::*;
use dopus_proto::signaling::Status;
use dopus_server::{Config, RunningServer};
use dopus_signaling::{Event, RelayStatus};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

async fn redis_server() -> Redis {
    let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(&binary)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start `{binary}` ({e}); the Redis tests need a real redis-server: \
                 apt-get install -y redis-server (or set REDIS_SERVER to its path)"
            )
        });
    let redis = Redis {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return redis;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server did not start listening on port {port}");
}

async fn node(redis: &Redis, dir: &std::path::Path) -> RunningServer {
    let mut config = Config::loopback(dir);
    config.redis = Some(redis.url());
    config.server_id = Some("cluster".into());
    dopus_server::start(config).await.unwrap()
}

#[tokio::test]
async fn two_nodes_share_routing_presence_mailbox_and_keys() {
    let redis = redis_server().await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let n1 = node(&redis, d1.path()).await;
    let n2 = node(&redis, d2.path()).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let mut a = connect(&n1.ws_url(), &alice, 1).await;
    let mut b = connect(&n2.ws_url(), &bob, 1).await;

    // Relay across nodes.
    let r = a
        .client
        .relay(bob.id, None, "across".into(), false)
        .await
        .unwrap();
    assert_eq!(r.status(), RelayStatus::Delivered);
    let got = expect(&mut b.events, "relay", |e| match e {
        Event::Incoming(i) => Some((i.payload, i.from.user)),
        _ => None,
    })
    .await;
    assert_eq!(got, ("across".to_owned(), alice.id));

    // Presence across nodes.
    a.client.sync_contacts(vec![bob.id]).await.unwrap();
    let seen = b.client.sync_contacts(vec![alice.id]).await.unwrap();
    assert_eq!(seen[0].status, Status::Online);
    let st = expect(&mut a.events, "bob online", |e| match e {
        Event::Presence { user, status } if user == bob.id => Some(status),
        _ => None,
    })
    .await;
    assert_eq!(st, Status::Online);
    b.client.set_status(Status::Busy).await.unwrap();
    let st = expect(&mut a.events, "bob busy", |e| match e {
        Event::Presence { user, status } if user == bob.id && status != Status::Online => {
            Some(status)
        }
        _ => None,
    })
    .await;
    assert_eq!(st, Status::Busy);

    // Key directory across nodes, claims atomic across both.
    b.client
        .publish_bundle(bundle(&bob, &b.device, 0, 4))
        .await
        .unwrap();
    let mut seen_keys = std::collections::HashSet::new();
    let b2_probe = connect(&n2.ws_url(), &TestUser::new(), 1).await;
    for i in 0..6 {
        let c = if i % 2 == 0 {
            &a.client
        } else {
            &b2_probe.client
        };
        let v = c.fetch_bundle(bob.id).await.unwrap()[0]
            .verify(&bob.id)
            .unwrap();
        if v.prekey_kind == dopus_proto::bundle::PrekeyKind::OneTime {
            assert!(seen_keys.insert(v.prekey_id));
        }
    }
    assert_eq!(seen_keys.len(), 4);

    // Mailbox across nodes: Bob leaves node 2, Alice queues on node 1, Bob reads on node 1.
    b.client.shutdown().await;
    let st = expect(&mut a.events, "bob offline", |e| match e {
        Event::Presence { user, status } if user == bob.id && status == Status::Offline => {
            Some(status)
        }
        _ => None,
    })
    .await;
    assert_eq!(st, Status::Offline);
    let r = a
        .client
        .relay(bob.id, None, "queued".into(), true)
        .await
        .unwrap();
    assert_eq!(r.status(), RelayStatus::Stored);
    let mut b = connect(&n1.ws_url(), &bob, 1).await;
    let item = expect(&mut b.events, "mailbox item", |e| match e {
        Event::Incoming(i) => Some(i),
        _ => None,
    })
    .await;
    assert_eq!(item.payload, "queued");
    item.ack.unwrap().ack().await.unwrap();
    a.client.shutdown().await;
    b.client.shutdown().await;
    n1.shutdown().await;
    n2.shutdown().await;
}
