//! SAS emoji verification of a contact's device, driven by the UI: start, compare the seven
//! emoji, confirm or cancel. The steps travel as `Content::Verification` inside Olm envelopes
//! (`dopus_core::verification::sas` is the state machine; docs/e2e.md the protocol). A verification
//! that ends `Verified` marks the contact verified.

use super::Node;
use super::deliver;
use super::ready::{Ready, new_id};
use crate::account;
use crate::api::error::ApiError;
use dopus_core::chat::Outgoing;
use dopus_core::store::{Change, EnvelopeId, Store};
use dopus_core::verification::{SasParty, SasState, SasVerification};
#[allow(unused_imports)]
use dopus_proto::peer::{
    BulkContent, ChatContent, ContactContent, RtcContent, SessionContent, VerificationContent,
};
use dopus_proto::peer::{CancelCode, Content, Conversation, VerificationStep};
use dopus_types::UserId;
use serde_json::{Value, json};

fn own_party(r: &Ready) -> SasParty {
    SasParty {
        user: r.me(),
        device: r.account.device_id.clone(),
        keys: r.account.device_keys,
    }
}

/// The peer device we verify: the (first) device we hold a verified certificate for.
fn peer_party(r: &Ready, user: &UserId) -> Option<SasParty> {
    let device = r.store.peer_devices(user).ok()?.into_iter().next()?;
    Some(SasParty {
        user: *user,
        device: device.device_id,
        keys: device.keys,
    })
}

/// The verification as the API shows it.
pub fn to_json(v: Option<&SasVerification>) -> Value {
    let Some(v) = v else {
        return json!({ "state": "none" });
    };
    let (state, cancel) = match v.state() {
        SasState::WaitingForAccept | SasState::WaitingForKey => ("waiting", None),
        SasState::ShowingSas => ("compare", None),
        SasState::WaitingForMac => ("confirmed", None),
        SasState::Verified => ("verified", None),
        SasState::Cancelled { code, by_us } => ("cancelled", Some((code, by_us))),
    };
    json!({
        "state": state,
        "txn": v.txn(),
        "emoji": v.emoji().map(|e| e.iter().map(|x| json!({ "symbol": x.symbol, "name": x.name })).collect::<Vec<_>>()),
        "decimals": v.decimals().map(|(a, b, c)| vec![a, b, c]),
        "cancel_code": cancel.map(|(c, _)| format!("{c:?}")),
        "cancelled_by_us": cancel.map(|(_, b)| b),
    })
}

fn step_out(peer: UserId, step: VerificationStep) -> Outgoing {
    let now = account::now();
    Outgoing {
        peer,
        id: EnvelopeId(new_id(now).0),
        conversation: Conversation::Direct,
        sent_at: now,
        content: Content::Verification(VerificationContent::Verification { step }),
        reliable: false,
    }
}

async fn finish(node: &Node, peer: UserId, steps: Vec<VerificationStep>) -> Value {
    let (value, contact) = {
        let Ok(mut r) = node.ready().await else {
            return json!({ "state": "none" });
        };
        let r = r.get_mut();
        let mut contact = None;
        if let Some(v) = r.verifications.get(&peer)
            && v.verified().is_some()
            && let Ok(Some(mut c)) = r.store.contact(&peer)
            && !c.verified
        {
            c.verified = true;
            c.updated_at = account::now();
            if r.store.apply_one(Change::SaveContact(c.clone())).is_ok() {
                contact = r.contact_json(&c).ok();
            }
        }
        (to_json(r.verifications.get(&peer)), contact)
    };
    deliver::send_ephemeral(node, steps.into_iter().map(|s| step_out(peer, s)).collect()).await;
    node.emit(
        json!({ "type": "verification", "user_id": peer.to_string(), "verification": value }),
    );
    if let Some(c) = contact {
        node.emit(json!({ "type": "contact", "contact": c }));
    }
    value
}

/// `POST /contacts/{id}/verification`: starts a verification.
pub async fn start(node: &Node, peer: UserId) -> Result<Value, ApiError> {
    deliver::establish_sessions_if_needed(node, peer)
        .await
        .map_err(|e| ApiError::offline(format!("cannot reach this contact: {e}")))?;
    let step = {
        let mut r = node.ready().await?;
        let r = r.get_mut();
        let peer_party = peer_party(r, &peer)
            .ok_or_else(|| ApiError::offline("no verified device of this contact yet"))?;
        let txn: String = account::random_bytes::<16>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let (v, step) = SasVerification::start(account::now(), own_party(r), peer_party, txn)
            .map_err(ApiError::internal)?;
        r.verifications.insert(peer, v);
        step
    };
    Ok(finish(node, peer, vec![step]).await)
}

/// `POST /contacts/{id}/verification/confirm`: the emoji match.
pub async fn confirm(node: &Node, peer: UserId) -> Result<Value, ApiError> {
    let steps = {
        let mut r = node.ready().await?;
        let v = r
            .get_mut()
            .verifications
            .get_mut(&peer)
            .ok_or_else(|| ApiError::not_found("no verification with this contact"))?;
        v.confirm(account::now())
            .map_err(|e| ApiError::conflict(e.to_string()))?
    };
    Ok(finish(node, peer, steps).await)
}

/// `POST /contacts/{id}/verification/cancel`: the emoji differ, or the user gave up.
pub async fn cancel(node: &Node, peer: UserId) -> Result<Value, ApiError> {
    let step = {
        let mut r = node.ready().await?;
        let v = r
            .get_mut()
            .verifications
            .get_mut(&peer)
            .ok_or_else(|| ApiError::not_found("no verification with this contact"))?;
        v.cancel(CancelCode::User)
    };
    Ok(finish(node, peer, step.into_iter().collect()).await)
}

/// `GET /contacts/{id}/verification`.
pub async fn get(node: &Node, peer: UserId) -> Result<Value, ApiError> {
    let mut r = node.ready().await?;
    let r = r.get_mut();
    if let Some(v) = r.verifications.get_mut(&peer) {
        // An expired verification becomes cancelled; the peer times out on its own clock.
        let _cancel_step = v.handle_timeout(account::now());
    }
    Ok(to_json(r.verifications.get(&peer)))
}

/// A step from the peer.
pub async fn on_step(node: &Node, peer: UserId, step: VerificationStep) {
    let steps = {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        let now = account::now();
        if let VerificationStep::Start { .. } = &step {
            let Some(peer_party) = peer_party(r, &peer) else {
                return;
            };
            match SasVerification::accept(now, own_party(r), peer_party, &step) {
                Ok((v, reply)) => {
                    r.verifications.insert(peer, v);
                    vec![reply]
                }
                Err(e) => {
                    tracing::debug!(error = %e, "refused a verification start");
                    return;
                }
            }
        } else {
            let Some(v) = r.verifications.get_mut(&peer) else {
                return;
            };
            match v.handle(now, &step) {
                Ok(steps) => steps,
                Err(e) => {
                    tracing::debug!(error = %e, "verification step refused");
                    return;
                }
            }
        }
    };
    finish(node, peer, steps).await;
}
