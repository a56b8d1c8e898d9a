//! The node's file operations for the API: send a file, list transfers, pause, resume,
//! cancel, save (docs/api.md, "Files").

use super::files::{check_space, upload_dir};
use super::files_prepare as prep;
use super::{Node, NodeError, NodeResult};
use crate::api::dto;
use dopus_core::machine::TransferAction;
use dopus_core::store::MessageId;
use dopus_core::store::{
    Change, ConversationId, FileTransfer, SourceFile, Store, TransferDirection, TransferId,
    TransferState,
};
use dopus_files::BlobDir;
use dopus_proto::transfer::{FILE_FORMAT_VERSION, FileKey, FileManifest, FileNonce};
use dopus_types::{ChannelId, UserId};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// The directory of a node's blobs (received files, encrypted, and the outboards of sent
/// ones).
pub fn blob_dir(node_dir: &Path) -> PathBuf {
    node_dir.join("blobs")
}

fn invalid(m: impl Into<String>) -> NodeError {
    NodeError::Invalid(m.into())
}

fn transfer_id(id: &str) -> NodeResult<TransferId> {
    uuid::Uuid::parse_str(id)
        .map(TransferId)
        .map_err(|_| invalid("invalid transfer id"))
}

/// A MIME type for a file name: the guess, if it is one the manifest accepts.
fn guess_mime(name: &str) -> String {
    mime_guess::from_path(name)
        .first()
        .map(|m| m.essence_str().to_owned())
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

impl Node {
    /// `POST /conversations/{id}/files`: the file at `path` (on the node's machine), in state
    /// `preparing` while it is hashed and encrypted, then announced to `peer` and served.
    pub async fn send_file(
        self: &Arc<Self>,
        peer: UserId,
        path: String,
        mime: Option<String>,
    ) -> NodeResult<dto::Transfer> {
        self.send_file_with(peer, path, mime, FilePreview::default())
            .await
    }

    /// `POST /channels/{id}/files`: like [`Node::send_file`], announced in a space channel
    /// (inside Megolm) and served to the members allowed to view it.
    pub async fn channel_send_file(
        self: &Arc<Self>,
        channel: ChannelId,
        path: String,
        mime: Option<String>,
    ) -> NodeResult<dto::Transfer> {
        self.send_file_to(
            FileTarget::Channel(channel),
            path,
            mime,
            FilePreview::default(),
        )
        .await
    }

    /// [`Node::send_file`] with an image's dimensions and thumbnail for the manifest (made by
    /// the UI, which decodes images; the node never does).
    pub async fn send_file_with(
        self: &Arc<Self>,
        peer: UserId,
        path: String,
        mime: Option<String>,
        preview: FilePreview,
    ) -> NodeResult<dto::Transfer> {
        self.send_file_to(FileTarget::Peer(peer), path, mime, preview)
            .await
    }

    /// Answers at once with the transfer in state `preparing`; a task hashes and encrypts the
    /// file at `path` on a blocking thread (progress events at most 4 a second), then
    /// announces it to `target` and serves it (runtime/files_prepare.rs). What can be refused
    /// up front is: a relative path, a file that does not exist or is not a regular file, one
    /// larger than the format allows, a target that cannot take files.
    pub async fn send_file_to(
        self: &Arc<Self>,
        target: FileTarget,
        path: String,
        mime: Option<String>,
        preview: FilePreview,
    ) -> NodeResult<dto::Transfer> {
        self.send_file_from(target, path, mime, preview, None).await
    }

    /// [`Node::send_file_to`]; `upload_copy` is a directory the UI's upload wrote the file
    /// into, removed if preparing fails.
    async fn send_file_from(
        self: &Arc<Self>,
        target: FileTarget,
        path: String,
        mime: Option<String>,
        preview: FilePreview,
        upload_copy: Option<PathBuf>,
    ) -> NodeResult<dto::Transfer> {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(invalid("path must be absolute"));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| invalid("path names no file"))?;
        let meta = match tokio::fs::metadata(&path).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NodeError::NotFound("file"));
            }
            Err(_) => return Err(invalid("the file cannot be read")),
        };
        if !meta.is_file() {
            return Err(invalid("the path is not a regular file"));
        }
        if meta.len() > dopus_proto::transfer::MAX_FILE_SIZE {
            return Err(NodeError::TooLarge("the file is too large".into()));
        }
        let mime = mime.unwrap_or_else(|| guess_mime(&name));
        let (id, now) = self
            .write(move |cx| {
                let id = cx
                    .machine
                    .reserve_file_id(cx.now, &*cx.store, target)
                    .map_err(|e| cx.command(e))?;
                Ok((id, cx.now))
            })
            .await?;
        let tid = TransferId(id.0);
        let conversation = match target {
            FileTarget::Peer(peer) => ConversationId::Direct(peer),
            FileTarget::Channel(channel) => ConversationId::Channel(channel),
        };
        let shown = dto::Transfer {
            id: tid.to_string(),
            conversation: dto::ConversationId::from(&conversation),
            message: None,
            direction: dto::TransferDirection::Outgoing,
            name: name.clone(),
            mime: mime.clone(),
            size: meta.len(),
            blob: String::new(),
            state: dto::TransferState::Preparing,
            reason: None,
            bytes: 0,
            saved_path: None,
            created_at: now.into(),
            updated_at: now.into(),
            progress: None,
            dimensions: preview.dimensions.map(|d| dto::FileDimensions {
                width: d.width,
                height: d.height,
            }),
            thumbnail: None,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        prep::lock(&prep::preparing(&blob_dir(&self.dir))).insert(
            tid,
            prep::Entry {
                transfer: shown.clone(),
                cancel: cancel.clone(),
                source: path.clone(),
            },
        );
        self.emit(&dto::Event::Transfer {
            transfer: Box::new(shown.clone()),
        });
        let job = PrepareJob {
            id,
            target,
            path,
            name,
            mime,
            preview,
            size: meta.len(),
            cancel,
            upload_copy,
        };
        let node = self.clone();
        tokio::spawn(async move { node.prepare_and_announce(job).await });
        Ok(shown)
    }

    /// The background half of [`Node::send_file_to`].
    async fn prepare_and_announce(self: Arc<Self>, job: PrepareJob) {
        let tid = TransferId(job.id.0);
        let blobs = blob_dir(&self.dir);
        let events = self.events().clone();
        let live = super::files::live_progress(&blobs);
        let (path, cancel, size) = (job.path.clone(), job.cancel.clone(), job.size);
        let prepared = tokio::task::spawn_blocking(move || {
            prepare_file(&blobs, &path, size, &cancel, |mut p| {
                p.id = tid.to_string();
                if let Ok(mut live) = live.lock() {
                    live.insert(tid, p.clone());
                }
                if events.receiver_count() > 0
                    && let Ok(s) =
                        serde_json::to_string(&dto::Event::TransferProgress { progress: p })
                {
                    let _ = events.send(Arc::from(s));
                }
            })
        })
        .await
        .unwrap_or(Err(dto::TransferReason::Io));
        let result = match prepared {
            Ok((key, nonce, p)) => self.announce(&job, key, nonce, p).await,
            Err(reason) => Err(reason),
        };
        let table = prep::preparing(&blob_dir(&self.dir));
        match result {
            Ok(()) => {
                prep::lock(&table).remove(&tid);
                // The stored state (queued, then the file thread's) shows from now on.
                if let Ok(mut live) = super::files::live_progress(&blob_dir(&self.dir)).lock()
                    && live
                        .get(&tid)
                        .is_some_and(|p| p.state == dto::TransferState::Preparing)
                {
                    live.remove(&tid);
                }
            }
            Err(reason) => {
                if let Some(dir) = &job.upload_copy {
                    let _ = tokio::fs::remove_dir_all(dir).await;
                }
                let state = if reason == dto::TransferReason::User {
                    dto::TransferState::Cancelled
                } else {
                    dto::TransferState::Failed
                };
                let shown = {
                    let mut t = prep::lock(&table);
                    let Some(e) = t.get_mut(&tid) else { return };
                    e.transfer.state = state;
                    e.transfer.reason = Some(reason);
                    e.transfer.updated_at = dto::Timestamp(now_ms());
                    e.transfer.clone()
                };
                // Kept in the store, so it is still listed (with its reason) after a restart.
                let record = shown.clone();
                let kept = self
                    .write(move |cx| {
                        prep::keep_failure(&mut *cx.store, record)
                            .map_err(|e| NodeError::Internal(Box::new(e)))
                    })
                    .await;
                match kept {
                    Ok(()) => {
                        prep::lock(&table).remove(&tid);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a failed preparing could not be stored");
                    }
                }
                let progress = dto::TransferProgress {
                    id: tid.to_string(),
                    state,
                    reason: Some(reason),
                    bytes: 0,
                    total: job.size,
                    rate: 0,
                    eta_secs: None,
                    sources: 0,
                    dropped: Vec::new(),
                    wire_bytes: 0,
                };
                if let Ok(mut live) = super::files::live_progress(&blob_dir(&self.dir)).lock() {
                    live.insert(tid, progress.clone());
                }
                self.emit(&dto::Event::TransferProgress { progress });
                self.emit(&dto::Event::Transfer {
                    transfer: Box::new(shown),
                });
            }
        }
    }

    /// Announces a prepared file through the machine under its reserved id.
    async fn announce(
        &self,
        job: &PrepareJob,
        key: FileKey,
        nonce: FileNonce,
        p: dopus_files::Prepared,
    ) -> Result<(), dto::TransferReason> {
        let manifest = FileManifest {
            version: FILE_FORMAT_VERSION,
            blob: p.blob,
            size: p.size,
            key,
            nonce,
            name: job.name.clone(),
            mime: job.mime.clone(),
            plain_blake3: p.plain,
            dimensions: job.preview.dimensions,
            duration_ms: None,
            thumbnail: job.preview.thumbnail.clone(),
        };
        if manifest.validate().is_err() {
            return Err(dto::TransferReason::NotSent);
        }
        let source = SourceFile {
            path: job.path.to_string_lossy().into_owned(),
            size: p.stamp.size,
            modified_ns: p.stamp.modified_ns,
            inode: p.stamp.inode,
        };
        let (id, target, cancel) = (job.id, job.target, job.cancel.clone());
        let sent = self
            .write(move |cx| {
                // A cancel that came after the last read still wins.
                if prep::cancelled(&cancel) {
                    return Ok(false);
                }
                match target {
                    FileTarget::Peer(peer) => cx
                        .machine
                        .send_file_as(cx.now, cx.store, id, peer, manifest, source, None),
                    FileTarget::Channel(channel) => cx.machine.channel_send_file_as(
                        cx.now, cx.store, id, channel, manifest, source, None,
                    ),
                }
                .map_err(|e| cx.command(e))?;
                Ok(true)
            })
            .await;
        match sent {
            Ok(true) => Ok(()),
            Ok(false) => Err(dto::TransferReason::User),
            Err(e) => {
                tracing::warn!(error = %e, "a prepared file could not be announced");
                Err(dto::TransferReason::NotSent)
            }
        }
    }

    /// The transfers being prepared (or whose preparing failed), as shown.
    fn preparing_list(&self) -> Vec<dto::Transfer> {
        prep::lock(&prep::preparing(&blob_dir(&self.dir)))
            .values()
            .map(|e| e.transfer.clone())
            .collect()
    }

    /// Adds the latest live progress (rate, ETA) to transfers as stored.
    fn with_progress<'a>(&self, ts: impl IntoIterator<Item = &'a mut dto::Transfer>) {
        let live = super::files::live_progress(&blob_dir(&self.dir));
        let Ok(live) = live.lock() else { return };
        for d in ts {
            if let Ok(id) = uuid::Uuid::parse_str(&d.id) {
                d.progress = live.get(&TransferId(id)).cloned();
            }
        }
    }

    /// `GET /transfers`: every transfer, newest first.
    pub async fn transfers(&self) -> NodeResult<dto::Transfers> {
        let mut list = self
            .read(|v| {
                let mut all: Vec<FileTransfer> = Vec::new();
                let internal = |e| NodeError::Internal(Box::new(e));
                for c in v.store.conversations().map_err(internal)? {
                    all.extend(v.store.transfers(&c.conversation.id).map_err(internal)?);
                }
                let mut transfers: Vec<dto::Transfer> =
                    all.iter().map(dto::Transfer::from_record).collect();
                transfers.extend(prep::failures(v.store).map_err(internal)?);
                Ok(dto::Transfers { transfers })
            })
            .await?;
        // Those being prepared, unless the store has them already (announced just now).
        let stored: std::collections::BTreeSet<String> =
            list.transfers.iter().map(|t| t.id.clone()).collect();
        list.transfers.extend(
            self.preparing_list()
                .into_iter()
                .filter(|t| !stored.contains(&t.id)),
        );
        list.transfers
            .sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id.clone())));
        self.with_progress(&mut list.transfers);
        Ok(list)
    }

    /// `GET /transfers/{id}`.
    pub async fn transfer(&self, id: &str) -> NodeResult<dto::Transfer> {
        let id = transfer_id(id)?;
        let stored = self
            .read(move |v| {
                let internal = |e| NodeError::Internal(Box::new(e));
                match v.store.transfer(&id).map_err(internal)? {
                    Some(t) => Ok(Some(dto::Transfer::from_record(&t))),
                    None => Ok(prep::failures(v.store)
                        .map_err(internal)?
                        .into_iter()
                        .find(|t| t.id == id.to_string())),
                }
            })
            .await?;
        let mut t = match stored {
            Some(t) => t,
            None => prep::lock(&prep::preparing(&blob_dir(&self.dir)))
                .get(&id)
                .map(|e| e.transfer.clone())
                .ok_or(NodeError::NotFound("transfer"))?,
        };
        self.with_progress([&mut t]);
        Ok(t)
    }

    /// `POST /transfers/{id}/{pause|resume|cancel}`.
    pub async fn transfer_action(
        &self,
        id: &str,
        action: dto::TransferAction,
    ) -> NodeResult<dto::Transfer> {
        let id = transfer_id(id)?;
        // Being prepared: only cancel applies (the pass stops at its next read).
        {
            let table = prep::preparing(&blob_dir(&self.dir));
            let mut table = prep::lock(&table);
            if let Some(e) = table.get_mut(&id)
                && e.transfer.state == dto::TransferState::Preparing
            {
                if action != dto::TransferAction::Cancel {
                    return Err(NodeError::Conflict(
                        "a file being prepared can only be cancelled".into(),
                    ));
                }
                e.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                let mut shown = e.transfer.clone();
                shown.state = dto::TransferState::Cancelled;
                shown.reason = Some(dto::TransferReason::User);
                return Ok(shown);
            }
        }
        let action = match action {
            dto::TransferAction::Pause => TransferAction::Pause,
            dto::TransferAction::Resume => TransferAction::Resume,
            dto::TransferAction::Cancel => TransferAction::Cancel,
        };
        self.write(move |cx| {
            let t = cx
                .machine
                .transfer_action(cx.now, cx.store, id, action)
                .map_err(|e| cx.command(e))?;
            Ok(dto::Transfer::from_record(&t))
        })
        .await
    }

    /// `POST /transfers/{id}/save`: decrypts a received file into `dir` (checking its
    /// plaintext hash) and records where it went.
    pub async fn save_transfer(&self, id: &str, dir: String) -> NodeResult<dto::Transfer> {
        let id = transfer_id(id)?;
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() {
            return Err(invalid("dir must be absolute"));
        }
        let t = self
            .read(move |v| {
                v.store
                    .transfer(&id)
                    .map_err(|e| NodeError::Internal(Box::new(e)))?
                    .ok_or(NodeError::NotFound("transfer"))
            })
            .await?;
        if t.direction != TransferDirection::Incoming {
            return Err(NodeError::Conflict(
                "only a received file can be saved".into(),
            ));
        }
        if t.state != TransferState::Done {
            return Err(NodeError::Conflict("the file has not arrived yet".into()));
        }
        let blobs = blob_dir(&self.dir);
        let manifest = t.manifest.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let data = BlobDir::new(&blobs)?.data_path(&manifest.blob);
            dopus_files::save_blob(&data, &manifest, &dir).map_err(std::io::Error::other)
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string().into()))?
        .map_err(|e| NodeError::Conflict(format!("could not save the file: {e}")))?;
        let path = saved.to_string_lossy().into_owned();
        self.write(move |cx| {
            cx.store
                .apply_one(Change::SetTransferSavedPath {
                    id,
                    path,
                    at: cx.now,
                })
                .map_err(|e| cx.store_failed(e))?;
            cx.store
                .transfer(&id)
                .map_err(|e| cx.store_failed(e))?
                .map(|t| dto::Transfer::from_record(&t))
                .ok_or(NodeError::NotFound("transfer"))
        })
        .await
    }
}

