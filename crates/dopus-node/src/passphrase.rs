//! Where the store passphrase comes from: `DISCORDOPUS_PASSPHRASE` for headless use, else a prompt.

use anyhow::{Context, bail};

/// Environment variable holding the passphrase for headless use.
pub const PASSPHRASE_ENV: &str = "DISCORDOPUS_PASSPHRASE";

/// The passphrase from the environment, if set and non-empty.
pub fn from_env() -> Option<String> {
    std::env::var(PASSPHRASE_ENV).ok().filter(|p| !p.is_empty())
}

/// The passphrase to unlock an existing store: the environment, else a terminal prompt.
pub fn for_unlock() -> anyhow::Result<String> {
    if let Some(p) = from_env() {
        return Ok(p);
    }
    rpassword::prompt_password("Passphrase: ")
        .with_context(|| format!("no terminal to ask for the passphrase: set {PASSPHRASE_ENV}"))
}

/// A new passphrase: the environment, else prompted twice on the terminal.
pub fn for_create() -> anyhow::Result<String> {
    if let Some(p) = from_env() {
        return Ok(p);
    }
    let first = rpassword::prompt_password("New passphrase: ")
        .with_context(|| format!("no terminal to ask for a passphrase: set {PASSPHRASE_ENV}"))?;
    if first.is_empty() {
        bail!("the passphrase must not be empty");
    }
    let second = rpassword::prompt_password("Repeat passphrase: ")?;
    if first != second {
        bail!("the two passphrases differ");
    }
    Ok(first)
}
