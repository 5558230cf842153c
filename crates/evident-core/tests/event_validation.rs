//! Client event validation, the stored event's JSON form, context canonicalization and the
//! canonical entry encoding, as other crates see them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use evident_core::canonical;
use evident_core::chain::{self, ChainHead, GENESIS_PREV_HASH, SealKey};
use evident_core::event::{
    self, Actor, ActorKind, Context, Event, EventInput, MAX_CONTEXT_BYTES, Outcome, Severity,
    Target, ValidationError,
};
use serde_json::{Value, json};
use std::net::IpAddr;
use uuid::Uuid;

fn base() -> Value {
    json!({
        "occurred_at": "2026-03-14T09:00:00Z",
        "tenant": "acme",
        "actor": {"id": "alice", "kind": "user", "ip": "203.0.113.7", "user_agent": "curl/8"},
        "action": "config.threshold.changed",
        "target": {"kind": "node", "id": "nyc-edge-01"},
        "outcome": "success",
        "severity": "notice",
        "context": {"old": 5, "new": 7}
    })
}

/// `base()` with the member at dotted `path` set to `value` (or removed when `None`).
fn with(path: &str, value: Option<Value>) -> Value {
    let mut doc = base();
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap();
    let mut cur = &mut doc;
    for p in parts {
        cur = cur.get_mut(p).unwrap();
    }
    let obj = cur.as_object_mut().unwrap();
    match value {
        Some(v) => {
            obj.insert(last.to_owned(), v);
        }
        None => {
            obj.remove(last);
        }
    }
    doc
}

fn refused(doc: &Value) -> ValidationError {
    match EventInput::from_json(doc) {
        Ok(input) => panic!("accepted: {input:?}"),
        Err(e) => e,
    }
}

/// Asserts refusal naming `field`, with a problem containing `needle`.
fn assert_refused(doc: &Value, field: &str, needle: &str) {
    let e = refused(doc);
    assert_eq!(e.field, field, "wrong field for {doc}: {e}");
    assert!(
        e.problem.contains(needle),
        "problem {:?} lacks {needle:?}",
        e.problem
    );
}

fn accepted(doc: &Value) -> EventInput {
    EventInput::from_json(doc).unwrap_or_else(|e| panic!("refused {doc}: {e}"))
}

// ---- shape ----

