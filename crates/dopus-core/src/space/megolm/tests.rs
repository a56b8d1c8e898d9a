use super::*;
use crate::space::ControlLog;
use crate::space::key_requests::{KeyRequests, MAX_ATTEMPTS, WaitState};
use crate::space::test_support::KeySigner;
use crate::space::tests::harness::{T0, admit, create_with, op, signer};
use crate::store::{MemoryStore, Store};
use dopus_proto::peer::MessageId;
use dopus_proto::space::{
    CHANNEL_PAYLOAD_VERSION, ChannelKind, Mentions, OpBody, Overwrite, OverwriteTarget, RoleId,
    derive_channel_id,
};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Chat {
    Text { body: String },
}

impl ChannelContent for Chat {
    fn validate(&self) -> Result<(), PeerError> {
        Ok(())
    }
    fn kind_name(&self) -> &'static str {
        "text"
    }
}

/// One device: its signer, its channel crypto and its store.
struct Dev {
    signer: KeySigner,
    crypto: ChannelCrypto,
    store: MemoryStore,
}

impl Dev {
    fn new(user: u64) -> Self {
        Self {
            signer: signer(user),
            crypto: ChannelCrypto::new(&PickleKey::from_bytes([user as u8; 32])),
            store: MemoryStore::new(),
        }
    }

    fn addr(&self) -> PeerAddress {
        PeerAddress {
            user: self.signer.user(),
            device: self.signer.cert.device_id.clone(),
        }
    }

    fn device(&self) -> DeviceAddr {
        (self.signer.user(), self.signer.cert.device_id.clone())
    }

    fn save(&mut self, changes: impl IntoIterator<Item = Change>) {
        self.store.apply(changes.into_iter().collect()).unwrap();
    }

    /// Receives a room key over Olm from `from` and stores it.
    fn take_key(
        &mut self,
        state: &SpaceState,
        from: &Dev,
        content: &SpaceContent,
    ) -> Result<(), KeyError> {
        let SpaceContent::SpaceRoomKey { session_id, .. } = content else {
            panic!()
        };
        let existing = self.store.megolm_inbound(session_id).unwrap();
        if let Some(rec) =
            self.crypto
                .accept_room_key(state, &from.signer.cert, content, existing.as_ref(), T0)?
        {
            self.save([Change::SaveMegolmInbound(rec)]);
        }
        Ok(())
    }

    fn read(&mut self, m: &ChannelMessage) -> Result<String, DecryptError> {
        let inbound = self.store.megolm_inbound(&m.session_id).unwrap();
        let store = &self.store;
        let d: Decrypted<Chat> = self.crypto.decrypt(
            inbound.as_ref(),
            m,
            &|s, i| store.megolm_seen(s, i).unwrap(),
            T0,
        )?;
        self.save(d.changes);
        let Chat::Text { body } = d.payload.content;
        Ok(body)
    }
}

/// Every device that may read `channel` now.
fn audience(state: &SpaceState, channel: &ChannelId) -> Vec<DeviceAddr> {
    state
        .audience(channel)
        .iter()
        .flat_map(|u| {
            state
                .known_devices(u)
                .into_iter()
                .map(|c| (c.user_id, c.device_id.clone()))
        })
        .collect()
}

struct World {
    log: ControlLog,
    general: ChannelId,
}

fn world(owner: &Dev, members: &[&Dev], share_history: bool) -> World {
    let mut log = create_with(&owner.signer, Permissions::DEFAULT_EVERYONE, share_history);
    for m in members {
        admit(&mut log, &owner.signer, &m.signer);
    }
    let create = op(
        &mut log,
        &owner.signer,
        OpBody::ChannelCreate {
            kind: ChannelKind::Text,
            name: "general".into(),
            topic: None,
            parent: None,
            position: 0,
            overwrites: vec![],
        },
    );
    let general = derive_channel_id(log.space(), &create.id());
    World { log, general }
}

