//! Getting envelopes to peers, and taking them in.
//!
//! Outbound (the pump): every reliable content sits in the outbox (per peer, handed out in the
//! order entries fall due, queue order among equals) from the moment
//! the user acted. The pump makes sure an Olm session exists with each of the peer's devices
//! (fetching and verifying their bundle), seals a window of due entries, persists the advanced
//! sessions together with each entry's next retry time in one transaction, and only then sends:
//! over the data channel when one is open, otherwise through the signaling server (live relay,
//! or the mailbox when the peer is away); a retry always goes through the server. The peer's send
//! lock (`Node::send_lock`) is held from sealing to the transport, so envelopes leave in Olm
//! order. An entry leaves the outbox only when the peer's `delivered` receipt names it; until then
//! it is retried with exponential backoff (much later once the mailbox holds it, since the
//! mailbox is durable).
//!
//! Inbound: envelopes from the data channel, live relays and the mailbox all go through
//! [`receive_from`] / [`receive_batch`]: dedupe by envelope id, decrypt, check the sender
//! binding, apply the chat logic, and persist session + account + message + processed id (for a
//! burst from a data channel, of every envelope in it, each session pickled once at the end:
//! `OlmMachine::open_in_burst`) in one transaction, all or nothing, before anything is
//! acknowledged. Delivered receipts are held [`RECEIPT_DELAY`] and merged per peer. Envelopes
//! that cannot be decrypted go to `recovery`, which asks for a fresh session only if they are
//! still missing a few seconds later.

use super::Node;
use super::net;
use super::ready::{Ready, new_id};
use crate::account;
use dopus_core::chat::{ChatEvent, Outgoing, delivered_receipt};
use dopus_core::e2e::{Burst, Draft, Recovery};
use dopus_core::outbox::retry_delay;
use dopus_core::store::{
    Change, Changes, DeliveryState, EnvelopeId, Message, MessageId, NewMessage, OlmSessionRecord,
    OutboxEntry, Outcome, PeerDevice, Pickle, Store,
};
use dopus_proto::bundle::ClaimedBundle;
use dopus_proto::channel;
#[allow(unused_imports)]
use dopus_proto::peer::{
    BulkContent, ChatContent, ContactContent, RtcContent, SessionContent, VerificationContent,
};
use dopus_proto::peer::{
    BulkItem, Content, Conversation, MAX_BULK_ITEMS, MAX_IDS_PER_MESSAGE, PeerAddress,
    PeerEnvelope, ReceiptKind,
};
use dopus_types::{DeviceId, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What an outbox entry holds until it is sealed (per device, at send time).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    /// The conversation.
    pub conversation: Conversation,
    /// When the user acted.
    pub sent_at: Timestamp,
    /// What to say.
    pub content: Content,
}

/// Most entries sealed and sent for one peer per pump round.
const WINDOW: usize = 64;
/// Once the server's mailbox holds an envelope, check again this much later.
const MAILBOX_RECHECK_MS: u64 = 60 * 60 * 1000;
/// Longest the pump sleeps without being woken.
const PUMP_IDLE: Duration = Duration::from_secs(5);
/// A direct connection attempt younger than this is left to finish rather than started again
/// (meanwhile envelopes go through the server).
pub const DIRECT_GRACE_MS: u64 = 3_000;

/// How an envelope travels.
#[derive(Debug, Clone)]
pub enum Route {
    /// Over the open data channel.
    Direct(dopus_rtc::PeerHandle),
    /// Through the signaling server (relayed live, or kept in the mailbox).
    Server(net::Client),
}

/// Starts the outbox pump for the current unlocked session.
pub fn start_pump(node: Arc<Node>) {
    tokio::spawn(async move {
        loop {
            let wait = match pump_once(&node).await {
                Some(next) => {
                    let now = account::now();
                    Duration::from_millis(next.millis_since(now)).min(PUMP_IDLE)
                }
                None => PUMP_IDLE,
            };
            tokio::select! {
                _ = node.pump.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
            }
            if node.ready().await.is_err() {
                return;
            }
        }
    });
}

/// One round: every peer with due entries. Returns when the next entry falls due.
///
/// Seals every due entry, not only the oldest of each peer: an envelope waiting in the server's
/// mailbox (next check in an hour) must not hold back the ones queued after it.
async fn pump_once(node: &Arc<Node>) -> Option<Timestamp> {
    tracing::trace!("pump round");
    net::maintain_keys(node).await;
    let reset_check = super::recovery::reset_if_still_missing(node).await;
    let now = account::now();
    let peers = {
        let r = node.ready().await.ok()?;
        r.get().store.outbox_due_peers(now).unwrap_or_default()
    };
    let mut stalled = false;
    for peer in peers {
        if let Err(e) = deliver_peer(node, peer).await {
            tracing::debug!(peer = %peer.short(), error = %e, "delivery round failed");
            stalled = true;
        }
    }
    let r = node.ready().await.ok()?;
    let mut outbox = r.get().store.outbox_next_attempt_at().ok().flatten();
    if stalled {
        // Entries that could not go (no route, no device) are still due: do not spin on them.
        // What would let them go (the server connecting, a channel opening, the peer's
        // presence) wakes the pump anyway.
        let later = account::now().plus_millis(STALLED_RETRY_MS);
        outbox = outbox.map(|t| t.max(later));
    }
    [outbox, reset_check].into_iter().flatten().min()
}

