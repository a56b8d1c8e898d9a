//! Ogg Opus reading and writing: round trips, cross-checks against the `ogg` crate and
//! opus-tools, clear errors on damage, and no panics on any input.

use crate::fixtures::{opusenc_fixture, opusenc_fixture_with, synthetic_packets, write_file};
use dopus_media::ogg::{PageError, PageWriter};
use dopus_media::opus::packet_samples;
use dopus_media::{
    OggOpusFile, OggOpusWriter, OpusError, OpusHead, OpusPlayer, OpusTags, PacketError, PushOutcome,
};
use proptest::prelude::*;
use std::io::Cursor;
use std::process::Command;
use std::time::Duration;

#[test]
fn toc_durations_follow_rfc_6716() {
    // config 31 = CELT FB 20 ms; code 0 = one frame.
    assert_eq!(packet_samples(&[31 << 3]), Ok(960));
    // config 16 = CELT NB 2.5 ms, code 1 = two frames.
    assert_eq!(packet_samples(&[(16 << 3) | 1]), Ok(240));
    // config 3 = SILK NB 60 ms, code 3 with 2 frames = 120 ms, the most allowed.
    assert_eq!(packet_samples(&[(3 << 3) | 3, 2]), Ok(5760));
    assert_eq!(
        packet_samples(&[(3 << 3) | 3, 3]),
        Err(PacketError::TooLong(8640))
    );
    assert_eq!(packet_samples(&[(13 << 3) | 2]), Ok(1920));
    assert_eq!(packet_samples(&[]), Err(PacketError::Empty));
    assert_eq!(packet_samples(&[3]), Err(PacketError::NoFrameCount));
    assert_eq!(packet_samples(&[3, 0]), Err(PacketError::ZeroFrames));
}

#[test]
fn written_packets_read_back_identical() {
    let packets = synthetic_packets(300);
    let bytes = write_file(&packets, 0x1234);
    let file = OggOpusFile::parse(&bytes).expect("valid file");
    assert!(file.complete);
    assert_eq!(file.serial, 0x1234);
    assert_eq!(file.head, OpusHead::for_recording(1));
    assert_eq!(file.tags.vendor, "DiscordOpus test");
    assert_eq!(file.end_trim, 0);
    let read: Vec<Vec<u8>> = file.packets.iter().map(|p| p.data.clone()).collect();
    assert_eq!(read, packets);
}

#[test]
fn an_empty_recording_is_valid() {
    let (w, mut bytes) = OggOpusWriter::new(9, OpusHead::for_recording(2), &OpusTags::default());
    bytes.extend(w.finish());
    let file = OggOpusFile::parse(&bytes).expect("valid");
    assert!(file.complete && file.packets.is_empty());
}

#[test]
fn the_ogg_crate_reads_our_pages() {
    let packets = synthetic_packets(120);
    let bytes = write_file(&packets, 77);
    let mut r = ogg::PacketReader::new(Cursor::new(bytes));
    let mut seen = Vec::new();
    let mut last_granule = 0;
    while let Some(p) = r
        .read_packet()
        .expect("the ogg crate accepts our pages (CRC included)")
    {
        if p.last_in_page() {
            last_granule = p.absgp_page();
        }
        seen.push(p.data);
    }
    assert_eq!(&seen[0][..8], b"OpusHead");
    assert_eq!(&seen[1][..8], b"OpusTags");
    assert_eq!(&seen[2..], &packets[..]);
    let total: u64 = packets
        .iter()
        .map(|p| u64::from(packet_samples(p).unwrap_or(0)))
        .sum();
    assert_eq!(last_granule, total);
}

#[test]
fn we_read_pages_written_by_the_ogg_crate() {
    use ogg::writing::PacketWriteEndInfo::{EndPage, EndStream, NormalPacket};
    let packets = synthetic_packets(80);
    let mut w = ogg::PacketWriter::new(Vec::new());
    let serial = 5;
    w.write_packet(OpusHead::for_recording(1).to_bytes(), serial, EndPage, 0)
        .expect("write");
    w.write_packet(OpusTags::default().to_bytes(), serial, EndPage, 0)
        .expect("write");
    let mut granule = 0u64;
    for (i, p) in packets.iter().enumerate() {
        granule += u64::from(packet_samples(p).unwrap_or(0));
        let end = if i + 1 == packets.len() {
            EndStream
        } else if i % 10 == 9 {
            EndPage
        } else {
            NormalPacket
        };
        w.write_packet(p.clone(), serial, end, granule)
            .expect("write");
    }
    let file = OggOpusFile::parse(&w.into_inner()).expect("we accept the ogg crate's file");
    assert!(file.complete);
    let read: Vec<Vec<u8>> = file.packets.into_iter().map(|p| p.data).collect();
    assert_eq!(read, packets);
}

