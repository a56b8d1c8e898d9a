//! End-to-end encryption scenarios between simulated nodes and a hostile key directory.
//!
//! Every node keeps only what a real node persists (the device pickle and session records) and
//! rebuilds its `OlmMachine` from the pickle before every step, so each scenario also proves
//! that nothing needed lives only in memory.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use dopus_core::e2e::{
    Draft, FailureKind, OlmMachine, OpenError, Opened, Recovery, StartSessionError,
};
use dopus_core::identity::test_support::SeededRandom;
use dopus_core::identity::{Device, FALLBACK_GRACE_MS, Identity, PickleKey};
use dopus_core::store::OlmSessionRecord;
use dopus_proto::bundle::{
    BUNDLE_VERSION, BundleError, ClaimedBundle, DeviceBundle, PrekeyKind, SignedKey, test_support,
};
use dopus_proto::peer::{
    ChatContent, Content, Conversation, MessageId, OlmMessageType, PeerAddress, PeerEnvelope,
    PeerPayload, RtcContent, SessionContent, VerificationContent,
};
use dopus_types::{Curve25519Key, DeviceId, DeviceKeys, Signature, Timestamp, UserId};
use std::collections::{HashMap, HashSet};

const T0: Timestamp = Timestamp(1_700_000_000_000);

/// The untrusted key directory: it verifies uploads (as the real server does) and hands out
/// each one-time key once, then the fallback key.
#[derive(Default)]
struct Directory {
    devices: HashMap<(UserId, DeviceId), (DeviceBundle, Vec<SignedKey>)>,
}

impl Directory {
    fn publish(&mut self, bundle: &DeviceBundle) {
        bundle.verify(&bundle.certificate.user_id).unwrap();
        let key = (
            bundle.certificate.user_id,
            bundle.certificate.device_id.clone(),
        );
        let entry = self
            .devices
            .entry(key)
            .or_insert_with(|| (bundle.clone(), Vec::new()));
        entry.0 = bundle.clone();
        entry.1.extend(bundle.one_time_keys.iter().cloned());
    }

    fn count(&self, addr: &PeerAddress) -> usize {
        self.devices
            .get(&(addr.user, addr.device.clone()))
            .map_or(0, |d| d.1.len())
    }

    fn claim(&mut self, addr: &PeerAddress) -> ClaimedBundle {
        let (bundle, otks) = self
            .devices
            .get_mut(&(addr.user, addr.device.clone()))
            .unwrap();
        ClaimedBundle {
            version: BUNDLE_VERSION,
            certificate: bundle.certificate.clone(),
            fallback_key: bundle.fallback_key.clone(),
            one_time_key: otks.pop(),
        }
    }

    fn drain_one_time_keys(&mut self, addr: &PeerAddress) {
        self.devices
            .get_mut(&(addr.user, addr.device.clone()))
            .unwrap()
            .1
            .clear();
    }
}

/// A node reduced to what it persists.
#[derive(Clone)]
struct Node {
    identity_pickle: String,
    key: [u8; 32],
    account: String,
    sessions: Vec<OlmSessionRecord>,
    keys: HashMap<PeerAddress, DeviceKeys>,
    received: HashSet<MessageId>,
    addr: PeerAddress,
    rng: u64,
    next_id: u8,
}

impl Node {
    fn new(seed: u8) -> Self {
        let key = [seed; 32];
        let mut rng = SeededRandom::new(u64::from(seed));
        let identity = Identity::generate(&mut rng).unwrap();
        let device = Device::new(&identity, DeviceId::from_random([seed; 16]), T0);
        let addr = PeerAddress {
            user: identity.user_id(),
            device: device.device_id().clone(),
        };
        let account = device.pickle(&PickleKey::from_bytes(key), &mut rng);
        Self {
            identity_pickle: identity.pickle(&PickleKey::from_bytes(key), &mut rng),
            key,
            account,
            sessions: Vec::new(),
            keys: HashMap::new(),
            received: HashSet::new(),
            addr,
            rng: u64::from(seed) * 1000,
            next_id: 0,
        }
    }

    /// Rebuilds the machine from the persisted pickle.
    fn machine(&mut self) -> OlmMachine {
        self.rng += 1;
        let identity =
            Identity::from_pickle(&self.identity_pickle, &PickleKey::from_bytes(self.key)).unwrap();
        assert_eq!(identity.user_id(), self.addr.user);
        OlmMachine::from_pickle(
            &self.account,
            PickleKey::from_bytes(self.key),
            Box::new(SeededRandom::new(self.rng)),
        )
        .unwrap()
    }

    fn save(&mut self, record: OlmSessionRecord) {
        self.sessions.retain(|r| r.session_id != record.session_id);
        self.sessions.push(record);
    }

