//! A space's state as resolved from its control log, the rules that decide whether an op
//! applies, and the permission queries.
//!
//! [`SpaceState::apply`] is the one place that decides "may this author do this now": the
//! resolver (`resolve.rs`) calls it for every op in its deterministic order, and a node calls
//! [`SpaceState::check`] before authoring an op so the user hears "no" at once.
//!
//! Values that several ops may set (names, topics, positions, permissions of a role, overwrites)
//! are registers: the write with the larger `(depth, rank, op id)` wins. Depth is the op's
//! logical clock, so a write made after seeing another always wins over it, and a late-arriving
//! old branch never overwrites newer state; among concurrent writes at the same depth the higher
//! ranked author wins.

use super::{Rank, Refusal};
use dopus_proto::bundle::DeviceCertificate;
use dopus_proto::space::{
    ChannelKind, ChannelPosition, OpBody, OpId, Overwrite, OverwriteTarget, Permissions, RoleId,
    SpaceOp, derive_channel_id, derive_role_id, join_proof_bytes,
};
use dopus_types::{ChannelId, DeviceId, Ed25519Key, SpaceId, Timestamp, UserId};
use std::collections::{BTreeMap, BTreeSet};

/// Most roles a space may have (besides `@everyone`).
pub const MAX_ROLES: usize = 250;
/// Most channels and categories a space may have.
pub const MAX_CHANNELS: usize = 500;
/// Most members a space may have.
pub const MAX_MEMBERS: usize = 10_000;
/// Most live invites a space may have.
pub const MAX_INVITES: usize = 1_000;

/// Who wrote a register's value, as the resolver saw it: larger wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WriteKey {
    depth: u64,
    rank: Rank,
    op: OpId,
}

/// A value several ops may set; the write with the largest [`WriteKey`] wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register<T> {
    value: T,
    key: WriteKey,
}

impl<T> Register<T> {
    fn new(value: T, key: WriteKey) -> Self {
        Self { value, key }
    }

    fn set(&mut self, value: T, key: WriteKey) {
        if key > self.key {
            self.value = value;
            self.key = key;
        }
    }

    /// The current value.
    pub fn get(&self) -> &T {
        &self.value
    }

    /// The op that wrote it.
    pub fn written_by(&self) -> OpId {
        self.key.op
    }
}

/// A member of a space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The roles they hold (never `@everyone`, which everyone holds).
    pub roles: BTreeSet<RoleId>,
    /// The op that made them a member (the genesis op for the creator, else a `join`).
    pub joined_by: OpId,
    /// Who admitted them (the creator admits themselves).
    pub admitted_by: UserId,
    /// The display name they gave themselves in this space (`profile` op), if any.
    pub display_name: Option<Register<String>>,
}

impl Member {
    /// Their display name in this space, if they set one (not empty).
    pub fn display_name(&self) -> Option<&str> {
        self.display_name
            .as_ref()
            .map(|r| r.get().as_str())
            .filter(|n| !n.is_empty())
    }
}

/// A role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// Its id.
    pub id: RoleId,
    /// Its name.
    pub name: Register<String>,
    /// Its colour.
    pub color: Register<u32>,
    /// Its rank (0 for `@everyone`).
    pub position: Register<u32>,
    /// What it grants.
    pub permissions: Register<Permissions>,
}

impl Role {
    /// The role's rank: position, then id.
    pub fn rank(&self) -> (u32, RoleId) {
        (*self.position.get(), self.id)
    }
}

/// A channel or category.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    /// Its id.
    pub id: ChannelId,
    /// Text, voice or category.
    pub kind: ChannelKind,
    /// Its name.
    pub name: Register<String>,
    /// Its topic (empty: none).
    pub topic: Register<String>,
    /// Its category (as written; see [`SpaceState::parent_of`]) and position.
    pub place: Register<(Option<ChannelId>, u32)>,
    /// Its overwrites.
    pub overwrites: Register<Vec<Overwrite>>,
    /// The op that created it.
    pub created_by: OpId,
}

/// An invite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// Its id: the `invite_create` op.
    pub id: OpId,
    /// The public key derived from its secret.
    pub key: Ed25519Key,
    /// Who created it.
    pub creator: UserId,
    /// Most joins it admits.
    pub max_uses: Option<u32>,
    /// When it expires.
    pub expires_at: Option<Timestamp>,
    /// The role joiners get.
    pub role: Option<RoleId>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// The `join` ops that used it, in resolution order.
    pub joins: Vec<OpId>,
}

