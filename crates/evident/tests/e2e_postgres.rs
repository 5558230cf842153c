//! End-to-end on PostgreSQL, with real `evident serve` processes and a real throwaway cluster
//! (one per test binary, a fresh database per test): several nodes on one database keep
//! their own dense chains; a second process for the same node id refuses to start and says
//! why; the triggers refuse a plain SQL client's edits and `verify` names a forced one; and
//! `evident migrate` carries a log SQLite → PostgreSQL → SQLite, verifying at every step
//! against the same checkpoints and public key. (The rest of the HTTP suite runs on
//! PostgreSQL with `EVIDENT_TEST_BACKEND=postgres`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Run, Server, create_key_with_env, evident, fresh_postgres_database, run};
use std::path::Path;

fn cluster() -> &'static evident_testpg::Cluster {
    evident_testpg::shared().unwrap_or_else(|e| panic!("{e}"))
}

/// The database name of a test URL.
fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// A new data directory for node `node_id` whose log is in `url`: (tempdir, dir, owner key).
fn pg_node(url: &str, node_id: &str) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let key = create_key_with_env(
        &dir,
        "owner",
        &[],
        &[("EVIDENT_STORAGE", url), ("EVIDENT_NODE_ID", node_id)],
    );
    (tmp, dir, key)
}

