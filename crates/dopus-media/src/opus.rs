//! Opus packets in Ogg (RFC 7845) without decoding: read a file into packets with their
//! durations, and write received packets into a valid file.

use crate::ogg::{NO_GRANULE, PageError, PageReader, PageWriter};
use thiserror::Error;

/// Opus always counts time in 48 kHz samples, whatever the input rate was.
pub const SAMPLE_RATE: u32 = 48_000;
/// The longest Opus packet: 120 ms (RFC 6716 §3.2.5).
pub const MAX_PACKET_SAMPLES: u32 = 5_760;

/// What is wrong with an Ogg Opus file or an Opus packet.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OpusError {
    #[error(transparent)]
    Page(#[from] PageError),
    #[error("the file is empty")]
    Empty,
    #[error("the first page (byte {offset}) is not a beginning-of-stream page")]
    NoBos { offset: usize },
    #[error(
        "page at byte {offset} belongs to stream {serial:#x}; only one logical stream (not multiplexed or chained Ogg) is supported"
    )]
    OtherStream { offset: usize, serial: u32 },
    #[error(
        "page at byte {offset} has sequence number {found}, expected {expected} (a page is missing)"
    )]
    Sequence {
        offset: usize,
        expected: u32,
        found: u32,
    },
    #[error("page at byte {offset}: continuation flag does not match the previous page")]
    Continuation { offset: usize },
    #[error("OpusHead: {0}")]
    Head(String),
    #[error("OpusTags: {0}")]
    Tags(String),
    #[error("page at byte {offset}: {what} must end its page")]
    HeaderPage { offset: usize, what: &'static str },
    #[error("packet {index}: {reason}")]
    Packet { index: usize, reason: PacketError },
    #[error("page at byte {offset} has granule position {found}, expected {expected}")]
    Granule {
        offset: usize,
        expected: u64,
        found: u64,
    },
    #[error("page at byte {offset} comes after the end-of-stream page")]
    AfterEos { offset: usize },
    #[error("the file ends inside a packet (last page at byte {offset} leaves it open)")]
    OpenPacketAtEnd { offset: usize },
    #[error("the file has no OpusTags header")]
    NoTags,
}

/// What is wrong with one Opus packet's framing (RFC 6716 §3).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    #[error("an Opus packet is at least one byte (the TOC)")]
    Empty,
    #[error("code 3 packet without its frame-count byte")]
    NoFrameCount,
    #[error("code 3 packet with 0 frames")]
    ZeroFrames,
    #[error("packet lasts {0} samples, more than 120 ms")]
    TooLong(u32),
}

/// Duration of an Opus packet in 48 kHz samples, from its TOC byte (and frame count for code 3).
pub fn packet_samples(packet: &[u8]) -> Result<u32, PacketError> {
    let toc = *packet.first().ok_or(PacketError::Empty)?;
    let config = toc >> 3;
    let frame = match config {
        // SILK-only: 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        // Hybrid: 10, 20 ms.
        12..=15 => [480, 960][usize::from(config % 2)],
        // CELT-only: 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => {
            let count = packet.get(1).ok_or(PacketError::NoFrameCount)? & 0x3F;
            if count == 0 {
                return Err(PacketError::ZeroFrames);
            }
            u32::from(count)
        }
    };
    let samples = frame * frames;
    if samples > MAX_PACKET_SAMPLES {
        return Err(PacketError::TooLong(samples));
    }
    Ok(samples)
}

/// The identification header (RFC 7845 §5.1). Only channel mapping family 0 (mono or stereo),
/// which is what WebRTC carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusHead {
    pub channels: u8,
    /// Samples (at 48 kHz) to drop from the decoder output at the start.
    pub pre_skip: u16,
    /// The original input rate, informational only.
    pub input_sample_rate: u32,
    /// Q7.8 dB.
    pub output_gain: i16,
}

impl OpusHead {
    /// The header for a recording of a live stream joined at some point: RFC 7845 §4.2
    /// recommends a pre-skip of at least 3840 samples (80 ms) so the decoder converges.
    pub fn for_recording(channels: u8) -> Self {
        OpusHead {
            channels,
            pre_skip: 3840,
            input_sample_rate: SAMPLE_RATE,
            output_gain: 0,
        }
    }

