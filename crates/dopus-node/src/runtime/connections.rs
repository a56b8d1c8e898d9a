//! Direct connections to contacts (WebRTC data channels over str0m, through `dopus-rtc`): one
//! task per connection attempt, owning its `PeerHandle`.
//!
//! The machine decides (offer, answer, glare, when to close; `dopus_core::machine` links); a
//! task here does what it asks and reports what happens as inputs: its SDP and trickled
//! candidates (which the machine seals and sends through the server), the channel opening, the
//! peer's hello, envelopes that arrive, and the end of the connection. Transmits for the peer
//! come to the task in the order the machine made them and leave in that order.
//!
//! On the channel, each side says hello first (`dopus_proto::channel`); after the peer's hello,
//! envelopes go packed into frames.

use super::files::{FilesTx, Inbox};
use super::mailbox::{ActorTx, ConnCmd, ConnEntry, Msg};
use dopus_core::machine::{ConnectionEvent, Delivery, Inbound, Input, Transmit, Via};
use dopus_proto::channel::{self, ChannelMessage};
use dopus_rtc::{CloseReason, PeerConnection, PeerEvent, PeerEvents, PeerHandle, RtcConfig};
use dopus_types::UserId;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most channel messages taken into one input.
const RECEIVE_BATCH: usize = 256;

/// Starts a connection to `peer` as the offerer.
pub fn offer(
    rt: &tokio::runtime::Handle,
    actor: ActorTx,
    files: FilesTx,
    config: RtcConfig,
    peer: UserId,
    conn: String,
) -> ConnEntry {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = Task {
        peer,
        conn: conn.clone(),
        actor,
        frames: false,
        files,
        blob: None,
        rt: rt.clone(),
    };
    rt.spawn(async move {
        match PeerConnection::offer(config).await {
            Ok((handle, events, sdp)) => {
                task.report(ConnectionEvent::Offered { sdp });
                task.drive(handle, events, rx).await;
            }
            Err(e) => task.report(ConnectionEvent::Closed {
                reason: Some(e.to_string()),
            }),
        }
    });
    ConnEntry { conn, tx }
}

/// Answers the peer's offer.
pub fn answer(
    rt: &tokio::runtime::Handle,
    actor: ActorTx,
    files: FilesTx,
    config: RtcConfig,
    peer: UserId,
    conn: String,
    sdp: String,
) -> ConnEntry {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = Task {
        peer,
        conn: conn.clone(),
        actor,
        frames: false,
        files,
        blob: None,
        rt: rt.clone(),
    };
    rt.spawn(async move {
        match PeerConnection::answer(config, &sdp).await {
            Ok((handle, events, answer)) => {
                task.report(ConnectionEvent::Answered { sdp: answer });
                task.drive(handle, events, rx).await;
            }
            Err(e) => {
                tracing::info!(peer = %peer.short(), error = %e, "could not answer the peer's offer");
                task.report(ConnectionEvent::Closed {
                    reason: Some(e.to_string()),
                });
            }
        }
    });
    ConnEntry { conn, tx }
}

struct Task {
    peer: UserId,
    conn: String,
    actor: ActorTx,
    /// The peer said hello: it reads frames.
    frames: bool,
    /// The file task, and the inbox of our blob channel once it opened.
    files: FilesTx,
    blob: Option<std::sync::Arc<Inbox>>,
    rt: tokio::runtime::Handle,
}

impl Task {
    fn report(&self, event: ConnectionEvent) {
        let _ = self.actor.send(Msg::Input(Input::Connection {
            peer: self.peer,
            conn: self.conn.clone(),
            event,
        }));
    }

