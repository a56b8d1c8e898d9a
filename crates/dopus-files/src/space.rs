//! Free space: a download or a save that cannot fit is refused before anything is written.

use std::io;
use std::path::Path;

/// Room kept free besides the file itself: the outboard (1/256), file system overhead, and some
/// slack so the rest of the node (the store's WAL) does not hit a full disk because of a file.
pub fn margin(size: u64) -> u64 {
    (size / 256) + (size / 100) + (64 << 20)
}

/// There is not enough free space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not enough free space: {needed} bytes needed, {available} available")]
pub struct NoSpace {
    /// Bytes needed (the file plus [`margin`]).
    pub needed: u64,
    /// Bytes available to this user on that file system.
    pub available: u64,
}

/// Bytes available to unprivileged writers on the file system holding `path`.
pub fn available_space(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuses when `size` bytes (plus [`margin`]) do not fit on the file system of `dir`.
pub fn check_space(dir: &Path, size: u64) -> Result<(), SpaceError> {
    let available = available_space(dir)?;
    let needed = size.saturating_add(margin(size));
    if needed > available {
        return Err(NoSpace { needed, available }.into());
    }
    Ok(())
}

/// Why a space check failed.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    /// Not enough room.
    #[error(transparent)]
    NoSpace(#[from] NoSpace),
    /// The file system could not be asked.
    #[error("could not read the free space")]
    Io(#[from] io::Error),
}

/// Refuses a download of `size` bytes into `dir` when it cannot fit, counting what an earlier
/// attempt already allocated (`allocated` bytes of a partial blob).
pub fn check_download_space(dir: &Path, size: u64, allocated: u64) -> Result<(), SpaceError> {
    check_space(dir, size.saturating_sub(allocated))
}
