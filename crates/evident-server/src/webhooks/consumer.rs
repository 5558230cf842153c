//! One webhook endpoint as a consumer of the log: it runs the rules over each committed
//! entry (threshold windows kept in the cursor's state), and for each rule that fires POSTs
//! a signed message carrying the event(s), their inclusion proofs and the signed checkpoint
//! (forcing a checkpoint when none covers the event yet). The cursor only moves past an
//! entry once its alerts are delivered, so an alert survives a crash or an outage; the
//! `webhook-id` is derived from node, entry and rule, so a re-delivery carries the same id.
//! Node conditions (read-only, dead-man) are checked on every tick.

use super::payload::{self, Alert};
use super::sign::{Secret, webhook_id};
use super::{
    DISABLED_ACTION, EndpointCell, FAILING_ACTION, KIND, RECOVERED_ACTION, SUMMARY_ACTION,
    WebhookConfig,
};
use crate::alerts::{self, Fired, Rule, Undo, Windows};
use crate::audit::{AuditActor, AuditEvent, RequestInfo};
use crate::consumers::{Consumer, ConsumerContext, DeliveryError, StartAt};
use crate::metrics::WebhookLabels;
use evident_core::SealedEntry;
use evident_core::event::Millis;
use evident_store::{Filter, Order, StoreError, StoredCheckpoint};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What is kept with the cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct Saved {
    windows: Windows,
    /// The open failure incident: since when, and its attempts.
    failing_since: Option<Millis>,
    failing_attempts: u64,
    disabled_at: Option<Millis>,
    /// The read-only incident alerted (when its damage was found).
    read_only_alerted: Option<Millis>,
    /// The dead-man incident alerted (the size of the checkpoint that stopped advancing).
    dead_man_alerted: Option<u64>,
    last_summary_at: Option<Millis>,
}

/// A webhook endpoint (consumer kind `webhook`).
pub struct WebhookConsumer {
    config: WebhookConfig,
    secret: Secret,
    client: reqwest::Client,
    cell: Arc<Mutex<EndpointCell>>,
    saved: Saved,
    /// Attempts delivered and failed since the last summary event.
    since_summary: (u64, u64),
}

/// Why an alert was not delivered.
enum SendError {
    /// The endpoint failed; the message says how.
    Endpoint(String),
    /// Reading the log or signing a checkpoint failed.
    Node(DeliveryError),
}

fn system(event: AuditEvent) -> evident_core::EventInput {
    event.into_input(&AuditActor::System("evident"), &RequestInfo::default())
}

