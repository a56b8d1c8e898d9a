use crate::common::*;
use dopus_proto::signaling::{ClientFrame, ErrorCode, ServerFrame, auth_signing_bytes};
use dopus_server::{Config, ManualClock};
use dopus_signaling::{Event, SignalingClient};
use dopus_types::Timestamp;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn login_succeeds_and_requests_work() {
    let s = start(|_| {}).await;
    let alice = TestUser::new();
    let c = connect(&s.url(), &alice, 1).await;
    c.client.ping().await.unwrap();
    assert_eq!(
        s.server
            .metrics
            .auth_success_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_bad_signature() {
    let s = start(|_| {}).await;
    let alice = TestUser::new();
    let mallory = TestUser::new();
    // Claims to be Alice, signs with Mallory's key.
    let signer = Arc::new(KeySigner {
        user: alice.id,
        key: mallory.key.clone(),
    });
    let (client, mut events) =
        SignalingClient::start(client_config(&s.url(), alice.device(1)), signer);
    let code = expect(&mut events, "auth failure", |e| match e {
        Event::AuthFailed { code } => Some(code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::BadSignature);
    assert_ne!(client.state(), dopus_signaling::ConnectionState::Connected);
    client.shutdown().await;
}

#[tokio::test]
async fn a_login_replayed_on_another_connection_is_refused() {
    let s = start(|_| {}).await;
    let alice = TestUser::new();
    let device = alice.device(1);
    // Connection 1: a genuine login, captured but never sent.
    let mut first = raw(&s.url()).await;
    let ServerFrame::Challenge {
        server_id,
        challenge,
        ..
    } = raw_recv(&mut first).await
    else {
        panic!()
    };
    let proof = ClientFrame::Auth {
        user_id: alice.id,
        device_id: device.clone(),
        challenge,
        signature: alice.sign(&auth_signing_bytes(&server_id, &challenge.0, &device)),
        quiet_relays: false,
    }
    .to_json();
    // Connection 2 gets its own challenge; the replayed proof names the old one.
    let mut second = raw(&s.url()).await;
    let _ = raw_recv(&mut second).await;
    raw_send(&mut second, proof.clone()).await;
    match raw_recv(&mut second).await {
        ServerFrame::AuthFailure { code, .. } => assert_eq!(code, ErrorCode::BadChallenge),
        other => panic!("{other:?}"),
    }
    assert!(raw_closed(&mut second).await);
    // The proof is still good on its own connection, exactly once.
    raw_send(&mut first, proof.clone()).await;
    assert!(matches!(
        raw_recv(&mut first).await,
        ServerFrame::AuthSuccess { .. }
    ));
    raw_send(&mut first, proof).await;
    match raw_recv(&mut first).await {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::AlreadyAuthenticated),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_expired_challenge_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let server = dopus_server::start_with_clock(Config::loopback(dir.path()), clock.clone())
        .await
        .unwrap();
    let alice = TestUser::new();
    let device = alice.device(1);
    let mut ws = raw(&server.ws_url()).await;
    let ServerFrame::Challenge {
        server_id,
        challenge,
        expires_at,
        ..
    } = raw_recv(&mut ws).await
    else {
        panic!()
    };
    assert_eq!(expires_at, Timestamp(1_700_000_030_000));
    clock.advance(Duration::from_secs(31));
    let proof = ClientFrame::Auth {
        user_id: alice.id,
        device_id: device.clone(),
        challenge,
        signature: alice.sign(&auth_signing_bytes(&server_id, &challenge.0, &device)),
        quiet_relays: false,
    };
    raw_send(&mut ws, proof.to_json()).await;
    match raw_recv(&mut ws).await {
        ServerFrame::AuthFailure { code, .. } => assert_eq!(code, ErrorCode::ChallengeExpired),
        other => panic!("{other:?}"),
    }
    assert!(raw_closed(&mut ws).await);
}

#[tokio::test]
async fn nothing_but_auth_is_accepted_before_login() {
    let s = start(|_| {}).await;
    let bob = TestUser::new();
    let mut ws = raw(&s.url()).await;
    let _challenge = raw_recv(&mut ws).await;
    let relay = ClientFrame::Relay {
        id: 9,
        to: bob.id,
        to_device: None,
        payload: "x".into(),
        store: true,
    };
    raw_send(&mut ws, relay.to_json()).await;
    match raw_recv(&mut ws).await {
        ServerFrame::Error { id, code, .. } => {
            assert_eq!(id, Some(9));
            assert_eq!(code, ErrorCode::NotAuthenticated);
        }
        other => panic!("{other:?}"),
    }
    // A signature over another server's id is refused too.
    let mut ws = raw(&s.url()).await;
    let ServerFrame::Challenge { challenge, .. } = raw_recv(&mut ws).await else {
        panic!()
    };
    let device = bob.device(1);
    let proof = ClientFrame::Auth {
        user_id: bob.id,
        device_id: device.clone(),
        challenge,
        signature: bob.sign(&auth_signing_bytes("another-server", &challenge.0, &device)),
        quiet_relays: false,
    };
    raw_send(&mut ws, proof.to_json()).await;
    match raw_recv(&mut ws).await {
        ServerFrame::AuthFailure { code, .. } => assert_eq!(code, ErrorCode::BadSignature),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unsupported_version_is_refused() {
    let s = start(|_| {}).await;
    let mut ws = raw(&format!("{}?v=7", s.url())).await;
    match raw_recv(&mut ws).await {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::UnsupportedVersion),
        other => panic!("{other:?}"),
    }
    assert!(raw_closed(&mut ws).await);
}
