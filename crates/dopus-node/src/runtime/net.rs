//! The node's side of the signaling server: login with the identity key, presence, contact
//! sync, key publication, and everything that arrives (live relays and mailbox items).
//!
//! Protocol flow:
//! - on unlock (and on a new server URL) a `dopus_signaling::SignalingClient` starts; it logs in
//!   by signing the server's challenge with our identity key, and keeps reconnecting with backoff;
//! - after every login: publish keys if the device has unpublished ones; the client itself
//!   re-sends our status and contact list;
//! - every incoming payload is an envelope for [`deliver::receive_from`]; a mailbox item is
//!   acknowledged only after `receive` has made it durable (stored, or refused for good);
//! - presence updates feed the contact list and wake the outbox (an online peer may now be
//!   reachable directly).

use super::Node;
use super::deliver::{self, Via};
use super::peers;
use super::recovery;
use crate::account;
use dopus_core::chat::ChatEvent;
use dopus_core::identity::{Identity, ONE_TIME_KEY_TARGET};
use dopus_core::store::{Change, ContactState, Message, MessageId, Pickle, Store};
use dopus_proto::peer::Content;
#[allow(unused_imports)]
use dopus_proto::peer::{
    BulkContent, ChatContent, ContactContent, RtcContent, SessionContent, VerificationContent,
};
use dopus_proto::signaling::Status;
use dopus_signaling::{AuthSigner, ClientConfig, ConnectionState, Event, SignalingClient};
use dopus_types::{DeviceId, Signature, UserId};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// The signaling client handle the rest of the runtime uses.
pub type Client = SignalingClient;

/// Signs login challenges with the identity key.
struct Signer(Arc<Identity>);

impl AuthSigner for Signer {
    fn user_id(&self) -> UserId {
        self.0.user_id()
    }

    fn sign(&self, message: &[u8]) -> Signature {
        // The client only ever asks us to sign `auth_signing_bytes`, which are canonical; if the
        // identity refuses, an all-zero signature makes the login fail visibly instead of
        // crashing the node.
        self.0
            .sign(message)
            .unwrap_or_else(|_| Signature::from_bytes([0; 64]))
    }
}

fn state_str(s: ConnectionState) -> &'static str {
    match s {
        ConnectionState::Disconnected => "disconnected",
        ConnectionState::Connecting => "connecting",
        ConnectionState::Authenticating => "authenticating",
        ConnectionState::Connected => "connected",
    }
}

/// Starts the signaling client for the unlocked node, if a server is configured.
pub fn start(node: Arc<Node>) {
    tokio::spawn(async move {
        let started = {
            let Ok(mut r) = node.ready().await else {
                return;
            };
            let r = r.get_mut();
            let Some(url) = r.settings.server_url.clone() else {
                return;
            };
            let url = if url.contains("/ws") {
                url
            } else {
                format!("{}/ws", url.trim_end_matches('/'))
            };
            let config = ClientConfig::new(url, r.account.device_id.clone());
            let (client, events) =
                SignalingClient::start(config, Arc::new(Signer(r.identity.clone())));
            r.net_generation += 1;
            r.signaling = Some(client.clone());
            r.signaling_state = "connecting";
            (
                client,
                events,
                r.net_generation,
                r.my_status,
                r.accepted_contacts(),
            )
        };
        let (client, mut events, generation, status, contacts) = started;
        // Desired state: the client re-sends both after every reconnect.
        let _ = client.set_status(status).await;
        push_contacts(&node, &client, contacts).await;
        while let Some(event) = events.recv().await {
            {
                let Ok(r) = node.ready().await else { return };
                if r.get().net_generation != generation {
                    return; // replaced by a newer client
                }
            }
            handle_event(&node, &client, event).await;
        }
    });
}

async fn handle_event(node: &Arc<Node>, client: &Client, event: Event) {
    match event {
        Event::State(s) => {
            if let Ok(mut r) = node.ready().await {
                r.get_mut().signaling_state = state_str(s);
                if s != ConnectionState::Connected {
                    r.get_mut().presence.clear();
                }
            }
            node.emit(json!({ "type": "signaling", "state": state_str(s) }));
        }
        Event::Authenticated { .. } => {
            let contacts = match node.ready().await {
                Ok(r) => r.get().accepted_contacts(),
                Err(_) => return,
            };
            push_contacts(node, client, contacts).await;
            publish_keys(node, client, None).await;
            node.pump.notify_one();
        }
        Event::AuthFailed { code } => {
            tracing::warn!(code = %code, "the signaling server refused our login");
        }
        Event::Incoming(incoming) => {
            let via = if incoming.ack.is_some() {
                Via::Mailbox
            } else {
                Via::Relay
            };
            let result = deliver::receive_from(
                node,
                incoming.payload.as_bytes(),
                via,
                Some((&incoming.from.user, &incoming.from.device)),
            )
            .await;
            if result.is_ok()
                && let Some(ack) = incoming.ack
                && let Err(e) = ack.ack().await
            {
                tracing::debug!(error = %e, "mailbox ack failed; the item will come again");
            }
        }
        Event::Presence { user, status } => set_presence(node, user, status).await,
        Event::OneTimeKeysLow { remaining, .. } => {
            publish_keys(node, client, Some(remaining)).await;
        }
        Event::ServerNotice { code, message: _ } => {
            tracing::info!(code = %code, "signaling server notice");
        }
    }
}

