//! Voice presence between three machines in virtual time, over the relaying server of the
//! spaces tests: joins, leaves, refreshes, expiries, a kick while in the channel, permission
//! changes, forged and replayed presences.

use super::super::space::tests::{Net, three_in_a_space};
use super::super::{CommandError, VoicePeer, VoiceRequest};
use super::*;
use dopus_proto::space::{OpBody, Overwrite, OverwriteTarget, RoleId};

fn voice_channel(net: &Net, space: &SpaceId) -> ChannelId {
    let state = net.nodes[0].machine.space(space).expect("space");
    state
        .channel_list()
        .into_iter()
        .find(|c| c.kind == ChannelKind::Voice)
        .expect("every new space has a voice channel")
        .id
}

/// Who node `i` sees in `channel` (as a sorted list: the order is checked on its own).
fn seen(net: &Net, i: usize, space: &SpaceId, channel: &ChannelId) -> Vec<UserId> {
    let mut v = seen_in_order(net, i, space, channel);
    v.sort();
    v
}

/// `users` sorted, to compare with [`seen`].
fn set(mut users: Vec<UserId>) -> Vec<UserId> {
    users.sort();
    users
}

/// Who node `i` sees in `channel`, in the order the API shows.
fn seen_in_order(net: &Net, i: usize, space: &SpaceId, channel: &ChannelId) -> Vec<UserId> {
    net.nodes[i]
        .machine
        .voice_channels(space)
        .expect("space")
        .into_iter()
        .find(|c| c.channel == *channel)
        .expect("channel")
        .participants
        .into_iter()
        .map(|p| p.user)
        .collect()
}

/// The last media request node `i` handed out.
fn mesh(net: &Net, i: usize) -> Option<VoiceRequest> {
    net.nodes[i].x.voice.last().cloned()
}

fn peers(net: &Net, i: usize) -> Vec<VoicePeer> {
    match mesh(net, i) {
        Some(VoiceRequest::Session { peers, .. }) => peers,
        _ => Vec::new(),
    }
}

/// Lets exactly `ms` of virtual time pass in steps of 250 ms, every node running a few
/// rounds each step (timers fire at the first step at or after them).
fn advance(net: &mut Net, ms: u64) {
    let until = net.now + ms;
    while net.now < until {
        net.now = (net.now + 250).min(until);
        for _ in 0..4 {
            net.round();
        }
    }
}

fn join(net: &mut Net, i: usize, space: SpaceId, channel: ChannelId) {
    net.cmd(i, |m, now, _| m.voice_join(now, space, channel))
        .expect("join voice");
    net.settle(200);
}

