//! Settings with effects on the network, in the simulated network.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use dopus_testing::sim::{Action, Cmd, Faults, Sim};

const ALICE: usize = 0;
const BOB: usize = 1;

/// Turning relay-only on closes the direct connections that already exist (they may be
/// direct, and would keep telling the contact our address); messages still arrive.
#[test]
fn turning_relay_only_on_closes_direct_connections() {
    let mut linked = 0;
    for seed in 0..20 {
        let faults = Faults {
            latency_ms: (5, 20),
            ..Faults::default()
        };
        let mut sim = Sim::new(seed, 2, faults);
        sim.start_all();
        sim.schedule(0, Action::Cmd(ALICE, Cmd::AddContact { peer: BOB }));
        sim.schedule(0, Action::Cmd(BOB, Cmd::AddContact { peer: ALICE }));
        for at in [1_000, 2_000, 3_000] {
            let send = Cmd::Send {
                peer: BOB,
                count: 2,
            };
            sim.schedule(at, Action::Cmd(ALICE, send));
        }
        sim.run_until(10_000);
        if !sim.has_link(ALICE, BOB) {
            // The faults of this seed kept the pair apart; nothing to close.
            continue;
        }
        linked += 1;
        sim.schedule(10_001, Action::Cmd(ALICE, Cmd::RelayOnly(true)));
        sim.run_until(10_002);
        assert!(!sim.has_link(ALICE, BOB), "seed {seed}: still linked");
        let send = Cmd::Send {
            peer: BOB,
            count: 3,
        };
        sim.schedule(11_000, Action::Cmd(ALICE, send));
        assert!(
            sim.run_until_quiet(2 * 60 * 60 * 1000),
            "seed {seed}: never quiet"
        );
        let failures = sim.check();
        assert!(failures.is_empty(), "seed {seed}: {}", failures.join("\n"));
    }
    assert!(linked >= 10, "only {linked} of 20 seeds connected directly");
}
