//! Ordering and exactly-once display across 1,000 messages while either node is killed with
//! SIGKILL at random points and restarted. The run is seeded; the seed is printed.

use crate::harness::{Rng, SERIAL, TestNode, TestServer, contact_pair};
use std::time::{Duration, Instant};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// What is wrong with `node`'s view of the conversation: `None` when every message of both
/// senders is there exactly once and each sender's messages are in send order.
fn check(
    node: &TestNode,
    peer: &TestNode,
    sent: &[Vec<String>; 2],
    users: &[String; 2],
) -> Option<String> {
    let history = node.api().history(&peer.user_id);
    let mut problems = Vec::new();
    for (s, expected) in sent.iter().enumerate() {
        let shown: Vec<&str> = history
            .iter()
            .filter(|m| m["sender"] == users[s].as_str())
            .filter_map(|m| m["body"].as_str())
            .collect();
        if shown != expected.iter().map(String::as_str).collect::<Vec<_>>() {
            let missing = expected
                .iter()
                .filter(|e| !shown.contains(&e.as_str()))
                .count();
            let mut sorted = shown.clone();
            sorted.sort_unstable();
            sorted.dedup();
            let duplicates = shown.len() - sorted.len();
            let out_of_order = shown.windows(2).filter(|w| w[0] > w[1]).count();
            problems.push(format!(
                "{}'s view of sender {}: {} shown of {} sent, {missing} missing, {duplicates} duplicates, {out_of_order} out of order",
                node.name,
                s,
                shown.len(),
                expected.len()
            ));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// History of this test: its first run (seed 1, 7 kills) lost 4 of 1,000 messages, showed
/// others out of send order, and the receiver saw 21 envelopes fail Olm authentication with no
/// attacker. Causes found and fixed: envelopes parked in the mailbox blocked later ones; a window
/// sealed at once but relayed one by one was overtaken by receipts sealed later (the receiver
/// keeps only 5 receiving chains); stale mailbox copies raced fresh re-sends and triggered
/// needless session resets; display followed arrival order. Each sender's messages are now shown
/// in `sent_at` order, which the sender keeps strictly increasing (docs/peer-protocol.md,
/// "Order"). Replay a seed with `DOPUS_CHAOS_SEED=N`; keep the nodes' logs with
/// `DOPUS_TEST_KEEP=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_messages_exactly_once_in_order_across_random_kill9() {
    let _serial = SERIAL.lock().await;
    let seed = env_u64("DOPUS_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    println!("chaos seed: {seed} (replay with DOPUS_CHAOS_SEED={seed})");
    let total = env_u64("DOPUS_CHAOS_MESSAGES").unwrap_or(1_000);
    let batches = 10;
    let per_batch = total / batches;
    let mut rng = Rng::new(seed);

    let server = TestServer::start().await;
    let (a, b) = contact_pair(&server).await;
    let mut nodes = [a, b];
    let users = [nodes[0].user_id.clone(), nodes[1].user_id.clone()];
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut kills = 0;
    for batch in 0..batches {
        // In most batches one node dies at a random point and comes back after the batch.
        let kill = (rng.below(10) < 7).then(|| (rng.below(per_batch), rng.below(2) as usize));
        let mut down = None;
        let mut i = 0;
        while i < per_batch {
            if let Some((at, who)) = kill
                && at == i
            {
                nodes[who].kill9();
                down = Some(who);
                kills += 1;
                println!(
                    "batch {batch}: killed {} after {i} messages",
                    nodes[who].name
                );
            }
            let from = match down {
                Some(d) => 1 - d,
                None => rng.below(2) as usize,
            };
            // One message per call, or a few in one batch call (these travel as one bulk
            // payload over the channel), never past the kill point.
            let until = match kill {
                Some((at, _)) if at > i => at,
                _ => per_batch,
            };
            let k = if rng.below(3) == 0 {
                2 + rng.below(5)
            } else {
                1
            }
            .min(until - i);
            let n = sent[0].len() + sent[1].len();
            let bodies: Vec<String> = (n..n + k as usize)
                .map(|n| format!("{}-{n:05}", nodes[from].name))
                .collect();
            if k == 1 {
                nodes[from].api().send(&users[1 - from], &bodies[0]);
            } else {
                nodes[from].api().send_batch(&users[1 - from], &bodies);
            }
            sent[from].extend(bodies);
            i += k;
        }
        if let Some(d) = down {
            nodes[d].start(&server.url).await;
        }
    }
    println!(
        "sent {} (alice) + {} (bob) messages, {kills} kills",
        sent[0].len(),
        sent[1].len()
    );

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last;
    loop {
        last = [
            check(&nodes[0], &nodes[1], &sent, &users),
            check(&nodes[1], &nodes[0], &sent, &users),
        ];
        if last.iter().all(Option::is_none) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: histories did not converge within 240 s: {last:?}\n--- alice ---\n{}\n--- bob ---\n{}",
            nodes[0].log_tail(),
            nodes[1].log_tail()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Late retries must not add duplicates.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (x, y) in [(0, 1), (1, 0)] {
        if let Some(problem) = check(&nodes[x], &nodes[y], &sent, &users) {
            panic!("seed {seed}: after settling: {problem}");
        }
    }
    server.stop().await;
}