#[test]
fn members_see_joins_and_leaves_and_the_mesh_follows() {
    let (mut net, space, _) = three_in_a_space();
    let vc = voice_channel(&net, &space);
    let (alice, bob, carol) = (net.user(0), net.user(1), net.user(2));

    join(&mut net, 0, space, vc);
    for i in 0..3 {
        assert_eq!(seen(&net, i, &space, &vc), set(vec![alice]), "node {i}");
    }
    assert_eq!(
        mesh(&net, 0),
        Some(VoiceRequest::Session {
            space,
            channel: vc,
            send: true,
            peers: vec![]
        })
    );
    assert_eq!(mesh(&net, 1), None, "bob is not in voice: no media");

    join(&mut net, 1, space, vc);
    // Bob learns alice is there from her answer to his join, not from a refresh; each shows
    // itself first, then the others by join time.
    assert_eq!(seen_in_order(&net, 1, &space, &vc), vec![bob, alice]);
    assert_eq!(seen_in_order(&net, 0, &space, &vc), vec![alice, bob]);
    assert_eq!(seen(&net, 2, &space, &vc), set(vec![alice, bob]));
    assert_eq!(
        peers(&net, 0),
        vec![VoicePeer {
            user: bob,
            hear: true,
            offerer: alice < bob,
        }]
    );
    assert_eq!(
        peers(&net, 1),
        vec![VoicePeer {
            user: alice,
            hear: true,
            offerer: bob < alice,
        }]
    );
    // The mesh opens a direct connection between them although they are not contacts.
    assert!(net.nodes[0].machine.links.contains_key(&bob));
    assert!(net.nodes[1].machine.links.contains_key(&alice));
    assert!(!net.nodes[2].machine.links.contains_key(&alice));

    join(&mut net, 2, space, vc);
    for i in 0..3 {
        assert_eq!(peers(&net, i).len(), 2, "node {i} has a full mesh");
    }

    // Mute and deafen reach the others.
    net.cmd(1, |m, now, _| m.voice_set(now, Some(true), None))
        .expect("mute");
    net.settle(200);
    let bob_at_alice = |net: &Net| {
        net.nodes[0]
            .machine
            .voice_channels(&space)
            .expect("space")
            .into_iter()
            .find(|c| c.channel == vc)
            .expect("vc")
            .participants
            .into_iter()
            .find(|p| p.user == bob)
            .expect("bob")
    };
    assert!(bob_at_alice(&net).muted);
    assert!(!bob_at_alice(&net).deafened);
    match mesh(&net, 1) {
        Some(VoiceRequest::Session { send, .. }) => assert!(!send, "a muted node sends nothing"),
        other => panic!("{other:?}"),
    }
    net.cmd(2, |m, now, _| m.voice_set(now, None, Some(true)))
        .expect("deafen");
    net.settle(200);
    assert!(
        peers(&net, 2).iter().all(|p| !p.hear),
        "deafened hears nothing"
    );

    // Carol leaves: gone everywhere at once, the mesh shrinks, her media stops.
    net.cmd(2, |m, now, _| m.voice_leave(now)).expect("leave");
    net.settle(200);
    for i in 0..3 {
        assert_eq!(
            seen(&net, i, &space, &vc),
            set(vec![alice, bob]),
            "node {i}"
        );
    }
    assert_eq!(mesh(&net, 2), Some(VoiceRequest::Stop));
    assert!(peers(&net, 0).iter().all(|p| p.user != carol));
    assert!(matches!(
        net.cmd(2, |m, now, _| m.voice_leave(now)),
        Err(CommandError::Voice(_))
    ));
}

#[test]
fn presence_is_refreshed_while_online_and_lapses_when_not() {
    let (mut net, space, _) = three_in_a_space();
    let vc = voice_channel(&net, &space);
    let (alice, bob) = (net.user(0), net.user(1));
    join(&mut net, 0, space, vc);
    join(&mut net, 1, space, vc);
    // Three times the lifetime of one presence: refreshes keep both in.
    advance(&mut net, 3 * VOICE_TTL_MS);
    for i in 0..3 {
        assert_eq!(
            seen(&net, i, &space, &vc),
            set(vec![alice, bob]),
            "node {i}"
        );
    }
    // Bob's node dies without leaving: the others drop him once his last presence lapses,
    // between TTL - REFRESH and TTL after he went (his last refresh was at most REFRESH ago).
    net.offline(1);
    advance(&mut net, VOICE_TTL_MS - VOICE_REFRESH_MS - 1_000);
    assert_eq!(seen(&net, 0, &space, &vc), set(vec![alice, bob]), "not yet");
    advance(&mut net, VOICE_REFRESH_MS + 2_000);
    assert_eq!(seen(&net, 0, &space, &vc), set(vec![alice]));
    assert_eq!(seen(&net, 2, &space, &vc), set(vec![alice]));
    assert_eq!(peers(&net, 0), vec![]);
}

#[test]
fn a_kicked_member_is_dropped_from_the_channel_and_the_mesh() {
    let (mut net, space, _) = three_in_a_space();
    let vc = voice_channel(&net, &space);
    let (alice, bob, carol) = (net.user(0), net.user(1), net.user(2));
    for i in 0..3 {
        join(&mut net, i, space, vc);
    }
    assert_eq!(peers(&net, 1).len(), 2);
    net.cmd(0, |m, now, s| {
        m.space_op(now, s, space, OpBody::Kick { user: carol })
    })
    .expect("kick");
    net.settle(500);
    for i in 0..2 {
        assert_eq!(
            seen(&net, i, &space, &vc),
            set(vec![alice, bob]),
            "node {i}"
        );
        assert!(
            peers(&net, i).iter().all(|p| p.user != carol),
            "node {i} stopped media with carol"
        );
    }
    // Carol's node applied the kick too: it left the channel itself.
    assert!(net.nodes[2].machine.my_voice().is_none());
    assert_eq!(mesh(&net, 2), Some(VoiceRequest::Stop));
    // A presence carol sends anyway is refused by every member.
    let refreshed = net.nodes[0].machine.voice_refusal().map(str::to_owned);
    assert!(refreshed.is_some(), "the removal was noted");
    assert!(matches!(
        net.cmd(2, |m, now, _| m.voice_join(now, space, vc)),
        Err(CommandError::Space(_) | CommandError::UnknownSpace)
    ));
}

