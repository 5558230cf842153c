//! Alert rules: which committed events (or node conditions) deserve a person's attention at
//! once. Owns the rule model and its matching (`rule.rs`), threshold windows ("N events for
//! the same actor within T", `window.rs`), the built-in rules, the set of rules in force
//! (from the TOML file and made over the API, stored in `DATA_DIR/alerts/rules.json`) and
//! the owner-only `/api/v1/alerts/rules` routes (`routes.rs`). Delivery is `webhooks/`.

pub mod routes;
mod rule;
mod window;

pub use rule::{GroupBy, Rule, RuleError, Threshold, valid_name as rule_name_valid};
pub use window::{Fired, Undo, Windows};

use crate::file_modes::{self, DirSync};
use crate::webhooks::WebhookConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

/// The `[alerts]` section: rules and the webhook endpoints they are delivered to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// The built-in rules (CRITICAL events, integrity findings, read-only switch, consumer
    /// lag, dead-man, four-eyes overdue) are in force (on by default).
    pub builtin_rules: bool,
    /// Dead-man: alert when entries have waited this long for a checkpoint (ms, 5 minutes).
    pub dead_man_after_ms: u64,
    /// `[[alerts.rules]]`: rules from the configuration file.
    pub rules: Vec<Rule>,
    /// `[[alerts.webhooks]]`: where alerts are delivered (none by default).
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            builtin_rules: true,
            dead_man_after_ms: 300_000,
            rules: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

impl AlertsConfig {
    /// Checks every rule and endpoint; the message names the field and the problem.
    pub fn validate(&self) -> Result<(), RuleError> {
        let mut names = std::collections::HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate()
                .map_err(|e| e.at(format!("alerts.rules[{i}]")))?;
            if rule.name.starts_with(BUILTIN_PREFIX) {
                return Err(RuleError::new(
                    format!("alerts.rules[{i}].name"),
                    format!(
                        "{:?}: names starting with {BUILTIN_PREFIX:?} are reserved for the built-in rules",
                        rule.name
                    ),
                ));
            }
            if !names.insert(rule.name.as_str()) {
                return Err(RuleError::new(
                    format!("alerts.rules[{i}].name"),
                    format!("{:?} is used by two rules", rule.name),
                ));
            }
        }
        if self.dead_man_after_ms == 0 {
            return Err(RuleError::new(
                "alerts.dead_man_after_ms",
                "must be at least 1",
            ));
        }
        let mut endpoints = std::collections::HashSet::new();
        for (i, webhook) in self.webhooks.iter().enumerate() {
            webhook
                .validate()
                .map_err(|e| e.at(format!("alerts.webhooks[{i}]")))?;
            if !endpoints.insert(webhook.name.as_str()) {
                return Err(RuleError::new(
                    format!("alerts.webhooks[{i}].name"),
                    format!("{:?} is used by two endpoints", webhook.name),
                ));
            }
        }
        Ok(())
    }
}

/// Names of the built-in rules start with this.
pub const BUILTIN_PREFIX: &str = "builtin.";
/// Built-in: any CRITICAL, ALERT or EMERGENCY event.
pub const BUILTIN_CRITICAL: &str = "builtin.critical";
/// Built-in: the node's own integrity findings (`evident.integrity.*`).
pub const BUILTIN_INTEGRITY: &str = "builtin.integrity";
/// Built-in: a consumer (forwarder, publisher, webhook …) started lagging.
pub const BUILTIN_CONSUMER_LAG: &str = "builtin.consumer_lag";
/// Built-in: a four-eyes confirmation is overdue.
pub const BUILTIN_FOUR_EYES: &str = "builtin.four_eyes_overdue";
/// Built-in condition: the node serves its log read-only (it found damage).
pub const BUILTIN_READ_ONLY: &str = "builtin.read_only";
/// Built-in condition: entries keep arriving but no checkpoint is signed (dead-man).
pub const BUILTIN_DEAD_MAN: &str = "builtin.dead_man";
/// The action of the four-eyes overdue event (written by `review/`).
pub const FOUR_EYES_OVERDUE_ACTION: &str = "evident.review.four_eyes_overdue";

