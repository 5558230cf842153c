//! The HTTP API (axum): routes under `/api/v1`, the shared [`AppState`], authentication layers
//! and request metrics. Handlers are thin: they parse and check the request, call the
//! sequencer, the store (on blocking threads) or the export and verification modules, and
//! shape the answer. Route by route: `events.rs` (append), `log.rs` (query and exports),
//! `proofs.rs` (checkpoint, public key, proofs), `ops.rs` (verify, health, metrics, OpenAPI),
//! `keys.rs` (API key management), `reviews.rs` (four-eyes reports). [`ROUTES`] says which permission each route needs; the
//! router and the OpenAPI document (`x-evident-permission`) both follow it. Every response
//! carries the security headers of [`security_headers`].

mod error;
mod events;
mod forwarders;
mod histogram;
mod keys;
pub(crate) mod log;
mod openapi;
mod ops;
pub(crate) mod params;
pub mod proofs;
mod publish;
mod reviews;
pub(crate) mod stream;
mod witness;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use keys::{DEFAULT_GRACE_SECONDS, MAX_GRACE_SECONDS};
pub use log::encode_cursor;
pub use openapi::openapi_json;

use crate::audit::{AuditActor, AuditEvent, FailureLimiter, FailureVerdict, RequestInfo, action};
use crate::auth::{self, Caller, Permission, UsageTracker};
use crate::metrics::HttpLabels;
use crate::node::Node;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
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
    /// Failures to authenticate, per source address.
    unauthenticated: FailureLimiter<std::net::IpAddr>,
    /// Refusals of authenticated keys, per key id.
    refused_keys: FailureLimiter<String>,
    /// Whether the listener speaks TLS (then responses carry HSTS).
    tls: AtomicBool,
    shutting_down: AtomicBool,
    /// Full verifications read the whole log: one at a time.
    verify_permit: tokio::sync::Semaphore,
    /// The append bodies held at once, in KiB (`max_pending_append_bytes`; see
    /// `events::append`).
    append_budget: tokio::sync::Semaphore,
    /// The running consumers of the committed log and their delivery state.
    consumers: crate::consumers::Consumers,
    /// The alert rules in force and the webhook endpoints.
    alerts: crate::alerts::Alerting,
    /// The publisher's requests and status, when publishing is configured.
    publisher: std::sync::OnceLock<crate::publish::PublishHandle>,
    /// The syslog forwarders' destinations and counters.
    forwarders: crate::forward::Forwarders,
    /// The dashboard's signed-in sessions.
    sessions: crate::dashboard::Sessions,
    /// The mTLS client to the cluster's peers, built on first use (`[cluster]` only).
    peer_client: std::sync::OnceLock<Result<crate::cluster::PeerClient, String>>,
    /// The signing keys the witness trusts for each peer (in memory, see `witness::peer_keys`).
    peer_keys: crate::witness::PeerKeys,
}

impl AppState {
    pub fn new(node: Node) -> AppState {
        let config = node.config();
        let (limit, window, block) = (
            config.auth_failure_limit,
            config.auth_failure_window_ms,
            config.auth_block_ms,
        );
        let tls = AtomicBool::new(config.tls_enabled());
        let alerts = crate::alerts::Alerting::new(&config.alerts);
        let sessions = config.dashboard.sessions();
        let append_budget = config.max_pending_append_bytes.div_ceil(1024);
        AppState(Arc::new(Inner {
            node,
            usage: UsageTracker::default(),
            unauthenticated: FailureLimiter::new(limit, window, block),
            refused_keys: FailureLimiter::new(limit, window, block),
            tls,
            shutting_down: AtomicBool::new(false),
            verify_permit: tokio::sync::Semaphore::new(1),
            append_budget: tokio::sync::Semaphore::new(append_budget),
            consumers: crate::consumers::Consumers::default(),
            alerts,
            publisher: std::sync::OnceLock::new(),
            forwarders: crate::forward::Forwarders::default(),
            sessions,
            peer_client: std::sync::OnceLock::new(),
            peer_keys: crate::witness::PeerKeys::default(),
        }))
    }

    /// Waits until `bytes` more of append bodies may be held (at most the whole budget, so
    /// that a body larger than it goes through alone); held until the permit is dropped.
    /// `None` only if the budget were closed, which nothing does.
    pub(crate) async fn append_permit(
        &self,
        bytes: u64,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let budget = self.0.node.config().max_pending_append_bytes.div_ceil(1024);
        let kib = usize::try_from(bytes.div_ceil(1024))
            .unwrap_or(usize::MAX)
            .clamp(1, budget.max(1));
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        self.0.append_budget.acquire_many(kib).await.ok()
    }

