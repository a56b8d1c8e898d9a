//! Permission bits and per-channel overwrites, in Discord's spirit.
//!
//! A member's permissions in a space are the `@everyone` role's bits OR the bits of every role
//! they hold; [`Permissions::ADMINISTRATOR`] implies all of them. In a channel, the overwrites
//! of its category and then its own are applied on top (`@everyone` overwrite, then the member's
//! roles' overwrites, then the member's own), and a member who cannot view a channel has no
//! permission in it. `dopus_core::space` computes this; docs/spaces.md has the table.

use super::RoleId;
use super::canon::Canon;
use crate::peer::PeerError;
use dopus_types::UserId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A set of permission bits. Decoding refuses bits this version does not define, so two
/// replicas never disagree about what a role grants.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Permissions(u64);

macro_rules! bits {
    ($($(#[$meta:meta])* $name:ident = $bit:literal, $text:literal;)+) => {
        impl Permissions {
            $($(#[$meta])* pub const $name: Permissions = Permissions(1 << $bit);)+

            /// Every bit this version defines.
            pub const ALL: Permissions = Permissions(0 $(| (1 << $bit))+);

            const NAMES: &'static [(Permissions, &'static str)] = &[
                $((Permissions::$name, $text),)+
            ];
        }
    };
}

bits! {
    /// See a channel and read its messages (receive its Megolm keys).
    VIEW_CHANNEL = 0, "view_channel";
    /// Send messages in a text channel.
    SEND_MESSAGES = 1, "send_messages";
    /// Delete others' messages.
    MANAGE_MESSAGES = 2, "manage_messages";
    /// Join a voice channel.
    CONNECT = 3, "connect";
    /// Speak in a voice channel.
    SPEAK = 4, "speak";
    /// Send video in a voice channel.
    VIDEO = 5, "video";
    /// Share a screen in a voice channel.
    STREAM = 6, "stream";
    /// Create invites and admit people who present one.
    CREATE_INVITE = 7, "create_invite";
    /// Remove members ranked below oneself.
    KICK = 8, "kick";
    /// Ban and unban.
    BAN = 9, "ban";
    /// Create, edit, delete, assign and revoke roles ranked below one's top role.
    MANAGE_ROLES = 10, "manage_roles";
    /// Create, edit, reorder and delete channels and categories.
    MANAGE_CHANNELS = 11, "manage_channels";
    /// Every permission (rank rules still apply).
    ADMINISTRATOR = 12, "administrator";
    /// Change the space's name, description and settings; revoke anyone's invite.
    MANAGE_SPACE = 13, "manage_space";
    /// Mention `@everyone`.
    MENTION_EVERYONE = 14, "mention_everyone";
}

impl Permissions {
    /// No permission.
    pub const NONE: Permissions = Permissions(0);

    /// What `@everyone` gets in a new space.
    pub const DEFAULT_EVERYONE: Permissions = Permissions(
        Self::VIEW_CHANNEL.0
            | Self::SEND_MESSAGES.0
            | Self::CONNECT.0
            | Self::SPEAK.0
            | Self::VIDEO.0
            | Self::STREAM.0
            | Self::CREATE_INVITE.0,
    );

    /// The set with these bits, if they are all defined.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        if bits & !Self::ALL.0 == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every bit of `other` is set here.
    pub const fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set here.
    pub const fn intersects(self, other: Permissions) -> bool {
        self.0 & other.0 != 0
    }

    /// The bits of both.
    pub const fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    /// The bits set here but not in `other`.
    pub const fn difference(self, other: Permissions) -> Permissions {
        Permissions(self.0 & !other.0)
    }

    /// The bits set in both.
    pub const fn intersection(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn is_none_ref(p: &Permissions) -> bool {
        p.is_empty()
    }

    /// The names of the bits set, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(p, _)| self.contains(*p))
            .map(|(_, n)| *n)
            .collect()
    }

    /// The bit with this name.
    pub fn from_name(name: &str) -> Option<Permissions> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(p, _)| *p)
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permissions({})", self.names().join("|"))
    }
}

impl Serialize for Permissions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bits = u64::deserialize(d)?;
        Permissions::from_bits(bits)
            .ok_or_else(|| serde::de::Error::custom("unknown permission bits"))
    }
}

/// Whom a channel overwrite applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum OverwriteTarget {
    /// Every holder of a role (`RoleId::EVERYONE` for everyone).
    Role(RoleId),
    /// One member.
    Member(UserId),
}

/// Bits allowed and denied in one channel (or category) for a role or a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overwrite {
    /// Whom it applies to.
    pub target: OverwriteTarget,
    /// Bits granted in the channel.
    #[serde(default, skip_serializing_if = "Permissions::is_none_ref")]
    pub allow: Permissions,
    /// Bits taken away in the channel.
    #[serde(default, skip_serializing_if = "Permissions::is_none_ref")]
    pub deny: Permissions,
}

impl Overwrite {
    pub(crate) fn canon(&self, c: &mut Canon) {
        match self.target {
            OverwriteTarget::Role(r) => c.tag(0).bytes(r.as_bytes()),
            OverwriteTarget::Member(u) => c.tag(1).bytes(u.key().as_bytes()),
        };
        c.u64(self.allow.bits()).u64(self.deny.bits());
    }
}

/// Checks a list of overwrites: at most `limit`, one per target, and no bit both allowed and
/// denied.
pub(crate) fn check_overwrites(list: &[Overwrite], limit: usize) -> Result<(), PeerError> {
    super::limit_list("overwrites", list, limit)?;
    let mut seen = std::collections::BTreeSet::new();
    for o in list {
        if o.allow.intersects(o.deny) || !seen.insert(o.target) {
            return Err(PeerError::InvalidField {
                field: "overwrites",
            });
        }
    }
    Ok(())
}
