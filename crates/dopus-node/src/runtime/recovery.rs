//! Recovering a broken Olm session (for example one side restored from an old copy).
//!
//! Protocol flow (docs/e2e.md, "Recovery"):
//! - the receiver cannot decrypt an envelope (no session, unknown one-time key, a message key
//!   that is gone, or a MAC failure on every session);
//! - it waits [`RESET_DELAY_MS`]: an envelope that cannot be decrypted is often only a stale copy
//!   (sealed before newer ratchet steps, kept in the server's mailbox) of something the sender
//!   re-sends anyway; if every failed id has been taken in meanwhile, the session is fine and
//!   nothing else happens;
//! - it fetches the sender's bundle, starts a *fresh* outbound session, and queues a
//!   `SessionReset { failed: [ids] }` content, which goes out as a pre-key message on that new
//!   session; the user is told (`session_reset` event);
//! - the sender decrypts it (creating the matching inbound session, now its most recently used
//!   one), and makes every envelope still in its outbox for that peer due at once, so they are
//!   re-sealed on the new session and re-sent. Receivers deduplicate by envelope id, so nothing
//!   shows twice.

use super::Node;
use super::deliver;
use super::ready::new_id;
use crate::account;
use dopus_core::chat::Outgoing;
use dopus_core::store::{Change, Changes, EnvelopeId, Store};
#[allow(unused_imports)]
use dopus_proto::peer::{
    BulkContent, ChatContent, ContactContent, RtcContent, SessionContent, VerificationContent,
};
use dopus_proto::peer::{Content, Conversation, MessageId};
use dopus_types::UserId;
use serde_json::json;

/// At most one reset request per peer in this window.
const RESET_THROTTLE_MS: u64 = 30_000;
/// How long envelopes that could not be decrypted may stay missing before we ask for a reset.
pub const RESET_DELAY_MS: u64 = 5_000;
/// Most failed ids remembered per peer (and named in one reset).
const MAX_FAILED_IDS: usize = 64;

/// Remembers envelopes from `peer` that could not be decrypted.
pub async fn note_undecryptable(node: &Node, peer: UserId, ids: Vec<MessageId>) {
    if ids.is_empty() {
        return;
    }
    let Ok(mut r) = node.ready().await else {
        return;
    };
    let now = account::now();
    let (_, failed) = r
        .get_mut()
        .undecryptable
        .entry(peer)
        .or_insert_with(|| (now, Vec::new()));
    for id in ids {
        if failed.len() < MAX_FAILED_IDS && !failed.contains(&id) {
            failed.push(id);
        }
    }
}

/// Asks for a reset from every peer whose undecryptable envelopes are still missing after
/// [`RESET_DELAY_MS`]. Returns when the next check is due.
pub async fn reset_if_still_missing(node: &Node) -> Option<dopus_types::Timestamp> {
    let now = account::now();
    let (due, next) = {
        let Ok(mut r) = node.ready().await else {
            return None;
        };
        let r = r.get_mut();
        let mut due = Vec::new();
        let mut next: Option<dopus_types::Timestamp> = None;
        let peers: Vec<UserId> = r.undecryptable.keys().copied().collect();
        for peer in peers {
            let Some((since, _)) = r.undecryptable.get(&peer) else {
                continue;
            };
            // Still missing after a throttled reset: check again when the throttle ends.
            let throttled = r
                .last_reset
                .get(&peer)
                .map(|t| t.plus_millis(RESET_THROTTLE_MS));
            let at = since
                .plus_millis(RESET_DELAY_MS)
                .max(throttled.unwrap_or(*since));
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let Some((_, ids)) = r.undecryptable.remove(&peer) else {
                continue;
            };
            let missing: Vec<MessageId> = ids
                .into_iter()
                .filter(|id| {
                    !r.store
                        .is_processed(&EnvelopeId(*id.as_uuid()))
                        .unwrap_or(false)
                })
                .collect();
            if !missing.is_empty() {
                due.push((peer, missing));
            }
        }
        (due, next)
    };
    for (peer, missing) in due {
        tracing::info!(peer = %peer.short(), missing = missing.len(), "envelopes still cannot be decrypted; starting a new session");
        request_reset(node, peer, missing).await;
    }
    next
}

/// Starts a fresh session with `peer` and asks them to re-send `failed`.
pub async fn request_reset(node: &Node, peer: UserId, failed: Vec<MessageId>) {
    let now = account::now();
    {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        if r.last_reset
            .get(&peer)
            .is_some_and(|t| now.millis_since(*t) < RESET_THROTTLE_MS)
        {
            return;
        }
        r.last_reset.insert(peer, now);
    }
    if let Err(e) = deliver::establish_sessions(node, peer, true).await {
        tracing::info!(peer = %peer.short(), error = %e, "could not start a fresh session");
        return;
    }
    {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        let out = Outgoing {
            peer,
            id: EnvelopeId(new_id(now).0),
            conversation: Conversation::Direct,
            sent_at: now,
            content: Content::Session(SessionContent::SessionReset { failed }),
            reliable: true,
        };
        let mut changes = Changes::new();
        super::ready::queue(&mut changes, &out, now);
        if r.store.apply(changes).is_err() {
            return;
        }
    }
    node.emit(json!({ "type": "session_reset", "user_id": peer.to_string(), "resent": 0 }));
    node.pump.notify_one();
}

/// The peer started a fresh session with us: re-send everything still unacknowledged.
pub async fn on_reset(node: &Node, peer: UserId) {
    let count = {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        let now = account::now();
        let entries = r.store.outbox_for_peer(&peer, 10_000).unwrap_or_default();
        let changes: Changes = entries
            .iter()
            .map(|e| Change::OutboxReschedule {
                id: e.id,
                peer: e.peer_user,
                attempts: e.attempts,
                next_attempt_at: now,
            })
            .collect();
        if r.store.apply(changes).is_err() {
            return;
        }
        entries.len()
    };
    tracing::info!(peer = %peer.short(), resent = count, "peer replaced a broken session; re-sending");
    node.emit(json!({ "type": "session_reset", "user_id": peer.to_string(), "resent": count }));
    node.pump.notify_one();
}
