//! End-to-end on PostgreSQL, with real `evident serve` processes and a real throwaway cluster
//! (one per test binary, a fresh database per test): several nodes on one database keep
//! their own dense chains; a second process for the same node id refuses to start and says
//! why; a node whose lease session is cut takes the lease back and goes on, or, when another
//! process took it meanwhile, refuses writes (503 `lease_lost`) until it can take it back and
//! then writes on from the stored head; the triggers refuse a plain SQL client's edits and
//! `verify` names a forced one; and
//! `evident migrate` carries a log SQLite → PostgreSQL → SQLite, verifying at every step
//! against the same checkpoints and public key; and a node reaches its database over TLS with
//! `sslmode=verify-full` (a second cluster, TLS only), refusing to start with the wrong CA.
//! (The rest of the HTTP suite runs on PostgreSQL with `EVIDENT_TEST_BACKEND=postgres`.)
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
                .args([
                    "keys",
                    "create",
                    "--init",
                    "--data-dir",
                    dir.to_str().unwrap(),
                ])
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

/// The backend pid of the PostgreSQL session holding `node_id`'s writer lease (an advisory
/// lock held by a session of that node's application name).
fn lease_holder(db: &str, node_id: &str) -> i32 {
    let out = cluster()
        .psql(
            db,
            &format!(
                "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted \
                   AND a.application_name = 'evident {node_id}' \
                   AND a.datname = current_database()"
            ),
        )
        .unwrap();
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no single lease holder: {out:?}"))
}

