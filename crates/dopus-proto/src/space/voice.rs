//! Voice channel presence: "this device is in voice channel X of space S until T", signed by
//! the device and sent inside Olm to the channel's members (docs/media.md, "Voice channels").
//!
//! Protocol flow:
//! - joining sends a [`VoicePresence`] with `channel = Some(..)` to every member who may view the
//!   channel, and again every refresh interval with the next sequence number;
//! - leaving sends one with `channel = None` (signed like the others);
//! - a receiver keeps the newest presence per member (higher `seq` from the same device wins),
//!   until `expires_at` (capped by its own clock) or a leave; it never stores it.
//!
//! Olm already authenticates the sending device; the signature binds every field to the
//! device key as well, so a presence taken out of its envelope (a log, a bug report) still says
//! who wrote it and cannot be edited.

use crate::canonical::signing_bytes;
use crate::peer::PeerError;
use dopus_types::{ChannelId, DeviceId, Signature, SpaceId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

/// The version of [`VoicePresence`] this code writes and reads.
pub const VOICE_PRESENCE_VERSION: u32 = 1;
/// Context of a device's signature over its voice presence.
pub const VOICE_PRESENCE_CONTEXT: &str = "dopus/v1/voice-presence";
/// Longest a presence may claim to last (`expires_at - sent_at`).
pub const MAX_VOICE_TTL_MS: u64 = 120_000;

/// A device's voice channel presence in one space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoicePresence {
    /// [`VOICE_PRESENCE_VERSION`].
    pub v: u32,
    /// The space.
    pub space: SpaceId,
    /// The voice channel the device is in; `None`: it left.
    pub channel: Option<ChannelId>,
    /// Whose device (the Olm sender must be this user's device).
    pub user: UserId,
    /// Which device.
    pub device: DeviceId,
    /// Increases with every presence the device sends (refreshes, flag changes, leave).
    pub seq: u64,
    /// When it was sent (the sender's clock).
    pub sent_at: Timestamp,
    /// When it lapses unless refreshed (at most [`MAX_VOICE_TTL_MS`] after `sent_at`).
    pub expires_at: Timestamp,
    /// The member muted their microphone.
    #[serde(default)]
    pub muted: bool,
    /// The member deafened themselves (hears nothing; muted too).
    #[serde(default)]
    pub deafened: bool,
    /// The device key's signature over [`VoicePresence::signing_bytes`].
    pub signature: Signature,
}

impl VoicePresence {
    /// The bytes the device signs: every field but the signature.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let none = [0u8; 0];
        let channel = self.channel.as_ref().map_or(&none[..], |c| c.as_bytes());
        signing_bytes(
            VOICE_PRESENCE_CONTEXT,
            &[
                &self.v.to_be_bytes(),
                self.space.as_bytes(),
                &[u8::from(self.channel.is_some())],
                channel,
                self.user.key().as_bytes(),
                self.device.as_str().as_bytes(),
                &self.seq.to_be_bytes(),
                &self.sent_at.as_millis().to_be_bytes(),
                &self.expires_at.as_millis().to_be_bytes(),
                &[u8::from(self.muted), u8::from(self.deafened)],
            ],
        )
    }

    /// Checks the documented limits (the signature is checked by `dopus_core`, which knows
    /// the device's key).
    pub fn validate(&self) -> Result<(), PeerError> {
        if self.seq == 0 {
            return Err(PeerError::InvalidField { field: "seq" });
        }
        if self.expires_at <= self.sent_at
            || self.expires_at.millis_since(self.sent_at) > MAX_VOICE_TTL_MS
        {
            return Err(PeerError::InvalidField {
                field: "expires_at",
            });
        }
        Ok(())
    }
}
