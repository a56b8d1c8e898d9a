//! The key hierarchy: one random master key, wrapped under the passphrase, and the keys
//! derived from it.
//!
//! ```text
//! passphrase ──Argon2id(salt, m, t, p)──▶ wrapping key ──XChaCha20-Poly1305──▶ wrapped master key
//!                                                                              (in store.key)
//! master key (32 random bytes)
//!   ├─HKDF-SHA256 "dopus/v1/sqlcipher"──▶ SQLCipher raw key (PRAGMA key = "x'…'")
//!   └─HKDF-SHA256 "dopus/v1/pickle"────▶ pickle key (vodozemac encrypted pickles)
//! ```
//!
//! The passphrase only ever wraps the master key, so changing it rewrites 100 bytes and never
//! re-encrypts the database, and the slow KDF runs once per unlock.

use argon2::{Algorithm, Argon2, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

/// Argon2id cost parameters. Stored in the key file, so a store keeps opening with the cost it
/// was created with even after the default changes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The cost for real stores: 64 MiB, 3 passes, 1 lane.
    ///
    /// Chosen by measurement on the project's reference machine (2 shared cores, see
    /// docs/benchmarks.md): 0.26 to 0.54 s to unlock with the optimised build, inside the 1 s
    /// budget. 64 MiB of memory per guess is what makes GPU guessing expensive; the OWASP
    /// minimum for Argon2id is 19 MiB with t = 2.
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    /// A nearly free cost for tests only: it protects nothing against guessing.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    /// Largest memory cost accepted from a key file (4 GiB): a tampered file must not make
    /// unlock allocate without bound.
    pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
    /// Largest pass count accepted from a key file.
    pub const MAX_T_COST: u32 = 64;
    /// Largest lane count accepted from a key file.
    pub const MAX_P_COST: u32 = 16;

    /// Whether these parameters are within what this build accepts.
    pub(crate) fn is_supported(&self) -> bool {
        self.t_cost >= 1
            && self.t_cost <= Self::MAX_T_COST
            && self.p_cost >= 1
            && self.p_cost <= Self::MAX_P_COST
            && self.m_cost_kib >= 8 * self.p_cost
            && self.m_cost_kib <= Self::MAX_M_COST_KIB
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A 32-byte secret that is wiped on drop and never printed.
pub(crate) type Secret = Zeroizing<[u8; 32]>;

/// Fills a new secret from the OS RNG.
pub(crate) fn random_secret() -> Result<Secret, getrandom::Error> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut())?;
    Ok(key)
}

/// Fills `N` random bytes (salts, nonces).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)?;
    Ok(out)
}

/// Why a key could not be derived or unwrapped.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// Argon2 refused the parameters.
    #[error("the Argon2id parameters are not usable")]
    Kdf,
    /// The wrapped key did not authenticate: the passphrase is wrong (or the key file was
    /// altered, which looks the same by design).
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The unwrapped key has the wrong length.
    #[error("the wrapped key has the wrong length")]
    Length,
    /// The OS random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// Derives the key that wraps the master key.
pub(crate) fn wrapping_key(
    passphrase: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<Secret, KeyringError> {
    let argon_params =
        argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
            .map_err(|_| KeyringError::Kdf)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|_| KeyringError::Kdf)?;
    Ok(out)
}

fn cipher(key: &Secret) -> Result<XChaCha20Poly1305, KeyringError> {
    let key: &chacha20poly1305::Key = key[..].try_into().map_err(|_| KeyringError::Length)?;
    Ok(XChaCha20Poly1305::new(key))
}

/// Encrypts the master key. `aad` binds the ciphertext to the key file's header (format,
/// version, KDF parameters, salt), so none of them can be swapped without failing unwrap.
pub(crate) fn wrap(
    wrapping_key: &Secret,
    nonce: &[u8; 24],
    master: &Secret,
    aad: &[u8],
) -> Result<Vec<u8>, KeyringError> {
    let cipher = cipher(wrapping_key)?;
    cipher
        .encrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: master.as_ref(),
                aad,
            },
        )
        .map_err(|_| KeyringError::Length)
}

