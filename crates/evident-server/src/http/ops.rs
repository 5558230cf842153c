//! Operational routes: online verification of the whole stored log, health, Prometheus
//! metrics, the OpenAPI document, and the JSON answers for unknown routes and methods.

use super::AppState;
use super::error::ApiError;
use super::params::Params;
use crate::audit::{AuditActor, AuditEvent, RequestInfo, action};
use crate::auth::Caller;
use crate::consumers::ConsumerStatus;
use crate::guard::{Damage, DetectedBy};
use crate::self_check::VerifyStatus;
use crate::verification::{self, VerifyOutcome};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;

/// The result of a verification.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct VerifyResponse {
    /// Whether every checked entry and checkpoint was intact.
    pub ok: bool,
    /// Entries checked (up to the problem, when there is one).
    pub entries: u64,
    /// First sequence number checked.
    pub first_seq: Option<u64>,
    /// Tree size reached (ok only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Merkle root at `size` (ok only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Whether seals were checked (always, online).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seals_checked: Option<bool>,
    /// Signed checkpoints whose roots were checked (ok only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoints_checked: Option<u64>,
    /// The first problem found (not ok only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violation: Option<ViolationJson>,
    /// Entries below this sequence number were pruned by retention: verification started
    /// from the recorded anchor there (absent for a log never pruned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned_below: Option<u64>,
}

/// A problem found by verification.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ViolationJson {
    /// `chain_broken`, `seal_mismatch`, `sequence_gap`, `duplicate_sequence`, `out_of_order`,
    /// `wrong_node`, `root_mismatch`, `bad_checkpoint_signature`, `truncated`,
    /// `undecodable_entry`, or `bad_anchor` (a retention anchor that does not match the seal,
    /// the stored tree or its `retention.pruned` event).
    pub kind: String,
    /// Where it shows, when it is at one entry.
    pub seq: Option<u64>,
    pub message: String,
}

impl VerifyResponse {
    pub fn from_outcome(outcome: &VerifyOutcome, from: u64) -> VerifyResponse {
        match outcome {
            VerifyOutcome::Intact(report) => VerifyResponse {
                ok: true,
                entries: report.entries,
                first_seq: report.first_seq,
                size: Some(report.size),
                root: Some(report.root.to_hex()),
                seals_checked: Some(report.seals_checked),
                checkpoints_checked: Some(report.checkpoints_checked),
                violation: None,
                pruned_below: None,
            },
            VerifyOutcome::Broken {
                problem,
                entries_checked,
            } => VerifyResponse {
                ok: false,
                entries: *entries_checked,
                first_seq: (*entries_checked > 0).then_some(from),
                size: None,
                root: None,
                seals_checked: None,
                checkpoints_checked: None,
                violation: Some(ViolationJson {
                    kind: problem.kind().to_owned(),
                    seq: problem.seq(),
                    message: problem.to_string(),
                }),
                pruned_below: None,
            },
        }
    }
}

/// Verifies the stored log against the node's seal key and every stored checkpoint.
#[utoipa::path(
    get,
    path = "/api/v1/verify",
    tag = "integrity",
    params(
        ("from" = Option<u64>, Query, description = "Start at this sequence number (trusting the stored state just before it); default 0"),
        ("format" = inline(Option<super::openapi::VerifyFormatDoc>), Query, description = FORMAT_DOC),
    ),
    responses(
        (status = 200, description = "Verification ran: `ok` says whether the log is intact; when not, `violation` names the first problem. With format=ndjson, streamed (application/x-ndjson): progress lines `{\"progress\":{\"checked\",\"total\"}}` while the walk runs, then this answer as the last line (or an error body `{\"error\":{…}}` for a failure that the whole answer would have sent with a 4xx/5xx status)", content(
                (VerifyResponse = "application/json"),
                (String = "application/x-ndjson"),
            )),
        (status = 400, description = "A bad `from` or an unknown parameter", body = super::ErrorBody),
        (status = 404, description = "`out_of_range`: `from` beyond the end of the log", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
        (status = 409, description = "`log_damaged`: stored data that verification needs to start (the retention anchor, a checkpoint row) cannot be read; damage met by the walk itself is reported in a 200 answer's `violation`", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn verify(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), &VERIFY_PARAMS)?;
    let from = params.u64("from")?;
    answer(state, caller, info, from, Vec::new(), streamed(&params)?).await
}

/// The `format` parameter of `/api/v1/verify`, as documented.
const FORMAT_DOC: &str = "json (default): the answer when the walk is done. ndjson: progress lines while it runs (a progress bar's source, as `evident verify` draws on a terminal), then the answer";

/// The query parameters of `GET` and `POST /api/v1/verify`.
const VERIFY_PARAMS: [&str; 2] = ["from", "format"];

/// Whether the answer is streamed (`format=ndjson`: progress lines, then the answer) rather
/// than sent whole when the walk is done (`format=json`, the default).
fn streamed(params: &Params) -> Result<bool, ApiError> {
    match params.get("format") {
        None | Some("json") => Ok(false),
        Some("ndjson") => Ok(true),
        Some(other) => Err(ApiError::bad_param(
            "format",
            format!("format {other:?}: expected json or ndjson"),
        )),
    }
}

/// One progress line of a streamed verification: entries checked so far of about `total`
/// (the log's size from the start point when the walk began).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct VerifyProgress {
    pub checked: u64,
    pub total: u64,
}

