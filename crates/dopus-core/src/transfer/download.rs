//! One incoming transfer's state machine: planner, resume book and progress meter together.
//!
//! States (docs/files.md): `queued` (no holder to ask yet) → `connecting` (a link to a holder
//! is being made) → `transferring` ⇄ `paused` (user, or a full disk) → `verifying` (every group
//! verified; the plaintext hash is being checked) → `done` | `failed` (with a reason) |
//! `cancelled`. Every state change is persisted and reported at once; progress is reported at
//! most 4 times a second.

use super::planner::{HolderId, PlannedRequest, Planner, PlannerConfig, RequestKey, Withdrawn};
use super::progress::{Progress, ProgressMeter};
use super::resume::{CommitPolicy, ResumeBook};
use crate::store::{Change, Changes, TransferId, TransferReason, TransferState, verified_bytes};
use dopus_proto::transfer::{BlobErrorCode, GroupSet, groups_for_size};
use dopus_types::Timestamp;
use serde::Serialize;
use std::collections::VecDeque;

/// How a download behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DownloadConfig {
    /// Requests, windows and timeouts.
    pub planner: PlannerConfig,
    /// When verified groups are committed.
    pub commit: CommitPolicy,
}

/// What the UI and CLI hear about a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TransferEvent {
    /// Which transfer.
    pub id: TransferId,
    /// Where it stands.
    pub state: TransferState,
    /// Why it is paused, failed or waiting.
    pub reason: Option<TransferReason>,
    /// Bytes, rate and ETA.
    #[serde(flatten)]
    pub progress: Progress,
    /// Holders being asked (download) or peers being served (upload).
    pub sources: usize,
}

/// What the runtime must do for a download.
#[derive(Clone, Debug, PartialEq)]
pub enum DownloadOutput {
    /// Ask `holder` for these groups (a `Get`), and decode its answer for this key.
    Request(PlannedRequest),
    /// Cancel this request on the wire, and drop its decoder.
    Cancel {
        /// The holder asked.
        holder: HolderId,
        /// The request.
        key: RequestKey,
    },
    /// Sync the blob and outboard files, then apply these changes (the resume point moves).
    Commit(Changes),
    /// Apply these changes (state changes).
    Persist(Changes),
    /// Every group is verified: check the plaintext hash and call [`Download::finalized`].
    Finalize,
    /// Tell the UI.
    Event(TransferEvent),
}

/// One download (see the module docs).
#[derive(Clone, Debug)]
pub struct Download {
    id: TransferId,
    size: u64,
    state: TransferState,
    reason: Option<TransferReason>,
    planner: Planner,
    book: ResumeBook,
    meter: ProgressMeter,
    progress_dirty: bool,
    connecting: Vec<HolderId>,
    out: VecDeque<DownloadOutput>,
}

impl Download {
    /// A download of a `size`-byte blob with `verified` groups already durable, in the stored
    /// `state` (a paused or final one stays as it is; any other starts over as queued, or goes
    /// straight to verifying if every group is there).
    pub fn new(
        now: Timestamp,
        id: TransferId,
        size: u64,
        verified: GroupSet,
        state: TransferState,
        reason: Option<TransferReason>,
        config: DownloadConfig,
    ) -> Self {
        let total = groups_for_size(size);
        let planner = Planner::new(total, verified, config.planner);
        let verified = planner.verified().clone();
        let mut d = Self {
            id,
            size,
            state,
            reason,
            meter: ProgressMeter::new(size, verified_bytes(&verified, size)),
            book: ResumeBook::new(verified, config.commit),
            planner,
            progress_dirty: false,
            connecting: Vec::new(),
            out: VecDeque::new(),
        };
        match state {
            TransferState::Paused
            | TransferState::Done
            | TransferState::Failed
            | TransferState::Cancelled => {}
            _ if d.planner.is_complete() => d.set_state(now, TransferState::Verifying, None),
            _ => d.set_state(now, TransferState::Queued, None),
        }
        if d.state == TransferState::Verifying {
            d.out.push_back(DownloadOutput::Finalize);
        }
        d
    }

