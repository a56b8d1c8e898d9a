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
//! Files in space channels (docs/files.md, "Channels"):
//!
//! - **Announce.** [`NodeMachine::channel_send_file`] posts the manifest in the channel inside
//!   Megolm (a `file` chat content, like any channel message), stores the message and an
//!   outgoing transfer whose conversation is the channel, and asks the runtime to serve the
//!   blob to the channel's audience ([`TransferRequest::ServeChannel`]).
//! - **Who may fetch.** The runtime offers a channel's blobs only to the members allowed to
//!   view it: [`TransferRequest::Audience`] tells it who they are whenever that changes (a
//!   kick, a role, an overwrite); anyone else's `Ask` gets the `not found` answer.
//! - **Holders.** Every member that holds the whole blob serves it: the sender, and each
//!   member once its download is complete and verified, which then says `file_have` to the
//!   channel's other readers (over Olm, tagged with the channel). A downloader keeps a direct
//!   connection to the holders it knows of (the sender, and every `file_have`, kept in the
//!   store so a restarted download still knows them) and asks every blob channel it has; the planner spreads ranges across those that answer and drops a
//!   holder at its first bad chunk group.
//! - The sender's upload is `done` once a first member has the file; it goes on serving.
//!
//! The bytes never pass through the machine: they travel on the blob channel between the
//! runtime's file task and the peer's.

