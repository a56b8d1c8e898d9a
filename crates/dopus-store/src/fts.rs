//! Deferred full-text indexing.
//!
//! Inserting a message does not touch the FTS5 index: that work (about 26 µs per 12-word
//! message on the reference machine, more than the rest of the insert) is done later, in large
//! chunks. `fts_watermark.indexed_seq` (migration 002) splits the messages in two:
//!
//! - `seq <= indexed_seq`: indexed with their current body. Edits and deletes keep the index
//!   exact through the update and delete triggers, in the writing transaction.
//! - `seq > indexed_seq`: not in the index at all (the pending tail). Edits and deletes touch
//!   only the row; [`index_pending`] later indexes whatever body the row has then (a deleted
//!   message has an empty body, so it adds no words).
//!
//! `seq` is AUTOINCREMENT, so new rows always land above the watermark. [`index_pending`] is
//! called by the node's maintenance step with a bound, and by search with no bound before it
//! queries ([`index_all_pending`]), so a search never misses a message, however long ago the
//! last maintenance ran.

use crate::codec::DbResult;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

/// The highest indexed `seq`.
fn watermark(conn: &Connection) -> DbResult<i64> {
    Ok(conn
        .prepare_cached("SELECT indexed_seq FROM fts_watermark WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Whether some message is not indexed yet.
pub(crate) fn has_pending(conn: &Connection) -> DbResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE seq > \
             (SELECT indexed_seq FROM fts_watermark WHERE id = 1))",
        )?
        .query_row([], |r| r.get(0))?)
}

/// Indexes up to `max_rows` of the oldest unindexed messages in one transaction and moves the
/// watermark past them; returns how many were indexed (0: nothing was pending).
///
/// Takes `&Connection` because search, a `&self` read, calls it too. Outside a transaction it
/// opens its own (`new_unchecked` is sound: the store has one connection). Inside one (the
/// node's actor runs its maintenance jobs within its batch) it writes into that transaction,
/// which commits or rolls back the rows and the watermark together.
pub(crate) fn index_pending(conn: &Connection, max_rows: usize) -> DbResult<usize> {
    if max_rows == 0 {
        return Ok(0);
    }
    let max_rows = i64::try_from(max_rows).unwrap_or(i64::MAX);
    if !conn.is_autocommit() {
        return index_range(conn, max_rows);
    }
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let rows = index_range(&tx, max_rows)?;
    tx.commit()?;
    Ok(rows)
}

/// Indexes up to `max_rows` pending messages and moves the watermark, in the open transaction.
fn index_range(tx: &Connection, max_rows: i64) -> DbResult<usize> {
    let from = watermark(tx)?;
    let upto: Option<i64> = tx
        .prepare_cached(
            "SELECT max(seq) FROM (SELECT seq FROM messages WHERE seq > ?1 ORDER BY seq LIMIT +?2)",
        )?
        .query_row(params![from, max_rows], |r| r.get(0))?;
    let Some(upto) = upto else {
        return Ok(0);
    };
    let rows = tx
        .prepare_cached(
            "INSERT INTO messages_fts (rowid, body) \
             SELECT seq, body FROM messages WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?
        .execute(params![from, upto])?;
    tx.prepare_cached("UPDATE fts_watermark SET indexed_seq = ?1 WHERE id = 1")?
        .execute([upto])?;
    Ok(rows)
}

/// Indexes the whole pending tail (what was written since the last maintenance), so a search
/// that follows sees every message. Costs nothing when the tail is empty but one lookup.
pub(crate) fn index_all_pending(conn: &Connection) -> DbResult<usize> {
    if !has_pending(conn)? {
        return Ok(0);
    }
    index_pending(conn, usize::MAX)
}