    /// Which transfer.
    pub fn id(&self) -> TransferId {
        self.id
    }

    /// Where it stands.
    pub fn state(&self) -> TransferState {
        self.state
    }

    /// Why it is paused, failed or waiting.
    pub fn reason(&self) -> Option<TransferReason> {
        self.reason
    }

    /// The planner (holders, verified and missing groups).
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// Bytes, rate and ETA now.
    pub fn progress(&self) -> Progress {
        self.meter.progress()
    }

    /// The event describing the transfer now.
    pub fn event(&self) -> TransferEvent {
        TransferEvent {
            id: self.id,
            state: self.state,
            reason: self.reason,
            progress: self.meter.progress(),
            sources: self.planner.active_holders().count(),
        }
    }

    fn running(&self) -> bool {
        matches!(
            self.state,
            TransferState::Queued | TransferState::Connecting | TransferState::Transferring
        )
    }

    fn set_state(&mut self, now: Timestamp, state: TransferState, reason: Option<TransferReason>) {
        if (self.state, self.reason) == (state, reason) {
            return;
        }
        self.state = state;
        self.reason = reason;
        self.out.push_back(DownloadOutput::Persist(Changes::from(
            Change::SetTransferState {
                id: self.id,
                state,
                reason,
                at: now,
            },
        )));
        self.meter.event_sent(now);
        self.progress_dirty = false;
        self.out.push_back(DownloadOutput::Event(self.event()));
    }

    /// Queued, connecting or transferring, by what the holders are doing.
    fn settle(&mut self, now: Timestamp) {
        if !self.running() {
            return;
        }
        let state = if self.planner.pending_requests() > 0 {
            TransferState::Transferring
        } else if !self.connecting.is_empty() {
            TransferState::Connecting
        } else {
            TransferState::Queued
        };
        let no_sources = state == TransferState::Queued
            && self.planner.active_holders().next().is_none()
            && !self.planner.is_complete()
            && self.planner.dropped_holders() > 0;
        let reason = no_sources.then_some(TransferReason::NoSources);
        self.set_state(now, state, reason);
    }

    fn plan(&mut self, now: Timestamp) {
        if self.running() && self.planner.is_complete() {
            self.commit(now);
            self.set_state(now, TransferState::Verifying, None);
            self.out.push_back(DownloadOutput::Finalize);
            return;
        }
        if self.running() {
            for r in self.planner.plan(now) {
                self.connecting.retain(|h| *h != r.holder);
                self.out.push_back(DownloadOutput::Request(r));
            }
        }
        self.settle(now);
    }

    fn cancel_withdrawn(&mut self, w: Withdrawn) {
        for (holder, key) in w.cancel {
            self.out.push_back(DownloadOutput::Cancel { holder, key });
        }
    }

    /// A link to `holder` is being made.
    pub fn holder_connecting(&mut self, now: Timestamp, holder: HolderId) {
        if !self.connecting.contains(&holder) && self.planner.dropped(holder).is_none() {
            self.connecting.push(holder);
        }
        self.settle(now);
    }

    /// `holder` is linked and has `has` (from its `Have` frame).
    pub fn holder_ready(&mut self, now: Timestamp, holder: HolderId, has: GroupSet) {
        self.connecting.retain(|h| *h != holder);
        self.planner.set_holder(holder, has);
        self.plan(now);
    }

    /// `holder`'s link closed (or its connection attempt failed).
    pub fn holder_gone(&mut self, now: Timestamp, holder: HolderId) {
        self.connecting.retain(|h| *h != holder);
        // The link is gone: nothing to cancel on it.
        let _ = self.planner.remove_holder(holder);
        self.plan(now);
    }

