//! The scenarios a seed runs. A seed picks a focus (messaging, offline mailbox delivery,
//! session loss, restores from old copies), a number of nodes, network faults and a schedule
//! of user actions and faults over a faulty phase; then everything heals and the run goes on
//! until every outbox and mailbox is empty, and the invariants are checked.

use super::{Action, Cmd, CrashMode, FaultSwitch, Faults, Rng, Sim};
use dopus_proto::signaling::Status;

/// How long the faulty phase lasts (virtual ms).
pub const ACTIVE_MS: u64 = 60_000;
/// The longest a run may take to go quiet after healing (virtual ms): above the mailbox
/// re-check (an hour).
pub const QUIET_LIMIT_MS: u64 = 3 * 60 * 60 * 1000;

/// What a seed's run focuses on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// 1:1 messaging with edits, deletes, reactions and receipts, over a lossy network.
    Messaging,
    /// Nodes away for long stretches: the mailbox carries what they miss.
    Offline,
    /// Nodes lose their Olm sessions with a peer.
    SessionLoss,
    /// Nodes restored from old copies of their store.
    Restore,
}

impl Focus {
    /// The focus of `seed`.
    pub fn of(seed: u64) -> Focus {
        match seed % 4 {
            0 => Focus::Messaging,
            1 => Focus::Offline,
            2 => Focus::SessionLoss,
            _ => Focus::Restore,
        }
    }
}

/// What one run gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Its focus.
    pub focus: Focus,
    /// Number of nodes.
    pub nodes: usize,
    /// Invariant violations (empty: passed).
    pub failures: Vec<String>,
    /// The trace hash.
    pub trace_hash: String,
    /// Texts sent.
    pub texts: usize,
    /// Resets asked, over all nodes.
    pub resets: u64,
    /// Virtual ms when it went quiet.
    pub quiet_at: Option<u64>,
    /// Events handled.
    pub events: u64,
    /// The last lines of the trace (for a failing seed).
    pub tail: Vec<String>,
}

