//! Turning a received blob into a file the user can open, and reading its plaintext for a
//! preview.
//!
//! Saving decrypts the blob into `<safe name>.part` in the chosen directory while hashing the
//! plaintext, checks the hash against the manifest, syncs the file, and only then renames it to
//! its final name (never over an existing file: `photo (2).jpg` instead) and syncs the
//! directory. A crash or a full disk leaves at most a `.part` file, never a wrong file under
//! the real name.

use crate::cipher::FileCipher;
use crate::space::{SpaceError, check_space};
use dopus_core::transfer::{numbered_name, safe_file_name};
use dopus_proto::transfer::FileManifest;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes decrypted at a time.
const SAVE_CHUNK: usize = 1 << 20;

/// Most numbered alternatives tried for a taken name.
const MAX_NAME_TRIES: u32 = 10_000;

/// Why a file could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Not enough free space for the file (or it could not be checked).
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// The decrypted bytes do not match the manifest's plaintext hash; nothing was kept.
    #[error("the decrypted file does not match its announced hash")]
    HashMismatch,
    /// Every candidate name is taken.
    #[error("no free file name")]
    NoName,
    /// Reading the blob or writing the file failed.
    #[error("saving the file failed")]
    Io(#[from] io::Error),
}

/// Saves the received blob at `blob_path` (its ciphertext) as a plaintext file in `dir`, under
/// the manifest's name made safe. Returns the path written.
pub fn save_blob(
    blob_path: &Path,
    manifest: &FileManifest,
    dir: &Path,
) -> Result<PathBuf, SaveError> {
    check_space(dir, manifest.size)?;
    let blob = File::open(blob_path)?;
    let safe = safe_file_name(&manifest.name);
    let (part_path, mut part) = create_part(dir, &safe)?;
    let result = (|| -> Result<(), SaveError> {
        let cipher = FileCipher::new(&manifest.key, manifest.nonce);
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; SAVE_CHUNK];
        let mut offset = 0u64;
        while offset < manifest.size {
            let n = usize::try_from(manifest.size - offset)
                .unwrap_or(SAVE_CHUNK)
                .min(SAVE_CHUNK);
            let chunk = &mut buf[..n];
            blob.read_exact_at(chunk, offset)?;
            cipher.apply(offset, chunk).map_err(io::Error::other)?;
            hasher.update(chunk);
            part.write_all(chunk)?;
            offset += n as u64;
        }
        if *hasher.finalize().as_bytes() != manifest.plain_blake3.0 {
            return Err(SaveError::HashMismatch);
        }
        part.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part_path);
        return Err(e);
    }
    let final_path = rename_into_place(dir, &safe, &part_path)?;
    // The rename is durable once the directory is.
    File::open(dir)?.sync_all()?;
    Ok(final_path)
}

/// Creates `<name>.part` (or a numbered one) exclusively.
fn create_part(dir: &Path, safe: &str) -> Result<(PathBuf, File), SaveError> {
    for n in 1..=MAX_NAME_TRIES {
        let path = dir.join(format!("{}.part", numbered_name(safe, n)));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(SaveError::NoName)
}

/// Renames the part file to the first free numbered name, never replacing a file.
fn rename_into_place(dir: &Path, safe: &str, part: &Path) -> Result<PathBuf, SaveError> {
    for n in 1..=MAX_NAME_TRIES {
        let target = dir.join(numbered_name(safe, n));
        // Link then unlink: fails with AlreadyExists instead of replacing, on every Unix.
        match std::fs::hard_link(part, &target) {
            Ok(()) => {
                std::fs::remove_file(part)?;
                return Ok(target);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                let _ = std::fs::remove_file(part);
                return Err(e.into());
            }
        }
    }
    let _ = std::fs::remove_file(part);
    Err(SaveError::NoName)
}

/// The plaintext of a received blob, readable and seekable: what the node serves its own UI
/// for previews and players, decrypted on the fly.
#[derive(Debug)]
pub struct PlainReader {
    blob: File,
    cipher: FileCipher,
    size: u64,
    pos: u64,
}

impl PlainReader {
    /// Opens the blob at `blob_path` announced by `manifest`.
    pub fn open(blob_path: &Path, manifest: &FileManifest) -> io::Result<Self> {
        Ok(Self {
            blob: File::open(blob_path)?,
            cipher: FileCipher::new(&manifest.key, manifest.nonce),
            size: manifest.size,
            pos: 0,
        })
    }

    /// The plaintext size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for PlainReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let got = self.blob.read_at(&mut buf[..n], self.pos)?;
        self.cipher
            .apply(self.pos, &mut buf[..got])
            .map_err(io::Error::other)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for PlainReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}