#[test]
fn real_opusenc_output_parses_and_our_copy_passes_opusinfo_and_opusdec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = opusenc_fixture(dir.path(), 2.0);
    let file = OggOpusFile::parse(&original).expect("opusenc's file is valid");
    assert!(file.complete);
    assert_eq!(file.head.channels, 1);
    // 2 s of 20 ms packets; opusenc adds pre-skip worth of packets and trims the end.
    assert!(file.packets.len() >= 100, "{} packets", file.packets.len());
    assert!(file.packets.iter().all(|p| p.samples == 960));
    assert!(file.end_trim > 0);

    // Record the same packets with our writer (as a call's sink would) and let libopusfile judge.
    let (mut w, mut copy) = OggOpusWriter::new(
        42,
        file.head,
        &OpusTags {
            vendor: "DiscordOpus".into(),
            comments: vec![],
        },
    );
    for p in &file.packets {
        copy.extend(w.push(&p.data).expect("valid packet"));
    }
    copy.extend(w.finish());
    let path = dir.path().join("copy.opus");
    std::fs::write(&path, &copy).expect("write");
    let info = Command::new("opusinfo")
        .arg(&path)
        .output()
        .expect("opusinfo (opus-tools) is installed");
    let text =
        String::from_utf8_lossy(&info.stdout).to_string() + &String::from_utf8_lossy(&info.stderr);
    assert!(info.status.success(), "opusinfo failed: {text}");
    assert!(
        !text.contains("WARNING") && !text.contains("ERROR"),
        "opusinfo complains: {text}"
    );
    let wav = dir.path().join("copy.wav");
    let dec = Command::new("opusdec")
        .arg("--quiet")
        .arg(&path)
        .arg(&wav)
        .output()
        .expect("opusdec");
    assert!(
        dec.status.success(),
        "opusdec failed: {}",
        String::from_utf8_lossy(&dec.stderr)
    );
    let again = OggOpusFile::parse(&copy).expect("our copy parses");
    assert_eq!(again.packets, file.packets);

    // A recording with every 10th packet lost: the gaps are filled with TOC-only packets, the
    // length is kept, and libopus decodes the fillers (as concealment).
    let (mut w, mut lossy) = OggOpusWriter::new(43, file.head, &OpusTags::default());
    let mut rtp = 0u64;
    for (i, p) in file.packets.iter().enumerate() {
        if i % 10 != 5 {
            lossy.extend(w.push_at(rtp, &p.data).expect("valid packet").0);
        }
        rtp += u64::from(p.samples);
    }
    lossy.extend(w.finish());
    let parsed = OggOpusFile::parse(&lossy).expect("the lossy recording parses");
    // Every gap is filled, except a loss at the very end, which nothing follows.
    assert_eq!(
        parsed.total_samples(),
        file.total_samples() - 960 * u64::from((file.packets.len() - 1) % 10 == 5)
    );
    let lossy_path = dir.path().join("lossy.opus");
    std::fs::write(&lossy_path, &lossy).expect("write");
    let info = Command::new("opusinfo")
        .arg(&lossy_path)
        .output()
        .expect("opusinfo");
    let text =
        String::from_utf8_lossy(&info.stdout).to_string() + &String::from_utf8_lossy(&info.stderr);
    assert!(
        info.status.success() && !text.contains("WARNING") && !text.contains("ERROR"),
        "opusinfo: {text}"
    );
    let dec = Command::new("opusdec")
        .arg("--quiet")
        .arg(&lossy_path)
        .arg(dir.path().join("lossy.wav"))
        .output()
        .expect("opusdec");
    assert!(
        dec.status.success(),
        "opusdec failed: {}",
        String::from_utf8_lossy(&dec.stderr)
    );
}

#[test]
fn stereo_60_ms_frames_and_tags_spanning_pages_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = format!("BIG={}", "x".repeat(70_000));
    let bytes = opusenc_fixture_with(
        dir.path(),
        1.0,
        2,
        &["--framesize", "60", "--comment", &big],
    );
    let file = OggOpusFile::parse(&bytes).expect("opusenc's file is valid");
    assert_eq!(file.head.channels, 2);
    assert!(
        file.tags.comments.iter().any(|c| c.len() == big.len()),
        "the 70 KB comment, over two pages"
    );
    assert!(file.packets.iter().all(|p| p.samples == 2880));
    assert!(file.complete && file.end_trim > 0);
}

