//! The records the store keeps, in domain terms. Identifiers are newtypes so a message id can
//! never be passed where an envelope id is meant; enums have one stable text form (`as_str`)
//! that is what the SQLCipher store writes, so an unknown string read back is detected as
//! corruption instead of being guessed.

use dopus_proto::space::OpId;
use dopus_proto::transfer::{CHUNK_GROUP_BYTES, FileManifest, GroupSet, groups_for_size};
pub use dopus_types::ChannelId;
use dopus_types::{
    BlobHash, Curve25519Key, DeviceId, DeviceKeys, Signature, SpaceId, Timestamp, UserId,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// A message, chosen by its sender (UUIDv7, so ids sort roughly by creation time). The same
    /// id on every device that holds the message is what makes inserts idempotent.
    MessageId
);
uuid_id!(
    /// One envelope in the outbox or in the inbound dedupe set. A message's envelope may reuse
    /// the message id (`EnvelopeId(message_id.0)`); receipts and other control envelopes get
    /// their own.
    EnvelopeId
);
uuid_id!(
    /// A file transfer.
    TransferId
);

/// The local arrival order of messages: assigned by the store on insert, strictly increasing
/// across the whole store, never reused. It orders the conversation list, unread counts and
/// search, and it is the history cursor (a page is ordered by `(sent_at, id)`, and a `Seq`
/// names the cursor message; see [`Store::messages_before`](super::Store::messages_before)).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

/// Where a message lives.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum ConversationId {
    /// The 1:1 conversation with this user (the same for every device of theirs).
    Direct(UserId),
    /// A space's text channel.
    Channel(ChannelId),
}

/// Defines a fieldless enum with one stable lowercase text form, used on disk and in logs.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable text form.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant whose text form this is, if any.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Where a contact relationship stands.
    ContactState {
        /// Both sides agreed; messages flow.
        Accepted = "accepted",
        /// We asked; they have not answered.
        OutgoingRequest = "outgoing_request",
        /// They asked; we have not answered.
        IncomingRequest = "incoming_request",
        /// We declined their request.
        Declined = "declined",
    }
);

text_enum!(
    /// What a message is. Edits, deletes, reactions and receipts are not messages: they change one.
    MessageKind {
        /// Text typed by a person.
        Text = "text",
        /// A file offer; the body is the file name and the transfer holds the rest.
        File = "file",
        /// A line written by the app itself (a call ended, a member joined).
        System = "system",
    }
);

text_enum!(
    /// How far an outgoing message has got. Moves forward only, see [`DeliveryState::can_become`].
    DeliveryState {
        /// In the outbox, not yet handed to the peer or the mailbox.
        Pending = "pending",
        /// Handed to the peer's data channel or the server mailbox.
        Sent = "sent",
        /// The peer's device acknowledged it.
        Delivered = "delivered",
        /// The peer read it (only with read receipts on).
        Read = "read",
        /// Gave up sending; the user may retry.
        Failed = "failed",
    }
);

impl DeliveryState {
    /// Whether a message in state `self` may move to `next`.
    ///
    /// Progress is monotonic (`pending < sent < delivered < read`) because acks and receipts
    /// arrive out of order and a late "sent" must not undo "read". `failed` is reachable only
    /// from `pending` (a message the peer already has cannot fail), and a failed message may be
    /// retried (back to `pending`) or be acknowledged late.
    pub fn can_become(self, next: DeliveryState) -> bool {
        use DeliveryState::*;
        match (self, next) {
            (Failed, Failed) => false,
            (Failed, _) => true,
            (Pending, Failed) => true,
            (_, Failed) => false,
            (current, next) => next.rank() > current.rank(),
        }
    }

    fn rank(self) -> u8 {
        match self {
            DeliveryState::Pending | DeliveryState::Failed => 0,
            DeliveryState::Sent => 1,
            DeliveryState::Delivered => 2,
            DeliveryState::Read => 3,
        }
    }
}

text_enum!(
    /// Which way a file travels.
    TransferDirection {
        /// We receive it.
        Incoming = "incoming",
        /// We send it.
        Outgoing = "outgoing",
    }
);

