//! The cluster export bundle (`evident-cluster-export/v1`, docs/FORMAT.md): a header line
//! naming every node and its status at export time, then for each node that answered a part
//! line followed by that node's own `evident-export/v1` bundle byte for byte, then an end
//! line. [`ClusterExportVerifier`] checks every part with the key the reader pinned for its
//! node, through [`ExportVerifier`] unchanged, and names the node of any failure. Pure.
//!
//! ```text
//! {"format":"evident-cluster-export/v1","exported_by":…,"exported_at":…,"query":{…},"nodes":[{"node":…,"status":"ok",…},…]}
//! {"cluster_part":{"node":"node-1"}}
//! <node-1's bundle: header, entries, trailer>
//! {"cluster_part":{"node":"node-2"}}
//! <node-2's bundle>
//! {"cluster_end":{"parts":2}}
//! ```

use crate::export::{ExportError, ExportReport, ExportVerifier, MAX_LINE_BYTES};
use crate::note::NoteVerifier;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The `format` value of the header line.
pub const CLUSTER_FORMAT: &str = "evident-cluster-export/v1";

/// How a part line starts (no line of a node's bundle starts so).
pub const PART_PREFIX: &str = "{\"cluster_part\":";
/// How the end line starts.
pub const END_PREFIX: &str = "{\"cluster_end\":";

/// The header line. It is not signed: every part carries its node's signatures, and which
/// nodes a reader expects is the reader's to say (by the keys it pins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterHeader {
    /// Always [`CLUSTER_FORMAT`].
    pub format: String,
    /// The node that assembled the bundle.
    pub exported_by: String,
    /// RFC 3339, when it was assembled.
    pub exported_at: String,
    /// The query parameters of the export (each part's own signed header states them too).
    pub query: Value,
    /// Every node of the cluster as the exporting node knows it, itself first.
    pub nodes: Vec<ClusterNode>,
}

/// One node in the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    pub node: String,
    /// `ok` (its part follows), `unreachable`, `timed_out` or `refused` (no part).
    pub status: String,
    /// The key the exporting node has configured for it: a hint, never trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Why the node has no part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The header line (ending in `\n`).
pub fn header_line(header: &ClusterHeader) -> String {
    let mut line = serde_json::to_string(header).unwrap_or_default();
    line.push('\n');
    line
}

/// The line that opens `node`'s part (ending in `\n`).
pub fn part_line(node: &str) -> String {
    let mut line = String::from(PART_PREFIX);
    line.push_str("{\"node\":");
    line.push_str(&Value::String(node.to_owned()).to_string());
    line.push_str("}}\n");
    line
}

/// The end line (ending in `\n`).
pub fn end_line(parts: u64) -> String {
    format!("{END_PREFIX}{{\"parts\":{parts}}}}}\n")
}

/// Whether a file starting with `head` is a cluster bundle.
pub fn is_cluster_bundle(head: &[u8]) -> bool {
    let prefix = format!("{{\"format\":\"{CLUSTER_FORMAT}\"");
    head.starts_with(prefix.as_bytes())
}

/// The file itself is not a cluster bundle as written (its own lines, not a node's part).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterExportError {
    #[error("line {line}: {problem}")]
    Malformed { line: u64, problem: String },
    #[error("the cluster bundle is truncated: {0}")]
    Truncated(String),
}

/// What became of one node's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartOutcome {
    pub node: String,
    /// The line of the file its part line is on; the part's own line `n` is file line
    /// `first_line + n`.
    pub first_line: u64,
    pub result: Result<ExportReport, PartFailure>,
}

/// Why a node's part does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartFailure {
    /// Its bundle fails the single-node verification (line numbers within the part).
    #[error("{0}")]
    Export(ExportError),
    /// The reader pinned no key for this node.
    #[error("no key pinned for node {node}{hint}")]
    NotPinned { node: String, hint: String },
    /// The part's own signed header names another node.
    #[error("the part is labelled {labelled} but its signed header names node {signed}")]
    OtherNode { labelled: String, signed: String },
    /// A second part of the same node.
    #[error("a second part of node {0}")]
    Duplicate(String),
}

/// A node whose part the reader expected but the bundle does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingNode {
    pub node: String,
    pub reason: String,
}

