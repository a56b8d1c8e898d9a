//! 1:1 conversations: what a user action or a decrypted payload means for the store, the UI and
//! the peer. Sans-IO: every call takes the store (read-only), `now` and fresh ids, and returns
//! the [`Changes`] to apply atomically, the events to show and the contents to send.
//!
//! Protocol flow:
//! - a user action (`send_text`, `edit`, `delete`, `react`) becomes a [`Changes`] (the local
//!   effect, applied at once) and an [`Outgoing`] content that the runtime queues in the outbox,
//!   encrypts for each of the peer's devices and delivers (data channel, else mailbox);
//! - the peer stores what it receives and answers with a `delivered` receipt naming the envelope
//!   id; the receipt moves our message to `delivered` and removes the envelope from the outbox,
//!   so the machine retries (`crate::outbox::retry_delay`) until that happens;
//! - receivers deduplicate by envelope id ([`Change::MarkProcessed`]), so a retry after a lost
//!   receipt is acknowledged again but never shown twice;
//! - typing indicators and WebRTC signals are ephemeral: never stored, never retried.

use crate::store::{
    Change, Changes, Contact, ContactState, ConversationId, DeliveryState, EnvelopeId,
    FileTransfer, Message, MessageId, MessageKind, NewMessage, Seq, SourceFile, Store, StoreError,
    TransferDirection, TransferId, TransferState,
};
use dopus_proto::peer::{
    self, BulkContent, BulkItem, ChatContent, Content, Conversation, MAX_BODY_BYTES,
    MAX_EMOJI_BYTES, MAX_IDS_PER_MESSAGE, PeerPayload, ReactionAction, ReceiptKind,
};
use dopus_proto::transfer::{FileManifest, GroupSet};
use dopus_types::{Timestamp, UserId};
use std::collections::HashMap;

pub use crate::outgoing::{Outgoing, delivered_receipt};

/// Typing indicators are sent at most this often while a user keeps typing.
pub const TYPING_INTERVAL_MS: u64 = 3_000;
/// A typing indicator shows for this long without a refresh.
pub const TYPING_EXPIRY_MS: u64 = 6_000;
/// A peer's `sent_at` further ahead of our clock than this is taken as this far ahead: a wrong
/// or hostile clock cannot pin its messages below everything said later.
pub const MAX_CLOCK_AHEAD_MS: u64 = 5 * 60 * 1000;

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Not a contact, or a contact we have not both accepted.
    #[error("not an accepted contact")]
    NotAContact,
    /// The contact is blocked.
    #[error("this contact is blocked")]
    Blocked,
    /// Empty or too long text.
    #[error("message text must be 1 to {MAX_BODY_BYTES} bytes")]
    BadBody,
    /// Not a usable emoji.
    #[error("a reaction must be 1 to {MAX_EMOJI_BYTES} bytes")]
    BadEmoji,
    /// No such message.
    #[error("no such message")]
    UnknownMessage,
    /// Only the sender may edit or delete a message.
    #[error("only the sender can change a message")]
    NotYours,
    /// The message was deleted.
    #[error("the message was deleted")]
    Deleted,
    /// A file manifest outside its limits.
    #[error("the file's description is invalid")]
    InvalidFile,
    /// A link preview outside its limits.
    #[error("the link preview is invalid")]
    BadPreview,
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Something the UI should learn about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatEvent {
    /// A new message was stored (ours or theirs).
    MessageAdded(MessageId),
    /// A message changed: edit, delete, reaction.
    MessageUpdated(MessageId),
    /// One of our messages moved forward in delivery (a receipt named it).
    StateChanged {
        /// Which message.
        id: MessageId,
        /// Its conversation.
        conversation: ConversationId,
        /// Its state now.
        state: DeliveryState,
    },
    /// A contact typed or stopped.
    Typing {
        /// Who.
        user: UserId,
        /// Typing or not.
        active: bool,
    },
    /// A contact's record changed (request received, accepted, declined).
    ContactChanged(UserId),
}

/// What handling one decrypted payload produced.
#[derive(Debug, Default)]
pub struct Received {
    /// Apply these in one transaction (with the session pickles of the decryption).
    pub changes: Changes,
    /// Show these after the changes are applied.
    pub events: Vec<ChatEvent>,
    /// Send these (acknowledgements).
    pub replies: Vec<Outgoing>,
    /// Not a chat content: the runtime handles it (WebRTC signals, session resets, verification).
    pub control: Option<Content>,
}

/// A text message the user wrote, before it gets an id and a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    /// The text.
    pub body: String,
    /// The message it answers.
    pub reply_to: Option<MessageId>,
    /// A link preview the sender's node fetched (only when the user turned previews on).
    pub preview: Option<Box<dopus_proto::content::LinkPreview>>,
}

impl Draft {
    /// A plain text.
    pub fn new(body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            reply_to: None,
            preview: None,
        }
    }
}

/// The conversation logic of one user.
#[derive(Debug)]
pub struct Chat {
    me: UserId,
    /// Send read receipts (off by default: opt-in).
    pub read_receipts: bool,
    typing_sent: HashMap<UserId, Timestamp>,
    /// Contacts whose last typing indicator said "typing": their next message ends it with a
    /// `Typing { active: false }` event. Without one, a message announces no typing change
    /// (one event fewer per message in a stream).
    typing_seen: std::collections::HashSet<UserId>,
}

/// The wire form of a stored message id. Every stored id is a UUIDv7 (ours, or a peer's that the
/// envelope decoder checked), so a failure means the row is corrupt.
pub fn wire_id(id: MessageId) -> Result<peer::MessageId, ChatError> {
    peer::MessageId::from_uuid(id.0).map_err(|_| ChatError::UnknownMessage)
}

/// The store's id for a wire message id.
pub fn store_id(id: &peer::MessageId) -> MessageId {
    MessageId(*id.as_uuid())
}

