//! Spaces between several machines on in-memory stores, over a tiny relaying server: create,
//! invite, join, channel messages with Megolm, edits, reactions, a kick, anti-entropy.

use super::super::test_net::{T0, TestNode, test_node};
use super::super::{
    Delivery, Event, Inbound, Input, NodeMachine, Output, SignalingRequest, SignalingState, Via,
};
use super::JoinState;
use crate::e2e::OlmMachine;
use crate::identity::PickleKey;
use crate::identity::test_support::SeededRandom;
use crate::store::{Change, ConversationId, MegolmWaitState, MemoryStore, Message, Store};
use dopus_proto::peer::PeerAddress;
use dopus_proto::space::{InviteCode, OpBody};
use dopus_types::{ChannelId, SpaceId, Timestamp, UserId};

/// What the space tests keep beside the shared node: the server's mailbox for it.
pub(crate) struct Presence {
    /// Kept by the "server" while the node is offline.
    mailbox: Vec<(PeerAddress, Vec<u8>)>,
    online: bool,
    /// Voice media requests (machine/voice.rs tests).
    pub(crate) voice: Vec<crate::machine::VoiceRequest>,
}

/// Node `i`'s pickle key (the first bytes its seeded rng draws, as in `test_node`).
fn pickle_key(i: u64) -> [u8; 32] {
    let mut rng = SeededRandom::new(1000 + i);
    let mut key = [0u8; 32];
    crate::identity::pickle::SecureRandom::fill_bytes(&mut rng, &mut key);
    key
}

pub(crate) type Node = TestNode<Presence>;

fn node(i: u64) -> Node {
    test_node(
        i,
        Presence {
            mailbox: Vec::new(),
            online: true,
            voice: Vec::new(),
        },
    )
}

pub(crate) struct Net {
    pub(crate) nodes: Vec<Node>,
    pub(crate) now: u64,
    /// Envelopes relayed to each node so far.
    relayed: Vec<usize>,
}

impl Net {
    pub(crate) fn new(n: u64) -> Self {
        Self {
            nodes: (0..n).map(node).collect(),
            now: T0,
            relayed: vec![0; n as usize],
        }
    }

    pub(crate) fn user(&self, i: usize) -> UserId {
        self.nodes[i].addr.user
    }

    pub(crate) fn ts(&self) -> Timestamp {
        Timestamp(self.now)
    }

    pub(crate) fn by_user(&self, user: &UserId) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr.user == *user)
    }

    /// One round: every node takes its inputs and prepares; outputs are delivered.
    pub(crate) fn round(&mut self) -> bool {
        let now = self.ts();
        let mut busy = false;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].x.online {
                continue;
            }
            let (moved, outputs) = self.nodes[i].step(now);
            busy |= moved;
            for o in outputs {
                self.perform(i, o);
            }
        }
        busy
    }

    pub(crate) fn perform(&mut self, from: usize, output: Output) {
        match output {
            Output::Transmit(t) => {
                let to = self.by_user(&t.peer).expect("known peer");
                let mut outcome = Vec::new();
                for env in &t.envelopes {
                    let sender = self.nodes[from].addr.clone();
                    if self.nodes[to].x.online {
                        self.relayed[to] += 1;
                        self.nodes[to].inbox.push(Inbound {
                            bytes: env.bytes.clone(),
                            via: Via::Relay { from: sender },
                        });
                        outcome.push(Delivery::Sent);
                    } else if t.store {
                        self.nodes[to].x.mailbox.push((sender, env.bytes.clone()));
                        outcome.push(Delivery::Stored);
                    } else {
                        outcome.push(Delivery::Failed);
                    }
                }
                if t.report {
                    self.nodes[from]
                        .inputs
                        .push(Input::Transmitted { id: t.id, outcome });
                }
            }
            Output::Signaling(SignalingRequest::PublishBundle { bundle }) => {
                self.nodes[from].publish(bundle);
            }
            Output::Signaling(SignalingRequest::FetchBundle { peer }) => {
                let result = match self.by_user(&peer).and_then(|p| self.nodes[p].claim()) {
                    Some(c) => Ok(vec![c]),
                    None => Err("no_bundle".into()),
                };
                self.nodes[from]
                    .inputs
                    .push(Input::Bundles { peer, result });
            }
            Output::Signaling(_)
            | Output::Connection(_)
            | Output::Transfer(_)
            | Output::Call(_) => {}
            Output::Voice(v) => self.nodes[from].x.voice.push(v),
            Output::Event(e) => self.nodes[from].events.push(e),
        }
    }

    /// Runs rounds (10 ms apart) until nothing moves for a while, at most `max` rounds.
    pub(crate) fn settle(&mut self, max: usize) {
        let mut quiet = 0;
        for _ in 0..max {
            let busy = self.round();
            self.now += 10;
            quiet = if busy { 0 } else { quiet + 1 };
            if quiet > 3 {
                // Jump to the next timer of any online node (retries, receipts), if soon.
                let next = self
                    .nodes
                    .iter()
                    .filter(|n| n.x.online)
                    .filter_map(|n| n.machine.poll_timeout())
                    .map(|t| t.as_millis())
                    .min();
                match next {
                    Some(t) if t <= self.now + 5_000 => self.now = self.now.max(t),
                    _ => return,
                }
                quiet = 0;
            }
        }
    }

    pub(crate) fn offline(&mut self, i: usize) {
        self.nodes[i].x.online = false;
    }

    pub(crate) fn online(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.x.online = true;
        let mail = std::mem::take(&mut n.x.mailbox);
        for (k, (from, bytes)) in mail.into_iter().enumerate() {
            n.inbox.push(Inbound {
                bytes,
                via: Via::Mailbox {
                    from,
                    ack: k as u64,
                },
            });
        }
        n.inputs.push(Input::Signaling(SignalingState::Connected));
        n.inputs.push(Input::Authenticated);
    }

    /// Node `i` restarts: a new machine from its store alone (everything in memory is lost),
    /// online again.
    fn restart(&mut self, i: usize) {
        let key = pickle_key(i as u64);
        let n = &mut self.nodes[i];
        let record = n.store.account().expect("account").expect("stored");
        let olm = OlmMachine::from_pickle(
            record.account_pickle.as_str(),
            PickleKey::from_bytes(key),
            Box::new(SeededRandom::new(4000 + i as u64)),
        )
        .expect("olm");
        n.machine = NodeMachine::new(
            &n.store,
            record,
            olm,
            Box::new(SeededRandom::new(5000 + i as u64)),
        )
        .expect("machine");
        n.inbox.clear();
        n.events.clear();
        n.inputs = vec![
            Input::Signaling(SignalingState::Connected),
            Input::Authenticated,
        ];
    }

    /// Node `i` loses its Megolm sessions of `space` (a restore from an old copy, say) but
    /// keeps the space's log.
    fn lose_sessions(&mut self, i: usize, space: SpaceId) {
        let store = &mut self.nodes[i].store;
        let ops = store.space_ops(&space).expect("ops");
        store.apply_one(Change::RemoveSpace(space)).expect("remove");
        for op in ops {
            store.apply_one(Change::SaveSpaceOp(op)).expect("op");
        }
    }

    /// Node `i`'s placeholders in `channel`: (state, reason) of each waiting message.
    fn waiting(&self, i: usize, channel: ChannelId) -> Vec<MegolmWaitState> {
        self.nodes[i]
            .store
            .megolm_waiting_in_channel(&channel, 100)
            .expect("waiting")
            .into_iter()
            .map(|w| w.state)
            .collect()
    }

    pub(crate) fn texts(&self, i: usize, channel: ChannelId) -> Vec<String> {
        let mut m: Vec<Message> = self.nodes[i]
            .store
            .messages_before(&ConversationId::Channel(channel), None, 1000)
            .expect("messages");
        m.reverse();
        m.into_iter()
            .filter(|m| !m.deleted)
            .map(|m| m.body)
            .collect()
    }

    pub(crate) fn general(&self, i: usize, space: &SpaceId) -> ChannelId {
        let state = self.nodes[i].machine.space(space).expect("space");
        state
            .channel_list()
            .into_iter()
            .find(|c| c.name.get() == "general")
            .expect("general")
            .id
    }

    pub(crate) fn cmd<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut NodeMachine, Timestamp, &mut MemoryStore) -> T,
    ) -> T {
        let now = self.ts();
        let n = &mut self.nodes[i];
        f(&mut n.machine, now, &mut n.store)
    }
}

