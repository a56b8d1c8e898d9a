//! File transfer formats: the manifest that announces a file inside an end-to-end encrypted
//! message, the few end-to-end control messages transfers need, and the frames of the blob
//! channel (`dopus-blob/1`) that carry the bytes (docs/files.md).
//!
//! Protocol flow:
//! - the sender draws a random key and nonce, encrypts the file with ChaCha20 (one nonce per
//!   [`SEGMENT_BYTES`] segment, see [`FileNonce::for_segment`]), computes the BLAKE3 tree root
//!   of the ciphertext (the blob id, a [`BlobHash`]) and the BLAKE3 hash of the plaintext, and
//!   announces a [`FileManifest`] in a chat message (Olm in DMs, Megolm in channels);
//! - the receiver opens a `dopus-blob` data channel (or uses the open one) and both sides send
//!   [`BlobFrame::Hello`]; it asks holders which ranges they have ([`BlobFrame::Ask`] →
//!   [`BlobFrame::Have`]) and requests missing chunk groups ([`BlobFrame::Get`], a window of
//!   them in flight, each with its own request id);
//! - a provider answers a `Get` with the BLAKE3 verified-streaming (bao) encoding of exactly
//!   those ranges, cut into [`BlobFrame::Data`] messages of at most [`MAX_BLOB_MESSAGE`] bytes
//!   (never empty: a zero-length channel message never arrives), or with [`BlobFrame::Error`];
//!   the receiver verifies every chunk group on arrival and can [`BlobFrame::Cancel`] a request;
//! - a member who holds the whole file says so in the conversation with
//!   [`TransferContent::FileHave`], so other members can fetch ranges from it too.
//!
//! Ranges on the wire are in chunk groups of [`CHUNK_GROUP_BYTES`] (16 KiB, bao-tree's
//! `BlockSize::from_chunk_log(4)`), so a request can never split a group: every unit a
//! receiver asks for is one it can verify on its own.
//!
//! Decoding is for untrusted input: lengths and counts are checked before anything is
//! allocated, ranges must be canonical (sorted, non-empty, neither overlapping nor touching),
//! trailing bytes are refused, and errors never echo the input.

use crate::peer::{Base64Bytes, PeerError};
use dopus_types::BlobHash;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;

/// Version of the file format (cipher, segment size, chunk group size, hashes). A manifest
/// with another version is refused: a change to any of these is a new version.
pub const FILE_FORMAT_VERSION: u32 = 1;

/// Log2 of the chunks (1 KiB each) in a chunk group: bao-tree's `BlockSize::from_chunk_log`.
pub const CHUNK_GROUP_LOG: u8 = 4;
/// Bytes in a chunk group: the unit of verification, requests and resume (16 KiB). The
/// outboard keeps one 64-byte hash pair per group: 1/256 of the data.
pub const CHUNK_GROUP_BYTES: u64 = 1024 << CHUNK_GROUP_LOG;
/// Bytes of plaintext encrypted under one nonce. IETF ChaCha20 has a 32-bit block counter
/// (256 GiB per key and nonce); each 64 GiB segment gets its own nonce, so files of any size
/// work and a counter never comes near its end.
pub const SEGMENT_BYTES: u64 = 64 << 30;
/// Largest file a manifest may announce (1 PiB): far beyond any disk, small enough that every
/// offset and group count fits comfortably in a `u64`.
pub const MAX_FILE_SIZE: u64 = 1 << 50;
/// Longest file name in a manifest, in UTF-8 bytes (what most file systems allow).
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest MIME type in a manifest, in bytes (RFC 6838 allows 127 per part; we allow 127 in all).
pub const MAX_MIME_BYTES: usize = 127;
/// Largest thumbnail in a manifest, in bytes before base64. Keeps the announcing message small.
pub const MAX_THUMBNAIL_BYTES: usize = 16 * 1024;
/// Largest width or height a manifest may state, in pixels.
pub const MAX_DIMENSION: u32 = 1 << 20;

/// The data channel label of the blob channel.
pub const BLOB_CHANNEL_LABEL: &str = "dopus-blob";
/// The data channel protocol of the blob channel, and its version.
pub const BLOB_CHANNEL_PROTOCOL: &str = "dopus-blob/1";
/// Version of the blob channel frames, carried in [`BlobFrame::Hello`].
pub const BLOB_PROTOCOL_VERSION: u16 = 1;
/// Largest blob channel message, in bytes: 64 KiB, the maximum message size every WebRTC peer
/// accepts when the SDP says nothing (`a=max-message-size` absent).
pub const MAX_BLOB_MESSAGE: usize = 64 * 1024;
/// Bytes of header in a [`BlobFrame::Data`] message (tag and request id).
pub const DATA_HEADER_BYTES: usize = 5;
/// Most ranges in one [`BlobFrame::Get`] or [`BlobFrame::Have`] (16 KiB of ranges).
pub const MAX_FRAME_RANGES: usize = 1024;
/// Smallest message size a peer may announce in its hello.
pub const MIN_BLOB_MESSAGE: u32 = 1024;

/// The number of chunk groups a blob of `size` bytes has (the last one may be short).
pub const fn groups_for_size(size: u64) -> u64 {
    size.div_ceil(CHUNK_GROUP_BYTES)
}

/// A BLAKE3 hash of a file's plaintext: what the receiver checks after decrypting, so one
/// ciphertext cannot open to two different files under two keys ("Missing Salamanders").
/// Not a blob id: nothing is addressed by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlainHash(pub [u8; 32]);

impl fmt::Debug for PlainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlainHash({})", hex::encode(&self.0[..4]))
    }
}

/// 64 lowercase hex digits, what `b3sum` prints for the plaintext.
impl Serialize for PlainHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for PlainHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.as_bytes(), &mut out)
            .map_err(|_| serde::de::Error::custom("not a plaintext hash"))?;
        Ok(PlainHash(out))
    }
}

/// The random 256-bit ChaCha20 key of one file. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey(pub [u8; 32]);

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(<redacted>)")
    }
}

