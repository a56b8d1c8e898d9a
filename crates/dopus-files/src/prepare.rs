//! Preparing a file to send: one sequential pass that hashes the plaintext, encrypts it in
//! memory and computes the outboard of the ciphertext, whose root is the blob id. Nothing but
//! the outboard (1/256 of the file) is written; memory stays at one read buffer.

use crate::cipher::{CipherError, FileCipher};
use crate::outboard::tree;
use crate::source::{SourceStamp, stamp};
use bao_tree::io::sync::outboard_post_order;
use dopus_proto::transfer::{FileKey, FileNonce, MAX_FILE_SIZE, PlainHash};
use dopus_types::BlobHash;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// Bytes read from the plaintext file at a time.
const READ_BYTES: usize = 1 << 20;

/// Why a file could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Reading the file or writing the outboard failed.
    #[error("reading or hashing the file failed")]
    Io(#[from] io::Error),
    /// The file is larger than the format allows.
    #[error("the file is larger than {MAX_FILE_SIZE} bytes")]
    TooLarge,
    /// The file changed while it was being read (its size or time moved).
    #[error("the file changed while it was being prepared")]
    Changed,
    /// The progress callback asked to stop.
    #[error("preparing the file was cancelled")]
    Cancelled,
}

/// What preparing a file found: everything a manifest needs besides name, type and preview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The blob id: BLAKE3 tree root of the ciphertext.
    pub blob: BlobHash,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the plaintext.
    pub plain: PlainHash,
    /// The file as it was read (to detect later changes).
    pub stamp: SourceStamp,
}

/// Reads plaintext, hashes it and hands out ciphertext, telling `progress` the bytes read
/// so far after every buffer (it answers whether to go on).
struct EncryptingReader<'p, R> {
    inner: R,
    progress: &'p mut dyn FnMut(u64) -> bool,
    cipher: FileCipher,
    hasher: blake3::Hasher,
    offset: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> Read for EncryptingReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.resize(READ_BYTES, 0);
            let mut filled = 0;
            while filled < READ_BYTES {
                match self.inner.read(&mut self.buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.buf.truncate(filled);
            self.pos = 0;
            if filled == 0 {
                return Ok(0);
            }
            self.hasher.update(&self.buf);
            self.cipher
                .apply(self.offset, &mut self.buf)
                .map_err(|e: CipherError| io::Error::other(e))?;
            self.offset += filled as u64;
            if !(self.progress)(self.offset) {
                return Err(io::Error::other(Stop));
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Prepares the file at `path` under `key` and `nonce`, writing its outboard to `outboard`.
/// Fails with [`PrepareError::Changed`] if the file's size or modification time moved while it
/// was read (the hashes would describe no version of it).
pub fn prepare(
    path: &Path,
    key: &FileKey,
    nonce: FileNonce,
    outboard: &Path,
) -> Result<Prepared, PrepareError> {
    prepare_with_progress(path, key, nonce, outboard, &mut |_| true)
}

/// The marker of a stop asked for by the progress callback, carried through `bao-tree` inside
/// an `io::Error`.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped")
    }
}

impl std::error::Error for Stop {}

/// [`prepare`], telling `progress` how many bytes were read after every 1 MiB (and at the
/// end); when it answers `false`, preparing stops with [`PrepareError::Cancelled`].
pub fn prepare_with_progress(
    path: &Path,
    key: &FileKey,
    nonce: FileNonce,
    outboard: &Path,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<Prepared, PrepareError> {
    let file = File::open(path)?;
    let before = stamp(&file, path)?;
    if before.size > MAX_FILE_SIZE {
        return Err(PrepareError::TooLarge);
    }
    let mut reader = EncryptingReader {
        inner: (&file).take(before.size),
        progress,
        cipher: FileCipher::new(key, nonce),
        hasher: blake3::Hasher::new(),
        offset: 0,
        buf: Vec::with_capacity(READ_BYTES),
        pos: 0,
    };
    let mut out = BufWriter::with_capacity(1 << 20, File::create(outboard)?);
    let root = match outboard_post_order(&mut reader, tree(before.size), &mut out) {
        Ok(root) => root,
        Err(e) if e.get_ref().is_some_and(|inner| inner.is::<Stop>()) => {
            return Err(PrepareError::Cancelled);
        }
        Err(e) => return Err(e.into()),
    };
    out.flush()?;
    out.get_ref().sync_data()?;
    if reader.offset != before.size {
        return Err(PrepareError::Changed);
    }
    let after = stamp(&file, path)?;
    if after != before {
        return Err(PrepareError::Changed);
    }
    Ok(Prepared {
        blob: BlobHash::from_bytes(*root.as_bytes()),
        size: before.size,
        plain: PlainHash(*reader.hasher.finalize().as_bytes()),
        stamp: before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(dir: &Path, len: usize) -> std::path::PathBuf {
        let path = dir.join("plain.bin");
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, data).unwrap();
        path
    }

    #[test]
    fn progress_is_told_after_every_buffer_and_ends_at_the_size() {
        let tmp = tempfile::tempdir().unwrap();
        let len = 3 * READ_BYTES + 12_345;
        let path = file_of(tmp.path(), len);
        let mut seen = Vec::new();
        let p = prepare_with_progress(
            &path,
            &FileKey([1; 32]),
            FileNonce([2; 12]),
            &tmp.path().join("o"),
            &mut |n| {
                seen.push(n);
                true
            },
        )
        .unwrap();
        let want: Vec<u64> = vec![1, 2, 3]
            .into_iter()
            .map(|i| i * READ_BYTES as u64)
            .chain([len as u64])
            .collect();
        assert_eq!(seen, want);
        // The same answer as without progress.
        let plain = prepare(
            &path,
            &FileKey([1; 32]),
            FileNonce([2; 12]),
            &tmp.path().join("o2"),
        )
        .unwrap();
        assert_eq!(p, plain);
    }

    #[test]
    fn a_progress_callback_that_says_stop_cancels() {
        let tmp = tempfile::tempdir().unwrap();
        let path = file_of(tmp.path(), 4 * READ_BYTES);
        let mut calls = 0;
        let err = prepare_with_progress(
            &path,
            &FileKey([1; 32]),
            FileNonce([2; 12]),
            &tmp.path().join("o"),
            &mut |_| {
                calls += 1;
                calls < 2
            },
        )
        .unwrap_err();
        assert!(matches!(err, PrepareError::Cancelled), "{err}");
        assert_eq!(calls, 2, "nothing read after the stop");
    }
}
