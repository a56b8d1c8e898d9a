//! Deterministic multi-replica simulation of a space's control log: 3 to 50 replicas write
//! random ops (authorized or not, some by an outsider), delivered in random order with random
//! delays (one copy in ten lost), through partitions and offline periods, with anti-entropy
//! (`ops_for` on the peer's heads) now and then and at the end. After that:
//!
//! - every replica has the same heads, the same state and the same resolution trace;
//! - replaying the trace from the genesis op, every applied op applies and every refused op is
//!   refused (so no op applied whose author lacked the permission at that point), and the
//!   replay ends in the same state;
//! - nothing an outsider wrote ever applied.
//!
//! A failing run prints its seed; `DOPUS_SPACE_SIM_SEED=<seed>` reruns just that one and
//! `DOPUS_SPACE_SIM_SEEDS=<n>` runs more seeds than CI does.

use super::harness::{T0, create, role, signer};
use crate::identity::test_support::SeededRandom;
use crate::space::state::{OpContext, SpaceState};
use crate::space::test_support::KeySigner;
use crate::space::{ControlLog, Refusal, invite};
use dopus_proto::peer::PeerAddress;
use dopus_proto::space::{
    ChannelKind, ChannelPosition, OpBody, OpId, Overwrite, OverwriteTarget, Permissions, RoleId,
    SpaceOp,
};
use dopus_types::UserId;
use std::collections::{HashMap, HashSet};

/// xorshift64*: small, deterministic, good enough to pick test cases.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.below(items.len())])
        }
    }
}

const PERMS: [Permissions; 8] = [
    Permissions::KICK,
    Permissions::BAN,
    Permissions::MANAGE_ROLES,
    Permissions::MANAGE_CHANNELS,
    Permissions::MANAGE_SPACE,
    Permissions::CREATE_INVITE,
    Permissions::ADMINISTRATOR,
    Permissions::VIEW_CHANNEL,
];

fn random_perms(rng: &mut Rng) -> Permissions {
    let mut p = Permissions::NONE;
    for bit in PERMS {
        if rng.chance(30) {
            p = p.union(bit);
        }
    }
    p
}

fn rename(rng: &mut Rng) -> OpBody {
    OpBody::Update {
        name: Some(format!("space {}", rng.below(1000))),
        description: None,
        share_history: None,
    }
}

