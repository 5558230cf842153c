//! `GET /api/v1/webhooks`: each endpoint's cursor (from the consumer registry) and its
//! delivery record (attempts, outcomes, failure incident, disabled); and
//! `POST /api/v1/webhooks/{name}/enable` for owners to resume a disabled endpoint.

use super::{ENABLED_ACTION, EndpointStats, KIND};
use crate::audit::{AuditActor, AuditEvent, RequestInfo};
use crate::auth::Caller;
use crate::consumers::ConsumerStatus;
use crate::http::{ApiError, AppState};
use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use serde::Serialize;

/// One webhook endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookStatus {
    #[serde(flatten)]
    pub endpoint: EndpointStats,
    /// Its cursor: every entry below `next_seq` has had its alerts delivered.
    pub cursor: Option<ConsumerStatus>,
}

fn no_query(query: Option<&str>) -> Result<(), ApiError> {
    match query {
        Some(q) if !q.is_empty() => Err(ApiError::bad_param(
            q.split('=').next().unwrap_or(q),
            "this route takes no query parameters",
        )),
        _ => Ok(()),
    }
}

/// The webhook endpoints and their deliveries.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "alerts",
    responses(
        (status = 200, description = "One status per configured endpoint: attempts, delivered, failed, the last outcome and webhook-id, the open failure incident, whether it is disabled, and its cursor", body = Vec<WebhookStatus>),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = crate::http::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::http::ErrorBody),
        (status = 403, description = "The key's role may not read", body = crate::http::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn status(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<WebhookStatus>>, ApiError> {
    no_query(query.as_deref())?;
    let out = state
        .alerts()
        .endpoints()
        .stats()
        .into_iter()
        .map(|endpoint| WebhookStatus {
            cursor: state.consumers().status(KIND, &endpoint.name),
            endpoint,
        })
        .collect();
    Ok(Json(out))
}

/// Resumes an endpoint disabled for failing too long (from the entries committed next).
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{name}/enable",
    tag = "alerts",
    params(("name" = String, Path, description = "The endpoint's name")),
    responses(
        (status = 200, description = "The endpoint resumes delivering", body = Vec<WebhookStatus>),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = crate::http::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::http::ErrorBody),
        (status = 403, description = "Only owner keys enable endpoints", body = crate::http::ErrorBody),
        (status = 404, description = "No endpoint of that name", body = crate::http::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn enable(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<WebhookStatus>>, ApiError> {
    no_query(query.as_deref())?;
    if !state.alerts().endpoints().request_enable(&name) {
        return Err(ApiError::not_found(format!(
            "no webhook endpoint named {name:?}"
        )));
    }
    let event = AuditEvent::new(ENABLED_ACTION, "success", "notice", "webhook", &name);
    state.record(&AuditActor::Key(caller), &info, event).await;
    status(State(state), RawQuery(None)).await
}
