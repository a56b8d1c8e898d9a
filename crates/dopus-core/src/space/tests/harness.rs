//! Helpers shared by the space tests: signers, a space with members and roles, ops written on
//! one replica and delivered to another.

use crate::identity::test_support::SeededRandom;
use crate::space::test_support::KeySigner;
use crate::space::{ControlLog, SpaceSigner, invite};
use dopus_proto::peer::PeerAddress;
use dopus_proto::space::{
    OpBody, OpId, Permissions, RoleId, SPACE_OP_VERSION, SpaceOp, derive_role_id,
};
use dopus_types::{Timestamp, UserId};

pub(crate) const T0: Timestamp = Timestamp(1_700_000_000_000);

pub(crate) fn signer(n: u64) -> KeySigner {
    KeySigner::new(n, 0)
}

/// A space created by `owner` with the default `@everyone` permissions.
pub(crate) fn create(owner: &KeySigner) -> ControlLog {
    create_with(owner, Permissions::DEFAULT_EVERYONE, false)
}

pub(crate) fn create_with(owner: &KeySigner, everyone: Permissions, share: bool) -> ControlLog {
    let g = ControlLog::genesis_op(owner, "test space", [7; 16], everyone, share, T0);
    ControlLog::create(g).unwrap()
}

/// `author` writes `body` on `log` (checked against the rules, inserted).
pub(crate) fn op(log: &mut ControlLog, author: &KeySigner, body: OpBody) -> SpaceOp {
    log.author(author, body, T0)
        .unwrap_or_else(|e| panic!("{} refused: {e}", author.user().short()))
}

/// `author` signs `body` on `log`'s current heads without asking the rules and without
/// inserting it: what a malicious or out-of-date member could send.
pub(crate) fn unchecked(log: &ControlLog, author: &dyn SpaceSigner, body: OpBody) -> SpaceOp {
    let mut parents: Vec<(u64, OpId)> = log
        .heads()
        .into_iter()
        .map(|h| (log.get(&h).map_or(0, |o| o.depth), h))
        .collect();
    parents.sort_by(|a, b| b.cmp(a));
    parents.truncate(dopus_proto::space::MAX_PARENTS);
    let depth = parents.iter().map(|(d, _)| d + 1).max().unwrap_or(1);
    let mut ids: Vec<OpId> = parents.into_iter().map(|(_, id)| id).collect();
    ids.sort();
    sign(author, Some(*log.space()), ids, depth, body)
}

pub(crate) fn sign(
    author: &dyn SpaceSigner,
    space: Option<dopus_types::SpaceId>,
    parents: Vec<OpId>,
    depth: u64,
    body: OpBody,
) -> SpaceOp {
    let cert = author.certificate().clone();
    let bytes = SpaceOp::signing_bytes_for(
        SPACE_OP_VERSION,
        space.as_ref(),
        &cert,
        &parents,
        depth,
        T0,
        &body,
    );
    SpaceOp {
        version: SPACE_OP_VERSION,
        space,
        signature: author.sign(&bytes),
        author: cert,
        parents,
        depth,
        created_at: T0,
        body,
    }
}

/// `admitter` makes an invite and admits `joiner` with it.
pub(crate) fn admit(log: &mut ControlLog, admitter: &KeySigner, joiner: &KeySigner) -> SpaceOp {
    let space = *log.space();
    let mut rng = SeededRandom::new(
        u64::from(joiner.cert.device_id.as_str().len() as u32) ^ log.len() as u64,
    );
    let inv = invite::new_invite(space, admitter.user(), &mut rng, None, None, None, None);
    op(log, admitter, inv.body);
    join_with(log, admitter, joiner, &inv.code)
}

/// `admitter` admits `joiner`, who presents `code`.
pub(crate) fn join_with(
    log: &mut ControlLog,
    admitter: &KeySigner,
    joiner: &KeySigner,
    code: &dopus_proto::space::InviteCode,
) -> SpaceOp {
    let req = invite::join_request(code, &joiner.cert, T0);
    let sender = PeerAddress {
        user: joiner.user(),
        device: joiner.cert.device_id.clone(),
    };
    let body = invite::admit(log.state(), &admitter.user(), &sender, &req, T0).unwrap();
    op(log, admitter, body)
}

/// `author` creates a role and returns its id.
pub(crate) fn role(
    log: &mut ControlLog,
    author: &KeySigner,
    name: &str,
    position: u32,
    permissions: Permissions,
) -> RoleId {
    let o = op(
        log,
        author,
        OpBody::RoleCreate {
            name: name.into(),
            color: 0,
            position,
            permissions,
        },
    );
    derive_role_id(log.space(), &o.id())
}

pub(crate) fn assign(log: &mut ControlLog, author: &KeySigner, user: UserId, role: RoleId) {
    op(log, author, OpBody::RoleAssign { user, role });
}

/// Inserts every op of `src` into `dst` (in `src`'s causal order).
pub(crate) fn sync_into(dst: &mut ControlLog, src: &ControlLog) {
    let ops: Vec<SpaceOp> = src.ops().cloned().collect();
    for o in ops {
        dst.insert(o).unwrap();
    }
}

/// Makes both replicas hold every op of both.
pub(crate) fn exchange(a: &mut ControlLog, b: &mut ControlLog) {
    sync_into(a, b);
    sync_into(b, a);
    assert_eq!(a.heads(), b.heads());
}

/// The standard cast: owner `O`, admin `A` (position 20: kick, ban, manage roles and channels),
/// moderator `M` (position 10: kick, ban, manage roles), members `X` and `Y`.
pub(crate) struct Cast {
    pub log: ControlLog,
    pub o: KeySigner,
    pub a: KeySigner,
    pub m: KeySigner,
    pub x: KeySigner,
    pub y: KeySigner,
    pub admin: RoleId,
    pub moderator: RoleId,
}

pub(crate) fn cast() -> Cast {
    let (o, a, m, x, y) = (signer(1), signer(2), signer(3), signer(4), signer(5));
    let mut log = create(&o);
    for j in [&a, &m, &x, &y] {
        admit(&mut log, &o, j);
    }
    let power = Permissions::KICK
        .union(Permissions::BAN)
        .union(Permissions::MANAGE_ROLES);
    let admin = role(
        &mut log,
        &o,
        "Admin",
        20,
        power.union(Permissions::MANAGE_CHANNELS),
    );
    let moderator = role(&mut log, &o, "Moderator", 10, power);
    assign(&mut log, &o, a.user(), admin);
    assign(&mut log, &o, m.user(), moderator);
    Cast {
        log,
        o,
        a,
        m,
        x,
        y,
        admin,
        moderator,
    }
}