#[test]
fn a_full_event_is_accepted_as_given() {
    let input = accepted(&base());
    assert_eq!(input.occurred_at, Some(1_773_478_800_000));
    assert_eq!(input.tenant, "acme");
    assert_eq!(
        input.actor,
        Actor {
            id: "alice".into(),
            kind: ActorKind::User,
            ip: Some("203.0.113.7".parse().unwrap()),
            user_agent: Some("curl/8".into()),
        }
    );
    assert_eq!(input.action, "config.threshold.changed");
    assert_eq!(
        input.target,
        Target {
            kind: "node".into(),
            id: "nyc-edge-01".into()
        }
    );
    assert_eq!(input.outcome, Outcome::Success);
    assert_eq!(input.severity, Severity::Notice);
    assert_eq!(input.context.as_str(), r#"{"new":7,"old":5}"#);
}

#[test]
fn optional_fields_default_when_absent_or_null() {
    let minimal = json!({
        "actor": {"id": "svc", "kind": "system"},
        "action": "key.rotated",
        "target": {"kind": "key", "id": "k1"},
        "outcome": "success",
        "severity": "info"
    });
    let input = accepted(&minimal);
    assert_eq!(input.occurred_at, None);
    assert_eq!(input.tenant, event::DEFAULT_TENANT);
    assert_eq!(input.actor.ip, None);
    assert_eq!(input.actor.user_agent, None);
    assert_eq!(input.context, Context::empty());

    let mut nulls = minimal.clone();
    for key in ["occurred_at", "tenant", "context"] {
        nulls[key] = Value::Null;
    }
    nulls["actor"]["ip"] = Value::Null;
    nulls["actor"]["user_agent"] = Value::Null;
    assert_eq!(accepted(&nulls), input);
}

#[test]
fn the_document_must_be_an_object() {
    for doc in [json!([]), json!("event"), json!(null), json!(3)] {
        assert_refused(&doc, "$", "expected an object");
    }
}

#[test]
fn unknown_fields_are_refused_by_name() {
    assert_refused(&with("extra", Some(json!(1))), "extra", "unknown field");
    assert_refused(
        &with("actor.email", Some(json!("a@b"))),
        "actor.email",
        "unknown field",
    );
    assert_refused(
        &with("target.name", Some(json!("x"))),
        "target.name",
        "unknown field",
    );
    // The message lists what is allowed.
    let e = refused(&with("actor.email", Some(json!("a@b"))));
    assert!(e.problem.contains("id, kind, ip, user_agent"), "{e}");
}

#[test]
fn required_fields_are_named_when_missing() {
    for path in [
        "actor",
        "actor.id",
        "actor.kind",
        "action",
        "target",
        "target.kind",
        "target.id",
        "outcome",
        "severity",
    ] {
        assert_refused(&with(path, None), path, "missing");
    }
    // null is not a value for a required field.
    assert_refused(
        &with("action", Some(Value::Null)),
        "action",
        "expected a string, got null",
    );
}

#[test]
fn wrong_types_name_the_field_and_the_expected_type() {
    let cases: &[(&str, Value, &str)] = &[
        ("actor", json!("alice"), "expected an object, got a string"),
        ("actor.id", json!(7), "expected a string, got a number"),
        (
            "actor.kind",
            json!(["user"]),
            "expected a string, got an array",
        ),
        (
            "actor.ip",
            json!(2130706433),
            "expected a string, got a number",
        ),
        (
            "actor.user_agent",
            json!(true),
            "expected a string, got a boolean",
        ),
        (
            "action",
            json!({"a": 1}),
            "expected a string, got an object",
        ),
        ("target", json!([]), "expected an object, got an array"),
        ("target.kind", json!(1), "expected a string"),
        ("target.id", json!(false), "expected a string"),
        ("outcome", json!(1), "expected a string"),
        ("severity", json!(6), "expected a string"),
        ("tenant", json!(5), "expected a string"),
        (
            "occurred_at",
            json!(true),
            "expected an RFC 3339 string or integer milliseconds",
        ),
        (
            "occurred_at",
            json!(1.5e12 + 0.5),
            "expected integer milliseconds",
        ),
        ("context", json!([1, 2]), "expected an object, got an array"),
        ("context", json!("{}"), "expected an object, got a string"),
    ];
    for (path, value, needle) in cases {
        assert_refused(&with(path, Some(value.clone())), path, needle);
    }
}

// ---- enumerations ----

#[test]
fn actor_kinds() {
    for (name, kind) in [
        ("user", ActorKind::User),
        ("service", ActorKind::Service),
        ("api_key", ActorKind::ApiKey),
        ("system", ActorKind::System),
    ] {
        assert_eq!(
            accepted(&with("actor.kind", Some(json!(name)))).actor.kind,
            kind
        );
    }
    for bad in ["admin", "User", "apikey", ""] {
        assert_refused(
            &with("actor.kind", Some(json!(bad))),
            "actor.kind",
            "user, service, api_key, system",
        );
    }
}

#[test]
fn outcomes() {
    for (name, outcome) in [
        ("success", Outcome::Success),
        ("failure", Outcome::Failure),
        ("denied", Outcome::Denied),
    ] {
        assert_eq!(
            accepted(&with("outcome", Some(json!(name)))).outcome,
            outcome
        );
    }
    for bad in ["ok", "Success", "failed"] {
        assert_refused(
            &with("outcome", Some(json!(bad))),
            "outcome",
            "success, failure, denied",
        );
    }
}

#[test]
fn severities_and_their_aliases() {
    let names = [
        ("debug", Severity::Debug),
        ("info", Severity::Info),
        ("informational", Severity::Info),
        ("notice", Severity::Notice),
        ("warning", Severity::Warning),
        ("warn", Severity::Warning),
        ("error", Severity::Error),
        ("err", Severity::Error),
        ("critical", Severity::Critical),
        ("crit", Severity::Critical),
        ("alert", Severity::Alert),
        ("emergency", Severity::Emergency),
        ("emerg", Severity::Emergency),
    ];
    for (name, sev) in names {
        assert_eq!(
            accepted(&with("severity", Some(json!(name)))).severity,
            sev,
            "{name}"
        );
    }
    for bad in ["fatal", "INFO", "trace", "panic", "", "5"] {
        assert_refused(
            &with("severity", Some(json!(bad))),
            "severity",
            "debug, info, notice, warning, error, critical, alert, emergency",
        );
    }
    assert!(Severity::Debug < Severity::Warning && Severity::Critical < Severity::Emergency);
}

// ---- strings ----

#[test]
fn action_names() {
    for ok in [
        "auth.login.failed",
        "pcap.download",
        "key.rotated",
        "a",
        "x_y-z.0",
        &"a".repeat(128),
    ] {
        assert_eq!(accepted(&with("action", Some(json!(ok)))).action, ok);
    }
    let too_long = format!("{}.b", "a".repeat(127));
    let cases = [
        ("", "must not be empty"),
        ("Auth.login", "contains 'A'"),
        ("auth login", "contains ' '"),
        ("auth/login", "contains '/'"),
        ("auth.lögin", "contains 'ö'"),
        (".auth", "empty segment"),
        ("auth.", "empty segment"),
        ("auth..login", "empty segment"),
        (".", "empty segment"),
        (too_long.as_str(), "at most 128"),
    ];
    for (bad, needle) in cases {
        assert_refused(&with("action", Some(json!(bad))), "action", needle);
    }
    assert!(event::validate_action("auth.login").is_ok());
    assert_eq!(event::validate_action("a..b").unwrap_err().field, "action");
}

#[test]
fn tenant_and_node_id_names() {
    for ok in [
        "default",
        "Acme_Corp",
        "eu-west.1",
        "org:42",
        &"t".repeat(128),
    ] {
        assert_eq!(accepted(&with("tenant", Some(json!(ok)))).tenant, ok);
        assert!(event::validate_node_id(ok).is_ok());
    }
    let long = "t".repeat(129);
    let cases = [
        ("", "must not be empty"),
        ("acme corp", "contains ' '"),
        ("acme/corp", "contains '/'"),
        ("ac\nme", "contains '\\n'"),
        ("açme", "contains 'ç'"),
        (long.as_str(), "at most 128"),
    ];
    for (bad, needle) in cases {
        assert_refused(&with("tenant", Some(json!(bad))), "tenant", needle);
        let e = event::validate_node_id(bad).unwrap_err();
        assert_eq!(e.field, "node_id");
        assert!(e.problem.contains(needle), "{e}");
    }
}

#[test]
fn plain_strings_are_bounded_and_free_of_control_characters() {
    for path in ["actor.id", "target.kind", "target.id", "actor.user_agent"] {
        let max = "é".repeat(512); // 1024 bytes
        let got = accepted(&with(path, Some(json!(max))));
        let field = match path {
            "actor.id" => got.actor.id,
            "target.kind" => got.target.kind,
            "target.id" => got.target.id,
            _ => got.actor.user_agent.unwrap(),
        };
        assert_eq!(field.len(), 1024);
        assert_refused(
            &with(path, Some(json!(format!("{max}x")))),
            path,
            "1025 bytes, at most 1024",
        );
        for (bad, code) in [
            ("a\nb", "U+000A"),
            ("\u{0}", "U+0000"),
            ("x\u{7f}", "U+007F"),
            ("\u{1f}", "U+001F"),
        ] {
            assert_refused(&with(path, Some(json!(bad))), path, code);
        }
        // Other characters, non-ASCII and no-break space included, are fine.
        accepted(&with(path, Some(json!("Ünïcödé ✓ \u{a0}"))));
    }
    for path in ["actor.id", "target.kind", "target.id"] {
        assert_refused(&with(path, Some(json!(""))), path, "must not be empty");
    }
}

#[test]
fn an_empty_user_agent_is_held_as_absent() {
    assert_eq!(
        accepted(&with("actor.user_agent", Some(json!(""))))
            .actor
            .user_agent,
        None
    );
}

#[test]
fn ip_addresses() {
    let ip = |text: &str| {
        accepted(&with("actor.ip", Some(json!(text))))
            .actor
            .ip
            .unwrap()
    };
    assert_eq!(ip("203.0.113.7"), "203.0.113.7".parse::<IpAddr>().unwrap());
    assert_eq!(
        ip("2001:DB8:0:0::1"),
        "2001:db8::1".parse::<IpAddr>().unwrap()
    );
    // An IPv4-mapped IPv6 address is the IPv4 address.
    assert_eq!(
        ip("::ffff:203.0.113.7"),
        "203.0.113.7".parse::<IpAddr>().unwrap()
    );
    assert!(ip("::ffff:203.0.113.7").is_ipv4());
    for bad in [
        "",
        "203.0.113",
        "256.1.1.1",
        "fe80::1%eth0",
        "localhost",
        "203.0.113.7:80",
        " 1.2.3.4",
    ] {
        assert_refused(
            &with("actor.ip", Some(json!(bad))),
            "actor.ip",
            "not an IPv4 or IPv6 address",
        );
    }
}

// ---- time ----

#[test]
fn occurred_at_forms_and_range() {
    let at = |v: Value| accepted(&with("occurred_at", Some(v))).occurred_at.unwrap();
    assert_eq!(at(json!("2026-03-14T10:00:00+01:00")), 1_773_478_800_000);
    assert_eq!(at(json!("2026-03-14T09:00:00.123Z")), 1_773_478_800_123);
    assert_eq!(at(json!(1_773_478_800_123i64)), 1_773_478_800_123);
    assert_eq!(at(json!(0)), 0);
    // A number with a zero fraction is an integer (JSON Schema's `integer`, which the OpenAPI
    // document states): schemathesis sent `0.0` and was refused.
    assert_eq!(at(json!(0.0)), 0);
    assert_eq!(at(json!(1_773_478_800_123.0f64)), 1_773_478_800_123);
    assert_eq!(at(json!("2024-02-29T00:00:00Z")), 1_709_164_800_000);
    assert_eq!(at(json!("9999-12-31T23:59:59.999Z")), event::MAX_TIMESTAMP);
    for (bad, needle) in [
        (json!(-1), "1970-01-01"),
        (json!(253_402_300_800_000i64), "9999-12-31"),
        (json!(u64::MAX), "expected integer milliseconds"),
        (json!(1.5), "expected integer milliseconds"),
        (json!(1e300), "expected integer milliseconds"),
        (json!("1969-12-31T23:59:59.999Z"), "1970-01-01"),
        (json!("2023-02-29T00:00:00Z"), "does not exist"),
        (json!("2026-03-14 09:00:00Z"), "RFC 3339"),
        (json!("2026-03-14T09:00:00"), "RFC 3339"),
        (json!("1773478800000"), "RFC 3339"),
        (json!("yesterday"), "RFC 3339"),
    ] {
        assert_refused(&with("occurred_at", Some(bad)), "occurred_at", needle);
    }
}

#[test]
fn timestamp_text_form() {
    assert_eq!(
        event::format_rfc3339_millis(1_773_478_800_000),
        "2026-03-14T09:00:00.000Z"
    );
    assert_eq!(
        event::format_rfc3339_millis(1_709_164_800_007),
        "2024-02-29T00:00:00.007Z"
    );
    assert_eq!(
        event::parse_timestamp("2026-03-14T09:00:00.000Z"),
        Ok(1_773_478_800_000)
    );
    assert_eq!(
        event::parse_timestamp("1773478800000"),
        Ok(1_773_478_800_000)
    );
    assert!(event::parse_timestamp("14/03/2026").is_err());
}

// ---- context ----

fn context_of(v: Value) -> Result<Context, ValidationError> {
    Context::from_value(&v)
}

fn nested(depth: usize) -> Value {
    // `depth` levels counting the outer object.
    let mut v = json!({});
    for _ in 1..depth {
        v = json!({ "a": v });
    }
    v
}

#[test]
fn context_key_order_and_whitespace_do_not_matter() {
    let a: Value = serde_json::from_str(
        r#"{"b": [1, {"y": 2, "x": 1}], "a": "s", "c": {"q": null, "p": true}}"#,
    )
    .unwrap();
    let b: Value = serde_json::from_str(
        "{\n\"c\":{\"p\":true,\"q\":null},\t\"a\":\"s\",\"b\":[1,{\"x\":1,\"y\":2}]}",
    )
    .unwrap();
    let ca = context_of(a).unwrap();
    assert_eq!(ca, context_of(b).unwrap());
    assert_eq!(
        ca.as_str(),
        r#"{"a":"s","b":[1,{"x":1,"y":2}],"c":{"p":true,"q":null}}"#
    );
}

#[test]
fn context_depth_is_bounded() {
    assert!(context_of(nested(16)).is_ok());
    let e = context_of(nested(17)).unwrap_err();
    assert_eq!(e.field, format!("context{}", ".a".repeat(16)));
    assert!(e.problem.contains("16"), "{e}");
    // Arrays count too, and paths show array indexes.
    let mut v = json!([]);
    for _ in 2..16 {
        v = json!([v]);
    }
    assert!(context_of(json!({ "k": v.clone() })).is_ok());
    let e = context_of(json!({ "k": [v] })).unwrap_err();
    assert_eq!(e.field, format!("context.k{}", "[0]".repeat(15)));
    // Through a whole event, the path is the same.
    assert_refused(
        &with("context", Some(nested(17))),
        &format!("context{}", ".a".repeat(16)),
        "deeper",
    );
}

#[test]
fn context_size_is_bounded_in_canonical_bytes() {
    // {"k":"…"} is 8 bytes plus the string.
    let exact = json!({ "k": "x".repeat(MAX_CONTEXT_BYTES - 8) });
    assert_eq!(context_of(exact).unwrap().as_str().len(), MAX_CONTEXT_BYTES);
    let over = json!({ "k": "x".repeat(MAX_CONTEXT_BYTES - 7) });
    let e = context_of(over.clone()).unwrap_err();
    assert_eq!(e.field, "context");
    assert!(e.problem.contains("16385 bytes"), "{e}");
    assert_refused(&with("context", Some(over)), "context", "at most 16384");
    // Whitespace in the input does not count; escapes in the canonical form do.
    let escapes = json!({ "k": "\n".repeat(MAX_CONTEXT_BYTES / 2) });
    assert!(context_of(escapes).is_err());
}

#[test]
fn context_numbers_must_be_exact_doubles() {
    let max = 9_007_199_254_740_991i64;
    for ok in [
        json!(max),
        json!(-max),
        json!(0),
        json!(-0.0),
        json!(1.5),
        json!(1e-300),
        json!(9007199254740991.0),
    ] {
        assert!(context_of(json!({ "n": ok.clone() })).is_ok(), "{ok}");
    }
    for bad in [
        json!(max + 1),
        json!(-max - 1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e300),
        json!(9007199254740992.0),
    ] {
        let e = context_of(json!({ "deep": [0, { "n": bad.clone() }] })).unwrap_err();
        assert_eq!(e.field, "context.deep[1].n", "{bad}");
        assert!(e.problem.contains("as strings"), "{e}");
    }
    // Big integers written as text overflow serde_json's integers into doubles: refused too.
    let parsed: Value = serde_json::from_str(r#"{"n": 123456789012345678901234567890}"#).unwrap();
    assert!(context_of(parsed).is_err());
    assert_eq!(
        context_of(json!({"n": 1.0, "m": -0.0, "f": 0.1}))
            .unwrap()
            .as_str(),
        r#"{"f":0.1,"m":0,"n":1}"#
    );
}

#[test]
fn from_canonical_accepts_only_canonical_text() {
    let good = r#"{"a":[1,2.5,"x\n"],"b":{"c":null}}"#;
    assert_eq!(
        Context::from_canonical(good.to_owned()).unwrap().as_str(),
        good
    );
    assert_eq!(
        Context::from_canonical("{}".to_owned()).unwrap(),
        Context::empty()
    );
    for bad in [
        r#"{"b":1,"a":2}"#,          // member order
        r#"{"a": 1}"#,               // whitespace
        r#"{"a":1.0}"#,              // number form
        r#"{"a":1e2}"#,              // number form
        r#"{"a":"\u0041"}"#,         // needless escape
        r#"{"a":"\/"}"#,             // needless escape
        r#"{"a":1,"a":1}"#,          // duplicate member
        " {}",                       // leading whitespace
        "[]",                        // not an object
        "{",                         // not JSON
        r#"{"a":9007199254740993}"#, // not an exact double
    ] {
        let e = Context::from_canonical(bad.to_owned()).unwrap_err();
        assert!(e.field.starts_with("context"), "{bad}: {e}");
    }
}

// ---- stored event JSON ----

/// A version-1 entry (written before key ids were recorded).
fn stored() -> Event {
    let mut event = stored_v2();
    event.appended_by = None;
    event
}

/// The same event as a version-2 entry, appended by key `evk_0123456789ab`.
fn stored_v2() -> Event {
    Event::new(
        1,
        Uuid::parse_str("01234567-89ab-cdef-0123-456789abcdef").unwrap(),
        1_773_478_800_000,
        "n1".into(),
        "evk_0123456789ab".into(),
        EventInput::from_json(&json!({
            "occurred_at": "2026-03-14T08:59:59.500Z",
            "tenant": "acme",
            "actor": {"id": "alice", "kind": "user", "ip": "203.0.113.7", "user_agent": "curl/8"},
            "action": "config.threshold.changed",
            "target": {"kind": "node", "id": "nyc-edge-01"},
            "outcome": "success",
            "severity": "notice",
            "context": {"old": 5, "new": 7}
        }))
        .unwrap(),
    )
}

fn minimal_stored() -> Event {
    let input = EventInput::from_json(&json!({
        "actor": {"id": "svc", "kind": "system", "ip": "2001:db8::1"},
        "action": "key.rotated",
        "target": {"kind": "key", "id": "k1"},
        "outcome": "denied",
        "severity": "emerg"
    }))
    .unwrap();
    Event::new(
        u64::MAX,
        Uuid::nil(),
        0,
        "node-a".into(),
        "system".into(),
        input,
    )
}

#[test]
fn stored_json_has_one_fixed_form() {
    let text = serde_json::to_string(&stored()).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"seq":1,"id":"01234567-89ab-cdef-0123-456789abcdef","#,
            r#""recorded_at":"2026-03-14T09:00:00.000Z","occurred_at":"2026-03-14T08:59:59.500Z","#,
            r#""node_id":"n1","tenant":"acme","#,
            r#""actor":{"id":"alice","kind":"user","ip":"203.0.113.7","user_agent":"curl/8"},"#,
            r#""action":"config.threshold.changed","target":{"kind":"node","id":"nyc-edge-01"},"#,
            r#""outcome":"success","severity":"notice","context":{"new":7,"old":5}}"#
        )
    );
    let minimal = serde_json::to_string(&minimal_stored()).unwrap();
    assert_eq!(
        minimal,
        concat!(
            r#"{"seq":18446744073709551615,"id":"00000000-0000-0000-0000-000000000000","#,
            r#""recorded_at":"1970-01-01T00:00:00.000Z","occurred_at":null,"node_id":"node-a","#,
            r#""tenant":"default","actor":{"id":"svc","kind":"system","ip":"2001:db8::1","user_agent":null},"#,
            r#""action":"key.rotated","target":{"kind":"key","id":"k1"},"outcome":"denied","#,
            r#""severity":"emergency","context":{},"appended_by":"system"}"#
        )
    );
    // A version-2 entry carries every key; a version-1 entry all but `appended_by`, so its
    // JSON is what it always was.
    let v2 = serde_json::to_string(&stored_v2()).unwrap();
    assert_eq!(
        v2,
        text.replace(
            r#""context":{"new":7,"old":5}}"#,
            r#""context":{"new":7,"old":5},"appended_by":"evk_0123456789ab"}"#
        )
    );
    let keys_of = |text: &str| -> Vec<String> {
        serde_json::from_str::<serde_json::Map<String, Value>>(text)
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let mut expected: Vec<&str> = event::EVENT_JSON_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys_of(&v2), expected);
    expected.retain(|k| *k != event::APPENDED_BY_FIELD);
    assert_eq!(keys_of(&text), expected);
}

