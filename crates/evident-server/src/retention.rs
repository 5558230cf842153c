//! Retention: the `retention_days` setting and the pruner that deletes a node's entries older
//! than the window while keeping the log verifiable. The same [`prune`] runs daily in the
//! server and offline as `evident prune`.
//!
//! A prune removes a prefix `[from, k)` of the log: `k` is the first entry recorded inside the
//! window (never more: the newest entry is always kept, it is the chain's tip). In order:
//! 1. a signed checkpoint of size at least `k` is found (the latest) or signed;
//! 2. a `retention.pruned` event (actor kind `system`) is appended: the range, the count and
//!    the anchor (entry `k - 1`'s hash, seal and time, and that checkpoint), sealed and chained
//!    like any entry, before anything is deleted;
//! 3. the anchor, naming that event, is stored as the store's [`PruneAnchor`] (the store
//!    checks it against the stored entry `k - 1`, the checkpoint and the event);
//! 4. entries below `k` are deleted in bounded batches, one transaction each.
//!
//! A crash anywhere resumes at the next run, writing no second event: an event recorded but
//! not anchored (a crash between 2 and 3) is adopted, once its seal checks and provided it
//! does not reach into the last [`MIN_RETENTION_DAYS`] days; entries left below a stored
//! anchor (a crash during 4) are deleted, once the anchor checks against its event.
//! Verification starts from the anchor and requires it to match its sealed event, so an
//! anchor cannot be forged or moved over kept entries without the node's seal key. Merkle node
//! hashes and checkpoints are never deleted.

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
    node.store()
        .scan(filter, order, None, Some(1), &mut |entry| {
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
    if !request.dry_run {
        // Before anything is recorded: a prune the credentials cannot finish is not begun.
        store.check_prune_permitted()?;
    }
    let current = store.prune_anchor()?;
    let floor = current.as_ref().map_or(0, |a| a.below_seq);

    // A prune recorded in the log but not anchored yet (a crash between the two): adopt it.
    if let Some(anchor) = recorded_unanchored(node, floor, request.now)? {
        if request.dry_run {
            return Ok(PruneOutcome::WouldPrune {
                from_seq: anchor.from_seq,
                below_seq: anchor.below_seq,
                unfinished: true,
            });
        }
        store.begin_prune(&anchor)?;
        return run(node, request, &anchor, true);
    }
    // Anchored, with entries below the anchor left (a crash between batches): delete them.
    if let Some(anchor) = current {
        let oldest = first_seq(node, &Filter::default(), Order::Ascending)?;
        if oldest.is_some_and(|seq| seq < anchor.below_seq) {
            if request.dry_run {
                return Ok(PruneOutcome::WouldPrune {
                    from_seq: anchor.from_seq,
                    below_seq: anchor.below_seq,
                    unfinished: true,
                });
            }
            check_recorded(node, &anchor)?;
            return run(node, request, &anchor, true);
        }
    }

    let from_seq = floor;
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
    // The newest entry is always kept: it is the chain's tip, where appends continue. A node
    // that publishes keeps what is not archived yet.
    let below_seq = first_seq(node, &in_window, Order::Ascending)?
        .unwrap_or(newest)
        .min(newest)
        .min(crate::publish::archived_below(node)?);
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
    let mut anchor = PruneAnchor {
        from_seq,
        below_seq,
        hash: last_pruned.hash,
        seal: last_pruned.seal,
        recorded_at: last_pruned.event.recorded_at,
        checkpoint_size: checkpoint.size,
        checkpoint_note: checkpoint.signed_note,
        started_at: request.now,
        event_seq: 0,
    };
    // Recorded first, in the sealed log; anchored second; deleted last.
    let receipts = node.sequencer().append_blocking(vec![pruned_event(
        node,
        request.days,
        cutoff,
        &anchor,
    )])?;
    anchor.event_seq = receipts
        .first()
        .map(|r| r.seq)
        .ok_or_else(|| PruneError::Refused("the event got no receipt".to_owned()))?;
    store.begin_prune(&anchor)?;
    tracing::info!(
        from_seq,
        below_seq,
        event_seq = anchor.event_seq,
        "retention: pruning"
    );
    run(node, request, &anchor, false)
}

/// Deletes below a stored anchor in batches.
fn run(
    node: &Node,
    request: &PruneRequest,
    anchor: &PruneAnchor,
    resumed: bool,
) -> Result<PruneOutcome, PruneError> {
    let store = node.store();
    // Consumers go on from what the store keeps: none is handed a pruned entry from memory.
    node.sequencer().recent().clear();
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
    tracing::info!(
        from_seq = anchor.from_seq,
        below_seq = anchor.below_seq,
        event_seq = anchor.event_seq,
        "retention: pruned"
    );
    Ok(PruneOutcome::Pruned {
        from_seq: anchor.from_seq,
        below_seq: anchor.below_seq,
        count: anchor.below_seq - anchor.from_seq,
        event_seq: anchor.event_seq,
        resumed,
    })
}

/// Refuses to go on deleting below a stored anchor that its sealed `retention.pruned` event
/// does not record (an anchor written past the store's checks).
fn check_recorded(node: &Node, anchor: &PruneAnchor) -> Result<(), PruneError> {
    let event = entry_at(node, anchor.event_seq)?;
    let recorded = event.as_ref().is_some_and(|e| {
        let context: serde_json::Value =
            serde_json::from_str(e.event.context.as_str()).unwrap_or_default();
        e.event.action == PRUNED_ACTION
            && node.files().seal_key().check(&e.hash, &e.seal)
            && context["to_seq"].as_u64() == Some(anchor.below_seq)
            && context["anchor"]["hash"].as_str() == Some(anchor.hash.to_hex().as_str())
    });
    if recorded {
        Ok(())
    } else {
        Err(PruneError::Refused(format!(
            "the stored retention anchor (below entry {}) is not the one its retention.pruned \
             event (entry {}) records: refusing to delete (run `evident verify --data-dir`)",
            anchor.below_seq, anchor.event_seq
        )))
    }
}

/// The anchor of the newest `retention.pruned` event if it records a prune beyond `floor`
/// (the stored anchor): a run appended it and stopped before storing the anchor. The event
/// must carry this node's seal, and (as this pruner never reaches inside the shortest
/// window) must not reach entries recorded in the last [`MIN_RETENTION_DAYS`] days.
fn recorded_unanchored(
    node: &Node,
    floor: u64,
    now: Millis,
) -> Result<Option<PruneAnchor>, PruneError> {
    let filter = Filter {
        action: Some(ActionFilter::Exact(PRUNED_ACTION.to_owned())),
        actor_kind: Some(evident_core::event::ActorKind::System),
        from_seq: Some(floor),
        ..Filter::default()
    };
    let mut newest = None;
    node.store()
        .scan(&filter, Order::Descending, None, Some(1), &mut |entry| {
            newest = Some(entry);
            ControlFlow::Break(())
        })?;
    let Some(entry) = newest else {
        return Ok(None);
    };
    let context: serde_json::Value =
        serde_json::from_str(entry.event.context.as_str()).unwrap_or_default();
    let Some(below_seq) = context["to_seq"].as_u64().filter(|k| *k > floor) else {
        return Ok(None);
    };
    let refuse = |why: &str| {
        PruneError::Refused(format!(
            "entry {} records a prune below entry {below_seq} that was never anchored, but {why}: \
             refusing to act on it (run `evident verify --data-dir`)",
            entry.event.seq
        ))
    };
    if !node.files().seal_key().check(&entry.hash, &entry.seal) {
        return Err(refuse("its seal is not this node's"));
    }
    let hash = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|h| evident_core::Hash::from_hex(h).ok())
    };
    let (Some(from_seq), Some(hash), Some(seal), Some(recorded_at), Some(size), Some(note)) = (
        context["from_seq"].as_u64(),
        hash(&context["anchor"]["hash"]),
        hash(&context["anchor"]["seal"]),
        context["anchor"]["recorded_at"].as_i64(),
        context["checkpoint"]["size"].as_u64(),
        context["checkpoint"]["note"].as_str(),
    ) else {
        return Err(refuse("its context lacks the anchor"));
    };
    let recent = Filter {
        from: Some(now.saturating_sub(i64::from(MIN_RETENTION_DAYS) * DAY_MS)),
        ..Filter::default()
    };
    if first_seq(node, &recent, Order::Ascending)?.is_some_and(|recent| below_seq > recent) {
        return Err(refuse(&format!(
            "it reaches entries recorded in the last {MIN_RETENTION_DAYS} days"
        )));
    }
    Ok(Some(PruneAnchor {
        from_seq,
        below_seq,
        hash,
        seal,
        recorded_at,
        checkpoint_size: size,
        checkpoint_note: note.to_owned(),
        started_at: entry.event.recorded_at,
        event_seq: entry.event.seq,
    }))
}

