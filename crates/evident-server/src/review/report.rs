//! A four-eyes report from the store: the rule's confirmed events of a time window, the
//! confirmations recorded since its start and the entries they name, all below one signed
//! checkpoint, paired by the core's `evaluate`; and the signed report bundle, whose entry lines
//! are written by the export's run writer, so that every entry the report names carries the
//! proof that ties it to the checkpoint.

use crate::export::{ExportSummary, ExportWriteError, RunWriter};
use crate::scan::scan_chunked;
use evident_core::event::{Millis, format_rfc3339_millis};
use evident_core::four_eyes::bundle::{ReportHeader, signed_header_line};
use evident_core::four_eyes::{
    Evaluation, EventMatcher, FourEyesRule, ReportScope, ScopeError, evaluate, reference_of,
};
use evident_core::{NoteSigner, SealedEntry};
use evident_store::{ActionFilter, Filter, Order, Store, StoreError, StoredCheckpoint};
use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;

/// What a report covers.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    pub rule: FourEyesRule,
    /// Confirmed events recorded at or after this time …
    pub from: Option<Millis>,
    /// … and before this one.
    pub to: Option<Millis>,
    /// Only this tenant's events (a tenant-scoped key's report).
    pub tenant: Option<String>,
    /// Every entry the report considers is below this checkpoint's size.
    pub checkpoint: StoredCheckpoint,
    /// Pending is told from overdue at this time.
    pub as_of: Millis,
}

/// Errors building or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
}

impl ReportRequest {
    fn scope(&self) -> ReportScope {
        ReportScope {
            rule: self.rule.clone(),
            from: self.from.map(format_rfc3339_millis),
            to: self.to.map(format_rfc3339_millis),
            as_of: format_rfc3339_millis(self.as_of),
            tenant: self.tenant.clone(),
        }
    }

    /// The store filter of one side of the rule, below the checkpoint.
    fn filter(&self, matcher: &EventMatcher, from: Option<Millis>, to: Option<Millis>) -> Filter {
        let action = match matcher.action.strip_suffix(".*") {
            Some(prefix) => ActionFilter::Prefix(prefix.to_owned()),
            None => ActionFilter::Exact(matcher.action.clone()),
        };
        Filter {
            action: Some(action),
            tenant: self.tenant.clone().or_else(|| matcher.tenant.clone()),
            outcome: matcher.outcome,
            from,
            to,
            to_seq: Some(self.checkpoint.size),
            ..Filter::default()
        }
    }
}

/// The report, and the entries it names (ascending).
pub fn build_report(
    store: &dyn Store,
    request: &ReportRequest,
) -> Result<(Evaluation, Vec<SealedEntry>), ReportError> {
    let rule = &request.rule;
    let mut entries: BTreeMap<u64, SealedEntry> = BTreeMap::new();
    let collect = |filter: Filter, entries: &mut BTreeMap<u64, SealedEntry>| {
        scan_chunked(
            store,
            &filter,
            Order::Ascending,
            None,
            &mut |entry| -> Result<ControlFlow<()>, StoreError> {
                entries.insert(entry.event.seq, entry);
                Ok(ControlFlow::Continue(()))
            },
        )
    };
    collect(
        request.filter(&rule.confirmed, request.from, request.to),
        &mut entries,
    )?;
    // A confirmation comes after what it confirms: those of the window's events are recorded
    // from the window's start on, up to the checkpoint.
    collect(
        request.filter(&rule.confirmation, request.from, None),
        &mut entries,
    )?;
    // The entries the confirmations name that are not here yet (out of the window, or not a
    // confirmed event at all): the pairing decides what to say about them.
    let named: Vec<u64> = entries
        .values()
        .filter(|e| rule.is_confirmation_kind(&e.event))
        .filter_map(|e| reference_of(&e.event).ok().map(|r| (r.seq, e.event.seq)))
        .filter(|(seq, by)| seq < by && !entries.contains_key(seq))
        .map(|(seq, _)| seq)
        .collect();
    for seq in named {
        let filter = Filter {
            from_seq: Some(seq),
            to_seq: Some(seq.saturating_add(1)),
            tenant: request.tenant.clone(),
            ..Filter::default()
        };
        collect(filter, &mut entries)?;
    }
    let all: Vec<SealedEntry> = entries.into_values().collect();
    let evaluation = evaluate(&request.scope(), &all)?;
    let named = all
        .into_iter()
        .filter(|e| evaluation.named.contains(&e.event.seq))
        .collect();
    Ok((evaluation, named))
}

/// Writes the signed report bundle of `evaluation` (from [`build_report`] with `request`):
/// the report header (signed with `signer`, the node's checkpoint key), every named entry
/// with its run markers, the trailer. It is generated at the report's `as_of`.
pub fn write_report_bundle(
    store: &dyn Store,
    request: &ReportRequest,
    evaluation: &Evaluation,
    entries: Vec<SealedEntry>,
    node_id: &str,
    signer: &NoteSigner,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportWriteError> {
    let report = serde_json::to_value(&evaluation.report).map_err(std::io::Error::other)?;
    let header = ReportHeader {
        node_id: node_id.to_owned(),
        generated_at: request.as_of,
        checkpoint: request.checkpoint.signed_note.clone(),
        report,
    };
    out.write_all(signed_header_line(&header, signer)?.as_bytes())?;
    let mut runs = RunWriter::new(store, request.checkpoint.size);
    for entry in entries {
        runs.push(entry, out)?;
    }
    runs.finish(out)
}
