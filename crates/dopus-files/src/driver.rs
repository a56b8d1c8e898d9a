//! A reference driver: one node's transfers over any number of blob channels, with no runtime.
//!
//! [`BlobNode`] joins the sans-IO pieces of `dopus_core::transfer` ([`Link`] per channel,
//! [`Download`] per incoming file) with the I/O of this crate ([`Fetch`] to verify and write,
//! a [`Library`] to answer requests) over any [`BlobTransport`]. [`BlobNode::step`] does
//! everything that can be done now without waiting (take in messages, plan, write, answer,
//! hand over as much as each transport has room for) and says whether anything happened; the
//! caller decides how to wait. Tests and the benchmark drive it over memory pipes; the node's
//! runtime can drive it from a blocking task per connection group, or take it apart.
//!
//! Task topology in a runtime (suggested): one task owns the `BlobNode` and its transports'
//! receiving ends; chunk I/O (`Fetch::receive`, `Library::answer`) is synchronous and bounded
//! (one message, one request), so the task runs it inline or on a blocking thread.

use crate::FileCipher;
use crate::blobs::{BlobDir, Fetch, FetchError};
use crate::decode::DecodeError;
use crate::outboard::OutboardFile;
use crate::serve::{ServeError, encode_answer};
use crate::source::{EncryptedSource, SourceStamp, is_source_changed, stamp_path};
use crate::transport::BlobTransport;
use dopus_core::store::{Changes, FileTransfer, TransferId, TransferReason};
use dopus_core::transfer::{
    Download, DownloadConfig, DownloadOutput, HolderId, Link, LinkConfig, LinkEvent, LinkOutput,
    Offer, Offers, ServeJob, TransferEvent, TransferRef,
};
use dopus_proto::transfer::{FileManifest, GroupSet, RequestId, groups_for_size};
use dopus_types::{BlobHash, Timestamp};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::path::PathBuf;

/// What a node serves, and how it answers.
pub trait Library {
    /// What of `blob` is offered to the peer behind `holder`'s channel.
    fn offer(&self, holder: HolderId, blob: &BlobHash) -> Option<Offer>;
    /// The data messages answering `job`.
    fn answer(&self, job: &ServeJob, max_message: usize) -> Result<VecDeque<Vec<u8>>, ServeError>;
}

enum ShelfSource {
    /// A file we announced: read and encrypted on the fly.
    File {
        path: PathBuf,
        stamp: SourceStamp,
        cipher: FileCipher,
    },
    /// A blob we received and keep encrypted.
    Blob,
}

struct ShelfItem {
    size: u64,
    source: ShelfSource,
    to: Option<BTreeSet<HolderId>>,
    changed: Cell<bool>,
}

/// The plain [`Library`]: files we sent and blobs we hold, each offered to some channels (or
/// to every linked one).
pub struct Shelf {
    dir: BlobDir,
    items: BTreeMap<BlobHash, ShelfItem>,
}

impl std::fmt::Debug for Shelf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shelf")
            .field("items", &self.items.len())
            .finish_non_exhaustive()
    }
}

impl Shelf {
    /// An empty shelf whose outboards and blobs are in `dir`.
    pub fn new(dir: BlobDir) -> Self {
        Self {
            dir,
            items: BTreeMap::new(),
        }
    }

    /// Offers a file we announced (prepared into `dir`'s outboard) to `to` (`None`: anyone).
    pub fn add_file(
        &mut self,
        manifest: &FileManifest,
        path: PathBuf,
        stamp: SourceStamp,
        to: Option<BTreeSet<HolderId>>,
    ) {
        self.items.insert(
            manifest.blob,
            ShelfItem {
                size: manifest.size,
                source: ShelfSource::File {
                    path,
                    stamp,
                    cipher: FileCipher::new(&manifest.key, manifest.nonce),
                },
                to,
                changed: Cell::new(false),
            },
        );
    }

    /// Offers a complete blob held in `dir` to `to` (`None`: anyone).
    pub fn add_blob(&mut self, blob: BlobHash, size: u64, to: Option<BTreeSet<HolderId>>) {
        self.items.insert(
            blob,
            ShelfItem {
                size,
                source: ShelfSource::Blob,
                to,
                changed: Cell::new(false),
            },
        );
    }

