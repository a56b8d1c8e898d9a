//! Conversions between domain values and SQLite columns. Everything read back is checked:
//! a value this build does not understand becomes `StoreError::Corrupt(column)`, never a panic
//! and never a guess.

use dopus_core::store::{
    ChannelCiphertextRecord, ChannelId, Contact, ContactState, ConversationId, DeliveryState,
    FileTransfer, MegolmInboundRecord, MegolmOutboundRecord, MegolmWaitState, MegolmWaitingRecord,
    Message, MessageId, MessageKind, OlmSessionRecord, OutboxEntry, PeerDevice, Pickle, Seq,
    SpaceOpRecord, StoreError, TransferDirection, TransferId, TransferState,
};
use dopus_core::store::{SourceFile, TransferReason};
use dopus_core::transfer::GroupSet;
use dopus_proto::space::OpId;
use dopus_proto::transfer::FileManifest;
use dopus_types::{Curve25519Key, DeviceId, DeviceKeys, Ed25519Key, Timestamp, UserId};
use dopus_types::{Signature, SpaceId};
use rusqlite::Row;
use uuid::Uuid;

/// Errors inside the SQLite store: SQLite's own, or a domain error. Converted to
/// [`StoreError`] at the trait boundary, keeping SQLite's error as the source.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a column holds a value of the wrong type")]
    ColumnType(#[from] rusqlite::types::FromSqlError),
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sqlite(e) => StoreError::Backend(Box::new(e)),
            DbError::Store(e) => e,
            DbError::ColumnType(_) => StoreError::Corrupt("column type"),
        }
    }
}

pub(crate) type DbResult<T> = Result<T, DbError>;

fn corrupt(column: &'static str) -> DbError {
    DbError::Store(StoreError::Corrupt(column))
}

// --- writing ---

pub(crate) fn ts(t: Timestamp) -> DbResult<i64> {
    i64::try_from(t.as_millis()).map_err(|_| StoreError::Invalid("timestamp").into())
}

pub(crate) fn int_u64(v: u64, what: &'static str) -> DbResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(what).into())
}

pub(crate) fn seq_int(s: Seq) -> i64 {
    // Cursors beyond i64::MAX cannot exist in the table; saturating keeps "before" meaning.
    i64::try_from(s.0).unwrap_or(i64::MAX)
}

pub(crate) fn user(u: &UserId) -> &[u8] {
    u.key().as_bytes()
}

pub(crate) fn uuid(u: &Uuid) -> &[u8] {
    u.as_bytes()
}

/// The `(kind, ref)` pair that identifies a conversation row.
pub(crate) fn conversation_key(id: &ConversationId) -> (&'static str, Vec<u8>) {
    match id {
        ConversationId::Direct(u) => ("direct", user(u).to_vec()),
        ConversationId::Channel(c) => ("channel", c.as_bytes().to_vec()),
    }
}

// --- reading ---

pub(crate) fn read_ts(v: i64, column: &'static str) -> DbResult<Timestamp> {
    u64::try_from(v)
        .map(Timestamp::from_millis)
        .map_err(|_| corrupt(column))
}

pub(crate) fn read_u64(v: i64, column: &'static str) -> DbResult<u64> {
    u64::try_from(v).map_err(|_| corrupt(column))
}

pub(crate) fn read_seq(v: i64, column: &'static str) -> DbResult<Seq> {
    read_u64(v, column).map(Seq)
}

pub(crate) fn read_user(b: &[u8], column: &'static str) -> DbResult<UserId> {
    let bytes: [u8; 32] = b.try_into().map_err(|_| corrupt(column))?;
    Ed25519Key::from_bytes(&bytes)
        .map(UserId::from_key)
        .map_err(|_| corrupt(column))
}

pub(crate) fn read_ed25519(b: &[u8], column: &'static str) -> DbResult<Ed25519Key> {
    let bytes: [u8; 32] = b.try_into().map_err(|_| corrupt(column))?;
    Ed25519Key::from_bytes(&bytes).map_err(|_| corrupt(column))
}

pub(crate) fn read_curve(b: &[u8], column: &'static str) -> DbResult<Curve25519Key> {
    let bytes: [u8; 32] = b.try_into().map_err(|_| corrupt(column))?;
    Ok(Curve25519Key::from_bytes(bytes))
}

