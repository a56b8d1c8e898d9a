//! The byte strings that signatures cover.
//!
//! Every signature in DiscordOpus is over `context || 0x00 || field*`, where `context` is an ASCII
//! string naming the purpose and protocol version (`dopus/v1/…`), and each field is a big-endian
//! `u32` length followed by its bytes. The context makes a signature for one purpose useless for
//! any other (a device certificate can never pass as a signaling login), and the length prefixes
//! make the encoding injective: two different field lists never produce the same bytes.

/// Signature by an identity key over a device's keys.
pub const DEVICE_CERTIFICATE: &str = "dopus/v1/device-certificate";
/// Signature by a device key over one of its one-time keys.
pub const ONE_TIME_KEY: &str = "dopus/v1/one-time-key";
/// Signature by a device key over its fallback key.
pub const FALLBACK_KEY: &str = "dopus/v1/fallback-key";
/// Signature by an identity key over a signaling server's login challenge.
pub const SIGNALING_AUTH: &str = "dopus/v1/signaling-auth";
/// Signature by an identity key over a contact request or its answer.
pub const CONTACT_INTRODUCTION: &str = "dopus/v1/contact-introduction";

/// Builds the signed byte string for `context` and `fields`.
pub fn signing_bytes(context: &str, fields: &[&[u8]]) -> Vec<u8> {
    let len = context.len() + 1 + fields.iter().map(|f| 4 + f.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(context.as_bytes());
    out.push(0);
    for field in fields {
        // Every field we sign is far below 4 GiB; saturate rather than wrap if one ever is not.
        let n = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_injective_across_field_boundaries() {
        let a = signing_bytes(ONE_TIME_KEY, &[b"ab", b"c"]);
        let b = signing_bytes(ONE_TIME_KEY, &[b"a", b"bc"]);
        assert_ne!(a, b);
    }

    #[test]
    fn contexts_separate_purposes() {
        let a = signing_bytes(ONE_TIME_KEY, &[b"k"]);
        let b = signing_bytes(FALLBACK_KEY, &[b"k"]);
        assert_ne!(a, b);
    }

    #[test]
    fn layout_is_stable() {
        assert_eq!(
            signing_bytes("x", &[b"ab", b""]),
            vec![b'x', 0, 0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0]
        );
    }
}
