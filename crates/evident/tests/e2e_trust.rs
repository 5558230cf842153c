//! Trust on the verifier's side, through the real binary: checkpoints kept elsewhere catch a
//! truncated or rolled-back store without any export (`verify --data-dir --checkpoint`,
//! `POST /api/v1/verify`, `verify --checkpoint` online); `verify --export` says which key it
//! verified against and how it got it, names the signing key on a mismatch, says plainly
//! whether completeness is provable, and refuses a header consistency proof that does not
//! connect its own endpoints even without a trusted checkpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, attacker_db, copy_dir, event, run, saved_checkpoint_size};
use evident_core::export::{self, ExportHeader, HeaderConsistency};
use serde_json::Value;
use std::path::Path;

/// Entries when the older copy of the data directory is taken.
const OLDER: u64 = 6;
/// Entries when the owner keeps a checkpoint elsewhere.
const SIZE: u64 = 10;

struct Ctx {
    node: Node,
    older: std::path::PathBuf,
    kept: std::path::PathBuf,
    public_key: String,
}

fn setup() -> Ctx {
    let node = Node::embedded();
    let mut server = Server::start(&node);
    let api = server.api(&node.owner_key);
    for i in 0..OLDER {
        let actor = if i % 2 == 0 { "alice" } else { "bob" };
        api.append(&event(actor, "config.changed")).unwrap();
    }
    api.wait_checkpoint(OLDER);
    assert_eq!(server.stop(), Some(0));
    let older = node.file("older");
    copy_dir(&node.dir, &older);
    server.restart();
    let api = server.api(&node.owner_key);
    for i in OLDER..SIZE {
        let actor = if i % 2 == 0 { "alice" } else { "bob" };
        api.append(&event(actor, "config.changed")).unwrap();
    }
    api.wait_checkpoint(SIZE);
    let public_key = node.public_key();
    let kept = node.file("kept.checkpoint");
    server.keep_checkpoint(&node.owner_key, &kept, &public_key);
    assert_eq!(server.stop(), Some(0));
    Ctx {
        node,
        older,
        kept,
        public_key,
    }
}

fn kept_size(ctx: &Ctx) -> u64 {
    saved_checkpoint_size(&ctx.kept)
}

