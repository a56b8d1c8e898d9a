//! The slice of STUN (RFC 8489) that DiscordOpus needs to learn server-reflexive addresses:
//! Binding requests and their success responses with XOR-MAPPED-ADDRESS, plus FINGERPRINT.
//!
//! Protocol flow:
//! - a node sends [`binding_request`] over the same UDP socket its ICE agent uses;
//! - the signaling server parses it with [`parse_binding_request`] and answers with
//!   [`binding_success`], naming the source address it saw;
//! - the node matches the transaction ID and reads the address with [`parse_binding_success`].
//!
//! Short-term-credential checks (ICE connectivity checks) are str0m's job, not this module's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed value in every STUN header.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_SOFTWARE: u16 = 0x8022;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
const HEADER_LEN: usize = 20;

/// A STUN transaction ID (96 bits, random per request).
pub type TransactionId = [u8; 12];

/// Why a datagram is not the STUN message we expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Too short, wrong cookie, bad length or misaligned attributes: not STUN.
    #[error("not a STUN message")]
    NotStun,
    /// A STUN message, but not of the expected type.
    #[error("unexpected STUN message type {0:#06x}")]
    UnexpectedType(u16),
    /// The FINGERPRINT attribute does not match the message.
    #[error("STUN fingerprint mismatch")]
    BadFingerprint,
    /// A success response without a usable (XOR-)MAPPED-ADDRESS.
    #[error("STUN response carries no mapped address")]
    NoAddress,
}

/// Quick check whether a datagram could be STUN (first two bits zero and the magic cookie), so a
/// socket shared with DTLS/SRTP can demultiplex (RFC 7983).
pub fn looks_like_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[0] & 0xC0 == 0
        && datagram[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// A Binding request with a FINGERPRINT.
pub fn binding_request(transaction_id: TransactionId) -> Vec<u8> {
    let mut msg = header(BINDING_REQUEST, transaction_id);
    append_fingerprint(&mut msg);
    msg
}

/// Parses a Binding request and returns its transaction ID.
pub fn parse_binding_request(datagram: &[u8]) -> Result<TransactionId, StunError> {
    let (ty, tid, attrs) = parse(datagram)?;
    if ty != BINDING_REQUEST {
        return Err(StunError::UnexpectedType(ty));
    }
    check_fingerprint(datagram, &attrs)?;
    Ok(tid)
}

/// A Binding success response telling the client its address as seen by the server.
pub fn binding_success(transaction_id: TransactionId, mapped: SocketAddr) -> Vec<u8> {
    let mut msg = header(BINDING_SUCCESS, transaction_id);
    let xor = xor_address(mapped, &transaction_id);
    append_attr(&mut msg, ATTR_XOR_MAPPED_ADDRESS, &xor);
    append_attr(&mut msg, ATTR_SOFTWARE, b"discordopus");
    append_fingerprint(&mut msg);
    msg
}

/// Parses a Binding success response: its transaction ID and the mapped address.
pub fn parse_binding_success(datagram: &[u8]) -> Result<(TransactionId, SocketAddr), StunError> {
    let (ty, tid, attrs) = parse(datagram)?;
    if ty != BINDING_SUCCESS {
        return Err(StunError::UnexpectedType(ty));
    }
    check_fingerprint(datagram, &attrs)?;
    let mut plain = None;
    for (kind, _, value) in &attrs {
        match *kind {
            ATTR_XOR_MAPPED_ADDRESS => {
                if let Some(addr) = decode_address(value, Some(&tid)) {
                    return Ok((tid, addr));
                }
            }
            ATTR_MAPPED_ADDRESS => plain = decode_address(value, None),
            _ => {}
        }
    }
    plain.map(|a| (tid, a)).ok_or(StunError::NoAddress)
}

fn header(ty: u16, tid: TransactionId) -> Vec<u8> {
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(&ty.to_be_bytes());
    msg.extend_from_slice(&0u16.to_be_bytes());
    msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    msg.extend_from_slice(&tid);
    msg
}

fn set_length(msg: &mut [u8]) {
    let body = u16::try_from(msg.len() - HEADER_LEN).unwrap_or(u16::MAX);
    msg[2..4].copy_from_slice(&body.to_be_bytes());
}

fn append_attr(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
    msg.extend_from_slice(&kind.to_be_bytes());
    msg.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    msg.extend_from_slice(value);
    while !msg.len().is_multiple_of(4) {
        msg.push(0);
    }
    set_length(msg);
}

fn append_fingerprint(msg: &mut Vec<u8>) {
    // The length field must already count the FINGERPRINT attribute when the CRC is taken.
    let body = u16::try_from(msg.len() - HEADER_LEN + 8).unwrap_or(u16::MAX);
    msg[2..4].copy_from_slice(&body.to_be_bytes());
    let crc = crc32(msg) ^ FINGERPRINT_XOR;
    append_attr(msg, ATTR_FINGERPRINT, &crc.to_be_bytes());
}

type Attr<'a> = (u16, usize, &'a [u8]);