#[test]
fn appended_by_is_present_exactly_on_version_2_entries_and_never_null() {
    let good = serde_json::to_value(stored_v2()).unwrap();
    assert_eq!(Event::from_json(&good).unwrap(), stored_v2());
    assert_eq!(stored_v2().entry_version(), 2);
    assert_eq!(stored().entry_version(), 1);
    for bad in [
        json!(null),
        json!(""),
        json!(7),
        json!("evk 1"),
        json!("a".repeat(129)),
    ] {
        let mut doc = good.clone();
        doc["appended_by"] = bad.clone();
        let e = Event::from_json(&doc).unwrap_err();
        assert_eq!(e.field, "appended_by", "{bad}: {e}");
    }
}

#[test]
fn a_client_cannot_say_who_appended_an_event() {
    let mut doc = json!({
        "actor": {"id": "alice", "kind": "user"},
        "action": "auth.login",
        "target": {"kind": "node", "id": "n1"},
        "outcome": "success",
        "severity": "info"
    });
    assert!(EventInput::from_json(&doc).is_ok());
    for value in [json!("evk_0123456789ab"), json!(null), json!("system")] {
        doc["appended_by"] = value;
        let e = EventInput::from_json(&doc).unwrap_err();
        assert_eq!(e.field, "appended_by");
        assert!(e.problem.contains("set by the server"), "{e}");
    }
}