fn payload(
    w: &mut World,
    channel: ChannelId,
    from: &Dev,
    n: u8,
    body: &str,
) -> ChannelPayload<Chat> {
    ChannelPayload {
        version: CHANNEL_PAYLOAD_VERSION,
        id: MessageId::new_v7(Timestamp(T0.0 + u64::from(n)), [n; 10]),
        space: *w.log.space(),
        channel,
        sender: from.addr(),
        sent_at: T0,
        heads: w.log.heads(),
        mentions: Mentions::default(),
        content: Chat::Text { body: body.into() },
    }
}

/// `from` sends `body` in `channel` to everyone who may read it: prepare, share keys,
/// encrypt, persist. Returns the message and why a session was made, if one was.
fn send(
    w: &mut World,
    channel: ChannelId,
    from: &mut Dev,
    readers: &mut [&mut Dev],
    n: u8,
    body: &str,
) -> (ChannelMessage, Option<RotationReason>) {
    let state = w.log.state().clone();
    let current = from.store.megolm_outbound(&channel).unwrap();
    let prepared = from
        .crypto
        .prepare(
            &from.signer,
            *state.id(),
            channel,
            current.as_ref(),
            &audience(&state, &channel),
            state.share_history(),
            T0,
        )
        .unwrap();
    let mut changes = vec![Change::SaveMegolmOutbound(prepared.outbound.clone())];
    changes.extend(prepared.own_inbound.clone().map(Change::SaveMegolmInbound));
    from.save(changes);
    for share in &prepared.shares {
        if let Some(r) = readers.iter_mut().find(|r| r.device() == share.to) {
            r.take_key(&state, from, &share.content).unwrap();
        }
    }
    let p = payload(w, channel, from, n, body);
    let (message, outbound) = from.crypto.encrypt(&prepared.outbound, &p).unwrap();
    from.save([Change::SaveMegolmOutbound(outbound)]);
    (message, prepared.rotated)
}

#[test]
fn a_removed_member_cannot_decrypt_after_rotation() {
    let (mut o, mut a, mut c) = (Dev::new(1), Dev::new(2), Dev::new(3));
    let mut w = world(&o, &[&a, &c], false);
    let ch = w.general;
    let (m1, why) = send(&mut w, ch, &mut o, &mut [&mut a, &mut c], 1, "before");
    assert_eq!(why, Some(RotationReason::NoSession));
    assert_eq!(a.read(&m1).unwrap(), "before");
    assert_eq!(c.read(&m1).unwrap(), "before");
    // The owner reads its own message with its own inbound copy.
    assert_eq!(o.read(&m1).unwrap(), "before");

    op(
        &mut w.log,
        &o.signer,
        OpBody::Kick {
            user: c.signer.user(),
        },
    );
    let (m2, why) = send(&mut w, ch, &mut o, &mut [&mut a, &mut c], 2, "after");
    assert_eq!(why, Some(RotationReason::ReaderRemoved));
    assert_ne!(m2.session_id, m1.session_id);
    assert_eq!(a.read(&m2).unwrap(), "after");
    assert_eq!(c.read(&m2), Err(DecryptError::UnknownSession));
    // Trying the old session on the new message does not help either.
    let old = c.store.megolm_inbound(&m1.session_id).unwrap();
    assert_eq!(
        c.crypto
            .decrypt::<Chat>(old.as_ref(), &m2, &|_, _| false, T0)
            .unwrap_err(),
        DecryptError::UnknownSession
    );
    // And asking for the key is refused: C may not read the channel any more.
    let mut requests = KeyRequests::new();
    let out = requests
        .need(T0, *w.log.space(), ch, &m2.session_id, o.addr(), 0)
        .unwrap();
    let state = w.log.state().clone();
    let answer = o
        .crypto
        .answer_key_request(
            &state,
            &o.signer.user(),
            &c.addr(),
            &out.content,
            o.store.megolm_inbound(&m2.session_id).unwrap().as_ref(),
            o.store.megolm_outbound(&ch).unwrap().as_ref(),
        )
        .unwrap();
    assert!(matches!(
        answer,
        SpaceContent::SpaceKeyWithheld {
            code: WithheldCode::Unauthorized,
            ..
        }
    ));
    requests.withheld(&m2.session_id, &o.addr(), WithheldCode::Unauthorized);
    assert_eq!(
        requests.status(&m2.session_id).unwrap().state,
        WaitState::Withheld(WithheldCode::Unauthorized)
    );
}

