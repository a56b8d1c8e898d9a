//! The conflicts of groups.md §6 item 2, one named test each, plus the "late old branch" rule.
//! Each forks the log into replicas, writes concurrently, exchanges, and checks that both
//! replicas agree on the expected outcome.

use super::harness::*;
use crate::space::{OpStatus, Rank, Refusal};
use dopus_proto::space::{ChannelKind, OpBody, Permissions, derive_channel_id};

fn same_state(a: &mut crate::space::ControlLog, b: &mut crate::space::ControlLog) {
    let sa = a.state().clone();
    let sb = b.state().clone();
    assert_eq!(sa, sb, "replicas diverged");
}

#[test]
fn concurrent_kick_and_demote() {
    // The moderator kicks X while the admin demotes X (takes a role X held): X ends up out,
    // whichever arrives first, and both replicas agree.
    let mut c = cast();
    let helper = role(&mut c.log, &c.o, "Helper", 5, Permissions::MANAGE_MESSAGES);
    assign(&mut c.log, &c.o, c.x.user(), helper);
    let mut r1 = c.log.clone();
    let mut r2 = c.log.clone();
    let kick = op(&mut r1, &c.m, OpBody::Kick { user: c.x.user() });
    let demote = op(
        &mut r2,
        &c.a,
        OpBody::RoleRevoke {
            user: c.x.user(),
            role: helper,
        },
    );
    exchange(&mut r1, &mut r2);
    same_state(&mut r1, &mut r2);
    assert!(!r1.state().is_member(&c.x.user()));
    assert_eq!(r1.status(&kick.id()), OpStatus::Applied);
    // The admin outranks the moderator, so the demotion went first and applied.
    assert_eq!(r1.status(&demote.id()), OpStatus::Applied);
}

#[test]
fn demote_versus_the_demoted_members_kick() {
    // The owner demotes the admin while the admin kicks X: the kick is dropped, X stays.
    let c = cast();
    let mut r1 = c.log.clone();
    let mut r2 = c.log.clone();
    let kick = op(&mut r1, &c.a, OpBody::Kick { user: c.x.user() });
    let demote = op(
        &mut r2,
        &c.o,
        OpBody::RoleRevoke {
            user: c.a.user(),
            role: c.admin,
        },
    );
    exchange(&mut r1, &mut r2);
    same_state(&mut r1, &mut r2);
    assert!(r1.state().is_member(&c.x.user()));
    assert_eq!(r1.status(&demote.id()), OpStatus::Applied);
    assert_eq!(r1.status(&kick.id()), OpStatus::Refused(Refusal::Filtered));
    assert_eq!(r1.filtered_by(&kick.id()), Some(demote.id()));
    assert_eq!(
        r1.state().rank(&c.a.user()),
        Rank::Member {
            position: 0,
            role: dopus_proto::space::RoleId::EVERYONE
        }
    );
}

#[test]
fn demote_reaches_back_over_a_branch_that_sorted_first() {
    // The demotion sits behind an op by a low-ranked member, so the admin's concurrent kick is
    // ready first and is applied in the first walk; strong remove takes it back.
    let c = cast();
    let mut r1 = c.log.clone();
    let mut r2 = c.log.clone();
    let kick = op(&mut r1, &c.a, OpBody::Kick { user: c.x.user() });
    let rng = &mut crate::identity::test_support::SeededRandom::new(9);
    let inv =
        crate::space::invite::new_invite(*r2.space(), c.y.user(), rng, None, None, None, None);
    op(&mut r2, &c.y, inv.body);
    let demote = op(
        &mut r2,
        &c.o,
        OpBody::RoleRevoke {
            user: c.a.user(),
            role: c.admin,
        },
    );
    exchange(&mut r1, &mut r2);
    same_state(&mut r1, &mut r2);
    assert!(r1.state().is_member(&c.x.user()));
    assert_eq!(r1.status(&kick.id()), OpStatus::Refused(Refusal::Filtered));
    assert_eq!(r1.status(&demote.id()), OpStatus::Applied);
}

