//! The key routes under `/api/v1/keys`: list (never a secret), create (the key is in the
//! answer, once), revoke (at once) and rotate (a new key; the old one keeps working for an
//! overlap window). Who may manage which keys: [`Role::may_manage`], and a tenant-scoped key
//! only keys of its own tenant. Every change is recorded in the log as a self-audit event.

use super::AppState;
use super::error::ApiError;
use super::params::Params;
use crate::audit::{AuditActor, AuditEvent, RequestInfo, action};
use crate::auth::{self, Caller, KeyError, Role};
use crate::sequencer::now_ms;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use evident_core::event::{Millis, format_rfc3339_millis};
use evident_store::KeyRecord;

/// Longest overlap window a rotation may ask for (30 days).
pub const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

/// A key as listed: everything but the secret, which is never stored.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct KeyJson {
    /// The visible, non-secret prefix of the key (`evk_` and 12 hex digits).
    pub id: String,
    pub role: String,
    /// The tenant the key is scoped to; `null`: every tenant.
    pub tenant: Option<String>,
    pub label: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// When the key stops working (set on the old key by a rotation).
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
    /// `active`, `expiring` (in a rotation's overlap window), `expired` or `revoked`.
    pub status: &'static str,
}

impl KeyJson {
    fn new(record: &KeyRecord, now: Millis, pending: Option<(Millis, Option<String>)>) -> KeyJson {
        let (last_at, last_ip) = match pending {
            Some((at, ip)) if record.last_used_at.is_none_or(|stored| stored <= at) => {
                (Some(at), ip)
            }
            _ => (record.last_used_at, record.last_used_ip.clone()),
        };
        let status = match (record.revoked_at, record.expires_at) {
            (Some(_), _) => "revoked",
            (None, Some(at)) if at <= now => "expired",
            (None, Some(_)) => "expiring",
            (None, None) => "active",
        };
        KeyJson {
            id: record.id.clone(),
            role: record.role.clone(),
            tenant: record.tenant.clone(),
            label: record.label.clone(),
            created_at: format_rfc3339_millis(record.created_at),
            revoked_at: record.revoked_at.map(format_rfc3339_millis),
            expires_at: record.expires_at.map(format_rfc3339_millis),
            last_used_at: last_at.map(format_rfc3339_millis),
            last_used_ip: last_ip,
            status,
        }
    }
}

/// The key list.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyJson>,
}

/// What `POST /api/v1/keys` takes.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// owner, admin, readonly or writer.
    pub role: Role,
    /// Scope the key to one tenant. A tenant-scoped caller's keys are always scoped to its
    /// tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// A note saying what the key is for.
    #[serde(default)]
    pub label: Option<String>,
}

/// How long the old key keeps working after a rotation that does not say (24 hours): a day
/// lets every holder of the old key (a deployment, a nightly job, colleagues in another
/// time zone) switch to the new one, while a leaked old key still dies within the day.
pub const DEFAULT_GRACE_SECONDS: u64 = 24 * 3600;

/// What `POST /api/v1/keys/{id}/rotate` takes (the body may be empty).
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// Seconds the old key keeps working beside the new one (default 86400, 24 hours; at
    /// most 2592000, 30 days; 0: it stops at once).
    #[serde(
        default = "default_grace_seconds",
        deserialize_with = "integer_seconds"
    )]
    #[schema(default = 86400, maximum = 2592000)]
    pub grace_seconds: u64,
    /// Required (`true`) to rotate the very key the request is made with with a grace of 0:
    /// without it such a request is refused, since a lost answer would leave the caller with
    /// neither key.
    #[serde(default)]
    pub confirm_own_key: bool,
}

fn default_grace_seconds() -> u64 {
    DEFAULT_GRACE_SECONDS
}

impl Default for RotateKeyRequest {
    fn default() -> Self {
        RotateKeyRequest {
            grace_seconds: DEFAULT_GRACE_SECONDS,
            confirm_own_key: false,
        }
    }
}

/// A non-negative integer, given as `26` or `26.0` alike (JSON Schema's `integer`).
fn integer_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = <serde_json::Number as serde::Deserialize>::deserialize(d)?;
    evident_core::event::integer_value(&n)
        .and_then(|i| u64::try_from(i).ok())
        .or_else(|| n.as_u64())
        .ok_or_else(|| {
            serde::de::Error::custom(format!("grace_seconds: {n} is not a non-negative integer"))
        })
}

/// A new key: the secret, shown only in this answer, and its record.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NewKey {
    /// The whole key; it is not stored and cannot be shown again.
    pub key: String,
    pub record: KeyJson,
    /// For a rotation: the old key, with its `expires_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<KeyJson>,
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    required: bool,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        if required {
            return Err(
                ApiError::bad_request("invalid_body", "a JSON object is required").with_field("$"),
            );
        }
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("invalid request body: {e}")).with_field("$")
    })
}

impl Default for CreateKeyRequest {
    fn default() -> Self {
        CreateKeyRequest {
            role: Role::Readonly,
            tenant: None,
            label: None,
        }
    }
}

fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::UnknownKey(_) => ApiError::not_found(e.to_string()),
        KeyError::AlreadyRevoked(_) | KeyError::Expired(_) => {
            ApiError::new(StatusCode::CONFLICT, "key_not_active", e.to_string())
        }
        KeyError::Store(s) => ApiError::from_store(s),
        other => ApiError::internal(other.to_string()),
    }
}

fn key_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_param("id", e.body_text()))?;
    if id.len() != 16
        || !id.starts_with(auth::KEY_PREFIX)
        || !id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiError::bad_param(
            "id",
            "a key id is `evk_` and 12 lowercase hex digits",
        ));
    }
    Ok(id)
}

/// Checks that `caller` may manage a key of `role` in `tenant`; refusals are recorded. (A
/// key outside a tenant-scoped caller's tenant is refused before, by [`load_managed`].)
async fn check_manage(
    state: &AppState,
    caller: &Caller,
    info: &RequestInfo,
    role: Role,
    tenant: Option<&str>,
    what: &str,
    target: &str,
) -> Result<(), ApiError> {
    if let Some(scope) = &caller.tenant {
        if tenant != Some(scope.as_str()) {
            return Err(state
                .refuse_cross_tenant(
                    caller,
                    info,
                    super::OutsideTenant::Named(tenant.unwrap_or("*")),
                    &format!("{what} a key"),
                )
                .await);
        }
    }
    if !caller.role.may_manage(role) {
        let error = ApiError::forbidden(format!(
            "API key {} has role {}, which may not {what} {role} keys",
            caller.key_id, caller.role
        ));
        let event = AuditEvent::new(action::FORBIDDEN, "denied", "warning", "api_key", target)
            .with("needed", format!("{what} {role} keys"));
        return Err(state
            .refuse(AuditActor::Key(caller.clone()), info, event, error)
            .await);
    }
    Ok(())
}

/// Lists the keys the caller may see (a tenant-scoped caller: its tenant's keys).
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "keys",
    responses(
        (status = 200, description = "Every key (never a secret), with its last use", body = KeyList),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = super::ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not manage keys (owner and admin only)", body = super::ErrorBody),
        (status = 429, description = "Too many refused requests: from this address without a valid key, or by this key", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Json<KeyList>, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let records = state
        .with_store(|store| store.keys().map_err(ApiError::from_store))
        .await?;
    let now = now_ms();
    let keys = records
        .iter()
        .filter(|r| caller.tenant.is_none() || r.tenant == caller.tenant)
        .map(|r| KeyJson::new(r, now, state.usage().pending(&r.id)))
        .collect();
    Ok(Json(KeyList { keys }))
}

/// Creates a key; the answer holds it, once.
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "keys",
    request_body(content = CreateKeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The new key (shown only here) and its record", body = NewKey),
        (status = 400, description = "A bad body or query parameter", body = super::ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired API key", body = super::ErrorBody),
        (status = 403, description = "The caller may not create keys of this role (admin: readonly and writer only) or of this tenant", body = super::ErrorBody),
        (status = 429, description = "Too many refused requests: from this address without a valid key, or by this key", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let mut request: CreateKeyRequest = parse_body(&body, true)?;
    if request.tenant.is_none() {
        request.tenant = caller.tenant.clone();
    }
    if let Some(tenant) = &request.tenant {
        evident_core::event::validate_tenant(tenant)
            .map_err(|e| ApiError::bad_param("tenant", e.problem))?;
    }
    if let Some(label) = &request.label {
        if label.len() > 256 || label.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_body",
                "label: at most 256 bytes, no control characters",
            )
            .with_field("label"));
        }
    }
    check_manage(
        &state,
        &caller,
        &info,
        request.role,
        request.tenant.as_deref(),
        "create",
        "new",
    )
    .await?;
    let role = request.role;
    let tenant = request.tenant.clone();
    let label = request.label.clone();
    let now = now_ms();
    let (secret, record) = state
        .with_store(move |store| {
            auth::create_key(store, role, tenant, label, now).map_err(key_error)
        })
        .await?;
    let event = AuditEvent::new(
        action::KEY_CREATED,
        "success",
        "notice",
        "api_key",
        &record.id,
    )
    .with("new_role", record.role.clone())
    .with("new_tenant", record.tenant.clone())
    .with("label", record.label.clone());
    state.record(&AuditActor::Key(caller), &info, event).await;
    Ok((
        StatusCode::CREATED,
        Json(NewKey {
            key: secret,
            record: KeyJson::new(&record, now, None),
            replaced: None,
        }),
    ))
}