#[test]
fn the_evident_action_namespace_is_reserved() {
    for reserved in [
        "evident",
        "evident.x",
        "evident.key.created",
        "evident.integrity.damaged",
    ] {
        let e = event::refuse_reserved_action(reserved).unwrap_err();
        assert_eq!(e.field, "action");
        assert!(e.problem.contains("reserved"), "{e}");
    }
    for free in [
        "evidently.ok",
        "evidentx",
        "auth.evident",
        "x.evident.y",
        "eviden.t",
    ] {
        assert_eq!(event::refuse_reserved_action(free), Ok(()), "{free}");
    }
}

#[test]
fn stored_json_round_trips() {
    for ev in [stored(), stored_v2(), minimal_stored()] {
        let value = serde_json::to_value(&ev).unwrap();
        assert_eq!(Event::from_json(&value).unwrap(), ev);
        let text = serde_json::to_string(&ev).unwrap();
        let reparsed: Value = serde_json::from_str(&text).unwrap();
        let back = Event::from_json(&reparsed).unwrap();
        assert_eq!(back, ev);
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        assert_eq!(canonical::encode(&back), canonical::encode(&ev));
    }
}

#[test]
fn stored_json_is_parsed_strictly() {
    let good = serde_json::to_value(stored()).unwrap();
    let edit = |path: &str, value: Option<Value>| {
        let mut doc = good.clone();
        let (parent, key) = match path.split_once('.') {
            Some((p, k)) => (&mut doc[p], k),
            None => (&mut doc, path),
        };
        let obj = parent.as_object_mut().unwrap();
        match value {
            Some(v) => obj.insert(key.to_owned(), v),
            None => obj.remove(key),
        };
        let e = Event::from_json(&doc).unwrap_err();
        assert_eq!(e.field, path, "{e}");
    };
    edit("hash", Some(json!("00")));
    edit("actor.email", Some(json!("a@b")));
    edit("occurred_at", None);
    edit("actor.ip", None);
    edit("actor.user_agent", None);
    edit("seq", Some(json!(-1)));
    edit("seq", Some(json!("1")));
    edit("id", Some(json!("01234567-89AB-CDEF-0123-456789ABCDEF")));
    edit("id", Some(json!("0123456789abcdef0123456789abcdef")));
    edit("recorded_at", Some(json!("2026-03-14T09:00:00Z")));
    edit("recorded_at", Some(json!("2026-03-14T10:00:00.000+01:00")));
    edit("recorded_at", Some(json!(1_773_478_800_000i64)));
    edit("occurred_at", Some(json!("2026-03-14T08:59:59.5Z")));
    edit("node_id", Some(json!("n 1")));
    edit("tenant", Some(json!("")));
    edit("actor.ip", Some(json!("::ffff:203.0.113.7")));
    edit("actor.ip", Some(json!("2001:DB8::1")));
    edit("actor.ip", Some(json!("2001:db8:0::1")));
    edit("actor.user_agent", Some(json!("")));
    edit("action", Some(json!("Config")));
    edit("outcome", Some(json!("ok")));
    edit("severity", Some(json!("warn")));
    let mut doc = good.clone();
    doc["context"] = json!({"n": 9007199254740992u64});
    assert_eq!(Event::from_json(&doc).unwrap_err().field, "context.n");
    doc["context"] = json!([]);
    assert_eq!(Event::from_json(&doc).unwrap_err().field, "context");
    assert_eq!(Event::from_json(&json!([])).unwrap_err().field, "$");
}

