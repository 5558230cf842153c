//! Cluster-wide reads (`GET /api/v1/audit-log?scope=cluster`): one page from this node and
//! from every peer at once (each bounded by the per-peer timeout), merged by
//! (recorded_at, node, seq), with a cursor holding each node's position and a status per
//! node (ok with the checkpoint used, unreachable, timed out, refused).

use super::client::{PeerClient, PeerError};
use super::config::{ClusterConfig, PeerConfig};
use crate::witness::PeerKeys;
use crate::witness::peer_keys::fetch_rotations;
use base64::Engine;
use evident_core::cosignature::signed_by_untrusted_key;
use evident_core::note;
use evident_store::Order;
use serde_json::Value;
use std::collections::BTreeMap;

/// Where each node's reading stands: the last seq served per node id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterCursor {
    /// `a` (ascending) or `d` (descending).
    o: char,
    /// Last seq served, per node id.
    p: BTreeMap<String, u64>,
}

/// A cluster cursor that is not one this server issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("cursor is not a cluster cursor this server issued")]
    Garbled,
    #[error("cursor was issued for the other order; keep the same order while paging")]
    OtherOrder,
}

fn order_char(order: Order) -> char {
    match order {
        Order::Ascending => 'a',
        Order::Descending => 'd',
    }
}

impl ClusterCursor {
    /// A cursor at the start.
    pub fn start(order: Order) -> ClusterCursor {
        ClusterCursor {
            o: order_char(order),
            p: BTreeMap::new(),
        }
    }

    /// The last seq served of `node`.
    pub fn position(&self, node: &str) -> Option<u64> {
        self.p.get(node).copied()
    }

    /// Opaque text (base64url of a small JSON object).
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Parses [`ClusterCursor::encode`]'s text, for `order`.
    pub fn decode(text: &str, order: Order) -> Result<ClusterCursor, CursorError> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| CursorError::Garbled)?;
        let cursor: ClusterCursor =
            serde_json::from_slice(&raw).map_err(|_| CursorError::Garbled)?;
        if cursor.o != 'a' && cursor.o != 'd' {
            return Err(CursorError::Garbled);
        }
        if cursor.o != order_char(order) {
            return Err(CursorError::OtherOrder);
        }
        Ok(cursor)
    }
}

/// What one node contributed to a cluster page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum NodeStatus {
    /// The node answered; its entries are merged. `checkpoint` is its signed checkpoint
    /// (verified with the configured key) at the time of the read.
    Ok {
        checkpoint: String,
        size: u64,
        returned: usize,
    },
    /// No connection could be made.
    Unreachable { message: String },
    /// No answer within the per-peer timeout.
    TimedOut { message: String },
    /// The node refused (an HTTP error, a failed TLS handshake, or a checkpoint that does
    /// not verify with its configured key).
    Refused {
        http_status: Option<u16>,
        message: String,
    },
}

impl From<PeerError> for NodeStatus {
    fn from(e: PeerError) -> NodeStatus {
        let message = e.to_string();
        match e {
            PeerError::Unreachable { .. } | PeerError::UnknownPeer { .. } => {
                NodeStatus::Unreachable { message }
            }
            PeerError::TimedOut { .. } => NodeStatus::TimedOut { message },
            PeerError::Refused { status, .. } => NodeStatus::Refused {
                http_status: Some(status),
                message,
            },
            PeerError::Tls { .. } => NodeStatus::Refused {
                http_status: None,
                message,
            },
        }
    }
}

/// One node's answer: its page (entries as the API shows them, in `order`), whether it has
/// more, and its checkpoint.
#[derive(Debug, Clone)]
pub struct NodePage {
    pub entries: Vec<Value>,
    pub more: bool,
    pub checkpoint: String,
    pub size: u64,
}

/// The status block entry of one node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeReport {
    pub node: String,
    #[serde(flatten)]
    pub status: NodeStatus,
}

/// A merged cluster page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterPage {
    pub events: Vec<Value>,
    /// Continue here while any answering node has more.
    pub next_cursor: Option<String>,
    /// Every node's position after this page, also of the nodes that did not answer: retry
    /// with it later to read what they hold.
    pub resume_cursor: String,
    pub nodes: Vec<NodeReport>,
}