/// alice (0) creates a space, invites bob (1) and carol (2); everyone talks in `general`.
pub(crate) fn three_in_a_space() -> (Net, SpaceId, ChannelId) {
    let mut net = Net::new(3);
    net.settle(50);
    let space = net
        .cmd(0, |m, now, s| m.create_space(now, s, "Guild"))
        .expect("create");
    let general = net.general(0, &space);
    for joiner in [1, 2] {
        let code = net
            .cmd(0, |m, now, s| m.space_invite(now, s, space, Some(1), None))
            .expect("invite");
        net.cmd(joiner, |m, now, s| m.join_space(now, s, &code))
            .expect("join");
        assert_eq!(
            net.nodes[joiner].machine.join_state(&space),
            Some(JoinState::Pending)
        );
        net.settle(500);
        let state = net.nodes[joiner].machine.space(&space).expect("joined");
        assert!(state.is_member(&net.user(joiner)));
        assert_eq!(net.nodes[joiner].machine.join_state(&space), None);
    }
    net.settle(500);
    for i in 0..3 {
        let s = net.nodes[i].machine.space(&space).expect("space");
        assert_eq!(s.member_count(), 3, "node {i} sees every member");
        assert_eq!(s.name(), "Guild");
    }
    (net, space, general)
}

#[test]
fn three_members_talk_in_a_channel_and_a_kicked_member_gets_nothing_after() {
    let (mut net, space, general) = three_in_a_space();
    // Everyone talks; each message reaches everyone once, in each sender's order.
    for round in 0..3 {
        for i in 0..3 {
            net.cmd(i, |m, now, s| {
                m.channel_send(now, s, general, format!("m{round}-{i}"), None)
            })
            .expect("send");
            net.now += 5;
        }
        net.settle(500);
    }
    let expected: Vec<String> = (0..3)
        .flat_map(|r| (0..3).map(move |i| format!("m{r}-{i}")))
        .collect();
    for i in 0..3 {
        assert_eq!(net.texts(i, general), expected, "node {i}");
    }
    // The heads of every replica agree.
    let heads: Vec<_> = (0..3)
        .map(|i| net.nodes[i].machine.space(&space).map(|s| s.member_count()))
        .collect();
    assert!(heads.iter().all(|h| *h == Some(3)));

    // An edit and a reaction by bob reach alice and carol.
    let first_bob = net.nodes[1]
        .store
        .messages_before(&ConversationId::Channel(general), None, 100)
        .expect("messages")
        .into_iter()
        .find(|m| m.body == "m0-1")
        .expect("bob's message");
    net.cmd(1, |m, now, s| {
        m.edit(now, s, first_bob.id, "m0-1 edited".into())
    })
    .expect("edit");
    net.cmd(0, |m, now, s| {
        m.react(now, s, first_bob.id, "👍".into(), true)
    })
    .expect("react");
    net.settle(500);
    for i in 0..3 {
        let m = net.nodes[i]
            .store
            .message(&first_bob.id)
            .expect("read")
            .expect("there");
        assert_eq!(m.body, "m0-1 edited", "node {i}");
        let reactions = net.nodes[i]
            .store
            .reactions(&first_bob.id)
            .expect("reactions");
        assert_eq!(reactions.len(), 1, "node {i}");
    }

    // Alice kicks carol; carol learns she is out; nothing sent afterwards reaches her.
    let carol = net.user(2);
    net.cmd(0, |m, now, s| {
        m.space_op(now, s, space, OpBody::Kick { user: carol })
    })
    .expect("kick");
    net.settle(500);
    for i in 0..3 {
        let s = net.nodes[i].machine.space(&space).expect("space");
        assert!(!s.is_member(&carol), "node {i} applied the kick");
    }
    let carol_sessions = net.nodes[2]
        .store
        .megolm_inbound_for_channel(&general)
        .expect("sessions")
        .len();
    let relayed_to_carol = net.relayed[2];
    net.cmd(0, |m, now, s| {
        m.channel_send(now, s, general, "after-a".into(), None)
    })
    .expect("send after kick");
    net.cmd(1, |m, now, s| {
        m.channel_send(now, s, general, "after-b".into(), None)
    })
    .expect("send after kick");
    net.settle(500);
    assert_eq!(
        net.relayed[2], relayed_to_carol,
        "nothing at all was relayed to carol after her kick"
    );
    assert_eq!(
        net.nodes[2]
            .store
            .megolm_inbound_for_channel(&general)
            .expect("sessions")
            .len(),
        carol_sessions,
        "carol got no new key"
    );
    assert!(!net.texts(2, general).iter().any(|t| t.starts_with("after")));
    for i in 0..2 {
        let t = net.texts(i, general);
        assert!(
            t.contains(&"after-a".to_owned()) && t.contains(&"after-b".to_owned()),
            "node {i}"
        );
    }
    // What the space does after the kick stays hidden from carol, even when she asks.
    net.cmd(0, |m, now, s| {
        m.space_op(
            now,
            s,
            space,
            OpBody::ChannelCreate {
                kind: dopus_proto::space::ChannelKind::Text,
                name: "after-carol".into(),
                topic: None,
                parent: None,
                position: 2,
                overwrites: Vec::new(),
            },
        )
    })
    .expect("channel");
    let alice = net.user(0);
    net.cmd(2, |m, now, _| m.ask_ops(now, alice, space, Vec::new()));
    net.settle(500);
    assert!(
        !net.nodes[2]
            .machine
            .space(&space)
            .expect("space")
            .channel_list()
            .iter()
            .any(|c| c.name.get() == "after-carol"),
        "a removed member learns nothing of the space after its removal"
    );
    assert!(
        net.nodes[1]
            .machine
            .space(&space)
            .expect("space")
            .channel_list()
            .iter()
            .any(|c| c.name.get() == "after-carol")
    );
    // Carol can no longer post.
    assert!(
        net.cmd(2, |m, now, s| m.channel_send(
            now,
            s,
            general,
            "ghost".into(),
            None
        ))
        .is_err()
    );
}

