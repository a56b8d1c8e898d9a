//! Taking envelopes in: dedupe, decrypt, check the binding, apply, and answer.
//!
//! Envelopes from the data channel, live relays and the mailbox all come here, in order. A
//! batch of them is one *burst*: sessions they advance stay live (unpickled) until
//! [`NodeMachine::prepare`] pickles each once and saves it in the batch's transaction, together
//! with every message they carried, so a crash can never leave a session ratcheted past a
//! message that was not stored. Nothing is acknowledged before that commit.
//!
//! Before any decryption, an envelope is dropped if it is not for us or claims to be from us
//! (a reflection): such an envelope is a server's doing and must never start a recovery.

use super::{Event, Inbound, MachineError, NodeMachine, Via};
use crate::chat::{ChatEvent, delivered_receipt};
use crate::e2e::{Burst, Recovery};
use crate::store::{Change, Changes, EnvelopeId, Outcome, PeerDevice, Pickle, Store, StoreError};
use dopus_proto::peer::{ChatContent, Content, Conversation, PeerEnvelope, PeerPayload};
use dopus_types::{DeviceId, Timestamp, UserId};

impl NodeMachine {
    pub(super) fn receive(
        &mut self,
        now: Timestamp,
        items: Vec<Inbound>,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        if self.burst.is_none() {
            self.burst = Some(Burst::default());
        }
        for item in items {
            let ack = match &item.via {
                Via::Mailbox { ack, .. } => Some(*ack),
                _ => None,
            };
            self.take_one(now, &item, store)?;
            // Durably handled (stored, a known duplicate, or refused for good) once this batch
            // commits: then the mailbox may forget it.
            if let Some(ack) = ack {
                self.acks.push(ack);
            }
        }
        Ok(())
    }

    /// Pickles and saves every session the batch's envelopes advanced, once each.
    pub(super) fn finish_burst(&mut self, store: &mut dyn Store) -> Result<(), StoreError> {
        self.known.clear();
        let Some(burst) = self.burst.take() else {
            return Ok(());
        };
        let sessions: Changes = self
            .olm
            .finish_burst(burst)
            .into_iter()
            .map(Change::SaveOlmSession)
            .collect();
        if !sessions.is_empty() {
            store.apply(sessions)?;
        }
        Ok(())
    }

