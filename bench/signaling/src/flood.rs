//! `--flood SECS`: malformed frames against a running server, to show its memory stays flat.
//!
//! 64 connections send a mix of bad input for SECS seconds: text that is not JSON, unknown
//! types, frames with missing fields, binary messages, frames over the soft size limit, logins
//! with bad signatures, and frames before login. The server closes each connection after 50 bad
//! frames (or at the bad login); the connection is opened again at once. The server's RSS is
//! sampled every second; the report gives it before, at its highest, and after.

use crate::{ServerChild, identity, open, source};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const FLOODERS: usize = 64;

pub(crate) async fn run(server: &ServerChild, secs: u64, sources: u8) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    let before = server.rss_kib()?;
    let mut tasks = Vec::new();
    for f in 0..FLOODERS {
        let (stop, frames, conns) = (stop.clone(), frames.clone(), conns.clone());
        let addr = server.addr;
        let src = source(f, sources);
        tasks.push(tokio::spawn(async move {
            let mut round: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                // Every other connection logs in first; the others flood the login phase.
                let sent = if round.is_multiple_of(2) {
                    match open(addr, src, &identity(6_000_000_000 + f as u64)).await {
                        Ok(mut ws) => spray(&mut ws, round, false).await,
                        Err(_) => 0,
                    }
                } else {
                    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws?v=1")).await {
                        Ok((mut ws, _)) => spray(&mut ws, round, true).await,
                        Err(_) => 0,
                    }
                };
                if sent == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                conns.fetch_add(1, Ordering::Relaxed);
                frames.fetch_add(sent, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    let mut peak = before;
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = server.rss_kib()?;
        peak = peak.max(rss);
        samples.push(rss);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib()?;
    let n = samples.len();
    let first_half = samples[..n / 2].iter().copied().max().unwrap_or(0);
    let second_half = samples[n / 2..].iter().copied().max().unwrap_or(0);
    println!("## malformed-frame flood, {FLOODERS} connections at a time, {secs} s");
    println!(
        "{} bad frames on {} connections ({:.0} frames/s)",
        frames.load(Ordering::Relaxed),
        conns.load(Ordering::Relaxed),
        frames.load(Ordering::Relaxed) as f64 / secs as f64
    );
    println!(
        "server RSS: {before} KiB before, highest {peak} KiB (first half {first_half}, second half {second_half}), {after} KiB after"
    );
    Ok(())
}

/// Sends 60 bad messages (the server closes after 51), then reads until the server's close.
async fn spray<S, E>(ws: &mut S, round: u64, before_login: bool) -> u64
where
    S: futures_util::Sink<Message> + futures_util::Stream<Item = Result<Message, E>> + Unpin,
{
    let mut sent = 0;
    for i in 0..60u64 {
        if ws.feed(bad(round, i, before_login)).await.is_err() {
            break;
        }
        sent += 1;
    }
    let _ = ws.flush().await;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(3), ws.next()).await {}
    sent
}

/// The `i`-th bad message of a round: every kind of bad input in turn.
fn bad(round: u64, i: u64, before_login: bool) -> Message {
    match (round + i) % 8 {
        0 => Message::text("{not json"),
        1 => Message::text(format!(r#"{{"type":"teleport","id":{i}}}"#)),
        2 => Message::text(format!(r#"{{"type":"relay","id":{i},"payload":"x"}}"#)),
        3 => Message::binary(vec![0xff; 100]),
        // Between the soft limit (answered) and the hard one (closes at once).
        4 => Message::text("x".repeat(70_000)),
        5 if before_login => Message::text(
            r#"{"type":"auth","user_id":"dopus1x","device_id":"d","challenge":"AA","signature":"AA"}"#,
        ),
        5 => Message::text(format!(
            r#"{{"type":"set_status","id":{i},"status":"napping"}}"#
        )),
        6 => Message::text(format!(r#"[{i},{{"type":"ping"}}]"#)),
        _ => Message::text(format!(r#"{{"type":"ack","id":{i},"ids":"all"}}"#)),
    }
}