#[test]
fn kept_checkpoints_catch_truncation_and_rollback_of_the_store() {
    let ctx = setup();
    let kept = ctx.kept.to_str().unwrap();
    let size = kept_size(&ctx);
    assert!(size >= SIZE, "{size}");

    // Intact: consistent with the kept checkpoint.
    let out = run(&[
        "verify",
        "--data-dir",
        ctx.node.dir_str(),
        "--checkpoint",
        kept,
    ])
    .ok();
    assert!(
        out.stdout.contains("consistent with your 1 checkpoint"),
        "{}",
        out.stdout
    );

    // Rolled back to an older copy: the store's own checkpoints agree with it, the kept one
    // does not.
    let older = ctx.older.to_str().unwrap();
    run(&["verify", "--data-dir", older]).ok();
    let out = run(&["verify", "--data-dir", older, "--checkpoint", kept]).code(1);
    assert!(
        out.stderr.starts_with(&format!("FAILED at seq {OLDER}:"))
            && out.stderr.contains("rolled back"),
        "{}",
        out.stderr
    );

    // The tail cut, with the checkpoints that covered it: only the kept one shows it.
    let cut = ctx.node.file("cut");
    copy_dir(&ctx.node.dir, &cut);
    let conn = attacker_db(&cut);
    // (No Merkle node of so small a log is stored: they start at level 8.)
    conn.execute_batch("DELETE FROM events WHERE seq >= 8; DELETE FROM checkpoints WHERE size > 8")
        .unwrap();
    drop(conn);
    let cut_dir = cut.to_str().unwrap();
    run(&["verify", "--data-dir", cut_dir]).ok();
    let out = run(&["verify", "--data-dir", cut_dir, "--checkpoint", kept]).code(1);
    assert!(
        out.stderr.starts_with("FAILED at seq 8:") && out.stderr.contains("truncated"),
        "{}",
        out.stderr
    );

    // A file holding several checkpoints, one after another, is read as a list.
    let list = ctx.node.file("list.checkpoints");
    let older_note = {
        let server = Server::start_with_env(&ctx.older, &[]);
        let answer = server.api(&ctx.node.owner_key).get("/api/v1/checkpoint");
        assert_eq!(answer.status, 200);
        answer.text()
    };
    std::fs::write(
        &list,
        format!(
            "{older_note}\n{}",
            std::fs::read_to_string(&ctx.kept).unwrap()
        ),
    )
    .unwrap();
    let out = run(&[
        "verify",
        "--data-dir",
        ctx.node.dir_str(),
        "--checkpoint",
        list.to_str().unwrap(),
    ])
    .ok();
    assert!(
        out.stdout.contains("consistent with your 2 checkpoint"),
        "{}",
        out.stdout
    );

    // Online, on a server serving the cut store: POST /api/v1/verify with the kept note.
    let server = Server::start_with_env(&cut, &[]);
    let api = server.api(&ctx.node.owner_key);
    let note = std::fs::read_to_string(&ctx.kept).unwrap();
    let response = api
        .http
        .post(format!("{}/api/v1/verify", api.url))
        .bearer_auth(&ctx.node.owner_key)
        .header("content-type", "application/json")
        .body(serde_json::json!({"checkpoints": [note]}).to_string())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let verdict: Value = serde_json::from_slice(&response.bytes().unwrap()).unwrap();
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["violation"]["kind"], "truncated", "{verdict}");
    assert_eq!(verdict["violation"]["seq"], 8, "{verdict}");
    // GET, without the kept checkpoint, cannot see it.
    let answer = api.get("/api/v1/verify");
    assert_eq!(answer.json()["ok"], true, "{}", answer.text());
    // That finding made the node read-only (it never writes over a log shorter than a
    // checkpoint it signed), so the log is still the cut one: the CLI online, with
    // --checkpoint, posts the kept note and gets the same verdict.
    let ready = api.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.text());
    let out = server
        .cli(&ctx.node.owner_key, &["verify", "--checkpoint", kept])
        .code(1);
    assert!(
        out.stderr.contains("[truncated]") && out.stderr.contains("size 10"),
        "{}",
        out.stderr
    );
    // A body that is not a list of checkpoints is a 400 naming the field.
    for body in [r#"{"checkpoints":[]}"#, r#"{"checkpoint":"x"}"#, "[1]"] {
        let response = api
            .http
            .post(format!("{}/api/v1/verify", api.url))
            .bearer_auth(&ctx.node.owner_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{body}");
        let error: Value = serde_json::from_slice(&response.bytes().unwrap()).unwrap();
        assert_eq!(error["error"]["field"], "checkpoints", "{body}: {error}");
    }
    // A kept note not signed by this node is a finding, named.
    let response = api
        .http
        .post(format!("{}/api/v1/verify", api.url))
        .bearer_auth(&ctx.node.owner_key)
        .header("content-type", "application/json")
        .body(serde_json::json!({"checkpoints": ["not a checkpoint\n"]}).to_string())
        .send()
        .unwrap();
    let verdict: Value = serde_json::from_slice(&response.bytes().unwrap()).unwrap();
    assert_eq!(
        verdict["violation"]["kind"], "bad_checkpoint_signature",
        "{verdict}"
    );
}

