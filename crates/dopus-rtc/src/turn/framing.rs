//! TURN over a byte stream (TCP or TLS): splitting what the relay sends into messages, and
//! padding ChannelData on the way out, as RFC 8656 §12.5 asks.
//!
//! Over a stream, STUN messages (`00xxxxxx`, 20 + length bytes, always a multiple of 4) and
//! ChannelData messages (`01xxxxxx`, 4 + length bytes) follow each other with no framing of
//! their own. RFC 8656 §12.5: over TCP and TLS a ChannelData message MUST be padded to a
//! multiple of 4 bytes, the padding not counted in its length. turn-client-proto 0.7 writes and
//! reads ChannelData unpadded, so this layer sits between the library and the stream:
//!
//! - **Out** ([`pad_out`]): every ChannelData of an unaligned length gets 1 to 3 zero bytes.
//! - **In** ([`Deframer`]): every ChannelData's padding is skipped, whatever its bytes (coturn
//!   pads with whatever its buffer held, not zeros). coturn, browsers' relays and our embedded
//!   relay pad (ours from the start, `dopus-server` `turn/framing.rs`); a relay that does not
//!   is not RFC 8656 (or 5766) conformant and is not supported over TCP/TLS (UDP has no padding).
//!
//! Malformed input (a first byte `10…`/`11…`) is [`FramingError`], which closes the stream;
//! never a panic. The buffer holds at most one message (65 555 bytes with padding) plus what
//! one read brought.

/// The relay's stream is not TURN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FramingError {
    /// A message starts with bits `10` or `11`: neither STUN nor ChannelData.
    #[error("the relay sent a message that is neither STUN nor ChannelData")]
    NotTurn,
}

fn is_channel_data(first: u8) -> bool {
    first >> 6 == 1
}

