//! Device identifiers: one per install of the app under a user.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The name of one device (one install) of a user.
///
/// 1 to 64 characters from `[A-Za-z0-9_-]`; new devices get 16 random bytes in lowercase hex.
/// It is chosen by the device itself and is only meaningful together with a [`crate::UserId`]:
/// the device certificate signed by the identity key binds the two.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

/// Why a string is not a [`DeviceId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    /// Empty or longer than 64 characters.
    #[error("a device id must be 1 to 64 characters long")]
    Length,
    /// Contains a character outside `[A-Za-z0-9_-]`.
    #[error("a device id may only contain letters, digits, '_' and '-'")]
    Character,
}

impl DeviceId {
    /// Longest accepted device id.
    pub const MAX_LEN: usize = 64;

    /// A device id from 16 random bytes (the caller supplies the randomness).
    pub fn from_random(bytes: [u8; 16]) -> Self {
        let mut s = String::with_capacity(32);
        for b in bytes {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Self(s)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(DeviceIdError::Length);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(DeviceIdError::Character);
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for DeviceId {
    type Error = DeviceIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeviceId> for String {
    fn from(d: DeviceId) -> String {
        d.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_hex_and_parse_back() {
        let id = DeviceId::from_random([0xab; 16]);
        assert_eq!(id.as_str(), "ab".repeat(16));
        assert_eq!(id.as_str().parse::<DeviceId>(), Ok(id));
    }

    #[test]
    fn refuses_bad_ids() {
        assert_eq!("".parse::<DeviceId>(), Err(DeviceIdError::Length));
        assert_eq!(
            "a".repeat(65).parse::<DeviceId>(),
            Err(DeviceIdError::Length)
        );
        assert_eq!("a b".parse::<DeviceId>(), Err(DeviceIdError::Character));
        assert_eq!("é".parse::<DeviceId>(), Err(DeviceIdError::Character));
        assert!(serde_json::from_str::<DeviceId>("\"../etc\"").is_err());
    }
}