/// The `sent_at` of a new message of ours in `conversation`: `now`, but strictly after every
/// message already there (ours and the peer's). Conversations are shown in `sent_at` order, so
/// this keeps each sender's messages in the order they were written, for both sides and across
/// re-sends, and puts a reply after what it answers even when the two clocks disagree (a hybrid
/// logical clock).
pub fn next_sent_at(
    store: &dyn Store,
    conversation: &ConversationId,
    now: Timestamp,
) -> Result<Timestamp, StoreError> {
    Ok(store
        .newest_sent_at(conversation)?
        .map_or(now, |newest| now.max(newest.plus_millis(1))))
}

/// The `sent_at` we store for a peer's message: theirs, but never more than
/// [`MAX_CLOCK_AHEAD_MS`] ahead of `now`.
pub fn clamp_sent_at(sent_at: Timestamp, now: Timestamp) -> Timestamp {
    sent_at.min(now.plus_millis(MAX_CLOCK_AHEAD_MS))
}

/// Refuses a message body that is blank or longer than [`MAX_BODY_BYTES`].
pub fn check_body(body: &str) -> Result<(), ChatError> {
    if body.trim().is_empty() || body.len() > MAX_BODY_BYTES {
        Err(ChatError::BadBody)
    } else {
        Ok(())
    }
}

impl Chat {
    /// The chat of user `me`.
    pub fn new(me: UserId) -> Self {
        Self {
            me,
            read_receipts: false,
            typing_sent: HashMap::new(),
            typing_seen: std::collections::HashSet::new(),
        }
    }

    /// Who we are.
    pub fn me(&self) -> UserId {
        self.me
    }

    /// The contact `peer`, if messages (and files) may go to them now.
    pub(crate) fn messageable(store: &dyn Store, peer: &UserId) -> Result<Contact, ChatError> {
        let contact = store.contact(peer)?.ok_or(ChatError::NotAContact)?;
        if contact.blocked {
            return Err(ChatError::Blocked);
        }
        if contact.state != ContactState::Accepted {
            return Err(ChatError::NotAContact);
        }
        Ok(contact)
    }

    /// A new text message to `peer` with id `id`.
    pub fn send_text(
        &mut self,
        store: &dyn Store,
        now: Timestamp,
        id: MessageId,
        peer: UserId,
        body: String,
        reply_to: Option<MessageId>,
    ) -> Result<(Changes, Outgoing), ChatError> {
        Self::messageable(store, &peer)?;
        check_body(&body)?;
        self.typing_sent.remove(&peer);
        let sent_at = next_sent_at(store, &ConversationId::Direct(peer), now)?;
        let draft = Draft {
            body,
            reply_to,
            preview: None,
        };
        let (change, out) = self.text(now, sent_at, peer, id, draft)?;
        Ok((Changes::from(change), out))
    }

    /// New text messages to `peer`, in order: `(id, draft)` each. All or none: one
    /// bad body refuses them all. The contact is checked and the conversation's newest
    /// `sent_at` read once; each message then takes the next millisecond (the hybrid logical
    /// clock of [`next_sent_at`], carried through the batch instead of read back per message).
    /// The changes are one `InsertMessage` per message, in order.
    pub fn send_texts(
        &mut self,
        store: &dyn Store,
        now: Timestamp,
        peer: UserId,
        texts: Vec<(MessageId, Draft)>,
    ) -> Result<(Changes, Vec<Outgoing>), ChatError> {
        Self::messageable(store, &peer)?;
        for (_, draft) in &texts {
            check_body(&draft.body)?;
            if let Some(p) = &draft.preview {
                p.validate().map_err(|_| ChatError::BadPreview)?;
            }
        }
        self.typing_sent.remove(&peer);
        let mut sent_at = next_sent_at(store, &ConversationId::Direct(peer), now)?;
        let mut changes = Changes::new();
        let mut outs = Vec::with_capacity(texts.len());
        for (i, (id, draft)) in texts.into_iter().enumerate() {
            if i > 0 {
                sent_at = sent_at.plus_millis(1);
            }
            let (change, out) = self.text(now, sent_at, peer, id, draft)?;
            changes.push(change);
            outs.push(out);
        }
        Ok((changes, outs))
    }

    /// One text message of ours, as stored and as sent.
    fn text(
        &self,
        now: Timestamp,
        sent_at: Timestamp,
        peer: UserId,
        id: MessageId,
        draft: Draft,
    ) -> Result<(Change, Outgoing), ChatError> {
        let Draft {
            body,
            reply_to,
            preview,
        } = draft;
        let out = Outgoing {
            peer,
            id: EnvelopeId(id.0),
            conversation: Conversation::Direct,
            sent_at,
            content: Content::Chat(ChatContent::Text {
                body: body.clone(),
                reply_to: reply_to.map(wire_id).transpose()?,
                preview: preview.clone(),
            }),
            reliable: true,
        };
        let change = Change::InsertMessage(NewMessage {
            preview,
            id,
            conversation: ConversationId::Direct(peer),
            sender: self.me,
            kind: MessageKind::Text,
            body,
            reply_to,
            sent_at,
            received_at: now,
            delivery: DeliveryState::Pending,
        });
        Ok((change, out))
    }

    /// A file message to `peer` with id `id` (the manifest was prepared by the caller), and
    /// the outgoing transfer that serves it, stored with the message. The transfer's id is the
    /// message's id.
    #[allow(clippy::too_many_arguments)]
    pub fn send_file(
        &mut self,
        store: &dyn Store,
        now: Timestamp,
        id: MessageId,
        peer: UserId,
        manifest: FileManifest,
        source: SourceFile,
        reply_to: Option<MessageId>,
    ) -> Result<(Changes, Outgoing, FileTransfer), ChatError> {
        Self::messageable(store, &peer)?;
        manifest.validate().map_err(|_| ChatError::InvalidFile)?;
        let conversation = ConversationId::Direct(peer);
        let sent_at = next_sent_at(store, &conversation, now)?;
        let out = Outgoing {
            peer,
            id: EnvelopeId(id.0),
            conversation: Conversation::Direct,
            sent_at,
            content: Content::Chat(ChatContent::File {
                file: Box::new(manifest.clone()),
                reply_to: reply_to.map(wire_id).transpose()?,
            }),
            reliable: true,
        };
        let transfer = FileTransfer {
            id: TransferId(id.0),
            conversation,
            message: Some(id),
            direction: TransferDirection::Outgoing,
            manifest: manifest.clone(),
            state: TransferState::Queued,
            reason: None,
            verified: GroupSet::new(),
            source: Some(source),
            saved_path: None,
            created_at: now,
            updated_at: now,
        };
        let mut changes = Changes::new();
        changes.push(Change::InsertMessage(NewMessage {
            preview: None,
            id,
            conversation,
            sender: self.me,
            kind: MessageKind::File,
            body: manifest.name,
            reply_to,
            sent_at,
            received_at: now,
            delivery: DeliveryState::Pending,
        }));
        changes.push(Change::SaveTransfer(transfer.clone()));
        Ok((changes, out, transfer))
    }