// ---- canonical encoding ----

#[test]
fn canonical_bytes_are_pinned() {
    let expected = concat!(
        "65766964656e742f656e7472792f763100", // "evident/entry/v1" 0x00
        "0000000000000001",                   // seq 1
        "0123456789abcdef0123456789abcdef",   // id
        "0000019ceb92ea80",                   // recorded_at 1773478800000
        "01",
        "0000019ceb92e88c", // occurred_at present, 1773478799500
        "00000002",
        "6e31", // node_id "n1"
        "00000004",
        "61636d65", // tenant "acme"
        "00000005",
        "616c696365", // actor.id "alice"
        "00000004",
        "75736572", // actor.kind "user"
        "04",
        "cb007107", // actor.ip 203.0.113.7
        "01",
        "00000006",
        "6375726c2f38", // user_agent present, "curl/8"
        "00000018",
        "636f6e6669672e7468726573686f6c642e6368616e676564", // action
        "00000004",
        "6e6f6465", // target.kind "node"
        "0000000b",
        "6e79632d656467652d3031", // target.id "nyc-edge-01"
        "00000007",
        "73756363657373", // outcome "success"
        "00000006",
        "6e6f74696365", // severity "notice"
        "00000011",
        "7b226e6577223a372c226f6c64223a357d", // context {"new":7,"old":5}
    );
    let ev = stored();
    assert_eq!(hex::encode(canonical::encode(&ev)), expected);
    assert_eq!(canonical::encoded_len(&ev), expected.len() / 2);

    // Version 2: its own magic, the same fields, then who appended it.
    let v2 = format!(
        "{}{}{}",
        "65766964656e742f656e7472792f763200", // "evident/entry/v2" 0x00
        &expected[34..],
        concat!("00000010", "65766b5f303132333435363738396162"), // appended_by "evk_0123456789ab"
    );
    let ev = stored_v2();
    assert_eq!(hex::encode(canonical::encode(&ev)), v2);
    assert_eq!(canonical::encoded_len(&ev), v2.len() / 2);
}

