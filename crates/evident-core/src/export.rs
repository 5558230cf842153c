//! The self-verifying export bundle (NDJSON): a header carrying the signed checkpoint, one line
//! per entry, run markers tying each contiguous run of entries to the checkpoint's tree, and a
//! trailer. Lines are written in one exact form and the reader refuses any other, so that every
//! byte of an export is checked. The header is signed by the node's checkpoint key (a signed
//! note over the SHA-256 of the header without its `signature` member), so that what was
//! exported, when and by which node is authenticated too. Pure: lines in, verdicts out; the caller reads the file.
//!
//! ```text
//! {"format":"evident-export/v1","node_id":…,"exported_at":…,"query":{…},"checkpoint":"…"[,"consistency":{…}],"signature":"…"}
//! {<event JSON>,"hash":…,"seal":…,"run_start":{"prev_hash":…,"left":[…]}}      first entry of a run
//! {<event JSON>,"hash":…,"seal":…}                                             inside a run
//! {<event JSON>,"hash":…,"seal":…,"run_end":{"right":[…]}}                      last entry of a run
//! {"end":{"entries":N,"runs":R}}
//! ```
//!
//! A run is a maximal range `[a, b)` of consecutive sequence numbers in the export. Its
//! `left` hashes are the compact range of `[0, a)`, its `right` hashes the subtrees covering
//! `[b, size)`; with the run's own leaves they rebuild the checkpoint's root. Every line ends
//! with `\n`. The byte-exact rules are in `docs/FORMAT.md`.

use crate::chain::{GENESIS_PREV_HASH, SealedEntry};
use crate::checkpoint::Checkpoint;
use crate::event::{Event, Millis};
use crate::filter::{EventFilter, FILTER_PARAMS};
use crate::hash::Hash;
use crate::merkle::{CompactRange, NodeId};
use crate::note::{NoteError, NoteSigner, NoteVerifier};
use crate::rotation::KeyChain;
use crate::verify::Violation;
use serde_json::{Map, Value};

/// The `format` value of the header line.
pub const FORMAT: &str = "evident-export/v1";

/// Longest line the reader accepts, newline excluded. A valid entry line is far shorter (the
/// context is capped at 16 KiB of canonical text); the cap keeps a reader's memory bounded on
/// a file that has no newlines.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Header line: what the export covers and the checkpoint it is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportHeader {
    pub node_id: String,
    /// The signed checkpoint note every run is checked against.
    pub checkpoint: String,
    /// The filters used (canonical JSON text of an object), covered by the header signature.
    pub query: String,
    pub exported_at: crate::event::Millis,
}

/// Optional header member: a consistency proof from an older tree size to the checkpoint's,
/// so that a verifier holding an older trusted checkpoint can tie the export to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderConsistency {
    pub from_size: u64,
    /// The root of the tree of `from_size`, so that the proof can be checked from the export
    /// alone (and the older tree compared with a checkpoint held elsewhere).
    pub from_root: Hash,
    pub proof: Vec<Hash>,
}

/// On the first entry of a run `[a, b)`: the chain predecessor and the compact range `[0, a)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    pub prev_hash: Hash,
    pub left: Vec<Hash>,
}

/// On the last entry of a run `[a, b)`: the subtrees covering `[b, checkpoint size)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    pub right: Vec<Hash>,
}

/// One entry line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    pub entry: SealedEntry,
    pub run_start: Option<RunStart>,
    pub run_end: Option<RunEnd>,
}

/// The header's `query`, parsed: the filter every entry must match, and the limit the export
/// was cut at. Its members are the query parameters of `GET /api/v1/audit-log` with their
/// values as given there (strings); `format`, `order` and `consistency_from` describe the
/// request and filter nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportQuery {
    pub filter: EventFilter,
    pub limit: Option<u64>,
}

/// Members a header `query` may hold besides the filter parameters.
pub const QUERY_REQUEST_PARAMS: [&str; 4] = ["limit", "format", "order", "consistency_from"];

impl ExportQuery {
    /// Parses the `query` object of a header (`line` for the error).
    pub fn parse(query: &Map<String, Value>, line: u64) -> Result<ExportQuery, ExportError> {
        let what = "header.query";
        for (name, value) in query {
            if !FILTER_PARAMS.contains(&name.as_str())
                && !QUERY_REQUEST_PARAMS.contains(&name.as_str())
            {
                return Err(malformed(
                    line,
                    format!(
                        "{what}: unknown member \"{name}\"; allowed members are {}, {}",
                        FILTER_PARAMS.join(", "),
                        QUERY_REQUEST_PARAMS.join(", ")
                    ),
                ));
            }
            match value.as_str() {
                Some(v) if !v.is_empty() => {}
                _ => {
                    return Err(malformed(
                        line,
                        format!("{what}.{name}: expected a non-empty string"),
                    ));
                }
            }
        }
        let text = |name: &str| query.get(name).and_then(Value::as_str);
        let filter = EventFilter::from_params(text)
            .map_err(|e| malformed(line, format!("{what}.{}: {}", e.param, e.problem)))?;
        let limit = match text("limit") {
            None => None,
            Some(v) => Some(v.parse::<u64>().ok().filter(|l| *l > 0).ok_or_else(|| {
                malformed(line, format!("{what}.limit: expected a positive integer"))
            })?),
        };
        if text("format").is_some_and(|f| f != "ndjson") {
            return Err(malformed(
                line,
                format!("{what}.format: expected \"ndjson\""),
            ));
        }
        if text("order").is_some_and(|o| o != "asc") {
            return Err(malformed(line, format!("{what}.order: expected \"asc\"")));
        }
        if text("consistency_from").is_some_and(|c| c.parse::<u64>().is_err()) {
            return Err(malformed(
                line,
                format!("{what}.consistency_from: expected a non-negative integer"),
            ));
        }
        Ok(ExportQuery { filter, limit })
    }
}