    async fn drive(
        mut self,
        handle: PeerHandle,
        mut events: PeerEvents,
        mut cmds: mpsc::UnboundedReceiver<ConnCmd>,
    ) {
        // An event taken off the queue while collecting a batch of data, handled next.
        let mut next: Option<PeerEvent> = None;
        let reason = loop {
            let event = match next.take() {
                Some(e) => e,
                None => tokio::select! {
                    e = events.recv() => match e {
                        Some(e) => e,
                        None => break Some("the connection ended".to_owned()),
                    },
                    c = cmds.recv() => match c {
                        Some(ConnCmd::Close) | None => {
                            handle.close().await;
                            break None;
                        }
                        Some(cmd) => {
                            if let Err(reason) = self.command(&handle, cmd).await {
                                handle.close().await;
                                break Some(reason);
                            }
                            continue;
                        }
                    },
                },
            };
            match event {
                PeerEvent::LocalCandidate(candidate) => {
                    self.report(ConnectionEvent::LocalCandidate { candidate });
                }
                PeerEvent::GatheringComplete => {}
                PeerEvent::RestartOffer(sdp) => {
                    tracing::info!(peer = %self.peer.short(), "path lost; ICE restart offered");
                    self.report(ConnectionEvent::RestartOffered { sdp });
                }
                PeerEvent::State(_) => self.report(ConnectionEvent::Progress),
                PeerEvent::ChannelOpen => {
                    // First on the channel, before any envelope: we read frames.
                    if let Err(e) = handle.send(channel::hello()).await {
                        tracing::debug!(error = %e, "could not say hello on the channel");
                    }
                    self.report(ConnectionEvent::Open);
                    self.report_diagnostics(&handle).await;
                }
                PeerEvent::Data(bytes) => {
                    // Whatever else already arrived is taken in as one input.
                    let mut batch = Vec::new();
                    let mut hello = None;
                    let mut messages = 1;
                    unpack(&bytes, &mut batch, &mut hello);
                    while messages < RECEIVE_BATCH && batch.len() < RECEIVE_BATCH {
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
                        self.frames = true;
                        self.report(ConnectionEvent::Hello { bulk });
                    }
                    if !batch.is_empty() {
                        let peer = self.peer;
                        let _ = self.actor.send(Msg::Input(Input::Envelopes(
                            batch
                                .into_iter()
                                .map(|bytes| Inbound {
                                    bytes,
                                    via: Via::Direct { peer },
                                })
                                .collect(),
                        )));
                    }
                }
                PeerEvent::BlobOpen => {
                    if let Some(old) = self.blob.take() {
                        old.close();
                    }
                    self.blob = Some(self.files.open(&self.rt, self.peer, handle.clone()));
                }
                PeerEvent::BlobData(bytes) => {
                    if let Some(inbox) = &self.blob {
                        inbox.push(bytes);
                        // Whatever else already arrived goes in before the file task wakes.
                        while let Ok(ev) = events.try_recv() {
                            match ev {
                                PeerEvent::BlobData(more) => inbox.push(more),
                                other => {
                                    next = Some(other);
                                    break;
                                }
                            }
                        }
                        self.files.wake();
                    }
                }
                PeerEvent::Closed { reason } => {
                    break match reason {
                        CloseReason::Local => None,
                        other => Some(other.to_string()),
                    };
                }
            }
        };
        if let Some(inbox) = self.blob.take() {
            inbox.close();
            self.files.wake();
        }
        self.report(ConnectionEvent::Closed { reason });
        // Transmits that were still queued never left.
        cmds.close();
        while let Ok(cmd) = cmds.try_recv() {
            if let ConnCmd::Send(t) = cmd {
                self.undelivered(*t, 0);
            }
        }
    }