    /// Groups of request `key` arrived and verified (and were written).
    pub fn on_verified(&mut self, now: Timestamp, key: RequestKey, groups: &GroupSet) {
        let before = self.planner.verified().clone();
        if self.planner.on_verified(now, key, groups) == 0 {
            return;
        }
        let fresh = self.planner.verified().difference(&before);
        self.book.on_verified(now, &fresh);
        self.meter
            .record(now, verified_bytes(self.planner.verified(), self.size));
        self.progress_dirty = true;
        if self.book.due(now) {
            self.commit(now);
        }
        self.maybe_progress(now);
        if self.planner.is_complete() {
            // Complete even if the last answer's end was not seen (its holder went away
            // right after the last group): nothing is left to ask for.
            self.plan(now);
        }
    }

    /// The whole answer to `key` arrived.
    pub fn on_request_done(&mut self, now: Timestamp, key: RequestKey) {
        self.planner.on_complete(key);
        self.after_progress(now);
    }

    /// The answer to `key` failed verification at `group`: its holder is dropped.
    pub fn on_bad_data(&mut self, now: Timestamp, key: RequestKey, group: u64) {
        let w = self.planner.on_bad_data(key, group);
        self.cancel_withdrawn(w);
        self.plan(now);
    }

    /// The answer to `key` was malformed (a frame that does not decode, more bytes than the
    /// answer has): its holder is dropped.
    pub fn on_malformed(&mut self, now: Timestamp, key: RequestKey) {
        let w = self.planner.on_malformed(key);
        self.cancel_withdrawn(w);
        self.plan(now);
    }

    /// The holder refused `key`.
    pub fn on_refused(&mut self, now: Timestamp, key: RequestKey, code: BlobErrorCode) {
        let w = self.planner.on_refused(now, key, code);
        self.cancel_withdrawn(w);
        self.plan(now);
    }

    /// Plans more requests, or moves to verifying once every group is there.
    fn after_progress(&mut self, now: Timestamp) {
        self.plan(now);
    }

    fn commit(&mut self, now: Timestamp) {
        if let Some(verified) = self.book.take_commit() {
            self.out.push_back(DownloadOutput::Commit(Changes::from(
                Change::SetTransferProgress {
                    id: self.id,
                    verified,
                    at: now,
                },
            )));
        }
    }

    fn maybe_progress(&mut self, now: Timestamp) {
        if self.progress_dirty && self.meter.event_due(now) {
            self.progress_dirty = false;
            self.out.push_back(DownloadOutput::Event(self.event()));
        }
    }

    /// Pauses (the user, or the disk): every request is cancelled and the verified groups are
    /// committed. Resumable with [`Download::resume`].
    pub fn pause(&mut self, now: Timestamp, reason: TransferReason) {
        if !self.running() {
            return;
        }
        let w = self.planner.withdraw_all();
        self.cancel_withdrawn(w);
        self.commit(now);
        self.meter.reset_rate();
        self.set_state(now, TransferState::Paused, Some(reason));
    }

    /// Writing failed because the disk is full: pause with [`TransferReason::DiskFull`].
    /// Nothing written so far is lost; the group being written is fetched again.
    pub fn disk_full(&mut self, now: Timestamp) {
        self.pause(now, TransferReason::DiskFull);
    }

    /// Resumes a paused download.
    pub fn resume(&mut self, now: Timestamp) {
        if self.state != TransferState::Paused {
            return;
        }
        if self.planner.is_complete() {
            self.set_state(now, TransferState::Verifying, None);
            self.out.push_back(DownloadOutput::Finalize);
            return;
        }
        self.set_state(now, TransferState::Queued, None);
        self.plan(now);
    }

    /// Cancels for good: every request is cancelled; the runtime deletes the partial blob.
    pub fn cancel(&mut self, now: Timestamp, reason: TransferReason) {
        if self.state.is_final() {
            return;
        }
        let w = self.planner.withdraw_all();
        self.cancel_withdrawn(w);
        self.set_state(now, TransferState::Cancelled, Some(reason));
    }

