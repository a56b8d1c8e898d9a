//! Voice channel presence in the simulated network (issue 16): random joins and leaves under
//! delay, reordering and relay loss, a crash while in the channel, a kick while in it; after
//! the faults end every member sees exactly who is in the channel, each mesh is the others, and
//! every pair in the channel shares a connection carrying audio (negotiated as dopus-rtc does).
//! `DOPUS_VOICE_NET_SEEDS=<n>` runs more seeds.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use dopus_testing::sim::voice;

#[test]
fn voice_presence_converges_under_faults_kicks_and_crashes() {
    let extra: u64 = std::env::var("DOPUS_VOICE_NET_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut in_channel = 0;
    // 40 seeds by default: seed 35 is the one that found a lost media answer leaving a pair
    // without audio for good (docs/media.md).
    for seed in 0..40 + extra {
        let nodes = 3 + (seed % 4) as usize;
        let o = voice::run(seed, nodes);
        assert!(
            o.failures.is_empty(),
            "voice seed {seed} with {nodes} nodes failed:\n{}\n--- trace tail ---\n{}",
            o.failures.join("\n"),
            o.tail[o.tail.len().saturating_sub(60)..].join("\n")
        );
        eprintln!(
            "seed {seed}: {} nodes, {} voice commands, {} in the channel at the end",
            o.nodes, o.commands, o.in_channel
        );
        in_channel += o.in_channel;
    }
    assert!(in_channel > 0, "nobody was in the channel at the end");
}

#[test]
fn the_same_seed_gives_the_same_voice_trace() {
    let a = voice::run(5, 4);
    let b = voice::run(5, 4);
    assert_eq!(a.trace_hash, b.trace_hash);
}
