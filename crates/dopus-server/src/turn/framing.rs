//! Splitting a TURN-over-TCP (or TLS) byte stream into messages, with or without the padding of
//! ChannelData that RFC 8656 §12.5 asks for.
//!
//! Over a stream, STUN messages (`00xxxxxx`, 20 + length bytes, always a multiple of 4) and
//! ChannelData messages (`01xxxxxx`, 4 + length bytes) follow each other with no framing of
//! their own. RFC 8656 §12.5 says ChannelData over TCP is padded to a multiple of 4 bytes and the
//! padding is not counted in its length. coturn, browsers and our own client (`dopus-rtc`
//! `turn/framing.rs`) pad; turn-client-proto 0.7 alone neither pads nor expects padding, and
//! turn-server-proto 0.7 reads unpadded messages.
//!
//! So each connection learns which its client speaks, from the first ChannelData whose length
//! is not a multiple of 4: that message is passed on at once (the padding, if any, is not
//! waited for), and what follows it decides. A STUN message carries its magic cookie at bytes
//! 4..8 and a ChannelData starts with `01`; padding is 1 to 3 zero bytes. So:
//!
//! - the cookie at 4..8 right after the message, or a first byte that is not zero: no padding;
//! - the right number of zero bytes followed by a ChannelData start or a STUN header with its
//!   cookie, or followed by nothing yet (a padding client writes message and padding at once,
//!   so they arrive in the same read): padding.
//!
//! Once learnt, the choice holds for the connection. On the way out ([`Framing::frame_out`])
//! ChannelData is padded as the RFC says from the start, and only a client shown to be
//! unpadded gets it unpadded: a client may well receive an unaligned ChannelData before it
//! sends one (the ICE answerer receives the peer's DTLS ClientHello first), and a conformant
//! client reading it unpadded would lose the stream's framing.

/// The STUN magic cookie (RFC 8489 §5).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// The longest message a stream may carry (a ChannelData or STUN message with a 16-bit length,
/// its header and padding).
const MAX_MESSAGE: usize = 65_535 + 20;

/// Whether a connection's client pads ChannelData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Padding {
    /// Not known yet: no ChannelData of an unaligned length has been seen.
    Unknown,
    /// The last message was a ChannelData that needs `n` bytes of padding if the client pads.
    Pending(usize),
    /// The client pads (RFC 8656 §12.5).
    Padded,
    /// The client does not pad (turn-client-proto 0.7).
    Unpadded,
}

/// The stream is not TURN (or a message is larger than any TURN message can be): close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Broken;

/// Per-connection framing state.
#[derive(Debug)]
pub(crate) struct Framing {
    padding: Padding,
}

impl Default for Framing {
    fn default() -> Self {
        Self {
            padding: Padding::Unknown,
        }
    }
}

/// The total length of the message at the start of `buf` without padding, when its header is
/// there.
fn message_len(buf: &[u8]) -> Option<Result<usize, Broken>> {
    let head = buf.get(..4)?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    Some(match head[0] >> 6 {
        0 => Ok(20 + len),
        1 => Ok(4 + len),
        _ => Err(Broken),
    })
}

fn is_channel_data(first: u8) -> bool {
    first >> 6 == 1
}

impl Framing {
    /// What is known about the client's padding.
    #[cfg(test)]
    pub(crate) fn padding(&self) -> Padding {
        self.padding
    }

