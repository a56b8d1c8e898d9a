#![doc = include_str!("../README.md")]

pub mod chat;
pub mod contacts;
pub mod e2e;
pub mod identity;
pub mod machine;
pub mod outbox;
pub mod outgoing;
pub mod space;
pub mod store;
pub mod transfer;
pub mod verification;
