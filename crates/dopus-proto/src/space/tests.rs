use super::*;
use crate::bundle::{DeviceCertificate, test_support};
use crate::peer::{Base64Bytes, MessageId, PeerAddress, PeerError};
use dopus_types::{
    ChannelId, Curve25519Key, DeviceId, DeviceKeys, Ed25519Key, Signature, SpaceId, Timestamp,
    UserId,
};
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;

struct Author {
    device: SigningKey,
    cert: DeviceCertificate,
}

fn ed(sk: &SigningKey) -> Ed25519Key {
    Ed25519Key::from_bytes(sk.verifying_key().as_bytes()).unwrap()
}

fn author(seed: u8) -> Author {
    let identity = SigningKey::from_bytes(&[seed; 32]);
    let device = SigningKey::from_bytes(&[seed.wrapping_add(100); 32]);
    let cert = test_support::certificate(
        UserId::from_key(ed(&identity)),
        DeviceId::from_random([seed; 16]),
        DeviceKeys {
            ed25519: ed(&device),
            curve25519: Curve25519Key::from_bytes([seed; 32]),
        },
        Timestamp(1_700_000_000_000),
        &|b: &[u8]| Signature::from_bytes(identity.sign(b).to_bytes()),
    );
    Author { device, cert }
}

fn user(seed: u8) -> UserId {
    author(seed).cert.user_id
}

fn op_id(n: u8) -> OpId {
    OpId::from_bytes([n; 32])
}

fn space_id() -> SpaceId {
    SpaceId::from_bytes([5; 32])
}

fn channel(n: u8) -> ChannelId {
    ChannelId::from_bytes([n; 16])
}

fn sign(
    a: &Author,
    space: Option<SpaceId>,
    parents: Vec<OpId>,
    depth: u64,
    body: OpBody,
) -> SpaceOp {
    let created_at = Timestamp(1_700_000_000_500);
    let bytes = SpaceOp::signing_bytes_for(
        SPACE_OP_VERSION,
        space.as_ref(),
        &a.cert,
        &parents,
        depth,
        created_at,
        &body,
    );
    SpaceOp {
        version: SPACE_OP_VERSION,
        space,
        author: a.cert.clone(),
        parents,
        depth,
        created_at,
        body,
        signature: Signature::from_bytes(a.device.sign(&bytes).to_bytes()),
    }
}

fn genesis(a: &Author) -> SpaceOp {
    sign(
        a,
        None,
        vec![],
        0,
        OpBody::Create {
            name: "Rust fans".into(),
            nonce: SpaceNonce([9; 16]),
            everyone: Permissions::DEFAULT_EVERYONE,
            share_history: false,
        },
    )
}

fn every_body() -> Vec<OpBody> {
    let joiner = author(7);
    vec![
        OpBody::Update {
            name: Some("Rustaceans".into()),
            description: Some("a place\nto talk".into()),
            share_history: Some(true),
        },
        OpBody::InviteCreate {
            invite_key: ed(&SigningKey::from_bytes(&[42; 32])),
            max_uses: Some(10),
            expires_at: Some(Timestamp(1_700_100_000_000)),
            role: Some(RoleId::from_bytes([3; 16])),
        },
        OpBody::InviteRevoke { invite: op_id(2) },
        OpBody::Join {
            invite: op_id(2),
            joiner: Box::new(joiner.cert.clone()),
            requested_at: Timestamp(1_700_000_000_100),
            proof: Signature::from_bytes([1; 64]),
        },
        OpBody::Leave,
        OpBody::Kick { user: user(3) },
        OpBody::Ban { user: user(3) },
        OpBody::Unban { user: user(3) },
        OpBody::RoleCreate {
            name: "Moderator".into(),
            color: 0x00ff_8800,
            position: 5,
            permissions: Permissions::KICK.union(Permissions::MANAGE_MESSAGES),
        },
        OpBody::RoleUpdate {
            role: RoleId::from_bytes([3; 16]),
            name: None,
            color: None,
            position: Some(4),
            permissions: Some(Permissions::BAN),
        },
        OpBody::RoleDelete {
            role: RoleId::from_bytes([3; 16]),
        },
        OpBody::RoleAssign {
            user: user(3),
            role: RoleId::from_bytes([3; 16]),
        },
        OpBody::RoleRevoke {
            user: user(3),
            role: RoleId::from_bytes([3; 16]),
        },
        OpBody::ChannelCreate {
            kind: ChannelKind::Text,
            name: "general".into(),
            topic: Some("say hi".into()),
            parent: Some(channel(1)),
            position: 0,
            overwrites: vec![
                Overwrite {
                    target: OverwriteTarget::Role(RoleId::EVERYONE),
                    allow: Permissions::NONE,
                    deny: Permissions::SEND_MESSAGES,
                },
                Overwrite {
                    target: OverwriteTarget::Member(user(3)),
                    allow: Permissions::SEND_MESSAGES,
                    deny: Permissions::NONE,
                },
            ],
        },
        OpBody::ChannelCreate {
            kind: ChannelKind::Voice,
            name: "General".into(),
            topic: None,
            parent: None,
            position: 1,
            overwrites: vec![],
        },
        OpBody::ChannelUpdate {
            channel: channel(2),
            name: Some("off-topic".into()),
            topic: None,
            overwrites: Some(vec![]),
        },
        OpBody::ChannelDelete {
            channel: channel(2),
        },
        OpBody::ChannelReorder {
            positions: vec![
                ChannelPosition {
                    channel: channel(2),
                    parent: None,
                    position: 0,
                },
                ChannelPosition {
                    channel: channel(3),
                    parent: Some(channel(1)),
                    position: 1,
                },
            ],
        },
        OpBody::TransferOwnership { to: user(3) },
        OpBody::Profile {
            display_name: "Zoë".into(),
        },
    ]
}

