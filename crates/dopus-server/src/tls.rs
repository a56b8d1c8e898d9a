//! TLS for `wss://` from PEM files, with rustls on the aws-lc-rs provider.

use crate::config::TlsFiles;
use std::io::BufReader;
use std::sync::Arc;

/// Why the certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {what}: {source}")]
    Read {
        /// Which file.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate in the certificate file")]
    NoCertificate,
    /// The key file holds no private key.
    #[error("no private key in the key file")]
    NoKey,
    /// rustls refused the certificate and key.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the server's TLS configuration.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |path: &std::path::Path, what| {
        std::fs::File::open(path).map_err(|source| TlsError::Read { what, source })
    };
    let mut certs_reader = BufReader::new(read(&files.cert, "certificate")?);
    let certs = rustls_pemfile::certs(&mut certs_reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            what: "certificate",
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let mut key_reader = BufReader::new(read(&files.key, "private key")?);
    let key = rustls_pemfile::private_key(&mut key_reader)
        .map_err(|source| TlsError::Read {
            what: "private key",
            source,
        })?
        .ok_or(TlsError::NoKey)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