    pub fn parse(packet: &[u8]) -> Result<Self, OpusError> {
        let bad = |s: &str| Err(OpusError::Head(s.to_string()));
        if packet.len() < 8 || &packet[..8] != b"OpusHead" {
            return bad("missing \"OpusHead\" magic (not an Ogg Opus file)");
        }
        if packet.len() < 19 {
            return bad("header shorter than 19 bytes");
        }
        let version = packet[8];
        if version >> 4 != 0 {
            return Err(OpusError::Head(format!(
                "unsupported major version in {version:#04x}"
            )));
        }
        let channels = packet[9];
        let pre_skip = u16::from_le_bytes([packet[10], packet[11]]);
        let input_sample_rate =
            u32::from_le_bytes([packet[12], packet[13], packet[14], packet[15]]);
        let output_gain = i16::from_le_bytes([packet[16], packet[17]]);
        let family = packet[18];
        if family != 0 {
            return Err(OpusError::Head(format!(
                "channel mapping family {family} is not supported (only 0: mono or stereo)"
            )));
        }
        if !(1..=2).contains(&channels) {
            return Err(OpusError::Head(format!(
                "family 0 allows 1 or 2 channels, not {channels}"
            )));
        }
        Ok(OpusHead {
            channels,
            pre_skip,
            input_sample_rate,
            output_gain,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(19);
        out.extend_from_slice(b"OpusHead");
        out.push(1);
        out.push(self.channels);
        out.extend_from_slice(&self.pre_skip.to_le_bytes());
        out.extend_from_slice(&self.input_sample_rate.to_le_bytes());
        out.extend_from_slice(&self.output_gain.to_le_bytes());
        out.push(0);
        out
    }
}

/// The comment header (RFC 7845 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpusTags {
    pub vendor: String,
    /// `NAME=value` strings, as stored.
    pub comments: Vec<String>,
}

impl OpusTags {
    pub fn parse(packet: &[u8]) -> Result<Self, OpusError> {
        let bad = |s: &str| OpusError::Tags(s.to_string());
        if packet.len() < 8 || &packet[..8] != b"OpusTags" {
            return Err(bad("missing \"OpusTags\" magic"));
        }
        let mut rest = &packet[8..];
        let vendor_len =
            take_u32(&mut rest).ok_or_else(|| bad("vendor length cut short"))? as usize;
        let vendor = rest
            .get(..vendor_len)
            .ok_or_else(|| bad("vendor string longer than the header"))?;
        let vendor = String::from_utf8_lossy(vendor).into_owned();
        rest = &rest[vendor_len..];
        let count = take_u32(&mut rest).ok_or_else(|| bad("comment count cut short"))?;
        // Each comment needs at least 4 bytes, so a count larger than that is a lie.
        if count as usize > rest.len() / 4 {
            return Err(bad(&format!(
                "{count} comments cannot fit in {} bytes",
                rest.len()
            )));
        }
        let mut comments = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = take_u32(&mut rest).ok_or_else(|| bad("comment length cut short"))? as usize;
            let c = rest
                .get(..len)
                .ok_or_else(|| bad("comment longer than the header"))?;
            comments.push(String::from_utf8_lossy(c).into_owned());
            rest = &rest[len..];
        }
        Ok(OpusTags { vendor, comments })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"OpusTags");
        out.extend_from_slice(&(self.vendor.len() as u32).to_le_bytes());
        out.extend_from_slice(self.vendor.as_bytes());
        out.extend_from_slice(&(self.comments.len() as u32).to_le_bytes());
        for c in &self.comments {
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(c.as_bytes());
        }
        out
    }
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let b = rest.get(..4)?;
    let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    *rest = &rest[4..];
    Some(v)
}

/// One audio packet and how long it plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    pub data: Vec<u8>,
    /// Duration in 48 kHz samples (from the TOC).
    pub samples: u32,
}

/// A whole Ogg Opus file, read and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OggOpusFile {
    pub serial: u32,
    pub head: OpusHead,
    pub tags: OpusTags,
    pub packets: Vec<OpusPacket>,
    /// Granule position of the first audio sample (non-zero for a stream that starts late).
    pub start_granule: u64,
    /// Samples the final page trims off the end (RFC 7845 §4.4).
    pub end_trim: u64,
    /// The file ended with an end-of-stream page (false: truncated, e.g. a recording that crashed).
    pub complete: bool,
}

