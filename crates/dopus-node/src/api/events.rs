//! `GET /api/v1/events`: one WebSocket per UI or `discordopus events`, fed from the node's
//! broadcast channel. A client that falls behind by more than the channel holds is told so and
//! disconnected; it reconnects and re-fetches state (docs/api.md: events are not replayed).

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::SinkExt;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// What the events endpoint needs.
#[derive(Clone, Debug)]
pub struct EventsState {
    /// Where events come from.
    pub events: broadcast::Sender<Arc<str>>,
}

/// Upgrades to a WebSocket and streams events.
pub async fn events(State(state): State<EventsState>, ws: WebSocketUpgrade) -> Response {
    let rx = state.events.subscribe();
    ws.max_message_size(4096)
        .on_upgrade(move |socket| stream(socket, rx))
}

/// Most events written to the socket before it is flushed: events that are already waiting
/// go out together (one write instead of one per event), which is what lets a UI keep up with
/// a node that takes in thousands of messages a second.
const FLUSH_EVERY: usize = 64;

async fn stream(mut socket: WebSocket, mut rx: broadcast::Receiver<Arc<str>>) {
    loop {
        tokio::select! {
            event = rx.recv() => {
                let mut next = event;
                let mut written = 0;
                loop {
                    match next {
                        Ok(value) => {
                            if socket.feed(Message::text(value.as_ref())).await.is_err() {
                                return;
                            }
                            written += 1;
                        }
                        Err(RecvError::Lagged(n)) => {
                            let note = serde_json::to_string(&super::dto::Event::Lagged { missed: n })
                                .unwrap_or_default();
                            let _ = socket.send(Message::text(note)).await;
                            let _ = socket.send(Message::Close(None)).await;
                            return;
                        }
                        Err(RecvError::Closed) => {
                            let _ = socket.send(Message::Close(None)).await;
                            return;
                        }
                    }
                    if written >= FLUSH_EVERY {
                        break;
                    }
                    next = match rx.try_recv() {
                        Ok(value) => Ok(value),
                        Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                        Err(TryRecvError::Closed) => Err(RecvError::Closed),
                        Err(TryRecvError::Empty) => break,
                    };
                }
                if socket.flush().await.is_err() {
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {} // pings are answered by axum; nothing else is expected
            },
        }
    }
}