/// The random 96-bit ChaCha20 nonce of one file (segment 0; see [`FileNonce::for_segment`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileNonce(pub [u8; 12]);

impl FileNonce {
    /// The nonce of segment `index` (bytes `index * SEGMENT_BYTES ..`): the file's nonce with
    /// its first four bytes XOR the segment index (little-endian). Segment 0 uses the nonce as
    /// announced. Each file has its own random key, so nonces only need to differ within a file.
    pub fn for_segment(&self, index: u32) -> [u8; 12] {
        let mut n = self.0;
        for (b, s) in n.iter_mut().zip(index.to_le_bytes()) {
            *b ^= s;
        }
        n
    }
}

macro_rules! fixed_b64 {
    ($name:ident, $len:expr, $what:expr) => {
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&dopus_types::b64_encode(&self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                let bytes = dopus_types::b64_decode(&text)
                    .map_err(|_| serde::de::Error::custom(concat!("not a ", $what)))?;
                <[u8; $len]>::try_from(bytes.as_slice())
                    .map($name)
                    .map_err(|_| serde::de::Error::custom(concat!("not a ", $what)))
            }
        }
    };
}

fixed_b64!(FileKey, 32, "file key");
fixed_b64!(FileNonce, 12, "file nonce");

/// Width and height of an image or video, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimensions {
    /// Width in pixels (1 to [`MAX_DIMENSION`]).
    pub width: u32,
    /// Height in pixels (1 to [`MAX_DIMENSION`]).
    pub height: u32,
}

/// The image formats a thumbnail may have: formats browsers show without running anything
/// (no SVG, which can carry script).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThumbnailType {
    /// `image/jpeg`.
    Jpeg,
    /// `image/png`.
    Png,
    /// `image/webp`.
    Webp,
}

impl ThumbnailType {
    /// The MIME type.
    pub const fn mime(self) -> &'static str {
        match self {
            ThumbnailType::Jpeg => "image/jpeg",
            ThumbnailType::Png => "image/png",
            ThumbnailType::Webp => "image/webp",
        }
    }
}

/// A small preview image shown before (or instead of) fetching the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thumbnail {
    /// Its format.
    #[serde(rename = "type")]
    pub kind: ThumbnailType,
    /// The image bytes (1 to [`MAX_THUMBNAIL_BYTES`]).
    pub data: Base64Bytes,
}

/// What a message announcing a file carries: everything needed to fetch, verify and decrypt
/// it. It travels only inside Olm or Megolm: names, sizes, types and keys never reach the
/// server.
///
/// `Debug` prints neither the key nor the name.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileManifest {
    /// [`FILE_FORMAT_VERSION`].
    pub version: u32,
    /// The blob id: BLAKE3 tree root of the ciphertext.
    pub blob: BlobHash,
    /// Size in bytes (ciphertext and plaintext are the same length), at most [`MAX_FILE_SIZE`].
    pub size: u64,
    /// The ChaCha20 key.
    pub key: FileKey,
    /// The ChaCha20 nonce of segment 0.
    pub nonce: FileNonce,
    /// The file name as the sender had it (1 to [`MAX_FILE_NAME_BYTES`] bytes). Never a path:
    /// receivers make it safe before it touches a disk (`dopus_core::transfer::safe_file_name`).
    pub name: String,
    /// The MIME type the sender guessed (`type/subtype`, no parameters).
    pub mime: String,
    /// BLAKE3 of the plaintext.
    pub plain_blake3: PlainHash,
    /// Width and height, for images and videos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<Dimensions>,
    /// Playing time in milliseconds, for audio and video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// A small preview image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<Thumbnail>,
}

impl fmt::Debug for FileManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileManifest")
            .field("version", &self.version)
            .field("blob", &self.blob)
            .field("size", &self.size)
            .field("name", &format_args!("<{} bytes>", self.name.len()))
            .field("mime", &self.mime)
            .field("dimensions", &self.dimensions)
            .field("duration_ms", &self.duration_ms)
            .field(
                "thumbnail",
                &self.thumbnail.as_ref().map(|t| (t.kind, t.data.0.len())),
            )
            .finish_non_exhaustive()
    }
}

/// Whether `mime` looks like `type/subtype` made of RFC 6838 name characters.
fn mime_ok(mime: &str) -> bool {
    let name_char = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'&' | b'^' | b'_' | b'.' | b'+' | b'-'
            )
    };
    let Some((ty, sub)) = mime.split_once('/') else {
        return false;
    };
    !ty.is_empty() && !sub.is_empty() && ty.bytes().all(name_char) && sub.bytes().all(name_char)
}

impl FileManifest {
    /// Checks the version and the documented limits.
    pub fn validate(&self) -> Result<(), PeerError> {
        if self.version != FILE_FORMAT_VERSION {
            return Err(PeerError::UnsupportedVersion {
                what: "file manifest",
                version: self.version,
            });
        }
        if self.size > MAX_FILE_SIZE {
            return Err(PeerError::InvalidField { field: "size" });
        }
        if self.name.is_empty() {
            return Err(PeerError::InvalidField { field: "name" });
        }
        if self.name.len() > MAX_FILE_NAME_BYTES {
            return Err(PeerError::FieldTooLong {
                field: "name",
                limit: MAX_FILE_NAME_BYTES,
            });
        }
        if self.mime.len() > MAX_MIME_BYTES {
            return Err(PeerError::FieldTooLong {
                field: "mime",
                limit: MAX_MIME_BYTES,
            });
        }
        if !mime_ok(&self.mime) {
            return Err(PeerError::InvalidField { field: "mime" });
        }
        if let Some(d) = self.dimensions {
            let ok = |v: u32| (1..=MAX_DIMENSION).contains(&v);
            if !ok(d.width) || !ok(d.height) {
                return Err(PeerError::InvalidField {
                    field: "dimensions",
                });
            }
        }
        if let Some(t) = &self.thumbnail {
            if t.data.0.is_empty() {
                return Err(PeerError::InvalidField { field: "thumbnail" });
            }
            if t.data.0.len() > MAX_THUMBNAIL_BYTES {
                return Err(PeerError::FieldTooLong {
                    field: "thumbnail",
                    limit: MAX_THUMBNAIL_BYTES,
                });
            }
        }
        Ok(())
    }

