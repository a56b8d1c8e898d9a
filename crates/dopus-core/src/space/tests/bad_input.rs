//! Bad input: refused with a clear error, never applied, never blocking later valid ops.

use super::harness::*;
use crate::identity::test_support::SeededRandom;
use crate::space::{InsertError, MAX_PENDING_OPS, OpStatus, Refusal, invite};
use dopus_proto::bundle::BundleError;
use dopus_proto::peer::{PeerAddress, PeerError};
use dopus_proto::space::{
    InviteCode, InviteSecret, JoinRefusal, MAX_NAME_BYTES, OpBody, OpError, OpId, Permissions,
    SpaceContent,
};
use dopus_types::{Signature, SpaceId, Timestamp};

fn rename(n: usize) -> OpBody {
    OpBody::Update {
        name: Some(format!("name {n}")),
        description: None,
        share_history: None,
    }
}

#[test]
fn a_bad_signature_is_refused_and_later_ops_still_apply() {
    let o = signer(1);
    let mut log = create(&o);
    let mut forged = unchecked(&log, &o, rename(1));
    forged.signature = Signature::from_bytes([7; 64]);
    assert_eq!(
        log.insert(forged),
        Err(InsertError::Op(OpError::BadSignature))
    );
    // Signed by another device that claims to be the owner's.
    let impostor = signer(2);
    let mut claimed = unchecked(&log, &impostor, rename(2));
    claimed.author.user_id = o.user();
    assert!(matches!(
        log.insert(claimed),
        Err(InsertError::Op(OpError::Certificate(
            BundleError::BadCertificateSignature
        )))
    ));
    let good = unchecked(&log, &o, rename(3));
    assert!(log.insert(good.clone()).unwrap().added.contains(&good.id()));
    assert_eq!(log.state().name(), "name 3");
    assert_eq!(log.len(), 2);
}

#[test]
fn ops_with_unknown_parents_wait_and_are_released_in_order() {
    let o = signer(1);
    let mut source = create(&o);
    let mut log = source.clone();
    let a = op(&mut source, &o, rename(1));
    let b = op(&mut source, &o, rename(2));
    let c = op(&mut source, &o, rename(3));
    let got = log.insert(c.clone()).unwrap();
    assert!(got.added.is_empty());
    assert_eq!(got.missing, vec![b.id()]);
    assert_eq!(log.status(&c.id()), OpStatus::Pending);
    let got = log.insert(b.clone()).unwrap();
    assert_eq!(got.missing, vec![a.id()]);
    assert_eq!(log.missing(), vec![a.id()]);
    assert_eq!(log.state().name(), "test space");
    let got = log.insert(a.clone()).unwrap();
    assert_eq!(got.added, vec![a.id(), b.id(), c.id()]);
    assert!(log.missing().is_empty());
    assert_eq!(log.pending_len(), 0);
    assert_eq!(log.state().name(), "name 3");
    assert!(log.insert(a).unwrap().duplicate);
}

#[test]
fn a_lying_depth_is_refused_so_no_cycle_can_form() {
    // Parents are named by hash, so an op can only name ops that existed before it; depth must
    // be exactly one more than the deepest parent, so it strictly grows along every parent
    // link and no chain of parents can loop back.
    let o = signer(1);
    let mut log = create(&o);
    let a = op(&mut log, &o, rename(1));
    for depth in [1, 3, u64::MAX] {
        let bad = sign(&o, Some(*log.space()), vec![a.id()], depth, rename(2));
        assert_eq!(
            log.insert(bad),
            Err(InsertError::Depth {
                expected: 2,
                found: depth
            })
        );
    }
    // A waiting op whose depth turns out wrong is dropped when its parent arrives.
    let mut source = log.clone();
    let p = op(&mut source, &o, rename(3));
    let liar = sign(&o, Some(*log.space()), vec![p.id()], 9, rename(4));
    assert!(log.insert(liar.clone()).unwrap().added.is_empty());
    let got = log.insert(p.clone()).unwrap();
    assert_eq!(got.added, vec![p.id()]);
    assert_eq!(got.rejected.len(), 1);
    assert_eq!(log.status(&liar.id()), OpStatus::Unknown);
    // Duplicate or unsorted parents do not even decode.
    let dup = sign(&o, Some(*log.space()), vec![a.id(), a.id()], 2, rename(5));
    assert!(matches!(
        log.insert(dup),
        Err(InsertError::Op(OpError::Format(_)))
    ));
}