#[test]
fn an_offline_member_catches_up_from_the_mailbox_and_by_anti_entropy() {
    let (mut net, space, general) = three_in_a_space();
    net.offline(2);
    net.cmd(0, |m, now, s| {
        m.space_op(
            now,
            s,
            space,
            OpBody::ChannelCreate {
                kind: dopus_proto::space::ChannelKind::Text,
                name: "random".into(),
                topic: None,
                parent: None,
                position: 1,
                overwrites: Vec::new(),
            },
        )
    })
    .expect("channel");
    net.cmd(1, |m, now, s| {
        m.channel_send(now, s, general, "while away".into(), None)
    })
    .expect("send");
    net.settle(500);
    net.online(2);
    net.settle(1000);
    let s = net.nodes[2].machine.space(&space).expect("space");
    assert!(s.channel_list().iter().any(|c| c.name.get() == "random"));
    assert_eq!(net.texts(2, general), vec!["while away".to_owned()]);
}

#[test]
fn a_forged_or_reused_invite_is_refused_with_a_reason() {
    let mut net = Net::new(3);
    net.settle(50);
    let space = net
        .cmd(0, |m, now, s| m.create_space(now, s, "Guild"))
        .expect("create");
    let code = net
        .cmd(0, |m, now, s| m.space_invite(now, s, space, Some(1), None))
        .expect("invite");
    net.cmd(1, |m, now, s| m.join_space(now, s, &code))
        .expect("join");
    net.settle(500);
    assert!(net.nodes[1].machine.space(&space).is_some());
    // The same single-use code again, by carol: used up.
    net.cmd(2, |m, now, s| m.join_space(now, s, &code))
        .expect("ask");
    net.settle(500);
    assert_eq!(
        net.nodes[2].machine.join_state(&space),
        Some(JoinState::Refused(
            dopus_proto::space::JoinRefusal::Exhausted
        ))
    );
    assert!(net.nodes[2].machine.space(&space).is_none());
    // Garbage is refused at once.
    assert!(
        net.cmd(2, |m, now, s| m.join_space(now, s, "dinvite1garbage"))
            .is_err()
    );
    // A member joining again is told so before anything is sent.
    let code2 = net
        .cmd(0, |m, now, s| m.space_invite(now, s, space, None, None))
        .expect("invite");
    assert!(
        net.cmd(1, |m, now, s| m.join_space(now, s, &code2))
            .is_err()
    );
}

#[test]
fn spaces_survive_a_restart_of_the_machine() {
    let (mut net, space, general) = three_in_a_space();
    net.cmd(0, |m, now, s| {
        m.channel_send(now, s, general, "one".into(), None)
    })
    .expect("send");
    net.settle(500);
    // Bob's spaces load back from his store alone.
    let store = &net.nodes[1].store;
    let spaces = super::Spaces::load(store, &PickleKey::from_bytes([0; 32])).expect("load");
    assert_eq!(spaces.states.get(&space).map(|s| s.member_count()), Some(3));
}

#[test]
fn a_member_who_lost_a_key_asks_for_it_and_reads_the_message() {
    let (mut net, space, general) = three_in_a_space();
    net.cmd(0, |m, now, s| {
        m.channel_send(now, s, general, "first".into(), None)
    })
    .expect("send");
    net.settle(500);
    assert_eq!(net.texts(2, general), vec!["first".to_owned()]);
    // Carol's Megolm sessions are gone (a restore from an old copy, say); her log stays.
    net.nodes[2]
        .store
        .apply_one(Change::RemoveSpace(space))
        .expect("remove");
    assert!(
        net.nodes[2]
            .store
            .megolm_inbound_for_channel(&general)
            .expect("sessions")
            .is_empty()
    );
    // Alice's session has not rotated (same readers): carol cannot read the next message
    // until she asks alice for the key, which alice forwards from that index.
    net.cmd(0, |m, now, s| {
        m.channel_send(now, s, general, "second".into(), None)
    })
    .expect("send");
    net.settle(500);
    assert_eq!(
        net.texts(2, general),
        vec!["first".to_owned(), "second".to_owned()]
    );
    assert_eq!(
        net.texts(1, general),
        vec!["first".to_owned(), "second".to_owned()]
    );
}

#[test]
fn any_member_named_in_the_code_admits_while_the_inviter_is_away() {
    let (mut net, space, general) = three_in_a_space();
    // Bob makes the invite: it names alice and carol as admitters. Bob goes away before the
    // joiner asks; alice (the owner, first) admits.
    let code = net
        .cmd(1, |m, now, s| m.space_invite(now, s, space, Some(1), None))
        .expect("invite");
    let parsed = InviteCode::parse(&code).expect("code");
    assert_eq!(parsed.inviter, net.user(1));
    assert_eq!(parsed.admitters, vec![net.user(0), net.user(2)]);
    net.settle(500);
    net.offline(1);
    let joiner = 2;
    // Carol is already in: she is told so by every admitter, and stays a member.
    net.cmd(joiner, |m, now, s| m.join_space(now, s, &code))
        .expect_err("a member joining again is told so at once");
    // Carol leaves, then joins again with bob's code while bob is away.
    net.cmd(joiner, |m, now, s| m.space_op(now, s, space, OpBody::Leave))
        .expect("leave");
    net.settle(500);
    assert!(
        !net.nodes[0]
            .machine
            .space(&space)
            .expect("space")
            .is_member(&net.user(joiner))
    );
    net.cmd(joiner, |m, now, s| m.join_space(now, s, &code))
        .expect("join");
    net.settle(1000);
    let s = net.nodes[joiner].machine.space(&space).expect("space");
    assert!(s.is_member(&net.user(joiner)), "admitted by alice");
    assert_eq!(net.nodes[joiner].machine.join_state(&space), None);
    net.cmd(0, |m, now, s| {
        m.channel_send(now, s, general, "welcome back".into(), None)
    })
    .expect("send");
    net.settle(500);
    assert!(
        net.texts(joiner, general)
            .contains(&"welcome back".to_owned())
    );
    net.online(1);
    net.settle(1000);
    assert!(
        net.nodes[1]
            .machine
            .space(&space)
            .expect("space")
            .is_member(&net.user(joiner))
    );
}

