//! API keys and who may do what: the key format (`evk_<12 hex id>_<secret>`, 256 random bits
//! in the secret; the id is the visible, non-secret prefix), storage as a SHA-256 hash only,
//! roles and their permissions, key usage bookkeeping, and the axum middleware that turns an
//! `Authorization: Bearer` header into a [`Caller`] or a recorded 401/403 (or 429 for an
//! address or key the brute-force limiters blocked). Secrets are never logged; only the key id is.
//!
//! Roles: owner may do everything, including managing owner and admin keys and publishing on
//! demand; admin may
//! append, read, export, verify and manage readonly and writer keys; readonly may read,
//! export and verify; writer may only append. A key scoped to a tenant reaches only that
//! tenant's events and manages only that tenant's keys.

use crate::audit::{AuditActor, AuditEvent, RequestInfo, action};
use crate::client_ip::Cidr;
use crate::http::{ApiError, AppState};
use crate::sequencer::now_ms;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use evident_core::Hash;
use evident_core::event::Millis;
use evident_store::{KeyRecord, Store, StoreError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// Prefix of every key and key id.
pub const KEY_PREFIX: &str = "evk_";
/// Hex digits of the key id after the prefix.
const ID_HEX_LEN: usize = 12;
/// Random bytes in the secret part (256 bits).
const SECRET_BYTES: usize = 32;
/// Length of the secret part as unpadded base64url.
const SECRET_TEXT_LEN: usize = 43;

/// A key's role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including managing owner and admin keys.
    Owner,
    /// Append, read, export, verify; manage readonly and writer keys.
    Admin,
    /// Read, export and verify.
    Readonly,
    /// Append only.
    Writer,
    /// A cluster peer, known by its client certificate (never an API key): may read and
    /// witness, nothing else.
    Peer,
}

/// What a request needs to be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `POST /events`.
    Append,
    /// Query, export, checkpoints, proofs, verify, public key, OpenAPI, metrics.
    Read,
    /// The key routes (which roles a key may manage is [`Role::may_manage`]).
    ManageKeys,
    /// What only owners do: manage the alert rules and webhook endpoints, publish on demand.
    Owner,
    /// Submitting checkpoints to this node's witness (cluster peers).
    Witness,
}

/// A role that may not do what a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("role {role} may not {}", permission_words(*permission))]
pub struct PermissionDenied {
    pub role: Role,
    pub permission: Permission,
}

impl Permission {
    /// The name used in the OpenAPI document (`x-evident-permission`).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Append => "append",
            Permission::Read => "read",
            Permission::ManageKeys => "manage_keys",
            Permission::Owner => "owner",
            Permission::Witness => "witness",
        }
    }
}

impl Role {
    /// The roles an API key may have ([`Role::Peer`] comes only from a cluster certificate).
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Readonly, Role::Writer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Readonly => "readonly",
            Role::Writer => "writer",
            Role::Peer => "peer",
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        self.check(permission).is_ok()
    }

    /// Whether this role may do `permission`, as a typed refusal.
    pub fn check(self, permission: Permission) -> Result<(), PermissionDenied> {
        let allowed = match self {
            Role::Owner => true,
            Role::Admin => !matches!(permission, Permission::Owner | Permission::Witness),
            Role::Readonly => permission == Permission::Read,
            Role::Writer => permission == Permission::Append,
            Role::Peer => matches!(permission, Permission::Read | Permission::Witness),
        };
        if allowed {
            Ok(())
        } else {
            Err(PermissionDenied {
                role: self,
                permission,
            })
        }
    }

    /// Whether a key of this role may create, revoke or rotate keys of role `other`.
    pub fn may_manage(self, other: Role) -> bool {
        match self {
            Role::Owner => true,
            Role::Admin => matches!(other, Role::Readonly | Role::Writer),
            Role::Readonly | Role::Writer | Role::Peer => false,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of owner, admin, readonly, writer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected owner, admin, readonly or writer")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// Errors managing keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot draw randomness from the operating system: {0}")]
    Random(String),
    #[error("no API key with id {0:?}")]
    UnknownKey(String),
    #[error("API key {0:?} is already revoked")]
    AlreadyRevoked(String),
    #[error("API key {0:?} has expired")]
    Expired(String),
    #[error("stored key {id:?} has an unknown role {role:?}")]
    BadStoredRole { id: String, role: String },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// SHA-256 of the whole key text: what the store keeps instead of the key.
