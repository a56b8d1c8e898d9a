//! Integration tests: real str0m connections over real UDP sockets on 127.0.0.1, with the
//! signaling replaced by an in-memory relay.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;
mod connect;
mod lifecycle;
mod media;
mod netns;
mod privacy;
mod relay;
mod security;
mod stun;
mod turn;
