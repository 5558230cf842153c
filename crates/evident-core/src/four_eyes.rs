//! Four-eyes (dual control) rules and the one pairing of confirmed events with their
//! confirmations: "every event matching A must be confirmed by an event matching B, by a
//! different actor (optionally of a different role), within T". The server builds its
//! reports and overdue alerts with it, and the offline verifier recomputes a signed report
//! with it from the entries the report carries. Pure: events in, a report out.
//!
//! A confirmation names the event it confirms by sequence number and entry hash in its
//! context, `"confirms": {"seq": N, "hash": "<64 hex>"}` ([`CONFIRMS_FIELD`]), so every pair is
//! hash-linked: a confirmation naming a wrong hash confirms nothing and is reported. An
//! actor's role is the client's statement in `context.actor_role` ([`ROLE_FIELD`]). Times are
//! the node's `recorded_at`, never the client's `occurred_at`.

use crate::chain::SealedEntry;
use crate::event::{ActorKind, Event, Millis, Outcome, format_rfc3339_millis};
use crate::hash::Hash;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub mod bundle;

/// The context member of a confirmation that names the confirmed event.
pub const CONFIRMS_FIELD: &str = "confirms";
/// The context member stating the actor's role (for `require_different_role`).
pub const ROLE_FIELD: &str = "actor_role";
/// Longest rule name, in bytes.
pub const MAX_RULE_NAME_BYTES: usize = 64;

/// Which events a side of a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMatcher {
    /// An exact action (`dkim.key.rotated`), or a prefix (`dkim.key.*`: the prefix itself and
    /// every action below it).
    pub action: String,
    /// Only events of this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Only events with this outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// A four-eyes rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FourEyesRule {
    /// Unique among the node's rules: `[a-z0-9_.-]`, 1 to 64 bytes.
    pub name: String,
    /// The events that need a confirmation (A). An event matching both sides is a
    /// confirmation.
    pub confirmed: EventMatcher,
    /// The confirmations (B).
    pub confirmation: EventMatcher,
    /// How long after the confirmed event a confirmation may be recorded, in milliseconds.
    pub within_ms: u64,
    /// The confirmation's `context.actor_role` must be present on both and differ.
    pub require_different_role: bool,
}

/// A rule that cannot be used: which part, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RuleError {
    pub field: String,
    pub problem: String,
}

impl EventMatcher {
    /// Whether `event` is one of the events this side covers.
    pub fn matches(&self, event: &Event) -> bool {
        let action = match self.action.strip_suffix(".*") {
            Some(prefix) => {
                event.action == prefix
                    || event
                        .action
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('.'))
            }
            None => event.action == self.action,
        };
        action
            && self.tenant.as_ref().is_none_or(|t| *t == event.tenant)
            && self.outcome.is_none_or(|o| o == event.outcome)
    }

    fn check(&self, field: &str) -> Result<(), RuleError> {
        let action = self.action.strip_suffix(".*").unwrap_or(&self.action);
        crate::event::validate_action(action).map_err(|e| RuleError {
            field: format!("{field}.action"),
            problem: format!(
                "{:?}: {} (an exact action, or a prefix ending in \".*\")",
                self.action, e.problem
            ),
        })?;
        if let Some(tenant) = &self.tenant {
            crate::event::validate_tenant(tenant).map_err(|e| RuleError {
                field: format!("{field}.tenant"),
                problem: e.problem,
            })?;
        }
        Ok(())
    }
}

impl FourEyesRule {
    /// Checks the rule's parts; the first problem names its field (`name`, `within`,
    /// `confirmed.action` …).
    pub fn check(&self) -> Result<(), RuleError> {
        let bad_name = self.name.is_empty()
            || self.name.len() > MAX_RULE_NAME_BYTES
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if bad_name {
            return Err(RuleError {
                field: "name".to_owned(),
                problem: format!(
                    "{:?} must be 1 to {MAX_RULE_NAME_BYTES} bytes of a-z, 0-9, '_', '.', '-'",
                    self.name
                ),
            });
        }
        self.confirmed.check("confirmed")?;
        self.confirmation.check("confirmation")?;
        if self.confirmed == self.confirmation {
            return Err(RuleError {
                field: "confirmation".to_owned(),
                problem: "matches the same events as `confirmed`: a confirmation must be a \
                          different event"
                    .to_owned(),
            });
        }
        if self.within_ms == 0 {
            return Err(RuleError {
                field: "within".to_owned(),
                problem: "must be longer than 0".to_owned(),
            });
        }
        Ok(())
    }