async fn set_presence(node: &Node, user: UserId, status: Status) {
    if let Ok(mut r) = node.ready().await {
        let r = r.get_mut();
        let was_online = r
            .presence
            .insert(user, status)
            .is_some_and(|s| s.as_seen_by_others() != Status::Offline);
        // A peer that went offline (killed, restarted, or turned invisible) has no use for the
        // channel it had: its far end is gone or must look gone, and until our ICE timeout
        // noticed, sends into it would vanish. A new one is made when it is back.
        if was_online
            && status.as_seen_by_others() == Status::Offline
            && let Some(old) = r.peers.remove(&user)
        {
            old.close();
        }
        // A peer that comes back gets everything still unacknowledged again soon, including
        // envelopes parked in its mailbox: if one of those could not be decrypted (a session that
        // broke meanwhile) it would otherwise wait for the hourly mailbox re-check. The peer
        // first gets a moment to drain its mailbox and acknowledge: copies re-sealed at once
        // would race the parked ones, and a parked copy taken in after newer ratchet steps can
        // no longer be decrypted (vodozemac keeps 5 receiving chains), which would look like a
        // broken session. Receivers deduplicate, so a second copy costs only bandwidth.
        if !was_online && status.as_seen_by_others() != Status::Offline {
            let due = account::now().plus_millis(RETURN_GRACE_MS);
            let entries = r.store.outbox_for_peer(&user, 10_000).unwrap_or_default();
            let changes: dopus_core::store::Changes = entries
                .iter()
                .filter(|e| e.next_attempt_at > due)
                .map(|e| Change::OutboxReschedule {
                    id: e.id,
                    peer: e.peer_user,
                    attempts: e.attempts,
                    next_attempt_at: due,
                })
                .collect();
            if !changes.is_empty()
                && let Err(e) = r.store.apply(changes)
            {
                tracing::warn!(error = %e, "could not reschedule the outbox");
            }
        }
    }
    node.emit(json!({
        "type": "presence",
        "user_id": user.to_string(),
        "presence": status.as_seen_by_others().as_str(),
    }));
    node.pump.notify_one();
}

/// Publishes keys when the device has unpublished ones, or tops up one-time keys when the
/// server reports `remaining`.
pub async fn publish_keys(node: &Node, client: &Client, remaining: Option<u64>) {
    let upload = {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        if remaining.is_none() && !r.olm.device().needs_upload() {
            return;
        }
        let held = remaining.map_or(ONE_TIME_KEY_TARGET, |n| usize::try_from(n).unwrap_or(0));
        match r.olm.prepare_upload(held) {
            Ok(Some(upload)) => {
                // The new keys' private halves must be durable before their public halves leave.
                let pickle = Pickle::new(upload.account_pickle.clone());
                if r.store.apply_one(Change::SetAccountPickle(pickle)).is_err() {
                    return;
                }
                upload
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not prepare a key upload");
                return;
            }
        }
    };
    match client.publish_bundle(upload.bundle.clone()).await {
        Ok(count) => {
            let Ok(mut r) = node.ready().await else {
                return;
            };
            let r = r.get_mut();
            if let Ok(pickle) = r.olm.mark_published(account::now(), &upload.bundle) {
                let _ = r
                    .store
                    .apply_one(Change::SetAccountPickle(Pickle::new(pickle)));
            }
            tracing::debug!(one_time_keys = count, "published keys");
        }
        Err(e) => tracing::info!(error = %e, "publishing keys failed; will retry on next login"),
    }
}

/// Timed key maintenance (rotating out an old fallback key), then publication if needed.
pub async fn maintain_keys(node: &Node) {
    let client = {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        let now = account::now();
        if r.olm.poll_timeout().is_some_and(|t| t <= now)
            && let Some(pickle) = r.olm.handle_timeout(now)
        {
            let _ = r
                .store
                .apply_one(Change::SetAccountPickle(Pickle::new(pickle)));
        }
        if !r.olm.device().needs_upload() {
            return;
        }
        r.signaling.clone()
    };
    if let Some(client) = client
        && client.state() == ConnectionState::Connected
    {
        publish_keys(node, &client, None).await;
    }
}

/// Sends our status (the client keeps it for reconnects).
pub async fn push_status(client: &Client, status: Status) {
    if let Err(e) = client.set_status(status).await {
        tracing::debug!(error = %e, "status not sent now; it will be on reconnect");
    }
}

