//! Rule matching, threshold windows and the stored API rules.

use super::*;
use evident_core::Event;
use evident_core::event::{Outcome, Severity};

fn event(seq: u64, at: i64, action: &str, actor: &str, ip: &str, severity: &str) -> Event {
    Event::from_json(&serde_json::json!({
        "seq": seq,
        "id": "01890a5d-ac96-774b-bcce-b302099a8057",
        "recorded_at": evident_core::event::format_rfc3339_millis(at),
        "node_id": "node-1",
        "occurred_at": null,
        "tenant": "default",
        "actor": {"id": actor, "kind": "user", "ip": ip, "user_agent": null},
        "action": action,
        "target": {"kind": "account", "id": "a"},
        "outcome": "failure",
        "severity": severity,
        "context": {},
        "appended_by": "system",
    }))
    .unwrap()
}

#[test]
fn rules_match_on_every_condition() {
    let e = event(0, 1_000, "auth.login", "alice", "10.0.0.1", "warning");
    let rule = |r: Rule| Rule {
        name: "r".into(),
        ..r
    };
    assert!(rule(Rule::default()).matches(&e));
    assert!(
        rule(Rule {
            action: Some("auth.login".into()),
            ..Rule::default()
        })
        .matches(&e)
    );
    assert!(
        !rule(Rule {
            action: Some("auth".into()),
            ..Rule::default()
        })
        .matches(&e)
    );
    assert!(
        rule(Rule {
            action_prefix: Some("auth.".into()),
            ..Rule::default()
        })
        .matches(&e)
    );
    assert!(
        !rule(Rule {
            action_prefix: Some("key.".into()),
            ..Rule::default()
        })
        .matches(&e)
    );
    assert!(
        rule(Rule {
            min_severity: Some(Severity::Warning),
            ..Rule::default()
        })
        .matches(&e)
    );
    assert!(
        !rule(Rule {
            min_severity: Some(Severity::Error),
            ..Rule::default()
        })
        .matches(&e)
    );
    assert!(
        rule(Rule {
            outcome: Some(Outcome::Failure),
            ..Rule::default()
        })
        .matches(&e)
    );
    assert!(
        !rule(Rule {
            outcome: Some(Outcome::Success),
            ..Rule::default()
        })
        .matches(&e)
    );
    assert!(
        rule(Rule {
            tenant: Some("default".into()),
            ..Rule::default()
        })
        .matches(&e)
    );
    assert!(
        !rule(Rule {
            tenant: Some("acme".into()),
            ..Rule::default()
        })
        .matches(&e)
    );
    assert!(
        rule(Rule {
            actor: Some("alice".into()),
            ..Rule::default()
        })
        .matches(&e)
    );
    assert!(
        !rule(Rule {
            actor: Some("bob".into()),
            ..Rule::default()
        })
        .matches(&e)
    );
    // Built-in: CRITICAL and above; integrity findings first.
    let builtin = builtin_rules();
    let critical = event(1, 1_000, "canary.tripped", "x", "10.0.0.1", "critical");
    let emergency = event(2, 1_000, "x", "x", "10.0.0.1", "emergency");
    let integrity = event(
        3,
        1_000,
        "evident.integrity.damage_found",
        "evident",
        "10.0.0.1",
        "critical",
    );
    let first = |e: &Event| {
        builtin
            .iter()
            .find(|r| r.matches(e))
            .map(|r| r.name.clone())
    };
    assert_eq!(first(&critical).as_deref(), Some(BUILTIN_CRITICAL));
    assert_eq!(first(&emergency).as_deref(), Some(BUILTIN_CRITICAL));
    assert_eq!(first(&integrity).as_deref(), Some(BUILTIN_INTEGRITY));
    assert_eq!(first(&e), None);
    let lag = event(
        4,
        1_000,
        crate::consumers::LAGGING_ACTION,
        "evident",
        "10.0.0.1",
        "warning",
    );
    assert_eq!(first(&lag).as_deref(), Some(BUILTIN_CONSUMER_LAG));
    let overdue = event(
        5,
        1_000,
        FOUR_EYES_OVERDUE_ACTION,
        "evident",
        "10.0.0.1",
        "warning",
    );
    assert_eq!(first(&overdue).as_deref(), Some(BUILTIN_FOUR_EYES));
}