#[test]
fn a_new_member_under_shared_history_decrypts_exactly_what_it_was_given() {
    let (mut o, mut a) = (Dev::new(1), Dev::new(2));
    let mut newcomer = Dev::new(9);
    // History sharing off at first: those sessions are never given to later members.
    let mut w = world(&o, &[&a], false);
    let general = w.general;
    let (old, _) = send(&mut w, general, &mut o, &mut [&mut a], 1, "private past");
    op(
        &mut w.log,
        &o.signer,
        OpBody::Update {
            name: None,
            description: None,
            share_history: Some(true),
        },
    );
    // A staff channel the newcomer will not be able to read.
    let role =
        crate::space::tests::harness::role(&mut w.log, &o.signer, "Staff", 5, Permissions::NONE);
    crate::space::tests::harness::assign(&mut w.log, &o.signer, a.signer.user(), role);
    let staff_op = op(
        &mut w.log,
        &o.signer,
        OpBody::ChannelCreate {
            kind: ChannelKind::Text,
            name: "staff".into(),
            topic: None,
            parent: None,
            position: 1,
            overwrites: vec![
                Overwrite {
                    target: OverwriteTarget::Role(RoleId::EVERYONE),
                    allow: Permissions::NONE,
                    deny: Permissions::VIEW_CHANNEL,
                },
                Overwrite {
                    target: OverwriteTarget::Role(role),
                    allow: Permissions::VIEW_CHANNEL,
                    deny: Permissions::NONE,
                },
            ],
        },
    );
    let staff = derive_channel_id(w.log.space(), &staff_op.id());
    let (shared1, why) = send(&mut w, general, &mut o, &mut [&mut a], 2, "shared one");
    assert_eq!(why, Some(RotationReason::HistorySettingChanged));
    let (shared2, _) = send(&mut w, general, &mut o, &mut [&mut a], 3, "shared two");
    let (secret, _) = send(&mut w, staff, &mut o, &mut [&mut a], 4, "staff only");
    assert_eq!(a.read(&secret).unwrap(), "staff only");

    admit(&mut w.log, &o.signer, &newcomer.signer);
    let state = w.log.state().clone();
    let mut held = o.store.megolm_inbound_for_channel(&general).unwrap();
    held.extend(o.store.megolm_inbound_for_channel(&staff).unwrap());
    let bundles = o
        .crypto
        .history_bundles(&state, &newcomer.signer.user(), &held);
    assert_eq!(bundles.len(), 1);
    let store = newcomer.store.clone();
    for b in &bundles {
        b.validate().unwrap();
        let results = newcomer
            .crypto
            .accept_history_bundle(
                &state,
                &o.addr(),
                b,
                &|s| store.megolm_inbound(s).unwrap(),
                T0,
            )
            .unwrap();
        for r in results {
            let rec = r.unwrap().unwrap();
            assert!(rec.forwarded);
            newcomer.save([Change::SaveMegolmInbound(rec)]);
        }
    }
    assert_eq!(newcomer.read(&shared1).unwrap(), "shared one");
    assert_eq!(newcomer.read(&shared2).unwrap(), "shared two");
    assert_eq!(newcomer.read(&old), Err(DecryptError::UnknownSession));
    assert_eq!(newcomer.read(&secret), Err(DecryptError::UnknownSession));
    // The newcomer gets the current key for new messages from now on.
    let (fresh, why) = send(
        &mut w,
        general,
        &mut o,
        &mut [&mut a, &mut newcomer],
        5,
        "welcome",
    );
    assert_eq!(why, None);
    assert_eq!(newcomer.read(&fresh).unwrap(), "welcome");
}