    /// Whether `event` needs a confirmation under this rule.
    pub fn is_confirmed_kind(&self, event: &Event) -> bool {
        self.confirmed.matches(event) && !self.confirmation.matches(event)
    }

    /// Whether `event` is a confirmation under this rule.
    pub fn is_confirmation_kind(&self, event: &Event) -> bool {
        self.confirmation.matches(event)
    }

    /// The latest time a confirmation of an event recorded at `recorded_at` counts as in time.
    pub fn deadline(&self, recorded_at: Millis) -> Millis {
        recorded_at.saturating_add(i64::try_from(self.within_ms).unwrap_or(i64::MAX))
    }

    /// How `confirmation` (hash-linked to `confirmed` already) judges it.
    pub fn judge(&self, confirmed: &Event, confirmation: &Event) -> PairStatus {
        let same_actor = confirmed.actor.kind == confirmation.actor.kind
            && confirmed.actor.id == confirmation.actor.id;
        if same_actor {
            return PairStatus::SelfConfirmed;
        }
        if self.require_different_role {
            match (role_of(confirmed), role_of(confirmation)) {
                (Some(a), Some(b)) if a != b => {}
                _ => return PairStatus::WrongRole,
            }
        }
        if confirmation.recorded_at > self.deadline(confirmed.recorded_at) {
            return PairStatus::Late;
        }
        PairStatus::Confirmed
    }
}

/// `context.actor_role` of `event`, when it is a string.
pub fn role_of(event: &Event) -> Option<String> {
    let context: Value = serde_json::from_str(event.context.as_str()).ok()?;
    context.get(ROLE_FIELD)?.as_str().map(str::to_owned)
}

/// The event a confirmation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    pub seq: u64,
    pub hash: Hash,
}

/// Why a confirmation's reference cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceProblem {
    /// No `context.confirms`.
    Missing,
    /// `context.confirms` is not `{"seq": N, "hash": "<64 hex>"}`.
    Malformed(String),
}

/// The reference in `event`'s `context.confirms`.
pub fn reference_of(event: &Event) -> Result<Reference, ReferenceProblem> {
    let context: Value = serde_json::from_str(event.context.as_str())
        .map_err(|e| ReferenceProblem::Malformed(format!("context: {e}")))?;
    let Some(confirms) = context.get(CONFIRMS_FIELD) else {
        return Err(ReferenceProblem::Missing);
    };
    let malformed =
        |problem: &str| ReferenceProblem::Malformed(format!("context.{CONFIRMS_FIELD}: {problem}"));
    let obj = confirms
        .as_object()
        .ok_or_else(|| malformed("expected an object {\"seq\": N, \"hash\": \"<hex>\"}"))?;
    if let Some(other) = obj.keys().find(|k| *k != "seq" && *k != "hash") {
        return Err(malformed(&format!(
            "unknown member {other:?}; expected seq and hash"
        )));
    }
    let seq = obj
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed("seq: expected a non-negative integer"))?;
    let hash = obj
        .get("hash")
        .and_then(Value::as_str)
        .and_then(|h| Hash::from_hex(h).ok())
        .ok_or_else(|| malformed("hash: expected 64 lowercase hex digits"))?;
    Ok(Reference { seq, hash })
}

/// What became of a confirmed event. Ordered best first: of several confirmations of one
/// event, the best decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairStatus {
    /// By a different actor (of a different role, when required), in time.
    Confirmed,
    /// As `confirmed`, but recorded after the deadline.
    Late,
    /// By a different actor whose role is the same (or either role is not stated), while the
    /// rule requires different roles.
    WrongRole,
    /// By the actor of the confirmed event itself.
    SelfConfirmed,
    /// No confirmation yet; the deadline has not passed.
    Pending,
    /// No confirmation, and the deadline has passed.
    Overdue,
}

impl PairStatus {
    pub const ALL: [PairStatus; 6] = [
        PairStatus::Confirmed,
        PairStatus::Late,
        PairStatus::WrongRole,
        PairStatus::SelfConfirmed,
        PairStatus::Pending,
        PairStatus::Overdue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PairStatus::Confirmed => "confirmed",
            PairStatus::Late => "late",
            PairStatus::WrongRole => "wrong_role",
            PairStatus::SelfConfirmed => "self_confirmed",
            PairStatus::Pending => "pending",
            PairStatus::Overdue => "overdue",
        }
    }
}

/// Why a confirmation confirms nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// It has no `context.confirms`.
    MissingReference,
    /// Its `context.confirms` cannot be read.
    MalformedReference,
    /// It names an entry at or after itself.
    UnknownEvent,
    /// It names the confirmed event's seq with another hash.
    HashMismatch,
    /// It names an event of another tenant.
    OtherTenant,
    /// It names an event that is not one this rule's confirmations confirm.
    NotConfirmable,
}

