//! OCSF 1.5.0 records: Authentication (3002), Account Change (3001) or API Activity (6003) by
//! [`EventClass`], with every attribute those classes and the base event require, and the
//! integrity coordinates in `metadata` (uid, sequence) and `unmapped.evident`.

use super::{Coordinates, EventClass, PRODUCT_VERSION, Verb, context_value, summary};
use evident_core::SealedEntry;
use evident_core::event::{ActorKind, Outcome, Severity};
use serde_json::{Map, Value, json};

/// The OCSF schema version the records follow (`metadata.version`).
pub const OCSF_VERSION: &str = "1.5.0";

/// Identity Access Management.
const CATEGORY_IAM: u32 = 3;
/// Application Activity.
const CATEGORY_APPLICATION: u32 = 6;

struct ClassInfo {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
}

fn class_info(class: EventClass) -> ClassInfo {
    match class {
        EventClass::Authentication => ClassInfo {
            class_uid: 3002,
            class_name: "Authentication",
            category_uid: CATEGORY_IAM,
            category_name: "Identity & Access Management",
        },
        EventClass::AccountChange => ClassInfo {
            class_uid: 3001,
            class_name: "Account Change",
            category_uid: CATEGORY_IAM,
            category_name: "Identity & Access Management",
        },
        EventClass::ApiActivity => ClassInfo {
            class_uid: 6003,
            class_name: "API Activity",
            category_uid: CATEGORY_APPLICATION,
            category_name: "Application Activity",
        },
    }
}

/// The class's `activity_id` and its caption for an action's verb.
pub fn activity(class: EventClass, verb: Verb) -> (u32, &'static str) {
    match class {
        EventClass::Authentication => match verb {
            Verb::Logout => (2, "Logoff"),
            // Every other authentication event is a credential presented for a session.
            _ => (1, "Logon"),
        },
        EventClass::AccountChange => match verb {
            Verb::Create => (1, "Create"),
            Verb::Enable => (2, "Enable"),
            Verb::PasswordChange => (3, "Password Change"),
            Verb::PasswordReset => (4, "Password Reset"),
            Verb::Disable => (5, "Disable"),
            Verb::Delete => (6, "Delete"),
            Verb::Lock => (9, "Lock"),
            Verb::MfaEnable => (10, "MFA Factor Enable"),
            Verb::MfaDisable => (11, "MFA Factor Disable"),
            Verb::Unlock => (12, "Unlock"),
            _ => (99, "Other"),
        },
        EventClass::ApiActivity => match verb {
            Verb::Create => (1, "Create"),
            Verb::Read => (2, "Read"),
            Verb::Update | Verb::Enable | Verb::Disable | Verb::Lock | Verb::Unlock => {
                (3, "Update")
            }
            Verb::Delete => (4, "Delete"),
            _ => (99, "Other"),
        },
    }
}

/// `severity_id` and its caption.
pub fn severity(severity: Severity) -> (u32, &'static str) {
    match severity {
        Severity::Debug | Severity::Info => (1, "Informational"),
        Severity::Notice => (2, "Low"),
        Severity::Warning => (3, "Medium"),
        Severity::Error => (4, "High"),
        Severity::Critical => (5, "Critical"),
        Severity::Alert | Severity::Emergency => (6, "Fatal"),
    }
}

/// `status_id` and its caption.
fn status(outcome: Outcome) -> (u32, &'static str) {
    match outcome {
        Outcome::Success => (1, "Success"),
        Outcome::Failure | Outcome::Denied => (2, "Failure"),
    }
}

/// The user object's `type_id` and `type` for an actor kind.
fn user_type(kind: ActorKind) -> (u32, &'static str) {
    match kind {
        ActorKind::User => (1, "User"),
        ActorKind::System => (3, "System"),
        ActorKind::Service => (99, "service"),
        ActorKind::ApiKey => (99, "api_key"),
    }
}