#[test]
fn a_threshold_fires_once_per_window_per_key() {
    let rule = Rule {
        name: "logins".into(),
        threshold: Some(Threshold {
            count: 3,
            within_ms: 60_000,
            per: GroupBy::Actor,
        }),
        ..Rule::default()
    };
    let mut w = Windows::default();
    let at = |seq, t, actor| event(seq, t, "auth.login", actor, "10.0.0.1", "info");
    assert!(w.observe(&rule, &at(0, 0, "alice")).is_none());
    assert!(w.observe(&rule, &at(1, 1_000, "bob")).is_none());
    assert!(w.observe(&rule, &at(2, 2_000, "alice")).is_none());
    let fired = w.observe(&rule, &at(3, 3_000, "alice")).unwrap();
    assert_eq!(fired.seq, 3);
    assert_eq!(fired.window.as_ref().unwrap().seqs, vec![0, 2, 3]);
    assert_eq!(fired.window.as_ref().unwrap().key, "alice");
    // More in the same window: no second alert.
    assert!(w.observe(&rule, &at(4, 4_000, "alice")).is_none());
    assert!(w.observe(&rule, &at(5, 59_000, "alice")).is_none());
    // The state survives a round trip through the cursor's JSON.
    let mut w: Windows = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
    assert!(w.observe(&rule, &at(6, 59_500, "alice")).is_none());
    // A new window after T: fires again at its third event.
    assert!(w.observe(&rule, &at(7, 61_000, "alice")).is_none());
    assert!(w.observe(&rule, &at(8, 62_000, "alice")).is_none());
    assert_eq!(w.observe(&rule, &at(9, 63_000, "alice")).unwrap().seq, 9);
    // Without a threshold every match fires.
    let plain = Rule {
        name: "p".into(),
        ..Rule::default()
    };
    assert!(w.observe(&plain, &at(10, 0, "x")).is_some());
    assert!(w.observe(&plain, &at(11, 0, "x")).is_some());
}

#[test]
fn an_undone_observation_leaves_the_windows_as_they_were() {
    let rule = |name: &str, count| Rule {
        name: name.into(),
        threshold: Some(Threshold {
            count,
            within_ms: 60_000,
            per: GroupBy::Actor,
        }),
        ..Rule::default()
    };
    let (two, three) = (rule("two", 2), rule("three", 3));
    let at = |seq, t, actor| event(seq, t, "auth.login", actor, "10.0.0.1", "info");
    let mut w = Windows::default();
    assert!(w.observe(&two, &at(0, 0, "alice")).is_none());
    assert!(w.observe(&three, &at(0, 0, "alice")).is_none());
    let before = w.clone();
    // One entry counted under both rules: "two" fires for alice, "three" opens bob's window.
    let mut undo = Undo::default();
    assert!(
        w.observe_undoable(&two, &at(1, 1_000, "alice"), &mut undo)
            .is_some()
    );
    assert!(
        w.observe_undoable(&three, &at(1, 1_000, "bob"), &mut undo)
            .is_none()
    );
    assert_ne!(w, before);
    w.undo(undo);
    assert_eq!(w, before);
    // Seen again after the undo, the entry fires as it did the first time.
    let fired = w.observe(&two, &at(1, 1_000, "alice")).unwrap();
    assert_eq!(fired.window.unwrap().seqs, vec![0, 1]);
    // A rule with no window before: undone, it leaves no empty map behind either.
    let mut fresh = Windows::default();
    let mut undo = Undo::default();
    fresh.observe_undoable(&three, &at(2, 0, "carol"), &mut undo);
    fresh.undo(undo);
    assert_eq!(fresh, Windows::default());
}

