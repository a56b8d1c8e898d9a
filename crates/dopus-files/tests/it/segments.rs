//! Files beyond one nonce's 256 GiB: the cipher crosses its 64 GiB segments in a sparse file of
//! more than 256 GiB, and what one IETF nonce cannot reach is reached.

use crate::common::fill;
use bao_tree::io::sync::ReadAt;
use chacha20::cipher::{KeyIvInit, StreamCipherSeek};
use dopus_files::{EncryptedSource, FileCipher, PlainReader, stamp_path};
use dopus_proto::transfer::{
    FILE_FORMAT_VERSION, FileKey, FileManifest, FileNonce, PlainHash, SEGMENT_BYTES,
};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

const GIB: u64 = 1 << 30;

#[test]
fn a_sparse_file_beyond_256_gib_encrypts_and_decrypts_across_every_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 256 * GIB + 3 * (1 << 20) + 5;
    let path = tmp.path().join("huge.img");
    let file = std::fs::File::create(&path).unwrap();
    if file.set_len(size).is_err() {
        println!("skipped: this file system cannot hold a sparse file of {size} bytes");
        return;
    }
    // Plaintext islands straddling each segment boundary, the 256 GiB mark and the end.
    let islands: Vec<u64> = vec![
        0,
        SEGMENT_BYTES - 5_000,
        2 * SEGMENT_BYTES - 1,
        3 * SEGMENT_BYTES - 40_000,
        256 * GIB - 20_000,
        256 * GIB + 100_001,
        size - 70_000,
    ];
    let mut plain = Vec::new();
    for (i, at) in islands.iter().enumerate() {
        let mut buf = vec![0u8; 65_000];
        fill(i as u64 + 1, &mut buf);
        file.write_all_at(&buf, *at).unwrap();
        plain.push(buf);
    }
    file.sync_all().unwrap();
    drop(file);

    let key = FileKey([5; 32]);
    let nonce = FileNonce([6; 12]);
    let cipher = FileCipher::new(&key, nonce);
    let stamp = stamp_path(&path).unwrap();
    let source = EncryptedSource::open(&path, cipher.clone(), &stamp).unwrap();

    // The ciphertext of each island, read as a provider reads it, written into a sparse blob.
    let blob_path = tmp.path().join("huge.data");
    let blob = std::fs::File::create(&blob_path).unwrap();
    blob.set_len(size).unwrap();
    for (at, p) in islands.iter().zip(&plain) {
        let mut ct = vec![0u8; p.len()];
        source.read_exact_at(*at, &mut ct).unwrap();
        assert_ne!(&ct, p);
        // Byte for byte the keystream of the right segment under the right nonce.
        let mut again = p.clone();
        cipher.apply(*at, &mut again).unwrap();
        assert!(ct == again, "island at {at}");
        blob.write_all_at(&ct, *at).unwrap();
    }
    blob.sync_all().unwrap();

    // A single IETF nonce ends at 256 GiB: ChaCha20 cannot even seek there.
    let mut one = chacha20::ChaCha20::new((&key.0).into(), (&nonce.0).into());
    assert!(one.try_seek(256 * GIB).is_err());
    assert!(one.try_seek(256 * GIB - 64).is_ok());

    // The receiver's side: plaintext back from the blob at any offset, past 256 GiB too.
    let manifest = FileManifest {
        version: FILE_FORMAT_VERSION,
        blob: dopus_types::BlobHash::from_bytes([0; 32]),
        size,
        key,
        nonce,
        name: "huge.img".into(),
        mime: "application/octet-stream".into(),
        plain_blake3: PlainHash([0; 32]),
        dimensions: None,
        duration_ms: None,
        thumbnail: None,
    };
    assert!(
        manifest.validate().is_ok(),
        "a manifest may announce more than 256 GiB"
    );
    let mut reader = PlainReader::open(&blob_path, &manifest).unwrap();
    for (at, p) in islands.iter().zip(&plain) {
        reader.seek(SeekFrom::Start(*at)).unwrap();
        let mut back = vec![0u8; p.len()];
        reader.read_exact(&mut back).unwrap();
        assert!(&back == p, "island at {at}");
    }
    // Reading past the end gives nothing.
    reader.seek(SeekFrom::Start(size)).unwrap();
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0);
}
