//! End to end, through the real binary, on the backend under test (the embedded store, or
//! PostgreSQL with `EVIDENT_TEST_BACKEND=postgres`): `evident prune` with a controlled clock
//! (the hidden `EVIDENT_TEST_NOW`) deletes exactly the entries older than the window, records
//! one `retention.pruned` event, and leaves a log that `evident verify --data-dir` and
//! `GET /api/v1/verify` pass from the anchor; proofs for kept entries and consistency from a
//! checkpoint signed before the prune still check out locally, an export of the kept log
//! verifies offline, a pruned entry's proof is refused with 410, and a window under 90 days is
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, evident, run};
use serde_json::{Value, json};

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// `evident prune` on `node` as if the time were `now` (ms): (exit code, stdout, stderr).
fn prune(node: &Node, now: i64, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["prune", "--data-dir", node.dir_str()];
    args.extend_from_slice(extra);
    let out = evident()
        .args(&args)
        .env("EVIDENT_TEST_NOW", now.to_string())
        .output()
        .expect("run evident prune");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Appends `n` events in one request; returns their sequence numbers.
fn append(api: &common::Api, n: usize, actor: &str) -> Vec<u64> {
    let events: Vec<Value> = (0..n)
        .map(|i| common::event(actor, &format!("step.n{i}")))
        .collect();
    let answer = api
        .post_raw(
            "application/json",
            serde_json::to_vec(&json!(events)).unwrap(),
        )
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.text());
    answer.json()["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn prune_keeps_the_window_and_the_log_verifiable() {
    let node = Node::new();
    let key = node.owner_key.clone();
    let mut server = Server::start(&node);
    let api = server.api(&key);
    let old = append(&api, 6, "old");
    // A moment strictly between the old entries' recording and the kept ones' (same clock).
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cutoff = now_ms();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let kept = append(&api, 4, "new");
    let first_kept = kept[0];
    assert_eq!(old.len(), 6);
    api.wait_checkpoint(first_kept + 4);
    let before = api.checkpoint_size();
    server.stop();

    let now = cutoff + 365 * DAY_MS;
    // A window under the minimum is refused, saying why.
    let (code, _, stderr) = prune(&node, now, &["--retention-days", "30"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("minimum of 90"), "{stderr}");

    let (code, stdout, stderr) = prune(&node, now, &["--dry-run"]);
    assert_eq!(code, Some(0), "{stderr}");
    let range = format!("entries 0 to {}", first_kept - 1);
    assert!(stdout.contains(&format!("would prune {range}")), "{stdout}");

    let (code, stdout, stderr) = prune(&node, now, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&format!("pruned {range}")), "{stdout}");
    // Once: the next run finds nothing more to prune.
    let (code, stdout, _) = prune(&node, now, &[]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("nothing to prune"), "{stdout}");

    let out = node.verify().ok();
    assert!(out.stdout.contains("OK: log intact"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "started from the retention anchor: entries below {first_kept} were pruned"
        )),
        "{}",
        out.stdout
    );

    server.restart();
    let api = server.api(&key);
    let entries = api.all_entries();
    assert_eq!(
        entries[0].0, first_kept,
        "queries start at the first kept entry"
    );
    let pruned: Vec<&Value> = entries
        .iter()
        .map(|(_, _, e)| e)
        .filter(|e| e["action"] == "retention.pruned")
        .collect();
    assert_eq!(pruned.len(), 1, "one event per prune");
    assert_eq!(pruned[0]["actor"]["kind"], "system");
    assert_eq!(pruned[0]["context"]["from_seq"], 0);
    assert_eq!(pruned[0]["context"]["to_seq"], first_kept);
    assert_eq!(pruned[0]["context"]["count"], first_kept);

    let verified = api.get("/api/v1/verify");
    assert_eq!(verified.status, 200, "{}", verified.text());
    let verified = verified.json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["pruned_below"], first_kept);
    assert_eq!(verified["first_seq"], first_kept);

    let gone = api.get("/api/v1/proof/inclusion?seq=0");
    gone.assert_error(410, "pruned", Some("seq"));

    let vkey = run(&["public-key", "--data-dir", node.dir_str()])
        .ok()
        .stdout;
    let vkey = vkey.trim();
    let kept_seq = (first_kept + 1).to_string();
    let out = server
        .cli(
            &key,
            &[
                "proof",
                "inclusion",
                "--seq",
                &kept_seq,
                "--public-key",
                vkey,
            ],
        )
        .ok();
    assert!(out.stdout.contains("OK: entry"), "{}", out.stdout);
    let from = before.to_string();
    let out = server
        .cli(
            &key,
            &[
                "proof",
                "consistency",
                "--from",
                &from,
                "--public-key",
                vkey,
            ],
        )
        .ok();
    assert!(out.stdout.contains("OK"), "{}", out.stdout);

    let export = node.file("kept.ndjson");
    server
        .cli(
            &key,
            &[
                "export",
                "--format",
                "ndjson",
                "--out",
                export.to_str().unwrap(),
            ],
        )
        .ok();
    let out = run(&[
        "verify",
        "--export",
        export.to_str().unwrap(),
        "--public-key",
        vkey,
    ])
    .ok();
    assert!(
        out.stdout.contains(&format!("(seq {first_kept} to")),
        "{}",
        out.stdout
    );
}

