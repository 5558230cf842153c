//! `GET/POST /api/v1/alerts/rules` and `DELETE /api/v1/alerts/rules/{name}`: owners (the
//! router's `owner` permission) list the rules in force and add or delete the ones made over
//! the API. Every change is stored
//! durably before it is answered and recorded as a self-audit event.

use super::{Rule, RuleSource, RulesError};
use crate::audit::{AuditActor, AuditEvent, RequestInfo};
use crate::auth::Caller;
use crate::http::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;

/// Self-audit: a rule was made over the API.
pub const RULE_CREATED: &str = "evident.alerts.rule_created";
/// Self-audit: a rule made over the API was deleted.
pub const RULE_DELETED: &str = "evident.alerts.rule_deleted";

/// A rule in force and where it comes from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleJson {
    /// `builtin`, `config` (the TOML file) or `api`.
    pub source: RuleSource,
    pub rule: Rule,
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

fn api_error(e: RulesError) -> ApiError {
    match e {
        RulesError::Invalid(e) => {
            ApiError::bad_request("invalid_rule", e.to_string()).with_field(e.field)
        }
        RulesError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "exists", e.to_string()),
        RulesError::TooMany => ApiError::new(StatusCode::CONFLICT, "too_many_rules", e.to_string()),
        RulesError::Reserved(_) => {
            ApiError::new(StatusCode::CONFLICT, "reserved", e.to_string()).with_field("name")
        }
        RulesError::NotFound(_) => ApiError::not_found(e.to_string()),
        RulesError::NotDeletable { .. } => {
            ApiError::new(StatusCode::CONFLICT, "not_deletable", e.to_string())
        }
        RulesError::File { .. } => ApiError::internal(e.to_string()),
    }
}

/// The alert rules in force.
#[utoipa::path(
    get,
    path = "/api/v1/alerts/rules",
    tag = "alerts",
    responses(
        (status = 200, description = "Every rule in force: built-in, from the configuration file and made over the API", body = Vec<RuleJson>),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = crate::http::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::http::ErrorBody),
        (status = 403, description = "Only owner keys manage alert rules", body = crate::http::ErrorBody),
        (status = 429, description = "Too many refused requests: from this address without a valid key, or by this key", body = crate::http::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<RuleJson>>, ApiError> {
    no_query(query.as_deref())?;
    let rules = state.alerts().rules().list();
    Ok(Json(
        rules
            .into_iter()
            .map(|(source, rule)| RuleJson {
                source,
                rule: (*rule).clone(),
            })
            .collect(),
    ))
}

/// Adds a rule (stored durably in the data directory; in force for the entries the webhook
/// endpoints deliver next).
#[utoipa::path(
    post,
    path = "/api/v1/alerts/rules",
    tag = "alerts",
    request_body = Rule,
    responses(
        (status = 201, description = "The rule, in force", body = RuleJson),
        (status = 400, description = "`invalid_rule`: the body is not a valid rule (`field` names the problem)", body = crate::http::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::http::ErrorBody),
        (status = 403, description = "Only owner keys manage alert rules", body = crate::http::ErrorBody),
        (status = 429, description = "Too many refused requests: from this address without a valid key, or by this key", body = crate::http::ErrorBody),
        (status = 409, description = "`exists`: a rule of that name is in force; `too_many_rules`: 1000 rules made over the API are in force; `reserved`: names starting with `builtin.` are the built-in rules'", body = crate::http::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<(StatusCode, Json<RuleJson>), ApiError> {
    no_query(query.as_deref())?;
    let rule: Rule = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_rule", format!("the body is not a rule: {e}"))
    })?;
    let rules = state.alerts().rules();
    let stored = rule.clone();
    tokio::task::spawn_blocking(move || rules.add(stored))
        .await
        .map_err(ApiError::from_join)?
        .map_err(api_error)?;
    let event = AuditEvent::new(RULE_CREATED, "success", "notice", "alert_rule", &rule.name)
        .with("rule", serde_json::to_value(&rule).unwrap_or_default());
    state.record(&AuditActor::Key(caller), &info, event).await;
    Ok((
        StatusCode::CREATED,
        Json(RuleJson {
            source: RuleSource::Api,
            rule,
        }),
    ))
}

/// Deletes a rule made over the API.
#[utoipa::path(
    delete,
    path = "/api/v1/alerts/rules/{name}",
    tag = "alerts",
    params(("name" = String, Path, description = "The rule's name")),
    responses(
        (status = 200, description = "The deleted rule", body = RuleJson),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = crate::http::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::http::ErrorBody),
        (status = 403, description = "Only owner keys manage alert rules", body = crate::http::ErrorBody),
        (status = 429, description = "Too many refused requests: from this address without a valid key, or by this key", body = crate::http::ErrorBody),
        (status = 404, description = "No rule of that name", body = crate::http::ErrorBody),
        (status = 409, description = "`not_deletable`: a built-in or configured rule (change the configuration file instead)", body = crate::http::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<RuleJson>, ApiError> {
    no_query(query.as_deref())?;
    let rules = state.alerts().rules();
    let target = name.clone();
    let removed = tokio::task::spawn_blocking(move || rules.delete(&target))
        .await
        .map_err(ApiError::from_join)?
        .map_err(api_error)?;
    let event = AuditEvent::new(RULE_DELETED, "success", "notice", "alert_rule", &name)
        .with("rule", serde_json::to_value(&*removed).unwrap_or_default());
    state.record(&AuditActor::Key(caller), &info, event).await;
    Ok(Json(RuleJson {
        source: RuleSource::Api,
        rule: (*removed).clone(),
    }))
}
