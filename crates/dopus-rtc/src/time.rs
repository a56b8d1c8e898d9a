//! Time arithmetic shared by the sans-IO parts (engine, STUN gatherer, TURN client, config).

use std::time::{Duration, Instant};

/// `base + d` without the panic `Instant + Duration` has on overflow: a configured timeout of
/// `Duration::MAX` means "never", not a crash.
pub(crate) fn later(base: Instant, d: Duration) -> Instant {
    base.checked_add(d)
        .or_else(|| base.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(base)
}
