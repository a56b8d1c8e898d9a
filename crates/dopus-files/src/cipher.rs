//! The content cipher: ChaCha20 (IETF, 96-bit nonce) with its counter seeked to any byte, so any
//! range of ciphertext is made straight from the plaintext file and no ciphertext copy is ever
//! written on the sending side.
//!
//! A nonce covers 256 GiB (a 32-bit counter of 64-byte blocks). Files are cut into segments of
//! [`SEGMENT_BYTES`] (64 GiB), and segment `i` uses the file's nonce with its first four bytes
//! XOR `i` ([`FileNonce::for_segment`]), so files of any size work and no counter ever comes
//! near its end. Each file has its own random key, so nonces never repeat under a key.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use dopus_proto::transfer::{FileKey, FileNonce, SEGMENT_BYTES};
use std::fmt;

/// Why bytes could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// The offset is beyond what the format addresses (more than 2^32 segments).
    #[error("offset beyond the file format's range")]
    OutOfRange,
}

/// The keystream of one file. `Debug` never prints the key.
#[derive(Clone)]
pub struct FileCipher {
    key: [u8; 32],
    nonce: FileNonce,
}

impl fmt::Debug for FileCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileCipher(<redacted>)")
    }
}

impl FileCipher {
    /// The cipher of a file with this key and nonce.
    pub fn new(key: &FileKey, nonce: FileNonce) -> Self {
        Self { key: key.0, nonce }
    }

    /// XORs the keystream for bytes `offset..offset + buf.len()` into `buf`: encrypts plaintext
    /// and decrypts ciphertext alike.
    pub fn apply(&self, offset: u64, buf: &mut [u8]) -> Result<(), CipherError> {
        let mut offset = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let segment =
                u32::try_from(offset / SEGMENT_BYTES).map_err(|_| CipherError::OutOfRange)?;
            let within = offset % SEGMENT_BYTES;
            let room = SEGMENT_BYTES - within;
            let n = usize::try_from(room).map_or(rest.len(), |r| r.min(rest.len()));
            let (now, later) = rest.split_at_mut(n);
            let nonce = self.nonce.for_segment(segment);
            let mut c = ChaCha20::new((&self.key).into(), (&nonce).into());
            c.try_seek(within).map_err(|_| CipherError::OutOfRange)?;
            c.try_apply_keystream(now)
                .map_err(|_| CipherError::OutOfRange)?;
            offset = offset
                .checked_add(n as u64)
                .ok_or(CipherError::OutOfRange)?;
            rest = later;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cipher() -> FileCipher {
        FileCipher::new(&FileKey([7; 32]), FileNonce([9; 12]))
    }

    #[test]
    fn matches_rfc_8439_test_vector() {
        // RFC 8439 section 2.4.2: key 00..1f, nonce 00 00 00 00 00 00 00 4a 00 00 00 00,
        // counter 1 (so the keystream starts at byte 64).
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let nonce = FileNonce([0, 0, 0, 0, 0, 0, 0, 0x4a, 0, 0, 0, 0]);
        let c = FileCipher::new(&FileKey(key), nonce);
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let mut buf = plain.to_vec();
        c.apply(64, &mut buf).unwrap();
        assert_eq!(
            &buf[..16],
            &[
                0x6e, 0x2e, 0x35, 0x9a, 0x25, 0x68, 0xf9, 0x80, 0x41, 0xba, 0x07, 0x28, 0xdd, 0x0d,
                0x69, 0x81
            ]
        );
    }

    #[test]
    fn segments_use_their_own_nonce() {
        let c = cipher();
        let at = SEGMENT_BYTES - 8;
        let mut across = vec![0u8; 16];
        c.apply(at, &mut across).unwrap();
        let mut before = vec![0u8; 8];
        c.apply(at, &mut before).unwrap();
        let mut after = vec![0u8; 8];
        c.apply(SEGMENT_BYTES, &mut after).unwrap();
        assert_eq!(&across[..8], &before[..]);
        assert_eq!(&across[8..], &after[..]);
        // Segment 1 starts a fresh keystream under another nonce: not segment 0's bytes.
        let mut zero = vec![0u8; 8];
        c.apply(0, &mut zero).unwrap();
        assert_ne!(after, zero);
        let seg1 = FileCipher::new(
            &FileKey([7; 32]),
            FileNonce(FileNonce([9; 12]).for_segment(1)),
        );
        let mut direct = vec![0u8; 8];
        seg1.apply(0, &mut direct).unwrap();
        assert_eq!(after, direct);
        // The last byte of a 256 GiB nonce range is never reached: 5 TiB works.
        let mut far = vec![0u8; 64];
        c.apply(5 << 40, &mut far).unwrap();
        assert!(c.apply(u64::MAX - 10, &mut far).is_err());
        assert!(format!("{c:?}").contains("redacted"));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_keystream(start in 0u64..(1 << 40), len in 1usize..4096,
                                              cut in 0usize..4096) {
            let c = cipher();
            let cut = cut % len;
            let mut whole = vec![0u8; len];
            c.apply(start, &mut whole).unwrap();
            let mut parts = vec![0u8; len];
            let (a, b) = parts.split_at_mut(cut);
            c.apply(start, a).unwrap();
            c.apply(start + cut as u64, b).unwrap();
            prop_assert_eq!(&whole, &parts);
            // Applying twice gives the plaintext back.
            c.apply(start, &mut whole).unwrap();
            prop_assert!(whole.iter().all(|b| *b == 0));
        }
    }
}
