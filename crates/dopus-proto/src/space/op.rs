//! The signed operation of a space's control log.

use super::canon::Canon;
use super::permissions::check_overwrites;
use super::{
    CHANNEL_ID_CONTEXT, MAX_HEADS, OpId, Overwrite, Permissions, ROLE_ID_CONTEXT, RoleId,
    SPACE_ID_CONTEXT, SPACE_OP_CONTEXT, SpaceNonce, check_name, check_op_ids, check_size,
    check_text, limit_list, malformed, sha256,
};
use crate::bundle::{BundleError, DeviceCertificate};
use crate::canonical::signing_bytes;
use crate::peer::PeerError;
use dopus_types::{ChannelId, DeviceId, Ed25519Key, Signature, SpaceId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

/// Version of the op format.
pub const SPACE_OP_VERSION: u32 = 1;
/// Largest encoded op accepted (bytes of JSON).
pub const MAX_OP_BYTES: usize = 32 * 1024;
/// Most parents one op may name.
pub const MAX_PARENTS: usize = 16;
/// Longest space, role or channel name, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 100;
/// Longest display name a member gives itself in a space, in UTF-8 bytes.
pub const MAX_MEMBER_NAME_BYTES: usize = 64;
/// Longest space description, in UTF-8 bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Longest channel topic, in UTF-8 bytes.
pub const MAX_TOPIC_BYTES: usize = 1024;
/// Most overwrites on one channel.
pub const MAX_OVERWRITES: usize = 64;
/// Most channels one reorder may move.
pub const MAX_REORDER: usize = 200;
/// Largest role colour (`0xRRGGBB`).
pub const MAX_COLOR: u32 = 0x00ff_ffff;

// The parent list must fit the head limit: an author names all its heads.
const _: () = assert!(MAX_PARENTS <= MAX_HEADS);

/// Why an op was refused before any rule of the space was consulted. Never echoes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// Not a well-formed op (JSON, limits, field values).
    #[error(transparent)]
    Format(#[from] PeerError),
    /// The genesis rules are broken: only a `create` op may lack a space, parents and depth, and
    /// a `create` op must lack all three.
    #[error("op structure is invalid: {0}")]
    Structure(&'static str),
    /// The author's device certificate does not verify against the user it names.
    #[error("the author's device certificate is invalid: {0}")]
    Certificate(BundleError),
    /// The device key's signature over the op does not verify.
    #[error("the op's signature is invalid")]
    BadSignature,
    /// A joiner's device certificate inside a `join` op does not verify.
    #[error("the joiner's device certificate is invalid: {0}")]
    JoinerCertificate(BundleError),
}

/// What kind of channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Messages (Megolm-encrypted).
    Text,
    /// A voice room.
    Voice,
    /// A folder of channels; holds overwrites its channels inherit.
    Category,
}

impl ChannelKind {
    fn tag(self) -> u8 {
        match self {
            ChannelKind::Text => 0,
            ChannelKind::Voice => 1,
            ChannelKind::Category => 2,
        }
    }

    /// The stable text form.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Text => "text",
            ChannelKind::Voice => "voice",
            ChannelKind::Category => "category",
        }
    }
}

/// Where one channel goes in a reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPosition {
    /// The channel.
    pub channel: ChannelId,
    /// The category it moves into (`None`: top level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ChannelId>,
    /// Its position among its siblings (ties sort by channel id).
    pub position: u32,
}

