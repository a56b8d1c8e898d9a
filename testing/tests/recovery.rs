//! Issue 21 in the simulated network: a hostile server that flips relayed ciphertexts or
//! reflects envelopes must not buy session resets or one-time key claims. Each failed envelope
//! has its own grace (`machine/recovery.rs`); a reflected one is dropped before recovery.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use dopus_testing::sim::{Action, Cmd, Faults, Rng, Sim, Tamper, TamperCtx};
use std::sync::{Arc, Mutex};

const ALICE: usize = 0;
const BOB: usize = 1;

/// Alice and bob, contacts, talking through the server only (no direct path), with sessions
/// both ways established by t = 5 s.
fn pair(seed: u64) -> Sim {
    let faults = Faults {
        latency_ms: (10, 30),
        direct: false,
        ..Faults::default()
    };
    let mut sim = Sim::new(seed, 2, faults);
    sim.start_all();
    sim.schedule(0, Action::Cmd(ALICE, Cmd::AddContact { peer: BOB }));
    sim.schedule(0, Action::Cmd(BOB, Cmd::AddContact { peer: ALICE }));
    sim.schedule(
        1_000,
        Action::Cmd(
            ALICE,
            Cmd::Send {
                peer: BOB,
                count: 1,
            },
        ),
    );
    sim.schedule(
        2_000,
        Action::Cmd(
            BOB,
            Cmd::Send {
                peer: ALICE,
                count: 1,
            },
        ),
    );
    sim.schedule(
        3_000,
        Action::Cmd(
            ALICE,
            Cmd::Send {
                peer: BOB,
                count: 1,
            },
        ),
    );
    sim.run_until(5_000);
    sim
}