    fn publish(&mut self, dir: &mut Directory, now: Timestamp) {
        let mut m = self.machine();
        if let Some(upload) = m.prepare_upload(dir.count(&self.addr)).unwrap() {
            // Persist before uploading, then mark published only after the ack.
            self.account = upload.account_pickle;
            dir.publish(&upload.bundle);
            self.account = m.mark_published(now, &upload.bundle).unwrap();
        }
    }

    fn connect(&mut self, dir: &mut Directory, to: &PeerAddress, now: Timestamp) {
        let claimed = dir.claim(to);
        let mut m = self.machine();
        let started = m
            .start_session(now, &to.user, &to.device, &claimed)
            .unwrap();
        assert_eq!(started.certificate.user_id, to.user);
        self.keys.insert(to.clone(), started.certificate.keys);
        self.save(started.session);
    }

    fn new_id(&mut self, now: Timestamp) -> MessageId {
        self.next_id += 1;
        let mut r = [self.next_id; 10];
        r[0] = self.key[0];
        MessageId::new_v7(now, r)
    }

    fn send(&mut self, now: Timestamp, to: &PeerAddress, content: Content) -> PeerEnvelope {
        let id = self.new_id(now);
        self.send_with_id(now, to, id, content)
    }

    fn send_with_id(
        &mut self,
        now: Timestamp,
        to: &PeerAddress,
        id: MessageId,
        content: Content,
    ) -> PeerEnvelope {
        let mut m = self.machine();
        let sealed = m
            .seal(
                now,
                to,
                &self.keys[to],
                &self.sessions,
                Draft {
                    id,
                    conversation: Conversation::Direct,
                    sent_at: now,
                    content,
                },
            )
            .unwrap();
        // Persisted before the envelope leaves.
        self.save(sealed.session);
        // The envelope goes over the wire as JSON.
        PeerEnvelope::from_json(&sealed.envelope.to_json().unwrap()).unwrap()
    }

    fn text(&mut self, now: Timestamp, to: &PeerAddress, body: &str) -> PeerEnvelope {
        self.send(
            now,
            to,
            Content::Chat(ChatContent::Text {
                preview: None,
                body: body.into(),
                reply_to: None,
            }),
        )
    }

    fn receive_full(&mut self, now: Timestamp, env: &PeerEnvelope) -> Result<Opened, OpenError> {
        let mut m = self.machine();
        let opened = m.open(now, env, self.keys.get(&env.from), &self.sessions)?;
        self.keys.insert(env.from.clone(), opened.peer_keys);
        self.save(opened.session.clone());
        if let Some(account) = &opened.account_pickle {
            self.account = account.clone();
        }
        self.received.insert(opened.payload.id);
        Ok(opened)
    }

    fn receive(&mut self, now: Timestamp, env: &PeerEnvelope) -> Result<PeerPayload, OpenError> {
        self.receive_full(now, env).map(|o| o.payload)
    }
}

fn body(p: &PeerPayload) -> &str {
    match &p.content {
        Content::Chat(ChatContent::Text { body, .. }) => body,
        other => panic!("not text: {}", other.kind_name()),
    }
}

fn t(ms: u64) -> Timestamp {
    T0.plus_millis(ms)
}

fn pair() -> (Directory, Node, Node) {
    let mut dir = Directory::default();
    let alice = Node::new(1);
    let mut bob = Node::new(2);
    bob.publish(&mut dir, T0);
    (dir, alice, bob)
}

