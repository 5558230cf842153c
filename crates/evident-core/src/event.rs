//! The audit event: what a client submits ([`EventInput`]), what the log stores ([`Event`]),
//! and the validation that stands between them. Every validation error names the field (as a
//! dotted path such as `actor.ip` or `context.a.b`) and the problem. Limits are constants here
//! and documented in `docs/FORMAT.md`. Also owns the JSON form of a stored event and the
//! timestamp text form (RFC 3339, UTC, milliseconds) used wherever a time is written.
//!
//! Client JSON (unknown fields refused; `null` for an optional field means absent):
//!
//! ```json
//! {"occurred_at": "2026-03-14T09:00:00Z" or 1773478800000,   // optional
//!  "tenant": "default",                                       // optional
//!  "actor": {"id": "alice", "kind": "user", "ip": "203.0.113.7", "user_agent": "curl/8"},
//!  "action": "config.threshold.changed",
//!  "target": {"kind": "node", "id": "nyc-edge-01"},
//!  "outcome": "success", "severity": "notice",
//!  "context": {"old": 5, "new": 7}}                            // optional, default {}
//! ```
//!
//! Stored event JSON (serialized by `impl Serialize for Event`, parsed strictly by
//! [`Event::from_json`]): every key always present, in this order, absent values as `null`:
//! `seq, id, recorded_at, occurred_at, node_id, tenant, actor{id, kind, ip, user_agent},
//! action, target{kind, id}, outcome, severity, context`, then `appended_by` for an entry of
//! encoding version 2 (every entry written since key ids are recorded; the key is absent, not
//! `null`, on version-1 entries, so their JSON form is the one they always had).
//!
//! Who appended an entry ([`Event::appended_by`]) is set by the server from the caller's API
//! key, never by the client: a client event naming `appended_by` is refused. The action
//! namespace `evident.*` is the node's own ([`refuse_reserved_action`]).

use serde::ser::{Error as _, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;
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
/// Earliest accepted timestamp: 1970-01-01T00:00:00.000Z.
pub const MIN_TIMESTAMP: Millis = 0;
/// Latest accepted timestamp: 9999-12-31T23:59:59.999Z.
pub const MAX_TIMESTAMP: Millis = 253_402_300_799_999;
/// Largest integer magnitude a context number may have: 2^53 − 1, the last one an IEEE 754
/// double (the JCS number type) holds exactly together with all smaller integers.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// [`Event::appended_by`] of an entry the node wrote itself (self-audit, retention, the offline
/// CLI): no API key appended it. API key ids (`evk_…`) never take this form.
pub const APPENDED_BY_SYSTEM: &str = "system";

/// Action namespace reserved for the node's own events: `evident` and `evident.<anything>`.
pub const RESERVED_ACTION_NAMESPACE: &str = "evident";

/// Field path used for a problem with the document as a whole.
pub const ROOT_FIELD: &str = "$";

/// The keys of a client event, in documentation order.
pub const INPUT_JSON_FIELDS: [&str; 8] = [
    "occurred_at",
    "tenant",
    "actor",
    "action",
    "target",
    "outcome",
    "severity",
    "context",
];

/// The keys of a stored event's JSON form, in the order they are written.
pub const EVENT_JSON_FIELDS: [&str; 13] = [
    "seq",
    "id",
    "recorded_at",
    "occurred_at",
    "node_id",
    "tenant",
    "actor",
    "action",
    "target",
    "outcome",
    "severity",
    "context",
    "appended_by",
];

/// The server-assigned key of a stored event that a client may not send.
pub const APPENDED_BY_FIELD: &str = "appended_by";

const ACTOR_FIELDS: [&str; 4] = ["id", "kind", "ip", "user_agent"];
const TARGET_FIELDS: [&str; 2] = ["kind", "id"];

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

impl ActorKind {
    pub const ALL: [ActorKind; 4] = [
        ActorKind::User,
        ActorKind::Service,
        ActorKind::ApiKey,
        ActorKind::System,
    ];

    /// The one text name, as in JSON and in the canonical encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Service => "service",
            ActorKind::ApiKey => "api_key",
            ActorKind::System => "system",
        }
    }

    pub fn from_name(name: &str) -> Option<ActorKind> {
        ActorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Success, Outcome::Failure, Outcome::Denied];

    /// The one text name, as in JSON and in the canonical encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    pub fn from_name(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

impl Severity {
    /// Least to most severe.
    pub const ALL: [Severity; 8] = [
        Severity::Debug,
        Severity::Info,
        Severity::Notice,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
        Severity::Alert,
        Severity::Emergency,
    ];

    /// The one text name, as stored, in JSON and in the canonical encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
            Severity::Alert => "alert",
            Severity::Emergency => "emergency",
        }
    }

    /// Exactly one of the eight canonical names.
    pub fn from_name(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// A canonical name or one of the syslog aliases `informational`, `warn`, `err`, `crit`,
    /// `emerg` (what clients and query filters may send).
    pub fn parse(name: &str) -> Option<Severity> {
        Severity::from_name(name).or(match name {
            "informational" => Some(Severity::Info),
            "warn" => Some(Severity::Warning),
            "err" => Some(Severity::Error),
            "crit" => Some(Severity::Critical),
            "emerg" => Some(Severity::Emergency),
            _ => None,
        })
    }

    /// The RFC 5424 numeric code: 0 (emergency) to 7 (debug).
    pub fn syslog_code(self) -> u8 {
        match self {
            Severity::Emergency => 0,
            Severity::Alert => 1,
            Severity::Critical => 2,
            Severity::Error => 3,
            Severity::Warning => 4,
            Severity::Notice => 5,
            Severity::Info => 6,
            Severity::Debug => 7,
        }
    }
}

