//! Recovering a broken Olm session (for example one side restored from an old copy), at no
//! more cost than the threat model promises.
//!
//! Protocol flow (docs/e2e.md, "Recovery"):
//! - an envelope cannot be decrypted (no session, unknown one-time key, a message key that is
//!   gone, or a MAC failure on every session): its id is noted with the time of *its own*
//!   failure;
//! - an envelope from the peer that opens on a session we already had forgives every failure
//!   noted before it: the session works, so those were stale or tampered copies (a reliable
//!   one is repaired by the sender's retries on that session, an ephemeral one is not worth a
//!   reset); only a peer whose envelopes keep failing has a broken session;
//! - each failed id gets its own grace of [`RESET_DELAY_MS`]: an envelope that cannot be
//!   decrypted is often a stale or tampered copy of something the sender re-sends anyway (its
//!   retries are 1, 2, 4 s apart); an id taken in meanwhile costs nothing. A server that
//!   flips one copy after another buys no reset: every flip starts its own clock;
//! - when some id is still missing after its grace, and no reset with that peer was asked for
//!   in the last [`RESET_THROTTLE_MS`], we fetch the sender's bundle, start a *fresh* outbound
//!   session and queue a `SessionReset { failed: [ids] }`, which goes out as a pre-key message
//!   on that session; the user is told;
//! - the sender decrypts it and makes every envelope still in its outbox for us due at once,
//!   so they are re-sealed on the new session; receivers deduplicate by id.
//!
//! Envelopes that are misaddressed or reflected (claiming to come from us) never get here:
//! they are dropped before decryption (`receive`).

use super::{Event, MachineError, NodeMachine};
use crate::store::{Change, Changes, EnvelopeId, Store, StoreError};
use dopus_proto::peer::MessageId;
use dopus_types::{Timestamp, UserId};
use std::collections::BTreeMap;

/// At most one reset request per peer in this window.
pub const RESET_THROTTLE_MS: u64 = 30_000;
/// How long an envelope that could not be decrypted may stay missing before it may cause a
/// reset, counted from its own failure.
pub const RESET_DELAY_MS: u64 = 5_000;
/// Most failed ids remembered per peer (and named in one reset).
pub const MAX_FAILED_IDS: usize = 64;

/// The recovery bookkeeping: failed ids per peer with their own failure time, and when each
/// peer was last asked to reset.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    failed: BTreeMap<UserId, BTreeMap<MessageId, Timestamp>>,
    last_reset: BTreeMap<UserId, Timestamp>,
}

impl Recovery {
    /// Notes an envelope from `peer` that could not be decrypted (its first failure counts).
    pub(super) fn failed(&mut self, now: Timestamp, peer: UserId, id: MessageId) {
        let ids = self.failed.entry(peer).or_default();
        if ids.len() < MAX_FAILED_IDS || ids.contains_key(&id) {
            ids.entry(id).or_insert(now);
        }
    }

    /// An envelope from `peer` was taken in: if it had failed before, it is repaired.
    pub(super) fn repaired(&mut self, peer: &UserId, id: &MessageId) {
        if let Some(ids) = self.failed.get_mut(peer) {
            ids.remove(id);
            if ids.is_empty() {
                self.failed.remove(peer);
            }
        }
    }

    /// An envelope from `peer` was decrypted on a session we already had, after the failures
    /// noted so far: the session works, so those failures were stale or tampered copies, not
    /// a broken session. A reliable one is repaired by its sender's retries, which are sealed
    /// on that working session; an ephemeral one (a receipt, typing, a connection signal) is
    /// never re-sent and would otherwise cost a reset for nothing. Forgets them.
    pub(super) fn session_works(&mut self, peer: &UserId) {
        self.failed.remove(peer);
    }

    /// When the next failed id's grace (or a throttle) ends.
    pub(super) fn next_check(&self) -> Option<Timestamp> {
        self.failed
            .iter()
            .filter_map(|(peer, ids)| {
                let grace = ids.values().min()?.plus_millis(RESET_DELAY_MS);
                Some(self.throttle_end(peer).map_or(grace, |t| grace.max(t)))
            })
            .min()
    }

    fn throttle_end(&self, peer: &UserId) -> Option<Timestamp> {
        self.last_reset
            .get(peer)
            .map(|t| t.plus_millis(RESET_THROTTLE_MS))
    }

    /// The peers for which a reset is due at `now`, with the ids still missing after their own
    /// grace (ids the store has processed meanwhile are forgotten).
    fn due(
        &mut self,
        now: Timestamp,
        store: &dyn Store,
    ) -> Result<Vec<(UserId, Vec<MessageId>)>, StoreError> {
        let mut due = Vec::new();
        let peers: Vec<UserId> = self.failed.keys().copied().collect();
        for peer in peers {
            if self.throttle_end(&peer).is_some_and(|t| t > now) {
                continue;
            }
            let Some(ids) = self.failed.get_mut(&peer) else {
                continue;
            };
            let mut processed = Vec::new();
            for id in ids.keys() {
                if store.is_processed(&EnvelopeId(*id.as_uuid()))? {
                    processed.push(*id);
                }
            }
            for id in processed {
                ids.remove(&id);
            }
            let expired: Vec<MessageId> = ids
                .iter()
                .filter(|(_, at)| at.plus_millis(RESET_DELAY_MS) <= now)
                .map(|(id, _)| *id)
                .collect();
            if ids.is_empty() {
                self.failed.remove(&peer);
            }
            if expired.is_empty() {
                continue;
            }
            // The reset names every id still missing, expired or not: the sender re-sends
            // everything unacknowledged anyway.
            let missing: Vec<MessageId> = self
                .failed
                .remove(&peer)
                .map(|ids| ids.into_keys().collect())
                .unwrap_or_default();
            self.last_reset.insert(peer, now);
            due.push((peer, missing));
        }
        Ok(due)
    }
}