/// Sends our contact list and records the presence the server answers with.
pub async fn push_contacts(node: &Node, client: &Client, contacts: Vec<UserId>) {
    match client.sync_contacts(contacts).await {
        Ok(entries) => {
            for entry in entries {
                set_presence(node, entry.user, entry.status).await;
            }
        }
        Err(e) => tracing::debug!(error = %e, "contacts not synced now; they will be on reconnect"),
    }
}

/// Shuts the client down (it says "offline" to the server first).
pub async fn goodbye(client: Client) {
    client.shutdown().await;
}

/// Replaces the client after the server URL changed.
pub async fn restart(node: Arc<Node>) {
    let old = {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        r.net_generation += 1;
        r.presence.clear();
        r.signaling_state = "disconnected";
        r.signaling.take()
    };
    if let Some(old) = old {
        old.shutdown().await;
    }
    start(node);
}

/// Turns chat events into API events (and re-syncs contacts when one changed). A message in
/// `inserted` (as the caller just inserted it, so without reactions) is announced from there;
/// the others are read back from the store, under the node's lock, which is not taken when no
/// event needs it.
pub async fn emit_chat_events(
    node: &Node,
    me: UserId,
    events: Vec<ChatEvent>,
    inserted: &HashMap<MessageId, Message>,
) {
    // Message and typing events are for the UI only; contact changes also re-sync the
    // server's presence list, so they are handled even when nobody is listening.
    let events: Vec<ChatEvent> = if node.listening() {
        events
    } else {
        events
            .into_iter()
            .filter(|e| matches!(e, ChatEvent::ContactChanged(_)))
            .collect()
    };
    if events.is_empty() {
        return;
    }
    let needs_store = events.iter().any(|e| match e {
        ChatEvent::MessageAdded(id) => !inserted.contains_key(id),
        ChatEvent::Typing { .. } | ChatEvent::StateChanged { .. } => false,
        ChatEvent::MessageUpdated(_) | ChatEvent::ContactChanged(_) => true,
    });
    let mut contacts_changed = false;
    let mut value_of = |event: ChatEvent, r: Option<&super::ready::Ready>| match event {
        ChatEvent::MessageAdded(id) => match inserted.get(&id) {
            Some(m) => Some(super::json::message_with(&me, m, &[])),
            None => r.and_then(|r| r.message_event_value(&id)),
        }
        .map(|m| json!({ "type": "message", "message": m })),
        ChatEvent::MessageUpdated(id) => r
            .and_then(|r| r.message_event_value(&id))
            .map(|m| json!({ "type": "message_updated", "message": m })),
        ChatEvent::StateChanged {
            id,
            conversation,
            state,
        } => Some(super::json::message_state(&id, &conversation, state)),
        ChatEvent::Typing { user, active } => Some(json!({
            "type": "typing", "user_id": user.to_string(), "active": active,
        })),
        ChatEvent::ContactChanged(user) => {
            contacts_changed = true;
            r.and_then(|r| r.store.contact(&user).ok().flatten().map(|c| (r, c)))
                .and_then(|(r, c)| r.contact_json(&c).ok())
                .map(|c| json!({ "type": "contact", "contact": c }))
        }
    };
    let values: Vec<serde_json::Value> = if needs_store {
        let Ok(r) = node.ready().await else { return };
        let r = r.get();
        events
            .into_iter()
            .filter_map(|e| value_of(e, Some(r)))
            .collect()
    } else {
        events
            .into_iter()
            .filter_map(|e| value_of(e, None))
            .collect()
    };
    for v in values {
        node.emit(v);
    }
    if contacts_changed {
        let (client, contacts) = match node.ready().await {
            Ok(r) => (r.get().signaling.clone(), r.get().accepted_contacts()),
            Err(_) => return,
        };
        if let Some(client) = client {
            push_contacts(node, &client, contacts).await;
        }
    }
}

/// How long a peer that came back online has to drain its mailbox before everything it has not
/// acknowledged is sent again.
const RETURN_GRACE_MS: u64 = 3_000;

/// Handles contents that are not chat messages.
pub async fn handle_control(node: &Node, user: UserId, _device: DeviceId, content: Content) {
    let accepted = match node.ready().await {
        Ok(r) => r
            .get()
            .store
            .contact(&user)
            .ok()
            .flatten()
            .is_some_and(|c| c.state == ContactState::Accepted && !c.blocked),
        Err(_) => return,
    };
    match content {
        Content::Rtc(RtcContent::Rtc { conn, signal }) if accepted => {
            peers::on_signal(node, user, conn, signal).await
        }
        Content::Session(SessionContent::SessionReset { .. }) => {
            recovery::on_reset(node, user).await
        }
        Content::Verification(VerificationContent::Verification { step }) if accepted => {
            super::verify::on_step(node, user, step).await;
        }
        _ => {}
    }
}
