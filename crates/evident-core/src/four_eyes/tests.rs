//! The pairing of confirmed events with their confirmations: every status, the rejected
//! confirmations, and the property offline verification rests on (the entries a report
//! names give the same report).

use super::*;
use crate::chain::{ChainHead, SealKey};
use crate::event::EventInput;
use serde_json::json;

const MINUTE: i64 = 60_000;
const T0: Millis = 1_780_000_000_000;

fn rule(require_different_role: bool) -> FourEyesRule {
    FourEyesRule {
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
        within_ms: 60 * MINUTE as u64,
        require_different_role,
    }
}

/// A log built one event at a time, each `minutes` after T0.
struct Log {
    head: ChainHead,
    key: SealKey,
    entries: Vec<SealedEntry>,
}

impl Log {
    fn new() -> Log {
        Log {
            head: ChainHead::genesis(),
            key: SealKey::new(&[7u8; 32]).unwrap(),
            entries: Vec::new(),
        }
    }

    fn add(&mut self, minutes: i64, actor: &str, action: &str, context: Value) -> SealedEntry {
        let input = EventInput::from_json(&json!({
            "tenant": "default",
            "actor": {"id": actor, "kind": "user"},
            "action": action,
            "target": {"kind": "domain", "id": "example.org"},
            "outcome": "success",
            "severity": "notice",
            "context": context,
        }))
        .unwrap();
        let entry = self.head.append(
            uuid::Uuid::nil(),
            T0 + minutes * MINUTE,
            "node-1",
            "evk_0123456789ab",
            input,
            &self.key,
            &mut Vec::new(),
        );
        self.entries.push(entry.clone());
        entry
    }

    fn rotate(&mut self, minutes: i64, actor: &str, role: &str) -> SealedEntry {
        self.add(
            minutes,
            actor,
            "dkim.key.rotated",
            json!({"actor_role": role}),
        )
    }

    fn confirm(&mut self, minutes: i64, actor: &str, role: &str, of: &SealedEntry) -> SealedEntry {
        let confirms = json!({"seq": of.event.seq, "hash": of.hash.to_hex()});
        self.add(
            minutes,
            actor,
            "dkim.key.rotation_confirmed",
            json!({"confirms": confirms, "actor_role": role}),
        )
    }
}

fn scope(rule: FourEyesRule, from: Option<i64>, as_of_minutes: i64) -> ReportScope {
    ReportScope {
        rule,
        from: from.map(|m| format_rfc3339_millis(T0 + m * MINUTE)),
        to: None,
        as_of: format_rfc3339_millis(T0 + as_of_minutes * MINUTE),
        tenant: None,
    }
}

fn statuses(report: &FourEyesReport) -> Vec<(u64, PairStatus, Option<u64>)> {
    report
        .pairs
        .iter()
        .map(|p| {
            (
                p.confirmed.seq,
                p.status,
                p.confirmation.as_ref().map(|c| c.seq),
            )
        })
        .collect()
}

#[test]
fn every_status_of_a_rotation_and_the_best_confirmation_decides() {
    let mut log = Log::new();
    let confirmed = log.rotate(0, "alice", "dns-admin"); // 0
    let self_confirmed = log.rotate(1, "alice", "dns-admin"); // 1
    let late = log.rotate(2, "alice", "dns-admin"); // 2
    let overdue = log.rotate(3, "alice", "dns-admin"); // 3
    log.confirm(10, "bob", "security-admin", &confirmed); // 4
    log.confirm(11, "alice", "dns-admin", &self_confirmed); // 5
    log.confirm(2 + 61, "bob", "security-admin", &late); // 6: after the hour
    let pending = log.rotate(100, "carol", "dns-admin"); // 7
    // A self-confirmation, then a proper one: the proper one decides.
    let twice = log.rotate(101, "carol", "dns-admin"); // 8
    log.confirm(102, "carol", "dns-admin", &twice); // 9
    log.confirm(103, "dave", "security-admin", &twice); // 10
    let _ = (overdue, pending);

    let e = evaluate(&scope(rule(false), None, 120), &log.entries).unwrap();
    assert_eq!(
        statuses(&e.report),
        vec![
            (0, PairStatus::Confirmed, Some(4)),
            (1, PairStatus::SelfConfirmed, Some(5)),
            (2, PairStatus::Late, Some(6)),
            (3, PairStatus::Overdue, None),
            (7, PairStatus::Pending, None),
            (8, PairStatus::Confirmed, Some(10)),
        ]
    );
    let s = &e.report.summary;
    assert_eq!(
        (
            s.confirmed,
            s.self_confirmed,
            s.late,
            s.overdue,
            s.pending,
            s.rejected
        ),
        (2, 1, 1, 1, 1, 0)
    );
    assert_eq!(e.report.pairs[0].delay_ms, Some(10 * MINUTE));
    // Entry 9 (the superseded self-confirmation) decides nothing and is not named.
    assert_eq!(
        e.named.iter().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 10]
    );
}

