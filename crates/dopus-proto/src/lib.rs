#![doc = include_str!("../README.md")]

pub mod bundle;
pub mod canonical;
pub mod channel;
pub mod content;
pub mod peer;
pub mod signaling;
pub mod space;
pub mod stun;
pub mod transfer;