    /// Changes to whom a blob is offered (`None`: anyone); nothing if it is not on the shelf.
    pub fn offer_to(&mut self, blob: &BlobHash, to: Option<BTreeSet<HolderId>>) {
        if let Some(item) = self.items.get_mut(blob) {
            item.to = to;
        }
    }

    /// Whether a blob is on the shelf.
    pub fn holds(&self, blob: &BlobHash) -> bool {
        self.items.contains_key(blob)
    }

    /// Stops offering a blob.
    pub fn remove(&mut self, blob: &BlobHash) {
        self.items.remove(blob);
    }

    /// Whether the source of `blob` was found changed (it is never served again).
    pub fn changed(&self, blob: &BlobHash) -> bool {
        self.items.get(blob).is_some_and(|i| i.changed.get())
    }
}

impl Library for Shelf {
    fn offer(&self, holder: HolderId, blob: &BlobHash) -> Option<Offer> {
        let item = self.items.get(blob)?;
        if item.to.as_ref().is_some_and(|to| !to.contains(&holder)) {
            return None;
        }
        if let ShelfSource::File { path, stamp, .. } = &item.source
            && !item.changed.get()
            && stamp_path(path).ok().as_ref() != Some(stamp)
        {
            item.changed.set(true);
        }
        let total = groups_for_size(item.size);
        Some(Offer {
            total_groups: total,
            groups: GroupSet::from_range(0..total),
            changed: item.changed.get(),
        })
    }

    fn answer(&self, job: &ServeJob, max_message: usize) -> Result<VecDeque<Vec<u8>>, ServeError> {
        let item = self
            .items
            .get(&job.blob)
            .ok_or_else(|| ServeError::Io(io::ErrorKind::NotFound.into()))?;
        if item.changed.get() {
            return Err(ServeError::Mismatch);
        }
        let result = match &item.source {
            ShelfSource::File {
                path,
                stamp,
                cipher,
            } => {
                let source =
                    EncryptedSource::open(path, cipher.clone(), stamp).map_err(ServeError::Io)?;
                let outboard: OutboardFile = self
                    .dir
                    .open_outboard(&job.blob, item.size)
                    .map_err(ServeError::Io)?;
                encode_answer(&source, &outboard, job.req, &job.groups, max_message)
            }
            ShelfSource::Blob => {
                let (data, outboard) = self
                    .dir
                    .open_blob(&job.blob, item.size)
                    .map_err(ServeError::Io)?;
                encode_answer(&data, &outboard, job.req, &job.groups, max_message)
            }
        };
        if let Err(e) = &result {
            let changed = matches!(e, ServeError::Mismatch)
                || matches!(e, ServeError::Io(io) if is_source_changed(io));
            if changed {
                item.changed.set(true);
            }
        }
        result
    }
}

struct LinkOffers<'a, L> {
    library: &'a L,
    holder: HolderId,
}

impl<L: Library> Offers for LinkOffers<'_, L> {
    fn offer(&self, blob: &BlobHash) -> Option<Offer> {
        self.library.offer(self.holder, blob)
    }
}

struct Answering {
    req: RequestId,
    blob: BlobHash,
    groups: GroupSet,
    messages: VecDeque<Vec<u8>>,
}

struct Chan<T> {
    link: Link,
    transport: T,
    control: VecDeque<Vec<u8>>,
    jobs: VecDeque<ServeJob>,
    current: Option<Answering>,
    closed: bool,
}

struct Active {
    download: Download,
    fetch: Fetch,
    manifest: FileManifest,
    /// Answer bytes received for it since it started here (proofs included).
    received: u64,
}

/// Moves a link's outputs into its channel's queues.
fn drain_link<T>(chan: &mut Chan<T>) {
    while let Some(o) = chan.link.poll_output() {
        match o {
            LinkOutput::Send(m) => chan.control.push_back(m),
            LinkOutput::Serve(job) => chan.jobs.push_back(job),
            LinkOutput::StopServing(req) => {
                chan.jobs.retain(|j| j.req != req);
                if chan.current.as_ref().is_some_and(|c| c.req == req) {
                    chan.current = None;
                }
            }
        }
    }
}

/// What the owner of a [`BlobNode`] must do.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeOutput {
    /// Apply to the store (already synced to disk where it moves a resume point).
    Persist(Changes),
    /// Tell the UI.
    Event(TransferEvent),
    /// The answer to a peer's request went out in full: these groups of `blob` were served
    /// to the peer behind `holder` (an upload's progress).
    Served {
        /// To whom.
        holder: HolderId,
        /// Which blob.
        blob: BlobHash,
        /// Which groups.
        groups: GroupSet,
    },
}

