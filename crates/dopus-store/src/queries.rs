//! Reads. Every query is served by an index named in migrations/ (001, 002); the hot ones
//! (a page of history, search) are measured by bench/store.

use crate::codec::{
    self, CHANNEL_HISTORY_COLUMNS, CONTACT_COLUMNS, DbResult, MEGOLM_INBOUND_COLUMNS,
    MEGOLM_OUTBOUND_COLUMNS, MEGOLM_WAITING_COLUMNS, MESSAGE_COLUMN_COUNT, MESSAGE_COLUMNS,
    OLM_COLUMNS, OUTBOX_COLUMNS, PEER_DEVICE_COLUMNS, SPACE_OP_COLUMNS, TRANSFER_COLUMNS, collect,
    conversation_key, first, read_seq, read_ts, read_user, seq_int, ts, user, uuid,
};
use dopus_core::store::{
    AccountRecord, ChannelCiphertextRecord, ChannelId, Contact, Conversation, ConversationId,
    ConversationSummary, EnvelopeId, FileTransfer, MegolmInboundRecord, MegolmOutboundRecord,
    MegolmWaitingRecord, Message, MessageId, OlmSessionRecord, OutboxEntry, PeerDevice, Pickle,
    ReactionSummary, SNIPPET_END, SNIPPET_START, SearchHit, SearchQuery, SearchTerm, Seq,
    SpaceOpRecord, TransferId, search_terms,
};
use dopus_types::BlobHash;
use dopus_types::{Curve25519Key, DeviceId, DeviceKeys, SpaceId, Timestamp, UserId};
use rusqlite::{Connection, OptionalExtension, params};

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn account(conn: &Connection) -> DbResult<Option<AccountRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, identity_pickle, device_id, device_ed25519, device_curve25519, \
         account_pickle, certificate_json, display_name, created_at FROM account WHERE id = 1",
    )?;
    first(stmt.query([])?, |row| {
        Ok(AccountRecord {
            user_id: read_user(&row.get::<_, Vec<u8>>(0)?, "account.user_id")?,
            identity_pickle: Pickle::new(row.get::<_, String>(1)?),
            device_id: codec::read_device(&row.get::<_, String>(2)?, "account.device_id")?,
            device_keys: DeviceKeys {
                ed25519: codec::read_ed25519(&row.get::<_, Vec<u8>>(3)?, "account.device_ed25519")?,
                curve25519: codec::read_curve(
                    &row.get::<_, Vec<u8>>(4)?,
                    "account.device_curve25519",
                )?,
            },
            account_pickle: Pickle::new(row.get::<_, String>(5)?),
            certificate_json: row.get(6)?,
            display_name: row.get(7)?,
            created_at: read_ts(row.get(8)?, "account.created_at")?,
        })
    })
}

pub(crate) fn peer_device(
    conn: &Connection,
    u: &UserId,
    device: &DeviceId,
) -> DbResult<Option<PeerDevice>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PEER_DEVICE_COLUMNS} FROM peer_devices WHERE user_id = ?1 AND device_id = ?2"
    ))?;
    first(
        stmt.query(params![user(u), device.as_str()])?,
        codec::peer_device,
    )
}

pub(crate) fn peer_devices(conn: &Connection, u: &UserId) -> DbResult<Vec<PeerDevice>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PEER_DEVICE_COLUMNS} FROM peer_devices WHERE user_id = ?1 ORDER BY device_id"
    ))?;
    collect(stmt.query([user(u)])?, codec::peer_device)
}

pub(crate) fn peer_device_by_curve25519(
    conn: &Connection,
    key: &Curve25519Key,
) -> DbResult<Option<PeerDevice>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PEER_DEVICE_COLUMNS} FROM peer_devices WHERE curve25519 = ?1 \
         ORDER BY updated_at DESC LIMIT 1"
    ))?;
    first(stmt.query([key.as_bytes()])?, codec::peer_device)
}

pub(crate) fn contact(conn: &Connection, u: &UserId) -> DbResult<Option<Contact>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts WHERE user_id = ?1"
    ))?;
    first(stmt.query([user(u)])?, codec::contact)
}

