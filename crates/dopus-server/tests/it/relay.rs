use crate::common::*;
use dopus_proto::signaling::ErrorCode;
use dopus_signaling::{ClientError, DeliveryKind, Event, RelayStatus};

#[tokio::test]
async fn relay_reaches_every_device_and_names_the_sender() {
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let a = connect(&s.url(), &alice, 1).await;
    let mut b1 = connect(&s.url(), &bob, 1).await;
    let mut b2 = connect(&s.url(), &bob, 2).await;
    let r = a
        .client
        .relay(bob.id, None, "opaque ciphertext".into(), false)
        .await
        .unwrap();
    assert_eq!(r.status(), RelayStatus::Delivered);
    assert_eq!(r.delivered.len(), 2);
    for b in [&mut b1, &mut b2] {
        let i = expect(&mut b.events, "relay", |e| match e {
            Event::Incoming(i) => Some(i),
            _ => None,
        })
        .await;
        assert_eq!(i.kind, DeliveryKind::Relay);
        assert_eq!(i.payload, "opaque ciphertext");
        assert_eq!(i.from.user, alice.id);
        assert_eq!(i.from.device, a.device);
        assert!(i.ack.is_none());
    }
    // One device only.
    let r = a
        .client
        .relay(bob.id, Some(b2.device.clone()), "only b2".into(), false)
        .await
        .unwrap();
    assert_eq!(r.delivered, vec![b2.device.clone()]);
    let got = expect(&mut b2.events, "relay", |e| match e {
        Event::Incoming(i) => Some(i.payload),
        _ => None,
    })
    .await;
    assert_eq!(got, "only b2");
    // b1 got nothing: its next event is the following relay.
    a.client
        .relay(bob.id, Some(b1.device.clone()), "marker".into(), false)
        .await
        .unwrap();
    match next_app_event(&mut b1.events).await {
        Event::Incoming(i) => assert_eq!(i.payload, "marker"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn relay_to_an_offline_user_without_store_is_refused() {
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let a = connect(&s.url(), &alice, 1).await;
    let err = a
        .client
        .relay(bob.id, None, "x".into(), false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::RecipientOffline,
                ..
            }
        ),
        "{err:?}"
    );
    let err = a
        .client
        .relay(bob.id, None, "x".into(), true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::UnknownRecipient,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_user_reaches_its_other_devices_but_not_the_sending_one() {
    let s = start(|_| {}).await;
    let alice = TestUser::new();
    let a1 = connect(&s.url(), &alice, 1).await;
    let mut a2 = connect(&s.url(), &alice, 2).await;
    let r = a1
        .client
        .relay(alice.id, None, "sync".into(), false)
        .await
        .unwrap();
    assert_eq!(r.delivered, vec![a2.device.clone()]);
    let got = expect(&mut a2.events, "self relay", |e| match e {
        Event::Incoming(i) => Some(i.from.device),
        _ => None,
    })
    .await;
    assert_eq!(got, a1.device);
}

/// Contact requests travel end-to-end encrypted inside relay payloads; the signaling frames
/// once drafted for them are unknown to the server.
#[tokio::test]
async fn the_retired_contact_frames_are_unknown_types() {
    use dopus_proto::signaling::{ErrorCode, ServerFrame};
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let mut a = raw_login(&s.url(), &alice, 1).await;
    for (id, ty) in [
        (5, "contact_request"),
        (6, "contact_accept"),
        (7, "contact_decline"),
    ] {
        raw_send(
            &mut a,
            format!(
                r#"{{"type":"{ty}","id":{id},"to":"{}","introduction":"x"}}"#,
                bob.id
            ),
        )
        .await;
        match raw_recv(&mut a).await {
            ServerFrame::Error {
                id: Some(got),
                code,
                ..
            } => {
                assert_eq!((got, code), (id, ErrorCode::UnknownType))
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A burst of pipelined frames is answered in order, relay payloads reach the recipient exactly
/// as sent whichever parser reads them (the in-place relay path or the full one), and answers
/// to frames that arrive together with a close frame still go out.
#[tokio::test]
async fn a_pipelined_burst_is_answered_in_order_and_payloads_arrive_exactly() {
    use dopus_proto::signaling::{ClientFrame, ServerFrame};
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;

    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let mut a = raw_login(&s.url(), &alice, 1).await;
    let mut b = raw_login(&s.url(), &bob, 1).await;
    let to = bob.id.to_string();
    let payloads = [
        "plain",
        "quote \" backslash \\ newline \n tab \t control \u{1} é 😀 </x>",
        "",
    ];
    let mut burst: Vec<String> = payloads
        .iter()
        .zip(0u64..)
        .map(|(p, id)| {
            ClientFrame::Relay {
                id,
                to: bob.id,
                to_device: None,
                payload: (*p).to_owned(),
                store: false,
            }
            .to_json()
        })
        .collect();
    // An escaped `type` is read by the full parser.
    burst.push(format!(
        r#"{{"type":"rel\u0061y","id":3,"to":"{to}","payload":"escaped type"}}"#
    ));
    burst.push(r#"{"type":"ping","id":4}"#.to_owned());
    burst.push(r#"{"type":"relay","id":5,"to":"dopus1nope","payload":"x"}"#.to_owned());
    for frame in burst {
        a.feed(Message::text(frame)).await.unwrap();
    }
    a.send(Message::Close(None)).await.unwrap();

    for id in 0..4u64 {
        match raw_recv(&mut a).await {
            ServerFrame::RelayResult {
                id: got, delivered, ..
            } => {
                assert_eq!(got, id);
                assert_eq!(delivered.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(raw_recv(&mut a).await, ServerFrame::Pong { id: 4 });
    match raw_recv(&mut a).await {
        ServerFrame::Error { id, code, .. } => {
            assert_eq!(id, Some(5));
            assert_eq!(code, ErrorCode::MalformedFrame);
        }
        other => panic!("{other:?}"),
    }
    assert!(raw_closed(&mut a).await);

    let expected = payloads.iter().copied().chain(["escaped type"]);
    for want in expected {
        match raw_recv(&mut b).await {
            ServerFrame::Deliver {
                from,
                payload,
                mailbox_id,
                ..
            } => {
                assert_eq!(payload, want);
                assert_eq!(from.user, alice.id);
                assert_eq!(mailbox_id, None);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Protocol 3's quiet relays: a relay every target got live is not answered, everything else is,
/// in order; on a connection that negotiated version 2 the option is ignored.
#[tokio::test]
async fn quiet_relays_are_answered_only_when_not_delivered_live() {
    use dopus_proto::signaling::{ClientFrame, ServerFrame};
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;

    let s = start(|_| {}).await;
    let (alice, bob, carol) = (TestUser::new(), TestUser::new(), TestUser::new());
    let mut a = raw_login_with(&s.url(), &alice, 1, Some("1,2,3"), true).await;
    let mut b = raw_login(&s.url(), &bob, 1).await;
    // Carol is known (she logged in once) but offline: a stored relay to her is queued. Bob
    // (answered as always) asks until her connection is gone.
    drop(raw_login(&s.url(), &carol, 1).await);
    let mut gone = false;
    for id in 0..100u64 {
        let probe = ClientFrame::Relay {
            id,
            to: carol.id,
            to_device: None,
            payload: "probe".into(),
            store: false,
        };
        raw_send(&mut b, probe.to_json()).await;
        if let ServerFrame::Error {
            code: ErrorCode::RecipientOffline,
            ..
        } = raw_recv(&mut b).await
        {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "carol's connection never went away");
    let relay = |id: u64, to: &TestUser, store: bool| {
        ClientFrame::Relay {
            id,
            to: to.id,
            to_device: None,
            payload: format!("p{id}"),
            store,
        }
        .to_json()
    };
    let burst = [
        relay(1, &bob, false),   // delivered live: no answer
        relay(2, &carol, false), // nobody connected: error
        relay(3, &bob, true),    // delivered live although storable: no answer
        relay(4, &carol, true),  // queued: relay_result
        format!(
            r#"{{"type":"relay","id":5,"to":"{}","payload":"{}"}}"#,
            bob.id,
            "x".repeat(70_000)
        ),
        r#"{"type":"ping","id":6}"#.to_owned(),
    ];
    for frame in burst {
        a.feed(Message::text(frame)).await.unwrap();
    }
    a.flush().await.unwrap();
    match raw_recv(&mut a).await {
        ServerFrame::Error { id, code, .. } => {
            assert_eq!((id, code), (Some(2), ErrorCode::RecipientOffline));
        }
        other => panic!("{other:?}"),
    }
    match raw_recv(&mut a).await {
        ServerFrame::RelayResult {
            id,
            delivered,
            queued,
            ..
        } => {
            assert_eq!(id, 4);
            assert!(delivered.is_empty());
            assert_eq!(queued.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    match raw_recv(&mut a).await {
        ServerFrame::Error { id, code, .. } => {
            assert_eq!(
                (id, code),
                (None, ErrorCode::FrameTooLarge),
                "a bad frame is still answered"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(raw_recv(&mut a).await, ServerFrame::Pong { id: 6 });
    for want in ["p1", "p3"] {
        match raw_recv(&mut b).await {
            ServerFrame::Deliver { payload, .. } => assert_eq!(payload, want),
            other => panic!("{other:?}"),
        }
    }

    // Version 2 does not know the option: every relay is answered.
    let mut old = raw_login_with(&s.url(), &alice, 2, Some("1,2"), true).await;
    raw_send(&mut old, relay(7, &bob, false)).await;
    match raw_recv(&mut old).await {
        ServerFrame::RelayResult { id, delivered, .. } => {
            assert_eq!((id, delivered.len()), (7, 1));
        }
        other => panic!("{other:?}"),
    }
}

/// The client with quiet relays on still gives every relay a definite outcome: single relays
/// and bursts are confirmed as delivered, refusals and mailbox deposits come back as before.
#[tokio::test]
async fn the_client_resolves_quiet_relays() {
    let s = start(|_| {}).await;
    let (alice, bob, carol) = (TestUser::new(), TestUser::new(), TestUser::new());
    let a = connect_with(&s.url(), &alice, 1, |c| c.quiet_relays = true).await;
    let mut b = connect(&s.url(), &bob, 1).await;
    let r = a
        .client
        .relay(bob.id, Some(b.device.clone()), "one".into(), false)
        .await
        .unwrap();
    assert_eq!(r.status(), RelayStatus::Delivered);
    assert_eq!(r.delivered, vec![b.device.clone()]);
    let burst = (0..20).map(|i| {
        a.client
            .relay(bob.id, None, format!("burst {i}"), i % 2 == 0)
    });
    for r in futures_util::future::join_all(burst).await {
        let r = r.unwrap();
        assert_eq!(r.status(), RelayStatus::Delivered);
        assert!(r.queued.is_empty() && r.refused.is_empty());
    }
    let mut got = Vec::new();
    while got.len() < 21 {
        if let Event::Incoming(i) = next_app_event(&mut b.events).await {
            got.push(i.payload);
        }
    }
    assert_eq!(got[0], "one");
    let err = a.client.relay(carol.id, None, "x".into(), false).await;
    assert!(
        matches!(
            err,
            Err(ClientError::Server {
                code: ErrorCode::RecipientOffline,
                ..
            })
        ),
        "{err:?}"
    );
    drop(connect(&s.url(), &carol, 1).await);
    // Carol's connection may still be closing: wait until relays to her are queued.
    let mut queued = None;
    for _ in 0..100 {
        let r = a
            .client
            .relay(carol.id, None, "later".into(), true)
            .await
            .unwrap();
        if r.status() == RelayStatus::Stored {
            queued = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(queued.map(|r| r.queued.len()), Some(1));
}