/// Ends the session holding `node_id`'s lease, as an administrator would.
fn cut_lease(db: &str, node_id: &str) -> i32 {
    let pid = lease_holder(db, node_id);
    let out = cluster()
        .psql(db, &format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();
    assert_eq!(out.trim(), "t", "{out}");
    pid
}

/// (count, max seq) of `node_id`'s rows, as the database has them.
fn stored_rows(db: &str, node_id: &str) -> (u64, i64) {
    let out = cluster()
        .psql(
            db,
            &format!(
                "SELECT count(*), coalesce(max(seq), -1) FROM evident.events \
                 WHERE node_id = '{node_id}'"
            ),
        )
        .unwrap();
    let (count, max) = out.trim().split_once('|').unwrap();
    (count.parse().unwrap(), max.parse().unwrap())
}

/// The `/healthz` answer of `api`'s server: (status, body status).
fn health(api: &common::Api) -> (u16, String) {
    let answer = common::Api {
        key: None,
        ..api.clone()
    }
    .get("/healthz");
    let status = answer.json()["status"].as_str().unwrap().to_owned();
    (answer.status, status)
}

#[test]
fn a_cut_lease_session_is_taken_back_and_the_log_goes_on() {
    let url = fresh_postgres_database();
    let db = db_name(&url);
    let (_tmp, dir, key) = pg_node(&url, "node-a");
    let mut server = Server::start_with_env(&dir, &[("EVIDENT_NODE_ID", "node-a")]);
    let api = server.api(&key);
    for i in 0..3 {
        api.append(&common::event("alice", &format!("step.{i}")))
            .unwrap();
    }
    let cut = cut_lease(db, "node-a");

    // Nobody else took the lease: the next append takes it back, reloads the head from the
    // store (unchanged), and is stored on it.
    let receipts = api.append(&common::event("alice", "after.cut")).unwrap();
    assert_eq!(receipts[0].0, 3);
    assert_ne!(
        lease_holder(db, "node-a"),
        cut,
        "the lease is held by a new session"
    );
    let log = server.server_log();
    assert!(log.contains("the writer lease was lost"), "{log}");
    assert!(log.contains("took the writer lease back"), "{log}");
    assert_eq!(health(&api), (200, "ok".to_owned()));
    api.wait_checkpoint(4);
    assert_eq!(stored_rows(db, "node-a"), (4, 3));
    assert_eq!(server.stop(), Some(0));
    let out = verify_dir(&dir).ok();
    assert!(
        out.stdout.contains("OK: log intact: 4 entries"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_process_that_took_the_lease_makes_the_first_refuse_writes_until_it_is_free() {
    let url = fresh_postgres_database();
    let db = db_name(&url).to_owned();
    let (tmp, dir, key) = pg_node(&url, "node-a");
    let mut first = Server::start_with_env(&dir, &[("EVIDENT_NODE_ID", "node-a")]);
    let api_a = first.api(&key);
    for i in 0..4 {
        api_a
            .append(&common::event("alice", &format!("a.{i}")))
            .unwrap();
    }
    api_a.wait_checkpoint(4);

    // The lease session is cut, and before the first server notices, a second process for
    // the same node (a standby with a copy of the data directory) takes the lease.
    let copy = tmp.path().join("standby");
    let status = std::process::Command::new("cp")
        .args(["-a", dir.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    cut_lease(&db, "node-a");
    let mut second = Server::start_with_env(&copy, &[("EVIDENT_NODE_ID", "node-a")]);
    let api_b = second.api(&key);
    let standby_pid = lease_holder(&db, "node-a");

    // Both take requests at once: the second stores them, the first refuses every one with
    // 503 lease_lost and stores nothing.
    let (acked_b, refused_a) = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..2)
            .map(|client| {
                let api_b = &api_b;
                scope.spawn(move || {
                    (0..8)
                        .map(|i| {
                            api_b
                                .append(&common::event(&format!("b{client}"), &format!("b.{i}")))
                                .unwrap()[0]
                                .clone()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let refused = scope.spawn(|| {
            (0..4)
                .map(|i| {
                    api_a
                        .append(&common::event("alice", &format!("refused.{i}")))
                        .unwrap_err()
                })
                .collect::<Vec<_>>()
        });
        let acked: Vec<(u64, String)> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        (acked, refused.join().unwrap())
    });
    for answer in &refused_a {
        let body = answer.assert_error(503, "lease_lost", None);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("nothing was stored: "), "{message}");
        assert!(
            message.contains("the writer lease for node \"node-a\" was lost"),
            "{message}"
        );
        // Names who holds it now, and what the node does about it.
        assert!(
            message.contains(&format!("PostgreSQL session {standby_pid}")),
            "{message}"
        );
        assert!(message.contains("reads go on"), "{message}");
    }
    let raw = api_a
        .http
        .post(format!("{}/api/v1/events", api_a.url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&common::event("alice", "refused.again")).unwrap())
        .send()
        .unwrap();
    assert_eq!(raw.status().as_u16(), 503);
    assert!(raw.headers().contains_key("retry-after"), "{raw:?}");
    assert_eq!(health(&api_a), (503, "lease_lost".to_owned()));
    assert_eq!(health(&api_b), (200, "ok".to_owned()));
    let log = first.server_log();
    assert!(log.contains("cannot be taken back now"), "{log}");

    // The chain in the database: the first's four, then only the second's, dense.
    let mut acked_seqs: Vec<u64> = acked_b.iter().map(|(seq, _)| *seq).collect();
    acked_seqs.sort_unstable();
    assert_eq!(acked_seqs, (4..20).collect::<Vec<u64>>());
    // Reads go on at the first, and see the second's entries.
    let entries = api_a.all_entries();
    let mut seqs: Vec<u64> = entries.iter().map(|(seq, _, _)| *seq).collect();
    common::assert_dense(&mut seqs);
    for (seq, hash) in &acked_b {
        assert_eq!(&entries[*seq as usize].1, hash, "entry {seq}");
    }
    assert!(
        entries
            .iter()
            .all(|(_, _, e)| !e["action"].as_str().unwrap().starts_with("refused")),
        "a refused append was stored"
    );

    // The second process goes away: the first takes the lease back, reloads the head the
    // second left, and writes on from it.
    assert_eq!(second.stop(), Some(0));
    let (stored, last) = stored_rows(&db, "node-a");
    assert_eq!(stored, last as u64 + 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let resumed = loop {
        match api_a.append(&common::event("alice", "resumed")) {
            Ok(receipts) => break receipts,
            Err(answer) => {
                answer.assert_error(503, "lease_lost", None);
                assert!(
                    std::time::Instant::now() < deadline,
                    "the first server never took the lease back:\n{}",
                    first.server_log()
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    };
    assert_eq!(resumed[0].0, stored, "goes on from the stored head");
    assert_eq!(health(&api_a), (200, "ok".to_owned()));
    let log = first.server_log();
    assert!(log.contains("took the writer lease back"), "{log}");
    assert!(
        log.contains("another writer extended the log while the writer lease was lost"),
        "{log}"
    );
    for i in 0..3 {
        api_a
            .append(&common::event("alice", &format!("after.{i}")))
            .unwrap();
    }
    api_a.wait_checkpoint(stored + 4);
    assert_eq!(first.stop(), Some(0));
    let (count, max) = stored_rows(&db, "node-a");
    assert_eq!((count, max), (stored + 4, (stored + 3) as i64));
    // One chain, intact, under every checkpoint either process signed.
    for dir in [&dir, &copy] {
        let out = verify_dir(dir).ok();
        assert!(
            out.stdout
                .contains(&format!("OK: log intact: {} entries", stored + 4)),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn the_database_refuses_edits_and_verify_names_a_forced_one() {
    let node = Node::postgres();
    let url = node.storage_url();
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

#[test]
fn a_node_reaches_its_database_over_verified_tls() {
    // A cluster that takes TCP connections over TLS only, its certificate signed by a CA of
    // its own.
    let tls = evident_testpg::shared_tls().unwrap_or_else(|e| panic!("{e}"));
    let db = tls.create_database().unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        tls.url(&db),
        tls.ca_cert().unwrap().display()
    );
    let (_tmp, dir, key) = pg_node(&url, "node-tls");
    let server = Server::start_with(
        &dir,
        &[("EVIDENT_NODE_ID", "node-tls")],
        &["--storage", &url],
        None,
    );
    let api = server.api(&key);
    for i in 0..4 {
        let batch = serde_json::json!([
            common::event("alice", &format!("step.{i}")),
            common::event("bob", "auth.login"),
        ]);
        api.append(&batch).unwrap();
    }
    api.wait_checkpoint(8);
    // The server's view: every session of the node is encrypted.
    let out = tls
        .psql(
            "postgres",
            "SELECT count(*) > 0 AND bool_and(s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'evident node-tls'",
        )
        .unwrap();
    assert_eq!(out.trim(), "t", "{out}");
    drop(server);
    // The data directory records the TLS settings with the URL: verify finds the log again.
    let recorded = std::fs::read_to_string(dir.join("node.toml")).unwrap();
    assert!(
        recorded.contains("sslmode=verify-full&sslrootcert="),
        "{recorded}"
    );
    let out = verify_dir(&dir).ok();
    assert!(
        out.stdout.contains("OK: log intact: 8 entries"),
        "{}",
        out.stdout
    );

    // verify-full without sslrootcert trusts the system's roots, which SSL_CERT_FILE replaces
    // (as for OpenSSL): pointed at the test CA, a new node's first command gets through.
    let system_url = format!("{}?sslmode=verify-full", tls.url(&db));
    let other = tempfile::tempdir().unwrap();
    create_key_with_env(
        &other.path().join("data"),
        "owner",
        &[],
        &[
            ("EVIDENT_STORAGE", system_url.as_str()),
            ("EVIDENT_NODE_ID", "node-tls-system"),
            ("SSL_CERT_FILE", tls.ca_cert().unwrap().to_str().unwrap()),
        ],
    );

    // The same database trusted through the wrong CA: the server refuses to start and says
    // it is the certificate.
    let wrong = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        tls.url(&db),
        tls.unrelated_ca_cert().unwrap().display()
    );
    let fresh = tempfile::tempdir().unwrap();
    let output = evident()
        .args(["serve", "--data-dir", fresh.path().to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--storage", &wrong])
        .env("EVIDENT_NODE_ID", "node-tls-2")
        .output()
        .unwrap();
    let run = to_run(output);
    assert_ne!(run.code, Some(0), "the server started:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("invalid peer certificate: UnknownIssuer")
            && run.stderr.contains("sslmode=verify-full"),
        "{}",
        run.stderr
    );
}
