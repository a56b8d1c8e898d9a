//! Direct connections to contacts (WebRTC data channels over str0m, through `dopus-rtc`).
//!
//! Protocol flow (docs/peer-protocol.md):
//! - made on demand, when the outbox has something for an online contact;
//! - the offer, the answer and every trickled ICE candidate travel as `Content::Rtc` inside Olm
//!   envelopes through the signaling server, so the server can neither read nor swap the SDP and
//!   its DTLS fingerprint (a swapped fingerprint fails the DTLS handshake);
//! - `conn` names one attempt; signals for another attempt are ignored;
//! - glare (both sides offer at once): the offer from the smaller user ID wins, the other side
//!   drops its own attempt and answers;
//! - every data-channel message carries sealed envelopes, handled exactly like ones from the
//!   mailbox: one envelope, or a frame of several once the peer said hello
//!   (`dopus_proto::channel`); each side sends its hello when the channel opens.

use super::Node;
use super::deliver::{self, Via};
use super::ready::new_id;
use crate::account;
use dopus_core::chat::Outgoing;
use dopus_core::store::EnvelopeId;
use dopus_proto::channel::{self, ChannelMessage};
#[allow(unused_imports)]
use dopus_proto::peer::{
    BulkContent, ChatContent, ContactContent, RtcContent, SessionContent, VerificationContent,
};
use dopus_proto::peer::{Content, Conversation, RtcSignal};
use dopus_rtc::{
    CloseReason, ConnectionState, Diagnostics, IceServer, PeerConnection, PeerEvent, PeerEvents,
    PeerHandle, RtcConfig,
};
use dopus_types::{Timestamp, UserId};
use serde_json::{Value, json};
use std::sync::Arc;

/// One contact's direct connection.
#[derive(Debug)]
pub struct Peer {
    /// Which attempt.
    pub conn: String,
    /// Controls the connection (None while the answerer is being created).
    pub handle: Option<PeerHandle>,
    /// Latest state.
    pub state: ConnectionState,
    /// The data channel is open.
    pub open: bool,
    /// The peer said hello on this connection's channel: it reads frames
    /// (`dopus_proto::channel`), so envelopes go to it packed.
    pub frames: bool,
    /// Its hello also said it reads bulk payloads (`Content::Bulk`).
    pub bulk: bool,
    /// When this attempt started.
    pub started: Timestamp,
    /// We made the offer.
    pub offerer: bool,
    /// Why the last attempt ended, for the connection panel.
    pub last_error: Option<String>,
    /// The latest diagnostics fetched for this connection (pair, RTT), so lists that cannot
    /// await the connection task still show them.
    pub last_diag: Option<Diagnostics>,
}

impl Peer {
    /// The handle if the channel is open.
    pub fn open_handle(&self) -> Option<PeerHandle> {
        self.open.then(|| self.handle.clone()).flatten()
    }

    /// Whether an attempt is under way and younger than `grace_ms`.
    pub fn connecting_since(&self, now: Timestamp, grace_ms: u64) -> bool {
        !self.open
            && !matches!(
                self.state,
                ConnectionState::Failed(_) | ConnectionState::Closed
            )
            && now.millis_since(self.started) < grace_ms
    }

    /// Closes the connection.
    pub fn close(self) {
        if let Some(h) = self.handle {
            tokio::spawn(async move { h.close().await });
        }
    }

