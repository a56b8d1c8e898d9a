//! Signaling server benchmark (results in docs/benchmarks.md).
//!
//! Runs the real server in a child process (this same binary, `serve` subcommand) so its memory
//! can be read from `/proc/<pid>/status`, then, from this process:
//! 1. opens `--connections` authenticated WebSocket connections and keeps them idle (answering
//!    pings), spread over `--sources` loopback source addresses (127.0.0.2, …) because one
//!    source address runs out of ephemeral ports near 28,000; reports the connect rate and the
//!    server's resident memory per connection;
//! 2. runs `--pairs` sender→receiver pairs relaying through the server, first closed-loop (each
//!    sender keeps `--window` relays in flight) for the maximum rate, then open-loop at
//!    `--rate` messages/s; reports delivered messages/s and p50/p99/max latency from send to
//!    delivery (both ends in this process, one monotonic clock). Each sender connection is one
//!    task that writes every relay it may send in one batch (one write) and reads the answers;
//!    frames are built from a prebuilt prefix and suffix; receivers parse only the timestamp.
//!
//! `cargo run --release -p dopus-bench-signaling -- --connections 50000`
//!
//! `--flood SECS` floods the server with malformed frames and reports its memory (`flood.rs`).
//! `--active N` runs the many-connections shape instead (see `active.rs`): N connections all
//! relaying with one request in flight each, presence churn and mailbox traffic mixed in.
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod active;
mod flood;