/// What an op does. The rules for who may do it are in `dopus_core::space` and docs/spaces.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpBody {
    /// Genesis: creates the space with its author as owner. The only op without a space,
    /// parents or depth; its hash is the space id.
    Create {
        /// The space's name.
        name: String,
        /// Random, so equal names at equal times still give distinct spaces.
        nonce: SpaceNonce,
        /// What `@everyone` may do.
        everyone: Permissions,
        /// Whether new members get keys for messages sent before they joined.
        #[serde(default)]
        share_history: bool,
    },
    /// Changes the space's settings (only the fields present).
    Update {
        /// New name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// New description (empty clears it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// New "share history with new members" setting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        share_history: Option<bool>,
    },
    /// Creates an invite. Its id is this op's id; its secret never enters the log, only the
    /// public key derived from it (joiners prove the secret by signing with it).
    InviteCreate {
        /// The public key derived from the invite secret.
        invite_key: Ed25519Key,
        /// Most joins it admits (may overshoot under concurrency, see docs/spaces.md).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_uses: Option<u32>,
        /// No join after this time (the admitting member's clock).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<Timestamp>,
        /// A role given to everyone who joins with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<RoleId>,
    },
    /// Revokes an invite.
    InviteRevoke {
        /// The `invite_create` op.
        invite: OpId,
    },
    /// Admits a joiner who proved an invite's secret. Written by the admitting member.
    Join {
        /// The `invite_create` op.
        invite: OpId,
        /// The joiner's device certificate.
        joiner: Box<DeviceCertificate>,
        /// When the joiner asked (the joiner's clock).
        requested_at: Timestamp,
        /// The invite key's signature over [`super::join_proof_bytes`].
        proof: Signature,
    },
    /// The author leaves the space.
    Leave,
    /// Removes a member ranked below the author.
    Kick {
        /// The member.
        user: UserId,
    },
    /// Removes a user (if a member) and refuses their joins until unbanned.
    Ban {
        /// The user.
        user: UserId,
    },
    /// Lifts a ban.
    Unban {
        /// The user.
        user: UserId,
    },
    /// Creates a role; its id is derived from this op ([`derive_role_id`]).
    RoleCreate {
        /// The role's name.
        name: String,
        /// Its colour, `0xRRGGBB`.
        #[serde(default)]
        color: u32,
        /// Its rank: higher is more powerful; 0 belongs to `@everyone`.
        position: u32,
        /// What it grants.
        permissions: Permissions,
    },
    /// Changes a role (only the fields present; `@everyone` only takes `permissions`).
    RoleUpdate {
        /// The role.
        role: RoleId,
        /// New name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// New colour.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        color: Option<u32>,
        /// New position.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<u32>,
        /// New permissions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        permissions: Option<Permissions>,
    },
    /// Deletes a role (every holder loses it).
    RoleDelete {
        /// The role.
        role: RoleId,
    },
    /// Gives a member a role.
    RoleAssign {
        /// The member.
        user: UserId,
        /// The role.
        role: RoleId,
    },
    /// Takes a role from a member.
    RoleRevoke {
        /// The member.
        user: UserId,
        /// The role.
        role: RoleId,
    },
    /// Creates a channel or category; its id is derived from this op ([`derive_channel_id`]).
    ChannelCreate {
        /// Text, voice or category.
        kind: ChannelKind,
        /// Its name.
        name: String,
        /// Its topic.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        /// The category it sits in (never for a category).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ChannelId>,
        /// Its position among its siblings.
        #[serde(default)]
        position: u32,
        /// Its permission overwrites.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        overwrites: Vec<Overwrite>,
    },
    /// Changes a channel (only the fields present).
    ChannelUpdate {
        /// The channel.
        channel: ChannelId,
        /// New name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// New topic (empty clears it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        /// New overwrites (replacing the old list).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        overwrites: Option<Vec<Overwrite>>,
    },
    /// Deletes a channel or category (a category's channels move to the top level).
    ChannelDelete {
        /// The channel.
        channel: ChannelId,
    },
    /// Moves channels (category and position).
    ChannelReorder {
        /// The new places, one per channel.
        positions: Vec<ChannelPosition>,
    },
    /// Hands the space to another member. Only the owner may.
    TransferOwnership {
        /// The new owner.
        to: UserId,
    },
    /// The author's own profile in this space: the name other members (who need not be its
    /// contacts) show for it, beside its key fingerprint. Any member may write its own.
    Profile {
        /// Its display name (empty: none, shown by fingerprint only).
        display_name: String,
    },
}