pub(crate) fn contacts(conn: &Connection) -> DbResult<Vec<Contact>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts ORDER BY user_id"
    ))?;
    collect(stmt.query([])?, codec::contact)
}

/// The row id of a conversation, if it exists.
fn conversation_row(conn: &Connection, id: &ConversationId) -> DbResult<Option<i64>> {
    let (kind, key) = conversation_key(id);
    Ok(conn
        .prepare_cached("SELECT id FROM conversations WHERE kind = ?1 AND ref = ?2")?
        .query_row(params![kind, key], |r| r.get(0))
        .optional()?)
}

pub(crate) fn conversation(
    conn: &Connection,
    id: &ConversationId,
) -> DbResult<Option<Conversation>> {
    let (kind, key) = conversation_key(id);
    let mut stmt = conn.prepare_cached(
        "SELECT created_at, last_read_seq FROM conversations WHERE kind = ?1 AND ref = ?2",
    )?;
    let mut rows = stmt.query(params![kind, key])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(Conversation {
        id: *id,
        created_at: read_ts(row.get(0)?, "conversations.created_at")?,
        last_read: row
            .get::<_, Option<i64>>(1)?
            .map(|s| read_seq(s, "conversations.last_read_seq"))
            .transpose()?,
    }))
}

pub(crate) fn conversations(conn: &Connection) -> DbResult<Vec<ConversationSummary>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.kind, c.ref, c.created_at, c.last_read_seq, \
           (SELECT max(m.seq) FROM messages m WHERE m.conversation_id = c.id) AS last_seq, \
           (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id \
              AND m.seq > coalesce(c.last_read_seq, 0) AND m.deleted = 0 \
              AND m.sender IS NOT (SELECT user_id FROM account WHERE id = 1)) AS unread \
         FROM conversations c \
         ORDER BY last_seq IS NULL, last_seq DESC, c.created_at DESC, c.id DESC",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let kind: String = row.get(0)?;
        let key: Vec<u8> = row.get(1)?;
        let last_seq: Option<i64> = row.get(4)?;
        let last_message = match last_seq {
            Some(seq) => message_by_seq(conn, seq)?,
            None => None,
        };
        out.push(ConversationSummary {
            conversation: Conversation {
                id: codec::read_conversation(&kind, &key)?,
                created_at: read_ts(row.get(2)?, "conversations.created_at")?,
                last_read: row
                    .get::<_, Option<i64>>(3)?
                    .map(|s| read_seq(s, "conversations.last_read_seq"))
                    .transpose()?,
            },
            last_message,
            unread: codec::read_u64(row.get(5)?, "unread count")?,
        });
    }
    Ok(out)
}

fn message_by_seq(conn: &Connection, seq: i64) -> DbResult<Option<Message>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN conversations c \
         ON c.id = m.conversation_id WHERE m.seq = ?1"
    ))?;
    first(stmt.query([seq])?, codec::message)
}

pub(crate) fn message(conn: &Connection, id: &MessageId) -> DbResult<Option<Message>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN conversations c \
         ON c.id = m.conversation_id WHERE m.id = ?1"
    ))?;
    first(stmt.query([uuid(&id.0)])?, codec::message)
}

/// Every `LIMIT` here is written `LIMIT +?N`: SQLite (3.47 and later) reads a plain bound
/// `LIMIT ?N` while planning and then marks the statement to be re-prepared (parsed and planned
/// again) each time that parameter is bound, which made every history page and outbox read pay
/// for the SQL parser. The unary plus keeps the planner from reading it; the limit still applies.
/// (`tests::history_statements_are_not_re_prepared_on_every_call` counts re-prepares.)
///
/// The history queries, newest first in the senders' order `(sent_at, id)`. Each names
/// `messages_by_conversation_time` with `INDEXED BY`: with every column selected, SQLite's
/// planner would otherwise serve the arrival-bound page from `(conversation_id, seq)` and sort
/// the whole conversation (measured: 2.3 s on a million messages instead of 1 ms).
pub(crate) mod history_sql {
    use crate::codec::MESSAGE_COLUMNS;