#[test]
fn canonical_absent_fields_and_ipv6() {
    let ev = minimal_stored();
    let bytes = canonical::encode(&ev);
    assert_eq!(bytes.len(), canonical::encoded_len(&ev));
    let hex = hex::encode(&bytes);
    // occurred_at absent right after recorded_at.
    let after_magic = &hex[34..];
    assert!(after_magic.starts_with(concat!(
        "ffffffffffffffff",
        "00000000000000000000000000000000",
        "0000000000000000",
        "00"
    )));
    // IPv6 tag and bytes, then the absent user agent.
    assert!(
        hex.contains(concat!(
            "06",
            "20010db8000000000000000000000001",
            "00",
            "0000000b"
        )),
        "{hex}"
    );
}

#[test]
fn canonical_bytes_ignore_input_key_order_and_whitespace() {
    let shuffled = r#"
      { "context" : { "new" : 7 , "old" : 5 }, "severity": "notice", "outcome": "success",
        "target": {"id": "nyc-edge-01", "kind": "node"}, "action": "config.threshold.changed",
        "actor": {"user_agent": "curl/8", "ip": "::ffff:203.0.113.7", "kind": "user", "id": "alice"},
        "tenant": "acme", "occurred_at": "2026-03-14T09:59:59.5+01:00" }"#;
    let input = EventInput::from_json(&serde_json::from_str(shuffled).unwrap()).unwrap();
    let ev = Event::new(
        1,
        Uuid::parse_str("01234567-89ab-cdef-0123-456789abcdef").unwrap(),
        1_773_478_800_000,
        "n1".into(),
        "evk_0123456789ab".into(),
        input,
    );
    assert_eq!(canonical::encode(&ev), canonical::encode(&stored_v2()));
}

