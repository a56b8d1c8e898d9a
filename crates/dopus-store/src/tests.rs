//! Tests that need the SQLCipher store's insides: raw SQL to plant bad rows, schema versions,
//! the FTS index's own integrity check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed expectation is a test failure"
)]

use crate::migrations::{MIGRATIONS, Migration, SCHEMA_VERSION, migrate};
use crate::{KdfParams, OpenError, SqliteStore};
use dopus_core::store::{
    Change, Changes, ConversationId, DeliveryState, MessageId, MessageKind, NewMessage, Outcome,
    SearchHit, SearchQuery, Seq, Store, StoreError, conformance::user,
};
use dopus_types::Timestamp;
use rusqlite::Connection;
use uuid::Uuid;

const PASS: &str = "unit test passphrase";

fn temp_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::create(&dir.path().join("s"), PASS, KdfParams::INSECURE_FOR_TESTS).unwrap();
    (store, dir)
}

fn message(n: u128, body: &str) -> NewMessage {
    NewMessage {
        preview: None,
        id: MessageId(Uuid::from_u128(n)),
        conversation: ConversationId::Direct(user(2)),
        sender: user(2),
        kind: MessageKind::Text,
        body: body.into(),
        reply_to: None,
        sent_at: Timestamp(n as u64),
        received_at: Timestamp(n as u64),
        delivery: DeliveryState::Delivered,
    }
}

fn user_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn the_store_can_move_to_a_blocking_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<SqliteStore>();
    let (store, _g) = temp_store();
    let joined = std::thread::spawn(move || store.contacts().map(|c| c.len()))
        .join()
        .unwrap();
    assert_eq!(joined.unwrap(), 0);
}

#[test]
fn fresh_store_is_at_the_current_schema() {
    let (store, _g) = temp_store();
    assert_eq!(user_version(&store.conn), i64::from(SCHEMA_VERSION));
    let mode: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = store
        .conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        sync, 1,
        "synchronous = NORMAL (docs/storage.md, durability)"
    );
    let fk: i64 = store
        .conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    let cipher: String = store
        .conn
        .query_row("PRAGMA cipher_version", [], |r| r.get(0))
        .unwrap();
    assert!(!cipher.is_empty(), "SQLCipher is linked");
}

#[test]
fn a_newer_database_is_refused_and_left_alone() {
    let (store, _g) = temp_store();
    let dir = store.dir().to_owned();
    store
        .conn
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    store.close().unwrap();
    let err = SqliteStore::open(&dir, PASS).unwrap_err();
    assert!(
        matches!(err, OpenError::TooNew { found, supported }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("newer version of DiscordOpus"),
        "{err}"
    );
    // Still refused the second time: opening did not "fix" the version.
    assert!(matches!(
        SqliteStore::open(&dir, PASS),
        Err(OpenError::TooNew { .. })
    ));
}

#[test]
fn migrations_run_once_in_one_transaction() {
    let mut conn = Connection::open_in_memory().unwrap();
    let good = Migration {
        version: 1,
        name: "a",
        sql: "CREATE TABLE a (x INTEGER);",
    };
    let bad = Migration {
        version: 2,
        name: "b",
        sql: "CREATE TABLE b (x INTEGER); THIS IS NOT SQL;",
    };
    let err = migrate(&mut conn, &[good, bad]).unwrap_err();
    assert!(
        matches!(err, OpenError::Migration { version: 2, .. }),
        "{err:?}"
    );
    // Nothing of migration 1 or 2 stayed: they were in the same transaction.
    assert_eq!(user_version(&conn), 0);
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('a', 'b')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);

    migrate(&mut conn, &[good]).unwrap();
    assert_eq!(user_version(&conn), 1);
    // Already at version 1: re-running is a no-op (CREATE TABLE a would fail otherwise).
    migrate(&mut conn, &[good]).unwrap();
    let fixed = Migration {
        version: 2,
        name: "b",
        sql: "CREATE TABLE b (x INTEGER);",
    };
    migrate(&mut conn, &[good, fixed]).unwrap();
    assert_eq!(user_version(&conn), 2);
    assert!(matches!(
        migrate(&mut conn, &[good]),
        Err(OpenError::TooNew {
            found: 2,
            supported: 1
        })
    ));
}