#[test]
fn a_revoked_or_expired_invite_is_refused_with_a_reason() {
    let mut net = Net::new(3);
    net.settle(50);
    let space = net
        .cmd(0, |m, now, s| m.create_space(now, s, "Guild"))
        .expect("create");
    let code = net
        .cmd(0, |m, now, s| m.space_invite(now, s, space, None, None))
        .expect("invite");
    let invite = net.nodes[0]
        .machine
        .space(&space)
        .expect("space")
        .invites()
        .next()
        .expect("invite")
        .id;
    net.cmd(0, |m, now, s| {
        m.space_op(now, s, space, OpBody::InviteRevoke { invite })
    })
    .expect("revoke");
    net.cmd(1, |m, now, s| m.join_space(now, s, &code))
        .expect("ask");
    net.settle(500);
    let refused = net.nodes[1].machine.join_state(&space);
    assert_eq!(
        refused,
        Some(JoinState::Refused(dopus_proto::space::JoinRefusal::Revoked))
    );
    assert!(
        dopus_proto::space::JoinRefusal::Revoked
            .message()
            .contains("revoked")
    );
    assert!(net.nodes[1].machine.space(&space).is_none());
    // An expired code is refused before anything is sent.
    let past = Timestamp(net.ts().as_millis() + 1_000);
    let short = net
        .cmd(0, |m, now, s| {
            m.space_invite(now, s, space, None, Some(past))
        })
        .expect("invite");
    net.now += 5_000;
    let err = net
        .cmd(2, |m, now, s| m.join_space(now, s, &short))
        .expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");
}

/// Carol lost her Megolm sessions; alice's next message waits for its key. Her request is
/// lost and alice goes away: the message is a placeholder (`waiting_for_keys`), in the store,
/// so a restart resumes asking; when alice is back the key comes and the message is decrypted
/// in place.
#[test]
fn a_message_waiting_for_its_key_is_a_placeholder_that_survives_a_restart() {
    let (mut net, space, general) = three_in_a_space();
    net.cmd(0, |m, now, s| {
        m.channel_send(now, s, general, "first".into(), None)
    })
    .expect("send");
    net.settle(500);
    net.lose_sessions(2, space);
    net.nodes[2].events.clear();
    net.cmd(0, |m, now, s| {
        m.channel_send(now, s, general, "second".into(), None)
    })
    .expect("send");
    // One round: alice sends, carol takes it and asks alice, who is gone before she reads it.
    net.round();
    net.offline(0);
    net.nodes[0].inbox.clear();
    net.settle(50);
    assert_eq!(net.texts(2, general), vec!["first".to_owned()]);
    assert_eq!(net.waiting(2, general), vec![MegolmWaitState::Waiting]);
    assert!(
        net.nodes[2]
            .events
            .contains(&Event::ChannelWaiting(general)),
        "the UI is told"
    );
    // Carol restarts: the wait is back from the store, and she asks again once online.
    net.restart(2);
    net.settle(50);
    assert_eq!(net.waiting(2, general), vec![MegolmWaitState::Waiting]);
    net.online(0);
    // The resumed requests back off (10 s, 30 s): let virtual time run past the next one.
    for _ in 0..10 {
        net.now += 10_000;
        net.settle(200);
        if net.waiting(2, general).is_empty() {
            break;
        }
    }
    assert!(net.waiting(2, general).is_empty(), "decrypted in place");
    assert_eq!(
        net.texts(2, general),
        vec!["first".to_owned(), "second".to_owned()]
    );
    assert!(
        net.nodes[2]
            .events
            .contains(&Event::ChannelWaiting(general))
    );
}

/// The owner no longer holds the session either (both restored from old copies): carol's
/// placeholder ends `withheld` with the owner's reason, and stays so across a restart.
#[test]
fn a_withheld_key_leaves_a_placeholder_with_the_reason() {
    let (mut net, space, general) = three_in_a_space();
    net.cmd(0, |m, now, s| {
        m.channel_send(now, s, general, "first".into(), None)
    })
    .expect("send");
    net.settle(500);
    net.lose_sessions(2, space);
    net.cmd(0, |m, now, s| {
        m.channel_send(now, s, general, "second".into(), None)
    })
    .expect("send");
    // Alice encrypted "second"; before carol's request reaches her, she loses the session.
    net.round();
    net.nodes[0]
        .store
        .apply_one(Change::RemoveSpace(space))
        .expect("remove");
    net.settle(500);
    let withheld = MegolmWaitState::Withheld(dopus_proto::space::WithheldCode::Unavailable);
    assert_eq!(net.waiting(2, general), vec![withheld]);
    assert_eq!(net.texts(2, general), vec!["first".to_owned()]);
    net.restart(2);
    net.settle(500);
    assert_eq!(net.waiting(2, general), vec![withheld]);
}

/// `joiner` joins `space` with a single-use code from `inviter`.
fn join(net: &mut Net, space: SpaceId, inviter: usize, joiner: usize) {
    let code = net
        .cmd(inviter, |m, now, s| {
            m.space_invite(now, s, space, Some(1), None)
        })
        .expect("invite");
    net.cmd(joiner, |m, now, s| m.join_space(now, s, &code))
        .expect("join");
    net.settle(1000);
    let state = net.nodes[joiner].machine.space(&space).expect("joined");
    assert!(state.is_member(&net.user(joiner)));
}

fn say(net: &mut Net, i: usize, channel: ChannelId, text: &str) {
    net.cmd(i, |m, now, s| {
        m.channel_send(now, s, channel, text.into(), None)
    })
    .expect("send");
    net.settle(500);
}