pub use dopus_core::machine::FileTarget;

/// What the UI may add to a file's manifest: an image's size and a small thumbnail (JPEG,
/// PNG or WebP, at most 16 KiB), shown by the receiver before the file arrives.
#[derive(Debug, Default)]
pub struct FilePreview {
    /// Width and height in pixels.
    pub dimensions: Option<dopus_proto::transfer::Dimensions>,
    /// The thumbnail.
    pub thumbnail: Option<dopus_proto::transfer::Thumbnail>,
}

/// Where the decrypted bytes of a transfer come from (`GET /transfers/{id}/content`).
#[derive(Debug)]
pub enum ContentSource {
    /// A received blob, decrypted on the fly.
    Blob {
        /// The encrypted blob file.
        data: PathBuf,
        /// Its manifest (key, nonce, size).
        manifest: Box<FileManifest>,
    },
    /// The file we sent, as it is on disk.
    Plain(PathBuf),
}

impl ContentSource {
    /// Opens a reader of the plaintext.
    pub fn open(&self) -> std::io::Result<Box<dyn ReadSeek + Send>> {
        Ok(match self {
            Self::Blob { data, manifest } => {
                Box::new(dopus_files::PlainReader::open(data, manifest)?)
            }
            Self::Plain(p) => Box::new(std::fs::File::open(p)?),
        })
    }
}

