//! Measures connection set-up time and data-channel throughput between two peers on 127.0.0.1.
//! Numbers go to docs/rtc.md; they are observations, never test assertions.
//!
//! `cargo run -p dopus-rtc --example loopback [--release] -- [ROUNDS] [MIB] [SEND_BUFFER_KIB]`
#![allow(clippy::print_stdout, reason = "a measuring tool prints its results")]

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dopus_rtc::{DtlsIdentity, PeerConnection, PeerEvent, PeerEvents, PeerHandle, RtcConfig};

const CHUNK: usize = 64 * 1024;

async fn until_open(events: &mut PeerEvents, peer: &PeerHandle) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await? {
            Some(PeerEvent::LocalCandidate(c)) => peer.add_remote_candidate(&c).await?,
            Some(PeerEvent::ChannelOpen) => return Ok(()),
            Some(PeerEvent::Closed { reason }) => bail!("closed: {reason}"),
            Some(_) => {}
            None => bail!("events ended"),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let send_kib: Option<usize> = args.next().map(|a| a.parse()).transpose()?;

    let t = Instant::now();
    let identity = DtlsIdentity::generate()?;
    println!("dtls certificate generation: {:.1} ms", ms(t.elapsed()));
    let config = RtcConfig {
        dtls_identity: Some(identity),
        send_buffer: send_kib.map_or(dopus_rtc::DEFAULT_SEND_BUFFER, |k| k * 1024),
        ..RtcConfig::loopback()
    };

    for round in 0..rounds {
        let t0 = Instant::now();
        let (ha, mut ea, offer) = PeerConnection::offer(config.clone()).await?;
        let (hb, mut eb, answer) = PeerConnection::answer(config.clone(), &offer).await?;
        ha.accept_answer(&answer).await?;
        let (ra, rb) = tokio::join!(until_open(&mut ea, &hb), until_open(&mut eb, &ha));
        ra.context("a")?;
        rb.context("b")?;
        let setup = t0.elapsed();

        let total = mib * 1024 * 1024;
        let count = total / CHUNK;
        let chunk = vec![0xA5u8; CHUNK];
        let sender = ha.clone();
        let t1 = Instant::now();
        let send = tokio::spawn(async move {
            for _ in 0..count {
                sender.send(chunk.clone()).await?;
            }
            anyhow::Ok(())
        });
        let mut received = 0usize;
        while received < total {
            match tokio::time::timeout(Duration::from_secs(30), eb.recv()).await? {
                Some(PeerEvent::Data(d)) => received += d.len(),
                Some(PeerEvent::Closed { reason }) => bail!("closed: {reason}"),
                Some(_) => {}
                None => bail!("events ended"),
            }
        }
        let secs = t1.elapsed().as_secs_f64();
        send.await??;
        let d = ha.diagnostics().await?;
        println!(
            "round {round}: offer->open {:.2} ms, {mib} MiB in {:.2} s = {:.1} MiB/s, send waits {}",
            ms(setup),
            secs,
            mib as f64 / secs,
            d.send_waits
        );
        ha.close().await;
        hb.close().await;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