/// A random op body that `author` might write on a replica whose state is `s`. Targets come
/// from that state (so most are meaningful), permissions are not consulted (so many are not
/// allowed). `joiners` are people who may ask to join.
pub(crate) fn random_body(
    rng: &mut Rng,
    s: &SpaceState,
    author: &KeySigner,
    users: &[UserId],
    joiners: &[KeySigner],
    invites: &mut Vec<dopus_proto::space::InviteCode>,
) -> OpBody {
    let roles: Vec<RoleId> = s
        .roles()
        .iter()
        .map(|r| r.id)
        .filter(|r| *r != RoleId::EVERYONE)
        .collect();
    let channels: Vec<_> = s.channel_list().iter().map(|c| (c.id, c.kind)).collect();
    let categories: Vec<_> = channels
        .iter()
        .filter(|(_, k)| *k == ChannelKind::Category)
        .map(|(c, _)| *c)
        .collect();
    let members: Vec<UserId> = s.members().map(|(u, _)| *u).collect();
    let anyone = |rng: &mut Rng| *rng.pick(users).unwrap_or(&author.user());
    let member = |rng: &mut Rng| *rng.pick(&members).unwrap_or(&author.user());
    match rng.below(17) {
        0 => OpBody::Kick { user: member(rng) },
        1 => OpBody::Ban { user: anyone(rng) },
        2 => OpBody::Unban { user: anyone(rng) },
        3 => OpBody::RoleCreate {
            name: format!("role {}", rng.below(1000)),
            color: 0,
            position: 1 + rng.below(30) as u32,
            permissions: random_perms(rng),
        },
        4 => match rng.pick(&roles) {
            Some(r) => OpBody::RoleUpdate {
                role: *r,
                name: None,
                color: None,
                position: rng.chance(30).then(|| 1 + rng.below(30) as u32),
                permissions: Some(random_perms(rng)),
            },
            None => OpBody::RoleUpdate {
                role: RoleId::EVERYONE,
                name: None,
                color: None,
                position: None,
                permissions: Some(Permissions::DEFAULT_EVERYONE.union(random_perms(rng))),
            },
        },
        5 => match rng.pick(&roles) {
            Some(r) => OpBody::RoleDelete { role: *r },
            None => rename(rng),
        },
        6 | 7 => match rng.pick(&roles) {
            Some(r) => OpBody::RoleAssign {
                user: member(rng),
                role: *r,
            },
            None => rename(rng),
        },
        8 => match rng.pick(&roles) {
            Some(r) => OpBody::RoleRevoke {
                user: member(rng),
                role: *r,
            },
            None => rename(rng),
        },
        9 => {
            let kind = *rng
                .pick(&[ChannelKind::Text, ChannelKind::Voice, ChannelKind::Category])
                .unwrap_or(&ChannelKind::Text);
            let parent = if kind == ChannelKind::Category {
                None
            } else {
                rng.pick(&categories).copied()
            };
            let overwrites = match rng.pick(&roles) {
                Some(r) if rng.chance(40) => vec![Overwrite {
                    target: OverwriteTarget::Role(*r),
                    allow: Permissions::NONE,
                    deny: Permissions::VIEW_CHANNEL,
                }],
                _ => vec![],
            };
            OpBody::ChannelCreate {
                kind,
                name: format!("ch {}", rng.below(1000)),
                topic: None,
                parent,
                position: rng.below(10) as u32,
                overwrites,
            }
        }
        10 => match rng.pick(&channels) {
            Some((c, _)) => OpBody::ChannelUpdate {
                channel: *c,
                name: Some(format!("renamed {}", rng.below(1000))),
                topic: None,
                overwrites: None,
            },
            None => rename(rng),
        },
        11 => match rng.pick(&channels) {
            Some((c, _)) => OpBody::ChannelDelete { channel: *c },
            None => rename(rng),
        },
        12 => match rng.pick(&channels) {
            Some((c, k)) => OpBody::ChannelReorder {
                positions: vec![ChannelPosition {
                    channel: *c,
                    parent: if *k == ChannelKind::Category {
                        None
                    } else {
                        rng.pick(&categories).copied()
                    },
                    position: rng.below(10) as u32,
                }],
            },
            None => rename(rng),
        },
        13 => OpBody::Update {
            name: Some(format!("space {}", rng.below(1000))),
            description: None,
            share_history: rng.chance(20).then(|| rng.chance(50)),
        },
        14 => {
            let mut r = SeededRandom::new(rng.next());
            let inv = invite::new_invite(
                *s.id(),
                author.user(),
                &mut r,
                rng.chance(30).then(|| 1 + rng.below(3) as u32),
                None,
                None,
                None,
            );
            invites.push(inv.code);
            inv.body
        }
        15 => {
            // Admit someone with a known invite (or a made-up one).
            let Some(j) = rng.pick(joiners) else {
                return rename(rng);
            };
            let code = match rng.pick(invites) {
                Some(c) => c.clone(),
                None => return OpBody::Leave,
            };
            let req = invite::join_request(&code, &j.cert, T0);
            let sender = PeerAddress {
                user: j.user(),
                device: j.cert.device_id.clone(),
            };
            match invite::admit(s, &author.user(), &sender, &req, T0) {
                Ok(body) => body,
                Err(_) => rename(rng),
            }
        }
        _ => {
            if rng.chance(10) {
                OpBody::TransferOwnership { to: member(rng) }
            } else if rng.chance(15) {
                OpBody::Leave
            } else {
                rename(rng)
            }
        }
    }
}

/// The starting point every replica shares: an owner, `members` members, two ranked roles.
pub(crate) fn base(members: usize) -> (ControlLog, Vec<KeySigner>) {
    let owner = signer(1);
    let mut log = create(&owner);
    let signers: Vec<KeySigner> = (1..=members as u64).map(signer).collect();
    for s in &signers[1..] {
        super::harness::admit(&mut log, &owner, s);
    }
    let power = Permissions::KICK
        .union(Permissions::BAN)
        .union(Permissions::MANAGE_ROLES)
        .union(Permissions::MANAGE_CHANNELS);
    let high = role(&mut log, &owner, "High", 20, power);
    let low = role(&mut log, &owner, "Low", 10, power);
    for (i, s) in signers.iter().enumerate().skip(1) {
        let r = match i % 4 {
            1 => Some(high),
            2 => Some(low),
            _ => None,
        };
        if let Some(r) = r {
            super::harness::assign(&mut log, &owner, s.user(), r);
        }
    }
    (log, signers)
}

