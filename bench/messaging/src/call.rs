//! `--call-secs N`: a 1:1 call's media path between the two nodes, without browsers.
//!
//! Each node gets a browser leg through its API (`POST /calls/{id}/browser`), answered to a
//! str0m stand-in for the page (`dopus_rtc::FakeBrowser`) in this process. Both "pages" send a
//! 20 ms Opus-sized frame every 20 ms for N seconds; each frame carries its sequence number, and
//! the other "page" takes it off its leg. A frame's delay is its arrival minus its send, on this
//! process's clock: page → leg → node → the nodes' peer connection → node → leg → page, that is
//! four loopback hops, two nodes' forwarding, and SRTP on each hop, but no browser (no encoder,
//! no jitter buffer). Each node forwards two streams (one up, one down); its CPU time over the
//! window divided by the frames it handled is its CPU per forwarded frame.

use super::{Node, Pair, cpu_time, ms, percentile};
use anyhow::{Context, bail};
use dopus_rtc::{FakeBrowser, LegEvent, OpenedLeg};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FRAME: Duration = Duration::from_millis(20);

impl Node {
    fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        Ok(self
            .agent
            .post(format!("{}/api/v1{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(body)?
            .body_mut()
            .read_json()?)
    }
}

/// A frame: an Opus TOC byte (CELT fullband 20 ms, mono), the direction's tag, the sequence
/// number, and filler to about a 32 kbit/s frame's size.
fn frame(tag: u8, seq: u32) -> Vec<u8> {
    let mut v = vec![31 << 3, tag];
    v.extend_from_slice(&seq.to_be_bytes());
    v.resize(80, 0x5a);
    v
}

fn seq_of(data: &[u8]) -> Option<(u8, u32)> {
    let tag = *data.get(1)?;
    let b: [u8; 4] = data.get(2..6)?.try_into().ok()?;
    Some((tag, u32::from_be_bytes(b)))
}

/// Opens a node's leg for `call` through its API, answered to a fresh stand-in page.
async fn open_leg(node: &Arc<Node>, call: &str) -> anyhow::Result<OpenedLeg> {
    let (fake, offer) = FakeBrowser::offer().map_err(|e| anyhow::anyhow!("offer: {e}"))?;
    let (n, path) = (node.clone(), format!("/calls/{call}/browser"));
    let answer =
        tokio::task::spawn_blocking(move || n.post(&path, json!({ "sdp": offer }))).await??;
    let sdp = answer["sdp"].as_str().context("an answer")?.to_owned();
    fake.accept(&sdp)
        .map_err(|e| anyhow::anyhow!("answer: {e}"))
}

async fn wait_for(
    node: &Arc<Node>,
    path: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (n, p) = (node.clone(), path.to_owned());
        let v = tokio::task::spawn_blocking(move || n.get(&p)).await??;
        if ok(&v) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}: {v}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the call for `secs` seconds and prints the figures.
pub async fn run(p: &Pair, secs: u64) -> anyhow::Result<()> {
    let (a, b) = (p.a.clone(), p.b.clone());
    let to = b.user_id.clone();
    let a2 = a.clone();
    let call =
        tokio::task::spawn_blocking(move || a2.post("/calls", json!({ "user_id": to }))).await??;
    let id = call["id"].as_str().context("call id")?.to_owned();
    let mut alice = open_leg(&a, &id).await?;
    let aid = a.user_id.clone();
    wait_for(&b, "/calls", "bob's node to ring", |c| {
        c["calls"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["user_id"] == json!(aid) && c["state"] == "ringing")
        })
    })
    .await?;
    let (b2, path) = (b.clone(), format!("/calls/{id}/accept"));
    tokio::task::spawn_blocking(move || b2.post(&path, json!({}))).await??;
    let mut bob = open_leg(&b, &id).await?;
    for n in [&a, &b] {
        wait_for(n, &format!("/calls/{id}"), "media and the leg", |c| {
            c["media"]["ready"] == true && c["media"]["browser"]["connected"] == true
        })
        .await?;
    }
    // Past the answerer's 500 ms hold before its first frames.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let frames = u32::try_from(secs * 1000 / 20).unwrap_or(u32::MAX);
    let sent: Arc<std::sync::Mutex<HashMap<(u8, u32), Instant>>> = Arc::default();
    let receive = |mut leg_events: tokio::sync::mpsc::Receiver<LegEvent>,
                   sent: Arc<std::sync::Mutex<HashMap<(u8, u32), Instant>>>| {
        tokio::spawn(async move {
            let mut delays = Vec::new();
            let end =
                tokio::time::Instant::now() + Duration::from_secs(secs) + Duration::from_secs(2);
            while let Ok(Some(ev)) = tokio::time::timeout_at(end, leg_events.recv()).await {
                if let LegEvent::Frame { data, .. } = ev {
                    let now = Instant::now();
                    if let Some(key) = seq_of(&data)
                        && let Some(t) = sent.lock().ok().and_then(|s| s.get(&key).copied())
                    {
                        delays.push(now - t);
                    }
                }
            }
            delays
        })
    };
    let at_bob = receive(
        std::mem::replace(&mut bob.events, tokio::sync::mpsc::channel(1).1),
        sent.clone(),
    );
    let at_alice = receive(
        std::mem::replace(&mut alice.events, tokio::sync::mpsc::channel(1).1),
        sent.clone(),
    );
    let cpu0 = (cpu_time(&a), cpu_time(&b));
    let t0 = tokio::time::Instant::now();
    for i in 0..frames {
        tokio::time::sleep_until(t0 + FRAME * i).await;
        let rtp = 9_600 + u64::from(i) * 960;
        if let Ok(mut s) = sent.lock() {
            let now = Instant::now();
            s.insert((0xa1, i), now);
            s.insert((0xb1, i), now);
        }
        let _ = alice.handle.send_down(rtp, frame(0xa1, i));
        let _ = bob.handle.send_down(rtp, frame(0xb1, i));
    }
    let window = t0.elapsed();
    let cpu1 = (cpu_time(&a), cpu_time(&b));
    let mut ab = at_bob.await?;
    let mut ba = at_alice.await?;
    for (name, d) in [("alice -> bob", &mut ab), ("bob -> alice", &mut ba)] {
        d.sort();
        if d.is_empty() {
            bail!("{name}: no frame arrived");
        }
        println!(
            "call media {name}: {} of {frames} frames, page-to-page without browsers p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            d.len(),
            ms(percentile(d, 0.5)),
            ms(percentile(d, 0.99)),
            ms(d[d.len() - 1]),
        );
    }
    for (name, c0, c1) in [("alice", cpu0.0, cpu1.0), ("bob", cpu0.1, cpu1.1)] {
        if let (Some(c0), Some(c1)) = (c0, c1) {
            let cpu = c1.saturating_sub(c0);
            // Each node forwards its page's frames up and the peer's frames down.
            let handled = 2 * u64::from(frames);
            println!(
                "{name}'s node: {:.1} % of a core over {:.1} s for 2 streams ({:.1} % per stream), {:.1} µs of CPU per forwarded frame",
                100.0 * cpu.as_secs_f64() / window.as_secs_f64(),
                window.as_secs_f64(),
                50.0 * cpu.as_secs_f64() / window.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / handled as f64,
            );
        }
    }
    let (a2, path) = (a.clone(), format!("/calls/{id}/hangup"));
    let _ = tokio::task::spawn_blocking(move || a2.post(&path, json!({}))).await?;
    Ok(())
}
