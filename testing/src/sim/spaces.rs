//! Spaces in the simulated network (issue 15's checks): one space, created by node 0, that the
//! other nodes join with invites from any member, where members talk in `#general`, the owner
//! makes a moderator role and hands it out, moderators and the owner kick, and the space and
//! channels are renamed, all under the network's faults (delay, reordering, loss, crashes,
//! nodes cut from the server, partitions between pairs).
//!
//! Invariants checked at the end ([`Sim::check_spaces`]):
//! - every member holds the same ops and resolves them to the same state; every node that was
//!   removed knows it is out;
//! - every channel message reaches every reader it was sent to (the sender's audience when it
//!   was sent) who is still a member, with its sender, exactly once (a second `MessageAdded`
//!   fails the run at once);
//! - nobody holds a channel message that was not sent to them, and nobody holds the key to
//!   read a message that was not sent to them (a removed member gets no key after its removal:
//!   the session it would need is absent, or known only from a later index);
//! - no node holds a channel message nobody sent;
//! - every node shows each channel in send order, the same order on every replica (late
//!   arrivals from the mailbox, gap backfill or history sort where they were sent).

use super::{Action, Cmd, CrashMode, Faults, PLAINTEXT_MARKER, Rng, Sim};
use dopus_core::machine::{CommandError, NodeMachine};
use dopus_core::store::{ConversationId, MemoryStore, MessageId, Store};
use dopus_proto::space::{ChannelKind, OpBody, Permissions, RoleId, derive_role_id};
use dopus_types::{ChannelId, SpaceId, Timestamp, UserId};
use std::collections::{BTreeMap, BTreeSet};

/// The moderator role's name (also how a node finds it).
const MOD_ROLE: &str = "mods";

/// What a space command tells the simulation.
#[derive(Debug)]
pub(super) enum Note {
    /// Run `cmd` on `node` after `delay_ms`.
    Follow {
        /// Which node.
        node: usize,
        /// When.
        delay_ms: u64,
        /// What.
        cmd: Cmd,
    },
    /// A channel message left (committed with the session and index that encrypt it).
    Sent {
        /// The message.
        id: MessageId,
        /// Its channel.
        channel: ChannelId,
        /// The Megolm session.
        session: String,
        /// Its index in the session.
        index: u32,
        /// The sender's audience when it was sent (the sender apart).
        audience: Vec<UserId>,
    },
}

/// What the oracle knows about one channel message.
#[derive(Debug, Clone)]
pub(super) struct ChannelSent {
    from: usize,
    channel: ChannelId,
    session: String,
    index: u32,
    audience: BTreeSet<UserId>,
    at: u64,
}

/// The oracle's record of the space.
#[derive(Debug, Default)]
pub(super) struct SpaceOracle {
    sent: BTreeMap<MessageId, ChannelSent>,
    /// When each channel message was last shown by a receiver (virtual ms), and by how many.
    shown: BTreeMap<MessageId, (u64, usize)>,
}

/// The one space `m` is a member of.
fn my_space(m: &NodeMachine) -> Option<SpaceId> {
    let me = m.me();
    m.spaces()
        .find(|(_, s)| s.is_member(&me))
        .map(|(id, _)| *id)
}

/// `#general` (the simulation never renames or deletes it; only its topic changes).
fn general_channel(m: &NodeMachine, space: &SpaceId) -> Option<ChannelId> {
    let state = m.space(space)?;
    state
        .channel_list()
        .into_iter()
        .filter(|c| c.kind == ChannelKind::Text && c.name.get() == "general")
        .map(|c| c.id)
        .min()
}

fn mod_role(m: &NodeMachine, space: &SpaceId) -> Option<RoleId> {
    m.space(space)?
        .roles()
        .into_iter()
        .filter(|r| r.name.get() == MOD_ROLE)
        .map(|r| r.id)
        .min()
}

