//! `POST /api/v1/events`: one event, a JSON array of events, or NDJSON. The whole batch is
//! read within the size limit and validated before anything is sequenced; one bad event
//! rejects the batch, naming its index and field. The 201 is sent only after the batch's
//! transaction committed. Each stored entry records the caller's key id as `appended_by`; a
//! client can neither set that field nor append an action in the node's `evident.*`
//! namespace. Appends wait for a share of `max_pending_append_bytes` before reading their
//! body and hold it until answered, so a burst of large batches cannot grow memory without
//! bound.

use super::AppState;
use super::error::ApiError;
use super::params::Params;
use crate::auth::Caller;
use crate::sequencer::Receipt;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::{Extension, Json};
use evident_core::event::{Rfc3339Millis, ValidationError, refuse_reserved_action};
use evident_core::{EventInput, Hash};
use futures_util::StreamExt;
use serde_json::Value;

/// One receipt in the append answer.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ReceiptJson {
    /// Sequence number, dense per node from 0.
    pub seq: u64,
    /// Chain hash of the entry, 64 lowercase hex digits.
    #[schema(value_type = String, example = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
    pub hash: Hash,
    /// Recording time, RFC 3339 UTC with milliseconds.
    #[schema(value_type = String, example = "2026-03-14T09:00:00.000Z")]
    pub recorded_at: Rfc3339Millis,
}

impl From<Receipt> for ReceiptJson {
    fn from(r: Receipt) -> Self {
        ReceiptJson {
            seq: r.seq,
            hash: r.hash,
            recorded_at: Rfc3339Millis(r.recorded_at),
        }
    }
}

/// The append answer: one receipt per submitted event, in submission order.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AppendResponse {
    pub receipts: Vec<ReceiptJson>,
}

enum BodyKind {
    Json,
    Ndjson,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let unsupported = |what: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{what}; send application/json (one event or an array) or application/x-ndjson"
            ),
        )
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported("missing Content-Type"));
    };
    let text = value
        .to_str()
        .map_err(|_| unsupported("unreadable Content-Type"))?;
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    for param in parts {
        if let Some((name, v)) = param.split_once('=') {
            let v = v.trim().trim_matches('"');
            if name.trim().eq_ignore_ascii_case("charset") && !v.eq_ignore_ascii_case("utf-8") {
                return Err(unsupported(&format!(
                    "charset {v:?} is not supported (UTF-8 only)"
                )));
            }
        }
    }
    match essence.as_str() {
        "application/json" => Ok(BodyKind::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(BodyKind::Ndjson),
        other => Err(unsupported(&format!(
            "Content-Type {other:?} is not supported"
        ))),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body is larger than the limit of {limit} bytes"),
    )
}

/// The body length the request declares (`Content-Length`), if readable.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads the body of declared length `declared`, refusing it as soon as it passes `limit`
/// bytes.
async fn read_body(declared: Option<u64>, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut buf = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "unreadable_body",
                format!("cannot read the request body: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn invalid_json(e: &serde_json::Error, line: Option<usize>) -> ApiError {
    let message = match line {
        Some(n) => format!("line {n}: malformed JSON: {e}"),
        None => format!("malformed JSON: {e}"),
    };
    ApiError::bad_request("malformed_json", message)
}

fn too_many(count: usize, max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_events",
        format!("batch has {count} events; at most {max} per request"),
    )
    .with_field("$")
}

/// Splits a body into event values: a JSON object, a JSON array, or NDJSON lines.
fn event_values(text: &str, kind: BodyKind, max: usize) -> Result<Vec<Value>, ApiError> {
    let values = match kind {
        BodyKind::Json => match evident_core::json::from_str_strict(text) {
            Ok(Value::Array(items)) => {
                if items.len() > max {
                    return Err(too_many(items.len(), max));
                }
                items
            }
            Ok(object @ Value::Object(_)) => vec![object],
            Ok(_) => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "expected an event object or an array of event objects",
                )
                .with_field("$"));
            }
            Err(e) => return Err(invalid_json(&e, None)),
        },
        BodyKind::Ndjson => {
            let lines: Vec<(usize, &str)> = text
                .split('\n')
                .enumerate()
                .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
                .filter(|(_, l)| !l.trim().is_empty())
                .collect();
            if lines.len() > max {
                return Err(too_many(lines.len(), max));
            }
            let mut values = Vec::with_capacity(lines.len());
            for (index, (n, line)) in lines.into_iter().enumerate() {
                let value = evident_core::json::from_str_strict(line)
                    .map_err(|e| invalid_json(&e, Some(n)).with_index(index))?;
                values.push(value);
            }
            values
        }
    };
    if values.is_empty() {
        return Err(
            ApiError::bad_request("empty_batch", "the request holds no event").with_field("$"),
        );
    }
    Ok(values)
}