/// With `share_history` on, whoever admits a member hands over the keys of the shareable
/// sessions and the ciphertexts it kept: the newcomer reads what was said before it joined.
/// A removed member gets neither the bundle nor anything after its removal; what it said
/// before stays in the history of members who join later.
#[test]
fn a_member_joining_a_space_that_shares_history_reads_earlier_messages() {
    let mut net = Net::new(4);
    net.settle(50);
    let space = net
        .cmd(0, |m, now, s| m.create_space(now, s, "Archive"))
        .expect("create");
    let general = net.general(0, &space);
    net.cmd(0, |m, now, s| {
        m.space_op(
            now,
            s,
            space,
            OpBody::Update {
                name: None,
                description: None,
                share_history: Some(true),
            },
        )
    })
    .expect("share history");
    say(&mut net, 0, general, "before anyone");
    join(&mut net, space, 0, 1);
    assert_eq!(net.texts(1, general), vec!["before anyone".to_owned()]);
    say(&mut net, 0, general, "a1");
    say(&mut net, 1, general, "b1");
    // Carol is admitted by bob: he kept alice's ciphertexts and his own.
    join(&mut net, space, 1, 2);
    assert_eq!(
        net.texts(2, general),
        vec!["before anyone".to_owned(), "a1".to_owned(), "b1".to_owned()]
    );
    assert!(net.waiting(2, general).is_empty());
    // Bob is kicked; alice's next session is not shared with him, nor is dave's bundle.
    let bob = net.user(1);
    net.cmd(0, |m, now, s| {
        m.space_op(now, s, space, OpBody::Kick { user: bob })
    })
    .expect("kick");
    net.settle(500);
    let relayed_to_bob = net.relayed[1];
    say(&mut net, 0, general, "after the kick");
    join(&mut net, space, 0, 3);
    let dave = net.texts(3, general);
    assert!(dave.contains(&"a1".to_owned()) && dave.contains(&"after the kick".to_owned()));
    assert!(!net.texts(1, general).contains(&"after the kick".to_owned()));
    assert_eq!(
        net.relayed[1], relayed_to_bob,
        "nothing reaches the removed member"
    );
    // What bob said while a member stays in dave's history (his session is handed on).
    assert!(dave.contains(&"b1".to_owned()), "{dave:?}");
    assert!(
        net.nodes[3]
            .store
            .megolm_inbound_for_channel(&general)
            .expect("sessions")
            .iter()
            .any(|s| s.sender_user == bob),
        "a departed member's session comes with the history"
    );
}

/// A newcomer reads what members who have since left (or were kicked) said while they were
/// members, under their names, marked as former members; a message the kicked member wrote
/// after its kick (its node had not heard of it yet) reaches nobody's history.
#[test]
fn history_from_members_who_left_shows_and_nothing_after_their_removal() {
    let mut net = Net::new(4);
    net.settle(50);
    let space = net
        .cmd(0, |m, now, s| m.create_space(now, s, "Archive"))
        .expect("create");
    let general = net.general(0, &space);
    net.cmd(0, |m, now, s| {
        m.space_op(
            now,
            s,
            space,
            OpBody::Update {
                name: None,
                description: None,
                share_history: Some(true),
            },
        )
    })
    .expect("share history");
    join(&mut net, space, 0, 1);
    join(&mut net, space, 0, 2);
    let (bob, carol) = (net.user(1), net.user(2));
    // Each node writes a `profile` op with its account's name (node1, node2) when it joins.
    net.settle(500);
    say(&mut net, 0, general, "a1");
    say(&mut net, 1, general, "b1");
    say(&mut net, 2, general, "c1");
    // Carol leaves; bob is kicked while away, and, not knowing it, still writes.
    net.cmd(2, |m, now, s| m.space_op(now, s, space, OpBody::Leave))
        .expect("leave");
    net.settle(500);
    net.offline(1);
    net.cmd(0, |m, now, s| {
        m.space_op(now, s, space, OpBody::Kick { user: bob })
    })
    .expect("kick");
    net.settle(500);
    net.cmd(1, |m, now, s| {
        m.channel_send(now, s, general, "written after the kick".into(), None)
    })
    .expect("bob's node has not heard of the kick");
    net.online(1);
    net.settle(1000);
    assert!(
        !net.texts(0, general)
            .contains(&"written after the kick".to_owned()),
        "a removed member's live message is refused"
    );
    say(&mut net, 0, general, "a2");
    join(&mut net, space, 0, 3);
    assert_eq!(
        net.texts(3, general),
        ["a1", "b1", "c1", "a2"].map(str::to_owned),
        "the departed members' messages, in order, and nothing after the kick"
    );
    let state = net.nodes[3].machine.space(&space).expect("dave's space");
    let former: Vec<(UserId, Option<String>)> = state
        .former_members()
        .map(|(u, n)| (*u, n.map(str::to_owned)))
        .collect();
    assert!(
        former.contains(&(bob, Some("node1".to_owned()))),
        "{former:?}"
    );
    assert!(former.contains(&(carol, Some("node2".to_owned()))));
    let senders: Vec<UserId> = {
        let mut m = net.nodes[3]
            .store
            .messages_before(&ConversationId::Channel(general), None, 100)
            .expect("messages");
        m.reverse();
        m.into_iter().map(|m| m.sender).collect()
    };
    assert_eq!(senders, [net.user(0), bob, carol, net.user(0)]);
}

/// With `share_history` off (the default), a newcomer reads from its join onward: nothing
/// earlier is sent to it, and nothing waits for keys it will never get.
#[test]
fn without_shared_history_a_member_reads_from_its_join() {
    let mut net = Net::new(3);
    net.settle(50);
    let space = net
        .cmd(0, |m, now, s| m.create_space(now, s, "Private"))
        .expect("create");
    let general = net.general(0, &space);
    join(&mut net, space, 0, 1);
    say(&mut net, 0, general, "early");
    say(&mut net, 1, general, "early too");
    join(&mut net, space, 1, 2);
    assert!(net.texts(2, general).is_empty());
    assert!(net.waiting(2, general).is_empty());
    assert!(
        net.nodes[1]
            .store
            .channel_ciphertexts(&general, 100)
            .expect("kept")
            .is_empty(),
        "nothing is kept for later members"
    );
    say(&mut net, 0, general, "later");
    assert_eq!(net.texts(2, general), vec!["later".to_owned()]);
}

/// The typing events node `i` saw in `channel`: (who, active), in order.
fn channel_typing_events(net: &Net, i: usize, channel: ChannelId) -> Vec<(UserId, bool)> {
    net.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Typing {
                user,
                active,
                channel: Some(c),
            } if *c == channel => Some((*user, *active)),
            _ => None,
        })
        .collect()
}