/// A progress line of a streamed verification.
#[derive(Debug, Clone, serde::Serialize)]
struct ProgressLine {
    progress: VerifyProgress,
}

/// `value` as one NDJSON line.
fn ndjson_line(value: &impl serde::Serialize) -> Result<axum::body::Bytes, std::io::Error> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(axum::body::Bytes::from(line))
}

/// Runs the verification and answers whole, or streamed with progress.
async fn answer(
    state: AppState,
    caller: Caller,
    info: RequestInfo,
    from: Option<u64>,
    trusted: Vec<String>,
    streamed: bool,
) -> Result<Response, ApiError> {
    if !streamed {
        return Ok(run_verify(state, caller, info, from, trusted, None)
            .await?
            .into_response());
    }
    let total = state
        .node()
        .sequencer()
        .size()
        .saturating_sub(from.unwrap_or(0));
    let (progress_tx, progress_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    // The walk is driven by the response body, as a whole answer's is by its handler: a
    // client that goes away ends it as it would end that one, and queues nothing behind the
    // one-at-a-time permit.
    let walk = Box::pin(run_verify(
        state,
        caller,
        info,
        from,
        trusted,
        Some(progress_tx),
    ));
    let progress_line = move |checked| {
        ndjson_line(&ProgressLine {
            progress: VerifyProgress { checked, total },
        })
    };
    let first = futures_util::stream::once(std::future::ready(progress_line(0)));
    // Progress as it comes while the walk runs; when it is done, its answer or its error.
    let rest = futures_util::stream::unfold(Some((walk, progress_rx)), move |state| async move {
        let (mut walk, mut rx) = state?;
        tokio::select! {
            biased;
            result = &mut walk => {
                let line = match result {
                    Ok(Json(response)) => ndjson_line(&response),
                    Err(error) => ndjson_line(&super::ErrorBody {
                        error: error.detail,
                    }),
                };
                Some((line, None))
            }
            Some(checked) = rx.recv() => Some((progress_line(checked), Some((walk, rx)))),
        }
    });
    let body = axum::body::Body::from_stream(first.chain(rest));
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// Most trusted checkpoints one `POST /api/v1/verify` may carry.
pub const MAX_TRUSTED_CHECKPOINTS: usize = 1000;

/// The body of `POST /api/v1/verify`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Signed checkpoints kept outside this node (C2SP signed notes, each the whole text as
    /// `GET /api/v1/checkpoint` served it, or as `evident checkpoint` saved it), 1 to 1000.
    #[schema(min_items = 1, max_items = 1000)]
    pub checkpoints: Vec<String>,
}

/// Verifies the stored log as `GET /api/v1/verify` does, and also against checkpoints the
/// caller kept elsewhere, so that a truncated or rolled-back log is caught.
#[utoipa::path(
    post,
    path = "/api/v1/verify",
    tag = "integrity",
    params(
        ("from" = Option<u64>, Query, description = "Start at this sequence number (trusting the stored state just before it); default 0. Trusted checkpoints smaller than it are not checked"),
        ("format" = inline(Option<super::openapi::VerifyFormatDoc>), Query, description = FORMAT_DOC),
    ),
    request_body(content = VerifyRequest, content_type = "application/json", description = "`{\"checkpoints\":[\"<signed note>\", …]}`: each must be signed by this node's checkpoint key. One of the stored log's size must match its root, one the walk reaches must match the root there (else `root_mismatch`), one larger than the stored log means it was truncated or rolled back (`truncated`, naming the first missing entry); one whose signature does not verify is `bad_checkpoint_signature`"),
    responses(
        (status = 200, description = "Verification ran: `ok` says whether the log is intact and consistent with every checkpoint given; when not, `violation` names the first problem. With format=ndjson, streamed: progress lines, then this answer as the last line (as for GET)", content(
                (VerifyResponse = "application/json"),
                (String = "application/x-ndjson"),
            )),
        (status = 400, description = "A bad `from` or an unknown parameter (`invalid_parameter`), or a body that is not `{\"checkpoints\":[1 to 1000 strings]}` (`invalid_body`)", body = super::ErrorBody),
        (status = 404, description = "`out_of_range`: `from` beyond the end of the log (checked before any given checkpoint is opened)", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
        (status = 409, description = "`log_damaged`: stored data that verification needs to start cannot be read", body = super::ErrorBody),
        (status = 413, description = "The body is larger than the server accepts", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn verify_trusting(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), &VERIFY_PARAMS)?;
    let from = params.u64("from")?;
    let streamed = streamed(&params)?;
    let request: VerifyRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected {{\"checkpoints\":[<signed checkpoint note>, …]}}: {e}"),
        )
        .with_field("checkpoints")
    })?;
    if request.checkpoints.is_empty() || request.checkpoints.len() > MAX_TRUSTED_CHECKPOINTS {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!(
                "checkpoints: give 1 to {MAX_TRUSTED_CHECKPOINTS} signed checkpoints, got {}",
                request.checkpoints.len()
            ),
        )
        .with_field("checkpoints"));
    }
    answer(state, caller, info, from, request.checkpoints, streamed).await
}

