//! Writers that get events out of the store, synchronous and streaming: the self-verifying
//! NDJSON bundle (format owned by `evident_core::export`), CSV (RFC 4180, spreadsheet formula
//! injection neutralized), and JSON pages with their event form. The HTTP layer runs them on a
//! blocking thread and streams their output; they hold at most one chunk of rows in memory.
//!
//! A bundle of a damaged log (an entry deleted from the middle of the store) is still written
//! when the damage can be shown in it: the hashes that would close a run before the missing
//! entry and open the next one cannot be computed without it, so the run goes on across the
//! hole, and the bundle's own verification stops there with `sequence_gap` naming the first
//! missing entry. Where the hole cannot be placed exactly (a filtered export whose entries skip
//! past it, or a hole at the very start or end), the export fails with
//! [`ExportWriteError::Damaged`] naming the missing entry instead.

use crate::formats::{self, SiemFormat};
use crate::scan::scan_chunked_ahead;
use evident_core::chain::GENESIS_PREV_HASH;
use evident_core::event::{Millis, format_rfc3339_millis};
use evident_core::export::{
    ExportEntry, ExportHeader, HeaderConsistency, RunEnd, RunStart, entry_line, run_nodes,
    signed_header_line_all, trailer_line,
};
use evident_core::merkle;
use evident_core::{Hash, NoteSigner, SealedEntry};
use evident_store::{Filter, Order, Store, StoreError, StoredCheckpoint};
use serde_json::Value;
use std::io::Write;
use std::ops::ControlFlow;

/// The CSV header row, in order: the SPEC's fifteen columns, then `appended_by` (who appended
/// the entry; empty for an entry of encoding version 1) and `occurred_at` (when the client
/// says it happened, RFC 3339; empty when it did not say), added at the end so that readers
/// of the first columns by position keep working.
pub const CSV_COLUMNS: [&str; 17] = [
    "timestamp",
    "node_id",
    "tenant",
    "actor",
    "actor_kind",
    "action",
    "target",
    "ip_address",
    "user_agent",
    "outcome",
    "severity",
    "context",
    "seq",
    "hash",
    "seal",
    "appended_by",
    "occurred_at",
];

