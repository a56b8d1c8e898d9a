//! Binding checks and failure classification. The end-to-end scenarios (offline start, replies,
//! reloads, replays, recovery, fallback keys) are in `tests/e2e.rs`.

use super::*;
use crate::identity::Identity;
use crate::identity::test_support::SeededRandom;
use dopus_proto::bundle::BUNDLE_VERSION;
use dopus_proto::peer::ChatContent;
use dopus_types::Curve25519Key;

const T0: Timestamp = Timestamp(1_700_000_000_000);

struct Peer {
    identity: Identity,
    machine: OlmMachine,
    sessions: Vec<OlmSessionRecord>,
    keys: std::collections::HashMap<PeerAddress, DeviceKeys>,
}

fn peer(seed: u8) -> Peer {
    let identity = Identity::from_seed(&[seed; 32]).unwrap();
    let device = Device::new(&identity, DeviceId::from_random([seed; 16]), T0);
    let machine = OlmMachine::new(
        device,
        PickleKey::from_bytes([seed; 32]),
        Box::new(SeededRandom::new(u64::from(seed))),
    );
    Peer {
        identity,
        machine,
        sessions: Vec::new(),
        keys: std::collections::HashMap::new(),
    }
}

fn msg_id(n: u8) -> MessageId {
    MessageId::new_v7(T0.plus_millis(u64::from(n)), [n; 10])
}

fn draft(n: u8, content: Content) -> Draft {
    Draft {
        id: msg_id(n),
        conversation: Conversation::Direct,
        sent_at: T0.plus_millis(u64::from(n)),
        content,
    }
}

impl Peer {
    fn addr(&self) -> PeerAddress {
        self.machine.address()
    }

    fn publish(&mut self) -> DeviceBundle {
        let up = self.machine.prepare_upload(0).unwrap().unwrap();
        self.machine.mark_published(T0, &up.bundle).unwrap();
        up.bundle
    }

    fn save(&mut self, record: OlmSessionRecord) {
        self.sessions.retain(|r| r.session_id != record.session_id);
        self.sessions.push(record);
    }

    fn text(&mut self, n: u8, to: &PeerAddress, body: &str) -> PeerEnvelope {
        let sealed = self
            .machine
            .seal(
                T0.plus_millis(u64::from(n)),
                to,
                &self.keys[to],
                &self.sessions,
                draft(
                    n,
                    Content::Chat(ChatContent::Text {
                        preview: None,
                        body: body.into(),
                        reply_to: None,
                    }),
                ),
            )
            .unwrap();
        self.save(sealed.session);
        sealed.envelope
    }

    fn open(&mut self, env: &PeerEnvelope) -> Result<Opened, OpenError> {
        let opened = self.machine.open(
            T0.plus_millis(500),
            env,
            self.keys.get(&env.from),
            &self.sessions,
        )?;
        self.keys.insert(env.from.clone(), opened.peer_keys);
        self.save(opened.session.clone());
        Ok(opened)
    }

    /// What a malicious but authenticated peer can do: encrypt any payload bytes it likes on
    /// its real session.
    fn seal_raw(&mut self, to: &PeerAddress, id: MessageId, payload: &PeerPayload) -> PeerEnvelope {
        let record = newest_first(&self.sessions, to)[0].clone();
        let mut session = self.machine.load_session(&record).unwrap();
        let message = session
            .encrypt(serde_json::to_vec(payload).unwrap())
            .unwrap();
        let (n, bytes) = message.to_parts();
        let record = OlmSessionRecord {
            pickle: self.machine.pickle_session(session),
            ..record
        };
        self.save(record);
        PeerEnvelope {
            version: ENVELOPE_VERSION,
            id,
            from: self.addr(),
            to: to.clone(),
            olm_type: OlmMessageType::from_number(n).unwrap(),
            ciphertext: Base64Bytes(bytes),
        }
    }

    fn honest_payload(&self, to: &Peer, id: MessageId, pre_key: bool) -> PeerPayload {
        PeerPayload {
            version: PAYLOAD_VERSION,
            id,
            sender: SenderBinding {
                user: self.identity.user_id(),
                device: self.machine.device().device_id().clone(),
                keys: self.machine.device().keys(),
            },
            recipient: RecipientBinding {
                user: to.identity.user_id(),
                device: to.machine.device().device_id().clone(),
                ed25519: to.machine.device().keys().ed25519,
            },
            certificate: pre_key.then(|| self.machine.device().certificate().unwrap().clone()),
            conversation: Conversation::Direct,
            sent_at: T0,
            content: Content::Chat(ChatContent::Typing { active: true }),
        }
    }
}