    async fn command(&mut self, handle: &PeerHandle, cmd: ConnCmd) -> Result<(), String> {
        match cmd {
            ConnCmd::Send(t) => self.send(handle, *t).await,
            ConnCmd::AcceptAnswer(sdp) => {
                if let Err(e) = handle.accept_answer(&sdp).await {
                    tracing::info!(peer = %self.peer.short(), error = %e, "the peer's answer was refused");
                    return Err(e.to_string());
                }
            }
            ConnCmd::AddCandidate(candidate) => {
                if let Err(e) = handle.add_remote_candidate(&candidate).await {
                    tracing::debug!(error = %e, "a remote candidate was refused");
                }
            }
            ConnCmd::AddAudio => match handle.add_audio().await {
                Ok(sdp) => self.report(ConnectionEvent::MediaOffered { sdp }),
                Err(e) => self.report(ConnectionEvent::MediaFailed {
                    reason: e.to_string(),
                }),
            },
            ConnCmd::AcceptMediaOffer(sdp) => match handle.accept_offer(&sdp).await {
                Ok(sdp) => self.report(ConnectionEvent::MediaAnswered { sdp }),
                Err(e) => {
                    tracing::info!(peer = %self.peer.short(), error = %e, "the peer's media offer was refused");
                    self.report(ConnectionEvent::MediaFailed {
                        reason: e.to_string(),
                    });
                }
            },
            ConnCmd::AcceptMediaAnswer(sdp) => {
                if let Err(e) = handle.accept_answer(&sdp).await {
                    tracing::info!(peer = %self.peer.short(), error = %e, "the peer's media answer was refused");
                    self.report(ConnectionEvent::MediaFailed {
                        reason: e.to_string(),
                    });
                }
            }
            ConnCmd::AcceptRestartOffer(sdp) => match handle.accept_offer(&sdp).await {
                Ok(sdp) => {
                    tracing::info!(peer = %self.peer.short(), "the peer restarted ICE; answered");
                    self.report(ConnectionEvent::RestartAnswered { sdp });
                }
                // Crossing offers (ours wins) or a stale one: the connection goes on, and a
                // restart that never completes ends by the connection's own timeout.
                Err(e) => {
                    tracing::info!(peer = %self.peer.short(), error = %e, "the peer's ICE restart offer was refused");
                }
            },
            ConnCmd::AcceptRestartAnswer(sdp) => {
                if let Err(e) = handle.accept_answer(&sdp).await {
                    tracing::info!(peer = %self.peer.short(), error = %e, "the peer's ICE restart answer was refused");
                }
            }
            ConnCmd::Handle(reply) => {
                let _ = reply.send(handle.clone());
            }
            ConnCmd::UpdateIceServers(servers) => {
                if let Err(e) = handle.update_ice_servers(servers).await {
                    tracing::debug!(error = %e, "new relay credentials not applied");
                }
            }
            ConnCmd::ReportDiagnostics => self.report_diagnostics(handle).await,
            ConnCmd::Diagnostics(answer) => {
                if let Ok(Ok(d)) =
                    tokio::time::timeout(Duration::from_secs(2), handle.diagnostics()).await
                {
                    let _ = answer.send(d);
                }
            }
            ConnCmd::Close => {}
        }
        Ok(())
    }

    async fn report_diagnostics(&self, handle: &PeerHandle) {
        if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(2), handle.diagnostics()).await
        {
            let _ = self.actor.send(Msg::Diagnostics(self.peer, d));
        }
    }

    /// Hands a transmit to the channel, packed into frames if the peer reads them, and says
    /// how far it got.
    async fn send(&mut self, handle: &PeerHandle, t: Transmit) {
        let bytes: Vec<Vec<u8>> = t.envelopes.iter().map(|e| e.bytes.clone()).collect();
        let (messages, counts): (Vec<Vec<u8>>, Vec<usize>) =
            channel::pack(bytes, self.frames, handle.max_message_size())
                .into_iter()
                .unzip();
        let (taken, result) = handle.send_all(messages).await;
        if let Err(e) = result {
            tracing::debug!(error = %e, taken, "data channel send failed");
        }
        let taken: usize = counts.iter().take(taken).sum();
        self.undelivered(t, taken);
    }

    /// Reports a transmit of which the first `taken` envelopes left; the rest go through the
    /// server if the transmit allows it.
    fn undelivered(&self, mut t: Transmit, taken: usize) {
        let n = t.envelopes.len();
        if t.report {
            let outcome = (0..n)
                .map(|i| {
                    if i < taken {
                        Delivery::Sent
                    } else {
                        Delivery::Failed
                    }
                })
                .collect();
            let _ = self
                .actor
                .send(Msg::Input(Input::Transmitted { id: t.id, outcome }));
        }
        if taken < n && t.fallback {
            t.envelopes.drain(..taken);
            t.report = false;
            let _ = self.actor.send(Msg::Reroute(t));
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