/// Errors while writing an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportWriteError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("consistency proof asked from size {from}, beyond the checkpoint's size {size}")]
    ConsistencyBeyondCheckpoint { from: u64, size: u64 },
    #[error("stored Merkle nodes do not match what the export needs: {0}")]
    MissingNodes(String),
    #[error("signing the export header: {0}")]
    Sign(#[from] evident_core::note::NoteError),
    /// The stored log is damaged where this export needs it (an entry is missing, `seq`
    /// when it could be located): the bundle cannot be tied to its checkpoint there.
    #[error("the stored log is damaged: {problem}")]
    Damaged { seq: Option<u64>, problem: String },
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportSummary {
    pub entries: u64,
    pub runs: u64,
}

/// What a bundle covers.
#[derive(Debug, Clone)]
pub struct BundleRequest {
    pub node_id: String,
    /// The checkpoint every run is tied to; only entries below its size are exported.
    pub checkpoint: StoredCheckpoint,
    pub filter: Filter,
    /// The query, as a JSON object (written canonically into the signed header).
    pub query: Value,
    pub exported_at: Millis,
    /// At most this many entries.
    pub limit: Option<u64>,
    /// Put in the header a consistency proof from this older tree size to the checkpoint's,
    /// for a verifier that trusts an older checkpoint (omitted when 0 or equal to the size).
    pub consistency_from: Option<u64>,
    /// The node's checkpoint keys that sign now (both during a signing-key rotation's
    /// transition), which sign the header.
    pub signers: Vec<NoteSigner>,
}

/// Writes the self-verifying NDJSON bundle: header, entries (ascending) with run markers, and
/// trailer, one line each.
pub fn write_bundle(
    store: &dyn Store,
    request: &BundleRequest,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportWriteError> {
    let size = request.checkpoint.size;
    let header = ExportHeader {
        node_id: request.node_id.clone(),
        checkpoint: request.checkpoint.signed_note.clone(),
        query: evident_core::canonical::canonical_json(&request.query),
        exported_at: request.exported_at,
    };
    let consistency = match request.consistency_from {
        Some(from) if from > size => {
            return Err(ExportWriteError::ConsistencyBeyondCheckpoint { from, size });
        }
        Some(from) if from > 0 && from < size => {
            let plan = merkle::consistency_plan(from, size)
                .map_err(|e| ExportWriteError::MissingNodes(e.to_string()))?;
            let hashes = read_exact_nodes(store, plan.nodes())?;
            let proof = plan
                .assemble(&hashes)
                .map_err(|e| ExportWriteError::MissingNodes(e.to_string()))?;
            let from_root = merkle::CompactRange::from_parts(
                from,
                read_exact_nodes(store, &merkle::subtree_ids(0, from))?,
            )
            .map_err(|e| ExportWriteError::MissingNodes(e.to_string()))?
            .root();
            Some(HeaderConsistency {
                from_size: from,
                from_root,
                proof,
            })
        }
        _ => None,
    };
    write_line(
        out,
        &signed_header_line_all(&header, consistency.as_ref(), &request.signers)?,
    )?;

    let mut filter = request.filter.clone();
    filter.to_seq = Some(filter.to_seq.map_or(size, |t| t.min(size)));
    let mut runs = RunWriter::new(store, size);
    scan_chunked_ahead(
        store,
        &filter,
        Order::Ascending,
        request.limit,
        &mut |entry| -> Result<ControlFlow<()>, ExportWriteError> {
            runs.push(entry, out)?;
            Ok(ControlFlow::Continue(()))
        },
    )?;
    runs.finish(out)
}

/// Writes the entry lines of a bundle, each run with the markers that tie it to the
/// checkpoint of `size`, then the trailer: for the export and for other bundles built on it
/// (the four-eyes report). Entries come in ascending order, below `size`.
pub struct RunWriter<'a> {
    store: &'a dyn Store,
    size: u64,
    summary: ExportSummary,
    // The entry read but not yet written: whether it ends its run depends on the next one.
    pending: Option<(SealedEntry, Option<RunStart>)>,
}

impl<'a> RunWriter<'a> {
    pub fn new(store: &'a dyn Store, size: u64) -> RunWriter<'a> {
        RunWriter {
            store,
            size,
            summary: ExportSummary::default(),
            pending: None,
        }
    }

    /// Takes the next entry (writing the one before it).
    pub fn push(
        &mut self,
        entry: SealedEntry,
        out: &mut dyn Write,
    ) -> Result<(), ExportWriteError> {
        let (store, size) = (self.store, self.size);
        let summary = &mut self.summary;
        let seq = entry.event.seq;
        let start = match self.pending.take() {
            None => {
                summary.runs += 1;
                Some(first_run_start(store, seq, size)?)
            }
            Some((p, p_start)) if p.event.seq.checked_add(1) == Some(seq) => {
                write_entry(out, p, p_start, None, summary)?;
                None
            }
            Some((p, p_start)) => match run_break(store, p.event.seq, seq, size)? {
                Some((end, start)) => {
                    write_entry(out, p, p_start, Some(end), summary)?;
                    summary.runs += 1;
                    Some(start)
                }
                // Across a hole: the run goes on, and its verification stops there.
                None => {
                    write_entry(out, p, p_start, None, summary)?;
                    None
                }
            },
        };
        self.pending = Some((entry, start));
        Ok(())
    }

    /// Writes the last entry, closing its run, and the trailer.
    pub fn finish(mut self, out: &mut dyn Write) -> Result<ExportSummary, ExportWriteError> {
        let (store, size) = (self.store, self.size);
        if let Some((p, start)) = self.pending.take() {
            let last = p.event.seq;
            let end = run_end(store, last + 1, size)
                .or_else(|e| Err(located(store, e, last + 1, size)?))?;
            write_entry(out, p, start, Some(end), &mut self.summary)?;
        }
        write_line(out, &trailer_line(self.summary.entries, self.summary.runs))?;
        out.flush()?;
        Ok(self.summary)
    }
}

fn write_entry(
    out: &mut dyn Write,
    entry: SealedEntry,
    run_start: Option<RunStart>,
    run_end: Option<RunEnd>,
    summary: &mut ExportSummary,
) -> Result<(), ExportWriteError> {
    let line = entry_line(&ExportEntry {
        entry,
        run_start,
        run_end,
    });
    write_line(out, &line)?;
    summary.entries += 1;
    Ok(())
}

fn write_line(out: &mut dyn Write, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes())?;
    if !line.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Whether `e` says the stored log lacks something an export needs (a row or a Merkle node
/// that is gone or undecodable), as opposed to a failure of the storage itself.
fn is_damage(e: &ExportWriteError) -> bool {
    matches!(
        e,
        ExportWriteError::Store(StoreError::NotFound(_) | StoreError::Corrupt { .. })
            | ExportWriteError::MissingNodes(_)
    )
}

/// The markers between exported entries `last` and `next` (`next > last + 1`): the end of the
/// run at `last` and the start of the run at `next`. `None` when entry `last + 1` is missing
/// from the store and the markers cannot be computed without it: the run then goes on across
/// the hole, and verifying the bundle stops at it with `sequence_gap` naming `last + 1`, the
/// first missing entry. A hole elsewhere that the markers need fails the export, naming it.
fn run_break(
    store: &dyn Store,
    last: u64,
    next: u64,
    size: u64,
) -> Result<Option<(RunEnd, RunStart)>, ExportWriteError> {
    // The failure, and the entries the failed marker needs.
    let (e, from, to) = match run_end(store, last + 1, size) {
        Ok(end) => match run_start(store, next, size) {
            Ok(start) => return Ok(Some((end, start))),
            Err(e) => (e, kept_start(store)?, next),
        },
        Err(e) => (e, last + 1, size),
    };
    if is_damage(&e) && !entry_stored(store, last + 1)? {
        tracing::warn!(
            missing = last + 1,
            next,
            "export: entries are missing from the stored log; the bundle goes on across the \
             gap, and its verification will name it"
        );
        return Ok(None);
    }
    Err(located(store, e, from, to)?)
}

/// [`run_start`] for the first exported entry, which has no run to go on from: a hole before
/// it fails the export, naming the missing entry.
fn first_run_start(store: &dyn Store, first: u64, size: u64) -> Result<RunStart, ExportWriteError> {
    match run_start(store, first, size) {
        Ok(start) => Ok(start),
        Err(e) => Err(located(store, e, kept_start(store)?, first)?),
    }
}

/// Where the kept log starts: 0, or the retention anchor of a pruned log.
fn kept_start(store: &dyn Store) -> Result<u64, ExportWriteError> {
    Ok(store.prune_anchor()?.map_or(0, |a| a.below_seq))
}

/// Whether entry `seq` is in the store.
fn entry_stored(store: &dyn Store, seq: u64) -> Result<bool, ExportWriteError> {
    let mut found = false;
    let filter = Filter {
        from_seq: Some(seq),
        to_seq: Some(seq.saturating_add(1)),
        ..Filter::default()
    };
    store.scan(&filter, Order::Ascending, None, Some(1), &mut |_| {
        found = true;
        ControlFlow::Break(())
    })?;
    Ok(found)
}

/// The first entry of `[from, to)` missing from the store, if any.
fn first_missing(store: &dyn Store, from: u64, to: u64) -> Result<Option<u64>, ExportWriteError> {
    let mut expected = from;
    let mut gap = None;
    let filter = Filter {
        from_seq: Some(from),
        to_seq: Some(to),
        ..Filter::default()
    };
    store.scan(&filter, Order::Ascending, None, None, &mut |entry| {
        if entry.event.seq != expected {
            gap = Some(expected);
            return ControlFlow::Break(());
        }
        expected += 1;
        ControlFlow::Continue(())
    })?;
    Ok(gap.or((expected < to).then_some(expected)))
}

/// `e`, a failure to compute the markers that need the entries of `[from, to)`: when it is
/// damage, [`ExportWriteError::Damaged`] naming the first entry of that range missing from
/// the store (which it scans), else `e` itself.
fn located(
    store: &dyn Store,
    e: ExportWriteError,
    from: u64,
    to: u64,
) -> Result<ExportWriteError, ExportWriteError> {
    if !is_damage(&e) {
        return Ok(e);
    }
    Ok(match first_missing(store, from, to)? {
        Some(seq) => ExportWriteError::Damaged {
            seq: Some(seq),
            problem: format!(
                "entry {seq} is missing (deleted or lost), and this export cannot be tied to \
                 its checkpoint across it: the hashes that would do so cannot be computed \
                 without it. An export without a filter holds every stored entry, and its \
                 verification names the gap; `evident verify --data-dir` and GET \
                 /api/v1/verify locate every problem"
            ),
        },
        None => ExportWriteError::Damaged {
            seq: None,
            problem: format!(
                "{e}; `evident verify --data-dir` and GET /api/v1/verify locate the damage"
            ),
        },
    })
}

/// Run marker for a run starting at `start`: the chain predecessor and the tree `[0, start)`.
fn run_start(store: &dyn Store, start: u64, size: u64) -> Result<RunStart, ExportWriteError> {
    let prev_hash = if start == 0 {
        GENESIS_PREV_HASH
    } else {
        entry_hash_at(store, start - 1)?
    };
    let (left_ids, _) = run_nodes(start, start, size);
    let left = read_exact_nodes(store, &left_ids)?;
    Ok(RunStart { prev_hash, left })
}

/// Run marker for a run ending before `end`: the subtrees covering `[end, size)`.
fn run_end(store: &dyn Store, end: u64, size: u64) -> Result<RunEnd, ExportWriteError> {
    let (_, right_ids) = run_nodes(end, end, size);
    let right = read_exact_nodes(store, &right_ids)?;
    Ok(RunEnd { right })
}

fn read_exact_nodes(
    store: &dyn Store,
    ids: &[merkle::NodeId],
) -> Result<Vec<Hash>, ExportWriteError> {
    let hashes = store.read_nodes(ids)?;
    if hashes.len() != ids.len() {
        return Err(ExportWriteError::MissingNodes(format!(
            "asked for {} nodes, got {}",
            ids.len(),
            hashes.len()
        )));
    }
    Ok(hashes)
}

fn entry_hash_at(store: &dyn Store, seq: u64) -> Result<Hash, ExportWriteError> {
    let mut found = None;
    let filter = Filter {
        from_seq: Some(seq),
        to_seq: Some(seq + 1),
        ..Filter::default()
    };
    store.scan(&filter, Order::Ascending, None, Some(1), &mut |entry| {
        found = Some(entry.hash);
        ControlFlow::Break(())
    })?;
    if let Some(hash) = found {
        return Ok(hash);
    }
    // The first kept entry of a pruned log: its predecessor is the retention anchor.
    match store.prune_anchor()? {
        Some(anchor) if anchor.below_seq == seq + 1 => Ok(anchor.hash),
        _ => Err(StoreError::NotFound(format!("entry {seq}")).into()),
    }
}

/// A CSV cell with spreadsheet formula injection neutralized: a cell that a spreadsheet would
/// run as a formula gets a leading apostrophe.
pub fn csv_cell(text: &str) -> std::borrow::Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}").into(),
        _ => text.into(),
    }
}

