//! The key file `store.key`: a small versioned JSON document beside the database that holds
//! the Argon2id parameters and the wrapped master key. It holds no secret in the clear; without
//! the passphrase it is useless.
//!
//! ```json
//! {
//!   "format": "dopus-store-key",
//!   "version": 1,
//!   "kdf": { "algorithm": "argon2id", "argon2_version": 19,
//!            "m_cost_kib": 65536, "t_cost": 3, "p_cost": 1, "salt": "<base64, 16 bytes>" },
//!   "wrapped_key": { "algorithm": "xchacha20poly1305",
//!                    "nonce": "<base64, 24 bytes>", "ciphertext": "<base64, 48 bytes>" }
//! }
//! ```
//!
//! Written atomically (temporary file, fsync, rename, fsync of the directory), so a crash
//! leaves either the old file or the new one, never a torn one.

use crate::keyring::{self, KdfParams, KeyringError, Secret};
use dopus_types::{b64_decode, b64_encode};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::Path;

const FORMAT: &str = "dopus-store-key";
/// The key file version this build writes and reads.
pub const KEY_FILE_VERSION: u32 = 1;
const KDF_ALGORITHM: &str = "argon2id";
const ARGON2_VERSION: u32 = 0x13;
const WRAP_ALGORITHM: &str = "xchacha20poly1305";

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("cannot read or write the key file")]
    Io(#[from] std::io::Error),
    /// The file is not a well-formed key file (names the part that is wrong).
    #[error("the key file is corrupt: {0}")]
    Corrupt(&'static str),
    /// The file was written by a newer version of DiscordOpus.
    #[error(
        "the key file has version {found}, this build supports up to {supported}: update DiscordOpus"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u64,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The KDF parameters are outside the accepted bounds.
    #[error("the key file asks for Argon2id parameters outside the accepted bounds")]
    UnsupportedParams,
    /// Deriving or unwrapping failed.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    format: String,
    version: u32,
    kdf: KdfJson,
    wrapped_key: WrappedJson,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfJson {
    algorithm: String,
    argon2_version: u32,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrappedJson {
    algorithm: String,
    nonce: String,
    ciphertext: String,
}

/// A parsed key file.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct KeyFile {
    pub params: KdfParams,
    pub salt: [u8; 16],
    pub nonce: [u8; 24],
    pub ciphertext: Vec<u8>,
}

impl KeyFile {
    /// Wraps `master` under `passphrase` with fresh salt and nonce.
    pub fn seal(
        master: &Secret,
        passphrase: &[u8],
        params: KdfParams,
    ) -> Result<Self, KeyFileError> {
        if !params.is_supported() {
            return Err(KeyFileError::UnsupportedParams);
        }
        let salt = keyring::random_bytes::<16>().map_err(|_| KeyringError::Random)?;
        let nonce = keyring::random_bytes::<24>().map_err(|_| KeyringError::Random)?;
        let wk = keyring::wrapping_key(passphrase, &salt, params)?;
        let mut file = KeyFile {
            params,
            salt,
            nonce,
            ciphertext: Vec::new(),
        };
        file.ciphertext = keyring::wrap(&wk, &nonce, master, file.aad().as_bytes())?;
        Ok(file)
    }

    /// Recovers the master key; `WrongPassphrase` when it does not authenticate.
    pub fn open(&self, passphrase: &[u8]) -> Result<Secret, KeyFileError> {
        let wk = keyring::wrapping_key(passphrase, &self.salt, self.params)?;
        Ok(keyring::unwrap(
            &wk,
            &self.nonce,
            &self.ciphertext,
            self.aad().as_bytes(),
        )?)
    }

    /// Everything in the file except the ciphertext, in one canonical string.
    fn aad(&self) -> String {
        format!(
            "{FORMAT}/v{KEY_FILE_VERSION}/{KDF_ALGORITHM}/{ARGON2_VERSION}/{}/{}/{}/{}/{WRAP_ALGORITHM}/{}",
            self.params.m_cost_kib,
            self.params.t_cost,
            self.params.p_cost,
            b64_encode(&self.salt),
            b64_encode(&self.nonce),
        )
    }

    pub fn to_json(&self) -> String {
        let json = KeyFileJson {
            format: FORMAT.into(),
            version: KEY_FILE_VERSION,
            kdf: KdfJson {
                algorithm: KDF_ALGORITHM.into(),
                argon2_version: ARGON2_VERSION,
                m_cost_kib: self.params.m_cost_kib,
                t_cost: self.params.t_cost,
                p_cost: self.params.p_cost,
                salt: b64_encode(&self.salt),
            },
            wrapped_key: WrappedJson {
                algorithm: WRAP_ALGORITHM.into(),
                nonce: b64_encode(&self.nonce),
                ciphertext: b64_encode(&self.ciphertext),
            },
        };
        // Serialising plain strings and integers cannot fail.
        #[allow(
            clippy::expect_used,
            reason = "a struct of strings and integers always serialises"
        )]
        let mut text = serde_json::to_string_pretty(&json).expect("key file serialises");
        text.push('\n');
        text
    }

    pub fn from_json(text: &str) -> Result<Self, KeyFileError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| KeyFileError::Corrupt("not JSON"))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(KeyFileError::Corrupt("not a DiscordOpus store key file"));
        }
        let version = value
            .get("version")
            .and_then(|v| v.as_u64())
            .ok_or(KeyFileError::Corrupt("version"))?;
        if version != u64::from(KEY_FILE_VERSION) {
            return Err(KeyFileError::UnsupportedVersion {
                found: version,
                supported: KEY_FILE_VERSION,
            });
        }
        let json: KeyFileJson =
            serde_json::from_value(value).map_err(|_| KeyFileError::Corrupt("fields"))?;
        if json.kdf.algorithm != KDF_ALGORITHM || json.kdf.argon2_version != ARGON2_VERSION {
            return Err(KeyFileError::Corrupt("kdf algorithm"));
        }
        if json.wrapped_key.algorithm != WRAP_ALGORITHM {
            return Err(KeyFileError::Corrupt("wrap algorithm"));
        }
        let params = KdfParams {
            m_cost_kib: json.kdf.m_cost_kib,
            t_cost: json.kdf.t_cost,
            p_cost: json.kdf.p_cost,
        };
        if !params.is_supported() {
            return Err(KeyFileError::UnsupportedParams);
        }
        let salt = fixed::<16>(&json.kdf.salt, "salt")?;
        let nonce = fixed::<24>(&json.wrapped_key.nonce, "nonce")?;
        let ciphertext = b64_decode(&json.wrapped_key.ciphertext)
            .map_err(|_| KeyFileError::Corrupt("ciphertext"))?;
        if ciphertext.len() != 48 {
            return Err(KeyFileError::Corrupt("ciphertext"));
        }
        Ok(KeyFile {
            params,
            salt,
            nonce,
            ciphertext,
        })
    }

    pub fn read(path: &Path) -> Result<Self, KeyFileError> {
        let meta = fs::metadata(path)?;
        // A key file is about 400 bytes; refuse to slurp something huge.
        if meta.len() > 64 * 1024 {
            return Err(KeyFileError::Corrupt("too large"));
        }
        let text = fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => KeyFileError::Corrupt("not UTF-8"),
            _ => KeyFileError::Io(e),
        })?;
        Self::from_json(&text)
    }

    /// Replaces (or creates) the file at `path` atomically.
    pub fn write_atomic(&self, path: &Path) -> Result<(), KeyFileError> {
        let dir = path
            .parent()
            .ok_or(KeyFileError::Corrupt("key file path has no directory"))?;
        let tmp = path.with_extension("key.tmp");
        {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp)?;
            file.write_all(self.to_json().as_bytes())?;
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        sync_dir(dir)?;
        Ok(())
    }
}