/// What a verified export proves about entries that are not in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    /// No filter: the export holds every entry of the checkpoint's tree from `first` to
    /// `last` (inclusive), none left out. `last` is the checkpoint's last entry unless the
    /// export was cut at its `limit` (`cut_at_limit`). Entries below `first` are not in it
    /// (pruned before the export, or never asked for): nothing in the export tells which.
    Range {
        first: u64,
        last: u64,
        cut_at_limit: bool,
    },
    /// No filter and an empty checkpoint: there is nothing to leave out.
    EmptyLog,
    /// A filter: every entry is genuine and matches it, but one left out cannot be told from
    /// one that did not match (entries outside the filter are not in the export).
    NotProvable,
}

/// The node ids whose hashes a run `[start, end)` needs, against a checkpoint of `size`:
/// `(left, right)` = (`subtree_ids(0, start)`, `subtree_ids(end, size)`).
pub fn run_nodes(start: u64, end: u64, size: u64) -> (Vec<NodeId>, Vec<NodeId>) {
    (
        crate::merkle::subtree_ids(0, start),
        crate::merkle::subtree_ids(end, size),
    )
}

/// Errors reading or checking an export, each with its line number (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("line {line}: {problem}")]
    Malformed { line: u64, problem: String },
    #[error("line {line}: {violation}")]
    Violation {
        line: u64,
        violation: crate::verify::Violation,
    },
    #[error("export is truncated: {0}")]
    Truncated(String),
    /// The export may well be intact, but nothing in it ties it to the trusted checkpoint.
    #[error("line {line}: cannot check against the trusted checkpoint: {problem}")]
    Unprovable { line: u64, problem: String },
}

impl ExportError {
    /// The line the problem is on, when it is on one.
    pub fn line(&self) -> Option<u64> {
        match self {
            ExportError::Malformed { line, .. }
            | ExportError::Violation { line, .. }
            | ExportError::Unprovable { line, .. } => Some(*line),
            ExportError::Truncated(_) => None,
        }
    }

    /// A stable machine-readable name of the failure: the violation's kind, or one of
    /// [`ExportError::KINDS`] (docs/FORMAT.md §12, *Every failure a verifier reports*).
    pub fn kind(&self) -> &'static str {
        match self {
            ExportError::Malformed { .. } => "malformed_export",
            ExportError::Violation { violation, .. } => violation.kind(),
            ExportError::Truncated(_) => "truncated_export",
            ExportError::Unprovable { .. } => "unprovable",
        }
    }

    /// The kinds of the failures that are not integrity violations ([`Violation::KINDS`]).
    pub const KINDS: [&'static str; 3] = ["malformed_export", "truncated_export", "unprovable"];

    /// The integrity violation, when the problem is one (rather than a malformed file).
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            ExportError::Violation { violation, .. } => Some(violation),
            _ => None,
        }
    }
}

/// First line of the text a header signature signs; the second is the base64 SHA-256 of the
/// unsigned header line. Its second line is never a decimal number, so a signed header can
/// never be taken for a checkpoint signed by the same key (and the reverse).
pub const HEADER_STATEMENT_PREFIX: &str = "evident-export-header/v1\n";

/// The header line without its `signature` member (ending in `\n`): the bytes a header
/// signature covers.
pub fn unsigned_header_line(
    header: &ExportHeader,
    consistency: Option<&HeaderConsistency>,
) -> String {
    let mut out = String::with_capacity(256 + header.checkpoint.len() + header.query.len());
    out.push_str("{\"format\":");
    push_json_str(&mut out, FORMAT);
    out.push_str(",\"node_id\":");
    push_json_str(&mut out, &header.node_id);
    out.push_str(",\"exported_at\":");
    push_json_str(
        &mut out,
        &crate::event::format_rfc3339_millis(header.exported_at),
    );
    out.push_str(",\"query\":");
    out.push_str(&header.query);
    out.push_str(",\"checkpoint\":");
    push_json_str(&mut out, &header.checkpoint);
    if let Some(c) = consistency {
        out.push_str(",\"consistency\":{\"from_size\":");
        out.push_str(&c.from_size.to_string());
        out.push_str(",\"from_root\":\"");
        out.push_str(&c.from_root.to_hex());
        out.push_str("\",\"proof\":");
        push_hash_array(&mut out, &c.proof);
        out.push('}');
    }
    out.push_str("}\n");
    out
}

/// The note text a header signature signs, for an unsigned header line.
pub fn header_statement(unsigned_line: &str) -> String {
    signed_statement(HEADER_STATEMENT_PREFIX, unsigned_line)
}

/// The note text that signs `unsigned_line`: `prefix` (one line naming what is signed, never
/// a decimal number), then the base64 SHA-256 of the line. Other signed headers built on
/// this bundle (the four-eyes report) use it with their own prefix.
pub fn signed_statement(prefix: &str, unsigned_line: &str) -> String {
    use base64::Engine as _;
    let digest = Hash::digest(unsigned_line.as_bytes());
    let mut text = String::with_capacity(prefix.len() + 45);
    text.push_str(prefix);
    text.push_str(&base64::engine::general_purpose::STANDARD.encode(digest.as_bytes()));
    text.push('\n');
    text
}

/// The signed header line (ending in `\n`): the unsigned line with a last member
/// `"signature"` holding the signed note of [`header_statement`], signed by `signer` (the
/// node's checkpoint key).
pub fn signed_header_line(
    header: &ExportHeader,
    consistency: Option<&HeaderConsistency>,
    signer: &NoteSigner,
) -> Result<String, NoteError> {
    let unsigned = unsigned_header_line(header, consistency);
    let note = signer.sign(&header_statement(&unsigned))?;
    Ok(with_signature(&unsigned, &note))
}

