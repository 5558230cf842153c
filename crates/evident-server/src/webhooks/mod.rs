//! Alert delivery by signed webhooks (Standard Webhooks). Each `[[alerts.webhooks]]`
//! endpoint is one consumer of the log (kind `webhook`, `consumer.rs`) that runs the rule
//! matcher over the committed entries itself: the log is the only queue, and the cursor
//! (with the threshold windows in its state) is what makes an alert survive a restart.
//! `sign.rs` is the signature scheme, `payload.rs` the bodies (generic JSON with the
//! inclusion proof, Slack), `routes.rs` the status route `GET /api/v1/webhooks`.

mod consumer;
mod payload;
pub mod routes;
pub mod sign;

pub use consumer::WebhookConsumer;
pub use payload::Template;
pub use sign::{Secret, webhook_id};

use crate::alerts::RuleError;
use crate::consumers::ConsumerSettings;
use crate::http::AppState;
use evident_core::event::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The consumer kind of webhook endpoints.
pub const KIND: &str = "webhook";
/// Event: an endpoint started failing (once per incident).
pub const FAILING_ACTION: &str = "evident.webhook.failing";
/// Event: a failing endpoint delivered again.
pub const RECOVERED_ACTION: &str = "evident.webhook.recovered";
/// Event: an endpoint failed longer than `disable_after_ms` and was disabled.
pub const DISABLED_ACTION: &str = "evident.webhook.disabled";
/// An endpoint answering this no longer wants messages: it is disabled at once (the
/// specification's `410 Gone`).
pub const GONE: u16 = 410;
/// Event: an owner enabled a disabled endpoint again.
pub const ENABLED_ACTION: &str = "evident.webhook.enabled";
/// Event: the deliveries of the last `summary_every_ms` (only when there were any).
pub const SUMMARY_ACTION: &str = "evident.webhook.summary";

/// One `[[alerts.webhooks]]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique name (the consumer `webhook:<name>`).
    pub name: String,
    /// `http://` or `https://` URL the alerts are POSTed to.
    pub url: String,
    /// The Standard Webhooks secret, `whsec_<base64>` (at least 16 bytes): `webhook-signature`
    /// carries `v1,<base64 HMAC-SHA256>` with it.
    pub secret: String,
    /// Also sign with the node's Ed25519 key: `v1a,<base64>` next to `v1,…` in
    /// `webhook-signature`; the key, as `whpk_<base64>`, is on `GET /api/v1/webhooks`.
    pub sign_ed25519: bool,
    /// `generic` (JSON with the events, their inclusion proofs and the checkpoint) or `slack`.
    pub template: Template,
    /// The rules delivered here, by name; empty (the default): every rule in force.
    pub rules: Vec<String>,
    /// One attempt may take this long (ms; 15 s, what the specification recommends).
    pub timeout_ms: u64,
    /// First retry after a failure (ms); doubled on each further one.
    pub retry_min_ms: u64,
    /// Longest wait between retries (ms).
    pub retry_max_ms: u64,
    /// An endpoint failing for longer than this is disabled, with an event (ms; 24 hours).
    pub disable_after_ms: u64,
    /// How often delivery counts are summarised as an event (ms; one hour).
    pub summary_every_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            name: String::new(),
            url: String::new(),
            secret: String::new(),
            sign_ed25519: false,
            template: Template::Generic,
            rules: Vec::new(),
            timeout_ms: 15_000,
            retry_min_ms: 1_000,
            retry_max_ms: 600_000,
            disable_after_ms: 86_400_000,
            summary_every_ms: 3_600_000,
        }
    }
}

