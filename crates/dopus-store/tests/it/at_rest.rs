//! Encryption at rest: known plaintext never reaches the disk in the clear, neither in the
//! database nor in its WAL or shared-memory files, while open or after close.

use super::{PASSPHRASE, contains, snapshot, temp_store};
use dopus_core::store::{
    Change, Changes, Contact, ContactState, ConversationId, DeliveryState, MessageId, MessageKind,
    NewMessage, OutboxItem, OutboxRecipient, Store, conformance::user,
};
use dopus_types::Timestamp;
use uuid::Uuid;

const CANARIES: &[&[u8]] = &[
    b"quokka-canary-message-body",
    b"Wombat Canary Contact",
    b"canary-envelope-bytes",
];

fn write_canaries(store: &mut dopus_store::SqliteStore) {
    let bob = user(2);
    let mut batch = Changes::new();
    batch
        .push(Change::SaveContact(Contact {
            user_id: bob,
            display_name: Some("Wombat Canary Contact".into()),
            verified: true,
            blocked: false,
            state: ContactState::Accepted,
            request_note: None,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
        }))
        .push(Change::InsertMessage(NewMessage {
            preview: None,
            id: MessageId(Uuid::now_v7()),
            conversation: ConversationId::Direct(bob),
            sender: bob,
            kind: MessageKind::Text,
            body: "hello quokka-canary-message-body".into(),
            reply_to: None,
            sent_at: Timestamp(2),
            received_at: Timestamp(3),
            delivery: DeliveryState::Delivered,
        }))
        .push(Change::OutboxEnqueue(OutboxItem {
            id: Uuid::now_v7().into(),
            bytes: b"canary-envelope-bytes".to_vec(),
            created_at: Timestamp(4),
            recipients: vec![OutboxRecipient {
                user: bob,
                device: None,
            }],
            next_attempt_at: Timestamp(4),
        }));
    store.apply(batch).unwrap();
    // The data really is there (so the scan below is meaningful).
    let hits = store
        .search(&dopus_core::store::SearchQuery {
            text: "quokka".into(),
            conversation: None,
            within: None,
            before: None,
            limit: 5,
        })
        .unwrap();
    assert_eq!(hits.len(), 1);
}

fn assert_no_plaintext(dir: &std::path::Path, when: &str) {
    let files = snapshot(dir);
    assert!(files.contains_key("store.db"), "{when}: {:?}", files.keys());
    for (name, bytes) in &files {
        for canary in CANARIES {
            assert!(
                !contains(bytes, canary),
                "{when}: {name} contains {:?}",
                String::from_utf8_lossy(canary)
            );
        }
        assert!(
            !contains(bytes, PASSPHRASE.as_bytes()),
            "{when}: {name} contains the passphrase"
        );
    }
    let db = &files["store.db"];
    assert!(db.len() >= 4096);
    assert_ne!(
        &db[..16],
        b"SQLite format 3\0",
        "{when}: plaintext SQLite header"
    );
}

#[test]
fn plaintext_never_reaches_the_disk() {
    let (mut store, guard) = temp_store();
    let dir = store.dir().to_owned();
    write_canaries(&mut store);

    // While open, the newest pages live in the WAL: it must exist and be encrypted too.
    let open_files = snapshot(&dir);
    let wal = open_files
        .get("store.db-wal")
        .expect("WAL file exists while open");
    assert!(
        wal.len() > 4096,
        "WAL holds the writes ({} bytes)",
        wal.len()
    );
    assert!(open_files.contains_key("store.db-shm"));
    assert_no_plaintext(&dir, "while open");

    store.close().unwrap();
    assert_no_plaintext(&dir, "after close");

    // And the data is still there for the right passphrase.
    let store = dopus_store::SqliteStore::open(&dir, PASSPHRASE).unwrap();
    assert_eq!(
        store
            .contact(&user(2))
            .unwrap()
            .unwrap()
            .display_name
            .as_deref(),
        Some("Wombat Canary Contact")
    );
    drop(store);
    drop(guard);
}