#[test]
fn ban_versus_join() {
    let mut c = cast();
    let newcomer = signer(50);
    // The moderator bans the newcomer while the admin (who outranks the moderator) admits them:
    // the join sorts first and applies, then the ban removes them. Banned either way.
    let mut r1 = c.log.clone();
    let mut r2 = c.log.clone();
    let ban = op(
        &mut r1,
        &c.m,
        OpBody::Ban {
            user: newcomer.user(),
        },
    );
    let join = admit(&mut r2, &c.a, &newcomer);
    exchange(&mut r1, &mut r2);
    same_state(&mut r1, &mut r2);
    assert!(r1.state().is_banned(&newcomer.user()));
    assert!(!r1.state().is_member(&newcomer.user()));
    assert_eq!(r1.status(&ban.id()), OpStatus::Applied);
    assert_eq!(r1.status(&join.id()), OpStatus::Applied);

    // The owner bans while the admin admits: the ban sorts first and the join is refused.
    let newcomer = signer(51);
    let mut r1 = c.log.clone();
    let mut r2 = c.log.clone();
    op(
        &mut r1,
        &c.o,
        OpBody::Ban {
            user: newcomer.user(),
        },
    );
    let join = admit(&mut r2, &c.a, &newcomer);
    exchange(&mut r1, &mut r2);
    same_state(&mut r1, &mut r2);
    assert!(r1.state().is_banned(&newcomer.user()));
    assert!(!r1.state().is_member(&newcomer.user()));
    assert_eq!(r1.status(&join.id()), OpStatus::Refused(Refusal::Banned));
    let _ = &mut c;
}

#[test]
fn role_delete_versus_assign() {
    let mut c = cast();
    let helper = role(&mut c.log, &c.o, "Helper", 5, Permissions::MANAGE_MESSAGES);
    // The admin deletes the role while the moderator assigns it to X (both orders of rank).
    for (deleter, assigner) in [(&c.a, &c.m), (&c.m, &c.a)] {
        let mut r1 = c.log.clone();
        let mut r2 = c.log.clone();
        op(&mut r1, deleter, OpBody::RoleDelete { role: helper });
        op(
            &mut r2,
            assigner,
            OpBody::RoleAssign {
                user: c.x.user(),
                role: helper,
            },
        );
        exchange(&mut r1, &mut r2);
        same_state(&mut r1, &mut r2);
        let s = r1.state();
        assert!(s.role(&helper).is_none());
        assert!(s.is_role_deleted(&helper));
        assert!(!s.member(&c.x.user()).unwrap().roles.contains(&helper));
        assert!(
            !s.base_permissions(&c.x.user())
                .contains(Permissions::MANAGE_MESSAGES)
        );
    }
}

#[test]
fn channel_delete_versus_message() {
    let mut c = cast();
    let create = op(
        &mut c.log,
        &c.a,
        OpBody::ChannelCreate {
            kind: ChannelKind::Text,
            name: "general".into(),
            topic: None,
            parent: None,
            position: 0,
            overwrites: vec![],
        },
    );
    let ch = derive_channel_id(c.log.space(), &create.id());
    let heads_when_sent = c.log.heads();
    // X sends a message citing heads from before the delete; the admin deletes concurrently.
    assert_eq!(c.log.state().accepts_message(&c.x.user(), &ch), Ok(()));
    op(&mut c.log, &c.a, OpBody::ChannelDelete { channel: ch });
    // A receiver that applied the delete drops the message, whatever heads it cites…
    assert_eq!(
        c.log.state().accepts_message(&c.x.user(), &ch),
        Err(Refusal::NotFound("channel"))
    );
    assert!(c.log.state().is_channel_deleted(&ch));
    assert!(c.log.state().audience(&ch).is_empty());
    // …while the state at the cited heads shows the channel as it was.
    let then = c.log.state_at(&heads_when_sent).unwrap();
    assert_eq!(then.accepts_message(&c.x.user(), &ch), Ok(()));
    // A concurrent rename of the deleted channel does not bring it back.
    let mut r1 = c.log.clone();
    let stale = unchecked(
        &then_log(&c, &heads_when_sent),
        &c.a,
        OpBody::ChannelUpdate {
            channel: ch,
            name: Some("back".into()),
            topic: None,
            overwrites: None,
        },
    );
    r1.insert(stale).unwrap();
    assert!(r1.state().channel(&ch).is_none());
}

/// A replica of `c.log` that has only the ops up to `heads`.
fn then_log(c: &Cast, heads: &[dopus_proto::space::OpId]) -> crate::space::ControlLog {
    let mut log = crate::space::ControlLog::create(c.log.ops().next().unwrap().clone()).unwrap();
    let keep: std::collections::HashSet<_> = {
        let mut set = std::collections::HashSet::new();
        let mut stack: Vec<_> = heads.to_vec();
        while let Some(h) = stack.pop() {
            if set.insert(h) {
                stack.extend(c.log.get(&h).unwrap().parents.iter().copied());
            }
        }
        set
    };
    for o in c.log.ops().skip(1) {
        if keep.contains(&o.id()) {
            log.insert(o.clone()).unwrap();
        }
    }
    log
}

