//! SAS (short authentication string) verification of one peer device, as a sans-IO state
//! machine over vodozemac's `Sas`. Its steps (`VerificationStep`) travel inside Olm
//! (`Content::Verification`), so the server sees none of them.
//!
//! Protocol flow (docs/e2e.md, "SAS verification"):
//! 1. initiator → `Start { txn }`;
//! 2. responder → `Accept { commitment }`, where the commitment is SHA-256 over the responder's
//!    ephemeral SAS key and the transaction (both parties, txn), so the responder is bound to its
//!    key before it sees the initiator's;
//! 3. initiator → `Key` (its ephemeral key); responder → `Key` (its key); the initiator checks
//!    the commitment;
//! 4. both show 7 emoji (and 3 decimals) derived from the shared secret with an info string that
//!    binds both users, devices, SAS keys and the transaction; the users compare them;
//! 5. after its user confirms, each side sends `Mac`: HMACs over its identity key and its device
//!    keys (key ids `identity`, `ed25519:<device>`, `curve25519:<device>`) plus a MAC over the
//!    list of key ids, each bound to sender, receiver and transaction;
//! 6. each side checks the other's MACs against the keys *it* holds for the peer (the user ID and
//!    the device certificate it verified), then sends `Done`.
//!
//! Either side may `Cancel` at any time; the whole exchange times out after
//! [`SAS_TIMEOUT_MS`].

use super::emoji::{EMOJI, Emoji};
use dopus_proto::canonical::signing_bytes;
use dopus_proto::peer::{Base64Bytes, CancelCode, VerificationStep, check_token};
use dopus_types::{Curve25519Key, DeviceId, DeviceKeys, Ed25519Key, Timestamp, UserId};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use vodozemac::sas::{EstablishedSas, Mac, Sas};

/// How long a verification may take from start to finish.
pub const SAS_TIMEOUT_MS: u64 = 10 * 60 * 1000;

const COMMITMENT_CONTEXT: &str = "dopus/v1/sas-commitment";
const SAS_INFO: &str = "DOPUS_SAS_V1";
const MAC_INFO: &str = "DOPUS_SAS_MAC_V1";
const KEY_IDS: &str = "KEY_IDS";

/// One side of a verification: the keys each side holds for itself and, for the peer, what it
/// verified earlier (the user ID and the device certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SasParty {
    /// The user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    /// The device's keys.
    pub keys: DeviceKeys,
}

/// Which side we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SasRole {
    /// We sent `Start`.
    Initiator,
    /// We answered a `Start`.
    Responder,
}

/// Where the verification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SasState {
    /// Initiator: `Start` sent, waiting for `Accept`.
    WaitingForAccept,
    /// Waiting for the other side's ephemeral key.
    WaitingForKey,
    /// Keys exchanged: show [`SasVerification::emoji`] and ask the user.
    ShowingSas,
    /// Our user confirmed and our MAC is sent; waiting for the other side's MAC.
    WaitingForMac,
    /// The other side's MACs verified: its keys are what we believed.
    Verified,
    /// Cancelled.
    Cancelled {
        /// Why.
        code: CancelCode,
        /// Whether we cancelled (else the other side did).
        by_us: bool,
    },
}

/// The device a successful verification vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDevice {
    /// The verified user.
    pub user: UserId,
    /// The verified device.
    pub device: DeviceId,
    /// The user's identity key (the user ID's key).
    pub identity_key: Ed25519Key,
    /// The device's keys.
    pub keys: DeviceKeys,
}

/// A call that does not fit the verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    /// The step belongs to another transaction: ignore it (it does not cancel this one).
    #[error("the step belongs to another verification")]
    WrongTransaction,
    /// The verification already finished (verified or cancelled).
    #[error("the verification is already finished")]
    Finished,
    /// The short authentication string is not available yet.
    #[error("the keys have not been exchanged yet")]
    NotReady,
    /// The transaction id is not a valid token.
    #[error("invalid transaction id")]
    InvalidTransaction,
}

