//! Calls between machines on in-memory stores, over a tiny relaying server and simulated
//! direct connections, in virtual time: ring, accept, decline, busy, timeouts, glare, hang up,
//! the entries in the conversation, and the media negotiation asked of the runtime.

use super::super::test_net::{T0, TestNode, test_node};
use super::super::{
    ConnectionEvent, ConnectionRequest, Delivery, Event, Inbound, Input, Output, SignalingRequest,
    Via,
};
use super::{CallEnd, CallRequest, CallState, RING_TIMEOUT_MS};
use crate::store::{Change, Contact, ContactState, ConversationId, MessageKind, Store};
use dopus_proto::signaling::Status;
use dopus_types::{CallId, Timestamp, UserId};

/// What the call tests record beside the shared node.
#[derive(Default)]
struct Asked {
    /// What the machine asked of connections (media only) and of the call runtime.
    media: Vec<&'static str>,
    calls: Vec<CallRequest>,
    /// The connection this node offered (peer, attempt).
    offered: Option<(UserId, String)>,
    /// Media answers this node makes that are lost on the way (the next n).
    lose_media_answers: usize,
}

type Node = TestNode<Asked>;

fn node(i: u64) -> Node {
    test_node(i, Asked::default())
}

struct Net {
    nodes: Vec<Node>,
    now: u64,
}

impl Net {
    /// `n` nodes, all contacts of each other and online.
    fn new(n: u64) -> Self {
        let mut nodes: Vec<Node> = (0..n).map(node).collect();
        let users: Vec<UserId> = nodes.iter().map(|n| n.addr.user).collect();
        for node in &mut nodes {
            for &u in &users {
                if u == node.addr.user {
                    continue;
                }
                node.store
                    .apply_one(Change::SaveContact(Contact {
                        user_id: u,
                        display_name: None,
                        verified: false,
                        blocked: false,
                        state: ContactState::Accepted,
                        request_note: None,
                        created_at: Timestamp(T0),
                        updated_at: Timestamp(T0),
                    }))
                    .expect("contact");
                node.inputs.push(Input::Presence {
                    user: u,
                    status: Status::Online,
                });
            }
        }
        let mut net = Self { nodes, now: T0 };
        net.settle(200);
        net
    }

    fn user(&self, i: usize) -> UserId {
        self.nodes[i].addr.user
    }

    fn ts(&self) -> Timestamp {
        Timestamp(self.now)
    }