/// Builds the world of `seed` with its schedule, not yet run.
pub fn build(seed: u64, switch: Option<FaultSwitch>) -> (Sim, Focus) {
    let mut rng = Rng::new(seed ^ 0xa5a5_5a5a_0f0f_f0f0);
    let focus = Focus::of(seed);
    let nodes = 2 + rng.below(2) as usize + usize::from(rng.chance(150));
    let lo = rng.range(1, 20);
    let faults = Faults {
        latency_ms: (lo, lo + rng.range(0, 80)),
        reorder: if rng.chance(400) { rng.range(1, 40) } else { 0 },
        relay_drop: if rng.chance(400) { rng.range(1, 30) } else { 0 },
        tamper: if rng.chance(200) { rng.range(1, 10) } else { 0 },
        direct: rng.chance(750),
    };
    let mut sim = Sim::new(seed, nodes, faults);
    sim.switch = switch;
    sim.start_all();
    // Contacts: most pairs add each other at once; some go through a request and an answer.
    for a in 0..nodes {
        for b in (a + 1)..nodes {
            if rng.chance(700) {
                sim.schedule(0, Action::Cmd(a, Cmd::AddContact { peer: b }));
                sim.schedule(
                    rng.range(0, 300),
                    Action::Cmd(b, Cmd::AddContact { peer: a }),
                );
            } else {
                sim.schedule(
                    rng.range(0, 1_000),
                    Action::Cmd(a, Cmd::Request { peer: b }),
                );
            }
        }
    }
    for n in 0..nodes {
        if rng.chance(500) {
            sim.schedule(0, Action::Cmd(n, Cmd::ReadReceipts(true)));
        }
    }
    // The users.
    for n in 0..nodes {
        let actions = rng.range(15, 45);
        for _ in 0..actions {
            let at = rng.range(1_500, ACTIVE_MS);
            let mut peer = rng.below(nodes as u64 - 1) as usize;
            if peer >= n {
                peer += 1;
            }
            let r = rng.below(100);
            let cmd = match r {
                0..=54 => Cmd::Send {
                    peer,
                    count: if rng.chance(200) {
                        rng.range(2, 12) as usize
                    } else {
                        1
                    },
                },
                55..=66 => Cmd::Edit { peer },
                67..=72 => Cmd::Delete { peer },
                73..=84 => Cmd::React { peer },
                85..=92 => Cmd::Read { peer },
                93..=96 => Cmd::Typing { peer },
                _ => Cmd::Status(match rng.below(4) {
                    0 => Status::Away,
                    1 => Status::Busy,
                    2 => Status::Invisible,
                    _ => Status::Online,
                }),
            };
            sim.schedule(at, Action::Cmd(n, cmd));
        }
    }
    // Faults common to every focus: a few crashes at any point of a batch.
    let crashes = rng.range(0, 3);
    for _ in 0..crashes {
        let node = rng.below(nodes as u64) as usize;
        let mode = match rng.below(3) {
            0 => CrashMode::Idle,
            1 => CrashMode::BeforeCommit,
            _ => CrashMode::AfterCommit(rng.range(0, 4) as usize),
        };
        let at = rng.range(1_000, ACTIVE_MS);
        let down_ms = rng.range(50, 15_000);
        sim.schedule(
            at,
            Action::Crash {
                node,
                mode,
                down_ms,
            },
        );
    }
    if rng.chance(300) {
        let a = rng.below(nodes as u64) as usize;
        let b = (a + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
        sim.schedule(
            rng.range(1_000, ACTIVE_MS),
            Action::CutDirect {
                a,
                b,
                ms: rng.range(1_000, 20_000),
            },
        );
    }
    match focus {
        Focus::Messaging => {
            if rng.chance(500) {
                let node = rng.below(nodes as u64) as usize;
                sim.schedule(
                    rng.range(1_000, ACTIVE_MS),
                    Action::CutServer {
                        node,
                        ms: rng.range(500, 10_000),
                    },
                );
            }
        }
        Focus::Offline => {
            for _ in 0..rng.range(1, 3) {
                let node = rng.below(nodes as u64) as usize;
                let at = rng.range(1_000, ACTIVE_MS - 10_000);
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
                            down_ms: rng.range(10_000, 90_000),
                        },
                    );
                }
            }
        }
        Focus::SessionLoss => {
            for _ in 0..rng.range(1, 3) {
                let node = rng.below(nodes as u64) as usize;
                let mut peer = rng.below(nodes as u64 - 1) as usize;
                if peer >= node {
                    peer += 1;
                }
                sim.schedule(
                    rng.range(3_000, ACTIVE_MS),
                    Action::LoseSessions { node, peer },
                );
            }
        }
        Focus::Restore => {
            for n in 0..nodes {
                // Backups from the first second on: a copy may predate the contact answers.
                let mut t = rng.range(1_000, 8_000);
                while t < ACTIVE_MS {
                    sim.schedule(t, Action::Backup(n));
                    t += rng.range(4_000, 15_000);
                }
            }
            for _ in 0..rng.range(1, 2) {
                let node = rng.below(nodes as u64) as usize;
                sim.schedule(
                    rng.range(12_000, ACTIVE_MS),
                    Action::Restore {
                        node,
                        oldest: rng.chance(300),
                        down_ms: rng.range(100, 10_000),
                    },
                );
            }
        }
    }
    sim.schedule(ACTIVE_MS + 1_000, Action::Heal);
    (sim, focus)
}

/// Runs `seed` to the end and checks it.
pub fn run(seed: u64, switch: Option<FaultSwitch>) -> Outcome {
    let (mut sim, focus) = build(seed, switch);
    if std::env::var_os("DOPUS_SIM_TRACE_ALL").is_some() {
        sim.tail_cap = usize::MAX;
    }
    sim.run_until(ACTIVE_MS + 1_000);
    sim.run_until_quiet(ACTIVE_MS + 1_000 + QUIET_LIMIT_MS);
    let failures = sim.check();
    Outcome {
        seed,
        focus,
        nodes: sim.nodes.len(),
        failures,
        trace_hash: sim.trace_hash(),
        texts: sim.sent_count(),
        resets: (0..sim.nodes.len())
            .map(|i| sim.stats(i).resets_asked)
            .sum(),
        quiet_at: sim.quiet_at,
        events: sim.events,
        tail: sim.tail.iter().cloned().collect(),
    }
}
