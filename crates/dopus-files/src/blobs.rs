//! The blob directory and the receiving side of a download.
//!
//! Received files stay encrypted at rest: a blob is kept as its ciphertext (`<hex>.data`, a
//! sparse file of the full size, filled as groups verify) and its outboard (`<hex>.obao`) in
//! the node's data directory. The key lives only in the store (SQLCipher). The plaintext is
//! produced when the user saves the file or the UI previews it (`save.rs`), and the node can
//! serve the blob to other members as it is.
//!
//! [`Fetch`] is one download's I/O: a verifying decoder per request in flight, verified groups
//! written at their offsets, hash pairs saved in the outboard, and the plaintext hash computed
//! in order as groups arrive (caught up from disk when they arrive out of order), so finishing
//! a download costs no extra pass when it came in order.

use crate::cipher::FileCipher;
use crate::decode::{DecodeError, FeedError, Item, RangeDecoder};
use crate::outboard::{OutboardFile, tree};
use bao_tree::blake3;
use bao_tree::io::sync::{OutboardMut, ReadAt, WriteAt};
use dopus_core::transfer::RequestKey;
use dopus_proto::transfer::{
    CHUNK_GROUP_BYTES, FileManifest, GroupSet, PlainHash, groups_for_size,
};
use dopus_types::BlobHash;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Plaintext hashed from disk per call while catching up, so one message never costs a
/// long pause.
const CATCH_UP_BYTES: u64 = 4 << 20;

/// Where blobs live: `<dir>/<hex>.data` and `<dir>/<hex>.obao`.
#[derive(Clone, Debug)]
pub struct BlobDir {
    dir: PathBuf,
}

impl BlobDir {
    /// The blob directory at `dir`, created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The ciphertext file of a received blob.
    pub fn data_path(&self, blob: &BlobHash) -> PathBuf {
        self.dir.join(format!("{}.data", hex(blob)))
    }

    /// The outboard of a blob (received, or of a file we send).
    pub fn outboard_path(&self, blob: &BlobHash) -> PathBuf {
        self.dir.join(format!("{}.obao", hex(blob)))
    }

    /// Deletes a blob's files (missing ones are fine).
    pub fn remove(&self, blob: &BlobHash) -> io::Result<()> {
        for p in [self.data_path(blob), self.outboard_path(blob)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Opens a received blob for serving: its ciphertext and outboard.
    pub fn open_blob(&self, blob: &BlobHash, size: u64) -> io::Result<(File, OutboardFile)> {
        let data = File::open(self.data_path(blob))?;
        let outboard = File::open(self.outboard_path(blob))?;
        let root = blake3::Hash::from(*blob.as_bytes());
        Ok((data, OutboardFile::new(root, size, outboard)))
    }

    /// Opens the outboard of a file we send.
    pub fn open_outboard(&self, blob: &BlobHash, size: u64) -> io::Result<OutboardFile> {
        let file = File::open(self.outboard_path(blob))?;
        Ok(OutboardFile::new(
            blake3::Hash::from(*blob.as_bytes()),
            size,
            file,
        ))
    }
}

fn hex(blob: &BlobHash) -> String {
    blob.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why receiving failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The answer does not verify (the holder lied, or sent too much).
    #[error(transparent)]
    Bad(#[from] DecodeError),
    /// No decoder for this request (never started, or cancelled).
    #[error("no such request")]
    UnknownRequest,
    /// Writing or reading local files failed.
    #[error("blob file I/O failed")]
    Io(#[source] io::Error),
}

impl FetchError {
    /// Whether this is a full disk (pause the download, corrupt nothing).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, FetchError::Io(e) if is_disk_full(e))
    }
}

/// Whether an I/O error means the disk (or quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

/// What one message of an answer did.
#[derive(Debug, Default)]
pub struct Received {
    /// Groups verified and written by this message (also when it then failed: they count).
    pub verified: GroupSet,
    /// The whole answer has arrived (forget the request).
    pub done: bool,
    /// The answer failed here; the request is over.
    pub failed: Option<FetchError>,
}

impl Received {
    /// The failure, if any, as a `Result` (tests and simple callers).
    pub fn ok(self) -> Result<Received, FetchError> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }
}

/// The plaintext hash, computed in order.
struct PlainCursor {
    hasher: blake3::Hasher,
    next: u64,
}

/// One download's files and decoders (see the module docs).
pub struct Fetch<W = File> {
    size: u64,
    root: blake3::Hash,
    cipher: FileCipher,
    expected: PlainHash,
    data: W,
    outboard: OutboardFile,
    decoders: HashMap<RequestKey, RangeDecoder>,
    have: GroupSet,
    cursor: PlainCursor,
    scratch: Vec<u8>,
}

impl<W> std::fmt::Debug for Fetch<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetch")
            .field("size", &self.size)
            .field("requests", &self.decoders.len())
            .field("have", &self.have)
            .finish_non_exhaustive()
    }
}

impl Fetch<File> {
    /// Opens (or creates) the files of the download announced by `manifest`, whose groups
    /// `verified` are already durable.
    pub fn open(dir: &BlobDir, manifest: &FileManifest, verified: &GroupSet) -> io::Result<Self> {
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.data_path(&manifest.blob))?;
        if data.metadata()?.len() != manifest.size {
            // Sparse: blocks are allocated as groups are written.
            data.set_len(manifest.size)?;
        }
        let outboard = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.outboard_path(&manifest.blob))?;
        Ok(Self::with_data(data, outboard, manifest, verified))
    }
}