/// Fetches one page of `query` (the filter parameters, URL-encoded, without order, limit
/// and cursor) from `peer`, with its checkpoint, verified against the keys trusted for it:
/// its configured `public_key` and the keys its verified signing-key rotations lead to
/// (`keys`, shared with the witness). A checkpoint signed under the peer's origin by a key
/// not trusted yet makes this read the peer's rotation events first, once.
pub async fn fetch_peer(
    client: &PeerClient,
    keys: &PeerKeys,
    peer: &PeerConfig,
    query: &str,
    order: Order,
    after: Option<u64>,
    limit: u64,
) -> Result<NodePage, NodeStatus> {
    let order_name = match order {
        Order::Ascending => "asc",
        Order::Descending => "desc",
    };
    let mut path = format!("/api/v1/audit-log?order={order_name}&limit={limit}");
    if !query.is_empty() {
        path.push('&');
        path.push_str(query);
    }
    if let Some(seq) = after {
        path.push_str("&cursor=");
        path.push_str(&crate::http::encode_cursor(order, seq));
    }
    let (page, checkpoint) = tokio::join!(
        client.get(peer, &path),
        client.get(peer, "/api/v1/checkpoint")
    );
    let page = page?;
    let checkpoint = checkpoint?;
    let refused = |message: String| NodeStatus::Refused {
        http_status: None,
        message: format!("node {}: {message}", peer.node_id),
    };
    let signed = String::from_utf8(checkpoint.body.to_vec())
        .map_err(|_| refused("its checkpoint is not text".to_owned()))?;
    let trusted = keys
        .trusted(peer)
        .map_err(|e| refused(format!("configured public_key: {e}")))?;
    let origin = trusted
        .first()
        .map(|k| k.name().to_owned())
        .unwrap_or_default();
    let trusted = if note::open(&signed, &trusted).is_err()
        && signed_by_untrusted_key(&signed, &origin, &trusted)
    {
        // The peer may have rotated its signing key: follow its rotations, then look again.
        let events = fetch_rotations(client, peer)
            .await
            .map_err(|e| refused(format!("reading its signing-key rotations: {e}")))?;
        keys.learn(peer, &events)
            .map_err(|e| refused(format!("configured public_key: {e}")))?;
        keys.trusted(peer)
            .map_err(|e| refused(format!("configured public_key: {e}")))?
    } else {
        trusted
    };
    let opened = note::open(&signed, &trusted).map_err(|e| {
        refused(format!(
            "its checkpoint does not verify with the configured public_key or a key its \
             rotations lead to: {e}"
        ))
    })?;
    let size = evident_core::checkpoint::Checkpoint::parse(&opened.text)
        .map(|c| c.size)
        .map_err(|e| refused(format!("its checkpoint body: {e}")))?;
    let json: Value = page
        .json()
        .map_err(|e| refused(format!("its page is not JSON: {e}")))?;
    let entries = json
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| refused("its page has no events".to_owned()))?;
    if entries
        .iter()
        .any(|e| e.get("node_id").and_then(Value::as_str) != Some(&peer.node_id))
    {
        return Err(refused(format!(
            "it returned events not recorded by {}",
            peer.node_id
        )));
    }
    let more = json.get("next_cursor").is_some_and(|c| !c.is_null());
    Ok(NodePage {
        entries,
        more,
        checkpoint: signed,
        size,
    })
}