impl fmt::Display for ActorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// Dotted path of the offending field, e.g. `actor.ip`; [`ROOT_FIELD`] for the whole.
    pub field: String,
    /// Human-readable statement of the problem.
    pub problem: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> ValidationError {
        ValidationError {
            field: field.into(),
            problem: problem.into(),
        }
    }
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
    /// Who appended the entry: the id of the API key whose request appended it, or
    /// [`APPENDED_BY_SYSTEM`] for an entry the node wrote itself. `None` only for an entry
    /// stored before key ids were recorded: it is encoded (and verified) in entry encoding
    /// version 1, every `Some` in version 2 (see [`crate::canonical`]).
    pub appended_by: Option<String>,
}

impl Context {
    /// The empty object `{}`.
    pub fn empty() -> Context {
        Context("{}".to_owned())
    }

    /// Validates a JSON value as a context object and canonicalizes it.
    pub fn from_value(value: &serde_json::Value) -> Result<Context, ValidationError> {
        let mut path = String::from("context");
        if !value.is_object() {
            return Err(ValidationError::new(
                path,
                format!("expected an object, got {}", type_name(value)),
            ));
        }
        check_context_value(value, &mut path, 1)?;
        let text = crate::canonical::canonical_json(value);
        if text.len() > MAX_CONTEXT_BYTES {
            return Err(ValidationError::new(
                "context",
                format!(
                    "is {} bytes in canonical form, at most {MAX_CONTEXT_BYTES} allowed",
                    text.len()
                ),
            ));
        }
        Ok(Context(text))
    }

    /// Accepts text that must already be the canonical form of a valid context object (as read
    /// back from storage or an export); anything else is refused.
    pub fn from_canonical(text: String) -> Result<Context, ValidationError> {
        // Every stored row is read this way: one pass over the text settles almost all of
        // them without building the value and writing it out again (a fifth of an export's
        // CPU, issue 16). What that pass does not accept, the full check decides.
        if is_canonical_context(&text) {
            return Ok(Context(text));
        }
        Context::from_canonical_by_value(text)
    }

    /// [`Context::from_canonical`] the long way: parse, validate, canonicalize, compare.
    fn from_canonical_by_value(text: String) -> Result<Context, ValidationError> {
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| ValidationError::new("context", format!("is not valid JSON: {e}")))?;
        let context = Context::from_value(&value)?;
        if context.0 != text {
            return Err(ValidationError::new(
                "context",
                "is not in canonical (RFC 8785) form",
            ));
        }
        Ok(context)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serializes as the JSON object itself (the canonical text, embedded verbatim).
impl Serialize for Context {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(S::Error::custom)?;
        raw.serialize(s)
    }
}

/// Whether `text` is, byte for byte, what [`Context::from_value`] makes of its value (the
/// RFC 8785 text of a valid context object), found in one pass without building the value:
/// no whitespace; members in UTF-16 order, each name once; strings escaped exactly as
/// `canonical::write_canonical_json` escapes them; numbers exactly as it writes them (each
/// token parsed and written back by the same code) and exact as doubles; containers at most
/// [`MAX_CONTEXT_DEPTH`] deep; at most [`MAX_CONTEXT_BYTES`]. It may answer `false` for text
/// the full check would accept (the caller then runs it); it never answers `true` for text
/// that check refuses or would rewrite.
fn is_canonical_context(text: &str) -> bool {
    if text.len() > MAX_CONTEXT_BYTES || !text.starts_with('{') {
        return false;
    }
    let mut scan = CanonicalScan {
        text,
        pos: 0,
        number: String::new(),
    };
    scan.value(1) && scan.pos == text.len()
}

/// The cursor of [`is_canonical_context`].
struct CanonicalScan<'a> {
    text: &'a str,
    pos: usize,
    /// Scratch for a number written back.
    number: String,
}

impl<'a> CanonicalScan<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let found = self.text.as_bytes()[self.pos..].starts_with(word.as_bytes());
        if found {
            self.pos += word.len();
        }
        found
    }

    /// One value whose containers sit at `depth` (the context object itself is depth 1).
    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => depth <= MAX_CONTEXT_DEPTH && self.object(depth),
            Some(b'[') => depth <= MAX_CONTEXT_DEPTH && self.array(depth),
            Some(b'"') => self.string().is_some(),
            Some(b't') => self.eat_word("true"),
            Some(b'f') => self.eat_word("false"),
            Some(b'n') => self.eat_word("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.pos += 1;
        if self.eat(b'}') {
            return true;
        }
        let mut previous: Option<std::borrow::Cow<'a, str>> = None;
        loop {
            let Some(name) = self.string() else {
                return false;
            };
            let ordered = previous
                .as_deref()
                .is_none_or(|p| crate::canonical::utf16_cmp(p, &name) == std::cmp::Ordering::Less);
            if !ordered || !self.eat(b':') || !self.value(depth + 1) {
                return false;
            }
            previous = Some(name);
            if !self.eat(b',') {
                return self.eat(b'}');
            }
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.pos += 1;
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth + 1) {
                return false;
            }
            if !self.eat(b',') {
                return self.eat(b']');
            }
        }
    }

    /// A string in canonical form, decoded (borrowed when it holds no escape).
    fn string(&mut self) -> Option<std::borrow::Cow<'a, str>> {
        if !self.eat(b'"') {
            return None;
        }
        let bytes = self.text.as_bytes();
        let mut decoded: Option<String> = None;
        let mut run = self.pos;
        loop {
            let byte = *bytes.get(self.pos)?;
            match byte {
                b'"' => {
                    // Both ends are ASCII bytes: character boundaries.
                    let rest = &self.text[run..self.pos];
                    self.pos += 1;
                    return Some(match decoded {
                        None => std::borrow::Cow::Borrowed(rest),
                        Some(mut d) => {
                            d.push_str(rest);
                            std::borrow::Cow::Owned(d)
                        }
                    });
                }
                b'\\' => {
                    let d = decoded.get_or_insert_with(String::new);
                    d.push_str(&self.text[run..self.pos]);
                    let unescaped = match *bytes.get(self.pos + 1)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'b' => '\u{8}',
                        b't' => '\t',
                        b'n' => '\n',
                        b'f' => '\u{c}',
                        b'r' => '\r',
                        b'u' => {
                            // Only `\u00xx` (lowercase hex) for a control character that has
                            // no short escape.
                            let hex = bytes.get(self.pos + 2..self.pos + 6)?;
                            let digit = |b: u8| match b {
                                b'0'..=b'9' => Some(b - b'0'),
                                b'a'..=b'f' => Some(b - b'a' + 10),
                                _ => None,
                            };
                            if hex[..2] != *b"00" {
                                return None;
                            }
                            let code = digit(hex[2])? << 4 | digit(hex[3])?;
                            if code >= 0x20 || matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            self.pos += 4;
                            char::from(code)
                        }
                        _ => return None,
                    };
                    d.push(unescaped);
                    self.pos += 2;
                    run = self.pos;
                }
                0x00..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
    }

    /// A number token, written back exactly by the canonical writer and exact as a double.
    fn number(&mut self) -> bool {
        let start = self.pos;
        let digits = |scan: &mut CanonicalScan<'_>| {
            let from = scan.pos;
            while matches!(scan.peek(), Some(b'0'..=b'9')) {
                scan.pos += 1;
            }
            scan.pos > from
        };
        self.eat(b'-');
        if !digits(self) {
            return false;
        }
        if self.eat(b'.') && !digits(self) {
            return false;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            if !digits(self) {
                return false;
            }
        }
        let token = &self.text[start..self.pos];
        let Ok(number) = serde_json::from_str::<serde_json::Number>(token) else {
            return false;
        };
        if check_context_number(&number, "context").is_err() {
            return false;
        }
        self.number.clear();
        crate::canonical::write_canonical_json(&Value::Number(number), &mut self.number);
        self.number == token
    }
}

