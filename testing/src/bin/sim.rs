//! `dopus-sim`: runs seeds of the simulated network (docs/simulation.md).
//!
//! ```text
//! dopus-sim [--seeds N] [--start S] [--jobs J]   N seeds from S (default 200 from 0)
//! dopus-sim --seed S [--trace-hash] [--verbose]  one seed alone
//! ```
//! The last line of a multi-seed run is `sim: N seeds, F failures`; the exit status is non-zero
//! when any seed failed. A failing seed prints itself, with the command that replays it alone.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool"
)]

use dopus_testing::sim::scenario::{self, Outcome};
use std::process::ExitCode;
use std::time::Instant;

struct Args {
    seeds: u64,
    start: u64,
    one: Option<u64>,
    trace_hash: bool,
    verbose: bool,
    jobs: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: 200,
        start: 0,
        one: None,
        trace_hash: false,
        verbose: false,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<u64, String> {
        v.ok_or(format!("{what} needs a value"))?
            .parse::<u64>()
            .map_err(|e| format!("{what}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seeds" => a.seeds = num(it.next(), "--seeds")?,
            "--start" => a.start = num(it.next(), "--start")?,
            "--seed" => a.one = Some(num(it.next(), "--seed")?),
            "--jobs" => a.jobs = num(it.next(), "--jobs")?.max(1) as usize,
            "--trace-hash" => a.trace_hash = true,
            "--verbose" | "-v" => a.verbose = true,
            "--help" | "-h" => {
                return Err("usage: dopus-sim [--seeds N] [--start S] [--jobs J] | --seed S [--trace-hash] [--verbose]".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn report(o: &Outcome, verbose: bool) {
    if o.failures.is_empty() {
        return;
    }
    println!(
        "seed {} FAILED ({:?}, {} nodes, {} texts): replay with scripts/sim.sh --seed {} --verbose",
        o.seed, o.focus, o.nodes, o.texts, o.seed
    );
    for f in &o.failures {
        println!("  {f}");
    }
    if verbose {
        println!("  last trace lines:");
        for l in &o.tail {
            println!("    {l}");
        }
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.one {
        let o = scenario::run(seed, None);
        if args.trace_hash {
            println!("{}", o.trace_hash);
        } else {
            println!(
                "seed {seed}: {:?}, {} nodes, {} texts, {} resets, quiet at {:?} ms, {} events, trace {}",
                o.focus, o.nodes, o.texts, o.resets, o.quiet_at, o.events, o.trace_hash
            );
        }
        report(&o, args.verbose);
        if args.verbose && o.failures.is_empty() {
            for l in &o.tail {
                println!("    {l}");
            }
        }
        return if o.failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let started = Instant::now();
    let seeds: Vec<u64> = (args.start..args.start + args.seeds).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..args.jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else { break };
                    let o = scenario::run(seed, None);
                    if let Ok(mut r) = results.lock() {
                        r.push(o);
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|o| o.seed);
    let failures = results.iter().filter(|o| !o.failures.is_empty()).count();
    for o in &results {
        report(o, args.verbose);
    }
    if args.verbose {
        for o in results.iter().filter(|o| o.resets > 0) {
            println!("seed {} ({:?}): {} resets", o.seed, o.focus, o.resets);
        }
    }
    let texts: usize = results.iter().map(|o| o.texts).sum();
    let resets: u64 = results.iter().map(|o| o.resets).sum();
    eprintln!(
        "sim: {} texts, {} resets, {:.1} s wall, {} jobs",
        texts,
        resets,
        started.elapsed().as_secs_f64(),
        args.jobs
    );
    println!("sim: {} seeds, {} failures", results.len(), failures);
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
