//! Writes: one [`Changes`] batch is one SQLite transaction. Statements are prepared once and
//! cached on the connection, which is what makes batched inserts fast.

use crate::codec::group_ranges;
use crate::codec::{self, DbResult, conversation_key, int_u64, seq_int, ts, user, uuid};
use dopus_core::store::{
    Applied, Change, Changes, ConversationId, DeliveryState, MessageId, NewMessage, Outcome,
    StoreError,
};
use dopus_types::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

pub(crate) fn apply(conn: &mut Connection, changes: Changes) -> DbResult<Applied> {
    let tx = conn.transaction()?;
    let applied = apply_all(&tx, changes)?;
    tx.commit()?;
    Ok(applied)
}

/// Applies `changes` inside the batch transaction that is already open on `conn`, under a
/// savepoint: on error none of them takes effect, and the batch stays open.
pub(crate) fn apply_in_batch(conn: &mut Connection, changes: Changes) -> DbResult<Applied> {
    let sp = conn.savepoint()?;
    let applied = apply_all(&sp, changes)?;
    sp.commit()?;
    Ok(applied)
}

fn apply_all(tx: &Connection, changes: Changes) -> DbResult<Applied> {
    let mut outcomes = Vec::with_capacity(changes.len());
    for change in changes {
        outcomes.push(apply_change(tx, change)?);
    }
    Ok(Applied { outcomes })
}

fn changed(rows: usize) -> Outcome {
    if rows > 0 {
        Outcome::Applied
    } else {
        Outcome::Unchanged
    }
}

/// The row id of a conversation, creating it if needed; `true` when it was created.
pub(crate) fn ensure_conversation(
    tx: &Connection,
    id: &ConversationId,
    now: Timestamp,
) -> DbResult<(i64, bool)> {
    let (kind, key) = conversation_key(id);
    let existing: Option<i64> = tx
        .prepare_cached("SELECT id FROM conversations WHERE kind = ?1 AND ref = ?2")?
        .query_row(params![kind, key], |r| r.get(0))
        .optional()?;
    if let Some(row_id) = existing {
        return Ok((row_id, false));
    }
    tx.prepare_cached("INSERT INTO conversations (kind, ref, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![kind, key, ts(now)?])?;
    Ok((tx.last_insert_rowid(), true))
}

fn insert_message(tx: &Connection, m: NewMessage) -> DbResult<Outcome> {
    // Checked before inserting: `INSERT … ON CONFLICT DO NOTHING` would spend an AUTOINCREMENT
    // number on a duplicate and leave a gap in `seq` (the differential test caught it).
    let existing: Option<i64> = tx
        .prepare_cached("SELECT seq FROM messages WHERE id = ?1")?
        .query_row([uuid(&m.id.0)], |r| r.get(0))
        .optional()?;
    if let Some(seq) = existing {
        return Ok(Outcome::Duplicate(codec::read_seq(seq, "messages.seq")?));
    }
    let (conversation_id, _) = ensure_conversation(tx, &m.conversation, m.received_at)?;
    let preview = m
        .preview
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|_| StoreError::Invalid("message preview"))?;
    tx.prepare_cached(
        "INSERT INTO messages (id, conversation_id, sender, kind, body, reply_to, sent_at, \
         received_at, delivery, preview) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        uuid(&m.id.0),
        conversation_id,
        user(&m.sender),
        m.kind.as_str(),
        m.body,
        m.reply_to.as_ref().map(|r| uuid(&r.0)),
        ts(m.sent_at)?,
        ts(m.received_at)?,
        m.delivery.as_str(),
        preview,
    ])?;
    Ok(Outcome::Inserted(codec::read_seq(
        tx.last_insert_rowid(),
        "messages.seq",
    )?))
}

