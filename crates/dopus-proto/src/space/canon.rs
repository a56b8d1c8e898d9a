//! The canonical binary encoding of structured values inside a signature.
//!
//! `canonical::signing_bytes` length-prefixes a flat list of fields; an op body is a tree
//! (variants, optional fields, lists). This writer flattens it so that every item delimits
//! itself: fixed-width integers, length-prefixed byte strings, one tag byte per variant and per
//! option, a count before every list. Two different values therefore never give the same bytes,
//! and the bytes never depend on how the JSON was written (field order, whitespace, escapes).

use crate::bundle::DeviceCertificate;

#[derive(Debug, Default)]
pub(crate) struct Canon(Vec<u8>);

impl Canon {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub(crate) fn tag(&mut self, t: u8) -> &mut Self {
        self.0.push(t);
        self
    }

    pub(crate) fn bool(&mut self, b: bool) -> &mut Self {
        self.tag(u8::from(b))
    }

    pub(crate) fn u32(&mut self, n: u32) -> &mut Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, n: u64) -> &mut Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// A byte string of any length, prefixed by its length.
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // Every field we sign is bounded far below 4 GiB by the decoders' limits.
        let n = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.u32(n);
        self.0.extend_from_slice(b);
        self
    }

    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// An option: tag 0, or tag 1 followed by the value.
    pub(crate) fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) -> &mut Self {
        match v {
            None => self.tag(0),
            Some(v) => {
                self.tag(1);
                f(self, v);
                self
            }
        }
    }

    /// A list: its length, then each item.
    pub(crate) fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) -> &mut Self {
        let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
        self.u32(n);
        for item in items {
            f(self, item);
        }
        self
    }

    /// A device certificate, signature included (so the op is bound to this exact certificate).
    pub(crate) fn certificate(&mut self, c: &DeviceCertificate) -> &mut Self {
        self.bytes(c.user_id.key().as_bytes())
            .str(c.device_id.as_str())
            .bytes(c.keys.ed25519.as_bytes())
            .bytes(c.keys.curve25519.as_bytes())
            .u64(c.created_at.as_millis())
            .bytes(c.signature.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_delimit_themselves() {
        let a = {
            let mut c = Canon::new();
            c.str("ab").str("c");
            c.into_bytes()
        };
        let b = {
            let mut c = Canon::new();
            c.str("a").str("bc");
            c.into_bytes()
        };
        assert_ne!(a, b);
        let none = {
            let mut c = Canon::new();
            c.opt(None::<u32>, |c, v| {
                c.u32(v);
            });
            c.into_bytes()
        };
        let zero = {
            let mut c = Canon::new();
            c.opt(Some(0u32), |c, v| {
                c.u32(v);
            });
            c.into_bytes()
        };
        assert_ne!(none, zero);
        let empty = {
            let mut c = Canon::new();
            c.list(&[] as &[u8], |c, b| {
                c.tag(*b);
            });
            c.into_bytes()
        };
        assert_eq!(empty, vec![0, 0, 0, 0]);
    }
}