/// What an applied op did that the resolver needs to know: whose rights it took away (for
/// the strong-remove rule).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Applied {
    /// Members removed, or whose rank or space-wide permissions dropped, and who rank below the
    /// author (the author itself is never in it).
    pub demoted: Vec<UserId>,
}

/// Facts about an op that come from the log rather than from the op.
#[derive(Clone, Copy)]
pub struct OpContext<'a> {
    /// The op's id.
    pub id: OpId,
    /// The op's depth.
    pub depth: u64,
    /// Whether op `a` is a causal ancestor of this op (for the max-uses count of an invite).
    pub is_ancestor: &'a dyn Fn(&OpId) -> bool,
}

impl std::fmt::Debug for OpContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpContext")
            .field("id", &self.id)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

/// A space's resolved state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceState {
    id: SpaceId,
    genesis: OpId,
    created_at: Timestamp,
    name: Register<String>,
    description: Register<String>,
    share_history: Register<bool>,
    owner: UserId,
    members: BTreeMap<UserId, Member>,
    /// Who was a member and is not now (left, kicked or banned), with the name they had
    /// chosen then: their earlier messages still show under it (shared history).
    former: BTreeMap<UserId, Option<String>>,
    roles: BTreeMap<RoleId, Role>,
    deleted_roles: BTreeSet<RoleId>,
    channels: BTreeMap<ChannelId, Channel>,
    deleted_channels: BTreeSet<ChannelId>,
    bans: BTreeSet<UserId>,
    invites: BTreeMap<OpId, Invite>,
    invite_keys: BTreeMap<[u8; 32], OpId>,
    devices: BTreeMap<UserId, BTreeMap<DeviceId, DeviceCertificate>>,
    /// Who holds a role is a register per (member, role): the last assign or revoke by
    /// `(depth, rank, op id)` wins, so a late branch cannot hand back a role taken away later.
    role_writes: BTreeMap<(UserId, RoleId), WriteKey>,
}

fn need(have: Permissions, p: Permissions) -> Result<(), Refusal> {
    if have.contains(p) {
        Ok(())
    } else {
        Err(Refusal::MissingPermission(p))
    }
}

impl SpaceState {
    /// The state right after the genesis op. `None` if `op` is not a genesis op.
    pub fn genesis(op: &SpaceOp) -> Option<Self> {
        let space = op.genesis_space_id()?;
        let OpBody::Create {
            name,
            everyone,
            share_history,
            ..
        } = &op.body
        else {
            return None;
        };
        let id = op.id();
        let key = WriteKey {
            depth: 0,
            rank: Rank::Owner,
            op: id,
        };
        let owner = op.author_user();
        let mut state = Self {
            id: space,
            genesis: id,
            created_at: op.created_at,
            name: Register::new(name.clone(), key),
            description: Register::new(String::new(), key),
            share_history: Register::new(*share_history, key),
            owner,
            members: BTreeMap::new(),
            former: BTreeMap::new(),
            roles: BTreeMap::new(),
            deleted_roles: BTreeSet::new(),
            channels: BTreeMap::new(),
            deleted_channels: BTreeSet::new(),
            bans: BTreeSet::new(),
            invites: BTreeMap::new(),
            invite_keys: BTreeMap::new(),
            devices: BTreeMap::new(),
            role_writes: BTreeMap::new(),
        };
        state.members.insert(
            owner,
            Member {
                roles: BTreeSet::new(),
                joined_by: id,
                admitted_by: owner,
                display_name: None,
            },
        );
        state.roles.insert(
            RoleId::EVERYONE,
            Role {
                id: RoleId::EVERYONE,
                name: Register::new("@everyone".into(), key),
                color: Register::new(0, key),
                position: Register::new(0, key),
                permissions: Register::new(*everyone, key),
            },
        );
        state.remember_device(&op.author);
        Some(state)
    }

    // --- queries ---

    /// The space's id.
    pub fn id(&self) -> &SpaceId {
        &self.id
    }

    /// The genesis op.
    pub fn genesis_op(&self) -> &OpId {
        &self.genesis
    }

    /// When the creator says it was created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The space's name.
    pub fn name(&self) -> &str {
        self.name.get()
    }