/// Runs one space command. User errors (not a member, no permission, already a member, …)
/// are not failures: the command simply does nothing.
pub(super) fn run_cmd(
    m: &mut NodeMachine,
    store: &mut MemoryStore,
    rng: &mut Rng,
    now: Timestamp,
    peers: &[UserId],
    cmd: Cmd,
    notes: &mut Vec<Note>,
) -> Result<(), String> {
    let user_error = |r: Result<(), CommandError>| match r {
        Ok(())
        | Err(
            CommandError::Space(_)
            | CommandError::UnknownSpace
            | CommandError::UnknownChannel
            | CommandError::Chat(_),
        ) => Ok(()),
        Err(e) => Err(format!("space command: {e}")),
    };
    let space = my_space(m);
    match cmd {
        Cmd::SpaceCreate => {
            if space.is_some() {
                return Ok(());
            }
            let name = format!("{PLAINTEXT_MARKER} space {:08x}", rng.next_u64() as u32);
            user_error(m.create_space(now, store, &name).map(|_| ()))
        }
        Cmd::SpaceInvite { joiner, tries } => {
            let retry = |notes: &mut Vec<Note>, me: usize| {
                if tries > 0 {
                    notes.push(Note::Follow {
                        node: me,
                        delay_ms: 3_000,
                        cmd: Cmd::SpaceInvite {
                            joiner,
                            tries: tries - 1,
                        },
                    });
                }
            };
            let me = peers.iter().position(|u| *u == m.me()).unwrap_or(0);
            let Some(space) = space else {
                retry(notes, me);
                return Ok(());
            };
            if m.space(&space).is_some_and(|s| s.is_member(&peers[joiner])) {
                return Ok(());
            }
            match m.space_invite(now, store, space, Some(1), None) {
                Ok(code) => {
                    notes.push(Note::Follow {
                        node: joiner,
                        delay_ms: rng.range(50, 2_000),
                        cmd: Cmd::SpaceJoin { code },
                    });
                    Ok(())
                }
                Err(CommandError::Space(_) | CommandError::UnknownSpace) => {
                    retry(notes, me);
                    Ok(())
                }
                Err(e) => Err(format!("space invite: {e}")),
            }
        }
        Cmd::SpaceJoin { code } => user_error(m.join_space(now, store, &code).map(|_| ())),
        Cmd::ChannelSend { count } => {
            let Some(space) = space else { return Ok(()) };
            let Some(channel) = general_channel(m, &space) else {
                return Ok(());
            };
            let audience: Vec<UserId> = m
                .space(&space)
                .map(|s| s.audience(&channel))
                .unwrap_or_default()
                .into_iter()
                .filter(|u| *u != m.me())
                .collect();
            for _ in 0..count {
                let body = format!("{PLAINTEXT_MARKER} chan {:016x}", rng.next_u64());
                match m.channel_send(now, store, channel, body, None) {
                    Ok(msg) => {
                        let out = store
                            .megolm_outbound(&channel)
                            .map_err(|e| format!("megolm outbound: {e}"))?
                            .ok_or("a channel message left without an outbound session")?;
                        let index = u32::try_from(out.message_count.saturating_sub(1))
                            .map_err(|_| "message index")?;
                        notes.push(Note::Sent {
                            id: msg.id,
                            channel,
                            session: out.session_id,
                            index,
                            audience: audience.clone(),
                        });
                    }
                    Err(e) => user_error(Err(e))?,
                }
            }
            Ok(())
        }
        Cmd::SpaceKick { peer } => {
            let Some(space) = space else { return Ok(()) };
            let user = peers[peer];
            let may = m.space(&space).is_some_and(|s| {
                s.is_member(&user)
                    && s.outranks(&m.me(), &user)
                    && s.base_permissions(&m.me()).contains(Permissions::KICK)
            });
            if !may {
                return Ok(());
            }
            user_error(
                m.space_op(now, store, space, OpBody::Kick { user })
                    .map(|_| ()),
            )
        }
        Cmd::SpaceMod { peer, give } => {
            let Some(space) = space else { return Ok(()) };
            let user = peers[peer];
            let role = match mod_role(m, &space) {
                Some(r) => r,
                None => {
                    let body = OpBody::RoleCreate {
                        name: MOD_ROLE.into(),
                        color: 0x3a_a5_5d,
                        position: 1,
                        permissions: Permissions::KICK,
                    };
                    match m.space_op(now, store, space, body) {
                        Ok(op) => derive_role_id(&space, &op),
                        Err(e) => return user_error(Err(e)),
                    }
                }
            };
            let body = if give {
                OpBody::RoleAssign { user, role }
            } else {
                OpBody::RoleRevoke { user, role }
            };
            let ok = m
                .space(&space)
                .is_some_and(|s| s.is_member(&user) && s.check(&m.me(), &body).is_ok());
            if !ok {
                return Ok(());
            }
            user_error(m.space_op(now, store, space, body).map(|_| ()))
        }
        Cmd::SpaceRename => {
            let Some(space) = space else { return Ok(()) };
            let name = format!("{PLAINTEXT_MARKER} renamed {:08x}", rng.next_u64() as u32);
            let body = if rng.chance(500) {
                OpBody::Update {
                    name: Some(name),
                    description: None,
                    share_history: None,
                }
            } else {
                let Some(channel) = general_channel(m, &space) else {
                    return Ok(());
                };
                OpBody::ChannelUpdate {
                    channel,
                    name: None,
                    topic: Some(name),
                    overwrites: None,
                }
            };
            let ok = m
                .space(&space)
                .is_some_and(|s| s.check(&m.me(), &body).is_ok());
            if !ok {
                return Ok(());
            }
            user_error(m.space_op(now, store, space, body).map(|_| ()))
        }
        other => Err(format!("not a space command: {other:?}")),
    }
}

