//! End to end, through the real binary: four-eyes rules on DKIM key rotations
//! (`dkim.key.rotated` confirmed by `dkim.key.rotation_confirmed`, the confirmation naming the
//! rotation by seq and hash in `context.confirms`). Confirmed, self-confirmed, unconfirmed,
//! late and wrong-role rotations and a wrong-hash confirmation are reported as such by the API
//! and the CLI; an unconfirmed rotation past its deadline gets exactly one overdue alert
//! event, also across a SIGKILL and restart; the signed report bundle verifies offline with
//! `evident verify --export`, and a tampered one fails, even one re-signed with the node's key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Api, Node, Server, create_key, run};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[[four_eyes]]
name = "dkim-rotation"
within = "3s"
confirmed = { action = "dkim.key.rotated" }
confirmation = { action = "dkim.key.rotation_confirmed" }

[[four_eyes]]
name = "dkim-roles"
within = "1h"
require_different_role = true
confirmed = { action = "dkim.key.rotated" }
confirmation = { action = "dkim.key.rotation_confirmed" }
"#;

const OVERDUE: &str = "evident.review.four_eyes_overdue";

fn rotation(actor: &str, role: &str, domain: &str) -> Value {
    json!({
        "actor": {"id": actor, "kind": "user"},
        "action": "dkim.key.rotated",
        "target": {"kind": "domain", "id": domain},
        "outcome": "success", "severity": "notice",
        "context": {"actor_role": role, "selector": "s2026"},
    })
}

fn confirmation(actor: &str, role: &str, seq: u64, hash: &str) -> Value {
    json!({
        "actor": {"id": actor, "kind": "user"},
        "action": "dkim.key.rotation_confirmed",
        "target": {"kind": "domain", "id": "example.org"},
        "outcome": "success", "severity": "notice",
        "context": {"actor_role": role, "confirms": {"seq": seq, "hash": hash}},
    })
}

/// The overdue alerts in the log: (seq named, the alert event).
fn overdue_alerts(api: &Api) -> Vec<(u64, Value)> {
    let answer = api.get(&format!(
        "/api/v1/audit-log?action={OVERDUE}&order=asc&limit=1000"
    ));
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["context"]["seq"].as_u64().unwrap(), e.clone()))
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until both four-eyes consumers have seen every committed entry.
fn wait_caught_up(api: &Api) {
    wait_until("the four-eyes consumers caught up", || {
        let size = api.size() as u64;
        let answer = api.get("/api/v1/consumers");
        let all = answer.json();
        let ours: Vec<&Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == "four_eyes")
            .collect();
        ours.len() == 2 && ours.iter().all(|c| c["next_seq"].as_u64() == Some(size))
    });
}

