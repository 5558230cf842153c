//! End to end, through the real binary: bad input gets the documented status and JSON error
//! and stores nothing; keys are checked by role; CSV exports are RFC 4180 with formula
//! injection neutralized; the query and export commands show what the log holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, create_key, event, run_with_stdin};
use serde_json::{Value, json};

#[test]
fn bad_input_gets_a_named_error_and_stores_nothing() {
    let node = Node::new();
    let server = Server::start_with_env(&node.dir, &[("EVIDENT_MAX_BODY_BYTES", "65536")]);
    let api = server.api(&node.owner_key);
    api.append(&event("alice", "auth.login.failed")).unwrap();
    let before = api.size();
    assert_eq!(before, 1);

    let post = |body: &[u8]| api.post_raw("application/json", body.to_vec()).unwrap();

    // Malformed JSON.
    post(br#"{"actor": {"id": "alice""#).assert_error(400, "malformed_json", None);
    // Wrong types.
    let mut wrong = event("alice", "x.y");
    wrong["actor"]["id"] = json!(5);
    post(&serde_json::to_vec(&wrong).unwrap()).assert_error(400, "invalid_event", Some("actor.id"));
    let mut wrong = event("alice", "x.y");
    wrong["context"] = json!("not an object");
    post(&serde_json::to_vec(&wrong).unwrap()).assert_error(400, "invalid_event", Some("context"));
    // Unknown severity.
    let mut loud = event("alice", "x.y");
    loud["severity"] = json!("loud");
    post(&serde_json::to_vec(&loud).unwrap()).assert_error(400, "invalid_event", Some("severity"));
    // One bad event rejects the whole batch, naming its index.
    let batch = json!([event("a", "x.y"), event("b", "x.y"), loud]);
    let body = post(&serde_json::to_vec(&batch).unwrap()).assert_error(
        400,
        "invalid_event",
        Some("severity"),
    );
    assert_eq!(body["error"]["index"], 2, "{body}");
    // Oversized body.
    let mut big = event("alice", "x.y");
    big["context"] = json!({"blob": "x".repeat(100_000)});
    post(&serde_json::to_vec(&big).unwrap()).assert_error(413, "body_too_large", None);
    // Oversized context, in a body under the limit.
    let mut big = event("alice", "x.y");
    big["context"] = json!({"blob": "x".repeat(20_000)});
    post(&serde_json::to_vec(&big).unwrap()).assert_error(400, "invalid_event", Some("context"));
    // Invalid UTF-8.
    let mut bytes = serde_json::to_vec(&event("alice", "x.y")).unwrap();
    let at = bytes.windows(5).position(|w| w == b"alice").unwrap();
    bytes[at + 1] = 0xff;
    post(&bytes).assert_error(400, "invalid_utf8", None);
    // Unsupported content type.
    api.post_raw("text/plain", b"hello".to_vec())
        .unwrap()
        .assert_error(415, "unsupported_media_type", None);
    // Unknown query parameter, bad cursor, bad filter value.
    api.get("/api/v1/audit-log?actr=alice")
        .assert_error(400, "unknown_parameter", Some("actr"));
    api.get("/api/v1/audit-log?cursor=not-a-cursor!")
        .assert_error(400, "invalid_parameter", Some("cursor"));
    api.get("/api/v1/audit-log?severity=loud").assert_error(
        400,
        "invalid_parameter",
        Some("severity"),
    );

    // The CLI shows the server's error readably and exits non-zero.
    let out = server
        .cli(
            &node.owner_key,
            &[
                "append",
                "--actor",
                "alice",
                "--action",
                "x.y",
                "--target",
                "user:alice",
                "--severity",
                "loud",
            ],
        )
        .code(1);
    assert!(
        out.stderr.contains("400") && out.stderr.contains("invalid_event"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("field: severity"), "{}", out.stderr);
    let out = server
        .cli(&node.owner_key, &["query", "--actor-kind", "robot"])
        .code(1);
    assert!(out.stderr.contains("actor_kind"), "{}", out.stderr);
    // NDJSON from stdin: the bad line is named, nothing of its batch is stored.
    let input = format!(
        "{}\n{}\n",
        event("bob", "ok.event"),
        json!({"actor": {"id": "bob", "kind": "user"}, "action": "x.y"})
    );
    let mut args = vec!["append", "--stdin", "--url", server.url.as_str(), "--key"];
    args.push(&node.owner_key);
    let out = run_with_stdin(&args, input.as_bytes());
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("stdin line 2"), "{}", out.stderr);
    // A usage error is exit code 2.
    server
        .cli(
            &node.owner_key,
            &[
                "append", "--actor", "a", "--action", "x.y", "--target", "nocolon",
            ],
        )
        .code(2);

    assert_eq!(api.size(), before, "a rejected request stored something");

    // A good NDJSON stream goes in, in batches, with a receipt per event.
    let input: String = (0..7)
        .map(|i| format!("{}\n", event("bob", &format!("bulk.n{i}"))))
        .collect();
    let out = run_with_stdin(
        &[&args[..], &["--batch-size", "3", "--json"]].concat(),
        input.as_bytes(),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seqs: Vec<u64> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..8).collect::<Vec<u64>>());
}