    /// The client to this node's cluster peers (an error when `[cluster]` is off or its
    /// files cannot be loaded).
    pub fn peer_client(&self) -> Result<&crate::cluster::PeerClient, String> {
        self.0
            .peer_client
            .get_or_init(|| {
                let config = &self.0.node.config().cluster;
                if !config.enabled() {
                    return Err(
                        "this node is not part of a cluster ([cluster] is not set)".to_owned()
                    );
                }
                crate::cluster::PeerClient::new(config).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The signing keys this node's witness trusts for each cluster peer.
    pub fn peer_keys(&self) -> &crate::witness::PeerKeys {
        &self.0.peer_keys
    }

    pub fn node(&self) -> &Node {
        &self.0.node
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.0.node.store()
    }

    /// The consumers of the committed log (forwarders, publisher, webhooks …).
    pub fn consumers(&self) -> &crate::consumers::Consumers {
        &self.0.consumers
    }

    /// The alert rules in force and the webhook endpoints.
    pub fn alerts(&self) -> &crate::alerts::Alerting {
        &self.0.alerts
    }

    /// The publisher's handle (`None` when publishing is off).
    pub fn publisher(&self) -> Option<&crate::publish::PublishHandle> {
        self.0.publisher.get()
    }

    /// Installs the publisher's handle (once, at start).
    pub fn set_publisher(&self, handle: crate::publish::PublishHandle) {
        let _ = self.0.publisher.set(handle);
    }

    /// The syslog forwarders (their destinations and counters).
    pub fn forwarders(&self) -> &crate::forward::Forwarders {
        &self.0.forwarders
    }

    pub fn usage(&self) -> &UsageTracker {
        &self.0.usage
    }

    /// Says whether responses go out over TLS (HSTS is sent then).
    pub fn set_tls(&self, on: bool) {
        self.0.tls.store(on, Ordering::Release);
    }

    /// The dashboard's signed-in sessions.
    pub fn sessions(&self) -> &crate::dashboard::Sessions {
        &self.0.sessions
    }

    pub(crate) fn tls(&self) -> bool {
        self.0.tls.load(Ordering::Acquire)
    }

    /// Appends a self-audit event and waits until it is durable. A failure (the node is
    /// shutting down, storage full) is logged, never passed on: the request's own answer
    /// stands.
    pub async fn record(&self, actor: &AuditActor, request: &RequestInfo, event: AuditEvent) {
        let action = event.action;
        let input = event.into_input(actor, request);
        if let Err(e) = self.node().sequencer().append(vec![input]).await {
            // Counted, never dropped silently.
            self.node().metrics().self_audit_dropped.inc();
            tracing::warn!(action, error = %e, "cannot record a self-audit event");
        }
    }

    /// Refuses a request with `error` (a 401, 403 or a tenant-scoped 404): counts the failure
    /// (for an unauthenticated `actor` against its address, for a key against the key) and
    /// records `event`; or, when this failure starts a burst, records the one critical burst
    /// event instead and answers 429; or, when the source is blocked already, answers 429
    /// and records nothing.
    pub async fn refuse(
        &self,
        actor: AuditActor,
        request: &RequestInfo,
        event: AuditEvent,
        error: ApiError,
    ) -> ApiError {
        let now = crate::sequencer::now_ms();
        let verdict = match (&actor, request.ip) {
            (AuditActor::Key(caller), _) => self.0.refused_keys.failure(&caller.key_id, now),
            (_, Some(ip)) => self.0.unauthenticated.failure(&ip, now),
            (_, None) => FailureVerdict::Counted,
        };
        match verdict {
            FailureVerdict::Counted => {
                self.record(&actor, request, event).await;
                error
            }
            FailureVerdict::Blocked { blocked_until } => {
                ApiError::too_many_failures(blocked_until.saturating_sub(now))
            }
            FailureVerdict::BurstStarted {
                failures,
                blocked_until,
            } => {
                let config = self.node().config();
                let (burst, burst_actor) = match &actor {
                    AuditActor::Key(caller) => {
                        tracing::warn!(key_id = %caller.key_id, failures, "key's refused requests blocked after repeated refusals");
                        (
                            AuditEvent::new(
                                action::FORBIDDEN_BURST,
                                "denied",
                                "critical",
                                "api_key",
                                &caller.key_id,
                            ),
                            actor.clone(),
                        )
                    }
                    _ => {
                        tracing::warn!(ip = ?request.ip, failures, "address blocked after repeated failures");
                        (
                            AuditEvent::new(
                                action::BRUTE_FORCE,
                                "denied",
                                "critical",
                                "address",
                                request.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                            ),
                            // The burst event speaks for the whole burst, whoever sent its
                            // last request.
                            AuditActor::Anonymous {
                                presented_key_id: None,
                            },
                        )
                    }
                };
                let burst = burst
                    .with("failures", failures)
                    .with("window_ms", config.auth_failure_window_ms)
                    .with("blocked_ms", config.auth_block_ms)
                    .with(
                        "blocked_until",
                        evident_core::event::format_rfc3339_millis(blocked_until),
                    )
                    .with("last_attempt", event.action);
                self.record(&burst_actor, request, burst).await;
                ApiError::too_many_failures(blocked_until.saturating_sub(now))
            }
        }
    }

    /// Refuses a tenant-scoped `caller`'s attempt to reach `outside` its tenant: recorded,
    /// counted like any refusal. The answer never names the tenant that owns an entry or a
    /// key (the event, recorded in the caller's tenant where its key can read it, neither):
    /// a tenant the caller named gets 403, another tenant's entry the same 403 whoever owns
    /// it, another tenant's key the same 404 as a key that does not exist.
    pub async fn refuse_cross_tenant(
        &self,
        caller: &Caller,
        request: &RequestInfo,
        outside: OutsideTenant<'_>,
        what: &str,
    ) -> ApiError {
        let scope = caller.tenant.as_deref().unwrap_or_default();
        tracing::warn!(key_id = %caller.key_id, "request refused: another tenant");
        let (error, target_kind, target_id) = match outside {
            OutsideTenant::Named(tenant) => (
                ApiError::forbidden(format!(
                    "API key {} is scoped to tenant {scope:?} and may not {what} of another tenant",
                    caller.key_id
                ))
                .with_field("tenant"),
                "tenant",
                tenant.to_owned(),
            ),
            OutsideTenant::Entry(seq) => (
                ApiError::forbidden(format!(
                    "API key {} is scoped to tenant {scope:?} and may not {what}: entry {seq} is not one of that tenant's events",
                    caller.key_id
                ))
                .with_field("seq"),
                "entry",
                seq.to_string(),
            ),
            OutsideTenant::Key(id) => (
                ApiError::not_found(crate::auth::KeyError::UnknownKey(id.to_owned()).to_string()),
                "api_key",
                id.to_owned(),
            ),
        };
        let event = AuditEvent::new(
            action::CROSS_TENANT,
            "denied",
            "warning",
            target_kind,
            target_id,
        )
        .with("attempted", what)
        .with("key_tenant", scope);
        self.refuse(AuditActor::Key(caller.clone()), request, event, error)
            .await
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

/// What a tenant-scoped key reached for outside its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideTenant<'a> {
    /// A tenant the request named.
    Named(&'a str),
    /// An entry (by seq) of another tenant.
    Entry(u64),
    /// A key id that is not one of the tenant's keys (another tenant's, or none at all).
    Key(&'a str),
}

/// Every API route (method, OpenAPI path) and the permission it needs (`None`: no key).
pub const ROUTES: &[(Method, &str, Option<Permission>)] = &[
    (Method::POST, "/api/v1/events", Some(Permission::Append)),
    (Method::GET, "/api/v1/audit-log", Some(Permission::Read)),
    (
        Method::GET,
        "/api/v1/audit-log/histogram",
        Some(Permission::Read),
    ),
    (Method::GET, "/api/v1/checkpoint", Some(Permission::Read)),
    (Method::GET, "/api/v1/public-key", Some(Permission::Read)),
    (
        Method::GET,
        "/api/v1/proof/inclusion",
        Some(Permission::Read),
    ),
    (
        Method::GET,
        "/api/v1/proof/consistency",
        Some(Permission::Read),
    ),
    (Method::GET, "/api/v1/verify", Some(Permission::Read)),
    (Method::POST, "/api/v1/verify", Some(Permission::Read)),
    (Method::GET, "/api/v1/verify/status", Some(Permission::Read)),
    (Method::GET, "/api/v1/consumers", Some(Permission::Read)),
    (
        Method::GET,
        "/api/v1/reviews/four-eyes",
        Some(Permission::Read),
    ),
    (Method::GET, "/api/v1/webhooks", Some(Permission::Read)),
    (
        Method::POST,
        "/api/v1/webhooks/{name}/enable",
        Some(Permission::Owner),
    ),
    (Method::GET, "/api/v1/alerts/rules", Some(Permission::Owner)),
    (
        Method::POST,
        "/api/v1/alerts/rules",
        Some(Permission::Owner),
    ),
    (
        Method::DELETE,
        "/api/v1/alerts/rules/{name}",
        Some(Permission::Owner),
    ),
    (Method::GET, "/api/v1/publisher", Some(Permission::Read)),
    (Method::POST, "/api/v1/publish", Some(Permission::Owner)),
    (Method::GET, "/api/v1/forwarders", Some(Permission::Read)),
    (Method::GET, "/api/v1/witness", Some(Permission::Read)),
    (
        Method::POST,
        "/api/v1/witness/add-checkpoint",
        Some(Permission::Witness),
    ),
    (Method::GET, "/api/v1/readyz", None),
    (Method::GET, "/readyz", None),
    (Method::GET, "/api/v1/openapi.json", Some(Permission::Read)),
    (Method::GET, "/api/v1/metrics", Some(Permission::Read)),
    (Method::GET, "/api/v1/healthz", None),
    (Method::GET, "/metrics", Some(Permission::Read)),
    (Method::GET, "/healthz", None),
    (Method::GET, "/api/v1/keys", Some(Permission::ManageKeys)),
    (Method::POST, "/api/v1/keys", Some(Permission::ManageKeys)),
    (
        Method::POST,
        "/api/v1/keys/{id}/revoke",
        Some(Permission::ManageKeys),
    ),
    (
        Method::POST,
        "/api/v1/keys/{id}/rotate",
        Some(Permission::ManageKeys),
    ),
];

/// The API router, with every route, its authentication and the request metrics.
pub fn router(state: AppState) -> Router {
    let read = Router::new()
        .route("/audit-log", get(log::audit_log))
        .route("/audit-log/histogram", get(histogram::histogram))
        .route("/checkpoint", get(proofs::checkpoint))
        .route("/public-key", get(proofs::public_key))
        .route("/proof/inclusion", get(proofs::inclusion))
        .route("/proof/consistency", get(proofs::consistency))
        .route("/verify", get(ops::verify).post(ops::verify_trusting))
        .route("/verify/status", get(ops::verify_status))
        .route("/consumers", get(ops::consumers))
        .route("/reviews/four-eyes", get(reviews::four_eyes))
        .route("/webhooks", get(crate::webhooks::routes::status))
        .route("/publisher", get(publish::status))
        .route("/forwarders", get(forwarders::forwarders))
        .route("/witness", get(witness::status))
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
    let manage = Router::new()
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{id}/revoke", post(keys::revoke))
        .route("/keys/{id}/rotate", post(keys::rotate))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_manage_keys,
        ));
    let owner = Router::new()
        .route(
            "/alerts/rules",
            get(crate::alerts::routes::list).post(crate::alerts::routes::create),
        )
        .route(
            "/alerts/rules/{name}",
            axum::routing::delete(crate::alerts::routes::delete),
        )
        .route(
            "/webhooks/{name}/enable",
            post(crate::webhooks::routes::enable),
        )
        .route("/publish", post(publish::publish))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_owner,
        ));
    let witnessing = Router::new()
        .route("/witness/add-checkpoint", post(witness::add_checkpoint))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_witness,
        ));
    let api = Router::new()
        .merge(read)
        .merge(witnessing)
        .merge(append)
        .merge(manage)
        .merge(owner)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    // The conventional root paths of the two operations routes, for probes and scrapers.
    let root = Router::new()
        .route(
            "/metrics",
            get(ops::root_metrics).route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_read,
            )),
        )
        .route("/healthz", get(ops::root_healthz))
        .route("/readyz", get(ops::root_readyz));
    let dashboard = if state.node().config().dashboard.enabled {
        crate::dashboard::router(state.clone())
    } else {
        Router::new()
    };
    Router::new()
        .nest("/api/v1", api)
        .merge(root)
        .merge(dashboard)
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

/// Adds the security headers to every response: no MIME sniffing, no caching (every answer
/// is API data, often sensitive), no framing, no referrer, and HSTS when TLS is on.
async fn security_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The dashboard's page sets its own (still strict) policy.
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if state.tls() {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
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