/// Replays a trace from the genesis op and checks every verdict against a fresh state.
pub(crate) fn check_trace(log: &mut ControlLog) {
    let ops: HashMap<OpId, SpaceOp> = log.ops().map(|o| (o.id(), o.clone())).collect();
    let trace = log.trace();
    let genesis = &ops[&trace[0].0];
    let mut state = SpaceState::genesis(genesis).unwrap();
    let ancestors = |of: &OpId| -> HashSet<OpId> {
        let mut seen = HashSet::new();
        let mut stack = ops[of].parents.clone();
        while let Some(p) = stack.pop() {
            if seen.insert(p) {
                stack.extend(ops[&p].parents.iter().copied());
            }
        }
        seen
    };
    for (id, verdict) in trace.iter().skip(1) {
        let op = &ops[id];
        let anc = ancestors(id);
        let ctx = OpContext {
            id: *id,
            depth: op.depth,
            is_ancestor: &|a| anc.contains(a),
        };
        match verdict {
            Ok(()) => {
                if let Err(e) = state.apply(op, &ctx) {
                    panic!(
                        "{} by {} applied but its author could not: {e}",
                        op.body.kind_name(),
                        op.author_user().short()
                    );
                }
            }
            Err(Refusal::Filtered) => {}
            Err(expected) => {
                let mut scratch = state.clone();
                assert_eq!(
                    scratch.apply(op, &ctx).err().as_ref(),
                    Some(expected),
                    "{}",
                    op.body.kind_name()
                );
            }
        }
    }
    assert_eq!(
        &state,
        log.state(),
        "replaying the trace gives another state"
    );
}

struct Sim {
    rng: Rng,
    signers: Vec<KeySigner>,
    outsider: KeySigner,
    joiners: Vec<KeySigner>,
    users: Vec<UserId>,
    replicas: Vec<ControlLog>,
    online: Vec<bool>,
    group: Vec<u8>,
    inflight: Vec<(u64, usize, usize, SpaceOp)>,
    invites: Vec<dopus_proto::space::InviteCode>,
    all: Vec<SpaceOp>,
    now: u64,
}

impl Sim {
    fn new(seed: u64, n: usize) -> Self {
        let mut rng = Rng::new(seed);
        let members = 1 + (n * 3 / 4).max(2);
        let (log, mut signers) = base(members);
        // Replicas beyond the members belong to people who may be admitted later.
        let joiners: Vec<KeySigner> = (members as u64 + 1..=n as u64 + 3).map(signer).collect();
        signers.truncate(n.min(members));
        let outsider = signer(10_000);
        let mut users: Vec<UserId> = signers.iter().map(KeySigner::user).collect();
        users.extend(joiners.iter().map(KeySigner::user));
        users.push(outsider.user());
        let replicas = (0..n).map(|_| log.clone()).collect();
        let _ = rng.next();
        Self {
            rng,
            signers,
            outsider,
            joiners,
            users,
            replicas,
            online: vec![true; n],
            group: vec![0; n],
            inflight: Vec::new(),
            invites: Vec::new(),
            all: Vec::new(),
            now: 0,
        }
    }

    fn author_of(&self, r: usize) -> &KeySigner {
        // Replicas beyond the member signers are run by joiners.
        if r < self.signers.len() {
            &self.signers[r]
        } else {
            &self.joiners[(r - self.signers.len()) % self.joiners.len()]
        }
    }

    fn step(&mut self) {
        let n = self.replicas.len();
        if self.rng.chance(3) {
            // Split into two groups, or heal.
            if self.group.iter().any(|g| *g != 0) {
                self.group.fill(0);
            } else {
                for g in &mut self.group {
                    *g = u8::from(self.rng.chance(50));
                }
            }
        }
        if self.rng.chance(4) {
            let r = self.rng.below(n);
            self.online[r] = !self.online[r];
        }
        let r = self.rng.below(n);
        if self.online[r] {
            let outsider = self.rng.chance(5);
            let author = if outsider {
                self.outsider.clone()
            } else {
                self.author_of(r).clone()
            };
            let s = self.replicas[r].state().clone();
            let body = random_body(
                &mut self.rng,
                &s,
                &author,
                &self.users,
                &self.joiners,
                &mut self.invites,
            );
            let op = super::harness::unchecked(&self.replicas[r], &author, body);
            self.replicas[r].insert(op.clone()).unwrap();
            self.all.push(op.clone());
            for to in 0..n {
                // One copy in ten is lost; anti-entropy must make up for it.
                if to != r && !self.rng.chance(10) {
                    let delay = 1 + self.rng.below(30) as u64;
                    self.inflight.push((self.now + delay, r, to, op.clone()));
                }
            }
        }
        // Anti-entropy between two reachable replicas now and then.
        if self.rng.chance(10) {
            let (a, b) = (self.rng.below(n), self.rng.below(n));
            if a != b && self.reachable(a, b) {
                let have = self.replicas[a].heads();
                let missing: Vec<SpaceOp> = self.replicas[b]
                    .ops_for(&have, &[], usize::MAX)
                    .into_iter()
                    .cloned()
                    .collect();
                for o in missing {
                    self.replicas[a].insert(o).unwrap();
                }
            }
        }
        self.deliver(false);
        self.now += 1;
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.online[a] && self.online[b] && self.group[a] == self.group[b]
    }

