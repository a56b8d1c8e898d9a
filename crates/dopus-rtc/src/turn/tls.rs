//! TLS to a TURN relay (`turns:`), sans-IO on rustls: the task moves ciphertext between the
//! TCP stream and [`TlsLink`]; the relay code writes and reads plaintext, so the ChannelData
//! padding of [`super::framing`] sits inside TLS, where RFC 8656 §12.5 puts it.
//!
//! Plaintext written before the handshake is done is buffered by rustls and sent after it.

use std::io::{Read, Write};
use std::sync::Arc;

/// The most plaintext taken from TLS per read of the stream (one read of the task is at most
/// 64 KiB of ciphertext, so this is never the limit in practice; it bounds the loop).
const MAX_PLAINTEXT_PER_READ: usize = 1 << 20;

/// TLS with the relay failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// The relay's host name is not a name TLS can check a certificate against.
    #[error("the TURN server name is not a valid TLS server name")]
    ServerName,
    /// rustls refused to start (no usable configuration).
    #[error("TLS could not start: {0}")]
    Start(rustls::Error),
    /// The handshake or a record failed (certificate not trusted, corrupt record, alert).
    #[error("TLS with the relay failed: {0}")]
    Protocol(rustls::Error),
    /// The relay closed the TLS session (close_notify).
    #[error("the relay closed the TLS session")]
    Closed,
    /// Reading or writing rustls's buffers failed.
    #[error("TLS buffer error: {0}")]
    Io(std::io::Error),
}

/// One TLS client session over a stream to the relay.
pub(crate) struct TlsLink {
    conn: rustls::ClientConnection,
}

impl std::fmt::Debug for TlsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLink")
            .field("handshaking", &self.conn.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl TlsLink {
    /// Starts a session with the relay named `host` (SNI and the certificate check).
    pub(crate) fn new(config: Arc<rustls::ClientConfig>, host: &str) -> Result<Self, TlsError> {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| TlsError::ServerName)?;
        let conn = rustls::ClientConnection::new(config, name).map_err(TlsError::Start)?;
        Ok(Self { conn })
    }

    /// Plaintext to send (buffered by rustls until the handshake is done).
    pub(crate) fn write_plain(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.conn.writer().write_all(data).map_err(TlsError::Io)
    }

    /// Ciphertext to write on the stream now (handshake records, application data, alerts).
    pub(crate) fn take_wire(&mut self) -> Result<Vec<u8>, TlsError> {
        let mut out = Vec::new();
        for _ in 0..1024 {
            if !self.conn.wants_write() {
                break;
            }
            self.conn.write_tls(&mut out).map_err(TlsError::Io)?;
        }
        Ok(out)
    }

    /// Ciphertext read from the stream; returns the plaintext it carried.
    pub(crate) fn read_wire(&mut self, mut data: &[u8]) -> Result<Vec<u8>, TlsError> {
        let mut plain = Vec::new();
        let mut chunk = [0u8; 16_384];
        // read_tls takes at most one buffer's worth at a time: alternate with processing.
        for _ in 0..4096 {
            if data.is_empty() {
                break;
            }
            let n = self.conn.read_tls(&mut data).map_err(TlsError::Io)?;
            let state = self
                .conn
                .process_new_packets()
                .map_err(TlsError::Protocol)?;
            let mut readable = state.plaintext_bytes_to_read();
            while readable > 0 && plain.len() < MAX_PLAINTEXT_PER_READ {
                let got = self.conn.reader().read(&mut chunk).map_err(TlsError::Io)?;
                if got == 0 {
                    break;
                }
                plain.extend_from_slice(&chunk[..got]);
                readable = readable.saturating_sub(got);
            }
            if state.peer_has_closed() {
                return Err(TlsError::Closed);
            }
            if n == 0 {
                break;
            }
        }
        Ok(plain)
    }
}