impl OpBody {
    /// A short name of the kind, safe to log.
    pub fn kind_name(&self) -> &'static str {
        match self {
            OpBody::Create { .. } => "create",
            OpBody::Update { .. } => "update",
            OpBody::InviteCreate { .. } => "invite_create",
            OpBody::InviteRevoke { .. } => "invite_revoke",
            OpBody::Join { .. } => "join",
            OpBody::Leave => "leave",
            OpBody::Kick { .. } => "kick",
            OpBody::Ban { .. } => "ban",
            OpBody::Unban { .. } => "unban",
            OpBody::RoleCreate { .. } => "role_create",
            OpBody::RoleUpdate { .. } => "role_update",
            OpBody::RoleDelete { .. } => "role_delete",
            OpBody::RoleAssign { .. } => "role_assign",
            OpBody::RoleRevoke { .. } => "role_revoke",
            OpBody::ChannelCreate { .. } => "channel_create",
            OpBody::ChannelUpdate { .. } => "channel_update",
            OpBody::ChannelDelete { .. } => "channel_delete",
            OpBody::ChannelReorder { .. } => "channel_reorder",
            OpBody::TransferOwnership { .. } => "transfer_ownership",
            OpBody::Profile { .. } => "profile",
        }
    }

    /// Checks the documented limits and value rules (no rule of the space: those need state).
    pub fn validate(&self) -> Result<(), PeerError> {
        match self {
            OpBody::Create { name, .. } => check_name("name", name, MAX_NAME_BYTES),
            OpBody::Update {
                name,
                description,
                share_history,
            } => {
                if name.is_none() && description.is_none() && share_history.is_none() {
                    return Err(PeerError::InvalidField { field: "update" });
                }
                if let Some(n) = name {
                    check_name("name", n, MAX_NAME_BYTES)?;
                }
                if let Some(d) = description {
                    check_text("description", d, MAX_DESCRIPTION_BYTES)?;
                }
                Ok(())
            }
            OpBody::InviteCreate { max_uses, role, .. } => {
                if *max_uses == Some(0) {
                    return Err(PeerError::InvalidField { field: "max_uses" });
                }
                if *role == Some(RoleId::EVERYONE) {
                    return Err(PeerError::InvalidField { field: "role" });
                }
                Ok(())
            }
            OpBody::RoleCreate {
                name,
                color,
                position,
                ..
            } => {
                check_name("name", name, MAX_NAME_BYTES)?;
                check_color(*color)?;
                if *position == 0 {
                    return Err(PeerError::InvalidField { field: "position" });
                }
                Ok(())
            }
            OpBody::RoleUpdate {
                role,
                name,
                color,
                position,
                permissions,
            } => {
                if name.is_none() && color.is_none() && position.is_none() && permissions.is_none()
                {
                    return Err(PeerError::InvalidField { field: "update" });
                }
                if *role == RoleId::EVERYONE
                    && (name.is_some() || color.is_some() || position.is_some())
                {
                    return Err(PeerError::InvalidField { field: "role" });
                }
                if let Some(n) = name {
                    check_name("name", n, MAX_NAME_BYTES)?;
                }
                if let Some(c) = color {
                    check_color(*c)?;
                }
                if *position == Some(0) {
                    return Err(PeerError::InvalidField { field: "position" });
                }
                Ok(())
            }
            OpBody::RoleDelete { role }
            | OpBody::RoleAssign { role, .. }
            | OpBody::RoleRevoke { role, .. } => {
                if *role == RoleId::EVERYONE {
                    Err(PeerError::InvalidField { field: "role" })
                } else {
                    Ok(())
                }
            }
            OpBody::ChannelCreate {
                kind,
                name,
                topic,
                parent,
                overwrites,
                ..
            } => {
                check_name("name", name, MAX_NAME_BYTES)?;
                if let Some(t) = topic {
                    check_text("topic", t, MAX_TOPIC_BYTES)?;
                }
                if *kind == ChannelKind::Category && parent.is_some() {
                    return Err(PeerError::InvalidField { field: "parent" });
                }
                check_overwrites(overwrites, MAX_OVERWRITES)
            }
            OpBody::ChannelUpdate {
                name,
                topic,
                overwrites,
                ..
            } => {
                if name.is_none() && topic.is_none() && overwrites.is_none() {
                    return Err(PeerError::InvalidField { field: "update" });
                }
                if let Some(n) = name {
                    check_name("name", n, MAX_NAME_BYTES)?;
                }
                if let Some(t) = topic {
                    check_text("topic", t, MAX_TOPIC_BYTES)?;
                }
                if let Some(o) = overwrites {
                    check_overwrites(o, MAX_OVERWRITES)?;
                }
                Ok(())
            }
            OpBody::ChannelReorder { positions } => {
                if positions.is_empty() {
                    return Err(PeerError::InvalidField { field: "positions" });
                }
                limit_list("positions", positions, MAX_REORDER)?;
                let mut seen = std::collections::BTreeSet::new();
                for p in positions {
                    if !seen.insert(p.channel) || p.parent == Some(p.channel) {
                        return Err(PeerError::InvalidField { field: "positions" });
                    }
                }
                Ok(())
            }
            OpBody::Profile { display_name } => {
                if display_name.is_empty() {
                    Ok(())
                } else {
                    check_name("display_name", display_name, MAX_MEMBER_NAME_BYTES)
                }
            }
            OpBody::InviteRevoke { .. }
            | OpBody::Join { .. }
            | OpBody::Leave
            | OpBody::Kick { .. }
            | OpBody::Ban { .. }
            | OpBody::Unban { .. }
            | OpBody::ChannelDelete { .. }
            | OpBody::TransferOwnership { .. } => Ok(()),
        }
    }

    /// The canonical bytes of the body (see the `canon` module).
    fn canon(&self, c: &mut Canon) {
        let user = |c: &mut Canon, u: &UserId| {
            c.bytes(u.key().as_bytes());
        };
        let channel = |c: &mut Canon, ch: &ChannelId| {
            c.bytes(ch.as_bytes());
        };
        match self {
            OpBody::Create {
                name,
                nonce,
                everyone,
                share_history,
            } => {
                c.tag(0)
                    .str(name)
                    .bytes(&nonce.0)
                    .u64(everyone.bits())
                    .bool(*share_history);
            }
            OpBody::Update {
                name,
                description,
                share_history,
            } => {
                c.tag(1)
                    .opt(name.as_deref(), |c, v| {
                        c.str(v);
                    })
                    .opt(description.as_deref(), |c, v| {
                        c.str(v);
                    })
                    .opt(*share_history, |c, v| {
                        c.bool(v);
                    });
            }
            OpBody::InviteCreate {
                invite_key,
                max_uses,
                expires_at,
                role,
            } => {
                c.tag(2)
                    .bytes(invite_key.as_bytes())
                    .opt(*max_uses, |c, v| {
                        c.u32(v);
                    })
                    .opt(*expires_at, |c, v| {
                        c.u64(v.as_millis());
                    })
                    .opt(role.as_ref(), |c, v| {
                        c.bytes(v.as_bytes());
                    });
            }
            OpBody::InviteRevoke { invite } => {
                c.tag(3).bytes(invite.as_bytes());
            }
            OpBody::Join {
                invite,
                joiner,
                requested_at,
                proof,
            } => {
                c.tag(4)
                    .bytes(invite.as_bytes())
                    .certificate(joiner)
                    .u64(requested_at.as_millis())
                    .bytes(proof.as_bytes());
            }
            OpBody::Leave => {
                c.tag(5);
            }
            OpBody::Kick { user: u } => {
                c.tag(6);
                user(c, u);
            }
            OpBody::Ban { user: u } => {
                c.tag(7);
                user(c, u);
            }
            OpBody::Unban { user: u } => {
                c.tag(8);
                user(c, u);
            }
            OpBody::RoleCreate {
                name,
                color,
                position,
                permissions,
            } => {
                c.tag(9)
                    .str(name)
                    .u32(*color)
                    .u32(*position)
                    .u64(permissions.bits());
            }
            OpBody::RoleUpdate {
                role,
                name,
                color,
                position,
                permissions,
            } => {
                c.tag(10)
                    .bytes(role.as_bytes())
                    .opt(name.as_deref(), |c, v| {
                        c.str(v);
                    })
                    .opt(*color, |c, v| {
                        c.u32(v);
                    })
                    .opt(*position, |c, v| {
                        c.u32(v);
                    })
                    .opt(*permissions, |c, v| {
                        c.u64(v.bits());
                    });
            }
            OpBody::RoleDelete { role } => {
                c.tag(11).bytes(role.as_bytes());
            }
            OpBody::RoleAssign { user: u, role } => {
                c.tag(12);
                user(c, u);
                c.bytes(role.as_bytes());
            }
            OpBody::RoleRevoke { user: u, role } => {
                c.tag(13);
                user(c, u);
                c.bytes(role.as_bytes());
            }
            OpBody::ChannelCreate {
                kind,
                name,
                topic,
                parent,
                position,
                overwrites,
            } => {
                c.tag(14)
                    .tag(kind.tag())
                    .str(name)
                    .opt(topic.as_deref(), |c, v| {
                        c.str(v);
                    })
                    .opt(parent.as_ref(), channel)
                    .u32(*position)
                    .list(overwrites, |c, o| o.canon(c));
            }
            OpBody::ChannelUpdate {
                channel: ch,
                name,
                topic,
                overwrites,
            } => {
                c.tag(15);
                channel(c, ch);
                c.opt(name.as_deref(), |c, v| {
                    c.str(v);
                })
                .opt(topic.as_deref(), |c, v| {
                    c.str(v);
                })
                .opt(overwrites.as_deref(), |c, v| {
                    c.list(v, |c, o| o.canon(c));
                });
            }
            OpBody::ChannelDelete { channel: ch } => {
                c.tag(16);
                channel(c, ch);
            }
            OpBody::ChannelReorder { positions } => {
                c.tag(17).list(positions, |c, p| {
                    channel(c, &p.channel);
                    c.opt(p.parent.as_ref(), channel).u32(p.position);
                });
            }
            OpBody::TransferOwnership { to } => {
                c.tag(18);
                user(c, to);
            }
            OpBody::Profile { display_name } => {
                c.tag(19).str(display_name);
            }
        }
    }
}