text_enum!(
    /// Where a file transfer stands (docs/files.md, "States"). The runtime persists every
    /// change; on start it resumes the unfinished ones, and a transfer stored as connecting,
    /// transferring or verifying starts over from queued (or verifying) with what it has.
    TransferState {
        /// Outgoing: hashing and encrypting the file before it can be announced.
        Preparing = "preparing",
        /// Waiting: for the peer or a holder to be online, or for its turn.
        Queued = "queued",
        /// A connection to a holder is being made.
        Connecting = "connecting",
        /// Bytes are moving.
        Transferring = "transferring",
        /// Stopped for now, with a reason; resumable.
        Paused = "paused",
        /// Every chunk group arrived verified; checking the plaintext hash.
        Verifying = "verifying",
        /// Complete and checked (incoming), or received by the peer (outgoing).
        Done = "done",
        /// Stopped for good, with a reason.
        Failed = "failed",
        /// Stopped for good by either side.
        Cancelled = "cancelled",
    }
);

impl TransferState {
    /// Whether the transfer has ended (done, failed or cancelled).
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            TransferState::Done | TransferState::Failed | TransferState::Cancelled
        )
    }
}

text_enum!(
    /// Why a transfer is paused, failed or waiting.
    TransferReason {
        /// The user paused or cancelled it.
        User = "user",
        /// The disk filled up while writing; resumes when there is room.
        DiskFull = "disk_full",
        /// The announced size is larger than the free space; refused before anything was written.
        NoSpace = "no_space",
        /// The sender's file changed after it was announced; it will not serve other bytes.
        SourceChanged = "source_changed",
        /// Every chunk group verified but the plaintext did not match the announced hash.
        HashMismatch = "hash_mismatch",
        /// Every holder asked so far failed (sent bad data, refused or stalled).
        NoSources = "no_sources",
        /// The sender withdrew the file.
        Revoked = "revoked",
        /// Reading or writing local files failed.
        Io = "io",
    }
);

/// An encrypted vodozemac pickle (already encrypted with the pickle key before it reaches the
/// store). Still kept out of `Debug`: it is key material, only its size is printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pickle(String);

impl Pickle {
    /// Wraps an encrypted pickle string.
    pub fn new(encrypted: impl Into<String>) -> Self {
        Self(encrypted.into())
    }

    /// The encrypted pickle string, for `from_encrypted`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pickle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pickle(<{} bytes>)", self.0.len())
    }
}

/// This device's own identity and Olm account.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AccountRecord {
    /// Our user ID (the identity key).
    pub user_id: UserId,
    /// The identity signing key, as an encrypted pickle.
    pub identity_pickle: Pickle,
    /// This device's id.
    pub device_id: DeviceId,
    /// This device's public keys (also inside the account pickle; here so they can be shown
    /// without unpickling).
    pub device_keys: DeviceKeys,
    /// The vodozemac Olm account, as an encrypted pickle.
    pub account_pickle: Pickle,
    /// The device certificate signed by the identity key, as its JSON wire form.
    pub certificate_json: String,
    /// The name we show to others.
    pub display_name: String,
    /// When the identity was created.
    pub created_at: Timestamp,
}

/// A device of another user that we have verified a certificate for. Binding an Olm sender's
/// Curve25519 key to a device (and so to a user) goes through this table.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerDevice {
    /// The user the device belongs to.
    pub user_id: UserId,
    /// The device's id.
    pub device_id: DeviceId,
    /// The device's public keys.
    pub keys: DeviceKeys,
    /// The certificate that binds the keys to the user, as its JSON wire form.
    pub certificate_json: String,
    /// When we first saw the device.
    pub first_seen: Timestamp,
    /// When the record last changed.
    pub updated_at: Timestamp,
}

/// Someone in our contact list, or someone who asked to be.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Contact {
    /// Their user ID.
    pub user_id: UserId,
    /// The name we show for them (ours, or the one they sent), if any.
    pub display_name: Option<String>,
    /// We compared safety numbers or emoji with them.
    pub verified: bool,
    /// We refuse everything from them.
    pub blocked: bool,
    /// Where the relationship stands.
    pub state: ContactState,
    /// The short note that came with a contact request.
    pub request_note: Option<String>,
    /// When the record was created.
    pub created_at: Timestamp,
    /// When the record last changed.
    pub updated_at: Timestamp,
}

/// A conversation as stored: who it is with and how far we have read.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Conversation {
    /// Which conversation.
    pub id: ConversationId,
    /// When it was first created locally.
    pub created_at: Timestamp,
    /// The newest message we have read; `None` if none.
    pub last_read: Option<Seq>,
}