    fn own_message(
        &self,
        store: &dyn Store,
        id: &MessageId,
    ) -> Result<(Message, UserId), ChatError> {
        let msg = store.message(id)?.ok_or(ChatError::UnknownMessage)?;
        if msg.sender != self.me {
            return Err(ChatError::NotYours);
        }
        if msg.deleted {
            return Err(ChatError::Deleted);
        }
        let ConversationId::Direct(peer) = msg.conversation else {
            return Err(ChatError::UnknownMessage);
        };
        Ok((msg, peer))
    }

    /// Edits one of our messages; `envelope` is a fresh id for the edit's envelope.
    pub fn edit(
        &mut self,
        store: &dyn Store,
        now: Timestamp,
        envelope: EnvelopeId,
        id: MessageId,
        body: String,
    ) -> Result<(Changes, Outgoing), ChatError> {
        check_body(&body)?;
        let (_, peer) = self.own_message(store, &id)?;
        Self::messageable(store, &peer)?;
        let changes = Changes::from(Change::EditMessage {
            id,
            body: body.clone(),
            edited_at: now,
        });
        let out = Outgoing {
            peer,
            id: envelope,
            conversation: Conversation::Direct,
            sent_at: now,
            content: Content::Chat(ChatContent::Edit {
                target: wire_id(id)?,
                body,
            }),
            reliable: true,
        };
        Ok((changes, out))
    }

    /// Deletes one of our messages for everyone.
    pub fn delete(
        &mut self,
        store: &dyn Store,
        now: Timestamp,
        envelope: EnvelopeId,
        id: MessageId,
    ) -> Result<(Changes, Outgoing), ChatError> {
        let (_, peer) = self.own_message(store, &id)?;
        Self::messageable(store, &peer)?;
        let out = Outgoing {
            peer,
            id: envelope,
            conversation: Conversation::Direct,
            sent_at: now,
            content: Content::Chat(ChatContent::Delete {
                target: wire_id(id)?,
            }),
            reliable: true,
        };
        Ok((Changes::from(Change::DeleteMessage(id)), out))
    }

    /// Adds or removes our reaction on any message of a 1:1 conversation.
    pub fn react(
        &mut self,
        store: &dyn Store,
        now: Timestamp,
        envelope: EnvelopeId,
        id: MessageId,
        emoji: String,
        add: bool,
    ) -> Result<(Changes, Outgoing), ChatError> {
        if emoji.trim().is_empty() || emoji.len() > MAX_EMOJI_BYTES {
            return Err(ChatError::BadEmoji);
        }
        let msg = store.message(&id)?.ok_or(ChatError::UnknownMessage)?;
        if msg.deleted {
            return Err(ChatError::Deleted);
        }
        let ConversationId::Direct(peer) = msg.conversation else {
            return Err(ChatError::UnknownMessage);
        };
        Self::messageable(store, &peer)?;
        let changes = Changes::from(Change::React {
            message: id,
            user: self.me,
            emoji: emoji.clone(),
            add,
            at: now,
        });
        let out = Outgoing {
            peer,
            id: envelope,
            conversation: Conversation::Direct,
            sent_at: now,
            content: Content::Chat(ChatContent::Reaction {
                target: wire_id(id)?,
                emoji,
                action: if add {
                    ReactionAction::Add
                } else {
                    ReactionAction::Remove
                },
            }),
            reliable: true,
        };
        Ok((changes, out))
    }

    /// A typing indicator for `peer`, throttled: "typing" at most once per
    /// [`TYPING_INTERVAL_MS`], "stopped" only after a "typing" was sent.
    pub fn typing(
        &mut self,
        now: Timestamp,
        envelope: EnvelopeId,
        peer: UserId,
        active: bool,
    ) -> Option<Outgoing> {
        if active {
            if let Some(last) = self.typing_sent.get(&peer)
                && now.millis_since(*last) < TYPING_INTERVAL_MS
            {
                return None;
            }
            self.typing_sent.insert(peer, now);
        } else if self.typing_sent.remove(&peer).is_none() {
            return None;
        }
        Some(Outgoing {
            peer,
            id: envelope,
            conversation: Conversation::Direct,
            sent_at: now,
            content: Content::Chat(ChatContent::Typing { active }),
            reliable: false,
        })
    }