#[test]
fn bad_rules_are_refused_naming_the_field() {
    let bad = |r: Rule| r.validate().unwrap_err().field;
    assert_eq!(bad(Rule::default()), "name");
    assert_eq!(
        bad(Rule {
            name: "a b".into(),
            ..Rule::default()
        }),
        "name"
    );
    assert_eq!(
        bad(Rule {
            name: "a".into(),
            action_prefix: Some(String::new()),
            ..Rule::default()
        }),
        "action_prefix"
    );
    assert_eq!(
        bad(Rule {
            name: "a".into(),
            threshold: Some(Threshold {
                count: 0,
                within_ms: 1,
                per: GroupBy::Ip
            }),
            ..Rule::default()
        }),
        "threshold.count"
    );
    let config = AlertsConfig {
        rules: vec![Rule {
            name: "builtin.x".into(),
            ..Rule::default()
        }],
        ..AlertsConfig::default()
    };
    assert_eq!(config.validate().unwrap_err().field, "alerts.rules[0].name");
    // From TOML: unknown keys are refused.
    let err =
        crate::ServerConfig::from_toml_str("[[alerts.rules]]\nname = \"a\"\nactoin = \"x\"\n")
            .unwrap_err();
    assert!(err.contains("actoin"), "{err}");
    let ok = crate::ServerConfig::from_toml_str(
        "[[alerts.rules]]\nname = \"a\"\naction_prefix = \"auth.\"\nmin_severity = \"warning\"\nthreshold = { count = 5, within_ms = 60000, per = \"actor\" }\n",
    )
    .unwrap();
    assert_eq!(ok.alerts.rules[0].threshold.unwrap().count, 5);
    // JSON Schema's integers include 5.0; fractions, negatives and huge windows are refused.
    let rule: Rule = serde_json::from_str(
        r#"{"name":"a","threshold":{"count":5.0,"within_ms":60000,"per":"ip"}}"#,
    )
    .unwrap();
    assert_eq!(rule.threshold.unwrap().count, 5);
    for bad in [
        r#"{"name":"a","threshold":{"count":5.5,"within_ms":1,"per":"ip"}}"#,
        r#"{"name":"a","threshold":{"count":-1,"within_ms":1,"per":"ip"}}"#,
        r#"{"name":"a","threshold":{"count":4294967296,"within_ms":1,"per":"ip"}}"#,
    ] {
        assert!(serde_json::from_str::<Rule>(bad).is_err(), "{bad}");
    }
    let huge: Rule = serde_json::from_str(
        r#"{"name":"a","threshold":{"count":1,"within_ms":9223372036854775808,"per":"ip"}}"#,
    )
    .unwrap();
    assert_eq!(huge.validate().unwrap_err().field, "threshold.within_ms");
}

#[test]
fn api_rules_are_stored_privately_and_reloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let config = AlertsConfig {
        rules: vec![Rule {
            name: "from-config".into(),
            ..Rule::default()
        }],
        ..AlertsConfig::default()
    };
    let set = RuleSet::open(&config, tmp.path()).unwrap();
    set.add(Rule {
        name: "made".into(),
        actor: Some("alice".into()),
        ..Rule::default()
    })
    .unwrap();
    assert!(matches!(
        set.add(Rule {
            name: "made".into(),
            ..Rule::default()
        }),
        Err(RulesError::Exists(_))
    ));
    assert!(matches!(
        set.add(Rule {
            name: "from-config".into(),
            ..Rule::default()
        }),
        Err(RulesError::Exists(_))
    ));
    assert!(matches!(
        set.delete("from-config"),
        Err(RulesError::NotDeletable { .. })
    ));
    assert!(matches!(
        set.delete(BUILTIN_CRITICAL),
        Err(RulesError::NotDeletable { .. })
    ));
    assert!(matches!(set.delete("nope"), Err(RulesError::NotFound(_))));
    assert!(matches!(
        set.add(Rule {
            name: "builtin.mine".into(),
            ..Rule::default()
        }),
        Err(RulesError::Reserved(_))
    ));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(rules_file(tmp.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = RuleSet::open(&config, tmp.path()).unwrap();
    let names: Vec<String> = again.user_rules().iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["from-config", "made"]);
    again.delete("made").unwrap();
    assert_eq!(
        RuleSet::open(&config, tmp.path())
            .unwrap()
            .user_rules()
            .len(),
        1
    );
    std::fs::write(rules_file(tmp.path()), "{not json").unwrap();
    assert!(matches!(
        RuleSet::open(&config, tmp.path()),
        Err(RulesError::File { .. })
    ));
}
