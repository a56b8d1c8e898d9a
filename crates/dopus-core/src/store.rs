//! The store in domain terms: what a node keeps about its account, peers, conversations and
//! pending work, and the one trait every backend implements.
//!
//! - Writes go through [`Changes`] and [`Store::apply`]: one batch, one transaction, one
//!   [`Outcome`] per change. The protocol layer returns a `Changes` from every step; the runtime
//!   applies it before anything it describes is sent (persist-before-send).
//! - Reads are plain methods on [`Store`].
//! - The store never reads a clock or draws randomness: every timestamp is a parameter.
//! - [`MemoryStore`] is the reference implementation used in protocol tests; `dopus-store`
//!   implements the same trait on SQLCipher. Both pass one conformance suite
//!   (`store_conformance_tests!`, behind the `conformance` feature).

mod changes;
#[cfg(any(test, feature = "conformance"))]
#[doc(hidden)]
pub mod conformance;
mod memory;
mod records;

pub use changes::{Applied, Change, Changes, Outcome};
pub use memory::MemoryStore;
pub use records::{
    AccountRecord, ChannelCiphertextRecord, ChannelId, Contact, ContactState, Conversation,
    ConversationId, ConversationSummary, DeliveryState, EnvelopeId, FileTransfer,
    MegolmInboundRecord, MegolmOutboundRecord, MegolmWaitState, MegolmWaitingRecord, Message,
    MessageId, MessageKind, NewMessage, OlmSessionRecord, OutboxEntry, OutboxItem, OutboxRecipient,
    PeerDevice, Pickle, ReactionSummary, SNIPPET_END, SNIPPET_START, SearchHit, SearchQuery, Seq,
    SpaceOpRecord, TransferDirection, TransferId, TransferState,
};
pub use records::{SourceFile, TransferReason, verified_bytes};

use dopus_types::{BlobHash, Curve25519Key, DeviceId, SpaceId, Timestamp, UserId};

/// Why a store operation failed. Never carries message text, keys or pickles: `Corrupt` and
/// `NotFound` name only the kind of record or column.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A change refers to a record that must exist and does not (for example the account
    /// when setting its pickle). The batch was rolled back.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A change is not acceptable as given (for example a negative-looking size that does
    /// not fit the backend). The batch was rolled back.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Data read back from storage is not valid (an unknown enum text, a malformed key or
    /// id). Names the column, never the value.
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    /// The storage backend failed (I/O, SQLite). The batch was rolled back.
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Most words a search query is split into; the rest are ignored so one query cannot make the
/// index do unbounded work.
pub const MAX_SEARCH_TERMS: usize = 16;

/// Most channel ciphertexts kept per channel for members who join later (the oldest go first).
pub const MAX_KEPT_CIPHERTEXTS: usize = 1_000;

/// Shortest last word that is also matched as a prefix. Shorter prefixes match so many words
/// that the index would have to merge most of its postings (measured: about 200 ms over a
/// million messages for a two-letter prefix on the reference machine, against 1 ms for a word).
pub const MIN_PREFIX_CHARS: usize = 3;

/// One word of a search, as both backends match it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SearchTerm {
    /// Lowercase letters and digits only.
    pub word: String,
    /// Also match words that start with `word` (only the last word, while it is being typed).
    pub prefix: bool,
}

/// Splits what a user typed into search terms: lowercase runs of letters and digits, every one
/// of which must match a whole word of the message, except the last, which also matches as a
/// prefix when it has at least [`MIN_PREFIX_CHARS`] characters (search as you type).
///
/// Everything else (quotes, `*`, `-`, `:`, parentheses, `AND`/`NEAR` as operators) is a
/// separator, which is what makes user input safe to hand to an FTS5 `MATCH` and what both
/// backends use, so they agree on what matches.
pub fn search_terms(text: &str) -> Vec<SearchTerm> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(MAX_SEARCH_TERMS)
        .map(str::to_lowercase)
        .collect();
    let last = words.len().saturating_sub(1);
    words
        .into_iter()
        .enumerate()
        .map(|(i, word)| SearchTerm {
            prefix: i == last && word.chars().count() >= MIN_PREFIX_CHARS,
            word,
        })
        .collect()
}