/// A pruned log migrates (to a new data directory, whatever the backend under test) with its
/// anchor and the Merkle nodes over its pruned prefix: the copy verifies from the anchor, a
/// kept entry's inclusion proof and consistency from a checkpoint signed before the prune
/// check out against the same public key, and the copy's server appends on from there. The
/// log is long enough (300 pruned, 45 kept: no boundary aligned to a subtree) that the copied
/// prefix holds both stored and recomputed-then-stored lower nodes.
#[test]
fn a_pruned_log_migrates_with_its_anchor_and_proofs() {
    let node = Node::new();
    let key = node.owner_key.clone();
    let mut server = Server::start(&node);
    let api = server.api(&key);
    append(&api, 150, "old");
    let mid = api.size() as u64;
    api.wait_checkpoint(mid);
    let early = api.checkpoint_size();
    append(&api, 149, "old");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cutoff = now_ms();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let kept = append(&api, 45, "new");
    api.wait_checkpoint(kept[44] + 1);
    server.stop();
    let (code, stdout, stderr) = prune(&node, cutoff + 365 * DAY_MS, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let first_kept = kept[0];
    assert!(first_kept > 256 && first_kept % 128 != 0, "{first_kept}");

    let copy = node.file("copy");
    let out = run(&[
        "migrate",
        "--from",
        node.dir_str(),
        "--to",
        copy.to_str().unwrap(),
    ])
    .ok();
    assert!(out.stdout.contains("OK: copy verified"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "entries below {first_kept} were pruned by retention"
        )),
        "{}",
        out.stdout
    );
    let out = run(&["verify", "--data-dir", copy.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("OK: log intact"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "started from the retention anchor: entries below {first_kept} were pruned"
        )),
        "{}",
        out.stdout
    );

    let vkey = run(&["public-key", "--data-dir", node.dir_str()])
        .ok()
        .stdout;
    let vkey = vkey.trim().to_owned();
    let mut copied = Server::start_with_env(&copy, &[]);
    let kept_seq = (first_kept + 7).to_string();
    let out = copied
        .cli(
            &key,
            &[
                "proof",
                "inclusion",
                "--seq",
                &kept_seq,
                "--public-key",
                &vkey,
            ],
        )
        .ok();
    assert!(out.stdout.contains("OK: entry"), "{}", out.stdout);
    let out = copied
        .cli(
            &key,
            &[
                "proof",
                "consistency",
                "--from",
                &early.to_string(),
                "--public-key",
                &vkey,
            ],
        )
        .ok();
    assert!(out.stdout.contains("OK"), "{}", out.stdout);
    let more = append(&copied.api(&key), 3, "after");
    // After the kept entries and the prune's own `retention.pruned` event.
    assert_eq!(more[0], kept[44] + 2, "{more:?}");
    copied.stop();
    let out = run(&["verify", "--data-dir", copy.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("OK: log intact"), "{}", out.stdout);
}

/// Someone with write access to the SQLite file moves the anchor forward over a kept entry
/// (past the triggers, with the entry's own hash and seal) and deletes that entry: the
/// anchor no longer matches the sealed `retention.pruned` event, and verify says so.
#[test]
fn an_anchor_moved_over_kept_entries_fails_verification() {
    let node = Node::embedded();
    let key = node.owner_key.clone();
    let mut server = Server::start(&node);
    let api = server.api(&key);
    append(&api, 3, "old");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cutoff = now_ms();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let kept = append(&api, 3, "new");
    api.wait_checkpoint(kept[2] + 1);
    server.stop();
    let (code, stdout, stderr) = prune(&node, cutoff + 365 * DAY_MS, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    node.verify().ok();

    let k = kept[0] as i64;
    let conn = rusqlite::Connection::open(node.dir.join("evident.db")).unwrap();
    conn.execute_batch(&format!(
        "DROP TRIGGER prune_anchor_forward;
         BEGIN;
         UPDATE prune_anchor SET below_seq = {next},
             hash = (SELECT hash FROM events WHERE seq = {k}),
             seal = (SELECT seal FROM events WHERE seq = {k}),
             recorded_at = (SELECT recorded_at FROM events WHERE seq = {k});
         INSERT INTO prune_permit (one, below_seq) VALUES (1, {next});
         DELETE FROM events WHERE seq = {k};
         DELETE FROM prune_permit;
         COMMIT;",
        next = k + 1
    ))
    .unwrap();
    drop(conn);
    let out = node.verify();
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.contains("retention.pruned event"),
        "{}",
        out.stderr
    );
    // Online, the same finding is a verdict (not a server error).
    server.restart();
    let verified = server.api(&key).get("/api/v1/verify");
    assert_eq!(verified.status, 200, "{}", verified.text());
    let verified = verified.json();
    assert_eq!(verified["ok"], false, "{verified}");
    assert_eq!(verified["violation"]["kind"], "bad_anchor", "{verified}");
    assert_eq!(verified["violation"]["seq"], k + 1, "{verified}");
    // The entry under the stored tree is gone, so the server serves the log read-only:
    // reads go on, nothing is appended on top of the damage, and it says why.
    let api = server.api(&key);
    assert!(!api.all_entries().is_empty());
    let refused = api
        .post_raw(
            "application/json",
            serde_json::to_vec(&common::event("after", "step.after")).unwrap(),
        )
        .unwrap();
    let body = refused.assert_error(503, "read_only", None);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is missing")),
        "{body}"
    );
    let log = server.server_log();
    assert!(log.contains("serving it read-only"), "{log}");
    let health = common::Api {
        key: None,
        ..api.clone()
    }
    .get("/healthz");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "read_only");
}