/// Bytes of CSV gathered before they are handed to the output: a few large writes rather
/// than fifteen small ones per row.
const CSV_FLUSH_BYTES: usize = 64 * 1024;

/// Appends one CSV field as the `csv` crate's default writer would (RFC 4180): quoted when it
/// holds a delimiter, a quote or a line break, with quotes doubled inside.
fn push_csv_field(buf: &mut Vec<u8>, apostrophe: bool, text: &[u8]) {
    let needs_quotes = text
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !needs_quotes {
        if apostrophe {
            buf.push(b'\'');
        }
        buf.extend_from_slice(text);
        return;
    }
    buf.push(b'"');
    if apostrophe {
        buf.push(b'\'');
    }
    let mut rest = text;
    while let Some(at) = rest.iter().position(|b| *b == b'"') {
        buf.extend_from_slice(&rest[..=at]);
        buf.push(b'"');
        rest = &rest[at + 1..];
    }
    buf.extend_from_slice(rest);
    buf.push(b'"');
}

/// Appends a user-supplied cell: [`csv_cell`] (formula neutralization), then quoting.
fn push_csv_cell(buf: &mut Vec<u8>, text: &str) {
    let apostrophe = matches!(
        text.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    );
    push_csv_field(buf, apostrophe, text.as_bytes());
}