/// Counters of one node, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Data bytes received on blob channels (answers to our requests).
    pub received_bytes: u64,
    /// Messages handed to transports.
    pub sent_messages: u64,
    /// Bytes handed to transports.
    pub sent_bytes: u64,
    /// Requests answered in full.
    pub answered: u64,
}

/// One node's transfers (see the module docs).
pub struct BlobNode<T, L> {
    library: L,
    dir: BlobDir,
    config: DownloadConfig,
    link_config: LinkConfig,
    channels: BTreeMap<HolderId, Chan<T>>,
    downloads: BTreeMap<TransferId, Active>,
    out: Vec<NodeOutput>,
    stats: NodeStats,
}

impl<T, L> std::fmt::Debug for BlobNode<T, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobNode")
            .field("channels", &self.channels.len())
            .field("downloads", &self.downloads.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T: BlobTransport, L: Library> BlobNode<T, L> {
    /// A node serving from `library`, keeping received blobs in `dir`.
    pub fn new(library: L, dir: BlobDir, config: DownloadConfig, link_config: LinkConfig) -> Self {
        Self {
            library,
            dir,
            config,
            link_config,
            channels: BTreeMap::new(),
            downloads: BTreeMap::new(),
            out: Vec::new(),
            stats: NodeStats::default(),
        }
    }

    /// The library (to offer more files).
    pub fn library_mut(&mut self) -> &mut L {
        &mut self.library
    }

    /// The library.
    pub fn library(&self) -> &L {
        &self.library
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// A download's state machine.
    pub fn download(&self, id: &TransferId) -> Option<&Download> {
        self.downloads.get(id).map(|a| &a.download)
    }

    /// Answer bytes a download received over the wire since it started on this node
    /// (verified data and proofs, and anything that failed verification).
    pub fn received_bytes(&self, id: &TransferId) -> Option<u64> {
        self.downloads.get(id).map(|a| a.received)
    }

    /// A blob channel to `holder` opened over `transport`; asks it about every download.
    pub fn connect(&mut self, holder: HolderId, transport: T) {
        let mut link = Link::new(self.link_config);
        for a in self.downloads.values() {
            link.ask(a.manifest.blob);
        }
        self.channels.insert(
            holder,
            Chan {
                link,
                transport,
                control: VecDeque::new(),
                jobs: VecDeque::new(),
                current: None,
                closed: false,
            },
        );
    }

    /// Asks `holder` again what it has of `blob` (it says it holds it now), if its channel
    /// is open.
    pub fn ask(&mut self, holder: HolderId, blob: BlobHash) {
        if let Some(chan) = self.channels.get_mut(&holder)
            && !chan.closed
        {
            chan.link.ask(blob);
        }
    }

    /// Whether a channel to `holder` is open.
    pub fn connected(&self, holder: HolderId) -> bool {
        self.channels.get(&holder).is_some_and(|c| !c.closed)
    }

    /// The channel to `holder` closed.
    pub fn disconnect(&mut self, now: Timestamp, holder: HolderId) {
        let Some(mut chan) = self.channels.remove(&holder) else {
            return;
        };
        let refs = chan.link.close();
        for r in &refs {
            if let Some(a) = self.downloads.get_mut(&r.transfer) {
                a.fetch.cancel(r.key);
            }
        }
        for a in self.downloads.values_mut() {
            a.download.holder_gone(now, holder);
        }
    }

    /// Starts (or resumes) the download of a stored incoming transfer.
    pub fn start_download(&mut self, now: Timestamp, transfer: &FileTransfer) -> io::Result<()> {
        let fetch = Fetch::open(&self.dir, &transfer.manifest, &transfer.verified)?;
        let download = Download::new(
            now,
            transfer.id,
            transfer.manifest.size,
            transfer.verified.clone(),
            transfer.state,
            transfer.reason,
            self.config,
        );
        for chan in self.channels.values_mut() {
            chan.link.ask(transfer.manifest.blob);
        }
        self.downloads.insert(
            transfer.id,
            Active {
                download,
                fetch,
                manifest: transfer.manifest.clone(),
                received: 0,
            },
        );
        Ok(())
    }

    /// Pauses a download (the user asked).
    pub fn pause(&mut self, now: Timestamp, id: &TransferId) {
        if let Some(a) = self.downloads.get_mut(id) {
            a.download.pause(now, TransferReason::User);
        }
    }

    /// Resumes a paused download, asking every channel again what it has.
    pub fn resume(&mut self, now: Timestamp, id: &TransferId) {
        if let Some(a) = self.downloads.get_mut(id) {
            a.download.resume(now);
            for chan in self.channels.values_mut() {
                chan.link.ask(a.manifest.blob);
            }
        }
    }

    /// Cancels a download and deletes its partial blob.
    pub fn cancel(&mut self, now: Timestamp, id: &TransferId) -> io::Result<()> {
        if let Some(a) = self.downloads.get_mut(id) {
            a.download.cancel(now, TransferReason::User);
            self.drive_downloads(now);
            if let Some(a) = self.downloads.remove(id) {
                self.dir.remove(&a.manifest.blob)?;
            }
        }
        Ok(())
    }

    /// Takes what the owner must do.
    pub fn take_outputs(&mut self) -> Vec<NodeOutput> {
        std::mem::take(&mut self.out)
    }

    /// Does everything possible now without waiting; returns whether anything happened.
    pub fn step(&mut self, now: Timestamp) -> bool {
        let mut progress = self.receive(now);
        self.drive_downloads(now);
        self.drive_links();
        progress |= self.transmit(now);
        self.drive_downloads(now);
        let closed: Vec<HolderId> = self
            .channels
            .iter()
            .filter(|(_, c)| c.closed)
            .map(|(h, _)| *h)
            .collect();
        for h in closed {
            self.disconnect(now, h);
            progress = true;
        }
        progress
    }

    /// The earliest time a download wants [`BlobNode::step`] even if nothing arrives.
    pub fn next_timeout(&self) -> Option<Timestamp> {
        self.downloads
            .values()
            .filter_map(|a| a.download.poll_timeout())
            .min()
    }

    fn receive(&mut self, now: Timestamp) -> bool {
        let mut progress = false;
        let Self {
            channels,
            downloads,
            library,
            stats,
            ..
        } = self;
        for (holder, chan) in channels.iter_mut() {
            // Bounded per step, so one busy channel cannot starve the others.
            for _ in 0..256 {
                let msg = match chan.transport.try_recv() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(_) => {
                        chan.closed = true;
                        break;
                    }
                };
                progress = true;
                let offers = LinkOffers {
                    library: &*library,
                    holder: *holder,
                };
                match chan.link.handle_message(&msg, &offers) {
                    LinkEvent::Handled
                    | LinkEvent::Ready
                    | LinkEvent::Stale
                    | LinkEvent::Ignored { .. } => {}
                    LinkEvent::Incompatible { .. } => chan.closed = true,
                    LinkEvent::Have { blob, groups } => {
                        for a in downloads.values_mut().filter(|a| a.manifest.blob == blob) {
                            a.download.holder_ready(now, *holder, groups.clone());
                        }
                    }
                    LinkEvent::Data { to, bytes } => {
                        stats.received_bytes += bytes.len() as u64;
                        let Some(a) = downloads.get_mut(&to.transfer) else {
                            continue;
                        };
                        a.received += bytes.len() as u64;
                        let r = a.fetch.receive(to.key, bytes);
                        if !r.verified.is_empty() {
                            a.download.on_verified(now, to.key, &r.verified);
                        }
                        match r.failed {
                            None if r.done => {
                                chan.link.request_done(to);
                                a.download.on_request_done(now, to.key);
                            }
                            None | Some(FetchError::UnknownRequest) => {}
                            Some(FetchError::Bad(DecodeError::BadGroup(g))) => {
                                a.download.on_bad_data(now, to.key, g);
                            }
                            Some(FetchError::Bad(DecodeError::TooLong)) => {
                                a.download.on_malformed(now, to.key);
                            }
                            Some(e) if e.is_disk_full() => a.download.disk_full(now),
                            Some(FetchError::Io(_)) => a.download.fail(now, TransferReason::Io),
                        }
                    }
                    LinkEvent::Refused { to, code } => {
                        if let Some(a) = downloads.get_mut(&to.transfer) {
                            a.fetch.cancel(to.key);
                            a.download.on_refused(now, to.key, code);
                        }
                    }
                    LinkEvent::Malformed { to, .. } => {
                        if let Some(a) = downloads.get_mut(&to.transfer) {
                            a.fetch.cancel(to.key);
                            a.download.on_malformed(now, to.key);
                        }
                    }
                }
            }
        }
        progress
    }

    fn drive_downloads(&mut self, now: Timestamp) {
        let Self {
            channels,
            downloads,
            out,
            ..
        } = self;
        for (id, a) in downloads.iter_mut() {
            if a.download.poll_timeout().is_some_and(|t| t <= now) {
                a.download.handle_timeout(now);
            }
            while let Some(o) = a.download.poll_output() {
                match o {
                    DownloadOutput::Request(r) => {
                        let to = TransferRef {
                            transfer: *id,
                            key: r.key,
                        };
                        match channels.get_mut(&r.holder) {
                            Some(chan) if !chan.closed => {
                                a.fetch.start(r.key, &r.groups);
                                chan.link.request(to, a.manifest.blob, r.groups);
                            }
                            _ => a.download.holder_gone(now, r.holder),
                        }
                    }
                    DownloadOutput::Cancel { holder, key } => {
                        a.fetch.cancel(key);
                        if let Some(chan) = channels.get_mut(&holder) {
                            chan.link.cancel(TransferRef { transfer: *id, key });
                        }
                    }
                    DownloadOutput::Commit(changes) => match a.fetch.sync() {
                        Ok(()) => out.push(NodeOutput::Persist(changes)),
                        Err(e) if crate::blobs::is_disk_full(&e) => a.download.disk_full(now),
                        Err(_) => a.download.fail(now, TransferReason::Io),
                    },
                    DownloadOutput::Persist(changes) => out.push(NodeOutput::Persist(changes)),
                    DownloadOutput::Finalize => match a.fetch.finish() {
                        Ok(ok) => a.download.finalized(now, ok),
                        Err(e) if e.is_disk_full() => a.download.disk_full(now),
                        Err(_) => a.download.fail(now, TransferReason::Io),
                    },
                    DownloadOutput::Event(e) => out.push(NodeOutput::Event(e)),
                }
            }
        }
    }

    fn drive_links(&mut self) {
        for chan in self.channels.values_mut() {
            drain_link(chan);
        }
    }

    fn transmit(&mut self, _now: Timestamp) -> bool {
        let mut progress = false;
        let Self {
            channels,
            library,
            stats,
            out,
            ..
        } = self;
        for (holder, chan) in channels.iter_mut() {
            loop {
                if chan.control.is_empty() && chan.current.is_none() {
                    let Some(job) = chan.jobs.pop_front() else {
                        break;
                    };
                    let max = chan.link.max_message().min(chan.transport.max_message());
                    match library.answer(&job, max) {
                        Ok(messages) => {
                            chan.current = Some(Answering {
                                req: job.req,
                                blob: job.blob,
                                groups: job.groups,
                                messages,
                            })
                        }
                        Err(e) => {
                            chan.link.serve_failed(job.req, e.code());
                            drain_link(chan);
                        }
                    }
                    continue;
                }
                let next_len = match (chan.control.front(), &chan.current) {
                    (Some(m), _) => m.len(),
                    (None, Some(c)) => c.messages.front().map_or(0, Vec::len),
                    (None, None) => break,
                };
                if next_len > 0 && chan.transport.room() < next_len {
                    break;
                }
                let message = match chan.control.pop_front() {
                    Some(m) => Some(m),
                    None => {
                        let c = chan.current.as_mut();
                        let m = c.and_then(|c| c.messages.pop_front());
                        if chan.current.as_ref().is_some_and(|c| c.messages.is_empty())
                            && let Some(c) = chan.current.take()
                        {
                            chan.link.served(c.req);
                            stats.answered += 1;
                            out.push(NodeOutput::Served {
                                holder: *holder,
                                blob: c.blob,
                                groups: c.groups,
                            });
                        }
                        m
                    }
                };
                let Some(message) = message else {
                    continue;
                };
                stats.sent_messages += 1;
                stats.sent_bytes += message.len() as u64;
                progress = true;
                if chan.transport.send(message).is_err() {
                    chan.closed = true;
                    break;
                }
            }
        }
        progress
    }
}
