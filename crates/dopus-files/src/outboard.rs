//! Outboards on disk: the BLAKE3 hash pairs of a blob's tree above its 16 KiB chunk groups
//! (64 bytes per group, 1/256 of the data), in bao-tree's post-order layout.
//!
//! Post order because the sender computes it in one sequential pass (every parent follows its
//! children). A receiver fills it as ranges arrive; the hash pairs of one request are close
//! together in post order (a subtree is one contiguous stretch), so saves are held in a small
//! write-back cache and written as runs, not one `pwrite` of 64 bytes per group. The cache is
//! bounded ([`MAX_CACHED_PAIRS`]): memory does not grow with the blob.

use bao_tree::io::sync::{Outboard, OutboardMut, ReadAt, WriteAt};
use bao_tree::{BaoTree, TreeNode, blake3};
use dopus_proto::transfer::CHUNK_GROUP_LOG;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;

/// The chunk group size as bao-tree's block size.
pub const BLOCK_SIZE: bao_tree::BlockSize = bao_tree::BlockSize::from_chunk_log(CHUNK_GROUP_LOG);

/// Most hash pairs held before the cache is written out (256 KiB).
pub const MAX_CACHED_PAIRS: usize = 4096;

/// The tree of a blob of `size` bytes with 16 KiB chunk groups.
pub fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, BLOCK_SIZE)
}

/// A post-order outboard kept in a file, with a bounded write-back cache.
#[derive(Debug)]
pub struct OutboardFile {
    root: blake3::Hash,
    tree: BaoTree,
    file: File,
    cache: BTreeMap<u64, [u8; 64]>,
}

impl OutboardFile {
    /// An outboard of the blob with this root and size, in `file` (complete or being filled).
    pub fn new(root: blake3::Hash, size: u64, file: File) -> Self {
        Self {
            root,
            tree: tree(size),
            file,
            cache: BTreeMap::new(),
        }
    }

    /// Bytes the complete outboard takes.
    pub fn size_for(size: u64) -> u64 {
        tree(size).outboard_size()
    }

    /// Writes the cached pairs out as runs of adjacent offsets.
    pub fn flush(&mut self) -> io::Result<()> {
        let cache = std::mem::take(&mut self.cache);
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        for (offset, pair) in cache {
            if !run.is_empty() && run_start + run.len() as u64 != offset {
                self.file.write_all_at(run_start, &run)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = offset;
            }
            run.extend_from_slice(&pair);
        }
        if !run.is_empty() {
            self.file.write_all_at(run_start, &run)?;
        }
        Ok(())
    }

    /// Flushes the cache and makes the file durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }

    fn offset(&self, node: TreeNode) -> Option<u64> {
        self.tree.post_order_offset(node).map(|o| o.value() * 64)
    }
}

impl Outboard for OutboardFile {
    fn root(&self) -> blake3::Hash {
        self.root
    }

    fn tree(&self) -> BaoTree {
        self.tree
    }

    fn load(&self, node: TreeNode) -> io::Result<Option<(blake3::Hash, blake3::Hash)>> {
        let Some(offset) = self.offset(node) else {
            return Ok(None);
        };
        let mut pair = [0u8; 64];
        if let Some(cached) = self.cache.get(&offset) {
            pair = *cached;
        } else {
            match self.file.read_exact_at(offset, &mut pair) {
                Ok(()) => {}
                // Not written yet: zero hashes never verify, so the node counts as missing.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => pair = [0; 64],
                Err(e) => return Err(e),
            }
        }
        let (l, r) = pair.split_at(32);
        let l: [u8; 32] = l.try_into().unwrap_or([0; 32]);
        let r: [u8; 32] = r.try_into().unwrap_or([0; 32]);
        Ok(Some((blake3::Hash::from(l), blake3::Hash::from(r))))
    }
}

impl OutboardMut for OutboardFile {
    fn save(&mut self, node: TreeNode, pair: &(blake3::Hash, blake3::Hash)) -> io::Result<()> {
        let Some(offset) = self.offset(node) else {
            return Ok(());
        };
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(pair.0.as_bytes());
        bytes[32..].copy_from_slice(pair.1.as_bytes());
        self.cache.insert(offset, bytes);
        if self.cache.len() >= MAX_CACHED_PAIRS {
            self.flush()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        OutboardFile::sync(self)
    }
}