    fn take_one(
        &mut self,
        now: Timestamp,
        item: &Inbound,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let via = item.via.name();
        let envelope = match PeerEnvelope::from_json(&item.bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, via, "dropped a malformed envelope");
                return Ok(());
            }
        };
        // Who the transport says sent it must be who the envelope says sent it.
        let consistent = match &item.via {
            Via::Direct { peer } => envelope.from.user == *peer,
            Via::Relay { from } | Via::Mailbox { from, .. } => envelope.from == *from,
        };
        if !consistent {
            tracing::debug!(
                via,
                "dropped an envelope whose sender differs from its transport's"
            );
            return Ok(());
        }
        // Not for this device, or handed back to us (a reflection): a server's doing. Dropped
        // before decryption, so it can never cost a recovery (no device of ours sends to
        // another of ours today).
        if envelope.to != self.olm.address() || envelope.from.user == self.me {
            tracing::debug!(via, "dropped a misaddressed or reflected envelope");
            return Ok(());
        }
        let sender = envelope.from.user;
        let envelope_id = EnvelopeId(*envelope.id.as_uuid());
        if store.is_processed(&envelope_id)? {
            // A retry whose receipt got lost: acknowledge again, show nothing.
            let ack_id = EnvelopeId(self.new_id(now).0);
            self.hold_receipt(now, delivered_receipt(sender, ack_id, now, envelope.id));
            self.recovery.repaired(&sender, &envelope.id);
            return Ok(());
        }
        let key = (sender, envelope.from.device.clone());
        if !self.known.contains_key(&key) {
            let device = store.peer_device(&sender, &envelope.from.device)?;
            let sessions = match &device {
                Some(d) => store.olm_sessions(&sender, &d.device_id)?,
                None => Vec::new(),
            };
            self.known.insert(
                key.clone(),
                (device.map(|d| (d.first_seen, d.keys)), sessions),
            );
        }
        let (known_device, sessions) = self
            .known
            .get(&key)
            .map_or((None, &[][..]), |(f, s)| (*f, &s[..]));
        let keys = known_device.map(|(_, k)| k);
        let burst = self.burst.get_or_insert_with(Burst::default);
        let opened = match self
            .olm
            .open_in_burst(burst, now, &envelope, keys.as_ref(), sessions)
        {
            Ok(opened) => opened,
            Err(e) => {
                // `already_received` is false: a processed id was answered above.
                match e.recovery(false) {
                    Recovery::Ignore | Recovery::Drop => {
                        tracing::debug!(error = %e, via, "dropped an envelope");
                    }
                    Recovery::StartNewSession => {
                        tracing::debug!(peer = %sender.short(), kind = ?e.kind(), via, "cannot decrypt an envelope");
                        // Also for `Duplicate`: a used-up key under an id we never stored means
                        // the sender's session was rolled back (docs/e2e.md), unless it was
                        // only a stale copy, which recovery tells apart by waiting for the id.
                        self.recovery.failed(now, sender, envelope.id);
                    }
                }
                return Ok(());
            }
        };
        tracing::debug!(
            peer = %sender.short(),
            kind = opened.payload.content.kind_name(),
            new_session = opened.new_session,
            via,
            "took in an envelope"
        );
        let mut changes = Changes::new();
        if let Some(cert) = &opened.sender_certificate {
            let first_seen = known_device.map_or(now, |(f, _)| f);
            let saved = PeerDevice {
                user_id: cert.user_id,
                device_id: cert.device_id.clone(),
                keys: cert.keys,
                certificate_json: serde_json::to_string(cert)
                    .map_err(|_| StoreError::Invalid("device certificate"))?,
                first_seen,
                updated_at: now,
            };
            if let Some((f, _)) = self.known.get_mut(&key) {
                *f = Some((saved.first_seen, saved.keys));
            }
            changes.push(Change::SavePeerDevice(saved));
        }
        // The session is saved once for the whole burst, in prepare.
        if let Some(p) = opened.account_pickle {
            changes.push(Change::SetAccountPickle(Pickle::new(p)));
        }
        if !changes.is_empty() {
            store.apply(changes)?;
        }
        self.recovery.repaired(&sender, &envelope.id);
        if !opened.new_session {
            self.recovery.session_works(&sender);
        }
        self.take_payload(now, sender, &envelope.from.device, &opened.payload, store)
    }

    /// Applies one verified payload.
    fn take_payload(
        &mut self,
        now: Timestamp,
        sender: UserId,
        device: &DeviceId,
        payload: &PeerPayload,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        match &payload.content {
            // Typing in a channel: judged against the space, not the contact (space/typing.rs).
            Content::Chat(ChatContent::Typing { active })
                if matches!(payload.conversation, Conversation::Channel { .. }) =>
            {
                if let Conversation::Channel { space, channel } = payload.conversation {
                    self.take_channel_typing(now, sender, space, channel, *active);
                }
            }
            Content::Chat(_) => {
                let ack = EnvelopeId(self.new_id(now).0);
                let received = self
                    .chat
                    .receive(&*store, now, sender, payload, ack)
                    .map_err(chat_store)?;
                self.apply_received(now, received, store)?;
            }
            Content::Bulk(bulk) => {
                // Its items first, one by one, each applied before the next as envelopes of
                // their own would be; then the bulk payload itself (which marks its id).
                for item in bulk.items() {
                    let ack = EnvelopeId(self.new_id(now).0);
                    let received = self
                        .chat
                        .receive_bulk_item(&*store, now, sender, payload, item, ack)
                        .map_err(chat_store)?;
                    self.apply_received(now, received, store)?;
                }
                store.apply_one(Change::MarkProcessed {
                    id: EnvelopeId(*payload.id.as_uuid()),
                    received_at: now,
                })?;
            }
            Content::Contact(content) => {
                let ack = EnvelopeId(self.new_id(now).0);
                let before = store.contact(&sender)?;
                let got = crate::contacts::receive(&*store, now, sender, payload.id, content, ack)?;
                let again_id = EnvelopeId(self.new_id(now).0);
                let again = crate::contacts::answer_again(
                    before.as_ref(),
                    &self.account.display_name,
                    now,
                    again_id,
                    sender,
                    content,
                );
                let mut changes = got.changes;
                changes.push(Change::MarkProcessed {
                    id: EnvelopeId(*payload.id.as_uuid()),
                    received_at: now,
                });
                store.apply(changes)?;
                if got.changed {
                    self.contacts_dirty = true;
                    self.emit(Event::ContactChanged(sender));
                    if !crate::contacts::is_accepted(before.as_ref())
                        && crate::contacts::is_accepted(store.contact(&sender)?.as_ref())
                    {
                        self.send_profile_to(now, sender, store)?;
                    }
                }
                if let Some(ack) = got.ack {
                    self.hold_receipt(now, ack);
                }
                if let Some(out) = again {
                    self.queue_reliable(now, &out, store)?;
                }
            }
            Content::Session(_) => {
                store.apply_one(Change::MarkProcessed {
                    id: EnvelopeId(*payload.id.as_uuid()),
                    received_at: now,
                })?;
                self.on_reset(now, sender, store)?;
            }
            // A voice channel's mesh connects members who need not be contacts.
            Content::Rtc(rtc) => {
                if self.voice_peer(&sender)
                    || crate::contacts::is_accepted(store.contact(&sender)?.as_ref())
                {
                    self.on_signal(now, sender, rtc.clone(), store)?;
                } else {
                    self.hold_voice_signal(now, sender, rtc);
                }
            }
            Content::Verification(v) => {
                if crate::contacts::is_accepted(store.contact(&sender)?.as_ref()) {
                    self.on_verification_step(now, sender, device, v.clone(), store)?;
                }
            }
            // Spaces are not tied to contacts: membership decides (machine/space.rs).
            Content::Space(content) => {
                self.take_space(now, sender, device, payload, content, store)?;
            }
            Content::Call(c) => {
                if crate::contacts::is_accepted(store.contact(&sender)?.as_ref()) {
                    self.on_call(now, sender, c, store)?;
                }
            }
            // Files in channels: holders and revokes among the channel's readers.
            Content::Transfer(t)
                if matches!(payload.conversation, Conversation::Channel { .. }) =>
            {
                self.on_channel_transfer_content(now, sender, payload, t, store)?;
            }
            Content::Transfer(t) => {
                let ack = EnvelopeId(self.new_id(now).0);
                let received = self
                    .chat
                    .receive(&*store, now, sender, payload, ack)
                    .map_err(chat_store)?;
                let taken = received.control.is_some();
                self.apply_received(now, received, store)?;
                if taken {
                    self.transfer_peers_dirty = true;
                    self.on_transfer_content(now, sender, t, store)?;
                }
            }
        }
        Ok(())
    }

    /// Applies what the chat logic made of a payload and turns its events and replies into
    /// outputs.
    fn apply_received(
        &mut self,
        now: Timestamp,
        received: crate::chat::Received,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let inserts: Vec<(usize, crate::store::NewMessage)> = received
            .changes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                Change::InsertMessage(m) => Some((i, m.clone())),
                _ => None,
            })
            .collect();
        let transfers: Vec<crate::store::FileTransfer> = received
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::SaveTransfer(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        let applied = store.apply(received.changes)?;
        self.fetch_received(transfers);
        let mut inserted = std::collections::BTreeMap::new();
        for (i, m) in inserts {
            if let Some(Outcome::Inserted(seq)) = applied.outcomes.get(i) {
                inserted.insert(m.id, m.stored(*seq));
            }
        }
        for event in received.events {
            self.chat_event(event, &mut inserted);
        }
        for reply in received.replies {
            if crate::outbox::is_delivered_receipt(&reply) {
                self.hold_receipt(now, reply);
            } else {
                self.ephemeral
                    .push((reply, now.plus_millis(super::send::EPHEMERAL_WAIT_MS)));
            }
        }
        Ok(())
    }

    /// Turns a chat event into an output (message events only when someone shows them).
    pub(super) fn chat_event(
        &mut self,
        event: ChatEvent,
        inserted: &mut std::collections::BTreeMap<crate::store::MessageId, crate::store::Message>,
    ) {
        match event {
            ChatEvent::MessageAdded(id) => {
                if let Some(m) = inserted.remove(&id)
                    && self.detailed_events
                {
                    self.emit(Event::MessageAdded(Box::new(m)));
                }
            }
            ChatEvent::MessageUpdated(id) => {
                if self.detailed_events {
                    self.emit(Event::MessageUpdated(id));
                }
            }
            ChatEvent::StateChanged {
                id,
                conversation,
                state,
            } => {
                if self.detailed_events {
                    self.emit(Event::MessageState {
                        id,
                        conversation,
                        state,
                    });
                }
            }
            ChatEvent::Typing { user, active } => {
                if self.detailed_events {
                    self.emit(Event::Typing {
                        user,
                        active,
                        channel: None,
                    });
                }
            }
            ChatEvent::ContactChanged(user) => {
                self.contacts_dirty = true;
                self.emit(Event::ContactChanged(user));
            }
        }
    }

    /// Holds a delivered receipt to be merged with those right behind it.
    pub(super) fn hold_receipt(&mut self, now: Timestamp, receipt: crate::chat::Outgoing) {
        if self.receipts_due.is_none() {
            self.receipts_due = Some(now.plus_millis(crate::outbox::RECEIPT_DELAY_MS));
        }
        self.held_receipts.push(receipt);
    }
}

fn chat_store(e: crate::chat::ChatError) -> StoreError {
    match e {
        crate::chat::ChatError::Store(e) => e,
        // Receiving never refuses with a user-facing chat error; anything else is a bug in
        // the stored data it read.
        _ => StoreError::Corrupt("chat state"),
    }
}
