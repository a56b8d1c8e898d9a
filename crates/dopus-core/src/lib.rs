#![doc = include_str!("../README.md")]

pub mod e2e;
pub mod identity;
pub mod store;
pub mod verification;