/// An event as a report names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRef {
    pub seq: u64,
    pub hash: String,
    pub recorded_at: String,
    pub tenant: String,
    pub action: String,
    pub actor_kind: ActorKind,
    pub actor_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_role: Option<String>,
}

impl EventRef {
    pub fn of(entry: &SealedEntry) -> EventRef {
        let e = &entry.event;
        EventRef {
            seq: e.seq,
            hash: entry.hash.to_hex(),
            recorded_at: format_rfc3339_millis(e.recorded_at),
            tenant: e.tenant.clone(),
            action: e.action.clone(),
            actor_kind: e.actor.kind,
            actor_id: e.actor.id.clone(),
            actor_role: role_of(e),
        }
    }
}

/// A confirmed event and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    pub status: PairStatus,
    pub confirmed: EventRef,
    /// The latest time a confirmation counts as in time.
    pub deadline: String,
    /// The confirmation that decides the status (the best of several); none when pending or
    /// overdue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<EventRef>,
    /// Milliseconds from the confirmed event to its confirmation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<i64>,
}

/// A confirmation that confirms nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub reason: RejectReason,
    pub problem: String,
    pub confirmation: EventRef,
    /// The seq it names, when it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<u64>,
}

/// Counts by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub confirmed: u64,
    pub late: u64,
    pub wrong_role: u64,
    pub self_confirmed: u64,
    pub pending: u64,
    pub overdue: u64,
    pub rejected: u64,
}

/// What a report covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportScope {
    pub rule: FourEyesRule,
    /// Confirmed events recorded at or after this time (RFC 3339, milliseconds).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<String>,
    /// …and before this time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub to: Option<String>,
    /// The time pending is told from overdue by.
    pub as_of: String,
    /// Only events of this tenant (a tenant-scoped key's report).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tenant: Option<String>,
}

/// A four-eyes report: its scope, then every confirmed event of the window with its status,
/// and the confirmations that confirm nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FourEyesReport {
    #[serde(flatten)]
    pub scope: ReportScope,
    pub summary: Summary,
    pub pairs: Vec<Pair>,
    pub rejected: Vec<Rejected>,
}

/// A scope whose times do not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ScopeError {
    pub field: &'static str,
    pub problem: String,
}

struct Window {
    from: Option<Millis>,
    to: Option<Millis>,
    as_of: Millis,
}

impl Window {
    fn of(scope: &ReportScope) -> Result<Window, ScopeError> {
        let time = |field: &'static str, text: &str| {
            crate::event::parse_rfc3339(text).map_err(|e| ScopeError {
                field,
                problem: e.to_string(),
            })
        };
        Ok(Window {
            from: scope.from.as_deref().map(|t| time("from", t)).transpose()?,
            to: scope.to.as_deref().map(|t| time("to", t)).transpose()?,
            as_of: time("as_of", &scope.as_of)?,
        })
    }

    fn holds(&self, at: Millis) -> bool {
        self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at < t)
    }
}

/// The report, and the sequence numbers of every entry it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub report: FourEyesReport,
    pub named: BTreeSet<u64>,
}

