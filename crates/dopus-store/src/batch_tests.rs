//! Group commit: [`SqliteStore::batch`].
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed expectation is a test failure"
)]

use crate::{KdfParams, SqliteStore};
use dopus_core::store::{
    Change, Changes, ConversationId, DeliveryState, MessageId, MessageKind, NewMessage, Outcome,
    Store, StoreError, conformance::user,
};
use dopus_types::Timestamp;
use uuid::Uuid;

const PASS: &str = "batch test passphrase";

fn message(n: u128) -> NewMessage {
    NewMessage {
        preview: None,
        id: MessageId(Uuid::from_u128(n)),
        conversation: ConversationId::Direct(user(2)),
        sender: user(2),
        kind: MessageKind::Text,
        body: format!("body {n}"),
        reply_to: None,
        sent_at: Timestamp(n as u64),
        received_at: Timestamp(n as u64),
        delivery: DeliveryState::Delivered,
    }
}

fn insert(n: u128) -> Changes {
    Changes::from(Change::InsertMessage(message(n)))
}

#[test]
fn a_batch_commits_every_apply_at_once_and_reads_see_earlier_applies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = SqliteStore::create(&path, PASS, KdfParams::INSECURE_FOR_TESTS).unwrap();
    let seen = store
        .batch(|s| {
            s.apply(insert(1)).unwrap();
            let first = s.message(&MessageId(Uuid::from_u128(1))).unwrap().is_some();
            s.apply(insert(2)).unwrap();
            first
        })
        .unwrap();
    assert!(seen, "a read inside the batch sees an earlier apply");
    store.close().unwrap();
    let store = SqliteStore::open(&path, PASS).unwrap();
    assert!(
        store
            .message(&MessageId(Uuid::from_u128(1)))
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .message(&MessageId(Uuid::from_u128(2)))
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_failed_apply_inside_a_batch_takes_back_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        SqliteStore::create(&dir.path().join("s"), PASS, KdfParams::INSECURE_FOR_TESTS).unwrap();
    store
        .batch(|s| {
            s.apply(insert(1)).unwrap();
            // One change that works, then one the store refuses: neither may remain.
            let mut bad = insert(3);
            bad.push(Change::InsertMessage(NewMessage {
                body: String::new(),
                sent_at: Timestamp(u64::MAX),
                ..message(4)
            }));
            assert!(matches!(s.apply(bad), Err(StoreError::Invalid(_))));
            s.apply(insert(2)).unwrap();
        })
        .unwrap();
    for (n, present) in [(1, true), (2, true), (3, false), (4, false)] {
        assert_eq!(
            store
                .message(&MessageId(Uuid::from_u128(n)))
                .unwrap()
                .is_some(),
            present,
            "message {n}"
        );
    }
}

#[test]
fn a_panic_inside_a_batch_rolls_it_back_and_the_store_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        SqliteStore::create(&dir.path().join("s"), PASS, KdfParams::INSECURE_FOR_TESTS).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store
            .batch(|s| {
                s.apply(insert(1)).unwrap();
                panic!("boom");
            })
            .unwrap();
    }));
    assert!(panicked.is_err());
    assert!(
        store
            .message(&MessageId(Uuid::from_u128(1)))
            .unwrap()
            .is_none()
    );
    // Outside a batch, apply commits on its own again.
    assert!(matches!(
        store.apply_one(Change::InsertMessage(message(2))).unwrap(),
        Outcome::Inserted(_)
    ));
    drop(store);
}

#[test]
fn nested_batches_join_the_outer_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        SqliteStore::create(&dir.path().join("s"), PASS, KdfParams::INSECURE_FOR_TESTS).unwrap();
    store
        .batch(|s| {
            s.batch(|inner| inner.apply(insert(1)).unwrap()).unwrap();
            s.apply(insert(2)).unwrap();
        })
        .unwrap();
    assert!(
        store
            .message(&MessageId(Uuid::from_u128(2)))
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_checkpointer_moves_the_log_into_the_database_while_the_store_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = SqliteStore::create(&path, PASS, KdfParams::INSECURE_FOR_TESTS).unwrap();
    let checkpointer = store.checkpointer().unwrap();
    for n in 1..=200 {
        store.apply(insert(n)).unwrap();
    }
    let stats = checkpointer.checkpoint().unwrap();
    assert!(stats.wal_frames > 0, "200 commits left frames in the log");
    assert_eq!(
        stats.checkpointed, stats.wal_frames,
        "nothing else was reading"
    );
    // The writer goes on; a second checkpoint takes the new frames too.
    store.apply(insert(201)).unwrap();
    let again = checkpointer.checkpoint().unwrap();
    assert_eq!(again.checkpointed, again.wal_frames);
    drop(checkpointer);
    store.close().unwrap();
    let store = SqliteStore::open(&path, PASS).unwrap();
    for n in [1, 100, 201] {
        assert!(
            store
                .message(&MessageId(Uuid::from_u128(n)))
                .unwrap()
                .is_some()
        );
    }
}

#[test]
fn a_try_batch_that_answers_err_leaves_nothing_and_one_that_answers_ok_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = SqliteStore::create(&path, PASS, KdfParams::INSECURE_FOR_TESTS).unwrap();
    let id = |n: u128| MessageId(Uuid::from_u128(n));
    let refused = store
        .try_batch(|s| {
            s.apply(insert(1)).unwrap();
            assert!(s.message(&id(1)).unwrap().is_some(), "seen inside");
            Err::<(), &str>("stop")
        })
        .unwrap();
    assert_eq!(refused, Err("stop"));
    assert!(store.message(&id(1)).unwrap().is_none(), "rolled back");
    let kept = store
        .try_batch(|s| {
            s.apply(insert(2)).unwrap();
            Ok::<u8, &str>(7)
        })
        .unwrap();
    assert_eq!(kept, Ok(7));
    // A try_batch inside a batch joins it: its Err is the outer caller's to act on.
    store
        .batch(|s| {
            let inner = s.try_batch(|s| {
                s.apply(insert(3)).unwrap();
                Err::<(), &str>("inner")
            });
            assert_eq!(inner.unwrap(), Err("inner"));
        })
        .unwrap();
    store.close().unwrap();
    let store = SqliteStore::open(&path, PASS).unwrap();
    assert!(store.message(&id(1)).unwrap().is_none());
    assert!(store.message(&id(2)).unwrap().is_some());
    assert!(
        store.message(&id(3)).unwrap().is_some(),
        "the outer batch committed"
    );
}