#[test]
fn the_real_migrations_apply_to_an_empty_database() {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate(&mut conn, MIGRATIONS).unwrap();
    assert_eq!(user_version(&conn), i64::from(SCHEMA_VERSION));
}

/// The schema after all migrations. A diff here must come with a new migration file: the
/// snapshot is the reviewable record of what the database looks like.
#[test]
fn schema_snapshot() {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate(&mut conn, MIGRATIONS).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT type, name, sql FROM sqlite_master \
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY type, name",
        )
        .unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| {
            Ok(format!(
                "-- {} {}\n{};",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    insta::assert_snapshot!(rows.join("\n\n"));
}

#[test]
fn bad_rows_on_disk_are_errors_not_panics() {
    let (mut store, _g) = temp_store();
    store
        .apply_one(Change::InsertMessage(message(1, "hi")))
        .unwrap();
    let id = MessageId(Uuid::from_u128(1));

    store
        .conn
        .execute("UPDATE messages SET delivery = 'teleported'", [])
        .unwrap();
    let err = store.message(&id).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt("messages.delivery")),
        "{err:?}"
    );
    assert!(
        store
            .messages_before(&ConversationId::Direct(user(2)), None, 10)
            .is_err()
    );
    // A write that has to read the bad value fails and rolls back, too.
    assert!(
        store
            .apply_one(Change::SetDelivery {
                id,
                state: DeliveryState::Read
            })
            .is_err()
    );

    store
        .conn
        .execute(
            "UPDATE messages SET delivery = 'read', kind = 'hologram'",
            [],
        )
        .unwrap();
    assert!(matches!(
        store.message(&id),
        Err(StoreError::Corrupt("messages.kind"))
    ));
    store
        .conn
        .execute("UPDATE messages SET kind = 'text', sender = x'0102'", [])
        .unwrap();
    assert!(matches!(
        store.message(&id),
        Err(StoreError::Corrupt("messages.sender"))
    ));
    store
        .conn
        .execute("UPDATE messages SET sender = 42", [])
        .unwrap();
    assert!(matches!(
        store.message(&id),
        Err(StoreError::Corrupt("column type"))
    ));
    store
        .conn
        .execute(
            "UPDATE messages SET sender = ?1, sent_at = -5",
            [user(2).key().as_bytes()],
        )
        .unwrap();
    assert!(matches!(
        store.message(&id),
        Err(StoreError::Corrupt("messages.sent_at"))
    ));
    store
        .conn
        .execute("UPDATE conversations SET kind = 'séance'", [])
        .unwrap();
    assert!(matches!(
        store.conversations(),
        Err(StoreError::Corrupt("conversations.kind"))
    ));
}

#[test]
fn out_of_range_values_are_refused_and_roll_back() {
    let (mut store, _g) = temp_store();
    let mut m = message(1, "x");
    m.sent_at = Timestamp(u64::MAX);
    let batch = [
        Change::InsertMessage(message(2, "kept?")),
        Change::InsertMessage(m),
    ]
    .into_iter()
    .collect();
    assert!(matches!(
        store.apply(batch),
        Err(StoreError::Invalid("timestamp"))
    ));
    assert_eq!(store.message(&MessageId(Uuid::from_u128(2))).unwrap(), None);
}

fn fts_integrity_check(store: &SqliteStore, what: &str) {
    store
        .conn
        .execute(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)",
            [],
        )
        .unwrap_or_else(|e| panic!("after {what}: {e}"));
}

fn watermark(conn: &Connection) -> i64 {
    conn.query_row("SELECT indexed_seq FROM fts_watermark", [], |r| r.get(0))
        .unwrap()
}

fn common_hits(store: &SqliteStore) -> Vec<SearchHit> {
    store
        .search(&SearchQuery {
            text: "common".into(),
            conversation: None,
            within: None,
            before: None,
            limit: 100,
        })
        .unwrap()
}