/// Verifies and records the run; `progress` gets the count of entries checked now and then.
async fn run_verify(
    state: AppState,
    caller: Caller,
    info: RequestInfo,
    from: Option<u64>,
    trusted: Vec<String>,
    progress: Option<tokio::sync::mpsc::UnboundedSender<u64>>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let trusted_count = trusted.len();
    let _permit = state
        .0
        .verify_permit
        .acquire()
        .await
        .map_err(|_| ApiError::shutting_down())?;
    let files = state.node().files().clone();
    let (verdict, pruned_below) = state
        .with_store(move |store| {
            let pruned_below = store
                .prune_anchor()
                .map_err(ApiError::from_store)?
                .map(|a| a.below_seq);
            let verdict = match verification::verify_store_trusting(
                store,
                files.seal_epochs(),
                files.verifiers(),
                files.node_id(),
                from,
                &trusted,
                &mut |checked| {
                    if let Some(progress) = &progress {
                        // A client that went away stops reading; the walk goes on.
                        let _ = progress.send(checked);
                    }
                },
            ) {
                Ok(outcome) => Ok(outcome),
                // A retention anchor that does not check is a finding, not a server error.
                Err(verification::VerifyError::BadAnchor { from, problem }) => {
                    tracing::error!(
                        at = from,
                        problem,
                        "verification: the retention anchor does not check"
                    );
                    Err(ViolationJson {
                        kind: verification::BAD_ANCHOR.to_owned(),
                        seq: Some(from),
                        message: format!(
                            "cannot start at the retention anchor (entry {from}): {problem}"
                        ),
                    })
                }
                // A given checkpoint the node did not sign says nothing about the stored log:
                // the verdict names it, but it is no finding against the node (else any reader
                // could make it read-only with a made-up note).
                Err(e @ verification::VerifyError::GivenCheckpoint { .. }) => Err(ViolationJson {
                    kind: "bad_checkpoint_signature".to_owned(),
                    seq: None,
                    message: e.to_string(),
                }),
                Err(e @ verification::VerifyError::StartBeyondEnd { .. }) => {
                    return Err(ApiError::out_of_range("from", e.to_string()));
                }
                Err(verification::VerifyError::Store(s)) => return Err(ApiError::from_store(s)),
                Err(other) => return Err(ApiError::internal(other.to_string())),
            };
            Ok((verdict, pruned_below))
        })
        .await?;
    let mut response = match &verdict {
        Ok(outcome) => {
            if let VerifyOutcome::Broken { problem, .. } = outcome {
                tracing::error!(?outcome, "verification found a problem");
                // A finding of the on-demand verification makes the node read-only too.
                state
                    .node()
                    .guard()
                    .report(Damage::from_problem(problem, DetectedBy::OnDemand));
            }
            VerifyResponse::from_outcome(outcome, from.unwrap_or(0))
        }
        Err(violation) => VerifyResponse {
            ok: false,
            entries: 0,
            first_seq: None,
            size: None,
            root: None,
            seals_checked: None,
            checkpoints_checked: None,
            violation: Some(violation.clone()),
            pruned_below: None,
        },
    };
    response.pruned_below = pruned_below;
    // Each verification run is recorded with its result; a broken log is critical.
    let (outcome_name, severity) = if response.ok {
        ("success", "notice")
    } else {
        ("failure", "critical")
    };
    let mut event = AuditEvent::new(action::VERIFIED, outcome_name, severity, "log", "*")
        .with("from", from.unwrap_or(0))
        .with("entries", response.entries)
        .with("ok", response.ok);
    if trusted_count > 0 {
        event = event.with("trusted_checkpoints", trusted_count as u64);
    }
    if let Some(size) = response.size {
        event = event.with("size", size);
    }
    if let Some(violation) = &response.violation {
        event = event
            .with("violation", violation.kind.clone())
            .with("violation_seq", violation.seq);
    }
    state.record(&AuditActor::Key(caller), &info, event).await;
    Ok(Json(response))
}