/// One verification with one peer device.
pub struct SasVerification {
    role: SasRole,
    txn: String,
    own: SasParty,
    peer: SasParty,
    started_at: Timestamp,
    state: SasState,
    sas: Option<Sas>,
    own_key: Option<Curve25519Key>,
    their_key: Option<Curve25519Key>,
    established: Option<EstablishedSas>,
    commitment: Option<Vec<u8>>,
    pending_mac: Option<(BTreeMap<String, Base64Bytes>, Base64Bytes)>,
}

impl fmt::Debug for SasVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasVerification")
            .field("role", &self.role)
            .field("txn", &self.txn)
            .field("peer", &self.peer.user)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn commitment(
    key: &Curve25519Key,
    txn: &str,
    initiator: &SasParty,
    responder: &SasParty,
) -> Vec<u8> {
    let bytes = signing_bytes(
        COMMITMENT_CONTEXT,
        &[
            key.as_bytes(),
            txn.as_bytes(),
            initiator.user.key().as_bytes(),
            initiator.device.as_str().as_bytes(),
            responder.user.key().as_bytes(),
            responder.device.as_str().as_bytes(),
        ],
    );
    Sha256::digest(bytes).to_vec()
}

fn key_inputs(party: &SasParty) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("identity".to_owned(), party.user.key().to_base64()),
        (
            format!("ed25519:{}", party.device),
            party.keys.ed25519.to_base64(),
        ),
        (
            format!("curve25519:{}", party.device),
            party.keys.curve25519.to_base64(),
        ),
    ])
}

fn mac_info(sender: &SasParty, receiver: &SasParty, txn: &str, key_id: &str) -> String {
    format!(
        "{MAC_INFO}|{}|{}|{}|{}|{txn}|{key_id}",
        sender.user, sender.device, receiver.user, receiver.device
    )
}

impl SasVerification {
    /// Starts a verification of `peer` (whose keys are those we verified from its certificate).
    /// `txn` is a fresh random token (e.g. 16 random bytes in hex). Send the returned step.
    pub fn start(
        now: Timestamp,
        own: SasParty,
        peer: SasParty,
        txn: String,
    ) -> Result<(Self, VerificationStep), SasError> {
        check_token("txn", &txn).map_err(|_| SasError::InvalidTransaction)?;
        let step = VerificationStep::Start { txn: txn.clone() };
        Ok((
            Self::new(
                SasRole::Initiator,
                now,
                own,
                peer,
                txn,
                SasState::WaitingForAccept,
            ),
            step,
        ))
    }

    /// Answers a peer's `Start`. Send the returned step.
    pub fn accept(
        now: Timestamp,
        own: SasParty,
        peer: SasParty,
        start: &VerificationStep,
    ) -> Result<(Self, VerificationStep), SasError> {
        let VerificationStep::Start { txn } = start else {
            return Err(SasError::InvalidTransaction);
        };
        check_token("txn", txn).map_err(|_| SasError::InvalidTransaction)?;
        let mut this = Self::new(
            SasRole::Responder,
            now,
            own,
            peer,
            txn.clone(),
            SasState::WaitingForKey,
        );
        let sas = Sas::new();
        let key = Curve25519Key::from_bytes(sas.public_key().to_bytes());
        let commitment = commitment(&key, txn, &this.peer, &this.own);
        this.sas = Some(sas);
        this.own_key = Some(key);
        let step = VerificationStep::Accept {
            txn: txn.clone(),
            commitment: Base64Bytes(commitment),
        };
        Ok((this, step))
    }

    fn new(
        role: SasRole,
        now: Timestamp,
        own: SasParty,
        peer: SasParty,
        txn: String,
        state: SasState,
    ) -> Self {
        Self {
            role,
            txn,
            own,
            peer,
            started_at: now,
            state,
            sas: None,
            own_key: None,
            their_key: None,
            established: None,
            commitment: None,
            pending_mac: None,
        }
    }

    /// The transaction id.
    pub fn txn(&self) -> &str {
        &self.txn
    }

    /// Our role.
    pub fn role(&self) -> SasRole {
        self.role
    }

    /// The current state.
    pub fn state(&self) -> SasState {
        self.state
    }

    fn finished(&self) -> bool {
        matches!(self.state, SasState::Verified | SasState::Cancelled { .. })
    }

