//! Audio on a connected pair over real UDP: renegotiation, frames through the attached media
//! tasks (never through the event stream), refusals counted with their reasons.

use crate::common::*;
use dopus_rtc::{MediaEvent, PeerError};
use tokio::sync::mpsc;

async fn ready(rx: &mut mpsc::Receiver<MediaEvent>) -> String {
    loop {
        match tokio::time::timeout(WAIT, rx.recv()).await.unwrap() {
            Some(MediaEvent::Ready { mid }) => return mid,
            Some(MediaEvent::Frame(_) | MediaEvent::Video(_) | MediaEvent::KeyframeRequest) => {}
            None => panic!("sink closed"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_frames_reach_the_attached_task_in_order_and_unattached_media_is_refused() {
    let (mut a, mut b) = pair().await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;

    // A writes before any audio is negotiated: refused, with the reason.
    let (a_sink, mut a_rx) = mpsc::channel(256);
    let a_out = a.handle.attach_media(a_sink).await.unwrap();
    a_out.send(0, vec![0xfc, 0]).unwrap();
    // The frame travels on its own channel, not the command queue: wait until the connection's
    // task has judged it before negotiating audio (else it could be judged after, and sent).
    let mut stats = a.handle.media_stats().await.unwrap();
    for _ in 0..250 {
        if stats.refused_out > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        stats = a.handle.media_stats().await.unwrap();
    }
    assert_eq!(stats.refused_out, 1, "{stats:?}");

    // B is not in the call yet: nothing attached on its side.
    let offer = a.handle.add_audio().await.unwrap();
    let answer = b.handle.accept_offer(&offer).await.unwrap();
    a.handle.accept_answer(&answer).await.unwrap();
    let mid = ready(&mut a_rx).await;
    let stats = a.handle.media_stats().await.unwrap();
    assert_eq!(stats.refused_out, 1, "{stats:?}");
    assert!(
        stats
            .last_refusal
            .as_deref()
            .is_some_and(|w| w.contains("no audio m-line")),
        "{stats:?}"
    );

    // Media to B while B has no call attached: refused there, and counted.
    for i in 0..5u64 {
        a_out.send(i * 960, vec![0xfc, i as u8]).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut refused = 0;
    for _ in 0..100 {
        let s = b.handle.media_stats().await.unwrap();
        refused = s.refused_in;
        if refused > 0 {
            assert!(
                s.last_refusal.as_deref().unwrap().contains("not in a call"),
                "{s:?}"
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused > 0, "B refused nothing");

    // B joins: it gets Ready at once, then every frame in order, bit-exact.
    let (b_sink, mut b_rx) = mpsc::channel(256);
    let b_out = b.handle.attach_media(b_sink).await.unwrap();
    assert_eq!(ready(&mut b_rx).await, mid);
    let sent: Vec<Vec<u8>> = (0..40u8).map(|i| vec![0xfc, i, i ^ 0x5a, 7]).collect();
    for (i, d) in sent.iter().enumerate() {
        a_out.send(100_000 + i as u64 * 960, d.clone()).unwrap();
        b_out.send(7_000 + i as u64 * 960, d.clone()).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match tokio::time::timeout(WAIT, b_rx.recv()).await.unwrap() {
            Some(MediaEvent::Frame(f)) => {
                if f.data.get(1) == Some(&0) && got.is_empty() && f.rtp_time < 100_000 {
                    continue; // a late frame from before B attached
                }
                got.push(f);
            }
            Some(MediaEvent::Ready { .. } | MediaEvent::Video(_) | MediaEvent::KeyframeRequest) => {
            }
            None => panic!("sink closed"),
        }
    }
    let first = got[0].rtp_time;
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f.data, sent[i], "frame {i}");
        assert_eq!(f.rtp_time - first, i as u64 * 960);
        assert_eq!(f.mid, mid);
    }
    let mut back = 0;
    while back < sent.len() {
        if let Some(MediaEvent::Frame(f)) = tokio::time::timeout(WAIT, a_rx.recv()).await.unwrap() {
            assert_eq!(f.data, sent[back]);
            back += 1;
        }
    }

    // Detached, B's old sender is refused; the data channel is unaffected.
    b.handle.detach_media().await;
    b_out.send(0, vec![0xfc, 1]).unwrap();
    a.handle.send(b"still here".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut b).await, b"still here");
    let s = b.handle.media_stats().await.unwrap();
    assert!(!s.attached);
    assert!(s.refused_out >= 1, "{s:?}");
    assert!(matches!(
        a.handle.add_audio().await,
        Err(PeerError::Negotiation(_))
    ));
}
