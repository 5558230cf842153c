//! The publisher's routes: its status (`GET /publisher`) and a publication on demand
//! (`POST /publish`, owner keys only), which signs a checkpoint of everything committed and
//! waits (up to `wait` seconds) until the bucket's checkpoint covers it.

use super::params::Params;
use super::{ApiError, AppState};
use crate::consumers::ConsumerStatus;
use crate::publish::PublishStatus;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use std::time::Duration;

/// Longest wait a `POST /publish` may ask for, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 600;
/// The wait when none is given.
pub const DEFAULT_WAIT_SECONDS: u64 = 60;

/// The publisher's state.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PublisherResponse {
    /// Whether `[publish]` names a target.
    pub configured: bool,
    /// What was published where, objects written, the schedule and the last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishStatus>,
    /// The publisher's cursor (kind `publisher`): every entry below `next_seq` is archived;
    /// lag, failures, last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<ConsumerStatus>,
}

/// What a publication on demand reached.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PublishResponse {
    /// Whether the bucket's checkpoint covers `target_size` now.
    pub published: bool,
    /// The size of the checkpoint signed for this publication (every entry committed then).
    pub target_size: u64,
    /// The publisher's state after the wait.
    pub status: PublisherResponse,
}

fn publisher_response(state: &AppState) -> PublisherResponse {
    let Some(handle) = state.publisher() else {
        return PublisherResponse {
            configured: false,
            publish: None,
            cursor: None,
        };
    };
    PublisherResponse {
        configured: true,
        publish: Some(handle.status()),
        cursor: state
            .consumers()
            .statuses_of("publisher")
            .into_iter()
            .next(),
    }
}

/// The publisher's status.
#[utoipa::path(
    get,
    path = "/api/v1/publisher",
    tag = "operations",
    responses(
        (status = 200, description = "Whether publishing is configured; the target, the size of the checkpoint in the bucket and when it was written, the last period published, objects written and found already there, the next scheduled run, the last error; and the cursor's status (lag in entries and seconds, failures)", body = PublisherResponse),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn status(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<PublisherResponse>, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    Ok(Json(publisher_response(&state)))
}

/// Publishes now.
#[utoipa::path(
    post,
    path = "/api/v1/publish",
    tag = "operations",
    params(
        ("wait" = Option<u64>, Query, minimum = 0, maximum = 600, description = "Seconds to wait for the publication to finish (0 to 600, default 60; 0: do not wait)"),
    ),
    responses(
        (status = 200, description = "The bucket's checkpoint covers every entry committed when the request came", body = PublishResponse),
        (status = 202, description = "Requested; not finished within `wait` (see `status`, e.g. `cursor.last_error` while the bucket is unreachable)", body = PublishResponse),
        (status = 400, description = "A bad `wait`, or an unknown query parameter", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "Only owner keys may publish on demand", body = super::ErrorBody),
        (status = 409, description = "Publishing is not configured (`[publish]` has no `target`)", body = super::ErrorBody),
        (status = 503, description = "The node is shutting down or refuses writes", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn publish(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    let params = Params::parse(query.as_deref(), &["wait"])?;
    let wait = match params.get("wait") {
        None => DEFAULT_WAIT_SECONDS,
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) if seconds <= MAX_WAIT_SECONDS => seconds,
            _ => {
                return Err(ApiError::bad_param(
                    "wait",
                    format!("{text:?} is not a number of seconds from 0 to {MAX_WAIT_SECONDS}"),
                ));
            }
        },
    };
    let Some(handle) = state.publisher().cloned() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_configured",
            "publishing is not configured: set [publish] target in the node's configuration",
        ));
    };
    let checkpoint = state
        .node()
        .sequencer()
        .force_checkpoint()
        .await
        .map_err(ApiError::from_sequencer)?;
    let target_size = checkpoint.size;
    handle.request(target_size);
    let published = wait > 0
        && handle
            .wait_published(target_size, Duration::from_secs(wait))
            .await;
    let published = published || handle.status().published_size >= target_size;
    let status = if published {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(PublishResponse {
            published,
            target_size,
            status: publisher_response(&state),
        }),
    ))
}