/// [`signed_header_line`] signed by each of `signers` (the node's keys during a signing-key
/// rotation's transition, old key first): one note with a signature line per key.
pub fn signed_header_line_all(
    header: &ExportHeader,
    consistency: Option<&HeaderConsistency>,
    signers: &[NoteSigner],
) -> Result<String, NoteError> {
    let Some((first, rest)) = signers.split_first() else {
        return Err(NoteError::Malformed("no signing key".to_owned()));
    };
    let unsigned = unsigned_header_line(header, consistency);
    let mut note = first.sign(&header_statement(&unsigned))?;
    for signer in rest {
        note = crate::note::add_signature(&note, signer)?;
    }
    Ok(with_signature(&unsigned, &note))
}

/// `unsigned` (ending in `}\n`) with `,"signature":<note>` inserted before its closing brace.
pub(crate) fn with_signature(unsigned: &str, note: &str) -> String {
    let body = unsigned.strip_suffix("}\n").unwrap_or(unsigned);
    let mut out = String::with_capacity(unsigned.len() + note.len() + 24);
    out.push_str(body);
    out.push_str(",\"signature\":");
    push_json_str(&mut out, note);
    out.push_str("}\n");
    out
}

/// One entry line (ending in `\n`).
pub fn entry_line(entry: &ExportEntry) -> String {
    let mut out = match serde_json::to_string(&entry.entry.event) {
        Ok(json) => json,
        // Only an event whose context is not JSON fails to serialize, and a `Context` cannot
        // be built from such text; should it happen, the line says so and no reader takes it.
        Err(e) => {
            let mut line = String::from("{\"unserializable_event\":");
            push_json_str(&mut line, &e.to_string());
            line.push_str("}\n");
            return line;
        }
    };
    // The event object's closing brace; the entry's own members follow the event's.
    out.pop();
    out.push_str(",\"hash\":\"");
    out.push_str(&entry.entry.hash.to_hex());
    out.push_str("\",\"seal\":\"");
    out.push_str(&entry.entry.seal.to_hex());
    out.push('"');
    if let Some(start) = &entry.run_start {
        out.push_str(",\"run_start\":{\"prev_hash\":\"");
        out.push_str(&start.prev_hash.to_hex());
        out.push_str("\",\"left\":");
        push_hash_array(&mut out, &start.left);
        out.push('}');
    }
    if let Some(end) = &entry.run_end {
        out.push_str(",\"run_end\":{\"right\":");
        push_hash_array(&mut out, &end.right);
        out.push('}');
    }
    out.push_str("}\n");
    out
}

/// The trailer line (ending in `\n`).
pub fn trailer_line(entries: u64, runs: u64) -> String {
    format!("{{\"end\":{{\"entries\":{entries},\"runs\":{runs}}}}}\n")
}

pub(crate) fn push_json_str(out: &mut String, s: &str) {
    // The one JSON string form used everywhere: RFC 8785's, as for the context.
    crate::canonical::write_canonical_json(&Value::String(s.to_owned()), out);
}

fn push_hash_array(out: &mut String, hashes: &[Hash]) {
    out.push('[');
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(&h.to_hex());
        out.push('"');
    }
    out.push(']');
}

/// What a verified export held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub entries: u64,
    pub runs: u64,
    pub checkpoint_size: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The filter and limit the signed header states, which every entry matched.
    pub query: ExportQuery,
    pub completeness: Completeness,
    /// Keys trusted through signing-key rotations the export holds (docs/FORMAT.md §18),
    /// as verifier key strings, in the order learned; empty when the pinned key signed all.
    pub rotated_to: Vec<String>,
}

/// Verifies a whole export held in memory: splits it into lines (each must end in `\n`) and
/// feeds them to an [`ExportVerifier`].
pub fn verify_export(
    bytes: &[u8],
    verifier: NoteVerifier,
    trusted_checkpoint: Option<String>,
) -> Result<ExportReport, ExportError> {
    let mut v = ExportVerifier::new(verifier, trusted_checkpoint);
    v.push_bytes(bytes)?;
    v.finish()
}

/// The run being read: its start, the chain so far and the tree `[0, next seq)`.
#[derive(Clone)]
struct OpenRun {
    start: u64,
    prev_hash: Hash,
    tree: CompactRange,
}

/// The header's signatures, when no trusted key signed them yet but a key of the log's origin
/// did: they are checked again whenever a rotation event in the export teaches a new key, and
/// `waiting` is the verdict if none ever does.
#[derive(Clone)]
struct PendingHeader {
    checkpoint: String,
    signature: String,
    statement: String,
    consistency: Option<HeaderConsistency>,
    waiting: ExportError,
}

/// Why the header did not authenticate: `Waiting` when it is signed by a key of the log's
/// origin the verifier does not trust (yet); `Failed` for anything else.
enum AuthError {
    Waiting(ExportError),
    Failed(ExportError),
}

#[derive(Clone)]
enum Stage {
    Header,
    Entries,
    Done,
}

/// Checks an export line by line in constant memory (apart from one run's frontier).
///
/// Cloning takes a snapshot of the state, e.g. to try several continuations of one prefix.
#[derive(Clone)]
pub struct ExportVerifier {
    keys: KeyChain,
    pending: Option<PendingHeader>,
    trusted: Option<String>,
    stage: Stage,
    line: u64,
    header: Option<ExportHeader>,
    query: ExportQuery,
    checkpoint: Option<Checkpoint>,
    run: Option<OpenRun>,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    entries: u64,
    runs: u64,
    // Bytes of an unfinished line fed through `push_bytes`.
    partial: Vec<u8>,
    // The entries are a selection named elsewhere (a four-eyes report): gaps say nothing.
    selection: bool,
    buf: Vec<u8>,
    completed: Vec<(NodeId, Hash)>,
}

impl ExportVerifier {
    /// `trusted_checkpoint`: a signed checkpoint held elsewhere; when given, the export's
    /// checkpoint must be the same tree or an older one is reported as truncation/rollback.
    pub fn new(verifier: NoteVerifier, trusted_checkpoint: Option<String>) -> ExportVerifier {
        ExportVerifier {
            keys: KeyChain::new(verifier),
            pending: None,
            trusted: trusted_checkpoint,
            stage: Stage::Header,
            line: 0,
            header: None,
            query: ExportQuery::default(),
            checkpoint: None,
            run: None,
            first_seq: None,
            last_seq: None,
            entries: 0,
            runs: 0,
            partial: Vec::new(),
            selection: false,
            buf: Vec::with_capacity(1024),
            completed: Vec::new(),
        }
    }