    /// The number of chunk groups of this file.
    pub fn groups(&self) -> u64 {
        groups_for_size(self.size)
    }
}

/// End-to-end control messages about files, beside the manifest (which travels in a chat
/// message). The lead nests this as `Content::Transfer`; every kind name starts with `file_`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransferContent {
    /// The sender holds the whole blob, verified, and serves it to this conversation's members
    /// (in a DM: "delivered"; in a channel: one more source for everybody else).
    FileHave {
        /// The blob.
        blob: BlobHash,
    },
    /// The file's original sender withdraws it: stop fetching, serving and advertising it.
    FileRevoke {
        /// The blob.
        blob: BlobHash,
    },
    /// A receiver gives up on the file (cancelled or declined): the sender need not wait for it.
    FileCancel {
        /// The blob.
        blob: BlobHash,
    },
}

impl TransferContent {
    /// Every kind name, for the payload decoder that finds the subsystem from the `kind`.
    pub const KINDS: &'static [&'static str] = &["file_have", "file_revoke", "file_cancel"];

    /// Checks the documented limits (a blob hash is checked when it is parsed).
    pub fn validate(&self) -> Result<(), PeerError> {
        match self {
            TransferContent::FileHave { .. }
            | TransferContent::FileRevoke { .. }
            | TransferContent::FileCancel { .. } => Ok(()),
        }
    }

    /// A short name of the kind, safe to log.
    pub fn kind_name(&self) -> &'static str {
        match self {
            TransferContent::FileHave { .. } => "file_have",
            TransferContent::FileRevoke { .. } => "file_revoke",
            TransferContent::FileCancel { .. } => "file_cancel",
        }
    }

    /// The blob it is about.
    pub fn blob(&self) -> &BlobHash {
        match self {
            TransferContent::FileHave { blob }
            | TransferContent::FileRevoke { blob }
            | TransferContent::FileCancel { blob } => blob,
        }
    }
}

/// A set of chunk groups, kept canonical: sorted ranges, none empty, none overlapping or
/// touching another. The unit of requests, of what a holder has and of what a receiver has
/// verified.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct GroupSet {
    ranges: Vec<Range<u64>>,
}

impl fmt::Debug for GroupSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(
                self.ranges
                    .iter()
                    .map(|r| format!("{}..{}", r.start, r.end)),
            )
            .finish()
    }
}

impl GroupSet {
    /// No groups.
    pub const fn new() -> Self {
        Self { ranges: Vec::new() }
    }

    /// Groups `range` (empty if `range` is).
    pub fn from_range(range: Range<u64>) -> Self {
        let mut s = Self::new();
        s.insert(range);
        s
    }

    /// The ranges if they are canonical (sorted, non-empty, apart), else `None`.
    pub fn from_canonical(ranges: Vec<Range<u64>>) -> Option<Self> {
        let ok = ranges.iter().all(|r| r.start < r.end)
            && ranges.windows(2).all(|w| w[0].end < w[1].start);
        ok.then_some(Self { ranges })
    }

    /// The canonical ranges, in order.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Whether there is no group.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many groups.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// Whether group `g` is in the set.
    pub fn contains(&self, g: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= g);
        self.ranges.get(i).is_some_and(|r| r.start <= g)
    }

    /// Whether every group of `range` is in the set.
    pub fn contains_range(&self, range: &Range<u64>) -> bool {
        if range.start >= range.end {
            return true;
        }
        let i = self.ranges.partition_point(|r| r.end <= range.start);
        self.ranges
            .get(i)
            .is_some_and(|r| r.start <= range.start && range.end <= r.end)
    }

    /// Adds `range`.
    pub fn insert(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        // First range that ends at or after the new start (touching merges), and the first
        // that starts after the new end.
        let lo = self.ranges.partition_point(|r| r.end < range.start);
        let hi = self.ranges.partition_point(|r| r.start <= range.end);
        let mut merged = range;
        if lo < hi {
            merged.start = merged.start.min(self.ranges[lo].start);
            merged.end = merged.end.max(self.ranges[hi - 1].end);
        }
        self.ranges.splice(lo..hi, std::iter::once(merged));
    }

    /// Removes `range`.
    pub fn remove(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        let lo = self.ranges.partition_point(|r| r.end <= range.start);
        let hi = self.ranges.partition_point(|r| r.start < range.end);
        if lo >= hi {
            return;
        }
        let mut keep = Vec::with_capacity(2);
        let first = &self.ranges[lo];
        if first.start < range.start {
            keep.push(first.start..range.start);
        }
        let last = &self.ranges[hi - 1];
        if range.end < last.end {
            keep.push(range.end..last.end);
        }
        self.ranges.splice(lo..hi, keep);
    }

    /// Every group in either set.
    pub fn union(&self, other: &GroupSet) -> GroupSet {
        let mut out = self.clone();
        for r in &other.ranges {
            out.insert(r.clone());
        }
        out
    }

    /// The groups of `self` that are not in `other`.
    pub fn difference(&self, other: &GroupSet) -> GroupSet {
        let mut out = self.clone();
        for r in &other.ranges {
            out.remove(r.clone());
        }
        out
    }

    /// The groups in both sets.
    pub fn intersection(&self, other: &GroupSet) -> GroupSet {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a, b) = (&self.ranges[i], &other.ranges[j]);
            let start = a.start.max(b.start);
            let end = a.end.min(b.end);
            if start < end {
                out.push(start..end);
            }
            if a.end < b.end {
                i += 1;
            } else {
                j += 1;
            }
        }
        GroupSet { ranges: out }
    }

    /// The first `max` groups of the set, in order (fewer if it has fewer).
    pub fn take_first(&self, max: u64) -> GroupSet {
        let mut out = GroupSet::new();
        let mut left = max;
        for r in &self.ranges {
            if left == 0 {
                break;
            }
            let n = (r.end - r.start).min(left);
            out.ranges.push(r.start..r.start + n);
            left -= n;
        }
        out
    }

    /// The first group of the set.
    pub fn first(&self) -> Option<u64> {
        self.ranges.first().map(|r| r.start)
    }

    /// One past the last group of the set.
    pub fn end(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.end)
    }
}

