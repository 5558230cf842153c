//! The background verifier: re-checks the stored log on a schedule, incrementally (the entries,
//! checkpoints and Merkle nodes added since its last pass, every `verify_every_ms`) and in full
//! (every `verify_full_every_ms`), through the one verifier of [`crate::verification`]. Its
//! last result is served on `GET /api/v1/verify/status` and in `/metrics`; a problem found
//! switches the node to read-only ([`crate::guard::Guard::report`]).

use crate::guard::{self, CheckKeys, Damage, DetectedBy};
use crate::node::Node;
use crate::verification::{self, VerifyOutcome};
use evident_core::event::Millis;
use evident_core::verify::Anchor;
use serde::Serialize;
use std::sync::{Mutex, PoisonError};

/// Which pass ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PassKind {
    /// The entries, checkpoints and Merkle nodes added since the last pass.
    Incremental,
    /// The whole log.
    Full,
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PassOutcome {
    /// Everything checked was intact.
    Ok,
    /// A problem was found (see `problem`); the node went read-only.
    Failed,
    /// The pass could not run (the store could not be read); see `error`.
    Error,
}

/// One pass's result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PassResult {
    pub kind: PassKind,
    /// When the pass started and finished, milliseconds since the Unix epoch.
    pub started_at: Millis,
    pub finished_at: Millis,
    /// The entries checked: `[from_seq, to_seq)`.
    pub from_seq: u64,
    pub to_seq: u64,
    pub outcome: PassOutcome,
    /// The first problem found (`failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Damage>,
    /// Why the pass could not run (`error` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    last: Option<PassResult>,
    last_success_at: Option<Millis>,
    passes: u64,
    failures: u64,
    /// Where the next incremental pass starts (`None`: at the verified point).
    anchor: Option<Anchor>,
}

/// The background verifier's state.
#[derive(Debug, Default)]
pub struct SelfCheck {
    inner: Mutex<Inner>,
    /// One pass at a time.
    running: Mutex<()>,
}

/// What `GET /api/v1/verify/status` answers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VerifyStatus {
    /// Whether the node refuses writes because its stored log is damaged.
    pub read_only: bool,
    /// Why (present when `read_only`): the first problem found, its kind, seq and path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<Damage>,
    /// The background verifier's last pass (absent before the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_pass: Option<PassResult>,
    /// When a pass last finished clean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Millis>,
    /// When the last full pass finished clean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_full_pass_at: Option<Millis>,
    /// Passes run, and passes that failed or could not run, since the node started.
    pub passes: u64,
    pub failures: u64,
    /// The schedule: incremental and full passes, milliseconds.
    pub every_ms: u64,
    pub full_every_ms: u64,
}

impl SelfCheck {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The status served on `GET /api/v1/verify/status`.
    pub fn status(&self, node: &Node) -> VerifyStatus {
        let inner = self.inner();
        let damage = node.guard().damage();
        VerifyStatus {
            read_only: damage.is_some(),
            damage,
            last_pass: inner.last.clone(),
            last_success_at: inner.last_success_at,
            last_full_pass_at: node.guard().last_full_pass_at(),
            passes: inner.passes,
            failures: inner.failures,
            every_ms: node.config().verify_every_ms,
            full_every_ms: node.config().verify_full_every_ms,
        }
    }

    /// Whether the next pass is a full one.
    pub fn full_due(&self, node: &Node, now: Millis) -> bool {
        let every = i64::try_from(node.config().verify_full_every_ms).unwrap_or(i64::MAX);
        node.guard()
            .last_full_pass_at()
            .is_none_or(|at| now.saturating_sub(at) >= every)
    }