fn check_context_value(
    value: &Value,
    path: &mut String,
    depth: usize,
) -> Result<(), ValidationError> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
        Value::Number(n) => check_context_number(n, path),
        Value::Array(items) => {
            check_depth(path, depth)?;
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_context_value(item, path, depth + 1)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            check_depth(path, depth)?;
            for (key, item) in map {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                check_context_value(item, path, depth + 1)?;
                path.truncate(len);
            }
            Ok(())
        }
    }
}

fn check_depth(path: &str, depth: usize) -> Result<(), ValidationError> {
    if depth > MAX_CONTEXT_DEPTH {
        return Err(ValidationError::new(
            path,
            format!("nests objects and arrays deeper than {MAX_CONTEXT_DEPTH} levels"),
        ));
    }
    Ok(())
}

fn check_context_number(n: &serde_json::Number, path: &str) -> Result<(), ValidationError> {
    let exact = if let Some(u) = n.as_u64() {
        u <= MAX_SAFE_INTEGER
    } else if let Some(i) = n.as_i64() {
        i.unsigned_abs() <= MAX_SAFE_INTEGER
    } else {
        match n.as_f64() {
            Some(x) if !x.is_finite() => {
                return Err(ValidationError::new(path, "is not a finite number"));
            }
            // Every double at or above 2^53 is an integer; beyond 2^53 − 1 neighbouring
            // integers collapse, so a big integer that arrived as (or overflowed into) a
            // double would be silently rounded.
            Some(x) => x.abs() <= MAX_SAFE_INTEGER as f64,
            None => false,
        }
    };
    if exact {
        Ok(())
    } else {
        Err(ValidationError::new(
            path,
            format!(
                "number {n} is too large to be held exactly (context numbers are IEEE 754 \
                 doubles, magnitude at most {MAX_SAFE_INTEGER}); send big numbers as strings"
            ),
        ))
    }
}

impl EventInput {
    /// Validates one client-submitted JSON event. Unknown fields are refused.
    pub fn from_json(value: &serde_json::Value) -> Result<EventInput, ValidationError> {
        let obj = expect_object(value, ROOT_FIELD)?;
        if obj.contains_key(APPENDED_BY_FIELD) {
            return Err(ValidationError::new(
                APPENDED_BY_FIELD,
                "is set by the server from the API key that appends the event; a client cannot send it",
            ));
        }
        refuse_unknown(obj, "", &INPUT_JSON_FIELDS)?;
        let occurred_at = match optional(obj, "occurred_at") {
            None => None,
            Some(v) => Some(client_timestamp(v, "occurred_at")?),
        };
        let tenant = match optional(obj, "tenant") {
            None => DEFAULT_TENANT.to_owned(),
            Some(v) => {
                let s = expect_str(v, "tenant")?;
                check_name(s, "tenant")?;
                s.to_owned()
            }
        };
        let actor = client_actor(required(obj, "", "actor")?)?;
        let action = expect_str(required(obj, "", "action")?, "action")?;
        check_action(action, "action")?;
        let target = parse_target(required(obj, "", "target")?)?;
        let outcome = parse_outcome(required(obj, "", "outcome")?)?;
        let severity = parse_severity(required(obj, "", "severity")?, true)?;
        let context = match optional(obj, "context") {
            None => Context::empty(),
            Some(v) => Context::from_value(v)?,
        };
        Ok(EventInput {
            occurred_at,
            tenant,
            actor,
            action: action.to_owned(),
            target,
            outcome,
            severity,
            context,
        })
    }
}