#[test]
fn mutual_actions_between_equal_ranks() {
    let mut c = cast();
    // A second moderator: same top role as M.
    let m2 = &c.y;
    assign(&mut c.log, &c.o, m2.user(), c.moderator);
    let mut r1 = c.log.clone();
    let mut r2 = c.log.clone();
    // Neither may act on the other, concurrently or not: both are refused, both stay.
    let k1 = unchecked(&r1, &c.m, OpBody::Kick { user: m2.user() });
    let k2 = unchecked(&r2, m2, OpBody::Kick { user: c.m.user() });
    let b1 = unchecked(&r1, &c.m, OpBody::Ban { user: m2.user() });
    r1.insert(k1.clone()).unwrap();
    r1.insert(b1.clone()).unwrap();
    r2.insert(k2.clone()).unwrap();
    exchange(&mut r1, &mut r2);
    same_state(&mut r1, &mut r2);
    for o in [&k1, &k2, &b1] {
        assert_eq!(r1.status(&o.id()), OpStatus::Refused(Refusal::RankTooLow));
    }
    assert!(r1.state().is_member(&c.m.user()));
    assert!(r1.state().is_member(&m2.user()));
    // And the rules say so up front.
    assert_eq!(
        r1.state()
            .check(&c.m.user(), &OpBody::Kick { user: m2.user() }),
        Err(Refusal::RankTooLow)
    );
}

#[test]
fn owner_transfer_versus_demote() {
    // The owner hands the space to the moderator while the admin (who outranks the moderator)
    // takes the moderator's role away. The transfer sorts first (the owner outranks all), so the
    // moderator is owner when the demotion comes, and owners cannot be demoted.
    let c = cast();
    let mut r1 = c.log.clone();
    let mut r2 = c.log.clone();
    let transfer = op(&mut r1, &c.o, OpBody::TransferOwnership { to: c.m.user() });
    let demote = op(
        &mut r2,
        &c.a,
        OpBody::RoleRevoke {
            user: c.m.user(),
            role: c.moderator,
        },
    );
    exchange(&mut r1, &mut r2);
    same_state(&mut r1, &mut r2);
    assert_eq!(r1.state().owner(), c.m.user());
    assert_eq!(r1.status(&transfer.id()), OpStatus::Applied);
    assert_eq!(
        r1.status(&demote.id()),
        OpStatus::Refused(Refusal::RankTooLow)
    );
    // The old owner is an ordinary member now, and acts accordingly.
    assert_eq!(
        r1.state()
            .check(&c.o.user(), &OpBody::Kick { user: c.x.user() }),
        Err(Refusal::MissingPermission(Permissions::KICK))
    );
    assert_eq!(r1.state().rank(&c.m.user()), Rank::Owner);
}

