//! The web dashboard served by the node itself: the embedded page and its scripts under `/`
//! (strict Content-Security-Policy, no third-party code), sign-in with an API key into a
//! server-side session (`sessions.rs`), sign-out, and how a session cookie signs an API
//! request in as its key (CSRF-checked), so every `/api/v1` route, its role checks and its
//! tenant scoping serve the page exactly as they serve a bearer key.

pub mod sessions;

use crate::audit::{AuditActor, AuditEvent, RequestInfo, action};
use crate::auth::{self, AuthFailure, Caller, Permission, Refusal};
use crate::http::{ApiError, AppState};
use crate::sequencer::now_ms;
use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use evident_core::event::Millis;
use evident_store::KeyRecord;
use serde::{Deserialize, Serialize};
pub use sessions::{Session, SessionError, Sessions};

/// Name of the session cookie.
pub const COOKIE: &str = "evident_session";
/// Header that carries the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Largest sign-in body.
const MAX_LOGIN_BYTES: usize = 4096;

/// The `[dashboard]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// Serve the dashboard at `/` (on by default; it needs a key to show anything).
    pub enabled: bool,
    /// A session unused this long (ms) is signed out (15 minutes).
    pub idle_timeout_ms: u64,
    /// A session is signed out this long (ms) after sign-in, used or not (8 hours).
    pub absolute_timeout_ms: u64,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            idle_timeout_ms: 15 * 60 * 1000,
            absolute_timeout_ms: 8 * 60 * 60 * 1000,
        }
    }
}

impl DashboardConfig {
    /// The session table these timeouts describe.
    pub fn sessions(&self) -> Sessions {
        let ms = |v: u64| Millis::try_from(v).unwrap_or(Millis::MAX);
        Sessions::new(ms(self.idle_timeout_ms), ms(self.absolute_timeout_ms))
    }
}

/// The embedded assets: (name, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "verify.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/verify.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
];
const INDEX_HTML: &str = include_str!("assets/index.html");

/// Only the page's own scripts, styles and API calls; nothing inline, nothing framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes (the page, its assets, sign-in, session, sign-out).
pub fn router(state: AppState) -> Router<AppState> {
    // A page load that presents no credentials at all is not a failed sign-in: it is answered
    // 401 without being recorded or counted against the address.
    let session = Router::new()
        .route("/dashboard/session", get(session_info))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_read,
        ))
        .route_layer(axum::middleware::from_fn(quiet_when_anonymous));
    let signed_in = Router::new()
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/export.json", get(export_json))
        .route("/dashboard/entry/{seq}", get(entry))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            auth::require_read,
        ));
    Router::new()
        .route("/", get(index))
        .route("/dashboard/assets/{name}", get(asset))
        .route("/dashboard/login", post(login))
        .merge(session)
        .merge(signed_in)
}

async fn quiet_when_anonymous(request: Request, next: axum::middleware::Next) -> Response {
    if request.headers().get(header::AUTHORIZATION).is_none() && cookie_of(&request).is_none() {
        return ApiError::unauthorized(AuthFailure::Session).into_response();
    }
    next.run(request).await
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, ty, body)| page(ty, body))
        .ok_or_else(|| ApiError::not_found(format!("no dashboard asset {name:?}")))
}

/// What the page learns at sign-in (and again from `GET /dashboard/session`).
#[derive(Debug, Serialize)]
struct SessionJson {
    key_id: String,
    role: &'static str,
    tenant: Option<String>,
    csrf_token: String,
    /// The node's C2SP verifier key: the page pins it for verifying proofs.
    public_key: String,
    node_id: String,
    idle_timeout_ms: Millis,
    expires_at: Millis,
    /// The configured four-eyes rules, by name (the review view's choices).
    four_eyes_rules: Vec<String>,
    /// Whether this node is part of a cluster (the review view then shows the nodes).
    cluster: bool,
    /// `[witness].policy_k`: valid cosignatures by distinct listed witnesses a checkpoint
    /// needs (0: no policy). Pinned by the page with `witness_keys`, like `public_key`.
    witness_policy_k: usize,
    /// `[witness].keys`: the cosigner verifier keys the page verifies cosignatures against.
    witness_keys: Vec<String>,
}

fn session_json(
    state: &AppState,
    caller: &Caller,
    session: &Session,
    sessions: &Sessions,
) -> SessionJson {
    SessionJson {
        key_id: caller.key_id.clone(),
        role: caller.role.as_str(),
        tenant: caller.tenant.clone(),
        csrf_token: session.csrf_token.clone(),
        public_key: state.node().files().verifier().to_vkey_string(),
        node_id: state.node().files().node_id().to_owned(),
        idle_timeout_ms: sessions.idle_ms(),
        expires_at: session.created_at.saturating_add(sessions.absolute_ms()),
        four_eyes_rules: state
            .node()
            .config()
            .four_eyes
            .iter()
            .map(|rule| rule.name.clone())
            .collect(),
        cluster: state.node().config().cluster.enabled(),
        witness_policy_k: state.node().config().witness.policy_k,
        witness_keys: state.node().config().witness.keys.clone(),
    }
}