fn fixed<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], KeyFileError> {
    let bytes = b64_decode(text).map_err(|_| KeyFileError::Corrupt(what))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyFileError::Corrupt(what))
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> (Secret, KeyFile) {
        let master = keyring::random_secret().unwrap();
        let file = KeyFile::seal(&master, b"hunter2", KdfParams::INSECURE_FOR_TESTS).unwrap();
        (master, file)
    }

    #[test]
    fn json_round_trips_and_opens() {
        let (master, file) = sealed();
        let text = file.to_json();
        assert!(!text.contains("hunter2"));
        let parsed = KeyFile::from_json(&text).unwrap();
        assert_eq!(parsed, file);
        assert_eq!(*parsed.open(b"hunter2").unwrap(), *master);
        assert!(matches!(
            parsed.open(b"hunter3"),
            Err(KeyFileError::Keyring(KeyringError::WrongPassphrase))
        ));
    }

    #[test]
    fn tampered_parameters_fail_to_unwrap() {
        let (_, file) = sealed();
        let mut tampered = file.clone();
        tampered.params.t_cost = 2;
        assert!(matches!(
            tampered.open(b"hunter2"),
            Err(KeyFileError::Keyring(KeyringError::WrongPassphrase))
        ));
        let mut tampered = file;
        tampered.salt[0] ^= 1;
        assert!(tampered.open(b"hunter2").is_err());
    }

    #[test]
    fn rejects_corrupt_and_future_files() {
        let (_, file) = sealed();
        let good = file.to_json();
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "corrupt"),
            ("{".into(), "corrupt"),
            ("[]".into(), "corrupt"),
            (good.replace("dopus-store-key", "other"), "corrupt"),
            (good.replace("\"version\": 1", "\"version\": 2"), "version"),
            (
                good.replace("\"version\": 1", "\"version\": \"1\""),
                "corrupt",
            ),
            (good.replace("argon2id", "scrypt"), "corrupt"),
            (
                good.replace("\"t_cost\": 1", "\"t_cost\": 100000"),
                "params",
            ),
            (
                good.replace("\"format\"", "\"extra\": 1, \"format\""),
                "corrupt",
            ),
            (good.replace("\"salt\": \"", "\"salt\": \"AA"), "corrupt"),
        ];
        for (text, expected) in cases {
            let err = KeyFile::from_json(&text).unwrap_err();
            let ok = match expected {
                "corrupt" => matches!(err, KeyFileError::Corrupt(_)),
                "version" => matches!(
                    err,
                    KeyFileError::UnsupportedVersion {
                        found: 2,
                        supported: 1
                    }
                ),
                _ => matches!(err, KeyFileError::UnsupportedParams),
            };
            assert!(ok, "{text:?} gave {err:?}");
        }
    }

    /// The on-disk format: a diff here means a new key file version.
    #[test]
    fn key_file_format_snapshot() {
        let file = KeyFile {
            params: KdfParams::DEFAULT,
            salt: [1; 16],
            nonce: [2; 24],
            ciphertext: vec![3; 48],
        };
        insta::assert_snapshot!(file.to_json());
        assert_eq!(KeyFile::from_json(&file.to_json()).unwrap(), file);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let (_, a) = sealed();
        let (_, b) = sealed();
        a.write_atomic(&path).unwrap();
        b.write_atomic(&path).unwrap();
        assert_eq!(KeyFile::read(&path).unwrap(), b);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("store.key")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
