//! The HTTP API (axum): routes under `/api/v1`, the shared [`AppState`], authentication layers
//! and request metrics. Handlers are thin: they parse and check the request, call the
//! sequencer, the store (on blocking threads) or the export and verification modules, and
//! shape the answer. Route by route: `events.rs` (append), `log.rs` (query and exports),
//! `proofs.rs` (checkpoint, public key, proofs), `ops.rs` (verify, health, metrics, OpenAPI).

mod error;
mod events;
mod log;
mod openapi;
mod ops;
mod params;
mod proofs;
mod stream;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use openapi::openapi_json;

use crate::auth::{self, UsageTracker};
use crate::metrics::HttpLabels;
use crate::node::Node;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use evident_store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    node: Node,
    usage: UsageTracker,
    shutting_down: AtomicBool,
    /// Full verifications read the whole log: one at a time.
    verify_permit: tokio::sync::Semaphore,
}

impl AppState {
    pub fn new(node: Node) -> AppState {
        AppState(Arc::new(Inner {
            node,
            usage: UsageTracker::default(),
            shutting_down: AtomicBool::new(false),
            verify_permit: tokio::sync::Semaphore::new(1),
        }))
    }

    pub fn node(&self) -> &Node {
        &self.0.node
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.0.node.store()
    }

    pub(crate) fn usage(&self) -> &UsageTracker {
        &self.0.usage
    }

    /// From now on appends and health checks answer 503.
    pub fn begin_shutdown(&self) {
        self.0.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::Acquire) || self.0.node.sequencer().is_closing()
    }

    /// Runs `f` with the store on a blocking thread.
    pub(crate) async fn with_store<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, ApiError> + Send + 'static,
    {
        let store = self.store().clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(ApiError::from_join)?
    }
}

/// The API router, with every route, its authentication and the request metrics.
pub fn router(state: AppState) -> Router {
    let read = Router::new()
        .route("/audit-log", get(log::audit_log))
        .route("/checkpoint", get(proofs::checkpoint))
        .route("/public-key", get(proofs::public_key))
        .route("/proof/inclusion", get(proofs::inclusion))
        .route("/proof/consistency", get(proofs::consistency))
        .route("/verify", get(ops::verify))
        .route("/openapi.json", get(ops::openapi))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_read,
        ));
    let append = Router::new()
        .route("/events", post(events::append))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_append,
        ));
    let api = Router::new()
        .merge(read)
        .merge(append)
        .route("/healthz", get(ops::healthz));
    Router::new()
        .nest("/api/v1", api)
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts every request by route template and status, and logs it (without secrets: the
/// query string and headers are not logged).
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    tracing::debug!(%method, %route, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    state
        .node()
        .metrics()
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status,
        })
        .inc();
    response
}

#[cfg(test)]
mod tests;
