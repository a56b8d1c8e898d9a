//! One behaviour for every store: the suite that `MemoryStore` and the SQLCipher store both
//! run, so protocol tests written against the memory store mean the same on disk.
//!
//! Use it with [`store_conformance_tests!`](crate::store_conformance_tests), giving a function
//! that makes a fresh, empty store and a guard that keeps its backing resources (a temporary
//! directory) alive:
//!
//! ```ignore
//! dopus_core::store_conformance_tests!(|| (MemoryStore::new(), ()));
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test suite: a failed expectation is a test failure"
)]

use super::*;
use dopus_types::{BlobHash, DeviceKeys, Ed25519Key, SpaceId};
use uuid::Uuid;

/// Generates one `#[test]` per conformance check. `$make` is an expression of a function type
/// `FnOnce() -> (S, G)`: a fresh store and a guard dropped after the test.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests $make;
            account_and_pickle,
            batch_is_atomic,
            messaging_step_in_one_batch,
            peer_devices,
            contacts_crud,
            conversations_get_or_create,
            insert_is_idempotent,
            pagination_newest_first,
            history_follows_the_senders_order,
            history_ties_break_by_id_and_cursors_hold_when_older_messages_arrive,
            edits_converge,
            delete_erases_content,
            delivery_moves_forward_only,
            conversation_list_and_unread,
            search_matches_words,
            search_is_injection_safe,
            search_follows_edits_and_deletes,
            search_right_after_a_batch_without_maintenance,
            search_follows_edits_and_deletes_of_indexed_and_pending_rows,
            reactions_aggregate,
            olm_sessions_newest_used_first,
            megolm_sessions,
            megolm_replays_and_waiting,
            channel_ciphertexts_kept_and_bounded,
            outbox_fifo_per_peer,
            outbox_audience,
            processed_ids,
            transfers,
            blob_holders,
            space_ops,
            settings,
        );
    };
    (@tests $make:expr; $($name:ident,)+) => {
        $(
            #[test]
            fn $name() {
                let (mut store, guard) = ($make)();
                $crate::store::conformance::$name(&mut store);
                $crate::store::conformance::finish(store, guard);
            }
        )+
    };
}

// --- fixtures ---

/// Closes the store before its guard (a temporary directory) goes away.
pub fn finish<S, G>(store: S, guard: G) {
    drop(store);
    drop(guard);
}

/// A user from a seed (a real Ed25519 key, so the id round-trips through storage).
pub fn user(seed: u8) -> UserId {
    let vk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key();
    UserId::from_key(Ed25519Key::from_bytes(vk.as_bytes()).expect("a dalek key is valid"))
}

fn device(name: &str) -> DeviceId {
    name.parse().expect("fixture device ids are valid")
}

fn keys(seed: u8) -> DeviceKeys {
    DeviceKeys {
        ed25519: *user(seed).key(),
        curve25519: Curve25519Key::from_bytes([seed; 32]),
    }
}

fn mid(n: u128) -> MessageId {
    MessageId(Uuid::from_u128(n))
}

fn eid(n: u128) -> EnvelopeId {
    EnvelopeId(Uuid::from_u128(n))
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn direct(seed: u8) -> ConversationId {
    ConversationId::Direct(user(seed))
}

fn account() -> AccountRecord {
    AccountRecord {
        user_id: user(1),
        identity_pickle: Pickle::new("identity-pickle"),
        device_id: device("dev1"),
        device_keys: keys(1),
        account_pickle: Pickle::new("account-pickle-1"),
        certificate_json: r#"{"cert":1}"#.into(),
        display_name: "Alice".into(),
        created_at: t(1),
    }
}

fn contact(seed: u8, name: &str, state: ContactState) -> Contact {
    Contact {
        user_id: user(seed),
        display_name: Some(name.into()),
        verified: false,
        blocked: false,
        state,
        request_note: None,
        created_at: t(10),
        updated_at: t(10),
    }
}

fn new_message(n: u128, conversation: ConversationId, sender: u8, body: &str) -> NewMessage {
    NewMessage {
        preview: None,
        id: mid(n),
        conversation,
        sender: user(sender),
        kind: MessageKind::Text,
        body: body.into(),
        reply_to: None,
        sent_at: t(1000 + n as u64),
        received_at: t(2000 + n as u64),
        delivery: DeliveryState::Delivered,
    }
}

fn insert<S: Store>(store: &mut S, m: NewMessage) -> Seq {
    match store.apply_one(Change::InsertMessage(m)).unwrap() {
        Outcome::Inserted(seq) => seq,
        other => panic!("expected an insert, got {other:?}"),
    }
}

fn olm(session_id: &str, peer: u8, dev: &str, created: u64, used: u64) -> OlmSessionRecord {
    OlmSessionRecord {
        peer_user: user(peer),
        peer_device: device(dev),
        peer_curve25519: Curve25519Key::from_bytes([peer; 32]),
        session_id: session_id.into(),
        pickle: Pickle::new(format!("pickle-{session_id}")),
        created_at: t(created),
        last_used_at: t(used),
    }
}

fn outbox(n: u128, peer: u8, due: u64) -> OutboxEntry {
    OutboxEntry {
        id: eid(n),
        peer_user: user(peer),
        peer_device: Some(device("d")),
        bytes: vec![n as u8; 3],
        created_at: t(n as u64),
        attempts: 0,
        next_attempt_at: t(due),
    }
}

/// Queues `entry` as an item with its one recipient.
fn enqueue(entry: OutboxEntry) -> Change {
    Change::OutboxEnqueue(OutboxItem {
        id: entry.id,
        bytes: entry.bytes,
        created_at: entry.created_at,
        recipients: vec![OutboxRecipient {
            user: entry.peer_user,
            device: entry.peer_device,
        }],
        next_attempt_at: entry.next_attempt_at,
    })
}

fn search<S: Store>(store: &S, text: &str) -> Vec<MessageId> {
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
        .map(|h| h.message.id)
        .collect()
}

// --- the checks ---

/// Account save, load and pickle-only update; the pickle update needs an account.
pub fn account_and_pickle<S: Store>(store: &mut S) {
    assert_eq!(store.account().unwrap(), None);
    let err = store
        .apply_one(Change::SetAccountPickle(Pickle::new("x")))
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound("account")), "{err:?}");
    store.apply_one(Change::SaveAccount(account())).unwrap();
    assert_eq!(store.account().unwrap(), Some(account()));
    store
        .apply_one(Change::SetAccountPickle(Pickle::new("account-pickle-2")))
        .unwrap();
    let loaded = store.account().unwrap().unwrap();
    assert_eq!(loaded.account_pickle, Pickle::new("account-pickle-2"));
    assert_eq!(loaded.identity_pickle, account().identity_pickle);
    let mut renamed = account();
    renamed.display_name = "Alice B".into();
    store
        .apply_one(Change::SaveAccount(renamed.clone()))
        .unwrap();
    assert_eq!(store.account().unwrap(), Some(renamed));
}

/// A failing change rolls back every earlier change of the same batch.
pub fn batch_is_atomic<S: Store>(store: &mut S) {
    let batch: Changes = [
        Change::SaveContact(contact(2, "Bob", ContactState::Accepted)),
        Change::InsertMessage(new_message(1, direct(2), 2, "hello")),
        enqueue(outbox(1, 2, 0)),
        Change::SetSetting {
            key: "k".into(),
            value: Some("v".into()),
        },
        // Fails: there is no account to set the pickle of.
        Change::SetAccountPickle(Pickle::new("p")),
    ]
    .into_iter()
    .collect();
    let err = store.apply(batch).unwrap_err();
    assert!(matches!(err, StoreError::NotFound("account")), "{err:?}");
    assert_eq!(store.contact(&user(2)).unwrap(), None);
    assert_eq!(store.message(&mid(1)).unwrap(), None);
    assert_eq!(store.conversation(&direct(2)).unwrap(), None);
    assert!(store.outbox_for_peer(&user(2), 10).unwrap().is_empty());
    assert_eq!(store.setting("k").unwrap(), None);
    // The store is still usable and seq numbering is unaffected by the rollback.
    let seq = insert(store, new_message(1, direct(2), 2, "hello"));
    assert!(store.message(&mid(1)).unwrap().is_some());
    let seq2 = insert(store, new_message(2, direct(2), 2, "again"));
    assert!(seq2 > seq);
}

/// What the messaging layer persists after decrypting one message, in one batch.
pub fn messaging_step_in_one_batch<S: Store>(store: &mut S) {
    store.apply_one(Change::SaveAccount(account())).unwrap();
    let mut batch = Changes::new();
    batch
        .push(Change::SetAccountPickle(Pickle::new("after-otk-used")))
        .push(Change::SaveOlmSession(olm("s1", 2, "b", 5, 5)))
        .push(Change::SaveContact(contact(
            2,
            "Bob",
            ContactState::IncomingRequest,
        )))
        .push(Change::InsertMessage(new_message(7, direct(2), 2, "hi")))
        .push(Change::MarkProcessed {
            id: eid(7),
            received_at: t(5),
        })
        .push(enqueue(outbox(70, 2, 5)))
        .push(Change::OutboxRemove(eid(70)));
    let applied = store.apply(batch).unwrap();
    assert_eq!(applied.outcomes.len(), 7);
    assert!(matches!(applied.outcomes[3], Outcome::Inserted(_)));
    assert_eq!(applied.outcomes[6], Outcome::Applied);
    assert_eq!(
        store.account().unwrap().unwrap().account_pickle,
        Pickle::new("after-otk-used")
    );
    assert_eq!(store.olm_sessions(&user(2), &device("b")).unwrap().len(), 1);
    assert_eq!(
        store.contact(&user(2)).unwrap().unwrap().state,
        ContactState::IncomingRequest
    );
    assert_eq!(store.message(&mid(7)).unwrap().unwrap().body, "hi");
    assert!(store.is_processed(&eid(7)).unwrap());
    assert!(store.outbox_for_peer(&user(2), 10).unwrap().is_empty());
    assert!(Changes::new().is_empty());
    assert_eq!(store.apply(Changes::new()).unwrap().outcomes, vec![]);
}