fn pruned_event(node: &Node, days: u32, cutoff: Millis, anchor: &PruneAnchor) -> EventInput {
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
    .with("retention_days", days)
    .with("cutoff", cutoff)
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
    // Hidden, for end-to-end tests: a fixed clock, and the first run at once.
    let test_now: Option<Millis> = std::env::var("EVIDENT_TEST_NOW")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let first = tokio::time::Instant::now()
        + if test_now.is_some() {
            std::time::Duration::ZERO
        } else {
            FIRST_RUN_AFTER
        };
    let mut tick = tokio::time::interval_at(first, RUN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = state.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let now = test_now.unwrap_or_else(crate::now_ms);
            prune(state.node(), &PruneRequest::new(now, days))
        })
        .await;
        match ran {
            Ok(Ok(outcome)) => tracing::info!(?outcome, "retention: pruner ran"),
            Ok(Err(e)) => tracing::warn!(error = %e, "retention: pruning failed"),
            Err(e) => tracing::warn!(error = %e, "retention: pruner task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{BundleRequest, write_bundle};
    use crate::test_support::{event_json, faulty_node, test_config};
    use crate::verification::{VerifyOutcome, verify_store};
    use evident_core::export::ExportVerifier;
    use evident_core::merkle;

    fn append(node: &Node, n: usize) -> Vec<crate::sequencer::Receipt> {
        (0..n)
            .map(|i| {
                let input =
                    EventInput::from_json(&event_json(&format!("u{i}"), "auth.login")).unwrap();
                node.sequencer().append_blocking(vec![input]).unwrap()[0].clone()
            })
            .collect()
    }

    fn pruned_events(node: &Node) -> u64 {
        node.store()
            .count(&Filter {
                action: Some(ActionFilter::Exact(PRUNED_ACTION.to_owned())),
                ..Filter::default()
            })
            .unwrap()
    }

    #[test]
    fn the_setting_takes_days_or_unlimited_and_refuses_short_windows() {
        assert_eq!(RetentionDays::parse("365"), Ok(RetentionDays(Some(365))));
        assert_eq!(RetentionDays::parse("unlimited"), Ok(RetentionDays(None)));
        assert_eq!(RetentionDays::parse("0"), Ok(RetentionDays(None)));
        assert!(RetentionDays::parse("soon").is_err());
        assert!(RetentionDays(Some(90)).check().is_ok());
        let short = RetentionDays(Some(30)).check().unwrap_err();
        assert!(short.contains("minimum of 90"), "{short}");
        let c = crate::ServerConfig::from_toml_str("retention_days = \"unlimited\"\n").unwrap();
        assert_eq!(c.retention_days, RetentionDays(None));
        let c = crate::ServerConfig::from_toml_str("retention_days = 30\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("retention_days") && err.contains("90"),
            "{err}"
        );
        assert_eq!(
            crate::ServerConfig::default().retention_days,
            RetentionDays(Some(365))
        );
    }

    /// Old entries go, the window stays, an interrupted prune finishes with one event, and
    /// verification, proofs and an export of the kept range all still check.
    #[test]
    fn a_prune_keeps_the_window_and_the_log_verifiable_and_resumes_after_a_crash() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, _) = faulty_node(test_config(tmp.path()));
        let old = append(&node, 6);
        let before = node.sequencer().force_checkpoint_blocking().unwrap();
        // The clock moves on before the entries that will be inside the window.
        while crate::now_ms() <= old[5].recorded_at {
            std::thread::yield_now();
        }
        let kept = append(&node, 5);
        let now = kept[0].recorded_at + i64::from(DEFAULT_RETENTION_DAYS) * DAY_MS;
        let request = PruneRequest {
            batch_entries: 4,
            ..PruneRequest::new(now, DEFAULT_RETENTION_DAYS)
        };

        let dry = prune(
            &node,
            &PruneRequest {
                dry_run: true,
                ..request.clone()
            },
        )
        .unwrap();
        assert_eq!(
            dry,
            PruneOutcome::WouldPrune {
                from_seq: 0,
                below_seq: 6,
                unfinished: false
            }
        );
        assert_eq!(node.store().count(&Filter::default()).unwrap(), 11);

        // A crash after the first batch: the intent is persisted, four entries are gone.
        let cut = prune(
            &node,
            &PruneRequest {
                max_batches: Some(1),
                ..request.clone()
            },
        )
        .unwrap();
        assert_eq!(
            cut,
            PruneOutcome::Interrupted {
                below_seq: 6,
                deleted: 4
            }
        );
        // Recorded first, then anchored, then deleted.
        assert_eq!(pruned_events(&node), 1);
        // Verification already starts from the anchor.
        let f = node.files();
        let outcome = verify_store(
            &**node.store(),
            f.seal_key(),
            &f.verifier(),
            f.node_id(),
            None,
        )
        .unwrap();
        assert!(outcome.is_intact(), "{outcome:?}");

        let done = prune(&node, &request).unwrap();
        assert_eq!(
            done,
            PruneOutcome::Pruned {
                from_seq: 0,
                below_seq: 6,
                count: 6,
                event_seq: 11,
                resumed: true
            }
        );
        assert_eq!(
            prune(&node, &request).unwrap(),
            PruneOutcome::Nothing { kept_from: 6 }
        );
        assert_eq!(pruned_events(&node), 1);
        let mut seqs = Vec::new();
        node.store()
            .scan(&Filter::default(), Order::Ascending, None, None, &mut |e| {
                seqs.push(e.event.seq);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(seqs, (6..12).collect::<Vec<_>>());
        let event = entry_at(&node, 11).unwrap().unwrap();
        assert_eq!(event.event.action, PRUNED_ACTION);
        assert_eq!(event.event.actor.kind, evident_core::ActorKind::System);
        let context: serde_json::Value =
            serde_json::from_str(event.event.context.as_str()).unwrap();
        assert_eq!(context["from_seq"], 0);
        assert_eq!(context["to_seq"], 6);
        assert_eq!(context["count"], 6);
        assert_eq!(context["anchor"]["seq"], 5);
        assert_eq!(context["anchor"]["hash"], old[5].hash.to_hex());
        assert!(context["checkpoint"]["size"].as_u64().unwrap() >= 6);

        // Verification from the anchor.
        match verify_store(
            &**node.store(),
            f.seal_key(),
            &f.verifier(),
            f.node_id(),
            None,
        )
        .unwrap()
        {
            VerifyOutcome::Intact(report) => {
                assert_eq!(report.first_seq, Some(6));
                assert_eq!(report.entries, 6);
                assert_eq!(report.size, 12);
            }
            broken => panic!("{broken:?}"),
        }

        // Proofs: inclusion of a kept entry, consistency from the checkpoint before pruning.
        let after = node.sequencer().force_checkpoint_blocking().unwrap();
        let store = node.store();
        let plan = merkle::inclusion_plan(8, after.size).unwrap();
        let proof = plan
            .assemble(&store.read_nodes(plan.nodes()).unwrap())
            .unwrap();
        let leaf = entry_at(&node, 8).unwrap().unwrap().leaf_hash();
        merkle::verify_inclusion(&leaf, 8, after.size, &proof, &after.root).unwrap();
        let plan = merkle::consistency_plan(before.size, after.size).unwrap();
        let proof = plan
            .assemble(&store.read_nodes(plan.nodes()).unwrap())
            .unwrap();
        merkle::verify_consistency(before.size, &before.root, after.size, &after.root, &proof)
            .unwrap();

        // An export of the kept log (its first run starts at the anchor) verifies offline.
        let request = BundleRequest {
            node_id: f.node_id().to_owned(),
            checkpoint: after,
            filter: Filter::default(),
            query: serde_json::json!({}),
            exported_at: 1_700_000_000_000,
            limit: None,
            consistency_from: Some(before.size),
            signer: f.signer().clone(),
        };
        let mut out = Vec::new();
        write_bundle(&**store, &request, &mut out).unwrap();
        let mut v = ExportVerifier::new(f.verifier(), None);
        for line in std::str::from_utf8(&out).unwrap().lines() {
            v.push_line(line.as_bytes()).unwrap();
        }
        let report = v.finish().unwrap();
        assert_eq!(report.entries, 6);

        // The next window only moves forward; more entries keep the chain.
        append(&node, 2);
        let outcome = verify_store(
            &**node.store(),
            f.seal_key(),
            &f.verifier(),
            f.node_id(),
            Some(0),
        )
        .unwrap();
        assert!(outcome.is_intact(), "{outcome:?}");
    }

    /// A crash after the event was appended but before the anchor was stored: the next run
    /// adopts the recorded prune and finishes it without writing a second event.
    #[test]
    fn a_crash_after_the_event_does_not_record_the_prune_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, faulty) = faulty_node(test_config(tmp.path()));
        let old = append(&node, 3);
        while crate::now_ms() <= old[2].recorded_at {
            std::thread::yield_now();
        }
        let kept = append(&node, 2);
        let request =
            PruneRequest::new(kept[0].recorded_at + 100 * DAY_MS, MIN_RETENTION_DAYS + 10);
        faulty
            .fail_begin_prune
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(prune(&node, &request).is_err());
        assert_eq!(pruned_events(&node), 1);
        assert_eq!(node.store().prune_anchor().unwrap(), None);
        assert_eq!(node.store().count(&Filter::default()).unwrap(), 6);
        faulty
            .fail_begin_prune
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            prune(&node, &request).unwrap(),
            PruneOutcome::Pruned {
                from_seq: 0,
                below_seq: 3,
                count: 3,
                event_seq: 5,
                resumed: true
            }
        );
        assert_eq!(pruned_events(&node), 1);
        assert_eq!(node.store().prune_anchor().unwrap().unwrap().event_seq, 5);
        assert_eq!(node.store().count(&Filter::default()).unwrap(), 3);
    }
}