#[test]
fn an_author_without_permission_is_refused_without_blocking_others() {
    let mut c = cast();
    let before = c.log.state().clone();
    let bad = [
        unchecked(&c.log, &c.x, OpBody::Kick { user: c.y.user() }),
        unchecked(&c.log, &c.x, rename(1)),
        unchecked(
            &c.log,
            &c.m,
            OpBody::RoleAssign {
                user: c.x.user(),
                role: c.admin,
            },
        ),
        unchecked(&c.log, &c.m, OpBody::TransferOwnership { to: c.m.user() }),
        unchecked(&c.log, &c.o, OpBody::Leave),
        unchecked(
            &c.log,
            &c.m,
            OpBody::RoleCreate {
                name: "Boss".into(),
                color: 0,
                position: 99,
                permissions: Permissions::KICK,
            },
        ),
        unchecked(
            &c.log,
            &c.m,
            OpBody::RoleCreate {
                name: "Sneaky".into(),
                color: 0,
                position: 1,
                permissions: Permissions::ADMINISTRATOR,
            },
        ),
    ];
    let expected = [
        Refusal::MissingPermission(Permissions::KICK),
        Refusal::MissingPermission(Permissions::MANAGE_SPACE),
        Refusal::RankTooLow,
        Refusal::OwnerOnly("only the owner can hand the space over"),
        Refusal::OwnerOnly("the owner must hand the space over before leaving"),
        Refusal::RankTooLow,
        Refusal::MissingPermission(Permissions::ADMINISTRATOR),
    ];
    for o in &bad {
        c.log.insert(o.clone()).unwrap();
    }
    for (o, e) in bad.iter().zip(expected) {
        assert_eq!(
            c.log.status(&o.id()),
            OpStatus::Refused(e),
            "{}",
            o.body.kind_name()
        );
    }
    assert_eq!(c.log.state().members().count(), before.members().count());
    assert_eq!(c.log.state().name(), before.name());
    // A valid op after all of that applies.
    let good = op(&mut c.log, &c.a, OpBody::Kick { user: c.y.user() });
    assert_eq!(c.log.status(&good.id()), OpStatus::Applied);
    assert!(!c.log.state().is_member(&c.y.user()));
}

#[test]
fn oversize_fields_are_refused_without_blocking_later_ops() {
    let o = signer(1);
    let mut log = create(&o);
    let big = unchecked(
        &log,
        &o,
        OpBody::Update {
            name: Some("n".repeat(MAX_NAME_BYTES + 1)),
            description: None,
            share_history: None,
        },
    );
    assert_eq!(
        log.insert(big),
        Err(InsertError::Op(OpError::Format(PeerError::FieldTooLong {
            field: "name",
            limit: MAX_NAME_BYTES
        })))
    );
    let good = unchecked(&log, &o, rename(1));
    log.insert(good).unwrap();
    assert_eq!(log.state().name(), "name 1");
    // A member's display name: at most 64 bytes, no control characters.
    for bad in ["n".repeat(65), "tab\there".into(), "   ".into()] {
        let op = unchecked(
            &log,
            &o,
            OpBody::Profile {
                display_name: bad.clone(),
            },
        );
        assert!(
            matches!(log.insert(op), Err(InsertError::Op(OpError::Format(_)))),
            "{bad:?}"
        );
    }
    let named = unchecked(
        &log,
        &o,
        OpBody::Profile {
            display_name: "n".repeat(64),
        },
    );
    log.insert(named).unwrap();
    assert_eq!(
        log.state()
            .member(&o.user())
            .and_then(|m| m.display_name().map(str::len)),
        Some(64)
    );
}

#[test]
fn ops_of_other_spaces_and_second_geneses_are_refused() {
    let o = signer(1);
    let mut log = create(&o);
    let other = sign(
        &o,
        Some(SpaceId::from_bytes([1; 32])),
        log.heads(),
        1,
        rename(1),
    );
    assert_eq!(log.insert(other), Err(InsertError::WrongSpace));
    let g2 =
        crate::space::ControlLog::genesis_op(&o, "another", [8; 16], Permissions::NONE, false, T0);
    assert_eq!(log.insert(g2), Err(InsertError::SecondGenesis));
}