/// How long the pump waits after a round in which some peer could not be served.
const STALLED_RETRY_MS: u64 = 5_000;

/// Why a delivery round for one peer stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// No server connection and no direct channel.
    #[error("no route to the peer")]
    NoRoute,
    /// The peer published no usable device.
    #[error("no verified device for the peer")]
    NoDevice,
    /// Local failure.
    #[error("{0}")]
    Local(String),
}

fn local(e: impl std::fmt::Display) -> DeliverError {
    DeliverError::Local(e.to_string())
}

/// The peer's devices that we hold at least one session with.
fn device_sessions(store: &dyn Store, peer: &UserId) -> Vec<(PeerDevice, Vec<OlmSessionRecord>)> {
    let devices = store.peer_devices(peer).unwrap_or_default();
    devices
        .into_iter()
        .filter_map(|d| {
            let sessions = store.olm_sessions(peer, &d.device_id).unwrap_or_default();
            (!sessions.is_empty()).then_some((d, sessions))
        })
        .collect()
}

/// Fetches the peer's bundles and starts a session with every device we have none with (or with
/// every device, when `fresh`: recovering a broken session).
pub async fn establish_sessions(
    node: &Node,
    peer: UserId,
    fresh: bool,
) -> Result<(), DeliverError> {
    let client = {
        let r = node.ready().await.map_err(|_| DeliverError::NoRoute)?;
        r.get().signaling.clone().ok_or(DeliverError::NoRoute)?
    };
    let bundles: Vec<ClaimedBundle> = client.fetch_bundle(peer).await.map_err(local)?;
    let mut r = node.ready().await.map_err(|_| DeliverError::NoRoute)?;
    let r = r.get_mut();
    let now = account::now();
    let mut changes = Changes::new();
    let mut started = 0;
    for bundle in &bundles {
        let device = bundle.certificate.device_id.clone();
        if !fresh
            && !r
                .store
                .olm_sessions(&peer, &device)
                .unwrap_or_default()
                .is_empty()
        {
            continue;
        }
        match r.olm.start_session(now, &peer, &device, bundle) {
            Ok(s) => {
                changes.push(Change::SavePeerDevice(PeerDevice {
                    user_id: peer,
                    device_id: device.clone(),
                    keys: s.certificate.keys,
                    certificate_json: serde_json::to_string(&s.certificate).map_err(local)?,
                    first_seen: now,
                    updated_at: now,
                }));
                changes.push(Change::SaveOlmSession(s.session));
                started += 1;
            }
            // A hostile or broken server: refuse that device, keep the others.
            Err(e) => tracing::warn!(peer = %peer.short(), error = %e, "refused a key bundle"),
        }
    }
    if !changes.is_empty() {
        r.store.apply(changes).map_err(local)?;
    }
    if started == 0 && device_sessions(&r.store, &peer).is_empty() {
        return Err(DeliverError::NoDevice);
    }
    Ok(())
}

/// The open data channel to `peer`, if there is one worth sending on.
fn open_channel(r: &Ready, peer: &UserId) -> Option<dopus_rtc::PeerHandle> {
    // The server saw the peer go away (for example killed): its side of the channel is gone
    // even if ours has not timed out yet, so sending there would only lose time.
    let gone = r
        .presence
        .get(peer)
        .is_some_and(|s| s.as_seen_by_others() == dopus_proto::signaling::Status::Offline);
    r.peers
        .get(peer)
        .and_then(|p| p.open_handle())
        .filter(|_| !gone)
}

/// How `peer` can be reached now, as the node's state says.
struct Reach {
    /// The open data channel.
    direct: Option<dopus_rtc::PeerHandle>,
    /// The peer reads frames on that channel (it said hello).
    frames: bool,
    /// The peer also reads bulk payloads (its hello said so).
    bulk: bool,
    /// The signaling server.
    server: Option<net::Client>,
    /// No channel, but the peer is online and no attempt is under way: start one.
    connect: bool,
}

fn reach(r: &Ready, peer: &UserId) -> Reach {
    let direct = open_channel(r, peer);
    let online = r
        .presence
        .get(peer)
        .is_some_and(|s| s.as_seen_by_others() != dopus_proto::signaling::Status::Offline);
    let waiting = r
        .peers
        .get(peer)
        .is_some_and(|p| p.connecting_since(account::now(), DIRECT_GRACE_MS));
    Reach {
        connect: direct.is_none() && online && !waiting,
        frames: direct.is_some() && r.peers.get(peer).is_some_and(|p| p.frames),
        bulk: direct.is_some() && r.peers.get(peer).is_some_and(|p| p.bulk),
        direct,
        server: r.signaling.clone(),
    }
}

/// One sealed envelope: the device it is for, its bytes, and the window's entries it carries
/// (one, or several for a bulk payload).
struct Sealed {
    device: DeviceId,
    bytes: Vec<u8>,
    carries: Vec<usize>,
}