impl Event {
    /// Builds the stored event (entry encoding version 2) from a validated input and what the
    /// server assigns: `appended_by` is the appending API key's id or [`APPENDED_BY_SYSTEM`].
    pub fn new(
        seq: u64,
        id: Uuid,
        recorded_at: Millis,
        node_id: String,
        appended_by: String,
        input: EventInput,
    ) -> Event {
        Event {
            appended_by: Some(appended_by),
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

    /// The entry encoding version this event is hashed in: 1 or 2.
    pub fn entry_version(&self) -> u8 {
        if self.appended_by.is_some() { 2 } else { 1 }
    }

    /// Parses a stored event's JSON form strictly: exactly the keys of [`EVENT_JSON_FIELDS`]
    /// (nullable ones present as `null`; `appended_by` present exactly on version-2 entries,
    /// never `null`), every value in the one form `Serialize` writes
    /// (lowercase hyphenated id, timestamps as `YYYY-MM-DDTHH:MM:SS.mmmZ`, canonical enum
    /// names, IP addresses in their standard text form), and every rule of client input.
    pub fn from_json(value: &serde_json::Value) -> Result<Event, ValidationError> {
        let obj = expect_object(value, ROOT_FIELD)?;
        refuse_unknown(obj, "", &EVENT_JSON_FIELDS)?;
        let seq_value = required(obj, "", "seq")?;
        let seq = seq_value
            .as_u64()
            .ok_or_else(|| wrong_type("seq", "a non-negative integer", seq_value))?;
        let id_text = expect_str(required(obj, "", "id")?, "id")?;
        let id = Uuid::try_parse(id_text)
            .ok()
            .filter(|id| id.hyphenated().to_string() == id_text)
            .ok_or_else(|| ValidationError::new("id", "expected a lowercase hyphenated UUID"))?;
        let recorded_at = stored_timestamp(
            expect_str(required(obj, "", "recorded_at")?, "recorded_at")?,
            "recorded_at",
        )?;
        let occurred_at = match required(obj, "", "occurred_at")? {
            Value::Null => None,
            v => Some(stored_timestamp(
                expect_str(v, "occurred_at")?,
                "occurred_at",
            )?),
        };
        let node_id = expect_str(required(obj, "", "node_id")?, "node_id")?;
        check_name(node_id, "node_id")?;
        let tenant = expect_str(required(obj, "", "tenant")?, "tenant")?;
        check_name(tenant, "tenant")?;
        let actor = stored_actor(required(obj, "", "actor")?)?;
        let action = expect_str(required(obj, "", "action")?, "action")?;
        check_action(action, "action")?;
        let target = parse_target(required(obj, "", "target")?)?;
        let outcome = parse_outcome(required(obj, "", "outcome")?)?;
        let severity = parse_severity(required(obj, "", "severity")?, false)?;
        let context = Context::from_value(required(obj, "", "context")?)?;
        let appended_by = match obj.get(APPENDED_BY_FIELD) {
            None => None,
            Some(v) => {
                let text = expect_str(v, APPENDED_BY_FIELD)?;
                validate_appended_by(text)?;
                Some(text.to_owned())
            }
        };
        Ok(Event {
            appended_by,
            seq,
            id,
            recorded_at,
            occurred_at,
            node_id: node_id.to_owned(),
            tenant: tenant.to_owned(),
            actor,
            action: action.to_owned(),
            target,
            outcome,
            severity,
            context,
        })
    }
}

/// Writes the stored JSON form, keys in the order of [`EVENT_JSON_FIELDS`].
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Uuid::encode_buffer();
        let id: &str = self.id.hyphenated().encode_lower(&mut buf);
        let mut st = s.serialize_struct("Event", EVENT_JSON_FIELDS.len())?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("id", id)?;
        st.serialize_field("recorded_at", &Rfc3339Millis(self.recorded_at))?;
        st.serialize_field("occurred_at", &self.occurred_at.map(Rfc3339Millis))?;
        st.serialize_field("node_id", &self.node_id)?;
        st.serialize_field("tenant", &self.tenant)?;
        st.serialize_field("actor", &ActorJson(&self.actor))?;
        st.serialize_field("action", &self.action)?;
        st.serialize_field("target", &self.target)?;
        st.serialize_field("outcome", self.outcome.as_str())?;
        st.serialize_field("severity", self.severity.as_str())?;
        st.serialize_field("context", &self.context)?;
        if let Some(appended_by) = &self.appended_by {
            st.serialize_field(APPENDED_BY_FIELD, appended_by)?;
        }
        st.end()
    }
}

/// Pins the actor's JSON form here rather than relying on the derived impl's field handling.
struct ActorJson<'a>(&'a Actor);

impl Serialize for ActorJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let actor = self.0;
        let mut st = s.serialize_struct("Actor", ACTOR_FIELDS.len())?;
        st.serialize_field("id", &actor.id)?;
        st.serialize_field("kind", actor.kind.as_str())?;
        st.serialize_field("ip", &actor.ip.map(|ip| ip.to_string()))?;
        st.serialize_field("user_agent", &actor.user_agent)?;
        st.end()
    }
}

/// A timestamp that serializes as [`format_rfc3339_millis`] text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rfc3339Millis(pub Millis);

impl Serialize for Rfc3339Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339_millis(self.0))
    }
}

impl fmt::Display for Rfc3339Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_rfc3339_millis(self.0))
    }
}

/// Validates a node id (the same rules as a tenant name).
pub fn validate_node_id(node_id: &str) -> Result<(), ValidationError> {
    check_name(node_id, "node_id")
}

/// Validates a tenant name: 1 to [`MAX_NAME_BYTES`] bytes of `[A-Za-z0-9_.:-]`.
pub fn validate_tenant(tenant: &str) -> Result<(), ValidationError> {
    check_name(tenant, "tenant")
}

/// Validates who appended an entry: an API key id or [`APPENDED_BY_SYSTEM`], held to the rules
/// of a name (1 to [`MAX_NAME_BYTES`] bytes of `[A-Za-z0-9_.:-]`).
pub fn validate_appended_by(appended_by: &str) -> Result<(), ValidationError> {
    check_name(appended_by, APPENDED_BY_FIELD)
}