/// Edits and deletes on both sides of the watermark leave an index that FTS5's own
/// integrity check accepts once the tail is indexed.
#[test]
fn fts_index_stays_consistent_with_messages() {
    let (mut store, _g) = temp_store();
    for n in 1..=50u128 {
        store
            .apply_one(Change::InsertMessage(message(
                n,
                &format!("word{n} common"),
            )))
            .unwrap();
    }
    assert_eq!(store.index_pending(usize::MAX).unwrap(), 50);
    fts_integrity_check(&store, "inserts");
    for n in 51..=100u128 {
        store
            .apply_one(Change::InsertMessage(message(
                n,
                &format!("word{n} common"),
            )))
            .unwrap();
    }
    // Half of the new tail indexed: rows 1..=75 indexed, 76..=100 pending.
    assert_eq!(store.index_pending(25).unwrap(), 25);
    for n in (1..=100u128).step_by(3) {
        store
            .apply_one(Change::EditMessage {
                id: MessageId(Uuid::from_u128(n)),
                body: format!("edited{n} common"),
                edited_at: Timestamp(1000),
            })
            .unwrap();
    }
    for n in (1..=100u128).step_by(5) {
        store
            .apply_one(Change::DeleteMessage(MessageId(Uuid::from_u128(n))))
            .unwrap();
    }
    assert_eq!(store.index_pending(usize::MAX).unwrap(), 25);
    fts_integrity_check(&store, "edits and deletes");
    let hits = common_hits(&store);
    assert_eq!(hits.len(), 100 - 20);
    assert!(hits.windows(2).all(|w| w[0].message.seq > w[1].message.seq));
    fts_integrity_check(&store, "search");
}

