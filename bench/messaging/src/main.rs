//! Messaging benchmark between two real `discordopus` processes and an in-process signaling
//! server, all on loopback.
//!
//! Measures, over an established peer-to-peer data channel:
//! - latency: from the sender's `POST /conversations/{id}/messages` to the receiver's `message`
//!   event (API, encryption, durable storage on both ends, the channel), one message at a time;
//! - throughput: messages per second from the first send to the last receiver event, with
//!   several API clients posting at once;
//! - setup: from the first send to a fresh contact until the sender reports an open channel.
//!
//! - with `--call-secs N` instead: a 1:1 call's media path (see `call.rs`): page-to-page delay
//!   through both nodes without browsers, and each node's CPU per forwarded frame.
//!
//! Run: `cargo build --release -p dopus-node -p dopus-bench-messaging &&
//! target/release/dopus-bench-messaging` (the node binary is looked up next to this one).

#![allow(clippy::print_stdout, reason = "a benchmark prints its results")]

mod call;

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
struct Args {
    /// The `discordopus` binary [default: next to this benchmark].
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Messages sent one at a time for the latency figures.
    #[arg(long, default_value_t = 1_000)]
    latency_messages: usize,
    /// Messages for the throughput figure.
    #[arg(long, default_value_t = 5_000)]
    throughput_messages: usize,
    /// Concurrent API clients posting during the throughput run.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Messages per API call in the second throughput run (`POST …/messages/batch`); 1 skips
    /// that run.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Fresh node pairs for the setup figure.
    #[arg(long, default_value_t = 3)]
    setups: usize,
    /// Keep a client on the sender's event stream during the throughput runs, as a UI would
    /// be (it counts the frames without parsing them). Without it nobody listens to the
    /// sender, which then builds no events (`message`, `message_updated` for sent and
    /// delivered).
    #[arg(long)]
    watch_sender: bool,
    /// Run only a call for this many seconds: its media path between the two nodes (no
    /// browsers) and the nodes' CPU per forwarded frame.
    #[arg(long, default_value_t = 0)]
    call_secs: u64,
}