#[test]
fn typing_in_a_channel_reaches_online_readers_expires_and_is_never_kept() {
    let (mut net, space, general) = three_in_a_space();
    let bob = net.user(1);
    // Sessions exist after the join; carol is away and gets nothing later.
    net.offline(2);
    for n in &mut net.nodes {
        n.events.clear();
    }
    net.cmd(1, |m, now, s| m.channel_typing(now, s, general, true))
        .expect("typing");
    net.settle(20);
    assert_eq!(channel_typing_events(&net, 0, general), vec![(bob, true)]);
    assert!(
        channel_typing_events(&net, 1, general).is_empty(),
        "not echoed to the sender"
    );
    // Throttled: a second start within 3 s sends nothing.
    let relayed = net.relayed[0];
    net.cmd(1, |m, now, s| m.channel_typing(now, s, general, true))
        .expect("typing");
    net.settle(20);
    assert_eq!(net.relayed[0], relayed, "throttled on the sender");
    // Without a refresh the indicator expires on the receiver (6 s).
    net.now += 6_100;
    net.settle(20);
    assert_eq!(
        channel_typing_events(&net, 0, general),
        vec![(bob, true), (bob, false)]
    );
    // Typing again, then a message: the message ends it (once).
    net.now += 3_000;
    net.cmd(1, |m, now, s| m.channel_typing(now, s, general, true))
        .expect("typing");
    net.settle(20);
    net.cmd(1, |m, now, s| {
        m.channel_send(now, s, general, "hello".into(), None)
    })
    .expect("send");
    net.settle(200);
    assert_eq!(
        channel_typing_events(&net, 0, general),
        vec![(bob, true), (bob, false), (bob, true), (bob, false)]
    );
    net.now += 10_000;
    net.settle(50);
    assert_eq!(channel_typing_events(&net, 0, general).len(), 4);
    // Carol comes back: the message is in her mailbox, the typing notices are not.
    assert!(
        net.nodes[2]
            .x
            .mailbox
            .iter()
            .all(|(from, _)| from.user == bob),
        "only bob wrote to carol"
    );
    net.online(2);
    net.settle(500);
    assert_eq!(net.texts(2, general), vec!["hello".to_owned()]);
    assert!(
        channel_typing_events(&net, 2, general).is_empty(),
        "typing is live only"
    );
    // A stop without a start sends nothing; nor is typing into an unknown channel accepted.
    let before = net.relayed[0];
    net.cmd(1, |m, now, s| m.channel_typing(now, s, general, false))
        .expect("stop");
    net.settle(20);
    assert_eq!(net.relayed[0], before);
    let unknown = ChannelId::from_bytes([7; 16]);
    assert!(
        net.cmd(1, |m, now, s| m.channel_typing(now, s, unknown, true))
            .is_err()
    );
    let _ = space;
}

#[test]
fn typing_is_judged_against_the_channels_permissions() {
    let (mut net, space, general) = three_in_a_space();
    let carol = net.user(2);
    // Alice takes send_messages from carol in `general`.
    net.cmd(0, |m, now, s| {
        m.space_op(
            now,
            s,
            space,
            OpBody::ChannelUpdate {
                channel: general,
                name: None,
                topic: None,
                overwrites: Some(vec![dopus_proto::space::Overwrite {
                    target: dopus_proto::space::OverwriteTarget::Member(carol),
                    allow: dopus_proto::space::Permissions::NONE,
                    deny: dopus_proto::space::Permissions::SEND_MESSAGES,
                }]),
            },
        )
    })
    .expect("overwrite");
    net.settle(500);
    // Carol's own node refuses.
    assert!(
        net.cmd(2, |m, now, s| m.channel_typing(now, s, general, true))
            .is_err(),
        "no send_messages: no typing"
    );
    // A notice from her (a node that does not check) is dropped by bob's.
    for n in &mut net.nodes {
        n.events.clear();
    }
    net.cmd(1, |m, now, _| {
        m.take_channel_typing(now, carol, space, general, true);
    });
    let mut emitted = 0;
    while let Some(o) = net.nodes[1].machine.poll_output() {
        emitted += usize::from(matches!(o, Output::Event(Event::Typing { .. })));
    }
    assert_eq!(emitted, 0, "nothing shown for carol");
    // Alice still may: bob sees her; a notice naming another space is dropped.
    let alice = net.user(0);
    net.cmd(1, |m, now, _| {
        m.take_channel_typing(now, alice, SpaceId::from_bytes([1; 32]), general, true);
        m.take_channel_typing(now, alice, space, general, true);
    });
    let mut seen = Vec::new();
    while let Some(o) = net.nodes[1].machine.poll_output() {
        if let Output::Event(Event::Typing {
            user,
            active,
            channel,
        }) = o
        {
            seen.push((user, active, channel));
        }
    }
    assert_eq!(seen, vec![(alice, true, Some(general))]);
}

#[test]
fn a_member_who_floods_typing_notices_is_rate_limited() {
    let (mut net, space, general) = three_in_a_space();
    let alice = net.user(0);
    let mut shown = 0;
    for k in 0..100u64 {
        // Alternate start and stop so each notice would change the indicator.
        net.cmd(1, |m, now, _| {
            m.take_channel_typing(now, alice, space, general, k % 2 == 0)
        });
        while let Some(o) = net.nodes[1].machine.poll_output() {
            if matches!(o, Output::Event(Event::Typing { .. })) {
                shown += 1;
            }
        }
    }
    assert!(
        shown <= 10,
        "a burst of 10, then nothing within the same instant: {shown}"
    );
    assert!(shown > 0);
}

/// A file in a channel (machine/transfers.rs): the manifest reaches every reader inside
/// Megolm as a `file` message with an incoming transfer; a reader whose download completes
/// says `file_have` to the others, and the sender's upload is then delivered.
#[test]
fn a_file_in_a_channel_reaches_every_reader_and_a_holder_says_so() {
    use crate::store::{SourceFile, TransferDirection, TransferState};
    use dopus_proto::transfer::{FILE_FORMAT_VERSION, FileKey, FileManifest, FileNonce, PlainHash};
    use dopus_types::BlobHash;
    let (mut net, _space, general) = three_in_a_space();
    let manifest = FileManifest {
        version: FILE_FORMAT_VERSION,
        blob: BlobHash::from_bytes([4; 32]),
        size: 3 << 20,
        key: FileKey([7; 32]),
        nonce: FileNonce([8; 12]),
        name: "minutes.pdf".into(),
        mime: "application/pdf".into(),
        plain_blake3: PlainHash([9; 32]),
        dimensions: None,
        duration_ms: None,
        thumbnail: None,
    };
    let source = SourceFile {
        path: "/tmp/minutes.pdf".into(),
        size: 3 << 20,
        modified_ns: 1,
        inode: 2,
    };
    let (msg, sent) = net
        .cmd(0, |m, now, s| {
            m.channel_send_file(now, s, general, manifest.clone(), source, None)
        })
        .expect("send a file in the channel");
    assert_eq!(sent.conversation, ConversationId::Channel(general));
    assert_eq!(sent.state, TransferState::Queued);
    net.settle(500);
    for i in [1, 2] {
        let got = net.nodes[i]
            .store
            .transfer(&sent.id)
            .expect("store")
            .expect("the transfer reached the reader");
        assert_eq!(got.direction, TransferDirection::Incoming);
        assert_eq!(got.conversation, ConversationId::Channel(general));
        assert_eq!(got.manifest.blob, manifest.blob);
        assert_eq!(got.message, Some(msg.id));
        assert_eq!(net.texts(i, general), vec!["minutes.pdf".to_owned()]);
    }
    // Not delivered before a reader holds it.
    let before = net.nodes[0].store.transfer(&sent.id).unwrap().unwrap();
    assert_eq!(before.state, TransferState::Queued);
    // Bob's file task finished the download: he says so, and alice's upload is delivered.
    net.nodes[1]
        .store
        .apply_one(Change::SetTransferState {
            id: sent.id,
            state: TransferState::Done,
            reason: None,
            at: Timestamp(T0),
        })
        .unwrap();
    net.nodes[1]
        .inputs
        .push(Input::DownloadDone { id: sent.id });
    net.settle(500);
    let after = net.nodes[0].store.transfer(&sent.id).unwrap().unwrap();
    assert_eq!(after.state, TransferState::Done);
}

