//! Integration tests: the real server on an ephemeral loopback port, driven by the real client
//! (`dopus-signaling`) or, where a test needs to misbehave, by a raw WebSocket.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "integration tests")]

mod common;

mod auth;
mod closing;
mod coturn;
mod directory;
mod limits;
mod mailbox;
mod ops;
mod presence;
mod redis;
mod relay;
mod turn;
