//! Damaged stored data is answered as a finding, never as a server fault: a real store
//! (the backend under test: SQLite, or PostgreSQL with EVIDENT_TEST_BACKEND=postgres) is
//! damaged past its triggers (an undecodable row, a deleted Merkle node, a deleted middle row),
//! a server is started on it, and every read route is asked about it: none answers 500, those
//! that need the damaged data answer 409 `log_damaged` naming the entry, exports of undamaged
//! ranges still work, and no message shows Rust debug formatting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, event, postgres_under_test};
use serde_json::Value;

/// Entries in the log: more than one stored Merkle node's worth (level 8: 256 leaves).
const SIZE: u64 = 300;
/// The damaged entry, early enough that an export meets it in its first chunk.
const DAMAGED: u64 = 40;

/// Runs `sqlite` on the node's SQLite file with the triggers dropped, or `postgres` on its
/// database with the triggers disabled, as an attacker with database access would.
fn tamper(node: &Node, sqlite: &str, postgres: &str) {
    if postgres_under_test() {
        let db = node.postgres_database();
        let cluster = evident_testpg::shared().unwrap_or_else(|e| panic!("{e}"));
        cluster
            .psql(
                &db,
                &format!(
                    "ALTER TABLE evident.events DISABLE TRIGGER events_append_only; \
                     ALTER TABLE evident.merkle_nodes DISABLE TRIGGER merkle_nodes_append_only; \
                     {postgres}"
                ),
            )
            .unwrap();
    } else {
        common::attacker_db(&node.dir)
            .execute_batch(sqlite)
            .unwrap();
    }
}

fn damaged_node(sqlite: &str, postgres: &str) -> (Node, Server) {
    let node = Node::new();
    let mut server = Server::start(&node);
    let api = server.api(&node.owner_key);
    let batch: Vec<Value> = (0..SIZE)
        .map(|i| event(if i % 3 == 0 { "alice" } else { "bob" }, "config.changed"))
        .collect();
    for chunk in batch.chunks(100) {
        api.append(&Value::Array(chunk.to_vec())).unwrap();
    }
    api.wait_checkpoint(SIZE);
    assert_eq!(server.stop(), Some(0));
    tamper(&node, sqlite, postgres);
    let server = Server::start(&node);
    (node, server)
}

/// Every read route, each asked on every damaged store.
fn read_routes() -> Vec<String> {
    let (n, d) = (SIZE, DAMAGED);
    let mut routes: Vec<String> = [
        "/api/v1/audit-log?order=asc&limit=1000",
        "/api/v1/audit-log?order=asc&limit=10&actor=alice",
        "/api/v1/audit-log?format=ndjson",
        "/api/v1/audit-log?format=ndjson&actor=alice",
        "/api/v1/audit-log?format=ndjson&actor=bob",
        "/api/v1/audit-log?format=csv",
        "/api/v1/audit-log?format=csv&actor=bob",
        "/api/v1/checkpoint",
        "/api/v1/verify",
    ]
    .map(str::to_owned)
    .to_vec();
    routes.extend([
        format!("/api/v1/proof/inclusion?seq={d}&size={n}"),
        format!("/api/v1/proof/inclusion?seq=290&size={n}"),
        format!("/api/v1/proof/inclusion?seq=0&size={n}"),
        format!("/api/v1/proof/consistency?from=1&to={n}"),
        format!("/api/v1/proof/consistency?from={d}&to={n}"),
        format!("/api/v1/proof/consistency?from=270&to={n}"),
    ]);
    routes
}

/// What a stream cut short by damage met after its first chunk reads as.
const CUT: &str = "<transfer cut short>";

/// Asks every read route; returns the answers (an export whose transfer was cut short, as
/// one meeting damage after its first chunk is, reads as [`CUT`]), having checked that none
/// is a 500 and that no error message shows debug formatting.
fn ask_all(node: &Node, server: &Server) -> Vec<(String, u16, String)> {
    let api = server.api(&node.owner_key);
    let mut answers = Vec::new();
    for route in read_routes() {
        let response = api
            .http
            .get(format!("{}{route}", api.url))
            .bearer_auth(&node.owner_key)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let text = match response.bytes() {
            Ok(body) => String::from_utf8(body.to_vec()).unwrap(),
            Err(_) => CUT.to_owned(),
        };
        assert_ne!(status, 500, "{route}: {text}");
        if status >= 400 {
            let body: Value = serde_json::from_str(&text).unwrap();
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            for debug in ["Some(", "None", "Corrupt {", "NotFound("] {
                assert!(!message.contains(debug), "{route}: {message}");
            }
        }
        answers.push((route, status, text));
    }
    answers
}

fn answer<'a>(answers: &'a [(String, u16, String)], route: &str) -> (u16, &'a str) {
    let (_, status, text) = answers.iter().find(|(r, _, _)| r == route).unwrap();
    (*status, text)
}