fn claimed(bundle: &DeviceBundle, otk: Option<usize>) -> ClaimedBundle {
    ClaimedBundle {
        version: BUNDLE_VERSION,
        certificate: bundle.certificate.clone(),
        fallback_key: bundle.fallback_key.clone(),
        one_time_key: otk.map(|i| bundle.one_time_keys[i].clone()),
    }
}

fn connected(a: u8, b: u8) -> (Peer, Peer) {
    let mut alice = peer(a);
    let mut bob = peer(b);
    let bundle = bob.publish();
    let started = alice
        .machine
        .start_session(
            T0,
            &bob.identity.user_id(),
            bob.machine.device().device_id(),
            &claimed(&bundle, Some(0)),
        )
        .unwrap();
    alice.keys.insert(bob.addr(), started.certificate.keys);
    alice.save(started.session);
    (alice, bob)
}

#[test]
fn every_forged_pre_key_binding_is_refused_and_costs_no_one_time_key() {
    let mut alice = peer(1);
    let mut bob = peer(2);
    let bob_bundle = bob.publish();
    let bob_pickle = bob.machine.account_pickle();
    let mallory = Identity::from_seed(&[3; 32]).unwrap();
    let bob_addr = bob.addr();
    type Mutation = Box<dyn Fn(&mut PeerPayload, &mut MessageId)>;
    let mallory_cert = {
        let alice_dev = alice.machine.device();
        mallory.certify_device(alice_dev.device_id(), &alice_dev.keys(), T0)
    };
    let other_device_cert = alice.identity.certify_device(
        &DeviceId::from_random([77; 16]),
        &alice.machine.device().keys(),
        T0,
    );
    let cases: Vec<(Mutation, OpenError)> = vec![
        (Box::new(|_, id| *id = msg_id(99)), OpenError::SplicedId),
        (
            Box::new(move |p, _| p.sender.user = mallory.user_id()),
            OpenError::WrongSender,
        ),
        (
            Box::new(|p, _| p.sender.device = DeviceId::from_random([9; 16])),
            OpenError::WrongSender,
        ),
        (
            Box::new(|p, _| p.recipient.device = DeviceId::from_random([8; 16])),
            OpenError::NotForThisDevice,
        ),
        (
            Box::new(|p, _| p.recipient.ed25519 = p.sender.keys.ed25519),
            OpenError::NotForThisDevice,
        ),
        (
            Box::new(|p, _| p.recipient.user = p.sender.user),
            OpenError::NotForThisDevice,
        ),
        (
            Box::new(|p, _| p.certificate = None),
            OpenError::MissingCertificate,
        ),
        (
            Box::new(move |p, _| p.certificate = Some(mallory_cert.clone())),
            OpenError::ForgedCertificate(BundleError::WrongUser),
        ),
        (
            Box::new(|p, _| {
                if let Some(c) = p.certificate.as_mut() {
                    c.keys.curve25519 = Curve25519Key::from_bytes([5; 32]);
                }
                p.sender.keys.curve25519 = Curve25519Key::from_bytes([5; 32]);
            }),
            OpenError::SenderKeyMismatch,
        ),
        (
            Box::new(|p, _| {
                if let Some(c) = p.certificate.as_mut() {
                    c.keys.curve25519 = Curve25519Key::from_bytes([5; 32]);
                }
            }),
            OpenError::ForgedCertificate(BundleError::BadCertificateSignature),
        ),
        (
            Box::new(move |p, _| p.certificate = Some(other_device_cert.clone())),
            OpenError::CertificateMismatch,
        ),
    ];
    let bundle = claimed(&bob_bundle, Some(0));
    for (i, (mutate, expected)) in cases.into_iter().enumerate() {
        let n = u8::try_from(i).unwrap();
        // Bob as he was after publishing: one-time key 0 unused.
        bob.machine = OlmMachine::from_pickle(
            &bob_pickle,
            PickleKey::from_bytes([2; 32]),
            Box::new(SeededRandom::new(100 + u64::from(n))),
        )
        .unwrap();
        bob.sessions.clear();
        let started = alice
            .machine
            .start_session(T0, &bob.identity.user_id(), &bob_addr.device, &bundle)
            .unwrap();
        alice.sessions = vec![started.session];
        let mut id = msg_id(n);
        let mut payload = alice.honest_payload(&bob, id, true);
        mutate(&mut payload, &mut id);
        let env = alice.seal_raw(&bob_addr, id, &payload);
        let err = bob.open(&env).unwrap_err();
        assert_eq!(err, expected, "case {i}");
        assert_eq!(err.kind(), FailureKind::Forged);
        assert_eq!(err.recovery(false), Recovery::Drop);
        // The refused message did not use up the one-time key it named: the next message of
        // the same session still creates the inbound session.
        let good_payload = alice.honest_payload(&bob, msg_id(200), true);
        let good = alice.seal_raw(&bob_addr, msg_id(200), &good_payload);
        let opened = bob.open(&good).unwrap();
        assert!(opened.new_session);
        assert!(opened.account_pickle.is_some());
    }
}

