//! File transfers (docs/files.md): the list, one transfer, progress events, and the requests.

use super::{ConversationId, MessageId, Timestamp};
use dopus_core::store::{self, FileTransfer};
use dopus_core::transfer::TransferEvent;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Which way a file goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum TransferDirection {
    /// We receive it.
    Incoming,
    /// We send it.
    Outgoing,
}

/// Where a transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Outgoing: hashing and encrypting the file before it is announced.
    Preparing,
    /// Waiting for the peer (offline, or no source yet) or for its turn.
    Queued,
    /// Setting up the blob channel.
    Connecting,
    /// Bytes are moving.
    Transferring,
    /// Stopped by the user or by a full disk (see the reason).
    Paused,
    /// Every chunk group is in; checking the plaintext hash.
    Verifying,
    /// Complete (incoming: verified and kept encrypted until saved; outgoing: the peer has
    /// it).
    Done,
    /// Ended without the file (see the reason).
    Failed,
    /// Cancelled by either side.
    Cancelled,
}

impl From<store::TransferState> for TransferState {
    fn from(s: store::TransferState) -> Self {
        use store::TransferState as S;
        match s {
            S::Preparing => Self::Preparing,
            S::Queued => Self::Queued,
            S::Connecting => Self::Connecting,
            S::Transferring => Self::Transferring,
            S::Paused => Self::Paused,
            S::Verifying => Self::Verifying,
            S::Done => Self::Done,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
        }
    }
}

/// Why a transfer is paused, waiting or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum TransferReason {
    /// The user asked.
    User,
    /// The disk filled up during the transfer (nothing was corrupted).
    DiskFull,
    /// The file does not fit the free disk space (refused before anything was written).
    NoSpace,
    /// The sender's file changed after it was announced.
    SourceChanged,
    /// The decrypted bytes did not match the announced hash.
    HashMismatch,
    /// Nobody who holds it is reachable.
    NoSources,
    /// The sender withdrew it.
    Revoked,
    /// A disk error.
    Io,
    /// Preparing: the file to send is gone.
    SourceMissing,
    /// Preparing: the file to send cannot be read (permissions, not a regular file).
    Unreadable,
    /// Preparing: the file was ready but could not be announced (the contact or channel can
    /// no longer take it).
    NotSent,
}

impl From<store::TransferReason> for TransferReason {
    fn from(r: store::TransferReason) -> Self {
        use store::TransferReason as R;
        match r {
            R::User => Self::User,
            R::DiskFull => Self::DiskFull,
            R::NoSpace => Self::NoSpace,
            R::SourceChanged => Self::SourceChanged,
            R::HashMismatch => Self::HashMismatch,
            R::NoSources => Self::NoSources,
            R::Revoked => Self::Revoked,
            R::Io => Self::Io,
        }
    }
}

/// One transfer (`GET /transfers`, `GET /transfers/{id}`, and the answer of sends and
/// actions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Transfer {
    /// Its id (the announcing message's id).
    pub id: String,
    /// Its conversation.
    pub conversation: ConversationId,
    /// The message that announced it.
    pub message: Option<MessageId>,
    /// Which way.
    pub direction: TransferDirection,
    /// The file name as the sender gave it (shown; made safe before it touches a disk).
    pub name: String,
    /// The MIME type the sender gave.
    pub mime: String,
    /// Size in bytes.
    #[ts(type = "number")]
    pub size: u64,
    /// The content id (`dblob1…`).
    pub blob: String,
    /// Where it stands.
    pub state: TransferState,
    /// Why it is paused, waiting or ended.
    pub reason: Option<TransferReason>,
    /// Incoming: bytes verified and durable (the resume point; live progress comes as
    /// `transfer_progress` events). Outgoing: 0 until done, then the size.
    #[ts(type = "number")]
    pub bytes: u64,
    /// Incoming: where the user saved it, once saved.
    pub saved_path: Option<String>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// The latest live progress (rate, ETA, sources) since the node started, if any moved.
    pub progress: Option<TransferProgress>,
    /// An image's size as the sender announced it (to reserve its room before it arrives).
    pub dimensions: Option<FileDimensions>,
    /// The sender's thumbnail as a `data:` URL (JPEG, PNG or WebP, at most 16 KiB), shown
    /// before the file arrives.
    pub thumbnail: Option<String>,
}

/// Width and height in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct FileDimensions {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Transfer {
    /// A stored transfer.
    pub fn from_record(t: &FileTransfer) -> Self {
        let bytes = match t.direction {
            store::TransferDirection::Incoming => t.verified_bytes(),
            store::TransferDirection::Outgoing if t.state == store::TransferState::Done => {
                t.manifest.size
            }
            store::TransferDirection::Outgoing => 0,
        };
        Self {
            id: t.id.to_string(),
            conversation: ConversationId::from(&t.conversation),
            message: t.message.as_ref().map(MessageId::from),
            direction: match t.direction {
                store::TransferDirection::Incoming => TransferDirection::Incoming,
                store::TransferDirection::Outgoing => TransferDirection::Outgoing,
            },
            name: t.manifest.name.clone(),
            mime: t.manifest.mime.clone(),
            size: t.manifest.size,
            blob: t.manifest.blob.to_string(),
            state: t.state.into(),
            reason: t.reason.map(Into::into),
            bytes,
            saved_path: t.saved_path.clone(),
            created_at: t.created_at.into(),
            updated_at: t.updated_at.into(),
            progress: None,
            dimensions: t.manifest.dimensions.map(|d| FileDimensions {
                width: d.width,
                height: d.height,
            }),
            thumbnail: t.manifest.thumbnail.as_ref().map(|th| {
                use base64::Engine as _;
                format!(
                    "data:{};base64,{}",
                    th.kind.mime(),
                    base64::engine::general_purpose::STANDARD.encode(&th.data.0)
                )
            }),
        }
    }
}