/// The built-in event rules, most specific first: an entry fires at most one of them.
pub fn builtin_rules() -> Vec<Rule> {
    let rule = |name: &str, description: &str| Rule {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        ..Rule::default()
    };
    vec![
        Rule {
            action_prefix: Some("evident.integrity.".to_owned()),
            ..rule(BUILTIN_INTEGRITY, "The node found damage in its own log")
        },
        Rule {
            action: Some(crate::consumers::LAGGING_ACTION.to_owned()),
            ..rule(BUILTIN_CONSUMER_LAG, "A consumer of the log is lagging")
        },
        Rule {
            action: Some(FOUR_EYES_OVERDUE_ACTION.to_owned()),
            ..rule(BUILTIN_FOUR_EYES, "A four-eyes confirmation is overdue")
        },
        Rule {
            min_severity: Some(evident_core::event::Severity::Critical),
            ..rule(BUILTIN_CRITICAL, "A CRITICAL (or more severe) event")
        },
    ]
}

/// Most rules made over the API.
pub const MAX_API_RULES: usize = 1000;

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    Builtin,
    Config,
    Api,
}

/// Problems with the rules made over the API.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    Invalid(#[from] RuleError),
    #[error("a rule named {0:?} exists already")]
    Exists(String),
    #[error("{MAX_API_RULES} rules made over the API are in force already; delete one first")]
    TooMany,
    #[error("{0:?}: names starting with {BUILTIN_PREFIX:?} are reserved for the built-in rules")]
    Reserved(String),
    #[error("no rule named {0:?}")]
    NotFound(String),
    #[error("rule {name:?} comes from the {from:?} rules and cannot be deleted over the API")]
    NotDeletable { name: String, from: RuleSource },
    #[error("rules file {path}: {message}")]
    File { path: PathBuf, message: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<Rule>,
}

/// The rules in force: the built-in ones (when on), the configured ones and those made over
/// the API. Cheap to clone; consumers take a snapshot per batch.
#[derive(Debug, Clone)]
pub struct RuleSet(Arc<RuleSetInner>);

#[derive(Debug)]
struct RuleSetInner {
    builtin: Vec<Arc<Rule>>,
    config: Vec<Arc<Rule>>,
    api: RwLock<Vec<Arc<Rule>>>,
    file: Option<PathBuf>,
    dead_man_after_ms: u64,
}

/// The file of the rules made over the API, inside the data directory.
pub fn rules_file(data_dir: &Path) -> PathBuf {
    data_dir.join("alerts").join("rules.json")
}

impl RuleSet {
    /// The configured rules only (no file: API rules are kept in memory; for tests).
    pub fn new(config: &AlertsConfig) -> RuleSet {
        RuleSet::with_file(config, None, Vec::new())
    }

    fn with_file(config: &AlertsConfig, file: Option<PathBuf>, api: Vec<Rule>) -> RuleSet {
        let builtin = if config.builtin_rules {
            builtin_rules().into_iter().map(Arc::new).collect()
        } else {
            Vec::new()
        };
        RuleSet(Arc::new(RuleSetInner {
            builtin,
            config: config.rules.iter().cloned().map(Arc::new).collect(),
            api: RwLock::new(api.into_iter().map(Arc::new).collect()),
            file,
            dead_man_after_ms: config.dead_man_after_ms,
        }))
    }