#[test]
fn offline_start_from_a_bundle_then_reply_with_reloads_between_every_step() {
    let (mut dir, mut alice, mut bob) = pair();
    // Bob is offline: only his pickles exist. Alice starts from his published bundle.
    alice.connect(&mut dir, &bob.addr, t(1));
    let a1 = alice.text(t(2), &bob.addr, "hello bob");
    let a2 = alice.text(t(3), &bob.addr, "are you there?");
    let a3 = alice.text(t(4), &bob.addr, "third");
    for env in [&a1, &a2, &a3] {
        assert_eq!(env.olm_type, OlmMessageType::PreKey);
    }
    // Bob comes online and reads his mailbox.
    let account_before = bob.account.clone();
    let opened = bob.receive_full(t(10), &a1).unwrap();
    assert!(opened.new_session);
    assert!(
        opened.account_pickle.is_some(),
        "one-time key used: account changed"
    );
    assert_ne!(bob.account, account_before);
    let cert = opened.sender_certificate.unwrap();
    assert_eq!(cert.user_id, alice.addr.user);
    assert_eq!(body(&opened.payload), "hello bob");
    assert_eq!(opened.payload.sender.user, alice.addr.user);
    assert_eq!(opened.payload.sent_at, t(2));
    let o2 = bob.receive_full(t(11), &a2).unwrap();
    assert!(!o2.new_session && o2.account_pickle.is_none());
    assert_eq!(body(&o2.payload), "are you there?");
    assert_eq!(body(&bob.receive(t(12), &a3).unwrap()), "third");
    assert_eq!(bob.sessions.len(), 1);
    // The reply is a normal message; after decrypting it Alice stops sending pre-key messages.
    let b1 = bob.text(t(13), &alice.addr, "hi alice");
    assert_eq!(b1.olm_type, OlmMessageType::Normal);
    assert_eq!(body(&alice.receive(t(14), &b1).unwrap()), "hi alice");
    let a4 = alice.text(t(15), &bob.addr, "now normal");
    assert_eq!(a4.olm_type, OlmMessageType::Normal);
    assert_eq!(body(&bob.receive(t(16), &a4).unwrap()), "now normal");
    // Ping-pong across several DH ratchet steps.
    for i in 0..6u64 {
        let e = bob.text(t(20 + 2 * i), &alice.addr, &format!("b{i}"));
        assert_eq!(
            body(&alice.receive(t(21 + 2 * i), &e).unwrap()),
            format!("b{i}")
        );
        let e = alice.text(t(21 + 2 * i), &bob.addr, &format!("a{i}"));
        assert_eq!(
            body(&bob.receive(t(22 + 2 * i), &e).unwrap()),
            format!("a{i}")
        );
    }
}

#[test]
fn server_substituted_keys_are_refused_before_any_session_exists() {
    let (mut dir, alice, bob) = pair();
    let server = ed25519_dalek::SigningKey::from_bytes(&[250; 32]);
    let server_sign = |b: &[u8]| {
        use ed25519_dalek::Signer;
        Signature::from_bytes(server.sign(b).to_bytes())
    };
    let mut m = {
        let mut a = alice.clone();
        a.machine()
    };
    let genuine = dir.claim(&bob.addr);

    // A one-time key swapped for the server's own, signed by the server.
    let mut c = genuine.clone();
    c.one_time_key = Some(test_support::signed_key(
        PrekeyKind::OneTime,
        &c.certificate,
        "AAAAAAAAAAA",
        Curve25519Key::from_bytes([66; 32]),
        &server_sign,
    ));
    let err = m
        .start_session(t(1), &bob.addr.user, &bob.addr.device, &c)
        .unwrap_err();
    assert_eq!(
        err,
        StartSessionError::Bundle(BundleError::BadOneTimeKeySignature)
    );

    // The same key with the genuine signature moved onto it.
    let mut c = genuine.clone();
    c.one_time_key.as_mut().unwrap().key = Curve25519Key::from_bytes([67; 32]);
    assert_eq!(
        m.start_session(t(1), &bob.addr.user, &bob.addr.device, &c)
            .unwrap_err(),
        StartSessionError::Bundle(BundleError::BadOneTimeKeySignature)
    );

    // The device's Curve25519 key swapped in the certificate.
    let mut c = genuine.clone();
    c.certificate.keys.curve25519 = Curve25519Key::from_bytes([68; 32]);
    assert_eq!(
        m.start_session(t(1), &bob.addr.user, &bob.addr.device, &c)
            .unwrap_err(),
        StartSessionError::Bundle(BundleError::BadCertificateSignature)
    );

    // A whole, self-consistent device of the server's, presented as Bob's.
    let fake_identity = Identity::from_seed(&[251; 32]).unwrap();
    let fake = Device::new(&fake_identity, bob.addr.device.clone(), T0);
    let mut fake_dev = fake;
    let fake_bundle = fake_dev.prepare_upload(0).unwrap().unwrap();
    let c = ClaimedBundle {
        version: BUNDLE_VERSION,
        certificate: fake_bundle.certificate.clone(),
        fallback_key: fake_bundle.fallback_key.clone(),
        one_time_key: fake_bundle.one_time_keys.first().cloned(),
    };
    assert_eq!(
        m.start_session(t(1), &bob.addr.user, &bob.addr.device, &c)
            .unwrap_err(),
        StartSessionError::Bundle(BundleError::WrongUser)
    );

    // The genuine bundle still works.
    m.start_session(t(2), &bob.addr.user, &bob.addr.device, &genuine)
        .unwrap();
}

