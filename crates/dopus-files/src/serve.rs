//! Answering a request: the bao encoding of the requested chunk groups (`encode_ranges_validated`:
//! every group is checked against the outboard before it is sent), cut into `Data` messages of
//! at most the link's message size, never an empty one.
//!
//! A request is at most `LinkConfig::max_request_groups` groups (4 MiB), so its answer is built
//! in memory whole and handed out message by message as the transport has room: memory per link
//! is one request, whatever the file's size.

use crate::outboard::OutboardFile;
use crate::source::is_source_changed;
use bao_tree::io::EncodeError;
use bao_tree::io::sync::{ReadAt, encode_ranges_validated, truncate_ranges};
use bao_tree::{ChunkNum, ChunkRanges};
use dopus_proto::transfer::{
    BlobErrorCode, CHUNK_GROUP_LOG, DATA_HEADER_BYTES, GroupSet, RequestId, start_data_message,
};
use std::collections::VecDeque;
use std::io::{self, Write};

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The bytes no longer match the outboard (the sender's file changed, or a stored blob
    /// rotted): nothing more is sent under this id.
    #[error("the data does not match its outboard")]
    Mismatch,
    /// Reading failed.
    #[error("reading the blob failed")]
    Io(#[source] io::Error),
    /// The message size is too small to carry anything.
    #[error("message size too small")]
    MessageSize,
}

impl ServeError {
    /// The refusal to send the requester.
    pub fn code(&self) -> BlobErrorCode {
        match self {
            ServeError::Mismatch => BlobErrorCode::SourceChanged,
            ServeError::Io(e) if is_source_changed(e) => BlobErrorCode::SourceChanged,
            ServeError::Io(_) | ServeError::MessageSize => BlobErrorCode::Internal,
        }
    }
}

/// Chunk ranges (1 KiB units, bao-tree's) of a set of 16 KiB groups.
pub fn chunk_ranges(groups: &GroupSet) -> ChunkRanges {
    let mut out = ChunkRanges::empty();
    for r in groups.ranges() {
        let s = r.start << CHUNK_GROUP_LOG;
        let e = r.end << CHUNK_GROUP_LOG;
        out |= ChunkRanges::from(ChunkNum(s)..ChunkNum(e));
    }
    out
}

/// The chunk ranges an answer for `groups` of a blob of `size` bytes covers, as bao-tree's
/// encoder walks them: a range that reaches the blob's last chunk becomes open-ended
/// (`truncate_ranges`). The decoder must walk exactly these.
pub fn answer_ranges(groups: &GroupSet, size: u64) -> ChunkRanges {
    use range_collections::range_set::RangeSetRange;
    let ranges = chunk_ranges(groups);
    let mut out = ChunkRanges::empty();
    for r in truncate_ranges(&ranges, size).iter() {
        match r {
            RangeSetRange::Range(r) => out |= ChunkRanges::from(*r.start..*r.end),
            RangeSetRange::RangeFrom(r) => out |= ChunkRanges::from(*r.start..),
        }
    }
    out
}

/// Collects encoded bytes into data messages.
struct Framer {
    req: RequestId,
    max: usize,
    current: Vec<u8>,
    done: VecDeque<Vec<u8>>,
}

impl Framer {
    fn new(req: RequestId, max: usize) -> Self {
        let mut current = Vec::with_capacity(max);
        start_data_message(&mut current, req);
        Self {
            req,
            max,
            current,
            done: VecDeque::new(),
        }
    }

    fn finish(mut self) -> VecDeque<Vec<u8>> {
        if self.current.len() > DATA_HEADER_BYTES {
            self.done.push_back(self.current);
        }
        self.done
    }
}

impl Write for Framer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let room = self.max - self.current.len();
            let n = room.min(rest.len());
            self.current.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.current.len() == self.max {
                let mut next = Vec::with_capacity(self.max);
                start_data_message(&mut next, self.req);
                self.done
                    .push_back(std::mem::replace(&mut self.current, next));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The data messages answering request `req` for `groups`, read from `data` (ciphertext) and
/// checked against `outboard`. Each is at most `max_message` bytes and carries at least one.
pub fn encode_answer(
    data: impl ReadAt,
    outboard: &OutboardFile,
    req: RequestId,
    groups: &GroupSet,
    max_message: usize,
) -> Result<VecDeque<Vec<u8>>, ServeError> {
    if max_message <= DATA_HEADER_BYTES {
        return Err(ServeError::MessageSize);
    }
    let mut framer = Framer::new(req, max_message);
    match encode_ranges_validated(data, outboard, &chunk_ranges(groups), &mut framer) {
        Ok(()) => Ok(framer.finish()),
        Err(EncodeError::LeafHashMismatch(_) | EncodeError::ParentHashMismatch(_)) => {
            Err(ServeError::Mismatch)
        }
        Err(EncodeError::Io(e)) => Err(ServeError::Io(e)),
        Err(other) => Err(ServeError::Io(io::Error::other(other))),
    }
}
