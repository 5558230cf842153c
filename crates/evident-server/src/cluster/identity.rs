//! The server side of mTLS: the listener's rustls configuration when `[cluster]` is set
//! (every client must present a certificate issued by the cluster CA), and
//! [`PeerIdentifier`], which maps a client certificate to the configured peer it names.

use super::client::load_roots;
use super::config::ClusterConfig;
use crate::tls::TlsError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;

/// A request arrived over a connection whose client certificate names this cluster peer
/// (put in the request's extensions; the auth middleware gives it role `peer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node_id: String,
}

/// Finds which configured peer a (CA-verified) client certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentifier {
    peers: Vec<(String, ServerName<'static>)>,
}

impl PeerIdentifier {
    /// The peers of `config`.
    pub fn new(config: &ClusterConfig) -> PeerIdentifier {
        let peers = config
            .peers
            .iter()
            .filter_map(|p| {
                let name = ServerName::try_from(p.node_id.clone()).ok()?;
                Some((p.node_id.clone(), name))
            })
            .collect();
        PeerIdentifier { peers }
    }

    /// The peer the certificate names (by DNS subject alternative name), if any. The chain
    /// was already verified against the cluster CA during the handshake.
    pub fn identify(&self, certificate: &CertificateDer<'_>) -> Option<PeerIdentity> {
        let cert = webpki::EndEntityCert::try_from(certificate).ok()?;
        self.peers
            .iter()
            .find(|(_, name)| cert.verify_is_valid_for_subject_name(name).is_ok())
            .map(|(node_id, _)| PeerIdentity {
                node_id: node_id.clone(),
            })
    }
}

/// The listener's TLS configuration in a cluster: this node's certificate (`chain`, `key`)
/// and mandatory client certificates chaining to the cluster CA; anything else fails the
/// handshake.
pub fn server_config(
    config: &ClusterConfig,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let ca = config
        .ca_cert
        .as_deref()
        .ok_or_else(|| TlsError::Config("cluster.ca_cert is not set".to_owned()))?;
    let roots = Arc::new(load_roots(ca)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Config(format!("cluster CA: {e}")))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("certificate and key do not fit: {e}")))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}