    /// `?1` conversation row, `?2` limit.
    pub(crate) fn newest() -> String {
        format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m \
             INDEXED BY messages_by_conversation_time \
             JOIN conversations c ON c.id = m.conversation_id WHERE m.conversation_id = ?1 \
             ORDER BY m.sent_at DESC, m.id DESC LIMIT +?2"
        )
    }

    /// `?1` conversation row, `?2` cursor seq, `?3` limit. The cursor row `k` is the outer
    /// loop of the join (one row by primary key, or none), so the query resolves the cursor
    /// itself and a cursor that is not there ends the query at once.
    pub(crate) fn before_cursor() -> String {
        format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages k \
             JOIN messages m INDEXED BY messages_by_conversation_time \
               ON m.conversation_id = k.conversation_id \
               AND (m.sent_at, m.id) < (k.sent_at, k.id) \
             JOIN conversations c ON c.id = m.conversation_id \
             WHERE k.seq = ?2 AND k.conversation_id = ?1 \
             ORDER BY m.sent_at DESC, m.id DESC LIMIT +?3"
        )
    }

    /// `?1` conversation row, `?2` arrival bound, `?3` limit: for a cursor that is not a
    /// message of the conversation. Walks the index from the newest entry and skips those that
    /// arrived at or after the bound.
    pub(crate) fn before_arrival() -> String {
        format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m \
             INDEXED BY messages_by_conversation_time \
             JOIN conversations c ON c.id = m.conversation_id \
             WHERE m.conversation_id = ?1 AND m.seq < ?2 \
             ORDER BY m.sent_at DESC, m.id DESC LIMIT +?3"
        )
    }

    /// `?1` conversation row, `?2` arrival bound, `?3` limit: arrival order, newest first.
    pub(crate) fn arrived_before() -> String {
        format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m INDEXED BY messages_by_conversation \
             JOIN conversations c ON c.id = m.conversation_id \
             WHERE m.conversation_id = ?1 AND m.seq < ?2 ORDER BY m.seq DESC LIMIT +?3"
        )
    }
}

/// A page of history in the senders' order: `(sent_at, id)` descending, strictly before the
/// cursor message's `(sent_at, id)`, which the query resolves itself. One range scan of
/// `messages_by_conversation_time`. A cursor that is not a message of this conversation is an
/// arrival bound (`seq` below it), as the trait documents.
pub(crate) fn messages_before(
    conn: &Connection,
    conversation: &ConversationId,
    before: Option<Seq>,
    n: usize,
) -> DbResult<Vec<Message>> {
    let Some(row_id) = conversation_row(conn, conversation)? else {
        return Ok(Vec::new());
    };
    let Some(cursor) = before else {
        let mut stmt = conn.prepare_cached(&history_sql::newest())?;
        return collect(stmt.query(params![row_id, limit(n)])?, codec::message);
    };
    let cursor = seq_int(cursor);
    let mut stmt = conn.prepare_cached(&history_sql::before_cursor())?;
    let page = collect(
        stmt.query(params![row_id, cursor, limit(n)])?,
        codec::message,
    )?;
    if !page.is_empty() || n == 0 || cursor_in_conversation(conn, row_id, cursor)? {
        return Ok(page);
    }
    let mut stmt = conn.prepare_cached(&history_sql::before_arrival())?;
    collect(
        stmt.query(params![row_id, cursor, limit(n)])?,
        codec::message,
    )
}

/// The latest `sent_at` in a conversation: one step into `messages_by_conversation_time`.
pub(crate) fn newest_sent_at(
    conn: &Connection,
    conversation: &ConversationId,
) -> DbResult<Option<Timestamp>> {
    let Some(row_id) = conversation_row(conn, conversation)? else {
        return Ok(None);
    };
    let newest: Option<i64> = conn
        .prepare_cached("SELECT max(sent_at) FROM messages WHERE conversation_id = ?1")?
        .query_row([row_id], |r| r.get(0))?;
    newest.map(|t| read_ts(t, "messages.sent_at")).transpose()
}

