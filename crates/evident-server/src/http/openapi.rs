//! The OpenAPI document of the HTTP API (utoipa), generated from the handlers' annotations,
//! plus the documentation-only schemas of bodies whose parsing lives in the core. Each
//! operation carries `x-evident-permission` (`append`, `read`, `manage_keys`, `publish` or `none`), taken
//! from [`super::ROUTES`], the table the router enforces.

use evident_core::event::{
    MAX_ACTION_BYTES, MAX_CONTEXT_BYTES, MAX_CONTEXT_DEPTH, MAX_SAFE_INTEGER, MAX_STRING_BYTES,
    MAX_TIMESTAMP, MIN_TIMESTAMP,
};
use serde_json::{Value, json};
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

/// The query of `GET /api/v1/audit-log/histogram`: the audit-log filters and `buckets`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct HistogramParams {
    /// Recorded at or after: RFC 3339 or epoch milliseconds (default: the start of the bucket
    /// of the first match).
    from: Option<String>,
    /// Recorded before: RFC 3339 or epoch milliseconds (default: the end of the bucket holding
    /// now).
    to: Option<String>,
    /// Recorded within this span before now, instead of `from` (`30d`, `2h`).
    #[param(pattern = "^[1-9][0-9]{0,8}[smhdw]$")]
    since: Option<String>,
    /// Occurred at or after (the client's `occurred_at`): RFC 3339 or epoch milliseconds.
    /// Events that state no occurred_at never match an occurred_at bound.
    occurred_from: Option<String>,
    /// Occurred before: RFC 3339 or epoch milliseconds.
    occurred_to: Option<String>,
    /// Occurred within this span before now, instead of `occurred_from`.
    #[param(pattern = "^[1-9][0-9]{0,8}[smhdw]$")]
    occurred_since: Option<String>,
    /// Actor id (exact).
    actor: Option<String>,
    /// user, service, api_key or system.
    #[param(inline, value_type = Option<ActorKindDoc>)]
    actor_kind: Option<String>,
    /// Action name (exact), or a prefix as `config.*`.
    action: Option<String>,
    /// `kind:id`, or a bare id matching any kind.
    target: Option<String>,
    /// Actor IP address or CIDR network.
    ip: Option<String>,
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    tenant: Option<String>,
    /// Node id that recorded the event.
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    node: Option<String>,
    /// Minimum severity.
    #[param(inline, value_type = Option<SeverityDoc>)]
    severity: Option<String>,
    /// success, failure or denied.
    #[param(inline, value_type = Option<OutcomeDoc>)]
    outcome: Option<String>,
    /// Most time buckets, 1 to 200 (default 30): the answer has as many as the finest round
    /// width (100 ms, 200 ms, 500 ms, 1 s, 2 s, 5 s … 1 h … 1 d, 7 d …) on the UTC grid needs,
    /// no more.
    #[param(minimum = 1, maximum = 200)]
    buckets: Option<u64>,
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
    /// Recorded within this span before now, instead of `from`: a positive whole number and
    /// a unit s, m, h, d or w (`30d`, `2h`). An export's header states the `from` it meant.
    #[param(pattern = "^[1-9][0-9]{0,8}[smhdw]$")]
    since: Option<String>,
    /// Occurred at or after (when the client says the event happened, its `occurred_at`):
    /// RFC 3339 or epoch milliseconds. An event that states no occurred_at never matches an
    /// occurred_at bound.
    occurred_from: Option<String>,
    /// Occurred before: RFC 3339 or epoch milliseconds. Events without occurred_at never match.
    occurred_to: Option<String>,
    /// Occurred within this span before now, instead of `occurred_from` (`2h`, `30d`). An
    /// export's header states the `occurred_from` it meant.
    #[param(pattern = "^[1-9][0-9]{0,8}[smhdw]$")]
    occurred_since: Option<String>,
    /// Actor id (exact).
    actor: Option<String>,
    /// user, service, api_key or system.
    #[param(inline, value_type = Option<ActorKindDoc>)]
    actor_kind: Option<String>,
    /// Action name (exact), or a prefix as `config.*` (matches `config` and below).
    action: Option<String>,
    /// `kind:id`, or a bare id matching any kind.
    target: Option<String>,
    /// Actor IP address or CIDR network (`10.0.0.0/8`).
    ip: Option<String>,
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    tenant: Option<String>,
    /// Node id that recorded the event.
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    node: Option<String>,
    /// Minimum severity (the syslog aliases are accepted too).
    #[param(inline, value_type = Option<SeverityDoc>)]
    severity: Option<String>,
    /// success, failure or denied.
    #[param(inline, value_type = Option<OutcomeDoc>)]
    outcome: Option<String>,
    /// json: page size, default 100, at most 1000. ndjson and csv: at most this many events
    /// (default all).
    #[param(minimum = 1)]
    limit: Option<u64>,
    /// json only: the `next_cursor` of the previous page.
    cursor: Option<String>,
    /// asc or desc (sequence order). Default desc for json, asc for csv; ndjson is asc only.
    #[param(inline, value_type = Option<OrderDoc>)]
    order: Option<String>,
    /// json (default), ndjson (the self-verifying export bundle), csv, or a SIEM format:
    /// ocsf or ecs (one record per line, NDJSON) or cef (one CEF line per event).
    #[param(inline, value_type = Option<FormatDoc>)]
    format: Option<String>,
    /// ndjson only: put in the header a consistency proof from this older tree size to the
    /// export's checkpoint, so that a verifier holding a checkpoint of that size can tie the
    /// export to it.
    #[param(minimum = 1)]
    consistency_from: Option<u64>,
    /// local (default): this node's log. cluster (format=json or ndjson, on a node with
    /// `[cluster]`): json gives one page merged from this node and every peer (asked
    /// concurrently, each within the per-peer timeout) by recorded_at, node, seq, with a
    /// per-node status block `nodes` (ok with the checkpoint used, unreachable, timed_out,
    /// refused) and `resume_cursor`; the cursor keeps each node's position. ndjson gives the
    /// cluster bundle (`evident-cluster-export/v1`, docs/FORMAT.md): every node's own bundle
    /// with its signed checkpoint, the nodes that did not answer named in its header;
    /// `limit` applies per node, `consistency_from` is `NODE:SIZE` pairs (comma-separated,
    /// one per node), `cursor` is refused.
    #[param(inline, value_type = Option<ScopeDoc>)]
    scope: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ScopeDoc {
    Local,
    Cluster,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum OrderDoc {
    Asc,
    Desc,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum FormatDoc {
    Json,
    Ndjson,
    Csv,
    Ocsf,
    Ecs,
    Cef,
}

/// The `format` of `/api/v1/verify`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum VerifyFormatDoc {
    Json,
    Ndjson,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("evk_<12 hex id>_<secret>".to_owned());
        scheme.description = Some(
            "API key. Roles: owner may do everything, including managing owner and admin keys; admin may append, read, export, verify and manage readonly and writer keys; readonly may read, export and verify; writer may only append; only owner may publish on demand. A tenant-scoped key reaches only its tenant. Each operation's `x-evident-permission` names what it needs."
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
        super::histogram::histogram,
        super::proofs::checkpoint,
        super::proofs::public_key,
        super::proofs::inclusion,
        super::proofs::consistency,
        super::ops::verify,
        super::ops::verify_trusting,
        super::ops::verify_status,
        super::ops::consumers,
        super::reviews::four_eyes,
        super::publish::status,
        super::publish::publish,
        super::forwarders::forwarders,
        super::witness::add_checkpoint,
        super::witness::status,
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
        crate::alerts::routes::list,
        crate::alerts::routes::create,
        crate::alerts::routes::delete,
        crate::webhooks::routes::status,
        crate::webhooks::routes::enable,
    ),
    components(schemas(
        super::histogram::Histogram,
        super::histogram::Bucket,
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
        super::ops::ForwarderReady,
        crate::guard::Damage,
        crate::guard::DetectedBy,
        crate::self_check::VerifyStatus,
        crate::consumers::ConsumerStatus,
        super::publish::PublisherResponse,
        super::publish::PublishResponse,
        crate::publish::PublishStatus,
        super::forwarders::ForwarderStatus,
        super::witness::WitnessStatus,
        super::witness::CollectedJson,
        super::witness::WitnessedJson,
        crate::self_check::PassResult,
        crate::self_check::PassKind,
        crate::self_check::PassOutcome,
        super::keys::KeyJson,
        crate::alerts::Rule,
        crate::alerts::Threshold,
        crate::alerts::GroupBy,
        crate::alerts::RuleSource,
        crate::alerts::routes::RuleJson,
        crate::webhooks::routes::WebhookStatus,
        crate::webhooks::EndpointStats,
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
        (name = "reviews", description = "Four-eyes reports: confirmed events paired with their confirmations"),
    ),
)]
struct ApiDoc;

/// The OpenAPI document as JSON text: utoipa's document, refined by [`refine`].
pub fn openapi_json() -> String {
    let mut doc = match serde_json::to_value(ApiDoc::openapi()) {
        Ok(doc) => doc,
        Err(e) => return format!("{{\"error\":\"{e}\"}}"),
    };
    refine(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// A text field of an event: 1 to `MAX_STRING_BYTES` bytes (the limit counts UTF-8 bytes; the
/// schema's `maxLength`, in characters, is the same number), no control character.
fn text_schema(description: &str) -> Value {
    json!({
        "type": "string",
        "description": description,
        "minLength": 1,
        "maxLength": MAX_STRING_BYTES,
        "pattern": TEXT_PATTERN,
    })
}

/// No C0 control character and no DEL (FORMAT.md §2, *text*).
const TEXT_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f]*$";
/// A *name* (`tenant`, `node_id`): FORMAT.md §2.
const NAME_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,128}$";
/// An RFC 3339 date-time the server accepts, from 1971 on (an offset cannot take it before
/// 1970) and with days up to 28 (valid in every month): a subset of what is accepted, so that
/// every value the schema admits is accepted.
const RFC3339_PATTERN: &str = "(197[1-9]|19[89][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";

/// The parts of the document utoipa's annotations cannot state: the client event's exact
/// rules (patterns, byte limits, a timestamp as text or number, the recursive `context`
/// with its number range), the append body (one event or a non-empty array), the optional
/// rotation body, the time bounds of every filter, the form of a witness request, and
/// `allowEmptyValue` on every query parameter (an empty value counts as
/// absent, [`super::params::Params`]).
fn refine(doc: &mut Value) {
    let timestamp_text = format!("^{RFC3339_PATTERN}$");
    let schemas = &mut doc["components"]["schemas"];
    schemas["EventInputDoc"] = json!({
        "type": "object",
        "description": "An event as a client submits it. Unknown fields are refused; `null` means absent.",
        "additionalProperties": false,
        "required": ["actor", "action", "target", "outcome", "severity"],
        "properties": {
            "occurred_at": {
                "description": "When the action happened, per the client: RFC 3339 or integer epoch milliseconds (1970 to 9999).",
                "anyOf": [
                    {"type": "string", "pattern": timestamp_text, "example": "2026-03-14T09:00:00Z"},
                    {"type": "integer", "minimum": MIN_TIMESTAMP, "maximum": MAX_TIMESTAMP},
                    {"type": "null"}
                ]
            },
            "tenant": {
                "description": "Tenant (workspace); default `default` (or the key's tenant for a tenant-scoped key).",
                "type": ["string", "null"],
                "pattern": NAME_PATTERN,
                "example": "default"
            },
            "actor": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id", "kind"],
                "properties": {
                    "id": text_schema("Who acted"),
                    "kind": {"$ref": "#/components/schemas/ActorKindDoc"},
                    "ip": {
                        "description": "IPv4 or IPv6 address (IPv4-mapped IPv6 is stored as IPv4)",
                        "anyOf": [
                            {"type": "string", "format": "ipv4"},
                            {"type": "string", "format": "ipv6"},
                            {"type": "null"}
                        ],
                        "example": "203.0.113.7"
                    },
                    "user_agent": {
                        "description": "Empty or `null`: absent",
                        "type": ["string", "null"],
                        "maxLength": MAX_STRING_BYTES,
                        "pattern": TEXT_PATTERN
                    }
                }
            },
            "action": {
                "description": "Dotted action name, segments of `a-z 0-9 _ -`; the `evident` namespace is the server's own.",
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_ACTION_BYTES,
                "pattern": "^(?!evident(\\.|$))[a-z0-9_-]+(\\.[a-z0-9_-]+)*$",
                "example": "config.threshold.changed"
            },
            "target": {
                "type": "object",
                "additionalProperties": false,
                "required": ["kind", "id"],
                "properties": {
                    "kind": text_schema("What kind of thing was acted on"),
                    "id": text_schema("Which one")
                }
            },
            "outcome": {"$ref": "#/components/schemas/OutcomeDoc"},
            "severity": {"$ref": "#/components/schemas/SeverityDoc"},
            "context": {
                "description": format!("Free-form JSON object (default `{{}}`): at most {MAX_CONTEXT_DEPTH} levels deep and {MAX_CONTEXT_BYTES} bytes in canonical form; numbers of magnitude at most 2^53 − 1."),
                "anyOf": [
                    {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/ContextValue"}},
                    {"type": "null"}
                ]
            }
        }
    });
    schemas["ContextValue"] = json!({
        "description": "A JSON value inside `context`.",
        "anyOf": [
            {"type": "string"},
            {"type": "number", "minimum": -(MAX_SAFE_INTEGER as i64), "maximum": MAX_SAFE_INTEGER},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "array", "items": {"$ref": "#/components/schemas/ContextValue"}},
            {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/ContextValue"}}
        ]
    });
    schemas["CreateKeyRequest"]["properties"]["tenant"]["pattern"] = json!(NAME_PATTERN);
    let label = &mut schemas["CreateKeyRequest"]["properties"]["label"];
    label["maxLength"] = json!(256);
    label["pattern"] = json!("^[^\\u0000-\\u001f\\u007f-\\u009f]*$");
    let grace = &mut schemas["RotateKeyRequest"]["properties"]["grace_seconds"];
    grace["minimum"] = json!(0);
    grace["maximum"] = json!(super::keys::MAX_GRACE_SECONDS);

    let paths = &mut doc["paths"];
    paths["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"] = json!({
        "oneOf": [
            {"$ref": "#/components/schemas/EventInputDoc"},
            {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/EventInputDoc"}}
        ]
    });
    paths["/api/v1/keys/{id}/rotate"]["post"]["requestBody"]["required"] = json!(false);
    // The tlog-witness request's form: `old <size>` (canonical decimal), no proof after size
    // 0, else up to 63 base64 SHA-256 hashes (strict base64: the last character before `=`
    // carries two zero bits), an empty line, then the checkpoint note (origin line first).
    paths["/api/v1/witness/add-checkpoint"]["post"]["requestBody"]["content"]["text/plain"]["schema"] = json!({
        "type": "string",
        "pattern": "^old (0\n|[1-9][0-9]{0,17}\n([A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=\n){0,63})\n[^\n]+(\n[^\n]*)*$",
    });
    // Time bounds of every filter (the audit log, its histogram, the review window): an
    // RFC 3339 time (the subset above) or epoch milliseconds below 10^14, both always
    // accepted. (Tree sizes named `from`/`to`, as the consistency proof's, are integers.)
    if let Some(paths) = paths.as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for operation in item.values_mut() {
                let Some(parameters) = operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut)
                else {
                    continue;
                };
                for parameter in parameters {
                    let time_bound = matches!(
                        parameter["name"].as_str(),
                        Some("from" | "to" | "occurred_from" | "occurred_to")
                    );
                    let integer = parameter["schema"]["type"] == "integer"
                        || parameter["schema"]["type"]
                            .as_array()
                            .is_some_and(|t| t.iter().any(|t| t == "integer"));
                    if parameter["in"] != "query" || integer {
                        continue;
                    }
                    if time_bound {
                        parameter["schema"] = json!({
                            "type": "string",
                            "pattern": format!("^({RFC3339_PATTERN}|0|[1-9][0-9]{{0,13}})$"),
                        });
                    }
                    match parameter["name"].as_str() {
                        // An action, or a prefix of whole segments as `config.*`.
                        Some("action") => {
                            parameter["schema"] = json!({
                                "type": "string",
                                "maxLength": MAX_ACTION_BYTES,
                                "pattern": "^[a-z0-9_-]+(\\.[a-z0-9_-]+)*(\\.\\*)?$",
                            });
                        }
                        // An address or a CIDR network (IPv6 networks also compressed, as
                        // `2001:db8::/32`, which a pattern of its own would not keep valid).
                        Some("ip") => {
                            let octet = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
                            parameter["schema"] = json!({"anyOf": [
                                {"type": "string", "format": "ipv4"},
                                {"type": "string", "format": "ipv6"},
                                {"type": "string", "pattern":
                                    format!("^{octet}(\\.{octet}){{3}}/(3[0-2]|[12]?[0-9])$")},
                                {"type": "string", "pattern":
                                    "^([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$"},
                            ]});
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    if let Some(paths) = paths.as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for operation in item.values_mut() {
                let Some(parameters) = operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut)
                else {
                    continue;
                };
                // A required parameter given empty is missing, so only optional ones.
                for parameter in parameters {
                    if parameter["in"] == "query" && parameter["required"] != true {
                        parameter["allowEmptyValue"] = json!(true);
                    }
                }
            }
        }
    }
}
