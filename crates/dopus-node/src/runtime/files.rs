//! The file task: the I/O of file transfers (docs/files.md), on a thread of its own.
//!
//! The machine decides (announce, fetch, pause, resume, cancel, done:
//! `dopus_core::machine::TransferRequest`); this thread does the work with
//! `dopus_files::BlobNode`: it serves announced files from their source (encrypted on the fly),
//! verifies every chunk group it receives, writes it at its offset in the encrypted blob
//! directory and commits the resume point in batches. It holds none of the actor's state and
//! talks to it only by message: store changes go to the actor as jobs (applied in its next
//! transaction, after the blob files were synced), a finished download as an input, progress
//! straight to the event stream (at most 4 events a second per transfer).
//!
//! Bytes travel on each connection's blob channel (`dopus-blob/1`, beside the message channel):
//! the connection task hands the channel over when it opens ([`FilesTx::open`]); received
//! messages go into the channel's inbox and wake this thread; sent ones go to a small pump task
//! that hands them to the connection, keeping at most [`QUEUED_BYTES`] queued so the transfer
//! never holds more than its share of the send buffer (the connection keeps a quarter of it for
//! messages).

use super::mailbox::{ActorTx, Msg};
use crate::api::dto;
use dopus_core::machine::{Input, TransferAction, TransferRequest};
use dopus_core::store::{
    Change, Changes, ConversationId, FileTransfer, Store, TransferDirection, TransferId,
    TransferReason, TransferState,
};
use dopus_core::transfer::{
    DownloadConfig, DropReason, HolderId, LinkConfig, Upload, UploadOutput,
};
use dopus_files::{BlobDir, BlobNode, BlobTransport, Closed, NodeOutput, Shelf, SourceStamp};
use dopus_types::{BlobHash, ChannelId, Timestamp, UserId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Bytes a blob channel may have queued towards its connection beyond what the connection
/// already took (the connection admits at most three quarters of its send buffer).
pub const QUEUED_BYTES: usize = 1 << 20;
/// The latest progress of each transfer the file thread reported, so `GET /transfers` can
/// show rate and ETA beside the stored state (shared by the file thread and the API).
pub type LiveProgress = Arc<Mutex<BTreeMap<TransferId, dto::TransferProgress>>>;

/// The live progress of the node whose blob directory is `blobs` (one per node; a process
/// may run several nodes in tests, hence the key).
pub fn live_progress(blobs: &std::path::Path) -> LiveProgress {
    static ALL: std::sync::OnceLock<Mutex<BTreeMap<PathBuf, LiveProgress>>> =
        std::sync::OnceLock::new();
    let all = ALL.get_or_init(Default::default);
    let mut all = all.lock().unwrap_or_else(|e| e.into_inner());
    all.entry(blobs.to_path_buf()).or_default().clone()
}

/// An upload with nothing served for this long shows as waiting again (the receiver paused,
/// or is busy elsewhere), rather than a stale rate.
const UPLOAD_IDLE_MS: u64 = 3_000;

/// Longest sleep of the file thread with nothing to do.
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// What the file thread takes in.
pub enum FilesMsg {
    /// The machine asks.
    Request(TransferRequest),
    /// A blob channel to `peer` opened.
    Open {
        /// With whom.
        peer: UserId,
        /// The channel.
        transport: RtcBlob,
    },
    /// Something arrived or room appeared.
    Wake,
    /// Stop.
    Shutdown,
}

/// A handle on the file thread (cheap to clone).
#[derive(Clone)]
pub struct FilesTx(std_mpsc::Sender<FilesMsg>);

impl FilesTx {
    /// Sends a message to the file thread (dropped if it stopped).
    pub fn send(&self, m: FilesMsg) {
        let _ = self.0.send(m);
    }

    /// Wakes the file thread.
    pub fn wake(&self) {
        self.send(FilesMsg::Wake);
    }

    /// Hands over a blob channel that just opened: returns the inbox the connection task
    /// fills with what arrives.
    pub fn open(
        &self,
        rt: &tokio::runtime::Handle,
        peer: UserId,
        handle: dopus_rtc::PeerHandle,
    ) -> Arc<Inbox> {
        let inbox = Arc::new(Inbox::default());
        let pending = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let max = handle.max_message_size();
        let files = self.clone();
        let pump_inbox = inbox.clone();
        let pump_pending = pending.clone();
        rt.spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut bytes = first.len();
                let mut batch = vec![first];
                while batch.len() < 64 {
                    match rx.try_recv() {
                        Ok(m) => {
                            bytes += m.len();
                            batch.push(m);
                        }
                        Err(_) => break,
                    }
                }
                let (_, result) = handle.send_blob_all(batch).await;
                pump_pending.fetch_sub(bytes, Ordering::AcqRel);
                if result.is_err() {
                    pump_inbox.close();
                    files.wake();
                    break;
                }
                files.wake();
            }
        });
        self.send(FilesMsg::Open {
            peer,
            transport: RtcBlob {
                max,
                out: tx,
                pending,
                inbox: inbox.clone(),
            },
        });
        inbox
    }
}

