//! Retention: the `retention_days` setting and the pruner that deletes a node's entries older
//! than the window while keeping the log verifiable. The same [`prune`] runs daily in the
//! server and offline as `evident prune`.
//!
//! A prune removes a prefix `[from, k)` of the log: `k` is the first entry recorded inside the
//! window (never more: the newest entry is always kept, it is the chain's tip). In order:
//! 1. a signed checkpoint of size at least `k` is found (the latest) or signed;
//! 2. the anchor (entry `k - 1`'s hash, seal and time, and that checkpoint) is persisted as
//!    the store's unfinished [`PruneAnchor`] before anything is deleted;
//! 3. entries below `k` are deleted in bounded batches, one transaction each;
//! 4. a `retention.pruned` event (actor kind `system`) records the range, the count and the
//!    anchor, and the anchor is marked finished with that event's sequence number.
//!
//! A crash anywhere resumes at the next run: an unfinished anchor is finished first (its
//! deletions are idempotent), and before appending the event the pruner looks for one already
//! recording this range (a crash between steps 4's append and its mark), so the event is
//! written exactly once per prune. Merkle node hashes and checkpoints are never deleted.

use crate::audit::{AuditActor, AuditEvent, RequestInfo};
use crate::node::Node;
use evident_core::event::Millis;
use evident_core::{EventInput, SealedEntry};
use evident_store::{ActionFilter, Filter, Order, PruneAnchor, StoreError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::ControlFlow;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// The shortest retention window accepted, in days.
pub const MIN_RETENTION_DAYS: u32 = 90;
/// The default retention window, in days.
pub const DEFAULT_RETENTION_DAYS: u32 = 365;
/// Entries deleted per transaction.
pub const DEFAULT_BATCH_ENTRIES: u64 = 10_000;
/// The action of the event recording a prune.
pub const PRUNED_ACTION: &str = "retention.pruned";
/// How long after start the server's pruner first runs, and then how often.
pub const FIRST_RUN_AFTER: std::time::Duration = std::time::Duration::from_secs(30);
pub const RUN_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// How long entries are kept: `Some(days)`, or `None` for ever (`unlimited`, or 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionDays(pub Option<u32>);

impl Default for RetentionDays {
    fn default() -> Self {
        RetentionDays(Some(DEFAULT_RETENTION_DAYS))
    }
}

impl RetentionDays {
    /// Parses `unlimited` (or `forever`, or 0) or a number of days. The minimum is checked by
    /// [`Self::check`].
    pub fn parse(text: &str) -> Result<RetentionDays, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("unlimited") || text.eq_ignore_ascii_case("forever") {
            return Ok(RetentionDays(None));
        }
        match text.parse::<u32>() {
            Ok(0) => Ok(RetentionDays(None)),
            Ok(days) => Ok(RetentionDays(Some(days))),
            Err(_) => Err(format!(
                "{text:?} is neither a number of days nor `unlimited`"
            )),
        }
    }

    /// Refuses windows shorter than [`MIN_RETENTION_DAYS`].
    pub fn check(&self) -> Result<(), String> {
        match self.0 {
            Some(days) if days < MIN_RETENTION_DAYS => Err(format!(
                "{days} days is below the minimum of {MIN_RETENTION_DAYS}: give at least \
                 {MIN_RETENTION_DAYS} days, or `unlimited` (or 0) to keep every entry"
            )),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for RetentionDays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(days) => write!(f, "{days}"),
            None => f.write_str("unlimited"),
        }
    }
}

