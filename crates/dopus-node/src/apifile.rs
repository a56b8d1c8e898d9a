//! `api.json`: how local tools (the CLI, scripts, the demo) find a running node's API.

use crate::paths::{API_FILE, write_private_file};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of the api.json format.
pub const API_FILE_VERSION: u32 = 1;

/// The contents of `<data-dir>/api.json`.
#[derive(Clone, Serialize, Deserialize)]
pub struct ApiFile {
    /// Format version.
    pub version: u32,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The per-launch bearer token.
    pub token: String,
    /// Process id of the node, to tell a stale file from a live node.
    pub pid: u32,
}

impl std::fmt::Debug for ApiFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiFile")
            .field("url", &self.url)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl ApiFile {
    /// Writes the file (owner-only, atomically).
    pub fn write(&self, data_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_private_file(&data_dir.join(API_FILE), &json)
    }

    /// Reads the file if present and well-formed.
    pub fn read(data_dir: &Path) -> Option<ApiFile> {
        let bytes = std::fs::read(data_dir.join(API_FILE)).ok()?;
        let file: ApiFile = serde_json::from_slice(&bytes).ok()?;
        (file.version == API_FILE_VERSION).then_some(file)
    }

    /// Removes the file, but only if it is still ours (another node may have replaced it).
    pub fn remove_if_ours(data_dir: &Path, token: &str) {
        if Self::read(data_dir).is_some_and(|f| f.token == token) {
            let _ = std::fs::remove_file(data_dir.join(API_FILE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_the_token_out_of_debug() {
        let dir = tempfile::tempdir().unwrap();
        let f = ApiFile {
            version: API_FILE_VERSION,
            url: "http://127.0.0.1:1".into(),
            token: "secret-token".into(),
            pid: 7,
        };
        f.write(dir.path()).unwrap();
        let back = ApiFile::read(dir.path()).unwrap();
        assert_eq!(back.token, "secret-token");
        assert!(!format!("{back:?}").contains("secret"));
        ApiFile::remove_if_ours(dir.path(), "other");
        assert!(ApiFile::read(dir.path()).is_some());
        ApiFile::remove_if_ours(dir.path(), "secret-token");
        assert!(ApiFile::read(dir.path()).is_none());
    }
}