impl WebhookConsumer {
    pub(super) fn new(
        config: WebhookConfig,
        cell: Arc<Mutex<EndpointCell>>,
    ) -> Result<WebhookConsumer, String> {
        let secret = Secret::parse(&config.secret)?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("evident/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(WebhookConsumer {
            config,
            secret,
            client,
            cell,
            saved: Saved::default(),
            since_summary: (0, 0),
        })
    }

    fn cell(&self) -> std::sync::MutexGuard<'_, EndpointCell> {
        self.cell.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether rule `name` is delivered here.
    fn selects(&self, name: &str) -> bool {
        self.config.rules.is_empty() || self.config.rules.iter().any(|r| r == name)
    }

    fn event(
        &self,
        action: &'static str,
        outcome: &'static str,
        severity: &'static str,
    ) -> AuditEvent {
        AuditEvent::new(
            action,
            outcome,
            severity,
            "webhook",
            self.config.name.clone(),
        )
        .with("url", self.config.display_url())
    }

    /// Resumes a disabled endpoint when an owner asked for it.
    fn take_enable_request(&mut self) {
        let requested = std::mem::take(&mut self.cell().enable_requested);
        if requested && self.saved.disabled_at.is_some() {
            self.saved.disabled_at = None;
            self.saved.failing_since = None;
            self.saved.failing_attempts = 0;
            self.cell().stats.disabled_at = None;
            self.cell().stats.failing_since = None;
        }
    }

    /// POSTs one signed message.
    async fn post(
        &mut self,
        ctx: &ConsumerContext,
        id: &str,
        body: Vec<u8>,
    ) -> Result<(), SendError> {
        let now = ctx.now();
        let timestamp = now.div_euclid(1000);
        let mut signature = self.secret.sign(id, timestamp, &body);
        if self.config.sign_ed25519 {
            if let Some(v1a) =
                super::sign::sign_ed25519(ctx.state().node().files().signer(), id, timestamp, &body)
            {
                signature.push(' ');
                signature.push_str(&v1a);
            }
        }
        let sent = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut gone = false;
        let outcome = match sent {
            Ok(response) if response.status().is_success() => {
                Ok(format!("HTTP {}", response.status().as_u16()))
            }
            Ok(response) => {
                gone = response.status().as_u16() == super::GONE;
                Err(format!("HTTP {}", response.status().as_u16()))
            }
            Err(e) => Err(describe(&e)),
        };
        let delivered = outcome.is_ok();
        ctx.state()
            .node()
            .metrics()
            .webhook_attempts
            .get_or_create(&WebhookLabels {
                endpoint: self.config.name.clone(),
                outcome: if delivered { "delivered" } else { "failed" }.to_owned(),
            })
            .inc();
        {
            let mut cell = self.cell();
            let stats = &mut cell.stats;
            stats.attempts += 1;
            if delivered {
                stats.delivered += 1;
            } else {
                stats.failed += 1;
            }
            stats.last_attempt_at = Some(now);
            stats.last_outcome = Some(match &outcome {
                Ok(m) | Err(m) => m.clone(),
            });
            stats.last_webhook_id = Some(id.to_owned());
        }
        if delivered {
            self.since_summary.0 += 1;
        } else {
            self.since_summary.1 += 1;
        }
        match outcome {
            Ok(_) => {
                if let Some(since) = self.saved.failing_since.take() {
                    let attempts = std::mem::take(&mut self.saved.failing_attempts);
                    self.cell().stats.failing_since = None;
                    let event = self
                        .event(RECOVERED_ACTION, "success", "info")
                        .with("failing_since", since)
                        .with("failed_attempts", attempts);
                    ctx.record(vec![system(event)]).await;
                }
                Ok(())
            }
            Err(message) => {
                if gone {
                    // "410 Gone": the receiver wants no more; disabled now, not in a day.
                    self.saved.failing_since.get_or_insert(now);
                    self.disable(ctx, &message).await;
                }
                Err(SendError::Endpoint(message))
            }
        }
    }

    async fn disable(&mut self, ctx: &ConsumerContext, message: &str) {
        if self.saved.disabled_at.is_some() {
            return;
        }
        let now = ctx.now();
        self.saved.disabled_at = Some(now);
        self.cell().stats.disabled_at = Some(now);
        tracing::error!(endpoint = %self.config.name, error = message, "webhook endpoint disabled");
        let event = self
            .event(DISABLED_ACTION, "failure", "error")
            .with("failing_since", self.saved.failing_since)
            .with("failed_attempts", self.saved.failing_attempts)
            .with("error", message);
        ctx.record(vec![system(event)]).await;
    }

    /// Counts a failure; opens the incident (one event) or, past `disable_after_ms`,
    /// disables the endpoint (one event).
    async fn failure(&mut self, ctx: &ConsumerContext, message: &str) {
        let now = ctx.now();
        self.saved.failing_attempts += 1;
        let since = match self.saved.failing_since {
            Some(since) => since,
            None => {
                self.saved.failing_since = Some(now);
                self.cell().stats.failing_since = Some(now);
                let event = self
                    .event(FAILING_ACTION, "failure", "warning")
                    .with("error", message);
                ctx.record(vec![system(event)]).await;
                now
            }
        };
        let limit = Millis::try_from(self.config.disable_after_ms).unwrap_or(Millis::MAX);
        if now.saturating_sub(since) >= limit {
            self.disable(ctx, message).await;
        }
    }

    /// A checkpoint whose tree holds entry `seq`: the latest signed one, or one signed now;
    /// `None` when the node serves a damaged log read-only and signs nothing (the alert then
    /// goes out unproven: it matters most exactly then).
    async fn checkpoint_covering(
        ctx: &ConsumerContext,
        seq: u64,
    ) -> Result<Option<StoredCheckpoint>, DeliveryError> {
        if let Some(cp) = ctx.latest_checkpoint() {
            if cp.size > seq {
                return Ok(Some(cp));
            }
        }
        let sequencer = ctx.state().node().sequencer();
        match sequencer.force_checkpoint().await {
            Ok(cp) => Ok(Some(cp)),
            Err(_) if sequencer.read_only_problem().is_some() => Ok(None),
            Err(e) => Err(DeliveryError::Store(StoreError::Backend(format!(
                "cannot sign a checkpoint covering entry {seq}: {e}"
            )))),
        }
    }

    async fn send_fired(
        &mut self,
        ctx: &ConsumerContext,
        rule: &Rule,
        fired: &Fired,
    ) -> Result<(), SendError> {
        let cp = Self::checkpoint_covering(ctx, fired.seq)
            .await
            .map_err(SendError::Node)?;
        let seqs = match &fired.window {
            Some(w) => w.seqs.clone(),
            None => vec![fired.seq],
        };
        let store = ctx.store().clone();
        let proof_cp = cp.clone();
        let entries =
            tokio::task::spawn_blocking(move || payload::prove(&*store, &seqs, proof_cp.as_ref()))
                .await
                .map_err(|e| {
                    SendError::Node(DeliveryError::Store(StoreError::Backend(e.to_string())))
                })?
                .map_err(|e| SendError::Node(e.into()))?;
        let alert = Alert::Events {
            fired,
            rule,
            entries,
            checkpoint: cp,
        };
        let node_id = ctx.node_id().to_owned();
        let vkey = ctx.state().node().files().verifier().to_vkey_string();
        let body = payload::body(self.config.template, &alert, &node_id, &vkey);
        let id = webhook_id(&node_id, &fired.seq.to_string(), &rule.name);
        self.post(ctx, &id, body).await
    }

    async fn send_condition(
        &mut self,
        ctx: &ConsumerContext,
        rule: &str,
        description: &str,
        since: Millis,
        detail: serde_json::Value,
    ) -> Result<(), SendError> {
        let alert = Alert::Condition {
            rule,
            description,
            since,
            detail,
        };
        let node_id = ctx.node_id().to_owned();
        let vkey = ctx.state().node().files().verifier().to_vkey_string();
        let body = payload::body(self.config.template, &alert, &node_id, &vkey);
        let id = webhook_id(&node_id, &format!("{rule}@{since}"), rule);
        self.post(ctx, &id, body).await
    }

    /// Turns a send error into the runner's error, counting an endpoint failure.
    async fn failed(&mut self, ctx: &ConsumerContext, error: SendError) -> DeliveryError {
        match error {
            SendError::Endpoint(message) => {
                self.failure(ctx, &message).await;
                DeliveryError::destination(format!("{}: {message}", self.config.display_url()))
            }
            SendError::Node(e) => e,
        }
    }

    /// The read-only and dead-man conditions, alerted once per incident.
    async fn check_conditions(&mut self, ctx: &ConsumerContext) -> Result<(), DeliveryError> {
        let rules = ctx.state().alerts().rules();
        if !rules.builtin_on() || self.saved.disabled_at.is_some() {
            return Ok(());
        }
        if self.selects(alerts::BUILTIN_READ_ONLY) {
            if let Some(damage) = ctx.state().node().sequencer().damage() {
                if self.saved.read_only_alerted != Some(damage.detected_at) {
                    let detail = serde_json::to_value(&damage).unwrap_or_default();
                    let sent = self
                        .send_condition(
                            ctx,
                            alerts::BUILTIN_READ_ONLY,
                            "The node serves its log read-only: it found damage",
                            damage.detected_at,
                            detail,
                        )
                        .await;
                    if let Err(e) = sent {
                        return Err(self.failed(ctx, e).await);
                    }
                    self.saved.read_only_alerted = Some(damage.detected_at);
                }
            }
        }
        if self.selects(alerts::BUILTIN_DEAD_MAN) {
            let Some(cp) = ctx.latest_checkpoint() else {
                return Ok(());
            };
            let size = ctx.log_size();
            let after = Millis::try_from(rules.dead_man_after_ms()).unwrap_or(Millis::MAX);
            let now = ctx.now();
            if size > cp.size
                && now.saturating_sub(cp.created_at) >= after
                && self.saved.dead_man_alerted != Some(cp.size)
            {
                let oldest = oldest_waiting(ctx, cp.size).await?;
                if oldest.is_some_and(|at| dead_man_due(at, now, after)) {
                    let detail = serde_json::json!({
                        "checkpoint_size": cp.size,
                        "checkpoint_signed_at": cp.created_at,
                        "log_size": size,
                        "oldest_waiting_recorded_at": oldest,
                    });
                    let sent = self
                        .send_condition(
                            ctx,
                            alerts::BUILTIN_DEAD_MAN,
                            "Entries keep arriving but no checkpoint is signed",
                            oldest.unwrap_or(now),
                            detail,
                        )
                        .await;
                    if let Err(e) = sent {
                        return Err(self.failed(ctx, e).await);
                    }
                    self.saved.dead_man_alerted = Some(cp.size);
                }
            }
        }
        Ok(())
    }

    /// One summary event per `summary_every_ms`, only when there were attempts.
    async fn summarise(&mut self, ctx: &ConsumerContext) {
        let now = ctx.now();
        let every = Millis::try_from(self.config.summary_every_ms).unwrap_or(Millis::MAX);
        let Some(last) = self.saved.last_summary_at else {
            self.saved.last_summary_at = Some(now);
            return;
        };
        if now.saturating_sub(last) < every {
            return;
        }
        let (delivered, failed) = std::mem::take(&mut self.since_summary);
        self.saved.last_summary_at = Some(now);
        if delivered + failed == 0 {
            return;
        }
        let event = self
            .event(
                SUMMARY_ACTION,
                if failed == 0 { "success" } else { "failure" },
                "info",
            )
            .with("since", last)
            .with("delivered", delivered)
            .with("failed", failed);
        ctx.record(vec![system(event)]).await;
    }
}

