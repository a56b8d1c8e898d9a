//! Invite codes: what an invite link or QR code carries.
//!
//! Text form: bech32m with the human-readable part [`INVITE_CODE_HRP`] (`dinvite1…`) over
//!
//! ```text
//! version (1 byte, = 1) | space id (32) | invite secret (32) | inviter user key (32)
//! | flags (1 byte: 1 = expires_at, 2 = max_uses, 4 = relay, 8 = admitters)
//! | [expires_at: u64 BE ms] | [max_uses: u32 BE] | [relay: u8 length + UTF-8]
//! | [admitters: u8 count (1..=3) + count × user key (32)]
//! ```
//!
//! Admitters are other members the joiner may ask besides the inviter (any of them who is
//! online and may create invites writes the join).
//!
//! Decoding is strict: checksum, prefix, version, flags, exact length (no trailing bytes), and a
//! relay hint that is a `ws://` or `wss://` URL of printable ASCII. Expiry and maximum uses in
//! the code are for display before joining; the invite op in the log is what counts.
//!
//! The secret never goes into the log: the invite op carries the public key derived from it
//! (`dopus_core::space::invite`), and a joiner proves the secret by signing its join request
//! with the derived key.

use dopus_types::{Ed25519Key, SpaceId, Timestamp, UserId};
use std::fmt;

/// The human-readable part of an invite code.
pub const INVITE_CODE_HRP: &str = "dinvite";
/// Longest relay hint, in bytes.
pub const MAX_RELAY_BYTES: usize = 200;
/// Most admitters (besides the inviter) a code names.
pub const MAX_ADMITTERS: usize = 3;

const VERSION: u8 = 1;
const FLAG_EXPIRES: u8 = 1;
const FLAG_MAX_USES: u8 = 2;
const FLAG_RELAY: u8 = 4;
const FLAG_ADMITTERS: u8 = 8;
const FIXED_LEN: usize = 1 + 32 + 32 + 32 + 1;

/// The 32 random bytes an invite code hands out. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteSecret(pub [u8; 32]);

impl fmt::Debug for InviteSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteSecret(<redacted>)")
    }
}

/// Why a string is not an invite code. Never echoes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteCodeError {
    /// Not bech32m text at all.
    #[error("not an invite code (expected dinvite1…)")]
    Format,
    /// The checksum does not match: the code was mistyped or cut off.
    #[error("this invite code has a typo or is incomplete: its checksum does not match")]
    Checksum,
    /// A valid bech32m string for something else (a user id, a space id…).
    #[error("not an invite code: this is {found}")]
    Prefix {
        /// What it is instead, in words (never the input itself).
        found: &'static str,
    },
    /// A code format this build does not know.
    #[error("unsupported invite code version {0}")]
    UnsupportedVersion(u8),
    /// Wrong length, unknown flags or trailing bytes.
    #[error("this invite code is malformed")]
    Malformed,
    /// The inviter field is not a valid user key.
    #[error("this invite code names an invalid inviter")]
    Inviter,
    /// The relay hint is not a ws:// or wss:// URL of at most 200 printable ASCII bytes.
    #[error("this invite code's relay hint is invalid")]
    Relay,
}

/// What an invite link or QR code carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteCode {
    /// The space to join.
    pub space: SpaceId,
    /// The invite's secret.
    pub secret: InviteSecret,
    /// Who made the invite (the first member to ask to be admitted).
    pub inviter: UserId,
    /// When the invite expires, as the inviter set it.
    pub expires_at: Option<Timestamp>,
    /// How many joins it admits, as the inviter set it.
    pub max_uses: Option<u32>,
    /// A signaling server where the inviter can be reached (`wss://host:port`).
    pub relay: Option<String>,
    /// Other members who may admit the joiner (at most [`MAX_ADMITTERS`], never the
    /// inviter): asked together with the inviter.
    pub admitters: Vec<UserId>,
}

fn check_relay(relay: &str) -> Result<(), InviteCodeError> {
    let ok = relay.len() <= MAX_RELAY_BYTES
        && (relay.starts_with("wss://") || relay.starts_with("ws://"))
        && relay.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(InviteCodeError::Relay)
    }
}

impl InviteCode {
    /// The binary form (before bech32m).
    pub fn to_bytes(&self) -> Result<Vec<u8>, InviteCodeError> {
        let mut flags = 0;
        if self.expires_at.is_some() {
            flags |= FLAG_EXPIRES;
        }
        if self.max_uses.is_some() {
            flags |= FLAG_MAX_USES;
        }
        if let Some(r) = &self.relay {
            check_relay(r)?;
            flags |= FLAG_RELAY;
        }
        if self.admitters.len() > MAX_ADMITTERS {
            return Err(InviteCodeError::Malformed);
        }
        if !self.admitters.is_empty() {
            flags |= FLAG_ADMITTERS;
        }
        let mut out = Vec::with_capacity(FIXED_LEN + 8 + 4 + 1 + MAX_RELAY_BYTES);
        out.push(VERSION);
        out.extend_from_slice(self.space.as_bytes());
        out.extend_from_slice(&self.secret.0);
        out.extend_from_slice(self.inviter.key().as_bytes());
        out.push(flags);
        if let Some(t) = self.expires_at {
            out.extend_from_slice(&t.as_millis().to_be_bytes());
        }
        if let Some(n) = self.max_uses {
            out.extend_from_slice(&n.to_be_bytes());
        }
        if let Some(r) = &self.relay {
            // check_relay bounds it to 200 bytes.
            out.push(u8::try_from(r.len()).map_err(|_| InviteCodeError::Relay)?);
            out.extend_from_slice(r.as_bytes());
        }
        if !self.admitters.is_empty() {
            // At most MAX_ADMITTERS (checked above).
            out.push(u8::try_from(self.admitters.len()).map_err(|_| InviteCodeError::Malformed)?);
            for a in &self.admitters {
                out.extend_from_slice(a.key().as_bytes());
            }
        }
        Ok(out)
    }

