//! `evident verify --export FILE --node-key NODE=KEY ...` on a cluster bundle (`evident
//! export --cluster`): streams the file through the core's `ClusterExportVerifier`, which
//! checks every node's part with the key pinned here for that node, and prints one verdict
//! per node. Deciding nothing itself: the single-node verdict texts are `verify`'s.

use crate::cmd::checkpoint::load_verifier;
use crate::cmd::verify::{completeness_line, export_failure};
use crate::output::{VerificationFailed, bytes_progress, usage};
use anyhow::Context as _;
use evident_core::Checkpoint;
use evident_core::cluster_export::{
    ClusterExportError, ClusterExportVerifier, ClusterReport, NodePin, PartFailure,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

/// Bytes read from the file at a time.
const READ_BUFFER: usize = 256 * 1024;

/// Whether `file` starts with a cluster bundle header.
pub fn is_cluster_bundle(file: &Path) -> anyhow::Result<bool> {
    let mut opened = std::fs::File::open(file)
        .with_context(|| format!("cannot open export {}", file.display()))?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < head.len() {
        match opened.read(head.get_mut(got..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }
    Ok(evident_core::cluster_export::is_cluster_bundle(
        head.get(..got).unwrap_or_default(),
    ))
}

/// The pins of `--node-key NODE=KEY` (each KEY a verifier key or a file holding one), with
/// each `--checkpoint` given to the node whose pinned key opens it.
fn pins(node_keys: &[String], trusted: &[String]) -> anyhow::Result<BTreeMap<String, NodePin>> {
    if node_keys.is_empty() {
        return Err(usage(
            "a cluster bundle holds one part per node: pin each node's key with --node-key NODE=KEY (repeat it for every node)",
        ));
    }
    let mut pins = BTreeMap::new();
    for arg in node_keys {
        let Some((node, key)) = arg.split_once('=') else {
            return Err(usage(format!(
                "--node-key {arg:?}: expected NODE=KEY (e.g. node-1=evident/node-1+…)"
            )));
        };
        let key = load_verifier(key).with_context(|| format!("--node-key {node}=…"))?;
        let pin = NodePin {
            key,
            trusted_checkpoint: None,
        };
        if pins.insert(node.to_owned(), pin).is_some() {
            return Err(usage(format!("--node-key: node {node} is given twice")));
        }
    }
    for note in trusted {
        let owner = pins
            .iter_mut()
            .find(|(_, pin)| Checkpoint::open(note, &pin.key).is_ok());
        match owner {
            Some((node, pin)) if pin.trusted_checkpoint.is_some() => {
                return Err(usage(format!(
                    "--checkpoint: two checkpoints of node {node}; give the newest you hold"
                )));
            }
            Some((_, pin)) => pin.trusted_checkpoint = Some(note.clone()),
            None => {
                return Err(usage(
                    "--checkpoint: a checkpoint that none of the --node-key keys signed",
                ));
            }
        }
    }
    Ok(pins)
}

/// Verifies the cluster bundle `file`.
pub fn run(
    file: &Path,
    node_keys: &[String],
    public_key_given: bool,
    trusted: &[String],
) -> anyhow::Result<()> {
    if public_key_given {
        return Err(usage(format!(
            "{} is a cluster bundle: pin each node's key with --node-key NODE=KEY instead of --public-key",
            file.display()
        )));
    }
    let pins = pins(node_keys, trusted)?;
    let keys: BTreeMap<String, String> = pins
        .iter()
        .map(|(node, pin)| {
            (
                node.clone(),
                format!("{} (key id {:08x})", pin.key.name(), pin.key.key_id()),
            )
        })
        .collect();
    let consistent: Vec<String> = pins
        .iter()
        .filter(|(_, pin)| pin.trusted_checkpoint.is_some())
        .map(|(node, _)| node.clone())
        .collect();
    let mut opened = std::fs::File::open(file)
        .with_context(|| format!("cannot open export {}", file.display()))?;
    let total = opened.metadata().ok().map(|m| m.len());
    let bar = bytes_progress(total, "verifying");
    let mut verifier = ClusterExportVerifier::new(pins);
    let mut buf = vec![0u8; READ_BUFFER];
    let outcome: anyhow::Result<Result<ClusterReport, ClusterExportError>> = loop {
        let n = match opened.read(&mut buf) {
            Ok(0) => break Ok(verifier.finish()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                break Err(anyhow::Error::new(e).context(format!("reading {}", file.display())));
            }
        };
        bar.inc(n as u64);
        if let Err(e) = verifier.push_bytes(buf.get(..n).unwrap_or_default()) {
            break Ok(Err(e));
        }
    };
    bar.finish_and_clear();
    let report = match outcome? {
        Ok(report) => report,
        Err(ClusterExportError::Truncated(what)) => {
            return Err(VerificationFailed(format!("FAILED: {what}")).into());
        }
        Err(ClusterExportError::Malformed { line, problem }) => {
            return Err(VerificationFailed(format!("FAILED at line {line}: {problem}")).into());
        }
    };
    let lines = node_lines(&report, &keys, &consistent);
    if report.is_intact() {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "OK: cluster export intact: {} node part(s) (exported by {} at {}), each verified with the key you pinned for its node",
            report.parts.len(),
            report.header.exported_by,
            report.header.exported_at
        )?;
        out.write_all(lines.as_bytes())?;
        return Ok(());
    }
    let failed: Vec<&str> = report
        .parts
        .iter()
        .filter(|p| p.result.is_err())
        .map(|p| p.node.as_str())
        .chain(report.missing.iter().map(|m| m.node.as_str()))
        .collect();
    Err(VerificationFailed(format!(
        "FAILED: cluster export: node(s) {} do not verify or are missing\n{}",
        failed.join(", "),
        lines.trim_end()
    ))
    .into())
}

/// One verdict per node: the parts in file order, then the missing nodes.
fn node_lines(
    report: &ClusterReport,
    keys: &BTreeMap<String, String>,
    consistent: &[String],
) -> String {
    let mut text = String::new();
    for part in &report.parts {
        let node = &part.node;
        match &part.result {
            Ok(r) => {
                text.push_str(&format!(
                    "  node {node}: OK: {} entries in {} run(s){}, tied to a checkpoint of size {}, key {}\n",
                    r.entries,
                    r.runs,
                    match (r.first_seq, r.last_seq) {
                        (Some(a), Some(b)) => format!(" (seq {a} to {b})"),
                        _ => String::new(),
                    },
                    r.checkpoint_size,
                    keys.get(node).map_or("?", String::as_str),
                ));
                text.push_str(&format!("    {}\n", completeness_line(r)));
                if consistent.contains(node) {
                    text.push_str(
                        "    consistent with your checkpoint: no truncation or rollback\n",
                    );
                }
            }
            Err(PartFailure::Export(e)) => {
                let verdict = export_failure(e.clone(), None).to_string();
                let place = match e.line() {
                    Some(line) => format!(
                        " (line {line} of its part is line {} of the file)",
                        part.first_line + line
                    ),
                    None => String::new(),
                };
                text.push_str(&format!("  node {node}: {verdict}{place}\n"));
            }
            Err(other) => text.push_str(&format!("  node {node}: FAILED: {other}\n")),
        }
    }
    for missing in &report.missing {
        text.push_str(&format!(
            "  node {}: MISSING: {}\n",
            missing.node, missing.reason
        ));
    }
    text
}