#[test]
fn a_late_old_branch_does_not_undo_newer_state() {
    // A replica partitioned early renames the space and a channel; the main branch renames
    // them several times later. When the old branch arrives, the newer names stay.
    let mut c = cast();
    let create = op(
        &mut c.log,
        &c.a,
        OpBody::ChannelCreate {
            kind: ChannelKind::Text,
            name: "general".into(),
            topic: None,
            parent: None,
            position: 0,
            overwrites: vec![],
        },
    );
    let ch = derive_channel_id(c.log.space(), &create.id());
    let helper = role(&mut c.log, &c.o, "Helper", 5, Permissions::MANAGE_MESSAGES);
    let mut old = c.log.clone();
    // On the old branch the moderator gives X a role; the main branch later takes it away.
    op(
        &mut old,
        &c.m,
        OpBody::RoleAssign {
            user: c.x.user(),
            role: helper,
        },
    );
    // The owner's branch is old but the owner outranks everyone.
    op(
        &mut old,
        &c.o,
        OpBody::Update {
            name: Some("old name".into()),
            description: None,
            share_history: None,
        },
    );
    op(
        &mut old,
        &c.o,
        OpBody::ChannelUpdate {
            channel: ch,
            name: Some("old-channel".into()),
            topic: None,
            overwrites: None,
        },
    );
    for i in 0..5 {
        op(
            &mut c.log,
            &c.a,
            OpBody::ChannelUpdate {
                channel: ch,
                name: Some(format!("new-channel-{i}")),
                topic: None,
                overwrites: None,
            },
        );
    }
    op(
        &mut c.log,
        &c.a,
        OpBody::RoleRevoke {
            user: c.x.user(),
            role: helper,
        },
    );
    let mut grant = c.log.clone();
    // Give the admin space management on the main branch, then rename.
    op(
        &mut grant,
        &c.o,
        OpBody::RoleUpdate {
            role: c.admin,
            name: None,
            color: None,
            position: None,
            permissions: Some(
                Permissions::KICK
                    .union(Permissions::BAN)
                    .union(Permissions::MANAGE_ROLES)
                    .union(Permissions::MANAGE_CHANNELS)
                    .union(Permissions::MANAGE_SPACE),
            ),
        },
    );
    op(
        &mut grant,
        &c.a,
        OpBody::Update {
            name: Some("new name".into()),
            description: None,
            share_history: None,
        },
    );
    exchange(&mut old, &mut grant);
    same_state(&mut old, &mut grant);
    assert_eq!(old.state().name(), "new name");
    assert_eq!(
        old.state().channel(&ch).unwrap().name.get(),
        "new-channel-4"
    );
    assert!(
        !old.state()
            .member(&c.x.user())
            .unwrap()
            .roles
            .contains(&helper)
    );
}

#[test]
fn ops_by_outsiders_never_apply() {
    let mut c = cast();
    let stranger = signer(99);
    let o = unchecked(&c.log, &stranger, OpBody::Kick { user: c.x.user() });
    c.log.insert(o.clone()).unwrap();
    assert_eq!(c.log.status(&o.id()), OpStatus::Refused(Refusal::NotMember));
    assert!(c.log.state().is_member(&c.x.user()));
    // A kicked member's later ops never apply either.
    op(&mut c.log, &c.a, OpBody::Kick { user: c.m.user() });
    let late = unchecked(&c.log, &c.m, OpBody::Kick { user: c.x.user() });
    c.log.insert(late.clone()).unwrap();
    assert_eq!(
        c.log.status(&late.id()),
        OpStatus::Refused(Refusal::NotMember)
    );
}

#[test]
fn members_name_themselves_and_the_later_name_wins_everywhere() {
    // Two devices' worth of concurrency: X renames itself on two replicas; both agree on one
    // name. A kicked member's rename concurrent with its kick does not stand.
    let mut c = cast();
    op(
        &mut c.log,
        &c.x,
        OpBody::Profile {
            display_name: "Xavier".into(),
        },
    );
    let member = |log: &mut crate::space::ControlLog, u| {
        log.state()
            .member(&u)
            .and_then(|m| m.display_name().map(str::to_owned))
    };
    assert_eq!(member(&mut c.log, c.x.user()).as_deref(), Some("Xavier"));
    assert_eq!(member(&mut c.log, c.m.user()), None, "nobody else is named");
    let mut r1 = c.log.clone();
    let mut r2 = c.log.clone();
    op(
        &mut r1,
        &c.x,
        OpBody::Profile {
            display_name: "X one".into(),
        },
    );
    op(
        &mut r2,
        &c.x,
        OpBody::Profile {
            display_name: "X two".into(),
        },
    );
    exchange(&mut r1, &mut r2);
    same_state(&mut r1, &mut r2);
    let name = member(&mut r1, c.x.user()).expect("named");
    assert!(name == "X one" || name == "X two", "{name}");
    // Clearing: an empty name shows none.
    op(
        &mut r1,
        &c.x,
        OpBody::Profile {
            display_name: String::new(),
        },
    );
    assert_eq!(member(&mut r1, c.x.user()), None);

    let mut k1 = c.log.clone();
    let mut k2 = c.log.clone();
    let kick = op(&mut k1, &c.m, OpBody::Kick { user: c.x.user() });
    let rename = op(
        &mut k2,
        &c.x,
        OpBody::Profile {
            display_name: "Ghost".into(),
        },
    );
    exchange(&mut k1, &mut k2);
    same_state(&mut k1, &mut k2);
    assert_eq!(k1.status(&kick.id()), OpStatus::Applied);
    assert!(!k1.state().is_member(&c.x.user()));
    assert_ne!(k1.status(&rename.id()), OpStatus::Applied);
}