#[test]
fn verify_export_names_its_key_its_completeness_and_refuses_a_proof_that_does_not_connect() {
    let ctx = setup();
    let server = Server::start(&ctx.node);
    let full = ctx.node.file("full.ndjson");
    let bob = ctx.node.file("bob.ndjson");
    let with_proof = ctx.node.file("proof.ndjson");
    let out = |file: &Path, args: &[&str]| {
        server
            .export(&ctx.node.owner_key, "ndjson", file, args)
            .ok();
    };
    out(&full, &[]);
    out(&bob, &["--actor", "bob"]);
    out(&with_proof, &["--consistency-from", "3"]);
    drop(server);
    let verify = |file: &Path, key: &str| {
        run(&[
            "verify",
            "--export",
            file.to_str().unwrap(),
            "--public-key",
            key,
        ])
    };
    let (name, id) = {
        let mut parts = ctx.public_key.split('+');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    };

    let report = verify(&full, &ctx.public_key).ok();
    assert!(
        report.stdout.contains(&format!(
            "key: {name} (key id {id}), pinned by you with --public-key"
        )),
        "{}",
        report.stdout
    );
    assert!(
        report
            .stdout
            .contains("complete: no filter, every entry from seq 0"),
        "{}",
        report.stdout
    );
    let report = verify(&bob, &ctx.public_key).ok();
    assert!(
        report.stdout.contains("filter: actor=bob"),
        "{}",
        report.stdout
    );
    assert!(
        report
            .stdout
            .contains("Complete for the filter: not provable"),
        "{}",
        report.stdout
    );

    // Another key: which signed and which was expected.
    let other = Node::embedded();
    let other_key = other.public_key();
    let failed = verify(&full, &other_key).code(1);
    let other_name = other_key.split('+').next().unwrap();
    assert!(
        failed
            .stderr
            .contains(&format!("signed by key {name}+{id}"))
            && failed
                .stderr
                .contains(&format!("expected key {other_name}+")),
        "{}",
        failed.stderr
    );

    // A header consistency proof that does not connect its endpoints, even properly signed
    // (by the node's own key: a faulty or subverted node), is refused without any trusted
    // checkpoint.
    let files = evident_server::NodeFiles::open_readonly(&ctx.node.dir).unwrap();
    let text = std::fs::read_to_string(&with_proof).unwrap();
    let (header_line, rest) = text.split_once('\n').unwrap();
    let header: Value = serde_json::from_str(header_line).unwrap();
    let consistency = &header["consistency"];
    let mut proof: Vec<evident_core::Hash> = consistency["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| evident_core::Hash::from_hex(h.as_str().unwrap()).unwrap())
        .collect();
    proof[0].0[0] ^= 1;
    let forged = export::signed_header_line(
        &ExportHeader {
            node_id: header["node_id"].as_str().unwrap().to_owned(),
            checkpoint: header["checkpoint"].as_str().unwrap().to_owned(),
            query: evident_core::canonical::canonical_json(&header["query"]),
            exported_at: evident_core::event::parse_rfc3339(
                header["exported_at"].as_str().unwrap(),
            )
            .unwrap(),
        },
        Some(&HeaderConsistency {
            from_size: consistency["from_size"].as_u64().unwrap(),
            from_root: evident_core::Hash::from_hex(consistency["from_root"].as_str().unwrap())
                .unwrap(),
            proof,
        }),
        files.signer(),
    )
    .unwrap();
    let tampered = ctx.node.file("tampered.ndjson");
    std::fs::write(&tampered, format!("{forged}{rest}")).unwrap();
    verify(&with_proof, &ctx.public_key).ok();
    let failed = verify(&tampered, &ctx.public_key).code(1);
    assert!(
        failed.stderr.contains("bad_consistency_proof")
            && failed
                .stderr
                .contains("does not connect the tree of size 3"),
        "{}",
        failed.stderr
    );
}

/// A reader posting a note the node never signed gets a verdict naming it, but that is bad
/// input, not damage: the node stays writable (it once went read-only here, so any reader
/// could stop all appends with a made-up checkpoint; schemathesis found it).
#[test]
fn a_made_up_checkpoint_is_named_but_does_not_make_the_node_read_only() {
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);
    api.append(&event("alice", "config.changed")).unwrap();
    for note in ["", "not a checkpoint\n"] {
        let response = api
            .http
            .post(format!("{}/api/v1/verify", api.url))
            .bearer_auth(&node.owner_key)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "checkpoints": [note] }).to_string())
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let verdict: Value = serde_json::from_slice(&response.bytes().unwrap()).unwrap();
        assert_eq!(verdict["ok"], false, "{verdict}");
        assert_eq!(
            verdict["violation"]["kind"], "bad_checkpoint_signature",
            "{verdict}"
        );
    }
    let ready = api.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let status = api.get("/api/v1/verify/status").json();
    assert_eq!(status["read_only"], false, "{status}");
    api.append(&event("bob", "config.changed")).unwrap();
    // A start beyond the log is refused before any given note is looked at.
    let response = api
        .http
        .post(format!(
            "{}/api/v1/verify?from=9223372036854775808",
            api.url
        ))
        .bearer_auth(&node.owner_key)
        .header("content-type", "application/json")
        .body(r#"{"checkpoints":[""]}"#)
        .send()
        .unwrap();
    assert_ne!(response.status().as_u16(), 200);
}