/// Messages in arrival order, newest first, `seq` below `before`: one range scan of
/// `messages_by_conversation (conversation_id, seq)`.
pub(crate) fn messages_arrived_before(
    conn: &Connection,
    conversation: &ConversationId,
    before: Option<Seq>,
    n: usize,
) -> DbResult<Vec<Message>> {
    let Some(row_id) = conversation_row(conn, conversation)? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(&history_sql::arrived_before())?;
    let before = before.map_or(i64::MAX, seq_int);
    collect(
        stmt.query(params![row_id, before, limit(n)])?,
        codec::message,
    )
}

fn cursor_in_conversation(conn: &Connection, row_id: i64, seq: i64) -> DbResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM messages WHERE seq = ?1 AND conversation_id = ?2")?
        .exists(params![seq, row_id])?)
}

/// Builds the FTS5 expression: each term quoted (a string, never an operator or a column
/// filter), with a prefix star only where the term is a prefix; terms are ANDed. Quotes inside
/// a term are doubled, FTS5's own escape, although `search_terms` never lets one through.
pub(crate) fn fts_expression(terms: &[SearchTerm]) -> String {
    terms
        .iter()
        .map(|t| {
            let quoted = format!("\"{}\"", t.word.replace('"', "\"\""));
            if t.prefix { quoted + "*" } else { quoted }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Full-text search. Indexes the pending tail first (see `fts.rs`), so the result is exact
/// whether or not maintenance has run since the last insert.
pub(crate) fn search(conn: &Connection, query: &SearchQuery) -> DbResult<Vec<SearchHit>> {
    let terms = search_terms(&query.text);
    if terms.is_empty() || query.limit == 0 {
        return Ok(Vec::new());
    }
    crate::fts::index_all_pending(conn)?;
    let conversation_row = match &query.conversation {
        Some(c) => match conversation_row(conn, c)? {
            Some(row) => Some(row),
            None => return Ok(Vec::new()),
        },
        None => None,
    };
    let Some(within) = within_rows(conn, query)? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS}, \
           snippet(messages_fts, 0, char({start}), char({end}), '…', 16) \
         FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid \
         JOIN conversations c ON c.id = m.conversation_id \
         WHERE messages_fts MATCH ?1 AND messages_fts.rowid < ?2 \
           AND (?3 IS NULL OR m.conversation_id = ?3) AND m.deleted = 0 \
           AND (?5 IS NULL OR m.conversation_id IN (SELECT value FROM json_each(?5))) \
         ORDER BY messages_fts.rowid DESC LIMIT +?4",
        start = u32::from(SNIPPET_START),
        end = u32::from(SNIPPET_END),
    ))?;
    let before = query.before.map_or(i64::MAX, seq_int);
    let mut rows = stmt.query(params![
        fts_expression(&terms),
        before,
        conversation_row,
        limit(query.limit),
        within
    ])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(SearchHit {
            message: codec::message(row)?,
            snippet: row.get(MESSAGE_COLUMN_COUNT)?,
        });
    }
    Ok(out)
}

/// The rows of [`SearchQuery::within`] as a JSON array for `json_each`: `Some(None)` when the
/// search is not restricted, `None` when nothing can match (no listed conversation has rows).
fn within_rows(conn: &Connection, query: &SearchQuery) -> DbResult<Option<Option<String>>> {
    let Some(list) = &query.within else {
        return Ok(Some(None));
    };
    let mut rows = Vec::with_capacity(list.len());
    for c in list {
        if let Some(row) = conversation_row(conn, c)? {
            rows.push(row.to_string());
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(Some(format!("[{}]", rows.join(",")))))
}

/// How many messages a search matches in all (no cursor, no limit).
pub(crate) fn search_count(conn: &Connection, query: &SearchQuery) -> DbResult<u64> {
    let terms = search_terms(&query.text);
    if terms.is_empty() {
        return Ok(0);
    }
    crate::fts::index_all_pending(conn)?;
    let conversation_row = match &query.conversation {
        Some(c) => match conversation_row(conn, c)? {
            Some(row) => Some(row),
            None => return Ok(0),
        },
        None => None,
    };
    let Some(within) = within_rows(conn, query)? else {
        return Ok(0);
    };
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid \
             WHERE messages_fts MATCH ?1 AND (?2 IS NULL OR m.conversation_id = ?2) \
               AND m.deleted = 0 \
               AND (?3 IS NULL OR m.conversation_id IN (SELECT value FROM json_each(?3)))",
        )?
        .query_row(
            params![fts_expression(&terms), conversation_row, within],
            |r| r.get(0),
        )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(crate) fn reactions(conn: &Connection, id: &MessageId) -> DbResult<Vec<ReactionSummary>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, emoji FROM reactions WHERE message_id = ?1 \
         ORDER BY created_at, rowid",
    )?;
    let mut rows = stmt.query([uuid(&id.0)])?;
    let mut out: Vec<ReactionSummary> = Vec::new();
    while let Some(row) = rows.next()? {
        let u = read_user(&row.get::<_, Vec<u8>>(0)?, "reactions.user_id")?;
        let emoji: String = row.get(1)?;
        match out.iter_mut().find(|r| r.emoji == emoji) {
            Some(r) => {
                r.count += 1;
                r.users.push(u);
            }
            None => out.push(ReactionSummary {
                emoji,
                count: 1,
                users: vec![u],
            }),
        }
    }
    Ok(out)
}