pub(crate) fn read_uuid(b: &[u8], column: &'static str) -> DbResult<Uuid> {
    Uuid::from_slice(b).map_err(|_| corrupt(column))
}

pub(crate) fn read_device(s: &str, column: &'static str) -> DbResult<DeviceId> {
    s.parse().map_err(|_| corrupt(column))
}

pub(crate) fn read_enum<E>(
    s: &str,
    parse: fn(&str) -> Option<E>,
    column: &'static str,
) -> DbResult<E> {
    parse(s).ok_or_else(|| corrupt(column))
}

pub(crate) fn read_conversation(kind: &str, r: &[u8]) -> DbResult<ConversationId> {
    match kind {
        "direct" => Ok(ConversationId::Direct(read_user(r, "conversations.ref")?)),
        "channel" => Ok(ConversationId::Channel(
            ChannelId::from_slice(r).map_err(|_| corrupt("conversations.ref"))?,
        )),
        _ => Err(corrupt("conversations.kind")),
    }
}

fn blob<'r>(row: &'r Row<'_>, i: usize) -> DbResult<&'r [u8]> {
    Ok(row.get_ref(i)?.as_blob()?)
}

fn text<'r>(row: &'r Row<'_>, i: usize) -> DbResult<&'r str> {
    Ok(row.get_ref(i)?.as_str()?)
}

fn opt_blob<'r>(row: &'r Row<'_>, i: usize) -> DbResult<Option<&'r [u8]>> {
    Ok(row.get_ref(i)?.as_blob_or_null()?)
}

/// Columns for [`message`], from `messages m JOIN conversations c`.
/// How many columns [`MESSAGE_COLUMNS`] names (a query's own columns come after them).
pub(crate) const MESSAGE_COLUMN_COUNT: usize = 14;
pub(crate) const MESSAGE_COLUMNS: &str = "m.seq, m.id, c.kind, c.ref, m.sender, m.kind, m.body, \
     m.reply_to, m.edited_at, m.deleted, m.sent_at, m.received_at, m.delivery, m.preview";

pub(crate) fn message(row: &Row<'_>) -> DbResult<Message> {
    Ok(Message {
        seq: read_seq(row.get(0)?, "messages.seq")?,
        id: MessageId(read_uuid(blob(row, 1)?, "messages.id")?),
        conversation: read_conversation(text(row, 2)?, blob(row, 3)?)?,
        sender: read_user(blob(row, 4)?, "messages.sender")?,
        kind: read_enum(text(row, 5)?, MessageKind::parse, "messages.kind")?,
        body: text(row, 6)?.to_owned(),
        reply_to: opt_blob(row, 7)?
            .map(|b| read_uuid(b, "messages.reply_to").map(MessageId))
            .transpose()?,
        edited_at: row
            .get::<_, Option<i64>>(8)?
            .map(|v| read_ts(v, "messages.edited_at"))
            .transpose()?,
        deleted: row.get(9)?,
        sent_at: read_ts(row.get(10)?, "messages.sent_at")?,
        received_at: read_ts(row.get(11)?, "messages.received_at")?,
        delivery: read_enum(text(row, 12)?, DeliveryState::parse, "messages.delivery")?,
        preview: row
            .get::<_, Option<String>>(13)?
            .map(|json| serde_json::from_str(&json).map_err(|_| corrupt("messages.preview")))
            .transpose()?,
    })
}

pub(crate) const CONTACT_COLUMNS: &str = "user_id, display_name, verified, blocked, state, \
     request_note, created_at, updated_at";

pub(crate) fn contact(row: &Row<'_>) -> DbResult<Contact> {
    Ok(Contact {
        user_id: read_user(blob(row, 0)?, "contacts.user_id")?,
        display_name: row.get(1)?,
        verified: row.get(2)?,
        blocked: row.get(3)?,
        state: read_enum(text(row, 4)?, ContactState::parse, "contacts.state")?,
        request_note: row.get(5)?,
        created_at: read_ts(row.get(6)?, "contacts.created_at")?,
        updated_at: read_ts(row.get(7)?, "contacts.updated_at")?,
    })
}

pub(crate) const PEER_DEVICE_COLUMNS: &str =
    "user_id, device_id, ed25519, curve25519, certificate_json, first_seen, updated_at";

