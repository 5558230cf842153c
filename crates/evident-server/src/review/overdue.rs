//! The overdue alert of a four-eyes rule: a consumer of the committed log (kind `four_eyes`,
//! one per rule) that keeps the rule's confirmed events still waiting for a confirmation (its
//! state, saved with the cursor) and, when one passes its deadline unconfirmed, appends one
//! `evident.review.four_eyes_overdue` event naming the rule and the event's seq and hash. The
//! event is CRITICAL, so that the alert rules' built-in "any critical event" rule sends it to
//! a person. Exactly once: before appending, the log is searched for an earlier alert of the
//! same event (written before a crash that lost the state saying so).

use crate::audit::{AuditActor, AuditEvent, RequestInfo};
use crate::consumers::{self, Consumer, ConsumerContext, ConsumerSettings, DeliveryError, StartAt};
use crate::http::AppState;
use evident_core::event::{Event, Millis, format_rfc3339_millis};
use evident_core::four_eyes::{FourEyesRule, PairStatus, reference_of};
use evident_core::{Hash, SealedEntry};
use evident_store::{ActionFilter, Filter, Order, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

/// The action of the overdue alert event.
pub const OVERDUE_ACTION: &str = "evident.review.four_eyes_overdue";

/// A confirmed event still waiting, as kept in the consumer's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Waiting {
    hash: String,
    /// The stored event JSON (what judging a confirmation of it needs).
    event: serde_json::Value,
}

/// The state saved with the cursor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SavedState {
    /// The seq after the last entry delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_seq: Option<u64>,
    #[serde(default)]
    waiting: BTreeMap<u64, Waiting>,
}

/// The overdue checker of one rule.
pub struct OverdueChecker {
    rule: FourEyesRule,
    state: SavedState,
}

impl OverdueChecker {
    pub fn new(rule: FourEyesRule) -> OverdueChecker {
        OverdueChecker {
            rule,
            state: SavedState::default(),
        }
    }

    fn waiting_event(&self, seq: u64) -> Option<(Hash, Event)> {
        let w = self.state.waiting.get(&seq)?;
        let hash = Hash::from_hex(&w.hash).ok()?;
        let event = Event::from_json(&w.event).ok()?;
        Some((hash, event))
    }

    /// Takes one entry into account (after the alerts due before it were sent).
    fn observe(&mut self, entry: &SealedEntry) {
        let event = &entry.event;
        if event.action == OVERDUE_ACTION {
            // An alert already in the log (ours, before a restart): it is not sent again.
            if let Some(seq) = alerted_seq(event, &self.rule.name) {
                self.state.waiting.remove(&seq);
            }
            return;
        }
        if self.rule.is_confirmation_kind(event) {
            let Ok(reference) = reference_of(event) else {
                return;
            };
            let Some((hash, confirmed)) = self.waiting_event(reference.seq) else {
                return;
            };
            // Only a confirmation that the report would call confirmed ends the wait: a
            // self-confirmation or one of the wrong role leaves the event unconfirmed.
            if hash == reference.hash
                && confirmed.tenant == event.tenant
                && self.rule.judge(&confirmed, event) == PairStatus::Confirmed
            {
                self.state.waiting.remove(&reference.seq);
            }
        } else if self.rule.is_confirmed_kind(event) {
            if let Ok(json) = serde_json::to_value(event) {
                self.state.waiting.insert(
                    event.seq,
                    Waiting {
                        hash: entry.hash.to_hex(),
                        event: json,
                    },
                );
            }
        }
    }

    /// The waiting events whose deadline is before `now`.
    fn due(&self, now: Millis) -> Vec<u64> {
        self.state
            .waiting
            .keys()
            .copied()
            .filter(|seq| {
                self.waiting_event(*seq)
                    .is_none_or(|(_, e)| self.rule.deadline(e.recorded_at) < now)
            })
            .collect()
    }

