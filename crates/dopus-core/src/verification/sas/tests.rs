use super::*;
use crate::identity::{Device, Identity};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn party(seed: u8) -> SasParty {
    let id = Identity::from_seed(&[seed; 32]).unwrap();
    let dev = Device::new(&id, DeviceId::from_random([seed; 16]), T0);
    SasParty {
        user: id.user_id(),
        device: dev.device_id().clone(),
        keys: dev.keys(),
    }
}

fn one(steps: Vec<VerificationStep>) -> VerificationStep {
    assert_eq!(steps.len(), 1, "{steps:?}");
    steps.into_iter().next().unwrap()
}

/// Runs the exchange up to the emoji. `a_view_of_b` / `b_view_of_a` are what each side holds
/// for the other.
fn exchange(
    a: &SasParty,
    a_view_of_b: &SasParty,
    b: &SasParty,
    b_view_of_a: &SasParty,
) -> (SasVerification, SasVerification) {
    let (mut alice, start) =
        SasVerification::start(T0, a.clone(), a_view_of_b.clone(), "txn1".into()).unwrap();
    let (mut bob, accept) =
        SasVerification::accept(T0, b.clone(), b_view_of_a.clone(), &start).unwrap();
    let a_key = one(alice.handle(T0, &accept).unwrap());
    let b_key = one(bob.handle(T0, &a_key).unwrap());
    assert!(alice.handle(T0, &b_key).unwrap().is_empty());
    assert_eq!(alice.state(), SasState::ShowingSas);
    assert_eq!(bob.state(), SasState::ShowingSas);
    (alice, bob)
}

#[test]
fn both_sides_see_the_same_emoji_and_verify_each_other() {
    let (a, b) = (party(1), party(2));
    let (mut alice, mut bob) = exchange(&a, &b, &b, &a);
    let ae = alice.emoji().unwrap();
    assert_eq!(ae, bob.emoji().unwrap());
    assert_eq!(alice.decimals(), bob.decimals());
    let (d1, d2, d3) = alice.decimals().unwrap();
    for d in [d1, d2, d3] {
        assert!((1000..=9191).contains(&d));
    }
    // Alice confirms first; Bob's MAC arrives before Bob confirmed and is held.
    let a_mac = one(alice.confirm(T0).unwrap());
    assert!(bob.handle(T0, &a_mac).unwrap().is_empty());
    let out = bob.confirm(T0).unwrap();
    assert_eq!(out.len(), 2);
    assert!(matches!(out[1], VerificationStep::Done { .. }));
    assert_eq!(bob.state(), SasState::Verified);
    let done = one(alice.handle(T0, &out[0]).unwrap());
    assert!(matches!(done, VerificationStep::Done { .. }));
    assert!(alice.handle(T0, &out[1]).unwrap().is_empty());
    let v = alice.verified().unwrap();
    assert_eq!(v.user, b.user);
    assert_eq!(v.keys, b.keys);
    assert_eq!(v.identity_key, *b.user.key());
    assert_eq!(bob.verified().unwrap().keys, a.keys);
    assert_eq!(alice.poll_timeout(), None);
}

#[test]
fn a_man_in_the_middle_changes_the_emoji() {
    let (a, b) = (party(3), party(4));
    // Mallory relays but substitutes her own SAS keys (and commitment) in both directions.
    let (mut alice, start) =
        SasVerification::start(T0, a.clone(), b.clone(), "txn2".into()).unwrap();
    let (mut bob, accept_from_bob) =
        SasVerification::accept(T0, b.clone(), a.clone(), &start).unwrap();
    // Mallory plays Bob towards Alice and Alice towards Bob.
    let (mut m_as_bob, accept_from_m) =
        SasVerification::accept(T0, b.clone(), a.clone(), &start).unwrap();
    let (mut m_as_alice, _) =
        SasVerification::start(T0, a.clone(), b.clone(), "txn2".into()).unwrap();
    let a_key = one(alice.handle(T0, &accept_from_m).unwrap());
    let m_key_to_alice = one(m_as_bob.handle(T0, &a_key).unwrap());
    alice.handle(T0, &m_key_to_alice).unwrap();
    let m_key_to_bob = one(m_as_alice.handle(T0, &accept_from_bob).unwrap());
    let b_key = one(bob.handle(T0, &m_key_to_bob).unwrap());
    m_as_alice.handle(T0, &b_key).unwrap();
    assert_eq!(alice.state(), SasState::ShowingSas);
    assert_eq!(bob.state(), SasState::ShowingSas);
    assert_ne!(alice.emoji().unwrap(), bob.emoji().unwrap());
    assert_ne!(alice.decimals(), bob.decimals());
    // The users see different emoji and cancel.
    let c = alice.cancel(CancelCode::User).unwrap();
    assert!(matches!(
        c,
        VerificationStep::Cancel {
            code: CancelCode::User,
            ..
        }
    ));
}