fn check_color(color: u32) -> Result<(), PeerError> {
    if color > MAX_COLOR {
        Err(PeerError::InvalidField { field: "color" })
    } else {
        Ok(())
    }
}

/// One signed operation of a space's control log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceOp {
    /// Format version, [`SPACE_OP_VERSION`].
    pub version: u32,
    /// The space; absent only on the genesis op (whose hash *is* the space id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<SpaceId>,
    /// The author's device certificate: names the user and the device, and carries the device
    /// key that signed this op. Any replica checks it against the user id alone.
    pub author: DeviceCertificate,
    /// The author's heads when writing: strictly ascending, 1 to [`MAX_PARENTS`] (none on
    /// the genesis op).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<OpId>,
    /// 1 + the largest parent depth (0 on the genesis op). Receivers check it, so it is a
    /// logical clock nobody can skew.
    pub depth: u64,
    /// When the author wrote it (the author's clock; informational, and the time an
    /// invite's expiry is checked against for a `join`).
    pub created_at: Timestamp,
    /// What it does.
    pub body: OpBody,
    /// The author device's Ed25519 signature over [`SpaceOp::signing_bytes`].
    pub signature: Signature,
}

impl SpaceOp {
    /// The author's user.
    pub fn author_user(&self) -> UserId {
        self.author.user_id
    }

