//! Preparing a file to send (docs/files.md, "Preparing"): `POST …/files` answers at once with
//! the transfer in state `preparing`; a task hashes and encrypts the file on a blocking thread,
//! reporting progress as `transfer_progress` events (at most 4 a second, and at once on the
//! end), then announces it through the machine under the id it reserved. A failure (the file
//! vanished, unreadable, the disk full, the file changed while read) ends the transfer in
//! `failed` with a reason; `cancel` stops it between two reads.
//!
//! A transfer in this state is not in the store yet (its manifest does not exist until the
//! pass ends): it lives in a per-node table ([`preparing`]) that `GET /transfers` merges in.
//! One that failed or was cancelled is kept in the store as it was last shown (the setting
//! [`FAILURES_KEY`], the newest [`FAILURES_KEPT`]; [`keep_failure`]), so it is still listed,
//! with its reason, after a restart.

use crate::api::dto;
use dopus_core::store::{Change, Store, StoreError, TransferId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shortest time between two progress events of one transfer.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// One transfer being prepared (or whose preparing failed).
#[derive(Debug)]
pub struct Entry {
    /// As the API shows it.
    pub transfer: dto::Transfer,
    /// Set by `cancel`; the pass stops at its next read.
    pub cancel: Arc<AtomicBool>,
    /// The file (the sender's UI may show it while it is prepared).
    pub source: PathBuf,
}

/// The transfers of one node in (or failed in) state `preparing`.
pub type Preparing = Arc<Mutex<BTreeMap<TransferId, Entry>>>;

/// The table of the node whose blob directory is `blobs` (one per node; a process may run
/// several nodes in tests, hence the key).
pub fn preparing(blobs: &Path) -> Preparing {
    static ALL: std::sync::OnceLock<Mutex<BTreeMap<PathBuf, Preparing>>> =
        std::sync::OnceLock::new();
    let all = ALL.get_or_init(Default::default);
    let mut all = all.lock().unwrap_or_else(|e| e.into_inner());
    all.entry(blobs.to_path_buf()).or_default().clone()
}

/// Locks a table, recovering from a panicked holder (the entries stay consistent: each
/// update is one assignment).
pub fn lock(p: &Preparing) -> std::sync::MutexGuard<'_, BTreeMap<TransferId, Entry>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decides which progress reports become events: the first, then at most one per
/// [`PROGRESS_EVERY`], and always the last (all bytes read).
#[derive(Debug)]
pub struct Throttle {
    started: Instant,
    last: Option<Instant>,
    total: u64,
}

impl Throttle {
    /// For a pass over `total` bytes starting at `now`.
    pub fn new(now: Instant, total: u64) -> Self {
        Self {
            started: now,
            last: None,
            total,
        }
    }

    /// The progress to report for `bytes` read at `now`, if one is due.
    pub fn due(&mut self, now: Instant, bytes: u64) -> Option<dto::TransferProgress> {
        let end = bytes >= self.total;
        let due = end
            || self
                .last
                .is_none_or(|last| now.duration_since(last) >= PROGRESS_EVERY);
        if !due {
            return None;
        }
        self.last = Some(now);
        let secs = now.duration_since(self.started).as_secs_f64();
        let rate = if secs > 0.0 {
            (bytes as f64 / secs) as u64
        } else {
            0
        };
        let eta_secs = (rate > 0).then(|| self.total.saturating_sub(bytes).div_ceil(rate));
        Some(dto::TransferProgress {
            id: String::new(),
            state: dto::TransferState::Preparing,
            reason: None,
            bytes,
            total: self.total,
            rate,
            eta_secs,
            sources: 0,
            dropped: Vec::new(),
            wire_bytes: 0,
        })
    }
}

/// The setting that keeps the transfers whose preparing failed or was cancelled: a JSON array
/// of [`dto::Transfer`], oldest first (the store is encrypted at rest, like the names in it).
pub const FAILURES_KEY: &str = "files.prepare_failures";

/// How many such transfers are kept (the oldest go first).
pub const FAILURES_KEPT: usize = 200;

/// The transfers whose preparing failed or was cancelled, as kept. A value this build cannot
/// read counts as none (it is replaced by the next failure).
pub fn failures(store: &dyn Store) -> Result<Vec<dto::Transfer>, StoreError> {
    Ok(store
        .setting(FAILURES_KEY)?
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default())
}

/// Keeps a transfer whose preparing failed or was cancelled (replacing one with its id), and
/// at most [`FAILURES_KEPT`] of them.
pub fn keep_failure(store: &mut dyn Store, mut t: dto::Transfer) -> Result<(), StoreError> {
    t.progress = None;
    let mut all = failures(store)?;
    all.retain(|k| k.id != t.id);
    all.push(t);
    let extra = all.len().saturating_sub(FAILURES_KEPT);
    all.drain(..extra);
    let value = serde_json::to_string(&all).map_err(|e| StoreError::Backend(Box::new(e)))?;
    store.apply_one(Change::SetSetting {
        key: FAILURES_KEY.into(),
        value: Some(value),
    })?;
    Ok(())
}

/// Why preparing failed, as the API says it.
pub fn reason_of(e: &dopus_files::PrepareError) -> dto::TransferReason {
    use dopus_files::PrepareError as E;
    use std::io::ErrorKind as K;
    match e {
        E::Io(io) => match io.kind() {
            K::NotFound => dto::TransferReason::SourceMissing,
            K::PermissionDenied | K::IsADirectory | K::InvalidData => {
                dto::TransferReason::Unreadable
            }
            K::StorageFull | K::QuotaExceeded => dto::TransferReason::DiskFull,
            _ => dto::TransferReason::Io,
        },
        E::TooLarge | E::Changed => dto::TransferReason::SourceChanged,
        E::Cancelled => dto::TransferReason::User,
    }
}

/// Whether `cancel` was asked.
pub fn cancelled(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

/// Debug builds only: `DOPUS_TEST_PREPARE_DELAY_MS=N` sleeps N ms before the file is opened
/// and after every MiB read (process tests of the `preparing` state, of a file that vanishes
/// meanwhile, and of cancelling it).
pub fn test_delay() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("DOPUS_TEST_PREPARE_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms.min(10_000)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_reported_at_most_four_times_a_second_and_always_at_the_end() {
        let t0 = Instant::now();
        let mut th = Throttle::new(t0, 100 << 20);
        let mut events = Vec::new();
        // A report every 10 ms for 2 s: 200 reports, the last one at the end.
        for i in 1..=200u64 {
            let now = t0 + Duration::from_millis(10 * i);
            let bytes = (100 << 20) * i / 200;
            if let Some(p) = th.due(now, bytes) {
                events.push((now, p));
            }
        }
        assert!(events.len() <= 2 * 4 + 1, "{} events in 2 s", events.len());
        assert!(events.len() >= 8, "{} events in 2 s", events.len());
        for w in events.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            assert!(b.1.bytes > a.1.bytes);
            if b.1.bytes < b.1.total {
                assert!(b.0.duration_since(a.0) >= PROGRESS_EVERY);
            }
        }
        let last = &events.last().unwrap().1;
        assert_eq!(last.bytes, last.total);
        assert_eq!(last.eta_secs, Some(0));
        assert_eq!(last.state, dto::TransferState::Preparing);
        // 100 MiB in 2 s.
        assert_eq!(last.rate, 50 << 20);
    }

    #[test]
    fn failures_have_reasons() {
        use dopus_files::PrepareError as E;
        use std::io::{Error, ErrorKind as K};
        let r = |e| reason_of(&e);
        assert_eq!(
            r(E::Io(Error::from(K::NotFound))),
            dto::TransferReason::SourceMissing
        );
        assert_eq!(
            r(E::Io(Error::from(K::PermissionDenied))),
            dto::TransferReason::Unreadable
        );
        assert_eq!(
            r(E::Io(Error::from(K::StorageFull))),
            dto::TransferReason::DiskFull
        );
        assert_eq!(r(E::Changed), dto::TransferReason::SourceChanged);
        assert_eq!(r(E::Cancelled), dto::TransferReason::User);
        assert_eq!(r(E::Io(Error::other("x"))), dto::TransferReason::Io);
    }
}
