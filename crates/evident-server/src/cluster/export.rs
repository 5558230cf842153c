//! The cluster export bundle (`GET /api/v1/audit-log?scope=cluster&format=ndjson`): every
//! peer's own export bundle fetched over mTLS (its head, then each piece, within the per-peer
//! timeout), checked against that peer's configured key as it arrives and spooled to an
//! unnamed file in the data directory, then written after the header and this node's own
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
use std::io::{Seek, Write};
use std::path::Path;

/// One peer's bundle (verified, spooled, at its start), or why there is none.
pub type PeerPart = (String, Result<std::fs::File, NodeStatus>);

/// Fetches `peer`'s export bundle for `query` (URL-encoded filter parameters, and `limit`)
/// into an unnamed file in `spool_dir`, checking it as a reader would, with the configured
/// key, as it arrives.
pub async fn fetch_bundle(
    client: &PeerClient,
    peer: &PeerConfig,
    query: &str,
    spool_dir: &Path,
) -> Result<std::fs::File, NodeStatus> {
    let mut path = "/api/v1/audit-log?format=ndjson".to_owned();
    if !query.is_empty() {
        path.push('&');
        path.push_str(query);
    }
    let refused = |message: String| NodeStatus::Refused {
        http_status: None,
        message: format!("node {}: {message}", peer.node_id),
    };
    let key = NoteVerifier::parse(&peer.public_key)
        .map_err(|e| refused(format!("configured public_key: {e}")))?;
    let mut spool = tempfile::tempfile_in(spool_dir).map_err(|e| {
        refused(format!(
            "cannot spool its bundle in {}: {e}",
            spool_dir.display()
        ))
    })?;
    let mut verifier = ExportVerifier::new(key, None);
    let node = peer.node_id.clone();
    let mut take = |piece: &[u8]| -> Result<(), String> {
        verifier
            .push_bytes(piece)
            .map_err(|e| format!("its bundle does not verify: {e}"))?;
        if let Some(header) = verifier.header() {
            if header.node_id != node {
                return Err(format!(
                    "its bundle is of node {}, not of {node}",
                    header.node_id
                ));
            }
        }
        spool
            .write_all(piece)
            .map_err(|e| format!("cannot spool its bundle: {e}"))
    };
    client
        .get_streaming(peer, &path, &mut take)
        .await?
        .map_err(refused)?;
    verifier
        .finish()
        .map_err(|e| refused(format!("its bundle does not verify: {e}")))?;
    spool
        .rewind()
        .map_err(|e| refused(format!("cannot read back its spooled bundle: {e}")))?;
    Ok(spool)
}

/// Every peer's bundle, asked for concurrently; a peer named in `consistency_from` is asked
/// for a consistency proof from that size.
pub async fn fetch_bundles(
    config: &ClusterConfig,
    client: &PeerClient,
    query: &str,
    consistency_from: &std::collections::BTreeMap<String, u64>,
    spool_dir: &Path,
) -> Vec<PeerPart> {
    let fetches = config.peers.iter().map(|peer| async move {
        let query = match consistency_from.get(&peer.node_id) {
            Some(size) if query.is_empty() => format!("consistency_from={size}"),
            Some(size) => format!("{query}&consistency_from={size}"),
            None => query.to_owned(),
        };
        (
            peer.node_id.clone(),
            fetch_bundle(client, peer, &query, spool_dir).await,
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
    parts: Vec<PeerPart>,
) -> Result<(), ExportWriteError> {
    out.write_all(cluster_export::header_line(header).as_bytes())?;
    out.write_all(cluster_export::part_line(&header.exported_by).as_bytes())?;
    write_own(out)?;
    let mut count = 1u64;
    for (node, part) in parts {
        if let Ok(mut bundle) = part {
            out.write_all(cluster_export::part_line(&node).as_bytes())?;
            std::io::copy(&mut bundle, out)?;
            count += 1;
        }
    }
    out.write_all(cluster_export::end_line(count).as_bytes())?;
    out.flush()?;
    Ok(())
}