fn edit_message(
    tx: &Connection,
    id: MessageId,
    body: String,
    edited_at: Timestamp,
) -> DbResult<Outcome> {
    let current: Option<(bool, Option<i64>)> = tx
        .prepare_cached("SELECT deleted, edited_at FROM messages WHERE id = ?1")?
        .query_row([uuid(&id.0)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((deleted, previous)) = current else {
        return Ok(Outcome::Unchanged);
    };
    let edited = ts(edited_at)?;
    if deleted || previous.is_some_and(|p| edited <= p) {
        return Ok(Outcome::Unchanged);
    }
    let rows = tx
        .prepare_cached("UPDATE messages SET body = ?2, edited_at = ?3 WHERE id = ?1")?
        .execute(params![uuid(&id.0), body, edited])?;
    Ok(changed(rows))
}

fn delete_message(tx: &Connection, id: MessageId) -> DbResult<Outcome> {
    let rows = tx
        .prepare_cached(
            "UPDATE messages SET deleted = 1, body = '', preview = NULL \
             WHERE id = ?1 AND deleted = 0",
        )?
        .execute([uuid(&id.0)])?;
    if rows > 0 {
        tx.prepare_cached("DELETE FROM reactions WHERE message_id = ?1")?
            .execute([uuid(&id.0)])?;
    }
    Ok(changed(rows))
}

/// One guarded `UPDATE`: the row changes only from a state that can become `state`
/// ([`DeliveryState::can_become`]), so the forward-only rule costs no read when the state
/// moves (the common case); only a refused move reads the row, to tell corrupt data apart.
fn set_delivery(tx: &Connection, id: MessageId, state: DeliveryState) -> DbResult<Outcome> {
    // One statement per target state, written once (the SQL is the statement cache's key).
    static SQL: std::sync::OnceLock<Vec<(DeliveryState, String)>> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        DeliveryState::ALL
            .iter()
            .map(|&to| {
                let from: Vec<String> = DeliveryState::ALL
                    .iter()
                    .filter(|s| s.can_become(to))
                    .map(|s| format!("'{}'", s.as_str()))
                    .collect();
                let sql = if from.is_empty() {
                    String::new()
                } else {
                    format!(
                        "UPDATE messages SET delivery = ?2 WHERE id = ?1 AND delivery IN ({})",
                        from.join(", ")
                    )
                };
                (to, sql)
            })
            .collect()
    });
    let Some(statement) = sql
        .iter()
        .find(|(to, sql)| *to == state && !sql.is_empty())
        .map(|(_, sql)| sql)
    else {
        return Ok(Outcome::Unchanged);
    };
    let rows = tx
        .prepare_cached(statement)?
        .execute(params![uuid(&id.0), state.as_str()])?;
    if rows == 0 {
        // Not moved: the message is unknown or already as far. A stored state that is not a
        // known text is corrupt data, reported as such.
        let current: Option<String> = tx
            .prepare_cached("SELECT delivery FROM messages WHERE id = ?1")?
            .query_row([uuid(&id.0)], |r| r.get(0))
            .optional()?;
        if let Some(current) = current {
            codec::read_enum(&current, DeliveryState::parse, "messages.delivery")?;
        }
    }
    Ok(changed(rows))
}

