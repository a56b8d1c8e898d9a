#![doc = include_str!("../README.md")]

mod device;
mod ids;
mod keys;
mod redacted;
mod time;
mod user_id;

pub use device::{DeviceId, DeviceIdError};
pub use ids::{BlobHash, CallId, ChannelId, IdError, SpaceId};
pub use keys::{
    Curve25519Key, DeviceKeys, Ed25519Key, IdentityKey, KeyError, Signature, b64_decode, b64_encode,
};
pub use redacted::Redacted;
pub use time::Timestamp;
pub use user_id::{USER_ID_HRP, UserId, UserIdError};
