//! A batch of writes that the store applies in one transaction.
//!
//! The protocol layer never writes piecemeal: after handling an input it returns one
//! [`Changes`] with everything that must become durable together (for example the new Olm
//! session pickle, the decrypted message, the processed envelope id and the ack in the outbox),
//! and the runtime hands it to [`crate::store::Store::apply`]. Either every change lands or none
//! does, so a crash can never leave a session ratcheted past a message that was not stored.

use super::records::{
    AccountRecord, ChannelId, Contact, ConversationId, DeliveryState, EnvelopeId, FileTransfer,
    MegolmInboundRecord, MegolmOutboundRecord, MegolmWaitingRecord, MessageId, NewMessage,
    OlmSessionRecord, OutboxItem, PeerDevice, Pickle, Seq, SpaceOpRecord,
};
use super::records::{TransferId, TransferReason, TransferState};
use dopus_proto::transfer::GroupSet;
use dopus_types::{BlobHash, DeviceId, SpaceId, Timestamp, UserId};

/// One write. Applied in the order pushed.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Change {
    /// Creates or replaces our account.
    SaveAccount(AccountRecord),
    /// Replaces the Olm account pickle only (after one-time keys were used or generated).
    /// Fails with `NotFound` when there is no account.
    SetAccountPickle(Pickle),
    /// Creates or replaces a peer device (keyed by user and device id).
    SavePeerDevice(PeerDevice),
    /// Forgets a peer device.
    RemovePeerDevice {
        /// Its user.
        user: UserId,
        /// Its id.
        device: DeviceId,
    },
    /// Creates or replaces a contact.
    SaveContact(Contact),
    /// Forgets a contact (their messages stay).
    RemoveContact(UserId),
    /// Creates or replaces an Olm session (keyed by session id).
    SaveOlmSession(OlmSessionRecord),
    /// Forgets an Olm session.
    RemoveOlmSession {
        /// vodozemac's session id.
        session_id: String,
    },
    /// Creates or replaces an inbound Megolm session (keyed by session id).
    SaveMegolmInbound(MegolmInboundRecord),
    /// Creates or replaces the outbound Megolm session of its channel.
    SaveMegolmOutbound(MegolmOutboundRecord),
    /// Drops the outbound Megolm session of a channel (forces rotation).
    RemoveMegolmOutbound(ChannelId),
    /// Creates the conversation if it does not exist.
    EnsureConversation {
        /// Which conversation.
        id: ConversationId,
        /// Its creation time if it is new.
        now: Timestamp,
    },
    /// Inserts a message; a message with the same id already stored makes this a no-op
    /// reported as [`Outcome::Duplicate`]. Creates the conversation if needed.
    InsertMessage(NewMessage),
    /// Replaces a message's body. Ignored ([`Outcome::Unchanged`]) for unknown or deleted
    /// messages and for edits not newer than the last applied one, so edits that arrive out of
    /// order converge. Checking that the editor is the sender is the caller's job.
    EditMessage {
        /// The message.
        id: MessageId,
        /// The new text.
        body: String,
        /// When the edit was made (sender's clock).
        edited_at: Timestamp,
    },
    /// Deletes a message: the body and its reactions are erased and it leaves the search index;
    /// the row stays as a tombstone so a late duplicate cannot bring it back.
    DeleteMessage(MessageId),
    /// Moves a message's delivery state forward (see `DeliveryState::can_become`).
    SetDelivery {
        /// The message.
        id: MessageId,
        /// The new state.
        state: DeliveryState,
    },
    /// Adds or removes one user's emoji on a message. The message need not be stored yet.
    React {
        /// The message.
        message: MessageId,
        /// Who reacted.
        user: UserId,
        /// The emoji.
        emoji: String,
        /// Add (`true`) or remove (`false`).
        add: bool,
        /// When (for ordering the users).
        at: Timestamp,
    },
    /// Marks a conversation read up to and including `up_to`; never moves backwards.
    MarkRead {
        /// The conversation.
        conversation: ConversationId,
        /// The newest read message.
        up_to: Seq,
    },
    /// Queues an envelope; an id already queued is a no-op.
    OutboxEnqueue(OutboxItem),
    /// Records an attempt to reach one recipient and when to try next.
    OutboxReschedule {
        /// The envelope.
        id: EnvelopeId,
        /// The recipient.
        peer: UserId,
        /// Attempts so far.
        attempts: u32,
        /// Not before this time.
        next_attempt_at: Timestamp,
    },
    /// One recipient acknowledged the envelope: it is no longer sent to them (and the item
    /// goes once no recipient is left).
    OutboxAck {
        /// The envelope.
        id: EnvelopeId,
        /// The recipient whose receipt named it.
        peer: UserId,
    },
    /// Removes an envelope for every recipient (given up, or unreadable).
    OutboxRemove(EnvelopeId),
    /// Remembers an inbound envelope id so a replay is dropped.
    MarkProcessed {
        /// The envelope.
        id: EnvelopeId,
        /// When it arrived (pruning uses it).
        received_at: Timestamp,
    },
    /// Creates or replaces a file transfer (creating its conversation if needed).
    SaveTransfer(FileTransfer),
    /// Records the verified, durable chunk groups of a download (the resume point). Written in
    /// batches, after the blob and outboard files were synced. `Unchanged` for an unknown id.
    SetTransferProgress {
        /// The transfer.
        id: TransferId,
        /// Every verified group (replaces the stored set).
        verified: GroupSet,
        /// When.
        at: Timestamp,
    },
    /// Moves a transfer to another state. `Unchanged` for an unknown id.
    SetTransferState {
        /// The transfer.
        id: TransferId,
        /// The new state.
        state: TransferState,
        /// Why (paused, failed, waiting), or `None`.
        reason: Option<TransferReason>,
        /// When.
        at: Timestamp,
    },
    /// Records where the user saved a received file. `Unchanged` for an unknown id.
    SetTransferSavedPath {
        /// The transfer.
        id: TransferId,
        /// The path.
        path: String,
        /// When.
        at: Timestamp,
    },
    /// Forgets a transfer. `Unchanged` for an unknown id.
    RemoveTransfer(TransferId),
    /// Remembers that `user` holds the blob `blob` whole (a channel member's `file_have`), so a
    /// download restarted later still spreads its ranges across every holder.
    /// `Unchanged` if already known.
    AddBlobHolder {
        /// The blob.
        blob: BlobHash,
        /// Who holds it.
        user: UserId,
        /// When it was heard (the age bound counts from the first time).
        at: Timestamp,
    },
    /// Forgets that `user` holds `blob` (they withdrew it, or sent a bad chunk group).
    /// `Unchanged` if not known.
    RemoveBlobHolder {
        /// The blob.
        blob: BlobHash,
        /// Who no longer holds it.
        user: UserId,
    },
    /// Forgets every holder of `blob` (no download of it is left). `Unchanged` if none known.
    RemoveBlobHolders {
        /// The blob.
        blob: BlobHash,
    },
    /// Forgets every holder first heard of before `before` (the age bound). `Unchanged` if
    /// none is that old.
    PruneBlobHolders {
        /// The cut-off.
        before: Timestamp,
    },
    /// Stores one op of a space's control log; an op already stored is
    /// [`Outcome::Unchanged`].
    SaveSpaceOp(SpaceOpRecord),
    /// Forgets a space: its ops and its Megolm sessions (inbound and outbound). Its channels'
    /// conversations and messages stay until removed separately.
    RemoveSpace(SpaceId),
    /// Remembers that a Megolm message index was decrypted, so a replay is dropped;
    /// [`Outcome::Unchanged`] if it already was (a replay).
    MarkMegolmSeen {
        /// The session.
        session_id: String,
        /// The message index.
        index: u32,
        /// When.
        at: Timestamp,
    },
    /// Keeps a channel message until its session's key arrives; the same (session, index)
    /// kept twice is [`Outcome::Unchanged`].
    SaveMegolmWaiting(MegolmWaitingRecord),
    /// Drops every message waiting for a session (decrypted, or given up).
    RemoveMegolmWaiting {
        /// The session.
        session_id: String,
    },
    /// Keeps a channel message's ciphertext for later members (the same (session, index) kept
    /// twice is [`Outcome::Unchanged`]); beyond [`crate::store::MAX_KEPT_CIPHERTEXTS`] in its
    /// channel, the oldest are dropped.
    KeepChannelCiphertext(crate::store::ChannelCiphertextRecord),
    /// Sets the state of every message waiting for a session (withheld, given up, asked
    /// again); [`Outcome::Unchanged`] if none waits.
    SetMegolmWaitState {
        /// The session.
        session_id: String,
        /// The new state.
        state: crate::store::MegolmWaitState,
    },
    /// Sets (`Some`) or clears (`None`) a setting.
    SetSetting {
        /// The key.
        key: String,
        /// The value.
        value: Option<String>,
    },
}