#[test]
fn tampered_ciphertext_is_refused_and_the_session_still_works() {
    let (mut dir, mut alice, mut bob) = pair();
    alice.connect(&mut dir, &bob.addr, t(1));
    // A tampered pre-key message.
    let a1 = alice.text(t(2), &bob.addr, "first");
    let mut bad = a1.clone();
    let last = bad.ciphertext.0.len() - 1;
    bad.ciphertext.0[last] ^= 0x01;
    let err = bob.receive(t(3), &bad).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Tampered);
    assert!(bob.sessions.is_empty());
    assert_eq!(body(&bob.receive(t(4), &a1).unwrap()), "first");
    // A tampered normal message: flip each of several bytes in turn.
    let b1 = bob.text(t(5), &alice.addr, "reply");
    alice.receive(t(6), &b1).unwrap();
    let a2 = alice.text(t(7), &bob.addr, "second");
    assert_eq!(a2.olm_type, OlmMessageType::Normal);
    for i in [10, a2.ciphertext.0.len() / 2, a2.ciphertext.0.len() - 1] {
        let mut bad = a2.clone();
        bad.ciphertext.0[i] ^= 0x80;
        let err = bob.receive(t(8), &bad).unwrap_err();
        assert!(
            matches!(err, OpenError::Tampered | OpenError::MalformedOlm),
            "byte {i}: {err:?}"
        );
        assert_ne!(err.recovery(false), Recovery::Ignore);
    }
    assert_eq!(body(&bob.receive(t(9), &a2).unwrap()), "second");
}

#[test]
fn a_replayed_message_is_classified_as_duplicate() {
    let (mut dir, mut alice, mut bob) = pair();
    alice.connect(&mut dir, &bob.addr, t(1));
    let a1 = alice.text(t(2), &bob.addr, "once");
    bob.receive(t(3), &a1).unwrap();
    // The pre-key message again (its one-time key is used up, the session knows it).
    let err = bob.receive(t(4), &a1).unwrap_err();
    assert_eq!(err, OpenError::Duplicate);
    assert_eq!(
        err.recovery(bob.received.contains(&a1.id)),
        Recovery::Ignore
    );
    // A normal message again.
    let b1 = bob.text(t(5), &alice.addr, "reply");
    alice.receive(t(6), &b1).unwrap();
    let a2 = alice.text(t(7), &bob.addr, "normal");
    bob.receive(t(8), &a2).unwrap();
    let err = bob.receive(t(9), &a2).unwrap_err();
    assert_eq!(err, OpenError::Duplicate);
    assert_eq!(err.kind(), FailureKind::Duplicate);
    // The session is unharmed.
    let a3 = alice.text(t(10), &bob.addr, "after");
    assert_eq!(body(&bob.receive(t(11), &a3).unwrap()), "after");
}

#[test]
fn a_misaddressed_envelope_is_refused() {
    let (mut dir, mut alice, mut bob) = pair();
    let mut carol = Node::new(3);
    carol.publish(&mut dir, T0);
    alice.connect(&mut dir, &bob.addr, t(1));
    let a1 = alice.text(t(2), &bob.addr, "for bob only");
    // Delivered to Carol as is.
    assert_eq!(
        carol.receive(t(3), &a1).unwrap_err(),
        OpenError::Misaddressed
    );
    // The server rewrites the recipient to Carol: she cannot use Bob's one-time key.
    let mut rewritten = a1.clone();
    rewritten.to = carol.addr.clone();
    assert_eq!(
        carol.receive(t(4), &rewritten).unwrap_err(),
        OpenError::UnknownOneTimeKey
    );
    // To another device of Bob's.
    let mut other_device = a1.clone();
    other_device.to.device = DeviceId::from_random([42; 16]);
    assert_eq!(
        bob.receive(t(5), &other_device).unwrap_err(),
        OpenError::Misaddressed
    );
    // Bob still reads the genuine one.
    assert_eq!(body(&bob.receive(t(6), &a1).unwrap()), "for bob only");
}

#[test]
fn a_spliced_inner_and_outer_id_is_refused() {
    let (mut dir, mut alice, mut bob) = pair();
    alice.connect(&mut dir, &bob.addr, t(1));
    let a1 = alice.text(t(2), &bob.addr, "one");
    bob.receive(t(3), &a1).unwrap();
    let a2 = alice.text(t(4), &bob.addr, "two");
    // The server puts a2's ciphertext under a fresh id (or a1's): refused.
    let mut spliced = a2.clone();
    spliced.id = MessageId::new_v7(t(4), [9; 10]);
    assert_eq!(
        bob.receive(t(5), &spliced).unwrap_err(),
        OpenError::SplicedId
    );
    let mut spliced = a2.clone();
    spliced.id = a1.id;
    assert_eq!(
        bob.receive(t(5), &spliced).unwrap_err(),
        OpenError::SplicedId
    );
    // Nothing was persisted by the refusals: the genuine envelope still decrypts.
    assert_eq!(body(&bob.receive(t(6), &a2).unwrap()), "two");
}

