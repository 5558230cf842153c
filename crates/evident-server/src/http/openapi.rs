//! The OpenAPI document of the HTTP API (utoipa), generated from the handlers' annotations,
//! plus the documentation-only schemas of bodies whose parsing lives in the core. Each
//! operation carries `x-evident-permission` (`append`, `read`, `manage_keys` or `none`), taken
//! from [`super::ROUTES`], the table the router enforces.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// An event as a client submits it. Unknown fields are refused; `null` means absent.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventInputDoc {
    /// When the action happened, per the client: RFC 3339 or epoch milliseconds.
    #[schema(value_type = Option<String>, example = "2026-03-14T09:00:00Z")]
    occurred_at: Option<String>,
    /// Tenant (workspace); default `default` (or the key's tenant for a tenant-scoped key).
    #[schema(example = "default")]
    tenant: Option<String>,
    actor: ActorDoc,
    /// Dotted action name.
    #[schema(example = "config.threshold.changed")]
    action: String,
    target: TargetDoc,
    #[schema(example = "success")]
    outcome: OutcomeDoc,
    #[schema(example = "notice")]
    severity: SeverityDoc,
    /// Free-form JSON object, bounded in size and depth; default `{}`.
    #[schema(value_type = Option<Object>)]
    context: Option<serde_json::Value>,
}

/// Who acted.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ActorDoc {
    #[schema(example = "alice")]
    id: String,
    kind: ActorKindDoc,
    #[schema(example = "203.0.113.7")]
    ip: Option<String>,
    user_agent: Option<String>,
}

/// What was acted on.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TargetDoc {
    #[schema(example = "node")]
    kind: String,
    #[schema(example = "nyc-edge-01")]
    id: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ActorKindDoc {
    User,
    Service,
    ApiKey,
    System,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum OutcomeDoc {
    Success,
    Failure,
    Denied,
}

/// RFC 5424 severity (syslog aliases `informational`, `warn`, `err`, `crit`, `emerg` accepted).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum SeverityDoc {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

/// A stored event with its hash and seal.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventDoc {
    seq: u64,
    /// UUIDv7.
    id: String,
    /// RFC 3339 UTC with milliseconds.
    recorded_at: String,
    occurred_at: Option<String>,
    node_id: String,
    tenant: String,
    actor: ActorDoc,
    action: String,
    target: TargetDoc,
    outcome: OutcomeDoc,
    severity: SeverityDoc,
    #[schema(value_type = Object)]
    context: serde_json::Value,
    /// Who appended the entry, set by the server (a client cannot send it): the id of the API
    /// key whose request appended it, or `system` for an event the node wrote itself. Present
    /// on every entry of encoding version 2; absent (never `null`) on entries stored before
    /// the node recorded it (encoding version 1).
    #[schema(
        required = false,
        example = "evk_0123456789ab",
        pattern = "^(system|evk_[0-9a-f]{12})$"
    )]
    appended_by: String,
    /// Chain hash, 64 lowercase hex digits.
    hash: String,
    /// HMAC-SHA256 seal over the hash, 64 lowercase hex digits.
    seal: String,
}

/// One page of a JSON query.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PageDoc {
    events: Vec<EventDoc>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Filters and options of `GET /api/v1/audit-log`. Empty values count as absent; any other
