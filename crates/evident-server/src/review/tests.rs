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