    /// The space's description (empty: none).
    pub fn description(&self) -> &str {
        self.description.get()
    }

    /// Whether new members get keys for messages sent before they joined.
    pub fn share_history(&self) -> bool {
        *self.share_history.get()
    }

    /// The owner.
    pub fn owner(&self) -> UserId {
        self.owner
    }

    /// Whether `user` is a member.
    pub fn is_member(&self, user: &UserId) -> bool {
        self.members.contains_key(user)
    }

    /// One member.
    pub fn member(&self, user: &UserId) -> Option<&Member> {
        self.members.get(user)
    }

    /// Whether `user` was a member and is not now (left, kicked or banned).
    pub fn is_former_member(&self, user: &UserId) -> bool {
        self.former.contains_key(user)
    }

    /// Everyone who was a member and is not now, with the display name they had chosen in
    /// this space when they went (if any).
    pub fn former_members(&self) -> impl Iterator<Item = (&UserId, Option<&str>)> {
        self.former.iter().map(|(u, n)| (u, n.as_deref()))
    }

    /// Removes a member, remembering it as a former member under its chosen name.
    fn remove_member(&mut self, user: &UserId) {
        if let Some(m) = self.members.remove(user) {
            self.former
                .insert(*user, m.display_name().map(str::to_owned));
        }
    }

    /// Every member, by user id.
    pub fn members(&self) -> impl Iterator<Item = (&UserId, &Member)> {
        self.members.iter()
    }

    /// How many members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// One role (`RoleId::EVERYONE` included), unless deleted.
    pub fn role(&self, id: &RoleId) -> Option<&Role> {
        self.roles.get(id)
    }

    /// Every role, highest rank first (`@everyone` last).
    pub fn roles(&self) -> Vec<&Role> {
        let mut roles: Vec<&Role> = self.roles.values().collect();
        roles.sort_by_key(|r| std::cmp::Reverse(r.rank()));
        roles
    }

    /// Whether a role was deleted.
    pub fn is_role_deleted(&self, id: &RoleId) -> bool {
        self.deleted_roles.contains(id)
    }

    /// One channel or category, unless deleted.
    pub fn channel(&self, id: &ChannelId) -> Option<&Channel> {
        self.channels.get(id)
    }

    /// Whether a channel was deleted (messages to it are dropped).
    pub fn is_channel_deleted(&self, id: &ChannelId) -> bool {
        self.deleted_channels.contains(id)
    }

    /// The category a channel sits in, if that category still exists.
    pub fn parent_of(&self, channel: &Channel) -> Option<&Channel> {
        let (parent, _) = channel.place.get();
        parent
            .as_ref()
            .and_then(|p| self.channels.get(p))
            .filter(|p| p.kind == ChannelKind::Category && channel.kind != ChannelKind::Category)
    }

    /// Channels in display order: top-level channels and categories by (position, id), each
    /// category followed by its channels by (position, id).
    pub fn channel_list(&self) -> Vec<&Channel> {
        let sort_key = |c: &&Channel| (c.place.get().1, c.id);
        let mut top: Vec<&Channel> = self
            .channels
            .values()
            .filter(|c| self.parent_of(c).is_none())
            .collect();
        top.sort_by_key(sort_key);
        let mut out = Vec::with_capacity(self.channels.len());
        for c in top {
            out.push(c);
            if c.kind == ChannelKind::Category {
                let mut children: Vec<&Channel> = self
                    .channels
                    .values()
                    .filter(|x| self.parent_of(x).map(|p| p.id) == Some(c.id))
                    .collect();
                children.sort_by_key(sort_key);
                out.extend(children);
            }
        }
        out
    }

    /// Whether `user` is banned.
    pub fn is_banned(&self, user: &UserId) -> bool {
        self.bans.contains(user)
    }

    /// Every banned user.
    pub fn bans(&self) -> impl Iterator<Item = &UserId> {
        self.bans.iter()
    }

    /// One invite.
    pub fn invite(&self, id: &OpId) -> Option<&Invite> {
        self.invites.get(id)
    }

    /// The invite with this key (what a join request names).
    pub fn invite_by_key(&self, key: &Ed25519Key) -> Option<&Invite> {
        self.invite_keys
            .get(key.as_bytes())
            .and_then(|id| self.invites.get(id))
    }