    /// The configured rules and those stored in `data_dir` by the API.
    pub fn open(config: &AlertsConfig, data_dir: &Path) -> Result<RuleSet, RulesError> {
        let path = rules_file(data_dir);
        let bad = |message: String| RulesError::File {
            path: path.clone(),
            message,
        };
        let api = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let file: RulesFile =
                    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
                for rule in &file.rules {
                    rule.validate().map_err(|e| bad(e.to_string()))?;
                }
                file.rules
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(bad(e.to_string())),
        };
        Ok(RuleSet::with_file(config, Some(path), api))
    }

    pub fn builtin_on(&self) -> bool {
        !self.0.builtin.is_empty()
    }

    pub fn dead_man_after_ms(&self) -> u64 {
        self.0.dead_man_after_ms
    }

    /// The built-in event rules in force.
    pub fn builtin(&self) -> &[Arc<Rule>] {
        &self.0.builtin
    }

    /// The configured and API-made rules.
    pub fn user_rules(&self) -> Vec<Arc<Rule>> {
        let api = self.0.api.read().unwrap_or_else(PoisonError::into_inner);
        self.0.config.iter().chain(api.iter()).cloned().collect()
    }

    /// Every rule in force with where it comes from.
    pub fn list(&self) -> Vec<(RuleSource, Arc<Rule>)> {
        let api = self.0.api.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<(RuleSource, Arc<Rule>)> = Vec::new();
        out.extend(
            self.0
                .builtin
                .iter()
                .map(|r| (RuleSource::Builtin, r.clone())),
        );
        if self.builtin_on() {
            for name in [BUILTIN_READ_ONLY, BUILTIN_DEAD_MAN] {
                out.push((
                    RuleSource::Builtin,
                    Arc::new(Rule {
                        name: name.to_owned(),
                        description: Some(
                            if name == BUILTIN_READ_ONLY {
                                "The node switched to read-only (damage found)"
                            } else {
                                "Entries wait for a checkpoint longer than dead_man_after_ms"
                            }
                            .to_owned(),
                        ),
                        ..Rule::default()
                    }),
                ));
            }
        }
        out.extend(
            self.0
                .config
                .iter()
                .map(|r| (RuleSource::Config, r.clone())),
        );
        out.extend(api.iter().map(|r| (RuleSource::Api, r.clone())));
        out
    }

    fn source_of(&self, name: &str) -> Option<RuleSource> {
        self.list()
            .into_iter()
            .find(|(_, r)| r.name == name)
            .map(|(s, _)| s)
    }

    /// Adds a rule made over the API, durably (fsync'd) before it is in force.
    pub fn add(&self, rule: Rule) -> Result<(), RulesError> {
        rule.validate()?;
        if rule.name.starts_with(BUILTIN_PREFIX) {
            return Err(RulesError::Reserved(rule.name));
        }
        let mut api = self.0.api.write().unwrap_or_else(PoisonError::into_inner);
        let taken = self
            .0
            .config
            .iter()
            .chain(api.iter())
            .any(|r| r.name == rule.name);
        if taken {
            return Err(RulesError::Exists(rule.name));
        }
        if api.len() >= MAX_API_RULES {
            return Err(RulesError::TooMany);
        }
        let mut next: Vec<Arc<Rule>> = api.clone();
        next.push(Arc::new(rule));
        self.persist(&next)?;
        *api = next;
        Ok(())
    }

    /// Deletes a rule made over the API, durably; the others cannot be deleted here.
    pub fn delete(&self, name: &str) -> Result<Arc<Rule>, RulesError> {
        match self.source_of(name) {
            None => return Err(RulesError::NotFound(name.to_owned())),
            Some(from @ (RuleSource::Builtin | RuleSource::Config)) => {
                return Err(RulesError::NotDeletable {
                    name: name.to_owned(),
                    from,
                });
            }
            Some(RuleSource::Api) => {}
        }
        let mut api = self.0.api.write().unwrap_or_else(PoisonError::into_inner);
        let Some(index) = api.iter().position(|r| r.name == name) else {
            return Err(RulesError::NotFound(name.to_owned()));
        };
        let mut next = api.clone();
        let removed = next.remove(index);
        self.persist(&next)?;
        *api = next;
        Ok(removed)
    }

    fn persist(&self, rules: &[Arc<Rule>]) -> Result<(), RulesError> {
        let Some(path) = &self.0.file else {
            return Ok(());
        };
        let bad = |message: String| RulesError::File {
            path: path.clone(),
            message,
        };
        let file = RulesFile {
            rules: rules.iter().map(|r| (**r).clone()).collect(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| bad(e.to_string()))?;
        if let Some(dir) = path.parent() {
            file_modes::create_private_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        }
        file_modes::write_private_file_durably(path, &text, DirSync::Required)
            .map_err(|e| bad(format!("{}: {}", e.path.display(), e.source)))
    }
}

/// The alerting state of a running node: the rules in force and the webhook endpoints.
#[derive(Debug)]
pub struct Alerting {
    rules: RwLock<RuleSet>,
    endpoints: crate::webhooks::Endpoints,
}

impl Alerting {
    pub fn new(config: &AlertsConfig) -> Alerting {
        Alerting {
            rules: RwLock::new(RuleSet::new(config)),
            endpoints: crate::webhooks::Endpoints::default(),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> RuleSet {
        self.rules
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the rules (at start, once the stored API rules are read).
    pub fn set_rules(&self, rules: RuleSet) {
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = rules;
    }

    pub fn endpoints(&self) -> &crate::webhooks::Endpoints {
        &self.endpoints
    }
}

#[cfg(test)]
mod tests;