/// Whether entries waiting since `oldest_waiting` (recording time) without a checkpoint
/// are a dead-man incident at `now`.
pub(crate) fn dead_man_due(oldest_waiting: Millis, now: Millis, after: Millis) -> bool {
    now.saturating_sub(oldest_waiting) >= after
}

/// The recording time of entry `seq` (the oldest one no checkpoint covers).
async fn oldest_waiting(ctx: &ConsumerContext, seq: u64) -> Result<Option<Millis>, DeliveryError> {
    let store = ctx.store().clone();
    let found = tokio::task::spawn_blocking(move || {
        let mut found = None;
        let filter = Filter {
            from_seq: Some(seq),
            to_seq: Some(seq + 1),
            ..Filter::default()
        };
        store
            .scan(&filter, Order::Ascending, None, Some(1), &mut |entry| {
                found = Some(entry.event.recorded_at);
                ControlFlow::Break(())
            })
            .map(|_| found)
    })
    .await
    .map_err(|e| DeliveryError::Store(StoreError::Backend(e.to_string())))??;
    Ok(found)
}

/// A transport error in a few words (connection refused, timed out …).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        message
    }
}

impl Consumer for WebhookConsumer {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    /// Alerts are about what happens from the endpoint's first start on.
    fn start_at(&self) -> StartAt {
        StartAt::Now
    }