    /// Every invite, revoked ones included.
    pub fn invites(&self) -> impl Iterator<Item = &Invite> {
        self.invites.values()
    }

    /// The device certificates of a member seen in the log (authors of ops, joiners). A member
    /// may have more devices; the node's device directory has the rest.
    pub fn known_devices(&self, user: &UserId) -> Vec<&DeviceCertificate> {
        if !self.is_member(user) {
            return Vec::new();
        }
        self.devices
            .get(user)
            .map(|d| d.values().collect())
            .unwrap_or_default()
    }

    /// A user's rank: the owner outranks everyone, a member ranks by their top role, and anyone
    /// else ranks below every member.
    pub fn rank(&self, user: &UserId) -> Rank {
        if *user == self.owner {
            return Rank::Owner;
        }
        let Some(m) = self.members.get(user) else {
            return Rank::Outsider;
        };
        let (position, role) = m
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .map(Role::rank)
            .max()
            .unwrap_or((0, RoleId::EVERYONE));
        Rank::Member { position, role }
    }

    /// Whether `actor` may act on `target` (kick, ban, change roles): only on members ranked
    /// strictly below.
    pub fn outranks(&self, actor: &UserId, target: &UserId) -> bool {
        self.rank(actor) > self.rank(target)
    }

    /// A user's permissions across the space: `@everyone` plus their roles; everything for the
    /// owner and for administrators; nothing for non-members.
    pub fn base_permissions(&self, user: &UserId) -> Permissions {
        if *user == self.owner {
            return Permissions::ALL;
        }
        let Some(m) = self.members.get(user) else {
            return Permissions::NONE;
        };
        let mut p = self.everyone_permissions();
        for r in m.roles.iter().filter_map(|r| self.roles.get(r)) {
            p = p.union(*r.permissions.get());
        }
        if p.contains(Permissions::ADMINISTRATOR) {
            Permissions::ALL
        } else {
            p
        }
    }

    fn everyone_permissions(&self) -> Permissions {
        self.roles
            .get(&RoleId::EVERYONE)
            .map_or(Permissions::NONE, |r| *r.permissions.get())
    }

    fn apply_overwrites(
        &self,
        user: &UserId,
        member: &Member,
        list: &[Overwrite],
        p: Permissions,
    ) -> Permissions {
        let mut p = p;
        let find = |t: OverwriteTarget| list.iter().find(|o| o.target == t);
        if let Some(o) = find(OverwriteTarget::Role(RoleId::EVERYONE)) {
            p = p.difference(o.deny).union(o.allow);
        }
        let (mut allow, mut deny) = (Permissions::NONE, Permissions::NONE);
        for r in &member.roles {
            if let Some(o) = find(OverwriteTarget::Role(*r)) {
                allow = allow.union(o.allow);
                deny = deny.union(o.deny);
            }
        }
        p = p.difference(deny).union(allow);
        if let Some(o) = find(OverwriteTarget::Member(*user)) {
            p = p.difference(o.deny).union(o.allow);
        }
        p
    }

    /// A user's permissions in one channel: the space-wide permissions, then the category's
    /// overwrites, then the channel's (each: `@everyone`, then the user's roles together, then
    /// the user). Nothing in a channel one cannot view, nothing in a deleted channel; the owner
    /// and administrators have everything.
    pub fn permissions(&self, user: &UserId, channel: &ChannelId) -> Permissions {
        let Some(ch) = self.channels.get(channel) else {
            return Permissions::NONE;
        };
        let Some(member) = self.members.get(user) else {
            return Permissions::NONE;
        };
        let base = self.base_permissions(user);
        if base.contains(Permissions::ADMINISTRATOR) {
            return Permissions::ALL;
        }
        let mut p = base;
        if let Some(cat) = self.parent_of(ch) {
            p = self.apply_overwrites(user, member, cat.overwrites.get(), p);
        }
        p = self.apply_overwrites(user, member, ch.overwrites.get(), p);
        if p.contains(Permissions::VIEW_CHANNEL) {
            p
        } else {
            Permissions::NONE
        }
    }

    /// The members who may view a channel: the users whose devices get its Megolm keys.
    pub fn audience(&self, channel: &ChannelId) -> Vec<UserId> {
        self.members
            .keys()
            .filter(|u| {
                self.permissions(u, channel)
                    .contains(Permissions::VIEW_CHANNEL)
            })
            .copied()
            .collect()
    }