#[test]
fn a_normal_message_must_bind_the_sessions_certified_keys() {
    let (mut alice, mut bob) = connected(4, 5);
    let bob_addr = bob.addr();
    let alice_addr = alice.addr();
    let first = alice.text(1, &bob_addr, "hi");
    bob.open(&first).unwrap();
    let reply = bob.text(2, &alice_addr, "hello");
    alice.open(&reply).unwrap();
    // Alice now sends normal messages; one that claims another device signing key is refused.
    let mut payload = alice.honest_payload(&bob, msg_id(3), false);
    payload.sender.keys.ed25519 = bob.machine.device().keys().ed25519;
    let env = alice.seal_raw(&bob_addr, msg_id(3), &payload);
    assert_eq!(env.olm_type, OlmMessageType::Normal);
    assert_eq!(bob.open(&env).unwrap_err(), OpenError::SenderKeyMismatch);
    // A normal message carrying a spliced id is refused too.
    let payload = alice.honest_payload(&bob, msg_id(4), false);
    let env = alice.seal_raw(&bob_addr, msg_id(5), &payload);
    assert_eq!(bob.open(&env).unwrap_err(), OpenError::SplicedId);
    // And the session still works afterwards.
    let ok = alice.text(6, &bob_addr, "still here");
    bob.open(&ok).unwrap();
}

#[test]
fn misaddressed_envelopes_are_refused_before_decrypting() {
    let (mut alice, mut bob) = connected(6, 7);
    let bob_addr = bob.addr();
    let mut env = alice.text(1, &bob_addr, "hi");
    env.to.device = DeviceId::from_random([1; 16]);
    assert_eq!(bob.open(&env).unwrap_err(), OpenError::Misaddressed);
    env.to = alice.addr();
    assert_eq!(bob.open(&env).unwrap_err(), OpenError::Misaddressed);
    // Garbage under a valid address is malformed, not a crash.
    env.to = bob_addr;
    env.ciphertext = Base64Bytes(vec![1, 2, 3]);
    assert_eq!(bob.open(&env).unwrap_err(), OpenError::MalformedOlm);
    env.olm_type = OlmMessageType::Normal;
    assert_eq!(bob.open(&env).unwrap_err(), OpenError::MalformedOlm);
}

#[test]
fn a_payload_that_is_not_a_payload_is_malformed() {
    let (mut alice, mut bob) = connected(8, 9);
    let bob_addr = bob.addr();
    let record = alice.sessions[0].clone();
    let mut session = alice.machine.load_session(&record).unwrap();
    let (n, bytes) = session.encrypt(b"{\"version\":1}").unwrap().to_parts();
    let env = PeerEnvelope {
        version: ENVELOPE_VERSION,
        id: msg_id(1),
        from: alice.addr(),
        to: bob_addr,
        olm_type: OlmMessageType::from_number(n).unwrap(),
        ciphertext: Base64Bytes(bytes),
    };
    let err = bob.open(&env).unwrap_err();
    assert!(matches!(err, OpenError::MalformedPayload(_)), "{err:?}");
    assert_eq!(err.kind(), FailureKind::Malformed);
}