/// A node's persistent state. Reads take `&self`; every write goes through [`Store::apply`].
///
/// Implementations are synchronous and `Send`: the runtime owns the store on one task (or
/// behind one mutex) and calls it from a blocking context.
pub trait Store: Send {
    /// Applies every change in order, in one transaction: either all take effect or, on
    /// error, none does.
    fn apply(&mut self, changes: Changes) -> Result<Applied, StoreError>;

    /// Applies one change; shorthand for a batch of one.
    fn apply_one(&mut self, change: Change) -> Result<Outcome, StoreError> {
        let applied = self.apply(Changes::from(change))?;
        Ok(applied
            .outcomes
            .into_iter()
            .next()
            .unwrap_or(Outcome::Unchanged))
    }

    // --- account and peer devices ---

    /// Our account, if one was created.
    fn account(&self) -> Result<Option<AccountRecord>, StoreError>;
    /// One device of another user.
    fn peer_device(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<PeerDevice>, StoreError>;
    /// Every known device of a user, by device id.
    fn peer_devices(&self, user: &UserId) -> Result<Vec<PeerDevice>, StoreError>;
    /// The device with this Curve25519 identity key: binds an Olm sender to a user.
    fn peer_device_by_curve25519(
        &self,
        key: &Curve25519Key,
    ) -> Result<Option<PeerDevice>, StoreError>;

    // --- contacts ---

    /// One contact.
    fn contact(&self, user: &UserId) -> Result<Option<Contact>, StoreError>;
    /// Every contact, by user id.
    fn contacts(&self) -> Result<Vec<Contact>, StoreError>;

    // --- conversations and messages ---

    /// One conversation.
    fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError>;
    /// Every conversation with its newest message and unread count, most recent activity
    /// first (conversations without messages last, newest created first).
    fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError>;
    /// One message by id.
    fn message(&self, id: &MessageId) -> Result<Option<Message>, StoreError>;
    /// A page of history: up to `limit` messages of a conversation, newest first in the
    /// senders' order, `(sent_at, id)` descending (the message id, the same on every device,
    /// breaks ties, so every replica pages the same messages in the same order whatever order
    /// they arrived in). With `before: None` the page starts at the newest message; with
    /// `Some(seq)` it holds the messages that come strictly before the message `seq` in that
    /// order. Page on with the `seq` of the last message returned: the cursor message's
    /// `(sent_at, id)` never changes, so messages that arrive later with older times land on the
    /// pages they belong to without shifting a cursor. A `before` that is not a message of this
    /// conversation (for example one past the newest) is read as an arrival bound instead:
    /// the page holds messages with a `seq` below it, still in the senders' order.
    ///
    /// A message re-sent after a crash may arrive after later ones: it gets a higher `seq`
    /// but is shown where its sender wrote it. (The conversation list, unread counts and
    /// search stay in arrival order, `seq`.)
    fn messages_before(
        &self,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    /// The latest `sent_at` of any message in the conversation (the first of
    /// [`Store::messages_before`]), or `None` if it has none. Asked on every send, so a backend
    /// should answer it from an index without loading the message.
    fn newest_sent_at(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .messages_before(conversation, None, 1)?
            .first()
            .map(|m| m.sent_at))
    }
    /// Up to `limit` messages of a conversation that arrived before `before` (`seq` below it;
    /// the newest if `None`), newest arrival first. For logic about what reached this device
    /// (which messages a read receipt covers: those after the last read `seq`); history shown
    /// to the user is [`Store::messages_before`].
    fn messages_arrived_before(
        &self,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    /// Full-text search, newest first (by `seq`, arrival order). Deleted messages never
    /// match. Exact whether or not [`Store::index_pending`] ran since the last write: a
    /// backend with a deferred index brings it up to date first, which costs about as much as
    /// indexing whatever was written since the last maintenance.
    fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError>;
    /// How many messages `query` matches in all (its `before` and `limit` are ignored).
    fn search_count(&self, query: &SearchQuery) -> Result<u64, StoreError> {
        let all = SearchQuery {
            before: None,
            limit: usize::MAX,
            ..query.clone()
        };
        Ok(self.search(&all)?.len() as u64)
    }
    /// Maintenance: adds up to `max_rows` of the oldest not-yet-indexed messages to the
    /// full-text index, in one transaction; returns how many it indexed (0 when nothing is
    /// pending). Inserts do not index (that is what keeps batched inserts fast); call this
    /// periodically, for example every few seconds with `max_rows` around 5,000 and again
    /// while it returns `max_rows`, so the first search after a burst of messages has little
    /// left to index. A backend whose search needs no index (the memory store) returns 0.
    fn index_pending(&mut self, max_rows: usize) -> Result<usize, StoreError>;
    /// The reactions on a message, one entry per emoji, in the order each emoji first
    /// appeared.
    fn reactions(&self, message: &MessageId) -> Result<Vec<ReactionSummary>, StoreError>;

    // --- end-to-end sessions ---

    /// The Olm sessions with one peer device, most recently used first.
    fn olm_sessions(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Vec<OlmSessionRecord>, StoreError>;
    /// The Olm sessions with whatever device owns this Curve25519 key, most recently used
    /// first (an inbound pre-key message names only the key).
    fn olm_sessions_for_key(
        &self,
        key: &Curve25519Key,
    ) -> Result<Vec<OlmSessionRecord>, StoreError>;
    /// One inbound Megolm session, by id (channel messages name only the session).
    fn megolm_inbound(&self, session_id: &str) -> Result<Option<MegolmInboundRecord>, StoreError>;
    /// Our outbound Megolm session for a channel.
    fn megolm_outbound(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<MegolmOutboundRecord>, StoreError>;

    // --- outbox and inbound dedupe ---

    /// Up to `limit` queued envelopes for `peer`, oldest first, due or not (to flush a
    /// freshly opened channel).
    fn outbox_for_peer(&self, peer: &UserId, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Up to `limit` envelopes for `peer` that are due at `now`, in the order they fell due
    /// (`next_attempt_at`), queue order among equals: new entries are due when queued, so they
    /// go in queue order. Entries that are not due (for example envelopes the server's mailbox
    /// already holds, checked again much later) do not hold back the ones queued after them.
    /// Costs what the window costs, however much is queued.
    fn outbox_due_for_peer(
        &self,
        peer: &UserId,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;
    /// The peers with at least one envelope due at `now`, by user id. Costs what the number of
    /// peers with queued envelopes costs.
    fn outbox_due_peers(&self, now: Timestamp) -> Result<Vec<UserId>, StoreError>;
    /// The earliest `next_attempt_at` over the whole outbox, for the runtime's timer.
    fn outbox_next_attempt_at(&self) -> Result<Option<Timestamp>, StoreError>;
    /// Whether an inbound envelope id was already processed.
    fn is_processed(&self, id: &EnvelopeId) -> Result<bool, StoreError>;
    /// Forgets processed ids received before `before`; returns how many. Call it with a
    /// horizon longer than the mailbox retention, or replays become possible.
    fn prune_processed(&mut self, before: Timestamp) -> Result<u64, StoreError>;

    // --- file transfers ---

    /// One transfer.
    fn transfer(&self, id: &TransferId) -> Result<Option<FileTransfer>, StoreError>;
    /// The transfers of a conversation, oldest first.
    fn transfers(&self, conversation: &ConversationId) -> Result<Vec<FileTransfer>, StoreError>;
    /// Every transfer of a blob (one per conversation and direction it was sent or received
    /// in), oldest first: what a provider checks before serving it.
    fn transfers_of_blob(&self, blob: &BlobHash) -> Result<Vec<FileTransfer>, StoreError>;
    /// Every transfer that has not ended (not done, failed or cancelled), oldest first: what
    /// the runtime resumes at start.
    fn unfinished_transfers(&self) -> Result<Vec<FileTransfer>, StoreError>;
    /// The members known to hold `blob` whole (their `file_have`), ascending.
    fn blob_holders(&self, blob: &BlobHash) -> Result<Vec<UserId>, StoreError>;

    // --- spaces ---

    /// Every space we hold ops of, ascending.
    fn spaces(&self) -> Result<Vec<SpaceId>, StoreError>;
    /// A space's ops, by depth then op id (each after its parents).
    fn space_ops(&self, space: &SpaceId) -> Result<Vec<SpaceOpRecord>, StoreError>;
    /// The inbound Megolm sessions of a channel, oldest first (for history bundles and key
    /// requests).
    fn megolm_inbound_for_channel(
        &self,
        channel: &ChannelId,
    ) -> Result<Vec<MegolmInboundRecord>, StoreError>;
    /// Whether a Megolm message index was already decrypted (a replay).
    fn megolm_seen(&self, session_id: &str, index: u32) -> Result<bool, StoreError>;
    /// The messages waiting for a session's key, by index.
    fn megolm_waiting(&self, session_id: &str) -> Result<Vec<MegolmWaitingRecord>, StoreError>;
    /// The newest `limit` kept ciphertexts of a channel, oldest first.
    fn channel_ciphertexts(
        &self,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<ChannelCiphertextRecord>, StoreError>;
    /// One record per session with messages waiting (its lowest index), by session id, at
    /// most `limit` (the node resumes asking for these keys when it starts).
    fn megolm_waiting_sessions(&self, limit: usize)
    -> Result<Vec<MegolmWaitingRecord>, StoreError>;
    /// The messages of a channel waiting for a key, oldest first (by arrival, then session
    /// and index), at most `limit` (the channel history's placeholders).
    fn megolm_waiting_in_channel(
        &self,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<MegolmWaitingRecord>, StoreError>;

    // --- settings ---

    /// A setting's value.
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_strip_fts_syntax() {
        let words: Vec<String> = search_terms(r#"Hello "world" OR x* -y NEAR(a b) col:z ^"#)
            .into_iter()
            .map(|t| t.word)
            .collect();
        assert_eq!(
            words,
            [
                "hello", "world", "or", "x", "y", "near", "a", "b", "col", "z"
            ]
        );
        assert!(search_terms("\" * ( ) : ^ -").is_empty());
        assert_eq!(search_terms(&"w ".repeat(100)).len(), MAX_SEARCH_TERMS);
    }

    #[test]
    fn only_a_long_enough_last_word_is_a_prefix() {
        let prefixes = |text: &str| -> Vec<bool> {
            search_terms(text).into_iter().map(|t| t.prefix).collect()
        };
        assert_eq!(prefixes("hello wor"), [false, true]);
        assert_eq!(prefixes("hello wo"), [false, false]);
        assert_eq!(prefixes("héé"), [true]);
        assert_eq!(prefixes("hello, "), [true]);
        assert!(prefixes("").is_empty());
    }

    #[test]
    fn debug_never_prints_text_or_pickles() {
        let sender = conformance::user(1);
        let m = NewMessage {
            preview: None,
            id: MessageId(uuid::Uuid::from_u128(1)),
            conversation: ConversationId::Direct(sender),
            sender,
            kind: MessageKind::Text,
            body: "meet me at 10".into(),
            reply_to: None,
            sent_at: Timestamp::ZERO,
            received_at: Timestamp::ZERO,
            delivery: DeliveryState::Pending,
        };
        let q = SearchQuery {
            text: "meet me".into(),
            conversation: None,
            within: None,
            before: None,
            limit: 1,
        };
        let p = Pickle::new("SECRETPICKLE");
        let e = OutboxEntry {
            id: EnvelopeId(uuid::Uuid::from_u128(1)),
            peer_user: sender,
            peer_device: None,
            bytes: b"meet me".to_vec(),
            created_at: Timestamp::ZERO,
            attempts: 0,
            next_attempt_at: Timestamp::ZERO,
        };
        let printed = format!(
            "{m:?} {q:?} {p:?} {e:?} {:?}",
            Change::InsertMessage(m.clone())
        );
        assert!(!printed.contains("meet"), "{printed}");
        assert!(!printed.contains("SECRET"), "{printed}");
        assert!(!printed.contains("109, 101, 101"), "{printed}");
    }

    #[test]
    fn delivery_never_moves_backwards() {
        use DeliveryState::*;
        assert!(Pending.can_become(Sent));
        assert!(Sent.can_become(Read));
        assert!(!Read.can_become(Delivered));
        assert!(!Delivered.can_become(Sent));
        assert!(!Sent.can_become(Sent));
        assert!(Pending.can_become(Failed));
        assert!(!Sent.can_become(Failed));
        assert!(Failed.can_become(Pending));
        assert!(Failed.can_become(Delivered));
        for s in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(DeliveryState::parse("lost"), None);
    }
}
