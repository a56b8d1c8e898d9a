//! Spaces (Discord's servers), sans-IO: the control log and its resolution, the resulting
//! state and permission queries, invites, rate limits, and Megolm channel encryption.
//!
//! Nothing here reads a clock, a socket, a file or the OS random generator: time, ids and
//! randomness are parameters, state lives in `&mut self`, and persistence goes out as store
//! records (the control log's ops, pickled Megolm sessions) that the node writes. docs/spaces.md
//! describes the design; the wire formats are in `dopus_proto::space`.
//!
//! Protocol flow (what the node machine calls):
//! - **create**: [`ControlLog::create`] with a genesis op from [`ControlLog::genesis_op`], then
//!   [`ControlLog::author`] for the default channels;
//! - **author an op**: [`ControlLog::author`] checks the rules against the current state, signs,
//!   inserts and returns the op to persist ([`ControlLog::op_record`]) and send to the space;
//! - **receive ops**: [`ControlLog::insert`] verifies and inserts (buffering ops whose parents are
//!   missing and reporting which to fetch); [`ControlLog::state`] resolves;
//! - **sync**: compare [`ControlLog::heads`], answer requests with [`ControlLog::ops_for`];
//! - **invite and join**: [`invite::new_invite`] makes the secret, code and `invite_create` body;
//!   the joiner sends [`invite::join_request`]; an admitting member runs
//!   [`invite::admit`] and authors the returned `join` body;
//! - **channel messages**: [`megolm::ChannelCrypto`] (outbound session per channel, rotation,
//!   key sharing to [`SpaceState::audience`], sender binding, replay check, key requests and
//!   forwarding, history bundles).

pub mod invite;
pub mod key_requests;
mod log;
pub mod megolm;
pub mod mentions;
pub mod ratelimit;
mod resolve;
mod state;

pub use log::{ControlLog, InsertError, Insertion, MAX_PENDING_OPS, OpStatus};
pub use state::{
    Applied, Channel, Invite, MAX_CHANNELS, MAX_INVITES, MAX_MEMBERS, MAX_ROLES, Member, OpContext,
    Register, Role, SpaceState, WriteKey,
};

use dopus_proto::bundle::DeviceCertificate;
use dopus_proto::space::{Permissions, RoleId};
use dopus_types::Signature;

/// A user's rank in a space. Ordered: an outsider ranks below every member, a member ranks by
/// their top role (position, then role id), and the owner ranks above everyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    /// Not a member.
    Outsider,
    /// A member whose top role is this one (`RoleId::EVERYONE` at position 0 if none).
    Member {
        /// The top role's position.
        position: u32,
        /// The top role.
        role: RoleId,
    },
    /// The owner.
    Owner,
}