pub(crate) fn olm_sessions(
    conn: &Connection,
    u: &UserId,
    device: &DeviceId,
) -> DbResult<Vec<OlmSessionRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {OLM_COLUMNS} FROM olm_sessions WHERE peer_user = ?1 AND peer_device = ?2 \
         ORDER BY last_used_at DESC, created_at DESC, session_id DESC"
    ))?;
    collect(
        stmt.query(params![user(u), device.as_str()])?,
        codec::olm_session,
    )
}

pub(crate) fn olm_sessions_for_key(
    conn: &Connection,
    key: &Curve25519Key,
) -> DbResult<Vec<OlmSessionRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {OLM_COLUMNS} FROM olm_sessions WHERE peer_curve25519 = ?1 \
         ORDER BY last_used_at DESC, created_at DESC, session_id DESC"
    ))?;
    collect(stmt.query([key.as_bytes()])?, codec::olm_session)
}

pub(crate) fn megolm_inbound(
    conn: &Connection,
    session_id: &str,
) -> DbResult<Option<MegolmInboundRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MEGOLM_INBOUND_COLUMNS} FROM megolm_inbound WHERE session_id = ?1"
    ))?;
    first(stmt.query([session_id])?, codec::megolm_inbound)
}

pub(crate) fn megolm_inbound_for_channel(
    conn: &Connection,
    channel: &ChannelId,
) -> DbResult<Vec<MegolmInboundRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MEGOLM_INBOUND_COLUMNS} FROM megolm_inbound WHERE channel_id = ?1 \
         ORDER BY created_at, session_id"
    ))?;
    collect(stmt.query([channel.as_bytes()])?, codec::megolm_inbound)
}

pub(crate) fn megolm_outbound(
    conn: &Connection,
    channel: &ChannelId,
) -> DbResult<Option<MegolmOutboundRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MEGOLM_OUTBOUND_COLUMNS} FROM megolm_outbound WHERE channel_id = ?1"
    ))?;
    first(stmt.query([channel.as_bytes()])?, codec::megolm_outbound)
}

pub(crate) fn megolm_seen(conn: &Connection, session_id: &str, index: u32) -> DbResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM megolm_seen WHERE session_id = ?1 AND idx = ?2")?
        .exists(params![session_id, index])?)
}

pub(crate) fn megolm_waiting(
    conn: &Connection,
    session_id: &str,
) -> DbResult<Vec<MegolmWaitingRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MEGOLM_WAITING_COLUMNS} FROM megolm_waiting WHERE session_id = ?1 ORDER BY idx"
    ))?;
    collect(stmt.query([session_id])?, codec::megolm_waiting)
}

pub(crate) fn channel_ciphertexts(
    conn: &Connection,
    channel: &ChannelId,
    max: usize,
) -> DbResult<Vec<ChannelCiphertextRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CHANNEL_HISTORY_COLUMNS} FROM channel_history WHERE channel_id = ?1 \
         ORDER BY received_at DESC, session_id DESC, idx DESC LIMIT ?2"
    ))?;
    let mut out = collect(
        stmt.query(params![channel.as_bytes().to_vec(), limit(max)])?,
        codec::channel_ciphertext,
    )?;
    out.reverse();
    Ok(out)
}

