//! Voice channel presence in the simulated network (issue 16): the members of one space join
//! and leave its voice channel at random, under delay, reordering and relay loss; one member
//! crashes while in the channel (and stays down past the presence lifetime), one is kicked
//! while in it. After the faults end and two presence lifetimes pass, every running member
//! must see exactly the members that are in the channel (by their own account) and still
//! members, each one's media mesh must be the others of them, and every pair of them must share
//! an open connection whose audio m-line both hold.

use super::{Action, Cmd, CrashMode, Faults, Rng, Sim};
use dopus_core::machine::{CommandError, NodeMachine, VOICE_TTL_MS, VoiceRequest};
use dopus_core::store::MemoryStore;
use dopus_proto::space::ChannelKind;
use dopus_types::{ChannelId, SpaceId, Timestamp, UserId};
use std::collections::BTreeSet;

/// What one run found.
#[derive(Debug, Clone)]
pub struct VoiceOutcome {
    /// The seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Invariant violations (empty: it passed).
    pub failures: Vec<String>,
    /// Members in the channel at the end.
    pub in_channel: usize,
    /// Voice commands run (joins and leaves).
    pub commands: usize,
    /// The trace's hash (the same seed gives the same hash).
    pub trace_hash: String,
    /// The last trace lines.
    pub tail: Vec<String>,
}

fn my_space(m: &NodeMachine) -> Option<SpaceId> {
    let me = m.me();
    m.spaces()
        .find(|(_, s)| s.is_member(&me))
        .map(|(id, _)| *id)
}

fn voice_channel(m: &NodeMachine, space: &SpaceId) -> Option<ChannelId> {
    m.space(space)?
        .channel_list()
        .into_iter()
        .find(|c| c.kind == ChannelKind::Voice)
        .map(|c| c.id)
}

/// Runs a voice command on a node (user errors, such as joining before the space arrived,
/// are part of the game).
pub(super) fn run_cmd(
    m: &mut NodeMachine,
    _store: &mut MemoryStore,
    now: Timestamp,
    cmd: Cmd,
) -> Result<(), String> {
    let r = match cmd {
        Cmd::VoiceJoin => {
            let Some(space) = my_space(m) else {
                return Ok(());
            };
            let Some(channel) = voice_channel(m, &space) else {
                return Ok(());
            };
            m.voice_join(now, space, channel).map(|_| ())
        }
        Cmd::VoiceLeave => m.voice_leave(now),
        _ => return Ok(()),
    };
    match r {
        Ok(())
        | Err(
            CommandError::Voice(_)
            | CommandError::Space(_)
            | CommandError::UnknownSpace
            | CommandError::UnknownChannel,
        ) => Ok(()),
        Err(e) => Err(format!("voice command: {e}")),
    }
}

/// One run: `nodes` members, random joins and leaves for a minute, a crash and a kick.
pub fn run(seed: u64, nodes: usize) -> VoiceOutcome {
    let nodes = nodes.max(3);
    let mut rng = Rng::new(seed ^ 0x7601_ce00_0000_0016);
    let lo = rng.range(1, 20);
    let faults = Faults {
        latency_ms: (lo, lo + rng.range(0, 80)),
        reorder: if rng.chance(500) { rng.range(1, 40) } else { 0 },
        relay_drop: if rng.chance(500) { rng.range(1, 30) } else { 0 },
        tamper: 0,
        direct: rng.chance(750),
    };
    let mut sim = Sim::new(seed, nodes, faults);
    sim.open_skew = true;
    sim.start_all();
    sim.schedule(500, Action::Cmd(0, Cmd::SpaceCreate));
    for j in 1..nodes {
        sim.schedule(
            1_000 + 100 * j as u64,
            Action::Cmd(
                0,
                Cmd::SpaceInvite {
                    joiner: j,
                    tries: 100,
                },
            ),
        );
    }
    // A minute of joins and leaves from 15 s on.
    let mut commands = 0;
    for n in 0..nodes {
        let mut t = 15_000 + rng.range(0, 5_000);
        while t < 75_000 {
            let cmd = if rng.chance(650) {
                Cmd::VoiceJoin
            } else {
                Cmd::VoiceLeave
            };
            sim.schedule(t, Action::Cmd(n, cmd));
            commands += 1;
            t += rng.range(2_000, 20_000);
        }
    }
    // Someone (not the owner) crashes while probably in the channel, down past a lifetime.
    let crashed = 1 + rng.below(nodes as u64 - 1) as usize;
    sim.schedule(77_000, Action::Cmd(crashed, Cmd::VoiceJoin));
    sim.schedule(
        80_000,
        Action::Crash {
            node: crashed,
            mode: CrashMode::Idle,
            down_ms: VOICE_TTL_MS + 20_000,
        },
    );
    // The owner kicks another member, who joined the channel just before.
    let kicked = (1..nodes).find(|n| *n != crashed);
    if let Some(k) = kicked {
        sim.schedule(78_000, Action::Cmd(k, Cmd::VoiceJoin));
        sim.schedule(82_000, Action::Cmd(0, Cmd::SpaceKick { peer: k }));
    }
    // Everyone still standing is in the channel at the end, except one who left.
    for n in 0..nodes {
        if Some(n) != kicked && n != crashed {
            sim.schedule(84_000 + 100 * n as u64, Action::Cmd(n, Cmd::VoiceJoin));
        }
    }
    sim.schedule(86_000, Action::Cmd(nodes - 1, Cmd::VoiceLeave));
    sim.schedule(90_000, Action::Heal);
    sim.run_until(90_000 + 2 * VOICE_TTL_MS + 5_000);
    let mut failures = sim.failures.clone();
    failures.extend(check(&sim));
    let in_channel = sim
        .nodes
        .iter()
        .filter_map(|n| n.machine.as_ref())
        .filter(|m| m.my_voice().is_some())
        .count();
    VoiceOutcome {
        seed,
        nodes,
        failures,
        in_channel,
        commands,
        trace_hash: sim.trace_hash(),
        tail: sim.tail.iter().cloned().collect(),
    }
}

