//! The cluster export bundle (`GET /api/v1/audit-log?scope=cluster&format=ndjson`): every
//! peer's own export bundle fetched over mTLS (each within the per-peer timeout) and checked
//! against that peer's configured key, then written after the header and this node's own
//! bundle in the `evident_core::cluster_export` format. A peer that does not answer, or whose
//! bundle does not verify, has no part and is named in the header.

use super::client::PeerClient;
use super::config::{ClusterConfig, PeerConfig};
use super::read::NodeStatus;
use crate::export::ExportWriteError;
use evident_core::cluster_export::{self, ClusterHeader, ClusterNode};
use evident_core::export::ExportVerifier;
use evident_core::note::NoteVerifier;
use serde_json::Value;
use std::io::Write;

/// One peer's bundle, or why there is none.
pub type PeerPart = (String, Result<bytes::Bytes, NodeStatus>);

/// Fetches `peer`'s export bundle for `query` (URL-encoded filter parameters, and `limit`)
/// and checks it as a reader would, with the configured key.
pub async fn fetch_bundle(
    client: &PeerClient,
    peer: &PeerConfig,
    query: &str,
) -> Result<bytes::Bytes, NodeStatus> {
    let mut path = "/api/v1/audit-log?format=ndjson".to_owned();
    if !query.is_empty() {
        path.push('&');
        path.push_str(query);
    }
    let response = client.get(peer, &path).await?;
    let refused = |message: String| NodeStatus::Refused {
        http_status: None,
        message: format!("node {}: {message}", peer.node_id),
    };
    let key = NoteVerifier::parse(&peer.public_key)
        .map_err(|e| refused(format!("configured public_key: {e}")))?;
    let mut verifier = ExportVerifier::new(key, None);
    verifier
        .push_bytes(&response.body)
        .map_err(|e| refused(format!("its bundle does not verify: {e}")))?;
    if let Some(header) = verifier.header() {
        if header.node_id != peer.node_id {
            return Err(refused(format!(
                "its bundle is of node {}, not of {}",
                header.node_id, peer.node_id
            )));
        }
    }
    verifier
        .finish()
        .map_err(|e| refused(format!("its bundle does not verify: {e}")))?;
    Ok(response.body)
}

/// Every peer's bundle, asked for concurrently.
pub async fn fetch_bundles(
    config: &ClusterConfig,
    client: &PeerClient,
    query: &str,
) -> Vec<PeerPart> {
    let fetches = config.peers.iter().map(|peer| async move {
        (
            peer.node_id.clone(),
            fetch_bundle(client, peer, query).await,
        )
    });
    futures_util::future::join_all(fetches).await
}

/// The status name and message of a node without a part.
fn status_of(status: &NodeStatus) -> (&'static str, Option<String>) {
    match status {
        NodeStatus::Ok { .. } => ("ok", None),
        NodeStatus::Unreachable { message } => ("unreachable", Some(message.clone())),
        NodeStatus::TimedOut { message } => ("timed_out", Some(message.clone())),
        NodeStatus::Refused { message, .. } => ("refused", Some(message.clone())),
    }
}

/// The header: this node (`own`, with `own_key`) first, then the peers in `parts`' order.
pub fn header(
    config: &ClusterConfig,
    own: &str,
    own_key: &str,
    parts: &[PeerPart],
    query: Value,
    exported_at: &str,
) -> ClusterHeader {
    let mut nodes = vec![ClusterNode {
        node: own.to_owned(),
        status: "ok".to_owned(),
        public_key: Some(own_key.to_owned()),
        message: None,
    }];
    for (node, part) in parts {
        let (status, message) = match part {
            Ok(_) => ("ok", None),
            Err(status) => status_of(status),
        };
        nodes.push(ClusterNode {
            node: node.clone(),
            status: status.to_owned(),
            public_key: config.peer(node).map(|p| p.public_key.clone()),
            message,
        });
    }
    ClusterHeader {
        format: cluster_export::CLUSTER_FORMAT.to_owned(),
        exported_by: own.to_owned(),
        exported_at: exported_at.to_owned(),
        query,
        nodes,
    }
}

/// Writes the cluster bundle: the header, this node's part (`write_own` writes its bundle),
/// every peer part that was fetched, the end line.
pub fn write_cluster_bundle(
    out: &mut dyn Write,
    header: &ClusterHeader,
    write_own: impl FnOnce(&mut dyn Write) -> Result<(), ExportWriteError>,
    parts: &[PeerPart],
) -> Result<(), ExportWriteError> {
    out.write_all(cluster_export::header_line(header).as_bytes())?;
    out.write_all(cluster_export::part_line(&header.exported_by).as_bytes())?;
    write_own(out)?;
    let mut count = 1u64;
    for (node, part) in parts {
        if let Ok(bundle) = part {
            out.write_all(cluster_export::part_line(node).as_bytes())?;
            out.write_all(bundle)?;
            count += 1;
        }
    }
    out.write_all(cluster_export::end_line(count).as_bytes())?;
    out.flush()?;
    Ok(())
}