    /// A verifier for the entry lines and trailer of a bundle whose header is another
    /// (the four-eyes report's), already read as `lines` lines: entries of `node_id`, each run
    /// tied to the signed `checkpoint` (checked here, and against `trusted_checkpoint` when
    /// given). The entries are a selection: gaps between runs are no omission.
    pub fn for_selection(
        verifier: NoteVerifier,
        node_id: &str,
        checkpoint: &str,
        trusted_checkpoint: Option<String>,
        lines: u64,
    ) -> Result<ExportVerifier, ExportError> {
        let checkpoint_value = Checkpoint::open(checkpoint, &verifier).map_err(|e| {
            violation(
                lines,
                Violation::BadCheckpointSignature {
                    reason: signature_problem(checkpoint, &verifier, &e),
                },
            )
        })?;
        if let Some(trusted) = &trusted_checkpoint {
            check_trusted(
                trusted,
                &KeyChain::new(verifier.clone()),
                &checkpoint_value,
                None,
                lines,
            )
            .map_err(|e| match e {
                AuthError::Waiting(e) | AuthError::Failed(e) => e,
            })?;
        }
        let mut v = ExportVerifier::new(verifier, trusted_checkpoint);
        v.stage = Stage::Entries;
        v.line = lines;
        v.selection = true;
        v.header = Some(ExportHeader {
            node_id: node_id.to_owned(),
            checkpoint: checkpoint.to_owned(),
            query: "{}".to_owned(),
            exported_at: 0,
        });
        v.checkpoint = Some(checkpoint_value);
        Ok(v)
    }

    /// Whether the entries must be every entry of their range (an unfiltered export).
    fn proves_completeness(&self) -> bool {
        !self.selection && self.query.filter.is_unfiltered()
    }

    /// The header, once line 1 has been read and checked.
    pub fn header(&self) -> Option<&ExportHeader> {
        self.header.as_ref()
    }