/// Refuses an action a client may not append: `evident` and everything under `evident.` are
/// the node's own (self-audit and integrity events), so that no client event can pass for one.
/// The node's own events do not go through this check.
pub fn refuse_reserved_action(action: &str) -> Result<(), ValidationError> {
    let reserved = action
        .strip_prefix(RESERVED_ACTION_NAMESPACE)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
    if reserved {
        return Err(ValidationError::new(
            "action",
            format!(
                "{:?} is in the {RESERVED_ACTION_NAMESPACE}.* namespace, which is reserved for the node's own events",
                preview(action)
            ),
        ));
    }
    Ok(())
}

/// Validates an action name: dot-separated non-empty segments of `[a-z0-9_-]`, 1 to
/// [`MAX_ACTION_BYTES`] bytes (also what an action filter may name).
pub fn validate_action(action: &str) -> Result<(), ValidationError> {
    check_action(action, "action")
}

// ---- client and stored sub-objects ----

fn client_actor(value: &Value) -> Result<Actor, ValidationError> {
    let obj = expect_object(value, "actor")?;
    refuse_unknown(obj, "actor", &ACTOR_FIELDS)?;
    let id = expect_str(required(obj, "actor", "id")?, "actor.id")?;
    check_text(id, "actor.id")?;
    let kind = parse_actor_kind(required(obj, "actor", "kind")?)?;
    let ip = match optional(obj, "ip") {
        None => None,
        Some(v) => {
            let text = expect_str(v, "actor.ip")?;
            let ip: IpAddr = text
                .parse()
                .map_err(|_| ValidationError::new("actor.ip", "is not an IPv4 or IPv6 address"))?;
            // One address, one form: ::ffff:a.b.c.d is the IPv4 address a.b.c.d.
            Some(ip.to_canonical())
        }
    };
    let user_agent = match optional(obj, "user_agent") {
        None => None,
        Some(v) => {
            let ua = expect_str(v, "actor.user_agent")?;
            // An empty User-Agent header is common and says nothing: held as absent, so the
            // event is not refused and has one form.
            if ua.is_empty() {
                None
            } else {
                check_text(ua, "actor.user_agent")?;
                Some(ua.to_owned())
            }
        }
    };
    Ok(Actor {
        id: id.to_owned(),
        kind,
        ip,
        user_agent,
    })
}

fn stored_actor(value: &Value) -> Result<Actor, ValidationError> {
    let obj = expect_object(value, "actor")?;
    refuse_unknown(obj, "actor", &ACTOR_FIELDS)?;
    refuse_missing(obj, "actor", &ACTOR_FIELDS)?;
    let id = expect_str(required(obj, "actor", "id")?, "actor.id")?;
    check_text(id, "actor.id")?;
    let kind = parse_actor_kind(required(obj, "actor", "kind")?)?;
    let ip = match required(obj, "actor", "ip")? {
        Value::Null => None,
        v => {
            let text = expect_str(v, "actor.ip")?;
            let ip = text
                .parse::<IpAddr>()
                .ok()
                .filter(|ip| ip.to_canonical() == *ip && ip.to_string() == text)
                .ok_or_else(|| {
                    ValidationError::new(
                        "actor.ip",
                        "expected an IP address in its standard text form",
                    )
                })?;
            Some(ip)
        }
    };
    let user_agent = match required(obj, "actor", "user_agent")? {
        Value::Null => None,
        v => {
            let ua = expect_str(v, "actor.user_agent")?;
            check_text(ua, "actor.user_agent")?;
            Some(ua.to_owned())
        }
    };
    Ok(Actor {
        id: id.to_owned(),
        kind,
        ip,
        user_agent,
    })
}

fn parse_target(value: &Value) -> Result<Target, ValidationError> {
    let obj = expect_object(value, "target")?;
    refuse_unknown(obj, "target", &TARGET_FIELDS)?;
    let kind = expect_str(required(obj, "target", "kind")?, "target.kind")?;
    check_text(kind, "target.kind")?;
    let id = expect_str(required(obj, "target", "id")?, "target.id")?;
    check_text(id, "target.id")?;
    Ok(Target {
        kind: kind.to_owned(),
        id: id.to_owned(),
    })
}

fn parse_actor_kind(value: &Value) -> Result<ActorKind, ValidationError> {
    let name = expect_str(value, "actor.kind")?;
    ActorKind::from_name(name).ok_or_else(|| {
        unknown_value(
            "actor.kind",
            name,
            &ActorKind::ALL.map(ActorKind::as_str),
            "",
        )
    })
}

fn parse_outcome(value: &Value) -> Result<Outcome, ValidationError> {
    let name = expect_str(value, "outcome")?;
    Outcome::from_name(name)
        .ok_or_else(|| unknown_value("outcome", name, &Outcome::ALL.map(Outcome::as_str), ""))
}

fn parse_severity(value: &Value, aliases: bool) -> Result<Severity, ValidationError> {
    let name = expect_str(value, "severity")?;
    let found = if aliases {
        Severity::parse(name)
    } else {
        Severity::from_name(name)
    };
    found.ok_or_else(|| {
        let note = if aliases {
            " (or the aliases informational, warn, err, crit, emerg)"
        } else {
            ""
        };
        unknown_value("severity", name, &Severity::ALL.map(Severity::as_str), note)
    })
}

fn client_timestamp(value: &Value, field: &str) -> Result<Millis, ValidationError> {
    let ms = match value {
        Value::String(s) => parse_rfc3339(s).map_err(|p| ValidationError::new(field, p.problem))?,
        Value::Number(n) => integer_value(n).ok_or_else(|| {
            ValidationError::new(
                field,
                format!("expected integer milliseconds since the Unix epoch, got {n}"),
            )
        })?,
        other => {
            return Err(wrong_type(
                field,
                "an RFC 3339 string or integer milliseconds since the Unix epoch",
                other,
            ));
        }
    };
    check_range(ms).map_err(|p| ValidationError::new(field, p.problem))
}

