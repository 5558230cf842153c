//! The API's one error shape, `{"error":{"code","message","field"?,"index"?}}`, with the HTTP
//! status each kind of failure gets. Handlers return [`ApiError`]; nothing else writes errors.

use crate::auth::AuthFailure;
use crate::sequencer::SequencerError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use evident_store::StoreError;

/// The error body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_event`, `unknown_parameter`.
    pub code: &'static str,
    /// Human-readable statement of the problem.
    pub message: String,
    /// The offending field (dotted path) or query parameter, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Index (from 0) of the offending event in a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: ErrorDetail,
    /// Seconds for a `Retry-After` header (429, and 503 `lease_lost`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: ErrorDetail {
                code,
                message: message.into(),
                field: None,
                index: None,
            },
            retry_after: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.detail.field = Some(field.into());
        self
    }

    pub fn with_index(mut self, index: usize) -> ApiError {
        self.detail.index = Some(index);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A bad query parameter value.
    pub fn bad_param(name: &str, message: impl Into<String>) -> ApiError {
        ApiError::bad_request("invalid_parameter", message).with_field(name)
    }

    pub fn unauthorized(failure: AuthFailure) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            failure.to_string(),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// The caller's address (for requests without a valid key) or key (for its refused
    /// requests) is blocked by a brute-force limiter for `retry_ms` more.
    pub fn too_many_failures(retry_ms: i64) -> ApiError {
        let seconds = (retry_ms.max(0) + 999) / 1000;
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            format!("too many refused requests; try again in {seconds} seconds"),
        )
        .with_retry_after(seconds.max(1) as u64)
    }

    fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    /// A well-formed request for a tree size, entry or range the log does not hold (yet): a
    /// 404 `out_of_range` naming the parameter.
    pub fn out_of_range(name: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "out_of_range", message).with_field(name)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        let message = message.into();
        tracing::error!(%message, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the node is shutting down; retry on another node or later",
        )
    }

    /// The stored log is damaged where this request needs it (`seq`, when the entry is
    /// known): a finding about the data, not a fault of the server, so 409 `log_damaged`.
    pub fn log_damaged(seq: Option<u64>, problem: impl std::fmt::Display) -> ApiError {
        let at = seq.map_or_else(String::new, |seq| format!(" at entry {seq}"));
        ApiError::new(
            StatusCode::CONFLICT,
            "log_damaged",
            format!(
                "the stored log is damaged{at}: {problem}; GET /api/v1/verify (or `evident \
                 verify --data-dir`) locates every problem"
            ),
        )
    }

    /// [`ApiError::from_store`] for a read of something the log must hold (an entry below
    /// its size, a Merkle node of its tree): its absence is damage too.
    pub fn from_store_damage(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => {
                ApiError::log_damaged(None, format!("{what} is missing from the store"))
            }
            other => ApiError::from_store(other),
        }
    }

    pub fn from_store(e: StoreError) -> ApiError {
        match e {
            StoreError::Corrupt { seq, problem } => ApiError::log_damaged(seq, problem),
            StoreError::Full(m) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                format!("storage full: {m}"),
            ),
            StoreError::NotFound(m) => ApiError::not_found(format!("not found: {m}")),
            other => ApiError::internal(format!("storage: {other}")),
        }
    }

    pub fn from_sequencer(e: SequencerError) -> ApiError {
        match e {
            SequencerError::StorageFull(m) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                format!("storage full, nothing was stored: {m}"),
            ),
            SequencerError::ShuttingDown => ApiError::shutting_down(),
            SequencerError::ReadOnly(problem) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "read_only",
                format!(
                    "nothing was stored: the log is read-only because its stored data is \
                     damaged ({problem}); GET /api/v1/verify/status says what was found"
                ),
            ),
            // The reason says what was lost and what the node does about it.
            SequencerError::LeaseLost(reason) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "lease_lost",
                format!("nothing was stored: {reason}"),
            )
            .with_retry_after(crate::sequencer::RETAKE_EVERY.as_secs().max(1)),
            other => ApiError::internal(other.to_string()),
        }
    }

    /// A blocking task that panicked or was cancelled.
    pub fn from_join(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal(format!("background task failed: {e}"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.detail.code,
            self.detail.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let retry_after = self.retry_after;
        let mut response = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if let Some(seconds) = retry_after {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"evident\""),
            );
        }
        // Refused before its body was read (too large, or too slow): the rest of the body is
        // still on the connection, so the server closes it after this answer. Saying so keeps
        // a client from reusing the connection for its next request and losing it.
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
