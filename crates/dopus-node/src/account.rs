//! Creating and loading this node's account: the identity key, the device and the store that
//! holds them. Shared by the offline CLI commands and the runtime.

use anyhow::Context;
use dopus_core::identity::{Device, Identity, PickleKey, SecureRandom};
use dopus_core::store::{AccountRecord, Change, Pickle, Store};
use dopus_store::{KdfParams, SqliteStore};
use dopus_types::{DeviceId, Timestamp};
use std::path::Path;

/// Randomness from the operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl SecureRandom for OsRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // The OS generator failing is unrecoverable for a node that must make keys: there is no
        // safe fallback, and continuing with predictable bytes would be far worse.
        #[allow(
            clippy::expect_used,
            reason = "no safe way to continue without OS randomness"
        )]
        getrandom::fill(dest).expect("the operating system's random generator failed");
    }
}

/// `n` random bytes from the OS.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRandom.fill_bytes(&mut out);
    out
}

/// The wall clock, as the core wants it.
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Environment switch for tests only: a cheap Argon2id cost so suites that create many
/// identities stay fast. Never set it for real use.
pub const INSECURE_FAST_KDF_ENV: &str = "DISCORDOPUS_INSECURE_FAST_KDF";

fn kdf_params() -> KdfParams {
    if std::env::var_os(INSECURE_FAST_KDF_ENV).is_some_and(|v| v == "1") {
        KdfParams::INSECURE_FOR_TESTS
    } else {
        KdfParams::DEFAULT
    }
}

/// The core's pickle key from the store's.
pub fn core_pickle_key(store: &SqliteStore) -> PickleKey {
    PickleKey::from_bytes(*store.pickle_key().as_bytes())
}

/// Creates the store, the identity and this device; returns the open store and the account.
pub fn create(
    dir: &Path,
    display_name: &str,
    passphrase: &str,
) -> anyhow::Result<(SqliteStore, AccountRecord, Identity, Device)> {
    let name = display_name.trim();
    if name.is_empty() || name.len() > 128 {
        anyhow::bail!("the display name must be 1 to 128 bytes");
    }
    crate::paths::ensure_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut store = SqliteStore::create(dir, passphrase, kdf_params())?;
    let mut rng = OsRandom;
    let identity = Identity::generate(&mut rng)?;
    let device = Device::new(&identity, DeviceId::from_random(random_bytes()), now());
    let key = core_pickle_key(&store);
    let certificate = device
        .certificate()
        .context("a new device is always certified")?;
    let record = AccountRecord {
        user_id: identity.user_id(),
        identity_pickle: Pickle::new(identity.pickle(&key, &mut rng)),
        device_id: device.device_id().clone(),
        device_keys: device.keys(),
        account_pickle: Pickle::new(device.pickle(&key, &mut rng)),
        certificate_json: serde_json::to_string(certificate)?,
        display_name: name.to_owned(),
        created_at: now(),
    };
    store.apply_one(Change::SaveAccount(record.clone()))?;
    Ok((store, record, identity, device))
}

/// Opens the store and loads the account.
pub fn open(dir: &Path, passphrase: &str) -> anyhow::Result<(SqliteStore, AccountRecord)> {
    if !SqliteStore::exists(dir) {
        anyhow::bail!(
            "no identity in {}: create one with `discordopus id create --name NAME`",
            dir.display()
        );
    }
    let store = SqliteStore::open(dir, passphrase)?;
    let account = store
        .account()?
        .context("the store has no account (it was created but never finished)")?;
    Ok((store, account))
}

/// A short fingerprint of an identity key for reading aloud: SHA-256, first 20 bytes, as 8 groups
/// of 5 hexadecimal digits.
pub fn fingerprint(key: &dopus_types::Ed25519Key) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    hex.as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
