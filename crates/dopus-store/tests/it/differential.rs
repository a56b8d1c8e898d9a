//! Differential test: random batches applied to `MemoryStore` and to the SQLCipher store must
//! give the same outcomes, the same errors and the same reads. The conformance suite checks
//! chosen cases; this one looks for the cases nobody thought of.

use super::temp_store;
use dopus_core::store::{
    AccountRecord, Change, Changes, Contact, ContactState, ConversationId, DeliveryState,
    EnvelopeId, MemoryStore, MessageId, MessageKind, NewMessage, OutboxItem, OutboxRecipient,
    Pickle, SearchQuery, Seq, Store, conformance::user,
};
use dopus_types::{Curve25519Key, DeviceKeys, Timestamp};
use proptest::prelude::*;
use uuid::Uuid;

const WORDS: &[&str] = &["alpha", "beta", "gamma", "alphabet", "be", "delta"];
const EMOJI: &[&str] = &["👍", "🎉"];

fn conv(n: u8) -> ConversationId {
    ConversationId::Direct(user(2 + n % 3))
}

fn body(words: &[usize]) -> String {
    words
        .iter()
        .map(|w| WORDS[w % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn account() -> AccountRecord {
    AccountRecord {
        user_id: user(2),
        identity_pickle: Pickle::new("i"),
        device_id: "d".parse().unwrap(),
        device_keys: DeviceKeys {
            ed25519: *user(2).key(),
            curve25519: Curve25519Key::from_bytes([1; 32]),
        },
        account_pickle: Pickle::new("a"),
        certificate_json: "{}".into(),
        display_name: "me".into(),
        created_at: Timestamp(1),
    }
}

fn change() -> impl Strategy<Value = Change> {
    let id = (0u128..4).prop_map(|n| MessageId(Uuid::from_u128(n)));
    // Few distinct edit times, so equal and older edits of one message are common.
    let edit_time = (0u64..4).prop_map(Timestamp);
    let eid = (0u128..6).prop_map(|n| EnvelopeId(Uuid::from_u128(n)));
    let t = (0u64..12).prop_map(Timestamp);
    let state = prop::sample::select(DeliveryState::ALL.to_vec());
    prop_oneof![
        4 => (id.clone(), 0u8..3, 0u8..3, prop::collection::vec(0usize..6, 1..5), t.clone())
            .prop_map(|(id, c, s, words, t)| Change::InsertMessage(NewMessage { preview: None,
                id,
                conversation: conv(c),
                sender: user(2 + s),
                kind: MessageKind::Text,
                body: body(&words),
                reply_to: None,
                sent_at: t,
                received_at: t,
                delivery: DeliveryState::Pending,
            })),
        3 => (id.clone(), prop::collection::vec(0usize..6, 1..4), edit_time)
            .prop_map(|(id, words, edited_at)| Change::EditMessage { id, body: body(&words), edited_at }),
        1 => id.clone().prop_map(Change::DeleteMessage),
        2 => (id.clone(), state).prop_map(|(id, state)| Change::SetDelivery { id, state }),
        2 => (id.clone(), 0u8..3, 0usize..2, any::<bool>(), t.clone()).prop_map(|(message, u, e, add, at)| {
            Change::React { message, user: user(2 + u), emoji: EMOJI[e].into(), add, at }
        }),
        1 => (0u8..3, 0u64..12).prop_map(|(c, s)| Change::MarkRead { conversation: conv(c), up_to: Seq(s) }),
        2 => (eid.clone(), prop::collection::vec(0u8..3, 1..3), t.clone(), any::<u8>()).prop_map(|(id, ps, due, b)| Change::OutboxEnqueue(OutboxItem {
            id,
            bytes: vec![1, 2, b],
            created_at: due,
            recipients: ps.into_iter().map(|p| OutboxRecipient { user: user(2 + p), device: None }).collect(),
            next_attempt_at: due,
        })),
        1 => (eid.clone(), 0u8..3, 0u32..5, t.clone()).prop_map(|(id, p, attempts, next_attempt_at)| {
            Change::OutboxReschedule { id, peer: user(2 + p), attempts, next_attempt_at }
        }),
        1 => (eid.clone(), 0u8..3).prop_map(|(id, p)| Change::OutboxAck { id, peer: user(2 + p) }),
        1 => eid.clone().prop_map(Change::OutboxRemove),
        1 => (eid, t.clone()).prop_map(|(id, received_at)| Change::MarkProcessed { id, received_at }),
        1 => (0u8..3, prop::sample::select(ContactState::ALL.to_vec()), t).prop_map(|(u, state, at)| {
            Change::SaveContact(Contact {
                user_id: user(2 + u),
                display_name: None,
                verified: false,
                blocked: false,
                state,
                request_note: None,
                created_at: at,
                updated_at: at,
            })
        }),
        // Fails without an account: the whole batch must roll back in both stores.
        1 => Just(Change::SetAccountPickle(Pickle::new("p"))),
        1 => Just(Change::SaveAccount(account())),
    ]
}

/// What happens after a batch besides the next batch.
#[derive(Clone, Debug)]
enum Then {
    Nothing,
    /// A maintenance step indexing at most this many pending messages.
    Index(usize),
    /// Every read compared (search indexes the whole pending tail).
    Read,
}

fn maintenance() -> impl Strategy<Value = Then> {
    prop_oneof![
        4 => Just(Then::Nothing),
        2 => (1usize..4).prop_map(Then::Index),
        1 => Just(Then::Read),
    ]
}

fn assert_same_reads(mem: &MemoryStore, sql: &dyn Store) {
    for c in 0..3 {
        assert_eq!(
            mem.messages_before(&conv(c), None, 100).unwrap(),
            sql.messages_before(&conv(c), None, 100).unwrap()
        );
        // Paging by the last seq of each page, and cursors that are any seq at all (of this
        // conversation, of another, or none).
        let mut cursor = None;
        loop {
            let a = mem.messages_before(&conv(c), cursor, 2).unwrap();
            let b = sql.messages_before(&conv(c), cursor, 2).unwrap();
            assert_eq!(a, b, "page before {cursor:?}");
            match a.last() {
                Some(m) => cursor = Some(m.seq),
                None => break,
            }
        }
        for s in 0..12u64 {
            assert_eq!(
                mem.messages_arrived_before(&conv(c), Some(Seq(s)), 3)
                    .unwrap(),
                sql.messages_arrived_before(&conv(c), Some(Seq(s)), 3)
                    .unwrap(),
                "arrived before seq {s}"
            );
            assert_eq!(
                mem.messages_before(&conv(c), Some(Seq(s)), 3).unwrap(),
                sql.messages_before(&conv(c), Some(Seq(s)), 3).unwrap(),
                "page before seq {s}"
            );
        }
        assert_eq!(
            mem.conversation(&conv(c)).unwrap(),
            sql.conversation(&conv(c)).unwrap()
        );
    }
    assert_eq!(mem.conversations().unwrap(), sql.conversations().unwrap());
    for text in ["alpha", "alp", "be", "beta gamma", "al", "delta alpha"] {
        let q = SearchQuery {
            text: text.into(),
            conversation: None,
            within: None,
            before: None,
            limit: 100,
        };
        let ids = |hits: Vec<dopus_core::store::SearchHit>| -> Vec<MessageId> {
            hits.into_iter().map(|h| h.message.id).collect()
        };
        assert_eq!(
            ids(mem.search(&q).unwrap()),
            ids(sql.search(&q).unwrap()),
            "search {text:?}"
        );
    }
    for n in 0..8u128 {
        let id = MessageId(Uuid::from_u128(n));
        assert_eq!(mem.reactions(&id).unwrap(), sql.reactions(&id).unwrap());
    }
    for p in 0..3u8 {
        assert_eq!(
            mem.outbox_for_peer(&user(2 + p), 100).unwrap(),
            sql.outbox_for_peer(&user(2 + p), 100).unwrap()
        );
        assert_eq!(
            mem.outbox_due_for_peer(&user(2 + p), Timestamp(25), 100)
                .unwrap(),
            sql.outbox_due_for_peer(&user(2 + p), Timestamp(25), 100)
                .unwrap()
        );
    }
    assert_eq!(
        mem.outbox_due_peers(Timestamp(25)).unwrap(),
        sql.outbox_due_peers(Timestamp(25)).unwrap()
    );
    assert_eq!(
        mem.outbox_next_attempt_at().unwrap(),
        sql.outbox_next_attempt_at().unwrap()
    );
    for n in 0..6u128 {
        let id = EnvelopeId(Uuid::from_u128(n));
        assert_eq!(
            mem.is_processed(&id).unwrap(),
            sql.is_processed(&id).unwrap()
        );
    }
    assert_eq!(mem.contacts().unwrap(), sql.contacts().unwrap());
    assert_eq!(mem.account().unwrap(), sql.account().unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn memory_and_sqlcipher_agree(batches in prop::collection::vec((prop::collection::vec(change(), 1..5), maintenance()), 1..25)) {
        let mut mem = MemoryStore::new();
        let (mut sql, _guard) = temp_store();
        for (batch, then) in batches {
            let batch: Changes = batch.into_iter().collect();
            let a = mem.apply(batch.clone());
            let b = sql.apply(batch);
            match (a, b) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => prop_assert!(false, "memory {:?} but sqlcipher {:?}", a, b),
            }
            // Index part of the tail, or read everything mid-run (search indexes the whole
            // tail), so later edits and deletes hit indexed and pending rows alike.
            match then {
                Then::Nothing => {}
                Then::Index(n) => {
                    prop_assert_eq!(mem.index_pending(n).unwrap(), 0);
                    prop_assert!(sql.index_pending(n).unwrap() <= n);
                }
                Then::Read => assert_same_reads(&mem, &sql),
            }
        }
        assert_same_reads(&mem, &sql);
    }
}

/// One fixed sequence through the same comparison, so a broken harness cannot pass silently.
#[test]
fn the_harness_compares_outcomes() {
    let mut mem = MemoryStore::new();
    let (mut sql, _guard) = temp_store();
    let id = MessageId(Uuid::from_u128(1));
    let edit = |text: &str| Change::EditMessage {
        id,
        body: text.into(),
        edited_at: Timestamp(5),
    };
    for change in [
        Change::InsertMessage(NewMessage {
            preview: None,
            id,
            conversation: conv(0),
            sender: user(3),
            kind: MessageKind::Text,
            body: "alpha".into(),
            reply_to: None,
            sent_at: Timestamp(1),
            received_at: Timestamp(1),
            delivery: DeliveryState::Pending,
        }),
        edit("beta"),
        edit("gamma"),
    ] {
        let a = mem.apply_one(change.clone()).unwrap();
        let b = sql.apply_one(change).unwrap();
        assert_eq!(a, b);
    }
    assert_same_reads(&mem, &sql);
}