impl OggOpusFile {
    /// Total duration of the packets in 48 kHz samples (before pre-skip and end trimming).
    pub fn total_samples(&self) -> u64 {
        self.packets.iter().map(|p| u64::from(p.samples)).sum()
    }

    /// Reads and validates a file: one logical stream; OpusHead alone on the first (BOS) page;
    /// OpusTags ending its page; page CRCs and sequence numbers; every audio packet's TOC; and
    /// every page's granule position against the packet durations (RFC 7845 §4).
    pub fn parse(data: &[u8]) -> Result<Self, OpusError> {
        let mut pages = PageReader::new(data);
        let first = pages.next_page().ok_or(OpusError::Empty)??;
        if !first.is_bos() {
            return Err(OpusError::NoBos {
                offset: first.offset,
            });
        }
        let serial = first.serial;
        let pieces = first.pieces();
        let head = match pieces.as_slice() {
            [(p, true)] => OpusHead::parse(p)?,
            [(p, _), ..] => {
                OpusHead::parse(p)?;
                return Err(OpusError::HeaderPage {
                    offset: first.offset,
                    what: "OpusHead",
                });
            }
            [] => return Err(OpusError::Head("the first page is empty".into())),
        };
        if first.granule != 0 {
            return Err(OpusError::Granule {
                offset: first.offset,
                expected: 0,
                found: first.granule,
            });
        }

        let mut expected_seq = first.sequence.wrapping_add(1);
        let mut tags: Option<OpusTags> = None;
        let mut partial: Vec<u8> = Vec::new();
        let mut open = false;
        let mut packets = Vec::new();
        let mut cum: u64 = 0; // samples of audio packets completed so far
        let mut start_granule: Option<u64> = None;
        let mut end_trim = 0;
        let mut complete = first.is_eos();
        let mut last_offset = first.offset;
        while let Some(page) = pages.next_page() {
            let page = page?;
            last_offset = page.offset;
            if complete {
                return Err(OpusError::AfterEos {
                    offset: page.offset,
                });
            }
            if page.serial != serial || page.is_bos() {
                return Err(OpusError::OtherStream {
                    offset: page.offset,
                    serial: page.serial,
                });
            }
            if page.sequence != expected_seq {
                return Err(OpusError::Sequence {
                    offset: page.offset,
                    expected: expected_seq,
                    found: page.sequence,
                });
            }
            expected_seq = expected_seq.wrapping_add(1);
            if page.is_continued() != open {
                return Err(OpusError::Continuation {
                    offset: page.offset,
                });
            }
            let cum_before_page = cum;
            let mut ended_here = 0usize;
            let pieces = page.pieces();
            let last_piece = pieces.len().saturating_sub(1);
            for (i, (piece, ends)) in pieces.into_iter().enumerate() {
                partial.extend_from_slice(piece);
                open = !ends;
                if !ends {
                    continue;
                }
                let packet = std::mem::take(&mut partial);
                ended_here += 1;
                if tags.is_none() {
                    tags = Some(OpusTags::parse(&packet)?);
                    if i != last_piece {
                        return Err(OpusError::HeaderPage {
                            offset: page.offset,
                            what: "OpusTags",
                        });
                    }
                    if page.granule != 0 {
                        return Err(OpusError::Granule {
                            offset: page.offset,
                            expected: 0,
                            found: page.granule,
                        });
                    }
                    continue;
                }
                let index = packets.len();
                let samples = packet_samples(&packet)
                    .map_err(|reason| OpusError::Packet { index, reason })?;
                cum += u64::from(samples);
                packets.push(OpusPacket {
                    data: packet,
                    samples,
                });
            }
            complete = page.is_eos();
            if tags.is_none() {
                // OpusTags spans pages; no packet may end on them.
                if page.granule != NO_GRANULE && page.granule != 0 {
                    return Err(OpusError::Granule {
                        offset: page.offset,
                        expected: 0,
                        found: page.granule,
                    });
                }
                continue;
            }
            if ended_here == 0 || cum == cum_before_page {
                // No audio packet ends here (a header page or a continued packet's middle).
                if ended_here == 0 && page.granule != NO_GRANULE {
                    return Err(OpusError::Granule {
                        offset: page.offset,
                        expected: NO_GRANULE,
                        found: page.granule,
                    });
                }
                continue;
            }
            let start = *start_granule.get_or_insert_with(|| {
                // The first audio page may start the stream late (RFC 7845 §4.5).
                page.granule.saturating_sub(cum)
            });
            let expected = start.saturating_add(cum);
            if page.is_eos() && page.granule <= expected {
                // End trimming: at most the samples of this last page.
                let trim = expected - page.granule;
                if trim > cum - cum_before_page {
                    return Err(OpusError::Granule {
                        offset: page.offset,
                        expected,
                        found: page.granule,
                    });
                }
                end_trim = trim;
            } else if page.granule != expected {
                return Err(OpusError::Granule {
                    offset: page.offset,
                    expected,
                    found: page.granule,
                });
            }
        }
        if open {
            return Err(OpusError::OpenPacketAtEnd {
                offset: last_offset,
            });
        }
        let tags = tags.ok_or(OpusError::NoTags)?;
        Ok(OggOpusFile {
            serial,
            head,
            tags,
            packets,
            start_granule: start_granule.unwrap_or(0),
            end_trim,
            complete,
        })
    }
}