/// `Read + Seek`, as one trait object.
pub trait ReadSeek: std::io::Read + std::io::Seek {}
impl<T: std::io::Read + std::io::Seek> ReadSeek for T {}

impl Node {
    /// `POST /conversations/{id}/files/upload`: the UI hands over a file's bytes (`len` of
    /// them); they are written under the node's upload directory (checked against the free
    /// space first) and the file is sent from there like `send_file`. The copy is removed
    /// when the transfer ends.
    pub async fn upload_file(
        self: &Arc<Self>,
        target: FileTarget,
        name: String,
        mime: Option<String>,
        len: u64,
        preview: FilePreview,
        body: axum::body::Body,
    ) -> NodeResult<dto::Transfer> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        if name.is_empty() || name.len() > 255 {
            return Err(invalid("the file name must be 1 to 255 bytes"));
        }
        if len > dopus_proto::transfer::MAX_FILE_SIZE {
            return Err(NodeError::TooLarge("the file is too large".into()));
        }
        let safe = dopus_core::transfer::safe_file_name(&name);
        let mut tag = [0u8; 8];
        getrandom::fill(&mut tag).map_err(|e| NodeError::Internal(e.to_string().into()))?;
        let dir =
            upload_dir(&self.dir).join(tag.iter().map(|b| format!("{b:02x}")).collect::<String>());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| NodeError::Internal(e.into()))?;
        let cleanup = |dir: PathBuf| async move {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        };
        if let Err(e) = check_space(&dir, len) {
            cleanup(dir).await;
            // Read the body through (nothing is kept) so the client gets this answer rather
            // than a broken connection in the middle of its upload.
            let mut stream = body.into_data_stream();
            while let Some(Ok(_)) = stream.next().await {}
            return Err(NodeError::Conflict(format!(
                "the file does not fit the disk: {e}"
            )));
        }
        let path = dir.join(&safe);
        let written: NodeResult<()> = async {
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| NodeError::Internal(e.into()))?;
            let mut got = 0u64;
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| invalid("the upload was interrupted"))?;
                got += chunk.len() as u64;
                if got > len {
                    return Err(invalid("the body is longer than its Content-Length"));
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| NodeError::Conflict(format!("could not store the file: {e}")))?;
            }
            if got != len {
                return Err(invalid("the upload ended early"));
            }
            file.sync_all()
                .await
                .map_err(|e| NodeError::Internal(e.into()))?;
            Ok(())
        }
        .await;
        if let Err(e) = written {
            cleanup(dir).await;
            return Err(e);
        }
        let mime = mime.or_else(|| Some(guess_mime(&name)));
        match self
            .send_file_from(
                target,
                path.to_string_lossy().into_owned(),
                mime,
                preview,
                Some(dir.clone()),
            )
            .await
        {
            Ok(t) => Ok(t),
            Err(e) => {
                cleanup(dir).await;
                Err(e)
            }
        }
    }

    /// `GET /transfers/{id}/content`: where the plaintext of a transfer can be read (a
    /// received file once verified; a sent file from its source while it is unchanged).
    pub async fn transfer_content(&self, id: &str) -> NodeResult<(dto::Transfer, ContentSource)> {
        let id = transfer_id(id)?;
        let t = self
            .read(move |v| {
                v.store
                    .transfer(&id)
                    .map_err(|e| NodeError::Internal(Box::new(e)))
            })
            .await?;
        let Some(t) = t else {
            // Being prepared: our own file, from where it is.
            let table = prep::preparing(&blob_dir(&self.dir));
            let table = prep::lock(&table);
            let e = table.get(&id).ok_or(NodeError::NotFound("transfer"))?;
            if e.transfer.state != dto::TransferState::Preparing {
                return Err(NodeError::Conflict("the file was not sent".into()));
            }
            return Ok((e.transfer.clone(), ContentSource::Plain(e.source.clone())));
        };
        let source = match t.direction {
            TransferDirection::Incoming => {
                if t.state != TransferState::Done {
                    return Err(NodeError::Conflict("the file has not arrived yet".into()));
                }
                let data = BlobDir::new(blob_dir(&self.dir))
                    .map_err(|e| NodeError::Internal(e.into()))?
                    .data_path(&t.manifest.blob);
                ContentSource::Blob {
                    data,
                    manifest: Box::new(t.manifest.clone()),
                }
            }
            TransferDirection::Outgoing => {
                let Some(src) = &t.source else {
                    return Err(NodeError::NotFound("file"));
                };
                let path = PathBuf::from(&src.path);
                let now = dopus_files::stamp_path(&path).ok();
                let want = dopus_files::SourceStamp {
                    size: src.size,
                    modified_ns: src.modified_ns,
                    inode: src.inode,
                };
                // A file sent from the UI is kept encrypted once delivered (its upload copy
                // is sealed into the blob directory).
                let sealed = BlobDir::new(blob_dir(&self.dir))
                    .map_err(|e| NodeError::Internal(e.into()))?
                    .data_path(&t.manifest.blob);
                if now.as_ref() == Some(&want) {
                    ContentSource::Plain(path)
                } else if std::fs::metadata(&sealed).is_ok_and(|m| m.len() == t.manifest.size) {
                    ContentSource::Blob {
                        data: sealed,
                        manifest: Box::new(t.manifest.clone()),
                    }
                } else {
                    return Err(NodeError::Conflict(
                        "the file changed or is gone since it was sent".into(),
                    ));
                }
            }
        };
        Ok((dto::Transfer::from_record(&t), source))
    }
}

