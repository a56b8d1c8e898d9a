//! The many-connections shape (`--active N`): N connections that all relay, each with one
//! request in flight, plus presence churn and mailbox traffic, as a real deployment looks.
//!
//! - Connection `i` is a user whose contact (mutual, synced at login) is `i ^ 1`; it relays a
//!   `--payload`-byte message to its contact, waits for the `relay_result`, and sends the next
//!   one, while reading the relays its contact sends it. Latency is from formatting the frame to
//!   reading the `deliver` (one clock, this process).
//! - Churn: `--churn-per-sec` times a second (all connections together) a random connection says
//!   goodbye (`set_status offline`, Close), logs in again and re-syncs its contact; its contact
//!   sees the presence change both ways.
//! - Mailbox: one relay in `--mailbox-every` is `store: true` to one of 16 users that are never
//!   online, and a drainer logs each of them in every second, takes its items and acks them.
//!
//! - `--acks`: the recipient of each message answers it end to end with a small relay back
//!   (`"payload":"ack"`), and the sender sends its next message when the ack arrives rather
//!   than on the `relay_result`; `--quiet` (protocol 3) also asks the server not to answer
//!   relays delivered live, so the ack is the only confirmation. One message in flight per
//!   connection either way.
//!
//! Counted as messages: relays delivered live (the latency histogram) and mailbox deposits;
//! acks are counted apart, and the CPU is also given per relayed frame (messages + acks).

use crate::{Identity, ServerChild, Ws, cpu_secs_of, identity, now_ns, open, open_with, source};
use dopus_proto::signaling::ClientFrame;
use dopus_types::UserId;
use futures_util::{FutureExt as _, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Settings of one run of the shape.
#[derive(Debug, Clone)]
pub(crate) struct ActiveArgs {
    pub connections: usize,
    pub payload: usize,
    pub churn_per_sec: f64,
    pub mailbox_every: u64,
    pub duration: Duration,
    pub sources: u8,
    pub concurrency: usize,
    pub acks: bool,
    pub quiet: bool,
}

/// Users whose mailboxes take the stored relays; never online except while drained.
const MAILBOX_USERS: u64 = 16;
const BASE: u64 = 4_000_000_000;
const MAILBOX_BASE: u64 = 5_000_000_000;

#[derive(Default)]
struct Counters {
    measuring: AtomicBool,
    stop: AtomicBool,
    delivered: AtomicU64,
    deposited: AtomicU64,
    drained: AtomicU64,
    refused: AtomicU64,
    acks: AtomicU64,
    lost: AtomicU64,
    relogins: AtomicU64,
    presence: AtomicU64,
}

pub(crate) async fn run(server: &ServerChild, args: ActiveArgs) -> anyhow::Result<()> {
    let n = args.connections & !1;
    let counters = Arc::new(Counters::default());
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1_000,
        60_000_000_000,
        3,
    )?));
    // Register the mailbox users once, so stored relays have a device to go to.
    for m in 0..MAILBOX_USERS {
        let id = identity(MAILBOX_BASE + m);
        let ws = open(server.addr, source(m as usize, args.sources), &id).await?;
        drop(ws);
    }
    println!(
        "## active connections: {n}, each one relay in flight, {} B payload, {}",
        args.payload,
        match (args.acks, args.quiet) {
            (_, true) => "end-to-end acks, quiet relays (protocol 3)",
            (true, false) => "end-to-end acks, every relay answered",
            (false, false) => "every relay answered, the answer releases the next",
        }
    );
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut opened = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let addr = server.addr;
        let src = source(i, args.sources);
        let quiet = args.quiet;
        opened.push(tokio::spawn(async move {
            let id = identity(BASE + i as u64);
            let r = login(addr, src, &id, i, quiet).await;
            drop(permit);
            r
        }));
    }
    let mut sockets = Vec::with_capacity(n);
    for j in opened {
        sockets.push(j.await??);
    }
    println!(
        "opened and synced {n} connections in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    // Churn: a scheduler flags one random connection every 1/churn_per_sec seconds; the
    // connection re-logs in before its next relay.
    let flags: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
    let churner = {
        let (flags, c) = (flags.clone(), counters.clone());
        let every = Duration::from_secs_f64(1.0 / args.churn_per_sec.max(0.001));
        let enabled = args.churn_per_sec > 0.0;
        tokio::spawn(async move {
            let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
            let mut tick = tokio::time::interval(every);
            while enabled && !c.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                flags[(rng % flags.len() as u64) as usize].store(true, Ordering::Relaxed);
            }
        })
    };
    let mut tasks = Vec::with_capacity(n);
    for (i, ws) in sockets.into_iter().enumerate() {
        tasks.push(tokio::spawn(connection(
            server.addr,
            source(i, args.sources),
            i,
            ws,
            args.payload,
            args.mailbox_every,
            Mode {
                acks: args.acks,
                quiet: args.quiet,
            },
            flags.clone(),
            counters.clone(),
            hist.clone(),
        )));
    }
    let drainer = tokio::spawn(drain(server.addr, args.sources, counters.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    counters.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let cpu0 = server.cpu_secs();
    let own0 = cpu_secs_of("self");
    tokio::time::sleep(args.duration).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let server_cpu = server.cpu_secs() - cpu0;
    let own_cpu = cpu_secs_of("self") - own0;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    counters.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), drainer).await;
    churner.abort();
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let deposited = counters.deposited.load(Ordering::Relaxed);
    let acks = counters.acks.load(Ordering::Relaxed);
    let messages = (delivered + deposited).max(1);
    let hist = hist.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let ms = |v: u64| v as f64 / 1e6;
    println!(
        "relayed {:.0} msgs/s live + {:.0}/s into mailboxes ({:.0}/s drained), {} refused; {:.1} re-logins/s, {:.0} presence updates/s",
        delivered as f64 / secs,
        deposited as f64 / secs,
        counters.drained.load(Ordering::Relaxed) as f64 / secs,
        counters.refused.load(Ordering::Relaxed),
        counters.relogins.load(Ordering::Relaxed) as f64 / secs,
        counters.presence.load(Ordering::Relaxed) as f64 / secs,
    );
    if args.acks {
        println!(
            "end-to-end acks relayed: {:.0}/s; messages given up after 2 s without an ack: {}",
            acks as f64 / secs,
            counters.lost.load(Ordering::Relaxed)
        );
    }
    println!(
        "relay latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.value_at_quantile(0.999)),
        ms(hist.max()),
    );
    println!(
        "server CPU: {:.2} cores busy, {:.1} µs per message; load generator: {:.2} cores, {:.1} µs per message; server RSS {} KiB; load average {}",
        server_cpu / secs,
        server_cpu * 1e6 / messages as f64,
        own_cpu / secs,
        own_cpu * 1e6 / messages as f64,
        server.rss_kib().unwrap_or(0),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!(
        "server CPU per relayed frame (messages + acks): {:.1} µs",
        server_cpu * 1e6 / (messages + acks) as f64
    );
    Ok(())
}