    fn by_user(&self, user: &UserId) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr.user == *user)
    }

    fn round(&mut self) -> bool {
        let now = self.ts();
        let mut busy = false;
        for i in 0..self.nodes.len() {
            let (moved, outputs) = self.nodes[i].step(now);
            busy |= moved;
            for o in outputs {
                self.perform(i, o);
            }
        }
        busy
    }

    fn conn_input(&mut self, at: usize, peer: UserId, conn: String, event: ConnectionEvent) {
        self.nodes[at]
            .inputs
            .push(Input::Connection { peer, conn, event });
    }

    fn perform(&mut self, from: usize, output: Output) {
        match output {
            Output::Transmit(t) => {
                let to = self.by_user(&t.peer).expect("known peer");
                let mut outcome = Vec::new();
                for env in &t.envelopes {
                    let sender = self.nodes[from].addr.clone();
                    self.nodes[to].inbox.push(Inbound {
                        bytes: env.bytes.clone(),
                        via: Via::Relay { from: sender },
                    });
                    outcome.push(Delivery::Sent);
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
            // A simulated connection: SDP is a placeholder, the channel opens once answered.
            Output::Connection(req) => match req {
                ConnectionRequest::Offer { peer, conn } => {
                    self.nodes[from].x.offered = Some((peer, conn.clone()));
                    self.conn_input(
                        from,
                        peer,
                        conn,
                        ConnectionEvent::Offered { sdp: "o".into() },
                    );
                }
                ConnectionRequest::Answer { peer, conn, .. } => {
                    self.conn_input(
                        from,
                        peer,
                        conn.clone(),
                        ConnectionEvent::Answered { sdp: "a".into() },
                    );
                    self.conn_input(from, peer, conn, ConnectionEvent::Open);
                }
                ConnectionRequest::AcceptAnswer { peer, conn, .. } => {
                    self.conn_input(from, peer, conn, ConnectionEvent::Open);
                }
                ConnectionRequest::AddAudio { peer, conn } => {
                    self.nodes[from].x.media.push("add_audio");
                    self.conn_input(
                        from,
                        peer,
                        conn,
                        ConnectionEvent::MediaOffered { sdp: "mo".into() },
                    );
                }
                ConnectionRequest::AcceptMediaOffer { peer, conn, sdp } => {
                    assert_eq!(sdp, "mo");
                    self.nodes[from].x.media.push("accept_media_offer");
                    if self.nodes[from].x.lose_media_answers > 0 {
                        self.nodes[from].x.lose_media_answers -= 1;
                        return;
                    }
                    self.conn_input(
                        from,
                        peer,
                        conn,
                        ConnectionEvent::MediaAnswered { sdp: "ma".into() },
                    );
                }
                ConnectionRequest::AcceptMediaAnswer { sdp, .. } => {
                    assert_eq!(sdp, "ma");
                    self.nodes[from].x.media.push("accept_media_answer");
                }
                ConnectionRequest::AcceptRestartOffer { peer, conn, sdp } => {
                    assert_eq!(sdp, "ro");
                    self.nodes[from].x.media.push("accept_restart_offer");
                    self.conn_input(
                        from,
                        peer,
                        conn,
                        ConnectionEvent::RestartAnswered { sdp: "ra".into() },
                    );
                }
                ConnectionRequest::AcceptRestartAnswer { sdp, .. } => {
                    assert_eq!(sdp, "ra");
                    self.nodes[from].x.media.push("accept_restart_answer");
                }
                ConnectionRequest::AddCandidate { .. } | ConnectionRequest::Close { .. } => {}
            },
            Output::Call(c) => self.nodes[from].x.calls.push(c),
            Output::Voice(_) => {}
            Output::Signaling(_) | Output::Transfer(_) => {}
            Output::Event(e) => self.nodes[from].events.push(e),
        }
    }

    /// Runs rounds 10 ms apart until nothing moves (at most `max`); never jumps timers.
    fn settle(&mut self, max: usize) {
        let mut quiet = 0;
        for _ in 0..max {
            let busy = self.round();
            self.now += 10;
            quiet = if busy { 0 } else { quiet + 1 };
            if quiet > 3 {
                return;
            }
        }
    }

    /// Lets `ms` of virtual time pass (timers fire), then settles.
    fn wait(&mut self, ms: u64) {
        self.now += ms;
        self.settle(200);
    }

    fn current(&self, i: usize) -> Option<(CallId, CallState)> {
        self.nodes[i]
            .machine
            .current_call()
            .map(|c| (c.id, c.state))
    }

    fn last(&self, i: usize, id: &CallId) -> super::CallView {
        self.nodes[i].machine.call(id).expect("call known")
    }

    /// The system entries of the conversation of node `i` with node `j`, oldest first.
    fn entries(&self, i: usize, j: usize) -> Vec<String> {
        let mut m = self.nodes[i]
            .store
            .messages_before(&ConversationId::Direct(self.user(j)), None, 100)
            .expect("messages");
        m.reverse();
        m.into_iter()
            .filter(|m| m.kind == MessageKind::System)
            .map(|m| m.body)
            .collect()
    }
}

#[test]
fn ring_accept_media_then_hang_up_with_the_duration() {
    let mut net = Net::new(2);
    let b = net.user(1);
    let now = net.ts();
    let call = {
        let n = &mut net.nodes[0];
        n.machine.start_call(now, b, &mut n.store).expect("call").id
    };
    net.settle(200);
    assert_eq!(net.current(0), Some((call, CallState::Ringing)));
    assert_eq!(net.current(1), Some((call, CallState::Ringing)));
    assert!(!net.last(1, &call).outgoing);
    // Busy with a ringing call: a second one is refused.
    let now = net.ts();
    {
        let n = &mut net.nodes[0];
        assert!(n.machine.start_call(now, b, &mut n.store).is_err());
    }

    let now = net.ts();
    net.nodes[1]
        .machine
        .accept_call(now, &call)
        .expect("accept");
    net.settle(200);
    assert_eq!(net.current(0), Some((call, CallState::Active)));
    assert_eq!(net.current(1), Some((call, CallState::Active)));
    // The caller adds audio, the callee answers, the caller applies the answer.
    assert_eq!(net.nodes[0].x.media, ["add_audio", "accept_media_answer"]);
    assert_eq!(net.nodes[1].x.media, ["accept_media_offer"]);
    for i in 0..2 {
        let peer = net.user(1 - i);
        assert_eq!(net.nodes[i].x.calls, [CallRequest::Start { call, peer }]);
    }

    net.wait(65_000);
    let now = net.ts();
    {
        let n = &mut net.nodes[1];
        n.machine
            .hang_up(now, &call, &mut n.store)
            .expect("hang up");
    }
    net.settle(200);
    for i in 0..2 {
        let v = net.last(i, &call);
        assert_eq!(v.state, CallState::Ended);
        assert_eq!(v.end, Some(CallEnd::Completed));
        assert_eq!(v.ended_by_me, i == 1);
        assert_eq!(net.entries(i, 1 - i), ["Call ended · 1:05"], "node {i}");
        assert!(matches!(
            net.nodes[i].x.calls.last(),
            Some(CallRequest::Stop { .. })
        ));
        assert_eq!(net.current(i), None);
    }
    // No second negotiation for a second call on the same connection.
    let now = net.ts();
    let a = net.user(0);
    let second = {
        let n = &mut net.nodes[1];
        n.machine.start_call(now, a, &mut n.store).expect("call").id
    };
    net.settle(200);
    let now = net.ts();
    net.nodes[0]
        .machine
        .accept_call(now, &second)
        .expect("accept");
    net.settle(200);
    assert_eq!(net.current(1), Some((second, CallState::Active)));
    assert_eq!(net.nodes[1].x.media, ["accept_media_offer"]);
    assert_eq!(net.nodes[0].x.media, ["add_audio", "accept_media_answer"]);
}

#[test]
fn a_lost_media_answer_is_recovered_on_a_new_connection() {
    let mut net = Net::new(2);
    let b = net.user(1);
    net.nodes[1].x.lose_media_answers = 1;
    let now = net.ts();
    let call = {
        let n = &mut net.nodes[0];
        n.machine.start_call(now, b, &mut n.store).expect("call").id
    };
    net.settle(200);
    let now = net.ts();
    net.nodes[1]
        .machine
        .accept_call(now, &call)
        .expect("accept");
    net.settle(200);
    assert_eq!(net.nodes[0].x.media, ["add_audio"], "the answer never came");
    let first = net.nodes[0].x.offered.clone().expect("a connection");
    // Without an answer the caller gives the connection up and negotiates on a new one.
    net.wait(super::super::links::MEDIA_OFFER_TIMEOUT_MS);
    net.settle(200);
    let second = net.nodes[0].x.offered.clone().expect("a connection");
    assert_ne!(first.1, second.1, "a new connection was made");
    assert_eq!(
        net.nodes[0].x.media,
        ["add_audio", "add_audio", "accept_media_answer"]
    );
    assert_eq!(
        net.nodes[1].x.media,
        ["accept_media_offer", "accept_media_offer"]
    );
    assert_eq!(net.current(0), Some((call, CallState::Active)));
    assert_eq!(net.current(1), Some((call, CallState::Active)));
}

#[test]
fn nobody_answers_within_the_timeout_a_missed_call() {
    let mut net = Net::new(2);
    let b = net.user(1);
    let now = net.ts();
    let call = {
        let n = &mut net.nodes[0];
        n.machine.start_call(now, b, &mut n.store).expect("call").id
    };
    net.settle(200);
    net.wait(RING_TIMEOUT_MS - 1_000);
    assert_eq!(net.current(1), Some((call, CallState::Ringing)));
    net.wait(2_000);
    assert_eq!(net.last(0, &call).end, Some(CallEnd::NoAnswer));
    assert_eq!(net.last(1, &call).end, Some(CallEnd::Missed));
    assert_eq!(net.entries(0, 1), ["No answer"]);
    assert_eq!(net.entries(1, 0), ["Missed call"]);
    // Nothing was negotiated and no media was started.
    assert!(net.nodes[0].x.calls.is_empty() && net.nodes[1].x.calls.is_empty());
    // Accepting afterwards is refused with a reason.
    let now = net.ts();
    assert!(net.nodes[1].machine.accept_call(now, &call).is_err());
}

#[test]
fn declined_and_cancelled_calls() {
    let mut net = Net::new(2);
    let b = net.user(1);
    let now = net.ts();
    let call = {
        let n = &mut net.nodes[0];
        n.machine.start_call(now, b, &mut n.store).expect("call").id
    };
    net.settle(200);
    let now = net.ts();
    {
        let n = &mut net.nodes[1];
        n.machine
            .decline_call(now, &call, &mut n.store)
            .expect("decline");
    }
    net.settle(200);
    assert_eq!(net.last(0, &call).end, Some(CallEnd::Declined));
    assert_eq!(net.entries(0, 1), ["Call declined"]);
    assert_eq!(net.entries(1, 0), ["Declined call"]);

    let now = net.ts();
    let call = {
        let n = &mut net.nodes[0];
        n.machine.start_call(now, b, &mut n.store).expect("call").id
    };
    net.settle(200);
    net.wait(3_000);
    let now = net.ts();
    {
        let n = &mut net.nodes[0];
        n.machine.hang_up(now, &call, &mut n.store).expect("cancel");
    }
    net.settle(200);
    assert_eq!(net.last(0, &call).end, Some(CallEnd::Cancelled));
    assert_eq!(net.last(1, &call).end, Some(CallEnd::Missed));
    assert_eq!(net.entries(0, 1), ["Call declined", "Cancelled call"]);
    assert_eq!(net.entries(1, 0), ["Declined call", "Missed call"]);
}

#[test]
fn a_third_caller_gets_busy_and_the_call_goes_on() {
    let mut net = Net::new(3);
    let (b, c) = (net.user(1), net.nodes[2].addr.user);
    let now = net.ts();
    let call = {
        let n = &mut net.nodes[0];
        n.machine.start_call(now, b, &mut n.store).expect("call").id
    };
    net.settle(200);
    let now = net.ts();
    net.nodes[1]
        .machine
        .accept_call(now, &call)
        .expect("accept");
    net.settle(200);
    let now = net.ts();
    let other = {
        let n = &mut net.nodes[2];
        n.machine.start_call(now, b, &mut n.store).expect("call").id
    };
    net.settle(200);
    assert_eq!(net.last(2, &other).end, Some(CallEnd::Busy));
    assert_eq!(net.entries(2, 1), ["Busy: they were in another call"]);
    assert_eq!(
        net.entries(1, 2),
        ["Missed call (you were in another call)"]
    );
    assert_eq!(net.current(1), Some((call, CallState::Active)));
    assert_eq!(net.current(0), Some((call, CallState::Active)));
    let _ = c;
}

#[test]
fn glare_both_call_each_other_at_once_one_call_survives_active() {
    let mut net = Net::new(2);
    let (a, b) = (net.user(0), net.user(1));
    let now = net.ts();
    let ca = {
        let n = &mut net.nodes[0];
        n.machine.start_call(now, b, &mut n.store).expect("call").id
    };
    let cb = {
        let n = &mut net.nodes[1];
        n.machine.start_call(now, a, &mut n.store).expect("call").id
    };
    net.settle(300);
    let winner = if a < b { ca } else { cb };
    assert_eq!(net.current(0), Some((winner, CallState::Active)));
    assert_eq!(net.current(1), Some((winner, CallState::Active)));
    // The losing call left no entry and no ended call on either side.
    for i in 0..2 {
        assert!(
            net.entries(i, 1 - i).is_empty(),
            "{:?}",
            net.entries(i, 1 - i)
        );
    }
    // Media negotiated once, by the surviving call's caller.
    let caller = if a < b { 0 } else { 1 };
    assert_eq!(
        net.nodes[caller].x.media,
        ["add_audio", "accept_media_answer"]
    );
    assert_eq!(net.nodes[1 - caller].x.media, ["accept_media_offer"]);
    assert!(
        net.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::Call(_)))
    );
}