/// What arrived on a blob channel and not yet taken.
#[derive(Default, Debug)]
pub struct Inbox {
    queue: Mutex<VecDeque<Vec<u8>>>,
    closed: AtomicBool,
}

impl Inbox {
    /// A message arrived.
    pub fn push(&self, m: Vec<u8>) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(m);
        }
    }

    /// The channel ended.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// One blob channel as a [`BlobTransport`].
pub struct RtcBlob {
    max: usize,
    out: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<AtomicUsize>,
    inbox: Arc<Inbox>,
}

impl BlobTransport for RtcBlob {
    fn max_message(&self) -> usize {
        self.max
    }

    fn room(&self) -> usize {
        QUEUED_BYTES.saturating_sub(self.pending.load(Ordering::Acquire))
    }

    fn send(&mut self, message: Vec<u8>) -> Result<(), Closed> {
        if self.inbox.closed.load(Ordering::Acquire) {
            return Err(Closed);
        }
        #[cfg(debug_assertions)]
        let message = test_hook::maybe_corrupt(message);
        self.pending.fetch_add(message.len(), Ordering::AcqRel);
        self.out.send(message).map_err(|_| Closed)
    }

    fn try_recv(&mut self) -> Result<Option<Vec<u8>>, Closed> {
        let m = self.inbox.queue.lock().ok().and_then(|mut q| q.pop_front());
        match m {
            Some(m) => Ok(Some(m)),
            None if self.inbox.closed.load(Ordering::Acquire) => Err(Closed),
            None => Ok(None),
        }
    }
}

/// What the file thread takes up at start: every unfinished transfer, and the files of space
/// channels we hold in full (sent or received), which it serves to their readers again.
pub fn startup_transfers(
    store: &dyn Store,
) -> Result<Vec<FileTransfer>, dopus_core::store::StoreError> {
    let mut all = store.unfinished_transfers()?;
    for c in store.conversations()? {
        if matches!(c.conversation.id, ConversationId::Channel(_)) {
            all.extend(
                store
                    .transfers(&c.conversation.id)?
                    .into_iter()
                    .filter(|t| t.state == TransferState::Done),
            );
        }
    }
    Ok(all)
}

/// Starts the file thread over the blob directory `dir`, resuming `unfinished` transfers.
pub fn start(
    dir: PathBuf,
    actor: ActorTx,
    events: broadcast::Sender<Arc<str>>,
    unfinished: Vec<FileTransfer>,
    me: UserId,
) -> anyhow::Result<FilesTx> {
    let blobs = BlobDir::new(&dir)?;
    let dir_for_live = dir.clone();
    let (tx, rx) = std_mpsc::channel();
    let files = FilesTx(tx);
    let mut task = FileTask {
        node: BlobNode::new(
            Shelf::new(BlobDir::new(&dir)?),
            blobs,
            DownloadConfig::default(),
            LinkConfig::default(),
        ),
        dir,
        actor,
        events,
        holders: BTreeMap::new(),
        next_holder: 1,
        outgoing: BTreeMap::new(),
        audiences: BTreeMap::new(),
        channel_blobs: BTreeMap::new(),
        dropped: BTreeMap::new(),
        uploads: BTreeMap::new(),
        last_served: BTreeMap::new(),
        incoming: BTreeMap::new(),
        done: BTreeSet::new(),
        live: live_progress(&dir_for_live),
        _me: me,
    };
    let now = crate::account::now();
    for t in unfinished {
        task.resume(now, t);
    }
    std::thread::Builder::new()
        .name("dopus-files".into())
        .spawn(move || task.run(rx))?;
    Ok(files)
}