    /// Takes the next whole message off the front of `buf` (without its padding), `Ok(None)`
    /// while more bytes are needed.
    pub(crate) fn next_message(&mut self, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, Broken> {
        match self.padding {
            Padding::Pending(n) => match decide(buf, n) {
                None => return Ok(None),
                Some(Err(Broken)) => return Err(Broken),
                Some(Ok(padded)) => {
                    if padded {
                        buf.drain(..n);
                        self.padding = Padding::Padded;
                    } else {
                        self.padding = Padding::Unpadded;
                    }
                }
            },
            Padding::Unknown | Padding::Padded | Padding::Unpadded => {}
        }
        let Some(len) = message_len(buf) else {
            return Ok(None);
        };
        let len = len?;
        if len > MAX_MESSAGE {
            return Err(Broken);
        }
        let pad = if is_channel_data(buf[0]) {
            (4 - len % 4) % 4
        } else {
            0
        };
        match self.padding {
            Padding::Padded => {
                if buf.len() < len + pad {
                    return Ok(None);
                }
                let msg: Vec<u8> = buf.drain(..len).collect();
                buf.drain(..pad);
                Ok(Some(msg))
            }
            Padding::Unknown | Padding::Unpadded | Padding::Pending(_) => {
                if buf.len() < len {
                    return Ok(None);
                }
                let msg: Vec<u8> = buf.drain(..len).collect();
                if self.padding == Padding::Unknown && pad > 0 {
                    self.padding = Padding::Pending(pad);
                }
                Ok(Some(msg))
            }
        }
    }

    /// `data` (one message from the TURN library) as it goes on the wire to this client: a
    /// ChannelData of an unaligned length gets its padding unless the client is known not to
    /// pad.
    pub(crate) fn frame_out(&self, mut data: Vec<u8>) -> Vec<u8> {
        if self.padding != Padding::Unpadded && data.first().is_some_and(|b| is_channel_data(*b)) {
            let pad = (4 - data.len() % 4) % 4;
            data.resize(data.len() + pad, 0);
        }
        data
    }
}

/// After a ChannelData that a padding client would follow with `n` zero bytes: whether the
/// client pads, from the bytes now at the front of `buf` (`None` while too few are there).
fn decide(buf: &[u8], n: usize) -> Option<Result<bool, Broken>> {
    let first = *buf.first()?;
    if first != 0 {
        // Padding is zeros: this is the next message itself (a ChannelData, or a STUN message
        // whose type's first byte is not zero).
        return Some(Ok(false));
    }
    // Zero: a STUN message (with its cookie at 4..8) or padding. A padding client writes the
    // padding with its message, so exactly `n` zero bytes and nothing after them is padding.
    // An unpadded client's STUN message cut by TCP right after its first byte looks the same
    // when `n` is 1 (for 2 or 3 its second byte, the low byte of a TURN method, is not zero):
    // that rare cut, only at the first unaligned message, closes the stream and the client
    // allocates again. Otherwise wait for 8 bytes to tell.
    if buf.len() < 8 {
        return (buf.len() == n && buf.iter().all(|b| *b == 0)).then_some(Ok(true));
    }
    if buf[4..8] == MAGIC_COOKIE {
        return Some(Ok(false));
    }
    if buf.iter().take(n).any(|b| *b != 0) {
        return Some(Err(Broken));
    }
    let next = buf.get(n..)?;
    let first_next = *next.first()?;
    if is_channel_data(first_next) {
        return Some(Ok(true));
    }
    if next.len() < 8 {
        return None;
    }
    if next[4..8] == MAGIC_COOKIE {
        Some(Ok(true))
    } else {
        Some(Err(Broken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel_data(channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = channel.to_be_bytes().to_vec();
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn padded(mut m: Vec<u8>) -> Vec<u8> {
        let pad = (4 - m.len() % 4) % 4;
        m.resize(m.len() + pad, 0);
        m
    }

    /// A STUN header (type, length 0, cookie, transaction id) with no attributes.
    fn stun(kind: u16) -> Vec<u8> {
        let mut v = kind.to_be_bytes().to_vec();
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&MAGIC_COOKIE);
        v.extend_from_slice(&[7; 12]);
        v
    }

    /// Feeds `wire` one byte at a time (the worst split) and returns every message.
    fn split(wire: &[u8]) -> (Vec<Vec<u8>>, Framing) {
        let mut f = Framing::default();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for b in wire {
            buf.push(*b);
            while let Some(m) = f.next_message(&mut buf).expect("a TURN stream") {
                out.push(m);
            }
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        (out, f)
    }

    #[test]
    fn an_unpadded_stream_is_split_and_learnt_as_unpadded() {
        let msgs = [
            stun(0x0003),
            channel_data(0x4000, b"abc"),
            channel_data(0x4001, b"hello"),
            stun(0x0004), // Refresh: first byte zero, like padding
            channel_data(0x4000, b"x"),
        ];
        let (out, f) = split(&msgs.concat());
        assert_eq!(out, msgs);
        assert_eq!(f.padding(), Padding::Unpadded);
        assert_eq!(f.frame_out(channel_data(0x4000, b"abc")).len(), 7);
    }

    #[test]
    fn a_stun_message_with_a_zero_first_byte_after_unaligned_channel_data_is_not_padding() {
        // Two or three bytes of padding would be due: even byte by byte, the STUN message's
        // second byte (its method) tells it from padding.
        for payload in [&b"ab"[..], b"a"] {
            let msgs = [channel_data(0x4000, payload), stun(0x0004)];
            let (out, f) = split(&msgs.concat());
            assert_eq!(out, msgs);
            assert_eq!(f.padding(), Padding::Unpadded);
        }
        // One byte would be due: told apart once the STUN header is there (the one ambiguous
        // cut, right after its first byte, is in `decide`'s comment).
        let msgs = [channel_data(0x4000, b"abc"), stun(0x0004)];
        let mut f = Framing::default();
        let mut buf = msgs.concat();
        assert_eq!(f.next_message(&mut buf), Ok(Some(msgs[0].clone())));
        assert_eq!(f.next_message(&mut buf), Ok(Some(msgs[1].clone())));
        assert_eq!(f.padding(), Padding::Unpadded);
    }

    #[test]
    fn a_padded_stream_is_split_without_its_padding_and_padded_on_the_way_out() {
        let msgs = [
            stun(0x0003),
            channel_data(0x4000, b"abc"),
            channel_data(0x4001, b"hello"),
            stun(0x0004),
            channel_data(0x4000, b"x"),
            channel_data(0x4000, b"four"),
        ];
        let wire: Vec<u8> = msgs.iter().cloned().flat_map(padded).collect();
        let (out, f) = split(&wire);
        assert_eq!(out, msgs);
        assert_eq!(f.padding(), Padding::Padded);
        assert_eq!(
            f.frame_out(channel_data(0x4000, b"abc")),
            padded(channel_data(0x4000, b"abc"))
        );
        assert_eq!(f.frame_out(stun(0x0103)), stun(0x0103));
    }

    #[test]
    fn channel_data_goes_out_padded_until_the_client_shows_it_does_not_pad() {
        // RFC 8656 §12.5 by default: a client may receive ChannelData before it sends any.
        let f = Framing::default();
        assert_eq!(f.padding(), Padding::Unknown);
        for n in 0..8 {
            assert_eq!(f.frame_out(channel_data(0x4000, &vec![1; n])).len() % 4, 0);
        }
        assert_eq!(f.frame_out(stun(0x0017)), stun(0x0017));
    }

    #[test]
    fn padding_followed_by_stun_is_recognised() {
        let msgs = [channel_data(0x4000, b"ab"), stun(0x0009)];
        let wire: Vec<u8> = msgs.iter().cloned().flat_map(padded).collect();
        let (out, f) = split(&wire);
        assert_eq!(out, msgs);
        assert_eq!(f.padding(), Padding::Padded);
    }

    #[test]
    fn padding_in_the_same_read_as_its_message_is_learnt_at_once() {
        let mut f = Framing::default();
        let mut buf = padded(channel_data(0x4000, b"abcde"));
        assert_eq!(
            f.next_message(&mut buf).unwrap(),
            Some(channel_data(0x4000, b"abcde"))
        );
        assert_eq!(f.next_message(&mut buf).unwrap(), None);
        assert_eq!(f.padding(), Padding::Padded);
        assert!(buf.is_empty());
    }

    #[test]
    fn an_unaligned_message_is_passed_on_before_its_padding_arrives() {
        let mut f = Framing::default();
        let mut buf = channel_data(0x4000, b"abc");
        assert_eq!(
            f.next_message(&mut buf).unwrap(),
            Some(channel_data(0x4000, b"abc"))
        );
        assert_eq!(f.padding(), Padding::Pending(1));
        assert_eq!(f.next_message(&mut buf).unwrap(), None);
    }

    #[test]
    fn garbage_breaks_the_stream_instead_of_panicking() {
        for wire in [
            &[0xff, 0, 0, 0][..],
            &[0x80, 1, 2, 3],
            // Unaligned ChannelData, then a zero that is neither padding nor STUN.
            &[
                0x40, 0, 0, 3, 1, 2, 3, 0, 0x99, 0x99, 0x99, 0x99, 0x99, 0x99, 0x99, 0x99,
            ],
        ] {
            let mut f = Framing::default();
            let mut buf = wire.to_vec();
            let mut broke = false;
            for _ in 0..4 {
                match f.next_message(&mut buf) {
                    Err(Broken) => {
                        broke = true;
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(_)) => {}
                }
            }
            assert!(broke, "{wire:?}");
        }
        assert_eq!(Framing::default().next_message(&mut vec![0, 1]), Ok(None));
    }
}
