//! Reconnect delays: exponential, capped, with jitter so that thousands of clients that lost the
//! same server do not come back in lockstep.

use std::time::Duration;

/// Exponential backoff with "equal jitter": each delay is uniformly drawn from
/// `[d/2, d]` where `d = min(max, initial · 2^attempt)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (upper bound, before jitter).
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based), with `random` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        let d = self.initial.saturating_mul(factor).min(self.max);
        let half = d / 2;
        half + half.mul_f64(random.clamp(0.0, 1.0))
    }

    /// [`Backoff::delay`] with fresh randomness.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        let mut b = [0u8; 4];
        let r = match getrandom::fill(&mut b) {
            Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
            Err(_) => 0.5,
        };
        self.delay(attempt, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        let b = Backoff::default();
        for attempt in 0..12 {
            let full = b.delay(attempt, 1.0);
            let low = b.delay(attempt, 0.0);
            assert_eq!(low, full / 2);
            for _ in 0..50 {
                let d = b.next_delay(attempt);
                assert!(d >= low && d <= full, "{d:?} not in [{low:?}, {full:?}]");
            }
        }
    }
}