/// What one [`Change`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// The write took effect.
    Applied,
    /// Nothing to do: the state already covers it (stale edit, backwards delivery state,
    /// unknown target, already-processed id).
    Unchanged,
    /// A new message was stored at this position.
    Inserted(Seq),
    /// A message with this id was already stored, at this position; nothing was written.
    Duplicate(Seq),
}

impl Outcome {
    /// Whether anything was written.
    pub fn changed(self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Inserted(_))
    }
}

/// An ordered batch of changes applied atomically.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Changes {
    changes: Vec<Change>,
}

impl Changes {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a change.
    pub fn push(&mut self, change: Change) -> &mut Self {
        self.changes.push(change);
        self
    }

    /// Appends every change of `other`, after the ones already here.
    pub fn extend(&mut self, other: Changes) -> &mut Self {
        self.changes.extend(other.changes);
        self
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// The changes, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Change> {
        self.changes.iter()
    }
}

impl From<Change> for Changes {
    fn from(change: Change) -> Self {
        Self {
            changes: vec![change],
        }
    }
}

impl FromIterator<Change> for Changes {
    fn from_iter<I: IntoIterator<Item = Change>>(iter: I) -> Self {
        Self {
            changes: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for Changes {
    type Item = Change;
    type IntoIter = std::vec::IntoIter<Change>;
    fn into_iter(self) -> Self::IntoIter {
        self.changes.into_iter()
    }
}

/// What a batch did: one [`Outcome`] per change, in order.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Applied {
    /// One per change, in the order of the batch.
    pub outcomes: Vec<Outcome>,
}