/// One line of the conversation list.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConversationSummary {
    /// The conversation.
    pub conversation: Conversation,
    /// Its newest message, if any.
    pub last_message: Option<Message>,
    /// Messages from others after `last_read` that are not deleted.
    pub unread: u64,
}

/// A message to insert. The store assigns its [`Seq`].
#[derive(Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The sender's id for it.
    pub id: MessageId,
    /// Where it goes.
    pub conversation: ConversationId,
    /// Who wrote it.
    pub sender: UserId,
    /// What it is.
    pub kind: MessageKind,
    /// Its text.
    pub body: String,
    /// The message it answers, if any.
    pub reply_to: Option<MessageId>,
    /// The link preview its sender attached (texts only).
    pub preview: Option<Box<dopus_proto::content::LinkPreview>>,
    /// The sender's clock when sent (informative only; ordering uses `Seq`).
    pub sent_at: Timestamp,
    /// Our clock when we stored it.
    pub received_at: Timestamp,
    /// The initial delivery state (`Pending` for our own, typically `Delivered` for received).
    pub delivery: DeliveryState,
}

impl fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewMessage")
            .field("id", &self.id)
            .field("conversation", &self.conversation)
            .field("sender", &self.sender)
            .field("kind", &self.kind)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("reply_to", &self.reply_to)
            .field("sent_at", &self.sent_at)
            .field("received_at", &self.received_at)
            .field("delivery", &self.delivery)
            .finish()
    }
}

/// A stored message with edits and deletes applied.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Local display order and pagination cursor.
    pub seq: Seq,
    /// The sender's id for it.
    pub id: MessageId,
    /// Where it lives.
    pub conversation: ConversationId,
    /// Who wrote it.
    pub sender: UserId,
    /// What it is.
    pub kind: MessageKind,
    /// Its current text; empty once deleted.
    pub body: String,
    /// The message it answers, if any.
    pub reply_to: Option<MessageId>,
    /// The link preview its sender attached (texts only; gone once deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Box<dopus_proto::content::LinkPreview>>,
    /// When the newest applied edit was made (sender's clock).
    pub edited_at: Option<Timestamp>,
    /// Deleted by its sender: the body is gone, the row stays as a tombstone.
    pub deleted: bool,
    /// The sender's clock when sent.
    pub sent_at: Timestamp,
    /// Our clock when we stored it.
    pub received_at: Timestamp,
    /// How far delivery has got.
    pub delivery: DeliveryState,
}

impl NewMessage {
    /// The message as the store holds it right after inserting it at `seq` (not edited, not
    /// deleted, no reactions yet).
    pub fn stored(&self, seq: Seq) -> Message {
        Message {
            seq,
            id: self.id,
            conversation: self.conversation,
            sender: self.sender,
            kind: self.kind,
            body: self.body.clone(),
            reply_to: self.reply_to,
            preview: self.preview.clone(),
            edited_at: None,
            deleted: false,
            sent_at: self.sent_at,
            received_at: self.received_at,
            delivery: self.delivery,
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("seq", &self.seq)
            .field("id", &self.id)
            .field("conversation", &self.conversation)
            .field("sender", &self.sender)
            .field("kind", &self.kind)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("reply_to", &self.reply_to)
            .field("edited_at", &self.edited_at)
            .field("deleted", &self.deleted)
            .field("sent_at", &self.sent_at)
            .field("received_at", &self.received_at)
            .field("delivery", &self.delivery)
            .finish()
    }
}

/// Marks the start of a matched term inside [`SearchHit::snippet`]. Control characters rather
/// than markup so a UI can highlight without ever interpreting message text as HTML.
pub const SNIPPET_START: char = '\u{2}';
/// Marks the end of a matched term inside [`SearchHit::snippet`].
pub const SNIPPET_END: char = '\u{3}';

/// A full-text search request.
#[derive(Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// What the user typed. Split into words (see `search_terms`); every word must match a
    /// whole word of the message, the last one also as a prefix if it has 3 or more letters.
    /// Operators and quotes have no special meaning.
    pub text: String,
    /// Only this conversation, if set.
    pub conversation: Option<ConversationId>,
    /// Only these conversations, if set (an empty list matches nothing): the channels of a
    /// space the user may view.
    pub within: Option<Vec<ConversationId>>,
    /// Only messages older than this cursor (for paging), if set.
    pub before: Option<Seq>,
    /// At most this many hits.
    pub limit: usize,
}

