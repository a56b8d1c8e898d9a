//! Errors of the peer-connection API.

use crate::cert::CertError;
use crate::config::ConfigError;

/// Why a peer-connection call failed.
///
/// No variant carries an address, a key or message content, so `Display` is safe to log.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The DTLS certificate could not be generated.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// No local address to bind (the policy filtered them all out).
    #[error("no usable local address to bind")]
    NoLocalAddress,
    /// Binding a UDP socket failed.
    #[error("could not bind a UDP socket: {0}")]
    Bind(std::io::ErrorKind),
    /// The remote SDP could not be parsed or was refused by the engine.
    #[error("invalid remote session description: {0}")]
    InvalidSdp(String),
    /// A remote candidate string could not be parsed.
    #[error("invalid remote ICE candidate")]
    InvalidCandidate,
    /// The call does not fit the negotiation state (an answer without a pending offer, or two
    /// offers crossing).
    #[error("negotiation out of order: {0}")]
    Negotiation(&'static str),
    /// The message is larger than `max_message_size`.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    MessageTooLarge {
        /// Size of the refused message.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Empty messages are refused: SCTP cannot carry zero bytes and str0m does not pad them as
    /// RFC 8831 asks, so they would silently vanish.
    #[error("empty messages cannot be sent")]
    EmptyMessage,
    /// The WebRTC engine refused the operation.
    #[error("WebRTC error: {0}")]
    Engine(String),
    /// A media write was refused (no audio m-line negotiated, no call attached, a full
    /// queue); the reason says which.
    #[error("media refused: {0}")]
    Media(String),
    /// The connection is closed (or closing); nothing more can be done with it.
    #[error("the peer connection is closed")]
    Closed,
}
