use crate::common::*;
use dopus_proto::bundle::PrekeyKind;
use dopus_proto::signaling::ErrorCode;
use dopus_signaling::{ClientError, Event};
use std::collections::HashSet;

#[tokio::test]
async fn published_bundles_verify_and_each_one_time_key_is_handed_out_once() {
    let s = start(|c| c.limits.otk_low_threshold = 5).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let mut b = connect(&s.url(), &bob, 1).await;
    assert_eq!(
        b.client
            .publish_bundle(bundle(&bob, &b.device, 0, 20))
            .await
            .unwrap(),
        20
    );
    // More keys append; repeats are ignored.
    assert_eq!(
        b.client
            .publish_bundle(bundle(&bob, &b.device, 10, 20))
            .await
            .unwrap(),
        30
    );
    let a = connect(&s.url(), &alice, 1).await;
    // 50 concurrent fetches over 30 keys: 30 distinct one-time keys, then the fallback.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = a.client.clone();
        let user = bob.id;
        tasks.push(tokio::spawn(async move { client.fetch_bundle(user).await }));
    }
    let mut otks = HashSet::new();
    let mut fallbacks = 0;
    for t in tasks {
        let bundles = t.await.unwrap().unwrap();
        assert_eq!(bundles.len(), 1);
        let v = bundles[0].verify(&bob.id).unwrap();
        match v.prekey_kind {
            PrekeyKind::OneTime => assert!(
                otks.insert(v.prekey_id),
                "a one-time key was handed out twice"
            ),
            PrekeyKind::Fallback => fallbacks += 1,
        }
    }
    assert_eq!(otks.len(), 30);
    assert_eq!(fallbacks, 20);
    // Bob was told his keys ran low (below 5, then at 0).
    let remaining = expect(&mut b.events, "low keys notice", |e| match e {
        Event::OneTimeKeysLow {
            remaining,
            threshold,
        } => {
            assert_eq!(threshold, 5);
            Some(remaining)
        }
        _ => None,
    })
    .await;
    assert!(remaining < 5);
}

#[tokio::test]
async fn junk_and_foreign_bundles_are_refused() {
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let a = connect(&s.url(), &alice, 1).await;
    // Bob's genuine bundle, published by Alice: another user's.
    let err = a
        .client
        .publish_bundle(bundle(&bob, &bob.device(1), 0, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::InvalidBundle,
                ..
            }
        ),
        "{err:?}"
    );
    // Alice's bundle for a device that is not this connection's.
    let err = a
        .client
        .publish_bundle(bundle(&alice, &alice.device(9), 0, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::InvalidBundle,
                ..
            }
        ),
        "{err:?}"
    );
    // A tampered one-time key.
    let mut b = bundle(&alice, &a.device, 0, 2);
    b.one_time_keys[1].key = dopus_types::Curve25519Key::from_bytes([1; 32]);
    let err = a.client.publish_bundle(b).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::InvalidBundle,
                ..
            }
        ),
        "{err:?}"
    );
    let err = a.client.fetch_bundle(bob.id).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::NoBundle,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_new_fallback_key_replaces_the_old_one_and_devices_are_listed() {
    let s = start(|_| {}).await;
    let bob = TestUser::new();
    let b1 = connect(&s.url(), &bob, 1).await;
    let b2 = connect(&s.url(), &bob, 2).await;
    b1.client
        .publish_bundle(bundle(&bob, &b1.device, 0, 0))
        .await
        .unwrap();
    b2.client
        .publish_bundle(bundle(&bob, &b2.device, 0, 1))
        .await
        .unwrap();
    let mut rotated = bundle(&bob, &b1.device, 0, 0);
    let cert = rotated.certificate.clone();
    let dev_key = ed25519_dalek::SigningKey::from_bytes(&[b1.device.as_str().as_bytes()[0]; 32]);
    rotated.fallback_key = dopus_proto::bundle::test_support::signed_key(
        PrekeyKind::Fallback,
        &cert,
        "fallback2",
        dopus_types::Curve25519Key::from_bytes([10; 32]),
        &|m: &[u8]| {
            use ed25519_dalek::Signer;
            dopus_types::Signature::from_bytes(dev_key.sign(m).to_bytes())
        },
    );
    b1.client.publish_bundle(rotated).await.unwrap();
    let bundles = b2.client.fetch_bundle(bob.id).await.unwrap();
    assert_eq!(bundles.len(), 2);
    let by_device: Vec<_> = bundles.iter().map(|b| b.verify(&bob.id).unwrap()).collect();
    let d1 = by_device.iter().find(|v| v.device_id == b1.device).unwrap();
    assert_eq!(d1.prekey_id, "fallback2");
    let d2 = by_device.iter().find(|v| v.device_id == b2.device).unwrap();
    assert_eq!(d2.prekey_kind, PrekeyKind::OneTime);
}