    /// Marks the conversation with `peer` read up to `up_to`; with read receipts on, also the
    /// receipt to send for the messages this newly covers.
    pub fn mark_read(
        &mut self,
        store: &dyn Store,
        now: Timestamp,
        envelope: EnvelopeId,
        peer: UserId,
        up_to: MessageId,
    ) -> Result<(Changes, Option<Outgoing>), ChatError> {
        let msg = store.message(&up_to)?.ok_or(ChatError::UnknownMessage)?;
        let conversation = ConversationId::Direct(peer);
        if msg.conversation != conversation {
            return Err(ChatError::UnknownMessage);
        }
        let last_read = store
            .conversation(&conversation)?
            .and_then(|c| c.last_read)
            .unwrap_or(Seq(0));
        let changes = Changes::from(Change::MarkRead {
            conversation,
            up_to: msg.seq,
        });
        if !self.read_receipts || msg.seq <= last_read {
            return Ok((changes, None));
        }
        // The newly read messages from the peer, newest arrival first, bounded to one receipt:
        // arrival order, since "read up to" means everything that had reached us by then.
        let mut ids = Vec::new();
        let mut before = Some(Seq(msg.seq.0 + 1));
        'pages: while ids.len() < MAX_IDS_PER_MESSAGE {
            let page = store.messages_arrived_before(&conversation, before, 100)?;
            if page.is_empty() {
                break;
            }
            for m in &page {
                if m.seq <= last_read || ids.len() >= MAX_IDS_PER_MESSAGE {
                    break 'pages;
                }
                if m.sender == peer
                    && !m.deleted
                    && let Ok(wid) = wire_id(m.id)
                {
                    ids.push(wid);
                }
            }
            before = page.last().map(|m| m.seq);
        }
        if ids.is_empty() {
            return Ok((changes, None));
        }
        let out = Outgoing {
            peer,
            id: envelope,
            conversation: Conversation::Direct,
            sent_at: now,
            content: Content::Chat(ChatContent::Receipt {
                receipt: ReceiptKind::Read,
                ids,
            }),
            reliable: false,
        };
        Ok((changes, Some(out)))
    }

    /// Handles a payload that was decrypted and whose sender binding was checked.
    /// `ack_envelope` is a fresh id for the acknowledgement, if one is due.
    pub fn receive(
        &mut self,
        store: &dyn Store,
        now: Timestamp,
        sender: UserId,
        payload: &PeerPayload,
        ack_envelope: EnvelopeId,
    ) -> Result<Received, ChatError> {
        let mut r = Received::default();
        let envelope = EnvelopeId(*payload.id.as_uuid());
        let conversation = match &payload.conversation {
            Conversation::Direct => ConversationId::Direct(sender),
            // Space channels arrive with Megolm, not here.
            Conversation::Channel { .. } => return Ok(r),
        };
        let contact = store.contact(&sender)?;
        let accepted = contact
            .as_ref()
            .is_some_and(|c| c.state == ContactState::Accepted && !c.blocked);
        // Receipts are best effort: a lost one is answered again when the sender retries.
        let ack = || delivered_receipt(sender, ack_envelope, now, payload.id);
        match &payload.content {
            Content::Chat(ChatContent::Text {
                body,
                reply_to,
                preview,
            }) => {
                if !accepted {
                    return Ok(r);
                }
                let id = store_id(&payload.id);
                r.changes.push(Change::InsertMessage(NewMessage {
                    preview: preview.clone(),
                    id,
                    conversation,
                    sender,
                    kind: MessageKind::Text,
                    body: body.clone(),
                    reply_to: reply_to.as_ref().map(store_id),
                    sent_at: clamp_sent_at(payload.sent_at, now),
                    received_at: now,
                    delivery: DeliveryState::Delivered,
                }));
                r.events.push(ChatEvent::MessageAdded(id));
                if self.typing_seen.remove(&sender) {
                    r.events.push(ChatEvent::Typing {
                        user: sender,
                        active: false,
                    });
                }
                r.replies.push(ack());
            }
            Content::Chat(ChatContent::File { file, reply_to }) => {
                if !accepted {
                    return Ok(r);
                }
                let id = store_id(&payload.id);
                r.changes.push(Change::InsertMessage(NewMessage {
                    preview: None,
                    id,
                    conversation,
                    sender,
                    kind: MessageKind::File,
                    body: file.name.clone(),
                    reply_to: reply_to.as_ref().map(store_id),
                    sent_at: clamp_sent_at(payload.sent_at, now),
                    received_at: now,
                    delivery: DeliveryState::Delivered,
                }));
                // A message id is taken in once (deduplicated), so its transfer is made once.
                r.changes.push(Change::SaveTransfer(FileTransfer {
                    id: TransferId(id.0),
                    conversation,
                    message: Some(id),
                    direction: TransferDirection::Incoming,
                    manifest: (**file).clone(),
                    state: TransferState::Queued,
                    reason: None,
                    verified: GroupSet::new(),
                    source: None,
                    saved_path: None,
                    created_at: now,
                    updated_at: now,
                }));
                r.events.push(ChatEvent::MessageAdded(id));
                r.replies.push(ack());
            }
            Content::Transfer(_) => {
                if !accepted {
                    return Ok(r);
                }
                r.control = Some(payload.content.clone());
                r.replies.push(ack());
            }
            Content::Chat(ChatContent::Edit { target, body }) => {
                if !accepted {
                    return Ok(r);
                }
                let id = store_id(target);
                if let Some(m) = store.message(&id)?
                    && m.sender == sender
                    && m.conversation == conversation
                {
                    r.changes.push(Change::EditMessage {
                        id,
                        body: body.clone(),
                        edited_at: clamp_sent_at(payload.sent_at, now),
                    });
                    r.events.push(ChatEvent::MessageUpdated(id));
                }
                r.replies.push(ack());
            }
            Content::Chat(ChatContent::Delete { target }) => {
                if !accepted {
                    return Ok(r);
                }
                let id = store_id(target);
                if let Some(m) = store.message(&id)?
                    && m.sender == sender
                    && m.conversation == conversation
                {
                    r.changes.push(Change::DeleteMessage(id));
                    r.events.push(ChatEvent::MessageUpdated(id));
                }
                r.replies.push(ack());
            }
            Content::Chat(ChatContent::Reaction {
                target,
                emoji,
                action,
            }) => {
                if !accepted {
                    return Ok(r);
                }
                let id = store_id(target);
                // A deleted message keeps no reactions (its sender's delete erased them): one
                // that arrives after the delete is acknowledged and dropped, as on the side
                // that deleted it.
                if let Some(m) = store.message(&id)?
                    && m.conversation == conversation
                    && !m.deleted
                {
                    r.changes.push(Change::React {
                        message: id,
                        user: sender,
                        emoji: emoji.clone(),
                        add: *action == ReactionAction::Add,
                        at: now,
                    });
                    r.events.push(ChatEvent::MessageUpdated(id));
                }
                r.replies.push(ack());
            }
            Content::Chat(ChatContent::Typing { active }) => {
                if accepted {
                    if *active {
                        self.typing_seen.insert(sender);
                    } else {
                        self.typing_seen.remove(&sender);
                    }
                    r.events.push(ChatEvent::Typing {
                        user: sender,
                        active: *active,
                    });
                }
                return Ok(r); // ephemeral: not marked processed
            }
            Content::Chat(ChatContent::Receipt { receipt, ids }) => {
                let state = match receipt {
                    ReceiptKind::Delivered => DeliveryState::Delivered,
                    ReceiptKind::Read => DeliveryState::Read,
                };
                for wid in ids {
                    let id = store_id(wid);
                    if *receipt == ReceiptKind::Delivered {
                        r.changes.push(Change::OutboxAck {
                            id: EnvelopeId(id.0),
                            peer: sender,
                        });
                    }
                    if let Some(m) = store.message(&id)?
                        && m.sender == self.me
                        && m.conversation == conversation
                        && m.delivery.can_become(state)
                    {
                        r.changes.push(Change::SetDelivery { id, state });
                        r.events.push(ChatEvent::StateChanged {
                            id,
                            conversation: m.conversation,
                            state,
                        });
                    }
                }
            }
            Content::Contact(c) => {
                let got =
                    crate::contacts::receive(store, now, sender, payload.id, c, ack_envelope)?;
                r.changes.extend(got.changes);
                if got.changed {
                    r.events.push(ChatEvent::ContactChanged(sender));
                }
                r.replies.extend(got.ack);
            }
            // Spaces are taken in by the machine (machine/space.rs), never here.
            Content::Space(_) => return Ok(r),
            Content::Session(_) | Content::Rtc(_) | Content::Verification(_) | Content::Call(_) => {
                r.control = Some(payload.content.clone());
                if !matches!(payload.content, Content::Session(_)) {
                    return Ok(r); // ephemeral
                }
            }
            // Its items were taken in one by one before this (`receive_bulk_item`, each applied
            // before the next, as envelopes of their own would be); this marks the bulk
            // payload's own id processed, so a replay of it is refused before decryption.
            Content::Bulk(BulkContent::Bulk { .. }) => {}
        }
        r.changes.push(Change::MarkProcessed {
            id: envelope,
            received_at: now,
        });
        Ok(r)
    }

    /// Takes in one item of a bulk payload, as the payload it stands for
    /// ([`BulkItem::to_payload`]). The caller applies each item's changes before the next (an
    /// item may edit a message an earlier one inserted), then passes the bulk payload itself
    /// to [`Chat::receive`]. Items are deduplicated by their own ids: a retry re-sends
    /// unacknowledged messages in a new bulk payload, so an item already taken in is only
    /// acknowledged again.
    pub fn receive_bulk_item(
        &mut self,
        store: &dyn Store,
        now: Timestamp,
        sender: UserId,
        bulk: &PeerPayload,
        item: &BulkItem,
        ack_envelope: EnvelopeId,
    ) -> Result<Received, ChatError> {
        if store.is_processed(&EnvelopeId(*item.id.as_uuid()))? {
            return Ok(Received {
                replies: vec![delivered_receipt(sender, ack_envelope, now, item.id)],
                ..Received::default()
            });
        }
        self.receive(store, now, sender, &item.to_payload(bulk), ack_envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use dopus_proto::peer::{PAYLOAD_VERSION, RecipientBinding, SenderBinding};
    use dopus_types::{Curve25519Key, DeviceId, DeviceKeys, Ed25519Key};
    use uuid::Uuid;

    fn user(seed: u8) -> UserId {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        UserId::from_key(Ed25519Key::from_bytes(sk.verifying_key().as_bytes()).unwrap())
    }

    fn id(n: u64) -> MessageId {
        MessageId(uuid::Builder::from_unix_timestamp_millis(n, &[n as u8; 10]).into_uuid())
    }

    fn env(n: u64) -> EnvelopeId {
        EnvelopeId(Uuid::from_u128(u128::from(n) | (1 << 100)))
    }

    fn contact(u: UserId, state: ContactState) -> Change {
        Change::SaveContact(Contact {
            user_id: u,
            display_name: None,
            verified: false,
            blocked: false,
            state,
            request_note: None,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
        })
    }

    fn payload(from: UserId, to: UserId, pid: MessageId, content: Content) -> PeerPayload {
        let keys = DeviceKeys {
            ed25519: *from.key(),
            curve25519: Curve25519Key::from_bytes([1; 32]),
        };
        PeerPayload {
            version: PAYLOAD_VERSION,
            id: wire_id(pid).unwrap(),
            sender: SenderBinding {
                user: from,
                device: DeviceId::from_random([1; 16]),
                keys,
            },
            recipient: RecipientBinding {
                user: to,
                device: DeviceId::from_random([2; 16]),
                ed25519: *to.key(),
            },
            certificate: None,
            conversation: Conversation::Direct,
            sent_at: Timestamp(5),
            content,
        }
    }

    #[test]
    fn a_bulk_payload_is_taken_in_item_by_item_and_deduplicated_per_item() {
        let (alice, bob) = (user(1), user(2));
        let mut store = MemoryStore::new();
        store
            .apply_one(contact(alice, ContactState::Accepted))
            .unwrap();
        let mut chat = Chat::new(bob);
        let item = |n: u64, content: Content| BulkItem {
            id: wire_id(id(n)).unwrap(),
            conversation: Conversation::Direct,
            sent_at: Timestamp(n),
            content: match content {
                Content::Chat(c) => c,
                _ => unreachable!("bulk items are chat contents"),
            },
        };
        let text = |n: u64| {
            item(
                n,
                Content::Chat(ChatContent::Text {
                    preview: None,
                    body: format!("m{n}"),
                    reply_to: None,
                }),
            )
        };
        // Message 1 already came on its own.
        let single = payload(alice, bob, id(1), Content::Chat(text(1).content));
        let r = chat
            .receive(&store, Timestamp(50), alice, &single, env(90))
            .unwrap();
        store.apply(r.changes).unwrap();

        // A bulk payload retries 1 (its receipt was lost) next to 2, 3 and an edit of 2.
        let bulk = payload(
            alice,
            bob,
            id(100),
            Content::Bulk(BulkContent::Bulk {
                items: vec![
                    text(1),
                    text(2),
                    text(3),
                    item(
                        4,
                        Content::Chat(ChatContent::Edit {
                            target: wire_id(id(2)).unwrap(),
                            body: "m2!".into(),
                        }),
                    ),
                ],
            }),
        );
        // Taken in item by item, each applied before the next, then the bulk payload itself.
        let mut inserted = Vec::new();
        let mut acked = Vec::new();
        let Content::Bulk(BulkContent::Bulk { items }) = &bulk.content else {
            unreachable!()
        };
        for (k, item) in items.iter().enumerate() {
            let r = chat
                .receive_bulk_item(
                    &store,
                    Timestamp(60),
                    alice,
                    &bulk,
                    item,
                    env(91 + k as u64),
                )
                .unwrap();
            inserted.extend(r.changes.iter().filter_map(|c| match c {
                Change::InsertMessage(m) => Some(m.id),
                _ => None,
            }));
            for reply in &r.replies {
                let Content::Chat(ChatContent::Receipt {
                    receipt: ReceiptKind::Delivered,
                    ids,
                }) = &reply.content
                else {
                    panic!("an item answered {:?}", reply.content.kind_name());
                };
                acked.extend(ids.iter().copied());
            }
            store.apply(r.changes).unwrap();
        }
        let r = chat
            .receive(&store, Timestamp(60), alice, &bulk, env(99))
            .unwrap();
        assert!(r.replies.is_empty() && r.events.is_empty());
        store.apply(r.changes).unwrap();
        assert_eq!(inserted, [id(2), id(3)], "1 is not stored twice");
        // Every item is acknowledged, 1 again (its first receipt was lost).
        assert_eq!(acked, [1, 2, 3, 4].map(|n| wire_id(id(n)).unwrap()));
        // The edit applied to the message the same bulk payload inserted.
        assert_eq!(store.message(&id(2)).unwrap().unwrap().body, "m2!");
        // The items and the bulk payload itself are marked processed: a replay of either is
        // answered without showing anything.
        for n in [2, 3, 4, 100] {
            assert!(store.is_processed(&EnvelopeId(id(n).0)).unwrap(), "{n}");
        }
    }

    #[test]
    fn send_requires_an_accepted_unblocked_contact_and_a_body() {
        let (alice, bob) = (user(1), user(2));
        let mut store = MemoryStore::new();
        let mut chat = Chat::new(alice);
        let r = chat.send_text(&store, Timestamp(1), id(1), bob, "hi".into(), None);
        assert!(matches!(r, Err(ChatError::NotAContact)));
        store
            .apply_one(contact(bob, ContactState::OutgoingRequest))
            .unwrap();
        let r = chat.send_text(&store, Timestamp(1), id(1), bob, "hi".into(), None);
        assert!(matches!(r, Err(ChatError::NotAContact)));
        store
            .apply_one(contact(bob, ContactState::Accepted))
            .unwrap();
        let r = chat.send_text(&store, Timestamp(1), id(1), bob, "  ".into(), None);
        assert!(matches!(r, Err(ChatError::BadBody)));
        let (changes, out) = chat
            .send_text(&store, Timestamp(1), id(1), bob, "hi".into(), None)
            .unwrap();
        store.apply(changes).unwrap();
        assert_eq!(out.peer, bob);
        assert!(out.reliable);
        let m = store.message(&id(1)).unwrap().unwrap();
        assert_eq!(m.delivery, DeliveryState::Pending);
    }

    #[test]
    fn a_batch_is_refused_whole_and_takes_one_millisecond_per_message_after_the_newest() {
        let (alice, bob) = (user(1), user(2));
        let mut store = MemoryStore::new();
        let mut chat = Chat::new(alice);
        let texts = |ids: &[u64], bodies: &[&str]| -> Vec<(MessageId, Draft)> {
            ids.iter()
                .zip(bodies)
                .map(|(&n, b)| (id(n), Draft::new(*b)))
                .collect()
        };
        let r = chat.send_texts(&store, Timestamp(10), bob, texts(&[1, 2], &["a", "b"]));
        assert!(matches!(r, Err(ChatError::NotAContact)));
        store
            .apply_one(contact(bob, ContactState::Accepted))
            .unwrap();
        // One blank body refuses the whole batch.
        let r = chat.send_texts(
            &store,
            Timestamp(10),
            bob,
            texts(&[1, 2, 3], &["a", " ", "c"]),
        );
        assert!(matches!(r, Err(ChatError::BadBody)));
        // A message already stored at 20 ms: the batch continues after it, 1 ms apart.
        let (changes, _) = chat
            .send_text(&store, Timestamp(20), id(9), bob, "earlier".into(), None)
            .unwrap();
        store.apply(changes).unwrap();
        let (changes, outs) = chat
            .send_texts(
                &store,
                Timestamp(10),
                bob,
                texts(&[1, 2, 3], &["a", "b", "c"]),
            )
            .unwrap();
        let times: Vec<u64> = outs.iter().map(|o| o.sent_at.as_millis()).collect();
        assert_eq!(times, [21, 22, 23]);
        assert_eq!(
            outs.iter().map(|o| o.id).collect::<Vec<_>>(),
            [1, 2, 3].map(|n| EnvelopeId(id(n).0))
        );
        store.apply(changes).unwrap();
        for (n, body, at) in [(1, "a", 21), (2, "b", 22), (3, "c", 23)] {
            let m = store.message(&id(n)).unwrap().unwrap();
            assert_eq!((m.body.as_str(), m.sent_at), (body, Timestamp(at)));
            assert_eq!(m.delivery, DeliveryState::Pending);
        }
    }

    #[test]
    fn a_message_ends_typing_only_when_its_sender_was_typing() {
        let (alice, bob) = (user(1), user(2));
        let mut b_store = MemoryStore::new();
        b_store
            .apply_one(contact(alice, ContactState::Accepted))
            .unwrap();
        let mut b = Chat::new(bob);
        let text = |n: u64| {
            Content::Chat(ChatContent::Text {
                preview: None,
                body: format!("m{n}"),
                reply_to: None,
            })
        };
        let typing_events = |events: &[ChatEvent]| -> Vec<bool> {
            events
                .iter()
                .filter_map(|e| match e {
                    ChatEvent::Typing { active, .. } => Some(*active),
                    _ => None,
                })
                .collect()
        };
        let r = b
            .receive(
                &b_store,
                Timestamp(2),
                alice,
                &payload(alice, bob, id(1), text(1)),
                env(1),
            )
            .unwrap();
        assert_eq!(r.events, [ChatEvent::MessageAdded(id(1))]);
        b_store.apply(r.changes).unwrap();
        let typing = Content::Chat(ChatContent::Typing { active: true });
        let r = b
            .receive(
                &b_store,
                Timestamp(3),
                alice,
                &payload(alice, bob, id(2), typing),
                env(2),
            )
            .unwrap();
        assert_eq!(typing_events(&r.events), [true]);
        let r = b
            .receive(
                &b_store,
                Timestamp(4),
                alice,
                &payload(alice, bob, id(3), text(3)),
                env(3),
            )
            .unwrap();
        assert_eq!(
            typing_events(&r.events),
            [false],
            "the message ends the typing"
        );
        b_store.apply(r.changes).unwrap();
        let r = b
            .receive(
                &b_store,
                Timestamp(5),
                alice,
                &payload(alice, bob, id(4), text(4)),
                env(4),
            )
            .unwrap();
        assert!(typing_events(&r.events).is_empty(), "ended once");
    }

    #[test]
    fn a_message_is_stored_once_acknowledged_and_the_receipt_completes_delivery() {
        let (alice, bob) = (user(1), user(2));
        let mut a_store = MemoryStore::new();
        let mut b_store = MemoryStore::new();
        a_store
            .apply_one(contact(bob, ContactState::Accepted))
            .unwrap();
        b_store
            .apply_one(contact(alice, ContactState::Accepted))
            .unwrap();
        let mut a = Chat::new(alice);
        let mut b = Chat::new(bob);
        let (changes, out) = a
            .send_text(&a_store, Timestamp(1), id(7), bob, "hello".into(), None)
            .unwrap();
        a_store.apply(changes).unwrap();
        let p = payload(alice, bob, id(7), out.content.clone());
        let r = b
            .receive(&b_store, Timestamp(2), alice, &p, env(1))
            .unwrap();
        assert_eq!(r.events[0], ChatEvent::MessageAdded(id(7)));
        b_store.apply(r.changes).unwrap();
        // A retry of the same envelope is a duplicate: acknowledged, not shown again.
        assert!(b_store.is_processed(&EnvelopeId(id(7).0)).unwrap());
        let again = b
            .receive(&b_store, Timestamp(3), alice, &p, env(2))
            .unwrap();
        let applied = b_store.apply(again.changes).unwrap();
        assert!(
            applied
                .outcomes
                .iter()
                .any(|o| matches!(o, crate::store::Outcome::Duplicate(_)))
        );
        // Bob's receipt reaches Alice.
        let ack = &r.replies[0];
        let rp = payload(bob, alice, id(100), ack.content.clone());
        let ra = a.receive(&a_store, Timestamp(4), bob, &rp, env(3)).unwrap();
        a_store.apply(ra.changes).unwrap();
        let m = a_store.message(&id(7)).unwrap().unwrap();
        assert_eq!(m.delivery, DeliveryState::Delivered);
    }

    #[test]
    fn a_link_preview_travels_with_its_text_and_a_bad_one_is_refused_before_sending() {
        let (alice, bob) = (user(1), user(2));
        let mut a_store = MemoryStore::new();
        let mut b_store = MemoryStore::new();
        a_store
            .apply_one(contact(bob, ContactState::Accepted))
            .unwrap();
        b_store
            .apply_one(contact(alice, ContactState::Accepted))
            .unwrap();
        let mut a = Chat::new(alice);
        let mut b = Chat::new(bob);
        let preview = dopus_proto::content::LinkPreview {
            url: "https://example.org/".into(),
            title: Some("Example".into()),
            description: Some("A page".into()),
            image: Some("data:image/png;base64,AAAA".into()),
        };
        let draft = Draft {
            preview: Some(Box::new(preview.clone())),
            ..Draft::new("see https://example.org/")
        };
        let (changes, outs) = a
            .send_texts(&a_store, Timestamp(1), bob, vec![(id(7), draft)])
            .unwrap();
        a_store.apply(changes).unwrap();
        let mine = a_store.message(&id(7)).unwrap().unwrap();
        assert_eq!(mine.preview.as_deref(), Some(&preview));
        let p = payload(alice, bob, id(7), outs[0].content.clone());
        let r = b
            .receive(&b_store, Timestamp(2), alice, &p, env(1))
            .unwrap();
        b_store.apply(r.changes).unwrap();
        let theirs = b_store.message(&id(7)).unwrap().unwrap();
        assert_eq!(theirs.preview.as_deref(), Some(&preview));
        // An image that is not a small raster data URL is refused before anything is stored.
        let bad = Draft {
            preview: Some(Box::new(dopus_proto::content::LinkPreview {
                image: Some("https://tracker.example/pixel.gif".into()),
                ..preview
            })),
            ..Draft::new("again")
        };
        let r = a.send_texts(&a_store, Timestamp(3), bob, vec![(id(8), bad)]);
        assert!(matches!(r, Err(ChatError::BadPreview)));
    }

    #[test]
    fn only_the_sender_may_edit_or_delete() {
        let (alice, bob, eve) = (user(1), user(2), user(3));
        let mut store = MemoryStore::new();
        store
            .apply_one(contact(alice, ContactState::Accepted))
            .unwrap();
        store
            .apply_one(contact(eve, ContactState::Accepted))
            .unwrap();
        let mut b = Chat::new(bob);
        let text = payload(
            alice,
            bob,
            id(1),
            Content::Chat(ChatContent::Text {
                preview: None,
                body: "one".into(),
                reply_to: None,
            }),
        );
        let r = b
            .receive(&store, Timestamp(2), alice, &text, env(1))
            .unwrap();
        store.apply(r.changes).unwrap();
        // Eve cannot edit Alice's message (it is in another conversation anyway).
        let forged = payload(
            eve,
            bob,
            id(2),
            Content::Chat(ChatContent::Edit {
                target: wire_id(id(1)).unwrap(),
                body: "x".into(),
            }),
        );
        let r = b
            .receive(&store, Timestamp(3), eve, &forged, env(2))
            .unwrap();
        store.apply(r.changes).unwrap();
        assert_eq!(store.message(&id(1)).unwrap().unwrap().body, "one");
        // Bob cannot edit Alice's message locally.
        assert!(matches!(
            b.edit(&store, Timestamp(4), env(3), id(1), "mine".into()),
            Err(ChatError::NotYours)
        ));
        // Alice can.
        let edit = payload(
            alice,
            bob,
            id(3),
            Content::Chat(ChatContent::Edit {
                target: wire_id(id(1)).unwrap(),
                body: "uno".into(),
            }),
        );
        let r = b
            .receive(&store, Timestamp(5), alice, &edit, env(4))
            .unwrap();
        store.apply(r.changes).unwrap();
        assert_eq!(store.message(&id(1)).unwrap().unwrap().body, "uno");
        let del = payload(
            alice,
            bob,
            id(4),
            Content::Chat(ChatContent::Delete {
                target: wire_id(id(1)).unwrap(),
            }),
        );
        let r = b
            .receive(&store, Timestamp(6), alice, &del, env(5))
            .unwrap();
        store.apply(r.changes).unwrap();
        assert!(store.message(&id(1)).unwrap().unwrap().deleted);
        // A reaction that arrives after the delete is acknowledged and dropped: the deleted
        // message keeps no reactions, as on its sender's side.
        let late = payload(
            alice,
            bob,
            id(5),
            Content::Chat(ChatContent::Reaction {
                target: wire_id(id(1)).unwrap(),
                emoji: "👍".into(),
                action: ReactionAction::Add,
            }),
        );
        let r = b
            .receive(&store, Timestamp(7), alice, &late, env(6))
            .unwrap();
        assert_eq!(r.replies.len(), 1, "acknowledged");
        store.apply(r.changes).unwrap();
        assert!(store.reactions(&id(1)).unwrap().is_empty());
    }

    #[test]
    fn strangers_and_blocked_contacts_cannot_post() {
        let (alice, bob) = (user(1), user(2));
        let mut store = MemoryStore::new();
        let mut b = Chat::new(bob);
        let text = payload(
            alice,
            bob,
            id(1),
            Content::Chat(ChatContent::Text {
                preview: None,
                body: "spam".into(),
                reply_to: None,
            }),
        );
        let r = b
            .receive(&store, Timestamp(2), alice, &text, env(1))
            .unwrap();
        assert!(r.changes.is_empty() && r.events.is_empty());
        let mut blocked = Contact {
            user_id: alice,
            display_name: None,
            verified: false,
            blocked: true,
            state: ContactState::Accepted,
            request_note: None,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
        };
        store
            .apply_one(Change::SaveContact(blocked.clone()))
            .unwrap();
        let r = b
            .receive(&store, Timestamp(2), alice, &text, env(1))
            .unwrap();
        assert!(r.changes.is_empty());
        blocked.blocked = false;
        store.apply_one(Change::SaveContact(blocked)).unwrap();
        let r = b
            .receive(&store, Timestamp(2), alice, &text, env(1))
            .unwrap();
        assert!(!r.changes.is_empty());
    }

    #[test]
    fn typing_is_throttled() {
        let (alice, bob) = (user(1), user(2));
        let mut a = Chat::new(alice);
        assert!(a.typing(Timestamp(0), env(1), bob, false).is_none());
        assert!(a.typing(Timestamp(0), env(1), bob, true).is_some());
        assert!(a.typing(Timestamp(1_000), env(2), bob, true).is_none());
        assert!(a.typing(Timestamp(2_999), env(3), bob, true).is_none());
        assert!(a.typing(Timestamp(3_000), env(4), bob, true).is_some());
        assert!(a.typing(Timestamp(3_100), env(5), bob, false).is_some());
        assert!(a.typing(Timestamp(3_200), env(6), bob, false).is_none());
    }

    #[test]
    fn read_receipts_are_opt_in() {
        let (alice, bob) = (user(1), user(2));
        let mut store = MemoryStore::new();
        store
            .apply_one(contact(alice, ContactState::Accepted))
            .unwrap();
        let mut b = Chat::new(bob);
        for n in 1..=3 {
            let p = payload(
                alice,
                bob,
                id(n),
                Content::Chat(ChatContent::Text {
                    preview: None,
                    body: format!("m{n}"),
                    reply_to: None,
                }),
            );
            let r = b.receive(&store, Timestamp(n), alice, &p, env(n)).unwrap();
            store.apply(r.changes).unwrap();
        }
        let (changes, receipt) = b
            .mark_read(&store, Timestamp(9), env(10), alice, id(3))
            .unwrap();
        assert!(receipt.is_none());
        store.apply(changes).unwrap();
        let p = payload(
            alice,
            bob,
            id(4),
            Content::Chat(ChatContent::Text {
                preview: None,
                body: "m4".into(),
                reply_to: None,
            }),
        );
        let r = b
            .receive(&store, Timestamp(10), alice, &p, env(11))
            .unwrap();
        store.apply(r.changes).unwrap();
        b.read_receipts = true;
        let (_, receipt) = b
            .mark_read(&store, Timestamp(11), env(12), alice, id(4))
            .unwrap();
        match receipt.unwrap().content {
            Content::Chat(ChatContent::Receipt { receipt, ids }) => {
                assert_eq!(receipt, ReceiptKind::Read);
                assert_eq!(ids, vec![wire_id(id(4)).unwrap()]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
