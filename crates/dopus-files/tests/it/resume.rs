//! A receiver that dies mid-transfer (nothing after its last commit survives) resumes from its
//! committed groups and fetches only the rest.

use crate::common::*;
use dopus_core::store::{Store, TransferState};
use dopus_core::transfer::HolderId;
use dopus_files::{BlobDir, save_blob};
use dopus_types::Timestamp;

#[test]
fn a_crashed_receiver_resumes_from_its_last_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = BlobDir::new(tmp.path().join("s")).unwrap();
    let rd = BlobDir::new(tmp.path().join("r")).unwrap();
    let size: u64 = 8 << 20;
    let path = random_file(tmp.path(), "big.iso", size, 99);
    let (manifest, stamp) = prepared(&path, &sd);
    let mut sender = node(&sd);
    sender
        .library_mut()
        .add_file(&manifest, path.clone(), stamp, None);
    let transfer = incoming(3, &manifest);
    let mut store = store_with(&transfer);

    // First run: stop as soon as 40 % is committed, without any goodbye (the crash).
    let mut now = 0;
    let first_wire = {
        let mut receiver = node(&rd);
        link(&mut receiver, HolderId(1), &mut sender, HolderId(100));
        receiver.start_download(Timestamp(0), &transfer).unwrap();
        loop {
            now += 1;
            sender.step(Timestamp(now));
            receiver.step(Timestamp(now));
            apply(&mut store, receiver.take_outputs());
            let committed = store
                .transfer(&transfer.id)
                .unwrap()
                .unwrap()
                .verified_bytes();
            if committed * 10 >= size * 4 {
                break;
            }
            assert!(now < 100_000, "no progress");
        }
        receiver.stats().received_bytes
    };
    sender.disconnect(Timestamp(now), HolderId(100));
    let stored = store.transfer(&transfer.id).unwrap().unwrap();
    let committed = stored.verified_bytes();
    assert!(committed >= size * 4 / 10 && committed < size);

    // Second run: a new node on the same directory, from what the store says.
    let mut receiver = node(&rd);
    link(&mut receiver, HolderId(1), &mut sender, HolderId(100));
    receiver.start_download(Timestamp(now), &stored).unwrap();
    for _ in 0..100_000 {
        now += 1;
        sender.step(Timestamp(now));
        receiver.step(Timestamp(now));
        apply(&mut store, receiver.take_outputs());
        if receiver.download(&transfer.id).unwrap().state().is_final() {
            break;
        }
    }
    assert_eq!(
        receiver.download(&transfer.id).unwrap().state(),
        TransferState::Done
    );
    let second_wire = receiver.stats().received_bytes;
    // Only what was not committed travels again (plus proofs, about 0.4 %).
    assert!(
        second_wire <= size - committed + size / 100,
        "second run {second_wire} bytes, {committed} were committed of {size}"
    );
    assert!(
        second_wire * 100 <= size * 65,
        "resume moved {second_wire} of {size} bytes"
    );
    assert!(first_wire >= committed);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let saved = save_blob(&rd.data_path(&manifest.blob), &manifest, &out).unwrap();
    assert!(same_bytes(&saved, &path));
}

#[test]
fn pause_and_resume_over_a_live_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = BlobDir::new(tmp.path().join("s")).unwrap();
    let rd = BlobDir::new(tmp.path().join("r")).unwrap();
    let size: u64 = 8 << 20;
    let path = random_file(tmp.path(), "a.bin", size, 5);
    let (manifest, stamp) = prepared(&path, &sd);
    let mut sender = node(&sd);
    sender.library_mut().add_file(&manifest, path, stamp, None);
    let mut receiver = node(&rd);
    link(&mut receiver, HolderId(1), &mut sender, HolderId(100));
    let transfer = incoming(4, &manifest);
    let mut store = store_with(&transfer);
    receiver.start_download(Timestamp(0), &transfer).unwrap();
    let mut now = 0;
    let mut pump = |receiver: &mut Node<_>, sender: &mut Node<_>, steps: u64, now: &mut u64| {
        for _ in 0..steps {
            *now += 1;
            sender.step(Timestamp(*now));
            receiver.step(Timestamp(*now));
            apply(&mut store, receiver.take_outputs());
        }
    };
    pump(&mut receiver, &mut sender, 2, &mut now);
    receiver.pause(Timestamp(now), &transfer.id);
    pump(&mut receiver, &mut sender, 50, &mut now);
    let d = receiver.download(&transfer.id).unwrap();
    assert_eq!(d.state(), TransferState::Paused);
    let at_pause = receiver.stats().received_bytes;
    pump(&mut receiver, &mut sender, 200, &mut now);
    // Late answers of cancelled requests may still arrive, but nothing new is asked for.
    assert!(receiver.stats().received_bytes <= at_pause + (4 << 20) + (1 << 20));
    receiver.resume(Timestamp(now), &transfer.id);
    pump(&mut receiver, &mut sender, 5_000, &mut now);
    assert_eq!(
        receiver.download(&transfer.id).unwrap().state(),
        TransferState::Done
    );
}