async fn load_managed(
    state: &AppState,
    caller: &Caller,
    info: &RequestInfo,
    id: &str,
    what: &str,
) -> Result<KeyRecord, ApiError> {
    let lookup = id.to_owned();
    let found = state
        .with_store(move |store| match auth::find_key(store, &lookup) {
            Ok(record) => Ok(Some(record)),
            Err(KeyError::UnknownKey(_)) => Ok(None),
            Err(e) => Err(key_error(e)),
        })
        .await?;
    if let Some(scope) = &caller.tenant {
        // Another tenant's key and no key at all get the same answer: a tenant-scoped key
        // learns nothing about keys outside its tenant.
        if found
            .as_ref()
            .is_none_or(|r| r.tenant.as_deref() != Some(scope.as_str()))
        {
            return Err(state
                .refuse_cross_tenant(
                    caller,
                    info,
                    super::OutsideTenant::Key(id),
                    &format!("{what} a key"),
                )
                .await);
        }
    }
    let Some(record) = found else {
        return Err(key_error(KeyError::UnknownKey(id.to_owned())));
    };
    let role = auth::record_role(&record).map_err(key_error)?;
    check_manage(
        state,
        caller,
        info,
        role,
        record.tenant.as_deref(),
        what,
        id,
    )
    .await?;
    Ok(record)
}

/// Revokes a key at once.
#[utoipa::path(
    post,
    path = "/api/v1/keys/{id}/revoke",
    tag = "keys",
    params(("id" = String, Path, description = "The key id (`evk_` and 12 hex digits)")),
    responses(
        (status = 200, description = "Revoked: the key stops working with the next request", body = KeyJson),
        (status = 400, description = "A bad key id or query parameter", body = super::ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired API key", body = super::ErrorBody),
        (status = 403, description = "The caller may not manage this key", body = super::ErrorBody),
        (status = 404, description = "No such key (to a tenant-scoped key: none of its tenant; another tenant's key gets the same answer)", body = super::ErrorBody),
        (status = 409, description = "Already revoked", body = super::ErrorBody),
        (status = 429, description = "Too many refused requests: from this address without a valid key, or by this key", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<KeyJson>, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let id = key_id(path)?;
    load_managed(&state, &caller, &info, &id, "revoke").await?;
    let now = now_ms();
    let target = id.clone();
    let record = state
        .with_store(move |store| auth::revoke_key(store, &target, now).map_err(key_error))
        .await?;
    let event = AuditEvent::new(action::KEY_REVOKED, "success", "notice", "api_key", &id)
        .with("revoked_role", record.role.clone());
    state.record(&AuditActor::Key(caller), &info, event).await;
    Ok(Json(KeyJson::new(&record, now, None)))
}

/// Replaces a key by a new one with the same role, tenant and label.
#[utoipa::path(
    post,
    path = "/api/v1/keys/{id}/rotate",
    tag = "keys",
    params(("id" = String, Path, description = "The key id (`evk_` and 12 hex digits)")),
    request_body(content = RotateKeyRequest, content_type = "application/json", description = "Optional; empty means a grace of 24 hours"),
    responses(
        (status = 201, description = "The new key (shown only here); the old one works until its `expires_at`", body = NewKey),
        (status = 400, description = "A bad key id, body or query parameter, or a grace of 0 on the calling key without `confirm_own_key`", body = super::ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired API key", body = super::ErrorBody),
        (status = 403, description = "The caller may not manage this key", body = super::ErrorBody),
        (status = 404, description = "No such key (to a tenant-scoped key: none of its tenant; another tenant's key gets the same answer)", body = super::ErrorBody),
        (status = 409, description = "The key is revoked or expired", body = super::ErrorBody),
        (status = 429, description = "Too many refused requests: from this address without a valid key, or by this key", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn rotate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let id = key_id(path)?;
    let request: RotateKeyRequest = parse_body(&body, false)?;
    if request.grace_seconds > MAX_GRACE_SECONDS {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("grace_seconds: at most {MAX_GRACE_SECONDS} (30 days)"),
        )
        .with_field("grace_seconds"));
    }
    load_managed(&state, &caller, &info, &id, "rotate").await?;
    if id == caller.key_id && request.grace_seconds == 0 && !request.confirm_own_key {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!(
                "grace_seconds: 0 would end API key {id}, which this request is made with, at \
                 once (a lost answer would leave you with neither key); give a grace, or send \
                 \"confirm_own_key\": true"
            ),
        )
        .with_field("grace_seconds"));
    }
    let now = now_ms();
    let grace_ms = (request.grace_seconds as Millis).saturating_mul(1000);
    let target = id.clone();
    let (secret, record, old) = state
        .with_store(move |store| {
            let (secret, record) =
                auth::rotate_key(store, &target, grace_ms, now).map_err(key_error)?;
            let old = auth::find_key(store, &target).map_err(key_error)?;
            Ok((secret, record, old))
        })
        .await?;
    let event = AuditEvent::new(action::KEY_ROTATED, "success", "notice", "api_key", &id)
        .with("new_key_id", record.id.clone())
        .with("grace_seconds", request.grace_seconds)
        .with("old_expires_at", old.expires_at.map(format_rfc3339_millis));
    state.record(&AuditActor::Key(caller), &info, event).await;
    Ok((
        StatusCode::CREATED,
        Json(NewKey {
            key: secret,
            record: KeyJson::new(&record, now, None),
            replaced: Some(KeyJson::new(&old, now, None)),
        }),
    ))
}
