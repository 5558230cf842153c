//! Elastic Common Schema (ECS 8.17) documents: `@timestamp`, `event.*`, `user.*`, `source.ip`,
//! `user_agent.original`, `organization.id` (the tenant), `observer.*` (the reporting node),
//! and the integrity coordinates and the rest of the entry under the custom field set
//! `evident.*` (documented in `docs/SIEM-MAPPINGS.md`).

use super::{Coordinates, EventClass, PRODUCT_VERSION, Verb, context_value, summary};
use evident_core::SealedEntry;
use evident_core::event::{ActorKind, Outcome, format_rfc3339_millis};
use serde_json::{Map, Value, json};

/// The ECS version the documents follow (`ecs.version`).
pub const ECS_VERSION: &str = "8.17.0";

/// `event.category` and `event.type` for an action: both from the ECS allowed values, each
/// type one the category expects.
pub fn categorization(
    class: EventClass,
    verb: Verb,
    outcome: Outcome,
) -> (&'static str, Vec<&'static str>) {
    match class {
        EventClass::Authentication => {
            let kind = match verb {
                Verb::Login => "start",
                Verb::Logout => "end",
                _ => "info",
            };
            ("authentication", vec![kind])
        }
        EventClass::AccountChange => {
            let kind = match verb {
                Verb::Create => "creation",
                Verb::Delete => "deletion",
                Verb::Other | Verb::Read | Verb::Login | Verb::Logout => "info",
                _ => "change",
            };
            ("iam", vec!["user", kind])
        }
        EventClass::ApiActivity => {
            let kind = match verb {
                Verb::Create => "creation",
                Verb::Read => "access",
                Verb::Delete => "deletion",
                Verb::Update | Verb::Enable | Verb::Disable | Verb::Lock | Verb::Unlock => "change",
                _ => "info",
            };
            let mut types = vec![kind];
            if outcome == Outcome::Denied {
                types.push("denied");
            }
            ("api", types)
        }
    }
}

/// `event.outcome`: `success` or `failure` (a denial is a failure; `evident.outcome` keeps
/// the difference).
fn outcome(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failure | Outcome::Denied => "failure",
    }
}

/// The document as a JSON value (nested objects, as ECS documents are indexed).
pub fn document(entry: &SealedEntry, node_id: &str) -> Value {
    let e = &entry.event;
    let class = EventClass::of(&e.action);
    let (category, types) = categorization(class, Verb::of(&e.action), e.outcome);
    let coordinates = Coordinates::of(entry);
    let mut doc = Map::new();
    let mut put = |key: &str, value: Value| {
        doc.insert(key.to_owned(), value);
    };
    put(
        "@timestamp",
        json!(format_rfc3339_millis(
            e.occurred_at.unwrap_or(e.recorded_at)
        )),
    );
    put("ecs", json!({ "version": ECS_VERSION }));
    put("message", json!(summary(entry)));
    put(
        "event",
        json!({
            "kind": "event",
            "category": [category],
            "type": types,
            "action": e.action,
            "outcome": outcome(e.outcome),
            "severity": e.severity.syslog_code(),
            "id": e.id.to_string(),
            "sequence": coordinates.seq,
            // ECS: "hash of raw field to be able to demonstrate log integrity".
            "hash": coordinates.entry_hash,
            "created": format_rfc3339_millis(e.recorded_at),
            "dataset": "evident.audit",
            "module": "evident",
            "provider": coordinates.node_id,
        }),
    );
    put(
        "log",
        json!({
            "level": e.severity.as_str(),
            "syslog": { "severity": { "code": e.severity.syslog_code(), "name": e.severity.as_str() } },
        }),
    );
    let mut user = Map::new();
    user.insert("id".to_owned(), json!(e.actor.id));
    user.insert("name".to_owned(), json!(e.actor.id));
    if class == EventClass::AccountChange {
        user.insert(
            "target".to_owned(),
            json!({ "id": e.target.id, "name": e.target.id }),
        );
    }
    put("user", Value::Object(user));
    if e.actor.kind == ActorKind::Service || e.actor.kind == ActorKind::ApiKey {
        put("service", json!({ "name": e.actor.id }));
    }
    if let Some(ip) = e.actor.ip {
        put("source", json!({ "ip": ip.to_string() }));
        put(
            "related",
            json!({ "ip": [ip.to_string()], "user": [e.actor.id] }),
        );
    } else {
        put("related", json!({ "user": [e.actor.id] }));
    }
    if let Some(agent) = &e.actor.user_agent {
        put("user_agent", json!({ "original": agent }));
    }
    put("organization", json!({ "id": e.tenant }));
    put(
        "observer",
        json!({
            "hostname": node_id,
            "name": node_id,
            "vendor": "Evident",
            "product": "Evident",
            "version": PRODUCT_VERSION,
            "type": "audit-log",
        }),
    );
    put(
        "evident",
        json!({
            "seq": coordinates.seq,
            "node_id": coordinates.node_id,
            "entry_hash": coordinates.entry_hash,
            "seal": coordinates.seal,
            "leaf_index": coordinates.leaf_index,
            "class": class.as_str(),
            "tenant": e.tenant,
            "recorded_at": format_rfc3339_millis(e.recorded_at),
            "occurred_at": e.occurred_at.map(format_rfc3339_millis),
            "actor": { "id": e.actor.id, "kind": e.actor.kind.as_str() },
            "target": { "kind": e.target.kind, "id": e.target.id },
            "outcome": e.outcome.as_str(),
            "severity": e.severity.as_str(),
            "context": context_value(entry),
            "appended_by": e.appended_by,
        }),
    );
    Value::Object(doc)
}

/// The document as one line of JSON.
pub fn render(entry: &SealedEntry, node_id: &str) -> String {
    document(entry, node_id).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::tests::entry;
    use evident_core::event::Severity;

    #[test]
    fn fields_carry_the_entry() {
        let entry = entry("user.created", Outcome::Denied, Severity::Warning);
        let d = document(&entry, "reporter-1");
        assert_eq!(d["@timestamp"], "2026-03-14T08:59:59.000Z");
        assert_eq!(d["event"]["created"], "2026-03-14T09:00:00.123Z");
        assert_eq!(d["event"]["category"], json!(["iam"]));
        assert_eq!(d["event"]["type"], json!(["user", "creation"]));
        assert_eq!(d["event"]["outcome"], "failure");
        assert_eq!(d["event"]["severity"], 4);
        assert_eq!(d["source"]["ip"], "203.0.113.7");
        assert_eq!(d["user_agent"]["original"], "curl/8 (x=1\ny)");
        assert_eq!(d["user"]["target"]["id"], "nyc|edge");
        assert_eq!(d["organization"]["id"], "acme");
        assert_eq!(d["observer"]["hostname"], "reporter-1");
        assert_eq!(d["evident"]["seq"], 41);
        assert_eq!(d["evident"]["leaf_index"], 41);
        assert_eq!(d["evident"]["entry_hash"], entry.hash.to_hex());
        assert_eq!(d["evident"]["seal"], entry.seal.to_hex());
        assert_eq!(d["evident"]["outcome"], "denied");
    }
}