    /// Whether a message from `sender` in `channel` is acceptable now: the channel is a live
    /// text channel and the sender is a member who may view it and send in it. Receivers check
    /// this against their current state, whatever heads the message cites, so a removed member
    /// or a deleted channel gets nothing through.
    pub fn accepts_message(&self, sender: &UserId, channel: &ChannelId) -> Result<(), Refusal> {
        let ch = self
            .channels
            .get(channel)
            .ok_or(Refusal::NotFound("channel"))?;
        if ch.kind != ChannelKind::Text {
            return Err(Refusal::InvalidTarget("not a text channel"));
        }
        if !self.is_member(sender) {
            return Err(Refusal::NotMember);
        }
        need(
            self.permissions(sender, channel),
            Permissions::VIEW_CHANNEL.union(Permissions::SEND_MESSAGES),
        )
    }

    // --- the rules ---

    /// Whether `author` may do `body` now (the same rules as [`SpaceState::apply`], without
    /// changing anything), so a node can refuse at once instead of writing an op that every
    /// replica will drop. Join proofs and the max-uses count are not checked here.
    pub fn check(&self, author: &UserId, body: &OpBody) -> Result<(), Refusal> {
        let mut scratch = self.clone();
        let dummy = OpId::from_bytes([0; 32]);
        let ctx = OpContext {
            id: dummy,
            depth: u64::MAX,
            is_ancestor: &|_| true,
        };
        scratch.apply_inner(author, body, Timestamp(0), &ctx, false)?;
        Ok(())
    }

    /// Applies `op` if its author may do it now; otherwise changes nothing and says why.
    pub fn apply(&mut self, op: &SpaceOp, ctx: &OpContext<'_>) -> Result<Applied, Refusal> {
        let author = op.author_user();
        let applied = self.apply_inner(&author, &op.body, op.created_at, ctx, true)?;
        if self.is_member(&author) {
            self.remember_device(&op.author);
        }
        Ok(applied)
    }

    fn remember_device(&mut self, cert: &DeviceCertificate) {
        self.devices
            .entry(cert.user_id)
            .or_default()
            .insert(cert.device_id.clone(), cert.clone());
    }

    /// Base permissions and ranks of `users`, to tell afterwards who lost rights.
    fn snapshot(&self, users: &[UserId]) -> Vec<(UserId, bool, Rank, Permissions)> {
        users
            .iter()
            .map(|u| {
                (
                    *u,
                    self.is_member(u),
                    self.rank(u),
                    self.base_permissions(u),
                )
            })
            .collect()
    }

    fn demoted_since(
        &self,
        before: &[(UserId, bool, Rank, Permissions)],
        author_rank: Rank,
    ) -> Vec<UserId> {
        before
            .iter()
            .filter(|(u, was_member, rank, perms)| {
                *was_member
                    && *rank < author_rank
                    && (!self.is_member(u)
                        || self.rank(u) < *rank
                        || !self.base_permissions(u).contains(*perms))
            })
            .map(|(u, ..)| *u)
            .collect()
    }

    fn role_below(&self, author_rank: Rank, role: &RoleId) -> Result<&Role, Refusal> {
        let r = self.roles.get(role).ok_or(Refusal::NotFound("role"))?;
        match author_rank {
            Rank::Owner => Ok(r),
            Rank::Member { position, role } if r.rank() < (position, role) => Ok(r),
            _ => Err(Refusal::RankTooLow),
        }
    }

    fn position_below(author_rank: Rank, position: u32) -> Result<(), Refusal> {
        match author_rank {
            Rank::Owner => Ok(()),
            Rank::Member { position: p, .. } if position < p => Ok(()),
            _ => Err(Refusal::RankTooLow),
        }
    }

    /// Nobody grants what they do not have (administrators and the owner have everything).
    fn within(have: Permissions, granted: Permissions) -> Result<(), Refusal> {
        if have.contains(granted) {
            Ok(())
        } else {
            Err(Refusal::MissingPermission(granted.difference(have)))
        }
    }

    fn overwrites_within(have: Permissions, list: &[Overwrite]) -> Result<(), Refusal> {
        for o in list {
            Self::within(have, o.allow.union(o.deny))?;
        }
        Ok(())
    }

