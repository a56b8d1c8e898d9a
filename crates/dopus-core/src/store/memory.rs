//! The reference store: everything in memory, nothing survives the process. Protocol tests and
//! simulations use it; the conformance suite holds the SQLCipher store to the same behaviour.

use super::records::{
    AccountRecord, ChannelCiphertextRecord, ChannelId, Contact, Conversation, ConversationId,
    ConversationSummary, EnvelopeId, FileTransfer, MegolmInboundRecord, MegolmOutboundRecord,
    MegolmWaitingRecord, Message, MessageId, OlmSessionRecord, OutboxEntry, PeerDevice,
    ReactionSummary, SNIPPET_END, SNIPPET_START, SearchHit, SearchQuery, Seq, SpaceOpRecord,
    TransferId,
};
use super::{Applied, Change, Changes, Outcome, SearchTerm, Store, StoreError, search_terms};
use dopus_proto::space::OpId;
use dopus_types::{BlobHash, Curve25519Key, DeviceId, SpaceId, Timestamp, UserId};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A [`Store`] held in memory.
///
/// `apply` is atomic the simple way: it works on a copy of the state and swaps it in only when
/// every change succeeded. That costs a copy per batch, which is fine for tests and
/// simulations and is exactly why this is not the production store.
#[derive(Default, Clone)]
pub struct MemoryStore {
    state: State,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("messages", &self.state.messages.len())
            .field("contacts", &self.state.contacts.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default, Clone)]
struct State {
    account: Option<AccountRecord>,
    peer_devices: BTreeMap<(UserId, DeviceId), PeerDevice>,
    contacts: BTreeMap<UserId, Contact>,
    conversations: BTreeMap<ConversationId, Conversation>,
    messages: BTreeMap<Seq, Message>,
    message_seq: HashMap<MessageId, Seq>,
    last_seq: u64,
    /// Per message: (user, emoji, at), in insertion order.
    reactions: HashMap<MessageId, Vec<(UserId, String, Timestamp)>>,
    olm: BTreeMap<String, OlmSessionRecord>,
    megolm_inbound: BTreeMap<String, MegolmInboundRecord>,
    megolm_outbound: BTreeMap<ChannelId, MegolmOutboundRecord>,
    /// Keyed by queue position, so iteration is FIFO.
    outbox: BTreeMap<u64, OutboxEntry>,
    last_outbox_pos: u64,
    processed: HashMap<EnvelopeId, Timestamp>,
    transfers: BTreeMap<TransferId, FileTransfer>,
    blob_holders: BTreeMap<(BlobHash, UserId), Timestamp>,
    space_ops: BTreeMap<(SpaceId, OpId), SpaceOpRecord>,
    megolm_seen: BTreeSet<(String, u32)>,
    megolm_waiting: BTreeMap<(String, u32), MegolmWaitingRecord>,
    channel_history: BTreeMap<(String, u32), ChannelCiphertextRecord>,
    settings: BTreeMap<String, String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn changed(yes: bool) -> Outcome {
    if yes {
        Outcome::Applied
    } else {
        Outcome::Unchanged
    }
}

impl State {
    fn ensure_conversation(&mut self, id: ConversationId, now: Timestamp) -> bool {
        if self.conversations.contains_key(&id) {
            return false;
        }
        self.conversations.insert(
            id,
            Conversation {
                id,
                created_at: now,
                last_read: None,
            },
        );
        true
    }

    fn message_mut(&mut self, id: &MessageId) -> Option<&mut Message> {
        let seq = self.message_seq.get(id)?;
        self.messages.get_mut(seq)
    }

    fn outbox_pos(&self, id: &EnvelopeId, peer: &UserId) -> Option<u64> {
        self.outbox
            .iter()
            .find(|(_, e)| e.id == *id && e.peer_user == *peer)
            .map(|(pos, _)| *pos)
    }