fn to_run(output: std::process::Output) -> Run {
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn verify_dir(dir: &Path) -> Run {
    run(&["verify", "--data-dir", dir.to_str().unwrap()])
}

/// `evident serve` on `dir` expected to refuse to start: its output.
fn serve_refused(dir: &Path, node_id: &str) -> Run {
    let output = evident()
        .args(["serve", "--data-dir", dir.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("EVIDENT_NODE_ID", node_id)
        .output()
        .unwrap();
    let run = to_run(output);
    assert_ne!(run.code, Some(0), "the server started:\n{}", run.stderr);
    run
}

#[test]
fn two_nodes_on_one_database_never_interleave() {
    let url = fresh_postgres_database();
    let (_ta, dir_a, key_a) = pg_node(&url, "node-a");
    let (_tb, dir_b, key_b) = pg_node(&url, "node-b");
    let server_a = Server::start_with_env(&dir_a, &[("EVIDENT_NODE_ID", "node-a")]);
    let server_b = Server::start_with_env(&dir_b, &[("EVIDENT_NODE_ID", "node-b")]);
    let apis = [server_a.api(&key_a), server_b.api(&key_b)];

    // Both nodes take appends at once, from several clients each.
    std::thread::scope(|scope| {
        for (n, api) in apis.iter().enumerate() {
            for client in 0..3 {
                scope.spawn(move || {
                    for i in 0..15 {
                        let batch = serde_json::json!([
                            common::event(&format!("n{n}-c{client}"), &format!("step.{i}")),
                            common::event(&format!("n{n}-c{client}"), "auth.login"),
                        ]);
                        api.append(&batch).unwrap();
                    }
                });
            }
        }
    });
    for (api, node) in apis.iter().zip(["node-a", "node-b"]) {
        let entries = api.all_entries();
        assert_eq!(entries.len(), 90, "{node}");
        let mut seqs: Vec<u64> = entries.iter().map(|(seq, _, _)| *seq).collect();
        common::assert_dense(&mut seqs);
        for (_, _, event) in &entries {
            assert_eq!(event["node_id"], node, "{event}");
        }
        api.wait_checkpoint(90);
    }
    // In the database too: two dense sequences side by side.
    let out = cluster()
        .psql(
            db_name(&url),
            "SELECT node_id, count(*), min(seq), max(seq) FROM evident.events \
             GROUP BY node_id ORDER BY node_id",
        )
        .unwrap();
    assert_eq!(out.trim(), "node-a|90|0|89\nnode-b|90|0|89", "{out}");
    drop((server_a, server_b));
    for dir in [&dir_a, &dir_b] {
        let out = verify_dir(dir).ok();
        assert!(
            out.stdout.contains("OK: log intact: 90 entries"),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn a_second_process_for_the_same_node_refuses_to_start_and_says_why() {
    let url = fresh_postgres_database();
    let (tmp, dir, key) = pg_node(&url, "node-a");
    let mut server = Server::start_with_env(&dir, &[("EVIDENT_NODE_ID", "node-a")]);
    let api = server.api(&key);
    api.append(&common::event("alice", "auth.login")).unwrap();

    // The same data directory copied to another place (another machine, say): its flock
    // does not help, the writer lease in the database does.
    let copy = tmp.path().join("copy");
    let status = std::process::Command::new("cp")
        .args(["-a", dir.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = serve_refused(&copy, "node-a");
    assert!(
        out.stderr
            .contains("node \"node-a\" is already being served"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("writer lease"), "{}", out.stderr);
    assert!(
        out.stderr.contains("node_id"),
        "says what to do: {}",
        out.stderr
    );

    // Another data directory (other keys) claiming the same node id: refused too, and once
    // the first server is gone, still refused (the database binds the node id to its key).
    let (_t2, other, _) = {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        // Creating the directory records the identity: refused already.
        let out = to_run(
            evident()
                .args(["keys", "create", "--data-dir", dir.to_str().unwrap()])
                .args(["--role", "owner"])
                .env("EVIDENT_STORAGE", &url)
                .env("EVIDENT_NODE_ID", "node-a")
                .output()
                .unwrap(),
        );
        assert_ne!(out.code, Some(0), "{}", out.stdout);
        assert!(
            out.stderr
                .contains("two data directories use the same node id"),
            "{}",
            out.stderr
        );
        (tmp, dir, ())
    };
    assert_eq!(server.stop(), Some(0));
    let out = serve_refused(&other, "node-a");
    assert!(
        out.stderr
            .contains("two data directories use the same node id"),
        "{}",
        out.stderr
    );

    // The node itself starts again and kept its log.
    let server = Server::start_with_env(&dir, &[("EVIDENT_NODE_ID", "node-a")]);
    assert_eq!(server.api(&key).size(), 1);
}

#[test]
fn the_database_refuses_edits_and_verify_names_a_forced_one() {
    let node = Node::postgres();
    let storage = std::fs::read_to_string(node.dir.join("node.toml")).unwrap();
    let url = storage
        .lines()
        .find_map(|l| l.strip_prefix("storage = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let db = db_name(&url).to_owned();
    let mut server = Server::start(&node);
    let api = server.api(&node.owner_key);
    for i in 0..5 {
        api.append(&common::event("alice", &format!("config.step{i}")))
            .unwrap();
    }
    api.wait_checkpoint(5);
    assert_eq!(server.stop(), Some(0), "graceful stop");
    node.verify().ok();

    // Layer 1: the triggers refuse a plain SQL client's edits.
    for sql in [
        "UPDATE evident.events SET actor_id = 'mallory' WHERE seq = 2",
        "DELETE FROM evident.events WHERE seq = 2",
        "TRUNCATE evident.events",
    ] {
        let err = cluster().psql(&db, sql).unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    node.verify().ok();

    // Layer 2: past the triggers (a superuser disables them), the edit is caught and named.
    cluster()
        .psql(
            &db,
            "ALTER TABLE evident.events DISABLE TRIGGER events_append_only; \
             UPDATE evident.events SET actor_id = 'mallory' WHERE seq = 2",
        )
        .unwrap();
    let out = node.verify().code(1);
    assert!(out.stderr.starts_with("FAILED at seq 2:"), "{}", out.stderr);
    assert!(out.stderr.contains("hash chain broken"), "{}", out.stderr);
    cluster()
        .psql(
            &db,
            "UPDATE evident.events SET actor_id = 'alice' WHERE seq = 2",
        )
        .unwrap();
    node.verify().ok();
    cluster()
        .psql(&db, "DELETE FROM evident.events WHERE seq = 4")
        .unwrap();
    let out = node.verify().code(1);
    assert!(out.stderr.contains("rolled back"), "{}", out.stderr);
}

/// Appends `n` events through a server on `dir` (started with `envs`), waits for the
/// checkpoint, stops it; returns the server's public key.
fn append_through_server(dir: &Path, key: &str, n: usize, envs: &[(&str, &str)]) -> String {
    let mut server = Server::start_with_env(dir, envs);
    let api = server.api(key);
    let before = api.size();
    for i in 0..n {
        api.append(&common::event("alice", &format!("step.{i}")))
            .unwrap();
    }
    api.wait_checkpoint((before + n) as u64);
    let vkey = server
        .cli(key, &["public-key"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(server.stop(), Some(0));
    vkey
}

fn checkpoints_of(dir: &Path, key: &str, envs: &[(&str, &str)]) -> (String, usize) {
    let mut server = Server::start_with_env(dir, envs);
    let api = server.api(key);
    let note = api.get("/api/v1/checkpoint").text();
    let size = api.size();
    assert_eq!(server.stop(), Some(0));
    (note, size)
}

#[test]
fn migrate_sqlite_to_postgres_to_sqlite_verifies_at_every_step() {
    // 1. A node on the embedded store.
    let node = Node::embedded();
    let vkey = append_through_server(&node.dir, &node.owner_key, 20, &[]);
    node.verify().ok();
    let (note, size) = checkpoints_of(&node.dir, &node.owner_key, &[]);
    assert_eq!(size, 20);

    // 2. Into PostgreSQL.
    let url = fresh_postgres_database();
    let out = run(&["migrate", "--from", node.dir_str(), "--to", &url]).ok();
    assert!(
        out.stdout.contains("OK: copy verified: 20 entries"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&vkey), "{}", out.stdout);
    // A second copy onto the same log is refused.
    let again = run(&["migrate", "--from", node.dir_str(), "--to", &url]).code(1);
    assert!(
        again.stderr.contains("already holds 20 entries"),
        "{}",
        again.stderr
    );
    // The data directory switches over when started on that database, and goes on there.
    let storage = [("EVIDENT_STORAGE", url.as_str())];
    let (pg_note, pg_size) = checkpoints_of(&node.dir, &node.owner_key, &storage);
    assert_eq!((pg_note, pg_size), (note, 20), "the same signed checkpoint");
    let toml = std::fs::read_to_string(node.dir.join("node.toml")).unwrap();
    assert!(toml.contains(&format!("storage = \"{url}\"")), "{toml}");
    assert_eq!(
        append_through_server(&node.dir, &node.owner_key, 5, &[]),
        vkey
    );
    let out = node.verify().ok();
    assert!(
        out.stdout.contains("OK: log intact: 25 entries"),
        "{}",
        out.stdout
    );
    // Starting it on the embedded store again is refused: its log is in PostgreSQL now.
    let out = to_run(
        evident()
            .args([
                "serve",
                "--data-dir",
                node.dir_str(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--storage", "embedded"])
            .output()
            .unwrap(),
    );
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("evident migrate"), "{}", out.stderr);

    // 3. Back into a new embedded data directory.
    let back = node.file("back");
    let out = run(&[
        "migrate",
        "--from",
        node.dir_str(),
        "--to",
        back.to_str().unwrap(),
    ])
    .ok();
    assert!(
        out.stdout.contains("OK: copy verified: 25 entries"),
        "{}",
        out.stdout
    );
    let out = verify_dir(&back).ok();
    assert!(
        out.stdout.contains("OK: log intact: 25 entries"),
        "{}",
        out.stdout
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["checkpoint.key", "seal.key"] {
            let mode = std::fs::metadata(back.join("keys").join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }
    // Same key, same checkpoints, the same API keys, and it takes appends.
    let (back_note, back_size) = checkpoints_of(&back, &node.owner_key, &[]);
    let (pg_note, _) = checkpoints_of(&node.dir, &node.owner_key, &[]);
    assert_eq!((back_note, back_size), (pg_note, 25));
    assert_eq!(append_through_server(&back, &node.owner_key, 3, &[]), vkey);
    verify_dir(&back).ok();
}