impl NodeMachine {
    /// Starts the resets that are due: a fresh bundle for each peer, then (when it comes) a
    /// fresh session and a `SessionReset` on it.
    pub(super) fn recovery_due(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        // Without the server no fresh bundle can come: a reset started now would spend the
        // peer's throttle window on nothing and wait 30 s more once the server is back. The
        // ids keep their failure times; the first batch after the connection returns starts
        // the reset.
        if self.signaling != super::SignalingState::Connected {
            return Ok(());
        }
        for (peer, missing) in self.recovery.due(now, store)? {
            tracing::info!(peer = %peer.short(), missing = missing.len(), "envelopes still cannot be decrypted; starting a new session");
            self.fetch_bundle(now, peer, Some(missing));
        }
        Ok(())
    }

    /// The fresh sessions for a reset are started: queue the reset itself.
    pub(super) fn queue_reset(
        &mut self,
        now: Timestamp,
        peer: UserId,
        failed: Vec<MessageId>,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let out = crate::chat::Outgoing {
            peer,
            id: EnvelopeId(self.new_id(now).0),
            conversation: dopus_proto::peer::Conversation::Direct,
            sent_at: now,
            content: dopus_proto::peer::Content::Session(
                dopus_proto::peer::SessionContent::SessionReset { failed },
            ),
            reliable: true,
        };
        self.queue_reliable(now, &out, store)?;
        self.emit(Event::SessionReset {
            user: peer,
            resent: 0,
        });
        Ok(())
    }

    /// The peer started a fresh session with us: re-send everything still unacknowledged.
    pub(super) fn on_reset(
        &mut self,
        now: Timestamp,
        peer: UserId,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let entries = store.outbox_for_peer(&peer, 10_000)?;
        let changes: Changes = entries
            .iter()
            .map(|e| Change::OutboxReschedule {
                id: e.id,
                peer,
                attempts: e.attempts,
                next_attempt_at: now,
            })
            .collect();
        store.apply(changes)?;
        tracing::info!(peer = %peer.short(), resent = entries.len(), "peer replaced a broken session; re-sending");
        self.outbox_wake = true;
        self.stalled.remove(&peer);
        self.emit(Event::SessionReset {
            user: peer,
            resent: entries.len(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::store::conformance::user;

    fn id(n: u64) -> MessageId {
        MessageId::new_v7(Timestamp(n), [n as u8; 10])
    }

    /// The case a hostile server tried: one flip repaired by its retry, a second flip 4.5 s
    /// later repaired 0.5 s after the first one's grace ended. No reset.
    #[test]
    fn each_failed_id_has_its_own_grace() {
        let store = MemoryStore::new();
        let mut r = Recovery::default();
        let alice = user(1);
        r.failed(Timestamp(0), alice, id(1));
        r.repaired(&alice, &id(1));
        r.failed(Timestamp(4_500), alice, id(2));
        assert_eq!(r.next_check(), Some(Timestamp(9_500)));
        assert!(r.due(Timestamp(5_000), &store).unwrap().is_empty());
        r.repaired(&alice, &id(2));
        assert_eq!(r.next_check(), None);
        assert!(r.due(Timestamp(9_500), &store).unwrap().is_empty());
        // A real loss: still missing after its grace, once per throttle window.
        r.failed(Timestamp(10_000), alice, id(3));
        assert!(r.due(Timestamp(14_999), &store).unwrap().is_empty());
        assert_eq!(
            r.due(Timestamp(15_000), &store).unwrap(),
            vec![(alice, vec![id(3)])]
        );
        r.failed(Timestamp(16_000), alice, id(4));
        assert!(
            r.due(Timestamp(21_000), &store).unwrap().is_empty(),
            "throttled"
        );
        assert_eq!(r.next_check(), Some(Timestamp(45_000)));
        assert_eq!(
            r.due(Timestamp(45_000), &store).unwrap(),
            vec![(alice, vec![id(4)])]
        );
    }

    /// A flipped receipt is never re-sent: the next envelope that opens on the same session
    /// shows the session works, and the failure is forgotten. A peer whose envelopes all fail
    /// (a broken session) still gets its reset.
    #[test]
    fn a_working_session_forgives_earlier_failures_only() {
        let store = MemoryStore::new();
        let mut r = Recovery::default();
        let (alice, bob) = (user(1), user(2));
        r.failed(Timestamp(0), alice, id(1));
        r.failed(Timestamp(0), bob, id(2));
        r.session_works(&alice);
        r.failed(Timestamp(100), alice, id(3));
        let due: BTreeMap<UserId, Vec<MessageId>> = r
            .due(Timestamp(5_100), &store)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            due,
            BTreeMap::from([(alice, vec![id(3)]), (bob, vec![id(2)])])
        );
    }

    #[test]
    fn ids_processed_meanwhile_are_forgotten() {
        let mut store = MemoryStore::new();
        let mut r = Recovery::default();
        let bob = user(2);
        r.failed(Timestamp(0), bob, id(1));
        store
            .apply_one(Change::MarkProcessed {
                id: EnvelopeId(*id(1).as_uuid()),
                received_at: Timestamp(1),
            })
            .unwrap();
        assert!(r.due(Timestamp(10_000), &store).unwrap().is_empty());
        assert_eq!(r.next_check(), None);
        for n in 0..200 {
            r.failed(Timestamp(20_000), bob, id(100 + n));
        }
        let due = r.due(Timestamp(30_000), &store).unwrap();
        assert_eq!(due[0].1.len(), MAX_FAILED_IDS);
    }
}
