//! Tests of the control log, its resolution and invites. The Megolm tests are in `megolm.rs`.

mod bad_input;
pub(super) mod harness;
mod permutation;
mod scenarios;
mod simulation;
