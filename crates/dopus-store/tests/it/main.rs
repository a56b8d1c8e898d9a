//! Integration tests of the SQLCipher store through its public API (one test binary).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed expectation is a test failure"
)]

mod at_rest;
mod conformance;
mod crash;
mod differential;
mod lifecycle;

use dopus_store::{KdfParams, SqliteStore};
use std::collections::BTreeMap;
use std::path::Path;

pub const PASSPHRASE: &str = "correct horse battery staple";

/// A fresh store in a temporary directory (cheap KDF); the directory lives as long as the guard.
pub fn temp_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::create(
        &dir.path().join("store"),
        PASSPHRASE,
        KdfParams::INSECURE_FOR_TESTS,
    )
    .unwrap();
    (store, dir)
}

/// Every file in `dir` with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
