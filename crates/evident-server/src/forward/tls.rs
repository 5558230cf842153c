//! Syslog over TLS (RFC 5425) through rustls: the receiver's certificate is checked against
//! the destination's CA file and server name (the address's host unless `server_name` is
//! set); a client certificate is presented when configured (mutual TLS). Framing and
//! liveness are TCP's (`tcp.rs`).

use super::{SyslogDestination, SyslogTransport, TransportError};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub struct TlsTransport {
    address: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    stream: Option<TlsStream<TcpStream>>,
}

/// A destination's TLS settings that cannot be used (named by field).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> TlsSetupError {
    TlsSetupError::Invalid {
        field,
        problem: problem.into(),
    }
}

impl TlsTransport {
    /// Reads the CA file (and client certificate and key) of `destination`.
    pub fn new(destination: &SyslogDestination) -> Result<TlsTransport, TlsSetupError> {
        let ca_file = destination.ca_file.as_ref().ok_or_else(|| {
            invalid(
                "ca_file",
                "a tls destination needs the CA file (PEM) that signed the receiver's certificate",
            )
        })?;
        let ca_text = std::fs::read(ca_file)
            .map_err(|e| invalid("ca_file", format!("{}: {e}", ca_file.display())))?;
        let mut roots = RootCertStore::empty();
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(&ca_text) {
            let cert =
                cert.map_err(|e| invalid("ca_file", format!("{}: {e}", ca_file.display())))?;
            roots
                .add(cert)
                .map_err(|e| invalid("ca_file", format!("{}: {e}", ca_file.display())))?;
            found += 1;
        }
        if found == 0 {
            return Err(invalid(
                "ca_file",
                format!("{}: holds no PEM certificate", ca_file.display()),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("ca_file", e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&destination.client_cert, &destination.client_key) {
            (Some(cert), Some(key)) => {
                let cert_text = std::fs::read(cert)
                    .map_err(|e| invalid("client_cert", format!("{}: {e}", cert.display())))?;
                let chain = CertificateDer::pem_slice_iter(&cert_text)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid("client_cert", format!("{}: {e}", cert.display())))?;
                if chain.is_empty() {
                    return Err(invalid(
                        "client_cert",
                        format!("{}: holds no PEM certificate", cert.display()),
                    ));
                }
                let key_text = std::fs::read(key)
                    .map_err(|e| invalid("client_key", format!("{}: {e}", key.display())))?;
                let key = PrivateKeyDer::from_pem_slice(&key_text)
                    .map_err(|e| invalid("client_key", format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid("client_key", format!("does not fit client_cert: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(invalid(
                    "client_key",
                    "client_cert is set but client_key is not",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "client_cert",
                    "client_key is set but client_cert is not",
                ));
            }
        };
        let name = match &destination.server_name {
            Some(name) => name.clone(),
            None => super::host_of(&destination.address).to_owned(),
        };
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| invalid("server_name", format!("{name:?}: {e}")))?;
        Ok(TlsTransport {
            address: destination.address.clone(),
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
            stream: None,
        })
    }
}

impl SyslogTransport for TlsTransport {
    async fn send(&mut self, messages: &[Vec<u8>]) -> Result<(), TransportError> {
        if self.stream.is_none() {
            let tcp = super::tcp::connect(&self.address).await?;
            let handshake = self.connector.connect(self.server_name.clone(), tcp);
            let stream = tokio::time::timeout(super::CONNECT_TIMEOUT, handshake)
                .await
                .map_err(|_| TransportError::Timeout("in the TLS handshake"))?
                .map_err(TransportError::Tls)?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(TransportError::Closed);
        };
        let result = super::tcp::write_framed(stream, messages).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn is_alive(&mut self) -> bool {
        self.stream.as_mut().is_none_or(super::tcp::stream_is_open)
    }

    fn reset(&mut self) {
        self.stream = None;
    }

    fn confirms_by_connection(&self) -> bool {
        true
    }
}