fn finish(sim: &mut Sim) {
    assert!(
        sim.run_until_quiet(sim.now + 2 * 60 * 60 * 1000),
        "never went quiet"
    );
    let failures = sim.check();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn claims(sim: &Sim) -> [(u64, u64); 4] {
    [
        sim.otk_claims(BOB, ALICE),
        sim.otk_claims(ALICE, BOB),
        sim.otk_claims(ALICE, ALICE),
        sim.otk_claims(BOB, BOB),
    ]
}

/// The case: the first copy of one of alice's envelopes is flipped (her 1 s retry
/// repairs it), then the first copy of a second envelope 4.5 s later (its own retry repairs it
/// 0.5 s after the first failure's grace ended). No reset, no key claimed.
#[test]
fn two_flips_four_and_a_half_seconds_apart_cost_nothing() {
    for seed in 0..4 {
        let mut sim = pair(seed);
        let before = claims(&sim);
        let flipped: Arc<Mutex<Vec<(u64, uuid::Uuid)>>> = Arc::default();
        let log = flipped.clone();
        sim.set_tamper_hook(Box::new(move |c: &TamperCtx| {
            let mut log = log.lock().unwrap();
            let due = match log.len() {
                0 => c.at_ms >= 10_000,
                1 => c.at_ms >= 14_500,
                _ => false,
            };
            if due && c.from == ALICE && c.to == BOB && c.copy == 0 {
                log.push((c.at_ms, c.id.unwrap()));
                Tamper::Flip
            } else {
                Tamper::Pass
            }
        }));
        sim.schedule(
            10_000,
            Action::Cmd(
                ALICE,
                Cmd::Send {
                    peer: BOB,
                    count: 1,
                },
            ),
        );
        sim.schedule(
            14_500,
            Action::Cmd(
                ALICE,
                Cmd::Send {
                    peer: BOB,
                    count: 1,
                },
            ),
        );
        finish(&mut sim);
        let flipped = flipped.lock().unwrap().clone();
        assert_eq!(flipped.len(), 2, "seed {seed}: {flipped:?}");
        assert!(flipped[1].0 - flipped[0].0 >= 4_400, "{flipped:?}");
        assert_eq!(sim.stats(BOB).resets_asked, 0, "seed {seed}: bob reset");
        assert_eq!(sim.stats(ALICE).resets_asked, 0, "seed {seed}: alice reset");
        assert_eq!(claims(&sim), before, "seed {seed}: one-time keys claimed");
    }
}

/// One of alice's envelopes handed back to alice with its outer `to` rewritten to her: dropped
/// before recovery; she never claims her own keys or resets with herself, and her retry
/// reaches bob.
#[test]
fn a_reflected_envelope_costs_nothing() {
    for seed in 0..4 {
        let mut sim = pair(seed);
        let before = claims(&sim);
        sim.schedule(
            9_990,
            Action::ReflectNext {
                from: ALICE,
                to: BOB,
            },
        );
        sim.schedule(
            10_000,
            Action::Cmd(
                ALICE,
                Cmd::Send {
                    peer: BOB,
                    count: 1,
                },
            ),
        );
        // And a second one later, after the first one's 5 s would have run out.
        sim.schedule(
            20_000,
            Action::ReflectNext {
                from: ALICE,
                to: BOB,
            },
        );
        sim.schedule(
            20_010,
            Action::Cmd(
                ALICE,
                Cmd::Send {
                    peer: BOB,
                    count: 2,
                },
            ),
        );
        finish(&mut sim);
        assert_eq!(sim.stats(ALICE).resets_asked, 0, "seed {seed}");
        assert_eq!(sim.stats(BOB).resets_asked, 0, "seed {seed}");
        assert_eq!(
            sim.otk_claims(ALICE, ALICE),
            (0, 0),
            "seed {seed}: own keys claimed"
        );
        assert_eq!(claims(&sim), before, "seed {seed}");
    }
}

/// Flips at random times: about a third of the first copies of alice's envelopes to bob over
/// a minute of her messages, edits and deletes. Every one is repaired by its own retry within
/// its grace: no reset, no key claimed.
#[test]
fn random_first_copy_flips_cost_nothing() {
    for seed in 0..8 {
        let mut sim = pair(seed);
        let before = claims(&sim);
        let mut rng = Rng::new(seed);
        let mut plan = Rng::new(seed ^ 0xff);
        let flips = Arc::new(Mutex::new(0u32));
        let count = flips.clone();
        sim.set_tamper_hook(Box::new(move |c: &TamperCtx| {
            if c.from == ALICE && c.to == BOB && c.copy == 0 && rng.chance(330) {
                *count.lock().unwrap() += 1;
                Tamper::Flip
            } else {
                Tamper::Pass
            }
        }));
        for _ in 0..40 {
            let at = plan.range(6_000, 66_000);
            let cmd = match plan.below(10) {
                0 => Cmd::Edit { peer: BOB },
                1 => Cmd::Delete { peer: BOB },
                _ => Cmd::Send {
                    peer: BOB,
                    count: 1 + plan.below(3) as usize,
                },
            };
            sim.schedule(at, Action::Cmd(ALICE, cmd));
        }
        finish(&mut sim);
        let flips = *flips.lock().unwrap();
        assert!(flips >= 5, "seed {seed}: only {flips} flips");
        assert_eq!(sim.stats(BOB).resets_asked, 0, "seed {seed}: {flips} flips");
        assert_eq!(sim.stats(ALICE).resets_asked, 0, "seed {seed}");
        assert_eq!(claims(&sim), before, "seed {seed}");
    }
}

/// The control: an envelope whose every copy is flipped for longer than its grace (its copies
/// at 0, 1 and 3 s; the 5 s grace ends before the copy at 7 s) does cost
/// one reset after its grace, and one one-time key of alice's.
#[test]
fn an_envelope_never_repaired_costs_one_reset() {
    let mut sim = pair(1);
    let before = sim.otk_claims(BOB, ALICE);
    let target: Arc<Mutex<Option<uuid::Uuid>>> = Arc::default();
    let t = target.clone();
    sim.set_tamper_hook(Box::new(move |c: &TamperCtx| {
        let mut t = t.lock().unwrap();
        if c.from == ALICE && c.to == BOB && c.at_ms >= 10_000 && t.is_none() {
            *t = c.id;
        }
        if c.id.is_some() && c.id == *t && c.at_ms < 15_000 {
            Tamper::Flip
        } else {
            Tamper::Pass
        }
    }));
    sim.schedule(
        10_000,
        Action::Cmd(
            ALICE,
            Cmd::Send {
                peer: BOB,
                count: 1,
            },
        ),
    );
    finish(&mut sim);
    assert_eq!(sim.stats(BOB).resets_asked, 1);
    let after = sim.otk_claims(BOB, ALICE);
    assert_eq!(after.0 + after.1, before.0 + before.1 + 1);
}

/// Bob lost his sessions with alice; his grace for her envelope ends while he is cut from the
/// server. The reset starts as soon as he is back, not a throttle window (30 s) later: a
/// reset tried without the server must not spend the throttle.
#[test]
fn a_reset_due_while_the_server_is_away_starts_when_it_returns() {
    for seed in 0..4 {
        let mut sim = pair(seed);
        sim.schedule(
            6_000,
            Action::LoseSessions {
                node: BOB,
                peer: ALICE,
            },
        );
        sim.schedule(
            10_000,
            Action::Cmd(
                ALICE,
                Cmd::Send {
                    peer: BOB,
                    count: 1,
                },
            ),
        );
        sim.schedule(
            14_000,
            Action::CutServer {
                node: BOB,
                ms: 4_000,
            },
        );
        finish(&mut sim);
        let resets = &sim.stats(BOB).reset_times;
        assert_eq!(resets.len(), 1, "seed {seed}: {resets:?}");
        assert!(
            resets[0] < 25_000,
            "seed {seed}: the reset waited for the throttle: {resets:?}"
        );
    }
}

/// Bob writes, alice acknowledges; the server flips alice's receipts at random (never two in a
/// row). A receipt is never re-sent, so its id is never repaired, but the next envelope of
/// alice's opens on the same session: no reset, no key claimed, and bob's texts are all
/// acknowledged in the end (his retries get fresh receipts).
#[test]
fn flipped_receipts_cost_nothing() {
    for seed in 0..6 {
        let mut sim = pair(seed);
        let before = claims(&sim);
        let mut rng = Rng::new(seed ^ 0x5eed);
        let mut plan = Rng::new(seed ^ 0xabc);
        let mut last_flipped = false;
        let flips = Arc::new(Mutex::new(0u32));
        let count = flips.clone();
        sim.set_tamper_hook(Box::new(move |c: &TamperCtx| {
            if c.from == ALICE && c.to == BOB {
                let flip = !last_flipped && rng.chance(400);
                last_flipped = flip;
                if flip {
                    *count.lock().unwrap() += 1;
                    return Tamper::Flip;
                }
            }
            Tamper::Pass
        }));
        for _ in 0..40 {
            let at = plan.range(6_000, 66_000);
            sim.schedule(
                at,
                Action::Cmd(
                    BOB,
                    Cmd::Send {
                        peer: ALICE,
                        count: 1 + plan.below(2) as usize,
                    },
                ),
            );
        }
        finish(&mut sim);
        let flips = *flips.lock().unwrap();
        assert!(flips >= 5, "seed {seed}: only {flips} flips");
        assert_eq!(sim.stats(BOB).resets_asked, 0, "seed {seed}: {flips} flips");
        assert_eq!(sim.stats(ALICE).resets_asked, 0, "seed {seed}");
        assert_eq!(claims(&sim), before, "seed {seed}");
    }
}