/// The server's own daily pruner (first run at once under the hidden test clock) prunes on a
/// restart, once, and the served log verifies from the anchor.
#[test]
fn the_server_prunes_on_its_own() {
    let node = Node::new();
    let key = node.owner_key.clone();
    let mut server = Server::start(&node);
    let api = server.api(&key);
    append(&api, 4, "old");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cutoff = now_ms();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let kept = append(&api, 2, "new");
    server.stop();

    let now = (cutoff + 365 * DAY_MS).to_string();
    let server = Server::start_with_env(&node.dir, &[("EVIDENT_TEST_NOW", now.as_str())]);
    let api = server.api(&key);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pruned = loop {
        let page = api.get("/api/v1/audit-log?action=retention.pruned");
        assert_eq!(page.status, 200, "{}", page.text());
        let events = page.json()["events"].as_array().unwrap().clone();
        if !events.is_empty() {
            break events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not prune:\n{}",
            server.server_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0]["context"]["to_seq"], kept[0]);
    // The deletions follow the event: wait for the log to start at the first kept entry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while api.all_entries()[0].0 != kept[0] {
        assert!(
            std::time::Instant::now() < deadline,
            "entries were not deleted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let verified = api.get("/api/v1/verify").json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["pruned_below"], kept[0]);
}

/// A client cannot write the event that records a prune (it drives the pruner's resumption
/// and anchors verification).
#[test]
fn clients_cannot_record_a_prune() {
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);
    let forged = common::event("retention", "retention.pruned");
    let answer = api
        .post_raw("application/json", serde_json::to_vec(&forged).unwrap())
        .unwrap();
    answer.assert_error(400, "invalid_event", Some("action"));
    assert_eq!(api.size(), 0);
}