pub(crate) fn megolm_waiting_sessions(
    conn: &Connection,
    max: usize,
) -> DbResult<Vec<MegolmWaitingRecord>> {
    // One row per session: the one of its lowest index (the primary key's order).
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MEGOLM_WAITING_COLUMNS} FROM megolm_waiting w \
         WHERE idx = (SELECT MIN(idx) FROM megolm_waiting v WHERE v.session_id = w.session_id) \
         ORDER BY session_id LIMIT ?1"
    ))?;
    collect(stmt.query([limit(max)])?, codec::megolm_waiting)
}

pub(crate) fn megolm_waiting_in_channel(
    conn: &Connection,
    channel: &ChannelId,
    max: usize,
) -> DbResult<Vec<MegolmWaitingRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MEGOLM_WAITING_COLUMNS} FROM megolm_waiting WHERE channel_id = ?1 \
         ORDER BY received_at, session_id, idx LIMIT ?2"
    ))?;
    collect(
        stmt.query(params![channel.as_bytes().to_vec(), limit(max)])?,
        codec::megolm_waiting,
    )
}

pub(crate) fn spaces(conn: &Connection) -> DbResult<Vec<SpaceId>> {
    let mut stmt =
        conn.prepare_cached("SELECT DISTINCT space_id FROM space_ops ORDER BY space_id")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(codec::read_space(
            &row.get::<_, Vec<u8>>(0)?,
            "space_ops.space_id",
        )?);
    }
    Ok(out)
}

pub(crate) fn space_ops(conn: &Connection, space: &SpaceId) -> DbResult<Vec<SpaceOpRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SPACE_OP_COLUMNS} FROM space_ops WHERE space_id = ?1 ORDER BY depth, op_id"
    ))?;
    collect(stmt.query([space.as_bytes()])?, codec::space_op)
}

/// `?1` peer, `?2` limit.
pub(crate) fn outbox_for_peer_sql() -> String {
    format!(
        "SELECT {OUTBOX_COLUMNS} FROM outbox o JOIN outbox_items i ON i.id = o.item \
         WHERE o.peer_user = ?1 ORDER BY o.pos LIMIT +?2"
    )
}

pub(crate) fn outbox_for_peer(
    conn: &Connection,
    peer: &UserId,
    n: usize,
) -> DbResult<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached(&outbox_for_peer_sql())?;
    collect(
        stmt.query(params![user(peer), limit(n)])?,
        codec::outbox_entry,
    )
}

/// The pump's outbox queries. Each names `outbox_by_peer_due`, so its cost follows the peers
/// and the window, not the whole outbox (a test reads their plans).
pub(crate) mod outbox_sql {
    use super::OUTBOX_COLUMNS;

    /// A peer's due entries in the order they fell due, queue order among equals: ?1 peer,
    /// ?2 now, ?3 limit.
    pub(crate) fn due_for_peer() -> String {
        format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox o INDEXED BY outbox_by_peer_due \
             JOIN outbox_items i ON i.id = o.item \
             WHERE o.peer_user = ?1 AND o.next_attempt_at <= ?2 \
             ORDER BY o.next_attempt_at, o.pos LIMIT +?3"
        )
    }

    /// The first peer after ?1 with queued entries, and when its earliest one falls due (one
    /// step of a skip-scan over the peers).
    pub(crate) const NEXT_PEER_HEAD: &str = "SELECT peer_user, next_attempt_at FROM outbox \
         INDEXED BY outbox_by_peer_due WHERE peer_user > ?1 \
         ORDER BY peer_user, next_attempt_at LIMIT 1";
}

pub(crate) fn outbox_due_for_peer(
    conn: &Connection,
    peer: &UserId,
    now: Timestamp,
    n: usize,
) -> DbResult<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached(&outbox_sql::due_for_peer())?;
    collect(
        stmt.query(params![user(peer), ts(now)?, limit(n)])?,
        codec::outbox_entry,
    )
}