/// The name node `i` shows for `user` in `space` (from the members' `profile` ops).
fn member_name(net: &Net, i: usize, space: &SpaceId, user: &UserId) -> Option<String> {
    net.nodes[i]
        .machine
        .space(space)?
        .member(user)?
        .display_name()
        .map(str::to_owned)
}

#[test]
fn members_publish_their_names_to_the_space_and_renames_follow() {
    let (mut net, space, _) = three_in_a_space();
    // Each node names itself after joining; every replica shows every name.
    for i in 0..3 {
        for j in 0..3 {
            let user = net.user(j);
            assert_eq!(
                member_name(&net, i, &space, &user),
                Some(format!("node{j}")),
                "node {i} on node {j}"
            );
        }
    }
    // Carol renames herself while bob is away; bob learns it when back (anti-entropy).
    net.offline(1);
    net.cmd(2, |m, now, s| {
        m.set_profile(
            now,
            s,
            crate::machine::ProfilePatch {
                display_name: Some("  Carol\u{7} the Great  ".into()),
                ..Default::default()
            },
        )
    })
    .expect("rename");
    net.settle(500);
    let carol = net.user(2);
    assert_eq!(
        member_name(&net, 0, &space, &carol).as_deref(),
        Some("Carol the Great"),
        "control characters dropped"
    );
    net.online(1);
    net.settle(500);
    assert_eq!(
        member_name(&net, 1, &space, &carol).as_deref(),
        Some("Carol the Great")
    );
    // Nothing more is written once the names agree.
    let ops = net.nodes[0].store.space_ops(&space).expect("ops").len();
    net.now += 60_000;
    net.settle(100);
    assert_eq!(
        net.nodes[0].store.space_ops(&space).expect("ops").len(),
        ops
    );
}

/// The holders a reader learnt from `file_have` are kept in its store: restarted in the
/// middle of its download, it still connects to every holder (not only the member who
/// announced the file).
#[test]
fn holders_learnt_from_file_have_survive_a_restart_of_the_downloader() {
    use crate::store::{SourceFile, TransferState};
    use dopus_proto::transfer::{FILE_FORMAT_VERSION, FileKey, FileManifest, FileNonce, PlainHash};
    use dopus_types::BlobHash;
    let (mut net, _space, general) = three_in_a_space();
    let blob = BlobHash::from_bytes([5; 32]);
    let manifest = FileManifest {
        version: FILE_FORMAT_VERSION,
        blob,
        size: 1 << 20,
        key: FileKey([7; 32]),
        nonce: FileNonce([8; 12]),
        name: "plan.odt".into(),
        mime: "application/octet-stream".into(),
        plain_blake3: PlainHash([9; 32]),
        dimensions: None,
        duration_ms: None,
        thumbnail: None,
    };
    let source = SourceFile {
        path: "/tmp/plan.odt".into(),
        size: 1 << 20,
        modified_ns: 1,
        inode: 2,
    };
    let (_, sent) = net
        .cmd(0, |m, now, s| {
            m.channel_send_file(now, s, general, manifest, source, None)
        })
        .expect("send a file in the channel");
    net.settle(500);
    assert!(net.nodes[2].store.blob_holders(&blob).unwrap().is_empty());
    // Bob completes his download and says so; carol's is still under way.
    net.nodes[1]
        .store
        .apply_one(Change::SetTransferState {
            id: sent.id,
            state: TransferState::Done,
            reason: None,
            at: Timestamp(T0),
        })
        .unwrap();
    net.nodes[1]
        .inputs
        .push(Input::DownloadDone { id: sent.id });
    net.settle(500);
    let bob = net.user(1);
    let alice = net.user(0);
    assert_eq!(net.nodes[2].store.blob_holders(&blob).unwrap(), vec![bob]);
    let carol_t = net.nodes[2].store.transfer(&sent.id).unwrap().unwrap();
    assert!(!carol_t.state.is_final());

    net.restart(2);
    net.settle(500);
    let peers = &net.nodes[2].machine.transfer_peers;
    assert!(peers.contains(&bob), "the holder from before the restart");
    assert!(peers.contains(&alice), "the member who announced it");
}

/// Holder rows are pruned: a holder that sent a bad chunk group is forgotten (stored and in
/// memory), the rows of a blob go when its download is cancelled, bob's own rows when his
/// download completes, and rows older than the age bound go with `PruneBlobHolders`.
#[test]
fn holder_rows_are_pruned_for_a_liar_a_cancel_a_completed_download_and_by_age() {
    use crate::machine::TransferAction;
    use crate::store::{SourceFile, TransferState};
    use dopus_proto::transfer::{FILE_FORMAT_VERSION, FileKey, FileManifest, FileNonce, PlainHash};
    use dopus_types::BlobHash;
    let (mut net, _space, general) = three_in_a_space();
    let blob = BlobHash::from_bytes([6; 32]);
    let manifest = FileManifest {
        version: FILE_FORMAT_VERSION,
        blob,
        size: 1 << 20,
        key: FileKey([7; 32]),
        nonce: FileNonce([8; 12]),
        name: "plan.odt".into(),
        mime: "application/octet-stream".into(),
        plain_blake3: PlainHash([9; 32]),
        dimensions: None,
        duration_ms: None,
        thumbnail: None,
    };
    let source = SourceFile {
        path: "/tmp/plan.odt".into(),
        size: 1 << 20,
        modified_ns: 1,
        inode: 2,
    };
    let (_, sent) = net
        .cmd(0, |m, now, s| {
            m.channel_send_file(now, s, general, manifest, source, None)
        })
        .expect("send a file in the channel");
    net.settle(500);
    let (alice, bob, carol) = (net.user(0), net.user(1), net.user(2));
    // Bob is a holder of a file carol is still fetching (and carol of one bob is fetching:
    // rows a download of his own keeps until it ends).
    for (i, who) in [(2, bob), (1, carol)] {
        net.nodes[i]
            .store
            .apply_one(Change::AddBlobHolder {
                blob,
                user: who,
                at: Timestamp(T0),
            })
            .unwrap();
    }
    net.restart(2);
    net.settle(500);
    assert!(net.nodes[2].machine.transfer_peers.contains(&bob));

    // Bob lies to carol: forgotten, stored and in memory; alice (who announced it) stays.
    net.cmd(2, |m, _, s| m.drop_blob_holder(s, blob, bob))
        .unwrap();
    assert!(net.nodes[2].store.blob_holders(&blob).unwrap().is_empty());
    net.settle(500);
    let peers = &net.nodes[2].machine.transfer_peers;
    assert!(!peers.contains(&bob), "the liar is not asked again");
    assert!(peers.contains(&alice));

    // Carol cancels her download: no row of the blob is left.
    net.nodes[2]
        .store
        .apply_one(Change::AddBlobHolder {
            blob,
            user: bob,
            at: Timestamp(T0),
        })
        .unwrap();
    net.cmd(2, |m, now, s| {
        m.transfer_action(now, s, sent.id, TransferAction::Cancel)
    })
    .expect("cancel");
    assert!(net.nodes[2].store.blob_holders(&blob).unwrap().is_empty());

    // Bob's download completes: the holders he knew are no longer needed.
    assert_eq!(net.nodes[1].store.blob_holders(&blob).unwrap(), vec![carol]);
    net.nodes[1]
        .store
        .apply_one(Change::SetTransferState {
            id: sent.id,
            state: TransferState::Done,
            reason: None,
            at: Timestamp(T0),
        })
        .unwrap();
    net.nodes[1]
        .inputs
        .push(Input::DownloadDone { id: sent.id });
    net.settle(500);
    assert!(net.nodes[1].store.blob_holders(&blob).unwrap().is_empty());

    // The age bound: a row heard of long ago goes, a recent one stays.
    let other = BlobHash::from_bytes([7; 32]);
    let max_age = crate::transfer::BLOB_HOLDER_MAX_AGE_MS;
    let now = T0 + 2 * max_age;
    for (who, at) in [(alice, T0), (bob, now - max_age / 2)] {
        net.nodes[1]
            .store
            .apply_one(Change::AddBlobHolder {
                blob: other,
                user: who,
                at: Timestamp(at),
            })
            .unwrap();
    }
    net.nodes[1]
        .store
        .apply_one(Change::PruneBlobHolders {
            before: Timestamp(now - max_age),
        })
        .unwrap();
    assert_eq!(net.nodes[1].store.blob_holders(&other).unwrap(), vec![bob]);
}