    /// The export's checkpoint, once its signature has verified.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// Feeds raw bytes of the file, in any chunking; lines are cut at `\n`. Call
    /// [`Self::finish`] at the end of the file: a final line without `\n` is a truncation.
    pub fn push_bytes(&mut self, mut bytes: &[u8]) -> Result<(), ExportError> {
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            let (head, rest) = bytes.split_at(pos);
            bytes = &rest[1..];
            if self.partial.is_empty() {
                self.push_line(head)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.push_line(&line)?;
            }
        }
        if self.partial.len() + bytes.len() > MAX_LINE_BYTES {
            return Err(self.too_long(self.line + 1));
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// Feeds one line, without its trailing newline.
    pub fn push_line(&mut self, line: &[u8]) -> Result<(), ExportError> {
        self.line += 1;
        let n = self.line;
        if line.len() > MAX_LINE_BYTES {
            return Err(self.too_long(n));
        }
        match self.stage {
            Stage::Header => {
                self.read_header(line)?;
                self.stage = Stage::Entries;
                Ok(())
            }
            Stage::Entries => {
                let value = parse_json(line, n)?;
                if value.as_object().is_some_and(|o| o.contains_key("end")) {
                    self.read_trailer(&value, line)?;
                    self.stage = Stage::Done;
                    Ok(())
                } else {
                    self.read_entry(value, line)
                }
            }
            Stage::Done => Err(malformed(n, "content after the trailer line")),
        }
    }

    pub fn finish(self) -> Result<ExportReport, ExportError> {
        if !self.partial.is_empty() {
            return Err(ExportError::Truncated(format!(
                "line {} has no final newline: the file was cut short",
                self.line + 1
            )));
        }
        match self.stage {
            Stage::Header => Err(ExportError::Truncated("the file is empty".to_owned())),
            Stage::Entries => Err(ExportError::Truncated(format!(
                "no trailer line after line {} ({} entries read)",
                self.line, self.entries
            ))),
            Stage::Done => {
                let checkpoint_size = self.checkpoint.as_ref().map_or(0, |c| c.size);
                let completeness = match (self.proves_completeness(), self.first_seq) {
                    (false, _) => Completeness::NotProvable,
                    (true, Some(first)) => Completeness::Range {
                        first,
                        last: self.last_seq.unwrap_or(first),
                        cut_at_limit: self.query.limit.is_some_and(|l| self.entries >= l),
                    },
                    (true, None) => Completeness::EmptyLog,
                };
                Ok(ExportReport {
                    entries: self.entries,
                    runs: self.runs,
                    checkpoint_size,
                    first_seq: self.first_seq,
                    last_seq: self.last_seq,
                    query: self.query,
                    completeness,
                    rotated_to: self
                        .keys
                        .trusted()
                        .iter()
                        .skip(1)
                        .map(NoteVerifier::to_vkey_string)
                        .collect(),
                })
            }
        }
    }

    fn too_long(&self, line: u64) -> ExportError {
        malformed(
            line,
            format!("line longer than {MAX_LINE_BYTES} bytes; not an export line"),
        )
    }

    fn read_header(&mut self, line: &[u8]) -> Result<(), ExportError> {
        let n = self.line;
        let value = parse_json(line, n)?;
        let obj = value
            .as_object()
            .ok_or_else(|| malformed(n, "the header is not a JSON object"))?;
        let format = obj.get("format").and_then(Value::as_str);
        if format != Some(FORMAT) {
            return Err(malformed(
                n,
                format!(
                    "not an Evident export header: \"format\" must be {FORMAT:?}, got {}",
                    obj.get("format")
                        .map_or("nothing".to_owned(), Value::to_string)
                ),
            ));
        }
        only_keys(
            obj,
            &[
                "format",
                "node_id",
                "exported_at",
                "query",
                "checkpoint",
                "consistency",
                "signature",
            ],
            "header",
            n,
        )?;
        let node_id = str_member(obj, "node_id", "header", n)?;
        crate::event::validate_node_id(node_id).map_err(|e| malformed(n, e.to_string()))?;
        let exported_at = parse_time(str_member(obj, "exported_at", "header", n)?, n)?;
        let (query, query_members) = match obj.get("query") {
            Some(q @ Value::Object(members)) => (crate::canonical::canonical_json(q), members),
            _ => return Err(malformed(n, "header.query: expected a JSON object")),
        };
        let checkpoint_text = str_member(obj, "checkpoint", "header", n)?;
        let consistency = match obj.get("consistency") {
            None => None,
            Some(c) => Some(parse_consistency(c, n)?),
        };
        let header = ExportHeader {
            node_id: node_id.to_owned(),
            checkpoint: checkpoint_text.to_owned(),
            query,
            exported_at,
        };
        let signature = str_member(obj, "signature", "header", n)?;
        let unsigned = unsigned_header_line(&header, consistency.as_ref());
        require_canonical(&with_signature(&unsigned, signature), line, n)?;

        let pending = PendingHeader {
            checkpoint: header.checkpoint.clone(),
            signature: signature.to_owned(),
            statement: header_statement(&unsigned),
            consistency: consistency.clone(),
            // Replaced below when the header waits for a key.
            waiting: ExportError::Truncated(String::new()),
        };
        let mut waiting = None;
        let checkpoint = match self.authenticate_header(&pending, n) {
            Ok(checkpoint) => checkpoint,
            Err(AuthError::Failed(e)) => return Err(e),
            Err(AuthError::Waiting(e)) => {
                // Signed by a key of this log the verifier does not know yet: the entries may
                // hold the rotation to it. Read on with the body as it stands; nothing is
                // accepted unless a trusted key's signature is found by the trailer.
                waiting = Some(e);
                unverified_checkpoint(&header.checkpoint, n)?
            }
        };
        // Read only once the signature is known to be the node's (or will be, before any
        // verdict): what it states is the node's word.
        let parsed_query = ExportQuery::parse(query_members, n)?;
        if let Some(c) = &consistency {
            if c.from_size == 0 || c.from_size >= checkpoint.size {
                return Err(malformed(
                    n,
                    format!(
                        "header.consistency.from_size {} must lie between 1 and the \
                         checkpoint size {} (exclusive)",
                        c.from_size, checkpoint.size
                    ),
                ));
            }
            // The proof must connect its own endpoints whether or not a trusted checkpoint
            // is given: one that does not is no proof of anything.
            crate::merkle::verify_consistency(
                c.from_size,
                &c.from_root,
                checkpoint.size,
                &checkpoint.root,
                &c.proof,
            )
            .map_err(|_| {
                violation(
                    n,
                    Violation::BadConsistencyProof {
                        from_size: c.from_size,
                        size: checkpoint.size,
                    },
                )
            })?;
        }
        if waiting.is_none() {
            if let Some(trusted) = &self.trusted {
                match check_trusted(trusted, &self.keys, &checkpoint, consistency.as_ref(), n) {
                    Ok(()) => {}
                    Err(AuthError::Failed(e)) => return Err(e),
                    Err(AuthError::Waiting(e)) => waiting = Some(e),
                }
            }
        }
        self.pending = waiting.map(|waiting| PendingHeader { waiting, ..pending });
        self.header = Some(header);
        self.query = parsed_query;
        self.checkpoint = Some(checkpoint);
        Ok(())
    }

    fn read_entry(&mut self, value: Value, line: &[u8]) -> Result<(), ExportError> {
        let n = self.line;
        let entry = parse_entry(value, n)?;
        require_canonical(&entry_line(&entry), line, n)?;
        let (size, root) = match &self.checkpoint {
            Some(c) => (c.size, c.root),
            None => return Err(malformed(n, "entry before the header")),
        };
        let expected_node = self.header.as_ref().map_or("", |h| h.node_id.as_str());
        let seq = entry.entry.event.seq;

        match (&self.run, &entry.run_start) {
            (Some(run), Some(_)) => {
                return Err(malformed(
                    n,
                    format!(
                        "entry {seq} starts a run, but the run that started at entry {} has \
                         no run_end",
                        run.start
                    ),
                ));
            }
            (Some(_), None) => {
                let expected = self.last_seq.map_or(0, |s| s.saturating_add(1));
                if seq != expected {
                    return Err(violation(n, sequence_violation(expected, seq)));
                }
            }
            (None, None) => {
                return Err(malformed(
                    n,
                    format!("entry {seq} is outside any run: expected run_start"),
                ));
            }
            (None, Some(_)) => {
                if let Some(last) = self.last_seq {
                    if seq <= last {
                        return Err(violation(n, sequence_violation(last + 1, seq)));
                    }
                    if seq == last + 1 {
                        return Err(malformed(
                            n,
                            format!(
                                "entry {seq} starts a new run right after entry {last}; \
                                 consecutive entries form one run"
                            ),
                        ));
                    }
                    if self.proves_completeness() {
                        return Err(violation(n, Violation::OmittedEntry { seq: last + 1 }));
                    }
                }
            }
        }
        if seq >= size {
            return Err(malformed(
                n,
                format!(
                    "entry {seq} lies beyond the checkpoint (size {size}); an export holds \
                     only entries its checkpoint covers"
                ),
            ));
        }
        if entry.entry.event.node_id != expected_node {
            return Err(violation(
                n,
                Violation::WrongNode {
                    seq,
                    expected: expected_node.to_owned(),
                    found: entry.entry.event.node_id.clone(),
                },
            ));
        }
        if let Some(param) = self.query.filter.first_mismatch(&entry.entry.event) {
            return Err(violation(
                n,
                Violation::OutsideFilter {
                    seq,
                    param: param.to_owned(),
                },
            ));
        }
        // A rotation event is checked before its hash, so a tampered one is named for what
        // it is: a rotation the old key did not sign (docs/FORMAT.md §18).
        let learned = self.keys.follow(&entry.entry.event).map_err(|e| {
            violation(
                n,
                Violation::BadKeyRotation {
                    seq,
                    reason: e.to_string(),
                },
            )
        })?;
        if let Err(e) = crate::rotation::SealRotation::from_event(&entry.entry.event) {
            return Err(violation(
                n,
                Violation::BadSealRotation {
                    seq,
                    reason: e.to_string(),
                },
            ));
        }
        if let Some(start) = entry.run_start {
            if seq == 0 && start.prev_hash != GENESIS_PREV_HASH {
                return Err(violation(n, Violation::ChainBroken { seq }));
            }
            let tree = CompactRange::from_parts(seq, start.left)
                .map_err(|e| malformed(n, format!("run_start.left: {e}")))?;
            self.run = Some(OpenRun {
                start: seq,
                prev_hash: start.prev_hash,
                tree,
            });
            self.runs += 1;
        }
        let Some(run) = self.run.as_mut() else {
            return Err(malformed(n, "entry outside any run"));
        };
        let hash = crate::chain::recompute_hash(&run.prev_hash, &entry.entry.event, &mut self.buf);
        if hash != entry.entry.hash {
            return Err(violation(n, Violation::ChainBroken { seq }));
        }
        self.completed.clear();
        run.tree
            .append_leaf(entry.entry.leaf_hash(), &mut self.completed);
        run.prev_hash = hash;
        self.entries += 1;
        self.last_seq = Some(seq);
        if self.first_seq.is_none() {
            self.first_seq = Some(seq);
        }

        if let Some(end) = entry.run_end {
            let ids = crate::merkle::subtree_ids(seq + 1, size);
            if ids.len() != end.right.len() {
                return Err(malformed(
                    n,
                    format!(
                        "run_end.right has {} hashes; the subtrees covering entries {}..{size} \
                         are {}",
                        end.right.len(),
                        seq + 1,
                        ids.len()
                    ),
                ));
            }
            for (id, h) in ids.iter().zip(end.right) {
                run.tree
                    .append_subtree(id.level, h)
                    .map_err(|e| malformed(n, format!("run_end.right: {e}")))?;
            }
            if run.tree.size() != size || run.tree.root() != root {
                return Err(violation(n, Violation::RootMismatch { size }));
            }
            self.run = None;
        }
        if learned.is_some() {
            self.settle()?;
        }
        Ok(())
    }

    /// Checks a waiting header again with the keys trusted now.
    fn settle(&mut self) -> Result<(), ExportError> {
        let Some(pending) = &self.pending else {
            return Ok(());
        };
        let checkpoint = match self.authenticate_header(pending, 1) {
            Ok(checkpoint) => checkpoint,
            Err(AuthError::Failed(e)) => return Err(e),
            Err(AuthError::Waiting(_)) => return Ok(()),
        };
        if let Some(trusted) = &self.trusted {
            match check_trusted(
                trusted,
                &self.keys,
                &checkpoint,
                pending.consistency.as_ref(),
                1,
            ) {
                Ok(()) => {}
                Err(AuthError::Failed(e)) => return Err(e),
                Err(AuthError::Waiting(_)) => return Ok(()),
            }
        }
        self.pending = None;
        Ok(())
    }

    /// Opens the header's checkpoint and signature with the trusted keys.
    fn authenticate_header(&self, p: &PendingHeader, n: u64) -> Result<Checkpoint, AuthError> {
        let keys = self.keys.trusted();
        let pinned = self.keys.pinned();
        let checkpoint = Checkpoint::open_any(&p.checkpoint, keys).map_err(|e| {
            let error = violation(
                n,
                Violation::BadCheckpointSignature {
                    reason: signature_problem(&p.checkpoint, pinned, &e),
                },
            );
            classify(&p.checkpoint, &self.keys, &e, error)
        })?;
        // The header's own signature: by the same keys, over exactly these header bytes.
        let opened = crate::note::open(&p.signature, keys).map_err(|e| {
            let error = violation(
                n,
                Violation::BadHeaderSignature {
                    reason: signature_problem(&p.signature, pinned, &e),
                },
            );
            classify(&p.signature, &self.keys, &e, error)
        })?;
        if opened.text != p.statement {
            return Err(AuthError::Failed(violation(
                n,
                Violation::BadHeaderSignature {
                    reason: "the signature is valid but signs a different header".to_owned(),
                },
            )));
        }
        Ok(checkpoint)
    }

    fn read_trailer(&mut self, value: &Value, line: &[u8]) -> Result<(), ExportError> {
        let n = self.line;
        if let Some(pending) = self.pending.take() {
            // No rotation in the export led from the pinned key to the key that signed.
            return Err(pending.waiting);
        }
        if let Some(run) = &self.run {
            return Err(malformed(
                n,
                format!(
                    "the run that started at entry {} has no run_end before the trailer",
                    run.start
                ),
            ));
        }
        let obj = value
            .as_object()
            .ok_or_else(|| malformed(n, "the trailer is not a JSON object"))?;
        only_keys(obj, &["end"], "trailer", n)?;
        let end = obj
            .get("end")
            .and_then(Value::as_object)
            .ok_or_else(|| malformed(n, "trailer.end: expected an object"))?;
        only_keys(end, &["entries", "runs"], "trailer.end", n)?;
        let entries = u64_member(end, "entries", "trailer.end", n)?;
        let runs = u64_member(end, "runs", "trailer.end", n)?;
        require_canonical(&trailer_line(entries, runs), line, n)?;
        if (entries, runs) != (self.entries, self.runs) {
            return Err(malformed(
                n,
                format!(
                    "the trailer counts {entries} entries in {runs} runs, but the export holds \
                     {} entries in {} runs",
                    self.entries, self.runs
                ),
            ));
        }
        // An export without a filter holds the log from its first entry to the checkpoint's
        // last, unless it was cut at its limit.
        let size = self.checkpoint.as_ref().map_or(0, |c| c.size);
        let next = self.last_seq.map_or(0, |l| l + 1);
        let cut = self.query.limit.is_some_and(|l| self.entries >= l);
        if self.proves_completeness() && !cut && next < size {
            let seq = if self.last_seq.is_some() {
                next
            } else {
                size - 1
            };
            return Err(violation(n, Violation::OmittedEntry { seq }));
        }
        Ok(())
    }
}

/// Why a note did not open with `verifier`: for a note no trusted key signed, which key did
/// sign it and which was expected (`name+keyid`, as in a verifier key string).
pub(crate) fn signature_problem(
    note: &str,
    verifier: &NoteVerifier,
    e: &(dyn std::error::Error + 'static),
) -> String {
    let expected = format!("{}+{:08x}", verifier.name(), verifier.key_id());
    let unverified = matches!(
        e.downcast_ref::<NoteError>(),
        Some(NoteError::UnverifiedNote)
    ) || matches!(
        e.downcast_ref::<crate::checkpoint::CheckpointError>(),
        Some(crate::checkpoint::CheckpointError::Note(
            NoteError::UnverifiedNote
        ))
    );
    match (unverified, crate::note::signers(note)) {
        (true, Ok(signers)) if !signers.is_empty() => {
            let by: Vec<String> = signers
                .iter()
                .map(|(name, id)| format!("{name}+{id:08x}"))
                .collect();
            format!(
                "signed by key {}, not by the expected key {expected}",
                by.join(", ")
            )
        }
        _ => format!("{e} (expected key {expected})"),
    }
}

/// Relates the export's checkpoint to one held elsewhere.
fn check_trusted(
    trusted: &str,
    keys: &KeyChain,
    checkpoint: &Checkpoint,
    consistency: Option<&HeaderConsistency>,
    n: u64,
) -> Result<(), AuthError> {
    let opened = Checkpoint::open_any(trusted, keys.trusted()).map_err(|e| {
        let error = violation(
            n,
            Violation::BadCheckpointSignature {
                reason: format!("trusted checkpoint: {e}"),
            },
        );
        classify(trusted, keys, &e, error)
    })?;
    relate_trusted(&opened, checkpoint, consistency, n).map_err(AuthError::Failed)
}

/// Whether a note that did not open is signed by a key of the pinned key's name (the log's
/// origin) that the chain does not trust yet: a key a rotation in the export may lead to.
fn classify(
    note: &str,
    keys: &KeyChain,
    e: &(dyn std::error::Error + 'static),
    error: ExportError,
) -> AuthError {
    use crate::checkpoint::CheckpointError;
    let unverified = matches!(
        e.downcast_ref::<CheckpointError>(),
        Some(CheckpointError::Note(NoteError::UnverifiedNote))
    ) || matches!(
        e.downcast_ref::<NoteError>(),
        Some(NoteError::UnverifiedNote)
    );
    let name = keys.pinned().name();
    let by_unknown_key_of_log = crate::note::signers(note).is_ok_and(|signers| {
        signers
            .iter()
            .any(|(n, id)| n == name && !keys.trusted().iter().any(|k| k.key_id() == *id))
    });
    if unverified && by_unknown_key_of_log {
        AuthError::Waiting(error)
    } else {
        AuthError::Failed(error)
    }
}

/// Parses the body of a checkpoint note without verifying any signature (for a header that
/// waits for a key, [`PendingHeader`]); its origin is checked when it opens.
fn unverified_checkpoint(note: &str, n: u64) -> Result<Checkpoint, ExportError> {
    let bad = |reason: String| violation(n, Violation::BadCheckpointSignature { reason });
    let (text, _) = crate::note::split_signatures(note).map_err(|e| bad(e.to_string()))?;
    Checkpoint::parse(text).map_err(|e| bad(e.to_string()))
}

/// Relates the export's checkpoint to an opened one held elsewhere.
fn relate_trusted(
    trusted: &Checkpoint,
    checkpoint: &Checkpoint,
    consistency: Option<&HeaderConsistency>,
    n: u64,
) -> Result<(), ExportError> {
    if trusted.size > checkpoint.size {
        return Err(violation(
            n,
            Violation::Truncated {
                size: checkpoint.size,
                checkpoint_size: trusted.size,
            },
        ));
    }
    if trusted.size == checkpoint.size {
        if trusted.root != checkpoint.root {
            return Err(violation(n, Violation::RootMismatch { size: trusted.size }));
        }
        return Ok(());
    }
    if trusted.size == 0 {
        // Every tree extends the empty one.
        if trusted.root != crate::merkle::empty_root() {
            return Err(violation(n, Violation::RootMismatch { size: 0 }));
        }
        return Ok(());
    }
    let Some(c) = consistency else {
        return Err(ExportError::Unprovable {
            line: n,
            problem: format!(
                "the trusted checkpoint has size {}, the export's checkpoint size {}, and the \
                 header carries no consistency proof between them; export again with a \
                 consistency proof from size {}, or fetch one and check it separately",
                trusted.size, checkpoint.size, trusted.size
            ),
        });
    };
    if c.from_size != trusted.size {
        return Err(ExportError::Unprovable {
            line: n,
            problem: format!(
                "the header's consistency proof starts at size {}, but the trusted checkpoint \
                 has size {}",
                c.from_size, trusted.size
            ),
        });
    }
    crate::merkle::verify_consistency(
        trusted.size,
        &trusted.root,
        checkpoint.size,
        &checkpoint.root,
        &c.proof,
    )
    .map_err(|_| violation(n, Violation::RootMismatch { size: trusted.size }))
}

fn sequence_violation(expected: u64, found: u64) -> Violation {
    if found > expected {
        Violation::SequenceGap { expected, found }
    } else if expected.checked_sub(1) == Some(found) {
        Violation::DuplicateSequence { seq: found }
    } else {
        Violation::OutOfOrder { expected, found }
    }
}

pub(crate) fn malformed(line: u64, problem: impl Into<String>) -> ExportError {
    ExportError::Malformed {
        line,
        problem: problem.into(),
    }
}

pub(crate) fn violation(line: u64, violation: Violation) -> ExportError {
    ExportError::Violation { line, violation }
}

/// Parses entry line `n` (without its newline) into its entry and run markers, without
/// checking it: [`ExportVerifier::push_line`] does that.
pub fn parse_entry_line(line: &[u8], n: u64) -> Result<ExportEntry, ExportError> {
    parse_entry(parse_json(line, n)?, n)
}

pub(crate) fn parse_json(line: &[u8], n: u64) -> Result<Value, ExportError> {
    serde_json::from_slice(line).map_err(|e| malformed(n, format!("not valid JSON: {e}")))
}

/// The line must be byte for byte what the writer makes of its parsed content.
pub(crate) fn require_canonical(expected: &str, line: &[u8], n: u64) -> Result<(), ExportError> {
    let expected = expected.strip_suffix('\n').unwrap_or(expected).as_bytes();
    if expected == line {
        return Ok(());
    }
    let at = expected
        .iter()
        .zip(line)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(line.len()));
    Err(malformed(
        n,
        format!(
            "not in canonical form (first difference at byte {})",
            at + 1
        ),
    ))
}

pub(crate) fn only_keys(
    obj: &Map<String, Value>,
    allowed: &[&str],
    what: &str,
    n: u64,
) -> Result<(), ExportError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(malformed(
            n,
            format!(
                "{what}: unknown member {k:?}; allowed members are {}",
                allowed.join(", ")
            ),
        )),
    }
}