/// The integer a JSON number denotes: `1773478800000` and `1773478800000.0` (or `1.7734788e12`)
/// alike, as JSON Schema's `integer` counts any number with a zero fractional part; `None`
/// for a fraction or beyond `i64`.
pub fn integer_value(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let x = n.as_f64()?;
    // 2^63 is exact as a double; every double below it in magnitude with no fraction fits.
    let in_range = x.is_finite() && x.fract() == 0.0 && x.abs() < 9_223_372_036_854_775_808.0;
    in_range.then_some(x as i64)
}

fn stored_timestamp(text: &str, field: &str) -> Result<Millis, ValidationError> {
    parse_rfc3339(text)
        .and_then(check_range)
        .ok()
        .filter(|ms| format_rfc3339_millis(*ms) == text)
        .ok_or_else(|| {
            ValidationError::new(
                field,
                "expected a timestamp of the form YYYY-MM-DDTHH:MM:SS.mmmZ",
            )
        })
}

// ---- field rules ----

fn check_text(s: &str, field: &str) -> Result<(), ValidationError> {
    check_length(s, field, MAX_STRING_BYTES)?;
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'))
    {
        return Err(ValidationError::new(
            field,
            format!(
                "must not contain control characters (found U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

fn check_name(s: &str, field: &str) -> Result<(), ValidationError> {
    check_length(s, field, MAX_NAME_BYTES)?;
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(ValidationError::new(
            field,
            format!("contains {c:?}; allowed characters are A-Z, a-z, 0-9, '_', '.', ':' and '-'"),
        ));
    }
    Ok(())
}

fn check_action(s: &str, field: &str) -> Result<(), ValidationError> {
    check_length(s, field, MAX_ACTION_BYTES)?;
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')))
    {
        return Err(ValidationError::new(
            field,
            format!("contains {c:?}; an action is dot-separated segments of a-z, 0-9, '_' and '-'"),
        ));
    }
    if s.split('.').any(str::is_empty) {
        return Err(ValidationError::new(
            field,
            "has an empty segment; an action is dot-separated non-empty segments such as auth.login.failed",
        ));
    }
    Ok(())
}

fn check_length(s: &str, field: &str, max: usize) -> Result<(), ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes, at most {max} allowed", s.len()),
        ));
    }
    Ok(())
}

// ---- JSON shape helpers ----

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> ValidationError {
    ValidationError::new(
        field,
        format!("expected {expected}, got {}", type_name(got)),
    )
}

fn expect_object<'a>(
    value: &'a Value,
    field: &str,
) -> Result<&'a Map<String, Value>, ValidationError> {
    value
        .as_object()
        .ok_or_else(|| wrong_type(field, "an object", value))
}

fn expect_str<'a>(value: &'a Value, field: &str) -> Result<&'a str, ValidationError> {
    value
        .as_str()
        .ok_or_else(|| wrong_type(field, "a string", value))
}

/// A present, non-null optional member.
fn optional<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn required<'a>(
    obj: &'a Map<String, Value>,
    prefix: &str,
    key: &str,
) -> Result<&'a Value, ValidationError> {
    obj.get(key)
        .ok_or_else(|| ValidationError::new(join(prefix, key), "required field is missing"))
}

fn refuse_unknown(
    obj: &Map<String, Value>,
    prefix: &str,
    allowed: &[&str],
) -> Result<(), ValidationError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(ValidationError::new(
            join(prefix, &preview(key)),
            format!("unknown field; allowed fields are {}", allowed.join(", ")),
        )),
    }
}

fn refuse_missing(
    obj: &Map<String, Value>,
    prefix: &str,
    keys: &[&str],
) -> Result<(), ValidationError> {
    match keys.iter().find(|k| !obj.contains_key(**k)) {
        None => Ok(()),
        Some(key) => Err(ValidationError::new(
            join(prefix, key),
            "required field is missing",
        )),
    }
}

fn unknown_value(field: &str, got: &str, allowed: &[&str], note: &str) -> ValidationError {
    ValidationError::new(
        field,
        format!(
            "unknown value {:?}; expected one of {}{note}",
            preview(got),
            allowed.join(", ")
        ),
    )
}

/// Caps client text quoted back in an error message.
fn preview(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    match s.char_indices().nth(MAX_CHARS) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

// ---- timestamps ----

/// A timestamp text that is not accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct BadTimestamp {
    pub problem: String,
}

impl BadTimestamp {
    fn new(problem: impl Into<String>) -> BadTimestamp {
        BadTimestamp {
            problem: problem.into(),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, UTC, exactly three fractional digits: the one text form of a
/// timestamp in JSON, CSV and exports. Total for any input; only [`MIN_TIMESTAMP`] to
/// [`MAX_TIMESTAMP`] give valid RFC 3339.
pub fn format_rfc3339_millis(ms: Millis) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        in_day % 1000
    )
}

/// Parses a timestamp as a client or a query filter gives it: an RFC 3339 date-time with any
/// offset (see [`parse_rfc3339`]) or a decimal count of milliseconds since the Unix epoch,
/// within [`MIN_TIMESTAMP`]..=[`MAX_TIMESTAMP`].
pub fn parse_timestamp(text: &str) -> Result<Millis, BadTimestamp> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let ms = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<i64>()
            .map_err(|_| BadTimestamp::new("milliseconds since the Unix epoch out of range"))?
    } else {
        parse_rfc3339(text)?
    };
    check_range(ms)
}

fn check_range(ms: Millis) -> Result<Millis, BadTimestamp> {
    if (MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&ms) {
        Ok(ms)
    } else {
        Err(BadTimestamp::new(
            "must lie between 1970-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z",
        ))
    }
}