fn cookie_of(request: &Request) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| sessions::cookie_value(h, COOKIE).map(str::to_owned))
}

/// What the session path needs of a request, taken before any await (a `Request` is not `Sync`).
#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// The session cookie's value.
    pub id: String,
    pub session: Result<Session, SessionError>,
    pub method: Method,
    pub csrf_token: Option<String>,
}

/// The session a request's cookie names (`None`: no session cookie), its idle deadline moved on.
pub fn session_of(state: &AppState, request: &Request, now: Millis) -> Option<SessionRequest> {
    let id = cookie_of(request)?;
    Some(SessionRequest {
        session: state.sessions().touch(&id, now),
        id,
        method: request.method().clone(),
        csrf_token: request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    })
}

/// Signs a request in by its session: the key behind it must still be valid (a revoked or
/// expired key ends its sessions), and a state-changing method must carry the session's
/// CSRF token (a refusal is recorded like any 403).
pub async fn authenticate_session(
    state: &AppState,
    info: &RequestInfo,
    request: SessionRequest,
    now: Millis,
) -> Result<Result<(Caller, KeyRecord), Refusal>, ApiError> {
    let session = match request.session {
        Ok(session) => session,
        Err(e) => {
            tracing::info!(ip = ?info.ip, reason = %e, "dashboard session refused");
            return Ok(Err(Refusal {
                failure: AuthFailure::Session,
                presented_key_id: None,
            }));
        }
    };
    let hash = session.secret_hash;
    let found = state
        .with_store(move |store| store.key_by_hash(&hash).map_err(ApiError::from_store))
        .await?;
    let checked = match found {
        Some(record) => auth::check_record(record, &session.key_id, &session.secret_hash, now),
        None => Err(AuthFailure::Unknown),
    };
    let (caller, record) = match checked {
        Ok(found) => found,
        Err(failure) => {
            state.sessions().close(&request.id);
            return Ok(Err(Refusal {
                failure,
                presented_key_id: Some(session.key_id),
            }));
        }
    };
    let safe = matches!(request.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let presented = request.csrf_token.as_deref();
    if !safe && !session.csrf_matches(presented) {
        tracing::warn!(key_id = %caller.key_id, "dashboard request refused: CSRF token missing or wrong");
        let error = ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            format!(
                "a dashboard session's {} request needs the session's CSRF token in {CSRF_HEADER}",
                info.method
            ),
        );
        let event = AuditEvent::new(
            action::CSRF_REFUSED,
            "denied",
            "warning",
            "route",
            format!("{} {}", info.method, info.path),
        )
        .with(
            "csrf_token",
            if presented.is_some() {
                "wrong"
            } else {
                "missing"
            },
        );
        return Err(state
            .refuse(AuditActor::Key(caller), info, event, error)
            .await);
    }
    Ok(Ok((caller, record)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    key: String,
}

fn set_cookie(state: &AppState, value: &str, max_age_s: i64) -> HeaderValue {
    let secure = if state.tls() { "; Secure" } else { "" };
    let text =
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}");
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("evident_session=; Max-Age=0"))
}

/// `POST /dashboard/login` with `{"key": "evk_…"}` (JSON only, which a cross-site form cannot
/// send): a readonly-or-above key opens a session. Failures are recorded and counted by the
/// brute-force limiter exactly as a bad bearer key is.
async fn login(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let info = auth::request_info(&request, &state.node().config().trusted_proxies);
    let now = now_ms();
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "sign in with Content-Type: application/json and a body {\"key\": \"evk_…\"}",
        ));
    }
    let body = axum::body::to_bytes(request.into_body(), MAX_LOGIN_BYTES)
        .await
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_body",
                format!("the sign-in body is larger than {MAX_LOGIN_BYTES} bytes"),
            )
        })?;
    let login: LoginRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("sign-in body: {e}; expected {{\"key\": \"evk_…\"}}"),
        )
        .with_field("key")
    })?;
    let header_text = format!("Bearer {}", login.key.trim());
    let outcome = auth::authenticate_async(state.store().clone(), Some(header_text), now).await?;
    let (caller, record) = match outcome {
        Ok(found) => found,
        Err(refusal) => {
            tracing::info!(ip = ?info.ip, reason = %refusal.failure, "dashboard sign-in refused");
            return Err(auth::refuse_unauthenticated(&state, &info, refusal).await);
        }
    };
    if !caller.role.allows(Permission::Read) {
        let error = ApiError::forbidden(format!(
            "API key {} has role {}, which may not read the log: the dashboard needs a readonly, admin or owner key",
            caller.key_id, caller.role
        ));
        let event = AuditEvent::new(
            action::FORBIDDEN,
            "denied",
            "warning",
            "route",
            format!("{} {}", info.method, info.path),
        )
        .with("needed", "read the log");
        return Err(state
            .refuse(AuditActor::Key(caller), &info, event, error)
            .await);
    }
    let sessions = state.sessions();
    let (id, session) = sessions
        .open(&caller.key_id, record.secret_hash, now)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    state
        .usage()
        .note(&caller.key_id, now, info.ip.map(|ip| ip.to_string()));
    let event = AuditEvent::new(
        action::SIGNED_IN,
        "success",
        "notice",
        "api_key",
        &caller.key_id,
    )
    .with("idle_timeout_ms", sessions.idle_ms())
    .with("absolute_timeout_ms", sessions.absolute_ms());
    state
        .record(&AuditActor::Key(caller.clone()), &info, event)
        .await;
    let json = session_json(&state, &caller, &session, sessions);
    let mut response = axum::Json(json).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&state, &id, sessions.absolute_ms() / 1000),
    );
    Ok(response)
}