impl FromIterator<Range<u64>> for GroupSet {
    fn from_iter<I: IntoIterator<Item = Range<u64>>>(iter: I) -> Self {
        let mut s = GroupSet::new();
        for r in iter {
            s.insert(r);
        }
        s
    }
}

/// Why a blob channel peer refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobErrorCode {
    /// Not offered to you, or unknown (the same answer either way: no oracle).
    NotFound,
    /// The ranges are outside the blob, or the request is larger than a provider serves at once.
    BadRequest,
    /// Too many requests in flight on this channel: ask again later.
    Busy,
    /// The sender's file changed since it was announced; it will not serve other bytes under
    /// the old id.
    SourceChanged,
    /// The provider failed to read its copy.
    Internal,
    /// A code this build does not know (kept so newer peers can add codes).
    Other(u8),
}

impl BlobErrorCode {
    fn to_byte(self) -> u8 {
        match self {
            BlobErrorCode::NotFound => 1,
            BlobErrorCode::BadRequest => 2,
            BlobErrorCode::Busy => 3,
            BlobErrorCode::SourceChanged => 4,
            BlobErrorCode::Internal => 5,
            BlobErrorCode::Other(b) => b,
        }
    }

    fn from_byte(b: u8) -> Self {
        match b {
            1 => BlobErrorCode::NotFound,
            2 => BlobErrorCode::BadRequest,
            3 => BlobErrorCode::Busy,
            4 => BlobErrorCode::SourceChanged,
            5 => BlobErrorCode::Internal,
            other => BlobErrorCode::Other(other),
        }
    }
}

/// A request id, chosen by the requester, unique among its requests in flight on one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u32);

/// One message of the blob channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobFrame<'a> {
    /// Sent by each side when the channel opens.
    Hello {
        /// [`BLOB_PROTOCOL_VERSION`].
        version: u16,
        /// The largest message this side accepts (at least [`MIN_BLOB_MESSAGE`]).
        max_message: u32,
    },
    /// Which groups of this blob do you have?
    Ask {
        /// The blob.
        blob: BlobHash,
    },
    /// The groups of a blob the sender has verified and will serve to the receiver (empty: none,
    /// which is also the answer for a blob not offered to the receiver). Sent in answer to
    /// [`BlobFrame::Ask`], and unasked as a holder verifies more.
    Have {
        /// The blob.
        blob: BlobHash,
        /// The groups.
        groups: GroupSet,
    },
    /// Send me the bao encoding of these groups of this blob.
    Get {
        /// The request id.
        req: RequestId,
        /// The blob.
        blob: BlobHash,
        /// The groups (at least one).
        groups: GroupSet,
    },
    /// Stop sending the answer to this request.
    Cancel {
        /// The request.
        req: RequestId,
    },
    /// The next bytes of the answer to a request (at least one byte).
    Data {
        /// The request.
        req: RequestId,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// The request is refused or cannot be completed; nothing more comes for it.
    Error {
        /// The request.
        req: RequestId,
        /// Why.
        code: BlobErrorCode,
    },
}

