//! The node's side of the signaling server: the client task, what it reports (as inputs for
//! the actor), and the requests and transmits the machine asks for.
//!
//! - The client logs in by signing the server's challenge with our identity key and keeps
//!   reconnecting with backoff; it re-sends our status and contact list after every login.
//! - Everything the client reports becomes an [`Input`] tagged with this client's generation,
//!   so a replaced client's late reports are dropped.
//! - Envelopes for one peer leave through the server in the order the machine made them: one
//!   sender task per peer takes its transmits in order (Olm messages must arrive roughly in
//!   order), while different peers go in parallel.

use super::mailbox::{ActorTx, Msg, report_failed};
use dopus_core::identity::Identity;
use dopus_core::machine::{
    Delivery, Inbound, Input, SignalingRequest, SignalingState, Transmit, Via,
};
use dopus_proto::peer::PeerAddress;
use dopus_proto::signaling::Status;
use dopus_signaling::{AuthSigner, ClientConfig, ConnectionState, Event, SignalingClient};
use dopus_types::{DeviceId, Signature, UserId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most relayed envelopes taken in one input.
const RECEIVE_BATCH: usize = 256;
/// A peer's sender task ends after this long without work.
const SENDER_IDLE: Duration = Duration::from_secs(30);

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

fn state(s: ConnectionState) -> SignalingState {
    match s {
        ConnectionState::Disconnected => SignalingState::Disconnected,
        ConnectionState::Connecting => SignalingState::Connecting,
        ConnectionState::Authenticating => SignalingState::Authenticating,
        ConnectionState::Connected => SignalingState::Connected,
    }
}

/// The signaling client of one generation and the per-peer sender tasks.
pub struct Server {
    client: SignalingClient,
    generation: u64,
    senders: BTreeMap<UserId, mpsc::UnboundedSender<Transmit>>,
}

impl Server {
    /// Starts a client for `url` (must be called inside the node's runtime).
    pub fn start(
        url: &str,
        device: DeviceId,
        identity: Arc<Identity>,
        status: Status,
        generation: u64,
        rt: &tokio::runtime::Handle,
        actor: ActorTx,
    ) -> Server {
        let url = if url.contains("/ws") {
            url.to_owned()
        } else {
            format!("{}/ws", url.trim_end_matches('/'))
        };
        let (client, events) =
            SignalingClient::start(ClientConfig::new(url, device), Arc::new(Signer(identity)));
        let c = client.clone();
        rt.spawn(async move {
            // Desired state, re-sent by the client after every reconnect.
            if let Err(e) = c.set_status(status).await {
                tracing::debug!(error = %e, "status not sent now; it will be on login");
            }
        });
        rt.spawn(forward(events, generation, actor));
        Server {
            client,
            generation,
            senders: BTreeMap::new(),
        }
    }

    /// Sends a transmit through the server, after everything sent earlier to the same peer.
    pub fn transmit(&mut self, t: Transmit, rt: &tokio::runtime::Handle, actor: &ActorTx) {
        let peer = t.peer;
        let t = match self.senders.get(&peer) {
            Some(s) => match s.send(t) {
                Ok(()) => return,
                Err(mpsc::error::SendError(t)) => t,
            },
            None => t,
        };
        // No sender task, or it ended while idle: start one.
        let (tx, rx) = mpsc::unbounded_channel();
        if let Err(mpsc::error::SendError(t)) = tx.send(t) {
            report_failed(actor, &t);
            return;
        }
        rt.spawn(send_loop(self.client.clone(), peer, rx, actor.clone()));
        self.senders.insert(peer, tx);
    }

    /// Performs a request; its answer comes back as an input.
    pub fn request(&self, req: SignalingRequest, rt: &tokio::runtime::Handle, actor: &ActorTx) {
        let client = self.client.clone();
        let actor = actor.clone();
        let generation = self.generation;
        let answer = move |input: Input| {
            let _ = actor.send(Msg::ServerInput(generation, input));
        };
        rt.spawn(async move {
            match req {
                SignalingRequest::FetchBundle { peer } => {
                    let result = client
                        .fetch_bundle(peer)
                        .await
                        .map_err(|e| e.to_string());
                    answer(Input::Bundles { peer, result });
                }
                SignalingRequest::PublishBundle { bundle } => {
                    let result = client
                        .publish_bundle((*bundle).clone())
                        .await
                        .map_err(|e| e.to_string());
                    answer(Input::Published { bundle, result });
                }
                SignalingRequest::SetStatus(status) => {
                    if let Err(e) = client.set_status(status).await {
                        tracing::debug!(error = %e, "status not sent now; it will be on login");
                    }
                }
                SignalingRequest::SyncContacts(contacts) => {
                    match client.sync_contacts(contacts).await {
                        Ok(entries) => answer(Input::ContactsSynced(
                            entries.into_iter().map(|e| (e.user, e.status)).collect(),
                        )),
                        Err(e) => tracing::debug!(
                            error = %e,
                            "contacts not synced now; they will be on login"
                        ),
                    }
                }
                SignalingRequest::AckMailbox(ids) => {
                    if let Err(e) = client.ack(ids).await {
                        tracing::debug!(error = %e, "mailbox ack failed; the items will come again");
                    }
                }
            }
        });
    }

    /// Says `offline`, closes the connection and stops reconnecting.
    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }
}