/// The connection lost its path and its runtime made an ICE restart offer: it travels inside
/// Olm to the peer, whose runtime is asked to answer it on the same connection; the answer
/// travels back and is applied; the call goes on. A restart for another attempt is dropped.
#[test]
fn an_ice_restart_travels_inside_olm_and_the_call_goes_on() {
    let mut net = Net::new(2);
    let b = net.user(1);
    let now = net.ts();
    let call = {
        let n = &mut net.nodes[0];
        n.machine.start_call(now, b, &mut n.store).expect("call").id
    };
    net.settle(200);
    let now = net.ts();
    net.nodes[1]
        .machine
        .accept_call(now, &call)
        .expect("accept");
    net.settle(200);
    assert_eq!(net.current(0), Some((call, CallState::Active)));
    let offerer = (0..2)
        .find(|&i| net.nodes[i].x.offered.is_some())
        .expect("a connection was offered");
    let other = 1 - offerer;
    let (peer, conn) = net.nodes[offerer].x.offered.clone().expect("offered");
    let before = (
        net.nodes[offerer].x.media.len(),
        net.nodes[other].x.media.len(),
    );
    net.conn_input(
        offerer,
        peer,
        conn,
        ConnectionEvent::RestartOffered { sdp: "ro".into() },
    );
    net.settle(200);
    assert_eq!(
        net.nodes[other].x.media[before.1..],
        ["accept_restart_offer"]
    );
    assert_eq!(
        net.nodes[offerer].x.media[before.0..],
        ["accept_restart_answer"]
    );
    // A stale attempt's restart goes nowhere.
    net.conn_input(
        offerer,
        peer,
        "stale-attempt".into(),
        ConnectionEvent::RestartOffered { sdp: "ro".into() },
    );
    net.settle(200);
    assert_eq!(net.nodes[other].x.media.len(), before.1 + 1);
    for i in 0..2 {
        assert_eq!(net.current(i), Some((call, CallState::Active)));
    }
}