#[test]
fn a_peer_restored_from_an_old_copy_is_detected_and_recovered_with_a_new_session() {
    let (mut dir, mut alice, mut bob) = pair();
    alice.publish(&mut dir, T0);
    alice.connect(&mut dir, &bob.addr, t(1));
    let e = alice.text(t(2), &bob.addr, "hello");
    bob.receive(t(3), &e).unwrap();
    let e = bob.text(t(4), &alice.addr, "hi");
    alice.receive(t(5), &e).unwrap();
    // Bob's backup.
    let backup = bob.clone();
    // The conversation goes on for a few DH ratchet steps.
    for i in 0..3 {
        let e = alice.text(t(10 + i * 2), &bob.addr, "x");
        bob.receive(t(11 + i * 2), &e).unwrap();
        let e = bob.text(t(11 + i * 2), &alice.addr, "y");
        alice.receive(t(12 + i * 2), &e).unwrap();
    }
    // Bob's disk dies; he restores the old copy.
    bob = backup;
    let lost = alice.text(t(30), &bob.addr, "important");
    let err = bob.receive(t(31), &lost).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Tampered, "{err:?}");
    assert_eq!(
        err.recovery(bob.received.contains(&lost.id)),
        Recovery::StartNewSession
    );
    // Recovery: Bob claims a fresh bundle of Alice's, starts a new session and asks her to
    // re-send what failed.
    bob.connect(&mut dir, &alice.addr, t(32));
    let reset = bob.send(
        t(33),
        &alice.addr,
        Content::Session(SessionContent::SessionReset {
            failed: vec![lost.id],
        }),
    );
    assert_eq!(reset.olm_type, OlmMessageType::PreKey);
    let opened = alice.receive_full(t(34), &reset).unwrap();
    assert!(opened.new_session);
    let Content::Session(SessionContent::SessionReset { failed }) = opened.payload.content else {
        panic!("expected a session reset");
    };
    assert_eq!(failed, vec![lost.id]);
    // Alice re-sends under the same id; the newest session (the new one) is used.
    let resent = alice.send_with_id(
        t(35),
        &bob.addr,
        lost.id,
        Content::Chat(ChatContent::Text {
            preview: None,
            body: "important".into(),
            reply_to: None,
        }),
    );
    assert_eq!(body(&bob.receive(t(36), &resent).unwrap()), "important");
    // Both directions keep working on the new session.
    let e = bob.text(t(37), &alice.addr, "got it");
    assert_eq!(body(&alice.receive(t(38), &e).unwrap()), "got it");
    let e = alice.text(t(39), &bob.addr, "good");
    assert_eq!(body(&bob.receive(t(40), &e).unwrap()), "good");
}

#[test]
fn a_peer_that_rolled_back_its_session_is_caught_either_way() {
    let (mut dir, mut alice, mut bob) = pair();
    alice.connect(&mut dir, &bob.addr, t(1));
    let e = alice.text(t(2), &bob.addr, "hello");
    bob.receive(t(3), &e).unwrap();
    // Case 1: the copy was taken before Bob's sending chain existed. vodozemac starts it from
    // a fresh random ratchet key, so no key is reused; Alice's root key has moved on and the
    // message fails authentication.
    let before_first_send = bob.clone();
    let b0 = bob.text(t(4), &alice.addr, "original");
    alice.receive(t(5), &b0).unwrap();
    let mut restored = before_first_send;
    let again = restored.text(t(6), &alice.addr, "different text");
    let err = alice.receive(t(7), &again).unwrap_err();
    assert_eq!(err, OpenError::Tampered);
    assert_eq!(err.recovery(false), Recovery::StartNewSession);
    // Case 2: the copy was taken mid-chain. The restored Bob derives the same message key for
    // his next message as one Alice already used: she sees a used-up key under an id she has
    // never stored, which the policy treats as a broken session, not a replay.
    let mid_chain = bob.clone();
    let b1 = bob.text(t(8), &alice.addr, "next");
    alice.receive(t(9), &b1).unwrap();
    let mut restored = mid_chain;
    let reused = restored.text(t(10), &alice.addr, "not next");
    let err = alice.receive(t(11), &reused).unwrap_err();
    assert_eq!(err, OpenError::Duplicate);
    assert!(!alice.received.contains(&reused.id));
    assert_eq!(err.recovery(false), Recovery::StartNewSession);
}