    /// Parses the binary form strictly.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InviteCodeError> {
        let (&version, rest) = bytes.split_first().ok_or(InviteCodeError::Malformed)?;
        if version != VERSION {
            return Err(InviteCodeError::UnsupportedVersion(version));
        }
        if bytes.len() < FIXED_LEN {
            return Err(InviteCodeError::Malformed);
        }
        let take32 = |b: &[u8]| -> [u8; 32] {
            let mut a = [0u8; 32];
            a.copy_from_slice(&b[..32]);
            a
        };
        let space = SpaceId::from_bytes(take32(&rest[0..]));
        let secret = InviteSecret(take32(&rest[32..]));
        let inviter = Ed25519Key::from_bytes(&take32(&rest[64..]))
            .map(UserId::from_key)
            .map_err(|_| InviteCodeError::Inviter)?;
        let flags = rest[96];
        if flags & !(FLAG_EXPIRES | FLAG_MAX_USES | FLAG_RELAY | FLAG_ADMITTERS) != 0 {
            return Err(InviteCodeError::Malformed);
        }
        let mut tail = &rest[97..];
        let mut take = |n: usize| -> Result<&[u8], InviteCodeError> {
            if tail.len() < n {
                return Err(InviteCodeError::Malformed);
            }
            let (head, t) = tail.split_at(n);
            tail = t;
            Ok(head)
        };
        let expires_at = if flags & FLAG_EXPIRES != 0 {
            let mut b = [0u8; 8];
            b.copy_from_slice(take(8)?);
            Some(Timestamp(u64::from_be_bytes(b)))
        } else {
            None
        };
        let max_uses = if flags & FLAG_MAX_USES != 0 {
            let mut b = [0u8; 4];
            b.copy_from_slice(take(4)?);
            Some(u32::from_be_bytes(b))
        } else {
            None
        };
        let relay = if flags & FLAG_RELAY != 0 {
            let n = usize::from(take(1)?[0]);
            let text = std::str::from_utf8(take(n)?).map_err(|_| InviteCodeError::Relay)?;
            check_relay(text)?;
            Some(text.to_owned())
        } else {
            None
        };
        let mut admitters = Vec::new();
        if flags & FLAG_ADMITTERS != 0 {
            let n = usize::from(take(1)?[0]);
            if n == 0 || n > MAX_ADMITTERS {
                return Err(InviteCodeError::Malformed);
            }
            for _ in 0..n {
                let key = Ed25519Key::from_bytes(&take32(take(32)?))
                    .map_err(|_| InviteCodeError::Inviter)?;
                let user = UserId::from_key(key);
                if user == inviter || admitters.contains(&user) {
                    return Err(InviteCodeError::Malformed);
                }
                admitters.push(user);
            }
        }
        if !tail.is_empty() {
            return Err(InviteCodeError::Malformed);
        }
        Ok(Self {
            space,
            secret,
            inviter,
            expires_at,
            max_uses,
            relay,
            admitters,
        })
    }

    /// The printed form, `dinvite1…`, lowercase.
    pub fn to_text(&self) -> Result<String, InviteCodeError> {
        let bytes = self.to_bytes()?;
        // The HRP is a valid constant and the payload (at most ~320 bytes) is far below
        // bech32m's 1023-character code length.
        let hrp = bech32::Hrp::parse(INVITE_CODE_HRP).map_err(|_| InviteCodeError::Format)?;
        bech32::encode_lower::<bech32::Bech32m>(hrp, &bytes).map_err(|_| InviteCodeError::Format)
    }

    /// Parses the printed form in any letter case (surrounding whitespace and a
    /// `dopus:`/`dopus://invite/` link prefix are ignored), refusing typos.
    pub fn parse(text: &str) -> Result<Self, InviteCodeError> {
        use bech32::primitives::decode::{CheckedHrpstring, CheckedHrpstringError};
        let text = text.trim();
        let text = text
            .strip_prefix("dopus://invite/")
            .or_else(|| text.strip_prefix("dopus:"))
            .unwrap_or(text);
        let lower = text.to_ascii_lowercase();
        let checked = match CheckedHrpstring::new::<bech32::Bech32m>(&lower) {
            Ok(c) => c,
            Err(CheckedHrpstringError::Checksum(_)) => return Err(InviteCodeError::Checksum),
            Err(_) => return Err(InviteCodeError::Format),
        };
        if checked.hrp().as_str() != INVITE_CODE_HRP {
            let found = match checked.hrp().as_str() {
                "dopus" => "a user id",
                "dspace" => "a space id",
                "dchan" => "a channel id",
                _ => "some other code",
            };
            return Err(InviteCodeError::Prefix { found });
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        Self::from_bytes(&bytes)
    }
}