#[test]
fn every_field_changes_the_canonical_bytes() {
    let base = stored();
    let original = canonical::encode(&base);
    let mut variants: Vec<Event> = Vec::new();
    let mut push = |f: &dyn Fn(&mut Event)| {
        let mut e = base.clone();
        f(&mut e);
        variants.push(e);
    };
    push(&|e| e.seq = 2);
    push(&|e| e.id = Uuid::nil());
    push(&|e| e.recorded_at += 1);
    push(&|e| e.occurred_at = None);
    push(&|e| e.node_id = "n2".into());
    push(&|e| e.tenant = "acmf".into());
    push(&|e| e.actor.id = "alicf".into());
    push(&|e| e.actor.kind = ActorKind::System);
    push(&|e| e.actor.ip = None);
    push(&|e| e.actor.ip = Some("::ffff:203.0.113.7".parse().unwrap()));
    push(&|e| e.actor.user_agent = None);
    push(&|e| e.action = "config.threshold.changef".into());
    push(&|e| e.target.kind = "nodf".into());
    push(&|e| e.target.id = "nyc-edge-02".into());
    push(&|e| e.outcome = Outcome::Denied);
    push(&|e| e.severity = Severity::Warning);
    push(&|e| e.context = Context::empty());
    // Recording who appended it is a different encoding; so is every other appender.
    push(&|e| e.appended_by = Some("evk_0123456789ab".into()));
    push(&|e| e.appended_by = Some("evk_0123456789ac".into()));
    push(&|e| e.appended_by = Some("system".into()));
    // Moving bytes between adjacent strings must not collide either (length prefixes).
    push(&|e| {
        e.target.kind = "nodenyc".into();
        e.target.id = "-edge-01".into();
    });
    let mut seen = std::collections::HashSet::new();
    seen.insert(original);
    for v in &variants {
        assert!(seen.insert(canonical::encode(v)), "collision for {v:?}");
    }
}