impl fmt::Debug for SearchQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchQuery")
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .field("conversation", &self.conversation)
            .field("within", &self.within.as_ref().map(Vec::len))
            .field("before", &self.before)
            .field("limit", &self.limit)
            .finish()
    }
}

/// One search result. Hits come newest first: in a chat the most recent match is almost always
/// the one wanted, and it keeps search time bounded on a large history.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SearchHit {
    /// The matching message.
    pub message: Message,
    /// An excerpt of the body with matches between [`SNIPPET_START`] and [`SNIPPET_END`].
    pub snippet: String,
}

/// The reactions with one emoji on one message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ReactionSummary {
    /// The emoji.
    pub emoji: String,
    /// How many users reacted with it.
    pub count: u64,
    /// Who, in the order they reacted.
    pub users: Vec<UserId>,
}

/// One pickled Olm session with a peer device. A device may have several; the most recently
/// used one is tried first for decryption and used for encryption.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OlmSessionRecord {
    /// The peer's user.
    pub peer_user: UserId,
    /// The peer's device.
    pub peer_device: DeviceId,
    /// The peer device's Curve25519 identity key.
    pub peer_curve25519: Curve25519Key,
    /// vodozemac's session id (unique).
    pub session_id: String,
    /// The session, as an encrypted pickle.
    pub pickle: Pickle,
    /// When the session was created.
    pub created_at: Timestamp,
    /// When it last encrypted or decrypted.
    pub last_used_at: Timestamp,
}

/// A Megolm session for a space channel that we can decrypt with: received from its owner
/// (or forwarded, or in a history bundle), or our own outbound session's inbound half.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MegolmInboundRecord {
    /// The space.
    pub space: SpaceId,
    /// The channel it encrypts.
    pub channel: ChannelId,
    /// vodozemac's session id (unique; channel messages name it).
    pub session_id: String,
    /// The user whose device owns (sends with) the session.
    pub sender_user: UserId,
    /// That device: messages in this session from any other device are refused.
    pub sender_device: DeviceId,
    /// The owner device's certificate, as its JSON wire form (to forward the session with
    /// proof of whose it is).
    pub sender_certificate_json: String,
    /// The owner device's signature announcing the session (see
    /// `dopus_proto::space::session_announcement_bytes`).
    pub announcement: Signature,
    /// Whether the owner lets the session be given to members who join later.
    pub shared_history: bool,
    /// Whether it came from someone other than its owner (a forward or a history bundle).
    pub forwarded: bool,
    /// The first message index it can decrypt.
    pub first_index: u32,
    /// The session, as an encrypted pickle.
    pub pickle: Pickle,
    /// When we received it.
    pub created_at: Timestamp,
}

/// Our current outbound Megolm session for a channel.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MegolmOutboundRecord {
    /// The space.
    pub space: SpaceId,
    /// The channel it encrypts.
    pub channel: ChannelId,
    /// vodozemac's session id.
    pub session_id: String,
    /// The session, as an encrypted pickle.
    pub pickle: Pickle,
    /// When it was created (for rotation by age).
    pub created_at: Timestamp,
    /// How many messages it encrypted (for rotation by count).
    pub message_count: u64,
    /// Whether it was announced as shareable with later members.
    pub shared_history: bool,
    /// The devices its key was sent to, ascending. When one of them may no longer read the
    /// channel, the session is rotated.
    pub shared_with: Vec<(UserId, DeviceId)>,
}

/// A channel message that could not be decrypted yet ("waiting for keys"): kept until the
/// session's key arrives, then decrypted and removed.
#[derive(Clone, PartialEq, Eq)]
pub struct MegolmWaitingRecord {
    /// The session it needs.
    pub session_id: String,
    /// Its message index in that session.
    pub index: u32,
    /// The device that sent it (the session's claimed owner).
    pub sender_user: UserId,
    /// That device.
    pub sender_device: DeviceId,
    /// The channel message as received (JSON wire form).
    pub message: Vec<u8>,
    /// When it arrived.
    pub received_at: Timestamp,
    /// The space the message came for (as the outer, Olm-encrypted content named it; `None`
    /// for a message kept before schema 8, which then waits for its key without asking).
    pub space: Option<SpaceId>,
    /// The channel the message came for (the same).
    pub channel: Option<ChannelId>,
    /// Where the wait stands (shown by the API as the placeholder's state).
    pub state: MegolmWaitState,
}

