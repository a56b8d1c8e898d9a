//! Disks: a full disk mid-transfer pauses the download and corrupts nothing; a download that
//! cannot fit is refused before anything is written.

use crate::common::*;
use bao_tree::io::sync::{ReadAt, WriteAt};
use dopus_core::store::{TransferReason, TransferState};
use dopus_core::transfer::{HolderId, RequestKey};
use dopus_files::{
    BlobData, BlobDir, EncryptedSource, Fetch, FileCipher, SpaceError, check_download_space,
    encode_answer,
};
use dopus_proto::transfer::{DATA_HEADER_BYTES, GroupSet, RequestId};
use dopus_types::Timestamp;
use std::cell::Cell;
use std::io;

/// A blob file that fails with "no space" once `limit` bytes were written.
struct Filling {
    file: std::fs::File,
    limit: u64,
    written: Cell<u64>,
}

impl ReadAt for Filling {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(pos, buf)
    }
}

impl WriteAt for Filling {
    fn write_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.written.get());
        if room == 0 {
            return Err(io::ErrorKind::StorageFull.into());
        }
        // A short write first, as a real file system does when it runs out mid-write.
        let n = buf.len().min(room as usize);
        let n = self.file.write_at(pos, &buf[..n])?;
        self.written.set(self.written.get() + n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobData for Filling {
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[test]
fn a_full_disk_stops_at_a_group_boundary_and_the_rest_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = BlobDir::new(tmp.path().join("s")).unwrap();
    let rd = BlobDir::new(tmp.path().join("r")).unwrap();
    let size: u64 = 2 << 20;
    let path = random_file(tmp.path(), "f", size, 3);
    let (manifest, stamp) = prepared(&path, &sd);
    let source = EncryptedSource::open(
        &path,
        FileCipher::new(&manifest.key, manifest.nonce),
        &stamp,
    )
    .unwrap();
    let ob = sd.open_outboard(&manifest.blob, size).unwrap();
    let all = GroupSet::from_range(0..manifest.groups());
    let bytes: Vec<u8> = encode_answer(&source, &ob, RequestId(1), &all, 65_536)
        .unwrap()
        .iter()
        .flat_map(|m| m[DATA_HEADER_BYTES..].to_vec())
        .collect();

    let data_path = rd.data_path(&manifest.blob);
    let open = |limit| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .unwrap();
        file.set_len(size).unwrap();
        let outboard = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(rd.outboard_path(&manifest.blob))
            .unwrap();
        (file, outboard, limit)
    };
    // Room for 50.5 groups: the 51st fails half-written.
    let (file, outboard, limit) = open(50 * 16_384 + 8_192);
    let mut fetch = Fetch::with_data(
        Filling {
            file,
            limit,
            written: Cell::new(0),
        },
        outboard,
        &manifest,
        &GroupSet::new(),
    );
    fetch.start(RequestKey(1), &all);
    let mut verified = GroupSet::new();
    let r = fetch.receive(RequestKey(1), &bytes[..]);
    verified = verified.union(&r.verified);
    let err = r.failed.expect("the disk fills");
    assert_eq!(verified, GroupSet::from_range(0..50));
    assert!(err.is_disk_full(), "{err:?}");
    assert_eq!(
        fetch.have(),
        &GroupSet::from_range(0..50),
        "the half-written group is not counted"
    );
    fetch.sync().unwrap();
    let committed = fetch.have().clone();
    drop(fetch);

    // Room again: resume from what was committed, ask for the rest.
    let (file, outboard, _) = open(u64::MAX);
    let mut fetch = Fetch::with_data(
        Filling {
            file,
            limit: u64::MAX,
            written: Cell::new(0),
        },
        outboard,
        &manifest,
        &committed,
    );
    let rest = all.difference(&committed);
    let rest_bytes: Vec<u8> = encode_answer(&source, &ob, RequestId(2), &rest, 65_536)
        .unwrap()
        .iter()
        .flat_map(|m| m[DATA_HEADER_BYTES..].to_vec())
        .collect();
    fetch.start(RequestKey(2), &rest);
    assert!(fetch.receive(RequestKey(2), &rest_bytes).ok().unwrap().done);
    assert!(
        fetch.finish().unwrap(),
        "the plaintext hash matches: nothing was corrupted"
    );
}

#[test]
fn a_download_that_cannot_fit_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let free = dopus_files::available_space(tmp.path()).unwrap();
    assert!(check_download_space(tmp.path(), 1 << 20, 0).is_ok());
    let err = check_download_space(tmp.path(), free + 1, 0).unwrap_err();
    assert!(
        matches!(err, SpaceError::NoSpace(n) if n.needed > n.available),
        "{err:?}"
    );
    // A file of more than one nonce's 256 GiB on a disk that cannot hold it.
    if free < 300 << 30 {
        assert!(check_download_space(tmp.path(), 300 << 30, 0).is_err());
    }
    assert!(err.to_string().contains("not enough free space"));
}

/// On a real, tiny file system (tmpfs; needs root), the disk fills mid-transfer: the download
/// pauses with `disk_full`, and after the file system grows it resumes and completes.
#[test]
fn a_real_full_disk_pauses_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=3m",
            "dopus-test",
            mnt.to_str().unwrap(),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());

    let sd = BlobDir::new(tmp.path().join("s")).unwrap();
    let rd = BlobDir::new(mnt.join("blobs")).unwrap();
    let size: u64 = 5 << 20;
    let path = random_file(tmp.path(), "f", size, 8);
    let (manifest, stamp) = prepared(&path, &sd);
    let mut sender = node(&sd);
    sender
        .library_mut()
        .add_file(&manifest, path.clone(), stamp, None);
    let mut receiver = node(&rd);
    link(&mut receiver, HolderId(1), &mut sender, HolderId(100));
    let transfer = incoming(6, &manifest);
    let mut store = store_with(&transfer);
    receiver.start_download(Timestamp(0), &transfer).unwrap();
    let mut now = 0;
    for _ in 0..5_000 {
        now += 1;
        sender.step(Timestamp(now));
        receiver.step(Timestamp(now));
        apply(&mut store, receiver.take_outputs());
        if receiver.download(&transfer.id).unwrap().state() == TransferState::Paused {
            break;
        }
    }
    let d = receiver.download(&transfer.id).unwrap();
    assert_eq!(
        (d.state(), d.reason()),
        (TransferState::Paused, Some(TransferReason::DiskFull))
    );
    let remounted = std::process::Command::new("mount")
        .args(["-o", "remount,size=16m", mnt.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(remounted);
    receiver.resume(Timestamp(now), &transfer.id);
    for _ in 0..20_000 {
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
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let saved = dopus_files::save_blob(&rd.data_path(&manifest.blob), &manifest, &out).unwrap();
    assert!(same_bytes(&saved, &path));
}