/// Every running member sees exactly the members in the channel; each mesh is the others.
fn check(sim: &Sim) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(owner) = sim.nodes[0].machine.as_ref() else {
        return vec!["the owner is not running".into()];
    };
    let Some(space) = my_space(owner) else {
        return vec!["the owner holds no space".into()];
    };
    let Some(state) = owner.space(&space) else {
        return problems;
    };
    let Some(channel) = voice_channel(owner, &space) else {
        return vec!["no voice channel".into()];
    };
    // The truth: running members that say they are in the channel.
    let truth: BTreeSet<UserId> = sim
        .nodes
        .iter()
        .filter(|n| state.is_member(&n.user))
        .filter_map(|n| n.machine.as_ref())
        .filter(|m| {
            m.my_voice()
                .is_some_and(|v| v.space == space && v.channel == channel)
        })
        .map(NodeMachine::me)
        .collect();
    for n in &sim.nodes {
        let Some(m) = n.machine.as_ref() else {
            continue;
        };
        if !state.is_member(&n.user) {
            if m.my_voice().is_some_and(|v| v.space == space) {
                problems.push(format!("{} was removed but is still in voice", n.name));
            }
            continue;
        }
        let seen: BTreeSet<UserId> = m
            .voice_channels(&space)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.channel == channel)
            .flat_map(|c| c.participants.into_iter().map(|p| p.user))
            .collect();
        if seen != truth {
            let names = |s: &BTreeSet<UserId>| {
                sim.nodes
                    .iter()
                    .filter(|x| s.contains(&x.user))
                    .map(|x| x.name.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            problems.push(format!(
                "{} sees [{}] in the channel, the truth is [{}]",
                n.name,
                names(&seen),
                names(&truth)
            ));
        }
        if truth.contains(&n.user) {
            let mesh: BTreeSet<UserId> = match m.voice_mesh_view() {
                Some(VoiceRequest::Session { peers, .. }) => {
                    peers.into_iter().map(|p| p.user).collect()
                }
                _ => BTreeSet::new(),
            };
            let others: BTreeSet<UserId> = truth.iter().copied().filter(|u| *u != n.user).collect();
            if mesh != others {
                problems.push(format!(
                    "{}'s media mesh is not the others in the channel",
                    n.name
                ));
            }
        }
    }
    // Every pair in the channel shares a connection carrying audio (when direct paths exist).
    if sim.faults.direct {
        let inside: Vec<usize> = (0..sim.nodes.len())
            .filter(|i| truth.contains(&sim.nodes[*i].user))
            .collect();
        for (k, a) in inside.iter().enumerate() {
            for b in &inside[k + 1..] {
                if let Err(why) = sim.audio_between(*a, *b) {
                    problems.push(format!(
                        "no audio between {} and {}: {why}",
                        sim.nodes[*a].name, sim.nodes[*b].name
                    ));
                }
            }
        }
    }
    problems
}