pub fn key_hash(key: &str) -> Hash {
    Hash::digest(key.as_bytes())
}

/// The key id (`evk_<12 hex>`) of a well-formed key, or `None`.
pub fn key_id_of(key: &str) -> Option<&str> {
    let id_end = KEY_PREFIX.len() + ID_HEX_LEN;
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let hex_part = rest.get(..ID_HEX_LEN)?;
    let secret = rest.get(ID_HEX_LEN..)?.strip_prefix('_')?;
    let hex_ok = hex_part
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.len() == SECRET_TEXT_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (hex_ok && secret_ok).then(|| &key[..id_end])
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(out)
}

/// Creates and stores a new key. Returns the key text (shown once, never stored) and its
/// record.
pub fn create_key(
    store: &dyn Store,
    role: Role,
    tenant: Option<String>,
    label: Option<String>,
    now: Millis,
) -> Result<(String, KeyRecord), KeyError> {
    let id = format!(
        "{KEY_PREFIX}{}",
        hex::encode(random::<{ ID_HEX_LEN / 2 }>()?)
    );
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<SECRET_BYTES>()?);
    let key = format!("{id}_{secret}");
    let record = KeyRecord {
        id,
        secret_hash: key_hash(&key),
        role: role.as_str().to_owned(),
        tenant,
        label,
        created_at: now,
        revoked_at: None,
        expires_at: None,
        last_used_at: None,
        last_used_ip: None,
    };
    store.put_key(&record)?;
    tracing::info!(key_id = %record.id, role = %role, "API key created");
    Ok((key, record))
}

/// The stored record of key `id`.
pub fn find_key(store: &dyn Store, id: &str) -> Result<KeyRecord, KeyError> {
    store
        .keys()?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| KeyError::UnknownKey(id.to_owned()))
}

/// Revokes a key at once.
pub fn revoke_key(store: &dyn Store, id: &str, now: Millis) -> Result<KeyRecord, KeyError> {
    let mut record = find_key(store, id)?;
    if record.revoked_at.is_some() {
        return Err(KeyError::AlreadyRevoked(id.to_owned()));
    }
    store.revoke_key(id, now)?;
    record.revoked_at = Some(now);
    tracing::info!(key_id = %id, "API key revoked");
    Ok(record)
}

/// Rotates a key: a new key with the same role, tenant and label, while the old one keeps
/// working for `grace_ms` (0: stops at once). Returns the new key text and record.
pub fn rotate_key(
    store: &dyn Store,
    id: &str,
    grace_ms: Millis,
    now: Millis,
) -> Result<(String, KeyRecord), KeyError> {
    let old = find_key(store, id)?;
    if old.revoked_at.is_some() {
        return Err(KeyError::AlreadyRevoked(id.to_owned()));
    }
    if old.expires_at.is_some_and(|t| t <= now) {
        return Err(KeyError::Expired(id.to_owned()));
    }
    let role = record_role(&old)?;
    let created = create_key(store, role, old.tenant.clone(), old.label.clone(), now)?;
    store.set_key_expiry(id, now.saturating_add(grace_ms.max(0)))?;
    tracing::info!(old_key_id = %id, new_key_id = %created.1.id, "API key rotated");
    Ok(created)
}

/// The role of a stored key.
pub fn record_role(record: &KeyRecord) -> Result<Role, KeyError> {
    record.role.parse().map_err(|_| KeyError::BadStoredRole {
        id: record.id.clone(),
        role: record.role.clone(),
    })
}

/// Who is calling: the authenticated key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    /// When set, the key may only reach this tenant's events.
    pub tenant: Option<String>,
}

