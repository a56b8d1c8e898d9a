#![doc = include_str!("../README.md")]

pub mod chat;
pub mod e2e;
pub mod identity;
pub mod space;
pub mod store;
pub mod transfer;
pub mod verification;
