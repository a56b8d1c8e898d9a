#![doc = include_str!("../README.md")]

mod backoff;
mod client;

pub use backoff::Backoff;
pub use client::{
    AckHandle, AuthSigner, ClientConfig, ClientError, ConnectionState, Event, Incoming,
    RelayOutcome, RelayStatus, SignalingClient,
};
pub use dopus_proto::signaling::{
    DeliveryKind, ErrorCode, IceServerInfo, Limits, PresenceEntry, Sender, Status,
};