use super::{Event, MachineError, NodeMachine, Output};
use crate::chat::{ChatError, Outgoing, clamp_sent_at, store_id, wire_id};
use crate::store::{
    Change, Changes, ConversationId, DeliveryState, EnvelopeId, FileTransfer, Message, MessageId,
    MessageKind, NewMessage, Outcome, SourceFile, Store, StoreError, TransferDirection, TransferId,
    TransferReason, TransferState,
};
use dopus_proto::peer::{ChatContent, Content, Conversation, PeerPayload};
use dopus_proto::transfer::TransferContent;
use dopus_proto::transfer::{FileManifest, GroupSet};
use dopus_types::{BlobHash, ChannelId, SpaceId, Timestamp, UserId};
use std::collections::{BTreeMap, BTreeSet};

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
    /// Serve this outgoing transfer's blob to the members allowed to view its channel (as
    /// the last [`TransferRequest::Audience`] of that channel says).
    ServeChannel {
        /// The transfer as stored.
        transfer: Box<FileTransfer>,
    },
    /// Who may fetch the files of `channel` now (every member allowed to view it, but us).
    /// Sent whenever it changes, for every channel with a file.
    Audience {
        /// The channel.
        channel: ChannelId,
        /// Its readers.
        members: BTreeSet<UserId>,
    },
    /// `peer` says it holds `blob` now: ask it again over its blob channel, if one is open
    /// (it may have answered an empty `Have` before it had the file).
    Ask {
        /// The new holder.
        peer: UserId,
        /// The blob.
        blob: BlobHash,
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

/// Where a file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileTarget {
    /// A contact (Olm, one receiver).
    Peer(UserId),
    /// A space channel (Megolm, every member allowed to view it).
    Channel(ChannelId),
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

/// Files in channels: who said they hold which blob, and who may fetch each channel's files
/// (in memory; rebuilt from the store at start).
#[derive(Debug, Default)]
pub(super) struct ChannelFiles {
    /// Members known to hold a blob: the member who announced it, and each `file_have`.
    holders: BTreeMap<BlobHash, BTreeSet<UserId>>,
    /// Channels with files, and the audience last told to the runtime (`None`: not yet).
    audiences: BTreeMap<ChannelId, Option<BTreeSet<UserId>>>,
    /// Whether the channels with files were read from the store.
    loaded: bool,
    /// Blobs whose stored holders were read into `holders` (once per blob and run).
    holders_read: BTreeSet<BlobHash>,
}

/// A `file` content received in a channel: the message and its incoming transfer (the
/// transfer's id is the message's id), or `None` if the manifest is not valid.
pub(super) fn channel_file_in(
    now: Timestamp,
    channel: ChannelId,
    sender: UserId,
    id: &dopus_proto::peer::MessageId,
    sent_at: Timestamp,
    file: &FileManifest,
    reply_to: Option<&dopus_proto::peer::MessageId>,
) -> Option<(NewMessage, FileTransfer)> {
    file.validate().ok()?;
    let id = store_id(id);
    let conversation = ConversationId::Channel(channel);
    let message = NewMessage {
        preview: None,
        id,
        conversation,
        sender,
        kind: MessageKind::File,
        body: file.name.clone(),
        reply_to: reply_to.map(store_id),
        sent_at: clamp_sent_at(sent_at, now),
        received_at: now,
        delivery: DeliveryState::Delivered,
    };
    let transfer = FileTransfer {
        id: TransferId(id.0),
        conversation,
        message: Some(id),
        direction: TransferDirection::Incoming,
        manifest: file.clone(),
        state: TransferState::Queued,
        reason: None,
        verified: GroupSet::new(),
        source: None,
        saved_path: None,
        created_at: now,
        updated_at: now,
    };
    Some((message, transfer))
}

impl NodeMachine {
    /// Sends a file in a space channel: the manifest goes inside Megolm like any channel
    /// message; the blob is served to the members allowed to view the channel.
    pub fn channel_send_file(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        channel: ChannelId,
        manifest: FileManifest,
        source: SourceFile,
        reply_to: Option<MessageId>,
    ) -> Result<(Message, FileTransfer), CommandError> {
        let id = self.new_id(now);
        self.channel_send_file_as(now, store, id, channel, manifest, source, reply_to)
    }

    /// Reserves the id of a file about to be sent to `target` (its transfer's id, shown in
    /// state `preparing` while the runtime hashes and encrypts it), refusing at once a
    /// target that cannot take files: not an accepted contact, or a channel we may not post
    /// in.
    pub fn reserve_file_id(
        &mut self,
        now: Timestamp,
        store: &dyn Store,
        target: FileTarget,
    ) -> Result<MessageId, CommandError> {
        match target {
            FileTarget::Peer(peer) => {
                crate::chat::Chat::messageable(store, &peer).map_err(CommandError::Chat)?;
            }
            FileTarget::Channel(channel) => self.spaces.check_post(&self.me, &channel)?,
        }
        Ok(self.new_id(now))
    }

    /// [`NodeMachine::channel_send_file`] under an id from [`NodeMachine::reserve_file_id`].
    #[allow(clippy::too_many_arguments)]
    pub fn channel_send_file_as(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        id: MessageId,
        channel: ChannelId,
        manifest: FileManifest,
        source: SourceFile,
        reply_to: Option<MessageId>,
    ) -> Result<(Message, FileTransfer), CommandError> {
        manifest
            .validate()
            .map_err(|_| CommandError::Chat(ChatError::InvalidFile))?;
        let content = ChatContent::File {
            file: Box::new(manifest.clone()),
            reply_to: reply_to.map(wire_id).transpose()?,
        };
        let sent_at = self.channel_post(now, store, channel, id, content)?;
        let conversation = ConversationId::Channel(channel);
        let new = NewMessage {
            preview: None,
            id,
            conversation,
            sender: self.me,
            kind: MessageKind::File,
            body: manifest.name.clone(),
            reply_to,
            sent_at,
            received_at: now,
            delivery: DeliveryState::Sent,
        };
        let transfer = FileTransfer {
            id: TransferId(id.0),
            conversation,
            message: Some(id),
            direction: TransferDirection::Outgoing,
            manifest,
            state: TransferState::Queued,
            reason: None,
            verified: GroupSet::new(),
            source: Some(source),
            saved_path: None,
            created_at: now,
            updated_at: now,
        };
        let mut changes = Changes::new();
        changes.push(Change::InsertMessage(new.clone()));
        changes.push(Change::SaveTransfer(transfer.clone()));
        let applied = store.apply(changes)?;
        let Some(Outcome::Inserted(seq)) = applied.outcomes.first().copied() else {
            return Err(CommandError::Store(StoreError::Invalid("file message id")));
        };
        let stored = new.stored(seq);
        if self.detailed_events {
            self.emit(Event::MessageAdded(Box::new(stored.clone())));
        }
        self.channel_files.audiences.entry(channel).or_default();
        self.emit(Event::Transfer(transfer.id));
        self.outputs
            .push_back(Output::Transfer(TransferRequest::ServeChannel {
                transfer: Box::new(transfer.clone()),
            }));
        Ok((stored, transfer))
    }

    /// A `file` message from `sender` in a channel was stored with its transfer: fetch it
    /// (the sender is its first holder).
    pub(super) fn channel_file_received(&mut self, sender: UserId, transfer: FileTransfer) {
        let ConversationId::Channel(channel) = transfer.conversation else {
            return;
        };
        self.channel_files
            .holders
            .entry(transfer.manifest.blob)
            .or_default()
            .insert(sender);
        self.channel_files.audiences.entry(channel).or_default();
        self.transfer_peers_dirty = true;
        self.emit(Event::Transfer(transfer.id));
        self.outputs
            .push_back(Output::Transfer(TransferRequest::Fetch {
                transfer: Box::new(transfer),
                peer: sender,
            }));
    }

    /// The readers of `channel` but us, if we are a member of its space.
    fn channel_readers(&self, channel: &ChannelId) -> Option<(SpaceId, BTreeSet<UserId>)> {
        let space = self.channel_space(channel)?;
        let state = self.space(&space)?;
        if !state.is_member(&self.me) || state.channel(channel).is_none() {
            return None;
        }
        let readers = state
            .audience(channel)
            .into_iter()
            .filter(|u| *u != self.me)
            .collect();
        Some((space, readers))
    }

    /// Queues a transfer control content for every other reader of `channel` (over Olm,
    /// tagged with the channel).
    fn tell_channel(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        channel: ChannelId,
        content: TransferContent,
    ) -> Result<(), StoreError> {
        let Some((space, readers)) = self.channel_readers(&channel) else {
            return Ok(());
        };
        for peer in readers {
            let out = Outgoing {
                peer,
                id: EnvelopeId(self.new_id(now).0),
                conversation: Conversation::Channel { space, channel },
                sent_at: now,
                content: Content::Transfer(content.clone()),
                reliable: true,
            };
            self.queue_reliable(now, &out, store)?;
        }
        Ok(())
    }

    /// A transfer control content that came over Olm tagged with a channel: `file_have` from a
    /// reader makes it a holder; `file_revoke` from the member who announced the file ends
    /// our download. Anything from someone who may not view the channel is dropped.
    pub(super) fn on_channel_transfer_content(
        &mut self,
        now: Timestamp,
        sender: UserId,
        payload: &PeerPayload,
        content: &TransferContent,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let Conversation::Channel { space, channel } = payload.conversation else {
            return Ok(());
        };
        store.apply_one(Change::MarkProcessed {
            id: EnvelopeId(*payload.id.as_uuid()),
            received_at: now,
        })?;
        let ack = EnvelopeId(self.new_id(now).0);
        self.hold_receipt(
            now,
            crate::chat::delivered_receipt(sender, ack, now, payload.id),
        );
        let allowed = self
            .channel_readers(&channel)
            .is_some_and(|(s, readers)| s == space && readers.contains(&sender));
        if !allowed {
            tracing::debug!("dropped a channel file control from a non-reader");
            return Ok(());
        }
        let conversation = ConversationId::Channel(channel);
        let blob = *content.blob();
        match content {
            TransferContent::FileHave { .. } => {
                let known = self.channel_files.holders.entry(blob).or_default();
                if known.insert(sender) {
                    self.transfer_peers_dirty = true;
                }
                let mut wanted = false;
                // Our upload is delivered once a first member holds the file; we go on
                // serving it to the others.
                for t in store.transfers_of_blob(&blob)? {
                    wanted |= t.conversation == conversation
                        && t.direction == TransferDirection::Incoming
                        && !t.state.is_final();
                    if t.conversation == conversation
                        && t.direction == TransferDirection::Outgoing
                        && !t.state.is_final()
                        && t.state != TransferState::Paused
                    {
                        store.apply_one(Change::SetTransferState {
                            id: t.id,
                            state: TransferState::Done,
                            reason: None,
                            at: now,
                        })?;
                        self.emit(Event::Transfer(t.id));
                    }
                }
                if wanted {
                    // Kept while our download is unfinished, so a download restarted later
                    // still asks every holder.
                    store.apply_one(Change::AddBlobHolder {
                        blob,
                        user: sender,
                        at: now,
                    })?;
                    self.outputs
                        .push_back(Output::Transfer(TransferRequest::Ask {
                            peer: sender,
                            blob,
                        }));
                }
            }
            TransferContent::FileRevoke { .. } => {
                for t in store.transfers_of_blob(&blob)? {
                    if t.conversation != conversation
                        || t.direction != TransferDirection::Incoming
                        || t.state.is_final()
                    {
                        continue;
                    }
                    let announcer = match t.message {
                        Some(m) => store.message(&m)?.map(|m| m.sender),
                        None => None,
                    };
                    if announcer != Some(sender) {
                        continue;
                    }
                    store.apply_one(Change::SetTransferState {
                        id: t.id,
                        state: TransferState::Failed,
                        reason: Some(TransferReason::Revoked),
                        at: now,
                    })?;
                    self.emit(Event::Transfer(t.id));
                    self.outputs
                        .push_back(Output::Transfer(TransferRequest::Control {
                            id: t.id,
                            action: TransferAction::Cancel,
                        }));
                }
                if let Some(h) = self.channel_files.holders.get_mut(&blob) {
                    h.remove(&sender);
                }
                store.apply_one(Change::RemoveBlobHolder { blob, user: sender })?;
                self.forget_holders_unless_wanted(store, &blob)?;
                self.transfer_peers_dirty = true;
            }
            // A reader giving up changes nothing for the others.
            TransferContent::FileCancel { .. } => {}
        }
        Ok(())
    }

    /// Tells the runtime who may fetch each channel's files when that changed (a join, a
    /// kick, a role or an overwrite), for every channel with a file.
    fn channel_audiences(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        if !self.channel_files.loaded {
            self.channel_files.loaded = true;
            for c in store.conversations()? {
                if let ConversationId::Channel(channel) = c.conversation.id
                    && !store.transfers(&c.conversation.id)?.is_empty()
                {
                    self.channel_files.audiences.entry(channel).or_default();
                }
            }
        }
        let channels: Vec<ChannelId> = self.channel_files.audiences.keys().copied().collect();
        for channel in channels {
            let members = self
                .channel_readers(&channel)
                .map(|(_, r)| r)
                .unwrap_or_default();
            let last = self.channel_files.audiences.get(&channel);
            if last.is_some_and(|l| l.as_ref() == Some(&members)) {
                continue;
            }
            self.channel_files
                .audiences
                .insert(channel, Some(members.clone()));
            self.outputs
                .push_back(Output::Transfer(TransferRequest::Audience {
                    channel,
                    members,
                }));
        }
        Ok(())
    }

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
        self.send_file_as(now, store, id, peer, manifest, source, reply_to)
    }

    /// [`NodeMachine::send_file`] under an id from [`NodeMachine::reserve_file_id`].
    #[allow(clippy::too_many_arguments)]
    pub fn send_file_as(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        id: MessageId,
        peer: UserId,
        manifest: FileManifest,
        source: SourceFile,
        reply_to: Option<MessageId>,
    ) -> Result<(Message, FileTransfer), CommandError> {
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
            self.forget_holders_unless_wanted(store, &blob)?;
            let content = match t.direction {
                TransferDirection::Incoming => TransferContent::FileCancel { blob },
                TransferDirection::Outgoing => TransferContent::FileRevoke { blob },
            };
            match t.conversation {
                ConversationId::Direct(peer) => {
                    self.queue_transfer_content(now, peer, content, store)?;
                }
                // Only the sender's revoke concerns the other readers.
                ConversationId::Channel(channel) => {
                    if t.direction == TransferDirection::Outgoing {
                        self.tell_channel(now, store, channel, content)?;
                    }
                }
            }
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
        if t.direction != TransferDirection::Incoming {
            return Ok(());
        }
        let blob = t.manifest.blob;
        self.forget_holders_unless_wanted(store, &blob)?;
        match t.conversation {
            ConversationId::Direct(peer) => {
                self.queue_transfer_content(now, peer, TransferContent::FileHave { blob }, store)?;
            }
            // One more holder: the channel's other readers may fetch from us now.
            ConversationId::Channel(channel) => {
                self.tell_channel(now, store, channel, TransferContent::FileHave { blob })?;
                self.transfer_peers_dirty = true;
            }
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
        if t.direction == TransferDirection::Incoming && t.state.is_final() {
            self.forget_holders_unless_wanted(store, &t.manifest.blob)?;
        }
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
        self.channel_audiences(store)?;
        if self.transfer_peers_dirty {
            self.transfer_peers_dirty = false;
            let mut peers = BTreeSet::new();
            for t in store.unfinished_transfers()? {
                match t.conversation {
                    ConversationId::Direct(peer) => {
                        peers.insert(peer);
                    }
                    // A download in a channel: every holder we know of (the member who
                    // announced it, and each `file_have`).
                    ConversationId::Channel(_) if t.direction == TransferDirection::Incoming => {
                        let blob = t.manifest.blob;
                        if self.channel_files.holders_read.insert(blob) {
                            // After a restart: the holders that said `file_have` before it
                            // (the runtime asks each one about every download once its blob
                            // channel opens).
                            let kept = store.blob_holders(&blob)?;
                            self.channel_files
                                .holders
                                .entry(blob)
                                .or_default()
                                .extend(kept);
                        }
                        let holders = self.channel_files.holders.entry(blob).or_default();
                        if let Some(m) = t.message
                            && let Some(m) = store.message(&m)?
                        {
                            holders.insert(m.sender);
                        }
                        peers.extend(holders.iter().filter(|u| **u != self.me));
                    }
                    ConversationId::Channel(_) => {}
                }
            }
            self.transfer_peers = peers;
        }
        let peers: Vec<UserId> = self.transfer_peers.iter().copied().collect();
        for peer in peers {
            self.maybe_connect(now, peer);
        }
        Ok(())
    }

    /// Forgets the holders of `blob` (stored and in memory) unless a download of it is still
    /// unfinished: they only serve to spread a download's ranges.
    fn forget_holders_unless_wanted(
        &mut self,
        store: &mut dyn Store,
        blob: &BlobHash,
    ) -> Result<(), StoreError> {
        let wanted = store
            .transfers_of_blob(blob)?
            .iter()
            .any(|t| t.direction == TransferDirection::Incoming && !t.state.is_final());
        if !wanted {
            self.channel_files.holders.remove(blob);
            store.apply_one(Change::RemoveBlobHolders { blob: *blob })?;
            self.transfer_peers_dirty = true;
        }
        Ok(())
    }

    /// A holder of `blob` sent a chunk group that did not verify: the download dropped it, and
    /// it is no longer remembered as a holder (a restart does not ask it again). A later
    /// `file_have` from it makes it one again.
    pub fn drop_blob_holder(
        &mut self,
        store: &mut dyn Store,
        blob: BlobHash,
        user: UserId,
    ) -> Result<(), StoreError> {
        if let Some(h) = self.channel_files.holders.get_mut(&blob) {
            h.remove(&user);
        }
        store.apply_one(Change::RemoveBlobHolder { blob, user })?;
        self.transfer_peers_dirty = true;
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