    /// Fails for good (an I/O error other than a full disk, or the sender revoked the file).
    pub fn fail(&mut self, now: Timestamp, reason: TransferReason) {
        if self.state.is_final() {
            return;
        }
        let w = self.planner.withdraw_all();
        self.cancel_withdrawn(w);
        self.commit(now);
        self.set_state(now, TransferState::Failed, Some(reason));
    }

    /// The plaintext check is done: `ok` means it matched the manifest.
    pub fn finalized(&mut self, now: Timestamp, ok: bool) {
        if self.state != TransferState::Verifying {
            return;
        }
        if ok {
            self.set_state(now, TransferState::Done, None);
        } else {
            self.set_state(
                now,
                TransferState::Failed,
                Some(TransferReason::HashMismatch),
            );
        }
    }

    /// Time passed: stalled requests, due commits, a held-back progress event, backoffs.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.running() {
            let w = self.planner.handle_timeout(now);
            if !w.cancel.is_empty() {
                self.cancel_withdrawn(w);
            }
            if self.book.due(now) {
                self.commit(now);
            }
            self.maybe_progress(now);
            self.plan(now);
        }
    }

    /// When to call [`Download::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if !self.running() {
            return None;
        }
        let progress = self
            .progress_dirty
            .then(|| self.meter.next_event_at())
            .flatten();
        [self.planner.next_timeout(), self.book.next_due(), progress]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<DownloadOutput> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::planner::PlannerConfig;
    use dopus_proto::transfer::CHUNK_GROUP_BYTES;
    use uuid::Uuid;

    const G: u64 = CHUNK_GROUP_BYTES;

    fn config() -> DownloadConfig {
        DownloadConfig {
            planner: PlannerConfig {
                request_groups: 4,
                window: 2,
                ..PlannerConfig::default()
            },
            commit: CommitPolicy {
                every_bytes: 8 * G,
                every_ms: 1_000,
            },
        }
    }

    fn drain(d: &mut Download) -> Vec<DownloadOutput> {
        std::iter::from_fn(|| d.poll_output()).collect()
    }

    fn requests(out: &[DownloadOutput]) -> Vec<PlannedRequest> {
        out.iter()
            .filter_map(|o| match o {
                DownloadOutput::Request(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn states(out: &[DownloadOutput]) -> Vec<(TransferState, Option<TransferReason>)> {
        out.iter()
            .filter_map(|o| match o {
                DownloadOutput::Persist(c) => c.iter().find_map(|c| match c {
                    Change::SetTransferState { state, reason, .. } => Some((*state, *reason)),
                    _ => None,
                }),
                _ => None,
            })
            .collect()
    }

    fn commits(out: &[DownloadOutput]) -> Vec<GroupSet> {
        out.iter()
            .filter_map(|o| match o {
                DownloadOutput::Commit(c) => c.iter().find_map(|c| match c {
                    Change::SetTransferProgress { verified, .. } => Some(verified.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .collect()
    }

    fn download(size: u64, verified: GroupSet, state: TransferState) -> Download {
        Download::new(
            Timestamp(0),
            TransferId(Uuid::from_u128(1)),
            size,
            verified,
            state,
            None,
            config(),
        )
    }

    /// Serves every request in full, in order, at 1 ms per group, until nothing is in flight.
    fn serve_all(
        d: &mut Download,
        now: &mut u64,
        mut out: Vec<DownloadOutput>,
    ) -> Vec<DownloadOutput> {
        let mut seen = Vec::new();
        loop {
            let reqs = requests(&out);
            seen.extend(out);
            if reqs.is_empty() {
                return seen;
            }
            for r in reqs {
                for g in r.groups.ranges().iter().flat_map(|r| r.clone()) {
                    *now += 1;
                    d.on_verified(Timestamp(*now), r.key, &GroupSet::from_range(g..g + 1));
                }
                d.on_request_done(Timestamp(*now), r.key);
            }
            out = drain(d);
        }
    }

    #[test]
    fn a_download_runs_through_its_states_and_commits_in_batches() {
        let size = 20 * G + 100;
        let mut d = download(size, GroupSet::new(), TransferState::Queued);
        assert!(drain(&mut d).is_empty());
        d.holder_connecting(Timestamp(1), HolderId(1));
        assert_eq!(states(&drain(&mut d)), [(TransferState::Connecting, None)]);
        d.holder_ready(Timestamp(2), HolderId(1), GroupSet::from_range(0..21));
        let out = drain(&mut d);
        assert_eq!(states(&out), [(TransferState::Transferring, None)]);
        assert_eq!(requests(&out).len(), 2);
        let mut now = 2;
        let all = serve_all(&mut d, &mut now, out);
        assert_eq!(
            states(&all),
            [
                (TransferState::Transferring, None),
                (TransferState::Verifying, None)
            ]
        );
        // 21 groups, a commit per 8: 8, 16, then the rest at completion.
        let c = commits(&all);
        assert_eq!(
            c,
            [
                GroupSet::from_range(0..8),
                GroupSet::from_range(0..16),
                GroupSet::from_range(0..21)
            ]
        );
        assert_eq!(all.last(), Some(&DownloadOutput::Finalize));
        d.finalized(Timestamp(100), true);
        assert_eq!(states(&drain(&mut d)), [(TransferState::Done, None)]);
        assert_eq!(d.progress().bytes, size);
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn a_plaintext_mismatch_fails_the_download() {
        let mut d = download(G, GroupSet::from_range(0..1), TransferState::Transferring);
        let out = drain(&mut d);
        assert_eq!(states(&out), [(TransferState::Verifying, None)]);
        assert_eq!(out.last(), Some(&DownloadOutput::Finalize));
        d.finalized(Timestamp(1), false);
        assert_eq!(
            states(&drain(&mut d)),
            [(TransferState::Failed, Some(TransferReason::HashMismatch))]
        );
    }

    #[test]
    fn pause_cancels_and_commits_and_resume_asks_for_the_rest() {
        let mut d = download(
            40 * G,
            GroupSet::from_range(0..10),
            TransferState::Transferring,
        );
        assert_eq!(states(&drain(&mut d)), [(TransferState::Queued, None)]);
        d.holder_ready(Timestamp(1), HolderId(1), GroupSet::from_range(0..40));
        let reqs = requests(&drain(&mut d));
        assert_eq!(reqs[0].groups, GroupSet::from_range(10..14));
        d.on_verified(Timestamp(2), reqs[0].key, &GroupSet::from_range(10..12));
        d.disk_full(Timestamp(3));
        let out = drain(&mut d);
        let cancelled: Vec<RequestKey> = out
            .iter()
            .filter_map(|o| match o {
                DownloadOutput::Cancel { key, .. } => Some(*key),
                _ => None,
            })
            .collect();
        assert_eq!(cancelled, [reqs[0].key, reqs[1].key]);
        assert_eq!(commits(&out), [GroupSet::from_range(0..12)]);
        assert_eq!(
            states(&out),
            [(TransferState::Paused, Some(TransferReason::DiskFull))]
        );
        // Paused: no requests, no timers.
        d.holder_ready(Timestamp(4), HolderId(1), GroupSet::from_range(0..40));
        assert!(requests(&drain(&mut d)).is_empty());
        assert_eq!(d.poll_timeout(), None);
        d.resume(Timestamp(5));
        let out = drain(&mut d);
        assert_eq!(
            states(&out),
            [
                (TransferState::Queued, None),
                (TransferState::Transferring, None)
            ]
        );
        assert_eq!(requests(&out)[0].groups, GroupSet::from_range(12..16));
    }

    #[test]
    fn a_liar_is_dropped_and_with_no_one_left_the_download_waits_for_sources() {
        let mut d = download(40 * G, GroupSet::new(), TransferState::Queued);
        d.holder_ready(Timestamp(1), HolderId(9), GroupSet::from_range(0..40));
        let reqs = requests(&drain(&mut d));
        d.on_verified(Timestamp(2), reqs[0].key, &GroupSet::from_range(0..1));
        d.on_bad_data(Timestamp(3), reqs[0].key, 1);
        let out = drain(&mut d);
        let cancelled = out
            .iter()
            .filter(|o| matches!(o, DownloadOutput::Cancel { .. }))
            .count();
        assert_eq!(cancelled, 2);
        assert_eq!(
            states(&out),
            [(TransferState::Queued, Some(TransferReason::NoSources))]
        );
        assert_eq!(
            d.planner().dropped(HolderId(9)),
            Some(crate::transfer::DropReason::BadData { group: 1 })
        );
        // An honest holder appears and the rest is fetched from it.
        d.holder_ready(Timestamp(4), HolderId(2), GroupSet::from_range(0..40));
        let out = drain(&mut d);
        assert_eq!(requests(&out)[0].groups, GroupSet::from_range(1..5));
        assert_eq!(requests(&out)[0].holder, HolderId(2));
    }

    #[test]
    fn progress_events_are_at_most_four_a_second() {
        let mut d = download(10_000 * G, GroupSet::new(), TransferState::Queued);
        d.holder_ready(Timestamp(0), HolderId(1), GroupSet::from_range(0..10_000));
        let mut now = 0;
        let mut events = 0;
        let mut out = drain(&mut d);
        // 2,000 groups at 1 ms each: 2 s of transfer.
        for _ in 0..250 {
            events += out
                .iter()
                .filter(|o| matches!(o, DownloadOutput::Event(e) if e.state == TransferState::Transferring))
                .count();
            let reqs = requests(&out);
            for r in reqs {
                for g in r.groups.ranges().iter().flat_map(|r| r.clone()) {
                    now += 1;
                    d.on_verified(Timestamp(now), r.key, &GroupSet::from_range(g..g + 1));
                }
                d.on_request_done(Timestamp(now), r.key);
            }
            out = drain(&mut d);
        }
        assert_eq!(now, 2_000);
        assert!((8..=9).contains(&events), "{events} events in 2 s");
        let e = d.event();
        assert_eq!(e.sources, 1);
        assert!(e.progress.rate > 0 && e.progress.eta_secs.is_some());
    }

    #[test]
    fn a_download_completes_when_its_last_holder_leaves_right_after_the_last_group() {
        let mut d = download(4 * G, GroupSet::new(), TransferState::Queued);
        d.holder_ready(Timestamp(0), HolderId(1), GroupSet::from_range(0..4));
        let r = requests(&drain(&mut d));
        d.on_verified(Timestamp(1), r[0].key, &GroupSet::from_range(0..4));
        d.holder_gone(Timestamp(2), HolderId(1));
        let out = drain(&mut d);
        assert_eq!(states(&out), [(TransferState::Verifying, None)]);
        assert_eq!(out.last(), Some(&DownloadOutput::Finalize));
        assert_eq!(commits(&out), [GroupSet::from_range(0..4)]);
    }

    #[test]
    fn cancel_is_final() {
        let mut d = download(10 * G, GroupSet::new(), TransferState::Queued);
        d.holder_ready(Timestamp(0), HolderId(1), GroupSet::from_range(0..10));
        drain(&mut d);
        d.cancel(Timestamp(1), TransferReason::User);
        let out = drain(&mut d);
        assert_eq!(
            states(&out),
            [(TransferState::Cancelled, Some(TransferReason::User))]
        );
        d.resume(Timestamp(2));
        d.holder_ready(Timestamp(3), HolderId(1), GroupSet::from_range(0..10));
        assert!(drain(&mut d).is_empty());
    }
}