impl Serialize for RetentionDays {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(days) => s.serialize_u32(days),
            None => s.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for RetentionDays {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RetentionDays, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Days(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Days(days) => RetentionDays::parse(&days.to_string()),
            Raw::Text(text) => RetentionDays::parse(&text),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// What to prune, and how.
#[derive(Debug, Clone)]
pub struct PruneRequest {
    /// The time the window is measured back from (the clock; tests pass their own).
    pub now: Millis,
    /// The window in days (at least [`MIN_RETENTION_DAYS`]).
    pub days: u32,
    /// Entries deleted per transaction.
    pub batch_entries: u64,
    /// Stop after this many batches, leaving the prune unfinished (tests use it to stand for a
    /// crash in the middle); `None`: run to the end.
    pub max_batches: Option<u64>,
    /// Only report what would be pruned.
    pub dry_run: bool,
}

impl PruneRequest {
    pub fn new(now: Millis, days: u32) -> PruneRequest {
        PruneRequest {
            now,
            days,
            batch_entries: DEFAULT_BATCH_ENTRIES,
            max_batches: None,
            dry_run: false,
        }
    }
}

/// What a run of the pruner did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneOutcome {
    /// No entry is older than the window (beyond those pruned already).
    Nothing { kept_from: u64 },
    /// Dry run: entries `[from_seq, below_seq)` would be pruned.
    WouldPrune {
        from_seq: u64,
        below_seq: u64,
        /// An unfinished prune that a real run would finish first.
        unfinished: bool,
    },
    /// Entries `[from_seq, below_seq)` are pruned and recorded by event `event_seq`.
    Pruned {
        from_seq: u64,
        below_seq: u64,
        count: u64,
        event_seq: u64,
        /// This run finished a prune that an earlier run began.
        resumed: bool,
    },
    /// Stopped after `max_batches` with the prune unfinished (the next run finishes it).
    Interrupted { below_seq: u64, deleted: u64 },
}

/// Why the pruner could not run.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("cannot record the prune: {0}")]
    Sequencer(#[from] crate::sequencer::SequencerError),
    #[error("{0}")]
    Refused(String),
}

fn entry_at(node: &Node, seq: u64) -> Result<Option<SealedEntry>, StoreError> {
    let mut found = None;
    let filter = Filter {
        from_seq: Some(seq),
        to_seq: Some(seq.saturating_add(1)),
        ..Filter::default()
    };
    node.store()
        .scan(&filter, Order::Ascending, None, Some(1), &mut |entry| {
            found = Some(entry);
            ControlFlow::Break(())
        })?;
    Ok(found)
}

fn first_seq(node: &Node, filter: &Filter, order: Order) -> Result<Option<u64>, StoreError> {
    let mut found = None;
    node.store().scan(filter, order, None, Some(1), &mut |entry| {
        found = Some(entry.event.seq);
        ControlFlow::Break(())
    })?;
    Ok(found)
}

/// Runs the pruner once: finishes an unfinished prune, or prunes what is older than the
/// window. Blocking: call from a blocking thread.
pub fn prune(node: &Node, request: &PruneRequest) -> Result<PruneOutcome, PruneError> {
    RetentionDays(Some(request.days))
        .check()
        .map_err(PruneError::Refused)?;
    let store = node.store();
    let current = store.prune_anchor()?;
    if let Some(anchor) = current.clone().filter(|a| a.event_seq.is_none()) {
        if request.dry_run {
            return Ok(PruneOutcome::WouldPrune {
                from_seq: anchor.from_seq,
                below_seq: anchor.below_seq,
                unfinished: true,
            });
        }
        return run(node, request, &anchor, true);
    }
    let from_seq = current.as_ref().map_or(0, |a| a.below_seq);
    let Some(newest) = first_seq(node, &Filter::default(), Order::Descending)? else {
        return Ok(PruneOutcome::Nothing { kept_from: 0 });
    };
    let cutoff = request
        .now
        .saturating_sub(i64::from(request.days).saturating_mul(DAY_MS));
    let in_window = Filter {
        from: Some(cutoff),
        ..Filter::default()
    };
    // The newest entry is always kept: it is the chain's tip, where appends continue.
    let below_seq = first_seq(node, &in_window, Order::Ascending)?
        .unwrap_or(newest)
        .min(newest);
    if below_seq <= from_seq {
        return Ok(PruneOutcome::Nothing {
            kept_from: from_seq,
        });
    }
    if request.dry_run {
        return Ok(PruneOutcome::WouldPrune {
            from_seq,
            below_seq,
            unfinished: false,
        });
    }
    let Some(last_pruned) = entry_at(node, below_seq - 1)? else {
        return Err(PruneError::Refused(format!(
            "entry {} is missing: the log is not dense, run `evident verify` first",
            below_seq - 1
        )));
    };
    let checkpoint = match store.latest_checkpoint()? {
        Some(cp) if cp.size >= below_seq => cp,
        _ => node.sequencer().force_checkpoint_blocking()?,
    };
    let anchor = PruneAnchor {
        from_seq,
        below_seq,
        hash: last_pruned.hash,
        seal: last_pruned.seal,
        recorded_at: last_pruned.event.recorded_at,
        checkpoint_size: checkpoint.size,
        checkpoint_note: checkpoint.signed_note,
        started_at: request.now,
        event_seq: None,
    };
    store.begin_prune(&anchor)?;
    tracing::info!(from_seq, below_seq, "retention: pruning");
    run(node, request, &anchor, false)
}

/// Deletes below a persisted, unfinished anchor, then records the prune once.
fn run(
    node: &Node,
    request: &PruneRequest,
    anchor: &PruneAnchor,
    resumed: bool,
) -> Result<PruneOutcome, PruneError> {
    let store = node.store();
    let batch = request.batch_entries.max(1);
    let mut batches = 0u64;
    let mut deleted = 0u64;
    loop {
        if request.max_batches.is_some_and(|max| batches >= max) {
            return Ok(PruneOutcome::Interrupted {
                below_seq: anchor.below_seq,
                deleted,
            });
        }
        let n = store.prune_batch(batch)?;
        batches += 1;
        deleted += n;
        if n < batch {
            break;
        }
    }
    let event_seq = match recorded_event(node, anchor)? {
        Some(seq) => seq,
        None => {
            let receipts = node
                .sequencer()
                .append_blocking(vec![pruned_event(node, request, anchor)])?;
            receipts
                .first()
                .map(|r| r.seq)
                .ok_or_else(|| PruneError::Refused("the event got no receipt".to_owned()))?
        }
    };
    store.finish_prune(event_seq)?;
    tracing::info!(
        from_seq = anchor.from_seq,
        below_seq = anchor.below_seq,
        event_seq,
        "retention: pruned"
    );
    Ok(PruneOutcome::Pruned {
        from_seq: anchor.from_seq,
        below_seq: anchor.below_seq,
        count: anchor.below_seq - anchor.from_seq,
        event_seq,
        resumed,
    })
}

/// The `retention.pruned` event already recording `anchor`'s prune, if a run appended it and
/// stopped before marking the anchor finished.
fn recorded_event(node: &Node, anchor: &PruneAnchor) -> Result<Option<u64>, StoreError> {
    let filter = Filter {
        action: Some(ActionFilter::Exact(PRUNED_ACTION.to_owned())),
        actor_kind: Some(evident_core::event::ActorKind::System),
        from_seq: Some(anchor.below_seq),
        ..Filter::default()
    };
    let mut found = None;
    node.store()
        .scan(&filter, Order::Descending, None, Some(16), &mut |entry| {
            let context: serde_json::Value =
                serde_json::from_str(entry.event.context.as_str()).unwrap_or_default();
            if context["to_seq"].as_u64() == Some(anchor.below_seq)
                && context["anchor"]["hash"].as_str() == Some(anchor.hash.to_hex().as_str())
            {
                found = Some(entry.event.seq);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
    Ok(found)
}

fn pruned_event(node: &Node, request: &PruneRequest, anchor: &PruneAnchor) -> EventInput {
    AuditEvent::new(
        PRUNED_ACTION,
        "success",
        "notice",
        "log",
        node.files().node_id(),
    )
    .with("from_seq", anchor.from_seq)
    .with("to_seq", anchor.below_seq)
    .with("count", anchor.below_seq - anchor.from_seq)
    .with("retention_days", request.days)
    .with(
        "cutoff",
        request
            .now
            .saturating_sub(i64::from(request.days).saturating_mul(DAY_MS)),
    )
    .with(
        "anchor",
        serde_json::json!({
            "seq": anchor.below_seq - 1,
            "hash": anchor.hash.to_hex(),
            "seal": anchor.seal.to_hex(),
            "recorded_at": anchor.recorded_at,
        }),
    )
    .with(
        "checkpoint",
        serde_json::json!({
            "size": anchor.checkpoint_size,
            "note": anchor.checkpoint_note,
        }),
    )
    .into_input(&AuditActor::System("retention"), &RequestInfo::default())
}

/// The server's daily pruner: first run [`FIRST_RUN_AFTER`] start, then every [`RUN_EVERY`].
/// Failures are logged and retried at the next run.
pub async fn run_daily(state: crate::http::AppState) {
    let Some(days) = state.node().config().retention_days.0 else {
        tracing::info!("retention: unlimited, the pruner does not run");
        return;
    };
    let first = tokio::time::Instant::now() + FIRST_RUN_AFTER;
    let mut tick = tokio::time::interval_at(first, RUN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = state.clone();
        let ran = tokio::task::spawn_blocking(move || {
            prune(state.node(), &PruneRequest::new(crate::now_ms(), days))
        })
        .await;
        match ran {
            Ok(Ok(outcome)) => tracing::info!(?outcome, "retention: pruner ran"),
            Ok(Err(e)) => tracing::warn!(error = %e, "retention: pruning failed"),
            Err(e) => tracing::warn!(error = %e, "retention: pruner task failed"),
        }
    }
}