/// Appends a hash as 64 lowercase hex digits (what [`Hash::to_hex`] gives).
fn push_hex(buf: &mut Vec<u8>, hash: &Hash) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in hash.as_bytes() {
        buf.push(DIGITS[usize::from(byte >> 4)]);
        buf.push(DIGITS[usize::from(byte & 0x0f)]);
    }
}

/// [`format_rfc3339_millis`] for a run of times, most of them in the same second as the one
/// before: the text up to the second's `.` is formatted once per second.
#[derive(Default)]
struct TimeText {
    /// The second (as its first millisecond) and its text without `mmmZ`.
    second: Option<(Millis, String)>,
}

impl TimeText {
    fn push(&mut self, buf: &mut Vec<u8>, ms: Millis) {
        let millis = ms.rem_euclid(1000);
        let start = ms - millis;
        let prefix = match &mut self.second {
            Some((second, prefix)) if *second == start => prefix,
            slot => {
                let mut text = format_rfc3339_millis(start);
                // "….000Z": keep through the '.'.
                text.truncate(text.len().saturating_sub(4));
                &mut slot.insert((start, text)).1
            }
        };
        buf.extend_from_slice(prefix.as_bytes());
        // 0..=999, three digits.
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            buf.push(b'0' + digit as u8);
        }
        buf.push(b'Z');
    }
}

