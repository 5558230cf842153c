//! Four-eyes review: the configured rules (`[[four_eyes]]` in the TOML file), the report that
//! pairs each confirmed event with its confirmation (`report.rs`, behind
//! `GET /api/v1/reviews/four-eyes` and its signed bundle), and the overdue alert, a consumer of
//! the committed log per rule (`overdue.rs`). The pairing itself is the core's
//! (`evident_core::four_eyes`), so that the offline verifier judges a pair the same way.

mod overdue;
mod report;

pub use overdue::{OVERDUE_ACTION, OverdueChecker, spawn_overdue_checkers};
pub use report::{ReportError, ReportRequest, build_report, write_report_bundle};

use evident_core::four_eyes::{EventMatcher, FourEyesRule};
use serde::{Deserialize, Serialize};

/// One `[[four_eyes]]` table of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FourEyesRuleConfig {
    /// Unique name (`[a-z0-9_.-]`), used in reports, alerts and the consumer's cursor.
    pub name: String,
    /// The events that need a confirmation: `{action = "dkim.key.rotated"}` (or a prefix
    /// `"dkim.key.*"`), optionally `tenant` and `outcome`.
    pub confirmed: EventMatcher,
    /// The confirming events, matched the same way.
    pub confirmation: EventMatcher,
    /// How long a confirmation may take: a number and a unit, `90s`, `30m`, `24h`, `7d`.
    pub within: String,
    /// The confirmation's actor must state another role (`context.actor_role`).
    #[serde(default)]
    pub require_different_role: bool,
}

/// A `[[four_eyes]]` rule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("four_eyes rule {rule:?}: {field}: {problem}")]
pub struct RuleConfigError {
    pub rule: String,
    pub field: String,
    pub problem: String,
}

impl FourEyesRuleConfig {
    /// The rule this table describes, checked.
    pub fn rule(&self) -> Result<FourEyesRule, RuleConfigError> {
        let error = |field: &str, problem: String| RuleConfigError {
            rule: self.name.clone(),
            field: field.to_owned(),
            problem,
        };
        let within_ms = parse_duration_ms(&self.within).map_err(|p| error("within", p))?;
        let rule = FourEyesRule {
            name: self.name.clone(),
            confirmed: self.confirmed.clone(),
            confirmation: self.confirmation.clone(),
            within_ms,
            require_different_role: self.require_different_role,
        };
        rule.check().map_err(|e| error(&e.field, e.problem))?;
        Ok(rule)
    }
}

/// The rules of `tables`, checked, names unique.
pub fn rules(tables: &[FourEyesRuleConfig]) -> Result<Vec<FourEyesRule>, RuleConfigError> {
    let mut rules: Vec<FourEyesRule> = Vec::with_capacity(tables.len());
    for table in tables {
        let rule = table.rule()?;
        if rules.iter().any(|r| r.name == rule.name) {
            return Err(RuleConfigError {
                rule: rule.name,
                field: "name".to_owned(),
                problem: "another [[four_eyes]] rule has this name".to_owned(),
            });
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// `90s`, `30m`, `24h`, `7d` (also `ms`) in milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?} is not a duration: a number and a unit (ms, s, m, h, d), e.g. \"24h\""
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: it must start with a number"))?;
    n.checked_mul(factor)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| format!("{text:?} must be longer than 0 and at most a few thousand years"))
}

#[cfg(test)]
mod tests;