    fn apply_change(&mut self, change: Change) -> Result<Outcome, StoreError> {
        Ok(match change {
            Change::SaveAccount(account) => {
                self.account = Some(account);
                Outcome::Applied
            }
            Change::SetAccountPickle(pickle) => {
                let account = self
                    .account
                    .as_mut()
                    .ok_or(StoreError::NotFound("account"))?;
                account.account_pickle = pickle;
                Outcome::Applied
            }
            Change::SavePeerDevice(device) => {
                self.peer_devices
                    .insert((device.user_id, device.device_id.clone()), device);
                Outcome::Applied
            }
            Change::RemovePeerDevice { user, device } => {
                changed(self.peer_devices.remove(&(user, device)).is_some())
            }
            Change::SaveContact(contact) => {
                self.contacts.insert(contact.user_id, contact);
                Outcome::Applied
            }
            Change::RemoveContact(user) => changed(self.contacts.remove(&user).is_some()),
            Change::SaveOlmSession(session) => {
                self.olm.insert(session.session_id.clone(), session);
                Outcome::Applied
            }
            Change::RemoveOlmSession { session_id } => {
                changed(self.olm.remove(&session_id).is_some())
            }
            Change::SaveMegolmInbound(session) => {
                self.megolm_inbound
                    .insert(session.session_id.clone(), session);
                Outcome::Applied
            }
            Change::SaveMegolmOutbound(session) => {
                self.megolm_outbound.insert(session.channel, session);
                Outcome::Applied
            }
            Change::RemoveMegolmOutbound(channel) => {
                changed(self.megolm_outbound.remove(&channel).is_some())
            }
            Change::EnsureConversation { id, now } => changed(self.ensure_conversation(id, now)),
            Change::InsertMessage(new) => {
                if let Some(seq) = self.message_seq.get(&new.id) {
                    return Ok(Outcome::Duplicate(*seq));
                }
                self.ensure_conversation(new.conversation, new.received_at);
                self.last_seq += 1;
                let seq = Seq(self.last_seq);
                self.message_seq.insert(new.id, seq);
                self.messages.insert(
                    seq,
                    Message {
                        seq,
                        id: new.id,
                        conversation: new.conversation,
                        sender: new.sender,
                        kind: new.kind,
                        body: new.body,
                        reply_to: new.reply_to,
                        preview: new.preview,
                        edited_at: None,
                        deleted: false,
                        sent_at: new.sent_at,
                        received_at: new.received_at,
                        delivery: new.delivery,
                    },
                );
                Outcome::Inserted(seq)
            }
            Change::EditMessage {
                id,
                body,
                edited_at,
            } => match self.message_mut(&id) {
                Some(m) if !m.deleted && m.edited_at.is_none_or(|prev| edited_at > prev) => {
                    m.body = body;
                    m.edited_at = Some(edited_at);
                    Outcome::Applied
                }
                _ => Outcome::Unchanged,
            },
            Change::DeleteMessage(id) => {
                let done = match self.message_mut(&id) {
                    Some(m) if !m.deleted => {
                        m.deleted = true;
                        m.body.clear();
                        m.preview = None;
                        true
                    }
                    _ => false,
                };
                if done {
                    self.reactions.remove(&id);
                }
                changed(done)
            }
            Change::SetDelivery { id, state } => match self.message_mut(&id) {
                Some(m) if m.delivery.can_become(state) => {
                    m.delivery = state;
                    Outcome::Applied
                }
                _ => Outcome::Unchanged,
            },
            Change::React {
                message,
                user,
                emoji,
                add,
                at,
            } => {
                let list = self.reactions.entry(message).or_default();
                let existing = list.iter().position(|(u, e, _)| *u == user && *e == emoji);
                let done = match (add, existing) {
                    (true, None) => {
                        list.push((user, emoji, at));
                        true
                    }
                    (false, Some(i)) => {
                        list.remove(i);
                        true
                    }
                    _ => false,
                };
                if list.is_empty() {
                    self.reactions.remove(&message);
                }
                changed(done)
            }
            Change::MarkRead {
                conversation,
                up_to,
            } => match self.conversations.get_mut(&conversation) {
                Some(c) if c.last_read.is_none_or(|prev| up_to > prev) => {
                    c.last_read = Some(up_to);
                    Outcome::Applied
                }
                _ => Outcome::Unchanged,
            },
            Change::OutboxEnqueue(mut item) => {
                // An item keeps the bytes it was first queued with (as the SQL store's
                // `outbox_items` row does); later recipients share them.
                if let Some(first) = self.outbox.values().find(|e| e.id == item.id) {
                    item.bytes = first.bytes.clone();
                    item.created_at = first.created_at;
                }
                let mut inserted = false;
                for r in item.recipients {
                    if self.outbox_pos(&item.id, &r.user).is_none() {
                        self.last_outbox_pos += 1;
                        self.outbox.insert(
                            self.last_outbox_pos,
                            OutboxEntry {
                                id: item.id,
                                peer_user: r.user,
                                peer_device: r.device,
                                bytes: item.bytes.clone(),
                                created_at: item.created_at,
                                attempts: 0,
                                next_attempt_at: item.next_attempt_at,
                            },
                        );
                        inserted = true;
                    }
                }
                changed(inserted)
            }
            Change::OutboxReschedule {
                id,
                peer,
                attempts,
                next_attempt_at,
            } => match self
                .outbox_pos(&id, &peer)
                .and_then(|p| self.outbox.get_mut(&p))
            {
                Some(entry) => {
                    entry.attempts = attempts;
                    entry.next_attempt_at = next_attempt_at;
                    Outcome::Applied
                }
                None => Outcome::Unchanged,
            },
            Change::OutboxAck { id, peer } => match self.outbox_pos(&id, &peer) {
                Some(pos) => {
                    self.outbox.remove(&pos);
                    Outcome::Applied
                }
                None => Outcome::Unchanged,
            },
            Change::OutboxRemove(id) => {
                let before = self.outbox.len();
                self.outbox.retain(|_, e| e.id != id);
                changed(self.outbox.len() != before)
            }
            Change::MarkProcessed { id, received_at } => match self.processed.entry(id) {
                std::collections::hash_map::Entry::Occupied(_) => Outcome::Unchanged,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(received_at);
                    Outcome::Applied
                }
            },
            Change::SaveTransfer(transfer) => {
                self.ensure_conversation(transfer.conversation, transfer.created_at);
                self.transfers.insert(transfer.id, transfer);
                Outcome::Applied
            }
            Change::SetTransferProgress { id, verified, at } => match self.transfers.get_mut(&id) {
                Some(t) => {
                    t.verified = verified;
                    t.updated_at = at;
                    Outcome::Applied
                }
                None => Outcome::Unchanged,
            },
            Change::SetTransferState {
                id,
                state,
                reason,
                at,
            } => match self.transfers.get_mut(&id) {
                Some(t) => {
                    t.state = state;
                    t.reason = reason;
                    t.updated_at = at;
                    Outcome::Applied
                }
                None => Outcome::Unchanged,
            },
            Change::SetTransferSavedPath { id, path, at } => match self.transfers.get_mut(&id) {
                Some(t) => {
                    t.saved_path = Some(path);
                    t.updated_at = at;
                    Outcome::Applied
                }
                None => Outcome::Unchanged,
            },
            Change::AddBlobHolder { blob, user, at } => {
                if let std::collections::btree_map::Entry::Vacant(e) =
                    self.blob_holders.entry((blob, user))
                {
                    e.insert(at);
                    Outcome::Applied
                } else {
                    Outcome::Unchanged
                }
            }
            Change::RemoveBlobHolder { blob, user } => {
                if self.blob_holders.remove(&(blob, user)).is_some() {
                    Outcome::Applied
                } else {
                    Outcome::Unchanged
                }
            }
            Change::RemoveBlobHolders { blob } => {
                let before = self.blob_holders.len();
                self.blob_holders.retain(|(b, _), _| *b != blob);
                if self.blob_holders.len() < before {
                    Outcome::Applied
                } else {
                    Outcome::Unchanged
                }
            }
            Change::PruneBlobHolders { before } => {
                let n = self.blob_holders.len();
                self.blob_holders.retain(|_, at| *at >= before);
                if self.blob_holders.len() < n {
                    Outcome::Applied
                } else {
                    Outcome::Unchanged
                }
            }
            Change::RemoveTransfer(id) => {
                if self.transfers.remove(&id).is_some() {
                    Outcome::Applied
                } else {
                    Outcome::Unchanged
                }
            }
            Change::SaveSpaceOp(op) => match self.space_ops.entry((op.space, op.id)) {
                std::collections::btree_map::Entry::Occupied(_) => Outcome::Unchanged,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(op);
                    Outcome::Applied
                }
            },
            Change::RemoveSpace(space) => {
                let before =
                    self.space_ops.len() + self.megolm_inbound.len() + self.megolm_outbound.len();
                self.space_ops.retain(|(s, _), _| *s != space);
                self.megolm_inbound.retain(|_, m| m.space != space);
                self.megolm_outbound.retain(|_, m| m.space != space);
                self.channel_history.retain(|_, m| m.space != space);
                let after =
                    self.space_ops.len() + self.megolm_inbound.len() + self.megolm_outbound.len();
                changed(after < before)
            }
            Change::MarkMegolmSeen {
                session_id, index, ..
            } => changed(self.megolm_seen.insert((session_id, index))),
            Change::SaveMegolmWaiting(w) => {
                match self.megolm_waiting.entry((w.session_id.clone(), w.index)) {
                    std::collections::btree_map::Entry::Occupied(_) => Outcome::Unchanged,
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(w);
                        Outcome::Applied
                    }
                }
            }
            Change::RemoveMegolmWaiting { session_id } => {
                let before = self.megolm_waiting.len();
                self.megolm_waiting.retain(|(s, _), _| *s != session_id);
                changed(self.megolm_waiting.len() < before)
            }
            Change::KeepChannelCiphertext(c) => {
                let channel = c.channel;
                let inserted = match self.channel_history.entry((c.session_id.clone(), c.index)) {
                    std::collections::btree_map::Entry::Occupied(_) => false,
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(c);
                        true
                    }
                };
                if inserted {
                    let mut kept: Vec<(Timestamp, String, u32)> = self
                        .channel_history
                        .values()
                        .filter(|k| k.channel == channel)
                        .map(|k| (k.received_at, k.session_id.clone(), k.index))
                        .collect();
                    if kept.len() > super::MAX_KEPT_CIPHERTEXTS {
                        kept.sort();
                        let drop = kept.len() - super::MAX_KEPT_CIPHERTEXTS;
                        for (_, s, i) in kept.into_iter().take(drop) {
                            self.channel_history.remove(&(s, i));
                        }
                    }
                }
                changed(inserted)
            }
            Change::SetMegolmWaitState { session_id, state } => {
                let mut any = false;
                for (_, w) in self
                    .megolm_waiting
                    .range_mut((session_id.clone(), 0)..=(session_id.clone(), u32::MAX))
                {
                    w.state = state;
                    any = true;
                }
                changed(any)
            }
            Change::SetSetting { key, value } => match value {
                Some(value) => {
                    self.settings.insert(key, value);
                    Outcome::Applied
                }
                None => changed(self.settings.remove(&key).is_some()),
            },
        })
    }
}

