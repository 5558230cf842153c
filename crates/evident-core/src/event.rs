//! The audit event: what a client submits ([`EventInput`]), what the log stores ([`Event`]),
//! and the validation that stands between them. Every validation error names the field (as a
//! dotted path such as `actor.ip` or `context.a.b`) and the problem. Limits are constants here
//! and documented in `docs/FORMAT.md`.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use uuid::Uuid;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// Largest action name, in bytes.
pub const MAX_ACTION_BYTES: usize = 128;
/// Largest plain string field (actor id, user agent, target kind and id), in bytes.
pub const MAX_STRING_BYTES: usize = 1024;
/// Largest tenant or node id, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Largest context object, in bytes of its canonical JSON text.
pub const MAX_CONTEXT_BYTES: usize = 16 * 1024;
/// Deepest nesting of objects and arrays inside the context (the context object itself is 1).
pub const MAX_CONTEXT_DEPTH: usize = 16;
/// Tenant used when a client names none.
pub const DEFAULT_TENANT: &str = "default";

/// Who performed the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    Service,
    ApiKey,
    System,
}

/// How the action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

/// RFC 5424 severity, ordered from least (`Debug`) to most severe (`Emergency`) so that a
/// "minimum severity" filter is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

/// The actor of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    pub kind: ActorKind,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// What the action was done to, e.g. kind `node`, id `nyc-edge-01`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub kind: String,
    pub id: String,
}

/// The context object, held as its canonical (RFC 8785) JSON text so that it hashes the same
/// whatever key order or whitespace the client used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context(String);

/// An input that breaks a rule: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    /// Dotted path of the offending field, e.g. `actor.ip`.
    pub field: String,
    /// Human-readable statement of the problem.
    pub problem: String,
}

/// A validated event as a client submits it: everything except what the server assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInput {
    pub occurred_at: Option<Millis>,
    pub tenant: String,
    pub actor: Actor,
    pub action: String,
    pub target: Target,
    pub outcome: Outcome,
    pub severity: Severity,
    pub context: Context,
}

/// A sequenced event as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub id: Uuid,
    pub recorded_at: Millis,
    pub occurred_at: Option<Millis>,
    pub node_id: String,
    pub tenant: String,
    pub actor: Actor,
    pub action: String,
    pub target: Target,
    pub outcome: Outcome,
    pub severity: Severity,
    pub context: Context,
}

impl Context {
    /// The empty object `{}`.
    pub fn empty() -> Context {
        Context("{}".to_owned())
    }

    /// Validates a JSON value as a context object and canonicalizes it.
    pub fn from_value(_value: &serde_json::Value) -> Result<Context, ValidationError> {
        todo!()
    }

    /// Accepts text that must already be the canonical form of a valid context object (as read
    /// back from storage or an export); anything else is refused.
    pub fn from_canonical(_text: String) -> Result<Context, ValidationError> {
        todo!()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl EventInput {
    /// Validates one client-submitted JSON event. Unknown fields are refused.
    pub fn from_json(_value: &serde_json::Value) -> Result<EventInput, ValidationError> {
        todo!()
    }
}

impl Event {
    /// Builds the stored event from a validated input and what the server assigns.
    pub fn new(seq: u64, id: Uuid, recorded_at: Millis, node_id: String, input: EventInput) -> Event {
        Event {
            seq,
            id,
            recorded_at,
            occurred_at: input.occurred_at,
            node_id,
            tenant: input.tenant,
            actor: input.actor,
            action: input.action,
            target: input.target,
            outcome: input.outcome,
            severity: input.severity,
            context: input.context,
        }
    }
}

/// Validates a node id (the same rules as a tenant name).
pub fn validate_node_id(_node_id: &str) -> Result<(), ValidationError> {
    todo!()
}