pub(crate) fn peer_device(row: &Row<'_>) -> DbResult<PeerDevice> {
    Ok(PeerDevice {
        user_id: read_user(blob(row, 0)?, "peer_devices.user_id")?,
        device_id: read_device(text(row, 1)?, "peer_devices.device_id")?,
        keys: DeviceKeys {
            ed25519: read_ed25519(blob(row, 2)?, "peer_devices.ed25519")?,
            curve25519: read_curve(blob(row, 3)?, "peer_devices.curve25519")?,
        },
        certificate_json: row.get(4)?,
        first_seen: read_ts(row.get(5)?, "peer_devices.first_seen")?,
        updated_at: read_ts(row.get(6)?, "peer_devices.updated_at")?,
    })
}

pub(crate) const OLM_COLUMNS: &str =
    "peer_user, peer_device, peer_curve25519, session_id, pickle, created_at, last_used_at";

pub(crate) fn olm_session(row: &Row<'_>) -> DbResult<OlmSessionRecord> {
    Ok(OlmSessionRecord {
        peer_user: read_user(blob(row, 0)?, "olm_sessions.peer_user")?,
        peer_device: read_device(text(row, 1)?, "olm_sessions.peer_device")?,
        peer_curve25519: read_curve(blob(row, 2)?, "olm_sessions.peer_curve25519")?,
        session_id: row.get(3)?,
        pickle: Pickle::new(text(row, 4)?),
        created_at: read_ts(row.get(5)?, "olm_sessions.created_at")?,
        last_used_at: read_ts(row.get(6)?, "olm_sessions.last_used_at")?,
    })
}

/// The columns of an outbox entry: a delivery (`o`, the `outbox` table) joined with its item
/// (`i`, `outbox_items`).
pub(crate) const OUTBOX_COLUMNS: &str = "o.envelope_id, o.peer_user, o.peer_device, i.bytes, \
     i.created_at, o.attempts, o.next_attempt_at";

pub(crate) fn outbox_entry(row: &Row<'_>) -> DbResult<OutboxEntry> {
    Ok(OutboxEntry {
        id: read_uuid(blob(row, 0)?, "outbox.envelope_id")?.into(),
        peer_user: read_user(blob(row, 1)?, "outbox.peer_user")?,
        peer_device: row
            .get_ref(2)?
            .as_str_or_null()?
            .map(|s| read_device(s, "outbox.peer_device"))
            .transpose()?,
        bytes: blob(row, 3)?.to_vec(),
        created_at: read_ts(row.get(4)?, "outbox.created_at")?,
        attempts: u32::try_from(row.get::<_, i64>(5)?).map_err(|_| corrupt("outbox.attempts"))?,
        next_attempt_at: read_ts(row.get(6)?, "outbox.next_attempt_at")?,
    })
}

pub(crate) const TRANSFER_COLUMNS: &str = "t.id, c.kind, c.ref, t.message_id, t.direction, \
     t.manifest, t.state, t.reason, t.verified, t.source_path, t.source_size, \
     t.source_modified_ns, t.source_inode, t.saved_path, t.created_at, t.updated_at, t.blob";

/// A set of chunk groups as stored: canonical ranges, 16 bytes each (start, end; big-endian).
pub(crate) fn group_ranges(groups: &GroupSet) -> Vec<u8> {
    let mut out = Vec::with_capacity(groups.ranges().len() * 16);
    for r in groups.ranges() {
        out.extend_from_slice(&r.start.to_be_bytes());
        out.extend_from_slice(&r.end.to_be_bytes());
    }
    out
}

fn read_group_ranges(b: &[u8], column: &'static str) -> DbResult<GroupSet> {
    if !b.len().is_multiple_of(16) {
        return Err(corrupt(column));
    }
    let ranges = b
        .chunks_exact(16)
        .map(|c| {
            let (s, e) = c.split_at(8);
            let n = |x: &[u8]| <[u8; 8]>::try_from(x).map(u64::from_be_bytes);
            Ok(n(s).map_err(|_| corrupt(column))?..n(e).map_err(|_| corrupt(column))?)
        })
        .collect::<DbResult<Vec<_>>>()?;
    GroupSet::from_canonical(ranges).ok_or_else(|| corrupt(column))
}

