//! Store benchmarks: unlock with the default Argon2id cost, batched inserts, deferred
//! full-text indexing (chunked maintenance, and the first search after a large unindexed
//! batch), the newest page of a large conversation, and full-text search over it.
//!
//! Run: `cargo run --release -p dopus-bench-store -- [--history 1000000] [--inserts 100000]`
//! Results go to stdout as a Markdown table; record them in docs/benchmarks.md.
#![allow(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use anyhow::{Context, Result};
use clap::Parser;
use dopus_core::store::{
    Change, Changes, ConversationId, DeliveryState, MessageId, MessageKind, NewMessage, Outcome,
    SearchQuery, Seq, Store,
};
use dopus_store::{KdfParams, SqliteStore};
use dopus_types::{Ed25519Key, Timestamp, UserId};
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(about = "DiscordOpus store benchmarks")]
struct Args {
    /// Messages in the large conversation used for the page and search benchmarks.
    #[arg(long, default_value_t = 1_000_000)]
    history: u64,
    /// Messages inserted for the insert-throughput benchmark.
    #[arg(long, default_value_t = 100_000)]
    inserts: u64,
    /// Messages per transaction when inserting.
    #[arg(long, default_value_t = 1_000)]
    batch: u64,
    /// Messages per `index_pending` call when indexing a tail (the maintenance step).
    #[arg(long, default_value_t = 10_000)]
    index_chunk: usize,
    /// Unlock repetitions.
    #[arg(long, default_value_t = 5)]
    unlocks: usize,
    /// Repetitions of each query.
    #[arg(long, default_value_t = 50)]
    repeats: usize,
    /// Where to put the stores (a temporary directory by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const PASS: &str = "benchmark passphrase";

/// A small deterministic generator, so every run inserts the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const VOCABULARY: usize = 20_000;

/// Pseudo-words from syllables; index 0 is the most frequent (Zipf-like draw below).
fn vocabulary() -> Vec<String> {
    const ONSETS: &[&str] = &[
        "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
        "br", "st", "tr", "pl",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut words = Vec::with_capacity(VOCABULARY);
    let mut seen = std::collections::HashSet::new();
    while words.len() < VOCABULARY {
        let syllables = 1 + rng.below(3) as usize;
        let mut w = String::new();
        for _ in 0..syllables {
            w.push_str(ONSETS[rng.below(ONSETS.len() as u64) as usize]);
            w.push_str(VOWELS[rng.below(VOWELS.len() as u64) as usize]);
        }
        if seen.insert(w.clone()) {
            words.push(w);
        }
    }
    words
}

/// A body of 4 to 20 words with a skewed word distribution (a few very common words, a long
/// tail), plus a marker word at a known rate for the "rare" search.
fn body(rng: &mut Rng, words: &[String], n: u64) -> String {
    let len = 4 + rng.below(17);
    let mut out = String::new();
    for i in 0..len {
        if i > 0 {
            out.push(' ');
        }
        // Square of a uniform draw: index density grows towards 0 (common words).
        let u = rng.below(1 << 20) as f64 / f64::from(1u32 << 20);
        let idx = ((u * u) * words.len() as f64) as usize;
        out.push_str(&words[idx.min(words.len() - 1)]);
    }
    if n % 1000 == 7 {
        out.push_str(" quokka");
    }
    out
}

fn user(seed: u8) -> Result<UserId> {
    let vk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key();
    Ok(UserId::from_key(Ed25519Key::from_bytes(vk.as_bytes())?))
}

fn message(n: u64, conversation: ConversationId, sender: UserId, body: String) -> NewMessage {
    NewMessage {
        preview: None,
        id: MessageId(Uuid::from_u64_pair(0x0190_0000_0000_7000, n)),
        conversation,
        sender,
        kind: MessageKind::Text,
        body,
        reply_to: None,
        sent_at: Timestamp(1_700_000_000_000 + n),
        received_at: Timestamp(1_700_000_000_000 + n),
        delivery: DeliveryState::Delivered,
    }
}

/// Inserts `count` messages in batches; returns the elapsed time.
fn fill(
    store: &mut SqliteStore,
    count: u64,
    batch: u64,
    conversation: ConversationId,
    first: u64,
) -> Result<Duration> {
    let words = vocabulary();
    let mut rng = Rng(0xdead_beef_cafe_f00d ^ first);
    let sender = user(2)?;
    let start = Instant::now();
    let mut n = first;
    while n < first + count {
        let end = (n + batch).min(first + count);
        let changes: Changes = (n..end)
            .map(|i| {
                Change::InsertMessage(message(i, conversation, sender, body(&mut rng, &words, i)))
            })
            .collect();
        let applied = store.apply(changes)?;
        anyhow::ensure!(
            applied
                .outcomes
                .iter()
                .all(|o| matches!(o, Outcome::Inserted(_))),
            "every insert is new"
        );
        n = end;
    }
    Ok(start.elapsed())
}

/// This process's CPU time (user + system) from /proc/self/stat, if readable. The machine is
/// shared, so wall-clock rates undercount; CPU-time rates show what one idle core would do.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // CLK_TCK is 100 on every Linux configuration we run on.
    Some(Duration::from_millis(ticks * 10))
}

/// Wall-clock and CPU time of one run of `f`.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration, Option<Duration>)> {
    let cpu_before = cpu_time();
    let start = Instant::now();
    let out = f()?;
    let wall = start.elapsed();
    let cpu = match (cpu_before, cpu_time()) {
        (Some(a), Some(b)) if b >= a => Some(b - a),
        _ => None,
    };
    Ok((out, wall, cpu))
}

