//! SAS emoji verification of a contact's device (docs/e2e.md, "SAS verification").

use crate::peer::{Base64Bytes, MAX_SAS_MACS, MAX_TOKEN_BYTES, PeerError, check_token, limit_str};
use dopus_types::Curve25519Key;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a SAS verification was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelCode {
    /// A user cancelled, or said the emoji do not match.
    User,
    /// The verification took too long.
    Timeout,
    /// A step arrived that does not fit the current state.
    UnexpectedMessage,
    /// The other side's key does not match its commitment.
    MismatchedCommitment,
    /// A MAC did not verify: a key was substituted.
    KeyMismatch,
    /// A step was malformed.
    InvalidMessage,
    /// The transaction is unknown.
    UnknownTransaction,
}

/// One step of the SAS verification protocol (docs/e2e.md, "SAS verification").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerificationStep {
    /// The initiator proposes a verification.
    Start {
        /// The transaction id, chosen by the initiator.
        txn: String,
    },
    /// The responder accepts and commits to its SAS public key.
    Accept {
        /// The transaction id.
        txn: String,
        /// SHA-256 over the responder's SAS key and the transaction (docs/e2e.md).
        commitment: Base64Bytes,
    },
    /// A side's ephemeral SAS public key.
    Key {
        /// The transaction id.
        txn: String,
        /// The ephemeral Curve25519 key.
        key: Curve25519Key,
    },
    /// A side's MACs over its own keys, sent after its user confirmed the emoji.
    Mac {
        /// The transaction id.
        txn: String,
        /// Key id to MAC (base64) of that key.
        macs: BTreeMap<String, Base64Bytes>,
        /// MAC over the sorted, comma-joined key ids, so no key can be dropped.
        keys: Base64Bytes,
    },
    /// A side checked the other side's MACs and is done.
    Done {
        /// The transaction id.
        txn: String,
    },
    /// A side gives up.
    Cancel {
        /// The transaction id.
        txn: String,
        /// Why.
        code: CancelCode,
    },
}

impl VerificationStep {
    /// The transaction this step belongs to.
    pub fn txn(&self) -> &str {
        match self {
            VerificationStep::Start { txn }
            | VerificationStep::Accept { txn, .. }
            | VerificationStep::Key { txn, .. }
            | VerificationStep::Mac { txn, .. }
            | VerificationStep::Done { txn }
            | VerificationStep::Cancel { txn, .. } => txn,
        }
    }
}

impl VerificationStep {
    pub(crate) fn validate(&self) -> Result<(), PeerError> {
        check_token("txn", self.txn())?;
        match self {
            VerificationStep::Accept { commitment, .. } if commitment.0.len() != 32 => {
                Err(PeerError::InvalidField {
                    field: "commitment",
                })
            }
            VerificationStep::Mac { macs, keys, .. } => {
                if macs.is_empty() || macs.len() > MAX_SAS_MACS {
                    return Err(PeerError::FieldTooLong {
                        field: "macs",
                        limit: MAX_SAS_MACS,
                    });
                }
                for (id, mac) in macs {
                    limit_str("macs", id, MAX_TOKEN_BYTES * 2)?;
                    if mac.0.len() != 32 {
                        return Err(PeerError::InvalidField { field: "macs" });
                    }
                }
                if keys.0.len() != 32 {
                    return Err(PeerError::InvalidField { field: "keys" });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A verification content. Wire kind: `verification`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerificationContent {
    /// A SAS verification step.
    Verification {
        /// The step.
        step: VerificationStep,
    },
}

impl VerificationContent {
    /// The wire kinds of this subsystem.
    pub const KINDS: &'static [&'static str] = &["verification"];

    /// Checks the documented limits.
    pub fn validate(&self) -> Result<(), PeerError> {
        let VerificationContent::Verification { step } = self;
        step.validate()
    }

    /// The wire kind, safe to log.
    pub fn kind_name(&self) -> &'static str {
        "verification"
    }
}