fn invalid_event(index: usize, e: ValidationError) -> ApiError {
    ApiError::bad_request(
        "invalid_event",
        format!("event {index}: {}: {}", e.field, e.problem),
    )
    .with_field(e.field)
    .with_index(index)
}

/// Appends one event or a batch.
#[utoipa::path(
    post,
    path = "/api/v1/events",
    tag = "events",
    request_body(
        description = "One event object, a JSON array of event objects (application/json), or one event object per line (application/x-ndjson). At most `max_batch_events` events and `max_body_bytes` bytes.",
        content(
            (super::openapi::EventInputDoc = "application/json"),
            (Vec<super::openapi::EventInputDoc> = "application/json"),
            (String = "application/x-ndjson"),
        ),
    ),
    responses(
        (status = 201, description = "Committed durably; one receipt per event, in order", body = AppendResponse),
        (status = 400, description = "Malformed JSON, invalid UTF-8, an invalid event (with its `index` and `field`; including an event naming `appended_by`, which the server sets from the API key, or an action in the reserved `evident.*` namespace), an empty batch or a query parameter; nothing stored", body = super::ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not append, or the event is for another tenant than the key's", body = super::ErrorBody),
        (status = 408, description = "The body did not arrive within body_timeout_ms; nothing stored", body = super::ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes or more than max_batch_events events", body = super::ErrorBody),
        (status = 415, description = "Content-Type is not application/json or application/x-ndjson", body = super::ErrorBody),
        (status = 500, description = "Storage failure; nothing stored", body = super::ErrorBody),
        (status = 503, description = "Nothing stored: the node is shutting down (`shutting_down`), serves a damaged log read-only (`read_only`), or lost its PostgreSQL writer lease (`lease_lost`, with `Retry-After`: another process may be serving the node)", body = super::ErrorBody),
        (status = 507, description = "Storage full; nothing stored", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn append(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<crate::audit::RequestInfo>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<AppendResponse>), ApiError> {
    Params::parse(query.as_deref(), &[])?;
    if state.is_shutting_down() {
        return Err(ApiError::shutting_down());
    }
    let config = state.node().config();
    let kind = body_kind(&headers)?;
    // Memory: the bodies of appends held at once, from the read to the answer, stay within
    // `max_pending_append_bytes` (a body of unstated length counts as the largest allowed).
    let declared = declared_length(&headers);
    let held = declared.unwrap_or(config.max_body_bytes as u64);
    let _budget = state
        .append_permit(held.min(config.max_body_bytes as u64))
        .await;
    let deadline = std::time::Duration::from_millis(config.body_timeout_ms);
    let bytes = tokio::time::timeout(deadline, read_body(declared, body, config.max_body_bytes))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    config.body_timeout_ms
                ),
            )
        })??;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_utf8",
            format!(
                "request body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    let values = event_values(text, kind, config.max_batch_events)?;
    drop(bytes);
    let mut inputs = Vec::with_capacity(values.len());
    for (index, mut value) in values.into_iter().enumerate() {
        if let (Some(tenant), Value::Object(map)) = (&caller.tenant, &mut value) {
            // A tenant-scoped key writes into its tenant unless the event names one.
            if map.get("tenant").is_none_or(Value::is_null) {
                map.insert("tenant".to_owned(), Value::String(tenant.clone()));
            }
        }
        let input = EventInput::from_json(&value).map_err(|e| invalid_event(index, e))?;
        // `evident.*` is the node's own (self-audit, integrity): no client event may pass for
        // one. The node's events are appended internally and never come this way.
        refuse_reserved_action(&input.action).map_err(|e| invalid_event(index, e))?;
        if input.action == crate::retention::PRUNED_ACTION {
            // Only the node's retention pruner records prunes: the event drives its resumption
            // and anchors verification, so a client may not write one.
            return Err(ApiError::bad_request(
                "invalid_event",
                format!(
                    "event {index}: action: {} is reserved for the node's retention pruner",
                    crate::retention::PRUNED_ACTION
                ),
            )
            .with_field("action")
            .with_index(index));
        }
        if let Some(tenant) = &caller.tenant {
            if input.tenant != *tenant {
                // Access control (auth.rs): a recorded cross-tenant refusal.
                let error = state
                    .refuse_cross_tenant(
                        &caller,
                        &info,
                        super::OutsideTenant::Named(&input.tenant),
                        "append events",
                    )
                    .await;
                return Err(error.with_index(index));
            }
        }
        inputs.push(input);
    }
    let receipts = state
        .node()
        .sequencer()
        .append_for_key(&caller.key_id, inputs)
        .await
        .map_err(ApiError::from_sequencer)?;
    Ok((
        StatusCode::CREATED,
        Json(AppendResponse {
            receipts: receipts.into_iter().map(ReceiptJson::from).collect(),
        }),
    ))
}