fn partner(i: usize) -> UserId {
    identity(BASE + (i ^ 1) as u64).user
}

/// Logs connection `i` in and syncs its one contact.
async fn login(
    addr: std::net::SocketAddr,
    src: std::net::IpAddr,
    id: &Identity,
    i: usize,
    quiet: bool,
) -> anyhow::Result<Ws> {
    let mut ws = open_with(addr, src, id, quiet).await?;
    let sync = ClientFrame::SyncContacts {
        id: 0,
        contacts: vec![partner(i)],
        more: false,
    };
    ws.send(Message::text(sync.to_json())).await?;
    Ok(ws)
}

/// How a connection learns its message arrived.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// From the recipient's end-to-end ack, not from the `relay_result`.
    acks: bool,
    /// Logged in with quiet relays.
    quiet: bool,
}

/// Ack relays carry ids from here up, so their answers (quiet or not) are told from the
/// message's.
const ACK_IDS: u64 = 1 << 62;

/// The `id` of an answer frame.
fn answer_id(t: &str) -> Option<u64> {
    let at = t.find(r#""id":"#)? + 5;
    let digits: String = t[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// One connection: one relay in flight to its contact, reads what its contact relays to it.
#[allow(clippy::too_many_arguments, reason = "one task's whole setup")]
async fn connection(
    addr: std::net::SocketAddr,
    src: std::net::IpAddr,
    i: usize,
    mut ws: Ws,
    payload: usize,
    mailbox_every: u64,
    mode: Mode,
    churn: Arc<Vec<AtomicBool>>,
    c: Arc<Counters>,
    hist: Arc<Mutex<Histogram<u64>>>,
) {
    let id = identity(BASE + i as u64);
    let to = partner(i).to_string();
    let pad = "p".repeat(payload.saturating_sub(20));
    let mut local = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).ok();
    // Staggered, so the stored relays of all connections do not come due at the same moment.
    let mut next_id: u64 = 1 + i as u64 % mailbox_every.max(1);
    let mut next_ack: u64 = ACK_IDS;
    let mut in_flight = false;
    let mut sent_at = Instant::now();
    while !c.stop.load(Ordering::Relaxed) {
        if in_flight && mode.acks && sent_at.elapsed() > Duration::from_secs(2) {
            // The ack will not come (the contact left while it was on its way).
            in_flight = false;
            if c.measuring.load(Ordering::Relaxed) {
                c.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !in_flight {
            if churn[i].swap(false, Ordering::Relaxed) {
                // Goodbye, close, log in again, re-sync: presence churn as clients do it.
                let bye = format!(r#"{{"type":"set_status","id":{next_id},"status":"offline"}}"#);
                let _ = ws.send(Message::text(bye)).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                match login(addr, src, &id, i, mode.quiet).await {
                    Ok(new) => ws = new,
                    Err(_) => return,
                }
                if c.measuring.load(Ordering::Relaxed) {
                    c.relogins.fetch_add(1, Ordering::Relaxed);
                }
            }
            next_id += 1;
            let stored = mailbox_every > 0 && next_id.is_multiple_of(mailbox_every);
            let frame = if stored {
                let m = identity(MAILBOX_BASE + next_id % MAILBOX_USERS).user;
                format!(
                    r#"{{"type":"relay","id":{next_id},"to":"{m}","payload":"{:020}{pad}","store":true}}"#,
                    now_ns()
                )
            } else {
                format!(
                    r#"{{"type":"relay","id":{next_id},"to":"{to}","payload":"{:020}{pad}"}}"#,
                    now_ns()
                )
            };
            if ws.send(Message::text(frame)).await.is_err() {
                return;
            }
            in_flight = true;
            sent_at = Instant::now();
        }
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        let mut msg = msg;
        // Acks owed for the deliveries read in this burst, written in one go after it.
        let mut owed = 0u32;
        loop {
            let Some(Ok(m)) = msg else { return };
            if let Message::Text(t) = m {
                let t = t.as_str();
                let measuring = c.measuring.load(Ordering::Relaxed);
                let mine = answer_id(t).is_some_and(|id| id < ACK_IDS);
                if t.starts_with(r#"{"type":"relay_result""#) {
                    // With acks, a message delivered live waits for its ack; one queued in a
                    // mailbox (no one to ack it now) is done here.
                    let queued = t.contains(r#""queued":["#) && !t.contains(r#""queued":[]"#);
                    if mine && (!mode.acks || queued) {
                        in_flight = false;
                    }
                    if measuring && queued {
                        c.deposited.fetch_add(1, Ordering::Relaxed);
                    }
                } else if t.starts_with(r#"{"type":"deliver""#) {
                    if t.contains(r#""payload":"ack""#) {
                        in_flight = false;
                        if measuring {
                            c.acks.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        owed += u32::from(mode.acks);
                        if measuring
                            && let Some(ts) = crate::payload_ts(t)
                            && let Some(h) = local.as_mut()
                        {
                            c.delivered.fetch_add(1, Ordering::Relaxed);
                            let _ = h.record(now_ns().saturating_sub(ts).max(1_000));
                        }
                    }
                } else if t.starts_with(r#"{"type":"presence_update""#) {
                    if measuring {
                        c.presence.fetch_add(1, Ordering::Relaxed);
                    }
                } else if t.starts_with(r#"{"type":"error""#) {
                    // An answer to the relay (the contact was away for a moment) or a notice.
                    if mine {
                        in_flight = false;
                    }
                    if measuring {
                        c.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            match ws.next().now_or_never() {
                Some(m) => msg = m,
                None => break,
            }
        }
        for _ in 0..owed {
            next_ack += 1;
            let ack = format!(r#"{{"type":"relay","id":{next_ack},"to":"{to}","payload":"ack"}}"#);
            if ws.feed(Message::text(ack)).await.is_err() {
                return;
            }
        }
        if owed > 0 && ws.flush().await.is_err() {
            return;
        }
    }
    if let (Some(h), Ok(mut all)) = (local, hist.lock()) {
        let _ = all.add(h);
    }
}

/// Logs every mailbox user in once a second (all at once), takes its items and acknowledges
/// them.
async fn drain(addr: std::net::SocketAddr, sources: u8, c: Arc<Counters>) {
    while !c.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut pass = Vec::new();
        for m in 0..MAILBOX_USERS {
            let c = c.clone();
            pass.push(tokio::spawn(async move {
                let id = identity(MAILBOX_BASE + m);
                let Ok(mut ws) = open(addr, source(m as usize, sources), &id).await else {
                    return;
                };
                let mut ids = Vec::new();
                // Items arrive right after login; a quiet gap means they are all here.
                while let Ok(Some(Ok(Message::Text(t)))) =
                    tokio::time::timeout(Duration::from_millis(300), ws.next()).await
                {
                    if let Some(at) = t.as_str().find(r#""mailbox_id":"#) {
                        let digits: String = t.as_str()[at + 13..]
                            .chars()
                            .take_while(char::is_ascii_digit)
                            .collect();
                        if let Ok(v) = digits.parse::<u64>() {
                            ids.push(v);
                        }
                    }
                }
                for (n, chunk) in ids.chunks(1_000).enumerate() {
                    let ack = ClientFrame::Ack {
                        id: n as u64 + 1,
                        ids: chunk.to_vec(),
                    };
                    let _ = ws.send(Message::text(ack.to_json())).await;
                }
                let _ = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
                if c.measuring.load(Ordering::Relaxed) {
                    c.drained.fetch_add(ids.len() as u64, Ordering::Relaxed);
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
            }));
        }
        for t in pass {
            let _ = t.await;
        }
    }
}
