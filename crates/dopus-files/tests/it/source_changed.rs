//! A sender whose file changed after it was announced refuses to serve different bytes under
//! the old id, whether the change shows in the file's metadata or not.

use crate::common::*;
use dopus_core::store::TransferState;
use dopus_core::transfer::{DropReason, HolderId};
use dopus_files::BlobDir;
use dopus_proto::transfer::BlobErrorCode;
use dopus_types::Timestamp;
use std::io::{Seek, SeekFrom, Write};

fn run(change: impl FnOnce(&std::path::Path)) -> (TransferState, Option<DropReason>, u64, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let sd = BlobDir::new(tmp.path().join("s")).unwrap();
    let rd = BlobDir::new(tmp.path().join("r")).unwrap();
    let path = random_file(tmp.path(), "doc.txt", 2 << 20, 11);
    let (manifest, stamp) = prepared(&path, &sd);
    change(&path);
    let mut sender = node(&sd);
    sender.library_mut().add_file(&manifest, path, stamp, None);
    let mut receiver = node(&rd);
    link(&mut receiver, HolderId(1), &mut sender, HolderId(100));
    let transfer = incoming(5, &manifest);
    receiver.start_download(Timestamp(0), &transfer).unwrap();
    for t in 1..500 {
        sender.step(Timestamp(t));
        receiver.step(Timestamp(t));
    }
    let d = receiver.download(&transfer.id).unwrap();
    (
        d.state(),
        d.planner().dropped(HolderId(1)),
        receiver.stats().received_bytes,
        sender.library().changed(&manifest.blob),
    )
}

#[test]
fn a_change_that_keeps_size_and_time_is_caught_by_the_outboard() {
    let (state, dropped, received, changed) = run(|path| {
        let meta = std::fs::metadata(path).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(b"EDITED").unwrap();
        f.set_modified(meta.modified().unwrap()).unwrap();
        f.sync_all().unwrap();
    });
    assert!(changed, "the sender noticed");
    assert_eq!(
        dropped,
        Some(DropReason::Refused(BlobErrorCode::SourceChanged))
    );
    assert_eq!(state, TransferState::Queued);
    // Requests whose groups lie before the edit may have been served (they match the
    // announced bytes); nothing of the edited request was.
    assert!(received < 2 << 20);
}

#[test]
fn a_change_with_a_new_time_is_refused_up_front() {
    let (state, _dropped, received, changed) = run(|path| {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(b"more").unwrap();
        f.sync_all().unwrap();
    });
    assert!(changed);
    assert_eq!(received, 0, "not one byte under the old id");
    assert_eq!(state, TransferState::Queued);
}