#[test]
fn sealing_needs_a_session_and_a_certificate() {
    let mut alice = peer(10);
    let bob = peer(11);
    let err = alice
        .machine
        .seal(
            T0,
            &bob.addr(),
            &bob.machine.device().keys(),
            &[],
            draft(1, Content::Chat(ChatContent::Typing { active: true })),
        )
        .unwrap_err();
    assert_eq!(err, SealError::NoSession);
    let uncertified =
        Device::new_uncertified(alice.identity.user_id(), DeviceId::from_random([99; 16]));
    let mut m = OlmMachine::new(
        uncertified,
        PickleKey::from_bytes([1; 32]),
        Box::new(SeededRandom::new(1)),
    );
    let err = m
        .seal(
            T0,
            &bob.addr(),
            &bob.machine.device().keys(),
            &[],
            draft(1, Content::Chat(ChatContent::Typing { active: true })),
        )
        .unwrap_err();
    assert_eq!(err, SealError::Uncertified);
}

#[test]
fn sessions_are_only_started_with_the_device_asked_for() {
    let mut alice = peer(12);
    let mut bob = peer(13);
    let bundle = bob.publish();
    let err = alice
        .machine
        .start_session(
            T0,
            &bob.identity.user_id(),
            &DeviceId::from_random([1; 16]),
            &claimed(&bundle, Some(0)),
        )
        .unwrap_err();
    assert_eq!(err, StartSessionError::WrongDevice);
    let err = alice
        .machine
        .start_session(
            T0,
            &alice.identity.user_id(),
            bob.machine.device().device_id(),
            &claimed(&bundle, Some(0)),
        )
        .unwrap_err();
    assert_eq!(err, StartSessionError::Bundle(BundleError::WrongUser));
    let own = alice.publish();
    let own_device = alice.machine.device().device_id().clone();
    let err = alice
        .machine
        .start_session(
            T0,
            &alice.identity.user_id(),
            &own_device,
            &claimed(&own, Some(0)),
        )
        .unwrap_err();
    assert_eq!(err, StartSessionError::OwnDevice);
}

#[test]
fn the_newest_session_is_used_and_ordering_is_deterministic() {
    let (alice, bob) = connected(14, 15);
    let addr = bob.addr();
    let mut older = alice.sessions[0].clone();
    older.session_id = "a".into();
    older.last_used_at = Timestamp(1);
    let mut other_device = alice.sessions[0].clone();
    other_device.peer_device = DeviceId::from_random([3; 16]);
    other_device.last_used_at = Timestamp(u64::MAX);
    let sessions = vec![older.clone(), alice.sessions[0].clone(), other_device];
    let order: Vec<_> = newest_first(&sessions, &addr)
        .into_iter()
        .map(|r| r.session_id.clone())
        .collect();
    assert_eq!(
        order,
        vec![alice.sessions[0].session_id.clone(), "a".to_owned()]
    );
}

#[test]
fn failure_classes_map_to_recovery() {
    use OpenError as E;
    let table = [
        (
            E::Duplicate,
            FailureKind::Duplicate,
            Recovery::Ignore,
            Recovery::StartNewSession,
        ),
        (
            E::NoSession,
            FailureKind::NoSession,
            Recovery::StartNewSession,
            Recovery::StartNewSession,
        ),
        (
            E::UnknownOneTimeKey,
            FailureKind::NoSession,
            Recovery::StartNewSession,
            Recovery::StartNewSession,
        ),
        (
            E::TooFarAhead,
            FailureKind::NoSession,
            Recovery::StartNewSession,
            Recovery::StartNewSession,
        ),
        (
            E::Tampered,
            FailureKind::Tampered,
            Recovery::StartNewSession,
            Recovery::StartNewSession,
        ),
        (
            E::MalformedOlm,
            FailureKind::Malformed,
            Recovery::Drop,
            Recovery::Drop,
        ),
        (
            E::Misaddressed,
            FailureKind::Forged,
            Recovery::Drop,
            Recovery::Drop,
        ),
        (
            E::LocalState(PickleError::Decrypt),
            FailureKind::LocalState,
            Recovery::Drop,
            Recovery::Drop,
        ),
    ];
    for (err, kind, seen, unseen) in table {
        assert_eq!(err.kind(), kind, "{err:?}");
        assert_eq!(err.recovery(true), seen, "{err:?}");
        assert_eq!(err.recovery(false), unseen, "{err:?}");
    }
}

#[test]
fn debug_output_hides_pickles() {
    let (alice, _bob) = connected(16, 17);
    let shown = format!("{:?}", alice.sessions[0]);
    assert!(!shown.contains(alice.sessions[0].pickle.as_str()));
    let shown = format!("{:?}", alice.machine);
    assert!(shown.contains("OlmMachine"));
}

