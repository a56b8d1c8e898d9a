//! Checking that a contact's keys are really theirs: a safety number to compare aloud or side by
//! side, and SAS emoji verification ([`sas`]) over the encrypted peer channel.
//!
//! Safety number (docs/e2e.md, "Safety numbers"): 60 digits in 12 groups of 5, the same on both
//! sides and stable for as long as both identity keys are. For each user, the identity key is
//! hashed [`SAFETY_NUMBER_ITERATIONS`] times with SHA-512
//! (`h₀ = SHA-512("dopus/v1/safety-number" ‖ 0x00 ‖ key)`, `hᵢ = SHA-512(hᵢ₋₁ ‖ key)`); the first
//! 30 bytes of the result, read as six 40-bit big-endian numbers taken modulo 100000, give that
//! user's 30 digits. The two halves are ordered by identity key bytes, so the order in which the
//! users are given does not matter. The iteration count makes finding a second key with the same
//! half (about 2^100 work per target) that much slower still. Only identity keys go in, so
//! adding a device does not change the number; a new identity (a new user ID) always does.

mod emoji;
pub mod sas;

pub use emoji::{EMOJI, Emoji};
pub use sas::{
    SAS_TIMEOUT_MS, SasError, SasParty, SasRole, SasState, SasVerification, VerifiedDevice,
};

use dopus_types::UserId;
use sha2::{Digest, Sha512};
use std::fmt;

/// How many times each identity key is hashed.
pub const SAFETY_NUMBER_ITERATIONS: usize = 5200;
const CONTEXT: &[u8] = b"dopus/v1/safety-number";

/// The safety number of a pair of users.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SafetyNumber {
    digits: String,
}

fn half(user: &UserId) -> String {
    let key = user.key().as_bytes();
    let mut h = Sha512::new();
    h.update(CONTEXT);
    h.update([0u8]);
    h.update(key);
    let mut digest = h.finalize();
    for _ in 1..SAFETY_NUMBER_ITERATIONS {
        let mut h = Sha512::new();
        h.update(digest);
        h.update(key);
        digest = h.finalize();
    }
    let mut out = String::with_capacity(30);
    for chunk in digest[..30].chunks(5) {
        let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        out.push_str(&format!("{:05}", n % 100_000));
    }
    out
}

impl SafetyNumber {
    /// The safety number of `a` and `b`, in either order.
    pub fn new(a: &UserId, b: &UserId) -> Self {
        let (first, second) = if a.key().as_bytes() <= b.key().as_bytes() {
            (a, b)
        } else {
            (b, a)
        };
        Self {
            digits: half(first) + &half(second),
        }
    }

    /// The 60 digits without spaces.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The 12 groups of 5 digits.
    pub fn groups(&self) -> Vec<&str> {
        (0..12).map(|i| &self.digits[i * 5..i * 5 + 5]).collect()
    }

    /// Three lines of four groups, as shown in the UI.
    pub fn lines(&self) -> [String; 3] {
        let g = self.groups();
        [g[0..4].join(" "), g[4..8].join(" "), g[8..12].join(" ")]
    }
}

impl fmt::Display for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.groups().join(" "))
    }
}

impl fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafetyNumber({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn user(seed: u8) -> UserId {
        Identity::from_seed(&[seed; 32]).unwrap().user_id()
    }

    #[test]
    fn is_symmetric_and_sixty_digits() {
        let (a, b) = (user(1), user(2));
        let n = SafetyNumber::new(&a, &b);
        assert_eq!(n, SafetyNumber::new(&b, &a));
        assert_eq!(n.digits().len(), 60);
        assert!(n.digits().bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(n.groups().len(), 12);
        assert_eq!(n.to_string().len(), 60 + 11);
    }

    #[test]
    fn differs_for_every_other_pair() {
        let (a, b, c) = (user(1), user(2), user(3));
        let ab = SafetyNumber::new(&a, &b);
        assert_ne!(ab, SafetyNumber::new(&a, &c));
        assert_ne!(ab, SafetyNumber::new(&c, &b));
        // Each half belongs to one user: the shared user's half is the same in both numbers.
        let ac = SafetyNumber::new(&a, &c);
        assert!(ac.digits().contains(&half(&a)) && ab.digits().contains(&half(&a)));
    }

    #[test]
    fn is_stable_snapshot() {
        let n = SafetyNumber::new(&user(1), &user(2));
        insta::assert_snapshot!(n.lines().join("\n"));
    }
}
