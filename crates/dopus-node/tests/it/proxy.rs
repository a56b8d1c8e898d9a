//! A hostile signaling server: a WebSocket man-in-the-middle between one node and the real
//! server that can rewrite, record and inject frames. The node cannot tell it from the server
//! (plain `ws://` on loopback), which is exactly the threat model: the server is not trusted.

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// What the proxy does to frames from the server to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward untouched (still recording).
    Pass,
    /// In `bundles` answers, replace each one-time key (or the fallback key when there is none)
    /// with a key of the attacker's.
    SwapOneTimeKey,
    /// In relayed envelopes, flip one byte of the Olm ciphertext (where SDP, candidates and
    /// messages travel).
    FlipCiphertext,
    /// In relayed envelopes, address them to another device of the same user.
    ChangeToDevice,
    /// In relayed envelopes, address them to another user (see [`Proxy::set_other_user`]).
    ChangeToUser,
    /// Flip one byte of the ciphertext of the next relayed envelope only, then pass.
    FlipOnce,
}

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Node to server.
    Up,
    /// Server to node.
    Down,
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    /// Every text frame, after rewriting, in order.
    log: Vec<(Dir, Value)>,
    /// How many frames were rewritten.
    tampered: usize,
    /// Sends frames to the node on the newest connection.
    inject: Option<mpsc::UnboundedSender<String>>,
    /// The user id of the attacker's "other user" rewrite.
    other_user: Option<String>,
}

/// A running man-in-the-middle.
#[derive(Clone)]
pub struct Proxy {
    /// `ws://127.0.0.1:PORT`: give this to the node instead of the server's URL.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// Listens on loopback and forwards every connection to `upstream` (`ws://…`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            mode: Some(Mode::Pass),
            ..State::default()
        }));
        let upstream = upstream.to_owned();
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (st, upstream) = (st.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = connection(tcp, &upstream, st).await;
                });
            }
        });
        Proxy { url, state }
    }

    /// Changes what the proxy does from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    /// The user that [`Mode::ChangeToUser`] readdresses envelopes to.
    pub fn set_other_user(&self, user: &str) {
        self.state.lock().unwrap().other_user = Some(user.to_owned());
    }

    /// How many frames were rewritten so far.
    pub fn tampered(&self) -> usize {
        self.state.lock().unwrap().tampered
    }

    /// The recorded frames.
    pub fn log(&self) -> Vec<(Dir, Value)> {
        self.state.lock().unwrap().log.clone()
    }

    /// Sends `frame` to the node as if the server had sent it.
    pub fn inject(&self, frame: &Value) -> bool {
        let s = self.state.lock().unwrap();
        s.inject
            .as_ref()
            .is_some_and(|tx| tx.send(frame.to_string()).is_ok())
    }
}

/// Rewrites one server-to-node frame according to `mode`; answers whether it changed it.
fn rewrite_down(mode: Mode, other_user: Option<&str>, frame: &mut Value) -> bool {
    match mode {
        Mode::Pass => false,
        Mode::SwapOneTimeKey => {
            if frame["type"] != "bundles" {
                return false;
            }
            let evil = B64.encode([0x66u8; 32]);
            let mut changed = false;
            for b in frame["bundles"].as_array_mut().into_iter().flatten() {
                if b["one_time_key"].is_object() {
                    b["one_time_key"]["key"] = json!(evil);
                } else {
                    b["fallback_key"]["key"] = json!(evil);
                }
                changed = true;
            }
            changed
        }
        Mode::FlipCiphertext | Mode::FlipOnce | Mode::ChangeToDevice | Mode::ChangeToUser => {
            if frame["type"] != "deliver" || frame["kind"] != "relay" {
                return false;
            }
            let Some(mut env) = frame["payload"]
                .as_str()
                .and_then(|p| serde_json::from_str::<Value>(p).ok())
            else {
                return false;
            };
            match mode {
                Mode::FlipCiphertext | Mode::FlipOnce => {
                    let Some(mut ct) = env["ciphertext"].as_str().and_then(|c| B64.decode(c).ok())
                    else {
                        return false;
                    };
                    if ct.is_empty() {
                        return false;
                    }
                    let i = ct.len() / 2;
                    ct[i] ^= 0x01;
                    env["ciphertext"] = json!(B64.encode(&ct));
                }
                Mode::ChangeToDevice => env["to"]["device"] = json!("f".repeat(32)),
                Mode::ChangeToUser => env["to"]["user"] = json!(other_user.unwrap_or("")),
                _ => {}
            }
            frame["payload"] = json!(env.to_string());
            true
        }
    }
}

#[allow(
    clippy::result_large_err,
    reason = "tungstenite's handshake callback signature fixes the error type"
)]
async fn connection(
    tcp: tokio::net::TcpStream,
    upstream: &str,
    state: Arc<Mutex<State>>,
) -> anyhow::Result<()> {
    let path = Arc::new(Mutex::new(String::from("/ws")));
    let p = path.clone();
    let client = tokio_tungstenite::accept_hdr_async(
        tcp,
        move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            *p.lock().unwrap() = req
                .uri()
                .path_and_query()
                .map_or("/ws".to_owned(), |pq| pq.as_str().to_owned());
            Ok(resp)
        },
    )
    .await?;
    let target = format!("{upstream}{}", path.lock().unwrap());
    let (server, _) = tokio_tungstenite::connect_async(target).await?;
    let (mut c_tx, mut c_rx) = client.split();
    let (mut s_tx, mut s_rx) = server.split();
    let (inject_tx, mut inject_rx) = mpsc::unbounded_channel::<String>();
    state.lock().unwrap().inject = Some(inject_tx);

    let up_state = state.clone();
    let up = async move {
        while let Some(Ok(msg)) = c_rx.next().await {
            if let Message::Text(t) = &msg
                && let Ok(v) = serde_json::from_str::<Value>(t.as_str())
            {
                up_state.lock().unwrap().log.push((Dir::Up, v));
            }
            let close = matches!(msg, Message::Close(_));
            if s_tx.send(msg).await.is_err() || close {
                break;
            }
        }
        let _ = s_tx.close().await;
    };
    let down = async move {
        loop {
            let msg = tokio::select! {
                m = s_rx.next() => match m {
                    Some(Ok(m)) => m,
                    _ => break,
                },
                Some(text) = inject_rx.recv() => Message::text(text),
            };
            let msg = match msg {
                Message::Text(t) => match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(mut v) => {
                        let mut s = state.lock().unwrap();
                        let mode = s.mode.unwrap_or(Mode::Pass);
                        let other = s.other_user.clone();
                        if rewrite_down(mode, other.as_deref(), &mut v) {
                            s.tampered += 1;
                            if mode == Mode::FlipOnce {
                                s.mode = Some(Mode::Pass);
                            }
                        }
                        s.log.push((Dir::Down, v.clone()));
                        Message::text(v.to_string())
                    }
                    Err(_) => Message::Text(t),
                },
                other => other,
            };
            let close = matches!(msg, Message::Close(_));
            if c_tx.send(msg).await.is_err() || close {
                break;
            }
        }
        let _ = c_tx.close().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    Ok(())
}
