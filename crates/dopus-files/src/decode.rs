//! Verifying an answer as it arrives, message by message.
//!
//! bao-tree's decoders pull from a reader; our bytes are pushed at us in channel messages of any
//! size. [`RangeDecoder`] walks the same response order (`bao_tree::iter::ResponseIter`: parent
//! hash pairs and chunk group leaves, pre-order) and checks each item against the hash its
//! parent promised as soon as its last byte is in: a parent pair must hash to the expected
//! node, a leaf's data must hash to the expected leaf hash, starting from the blob id. The
//! first item that does not verify ends the answer with [`DecodeError::BadGroup`] naming the
//! chunk group it concerns; everything delivered before it stays valid.
//!
//! Memory: at most one chunk group of carried-over bytes, whatever the request's size.

use bao_tree::iter::{BaoChunk, ResponseIter};
use bao_tree::{BaoTree, TreeNode, blake3};
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use dopus_proto::transfer::{CHUNK_GROUP_BYTES, CHUNK_GROUP_LOG, GroupSet};

use crate::serve::answer_ranges;

/// Why an answer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An item concerning this chunk group did not verify: the holder lied or the bytes rotted.
    #[error("chunk group {0} does not verify")]
    BadGroup(u64),
    /// More bytes arrived than the answer has.
    #[error("more bytes than the answer holds")]
    TooLong,
}

/// One verified item.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A hash pair of the tree (save it in the outboard).
    Parent {
        /// The node.
        node: TreeNode,
        /// Its children's hashes.
        pair: (blake3::Hash, blake3::Hash),
    },
    /// A chunk group's bytes, verified (write them at `offset`).
    Leaf {
        /// Byte offset in the blob.
        offset: u64,
        /// The bytes (one group; the last of the blob may be short).
        data: &'a [u8],
    },
}

/// The verifying decoder of one answer (see the module docs).
pub struct RangeDecoder {
    iter: ResponseIter,
    stack: Vec<blake3::Hash>,
    next: Option<BaoChunk>,
    carry: Vec<u8>,
    failed: bool,
}

impl std::fmt::Debug for RangeDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeDecoder")
            .field("carry", &self.carry.len())
            .field("done", &self.is_done())
            .finish_non_exhaustive()
    }
}

fn group_of(node: TreeNode) -> u64 {
    node.chunk_range().start.0 >> CHUNK_GROUP_LOG
}

fn item_len(chunk: &BaoChunk) -> usize {
    match chunk {
        BaoChunk::Parent { .. } => 64,
        BaoChunk::Leaf { size, .. } => *size,
    }
}

impl RangeDecoder {
    /// A decoder for the answer to a request for `groups` of the blob with this root and size.
    pub fn new(root: blake3::Hash, tree: BaoTree, groups: &GroupSet) -> Self {
        let mut iter = ResponseIter::new(tree, answer_ranges(groups, tree.size()));
        let next = iter.next();
        Self {
            iter,
            stack: vec![root],
            next,
            carry: Vec::with_capacity(CHUNK_GROUP_BYTES as usize),
            failed: false,
        }
    }

    /// Whether the whole answer arrived and verified.
    pub fn is_done(&self) -> bool {
        self.next.is_none() && !self.failed
    }

    /// Feeds the next bytes of the answer; `sink` gets every item that verified, in order.
    /// Errors from the sink stop decoding and are returned as they are.
    pub fn feed<E>(
        &mut self,
        bytes: &[u8],
        mut sink: impl FnMut(Item<'_>) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        if self.failed {
            return Err(FeedError::Decode(DecodeError::TooLong));
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let Some(chunk) = self.next else {
                self.failed = true;
                return Err(FeedError::Decode(DecodeError::TooLong));
            };
            let need = item_len(&chunk);
            // Use the incoming bytes in place when the whole item is there.
            let item: &[u8] = if self.carry.is_empty() && rest.len() >= need {
                let (item, tail) = rest.split_at(need);
                rest = tail;
                item
            } else {
                let take = (need - self.carry.len()).min(rest.len());
                self.carry.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.carry.len() < need {
                    return Ok(());
                }
                &self.carry
            };
            let outcome = match verify(&mut self.stack, &chunk, item) {
                Ok(Checked::Parent(node, pair)) => sink(Item::Parent { node, pair }),
                Ok(Checked::Leaf(offset)) => sink(Item::Leaf { offset, data: item }),
                Err(e) => {
                    self.failed = true;
                    self.next = None;
                    return Err(FeedError::Decode(e));
                }
            };
            self.carry.clear();
            self.next = self.iter.next();
            outcome.map_err(FeedError::Sink)?;
        }
        Ok(())
    }
}

/// What stopped [`RangeDecoder::feed`].
#[derive(Debug, PartialEq, Eq)]
pub enum FeedError<E> {
    /// The answer is bad.
    Decode(DecodeError),
    /// The sink failed (writing to disk).
    Sink(E),
}

/// An item that verified.
enum Checked {
    Parent(TreeNode, (blake3::Hash, blake3::Hash)),
    Leaf(u64),
}

/// Checks one item against the hash on top of the stack; for a parent, pushes the children's
/// hashes that later items will be checked against.
fn verify(
    stack: &mut Vec<blake3::Hash>,
    chunk: &BaoChunk,
    item: &[u8],
) -> Result<Checked, DecodeError> {
    match *chunk {
        BaoChunk::Parent {
            node,
            is_root,
            left,
            right,
            ..
        } => {
            let bad = DecodeError::BadGroup(group_of(node));
            let expected = stack.pop().ok_or(bad)?;
            let l: ChainingValue = item[..32].try_into().map_err(|_| bad)?;
            let r: ChainingValue = item[32..64].try_into().map_err(|_| bad)?;
            let actual = if is_root {
                merge_subtrees_root(&l, &r, Mode::Hash)
            } else {
                blake3::Hash::from(merge_subtrees_non_root(&l, &r, Mode::Hash))
            };
            if actual != expected {
                return Err(bad);
            }
            let (l, r) = (blake3::Hash::from(l), blake3::Hash::from(r));
            if right {
                stack.push(r);
            }
            if left {
                stack.push(l);
            }
            Ok(Checked::Parent(node, (l, r)))
        }
        BaoChunk::Leaf {
            start_chunk,
            is_root,
            ..
        } => {
            let bad = DecodeError::BadGroup(start_chunk.0 >> CHUNK_GROUP_LOG);
            let expected = stack.pop().ok_or(bad)?;
            let actual = if is_root {
                blake3::hash(item)
            } else {
                let mut h = blake3::Hasher::new();
                h.set_input_offset(start_chunk.to_bytes());
                h.update(item);
                blake3::Hash::from(h.finalize_non_root())
            };
            if actual != expected {
                return Err(bad);
            }
            Ok(Checked::Leaf(start_chunk.to_bytes()))
        }
    }
}
