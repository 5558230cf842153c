//! The loop that drives one consumer: load its cursor, wait for commits (the sequencer's
//! watch wakes it within moments of each one), read the next batch from the store, hand it
//! over, move and save the cursor; on failure retry the same entries after an exponential
//! backoff. It also keeps the consumer's status and metrics, and writes one warning event
//! when the consumer starts lagging (`evident.consumer.lagging`) and one when it has caught
//! up again (`evident.consumer.caught_up`): once per incident, never per retry.

use super::cursor::{self, Position, Read, SavedState};
use super::status::{self, ConsumerStatus};
use super::{Consumer, ConsumerContext, ConsumerSettings, DeliveryError, StartAt};
use crate::audit::{AuditActor, AuditEvent, RequestInfo};
use crate::http::AppState;
use evident_core::event::Millis;
use evident_store::{Store, StoreError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The warning event of a lag incident's start.
pub const LAGGING_ACTION: &str = "evident.consumer.lagging";
/// The event of a lag incident's end.
pub const RECOVERED_ACTION: &str = "evident.consumer.caught_up";

/// Starts `consumer` on its own task, from its stored cursor (or where
/// [`Consumer::start_at`] says for a new one). The task runs until aborted.
pub fn spawn<C: Consumer>(
    state: &AppState,
    consumer: C,
    settings: ConsumerSettings,
) -> JoinHandle<()> {
    let cell = state.consumers().register(consumer.kind(), consumer.name());
    let runner = Runner {
        key: format!("{}:{}", consumer.kind(), consumer.name()),
        kind: consumer.kind(),
        name: consumer.name().to_owned(),
        ctx: ConsumerContext::new(state.clone()),
        settings,
        cell,
    };
    tokio::spawn(runner.run(consumer))
}

/// Everything of a running consumer but the consumer itself (which is only `Send`: it is
/// moved into the task and borrowed mutably there, never shared).
struct Runner {
    key: String,
    kind: &'static str,
    name: String,
    ctx: ConsumerContext,
    settings: ConsumerSettings,
    cell: Arc<Mutex<ConsumerStatus>>,
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
}

impl Runner {
    fn update(&self, f: impl FnOnce(&mut ConsumerStatus)) {
        status::update(&self.cell, self.ctx.state().node().metrics(), f);
    }

    fn failed(&self, error: &DeliveryError) {
        let now = self.ctx.now();
        let message = error.to_string();
        tracing::warn!(consumer = %self.key, error = %message, "consumer delivery failed; retrying");
        self.update(|s| {
            s.failures += 1;
            s.last_error = Some(message);
            s.last_error_at = Some(now);
            s.retrying = true;
        });
    }

    /// The stored position, or the starting one of a new consumer (saved at once, so that
    /// "from now on" means from the time it was first started). Retries until the store
    /// answers.
    async fn start<C: Consumer>(&self, consumer: &mut C, backoff: &mut Backoff) -> Position {
        loop {
            match self.load_or_create(consumer).await {
                Ok(position) => return position,
                Err(e) => {
                    self.failed(&e);
                    backoff.wait().await;
                }
            }
        }
    }

    async fn load_or_create<C: Consumer>(
        &self,
        consumer: &mut C,
    ) -> Result<Position, DeliveryError> {
        let key = self.key.clone();
        let stored = blocking(self.ctx.store(), move |s| cursor::load(s, &key)).await?;
        let position = match stored {
            Some(position) => position,
            None => {
                let next_seq = match consumer.start_at() {
                    StartAt::Oldest => blocking(self.ctx.store(), cursor::first_kept_seq).await?,
                    StartAt::Now => self.ctx.log_size(),
                };
                let position = Position {
                    next_seq,
                    saved: SavedState::default(),
                };
                self.save(&position).await?;
                position
            }
        };
        consumer.restore(position.saved.consumer.as_deref())?;
        Ok(position)
    }

    async fn save(&self, position: &Position) -> Result<(), DeliveryError> {
        let key = self.key.clone();
        let position = position.clone();
        let now = self.ctx.now();
        blocking(self.ctx.store(), move |s| {
            cursor::save(s, &key, &position, now)
        })
        .await?;
        Ok(())
    }

    async fn run<C: Consumer>(self, mut consumer: C) {
        let mut backoff = Backoff::new(&self.settings);
        let mut position = self.start(&mut consumer, &mut backoff).await;
        let mut commits = self.ctx.state().node().sequencer().subscribe();
        let mut checkpoint_size = commits.borrow().checkpoint_size;
        let mut next_tick = Instant::now() + consumer.tick_every();
        let mut last_save = Instant::now();
        let mut unsaved = false;
        self.update(|s| {
            s.next_seq = position.next_seq;
            s.lagging_since = position.saved.lagging_since;
        });
        loop {
            let committed = *commits.borrow_and_update();
            // Periodic work: on a new checkpoint and on the timer, also under load.
            if committed.checkpoint_size != checkpoint_size || Instant::now() >= next_tick {
                checkpoint_size = committed.checkpoint_size;
                next_tick = Instant::now() + consumer.tick_every();
                match consumer.tick(&self.ctx).await {
                    Ok(()) => {
                        let state = consumer.save_state();
                        if state != position.saved.consumer {
                            position.saved.consumer = state;
                            unsaved = true;
                        }
                    }
                    Err(e) => self.failed(&e),
                }
            }
            let size = committed.size;
            if position.next_seq < size {
                let max = self.settings.batch_max.max(1);
                let read = self.ctx.read(position.next_seq, size, max).await;
                match read {
                    Ok(Read::Pruned { kept_from }) => {
                        self.skipped_pruned(position.next_seq, kept_from).await;
                        position.next_seq = kept_from;
                        unsaved = true;
                        continue;
                    }
                    Ok(Read::Entries(batch)) => {
                        // The recording time of the oldest undelivered entry.
                        let oldest = batch.first().map(|e| e.event.recorded_at);
                        self.observe_lag(&mut position, size, oldest).await;
                        match consumer.deliver(&self.ctx, &batch).await {
                            Ok(n) => {
                                let n = n.min(batch.len());
                                position.next_seq += n as u64;
                                position.saved.consumer = consumer.save_state();
                                unsaved = true;
                                backoff.reset();
                                let now = self.ctx.now();
                                self.update(|s| {
                                    s.delivered += n as u64;
                                    s.last_delivered_at = Some(now);
                                    s.last_error = None;
                                    s.retrying = false;
                                });
                                if n == 0 {
                                    // A consumer that takes nothing waits for more instead
                                    // of spinning on the same entries.
                                    backoff.wait().await;
                                }
                            }
                            Err(e) => {
                                self.failed(&e);
                                self.observe_lag(&mut position, size, oldest).await;
                                self.save_if_due(&position, &mut unsaved, &mut last_save)
                                    .await;
                                backoff.wait().await;
                                continue;
                            }
                        }
                    }
                    Err(e) => {
                        self.failed(&e.into());
                        backoff.wait().await;
                        continue;
                    }
                }
                // Caught up: saved at once (below); else at most every `save_every`.
                self.save_if_due(&position, &mut unsaved, &mut last_save)
                    .await;
                continue;
            }
            // Caught up: save, then sleep until the next commit or tick.
            self.observe_lag(&mut position, size, None).await;
            if unsaved {
                self.save_now(&position, &mut unsaved, &mut last_save).await;
            }
            tokio::select! {
                changed = commits.changed() => {
                    if changed.is_err() {
                        // The sequencer is gone (shutting down): nothing more will commit.
                        tokio::time::sleep_until(next_tick).await;
                    }
                }
                _ = tokio::time::sleep_until(next_tick) => {}
            }
        }
    }

    async fn save_now(&self, position: &Position, unsaved: &mut bool, last_save: &mut Instant) {
        match self.save(position).await {
            Ok(()) => {
                *unsaved = false;
                *last_save = Instant::now();
            }
            // Not fatal: the entries are delivered; a crash before the next save only
            // delivers them again.
            Err(e) => self.failed(&e),
        }
    }

    async fn save_if_due(&self, position: &Position, unsaved: &mut bool, last_save: &mut Instant) {
        if *unsaved && last_save.elapsed() >= self.settings.save_every {
            self.save_now(position, unsaved, last_save).await;
        }
    }

    /// Updates the lag in the status and opens or closes a lag incident.
    async fn observe_lag(&self, position: &mut Position, size: u64, oldest: Option<Millis>) {
        let lag_events = size.saturating_sub(position.next_seq);
        let now = self.ctx.now();
        let lag_seconds = match oldest {
            Some(at) if lag_events > 0 => (now.saturating_sub(at)).max(0) as f64 / 1000.0,
            _ => 0.0,
        };
        self.update(|s| {
            s.next_seq = position.next_seq;
            s.log_size = size;
            s.lag_events = lag_events;
            s.lag_seconds = lag_seconds;
        });
        let over = self
            .settings
            .lag_warn_seconds
            .is_some_and(|limit| lag_seconds > limit as f64)
            || self
                .settings
                .lag_warn_events
                .is_some_and(|limit| lag_events > limit);
        match position.saved.lagging_since {
            None if over => {
                let event = self.lag_event(
                    LAGGING_ACTION,
                    "failure",
                    "warning",
                    position,
                    lag_events,
                    lag_seconds,
                );
                self.ctx.record(vec![system(event)]).await;
                position.saved.lagging_since = Some(now);
                self.update(|s| s.lagging_since = Some(now));
                // The incident is part of the cursor's state: a restart does not warn again.
                let _ = self.save(position).await;
            }
            Some(since) if lag_events == 0 => {
                let event = self
                    .lag_event(RECOVERED_ACTION, "success", "info", position, 0, 0.0)
                    .with("lagging_since", since);
                self.ctx.record(vec![system(event)]).await;
                position.saved.lagging_since = None;
                self.update(|s| s.lagging_since = None);
                let _ = self.save(position).await;
            }
            _ => {}
        }
    }

    fn lag_event(
        &self,
        action: &'static str,
        outcome: &'static str,
        severity: &'static str,
        position: &Position,
        lag_events: u64,
        lag_seconds: f64,
    ) -> AuditEvent {
        let last_error = self.cell.lock().ok().and_then(|s| s.last_error.clone());
        AuditEvent::new(action, outcome, severity, "consumer", self.key.clone())
            .with("kind", self.kind)
            .with("name", self.name.clone())
            .with("next_seq", position.next_seq)
            .with("lag_events", lag_events)
            .with("lag_seconds", lag_seconds)
            .with("last_error", last_error)
    }

    /// Entries from `from` up to `kept_from` were pruned before this consumer delivered
    /// them: recorded as a warning, so that the gap it leaves at the destination is explained
    /// in the log itself.
    async fn skipped_pruned(&self, from: u64, kept_from: u64) {
        tracing::warn!(consumer = %self.key, from, kept_from, "entries pruned before delivery; skipping them");
        let event = AuditEvent::new(
            "evident.consumer.skipped_pruned",
            "failure",
            "warning",
            "consumer",
            self.key.clone(),
        )
        .with("kind", self.kind)
        .with("name", self.name.clone())
        .with("from_seq", from)
        .with("to_seq", kept_from);
        self.ctx.record(vec![system(event)]).await;
    }
}

/// `event` as the node's own (actor kind `system`, id `evident`).
fn system(event: AuditEvent) -> evident_core::EventInput {
    event.into_input(&AuditActor::System("evident"), &RequestInfo::default())
}

/// Exponential backoff between retries.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(settings: &ConsumerSettings) -> Backoff {
        Backoff {
            min: settings.backoff_min,
            max: settings.backoff_max.max(settings.backoff_min),
            next: settings.backoff_min,
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}