/// Why a request is not authenticated. Every case is a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("missing API key: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("malformed Authorization header: expected `Bearer evk_<id>_<secret>`")]
    Malformed,
    #[error("unknown API key")]
    Unknown,
    #[error("API key revoked")]
    Revoked,
    #[error("API key expired")]
    Expired,
    /// A dashboard session cookie that is unknown or past its idle or absolute timeout.
    #[error("dashboard session unknown or expired: sign in again")]
    Session,
}

impl AuthFailure {
    /// The self-audit action recording this failure.
    pub fn audit_action(self) -> &'static str {
        use crate::audit::action;
        match self {
            AuthFailure::Missing => action::AUTH_MISSING,
            AuthFailure::Malformed => action::AUTH_MALFORMED,
            AuthFailure::Unknown => action::AUTH_UNKNOWN,
            AuthFailure::Revoked => action::AUTH_REVOKED,
            AuthFailure::Expired => action::AUTH_EXPIRED,
            AuthFailure::Session => action::SESSION_REFUSED,
        }
    }
}

/// A refused authentication, with the non-secret id of a well-formed key when one was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub failure: AuthFailure,
    pub presented_key_id: Option<String>,
}

/// What checking a key comes to: the caller and its record, or a refusal; the outer error is
/// the store's.
pub type AuthOutcome = Result<Result<(Caller, KeyRecord), Refusal>, StoreError>;

/// Checks an `Authorization` header value against the store.
///
/// The key is looked up by the SHA-256 of the whole key text (an index lookup whose timing
/// depends only on that hash, which tells an attacker nothing about any stored key), then the
/// stored hash and id are compared with the presented ones in constant time (`subtle`).
pub fn authenticate(store: &dyn Store, header: Option<&str>, now: Millis) -> AuthOutcome {
    authenticate_by(header, now, |hash| store.key_by_hash(hash))
}

/// [`authenticate`] without leaving the async task, where the store can look the key up at
/// once ([`Store::key_by_hash_now`]); `None` when it cannot, and the caller runs
/// [`authenticate`] on a blocking thread. Same checks, same freshness (no cache).
pub fn authenticate_now(
    store: &dyn Store,
    header: Option<&str>,
    now: Millis,
) -> Option<AuthOutcome> {
    let mut declined = false;
    let outcome = authenticate_by(header, now, |hash| match store.key_by_hash_now(hash) {
        Some(found) => found,
        None => {
            declined = true;
            Ok(None)
        }
    });
    (!declined).then_some(outcome)
}

/// [`authenticate`] from async code: on the embedded store the key is looked up right here
/// ([`authenticate_now`], a point read on a connection kept for it, issue 16); elsewhere on the
/// blocking pool. A store failure is the `Err`; the inner result is the outcome.
pub async fn authenticate_async(
    store: std::sync::Arc<dyn Store>,
    header: Option<String>,
    now: Millis,
) -> Result<Result<(Caller, KeyRecord), Refusal>, ApiError> {
    match authenticate_now(&*store, header.as_deref(), now) {
        Some(outcome) => outcome,
        None => tokio::task::spawn_blocking(move || authenticate(&*store, header.as_deref(), now))
            .await
            .map_err(|e| ApiError::internal(format!("authentication task failed: {e}")))?,
    }
    .map_err(ApiError::from_store)
}

/// Records and answers a request whose key was refused (401, or 429 in a burst): the event
/// names the route and the reason, the actor the presented key id, if any.
pub async fn refuse_unauthenticated(
    state: &AppState,
    info: &RequestInfo,
    refusal: Refusal,
) -> ApiError {
    let event = AuditEvent::new(
        refusal.failure.audit_action(),
        "denied",
        "warning",
        "route",
        format!("{} {}", info.method, info.path),
    )
    .with("reason", refusal.failure.to_string());
    let actor = AuditActor::Anonymous {
        presented_key_id: refusal.presented_key_id,
    };
    state
        .refuse(actor, info, event, ApiError::unauthorized(refusal.failure))
        .await
}