impl WebhookConfig {
    pub fn validate(&self) -> Result<(), RuleError> {
        if !crate::alerts::rule_name_valid(&self.name) {
            return Err(RuleError::new(
                "name",
                format!("{:?}: 1 to 64 letters, digits, '.', '_' or '-'", self.name),
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://"))
            || self.url.len() < 10
        {
            return Err(RuleError::new("url", "expected an http:// or https:// URL"));
        }
        Secret::parse(&self.secret).map_err(|problem| RuleError::new("secret", problem))?;
        for (field, value) in [
            ("timeout_ms", self.timeout_ms),
            ("retry_min_ms", self.retry_min_ms),
            ("retry_max_ms", self.retry_max_ms),
            ("disable_after_ms", self.disable_after_ms),
            ("summary_every_ms", self.summary_every_ms),
        ] {
            if value == 0 {
                return Err(RuleError::new(field, "must be at least 1"));
            }
        }
        if self.retry_max_ms < self.retry_min_ms {
            return Err(RuleError::new(
                "retry_max_ms",
                "must be at least retry_min_ms",
            ));
        }
        Ok(())
    }

    /// The URL without credentials or query (what status and events show).
    pub fn display_url(&self) -> String {
        let rest = self.url.split_once("://").map_or("", |(_, r)| r);
        let scheme = self.url.split_once("://").map_or("", |(s, _)| s);
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit('@').next().unwrap_or(authority);
        format!("{scheme}://{host}/{path}")
    }
}

/// What the status route shows of one endpoint besides its cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EndpointStats {
    pub name: String,
    /// The URL without credentials or query.
    pub url: String,
    pub template: String,
    /// The rules delivered here (empty: all).
    pub rules: Vec<String>,
    /// Delivery attempts since the node started.
    pub attempts: u64,
    /// Attempts answered 2xx.
    pub delivered: u64,
    /// Attempts that failed (another status, refused, timed out).
    pub failed: u64,
    /// When the last attempt was made.
    pub last_attempt_at: Option<Millis>,
    /// The last attempt's outcome: `HTTP <status>` or the error.
    pub last_outcome: Option<String>,
    /// The `webhook-id` of the last message attempted.
    pub last_webhook_id: Option<String>,
    /// Since when the endpoint has been failing (the open incident), if it is.
    pub failing_since: Option<Millis>,
    /// When it was disabled for failing too long, if it is (alerts are then skipped).
    pub disabled_at: Option<Millis>,
    /// Alerts skipped while disabled, since the node started.
    pub skipped_while_disabled: u64,
    /// With `sign_ed25519`: the key of the `v1a` signatures, `whpk_<base64>`.
    pub public_key: Option<String>,
}

/// Shared between an endpoint's consumer and the HTTP routes.
#[derive(Debug, Default)]
pub(crate) struct EndpointCell {
    pub stats: EndpointStats,
    /// An owner asked to enable the (disabled) endpoint again.
    pub enable_requested: bool,
}

/// The webhook endpoints of a node, by name.
#[derive(Debug, Default)]
pub struct Endpoints {
    all: Mutex<BTreeMap<String, Arc<Mutex<EndpointCell>>>>,
}

impl Endpoints {
    fn register(
        &self,
        config: &WebhookConfig,
        verifier: &evident_core::NoteVerifier,
    ) -> Arc<Mutex<EndpointCell>> {
        let cell = Arc::new(Mutex::new(EndpointCell {
            stats: EndpointStats {
                public_key: config.sign_ed25519.then(|| sign::public_key(verifier)),
                name: config.name.clone(),
                url: config.display_url(),
                template: config.template.as_str().to_owned(),
                rules: config.rules.clone(),
                ..EndpointStats::default()
            },
            enable_requested: false,
        }));
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(config.name.clone(), cell.clone());
        cell
    }

    /// Every endpoint's statistics, by name.
    pub fn stats(&self) -> Vec<EndpointStats> {
        let all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        all.values()
            .map(|c| {
                c.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .stats
                    .clone()
            })
            .collect()
    }

    /// Asks the endpoint `name` to resume delivering; `false` if there is none.
    pub fn request_enable(&self, name: &str) -> bool {
        let all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        match all.get(name) {
            Some(cell) => {
                cell.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .enable_requested = true;
                true
            }
            None => false,
        }
    }
}

/// Starts one consumer per configured endpoint.
pub fn spawn_all(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let config = state.node().config().alerts.webhooks.clone();
    let mut tasks = Vec::new();
    for endpoint in config {
        let settings = ConsumerSettings {
            backoff_min: Duration::from_millis(endpoint.retry_min_ms),
            backoff_max: Duration::from_millis(endpoint.retry_max_ms),
            batch_max: 200,
            ..ConsumerSettings::default()
        };
        let verifier = state.node().files().verifier();
        let cell = state.alerts().endpoints().register(&endpoint, &verifier);
        match WebhookConsumer::new(endpoint.clone(), cell) {
            Ok(consumer) => tasks.push(crate::consumers::spawn(state, consumer, settings)),
            Err(e) => {
                tracing::error!(endpoint = %endpoint.name, error = %e, "webhook endpoint not started")
            }
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_validated_and_shown_without_credentials() {
        let good = WebhookConfig {
            name: "ops".into(),
            url: "https://user:pw@alerts.example.com/hook?token=x".into(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            ..WebhookConfig::default()
        };
        good.validate().unwrap();
        assert_eq!(good.display_url(), "https://alerts.example.com/hook");
        let field = |c: WebhookConfig| c.validate().unwrap_err().field;
        assert_eq!(
            field(WebhookConfig {
                name: "a b".into(),
                ..good.clone()
            }),
            "name"
        );
        assert_eq!(
            field(WebhookConfig {
                url: "ftp://x/y/z".into(),
                ..good.clone()
            }),
            "url"
        );
        assert_eq!(
            field(WebhookConfig {
                secret: "hunter2".into(),
                ..good.clone()
            }),
            "secret"
        );
        assert_eq!(
            field(WebhookConfig {
                retry_max_ms: 1,
                retry_min_ms: 2,
                ..good.clone()
            }),
            "retry_max_ms"
        );
        // The message never carries the secret.
        let err = WebhookConfig {
            secret: "whsec_short".into(),
            ..good.clone()
        }
        .validate()
        .unwrap_err();
        assert!(!err.to_string().contains("short"), "{err}");
        // From TOML, through the server's config, naming the endpoint.
        let err = crate::ServerConfig::from_toml_str(
            "[[alerts.webhooks]]\nname = \"ops\"\nurl = \"https://x.example/h\"\nsecret = \"nope\"\n",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("alerts.webhooks[0].secret"), "{err}");
    }
}
