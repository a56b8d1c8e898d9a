//! Encoding and verifying ranges: round trips, and a corrupted chunk group detected at exactly
//! that group.

use crate::common::{prepared, random_file};
use bao_tree::blake3;
use bao_tree::iter::{BaoChunk, ResponseIter};
use dopus_core::transfer::RequestKey;
use dopus_files::outboard::tree;
use dopus_files::serve::answer_ranges;
use dopus_files::{BlobDir, DecodeError, EncryptedSource, FileCipher, encode_answer};
use dopus_files::{Fetch, FetchError};
use dopus_proto::transfer::{
    CHUNK_GROUP_BYTES, DATA_HEADER_BYTES, FileManifest, GroupSet, RequestId, groups_for_size,
};
use proptest::prelude::*;

const G: u64 = CHUNK_GROUP_BYTES;

/// The answer's bytes without message headers.
fn stream(messages: &std::collections::VecDeque<Vec<u8>>) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|m| m[DATA_HEADER_BYTES..].iter().copied())
        .collect()
}

/// Where each leaf (group) starts in the answer stream, and where each parent pair starts
/// with the first group below it.
/// (group, position in the stream) pairs.
type Positions = Vec<(u64, usize)>;

fn layout(size: u64, groups: &GroupSet) -> (Positions, Positions) {
    let mut pos = 0;
    let (mut leaves, mut parents) = (Vec::new(), Vec::new());
    for item in ResponseIter::new(tree(size), answer_ranges(groups, size)) {
        match item {
            BaoChunk::Parent { node, .. } => {
                parents.push((node.chunk_range().start.0 / 16, pos));
                pos += 64;
            }
            BaoChunk::Leaf {
                start_chunk, size, ..
            } => {
                leaves.push((start_chunk.0 / 16, pos));
                pos += size;
            }
        }
    }
    (leaves, parents)
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: BlobDir,
    manifest: FileManifest,
    source: EncryptedSource,
}

fn fixture(size: u64) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = BlobDir::new(tmp.path().join("blobs")).unwrap();
    let path = random_file(tmp.path(), "f.bin", size, size);
    let (manifest, stamp) = prepared(&path, &dir);
    let source = EncryptedSource::open(
        &path,
        FileCipher::new(&manifest.key, manifest.nonce),
        &stamp,
    )
    .unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        manifest,
        source,
    }
}

fn answer(f: &Fixture, groups: &GroupSet, max: usize) -> std::collections::VecDeque<Vec<u8>> {
    let ob = f
        .dir
        .open_outboard(&f.manifest.blob, f.manifest.size)
        .unwrap();
    encode_answer(&f.source, &ob, RequestId(1), groups, max).unwrap()
}

fn receiver(f: &Fixture, name: &str) -> Fetch {
    let dir = BlobDir::new(f.dir.path().join(name)).unwrap();
    Fetch::open(&dir, &f.manifest, &GroupSet::new()).unwrap()
}

#[test]
fn a_flipped_byte_in_a_leaf_is_caught_at_exactly_its_group() {
    let f = fixture(40 * G + 123);
    let groups: GroupSet = [3..13, 20..25].into_iter().collect();
    let honest = stream(&answer(&f, &groups, 65_536));
    let (leaves, _) = layout(f.manifest.size, &groups);
    assert_eq!(leaves.len(), 15);
    for (i, (group, pos)) in leaves.iter().enumerate() {
        let mut bad = honest.clone();
        bad[pos + 100] ^= 0x20;
        let mut fetch = receiver(&f, &format!("r{i}"));
        fetch.start(RequestKey(1), &groups);
        // Fed in awkward pieces, as messages of any size would cut it.
        let mut verified = GroupSet::new();
        let mut error = None;
        for piece in bad.chunks(7_001) {
            let r = fetch.receive(RequestKey(1), piece);
            verified = verified.union(&r.verified);
            if let Some(e) = r.failed {
                error = Some(e);
                break;
            }
        }
        assert!(
            matches!(error, Some(FetchError::Bad(DecodeError::BadGroup(g))) if g == *group),
            "leaf {i}: {error:?}"
        );
        // Everything before the bad group verified, nothing at or after it.
        let before: GroupSet = leaves[..i].iter().map(|(g, _)| *g..*g + 1).collect();
        assert_eq!(verified, before, "leaf {i}");
        assert_eq!(fetch.have(), &before);
    }
}