fn authenticate_by(
    header: Option<&str>,
    now: Millis,
    lookup: impl FnOnce(&Hash) -> Result<Option<KeyRecord>, StoreError>,
) -> AuthOutcome {
    let refuse = |failure, id: Option<&str>| {
        Ok(Err(Refusal {
            failure,
            presented_key_id: id.map(str::to_owned),
        }))
    };
    let Some(header) = header else {
        return refuse(AuthFailure::Missing, None);
    };
    let Some((scheme, key)) = header.trim().split_once(' ') else {
        return refuse(AuthFailure::Malformed, None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return refuse(AuthFailure::Malformed, None);
    }
    let key = key.trim();
    let Some(id) = key_id_of(key) else {
        return refuse(AuthFailure::Malformed, None);
    };
    let presented = key_hash(key);
    let Some(record) = lookup(&presented)? else {
        return refuse(AuthFailure::Unknown, Some(id));
    };
    match check_record(record, id, &presented, now) {
        Ok(found) => Ok(Ok(found)),
        Err(failure) => refuse(failure, Some(id)),
    }
}

/// Checks the stored `record` found for key `id` with secret hash `presented`: the same
/// key (constant time), not revoked, not expired, a known role. The bearer path and the
/// dashboard's sessions (which keep the key's id and hash) both end here, so a session
/// resolves to the very [`Caller`] its key would.
pub fn check_record(
    record: KeyRecord,
    id: &str,
    presented: &Hash,
    now: Millis,
) -> Result<(Caller, KeyRecord), AuthFailure> {
    let hash_matches = record.secret_hash.as_bytes().ct_eq(presented.as_bytes());
    let id_matches = record.id.as_bytes().ct_eq(id.as_bytes());
    // A mismatch here means a tampered key table.
    if !bool::from(hash_matches & id_matches) {
        return Err(AuthFailure::Unknown);
    }
    if record.revoked_at.is_some() {
        return Err(AuthFailure::Revoked);
    }
    if record.expires_at.is_some_and(|t| t <= now) {
        return Err(AuthFailure::Expired);
    }
    let Ok(role) = record.role.parse::<Role>() else {
        tracing::error!(key_id = %record.id, "stored key has an unknown role; refusing it");
        return Err(AuthFailure::Unknown);
    };
    let caller = Caller {
        key_id: record.id.clone(),
        role,
        tenant: record.tenant.clone(),
    };
    Ok((caller, record))
}

/// Each key's latest use (time and source IP), kept in memory and written to the store in
/// batches (every [`USAGE_FLUSH_EVERY`] and at shutdown), so that a request costs a map
/// update, not a database write.
#[derive(Debug, Default)]
pub struct UsageTracker {
    pending: Mutex<HashMap<String, (Millis, Option<String>)>>,
}

/// How often pending key usage is written to the store.
pub const USAGE_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl UsageTracker {
    /// Notes that `key_id` was used at `at` from `ip`.
    pub fn note(&self, key_id: &str, at: Millis, ip: Option<String>) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        match pending.get_mut(key_id) {
            Some(entry) => {
                if entry.0 <= at {
                    *entry = (at, ip);
                }
            }
            None => {
                pending.insert(key_id.to_owned(), (at, ip));
            }
        }
    }

    /// The not yet written use of `key_id`.
    pub fn pending(&self, key_id: &str) -> Option<(Millis, Option<String>)> {
        self.pending.lock().ok()?.get(key_id).cloned()
    }

    /// Writes every pending use to `store` (blocking). Failures are logged and the uses kept
    /// for the next flush.
    pub fn flush(&self, store: &dyn Store) {
        let batch: Vec<(String, (Millis, Option<String>))> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return,
        };
        for (id, (at, ip)) in batch {
            match store.touch_key(&id, at, ip.as_deref()) {
                Ok(()) => {}
                Err(StoreError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(key_id = %id, error = %e, "cannot record key usage");
                    self.note(&id, at, ip);
                }
            }
        }
    }
}

/// The source address of a request: the connection's peer, or the client a trusted proxy
/// names (see `client_ip.rs`).
pub fn source_ip(request: &Request, trusted_proxies: &[Cidr]) -> Option<std::net::IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    Some(crate::client_ip::client_ip(
        peer,
        request.headers(),
        trusted_proxies,
    ))
}