impl Sim {
    /// Takes what a space command told us.
    pub(super) fn space_note(&mut self, n: usize, note: Note) {
        match note {
            Note::Follow {
                node,
                delay_ms,
                cmd,
            } => {
                let at = self.now + delay_ms;
                self.schedule(at, Action::Cmd(node, cmd));
            }
            Note::Sent {
                id,
                channel,
                session,
                index,
                audience,
            } => {
                self.trace(format!(
                    "channel-sent {} {id} to {}",
                    self.nodes[n].name,
                    audience.len()
                ));
                self.space.sent.insert(
                    id,
                    ChannelSent {
                        from: n,
                        channel,
                        session,
                        index,
                        audience: audience.into_iter().collect(),
                        at: self.now,
                    },
                );
            }
        }
    }

    /// Each node's join attempt, for reports: `name: state`.
    pub fn join_report(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                let state = n.machine.as_ref().map(|m| {
                    let joins: Vec<String> = m.joins().map(|(_, j)| format!("{j:?}")).collect();
                    format!("member={} joins={joins:?}", my_space(m).is_some())
                });
                format!("{}: {state:?}", n.name)
            })
            .collect()
    }

    /// A receiver showed message `id` (the benchmark's delivery times).
    pub(super) fn space_shown(&mut self, id: MessageId) {
        if self.space.sent.contains_key(&id) {
            let e = self.space.shown.entry(id).or_insert((0, 0));
            e.0 = self.now;
            e.1 += 1;
        }
    }

    /// Channel messages sent so far.
    pub fn channel_sent_count(&self) -> usize {
        self.space.sent.len()
    }

    /// The space's members at the end, as the owner (node 0) resolves them.
    pub fn space_members(&self) -> Vec<usize> {
        let Some(m) = self.nodes[0].machine.as_ref() else {
            return Vec::new();
        };
        let Some(space) = my_space(m) else {
            return Vec::new();
        };
        let Some(state) = m.space(&space) else {
            return Vec::new();
        };
        (0..self.nodes.len())
            .filter(|&i| state.is_member(&self.nodes[i].user))
            .collect()
    }

    /// The spaces invariants (module docs); empty when there is no space.
    pub(super) fn check_spaces(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(owner) = self.nodes[0].machine.as_ref() else {
            return problems;
        };
        let Some(space) = my_space(owner) else {
            if !self.space.sent.is_empty() {
                problems.push("channel messages were sent but the owner holds no space".into());
            }
            return problems;
        };
        let Some(reference) = owner.space(&space).cloned() else {
            return problems;
        };
        let op_ids = |store: &MemoryStore| -> BTreeSet<_> {
            store
                .space_ops(&space)
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.id)
                .collect()
        };
        let reference_ops = op_ids(&self.nodes[0].store);
        // Convergence.
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            let Some(m) = node.machine.as_ref() else {
                problems.push(format!("{} is not running at the end", node.name));
                continue;
            };
            let member = reference.is_member(&node.user);
            let Some(state) = m.space(&space) else {
                if member {
                    problems.push(format!("{} is a member but holds no log", node.name));
                }
                continue;
            };
            if member {
                let ops = op_ids(&node.store);
                if ops != reference_ops {
                    problems.push(format!(
                        "{} holds {} ops, the owner {} ({} missing, {} extra)",
                        node.name,
                        ops.len(),
                        reference_ops.len(),
                        reference_ops.difference(&ops).count(),
                        ops.difference(&reference_ops).count()
                    ));
                } else if *state != reference {
                    problems.push(format!(
                        "{} resolves the same ops to another state",
                        node.name
                    ));
                }
            } else if state.is_member(&node.user) {
                // Node i was removed (it held the log, so it had joined).
                problems.push(format!(
                    "{} was removed (member {i}) but thinks it is still a member",
                    node.name
                ));
            }
        }
        // Channel messages.
        for (id, s) in &self.space.sent {
            let sender = &self.nodes[s.from];
            let sender_member = reference.is_member(&sender.user);
            for (r, node) in self.nodes.iter().enumerate() {
                if r == s.from {
                    continue;
                }
                let held = node.store.message(id).ok().flatten();
                if let Some(h) = &held
                    && (h.conversation != ConversationId::Channel(s.channel)
                        || h.sender != sender.user)
                {
                    problems.push(format!(
                        "{} holds {id} in another conversation or from another sender",
                        node.name
                    ));
                }
                let addressed = s.audience.contains(&node.user);
                if let (Some(h), Ok(Some(o))) = (&held, sender.store.message(id))
                    && (h.deleted != o.deleted || h.body != o.body)
                {
                    problems.push(format!(
                        "{} never got channel message {id} from {} intact (deleted {} vs {})",
                        node.name, sender.name, h.deleted, o.deleted
                    ));
                }
                if addressed {
                    if sender_member && reference.is_member(&node.user) && held.is_none() {
                        let waiting = node.store.megolm_waiting(&s.session).unwrap_or_default();
                        problems.push(format!(
                            "{} never got channel message {id} from {} ({} waiting on its session)",
                            node.name,
                            sender.name,
                            waiting.len()
                        ));
                    }
                    continue;
                }
                if held.is_some() {
                    problems.push(format!(
                        "{} holds channel message {id} from {}, which was not sent to it",
                        node.name, sender.name
                    ));
                }
                if let Ok(Some(k)) = node.store.megolm_inbound(&s.session)
                    && k.first_index <= s.index
                {
                    problems.push(format!(
                        "{} holds the key of {}'s session from index {}, which reads {id} \
                         (index {}) that was not sent to it",
                        node.name, sender.name, k.first_index, s.index
                    ));
                }
            }
        }
        // Nothing in a channel that nobody sent; history in the senders' order.
        for node in &self.nodes {
            for c in reference.channel_list() {
                let msgs = node
                    .store
                    .messages_before(&ConversationId::Channel(c.id), None, 1_000_000)
                    .unwrap_or_default();
                for msg in &msgs {
                    if !self.space.sent.contains_key(&msg.id) {
                        problems.push(format!(
                            "{} holds channel message {} that nobody sent",
                            node.name, msg.id
                        ));
                    }
                }
                problems.extend(self.history_order_problems(node, &msgs));
            }
        }
        problems
    }

    /// A channel's history as `node` pages it (newest first) must be the send order: every
    /// message after each one its sender's node stored before it (the sender's own order), and
    /// the same order on every replica: sorted by the `sent_at` its sender stored, then by
    /// message id (every node here shares the simulation's clock, which is never further ahead
    /// than the bound a receiver allows, so every receiver keeps the sender's `sent_at`). A
    /// message that arrived late (mailbox, backfill, a history bundle) sorts where it was sent.
    fn history_order_problems(
        &self,
        node: &super::SimNode,
        newest_first: &[dopus_core::store::Message],
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let key = |m: &dopus_core::store::Message| -> Option<(Timestamp, MessageId)> {
            let s = self.space.sent.get(&m.id)?;
            let own = self.nodes[s.from].store.message(&m.id).ok().flatten()?;
            Some((own.sent_at, m.id))
        };
        let mut prev: Option<(Timestamp, MessageId)> = None;
        let mut last_of: BTreeMap<usize, (u64, MessageId)> = BTreeMap::new();
        for m in newest_first.iter().rev() {
            let Some(k) = key(m) else { continue };
            if m.sent_at != k.0 {
                problems.push(format!(
                    "{} stored {} at {} but its sender sent it at {}",
                    node.name,
                    m.id,
                    m.sent_at.as_millis(),
                    k.0.as_millis()
                ));
            }
            if let Some(p) = prev
                && p > k
            {
                problems.push(format!(
                    "{} shows channel message {} before {} against their senders' order",
                    node.name, p.1, m.id
                ));
            }
            prev = Some(k);
            if let Some(s) = self.space.sent.get(&m.id) {
                if let Some((at, before)) = last_of.get(&s.from)
                    && *at > s.at
                {
                    problems.push(format!(
                        "{} shows {}'s channel message {} after {}, which it sent later",
                        node.name, self.nodes[s.from].name, m.id, before
                    ));
                }
                last_of.insert(s.from, (s.at, m.id));
            }
        }
        problems
    }
}

