//! The node's Prometheus metrics: what is counted (appends, group-commit batch sizes, commit
//! latency, checkpoints, log size, HTTP requests by route and status) and the text exposition
//! served at `/api/v1/metrics`. The sequencer and the HTTP layer record; nobody else does.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of the HTTP request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template (e.g. `/api/v1/events`), never the raw path, so that the
    /// label set stays bounded.
    pub route: String,
    pub method: String,
    pub status: u16,
}

/// Labels of the per-consumer metrics: which consumer of the committed log.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    /// `forwarder`, `publisher`, `webhook`, …
    pub kind: String,
    pub name: String,
}

/// Labels of the webhook delivery counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub endpoint: String,
    /// `delivered` (2xx) or `failed` (another status, refused, timed out).
    pub outcome: String,
}

/// Labels of the syslog forwarders' metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwarderLabels {
    /// The destination's name (its consumer name).
    pub name: String,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
}

/// All metrics of one node.
pub struct Metrics {
    registry: Registry,
    /// Events committed.
    pub events_appended: Counter,
    /// Append requests answered with an error by the sequencer.
    pub append_failures: Counter,
    /// Events per group commit (one store transaction).
    pub batch_events: Histogram,
    /// Seconds one group commit's `store.append` took (the transaction and its fsync).
    pub commit_seconds: Histogram,
    /// Checkpoints signed and stored.
    pub checkpoints_signed: Counter,
    /// Entries in the log (its tree size).
    pub log_size: Gauge<u64, AtomicU64>,
    /// HTTP requests by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// 1 while the node refuses writes because its stored log is damaged, else 0.
    pub read_only: Gauge,
    /// When the background verifier last finished a pass without a problem (Unix seconds).
    pub verify_last_success: Gauge,
    /// Background verifier passes that found a problem or could not run.
    pub verify_failures: Counter,
    /// Background verifier passes run.
    pub verify_runs: Counter,
    /// Self-audit events that could not be written to the log.
    pub self_audit_dropped: Counter,
    /// Per consumer of the log: the next sequence number it has to deliver.
    pub consumer_position: Family<ConsumerLabels, Gauge<u64, AtomicU64>>,
    /// Per consumer: committed entries it has not delivered yet.
    pub consumer_lag_events: Family<ConsumerLabels, Gauge<u64, AtomicU64>>,
    /// Per consumer: age of the oldest entry it has not delivered, in seconds.
    pub consumer_lag_seconds: Family<ConsumerLabels, Gauge<f64, AtomicU64>>,
    /// Per consumer: entries it delivered (or deliberately skipped by its filter).
    pub consumer_delivered: Family<ConsumerLabels, Counter>,
    /// Per consumer: failed delivery attempts (each is retried).
    pub consumer_failures: Family<ConsumerLabels, Counter>,
    /// Webhook delivery attempts by endpoint and outcome.
    pub webhook_attempts: Family<WebhookLabels, Counter>,
    /// Per syslog destination: messages written (entries and checkpoint records).
    pub forwarder_messages: Family<ForwarderLabels, Counter>,
    /// Per syslog destination: bytes of those messages.
    pub forwarder_bytes: Family<ForwarderLabels, Counter>,
    /// Per syslog destination: entries whose payload was cut to the maximum message size.
    pub forwarder_truncated: Family<ForwarderLabels, Counter>,
    /// Per syslog destination: checkpoint records sent.
    pub forwarder_checkpoint_records: Family<ForwarderLabels, Counter>,
    /// Per syslog destination: connections opened (a rise means reconnects).
    pub forwarder_connections: Family<ForwarderLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("evident");
        let events_appended = Counter::default();
        let append_failures = Counter::default();
        // 1 .. ~32k events per transaction.
        let batch_events = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        // 0.1 ms .. ~3 s.
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let checkpoints_signed = Counter::default();
        let log_size = Gauge::<u64, AtomicU64>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "events_appended",
            "Events committed to the log",
            events_appended.clone(),
        );
        registry.register(
            "append_failures",
            "Append requests that failed in the sequencer (nothing stored)",
            append_failures.clone(),
        );
        registry.register(
            "group_commit_events",
            "Events per group commit (one storage transaction)",
            batch_events.clone(),
        );
        registry.register(
            "commit_seconds",
            "Duration of one group commit's storage transaction, fsync included",
            commit_seconds.clone(),
        );
        registry.register(
            "checkpoints_signed",
            "Checkpoints signed and stored",
            checkpoints_signed.clone(),
        );
        registry.register("log_size", "Entries in the log", log_size.clone());
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        let read_only = Gauge::default();
        let verify_last_success = Gauge::default();
        let verify_failures = Counter::default();
        let verify_runs = Counter::default();
        let self_audit_dropped = Counter::default();
        registry.register(
            "read_only",
            "1 while the node refuses writes because its stored log is damaged",
            read_only.clone(),
        );
        registry.register(
            "verify_last_success_timestamp_seconds",
            "When the background verifier last finished a clean pass (Unix time)",
            verify_last_success.clone(),
        );
        registry.register(
            "verify_failures",
            "Background verifier passes that found a problem or could not run",
            verify_failures.clone(),
        );
        registry.register(
            "verify_runs",
            "Background verifier passes run",
            verify_runs.clone(),
        );
        registry.register(
            "self_audit_dropped",
            "Self-audit events that could not be written to the log",
            self_audit_dropped.clone(),
        );
        let consumer_position = Family::<ConsumerLabels, Gauge<u64, AtomicU64>>::default();
        let consumer_lag_events = Family::<ConsumerLabels, Gauge<u64, AtomicU64>>::default();
        let consumer_lag_seconds = Family::<ConsumerLabels, Gauge<f64, AtomicU64>>::default();
        let consumer_delivered = Family::<ConsumerLabels, Counter>::default();
        let consumer_failures = Family::<ConsumerLabels, Counter>::default();
        registry.register(
            "consumer_position",
            "Next sequence number each consumer of the log (forwarder, publisher, webhook) has to deliver",
            consumer_position.clone(),
        );
        registry.register(
            "consumer_lag_events",
            "Committed entries a consumer has not delivered yet",
            consumer_lag_events.clone(),
        );
        registry.register(
            "consumer_lag_seconds",
            "Age of the oldest committed entry a consumer has not delivered, in seconds",
            consumer_lag_seconds.clone(),
        );
        registry.register(
            "consumer_delivered",
            "Entries a consumer delivered (or skipped by its filter)",
            consumer_delivered.clone(),
        );
        registry.register(
            "consumer_failures",
            "Failed delivery attempts of a consumer (each is retried)",
            consumer_failures.clone(),
        );
        let webhook_attempts = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by endpoint and outcome (delivered, failed)",
            webhook_attempts.clone(),
        );
        let forwarder_messages = Family::<ForwarderLabels, Counter>::default();
        let forwarder_bytes = Family::<ForwarderLabels, Counter>::default();
        let forwarder_truncated = Family::<ForwarderLabels, Counter>::default();
        let forwarder_checkpoint_records = Family::<ForwarderLabels, Counter>::default();
        let forwarder_connections = Family::<ForwarderLabels, Counter>::default();
        registry.register(
            "forwarder_messages",
            "Syslog messages a forwarder wrote (entries and checkpoint records)",
            forwarder_messages.clone(),
        );
        registry.register(
            "forwarder_bytes",
            "Bytes of the syslog messages a forwarder wrote",
            forwarder_bytes.clone(),
        );
        registry.register(
            "forwarder_truncated",
            "Entries whose syslog payload was cut to the destination's maximum message size",
            forwarder_truncated.clone(),
        );
        registry.register(
            "forwarder_checkpoint_records",
            "Checkpoint records a forwarder sent",
            forwarder_checkpoint_records.clone(),
        );
        registry.register(
            "forwarder_connections",
            "Connections a forwarder opened to its destination",
            forwarder_connections.clone(),
        );
        Metrics {
            registry,
            webhook_attempts,
            forwarder_messages,
            forwarder_bytes,
            forwarder_truncated,
            forwarder_checkpoint_records,
            forwarder_connections,
            consumer_position,
            consumer_lag_events,
            consumer_lag_seconds,
            consumer_delivered,
            consumer_failures,
            read_only,
            verify_last_success,
            verify_failures,
            verify_runs,
            self_audit_dropped,
            events_appended,
            append_failures,
            batch_events,
            commit_seconds,
            checkpoints_signed,
            log_size,
            http_requests,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_its_value() {
        let m = Metrics::new();
        m.events_appended.inc_by(3);
        m.log_size.set(42);
        m.http_requests
            .get_or_create(&HttpLabels {
                route: "/api/v1/events".to_owned(),
                method: "POST".to_owned(),
                status: 201,
            })
            .inc();
        let text = m.encode();
        assert!(text.contains("evident_events_appended_total 3"), "{text}");
        assert!(text.contains("evident_log_size 42"), "{text}");
        assert!(
            text.contains(
                "evident_http_requests_total{route=\"/api/v1/events\",method=\"POST\",status=\"201\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("evident_commit_seconds_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