#[test]
fn encode_into_appends() {
    let ev = stored();
    let mut buf = b"prefix".to_vec();
    canonical::encode_into(&ev, &mut buf);
    assert_eq!(&buf[..6], b"prefix");
    assert_eq!(&buf[6..], canonical::encode(&ev).as_slice());
}

// ---- chain ----

#[test]
fn recompute_hash_reuses_the_buffer() {
    let ev = stored();
    let mut buf = vec![0xffu8; 3];
    let h = chain::recompute_hash(&GENESIS_PREV_HASH, &ev, &mut buf);
    assert_eq!(buf, canonical::encode(&ev));
    assert_eq!(
        h,
        chain::entry_hash(&GENESIS_PREV_HASH, &canonical::encode(&ev))
    );
}

#[test]
fn chain_head_links_seals_and_grows_the_tree() {
    let key = SealKey::new(&[9u8; 32]).unwrap();
    let mut head = ChainHead::genesis();
    let mut nodes = Vec::new();
    let mut prev = GENESIS_PREV_HASH;
    for i in 0..5u64 {
        let input = stored();
        let entry = head.append(
            Uuid::from_u128(u128::from(i)),
            1_773_478_800_000 + i as i64,
            "n1",
            "evk_0123456789ab",
            EventInput {
                occurred_at: input.occurred_at,
                tenant: input.tenant,
                actor: input.actor,
                action: input.action,
                target: input.target,
                outcome: input.outcome,
                severity: input.severity,
                context: input.context,
            },
            &key,
            &mut nodes,
        );
        assert_eq!(entry.event.seq, i);
        assert_eq!(entry.event.node_id, "n1");
        assert_eq!(entry.event.appended_by.as_deref(), Some("evk_0123456789ab"));
        let mut buf = Vec::new();
        assert_eq!(
            entry.hash,
            chain::recompute_hash(&prev, &entry.event, &mut buf)
        );
        assert!(key.check(&entry.hash, &entry.seal));
        prev = entry.hash;
        assert_eq!(head.next_seq, i + 1);
        assert_eq!(head.last_hash, entry.hash);
        assert_eq!(head.tree.size(), i + 1);
    }
    // 5 leaves complete 5 leaf nodes, 2 level-1 nodes and 1 level-2 node.
    assert_eq!(nodes.len(), 8);
}

/// The IP text forms of docs/FORMAT.md §2: any RFC 4291 form in, one form out (RFC 5952 §4,
/// hexadecimal only, an IPv4-mapped address as its IPv4 address), and a stored event holding
/// any other form is refused.
#[test]
fn ip_addresses_have_one_text_form() {
    let stored_form = |client: &str| -> String {
        let input = accepted(&with("actor.ip", Some(json!(client))));
        let event = Event::new(0, Uuid::nil(), 0, "n1".into(), "system".into(), input);
        serde_json::to_value(&event).unwrap()["actor"]["ip"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (client, stored) in [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:0db8::0001", "2001:db8::1"),
        // The longest run of zero groups is compressed, the first of equal runs; one zero
        // group alone is not.
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
        ("1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("0:0:0:0:0:0:0:0", "::"),
        ("::1", "::1"),
        // IPv4-mapped: the IPv4 address, in either input notation.
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::FFFF:cb00:7107", "203.0.113.7"),
        ("::ffff:0:0", "0.0.0.0"),
        // Other IPv4-embedded forms stay IPv6, written in hexadecimal (no dotted quad).
        ("::203.0.113.7", "::cb00:7107"),
        ("64:ff9b::203.0.113.7", "64:ff9b::cb00:7107"),
    ] {
        assert_eq!(stored_form(client), stored, "{client}");
    }
    for bad in [
        "fe80::1%eth0",
        "[::1]",
        "01.2.3.4",
        "2001:db8::00001",
        "1.2.3",
    ] {
        assert_refused(
            &with("actor.ip", Some(json!(bad))),
            "actor.ip",
            "is not an IPv4 or IPv6 address",
        );
    }
    // A stored event holds only the output form.
    let good = serde_json::to_value(minimal_stored()).unwrap();
    for other in [
        "2001:DB8::1",
        "2001:db8:0:0:0:0:0:1",
        "::ffff:203.0.113.7",
        "::ffff:cb00:7107",
        "64:ff9b::203.0.113.7",
        "1:2:3:4:5:6:7::",
    ] {
        let mut doc = good.clone();
        doc["actor"]["ip"] = json!(other);
        let e = Event::from_json(&doc).unwrap_err();
        assert_eq!(e.field, "actor.ip", "{other}: {e}");
    }
}
