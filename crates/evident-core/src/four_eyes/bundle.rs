//! The signed four-eyes report bundle: the export bundle (`evident-export/v1`, see
//! `crate::export`) with a report header in place of the export header. The header carries
//! the report and the checkpoint and is signed by the node's checkpoint key; the entry lines
//! (every entry the report names, with the run markers that tie them to the checkpoint) and
//! the trailer are export lines, checked by the export verifier. Verifying recomputes the
//! report from the entries with [`super::evaluate`]: a report that does not follow from them
//! fails, whatever its signature. Pure: bytes in, a verdict out.
//!
//! ```text
//! {"format":"evident-four-eyes-report/v1","node_id":…,"generated_at":…,"checkpoint":"…","report":{…},"signature":"…"}
//! {<entry line, as in an export>}
//! {"end":{"entries":N,"runs":R}}
//! ```

use super::{FourEyesReport, ReportScope, evaluate};
use crate::chain::SealedEntry;
use crate::event::{Millis, format_rfc3339_millis};
use crate::export::{
    ExportError, ExportVerifier, malformed, only_keys, parse_entry_line, parse_json, push_json_str,
    require_canonical, signature_problem, signed_statement, str_member, violation, with_signature,
};
use crate::note::{NoteError, NoteSigner, NoteVerifier};
use crate::verify::Violation;
use serde_json::{Map, Value};

/// The `format` value of the report header.
pub const FORMAT: &str = "evident-four-eyes-report/v1";

/// First line of the text a report header signature signs (never a decimal number, and not
/// the export header's, so neither signature can stand for a checkpoint or for the other).
pub const STATEMENT_PREFIX: &str = "evident-four-eyes-report/v1\n";

/// The report header's members, in the order they are written.
const HEADER_MEMBERS: [&str; 6] = [
    "format",
    "node_id",
    "generated_at",
    "checkpoint",
    "report",
    "signature",
];

/// The report header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportHeader {
    pub node_id: String,
    pub generated_at: Millis,
    /// The signed checkpoint every entry is tied to.
    pub checkpoint: String,
    /// The report as JSON (written in its canonical RFC 8785 form).
    pub report: Value,
}

/// The header line without its signature (ending in `\n`).
pub fn unsigned_header_line(header: &ReportHeader) -> String {
    let mut out = String::with_capacity(512 + header.checkpoint.len());
    out.push_str("{\"format\":");
    push_json_str(&mut out, FORMAT);
    out.push_str(",\"node_id\":");
    push_json_str(&mut out, &header.node_id);
    out.push_str(",\"generated_at\":");
    push_json_str(&mut out, &format_rfc3339_millis(header.generated_at));
    out.push_str(",\"checkpoint\":");
    push_json_str(&mut out, &header.checkpoint);
    out.push_str(",\"report\":");
    crate::canonical::write_canonical_json(&header.report, &mut out);
    out.push_str("}\n");
    out
}

/// The signed header line (ending in `\n`), signed by the node's checkpoint key.
pub fn signed_header_line(header: &ReportHeader, signer: &NoteSigner) -> Result<String, NoteError> {
    let unsigned = unsigned_header_line(header);
    let note = signer.sign(&signed_statement(STATEMENT_PREFIX, &unsigned))?;
    Ok(with_signature(&unsigned, &note))
}

/// Whether `first_line` is a report header (by its `format`), to tell a report bundle from an
/// export before verifying either.
pub fn is_report_header(first_line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(first_line)
        .ok()
        .and_then(|v| v.get("format").and_then(Value::as_str).map(|f| f == FORMAT))
        .unwrap_or(false)
}

/// Why a report bundle does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The bundle itself: malformed, a bad signature, an entry that is not genuine or not
    /// tied to the checkpoint.
    #[error(transparent)]
    Bundle(#[from] ExportError),
    /// The entries are genuine, but the report does not follow from them (or names entries
    /// the bundle lacks, or the bundle holds entries the report does not name).
    #[error("the report does not follow from its entries: {0}")]
    Disagrees(String),
}

impl ReportError {
    /// The kinds of failure besides the bundle's ([`ExportError::kind`]).
    pub const KINDS: [&'static str; 1] = ["report_disagrees"];

    /// A stable machine-readable name: the bundle's failure kind, or `report_disagrees`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReportError::Bundle(e) => e.kind(),
            ReportError::Disagrees(_) => "report_disagrees",
        }
    }
}

/// A verified report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReport {
    pub node_id: String,
    pub generated_at: Millis,
    pub checkpoint_size: u64,
    /// Entries the bundle carries (every one the report names).
    pub entries: u64,
    pub report: FourEyesReport,
}