    /// Appends the alert of each waiting event in `seqs` that has none in the log yet, and
    /// stops waiting for them.
    async fn alert(&mut self, ctx: &ConsumerContext, seqs: Vec<u64>) -> Result<(), DeliveryError> {
        for seq in seqs {
            let Some((hash, event)) = self.waiting_event(seq) else {
                self.state.waiting.remove(&seq);
                continue;
            };
            if !already_alerted(ctx, &self.rule.name, seq).await? {
                let deadline = self.rule.deadline(event.recorded_at);
                let alert = AuditEvent::new(
                    OVERDUE_ACTION,
                    "failure",
                    "critical",
                    "entry",
                    seq.to_string(),
                )
                .with("rule", self.rule.name.clone())
                .with("seq", seq)
                .with("hash", hash.to_hex())
                .with("confirmed_action", event.action.clone())
                .with("actor", event.actor.id.clone())
                .with("recorded_at", format_rfc3339_millis(event.recorded_at))
                .with("deadline", format_rfc3339_millis(deadline));
                let mut input =
                    alert.into_input(&AuditActor::System("evident"), &RequestInfo::default());
                // In the confirmed event's tenant, where its readers see it.
                input.tenant = event.tenant.clone();
                ctx.state()
                    .node()
                    .sequencer()
                    .append(vec![input])
                    .await
                    .map_err(|e| DeliveryError::destination(format!("appending the alert: {e}")))?;
                tracing::warn!(rule = %self.rule.name, seq, "four-eyes confirmation overdue");
            }
            self.state.waiting.remove(&seq);
        }
        Ok(())
    }
}

/// The seq an overdue alert of rule `rule` names.
fn alerted_seq(event: &Event, rule: &str) -> Option<u64> {
    let context: serde_json::Value = serde_json::from_str(event.context.as_str()).ok()?;
    if context.get("rule")?.as_str()? != rule {
        return None;
    }
    context.get("seq")?.as_u64()
}

/// Whether the log holds an overdue alert of `rule` for entry `seq` already.
async fn already_alerted(
    ctx: &ConsumerContext,
    rule: &str,
    seq: u64,
) -> Result<bool, DeliveryError> {
    let store = ctx.store().clone();
    let rule = rule.to_owned();
    let found = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
        let filter = Filter {
            action: Some(ActionFilter::Exact(OVERDUE_ACTION.to_owned())),
            from_seq: Some(seq),
            ..Filter::default()
        };
        let mut found = false;
        store.scan(&filter, Order::Ascending, None, None, &mut |entry| {
            if alerted_seq(&entry.event, &rule) == Some(seq) {
                found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        Ok(found)
    })
    .await
    .map_err(|e| DeliveryError::destination(format!("store task failed: {e}")))??;
    Ok(found)
}

impl Consumer for OverdueChecker {
    fn kind(&self) -> &'static str {
        "four_eyes"
    }

    fn name(&self) -> &str {
        &self.rule.name
    }

    /// A new rule watches what happens from now on; the report covers the history.
    fn start_at(&self) -> StartAt {
        StartAt::Now
    }

    fn restore(&mut self, state: Option<&str>) -> Result<(), DeliveryError> {
        self.state = match state {
            None => SavedState::default(),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                DeliveryError::destination(format!(
                    "the saved state of four-eyes rule {:?} is not valid: {e}",
                    self.rule.name
                ))
            })?,
        };
        Ok(())
    }

    async fn deliver(
        &mut self,
        ctx: &ConsumerContext,
        batch: &[SealedEntry],
    ) -> Result<usize, DeliveryError> {
        for (i, entry) in batch.iter().enumerate() {
            // Every entry before this one has been seen: a waiting event whose deadline lies
            // before it was not confirmed in time.
            let due = self.due(entry.event.recorded_at);
            if !due.is_empty() {
                if let Err(e) = self.alert(ctx, due).await {
                    // The entries before this one are done; this one comes again.
                    return if i == 0 { Err(e) } else { Ok(i) };
                }
            }
            self.observe(entry);
            self.state.next_seq = Some(entry.event.seq + 1);
        }
        Ok(batch.len())
    }

    async fn tick(&mut self, ctx: &ConsumerContext) -> Result<(), DeliveryError> {
        // Only when every committed entry has been seen: a confirmation may be among the rest.
        let caught_up = self.state.next_seq.is_some_and(|n| n >= ctx.log_size());
        if caught_up {
            let due = self.due(ctx.now());
            if !due.is_empty() {
                self.alert(ctx, due).await?;
            }
        }
        Ok(())
    }

    fn tick_every(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn save_state(&self) -> Option<String> {
        serde_json::to_string(&self.state).ok()
    }
}

/// Starts the overdue checker of every rule of the configuration.
pub fn spawn_overdue_checkers(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let rules = match super::rules(&state.node().config().four_eyes) {
        Ok(rules) => rules,
        // Checked when the configuration was loaded; never here.
        Err(e) => {
            tracing::error!(error = %e, "four-eyes rules not started");
            return Vec::new();
        }
    };
    rules
        .into_iter()
        .map(|rule| {
            consumers::spawn(
                state,
                OverdueChecker::new(rule),
                ConsumerSettings::default(),
            )
        })
        .collect()
}