fn assert_damaged(answers: &[(String, u16, String)], route: &str, names: &str) {
    let (status, text) = answer(answers, route);
    assert_eq!(status, 409, "{route}: {text}");
    let body: Value = serde_json::from_str(text).unwrap();
    assert_eq!(body["error"]["code"], "log_damaged", "{route}: {text}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(names), "{route}: {message}");
}

#[test]
fn an_undecodable_row_is_409_log_damaged_naming_it_on_every_route_that_reads_it() {
    let (node, server) = damaged_node(
        &format!("UPDATE events SET actor_kind = 'wizard' WHERE seq = {DAMAGED}"),
        &format!("UPDATE evident.events SET action = 'Not An Action' WHERE seq = {DAMAGED}"),
    );
    let answers = ask_all(&node, &server);
    let at = format!("at entry {DAMAGED}");
    for route in [
        "/api/v1/audit-log?order=asc&limit=1000",
        "/api/v1/audit-log?format=ndjson",
        "/api/v1/audit-log?format=csv",
        &format!("/api/v1/proof/inclusion?seq={DAMAGED}&size={SIZE}"),
    ] {
        assert_damaged(&answers, route, &at);
    }
    // Pages and proofs that do not touch the row still work.
    assert_eq!(
        answer(&answers, "/api/v1/audit-log?order=asc&limit=10&actor=alice").0,
        200
    );
    assert_eq!(
        answer(
            &answers,
            &format!("/api/v1/proof/inclusion?seq=0&size={SIZE}")
        )
        .0,
        200
    );
    // Verification reports it as a finding.
    let (status, text) = answer(&answers, "/api/v1/verify");
    assert_eq!(status, 200, "{text}");
    let verdict: Value = serde_json::from_str(text).unwrap();
    assert_eq!(verdict["ok"], false);
    assert_eq!(verdict["violation"]["seq"], DAMAGED);
    // An export of an undamaged range still works, and verifies.
    let api = server.api(&node.owner_key);
    let tail = api.get("/api/v1/audit-log?format=ndjson&from=0&actor=bob&limit=20");
    assert_eq!(tail.status, 200, "{}", tail.text());
}

#[test]
fn a_deleted_merkle_node_is_409_log_damaged_for_the_proofs_that_need_it() {
    let (node, server) = damaged_node(
        "DELETE FROM merkle_nodes WHERE level = 8 AND idx = 0",
        "DELETE FROM evident.merkle_nodes WHERE level = 8 AND idx = 0",
    );
    let answers = ask_all(&node, &server);
    // The inclusion of leaf 290 in the tree of 300 needs node (8, 0).
    assert_damaged(
        &answers,
        &format!("/api/v1/proof/inclusion?seq=290&size={SIZE}"),
        "Merkle node (level 8, index 0)",
    );
    assert_damaged(
        &answers,
        &format!("/api/v1/proof/consistency?from=270&to={SIZE}"),
        "Merkle node (level 8, index 0)",
    );
    // The whole log needs no stored node: its export still works.
    assert_eq!(answer(&answers, "/api/v1/audit-log?format=ndjson").0, 200);
    assert_eq!(answer(&answers, "/api/v1/audit-log?format=csv").0, 200);
    // alice's bundle first needs the node at its last run, after its first chunk was sent:
    // the transfer is cut short rather than completed, and what arrived fails verification
    // as truncated (no trailer).
    let (status, text) = answer(&answers, "/api/v1/audit-log?format=ndjson&actor=alice");
    assert_eq!((status, text), (200, CUT));
    let api = server.api(&node.owner_key);
    let mut response = api
        .http
        .get(format!(
            "{}/api/v1/audit-log?format=ndjson&actor=alice",
            api.url
        ))
        .bearer_auth(&node.owner_key)
        .send()
        .unwrap();
    let mut received = Vec::new();
    let _ = std::io::Read::read_to_end(&mut response, &mut received);
    assert!(!received.is_empty());
    let file = node.file("cut.ndjson");
    std::fs::write(&file, &received).unwrap();
    let public_key = node.public_key();
    let out = common::run(&[
        "verify",
        "--export",
        file.to_str().unwrap(),
        "--public-key",
        &public_key,
    ])
    .code(1);
    assert!(out.stderr.contains("truncated"), "{}", out.stderr);
}

#[test]
fn a_deleted_middle_row_is_409_log_damaged_naming_it() {
    let (node, server) = damaged_node(
        &format!("DELETE FROM events WHERE seq = {DAMAGED}"),
        &format!("DELETE FROM evident.events WHERE seq = {DAMAGED}"),
    );
    let answers = ask_all(&node, &server);
    let entry = format!("entry {DAMAGED}");
    assert_damaged(
        &answers,
        &format!("/api/v1/proof/inclusion?seq={DAMAGED}&size={SIZE}"),
        &entry,
    );
    // bob's bundle skips from 38 over stored entry 39 (alice's) and the hole at 40: the
    // hashes closing its run cannot be computed, so it is refused, naming the hole.
    assert_damaged(
        &answers,
        "/api/v1/audit-log?format=ndjson&actor=bob",
        &entry,
    );
    let (status, text) = answer(&answers, "/api/v1/verify");
    assert_eq!(status, 200, "{text}");
    let verdict: Value = serde_json::from_str(text).unwrap();
    assert_eq!(verdict["ok"], false, "{text}");
    assert_eq!(verdict["violation"]["seq"], DAMAGED, "{text}");
}
