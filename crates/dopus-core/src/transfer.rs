//! File transfers, sans-IO: what to ask whom, what is verified and durable, where a transfer
//! stands and what the UI hears, what a provider may serve, and safe file names
//! (docs/files.md).
//!
//! Nothing here reads a clock, draws randomness, touches a file or a socket. The I/O half lives
//! in `dopus-files` (encryption, outboards, encoding and verifying ranges, the blob directory);
//! the runtime connects the two and the data channels.
//!
//! Protocol flow, for one download:
//! - the runtime creates a [`Download`] from the stored transfer (its verified groups are the
//!   resume point) and tells it about holders as links come up ([`Download::holder_ready`]
//!   with the groups each advertised in a `Have` frame);
//! - [`Download::poll_output`] yields [`DownloadOutput::Request`]s: the runtime sends each as a
//!   `Get` over that holder's [`Link`] and feeds the answer's bytes to the verifying decoder in
//!   `dopus-files`; verified groups come back in with [`Download::on_verified`], a group that
//!   does not verify with [`Download::on_bad_data`] (the holder is dropped at that group);
//! - [`DownloadOutput::Commit`] asks the runtime to sync the blob files and then apply the
//!   changes (the resume point moves); [`DownloadOutput::Event`]s carry state and progress at
//!   most 4 times a second; [`DownloadOutput::Finalize`] asks for the plaintext check, whose
//!   result comes back with [`Download::finalized`].
//!
//! For serving, a [`Link`] per blob channel answers `Ask` and `Get` frames for blobs the
//! [`Offers`] say were announced to that peer, and hands the accepted requests to the I/O half.

mod download;
mod link;
mod names;
mod planner;
mod progress;
mod resume;
mod upload;

pub use crate::store::{TransferReason, TransferState};
pub use dopus_proto::transfer::GroupSet;
pub use download::{Download, DownloadConfig, DownloadOutput, TransferEvent};
pub use link::{Link, LinkConfig, LinkEvent, LinkOutput, Offer, Offers, ServeJob, TransferRef};
pub use names::{FALLBACK_NAME, MAX_SAFE_NAME_BYTES, numbered_name, safe_file_name};
pub use planner::{
    DropReason, HolderId, PlannedRequest, Planner, PlannerConfig, RequestKey, Withdrawn,
};
pub use progress::{MIN_EVENT_INTERVAL_MS, Progress, ProgressMeter};
pub use resume::{CommitPolicy, ResumeBook};
pub use upload::{Upload, UploadOutput};

/// The longest a channel blob's holder is remembered after its `file_have` (30 days): the
/// runtime prunes older rows ([`crate::store::Change::PruneBlobHolders`]). A row goes sooner
/// when no download of its blob is left, or when that holder sends a bad chunk group.
pub const BLOB_HOLDER_MAX_AGE_MS: u64 = 30 * 24 * 60 * 60 * 1000;
