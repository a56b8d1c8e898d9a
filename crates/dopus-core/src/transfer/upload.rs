//! One outgoing transfer's state: `preparing` (hashing and encrypting to get the blob id) →
//! `queued` (announced; waiting for the receiver to fetch) → `transferring` (being served) →
//! `done` (the receiver said it has the whole file) | `failed` (the file changed on disk) |
//! `cancelled` (we withdrew it, or the receiver gave up).
//!
//! Progress is the distinct groups served so far: in a DM that is what the receiver got (a
//! resumed download asks only for what it lacks); in a channel, where many members fetch and
//! serve each other, it is only what this node contributed.

use super::download::TransferEvent;
use super::progress::ProgressMeter;
use crate::store::{Change, Changes, TransferId, TransferReason, TransferState, verified_bytes};
use dopus_proto::transfer::GroupSet;
use dopus_types::Timestamp;
use std::collections::VecDeque;

/// What the runtime must do for an upload.
#[derive(Clone, Debug, PartialEq)]
pub enum UploadOutput {
    /// Apply these changes (state changes).
    Persist(Changes),
    /// Tell the UI.
    Event(TransferEvent),
}

/// One upload (see the module docs).
#[derive(Clone, Debug)]
pub struct Upload {
    id: TransferId,
    size: u64,
    state: TransferState,
    reason: Option<TransferReason>,
    served: GroupSet,
    peers: usize,
    meter: ProgressMeter,
    progress_dirty: bool,
    out: VecDeque<UploadOutput>,
}

impl Upload {
    /// An upload of a `size`-byte file in the stored `state`.
    pub fn new(
        id: TransferId,
        size: u64,
        state: TransferState,
        reason: Option<TransferReason>,
    ) -> Self {
        Self {
            id,
            size,
            state,
            reason,
            served: GroupSet::new(),
            peers: 0,
            meter: ProgressMeter::new(size, 0),
            progress_dirty: false,
            out: VecDeque::new(),
        }
    }

    /// Where it stands.
    pub fn state(&self) -> TransferState {
        self.state
    }

    /// Why it failed or was cancelled.
    pub fn reason(&self) -> Option<TransferReason> {
        self.reason
    }

    /// The event describing the upload now.
    pub fn event(&self) -> TransferEvent {
        TransferEvent {
            id: self.id,
            state: self.state,
            reason: self.reason,
            progress: self.meter.progress(),
            sources: self.peers,
        }
    }

    fn set_state(&mut self, now: Timestamp, state: TransferState, reason: Option<TransferReason>) {
        if (self.state, self.reason) == (state, reason) || self.state.is_final() {
            return;
        }
        self.state = state;
        self.reason = reason;
        self.out.push_back(UploadOutput::Persist(Changes::from(
            Change::SetTransferState {
                id: self.id,
                state,
                reason,
                at: now,
            },
        )));
        self.meter.event_sent(now);
        self.progress_dirty = false;
        self.out.push_back(UploadOutput::Event(self.event()));
    }

    /// The blob id and outboard are ready and the manifest went out.
    pub fn announced(&mut self, now: Timestamp) {
        if self.state == TransferState::Preparing {
            self.set_state(now, TransferState::Queued, None);
        }
    }

    /// `peers` links are being served this blob now.
    pub fn serving(&mut self, now: Timestamp, peers: usize) {
        self.peers = peers;
        match (self.state, peers) {
            (TransferState::Queued, 1..) => self.set_state(now, TransferState::Transferring, None),
            (TransferState::Transferring, 0) => self.set_state(now, TransferState::Queued, None),
            _ => {}
        }
    }

    /// These groups were sent to a peer.
    pub fn on_served(&mut self, now: Timestamp, groups: &GroupSet) {
        self.served = self.served.union(groups);
        self.meter
            .record(now, verified_bytes(&self.served, self.size));
        self.progress_dirty = true;
        if self.meter.event_due(now) {
            self.progress_dirty = false;
            self.out.push_back(UploadOutput::Event(self.event()));
        }
    }

    /// The receiver has the whole file (its `file_have`).
    pub fn received(&mut self, now: Timestamp) {
        self.set_state(now, TransferState::Done, None);
    }

    /// The file changed on disk after it was announced: it is never served again.
    pub fn source_changed(&mut self, now: Timestamp) {
        self.set_state(
            now,
            TransferState::Failed,
            Some(TransferReason::SourceChanged),
        );
    }

    /// We withdrew the file, or the receiver gave up.
    pub fn cancel(&mut self, now: Timestamp, reason: TransferReason) {
        self.set_state(now, TransferState::Cancelled, Some(reason));
    }

    /// Sends a held-back progress event if one is due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.progress_dirty && self.meter.event_due(now) {
            self.progress_dirty = false;
            self.out.push_back(UploadOutput::Event(self.event()));
        }
    }

    /// When to call [`Upload::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.progress_dirty
            .then(|| self.meter.next_event_at())
            .flatten()
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<UploadOutput> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn lifecycle_and_final_states_stick() {
        let mut u = Upload::new(
            TransferId(Uuid::from_u128(1)),
            1 << 20,
            TransferState::Preparing,
            None,
        );
        u.announced(Timestamp(1));
        assert_eq!(u.state(), TransferState::Queued);
        u.serving(Timestamp(2), 1);
        assert_eq!(u.state(), TransferState::Transferring);
        u.on_served(Timestamp(3), &GroupSet::from_range(0..32));
        assert_eq!(u.event().progress.bytes, 1 << 19);
        u.serving(Timestamp(4), 0);
        assert_eq!(u.state(), TransferState::Queued);
        u.source_changed(Timestamp(5));
        assert_eq!(
            (u.state(), u.reason()),
            (TransferState::Failed, Some(TransferReason::SourceChanged))
        );
        u.received(Timestamp(6));
        assert_eq!(u.state(), TransferState::Failed);
        let persisted: Vec<TransferState> = std::iter::from_fn(|| u.poll_output())
            .filter_map(|o| match o {
                UploadOutput::Persist(c) => c.iter().find_map(|c| match c {
                    Change::SetTransferState { state, .. } => Some(*state),
                    _ => None,
                }),
                UploadOutput::Event(_) => None,
            })
            .collect();
        assert_eq!(
            persisted,
            [
                TransferState::Queued,
                TransferState::Transferring,
                TransferState::Queued,
                TransferState::Failed
            ]
        );
    }
}