#[test]
fn permissions_decide_who_is_admitted_and_who_is_heard() {
    let (mut net, space, _) = three_in_a_space();
    let vc = voice_channel(&net, &space);
    let (alice, bob, carol) = (net.user(0), net.user(1), net.user(2));
    join(&mut net, 0, space, vc);
    join(&mut net, 1, space, vc);
    join(&mut net, 2, space, vc);

    // @everyone loses speak in the channel: alice (the owner) still speaks; bob and carol are
    // still in but their audio is dropped everywhere, and their own nodes stop sending.
    net.cmd(0, |m, now, s| {
        m.space_op(
            now,
            s,
            space,
            OpBody::ChannelUpdate {
                channel: vc,
                name: None,
                topic: None,
                overwrites: Some(vec![Overwrite {
                    target: OverwriteTarget::Role(RoleId::EVERYONE),
                    allow: Permissions::NONE,
                    deny: Permissions::SPEAK,
                }]),
            },
        )
    })
    .expect("deny speak");
    net.settle(500);
    let hear = |net: &Net, i: usize, u: UserId| {
        peers(net, i)
            .into_iter()
            .find(|p| p.user == u)
            .map(|p| p.hear)
    };
    assert_eq!(hear(&net, 0, bob), Some(false));
    assert_eq!(hear(&net, 0, carol), Some(false));
    assert_eq!(hear(&net, 1, alice), Some(true));
    assert_eq!(hear(&net, 1, carol), Some(false));
    match mesh(&net, 1) {
        Some(VoiceRequest::Session { send, .. }) => assert!(!send, "bob may not speak"),
        other => panic!("{other:?}"),
    }

    // Carol loses connect: she is no longer admitted anywhere, and leaves herself.
    net.cmd(0, |m, now, s| {
        m.space_op(
            now,
            s,
            space,
            OpBody::ChannelUpdate {
                channel: vc,
                name: None,
                topic: None,
                overwrites: Some(vec![Overwrite {
                    target: OverwriteTarget::Member(carol),
                    allow: Permissions::NONE,
                    deny: Permissions::CONNECT,
                }]),
            },
        )
    })
    .expect("deny connect");
    net.settle(500);
    for i in 0..3 {
        assert_eq!(
            seen(&net, i, &space, &vc),
            set(vec![alice, bob]),
            "node {i}"
        );
    }
    assert!(net.nodes[2].machine.my_voice().is_none());
    assert!(matches!(
        net.cmd(2, |m, now, _| m.voice_join(now, space, vc)),
        Err(CommandError::Space(_))
    ));
    // With speak back (the overwrite replaced), bob is heard again.
    assert_eq!(hear(&net, 0, bob), Some(true));
}