#[test]
fn a_replayed_session_and_index_is_dropped() {
    let (mut o, mut a) = (Dev::new(1), Dev::new(2));
    let mut w = world(&o, &[&a], false);
    let ch = w.general;
    let (m, _) = send(&mut w, ch, &mut o, &mut [&mut a], 1, "once");
    assert_eq!(a.read(&m).unwrap(), "once");
    assert_eq!(a.read(&m), Err(DecryptError::Replay));
    // Even re-wrapped as a new message object with the same ciphertext.
    let copy = ChannelMessage::from_json(&m.to_json().unwrap()).unwrap();
    assert_eq!(a.read(&copy), Err(DecryptError::Replay));
    assert_eq!(ChannelCrypto::message_index(&m), Ok(0));
    let (m2, _) = send(&mut w, ch, &mut o, &mut [&mut a], 2, "twice");
    assert_eq!(ChannelCrypto::message_index(&m2), Ok(1));
    assert_eq!(a.read(&m2).unwrap(), "twice");
}

#[test]
fn a_key_from_the_wrong_device_is_refused() {
    let (mut o, mut a, mut m) = (Dev::new(1), Dev::new(2), Dev::new(3));
    let mut w = world(&o, &[&a, &m], false);
    let ch = w.general;
    let state = w.log.state().clone();
    let prepared = o
        .crypto
        .prepare(
            &o.signer,
            *state.id(),
            ch,
            None,
            &audience(&state, &ch),
            false,
            T0,
        )
        .unwrap();
    let key = prepared.shares[0].content.clone();
    // M relays O's room key as if it were M's: the announcement is O's, not M's.
    assert_eq!(a.take_key(&state, &m, &key), Err(KeyError::BadAnnouncement));
    // The same key straight from O is fine.
    a.take_key(&state, &o, &key).unwrap();
    // M makes its own session and announces it with O's session id: the key does not match.
    let mprep = m
        .crypto
        .prepare(
            &m.signer,
            *state.id(),
            ch,
            None,
            &audience(&state, &ch),
            false,
            T0,
        )
        .unwrap();
    let SpaceContent::SpaceRoomKey {
        session_key,
        shared_history,
        ..
    } = mprep.shares[0].content.clone()
    else {
        panic!()
    };
    let SpaceContent::SpaceRoomKey { session_id, .. } = key.clone() else {
        panic!()
    };
    let forged = SpaceContent::SpaceRoomKey {
        space: *state.id(),
        channel: ch,
        session_id: session_id.clone(),
        session_key,
        shared_history,
        announcement: m.signer.sign(&session_announcement_bytes(
            state.id(),
            &ch,
            &session_id,
            &m.signer.user(),
            &m.signer.cert.device_id,
            false,
        )),
    };
    let existing = a.store.megolm_inbound(&session_id).unwrap();
    assert_eq!(
        a.crypto
            .accept_room_key(&state, &m.signer.cert, &forged, existing.as_ref(), T0),
        Err(KeyError::BadKey)
    );
    // A message in O's session that claims to come from M is refused.
    o.save([Change::SaveMegolmOutbound(prepared.outbound.clone())]);
    let mut p = payload(&mut w, ch, &o, 1, "hi");
    let (mut msg, _) = o.crypto.encrypt(&prepared.outbound, &p).unwrap();
    msg.sender = m.addr();
    assert_eq!(a.read(&msg), Err(DecryptError::SenderMismatch));
    // A payload that names another channel than the session's is refused.
    p.channel = ChannelId::from_bytes([9; 16]);
    assert_eq!(
        o.crypto.encrypt(&prepared.outbound, &p).unwrap_err(),
        MegolmError::WrongChannel
    );
    // A tampered ciphertext is refused.
    let p = payload(&mut w, ch, &o, 2, "hi");
    let (mut msg, _) = o.crypto.encrypt(&prepared.outbound, &p).unwrap();
    let last = msg.ciphertext.0.len() - 70;
    msg.ciphertext.0[last] ^= 1;
    assert_eq!(a.read(&msg), Err(DecryptError::Invalid));
    // A forwarded key nobody asked for is refused.
    let fwd = o
        .crypto
        .answer_key_request(
            &state,
            &o.signer.user(),
            &a.addr(),
            &SpaceContent::SpaceKeyRequest {
                space: *state.id(),
                channel: ch,
                session_id: session_id.clone(),
                owner: o.addr(),
                from_index: 0,
                request: "r1".into(),
            },
            prepared.own_inbound.as_ref(),
            Some(&prepared.outbound),
        )
        .unwrap();
    assert!(matches!(fwd, SpaceContent::SpaceForwardedKey { .. }));
    let me = a.signer.user();
    assert_eq!(
        a.crypto
            .accept_forwarded_key(&state, &me, &o.addr(), &fwd, false, None, T0),
        Err(KeyError::Unrequested)
    );
    // A forwarded key whose announcement was tampered with is refused.
    let SpaceContent::SpaceForwardedKey {
        space,
        channel,
        session_id,
        owner,
        shared_history,
        session_key,
        request,
        ..
    } = fwd.clone()
    else {
        panic!()
    };
    let bad = SpaceContent::SpaceForwardedKey {
        space,
        channel,
        session_id,
        owner,
        announcement: Signature::from_bytes([1; 64]),
        shared_history,
        session_key,
        request,
    };
    assert_eq!(
        a.crypto
            .accept_forwarded_key(&state, &me, &o.addr(), &bad, true, None, T0),
        Err(KeyError::BadAnnouncement)
    );
    let _ = &mut m;
}

