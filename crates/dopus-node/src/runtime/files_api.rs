//! The node's file operations for the API: send a file, list transfers, pause, resume,
//! cancel, save (docs/api.md, "Files").

use super::files::{check_space, upload_dir};
use super::{Node, NodeError, NodeResult};
use crate::api::dto;
use dopus_core::machine::TransferAction;
use dopus_core::store::{
    Change, FileTransfer, SourceFile, Store, TransferDirection, TransferId, TransferState,
};
use dopus_files::BlobDir;
use dopus_proto::transfer::{FILE_FORMAT_VERSION, FileKey, FileManifest, FileNonce};
use dopus_types::{ChannelId, UserId};
use std::path::{Path, PathBuf};

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
    /// `POST /conversations/{id}/files`: hashes and encrypts the file at `path` (on the
    /// node's machine) on a blocking thread, then announces it to `peer` and serves it.
    pub async fn send_file(
        &self,
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
        &self,
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
        &self,
        peer: UserId,
        path: String,
        mime: Option<String>,
        preview: FilePreview,
    ) -> NodeResult<dto::Transfer> {
        self.send_file_to(FileTarget::Peer(peer), path, mime, preview)
            .await
    }

    /// Hashes and encrypts the file at `path` (on a blocking thread), then announces it to
    /// `target` and serves it.
    pub async fn send_file_to(
        &self,
        target: FileTarget,
        path: String,
        mime: Option<String>,
        preview: FilePreview,
    ) -> NodeResult<dto::Transfer> {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(invalid("path must be absolute"));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| invalid("path names no file"))?;
        let mime = mime.unwrap_or_else(|| guess_mime(&name));
        let blobs = blob_dir(&self.dir);
        let prepared = tokio::task::spawn_blocking(move || -> NodeResult<_> {
            let dir = BlobDir::new(&blobs).map_err(|e| NodeError::Internal(e.into()))?;
            let mut key = [0u8; 32];
            let mut nonce = [0u8; 12];
            getrandom::fill(&mut key).map_err(|e| NodeError::Internal(e.to_string().into()))?;
            getrandom::fill(&mut nonce).map_err(|e| NodeError::Internal(e.to_string().into()))?;
            let (key, nonce) = (FileKey(key), FileNonce(nonce));
            let mut tag = [0u8; 8];
            getrandom::fill(&mut tag).map_err(|e| NodeError::Internal(e.to_string().into()))?;
            let tmp = blobs.join(format!(
                "prepare-{}.obao.part",
                tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ));
            let p = match dopus_files::prepare(&path, &key, nonce, &tmp) {
                Ok(p) => p,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(match e {
                        dopus_files::PrepareError::Io(io)
                            if io.kind() == std::io::ErrorKind::NotFound =>
                        {
                            NodeError::NotFound("file")
                        }
                        other => invalid(other.to_string()),
                    });
                }
            };
            std::fs::rename(&tmp, dir.outboard_path(&p.blob))
                .map_err(|e| NodeError::Internal(e.into()))?;
            Ok((key, nonce, p, path))
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string().into()))??;
        let (key, nonce, p, path) = prepared;
        let manifest = FileManifest {
            version: FILE_FORMAT_VERSION,
            blob: p.blob,
            size: p.size,
            key,
            nonce,
            name,
            mime,
            plain_blake3: p.plain,
            dimensions: preview.dimensions,
            duration_ms: None,
            thumbnail: preview.thumbnail,
        };
        manifest
            .validate()
            .map_err(|e| invalid(format!("the file cannot be described: {e}")))?;
        let source = SourceFile {
            path: path.to_string_lossy().into_owned(),
            size: p.stamp.size,
            modified_ns: p.stamp.modified_ns,
            inode: p.stamp.inode,
        };
        self.write(move |cx| {
            let (_, t) = match target {
                FileTarget::Peer(peer) => cx
                    .machine
                    .send_file(cx.now, cx.store, peer, manifest, source, None),
                FileTarget::Channel(channel) => cx
                    .machine
                    .channel_send_file(cx.now, cx.store, channel, manifest, source, None),
            }
            .map_err(|e| cx.command(e))?;
            Ok(dto::Transfer::from_record(&t))
        })
        .await
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
                all.sort_by_key(|t| std::cmp::Reverse(t.created_at));
                Ok(dto::Transfers {
                    transfers: all.iter().map(dto::Transfer::from_record).collect(),
                })
            })
            .await?;
        self.with_progress(&mut list.transfers);
        Ok(list)
    }

    /// `GET /transfers/{id}`.
    pub async fn transfer(&self, id: &str) -> NodeResult<dto::Transfer> {
        let id = transfer_id(id)?;
        let mut t = self
            .read(move |v| {
                v.store
                    .transfer(&id)
                    .map_err(|e| NodeError::Internal(Box::new(e)))?
                    .map(|t| dto::Transfer::from_record(&t))
                    .ok_or(NodeError::NotFound("transfer"))
            })
            .await?;
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

/// Where a file goes.
#[derive(Debug, Clone, Copy)]
pub enum FileTarget {
    /// A contact (Olm, one receiver).
    Peer(UserId),
    /// A space channel (Megolm, every member allowed to view it).
    Channel(ChannelId),
}

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
        &self,
        peer: UserId,
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
            .send_file_with(peer, path.to_string_lossy().into_owned(), mime, preview)
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
                    .map_err(|e| NodeError::Internal(Box::new(e)))?
                    .ok_or(NodeError::NotFound("transfer"))
            })
            .await?;
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
