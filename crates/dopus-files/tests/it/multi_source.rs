//! Three providers, one of them lying: the file completes from the honest ones and the liar is
//! dropped at exactly the group it corrupted. A peer asking for a file it was never offered
//! gets nothing.

use crate::common::*;
use dopus_core::store::{Store, TransferState};
use dopus_core::transfer::{DropReason, HolderId, ServeJob};
use dopus_files::outboard::tree;
use dopus_files::serve::{ServeError, answer_ranges};
use dopus_files::{BlobDir, Library, Shelf, save_blob};
use dopus_proto::transfer::{CHUNK_GROUP_BYTES, DATA_HEADER_BYTES, FileManifest};
use dopus_types::{BlobHash, Timestamp};
use std::cell::Cell;
use std::collections::VecDeque;
use std::path::Path;

/// A shelf that corrupts one byte of the 10th group of the first answer it gives.
struct Liar {
    inner: Shelf,
    size: u64,
    lied_at: Cell<Option<u64>>,
}

impl Library for Liar {
    fn offer(&self, holder: HolderId, blob: &BlobHash) -> Option<dopus_core::transfer::Offer> {
        self.inner.offer(holder, blob)
    }

    fn answer(&self, job: &ServeJob, max: usize) -> Result<VecDeque<Vec<u8>>, ServeError> {
        let mut messages = self.inner.answer(job, max)?;
        if self.lied_at.get().is_none() {
            // Find the 10th leaf of this answer in the stream.
            let mut pos = 0usize;
            let mut leaves = 0;
            for item in bao_tree::iter::ResponseIter::new(
                tree(self.size),
                answer_ranges(&job.groups, self.size),
            ) {
                match item {
                    bao_tree::iter::BaoChunk::Parent { .. } => pos += 64,
                    bao_tree::iter::BaoChunk::Leaf {
                        start_chunk, size, ..
                    } => {
                        leaves += 1;
                        if leaves == 10 {
                            let at = pos + 1_000;
                            let per = max - DATA_HEADER_BYTES;
                            messages[at / per][DATA_HEADER_BYTES + at % per] ^= 0x01;
                            self.lied_at.set(Some(start_chunk.0 / 16));
                            break;
                        }
                        pos += size;
                    }
                }
            }
        }
        Ok(messages)
    }
}

/// A copy of the blob as a holder that received it keeps it: ciphertext and outboard.
fn holder_copy(source: &Path, manifest: &FileManifest, from: &BlobDir, to: &BlobDir) {
    use bao_tree::io::sync::ReadAt;
    let cipher = dopus_files::FileCipher::new(&manifest.key, manifest.nonce);
    let stamp = dopus_files::stamp_path(source).unwrap();
    let src = dopus_files::EncryptedSource::open(source, cipher, &stamp).unwrap();
    let mut out = std::fs::File::create(to.data_path(&manifest.blob)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < manifest.size {
        let n = (manifest.size - off).min(buf.len() as u64) as usize;
        src.read_exact_at(off, &mut buf[..n]).unwrap();
        std::io::Write::write_all(&mut out, &buf[..n]).unwrap();
        off += n as u64;
    }
    std::fs::copy(
        from.outboard_path(&manifest.blob),
        to.outboard_path(&manifest.blob),
    )
    .unwrap();
}

#[test]
fn three_providers_one_liar_completes_and_the_liar_is_dropped_at_its_group() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| BlobDir::new(tmp.path().join(n)).unwrap();
    let (sd, h1d, h2d, rd) = (dir("sender"), dir("holder"), dir("liar"), dir("receiver"));
    let size = 6 * (1 << 20) + 777;
    let path = random_file(tmp.path(), "movie.mkv", size, 42);
    let (manifest, stamp) = prepared(&path, &sd);
    holder_copy(&path, &manifest, &sd, &h1d);
    holder_copy(&path, &manifest, &sd, &h2d);

    let mut sender = node(&sd);
    sender
        .library_mut()
        .add_file(&manifest, path.clone(), stamp, None);
    let mut holder = node(&h1d);
    holder.library_mut().add_blob(manifest.blob, size, None);
    let mut liar_shelf = Shelf::new(h2d.clone());
    liar_shelf.add_blob(manifest.blob, size, None);
    let mut liar = dopus_files::BlobNode::new(
        Liar {
            inner: liar_shelf,
            size,
            lied_at: Cell::new(None),
        },
        h2d.clone(),
        config(),
        dopus_core::transfer::LinkConfig::default(),
    );
    // A window of 2 per holder, so every holder gets asked even when one answers first.
    let mut cfg = config();
    cfg.planner.window = 2;
    let mut receiver = dopus_files::BlobNode::new(
        Shelf::new(rd.clone()),
        rd.clone(),
        cfg,
        dopus_core::transfer::LinkConfig::default(),
    );
    let me = HolderId(100);
    link(&mut receiver, HolderId(1), &mut sender, me);
    link(&mut receiver, HolderId(2), &mut holder, me);
    link(&mut receiver, HolderId(3), &mut liar, me);

    let transfer = incoming(1, &manifest);
    let mut store = store_with(&transfer);
    receiver.start_download(Timestamp(0), &transfer).unwrap();
    let mut now = 0;
    let mut events = Vec::new();
    for _ in 0..100_000 {
        now += 1;
        let t = Timestamp(now);
        sender.step(t);
        holder.step(t);
        liar.step(t);
        receiver.step(t);
        events.extend(apply(&mut store, receiver.take_outputs()));
        if receiver.download(&transfer.id).unwrap().state().is_final() {
            break;
        }
    }
    let d = receiver.download(&transfer.id).unwrap();
    assert_eq!(d.state(), TransferState::Done, "{:?}", d.reason());
    let lied = liar.library().lied_at.get().expect("the liar was asked");
    assert_eq!(
        d.planner().dropped(HolderId(3)),
        Some(DropReason::BadData { group: lied })
    );
    assert!(d.planner().delivered_by(HolderId(1)) > 0);
    assert!(d.planner().delivered_by(HolderId(2)) > 0);
    // The liar's nine good groups before its lie count; nothing of it after.
    assert!(d.planner().delivered_by(HolderId(3)) >= 9);
    let stored = store.transfer(&transfer.id).unwrap().unwrap();
    assert_eq!(stored.state, TransferState::Done);
    assert_eq!(stored.verified_bytes(), size);
    assert!(events.iter().any(|e| e.state == TransferState::Verifying));
    // Bytes on the wire: the file once, plus proofs and at most the liar's window of wasted
    // requests (2 of 1 MiB).
    let wire = receiver.stats().received_bytes;
    assert!(
        wire < size + (2 << 20) + size / 50,
        "{wire} bytes for {size}"
    );
    let out = tmp.path().join("downloads");
    std::fs::create_dir_all(&out).unwrap();
    let saved = save_blob(&rd.data_path(&manifest.blob), &manifest, &out).unwrap();
    assert!(same_bytes(&saved, &path));
    assert_eq!(CHUNK_GROUP_BYTES, 16 * 1024);
}