/// `GET /dashboard/session`: the signed-in session (after a reload the page reads its CSRF
/// token and pinned key here).
async fn session_info(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let sessions = state.sessions();
    let session = cookie_of(&request)
        .and_then(|id| sessions.touch(&id, now_ms()).ok())
        .ok_or_else(|| ApiError::unauthorized(AuthFailure::Session))?;
    Ok(axum::Json(session_json(&state, &caller, &session, sessions)).into_response())
}

/// `POST /dashboard/logout` (CSRF-checked by the session middleware): ends the session.
async fn logout(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    axum::Extension(info): axum::Extension<RequestInfo>,
    request: Request,
) -> Result<Response, ApiError> {
    let closed = cookie_of(&request).and_then(|id| state.sessions().close(&id));
    if closed.is_none() {
        return Err(ApiError::unauthorized(AuthFailure::Session));
    }
    let event = AuditEvent::new(
        action::SIGNED_OUT,
        "success",
        "info",
        "api_key",
        &caller.key_id,
    );
    state.record(&AuditActor::Key(caller), &info, event).await;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state, "", 0));
    Ok(response)
}

/// `GET /dashboard/export.json?<filter>`: every matching entry as one JSON array, streamed
/// (no size cap), recorded as an export before any of it leaves, like the API's exports.
async fn export_json(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    axum::Extension(info): axum::Extension<RequestInfo>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // The audit log's filters (without paging), and the order.
    let params =
        crate::http::log::filter_query(query.as_deref(), &["order"], crate::sequencer::now_ms())?;
    let order = match params.get("order") {
        None | Some("asc") => evident_store::Order::Ascending,
        Some("desc") => evident_store::Order::Descending,
        Some(other) => {
            return Err(ApiError::bad_param(
                "order",
                format!("order \"{other}\": expected asc or desc"),
            ));
        }
    };
    let filter = crate::http::log::filter_from(&params, &caller)?;
    let mut asked = serde_json::Map::new();
    for (name, value) in params.pairs() {
        asked.insert(name.to_owned(), serde_json::Value::String(value.to_owned()));
    }
    let event = AuditEvent::new(
        action::EXPORTED,
        "success",
        "notice",
        "log",
        filter.tenant.as_deref().unwrap_or("*"),
    )
    .with("format", "json")
    .with("query", serde_json::Value::Object(asked));
    state.record(&AuditActor::Key(caller), &info, event).await;
    let store = state.store().clone();
    crate::http::stream::stream_response(
        "application/json",
        Some("attachment; filename=\"evident-export.json\""),
        move |out| crate::export::write_json(&*store, &filter, order, out).map(|_| ()),
    )
    .await
}

/// `GET /dashboard/entry/{seq}`: the one entry (the API's entry JSON), for a shared link to
/// an event's detail. Another tenant's entry is refused (and recorded) like its proof is.
async fn entry(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    axum::Extension(info): axum::Extension<RequestInfo>,
    Path(seq): Path<String>,
) -> Result<Response, ApiError> {
    let seq: u64 = seq.parse().map_err(|_| {
        ApiError::bad_param("seq", format!("seq {seq:?}: expected a sequence number"))
    })?;
    let found = state
        .with_store(move |store| {
            let filter = evident_store::Filter {
                from_seq: Some(seq),
                to_seq: seq.checked_add(1),
                ..evident_store::Filter::default()
            };
            let mut found = None;
            store
                .scan(
                    &filter,
                    evident_store::Order::Ascending,
                    None,
                    Some(1),
                    &mut |entry| {
                        found = Some(entry);
                        std::ops::ControlFlow::Break(())
                    },
                )
                .map_err(ApiError::from_store)?;
            Ok(found)
        })
        .await?;
    let Some(found) = found else {
        return Err(ApiError::not_found(format!(
            "entry {seq} is not in the log (beyond its end, or pruned)"
        ))
        .with_field("seq"));
    };
    if let Some(scope) = &caller.tenant {
        if found.event.tenant != *scope {
            return Err(state
                .refuse_cross_tenant(
                    &caller,
                    &info,
                    crate::http::OutsideTenant::Entry(seq),
                    "read it",
                )
                .await);
        }
    }
    Ok(axum::Json(crate::export::EntryJson::new(&found)).into_response())
}