/// Entries of the log that are not self-audit events.
fn r_owner_entries(server: &Server, owner: &str) -> usize {
    server
        .api(owner)
        .all_entries()
        .iter()
        .filter(|(_, _, e)| !e["action"].as_str().unwrap().starts_with("evident."))
        .count()
}

#[test]
fn keys_are_checked_by_role() {
    let node = Node::new();
    let writer = create_key(&node.dir, "writer", &["--label", "ingest"]);
    let server = Server::start(&node);
    // Created while the server runs: works at once.
    let readonly = create_key(&node.dir, "readonly", &["--label", "auditor"]);

    let anonymous = common::Api {
        key: None,
        ..server.api("")
    };
    anonymous
        .append(&event("alice", "x.y"))
        .unwrap_err()
        .assert_error(401, "unauthorized", None);
    anonymous
        .get("/api/v1/audit-log")
        .assert_error(401, "unauthorized", None);
    server
        .api("evk_000000000000_notarealkeynotarealkeynotarealkeynotareal")
        .get("/api/v1/audit-log")
        .assert_error(401, "unauthorized", None);

    let w = server.api(&writer);
    w.append(&event("alice", "x.y")).unwrap();
    w.get("/api/v1/audit-log")
        .assert_error(403, "forbidden", None);
    w.get("/api/v1/checkpoint")
        .assert_error(403, "forbidden", None);

    let r = server.api(&readonly);
    r.append(&event("alice", "x.y"))
        .unwrap_err()
        .assert_error(403, "forbidden", None);
    // One client event; the rest are the recorded refusals.
    let client_events = r_owner_entries(&server, &node.owner_key);
    assert_eq!(client_events, 1);

    // The CLI: no key is a usage error; a forbidden request exits 1 naming the refusal.
    let out = common::run(&["query", "--url", &server.url]).code(2);
    assert!(out.stderr.contains("--key"), "{}", out.stderr);
    let out = server.cli(&writer, &["query"]).code(1);
    assert!(out.stderr.contains("403"), "{}", out.stderr);

    // List shows roles and labels but never a secret; revoke stops a key at once.
    let list = common::run(&["keys", "list", "--data-dir", node.dir_str()]).ok();
    assert!(
        list.stdout.contains("writer") && list.stdout.contains("auditor"),
        "{}",
        list.stdout
    );
    for secret in [&writer, &readonly, &node.owner_key] {
        let (id, rest) = secret.split_at(16);
        assert!(list.stdout.contains(id), "{}", list.stdout);
        assert!(
            !list.stdout.contains(rest),
            "secret leaked:\n{}",
            list.stdout
        );
    }
    let id = &readonly[..16];
    common::run(&["keys", "revoke", id, "--data-dir", node.dir_str()]).ok();
    r.get("/api/v1/audit-log")
        .assert_error(401, "unauthorized", None);
    let list = common::run(&["keys", "list", "--data-dir", node.dir_str(), "--json"]).ok();
    let keys: Value = serde_json::from_str(&list.stdout).unwrap();
    let revoked = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
}

