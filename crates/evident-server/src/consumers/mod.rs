//! The one way out of the committed log. Every consumer of committed events (a syslog
//! forwarder, the object-storage publisher, alert rules, webhook endpoints, four-eyes
//! checkers) implements [`Consumer`] and is run by [`spawn`]: the runner reads the log by
//! sequence number from the consumer's durable cursor (a row of the store, see
//! `cursor.rs`), hands the consumer dense, ordered batches, and moves the cursor on after
//! delivery.
//!
//! The log itself is the spool: nothing is copied into a queue that could overflow, a
//! consumer that falls behind never slows an append (it reads on its own task from the
//! store's readers, after the commit), and after a restart or an outage it resumes from its
//! cursor, in order. Delivery is at-least-once: a crash between a delivery and the save of
//! the cursor delivers those entries again, so every message a consumer sends carries the
//! entry's sequence number for the receiver to drop duplicates by.
//!
//! `runner.rs` is the loop (wake-ups on commit, retries with backoff, lag incidents);
//! `status.rs` what operators see (the registry behind `GET /api/v1/consumers` and the
//! `evident_consumer_*` metrics).

mod cursor;
mod runner;
mod status;

pub use cursor::{Read, first_kept_seq};
pub use runner::{LAGGING_ACTION, RECOVERED_ACTION, spawn};
pub use status::{ConsumerStatus, Consumers};

use crate::http::AppState;
use evident_core::event::Millis;
use evident_core::{EventInput, SealedEntry};
use evident_store::{Store, StoreError, StoredCheckpoint};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Where a consumer that has no stored cursor yet starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// At the oldest entry the node still keeps: the whole history (a SIEM, the archive).
    #[default]
    Oldest,
    /// At the next entry committed: only what happens from now on (alerts).
    Now,
}

/// Why a delivery (or a consumer's periodic work) failed; the runner retries after a
/// backoff and shows the message in the consumer's status.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The destination failed: unreachable, refused, timed out, answered an error.
    #[error("{0}")]
    Destination(String),
    /// Reading the log or the consumer's own data failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DeliveryError {
    /// A destination failure with `message`.
    pub fn destination(message: impl Into<String>) -> DeliveryError {
        DeliveryError::Destination(message.into())
    }
}

/// A consumer of the committed log. One trait for every role; each sink is one
/// implementation of it.
pub trait Consumer: Send + 'static {
    /// `forwarder`, `publisher`, `webhook`, `rules`, `four_eyes`: the label in status and
    /// metrics, and the first half of the cursor's name.
    fn kind(&self) -> &'static str;

    /// Unique within the kind and stable across restarts: the cursor is stored as
    /// `<kind>:<name>`, so renaming a consumer starts it afresh.
    fn name(&self) -> &str;

    /// Where a consumer with no stored cursor starts.
    fn start_at(&self) -> StartAt {
        StartAt::Oldest
    }

    /// The state saved with the cursor last time (`None` for a new consumer); called once,
    /// before the first delivery.
    fn restore(&mut self, state: Option<&str>) -> Result<(), DeliveryError> {
        let _ = state;
        Ok(())
    }

    /// Delivers committed entries, dense and in sequence order, the first being the one at
    /// the cursor. `Ok(n)`: the first `n` are done (delivered, or deliberately skipped by the
    /// consumer's filter); the cursor moves past them. `Err`: nothing moves; the same
    /// entries come again after a backoff.
    fn deliver(
        &mut self,
        ctx: &ConsumerContext,
        batch: &[SealedEntry],
    ) -> impl Future<Output = Result<usize, DeliveryError>> + Send;

    /// Periodic work (checkpoint records, schedules, timers): called when a new checkpoint
    /// was signed, and at least every [`Self::tick_every`].
    fn tick(
        &mut self,
        ctx: &ConsumerContext,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// How often [`Self::tick`] runs at the least.
    fn tick_every(&self) -> Duration {
        Duration::from_secs(5)
    }

    /// Small state (the consumer's own format, e.g. JSON) saved atomically with the cursor.
    fn save_state(&self) -> Option<String> {
        None
    }
}

/// How the runner drives one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// Most entries handed to one [`Consumer::deliver`] call.
    pub batch_max: usize,
    /// A lag incident starts when the oldest undelivered entry is older than this.
    pub lag_warn_seconds: Option<u64>,
    /// … or when more entries than this wait.
    pub lag_warn_events: Option<u64>,
    /// First retry delay after a failure; doubled on each further failure.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// While entries keep flowing, the cursor is saved at most this often (always when the
    /// consumer catches up): a crash re-delivers at most this much, at-least-once.
    pub save_every: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            batch_max: 500,
            lag_warn_seconds: Some(300),
            lag_warn_events: Some(100_000),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            save_every: Duration::from_millis(250),
        }
    }
}

/// What a consumer may use while it delivers: the node, its store and its signed state.
pub struct ConsumerContext {
    state: AppState,
}

impl ConsumerContext {
    pub(crate) fn new(state: AppState) -> ConsumerContext {
        ConsumerContext { state }
    }

    /// The whole node (config, keys, sequencer, metrics).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.state.store()
    }

    /// This node's id (HOSTNAME of syslog messages, `node` of every entry).
    pub fn node_id(&self) -> &str {
        self.state.node().files().node_id()
    }

    /// Entries committed (the next sequence number).
    pub fn log_size(&self) -> u64 {
        self.state.node().sequencer().size()
    }

    /// Reads at most `max` committed entries from `from`, below `size`: from the newest
    /// entries kept in memory when `from` is among them, else from the store.
    pub async fn read(&self, from: u64, size: u64, max: usize) -> Result<Read, StoreError> {
        if let Some(entries) = self.state.node().sequencer().recent().read(from, size, max) {
            return Ok(Read::Entries(entries));
        }
        let store = self.store().clone();
        tokio::task::spawn_blocking(move || cursor::read(&*store, from, size, max))
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    /// The latest checkpoint the node signed, as signed.
    pub fn latest_checkpoint(&self) -> Option<StoredCheckpoint> {
        self.state.node().guard().last_signed()
    }

    /// Milliseconds since the epoch now.
    pub fn now(&self) -> Millis {
        crate::now_ms()
    }

    /// Appends events the node writes about itself (e.g. a destination disabled), durable
    /// when this returns. A failure is logged and counted, never passed on.
    pub async fn record(&self, inputs: Vec<EventInput>) {
        if let Err(e) = self.state.node().sequencer().append(inputs).await {
            self.state.node().metrics().self_audit_dropped.inc();
            tracing::warn!(error = %e, "cannot record a consumer event");
        }
    }
}

#[cfg(test)]
mod tests;