/// Builds a spaces world of `nodes` nodes for `seed`, with its schedule, not yet run.
pub fn build(seed: u64, nodes: usize, active_ms: u64) -> Sim {
    let mut rng = Rng::new(seed ^ 0x5ace_5ace_0000_0015);
    let lo = rng.range(1, 20);
    let faults = Faults {
        latency_ms: (lo, lo + rng.range(0, 80)),
        reorder: if rng.chance(400) { rng.range(1, 40) } else { 0 },
        relay_drop: if rng.chance(400) { rng.range(1, 30) } else { 0 },
        tamper: 0,
        direct: rng.chance(750),
    };
    let mut sim = Sim::new(seed, nodes, faults);
    sim.start_all();
    sim.schedule(500, Action::Cmd(0, Cmd::SpaceCreate));
    // Joins: each node is invited by a node that joined before it (any member may invite).
    let mut order: Vec<usize> = (1..nodes).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let mut joined = vec![0usize];
    let mut times: Vec<u64> = order
        .iter()
        .map(|_| rng.range(1_000, active_ms / 2))
        .collect();
    times.sort_unstable();
    for (&j, &at) in order.iter().zip(&times) {
        let inviter = joined[rng.below(joined.len() as u64) as usize];
        sim.schedule(
            at,
            Action::Cmd(
                inviter,
                Cmd::SpaceInvite {
                    joiner: j,
                    tries: 100,
                },
            ),
        );
        joined.push(j);
    }
    // Moderators and kicks: a few, so most members stay to be checked.
    let mods = rng.range(0, 3.min(nodes as u64 - 1) + 1);
    for _ in 0..mods {
        let peer = 1 + rng.below(nodes as u64 - 1) as usize;
        let at = rng.range(active_ms / 4, active_ms);
        sim.schedule(at, Action::Cmd(0, Cmd::SpaceMod { peer, give: true }));
        if rng.chance(300) {
            let at = rng.range(at, active_ms + 1);
            sim.schedule(at, Action::Cmd(0, Cmd::SpaceMod { peer, give: false }));
        }
    }
    let kicks = rng.range(0, (nodes as u64 / 3).max(1) + 1);
    for _ in 0..kicks {
        let by = if rng.chance(500) {
            0
        } else {
            rng.below(nodes as u64) as usize
        };
        let peer = 1 + rng.below(nodes as u64 - 1) as usize;
        let at = rng.range(active_ms / 3, active_ms);
        sim.schedule(at, Action::Cmd(by, Cmd::SpaceKick { peer }));
    }
    // Talk and renames.
    for n in 0..nodes {
        let actions = rng.range(3, 12);
        for _ in 0..actions {
            let at = rng.range(2_000, active_ms);
            let cmd = if rng.chance(120) {
                Cmd::SpaceRename
            } else {
                Cmd::ChannelSend {
                    count: if rng.chance(150) {
                        rng.range(2, 6) as usize
                    } else {
                        1
                    },
                }
            };
            sim.schedule(at, Action::Cmd(n, cmd));
        }
    }
    // Faults: crashes, nodes away from the server (offline: the mailbox carries what they
    // miss), partitions between pairs.
    for _ in 0..rng.range(0, 3) {
        let node = rng.below(nodes as u64) as usize;
        let mode = match rng.below(3) {
            0 => CrashMode::Idle,
            1 => CrashMode::BeforeCommit,
            _ => CrashMode::AfterCommit(rng.range(0, 4) as usize),
        };
        sim.schedule(
            rng.range(1_000, active_ms),
            Action::Crash {
                node,
                mode,
                down_ms: rng.range(50, 15_000),
            },
        );
    }
    for _ in 0..rng.range(1, 3) {
        let node = rng.below(nodes as u64) as usize;
        let at = rng.range(1_000, active_ms.saturating_sub(10_000).max(1_001));
        if rng.chance(500) {
            sim.schedule(
                at,
                Action::CutServer {
                    node,
                    ms: rng.range(5_000, 40_000),
                },
            );
        } else {
            sim.schedule(
                at,
                Action::Crash {
                    node,
                    mode: CrashMode::Idle,
                    down_ms: rng.range(10_000, 60_000),
                },
            );
        }
    }
    for _ in 0..rng.range(0, 3) {
        let a = rng.below(nodes as u64) as usize;
        let b = (a + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
        sim.schedule(
            rng.range(1_000, active_ms),
            Action::CutDirect {
                a,
                b,
                ms: rng.range(1_000, 20_000),
            },
        );
    }
    sim.schedule(active_ms + 1_000, Action::Heal);
    sim
}

/// What one spaces run gave.
#[derive(Debug, Clone)]
pub struct SpaceOutcome {
    /// The seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Invariant violations (empty: passed).
    pub failures: Vec<String>,
    /// Channel messages sent.
    pub messages: usize,
    /// Members at the end (the owner's view).
    pub members: usize,
    /// The trace hash.
    pub trace_hash: String,
    /// Each node's join attempt at the end.
    pub joins: Vec<String>,
    /// The last lines of the trace.
    pub tail: Vec<String>,
}

/// Runs a spaces world of `nodes` nodes for `seed` to the end and checks it.
pub fn run(seed: u64, nodes: usize) -> SpaceOutcome {
    run_with(seed, nodes, None)
}

/// [`run`] with a deliberately broken behaviour (to show the invariants catch it).
pub fn run_with(seed: u64, nodes: usize, switch: Option<super::FaultSwitch>) -> SpaceOutcome {
    let active = super::scenario::ACTIVE_MS;
    let mut sim = build(seed, nodes.max(3), active);
    sim.switch = switch;
    if std::env::var_os("DOPUS_SIM_TRACE_ALL").is_some() {
        sim.tail_cap = usize::MAX;
    }
    sim.run_until(active + 1_000);
    sim.run_until_quiet(active + 1_000 + super::scenario::QUIET_LIMIT_MS);
    let failures = sim.check();
    SpaceOutcome {
        seed,
        nodes: sim.nodes.len(),
        failures,
        messages: sim.channel_sent_count(),
        members: sim.space_members().len(),
        trace_hash: sim.trace_hash(),
        joins: sim.join_report(),
        tail: sim.tail.iter().cloned().collect(),
    }
}

/// What [`run_with_offline`] saw of the node that was away.
#[derive(Debug, Clone)]
pub struct OfflineOutcome {
    /// The whole run.
    pub run: SpaceOutcome,
    /// Channel messages others sent while the node was down, that it holds at the end (from
    /// the mailbox or backfill, after it came back).
    pub caught_up: usize,
    /// Its `#general` as it pages it, oldest first: (sender node, simulation time sent).
    pub shown: Vec<(usize, u64)>,
}

/// [`run`] with node `away` down (idle, its store kept) from `from_ms` for `down_ms`, on top
/// of the seed's own faults. The invariants include the history order: the node must show the
/// channel in send order once it has caught up.
pub fn run_with_offline(
    seed: u64,
    nodes: usize,
    away: usize,
    from_ms: u64,
    down_ms: u64,
) -> OfflineOutcome {
    let active = super::scenario::ACTIVE_MS;
    let mut sim = build(seed, nodes.max(3), active);
    let away = away.min(sim.nodes.len() - 1);
    sim.schedule(
        from_ms,
        Action::Crash {
            node: away,
            mode: CrashMode::Idle,
            down_ms,
        },
    );
    sim.run_until(active + 1_000);
    sim.run_until_quiet(active + 1_000 + super::scenario::QUIET_LIMIT_MS);
    let failures = sim.check();
    let node = &sim.nodes[away];
    let caught_up = sim
        .space
        .sent
        .iter()
        .filter(|(id, s)| {
            s.from != away
                && (from_ms..from_ms + down_ms).contains(&s.at)
                && node.store.message(id).ok().flatten().is_some()
        })
        .count();
    let general = my_space(sim.nodes[0].machine.as_ref().expect("the owner runs"))
        .and_then(|space| sim.nodes[0].machine.as_ref()?.space(&space).cloned())
        .and_then(|state| {
            state
                .channel_list()
                .into_iter()
                .find(|c| c.kind == ChannelKind::Text)
                .map(|c| c.id)
        });
    let shown = general
        .map(|c| {
            let mut page = node
                .store
                .messages_before(&ConversationId::Channel(c), None, 1_000_000)
                .unwrap_or_default();
            page.reverse();
            page.iter()
                .filter_map(|m| sim.space.sent.get(&m.id).map(|s| (s.from, s.at)))
                .collect()
        })
        .unwrap_or_default();
    OfflineOutcome {
        run: SpaceOutcome {
            seed,
            nodes: sim.nodes.len(),
            failures,
            messages: sim.channel_sent_count(),
            members: sim.space_members().len(),
            trace_hash: sim.trace_hash(),
            joins: sim.join_report(),
            tail: sim.tail.iter().cloned().collect(),
        },
        caught_up,
        shown,
    }
}

/// What [`delivery_bench`] measured.
#[derive(Debug, Clone)]
pub struct DeliveryReport {
    /// Members of the space.
    pub members: usize,
    /// Messages measured.
    pub messages: usize,
    /// Virtual ms from sending until the last member showed it: median and worst.
    pub reach_all_ms: (u64, u64),
    /// Messages that reached every other member.
    pub complete: usize,
    /// Envelopes and bytes all nodes handed to the network per message (the message, its
    /// receipts and anything else the phase caused), averaged.
    pub envelopes_per_message: f64,
    /// Bytes per message.
    pub bytes_per_message: f64,
    /// Wall-clock ms of the measured phase (every node's work on one thread).
    pub wall_ms: u128,
    /// Wall-clock ms of the set-up (create, joins, a first message from everyone: Olm
    /// sessions and Megolm keys).
    pub setup_ms: u128,
}

/// Builds a space of `nodes` members in the simulated network (no faults, 5 to 40 ms per
/// hop), lets everyone speak once (sessions and keys), then sends `messages` channel messages
/// from random members one second apart and measures how long each takes to reach every member
/// (virtual time), what the network carried per message, and the wall time it all took.
pub fn delivery_bench(seed: u64, nodes: usize, messages: usize) -> Result<DeliveryReport, String> {
    let started = std::time::Instant::now();
    let nodes = nodes.max(2);
    let mut rng = Rng::new(seed);
    let mut sim = Sim::new(seed, nodes, Faults::default());
    sim.keep_tail = false;
    sim.start_all();
    sim.schedule(500, Action::Cmd(0, Cmd::SpaceCreate));
    for j in 1..nodes {
        sim.schedule(
            1_000 + 50 * j as u64,
            Action::Cmd(
                0,
                Cmd::SpaceInvite {
                    joiner: j,
                    tries: 10,
                },
            ),
        );
    }
    let limit = super::scenario::QUIET_LIMIT_MS;
    sim.schedule(2_000 + 50 * nodes as u64, Action::Heal);
    sim.run_until_quiet(limit);
    let joined = sim.space_members().len();
    if joined != nodes {
        return Err(format!("only {joined} of {nodes} joined"));
    }
    let t = sim.now + 1_000;
    for n in 0..nodes {
        sim.schedule(
            t + 20 * n as u64,
            Action::Cmd(n, Cmd::ChannelSend { count: 1 }),
        );
    }
    sim.run_until_quiet(sim.now + limit);
    let setup_ms = started.elapsed().as_millis();
    let (env0, bytes0) = (sim.envelopes_out, sim.bytes_out);
    let phase = std::time::Instant::now();
    let t = sim.now + 1_000;
    for k in 0..messages {
        let n = rng.below(nodes as u64) as usize;
        sim.schedule(
            t + 1_000 * k as u64,
            Action::Cmd(n, Cmd::ChannelSend { count: 1 }),
        );
    }
    sim.run_until_quiet(sim.now + limit + 1_000 * messages as u64);
    let wall_ms = phase.elapsed().as_millis();
    let failures = sim.check();
    if !failures.is_empty() {
        return Err(failures.join("\n"));
    }
    let measured: Vec<(MessageId, u64)> =
        sim.space.sent.iter().map(|(id, s)| (*id, s.at)).collect();
    let mut reach: Vec<u64> = Vec::new();
    let mut complete = 0;
    let mut count = 0;
    for (id, at) in measured {
        // Skip the warm-up messages (sent before the measured phase).
        if at < t {
            continue;
        }
        count += 1;
        if let Some(&(last, receivers)) = sim.space.shown.get(&id)
            && receivers + 1 >= nodes
        {
            complete += 1;
            reach.push(last.saturating_sub(at));
        }
    }
    reach.sort_unstable();
    let per = count.max(1) as f64;
    Ok(DeliveryReport {
        members: nodes,
        messages: count,
        reach_all_ms: (
            reach.get(reach.len() / 2).copied().unwrap_or(0),
            reach.last().copied().unwrap_or(0),
        ),
        complete,
        envelopes_per_message: (sim.envelopes_out - env0) as f64 / per,
        bytes_per_message: (sim.bytes_out - bytes0) as f64 / per,
        wall_ms,
        setup_ms,
    })
}
