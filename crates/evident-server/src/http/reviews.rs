//! `GET /api/v1/reviews/four-eyes`: a four-eyes rule's report for a time window, as JSON or as
//! the signed report bundle (`format=bundle`) that `evident verify --export` checks offline.
//! The report is built below a checkpoint signed for it, like an export.

use super::params::Params;
use super::stream::stream_response;
use super::{ApiError, AppState};
use crate::audit::{AuditActor, AuditEvent, RequestInfo, action};
use crate::auth::Caller;
use crate::review::{self, ReportRequest};
use crate::sequencer::{SequencerError, now_ms};
use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use evident_core::filter::EventFilter;
use evident_store::StoredCheckpoint;

const PARAMS: [&str; 4] = ["rule", "from", "to", "format"];

/// Parameters of `GET /api/v1/reviews/four-eyes`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FourEyesParams {
    /// The rule's name (a `[[four_eyes]]` table of the configuration).
    #[param(min_length = 1)]
    rule: String,
    /// Confirmed events recorded at or after this time (RFC 3339 or epoch milliseconds).
    from: Option<String>,
    /// …and before this time.
    to: Option<String>,
    /// `json` (default): the report. `bundle`: the signed report bundle (NDJSON) with every
    /// named entry and its proof against the checkpoint.
    #[param(inline, value_type = Option<ReviewFormatDoc>)]
    format: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ReviewFormatDoc {
    Json,
    Bundle,
}

/// A four-eyes rule's report: every confirmed event of the window with its status
/// (`confirmed`, `late`, `wrong_role`, `self_confirmed`, `pending`, `overdue`), the
/// confirmation that decides it, and the confirmations that confirm nothing (`rejected`, with
/// the reason: `hash_mismatch`, `missing_reference`, `malformed_reference`, `unknown_event`,
/// `other_tenant`, `not_confirmable`). A tenant-scoped key sees its tenant's events only.
#[utoipa::path(
    get,
    path = "/api/v1/reviews/four-eyes",
    tag = "reviews",
    params(FourEyesParams),
    responses(
        (status = 200, description = "format=json: the report `{rule, from, to, as_of, tenant, summary, pairs, rejected}`. format=bundle: the signed report bundle (application/x-ndjson, docs/FORMAT.md), verifiable offline with `evident verify --export`.",
            content(
                (Object = "application/json"),
                (String = "application/x-ndjson"),
            )),
        (status = 400, description = "A bad or unknown query parameter (named in `field`)", body = super::ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
        (status = 404, description = "`not_found`: no four-eyes rule has this name (`field`: `rule`)", body = super::ErrorBody),
        (status = 409, description = "`log_damaged`: the stored log lacks an entry or a Merkle node the bundle needs", body = super::ErrorBody),
        (status = 500, description = "Storage failure", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn four_eyes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), &PARAMS)?;
    let bundle = match params.get("format").unwrap_or("json") {
        "json" => false,
        "bundle" => true,
        other => {
            return Err(ApiError::bad_param(
                "format",
                format!("format \"{other}\": expected json or bundle"),
            ));
        }
    };
    let rules = review::rules(&state.node().config().four_eyes)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(name) = params.get("rule") else {
        return Err(ApiError::bad_param("rule", "rule is required"));
    };
    let Some(rule) = rules.into_iter().find(|r| r.name == name) else {
        let names: Vec<String> = review::rules(&state.node().config().four_eyes)
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        return Err(ApiError::not_found(format!(
            "no four-eyes rule is named {name:?}; configured: {}",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ))
        .with_field("rule"));
    };
    // The one parser of times in queries, the audit log's.
    let window = EventFilter::from_params(|p| match p {
        "from" | "to" => params.get(p),
        _ => None,
    })
    .map_err(|e| ApiError::bad_param(&e.param, e.to_string()))?;
    if bundle {
        let event = AuditEvent::new(
            action::EXPORTED,
            "success",
            "notice",
            "four_eyes_rule",
            &rule.name,
        )
        .with("format", "four_eyes_report");
        state
            .record(&AuditActor::Key(caller.clone()), &info, event)
            .await;
    }
    let request = ReportRequest {
        rule,
        from: window.from,
        to: window.to,
        tenant: caller.tenant.clone(),
        checkpoint: report_checkpoint(&state).await?,
        as_of: now_ms(),
    };
    let built = {
        let request = request.clone();
        state
            .with_store(move |store| {
                review::build_report(store, &request).map_err(|e| match e {
                    review::ReportError::Store(e) => ApiError::from_store(e),
                    other => ApiError::internal(other.to_string()),
                })
            })
            .await?
    };
    let (evaluation, entries) = built;
    if !bundle {
        return Ok(axum::Json(evaluation.report).into_response());
    }
    let store = state.store().clone();
    let node_id = state.node().files().node_id().to_owned();
    let signer = state.node().files().signer().clone();
    stream_response(
        "application/x-ndjson",
        Some("attachment; filename=\"evident-four-eyes-report.ndjson\""),
        move |out| {
            review::write_report_bundle(
                &*store,
                &request,
                &evaluation,
                entries,
                &node_id,
                &signer,
                out,
            )
            .map(|_| ())
        },
    )
    .await
}

/// A checkpoint signed now (every entry committed so far), or on a read-only node the last
/// one it signed.
async fn report_checkpoint(state: &AppState) -> Result<StoredCheckpoint, ApiError> {
    match state.node().sequencer().force_checkpoint().await {
        Ok(checkpoint) => Ok(checkpoint),
        Err(SequencerError::ReadOnly(problem)) => state
            .node()
            .guard()
            .last_signed()
            .ok_or_else(|| ApiError::from_sequencer(SequencerError::ReadOnly(problem))),
        Err(e) => Err(ApiError::from_sequencer(e)),
    }
}