/// Writes received Opus packets into an Ogg Opus file, sans-IO: each call returns the bytes to
/// append to the file. Pages are flushed once they hold about a second of audio, so a crash
/// loses at most that much; the last packet is held back until [`OggOpusWriter::finish`] so it
/// can go on the end-of-stream page.
#[derive(Debug)]
pub struct OggOpusWriter {
    pages: PageWriter,
    pending: Option<(Vec<u8>, u32)>,
    granule: u64,
    page_samples: u64,
    packets: u64,
    /// RTP time (48 kHz) at which the next packet is expected, once `push_at` has been used.
    next_rtp: Option<u64>,
    /// TOC byte of the last packet, for the filler packets.
    last_toc: u8,
}

/// What [`OggOpusWriter::push_at`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Written, right after the previous packet.
    InOrder,
    /// Written after filler packets for a gap (loss, or DTX) of `samples`; `unfilled` samples
    /// (less than 2.5 ms, not expressible in Opus frames) were dropped.
    FilledGap {
        samples: u64,
        packets: u32,
        unfilled: u32,
    },
    /// Not written: it starts before the end of what is already written (a duplicate or a late
    /// packet; str0m's frame mode delivers in order, so this means the sender went back).
    Late,
    /// Written without filling: the gap was longer than [`OggOpusWriter::MAX_GAP_FILL`], so it is
    /// taken as the sender restarting its timestamps.
    Resync { gap: u64 },
}

impl OggOpusWriter {
    /// Samples of audio per page before it is flushed.
    pub const PAGE_SAMPLES: u64 = SAMPLE_RATE as u64;
    /// The longest gap `push_at` fills with silence: 60 s.
    pub const MAX_GAP_FILL: u64 = 60 * SAMPLE_RATE as u64;

    /// Starts a file; returns the writer and the header bytes (OpusHead and OpusTags pages).
    pub fn new(serial: u32, head: OpusHead, tags: &OpusTags) -> (Self, Vec<u8>) {
        let mut pages = PageWriter::new(serial);
        let mut out = Vec::new();
        pages.push_packet(&head.to_bytes(), 0, &mut out);
        pages.flush(false, &mut out);
        pages.push_packet(&tags.to_bytes(), 0, &mut out);
        pages.flush(false, &mut out);
        let w = OggOpusWriter {
            pages,
            pending: None,
            granule: 0,
            page_samples: 0,
            packets: 0,
            next_rtp: None,
            last_toc: 31 << 3,
        };
        (w, out)
    }

    /// Adds one packet; a malformed packet (bad TOC) is refused and leaves the file unchanged.
    pub fn push(&mut self, packet: &[u8]) -> Result<Vec<u8>, PacketError> {
        let samples = packet_samples(packet)?;
        let mut out = Vec::new();
        self.push_raw(packet, samples, &mut out);
        if let Some(&toc) = packet.first() {
            self.last_toc = toc;
        }
        Ok(out)
    }