struct FileTask {
    node: BlobNode<RtcBlob, Shelf>,
    dir: PathBuf,
    actor: ActorTx,
    events: broadcast::Sender<Arc<str>>,
    /// One holder id per peer, for as long as the node runs.
    holders: BTreeMap<UserId, HolderId>,
    next_holder: u64,
    /// Outgoing transfers being served, and to whom (`None`: the readers of its channel).
    outgoing: BTreeMap<TransferId, (FileTransfer, Option<UserId>)>,
    /// Who may fetch each channel's files (the machine's `TransferRequest::Audience`).
    audiences: BTreeMap<ChannelId, BTreeSet<UserId>>,
    /// Blobs on the shelf that belong to a channel (offered to its audience only).
    channel_blobs: BTreeMap<BlobHash, ChannelId>,
    /// Holders dropped by each download, already reported (user, why).
    dropped: BTreeMap<TransferId, BTreeMap<UserId, dto::DroppedSource>>,
    /// The progress of each outgoing transfer being served (sender-side states and events).
    uploads: BTreeMap<TransferId, Upload>,
    /// When each upload last had an answer go out.
    last_served: BTreeMap<TransferId, Timestamp>,
    /// Incoming transfers being fetched.
    incoming: BTreeMap<TransferId, FileTransfer>,
    /// Downloads already reported done.
    done: BTreeSet<TransferId>,
    /// The latest event of each transfer, for the API's lists.
    live: LiveProgress,
    _me: UserId,
}