/// What a request is, for self-audit events.
pub fn request_info(request: &Request, trusted_proxies: &[Cidr]) -> RequestInfo {
    RequestInfo {
        ip: source_ip(request, trusted_proxies),
        user_agent: request
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        method: request.method().as_str().to_owned(),
        // Inside the nested `/api/v1` router the URI lost its prefix; the original has it.
        path: request
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| request.uri().path(), |o| o.0.path())
            .to_owned(),
    }
}

fn permission_words(permission: Permission) -> &'static str {
    match permission {
        Permission::Append => "append events",
        Permission::Read => "read the log",
        Permission::ManageKeys => "manage API keys",
        Permission::Owner => {
            "manage alert rules and webhook endpoints, or publish on demand (owner keys only)"
        }
        Permission::Witness => "submit checkpoints to the witness (cluster peers only)",
    }
}

/// Middleware: the request must carry a valid key whose role allows `permission`. Refusals
/// are recorded in the log and counted by the brute-force limiters (see `audit.rs`): while an
/// address is blocked, its requests without a valid key get 429 unrecorded, and its valid
/// keys keep working; while a key is blocked, only its refused requests get 429. The [`Caller`] and the [`RequestInfo`] are put in
/// the request's extensions for handlers.
pub async fn require(
    state: AppState,
    permission: Permission,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let info = request_info(&request, &state.node().config().trusted_proxies);
    let now = now_ms();
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().map(str::to_owned));
    let header = match header {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => Some(String::new()),
    };
    // A cluster peer is known by its client certificate; it sends no API key.
    let peer = request
        .extensions()
        .get::<crate::cluster::PeerIdentity>()
        .filter(|_| header.is_none())
        .cloned();
    if let Some(peer) = peer {
        return require_peer(state, permission, peer, info, request, next).await;
    }
    let store = state.store().clone();
    // No Authorization header but a dashboard session cookie: the session signs the request
    // in as its key (CSRF-checked for state-changing methods).
    let session = match header {
        None => crate::dashboard::session_of(&state, &request, now),
        Some(_) => None,
    };
    let outcome = match session {
        Some(session) => {
            crate::dashboard::authenticate_session(&state, &info, session, now).await?
        }
        None => authenticate_async(store, header, now).await?,
    };
    let (caller, _record) = match outcome {
        Ok(found) => found,
        Err(refusal) => {
            tracing::info!(ip = ?info.ip, reason = %refusal.failure, "request refused: not authenticated");
            return Err(refuse_unauthenticated(&state, &info, refusal).await);
        }
    };
    if !caller.role.allows(permission) {
        tracing::info!(key_id = %caller.key_id, role = %caller.role, ip = ?info.ip, "request refused: forbidden");
        let error = ApiError::forbidden(format!(
            "API key {} has role {}, which may not {}",
            caller.key_id,
            caller.role,
            permission_words(permission)
        ));
        let event = AuditEvent::new(
            action::FORBIDDEN,
            "denied",
            "warning",
            "route",
            format!("{} {}", info.method, info.path),
        )
        .with("needed", permission_words(permission));
        return Err(state
            .refuse(AuditActor::Key(caller), &info, event, error)
            .await);
    }
    state
        .usage()
        .note(&caller.key_id, now, info.ip.map(|ip| ip.to_string()));
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(info);
    Ok(next.run(request).await)
}

/// [`require`] for a cluster peer (its client certificate named a configured peer): role
/// [`Role::Peer`], refused like a key for anything but reading and witnessing.
async fn require_peer(
    state: AppState,
    permission: Permission,
    peer: crate::cluster::PeerIdentity,
    info: RequestInfo,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = Caller {
        key_id: format!("peer:{}", peer.node_id),
        role: Role::Peer,
        tenant: None,
    };
    if let Err(denied) = Role::Peer.check(permission) {
        tracing::info!(peer = %peer.node_id, ip = ?info.ip, "request refused: forbidden for a peer");
        let error = ApiError::forbidden(format!("cluster peer {}: {denied}", peer.node_id));
        let event = AuditEvent::new(
            action::FORBIDDEN,
            "denied",
            "warning",
            "route",
            format!("{} {}", info.method, info.path),
        )
        .with("needed", permission_words(permission));
        return Err(state
            .refuse(AuditActor::Key(caller), &info, event, error)
            .await);
    }
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(info);
    Ok(next.run(request).await)
}

