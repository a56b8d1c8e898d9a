//! `GET /api/v1/events`: one WebSocket per UI or `discordopus events`, fed from the node's
//! broadcast channel. A client that falls behind by more than the channel holds is told so and
//! disconnected; it reconnects and re-fetches state (docs/api.md: events are not replayed).

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// What the events endpoint needs.
#[derive(Clone, Debug)]
pub struct EventsState {
    /// Where events come from.
    pub events: broadcast::Sender<Value>,
}

/// Upgrades to a WebSocket and streams events.
pub async fn events(State(state): State<EventsState>, ws: WebSocketUpgrade) -> Response {
    let rx = state.events.subscribe();
    ws.max_message_size(4096)
        .on_upgrade(move |socket| stream(socket, rx))
}

async fn stream(mut socket: WebSocket, mut rx: broadcast::Receiver<Value>) {
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Ok(value) => {
                    if socket.send(Message::text(value.to_string())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    let note = serde_json::json!({ "type": "lagged", "missed": n });
                    let _ = socket.send(Message::text(note.to_string())).await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Err(RecvError::Closed) => {
                    let _ = socket.send(Message::Close(None)).await;
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
