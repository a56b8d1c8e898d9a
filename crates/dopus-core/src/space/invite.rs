//! Invites: making one, asking to join with one, and admitting a joiner.
//!
//! Protocol flow:
//! - a member with the create-invite permission calls [`new_invite`]: 32 random bytes become
//!   the secret in the [`InviteCode`] (shown as text and QR), and the Ed25519 key derived from
//!   the secret (HKDF-SHA256, info [`INVITE_KEY_CONTEXT`]) goes into the `invite_create` op;
//! - the joiner parses the code and sends [`join_request`] over Olm to the inviter (or any
//!   online member who may admit): its device certificate, the time, and the derived key's
//!   signature over both, which proves the secret without revealing it;
//! - the member runs [`admit`] against its current state and, if it passes, authors the
//!   returned `join` op. Every replica checks the proof again when it applies the op.
//!
//! Max uses are counted over the joins the admitting member has seen, so two members admitting
//! concurrently can overshoot the limit (docs/spaces.md); revocation and expiry are checked by
//! every replica at the point the join applies.

use super::state::SpaceState;
use crate::identity::pickle::SecureRandom;
use dopus_proto::bundle::DeviceCertificate;
use dopus_proto::peer::PeerAddress;
use dopus_proto::space::{
    InviteCode, InviteSecret, JoinRefusal, OpBody, Permissions, RoleId, SpaceContent,
    join_proof_bytes,
};
use dopus_types::{Ed25519Key, Signature, SpaceId, Timestamp, UserId};
use ed25519_dalek::{Signer, SigningKey};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// HKDF info string that turns an invite secret into its Ed25519 seed.
pub const INVITE_KEY_CONTEXT: &str = "dopus/v1/space-invite-key";

/// A fresh invite: show `code`, author `body`.
#[derive(Debug, Clone)]
pub struct NewInvite {
    /// The code to hand out (its secret is the only copy: it is not stored).
    pub code: InviteCode,
    /// The `invite_create` op body to author.
    pub body: OpBody,
}

fn signing_key(secret: &InviteSecret) -> SigningKey {
    let hk = Hkdf::<Sha256>::new(None, &secret.0);
    let mut seed = Zeroizing::new([0u8; 32]);
    #[allow(
        clippy::expect_used,
        reason = "32 bytes is within HKDF-SHA256's output limit"
    )]
    hk.expand(INVITE_KEY_CONTEXT.as_bytes(), seed.as_mut_slice())
        .expect("32 bytes fit HKDF-SHA256");
    SigningKey::from_bytes(&seed)
}

/// The public key derived from an invite secret (what the `invite_create` op carries).
pub fn invite_key(secret: &InviteSecret) -> Ed25519Key {
    #[allow(
        clippy::expect_used,
        reason = "a dalek signing key's public half is a valid point"
    )]
    Ed25519Key::from_bytes(signing_key(secret).verifying_key().as_bytes())
        .expect("a derived key is valid")
}

/// Makes an invite for `space` by `inviter`.
#[allow(clippy::too_many_arguments, reason = "one argument per invite setting")]
pub fn new_invite(
    space: SpaceId,
    inviter: UserId,
    rng: &mut dyn SecureRandom,
    max_uses: Option<u32>,
    expires_at: Option<Timestamp>,
    role: Option<RoleId>,
    relay: Option<String>,
) -> NewInvite {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let secret = InviteSecret(secret);
    let body = OpBody::InviteCreate {
        invite_key: invite_key(&secret),
        max_uses,
        expires_at,
        role,
    };
    NewInvite {
        code: InviteCode {
            space,
            secret,
            inviter,
            expires_at,
            max_uses,
            relay,
            admitters: Vec::new(),
        },
        body,
    }
}

/// Whether the code itself says the invite has expired (checked before contacting anyone; the
/// member who admits checks again against the log).
pub fn code_expired(code: &InviteCode, now: Timestamp) -> bool {
    code.expires_at.is_some_and(|t| now > t)
}

/// The join request a joiner sends over Olm to a member of `code.space`.
pub fn join_request(code: &InviteCode, joiner: &DeviceCertificate, now: Timestamp) -> SpaceContent {
    let key = signing_key(&code.secret);
    let invite_key = invite_key(&code.secret);
    let bytes = join_proof_bytes(&code.space, &invite_key, joiner, now);
    SpaceContent::SpaceJoinRequest {
        space: code.space,
        invite_key,
        certificate: joiner.clone(),
        requested_at: now,
        proof: Signature::from_bytes(key.sign(&bytes).to_bytes()),
    }
}

/// Decides a join request that arrived over Olm from `olm_sender`, as member `admitter` at
/// `now`. On success returns the `join` op body to author (and send the log to the joiner).
pub fn admit(
    state: &SpaceState,
    admitter: &UserId,
    olm_sender: &PeerAddress,
    request: &SpaceContent,
    now: Timestamp,
) -> Result<OpBody, JoinRefusal> {
    let SpaceContent::SpaceJoinRequest {
        space,
        invite_key,
        certificate,
        requested_at,
        proof,
    } = request
    else {
        return Err(JoinRefusal::BadProof);
    };
    if space != state.id() {
        return Err(JoinRefusal::UnknownInvite);
    }
    // The request must come from the device it names, certified by the user it names.
    if certificate.user_id != olm_sender.user
        || certificate.device_id != olm_sender.device
        || certificate.verify(&certificate.user_id).is_err()
    {
        return Err(JoinRefusal::BadProof);
    }
    if !state
        .base_permissions(admitter)
        .contains(Permissions::CREATE_INVITE)
    {
        return Err(JoinRefusal::NotAllowed);
    }
    let invite = state
        .invite_by_key(invite_key)
        .ok_or(JoinRefusal::UnknownInvite)?;
    let bytes = join_proof_bytes(space, invite_key, certificate, *requested_at);
    invite_key
        .verify(&bytes, proof)
        .map_err(|_| JoinRefusal::BadProof)?;
    // Several members may be asked at once: whoever sees the joiner in already says so
    // (the joiner takes it as accepted), whatever the invite's state now.
    if state.is_member(&certificate.user_id) {
        return Err(JoinRefusal::AlreadyMember);
    }
    if invite.revoked {
        return Err(JoinRefusal::Revoked);
    }
    if invite
        .expires_at
        .is_some_and(|t| now > t || *requested_at > t)
    {
        return Err(JoinRefusal::Expired);
    }
    if invite
        .max_uses
        .is_some_and(|max| invite.joins.len() >= max as usize)
    {
        return Err(JoinRefusal::Exhausted);
    }
    let user = certificate.user_id;
    if state.is_banned(&user) {
        return Err(JoinRefusal::Banned);
    }
    if state.is_member(&user) {
        return Err(JoinRefusal::AlreadyMember);
    }
    Ok(OpBody::Join {
        invite: invite.id,
        joiner: Box::new(certificate.clone()),
        requested_at: *requested_at,
        proof: *proof,
    })
}
