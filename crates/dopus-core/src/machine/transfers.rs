//! Files in direct conversations: what the machine decides (docs/files.md, "Node
//! integration").
//!
//! - **Announce.** [`NodeMachine::send_file`] stores the file message and its outgoing
//!   transfer in one batch, queues the manifest (a `file` chat content) in the outbox, and asks
//!   the runtime to serve the blob to that peer ([`TransferRequest::Serve`]).
//! - **Accept.** A `file` message from an accepted contact stores an incoming transfer
//!   (`queued`) with the message and asks the runtime to fetch it from that peer
//!   ([`TransferRequest::Fetch`]); the runtime checks the disk space, verifies every chunk
//!   group and commits the resume point in batches.
//! - **Finish.** When a download is complete and verified, the receiver says `file_have`
//!   (reliable, through the outbox); the sender's upload is `done` when it arrives.
//! - **Cancel.** Either side's cancel reaches the other (`file_cancel`, `file_revoke`).
//! - **Resume.** A peer with an unfinished transfer gets a direct connection whenever it is
//!   online (so files to an offline peer start when it returns); the runtime resumes every
//!   unfinished transfer from the store at start.
//!
//! The bytes never pass through the machine: they travel on the blob channel between the
//! runtime's file task and the peer's.

use super::{Event, MachineError, NodeMachine, Output};
use crate::chat::Outgoing;
use crate::store::{
    Change, ConversationId, EnvelopeId, FileTransfer, Message, MessageId, Outcome, SourceFile,
    Store, StoreError, TransferDirection, TransferId, TransferReason, TransferState,
};
use dopus_proto::peer::{Content, Conversation};
use dopus_proto::transfer::FileManifest;
use dopus_proto::transfer::TransferContent;
use dopus_types::{Timestamp, UserId};

use super::CommandError;

/// What the machine asks of the runtime's file task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferRequest {
    /// Serve this outgoing transfer's blob to `peer` (from its source file).
    Serve {
        /// The transfer as stored.
        transfer: Box<FileTransfer>,
        /// To whom.
        peer: UserId,
    },
    /// Fetch this incoming transfer (from whoever of the conversation holds it).
    Fetch {
        /// The transfer as stored.
        transfer: Box<FileTransfer>,
        /// Who announced it.
        peer: UserId,
    },
    /// The user paused, resumed or cancelled a transfer.
    Control {
        /// Which.
        id: TransferId,
        /// What to do.
        action: TransferAction,
    },
    /// The other side is done with this transfer (it has the file, or gave up): stop serving.
    Finished {
        /// Which.
        id: TransferId,
    },
}

/// What the user can do to a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferAction {
    /// Stop asking (a download) until resumed.
    Pause,
    /// Go on.
    Resume,
    /// Give up; the other side hears of it.
    Cancel,
}

impl NodeMachine {
    /// Sends a file to `peer`: the manifest (prepared by the runtime from the file at
    /// `source`) goes in a `file` message through the outbox; the blob is served to the peer
    /// over the blob channel.
    pub fn send_file(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        peer: UserId,
        manifest: FileManifest,
        source: SourceFile,
        reply_to: Option<MessageId>,
    ) -> Result<(Message, FileTransfer), CommandError> {
        let id = self.new_id(now);
        let (mut changes, out, transfer) = self
            .chat
            .send_file(&*store, now, id, peer, manifest, source, reply_to)?;
        let item =
            crate::outbox::item_for(&out, now).map_err(|_| StoreError::Invalid("outbox item"))?;
        changes.push(Change::OutboxEnqueue(item));
        let new = match changes.iter().next() {
            Some(Change::InsertMessage(m)) => m.clone(),
            _ => return Err(StoreError::Invalid("file message").into()),
        };
        let applied = store.apply(changes)?;
        self.outbox_wake = true;
        self.stalled.remove(&peer);
        let stored = match applied.outcomes.first() {
            Some(Outcome::Inserted(seq)) => new.stored(*seq),
            _ => store.message(&id)?.ok_or(CommandError::UnknownMessage)?,
        };
        if self.detailed_events {
            self.emit(Event::MessageAdded(Box::new(stored.clone())));
        }
        self.emit(Event::Transfer(transfer.id));
        self.outputs
            .push_back(Output::Transfer(TransferRequest::Serve {
                transfer: Box::new(transfer.clone()),
                peer,
            }));
        Ok((stored, transfer))
    }

    /// Pauses, resumes or cancels a transfer. Cancelling tells the other side.
    pub fn transfer_action(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        id: TransferId,
        action: TransferAction,
    ) -> Result<FileTransfer, CommandError> {
        let mut t = store.transfer(&id)?.ok_or(CommandError::UnknownTransfer)?;
        if t.state.is_final() {
            return Err(CommandError::TransferEnded);
        }
        let ConversationId::Direct(peer) = t.conversation else {
            return Err(CommandError::UnknownTransfer);
        };
        let (state, reason) = match action {
            TransferAction::Pause => (TransferState::Paused, Some(TransferReason::User)),
            TransferAction::Resume => (TransferState::Queued, None),
            TransferAction::Cancel => (TransferState::Cancelled, Some(TransferReason::User)),
        };
        // An incoming transfer's state is the download's: the file task moves it (and writes
        // it) as it pauses or resumes. The record is moved here too, so the answer is exact.
        store.apply_one(Change::SetTransferState {
            id,
            state,
            reason,
            at: now,
        })?;
        t.state = state;
        t.reason = reason;
        if action == TransferAction::Cancel {
            let blob = t.manifest.blob;
            let content = match t.direction {
                TransferDirection::Incoming => TransferContent::FileCancel { blob },
                TransferDirection::Outgoing => TransferContent::FileRevoke { blob },
            };
            self.queue_transfer_content(now, peer, content, store)?;
        }
        self.emit(Event::Transfer(id));
        self.outputs
            .push_back(Output::Transfer(TransferRequest::Control { id, action }));
        Ok(t)
    }