/// One peer's sender: relays each envelope in order and reports how it went.
async fn send_loop(
    client: SignalingClient,
    peer: UserId,
    mut rx: mpsc::UnboundedReceiver<Transmit>,
    actor: ActorTx,
) {
    while let Ok(Some(t)) = tokio::time::timeout(SENDER_IDLE, rx.recv()).await {
        let mut outcome = Vec::with_capacity(t.envelopes.len());
        for envelope in &t.envelopes {
            let delivery = match String::from_utf8(envelope.bytes.clone()) {
                Ok(payload) => match client
                    .relay(peer, Some(envelope.device.clone()), payload, t.store)
                    .await
                {
                    Ok(o) if !o.delivered.is_empty() => Delivery::Sent,
                    Ok(o) if !o.queued.is_empty() => Delivery::Stored,
                    Ok(_) => Delivery::Failed,
                    Err(e) => {
                        tracing::debug!(error = %e, "relay failed");
                        Delivery::Failed
                    }
                },
                Err(_) => Delivery::Failed,
            };
            outcome.push(delivery);
        }
        if t.report {
            let _ = actor.send(Msg::Input(Input::Transmitted { id: t.id, outcome }));
        }
    }
}

/// Turns what the client reports into inputs for the actor.
async fn forward(mut events: mpsc::UnboundedReceiver<Event>, generation: u64, actor: ActorTx) {
    let send = |input: Input| actor.send(Msg::ServerInput(generation, input)).is_ok();
    let mut next: Option<Event> = None;
    loop {
        let event = match next.take() {
            Some(e) => e,
            None => match events.recv().await {
                Some(e) => e,
                None => return,
            },
        };
        let ok = match event {
            Event::State(s) => send(Input::Signaling(state(s))),
            Event::Authenticated { ice_servers, .. } => {
                // Each login brings fresh relay credentials (they expire): new connections use
                // them. Addresses and credentials are never logged.
                let relays = ice_servers
                    .iter()
                    .flat_map(|info| {
                        let (user, pass) = (
                            info.username.clone().unwrap_or_default(),
                            info.credential.clone().unwrap_or_default(),
                        );
                        info.urls.iter().filter_map(move |url| {
                            dopus_rtc::IceServer::turn(url, &user, &pass)
                                .or_else(|_| dopus_rtc::IceServer::parse(url))
                                .ok()
                        })
                    })
                    .collect();
                let _ = actor.send(Msg::Relays(generation, relays));
                send(Input::Authenticated)
            }
            Event::Retrying { delay } => actor
                .send(Msg::Retrying(
                    generation,
                    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                ))
                .is_ok(),
            Event::AuthFailed { code } => send(Input::AuthFailed {
                code: code.to_string(),
            }),
            Event::Incoming(first) => {
                // Whatever else already arrived goes in the same input (one batch).
                let mut batch = vec![inbound(first)];
                while batch.len() < RECEIVE_BATCH {
                    match events.try_recv() {
                        Ok(Event::Incoming(more)) => batch.push(inbound(more)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                send(Input::Envelopes(batch))
            }
            Event::Presence { user, status } => send(Input::Presence { user, status }),
            Event::OneTimeKeysLow { remaining, .. } => send(Input::OneTimeKeysLow { remaining }),
            Event::ServerNotice { code, message: _ } => {
                tracing::info!(code = %code, "signaling server notice");
                true
            }
        };
        if !ok {
            return;
        }
    }
}

fn inbound(incoming: dopus_signaling::Incoming) -> Inbound {
    let from = PeerAddress {
        user: incoming.from.user,
        device: incoming.from.device,
    };
    let via = match incoming.ack {
        Some(ack) => Via::Mailbox {
            from,
            ack: ack.mailbox_id(),
        },
        None => Via::Relay { from },
    };
    Inbound {
        bytes: incoming.payload.into_bytes(),
        via,
    }
}
