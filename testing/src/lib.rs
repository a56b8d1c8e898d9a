//! Shared test helpers, and the deterministic simulated network of node machines
//! ([`sim`], docs/simulation.md).

pub mod sim;