fn parse(datagram: &[u8]) -> Result<(u16, TransactionId, Vec<Attr<'_>>), StunError> {
    if !looks_like_stun(datagram) {
        return Err(StunError::NotStun);
    }
    let ty = u16::from_be_bytes([datagram[0], datagram[1]]);
    let len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if len % 4 != 0 || HEADER_LEN + len != datagram.len() {
        return Err(StunError::NotStun);
    }
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&datagram[8..20]);
    let mut attrs = Vec::new();
    let mut at = HEADER_LEN;
    while at < datagram.len() {
        if at + 4 > datagram.len() {
            return Err(StunError::NotStun);
        }
        let kind = u16::from_be_bytes([datagram[at], datagram[at + 1]]);
        let vlen = usize::from(u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]));
        let start = at + 4;
        let end = start + vlen;
        if end > datagram.len() {
            return Err(StunError::NotStun);
        }
        attrs.push((kind, at, &datagram[start..end]));
        at = end.next_multiple_of(4);
    }
    Ok((ty, tid, attrs))
}

fn check_fingerprint(datagram: &[u8], attrs: &[Attr<'_>]) -> Result<(), StunError> {
    let Some(&(_, offset, value)) = attrs.iter().find(|(k, _, _)| *k == ATTR_FINGERPRINT) else {
        return Ok(()); // FINGERPRINT is optional.
    };
    let Ok(bytes) = <[u8; 4]>::try_from(value) else {
        return Err(StunError::BadFingerprint);
    };
    // The CRC covers everything before the attribute, with the header length as sent.
    if u32::from_be_bytes(bytes) != crc32(&datagram[..offset]) ^ FINGERPRINT_XOR {
        return Err(StunError::BadFingerprint);
    }
    Ok(())
}

fn xor_address(addr: SocketAddr, tid: &TransactionId) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ ((MAGIC_COOKIE >> 16) as u16);
    let mut out = vec![0u8];
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(0x01);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend(ip.octets().iter().zip(cookie).map(|(a, b)| a ^ b));
        }
        IpAddr::V6(ip) => {
            out.push(0x02);
            out.extend_from_slice(&port.to_be_bytes());
            let mask = cookie.iter().chain(tid.iter());
            out.extend(ip.octets().iter().zip(mask).map(|(a, b)| a ^ b));
        }
    }
    out
}

fn decode_address(value: &[u8], xor_with: Option<&TransactionId>) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    if xor_with.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    match (value[1], value.len()) {
        (0x01, 8) => {
            let mut o = [0u8; 4];
            o.copy_from_slice(&value[4..8]);
            if xor_with.is_some() {
                for (b, c) in o.iter_mut().zip(cookie) {
                    *b ^= c;
                }
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
        }
        (0x02, 20) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&value[4..20]);
            if let Some(tid) = xor_with {
                for (b, c) in o.iter_mut().zip(cookie.iter().chain(tid.iter())) {
                    *b ^= c;
                }
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}

/// CRC-32 (IEEE 802.3), as FINGERPRINT requires. Bitwise: STUN messages here are tiny.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn request_and_response_round_trip_v4_and_v6() {
        let tid = [7u8; 12];
        let req = binding_request(tid);
        assert!(looks_like_stun(&req));
        assert_eq!(parse_binding_request(&req), Ok(tid));
        for addr in ["127.0.0.1:3478", "[::1]:50000", "[2001:db8::7]:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let resp = binding_success(tid, addr);
            assert_eq!(parse_binding_success(&resp), Ok((tid, addr)));
            assert_eq!(
                parse_binding_request(&resp),
                Err(StunError::UnexpectedType(BINDING_SUCCESS))
            );
        }
    }

    #[test]
    fn rfc5769_sample_response_ipv4() {
        // RFC 5769 §2.2 (software "test vector", XOR-MAPPED-ADDRESS 192.0.2.1:32853,
        // MESSAGE-INTEGRITY which we ignore, FINGERPRINT).
        let hex = "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220\
                   002000080001a147e112a643\
                   00080014\
                   2b91f599fd9e90c38c7489f92af9ba53f06be7d7\
                   80280004c07d4c96";
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let (tid, addr) = parse_binding_success(&bytes).unwrap();
        assert_eq!(tid[..4], [0xb7, 0xe7, 0xa7, 0x01]);
        assert_eq!(addr, "192.0.2.1:32853".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn corrupted_messages_are_refused() {
        let mut resp = binding_success([1; 12], "127.0.0.1:9".parse().unwrap());
        let n = resp.len();
        resp[n - 1] ^= 1;
        assert_eq!(parse_binding_success(&resp), Err(StunError::BadFingerprint));
        assert_eq!(parse_binding_request(b"hello"), Err(StunError::NotStun));
        let mut short = binding_request([0; 12]);
        short.truncate(22);
        assert_eq!(parse_binding_request(&short), Err(StunError::NotStun));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_binding_request(&bytes);
            let _ = parse_binding_success(&bytes);
        }

        #[test]
        fn parsers_never_panic_on_stun_like_input(mut bytes in proptest::collection::vec(any::<u8>(), 20..120)) {
            bytes[0] &= 0x3f;
            bytes[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            let len = (bytes.len() - 20) as u16;
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
            let _ = parse_binding_request(&bytes);
            let _ = parse_binding_success(&bytes);
        }
    }
}
