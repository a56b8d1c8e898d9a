//! Counters for `/metrics`, in the Prometheus text format. Nothing here is labelled by user,
//! device or address.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The server's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections (authenticated or not).
    pub connections: AtomicU64,
    /// Authenticated connections.
    pub authenticated: AtomicU64,
    /// WebSocket connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused by a connection limit.
    pub connections_refused_total: AtomicU64,
    /// Successful logins.
    pub auth_success_total: AtomicU64,
    /// Failed logins.
    pub auth_failure_total: AtomicU64,
    /// Frames received from clients.
    pub frames_received_total: AtomicU64,
    /// Frames answered with an error.
    pub frame_errors_total: AtomicU64,
    /// Frames dropped by the rate limit.
    pub rate_limited_total: AtomicU64,
    /// Frames relayed live to a device.
    pub relayed_total: AtomicU64,
    /// Items stored in a mailbox.
    pub mailbox_stored_total: AtomicU64,
    /// Mailbox items acknowledged.
    pub mailbox_acked_total: AtomicU64,
    /// Bundles published.
    pub bundles_published_total: AtomicU64,
    /// Bundle fetches answered.
    pub bundles_fetched_total: AtomicU64,
    /// Presence updates sent.
    pub presence_updates_total: AtomicU64,
    /// STUN binding requests answered.
    pub stun_requests_total: AtomicU64,
    pub turn_allocations: AtomicU64,
    pub turn_allocations_total: AtomicU64,
    pub turn_relayed_bytes_total: AtomicU64,
    pub turn_relayed_packets_total: AtomicU64,
    pub turn_refused_total: AtomicU64,
    pub turn_dropped_total: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric; `mailbox_depth` is read from the store by the caller.
    pub fn render(&self, mailbox_depth: Option<u64>) -> String {
        let mut out = String::with_capacity(2048);
        let mut put = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        put(
            "dopus_connections",
            "gauge",
            "Open WebSocket connections.",
            g(&self.connections),
        );
        put(
            "dopus_connections_authenticated",
            "gauge",
            "Authenticated connections.",
            g(&self.authenticated),
        );
        put(
            "dopus_connections_total",
            "counter",
            "WebSocket connections accepted.",
            g(&self.connections_total),
        );
        put(
            "dopus_connections_refused_total",
            "counter",
            "Connections refused by a limit.",
            g(&self.connections_refused_total),
        );
        put(
            "dopus_auth_success_total",
            "counter",
            "Successful logins.",
            g(&self.auth_success_total),
        );
        put(
            "dopus_auth_failure_total",
            "counter",
            "Failed logins.",
            g(&self.auth_failure_total),
        );
        put(
            "dopus_frames_received_total",
            "counter",
            "Frames received from clients.",
            g(&self.frames_received_total),
        );
        put(
            "dopus_frame_errors_total",
            "counter",
            "Frames answered with an error.",
            g(&self.frame_errors_total),
        );
        put(
            "dopus_rate_limited_total",
            "counter",
            "Frames dropped by the rate limit.",
            g(&self.rate_limited_total),
        );
        put(
            "dopus_relayed_frames_total",
            "counter",
            "Frames relayed live to a device.",
            g(&self.relayed_total),
        );
        put(
            "dopus_mailbox_stored_total",
            "counter",
            "Items stored in a mailbox.",
            g(&self.mailbox_stored_total),
        );
        put(
            "dopus_mailbox_acked_total",
            "counter",
            "Mailbox items acknowledged.",
            g(&self.mailbox_acked_total),
        );
        put(
            "dopus_bundles_published_total",
            "counter",
            "Bundles published.",
            g(&self.bundles_published_total),
        );
        put(
            "dopus_bundles_fetched_total",
            "counter",
            "Bundle fetches answered.",
            g(&self.bundles_fetched_total),
        );
        put(
            "dopus_presence_updates_total",
            "counter",
            "Presence updates sent.",
            g(&self.presence_updates_total),
        );
        put(
            "dopus_stun_requests_total",
            "counter",
            "STUN binding requests answered.",
            g(&self.stun_requests_total),
        );
        put(
            "dopus_turn_allocations",
            "gauge",
            "TURN allocations alive.",
            g(&self.turn_allocations),
        );
        put(
            "dopus_turn_allocations_total",
            "counter",
            "TURN allocations made.",
            g(&self.turn_allocations_total),
        );
        put(
            "dopus_turn_relayed_bytes_total",
            "counter",
            "Bytes relayed between TURN clients and their peers (payloads, both directions).",
            g(&self.turn_relayed_bytes_total),
        );
        put(
            "dopus_turn_relayed_packets_total",
            "counter",
            "Packets relayed between TURN clients and their peers (both directions).",
            g(&self.turn_relayed_packets_total),
        );
        put(
            "dopus_turn_refused_total",
            "counter",
            "TURN requests refused: unknown or expired credentials, forbidden peers, quotas.",
            g(&self.turn_refused_total),
        );
        put(
            "dopus_turn_dropped_total",
            "counter",
            "Relayed packets dropped by the TURN bandwidth limits.",
            g(&self.turn_dropped_total),
        );
        if let Some(depth) = mailbox_depth {
            put(
                "dopus_mailbox_depth",
                "gauge",
                "Items waiting in all mailboxes.",
                depth,
            );
        }
        out
    }
}