impl<W: BlobData> Fetch<W> {
    /// A download writing its ciphertext to `data` (tests use it to fail writes).
    pub fn with_data(
        data: W,
        outboard: File,
        manifest: &FileManifest,
        verified: &GroupSet,
    ) -> Self {
        let root = blake3::Hash::from(*manifest.blob.as_bytes());
        Self {
            size: manifest.size,
            root,
            cipher: FileCipher::new(&manifest.key, manifest.nonce),
            expected: manifest.plain_blake3,
            data,
            outboard: OutboardFile::new(root, manifest.size, outboard),
            decoders: HashMap::new(),
            have: verified.intersection(&GroupSet::from_range(0..groups_for_size(manifest.size))),
            cursor: PlainCursor {
                hasher: blake3::Hasher::new(),
                next: 0,
            },
            scratch: Vec::new(),
        }
    }

    /// Groups on disk and verified.
    pub fn have(&self) -> &GroupSet {
        &self.have
    }

    /// Requests with a decoder.
    pub fn requests(&self) -> usize {
        self.decoders.len()
    }

    /// Starts decoding the answer to request `key` for `groups`.
    pub fn start(&mut self, key: RequestKey, groups: &GroupSet) {
        self.decoders
            .insert(key, RangeDecoder::new(self.root, tree(self.size), groups));
    }

    /// Forgets request `key` (cancelled, or its holder dropped).
    pub fn cancel(&mut self, key: RequestKey) {
        self.decoders.remove(&key);
    }

    /// Forgets every request (the download paused).
    pub fn cancel_all(&mut self) {
        self.decoders.clear();
    }

    /// Takes the next bytes of the answer to `key`: verifies them, writes what verified. The
    /// groups that verified are reported even when the message then fails. On a bad answer
    /// the request is over (what verified before the bad group stays); on a full disk, pause
    /// the download: nothing unverified or unwritten was counted.
    pub fn receive(&mut self, key: RequestKey, bytes: &[u8]) -> Received {
        let Some(mut decoder) = self.decoders.remove(&key) else {
            return Received {
                failed: Some(FetchError::UnknownRequest),
                ..Received::default()
            };
        };
        let mut verified = GroupSet::new();
        let data = &mut self.data;
        let outboard = &mut self.outboard;
        let cursor = &mut self.cursor;
        let cipher = &self.cipher;
        let scratch = &mut self.scratch;
        let result = decoder.feed(bytes, |item| -> io::Result<()> {
            match item {
                Item::Parent { node, pair } => outboard.save(node, &pair),
                Item::Leaf {
                    offset,
                    data: bytes,
                } => {
                    data.write_all_at(offset, bytes)?;
                    let g = offset / CHUNK_GROUP_BYTES;
                    verified.insert(g..g + 1);
                    if offset == cursor.next {
                        scratch.clear();
                        scratch.extend_from_slice(bytes);
                        cipher.apply(offset, scratch).map_err(io::Error::other)?;
                        cursor.hasher.update(scratch);
                        cursor.next += bytes.len() as u64;
                    }
                    Ok(())
                }
            }
        });
        for r in verified.ranges() {
            self.have.insert(r.clone());
        }
        let mut out = Received {
            verified,
            done: false,
            failed: None,
        };
        match result {
            Ok(()) => {
                out.done = decoder.is_done();
                if !out.done {
                    self.decoders.insert(key, decoder);
                }
                if let Err(e) = self.catch_up(CATCH_UP_BYTES) {
                    out.failed = Some(FetchError::Io(e));
                }
            }
            Err(FeedError::Decode(e)) => out.failed = Some(FetchError::Bad(e)),
            Err(FeedError::Sink(e)) => out.failed = Some(FetchError::Io(e)),
        }
        out
    }

    /// Hashes up to `limit` bytes of plaintext from disk, as far as groups are present.
    fn catch_up(&mut self, limit: u64) -> io::Result<()> {
        let mut budget = limit;
        while budget > 0 && self.cursor.next < self.size {
            let g = self.cursor.next / CHUNK_GROUP_BYTES;
            if !self.have.contains(g) {
                break;
            }
            let end = self.have.ranges()[self.have.ranges().partition_point(|r| r.end <= g)].end;
            let end_byte = (end * CHUNK_GROUP_BYTES).min(self.size);
            let n = (end_byte - self.cursor.next).min(budget).min(1 << 20);
            let n = usize::try_from(n).unwrap_or(1 << 20);
            self.scratch.resize(n, 0);
            self.data
                .read_exact_at(self.cursor.next, &mut self.scratch)?;
            self.cipher
                .apply(self.cursor.next, &mut self.scratch)
                .map_err(io::Error::other)?;
            self.cursor.hasher.update(&self.scratch);
            self.cursor.next += n as u64;
            budget -= n as u64;
        }
        Ok(())
    }

    /// Makes everything written so far durable (before the store commits the verified set).
    pub fn sync(&mut self) -> io::Result<()> {
        self.outboard.sync()?;
        self.data.sync_data()
    }

    /// Every group is there: finishes the plaintext hash (reading from disk whatever arrived
    /// out of order) and says whether it matches the manifest.
    pub fn finish(&mut self) -> Result<bool, FetchError> {
        self.catch_up(u64::MAX).map_err(FetchError::Io)?;
        self.sync().map_err(FetchError::Io)?;
        if self.cursor.next != self.size {
            return Ok(false);
        }
        Ok(*self.cursor.hasher.finalize().as_bytes() == self.expected.0)
    }
}

/// Where a download's ciphertext goes: a file, or in tests a wrapper that fails on purpose.
pub trait BlobData: ReadAt + WriteAt {
    /// Makes the written bytes durable.
    fn sync_data(&self) -> io::Result<()>;
}

impl BlobData for File {
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}
