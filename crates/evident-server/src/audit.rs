//! Self-audit: what the node records about access to itself, as ordinary events in its own
//! log (action names under `evident.`), and the brute-force limiter that keeps failed
//! requests from flooding that log.
//!
//! Recorded: keys created, revoked and rotated; requests with a missing, malformed, unknown,
//! revoked or expired key; forbidden requests; cross-tenant attempts; each export and each
//! verification run. The actor is the API key (kind `api_key`, id the key's non-secret id)
//! or, when no key was authenticated, kind `system` with id `anonymous` (`evident-cli` for
//! the offline CLI). The actor carries the source IP and user agent; the target and the
//! context say what was attempted. Events go to the key's tenant for a tenant-scoped key,
//! else to the default tenant.
//!
//! Brute force: two [`FailureLimiter`]s, kept apart so that a flood of bad keys from an
//! address never locks out the valid keys used from it. One counts failures to authenticate
//! (401: missing, malformed, unknown, revoked, expired key) per source IP; once an address
//! has `limit` of them within `window`, it is blocked for `block`: every request from it
//! that does not authenticate gets 429 and is not recorded, while requests with a valid key
//! are served as usual. The other counts refusals of authenticated keys (403, and a
//! tenant-scoped key's 404 for a key outside its tenant) per key id, blocking in the same
//! way only that key's refused requests (its allowed ones go on). Each burst records
//! exactly one critical event (`evident.auth.brute_force` for an address,
//! `evident.access.forbidden_burst` for a key) after at most `limit - 1` events of its
//! failures, however many requests arrive at once: the verdict is taken under one lock, and
//! every failure after the one that started the block is answered 429 unrecorded.

use crate::auth::Caller;
use evident_core::EventInput;
use evident_core::event::{DEFAULT_TENANT, Millis};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

/// Longest user agent, path or target id copied into an event.
const MAX_COPIED: usize = 256;
/// Addresses tracked before expired entries are pruned.
const PRUNE_AT: usize = 10_000;

/// Self-audit action names.
pub mod action {
    pub const KEY_CREATED: &str = "evident.key.created";
    pub const KEY_REVOKED: &str = "evident.key.revoked";
    pub const KEY_ROTATED: &str = "evident.key.rotated";
    pub const AUTH_MISSING: &str = "evident.auth.missing_key";
    pub const AUTH_MALFORMED: &str = "evident.auth.malformed_key";
    pub const AUTH_UNKNOWN: &str = "evident.auth.unknown_key";
    pub const AUTH_REVOKED: &str = "evident.auth.revoked_key";
    pub const AUTH_EXPIRED: &str = "evident.auth.expired_key";
    pub const SESSION_REFUSED: &str = "evident.auth.session_refused";
    pub const SIGNED_IN: &str = "evident.dashboard.signed_in";
    pub const SIGNED_OUT: &str = "evident.dashboard.signed_out";
    pub const CSRF_REFUSED: &str = "evident.dashboard.csrf_refused";
    pub const BRUTE_FORCE: &str = "evident.auth.brute_force";
    pub const FORBIDDEN_BURST: &str = "evident.access.forbidden_burst";
    pub const FORBIDDEN: &str = "evident.access.forbidden";
    pub const CROSS_TENANT: &str = "evident.access.cross_tenant";
    pub const EXPORTED: &str = "evident.log.exported";
    pub const VERIFIED: &str = "evident.log.verified";
    pub const INTEGRITY_DAMAGE: &str = crate::guard::INTEGRITY_ACTION;
}

