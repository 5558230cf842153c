//! `[cluster]` settings: this node's cluster identity (CA, certificate, key), the per-peer
//! timeout and the static peer list (`[[cluster.peers]]`). Off unless `ca_cert` is set;
//! validation names the offending field.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Default time a peer has to answer one request, in milliseconds.
pub const DEFAULT_PEER_TIMEOUT_MS: u64 = 2000;

/// The `[cluster]` table. Empty (the default): the node is not part of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id in the cluster (the one its certificate names). `None`: the node id.
    pub node_id: Option<String>,
    /// PEM certificate of the cluster CA: peers' and clients' certificates must chain to it.
    pub ca_cert: Option<PathBuf>,
    /// PEM certificate of this node, issued by the cluster CA (server and client auth).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// How long one peer has to answer one request, in milliseconds (2000).
    pub peer_timeout_ms: u64,
    /// The other nodes of the cluster.
    pub peers: Vec<PeerConfig>,
}

/// One `[[cluster.peers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node id (the one its certificate names and its events record).
    pub node_id: String,
    /// The peer's API base URL, `https://host:port`.
    pub url: String,
    /// The peer's checkpoint verifier key (C2SP vkey string, as `GET /api/v1/public-key`
    /// shows it).
    pub public_key: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: None,
            ca_cert: None,
            cert: None,
            key: None,
            peer_timeout_ms: DEFAULT_PEER_TIMEOUT_MS,
            peers: Vec::new(),
        }
    }
}

/// A `[cluster]` setting that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ClusterConfigError {
    /// The setting, e.g. `cluster.peers[1].url`.
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ClusterConfigError {
    ClusterConfigError {
        field: field.into(),
        message: message.into(),
    }
}

impl ClusterConfig {
    /// Whether this node is part of a cluster (a cluster CA is configured).
    pub fn enabled(&self) -> bool {
        self.ca_cert.is_some()
    }

    /// This node's cluster id: `node_id` here, or the node's own id.
    pub fn effective_node_id<'a>(&'a self, node_id: &'a str) -> &'a str {
        self.node_id.as_deref().unwrap_or(node_id)
    }

    /// The peer with id `node_id`.
    pub fn peer(&self, node_id: &str) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.node_id == node_id)
    }

    /// The timeout for one peer request.
    pub fn peer_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.peer_timeout_ms)
    }

    /// Checks the table; `own_node_id` is the node's id. Nothing set is valid (cluster off).
    pub fn validate(&self, own_node_id: &str) -> Result<(), ClusterConfigError> {
        if self.peer_timeout_ms == 0 {
            return Err(invalid("cluster.peer_timeout_ms", "must be greater than 0"));
        }
        if self.peer_timeout_ms > 600_000 {
            return Err(invalid(
                "cluster.peer_timeout_ms",
                "must be at most 600000 (ten minutes)",
            ));
        }
        let anything_set = self.node_id.is_some()
            || self.ca_cert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || !self.peers.is_empty();
        if !anything_set {
            return Ok(());
        }
        for (field, value) in [
            ("cluster.ca_cert", &self.ca_cert),
            ("cluster.cert", &self.cert),
            ("cluster.key", &self.key),
        ] {
            match value {
                None => {
                    return Err(invalid(
                        field,
                        "is required once [cluster] is used (ca_cert, cert and key are PEM files; \
                         `evident cluster ca init` and `evident cluster cert issue` create them)",
                    ));
                }
                Some(path) if path.as_os_str().is_empty() => {
                    return Err(invalid(field, "must not be empty"));
                }
                Some(_) => {}
            }
        }
        let own = self.effective_node_id(own_node_id);
        if let Some(id) = &self.node_id {
            evident_core::event::validate_node_id(id)
                .map_err(|e| invalid("cluster.node_id", e.problem))?;
        }
        dns_name(own).map_err(|m| invalid("cluster.node_id", m))?;
        let mut seen = std::collections::HashSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let field = |name: &str| format!("cluster.peers[{i}].{name}");
            evident_core::event::validate_node_id(&peer.node_id)
                .map_err(|e| invalid(field("node_id"), e.problem))?;
            dns_name(&peer.node_id).map_err(|m| invalid(field("node_id"), m))?;
            if peer.node_id == own {
                return Err(invalid(
                    field("node_id"),
                    format!(
                        "{:?} is this node's own id; list only the other nodes",
                        peer.node_id
                    ),
                ));
            }
            if !seen.insert(peer.node_id.as_str()) {
                return Err(invalid(
                    field("node_id"),
                    format!("{:?} is listed twice", peer.node_id),
                ));
            }
            let url = reqwest::Url::parse(&peer.url)
                .map_err(|e| invalid(field("url"), format!("{:?} is not a URL: {e}", peer.url)))?;
            if url.scheme() != "https" {
                return Err(invalid(
                    field("url"),
                    format!(
                        "{:?} must be an https:// URL (node-to-node traffic is mTLS only)",
                        peer.url
                    ),
                ));
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid(field("url"), format!("{:?} has no host", peer.url)));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid(
                    field("url"),
                    format!(
                        "{:?} must be a base URL without query or fragment",
                        peer.url
                    ),
                ));
            }
            evident_core::note::NoteVerifier::parse(&peer.public_key).map_err(|e| {
                invalid(
                    field("public_key"),
                    format!("not a C2SP verifier key (as GET /api/v1/public-key shows): {e}"),
                )
            })?;
        }
        Ok(())
    }
}

