//! The node's DTLS certificate.
//!
//! Why one per node: generating a certificate costs 26-40 ms (str0m spike, aws-lc), which would
//! dominate the ~2 ms offer-to-open time of a loopback connection. The certificate is generated
//! once per node run and shared by all its connections; it is never written to disk, so each run
//! gets a fresh one. Reusing it does not weaken authentication: the peer checks the certificate
//! against the `a=fingerprint` of the SDP it received inside an Olm-encrypted payload, and only
//! that peer sees the fingerprint.

use std::fmt;
use std::sync::Arc;

use str0m::config::DtlsCert;

/// A DTLS certificate and its private key, shared (cheaply cloned) between connections.
#[derive(Clone)]
pub struct DtlsIdentity {
    cert: Arc<DtlsCert>,
    fingerprint: String,
}

impl DtlsIdentity {
    /// Generates a new self-signed certificate (ECDSA P-256, via str0m's crypto provider).
    pub fn generate() -> Result<Self, CertError> {
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or(CertError::Generate)?;
        let digest = provider.sha256_provider.sha256(&cert.certificate);
        let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
        Ok(Self {
            cert: Arc::new(cert),
            fingerprint: format!("sha-256 {}", hex.join(":")),
        })
    }

    /// The SDP fingerprint of the certificate (`sha-256 AB:CD:…`), as the peer will see it in
    /// `a=fingerprint`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub(crate) fn cert(&self) -> DtlsCert {
        DtlsCert::clone(&self.cert)
    }
}

impl fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key must never reach a log; the fingerprint is public.
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a DTLS certificate could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The crypto provider failed to generate a key pair or certificate.
    #[error("DTLS certificate generation failed")]
    Generate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_only_the_fingerprint() {
        let id = DtlsIdentity::generate().unwrap();
        let shown = format!("{id:?}");
        assert!(shown.contains(id.fingerprint()));
        assert!(id.fingerprint().starts_with("sha-256 "));
        assert_eq!(id.fingerprint().len(), "sha-256 ".len() + 32 * 3 - 1);
        let other = DtlsIdentity::generate().unwrap();
        assert_ne!(id.fingerprint(), other.fingerprint());
    }
}