impl FileTask {
    fn run(mut self, rx: std_mpsc::Receiver<FilesMsg>) {
        loop {
            loop {
                match rx.try_recv() {
                    Ok(FilesMsg::Shutdown) => return,
                    Ok(m) => self.handle(m),
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => return,
                }
            }
            let now = crate::account::now();
            let busy = self.node.step(now);
            self.flush(now);
            if busy {
                continue;
            }
            let next = self
                .uploads
                .values()
                .filter_map(Upload::poll_timeout)
                .chain(self.node.next_timeout())
                .min();
            let wait = next
                .map_or(IDLE_WAIT, |t| {
                    Duration::from_millis(t.as_millis().saturating_sub(now.as_millis()))
                })
                .min(IDLE_WAIT);
            match rx.recv_timeout(wait) {
                Ok(FilesMsg::Shutdown) => return,
                Ok(m) => self.handle(m),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn holder(&mut self, peer: UserId) -> HolderId {
        *self.holders.entry(peer).or_insert_with(|| {
            let h = HolderId(self.next_holder);
            self.next_holder += 1;
            h
        })
    }

    fn handle(&mut self, m: FilesMsg) {
        let now = crate::account::now();
        match m {
            FilesMsg::Request(r) => self.request(now, r),
            FilesMsg::Open { peer, transport } => {
                let h = self.holder(peer);
                // A new channel replaces the old one (a reconnect).
                self.node.disconnect(now, h);
                self.node.connect(h, transport);
            }
            FilesMsg::Wake | FilesMsg::Shutdown => {}
        }
    }

    fn node_blob_path(&self, t: &FileTransfer) -> PathBuf {
        match BlobDir::new(&self.dir) {
            Ok(d) => d.data_path(t.blob()),
            Err(_) => self.dir.join("missing"),
        }
    }

    /// A stored unfinished transfer, at start.
    fn resume(&mut self, now: Timestamp, t: FileTransfer) {
        let peer = match t.conversation {
            ConversationId::Direct(peer) => peer,
            ConversationId::Channel(_) => return self.resume_channel(now, t),
        };
        match t.direction {
            TransferDirection::Outgoing => {
                let mut t = t;
                if t.state == TransferState::Transferring {
                    // Nobody is being served yet after a restart.
                    t.state = TransferState::Queued;
                }
                self.serve(t, peer)
            }
            TransferDirection::Incoming => self.fetch(now, t),
        }
    }

    /// A stored transfer of a channel, at start: a file we sent or hold in full is served to
    /// the channel's readers again (a delivered one too: the others may still want it), an
    /// unfinished download goes on.
    fn resume_channel(&mut self, now: Timestamp, mut t: FileTransfer) {
        match (t.direction, t.state) {
            (TransferDirection::Outgoing, TransferState::Done) => self.serve_channel(t),
            (_, s) if s.is_final() && s != TransferState::Done => {}
            (TransferDirection::Outgoing, _) => {
                if t.state == TransferState::Transferring {
                    t.state = TransferState::Queued;
                }
                self.serve_channel(t)
            }
            (TransferDirection::Incoming, TransferState::Done) => self.hold_channel_blob(&t),
            (TransferDirection::Incoming, _) => self.fetch(now, t),
        }
    }

    /// The holder ids of the readers of `channel` (none until the machine said who they are).
    fn audience_holders(&mut self, channel: &ChannelId) -> BTreeSet<HolderId> {
        let members: Vec<UserId> = self
            .audiences
            .get(channel)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        members.into_iter().map(|u| self.holder(u)).collect()
    }

    /// Serves a file we announced in a channel to its readers.
    fn serve_channel(&mut self, t: FileTransfer) {
        let ConversationId::Channel(channel) = t.conversation else {
            return;
        };
        let Some(source) = &t.source else {
            return;
        };
        let to = self.audience_holders(&channel);
        let stamp = SourceStamp {
            size: source.size,
            modified_ns: source.modified_ns,
            inode: source.inode,
        };
        self.node
            .library_mut()
            .add_file(&t.manifest, PathBuf::from(&source.path), stamp, Some(to));
        self.channel_blobs.insert(*t.blob(), channel);
        if !t.state.is_final() {
            self.uploads
                .entry(t.id)
                .or_insert_with(|| Upload::new(t.id, t.manifest.size, t.state, t.reason));
        }
        self.outgoing.insert(t.id, (t, None));
    }

    /// Serves a blob of a channel we received in full (kept encrypted) to its readers.
    fn hold_channel_blob(&mut self, t: &FileTransfer) {
        let ConversationId::Channel(channel) = t.conversation else {
            return;
        };
        if self.node.library().holds(t.blob()) {
            return;
        }
        let to = self.audience_holders(&channel);
        self.node
            .library_mut()
            .add_blob(*t.blob(), t.manifest.size, Some(to));
        self.channel_blobs.insert(*t.blob(), channel);
    }

    /// The readers of a channel changed: its blobs are offered to the new set only.
    fn set_audience(&mut self, channel: ChannelId, members: BTreeSet<UserId>) {
        self.audiences.insert(channel, members);
        let to = self.audience_holders(&channel);
        let blobs: Vec<BlobHash> = self
            .channel_blobs
            .iter()
            .filter(|(_, c)| **c == channel)
            .map(|(b, _)| *b)
            .collect();
        for b in blobs {
            self.node.library_mut().offer_to(&b, Some(to.clone()));
        }
    }

    fn request(&mut self, now: Timestamp, r: TransferRequest) {
        match r {
            TransferRequest::Serve { transfer, peer } => self.serve(*transfer, peer),
            TransferRequest::ServeChannel { transfer } => self.serve_channel(*transfer),
            TransferRequest::Audience { channel, members } => self.set_audience(channel, members),
            TransferRequest::Ask { peer, blob } => {
                let h = self.holder(peer);
                self.node.ask(h, blob);
            }
            TransferRequest::Fetch { transfer, .. } => self.fetch(now, *transfer),
            TransferRequest::Control { id, action } => self.control(now, id, action),
            TransferRequest::Finished { id } => {
                self.uploads.remove(&id);
                self.last_served.remove(&id);
                if let Some((t, _)) = self.outgoing.remove(&id) {
                    self.node.library_mut().remove(t.blob());
                    self.channel_blobs.remove(t.blob());
                    self.forget_upload_copy(&t, true);
                }
            }
        }
    }

    fn serve(&mut self, t: FileTransfer, peer: UserId) {
        let Some(source) = &t.source else {
            return;
        };
        let h = self.holder(peer);
        let stamp = SourceStamp {
            size: source.size,
            modified_ns: source.modified_ns,
            inode: source.inode,
        };
        self.node.library_mut().add_file(
            &t.manifest,
            PathBuf::from(&source.path),
            stamp,
            Some(BTreeSet::from([h])),
        );
        self.uploads
            .entry(t.id)
            .or_insert_with(|| Upload::new(t.id, t.manifest.size, t.state, t.reason));
        self.outgoing.insert(t.id, (t, Some(peer)));
    }

    fn fetch(&mut self, now: Timestamp, t: FileTransfer) {
        if self.node.download(&t.id).is_some() {
            return;
        }
        let allocated = std::fs::metadata(self.node_blob_path(&t)).map_or(0, |m| m.len());
        if let Err(e) = check_space(&self.dir, t.manifest.size.saturating_sub(allocated)) {
            tracing::info!(error = %e, "a received file does not fit the disk");
            self.fail(now, t.id, TransferReason::NoSpace);
            return;
        }
        match self.node.start_download(now, &t) {
            Ok(()) => {
                self.incoming.insert(t.id, t);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not open a download's blob files");
                self.fail(now, t.id, TransferReason::Io);
            }
        }
    }

    fn fail(&mut self, now: Timestamp, id: TransferId, reason: TransferReason) {
        self.persist(Changes::from(Change::SetTransferState {
            id,
            state: TransferState::Failed,
            reason: Some(reason),
            at: now,
        }));
        self.tell_failed(id);
    }

    /// A download failed: after its state is stored, the sender is told (`file_cancel`).
    fn tell_failed(&self, id: TransferId) {
        let _ = self.actor.send(Msg::Job(Box::new(move |cx| {
            if let Err(e) = cx.machine.download_failed(cx.now, cx.store, id) {
                // The batch is rolled back and the machine rebuilt from the store.
                tracing::warn!(error = %e, "could not tell the sender a download failed");
                cx.failed = true;
            }
            Box::new(|_| {})
        })));
    }

    fn control(&mut self, now: Timestamp, id: TransferId, action: TransferAction) {
        if self.incoming.contains_key(&id) {
            match action {
                TransferAction::Pause => self.node.pause(now, &id),
                TransferAction::Resume => self.node.resume(now, &id),
                TransferAction::Cancel => {
                    if let Err(e) = self.node.cancel(now, &id) {
                        tracing::debug!(error = %e, "removing a cancelled download's blob");
                    }
                    self.incoming.remove(&id);
                }
            }
            return;
        }
        match action {
            TransferAction::Pause | TransferAction::Cancel => {
                if let Some((t, peer)) = self.outgoing.remove(&id) {
                    self.node.library_mut().remove(t.blob());
                    self.channel_blobs.remove(t.blob());
                    if action == TransferAction::Cancel {
                        self.uploads.remove(&id);
                        self.last_served.remove(&id);
                        self.forget_upload_copy(&t, false);
                    } else if let Some(u) = self.uploads.get_mut(&id) {
                        // The machine stored the pause; the meter restarts from here.
                        *u = Upload::new(id, t.manifest.size, TransferState::Paused, None);
                    }
                    if action == TransferAction::Pause {
                        // Kept aside to serve again on resume.
                        self.paused_out(t, peer);
                    }
                }
            }
            TransferAction::Resume => {
                if let Some((mut t, peer)) = self.take_paused_out(&id) {
                    t.state = TransferState::Queued;
                    self.uploads
                        .insert(id, Upload::new(id, t.manifest.size, t.state, None));
                    match peer {
                        Some(peer) => self.serve(t, peer),
                        None => self.serve_channel(t),
                    }
                }
            }
        }
    }

    /// Removes the node's plaintext copy of a file the UI handed over (`upload_dir`) once its
    /// transfer ended. A delivered one (`keep`) is first sealed into the blob directory,
    /// encrypted like a received file, so the sender's UI can still show it (on a thread of
    /// its own: a pass over the file).
    fn forget_upload_copy(&self, t: &FileTransfer, keep: bool) {
        let Some(src) = &t.source else { return };
        let Some(node_dir) = self.dir.parent() else {
            return;
        };
        let uploads = upload_dir(node_dir);
        let path = PathBuf::from(&src.path);
        let Some(parent) = path.parent().map(PathBuf::from) else {
            return;
        };
        if parent.parent() != Some(uploads.as_path()) {
            return;
        }
        if !keep {
            let _ = std::fs::remove_dir_all(&parent);
            return;
        }
        let data = self.node_blob_path(t);
        let manifest = t.manifest.clone();
        let sealed = std::thread::Builder::new()
            .name("dopus-seal".into())
            .spawn(move || {
                if let Err(e) = seal(&path, &data, &manifest) {
                    tracing::warn!(error = %e, "could not keep an encrypted copy of a sent file");
                }
                let _ = std::fs::remove_dir_all(&parent);
            });
        if let Err(e) = sealed {
            tracing::warn!(error = %e, "could not start sealing a sent file");
        }
    }

    fn paused_out(&mut self, t: FileTransfer, peer: Option<UserId>) {
        let id = t.id;
        let mut t = t;
        t.state = TransferState::Paused;
        self.outgoing.insert(id, (t, peer));
    }

    fn take_paused_out(&mut self, id: &TransferId) -> Option<(FileTransfer, Option<UserId>)> {
        match self.outgoing.get(id) {
            Some((t, _)) if t.state == TransferState::Paused => self.outgoing.remove(id),
            _ => None,
        }
    }

    /// Hands the node's outputs on: store changes to the actor, progress to the UI.
    fn flush(&mut self, now: Timestamp) {
        for o in self.node.take_outputs() {
            match o {
                NodeOutput::Persist(changes) => self.persist(changes),
                NodeOutput::Served {
                    holder,
                    blob,
                    groups,
                } => {
                    let peer = self
                        .holders
                        .iter()
                        .find_map(|(p, h)| (*h == holder).then_some(*p));
                    let id = self.outgoing.iter().find_map(|(id, (t, to))| {
                        (t.blob() == &blob && (to.is_none() || *to == peer)).then_some(*id)
                    });
                    if let Some(id) = id
                        && let Some(u) = self.uploads.get_mut(&id)
                    {
                        u.serving(now, 1);
                        u.on_served(now, &groups);
                        self.last_served.insert(id, now);
                    }
                }
                NodeOutput::Event(e) => {
                    let mut progress = dto::TransferProgress::from_event(&e);
                    progress.dropped = self.dropped_sources(&e.id);
                    progress.wire_bytes = self.node.received_bytes(&e.id).unwrap_or(0);
                    self.remember(&progress);
                    self.broadcast(&dto::Event::TransferProgress { progress });
                    if e.state == TransferState::Failed {
                        self.incoming.remove(&e.id);
                        self.tell_failed(e.id);
                    } else if e.state.is_final() || e.state == TransferState::Paused {
                        self.actor_event(e.id);
                    }
                    if e.state == TransferState::Done && self.done.insert(e.id) {
                        // A file of a channel: one more holder for its other readers.
                        if let Some(t) = self.incoming.remove(&e.id) {
                            self.hold_channel_blob(&t);
                        }
                        let _ = self
                            .actor
                            .send(Msg::Input(Input::DownloadDone { id: e.id }));
                    }
                }
            }
        }
        self.flush_uploads(now);
    }

    /// The holders each download dropped (a liar, a holder that refused or stalled), by user:
    /// shown in the transfer's progress.
    fn dropped_sources(&mut self, id: &TransferId) -> Vec<dto::DroppedSource> {
        if let Some(d) = self.node.download(id) {
            let planner = d.planner();
            let found: Vec<(UserId, dto::DroppedSource, bool)> = self
                .holders
                .iter()
                .filter_map(|(user, h)| {
                    planner.dropped(*h).map(|why| {
                        let bad = matches!(why, DropReason::BadData { .. });
                        (*user, dto::DroppedSource::new(*user, why), bad)
                    })
                })
                .collect();
            let blob = self.incoming.get(id).map(|t| *t.blob());
            let known = self.dropped.entry(*id).or_default();
            let mut liars = Vec::new();
            for (user, s, bad) in found {
                if known.insert(user, s).is_none() && bad {
                    liars.push(user);
                }
            }
            // A holder that sent a bad chunk group is no longer remembered as one.
            if let Some(blob) = blob
                && !liars.is_empty()
            {
                let _ = self.actor.send(Msg::Job(Box::new(move |cx| {
                    for user in liars {
                        if let Err(e) = cx.machine.drop_blob_holder(cx.store, blob, user) {
                            tracing::warn!(error = %e, "could not forget a holder that lied");
                        }
                    }
                    Box::new(|_| {})
                })));
            }
        }
        self.dropped
            .get(id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Sender-side states and progress: a source found changed fails its upload; held-back
    /// progress events go out when due.
    fn flush_uploads(&mut self, now: Timestamp) {
        let mut outputs = Vec::new();
        for (id, u) in &mut self.uploads {
            if let Some((t, peer)) = self.outgoing.get(id) {
                if self.node.library().changed(t.blob()) {
                    u.source_changed(now);
                }
                // The peer went away mid-transfer: back to waiting for it. (In a channel,
                // readers come and go: only idleness counts.)
                let connected = peer.is_none_or(|peer| {
                    self.holders
                        .get(&peer)
                        .is_some_and(|h| self.node.connected(*h))
                });
                let idle = self.last_served.get(id).is_none_or(|t| {
                    now.as_millis().saturating_sub(t.as_millis()) >= UPLOAD_IDLE_MS
                });
                if !connected || idle {
                    u.serving(now, 0);
                }
            }
            u.handle_timeout(now);
            while let Some(o) = u.poll_output() {
                outputs.push((*id, o));
            }
        }
        for (id, o) in outputs {
            match o {
                UploadOutput::Persist(changes) => self.persist_unless_final(id, changes),
                UploadOutput::Event(e) => {
                    let progress = dto::TransferProgress::from_event(&e);
                    self.remember(&progress);
                    self.broadcast(&dto::Event::TransferProgress { progress });
                }
            }
        }
    }

    /// Applies an upload's state change unless the stored transfer already ended (the
    /// receiver's `file_have` or a cancel, decided by the machine, win over it).
    fn persist_unless_final(&self, id: TransferId, changes: Changes) {
        let _ = self.actor.send(Msg::Job(Box::new(move |cx| {
            let ended = match cx.store.transfer(&id) {
                Ok(Some(t)) => t.state.is_final() || t.state == TransferState::Paused,
                Ok(None) => true,
                Err(_) => false,
            };
            if !ended {
                if let Err(e) = cx.store.apply(changes) {
                    cx.store_failed(e);
                }
                cx.machine.transfer_changed(id);
            }
            Box::new(|_| {})
        })));
    }

    /// Applies store changes in the actor's next transaction.
    fn persist(&self, changes: Changes) {
        let _ = self.actor.send(Msg::Job(Box::new(move |cx| {
            if let Err(e) = cx.store.apply(changes) {
                cx.store_failed(e);
            }
            Box::new(|_| {})
        })));
    }

    /// Has the actor show the transfer as stored (after this thread's changes are applied).
    fn actor_event(&self, id: TransferId) {
        let _ = self.actor.send(Msg::Job(Box::new(move |cx| {
            cx.machine.transfer_changed(id);
            Box::new(|_| {})
        })));
    }

    fn remember(&self, p: &dto::TransferProgress) {
        let Ok(id) = uuid::Uuid::parse_str(&p.id) else {
            return;
        };
        if let Ok(mut live) = self.live.lock() {
            live.insert(TransferId(id), p.clone());
        }
    }

    fn broadcast(&self, e: &dto::Event) {
        if self.events.receiver_count() == 0 {
            return;
        }
        if let Ok(s) = serde_json::to_string(e) {
            let _ = self.events.send(Arc::from(s));
        }
    }
}

/// Encrypts the plaintext file `from` into the blob file `to` (through `<to>.part`, synced,
/// then renamed), as a received blob is kept.
fn seal(
    from: &std::path::Path,
    to: &std::path::Path,
    manifest: &dopus_proto::transfer::FileManifest,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let cipher = dopus_files::FileCipher::new(&manifest.key, manifest.nonce);
    let part = to.with_extension("data.part");
    let mut input = std::fs::File::open(from)?;
    let mut out = std::fs::File::create(&part)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        cipher
            .apply(offset, &mut buf[..n])
            .map_err(std::io::Error::other)?;
        out.write_all(&buf[..n])?;
        offset += n as u64;
    }
    if offset != manifest.size {
        let _ = std::fs::remove_file(&part);
        return Err(std::io::Error::other(
            "the file changed size before it was sealed",
        ));
    }
    out.sync_all()?;
    std::fs::rename(&part, to)
}

/// Debug builds only: `DOPUS_TEST_CORRUPT_BLOB_MESSAGE=N` flips the last byte of the N-th
/// large message this node sends on a blob channel (a lying holder, for the process-level
/// test that a corrupted chunk group is refused).
#[cfg(debug_assertions)]
mod test_hook {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static TARGET: OnceLock<Option<usize>> = OnceLock::new();
    static SENT: AtomicUsize = AtomicUsize::new(0);

    pub fn maybe_corrupt(mut message: Vec<u8>) -> Vec<u8> {
        let target = TARGET.get_or_init(|| {
            std::env::var("DOPUS_TEST_CORRUPT_BLOB_MESSAGE")
                .ok()
                .and_then(|v| v.parse().ok())
        });
        if let Some(n) = *target
            && message.len() > 1024
            && SENT.fetch_add(1, Ordering::AcqRel) + 1 == n
            && let Some(last) = message.last_mut()
        {
            *last ^= 0x01;
        }
        message
    }
}

/// Refuses `size` more bytes that do not fit the disk holding `dir` (with the margin of
/// `dopus_files::check_space`). Debug builds only: `DOPUS_TEST_AVAILABLE_SPACE=N` pretends N
/// bytes are free (process tests of a full disk without one).
pub(crate) fn check_space(dir: &std::path::Path, size: u64) -> Result<(), dopus_files::SpaceError> {
    #[cfg(debug_assertions)]
    if let Some(available) = std::env::var("DOPUS_TEST_AVAILABLE_SPACE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let needed = size.saturating_add(dopus_files::space::margin(size));
        if needed > available {
            return Err(dopus_files::NoSpace { needed, available }.into());
        }
        return Ok(());
    }
    dopus_files::check_space(dir, size)
}

/// The directory where files handed over by the UI wait until their transfer ends (the
/// node serves them from there; the browser cannot name a path on disk).
pub fn upload_dir(node_dir: &std::path::Path) -> PathBuf {
    node_dir.join("uploads")
}

/// Environment variable that sets the blob channel's share of the send buffer in KiB
/// ([`dopus_rtc::RtcConfig::blob_in_flight`]), for measuring it (`bench/files/nodes.sh`).
pub const BLOB_IN_FLIGHT_ENV: &str = "DISCORDOPUS_BLOB_IN_FLIGHT_KIB";

/// The blob share from [`BLOB_IN_FLIGHT_ENV`], or the default. A value that is not a positive
/// number of KiB is ignored with a warning.
pub(crate) fn blob_in_flight() -> usize {
    let Ok(v) = std::env::var(BLOB_IN_FLIGHT_ENV) else {
        return dopus_rtc::DEFAULT_BLOB_IN_FLIGHT;
    };
    match v.trim().parse::<usize>() {
        Ok(kib) if kib > 0 => kib.saturating_mul(1024),
        _ => {
            tracing::warn!("{BLOB_IN_FLIGHT_ENV} is not a positive number of KiB; default used");
            dopus_rtc::DEFAULT_BLOB_IN_FLIGHT
        }
    }
}