#[test]
fn the_player_paces_packets_by_their_durations() {
    let packets = synthetic_packets(5);
    let file = OggOpusFile::parse(&write_file(&packets, 1)).expect("valid");
    let durations: Vec<u32> = file.packets.iter().map(|p| p.samples).collect();
    let mut player = OpusPlayer::new(file);
    assert_eq!(player.next_due(), Some(Duration::ZERO));
    let mut rtp_expected = 0u64;
    for d in durations {
        let due = player.next_due().expect("more packets");
        assert_eq!(
            due,
            Duration::from_micros(rtp_expected * 1_000_000 / 48_000)
        );
        if !due.is_zero() {
            assert!(
                player.poll(due - Duration::from_micros(1)).is_none(),
                "not due yet"
            );
        }
        let (rtp, _) = player.poll(due).expect("due");
        assert_eq!(rtp, rtp_expected);
        rtp_expected += u64::from(d);
    }
    assert!(player.is_done() && player.next_due().is_none());
}

#[test]
fn push_at_fills_gaps_so_the_recording_keeps_its_timing() {
    let (mut w, mut bytes) =
        OggOpusWriter::new(4, OpusHead::for_recording(1), &OpusTags::default());
    let mut push = |rtp: u64, p: &[u8]| {
        let (out, outcome) = w.push_at(rtp, p).expect("valid packet");
        bytes.extend(out);
        outcome
    };
    assert_eq!(
        push(1000, P20),
        PushOutcome::InOrder,
        "the first packet sets the clock"
    );
    assert_eq!(push(1960, P20), PushOutcome::InOrder);
    // Three 20 ms packets lost.
    assert_eq!(
        push(1960 + 4 * 960, P20),
        PushOutcome::FilledGap {
            samples: 2880,
            packets: 3,
            unfilled: 0
        }
    );
    // A duplicate (or a sender going back) is dropped.
    assert_eq!(push(1960, P20), PushOutcome::Late);
    // 1000 samples: one 20 ms filler; the 40 samples left cannot be expressed in Opus frames.
    assert_eq!(
        push(1960 + 5 * 960 + 1000, P20),
        PushOutcome::FilledGap {
            samples: 1000,
            packets: 1,
            unfilled: 40
        }
    );
    // More than a minute: the sender restarted its clock; no minute of silence.
    let far = 1960 + 6 * 960 + 1000 + 61 * 48_000;
    assert!(matches!(push(far, P20), PushOutcome::Resync { .. }));
    bytes.extend(w.finish());
    let file = OggOpusFile::parse(&bytes).expect("valid");
    let sizes: Vec<usize> = file.packets.iter().map(|p| p.data.len()).collect();
    assert_eq!(sizes, vec![4, 4, 1, 1, 1, 4, 1, 4, 4]);
    assert_eq!(
        file.total_samples(),
        9 * 960,
        "5 packets and 4 fillers of 20 ms"
    );
}

// --- bad input: each damage gives its own clear error ---

