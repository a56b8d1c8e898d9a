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