#[test]
fn a_key_swapped_after_the_commitment_is_caught() {
    let (a, b) = (party(5), party(6));
    let (mut alice, start) =
        SasVerification::start(T0, a.clone(), b.clone(), "txn3".into()).unwrap();
    let (mut bob, accept) = SasVerification::accept(T0, b.clone(), a.clone(), &start).unwrap();
    let a_key = one(alice.handle(T0, &accept).unwrap());
    let _real_b_key = one(bob.handle(T0, &a_key).unwrap());
    let swapped = VerificationStep::Key {
        txn: "txn3".into(),
        key: Curve25519Key::from_bytes(vodozemac::sas::Sas::new().public_key().to_bytes()),
    };
    let out = one(alice.handle(T0, &swapped).unwrap());
    assert!(matches!(
        out,
        VerificationStep::Cancel {
            code: CancelCode::MismatchedCommitment,
            ..
        }
    ));
    assert_eq!(
        alice.state(),
        SasState::Cancelled {
            code: CancelCode::MismatchedCommitment,
            by_us: true
        }
    );
}

#[test]
fn a_substituted_device_key_fails_the_mac() {
    let (a, b) = (party(7), party(8));
    // The server gave Alice a certificate-looking record for Bob's device with another key.
    let mut fake_b = b.clone();
    fake_b.keys.curve25519 = Curve25519Key::from_bytes([9; 32]);
    let (mut alice, mut bob) = exchange(&a, &fake_b, &b, &a);
    assert_eq!(alice.emoji(), bob.emoji());
    let a_mac = one(alice.confirm(T0).unwrap());
    let out = bob.confirm(T0).unwrap();
    // Bob's view of Alice is right: he verifies her.
    let b_mac = one(out);
    assert!(matches!(b_mac, VerificationStep::Mac { .. }));
    bob.handle(T0, &a_mac).unwrap();
    assert_eq!(bob.state(), SasState::Verified);
    // Alice checks Bob's MAC against the key she holds for him: mismatch.
    let res = one(alice.handle(T0, &b_mac).unwrap());
    assert!(matches!(
        res,
        VerificationStep::Cancel {
            code: CancelCode::KeyMismatch,
            ..
        }
    ));
    assert_eq!(alice.verified(), None);
}

#[test]
fn a_mac_with_a_key_dropped_or_tampered_fails() {
    let (a, b) = (party(9), party(10));
    for tamper in 0..2 {
        let (mut alice, mut bob) = exchange(&a, &b, &b, &a);
        alice.confirm(T0).unwrap();
        let VerificationStep::Mac {
            txn,
            mut macs,
            keys,
        } = bob.confirm(T0).unwrap().remove(0)
        else {
            panic!("expected a MAC");
        };
        if tamper == 0 {
            let first = macs.keys().next().unwrap().clone();
            macs.remove(&first);
        } else {
            macs.values_mut().next().unwrap().0[0] ^= 1;
        }
        let res = one(alice
            .handle(T0, &VerificationStep::Mac { txn, macs, keys })
            .unwrap());
        assert!(matches!(
            res,
            VerificationStep::Cancel {
                code: CancelCode::KeyMismatch,
                ..
            }
        ));
    }
}

#[test]
fn cancel_timeout_and_protocol_errors() {
    let (a, b) = (party(11), party(12));
    let (mut alice, start) =
        SasVerification::start(T0, a.clone(), b.clone(), "txn4".into()).unwrap();
    // A step of another transaction is ignored, not fatal.
    let other = VerificationStep::Done {
        txn: "other".into(),
    };
    assert_eq!(alice.handle(T0, &other), Err(SasError::WrongTransaction));
    // Confirming before the keys are exchanged is refused.
    assert_eq!(alice.confirm(T0), Err(SasError::NotReady));
    // An out-of-order step cancels.
    let key = VerificationStep::Key {
        txn: "txn4".into(),
        key: Curve25519Key::from_bytes([1; 32]),
    };
    let out = one(alice.handle(T0, &key).unwrap());
    assert!(matches!(
        out,
        VerificationStep::Cancel {
            code: CancelCode::UnexpectedMessage,
            ..
        }
    ));
    assert_eq!(alice.handle(T0, &key), Err(SasError::Finished));
    // Timeout.
    let (mut bob, _) = SasVerification::accept(T0, b.clone(), a.clone(), &start).unwrap();
    assert_eq!(bob.poll_timeout(), Some(T0.plus_millis(SAS_TIMEOUT_MS)));
    assert_eq!(bob.handle_timeout(T0.plus_millis(1)), None);
    let c = bob.handle_timeout(T0.plus_millis(SAS_TIMEOUT_MS)).unwrap();
    assert!(matches!(
        c,
        VerificationStep::Cancel {
            code: CancelCode::Timeout,
            ..
        }
    ));
    assert_eq!(bob.poll_timeout(), None);
    // The peer cancelling.
    let (mut carol, start) =
        SasVerification::start(T0, a.clone(), b.clone(), "txn5".into()).unwrap();
    let cancel = VerificationStep::Cancel {
        txn: "txn5".into(),
        code: CancelCode::User,
    };
    assert!(carol.handle(T0, &cancel).unwrap().is_empty());
    assert_eq!(
        carol.state(),
        SasState::Cancelled {
            code: CancelCode::User,
            by_us: false
        }
    );
    // Bad transaction ids.
    assert!(SasVerification::start(T0, a.clone(), b.clone(), "bad id".into()).is_err());
    assert!(SasVerification::accept(T0, b, a, &cancel).is_err());
    let _ = start;
}

#[test]
fn debug_does_not_show_secrets() {
    let (a, b) = (party(13), party(14));
    let (alice, _) = exchange(&a, &b, &b, &a);
    let shown = format!("{alice:?}");
    assert!(shown.contains("ShowingSas"));
    assert!(!shown.contains("established"));
}