/// Peer devices: upsert, lookup by id and by Curve25519 key, list, remove.
pub fn peer_devices<S: Store>(store: &mut S) {
    let dev = |seed: u8, name: &str| PeerDevice {
        user_id: user(2),
        device_id: device(name),
        keys: keys(seed),
        certificate_json: format!(r#"{{"d":"{name}"}}"#),
        first_seen: t(1),
        updated_at: t(1),
    };
    store
        .apply_one(Change::SavePeerDevice(dev(20, "b")))
        .unwrap();
    store
        .apply_one(Change::SavePeerDevice(dev(21, "a")))
        .unwrap();
    assert_eq!(
        store.peer_device(&user(2), &device("b")).unwrap(),
        Some(dev(20, "b"))
    );
    assert_eq!(store.peer_device(&user(3), &device("b")).unwrap(), None);
    let names: Vec<String> = store
        .peer_devices(&user(2))
        .unwrap()
        .into_iter()
        .map(|d| d.device_id.to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        store
            .peer_device_by_curve25519(&Curve25519Key::from_bytes([21; 32]))
            .unwrap(),
        Some(dev(21, "a"))
    );
    assert_eq!(
        store
            .peer_device_by_curve25519(&Curve25519Key::from_bytes([99; 32]))
            .unwrap(),
        None
    );
    let mut updated = dev(22, "b");
    updated.updated_at = t(9);
    store
        .apply_one(Change::SavePeerDevice(updated.clone()))
        .unwrap();
    assert_eq!(
        store.peer_device(&user(2), &device("b")).unwrap(),
        Some(updated)
    );
    assert_eq!(
        store
            .apply_one(Change::RemovePeerDevice {
                user: user(2),
                device: device("a")
            })
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store
            .apply_one(Change::RemovePeerDevice {
                user: user(2),
                device: device("a")
            })
            .unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(store.peer_devices(&user(2)).unwrap().len(), 1);
}

/// Contacts: create, read, list in user-id order, update every field, remove.
pub fn contacts_crud<S: Store>(store: &mut S) {
    assert!(store.contacts().unwrap().is_empty());
    let mut ids = Vec::new();
    for seed in [5u8, 3, 4] {
        store
            .apply_one(Change::SaveContact(contact(
                seed,
                "X",
                ContactState::OutgoingRequest,
            )))
            .unwrap();
        ids.push(user(seed));
    }
    ids.sort();
    let listed: Vec<UserId> = store
        .contacts()
        .unwrap()
        .into_iter()
        .map(|c| c.user_id)
        .collect();
    assert_eq!(listed, ids);
    let mut c = contact(3, "Carol", ContactState::Declined);
    c.verified = true;
    c.blocked = true;
    c.display_name = None;
    c.request_note = Some("met at the conference".into());
    c.updated_at = t(99);
    store.apply_one(Change::SaveContact(c.clone())).unwrap();
    assert_eq!(store.contact(&user(3)).unwrap(), Some(c));
    for state in ContactState::ALL {
        let c = contact(4, "D", *state);
        store.apply_one(Change::SaveContact(c.clone())).unwrap();
        assert_eq!(store.contact(&user(4)).unwrap(), Some(c));
    }
    assert_eq!(
        store.apply_one(Change::RemoveContact(user(3))).unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store.apply_one(Change::RemoveContact(user(3))).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(store.contact(&user(3)).unwrap(), None);
    assert_eq!(store.contacts().unwrap().len(), 2);
}

/// Get-or-create keeps the first creation time.
pub fn conversations_get_or_create<S: Store>(store: &mut S) {
    assert_eq!(store.conversation(&direct(2)).unwrap(), None);
    let ensure = |now| Change::EnsureConversation {
        id: direct(2),
        now: t(now),
    };
    assert_eq!(store.apply_one(ensure(5)).unwrap(), Outcome::Applied);
    assert_eq!(store.apply_one(ensure(6)).unwrap(), Outcome::Unchanged);
    assert_eq!(
        store.conversation(&direct(2)).unwrap(),
        Some(Conversation {
            id: direct(2),
            created_at: t(5),
            last_read: None
        })
    );
    let channel = ConversationId::Channel(ChannelId::from_bytes([4; 16]));
    store
        .apply_one(Change::EnsureConversation {
            id: channel,
            now: t(1),
        })
        .unwrap();
    assert_eq!(store.conversation(&channel).unwrap().unwrap().id, channel);
    assert_eq!(store.conversations().unwrap().len(), 2);
}

/// A duplicate id is a no-op that reports the original position; seq always grows.
pub fn insert_is_idempotent<S: Store>(store: &mut S) {
    let mut m = new_message(1, direct(2), 2, "first");
    m.reply_to = Some(mid(77));
    m.kind = MessageKind::File;
    m.delivery = DeliveryState::Pending;
    let seq = insert(store, m.clone());
    let mut dup = m.clone();
    dup.body = "replaced?".into();
    assert_eq!(
        store.apply_one(Change::InsertMessage(dup)).unwrap(),
        Outcome::Duplicate(seq)
    );
    let stored = store.message(&mid(1)).unwrap().unwrap();
    assert_eq!(
        stored,
        Message {
            preview: None,
            seq,
            id: m.id,
            conversation: m.conversation,
            sender: m.sender,
            kind: MessageKind::File,
            body: "first".into(),
            reply_to: Some(mid(77)),
            edited_at: None,
            deleted: false,
            sent_at: m.sent_at,
            received_at: m.received_at,
            delivery: DeliveryState::Pending,
        }
    );
    // The conversation was created by the insert.
    assert!(store.conversation(&direct(2)).unwrap().is_some());
    let mut last = seq;
    for n in 2..20 {
        let kind = MessageKind::ALL[n as usize % MessageKind::ALL.len()];
        let mut m = new_message(n, direct(2 + (n % 3) as u8), 2, "x");
        m.kind = kind;
        let s = insert(store, m);
        assert!(s > last);
        last = s;
        assert_eq!(store.message(&mid(n)).unwrap().unwrap().kind, kind);
    }
    assert_eq!(store.message(&mid(999)).unwrap(), None);
}

/// Pages are newest first, never mix conversations and continue from the cursor.
pub fn pagination_newest_first<S: Store>(store: &mut S) {
    for n in 1..=25u128 {
        insert(store, new_message(n, direct(2), 2, &format!("a{n}")));
        insert(store, new_message(100 + n, direct(3), 3, "b"));
    }
    let page1 = store.messages_before(&direct(2), None, 10).unwrap();
    let ids: Vec<u128> = page1.iter().map(|m| m.id.0.as_u128()).collect();
    assert_eq!(ids, (16..=25).rev().collect::<Vec<_>>());
    let page2 = store
        .messages_before(&direct(2), Some(page1[9].seq), 10)
        .unwrap();
    let ids: Vec<u128> = page2.iter().map(|m| m.id.0.as_u128()).collect();
    assert_eq!(ids, (6..=15).rev().collect::<Vec<_>>());
    let page3 = store
        .messages_before(&direct(2), Some(page2[9].seq), 10)
        .unwrap();
    assert_eq!(page3.len(), 5);
    let page4 = store
        .messages_before(&direct(2), Some(page3[4].seq), 10)
        .unwrap();
    assert!(page4.is_empty());
    assert!(
        store
            .messages_before(&direct(2), None, 0)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .messages_before(&direct(9), None, 10)
            .unwrap()
            .is_empty()
    );
    assert!(page1.windows(2).all(|w| w[0].seq > w[1].seq));
}

/// History pages follow the senders' order `(sent_at, seq)`, not arrival: a message re-sent
/// after a crash arrives late but shows where it was written; equal `sent_at` are ordered by
/// message id. The cursor is the `seq` of the last message of the previous page.
pub fn history_follows_the_senders_order<S: Store>(store: &mut S) {
    // Arrival order 1..=8; sent times put 7 and 8 (re-sent late) back among the first ones.
    let sent = [
        (1, 10),
        (2, 20),
        (3, 30),
        (4, 40),
        (5, 50),
        (6, 60),
        (7, 25),
        (8, 30),
    ];
    let mut seqs = std::collections::HashMap::new();
    for (n, at) in sent {
        let mut m = new_message(n, direct(2), 2, &format!("m{n}"));
        m.sent_at = t(at);
        seqs.insert(n, insert(store, m));
        insert(store, new_message(100 + n, direct(3), 3, "other"));
    }
    let ids = |page: &[Message]| -> Vec<u128> { page.iter().map(|m| m.id.0.as_u128()).collect() };
    // Senders' order, newest first: 6(60) 5(50) 4(40) 8(30, later arrival) 3(30) 7(25) 2 1.
    let all = store.messages_before(&direct(2), None, 100).unwrap();
    assert_eq!(ids(&all), [6, 5, 4, 8, 3, 7, 2, 1]);
    assert_eq!(store.newest_sent_at(&direct(2)).unwrap(), Some(t(60)));
    assert_eq!(
        store.newest_sent_at(&direct(9)).unwrap(),
        None,
        "no such conversation"
    );
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.messages_before(&direct(2), cursor, 3).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        cursor = page.last().map(|m| m.seq);
        paged.extend(ids(&page));
    }
    assert_eq!(
        paged,
        [6, 5, 4, 8, 3, 7, 2, 1],
        "paging sees every message once"
    );
    // The cursor is a message: the page starts right after it in the senders' order, even
    // when it arrived last.
    assert_eq!(
        ids(&store
            .messages_before(&direct(2), Some(seqs[&8]), 2)
            .unwrap()),
        [3, 7]
    );
    assert_eq!(
        ids(&store
            .messages_before(&direct(2), Some(seqs[&7]), 10)
            .unwrap()),
        [2, 1]
    );
    assert!(
        store
            .messages_before(&direct(2), Some(seqs[&1]), 10)
            .unwrap()
            .is_empty()
    );
    // A cursor that is not a message of this conversation bounds by arrival: here the seq of
    // a message of another conversation that arrived right after message 4.
    let other = store
        .message(&mid(104))
        .unwrap()
        .expect("inserted above")
        .seq;
    assert_eq!(
        ids(&store.messages_before(&direct(2), Some(other), 10).unwrap()),
        [4, 3, 2, 1]
    );
    // One past the newest message: everything, in the senders' order.
    let past = Seq(seqs[&8].0 + 100);
    assert_eq!(
        ids(&store.messages_before(&direct(2), Some(past), 10).unwrap()),
        [6, 5, 4, 8, 3, 7, 2, 1]
    );
    // Arrival order is still there for logic about what reached this device.
    assert_eq!(
        ids(&store
            .messages_arrived_before(&direct(2), None, 100)
            .unwrap()),
        [8, 7, 6, 5, 4, 3, 2, 1]
    );
    assert_eq!(
        ids(&store
            .messages_arrived_before(&direct(2), Some(seqs[&7]), 3)
            .unwrap()),
        [6, 5, 4]
    );
    assert_eq!(
        ids(&store
            .messages_arrived_before(&direct(2), Some(other), 10)
            .unwrap()),
        [4, 3, 2, 1]
    );
    assert!(
        store
            .messages_arrived_before(&direct(9), None, 10)
            .unwrap()
            .is_empty()
    );
    // The conversation list still shows the latest arrival, not the latest sent_at.
    let list = store.conversations().unwrap();
    let summary = list
        .iter()
        .find(|s| s.conversation.id == direct(2))
        .expect("conversation listed");
    assert_eq!(summary.last_message.as_ref().map(|m| m.id), Some(mid(8)));
}

/// Equal `sent_at` are ordered by message id, the same on every device, not by arrival: two
/// stores that got the same messages in different orders page them identically. A cursor (the
/// `seq` of the last message of a page) names a place in that order that never moves: messages
/// that arrive later with older times (mailbox, backfill, shared history) land on the pages
/// they belong to, and paging on from a cursor neither repeats nor skips anything.
pub fn history_ties_break_by_id_and_cursors_hold_when_older_messages_arrive<S: Store>(
    store: &mut S,
) {
    let ids = |page: &[Message]| -> Vec<u128> { page.iter().map(|m| m.id.0.as_u128()).collect() };
    let at = |n: u128, ms: u64| {
        let mut m = new_message(n, direct(2), 2, &format!("m{n}"));
        m.sent_at = t(ms);
        m
    };
    // Live: 10, 20, 30 (ids 5, 6, 7). Message 9 ties with 6 at 20 and arrives after it; message
    // 3 ties with 7 at 30 and arrives after it: ids decide, so 3 comes before 7 and 6 before 9.
    for (n, ms) in [(5, 10), (6, 20), (7, 30), (9, 20), (3, 30)] {
        insert(store, at(n, ms));
    }
    let all = store.messages_before(&direct(2), None, 100).unwrap();
    assert_eq!(ids(&all), [7, 3, 9, 6, 5], "(sent_at, id) descending");
    // The newest page, then older messages arrive: one between the pages' messages, one older
    // than everything, one tying with the cursor message but with a smaller id.
    let first = store.messages_before(&direct(2), None, 2).unwrap();
    assert_eq!(ids(&first), [7, 3]);
    let cursor = first.last().map(|m| m.seq);
    for (n, ms) in [(8, 25), (1, 5), (2, 30)] {
        insert(store, at(n, ms));
    }
    let mut rest = Vec::new();
    let mut c = cursor;
    for _ in 0..10 {
        let page = store.messages_before(&direct(2), c, 2).unwrap();
        if page.is_empty() {
            break;
        }
        c = page.last().map(|m| m.seq);
        rest.extend(ids(&page));
    }
    assert_eq!(
        rest,
        [2, 8, 9, 6, 5, 1],
        "everything below the cursor, once each, in order"
    );
    assert_eq!(
        ids(&store.messages_before(&direct(2), None, 100).unwrap()),
        [7, 3, 2, 8, 9, 6, 5, 1]
    );
    // Another store that got the same messages in another order pages them the same way.
    let mut other = MemoryStore::new();
    for (n, ms) in [
        (1, 5),
        (2, 30),
        (3, 30),
        (8, 25),
        (9, 20),
        (7, 30),
        (6, 20),
        (5, 10),
    ] {
        insert(&mut other, at(n, ms));
    }
    assert_eq!(
        ids(&other.messages_before(&direct(2), None, 100).unwrap()),
        [7, 3, 2, 8, 9, 6, 5, 1]
    );
}

/// Edits apply newest-wins and never touch deleted or unknown messages.
pub fn edits_converge<S: Store>(store: &mut S) {
    insert(store, new_message(1, direct(2), 2, "orig"));
    let edit = |body: &str, at| Change::EditMessage {
        id: mid(1),
        body: body.into(),
        edited_at: t(at),
    };
    assert_eq!(store.apply_one(edit("v2", 50)).unwrap(), Outcome::Applied);
    assert_eq!(store.apply_one(edit("v1", 40)).unwrap(), Outcome::Unchanged);
    assert_eq!(
        store.apply_one(edit("v2b", 50)).unwrap(),
        Outcome::Unchanged
    );
    let m = store.message(&mid(1)).unwrap().unwrap();
    assert_eq!((m.body.as_str(), m.edited_at), ("v2", Some(t(50))));
    assert_eq!(store.apply_one(edit("v3", 60)).unwrap(), Outcome::Applied);
    assert_eq!(store.message(&mid(1)).unwrap().unwrap().body, "v3");
    assert_eq!(
        store
            .apply_one(Change::EditMessage {
                id: mid(2),
                body: "ghost".into(),
                edited_at: t(1)
            })
            .unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(store.message(&mid(2)).unwrap(), None);
    store.apply_one(Change::DeleteMessage(mid(1))).unwrap();
    assert_eq!(
        store.apply_one(edit("back", 70)).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(store.message(&mid(1)).unwrap().unwrap().body, "");
}

/// Delete clears the body and reactions, keeps a tombstone, and a late duplicate cannot
/// bring the text back.
pub fn delete_erases_content<S: Store>(store: &mut S) {
    let mut first = new_message(1, direct(2), 2, "secret words");
    let preview = dopus_proto::content::LinkPreview {
        url: "https://example.org/".into(),
        title: Some("secret title".into()),
        description: None,
        image: None,
    };
    first.preview = Some(Box::new(preview.clone()));
    let seq = insert(store, first);
    // The preview is kept with the message and read back as it was.
    assert_eq!(
        store.message(&mid(1)).unwrap().unwrap().preview.as_deref(),
        Some(&preview)
    );
    store
        .apply_one(Change::React {
            message: mid(1),
            user: user(3),
            emoji: "👍".into(),
            add: true,
            at: t(1),
        })
        .unwrap();
    assert_eq!(
        store.apply_one(Change::DeleteMessage(mid(1))).unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store.apply_one(Change::DeleteMessage(mid(1))).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        store.apply_one(Change::DeleteMessage(mid(5))).unwrap(),
        Outcome::Unchanged
    );
    let m = store.message(&mid(1)).unwrap().unwrap();
    assert!(m.deleted);
    assert_eq!(m.body, "");
    assert_eq!(m.preview, None);
    assert_eq!(m.seq, seq);
    assert!(store.reactions(&mid(1)).unwrap().is_empty());
    assert_eq!(
        store
            .apply_one(Change::InsertMessage(new_message(
                1,
                direct(2),
                2,
                "secret words"
            )))
            .unwrap(),
        Outcome::Duplicate(seq)
    );
    assert_eq!(store.message(&mid(1)).unwrap().unwrap().body, "");
    assert!(search(store, "secret").is_empty());
    // The tombstone still shows in history, so the UI can render "message deleted".
    assert_eq!(
        store.messages_before(&direct(2), None, 10).unwrap()[0].id,
        mid(1)
    );
}

/// pending < sent < delivered < read; failed only from pending; unknown ids are ignored.
pub fn delivery_moves_forward_only<S: Store>(store: &mut S) {
    let mut m = new_message(1, direct(2), 1, "x");
    m.delivery = DeliveryState::Pending;
    insert(store, m);
    let set = |store: &mut S, state| {
        store
            .apply_one(Change::SetDelivery { id: mid(1), state })
            .unwrap()
    };
    let state = |store: &S| store.message(&mid(1)).unwrap().unwrap().delivery;
    assert_eq!(set(store, DeliveryState::Failed), Outcome::Applied);
    assert_eq!(set(store, DeliveryState::Pending), Outcome::Applied);
    assert_eq!(set(store, DeliveryState::Delivered), Outcome::Applied);
    assert_eq!(set(store, DeliveryState::Sent), Outcome::Unchanged);
    assert_eq!(set(store, DeliveryState::Failed), Outcome::Unchanged);
    assert_eq!(state(store), DeliveryState::Delivered);
    assert_eq!(set(store, DeliveryState::Read), Outcome::Applied);
    assert_eq!(set(store, DeliveryState::Delivered), Outcome::Unchanged);
    assert_eq!(state(store), DeliveryState::Read);
    assert_eq!(
        store
            .apply_one(Change::SetDelivery {
                id: mid(9),
                state: DeliveryState::Read
            })
            .unwrap(),
        Outcome::Unchanged
    );
}

/// The list shows the newest message and counts unread messages from others only.
pub fn conversation_list_and_unread<S: Store>(store: &mut S) {
    store.apply_one(Change::SaveAccount(account())).unwrap();
    store
        .apply_one(Change::EnsureConversation {
            id: direct(4),
            now: t(1),
        })
        .unwrap();
    store
        .apply_one(Change::EnsureConversation {
            id: direct(5),
            now: t(2),
        })
        .unwrap();
    let s1 = insert(store, new_message(1, direct(2), 2, "from bob"));
    insert(store, new_message(2, direct(3), 3, "from carol"));
    insert(store, new_message(3, direct(2), 1, "mine")); // our own: never unread
    insert(store, new_message(4, direct(2), 2, "bob again"));
    insert(store, new_message(5, direct(2), 2, "to delete"));
    store.apply_one(Change::DeleteMessage(mid(5))).unwrap();

    let list = store.conversations().unwrap();
    let order: Vec<ConversationId> = list.iter().map(|s| s.conversation.id).collect();
    assert_eq!(order, [direct(2), direct(3), direct(5), direct(4)]);
    assert_eq!(list[0].last_message.as_ref().unwrap().id, mid(5));
    assert_eq!(list[0].unread, 2);
    assert_eq!(list[1].unread, 1);
    assert_eq!(list[2].last_message, None);
    assert_eq!(list[2].unread, 0);

    let read = |up_to| Change::MarkRead {
        conversation: direct(2),
        up_to,
    };
    assert_eq!(store.apply_one(read(s1)).unwrap(), Outcome::Applied);
    assert_eq!(store.conversations().unwrap()[0].unread, 1);
    assert_eq!(
        store.conversation(&direct(2)).unwrap().unwrap().last_read,
        Some(s1)
    );
    assert_eq!(store.apply_one(read(Seq(0))).unwrap(), Outcome::Unchanged);
    let newest = store.messages_before(&direct(2), None, 1).unwrap()[0].seq;
    store.apply_one(read(newest)).unwrap();
    assert_eq!(store.conversations().unwrap()[0].unread, 0);
    assert_eq!(
        store
            .apply_one(Change::MarkRead {
                conversation: direct(9),
                up_to: newest
            })
            .unwrap(),
        Outcome::Unchanged
    );
    // A new message moves its conversation to the top.
    insert(store, new_message(6, direct(4), 4, "hello"));
    let top = &store.conversations().unwrap()[0];
    assert_eq!((top.conversation.id, top.unread), (direct(4), 1));
}

/// Words match case-insensitively; all must match; the last (3+ letters) also as a prefix;
/// filters and paging.
pub fn search_matches_words<S: Store>(store: &mut S) {
    insert(store, new_message(1, direct(2), 2, "The quick brown fox"));
    insert(store, new_message(2, direct(2), 2, "a lazy dog sleeps"));
    insert(store, new_message(3, direct(3), 3, "Quick thinking, dog!"));
    insert(store, new_message(4, direct(3), 3, "nothing here"));
    assert_eq!(search(store, "quick"), [mid(3), mid(1)]);
    assert_eq!(search(store, "QUICK"), [mid(3), mid(1)]);
    assert_eq!(search(store, "qui"), [mid(3), mid(1)]);
    // Two letters are too short to be a prefix: whole words only.
    assert!(search(store, "qu").is_empty());
    assert_eq!(search(store, "a"), [mid(2)]);
    assert_eq!(search(store, "quick dog"), [mid(3)]);
    // Only the last word is a prefix; earlier words must be whole words.
    assert!(search(store, "qui dog").is_empty());
    assert_eq!(search(store, "dog qui"), [mid(3)]);
    assert_eq!(search(store, "lazy sle"), [mid(2)]);
    assert!(search(store, "lazy do").is_empty());
    assert_eq!(search(store, "dog"), [mid(3), mid(2)]);
    assert!(search(store, "cat").is_empty());
    assert!(search(store, "").is_empty());
    assert!(search(store, "   ").is_empty());
    let in_conv = store
        .search(&SearchQuery {
            text: "dog".into(),
            conversation: Some(direct(2)),
            within: None,
            before: None,
            limit: 10,
        })
        .unwrap();
    assert_eq!(in_conv.len(), 1);
    assert_eq!(in_conv[0].message.id, mid(2));
    assert_eq!(in_conv[0].message.body, "a lazy dog sleeps");
    // A set of conversations (a space's channels); an empty set or unknown ones match nothing.
    let within = |store: &S, list: Vec<ConversationId>| {
        let q = SearchQuery {
            text: "quick".into(),
            conversation: None,
            within: Some(list),
            before: None,
            limit: 10,
        };
        let ids: Vec<MessageId> = store
            .search(&q)
            .unwrap()
            .iter()
            .map(|h| h.message.id)
            .collect();
        (ids, store.search_count(&q).unwrap())
    };
    assert_eq!(within(store, vec![direct(3)]), (vec![mid(3)], 1));
    assert_eq!(
        within(store, vec![direct(2), direct(3)]),
        (vec![mid(3), mid(1)], 2)
    );
    assert_eq!(within(store, vec![direct(9)]), (vec![], 0));
    assert_eq!(within(store, vec![]), (vec![], 0));
    let first = store
        .search(&SearchQuery {
            text: "dog".into(),
            conversation: None,
            within: None,
            before: None,
            limit: 1,
        })
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].message.id, mid(3));
    let next = store
        .search(&SearchQuery {
            text: "dog".into(),
            conversation: None,
            within: None,
            before: Some(first[0].message.seq),
            limit: 1,
        })
        .unwrap();
    assert_eq!(next[0].message.id, mid(2));
    let snippet = &first[0].snippet;
    assert!(
        snippet.contains(&format!("{SNIPPET_START}dog{SNIPPET_END}")),
        "{snippet:?}"
    );
    assert!(
        !snippet.contains(&format!("{SNIPPET_START}Quick")),
        "{snippet:?}"
    );
    assert!(
        store
            .search(&SearchQuery {
                text: "dog".into(),
                conversation: None,
                within: None,
                before: None,
                limit: 0
            })
            .unwrap()
            .is_empty()
    );
}

/// Input that is FTS5 syntax is searched as plain words and never errors.
pub fn search_is_injection_safe<S: Store>(store: &mut S) {
    insert(store, new_message(1, direct(2), 2, "alpha beta"));
    insert(store, new_message(2, direct(2), 2, "gamma OR delta"));
    for hostile in [
        "\"",
        "\"alpha",
        "alpha\"",
        "*",
        "alpha*",
        "NEAR(alpha beta)",
        "alpha OR gamma",
        "-alpha",
        "body:alpha",
        "^alpha",
        "alpha AND",
        "(",
        ")",
        "'; DROP TABLE messages; --",
        "\u{0}",
        "{alpha}",
    ] {
        let hits = store.search(&SearchQuery {
            text: hostile.into(),
            conversation: None,
            within: None,
            before: None,
            limit: 10,
        });
        assert!(hits.is_ok(), "query {hostile:?} failed: {hits:?}");
    }
    // "OR" is a word, not an operator: both words must be present.
    assert!(search(store, "alpha OR gamma").is_empty());
    assert_eq!(search(store, "gamma OR"), [mid(2)]);
    assert_eq!(search(store, "\"alpha\""), [mid(1)]);
    assert_eq!(search(store, "body:alpha"), Vec::<MessageId>::new());
    assert_eq!(store.message(&mid(1)).unwrap().unwrap().body, "alpha beta");
}

/// Edits replace the indexed words; deleted messages leave the index.
pub fn search_follows_edits_and_deletes<S: Store>(store: &mut S) {
    insert(store, new_message(1, direct(2), 2, "typo teh word"));
    insert(store, new_message(2, direct(2), 2, "another word"));
    store
        .apply_one(Change::EditMessage {
            id: mid(1),
            body: "fixed the word".into(),
            edited_at: t(5),
        })
        .unwrap();
    assert!(search(store, "teh").is_empty());
    assert_eq!(search(store, "fixed"), [mid(1)]);
    assert_eq!(search(store, "word"), [mid(2), mid(1)]);
    store.apply_one(Change::DeleteMessage(mid(1))).unwrap();
    assert!(search(store, "fixed").is_empty());
    assert_eq!(search(store, "word"), [mid(2)]);
}

/// A whole batch is searchable at once, with no maintenance step in between (a backend that
/// indexes later must index before it answers).
pub fn search_right_after_a_batch_without_maintenance<S: Store>(store: &mut S) {
    let batch: Changes = (1..=300u128)
        .map(|n| {
            let body = if n % 10 == 0 {
                format!("needle {n}")
            } else {
                format!("hay {n}")
            };
            Change::InsertMessage(new_message(n, direct(2), 2, &body))
        })
        .collect();
    store.apply(batch).unwrap();
    let expected: Vec<MessageId> = (1..=30u128).rev().map(|n| mid(n * 10)).collect();
    assert_eq!(search(store, "needle"), expected);
    assert_eq!(search(store, "needl"), expected, "prefix");
    assert_eq!(search(store, "hay 299"), [mid(299)]);
    // A second batch after the first search: again found without maintenance.
    insert(store, new_message(301, direct(3), 3, "needle late"));
    assert_eq!(search(store, "needle late"), [mid(301)]);
    assert_eq!(search(store, "needle").len(), 31);
}

/// Edits and deletes give exact results whether the message was already indexed (by a
/// maintenance step) or is still pending, and whatever maintenance runs in between.
pub fn search_follows_edits_and_deletes_of_indexed_and_pending_rows<S: Store>(store: &mut S) {
    for n in 1..=4u128 {
        insert(
            store,
            new_message(n, direct(2), 2, &format!("old{n} shared")),
        );
    }
    // Maintenance indexes everything written so far (a no-op for an index-free backend).
    while store.index_pending(3).unwrap() > 0 {}
    for n in 5..=8u128 {
        insert(
            store,
            new_message(n, direct(2), 2, &format!("old{n} shared")),
        );
    }
    let edit = |n: u128, body: &str| Change::EditMessage {
        id: mid(n),
        body: body.into(),
        edited_at: t(10_000 + n as u64),
    };
    // 1 indexed edited, 2 indexed deleted, 5 pending edited, 6 pending deleted.
    let batch: Changes = [
        edit(1, "new1 shared"),
        Change::DeleteMessage(mid(2)),
        edit(5, "new5 shared"),
        Change::DeleteMessage(mid(6)),
    ]
    .into_iter()
    .collect();
    store.apply(batch).unwrap();
    let check = |store: &S, when: &str| {
        assert_eq!(
            search(store, "shared"),
            [mid(8), mid(7), mid(5), mid(4), mid(3), mid(1)],
            "{when}"
        );
        for gone in ["old1", "old2", "old5", "old6"] {
            assert!(search(store, gone).is_empty(), "{gone} {when}");
        }
        assert_eq!(search(store, "new1"), [mid(1)], "{when}");
        assert_eq!(search(store, "new5"), [mid(5)], "{when}");
        assert_eq!(search(store, "old8"), [mid(8)], "{when}");
    };
    // Part of the tail indexed, then all of it (search indexes the rest itself).
    let indexed = store.index_pending(2).unwrap();
    assert!(indexed <= 2, "index_pending respects its bound: {indexed}");
    check(store, "after partial maintenance");
    // Now every row is indexed: edits and deletes go through the index.
    store.apply_one(edit(7, "new7 shared")).unwrap();
    store.apply_one(Change::DeleteMessage(mid(8))).unwrap();
    assert!(search(store, "old7").is_empty());
    assert!(search(store, "old8").is_empty());
    assert_eq!(search(store, "new7"), [mid(7)]);
    assert_eq!(
        search(store, "shared"),
        [mid(7), mid(5), mid(4), mid(3), mid(1)]
    );
    assert_eq!(
        store.index_pending(100).unwrap(),
        0,
        "nothing left to index"
    );
}

/// One entry per emoji in first-appearance order, users in reaction order; idempotent.
pub fn reactions_aggregate<S: Store>(store: &mut S) {
    let react = |user_seed: u8, emoji: &str, add: bool, at: u64| Change::React {
        message: mid(1),
        user: user(user_seed),
        emoji: emoji.into(),
        add,
        at: t(at),
    };
    assert!(store.reactions(&mid(1)).unwrap().is_empty());
    // Reactions may arrive before their message.
    assert_eq!(
        store.apply_one(react(2, "👍", true, 1)).unwrap(),
        Outcome::Applied
    );
    insert(store, new_message(1, direct(2), 2, "x"));
    store.apply_one(react(3, "🎉", true, 2)).unwrap();
    store.apply_one(react(3, "👍", true, 3)).unwrap();
    assert_eq!(
        store.apply_one(react(3, "👍", true, 4)).unwrap(),
        Outcome::Unchanged
    );
    store.apply_one(react(4, "🎉", true, 5)).unwrap();
    assert_eq!(
        store.reactions(&mid(1)).unwrap(),
        vec![
            ReactionSummary {
                emoji: "👍".into(),
                count: 2,
                users: vec![user(2), user(3)]
            },
            ReactionSummary {
                emoji: "🎉".into(),
                count: 2,
                users: vec![user(3), user(4)]
            },
        ]
    );
    assert_eq!(
        store.apply_one(react(2, "👍", false, 6)).unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store.apply_one(react(2, "👍", false, 7)).unwrap(),
        Outcome::Unchanged
    );
    // 👍 now first appears at 3, after 🎉 at 2.
    let r = store.reactions(&mid(1)).unwrap();
    assert_eq!(r[0].emoji, "🎉");
    assert_eq!((r[1].emoji.as_str(), r[1].count), ("👍", 1));
    assert_eq!(r[1].users, vec![user(3)]);
    store.apply_one(react(3, "👍", false, 8)).unwrap();
    let r = store.reactions(&mid(1)).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].emoji, "🎉");
    assert!(store.reactions(&mid(2)).unwrap().is_empty());
}