/// Why an op did not apply (or, from [`SpaceState::check`], would not). Safe to show and log:
/// it names rules, never values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The author is not a member.
    #[error("the author is not a member of the space")]
    NotMember,
    /// The author lacks a permission.
    #[error("missing permission: {}", .0.names().join(", "))]
    MissingPermission(Permissions),
    /// The target (member or role) does not rank below the author.
    #[error("the target does not rank below the author")]
    RankTooLow,
    /// Only the owner may do this (or the owner may not).
    #[error("{0}")]
    OwnerOnly(&'static str),
    /// Something the op names does not exist (any more).
    #[error("unknown {0}")]
    NotFound(&'static str),
    /// The op names something of the wrong kind.
    #[error("invalid target: {0}")]
    InvalidTarget(&'static str),
    /// A limit on the space's size.
    #[error("too many {0}")]
    TooMany(&'static str),
    /// The joiner is already a member.
    #[error("already a member")]
    AlreadyMember,
    /// The joiner is banned.
    #[error("the user is banned")]
    Banned,
    /// The invite was revoked.
    #[error("the invite was revoked")]
    InviteRevoked,
    /// The invite expired before the join.
    #[error("the invite had expired")]
    InviteExpired,
    /// The invite was used up (counting the joins the admitter had seen).
    #[error("the invite was used up")]
    InviteExhausted,
    /// The joiner's proof does not verify under the invite key.
    #[error("the join proof is invalid")]
    BadJoinProof,
    /// Strong remove: the author was removed or demoted by a concurrent op of a higher-ranked
    /// member, so everything it did concurrently is dropped.
    #[error("the author was removed or demoted concurrently")]
    Filtered,
}

/// Signs space ops and Megolm session announcements as one device.
pub trait SpaceSigner {
    /// The device's certificate (the op's author).
    fn certificate(&self) -> &DeviceCertificate;
    /// Signs canonical bytes with the device's Ed25519 key.
    fn sign(&self, canonical_bytes: &[u8]) -> Signature;
}

/// A certified [`crate::identity::Device`] as a [`SpaceSigner`].
#[derive(Debug)]
pub struct DeviceSigner<'a> {
    device: &'a crate::identity::Device,
    certificate: &'a DeviceCertificate,
}

impl<'a> DeviceSigner<'a> {
    /// The signer for `device`, which must have its certificate.
    pub fn new(device: &'a crate::identity::Device) -> Result<Self, crate::identity::DeviceError> {
        let certificate = device
            .certificate()
            .ok_or(crate::identity::DeviceError::Uncertified)?;
        Ok(Self {
            device,
            certificate,
        })
    }
}

impl SpaceSigner for DeviceSigner<'_> {
    fn certificate(&self) -> &DeviceCertificate {
        self.certificate
    }

    fn sign(&self, canonical_bytes: &[u8]) -> Signature {
        self.device.sign_bytes(canonical_bytes)
    }
}

/// Signers built from raw Ed25519 seeds, for tests and benchmarks in any crate.
#[doc(hidden)]
pub mod test_support {
    use super::SpaceSigner;
    use dopus_proto::bundle::{DeviceCertificate, test_support::certificate};
    use dopus_types::{
        Curve25519Key, DeviceId, DeviceKeys, Ed25519Key, Signature, Timestamp, UserId,
    };
    use ed25519_dalek::{Signer, SigningKey};

    /// A device whose identity and device keys come from seeds.
    #[derive(Clone)]
    pub struct KeySigner {
        /// The device key.
        pub device: SigningKey,
        /// The identity key.
        pub identity: SigningKey,
        /// The device's certificate.
        pub cert: DeviceCertificate,
    }

    impl std::fmt::Debug for KeySigner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "KeySigner({})", self.cert.user_id.short())
        }
    }

    fn ed(sk: &SigningKey) -> Ed25519Key {
        #[allow(
            clippy::expect_used,
            reason = "test support: dalek keys are valid points"
        )]
        Ed25519Key::from_bytes(sk.verifying_key().as_bytes()).expect("valid key")
    }

    impl KeySigner {
        /// Device `device` of the user with identity seed `user`.
        pub fn new(user: u64, device: u64) -> Self {
            let seed = |tag: u8, n: u64| {
                let mut s = [tag; 32];
                s[..8].copy_from_slice(&n.to_be_bytes());
                s
            };
            let identity = SigningKey::from_bytes(&seed(1, user));
            let dev =
                SigningKey::from_bytes(&seed(2, user.wrapping_mul(1000).wrapping_add(device)));
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&device.to_be_bytes());
            let cert = certificate(
                UserId::from_key(ed(&identity)),
                DeviceId::from_random(id),
                DeviceKeys {
                    ed25519: ed(&dev),
                    curve25519: Curve25519Key::from_bytes(seed(3, user ^ device)),
                },
                Timestamp(1_700_000_000_000),
                &|b: &[u8]| Signature::from_bytes(identity.sign(b).to_bytes()),
            );
            Self {
                device: dev,
                identity,
                cert,
            }
        }

        /// The user.
        pub fn user(&self) -> UserId {
            self.cert.user_id
        }
    }

    impl SpaceSigner for KeySigner {
        fn certificate(&self) -> &DeviceCertificate {
            &self.cert
        }

        fn sign(&self, canonical_bytes: &[u8]) -> Signature {
            Signature::from_bytes(self.device.sign(canonical_bytes).to_bytes())
        }
    }
}

#[cfg(test)]
mod tests;