/// A sealed window: the due entries (outbox order) and the envelopes that carry them, each
/// device's in order. An entry no envelope carries is not sent this round.
struct SealedWindow {
    entries: Vec<OutboxEntry>,
    envelopes: Vec<Sealed>,
}

/// Most bytes of item JSON (an upper bound, see [`json_bound`]) in one bulk payload: far below
/// the payload limit and the data channel's message size, so a bulk envelope always fits.
const BULK_BYTES: usize = 48 * 1024;

/// An upper bound on the JSON size of a bulk item holding `content`.
fn json_bound(content: &Content) -> usize {
    let escaped = |s: &str| {
        s.bytes()
            .map(|b| {
                if b < 0x20 || b == b'"' || b == b'\\' {
                    6
                } else {
                    1
                }
            })
            .sum::<usize>()
    };
    // Ids, times, field names and punctuation.
    const FIXED: usize = 256;
    FIXED
        + match content {
            Content::Chat(ChatContent::Text { body, .. })
            | Content::Chat(ChatContent::Edit { body, .. }) => escaped(body),
            Content::Chat(ChatContent::Reaction { emoji, .. }) => escaped(emoji),
            _ => 0,
        }
}

/// Seals the due ones of `entries` (outbox order) for every device of `peer` we hold a
/// session with. Answers the changes to commit before anything is sent (advanced sessions,
/// each entry's next retry time, unreadable entries removed) and the sealed window; `None` if
/// entries are due but we hold no session with any of the peer's devices.
///
/// With `bulk` (first attempts going over a direct channel to a peer that reads bulk
/// payloads), runs of consecutive chat messages for a device are sealed as one bulk payload
/// (`Content::Bulk`): one Double Ratchet step, one envelope and one set of bindings for the
/// run instead of one per message.
fn seal_entries(
    store: &dyn Store,
    olm: &mut dopus_core::e2e::OlmMachine,
    peer: UserId,
    entries: Vec<OutboxEntry>,
    now: Timestamp,
    bulk: bool,
) -> Option<(Changes, SealedWindow)> {
    let devices = device_sessions(store, &peer);
    let mut changes = Changes::new();
    let mut due = Vec::new();
    for entry in entries.into_iter().filter(|e| e.next_attempt_at <= now) {
        let Ok(queued) = serde_json::from_slice::<Queued>(&entry.bytes) else {
            changes.push(Change::OutboxRemove(entry.id));
            continue;
        };
        let Ok(wire) = dopus_proto::peer::MessageId::from_uuid(entry.id.0) else {
            changes.push(Change::OutboxRemove(entry.id));
            continue;
        };
        due.push((entry, queued, wire));
    }
    if devices.is_empty() && !due.is_empty() {
        return None;
    }
    let draft = |i: usize| {
        let (_, queued, wire): &(OutboxEntry, Queued, _) = &due[i];
        Draft {
            id: *wire,
            conversation: queued.conversation.clone(),
            sent_at: queued.sent_at,
            content: queued.content.clone(),
        }
    };
    // Each device's share of the window is sealed in one go (`seal_many`: its session is
    // restored and saved once), in outbox order.
    let mut envelopes = Vec::new();
    for (device, sessions) in &devices {
        let for_device: Vec<usize> = due
            .iter()
            .enumerate()
            .filter(|(_, (e, _, _))| {
                e.peer_device
                    .as_ref()
                    .is_none_or(|d| d == &device.device_id)
            })
            .map(|(i, _)| i)
            .collect();
        if for_device.is_empty() {
            continue;
        }
        let mut drafts: Vec<(Draft, Vec<usize>)> = Vec::new();
        let mut run: Vec<usize> = Vec::new();
        let mut run_bytes = 0;
        let flush = |run: &mut Vec<usize>, drafts: &mut Vec<(Draft, Vec<usize>)>| {
            match run.len() {
                0 => {}
                1 => drafts.push((draft(run[0]), std::mem::take(run))),
                _ => {
                    let items = run
                        .iter()
                        .filter_map(|&i| {
                            let d = draft(i);
                            let Content::Chat(content) = d.content else {
                                return None;
                            };
                            Some(BulkItem {
                                id: d.id,
                                conversation: d.conversation,
                                sent_at: d.sent_at,
                                content,
                            })
                        })
                        .collect();
                    let id = dopus_proto::peer::MessageId::from_uuid(new_id(now).0);
                    match id {
                        Ok(id) => drafts.push((
                            Draft {
                                id,
                                conversation: Conversation::Direct,
                                sent_at: now,
                                content: Content::Bulk(BulkContent::Bulk { items }),
                            },
                            std::mem::take(run),
                        )),
                        // Not reached (a fresh v7 id); seal them one by one instead.
                        Err(_) => drafts.extend(run.drain(..).map(|i| (draft(i), vec![i]))),
                    }
                }
            }
        };
        for &i in &for_device {
            let content = &due[i].1.content;
            if bulk && content.bulk_item_kind() {
                let size = json_bound(content);
                if run.len() == MAX_BULK_ITEMS || run_bytes + size > BULK_BYTES {
                    flush(&mut run, &mut drafts);
                    run_bytes = 0;
                }
                run.push(i);
                run_bytes += size;
            } else {
                flush(&mut run, &mut drafts);
                run_bytes = 0;
                drafts.push((draft(i), vec![i]));
            }
        }
        flush(&mut run, &mut drafts);
        let (drafts, carries): (Vec<Draft>, Vec<Vec<usize>>) = drafts.into_iter().unzip();
        let to = PeerAddress {
            user: peer,
            device: device.device_id.clone(),
        };
        match olm.seal_many(now, &to, &device.keys, sessions, drafts) {
            Ok((sealed, session)) => {
                for (carries, envelope) in carries.into_iter().zip(sealed) {
                    match envelope.map(|e| e.to_json()) {
                        Ok(Ok(bytes)) => envelopes.push(Sealed {
                            device: device.device_id.clone(),
                            bytes,
                            carries,
                        }),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "could not encode an envelope")
                        }
                        Err(e) => tracing::warn!(error = %e, "could not seal an envelope"),
                    }
                }
                changes.push(Change::SaveOlmSession(session));
            }
            Err(e) => tracing::warn!(error = %e, "could not seal for a device"),
        }
    }
    let mut carried = vec![false; due.len()];
    for &i in envelopes.iter().flat_map(|e| &e.carries) {
        carried[i] = true;
    }
    let entries: Vec<OutboxEntry> = due.into_iter().map(|(entry, _, _)| entry).collect();
    for (entry, _) in entries.iter().zip(&carried).filter(|(_, c)| **c) {
        changes.push(Change::OutboxReschedule {
            id: entry.id,
            peer: entry.peer_user,
            attempts: entry.attempts.saturating_add(1),
            next_attempt_at: now.plus_millis(retry_delay(entry.attempts)),
        });
    }
    Some((changes, SealedWindow { entries, envelopes }))
}

