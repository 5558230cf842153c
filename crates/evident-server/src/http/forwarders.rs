//! `GET /api/v1/forwarders`: each syslog destination's cursor and delivery state (the
//! consumer runner's) with the forwarder's own counters and connection.

use super::AppState;
use super::error::ApiError;
use super::params::Params;
use crate::consumers::ConsumerStatus;
use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Serialize;
use std::sync::atomic::Ordering;
use utoipa::ToSchema;

/// One syslog destination's state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ForwarderStatus {
    /// The destination's cursor position, lag, delivered count and last error.
    #[serde(flatten)]
    pub consumer: ConsumerStatus,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// The receiver, `host:port`.
    pub address: String,
    /// The payload format of each message.
    pub format: String,
    /// Whether a connection to the receiver is open (UDP: after the first send).
    pub connected: bool,
    /// Syslog messages written (entries and checkpoint records) since the node started.
    pub messages_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Entries whose payload was cut to the maximum message size.
    pub truncated: u64,
    /// Checkpoint records sent.
    pub checkpoint_records: u64,
    /// Size of the newest checkpoint a record was sent for.
    pub last_checkpoint_size: Option<u64>,
    /// Connections opened to the receiver.
    pub connections: u64,
}

/// Every configured syslog destination and how its delivery stands.
#[utoipa::path(
    get,
    path = "/api/v1/forwarders",
    tag = "operations",
    responses(
        (status = 200, description = "One status per syslog destination: its cursor (next_seq: every entry below is delivered), lag in entries and seconds, delivered and failed counts, last error, whether it is connected, and its message, byte, truncation, checkpoint-record and connection counts", body = Vec<ForwarderStatus>),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn forwarders(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ForwarderStatus>>, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    Ok(Json(statuses(&state)))
}

/// The status of every forwarder, by name.
pub fn statuses(state: &AppState) -> Vec<ForwarderStatus> {
    state
        .forwarders()
        .all()
        .into_iter()
        .map(|info| {
            let d = &info.destination;
            let consumer = state
                .consumers()
                .status(crate::forward::KIND, &d.name)
                .unwrap_or_else(|| ConsumerStatus {
                    kind: crate::forward::KIND.to_owned(),
                    name: d.name.clone(),
                    ..ConsumerStatus::default()
                });
            let s = &info.stats;
            ForwarderStatus {
                consumer,
                transport: d.transport.as_str().to_owned(),
                address: d.address.clone(),
                format: d.format.as_str().to_owned(),
                connected: s.connected.load(Ordering::Relaxed),
                messages_sent: s.messages.load(Ordering::Relaxed),
                bytes_sent: s.bytes.load(Ordering::Relaxed),
                truncated: s.truncated.load(Ordering::Relaxed),
                checkpoint_records: s.checkpoint_records.load(Ordering::Relaxed),
                last_checkpoint_size: s
                    .last_checkpoint_size
                    .load(Ordering::Relaxed)
                    .checked_sub(1),
                connections: s.connections.load(Ordering::Relaxed),
            }
        })
        .collect()
}