/// Why a blob channel message was refused. Never contains any part of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobFrameError {
    /// The message is empty.
    #[error("empty blob channel message")]
    Empty,
    /// The message is larger than [`MAX_BLOB_MESSAGE`].
    #[error("blob channel message too large: {0} bytes")]
    TooLarge(usize),
    /// The first byte names no frame this build reads.
    #[error("unknown blob frame type {0:#04x}")]
    UnknownType(u8),
    /// The message ends inside a field.
    #[error("blob frame truncated in {0}")]
    Truncated(&'static str),
    /// Bytes follow the end of the frame.
    #[error("trailing bytes after a blob frame")]
    TrailingBytes,
    /// A field has a value that is not allowed.
    #[error("blob frame field {0} has an invalid value")]
    Invalid(&'static str),
}

const TAG_HELLO: u8 = 0x01;
const TAG_ASK: u8 = 0x02;
const TAG_HAVE: u8 = 0x03;
const TAG_GET: u8 = 0x04;
const TAG_CANCEL: u8 = 0x05;
const TAG_DATA: u8 = 0x06;
const TAG_ERROR: u8 = 0x07;

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], BlobFrameError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(BlobFrameError::Truncated(what))?;
        self.rest = tail;
        Ok(*head)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, BlobFrameError> {
        self.take::<2>(what).map(u16::from_be_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, BlobFrameError> {
        self.take::<4>(what).map(u32::from_be_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, BlobFrameError> {
        self.take::<8>(what).map(u64::from_be_bytes)
    }

    fn blob(&mut self) -> Result<BlobHash, BlobFrameError> {
        self.take::<32>("blob").map(BlobHash::from_bytes)
    }

    fn groups(&mut self, allow_empty: bool) -> Result<GroupSet, BlobFrameError> {
        let n = usize::from(self.u16("range count")?);
        if n > MAX_FRAME_RANGES || (n == 0 && !allow_empty) {
            return Err(BlobFrameError::Invalid("range count"));
        }
        if self.rest.len() < n * 16 {
            return Err(BlobFrameError::Truncated("ranges"));
        }
        let mut ranges = Vec::with_capacity(n);
        let max = groups_for_size(MAX_FILE_SIZE);
        for _ in 0..n {
            let start = self.u64("ranges")?;
            let end = self.u64("ranges")?;
            if end > max {
                return Err(BlobFrameError::Invalid("ranges"));
            }
            ranges.push(start..end);
        }
        GroupSet::from_canonical(ranges).ok_or(BlobFrameError::Invalid("ranges"))
    }

    fn end(self) -> Result<(), BlobFrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(BlobFrameError::TrailingBytes)
        }
    }
}

fn put_groups(out: &mut Vec<u8>, groups: &GroupSet) {
    // Encoders only build frames from canonical sets; the count is capped by `encode`'s check.
    let n = groups.ranges().len().min(MAX_FRAME_RANGES);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    for r in &groups.ranges()[..n] {
        out.extend_from_slice(&r.start.to_be_bytes());
        out.extend_from_slice(&r.end.to_be_bytes());
    }
}

impl BlobFrame<'_> {
    /// Decodes one message from an untrusted peer.
    pub fn decode(message: &[u8]) -> Result<BlobFrame<'_>, BlobFrameError> {
        if message.len() > MAX_BLOB_MESSAGE {
            return Err(BlobFrameError::TooLarge(message.len()));
        }
        let (&tag, rest) = message.split_first().ok_or(BlobFrameError::Empty)?;
        let mut r = Reader { rest };
        let frame = match tag {
            TAG_HELLO => {
                let version = r.u16("version")?;
                let max_message = r.u32("max_message")?;
                if max_message < MIN_BLOB_MESSAGE {
                    return Err(BlobFrameError::Invalid("max_message"));
                }
                BlobFrame::Hello {
                    version,
                    max_message,
                }
            }
            TAG_ASK => BlobFrame::Ask { blob: r.blob()? },
            TAG_HAVE => {
                let blob = r.blob()?;
                let groups = r.groups(true)?;
                BlobFrame::Have { blob, groups }
            }
            TAG_GET => {
                let req = RequestId(r.u32("req")?);
                let blob = r.blob()?;
                let groups = r.groups(false)?;
                BlobFrame::Get { req, blob, groups }
            }
            TAG_CANCEL => BlobFrame::Cancel {
                req: RequestId(r.u32("req")?),
            },
            TAG_DATA => {
                let req = RequestId(r.u32("req")?);
                if r.rest.is_empty() {
                    return Err(BlobFrameError::Invalid("data"));
                }
                let bytes = std::mem::take(&mut r.rest);
                BlobFrame::Data { req, bytes }
            }
            TAG_ERROR => {
                let req = RequestId(r.u32("req")?);
                let [code] = r.take::<1>("code")?;
                BlobFrame::Error {
                    req,
                    code: BlobErrorCode::from_byte(code),
                }
            }
            other => return Err(BlobFrameError::UnknownType(other)),
        };
        r.end()?;
        Ok(frame)
    }

    /// The request a message is about, read from its header alone: lets a receiver close just
    /// that request when the rest of the message is malformed.
    pub fn peek_request(message: &[u8]) -> Option<RequestId> {
        match *message.first()? {
            TAG_GET | TAG_CANCEL | TAG_DATA | TAG_ERROR => message
                .get(1..5)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| RequestId(u32::from_be_bytes(b))),
            _ => None,
        }
    }

    /// Encodes the frame. Fails only for frames no peer would accept: an empty data frame or
    /// `Get`, more than [`MAX_FRAME_RANGES`] ranges, or a message over [`MAX_BLOB_MESSAGE`].
    pub fn encode(&self) -> Result<Vec<u8>, BlobFrameError> {
        let mut out = Vec::new();
        match self {
            BlobFrame::Hello {
                version,
                max_message,
            } => {
                out.push(TAG_HELLO);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&max_message.to_be_bytes());
            }
            BlobFrame::Ask { blob } => {
                out.push(TAG_ASK);
                out.extend_from_slice(blob.as_bytes());
            }
            BlobFrame::Have { blob, groups } => {
                if groups.ranges().len() > MAX_FRAME_RANGES {
                    return Err(BlobFrameError::Invalid("range count"));
                }
                out.push(TAG_HAVE);
                out.extend_from_slice(blob.as_bytes());
                put_groups(&mut out, groups);
            }
            BlobFrame::Get { req, blob, groups } => {
                if groups.is_empty() || groups.ranges().len() > MAX_FRAME_RANGES {
                    return Err(BlobFrameError::Invalid("range count"));
                }
                out.push(TAG_GET);
                out.extend_from_slice(&req.0.to_be_bytes());
                out.extend_from_slice(blob.as_bytes());
                put_groups(&mut out, groups);
            }
            BlobFrame::Cancel { req } => {
                out.push(TAG_CANCEL);
                out.extend_from_slice(&req.0.to_be_bytes());
            }
            BlobFrame::Data { req, bytes } => {
                if bytes.is_empty() {
                    return Err(BlobFrameError::Invalid("data"));
                }
                out.reserve(DATA_HEADER_BYTES + bytes.len());
                out.push(TAG_DATA);
                out.extend_from_slice(&req.0.to_be_bytes());
                out.extend_from_slice(bytes);
            }
            BlobFrame::Error { req, code } => {
                out.push(TAG_ERROR);
                out.extend_from_slice(&req.0.to_be_bytes());
                out.push(code.to_byte());
            }
        }
        if out.len() > MAX_BLOB_MESSAGE {
            return Err(BlobFrameError::TooLarge(out.len()));
        }
        Ok(out)
    }
}