#[test]
fn a_media_offer_from_a_peer_not_in_a_call_is_refused() {
    let mut net = Net::new(2);
    let a = net.user(0);
    // Open a connection between them (a call rings, then is cancelled).
    let now = net.ts();
    let call = {
        let n = &mut net.nodes[1];
        n.machine.start_call(now, a, &mut n.store).expect("call").id
    };
    net.settle(200);
    let now = net.ts();
    {
        let n = &mut net.nodes[1];
        n.machine.hang_up(now, &call, &mut n.store).expect("cancel");
    }
    net.settle(200);
    let conn = net.nodes[0]
        .machine
        .links
        .get(&net.user(1))
        .expect("link")
        .conn
        .clone();
    let now = net.ts();
    let b = net.user(1);
    {
        let n = &mut net.nodes[0];
        n.machine
            .on_signal(
                now,
                b,
                dopus_proto::peer::RtcContent::Rtc {
                    conn,
                    signal: dopus_proto::peer::RtcSignal::MediaOffer { sdp: "mo".into() },
                },
                &mut n.store,
            )
            .expect("signal");
    }
    net.settle(50);
    assert!(net.nodes[0].x.media.is_empty());
    assert!(
        net.nodes[0]
            .machine
            .calls
            .last_refusal
            .as_deref()
            .is_some_and(|w| w.contains("not in a call")),
        "{:?}",
        net.nodes[0].machine.calls.last_refusal
    );
}