pub(crate) fn transfer(row: &Row<'_>) -> DbResult<FileTransfer> {
    let manifest: FileManifest =
        serde_json::from_str(text(row, 5)?).map_err(|_| corrupt("transfers.manifest"))?;
    if blob(row, 16)? != manifest.blob.as_bytes().as_slice() {
        return Err(corrupt("transfers.blob"));
    }
    let source = match row.get_ref(9)?.as_str_or_null()? {
        None => None,
        Some(path) => Some(SourceFile {
            path: path.to_string(),
            size: read_u64(row.get(10)?, "transfers.source_size")?,
            modified_ns: row.get(11)?,
            inode: u64::from_be_bytes(
                blob(row, 12)?
                    .try_into()
                    .map_err(|_| corrupt("transfers.source_inode"))?,
            ),
        }),
    };
    Ok(FileTransfer {
        id: TransferId(read_uuid(blob(row, 0)?, "transfers.id")?),
        conversation: read_conversation(text(row, 1)?, blob(row, 2)?)?,
        message: opt_blob(row, 3)?
            .map(|b| read_uuid(b, "transfers.message_id").map(MessageId))
            .transpose()?,
        direction: read_enum(
            text(row, 4)?,
            TransferDirection::parse,
            "transfers.direction",
        )?,
        manifest,
        state: read_enum(text(row, 6)?, TransferState::parse, "transfers.state")?,
        reason: row
            .get_ref(7)?
            .as_str_or_null()?
            .map(|r| read_enum(r, TransferReason::parse, "transfers.reason"))
            .transpose()?,
        verified: read_group_ranges(blob(row, 8)?, "transfers.verified")?,
        source,
        saved_path: row.get(13)?,
        created_at: read_ts(row.get(14)?, "transfers.created_at")?,
        updated_at: read_ts(row.get(15)?, "transfers.updated_at")?,
    })
}

pub(crate) fn read_space(b: &[u8], column: &'static str) -> DbResult<SpaceId> {
    SpaceId::from_slice(b).map_err(|_| corrupt(column))
}

pub(crate) fn read_channel(b: &[u8], column: &'static str) -> DbResult<ChannelId> {
    ChannelId::from_slice(b).map_err(|_| corrupt(column))
}

fn read_op_id(b: &[u8], column: &'static str) -> DbResult<OpId> {
    let bytes: [u8; 32] = b.try_into().map_err(|_| corrupt(column))?;
    Ok(OpId::from_bytes(bytes))
}

fn read_bool(v: i64, column: &'static str) -> DbResult<bool> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(corrupt(column)),
    }
}

fn read_u32(v: i64, column: &'static str) -> DbResult<u32> {
    u32::try_from(v).map_err(|_| corrupt(column))
}

pub(crate) const SPACE_OP_COLUMNS: &str = "space_id, op_id, depth, op_json, received_at";

pub(crate) fn space_op(row: &Row<'_>) -> DbResult<SpaceOpRecord> {
    Ok(SpaceOpRecord {
        space: read_space(blob(row, 0)?, "space_ops.space_id")?,
        id: read_op_id(blob(row, 1)?, "space_ops.op_id")?,
        depth: read_u64(row.get(2)?, "space_ops.depth")?,
        json: blob(row, 3)?.to_vec(),
        received_at: read_ts(row.get(4)?, "space_ops.received_at")?,
    })
}

pub(crate) const MEGOLM_INBOUND_COLUMNS: &str = "session_id, space_id, channel_id, sender_user, \
     sender_device, sender_cert, announcement, shared_history, forwarded, first_index, pickle, \
     created_at";

pub(crate) fn megolm_inbound(row: &Row<'_>) -> DbResult<MegolmInboundRecord> {
    let sig: [u8; 64] = blob(row, 6)?
        .try_into()
        .map_err(|_| corrupt("megolm_inbound.announcement"))?;
    Ok(MegolmInboundRecord {
        session_id: row.get(0)?,
        space: read_space(blob(row, 1)?, "megolm_inbound.space_id")?,
        channel: read_channel(blob(row, 2)?, "megolm_inbound.channel_id")?,
        sender_user: read_user(blob(row, 3)?, "megolm_inbound.sender_user")?,
        sender_device: read_device(text(row, 4)?, "megolm_inbound.sender_device")?,
        sender_certificate_json: row.get(5)?,
        announcement: Signature::from_bytes(sig),
        shared_history: read_bool(row.get(7)?, "megolm_inbound.shared_history")?,
        forwarded: read_bool(row.get(8)?, "megolm_inbound.forwarded")?,
        first_index: read_u32(row.get(9)?, "megolm_inbound.first_index")?,
        pickle: Pickle::new(row.get::<_, String>(10)?),
        created_at: read_ts(row.get(11)?, "megolm_inbound.created_at")?,
    })
}

