//! [`PeerClient`]: the HTTPS client one node uses to reach its peers, mTLS only. It trusts
//! only the cluster CA, presents this node's certificate, requires each peer's certificate to
//! name that peer's node id (as well as the URL's host), and gives every request the per-peer
//! timeout. Failures come back as [`PeerError`], sorted into what a cluster read reports.

use super::config::{ClusterConfig, PeerConfig};
use crate::tls::{TlsError, load_pem};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why a request to a peer got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection could be made (refused, no route, DNS).
    #[error("node {node}: unreachable: {message}")]
    Unreachable { node: String, message: String },
    /// The peer did not answer within the per-peer timeout.
    #[error("node {node}: timed out after {timeout_ms} ms")]
    TimedOut { node: String, timeout_ms: u64 },
    /// The peer answered with a non-success status.
    #[error("node {node}: refused with HTTP {status}: {body}")]
    Refused {
        node: String,
        status: u16,
        body: String,
    },
    /// The TLS handshake failed (untrusted certificate, wrong node id, no client certificate).
    #[error("node {node}: TLS: {message}")]
    Tls { node: String, message: String },
    /// The peer is not in `[[cluster.peers]]`.
    #[error("node {node} is not a configured peer")]
    UnknownPeer { node: String },
}

impl PeerError {
    /// The peer the error is about.
    pub fn node(&self) -> &str {
        match self {
            PeerError::Unreachable { node, .. }
            | PeerError::TimedOut { node, .. }
            | PeerError::Refused { node, .. }
            | PeerError::Tls { node, .. }
            | PeerError::UnknownPeer { node } => node,
        }
    }
}

/// A successful (2xx) answer of a peer.
#[derive(Debug, Clone)]
pub struct PeerResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: bytes::Bytes,
}

impl PeerResponse {
    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// One mTLS client per configured peer (each pinned to that peer's node id).
#[derive(Clone)]
pub struct PeerClient {
    clients: Arc<HashMap<String, reqwest::Client>>,
    timeout: Duration,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("peers", &self.clients.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Reads the cluster CA certificate(s) into a root store.
pub fn load_roots(ca_cert: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let text = std::fs::read(ca_cert).map_err(|source| TlsError::Io {
        path: ca_cert.to_owned(),
        source,
    })?;
    let pem_err = |problem: String| TlsError::Pem {
        path: ca_cert.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err("no CERTIFICATE block found".to_owned()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| pem_err(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

impl PeerClient {
    /// Builds the clients from `[cluster]` (which must be enabled and valid).
    pub fn new(config: &ClusterConfig) -> Result<PeerClient, TlsError> {
        let missing = |field: &str| TlsError::Config(format!("cluster.{field} is not set"));
        let ca = config
            .ca_cert
            .as_deref()
            .ok_or_else(|| missing("ca_cert"))?;
        let cert = config.cert.as_deref().ok_or_else(|| missing("cert"))?;
        let key = config.key.as_deref().ok_or_else(|| missing("key"))?;
        let roots = Arc::new(load_roots(ca)?);
        let (chain, private) = load_pem(cert, key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(format!("cluster CA: {e}")))?;
        let timeout = config.peer_timeout();
        let mut clients = HashMap::new();
        for peer in &config.peers {
            let node_name = ServerName::try_from(peer.node_id.clone()).map_err(|e| {
                TlsError::Config(format!(
                    "peer node id {:?} is not a DNS name: {e}",
                    peer.node_id
                ))
            })?;
            let verifier = Arc::new(NodeIdVerifier {
                inner: webpki.clone(),
                node_name,
            });
            let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_client_auth_cert(chain.clone(), private.clone_key())
                .map_err(|e| TlsError::Config(format!("cluster certificate and key: {e}")))?;
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let client = reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("evident-peer/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| TlsError::Config(format!("cannot set up the peer client: {e}")))?;
            clients.insert(peer.node_id.clone(), client);
        }
        Ok(PeerClient {
            clients: Arc::new(clients),
            timeout,
        })
    }

    /// The per-peer timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET <peer.url><path>` (path with its query, starting with `/`).
    pub async fn get(&self, peer: &PeerConfig, path: &str) -> Result<PeerResponse, PeerError> {
        let client = self.client(peer)?;
        self.send(peer, client.get(url(peer, path))).await
    }

    /// `POST <peer.url><path>` with a `text/plain` body (C2SP witness requests are text).
    pub async fn post(
        &self,
        peer: &PeerConfig,
        path: &str,
        body: impl Into<Vec<u8>>,
    ) -> Result<PeerResponse, PeerError> {
        self.post_with(peer, path, "text/plain; charset=utf-8", body)
            .await
    }

    /// `POST <peer.url><path>` with a body of the given content type.
    pub async fn post_with(
        &self,
        peer: &PeerConfig,
        path: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> Result<PeerResponse, PeerError> {
        let client = self.client(peer)?;
        let request = client
            .post(url(peer, path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.into());
        self.send(peer, request).await
    }

    fn client(&self, peer: &PeerConfig) -> Result<&reqwest::Client, PeerError> {
        self.clients
            .get(&peer.node_id)
            .ok_or_else(|| PeerError::UnknownPeer {
                node: peer.node_id.clone(),
            })
    }

    async fn send(
        &self,
        peer: &PeerConfig,
        request: reqwest::RequestBuilder,
    ) -> Result<PeerResponse, PeerError> {
        // The whole exchange (connect, handshake, body) is bounded, not only the head.
        let exchange = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, content_type, body))
        };
        let outcome = tokio::time::timeout(self.timeout, exchange).await;
        let (status, content_type, body) = match outcome {
            Err(_) => return Err(self.timed_out(peer)),
            Ok(Err(e)) => return Err(self.classify(peer, &e)),
            Ok(Ok(answer)) => answer,
        };
        if !(200..300).contains(&status) {
            let mut text = String::from_utf8_lossy(&body).into_owned();
            text.truncate(1024);
            return Err(PeerError::Refused {
                node: peer.node_id.clone(),
                status,
                body: text,
            });
        }
        Ok(PeerResponse {
            status,
            content_type,
            body,
        })
    }

    fn timed_out(&self, peer: &PeerConfig) -> PeerError {
        PeerError::TimedOut {
            node: peer.node_id.clone(),
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn classify(&self, peer: &PeerConfig, e: &reqwest::Error) -> PeerError {
        let node = peer.node_id.clone();
        if e.is_timeout() {
            return self.timed_out(peer);
        }
        if let Some(tls) = rustls_cause(e) {
            return PeerError::Tls {
                node,
                message: tls.to_string(),
            };
        }
        PeerError::Unreachable {
            node,
            message: chain(e),
        }
    }
}

fn url(peer: &PeerConfig, path: &str) -> String {
    format!("{}{}", peer.url.trim_end_matches('/'), path)
}

/// The rustls error somewhere in `e`'s causes (also inside an `io::Error`, whose `source`
/// skips the wrapped error).
fn rustls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(tls);
            }
        }
        current = err.source();
    }
    None
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

/// The cluster CA's usual check for the URL's host, then the same check for the peer's
/// node id: a certificate of another cluster member cannot stand in for this peer.
#[derive(Debug)]
struct NodeIdVerifier {
    inner: Arc<WebPkiServerVerifier>,
    node_name: ServerName<'static>,
}

impl ServerCertVerifier for NodeIdVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &self.node_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
