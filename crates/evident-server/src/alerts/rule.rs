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
    /// `webhook-id`. Names starting with `builtin.` are reserved for the built-in rules.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
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
    /// 1 to 1,000,000.
    #[serde(deserialize_with = "integral::u32")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub count: u32,
    /// 1 ms to 366 days.
    #[serde(deserialize_with = "integral::u64")]
    #[schema(minimum = 1, maximum = 31_622_400_000_i64)]
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
/// Largest threshold count.
pub const MAX_COUNT: u32 = 1_000_000;
/// Longest threshold window: 366 days.
pub const MAX_WITHIN_MS: u64 = 366 * 86_400_000;

/// Whole numbers also when a JSON client writes them as `5.0` (JSON Schema's `integer`
/// admits that), from JSON and TOML alike.
mod integral {
    use serde::Deserializer;
    use serde::de::{Error, Visitor};

    struct Whole;

    impl Visitor<'_> for Whole {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
            if v.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&v) {
                Ok(v as u64)
            } else {
                Err(E::custom(format!("{v} is not a whole number")))
            }
        }
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Whole)
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let v = d.deserialize_any(Whole)?;
        u32::try_from(v).map_err(|_| D::Error::custom(format!("{v} is too large")))
    }
}

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
            if !(1..=MAX_COUNT).contains(&t.count) {
                return Err(RuleError::new(
                    "threshold.count",
                    format!("must be 1 to {MAX_COUNT}"),
                ));
            }
            if !(1..=MAX_WITHIN_MS).contains(&t.within_ms) {
                return Err(RuleError::new(
                    "threshold.within_ms",
                    format!("must be 1 to {MAX_WITHIN_MS} (366 days)"),
                ));
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
