//! Where a provider reads a blob's ciphertext from: the sender's plaintext file, encrypted on the
//! fly at any offset ([`EncryptedSource`]), or a received blob kept encrypted (a plain `File`).
//!
//! A sender's file may change after it was announced. [`SourceStamp`] (size, modification time,
//! inode) is checked before a request is served, and every chunk group is checked against the
//! outboard as it is encoded (`encode_ranges_validated`), so bytes that differ from what was
//! announced are never sent under the old id, even if the file was changed with its time kept.

use crate::cipher::FileCipher;
use bao_tree::io::sync::ReadAt;
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes read and encrypted at once when serving (a request is usually contiguous).
const READ_AHEAD: usize = 256 * 1024;

/// A file as it was at one moment: enough to notice that it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: i64,
    /// Inode number.
    pub inode: u64,
}

/// The stamp of an open file (`path` is used only for the inode of the name, which must be the
/// file's own: a file replaced by rename has a new inode).
pub fn stamp(file: &File, path: &Path) -> io::Result<SourceStamp> {
    let meta = file.metadata()?;
    let named = std::fs::metadata(path)?;
    if named.ino() != meta.ino() || named.dev() != meta.dev() {
        return Err(io::Error::other("the path names another file now"));
    }
    Ok(SourceStamp {
        size: meta.len(),
        modified_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        inode: meta.ino(),
    })
}

/// The stamp of the file at `path` now.
pub fn stamp_path(path: &Path) -> io::Result<SourceStamp> {
    stamp(&File::open(path)?, path)
}

/// A plaintext file read as ciphertext: every read is encrypted at its offset. Reads ahead
/// [`READ_AHEAD`] bytes, since requests come as runs of 16 KiB groups.
#[derive(Debug)]
pub struct EncryptedSource {
    file: File,
    size: u64,
    cipher: FileCipher,
    cache: RefCell<(u64, Vec<u8>)>,
}

impl EncryptedSource {
    /// Opens the sender's file at `path`, refusing it if it no longer matches `expected`.
    pub fn open(path: &Path, cipher: FileCipher, expected: &SourceStamp) -> io::Result<Self> {
        let file = File::open(path)?;
        if stamp(&file, path)? != *expected {
            return Err(io::Error::other(SourceChanged));
        }
        Ok(Self {
            file,
            size: expected.size,
            cipher,
            cache: RefCell::new((0, Vec::new())),
        })
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The source file no longer matches its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the source file changed since it was announced")]
pub struct SourceChanged;

/// Whether an I/O error says the source changed.
pub fn is_source_changed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SourceChanged>())
}

impl ReadAt for EncryptedSource {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        if pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let mut cache = self.cache.borrow_mut();
        let (start, data) = &mut *cache;
        let hit = pos >= *start && pos < *start + data.len() as u64;
        if !hit {
            let want = usize::try_from(self.size - pos)
                .unwrap_or(usize::MAX)
                .min(READ_AHEAD.max(buf.len()));
            data.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match self.file.read_at(pos + filled as u64, &mut data[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            data.truncate(filled);
            self.cipher.apply(pos, data).map_err(io::Error::other)?;
            *start = pos;
            if filled == 0 {
                // Shorter than announced: the file changed.
                return Err(io::Error::other(SourceChanged));
            }
        }
        let from = usize::try_from(pos - *start).unwrap_or(0);
        let n = buf.len().min(data.len() - from);
        buf[..n].copy_from_slice(&data[from..from + n]);
        Ok(n)
    }
}