    /// Cancels (for example when the user says the emoji differ). Returns the step to send, or
    /// `None` when already finished.
    pub fn cancel(&mut self, code: CancelCode) -> Option<VerificationStep> {
        if self.finished() {
            return None;
        }
        self.state = SasState::Cancelled { code, by_us: true };
        Some(VerificationStep::Cancel {
            txn: self.txn.clone(),
            code,
        })
    }

    /// When the verification times out, while it is running.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        (!self.finished()).then(|| self.started_at.plus_millis(SAS_TIMEOUT_MS))
    }

    /// Cancels with `Timeout` if the deadline has passed; returns the step to send.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Option<VerificationStep> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => self.cancel(CancelCode::Timeout),
            _ => None,
        }
    }

    /// Handles a step from the peer; returns the steps to send back.
    pub fn handle(
        &mut self,
        now: Timestamp,
        step: &VerificationStep,
    ) -> Result<Vec<VerificationStep>, SasError> {
        if step.txn() != self.txn {
            return Err(SasError::WrongTransaction);
        }
        if self.state == SasState::Verified && matches!(step, VerificationStep::Done { .. }) {
            return Ok(Vec::new());
        }
        if self.finished() {
            return Err(SasError::Finished);
        }
        if let Some(cancel) = self.handle_timeout(now) {
            return Ok(vec![cancel]);
        }
        let out = match (self.state, self.role, step) {
            (_, _, VerificationStep::Cancel { code, .. }) => {
                self.state = SasState::Cancelled {
                    code: *code,
                    by_us: false,
                };
                Vec::new()
            }
            (SasState::WaitingForAccept, _, VerificationStep::Accept { commitment, .. }) => {
                let sas = Sas::new();
                let key = Curve25519Key::from_bytes(sas.public_key().to_bytes());
                self.sas = Some(sas);
                self.own_key = Some(key);
                self.commitment = Some(commitment.0.clone());
                self.state = SasState::WaitingForKey;
                vec![VerificationStep::Key {
                    txn: self.txn.clone(),
                    key,
                }]
            }
            (SasState::WaitingForKey, role, VerificationStep::Key { key, .. }) => {
                if role == SasRole::Initiator {
                    let expected = commitment(key, &self.txn, &self.own, &self.peer);
                    if self.commitment.as_deref() != Some(expected.as_slice()) {
                        return Ok(self
                            .cancel(CancelCode::MismatchedCommitment)
                            .into_iter()
                            .collect());
                    }
                }
                let Some(sas) = self.sas.take() else {
                    return Ok(self
                        .cancel(CancelCode::UnexpectedMessage)
                        .into_iter()
                        .collect());
                };
                let their = vodozemac::Curve25519PublicKey::from_bytes(*key.as_bytes());
                let Ok(established) = sas.diffie_hellman(their) else {
                    return Ok(self
                        .cancel(CancelCode::InvalidMessage)
                        .into_iter()
                        .collect());
                };
                self.established = Some(established);
                self.their_key = Some(*key);
                self.state = SasState::ShowingSas;
                match (role, self.own_key) {
                    (SasRole::Responder, Some(own)) => vec![VerificationStep::Key {
                        txn: self.txn.clone(),
                        key: own,
                    }],
                    _ => Vec::new(),
                }
            }
            (SasState::ShowingSas, _, VerificationStep::Mac { macs, keys, .. }) => {
                // Held until our user has compared the emoji.
                self.pending_mac = Some((macs.clone(), keys.clone()));
                Vec::new()
            }
            (SasState::WaitingForMac, _, VerificationStep::Mac { macs, keys, .. }) => {
                self.check_mac(macs, keys)
            }
            _ => self
                .cancel(CancelCode::UnexpectedMessage)
                .into_iter()
                .collect(),
        };
        Ok(out)
    }

    fn info(&self) -> Option<String> {
        let (own_key, their_key) = (self.own_key?, self.their_key?);
        let ((first, first_key), (second, second_key)) = match self.role {
            SasRole::Initiator => ((&self.own, own_key), (&self.peer, their_key)),
            SasRole::Responder => ((&self.peer, their_key), (&self.own, own_key)),
        };
        Some(format!(
            "{SAS_INFO}|{}|{}|{}|{}|{}|{}|{}",
            first.user,
            first.device,
            first_key.to_base64(),
            second.user,
            second.device,
            second_key.to_base64(),
            self.txn
        ))
    }

    /// The 7 emoji to compare, once the keys are exchanged.
    pub fn emoji(&self) -> Option<[Emoji; 7]> {
        let bytes = self.established.as_ref()?.bytes(&self.info()?);
        Some(bytes.emoji_indices().map(|i| EMOJI[usize::from(i) % 64]))
    }

    /// The three 4-digit numbers (1000–9191) to compare instead of emoji.
    pub fn decimals(&self) -> Option<(u16, u16, u16)> {
        Some(self.established.as_ref()?.bytes(&self.info()?).decimals())
    }

    /// Our user says the emoji match: returns our MAC (and `Done` if the peer's MAC already
    /// arrived and checks out, or `Cancel` if it does not).
    pub fn confirm(&mut self, now: Timestamp) -> Result<Vec<VerificationStep>, SasError> {
        if self.finished() {
            return Err(SasError::Finished);
        }
        if let Some(cancel) = self.handle_timeout(now) {
            return Ok(vec![cancel]);
        }
        if self.state != SasState::ShowingSas {
            return Err(SasError::NotReady);
        }
        let Some(established) = self.established.as_ref() else {
            return Err(SasError::NotReady);
        };
        let inputs = key_inputs(&self.own);
        let macs: BTreeMap<String, Base64Bytes> = inputs
            .iter()
            .map(|(id, input)| {
                let info = mac_info(&self.own, &self.peer, &self.txn, id);
                let mac = established.calculate_mac(input, &info);
                (id.clone(), Base64Bytes(mac.as_bytes().to_vec()))
            })
            .collect();
        let ids = inputs.keys().cloned().collect::<Vec<_>>().join(",");
        let keys_mac =
            established.calculate_mac(&ids, &mac_info(&self.own, &self.peer, &self.txn, KEY_IDS));
        let mut out = vec![VerificationStep::Mac {
            txn: self.txn.clone(),
            macs,
            keys: Base64Bytes(keys_mac.as_bytes().to_vec()),
        }];
        self.state = SasState::WaitingForMac;
        if let Some((macs, keys)) = self.pending_mac.take() {
            out.extend(self.check_mac(&macs, &keys));
        }
        Ok(out)
    }

    fn check_mac(
        &mut self,
        macs: &BTreeMap<String, Base64Bytes>,
        keys: &Base64Bytes,
    ) -> Vec<VerificationStep> {
        let ok = self.established.as_ref().is_some_and(|established| {
            let expected = key_inputs(&self.peer);
            let ids = macs.keys().cloned().collect::<Vec<_>>().join(",");
            let ids_ok = established
                .verify_mac(
                    &ids,
                    &mac_info(&self.peer, &self.own, &self.txn, KEY_IDS),
                    &Mac::from_slice(&keys.0),
                )
                .is_ok();
            ids_ok
                && macs.len() == expected.len()
                && macs.iter().all(|(id, mac)| {
                    expected.get(id).is_some_and(|input| {
                        established
                            .verify_mac(
                                input,
                                &mac_info(&self.peer, &self.own, &self.txn, id),
                                &Mac::from_slice(&mac.0),
                            )
                            .is_ok()
                    })
                })
        });
        if ok {
            self.state = SasState::Verified;
            vec![VerificationStep::Done {
                txn: self.txn.clone(),
            }]
        } else {
            self.cancel(CancelCode::KeyMismatch).into_iter().collect()
        }
    }

    /// The peer device, once verified.
    pub fn verified(&self) -> Option<VerifiedDevice> {
        (self.state == SasState::Verified).then(|| VerifiedDevice {
            user: self.peer.user,
            device: self.peer.device.clone(),
            identity_key: *self.peer.user.key(),
            keys: self.peer.keys,
        })
    }
}

#[cfg(test)]
mod tests;
