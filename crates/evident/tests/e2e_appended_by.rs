//! End to end, through the real binary, on the backend under test: who appended each entry.
//! Every stored event names the API key whose request appended it (`appended_by`, covered by
//! the entry hash) in query answers and in every export form, and the node's own events name
//! `system`; a client can neither set that field nor append in the node's `evident.*` action
//! namespace (a 400 naming the field, nothing of the batch stored, over HTTP and the CLI). A
//! log written before entries recorded it (encoding version 1, built here with the core's
//! version-1 encoder) keeps verifying, online and as an export, once the upgraded node has
//! appended version-2 entries on top; a changed key id of a version-2 entry is caught.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    Node, Run, Server, create_key, create_key_with_env, event, postgres_under_test, run,
    storage_for_new_node, verify_export,
};
use evident_core::event::EventInput;
use serde_json::{Value, json};
use std::path::Path;

fn key_id(key: &str) -> String {
    evident_server::auth::key_id_of(key).unwrap().to_owned()
}

fn append_cli(server: &Server, key: &str, action: &str) -> Run {
    server.cli(
        key,
        &[
            "append",
            "--actor",
            "mallory",
            "--actor-kind",
            "user",
            "--action",
            action,
            "--target",
            "node:n1",
            "--outcome",
            "success",
            "--severity",
            "info",
        ],
    )
}