/// What the background half of a send needs.
struct PrepareJob {
    id: MessageId,
    target: FileTarget,
    path: PathBuf,
    name: String,
    mime: String,
    preview: FilePreview,
    size: u64,
    cancel: Arc<AtomicBool>,
    upload_copy: Option<PathBuf>,
}

/// Milliseconds since the Unix epoch (for the `updated_at` of a transfer not in the store).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Hashes and encrypts the file at `path` (expected `size` bytes) under a fresh key, writing
/// its outboard into `blobs`; `progress` gets the reports due (at most 4 a second, and the
/// last). Blocking.
fn prepare_file(
    blobs: &Path,
    path: &Path,
    size: u64,
    cancel: &AtomicBool,
    mut progress: impl FnMut(dto::TransferProgress),
) -> Result<(FileKey, FileNonce, dopus_files::Prepared), dto::TransferReason> {
    let io = |_| dto::TransferReason::Io;
    let dir = BlobDir::new(blobs).map_err(|e| match e.kind() {
        std::io::ErrorKind::StorageFull => dto::TransferReason::DiskFull,
        _ => dto::TransferReason::Io,
    })?;
    let mut key = [0u8; 32];
    let mut nonce = [0u8; 12];
    let mut tag = [0u8; 8];
    getrandom::fill(&mut key).map_err(io)?;
    getrandom::fill(&mut nonce).map_err(io)?;
    getrandom::fill(&mut tag).map_err(io)?;
    let (key, nonce) = (FileKey(key), FileNonce(nonce));
    let tmp = blobs.join(format!(
        "prepare-{}.obao.part",
        tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    prep::test_delay();
    let mut throttle = prep::Throttle::new(std::time::Instant::now(), size);
    if let Some(p) = throttle.due(std::time::Instant::now(), 0) {
        progress(p);
    }
    let result = dopus_files::prepare_with_progress(path, &key, nonce, &tmp, &mut |n| {
        if let Some(p) = throttle.due(std::time::Instant::now(), n) {
            progress(p);
        }
        if n < size {
            prep::test_delay();
        }
        !prep::cancelled(cancel)
    });
    let p = match result {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(prep::reason_of(&e));
        }
    };
    if let Err(e) = std::fs::rename(&tmp, dir.outboard_path(&p.blob)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(match e.kind() {
            std::io::ErrorKind::StorageFull => dto::TransferReason::DiskFull,
            _ => dto::TransferReason::Io,
        });
    }
    Ok((key, nonce, p))
}