/// Decrypts the master key.
pub(crate) fn unwrap(
    wrapping_key: &Secret,
    nonce: &[u8; 24],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Secret, KeyringError> {
    let cipher = cipher(wrapping_key)?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &XNonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| KeyringError::WrongPassphrase)?,
    );
    let bytes: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| KeyringError::Length)?;
    Ok(Zeroizing::new(bytes))
}

const SQLCIPHER_INFO: &[u8] = b"dopus/v1/sqlcipher";
const PICKLE_INFO: &[u8] = b"dopus/v1/pickle";

fn derive(master: &Secret, info: &[u8]) -> Secret {
    let hk = Hkdf::<Sha256>::new(None, master.as_ref());
    let mut out = Zeroizing::new([0u8; 32]);
    // Expanding 32 bytes from SHA-256 is always within HKDF's 255 * 32 byte limit.
    #[allow(
        clippy::expect_used,
        reason = "32 bytes is far below HKDF-SHA256's output limit"
    )]
    hk.expand(info, out.as_mut())
        .expect("32-byte HKDF output is valid");
    out
}

/// The SQLCipher raw key as the `PRAGMA key` literal: `x'<64 hex>'`, so SQLCipher skips its
/// own PBKDF2 and opening costs no extra KDF.
pub(crate) fn sqlcipher_key_literal(master: &Secret) -> Zeroizing<String> {
    let key = derive(master, SQLCIPHER_INFO);
    Zeroizing::new(format!("x'{}'", hex::encode(key.as_ref())))
}

/// The key vodozemac uses to encrypt account and session pickles.
///
/// Derived from the master key, so it changes only if the store is re-created; wiped on drop;
/// `Debug` never prints it.
#[derive(Clone)]
pub struct PickleKey(Secret);

impl PickleKey {
    pub(crate) fn derive(master: &Secret) -> Self {
        Self(derive(master, PICKLE_INFO))
    }

    /// The key bytes, for `pickle().encrypt(key)` and `from_encrypted(.., key)`.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for PickleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickleKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trips_and_binds_aad() {
        let master = random_secret().unwrap();
        let wk = wrapping_key(b"pass", &[1; 16], KdfParams::INSECURE_FOR_TESTS).unwrap();
        let nonce = [7u8; 24];
        let ct = wrap(&wk, &nonce, &master, b"header").unwrap();
        assert_eq!(ct.len(), 48);
        assert_eq!(*unwrap(&wk, &nonce, &ct, b"header").unwrap(), *master);
        assert!(matches!(
            unwrap(&wk, &nonce, &ct, b"header2"),
            Err(KeyringError::WrongPassphrase)
        ));
        let wrong = wrapping_key(b"pasS", &[1; 16], KdfParams::INSECURE_FOR_TESTS).unwrap();
        assert!(matches!(
            unwrap(&wrong, &nonce, &ct, b"header"),
            Err(KeyringError::WrongPassphrase)
        ));
    }

    #[test]
    fn derived_keys_are_distinct_and_stable() {
        let master = Zeroizing::new([9u8; 32]);
        let pickle = PickleKey::derive(&master);
        let sql = sqlcipher_key_literal(&master);
        assert_eq!(PickleKey::derive(&master).as_bytes(), pickle.as_bytes());
        assert!(sql.starts_with("x'") && sql.len() == 67);
        assert!(!sql.contains(&hex::encode(pickle.as_bytes())));
        assert_ne!(pickle.as_bytes(), &[9u8; 32]);
        assert_eq!(format!("{pickle:?}"), "PickleKey(<redacted>)");
    }

    #[test]
    fn refuses_unbounded_parameters() {
        assert!(KdfParams::DEFAULT.is_supported());
        assert!(KdfParams::INSECURE_FOR_TESTS.is_supported());
        for bad in [
            KdfParams {
                m_cost_kib: u32::MAX,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                t_cost: 0,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                p_cost: 1000,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                m_cost_kib: 8,
                t_cost: 1,
                p_cost: 2,
            },
        ] {
            assert!(!bad.is_supported(), "{bad:?}");
        }
    }
}
