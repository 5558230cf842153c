//! The `[[four_eyes]]` tables: parsed from TOML, checked with a message naming the rule and
//! the field, and durations in their units.

use super::*;
use crate::ServerConfig;

const DKIM: &str = r#"
[[four_eyes]]
name = "dkim-rotation"
within = "24h"
require_different_role = true
confirmed = { action = "dkim.key.rotated" }
confirmation = { action = "dkim.key.rotation_confirmed", outcome = "success" }
"#;

#[test]
fn a_four_eyes_table_becomes_a_checked_rule() {
    let config = ServerConfig::from_toml_str(DKIM).unwrap();
    config.validate().unwrap();
    let rules = rules(&config.four_eyes).unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].name, "dkim-rotation");
    assert_eq!(rules[0].within_ms, 86_400_000);
    assert!(rules[0].require_different_role);
    assert_eq!(
        rules[0].confirmation.outcome,
        Some(evident_core::Outcome::Success)
    );
    assert!(ServerConfig::default().four_eyes.is_empty());
}

#[test]
fn a_bad_rule_is_refused_naming_the_rule_and_the_field() {
    for (change, field) in [
        (("24h", "soon"), "within"),
        (("24h", "0s"), "within"),
        (("dkim.key.rotated", "Dkim Key"), "confirmed.action"),
        (("dkim-rotation", "DKIM rotation"), "name"),
    ] {
        let text = DKIM.replace(change.0, change.1);
        let config = ServerConfig::from_toml_str(&text).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("four_eyes") && err.contains(field),
            "{change:?}: {err}"
        );
    }
    let twice = format!("{DKIM}{DKIM}");
    let err = ServerConfig::from_toml_str(&twice)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("another [[four_eyes]] rule"), "{err}");
    let err = ServerConfig::from_toml_str(&DKIM.replace("within", "whithin")).unwrap_err();
    assert!(err.contains("whithin"), "{err}");
}

#[test]
fn durations_take_a_unit() {
    assert_eq!(parse_duration_ms("90s"), Ok(90_000));
    assert_eq!(parse_duration_ms("30m"), Ok(1_800_000));
    assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
    assert_eq!(parse_duration_ms("250ms"), Ok(250));
    assert!(parse_duration_ms("24").is_err());
    assert!(parse_duration_ms("h").is_err());
}

mod overdue {
    //! The overdue checker against a real node: a self-confirmation leaves the event waiting, a
    //! proper one ends the wait, and the alert is appended once, also when the state that says
    //! so was lost in a crash.

    use crate::consumers::{Consumer, ConsumerContext};
    use crate::http::AppState;
    use crate::review::{OVERDUE_ACTION, OverdueChecker};
    use crate::test_support::{faulty_node, test_config};
    use evident_core::four_eyes::{EventMatcher, FourEyesRule};
    use evident_core::{EventInput, SealedEntry};
    use evident_store::{ActionFilter, Filter, Order};
    use serde_json::json;
    use std::ops::ControlFlow;

    fn event(actor: &str, action: &str, context: serde_json::Value) -> EventInput {
        EventInput::from_json(&json!({
            "actor": {"id": actor, "kind": "user"},
            "action": action,
            "target": {"kind": "domain", "id": "example.org"},
            "outcome": "success", "severity": "notice",
            "context": context,
        }))
        .unwrap()
    }

    fn entries(state: &AppState, filter: Filter) -> Vec<SealedEntry> {
        let mut out = Vec::new();
        state
            .store()
            .scan(&filter, Order::Ascending, None, None, &mut |e| {
                out.push(e);
                ControlFlow::Continue(())
            })
            .unwrap();
        out
    }

    fn alerts(state: &AppState) -> Vec<SealedEntry> {
        entries(
            state,
            Filter {
                action: Some(ActionFilter::Exact(OVERDUE_ACTION.to_owned())),
                ..Filter::default()
            },
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_overdue_event_is_alerted_once_even_when_the_state_saying_so_was_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, _) = faulty_node(test_config(tmp.path()));
        let state = AppState::new(node);
        let ctx = ConsumerContext::new(state.clone());
        let rule = FourEyesRule {
            name: "dkim-rotation".to_owned(),
            confirmed: EventMatcher {
                action: "dkim.key.rotated".to_owned(),
                tenant: None,
                outcome: None,
            },
            confirmation: EventMatcher {
                action: "dkim.key.rotation_confirmed".to_owned(),
                tenant: None,
                outcome: None,
            },
            within_ms: 1_000,
            require_different_role: false,
        };
        let sequencer = state.node().sequencer();
        let rotated = sequencer
            .append(vec![
                event("alice", "dkim.key.rotated", json!({})),
                event("alice", "dkim.key.rotated", json!({})),
            ])
            .await
            .unwrap();
        let confirms = |i: usize| json!({"confirms": {"seq": rotated[i].seq, "hash": rotated[i].hash.to_hex()}});
        sequencer
            .append(vec![
                event("alice", "dkim.key.rotation_confirmed", confirms(0)),
                event("bob", "dkim.key.rotation_confirmed", confirms(1)),
            ])
            .await
            .unwrap();
        let log = entries(&state, Filter::default());
        assert_eq!(log.len(), 4);

        let mut checker = OverdueChecker::new(rule.clone());
        checker.restore(None).unwrap();
        assert_eq!(checker.deliver(&ctx, &log).await.unwrap(), 4);
        // The state saved with the cursor before the alert.
        let before = checker.save_state();
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        checker.tick(&ctx).await.unwrap();
        checker.tick(&ctx).await.unwrap();
        let alerted = alerts(&state);
        assert_eq!(alerted.len(), 1, "only the self-confirmed rotation");
        let context: serde_json::Value =
            serde_json::from_str(alerted[0].event.context.as_str()).unwrap();
        assert_eq!(context["seq"], rotated[0].seq);
        assert_eq!(context["hash"], rotated[0].hash.to_hex());
        assert_eq!(context["rule"], "dkim-rotation");
        assert_eq!(alerted[0].event.severity.as_str(), "critical");

        // A crash after the append, before the state was saved: the old state comes back and
        // the alert itself is the next entry delivered, past the deadline. It is not sent again.
        let mut restarted = OverdueChecker::new(rule);
        restarted.restore(before.as_deref()).unwrap();
        assert_eq!(restarted.deliver(&ctx, &alerted).await.unwrap(), 1);
        restarted.tick(&ctx).await.unwrap();
        assert_eq!(alerts(&state).len(), 1);
    }
}