pub(crate) const MEGOLM_OUTBOUND_COLUMNS: &str = "channel_id, space_id, session_id, pickle, \
     created_at, message_count, shared_history, shared_with";

/// The devices an outbound session was shared with, as a JSON array of `[user, device]`.
pub(crate) fn shared_with_json(list: &[(UserId, DeviceId)]) -> DbResult<String> {
    serde_json::to_string(list).map_err(|_| StoreError::Invalid("shared_with").into())
}

pub(crate) fn megolm_outbound(row: &Row<'_>) -> DbResult<MegolmOutboundRecord> {
    let shared_with: Vec<(UserId, DeviceId)> =
        serde_json::from_str(text(row, 7)?).map_err(|_| corrupt("megolm_outbound.shared_with"))?;
    Ok(MegolmOutboundRecord {
        channel: read_channel(blob(row, 0)?, "megolm_outbound.channel_id")?,
        space: read_space(blob(row, 1)?, "megolm_outbound.space_id")?,
        session_id: row.get(2)?,
        pickle: Pickle::new(row.get::<_, String>(3)?),
        created_at: read_ts(row.get(4)?, "megolm_outbound.created_at")?,
        message_count: read_u64(row.get(5)?, "megolm_outbound.message_count")?,
        shared_history: read_bool(row.get(6)?, "megolm_outbound.shared_history")?,
        shared_with,
    })
}

pub(crate) const CHANNEL_HISTORY_COLUMNS: &str =
    "session_id, idx, space_id, channel_id, message, received_at";

pub(crate) fn channel_ciphertext(row: &Row<'_>) -> DbResult<ChannelCiphertextRecord> {
    Ok(ChannelCiphertextRecord {
        session_id: row.get(0)?,
        index: read_u32(row.get(1)?, "channel_history.idx")?,
        space: read_space(blob(row, 2)?, "channel_history.space_id")?,
        channel: read_channel(blob(row, 3)?, "channel_history.channel_id")?,
        message: blob(row, 4)?.to_vec(),
        received_at: read_ts(row.get(5)?, "channel_history.received_at")?,
    })
}

pub(crate) const MEGOLM_WAITING_COLUMNS: &str = "session_id, idx, sender_user, sender_device, \
     message, received_at, space_id, channel_id, state, reason";

pub(crate) fn megolm_waiting(row: &Row<'_>) -> DbResult<MegolmWaitingRecord> {
    Ok(MegolmWaitingRecord {
        session_id: row.get(0)?,
        index: read_u32(row.get(1)?, "megolm_waiting.idx")?,
        sender_user: read_user(blob(row, 2)?, "megolm_waiting.sender_user")?,
        sender_device: read_device(text(row, 3)?, "megolm_waiting.sender_device")?,
        message: blob(row, 4)?.to_vec(),
        received_at: read_ts(row.get(5)?, "megolm_waiting.received_at")?,
        space: row
            .get::<_, Option<Vec<u8>>>(6)?
            .map(|b| read_space(&b, "megolm_waiting.space_id"))
            .transpose()?,
        channel: row
            .get::<_, Option<Vec<u8>>>(7)?
            .map(|b| read_channel(&b, "megolm_waiting.channel_id"))
            .transpose()?,
        state: MegolmWaitState::parse(
            &row.get::<_, String>(8)?,
            row.get::<_, Option<String>>(9)?.as_deref(),
        )
        .ok_or_else(|| corrupt("megolm_waiting.state"))?,
    })
}

/// Reads every row of a prepared query with `decode`.
pub(crate) fn collect<T>(
    mut rows: rusqlite::Rows<'_>,
    decode: fn(&Row<'_>) -> DbResult<T>,
) -> DbResult<Vec<T>> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Reads the first row of a prepared query with `decode`, if any.
pub(crate) fn first<T>(
    mut rows: rusqlite::Rows<'_>,
    decode: fn(&Row<'_>) -> DbResult<T>,
) -> DbResult<Option<T>> {
    rows.next()?.map(decode).transpose()
}