impl Peer {
    /// Opens `envs` as one burst (each answer in order) and saves the sessions it finishes.
    fn open_burst(&mut self, envs: &[&PeerEnvelope]) -> Vec<Result<OpenedInBurst, OpenError>> {
        let mut burst = Burst::default();
        let answers = envs
            .iter()
            .map(|env| {
                let keys = self.keys.get(&env.from).copied();
                let opened = self.machine.open_in_burst(
                    &mut burst,
                    T0.plus_millis(500),
                    env,
                    keys.as_ref(),
                    &self.sessions,
                );
                if let Ok(o) = &opened {
                    self.keys.insert(env.from.clone(), o.peer_keys);
                }
                opened
            })
            .collect();
        for record in self.machine.finish_burst(burst) {
            self.save(record);
        }
        answers
    }
}

/// A burst opens envelopes one after another on a session kept live (a new one included), and
/// saves each session once at the end; refused envelopes inside it, before or after decrypting,
/// leave the live session as it was.
#[test]
fn a_burst_keeps_sessions_live_and_refusals_leave_them_as_they_were() {
    let (mut alice, mut bob) = connected(30, 31);
    let bob_addr = bob.addr();
    let alice_addr = alice.addr();
    // Three pre-key messages: the first creates Bob's session, the others use it while live.
    let e1 = alice.text(1, &bob_addr, "one");
    let e2 = alice.text(2, &bob_addr, "two");
    let e3 = alice.text(3, &bob_addr, "three");
    let mut tampered = e2.clone();
    let last = tampered.ciphertext.0.len() - 1;
    tampered.ciphertext.0[last] ^= 1;
    let answers = bob.open_burst(&[&e1, &tampered, &e2, &e1, &e3]);
    let kinds: Vec<Result<bool, OpenError>> = answers
        .into_iter()
        .map(|a| a.map(|o| o.new_session))
        .collect();
    assert_eq!(
        kinds,
        [
            Ok(true),
            Err(OpenError::Tampered),
            Ok(false),
            Err(OpenError::Duplicate),
            Ok(false)
        ]
    );
    assert_eq!(bob.sessions.len(), 1, "one session, saved once");
    // The saved session is the advanced one: its used keys are gone.
    assert_eq!(bob.open(&e2).unwrap_err(), OpenError::Duplicate);

    // Normal messages now. A payload refused after it decrypted (a claimed signing key that is
    // not the sender's) must not consume the key of the live session.
    let reply = bob.text(4, &alice_addr, "hello");
    alice.open(&reply).unwrap();
    let e5 = alice.text(5, &bob_addr, "five");
    let mut forged = alice.honest_payload(&bob, msg_id(6), false);
    forged.sender.keys.ed25519 = bob.machine.device().keys().ed25519;
    let e6 = alice.seal_raw(&bob_addr, msg_id(6), &forged);
    let e7 = alice.text(7, &bob_addr, "seven");
    let answers = bob.open_burst(&[&e5, &e6, &e6, &e7]);
    let ok: Vec<Result<(), OpenError>> = answers.into_iter().map(|a| a.map(|_| ())).collect();
    assert_eq!(
        ok,
        [
            Ok(()),
            Err(OpenError::SenderKeyMismatch),
            Err(OpenError::SenderKeyMismatch),
            Ok(())
        ]
    );
    // What the burst saved holds every accepted advance (e5's and e7's keys are used up) and
    // still opens what comes next.
    assert_eq!(bob.open(&e5).unwrap_err(), OpenError::Duplicate);
    assert_eq!(bob.open(&e7).unwrap_err(), OpenError::Duplicate);
    let e8 = alice.text(8, &bob_addr, "eight");
    bob.open(&e8).unwrap();
}

/// A burst that is dropped (its transaction failed) leaves the stored records authoritative.
#[test]
fn a_dropped_burst_changes_nothing_stored() {
    let (mut alice, mut bob) = connected(32, 33);
    let bob_addr = bob.addr();
    let e1 = alice.text(1, &bob_addr, "one");
    bob.open(&e1).unwrap();
    let e2 = alice.text(2, &bob_addr, "two");
    let mut burst = Burst::default();
    bob.machine
        .open_in_burst(&mut burst, T0, &e2, bob.keys.get(&e2.from), &bob.sessions)
        .unwrap();
    drop(burst);
    // As if the burst never happened: e2 opens again from the stored record.
    bob.open(&e2).unwrap();
}