/// The CRITICAL event recording an integrity finding: actor kind `system`, id `evident`;
/// the context holds the kind, the sequence number, the message, when and by which path.
pub fn integrity_event(damage: &crate::guard::Damage) -> EventInput {
    let by = serde_json::to_value(damage.detected_by).unwrap_or(Value::Null);
    AuditEvent::new(
        action::INTEGRITY_DAMAGE,
        "failure",
        "critical",
        "log",
        damage
            .seq
            .map_or_else(|| "*".to_owned(), |seq| seq.to_string()),
    )
    .with("kind", damage.kind.clone())
    .with("seq", damage.seq)
    .with("message", damage.message.clone())
    .with("detected_at", damage.detected_at)
    .with("detected_by", by)
    .into_input(&AuditActor::System("evident"), &RequestInfo::default())
}

/// Where a request came from and what it asked for (no header values but the user agent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub method: String,
    pub path: String,
}

/// Who acted, for a self-audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditActor {
    /// An authenticated key.
    Key(Caller),
    /// No key was authenticated; `presented_key_id` is the non-secret id part of a
    /// well-formed key that was sent.
    Anonymous { presented_key_id: Option<String> },
    /// The node's own tooling (the offline CLI).
    System(&'static str),
}

fn truncate(text: &str) -> String {
    let mut end = text.len().min(MAX_COPIED);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].chars().filter(|c| !c.is_control()).collect()
}

/// A self-audit event.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: &'static str,
    pub outcome: &'static str,
    pub severity: &'static str,
    pub target_kind: &'static str,
    pub target_id: String,
    pub context: Value,
}

impl AuditEvent {
    pub fn new(
        action: &'static str,
        outcome: &'static str,
        severity: &'static str,
        target_kind: &'static str,
        target_id: impl AsRef<str>,
    ) -> AuditEvent {
        AuditEvent {
            action,
            outcome,
            severity,
            target_kind,
            target_id: truncate(target_id.as_ref()),
            context: json!({}),
        }
    }

    /// Adds `name: value` to the context.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> AuditEvent {
        if let Value::Object(map) = &mut self.context {
            map.insert(name.to_owned(), value.into());
        }
        self
    }

    /// The event input, by `actor`, from `request`.
    pub fn into_input(self, actor: &AuditActor, request: &RequestInfo) -> EventInput {
        let (actor_id, actor_kind, tenant) = match actor {
            AuditActor::Key(caller) => (
                caller.key_id.clone(),
                "api_key",
                caller
                    .tenant
                    .clone()
                    .unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
            ),
            AuditActor::Anonymous { .. } => {
                ("anonymous".to_owned(), "system", DEFAULT_TENANT.to_owned())
            }
            AuditActor::System(name) => ((*name).to_owned(), "system", DEFAULT_TENANT.to_owned()),
        };
        let mut context = self.context;
        if let Value::Object(map) = &mut context {
            if !request.method.is_empty() {
                map.insert("method".to_owned(), Value::String(request.method.clone()));
                map.insert("path".to_owned(), Value::String(truncate(&request.path)));
            }
            if let AuditActor::Anonymous {
                presented_key_id: Some(id),
            } = actor
            {
                map.insert("presented_key_id".to_owned(), Value::String(id.clone()));
            }
            if let AuditActor::Key(caller) = actor {
                map.insert("role".to_owned(), Value::String(caller.role.to_string()));
            }
        }
        let value = json!({
            "tenant": tenant,
            "actor": {
                "id": actor_id,
                "kind": actor_kind,
                "ip": request.ip.map(|ip| ip.to_string()),
                "user_agent": request.user_agent.as_deref().map(truncate).filter(|u| !u.is_empty()),
            },
            "action": self.action,
            "target": {"kind": self.target_kind, "id": if self.target_id.is_empty() { "-".to_owned() } else { self.target_id.clone() }},
            "outcome": self.outcome,
            "severity": self.severity,
            "context": context,
        });
        match EventInput::from_json(&value) {
            Ok(input) => input,
            Err(e) => {
                // Whatever came from the request broke a rule: keep the event, drop the
                // request's free text.
                tracing::warn!(error = %e, action = self.action, "self-audit event simplified");
                let fallback = json!({
                    "tenant": DEFAULT_TENANT,
                    "actor": {"id": "anonymous", "kind": "system", "ip": request.ip.map(|ip| ip.to_string())},
                    "action": self.action,
                    "target": {"kind": self.target_kind, "id": "-"},
                    "outcome": self.outcome,
                    "severity": self.severity,
                    "context": {"simplified": e.to_string()},
                });
                match EventInput::from_json(&fallback) {
                    Ok(input) => input,
                    Err(_) => minimal(self.action),
                }
            }
        }
    }
}