    fn deliver(&mut self, everything: bool) {
        let mut due = Vec::new();
        let mut keep = Vec::new();
        for (at, from, to, op) in std::mem::take(&mut self.inflight) {
            // A partitioned or offline replica gets its messages later (as from a mailbox).
            let ready = at <= self.now && self.online[to] && self.group[from] == self.group[to];
            if everything || ready {
                due.push((to, op));
            } else {
                keep.push((at, from, to, op));
            }
        }
        self.inflight = keep;
        // Random delivery order.
        for i in (1..due.len()).rev() {
            let j = self.rng.below(i + 1);
            due.swap(i, j);
        }
        for (to, op) in due {
            self.replicas[to].insert(op).unwrap();
        }
    }

    fn finish(&mut self) {
        self.group.fill(0);
        self.online.fill(true);
        self.deliver(true);
        // Catch-up by anti-entropy alone: each replica asks every other for what it may lack.
        let n = self.replicas.len();
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                let have = self.replicas[a].heads();
                let missing: Vec<SpaceOp> = self.replicas[b]
                    .ops_for(&have, &[], usize::MAX)
                    .into_iter()
                    .cloned()
                    .collect();
                for o in missing {
                    self.replicas[a].insert(o).unwrap();
                }
            }
        }
        // Nothing anyone wrote is missing.
        for r in &self.replicas {
            for o in &self.all {
                assert!(r.contains(&o.id()), "an op did not reach every replica");
            }
        }
    }
}

fn run(seed: u64, n: usize, steps: usize) {
    let mut sim = Sim::new(seed, n);
    for _ in 0..steps {
        sim.step();
    }
    sim.finish();
    let outsider = sim.outsider.user();
    let mut reference = sim.replicas[0].clone();
    let heads = reference.heads();
    let state = reference.state().clone();
    let trace = reference.trace();
    for (i, r) in sim.replicas.iter_mut().enumerate() {
        assert_eq!(r.heads(), heads, "replica {i} has other heads");
        assert_eq!(r.pending_len(), 0, "replica {i} still waits for ops");
        assert_eq!(r.state(), &state, "replica {i} diverged");
        assert_eq!(r.trace(), trace, "replica {i} resolved in another order");
    }
    check_trace(&mut reference);
    for (id, verdict) in &trace {
        if reference
            .get(id)
            .is_some_and(|o| o.author_user() == outsider)
        {
            assert!(verdict.is_err(), "an outsider's op applied");
        }
    }
    // The runs must exercise the rules, not just refuse everything.
    let applied = trace.iter().filter(|(_, v)| v.is_ok()).count();
    assert!(applied > 1, "nothing applied");
    if std::env::var("DOPUS_SPACE_SIM_STATS").is_ok() {
        let filtered = trace
            .iter()
            .filter(|(_, v)| *v == Err(Refusal::Filtered))
            .count();
        let mut heads_max = 0;
        let members = state.member_count();
        let _ = &mut heads_max;
        eprintln!(
            "seed {seed}: {n} replicas, {} ops, {applied} applied, {filtered} filtered, {members} members, {} channels, {} roles",
            trace.len(),
            state.channel_list().len(),
            state.roles().len()
        );
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("DOPUS_SPACE_SIM_SEED") {
        return s.parse().map(|s| vec![s]).unwrap_or_default();
    }
    let n = std::env::var("DOPUS_SPACE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10u64);
    (1..=n).collect()
}

#[test]
fn replicas_converge_and_never_apply_unauthorized_ops() {
    for seed in seeds() {
        // 3 to 50 replicas across the seeds.
        let n = [3, 50, 5, 8, 13, 21, 34, 4, 6, 10][(seed % 10) as usize];
        let steps = 100 + 2 * n;
        let result = std::panic::catch_unwind(|| run(seed, n, steps));
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "space simulation failed with seed {seed} ({n} replicas, {steps} steps): {msg}\nrerun: DOPUS_SPACE_SIM_SEED={seed} cargo test -p dopus-core replicas_converge"
            );
        }
    }
}
