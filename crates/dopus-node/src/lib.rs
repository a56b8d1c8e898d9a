#![doc = include_str!("../README.md")]

pub mod account;
pub mod api;
pub mod apifile;
pub mod cli;
pub mod client;
pub mod launch;
pub mod local;
pub mod output;
pub mod passphrase;
pub mod paths;
pub mod preview;
pub mod remote;
pub mod remote_calls;
pub mod remote_spaces;
pub mod remote_voice;
pub mod runtime;