#[test]
fn a_required_different_role_is_checked_from_the_context() {
    let mut log = Log::new();
    let same_role = log.rotate(0, "alice", "dns-admin");
    let no_role = log.add(1, "alice", "dkim.key.rotated", json!({}));
    let other_role = log.rotate(2, "alice", "dns-admin");
    log.confirm(5, "bob", "dns-admin", &same_role);
    log.confirm(5, "bob", "security-admin", &no_role);
    log.confirm(5, "bob", "security-admin", &other_role);
    let e = evaluate(&scope(rule(true), None, 30), &log.entries).unwrap();
    let got: Vec<PairStatus> = e.report.pairs.iter().map(|p| p.status).collect();
    assert_eq!(
        got,
        vec![
            PairStatus::WrongRole,
            PairStatus::WrongRole,
            PairStatus::Confirmed
        ]
    );
    // Without the requirement, roles do not matter.
    let e = evaluate(&scope(rule(false), None, 30), &log.entries).unwrap();
    assert!(
        e.report
            .pairs
            .iter()
            .all(|p| p.status == PairStatus::Confirmed)
    );
}

#[test]
fn confirmations_that_confirm_nothing_are_reported_with_their_reason() {
    let mut log = Log::new();
    let rotated = log.rotate(0, "alice", "dns-admin"); // 0
    let unrelated = log.add(1, "alice", "dns.zone.changed", json!({})); // 1
    // A wrong hash: the seq of the rotation with the hash of another entry.
    let wrong = json!({"confirms": {"seq": 0, "hash": unrelated.hash.to_hex()}});
    log.add(2, "bob", "dkim.key.rotation_confirmed", wrong); // 2
    log.add(3, "bob", "dkim.key.rotation_confirmed", json!({})); // 3
    let malformed = json!({"confirms": {"seq": "0"}});
    log.add(4, "bob", "dkim.key.rotation_confirmed", malformed); // 4
    log.confirm(5, "bob", "security-admin", &unrelated); // 5
    let ahead = json!({"confirms": {"seq": 99, "hash": rotated.hash.to_hex()}});
    log.add(6, "bob", "dkim.key.rotation_confirmed", ahead); // 6

    let e = evaluate(&scope(rule(false), None, 30), &log.entries).unwrap();
    assert_eq!(statuses(&e.report), vec![(0, PairStatus::Pending, None)]);
    let reasons: Vec<(u64, RejectReason, Option<u64>)> = e
        .report
        .rejected
        .iter()
        .map(|r| (r.confirmation.seq, r.reason, r.references))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (2, RejectReason::HashMismatch, Some(0)),
            (3, RejectReason::MissingReference, None),
            (4, RejectReason::MalformedReference, None),
            (5, RejectReason::NotConfirmable, Some(1)),
            (6, RejectReason::UnknownEvent, Some(99)),
        ]
    );
    assert!(
        e.report.rejected[0]
            .problem
            .contains(&rotated.hash.to_hex())
    );
    assert_eq!(e.report.summary.rejected, 5);
    assert_eq!(
        e.named.iter().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5, 6]
    );
}