/// Certificates name nodes by DNS name, so a cluster node id must be one.
fn dns_name(node_id: &str) -> Result<(), String> {
    rustls_pki_types::DnsName::try_from(node_id)
        .map(|_| ())
        .map_err(|_| {
            format!(
                "{node_id:?} is not usable as a certificate name: a cluster node id is letters, \
                 digits and '-' in dot-separated labels (e.g. node-1)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vkey() -> String {
        evident_core::note::NoteSigner::from_seed("evident/node-2", [7; 32])
            .map(|s| s.verifier().to_vkey_string())
            .unwrap_or_default()
    }

    fn full() -> ClusterConfig {
        ClusterConfig {
            ca_cert: Some("ca.pem".into()),
            cert: Some("node.pem".into()),
            key: Some("node.key".into()),
            peers: vec![PeerConfig {
                node_id: "node-2".into(),
                url: "https://127.0.0.1:7708".into(),
                public_key: vkey(),
            }],
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn cluster_config_is_off_by_default_and_checks_each_field() {
        let off = ClusterConfig::default();
        assert!(!off.enabled());
        assert_eq!(off.validate("node-1"), Ok(()));
        assert_eq!(full().validate("node-1"), Ok(()));
        assert!(full().enabled());

        let field_of = |c: ClusterConfig| c.validate("node-1").err().map(|e| e.field);
        let mut c = full();
        c.key = None;
        assert_eq!(field_of(c).as_deref(), Some("cluster.key"));
        let mut c = full();
        c.peer_timeout_ms = 0;
        assert_eq!(field_of(c).as_deref(), Some("cluster.peer_timeout_ms"));
        let mut c = full();
        c.peers[0].url = "http://127.0.0.1:7708".into();
        assert_eq!(field_of(c).as_deref(), Some("cluster.peers[0].url"));
        let mut c = full();
        c.peers[0].public_key = "nonsense".into();
        assert_eq!(field_of(c).as_deref(), Some("cluster.peers[0].public_key"));
        let mut c = full();
        c.peers[0].node_id = "node-1".into();
        assert_eq!(field_of(c).as_deref(), Some("cluster.peers[0].node_id"));
        let mut c = full();
        c.peers.push(c.peers[0].clone());
        assert_eq!(field_of(c).as_deref(), Some("cluster.peers[1].node_id"));
    }

    #[test]
    fn cluster_table_parses_from_toml() {
        let text = format!(
            "ca_cert = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\"\npeer_timeout_ms = 500\n\
             [[peers]]\nnode_id = \"node-2\"\nurl = \"https://localhost:1\"\npublic_key = \"{}\"\n",
            vkey()
        );
        let parsed: ClusterConfig = toml::from_str(&text).unwrap_or_default();
        assert_eq!(parsed.peer_timeout_ms, 500);
        assert_eq!(parsed.peers.len(), 1);
        assert!(toml::from_str::<ClusterConfig>("bogus = 1").is_err());
    }
}