#[test]
fn the_waiting_buffer_is_bounded() {
    let o = signer(1);
    let mut log = create(&o);
    let space = *log.space();
    for i in 0..MAX_PENDING_OPS {
        let mut parent = [0u8; 32];
        parent[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let orphan = sign(
            &o,
            Some(space),
            vec![OpId::from_bytes(parent)],
            5,
            rename(i),
        );
        assert!(log.insert(orphan).unwrap().added.is_empty());
    }
    let one_more = sign(
        &o,
        Some(space),
        vec![OpId::from_bytes([255; 32])],
        5,
        rename(0),
    );
    assert_eq!(log.insert(one_more), Err(InsertError::BufferFull));
    // Valid ops still go in.
    let good = unchecked(&log, &o, rename(1));
    assert_eq!(log.insert(good).unwrap().added.len(), 1);
}

fn sender(s: &crate::space::test_support::KeySigner) -> PeerAddress {
    PeerAddress {
        user: s.user(),
        device: s.cert.device_id.clone(),
    }
}

#[test]
fn forged_expired_revoked_and_used_up_invites_are_refused_clearly() {
    let o = signer(1);
    let j = signer(2);
    let mut log = create(&o);
    let space = *log.space();
    let mut rng = SeededRandom::new(1);
    // Forged: a code with a secret nobody made an invite for.
    let forged = InviteCode {
        space,
        secret: InviteSecret([9; 32]),
        inviter: o.user(),
        expires_at: None,
        max_uses: None,
        relay: None,
        admitters: Vec::new(),
    };
    let req = invite::join_request(&forged, &j.cert, T0);
    let err = invite::admit(log.state(), &o.user(), &sender(&j), &req, T0).unwrap_err();
    assert_eq!(err, JoinRefusal::UnknownInvite);
    assert!(err.message().contains("not valid"));
    // Expired.
    let exp = invite::new_invite(
        space,
        o.user(),
        &mut rng,
        None,
        Some(T0.plus_millis(1000)),
        None,
        None,
    );
    op(&mut log, &o, exp.body.clone());
    assert!(!invite::code_expired(&exp.code, T0));
    assert!(invite::code_expired(&exp.code, T0.plus_millis(1001)));
    let late = T0.plus_millis(5000);
    let req = invite::join_request(&exp.code, &j.cert, late);
    assert_eq!(
        invite::admit(log.state(), &o.user(), &sender(&j), &req, late),
        Err(JoinRefusal::Expired)
    );
    // Revoked.
    let rev = invite::new_invite(space, o.user(), &mut rng, None, None, None, None);
    let created = op(&mut log, &o, rev.body.clone());
    op(
        &mut log,
        &o,
        OpBody::InviteRevoke {
            invite: created.id(),
        },
    );
    let req = invite::join_request(&rev.code, &j.cert, T0);
    assert_eq!(
        invite::admit(log.state(), &o.user(), &sender(&j), &req, T0),
        Err(JoinRefusal::Revoked)
    );
    // Used up.
    let once = invite::new_invite(space, o.user(), &mut rng, Some(1), None, None, None);
    op(&mut log, &o, once.body.clone());
    join_with(&mut log, &o, &j, &once.code);
    let k = signer(3);
    let req = invite::join_request(&once.code, &k.cert, T0);
    assert_eq!(
        invite::admit(log.state(), &o.user(), &sender(&k), &req, T0),
        Err(JoinRefusal::Exhausted)
    );
    // Already a member; sent from a device the certificate does not name; a tampered proof.
    let open = invite::new_invite(space, o.user(), &mut rng, None, None, None, None);
    op(&mut log, &o, open.body.clone());
    let req = invite::join_request(&open.code, &j.cert, T0);
    assert_eq!(
        invite::admit(log.state(), &o.user(), &sender(&j), &req, T0),
        Err(JoinRefusal::AlreadyMember)
    );
    let req = invite::join_request(&open.code, &k.cert, T0);
    assert_eq!(
        invite::admit(log.state(), &o.user(), &sender(&j), &req, T0),
        Err(JoinRefusal::BadProof)
    );
    let SpaceContent::SpaceJoinRequest {
        space: s,
        invite_key,
        certificate,
        proof,
        ..
    } = req
    else {
        unreachable!()
    };
    let replayed_later = SpaceContent::SpaceJoinRequest {
        space: s,
        invite_key,
        certificate,
        requested_at: Timestamp(T0.0 + 1),
        proof,
    };
    assert_eq!(
        invite::admit(log.state(), &o.user(), &sender(&k), &replayed_later, T0),
        Err(JoinRefusal::BadProof)
    );
    // A member without the permission cannot admit.
    let mut closed = create_with(&o, Permissions::VIEW_CHANNEL, false);
    admit(&mut closed, &o, &j);
    let shut = invite::new_invite(*closed.space(), o.user(), &mut rng, None, None, None, None);
    op(&mut closed, &o, shut.body.clone());
    let req = invite::join_request(&shut.code, &k.cert, T0);
    assert_eq!(
        invite::admit(closed.state(), &j.user(), &sender(&k), &req, T0),
        Err(JoinRefusal::NotAllowed)
    );
    // Banned.
    op(&mut log, &o, OpBody::Ban { user: k.user() });
    let req = invite::join_request(&open.code, &k.cert, T0);
    assert_eq!(
        invite::admit(log.state(), &o.user(), &sender(&k), &req, T0),
        Err(JoinRefusal::Banned)
    );
}

#[test]
fn a_join_op_with_a_forged_proof_never_applies() {
    let o = signer(1);
    let j = signer(2);
    let mut log = create(&o);
    let mut rng = SeededRandom::new(2);
    let inv = invite::new_invite(*log.space(), o.user(), &mut rng, None, None, None, None);
    let created = op(&mut log, &o, inv.body);
    let forged = unchecked(
        &log,
        &o,
        OpBody::Join {
            invite: created.id(),
            joiner: Box::new(j.cert.clone()),
            requested_at: T0,
            proof: Signature::from_bytes([3; 64]),
        },
    );
    log.insert(forged.clone()).unwrap();
    assert_eq!(
        log.status(&forged.id()),
        OpStatus::Refused(Refusal::BadJoinProof)
    );
    assert!(!log.state().is_member(&j.user()));
}

#[test]
fn max_uses_count_only_joins_the_admitter_had_seen() {
    // Two members admit two joiners concurrently with a one-use invite: both joins apply
    // (documented overshoot), and every replica agrees.
    let o = signer(1);
    let a = signer(2);
    let (j1, j2) = (signer(3), signer(4));
    let mut log = create(&o);
    admit(&mut log, &o, &a);
    let mut rng = SeededRandom::new(3);
    let once = invite::new_invite(*log.space(), o.user(), &mut rng, Some(1), None, None, None);
    op(&mut log, &o, once.body.clone());
    let mut r1 = log.clone();
    let mut r2 = log.clone();
    join_with(&mut r1, &o, &j1, &once.code);
    join_with(&mut r2, &a, &j2, &once.code);
    exchange(&mut r1, &mut r2);
    assert_eq!(r1.state(), r2.state());
    assert!(r1.state().is_member(&j1.user()));
    assert!(r1.state().is_member(&j2.user()));
    // But a third join on top of both is refused.
    let j3 = signer(5);
    let req = invite::join_request(&once.code, &j3.cert, T0);
    assert_eq!(
        invite::admit(r1.state(), &o.user(), &sender(&j3), &req, T0),
        Err(JoinRefusal::Exhausted)
    );
}

#[test]
fn sync_sends_what_a_peer_may_lack() {
    let o = signer(1);
    let mut a = create(&o);
    let g = a.heads();
    let mut b = a.clone();
    let x1 = op(&mut a, &o, rename(1));
    let x2 = op(&mut a, &o, rename(2));
    let y1 = op(&mut b, &o, rename(3));
    let ids = |v: Vec<&dopus_proto::space::SpaceOp>| -> Vec<OpId> {
        v.into_iter().map(|o| o.id()).collect()
    };
    // B's heads are unknown to A: A sends everything B cannot be shown to hold.
    assert_eq!(ids(a.ops_for(&b.heads(), &[], usize::MAX)).len(), 3);
    // Once A knows B's head, it sends only its own branch.
    a.insert(y1.clone()).unwrap();
    assert_eq!(
        ids(a.ops_for(&[y1.id()], &[], usize::MAX)),
        vec![x1.id(), x2.id()]
    );
    // Nothing for a peer with everything; a wanted op by id; a limit.
    assert!(a.ops_for(&a.heads(), &[], usize::MAX).is_empty());
    assert_eq!(
        ids(a.ops_for(&a.heads(), &[x1.id()], usize::MAX)),
        vec![x1.id()]
    );
    assert_eq!(a.ops_for(&[], &[], 2).len(), 2);
    assert_eq!(ids(a.ops_for(&g, &[], 1)), vec![x1.id()]);
    // Whatever A sends brings B up to date.
    for o in a.ops_for(&b.heads(), &[], usize::MAX) {
        b.insert(o.clone()).unwrap();
    }
    assert_eq!(a.heads(), b.heads());
    assert_eq!(a.state(), b.state());
}
