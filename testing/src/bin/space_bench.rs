//! `dopus-space-bench`: message delivery in a space of N members in the simulated network
//! (docs/benchmarks.md, "Spaces: delivery").
//!
//! ```text
//! dopus-space-bench [--members 20,100] [--messages 20] [--seed 1]
//! ```
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool"
)]

use dopus_testing::sim::spaces::delivery_bench;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut members = vec![20usize, 100];
    let mut messages = 20usize;
    let mut seed = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--members" => members = v.split(',').filter_map(|x| x.parse().ok()).collect(),
            "--messages" => messages = v.parse().unwrap_or(messages),
            "--seed" => seed = v.parse().unwrap_or(seed),
            _ => {
                eprintln!("usage: dopus-space-bench [--members 20,100] [--messages 20] [--seed 1]");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "members | messages | reached all | reach all (median / worst, virtual ms) | envelopes/msg | bytes/msg | set-up wall ms | measured wall ms | wall ms/msg"
    );
    for n in members {
        match delivery_bench(seed, n, messages) {
            Ok(r) => println!(
                "{} | {} | {} | {} / {} | {:.0} | {:.0} | {} | {} | {:.0}",
                r.members,
                r.messages,
                r.complete,
                r.reach_all_ms.0,
                r.reach_all_ms.1,
                r.envelopes_per_message,
                r.bytes_per_message,
                r.setup_ms,
                r.wall_ms,
                r.wall_ms as f64 / r.messages.max(1) as f64
            ),
            Err(e) => {
                eprintln!("{n} members: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