#[test]
fn a_flipped_byte_in_a_parent_is_caught_before_the_groups_below_it() {
    let f = fixture(64 * G);
    let groups = GroupSet::from_range(8..40);
    let honest = stream(&answer(&f, &groups, 65_536));
    let (leaves, parents) = layout(f.manifest.size, &groups);
    assert!(parents.len() > 3);
    for (i, (first_group, pos)) in parents.iter().enumerate() {
        let mut bad = honest.clone();
        bad[pos + 3] ^= 1;
        let mut fetch = receiver(&f, &format!("p{i}"));
        fetch.start(RequestKey(1), &groups);
        let err = fetch.receive(RequestKey(1), &bad).ok().unwrap_err();
        assert!(
            matches!(err, FetchError::Bad(DecodeError::BadGroup(g)) if g == *first_group),
            "parent {i}: {err:?}"
        );
        // No leaf that comes after the bad parent in the stream was accepted.
        let accepted: Vec<u64> = leaves
            .iter()
            .filter(|(_, lpos)| lpos < pos)
            .map(|(g, _)| *g)
            .collect();
        assert_eq!(fetch.have().count(), accepted.len() as u64);
    }
}

#[test]
fn trailing_bytes_are_refused_and_a_whole_answer_is_done() {
    let f = fixture(5 * G);
    let groups = GroupSet::from_range(0..5);
    let mut bytes = stream(&answer(&f, &groups, 65_536));
    let mut fetch = receiver(&f, "t");
    fetch.start(RequestKey(1), &groups);
    let r = fetch.receive(RequestKey(1), &bytes).ok().unwrap();
    assert!(r.done);
    assert_eq!(r.verified, groups);
    assert!(matches!(
        fetch.receive(RequestKey(1), b"x").ok(),
        Err(FetchError::UnknownRequest)
    ));
    bytes.push(0);
    let mut fetch = receiver(&f, "t2");
    fetch.start(RequestKey(1), &groups);
    assert!(matches!(
        fetch.receive(RequestKey(1), &bytes).ok(),
        Err(FetchError::Bad(DecodeError::TooLong))
    ));
    assert!(
        fetch.finish().unwrap(),
        "what verified is kept and hashes right"
    );
}

#[test]
fn messages_are_never_empty_and_never_too_large() {
    let f = fixture(100 * G + 1);
    for max in [64, 1_000, 16_389, 65_536] {
        let msgs = answer(&f, &GroupSet::from_range(0..101), max);
        assert!(
            msgs.iter()
                .all(|m| m.len() > DATA_HEADER_BYTES && m.len() <= max)
        );
        assert!(
            msgs.iter().rev().skip(1).all(|m| m.len() == max),
            "all full but the last"
        );
    }
}

#[test]
fn an_empty_file_is_one_verified_empty_group_set() {
    let f = fixture(0);
    assert_eq!(f.manifest.groups(), 0);
    assert_eq!(
        f.manifest.blob.as_bytes(),
        blake3::hash(b"").as_bytes(),
        "the root of no bytes"
    );
    let mut fetch = receiver(&f, "e");
    assert!(fetch.finish().unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any file size, any set of groups, any message size: the answer decodes back to exactly
    /// the ciphertext of those groups, and the whole file hashes to the manifest's plaintext.
    #[test]
    fn encode_decode_round_trip(size in 0u64..(40 * G), picks in proptest::collection::vec((0u64..40, 1u64..8), 1..5),
                                max in 200usize..70_000, cut in 1usize..20_000) {
        let f = fixture(size);
        let total = groups_for_size(size);
        let max = max.min(65_536);
        let groups: GroupSet = picks.iter().map(|(s, n)| s % total.max(1)..(s % total.max(1) + n).min(total)).collect();
        let mut fetch = receiver(&f, "rt");
        if !groups.is_empty() {
            let msgs = answer(&f, &groups, max);
            fetch.start(RequestKey(1), &groups);
            let bytes = stream(&msgs);
            let mut got = GroupSet::new();
            let mut done = false;
            for piece in bytes.chunks(cut) {
                let r = fetch.receive(RequestKey(1), piece).ok().unwrap();
                got = got.union(&r.verified);
                done = r.done;
            }
            prop_assert!(done);
            prop_assert_eq!(&got, &groups);
        }
        // Fill in the rest and check the plaintext hash.
        let rest = GroupSet::from_range(0..total).difference(&groups);
        if !rest.is_empty() {
            fetch.start(RequestKey(2), &rest);
            let bytes = stream(&answer(&f, &rest, 65_536));
            let r = fetch.receive(RequestKey(2), &bytes).ok().unwrap();
            prop_assert!(r.done);
        }
        prop_assert!(fetch.finish().unwrap());
    }
}