/// The verdict on a whole cluster bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterReport {
    pub header: ClusterHeader,
    pub parts: Vec<PartOutcome>,
    /// Nodes without a part: listed in the header without one, or pinned by the reader.
    pub missing: Vec<MissingNode>,
}

impl ClusterReport {
    /// Every part verified and no node is missing.
    pub fn is_intact(&self) -> bool {
        self.missing.is_empty() && self.parts.iter().all(|p| p.result.is_ok())
    }
}

struct OpenPart {
    node: String,
    first_line: u64,
    /// `None` once the part failed (its remaining lines are skipped).
    verifier: Option<ExportVerifier>,
    failure: Option<PartFailure>,
}

/// What the reader trusts about one node: its key, and optionally a signed checkpoint of it
/// held elsewhere (its part must then be consistent with it, as for a single export).
#[derive(Debug, Clone)]
pub struct NodePin {
    pub key: NoteVerifier,
    pub trusted_checkpoint: Option<String>,
}

/// Checks a cluster bundle line by line, every part through its own [`ExportVerifier`].
pub struct ClusterExportVerifier {
    pins: BTreeMap<String, NodePin>,
    line: u64,
    partial: Vec<u8>,
    header: Option<ClusterHeader>,
    open: Option<OpenPart>,
    parts: Vec<PartOutcome>,
    ended: Option<u64>,
}

impl ClusterExportVerifier {
    /// `pins`: node id to the key its part must verify with (the reader's, never the
    /// bundle's). A pinned node without a part is reported missing.
    pub fn new(pins: BTreeMap<String, NodePin>) -> ClusterExportVerifier {
        ClusterExportVerifier {
            pins,
            line: 0,
            partial: Vec::new(),
            header: None,
            open: None,
            parts: Vec::new(),
            ended: None,
        }
    }

