//! API keys and who may do what: the key format (`evk_<12 hex id>_<secret>`, 256 random bits
//! in the secret), storage as a SHA-256 hash only, roles and their permissions, and the axum
//! middleware that turns an `Authorization: Bearer` header into a [`Caller`] or a 401/403.
//! Secrets are never logged; only the key id is.

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

/// Prefix of every key and key id.
pub const KEY_PREFIX: &str = "evk_";
/// Hex digits of the key id after the prefix.
const ID_HEX_LEN: usize = 12;
/// Random bytes in the secret part (256 bits).
const SECRET_BYTES: usize = 32;
/// Length of the secret part as unpadded base64url.
const SECRET_TEXT_LEN: usize = 43;
/// `last_used_at` is written at most this often per key, so a busy key costs no write per
/// request.
const TOUCH_EVERY_MS: Millis = 60_000;

/// A key's role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Owner,
    /// Everything.
    Admin,
    /// Read and export only.
    Readonly,
    /// Append only.
    Writer,
}

/// What a request needs to be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `POST /events`.
    Append,
    /// Query, export, checkpoints, proofs, verify, public key, OpenAPI, metrics.
    Read,
    /// Administration (keys and the like).
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Readonly, Role::Writer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Readonly => "readonly",
            Role::Writer => "writer",
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        match self {
            Role::Owner | Role::Admin => true,
            Role::Readonly => permission == Permission::Read,
            Role::Writer => permission == Permission::Append,
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

fn find_key(store: &dyn Store, id: &str) -> Result<KeyRecord, KeyError> {
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
    let role = record_role(&old)?;
    let created = create_key(store, role, old.tenant.clone(), old.label.clone(), now)?;
    store.set_key_expiry(id, now.saturating_add(grace_ms.max(0)))?;
    tracing::info!(old_key_id = %id, new_key_id = %created.1.id, "API key rotated");
    Ok(created)
}

fn record_role(record: &KeyRecord) -> Result<Role, KeyError> {
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
}

/// Checks an `Authorization` header value against the store.
pub fn authenticate(
    store: &dyn Store,
    header: Option<&str>,
    now: Millis,
) -> Result<Result<(Caller, KeyRecord), AuthFailure>, StoreError> {
    let Some(header) = header else {
        return Ok(Err(AuthFailure::Missing));
    };
    let Some((scheme, key)) = header.trim().split_once(' ') else {
        return Ok(Err(AuthFailure::Malformed));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Err(AuthFailure::Malformed));
    }
    let key = key.trim();
    let Some(id) = key_id_of(key) else {
        return Ok(Err(AuthFailure::Malformed));
    };
    let Some(record) = store.key_by_hash(&key_hash(key))? else {
        return Ok(Err(AuthFailure::Unknown));
    };
    // The hash matched, so the id must too; a mismatch means a tampered key table.
    if record.id != id {
        return Ok(Err(AuthFailure::Unknown));
    }
    if record.revoked_at.is_some() {
        return Ok(Err(AuthFailure::Revoked));
    }
    if record.expires_at.is_some_and(|t| t <= now) {
        return Ok(Err(AuthFailure::Expired));
    }
    let Ok(role) = record.role.parse::<Role>() else {
        tracing::error!(key_id = %record.id, "stored key has an unknown role; refusing it");
        return Ok(Err(AuthFailure::Unknown));
    };
    let caller = Caller {
        key_id: record.id.clone(),
        role,
        tenant: record.tenant.clone(),
    };
    Ok(Ok((caller, record)))
}

/// Remembers when each key's `last_used_at` was last written.
#[derive(Debug, Default)]
pub struct UsageTracker {
    touched: Mutex<HashMap<String, Millis>>,
}

impl UsageTracker {
    /// Whether `key_id`'s usage should be written now (and notes that it is).
    fn due(&self, key_id: &str, stored_last_used: Option<Millis>, now: Millis) -> bool {
        let Ok(mut touched) = self.touched.lock() else {
            return false;
        };
        let last = touched
            .get(key_id)
            .copied()
            .or(stored_last_used)
            .unwrap_or(Millis::MIN);
        if now.saturating_sub(last) < TOUCH_EVERY_MS {
            return false;
        }
        touched.insert(key_id.to_owned(), now);
        true
    }
}

/// Middleware: the request must carry a valid key whose role allows `permission`. The
/// [`Caller`] is put in the request's extensions for handlers.
pub async fn require(
    state: AppState,
    permission: Permission,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().map(str::to_owned));
    let header = match header {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => return Err(ApiError::unauthorized(AuthFailure::Malformed)),
    };
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let now = now_ms();
    let store = state.store().clone();
    let outcome =
        tokio::task::spawn_blocking(move || authenticate(&*store, header.as_deref(), now))
            .await
            .map_err(|e| ApiError::internal(format!("authentication task failed: {e}")))?
            .map_err(ApiError::from_store)?;
    let (caller, record) = match outcome {
        Ok(found) => found,
        Err(failure) => {
            tracing::info!(ip = ip.as_deref().unwrap_or("-"), reason = %failure, "request refused: not authenticated");
            return Err(ApiError::unauthorized(failure));
        }
    };
    if !caller.role.allows(permission) {
        tracing::info!(key_id = %caller.key_id, role = %caller.role, ip = ip.as_deref().unwrap_or("-"), "request refused: forbidden");
        return Err(ApiError::forbidden(format!(
            "API key {} has role {}, which may not {}",
            caller.key_id,
            caller.role,
            match permission {
                Permission::Append => "append events",
                Permission::Read => "read the log",
                Permission::Admin => "administer the node",
            }
        )));
    }
    if state.usage().due(&caller.key_id, record.last_used_at, now) {
        let store = state.store().clone();
        let id = caller.key_id.clone();
        // Fire and forget: bookkeeping must not slow down or fail the request.
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.touch_key(&id, now, ip.as_deref()) {
                tracing::warn!(key_id = %id, error = %e, "cannot record key usage");
            }
        });
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_spec_says() {
        use Permission::*;
        assert!(
            Role::Owner.allows(Append) && Role::Owner.allows(Read) && Role::Owner.allows(Admin)
        );
        assert!(
            Role::Admin.allows(Append) && Role::Admin.allows(Read) && Role::Admin.allows(Admin)
        );
        assert!(Role::Readonly.allows(Read));
        assert!(!Role::Readonly.allows(Append) && !Role::Readonly.allows(Admin));
        assert!(Role::Writer.allows(Append));
        assert!(!Role::Writer.allows(Read) && !Role::Writer.allows(Admin));
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
    fn touch_is_throttled_per_key() {
        let t = UsageTracker::default();
        assert!(t.due("k1", None, 1_000_000));
        assert!(!t.due("k1", None, 1_000_000 + 59_999));
        assert!(t.due("k2", None, 1_000_000 + 59_999));
        assert!(t.due("k1", None, 1_000_000 + 60_000));
        // A recent stored use counts too.
        assert!(!t.due("k3", Some(5_000_000), 5_000_001));
    }
}