#[test]
fn index_pending_works_in_chunks_and_moves_the_watermark() {
    let (mut store, _g) = temp_store();
    assert_eq!(store.index_pending(10).unwrap(), 0);
    assert_eq!(watermark(&store.conn), 0);
    let batch: Changes = (1..=50u128)
        .map(|n| Change::InsertMessage(message(n, &format!("word{n} common"))))
        .collect();
    store.apply(batch).unwrap();
    assert_eq!(watermark(&store.conn), 0, "inserts do not index");
    let indexed: i64 = store
        .conn
        .query_row("SELECT count(*) FROM messages_fts_docsize", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(indexed, 0);
    assert_eq!(store.index_pending(0).unwrap(), 0);
    assert_eq!(store.index_pending(20).unwrap(), 20);
    assert_eq!(watermark(&store.conn), 20);
    assert_eq!(store.index_pending(20).unwrap(), 20);
    assert_eq!(store.index_pending(20).unwrap(), 10);
    assert_eq!(store.index_pending(20).unwrap(), 0);
    assert_eq!(watermark(&store.conn), 50);
    fts_integrity_check(&store, "chunks");
    // A search with pending rows indexes them itself.
    store
        .apply_one(Change::InsertMessage(message(51, "common tail")))
        .unwrap();
    assert_eq!(common_hits(&store).len(), 51);
    assert_eq!(watermark(&store.conn), 51);
    assert_eq!(store.index_pending(20).unwrap(), 0);
    // A rolled-back batch leaves neither rows nor index entries behind.
    let bad: Changes = [
        Change::InsertMessage(message(52, "common rolled back")),
        Change::SetAccountPickle(dopus_core::store::Pickle::new("p")),
    ]
    .into_iter()
    .collect();
    assert!(store.apply(bad).is_err());
    assert_eq!(store.index_pending(20).unwrap(), 0);
    assert_eq!(common_hits(&store).len(), 51);
    fts_integrity_check(&store, "rollback");
}

/// The node's actor runs its maintenance inside its batch (an open transaction): indexing
/// there writes into that transaction instead of failing to open its own, and a batch that
/// rolls back takes the index entries and the watermark with it.
#[test]
fn index_pending_inside_a_batch_joins_it() {
    let (mut store, _g) = temp_store();
    let batch: Changes = (1..=30u128)
        .map(|n| Change::InsertMessage(message(n, &format!("word{n} common"))))
        .collect();
    store.apply(batch).unwrap();
    let n = store.try_batch(|s| s.index_pending(20)).unwrap().unwrap();
    assert_eq!(n, 20);
    assert_eq!(watermark(&store.conn), 20);
    let rolled: Result<usize, StoreError> = store
        .try_batch(|s| {
            assert_eq!(s.index_pending(20)?, 10);
            Err(StoreError::Invalid("roll back"))
        })
        .unwrap();
    assert!(rolled.is_err());
    assert_eq!(
        watermark(&store.conn),
        20,
        "the rolled-back batch took its indexing with it"
    );
    assert_eq!(store.index_pending(20).unwrap(), 10);
    assert_eq!(common_hits(&store).len(), 30);
    fts_integrity_check(&store, "inside a batch");
}

/// A pending tail survives close and reopen: search after reopening still finds it, with the
/// bodies as edited before and after the reopen.
#[test]
fn reopen_with_a_pending_tail() {
    let (mut store, _g) = temp_store();
    let batch: Changes = (1..=40u128)
        .map(|n| Change::InsertMessage(message(n, &format!("word{n} common"))))
        .collect();
    store.apply(batch).unwrap();
    assert_eq!(store.index_pending(15).unwrap(), 15);
    store
        .apply_one(Change::EditMessage {
            id: MessageId(Uuid::from_u128(30)),
            body: "rewritten common".into(),
            edited_at: Timestamp(1000),
        })
        .unwrap();
    let dir = store.dir().to_owned();
    store.close().unwrap();
    let mut store = SqliteStore::open(&dir, PASS).unwrap();
    assert_eq!(watermark(&store.conn), 15);
    store
        .apply_one(Change::DeleteMessage(MessageId(Uuid::from_u128(35))))
        .unwrap();
    store
        .apply_one(Change::EditMessage {
            id: MessageId(Uuid::from_u128(5)),
            body: "indexed rewrite common".into(),
            edited_at: Timestamp(1000),
        })
        .unwrap();
    assert_eq!(common_hits(&store).len(), 39);
    let ids = |store: &SqliteStore, text: &str| -> Vec<u128> {
        store
            .search(&SearchQuery {
                text: text.into(),
                conversation: None,
                within: None,
                before: None,
                limit: 100,
            })
            .unwrap()
            .into_iter()
            .map(|h| h.message.id.0.as_u128())
            .collect()
    };
    assert_eq!(ids(&store, "rewritten"), [30]);
    assert!(ids(&store, "word30").is_empty());
    assert!(ids(&store, "word35").is_empty());
    assert!(ids(&store, "word5").is_empty());
    assert_eq!(ids(&store, "rewrite"), [5]);
    assert_eq!(ids(&store, "word40"), [40]);
    assert_eq!(store.index_pending(100).unwrap(), 0);
    fts_integrity_check(&store, "reopen");
}

/// A database written by schema 1 (every message indexed by the old insert trigger) migrates
/// with its index intact: the watermark starts at the newest message, edits of old messages
/// still update the index, and new messages are deferred.
#[test]
fn migration_from_v1_keeps_messages_indexed() {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate(&mut conn, &MIGRATIONS[..1]).unwrap();
    assert_eq!(user_version(&conn), 1);
    conn.execute_batch(
        "INSERT INTO conversations (id, kind, ref, created_at) VALUES (1, 'direct', x'00', 1);
         INSERT INTO messages (id, conversation_id, sender, kind, body, sent_at, received_at,
           delivery) VALUES
           (x'01', 1, x'00', 'text', 'apple banana', 30, 1, 'sent'),
           (x'02', 1, x'00', 'text', 'cherry banana', 10, 2, 'sent'),
           (x'03', 1, x'00', 'text', 'damson', 20, 3, 'sent');
         UPDATE messages SET body = 'elder banana' WHERE seq = 3;",
    )
    .unwrap();
    migrate(&mut conn, MIGRATIONS).unwrap();
    assert_eq!(user_version(&conn), i64::from(SCHEMA_VERSION));
    assert_eq!(watermark(&conn), 3);
    let matches = |conn: &Connection, word: &str| -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?1 ORDER BY rowid")
            .unwrap();
        stmt.query_map([word], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(matches(&conn, "banana"), [1, 2, 3]);
    assert!(matches(&conn, "damson").is_empty());
    // An edit of a migrated (indexed) row goes through the index.
    conn.execute("UPDATE messages SET body = 'fig' WHERE seq = 1", [])
        .unwrap();
    assert_eq!(matches(&conn, "banana"), [2, 3]);
    assert_eq!(matches(&conn, "fig"), [1]);
    // A new row is not indexed until maintenance (or a search) indexes it.
    conn.execute(
        "INSERT INTO messages (id, conversation_id, sender, kind, body, sent_at, received_at, \
         delivery) VALUES (x'04', 1, x'00', 'text', 'grape banana', 5, 4, 'sent')",
        [],
    )
    .unwrap();
    assert_eq!(matches(&conn, "banana"), [2, 3]);
    assert_eq!(crate::fts::index_pending(&conn, 10).unwrap(), 1);
    assert_eq!(matches(&conn, "banana"), [2, 3, 4]);
    conn.execute(
        "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)",
        [],
    )
    .unwrap();
    // History of the migrated rows follows the senders' order.
    let order: Vec<i64> = conn
        .prepare("SELECT seq FROM messages ORDER BY sent_at DESC, seq DESC")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(order, [1, 3, 2, 4]);
}

/// A database written by schema 3 (one outbox row per envelope and peer) migrates into items
/// and deliveries without losing an entry, its order, its schedule or its bytes.
#[test]
fn migration_from_v3_splits_the_outbox_into_items_and_deliveries() {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate(&mut conn, &MIGRATIONS[..3]).unwrap();
    assert_eq!(user_version(&conn), 3);
    conn.execute_batch(
        "INSERT INTO outbox (envelope_id, peer_user, peer_device, bytes, created_at, attempts,
           next_attempt_at) VALUES
           (x'0a', x'02', NULL, x'aa', 1, 0, 5),
           (x'0b', x'03', 'dev', x'bb', 2, 3, 9),
           (x'0c', x'02', NULL, x'cc', 3, 1, 7);",
    )
    .unwrap();
    migrate(&mut conn, MIGRATIONS).unwrap();
    assert_eq!(user_version(&conn), i64::from(SCHEMA_VERSION));
    type Row = (Vec<u8>, Vec<u8>, Option<String>, Vec<u8>, i64, i64, i64);
    let rows: Vec<Row> = conn
        .prepare(
            "SELECT o.envelope_id, o.peer_user, o.peer_device, i.bytes, i.created_at, o.attempts,
               o.next_attempt_at FROM outbox o JOIN outbox_items i ON i.id = o.item ORDER BY o.pos",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![
            (vec![0x0a], vec![0x02], None, vec![0xaa], 1, 0, 5),
            (
                vec![0x0b],
                vec![0x03],
                Some("dev".into()),
                vec![0xbb],
                2,
                3,
                9
            ),
            (vec![0x0c], vec![0x02], None, vec![0xcc], 3, 1, 7),
        ]
    );
    let old: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_003'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 0);
}