/// parameter is refused.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuditLogParams {
    /// Recorded at or after: RFC 3339 or epoch milliseconds.
    from: Option<String>,
    /// Recorded before: RFC 3339 or epoch milliseconds.
    to: Option<String>,
    /// Actor id (exact).
    actor: Option<String>,
    /// user, service, api_key or system.
    actor_kind: Option<String>,
    /// Action name (exact), or a prefix as `config.*` (matches `config` and below).
    action: Option<String>,
    /// `kind:id`, or a bare id matching any kind.
    target: Option<String>,
    /// Actor IP address or CIDR network (`10.0.0.0/8`).
    ip: Option<String>,
    tenant: Option<String>,
    /// Node id that recorded the event.
    node: Option<String>,
    /// Minimum severity.
    severity: Option<String>,
    /// success, failure or denied.
    outcome: Option<String>,
    /// json: page size, default 100, at most 1000. ndjson and csv: at most this many events
    /// (default all).
    limit: Option<u64>,
    /// json only: the `next_cursor` of the previous page.
    cursor: Option<String>,
    /// asc or desc (sequence order). Default desc for json, asc for csv; ndjson is asc only.
    order: Option<String>,
    /// json (default), ndjson (the self-verifying export bundle) or csv.
    format: Option<String>,
    /// ndjson only: put in the header a consistency proof from this older tree size to the
    /// export's checkpoint, so that a verifier holding a checkpoint of that size can tie the
    /// export to it.
    consistency_from: Option<u64>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("evk_<12 hex id>_<secret>".to_owned());
        scheme.description = Some(
            "API key. Roles: owner may do everything, including managing owner and admin keys; admin may append, read, export, verify and manage readonly and writer keys; readonly may read, export and verify; writer may only append. A tenant-scoped key reaches only its tenant. Each operation's `x-evident-permission` names what it needs."
                .to_owned(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Marks every operation with the permission the router requires for it.
struct Permissions;

impl Modify for Permissions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (method, path, permission) in super::ROUTES {
            let Some(item) = openapi.paths.paths.get_mut(*path) else {
                continue;
            };
            let operation = match *method {
                axum::http::Method::GET => item.get.as_mut(),
                axum::http::Method::POST => item.post.as_mut(),
                axum::http::Method::PUT => item.put.as_mut(),
                axum::http::Method::DELETE => item.delete.as_mut(),
                axum::http::Method::PATCH => item.patch.as_mut(),
                _ => None,
            };
            if let Some(operation) = operation {
                let name = permission.map_or("none", |p| p.as_str());
                let extensions = utoipa::openapi::extensions::ExtensionsBuilder::new()
                    .add("x-evident-permission", name)
                    .build();
                operation
                    .extensions
                    .get_or_insert_with(Default::default)
                    .merge(extensions);
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Evident",
        description = "Tamper-evident audit log. Every error is `{\"error\":{\"code\",\"message\",\"field\"?,\"index\"?}}`; unknown routes answer 404 and wrong methods 405 in the same shape.",
    ),
    paths(
        super::events::append,
        super::log::audit_log,
        super::proofs::checkpoint,
        super::proofs::public_key,
        super::proofs::inclusion,
        super::proofs::consistency,
        super::ops::verify,
        super::ops::verify_trusting,
        super::ops::verify_status,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::root_readyz,
        super::ops::metrics,
        super::ops::root_healthz,
        super::ops::root_metrics,
        super::ops::openapi,
        super::keys::list,
        super::keys::create,
        super::keys::revoke,
        super::keys::rotate,
    ),
    components(schemas(
        super::error::ErrorBody,
        super::ops::VerifyRequest,
        super::error::ErrorDetail,
        super::events::AppendResponse,
        super::events::ReceiptJson,
        super::proofs::InclusionProof,
        super::proofs::ConsistencyProof,
        super::ops::VerifyResponse,
        super::ops::ViolationJson,
        super::ops::Health,
        super::ops::Ready,
        crate::guard::Damage,
        crate::guard::DetectedBy,
        crate::self_check::VerifyStatus,
        crate::self_check::PassResult,
        crate::self_check::PassKind,
        crate::self_check::PassOutcome,
        super::keys::KeyJson,
        super::keys::KeyList,
        super::keys::NewKey,
        super::keys::CreateKeyRequest,
        super::keys::RotateKeyRequest,
        crate::auth::Role,
        EventInputDoc,
        EventDoc,
        PageDoc,
    )),
    modifiers(&BearerAuth, &Permissions),
    tags(
        (name = "events", description = "Appending events"),
        (name = "log", description = "Querying and exporting"),
        (name = "proofs", description = "Checkpoints, public key and Merkle proofs"),
        (name = "integrity", description = "Verification"),
        (name = "operations", description = "Health, metrics, this document"),
        (name = "keys", description = "API keys: list, create, revoke, rotate"),
    ),
)]
struct ApiDoc;

/// The OpenAPI document as JSON text.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
