//! The STUN responder: answers Binding requests so clients learn their public address without a
//! third-party STUN server. Everything that is not a well-formed Binding request is ignored.

use crate::metrics::Metrics;
use dopus_proto::stun::{binding_success, parse_binding_request};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Serves Binding requests on `socket` until `shutdown`.
pub(crate) async fn serve(socket: UdpSocket, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut buf = [0u8; 1500];
    loop {
        let (len, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                Err(_) => continue,
            },
        };
        let Ok(tid) = parse_binding_request(&buf[..len]) else {
            continue;
        };
        let response = binding_success(tid, from);
        if socket.send_to(&response, from).await.is_ok() {
            Metrics::inc(&metrics.stun_requests_total);
        }
    }
}