/// Seals and sends one window of due entries for `peer`.
async fn deliver_peer(node: &Node, peer: UserId) -> Result<(), DeliverError> {
    // Held until the window is handed to the transport (see `Node::send_lock`).
    let sending = node.send_lock(peer).await;
    let mut fetched = false;
    // Seal under the node's lock and persist before anything leaves this machine: the advanced
    // sessions and every entry's next retry time in one transaction. One lock for the route,
    // the sessions and the seal.
    let (reach, window) = loop {
        let now = account::now();
        let sealed = {
            let mut r = node.ready().await.map_err(|_| DeliverError::NoRoute)?;
            let r = r.get_mut();
            let reach = reach(r, &peer);
            if reach.direct.is_none() && reach.server.is_none() {
                return Err(DeliverError::NoRoute);
            }
            let entries = r
                .store
                .outbox_due_for_peer(&peer, now, WINDOW)
                .map_err(local)?;
            // Bulk payloads only for first attempts over the channel (retries go through the
            // server, below), and only to a peer that said it reads them.
            let bulk = reach.bulk && entries.iter().all(|e| e.attempts == 0);
            match seal_entries(&r.store, &mut r.olm, peer, entries, now, bulk) {
                Some((changes, batch)) => {
                    if !changes.is_empty() {
                        r.store.apply(changes).map_err(local)?;
                    }
                    Some((reach, batch))
                }
                None => None,
            }
        };
        match sealed {
            Some(sealed) => break sealed,
            // No session yet: fetch the peer's bundles once, then seal.
            None if !fetched => {
                establish_sessions(node, peer, false).await?;
                fetched = true;
            }
            None => return Err(DeliverError::NoDevice),
        }
    };
    let connect = reach.connect;
    let frames = reach.frames;
    let server = reach.server.clone();
    let mut route = match (reach.direct, reach.server) {
        (Some(h), _) => Route::Direct(h),
        (None, Some(c)) => Route::Server(c),
        (None, None) => return Err(DeliverError::NoRoute),
    };
    // A retry goes through the server even when a channel looks open: the first copy got no
    // receipt, and a channel whose far end died (a peer killed and restarted) still accepts
    // sends until its ICE timeout; the server relays live or keeps it in the mailbox.
    if matches!(route, Route::Direct(_))
        && window.entries.iter().any(|e| e.attempts > 0)
        && let Some(server) = server
    {
        route = Route::Server(server);
    }
    tracing::debug!(
        peer = %peer.short(),
        entries = window.entries.len(),
        envelopes = window.envelopes.len(),
        direct = matches!(route, Route::Direct(_)),
        "sending a window"
    );
    // Send, in order, without the lock. An entry counts as sent once any envelope carrying it
    // was taken, and as held by the mailbox if any of those the server took was stored.
    let SealedWindow { entries, envelopes } = window;
    let mut sent = vec![false; entries.len()];
    let mut stored = vec![false; entries.len()];
    match &route {
        // The whole window in one hand-over, packed into frames if the peer reads them.
        Route::Direct(h) => {
            let (carries, bytes): (Vec<Vec<usize>>, Vec<Vec<u8>>) =
                envelopes.into_iter().map(|e| (e.carries, e.bytes)).unzip();
            let (messages, counts): (Vec<Vec<u8>>, Vec<usize>) =
                channel::pack(bytes, frames, h.max_message_size())
                    .into_iter()
                    .unzip();
            let (taken, result) = h.send_all(messages).await;
            if let Err(e) = result {
                tracing::debug!(error = %e, taken, "data channel send failed");
            }
            let taken: usize = counts.iter().take(taken).sum();
            for &i in carries.iter().take(taken).flatten() {
                sent[i] = true;
            }
        }
        Route::Server(c) => {
            for envelope in envelopes {
                let payload = String::from_utf8(envelope.bytes).map_err(local)?;
                match c.relay(peer, Some(envelope.device), payload, true).await {
                    Ok(outcome) => {
                        let relayed = !outcome.delivered.is_empty() || !outcome.queued.is_empty();
                        let held = outcome.delivered.is_empty() && !outcome.queued.is_empty();
                        for &i in &envelope.carries {
                            sent[i] |= relayed;
                            stored[i] |= held;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "relay failed"),
                }
            }
        }
    }
    let done: Vec<(OutboxEntry, bool)> = entries
        .into_iter()
        .zip(sent.into_iter().zip(stored))
        .filter(|(_, (sent, _))| *sent)
        .map(|(entry, (_, stored))| (entry, stored))
        .collect();
    tracing::trace!(envelopes = done.len(), "window handed to the transport");
    drop(sending);
    mark_sent(node, &done).await;
    // After the send lock: the offer itself is sealed and sent under it.
    if connect {
        super::peers::connect(node, peer).await;
    }
    Ok(())
}

/// Records that these entries left this machine (and which of them the server's mailbox holds).
async fn mark_sent(node: &Node, done: &[(OutboxEntry, bool)]) {
    if done.is_empty() {
        return;
    }
    let Ok(mut r) = node.ready().await else {
        return;
    };
    let r = r.get_mut();
    let mut changes = Changes::new();
    // Where each `SetDelivery` sits in `changes`: the store applies it only if it moves the
    // state forward (not for a message already delivered), and says so in its outcome.
    let mut promotions = Vec::new();
    let now = account::now();
    for (entry, stored_in_mailbox) in done {
        let id = MessageId(entry.id.0);
        promotions.push((changes.len(), id, entry.peer_user));
        changes.push(Change::SetDelivery {
            id,
            state: DeliveryState::Sent,
        });
        if *stored_in_mailbox {
            changes.push(Change::OutboxReschedule {
                id: entry.id,
                peer: entry.peer_user,
                attempts: entry.attempts.saturating_add(1),
                next_attempt_at: now.plus_millis(MAILBOX_RECHECK_MS),
            });
        }
    }
    let Ok(applied) = r.store.apply(changes) else {
        return;
    };
    // Emitted under the lock: a `delivered` applied after this cannot be announced before it.
    if node.listening() {
        for (i, id, peer) in promotions {
            if applied.outcomes.get(i).is_some_and(|o| o.changed()) {
                node.emit(super::json::message_state(
                    &id,
                    &dopus_core::store::ConversationId::Direct(peer),
                    DeliveryState::Sent,
                ));
            }
        }
    }
}

/// Sends ephemeral contents (typing, receipts) right away: data channel if open, else the server
/// (stored in the mailbox only for delivery receipts, which retries depend on).
pub async fn send_ephemeral(node: &Node, outs: Vec<Outgoing>) {
    send_now(node, outs, true).await;
}

/// Sends contents through the server only, never stored (WebRTC signaling).
pub async fn send_via_server(node: &Node, outs: Vec<Outgoing>) {
    send_now(node, outs, false).await;
}

async fn send_now(node: &Node, outs: Vec<Outgoing>, allow_direct: bool) {
    if outs.is_empty() {
        return;
    }
    // Held until everything is handed to a transport (see `Node::send_lock`), for every peer
    // named, in a fixed order.
    let mut peers: Vec<UserId> = outs.iter().map(|o| o.peer).collect();
    peers.sort_unstable();
    peers.dedup();
    let mut _sending = Vec::with_capacity(peers.len());
    for peer in peers {
        _sending.push(node.send_lock(peer).await);
    }
    // Seal everything under one lock and persist the sessions in one transaction.
    let (sealed, client) = {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        let mut sealed = Vec::with_capacity(outs.len());
        let mut changes = Changes::new();
        let mut advanced: HashMap<String, OlmSessionRecord> = HashMap::new();
        for out in &outs {
            let store = allow_direct
                && matches!(
                    out.content,
                    Content::Chat(ChatContent::Receipt {
                        receipt: ReceiptKind::Delivered,
                        ..
                    })
                );
            let direct = if allow_direct {
                r.peers.get(&out.peer).and_then(|p| p.open_handle())
            } else {
                None
            };
            let envelopes = seal_now(r, out, &mut advanced);
            sealed.push((out.peer, store, direct, envelopes));
        }
        for session in advanced.values() {
            changes.push(Change::SaveOlmSession(session.clone()));
        }
        // Persist before sending; if that fails, send nothing.
        if !changes.is_empty() && r.store.apply(changes).is_err() {
            return;
        }
        (sealed, r.signaling.clone())
    };
    for (peer, store, direct, envelopes) in sealed {
        for (device, bytes) in envelopes {
            if let Some(h) = &direct
                && h.send(bytes.clone()).await.is_ok()
            {
                continue;
            }
            if let Some(c) = &client
                && let Ok(payload) = String::from_utf8(bytes)
                && let Err(e) = c.relay(peer, Some(device), payload, store).await
            {
                tracing::debug!(error = %e, "could not send an ephemeral envelope");
            }
        }
    }
}

/// Makes sure we hold a session with at least one of the peer's devices.
pub async fn establish_sessions_if_needed(node: &Node, peer: UserId) -> Result<(), DeliverError> {
    {
        let r = node.ready().await.map_err(|_| DeliverError::NoRoute)?;
        if !device_sessions(&r.get().store, &peer).is_empty() {
            return Ok(());
        }
    }
    establish_sessions(node, peer, false).await
}

/// Seals `out` for every device we have a session with. The advanced sessions go into
/// `advanced` (by session id), which later seals read first; the caller persists them.
fn seal_now(
    r: &mut Ready,
    out: &Outgoing,
    advanced: &mut HashMap<String, OlmSessionRecord>,
) -> Vec<(DeviceId, Vec<u8>)> {
    let now = account::now();
    let Ok(wire) = dopus_proto::peer::MessageId::from_uuid(out.id.0) else {
        return Vec::new();
    };
    let mut sealed = Vec::new();
    for (device, mut sessions) in device_sessions(&r.store, &out.peer) {
        for s in &mut sessions {
            if let Some(newer) = advanced.get(&s.session_id) {
                *s = newer.clone();
            }
        }
        let to = PeerAddress {
            user: out.peer,
            device: device.device_id.clone(),
        };
        let draft = Draft {
            id: wire,
            conversation: out.conversation.clone(),
            sent_at: out.sent_at,
            content: out.content.clone(),
        };
        match r.olm.seal(now, &to, &device.keys, &sessions, draft) {
            Ok(s) => {
                if let Ok(bytes) = s.envelope.to_json() {
                    advanced.insert(s.session.session_id.clone(), s.session);
                    sealed.push((device.device_id.clone(), bytes));
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not seal"),
        }
    }
    sealed
}

/// Where an inbound envelope came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The data channel.
    Direct,
    /// Live relay through the server.
    Relay,
    /// The server's mailbox.
    Mailbox,
}

/// One envelope to take in, and who the signaling server says sent it (none on a data channel).
type Inbound<'a> = (&'a [u8], Option<(&'a UserId, &'a DeviceId)>);

/// Most envelopes taken in under one transaction.
pub const RECEIVE_BATCH: usize = 256;

/// Takes in envelopes that arrived together on a data channel, in order.
pub async fn receive_batch(node: &Node, items: &[Vec<u8>], via: Via) -> Result<(), DeliverError> {
    let items: Vec<Inbound<'_>> = items.iter().map(|b| (b.as_slice(), None)).collect();
    receive_all(node, &items, via).await
}

/// Takes in one envelope. `server_sender` is who the signaling server says sent it; an envelope
/// claiming another sender is dropped (the Olm binding would refuse it anyway). `Ok` means it is
/// durably handled (stored, a known duplicate, or refused for good) and may be acknowledged.
pub async fn receive_from(
    node: &Node,
    bytes: &[u8],
    via: Via,
    server_sender: Option<(&UserId, &DeviceId)>,
) -> Result<(), DeliverError> {
    receive_all(node, &[(bytes, server_sender)], via).await
}

/// What taking in envelopes asks the runtime to do once they are durable.
#[derive(Default)]
struct Taken {
    events: Vec<ChatEvent>,
    /// The messages the burst inserted, as inserted: their events need no read back.
    inserted: HashMap<MessageId, Message>,
    outs: Vec<Outgoing>,
    controls: Vec<(UserId, DeviceId, Content)>,
    undecryptable: Vec<(UserId, dopus_proto::peer::MessageId)>,
}

/// A sending device as stored when the burst began, read once per burst: when we first saw
/// it (`None`: not stored yet) and its stored sessions. Nothing else writes either during the
/// burst: the sessions it advances or creates stay live in the [`Burst`] (which
/// `open_in_burst` prefers over these records) and are saved at its end, and a device the
/// burst stores is noted here too.
type KnownDevices = HashMap<
    (UserId, DeviceId),
    (
        Option<(Timestamp, dopus_types::DeviceKeys)>,
        Vec<OlmSessionRecord>,
    ),
>;

/// Takes in envelopes in order, all in one transaction (group commit): dedupe, decrypt, check
/// the sender binding, apply the chat logic. Events, acknowledgements and control contents go
/// out only after the commit.
async fn receive_all(node: &Node, items: &[Inbound<'_>], via: Via) -> Result<(), DeliverError> {
    let (me, taken) = {
        let mut r = node.ready().await.map_err(|_| DeliverError::NoRoute)?;
        let me = r.get().me();
        let Ready {
            store, olm, chat, ..
        } = r.get_mut();
        // All or nothing: a failure rolls every envelope back, and none is acknowledged. The
        // sessions the envelopes advance stay live through the burst and are pickled and saved
        // once each, at its end, in the same transaction (`OlmMachine::open_in_burst`).
        let taken = store
            .try_batch(|store| {
                let mut taken = Taken::default();
                let mut burst = Burst::default();
                let mut known = KnownDevices::new();
                for (bytes, server_sender) in items {
                    take_one(
                        store,
                        olm,
                        &mut burst,
                        &mut known,
                        chat,
                        bytes,
                        via,
                        *server_sender,
                        &mut taken,
                    )?;
                }
                let sessions: Changes = olm
                    .finish_burst(burst)
                    .into_iter()
                    .map(Change::SaveOlmSession)
                    .collect();
                if !sessions.is_empty() {
                    store.apply(sessions).map_err(local)?;
                }
                Ok::<_, DeliverError>(taken)
            })
            .map_err(local)??;
        (me, taken)
    };
    tracing::trace!(envelopes = items.len(), "envelopes committed");
    super::net::emit_chat_events(node, me, taken.events, &taken.inserted).await;
    let mut failed: HashMap<UserId, Vec<dopus_proto::peer::MessageId>> = HashMap::new();
    for (sender, id) in taken.undecryptable {
        failed.entry(sender).or_default().push(id);
    }
    for (sender, ids) in failed {
        super::recovery::note_undecryptable(node, sender, ids).await;
    }
    for (sender, device, content) in taken.controls {
        super::net::handle_control(node, sender, device, content).await;
    }
    let (delivered, others): (Vec<Outgoing>, Vec<Outgoing>) =
        taken.outs.into_iter().partition(is_delivered_receipt);
    send_ephemeral(node, others).await;
    hold_receipts(node, delivered);
    node.pump.notify_one();
    Ok(())
}

/// How long delivered receipts wait to be merged with those of the envelopes right behind.
/// While a peer sends a stream, each receipt would otherwise cover one small burst, and each
/// costs both sides a Double Ratchet step, an envelope and a commit; 10 ms later is still far
/// quicker than anyone can see a tick change, and the peer's first retry is a second away.
pub const RECEIPT_DELAY: Duration = Duration::from_millis(10);

fn is_delivered_receipt(out: &Outgoing) -> bool {
    matches!(
        out.content,
        Content::Chat(ChatContent::Receipt {
            receipt: ReceiptKind::Delivered,
            ..
        })
    )
}

/// Queues delivered receipts; the first one queued starts a flush [`RECEIPT_DELAY`] later,
/// which sends everything queued by then, merged per peer.
fn hold_receipts(node: &Node, receipts: Vec<Outgoing>) {
    if receipts.is_empty() {
        return;
    }
    let first = {
        let mut held = node
            .held_receipts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = held.is_empty();
        held.extend(receipts);
        first
    };
    if !first {
        return;
    }
    let Some(node) = node.arc() else {
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep(RECEIPT_DELAY).await;
        let receipts = std::mem::take(
            &mut *node
                .held_receipts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        send_ephemeral(&node, coalesce_receipts(receipts)).await;
    });
}

/// Takes in one envelope inside the receive batch.
#[allow(
    clippy::too_many_arguments,
    reason = "the parts of the node's state one envelope touches, borrowed separately"
)]
fn take_one(
    store: &mut dopus_store::SqliteStore,
    olm: &mut dopus_core::e2e::OlmMachine,
    burst: &mut Burst,
    known: &mut KnownDevices,
    chat: &mut dopus_core::chat::Chat,
    bytes: &[u8],
    via: Via,
    server_sender: Option<(&UserId, &DeviceId)>,
    taken: &mut Taken,
) -> Result<(), DeliverError> {
    let envelope = match PeerEnvelope::from_json(bytes) {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(error = %e, ?via, "dropped a malformed envelope");
            return Ok(());
        }
    };
    if let Some((user, device)) = server_sender
        && (&envelope.from.user != user || &envelope.from.device != device)
    {
        tracing::debug!(
            ?via,
            "dropped an envelope whose sender differs from the server's"
        );
        return Ok(());
    }
    let now = account::now();
    let sender = envelope.from.user;
    let envelope_id = EnvelopeId(*envelope.id.as_uuid());
    if store.is_processed(&envelope_id).map_err(local)? {
        // A retry whose receipt got lost: acknowledge again, show nothing.
        taken.outs.push(delivered_receipt(
            sender,
            EnvelopeId(new_id(now).0),
            now,
            envelope.id,
        ));
        return Ok(());
    }
    let key = (sender, envelope.from.device.clone());
    if !known.contains_key(&key) {
        let device = store
            .peer_device(&sender, &envelope.from.device)
            .map_err(local)?;
        let sessions: Vec<OlmSessionRecord> = match &device {
            Some(d) => store.olm_sessions(&sender, &d.device_id).map_err(local)?,
            None => Vec::new(),
        };
        known.insert(
            key.clone(),
            (device.map(|d| (d.first_seen, d.keys)), sessions),
        );
    }
    let (known_device, sessions) = known
        .get(&key)
        .map_or((None, &[][..]), |(f, s)| (*f, &s[..]));
    let first_seen = known_device.map(|(f, _)| f);
    let keys = known_device.map(|(_, k)| k);
    let opened = match olm.open_in_burst(burst, now, &envelope, keys.as_ref(), sessions) {
        Ok(opened) => opened,
        Err(e) => {
            // `already_received` is false: a processed id was answered above.
            match e.recovery(false) {
                Recovery::Ignore | Recovery::Drop => {
                    tracing::debug!(error = %e, ?via, "dropped an envelope");
                }
                Recovery::StartNewSession => {
                    tracing::debug!(peer = %sender.short(), kind = ?e.kind(), ?via, "cannot decrypt an envelope");
                    // Also for `Duplicate`: a used-up key under an id we never stored means the
                    // sender's session was rolled back (docs/e2e.md), unless it was only a stale
                    // copy, which `recovery` tells apart by waiting for the id to arrive.
                    taken.undecryptable.push((sender, envelope.id));
                }
            }
            return Ok(());
        }
    };
    tracing::debug!(
        peer = %sender.short(),
        kind = opened.payload.content.kind_name(),
        new_session = opened.new_session,
        ?via,
        "took in an envelope"
    );
    let mut changes = Changes::new();
    if let Some(cert) = &opened.sender_certificate {
        let saved = PeerDevice {
            user_id: cert.user_id,
            device_id: cert.device_id.clone(),
            keys: cert.keys,
            certificate_json: serde_json::to_string(cert).map_err(local)?,
            first_seen: first_seen.unwrap_or(now),
            updated_at: now,
        };
        if let Some((f, _)) = known.get_mut(&key) {
            *f = Some((saved.first_seen, saved.keys));
        }
        changes.push(Change::SavePeerDevice(saved));
    }
    // The session is saved once for the whole burst, by the caller.
    if let Some(p) = &opened.account_pickle {
        changes.push(Change::SetAccountPickle(Pickle::new(p.clone())));
    }
    // A bulk payload's items first, one by one, each applied before the next as envelopes of
    // their own would be; then the payload itself (for a bulk payload, that marks its id).
    let payload = &opened.payload;
    if let Content::Bulk(BulkContent::Bulk { items }) = &payload.content {
        for item in items {
            let received = chat
                .receive_bulk_item(
                    &*store,
                    now,
                    sender,
                    payload,
                    item,
                    EnvelopeId(new_id(now).0),
                )
                .map_err(local)?;
            changes.extend(received.changes);
            apply_taken(store, std::mem::take(&mut changes), taken)?;
            taken.events.extend(received.events);
            taken.outs.extend(received.replies);
        }
    }
    let received = chat
        .receive(&*store, now, sender, payload, EnvelopeId(new_id(now).0))
        .map_err(local)?;
    changes.extend(received.changes);
    apply_taken(store, changes, taken)?;
    taken.events.extend(received.events);
    taken.outs.extend(received.replies);
    if let Some(content) = received.control {
        taken
            .controls
            .push((sender, envelope.from.device.clone(), content));
    }
    Ok(())
}

