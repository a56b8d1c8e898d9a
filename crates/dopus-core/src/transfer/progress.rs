//! Progress of one transfer: bytes, a smoothed rate, an ETA, and a limit on how often the UI
//! hears about it.
//!
//! The rate is an exponentially weighted moving average of the bytes per second measured over
//! windows of at least [`SAMPLE_MS`], with a time constant of [`RATE_TAU_MS`]: it follows a
//! change of speed within a few seconds without jumping at every burst of messages. Events go
//! out at most once per [`MIN_EVENT_INTERVAL_MS`] (4 per second) per transfer, except that a
//! change of state is always reported at once.

use dopus_types::Timestamp;
use serde::Serialize;

/// Shortest interval between two progress events of one transfer (4 per second).
pub const MIN_EVENT_INTERVAL_MS: u64 = 250;
/// Shortest window over which a rate is measured.
pub const SAMPLE_MS: u64 = 250;
/// Time constant of the rate's moving average.
pub const RATE_TAU_MS: u64 = 2_000;

/// One progress reading, as events carry it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Progress {
    /// Bytes done (verified, for a download).
    pub bytes: u64,
    /// Bytes in all.
    pub total: u64,
    /// Smoothed bytes per second (0 until measured).
    pub rate: u64,
    /// Seconds until done at the current rate; `None` while the rate is unknown or zero.
    pub eta_secs: Option<u64>,
}

/// Keeps the numbers behind [`Progress`] and decides when an event is due.
#[derive(Clone, Debug)]
pub struct ProgressMeter {
    total: u64,
    bytes: u64,
    rate: Option<f64>,
    sample: Option<(Timestamp, u64)>,
    last_event: Option<Timestamp>,
}

impl ProgressMeter {
    /// A meter for `total` bytes of which `bytes` are already done (a resumed transfer).
    pub fn new(total: u64, bytes: u64) -> Self {
        Self {
            total,
            bytes: bytes.min(total),
            rate: None,
            sample: None,
            last_event: None,
        }
    }

    /// Records that `bytes` are done at `now` (monotonic: a smaller value is ignored).
    pub fn record(&mut self, now: Timestamp, bytes: u64) {
        let bytes = bytes.min(self.total);
        if bytes < self.bytes {
            return;
        }
        self.bytes = bytes;
        let Some((at, base)) = self.sample else {
            self.sample = Some((now, bytes));
            return;
        };
        let dt = now.millis_since(at);
        if dt < SAMPLE_MS {
            return;
        }
        let instant = (bytes - base) as f64 * 1000.0 / dt as f64;
        let alpha = 1.0 - (-(dt as f64) / RATE_TAU_MS as f64).exp();
        self.rate = Some(match self.rate {
            Some(r) => r + alpha * (instant - r),
            None => instant,
        });
        self.sample = Some((now, bytes));
    }

    /// Forgets the rate (after a pause: the time spent paused is not slowness).
    pub fn reset_rate(&mut self) {
        self.rate = None;
        self.sample = None;
    }

    /// The current reading.
    pub fn progress(&self) -> Progress {
        let rate = self.rate.map_or(0, |r| r.max(0.0).round() as u64);
        let left = self.total - self.bytes;
        let eta_secs = if left == 0 {
            Some(0)
        } else if rate == 0 {
            None
        } else {
            Some(left.div_ceil(rate))
        };
        Progress {
            bytes: self.bytes,
            total: self.total,
            rate,
            eta_secs,
        }
    }

    /// Whether a progress event may go out at `now` (at most one per
    /// [`MIN_EVENT_INTERVAL_MS`]); if so, remembers that one did.
    pub fn event_due(&mut self, now: Timestamp) -> bool {
        let due = self
            .last_event
            .is_none_or(|t| now.millis_since(t) >= MIN_EVENT_INTERVAL_MS);
        if due {
            self.last_event = Some(now);
        }
        due
    }

    /// Notes that an event went out at `now` anyway (a state change), so the next progress
    /// event waits its turn.
    pub fn event_sent(&mut self, now: Timestamp) {
        self.last_event = Some(now);
    }

    /// When the next progress event may go out, if one has been sent.
    pub fn next_event_at(&self) -> Option<Timestamp> {
        self.last_event
            .map(|t| t.plus_millis(MIN_EVENT_INTERVAL_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_follows_a_steady_transfer_and_gives_an_eta() {
        let mut m = ProgressMeter::new(100 << 20, 0);
        // 10 MiB/s for 10 s, a reading every 100 ms.
        for i in 0..=100u64 {
            m.record(Timestamp(1_000 + i * 100), i * (1 << 20));
        }
        let p = m.progress();
        assert_eq!(p.bytes, 100 << 20);
        assert_eq!(p.eta_secs, Some(0));
        let mut m = ProgressMeter::new(100 << 20, 0);
        for i in 0..=50u64 {
            m.record(Timestamp(1_000 + i * 100), i * (1 << 20));
        }
        let p = m.progress();
        let ten = 10 << 20;
        assert!(p.rate.abs_diff(ten) < ten / 100, "{}", p.rate);
        assert_eq!(p.eta_secs, Some(5));
    }

    #[test]
    fn rate_adapts_within_a_few_seconds() {
        let mut m = ProgressMeter::new(u64::MAX / 2, 0);
        let mut bytes = 0;
        let mut t = 0;
        for _ in 0..100 {
            t += 100;
            bytes += 1 << 20; // 10 MiB/s
            m.record(Timestamp(t), bytes);
        }
        for _ in 0..60 {
            t += 100;
            bytes += 1 << 18; // 2.5 MiB/s for 6 s
            m.record(Timestamp(t), bytes);
        }
        let rate = m.progress().rate;
        let slow = 10 << 18;
        assert!(rate < slow + slow / 5, "{rate}");
    }

    #[test]
    fn unknown_rate_has_no_eta_and_regressions_are_ignored() {
        let mut m = ProgressMeter::new(1000, 100);
        assert_eq!(
            m.progress(),
            Progress {
                bytes: 100,
                total: 1000,
                rate: 0,
                eta_secs: None
            }
        );
        m.record(Timestamp(0), 50);
        assert_eq!(m.progress().bytes, 100);
        m.record(Timestamp(0), 5000);
        assert_eq!(m.progress().bytes, 1000);
    }

    #[test]
    fn at_most_four_events_a_second() {
        let mut m = ProgressMeter::new(1000, 0);
        let sent = (0..1000u64)
            .filter(|i| m.event_due(Timestamp(10_000 + i)))
            .count();
        assert_eq!(sent, 4);
        m.event_sent(Timestamp(20_000));
        assert!(!m.event_due(Timestamp(20_100)));
        assert_eq!(m.next_event_at(), Some(Timestamp(20_250)));
        assert!(m.event_due(Timestamp(20_250)));
    }
}