#[test]
fn a_file_never_offered_to_a_peer_gets_it_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = BlobDir::new(tmp.path().join("s")).unwrap();
    let rd = BlobDir::new(tmp.path().join("r")).unwrap();
    let path = random_file(tmp.path(), "secret.pdf", 3 << 20, 7);
    let (manifest, stamp) = prepared(&path, &sd);
    let mut sender = node(&sd);
    // Offered to holder 5 only; the receiver's channel is holder 100 on the sender's side.
    sender.library_mut().add_file(
        &manifest,
        path,
        stamp,
        Some([HolderId(5)].into_iter().collect()),
    );
    let mut receiver = node(&rd);
    link(&mut receiver, HolderId(1), &mut sender, HolderId(100));
    let transfer = incoming(2, &manifest);
    receiver.start_download(Timestamp(0), &transfer).unwrap();
    for t in 1..200 {
        sender.step(Timestamp(t));
        receiver.step(Timestamp(t));
    }
    let d = receiver.download(&transfer.id).unwrap();
    assert_eq!(d.state(), TransferState::Queued);
    assert_eq!(receiver.stats().received_bytes, 0);
    assert_eq!(sender.stats().answered, 0);
    assert_eq!(d.planner().pending_requests(), 0);
}

#[test]
fn a_channel_blob_is_served_to_its_audience_only_and_asked_again_when_offered() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = BlobDir::new(tmp.path().join("s")).unwrap();
    let rd = BlobDir::new(tmp.path().join("r")).unwrap();
    let path = random_file(tmp.path(), "minutes.txt", 1 << 20, 11);
    let (manifest, stamp) = prepared(&path, &sd);
    let mut sender = node(&sd);
    // The receiver (holder 100 on the sender's side) was a reader, and is not any more.
    sender.library_mut().add_file(
        &manifest,
        path.clone(),
        stamp,
        Some([HolderId(100)].into_iter().collect()),
    );
    sender
        .library_mut()
        .offer_to(&manifest.blob, Some([HolderId(5)].into_iter().collect()));
    let mut receiver = node(&rd);
    link(&mut receiver, HolderId(1), &mut sender, HolderId(100));
    let transfer = incoming(3, &manifest);
    receiver.start_download(Timestamp(0), &transfer).unwrap();
    for t in 1..100 {
        sender.step(Timestamp(t));
        receiver.step(Timestamp(t));
    }
    assert_eq!(receiver.stats().received_bytes, 0);
    assert_eq!(sender.stats().answered, 0);
    assert_eq!(
        receiver.download(&transfer.id).unwrap().state(),
        TransferState::Queued
    );

    // A reader again (the audience changed back): once asked again, the file arrives.
    sender
        .library_mut()
        .offer_to(&manifest.blob, Some([HolderId(100)].into_iter().collect()));
    receiver.ask(HolderId(1), manifest.blob);
    for t in 100..5_000 {
        sender.step(Timestamp(t));
        receiver.step(Timestamp(t));
        if receiver.download(&transfer.id).unwrap().state() == TransferState::Done {
            break;
        }
    }
    assert_eq!(
        receiver.download(&transfer.id).unwrap().state(),
        TransferState::Done
    );
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let saved = save_blob(&rd.data_path(&manifest.blob), &manifest, &out).unwrap();
    assert_eq!(std::fs::read(saved).unwrap(), std::fs::read(&path).unwrap());
}