fn public_key(node_dir: &Path, out: &Path) -> String {
    run(&[
        "public-key",
        "--data-dir",
        node_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    out.to_str().unwrap().to_owned()
}

/// The event lines of an NDJSON export bundle (header and trailer dropped).
fn bundle_events(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines[1..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_writer_key_cannot_append_in_the_evident_namespace_and_nothing_is_stored() {
    let node = Node::new();
    let writer = create_key(&node.dir, "writer", &[]);
    let server = Server::start(&node);
    let api = server.api(&writer);
    api.append(&event("alice", "auth.login")).unwrap();
    let before = server.api(&node.owner_key).all_entries();

    for action in [
        "evident.x",
        "evident.key.created",
        "evident.integrity.damaged",
    ] {
        let body = api
            .append(&event("mallory", action))
            .unwrap_err()
            .assert_error(400, "invalid_event", Some("action"));
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("reserved"), "{body}");
        assert!(message.contains(action), "{body}");
        // The whole batch is refused, wherever in it the reserved action is.
        let body = api
            .append(&json!([
                event("alice", "auth.login"),
                event("mallory", action)
            ]))
            .unwrap_err()
            .assert_error(400, "invalid_event", Some("action"));
        assert_eq!(body["error"]["index"], 1, "{body}");
        let ndjson = format!(
            "{}\n{}\n",
            event("mallory", action),
            event("bob", "auth.login")
        );
        let answer = api
            .post_raw("application/x-ndjson", ndjson.into_bytes())
            .unwrap();
        let body = answer.assert_error(400, "invalid_event", Some("action"));
        assert_eq!(body["error"]["index"], 0, "{body}");
        // The CLI gets the same refusal and says which field.
        let out = append_cli(&server, &writer, action);
        assert_ne!(out.code, Some(0), "{}", out.stdout);
        assert!(out.stderr.contains("action"), "{}", out.stderr);
        assert!(out.stderr.contains("reserved"), "{}", out.stderr);
    }
    // The owner key is no more a node than a writer is.
    server
        .api(&node.owner_key)
        .append(&event("mallory", "evident.auth.brute_force"))
        .unwrap_err()
        .assert_error(400, "invalid_event", Some("action"));

    let after = server.api(&node.owner_key).all_entries();
    assert_eq!(after, before, "a refused append stored something");
    // Names that only look alike are the client's to use.
    api.append(&event("alice", "evidently.fine")).unwrap();
    append_cli(&server, &writer, "evident-ish.ok").ok();
}

#[test]
fn each_stored_event_names_the_key_that_appended_it() {
    let node = Node::new();
    let writer = create_key(&node.dir, "writer", &[]);
    let other = create_key(&node.dir, "writer", &[]);
    let server = Server::start(&node);
    let (writer_id, other_id, owner_id) =
        (key_id(&writer), key_id(&other), key_id(&node.owner_key));

    let mut expected: Vec<(u64, String)> = Vec::new();
    for (key, id, actor) in [
        (&writer, &writer_id, "alice"),
        (&other, &other_id, "bob"),
        (&writer, &writer_id, "carol"),
        (&node.owner_key, &owner_id, "dave"),
    ] {
        let receipts = server
            .api(key)
            .append(&event(actor, "report.read"))
            .unwrap();
        expected.push((receipts[0].0, id.clone()));
    }
    // Two more by the second key in one batch, one through the CLI.
    for (seq, _) in server
        .api(&other)
        .append(&json!([
            event("erin", "report.read"),
            event("frank", "report.read")
        ]))
        .unwrap()
    {
        expected.push((seq, other_id.clone()));
    }
    let out = server
        .cli(
            &writer,
            &[
                "append",
                "--actor",
                "gina",
                "--actor-kind",
                "user",
                "--action",
                "report.read",
                "--target",
                "node:n1",
                "--outcome",
                "success",
                "--severity",
                "info",
            ],
        )
        .ok();
    let seq: u64 = out
        .stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("seq="))
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    expected.push((seq, writer_id.clone()));

    // A client cannot say who appended an event, whichever value it claims.
    for claim in [json!(other_id), json!("system"), json!(null)] {
        let mut forged = event("mallory", "report.read");
        forged["appended_by"] = claim;
        server
            .api(&writer)
            .append(&json!([event("alice", "report.read"), forged]))
            .unwrap_err()
            .assert_error(400, "invalid_event", Some("appended_by"));
    }

    // Query answers.
    let entries = server.api(&node.owner_key).all_entries();
    let by_seq = |seq: u64| -> &Value { &entries.iter().find(|e| e.0 == seq).unwrap().2 };
    for (seq, id) in &expected {
        assert_eq!(by_seq(*seq)["appended_by"], id.as_str(), "seq {seq}");
    }
    // Everything else in the log is the node's own (key creation, self-audit): `system`.
    for (seq, _, e) in &entries {
        if !expected.iter().any(|(s, _)| s == seq) {
            assert!(e["action"].as_str().unwrap().starts_with("evident."), "{e}");
            assert_eq!(e["appended_by"], "system", "{e}");
        }
    }
    let page = server
        .api(&node.owner_key)
        .get("/api/v1/audit-log?actor=bob")
        .json();
    assert_eq!(
        page["events"][0]["appended_by"],
        other_id.as_str(),
        "{page}"
    );

    // Exports: the self-verifying bundle, the JSON page form and CSV.
    let bundle = node.file("all.ndjson");
    server.export(&node.owner_key, "ndjson", &bundle, &[]).ok();
    let lines = bundle_events(&bundle);
    for (seq, id) in &expected {
        let line = lines.iter().find(|l| l["seq"] == *seq).unwrap();
        assert_eq!(line["appended_by"], id.as_str(), "{line}");
    }
    let key_file = public_key(&node.dir, &node.file("node.pub"));
    verify_export(&bundle, &key_file).ok();

    let json_export = node.file("all.json");
    server
        .export(&node.owner_key, "json", &json_export, &[])
        .ok();
    let text = std::fs::read_to_string(&json_export).unwrap();
    for (seq, id) in &expected {
        let needle = format!(r#""seq":{seq},"#);
        let at = text
            .find(&needle)
            .unwrap_or_else(|| panic!("seq {seq} in {text}"));
        let rest = &text[at..];
        let event_end = rest.find(r#","hash":"#).unwrap();
        assert!(
            rest[..event_end].ends_with(&format!(r#""appended_by":"{id}""#)),
            "{}",
            &rest[..event_end]
        );
    }

    let csv_file = node.file("all.csv");
    server.export(&node.owner_key, "csv", &csv_file, &[]).ok();
    let mut reader = csv::Reader::from_path(&csv_file).unwrap();
    let header = reader.headers().unwrap().clone();
    assert_eq!(header.get(15), Some("appended_by"), "{header:?}");
    assert_eq!(header.iter().next_back(), Some("occurred_at"), "{header:?}");
    assert_eq!(header.len(), 17);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    for (seq, id) in &expected {
        let row = rows
            .iter()
            .find(|r| r[col("seq")] == seq.to_string())
            .unwrap();
        assert_eq!(&row[col("appended_by")], id.as_str());
    }
}

/// Builds a data directory whose log was written before entries recorded who appended them:
/// `n` version-1 entries, sealed with the node's own secret, stored through the store. Returns
/// the `EVIDENT_STORAGE` setting of the node (`None`: embedded).
fn old_node(dir: &Path, n: u64) -> Option<String> {
    let storage = storage_for_new_node();
    let config = evident_server::ServerConfig {
        data_dir: dir.to_owned(),
        storage: storage.clone(),
        ..Default::default()
    };
    let files = evident_server::Node::init(&config).unwrap();
    let store = files.open_store().unwrap();
    let mut head = store.load_head().unwrap();
    assert_eq!(head.next_seq, 0);
    let mut entries = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..n {
        let input = EventInput::from_json(&event(&format!("old-{i}"), "config.changed")).unwrap();
        let id = uuid_v7_like(i);
        entries.push(head.append_v1(
            id,
            1_773_478_800_000 + i as i64,
            files.node_id(),
            input,
            files.seal_key(),
            &mut nodes,
        ));
    }
    store.append(&entries, &nodes).unwrap();
    storage
}

fn uuid_v7_like(i: u64) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x0195_a3c2_7e00_7000_8000_0000_0000_0000 | u128::from(i))
}

/// Sets `appended_by` of entry `seq` straight in the database, past its triggers.
fn tamper_appended_by(storage: Option<&str>, dir: &Path, seq: u64, value: &str) {
    match storage {
        None => {
            let conn = rusqlite::Connection::open(dir.join("evident.db")).unwrap();
            conn.execute_batch("DROP TRIGGER events_no_update").unwrap();
            conn.execute(
                "UPDATE events SET appended_by = ?1 WHERE seq = ?2",
                rusqlite::params![value, seq as i64],
            )
            .unwrap();
        }
        Some(url) => {
            let db = url.rsplit('/').next().unwrap();
            evident_testpg::shared()
                .unwrap()
                .psql(
                    db,
                    &format!(
                        "ALTER TABLE evident.events DISABLE TRIGGER events_append_only; \
                         UPDATE evident.events SET appended_by = '{value}' WHERE seq = {seq}"
                    ),
                )
                .unwrap();
        }
    }
}

#[test]
fn a_log_of_both_encoding_versions_verifies_and_a_changed_key_id_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    const OLD: u64 = 5;
    let storage = old_node(&dir, OLD);
    assert_eq!(storage.is_some(), postgres_under_test());
    let envs: Vec<(&str, &str)> = storage
        .iter()
        .map(|url| ("EVIDENT_STORAGE", url.as_str()))
        .collect();
    // The upgraded build appends on top: a key's creation (the node's own event), then the
    // key's own events.
    let owner = create_key_with_env(&dir, "owner", &[], &envs);
    let writer = create_key(&dir, "writer", &[]);
    let mut server = Server::start_with_env(&dir, &[]);
    let api = server.api(&owner);
    let receipts = server
        .api(&writer)
        .append(&json!([
            event("new-0", "config.changed"),
            event("new-1", "config.changed")
        ]))
        .unwrap();
    let entries = api.all_entries();
    for (seq, _, e) in &entries {
        if *seq < OLD {
            assert!(e.get("appended_by").is_none(), "version-1 entry: {e}");
            assert_eq!(e["actor"]["id"], format!("old-{seq}"));
        } else {
            assert!(e["appended_by"].is_string(), "version-2 entry: {e}");
        }
    }
    let writer_seq = receipts[0].0;
    assert_eq!(
        entries[writer_seq as usize].2["appended_by"],
        key_id(&writer).as_str()
    );

    // Online verification (seals and chain, both versions) and a full export, offline.
    let size = entries.len() as u64;
    api.wait_checkpoint(size);
    let answer = api.get("/api/v1/verify");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["ok"], true, "{}", answer.text());
    let bundle = tmp.path().join("all.ndjson");
    server.export(&owner, "ndjson", &bundle, &[]).ok();
    let key_file = public_key(&dir, &tmp.path().join("node.pub"));
    let out = verify_export(&bundle, &key_file).ok();
    assert!(out.stdout.contains("entries"), "{}", out.stdout);
    assert_eq!(server.stop(), Some(0), "graceful stop");
    run(&["verify", "--data-dir", dir.to_str().unwrap()]).ok();

    // The export with another key id on the writer's entry is refused at that entry.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let member = format!(r#""appended_by":"{}""#, key_id(&writer));
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!(r#"{{"seq":{writer_seq},"#)))
        .unwrap();
    assert!(line.contains(&member), "{line}");
    for replacement in [
        format!(r#""appended_by":"{}""#, key_id(&owner)),
        r#""appended_by":"system""#.to_owned(),
    ] {
        let edited = tmp.path().join("edited.ndjson");
        std::fs::write(
            &edited,
            text.replacen(line, &line.replacen(&member, &replacement, 1), 1),
        )
        .unwrap();
        let out = verify_export(&edited, &key_file).code(1);
        assert!(
            out.stderr
                .starts_with(&format!("FAILED at seq {writer_seq} (line ")),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("hash chain broken"), "{}", out.stderr);
    }

    // In the database: the stored key id of that entry changed is caught by verification.
    tamper_appended_by(storage.as_deref(), &dir, writer_seq, &key_id(&owner));
    let out = run(&["verify", "--data-dir", dir.to_str().unwrap()]).code(1);
    assert!(
        out.stderr
            .starts_with(&format!("FAILED at seq {writer_seq}:")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hash chain broken"), "{}", out.stderr);
}
