//! For any set of ops, every order of delivery gives the same state: causal orders (each op
//! after its parents) and arbitrary orders (ops wait for their parents).

use super::simulation::{Rng, base, check_trace, random_body};
use crate::space::ControlLog;
use dopus_proto::space::SpaceOp;
use dopus_types::UserId;
use proptest::prelude::*;

/// A DAG of ops written on `forks` replicas of a common base, with occasional merges.
fn random_dag(seed: u64, forks: usize, ops: usize) -> (SpaceOp, Vec<SpaceOp>) {
    let mut rng = Rng::new(seed);
    let (log, signers) = base(6);
    let joiners: Vec<_> = (20..23).map(super::harness::signer).collect();
    let mut users: Vec<UserId> = signers.iter().map(|s| s.user()).collect();
    users.extend(joiners.iter().map(|j| j.user()));
    let mut invites = Vec::new();
    let mut replicas: Vec<ControlLog> = (0..forks).map(|_| log.clone()).collect();
    for _ in 0..ops {
        let r = rng.below(forks);
        let author = &signers[rng.below(signers.len())];
        let s = replicas[r].state().clone();
        let body = random_body(&mut rng, &s, author, &users, &joiners, &mut invites);
        let op = super::harness::unchecked(&replicas[r], author, body);
        replicas[r].insert(op).unwrap();
        if rng.chance(15) {
            let (a, b) = (rng.below(forks), rng.below(forks));
            if a != b {
                let theirs: Vec<SpaceOp> = replicas[b].ops().cloned().collect();
                for o in theirs {
                    replicas[a].insert(o).unwrap();
                }
            }
        }
    }
    let mut all: Vec<SpaceOp> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in &replicas {
        for o in r.ops() {
            if seen.insert(o.id()) {
                all.push(o.clone());
            }
        }
    }
    let genesis = all.remove(0);
    (genesis, all)
}

/// A random causal order: repeatedly take a random op whose parents are all taken.
fn causal_order(rng: &mut Rng, genesis: &SpaceOp, ops: &[SpaceOp]) -> Vec<SpaceOp> {
    let mut taken: std::collections::HashSet<_> = [genesis.id()].into_iter().collect();
    let mut left: Vec<SpaceOp> = ops.to_vec();
    let mut out = Vec::with_capacity(ops.len());
    while !left.is_empty() {
        let ready: Vec<usize> = (0..left.len())
            .filter(|&i| left[i].parents.iter().all(|p| taken.contains(p)))
            .collect();
        let i = ready[rng.below(ready.len())];
        let op = left.swap_remove(i);
        taken.insert(op.id());
        out.push(op);
    }
    out
}

fn replay(genesis: &SpaceOp, order: &[SpaceOp]) -> ControlLog {
    let mut log = ControlLog::create(genesis.clone()).unwrap();
    for o in order {
        log.insert(o.clone()).unwrap();
    }
    log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn every_delivery_order_gives_the_same_state(dag_seed in any::<u64>(), order_seed in any::<u64>()) {
        let (genesis, ops) = random_dag(dag_seed, 3, 40);
        let mut rng = Rng::new(order_seed);
        let mut reference = replay(&genesis, &ops);
        let state = reference.state().clone();
        let trace = reference.trace();
        check_trace(&mut reference);
        for round in 0..4 {
            let order = if round % 2 == 0 {
                causal_order(&mut rng, &genesis, &ops)
            } else {
                // Any order at all: ops wait for their parents.
                let mut o = ops.clone();
                for i in (1..o.len()).rev() {
                    o.swap(i, rng.below(i + 1));
                }
                o
            };
            let mut log = replay(&genesis, &order);
            prop_assert_eq!(log.pending_len(), 0);
            prop_assert_eq!(log.state(), &state);
            prop_assert_eq!(log.trace(), trace.clone());
        }
    }
}