use anyhow::{Context as _, bail};
use clap::Parser;
use dopus_proto::signaling::{ClientFrame, Nonce, ServerFrame, auth_signing_bytes};
use dopus_types::{DeviceId, Ed25519Key, Signature, UserId};
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{FutureExt as _, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::io::BufRead as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Parser)]
struct Args {
    /// Internal: run the server (used for the child process).
    #[arg(long, hide = true)]
    serve: Option<SocketAddr>,
    /// Idle authenticated connections to open.
    #[arg(long, default_value_t = 50_000)]
    connections: usize,
    /// Loopback source addresses to spread connections over.
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Connection attempts in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Sender→receiver pairs for the relay test.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Relays in flight per sender in the closed-loop run.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Offered load of the open-loop run, messages per second (all pairs together).
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Seconds each relay run measures (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Payload bytes per relay (at least 24).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Server runtime experiment: worker threads (0: tokio's default, one per core, as the
    /// `discordopus-server` binary; 1: a `current_thread` runtime).
    #[arg(long, default_value_t = 0)]
    server_threads: usize,
    /// Server runtime experiment: tokio's `event_interval` (ticks between I/O polls).
    #[arg(long)]
    server_event_interval: Option<u32>,
    /// Run the many-connections shape with this many connections instead (0: off).
    #[arg(long, default_value_t = 0)]
    active: usize,
    /// Many-connections shape: re-logins per second, all connections together.
    #[arg(long, default_value_t = 10.0)]
    churn_per_sec: f64,
    /// Many-connections shape: one relay in this many is stored for an offline user (0: none).
    #[arg(long, default_value_t = 100)]
    mailbox_every: u64,
    /// Many-connections shape: the recipient of each message acknowledges it end to end (a small
    /// relay back, as the node's peer protocol does), and the sender's one message in flight
    /// waits for that acknowledgement instead of the server's `relay_result`.
    #[arg(long)]
    acks: bool,
    /// Many-connections shape: log in with protocol 3's quiet relays (implies `--acks`): relays
    /// delivered live are not answered.
    #[arg(long)]
    quiet: bool,
    /// Run the server child under this command (split at spaces), e.g.
    /// `"valgrind --tool=massif --massif-out-file=/tmp/massif.out"` for a heap profile.
    #[arg(long)]
    server_wrap: Option<String>,
    /// Instead of the relay runs: flood the server with malformed frames for this many seconds
    /// and report its memory (0: off).
    #[arg(long, default_value_t = 0)]
    flood: u64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.serve {
        return serve(addr, &args);
    }
    let mut args = args;
    let fits = ensure_nofile(args.connections.max(args.active) as u64 + 1_000)?;
    if args.active > 0 {
        if (fits as usize) < args.active {
            println!("capping --active from {} to {fits}", args.active);
            args.active = fits as usize;
        }
    } else if (fits as usize) < args.connections {
        println!("capping --connections from {} to {fits}", args.connections);
        args.connections = fits as usize;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

fn nofile_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files"));
    let field = |n| {
        line.and_then(|l| l.split_whitespace().nth(n))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024)
    };
    (field(3), field(4))
}

/// Makes room for `needed` open files: re-runs this program under `prlimit` when the limit is
/// too low (root with CAP_SYS_RESOURCE can raise the hard limit; no unsafe code needed here).
/// Returns how many connections fit, which is fewer than asked when the hard limit cannot be
/// raised (the server child inherits the same limit).
fn ensure_nofile(needed: u64) -> anyhow::Result<u64> {
    let (soft, hard) = nofile_limits();
    if soft >= needed {
        return Ok(needed);
    }
    let n = needed.max(65_536);
    if std::env::var_os("DOPUS_BENCH_REEXEC").is_none() && nofile_raisable(n) {
        let status = Command::new("prlimit")
            .arg(format!("--nofile={n}:{n}"))
            .arg("--")
            .arg(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env("DOPUS_BENCH_REEXEC", "1")
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    println!(
        "note: the open-file limit is {soft} (hard {hard}) and cannot be raised here; \
         connections are capped to fit it"
    );
    Ok(hard.min(soft).saturating_sub(1_000))
}

/// Whether prlimit may raise the limit to `n` at all (a dry run).
fn nofile_raisable(n: u64) -> bool {
    Command::new("prlimit")
        .arg(format!("--nofile={n}:{n}"))
        .args(["--", "true"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn serve(addr: SocketAddr, args: &Args) -> anyhow::Result<()> {
    let mut builder = match args.server_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    if let Some(n) = args.server_event_interval {
        builder.event_interval(n);
    }
    let rt = builder.enable_all().build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let mut config = dopus_server::Config::loopback(dir.path());
        config.listen = addr;
        config.limits.rate_per_sec = 10_000_000;
        config.limits.rate_burst = 10_000_000;
        config.limits.max_connections = 10_000_000;
        config.limits.max_connections_per_ip = 0;
        config.limits.outbox_capacity = 4096;
        // The many-connections shape measures cost, not abuse: every sender may fill a mailbox.
        config.limits.mailbox_max_items = 10_000_000;
        config.limits.mailbox_max_bytes = 1 << 40;
        config.limits.mailbox_contact_share_percent = 100;
        config.limits.mailbox_stranger_share_percent = 100;
        let server = dopus_server::start(config).await?;
        println!("listening {}", server.addr);
        // Runs until the parent kills it.
        std::future::pending::<()>().await;
        drop(server);
        Ok(())
    })
}

struct ServerChild {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerChild {
    /// CPU seconds (user + system) the server has used so far.
    fn cpu_secs(&self) -> f64 {
        cpu_secs_of(&self.child.id().to_string())
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .context("no VmRSS")
    }
}

fn spawn_server(args: &Args) -> anyhow::Result<ServerChild> {
    let exe = std::env::current_exe()?;
    let mut wrap = args.server_wrap.as_deref().unwrap_or("").split_whitespace();
    let mut command = match wrap.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(wrap).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    command
        .args(["--serve", "127.0.0.1:0"])
        .arg(format!("--server-threads={}", args.server_threads));
    if let Some(n) = args.server_event_interval {
        command.arg(format!("--server-event-interval={n}"));
    }
    let mut child = command.stdout(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .context("unexpected server output")?
        .parse()?;
    Ok(ServerChild { child, addr })
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

struct Identity {
    key: SigningKey,
    user: UserId,
    device: DeviceId,
}

fn identity(n: u64) -> Identity {
    let mut seed = [0x5au8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    let key = SigningKey::from_bytes(&seed);
    let user = UserId::from_key(
        Ed25519Key::from_bytes(key.verifying_key().as_bytes())
            .unwrap_or_else(|_| unreachable_key()),
    );
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&n.to_le_bytes());
    Identity {
        key,
        user,
        device: DeviceId::from_random(d),
    }
}

fn unreachable_key() -> Ed25519Key {
    // A verifying key derived from a signing key is always a valid point; this fallback exists
    // only to avoid a panic path and is never taken.
    #[allow(clippy::expect_used, reason = "the base point is a valid key")]
    Ed25519Key::from_bytes(SigningKey::from_bytes(&[1; 32]).verifying_key().as_bytes())
        .expect("valid key")
}

async fn open(addr: SocketAddr, source: IpAddr, id: &Identity) -> anyhow::Result<Ws> {
    open_with(addr, source, id, false).await
}

/// [`open`], asking for protocol 3's quiet relays when `quiet`.
async fn open_with(
    addr: SocketAddr,
    source: IpAddr,
    id: &Identity,
    quiet: bool,
) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    // The default write buffer: frames fed in a batch leave in one write at the flush.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let url = format!("ws://{addr}/ws?v={}", if quiet { 3 } else { 1 });
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    let (server_id, challenge): (String, Nonce) = match next(&mut ws).await? {
        ServerFrame::Challenge {
            server_id,
            challenge,
            ..
        } => (server_id, challenge),
        other => bail!("expected a challenge, got {other:?}"),
    };
    let sig = Signature::from_bytes(
        id.key
            .sign(&auth_signing_bytes(&server_id, &challenge.0, &id.device))
            .to_bytes(),
    );
    let auth = ClientFrame::Auth {
        user_id: id.user,
        device_id: id.device.clone(),
        challenge,
        signature: sig,
        quiet_relays: quiet,
    };
    ws.send(Message::text(auth.to_json())).await?;
    match next(&mut ws).await? {
        ServerFrame::AuthSuccess { .. } => Ok(ws),
        other => bail!("login failed: {other:?}"),
    }
}

async fn next(ws: &mut Ws) -> anyhow::Result<ServerFrame> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await? {
            Some(Ok(Message::Text(t))) => return Ok(ServerFrame::parse(t.as_str())?),
            Some(Ok(Message::Close(_))) | None => bail!("closed"),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(_)) => {}
        }
    }
}

fn source(i: usize, sources: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        2 + (i % usize::from(sources.max(1))) as u8,
    ))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let _ = epoch();
    let server = spawn_server(&args)?;
    println!("server pid {} on {}", server.child.id(), server.addr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    if args.flood > 0 {
        return flood::run(&server, args.flood, args.sources).await;
    }
    if args.active > 0 {
        return active::run(
            &server,
            active::ActiveArgs {
                connections: args.active,
                payload: args.payload,
                churn_per_sec: args.churn_per_sec,
                mailbox_every: args.mailbox_every,
                duration: Duration::from_secs(args.duration_secs),
                sources: args.sources,
                concurrency: args.concurrency,
                acks: args.acks || args.quiet,
                quiet: args.quiet,
            },
        )
        .await;
    }

    // Warm-up: let the server's allocator and runtime reach their working shape.
    {
        let mut warm = Vec::new();
        for i in 0..200u64 {
            let id = identity(1_000_000_000 + i);
            warm.push(open(server.addr, source(i as usize, args.sources), &id).await?);
        }
        drop(warm);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let base = server.rss_kib()?;

    // 1. Idle connections.
    let n = args.connections;
    let ids: Vec<Arc<Identity>> = (0..n as u64).map(|i| Arc::new(identity(i))).collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let failures = Arc::new(AtomicU64::new(0));
    let holders = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let start = Instant::now();
    let mut joins = Vec::with_capacity(n);
    for (i, id) in ids.iter().enumerate() {
        let permit = sem.clone().acquire_owned().await?;
        let id = id.clone();
        let addr = server.addr;
        let src = source(i, args.sources);
        let failures = failures.clone();
        let holders = holders.clone();
        joins.push(tokio::spawn(async move {
            let r = open(addr, src, &id).await;
            drop(permit);
            match r {
                Ok(mut ws) => {
                    // Keep reading so pings are answered; the task ends with the connection.
                    let h = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
                    if let Ok(mut v) = holders.lock() {
                        v.push(h);
                    }
                }
                Err(_) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for j in joins {
        let _ = j.await;
    }
    let elapsed = start.elapsed();
    let failed = failures.load(Ordering::Relaxed);
    let opened = n as u64 - failed;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = server.rss_kib()?;
    let per_conn = (loaded.saturating_sub(base)) as f64 * 1024.0 / opened.max(1) as f64;
    println!("## idle connections");
    println!(
        "opened {opened} authenticated connections ({failed} failed) in {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "connect rate: {:.0} logins/s (concurrency {})",
        opened as f64 / elapsed.as_secs_f64(),
        args.concurrency
    );
    println!("server RSS: {base} KiB before, {loaded} KiB with {opened} connections");
    println!(
        "server memory per connection: {per_conn:.0} bytes ({:.2} KiB)",
        per_conn / 1024.0
    );
    let holders: Vec<_> =
        std::mem::take(&mut *holders.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    for h in &holders {
        h.abort();
    }
    drop(holders);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 2. Relay throughput and latency.
    let pairs = args.pairs;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for p in 0..pairs as u64 {
        let s = identity(2_000_000_000 + p);
        let r = identity(3_000_000_000 + p);
        let sw = open(server.addr, source(p as usize, args.sources), &s).await?;
        let rw = open(server.addr, source(p as usize + 1, args.sources), &r).await?;
        senders.push((sw, r.user));
        receivers.push(rw);
    }
    println!("## relay ({pairs} pairs, {} B payload)", args.payload);
    let (senders, receivers) = relay_run(
        senders,
        receivers,
        &args,
        Load::Closed(args.window),
        &server,
    )
    .await?;
    let _ = relay_run(senders, receivers, &args, Load::Open(args.rate), &server).await?;
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Load {
    /// Each sender keeps this many relays in flight.
    Closed(usize),
    /// All senders together offer this many messages per second.
    Open(u64),
}

struct Shared {
    measuring: std::sync::atomic::AtomicBool,
    delivered: AtomicU64,
    sent: AtomicU64,
    refused: AtomicU64,
    hist: Mutex<Histogram<u64>>,
}

type Pairs = (Vec<(Ws, UserId)>, Vec<Ws>);

async fn relay_run(
    senders: Vec<(Ws, UserId)>,
    receivers: Vec<Ws>,
    args: &Args,
    load: Load,
    server: &ServerChild,
) -> anyhow::Result<Pairs> {
    let shared = Arc::new(Shared {
        measuring: false.into(),
        delivered: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        hist: Mutex::new(Histogram::new_with_bounds(1_000, 60_000_000_000, 3)?),
    });
    let pairs = senders.len();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut recv_tasks = Vec::new();
    for ws in receivers {
        recv_tasks.push(tokio::spawn(receive(ws, shared.clone(), stop_rx.clone())));
    }
    let mut send_tasks = Vec::new();
    for (ws, to) in senders {
        let frames = RelayFrames::new(&to, args.payload);
        send_tasks.push(tokio::spawn(send(
            ws,
            frames,
            load,
            pairs,
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    shared.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let cpu_start = server.cpu_secs();
    let own_start = own_cpu_secs();
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let server_cpu = server.cpu_secs() - cpu_start;
    let own_cpu = own_cpu_secs() - own_start;
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = stop_tx.send(true);
    let mut senders = Vec::new();
    for t in send_tasks {
        if let Ok(Some(ws)) = t.await {
            senders.push(ws);
        }
    }
    let mut receivers = Vec::new();
    for t in recv_tasks {
        if let Ok(ws) = t.await {
            receivers.push(ws);
        }
    }
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let hist = shared
        .hist
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let ms = |v: u64| v as f64 / 1e6;
    println!(
        "{load:?}: delivered {:.0} msgs/s (sent {:.0}/s), refused {}, latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        delivered as f64 / secs,
        shared.sent.load(Ordering::Relaxed) as f64 / secs,
        shared.refused.load(Ordering::Relaxed),
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.value_at_quantile(0.999)),
        ms(hist.max()),
    );
    println!(
        "  server CPU: {:.2} cores busy, {:.1} µs per delivered message; load generator CPU: {:.2} cores busy, {:.1} µs per message; load average {}",
        server_cpu / secs,
        server_cpu * 1e6 / delivered.max(1) as f64,
        own_cpu / secs,
        own_cpu * 1e6 / delivered.max(1) as f64,
        load_avg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    // The next run needs the recipients' user ids again; rebuild them from the pairs order.
    let recipients: Vec<UserId> = (0..pairs as u64)
        .map(|p| identity(3_000_000_000 + p).user)
        .collect();
    Ok((senders.into_iter().zip(recipients).collect(), receivers))
}

/// CPU seconds (user + system) this process has used so far.
fn own_cpu_secs() -> f64 {
    cpu_secs_of("self")
}

fn cpu_secs_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of /proc/pid/stat, i.e. 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// The relay frames of one sender, built from a fixed prefix and suffix around the request id
/// and the send timestamp, so formatting a frame costs two integer prints and a copy (no user id
/// printing, no JSON serializer).
struct RelayFrames {
    /// `{"type":"relay","id":`
    head: &'static str,
    /// `,"to":"dopus1…","payload":"`
    middle: String,
    /// The payload after its 20-digit timestamp, and the closing `"}`.
    tail: String,
    next_id: u64,
}

impl RelayFrames {
    fn new(to: &UserId, payload: usize) -> Self {
        Self {
            head: r#"{"type":"relay","id":"#,
            middle: format!(r#","to":"{to}","payload":""#),
            tail: format!(r#"{}"}}"#, "p".repeat(payload.saturating_sub(TS_DIGITS))),
            next_id: 0,
        }
    }

    /// The next frame, stamped with the current time.
    fn next(&mut self) -> String {
        use std::fmt::Write as _;
        self.next_id += 1;
        let mut s = String::with_capacity(
            self.head.len() + 20 + self.middle.len() + TS_DIGITS + self.tail.len(),
        );
        s.push_str(self.head);
        let _ = write!(s, "{}", self.next_id);
        s.push_str(&self.middle);
        let _ = write!(s, "{:020}", now_ns());
        s.push_str(&self.tail);
        s
    }
}

/// Digits of the send timestamp at the start of each payload.
const TS_DIGITS: usize = 20;

/// One sender connection, driven by one task that both writes relays and reads their answers,
/// so a burst of answers costs one wakeup and the relays they make room for go out in one write.
async fn send(
    mut ws: Ws,
    mut frames: RelayFrames,
    load: Load,
    pairs: usize,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<Ws> {
    // Closed loop: relays that may be sent now. Open loop: unlimited.
    let mut credits = match load {
        Load::Closed(w) => w as u64,
        Load::Open(_) => u64::MAX,
    };
    let per_sender = match load {
        Load::Open(rate) => rate as f64 / pairs as f64,
        Load::Closed(_) => 0.0,
    };
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut due: u64 = 0;
    loop {
        let batch = match load {
            Load::Closed(_) => std::mem::take(&mut credits),
            Load::Open(_) => due.saturating_sub(sent).min(1_000),
        };
        if batch > 0 {
            for _ in 0..batch {
                if ws.feed(Message::text(frames.next())).await.is_err() {
                    return None;
                }
            }
            // One write for the whole batch.
            if ws.flush().await.is_err() {
                return None;
            }
            sent += batch;
            if shared.measuring.load(Ordering::Relaxed) {
                shared.sent.fetch_add(batch, Ordering::Relaxed);
            }
        }
        let first = tokio::select! {
            m = ws.next() => m,
            _ = tick.tick(), if matches!(load, Load::Open(_)) => {
                due = (start.elapsed().as_secs_f64() * per_sender) as u64;
                continue;
            }
            _ = stop.changed() => break,
        };
        let mut msg = first;
        loop {
            match msg {
                Some(Ok(Message::Text(t))) => {
                    if !t.as_str().starts_with(r#"{"type":"relay_result""#) {
                        shared.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    if matches!(load, Load::Closed(_)) {
                        credits += 1;
                    }
                }
                Some(Ok(_)) => {}
                _ => return None,
            }
            // Answers already read from the socket are handled before the next write.
            match ws.next().now_or_never() {
                Some(m) => msg = m,
                None => break,
            }
        }
    }
    // Collect the answers still in flight so the connection is clean for the next run.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Some(ws)
}

/// One receiver connection: reads deliveries and records their latency.
async fn receive(
    mut ws: Ws,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Ws {
    let mut local = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).ok();
    loop {
        // No timer per message: the stop signal is a watch channel.
        let mut msg = tokio::select! {
            m = ws.next() => m,
            _ = stop.changed() => break,
        };
        loop {
            let Some(Ok(m)) = msg else {
                return ws;
            };
            if let Message::Text(t) = m
                && let Some(ts) = payload_ts(t.as_str())
                && shared.measuring.load(Ordering::Relaxed)
            {
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(h) = local.as_mut() {
                    let _ = h.record(now_ns().saturating_sub(ts).max(1_000));
                }
            }
            match ws.next().now_or_never() {
                Some(m) => msg = m,
                None => break,
            }
        }
    }
    if let (Some(h), Ok(mut all)) = (local, shared.hist.lock()) {
        let _ = all.add(h);
    }
    ws
}

/// The send timestamp at the start of a delivered relay's payload. The server's `deliver` frame
/// starts with its type and carries one `"payload":"` key; only the 20 digits after it are
/// parsed, the rest of the frame is not looked at.
fn payload_ts(text: &str) -> Option<u64> {
    const KEY: &str = "\"payload\":\"";
    if !text.starts_with(r#"{"type":"deliver""#) {
        return None;
    }
    let at = text.find(KEY)? + KEY.len();
    let digits = text.get(at..at + TS_DIGITS)?;
    digits.bytes().try_fold(0u64, |n, b| {
        b.is_ascii_digit()
            .then(|| n.wrapping_mul(10).wrapping_add(u64::from(b - b'0')))
    })
}