/// The history page is one range scan of the (conversation_id, sent_at, id) index, with the
/// cursor resolved inside the query: no sort of the conversation, whatever its size.
#[test]
fn history_pages_use_the_time_index() {
    let (store, _g) = temp_store();
    use crate::queries::history_sql;
    let queries: [(String, &[i64]); 3] = [
        (history_sql::newest(), &[1, 50]),
        (history_sql::before_cursor(), &[1, 2, 50]),
        (history_sql::before_arrival(), &[1, 2, 50]),
    ];
    for (sql, params) in queries {
        let plan: Vec<String> = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("messages_by_conversation_time"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}

#[test]
fn search_expression_quotes_every_term() {
    use crate::queries::fts_expression;
    use dopus_core::store::SearchTerm;
    let term = |word: &str, prefix| SearchTerm {
        word: word.into(),
        prefix,
    };
    assert_eq!(
        fts_expression(&[term("a", false), term("b\"c", true)]),
        "\"a\" \"b\"\"c\"*"
    );
}

#[test]
fn duplicate_insert_reports_the_first_seq() {
    let (mut store, _g) = temp_store();
    let first = store
        .apply_one(Change::InsertMessage(message(1, "a")))
        .unwrap();
    let Outcome::Inserted(seq) = first else {
        panic!("{first:?}")
    };
    assert!(seq > Seq(0));
    assert_eq!(
        store
            .apply_one(Change::InsertMessage(message(1, "b")))
            .unwrap(),
        Outcome::Duplicate(seq)
    );
}

#[test]
fn search_folds_accents_both_ways() {
    let (mut store, _g) = temp_store();
    store
        .apply_one(Change::InsertMessage(message(
            1,
            "Un café crème, s'il vous plaît",
        )))
        .unwrap();
    store
        .apply_one(Change::InsertMessage(message(2, "plain cafe")))
        .unwrap();
    let ids = |text: &str| -> Vec<u128> {
        store
            .search(&SearchQuery {
                text: text.into(),
                conversation: None,
                within: None,
                before: None,
                limit: 10,
            })
            .unwrap()
            .into_iter()
            .map(|h| h.message.id.0.as_u128())
            .collect()
    };
    assert_eq!(ids("cafe"), [2, 1]);
    assert_eq!(ids("CAFÉ"), [2, 1]);
    assert_eq!(ids("creme plait"), [1]);
}

#[test]
fn search_counts_every_match_and_pages_by_seq() {
    let (mut store, _g) = temp_store();
    for i in 1..=7u128 {
        let body = if i % 2 == 0 {
            "nothing here"
        } else {
            "needle in a haystack"
        };
        store
            .apply_one(Change::InsertMessage(message(i, body)))
            .unwrap();
    }
    let query = |before: Option<Seq>| SearchQuery {
        text: "needle".into(),
        conversation: None,
        within: None,
        before,
        limit: 2,
    };
    // 1, 3, 5, 7 match; the count ignores the cursor and the limit.
    assert_eq!(store.search_count(&query(None)).unwrap(), 4);
    let first = store.search(&query(None)).unwrap();
    assert_eq!(first.len(), 2);
    let next = store.search(&query(Some(first[1].message.seq))).unwrap();
    let ids: Vec<u128> = first
        .iter()
        .chain(&next)
        .map(|h| h.message.id.0.as_u128())
        .collect();
    assert_eq!(ids, [7, 5, 3, 1]);
    // The in-memory store agrees (the trait's default count).
    let mut memory = dopus_core::store::MemoryStore::default();
    for i in 1..=7u128 {
        let body = if i % 2 == 0 {
            "nothing here"
        } else {
            "needle in a haystack"
        };
        memory
            .apply_one(Change::InsertMessage(message(i, body)))
            .unwrap();
    }
    assert_eq!(memory.search_count(&query(None)).unwrap(), 4);
}

/// SQLite re-prepares a statement whose plan read a bound value (since 3.47 it reads a bound
/// `LIMIT ?`) every time that parameter is bound again: the history queries ran the SQL parser
/// on every call. They must be prepared once and reused.
#[test]
fn history_statements_are_not_re_prepared_on_every_call() {
    let (mut store, _g) = temp_store();
    let conversation = ConversationId::Direct(user(2));
    let changes: Changes = (1..=5u128)
        .map(|n| Change::InsertMessage(message(n, "hello")))
        .collect();
    store.apply(changes).unwrap();
    for _ in 0..3 {
        assert_eq!(
            store.messages_before(&conversation, None, 1).unwrap().len(),
            1
        );
        assert_eq!(
            store.messages_before(&conversation, None, 3).unwrap().len(),
            3
        );
        assert_eq!(
            store
                .messages_arrived_before(&conversation, None, 2)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(store.outbox_for_peer(&user(2), 64).unwrap().len(), 0);
    }
    let sql = [
        crate::queries::history_sql::newest(),
        crate::queries::history_sql::arrived_before(),
        crate::queries::outbox_for_peer_sql(),
    ];
    for sql in sql {
        let stmt = store.conn.prepare_cached(&sql).unwrap();
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "re-prepared: {sql}"
        );
    }
}

/// The pump asks its outbox questions every round: each must be answered from
/// `outbox_by_peer_due` in index order (no sort, no full scan), so a round costs what the
/// peers and the window cost, not what the whole outbox holds.
#[test]
fn the_pump_queries_read_only_what_they_answer() {
    let (store, _g) = temp_store();
    let sql = [
        crate::queries::outbox_sql::due_for_peer(),
        crate::queries::outbox_sql::NEXT_PEER_HEAD.to_owned(),
    ];
    for sql in sql {
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let params: Vec<i64> = vec![0; stmt.parameter_count()];
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join("; ");
        let via_index = ["outbox", "o"].iter().any(|table| {
            plan.starts_with(&format!("SEARCH {table} USING INDEX outbox_by_peer_due"))
                || plan.starts_with(&format!(
                    "SEARCH {table} USING COVERING INDEX outbox_by_peer_due"
                ))
        });
        assert!(via_index, "{sql}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "a sort: {sql}: {plan}");
    }
}

#[test]
fn bad_transfer_rows_are_corrupt_not_guessed() {
    use dopus_core::store::{FileTransfer, TransferDirection, TransferId, TransferState};
    use dopus_core::transfer::GroupSet;
    use dopus_proto::transfer::{FILE_FORMAT_VERSION, FileKey, FileManifest, FileNonce, PlainHash};
    let (mut store, _g) = temp_store();
    let id = TransferId(Uuid::from_u128(1));
    store
        .apply_one(Change::SaveTransfer(FileTransfer {
            id,
            conversation: ConversationId::Direct(user(2)),
            message: None,
            direction: TransferDirection::Incoming,
            manifest: FileManifest {
                version: FILE_FORMAT_VERSION,
                blob: dopus_types::BlobHash::from_bytes([1; 32]),
                size: 1 << 30,
                key: FileKey([2; 32]),
                nonce: FileNonce([3; 12]),
                name: "a.bin".into(),
                mime: "application/octet-stream".into(),
                plain_blake3: PlainHash([4; 32]),
                dimensions: None,
                duration_ms: None,
                thumbnail: None,
            },
            state: TransferState::Transferring,
            reason: None,
            verified: [0..10, 20..30].into_iter().collect::<GroupSet>(),
            source: None,
            saved_path: None,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
        }))
        .unwrap();
    assert!(store.transfer(&id).unwrap().is_some());
    let plant = |store: &SqliteStore, sql: &str| {
        store.conn.execute(sql, []).unwrap();
    };
    let good = store.transfer(&id).unwrap().unwrap();
    for (sql, column) in [
        // 15 bytes, overlapping ranges, an empty range.
        (
            "UPDATE transfers SET verified = x'000000000000000000000000000000'",
            "transfers.verified",
        ),
        (
            "UPDATE transfers SET verified = x'0000000000000000000000000000000a00000000000000050000000000000014'",
            "transfers.verified",
        ),
        (
            "UPDATE transfers SET verified = x'0000000000000005000000000000000500'",
            "transfers.verified",
        ),
        (
            "UPDATE transfers SET manifest = '{\"version\":1}'",
            "transfers.manifest",
        ),
        ("UPDATE transfers SET blob = x'02'", "transfers.blob"),
        (
            "UPDATE transfers SET state = 'teleporting'",
            "transfers.state",
        ),
        (
            "UPDATE transfers SET reason = 'boredom'",
            "transfers.reason",
        ),
    ] {
        plant(&store, sql);
        assert!(
            matches!(store.transfer(&id), Err(StoreError::Corrupt(c)) if c == column),
            "{sql}: {:?}",
            store.transfer(&id)
        );
        assert!(store.unfinished_transfers().is_err());
        // Put the good row back.
        store.apply_one(Change::SaveTransfer(good.clone())).unwrap();
        assert_eq!(store.transfer(&id).unwrap(), Some(good.clone()));
    }
}