/// Pairs the confirmed events of `scope`'s window with their confirmations among `entries`.
///
/// `entries` is any set of entries (in any order) holding at least the rule's events of the
/// window, the confirmations recorded since its start, and the entries those confirmations
/// name. What the report says depends only on the entries it names ([`Evaluation::named`]),
/// so evaluating just those gives the same report: that is how a signed report is checked
/// offline. Entries outside the scope's tenant are ignored.
pub fn evaluate(scope: &ReportScope, entries: &[SealedEntry]) -> Result<Evaluation, ScopeError> {
    let window = Window::of(scope)?;
    let rule = &scope.rule;
    let in_scope = |e: &&SealedEntry| scope.tenant.as_ref().is_none_or(|t| *t == e.event.tenant);
    let by_seq: BTreeMap<u64, &SealedEntry> = entries
        .iter()
        .filter(in_scope)
        .map(|e| (e.event.seq, e))
        .collect();
    let is_pending_a =
        |e: &SealedEntry| rule.is_confirmed_kind(&e.event) && window.holds(e.event.recorded_at);

    let mut named = BTreeSet::new();
    let mut links: BTreeMap<u64, Vec<&SealedEntry>> = BTreeMap::new();
    let mut rejected = Vec::new();
    for b in by_seq
        .values()
        .filter(|e| rule.is_confirmation_kind(&e.event))
    {
        let b_in_window = window.holds(b.event.recorded_at);
        let mut reject = |reason, problem: String, references: Option<u64>| {
            rejected.push(Rejected {
                reason,
                problem,
                confirmation: EventRef::of(b),
                references,
            });
            named.insert(b.event.seq);
            // The named entry goes with the report when the reason is about it.
            let about_target = matches!(
                reason,
                RejectReason::NotConfirmable
                    | RejectReason::HashMismatch
                    | RejectReason::OtherTenant
            );
            if let Some(seq) = references.filter(|s| about_target && by_seq.contains_key(s)) {
                named.insert(seq);
            }
        };
        let reference = match reference_of(&b.event) {
            Ok(r) => r,
            Err(ReferenceProblem::Missing) => {
                if b_in_window {
                    reject(
                        RejectReason::MissingReference,
                        format!("no context.{CONFIRMS_FIELD} names the event it confirms"),
                        None,
                    );
                }
                continue;
            }
            Err(ReferenceProblem::Malformed(problem)) => {
                if b_in_window {
                    reject(RejectReason::MalformedReference, problem, None);
                }
                continue;
            }
        };
        if reference.seq >= b.event.seq {
            if b_in_window {
                reject(
                    RejectReason::UnknownEvent,
                    format!(
                        "names entry {}, which is not before the confirmation ({})",
                        reference.seq, b.event.seq
                    ),
                    Some(reference.seq),
                );
            }
            continue;
        }
        // A named entry that is not here belongs to another report (out of the window or
        // the tenant) or is gone (pruned): nothing to say about it here.
        let Some(target) = by_seq.get(&reference.seq) else {
            continue;
        };
        if !rule.is_confirmed_kind(&target.event) {
            if b_in_window {
                reject(
                    RejectReason::NotConfirmable,
                    format!(
                        "names entry {} ({}), which is not an event rule {:?} confirms",
                        reference.seq, target.event.action, rule.name
                    ),
                    Some(reference.seq),
                );
            }
            continue;
        }
        if !is_pending_a(target) {
            continue;
        }
        if target.hash != reference.hash {
            reject(
                RejectReason::HashMismatch,
                format!(
                    "names entry {} with hash {}, but that entry's hash is {}",
                    reference.seq,
                    reference.hash.to_hex(),
                    target.hash.to_hex()
                ),
                Some(reference.seq),
            );
            continue;
        }
        if target.event.tenant != b.event.tenant {
            reject(
                RejectReason::OtherTenant,
                format!(
                    "confirms entry {} of tenant {:?} from tenant {:?}",
                    reference.seq, target.event.tenant, b.event.tenant
                ),
                Some(reference.seq),
            );
            continue;
        }
        links.entry(reference.seq).or_default().push(b);
    }

    let mut summary = Summary::default();
    let mut pairs = Vec::new();
    for a in by_seq.values().filter(|e| is_pending_a(e)) {
        named.insert(a.event.seq);
        let deadline = rule.deadline(a.event.recorded_at);
        let best = links
            .get(&a.event.seq)
            .into_iter()
            .flatten()
            .map(|b| (rule.judge(&a.event, &b.event), b.event.seq, *b))
            .min_by_key(|(status, seq, _)| (*status, *seq));
        let (status, confirmation) = match best {
            Some((status, _, b)) => (status, Some(b)),
            None if window.as_of > deadline => (PairStatus::Overdue, None),
            None => (PairStatus::Pending, None),
        };
        if let Some(b) = confirmation {
            named.insert(b.event.seq);
        }
        *count(&mut summary, status) += 1;
        pairs.push(Pair {
            status,
            confirmed: EventRef::of(a),
            deadline: format_rfc3339_millis(deadline),
            delay_ms: confirmation.map(|b| b.event.recorded_at - a.event.recorded_at),
            confirmation: confirmation.map(EventRef::of),
        });
    }
    rejected.sort_by_key(|r| r.confirmation.seq);
    summary.rejected = rejected.len() as u64;
    Ok(Evaluation {
        report: FourEyesReport {
            scope: scope.clone(),
            summary,
            pairs,
            rejected,
        },
        named,
    })
}

fn count(summary: &mut Summary, status: PairStatus) -> &mut u64 {
    match status {
        PairStatus::Confirmed => &mut summary.confirmed,
        PairStatus::Late => &mut summary.late,
        PairStatus::WrongRole => &mut summary.wrong_role,
        PairStatus::SelfConfirmed => &mut summary.self_confirmed,
        PairStatus::Pending => &mut summary.pending,
        PairStatus::Overdue => &mut summary.overdue,
    }
}

#[cfg(test)]
mod tests;