/// Applies what taking in one payload changes, and notes the messages it inserted.
fn apply_taken(
    store: &mut dopus_store::SqliteStore,
    changes: Changes,
    taken: &mut Taken,
) -> Result<(), DeliverError> {
    let inserts: Vec<(usize, NewMessage)> = changes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Change::InsertMessage(m) => Some((i, m.clone())),
            _ => None,
        })
        .collect();
    let applied = store.apply(changes).map_err(local)?;
    for (i, m) in inserts {
        if let Some(Outcome::Inserted(seq)) = applied.outcomes.get(i) {
            taken.inserted.insert(m.id, m.stored(*seq));
        }
    }
    Ok(())
}

/// Merges the delivered receipts for one peer into as few envelopes as the id limit allows.
fn coalesce_receipts(outs: Vec<Outgoing>) -> Vec<Outgoing> {
    let mut merged: Vec<Outgoing> = Vec::with_capacity(outs.len());
    for out in outs {
        if let Content::Chat(ChatContent::Receipt {
            receipt: ReceiptKind::Delivered,
            ids,
        }) = &out.content
            && let Some(Outgoing {
                content:
                    Content::Chat(ChatContent::Receipt {
                        receipt: ReceiptKind::Delivered,
                        ids: into,
                    }),
                ..
            }) = merged.iter_mut().rev().find(|m| {
                m.peer == out.peer
                    && matches!(&m.content, Content::Chat(ChatContent::Receipt { receipt: ReceiptKind::Delivered, ids }) if ids.len() < MAX_IDS_PER_MESSAGE)
            })
            && into.len() + ids.len() <= MAX_IDS_PER_MESSAGE
        {
            into.extend(ids.iter().copied());
            continue;
        }
        merged.push(out);
    }
    merged
}