fn apply_change(tx: &Connection, change: Change) -> DbResult<Outcome> {
    Ok(match change {
        Change::SaveAccount(a) => {
            tx.prepare_cached(
                "INSERT INTO account (id, user_id, identity_pickle, device_id, device_ed25519, \
                 device_curve25519, account_pickle, certificate_json, display_name, created_at) \
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
                 identity_pickle = excluded.identity_pickle, device_id = excluded.device_id, \
                 device_ed25519 = excluded.device_ed25519, \
                 device_curve25519 = excluded.device_curve25519, \
                 account_pickle = excluded.account_pickle, \
                 certificate_json = excluded.certificate_json, \
                 display_name = excluded.display_name, created_at = excluded.created_at",
            )?
            .execute(params![
                user(&a.user_id),
                a.identity_pickle.as_str(),
                a.device_id.as_str(),
                a.device_keys.ed25519.as_bytes(),
                a.device_keys.curve25519.as_bytes(),
                a.account_pickle.as_str(),
                a.certificate_json,
                a.display_name,
                ts(a.created_at)?,
            ])?;
            Outcome::Applied
        }
        Change::SetAccountPickle(p) => {
            let rows = tx
                .prepare_cached("UPDATE account SET account_pickle = ?1 WHERE id = 1")?
                .execute([p.as_str()])?;
            if rows == 0 {
                return Err(StoreError::NotFound("account").into());
            }
            Outcome::Applied
        }
        Change::SavePeerDevice(d) => {
            tx.prepare_cached(
                "INSERT INTO peer_devices (user_id, device_id, ed25519, curve25519, \
                 certificate_json, first_seen, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (user_id, device_id) DO UPDATE SET ed25519 = excluded.ed25519, \
                 curve25519 = excluded.curve25519, certificate_json = excluded.certificate_json, \
                 first_seen = excluded.first_seen, updated_at = excluded.updated_at",
            )?
            .execute(params![
                user(&d.user_id),
                d.device_id.as_str(),
                d.keys.ed25519.as_bytes(),
                d.keys.curve25519.as_bytes(),
                d.certificate_json,
                ts(d.first_seen)?,
                ts(d.updated_at)?,
            ])?;
            Outcome::Applied
        }
        Change::RemovePeerDevice { user: u, device } => changed(
            tx.prepare_cached("DELETE FROM peer_devices WHERE user_id = ?1 AND device_id = ?2")?
                .execute(params![user(&u), device.as_str()])?,
        ),
        Change::SaveContact(c) => {
            tx.prepare_cached(
                "INSERT INTO contacts (user_id, display_name, verified, blocked, state, \
                 request_note, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name, \
                 verified = excluded.verified, blocked = excluded.blocked, state = excluded.state, \
                 request_note = excluded.request_note, created_at = excluded.created_at, \
                 updated_at = excluded.updated_at",
            )?
            .execute(params![
                user(&c.user_id),
                c.display_name,
                c.verified,
                c.blocked,
                c.state.as_str(),
                c.request_note,
                ts(c.created_at)?,
                ts(c.updated_at)?,
            ])?;
            Outcome::Applied
        }
        Change::RemoveContact(u) => changed(
            tx.prepare_cached("DELETE FROM contacts WHERE user_id = ?1")?
                .execute([user(&u)])?,
        ),
        Change::SaveOlmSession(s) => {
            let (created_at, last_used_at) = (ts(s.created_at)?, ts(s.last_used_at)?);
            let fields = params![
                s.session_id,
                user(&s.peer_user),
                s.peer_device.as_str(),
                s.peer_curve25519.as_bytes(),
                s.pickle.as_str(),
                created_at,
                last_used_at,
            ];
            // The usual save advances a known session: only its pickle and last use change,
            // and neither is indexed, so no index page is touched. Anything else (a new
            // session, or a record whose other fields differ) is an upsert of every field.
            let advanced = tx
                .prepare_cached(
                    "UPDATE olm_sessions SET pickle = ?5, last_used_at = ?7 WHERE session_id = ?1 \
                     AND peer_user = ?2 AND peer_device = ?3 AND peer_curve25519 = ?4 \
                     AND created_at = ?6",
                )?
                .execute(fields)?;
            if advanced == 0 {
                tx.prepare_cached(
                    "INSERT INTO olm_sessions (session_id, peer_user, peer_device, \
                     peer_curve25519, pickle, created_at, last_used_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (session_id) DO UPDATE SET peer_user = excluded.peer_user, \
                     peer_device = excluded.peer_device, \
                     peer_curve25519 = excluded.peer_curve25519, pickle = excluded.pickle, \
                     created_at = excluded.created_at, last_used_at = excluded.last_used_at",
                )?
                .execute(fields)?;
            }
            Outcome::Applied
        }
        Change::RemoveOlmSession { session_id } => changed(
            tx.prepare_cached("DELETE FROM olm_sessions WHERE session_id = ?1")?
                .execute([session_id])?,
        ),
        Change::SaveMegolmInbound(s) => {
            tx.prepare_cached(
                "INSERT INTO megolm_inbound (session_id, space_id, channel_id, sender_user, \
                 sender_device, sender_cert, announcement, shared_history, forwarded, \
                 first_index, pickle, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (session_id) DO UPDATE SET space_id = excluded.space_id, \
                 channel_id = excluded.channel_id, sender_user = excluded.sender_user, \
                 sender_device = excluded.sender_device, sender_cert = excluded.sender_cert, \
                 announcement = excluded.announcement, \
                 shared_history = excluded.shared_history, forwarded = excluded.forwarded, \
                 first_index = excluded.first_index, pickle = excluded.pickle, \
                 created_at = excluded.created_at",
            )?
            .execute(params![
                s.session_id,
                s.space.as_bytes(),
                s.channel.as_bytes(),
                user(&s.sender_user),
                s.sender_device.as_str(),
                s.sender_certificate_json,
                s.announcement.as_bytes(),
                s.shared_history,
                s.forwarded,
                s.first_index,
                s.pickle.as_str(),
                ts(s.created_at)?,
            ])?;
            Outcome::Applied
        }
        Change::SaveMegolmOutbound(s) => {
            tx.prepare_cached(
                "INSERT INTO megolm_outbound (channel_id, space_id, session_id, pickle, \
                 created_at, message_count, shared_history, shared_with) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (channel_id) DO UPDATE SET space_id = excluded.space_id, \
                 session_id = excluded.session_id, pickle = excluded.pickle, \
                 created_at = excluded.created_at, message_count = excluded.message_count, \
                 shared_history = excluded.shared_history, shared_with = excluded.shared_with",
            )?
            .execute(params![
                s.channel.as_bytes(),
                s.space.as_bytes(),
                s.session_id,
                s.pickle.as_str(),
                ts(s.created_at)?,
                int_u64(s.message_count, "megolm message count")?,
                s.shared_history,
                codec::shared_with_json(&s.shared_with)?,
            ])?;
            Outcome::Applied
        }
        Change::RemoveMegolmOutbound(channel) => changed(
            tx.prepare_cached("DELETE FROM megolm_outbound WHERE channel_id = ?1")?
                .execute([channel.as_bytes()])?,
        ),
        Change::EnsureConversation { id, now } => {
            if ensure_conversation(tx, &id, now)?.1 {
                Outcome::Applied
            } else {
                Outcome::Unchanged
            }
        }
        Change::InsertMessage(m) => insert_message(tx, m)?,
        Change::EditMessage {
            id,
            body,
            edited_at,
        } => edit_message(tx, id, body, edited_at)?,
        Change::DeleteMessage(id) => delete_message(tx, id)?,
        Change::SetDelivery { id, state } => set_delivery(tx, id, state)?,
        Change::React {
            message,
            user: u,
            emoji,
            add,
            at,
        } => {
            let rows = if add {
                tx.prepare_cached(
                    "INSERT INTO reactions (message_id, user_id, emoji, created_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )?
                .execute(params![uuid(&message.0), user(&u), emoji, ts(at)?])?
            } else {
                tx.prepare_cached(
                    "DELETE FROM reactions WHERE message_id = ?1 AND user_id = ?2 AND emoji = ?3",
                )?
                .execute(params![uuid(&message.0), user(&u), emoji])?
            };
            changed(rows)
        }
        Change::MarkRead {
            conversation,
            up_to,
        } => {
            let (kind, key) = conversation_key(&conversation);
            changed(
                tx.prepare_cached(
                    "UPDATE conversations SET last_read_seq = ?3 WHERE kind = ?1 AND ref = ?2 \
                     AND (last_read_seq IS NULL OR last_read_seq < ?3)",
                )?
                .execute(params![kind, key, seq_int(up_to)])?,
            )
        }
        Change::OutboxEnqueue(item) => {
            tx.prepare_cached(
                "INSERT INTO outbox_items (envelope_id, bytes, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (envelope_id) DO NOTHING",
            )?
            .execute(params![uuid(&item.id.0), item.bytes, ts(item.created_at)?])?;
            let mut rows = 0;
            let mut insert = tx.prepare_cached(
                "INSERT INTO outbox (item, envelope_id, peer_user, peer_device, attempts, \
                 next_attempt_at) \
                 SELECT id, envelope_id, ?2, ?3, 0, ?4 FROM outbox_items WHERE envelope_id = ?1 \
                 ON CONFLICT (envelope_id, peer_user) DO NOTHING",
            )?;
            for r in &item.recipients {
                rows += insert.execute(params![
                    uuid(&item.id.0),
                    user(&r.user),
                    r.device.as_ref().map(|d| d.as_str()),
                    ts(item.next_attempt_at)?,
                ])?;
            }
            changed(rows)
        }
        Change::OutboxReschedule {
            id,
            peer,
            attempts,
            next_attempt_at,
        } => changed(
            tx.prepare_cached(
                "UPDATE outbox SET attempts = ?3, next_attempt_at = ?4 \
                 WHERE envelope_id = ?1 AND peer_user = ?2",
            )?
            .execute(params![
                uuid(&id.0),
                user(&peer),
                attempts,
                ts(next_attempt_at)?
            ])?,
        ),
        Change::OutboxAck { id, peer } => {
            let rows = tx
                .prepare_cached("DELETE FROM outbox WHERE envelope_id = ?1 AND peer_user = ?2")?
                .execute(params![uuid(&id.0), user(&peer)])?;
            if rows > 0 {
                tx.prepare_cached(
                    "DELETE FROM outbox_items WHERE envelope_id = ?1 \
                     AND NOT EXISTS (SELECT 1 FROM outbox WHERE envelope_id = ?1)",
                )?
                .execute([uuid(&id.0)])?;
            }
            changed(rows)
        }
        Change::OutboxRemove(id) => {
            let rows = tx
                .prepare_cached("DELETE FROM outbox WHERE envelope_id = ?1")?
                .execute([uuid(&id.0)])?;
            tx.prepare_cached("DELETE FROM outbox_items WHERE envelope_id = ?1")?
                .execute([uuid(&id.0)])?;
            changed(rows)
        }
        Change::MarkProcessed { id, received_at } => changed(
            tx.prepare_cached(
                "INSERT INTO processed_envelopes (envelope_id, received_at) VALUES (?1, ?2) \
                 ON CONFLICT (envelope_id) DO NOTHING",
            )?
            .execute(params![uuid(&id.0), ts(received_at)?])?,
        ),
        Change::SaveTransfer(t) => {
            let (conversation_id, _) = ensure_conversation(tx, &t.conversation, t.created_at)?;
            let manifest = serde_json::to_string(&t.manifest)
                .map_err(|_| StoreError::Invalid("transfer manifest"))?;
            let source = t.source.as_ref();
            tx.prepare_cached(
                "INSERT INTO transfers (id, conversation_id, message_id, direction, blob, \
                 manifest, state, reason, verified, source_path, source_size, \
                 source_modified_ns, source_inode, saved_path, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
                 ON CONFLICT (id) DO UPDATE SET conversation_id = excluded.conversation_id, \
                 message_id = excluded.message_id, direction = excluded.direction, \
                 blob = excluded.blob, manifest = excluded.manifest, state = excluded.state, \
                 reason = excluded.reason, verified = excluded.verified, \
                 source_path = excluded.source_path, source_size = excluded.source_size, \
                 source_modified_ns = excluded.source_modified_ns, \
                 source_inode = excluded.source_inode, saved_path = excluded.saved_path, \
                 created_at = excluded.created_at, updated_at = excluded.updated_at",
            )?
            .execute(params![
                uuid(&t.id.0),
                conversation_id,
                t.message.as_ref().map(|m| uuid(&m.0)),
                t.direction.as_str(),
                t.manifest.blob.as_bytes().as_slice(),
                manifest,
                t.state.as_str(),
                t.reason.map(|r| r.as_str()),
                group_ranges(&t.verified),
                source.map(|s| s.path.as_str()),
                source.map(|s| int_u64(s.size, "source size")).transpose()?,
                source.map(|s| s.modified_ns),
                source.map(|s| s.inode.to_be_bytes()),
                t.saved_path,
                ts(t.created_at)?,
                ts(t.updated_at)?,
            ])?;
            Outcome::Applied
        }
        Change::SetTransferProgress { id, verified, at } => changed(
            tx.prepare_cached("UPDATE transfers SET verified = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![uuid(&id.0), group_ranges(&verified), ts(at)?])?,
        ),
        Change::SetTransferState {
            id,
            state,
            reason,
            at,
        } => changed(
            tx.prepare_cached(
                "UPDATE transfers SET state = ?2, reason = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![
                uuid(&id.0),
                state.as_str(),
                reason.map(|r| r.as_str()),
                ts(at)?
            ])?,
        ),
        Change::SetTransferSavedPath { id, path, at } => changed(
            tx.prepare_cached(
                "UPDATE transfers SET saved_path = ?2, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![uuid(&id.0), path, ts(at)?])?,
        ),
        Change::AddBlobHolder { blob, user: u, at } => changed(
            tx.prepare_cached(
                "INSERT INTO blob_holders (blob, user_id, added_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (blob, user_id) DO NOTHING",
            )?
            .execute(params![blob.as_bytes().as_slice(), user(&u), ts(at)?])?,
        ),
        Change::RemoveBlobHolders { blob } => changed(
            tx.prepare_cached("DELETE FROM blob_holders WHERE blob = ?1")?
                .execute(params![blob.as_bytes().as_slice()])?,
        ),
        Change::PruneBlobHolders { before } => changed(
            tx.prepare_cached("DELETE FROM blob_holders WHERE added_at < ?1")?
                .execute(params![ts(before)?])?,
        ),
        Change::RemoveBlobHolder { blob, user: u } => changed(
            tx.prepare_cached("DELETE FROM blob_holders WHERE blob = ?1 AND user_id = ?2")?
                .execute(params![blob.as_bytes().as_slice(), user(&u)])?,
        ),
        Change::RemoveTransfer(id) => changed(
            tx.prepare_cached("DELETE FROM transfers WHERE id = ?1")?
                .execute([uuid(&id.0)])?,
        ),
        Change::SaveSpaceOp(op) => changed(
            tx.prepare_cached(
                "INSERT INTO space_ops (space_id, op_id, depth, op_json, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (space_id, op_id) DO NOTHING",
            )?
            .execute(params![
                op.space.as_bytes(),
                op.id.as_bytes(),
                int_u64(op.depth, "op depth")?,
                op.json,
                ts(op.received_at)?,
            ])?,
        ),
        Change::RemoveSpace(space) => {
            let key = space.as_bytes();
            let mut rows = tx
                .prepare_cached("DELETE FROM space_ops WHERE space_id = ?1")?
                .execute([key])?;
            rows += tx
                .prepare_cached("DELETE FROM megolm_inbound WHERE space_id = ?1")?
                .execute([key])?;
            rows += tx
                .prepare_cached("DELETE FROM megolm_outbound WHERE space_id = ?1")?
                .execute([key])?;
            rows += tx
                .prepare_cached("DELETE FROM channel_history WHERE space_id = ?1")?
                .execute([key])?;
            changed(rows)
        }
        Change::MarkMegolmSeen {
            session_id,
            index,
            at,
        } => changed(
            tx.prepare_cached(
                "INSERT INTO megolm_seen (session_id, idx, seen_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (session_id, idx) DO NOTHING",
            )?
            .execute(params![session_id, index, ts(at)?])?,
        ),
        Change::SaveMegolmWaiting(w) => changed(
            tx.prepare_cached(
                "INSERT INTO megolm_waiting (session_id, idx, sender_user, sender_device, \
                 message, received_at, space_id, channel_id, state, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (session_id, idx) DO NOTHING",
            )?
            .execute(params![
                w.session_id,
                w.index,
                user(&w.sender_user),
                w.sender_device.as_str(),
                w.message,
                ts(w.received_at)?,
                w.space.as_ref().map(|s| s.as_bytes().to_vec()),
                w.channel.as_ref().map(|c| c.as_bytes().to_vec()),
                w.state.as_str(),
                w.state.reason_str(),
            ])?,
        ),
        Change::RemoveMegolmWaiting { session_id } => changed(
            tx.prepare_cached("DELETE FROM megolm_waiting WHERE session_id = ?1")?
                .execute([session_id])?,
        ),
        Change::KeepChannelCiphertext(c) => {
            let rows = tx
                .prepare_cached(
                    "INSERT INTO channel_history (session_id, idx, space_id, channel_id, message, \
                     received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (session_id, idx) DO NOTHING",
                )?
                .execute(params![
                    c.session_id,
                    c.index,
                    c.space.as_bytes().to_vec(),
                    c.channel.as_bytes().to_vec(),
                    c.message,
                    ts(c.received_at)?,
                ])?;
            if rows > 0 {
                tx.prepare_cached(
                    "DELETE FROM channel_history WHERE (session_id, idx) IN \
                     (SELECT session_id, idx FROM channel_history WHERE channel_id = ?1 \
                      ORDER BY received_at DESC, session_id DESC, idx DESC \
                      LIMIT -1 OFFSET ?2)",
                )?
                .execute(params![
                    c.channel.as_bytes().to_vec(),
                    i64::try_from(dopus_core::store::MAX_KEPT_CIPHERTEXTS).unwrap_or(i64::MAX),
                ])?;
            }
            changed(rows)
        }
        Change::SetMegolmWaitState { session_id, state } => changed(
            tx.prepare_cached(
                "UPDATE megolm_waiting SET state = ?2, reason = ?3 WHERE session_id = ?1",
            )?
            .execute(params![session_id, state.as_str(), state.reason_str()])?,
        ),
        Change::SetSetting { key, value } => match value {
            Some(value) => {
                tx.prepare_cached(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![key, value])?;
                Outcome::Applied
            }
            None => changed(
                tx.prepare_cached("DELETE FROM settings WHERE key = ?1")?
                    .execute([key])?,
            ),
        },
        // A change kind added to dopus-core after this code was written is refused, so the
        // batch rolls back instead of silently losing a write.
        _ => return Err(StoreError::Invalid("change kind unknown to this store").into()),
    })
}