    fn restore(&mut self, state: Option<&str>) -> Result<(), DeliveryError> {
        if let Some(text) = state {
            self.saved = serde_json::from_str(text).map_err(|e| {
                DeliveryError::Store(StoreError::Corrupt {
                    seq: None,
                    problem: format!("saved state of webhook {}: {e}", self.config.name),
                })
            })?;
        }
        let mut cell = self.cell();
        cell.stats.failing_since = self.saved.failing_since;
        cell.stats.disabled_at = self.saved.disabled_at;
        Ok(())
    }

    async fn deliver(
        &mut self,
        ctx: &ConsumerContext,
        batch: &[SealedEntry],
    ) -> Result<usize, DeliveryError> {
        self.take_enable_request();
        let rules = ctx.state().alerts().rules();
        let builtin: Vec<Arc<Rule>> = rules
            .builtin()
            .iter()
            .filter(|r| self.selects(&r.name))
            .cloned()
            .collect();
        let user: Vec<Arc<Rule>> = rules
            .user_rules()
            .into_iter()
            .filter(|r| self.selects(&r.name))
            .collect();
        let names: Vec<&str> = user.iter().map(|r| r.name.as_str()).collect();
        self.saved.windows.keep_only(&names);
        for (i, entry) in batch.iter().enumerate() {
            let event = &entry.event;
            let mut fired: Vec<(Arc<Rule>, Fired)> = Vec::new();
            // The built-in rules are one alert per entry: the most specific one.
            if let Some(rule) = builtin.iter().find(|r| r.matches(event)) {
                fired.push((
                    rule.clone(),
                    Fired {
                        rule: rule.name.clone(),
                        seq: event.seq,
                        window: None,
                    },
                ));
            }
            let matching: Vec<&Arc<Rule>> = user.iter().filter(|r| r.matches(event)).collect();
            if fired.is_empty() && matching.is_empty() {
                continue;
            }
            // Counted in place; taken back if an alert of this entry cannot be delivered.
            let mut undo = Undo::default();
            for rule in matching {
                if let Some(f) = self.saved.windows.observe_undoable(rule, event, &mut undo) {
                    fired.push((rule.clone(), f));
                }
            }
            if self.saved.disabled_at.is_some() {
                self.cell().stats.skipped_while_disabled += fired.len() as u64;
            } else {
                for (rule, f) in &fired {
                    if let Err(e) = self.send_fired(ctx, rule, f).await {
                        self.saved.windows.undo(undo);
                        let error = self.failed(ctx, e).await;
                        // What went before is delivered; this entry comes again.
                        return if i > 0 || self.saved.disabled_at.is_some() {
                            Ok(i)
                        } else {
                            Err(error)
                        };
                    }
                }
            }
        }
        Ok(batch.len())
    }

    async fn tick(&mut self, ctx: &ConsumerContext) -> Result<(), DeliveryError> {
        self.take_enable_request();
        self.summarise(ctx).await;
        self.check_conditions(ctx).await
    }

    fn tick_every(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn save_state(&self) -> Option<String> {
        serde_json::to_string(&self.saved).ok()
    }
}