#[test]
fn the_entries_a_report_names_give_the_same_report() {
    let mut log = Log::new();
    // Before the window: confirmed inside it, and a wrong-hash confirmation of it.
    let before = log.rotate(0, "alice", "dns-admin");
    let other = log.add(1, "alice", "dns.zone.changed", json!({}));
    let a = log.rotate(20, "alice", "dns-admin");
    let b = log.rotate(21, "alice", "dns-admin");
    log.confirm(22, "bob", "security-admin", &before);
    let wrong = json!({"confirms": {"seq": before.event.seq, "hash": other.hash.to_hex()}});
    log.add(23, "bob", "dkim.key.rotation_confirmed", wrong);
    log.confirm(24, "alice", "dns-admin", &a);
    log.confirm(25, "carol", "security-admin", &a);
    log.confirm(26, "alice", "dns-admin", &b);
    log.confirm(27, "bob", "security-admin", &other);
    log.add(
        28,
        "bob",
        "dkim.key.rotation_confirmed",
        json!({"note": "x"}),
    );
    log.add(29, "bob", "auth.login", json!({}));

    let scope = scope(rule(false), Some(10), 200);
    let full = evaluate(&scope, &log.entries).unwrap();
    assert_eq!(
        statuses(&full.report),
        vec![
            (2, PairStatus::Confirmed, Some(7)),
            (3, PairStatus::SelfConfirmed, Some(8))
        ]
    );
    let named: Vec<SealedEntry> = log
        .entries
        .iter()
        .filter(|e| full.named.contains(&e.event.seq))
        .cloned()
        .collect();
    let again = evaluate(&scope, &named).unwrap();
    assert_eq!(again, full);
    // Leaving out a named entry changes the report: nothing a report says rests on an entry
    // it does not carry.
    for left_out in &full.named {
        let fewer: Vec<SealedEntry> = named
            .iter()
            .filter(|e| e.event.seq != *left_out)
            .cloned()
            .collect();
        assert_ne!(
            evaluate(&scope, &fewer).unwrap().report,
            full.report,
            "without entry {left_out}"
        );
    }
}

#[test]
fn a_tenant_scoped_report_sees_only_its_tenant_and_a_cross_tenant_confirmation_counts_for_nothing()
{
    let mut log = Log::new();
    let a = log.rotate(0, "alice", "dns-admin");
    // A confirmation from another tenant.
    let confirms = json!({"seq": a.event.seq, "hash": a.hash.to_hex()});
    let cross = EventInput::from_json(&json!({
        "tenant": "acme",
        "actor": {"id": "bob", "kind": "user"},
        "action": "dkim.key.rotation_confirmed",
        "target": {"kind": "domain", "id": "example.org"},
        "outcome": "success", "severity": "notice",
        "context": {"confirms": confirms},
    }))
    .unwrap();
    let entry = log.head.append(
        uuid::Uuid::nil(),
        T0 + MINUTE,
        "node-1",
        "system",
        cross,
        &log.key,
        &mut Vec::new(),
    );
    log.entries.push(entry);
    let all = evaluate(&scope(rule(false), None, 5), &log.entries).unwrap();
    assert_eq!(statuses(&all.report), vec![(0, PairStatus::Pending, None)]);
    assert_eq!(all.report.rejected[0].reason, RejectReason::OtherTenant);
    let mut acme = scope(rule(false), None, 5);
    acme.tenant = Some("acme".to_owned());
    let acme = evaluate(&acme, &log.entries).unwrap();
    assert!(acme.report.pairs.is_empty() && acme.report.rejected.is_empty());
}

#[test]
fn rules_are_checked_field_by_field_and_prefixes_match_below_themselves() {
    let mut r = rule(false);
    r.check().unwrap();
    r.name = "Bad Name".to_owned();
    assert_eq!(r.check().unwrap_err().field, "name");
    r = rule(false);
    r.within_ms = 0;
    assert_eq!(r.check().unwrap_err().field, "within");
    r = rule(false);
    r.confirmed.action = "dkim..x".to_owned();
    assert_eq!(r.check().unwrap_err().field, "confirmed.action");
    r = rule(false);
    r.confirmation = r.confirmed.clone();
    assert_eq!(r.check().unwrap_err().field, "confirmation");

    let mut log = Log::new();
    let matcher = EventMatcher {
        action: "dkim.key.*".to_owned(),
        tenant: None,
        outcome: None,
    };
    for (action, expected) in [
        ("dkim.key", true),
        ("dkim.key.rotated", true),
        ("dkim.keys", false),
        ("dkim", false),
    ] {
        let e = log.add(0, "alice", action, json!({}));
        assert_eq!(matcher.matches(&e.event), expected, "{action}");
    }
    r = rule(false);
    r.confirmed.action = "dkim.key.*".to_owned();
    r.check().unwrap();
    // An event matching both sides is a confirmation.
    let c = log.add(0, "bob", "dkim.key.rotation_confirmed", json!({}));
    assert!(r.is_confirmation_kind(&c.event) && !r.is_confirmed_kind(&c.event));
}