/// Every peer with queued entries and when its earliest entry falls due, in peer order: one
/// index seek per peer.
fn outbox_heads(conn: &Connection) -> DbResult<Vec<(UserId, Timestamp)>> {
    let mut stmt = conn.prepare_cached(outbox_sql::NEXT_PEER_HEAD)?;
    let mut heads = Vec::new();
    let mut after: Vec<u8> = Vec::new();
    // Each step returns a peer strictly greater than the last, so this ends after one step per
    // peer (plus one).
    while let Some((peer, due)) = stmt
        .query_row([&after], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?
    {
        heads.push((
            read_user(&peer, "outbox.peer_user")?,
            read_ts(due, "outbox.next_attempt_at")?,
        ));
        after = peer;
    }
    Ok(heads)
}

pub(crate) fn outbox_due_peers(conn: &Connection, now: Timestamp) -> DbResult<Vec<UserId>> {
    Ok(outbox_heads(conn)?
        .into_iter()
        .filter(|(_, due)| *due <= now)
        .map(|(peer, _)| peer)
        .collect())
}

pub(crate) fn outbox_next_attempt_at(conn: &Connection) -> DbResult<Option<Timestamp>> {
    Ok(outbox_heads(conn)?.into_iter().map(|(_, due)| due).min())
}

pub(crate) fn is_processed(conn: &Connection, id: &EnvelopeId) -> DbResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM processed_envelopes WHERE envelope_id = ?1")?
        .exists([uuid(&id.0)])?)
}

pub(crate) fn prune_processed(conn: &Connection, before: Timestamp) -> DbResult<u64> {
    let rows = conn
        .prepare_cached("DELETE FROM processed_envelopes WHERE received_at < ?1")?
        .execute([ts(before)?])?;
    Ok(rows as u64)
}

pub(crate) fn transfer(conn: &Connection, id: &TransferId) -> DbResult<Option<FileTransfer>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers t JOIN conversations c \
         ON c.id = t.conversation_id WHERE t.id = ?1"
    ))?;
    first(stmt.query([uuid(&id.0)])?, codec::transfer)
}

pub(crate) fn transfers(
    conn: &Connection,
    conversation: &ConversationId,
) -> DbResult<Vec<FileTransfer>> {
    let Some(row_id) = conversation_row(conn, conversation)? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers t JOIN conversations c \
         ON c.id = t.conversation_id WHERE t.conversation_id = ?1 ORDER BY t.created_at, t.id"
    ))?;
    collect(stmt.query([row_id])?, codec::transfer)
}

pub(crate) fn transfers_of_blob(conn: &Connection, blob: &BlobHash) -> DbResult<Vec<FileTransfer>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers t INDEXED BY transfers_by_blob \
         JOIN conversations c ON c.id = t.conversation_id WHERE t.blob = ?1 \
         ORDER BY t.created_at, t.id"
    ))?;
    collect(stmt.query([blob.as_bytes().as_slice()])?, codec::transfer)
}

pub(crate) fn blob_holders(conn: &Connection, blob: &BlobHash) -> DbResult<Vec<UserId>> {
    let mut stmt =
        conn.prepare_cached("SELECT user_id FROM blob_holders WHERE blob = ?1 ORDER BY user_id")?;
    let mut rows = stmt.query([blob.as_bytes().as_slice()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read_user(
            &row.get::<_, Vec<u8>>(0)?,
            "blob_holders.user_id",
        )?);
    }
    // Ascending as `UserId` orders (the bytes' order may differ).
    out.sort();
    Ok(out)
}

pub(crate) fn unfinished_transfers(conn: &Connection) -> DbResult<Vec<FileTransfer>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers t INDEXED BY transfers_unfinished \
         JOIN conversations c ON c.id = t.conversation_id \
         WHERE t.state NOT IN ('done', 'failed', 'cancelled') ORDER BY t.created_at, t.id"
    ))?;
    collect(stmt.query([])?, codec::transfer)
}

pub(crate) fn setting(conn: &Connection, key: &str) -> DbResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}