struct Node {
    child: Child,
    user_id: String,
    url: String,
    token: String,
    agent: ureq::Agent,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cmd(bin: &Path, dir: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env("DISCORDOPUS_INSECURE_FAST_KDF", "1")
        .env("DISCORDOPUS_PASSPHRASE", "pw")
        .env(
            "DISCORDOPUS_LOG",
            std::env::var("DOPUS_BENCH_NODE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .arg("--data-dir")
        .arg(dir);
    c
}

fn create(bin: &Path, dir: &Path, name: &str) -> anyhow::Result<String> {
    let out = cmd(bin, dir)
        .args(["--json", "id", "create", "--name", name])
        .output()?;
    if !out.status.success() {
        bail!("id create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["user_id"].as_str().context("user id")?.to_owned())
}

fn add(bin: &Path, dir: &Path, id: &str) -> anyhow::Result<()> {
    let out = cmd(bin, dir).args(["contacts", "add", id]).output()?;
    if !out.status.success() {
        bail!("contacts add: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn start(bin: &Path, dir: &Path, user_id: String, server: &str) -> anyhow::Result<Node> {
    let _ = std::fs::remove_file(dir.join("api.json"));
    let child = cmd(bin, dir)
        .args(["--json", "run", "--server", server, "--api", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(match std::fs::File::create(dir.join("node.log")) {
            Ok(f) => Stdio::from(f),
            Err(_) => Stdio::null(),
        })
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let file: Value = loop {
        if let Ok(t) = std::fs::read_to_string(dir.join("api.json"))
            && let Ok(v) = serde_json::from_str::<Value>(&t)
            && v["pid"].as_u64() == Some(u64::from(child.id()))
        {
            break v;
        }
        if Instant::now() > deadline {
            bail!("the node did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let node = Node {
        child,
        user_id,
        url: file["url"].as_str().context("url")?.to_owned(),
        token: file["token"].as_str().context("token")?.to_owned(),
        agent,
    };
    loop {
        let s = node.get("/status")?;
        if s["state"] == "ready" && s["signaling"]["state"] == "connected" {
            return Ok(node);
        }
        if Instant::now() > deadline {
            bail!("the node did not connect to the server");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Node {
    fn send_batch(&self, to: &str, bodies: &[String]) -> anyhow::Result<()> {
        let messages: Vec<Value> = bodies.iter().map(|b| json!({ "body": b })).collect();
        let v: Value = self
            .agent
            .post(format!(
                "{}/api/v1/conversations/{to}/messages/batch",
                self.url
            ))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(json!({ "messages": messages }))?
            .body_mut()
            .read_json()?;
        let stored = v["messages"].as_array().map_or(0, Vec::len);
        if stored != bodies.len() {
            bail!("{} of {} messages stored", stored, bodies.len());
        }
        Ok(())
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .agent
            .get(format!("{}/api/v1{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()?
            .body_mut()
            .read_json()?)
    }

    fn send(&self, to: &str, body: &str) -> anyhow::Result<String> {
        let v: Value = self
            .agent
            .post(format!("{}/api/v1/conversations/{to}/messages", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(json!({ "body": body }))?
            .body_mut()
            .read_json()?;
        Ok(v["id"].as_str().context("message id")?.to_owned())
    }

    /// Follows the event stream, only counting its frames; the task answers the count and
    /// whether the node closed the stream because this client lagged behind.
    async fn count_events(
        &self,
    ) -> anyhow::Result<(
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<bool>,
    )> {
        let url = format!(
            "{}/api/v1/events?token={}",
            self.url.replacen("http://", "ws://", 1),
            self.token
        );
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = count.clone();
        let task = tokio::spawn(async move {
            let (_, mut read) = ws.split();
            while let Some(Ok(m)) = read.next().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let tokio_tungstenite::tungstenite::Message::Text(t) = m
                    && t.as_str().contains(r#""type":"lagged""#)
                {
                    return true;
                }
            }
            false
        });
        Ok((count, task))
    }

    async fn events(&self) -> anyhow::Result<mpsc::UnboundedReceiver<(Instant, Value)>> {
        let url = format!(
            "{}/api/v1/events?token={}",
            self.url.replacen("http://", "ws://", 1),
            self.token
        );
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (_, mut read) = ws.split();
            while let Some(Ok(m)) = read.next().await {
                let at = Instant::now();
                if let tokio_tungstenite::tungstenite::Message::Text(t) = m
                    && let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                    && tx.send((at, v)).is_err()
                {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// The best of three timings of two fixed workloads on one core, an arithmetic one and one of
/// dependent random reads over 64 MiB (cache misses): how fast this machine is right now,
/// printed with every run so that runs made at different times can be compared.
fn calibration() -> (Duration, Duration) {
    fn best(mut f: impl FnMut() -> u64) -> Duration {
        (0..3)
            .map(|_| {
                let t0 = Instant::now();
                std::hint::black_box(f());
                t0.elapsed()
            })
            .min()
            .unwrap_or_default()
    }
    let alu = best(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut acc: u64 = 0;
        for _ in 0..50_000_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            acc = acc.wrapping_add(x.rotate_left(5));
        }
        acc
    });
    // A random cyclic permutation (Sattolo), followed for 4M steps: each read depends on the
    // one before, so the time is the memory latency.
    const SLOTS: usize = 8 << 20; // 8 Mi u64 = 64 MiB
    let mut next: Vec<u32> = (0..SLOTS as u32).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..SLOTS).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % i as u64) as usize;
        next.swap(i, j);
    }
    let memory = best(|| {
        let mut at = 0u32;
        for _ in 0..4_000_000u32 {
            at = next.get(at as usize).copied().unwrap_or(0);
        }
        u64::from(at)
    });
    (alu, memory)
}

/// CPU time (user + system) a node process has used so far, from `/proc` (Linux only).
fn cpu_time(node: &Node) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", node.child.id())).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Ticks of USER_HZ, which is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// A fresh pair of contacts, both running.
struct Pair {
    a: Arc<Node>,
    b: Arc<Node>,
    _dir: tempfile::TempDir,
}

fn pair(bin: &Path, server: &str) -> anyhow::Result<Pair> {
    let mut dir = tempfile::tempdir()?;
    // With `DOPUS_BENCH_NODE_LOG=<filter>` the nodes log at that level into `node.log` in their
    // data directories, which are kept for reading afterwards.
    if std::env::var_os("DOPUS_BENCH_NODE_LOG").is_some() {
        dir.disable_cleanup(true);
        println!("node data under {}", dir.path().display());
    }
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let ia = create(bin, &da, "alice")?;
    let ib = create(bin, &db, "bob")?;
    add(bin, &da, &ib)?;
    add(bin, &db, &ia)?;
    let a = start(bin, &da, ia, server)?;
    let b = start(bin, &db, ib, server)?;
    Ok(Pair {
        a: Arc::new(a),
        b: Arc::new(b),
        _dir: dir,
    })
}

async fn next_matching(
    rx: &mut mpsc::UnboundedReceiver<(Instant, Value)>,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Instant> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((at, v))) if pred(&v) => return Ok(at),
            Ok(Some(_)) => {}
            Ok(None) => bail!("event stream closed"),
            Err(_) => bail!("timed out waiting for an event"),
        }
    }
}

fn is_connected(v: &Value) -> bool {
    v["type"] == "connection" && v["connection"]["state"] == "connected"
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match args.node_bin {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("discordopus"),
    };
    anyhow::ensure!(bin.exists(), "no node binary at {}", bin.display());
    let (alu, memory) = calibration();
    println!(
        "calibration (best of 3, one core): arithmetic {:.0} ms, random reads over 64 MiB {:.0} ms \
         (a reference for comparing runs made at different times on a shared machine)",
        alu.as_secs_f64() * 1e3,
        memory.as_secs_f64() * 1e3
    );
    let srv_dir = tempfile::tempdir()?;
    let server = dopus_server::start(dopus_server::Config::loopback(srv_dir.path())).await?;
    let url = format!("ws://{}", server.addr);

    if args.call_secs > 0 {
        let (bin2, url2) = (bin.clone(), url.clone());
        let p = tokio::task::spawn_blocking(move || pair(&bin2, &url2)).await??;
        return call::run(&p, args.call_secs).await;
    }

    // Setup: fresh pairs, first send to open channel (sender's view).
    let mut setups = Vec::new();
    for _ in 0..args.setups {
        let (bin, url) = (bin.clone(), url.clone());
        let p = tokio::task::spawn_blocking(move || pair(&bin, &url)).await??;
        let mut ev = p.a.events().await?;
        let t0 = Instant::now();
        let (a, to) = (p.a.clone(), p.b.user_id.clone());
        tokio::task::spawn_blocking(move || a.send(&to, "hello")).await??;
        let t1 = next_matching(&mut ev, Duration::from_secs(60), is_connected).await?;
        setups.push(t1 - t0);
    }
    setups.sort();
    println!(
        "setup (first send -> channel open), {} fresh pairs: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        setups.len(),
        ms(setups[0]),
        ms(percentile(&setups, 0.5)),
        ms(setups[setups.len() - 1])
    );

    // Latency over an established channel.
    let (bin2, url2) = (bin.clone(), url.clone());
    let p = tokio::task::spawn_blocking(move || pair(&bin2, &url2)).await??;
    let mut ea = p.a.events().await?;
    let mut eb = p.b.events().await?;
    {
        let (a, to) = (p.a.clone(), p.b.user_id.clone());
        tokio::task::spawn_blocking(move || a.send(&to, "warm-up")).await??;
        next_matching(&mut ea, Duration::from_secs(60), is_connected).await?;
        // Nothing more is read from the sender's events: closing the stream keeps this process
        // from spending CPU on them, which the nodes on the same cores would feel.
        drop(ea);
        // A few messages over the open channel before measuring.
        for i in 0..50 {
            let (a, to) = (p.a.clone(), p.b.user_id.clone());
            let id = tokio::task::spawn_blocking(move || a.send(&to, &format!("w{i}"))).await??;
            next_matching(&mut eb, Duration::from_secs(30), |v| {
                v["type"] == "message" && v["message"]["id"] == id.as_str()
            })
            .await?;
        }
    }
    let mut lat = Vec::with_capacity(args.latency_messages);
    let mut api = Vec::with_capacity(args.latency_messages);
    for i in 0..args.latency_messages {
        let (a, to) = (p.a.clone(), p.b.user_id.clone());
        let body = format!("latency {i}");
        let t0 = Instant::now();
        let (id, answered) =
            tokio::task::spawn_blocking(move || a.send(&to, &body).map(|id| (id, Instant::now())))
                .await??;
        let t1 = next_matching(&mut eb, Duration::from_secs(30), |v| {
            v["type"] == "message" && v["message"]["id"] == id.as_str()
        })
        .await?;
        lat.push(t1 - t0);
        api.push(answered - t0);
    }
    lat.sort();
    api.sort();
    println!(
        "latency (send call -> receiver's message event), {} messages one at a time: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(percentile(&lat, 0.99)),
        ms(lat[lat.len() - 1])
    );
    println!(
        "  of which the send call itself (until its answer): p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&api, 0.5)),
        ms(percentile(&api, 0.99)),
    );
    let conn = p.a.get(&format!("/contacts/{}/connection", p.b.user_id))?;
    println!(
        "connection during the run: mode {}, state {}",
        conn["mode"], conn["state"]
    );

    // Throughput: several clients post at once; count the receiver's message events. First
    // one message per API call, then `--batch` messages per call.
    let sender_events = if args.watch_sender {
        Some(p.a.count_events().await?)
    } else {
        None
    };
    throughput(&p, &mut eb, args.clients, args.throughput_messages, 1, "tp").await?;
    if args.batch > 1 {
        throughput(
            &p,
            &mut eb,
            args.clients,
            args.throughput_messages,
            args.batch,
            "tb",
        )
        .await?;
    }
    match sender_events {
        Some((count, task)) => {
            let frames = count.load(std::sync::atomic::Ordering::Relaxed);
            task.abort();
            let lagged = matches!(task.await, Ok(true));
            println!(
                "a client followed the sender's events during the throughput runs ({frames} frames){}",
                if lagged {
                    "; it LAGGED and the node closed its stream, so the rest ran without it"
                } else {
                    ", without lagging"
                }
            );
        }
        None => println!(
            "nobody followed the sender's events during the throughput runs (--watch-sender to)"
        ),
    }
    drop(p);
    server.shutdown().await;
    Ok(())
}

/// Sends `n` messages from `clients` API clients at once, `batch` per API call, and reports
/// messages per second from the first call to the receiver's event for the last message.
async fn throughput(
    p: &Pair,
    eb: &mut mpsc::UnboundedReceiver<(Instant, Value)>,
    clients: usize,
    n: usize,
    batch: usize,
    tag: &str,
) -> anyhow::Result<()> {
    let per = n.div_ceil(clients);
    let cpu0 = (cpu_time(&p.a), cpu_time(&p.b));
    let traffic0 = traffic(p)?;
    let t0 = Instant::now();
    let mut posters = Vec::new();
    for c in 0..clients {
        let (a, to, tag) = (p.a.clone(), p.b.user_id.clone(), tag.to_owned());
        posters.push(tokio::task::spawn_blocking(
            move || -> anyhow::Result<()> {
                let bodies: Vec<String> = (0..per).map(|i| format!("{tag} {c} {i}")).collect();
                for chunk in bodies.chunks(batch) {
                    if batch == 1 {
                        a.send(&to, &chunk[0])?;
                    } else {
                        a.send_batch(&to, chunk)?;
                    }
                }
                Ok(())
            },
        ));
    }
    let total = per * clients;
    let prefix = format!("{tag} ");
    let mut received = 0;
    let mut last = t0;
    while received < total {
        last = next_matching(eb, Duration::from_secs(120), |v| {
            v["type"] == "message"
                && v["message"]["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with(&prefix))
        })
        .await?;
        received += 1;
    }
    for p in posters {
        p.await??;
    }
    let secs = (last - t0).as_secs_f64();
    println!(
        "throughput, {batch} message(s) per API call: {total} messages from {clients} API clients in {secs:.2} s = {:.0} messages/s (first call to the receiver's event of the last)",
        total as f64 / secs
    );
    if let ((Some(a0), Some(b0)), Some(a1), Some(b1)) = (cpu0, cpu_time(&p.a), cpu_time(&p.b)) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
        println!(
            "  CPU time per message: sender node {:.0} µs, receiver node {:.0} µs ({} cores here)",
            per(a1.saturating_sub(a0)),
            per(b1.saturating_sub(b0)),
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        );
    }
    let traffic1 = traffic(p)?;
    let delta = |k: &str| {
        let get = |v: &Value| v[k].as_u64().unwrap_or(0);
        get(&traffic1).saturating_sub(get(&traffic0)) as f64 / total as f64
    };
    println!(
        "  on the wire per message: {:.2} channel messages and {:.0} bytes out of the sender, {:.0} bytes back; the sender waited for buffer room {} times",
        delta("messages_sent"),
        delta("bytes_sent"),
        delta("bytes_received"),
        traffic1["send_waits"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(traffic0["send_waits"].as_u64().unwrap_or(0)),
    );
    Ok(())
}

/// The sender's connection counters towards the receiver (`traffic` in the connection).
fn traffic(p: &Pair) -> anyhow::Result<Value> {
    let conn = p.a.get(&format!("/contacts/{}/connection", p.b.user_id))?;
    Ok(conn["traffic"].clone())
}
