//! HTTP in front of the WebSocket: `/ws` (upgrade), `/healthz`, `/metrics`; the accept loop
//! with optional TLS and the connection limits.

use crate::connection;
use crate::hub::Hub;
use crate::metrics::Metrics;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use dopus_proto::signaling::{VERSION_PARAM, WS_PATH, negotiate_version};
use futures_util::future::Either;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Bytes a connection reads at a time.
const READ_BUFFER_BYTES: usize = 1024;

/// Bytes of frames a connection buffers before writing even without a flush.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// The peer's address, put into each request's extensions by the accept loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerIp(pub IpAddr);

#[derive(Debug)]
pub(crate) struct AppState {
    pub hub: Arc<Hub>,
    pub per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub shutdown: CancellationToken,
}

/// Holds one connection's place in the per-address and total counts.
struct ConnectionSlot {
    state: Arc<AppState>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.state.per_ip.lock()
            && let Some(n) = map.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        self.state
            .hub
            .metrics
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

fn take_slot(state: &Arc<AppState>, ip: IpAddr) -> Option<ConnectionSlot> {
    let limits = &state.hub.limits;
    let metrics = &state.hub.metrics;
    let mut map = state.per_ip.lock().ok()?;
    if metrics.connections.load(Ordering::Relaxed) as usize >= limits.max_connections {
        return None;
    }
    let n = map.entry(ip).or_insert(0);
    if limits.max_connections_per_ip > 0 && *n >= limits.max_connections_per_ip {
        return None;
    }
    *n += 1;
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    Some(ConnectionSlot {
        state: state.clone(),
        ip,
    })
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(WS_PATH, get(ws_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_handler))
        .with_state(state)
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    let depth = state.hub.backends.mailbox.depth().await.ok();
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.hub.metrics.render(depth),
    )
        .into_response()
}

async fn ws_handler(
    State(state): State<Arc<AppState>>,
    Extension(PeerIp(ip)): Extension<PeerIp>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting_down\n").into_response();
    }
    let Some(slot) = take_slot(&state, ip) else {
        Metrics::inc(&state.hub.metrics.connections_refused_total);
        return (StatusCode::TOO_MANY_REQUESTS, "too_many_connections\n").into_response();
    };
    Metrics::inc(&state.hub.metrics.connections_total);
    let version = negotiate_version(query.get(VERSION_PARAM).map(String::as_str));
    let limits = &state.hub.limits;
    // The hard limit only guards memory; frames between the soft and the hard limit get a
    // `frame_too_large` answer and the connection goes on.
    let hard_limit = (limits.max_frame_bytes * 4).max(256 * 1024);
    upgrade
        // What every connection keeps. Not smaller: tungstenite reserves a frame's whole length
        // on top of what it has already read, so with 512 bytes a login (about 300) already
        // reallocates the buffer to about 1 KiB (seen in a heap profile).
        .read_buffer_size(READ_BUFFER_BYTES)
        // Frames are buffered until the connection task flushes (once per burst of answers or
        // deliveries) or this many bytes wait, so a burst costs one `write` instead of one per
        // frame. The buffer grows only while frames wait: an idle connection keeps none of it.
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(hard_limit * 4)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        // The connection's future is built here and boxed, not wrapped in another `async`
        // block: a wrapper would keep a second copy of the socket in every connection's task.
        .on_upgrade(move |socket| match version {
            Some(v) => {
                let hub = slot.state.hub.clone();
                let shutdown = slot.state.shutdown.clone();
                Either::Left(Box::pin(connection::run(socket, hub, v, shutdown, slot)))
            }
            None => Either::Right(Box::pin(async move {
                let _slot = slot;
                connection::refuse_version(socket).await;
            })),
        })
}

/// Accepts TCP connections until `shutdown`, each served by hyper (HTTP/1.1 with upgrades).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => serve(TokioIo::new(stream), peer, app, shutdown).await,
                        _ => tracing::debug!("TLS handshake failed"),
                    }
                }
                None => serve(TokioIo::new(stream), peer, app, shutdown).await,
            }
        });
    }
}

async fn serve<I>(io: I, peer: SocketAddr, app: Router, shutdown: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let ip = peer.ip();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(PeerIp(ip));
            let app = app.clone();
            async move { tower::ServiceExt::oneshot(app, req).await }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