#[test]
fn the_fallback_key_is_used_when_one_time_keys_are_gone_then_rotated() {
    let (mut dir, mut alice, mut bob) = pair();
    let mut carol = Node::new(3);
    let mut dave = Node::new(4);
    dir.drain_one_time_keys(&bob.addr);
    // Alice and Carol both get the fallback key before Bob sees any of it.
    let claimed = dir.claim(&bob.addr);
    assert!(claimed.one_time_key.is_none());
    let old_fallback = claimed.fallback_key.key;
    alice.connect(&mut dir, &bob.addr, t(1));
    carol.connect(&mut dir, &bob.addr, t(1));
    let from_alice = alice.text(t(2), &bob.addr, "via fallback");
    let from_carol = carol.text(t(3), &bob.addr, "me too");
    assert_eq!(
        body(&bob.receive(t(4), &from_alice).unwrap()),
        "via fallback"
    );
    // Bob rotated: the next upload carries a new fallback key.
    let m = bob.machine();
    assert!(m.device().needs_upload());
    let (current, _) = m.device().fallback_key().unwrap();
    assert_ne!(current, old_fallback);
    // Carol's message, made from the old key before the switch, still opens (grace period).
    assert_eq!(body(&bob.receive(t(5), &from_carol).unwrap()), "me too");
    // Bob publishes (the server acks at t(6)); the old key is then served no more.
    dave.publish(&mut dir, T0);
    bob.publish(&mut dir, t(6));
    let c = dir.claim(&bob.addr);
    assert_eq!(c.fallback_key.key, current);
    let mut m = bob.machine();
    let due = m.poll_timeout().unwrap();
    assert_eq!(due, t(6).plus_millis(FALLBACK_GRACE_MS));
    assert!(m.handle_timeout(t(7)).is_none());
    bob.account = m.handle_timeout(due).unwrap();
    // A late message from the old fallback key no longer has a private key to meet.
    let stale = ClaimedBundle {
        one_time_key: None,
        fallback_key: claimed.fallback_key.clone(),
        ..c
    };
    let mut dm = dave.machine();
    let s = dm
        .start_session(t(8), &bob.addr.user, &bob.addr.device, &stale)
        .unwrap();
    dave.keys.insert(bob.addr.clone(), s.certificate.keys);
    dave.save(s.session);
    let late = dave.text(t(9), &bob.addr, "too late");
    let err = bob.receive(t(10), &late).unwrap_err();
    assert_eq!(err, OpenError::UnknownOneTimeKey);
    assert_eq!(err.recovery(false), Recovery::StartNewSession);
}

#[test]
fn one_time_keys_are_replenished_when_the_server_runs_low() {
    let (mut dir, mut alice, mut bob) = pair();
    assert_eq!(dir.count(&bob.addr), 50);
    for i in 0..45u64 {
        alice.connect(&mut dir, &bob.addr, t(i));
    }
    assert_eq!(dir.count(&bob.addr), 5);
    bob.publish(&mut dir, t(100));
    assert_eq!(dir.count(&bob.addr), 50);
    // The server verified every new key against Bob's user id on upload (Directory::publish).
}

#[test]
fn both_sides_starting_at_once_end_up_talking() {
    let (mut dir, mut alice, mut bob) = pair();
    alice.publish(&mut dir, T0);
    alice.connect(&mut dir, &bob.addr, t(1));
    bob.connect(&mut dir, &alice.addr, t(1));
    let a1 = alice.text(t(2), &bob.addr, "from alice");
    let b1 = bob.text(t(2), &alice.addr, "from bob");
    assert_eq!(body(&bob.receive(t(3), &a1).unwrap()), "from alice");
    assert_eq!(body(&alice.receive(t(3), &b1).unwrap()), "from bob");
    assert_eq!(alice.sessions.len(), 2);
    assert_eq!(bob.sessions.len(), 2);
    for i in 0..4u64 {
        let e = alice.text(t(10 + i), &bob.addr, "ping");
        assert_eq!(body(&bob.receive(t(10 + i), &e).unwrap()), "ping");
        let e = bob.text(t(10 + i), &alice.addr, "pong");
        assert_eq!(body(&alice.receive(t(10 + i), &e).unwrap()), "pong");
    }
}

#[test]
fn out_of_order_delivery_within_the_window_works_and_beyond_it_asks_for_a_resend() {
    let (mut dir, mut alice, mut bob) = pair();
    alice.connect(&mut dir, &bob.addr, t(1));
    let first = alice.text(t(2), &bob.addr, "first");
    bob.receive(t(3), &first).unwrap();
    let msgs: Vec<_> = (0..45u64)
        .map(|i| alice.text(t(10 + i), &bob.addr, &format!("m{i}")))
        .collect();
    // 5, 3, 4 order works.
    for i in [4usize, 2, 3] {
        assert_eq!(
            body(&bob.receive(t(60), &msgs[i]).unwrap()),
            format!("m{i}")
        );
    }
    // The last one before the early ones: more than 40 skipped keys on one chain.
    assert_eq!(body(&bob.receive(t(61), &msgs[44]).unwrap()), "m44");
    let err = bob.receive(t(62), &msgs[0]).unwrap_err();
    // Indistinguishable from a used key; the id is unknown, so the policy asks for a new
    // session and a re-send instead of silently dropping it.
    assert_eq!(err, OpenError::Duplicate);
    assert_eq!(err.recovery(false), Recovery::StartNewSession);
    // Recent skipped ones are still there.
    assert_eq!(body(&bob.receive(t(63), &msgs[43]).unwrap()), "m43");
}