    /// Feeds raw bytes of the file, in any chunking.
    pub fn push_bytes(&mut self, mut bytes: &[u8]) -> Result<(), ClusterExportError> {
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            let (head, rest) = bytes.split_at(pos);
            bytes = rest.get(1..).unwrap_or_default();
            if self.partial.is_empty() {
                self.push_line(head)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.push_line(&line)?;
            }
        }
        if self.partial.len() + bytes.len() > MAX_LINE_BYTES {
            return Err(malformed(
                self.line + 1,
                format!("line longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// Feeds one line, without its newline.
    pub fn push_line(&mut self, line: &[u8]) -> Result<(), ClusterExportError> {
        self.line += 1;
        let n = self.line;
        if self.ended.is_some() {
            return Err(malformed(n, "content after the end line".to_owned()));
        }
        if self.header.is_none() {
            return self.read_header(line);
        }
        if line.starts_with(PART_PREFIX.as_bytes()) {
            self.close_part();
            let node = part_node(line).ok_or_else(|| {
                malformed(
                    n,
                    "a part line that is not {\"cluster_part\":{\"node\":\"…\"}}".to_owned(),
                )
            })?;
            self.open_part(node, n);
            return Ok(());
        }
        if line.starts_with(END_PREFIX.as_bytes()) {
            self.close_part();
            let parts = end_parts(line).ok_or_else(|| {
                malformed(
                    n,
                    "an end line that is not {\"cluster_end\":{\"parts\":N}}".to_owned(),
                )
            })?;
            if parts != self.parts.len() as u64 {
                return Err(malformed(
                    n,
                    format!(
                        "the end line counts {parts} part(s), the file holds {}",
                        self.parts.len()
                    ),
                ));
            }
            self.ended = Some(parts);
            return Ok(());
        }
        let Some(part) = &mut self.open else {
            return Err(malformed(
                n,
                "a line outside any node's part (expected a cluster_part line)".to_owned(),
            ));
        };
        if let Some(verifier) = &mut part.verifier {
            if let Err(e) = verifier.push_line(line) {
                part.failure = Some(PartFailure::Export(e));
                part.verifier = None;
            } else if verifier.header().is_some_and(|h| h.node_id != part.node) {
                let signed = verifier
                    .header()
                    .map(|h| h.node_id.clone())
                    .unwrap_or_default();
                part.failure = Some(PartFailure::OtherNode {
                    labelled: part.node.clone(),
                    signed,
                });
                part.verifier = None;
            }
        }
        Ok(())
    }

    fn read_header(&mut self, line: &[u8]) -> Result<(), ClusterExportError> {
        let header: ClusterHeader = serde_json::from_slice(line)
            .map_err(|e| malformed(1, format!("not a cluster bundle header: {e}")))?;
        if header.format != CLUSTER_FORMAT {
            return Err(malformed(
                1,
                format!("format {:?}, expected {CLUSTER_FORMAT:?}", header.format),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for node in &header.nodes {
            if !seen.insert(node.node.as_str()) {
                return Err(malformed(
                    1,
                    format!("node {} is listed twice in the header", node.node),
                ));
            }
        }
        self.header = Some(header);
        Ok(())
    }

    fn open_part(&mut self, node: String, first_line: u64) {
        let listed_key = self
            .header
            .as_ref()
            .and_then(|h| h.nodes.iter().find(|n| n.node == node))
            .and_then(|n| n.public_key.clone());
        let (verifier, failure) = if self.parts.iter().any(|p| p.node == node) {
            (None, Some(PartFailure::Duplicate(node.clone())))
        } else {
            match self.pins.get(&node) {
                Some(pin) => (
                    Some(ExportVerifier::new(
                        pin.key.clone(),
                        pin.trusted_checkpoint.clone(),
                    )),
                    None,
                ),
                None => (
                    None,
                    Some(PartFailure::NotPinned {
                        node: node.clone(),
                        hint: listed_key.map_or_else(String::new, |k| {
                            format!(" (the bundle's header lists {k}; pin it only if you know it is that node's key)")
                        }),
                    }),
                ),
            }
        };
        self.open = Some(OpenPart {
            node,
            first_line,
            verifier,
            failure,
        });
    }

    fn close_part(&mut self) {
        let Some(part) = self.open.take() else {
            return;
        };
        let result = match (part.failure, part.verifier) {
            (Some(failure), _) => Err(failure),
            (None, Some(verifier)) => verifier.finish().map_err(PartFailure::Export),
            (None, None) => Err(PartFailure::Export(ExportError::Truncated(
                "the part is empty".to_owned(),
            ))),
        };
        self.parts.push(PartOutcome {
            node: part.node,
            first_line: part.first_line,
            result,
        });
    }

    /// The verdict, at the end of the file.
    pub fn finish(self) -> Result<ClusterReport, ClusterExportError> {
        if !self.partial.is_empty() {
            return Err(ClusterExportError::Truncated(format!(
                "line {} has no final newline: the file was cut short",
                self.line + 1
            )));
        }
        let Some(header) = self.header else {
            return Err(ClusterExportError::Truncated(
                "the file is empty".to_owned(),
            ));
        };
        if self.ended.is_none() {
            let last = self
                .open
                .as_ref()
                .map(|p| format!(" (it stops in the part of node {})", p.node))
                .unwrap_or_default();
            return Err(ClusterExportError::Truncated(format!("no end line{last}")));
        }
        let has_part = |node: &str| self.parts.iter().any(|p| p.node == node);
        let mut missing = Vec::new();
        for node in &header.nodes {
            if has_part(&node.node) {
                continue;
            }
            let reason = if node.status == "ok" {
                "listed as ok in the header but its part is not in the file (removed?)".to_owned()
            } else {
                let message = node.message.as_deref().unwrap_or("(no reason given)");
                let prefix = format!("node {}: ", node.node);
                format!(
                    "{} when the bundle was made: {}",
                    node.status,
                    message.strip_prefix(&prefix).unwrap_or(message)
                )
            };
            missing.push(MissingNode {
                node: node.node.clone(),
                reason,
            });
        }
        for node in self.pins.keys() {
            if !has_part(node) && !header.nodes.iter().any(|n| n.node == *node) {
                missing.push(MissingNode {
                    node: node.clone(),
                    reason: "you pinned a key for it, but the bundle neither holds nor lists it"
                        .to_owned(),
                });
            }
        }
        Ok(ClusterReport {
            header,
            parts: self.parts,
            missing,
        })
    }
}

fn malformed(line: u64, problem: String) -> ClusterExportError {
    ClusterExportError::Malformed { line, problem }
}

/// The node of a part line written exactly as [`part_line`] writes it.
fn part_node(line: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let node = value.get("cluster_part")?.get("node")?.as_str()?.to_owned();
    let mut exact = part_line(&node);
    exact.pop();
    (exact.as_bytes() == line).then_some(node)
}

fn end_parts(line: &[u8]) -> Option<u64> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let parts = value.get("cluster_end")?.get("parts")?.as_u64()?;
    let mut exact = end_line(parts);
    exact.pop();
    (exact.as_bytes() == line).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::export::{ExportHeader, signed_header_line, trailer_line};
    use crate::note::NoteSigner;

    fn signer(node: &str, seed: u8) -> NoteSigner {
        NoteSigner::from_seed(&format!("evident/{node}"), [seed; 32]).unwrap()
    }

    /// A node's bundle of its empty log, signed by `signer`, naming `node`.
    fn empty_bundle(node: &str, signer: &NoteSigner) -> String {
        let checkpoint = Checkpoint {
            origin: signer.name().to_owned(),
            size: 0,
            root: crate::merkle::empty_root(),
            extensions: Vec::new(),
        }
        .sign(signer)
        .unwrap();
        let header = ExportHeader {
            node_id: node.to_owned(),
            checkpoint,
            query: "{}".to_owned(),
            exported_at: 0,
        };
        signed_header_line(&header, None, signer).unwrap() + &trailer_line(0, 0)
    }

    fn cluster_header(nodes: &[&str]) -> String {
        header_line(&ClusterHeader {
            format: CLUSTER_FORMAT.to_owned(),
            exported_by: nodes[0].to_owned(),
            exported_at: "2026-01-01T00:00:00.000Z".into(),
            query: Value::Object(Default::default()),
            nodes: nodes
                .iter()
                .map(|n| ClusterNode {
                    node: (*n).to_owned(),
                    status: "ok".into(),
                    public_key: None,
                    message: None,
                })
                .collect(),
        })
    }

    fn pins(pairs: &[(&str, &NoteSigner)]) -> BTreeMap<String, NodePin> {
        pairs
            .iter()
            .map(|(n, s)| {
                (
                    (*n).to_owned(),
                    NodePin {
                        key: s.verifier(),
                        trusted_checkpoint: None,
                    },
                )
            })
            .collect()
    }

    fn check(
        text: &str,
        pins: BTreeMap<String, NodePin>,
    ) -> Result<ClusterReport, ClusterExportError> {
        let mut v = ClusterExportVerifier::new(pins);
        // Fed in small pieces: lines may span any chunking.
        for piece in text.as_bytes().chunks(7) {
            v.push_bytes(piece)?;
        }
        v.finish()
    }

    #[test]
    fn every_part_verifies_with_its_own_pinned_key_and_failures_name_the_node() {
        let (s1, s2) = (signer("node-1", 1), signer("node-2", 2));
        let good = format!(
            "{}{}{}{}{}{}",
            cluster_header(&["node-1", "node-2"]),
            part_line("node-1"),
            empty_bundle("node-1", &s1),
            part_line("node-2"),
            empty_bundle("node-2", &s2),
            end_line(2)
        );
        let report = check(&good, pins(&[("node-1", &s1), ("node-2", &s2)])).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.parts.len(), 2);
        assert_eq!(report.parts[1].first_line, 5);

        // node-2's key swapped for node-1's: node-2's part fails, node-1's still verifies.
        let swapped = check(&good, pins(&[("node-1", &s1), ("node-2", &s1)])).unwrap();
        assert!(swapped.parts[0].result.is_ok());
        assert!(matches!(
            swapped.parts[1].result,
            Err(PartFailure::Export(_))
        ));
        // node-1's own bundle labelled node-2 (pinned with node-1's key): the label lies.
        let relabelled = good.replace(&empty_bundle("node-2", &s2), &empty_bundle("node-1", &s1));
        let report = check(&relabelled, pins(&[("node-1", &s1), ("node-2", &s1)])).unwrap();
        assert!(matches!(
            &report.parts[1].result,
            Err(PartFailure::OtherNode { labelled, signed }) if labelled == "node-2" && signed == "node-1"
        ));
        // A node not pinned; a node pinned but absent.
        let unpinned = check(&good, pins(&[("node-1", &s1)])).unwrap();
        assert!(matches!(
            &unpinned.parts[1].result,
            Err(PartFailure::NotPinned { node, .. }) if node == "node-2"
        ));
        let s3 = signer("node-3", 3);
        let absent = check(
            &good,
            pins(&[("node-1", &s1), ("node-2", &s2), ("node-3", &s3)]),
        )
        .unwrap();
        assert_eq!(absent.missing.len(), 1);
        assert_eq!(absent.missing[0].node, "node-3");
        // A part listed ok but removed.
        let removed = format!(
            "{}{}{}{}",
            cluster_header(&["node-1", "node-2"]),
            part_line("node-1"),
            empty_bundle("node-1", &s1),
            end_line(1)
        );
        let report = check(&removed, pins(&[("node-1", &s1), ("node-2", &s2)])).unwrap();
        assert!(report.missing[0].reason.contains("removed"), "{report:?}");
        // A second part of node-1.
        let twice = good.replace(
            &format!("{}{}", part_line("node-2"), empty_bundle("node-2", &s2)),
            &format!("{}{}", part_line("node-1"), empty_bundle("node-1", &s1)),
        );
        let report = check(&twice, pins(&[("node-1", &s1), ("node-2", &s2)])).unwrap();
        assert!(matches!(&report.parts[1].result, Err(PartFailure::Duplicate(n)) if n == "node-1"));
        assert_eq!(report.missing[0].node, "node-2");
    }

    #[test]
    fn the_wrapper_lines_are_exact() {
        let s1 = signer("node-1", 1);
        let p = || pins(&[("node-1", &s1)]);
        let head = cluster_header(&["node-1"]);
        let part = format!("{}{}", part_line("node-1"), empty_bundle("node-1", &s1));
        let malformed_at = |text: &str| match check(text, p()) {
            Err(ClusterExportError::Malformed { line, .. }) => Some(line),
            _ => None,
        };
        assert_eq!(
            malformed_at(&format!("{head}{part}{}", end_line(2))),
            Some(5)
        );
        assert_eq!(
            malformed_at(&format!("{head}{part}{}{{}}\n", end_line(1))),
            Some(6)
        );
        assert_eq!(malformed_at(&format!("{head}{{\"end\":{{}}}}\n")), Some(2));
        assert_eq!(
            malformed_at(&format!("{head}{{\"cluster_part\":{{\"node\":1}}}}\n")),
            Some(2)
        );
        assert_eq!(
            malformed_at("{\"format\":\"evident-export/v1\"}\n"),
            Some(1)
        );
        assert!(matches!(
            check(&format!("{head}{part}"), p()),
            Err(ClusterExportError::Truncated(m)) if m.contains("node-1")
        ));
        assert!(matches!(
            check(&format!("{head}{part}{}", end_line(1).trim_end()), p()),
            Err(ClusterExportError::Truncated(_))
        ));
        assert!(
            check(&format!("{head}{part}{}", end_line(1)), p())
                .unwrap()
                .is_intact()
        );
    }

    #[test]
    fn wrapper_lines_round_trip_and_are_recognised() {
        assert_eq!(
            part_node(part_line("node-1").trim_end().as_bytes()).as_deref(),
            Some("node-1")
        );
        assert_eq!(end_parts(end_line(3).trim_end().as_bytes()), Some(3));
        assert_eq!(
            part_node(b"{\"cluster_part\":{\"node\":\"a\",\"x\":1}}"),
            None
        );
        let header = ClusterHeader {
            format: CLUSTER_FORMAT.to_owned(),
            exported_by: "node-1".into(),
            exported_at: "2026-01-01T00:00:00.000Z".into(),
            query: Value::Object(Default::default()),
            nodes: vec![ClusterNode {
                node: "node-2".into(),
                status: "timed_out".into(),
                public_key: None,
                message: Some("late".into()),
            }],
        };
        let line = header_line(&header);
        assert!(is_cluster_bundle(line.as_bytes()));
        let mut v = ClusterExportVerifier::new(BTreeMap::new());
        v.push_bytes(line.as_bytes()).unwrap();
        v.push_bytes(end_line(0).as_bytes()).unwrap();
        let report = v.finish().unwrap();
        assert!(!report.is_intact());
        assert_eq!(report.missing[0].node, "node-2");
        assert!(report.missing[0].reason.contains("timed_out"));
    }
}
