//! Rate limits a receiving node applies to each member: live ops, key requests, join requests
//! and channel messages. One token bucket per (user, class), in integer milli-tokens, driven by
//! the time the caller passes in.
//!
//! What to count: ops a member broadcasts on its own (not ops we asked for during sync, which
//! our own requests already bound), key requests and join requests by the requesting user, and
//! channel messages by sender. A member over its limit is dropped silently until its bucket
//! refills; the limits are generous for people and tight for scripts.

use dopus_types::{Timestamp, UserId};
use std::collections::BTreeMap;

/// What is being counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RateClass {
    /// Control-log ops a member broadcasts.
    Ops,
    /// Megolm key requests.
    KeyRequests,
    /// Join requests (counted by the joiner's user).
    JoinRequests,
    /// Channel messages.
    Messages,
    /// Typing notices in channels (a person sends one per channel every 3 s at most).
    Typing,
}

/// One class's limit: a burst, then a steady rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Events allowed at once.
    pub burst: u32,
    /// Milliseconds per event once the burst is spent.
    pub every_ms: u64,
}

/// The limits per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Live ops.
    pub ops: Limit,
    /// Key requests.
    pub key_requests: Limit,
    /// Join requests.
    pub join_requests: Limit,
    /// Channel messages.
    pub messages: Limit,
    /// Typing notices.
    pub typing: Limit,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            ops: Limit {
                burst: 30,
                every_ms: 2_000,
            },
            key_requests: Limit {
                burst: 50,
                every_ms: 1_000,
            },
            join_requests: Limit {
                burst: 5,
                every_ms: 10_000,
            },
            messages: Limit {
                burst: 20,
                every_ms: 200,
            },
            typing: Limit {
                burst: 10,
                every_ms: 1_000,
            },
        }
    }
}

impl RateLimits {
    fn get(&self, class: RateClass) -> Limit {
        match class {
            RateClass::Ops => self.ops,
            RateClass::KeyRequests => self.key_requests,
            RateClass::JoinRequests => self.join_requests,
            RateClass::Messages => self.messages,
            RateClass::Typing => self.typing,
        }
    }
}

const MILLI: u64 = 1_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Milli-tokens left.
    tokens: u64,
    at: Timestamp,
}

/// Token buckets per (user, class).
#[derive(Clone, Debug, Default)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: BTreeMap<(UserId, RateClass), Bucket>,
}

impl RateLimiter {
    /// A limiter with these limits.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: BTreeMap::new(),
        }
    }

    fn refill(limit: Limit, b: &mut Bucket, now: Timestamp) {
        let full = u64::from(limit.burst) * MILLI;
        let every = limit.every_ms.max(1);
        let elapsed = now.millis_since(b.at);
        let gained = elapsed.saturating_mul(MILLI) / every;
        b.tokens = b.tokens.saturating_add(gained);
        if b.tokens >= full {
            b.tokens = full;
            b.at = now.max(b.at);
        } else {
            // Advance only by the time the gained milli-tokens stand for, so no fraction of
            // a token is lost between calls.
            b.at = b.at.plus_millis(gained.saturating_mul(every) / MILLI);
        }
    }

    /// Counts one event of `class` by `user` at `now`; `false` means drop it.
    pub fn allow(&mut self, now: Timestamp, user: &UserId, class: RateClass) -> bool {
        self.allow_n(now, user, class, 1)
    }

    /// Counts `n` events at once (a batch of ops); `false` means drop the batch.
    pub fn allow_n(&mut self, now: Timestamp, user: &UserId, class: RateClass, n: u32) -> bool {
        let limit = self.limits.get(class);
        let b = self.buckets.entry((*user, class)).or_insert(Bucket {
            tokens: u64::from(limit.burst) * MILLI,
            at: now,
        });
        Self::refill(limit, b, now);
        let cost = u64::from(n) * MILLI;
        if b.tokens >= cost {
            b.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Forgets buckets that have been full again for a while (bounded memory).
    pub fn prune(&mut self, now: Timestamp) {
        let limits = self.limits;
        self.buckets.retain(|(_, class), b| {
            let limit = limits.get(*class);
            let mut b2 = *b;
            Self::refill(limit, &mut b2, now);
            b2.tokens < u64::from(limit.burst) * MILLI
        });
    }

    /// How many buckets are kept.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dopus_types::Ed25519Key;

    fn user(n: u8) -> UserId {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[n; 32]);
        UserId::from_key(Ed25519Key::from_bytes(sk.verifying_key().as_bytes()).unwrap())
    }

    #[test]
    fn a_flood_is_cut_after_the_burst_and_refills_over_time() {
        let mut r = RateLimiter::default();
        let (a, b) = (user(1), user(2));
        let t = Timestamp(1_000_000);
        let allowed = (0..100).filter(|_| r.allow(t, &a, RateClass::Ops)).count();
        assert_eq!(allowed, 30);
        // Others are not affected, nor other classes.
        assert!(r.allow(t, &b, RateClass::Ops));
        assert!(r.allow(t, &a, RateClass::KeyRequests));
        // One more op every two seconds.
        assert!(!r.allow(t.plus_millis(1_999), &a, RateClass::Ops));
        assert!(r.allow(t.plus_millis(2_000), &a, RateClass::Ops));
        assert!(!r.allow(t.plus_millis(2_000), &a, RateClass::Ops));
        // A long pause refills to the burst, not beyond.
        let later = t.plus_millis(10_000_000);
        let allowed = (0..100)
            .filter(|_| r.allow(later, &a, RateClass::Ops))
            .count();
        assert_eq!(allowed, 30);
        // A batch larger than what is left is refused whole.
        assert!(!r.allow_n(later, &a, RateClass::Ops, 2));
        // A clock going backwards never mints tokens.
        assert!(!r.allow(t, &a, RateClass::Ops));
    }

    #[test]
    fn pruning_forgets_refilled_buckets() {
        let mut r = RateLimiter::default();
        let t = Timestamp(0);
        for n in 0..10 {
            r.allow(t, &user(n), RateClass::Messages);
        }
        assert_eq!(r.len(), 10);
        r.prune(t);
        assert_eq!(r.len(), 10);
        r.prune(t.plus_millis(60_000));
        assert!(r.is_empty());
    }
}