#[test]
fn csv_export_is_rfc4180_and_neutralizes_formulas() {
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);
    let mut e = event(
        "=HYPERLINK(\"http://evil.example\",\"x\")",
        "auth.login.failed",
    );
    e["actor"]["user_agent"] = json!("+cmd|' /C calc'!A0");
    e["target"] = json!({"kind": "user", "id": "@SUM(1+1)"});
    e["context"] = json!({"note": "a, b \"quoted\"\nsecond line", "n": -1});
    api.append(&e).unwrap();
    api.append(&event("plain", "config.changed")).unwrap();

    let file = node.file("out.csv");
    server
        .cli(
            &node.owner_key,
            &["export", "--format", "csv", "--out", file.to_str().unwrap()],
        )
        .ok();
    let bytes = std::fs::read(&file).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.starts_with(
            "timestamp,node_id,tenant,actor,actor_kind,action,target,ip_address,user_agent,\
             outcome,severity,context,seq,hash,seal,appended_by,occurred_at\r\n"
        ),
        "{text}"
    );
    // Three records after the header (the two events and the export's own self-audit
    // event, recorded before the export is cut), each ending in CRLF, no bare newline.
    assert_eq!(text.matches("\r\n").count(), 4, "{text}");
    assert_eq!(text.matches('\n').count(), 4, "{text}");

    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[2][col("action")], "evident.log.exported");
    let first = &rows[0];
    // Formula cells start with an apostrophe; what follows is the value unchanged.
    assert_eq!(
        &first[col("actor")],
        "'=HYPERLINK(\"http://evil.example\",\"x\")"
    );
    assert_eq!(&first[col("user_agent")], "'+cmd|' /C calc'!A0");
    assert_eq!(&first[col("target")], "user:@SUM(1+1)");
    assert_eq!(&first[col("seq")], "0");
    assert_eq!(first[col("hash")].len(), 64);
    // The context is its canonical JSON, commas and quotes preserved through CSV quoting.
    let context: Value = serde_json::from_str(&first[col("context")]).unwrap();
    assert_eq!(context["note"], "a, b \"quoted\"\nsecond line");
    assert_eq!(context["n"], -1);
    // And on the wire: the actor cell is quoted with its quotes doubled.
    assert!(
        text.contains(r#""'=HYPERLINK(""http://evil.example"",""x"")""#),
        "{text}"
    );
    assert_eq!(&rows[1][col("actor")], "plain");
    assert_eq!(&rows[1][col("seq")], "1");
}

#[test]
fn query_and_json_export_show_the_log() {
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);
    for i in 0..5 {
        let actor = if i % 2 == 0 { "alice" } else { "bob" };
        api.append(&event(actor, &format!("config.step{i}")))
            .unwrap();
    }
    let key = &node.owner_key;

    // JSON, following cursors with a small page.
    let out = server
        .cli(
            key,
            &["query", "--json", "--all", "--limit", "2", "--order", "asc"],
        )
        .ok();
    let events: Value = serde_json::from_str(&out.stdout).unwrap();
    let seqs: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    // Filters narrow.
    let out = server.cli(key, &["query", "--json", "--actor", "bob"]).ok();
    let events: Value = serde_json::from_str(&out.stdout).unwrap();
    let seqs: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 1]);
    // The table: a header and a row per event; without --all, the cursor is offered.
    let out = server.cli(key, &["query", "--limit", "2"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with("SEQ"), "{}", out.stdout);
    assert!(
        lines[1].starts_with('4') && lines[1].contains("alice"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("--cursor"), "{}", out.stderr);

    // A JSON export is one array of every event, oldest first.
    let file = node.file("out.json");
    server
        .cli(
            key,
            &[
                "export",
                "--format",
                "json",
                "--out",
                file.to_str().unwrap(),
            ],
        )
        .ok();
    let events: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(events[0]["seq"], 0);
    assert_eq!(events[4]["action"], "config.step4");
    assert!(events[0]["seal"].as_str().is_some_and(|s| s.len() == 64));
}