fn sort_key(entry: &Value) -> (i64, String, u64) {
    let recorded = entry
        .get("recorded_at")
        .and_then(Value::as_str)
        .and_then(|t| evident_core::event::parse_rfc3339(t).ok())
        .unwrap_or(0);
    let node = entry
        .get("node_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let seq = entry.get("seq").and_then(Value::as_u64).unwrap_or(0);
    (recorded, node, seq)
}

/// Merges the nodes' pages: the first `limit` entries by (recorded_at, node, seq) in
/// `order`, each node's position moved past what was taken, and the status block (in the
/// order the pages were given).
pub fn merge(
    pages: Vec<(String, Result<NodePage, NodeStatus>)>,
    order: Order,
    cursor: &ClusterCursor,
    limit: usize,
) -> ClusterPage {
    let mut all: Vec<((i64, String, u64), Value)> = Vec::new();
    let mut reports = Vec::new();
    let mut answered: Vec<(String, bool, usize)> = Vec::new();
    for (node, page) in pages {
        match page {
            Ok(page) => {
                answered.push((node.clone(), page.more, page.entries.len()));
                reports.push(NodeReport {
                    node,
                    status: NodeStatus::Ok {
                        checkpoint: page.checkpoint,
                        size: page.size,
                        returned: 0,
                    },
                });
                all.extend(page.entries.into_iter().map(|e| (sort_key(&e), e)));
            }
            Err(status) => reports.push(NodeReport { node, status }),
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    if order == Order::Descending {
        all.reverse();
    }
    all.truncate(limit);
    let mut next = cursor.clone();
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    for ((_, node, seq), _) in &all {
        next.p.insert(node.clone(), *seq);
        *taken.entry(node.clone()).or_default() += 1;
    }
    for report in &mut reports {
        if let NodeStatus::Ok { returned, .. } = &mut report.status {
            *returned = taken.get(&report.node).copied().unwrap_or(0);
        }
    }
    // More is left on a node that said so, or whose fetched entries were not all taken.
    let more = answered
        .iter()
        .any(|(node, more, fetched)| *more || taken.get(node).copied().unwrap_or(0) < *fetched);
    ClusterPage {
        events: all.into_iter().map(|(_, e)| e).collect(),
        next_cursor: more.then(|| next.encode()),
        resume_cursor: next.encode(),
        nodes: reports,
    }
}

/// What a cluster read asks every node for.
#[derive(Debug, Clone)]
pub struct ClusterRead<'a> {
    /// The filter parameters, URL-encoded, without order, limit and cursor.
    pub query: &'a str,
    pub order: Order,
    pub cursor: &'a ClusterCursor,
    pub limit: u64,
}

/// Reads one cluster page: `local` is this node's own page (read by the caller from its
/// store), the peers are asked concurrently.
pub async fn read_cluster(
    config: &ClusterConfig,
    client: &PeerClient,
    keys: &PeerKeys,
    own_node: &str,
    local: Result<NodePage, NodeStatus>,
    read: ClusterRead<'_>,
) -> ClusterPage {
    let ClusterRead {
        query,
        order,
        cursor,
        limit,
    } = read;
    let fetches = config.peers.iter().map(|peer| async move {
        let page = fetch_peer(
            client,
            keys,
            peer,
            query,
            order,
            cursor.position(&peer.node_id),
            limit,
        )
        .await;
        (peer.node_id.clone(), page)
    });
    let mut pages = vec![(own_node.to_owned(), local)];
    pages.extend(futures_util::future::join_all(fetches).await);
    merge(
        pages,
        order,
        cursor,
        usize::try_from(limit).unwrap_or(usize::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(node: &str, seq: u64, ms: i64) -> Value {
        json!({
            "node_id": node,
            "seq": seq,
            "recorded_at": evident_core::event::format_rfc3339_millis(ms),
        })
    }

    fn page(entries: Vec<Value>, more: bool) -> Result<NodePage, NodeStatus> {
        Ok(NodePage {
            entries,
            more,
            checkpoint: "cp".into(),
            size: 9,
        })
    }

    #[test]
    fn pages_merge_by_time_then_node_then_seq_and_resume_per_node() {
        let start = ClusterCursor::start(Order::Ascending);
        let merged = merge(
            vec![
                (
                    "a".into(),
                    page(vec![entry("a", 1, 10), entry("a", 2, 30)], false),
                ),
                (
                    "b".into(),
                    page(vec![entry("b", 1, 10), entry("b", 2, 20)], true),
                ),
                (
                    "c".into(),
                    Err(NodeStatus::TimedOut {
                        message: "late".into(),
                    }),
                ),
            ],
            Order::Ascending,
            &start,
            3,
        );
        let order: Vec<_> = merged
            .events
            .iter()
            .map(|e| {
                (
                    e["node_id"].as_str().unwrap().to_owned(),
                    e["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(order, [("a".into(), 1), ("b".into(), 1), ("b".into(), 2)]);
        let next = ClusterCursor::decode(merged.next_cursor.as_deref().unwrap(), Order::Ascending)
            .unwrap();
        assert_eq!(next.position("a"), Some(1));
        assert_eq!(next.position("b"), Some(2));
        assert_eq!(next.position("c"), None);
        assert!(matches!(
            merged.nodes[2].status,
            NodeStatus::TimedOut { .. }
        ));
        assert!(matches!(
            merged.nodes[0].status,
            NodeStatus::Ok { returned: 1, .. }
        ));
        assert_eq!(
            ClusterCursor::decode(&next.encode(), Order::Descending),
            Err(CursorError::OtherOrder)
        );
        assert_eq!(
            ClusterCursor::decode("garbage", Order::Ascending),
            Err(CursorError::Garbled)
        );
        let done = merge(
            vec![("a".into(), page(vec![entry("a", 2, 30)], false))],
            Order::Ascending,
            &next,
            3,
        );
        assert_eq!(done.next_cursor, None);
    }
}