#[test]
fn every_content_kind_survives_seal_and_open() {
    let (mut dir, mut alice, mut bob) = pair();
    alice.connect(&mut dir, &bob.addr, t(1));
    let target = alice.new_id(t(1));
    let contents = vec![
        Content::Chat(ChatContent::Text {
            preview: None,
            body: "x".repeat(dopus_proto::peer::MAX_BODY_BYTES),
            reply_to: Some(target),
        }),
        Content::Chat(ChatContent::Edit {
            target,
            body: "edited".into(),
        }),
        Content::Chat(ChatContent::Delete { target }),
        Content::Chat(ChatContent::Reaction {
            target,
            emoji: "🎉".into(),
            action: dopus_proto::peer::ReactionAction::Add,
        }),
        Content::Chat(ChatContent::Typing { active: true }),
        Content::Chat(ChatContent::Receipt {
            receipt: dopus_proto::peer::ReceiptKind::Delivered,
            ids: vec![target],
        }),
        Content::Rtc(RtcContent::Rtc {
            conn: "c1".into(),
            signal: dopus_proto::peer::RtcSignal::Offer {
                sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n".into(),
            },
        }),
    ];
    for (i, c) in contents.into_iter().enumerate() {
        let e = alice.send(t(10 + i as u64), &bob.addr, c.clone());
        assert_eq!(bob.receive(t(20), &e).unwrap().content, c);
    }
}

#[test]
fn sas_verification_runs_over_the_encrypted_channel_and_safety_numbers_agree() {
    use dopus_core::verification::{SafetyNumber, SasParty, SasState, SasVerification};
    use dopus_proto::peer::VerificationStep;

    let (mut dir, mut alice, mut bob) = pair();
    alice.connect(&mut dir, &bob.addr, t(1));
    let hello = alice.text(t(2), &bob.addr, "hi");
    bob.receive(t(3), &hello).unwrap();

    // Each side describes itself from its own device and the peer from the certified keys of
    // its session.
    let me = |n: &mut Node| {
        let m = n.machine();
        SasParty {
            user: n.addr.user,
            device: n.addr.device.clone(),
            keys: m.device().keys(),
        }
    };
    let them = |n: &Node, peer: &Node| SasParty {
        user: peer.addr.user,
        device: peer.addr.device.clone(),
        keys: n.keys[&peer.addr],
    };
    let (a_me, a_them) = (me(&mut alice), them(&alice, &bob));
    let (b_me, b_them) = (me(&mut bob), them(&bob, &alice));

    let carry = |from: &mut Node, to: &mut Node, step: VerificationStep, at: u64| {
        let env = from.send(
            t(at),
            &to.addr,
            Content::Verification(VerificationContent::Verification { step }),
        );
        match to.receive(t(at), &env).unwrap().content {
            Content::Verification(VerificationContent::Verification { step }) => step,
            other => panic!("unexpected {}", other.kind_name()),
        }
    };

    let (mut a_sas, start) = SasVerification::start(t(10), a_me, a_them, "t1".into()).unwrap();
    let start = carry(&mut alice, &mut bob, start, 11);
    let (mut b_sas, accept) = SasVerification::accept(t(11), b_me, b_them, &start).unwrap();
    let accept = carry(&mut bob, &mut alice, accept, 12);
    let a_key = a_sas.handle(t(12), &accept).unwrap().remove(0);
    let a_key = carry(&mut alice, &mut bob, a_key, 13);
    let b_key = b_sas.handle(t(13), &a_key).unwrap().remove(0);
    let b_key = carry(&mut bob, &mut alice, b_key, 14);
    assert!(a_sas.handle(t(14), &b_key).unwrap().is_empty());
    assert_eq!(a_sas.emoji().unwrap(), b_sas.emoji().unwrap());

    let a_mac = a_sas.confirm(t(15)).unwrap().remove(0);
    let b_out = b_sas.confirm(t(15)).unwrap();
    let a_mac = carry(&mut alice, &mut bob, a_mac, 16);
    let b_done = b_sas.handle(t(16), &a_mac).unwrap().remove(0);
    let b_mac = carry(&mut bob, &mut alice, b_out[0].clone(), 17);
    let a_done = a_sas.handle(t(17), &b_mac).unwrap().remove(0);
    let b_done = carry(&mut bob, &mut alice, b_done, 18);
    let a_done = carry(&mut alice, &mut bob, a_done, 18);
    assert!(a_sas.handle(t(19), &b_done).unwrap().is_empty());
    assert!(b_sas.handle(t(19), &a_done).unwrap().is_empty());
    assert_eq!(a_sas.state(), SasState::Verified);
    assert_eq!(b_sas.state(), SasState::Verified);
    assert_eq!(a_sas.verified().unwrap().user, bob.addr.user);

    assert_eq!(
        SafetyNumber::new(&alice.addr.user, &bob.addr.user),
        SafetyNumber::new(&bob.addr.user, &alice.addr.user)
    );
}