/// `GET /transfers`: every transfer, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Transfers {
    /// The transfers.
    pub transfers: Vec<Transfer>,
}

/// Live progress of one transfer (the `transfer_progress` event): at most 4 a second per
/// transfer, and at once on a state change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct TransferProgress {
    /// Which transfer.
    pub id: String,
    /// Where it stands.
    pub state: TransferState,
    /// Why it is paused, waiting or ended.
    pub reason: Option<TransferReason>,
    /// Bytes done (verified, for a download).
    #[ts(type = "number")]
    pub bytes: u64,
    /// Bytes in all.
    #[ts(type = "number")]
    pub total: u64,
    /// Smoothed bytes per second (0 until measured).
    #[ts(type = "number")]
    pub rate: u64,
    /// Seconds left at the current rate; `null` while unknown.
    #[ts(type = "number | null")]
    pub eta_secs: Option<u64>,
    /// Peers being asked (download) or served (upload).
    #[ts(type = "number")]
    pub sources: u64,
    /// Holders this download stopped asking, and why (a holder whose chunk group did not
    /// verify is dropped at that group).
    #[serde(default)]
    pub dropped: Vec<DroppedSource>,
    /// Download: answer bytes received over the wire since the node started (data and
    /// proofs); after a restart, only what the resumed download fetched.
    #[serde(default)]
    #[ts(type = "number")]
    pub wire_bytes: u64,
}

/// A holder a download dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct DroppedSource {
    /// Who.
    pub user_id: String,
    /// Why: `bad_data` (a chunk group that did not verify), `malformed`, `refused`,
    /// `stalled`.
    pub reason: String,
    /// For `bad_data`: the first bad chunk group (16 KiB each).
    #[ts(type = "number | null")]
    pub group: Option<u64>,
}

impl DroppedSource {
    /// `user` dropped for `why`.
    pub fn new(user: dopus_types::UserId, why: dopus_core::transfer::DropReason) -> Self {
        use dopus_core::transfer::DropReason;
        let (reason, group) = match why {
            DropReason::BadData { group } => ("bad_data", Some(group)),
            DropReason::Malformed => ("malformed", None),
            DropReason::Refused(_) => ("refused", None),
            DropReason::Stalled => ("stalled", None),
        };
        Self {
            user_id: user.to_string(),
            reason: reason.to_owned(),
            group,
        }
    }
}

impl TransferProgress {
    /// A download's event.
    pub fn from_event(e: &TransferEvent) -> Self {
        Self {
            id: e.id.to_string(),
            state: e.state.into(),
            reason: e.reason.map(Into::into),
            bytes: e.progress.bytes,
            total: e.progress.total,
            rate: e.progress.rate,
            eta_secs: e.progress.eta_secs,
            sources: e.sources as u64,
            dropped: Vec::new(),
            wire_bytes: 0,
        }
    }
}

/// `POST /conversations/{id}/files`: a file on the node's own machine to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct SendFile {
    /// An absolute path on the node's machine (the node reads it; the UI never uploads
    /// bytes).
    pub path: String,
    /// The MIME type; guessed from the name when left out.
    #[serde(default)]
    #[ts(optional)]
    pub mime: Option<String>,
}

/// `POST /transfers/{id}/save`: decrypt a received file into a directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct SaveFile {
    /// A directory on the node's machine; the file keeps its (made safe) name, numbered if
    /// taken.
    pub dir: String,
}

/// `POST /transfers/{id}/{action}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum TransferAction {
    /// Stop for now.
    Pause,
    /// Go on.
    Resume,
    /// Give up (the other side hears of it).
    Cancel,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_progress_snapshot() {
        let p = TransferProgress {
            id: "0190c2a4-0000-7000-8000-000000000001".into(),
            state: TransferState::Transferring,
            reason: None,
            bytes: 10 << 20,
            total: 40 << 20,
            rate: 5 << 20,
            eta_secs: Some(6),
            sources: 2,
            dropped: vec![DroppedSource {
                user_id: "dopus1example".into(),
                reason: "bad_data".into(),
                group: Some(9),
            }],
            wire_bytes: 10_526_720,
        };
        insta::assert_json_snapshot!(p);
    }

    #[test]
    fn transfer_snapshot() {
        let t = Transfer {
            id: "0190c2a4-0000-7000-8000-000000000001".into(),
            conversation: ConversationId("dopus1example".into()),
            message: Some(MessageId("0190c2a4-0000-7000-8000-000000000001".into())),
            direction: TransferDirection::Incoming,
            name: "holiday.jpg".into(),
            mime: "image/jpeg".into(),
            size: 81_927,
            blob: "dblob1example".into(),
            state: TransferState::Paused,
            reason: Some(TransferReason::User),
            bytes: 16_384,
            saved_path: None,
            created_at: Timestamp(1_700_000_000_000),
            updated_at: Timestamp(1_700_000_000_500),
            progress: None,
            dimensions: Some(FileDimensions {
                width: 4032,
                height: 3024,
            }),
            thumbnail: None,
        };
        insta::assert_json_snapshot!(t);
        let body: SendFile = serde_json::from_str(r#"{"path":"/tmp/a.bin"}"#).unwrap();
        insta::assert_json_snapshot!("send_file_request", body);
    }
}