    /// The author's device.
    pub fn author_device(&self) -> &DeviceId {
        &self.author.device_id
    }

    /// Whether this is a genesis op.
    pub fn is_genesis(&self) -> bool {
        matches!(self.body, OpBody::Create { .. })
    }

    /// The bytes the author device signs, built from the fields (never from the JSON).
    #[allow(clippy::too_many_arguments, reason = "one argument per signed field")]
    pub fn signing_bytes_for(
        version: u32,
        space: Option<&SpaceId>,
        author: &DeviceCertificate,
        parents: &[OpId],
        depth: u64,
        created_at: Timestamp,
        body: &OpBody,
    ) -> Vec<u8> {
        let mut cert = Canon::new();
        cert.certificate(author);
        let mut parent_bytes = Vec::with_capacity(parents.len() * OpId::LEN);
        for p in parents {
            parent_bytes.extend_from_slice(p.as_bytes());
        }
        let mut b = Canon::new();
        body.canon(&mut b);
        signing_bytes(
            SPACE_OP_CONTEXT,
            &[
                &version.to_be_bytes(),
                space.map_or(&[][..], |s| &s.as_bytes()[..]),
                &cert.into_bytes(),
                &parent_bytes,
                &depth.to_be_bytes(),
                &created_at.as_millis().to_be_bytes(),
                &b.into_bytes(),
            ],
        )
    }

    /// The bytes the author device signed.
    pub fn signing_bytes(&self) -> Vec<u8> {
        Self::signing_bytes_for(
            self.version,
            self.space.as_ref(),
            &self.author,
            &self.parents,
            self.depth,
            self.created_at,
            &self.body,
        )
    }

