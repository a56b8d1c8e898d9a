//! What travels in one message of the direct data channel.
//!
//! Two forms, told apart by the first byte:
//!
//! - **single** (channel framing 1): the message is one [`PeerEnvelope`] as JSON, so it starts
//!   with `{`. Every node sends and accepts it.
//! - **frame** (channel framing 2): byte [`FRAME_V2`], then any number of envelopes, each as a
//!   4-byte big-endian length followed by that many bytes of envelope JSON. A frame with no
//!   envelope is the *hello*: each side sends it when the channel opens, and sends frames only
//!   after the other side's hello arrived. A node that predates frames drops the hello as a
//!   malformed envelope and keeps receiving singles.
//! - **hello 3**: byte [`FRAME_V3`] alone. It says what hello 2 says, and also that this side
//!   reads bulk payloads (`Content::Bulk`: several messages under one Olm encryption,
//!   docs/peer-protocol.md). Frames themselves always start with [`FRAME_V2`]. A node that
//!   reads frames but not bulk payloads drops our hello 3 as an unknown form and keeps sending
//!   us singles; its hello 2 still gets it frames from us, never a bulk payload.
//!
//! Why frames: a short text's envelope is about 1.2 KB, just over what one SCTP chunk carries in
//! one datagram (about 1.07 KB), so one envelope per channel message costs two datagrams, two DTLS
//! records and a pass of SCTP over its in-flight queue for each. A frame packs a window of
//! envelopes back to back into full datagrams and is one channel message for the receiver.
//! The envelopes inside are byte for byte what a single would carry: the layer below (Olm,
//! dedupe, receipts) does not know how they travelled.
//!
//! Decoding is for untrusted input: lengths are checked against the message and against
//! [`MAX_ENVELOPE_BYTES`], trailing bytes are refused, and errors never echo the input.
//!
//! [`PeerEnvelope`]: crate::peer::PeerEnvelope

use crate::peer::MAX_ENVELOPE_BYTES;

/// First byte of a frame: channel framing version 2. (A single starts with `{`, 0x7B.)
pub const FRAME_V2: u8 = 0x02;

/// The hello of a node that reads frames and bulk payloads (see the module docs).
pub const FRAME_V3: u8 = 0x03;

/// Bytes of framing per envelope in a frame.
pub const LENGTH_BYTES: usize = 4;

/// Why a channel message was refused. Never contains any part of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The message is empty.
    #[error("empty channel message")]
    Empty,
    /// Neither a single envelope nor a frame of a version this build reads.
    #[error("unknown channel message form (first byte {0:#04x})")]
    UnknownForm(u8),
    /// A length runs past the end of the message, or the message ends inside a length.
    #[error("frame truncated at byte {at}")]
    Truncated {
        /// Offset of the broken entry.
        at: usize,
    },
    /// An entry is empty or larger than an envelope may be.
    #[error("frame entry at byte {at} has an invalid length {len}")]
    BadLength {
        /// Offset of the entry.
        at: usize,
        /// The length it declared.
        len: usize,
    },
}

/// One decoded channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage<'a> {
    /// One envelope, not framed (framing 1).
    Single(&'a [u8]),
    /// The other side reads frames, and bulk payloads if `bulk` (hello 3).
    Hello {
        /// It reads `Content::Bulk` payloads.
        bulk: bool,
    },
    /// The envelopes of a frame, in order (at least one).
    Envelopes(Vec<&'a [u8]>),
}

/// Our hello: we read frames and bulk payloads.
pub fn hello() -> Vec<u8> {
    vec![FRAME_V3]
}

/// The start of every frame we send (a hello 2 when it holds no envelope).
fn frame_header() -> Vec<u8> {
    vec![FRAME_V2]
}

/// Decodes one channel message.
pub fn decode(message: &[u8]) -> Result<ChannelMessage<'_>, FrameError> {
    let (&first, mut rest) = message.split_first().ok_or(FrameError::Empty)?;
    match first {
        b'{' => return Ok(ChannelMessage::Single(message)),
        FRAME_V2 => {}
        FRAME_V3 if rest.is_empty() => return Ok(ChannelMessage::Hello { bulk: true }),
        other => return Err(FrameError::UnknownForm(other)),
    }
    let mut envelopes = Vec::new();
    let mut at = 1;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<LENGTH_BYTES>()
            .ok_or(FrameError::Truncated { at })?;
        let len = u32::from_be_bytes(*len) as usize;
        if len == 0 || len > MAX_ENVELOPE_BYTES {
            return Err(FrameError::BadLength { at, len });
        }
        if tail.len() < len {
            return Err(FrameError::Truncated { at });
        }
        let (envelope, tail) = tail.split_at(len);
        envelopes.push(envelope);
        rest = tail;
        at += LENGTH_BYTES + len;
    }
    if envelopes.is_empty() {
        Ok(ChannelMessage::Hello { bulk: false })
    } else {
        Ok(ChannelMessage::Envelopes(envelopes))
    }
}