#[test]
fn forged_replayed_and_misaddressed_presences_are_refused() {
    let (mut net, space, _) = three_in_a_space();
    let vc = voice_channel(&net, &space);
    let (alice, bob) = (net.user(0), net.user(1));
    let bob_device = net.nodes[1].addr.device.clone();
    let now = net.ts();
    let signed = |net: &Net, signer: usize, p: &mut VoicePresence| {
        p.signature = net.nodes[signer]
            .machine
            .olm
            .device()
            .sign_bytes(&p.signing_bytes());
    };
    let mut p = VoicePresence {
        v: VOICE_PRESENCE_VERSION,
        space,
        channel: Some(vc),
        user: bob,
        device: bob_device.clone(),
        seq: now.as_millis() + 10,
        sent_at: now,
        expires_at: now.plus_millis(VOICE_TTL_MS),
        muted: false,
        deafened: false,
        signature: Signature::from_bytes([0; 64]),
    };
    let take = |net: &mut Net, p: &VoicePresence, sender: UserId, device: &DeviceId| {
        let now = net.ts();
        let n = &mut net.nodes[0];
        n.machine
            .take_voice(now, sender, device, p, &n.store)
            .expect("take");
        n.machine.prepare(now, &mut n.store).expect("prepare");
    };

    // Signed by carol's device for bob: refused.
    signed(&net, 2, &mut p);
    take(&mut net, &p, bob, &bob_device);
    assert_eq!(seen(&net, 0, &space, &vc), Vec::<UserId>::new());
    assert!(
        net.nodes[0]
            .machine
            .voice_refusal()
            .is_some_and(|r| r.contains("signature"))
    );
    // Bob's own presence, but arriving from carol's session: refused.
    signed(&net, 1, &mut p);
    let carol = net.user(2);
    let carol_device = net.nodes[2].addr.device.clone();
    take(&mut net, &p, carol, &carol_device);
    assert_eq!(seen(&net, 0, &space, &vc), Vec::<UserId>::new());
    // The real thing: admitted.
    take(&mut net, &p, bob, &bob_device);
    assert_eq!(seen(&net, 0, &space, &vc), set(vec![bob]));
    // A newer leave, then the old join replayed: bob stays out.
    let join = p.clone();
    p.channel = None;
    p.seq += 1;
    signed(&net, 1, &mut p);
    take(&mut net, &p, bob, &bob_device);
    assert_eq!(seen(&net, 0, &space, &vc), Vec::<UserId>::new());
    take(&mut net, &join, bob, &bob_device);
    assert_eq!(
        seen(&net, 0, &space, &vc),
        Vec::<UserId>::new(),
        "replay refused"
    );
    // A presence for a text channel: not admitted.
    let general = net.general(0, &space);
    p.channel = Some(general);
    p.seq += 1;
    signed(&net, 1, &mut p);
    take(&mut net, &p, bob, &bob_device);
    assert!(
        net.nodes[0]
            .machine
            .voice_channels(&space)
            .expect("space")
            .iter()
            .all(|c| c.participants.is_empty()),
        "bob is in no channel"
    );
    assert!(
        net.nodes[0]
            .machine
            .voice_refusal()
            .is_some_and(|r| r.contains("not a voice channel"))
    );
    let _ = alice;
}

#[test]
fn a_call_and_a_voice_channel_exclude_each_other_and_joins_are_checked() {
    let (mut net, space, general) = three_in_a_space();
    let vc = voice_channel(&net, &space);
    assert!(matches!(
        net.cmd(0, |m, now, _| m.voice_join(now, space, general)),
        Err(CommandError::Voice(_))
    ));
    assert!(matches!(
        net.cmd(0, |m, now, _| m.voice_join(
            now,
            space,
            ChannelId::from_bytes([9; 16])
        )),
        Err(CommandError::UnknownChannel)
    ));
    join(&mut net, 0, space, vc);
    let bob = net.user(1);
    // Not a contact anyway, but the voice check comes first for a contact too.
    let r = net.cmd(0, |m, now, s| m.start_call(now, bob, s));
    assert!(r.is_err());
    // Joining another channel of the same space moves us (a leave is sent for the old one).
    let vc2 = net
        .cmd(0, |m, now, s| {
            m.space_op(
                now,
                s,
                space,
                OpBody::ChannelCreate {
                    kind: ChannelKind::Voice,
                    name: "Second".into(),
                    topic: None,
                    parent: None,
                    position: 9,
                    overwrites: vec![],
                },
            )
        })
        .expect("create");
    let _ = vc2;
    net.settle(300);
    let second = net.nodes[0]
        .machine
        .voice_channels(&space)
        .expect("space")
        .into_iter()
        .find(|c| c.name == "Second")
        .expect("second")
        .channel;
    join(&mut net, 0, space, second);
    assert_eq!(seen(&net, 1, &space, &vc), Vec::<UserId>::new());
    assert_eq!(seen(&net, 1, &space, &second), set(vec![net.user(0)]));
}

