//! Durability under `kill -9`: a child process writes batches as fast as it can and reports
//! each commit; the parent kills it mid-stream with SIGKILL and reopens the store. Every
//! acknowledged batch must be there, and no batch may be there in part. This holds with
//! `synchronous = NORMAL` in WAL mode: a process crash loses nothing the OS already has; only
//! an OS crash or power loss can roll back the last commits (docs/storage.md, durability).

use super::PASSPHRASE;
use dopus_core::store::{
    Change, Changes, ConversationId, DeliveryState, MessageId, MessageKind, NewMessage,
    SearchQuery, Store, conformance::user,
};
use dopus_store::{KdfParams, SqliteStore};
use dopus_types::Timestamp;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

const CHILD_ENV: &str = "DOPUS_STORE_CRASH_CHILD_DIR";
const PER_BATCH: u64 = 10;
const MAX_BATCHES: u64 = 100_000;

fn id(batch: u64, i: u64) -> MessageId {
    MessageId(Uuid::from_u64_pair(batch, i))
}

/// The writer. Ignored in normal runs; the parent test starts it in a child process.
#[test]
#[ignore = "run only as the child of kill_9_loses_no_acknowledged_batch"]
#[allow(
    clippy::print_stdout,
    reason = "the child reports commits to the parent on stdout"
)]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut store = SqliteStore::open(std::path::Path::new(&dir), PASSPHRASE).unwrap();
    let peer = user(2);
    for batch in 0..MAX_BATCHES {
        let mut changes = Changes::new();
        for i in 0..PER_BATCH {
            changes.push(Change::InsertMessage(NewMessage {
                preview: None,
                id: id(batch, i),
                conversation: ConversationId::Direct(peer),
                sender: peer,
                kind: MessageKind::Text,
                body: format!("batch {batch} message {i}"),
                reply_to: None,
                sent_at: Timestamp(batch),
                received_at: Timestamp(batch),
                delivery: DeliveryState::Delivered,
            }));
        }
        changes.push(Change::SetSetting {
            key: "last_batch".into(),
            value: Some(batch.to_string()),
        });
        store.apply(changes).unwrap();
        println!("committed {batch}");
        // Maintenance now and then, so the kill can also land in the middle of indexing.
        if batch % 7 == 0 {
            store.index_pending(25).unwrap();
        }
    }
}

#[test]
fn kill_9_loses_no_acknowledged_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    SqliteStore::create(&dir, PASSPHRASE, KdfParams::INSECURE_FOR_TESTS)
        .unwrap()
        .close()
        .unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash::crash_child_writer",
            "--nocapture",
        ])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acknowledged: Option<u64> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Let it write a while, then kill it at an arbitrary point of its loop.
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("committed ") {
            acknowledged = Some(n.trim().parse().unwrap());
        }
        if acknowledged.is_some_and(|n| n >= 200) || Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let acknowledged = acknowledged.expect("the child committed at least one batch");
    assert!(
        acknowledged >= 200,
        "child too slow: {acknowledged} batches in 60 s"
    );

    let store = SqliteStore::open(&dir, PASSPHRASE).unwrap();
    let last: u64 = store
        .setting("last_batch")
        .unwrap()
        .expect("some batch committed")
        .parse()
        .unwrap();
    // Everything the child saw committed is there (it may have committed more before dying).
    assert!(
        last >= acknowledged,
        "lost acknowledged batches: {last} < {acknowledged}"
    );
    for batch in 0..=last {
        for i in 0..PER_BATCH {
            assert!(
                store.message(&id(batch, i)).unwrap().is_some(),
                "batch {batch} is missing message {i}"
            );
        }
    }
    // Nothing of a batch after the last committed one: batches are all or nothing.
    for i in 0..PER_BATCH {
        assert!(store.message(&id(last + 1, i)).unwrap().is_none());
    }
    let all = store
        .messages_before(&ConversationId::Direct(user(2)), None, usize::MAX)
        .unwrap();
    assert_eq!(all.len() as u64, (last + 1) * PER_BATCH);
    // The full-text index (partly built by the child, the rest by this search) finds every
    // committed message exactly once.
    let hits = store
        .search(&SearchQuery {
            text: "message".into(),
            conversation: None,
            within: None,
            before: None,
            limit: usize::MAX,
        })
        .unwrap();
    assert_eq!(hits.len(), all.len());
}