#[test]
fn a_flipped_byte_fails_the_page_crc() {
    let mut bytes = write_file(&synthetic_packets(20), 3);
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    let err = OggOpusFile::parse(&bytes).expect_err("damaged");
    assert!(
        matches!(err, OpusError::Page(PageError::Crc { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("CRC"), "{err}");
}

#[test]
fn truncation_and_garbage_are_reported_with_the_offset() {
    let bytes = write_file(&synthetic_packets(20), 3);
    let err = OggOpusFile::parse(&bytes[..bytes.len() - 10]).expect_err("truncated");
    assert!(
        matches!(err, OpusError::Page(PageError::Truncated { .. })),
        "{err}"
    );
    let mut garbage = bytes.clone();
    garbage.extend_from_slice(b"trailing junk");
    let err = OggOpusFile::parse(&garbage).expect_err("garbage");
    assert_eq!(
        err,
        OpusError::Page(PageError::NoCapturePattern {
            offset: bytes.len()
        })
    );
    assert_eq!(
        OggOpusFile::parse(b"RIFF....WAVEfmt "),
        Err(OpusError::Page(PageError::NoCapturePattern { offset: 0 }))
    );
    assert_eq!(OggOpusFile::parse(b""), Err(OpusError::Empty));
}

/// Builds a file page by page with the raw page writer, to make streams that are well-formed
/// Ogg but wrong Ogg Opus.
fn raw_file(head: &[u8], pages: &[(&[&[u8]], u64)], eos: bool) -> Vec<u8> {
    let mut w = PageWriter::new(11);
    let mut out = Vec::new();
    w.push_packet(head, 0, &mut out);
    w.flush(false, &mut out);
    w.push_packet(&OpusTags::default().to_bytes(), 0, &mut out);
    w.flush(false, &mut out);
    for (i, (packets, granule)) in pages.iter().enumerate() {
        for p in *packets {
            w.push_packet(p, *granule, &mut out);
        }
        w.flush(eos && i + 1 == pages.len(), &mut out);
    }
    out
}

const P20: &[u8] = &[31 << 3, 1, 2, 3];

#[test]
fn header_and_granule_errors_are_clear() {
    let head = OpusHead::for_recording(1).to_bytes();
    let ok = raw_file(&head, &[(&[P20, P20], 1920), (&[P20], 2880)], true);
    assert!(OggOpusFile::parse(&ok).is_ok());

    let wrong_granule = raw_file(&head, &[(&[P20, P20], 1920), (&[P20], 3000)], false);
    let err = OggOpusFile::parse(&wrong_granule).expect_err("granule");
    assert!(
        matches!(
            err,
            OpusError::Granule {
                expected: 2880,
                found: 3000,
                ..
            }
        ),
        "{err}"
    );

    // End trimming of up to the last page's samples is allowed; more is not.
    let trimmed = raw_file(&head, &[(&[P20, P20], 1920), (&[P20], 2000)], true);
    assert_eq!(OggOpusFile::parse(&trimmed).map(|f| f.end_trim), Ok(880));
    let over = raw_file(&head, &[(&[P20, P20], 1920), (&[P20], 1000)], true);
    assert!(matches!(
        OggOpusFile::parse(&over),
        Err(OpusError::Granule { .. })
    ));

    let mut bad_head = head.clone();
    bad_head[9] = 3; // three channels with family 0
    let err = OggOpusFile::parse(&raw_file(&bad_head, &[], true)).expect_err("channels");
    assert!(err.to_string().contains("1 or 2 channels"), "{err}");
    let mut vorbis = head.clone();
    vorbis[..8].copy_from_slice(b"\x01vorbis\0");
    let err = OggOpusFile::parse(&raw_file(&vorbis, &[], true)).expect_err("vorbis");
    assert!(err.to_string().contains("not an Ogg Opus file"), "{err}");

    let bad_packet = raw_file(&head, &[(&[P20, &[3, 0]], 1920)], true);
    let err = OggOpusFile::parse(&bad_packet).expect_err("toc");
    assert_eq!(
        err,
        OpusError::Packet {
            index: 1,
            reason: PacketError::ZeroFrames
        }
    );
}

#[test]
fn a_missing_page_is_a_sequence_error() {
    let bytes = write_file(&synthetic_packets(200), 3);
    // Find the page starts and cut one out of the middle.
    let starts: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w == b"OggS")
        .map(|(i, _)| i)
        .collect();
    assert!(starts.len() >= 4, "{} pages", starts.len());
    let mut cut = bytes[..starts[2]].to_vec();
    cut.extend_from_slice(&bytes[starts[3]..]);
    let err = OggOpusFile::parse(&cut).expect_err("gap");
    assert!(
        matches!(
            err,
            OpusError::Sequence {
                expected: 2,
                found: 3,
                ..
            }
        ),
        "{err}"
    );
}

// --- fuzz-style: nothing panics, whatever the input ---

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = OggOpusFile::parse(&bytes);
        let mut with_magic = b"OggS".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = OggOpusFile::parse(&with_magic);
        let _ = packet_samples(&bytes);
        let _ = OpusTags::parse(&bytes);
        let _ = OpusHead::parse(&bytes);
    }

    #[test]
    fn damaged_valid_files_never_panic(
        n in 0usize..60,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = write_file(&synthetic_packets(n), 8);
        for (at, v) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *v;
        }
        let _ = OggOpusFile::parse(&bytes);
        let _ = OggOpusFile::parse(&bytes[..cut.index(bytes.len() + 1)]);
    }

    #[test]
    fn any_valid_packets_round_trip(
        packets in proptest::collection::vec(
            (0u8..32, 0u8..3, proptest::collection::vec(any::<u8>(), 0..700)), 0..80)
    ) {
        let packets: Vec<Vec<u8>> = packets.into_iter().map(|(config, code, body)| {
            let mut p = vec![(config << 3) | code];
            p.extend(body);
            p
        }).collect();
        let bytes = write_file(&packets, 99);
        let file = OggOpusFile::parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let read: Vec<Vec<u8>> = file.packets.into_iter().map(|p| p.data).collect();
        prop_assert_eq!(read, packets);
    }
}