/// Health status.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `read_only` (200), or (503) `shutting_down` or `lease_lost`.
    pub status: &'static str,
}

/// Liveness and readiness; needs no key.
#[utoipa::path(
    get,
    path = "/api/v1/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "Serving (`ok`), or serving a damaged log read-only, refusing appends (`read_only`)", body = Health),
        (status = 400, description = "A query parameter (this route takes none)", body = super::ErrorBody),
        (status = 503, description = "Shutting down (`shutting_down`), or refusing appends because another process took the PostgreSQL writer lease (`lease_lost`: route writers elsewhere)", body = Health),
    ),
)]
pub async fn healthz(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<(StatusCode, Json<Health>), ApiError> {
    Params::parse(query.as_deref(), &[])?;
    Ok(if state.is_shutting_down() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "shutting_down",
            }),
        )
    } else if state.node().sequencer().read_only_problem().is_some() {
        // Reads are served, appends are not. 200, not 503: the process is healthy and a
        // restart would not help (an orchestrator's liveness probe would only loop it); the
        // status tells monitoring that writes are refused.
        (
            StatusCode::OK,
            Json(Health {
                status: "read_only",
            }),
        )
    } else if state.node().sequencer().lease_lost().is_some() {
        // Another process may be serving this node: route writers there.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "lease_lost",
            }),
        )
    } else {
        (StatusCode::OK, Json(Health { status: "ok" }))
    })
}

/// Readiness: whether the node takes writes.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// `ready` (200), or (503) `read_only` (the stored log is damaged), `lease_lost`
    /// (another process took the PostgreSQL writer lease) or `shutting_down`.
    pub status: &'static str,
    /// Why writes are refused (503 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong with the stored log (`read_only` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<Damage>,
    /// Consumers of the log (`<kind>:<name>`) with an open lag incident: their destination
    /// is behind. Appends are not affected (the log is their spool), so this alone never
    /// makes the node unready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lagging_consumers: Vec<String>,
    /// Syslog destinations (name, connected, lag, last error); informative, never a reason
    /// to be unready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forwarders: Vec<ForwarderReady>,
}

/// A syslog destination as `/readyz` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ForwarderReady {
    pub name: String,
    pub connected: bool,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
}

/// Readiness for writes; needs no key.
#[utoipa::path(
    get,
    path = "/api/v1/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The node takes writes (`ready`)", body = Ready),
        (status = 400, description = "A query parameter (this route takes none)", body = super::ErrorBody),
        (status = 503, description = "The node refuses writes: `read_only` (the stored log is damaged; `damage` says what, where and who found it), `lease_lost` or `shutting_down`; reads may go on", body = Ready),
    ),
)]
pub async fn readyz(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<(StatusCode, Json<Ready>), ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let sequencer = state.node().sequencer();
    let lagging_consumers: Vec<String> = state
        .consumers()
        .statuses()
        .into_iter()
        .filter(|s| s.lagging_since.is_some())
        .map(|s| format!("{}:{}", s.kind, s.name))
        .collect();
    let forwarders: Vec<ForwarderReady> = super::forwarders::statuses(&state)
        .into_iter()
        .map(|f| ForwarderReady {
            name: f.consumer.name,
            connected: f.connected,
            lag_events: f.consumer.lag_events,
            lag_seconds: f.consumer.lag_seconds,
            last_error: f.consumer.last_error,
        })
        .collect();
    let refused = |status, reason: String, damage| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Ready {
                status,
                reason: Some(reason),
                damage,
                lagging_consumers: lagging_consumers.clone(),
                forwarders: forwarders.clone(),
            }),
        )
    };
    Ok(if state.is_shutting_down() {
        refused(
            "shutting_down",
            "the node is shutting down".to_owned(),
            None,
        )
    } else if let Some(damage) = sequencer.damage() {
        refused("read_only", damage.describe(), Some(damage))
    } else if let Some(reason) = sequencer.lease_lost() {
        refused("lease_lost", reason, None)
    } else {
        (
            StatusCode::OK,
            Json(Ready {
                status: "ready",
                reason: None,
                damage: None,
                lagging_consumers,
                forwarders,
            }),
        )
    })
}