/// Appends the CSV row of one entry, in [`CSV_COLUMNS`] order, with its CRLF. `scratch` is a
/// reusable buffer for the cells that must be formatted first.
fn push_csv_row(buf: &mut Vec<u8>, scratch: &mut String, time: &mut TimeText, entry: &SealedEntry) {
    use std::fmt::Write as _;
    let e = &entry.event;
    // A time needs no quoting.
    time.push(buf, e.recorded_at);
    buf.push(b',');
    push_csv_cell(buf, &e.node_id);
    buf.push(b',');
    push_csv_cell(buf, &e.tenant);
    buf.push(b',');
    push_csv_cell(buf, &e.actor.id);
    buf.push(b',');
    push_csv_field(buf, false, e.actor.kind.as_str().as_bytes());
    buf.push(b',');
    push_csv_cell(buf, &e.action);
    buf.push(b',');
    scratch.clear();
    scratch.push_str(&e.target.kind);
    scratch.push(':');
    scratch.push_str(&e.target.id);
    push_csv_cell(buf, scratch);
    buf.push(b',');
    if let Some(ip) = e.actor.ip {
        scratch.clear();
        // Writing to a String cannot fail.
        let _ = write!(scratch, "{ip}");
        push_csv_field(buf, false, scratch.as_bytes());
    }
    buf.push(b',');
    push_csv_cell(buf, e.actor.user_agent.as_deref().unwrap_or(""));
    buf.push(b',');
    push_csv_field(buf, false, e.outcome.as_str().as_bytes());
    buf.push(b',');
    push_csv_field(buf, false, e.severity.as_str().as_bytes());
    buf.push(b',');
    push_csv_cell(buf, e.context.as_str());
    buf.push(b',');
    scratch.clear();
    let _ = write!(scratch, "{}", e.seq);
    buf.extend_from_slice(scratch.as_bytes());
    buf.push(b',');
    push_hex(buf, &entry.hash);
    buf.push(b',');
    push_hex(buf, &entry.seal);
    buf.push(b',');
    push_csv_cell(buf, e.appended_by.as_deref().unwrap_or(""));
    buf.push(b',');
    if let Some(at) = e.occurred_at {
        push_csv_field(buf, false, format_rfc3339_millis(at).as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
}

/// Writes matching entries as CSV (RFC 4180: CRLF line ends, quoting as needed) with the
/// header row first. Rows are formatted straight into one buffer, handed to `out` every
/// [`CSV_FLUSH_BYTES`] or so.
pub fn write_csv(
    store: &dyn Store,
    filter: &Filter,
    order: Order,
    limit: Option<u64>,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportWriteError> {
    let mut buf: Vec<u8> = Vec::with_capacity(CSV_FLUSH_BYTES + 4096);
    buf.extend_from_slice(CSV_COLUMNS.join(",").as_bytes());
    buf.extend_from_slice(b"\r\n");
    let mut scratch = String::new();
    let mut time = TimeText::default();
    let mut summary = ExportSummary::default();
    let scanned = scan_chunked_ahead(store, filter, order, limit, &mut |entry| -> Result<
        ControlFlow<()>,
        ExportWriteError,
    > {
        push_csv_row(&mut buf, &mut scratch, &mut time, &entry);
        summary.entries += 1;
        if buf.len() >= CSV_FLUSH_BYTES {
            out.write_all(&buf)?;
            buf.clear();
        }
        Ok(ControlFlow::Continue(()))
    });
    // The rows read before a failure are written before it is reported.
    out.write_all(&buf)?;
    scanned?;
    out.flush()?;
    Ok(summary)
}

/// Writes matching entries as one JSON array of the API's entry JSON (the event, `hash`,
/// `seal`), one entry a line, streamed: the dashboard's "Export JSON".
pub fn write_json(
    store: &dyn Store,
    filter: &Filter,
    order: Order,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportWriteError> {
    let mut buf: Vec<u8> = Vec::with_capacity(CSV_FLUSH_BYTES + 4096);
    buf.extend_from_slice(b"[");
    let mut summary = ExportSummary::default();
    let scanned = scan_chunked_ahead(store, filter, order, None, &mut |entry| -> Result<
        ControlFlow<()>,
        ExportWriteError,
    > {
        buf.extend_from_slice(if summary.entries == 0 { b"\n" } else { b",\n" });
        serde_json::to_writer(&mut buf, &EntryJson::new(&entry))
            .map_err(|e| ExportWriteError::Io(std::io::Error::other(e)))?;
        summary.entries += 1;
        if buf.len() >= CSV_FLUSH_BYTES {
            out.write_all(&buf)?;
            buf.clear();
        }
        Ok(ControlFlow::Continue(()))
    });
    out.write_all(&buf)?;
    scanned?;
    out.write_all(b"\n]\n")?;
    out.flush()?;
    Ok(summary)
}

/// Writes matching entries as SIEM records ([`crate::formats`]), one line each ending in LF:
/// NDJSON for OCSF and ECS, one CEF line per event for CEF. `node_id` is the reporting node.
pub fn write_siem(
    store: &dyn Store,
    filter: &Filter,
    order: Order,
    limit: Option<u64>,
    format: SiemFormat,
    node_id: &str,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportWriteError> {
    let mut buf: Vec<u8> = Vec::with_capacity(CSV_FLUSH_BYTES + 4096);
    let mut summary = ExportSummary::default();
    let scanned = scan_chunked_ahead(store, filter, order, limit, &mut |entry| -> Result<
        ControlFlow<()>,
        ExportWriteError,
    > {
        buf.extend_from_slice(formats::render(format, &entry, node_id).as_bytes());
        buf.push(b'\n');
        summary.entries += 1;
        if buf.len() >= CSV_FLUSH_BYTES {
            out.write_all(&buf)?;
            buf.clear();
        }
        Ok(ControlFlow::Continue(()))
    });
    // The records read before a failure are written before it is reported.
    out.write_all(&buf)?;
    scanned?;
    out.flush()?;
    Ok(summary)
}

/// The JSON form of a stored entry in API responses: the core's event JSON (keys in its
/// order, times RFC 3339 UTC with milliseconds, `context` as an object) followed by `hash`
/// and `seal`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EntryJson<'a> {
    #[serde(flatten)]
    event: &'a evident_core::Event,
    hash: &'a Hash,
    seal: &'a Hash,
}

impl<'a> EntryJson<'a> {
    pub fn new(entry: &'a SealedEntry) -> EntryJson<'a> {
        EntryJson {
            event: &entry.event,
            hash: &entry.hash,
            seal: &entry.seal,
        }
    }
}

/// One page of a JSON query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<SealedEntry>,
    /// The seq to continue after, when more entries match.
    pub next_after: Option<u64>,
}

/// Reads one page: up to `limit` matching entries after `after` in `order`.
pub fn query_page(
    store: &dyn Store,
    filter: &Filter,
    order: Order,
    after: Option<u64>,
    limit: u64,
) -> Result<Page, StoreError> {
    let mut entries = Vec::with_capacity(limit.min(1024) as usize);
    let mut more = false;
    // One extra row tells whether there is a next page, so the last page has no cursor.
    store.scan(filter, order, after, Some(limit + 1), &mut |entry| {
        if entries.len() as u64 == limit {
            more = true;
            return ControlFlow::Break(());
        }
        entries.push(entry);
        ControlFlow::Continue(())
    })?;
    let next_after = if more {
        entries.last().map(|e: &SealedEntry| e.event.seq)
    } else {
        None
    };
    Ok(Page {
        entries,
        next_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_format_rfc3339_millis_writes_them() {
        let mut time = TimeText::default();
        for ms in [
            0,
            1,
            999,
            1000,
            1001,
            1001,
            -1,
            -1000,
            -1001,
            1_764_524_064_123,
            1_764_524_064_999,
            1_764_524_065_000,
            253_402_300_799_999,
        ] {
            let mut buf = Vec::new();
            time.push(&mut buf, ms);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                format_rfc3339_millis(ms),
                "{ms}"
            );
        }
    }

    #[test]
    fn formula_cells_get_an_apostrophe() {
        assert_eq!(csv_cell("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_cell("+1"), "'+1");
        assert_eq!(csv_cell("-1"), "'-1");
        assert_eq!(csv_cell("@cmd"), "'@cmd");
        assert_eq!(csv_cell("\tx"), "'\tx");
        assert_eq!(csv_cell("\rx"), "'\rx");
        assert_eq!(csv_cell("alice"), "alice");
        assert_eq!(csv_cell(""), "");
        assert_eq!(csv_cell("a=b"), "a=b");
    }
}

#[cfg(test)]
mod bundle_tests {
    use super::*;
    use crate::test_support::{event_json, faulty_node, test_config};
    use evident_core::EventInput;
    use evident_core::export::ExportVerifier;

    fn fill(node: &crate::node::Node, actors: &[&str]) {
        for actor in actors {
            let input = EventInput::from_json(&event_json(actor, "auth.login")).unwrap();
            node.sequencer().append_blocking(vec![input]).unwrap();
        }
    }

    fn check(node: &crate::node::Node, bytes: &[u8]) -> evident_core::export::ExportReport {
        let mut v = ExportVerifier::new(node.files().verifier(), None);
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            v.push_line(line.as_bytes()).unwrap();
        }
        v.finish().unwrap()
    }

    fn bundle(
        node: &crate::node::Node,
        filter: Filter,
        limit: Option<u64>,
    ) -> (Vec<u8>, ExportSummary) {
        let checkpoint = node.sequencer().force_checkpoint_blocking().unwrap();
        // The header states the filter, as the HTTP layer writes it.
        let mut query = serde_json::Map::new();
        if let Some(actor) = &filter.actor {
            query.insert("actor".into(), actor.clone().into());
        }
        if let Some(limit) = limit {
            query.insert("limit".into(), limit.to_string().into());
        }
        let request = BundleRequest {
            node_id: node.files().node_id().to_owned(),
            checkpoint,
            filter,
            query: Value::Object(query),
            exported_at: 1_700_000_000_000,
            limit,
            consistency_from: None,
            signers: node.files().signers_now(),
        };
        let mut out = Vec::new();
        let summary = write_bundle(&**node.store(), &request, &mut out).unwrap();
        (out, summary)
    }

    #[test]
    fn whole_and_filtered_bundles_verify_offline() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, _) = faulty_node(test_config(tmp.path()));
        fill(
            &node,
            &["alice", "bob", "alice", "alice", "carol", "bob", "alice"],
        );

        let (out, summary) = bundle(&node, Filter::default(), None);
        assert_eq!(
            summary,
            ExportSummary {
                entries: 7,
                runs: 1
            }
        );
        let report = check(&node, &out);
        assert_eq!(report.entries, 7);
        assert_eq!(report.checkpoint_size, 7);

        // alice is at 0, 2, 3, 6: three runs.
        let alice = Filter {
            actor: Some("alice".to_owned()),
            ..Filter::default()
        };
        let (out, summary) = bundle(&node, alice.clone(), None);
        assert_eq!(
            summary,
            ExportSummary {
                entries: 4,
                runs: 3
            }
        );
        let report = check(&node, &out);
        assert_eq!((report.entries, report.runs), (4, 3));
        assert_eq!((report.first_seq, report.last_seq), (Some(0), Some(6)));

        let (out, summary) = bundle(&node, alice, Some(2));
        assert_eq!(
            summary,
            ExportSummary {
                entries: 2,
                runs: 2
            }
        );
        assert_eq!(check(&node, &out).entries, 2);
        node.shutdown();
    }

    #[test]
    fn a_bundle_is_cut_at_its_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, _) = faulty_node(test_config(tmp.path()));
        fill(&node, &["a", "b", "c"]);
        let checkpoint = node.sequencer().force_checkpoint_blocking().unwrap();
        fill(&node, &["d", "e"]);
        let request = BundleRequest {
            node_id: node.files().node_id().to_owned(),
            checkpoint,
            filter: Filter::default(),
            query: serde_json::json!({}),
            exported_at: 0,
            limit: None,
            consistency_from: None,
            signers: node.files().signers_now(),
        };
        let mut out = Vec::new();
        let summary = write_bundle(&**node.store(), &request, &mut out).unwrap();
        assert_eq!(summary.entries, 3);
        assert_eq!(check(&node, &out).checkpoint_size, 3);
        node.shutdown();
    }

    /// A deterministic generator (xorshift64*): each run checks the same random cases.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const ACTORS: [&str; 3] = ["alice", "bob", "svc"];
    const TENANTS: [&str; 2] = ["acme", "globex"];
    const ACTIONS: [&str; 4] = [
        "auth.login",
        "auth.login.failed",
        "config.changed",
        "pcap.download",
    ];
    const IPS: [&str; 4] = ["10.1.2.3", "10.9.0.1", "2001:db8::1", "192.0.2.7"];
    const SEVERITIES: [&str; 4] = ["info", "notice", "warning", "critical"];
    const OUTCOMES: [&str; 3] = ["success", "failure", "denied"];

    fn random_event(rng: &mut Rng) -> EventInput {
        let mut actor = serde_json::json!({
            "id": rng.pick(&ACTORS),
            "kind": rng.pick(&["user", "service", "api_key"]),
        });
        if rng.below(4) > 0 {
            actor["ip"] = rng.pick(&IPS).into();
        }
        // Three in four say when they happened, one of a few client times.
        let occurred_at = (rng.below(4) > 0)
            .then(|| Value::from(1_773_478_800_000i64 + rng.below(4) as i64 * 60_000));
        EventInput::from_json(&serde_json::json!({
            "occurred_at": occurred_at,
            "tenant": rng.pick(&TENANTS),
            "actor": actor,
            "action": rng.pick(&ACTIONS),
            "target": {"kind": rng.pick(&["node", "user"]), "id": rng.pick(&["n1", "n2"])},
            "outcome": rng.pick(&OUTCOMES),
            "severity": rng.pick(&SEVERITIES),
        }))
        .unwrap()
    }

    /// Query parameters, each present with probability 1/3.
    fn random_params(rng: &mut Rng) -> serde_json::Map<String, Value> {
        let mut params = serde_json::Map::new();
        let choices: [(&str, &[&str]); 11] = [
            ("actor", &ACTORS),
            ("actor_kind", &["user", "service", "api_key"]),
            ("tenant", &TENANTS),
            (
                "action",
                &["auth.*", "auth.login", "config.*", "pcap.download"],
            ),
            ("target", &["n1", "node:n1", "user:n2"]),
            (
                "ip",
                &[
                    "10.0.0.0/8",
                    "2001:db8::/32",
                    "::/0",
                    "192.0.2.7",
                    "0.0.0.0/0",
                ],
            ),
            ("severity", &["notice", "warn", "crit"]),
            ("outcome", &OUTCOMES),
            ("node", &["node-1", "elsewhere"]),
            (
                "occurred_from",
                &["1773478860000", "2026-03-14T09:02:00Z", "0"],
            ),
            (
                "occurred_to",
                &["1773478920000", "2026-03-14T09:03:00.001Z"],
            ),
        ];
        for (name, values) in choices {
            if rng.below(3) == 0 {
                params.insert(name.to_owned(), rng.pick(values).into());
            }
        }
        params
    }

    /// The bundle a forger would make from `header` (a genuine signed header line) and the
    /// genuine stored entries `seqs`, with genuine run markers from the store.
    fn spliced(
        store: &dyn Store,
        header: &str,
        size: u64,
        all: &[SealedEntry],
        seqs: &[u64],
    ) -> Vec<u8> {
        let mut out = header.as_bytes().to_vec();
        let mut runs = 0;
        for (k, &seq) in seqs.iter().enumerate() {
            let starts = k == 0 || seqs[k - 1] + 1 != seq;
            let ends = k + 1 == seqs.len() || seqs[k + 1] != seq + 1;
            runs += u64::from(starts);
            let line = entry_line(&ExportEntry {
                entry: all[seq as usize].clone(),
                run_start: starts.then(|| run_start(store, seq, size).unwrap()),
                run_end: ends.then(|| run_end(store, seq + 1, size).unwrap()),
            });
            out.extend_from_slice(line.as_bytes());
        }
        out.extend_from_slice(trailer_line(seqs.len() as u64, runs).as_bytes());
        out
    }

    /// Over random logs and random filters: the bundle of a filter verifies offline, holds
    /// exactly what the core matcher keeps, and says its completeness cannot be proven; the
    /// same signed header over the same genuine entries plus any one entry the filter does
    /// not keep (with genuine run markers) is refused as `outside_filter` at that entry. A
    /// bundle without a filter that lacks any entry after its first is refused as
    /// `omitted_entry`.
    #[test]
    fn filtered_bundles_verify_and_refuse_any_entry_outside_their_filter() {
        use evident_core::Violation;
        use evident_core::export::{Completeness, verify_export};
        use evident_core::filter::EventFilter;
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for log in 0..3 {
            let tmp = tempfile::tempdir().unwrap();
            let (node, _) = faulty_node(test_config(tmp.path()));
            let n = 20 + rng.below(30);
            let inputs: Vec<EventInput> = (0..n).map(|_| random_event(&mut rng)).collect();
            node.sequencer().append_blocking(inputs).unwrap();
            let store = &**node.store();
            let mut all = Vec::new();
            store
                .scan(&Filter::default(), Order::Ascending, None, None, &mut |e| {
                    all.push(e);
                    ControlFlow::Continue(())
                })
                .unwrap();
            let verifier = node.files().verifier();
            let mut spliced_checked = 0;
            for case in 0..40 {
                let params = random_params(&mut rng);
                let core =
                    EventFilter::from_params(|name| params.get(name).and_then(Value::as_str))
                        .unwrap();
                let checkpoint = node.sequencer().force_checkpoint_blocking().unwrap();
                let size = checkpoint.size;
                let request = BundleRequest {
                    node_id: node.files().node_id().to_owned(),
                    checkpoint,
                    filter: core.clone().into(),
                    query: Value::Object(params.clone()),
                    exported_at: 1_700_000_000_000,
                    limit: None,
                    consistency_from: None,
                    signers: node.files().signers_now(),
                };
                let mut out = Vec::new();
                write_bundle(store, &request, &mut out).unwrap();
                let report = verify_export(&out, verifier.clone(), None)
                    .unwrap_or_else(|e| panic!("log {log} case {case} {params:?}: {e}"));
                let keep: Vec<u64> = all
                    .iter()
                    .filter(|e| core.matches(&e.event))
                    .map(|e| e.event.seq)
                    .collect();
                assert_eq!(report.entries, keep.len() as u64, "{params:?}");
                assert_eq!(report.query.filter, core);
                let text = std::str::from_utf8(&out).unwrap();
                let header = &text[..=text.find('\n').unwrap()];
                if core.is_unfiltered() {
                    assert!(matches!(
                        report.completeness,
                        Completeness::Range { first: 0, .. }
                    ));
                    for drop in 1..size {
                        let fewer: Vec<u64> = keep.iter().copied().filter(|s| *s != drop).collect();
                        let err = verify_export(
                            &spliced(store, header, size, &all, &fewer),
                            verifier.clone(),
                            None,
                        )
                        .unwrap_err();
                        assert_eq!(
                            err.violation(),
                            Some(&Violation::OmittedEntry { seq: drop })
                        );
                    }
                    continue;
                }
                assert_eq!(report.completeness, Completeness::NotProvable);
                // The forger's bundle of the genuine selection verifies: splicing is the attack.
                verify_export(
                    &spliced(store, header, size, &all, &keep),
                    verifier.clone(),
                    None,
                )
                .unwrap();
                for outsider in all.iter().filter(|e| !core.matches(&e.event)) {
                    let seq = outsider.event.seq;
                    let mut with = keep.clone();
                    with.push(seq);
                    with.sort_unstable();
                    let err = verify_export(
                        &spliced(store, header, size, &all, &with),
                        verifier.clone(),
                        None,
                    )
                    .unwrap_err();
                    assert!(
                        matches!(err.violation(), Some(Violation::OutsideFilter { seq: s, .. }) if *s == seq),
                        "{params:?} + entry {seq}: {err}"
                    );
                    spliced_checked += 1;
                }
            }
            assert!(
                spliced_checked > 100,
                "only {spliced_checked} splices tried"
            );
            node.shutdown();
        }
    }

    /// The CSV as the `csv` crate writes the same cells: the reference the hand-written
    /// writer must match byte for byte.
    fn csv_by_the_csv_crate(entries: &[SealedEntry]) -> Vec<u8> {
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        writer.write_record(CSV_COLUMNS).unwrap();
        for entry in entries {
            let e = &entry.event;
            let cell = |s: &str| csv_cell(s).into_owned();
            writer
                .write_record([
                    format_rfc3339_millis(e.recorded_at),
                    cell(&e.node_id),
                    cell(&e.tenant),
                    cell(&e.actor.id),
                    e.actor.kind.as_str().to_owned(),
                    cell(&e.action),
                    cell(&format!("{}:{}", e.target.kind, e.target.id)),
                    e.actor.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    cell(e.actor.user_agent.as_deref().unwrap_or("")),
                    e.outcome.as_str().to_owned(),
                    e.severity.as_str().to_owned(),
                    cell(e.context.as_str()),
                    e.seq.to_string(),
                    entry.hash.to_hex(),
                    entry.seal.to_hex(),
                    cell(e.appended_by.as_deref().unwrap_or("")),
                    e.occurred_at.map(format_rfc3339_millis).unwrap_or_default(),
                ])
                .unwrap();
        }
        writer.into_inner().unwrap()
    }

    #[test]
    fn csv_matches_the_csv_crate_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, _) = faulty_node(test_config(tmp.path()));
        let tricky = [
            "=SUM(A1)",
            "+1",
            "-1",
            "@cmd",
            "\tx",
            "\rx",
            "a,b",
            "say \"hi\"",
            "line\nbreak",
            "=\"quoted\",comma",
            "-\r\n",
            "plain",
            "",
        ];
        for text in tricky {
            let mut reference = csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(Vec::new());
            reference.write_record([&csv_cell(text), "x"]).unwrap();
            let mut cell = Vec::new();
            push_csv_cell(&mut cell, text);
            cell.extend_from_slice(b",x\r\n");
            assert_eq!(cell, reference.into_inner().unwrap(), "{text:?}");
        }
        let mut accepted = 0;
        for text in tricky {
            let mut json = event_json("alice", "auth.login");
            if !text.chars().any(char::is_control) {
                json["actor"]["user_agent"] = text.into();
            }
            json["context"] = serde_json::json!({ "note": text });
            let input = EventInput::from_json(&json).unwrap();
            node.sequencer().append_blocking(vec![input]).unwrap();
            let mut json = event_json(text, "auth.login");
            json["target"]["id"] = text.into();
            json["actor"]
                .as_object_mut()
                .unwrap()
                .retain(|k, _| k == "id" || k == "kind");
            if let Ok(input) = EventInput::from_json(&json) {
                node.sequencer().append_blocking(vec![input]).unwrap();
                accepted += 1;
            }
        }
        assert!(accepted >= 5, "only {accepted} tricky actor ids accepted");
        let mut entries = Vec::new();
        node.store()
            .scan(&Filter::default(), Order::Ascending, None, None, &mut |e| {
                entries.push(e);
                ControlFlow::Continue(())
            })
            .unwrap();
        let mut out = Vec::new();
        let summary = write_csv(
            &**node.store(),
            &Filter::default(),
            Order::Ascending,
            None,
            &mut out,
        )
        .unwrap();
        assert_eq!(summary.entries, entries.len() as u64);
        let expected = csv_by_the_csv_crate(&entries);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(out, expected);
        node.shutdown();
    }

    #[test]
    fn csv_has_the_exact_header_and_one_row_per_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, _) = faulty_node(test_config(tmp.path()));
        fill(&node, &["=cmd|' /C calc'!A0", "bob"]);
        let mut out = Vec::new();
        let summary = write_csv(
            &**node.store(),
            &Filter::default(),
            Order::Ascending,
            None,
            &mut out,
        )
        .unwrap();
        assert_eq!(summary.entries, 2);
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.split("\r\n");
        assert_eq!(
            lines.next().unwrap(),
            "timestamp,node_id,tenant,actor,actor_kind,action,target,ip_address,user_agent,outcome,severity,context,seq,hash,seal,appended_by,occurred_at"
        );
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[0][3], "'=cmd|' /C calc'!A0");
        assert_eq!(&rows[1][3], "bob");
        assert_eq!(&rows[1][6], "node:nyc-edge-01");
        assert_eq!(&rows[1][7], "203.0.113.7");
        assert_eq!(&rows[1][11], r#"{"new":7,"old":5}"#);
        assert_eq!(&rows[1][12], "1");
        assert!(
            rows[1][0].ends_with('Z') && rows[1][0].len() == 24,
            "{}",
            &rows[1][0]
        );
        assert_eq!(rows[1][13].len(), 64);
        // Appended by the node itself (the test appends through the sequencer directly).
        assert_eq!(&rows[1][15], "system");
        node.shutdown();
    }
}
