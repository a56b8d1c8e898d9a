//! Test media: synthetic Opus packets (framing only, never decoded) and a real file from opusenc.

use dopus_media::{OggOpusWriter, OpusHead, OpusTags};
use std::path::Path;
use std::process::Command;

/// `n` packets with valid TOC bytes and varied sizes and durations, each numbered in its body:
/// mostly 20 ms CELT (config 31), some 10 ms and 2×20 ms, and some longer than one Ogg segment.
pub fn synthetic_packets(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let toc = match i % 7 {
                3 => 30 << 3,       // CELT FB 10 ms
                5 => (31 << 3) | 1, // two 20 ms frames
                _ => 31 << 3,       // CELT FB 20 ms
            };
            let len = match i % 11 {
                4 => 300,
                9 => 510,
                _ => 20 + (i * 13) % 140,
            };
            let mut p = vec![toc];
            p.extend_from_slice(&(i as u32).to_be_bytes());
            p.extend((0..len).map(|j| (i * 31 + j) as u8));
            p
        })
        .collect()
}

/// A complete Ogg Opus file holding `packets`, written with our writer.
pub fn write_file(packets: &[Vec<u8>], serial: u32) -> Vec<u8> {
    let tags = OpusTags {
        vendor: "DiscordOpus test".into(),
        comments: vec!["TITLE=test".into()],
    };
    let (mut w, mut out) = OggOpusWriter::new(serial, OpusHead::for_recording(1), &tags);
    for p in packets {
        out.extend(w.push(p).expect("valid test packet"));
    }
    out.extend(w.finish());
    out
}

/// Real audio: `seconds` of a 440 Hz tone (48 kHz mono WAV made here) encoded by opusenc
/// (Debian's opus-tools, installed by `scripts/install-deps.sh --test`) at 32 kbit/s.
pub fn opusenc_fixture(dir: &Path, seconds: f64) -> Vec<u8> {
    opusenc_fixture_with(dir, seconds, 1, &[])
}

/// As [`opusenc_fixture`], with `channels` (1 or 2; the second channel at 660 Hz) and extra
/// opusenc arguments.
pub fn opusenc_fixture_with(dir: &Path, seconds: f64, channels: u16, extra: &[&str]) -> Vec<u8> {
    let rate = 48_000u32;
    let n = (f64::from(rate) * seconds) as u32;
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    let frame = 2 * u32::from(channels);
    wav.extend_from_slice(&(36 + n * frame).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&channels.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * frame).to_le_bytes());
    wav.extend_from_slice(&(frame as u16).to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(n * frame).to_le_bytes());
    for i in 0..n {
        let t = f64::from(i) / f64::from(rate);
        for hz in [440.0, 660.0].iter().take(usize::from(channels)) {
            let s = (t * hz * std::f64::consts::TAU).sin() * 8000.0;
            wav.extend_from_slice(&(s as i16).to_le_bytes());
        }
    }
    let wav_path = dir.join("tone.wav");
    let opus_path = dir.join("tone.opus");
    std::fs::write(&wav_path, wav).expect("write wav");
    let out = Command::new("opusenc")
        .args(["--quiet", "--bitrate", "32", "--serial", "1"])
        .args(extra)
        .arg(&wav_path)
        .arg(&opus_path)
        .output()
        .expect("opusenc (Debian opus-tools; scripts/install-deps.sh --test) is installed");
    assert!(
        out.status.success(),
        "opusenc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&opus_path).expect("read opusenc output")
}
