//! Relayed vs direct on 127.0.0.1: connection set-up, message round trip, throughput, and the
//! embedded relay's CPU per relayed packet. Observations for docs/benchmarks.md, never
//! assertions.
//!
//! `cargo run [--release] -p dopus-bench-turn -- [ROUNDS] [MIB]`
//!
//! The relay runs in this process on its own single-threaded runtime and OS thread, so its CPU
//! time is that thread's (`/proc/thread-self/stat`, 10 ms ticks): everything the server does
//! (its signaling side is idle here) for the packets counted by its metrics.
#![allow(clippy::print_stdout, reason = "a measuring tool prints its results")]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dopus_rtc::{
    DtlsIdentity, IceServer, PeerConnection, PeerEvent, PeerEvents, PeerHandle, RtcConfig,
};

const CHUNK: usize = 64 * 1024;
const SECRET: &str = "loopback-test-secret";

async fn until_open(events: &mut PeerEvents, peer: &PeerHandle) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await? {
            Some(PeerEvent::LocalCandidate(c)) => peer.add_remote_candidate(&c).await?,
            Some(PeerEvent::ChannelOpen) => return Ok(()),
            Some(PeerEvent::Closed { reason }) => bail!("closed: {reason}"),
            Some(_) => {}
            None => bail!("events ended"),
        }
    }
}

async fn next_data(events: &mut PeerEvents, peer: &PeerHandle) -> anyhow::Result<Vec<u8>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await? {
            Some(PeerEvent::LocalCandidate(c)) => peer.add_remote_candidate(&c).await?,
            Some(PeerEvent::Data(d)) => return Ok(d),
            Some(PeerEvent::Closed { reason }) => bail!("closed: {reason}"),
            Some(_) => {}
            None => bail!("events ended"),
        }
    }
}

/// utime + stime of the calling thread.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the ')' field 3 (state) is index 0: utime is field 14, stime 15.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn rest(user: &str) -> (String, String) {
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    let name = format!("{expiry}:{user}");
    let pass = dopus_server::turn::rest_password(SECRET.as_bytes(), &name);
    (name, pass)
}

struct Run {
    setup: Duration,
    rtt_median: Duration,
    rtt_p99: Duration,
    mib_per_s: f64,
}

async fn run(
    base: &RtcConfig,
    relay: Option<std::net::SocketAddr>,
    mib: usize,
) -> anyhow::Result<Run> {
    let cfg = |who: &str| -> anyhow::Result<RtcConfig> {
        let mut c = base.clone();
        if let Some(r) = relay {
            let (u, p) = rest(who);
            c.ice_servers = vec![IceServer::turn(&format!("turn:{r}?transport=udp"), &u, &p)?];
            c.relay_only = true;
        }
        Ok(c)
    };
    let t0 = Instant::now();
    let (ha, mut ea, offer) = PeerConnection::offer(cfg("a")?).await?;
    let (hb, mut eb, answer) = PeerConnection::answer(cfg("b")?, &offer).await?;
    ha.accept_answer(&answer).await?;
    let (ra, rb) = tokio::join!(until_open(&mut ea, &hb), until_open(&mut eb, &ha));
    ra.context("a")?;
    rb.context("b")?;
    let setup = t0.elapsed();
    // Round trips of 100-byte messages, one at a time.
    let mut rtts = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        ha.send(vec![1; 100]).await?;
        let d = next_data(&mut eb, &ha).await?;
        hb.send(d).await?;
        next_data(&mut ea, &hb).await?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let rtt_median = rtts[rtts.len() / 2];
    let rtt_p99 = rtts[rtts.len() * 99 / 100];
    // Throughput.
    let count = mib * 1024 * 1024 / CHUNK;
    let sender = ha.clone();
    let t1 = Instant::now();
    let send = tokio::spawn(async move {
        for _ in 0..count {
            sender.send(vec![0xA5; CHUNK]).await?;
        }
        anyhow::Ok(())
    });
    let mut got = 0usize;
    while got < count * CHUNK {
        got += next_data(&mut eb, &ha).await?.len();
    }
    send.await??;
    let secs = t1.elapsed().as_secs_f64();
    ha.close().await;
    hb.close().await;
    Ok(Run {
        setup,
        rtt_median,
        rtt_p99,
        mib_per_s: (count * CHUNK) as f64 / 1048576.0 / secs,
    })
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);

    // The relay: its own thread and runtime.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (cpu_tx, mut cpu_rx) =
        tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<Duration>>();
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let dir = tempfile::tempdir().expect("tempdir");
                let mut config = dopus_server::Config::loopback(dir.path());
                config.turn = Some(dopus_server::TurnSettings::loopback());
                let server = dopus_server::start(config).await.expect("server");
                let _ = addr_tx.send((server.turn_addrs.map(|a| a.listen), server.metrics.clone()));
                // Everything of the server runs on this thread: answer CPU-time questions here.
                while let Some(reply) = cpu_rx.recv().await {
                    let _ = reply.send(thread_cpu());
                }
                drop(dir);
            });
        })?;
    let (relay, metrics) = addr_rx.recv()?;
    let relay = relay.context("no relay")?;
    let relay_cpu = || -> anyhow::Result<Duration> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        cpu_tx
            .send(tx)
            .map_err(|_| anyhow::anyhow!("relay thread gone"))?;
        Ok(rx.blocking_recv()?)
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let base = RtcConfig {
        dtls_identity: Some(DtlsIdentity::generate()?),
        ..RtcConfig::loopback()
    };
    println!(
        "| path | set-up | RTT median | RTT p99 | throughput ({mib} MiB) | relay CPU | relayed packets | CPU per packet |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for round in 0..rounds {
        for relayed in [false, true] {
            let cpu0 = relay_cpu()?;
            let p0 = metrics.turn_relayed_packets_total.load(Ordering::Relaxed);
            let r = rt.block_on(run(&base, relayed.then_some(relay), mib))?;
            let cpu = relay_cpu()? - cpu0;
            let packets = metrics.turn_relayed_packets_total.load(Ordering::Relaxed) - p0;
            let per = if packets > 0 {
                format!("{:.1} µs", cpu.as_secs_f64() * 1e6 / packets as f64)
            } else {
                "–".into()
            };
            println!(
                "| {} (round {}) | {:.1} ms | {:.0} µs | {:.0} µs | {:.1} MiB/s | {:.2} s | {} | {} |",
                if relayed {
                    "relayed (both relay-only)"
                } else {
                    "direct (host)"
                },
                round + 1,
                r.setup.as_secs_f64() * 1e3,
                r.rtt_median.as_secs_f64() * 1e6,
                r.rtt_p99.as_secs_f64() * 1e6,
                r.mib_per_s,
                cpu.as_secs_f64(),
                packets,
                per
            );
        }
    }
    Ok(())
}