fn statuses(report: &Value) -> Vec<(u64, String, Option<u64>)> {
    report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["confirmed"]["seq"].as_u64().unwrap(),
                p["status"].as_str().unwrap().to_owned(),
                p["confirmation"]["seq"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn rotations_are_paired_alerted_once_and_the_signed_report_verifies_offline() {
    let node = Node::new();
    let config = node.file("evident.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut server = Server::start_with(
        &node.dir,
        &[],
        &["--config", config.to_str().unwrap()],
        None,
    );
    let api = server.api(&node.owner_key);

    // Five rotations by alice, then their confirmations (naming each by seq and hash).
    let rotated = api
        .append(&json!([
            rotation("alice", "dns-admin", "a.example"), // confirmed by bob
            rotation("alice", "dns-admin", "b.example"), // confirmed by alice herself
            rotation("alice", "dns-admin", "c.example"), // a confirmation with a wrong hash
            rotation("alice", "dns-admin", "d.example"), // confirmed too late
            rotation("alice", "dns-admin", "e.example"), // confirmed by the same role
        ]))
        .unwrap();
    let [r1, r2, r3, r4, r5] = [0, 1, 2, 3, 4].map(|i| rotated[i].clone());
    let confirmations = api
        .append(&json!([
            confirmation("bob", "security-admin", r1.0, &r1.1),
            confirmation("alice", "dns-admin", r2.0, &r2.1),
            confirmation("bob", "security-admin", r3.0, &r1.1),
            confirmation("carol", "dns-admin", r5.0, &r5.1),
        ]))
        .unwrap();
    let wrong_hash = confirmations[2].0;

    // Past the 3 s deadline, the rotations without a proper confirmation are alerted.
    wait_until("three overdue alerts", || overdue_alerts(&api).len() >= 3);
    let late = api
        .append(&confirmation("bob", "security-admin", r4.0, &r4.1))
        .unwrap()[0]
        .0;

    // Exactly once, also after a SIGKILL and a restart with the consumers' saved state.
    server.kill();
    server.restart();
    let api = server.api(&node.owner_key);
    api.append(&common::event("alice", "auth.login")).unwrap();
    wait_caught_up(&api);
    let alerts = overdue_alerts(&api);
    let mut alerted: Vec<u64> = alerts.iter().map(|(seq, _)| *seq).collect();
    alerted.sort_unstable();
    assert_eq!(alerted, vec![r2.0, r3.0, r4.0], "{alerts:?}");
    for (seq, alert) in &alerts {
        assert_eq!(alert["severity"], "critical");
        assert_eq!(alert["context"]["rule"], "dkim-rotation");
        let hash = [&r2, &r3, &r4]
            .iter()
            .find(|r| r.0 == *seq)
            .unwrap()
            .1
            .clone();
        assert_eq!(alert["context"]["hash"], hash.as_str());
    }
    let consumers = api.get("/api/v1/consumers").json();
    assert!(
        consumers
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "four_eyes" && c["name"] == "dkim-roles"),
        "{consumers}"
    );

    // The report, over the API, for an auditor (a readonly key).
    let auditor = create_key(&node.dir, "readonly", &[]);
    let answer = server
        .api(&auditor)
        .get("/api/v1/reviews/four-eyes?rule=dkim-rotation");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let report = answer.json();
    assert_eq!(
        statuses(&report),
        vec![
            (r1.0, "confirmed".to_owned(), Some(confirmations[0].0)),
            (r2.0, "self_confirmed".to_owned(), Some(confirmations[1].0)),
            (r3.0, "overdue".to_owned(), None),
            (r4.0, "late".to_owned(), Some(late)),
            (r5.0, "confirmed".to_owned(), Some(confirmations[3].0)),
        ]
    );
    assert_eq!(report["rejected"][0]["reason"], "hash_mismatch");
    assert_eq!(report["rejected"][0]["confirmation"]["seq"], wrong_hash);
    assert_eq!(report["rejected"][0]["references"], r3.0);
    assert_eq!(report["summary"]["rejected"], 1);
    // Different roles required: the same-role confirmation does not count.
    let roles = server
        .api(&auditor)
        .get("/api/v1/reviews/four-eyes?rule=dkim-roles")
        .json();
    let got: Vec<String> = statuses(&roles).into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(
        got,
        [
            "confirmed",
            "self_confirmed",
            "pending",
            "confirmed",
            "wrong_role"
        ]
    );
    // A window: only the rotations recorded in it.
    let at = report["pairs"][0]["confirmed"]["recorded_at"]
        .as_str()
        .unwrap();
    let window = |bound: &str| {
        let answer = server.api(&auditor).get(&format!(
            "/api/v1/reviews/four-eyes?rule=dkim-rotation&{bound}={at}"
        ));
        assert_eq!(answer.status, 200, "{}", answer.text());
        statuses(&answer.json()).len()
    };
    assert_eq!((window("from"), window("to")), (5, 0));
    // Who may ask, and what.
    let writer = create_key(&node.dir, "writer", &[]);
    assert_eq!(
        server
            .api(&writer)
            .get("/api/v1/reviews/four-eyes?rule=dkim-rotation")
            .status,
        403
    );
    server
        .api(&auditor)
        .get("/api/v1/reviews/four-eyes?rule=nope")
        .assert_error(404, "not_found", Some("rule"));

    // The CLI: a table, and the signed bundle that verifies offline.
    let table = server
        .cli(
            &auditor,
            &["review", "four-eyes", "--rule", "dkim-rotation"],
        )
        .ok()
        .stdout;
    for word in [
        "self_confirmed",
        "overdue",
        "late",
        "hash_mismatch",
        "2 confirmed",
    ] {
        assert!(table.contains(word), "{word}:\n{table}");
    }
    let bundle = node.file("report.ndjson");
    server
        .cli(
            &auditor,
            &[
                "review",
                "four-eyes",
                "--rule",
                "dkim-rotation",
                "--out",
                bundle.to_str().unwrap(),
            ],
        )
        .ok();
    let public_key = node.public_key();
    let verify = |file: &std::path::Path| {
        run(&[
            "verify",
            "--export",
            file.to_str().unwrap(),
            "--public-key",
            &public_key,
        ])
    };
    let ok = verify(&bundle).ok().stdout;
    assert!(
        ok.contains("four-eyes report intact") && ok.contains("1 self_confirmed"),
        "{ok}"
    );
    let text = std::fs::read_to_string(&bundle).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Header, the five rotations, five confirmations and the trailer.
    assert_eq!(lines.len(), 1 + 5 + 5 + 1, "{text}");

    // Tampered: a status changed, an entry's actor changed, an entry left out.
    let tampered = node.file("tampered.ndjson");
    let cases: Vec<(String, &str)> = vec![
        (
            text.replacen("\"self_confirmed\"", "\"confirmed\"", 1),
            "header",
        ),
        (
            text.replacen("\"id\":\"alice\"", "\"id\":\"mallory\"", 1),
            "chain",
        ),
        (
            {
                let mut kept = lines.clone();
                kept.remove(3);
                kept.join("\n") + "\n"
            },
            "left out",
        ),
    ];
    for (content, what) in cases {
        std::fs::write(&tampered, content).unwrap();
        let failed = verify(&tampered).code(1);
        assert!(
            failed.stderr.contains("FAILED"),
            "{what}: {}",
            failed.stderr
        );
    }

    // Re-signed with the node's own key, a false report still fails: it is recomputed from
    // the entries it carries.
    let files = evident_server::NodeFiles::open_readonly(&node.dir).unwrap();
    let mut header: Value = serde_json::from_str(lines[0]).unwrap();
    header["report"]["pairs"][1]["status"] = json!("confirmed");
    header["report"]["summary"]["confirmed"] = json!(3);
    header["report"]["summary"]["self_confirmed"] = json!(0);
    let forged = evident_core::four_eyes::bundle::ReportHeader {
        node_id: header["node_id"].as_str().unwrap().to_owned(),
        generated_at: evident_core::event::parse_rfc3339(header["generated_at"].as_str().unwrap())
            .unwrap(),
        checkpoint: header["checkpoint"].as_str().unwrap().to_owned(),
        report: header["report"].clone(),
    };
    let line =
        evident_core::four_eyes::bundle::signed_header_line(&forged, files.signer()).unwrap();
    let mut forged_text = line;
    for l in &lines[1..] {
        forged_text.push_str(l);
        forged_text.push('\n');
    }
    std::fs::write(&tampered, forged_text).unwrap();
    let failed = verify(&tampered).code(1);
    assert!(
        failed.stderr.contains("report_disagrees") && failed.stderr.contains("pairs[1].status"),
        "{}",
        failed.stderr
    );
}
