//! The cluster CA and node certificates (rcgen), for `evident cluster ca init` and
//! `evident cluster cert issue`: a CA that signs node certificates naming the node id (in
//! the common name and as a DNS subject alternative name) plus the names it is reached by.

use crate::tls::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// The CA certificate file in a CA directory (what nodes configure as `cluster.ca_cert`).
pub const CA_CERT: &str = "ca.pem";
/// The CA private key file (mode 0600; keep it off the nodes).
pub const CA_KEY: &str = "ca.key";
/// A node certificate file in its output directory (`cluster.cert`).
pub const NODE_CERT: &str = "node.pem";
/// A node private key file (`cluster.key`, mode 0600).
pub const NODE_KEY: &str = "node.key";
/// The names every node certificate carries besides its node id, for loopback use.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
const CA_NAME: &str = "Evident cluster CA";

fn generate(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Creates `ca.pem` and `ca.key` in `out` (created if missing). Refuses to overwrite an
/// existing CA. Returns the certificate's path.
pub fn init_ca(out: &Path) -> Result<PathBuf, TlsError> {
    let cert_path = out.join(CA_CERT);
    let key_path = out.join(CA_KEY);
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(TlsError::Config(format!(
                "{} already exists; refusing to replace a cluster CA",
                path.display()
            )));
        }
    }
    crate::file_modes::create_private_dir(out).map_err(|source| TlsError::Io {
        path: out.to_owned(),
        source,
    })?;
    let key = KeyPair::generate().map_err(generate)?;
    let cert = ca_params()?.self_signed(&key).map_err(generate)?;
    crate::tls::write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    crate::tls::write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(cert_path)
}

/// Issues a certificate for `node_id` signed by the CA in `ca_dir`, valid for server and
/// client authentication, naming the node id and `sans` (or [`DEFAULT_SANS`] when empty);
/// writes `node.pem` and `node.key` into `out`. Returns the certificate's path.
pub fn issue_node_cert(
    ca_dir: &Path,
    node_id: &str,
    sans: &[String],
    out: &Path,
) -> Result<PathBuf, TlsError> {
    rustls_pki_types::DnsName::try_from(node_id).map_err(|_| {
        TlsError::Config(format!(
            "--node-id {node_id:?}: a cluster node id is letters, digits and '-' in dot-separated labels"
        ))
    })?;
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_key_text = std::fs::read_to_string(&ca_key_path).map_err(|source| TlsError::Io {
        path: ca_key_path.clone(),
        source,
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_text).map_err(|e| TlsError::Pem {
        path: ca_key_path.clone(),
        problem: format!("not a CA private key: {e}"),
    })?;
    // The CA certificate's subject and key identifier follow from these parameters and key.
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut names = vec![node_id.to_owned()];
    let extra: Vec<String> = if sans.is_empty() {
        DEFAULT_SANS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        sans.to_vec()
    };
    for name in extra {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut params = CertificateParams::new(names).map_err(generate)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_id);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(generate)?;
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;
    let cert_path = out.join(NODE_CERT);
    let key_path = out.join(NODE_KEY);
    crate::file_modes::create_private_dir(out).map_err(|source| TlsError::Io {
        path: out.to_owned(),
        source,
    })?;
    crate::tls::write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    crate::tls::write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(cert_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterConfig, PeerIdentifier};
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn issued_node_certificates_chain_to_the_ca_and_name_the_node() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        init_ca(&ca).unwrap();
        assert!(init_ca(&ca).is_err(), "an existing CA is not replaced");
        let node = tmp.path().join("n2");
        issue_node_cert(&ca, "node-2", &[], &node).unwrap();
        assert!(issue_node_cert(&ca, "bad id", &[], &node).is_err());
        let (chain, key) =
            crate::tls::load_pem(&node.join(NODE_CERT), &node.join(NODE_KEY)).unwrap();
        let config = ClusterConfig {
            ca_cert: Some(ca.join(CA_CERT)),
            ..ClusterConfig::default()
        };
        crate::cluster::server_config(&config, chain.clone(), key).unwrap();
        let roots = crate::cluster::load_roots(&ca.join(CA_CERT)).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        verifier
            .verify_client_cert(&chain[0], &[], rustls::pki_types::UnixTime::now())
            .unwrap();
        let mut with_peer = config.clone();
        with_peer.peers = vec![crate::cluster::PeerConfig {
            node_id: "node-2".into(),
            url: "https://127.0.0.1:1".into(),
            public_key: String::new(),
        }];
        let found = PeerIdentifier::new(&with_peer).identify(&chain[0]).unwrap();
        assert_eq!(found.node_id, "node-2");
        with_peer.peers[0].node_id = "node-3".into();
        assert!(
            PeerIdentifier::new(&with_peer)
                .identify(&chain[0])
                .is_none()
        );
        let ca_pem = std::fs::read(ca.join(CA_CERT)).unwrap();
        assert_eq!(
            rustls::pki_types::CertificateDer::pem_slice_iter(&ca_pem).count(),
            1
        );
    }
}