    /// Runs one pass (blocking) and records its result.
    pub fn run_pass(&self, node: &Node, kind: PassKind) -> PassResult {
        let _one = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let started_at = crate::now_ms();
        let store = &**node.store();
        let files = node.files();
        let keys = CheckKeys {
            seal_key: files.seal_epochs(),
            node_id: files.node_id(),
        };
        let by = DetectedBy::Background;
        let g = node.guard();
        let start = match kind {
            PassKind::Full => Anchor::genesis(),
            PassKind::Incremental => self
                .inner()
                .anchor
                .clone()
                .or_else(|| g.verified())
                .unwrap_or_else(Anchor::genesis),
        };
        let from_seq = start.next_seq;
        let checked: Result<(Option<Damage>, u64, Option<Anchor>), String> = (|| {
            let stored = match guard::stored_checkpoints(store, g, by).map_err(|e| e.to_string())? {
                Ok(stored) => stored,
                Err(damage) => return Ok((Some(damage), from_seq, None)),
            };
            match kind {
                PassKind::Full => {
                    let size = node.sequencer().size();
                    match guard::full_pass(store, &keys, g) {
                        Ok(found) => Ok((found.map(|p| Damage::from_problem(&p, by)), size, None)),
                        Err(verification::VerifyError::Store(e)) => Err(e.to_string()),
                        Err(e) => Ok((Some(guard::damage_of_error(&e, by)), size, None)),
                    }
                }
                PassKind::Incremental => {
                    // Rows gone below where the last pass (or the node) stood.
                    let stored_end = crate::scan::newest_entry(store)
                        .map_err(|e| e.to_string())?
                        .map_or(0, |entry| entry.event.seq.saturating_add(1));
                    if stored_end < start.next_seq {
                        let damage = Damage::new(
                            "truncated",
                            Some(stored_end),
                            format!(
                                "the stored log ends at {stored_end} entries, but {} were \
                                 verified: entries were removed",
                                start.next_seq
                            ),
                            by,
                        );
                        return Ok((Some(damage), stored_end, None));
                    }
                    let mut trusted = g.trusted();
                    trusted.extend(
                        stored
                            .into_iter()
                            .filter(|(s, _)| s.size >= start.next_seq)
                            .map(|(_, c)| c),
                    );
                    let (outcome, position) = verification::verify_from(
                        store,
                        keys.seal_key,
                        keys.node_id,
                        start.clone(),
                        &trusted,
                    )
                    .map_err(|e| e.to_string())?;
                    if let VerifyOutcome::Broken { problem, .. } = outcome {
                        return Ok((
                            Some(Damage::from_problem(&problem, by)),
                            position.next_seq,
                            None,
                        ));
                    }
                    let end = position.next_seq;
                    if let Some(problem) = verification::stored_nodes_problem(store, &start, end)
                        .map_err(|e| e.to_string())?
                    {
                        return Ok((Some(Damage::from_problem(&problem, by)), end, None));
                    }
                    if let Some(problem) =
                        guard::recheck_newest(store, &keys, end, start.next_seq.min(end))
                            .map_err(|e| e.to_string())?
                    {
                        return Ok((Some(Damage::from_problem(&problem, by)), end, None));
                    }
                    Ok((None, end, Some(position)))
                }
            }
        })();
        let finished_at = crate::now_ms();
        let metrics = node.metrics();
        metrics.verify_runs.inc();
        let result = match checked {
            Ok((None, to_seq, anchor)) => {
                if kind == PassKind::Full {
                    if let Err(e) = g.record_full_pass(finished_at) {
                        tracing::warn!(error = %e, "cannot record the full verification pass");
                    }
                }
                let mut inner = self.inner();
                if let Some(anchor) = anchor {
                    inner.anchor = Some(anchor);
                }
                inner.last_success_at = Some(finished_at);
                metrics.verify_last_success.set(finished_at / 1000);
                PassResult {
                    kind,
                    started_at,
                    finished_at,
                    from_seq,
                    to_seq,
                    outcome: PassOutcome::Ok,
                    problem: None,
                    error: None,
                }
            }
            Ok((Some(damage), to_seq, _)) => {
                metrics.verify_failures.inc();
                self.inner().failures += 1;
                g.report(damage.clone());
                PassResult {
                    kind,
                    started_at,
                    finished_at,
                    from_seq,
                    to_seq,
                    outcome: PassOutcome::Failed,
                    problem: Some(damage),
                    error: None,
                }
            }
            Err(error) => {
                metrics.verify_failures.inc();
                self.inner().failures += 1;
                tracing::warn!(error, "the background verifier could not run");
                PassResult {
                    kind,
                    started_at,
                    finished_at,
                    from_seq,
                    to_seq: from_seq,
                    outcome: PassOutcome::Error,
                    problem: None,
                    error: Some(error),
                }
            }
        };
        let mut inner = self.inner();
        inner.passes += 1;
        inner.last = Some(result.clone());
        result
    }
}

/// Runs the background verifier until the task is aborted: a pass every `verify_every_ms`,
/// full when `verify_full_every_ms` has passed since the last full one.
pub async fn run(state: crate::http::AppState) {
    let every = std::time::Duration::from_millis(state.node().config().verify_every_ms);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = state.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let node = state.node();
            let check = node.self_check();
            let kind = if check.full_due(node, crate::now_ms()) {
                PassKind::Full
            } else {
                PassKind::Incremental
            };
            check.run_pass(node, kind)
        })
        .await;
        match ran {
            Ok(result) => tracing::debug!(?result, "background verification pass"),
            Err(e) => tracing::warn!(error = %e, "the background verifier task failed"),
        }
    }
}
