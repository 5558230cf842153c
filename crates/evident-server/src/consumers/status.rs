//! What operators see of the consumers of the log: one [`ConsumerStatus`] per running
//! consumer, kept by the runner in the node's [`Consumers`] registry (served on
//! `GET /api/v1/consumers`, in `/readyz` details, and by each role's own status route), and the
//! matching `evident_consumer_*` metrics.

use crate::metrics::{ConsumerLabels, Metrics};
use evident_core::event::Millis;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use utoipa::ToSchema;

/// One consumer's delivery state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ConsumerStatus {
    /// `forwarder`, `publisher`, `webhook`, `rules`, `four_eyes`.
    pub kind: String,
    /// The consumer's name within its kind (its cursor is `<kind>:<name>`).
    pub name: String,
    /// The next sequence number it has to deliver: every entry below is delivered.
    pub next_seq: u64,
    /// Entries committed when the status was last updated.
    pub log_size: u64,
    /// Committed entries not delivered yet.
    pub lag_events: u64,
    /// Age of the oldest undelivered entry, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Entries delivered (or skipped by the consumer's filter) since the node started.
    pub delivered: u64,
    /// Failed attempts since the node started (each one retried).
    pub failures: u64,
    /// The last failure's message, until a delivery succeeds again.
    pub last_error: Option<String>,
    /// When the last failure happened (milliseconds since the epoch).
    pub last_error_at: Option<Millis>,
    /// When the last delivery succeeded.
    pub last_delivered_at: Option<Millis>,
    /// Whether the last attempt failed and a retry is waiting.
    pub retrying: bool,
    /// When the open lag incident started (its warning event is in the log), if one is open.
    pub lagging_since: Option<Millis>,
}

/// The consumers of one node, by `<kind>:<name>`.
#[derive(Default)]
pub struct Consumers {
    all: Mutex<BTreeMap<String, Arc<Mutex<ConsumerStatus>>>>,
}

impl Consumers {
    /// The status cell of a consumer starting now (replacing a stopped one of the same name).
    pub(super) fn register(&self, kind: &str, name: &str) -> Arc<Mutex<ConsumerStatus>> {
        let cell = Arc::new(Mutex::new(ConsumerStatus {
            kind: kind.to_owned(),
            name: name.to_owned(),
            ..ConsumerStatus::default()
        }));
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(format!("{kind}:{name}"), cell.clone());
        cell
    }

    /// Every consumer's status, by kind and name.
    pub fn statuses(&self) -> Vec<ConsumerStatus> {
        let all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        all.values()
            .map(|cell| cell.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .collect()
    }

    /// The statuses of the consumers of one kind.
    pub fn statuses_of(&self, kind: &str) -> Vec<ConsumerStatus> {
        self.statuses()
            .into_iter()
            .filter(|s| s.kind == kind)
            .collect()
    }

    /// The status of one consumer.
    pub fn status(&self, kind: &str, name: &str) -> Option<ConsumerStatus> {
        let all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        all.get(&format!("{kind}:{name}"))
            .map(|cell| cell.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

/// Updates `cell` with `update` and mirrors it into the metrics.
pub(super) fn update(
    cell: &Mutex<ConsumerStatus>,
    metrics: &Metrics,
    update: impl FnOnce(&mut ConsumerStatus),
) {
    let mut status = cell.lock().unwrap_or_else(PoisonError::into_inner);
    let before = (status.delivered, status.failures);
    update(&mut status);
    let labels = ConsumerLabels {
        kind: status.kind.clone(),
        name: status.name.clone(),
    };
    metrics
        .consumer_position
        .get_or_create(&labels)
        .set(status.next_seq);
    metrics
        .consumer_lag_events
        .get_or_create(&labels)
        .set(status.lag_events);
    metrics
        .consumer_lag_seconds
        .get_or_create(&labels)
        .set(status.lag_seconds);
    metrics
        .consumer_delivered
        .get_or_create(&labels)
        .inc_by(status.delivered.saturating_sub(before.0));
    metrics
        .consumer_failures
        .get_or_create(&labels)
        .inc_by(status.failures.saturating_sub(before.1));
}