#[test]
fn waiting_for_keys_then_a_forward_from_the_owner() {
    let (mut o, mut a) = (Dev::new(1), Dev::new(2));
    let mut w = world(&o, &[&a], false);
    let ch = w.general;
    // A's key share is lost: A gets the message but not the key.
    let (m1, _) = send(&mut w, ch, &mut o, &mut [], 1, "lost key");
    assert_eq!(a.read(&m1), Err(DecryptError::UnknownSession));
    let mut requests = KeyRequests::new();
    let out = requests
        .need(T0, *w.log.space(), ch, &m1.session_id, o.addr(), 0)
        .unwrap();
    assert_eq!(out.to, vec![o.addr()]);
    assert!(
        requests
            .need(T0, *w.log.space(), ch, &m1.session_id, o.addr(), 0)
            .is_none()
    );
    assert!(requests.is_requested(&m1.session_id));
    let state = w.log.state().clone();
    // The owner had shared the session with A (the share was lost in transit), so it answers.
    let answer = o
        .crypto
        .answer_key_request(
            &state,
            &o.signer.user(),
            &a.addr(),
            &out.content,
            o.store.megolm_inbound(&m1.session_id).unwrap().as_ref(),
            o.store.megolm_outbound(&ch).unwrap().as_ref(),
        )
        .unwrap();
    let me = a.signer.user();
    let rec = a
        .crypto
        .accept_forwarded_key(
            &state,
            &me,
            &o.addr(),
            &answer,
            requests.is_requested(&m1.session_id),
            None,
            T0,
        )
        .unwrap()
        .unwrap();
    a.save([Change::SaveMegolmInbound(rec)]);
    assert!(requests.received(&m1.session_id));
    assert_eq!(a.read(&m1).unwrap(), "lost key");
    // Someone the session was not shared with, under no shared history, is refused.
    let late = Dev::new(7);
    admit(&mut w.log, &o.signer, &late.signer);
    let state = w.log.state().clone();
    let answer = o
        .crypto
        .answer_key_request(
            &state,
            &o.signer.user(),
            &late.addr(),
            &out.content,
            o.store.megolm_inbound(&m1.session_id).unwrap().as_ref(),
            o.store.megolm_outbound(&ch).unwrap().as_ref(),
        )
        .unwrap();
    assert!(matches!(
        answer,
        SpaceContent::SpaceKeyWithheld {
            code: WithheldCode::HistoryNotShared,
            ..
        }
    ));
}