/// Padding after a ChannelData message of `len` bytes (header included).
fn padding_of(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// `msg` (one whole message from the TURN library) as it goes on the stream: a ChannelData
/// of an unaligned length gets its zero padding; STUN messages are aligned already.
pub(crate) fn pad_out(mut msg: Vec<u8>) -> Vec<u8> {
    if msg.first().is_some_and(|b| is_channel_data(*b)) {
        let pad = padding_of(msg.len());
        msg.resize(msg.len() + pad, 0);
    }
    msg
}

/// Splits the relay's byte stream into whole messages, without padding.
#[derive(Debug, Default)]
pub(crate) struct Deframer {
    buf: Vec<u8>,
}

impl Deframer {
    /// Bytes read from the stream.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole message (without padding), `Ok(None)` while more bytes are needed. A
    /// ChannelData is given out once its padding is there too, so the next message starts at
    /// the front of the buffer.
    pub(crate) fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let Some(head) = self.buf.get(..4) else {
            return Ok(None);
        };
        let body = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let (len, pad) = match head[0] >> 6 {
            0 => (20 + body, 0),
            1 => (4 + body, padding_of(4 + body)),
            _ => return Err(FramingError::NotTurn),
        };
        if self.buf.len() < len + pad {
            return Ok(None);
        }
        let msg: Vec<u8> = self.buf.drain(..len).collect();
        self.buf.drain(..pad);
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn channel_data(channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = channel.to_be_bytes().to_vec();
        v.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// A STUN header (type, length 0, cookie, transaction id) with no attributes.
    fn stun(kind: u16) -> Vec<u8> {
        let mut v = kind.to_be_bytes().to_vec();
        v.extend_from_slice(&[0, 0, 0x21, 0x12, 0xA4, 0x42]);
        v.extend_from_slice(&[7; 12]);
        v
    }

    /// Padded like coturn: with whatever bytes, here a non-zero filler.
    fn padded_with(mut m: Vec<u8>, fill: u8) -> Vec<u8> {
        if is_channel_data(m[0]) {
            let pad = padding_of(m.len());
            m.resize(m.len() + pad, fill);
        }
        m
    }

    /// Feeds `wire` in pieces of `step` bytes and returns every message.
    fn split(wire: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut d = Deframer::default();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            d.push(piece);
            while let Some(m) = d.next_message().expect("a TURN stream") {
                out.push(m);
            }
        }
        assert!(d.buf.is_empty(), "left over: {:?}", d.buf);
        out
    }

    /// What a relay sends: responses, Data indications, ChannelData of every length mod 4.
    fn relay_messages() -> Vec<Vec<u8>> {
        vec![
            stun(0x0103), // Allocate success
            channel_data(0x4000, b"abc"),
            stun(0x0017), // Data indication: first byte zero
            channel_data(0x4001, b"hello"),
            channel_data(0x4000, b"x"),
            stun(0x0104),
            channel_data(0x4000, b"four"),
            channel_data(0x4000, b"ab"),
            stun(0x0017),
            channel_data(0x4000, &[0; 201]),
            channel_data(0x4000, b""),
        ]
    }

    #[test]
    fn pad_out_pads_channel_data_only() {
        for n in 0..9 {
            let m = channel_data(0x4000, &vec![9; n]);
            let p = pad_out(m.clone());
            assert_eq!(p.len() % 4, 0, "{n}");
            assert_eq!(&p[..m.len()], &m[..]);
            assert!(p[m.len()..].iter().all(|b| *b == 0));
            assert!(p.len() - m.len() < 4);
        }
        assert_eq!(pad_out(stun(0x0003)), stun(0x0003));
        assert_eq!(pad_out(Vec::new()), Vec::<u8>::new());
    }

    #[test]
    fn a_padded_stream_is_split_at_any_read_size() {
        let msgs = relay_messages();
        for fill in [0, 0x17, 0xff] {
            let wire: Vec<u8> = msgs
                .iter()
                .cloned()
                .flat_map(|m| padded_with(m, fill))
                .collect();
            for step in [1, 2, 3, 5, 7, 64, wire.len()] {
                assert_eq!(split(&wire, step), msgs, "step {step} fill {fill}");
            }
        }
    }

    #[test]
    fn what_pad_out_writes_is_read_back() {
        let msgs = relay_messages();
        let wire: Vec<u8> = msgs.iter().cloned().flat_map(pad_out).collect();
        assert_eq!(split(&wire, 3), msgs);
    }

    #[test]
    fn padding_split_across_reads_is_waited_for_and_stripped() {
        let mut d = Deframer::default();
        d.push(&channel_data(0x4000, b"a"));
        assert_eq!(d.next_message(), Ok(None));
        // coturn's padding is not zeros: 0x00 0x17 would look like a Data indication.
        d.push(&[0x00]);
        assert_eq!(d.next_message(), Ok(None));
        d.push(&[0x17]);
        assert_eq!(d.next_message(), Ok(None));
        d.push(&[0x99]);
        assert_eq!(d.next_message(), Ok(Some(channel_data(0x4000, b"a"))));
        d.push(&stun(0x0017)[..5]);
        assert_eq!(d.next_message(), Ok(None));
        d.push(&stun(0x0017)[5..]);
        assert_eq!(d.next_message(), Ok(Some(stun(0x0017))));
        assert!(d.buf.is_empty());
    }

    #[test]
    fn malformed_streams_are_clear_errors() {
        for wire in [vec![0xff, 0, 0, 0], vec![0x80, 1, 2, 3]] {
            let mut d = Deframer::default();
            d.push(&wire);
            let e = d.next_message().unwrap_err();
            assert_eq!(e, FramingError::NotTurn);
            assert!(e.to_string().contains("neither STUN nor ChannelData"));
        }
        // A message whose bytes are not all there is waited for, not an error or a panic.
        let mut d = Deframer::default();
        d.push(&[0x40, 0x00]);
        assert_eq!(d.next_message(), Ok(None));
    }

    #[test]
    fn a_maximal_length_is_waited_for_not_trusted() {
        let mut d = Deframer::default();
        d.push(&[0x40, 0x00, 0xff, 0xff, 1, 2, 3]);
        assert_eq!(d.next_message(), Ok(None));
        d.push(&vec![0; 65_535 - 3]);
        assert_eq!(d.next_message(), Ok(None)); // one byte of padding still due
        d.push(&[0]);
        assert_eq!(
            d.next_message().map(|m| m.map(|m| m.len())),
            Ok(Some(65_539))
        );
    }

    proptest! {
        #[test]
        fn any_bytes_in_any_pieces_never_panic(
            wire in proptest::collection::vec(any::<u8>(), 0..600),
            step in 1usize..40,
        ) {
            let mut d = Deframer::default();
            'feed: for piece in wire.chunks(step) {
                d.push(piece);
                for _ in 0..1000 {
                    match d.next_message() {
                        Ok(Some(m)) => prop_assert!(m.len() >= 4),
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
        }

        #[test]
        fn relay_streams_round_trip(
            payloads in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)), 1..30),
            fill in any::<u8>(),
            step in 1usize..50,
        ) {
            let msgs: Vec<Vec<u8>> = payloads
                .iter()
                .map(|(is_stun, p)| if *is_stun { stun(0x0017) } else { channel_data(0x4000, p) })
                .collect();
            let wire: Vec<u8> = msgs.iter().cloned().flat_map(|m| padded_with(m, fill)).collect();
            prop_assert_eq!(split(&wire, step), msgs);
        }
    }
}