fn every_op() -> Vec<SpaceOp> {
    let a = author(1);
    let mut ops = vec![genesis(&a)];
    for (i, body) in every_body().into_iter().enumerate() {
        let mut parents = vec![op_id(1), op_id(200 - i as u8)];
        parents.sort();
        ops.push(sign(&a, Some(space_id()), parents, 2 + i as u64, body));
    }
    ops
}

#[test]
fn every_op_verifies_and_round_trips() {
    for op in every_op() {
        let id = op.verify().unwrap();
        assert_eq!(id, op.id());
        let back = SpaceOp::from_json(&op.to_json().unwrap()).unwrap();
        assert_eq!(back, op);
        assert_eq!(back.verify().unwrap(), id);
    }
}

#[test]
fn every_op_kind_snapshot() {
    insta::assert_json_snapshot!(every_op());
}

#[test]
fn signing_bytes_are_stable() {
    // A change here changes every op id and space id: that is a protocol version bump.
    let g = genesis(&author(1));
    insta::assert_snapshot!(format!(
        "op id {}\nspace id {}\nsigning bytes {}",
        g.id(),
        g.genesis_space_id().unwrap(),
        hex(&g.signing_bytes())
    ));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn any_change_breaks_the_signature() {
    let a = author(1);
    let op = sign(
        &a,
        Some(space_id()),
        vec![op_id(1)],
        1,
        OpBody::Kick { user: user(3) },
    );
    op.verify().unwrap();
    let mut tampered = vec![];
    let mut t = op.clone();
    t.body = OpBody::Kick { user: user(4) };
    tampered.push(t);
    let mut t = op.clone();
    t.depth = 2;
    tampered.push(t);
    let mut t = op.clone();
    t.parents = vec![op_id(2)];
    tampered.push(t);
    let mut t = op.clone();
    t.space = Some(SpaceId::from_bytes([6; 32]));
    tampered.push(t);
    let mut t = op.clone();
    t.created_at = Timestamp(1);
    tampered.push(t);
    for t in tampered {
        assert_eq!(t.verify(), Err(OpError::BadSignature));
        assert_ne!(t.id(), op.id());
    }
    // Another device of the same user, certified by the same identity, cannot claim the op.
    let mut t = op.clone();
    t.author = author(2).cert;
    t.author.user_id = a.cert.user_id;
    assert!(matches!(t.verify(), Err(OpError::Certificate(_))));
    // A different author who re-signs makes a different op.
    let b = author(2);
    let other = sign(&b, Some(space_id()), vec![op_id(1)], 1, op.body.clone());
    assert_ne!(other.id(), op.id());
}

#[test]
fn genesis_rules() {
    let a = author(1);
    let g = genesis(&a);
    assert!(g.genesis_space_id().is_some());
    let other = sign(&a, Some(space_id()), vec![op_id(1)], 1, OpBody::Leave);
    assert_eq!(other.genesis_space_id(), None);
    // A create op with a space, parents or depth is refused, and so is an op without them.
    let bad = [
        sign(&a, Some(space_id()), vec![], 0, g.body.clone()),
        sign(&a, None, vec![op_id(1)], 1, g.body.clone()),
        sign(&a, None, vec![], 3, g.body.clone()),
        sign(&a, None, vec![], 0, OpBody::Leave),
        sign(&a, Some(space_id()), vec![], 1, OpBody::Leave),
        sign(&a, Some(space_id()), vec![op_id(1)], 0, OpBody::Leave),
    ];
    for op in bad {
        assert!(matches!(op.verify(), Err(OpError::Structure(_))), "{op:?}");
    }
    // Two spaces with the same name by the same author at the same time still differ by nonce.
    let mut g2 = genesis(&a);
    if let OpBody::Create { nonce, .. } = &mut g2.body {
        nonce.0 = [10; 16];
    }
    let g2 = sign(&a, None, vec![], 0, g2.body);
    assert_ne!(g.genesis_space_id(), g2.genesis_space_id());
}

#[test]
fn parents_must_be_sorted_distinct_and_bounded() {
    let a = author(1);
    let unsorted = sign(
        &a,
        Some(space_id()),
        vec![op_id(2), op_id(1)],
        1,
        OpBody::Leave,
    );
    assert_eq!(
        unsorted.validate(),
        Err(OpError::Format(PeerError::InvalidField {
            field: "parents"
        }))
    );
    let dup = sign(
        &a,
        Some(space_id()),
        vec![op_id(1), op_id(1)],
        1,
        OpBody::Leave,
    );
    assert!(dup.validate().is_err());
    let many: Vec<OpId> = (0..=MAX_PARENTS as u8).map(op_id).collect();
    let too_many = sign(&a, Some(space_id()), many, 1, OpBody::Leave);
    assert_eq!(
        too_many.validate(),
        Err(OpError::Format(PeerError::FieldTooLong {
            field: "parents",
            limit: MAX_PARENTS
        }))
    );
}

#[test]
fn oversize_and_invalid_fields_are_refused_on_decode() {
    let a = author(1);
    let cases: Vec<(OpBody, &str)> = vec![
        (
            OpBody::Update {
                name: Some("x".repeat(MAX_NAME_BYTES + 1)),
                description: None,
                share_history: None,
            },
            "name",
        ),
        (
            OpBody::Update {
                name: Some("   ".into()),
                description: None,
                share_history: None,
            },
            "name",
        ),
        (
            OpBody::Update {
                name: Some("bell\u{7}".into()),
                description: None,
                share_history: None,
            },
            "name",
        ),
        (
            OpBody::Update {
                name: None,
                description: None,
                share_history: None,
            },
            "update",
        ),
        (
            OpBody::RoleCreate {
                name: "r".into(),
                color: MAX_COLOR + 1,
                position: 1,
                permissions: Permissions::NONE,
            },
            "color",
        ),
        (
            OpBody::RoleCreate {
                name: "r".into(),
                color: 0,
                position: 0,
                permissions: Permissions::NONE,
            },
            "position",
        ),
        (
            OpBody::RoleAssign {
                user: user(2),
                role: RoleId::EVERYONE,
            },
            "role",
        ),
        (
            OpBody::RoleUpdate {
                role: RoleId::EVERYONE,
                name: Some("all".into()),
                color: None,
                position: None,
                permissions: None,
            },
            "role",
        ),
        (
            OpBody::ChannelCreate {
                kind: ChannelKind::Category,
                name: "c".into(),
                topic: None,
                parent: Some(channel(1)),
                position: 0,
                overwrites: vec![],
            },
            "parent",
        ),
        (
            OpBody::ChannelCreate {
                kind: ChannelKind::Text,
                name: "c".into(),
                topic: Some("t".repeat(MAX_TOPIC_BYTES + 1)),
                parent: None,
                position: 0,
                overwrites: vec![],
            },
            "topic",
        ),
        (
            OpBody::ChannelCreate {
                kind: ChannelKind::Text,
                name: "c".into(),
                topic: None,
                parent: None,
                position: 0,
                overwrites: vec![Overwrite {
                    target: OverwriteTarget::Role(RoleId::EVERYONE),
                    allow: Permissions::SEND_MESSAGES,
                    deny: Permissions::SEND_MESSAGES,
                }],
            },
            "overwrites",
        ),
        (OpBody::ChannelReorder { positions: vec![] }, "positions"),
        (
            OpBody::InviteCreate {
                invite_key: ed(&SigningKey::from_bytes(&[1; 32])),
                max_uses: Some(0),
                expires_at: None,
                role: None,
            },
            "max_uses",
        ),
    ];
    for (body, field) in cases {
        let op = sign(&a, Some(space_id()), vec![op_id(1)], 1, body);
        let err = op.validate().unwrap_err();
        let OpError::Format(p) = &err else {
            panic!("{err:?}")
        };
        let got = match p {
            PeerError::InvalidField { field } | PeerError::FieldTooLong { field, .. } => *field,
            other => panic!("{other:?}"),
        };
        assert_eq!(got, field);
        // A peer that skips our encoder is refused by the decoder too.
        let raw = serde_json::to_vec(&op).unwrap();
        assert!(SpaceOp::from_json(&raw).is_err());
    }
    let huge = vec![b' '; MAX_OP_BYTES + 1];
    assert!(matches!(
        SpaceOp::from_json(&huge),
        Err(OpError::Format(PeerError::TooLarge { .. }))
    ));
}

#[test]
fn unknown_fields_kinds_and_permission_bits_are_refused() {
    let op = every_op().remove(9);
    let mut v = serde_json::to_value(&op).unwrap();
    v["extra"] = 1.into();
    assert!(SpaceOp::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    let mut v = serde_json::to_value(&op).unwrap();
    v["body"]["extra"] = 1.into();
    assert!(SpaceOp::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    let mut v = serde_json::to_value(&op).unwrap();
    v["body"]["type"] = "role_elevate".into();
    assert!(SpaceOp::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    let mut v = serde_json::to_value(&op).unwrap();
    v["body"]["permissions"] = (1u64 << 40).into();
    assert!(SpaceOp::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    let mut v = serde_json::to_value(&op).unwrap();
    v["version"] = 2.into();
    assert!(matches!(
        SpaceOp::from_json(&serde_json::to_vec(&v).unwrap()),
        Err(OpError::Format(PeerError::UnsupportedVersion { .. }))
    ));
}

#[test]
fn errors_never_echo_the_input() {
    let op = every_op().remove(1);
    let mut v = serde_json::to_value(&op).unwrap();
    v["body"]["name"] = 12.into();
    v["body"]["description"] = "secret words".into();
    let err = SpaceOp::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    let mut v = serde_json::to_value(&op).unwrap();
    v["parents"] = serde_json::json!(["secret words"]);
    let err = SpaceOp::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    let err = InviteCode::parse("secretwords1qqqqqqqqqqqqqqqq").unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    let err = ChannelMessage::from_json(br#"{"version":1,"sender":"secret words"}"#).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn derived_ids_depend_on_space_and_op() {
    let s1 = SpaceId::from_bytes([1; 32]);
    let s2 = SpaceId::from_bytes([2; 32]);
    assert_ne!(
        derive_channel_id(&s1, &op_id(1)),
        derive_channel_id(&s2, &op_id(1))
    );
    assert_ne!(
        derive_channel_id(&s1, &op_id(1)),
        derive_channel_id(&s1, &op_id(2))
    );
    assert_ne!(
        derive_role_id(&s1, &op_id(1)).as_bytes(),
        derive_channel_id(&s1, &op_id(1)).as_bytes()
    );
    assert_ne!(derive_role_id(&s1, &op_id(1)), RoleId::EVERYONE);
}

#[test]
fn permissions_decode_strictly_and_name_their_bits() {
    assert_eq!(
        Permissions::from_bits(Permissions::ALL.bits()),
        Some(Permissions::ALL)
    );
    assert_eq!(Permissions::from_bits(1 << 15), None);
    assert!(serde_json::from_str::<Permissions>("32768").is_err());
    assert_eq!(
        Permissions::KICK.union(Permissions::BAN).names(),
        ["kick", "ban"]
    );
    assert_eq!(Permissions::from_name("ban"), Some(Permissions::BAN));
    assert_eq!(Permissions::ALL.names().len(), 15);
    assert!(Permissions::DEFAULT_EVERYONE.contains(Permissions::VIEW_CHANNEL));
    assert!(!Permissions::DEFAULT_EVERYONE.contains(Permissions::KICK));
}

fn invite(relay: Option<&str>, expires: Option<u64>, max: Option<u32>) -> InviteCode {
    InviteCode {
        space: space_id(),
        secret: InviteSecret([8; 32]),
        inviter: user(1),
        expires_at: expires.map(Timestamp),
        max_uses: max,
        relay: relay.map(str::to_owned),
        admitters: Vec::new(),
    }
}

#[test]
fn invite_codes_round_trip_and_snapshot() {
    let full = invite(
        Some("wss://signal.example:8443"),
        Some(1_700_100_000_000),
        Some(5),
    );
    let text = full.to_text().unwrap();
    assert!(text.starts_with("dinvite1"));
    assert_eq!(InviteCode::parse(&text).unwrap(), full);
    assert_eq!(InviteCode::parse(&text.to_uppercase()).unwrap(), full);
    assert_eq!(
        InviteCode::parse(&format!("  dopus://invite/{text} ")).unwrap(),
        full
    );
    let bare = invite(None, None, None);
    assert_eq!(InviteCode::parse(&bare.to_text().unwrap()).unwrap(), bare);
    insta::assert_snapshot!(format!("{text}\n{}", bare.to_text().unwrap()));
    assert!(!format!("{full:?}").contains("8, 8, 8"));
}

#[test]
fn invite_codes_name_up_to_three_admitters() {
    let mut code = invite(Some("wss://h"), None, Some(1));
    code.admitters = vec![user(2), user(3), user(4)];
    let text = code.to_text().unwrap();
    assert_eq!(InviteCode::parse(&text).unwrap(), code);
    // Four is too many; the inviter or a repeat is malformed.
    let mut four = code.clone();
    four.admitters.push(user(5));
    assert_eq!(four.to_text(), Err(InviteCodeError::Malformed));
    let encode = |bytes: &[u8]| {
        bech32::encode_lower::<bech32::Bech32m>(bech32::Hrp::parse(INVITE_CODE_HRP).unwrap(), bytes)
            .unwrap()
    };
    let bytes = code.to_bytes().unwrap();
    let count_at = bytes.len() - 3 * 32 - 1;
    for bad in [0u8, 4] {
        let mut b = bytes.clone();
        b[count_at] = bad;
        assert_eq!(
            InviteCode::parse(&encode(&b)),
            Err(InviteCodeError::Malformed),
            "count {bad}"
        );
    }
    let mut repeat = code.clone();
    repeat.admitters = vec![user(2), user(2)];
    let b = repeat.to_bytes().unwrap();
    assert_eq!(
        InviteCode::parse(&encode(&b)),
        Err(InviteCodeError::Malformed)
    );
    let mut inviter = code.clone();
    inviter.admitters = vec![user(1)];
    let b = inviter.to_bytes().unwrap();
    assert_eq!(
        InviteCode::parse(&encode(&b)),
        Err(InviteCodeError::Malformed)
    );
    // Cut inside the admitters.
    assert_eq!(
        InviteCode::parse(&encode(&bytes[..bytes.len() - 5])),
        Err(InviteCodeError::Malformed)
    );
}

#[test]
fn invite_codes_decode_strictly() {
    let good = invite(Some("wss://h"), Some(5), Some(2));
    let text = good.to_text().unwrap();
    // A typo.
    let mut typo = text.clone().into_bytes();
    let i = typo.len() - 10;
    typo[i] = if typo[i] == b'q' { b'p' } else { b'q' };
    assert_eq!(
        InviteCode::parse(std::str::from_utf8(&typo).unwrap()),
        Err(InviteCodeError::Checksum)
    );
    // Cut off.
    assert_eq!(
        InviteCode::parse(&text[..text.len() - 3]),
        Err(InviteCodeError::Checksum)
    );
    // Not bech32 at all.
    assert_eq!(InviteCode::parse("hello"), Err(InviteCodeError::Format));
    // Another kind of id.
    let space = SpaceId::from_bytes([1; 32]).to_string();
    assert_eq!(
        InviteCode::parse(&space),
        Err(InviteCodeError::Prefix {
            found: "a space id"
        })
    );
    let encode = |bytes: &[u8]| {
        bech32::encode_lower::<bech32::Bech32m>(bech32::Hrp::parse(INVITE_CODE_HRP).unwrap(), bytes)
            .unwrap()
    };
    let bytes = good.to_bytes().unwrap();
    // Trailing bytes, unknown flags, other versions, truncation.
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        InviteCode::parse(&encode(&trailing)),
        Err(InviteCodeError::Malformed)
    );
    let mut flags = bytes.clone();
    flags[97] |= 16;
    assert_eq!(
        InviteCode::parse(&encode(&flags)),
        Err(InviteCodeError::Malformed)
    );
    let mut version = bytes.clone();
    version[0] = 2;
    assert_eq!(
        InviteCode::parse(&encode(&version)),
        Err(InviteCodeError::UnsupportedVersion(2))
    );
    assert_eq!(
        InviteCode::parse(&encode(&bytes[..50])),
        Err(InviteCodeError::Malformed)
    );
    // A relay that is not a websocket URL, or not printable.
    for relay in ["http://h", "wss://h h", "wss://\u{e9}"] {
        let mut c = good.clone();
        c.relay = Some(relay.into());
        assert_eq!(c.to_text(), Err(InviteCodeError::Relay), "{relay}");
    }
    let mut c = good.clone();
    c.relay = Some(format!("wss://{}", "h".repeat(MAX_RELAY_BYTES)));
    assert_eq!(c.to_text(), Err(InviteCodeError::Relay));
}

fn session_id() -> String {
    dopus_types::b64_encode(&[4; 32])
}

fn every_content() -> Vec<SpaceContent> {
    let a = author(1);
    let joiner = author(7);
    let ops = every_op();
    vec![
        SpaceContent::SpaceOps {
            space: space_id(),
            ops: ops[..2].to_vec(),
        },
        SpaceContent::SpaceHeads {
            space: space_id(),
            heads: vec![op_id(1), op_id(2)],
        },
        SpaceContent::SpaceOpsRequest {
            space: space_id(),
            have: vec![op_id(1)],
            want: vec![op_id(3)],
        },
        SpaceContent::SpaceRoomKey {
            space: space_id(),
            channel: channel(1),
            session_id: session_id(),
            session_key: Base64Bytes(vec![1; 229]),
            shared_history: true,
            announcement: Signature::from_bytes([2; 64]),
        },
        SpaceContent::SpaceKeyRequest {
            space: space_id(),
            channel: channel(1),
            session_id: session_id(),
            owner: PeerAddress {
                user: a.cert.user_id,
                device: a.cert.device_id.clone(),
            },
            from_index: 3,
            request: "r1".into(),
        },
        SpaceContent::SpaceForwardedKey {
            space: space_id(),
            channel: channel(1),
            session_id: session_id(),
            owner: a.cert.clone(),
            announcement: Signature::from_bytes([2; 64]),
            shared_history: false,
            session_key: Base64Bytes(vec![1; 165]),
            request: "r1".into(),
        },
        SpaceContent::SpaceKeyWithheld {
            space: space_id(),
            session_id: session_id(),
            request: "r1".into(),
            code: WithheldCode::HistoryNotShared,
        },
        SpaceContent::SpaceJoinRequest {
            space: space_id(),
            invite_key: ed(&SigningKey::from_bytes(&[42; 32])),
            certificate: joiner.cert.clone(),
            requested_at: Timestamp(1_700_000_000_100),
            proof: Signature::from_bytes([3; 64]),
        },
        SpaceContent::SpaceJoinAnswer {
            space: space_id(),
            result: JoinResult::Accepted { join: op_id(9) },
        },
        SpaceContent::SpaceJoinAnswer {
            space: space_id(),
            result: JoinResult::Refused {
                reason: JoinRefusal::Expired,
            },
        },
        SpaceContent::SpaceHistoryBundle {
            space: space_id(),
            part: 0,
            parts: 1,
            sessions: vec![HistorySession {
                channel: channel(1),
                session_id: session_id(),
                owner: a.cert.clone(),
                announcement: Signature::from_bytes([2; 64]),
                session_key: Base64Bytes(vec![1; 165]),
            }],
        },
        SpaceContent::SpaceMessage {
            space: space_id(),
            channel: channel(1),
            message: message(),
        },
        SpaceContent::SpaceHistoryMessages {
            space: space_id(),
            channel: channel(1),
            messages: vec![message()],
        },
        SpaceContent::SpaceVoice {
            presence: voice_presence(&a, Some(channel(2))),
        },
        SpaceContent::SpaceHistoryRequest { space: space_id() },
    ]
}

fn voice_presence(a: &Author, channel: Option<ChannelId>) -> VoicePresence {
    let mut p = VoicePresence {
        v: VOICE_PRESENCE_VERSION,
        space: space_id(),
        channel,
        user: a.cert.user_id,
        device: a.cert.device_id.clone(),
        seq: 7,
        sent_at: Timestamp::from_millis(1_000),
        expires_at: Timestamp::from_millis(41_000),
        muted: true,
        deafened: false,
        signature: Signature::from_bytes([0; 64]),
    };
    p.signature = Signature::from_bytes(a.device.sign(&p.signing_bytes()).to_bytes());
    p
}

#[test]
fn voice_presence_signature_covers_every_field_and_limits_hold() {
    let a = author(1);
    let p = voice_presence(&a, Some(channel(2)));
    p.validate().unwrap();
    let key = a.cert.keys.ed25519;
    key.verify(&p.signing_bytes(), &p.signature).unwrap();
    let edits: Vec<fn(&mut VoicePresence)> = vec![
        |p| p.channel = None,
        |p| p.channel = Some(channel(3)),
        |p| p.seq += 1,
        |p| p.muted = !p.muted,
        |p| p.deafened = !p.deafened,
        |p| p.expires_at = p.expires_at.plus_millis(1),
        |p| p.sent_at = p.sent_at.plus_millis(1),
        |p| p.device = DeviceId::from_random([9; 16]),
    ];
    for edit in edits {
        let mut q = p.clone();
        edit(&mut q);
        assert!(key.verify(&q.signing_bytes(), &q.signature).is_err());
    }
    // "in no channel" and "in a channel" never sign the same bytes.
    assert_ne!(
        voice_presence(&a, None).signing_bytes(),
        voice_presence(&a, Some(channel(2))).signing_bytes()
    );
    let refused: Vec<fn(&mut VoicePresence)> =
        vec![|p| p.seq = 0, |p| p.expires_at = p.sent_at, |p| {
            p.expires_at = p.sent_at.plus_millis(MAX_VOICE_TTL_MS + 1)
        }];
    for edit in refused {
        let mut q = p.clone();
        edit(&mut q);
        assert!(
            SpaceContent::SpaceVoice { presence: q }.validate().is_err(),
            "a presence outside the limits passed"
        );
    }
}

#[test]
fn space_contents_nest_in_the_peer_content_by_kind() {
    for c in every_content() {
        let json = serde_json::to_string(&crate::content::Content::from(c.clone())).unwrap();
        let back: crate::content::Content = serde_json::from_str(&json).unwrap();
        assert_eq!(back, crate::content::Content::Space(Box::new(c)));
    }
}

#[test]
fn every_content_kind_snapshot() {
    insta::assert_json_snapshot!(every_content());
}

#[test]
fn every_content_kind_round_trips_and_is_named_space_something() {
    for c in every_content() {
        c.validate().unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["kind"], c.kind_name());
        assert!(c.kind_name().starts_with("space_"));
        assert!(SpaceContent::KINDS.contains(&c.kind_name()));
        assert_eq!(c.space(), &space_id());
        let back: SpaceContent = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }
}

#[test]
fn content_limits_are_enforced() {
    let refused = vec![
        SpaceContent::SpaceOps {
            space: space_id(),
            ops: vec![],
        },
        SpaceContent::SpaceOps {
            space: space_id(),
            ops: vec![every_op().remove(0); MAX_OPS_PER_MESSAGE + 1],
        },
        SpaceContent::SpaceHeads {
            space: space_id(),
            heads: vec![],
        },
        SpaceContent::SpaceHeads {
            space: space_id(),
            heads: vec![op_id(2), op_id(1)],
        },
        SpaceContent::SpaceOpsRequest {
            space: space_id(),
            have: vec![],
            want: (0..=255u8)
                .flat_map(|a| [OpId::from_bytes([a; 32]), OpId::from_bytes([a; 32])])
                .collect(),
        },
        SpaceContent::SpaceRoomKey {
            space: space_id(),
            channel: channel(1),
            session_id: "not base64!".into(),
            session_key: Base64Bytes(vec![1; 10]),
            shared_history: false,
            announcement: Signature::from_bytes([2; 64]),
        },
        SpaceContent::SpaceRoomKey {
            space: space_id(),
            channel: channel(1),
            session_id: session_id(),
            session_key: Base64Bytes(vec![1; MAX_SESSION_KEY_BYTES + 1]),
            shared_history: false,
            announcement: Signature::from_bytes([2; 64]),
        },
        SpaceContent::SpaceKeyRequest {
            space: space_id(),
            channel: channel(1),
            session_id: session_id(),
            owner: PeerAddress {
                user: user(1),
                device: DeviceId::from_random([1; 16]),
            },
            from_index: 0,
            request: "../x".into(),
        },
        SpaceContent::SpaceHistoryBundle {
            space: space_id(),
            part: 1,
            parts: 1,
            sessions: vec![],
        },
        SpaceContent::SpaceHistoryMessages {
            space: space_id(),
            channel: channel(1),
            messages: vec![],
        },
        SpaceContent::SpaceHistoryMessages {
            space: space_id(),
            channel: channel(1),
            messages: vec![message(); MAX_HISTORY_MESSAGES + 1],
        },
    ];
    for c in refused {
        assert!(c.validate().is_err(), "{}", c.kind_name());
    }
    let mut v = serde_json::to_value(&every_content()[1]).unwrap();
    v["extra"] = 1.into();
    assert!(serde_json::from_value::<SpaceContent>(v).is_err());
    let v = serde_json::json!({"kind": "space_unknown", "space": space_id()});
    assert!(serde_json::from_value::<SpaceContent>(v).is_err());
}

#[test]
fn join_proofs_and_announcements_bind_their_fields() {
    let j = author(7);
    let k = ed(&SigningKey::from_bytes(&[42; 32]));
    let base = join_proof_bytes(&space_id(), &k, &j.cert, Timestamp(1));
    assert_ne!(
        base,
        join_proof_bytes(&SpaceId::from_bytes([6; 32]), &k, &j.cert, Timestamp(1))
    );
    assert_ne!(
        base,
        join_proof_bytes(&space_id(), &k, &author(8).cert, Timestamp(1))
    );
    assert_ne!(
        base,
        join_proof_bytes(&space_id(), &k, &j.cert, Timestamp(2))
    );
    let u = user(1);
    let d = DeviceId::from_random([1; 16]);
    let a = session_announcement_bytes(&space_id(), &channel(1), &session_id(), &u, &d, true);
    assert_ne!(
        a,
        session_announcement_bytes(&space_id(), &channel(2), &session_id(), &u, &d, true)
    );
    assert_ne!(
        a,
        session_announcement_bytes(&space_id(), &channel(1), &session_id(), &u, &d, false)
    );
}

/// A stand-in for the peer protocol's chat content, to exercise the generic payload.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum TestChat {
    Text { body: String },
    Typing { active: bool },
}

impl ChannelContent for TestChat {
    fn validate(&self) -> Result<(), PeerError> {
        match self {
            TestChat::Text { body } if body.len() > 100 => Err(PeerError::FieldTooLong {
                field: "body",
                limit: 100,
            }),
            _ => Ok(()),
        }
    }
    fn kind_name(&self) -> &'static str {
        match self {
            TestChat::Text { .. } => "text",
            TestChat::Typing { .. } => "typing",
        }
    }
}

fn payload(content: TestChat) -> ChannelPayload<TestChat> {
    ChannelPayload {
        version: CHANNEL_PAYLOAD_VERSION,
        id: MessageId::new_v7(Timestamp(1_700_000_000_000), [1; 10]),
        space: space_id(),
        channel: channel(1),
        sender: PeerAddress {
            user: user(1),
            device: DeviceId::from_random([1; 16]),
        },
        sent_at: Timestamp(1_700_000_000_001),
        heads: vec![op_id(1), op_id(2)],
        mentions: Mentions {
            users: vec![user(2)],
            roles: vec![RoleId::from_bytes([3; 16])],
            everyone: true,
        },
        content,
    }
}

fn message() -> ChannelMessage {
    ChannelMessage {
        version: CHANNEL_MESSAGE_VERSION,
        sender: PeerAddress {
            user: user(1),
            device: DeviceId::from_random([1; 16]),
        },
        session_id: session_id(),
        ciphertext: Base64Bytes(vec![3, 1, 4, 1, 5]),
    }
}

#[test]
fn channel_message_and_payload_snapshot() {
    let m = String::from_utf8(message().to_json().unwrap()).unwrap();
    let p = payload(TestChat::Text { body: "hi".into() });
    insta::assert_snapshot!(format!(
        "{m}\n{}",
        String::from_utf8(p.to_json().unwrap()).unwrap()
    ));
}

#[test]
fn the_channel_message_carries_nothing_but_routing_and_ciphertext() {
    let v: serde_json::Value = serde_json::from_slice(&message().to_json().unwrap()).unwrap();
    let mut fields: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    fields.sort();
    assert_eq!(fields, ["ciphertext", "sender", "session_id", "version"]);
}

#[test]
fn every_kind_is_listed_once_and_disjoint_from_other_subsystems() {
    let names: std::collections::BTreeSet<_> =
        every_content().iter().map(|c| c.kind_name()).collect();
    let listed: std::collections::BTreeSet<_> = SpaceContent::KINDS.iter().copied().collect();
    assert_eq!(names, listed);
    assert_eq!(listed.len(), SpaceContent::KINDS.len());
    for k in crate::content::ChatContent::KINDS {
        assert!(!listed.contains(k));
    }
}

#[test]
fn channels_carry_the_peer_protocols_chat_content() {
    let mut p = ChannelPayload {
        version: CHANNEL_PAYLOAD_VERSION,
        id: MessageId::new_v7(Timestamp(1_700_000_000_000), [1; 10]),
        space: space_id(),
        channel: channel(1),
        sender: PeerAddress {
            user: user(1),
            device: DeviceId::from_random([1; 16]),
        },
        sent_at: Timestamp(1_700_000_000_001),
        heads: vec![op_id(1)],
        mentions: Mentions::default(),
        content: crate::content::ChatContent::Typing { active: true },
    };
    let back =
        ChannelPayload::<crate::content::ChatContent>::from_json(&p.to_json().unwrap()).unwrap();
    assert_eq!(back, p);
    p.content = crate::content::ChatContent::Reaction {
        target: p.id,
        emoji: String::new(),
        action: crate::content::ReactionAction::Add,
    };
    assert!(p.to_json().is_err());
}

#[test]
fn channel_payload_limits() {
    let p = payload(TestChat::Typing { active: true });
    assert_eq!(ChannelPayload::from_json(&p.to_json().unwrap()).unwrap(), p);
    let mut bad = p.clone();
    bad.heads.clear();
    assert!(bad.to_json().is_err());
    let mut bad = p.clone();
    bad.mentions.users = vec![user(2); MAX_MENTIONS + 1];
    assert!(bad.to_json().is_err());
    let bad = payload(TestChat::Text {
        body: "x".repeat(101),
    });
    let raw = serde_json::to_vec(&bad).unwrap();
    assert_eq!(
        ChannelPayload::<TestChat>::from_json(&raw),
        Err(PeerError::FieldTooLong {
            field: "body",
            limit: 100
        })
    );
    let mut v = serde_json::to_value(&p).unwrap();
    v["channel_name"] = "general".into();
    assert!(ChannelPayload::<TestChat>::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    let mut m = message();
    m.ciphertext = Base64Bytes(vec![0; MAX_CHANNEL_CIPHERTEXT_BYTES + 1]);
    assert!(m.to_json().is_err());
    let mut v = serde_json::to_value(message()).unwrap();
    v["channel"] = "x".into();
    assert!(ChannelMessage::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9 _-]{0,30}"
}

fn arb_perms() -> impl Strategy<Value = Permissions> {
    (0..=Permissions::ALL.bits()).prop_map(|b| Permissions::from_bits(b).unwrap())
}

fn arb_body() -> impl Strategy<Value = OpBody> {
    prop_oneof![
        (
            proptest::option::of(arb_name()),
            proptest::option::of("(?s).{0,40}".prop_filter("no controls", |s: &String| {
                !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
            })),
            proptest::option::of(any::<bool>())
        )
            .prop_filter("non-empty update", |(a, b, c)| a.is_some()
                || b.is_some()
                || c.is_some())
            .prop_map(|(name, description, share_history)| OpBody::Update {
                name,
                description,
                share_history
            }),
        (arb_name(), 0..=MAX_COLOR, 1u32..1000, arb_perms()).prop_map(
            |(name, color, position, permissions)| OpBody::RoleCreate {
                name,
                color,
                position,
                permissions
            }
        ),
        (any::<[u8; 16]>(), arb_perms()).prop_map(|(r, p)| OpBody::RoleUpdate {
            role: RoleId::from_bytes(r),
            name: None,
            color: None,
            position: None,
            permissions: Some(p)
        }),
        any::<u8>().prop_map(|s| OpBody::Kick { user: user(s) }),
        Just(OpBody::Leave),
        (
            any::<[u8; 16]>(),
            arb_name(),
            proptest::collection::vec((any::<[u8; 16]>(), arb_perms(), arb_perms()), 0..4)
        )
            .prop_map(|(ch, name, ows)| {
                let mut seen = std::collections::BTreeSet::new();
                let overwrites = ows
                    .into_iter()
                    .filter(|(r, _, _)| seen.insert(*r))
                    .map(|(r, allow, deny)| Overwrite {
                        target: OverwriteTarget::Role(RoleId::from_bytes(r)),
                        allow: allow.difference(deny),
                        deny,
                    })
                    .collect();
                OpBody::ChannelCreate {
                    kind: ChannelKind::Text,
                    name,
                    topic: None,
                    parent: Some(ChannelId::from_bytes(ch)),
                    position: 3,
                    overwrites,
                }
            }),
        proptest::collection::btree_map(any::<[u8; 16]>(), any::<u32>(), 1..8).prop_map(|m| {
            OpBody::ChannelReorder {
                positions: m
                    .into_iter()
                    .map(|(c, position)| ChannelPosition {
                        channel: ChannelId::from_bytes(c),
                        parent: None,
                        position,
                    })
                    .collect(),
            }
        }),
    ]
}

proptest! {
    #[test]
    fn ops_round_trip(body in arb_body(), parents in proptest::collection::btree_set(any::<[u8; 32]>(), 1..MAX_PARENTS),
                      depth in 1u64..u64::MAX, seed in any::<u8>()) {
        let a = author(seed);
        let parents: Vec<OpId> = parents.into_iter().map(OpId::from_bytes).collect();
        let op = sign(&a, Some(space_id()), parents, depth, body);
        let id = op.verify().unwrap();
        let back = SpaceOp::from_json(&op.to_json().unwrap()).unwrap();
        prop_assert_eq!(back.verify().unwrap(), id);
        prop_assert_eq!(back, op);
    }

    #[test]
    fn invite_codes_round_trip(space in any::<[u8; 32]>(), secret in any::<[u8; 32]>(), seed in any::<u8>(),
                               expires in proptest::option::of(any::<u64>()), max in proptest::option::of(any::<u32>()),
                               relay in proptest::option::of("wss://[a-z0-9.:-]{1,60}"), admitters in 0u8..=3) {
        let code = InviteCode {
            space: SpaceId::from_bytes(space),
            secret: InviteSecret(secret),
            inviter: user(seed),
            expires_at: expires.map(Timestamp),
            max_uses: max,
            relay,
            admitters: (0..admitters).map(|i| user(seed.wrapping_add(1 + i))).collect(),
        };
        prop_assert_eq!(InviteCode::parse(&code.to_text().unwrap()).unwrap(), code);
    }

    #[test]
    fn contents_round_trip(i in 0usize..11, heads in proptest::collection::btree_set(any::<[u8; 32]>(), 1..MAX_HEADS)) {
        let mut c = every_content().remove(i);
        if let SpaceContent::SpaceHeads { heads: h, .. } = &mut c {
            *h = heads.into_iter().map(OpId::from_bytes).collect();
        }
        c.validate().unwrap();
        let back: SpaceContent = serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
        prop_assert_eq!(back, c);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), text in "\\PC{0,200}") {
        let _ = SpaceOp::from_json(&bytes);
        let _ = ChannelMessage::from_json(&bytes);
        let _ = ChannelPayload::<TestChat>::from_json(&bytes);
        let _ = serde_json::from_slice::<SpaceContent>(&bytes);
        let _ = InviteCode::from_bytes(&bytes);
        let _ = InviteCode::parse(&text);
    }
}