#[test]
fn key_requests_back_off_widen_and_give_up() {
    let space = SpaceId::from_bytes([1; 32]);
    let ch = ChannelId::from_bytes([2; 16]);
    let owner = Dev::new(1).addr();
    let other = Dev::new(2).addr();
    let mut r = KeyRequests::new();
    let sid = dopus_types::b64_encode(&[4; 32]);
    r.need(T0, space, ch, &sid, owner.clone(), 5).unwrap();
    assert_eq!(r.poll_timeout(), Some(T0.plus_millis(10_000)));
    assert!(
        r.handle_timeout(T0.plus_millis(9_999), &|_| vec![])
            .is_empty()
    );
    let readers = |_: &ChannelId| vec![owner.clone(), other.clone()];
    let out = r.handle_timeout(T0.plus_millis(10_000), &readers);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, vec![owner.clone(), other.clone()]);
    // A lower index asks again at once.
    assert!(r.need(T0, space, ch, &sid, owner.clone(), 2).is_some());
    assert_eq!(r.status(&sid).unwrap().from_index, 2);
    let mut now = T0;
    for _ in 0..20 {
        now = r.poll_timeout().unwrap_or(now);
        r.handle_timeout(now, &readers);
    }
    let w = r.status(&sid).unwrap();
    assert_eq!(w.state, WaitState::GaveUp);
    assert_eq!(w.attempts, MAX_ATTEMPTS);
    assert_eq!(r.poll_timeout(), None);
    // Only the owner's refusal ends a wait.
    let sid2 = dopus_types::b64_encode(&[5; 32]);
    r.need(T0, space, ch, &sid2, owner.clone(), 0).unwrap();
    r.withheld(&sid2, &other, WithheldCode::Unavailable);
    assert_eq!(r.status(&sid2).unwrap().state, WaitState::Asking);
    r.withheld(&sid2, &owner, WithheldCode::Unavailable);
    assert_eq!(
        r.status(&sid2).unwrap().state,
        WaitState::Withheld(WithheldCode::Unavailable)
    );
}

#[test]
fn rotation_by_count_and_age_and_new_devices_get_the_current_key_only() {
    let (mut o, mut a) = (Dev::new(1), Dev::new(2));
    let mut late = Dev::new(3);
    let mut w = world(&o, &[&a], false);
    let ch = w.general;
    let (first, why) = send(&mut w, ch, &mut o, &mut [&mut a], 0, "m0");
    assert_eq!(why, Some(RotationReason::NoSession));
    for i in 1..ROTATE_AFTER_MESSAGES {
        let (m, why) = send(&mut w, ch, &mut o, &mut [&mut a], (i % 250) as u8, "m");
        assert_eq!(why, None, "message {i}");
        assert_eq!(m.session_id, first.session_id);
    }
    let (m, why) = send(&mut w, ch, &mut o, &mut [&mut a], 1, "m100");
    assert_eq!(why, Some(RotationReason::MessageCount));
    assert_eq!(a.read(&m).unwrap(), "m100");
    // A member who joins mid-session gets the key from the current index: no rotation, and
    // the earlier messages of that session stay unreadable for them.
    admit(&mut w.log, &o.signer, &late.signer);
    let (m2, why) = send(
        &mut w,
        ch,
        &mut o,
        &mut [&mut a, &mut late],
        2,
        "hello late",
    );
    assert_eq!(why, None);
    assert_eq!(late.read(&m2).unwrap(), "hello late");
    assert!(matches!(
        late.read(&m),
        Err(DecryptError::UnknownIndex { first_known: 1 })
    ));
    // A week later the session is replaced.
    let state = w.log.state().clone();
    let current = o.store.megolm_outbound(&ch).unwrap();
    let later = T0.plus_millis(ROTATE_AFTER_MS);
    let p = o
        .crypto
        .prepare(
            &o.signer,
            *state.id(),
            ch,
            current.as_ref(),
            &audience(&state, &ch),
            false,
            later,
        )
        .unwrap();
    assert_eq!(p.rotated, Some(RotationReason::Age));
    assert_eq!(p.shares.len(), 2);
    // A session whose pickle cannot be opened is replaced, not an error.
    let mut broken = current.clone().unwrap();
    broken.pickle = Pickle::new("garbage");
    let p = o
        .crypto
        .prepare(
            &o.signer,
            *state.id(),
            ch,
            Some(&broken),
            &audience(&state, &ch),
            false,
            T0,
        )
        .unwrap();
    assert_eq!(p.rotated, Some(RotationReason::Unreadable));
}