/// The record as a JSON value.
pub fn record(entry: &SealedEntry, node_id: &str) -> Value {
    let e = &entry.event;
    let class = EventClass::of(&e.action);
    let info = class_info(class);
    let (activity_id, activity_name) = activity(class, Verb::of(&e.action));
    let (severity_id, severity_name) = severity(e.severity);
    let (status_id, status_name) = status(e.outcome);
    let (user_type_id, user_type_name) = user_type(e.actor.kind);
    let coordinates = Coordinates::of(entry);

    let actor_user = json!({
        "uid": e.actor.id,
        "name": e.actor.id,
        "type_id": user_type_id,
        "type": user_type_name,
    });
    let mut record = Map::new();
    let mut put = |key: &str, value: Value| {
        record.insert(key.to_owned(), value);
    };
    put("class_uid", json!(info.class_uid));
    put("class_name", json!(info.class_name));
    put("category_uid", json!(info.category_uid));
    put("category_name", json!(info.category_name));
    put("activity_id", json!(activity_id));
    put("activity_name", json!(activity_name));
    put(
        "type_uid",
        json!(u64::from(info.class_uid) * 100 + u64::from(activity_id)),
    );
    put(
        "type_name",
        json!(format!("{}: {activity_name}", info.class_name)),
    );
    put("severity_id", json!(severity_id));
    put("severity", json!(severity_name));
    put("status_id", json!(status_id));
    put("status", json!(status_name));
    put("status_detail", json!(e.outcome.as_str()));
    put("time", json!(e.occurred_at.unwrap_or(e.recorded_at)));
    put("message", json!(summary(entry)));
    put(
        "metadata",
        json!({
            "version": OCSF_VERSION,
            "product": {
                "name": "Evident",
                "vendor_name": "Evident",
                "version": PRODUCT_VERSION,
            },
            "uid": e.id.to_string(),
            "sequence": coordinates.seq,
            "logged_time": e.recorded_at,
            "log_name": "audit",
            "log_provider": node_id,
            "tenant_uid": e.tenant,
            "event_code": e.action,
        }),
    );
    put("actor", json!({ "user": actor_user }));
    if let Some(ip) = e.actor.ip {
        put("src_endpoint", json!({ "ip": ip.to_string() }));
    } else if class == EventClass::ApiActivity {
        // Required by API Activity: with no address recorded, the endpoint is named for
        // what is known, the node itself for its own events.
        let endpoint = if e.actor.kind == ActorKind::System {
            json!({ "hostname": node_id })
        } else {
            json!({ "name": "unknown" })
        };
        put("src_endpoint", endpoint);
    }
    if let Some(agent) = &e.actor.user_agent {
        put("http_request", json!({ "user_agent": agent }));
    }
    match class {
        EventClass::Authentication => {
            // The user authenticating: the actor (a failed key check names the presented key).
            put("user", actor_user.clone());
            put("service", json!({ "name": "evident" }));
            put("dst_endpoint", json!({ "hostname": node_id }));
        }
        EventClass::AccountChange => {
            // The account changed: the target.
            put(
                "user",
                json!({ "uid": e.target.id, "name": e.target.id, "type": e.target.kind }),
            );
        }
        EventClass::ApiActivity => {
            put(
                "api",
                json!({ "operation": e.action, "service": { "name": "evident" } }),
            );
            put(
                "resources",
                json!([{ "uid": e.target.id, "type": e.target.kind }]),
            );
        }
    }
    put(
        "unmapped",
        json!({
            "evident": {
                "seq": coordinates.seq,
                "node_id": coordinates.node_id,
                "entry_hash": coordinates.entry_hash,
                "seal": coordinates.seal,
                "leaf_index": coordinates.leaf_index,
                "id": e.id.to_string(),
                "recorded_at": e.recorded_at,
                "occurred_at": e.occurred_at,
                "tenant": e.tenant,
                "action": e.action,
                "actor": { "id": e.actor.id, "kind": e.actor.kind.as_str() },
                "target": { "kind": e.target.kind, "id": e.target.id },
                "outcome": e.outcome.as_str(),
                "severity": e.severity.as_str(),
                "context": context_value(entry),
                "appended_by": e.appended_by,
            }
        }),
    );
    Value::Object(record)
}

/// The record as one line of JSON.
pub fn render(entry: &SealedEntry, node_id: &str) -> String {
    record(entry, node_id).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::tests::entry;

    #[test]
    fn classes_activities_and_type_uid_follow_the_action() {
        for (action, class_uid, category_uid, activity_id) in [
            ("auth.login", 3002, 3, 1),
            ("auth.logout", 3002, 3, 2),
            ("evident.auth.unknown_key", 3002, 3, 1),
            ("evident.key.created", 3001, 3, 1),
            ("evident.key.revoked", 3001, 3, 5),
            ("user.deleted", 3001, 3, 6),
            ("evident.key.rotated", 3001, 3, 99),
            ("evident.log.exported", 6003, 6, 2),
            ("doc.created", 6003, 6, 1),
            ("config.threshold.changed", 6003, 6, 3),
            ("thing.happened", 6003, 6, 99),
        ] {
            let r = record(&entry(action, Outcome::Success, Severity::Info), "n1");
            assert_eq!(r["class_uid"], class_uid, "{action}");
            assert_eq!(r["category_uid"], category_uid, "{action}");
            assert_eq!(r["activity_id"], activity_id, "{action}");
            assert_eq!(r["type_uid"], class_uid * 100 + activity_id, "{action}");
        }
    }

    #[test]
    fn integrity_coordinates_and_outcome_are_carried() {
        let entry = entry("auth.login", Outcome::Denied, Severity::Error);
        let r = record(&entry, "reporter-1");
        assert_eq!(r["metadata"]["sequence"], 41);
        assert_eq!(r["metadata"]["version"], OCSF_VERSION);
        let ev = &r["unmapped"]["evident"];
        assert_eq!(ev["seq"], 41);
        assert_eq!(ev["leaf_index"], 41);
        assert_eq!(ev["node_id"], "nyc-edge-01");
        assert_eq!(ev["entry_hash"], entry.hash.to_hex());
        assert_eq!(ev["seal"], entry.seal.to_hex());
        assert_eq!(ev["context"]["n"], 7);
        assert_eq!(r["status_id"], 2);
        assert_eq!(r["status_detail"], "denied");
        assert_eq!(r["severity_id"], 4);
        assert_eq!(r["time"], 1_773_478_799_000_i64);
        assert_eq!(r["src_endpoint"]["ip"], "203.0.113.7");
        assert_eq!(r["dst_endpoint"]["hostname"], "reporter-1");
    }
}