/// An event that validates whatever happened before (the action names are constants).
fn minimal(action: &str) -> EventInput {
    let value = json!({
        "actor": {"id": "anonymous", "kind": "system"},
        "action": action,
        "target": {"kind": "node", "id": "-"},
        "outcome": "failure",
        "severity": "warning",
    });
    match EventInput::from_json(&value) {
        Ok(input) => input,
        Err(_) => EventInput {
            occurred_at: None,
            tenant: DEFAULT_TENANT.to_owned(),
            actor: evident_core::event::Actor {
                id: "anonymous".to_owned(),
                kind: evident_core::event::ActorKind::System,
                ip: None,
                user_agent: None,
            },
            action: "evident.unknown".to_owned(),
            target: evident_core::event::Target {
                kind: "node".to_owned(),
                id: "-".to_owned(),
            },
            outcome: evident_core::event::Outcome::Failure,
            severity: evident_core::event::Severity::Warning,
            context: evident_core::event::Context::empty(),
        },
    }
}

/// What the limiter says about a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Below the threshold: answer as usual and record the failure's own event.
    Counted,
    /// This failure crossed the threshold: answer 429 and record the one burst event.
    BurstStarted {
        failures: u32,
        blocked_until: Millis,
    },
    /// The source is blocked (this failure came after the one that started the block, maybe
    /// concurrently with it): answer 429, record nothing.
    Blocked { blocked_until: Millis },
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    window_start: Millis,
    failures: u32,
    blocked_until: Option<Millis>,
}

/// Counts of failed requests per source (an address, a key id).
#[derive(Debug)]
pub struct FailureLimiter<K> {
    limit: u32,
    window_ms: Millis,
    block_ms: Millis,
    tallies: Mutex<HashMap<K, Tally>>,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    pub fn new(limit: u32, window_ms: u64, block_ms: u64) -> FailureLimiter<K> {
        FailureLimiter {
            limit: limit.max(1),
            window_ms: Millis::try_from(window_ms).unwrap_or(Millis::MAX),
            block_ms: Millis::try_from(block_ms).unwrap_or(Millis::MAX),
            tallies: Mutex::new(HashMap::new()),
        }
    }

    /// When `source` is blocked, until when.
    pub fn blocked_until(&self, source: &K, now: Millis) -> Option<Millis> {
        let mut tallies = self.tallies.lock().ok()?;
        let tally = tallies.get(source)?;
        match tally.blocked_until {
            Some(until) if until > now => Some(until),
            Some(_) => {
                // The block is over: a new burst starts from zero.
                tallies.remove(source);
                None
            }
            None => None,
        }
    }