/// The 1-in-5 failure of the three-node process test: a member's connection offer overtook its
/// presence, the receiver (not a contact, the sender not in its mesh yet) dropped it, and then
/// offered itself; glare made the other side ignore that offer, and both waited for the
/// connection grace to run out. The offer is now held until the presence comes, and answered.
#[test]
fn an_offer_that_overtakes_the_presence_is_held_then_answered() {
    use super::super::{ConnectionEvent, ConnectionRequest, Input};
    let (mut net, space, _) = three_in_a_space();
    let vc = voice_channel(&net, &space);
    let (alice, bob) = (net.user(0), net.user(1));
    join(&mut net, 1, space, vc);

    // Alice joins; what she sends bob (her presence) is held back.
    net.cmd(0, |m, now, _| m.voice_join(now, space, vc))
        .expect("join voice");
    let now = net.ts();
    let (_, outputs) = net.nodes[0].step(now);
    let mut presence_to_bob = Vec::new();
    let mut conn = None;
    for o in outputs {
        match o {
            Output::Transmit(t) if t.peer == bob => presence_to_bob.push(Output::Transmit(t)),
            Output::Connection(ConnectionRequest::Offer { peer, conn: c }) if peer == bob => {
                conn = Some(c);
            }
            other => net.perform(0, other),
        }
    }
    assert!(!presence_to_bob.is_empty(), "alice's presence for bob");
    let conn = conn.expect("alice connects to bob, who is in the channel");

    // Her connection offer reaches bob first.
    net.nodes[0].inputs.push(Input::Connection {
        peer: bob,
        conn: conn.clone(),
        event: ConnectionEvent::Offered {
            sdp: "v=0 (alice's offer)".into(),
        },
    });
    let (_, outputs) = net.nodes[0].step(now);
    for o in outputs {
        net.perform(0, o);
    }
    let (_, outputs) = net.nodes[1].step(now);
    assert!(
        !outputs.iter().any(
            |o| matches!(o, Output::Connection(r) if !matches!(r, ConnectionRequest::Close { .. }))
        ),
        "bob does nothing with an offer from a member who is not in his mesh yet: {outputs:?}"
    );
    assert!(!net.nodes[1].machine.links.contains_key(&alice));

    // Then her presence: alice enters bob's mesh and the held offer is answered (bob does not
    // make an offer of his own).
    for o in presence_to_bob {
        net.perform(0, o);
    }
    let (_, outputs) = net.nodes[1].step(now);
    let answered = outputs.iter().any(|o| {
        matches!(o, Output::Connection(ConnectionRequest::Answer { peer, conn: c, sdp })
            if *peer == alice && *c == conn && sdp.contains("alice's offer"))
    });
    assert!(answered, "bob answers the held offer: {outputs:?}");
    assert!(
        !outputs.iter().any(
            |o| matches!(o, Output::Connection(ConnectionRequest::Offer { peer, .. }) if *peer == alice)
        ),
        "and makes no offer of his own"
    );
    assert!(outputs.iter().any(|o| matches!(o,
        Output::Voice(VoiceRequest::Session { peers, .. }) if peers.iter().any(|p| p.user == alice))));
}

#[test]
fn signals_from_non_members_are_not_held_and_held_ones_expire() {
    let (mut net, space, _) = three_in_a_space();
    let vc = voice_channel(&net, &space);
    let carol = net.user(2);
    let stranger = crate::identity::Identity::generate(
        &mut crate::identity::test_support::SeededRandom::new(99),
    )
    .expect("identity")
    .user_id();
    let rtc = RtcContent::Rtc {
        conn: "c1".into(),
        signal: dopus_proto::peer::RtcSignal::EndOfCandidates,
    };
    let now = net.ts();
    // Not in voice: nothing is held.
    assert!(!net.nodes[0].machine.hold_voice_signal(now, carol, &rtc));
    join(&mut net, 0, space, vc);
    let now = net.ts();
    assert!(!net.nodes[0].machine.hold_voice_signal(now, stranger, &rtc));
    // A member: held, at most HELD_PER_PEER of them.
    let held = (0..40)
        .filter(|_| net.nodes[0].machine.hold_voice_signal(now, carol, &rtc))
        .count();
    assert_eq!(held, HELD_PER_PEER);
    // They lapse.
    advance(&mut net, HELD_SIGNAL_MS + 500);
    assert!(net.nodes[0].machine.voice.held.is_empty());
}