    /// `Connection` for the API.
    pub fn to_json(&self, diag: Option<&Diagnostics>, online: bool, server: bool) -> Value {
        let state = match &self.state {
            ConnectionState::New => "new",
            ConnectionState::Checking => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Failed(_) => "failed",
            ConnectionState::Closed => "closed",
        };
        let mode = if self.open {
            "direct"
        } else if server {
            "mailbox"
        } else {
            "none"
        };
        let mode = if !self.open && server && online {
            "relayed"
        } else {
            mode
        };
        let diag = diag.or(self.last_diag.as_ref());
        let pair = diag.and_then(|d| d.selected_pair.as_ref());
        let reason = match &self.state {
            ConnectionState::Failed(r) => Some(r.to_string()),
            _ => diag
                .and_then(|d| d.failure.as_ref())
                .map(ToString::to_string)
                .or_else(|| self.last_error.clone()),
        };
        json!({
            "mode": mode,
            "state": state,
            "local_candidate": pair.map(|p| p.local.to_string()),
            "remote_candidate": pair.map(|p| p.remote.to_string()),
            "rtt_ms": diag.and_then(|d| d.rtt).map(|r| r.as_secs_f64() * 1000.0),
            "reason": reason,
            "traffic": diag.map(|d| json!({
                "messages_sent": d.messages_sent,
                "messages_received": d.messages_received,
                "bytes_sent": d.bytes_sent,
                "bytes_received": d.bytes_received,
                "send_waits": d.send_waits,
            })),
        })
    }
}

/// The connection configuration from the settings.
fn config(node: &Node, ice: &[String]) -> RtcConfig {
    let mut cfg = RtcConfig {
        include_loopback: true,
        ..RtcConfig::default()
    };
    cfg.ice_servers = ice
        .iter()
        .filter_map(|u| IceServer::parse(u).ok())
        .collect();
    cfg.dtls_identity = node.dtls.get().cloned();
    cfg
}

