//! Getting contents out: reliable ones through the outbox, ephemeral ones at once; sessions
//! established on demand from the peer's verified key bundles.
//!
//! Every seal happens in [`NodeMachine::prepare`], after the batch's envelopes were taken in
//! and their sessions saved, so a session is never advanced from two states at once. The
//! advanced sessions and each copy's next attempt are written into the batch's transaction;
//! the envelopes leave (as [`Transmit`]s, one per peer and route, in sealing order) only after
//! the commit.

use super::{
    ConnectionRequest, Delivery, Event, MachineError, NodeMachine, Output, Sealed,
    SignalingRequest, SignalingState, Transmit,
};
use crate::chat::Outgoing;
use crate::e2e::Draft;
use crate::outbox::{self, Queued, Route, Run};
use crate::store::{
    Change, Changes, DeliveryState, EnvelopeId, MessageId, OlmSessionRecord, OutboxEntry,
    PeerDevice, Store, StoreError,
};
use dopus_proto::bundle::ClaimedBundle;
use dopus_proto::peer::{BulkContent, BulkItem, ChatContent, Content, Conversation, PeerAddress};
use dopus_proto::signaling::Status;
use dopus_types::{Timestamp, UserId};

/// How long an ephemeral content waits for a session with its peer before it is dropped.
pub const EPHEMERAL_WAIT_MS: u64 = 30_000;
/// How long a peer that could not be served is left alone (unless something wakes the outbox:
/// the server connecting, a channel opening, the peer's presence, its keys arriving).
pub const STALLED_RETRY_MS: u64 = 5_000;
/// A bundle fetch with no answer after this long may be asked again.
pub const FETCH_TIMEOUT_MS: u64 = 30_000;

/// A bundle fetch in flight.
#[derive(Debug, Clone)]
pub(super) struct Fetch {
    /// Start a fresh session with every device (a recovery), naming these failed ids.
    pub reset: Option<Vec<dopus_proto::peer::MessageId>>,
    /// When it may be asked again.
    pub expires: Timestamp,
}

/// What a reported transmit carried: per envelope, the outbox copies in it.
#[derive(Debug, Clone)]
pub(super) struct InFlight {
    peer: UserId,
    envelopes: Vec<Vec<Carried>>,
}

#[derive(Debug, Clone)]
struct Carried {
    id: EnvelopeId,
    /// Attempts counted after this send (as the reschedule wrote them).
    attempts: u32,
    /// A text message whose state moves to `sent`.
    message: bool,
}

impl NodeMachine {
    /// Queues a reliable content for its peer in this batch (sealed at prepare).
    pub(super) fn queue_reliable(
        &mut self,
        now: Timestamp,
        out: &Outgoing,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let item = outbox::item_for(out, now).map_err(|_| StoreError::Invalid("outbox item"))?;
        store.apply_one(Change::OutboxEnqueue(item))?;
        self.outbox_wake = true;
        self.stalled.remove(&out.peer);
        Ok(())
    }

    /// Queues an ephemeral content (typing, read receipts, verification steps), sealed at
    /// prepare.
    pub(super) fn queue_ephemeral(&mut self, now: Timestamp, out: Outgoing) {
        self.ephemeral
            .push((out, now.plus_millis(EPHEMERAL_WAIT_MS)));
    }

    /// Asks the server for `peer`'s bundles, unless a fetch is already under way; a reset
    /// fetch takes over a plain one.
    pub(super) fn fetch_bundle(
        &mut self,
        now: Timestamp,
        peer: UserId,
        reset: Option<Vec<dopus_proto::peer::MessageId>>,
    ) {
        if let Some(f) = self.fetches.get_mut(&peer)
            && f.expires > now
        {
            if reset.is_some() && f.reset.is_none() {
                f.reset = reset;
            }
            return;
        }
        if self.signaling != SignalingState::Connected {
            // Asked again when the server is back (the outbox and recovery come here again).
            if let Some(failed) = reset {
                // Keep the reset's ids for when the server is back.
                for id in failed {
                    self.recovery.failed(now, peer, id);
                }
            }
            return;
        }
        self.fetches.insert(
            peer,
            Fetch {
                reset,
                expires: now.plus_millis(FETCH_TIMEOUT_MS),
            },
        );
        self.outputs
            .push_back(Output::Signaling(SignalingRequest::FetchBundle { peer }));
    }

