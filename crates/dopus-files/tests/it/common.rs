//! Shared helpers: files with pseudo-random content, prepared manifests, stored transfers and
//! a pump that runs several nodes in virtual time.

use dopus_core::store::{
    Change, ConversationId, FileTransfer, MemoryStore, Store, TransferDirection, TransferId,
    TransferState,
};
use dopus_core::transfer::{DownloadConfig, HolderId, PlannerConfig};
use dopus_files::{BlobDir, BlobNode, Library, MemoryPipe, NodeOutput, Shelf, prepare};
use dopus_proto::transfer::{
    FILE_FORMAT_VERSION, FileKey, FileManifest, FileNonce, GroupSet, MAX_BLOB_MESSAGE,
};
use dopus_types::{Timestamp, UserId};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Deterministic pseudo-random bytes (xorshift), fast enough for hundreds of MiB.
pub fn fill(seed: u64, buf: &mut [u8]) {
    let mut s = seed | 1;
    for chunk in buf.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let b = s.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Writes a file of `size` pseudo-random bytes.
pub fn random_file(dir: &Path, name: &str, size: u64, seed: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    let mut n = 0;
    while left > 0 {
        let take = left.min(buf.len() as u64) as usize;
        fill(seed.wrapping_add(n), &mut buf[..take]);
        f.write_all(&buf[..take]).unwrap();
        left -= take as u64;
        n += 1;
    }
    f.into_inner().unwrap().sync_all().unwrap();
    path
}

/// A key and nonce drawn from the OS.
pub fn key_nonce() -> (FileKey, FileNonce) {
    let mut k = [0u8; 32];
    let mut n = [0u8; 12];
    getrandom::fill(&mut k).unwrap();
    getrandom::fill(&mut n).unwrap();
    (FileKey(k), FileNonce(n))
}

/// Prepares `path` into `dir` and returns its manifest and stamp.
pub fn prepared(path: &Path, dir: &BlobDir) -> (FileManifest, dopus_files::SourceStamp) {
    let (key, nonce) = key_nonce();
    // The outboard is named after the blob, which is only known afterwards.
    let tmp = dir.path().join("preparing.obao");
    let p = prepare(path, &key, nonce, &tmp).unwrap();
    std::fs::rename(&tmp, dir.outboard_path(&p.blob)).unwrap();
    let manifest = FileManifest {
        version: FILE_FORMAT_VERSION,
        blob: p.blob,
        size: p.size,
        key,
        nonce,
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        mime: "application/octet-stream".into(),
        plain_blake3: p.plain,
        dimensions: None,
        duration_ms: None,
        thumbnail: None,
    };
    (manifest, p.stamp)
}

pub fn peer() -> UserId {
    dopus_core::store::conformance::user(2)
}

/// The stored incoming transfer for `manifest`.
pub fn incoming(id: u128, manifest: &FileManifest) -> FileTransfer {
    FileTransfer {
        id: TransferId(Uuid::from_u128(id)),
        conversation: ConversationId::Direct(peer()),
        message: None,
        direction: TransferDirection::Incoming,
        manifest: manifest.clone(),
        state: TransferState::Queued,
        reason: None,
        verified: GroupSet::new(),
        source: None,
        saved_path: None,
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    }
}

/// Download settings for tests: 1 MiB requests, a window of 4, commits every 1 MiB.
pub fn config() -> DownloadConfig {
    DownloadConfig {
        planner: PlannerConfig::default(),
        commit: dopus_core::transfer::CommitPolicy {
            every_bytes: 1 << 20,
            every_ms: 1_000,
        },
    }
}

pub type Node<L> = BlobNode<MemoryPipe, L>;

/// A node with a shelf in `dir`.
pub fn node(dir: &BlobDir) -> Node<Shelf> {
    BlobNode::new(
        Shelf::new(dir.clone()),
        dir.clone(),
        config(),
        dopus_core::transfer::LinkConfig::default(),
    )
}

/// Connects two nodes: `a` sees `b` as holder `b_at_a` and `b` sees `a` as `a_at_b`.
pub fn link<L1: Library, L2: Library>(
    a: &mut Node<L1>,
    b_at_a: HolderId,
    b: &mut Node<L2>,
    a_at_b: HolderId,
) {
    let (pa, pb) = MemoryPipe::pair(1 << 20, MAX_BLOB_MESSAGE);
    a.connect(b_at_a, pa);
    b.connect(a_at_b, pb);
}

/// Applies a node's outputs to its store; returns the events.
pub fn apply(
    store: &mut MemoryStore,
    outputs: Vec<NodeOutput>,
) -> Vec<dopus_core::transfer::TransferEvent> {
    let mut events = Vec::new();
    for o in outputs {
        match o {
            NodeOutput::Persist(changes) => {
                store.apply(changes).unwrap();
            }
            NodeOutput::Event(e) => events.push(e),
            NodeOutput::Served { .. } => {}
        }
    }
    events
}

/// Saves a transfer record in a store.
pub fn store_with(transfer: &FileTransfer) -> MemoryStore {
    let mut store = MemoryStore::new();
    store
        .apply_one(Change::SaveTransfer(transfer.clone()))
        .unwrap();
    store
}

/// Whether two files have the same bytes.
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]).unwrap() {
                0 => break,
                k => n += k,
            }
        }
        n
    }
}
