//! One alert rule: what an event must be to match (action exact or by prefix, minimum
//! severity, outcome, tenant, actor) and, optionally, how many matches for the same actor,
//! address or target within a time make it fire. Pure: no I/O.

use evident_core::Event;
use evident_core::event::{Outcome, Severity};
use serde::{Deserialize, Serialize};

/// A rule, as written in `[[alerts.rules]]` or posted to `/api/v1/alerts/rules`. Every
/// condition given must hold; a rule with none matches every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name (letters, digits, `.`, `_`, `-`; up to 64): part of each alert's
    /// `webhook-id`. Names starting with `builtin.` are the built-in rules'.
    #[schema(pattern = r"^(?!builtin\.)[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The action, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub action: Option<String>,
    /// The action starts with this (with `action` too, both must hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub action_prefix: Option<String>,
    /// The severity is at least this (`debug` … `emergency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^(debug|info|notice|warning|error|critical|alert|emergency)$")]
    pub min_severity: Option<Severity>,
    /// The outcome (`success`, `failure`, `denied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^(success|failure|denied)$")]
    pub outcome: Option<Outcome>,
    /// The tenant, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub tenant: Option<String>,
    /// The actor's id, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub actor: Option<String>,
    /// Fire only once `count` matching events for the same key arrived within `within_ms`
    /// (once per window); without it every matching event fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
}

/// "`count` matching events for the same `per` within `within_ms`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    #[schema(minimum = 1)]
    pub count: u32,
    #[schema(minimum = 1)]
    pub within_ms: u64,
    pub per: GroupBy,
}

/// What a threshold counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The actor id.
    Actor,
    /// The actor's IP address (events without one count together as `-`).
    Ip,
    /// The target, `kind/id`.
    Target,
}

/// A rule (or an endpoint) that does not make sense: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RuleError {
    pub field: String,
    pub problem: String,
}

impl RuleError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> RuleError {
        RuleError {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error, its field inside `parent`.
    pub fn at(self, parent: String) -> RuleError {
        RuleError {
            field: format!("{parent}.{}", self.field),
            problem: self.problem,
        }
    }
}

/// Longest rule name.
pub const MAX_NAME: usize = 64;

/// Whether `name` is a valid rule or endpoint name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Rule {
    pub fn validate(&self) -> Result<(), RuleError> {
        if !valid_name(&self.name) {
            return Err(RuleError::new(
                "name",
                format!(
                    "{:?}: 1 to {MAX_NAME} letters, digits, '.', '_' or '-'",
                    self.name
                ),
            ));
        }
        for (field, value) in [
            ("action", &self.action),
            ("action_prefix", &self.action_prefix),
            ("tenant", &self.tenant),
            ("actor", &self.actor),
        ] {
            if value.as_deref() == Some("") {
                return Err(RuleError::new(
                    field,
                    "must not be empty (leave it out to match any)",
                ));
            }
        }
        if let Some(t) = &self.threshold {
            if t.count == 0 {
                return Err(RuleError::new("threshold.count", "must be at least 1"));
            }
            if t.within_ms == 0 {
                return Err(RuleError::new("threshold.within_ms", "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Whether `event` meets every condition of the rule (the threshold aside).
    pub fn matches(&self, event: &Event) -> bool {
        self.action.as_deref().is_none_or(|a| event.action == a)
            && self
                .action_prefix
                .as_deref()
                .is_none_or(|p| event.action.starts_with(p))
            && self.min_severity.is_none_or(|s| event.severity >= s)
            && self.outcome.is_none_or(|o| event.outcome == o)
            && self.tenant.as_deref().is_none_or(|t| event.tenant == t)
            && self.actor.as_deref().is_none_or(|a| event.actor.id == a)
    }
}

impl GroupBy {
    /// The key `event` is counted under.
    pub fn key_of(self, event: &Event) -> String {
        match self {
            GroupBy::Actor => event.actor.id.clone(),
            GroupBy::Ip => event
                .actor
                .ip
                .map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
            GroupBy::Target => format!("{}/{}", event.target.kind, event.target.id),
        }
    }
}
