//! Integration tests of the node: a real signaling server (in this process) and real
//! `discordopus` processes on loopback, driven through their local API and events stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "tests print seeds and diagnostics"
)]

mod api_auth;
mod calls;
mod chaos;
mod contacts;
mod files;
mod harness;
mod malicious;
mod messaging;
mod offline;
mod proxy;
mod recovery;
mod spaces;
mod spaces_live;
mod voice;