/// The Megolm ciphertext of a channel message sent in a session announced as shareable, kept
/// for members who join later (docs/spaces.md, "History for new members").
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelCiphertextRecord {
    /// The space.
    pub space: SpaceId,
    /// The channel.
    pub channel: ChannelId,
    /// The session that encrypted it.
    pub session_id: String,
    /// Its index in that session.
    pub index: u32,
    /// The channel message as its sender sent it (JSON wire form).
    pub message: Vec<u8>,
    /// When it arrived (or was sent, for our own).
    pub received_at: Timestamp,
}

impl fmt::Debug for ChannelCiphertextRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelCiphertextRecord")
            .field("channel", &self.channel)
            .field("session_id", &self.session_id)
            .field("index", &self.index)
            .field("message", &format_args!("<{} bytes>", self.message.len()))
            .finish_non_exhaustive()
    }
}

/// Where a message's wait for its key stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MegolmWaitState {
    /// The key is asked for (and asked again with backoff, also after a restart).
    Waiting,
    /// The session's owner refused, with its reason.
    Withheld(dopus_proto::space::WithheldCode),
    /// Nobody answered the requests; the message is kept in case the key still comes.
    GaveUp,
}

impl MegolmWaitState {
    /// The stable text form of the state (`waiting_for_keys`, `withheld`, `gave_up`).
    pub fn as_str(self) -> &'static str {
        match self {
            MegolmWaitState::Waiting => "waiting_for_keys",
            MegolmWaitState::Withheld(_) => "withheld",
            MegolmWaitState::GaveUp => "gave_up",
        }
    }

    /// The stable text form of a withheld reason (`None` unless withheld).
    pub fn reason_str(self) -> Option<&'static str> {
        use dopus_proto::space::WithheldCode;
        match self {
            MegolmWaitState::Withheld(WithheldCode::Unauthorized) => Some("unauthorized"),
            MegolmWaitState::Withheld(WithheldCode::Unavailable) => Some("unavailable"),
            MegolmWaitState::Withheld(WithheldCode::HistoryNotShared) => Some("history_not_shared"),
            _ => None,
        }
    }

    /// Reads the text forms back; `None` for a string no version wrote.
    pub fn parse(state: &str, reason: Option<&str>) -> Option<Self> {
        use dopus_proto::space::WithheldCode;
        Some(match (state, reason) {
            ("waiting_for_keys", None) => MegolmWaitState::Waiting,
            ("gave_up", None) => MegolmWaitState::GaveUp,
            ("withheld", Some("unauthorized")) => {
                MegolmWaitState::Withheld(WithheldCode::Unauthorized)
            }
            ("withheld", Some("unavailable")) => {
                MegolmWaitState::Withheld(WithheldCode::Unavailable)
            }
            ("withheld", Some("history_not_shared")) => {
                MegolmWaitState::Withheld(WithheldCode::HistoryNotShared)
            }
            _ => return None,
        })
    }
}

impl fmt::Debug for MegolmWaitingRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MegolmWaitingRecord")
            .field("session_id", &self.session_id)
            .field("index", &self.index)
            .field("sender_user", &self.sender_user)
            .field("sender_device", &self.sender_device)
            .field("message", &format_args!("<{} bytes>", self.message.len()))
            .field("received_at", &self.received_at)
            .field("space", &self.space)
            .field("channel", &self.channel)
            .field("state", &self.state)
            .finish()
    }
}

/// One op of a space's control log, as stored: its JSON wire form (verified when it was first
/// inserted) and what loading needs.
#[derive(Clone, PartialEq, Eq)]
pub struct SpaceOpRecord {
    /// The space.
    pub space: SpaceId,
    /// The op's id.
    pub id: OpId,
    /// The op's depth (ops load in depth order).
    pub depth: u64,
    /// The op's JSON (`SpaceOp::to_json`).
    pub json: Vec<u8>,
    /// When we received it.
    pub received_at: Timestamp,
}

impl fmt::Debug for SpaceOpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The JSON holds names (of the space, channels, roles): never printed.
        f.debug_struct("SpaceOpRecord")
            .field("space", &self.space)
            .field("id", &self.id)
            .field("depth", &self.depth)
            .field("json", &format_args!("<{} bytes>", self.json.len()))
            .field("received_at", &self.received_at)
            .finish()
    }
}

