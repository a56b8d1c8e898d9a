//! Saving a received blob: safe names, no overwrite, hash checked before the real name
//! appears, previews decrypted on the fly.

use crate::common::*;
use bao_tree::io::sync::ReadAt;
use dopus_files::{BlobDir, EncryptedSource, FileCipher, PlainReader, SaveError, save_blob};
use std::io::{Read, Seek, SeekFrom};

/// A blob as a receiver keeps it, for `path` with a manifest named `name`.
fn received(
    tmp: &std::path::Path,
    name: &str,
) -> (
    std::path::PathBuf,
    dopus_proto::transfer::FileManifest,
    std::path::PathBuf,
) {
    let dir = BlobDir::new(tmp.join("blobs")).unwrap();
    let path = random_file(tmp, "original", 300_000, 17);
    let (mut manifest, stamp) = prepared(&path, &dir);
    manifest.name = name.into();
    let src = EncryptedSource::open(
        &path,
        FileCipher::new(&manifest.key, manifest.nonce),
        &stamp,
    )
    .unwrap();
    let mut ct = vec![0u8; manifest.size as usize];
    src.read_exact_at(0, &mut ct).unwrap();
    let blob = tmp.join("blob.data");
    std::fs::write(&blob, ct).unwrap();
    (blob, manifest, path)
}

#[test]
fn hostile_names_stay_in_the_chosen_directory_and_nothing_is_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let (blob, manifest, original) = received(tmp.path(), "../../etc/passwd");
    let out = tmp.path().join("Downloads");
    std::fs::create_dir_all(&out).unwrap();
    let first = save_blob(&blob, &manifest, &out).unwrap();
    assert_eq!(first, out.join("_.._etc_passwd"));
    assert!(same_bytes(&first, &original));
    let second = save_blob(&blob, &manifest, &out).unwrap();
    assert_eq!(second, out.join("_.._etc_passwd (2)"));
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}: no .part left behind");
    assert!(!tmp.path().join("etc").exists());
    for reserved in ["CON.txt", "nul", ".hidden", "a\u{202E}gpj.exe"] {
        let mut m = manifest.clone();
        m.name = reserved.into();
        let p = save_blob(&blob, &m, &out).unwrap();
        assert_eq!(p.parent(), Some(out.as_path()));
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('.') && !name.contains('\u{202E}'),
            "{name}"
        );
    }
}

#[test]
fn a_blob_that_does_not_decrypt_to_the_announced_file_is_not_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let (blob, mut manifest, _) = received(tmp.path(), "report.pdf");
    manifest.plain_blake3.0[0] ^= 1;
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    assert!(matches!(
        save_blob(&blob, &manifest, &out),
        Err(SaveError::HashMismatch)
    ));
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "neither the file nor its .part"
    );
}

#[test]
fn previews_read_plaintext_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let (blob, manifest, original) = received(tmp.path(), "clip.webm");
    let plain = std::fs::read(&original).unwrap();
    let mut r = PlainReader::open(&blob, &manifest).unwrap();
    assert_eq!(r.size(), plain.len() as u64);
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    assert_eq!(all, plain);
    r.seek(SeekFrom::Start(123_457)).unwrap();
    let mut buf = [0u8; 1000];
    r.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..], &plain[123_457..124_457]);
    r.seek(SeekFrom::End(-10)).unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, &plain[plain.len() - 10..]);
}