/// "N/s wall (M per CPU-second)".
fn rates(n: u64, wall: Duration, cpu: Option<Duration>) -> String {
    let per_cpu = match cpu {
        Some(c) if !c.is_zero() => format!("{:.0} per CPU-second", n as f64 / c.as_secs_f64()),
        _ => "CPU time unavailable".into(),
    };
    format!("{:.0}/s wall ({per_cpu})", n as f64 / wall.as_secs_f64())
}

/// Indexes the whole pending tail with maintenance calls of `chunk` rows; returns the rows.
fn index_all(store: &mut SqliteStore, chunk: usize) -> Result<u64> {
    let mut total = 0u64;
    loop {
        let n = store.index_pending(chunk)?;
        total += n as u64;
        if n < chunk {
            return Ok(total);
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

struct Stats {
    median: Duration,
    p99: Duration,
    max: Duration,
}

fn measure(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<Stats> {
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(Stats {
        median: at(0.5),
        p99: at(0.99),
        max: times[times.len() - 1],
    })
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn row(name: &str, s: &Stats, target: &str) {
    println!(
        "| {name} | {} | {} | {} | {target} |",
        ms(s.median),
        ms(s.p99),
        ms(s.max)
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    println!("load average at start: {}", load_average());
    println!(
        "store benchmark: history {} messages, inserts {} in batches of {}",
        args.history, args.inserts, args.batch
    );

    println!();
    println!("| what | median ms | p99 ms | max ms | target |");
    println!("| --- | --- | --- | --- | --- |");

    // 1. Unlock with the default cost.
    if args.unlocks > 0 {
        let unlock_dir = root.join("unlock");
        SqliteStore::create(&unlock_dir, PASS, KdfParams::DEFAULT)?.close()?;
        let unlock = measure(args.unlocks, || {
            SqliteStore::open(&unlock_dir, PASS)?.close()?;
            Ok(())
        })?;
        let p = KdfParams::DEFAULT;
        row(
            &format!(
                "unlock (Argon2id m={} MiB, t={}, p={}) + open",
                p.m_cost_kib / 1024,
                p.t_cost,
                p.p_cost
            ),
            &unlock,
            "≤ 1000",
        );
    }

    // 2. Insert throughput into a fresh store (no indexing on the write path).
    let insert_dir = root.join("insert");
    let mut store = SqliteStore::create(&insert_dir, PASS, KdfParams::INSECURE_FOR_TESTS)?;
    let conv = ConversationId::Direct(user(2)?);
    let (took, _, cpu) = timed(|| fill(&mut store, args.inserts, args.batch, conv, 0))?;
    let insert_rates = rates(args.inserts, took, cpu);
    println!();
    println!("| throughput | result | target |");
    println!("| --- | --- | --- |");
    println!(
        "| batched insert ({} messages, {} per transaction, FTS deferred) | {insert_rates} | ≥ 50000/s |",
        args.inserts, args.batch
    );
    // 2b. The first search after that unindexed batch: it indexes the whole tail itself.
    let quokka = SearchQuery {
        text: "quokka".into(),
        conversation: None,
        within: None,
        before: None,
        limit: 50,
    };
    let (hits, wall, cpu) = timed(|| Ok(store.search(&quokka)?))?;
    anyhow::ensure!(!hits.is_empty(), "the search finds the fresh batch");
    println!(
        "| first search after the unindexed {}-message batch (indexes it) | {} ms wall, {} ms CPU | |",
        args.inserts,
        ms(wall),
        cpu.map_or("?".into(), ms)
    );
    let (_, wall, _) = timed(|| Ok(store.search(&quokka)?))?;
    println!(
        "| the same search again (nothing pending) | {} ms wall | |",
        ms(wall)
    );
    // 2c. Another batch of the same size, indexed by maintenance in chunks.
    let (took, _, cpu) = timed(|| fill(&mut store, args.inserts, args.batch, conv, args.inserts))?;
    println!(
        "| second batched insert, {} more messages on top | {} | ≥ 50000/s |",
        args.inserts,
        rates(args.inserts, took, cpu)
    );
    let (indexed, wall, cpu) = timed(|| index_all(&mut store, args.index_chunk))?;
    anyhow::ensure!(indexed == args.inserts, "maintenance indexed the tail");
    println!(
        "| index_pending of that {}-message tail, {} per call | {} ms wall, {} ms CPU: {} | |",
        args.inserts,
        args.index_chunk,
        ms(wall),
        cpu.map_or("?".into(), ms),
        rates(indexed, wall, cpu)
    );
    let (_, wall, cpu) = timed(|| Ok(store.index_pending(args.index_chunk)?))?;
    println!(
        "| index_pending with nothing pending | {} ms wall, {} ms CPU | |",
        ms(wall),
        cpu.map_or("?".into(), ms)
    );
    store.close()?;
    println!("load average during the run: {}", load_average());
    if args.history == 0 {
        return Ok(());
    }
    println!();
    println!("| what | median ms | p99 ms | max ms | target |");
    println!("| --- | --- | --- | --- | --- |");

    // 3 and 4. A large conversation: the newest page and search.
    let big_dir = root.join("history");
    let mut store = SqliteStore::create(&big_dir, PASS, KdfParams::INSECURE_FOR_TESTS)?;
    let fill_batch = args.batch.max(10_000);
    let fill_time = fill(&mut store, args.history, fill_batch, conv, 0)?;
    let (history_indexed, history_index_wall, history_index_cpu) =
        timed(|| index_all(&mut store, args.index_chunk))?;
    // A few other conversations, so the index is not trivially one conversation.
    for c in 3..6u8 {
        fill(
            &mut store,
            1_000,
            1_000,
            ConversationId::Direct(user(c)?),
            10_000_000 * u64::from(c),
        )?;
    }
    index_all(&mut store, args.index_chunk)?;
    store.close()?;
    let db_bytes = std::fs::metadata(big_dir.join(dopus_store::DB_FILE_NAME))?.len();

    // Reopen so the page cache starts cold (the OS cache stays warm).
    let mut store = SqliteStore::open(&big_dir, PASS)?;
    let cold_page = measure(1, || {
        let page = store.messages_before(&conv, None, 50)?;
        anyhow::ensure!(page.len() == 50);
        Ok(())
    })?;
    row(
        "newest 50 of the 1M conversation, first query after open",
        &cold_page,
        "≤ 5",
    );
    let page = measure(args.repeats, || {
        let page = store.messages_before(&conv, None, 50)?;
        anyhow::ensure!(page.len() == 50);
        Ok(())
    })?;
    row("newest 50 of the 1M conversation", &page, "≤ 5");
    let mid = Seq(args.history / 2);
    let deep = measure(args.repeats, || {
        let page = store.messages_before(&conv, Some(mid), 50)?;
        anyhow::ensure!(page.len() == 50);
        Ok(())
    })?;
    row("50 older than a cursor mid-history", &deep, "≤ 5");
    // A cursor that is no message of the conversation (one past the newest, as the read-receipt
    // path uses it) is an arrival bound: the same index scan with a filter.
    let past = Seq(u64::MAX / 2);
    let past_newest = measure(args.repeats, || {
        let page = store.messages_before(&conv, Some(past), 50)?;
        anyhow::ensure!(page.len() == 50);
        Ok(())
    })?;
    row(
        "50 before a cursor past the newest (arrival bound)",
        &past_newest,
        "≤ 5",
    );

    let search = |text: &str| -> Result<Stats> {
        let query = SearchQuery {
            text: text.into(),
            conversation: None,
            within: None,
            before: None,
            limit: 50,
        };
        let hits = store.search(&query)?;
        anyhow::ensure!(!hits.is_empty(), "query {text:?} finds something");
        measure(args.repeats, || {
            store.search(&query)?;
            Ok(())
        })
    };
    let words = vocabulary();
    let rare = search("quokka")?;
    row(
        "search a rare word (1 in 1000 messages), top 50",
        &rare,
        "≤ 50",
    );
    let common = search(&words[0])?;
    row(
        &format!(
            "search the most common word ({:?}, {} letters), top 50",
            words[0],
            words[0].len()
        ),
        &common,
        "≤ 50",
    );
    // The most common word long enough to be searched as a prefix too (the last word of a
    // query with 3+ letters is a prefix: search as you type).
    let long = words
        .iter()
        .find(|w| w.len() >= 4)
        .context("vocabulary has long words")?;
    let long_stats = search(long)?;
    row(
        &format!("search a common long word ({long:?}, whole word or prefix), top 50"),
        &long_stats,
        "≤ 50",
    );
    let typed = &long[..3];
    let typed_stats = search(typed)?;
    row(
        &format!("search a 3-letter prefix ({typed:?}*), top 50"),
        &typed_stats,
        "≤ 50",
    );
    let two = search(&format!("{} {}", words[0], words[1]))?;
    row("search two common words (AND), top 50", &two, "≤ 50");
    let tail = search(&words[5_000])?;
    row("search a tail word, top 50", &tail, "≤ 50");
    // The word is common in the big conversation and rare in the small one, so the index walks
    // many postings and loads each one's message row to check its conversation.
    let in_conv_query = SearchQuery {
        text: "quokka".into(),
        conversation: Some(ConversationId::Direct(user(3)?)),
        within: None,
        before: None,
        limit: 50,
    };
    let in_conv_cold = measure(1, || {
        store.search(&in_conv_query)?;
        Ok(())
    })?;
    row(
        "search a rare word within a small conversation, first time (rows not cached)",
        &in_conv_cold,
        "≤ 50",
    );
    let in_conv = measure(args.repeats, || {
        store.search(&in_conv_query)?;
        Ok(())
    })?;
    row(
        "search a rare word within a small conversation",
        &in_conv,
        "≤ 50",
    );
    // A search while maintenance lags: 1,000 new messages not yet indexed.
    fill(&mut store, 1_000, 1_000, conv, args.history)?;
    let (_, wall, _) = timed(|| Ok(store.search(&quokka)?))?;
    println!(
        "| first search with a 1,000-message unindexed tail (indexes it) | {} | | | ≤ 50 |",
        ms(wall)
    );

    println!();
    println!(
        "| fill of the {}-message history ({} per transaction) | {:.0} msgs/s | |",
        args.history,
        fill_batch,
        args.history as f64 / fill_time.as_secs_f64()
    );
    println!(
        "| index_pending of the {}-message history, {} per call | {} | |",
        history_indexed,
        args.index_chunk,
        rates(history_indexed, history_index_wall, history_index_cpu)
    );
    println!(
        "| database size with {} messages | {:.0} MiB | |",
        args.history + 3_000,
        db_bytes as f64 / 1048576.0
    );
    drop(store);
    cleanup(&root, args.dir.is_some())?;
    Ok(())
}

fn cleanup(root: &Path, keep: bool) -> Result<()> {
    if !keep {
        return Ok(());
    }
    for sub in ["unlock", "insert", "history"] {
        let p = root.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}