fn member<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    what: &str,
    n: u64,
) -> Result<&'a Value, ExportError> {
    obj.get(key)
        .ok_or_else(|| malformed(n, format!("{what}.{key}: required member is missing")))
}

pub(crate) fn str_member<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    what: &str,
    n: u64,
) -> Result<&'a str, ExportError> {
    member(obj, key, what, n)?
        .as_str()
        .ok_or_else(|| malformed(n, format!("{what}.{key}: expected a string")))
}

fn u64_member(obj: &Map<String, Value>, key: &str, what: &str, n: u64) -> Result<u64, ExportError> {
    member(obj, key, what, n)?
        .as_u64()
        .ok_or_else(|| malformed(n, format!("{what}.{key}: expected a non-negative integer")))
}

fn hash_value(value: &Value, field: &str, n: u64) -> Result<Hash, ExportError> {
    value
        .as_str()
        .and_then(|s| Hash::from_hex(s).ok())
        .ok_or_else(|| malformed(n, format!("{field}: expected 64 lowercase hex digits")))
}

fn hash_array(value: &Value, field: &str, n: u64) -> Result<Vec<Hash>, ExportError> {
    let items = value
        .as_array()
        .ok_or_else(|| malformed(n, format!("{field}: expected an array of hashes")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| hash_value(v, &format!("{field}[{i}]"), n))
        .collect()
}

pub(crate) fn parse_time(text: &str, n: u64) -> Result<Millis, ExportError> {
    crate::event::parse_rfc3339(text)
        .ok()
        .filter(|ms| crate::event::format_rfc3339_millis(*ms) == text)
        .ok_or_else(|| {
            malformed(
                n,
                "header.exported_at: expected a timestamp of the form YYYY-MM-DDTHH:MM:SS.mmmZ",
            )
        })
}

fn parse_consistency(value: &Value, n: u64) -> Result<HeaderConsistency, ExportError> {
    let what = "header.consistency";
    let obj = value
        .as_object()
        .ok_or_else(|| malformed(n, format!("{what}: expected an object")))?;
    only_keys(obj, &["from_size", "from_root", "proof"], what, n)?;
    Ok(HeaderConsistency {
        from_size: u64_member(obj, "from_size", what, n)?,
        from_root: hash_value(
            member(obj, "from_root", what, n)?,
            "header.consistency.from_root",
            n,
        )?,
        proof: hash_array(
            member(obj, "proof", what, n)?,
            "header.consistency.proof",
            n,
        )?,
    })
}

fn parse_entry(value: Value, n: u64) -> Result<ExportEntry, ExportError> {
    let Value::Object(mut obj) = value else {
        return Err(malformed(n, "an entry line must be a JSON object"));
    };
    let hash = obj.remove("hash");
    let seal = obj.remove("seal");
    let run_start = obj.remove("run_start");
    let run_end = obj.remove("run_end");
    let event = Event::from_json(&Value::Object(obj)).map_err(|e| malformed(n, e.to_string()))?;
    let hash = hash_value(
        &hash.ok_or_else(|| malformed(n, "hash: required member is missing"))?,
        "hash",
        n,
    )?;
    let seal = hash_value(
        &seal.ok_or_else(|| malformed(n, "seal: required member is missing"))?,
        "seal",
        n,
    )?;
    let run_start = match run_start {
        None => None,
        Some(v) => {
            let what = "run_start";
            let obj = v
                .as_object()
                .ok_or_else(|| malformed(n, "run_start: expected an object"))?;
            only_keys(obj, &["prev_hash", "left"], what, n)?;
            Some(RunStart {
                prev_hash: hash_value(
                    member(obj, "prev_hash", what, n)?,
                    "run_start.prev_hash",
                    n,
                )?,
                left: hash_array(member(obj, "left", what, n)?, "run_start.left", n)?,
            })
        }
    };
    let run_end = match run_end {
        None => None,
        Some(v) => {
            let what = "run_end";
            let obj = v
                .as_object()
                .ok_or_else(|| malformed(n, "run_end: expected an object"))?;
            only_keys(obj, &["right"], what, n)?;
            Some(RunEnd {
                right: hash_array(member(obj, "right", what, n)?, "run_end.right", n)?,
            })
        }
    };
    Ok(ExportEntry {
        entry: SealedEntry { event, hash, seal },
        run_start,
        run_end,
    })
}