/// Verifies a whole report bundle held in memory. `trusted_checkpoint`: a signed checkpoint
/// held elsewhere, which the bundle's checkpoint must equal (an older one is reported as
/// truncation, another tree as a fork).
pub fn verify_report(
    bytes: &[u8],
    verifier: NoteVerifier,
    trusted_checkpoint: Option<String>,
) -> Result<VerifiedReport, ReportError> {
    let Some(body) = bytes.strip_suffix(b"\n") else {
        return Err(ExportError::Truncated(
            "the last line has no final newline: the file was cut short".to_owned(),
        )
        .into());
    };
    let mut lines = body.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let header = read_header(first, &verifier)?;
    let mut entries_verifier = ExportVerifier::for_selection(
        verifier,
        &header.node_id,
        &header.checkpoint,
        trusted_checkpoint,
        1,
    )?;
    let mut entries: Vec<SealedEntry> = Vec::new();
    for (i, line) in lines.enumerate() {
        entries_verifier.push_line(line)?;
        let n = i as u64 + 2;
        let is_trailer = parse_json(line, n)?
            .as_object()
            .is_some_and(|o| o.contains_key("end"));
        if !is_trailer {
            entries.push(parse_entry_line(line, n)?.entry);
        }
    }
    let checked = entries_verifier.finish()?;

    let claimed = header.report;
    let scope = scope_of(&claimed)?;
    let evaluation =
        evaluate(&scope, &entries).map_err(|e| ReportError::Disagrees(format!("report.{e}")))?;
    let carried: std::collections::BTreeSet<u64> = entries.iter().map(|e| e.event.seq).collect();
    if let Some(seq) = evaluation.named.difference(&carried).next() {
        return Err(ReportError::Disagrees(format!(
            "it names entry {seq}, which the bundle does not carry"
        )));
    }
    if let Some(seq) = carried.difference(&evaluation.named).next() {
        return Err(ReportError::Disagrees(format!(
            "the bundle carries entry {seq}, which the report does not name"
        )));
    }
    let recomputed = serde_json::to_value(&evaluation.report)
        .map_err(|e| ReportError::Disagrees(format!("cannot write the report: {e}")))?;
    if let Some(path) = first_difference(&claimed, &recomputed, "report") {
        return Err(ReportError::Disagrees(format!(
            "{path} differs from what the entries say"
        )));
    }
    Ok(VerifiedReport {
        node_id: header.node_id,
        generated_at: header.generated_at,
        checkpoint_size: checked.checkpoint_size,
        entries: checked.entries,
        report: evaluation.report,
    })
}

/// What a report covers, from its JSON (the members besides summary, pairs and rejected).
fn scope_of(report: &Value) -> Result<ReportScope, ReportError> {
    let mut scope: Map<String, Value> = report
        .as_object()
        .cloned()
        .ok_or_else(|| ReportError::Disagrees("report: expected an object".to_owned()))?;
    for member in ["summary", "pairs", "rejected"] {
        scope.remove(member);
    }
    serde_json::from_value(Value::Object(scope))
        .map_err(|e| ReportError::Disagrees(format!("report: {e}")))
}

/// The path of the first place where `a` and `b` differ, if they do.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => {
                        if let Some(p) = first_difference(v, w, &format!("{path}.{k}")) {
                            return Some(p);
                        }
                    }
                    None => return Some(format!("{path}.{k}")),
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}.{k}"))
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                if let Some(p) = first_difference(v, w, &format!("{path}[{i}]")) {
                    return Some(p);
                }
            }
            (x.len() != y.len()).then(|| format!("{path} (length {} vs {})", x.len(), y.len()))
        }
        _ => (a != b).then(|| path.to_owned()),
    }
}

fn read_header(line: &[u8], verifier: &NoteVerifier) -> Result<ReportHeader, ReportError> {
    let n = 1;
    let value = parse_json(line, n)?;
    let obj = value
        .as_object()
        .ok_or_else(|| malformed(n, "the header is not a JSON object"))?;
    if obj.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(malformed(
            n,
            format!("not a four-eyes report: \"format\" must be {FORMAT:?}"),
        )
        .into());
    }
    only_keys(obj, &HEADER_MEMBERS, "header", n)?;
    let node_id = str_member(obj, "node_id", "header", n)?;
    crate::event::validate_node_id(node_id).map_err(|e| malformed(n, e.to_string()))?;
    let generated_text = str_member(obj, "generated_at", "header", n)?;
    let generated_at = crate::event::parse_rfc3339(generated_text)
        .ok()
        .filter(|ms| format_rfc3339_millis(*ms) == generated_text)
        .ok_or_else(|| {
            malformed(
                n,
                "header.generated_at: expected a timestamp of the form YYYY-MM-DDTHH:MM:SS.mmmZ",
            )
        })?;
    let report = match obj.get("report") {
        Some(r @ Value::Object(_)) => r.clone(),
        _ => return Err(malformed(n, "header.report: expected a JSON object").into()),
    };
    let header = ReportHeader {
        node_id: node_id.to_owned(),
        generated_at,
        checkpoint: str_member(obj, "checkpoint", "header", n)?.to_owned(),
        report,
    };
    let signature = str_member(obj, "signature", "header", n)?;
    let unsigned = unsigned_header_line(&header);
    require_canonical(&with_signature(&unsigned, signature), line, n)?;
    let opened = crate::note::open(signature, std::slice::from_ref(verifier)).map_err(|e| {
        violation(
            n,
            Violation::BadHeaderSignature {
                reason: signature_problem(signature, verifier, &e),
            },
        )
    })?;
    if opened.text != signed_statement(STATEMENT_PREFIX, &unsigned) {
        return Err(violation(
            n,
            Violation::BadHeaderSignature {
                reason: "the signature is valid but signs a different report".to_owned(),
            },
        )
        .into());
    }
    Ok(header)
}