    /// The op's id: SHA-256 of its signing bytes.
    pub fn id(&self) -> OpId {
        OpId::from_bytes(sha256(&self.signing_bytes()))
    }

    /// The space this genesis op creates: SHA-256 over the signing bytes *and* the signature
    /// (context [`SPACE_ID_CONTEXT`]), so the id names this exact signed op. `None` for any other
    /// op.
    pub fn genesis_space_id(&self) -> Option<SpaceId> {
        if !self.is_genesis() {
            return None;
        }
        let bytes = signing_bytes(
            SPACE_ID_CONTEXT,
            &[&self.signing_bytes(), self.signature.as_bytes()],
        );
        Some(SpaceId::from_bytes(sha256(&bytes)))
    }

    /// Checks the version, the genesis rules and every field's limits (no signature).
    pub fn validate(&self) -> Result<(), OpError> {
        if self.version != SPACE_OP_VERSION {
            return Err(PeerError::UnsupportedVersion {
                what: "space op",
                version: self.version,
            }
            .into());
        }
        if self.is_genesis() {
            if self.space.is_some() || !self.parents.is_empty() || self.depth != 0 {
                return Err(OpError::Structure(
                    "a create op has no space, parents or depth",
                ));
            }
        } else {
            if self.space.is_none() || self.parents.is_empty() || self.depth == 0 {
                return Err(OpError::Structure(
                    "only a create op may lack a space, parents or depth",
                ));
            }
            check_op_ids("parents", &self.parents, MAX_PARENTS)?;
        }
        self.body.validate()?;
        Ok(())
    }

    /// Checks everything that needs no state: [`SpaceOp::validate`], the author's certificate
    /// against the user it names, the op's signature under the certified device key, and a
    /// joiner's certificate. Returns the op's id.
    ///
    /// What it cannot check (known parents, depth, the author's permissions, the join proof
    /// against the invite key) is `dopus_core::space`'s job.
    pub fn verify(&self) -> Result<OpId, OpError> {
        self.validate()?;
        self.author
            .verify(&self.author.user_id)
            .map_err(OpError::Certificate)?;
        let bytes = self.signing_bytes();
        self.author
            .keys
            .ed25519
            .verify(&bytes, &self.signature)
            .map_err(|_| OpError::BadSignature)?;
        if let OpBody::Join { joiner, .. } = &self.body {
            joiner
                .verify(&joiner.user_id)
                .map_err(OpError::JoinerCertificate)?;
        }
        Ok(OpId::from_bytes(sha256(&bytes)))
    }

    /// Encodes as JSON after checking the limits.
    pub fn to_json(&self) -> Result<Vec<u8>, OpError> {
        self.validate()?;
        let out = serde_json::to_vec(self).map_err(|e| malformed("space op", &e))?;
        check_size("space op", MAX_OP_BYTES, out.len())?;
        Ok(out)
    }

    /// Decodes JSON from an untrusted source, enforcing the limits (not the signature: call
    /// [`SpaceOp::verify`]).
    pub fn from_json(bytes: &[u8]) -> Result<Self, OpError> {
        check_size("space op", MAX_OP_BYTES, bytes.len())?;
        let op: Self = serde_json::from_slice(bytes).map_err(|e| malformed("space op", &e))?;
        op.validate()?;
        Ok(op)
    }
}

fn derive16(context: &str, space: &SpaceId, op: &OpId) -> [u8; 16] {
    let h = sha256(&signing_bytes(context, &[space.as_bytes(), op.as_bytes()]));
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[..16]);
    out
}

/// The id of the channel a `channel_create` op creates: derived from the space and the op, so an
/// author cannot pick an id that collides with another channel, here or in another space.
pub fn derive_channel_id(space: &SpaceId, create_op: &OpId) -> ChannelId {
    ChannelId::from_bytes(derive16(CHANNEL_ID_CONTEXT, space, create_op))
}

/// The id of the role a `role_create` op creates (derived like [`derive_channel_id`]).
pub fn derive_role_id(space: &SpaceId, create_op: &OpId) -> RoleId {
    RoleId::from_bytes(derive16(ROLE_ID_CONTEXT, space, create_op))
}