#[test]
fn a_window_sealed_at_once_opens_in_order_and_the_session_carries_on() {
    let (mut dir, mut alice, mut bob) = pair();
    alice.connect(&mut dir, &bob.addr, t(1));
    let mut m = alice.machine();
    let drafts: Vec<Draft> = (0..5u64)
        .map(|i| Draft {
            id: alice.new_id(t(2 + i)),
            conversation: Conversation::Direct,
            sent_at: t(2 + i),
            content: Content::Chat(ChatContent::Text {
                preview: None,
                body: format!("w{i}"),
                reply_to: None,
            }),
        })
        .collect();
    let too_big = Draft {
        id: alice.new_id(t(9)),
        conversation: Conversation::Direct,
        sent_at: t(9),
        content: Content::Chat(ChatContent::Text {
            preview: None,
            body: "x".repeat(dopus_proto::peer::MAX_BODY_BYTES + 1),
            reply_to: None,
        }),
    };
    let mut all = drafts;
    all.insert(2, too_big);
    let (envelopes, session) = m
        .seal_many(
            t(10),
            &bob.addr,
            &alice.keys[&bob.addr],
            &alice.sessions,
            all,
        )
        .unwrap();
    assert_eq!(envelopes.len(), 6);
    assert!(envelopes[2].is_err(), "a draft over a limit fails alone");
    alice.save(session);
    let sealed: Vec<PeerEnvelope> = envelopes.into_iter().filter_map(Result::ok).collect();
    assert!(sealed.iter().all(|e| e.olm_type == OlmMessageType::PreKey));
    for (i, env) in sealed.iter().enumerate() {
        let wire = PeerEnvelope::from_json(&env.to_json().unwrap()).unwrap();
        assert_eq!(body(&bob.receive(t(20), &wire).unwrap()), format!("w{i}"));
    }
    // The saved session is the advanced one: the next message follows on.
    let next = alice.text(t(30), &bob.addr, "after the window");
    assert_eq!(
        body(&bob.receive(t(31), &next).unwrap()),
        "after the window"
    );
    // And replies work both ways.
    let reply = bob.text(t(32), &alice.addr, "got them");
    assert_eq!(body(&alice.receive(t(33), &reply).unwrap()), "got them");
}

/// The machine keeps restored sessions between calls, keyed by the exact pickle: a record that
/// was never saved (a failed commit) must still give what its own pickle holds, never the state
/// the machine advanced it to.
#[test]
fn a_stale_record_seals_from_its_own_state_not_the_machines_newer_one() {
    let (mut dir, mut alice, mut bob) = pair();
    alice.connect(&mut dir, &bob.addr, t(1));
    let mut m = alice.machine();
    let r0 = alice.sessions.clone();
    let draft = |id| Draft {
        id,
        conversation: Conversation::Direct,
        sent_at: t(2),
        content: Content::Chat(ChatContent::Text {
            preview: None,
            body: "same".into(),
            reply_to: None,
        }),
    };
    let id = alice.new_id(t(2));
    let keys = alice.keys[&bob.addr];
    let first = m.seal(t(2), &bob.addr, &keys, &r0, draft(id)).unwrap();
    // The advanced record, used once (the machine now holds the state after two messages).
    let second = m
        .seal(
            t(3),
            &bob.addr,
            &keys,
            std::slice::from_ref(&first.session),
            draft(id),
        )
        .unwrap();
    assert_ne!(first.envelope.ciphertext, second.envelope.ciphertext);
    // The old record again, as after a commit that failed: the same state, the same bytes.
    let again = m.seal(t(4), &bob.addr, &keys, &r0, draft(id)).unwrap();
    assert_eq!(again.envelope.ciphertext, first.envelope.ciphertext);
    // And the record from that is as good as the first one's: it decrypts at bob in order.
    let wire = PeerEnvelope::from_json(&again.envelope.to_json().unwrap()).unwrap();
    assert_eq!(body(&bob.receive(t(5), &wire).unwrap()), "same");
}