/// Like [`require_read`], for the witness routes (cluster peers).
pub async fn require_witness(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(state, Permission::Witness, request, next).await
}

/// State wrapper so that [`require`] can be used with `from_fn_with_state`.
pub async fn require_read(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(state, Permission::Read, request, next).await
}

/// Like [`require_read`], for appends.
pub async fn require_append(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(state, Permission::Append, request, next).await
}

/// Like [`require_read`], for key management.
pub async fn require_manage_keys(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(state, Permission::ManageKeys, request, next).await
}

/// Like [`require_read`], for what only owners do.
pub async fn require_owner(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(state, Permission::Owner, request, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_role_may_only_read_and_witness() {
        use Permission::*;
        assert!(Role::Peer.check(Read).is_ok() && Role::Peer.check(Witness).is_ok());
        for denied in [Append, ManageKeys, Owner] {
            assert_eq!(
                Role::Peer.check(denied),
                Err(PermissionDenied {
                    role: Role::Peer,
                    permission: denied
                })
            );
        }
        assert!(!Role::Admin.allows(Witness) && !Role::Readonly.allows(Witness));
        assert!(
            "peer".parse::<Role>().is_err(),
            "no API key can have the peer role"
        );
    }

    #[test]
    fn roles_allow_what_the_spec_says() {
        use Permission::*;
        assert!(
            Role::Owner.allows(Append)
                && Role::Owner.allows(Read)
                && Role::Owner.allows(ManageKeys)
        );
        assert!(
            Role::Admin.allows(Append)
                && Role::Admin.allows(Read)
                && Role::Admin.allows(ManageKeys)
        );
        assert!(Role::Owner.allows(Owner) && !Role::Admin.allows(Owner));
        assert!(Role::Readonly.allows(Read));
        assert!(!Role::Readonly.allows(Append) && !Role::Readonly.allows(ManageKeys));
        assert!(Role::Writer.allows(Append));
        assert!(!Role::Writer.allows(Read) && !Role::Writer.allows(ManageKeys));
        for r in Role::ALL {
            assert!(Role::Owner.may_manage(r));
            assert!(!Role::Readonly.may_manage(r) && !Role::Writer.may_manage(r));
        }
        assert!(Role::Admin.may_manage(Role::Readonly) && Role::Admin.may_manage(Role::Writer));
        assert!(!Role::Admin.may_manage(Role::Admin) && !Role::Admin.may_manage(Role::Owner));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn key_ids_are_parsed_strictly() {
        let secret = "A".repeat(SECRET_TEXT_LEN);
        let key = format!("evk_0123456789ab_{secret}");
        assert_eq!(key_id_of(&key), Some("evk_0123456789ab"));
        assert_eq!(key_id_of(&format!("evk_0123456789AB_{secret}")), None);
        assert_eq!(key_id_of(&format!("evk_0123456789a_{secret}")), None);
        assert_eq!(key_id_of(&format!("evk_0123456789ab_{secret}x")), None);
        assert_eq!(
            key_id_of(&format!("evk_0123456789ab_{}!", &secret[1..])),
            None
        );
        assert_eq!(key_id_of("evk_"), None);
        assert_eq!(key_id_of(""), None);
    }

    #[test]
    fn usage_keeps_the_latest_use() {
        let t = UsageTracker::default();
        t.note("k1", 10, Some("192.0.2.1".to_owned()));
        t.note("k1", 5, Some("192.0.2.9".to_owned()));
        assert_eq!(t.pending("k1"), Some((10, Some("192.0.2.1".to_owned()))));
        t.note("k1", 20, None);
        assert_eq!(t.pending("k1"), Some((20, None)));
        assert_eq!(t.pending("k2"), None);
    }
}