fn conn_id() -> String {
    let bytes = account::random_bytes::<12>();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts a connection to `peer` as the offerer, unless one is open or under way.
pub async fn connect(node: &Node, peer: UserId) {
    let ice = {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        if let Some(p) = r.peers.get(&peer)
            && (p.open || p.connecting_since(account::now(), 15_000))
        {
            return;
        }
        let conn = conn_id();
        r.peers.insert(
            peer,
            Peer {
                conn,
                handle: None,
                state: ConnectionState::New,
                open: false,
                frames: false,
                bulk: false,
                started: account::now(),
                offerer: true,
                last_error: None,
                last_diag: None,
            },
        );
        r.ice_servers()
    };
    if deliver::establish_sessions_if_needed(node, peer)
        .await
        .is_err()
    {
        forget(node, peer, None).await;
        return;
    }
    let (handle, events, sdp) = match PeerConnection::offer(config(node, &ice)).await {
        Ok(x) => x,
        Err(e) => {
            forget(node, peer, Some(e.to_string())).await;
            return;
        }
    };
    let conn = {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        let Some(p) = r.peers.get_mut(&peer) else {
            return;
        };
        p.handle = Some(handle);
        p.conn.clone()
    };
    signal(node, peer, &conn, RtcSignal::Offer { sdp }).await;
    if let Some(node) = node.arc() {
        tokio::spawn(drive(node, peer, conn, events));
    }
}

async fn forget(node: &Node, peer: UserId, error: Option<String>) {
    if let Ok(mut r) = node.ready().await
        && let Some(p) = r.get_mut().peers.get_mut(&peer)
    {
        p.state = ConnectionState::Closed;
        p.last_error = error;
    }
}

/// Sends one WebRTC signal, sealed, through the server (never stored: stale signals are useless).
async fn signal(node: &Node, peer: UserId, conn: &str, signal: RtcSignal) {
    let now = account::now();
    let out = Outgoing {
        peer,
        id: EnvelopeId(new_id(now).0),
        conversation: Conversation::Direct,
        sent_at: now,
        content: Content::Rtc(RtcContent::Rtc {
            conn: conn.to_owned(),
            signal,
        }),
        reliable: false,
    };
    deliver::send_via_server(node, vec![out]).await;
}

/// Handles a WebRTC signal from `peer`.
pub async fn on_signal(node: &Node, peer: UserId, conn: String, signal: RtcSignal) {
    match signal {
        RtcSignal::Offer { sdp } => on_offer(node, peer, conn, sdp).await,
        RtcSignal::Answer { sdp } => {
            if let Some(h) = handle_for(node, &peer, &conn).await
                && let Err(e) = h.accept_answer(&sdp).await
            {
                tracing::info!(peer = %peer.short(), error = %e, "the peer's answer was refused");
                forget(node, peer, Some(e.to_string())).await;
            }
        }
        RtcSignal::Candidate { candidate, .. } => {
            if let Some(h) = handle_for(node, &peer, &conn).await {
                let _ = h.add_remote_candidate(&candidate).await;
            }
        }
        RtcSignal::EndOfCandidates => {}
    }
}

async fn handle_for(node: &Node, peer: &UserId, conn: &str) -> Option<PeerHandle> {
    let r = node.ready().await.ok()?;
    let p = r.get().peers.get(peer)?;
    (p.conn == conn).then(|| p.handle.clone()).flatten()
}

async fn on_offer(node: &Node, peer: UserId, conn: String, sdp: String) {
    let ice = {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        let me = r.me();
        if let Some(p) = r.peers.get(&peer) {
            let live = p.open || p.connecting_since(account::now(), 15_000);
            // Glare: both offered; the smaller user ID's offer wins.
            if live && p.offerer && !p.open && me < peer {
                return;
            }
        }
        if let Some(old) = r.peers.remove(&peer) {
            old.close();
        }
        r.peers.insert(
            peer,
            Peer {
                conn: conn.clone(),
                handle: None,
                state: ConnectionState::New,
                open: false,
                frames: false,
                bulk: false,
                started: account::now(),
                offerer: false,
                last_error: None,
                last_diag: None,
            },
        );
        r.ice_servers()
    };
    let (handle, events, answer) = match PeerConnection::answer(config(node, &ice), &sdp).await {
        Ok(x) => x,
        Err(e) => {
            tracing::info!(peer = %peer.short(), error = %e, "could not answer the peer's offer");
            forget(node, peer, Some(e.to_string())).await;
            return;
        }
    };
    {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let Some(p) = r.get_mut().peers.get_mut(&peer) else {
            return;
        };
        if p.conn != conn {
            return;
        }
        p.handle = Some(handle);
    }
    signal(node, peer, &conn, RtcSignal::Answer { sdp: answer }).await;
    if let Some(node) = node.arc() {
        tokio::spawn(drive(node, peer, conn, events));
    }
}

/// Follows one connection's events until it closes. Boxed with an explicit `Send` type: the task
/// receives envelopes, which may carry a new offer, which spawns this task again, and the
/// compiler cannot prove `Send` through that cycle of anonymous futures on its own.
fn drive(
    node: Arc<Node>,
    peer: UserId,
    conn: String,
    events: PeerEvents,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(drive_inner(node, peer, conn, events))
}

async fn drive_inner(node: Arc<Node>, peer: UserId, conn: String, mut events: PeerEvents) {
    // An event taken off the queue while collecting a batch of data, handled next.
    let mut next: Option<PeerEvent> = None;
    loop {
        let event = match next.take() {
            Some(e) => e,
            None => match events.recv().await {
                Some(e) => e,
                None => break,
            },
        };
        match event {
            PeerEvent::LocalCandidate(candidate) => {
                signal(
                    &node,
                    peer,
                    &conn,
                    RtcSignal::Candidate {
                        candidate,
                        sdp_mid: None,
                        sdp_m_line_index: None,
                    },
                )
                .await;
            }
            PeerEvent::GatheringComplete => {}
            PeerEvent::State(state) => {
                update(&node, peer, &conn, |p| p.state = state).await;
            }
            PeerEvent::ChannelOpen => {
                let mut handle = None;
                update(&node, peer, &conn, |p| {
                    p.open = true;
                    p.state = ConnectionState::Connected;
                    handle = p.handle.clone();
                })
                .await;
                // First on the channel, before any envelope: we read frames.
                if let Some(h) = handle
                    && let Err(e) = h.send(channel::hello()).await
                {
                    tracing::debug!(error = %e, "could not say hello on the channel");
                }
                node.pump.notify_one();
                // The pair and RTT are known once the channel is open: show them.
                if let Ok(value) = node.connection(peer).await {
                    node.emit(json!({ "type": "connection", "user_id": peer.to_string(), "connection": value }));
                }
            }
            PeerEvent::Data(bytes) => {
                // Whatever else already arrived is taken in under the same transaction.
                let mut batch = Vec::new();
                let mut hello = None;
                let mut messages = 1;
                unpack(&bytes, &mut batch, &mut hello);
                while messages < deliver::RECEIVE_BATCH && batch.len() < deliver::RECEIVE_BATCH {
                    match events.try_recv() {
                        Ok(PeerEvent::Data(more)) => {
                            unpack(&more, &mut batch, &mut hello);
                            messages += 1;
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Some(bulk) = hello {
                    update(&node, peer, &conn, |p| {
                        p.frames = true;
                        p.bulk = bulk;
                    })
                    .await;
                    node.pump.notify_one();
                }
                if !batch.is_empty()
                    && let Err(e) = deliver::receive_batch(&node, &batch, Via::Direct).await
                {
                    tracing::debug!(error = %e, "could not handle direct envelopes");
                }
            }
            PeerEvent::Closed { reason } => {
                let reason_text = match &reason {
                    CloseReason::Local => None,
                    other => Some(other.to_string()),
                };
                update(&node, peer, &conn, |p| {
                    p.open = false;
                    p.state = ConnectionState::Closed;
                    p.last_error = reason_text;
                })
                .await;
                node.pump.notify_one();
                break;
            }
        }
    }
}

/// Adds the envelopes of one channel message to `batch` (noting a hello, and whether it said
/// the peer reads bulk payloads); a malformed message is dropped, as a malformed envelope would
/// be.
fn unpack(message: &[u8], batch: &mut Vec<Vec<u8>>, hello: &mut Option<bool>) {
    match channel::decode(message) {
        Ok(ChannelMessage::Single(envelope)) => batch.push(envelope.to_vec()),
        Ok(ChannelMessage::Envelopes(envelopes)) => {
            batch.extend(envelopes.into_iter().map(<[u8]>::to_vec));
        }
        Ok(ChannelMessage::Hello { bulk }) => *hello = Some(bulk),
        Err(e) => tracing::debug!(error = %e, "malformed channel message dropped"),
    }
}

async fn update(node: &Node, peer: UserId, conn: &str, f: impl FnOnce(&mut Peer)) {
    let value = {
        let Ok(mut r) = node.ready().await else {
            return;
        };
        let r = r.get_mut();
        let server = r.signaling.is_some();
        let online = r.presence.contains_key(&peer);
        let Some(p) = r.peers.get_mut(&peer) else {
            return;
        };
        if p.conn != conn {
            return;
        }
        f(p);
        p.to_json(None, online, server)
    };
    node.emit(json!({ "type": "connection", "user_id": peer.to_string(), "connection": value }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_says_whether_the_peer_reads_bulk_payloads() {
        let mut batch = Vec::new();
        let mut hello = None;
        // A framing-2 node's hello: frames, but never a bulk payload to it.
        unpack(&[channel::FRAME_V2], &mut batch, &mut hello);
        assert_eq!(hello, Some(false));
        unpack(&channel::hello(), &mut batch, &mut hello);
        assert_eq!(hello, Some(true));
        assert!(batch.is_empty());
        // Envelopes, framed or single, are taken out in order; garbage is dropped.
        let framed = channel::pack(vec![b"{1}".to_vec(), b"{2}".to_vec()], true, 1000);
        unpack(&framed[0].0, &mut batch, &mut hello);
        unpack(b"{3}", &mut batch, &mut hello);
        unpack(&[0x07, 1, 2], &mut batch, &mut hello);
        assert_eq!(batch, [b"{1}".to_vec(), b"{2}".to_vec(), b"{3}".to_vec()]);
    }
}