    /// The file task finished a download (complete and verified): tell the sender.
    pub(super) fn on_download_done(
        &mut self,
        now: Timestamp,
        id: TransferId,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let Some(t) = store.transfer(&id)? else {
            return Ok(());
        };
        if let ConversationId::Direct(peer) = t.conversation
            && t.direction == TransferDirection::Incoming
        {
            let blob = t.manifest.blob;
            self.queue_transfer_content(now, peer, TransferContent::FileHave { blob }, store)?;
        }
        Ok(())
    }

    /// The file task gave up a download (no space, a hash mismatch, a disk error): the
    /// sender hears it as a cancel (`file_cancel`), stops serving, and stops reconnecting for
    /// it. Nothing is sent for a transfer that is not a failed incoming one.
    pub fn download_failed(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        id: TransferId,
    ) -> Result<(), MachineError> {
        let Some(t) = store.transfer(&id)? else {
            return Ok(());
        };
        if let ConversationId::Direct(peer) = t.conversation
            && t.direction == TransferDirection::Incoming
            && t.state == TransferState::Failed
        {
            let blob = t.manifest.blob;
            self.queue_transfer_content(now, peer, TransferContent::FileCancel { blob }, store)?;
        }
        self.transfer_changed(id);
        Ok(())
    }

    fn queue_transfer_content(
        &mut self,
        now: Timestamp,
        peer: UserId,
        content: TransferContent,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let out = Outgoing {
            peer,
            id: EnvelopeId(self.new_id(now).0),
            conversation: Conversation::Direct,
            sent_at: now,
            content: Content::Transfer(content),
            reliable: true,
        };
        self.queue_reliable(now, &out, store)
    }

    /// A transfer control content from `sender` (an accepted contact; already deduplicated
    /// and acknowledged by the chat logic).
    pub(super) fn on_transfer_content(
        &mut self,
        now: Timestamp,
        sender: UserId,
        content: &TransferContent,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let conversation = ConversationId::Direct(sender);
        let (direction, state, reason) = match content {
            // The receiver has the whole file: our upload is done.
            TransferContent::FileHave { .. } => {
                (TransferDirection::Outgoing, TransferState::Done, None)
            }
            // The receiver gave up.
            TransferContent::FileCancel { .. } => (
                TransferDirection::Outgoing,
                TransferState::Cancelled,
                Some(TransferReason::User),
            ),
            // The sender withdrew it.
            TransferContent::FileRevoke { .. } => (
                TransferDirection::Incoming,
                TransferState::Failed,
                Some(TransferReason::Revoked),
            ),
        };
        for t in store.transfers_of_blob(content.blob())? {
            if t.conversation != conversation || t.direction != direction || t.state.is_final() {
                continue;
            }
            store.apply_one(Change::SetTransferState {
                id: t.id,
                state,
                reason,
                at: now,
            })?;
            self.emit(Event::Transfer(t.id));
            let request = if direction == TransferDirection::Incoming {
                TransferRequest::Control {
                    id: t.id,
                    action: TransferAction::Cancel,
                }
            } else {
                TransferRequest::Finished { id: t.id }
            };
            self.outputs.push_back(Output::Transfer(request));
        }
        Ok(())
    }

    /// Incoming transfers stored by a batch of received changes: fetch them.
    pub(super) fn fetch_received(&mut self, transfers: Vec<FileTransfer>) {
        for t in transfers {
            if let ConversationId::Direct(peer) = t.conversation {
                self.transfer_peers.insert(peer);
                self.emit(Event::Transfer(t.id));
                self.outputs
                    .push_back(Output::Transfer(TransferRequest::Fetch {
                        transfer: Box::new(t),
                        peer,
                    }));
            }
        }
    }

    /// Keeps a direct connection to every online peer with an unfinished transfer (files to an
    /// offline peer start when it returns; a dropped connection is made again).
    pub(super) fn transfer_links(
        &mut self,
        now: Timestamp,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        if self.transfer_peers_dirty {
            self.transfer_peers_dirty = false;
            self.transfer_peers = store
                .unfinished_transfers()?
                .into_iter()
                .filter_map(|t| match t.conversation {
                    ConversationId::Direct(peer) => Some(peer),
                    ConversationId::Channel(_) => None,
                })
                .collect();
        }
        let peers: Vec<UserId> = self.transfer_peers.iter().copied().collect();
        for peer in peers {
            self.maybe_connect(now, peer);
        }
        Ok(())
    }

    /// Something may have ended or started a transfer: read the peers with unfinished ones
    /// again at the next prepare.
    pub fn transfers_changed(&mut self) {
        self.transfer_peers_dirty = true;
    }

    /// The runtime changed a transfer's record: show it, and read the peers with unfinished
    /// transfers again.
    pub fn transfer_changed(&mut self, id: TransferId) {
        self.transfer_peers_dirty = true;
        self.emit(Event::Transfer(id));
    }
}