/// Readiness at the conventional root path (same answer as `/api/v1/readyz`); needs no key.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The node takes writes (`ready`)", body = Ready),
        (status = 400, description = "A query parameter (this route takes none)", body = super::ErrorBody),
        (status = 503, description = "The node refuses writes: `read_only` (the stored log is damaged; `damage` says what, where and who found it), `lease_lost` or `shutting_down`; reads may go on", body = Ready),
    ),
)]
pub async fn root_readyz(
    state: State<AppState>,
    query: RawQuery,
) -> Result<(StatusCode, Json<Ready>), ApiError> {
    readyz(state, query).await
}

/// The background verifier's last result and the node's read-only state.
#[utoipa::path(
    get,
    path = "/api/v1/verify/status",
    tag = "integrity",
    responses(
        (status = 200, description = "The last background verification pass (time, range, outcome, first problem) and, when the node refuses writes, the damage found (kind, seq, message, when, by which path)", body = VerifyStatus),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn verify_status(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<VerifyStatus>, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let node = state.node();
    Ok(Json(node.self_check().status(node)))
}

/// Every consumer of the committed log (forwarders, the publisher, webhook endpoints …):
/// where its durable cursor stands, how far behind it is, and its last error.
#[utoipa::path(
    get,
    path = "/api/v1/consumers",
    tag = "operations",
    responses(
        (status = 200, description = "One status per running consumer, by kind and name: next_seq (every entry below it is delivered), lag in entries and seconds, delivered and failed counts, the last error and whether a lag incident is open", body = Vec<ConsumerStatus>),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn consumers(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ConsumerStatus>>, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    Ok(Json(state.consumers().statuses()))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/api/v1/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "OpenMetrics text: evident_events_appended_total, evident_group_commit_events, evident_commit_seconds, evident_checkpoints_signed_total, evident_log_size, evident_http_requests_total{route,method,status}, evident_append_failures_total, evident_read_only, evident_verify_last_success_timestamp_seconds, evident_verify_failures_total, evident_verify_runs_total, evident_self_audit_dropped_total, evident_consumer_position{kind,name}, evident_consumer_lag_events{kind,name}, evident_consumer_lag_seconds{kind,name}, evident_consumer_delivered_total{kind,name}, evident_consumer_failures_total{kind,name}, evident_webhook_attempts_total{endpoint,outcome}", body = String, content_type = "application/openmetrics-text"),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn metrics(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let mut response = state.node().metrics().encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

/// Liveness and readiness at the conventional root path (same answer as `/api/v1/healthz`),
/// for load balancers and orchestrators; needs no key.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "Serving (`ok`), or serving a damaged log read-only, refusing appends (`read_only`)", body = Health),
        (status = 400, description = "A query parameter (this route takes none)", body = super::ErrorBody),
        (status = 503, description = "Shutting down (`shutting_down`), or refusing appends because another process took the PostgreSQL writer lease (`lease_lost`: route writers elsewhere)", body = Health),
    ),
)]
pub async fn root_healthz(
    state: State<AppState>,
    query: RawQuery,
) -> Result<(StatusCode, Json<Health>), ApiError> {
    healthz(state, query).await
}

/// Prometheus metrics at the path Prometheus scrapes by default (same answer as
/// `/api/v1/metrics`; configure the scrape job with `authorization: {credentials: KEY}`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "OpenMetrics text, as /api/v1/metrics", body = String, content_type = "application/openmetrics-text"),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn root_metrics(state: State<AppState>, query: RawQuery) -> Result<Response, ApiError> {
    metrics(state, query).await
}

/// This API's OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", body = Object),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn openapi(RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let mut response = super::openapi_json().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Any path that is not a route.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such route: {}", uri.path()))
}

/// A route asked with a method it does not take.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}