    /// Adds a packet received at RTP time `rtp` (48 kHz, extended to 64 bits, as str0m's
    /// `MediaData::time` is). A gap since the previous packet is filled with TOC-only packets
    /// (zero-length frames, which decoders play as packet loss concealment, RFC 6716 §3.2.1), so
    /// the recording keeps its timing through loss and DTX.
    pub fn push_at(
        &mut self,
        rtp: u64,
        packet: &[u8],
    ) -> Result<(Vec<u8>, PushOutcome), PacketError> {
        let samples = packet_samples(packet)?;
        let mut out = Vec::new();
        let mut outcome = PushOutcome::InOrder;
        if let Some(expected) = self.next_rtp {
            if rtp < expected {
                return Ok((out, PushOutcome::Late));
            }
            let gap = rtp - expected;
            if gap > Self::MAX_GAP_FILL {
                outcome = PushOutcome::Resync { gap };
            } else if gap > 0 {
                let (packets, unfilled) = self.fill(gap, &mut out);
                outcome = PushOutcome::FilledGap {
                    samples: gap,
                    packets,
                    unfilled,
                };
            }
        }
        self.next_rtp = Some(rtp.saturating_add(u64::from(samples)));
        out.extend(self.push(packet)?);
        Ok((out, outcome))
    }

    /// Writes filler packets for `gap` samples: frames of the last packet's configuration, then
    /// CELT frames of 10, 5 and 2.5 ms for the rest. Returns (packets, samples left unfilled).
    fn fill(&mut self, gap: u64, out: &mut Vec<u8>) -> (u32, u32) {
        let mut left = gap;
        let mut packets = 0;
        let same = self.last_toc & !0x03;
        let fillers = [same, 31 << 3, 30 << 3, 29 << 3, 28 << 3];
        for toc in fillers {
            let frame = u64::from(packet_samples(&[toc]).unwrap_or(u32::MAX));
            while frame > 0 && left >= frame {
                self.push_raw(&[toc], frame as u32, out);
                left -= frame;
                packets += 1;
            }
        }
        (packets, left as u32)
    }

    fn push_raw(&mut self, packet: &[u8], samples: u32, out: &mut Vec<u8>) {
        if let Some((prev, prev_samples)) = self.pending.replace((packet.to_vec(), samples)) {
            self.write(&prev, prev_samples, out);
        }
    }

    /// Packets accepted so far.
    pub fn packets(&self) -> u64 {
        self.packets + u64::from(self.pending.is_some())
    }

    fn write(&mut self, packet: &[u8], samples: u32, out: &mut Vec<u8>) {
        self.granule += u64::from(samples);
        self.page_samples += u64::from(samples);
        self.packets += 1;
        self.pages.push_packet(packet, self.granule, out);
        if self.page_samples >= Self::PAGE_SAMPLES {
            self.pages.flush(false, out);
            self.page_samples = 0;
        }
    }

    /// Ends the file: the last packet and the end-of-stream page.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some((prev, samples)) = self.pending.take() {
            self.granule += u64::from(samples);
            self.packets += 1;
            self.pages.push_packet(&prev, self.granule, &mut out);
        }
        self.pages.flush(true, &mut out);
        out
    }
}

/// Plays a file's packets in real time, sans-IO: ask when the next packet is due (as an offset
/// from the start of playback) and take it when that time has come. The RTP timestamp of each
/// packet is the running sample count (Opus's RTP clock is 48 kHz).
#[derive(Debug, Clone)]
pub struct OpusPlayer {
    packets: Vec<OpusPacket>,
    next: usize,
    /// Samples before the next packet.
    elapsed: u64,
}

impl OpusPlayer {
    pub fn new(file: OggOpusFile) -> Self {
        OpusPlayer {
            packets: file.packets,
            next: 0,
            elapsed: 0,
        }
    }

    /// When the next packet is due, from the start of playback; `None` at the end.
    pub fn next_due(&self) -> Option<std::time::Duration> {
        (self.next < self.packets.len()).then(|| {
            std::time::Duration::from_micros(self.elapsed * 1_000_000 / u64::from(SAMPLE_RATE))
        })
    }

    /// The next packet and its RTP time (in 48 kHz samples) if it is due at `since_start`.
    pub fn poll(&mut self, since_start: std::time::Duration) -> Option<(u64, &OpusPacket)> {
        if self.next_due()? > since_start {
            return None;
        }
        let packet = self.packets.get(self.next)?;
        let rtp = self.elapsed;
        self.elapsed += u64::from(packet.samples);
        self.next += 1;
        Some((rtp, packet))
    }

    pub fn is_done(&self) -> bool {
        self.next >= self.packets.len()
    }
}