/// Several sessions per device, most recently used first; lookup by key; replace; remove.
pub fn olm_sessions_newest_used_first<S: Store>(store: &mut S) {
    store
        .apply_one(Change::SaveOlmSession(olm("old", 2, "b", 1, 10)))
        .unwrap();
    store
        .apply_one(Change::SaveOlmSession(olm("new", 2, "b", 5, 20)))
        .unwrap();
    store
        .apply_one(Change::SaveOlmSession(olm("other-dev", 2, "c", 5, 30)))
        .unwrap();
    store
        .apply_one(Change::SaveOlmSession(olm("carol", 3, "b", 5, 40)))
        .unwrap();
    let ids =
        |v: Vec<OlmSessionRecord>| -> Vec<String> { v.into_iter().map(|s| s.session_id).collect() };
    assert_eq!(
        ids(store.olm_sessions(&user(2), &device("b")).unwrap()),
        ["new", "old"]
    );
    // Using the old session again moves it to the front.
    store
        .apply_one(Change::SaveOlmSession(olm("old", 2, "b", 1, 25)))
        .unwrap();
    let sessions = store.olm_sessions(&user(2), &device("b")).unwrap();
    assert_eq!(sessions[0], olm("old", 2, "b", 1, 25));
    assert_eq!(ids(sessions), ["old", "new"]);
    // A save under a known id with other fields than stored replaces every field.
    let moved = olm("carol", 3, "d", 7, 41);
    store
        .apply_one(Change::SaveOlmSession(moved.clone()))
        .unwrap();
    assert!(
        store
            .olm_sessions(&user(3), &device("b"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.olm_sessions(&user(3), &device("d")).unwrap(), [moved]);
    assert_eq!(
        ids(store
            .olm_sessions_for_key(&Curve25519Key::from_bytes([2; 32]))
            .unwrap()),
        ["other-dev", "old", "new"]
    );
    assert!(
        store
            .olm_sessions(&user(4), &device("b"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .apply_one(Change::RemoveOlmSession {
                session_id: "old".into()
            })
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        ids(store.olm_sessions(&user(2), &device("b")).unwrap()),
        ["new"]
    );
}

fn space(n: u8) -> SpaceId {
    SpaceId::from_bytes([n; 32])
}

fn chan(n: u8) -> ChannelId {
    ChannelId::from_bytes([n; 16])
}

fn inbound(session: &str, sp: u8, ch: u8, at: u64) -> MegolmInboundRecord {
    MegolmInboundRecord {
        space: space(sp),
        channel: chan(ch),
        session_id: session.into(),
        sender_user: user(2),
        sender_device: device("b"),
        sender_certificate_json: "{\"cert\":1}".into(),
        announcement: dopus_types::Signature::from_bytes([at as u8; 64]),
        shared_history: at.is_multiple_of(2),
        forwarded: at.is_multiple_of(3),
        first_index: at as u32,
        pickle: Pickle::new(format!("in-{session}")),
        created_at: t(at),
    }
}

/// Inbound sessions by id and by channel; one outbound per channel, replaceable and
/// removable, with the devices it was shared with.
pub fn megolm_sessions<S: Store>(store: &mut S) {
    let first = inbound("m1", 1, 1, 3);
    store
        .apply_one(Change::SaveMegolmInbound(first.clone()))
        .unwrap();
    store
        .apply_one(Change::SaveMegolmInbound(inbound("m0", 1, 1, 7)))
        .unwrap();
    store
        .apply_one(Change::SaveMegolmInbound(inbound("m2", 1, 2, 1)))
        .unwrap();
    assert_eq!(store.megolm_inbound("m1").unwrap(), Some(first.clone()));
    assert_eq!(store.megolm_inbound("m3").unwrap(), None);
    let ids = |v: Vec<MegolmInboundRecord>| -> Vec<String> {
        v.into_iter().map(|m| m.session_id).collect()
    };
    assert_eq!(
        ids(store.megolm_inbound_for_channel(&chan(1)).unwrap()),
        ["m1", "m0"]
    );
    assert_eq!(
        ids(store.megolm_inbound_for_channel(&chan(3)).unwrap()),
        Vec::<String>::new()
    );
    // Replacing keeps one record per session (a better copy, with a lower first index).
    let mut better = first.clone();
    better.first_index = 0;
    better.forwarded = true;
    store
        .apply_one(Change::SaveMegolmInbound(better.clone()))
        .unwrap();
    assert_eq!(store.megolm_inbound("m1").unwrap(), Some(better));
    let outbound = |n: u64| MegolmOutboundRecord {
        space: space(1),
        channel: chan(1),
        session_id: format!("o{n}"),
        pickle: Pickle::new(format!("out-{n}")),
        created_at: t(n),
        message_count: n * 10,
        shared_history: n == 2,
        shared_with: (0..n as u8).map(|i| (user(i + 2), device("d"))).collect(),
    };
    assert_eq!(store.megolm_outbound(&chan(1)).unwrap(), None);
    store
        .apply_one(Change::SaveMegolmOutbound(outbound(1)))
        .unwrap();
    store
        .apply_one(Change::SaveMegolmOutbound(outbound(2)))
        .unwrap();
    assert_eq!(store.megolm_outbound(&chan(1)).unwrap(), Some(outbound(2)));
    assert_eq!(store.megolm_outbound(&chan(2)).unwrap(), None);
    assert_eq!(
        store
            .apply_one(Change::RemoveMegolmOutbound(chan(1)))
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(store.megolm_outbound(&chan(1)).unwrap(), None);
}

/// A (session, index) is seen once; later copies are replays. Messages wait per session.
pub fn megolm_replays_and_waiting<S: Store>(store: &mut S) {
    let seen = |session: &str, index| Change::MarkMegolmSeen {
        session_id: session.into(),
        index,
        at: t(1),
    };
    assert!(!store.megolm_seen("s", 0).unwrap());
    assert_eq!(store.apply_one(seen("s", 0)).unwrap(), Outcome::Applied);
    assert_eq!(store.apply_one(seen("s", 0)).unwrap(), Outcome::Unchanged);
    assert!(store.megolm_seen("s", 0).unwrap());
    assert!(!store.megolm_seen("s", 1).unwrap());
    assert!(!store.megolm_seen("t", 0).unwrap());
    let waiting = |session: &str, index: u32| MegolmWaitingRecord {
        session_id: session.into(),
        index,
        sender_user: user(2),
        sender_device: device("b"),
        message: vec![index as u8; 10],
        received_at: t(u64::from(index)),
        space: (session == "s").then(|| SpaceId::from_bytes([7; 32])),
        channel: (session == "s").then(|| ChannelId::from_bytes([8; 16])),
        state: MegolmWaitState::Waiting,
    };
    for (session, index) in [("s", 5), ("s", 2), ("t", 1)] {
        assert_eq!(
            store
                .apply_one(Change::SaveMegolmWaiting(waiting(session, index)))
                .unwrap(),
            Outcome::Applied
        );
    }
    assert_eq!(
        store
            .apply_one(Change::SaveMegolmWaiting(waiting("s", 5)))
            .unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        store.megolm_waiting("s").unwrap(),
        vec![waiting("s", 2), waiting("s", 5)]
    );
    // One per session (its lowest index), and a channel's placeholders by arrival.
    assert_eq!(
        store.megolm_waiting_sessions(10).unwrap(),
        vec![waiting("s", 2), waiting("t", 1)]
    );
    assert_eq!(
        store.megolm_waiting_sessions(1).unwrap(),
        vec![waiting("s", 2)]
    );
    let channel = ChannelId::from_bytes([8; 16]);
    assert_eq!(
        store.megolm_waiting_in_channel(&channel, 10).unwrap(),
        vec![waiting("s", 2), waiting("s", 5)]
    );
    assert!(
        store
            .megolm_waiting_in_channel(&ChannelId::from_bytes([9; 16]), 10)
            .unwrap()
            .is_empty()
    );
    let withheld = MegolmWaitState::Withheld(dopus_proto::space::WithheldCode::HistoryNotShared);
    assert_eq!(
        store
            .apply_one(Change::SetMegolmWaitState {
                session_id: "s".into(),
                state: withheld,
            })
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store
            .apply_one(Change::SetMegolmWaitState {
                session_id: "nope".into(),
                state: withheld,
            })
            .unwrap(),
        Outcome::Unchanged
    );
    assert!(
        store
            .megolm_waiting("s")
            .unwrap()
            .iter()
            .all(|w| w.state == withheld)
    );
    assert_eq!(
        store.megolm_waiting("t").unwrap()[0].state,
        MegolmWaitState::Waiting
    );
    assert_eq!(
        store
            .apply_one(Change::RemoveMegolmWaiting {
                session_id: "s".into()
            })
            .unwrap(),
        Outcome::Applied
    );
    assert!(store.megolm_waiting("s").unwrap().is_empty());
    assert_eq!(store.megolm_waiting("t").unwrap(), vec![waiting("t", 1)]);
}

/// Kept channel ciphertexts: by channel, oldest first, a duplicate unchanged, at most
/// [`MAX_KEPT_CIPHERTEXTS`] per channel (the oldest dropped), gone with their space.
pub fn channel_ciphertexts_kept_and_bounded<S: Store>(store: &mut S) {
    let space = SpaceId::from_bytes([7; 32]);
    let (a, b) = (
        ChannelId::from_bytes([1; 16]),
        ChannelId::from_bytes([2; 16]),
    );
    let kept = |channel: ChannelId, index: u32| ChannelCiphertextRecord {
        space,
        channel,
        session_id: format!("s{}", channel.as_bytes()[0]),
        index,
        message: index.to_be_bytes().to_vec(),
        received_at: t(u64::from(index)),
    };
    let mut changes = Changes::new();
    for i in 0..(MAX_KEPT_CIPHERTEXTS as u32 + 5) {
        changes.push(Change::KeepChannelCiphertext(kept(a, i)));
    }
    changes.push(Change::KeepChannelCiphertext(kept(b, 3)));
    store.apply(changes).unwrap();
    assert_eq!(
        store
            .apply_one(Change::KeepChannelCiphertext(kept(b, 3)))
            .unwrap(),
        Outcome::Unchanged
    );
    let all = store.channel_ciphertexts(&a, usize::MAX).unwrap();
    assert_eq!(all.len(), MAX_KEPT_CIPHERTEXTS);
    assert_eq!(all[0], kept(a, 5), "the oldest went first");
    assert_eq!(
        store.channel_ciphertexts(&a, 2).unwrap(),
        vec![
            kept(a, MAX_KEPT_CIPHERTEXTS as u32 + 3),
            kept(a, MAX_KEPT_CIPHERTEXTS as u32 + 4)
        ]
    );
    assert_eq!(store.channel_ciphertexts(&b, 10).unwrap(), vec![kept(b, 3)]);
    store.apply_one(Change::RemoveSpace(space)).unwrap();
    assert!(store.channel_ciphertexts(&b, 10).unwrap().is_empty());
}

/// FIFO per peer with head-of-line order, reschedule, remove, duplicate enqueue, timers.
pub fn outbox_fifo_per_peer<S: Store>(store: &mut S) {
    assert_eq!(store.outbox_next_attempt_at().unwrap(), None);
    for (n, peer, due) in [(1, 2, 100), (2, 3, 50), (3, 2, 0), (4, 2, 0)] {
        assert_eq!(
            store.apply_one(enqueue(outbox(n, peer, due))).unwrap(),
            Outcome::Applied
        );
    }
    assert_eq!(
        store.apply_one(enqueue(outbox(1, 2, 0))).unwrap(),
        Outcome::Unchanged
    );
    let ids =
        |v: Vec<OutboxEntry>| -> Vec<u128> { v.into_iter().map(|e| e.id.0.as_u128()).collect() };
    assert_eq!(ids(store.outbox_for_peer(&user(2), 10).unwrap()), [1, 3, 4]);
    assert_eq!(ids(store.outbox_for_peer(&user(2), 2).unwrap()), [1, 3]);
    // Peer 2's oldest entry is due at 100; entries 3 and 4, queued after it, are due now and
    // are not held back by it.
    assert_eq!(
        ids(store.outbox_due_for_peer(&user(2), t(60), 10).unwrap()),
        [3, 4]
    );
    assert_eq!(
        ids(store.outbox_due_for_peer(&user(2), t(60), 1).unwrap()),
        [3]
    );
    // Due entries come in the order they fell due, queue order among equals.
    assert_eq!(
        ids(store.outbox_due_for_peer(&user(2), t(100), 10).unwrap()),
        [3, 4, 1]
    );
    assert!(
        store
            .outbox_due_for_peer(&user(9), t(100), 10)
            .unwrap()
            .is_empty()
    );
    let mut due = vec![user(2), user(3)];
    due.sort();
    assert_eq!(store.outbox_due_peers(t(60)).unwrap(), due);
    assert_eq!(store.outbox_due_peers(t(10)).unwrap(), vec![user(2)]);
    assert_eq!(store.outbox_next_attempt_at().unwrap(), Some(t(0)));
    let all = store.outbox_due_for_peer(&user(2), t(100), 10).unwrap();
    assert_eq!(all[2], outbox(1, 2, 100));
    assert_eq!(store.outbox_due_peers(t(100)).unwrap(), due);
    assert_eq!(
        store
            .apply_one(Change::OutboxReschedule {
                id: eid(1),
                peer: user(2),
                attempts: 1,
                next_attempt_at: t(200)
            })
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        ids(store.outbox_due_for_peer(&user(2), t(150), 10).unwrap()),
        [3, 4]
    );
    let head = store.outbox_due_for_peer(&user(2), t(200), 10).unwrap()[2].clone();
    assert_eq!((head.attempts, head.next_attempt_at), (1, t(200)));
    assert_eq!(
        store
            .apply_one(Change::OutboxReschedule {
                id: eid(9),
                peer: user(2),
                attempts: 1,
                next_attempt_at: t(1)
            })
            .unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        store.apply_one(Change::OutboxRemove(eid(1))).unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store.apply_one(Change::OutboxRemove(eid(1))).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        ids(store.outbox_due_for_peer(&user(2), t(0), 10).unwrap()),
        [3, 4]
    );
    assert_eq!(store.outbox_next_attempt_at().unwrap(), Some(t(0)));
    let mut no_device = outbox(5, 4, 7);
    no_device.peer_device = None;
    store.apply_one(enqueue(no_device.clone())).unwrap();
    assert_eq!(
        store.outbox_for_peer(&user(4), 10).unwrap(),
        vec![no_device]
    );
}

/// One item, several recipients: each is scheduled and acknowledged on its own, and the item
/// goes when the last recipient acknowledged it.
pub fn outbox_audience<S: Store>(store: &mut S) {
    let item = OutboxItem {
        id: eid(40),
        bytes: vec![1, 2, 3],
        created_at: t(1),
        recipients: [2, 3, 4]
            .into_iter()
            .map(|p| OutboxRecipient {
                user: user(p),
                device: None,
            })
            .collect(),
        next_attempt_at: t(5),
    };
    assert_eq!(
        store
            .apply_one(Change::OutboxEnqueue(item.clone()))
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store
            .apply_one(Change::OutboxEnqueue(item.clone()))
            .unwrap(),
        Outcome::Unchanged
    );
    let mut peers = vec![user(2), user(3), user(4)];
    peers.sort();
    assert_eq!(store.outbox_due_peers(t(5)).unwrap(), peers);
    for p in [2, 3, 4] {
        let due = store.outbox_due_for_peer(&user(p), t(5), 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].id, due[0].peer_user), (eid(40), user(p)));
        assert_eq!(due[0].bytes, vec![1, 2, 3]);
    }
    // One recipient is retried later; the others are not moved.
    store
        .apply_one(Change::OutboxReschedule {
            id: eid(40),
            peer: user(3),
            attempts: 1,
            next_attempt_at: t(50),
        })
        .unwrap();
    assert!(
        store
            .outbox_due_for_peer(&user(3), t(10), 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .outbox_due_for_peer(&user(2), t(10), 10)
            .unwrap()
            .len(),
        1
    );
    // A receipt from 2 acknowledges 2's copy only.
    let ack = |p| Change::OutboxAck {
        id: eid(40),
        peer: user(p),
    };
    assert_eq!(store.apply_one(ack(2)).unwrap(), Outcome::Applied);
    assert_eq!(store.apply_one(ack(2)).unwrap(), Outcome::Unchanged);
    assert!(store.outbox_for_peer(&user(2), 10).unwrap().is_empty());
    assert_eq!(store.outbox_for_peer(&user(4), 10).unwrap().len(), 1);
    // A late recipient can be added to the same item while others still wait.
    let late = OutboxItem {
        recipients: vec![OutboxRecipient {
            user: user(5),
            device: Some(device("x")),
        }],
        ..item.clone()
    };
    assert_eq!(
        store.apply_one(Change::OutboxEnqueue(late)).unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store.outbox_for_peer(&user(5), 10).unwrap()[0].bytes,
        vec![1, 2, 3]
    );
    for p in [3, 4, 5] {
        assert_eq!(store.apply_one(ack(p)).unwrap(), Outcome::Applied);
    }
    assert_eq!(store.outbox_next_attempt_at().unwrap(), None);
    // Removing an item removes it for everyone.
    store.apply_one(Change::OutboxEnqueue(item)).unwrap();
    assert_eq!(
        store.apply_one(Change::OutboxRemove(eid(40))).unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store.outbox_due_peers(t(100)).unwrap(),
        Vec::<UserId>::new()
    );
}

/// Processed ids: insert once, check, prune by age.
pub fn processed_ids<S: Store>(store: &mut S) {
    assert!(!store.is_processed(&eid(1)).unwrap());
    let mark = |n, at| Change::MarkProcessed {
        id: eid(n),
        received_at: t(at),
    };
    assert_eq!(store.apply_one(mark(1, 10)).unwrap(), Outcome::Applied);
    assert_eq!(store.apply_one(mark(1, 99)).unwrap(), Outcome::Unchanged);
    store.apply_one(mark(2, 20)).unwrap();
    store.apply_one(mark(3, 30)).unwrap();
    assert!(store.is_processed(&eid(1)).unwrap());
    assert_eq!(store.prune_processed(t(20)).unwrap(), 1);
    assert!(!store.is_processed(&eid(1)).unwrap());
    assert!(store.is_processed(&eid(2)).unwrap());
    assert_eq!(store.prune_processed(t(20)).unwrap(), 0);
    assert_eq!(store.prune_processed(t(1000)).unwrap(), 2);
    assert!(!store.is_processed(&eid(3)).unwrap());
}

/// Transfers: create, batched progress, state moves, lookups by blob and unfinished ones,
/// every state and reason round-trips, removal.
pub fn transfers<S: Store>(store: &mut S) {
    use dopus_proto::transfer::{
        Dimensions, FILE_FORMAT_VERSION, FileKey, FileManifest, FileNonce, GroupSet, PlainHash,
    };
    let manifest = |blob: u8| FileManifest {
        version: FILE_FORMAT_VERSION,
        blob: BlobHash::from_bytes([blob; 32]),
        size: 5_000_000_000,
        key: FileKey([7; 32]),
        nonce: FileNonce([8; 12]),
        name: "photo \u{1F600}.jpg".into(),
        mime: "image/jpeg".into(),
        plain_blake3: PlainHash([9; 32]),
        dimensions: Some(Dimensions {
            width: 640,
            height: 480,
        }),
        duration_ms: None,
        thumbnail: None,
    };
    let transfer = |n: u128, conv, blob: u8, created: u64| FileTransfer {
        id: TransferId(Uuid::from_u128(n)),
        conversation: conv,
        message: Some(MessageId(Uuid::from_u128(100 + n))),
        direction: TransferDirection::Incoming,
        manifest: manifest(blob),
        state: TransferState::Queued,
        reason: None,
        verified: GroupSet::new(),
        source: None,
        saved_path: None,
        created_at: t(created),
        updated_at: t(created),
    };
    let id = |n: u128| TransferId(Uuid::from_u128(n));
    store
        .apply_one(Change::SaveTransfer(transfer(1, direct(2), 1, 20)))
        .unwrap();
    store
        .apply_one(Change::SaveTransfer(transfer(2, direct(2), 2, 10)))
        .unwrap();
    let mut outgoing = transfer(3, direct(3), 1, 5);
    outgoing.direction = TransferDirection::Outgoing;
    outgoing.message = None;
    outgoing.source = Some(SourceFile {
        path: "/home/a/Pictures/photo \u{1F600}.jpg".into(),
        size: 5_000_000_000,
        modified_ns: 1_700_000_000_123_456_789,
        inode: u64::MAX,
    });
    store
        .apply_one(Change::SaveTransfer(outgoing.clone()))
        .unwrap();
    // A transfer's conversation exists from then on, like a message's.
    assert_eq!(
        store.conversation(&direct(3)).unwrap().unwrap().created_at,
        t(5)
    );
    assert_eq!(
        store.transfer(&id(1)).unwrap(),
        Some(transfer(1, direct(2), 1, 20))
    );
    assert_eq!(store.transfer(&id(3)).unwrap(), Some(outgoing.clone()));
    let ids = |v: Vec<FileTransfer>| v.into_iter().map(|t| t.id.0.as_u128()).collect::<Vec<_>>();
    assert_eq!(ids(store.transfers(&direct(2)).unwrap()), [2, 1]);
    assert_eq!(
        ids(store
            .transfers_of_blob(&BlobHash::from_bytes([1; 32]))
            .unwrap()),
        [3, 1]
    );
    assert!(
        store
            .transfers_of_blob(&BlobHash::from_bytes([5; 32]))
            .unwrap()
            .is_empty()
    );

    // Progress replaces the verified set; a fragmented one comes back exactly.
    let verified: GroupSet = [0..1000, 1001..1002, 5000..305_176].into_iter().collect();
    let applied = store
        .apply_one(Change::SetTransferProgress {
            id: id(1),
            verified: verified.clone(),
            at: t(30),
        })
        .unwrap();
    assert_eq!(applied, Outcome::Applied);
    let got = store.transfer(&id(1)).unwrap().unwrap();
    assert_eq!(got.verified, verified);
    assert_eq!(got.updated_at, t(30));
    // The last group is short: 5,000,000,000 bytes are 305,176 groups, the last of 12,800 bytes.
    assert_eq!(
        got.verified_bytes(),
        (1001 + 300_176) * 16_384 - (16_384 - 12_800)
    );
    assert_eq!(
        store
            .apply_one(Change::SetTransferProgress {
                id: id(9),
                verified: GroupSet::new(),
                at: t(30),
            })
            .unwrap(),
        Outcome::Unchanged
    );

    // Every state and reason round-trips; final ones leave the unfinished list.
    for (state, reason) in TransferState::ALL.iter().zip(
        TransferReason::ALL
            .iter()
            .map(Some)
            .chain(std::iter::repeat(None)),
    ) {
        store
            .apply_one(Change::SetTransferState {
                id: id(2),
                state: *state,
                reason: reason.copied(),
                at: t(40),
            })
            .unwrap();
        let got = store.transfer(&id(2)).unwrap().unwrap();
        assert_eq!((got.state, got.reason), (*state, reason.copied()));
        let unfinished = ids(store.unfinished_transfers().unwrap());
        assert_eq!(unfinished.contains(&2), !state.is_final(), "{state}");
    }
    for reason in TransferReason::ALL {
        store
            .apply_one(Change::SetTransferState {
                id: id(2),
                state: TransferState::Paused,
                reason: Some(*reason),
                at: t(41),
            })
            .unwrap();
        assert_eq!(
            store.transfer(&id(2)).unwrap().unwrap().reason,
            Some(*reason)
        );
    }
    assert_eq!(ids(store.unfinished_transfers().unwrap()), [3, 2, 1]);
    assert_eq!(
        store
            .apply_one(Change::SetTransferSavedPath {
                id: id(1),
                path: "/home/b/Downloads/photo.jpg".into(),
                at: t(50),
            })
            .unwrap(),
        Outcome::Applied
    );
    let got = store.transfer(&id(1)).unwrap().unwrap();
    assert_eq!(
        got.saved_path.as_deref(),
        Some("/home/b/Downloads/photo.jpg")
    );
    assert_eq!(got.verified, verified, "other fields untouched");

    // Replacing a transfer keeps one row.
    let mut again = transfer(1, direct(2), 1, 20);
    again.state = TransferState::Done;
    store
        .apply_one(Change::SaveTransfer(again.clone()))
        .unwrap();
    assert_eq!(store.transfer(&id(1)).unwrap(), Some(again));
    assert_eq!(ids(store.transfers(&direct(2)).unwrap()), [2, 1]);

    assert_eq!(
        store.apply_one(Change::RemoveTransfer(id(1))).unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store.apply_one(Change::RemoveTransfer(id(1))).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(store.transfer(&id(1)).unwrap(), None);
    assert_eq!(store.transfer(&id(9)).unwrap(), None);
}

/// The holders of a channel's blob (`file_have`): added once, listed ascending per blob,
/// removed on `file_revoke`.
pub fn blob_holders<S: Store>(store: &mut S) {
    let a = BlobHash::from_bytes([1; 32]);
    let b = BlobHash::from_bytes([2; 32]);
    assert!(store.blob_holders(&a).unwrap().is_empty());
    for u in [3, 1, 2] {
        assert_eq!(
            store
                .apply_one(Change::AddBlobHolder {
                    blob: a,
                    user: user(u),
                    at: Timestamp(u64::from(u) * 10),
                })
                .unwrap(),
            Outcome::Applied
        );
    }
    assert_eq!(
        store
            .apply_one(Change::AddBlobHolder {
                blob: a,
                user: user(1),
                at: Timestamp(100),
            })
            .unwrap(),
        Outcome::Unchanged,
        "a holder is known once"
    );
    store
        .apply_one(Change::AddBlobHolder {
            blob: b,
            user: user(1),
            at: Timestamp(50),
        })
        .unwrap();
    let mut want = vec![user(1), user(2), user(3)];
    want.sort();
    assert_eq!(store.blob_holders(&a).unwrap(), want);
    assert_eq!(store.blob_holders(&b).unwrap(), vec![user(1)]);
    assert_eq!(
        store
            .apply_one(Change::RemoveBlobHolder {
                blob: a,
                user: user(2),
            })
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store
            .apply_one(Change::RemoveBlobHolder {
                blob: a,
                user: user(2),
            })
            .unwrap(),
        Outcome::Unchanged
    );
    want.retain(|u| *u != user(2));
    assert_eq!(store.blob_holders(&a).unwrap(), want);
    assert_eq!(store.blob_holders(&b).unwrap(), vec![user(1)]);

    // The age bound counts from the first `file_have` (a repeat did not refresh it): a is held
    // by 1 (since 10) and 3 (since 30), b by 1 (since 50).
    assert_eq!(
        store
            .apply_one(Change::PruneBlobHolders {
                before: Timestamp(10)
            })
            .unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        store
            .apply_one(Change::PruneBlobHolders {
                before: Timestamp(31)
            })
            .unwrap(),
        Outcome::Applied
    );
    assert!(store.blob_holders(&a).unwrap().is_empty());
    assert_eq!(store.blob_holders(&b).unwrap(), vec![user(1)]);
    // Every holder of a blob at once.
    assert_eq!(
        store
            .apply_one(Change::RemoveBlobHolders { blob: b })
            .unwrap(),
        Outcome::Applied
    );
    assert!(store.blob_holders(&b).unwrap().is_empty());
    assert_eq!(
        store
            .apply_one(Change::RemoveBlobHolders { blob: b })
            .unwrap(),
        Outcome::Unchanged
    );
}

fn op_record(sp: u8, id: u8, depth: u64) -> SpaceOpRecord {
    SpaceOpRecord {
        space: space(sp),
        id: dopus_proto::space::OpId::from_bytes([id; 32]),
        depth,
        json: format!("{{\"op\":{id}}}").into_bytes(),
        received_at: t(u64::from(id)),
    }
}

/// A space's ops come back by depth then id; storing one twice changes nothing; removing a
/// space takes its ops and Megolm sessions and nothing else.
pub fn space_ops<S: Store>(store: &mut S) {
    assert!(store.spaces().unwrap().is_empty());
    for (sp, id, depth) in [(1, 9, 2), (1, 3, 0), (1, 7, 2), (1, 1, 1), (2, 4, 0)] {
        assert_eq!(
            store
                .apply_one(Change::SaveSpaceOp(op_record(sp, id, depth)))
                .unwrap(),
            Outcome::Applied
        );
    }
    assert_eq!(
        store
            .apply_one(Change::SaveSpaceOp(op_record(1, 9, 2)))
            .unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(store.spaces().unwrap(), vec![space(1), space(2)]);
    assert_eq!(
        store.space_ops(&space(1)).unwrap(),
        vec![
            op_record(1, 3, 0),
            op_record(1, 1, 1),
            op_record(1, 7, 2),
            op_record(1, 9, 2)
        ]
    );
    store
        .apply_one(Change::SaveMegolmInbound(inbound("a", 1, 1, 1)))
        .unwrap();
    store
        .apply_one(Change::SaveMegolmInbound(inbound("b", 2, 2, 1)))
        .unwrap();
    assert_eq!(
        store.apply_one(Change::RemoveSpace(space(1))).unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        store.apply_one(Change::RemoveSpace(space(1))).unwrap(),
        Outcome::Unchanged
    );
    assert!(store.space_ops(&space(1)).unwrap().is_empty());
    assert_eq!(store.spaces().unwrap(), vec![space(2)]);
    assert_eq!(store.megolm_inbound("a").unwrap(), None);
    assert!(store.megolm_inbound("b").unwrap().is_some());
    // A channel's conversation is a conversation like any other.
    let conv = ConversationId::Channel(chan(1));
    insert(store, new_message(1, conv, 2, "in a channel"));
    assert_eq!(store.conversation(&conv).unwrap().unwrap().id, conv);
}

/// Settings: set, overwrite, clear.
pub fn settings<S: Store>(store: &mut S) {
    assert_eq!(store.setting("theme").unwrap(), None);
    let set = |v: Option<&str>| Change::SetSetting {
        key: "theme".into(),
        value: v.map(Into::into),
    };
    store.apply_one(set(Some("dark"))).unwrap();
    assert_eq!(store.setting("theme").unwrap().as_deref(), Some("dark"));
    store.apply_one(set(Some("light"))).unwrap();
    assert_eq!(store.setting("theme").unwrap().as_deref(), Some("light"));
    assert_eq!(store.apply_one(set(None)).unwrap(), Outcome::Applied);
    assert_eq!(store.apply_one(set(None)).unwrap(), Outcome::Unchanged);
    assert_eq!(store.setting("theme").unwrap(), None);
}
