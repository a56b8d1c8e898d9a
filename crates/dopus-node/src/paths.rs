//! Where a node keeps its files.

use std::path::{Path, PathBuf};

/// File the running node writes so local tools can find its API.
pub const API_FILE: &str = "api.json";

/// The data directory: `--data-dir`, else `$XDG_DATA_HOME/discordopus` (or the platform equivalent).
pub fn data_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    let base = dirs::data_dir().ok_or_else(|| {
        anyhow::anyhow!("cannot find a data directory for this user: pass --data-dir DIR")
    })?;
    Ok(base.join("discordopus"))
}

/// Creates the data directory with owner-only permissions if it does not exist.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (temp file + rename) with owner-only permissions.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
