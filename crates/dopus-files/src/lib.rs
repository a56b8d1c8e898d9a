#![doc = include_str!("../README.md")]

pub mod blobs;
pub mod cipher;
pub mod decode;
pub mod driver;
pub mod outboard;
pub mod prepare;
pub mod save;
pub mod serve;
pub mod source;
pub mod space;
pub mod transport;

pub use blobs::{BlobData, BlobDir, Fetch, FetchError, Received, is_disk_full};
pub use cipher::{CipherError, FileCipher};
pub use decode::{DecodeError, RangeDecoder};
pub use driver::{BlobNode, Library, NodeOutput, NodeStats, Shelf};
pub use outboard::{BLOCK_SIZE, OutboardFile};
pub use prepare::{PrepareError, Prepared, prepare, prepare_with_progress};
pub use save::{PlainReader, SaveError, save_blob};
pub use serve::{ServeError, encode_answer};
pub use source::{EncryptedSource, SourceStamp, stamp, stamp_path};
pub use space::{NoSpace, SpaceError, available_space, check_download_space, check_space};
pub use transport::{BlobTransport, Closed, MemoryPipe, PipeWaiter};
