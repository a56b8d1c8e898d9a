use crate::common::*;
use dopus_proto::signaling::{ErrorCode, ServerFrame};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

fn error_code(f: ServerFrame) -> (Option<u64>, ErrorCode) {
    match f {
        ServerFrame::Error { id, code, .. } => (id, code),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_frames_get_stable_codes_and_others_keep_being_served() {
    let s = start(|_| {}).await;
    let (mallory, alice, bob) = (TestUser::new(), TestUser::new(), TestUser::new());
    let mut m = raw_login(&s.url(), &mallory, 1).await;
    let a = connect(&s.url(), &alice, 1).await;
    let mut b = connect(&s.url(), &bob, 1).await;

    raw_send(&mut m, "{not json").await;
    assert_eq!(
        error_code(raw_recv(&mut m).await),
        (None, ErrorCode::MalformedFrame)
    );
    raw_send(&mut m, r#"{"type":"teleport","id":3}"#).await;
    assert_eq!(
        error_code(raw_recv(&mut m).await),
        (Some(3), ErrorCode::UnknownType)
    );
    raw_send(&mut m, r#"{"type":"relay","id":4,"payload":"x"}"#).await;
    assert_eq!(
        error_code(raw_recv(&mut m).await),
        (Some(4), ErrorCode::MalformedFrame)
    );
    raw_send(&mut m, r#"{"type":"set_status","id":5,"status":"napping"}"#).await;
    assert_eq!(
        error_code(raw_recv(&mut m).await),
        (Some(5), ErrorCode::MalformedFrame)
    );
    m.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        error_code(raw_recv(&mut m).await),
        (None, ErrorCode::MalformedFrame)
    );
    // Over the frame limit (64 KiB) but under the hard limit: answered, connection kept.
    let big = format!(
        r#"{{"type":"relay","id":6,"to":"{}","payload":"{}"}}"#,
        bob.id,
        "x".repeat(100_000)
    );
    raw_send(&mut m, big).await;
    assert_eq!(
        error_code(raw_recv(&mut m).await),
        (None, ErrorCode::FrameTooLarge)
    );
    // A payload over its own limit inside a frame that fits.
    let fat = format!(
        r#"{{"type":"relay","id":7,"to":"{}","payload":"{}"}}"#,
        bob.id,
        "x".repeat(61_000)
    );
    raw_send(&mut m, fat).await;
    assert_eq!(
        error_code(raw_recv(&mut m).await),
        (Some(7), ErrorCode::PayloadTooLarge)
    );
    // Still served.
    raw_send(&mut m, r#"{"type":"ping","id":8}"#).await;
    assert!(matches!(
        raw_recv(&mut m).await,
        ServerFrame::Pong { id: 8 }
    ));
    // Everyone else was never disturbed.
    a.client
        .relay(bob.id, None, "fine".into(), false)
        .await
        .unwrap();
    let got = expect(&mut b.events, "relay", |e| match e {
        dopus_signaling::Event::Incoming(i) => Some(i.payload),
        _ => None,
    })
    .await;
    assert_eq!(got, "fine");
}

#[tokio::test]
async fn a_frame_over_the_hard_limit_closes_only_that_connection() {
    let s = start(|_| {}).await;
    let (mallory, alice) = (TestUser::new(), TestUser::new());
    let mut m = raw_login(&s.url(), &mallory, 1).await;
    let a = connect(&s.url(), &alice, 1).await;
    let _ = m.send(Message::text("x".repeat(2 << 20))).await;
    assert!(raw_closed(&mut m).await);
    a.client.ping().await.unwrap();
}

#[tokio::test]
async fn too_many_bad_frames_close_the_connection() {
    let s = start(|_| {}).await;
    let mallory = TestUser::new();
    let mut m = raw_login(&s.url(), &mallory, 1).await;
    for _ in 0..60 {
        if m.send(Message::text("nonsense")).await.is_err() {
            break;
        }
    }
    assert!(raw_closed(&mut m).await);
}

#[tokio::test]
async fn the_rate_limit_drops_frames_and_then_closes() {
    let s = start(|c| {
        // No refill at all, so the count below does not depend on how fast this machine is.
        c.limits.rate_per_sec = 0;
        c.limits.rate_burst = 5;
        c.limits.max_rate_violations = 20;
    })
    .await;
    let mallory = TestUser::new();
    let mut m = raw_login(&s.url(), &mallory, 1).await;
    for id in 0..10 {
        raw_send(&mut m, format!(r#"{{"type":"ping","id":{id}}}"#)).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..10 {
        match raw_recv(&mut m).await {
            ServerFrame::Pong { .. } => pongs += 1,
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                ..
            } => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    // The burst passes; the rest is dropped.
    assert_eq!((pongs, limited), (5, 5));
    for id in 0..40 {
        if m.send(Message::text(format!(r#"{{"type":"ping","id":{id}}}"#)))
            .await
            .is_err()
        {
            break;
        }
    }
    assert!(raw_closed(&mut m).await);
}

#[tokio::test]
async fn connections_per_address_are_limited() {
    let s = start(|c| c.limits.max_connections_per_ip = 2).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let a = connect(&s.url(), &alice, 1).await;
    let _b = connect(&s.url(), &bob, 1).await;
    let third = tokio_tungstenite::connect_async(s.url()).await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 429)
        }
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    // A slot frees up when a connection closes.
    a.client.shutdown().await;
    let mut ok = false;
    for _ in 0..500 {
        if tokio_tungstenite::connect_async(s.url()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok);
}

/// A recipient that does not read fills its socket, then its queue (`outbox_capacity` frames):
/// further live relays to it are refused with `recipient_busy`, and the sender is never held up.
#[tokio::test]
async fn a_recipient_that_does_not_read_makes_relays_busy() {
    use dopus_proto::signaling::ClientFrame;

    let s = start(|c| {
        c.limits.outbox_capacity = 4;
        c.limits.rate_per_sec = 1_000_000;
        c.limits.rate_burst = 1_000_000;
    })
    .await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let mut a = raw_login(&s.url(), &alice, 1).await;
    let _b = raw_login(&s.url(), &bob, 1).await; // never read
    // 600 × 60,000 bytes: far more than loopback socket buffers hold.
    const N: u64 = 600;
    let payload = "x".repeat(60_000);
    for id in 0..N {
        let relay = ClientFrame::Relay {
            id,
            to: bob.id,
            to_device: None,
            payload: payload.clone(),
            store: false,
        };
        a.feed(Message::text(relay.to_json())).await.unwrap();
    }
    a.flush().await.unwrap();
    let (mut delivered, mut busy) = (0, 0);
    for _ in 0..N {
        match raw_recv(&mut a).await {
            ServerFrame::RelayResult { .. } => delivered += 1,
            ServerFrame::Error {
                code: ErrorCode::RecipientBusy,
                ..
            } => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        delivered > 0 && busy > 0,
        "{delivered} delivered, {busy} busy"
    );
}

/// A stored relay to a device the recipient does not have is refused with `unknown_device`; a
/// live one with `recipient_offline` (only connected devices count for it).
#[tokio::test]
async fn a_relay_to_an_unknown_device_is_refused() {
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let a = connect(&s.url(), &alice, 1).await;
    let _b = connect(&s.url(), &bob, 1).await;
    for (store, want) in [
        (true, ErrorCode::UnknownDevice),
        (false, ErrorCode::RecipientOffline),
    ] {
        let err = a
            .client
            .relay(bob.id, Some(bob.device(9)), "x".into(), store)
            .await
            .unwrap_err();
        assert!(
            matches!(err, dopus_signaling::ClientError::Server { code, .. } if code == want),
            "store {store}: {err:?}"
        );
    }
}

/// The limit on connections in total answers 429 like the per-address one.
#[tokio::test]
async fn connections_in_total_are_limited() {
    let s = start(|c| c.limits.max_connections = 1).await;
    let alice = TestUser::new();
    let _a = connect(&s.url(), &alice, 1).await;
    match tokio_tungstenite::connect_async(s.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 429);
            let body = resp.body().clone().unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&body).trim(),
                "too_many_connections"
            );
        }
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
}

/// The documented 5,000 contacts fit: the client sends them in parts (6 frames of 64 KiB) and
/// the server applies them together; one more is refused with `too_many_contacts` and leaves
/// the list as it was.
#[tokio::test]
async fn the_contact_limit_is_reachable_and_answered() {
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let a = connect(&s.url(), &alice, 1).await;
    let b = connect(&s.url(), &bob, 1).await;
    b.client.sync_contacts(vec![alice.id]).await.unwrap();
    // 4,999 made-up users and Bob last, so a list cut short would miss him.
    let mut contacts: Vec<dopus_types::UserId> = (0..4_999u32)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            dopus_types::UserId::from_key(
                dopus_types::Ed25519Key::from_bytes(key.verifying_key().as_bytes()).unwrap(),
            )
        })
        .collect();
    contacts.push(bob.id);
    let presence = a.client.sync_contacts(contacts.clone()).await.unwrap();
    assert_eq!(presence.len(), 1, "Bob is the one mutual contact");
    assert_eq!(presence[0].user, bob.id);
    contacts.push(TestUser::new().id);
    match a.client.sync_contacts(contacts).await {
        Err(dopus_signaling::ClientError::Server {
            code: ErrorCode::TooManyContacts,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // The refused list changed nothing: Bob still sees Alice as a mutual contact.
    let presence = b.client.sync_contacts(vec![alice.id]).await.unwrap();
    assert_eq!(presence.len(), 1);
}

/// Over the limit, the parts after the refused one are refused too, the last included, so the
/// tail of a list is never taken for the whole list.
#[tokio::test]
async fn a_contact_list_over_the_limit_in_parts_is_refused_to_its_last_part() {
    let s = start(|c| c.limits.max_contacts = 2).await;
    let (alice, bob, carol) = (TestUser::new(), TestUser::new(), TestUser::new());
    let mut a = raw_login(&s.url(), &alice, 1).await;
    let parts = [
        (1, vec![bob.id, carol.id], true),
        (2, vec![bob.id], true),
        (3, vec![carol.id], false),
        (4, vec![carol.id], false),
    ];
    for (id, contacts, more) in parts {
        let f = dopus_proto::signaling::ClientFrame::SyncContacts { id, contacts, more };
        raw_send(&mut a, f.to_json()).await;
    }
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(match raw_recv(&mut a).await {
            ServerFrame::ContactsSynced { id, .. } => (id, None),
            ServerFrame::Error { id, code, .. } => (id.unwrap(), Some(code)),
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(
        answers,
        [
            (1, None),
            (2, Some(ErrorCode::TooManyContacts)),
            (3, Some(ErrorCode::TooManyContacts)),
            (4, None),
        ]
    );
}

#[tokio::test]
async fn an_ack_over_the_id_limit_is_refused() {
    let s = start(|_| {}).await;
    let alice = TestUser::new();
    let a = connect(&s.url(), &alice, 1).await;
    match a.client.ack((0..1_001).collect()).await {
        Err(dopus_signaling::ClientError::Server {
            code: ErrorCode::TooManyIds,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    a.client.ack((0..1_000).collect()).await.unwrap();
}

/// A user has at most `max_devices_per_user` devices; a further one is refused at login,
/// known ones still log in.
#[tokio::test]
async fn devices_per_user_are_capped() {
    let s = start(|c| c.limits.max_devices_per_user = 2).await;
    let alice = TestUser::new();
    let one = connect(&s.url(), &alice, 1).await;
    let _two = connect(&s.url(), &alice, 2).await;
    let signer = std::sync::Arc::new(KeySigner {
        user: alice.id,
        key: alice.key.clone(),
    });
    let (third, mut events) =
        dopus_signaling::SignalingClient::start(client_config(&s.url(), alice.device(3)), signer);
    let code = expect(&mut events, "the refusal", |e| match e {
        dopus_signaling::Event::AuthFailed { code } => Some(code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::TooManyDevices);
    third.shutdown().await;
    one.client.shutdown().await;
    let again = connect(&s.url(), &alice, 1).await;
    again.client.ping().await.unwrap();
}