/// An encrypted envelope waiting to be delivered to a peer.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The envelope's id (the receiver deduplicates on it).
    pub id: EnvelopeId,
    /// Who it is for.
    pub peer_user: UserId,
    /// Which of their devices, if it is device-specific.
    pub peer_device: Option<DeviceId>,
    /// The encoded, encrypted envelope.
    pub bytes: Vec<u8>,
    /// When it was queued.
    pub created_at: Timestamp,
    /// How many sends were tried.
    pub attempts: u32,
    /// Not before this time.
    pub next_attempt_at: Timestamp,
}

/// A reliable content to deliver to an audience: said once, delivered to each recipient until
/// that recipient acknowledges it ([`crate::store::Change::OutboxAck`]).
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// The envelope id (the receiver deduplicates on it; receipts name it).
    pub id: EnvelopeId,
    /// What to deliver, as the machine queued it (a content to seal per device, or an
    /// already encrypted group message).
    pub bytes: Vec<u8>,
    /// When it was queued.
    pub created_at: Timestamp,
    /// Who it is for; a recipient already queued for this id is left as it is.
    pub recipients: Vec<OutboxRecipient>,
    /// When the first attempt is due.
    pub next_attempt_at: Timestamp,
}

impl fmt::Debug for OutboxItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxItem")
            .field("id", &self.id)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("created_at", &self.created_at)
            .field("recipients", &self.recipients)
            .field("next_attempt_at", &self.next_attempt_at)
            .finish()
    }
}

/// One recipient of an [`OutboxItem`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OutboxRecipient {
    /// The user.
    pub user: UserId,
    /// Which of their devices, if the item is device-specific (otherwise every device).
    pub device: Option<DeviceId>,
}

impl fmt::Debug for OutboxEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxEntry")
            .field("id", &self.id)
            .field("peer_user", &self.peer_user)
            .field("peer_device", &self.peer_device)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("created_at", &self.created_at)
            .field("attempts", &self.attempts)
            .field("next_attempt_at", &self.next_attempt_at)
            .finish()
    }
}

/// The local file behind an outgoing transfer, as it was when announced: serving checks it has
/// not changed (size, modification time, inode) before it reads a byte.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Where the file is (never logged).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, in nanoseconds since the epoch.
    pub modified_ns: i64,
    /// Its inode number (0 where there is none).
    pub inode: u64,
}

impl fmt::Debug for SourceFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceFile")
            .field("path", &"<redacted>")
            .field("size", &self.size)
            .field("modified_ns", &self.modified_ns)
            .field("inode", &self.inode)
            .finish()
    }
}

/// A file being sent or received (docs/files.md). The manifest holds the file's key: the store
/// is encrypted at rest, and `Debug` prints neither key, name nor paths.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FileTransfer {
    /// Which transfer.
    pub id: TransferId,
    /// The conversation it belongs to.
    pub conversation: ConversationId,
    /// The chat message that announced it, once known.
    pub message: Option<MessageId>,
    /// Which way.
    pub direction: TransferDirection,
    /// What was announced: blob id, size, key, nonce, name, type, plaintext hash, preview.
    pub manifest: FileManifest,
    /// Where it stands.
    pub state: TransferState,
    /// Why it is paused, failed or waiting.
    pub reason: Option<TransferReason>,
    /// Incoming: the chunk groups verified and durable (the resume point). Outgoing: empty.
    pub verified: GroupSet,
    /// Outgoing: the local file it is read from.
    pub source: Option<SourceFile>,
    /// Incoming: where the user saved the decrypted file, once saved.
    pub saved_path: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl FileTransfer {
    /// The blob it moves.
    pub fn blob(&self) -> &BlobHash {
        &self.manifest.blob
    }

    /// Bytes verified so far (the last group may be short).
    pub fn verified_bytes(&self) -> u64 {
        verified_bytes(&self.verified, self.manifest.size)
    }
}

/// Bytes covered by `groups` in a blob of `size` bytes (the last group may be short).
pub fn verified_bytes(groups: &GroupSet, size: u64) -> u64 {
    let full = groups.count().saturating_mul(CHUNK_GROUP_BYTES);
    let last = groups_for_size(size);
    if last > 0 && groups.contains(last - 1) {
        full - (last * CHUNK_GROUP_BYTES - size)
    } else {
        full
    }
}