fn term_matches(term: &SearchTerm, word: &str) -> bool {
    if term.prefix {
        word.starts_with(term.word.as_str())
    } else {
        word == term.word
    }
}

/// Wraps each word of `body` that matches one of `terms` in snippet markers.
fn highlight(body: &str, terms: &[SearchTerm]) -> String {
    let mut out = String::with_capacity(body.len() + 8);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.is_empty() {
            return;
        }
        let lower = word.to_lowercase();
        if terms.iter().any(|t| term_matches(t, &lower)) {
            out.push(SNIPPET_START);
            out.push_str(word);
            out.push(SNIPPET_END);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in body.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn matches_terms(body: &str, terms: &[SearchTerm]) -> bool {
    let words: Vec<String> = body
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    terms
        .iter()
        .all(|t| words.iter().any(|w| term_matches(t, w)))
}

impl Store for MemoryStore {
    fn apply(&mut self, changes: Changes) -> Result<Applied, StoreError> {
        let mut next = self.state.clone();
        let mut outcomes = Vec::with_capacity(changes.len());
        for change in changes {
            outcomes.push(next.apply_change(change)?);
        }
        self.state = next;
        Ok(Applied { outcomes })
    }

    fn account(&self) -> Result<Option<AccountRecord>, StoreError> {
        Ok(self.state.account.clone())
    }

    fn peer_device(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<PeerDevice>, StoreError> {
        Ok(self
            .state
            .peer_devices
            .get(&(*user, device.clone()))
            .cloned())
    }

    fn peer_devices(&self, user: &UserId) -> Result<Vec<PeerDevice>, StoreError> {
        Ok(self
            .state
            .peer_devices
            .values()
            .filter(|d| d.user_id == *user)
            .cloned()
            .collect())
    }

    fn peer_device_by_curve25519(
        &self,
        key: &Curve25519Key,
    ) -> Result<Option<PeerDevice>, StoreError> {
        Ok(self
            .state
            .peer_devices
            .values()
            .find(|d| d.keys.curve25519 == *key)
            .cloned())
    }

    fn contact(&self, user: &UserId) -> Result<Option<Contact>, StoreError> {
        Ok(self.state.contacts.get(user).cloned())
    }

    fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        Ok(self.state.contacts.values().cloned().collect())
    }

    fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        Ok(self.state.conversations.get(id).cloned())
    }

    fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
        let me = self.state.account.as_ref().map(|a| a.user_id);
        let mut out: Vec<ConversationSummary> = self
            .state
            .conversations
            .values()
            .map(|c| {
                let in_conv = self
                    .state
                    .messages
                    .values()
                    .filter(|m| m.conversation == c.id);
                let last_message = in_conv.clone().next_back().cloned();
                let unread = in_conv
                    .filter(|m| {
                        c.last_read.is_none_or(|r| m.seq > r) && !m.deleted && Some(m.sender) != me
                    })
                    .count() as u64;
                ConversationSummary {
                    conversation: c.clone(),
                    last_message,
                    unread,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            let key = |s: &ConversationSummary| {
                (
                    s.last_message.as_ref().map(|m| m.seq),
                    s.conversation.created_at,
                )
            };
            key(b).cmp(&key(a))
        });
        Ok(out)
    }

    fn message(&self, id: &MessageId) -> Result<Option<Message>, StoreError> {
        Ok(self
            .state
            .message_seq
            .get(id)
            .and_then(|seq| self.state.messages.get(seq))
            .cloned())
    }

    fn messages_before(
        &self,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        // The cursor message's position in the senders' order; a cursor that is not a
        // message of this conversation bounds by arrival instead.
        let cursor = before.map(|seq| match self.state.messages.get(&seq) {
            Some(m) if m.conversation == *conversation => (Some((m.sent_at, m.id)), seq),
            _ => (None, seq),
        });
        let mut page: Vec<&Message> = self
            .state
            .messages
            .values()
            .filter(|m| m.conversation == *conversation)
            .filter(|m| match cursor {
                None => true,
                Some((Some(at), _)) => (m.sent_at, m.id) < at,
                Some((None, seq)) => m.seq < seq,
            })
            .collect();
        page.sort_unstable_by_key(|m| std::cmp::Reverse((m.sent_at, m.id)));
        Ok(page.into_iter().take(limit).cloned().collect())
    }

    fn messages_arrived_before(
        &self,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let upper = before.unwrap_or(Seq(u64::MAX));
        Ok(self
            .state
            .messages
            .range(..upper)
            .rev()
            .map(|(_, m)| m)
            .filter(|m| m.conversation == *conversation)
            .take(limit)
            .cloned()
            .collect())
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        let terms = search_terms(&query.text);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let upper = query.before.unwrap_or(Seq(u64::MAX));
        Ok(self
            .state
            .messages
            .range(..upper)
            .rev()
            .map(|(_, m)| m)
            .filter(|m| !m.deleted)
            .filter(|m| query.conversation.is_none_or(|c| c == m.conversation))
            .filter(|m| {
                query
                    .within
                    .as_ref()
                    .is_none_or(|w| w.contains(&m.conversation))
            })
            .filter(|m| matches_terms(&m.body, &terms))
            .take(query.limit)
            .map(|m| SearchHit {
                message: m.clone(),
                snippet: highlight(&m.body, &terms),
            })
            .collect())
    }

    /// Search matches in Rust over the current bodies: there is no index to maintain.
    fn index_pending(&mut self, _max_rows: usize) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn reactions(&self, message: &MessageId) -> Result<Vec<ReactionSummary>, StoreError> {
        let Some(list) = self.state.reactions.get(message) else {
            return Ok(Vec::new());
        };
        let mut ordered: Vec<&(UserId, String, Timestamp)> = list.iter().collect();
        // Stable: equal times keep insertion order.
        ordered.sort_by_key(|(_, _, at)| *at);
        let mut out: Vec<ReactionSummary> = Vec::new();
        for (user, emoji, _) in ordered {
            match out.iter_mut().find(|r| r.emoji == *emoji) {
                Some(r) => {
                    r.count += 1;
                    r.users.push(*user);
                }
                None => out.push(ReactionSummary {
                    emoji: emoji.clone(),
                    count: 1,
                    users: vec![*user],
                }),
            }
        }
        Ok(out)
    }

    fn olm_sessions(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Vec<OlmSessionRecord>, StoreError> {
        let mut out: Vec<OlmSessionRecord> = self
            .state
            .olm
            .values()
            .filter(|s| s.peer_user == *user && s.peer_device == *device)
            .cloned()
            .collect();
        sort_sessions(&mut out);
        Ok(out)
    }

    fn olm_sessions_for_key(
        &self,
        key: &Curve25519Key,
    ) -> Result<Vec<OlmSessionRecord>, StoreError> {
        let mut out: Vec<OlmSessionRecord> = self
            .state
            .olm
            .values()
            .filter(|s| s.peer_curve25519 == *key)
            .cloned()
            .collect();
        sort_sessions(&mut out);
        Ok(out)
    }

    fn megolm_inbound(&self, session_id: &str) -> Result<Option<MegolmInboundRecord>, StoreError> {
        Ok(self.state.megolm_inbound.get(session_id).cloned())
    }

    fn megolm_outbound(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<MegolmOutboundRecord>, StoreError> {
        Ok(self.state.megolm_outbound.get(channel).cloned())
    }

    fn outbox_for_peer(&self, peer: &UserId, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self
            .state
            .outbox
            .values()
            .filter(|e| e.peer_user == *peer)
            .take(limit)
            .cloned()
            .collect())
    }

    fn outbox_due_for_peer(
        &self,
        peer: &UserId,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        // `outbox` iterates in queue order; the stable sort keeps it among equal due times.
        let mut due: Vec<OutboxEntry> = self
            .state
            .outbox
            .values()
            .filter(|e| e.peer_user == *peer && e.next_attempt_at <= now)
            .cloned()
            .collect();
        due.sort_by_key(|e| e.next_attempt_at);
        due.truncate(limit);
        Ok(due)
    }

    fn outbox_due_peers(&self, now: Timestamp) -> Result<Vec<UserId>, StoreError> {
        let peers: std::collections::BTreeSet<UserId> = self
            .state
            .outbox
            .values()
            .filter(|e| e.next_attempt_at <= now)
            .map(|e| e.peer_user)
            .collect();
        Ok(peers.into_iter().collect())
    }

    fn outbox_next_attempt_at(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.state.outbox.values().map(|e| e.next_attempt_at).min())
    }

    fn is_processed(&self, id: &EnvelopeId) -> Result<bool, StoreError> {
        Ok(self.state.processed.contains_key(id))
    }

    fn prune_processed(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        let len = self.state.processed.len();
        self.state.processed.retain(|_, at| *at >= before);
        Ok((len - self.state.processed.len()) as u64)
    }

    fn transfer(&self, id: &TransferId) -> Result<Option<FileTransfer>, StoreError> {
        Ok(self.state.transfers.get(id).cloned())
    }

    fn transfers(&self, conversation: &ConversationId) -> Result<Vec<FileTransfer>, StoreError> {
        let mut out: Vec<FileTransfer> = self
            .state
            .transfers
            .values()
            .filter(|t| t.conversation == *conversation)
            .cloned()
            .collect();
        out.sort_by_key(|t| (t.created_at, t.id));
        Ok(out)
    }

    fn transfers_of_blob(&self, blob: &BlobHash) -> Result<Vec<FileTransfer>, StoreError> {
        let mut out: Vec<FileTransfer> = self
            .state
            .transfers
            .values()
            .filter(|t| t.blob() == blob)
            .cloned()
            .collect();
        out.sort_by_key(|t| (t.created_at, t.id));
        Ok(out)
    }

    fn blob_holders(&self, blob: &BlobHash) -> Result<Vec<UserId>, StoreError> {
        Ok(self
            .state
            .blob_holders
            .keys()
            .filter(|(b, _)| b == blob)
            .map(|(_, u)| *u)
            .collect())
    }

    fn unfinished_transfers(&self) -> Result<Vec<FileTransfer>, StoreError> {
        let mut out: Vec<FileTransfer> = self
            .state
            .transfers
            .values()
            .filter(|t| !t.state.is_final())
            .cloned()
            .collect();
        out.sort_by_key(|t| (t.created_at, t.id));
        Ok(out)
    }

    fn spaces(&self) -> Result<Vec<SpaceId>, StoreError> {
        let set: BTreeSet<SpaceId> = self.state.space_ops.keys().map(|(s, _)| *s).collect();
        Ok(set.into_iter().collect())
    }

    fn space_ops(&self, space: &SpaceId) -> Result<Vec<SpaceOpRecord>, StoreError> {
        let mut out: Vec<SpaceOpRecord> = self
            .state
            .space_ops
            .values()
            .filter(|o| o.space == *space)
            .cloned()
            .collect();
        out.sort_by_key(|o| (o.depth, o.id));
        Ok(out)
    }

    fn megolm_inbound_for_channel(
        &self,
        channel: &ChannelId,
    ) -> Result<Vec<MegolmInboundRecord>, StoreError> {
        let mut out: Vec<MegolmInboundRecord> = self
            .state
            .megolm_inbound
            .values()
            .filter(|m| m.channel == *channel)
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.session_id).cmp(&(b.created_at, &b.session_id)));
        Ok(out)
    }

    fn megolm_seen(&self, session_id: &str, index: u32) -> Result<bool, StoreError> {
        Ok(self
            .state
            .megolm_seen
            .contains(&(session_id.to_owned(), index)))
    }

    fn megolm_waiting(&self, session_id: &str) -> Result<Vec<MegolmWaitingRecord>, StoreError> {
        Ok(self
            .state
            .megolm_waiting
            .range((session_id.to_owned(), 0)..=(session_id.to_owned(), u32::MAX))
            .map(|(_, w)| w.clone())
            .collect())
    }

    fn channel_ciphertexts(
        &self,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<ChannelCiphertextRecord>, StoreError> {
        let mut kept: Vec<ChannelCiphertextRecord> = self
            .state
            .channel_history
            .values()
            .filter(|k| k.channel == *channel)
            .cloned()
            .collect();
        kept.sort_by(|a, b| {
            (a.received_at, &a.session_id, a.index).cmp(&(b.received_at, &b.session_id, b.index))
        });
        let skip = kept.len().saturating_sub(limit);
        Ok(kept.into_iter().skip(skip).collect())
    }

    fn megolm_waiting_sessions(
        &self,
        limit: usize,
    ) -> Result<Vec<MegolmWaitingRecord>, StoreError> {
        let mut out: Vec<MegolmWaitingRecord> = Vec::new();
        for ((session, _), w) in &self.state.megolm_waiting {
            if out.last().is_some_and(|l| l.session_id == *session) {
                continue;
            }
            if out.len() == limit {
                break;
            }
            out.push(w.clone());
        }
        Ok(out)
    }

    fn megolm_waiting_in_channel(
        &self,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<MegolmWaitingRecord>, StoreError> {
        let mut out: Vec<MegolmWaitingRecord> = self
            .state
            .megolm_waiting
            .values()
            .filter(|w| w.channel.as_ref() == Some(channel))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (a.received_at, &a.session_id, a.index).cmp(&(b.received_at, &b.session_id, b.index))
        });
        out.truncate(limit);
        Ok(out)
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state.settings.get(key).cloned())
    }
}

fn sort_sessions(sessions: &mut [OlmSessionRecord]) {
    sessions.sort_by(|a, b| {
        (b.last_used_at, b.created_at, &b.session_id).cmp(&(
            a.last_used_at,
            a.created_at,
            &a.session_id,
        ))
    });
}

#[cfg(test)]
mod tests {
    crate::store_conformance_tests!(|| (super::MemoryStore::new(), ()));
}