    fn act_on(&self, author: &UserId, author_rank: Rank, target: &UserId) -> Result<(), Refusal> {
        if !self.is_member(target) {
            return Err(Refusal::NotFound("member"));
        }
        if author == target || author_rank <= self.rank(target) {
            return Err(Refusal::RankTooLow);
        }
        Ok(())
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one arm per op kind, each a short rule"
    )]
    fn apply_inner(
        &mut self,
        author: &UserId,
        body: &OpBody,
        created_at: Timestamp,
        ctx: &OpContext<'_>,
        verify_proofs: bool,
    ) -> Result<Applied, Refusal> {
        if !self.is_member(author) {
            return Err(Refusal::NotMember);
        }
        let rank = self.rank(author);
        let perms = self.base_permissions(author);
        let key = WriteKey {
            depth: ctx.depth,
            rank,
            op: ctx.id,
        };
        let mut applied = Applied::default();
        match body {
            OpBody::Create { .. } => {
                return Err(Refusal::InvalidTarget("a space has one create op"));
            }
            OpBody::Update {
                name,
                description,
                share_history,
            } => {
                need(perms, Permissions::MANAGE_SPACE)?;
                if let Some(n) = name {
                    self.name.set(n.clone(), key);
                }
                if let Some(d) = description {
                    self.description.set(d.clone(), key);
                }
                if let Some(s) = share_history {
                    self.share_history.set(*s, key);
                }
            }
            OpBody::InviteCreate {
                invite_key,
                max_uses,
                expires_at,
                role,
            } => {
                need(perms, Permissions::CREATE_INVITE)?;
                if let Some(r) = role {
                    need(perms, Permissions::MANAGE_ROLES)?;
                    self.role_below(rank, r)?;
                }
                if self.invite_keys.contains_key(invite_key.as_bytes()) {
                    return Err(Refusal::InvalidTarget("invite key already used"));
                }
                if self.invites.values().filter(|i| !i.revoked).count() >= MAX_INVITES {
                    return Err(Refusal::TooMany("invites"));
                }
                self.invite_keys.insert(*invite_key.as_bytes(), ctx.id);
                self.invites.insert(
                    ctx.id,
                    Invite {
                        id: ctx.id,
                        key: *invite_key,
                        creator: *author,
                        max_uses: *max_uses,
                        expires_at: *expires_at,
                        role: *role,
                        revoked: false,
                        joins: Vec::new(),
                    },
                );
            }
            OpBody::InviteRevoke { invite } => {
                let inv = self
                    .invites
                    .get_mut(invite)
                    .ok_or(Refusal::NotFound("invite"))?;
                if inv.creator != *author {
                    need(perms, Permissions::MANAGE_SPACE)?;
                }
                inv.revoked = true;
            }
            OpBody::Join {
                invite,
                joiner,
                requested_at,
                proof,
            } => {
                need(perms, Permissions::CREATE_INVITE)?;
                let user = joiner.user_id;
                let inv = self
                    .invites
                    .get(invite)
                    .ok_or(Refusal::NotFound("invite"))?;
                if inv.revoked {
                    return Err(Refusal::InviteRevoked);
                }
                if let Some(exp) = inv.expires_at
                    && (created_at > exp || *requested_at > exp)
                {
                    return Err(Refusal::InviteExpired);
                }
                if let Some(max) = inv.max_uses {
                    // Only joins the admitter had seen count: concurrent admissions may overshoot.
                    let used = inv.joins.iter().filter(|j| (ctx.is_ancestor)(j)).count();
                    if used >= max as usize {
                        return Err(Refusal::InviteExhausted);
                    }
                }
                if self.bans.contains(&user) {
                    return Err(Refusal::Banned);
                }
                if self.members.contains_key(&user) {
                    return Err(Refusal::AlreadyMember);
                }
                if self.members.len() >= MAX_MEMBERS {
                    return Err(Refusal::TooMany("members"));
                }
                if verify_proofs {
                    let bytes = join_proof_bytes(&self.id, &inv.key, joiner, *requested_at);
                    inv.key
                        .verify(&bytes, proof)
                        .map_err(|_| Refusal::BadJoinProof)?;
                }
                let role = inv.role.filter(|r| self.roles.contains_key(r));
                let mut roles = BTreeSet::new();
                if let Some(r) = role
                    && self.role_write(user, r, key)
                {
                    roles.insert(r);
                }
                self.former.remove(&user);
                self.members.insert(
                    user,
                    Member {
                        roles,
                        joined_by: ctx.id,
                        admitted_by: *author,
                        display_name: None,
                    },
                );
                if let Some(inv) = self.invites.get_mut(invite) {
                    inv.joins.push(ctx.id);
                }
                let joiner = joiner.as_ref().clone();
                self.remember_device(&joiner);
            }
            OpBody::Leave => {
                if *author == self.owner {
                    return Err(Refusal::OwnerOnly(
                        "the owner must hand the space over before leaving",
                    ));
                }
                self.remove_member(author);
            }
            OpBody::Kick { user } => {
                need(perms, Permissions::KICK)?;
                self.act_on(author, rank, user)?;
                self.remove_member(user);
                applied.demoted.push(*user);
            }
            OpBody::Ban { user } => {
                need(perms, Permissions::BAN)?;
                if *user == self.owner || user == author {
                    return Err(Refusal::RankTooLow);
                }
                if self.is_member(user) {
                    self.act_on(author, rank, user)?;
                    self.remove_member(user);
                    applied.demoted.push(*user);
                }
                self.bans.insert(*user);
            }
            OpBody::Unban { user } => {
                need(perms, Permissions::BAN)?;
                if !self.bans.remove(user) {
                    return Err(Refusal::NotFound("ban"));
                }
            }
            OpBody::RoleCreate {
                name,
                color,
                position,
                permissions,
            } => {
                need(perms, Permissions::MANAGE_ROLES)?;
                Self::position_below(rank, *position)?;
                Self::within(perms, *permissions)?;
                if self.roles.len() > MAX_ROLES {
                    return Err(Refusal::TooMany("roles"));
                }
                let id = derive_role_id(&self.id, &ctx.id);
                self.roles.insert(
                    id,
                    Role {
                        id,
                        name: Register::new(name.clone(), key),
                        color: Register::new(*color, key),
                        position: Register::new(*position, key),
                        permissions: Register::new(*permissions, key),
                    },
                );
            }
            OpBody::RoleUpdate {
                role,
                name,
                color,
                position,
                permissions,
            } => {
                need(perms, Permissions::MANAGE_ROLES)?;
                self.role_below(rank, role)?;
                if let Some(p) = position {
                    Self::position_below(rank, *p)?;
                }
                if let Some(p) = permissions {
                    Self::within(perms, *p)?;
                }
                let holders: Vec<UserId> = if *role == RoleId::EVERYONE {
                    // Changing @everyone touches everyone: no strong remove for it.
                    Vec::new()
                } else {
                    self.holders(role)
                };
                let before = self.snapshot(&holders);
                if let Some(r) = self.roles.get_mut(role) {
                    if let Some(n) = name {
                        r.name.set(n.clone(), key);
                    }
                    if let Some(c) = color {
                        r.color.set(*c, key);
                    }
                    if let Some(p) = position {
                        r.position.set(*p, key);
                    }
                    if let Some(p) = permissions {
                        r.permissions.set(*p, key);
                    }
                }
                applied.demoted = self.demoted_since(&before, rank);
            }
            OpBody::RoleDelete { role } => {
                need(perms, Permissions::MANAGE_ROLES)?;
                self.role_below(rank, role)?;
                let holders = self.holders(role);
                let before = self.snapshot(&holders);
                self.roles.remove(role);
                self.deleted_roles.insert(*role);
                self.role_writes.retain(|(_, r), _| r != role);
                for m in self.members.values_mut() {
                    m.roles.remove(role);
                }
                applied.demoted = self.demoted_since(&before, rank);
            }
            OpBody::RoleAssign { user, role } => {
                need(perms, Permissions::MANAGE_ROLES)?;
                self.role_below(rank, role)?;
                self.act_on(author, rank, user)?;
                if self.role_write(*user, *role, key)
                    && let Some(m) = self.members.get_mut(user)
                {
                    m.roles.insert(*role);
                }
            }
            OpBody::RoleRevoke { user, role } => {
                need(perms, Permissions::MANAGE_ROLES)?;
                self.role_below(rank, role)?;
                self.act_on(author, rank, user)?;
                let before = self.snapshot(&[*user]);
                if self.role_write(*user, *role, key)
                    && let Some(m) = self.members.get_mut(user)
                {
                    m.roles.remove(role);
                }
                applied.demoted = self.demoted_since(&before, rank);
            }
            OpBody::ChannelCreate {
                kind,
                name,
                topic,
                parent,
                position,
                overwrites,
            } => {
                need(perms, Permissions::MANAGE_CHANNELS)?;
                Self::overwrites_within(perms, overwrites)?;
                if let Some(p) = parent {
                    self.live_category(p)?;
                }
                if self.channels.len() >= MAX_CHANNELS {
                    return Err(Refusal::TooMany("channels"));
                }
                let id = derive_channel_id(&self.id, &ctx.id);
                self.channels.insert(
                    id,
                    Channel {
                        id,
                        kind: *kind,
                        name: Register::new(name.clone(), key),
                        topic: Register::new(topic.clone().unwrap_or_default(), key),
                        place: Register::new((*parent, *position), key),
                        overwrites: Register::new(overwrites.clone(), key),
                        created_by: ctx.id,
                    },
                );
            }
            OpBody::ChannelUpdate {
                channel,
                name,
                topic,
                overwrites,
            } => {
                need(perms, Permissions::MANAGE_CHANNELS)?;
                if let Some(o) = overwrites {
                    Self::overwrites_within(perms, o)?;
                }
                let ch = self
                    .channels
                    .get_mut(channel)
                    .ok_or(Refusal::NotFound("channel"))?;
                if let Some(n) = name {
                    ch.name.set(n.clone(), key);
                }
                if let Some(t) = topic {
                    ch.topic.set(t.clone(), key);
                }
                if let Some(o) = overwrites {
                    ch.overwrites.set(o.clone(), key);
                }
            }
            OpBody::ChannelDelete { channel } => {
                need(perms, Permissions::MANAGE_CHANNELS)?;
                if self.channels.remove(channel).is_none() {
                    return Err(Refusal::NotFound("channel"));
                }
                self.deleted_channels.insert(*channel);
            }
            OpBody::ChannelReorder { positions } => {
                need(perms, Permissions::MANAGE_CHANNELS)?;
                let mut moved = 0;
                for ChannelPosition {
                    channel,
                    parent,
                    position,
                } in positions
                {
                    // Channels deleted (or categories gone) concurrently are skipped.
                    let Some(kind) = self.channels.get(channel).map(|c| c.kind) else {
                        continue;
                    };
                    if let Some(p) = parent
                        && (kind == ChannelKind::Category || self.live_category(p).is_err())
                    {
                        continue;
                    }
                    if let Some(ch) = self.channels.get_mut(channel) {
                        ch.place.set((*parent, *position), key);
                        moved += 1;
                    }
                }
                if moved == 0 {
                    return Err(Refusal::NotFound("channel"));
                }
            }
            OpBody::TransferOwnership { to } => {
                if *author != self.owner {
                    return Err(Refusal::OwnerOnly("only the owner can hand the space over"));
                }
                if !self.is_member(to) || to == author {
                    return Err(Refusal::NotFound("member"));
                }
                self.owner = *to;
            }
            // Anyone may name themselves; nobody names another.
            OpBody::Profile { display_name } => {
                if let Some(m) = self.members.get_mut(author) {
                    match &mut m.display_name {
                        Some(r) => r.set(display_name.clone(), key),
                        None => m.display_name = Some(Register::new(display_name.clone(), key)),
                    }
                }
            }
        }
        Ok(applied)
    }

    /// Records an assign or revoke of `role` for `user` written with `key`; `false` when a
    /// newer one already decided (this write then changes nothing).
    fn role_write(&mut self, user: UserId, role: RoleId, key: WriteKey) -> bool {
        match self.role_writes.get(&(user, role)) {
            Some(k) if *k >= key => false,
            _ => {
                self.role_writes.insert((user, role), key);
                true
            }
        }
    }

    fn live_category(&self, id: &ChannelId) -> Result<(), Refusal> {
        match self.channels.get(id) {
            Some(c) if c.kind == ChannelKind::Category => Ok(()),
            Some(_) => Err(Refusal::InvalidTarget("parent is not a category")),
            None => Err(Refusal::NotFound("category")),
        }
    }

    fn holders(&self, role: &RoleId) -> Vec<UserId> {
        self.members
            .iter()
            .filter(|(_, m)| m.roles.contains(role))
            .map(|(u, _)| *u)
            .collect()
    }
}