/// History from members other than the admitter: bob, who admits dave, has lost every key and
/// ciphertext of the space (restored from an old copy, say), so his bundle is empty; dave asks
/// two other members, who hold the history, and reads everything said before he joined, once
/// each, in order.
#[test]
fn a_newcomer_whose_admitter_kept_nothing_gets_the_history_from_other_members() {
    let mut net = Net::new(4);
    net.settle(50);
    let space = net
        .cmd(0, |m, now, s| m.create_space(now, s, "Archive"))
        .expect("create");
    let general = net.general(0, &space);
    net.cmd(0, |m, now, s| {
        m.space_op(
            now,
            s,
            space,
            OpBody::Update {
                name: None,
                description: None,
                share_history: Some(true),
            },
        )
    })
    .expect("share history");
    join(&mut net, space, 0, 1);
    join(&mut net, space, 0, 2);
    say(&mut net, 0, general, "a1");
    say(&mut net, 2, general, "c1");
    say(&mut net, 0, general, "a2");
    let said = vec!["a1".to_owned(), "c1".to_owned(), "a2".to_owned()];
    assert_eq!(net.texts(1, general), said);
    // Bob loses his keys and kept ciphertexts (his messages stay).
    net.lose_sessions(1, space);
    assert!(
        net.nodes[1]
            .store
            .megolm_inbound_for_channel(&general)
            .expect("sessions")
            .is_empty()
    );
    assert!(
        net.nodes[1]
            .store
            .channel_ciphertexts(&general, 100)
            .expect("kept")
            .is_empty(),
        "bob has nothing to hand on"
    );
    // Bob's invite names no other admitter, so bob alone admits dave.
    let code = net
        .cmd(1, |m, now, s| m.space_invite(now, s, space, Some(1), None))
        .expect("invite");
    let mut parsed = InviteCode::parse(&code).expect("code");
    parsed.admitters.clear();
    let code = parsed.to_text().expect("code");
    net.cmd(3, |m, now, s| m.join_space(now, s, &code))
        .expect("join");
    net.settle(1000);
    let state = net.nodes[3].machine.space(&space).expect("joined");
    assert_eq!(
        state.member(&net.user(3)).map(|m| m.admitted_by),
        Some(net.user(1)),
        "bob admitted dave"
    );
    assert_eq!(
        net.texts(3, general),
        said,
        "from alice and carol, once each"
    );
    assert!(net.waiting(3, general).is_empty());
    // A history request from someone who is not a member is not answered.
    let relayed = net.relayed[3];
    let dave = net.user(3);
    net.cmd(0, |m, now, s| {
        m.space_op(now, s, space, OpBody::Kick { user: dave })
    })
    .expect("kick");
    net.settle(500);
    let after_kick = net.relayed[3];
    net.cmd(3, |m, now, _| m.ask_more_history(now, space));
    net.settle(500);
    assert_eq!(
        net.relayed[3], after_kick,
        "a removed member asking gets nothing"
    );
    assert!(after_kick >= relayed);
}

/// A file's id is reserved before it is prepared: a target that cannot take files is refused
/// at once (a channel we do not know), and the reserved id becomes the transfer's and the
/// message's.
#[test]
fn a_file_id_is_reserved_only_for_a_target_that_can_take_files() {
    use crate::machine::FileTarget;
    use crate::store::SourceFile;
    use dopus_proto::transfer::{FILE_FORMAT_VERSION, FileKey, FileManifest, FileNonce, PlainHash};
    use dopus_types::BlobHash;
    let (mut net, _space, general) = three_in_a_space();
    let unknown = ChannelId::from_bytes([7; 16]);
    let err = net
        .cmd(0, |m, now, s| {
            m.reserve_file_id(now, s, FileTarget::Channel(unknown))
        })
        .expect_err("an unknown channel");
    assert!(
        matches!(err, crate::machine::CommandError::UnknownChannel),
        "{err}"
    );
    let id = net
        .cmd(0, |m, now, s| {
            m.reserve_file_id(now, s, FileTarget::Channel(general))
        })
        .expect("general takes files");
    let manifest = FileManifest {
        version: FILE_FORMAT_VERSION,
        blob: BlobHash::from_bytes([6; 32]),
        size: 10,
        key: FileKey([1; 32]),
        nonce: FileNonce([2; 12]),
        name: "a.txt".into(),
        mime: "text/plain".into(),
        plain_blake3: PlainHash([3; 32]),
        dimensions: None,
        duration_ms: None,
        thumbnail: None,
    };
    let source = SourceFile {
        path: "/tmp/a.txt".into(),
        size: 10,
        modified_ns: 1,
        inode: 2,
    };
    let (msg, t) = net
        .cmd(0, |m, now, s| {
            m.channel_send_file_as(now, s, id, general, manifest, source, None)
        })
        .expect("announced under the reserved id");
    assert_eq!(msg.id, id);
    assert_eq!(t.id.0, id.0);
}