    /// Starts a session with every device in `bundles` we have none with (or with every device
    /// for a reset), after verifying each bundle against the peer's user ID.
    pub(super) fn on_bundles(
        &mut self,
        now: Timestamp,
        peer: UserId,
        result: Result<Vec<ClaimedBundle>, String>,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let fetch = self.fetches.remove(&peer);
        self.stalled.remove(&peer);
        self.outbox_wake = true;
        let bundles = match result {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(peer = %peer.short(), error = %e, "could not fetch key bundles");
                return Ok(());
            }
        };
        let fresh = fetch.as_ref().is_some_and(|f| f.reset.is_some());
        let mut changes = Changes::new();
        let mut started = 0;
        for bundle in &bundles {
            let device = bundle.certificate.device_id.clone();
            if !fresh && !store.olm_sessions(&peer, &device)?.is_empty() {
                continue;
            }
            match self.olm.start_session(now, &peer, &device, bundle) {
                Ok(s) => {
                    let existing = store.peer_device(&peer, &device)?;
                    changes.push(Change::SavePeerDevice(PeerDevice {
                        user_id: peer,
                        device_id: device.clone(),
                        keys: s.certificate.keys,
                        certificate_json: serde_json::to_string(&s.certificate)
                            .map_err(|_| StoreError::Invalid("device certificate"))?,
                        first_seen: existing.map_or(now, |d| d.first_seen),
                        updated_at: now,
                    }));
                    changes.push(Change::SaveOlmSession(s.session));
                    started += 1;
                }
                // A hostile or broken server: refuse that device, keep the others.
                Err(e) => tracing::warn!(peer = %peer.short(), error = %e, "refused a key bundle"),
            }
        }
        if !changes.is_empty() {
            store.apply(changes)?;
        }
        if let Some(Fetch {
            reset: Some(failed),
            ..
        }) = fetch
        {
            if started > 0 {
                self.queue_reset(now, peer, failed, store)?;
            } else {
                tracing::info!(peer = %peer.short(), "could not start a fresh session");
            }
        }
        if self.pending_verifications.remove(&peer) {
            self.start_pending_verification(now, peer, store)?;
        }
        Ok(())
    }

    /// The devices of `peer` we hold at least one session with, and those sessions.
    fn device_sessions(
        store: &dyn Store,
        peer: &UserId,
    ) -> Result<Vec<(PeerDevice, Vec<OlmSessionRecord>)>, StoreError> {
        let mut out = Vec::new();
        for d in store.peer_devices(peer)? {
            let sessions = store.olm_sessions(peer, &d.device_id)?;
            if !sessions.is_empty() {
                out.push((d, sessions));
            }
        }
        Ok(out)
    }

    /// Whether the data channel to `peer` is open and worth sending on: the server saw the
    /// peer go away (for example killed), its side of the channel is gone even if ours has not
    /// timed out yet.
    fn direct_open(&self, peer: &UserId) -> bool {
        let gone = self
            .presence
            .get(peer)
            .is_some_and(|s| s.as_seen_by_others() == Status::Offline);
        !gone && self.links.get(peer).is_some_and(|l| l.is_open())
    }

    fn server_up(&self) -> bool {
        self.signaling == SignalingState::Connected
    }

    fn next_transmit_id(&mut self) -> u64 {
        let id = self.next_transmit;
        self.next_transmit += 1;
        id
    }

    /// Seals held receipts (when due), ephemeral contents and connection signals.
    pub(super) fn seal_ephemeral(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        if self.receipts_due.is_some_and(|t| t <= now) {
            self.receipts_due = None;
            let receipts = outbox::coalesce_receipts(std::mem::take(&mut self.held_receipts));
            let until = now.plus_millis(EPHEMERAL_WAIT_MS);
            self.ephemeral
                .extend(receipts.into_iter().map(|r| (r, until)));
        }
        let ephemeral = std::mem::take(&mut self.ephemeral);
        let kept = self.seal_now(now, ephemeral, false, store)?;
        self.ephemeral = kept;
        let signals = std::mem::take(&mut self.signals);
        let kept = self.seal_now(now, signals, true, store)?;
        self.signals = kept;
        Ok(())
    }

    /// Seals each content for every device of its peer we hold a session with and hands them
    /// out, per peer, in order. Contents for a peer without a session wait (a fetch is asked)
    /// until their deadline; the rest are returned to wait.
    fn seal_now(
        &mut self,
        now: Timestamp,
        outs: Vec<(Outgoing, Timestamp)>,
        server_only: bool,
        store: &mut dyn Store,
    ) -> Result<Vec<(Outgoing, Timestamp)>, MachineError> {
        let mut waiting = Vec::new();
        // Grouped per peer in first-seen order, each peer's contents in order.
        let mut peers: Vec<UserId> = Vec::new();
        for (out, _) in &outs {
            if !peers.contains(&out.peer) {
                peers.push(out.peer);
            }
        }
        for peer in peers {
            let mine: Vec<(Outgoing, Timestamp)> = outs
                .iter()
                .filter(|(o, _)| o.peer == peer)
                .cloned()
                .collect();
            let devices = Self::device_sessions(&*store, &peer)?;
            if devices.is_empty() {
                for (out, until) in mine {
                    if until > now {
                        waiting.push((out, until));
                    }
                }
                if waiting.iter().any(|(o, _)| o.peer == peer) {
                    self.fetch_bundle(now, peer, None);
                }
                continue;
            }
            let direct = !server_only && self.direct_open(&peer);
            let route = if direct { Route::Direct } else { Route::Server };
            // Delivered receipts are kept by the mailbox (the sender's retries depend on
            // them); everything else ephemeral is relayed live or dropped.
            let store_in_mailbox = mine.iter().any(|(o, _)| outbox::is_delivered_receipt(o));
            let mut envelopes = Vec::new();
            let mut changes = Changes::new();
            for (device, sessions) in &devices {
                let to = PeerAddress {
                    user: peer,
                    device: device.device_id.clone(),
                };
                let drafts: Vec<Draft> = mine
                    .iter()
                    .filter_map(|(o, _)| {
                        Some(Draft {
                            id: dopus_proto::peer::MessageId::from_uuid(o.id.0).ok()?,
                            conversation: o.conversation.clone(),
                            sent_at: o.sent_at,
                            content: o.content.clone(),
                        })
                    })
                    .collect();
                match self.olm.seal_many(now, &to, &device.keys, sessions, drafts) {
                    Ok((sealed, session)) => {
                        for env in sealed {
                            match env.map(|e| e.to_json()) {
                                Ok(Ok(bytes)) => envelopes.push(Sealed {
                                    device: device.device_id.clone(),
                                    bytes,
                                }),
                                Ok(Err(e)) => {
                                    tracing::warn!(error = %e, "could not encode an envelope");
                                }
                                Err(e) => tracing::warn!(error = %e, "could not seal an envelope"),
                            }
                        }
                        changes.push(Change::SaveOlmSession(session));
                    }
                    Err(e) => tracing::debug!(error = %e, "could not seal for a device"),
                }
            }
            if !changes.is_empty() {
                store.apply(changes)?;
            }
            if !envelopes.is_empty() {
                let id = self.next_transmit_id();
                self.outputs.push_back(Output::Transmit(Transmit {
                    id,
                    peer,
                    route,
                    store: store_in_mailbox,
                    fallback: direct,
                    envelopes,
                    report: false,
                }));
            }
        }
        Ok(waiting)
    }

    /// Seals and hands out a window of due outbox copies for every peer that has some.
    pub(super) fn pump(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let due_anything = self.outbox_next.is_some_and(|t| t <= now);
        if !(self.outbox_wake || due_anything) {
            return Ok(());
        }
        self.outbox_wake = false;
        self.stalled.retain(|_, until| *until > now);
        for peer in store.outbox_due_peers(now)? {
            if self.stalled.contains_key(&peer) || self.fetches.contains_key(&peer) {
                continue;
            }
            if !self.deliver_peer(now, peer, store)? {
                self.stalled.insert(peer, now.plus_millis(STALLED_RETRY_MS));
            }
        }
        self.outbox_next = store.outbox_next_attempt_at()?;
        Ok(())
    }

    /// One window for `peer`. `false` if the peer cannot be served now (no route, no session
    /// yet: a fetch is asked).
    fn deliver_peer(
        &mut self,
        now: Timestamp,
        peer: UserId,
        store: &mut dyn Store,
    ) -> Result<bool, MachineError> {
        let direct = self.direct_open(&peer);
        let server = self.server_up();
        if !direct && !server {
            return Ok(false);
        }
        let entries = store.outbox_due_for_peer(&peer, now, outbox::WINDOW)?;
        if entries.is_empty() {
            return Ok(true);
        }
        let Some(route) = outbox::choose_route(direct, server, &entries) else {
            return Ok(false);
        };
        let devices = Self::device_sessions(&*store, &peer)?;
        if devices.is_empty() {
            self.fetch_bundle(now, peer, None);
            return Ok(false);
        }
        let bulk = outbox::may_bulk(
            route,
            self.links.get(&peer).is_some_and(|l| l.bulk),
            &entries,
        );
        let mut changes = Changes::new();
        // Reactions that must wait for an earlier one on the same message and emoji.
        let reactions_waiting = if entries.iter().any(|e| {
            Queued::decode(&e.bytes)
                .is_some_and(|q| matches!(q.content, Content::Chat(ChatContent::Reaction { .. })))
        }) {
            let queue = store.outbox_for_peer(&peer, 10_000)?;
            let decoded: Vec<(EnvelopeId, Option<Queued>)> = queue
                .iter()
                .map(|e| (e.id, Queued::decode(&e.bytes)))
                .collect();
            outbox::reactions_waiting(
                decoded
                    .iter()
                    .map(|(id, q)| (*id, q.as_ref().map(|q| &q.content))),
            )
        } else {
            Default::default()
        };
        // The due copies this build can read; others are dropped with a warning.
        let mut due: Vec<(OutboxEntry, Queued, dopus_proto::peer::MessageId)> = Vec::new();
        for entry in entries {
            let (Some(queued), Ok(wire)) = (
                Queued::decode(&entry.bytes),
                dopus_proto::peer::MessageId::from_uuid(entry.id.0),
            ) else {
                tracing::warn!("dropped an outbox item this build cannot read");
                changes.push(Change::OutboxRemove(entry.id));
                continue;
            };
            // A change to one of our messages the peer has not acknowledged waits for it
            // (`outbox::waits_for`): it is looked at again shortly, its attempts unchanged.
            let held = reactions_waiting.contains(&entry.id)
                || match outbox::waits_for(&queued.content) {
                    Some(target) => {
                        store
                            .message(&MessageId(*target.as_uuid()))?
                            .is_some_and(|m| {
                                m.sender == self.me && outbox::target_unacknowledged(m.delivery)
                            })
                    }
                    None => false,
                };
            if held {
                changes.push(Change::OutboxReschedule {
                    id: entry.id,
                    peer,
                    attempts: entry.attempts,
                    next_attempt_at: now.plus_millis(outbox::HOLD_RECHECK_MS),
                });
                continue;
            }
            due.push((entry, queued, wire));
        }
        let mut envelopes: Vec<Sealed> = Vec::new();
        let mut carried: Vec<Vec<usize>> = Vec::new();
        for (device, sessions) in &devices {
            let share = due
                .iter()
                .enumerate()
                .filter(|(_, (e, _, _))| outbox::entry_for_device(e, &device.device_id))
                .map(|(i, (_, q, _))| (i, &q.content));
            let runs = outbox::plan_runs(share, bulk);
            if runs.is_empty() {
                continue;
            }
            let mut drafts = Vec::with_capacity(runs.len());
            for run in &runs {
                drafts.push(match run {
                    Run::Single(i) => {
                        let (_, q, wire) = &due[*i];
                        Draft {
                            id: *wire,
                            conversation: q.conversation.clone(),
                            sent_at: q.sent_at,
                            content: q.content.clone(),
                        }
                    }
                    Run::Bulk(items) => {
                        let items = items
                            .iter()
                            .filter_map(|i| {
                                let (_, q, wire) = &due[*i];
                                let Content::Chat(content) = &q.content else {
                                    return None;
                                };
                                Some(BulkItem {
                                    id: *wire,
                                    conversation: q.conversation.clone(),
                                    sent_at: q.sent_at,
                                    content: content.clone(),
                                })
                            })
                            .collect();
                        let bulk_id = self.new_id(now);
                        Draft {
                            id: dopus_proto::peer::MessageId::from_uuid(bulk_id.0)
                                .map_err(|_| StoreError::Invalid("bulk id"))?,
                            conversation: Conversation::Direct,
                            sent_at: now,
                            content: Content::Bulk(BulkContent::Bulk { items }),
                        }
                    }
                });
            }
            let to = PeerAddress {
                user: peer,
                device: device.device_id.clone(),
            };
            match self.olm.seal_many(now, &to, &device.keys, sessions, drafts) {
                Ok((sealed, session)) => {
                    for (run, env) in runs.iter().zip(sealed) {
                        match env.map(|e| e.to_json()) {
                            Ok(Ok(bytes)) => {
                                envelopes.push(Sealed {
                                    device: device.device_id.clone(),
                                    bytes,
                                });
                                carried.push(run.carries());
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "could not encode an envelope")
                            }
                            Err(e) => tracing::warn!(error = %e, "could not seal an envelope"),
                        }
                    }
                    changes.push(Change::SaveOlmSession(session));
                }
                Err(e) => tracing::warn!(error = %e, "could not seal for a device"),
            }
        }
        // Every copy carried by some envelope counts an attempt and gets its next retry time,
        // in the same transaction as the advanced sessions.
        let mut sent = vec![false; due.len()];
        for &i in carried.iter().flatten() {
            sent[i] = true;
        }
        for ((entry, _, _), _) in due.iter().zip(&sent).filter(|(_, s)| **s) {
            changes.push(Change::OutboxReschedule {
                id: entry.id,
                peer,
                attempts: entry.attempts.saturating_add(1),
                next_attempt_at: now.plus_millis(outbox::retry_delay(entry.attempts)),
            });
        }
        store.apply(changes)?;
        if envelopes.is_empty() {
            return Ok(true);
        }
        tracing::debug!(
            peer = %peer.short(),
            entries = due.len(),
            envelopes = envelopes.len(),
            direct = route == Route::Direct,
            "sending a window"
        );
        let id = self.next_transmit_id();
        let inflight = InFlight {
            peer,
            envelopes: carried
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|&i| {
                            let (e, q, _) = &due[i];
                            Carried {
                                id: e.id,
                                attempts: e.attempts.saturating_add(1),
                                message: matches!(
                                    q.content,
                                    Content::Chat(ChatContent::Text { .. })
                                ),
                            }
                        })
                        .collect()
                })
                .collect(),
        };
        self.inflight.insert(id, inflight);
        self.outputs.push_back(Output::Transmit(Transmit {
            id,
            peer,
            route,
            store: true,
            fallback: false,
            envelopes,
            report: true,
        }));
        // Going through the server to a peer who is online: try for a direct channel.
        if route == Route::Server {
            self.maybe_connect(now, peer);
        }
        Ok(true)
    }

    /// Records how a window went: copies taken by a transport move to `sent`; copies the
    /// mailbox holds are checked again much later.
    pub(super) fn on_transmitted(
        &mut self,
        now: Timestamp,
        id: u64,
        outcome: &[Delivery],
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Some(inflight) = self.inflight.remove(&id) else {
            return Ok(());
        };
        let peer = inflight.peer;
        let mut changes = Changes::new();
        let mut promotions: Vec<(usize, MessageId)> = Vec::new();
        for (carried, delivery) in inflight.envelopes.iter().zip(outcome) {
            if *delivery == Delivery::Failed {
                continue;
            }
            for c in carried {
                if c.message {
                    promotions.push((changes.len(), MessageId(c.id.0)));
                    changes.push(Change::SetDelivery {
                        id: MessageId(c.id.0),
                        state: DeliveryState::Sent,
                    });
                }
                if *delivery == Delivery::Stored {
                    changes.push(Change::OutboxReschedule {
                        id: c.id,
                        peer,
                        attempts: c.attempts,
                        next_attempt_at: now.plus_millis(outbox::MAILBOX_RECHECK_MS),
                    });
                }
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let applied = store.apply(changes)?;
        if self.detailed_events {
            for (i, message) in promotions {
                if applied.outcomes.get(i).is_some_and(|o| o.changed()) {
                    self.emit(Event::MessageState {
                        id: message,
                        conversation: crate::store::ConversationId::Direct(peer),
                        state: DeliveryState::Sent,
                    });
                }
            }
        }
        self.outbox_wake = true;
        Ok(())
    }

    /// A peer's presence changed: a peer that went offline loses its channel (its far end is
    /// gone or must look gone); a peer that came back gets everything still unacknowledged
    /// again soon, after a moment to drain its mailbox.
    pub(super) fn set_presence(
        &mut self,
        now: Timestamp,
        user: UserId,
        status: Status,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let was_online = self
            .presence
            .insert(user, status)
            .is_some_and(|s| s.as_seen_by_others() != Status::Offline);
        let online = status.as_seen_by_others() != Status::Offline;
        if was_online
            && !online
            && let Some(link) = self.links.remove(&user)
        {
            self.outputs
                .push_back(Output::Connection(ConnectionRequest::Close {
                    peer: user,
                    conn: Some(link.conn),
                }));
            self.emit(Event::Connection(user));
        }
        // A peer that comes back gets everything still unacknowledged again soon, including
        // copies parked in its mailbox: if one of those could not be decrypted (a session that
        // broke meanwhile) it would otherwise wait for the hourly mailbox re-check. The peer
        // first gets a moment to drain its mailbox and acknowledge: copies re-sealed at once
        // would race the parked ones, and a parked copy taken in after newer ratchet steps can
        // no longer be decrypted, which would look like a broken session. Receivers
        // deduplicate, so a second copy costs only bandwidth.
        if !was_online && online {
            let due = now.plus_millis(outbox::RETURN_GRACE_MS);
            let entries = store.outbox_for_peer(&user, 10_000)?;
            let changes: Changes = outbox::due_on_return(&entries, due)
                .into_iter()
                .map(|(id, peer, attempts)| Change::OutboxReschedule {
                    id,
                    peer,
                    attempts,
                    next_attempt_at: due,
                })
                .collect();
            if !changes.is_empty() {
                store.apply(changes)?;
            }
        }
        self.stalled.remove(&user);
        self.outbox_wake = true;
        self.emit(Event::Presence {
            user,
            status: status.as_seen_by_others(),
        });
        Ok(())
    }
}