/// Channel messages carrying `envelopes` in order, with how many envelopes each one holds.
///
/// With `frames` (the other side said hello), envelopes are packed into frames of at most
/// `max_message` bytes; an envelope too large for a frame of its own goes as a single. Without,
/// every envelope is a single. Empty envelopes are not sent (no envelope is empty).
pub fn pack(envelopes: Vec<Vec<u8>>, frames: bool, max_message: usize) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    if !frames {
        out.extend(
            envelopes
                .into_iter()
                .filter(|e| !e.is_empty())
                .map(|e| (e, 1)),
        );
        return out;
    }
    let mut frame: Option<(Vec<u8>, usize)> = None;
    for envelope in envelopes {
        if envelope.is_empty() {
            continue;
        }
        let need = LENGTH_BYTES + envelope.len();
        if 1 + need > max_message || envelope.len() > MAX_ENVELOPE_BYTES {
            out.extend(frame.take());
            out.push((envelope, 1));
            continue;
        }
        if frame
            .as_ref()
            .is_some_and(|(f, _)| f.len() + need > max_message)
        {
            out.extend(frame.take());
        }
        let (f, n) = frame.get_or_insert_with(|| (frame_header(), 0));
        // The length fits in a u32: it is at most MAX_ENVELOPE_BYTES.
        f.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
        f.extend_from_slice(&envelope);
        *n += 1;
    }
    out.extend(frame);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(n: usize, fill: u8) -> Vec<u8> {
        let mut v = vec![fill; n.max(2)];
        v[0] = b'{';
        v
    }

    fn unpack(messages: &[(Vec<u8>, usize)]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (m, count) in messages {
            match decode(m).unwrap() {
                ChannelMessage::Single(e) => {
                    assert_eq!(*count, 1);
                    out.push(e.to_vec());
                }
                ChannelMessage::Envelopes(es) => {
                    assert_eq!(*count, es.len());
                    out.extend(es.into_iter().map(<[u8]>::to_vec));
                }
                ChannelMessage::Hello { .. } => panic!("pack made a hello"),
            }
        }
        out
    }

    #[test]
    fn hello_single_and_frame_are_told_apart() {
        assert_eq!(decode(&hello()), Ok(ChannelMessage::Hello { bulk: true }));
        assert_eq!(
            decode(&[FRAME_V2]),
            Ok(ChannelMessage::Hello { bulk: false })
        );
        // Hello 3 is one byte; it never heads a frame.
        assert_eq!(
            decode(&[FRAME_V3, 0, 0, 0, 2, b'{', b'}']),
            Err(FrameError::UnknownForm(FRAME_V3))
        );
        assert_eq!(
            decode(b"{\"a\":1}"),
            Ok(ChannelMessage::Single(b"{\"a\":1}"))
        );
        let packed = pack(vec![env(10, 1), env(20, 2)], true, 1000);
        assert_eq!(packed.len(), 1);
        assert_eq!(packed[0].0[0], FRAME_V2);
        assert_eq!(packed[0].0.len(), 1 + 2 * LENGTH_BYTES + 30);
        assert_eq!(
            decode(&packed[0].0),
            Ok(ChannelMessage::Envelopes(vec![
                &env(10, 1)[..],
                &env(20, 2)[..]
            ]))
        );
    }

    #[test]
    fn broken_frames_are_errors() {
        assert_eq!(decode(b""), Err(FrameError::Empty));
        assert_eq!(decode(b"[1]"), Err(FrameError::UnknownForm(b'[')));
        assert_eq!(
            decode(&[FRAME_V2, 0, 0]),
            Err(FrameError::Truncated { at: 1 })
        );
        assert_eq!(
            decode(&[FRAME_V2, 0, 0, 0, 0]),
            Err(FrameError::BadLength { at: 1, len: 0 })
        );
        assert_eq!(
            decode(&[FRAME_V2, 0, 0, 0, 3, b'{', b'}']),
            Err(FrameError::Truncated { at: 1 })
        );
        let huge = (MAX_ENVELOPE_BYTES as u32 + 1).to_be_bytes();
        let mut m = vec![FRAME_V2];
        m.extend_from_slice(&huge);
        assert!(matches!(decode(&m), Err(FrameError::BadLength { .. })));
        // A good entry followed by garbage: the whole message is refused.
        let mut m = pack(vec![env(5, 7)], true, 100).remove(0).0;
        m.push(9);
        assert_eq!(
            decode(&m),
            Err(FrameError::Truncated {
                at: 1 + LENGTH_BYTES + 5
            })
        );
    }

    #[test]
    fn frames_respect_the_message_limit_and_oversized_envelopes_go_single() {
        let envelopes = vec![
            env(400, 1),
            env(400, 2),
            env(400, 3),
            env(2000, 4),
            env(10, 5),
        ];
        let packed = pack(envelopes.clone(), true, 1000);
        assert!(packed.iter().all(|(m, _)| m.len() <= 1000 || m[0] == b'{'));
        // 400 + 400 fit one frame, the third starts a new one, 2000 goes alone, then 10.
        let counts: Vec<usize> = packed.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, vec![2, 1, 1, 1]);
        assert_eq!(packed[2].0, env(2000, 4));
        assert_eq!(unpack(&packed), envelopes);
    }

    #[test]
    fn without_hello_every_envelope_is_a_single() {
        let envelopes = vec![env(30, 1), env(40, 2)];
        let packed = pack(envelopes.clone(), false, 1000);
        assert_eq!(packed, vec![(env(30, 1), 1), (env(40, 2), 1)]);
    }

    proptest! {
        #[test]
        fn pack_then_decode_gives_the_envelopes_back(
            sizes in proptest::collection::vec(1usize..3000, 0..40),
            max in 64usize..8000,
            frames: bool,
        ) {
            let envelopes: Vec<Vec<u8>> =
                sizes.iter().enumerate().map(|(i, &n)| env(n, i as u8)).collect();
            let packed = pack(envelopes.clone(), frames, max);
            for (m, _) in &packed {
                let single = m[0] == b'{';
                prop_assert!(m.len() <= max || single, "a frame is over the limit");
            }
            prop_assert_eq!(unpack(&packed), envelopes);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(ChannelMessage::Envelopes(es)) = decode(&bytes) {
                prop_assert!(es.iter().all(|e| !e.is_empty() && e.len() <= MAX_ENVELOPE_BYTES));
            }
        }
    }
}