    /// Counts one failed request from `source`.
    pub fn failure(&self, source: &K, now: Millis) -> FailureVerdict {
        let Ok(mut tallies) = self.tallies.lock() else {
            return FailureVerdict::Counted;
        };
        if tallies.len() >= PRUNE_AT {
            let window = self.window_ms;
            tallies.retain(|_, t| match t.blocked_until {
                Some(until) => until > now,
                None => now.saturating_sub(t.window_start) < window,
            });
        }
        let tally = tallies.entry(source.clone()).or_insert(Tally {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if let Some(until) = tally.blocked_until {
            if until > now {
                return FailureVerdict::Blocked {
                    blocked_until: until,
                };
            }
            *tally = Tally {
                window_start: now,
                failures: 0,
                blocked_until: None,
            };
        }
        if now.saturating_sub(tally.window_start) >= self.window_ms {
            tally.window_start = now;
            tally.failures = 0;
        }
        tally.failures = tally.failures.saturating_add(1);
        if tally.failures >= self.limit {
            let until = now.saturating_add(self.block_ms);
            tally.blocked_until = Some(until);
            FailureVerdict::BurstStarted {
                failures: tally.failures,
                blocked_until: until,
            }
        } else {
            FailureVerdict::Counted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn one_burst_event_then_blocked_until_the_block_ends() {
        let limiter = FailureLimiter::new(3, 60_000, 10_000);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(limiter.failure(&ip, 0), FailureVerdict::Counted);
        assert_eq!(limiter.failure(&ip, 1), FailureVerdict::Counted);
        assert_eq!(
            limiter.failure(&ip, 2),
            FailureVerdict::BurstStarted {
                failures: 3,
                blocked_until: 10_002
            }
        );
        assert_eq!(limiter.blocked_until(&ip, 5_000), Some(10_002));
        assert_eq!(limiter.blocked_until(&other, 5_000), None);
        // Still blocked: no second burst event, and nothing to record.
        assert_eq!(
            limiter.failure(&ip, 5_000),
            FailureVerdict::Blocked {
                blocked_until: 10_002
            }
        );
        // After the block, counting starts over.
        assert_eq!(limiter.blocked_until(&ip, 10_002), None);
        assert_eq!(limiter.failure(&ip, 10_003), FailureVerdict::Counted);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let limiter = FailureLimiter::new(2, 1_000, 10_000);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(limiter.failure(&ip, 0), FailureVerdict::Counted);
        assert_eq!(limiter.failure(&ip, 1_000), FailureVerdict::Counted);
        assert!(matches!(
            limiter.failure(&ip, 1_001),
            FailureVerdict::BurstStarted { .. }
        ));
    }

    #[test]
    fn concurrent_failures_start_one_burst_after_limit_minus_one_counted() {
        let limiter = std::sync::Arc::new(FailureLimiter::new(5, 60_000, 60_000));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let verdicts: Vec<FailureVerdict> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..64)
                .map(|_| {
                    let limiter = limiter.clone();
                    scope.spawn(move || limiter.failure(&ip, 1_000))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let counted = verdicts
            .iter()
            .filter(|v| **v == FailureVerdict::Counted)
            .count();
        let bursts = verdicts
            .iter()
            .filter(|v| matches!(v, FailureVerdict::BurstStarted { .. }))
            .count();
        assert_eq!((counted, bursts), (4, 1), "{verdicts:?}");
    }

    #[test]
    fn events_carry_actor_request_and_target() {
        let caller = Caller {
            key_id: "evk_0123456789ab".to_owned(),
            role: Role::Readonly,
            tenant: Some("acme".to_owned()),
        };
        let request = RequestInfo {
            ip: Some("203.0.113.9".parse().unwrap()),
            user_agent: Some("curl/8\u{7}".to_owned()),
            method: "GET".to_owned(),
            path: "/api/v1/audit-log".to_owned(),
        };
        let input = AuditEvent::new(
            action::CROSS_TENANT,
            "denied",
            "warning",
            "tenant",
            "globex",
        )
        .into_input(&AuditActor::Key(caller), &request);
        assert_eq!(input.tenant, "acme");
        assert_eq!(input.actor.id, "evk_0123456789ab");
        assert_eq!(input.actor.ip, request.ip);
        assert_eq!(input.actor.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(input.target.id, "globex");
        let anonymous = AuditEvent::new(action::AUTH_MISSING, "denied", "warning", "route", "")
            .into_input(
                &AuditActor::Anonymous {
                    presented_key_id: None,
                },
                &RequestInfo::default(),
            );
        assert_eq!(anonymous.tenant, DEFAULT_TENANT);
        assert_eq!(anonymous.target.id, "-");
    }
}