/// Starts a data message for `req` in `out` (cleared first): the header, to which the caller
/// appends 1 to `MAX_BLOB_MESSAGE - DATA_HEADER_BYTES` bytes. Lets a provider fill messages in
/// place without copying each chunk twice.
pub fn start_data_message(out: &mut Vec<u8>, req: RequestId) {
    out.clear();
    out.push(TAG_DATA);
    out.extend_from_slice(&req.0.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn manifest() -> FileManifest {
        FileManifest {
            version: FILE_FORMAT_VERSION,
            blob: BlobHash::from_bytes([0x11; 32]),
            size: 5 * CHUNK_GROUP_BYTES + 7,
            key: FileKey([0x22; 32]),
            nonce: FileNonce([0x33; 12]),
            name: "holiday photo.jpg".into(),
            mime: "image/jpeg".into(),
            plain_blake3: PlainHash([0x44; 32]),
            dimensions: Some(Dimensions {
                width: 4032,
                height: 3024,
            }),
            duration_ms: None,
            thumbnail: Some(Thumbnail {
                kind: ThumbnailType::Jpeg,
                data: Base64Bytes(vec![0xff, 0xd8, 0xff, 0xe0]),
            }),
        }
    }

    fn every_frame() -> Vec<BlobFrame<'static>> {
        let blob = BlobHash::from_bytes([0xaa; 32]);
        vec![
            BlobFrame::Hello {
                version: BLOB_PROTOCOL_VERSION,
                max_message: MAX_BLOB_MESSAGE as u32,
            },
            BlobFrame::Ask { blob },
            BlobFrame::Have {
                blob,
                groups: GroupSet::new(),
            },
            BlobFrame::Have {
                blob,
                groups: [0..64, 128..129].into_iter().collect(),
            },
            BlobFrame::Get {
                req: RequestId(7),
                blob,
                groups: GroupSet::from_range(64..128),
            },
            BlobFrame::Cancel { req: RequestId(7) },
            BlobFrame::Data {
                req: RequestId(7),
                bytes: b"\x01\x02\x03",
            },
            BlobFrame::Error {
                req: RequestId(7),
                code: BlobErrorCode::NotFound,
            },
            BlobFrame::Error {
                req: RequestId(8),
                code: BlobErrorCode::SourceChanged,
            },
        ]
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn manifest_json_snapshot() {
        insta::assert_json_snapshot!(manifest());
    }

    #[test]
    fn transfer_content_snapshot() {
        let blob = BlobHash::from_bytes([0x55; 32]);
        insta::assert_json_snapshot!(vec![
            TransferContent::FileHave { blob },
            TransferContent::FileRevoke { blob },
            TransferContent::FileCancel { blob },
        ]);
    }

    #[test]
    fn frames_snapshot() {
        let lines: Vec<String> = every_frame()
            .iter()
            .map(|f| format!("{f:?} => {}", hex(&f.encode().unwrap())))
            .collect();
        insta::assert_snapshot!(lines.join("\n"));
    }

    #[test]
    fn every_frame_round_trips() {
        for f in every_frame() {
            let bytes = f.encode().unwrap();
            assert_eq!(BlobFrame::decode(&bytes).unwrap(), f);
        }
    }

    #[test]
    fn files_travel_nested_in_the_peer_content() {
        use crate::content::{ChatContent, Content};
        // The announcing message: a chat content of kind `file` carrying the manifest.
        let file = Content::Chat(ChatContent::File {
            file: Box::new(manifest()),
            reply_to: None,
        });
        let json = serde_json::to_string(&file).unwrap();
        assert!(json.starts_with(r#"{"kind":"file","file":{"#), "{json}");
        let back: Content = serde_json::from_str(&json).unwrap();
        assert_eq!(back, file);
        assert!(
            back.bulk_item_kind(),
            "a file message is queued like a text"
        );
        assert_eq!(back.validate(), Ok(()));
        // A bad manifest fails the content's validation.
        let mut bad = manifest();
        bad.name = String::new();
        let bad = Content::Chat(ChatContent::File {
            file: Box::new(bad),
            reply_to: None,
        });
        assert!(bad.validate().is_err());
        // Control messages decode as `Content::Transfer`.
        let have = Content::Transfer(TransferContent::FileHave {
            blob: BlobHash::from_bytes([3; 32]),
        });
        let json = serde_json::to_string(&have).unwrap();
        assert_eq!(serde_json::from_str::<Content>(&json).unwrap(), have);
        assert_eq!(have.kind_name(), "file_have");
        assert!(!have.bulk_item_kind());
    }

    #[test]
    fn transfer_kinds_start_with_file_and_match_their_tag() {
        let blob = BlobHash::from_bytes([1; 32]);
        for c in [
            TransferContent::FileHave { blob },
            TransferContent::FileRevoke { blob },
            TransferContent::FileCancel { blob },
        ] {
            let v = serde_json::to_value(&c).unwrap();
            assert_eq!(v["kind"], c.kind_name());
            assert!(c.kind_name().starts_with("file_"));
            assert!(TransferContent::KINDS.contains(&c.kind_name()));
            assert_eq!(c.blob(), &blob);
            assert_eq!(c.validate(), Ok(()));
            let back: TransferContent = serde_json::from_value(v).unwrap();
            assert_eq!(back, c);
        }
        assert_eq!(TransferContent::KINDS.len(), 3);
        assert!(
            TransferContent::KINDS
                .iter()
                .all(|k| k.starts_with("file_"))
        );
        // No kind collides with another subsystem's.
        for k in crate::content::ChatContent::KINDS {
            assert!(!TransferContent::KINDS.contains(k));
        }
        let extra = serde_json::json!({"kind": "file_have", "blob": blob, "x": 1});
        assert!(serde_json::from_value::<TransferContent>(extra).is_err());
    }

    #[test]
    fn manifest_limits() {
        assert_eq!(manifest().validate(), Ok(()));
        let check = |f: &dyn Fn(&mut FileManifest), want: PeerError| {
            let mut m = manifest();
            f(&mut m);
            assert_eq!(m.validate(), Err(want));
        };
        check(
            &|m| m.version = 2,
            PeerError::UnsupportedVersion {
                what: "file manifest",
                version: 2,
            },
        );
        check(
            &|m| m.size = MAX_FILE_SIZE + 1,
            PeerError::InvalidField { field: "size" },
        );
        check(
            &|m| m.name.clear(),
            PeerError::InvalidField { field: "name" },
        );
        check(
            &|m| m.name = "é".repeat(128),
            PeerError::FieldTooLong {
                field: "name",
                limit: MAX_FILE_NAME_BYTES,
            },
        );
        for bad in [
            "",
            "image",
            "image/",
            "/jpeg",
            "image/jpeg; q=1",
            "text/html\n",
        ] {
            check(
                &|m| m.mime = bad.into(),
                PeerError::InvalidField { field: "mime" },
            );
        }
        check(
            &|m| {
                m.dimensions = Some(Dimensions {
                    width: 0,
                    height: 1,
                })
            },
            PeerError::InvalidField {
                field: "dimensions",
            },
        );
        check(
            &|m| m.thumbnail.as_mut().unwrap().data = Base64Bytes(vec![0; MAX_THUMBNAIL_BYTES + 1]),
            PeerError::FieldTooLong {
                field: "thumbnail",
                limit: MAX_THUMBNAIL_BYTES,
            },
        );
        // An SVG thumbnail cannot even be expressed.
        let mut v = serde_json::to_value(manifest()).unwrap();
        v["thumbnail"]["type"] = "svg".into();
        assert!(serde_json::from_value::<FileManifest>(v).is_err());
        // Wrong key length, unknown fields.
        let mut v = serde_json::to_value(manifest()).unwrap();
        v["key"] = dopus_types::b64_encode(&[1; 31]).into();
        assert!(serde_json::from_value::<FileManifest>(v).is_err());
        let mut v = serde_json::to_value(manifest()).unwrap();
        v["path"] = "/etc/passwd".into();
        assert!(serde_json::from_value::<FileManifest>(v).is_err());
    }

    #[test]
    fn debug_hides_key_and_name() {
        let m = manifest();
        let text = format!("{m:?}");
        assert!(!text.contains("holiday"), "{text}");
        assert!(!text.contains("34, 34"), "{text}");
        assert!(
            !text.contains(&dopus_types::b64_encode(&[0x22; 32])),
            "{text}"
        );
        assert_eq!(format!("{:?}", m.key), "FileKey(<redacted>)");
    }

    #[test]
    fn segment_nonces_differ_and_segment_zero_is_the_nonce() {
        let n = FileNonce([9; 12]);
        assert_eq!(n.for_segment(0), n.0);
        let all: BTreeSet<[u8; 12]> = (0..1000).map(|i| n.for_segment(i)).collect();
        assert_eq!(all.len(), 1000);
        assert_eq!(n.for_segment(1)[0], 9 ^ 1);
        assert_eq!(&n.for_segment(0x0102_0304)[4..], &n.0[4..]);
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(BlobFrame::decode(&[]), Err(BlobFrameError::Empty));
        assert_eq!(
            BlobFrame::decode(&[0x7b, 1]),
            Err(BlobFrameError::UnknownType(0x7b))
        );
        assert_eq!(
            BlobFrame::decode(&[TAG_DATA, 0, 0, 0, 1]),
            Err(BlobFrameError::Invalid("data"))
        );
        assert_eq!(
            BlobFrame::decode(&[TAG_CANCEL, 0, 0]),
            Err(BlobFrameError::Truncated("req"))
        );
        assert_eq!(
            BlobFrame::decode(&[TAG_CANCEL, 0, 0, 0, 1, 9]),
            Err(BlobFrameError::TrailingBytes)
        );
        assert_eq!(
            BlobFrame::decode(&[TAG_HELLO, 0, 1, 0, 0, 0, 10]),
            Err(BlobFrameError::Invalid("max_message"))
        );
        let huge = vec![TAG_DATA; MAX_BLOB_MESSAGE + 1];
        assert_eq!(
            BlobFrame::decode(&huge),
            Err(BlobFrameError::TooLarge(MAX_BLOB_MESSAGE + 1))
        );
        // Ranges: empty, overlapping, touching, unsorted, out of bounds, too many, and a Get
        // with none.
        let get = |ranges: &[(u64, u64)], count: u16| {
            let mut m = vec![TAG_GET, 0, 0, 0, 1];
            m.extend_from_slice(&[0xaa; 32]);
            m.extend_from_slice(&count.to_be_bytes());
            for (s, e) in ranges {
                m.extend_from_slice(&s.to_be_bytes());
                m.extend_from_slice(&e.to_be_bytes());
            }
            m
        };
        assert!(BlobFrame::decode(&get(&[(0, 4)], 1)).is_ok());
        for (ranges, count) in [
            (&[(3u64, 3u64)][..], 1u16),
            (&[(0, 4), (2, 6)][..], 2),
            (&[(0, 4), (4, 6)][..], 2),
            (&[(8, 9), (0, 4)][..], 2),
            (&[(0, u64::MAX)][..], 1),
            (&[][..], 0),
        ] {
            let m = get(ranges, count);
            assert!(
                matches!(BlobFrame::decode(&m), Err(BlobFrameError::Invalid(_))),
                "{ranges:?}"
            );
            assert_eq!(BlobFrame::peek_request(&m), Some(RequestId(1)));
        }
        assert_eq!(
            BlobFrame::decode(&get(&[(0, 4)], 2)),
            Err(BlobFrameError::Truncated("ranges"))
        );
        assert_eq!(
            BlobFrame::decode(&get(&[], MAX_FRAME_RANGES as u16 + 1)),
            Err(BlobFrameError::Invalid("range count"))
        );
        assert_eq!(BlobFrame::peek_request(&[TAG_ASK, 1, 2, 3, 4]), None);
        assert_eq!(BlobFrame::peek_request(&[TAG_DATA, 0, 0]), None);
    }

    #[test]
    fn encode_refuses_what_decode_would() {
        let blob = BlobHash::from_bytes([0; 32]);
        assert!(
            BlobFrame::Data {
                req: RequestId(1),
                bytes: &[]
            }
            .encode()
            .is_err()
        );
        assert!(
            BlobFrame::Get {
                req: RequestId(1),
                blob,
                groups: GroupSet::new()
            }
            .encode()
            .is_err()
        );
        let big = vec![0u8; MAX_BLOB_MESSAGE - DATA_HEADER_BYTES];
        let m = BlobFrame::Data {
            req: RequestId(1),
            bytes: &big,
        }
        .encode()
        .unwrap();
        assert_eq!(m.len(), MAX_BLOB_MESSAGE);
        let bigger = vec![0u8; MAX_BLOB_MESSAGE - DATA_HEADER_BYTES + 1];
        assert!(
            BlobFrame::Data {
                req: RequestId(1),
                bytes: &bigger
            }
            .encode()
            .is_err()
        );
        let mut out = vec![9; 3];
        start_data_message(&mut out, RequestId(258));
        out.push(42);
        assert_eq!(
            BlobFrame::decode(&out),
            Ok(BlobFrame::Data {
                req: RequestId(258),
                bytes: &[42]
            })
        );
    }

    #[test]
    fn errors_never_echo_the_input() {
        let mut v = serde_json::to_value(manifest()).unwrap();
        v["blob"] = "secret words".into();
        let err = serde_json::from_value::<FileManifest>(v).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let mut v = serde_json::to_value(manifest()).unwrap();
        v["nonce"] = "secretwords".into();
        let err = serde_json::from_value::<FileManifest>(v).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn group_set_basics() {
        let mut s = GroupSet::new();
        s.insert(10..20);
        s.insert(0..5);
        s.insert(5..10);
        assert_eq!(s, GroupSet::from_range(0..20));
        s.remove(3..4);
        assert_eq!(s.ranges(), &[0..3, 4..20]);
        assert_eq!(s.count(), 19);
        assert!(s.contains(0) && !s.contains(3) && s.contains(19) && !s.contains(20));
        assert!(s.contains_range(&(4..20)) && !s.contains_range(&(2..5)));
        assert_eq!(s.take_first(5).ranges(), &[0..3, 4..6]);
        assert_eq!(s.first(), Some(0));
        assert_eq!(s.end(), Some(20));
        assert_eq!(GroupSet::from_canonical(vec![0..2, 2..3]), None);
    }

    fn model(set: &GroupSet) -> BTreeSet<u64> {
        set.ranges().iter().flat_map(|r| r.clone()).collect()
    }

    fn arb_ops() -> impl Strategy<Value = Vec<(bool, u64, u64)>> {
        proptest::collection::vec((any::<bool>(), 0u64..200, 0u64..40), 0..40)
    }

    fn arb_set() -> impl Strategy<Value = GroupSet> {
        proptest::collection::vec((0u64..200, 0u64..30), 0..12)
            .prop_map(|v| v.into_iter().map(|(s, n)| s..s + n).collect())
    }

    proptest! {
        #[test]
        fn group_set_matches_a_set_of_integers(ops in arb_ops()) {
            let mut set = GroupSet::new();
            let mut reference = BTreeSet::new();
            for (add, start, len) in ops {
                if add {
                    set.insert(start..start + len);
                    reference.extend(start..start + len);
                } else {
                    set.remove(start..start + len);
                    for g in start..start + len {
                        reference.remove(&g);
                    }
                }
                prop_assert!(GroupSet::from_canonical(set.ranges().to_vec()).is_some());
                prop_assert_eq!(model(&set), reference.clone());
                prop_assert_eq!(set.count(), reference.len() as u64);
            }
        }

        #[test]
        fn group_set_algebra(a in arb_set(), b in arb_set(), n in 0u64..100) {
            let (ma, mb) = (model(&a), model(&b));
            prop_assert_eq!(model(&a.union(&b)), ma.union(&mb).copied().collect());
            prop_assert_eq!(model(&a.difference(&b)), ma.difference(&mb).copied().collect());
            prop_assert_eq!(model(&a.intersection(&b)), ma.intersection(&mb).copied().collect());
            let first: BTreeSet<u64> = ma.iter().take(n as usize).copied().collect();
            prop_assert_eq!(model(&a.take_first(n)), first);
            for g in 0..240 {
                prop_assert_eq!(a.contains(g), ma.contains(&g));
            }
        }

        #[test]
        fn frames_round_trip(req: u32, blob in any::<[u8; 32]>(), set in arb_set(),
                             bytes in proptest::collection::vec(any::<u8>(), 1..2048),
                             code: u8, version: u16, max in MIN_BLOB_MESSAGE..u32::MAX) {
            let blob = BlobHash::from_bytes(blob);
            let req = RequestId(req);
            let mut frames = vec![
                BlobFrame::Hello { version, max_message: max },
                BlobFrame::Ask { blob },
                BlobFrame::Have { blob, groups: set.clone() },
                BlobFrame::Cancel { req },
                BlobFrame::Data { req, bytes: &bytes },
                BlobFrame::Error { req, code: BlobErrorCode::from_byte(code) },
            ];
            if !set.is_empty() {
                frames.push(BlobFrame::Get { req, blob, groups: set.clone() });
            }
            for f in frames {
                let m = f.encode().unwrap();
                prop_assert_eq!(BlobFrame::decode(&m).unwrap(), f);
                if matches!(m[0], TAG_GET | TAG_CANCEL | TAG_DATA | TAG_ERROR) {
                    prop_assert_eq!(BlobFrame::peek_request(&m), Some(req));
                }
            }
        }

        #[test]
        fn manifests_round_trip(blob in any::<[u8; 32]>(), size in 0..=MAX_FILE_SIZE,
                                key in any::<[u8; 32]>(), nonce in any::<[u8; 12]>(),
                                name in "(?s).{1,60}", plain in any::<[u8; 32]>(),
                                dims in proptest::option::of((1..=MAX_DIMENSION, 1..=MAX_DIMENSION)),
                                duration in proptest::option::of(any::<u64>()),
                                thumb in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64))) {
            let m = FileManifest {
                version: FILE_FORMAT_VERSION,
                blob: BlobHash::from_bytes(blob),
                size,
                key: FileKey(key),
                nonce: FileNonce(nonce),
                name,
                mime: "application/octet-stream".into(),
                plain_blake3: PlainHash(plain),
                dimensions: dims.map(|(width, height)| Dimensions { width, height }),
                duration_ms: duration,
                thumbnail: thumb.map(|data| Thumbnail { kind: ThumbnailType::Png, data: Base64Bytes(data) }),
            };
            prop_assert_eq!(m.validate(), Ok(()));
            let back: FileManifest = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(f) = BlobFrame::decode(&bytes) {
                // Whatever decodes encodes back to the same bytes: one form per frame.
                prop_assert_eq!(f.encode().unwrap(), bytes);
            }
        }
    }
}