/// Parses an RFC 3339 date-time (`2026-03-14T09:00:00Z`, `2026-03-14t10:00:00.5+01:00`) to
/// milliseconds. Fractional digits beyond the millisecond are truncated; a leap second
/// (`:60`) is held as the last millisecond of its minute. No range check.
pub fn parse_rfc3339(text: &str) -> Result<Millis, BadTimestamp> {
    let syntax = || {
        BadTimestamp::new(format!(
            "{:?} is not an RFC 3339 date-time such as 2026-03-14T09:00:00.000Z",
            preview(text)
        ))
    };
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Result<i64, BadTimestamp> {
        let part = b.get(range).ok_or_else(syntax)?;
        if part.iter().all(u8::is_ascii_digit) {
            Ok(part.iter().fold(0, |acc, d| acc * 10 + i64::from(d - b'0')))
        } else {
            Err(syntax())
        }
    };
    let punct_ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't')
        && b[13] == b':'
        && b[16] == b':';
    if !punct_ok {
        return Err(syntax());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, mut second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut pos = 19;
    let mut millis = 0;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            if pos - start < 3 {
                millis = millis * 10 + i64::from(b[pos] - b'0');
            }
            pos += 1;
        }
        if pos == start {
            return Err(syntax());
        }
        for _ in (pos - start)..3 {
            millis *= 10;
        }
    }
    let offset_minutes = match b.get(pos..) {
        Some([b'Z' | b'z']) => 0,
        Some([sign @ (b'+' | b'-'), _, _, b':', _, _]) => {
            let (oh, om) = (num(pos + 1..pos + 3)?, num(pos + 4..pos + 6)?);
            if oh > 23 || om > 59 {
                return Err(BadTimestamp::new("time zone offset out of range"));
            }
            if *sign == b'-' {
                -(oh * 60 + om)
            } else {
                oh * 60 + om
            }
        }
        _ => return Err(syntax()),
    };
    if !(1..=12).contains(&month) {
        return Err(BadTimestamp::new(format!("month {month} does not exist")));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(BadTimestamp::new(format!(
            "day {day} does not exist in {year:04}-{month:02}"
        )));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(BadTimestamp::new("time of day out of range"));
    }
    if second == 60 {
        second = 59;
        millis = 999;
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400_000 + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000 + millis)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Proleptic Gregorian calendar <-> days since 1970-01-01, by counting 400-year eras of 146097
// days from 0000-03-01 (so that the leap day ends each year).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// JSON values of every kind: strings with quotes, backslashes, control characters and
    /// characters beyond the BMP; integers and doubles of every magnitude; nesting.
    fn json_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| Value::from(i >> (i & 63))),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(Value::from),
            (-1000i64..1000, 0u32..6)
                .prop_map(|(m, e)| Value::from(m as f64 / 10f64.powi(e as i32))),
            r#"[a-z"\\\x00-\x1f\x7fé€😀/ ]{0,6}"#.prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(r#"[a-zA-Z_é😀\uff61"\\\x01]{0,3}"#, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A context object made of generated members, in canonical form (when valid).
    fn canonical_strategy() -> impl Strategy<Value = String> {
        prop::collection::btree_map(r#"[a-zA-Z_é😀\uff61"\\]{0,3}"#, json_strategy(), 0..6)
            .prop_filter_map("a valid context", |members| {
                Context::from_value(&Value::Object(members.into_iter().collect()))
                    .ok()
                    .map(|c| c.0)
            })
    }

    /// The byte-level edits a stored context could suffer: insert, delete or replace one
    /// character, from JSON's punctuation, escapes, digits and letters.
    fn edited(text: &str, edits: &[(usize, u8, char)]) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for &(at, kind, c) in edits {
            let at = at % (chars.len() + 1);
            match kind % 3 {
                0 => chars.insert(at, c),
                1 if at < chars.len() => {
                    chars.remove(at);
                }
                _ if at < chars.len() => chars[at] = c,
                _ => chars.push(c),
            }
        }
        chars.into_iter().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every canonical context is recognized by the one-pass check (so stored rows take
        /// the fast path), and read back as itself.
        #[test]
        fn the_one_pass_check_accepts_every_canonical_context(text in canonical_strategy()) {
            prop_assert!(is_canonical_context(&text), "{text}");
            prop_assert_eq!(Context::from_canonical(text.clone()).map(|c| c.0), Ok(text));
        }

        /// Soundness: whatever an edit makes of a canonical context, the one-pass check
        /// accepts it only if the full check accepts it unchanged; and both paths together
        /// decide exactly as the full check alone.
        #[test]
        fn the_one_pass_check_never_accepts_what_the_full_check_refuses(
            text in canonical_strategy(),
            edits in prop::collection::vec(
                (any::<usize>(), any::<u8>(), prop::sample::select(vec![
                    ' ', '"', '\\', '/', 'u', '0', '1', '9', '.', 'e', 'E', '-', '+', ',', ':',
                    '{', '}', '[', ']', 'a', 'b', 'n', 't', 'f', '\u{1}', '\u{7f}', 'é', '😀',
                ])),
                1..4,
            ),
        ) {
            let text = edited(&text, &edits);
            let full = Context::from_canonical_by_value(text.clone());
            if is_canonical_context(&text) {
                prop_assert_eq!(full.clone().map(|c| c.0), Ok(text.clone()), "{}", text);
            }
            prop_assert_eq!(Context::from_canonical(text.clone()), full);
        }
    }

    #[test]
    fn the_one_pass_check_decides_the_edge_cases_as_the_full_check() {
        let deep_ok = format!(
            "{}{}",
            "{\"a\":".repeat(MAX_CONTEXT_DEPTH - 1) + "{}",
            "}".repeat(MAX_CONTEXT_DEPTH - 1)
        );
        let deep_bad = format!(
            "{}{}",
            "{\"a\":".repeat(MAX_CONTEXT_DEPTH) + "{}",
            "}".repeat(MAX_CONTEXT_DEPTH)
        );
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_CONTEXT_BYTES));
        for (text, fast) in [
            ("{}", true),
            (r#"{"":0,"a":-1.5,"b":[true,false,null,"\u001f\n"]}"#, true),
            (
                r#"{"a":9007199254740991,"b":-9007199254740991,"c":1e-7,"d":1e+21}"#,
                false,
            ),
            (
                r#"{"a":9007199254740991,"b":-9007199254740991,"c":1e-7}"#,
                true,
            ),
            (r#"{"\uff61":1,"😀":2}"#, false),
            ("{\"😀\":2,\"\u{ff61}\":1}", true),
            (r#"{"a":-0}"#, false),
            (r#"{"a":01}"#, false),
            (r#"{"a":"\u000a"}"#, false),
            (r#"{"a":"\u001F"}"#, false),
            (r#"{"a":1}x"#, false),
            (deep_ok.as_str(), true),
            (deep_bad.as_str(), false),
            (long.as_str(), false),
        ] {
            assert_eq!(is_canonical_context(text), fast, "{text}");
            let full = Context::from_canonical_by_value(text.to_owned());
            if fast {
                assert_eq!(full.map(|c| c.0), Ok(text.to_owned()), "{text}");
            }
            assert_eq!(
                Context::from_canonical(text.to_owned()),
                Context::from_canonical_by_value(text.to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn known_epoch_values() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(MAX_TIMESTAMP),
            "9999-12-31T23:59:59.999Z"
        );
        // 2000-02-29 (a leap day of a century leap year) is day 11016 since the epoch.
        assert_eq!(
            format_rfc3339_millis(11_016 * 86_400_000 + 1),
            "2000-02-29T00:00:00.001Z"
        );
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z"),
            Ok(11_017 * 86_400_000)
        );
        assert_eq!(format_rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
        // Total for extreme values (no panic, no overflow).
        let _ = format_rfc3339_millis(i64::MIN);
        let _ = format_rfc3339_millis(i64::MAX);
    }

    #[test]
    fn offsets_fractions_and_leap_seconds() {
        let base = parse_rfc3339("2026-03-14T09:00:00Z").unwrap();
        assert_eq!(format_rfc3339_millis(base), "2026-03-14T09:00:00.000Z");
        assert_eq!(parse_rfc3339("2026-03-14T10:30:00+01:30"), Ok(base));
        assert_eq!(parse_rfc3339("2026-03-14t04:00:00-05:00"), Ok(base));
        assert_eq!(parse_rfc3339("2026-03-14T09:00:00.5Z"), Ok(base + 500));
        assert_eq!(parse_rfc3339("2026-03-14T09:00:00.123999z"), Ok(base + 123));
        assert_eq!(parse_rfc3339("2026-03-14T08:59:60Z"), Ok(base - 1));
    }

    #[test]
    fn malformed_rfc3339_is_refused() {
        for bad in [
            "",
            "2026-03-14",
            "2026-03-14 09:00:00Z",
            "2026-03-14T09:00:00",
            "2026-03-14T09:00:00.Z",
            "2026-03-14T09:00:00+0100",
            "2026-03-14T09:00:00+01:00x",
            "2026-02-29T09:00:00Z",
            "2026-13-01T09:00:00Z",
            "2026-00-01T09:00:00Z",
            "2026-03-14T24:00:00Z",
            "2026-03-14T09:60:00Z",
            "2026-03-14T09:00:61Z",
            "2026-03-14T09:00:00+24:00",
            "+026-03-14T09:00:00Z",
            "2026-03-14T09:00:00Ż",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parse_timestamp_accepts_epoch_millis_and_checks_range() {
        assert_eq!(parse_timestamp("1773478800000"), Ok(1_773_478_800_000));
        assert_eq!(
            parse_timestamp("2026-03-14T09:00:00Z"),
            Ok(1_773_478_800_000)
        );
        assert!(parse_timestamp("-1").is_err());
        assert!(parse_timestamp("253402300800000").is_err());
        assert!(parse_timestamp("99999999999999999999").is_err());
        assert!(parse_timestamp("1969-12-31T23:59:59Z").is_err());
        assert!(parse_timestamp("1970-01-01T00:30:00+01:00").is_err());
        assert!(parse_timestamp("9999-12-31T23:59:59.999-00:01").is_err());
        assert_eq!(
            parse_timestamp("9999-12-31T23:59:59.999Z"),
            Ok(MAX_TIMESTAMP)
        );
    }

    #[test]
    fn severity_aliases_and_codes() {
        assert_eq!(Severity::parse("warn"), Some(Severity::Warning));
        assert_eq!(Severity::parse("informational"), Some(Severity::Info));
        assert_eq!(Severity::parse("emerg"), Some(Severity::Emergency));
        assert_eq!(Severity::from_name("warn"), None);
        assert_eq!(Severity::parse("WARNING"), None);
        let codes: Vec<u8> = Severity::ALL.iter().map(|s| s.syslog_code()).collect();
        assert_eq!(codes, [7, 6, 5, 4, 3, 2, 1, 0]);
        for s in Severity::ALL {
            // The derived serde names and ours agree.
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                Value::String(s.as_str().to_owned())
            );
        }
        for k in ActorKind::ALL {
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                Value::String(k.as_str().to_owned())
            );
        }
        for o in Outcome::ALL {
            assert_eq!(
                serde_json::to_value(o).unwrap(),
                Value::String(o.as_str().to_owned())
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn timestamps_round_trip(ms in MIN_TIMESTAMP..=MAX_TIMESTAMP) {
            let text = format_rfc3339_millis(ms);
            proptest::prop_assert_eq!(text.len(), 24);
            proptest::prop_assert_eq!(parse_rfc3339(&text), Ok(ms));
        }

        #[test]
        fn civil_days_round_trip(days in -1_000_000i64..4_000_000) {
            let (y, m, d) = civil_from_days(days);
            proptest::prop_assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            proptest::prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
