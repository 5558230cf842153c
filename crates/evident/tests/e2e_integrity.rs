//! End to end, through the real binary: tampering is caught. Rows edited in the database
//! past its triggers fail `evident verify --data-dir`; any byte changed in an export fails
//! `evident verify --export`; an export older than a checkpoint held elsewhere is flagged;
//! proofs fetched from the server check out locally against its key and no other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Run, Server, run};
use std::path::Path;

fn append_cli(server: &Server, key: &str, actor: &str, action: &str) -> u64 {
    let out = server
        .cli(
            key,
            &[
                "append",
                "--actor",
                actor,
                "--actor-kind",
                "user",
                "--action",
                action,
                "--target",
                "user:alice",
                "--outcome",
                "failure",
                "--severity",
                "warning",
                "--ip",
                "203.0.113.7",
                "--context",
                r#"{"attempt":1,"reason":"bad password"}"#,
            ],
        )
        .ok();
    let line = out.stdout.lines().next().unwrap();
    let seq = line
        .strip_prefix("seq=")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no receipt: {}", out.stdout));
    assert!(line.contains(" hash="), "{line}");
    seq.parse().unwrap()
}

fn verify_export(file: &Path, key: &str, checkpoint: Option<&Path>) -> Run {
    let mut args = vec![
        "verify",
        "--export",
        file.to_str().unwrap(),
        "--public-key",
        key,
    ];
    if let Some(cp) = checkpoint {
        args.extend_from_slice(&["--checkpoint", cp.to_str().unwrap()]);
    }
    run(&args)
}

/// Runs `verify --export` on each mutated copy, in parallel; returns the failures' stderr.
fn verify_each(dir: &Path, key: &str, copies: Vec<(String, Vec<u8>)>) -> Vec<(String, Run)> {
    const WORKERS: usize = 4;
    let chunks: Vec<Vec<(String, Vec<u8>)>> = {
        let mut chunks: Vec<Vec<_>> = (0..WORKERS).map(|_| Vec::new()).collect();
        for (i, c) in copies.into_iter().enumerate() {
            chunks[i % WORKERS].push(c);
        }
        chunks
    };
    let handles: Vec<_> = chunks
        .into_iter()
        .enumerate()
        .map(|(w, chunk)| {
            let dir = dir.to_owned();
            let key = key.to_owned();
            std::thread::spawn(move || {
                let path = dir.join(format!("mutated-{w}.ndjson"));
                chunk
                    .into_iter()
                    .map(|(what, bytes)| {
                        std::fs::write(&path, &bytes).unwrap();
                        (what, verify_export(&path, &key, None))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

#[track_caller]
fn assert_failed(run: &Run, what: &str) {
    assert_eq!(
        run.code,
        Some(1),
        "{what}: expected a failed verification\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.starts_with("FAILED"),
        "{what}: no verdict: {}",
        run.stderr
    );
}

#[test]
fn exports_verify_offline_and_failures_name_the_problem() {
    let node = Node::new();
    let server = Server::start(&node);
    let key = &node.owner_key;
    // alice, bob, alice: alice's entries are not contiguous.
    assert_eq!(append_cli(&server, key, "alice", "auth.login.failed"), 0);
    assert_eq!(append_cli(&server, key, "bob", "auth.login.failed"), 1);
    assert_eq!(append_cli(&server, key, "alice", "auth.login.failed"), 2);

    let pubkey = node.file("node.pub");
    run(&[
        "public-key",
        "--data-dir",
        node.dir_str(),
        "--out",
        pubkey.to_str().unwrap(),
    ])
    .ok();
    let vkey = std::fs::read_to_string(&pubkey).unwrap();
    assert_eq!(server.cli(key, &["public-key"]).ok().stdout, vkey);
    assert!(vkey.starts_with("evident/node-1+"), "{vkey}");
    let pubkey_arg = pubkey.to_str().unwrap();

    let export = node.file("all.ndjson");
    let out = server
        .cli(
            key,
            &[
                "export",
                "--format",
                "ndjson",
                "--out",
                export.to_str().unwrap(),
            ],
        )
        .ok();
    // Header, the 3 events, the export's own self-audit event (recorded before the export
    // is cut), trailer.
    assert!(out.stderr.contains("exported 6 lines"), "{}", out.stderr);
    // The checkpoint right after the export is the one it was cut against.
    let same_cp = node.file("same.checkpoint");
    server
        .cli(
            key,
            &[
                "checkpoint",
                "--out",
                same_cp.to_str().unwrap(),
                "--public-key",
                pubkey_arg,
            ],
        )
        .ok();

    let out = verify_export(&export, pubkey_arg, None).ok();
    assert!(
        out.stdout.contains("4 entries in 1 run(s) (seq 0 to 3)"),
        "{}",
        out.stdout
    );
    // The key may be given as the string itself.
    verify_export(&export, vkey.trim(), None).ok();
    let out = verify_export(&export, pubkey_arg, Some(&same_cp)).ok();
    assert!(
        out.stdout.contains("consistent with your checkpoint"),
        "{}",
        out.stdout
    );

    let original = std::fs::read(&export).unwrap();
    // The messages name the problem. An edited actor in entry 0 (line 2) breaks its chain.
    let text = String::from_utf8(original.clone()).unwrap();
    let line2_start = text.find('\n').unwrap() + 1;
    let alice = line2_start + text[line2_start..].find("\"alice\"").unwrap() + 1;
    let mut bytes = original.clone();
    bytes[alice] = b'A';
    let tampered = node.file("tampered.ndjson");
    std::fs::write(&tampered, &bytes).unwrap();
    let out = verify_export(&tampered, pubkey_arg, None).code(1);
    assert!(
        out.stderr.contains("seq 0") && out.stderr.contains("line 2"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("chain"), "{}", out.stderr);
    // An edited byte of the checkpoint signature in the header.
    let sig = text.find("— evident/node-1 ").unwrap() + "— evident/node-1 ".len() + 4;
    let mut bytes = original.clone();
    bytes[sig] = if bytes[sig] == b'A' { b'B' } else { b'A' };
    std::fs::write(&tampered, &bytes).unwrap();
    let out = verify_export(&tampered, pubkey_arg, None).code(1);
    assert!(out.stderr.contains("line 1"), "{}", out.stderr);
    assert!(
        out.stderr.to_lowercase().contains("signature"),
        "{}",
        out.stderr
    );

    // Truncation anywhere fails: mid-line, at a line end, and the final newline alone.
    let line_ends: Vec<usize> = original
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    let mut cuts = vec![0, 1, original.len() / 2, original.len() - 1];
    cuts.extend(&line_ends[..line_ends.len() - 1]);
    for cut in cuts {
        std::fs::write(&tampered, &original[..cut]).unwrap();
        let out = verify_export(&tampered, pubkey_arg, None);
        assert_failed(&out, &format!("cut at {cut}"));
        assert!(
            out.stderr.contains("truncated"),
            "cut at {cut}: {}",
            out.stderr
        );
    }

    // A filtered export (alice: seqs 0 and 2, two runs) verifies too.
    let filtered = node.file("alice.ndjson");
    server
        .cli(
            key,
            &[
                "export",
                "--actor",
                "alice",
                "--out",
                filtered.to_str().unwrap(),
            ],
        )
        .ok();
    let out = verify_export(&filtered, pubkey_arg, None).ok();
    assert!(
        out.stdout.contains("2 entries in 2 run(s) (seq 0 to 2)"),
        "{}",
        out.stdout
    );
    // Dropping one of its entry lines is caught.
    let text = std::fs::read_to_string(&filtered).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let without: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&tampered, without).unwrap();
    assert_failed(&verify_export(&tampered, pubkey_arg, None), "line dropped");

    // Later the log grows; a checkpoint fetched then exposes the old export as a rollback.
    append_cli(&server, key, "carol", "config.threshold.changed");
    append_cli(&server, key, "carol", "config.threshold.changed");
    server.api(key).wait_checkpoint(5);
    let later_cp = node.file("later.checkpoint");
    server
        .cli(
            key,
            &[
                "checkpoint",
                "--out",
                later_cp.to_str().unwrap(),
                "--public-key",
                pubkey_arg,
            ],
        )
        .ok();
    let out = verify_export(&export, pubkey_arg, Some(&later_cp)).code(1);
    assert!(out.stderr.contains("rolled back"), "{}", out.stderr);

    // Another node's key verifies nothing of this one.
    let other = Node::new();
    let other_key = run(&["public-key", "--data-dir", other.dir_str()])
        .ok()
        .stdout;
    let out = verify_export(&export, other_key.trim(), None).code(1);
    assert!(out.stderr.starts_with("FAILED"), "{}", out.stderr);
}

#[test]
fn proofs_verify_locally_against_the_signed_checkpoint() {
    let node = Node::new();
    let server = Server::start(&node);
    let key = &node.owner_key;
    let api = server.api(key);
    for i in 0..7 {
        api.append(&common::event("alice", &format!("step.n{i}")))
            .unwrap();
    }
    api.wait_checkpoint(7);
    let vkey = run(&["public-key", "--data-dir", node.dir_str()])
        .ok()
        .stdout;
    let vkey = vkey.trim();

    let out = server
        .cli(
            key,
            &["proof", "inclusion", "--seq", "3", "--public-key", vkey],
        )
        .ok();
    assert!(
        out.stdout
            .contains("OK: entry 3 is included in the log of size 7"),
        "{}",
        out.stdout
    );
    // At a size with no checkpoint of its own: tied to the latest by a consistency proof.
    let out = server
        .cli(
            key,
            &[
                "proof",
                "inclusion",
                "--seq",
                "1",
                "--size",
                "2",
                "--public-key",
                vkey,
            ],
        )
        .ok();
    assert!(out.stdout.contains("log of size 2"), "{}", out.stdout);
    let out = server
        .cli(
            key,
            &[
                "proof",
                "consistency",
                "--from",
                "3",
                "--to",
                "7",
                "--public-key",
                vkey,
            ],
        )
        .ok();
    assert!(
        out.stdout
            .contains("OK: the log of size 3 is a prefix of the log of size 7"),
        "{}",
        out.stdout
    );

    // A checkpoint held outside: the log that grew later still extends it.
    let held = node.file("held.checkpoint");
    server
        .cli(key, &["checkpoint", "--out", held.to_str().unwrap()])
        .ok();
    api.append(&common::event("bob", "later.action")).unwrap();
    api.wait_checkpoint(8);
    let out = server
        .cli(
            key,
            &[
                "proof",
                "consistency",
                "--checkpoint",
                held.to_str().unwrap(),
                "--public-key",
                vkey,
            ],
        )
        .ok();
    assert!(
        out.stdout.contains("is a prefix of the log of size 8"),
        "{}",
        out.stdout
    );

    // Out-of-range requests are the server's 404 `out_of_range`, shown readably.
    let out = server
        .cli(
            key,
            &["proof", "inclusion", "--seq", "99", "--public-key", vkey],
        )
        .code(1);
    assert!(
        out.stderr.contains("404") && out.stderr.contains("out_of_range"),
        "{}",
        out.stderr
    );

    // Another node's key: the checkpoint does not verify.
    let other = Node::new();
    let other_key = run(&["public-key", "--data-dir", other.dir_str()])
        .ok()
        .stdout;
    let out = server
        .cli(
            key,
            &[
                "proof",
                "inclusion",
                "--seq",
                "3",
                "--public-key",
                other_key.trim(),
            ],
        )
        .code(1);
    assert!(out.stderr.contains("does not verify"), "{}", out.stderr);
}

#[test]
fn the_database_refuses_edits_and_verify_names_a_forced_one() {
    // Edits the SQLite file itself (e2e_postgres.rs does the same on PostgreSQL).
    let node = Node::embedded();
    let mut server = Server::start(&node);
    let api = server.api(&node.owner_key);
    for i in 0..5 {
        api.append(&common::event("alice", &format!("config.step{i}")))
            .unwrap();
    }
    api.wait_checkpoint(5);
    assert_eq!(server.stop(), Some(0), "graceful stop");
    node.verify().ok();

    let db = node.dir.join("evident.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let actor_of = |seq: i64| -> String {
        conn.query_row("SELECT actor_id FROM events WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let count = || -> i64 {
        conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap()
    };

    // Layer 1: the triggers refuse any edit, whoever asks.
    let err = conn
        .execute("UPDATE events SET actor_id = 'mallory' WHERE seq = 2", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("DELETE FROM events WHERE seq = 2", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute(
            "INSERT OR REPLACE INTO events SELECT * FROM events WHERE seq = 2",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_eq!(actor_of(2), "alice");
    assert_eq!(count(), 5);
    node.verify().ok();

    // Layer 2: past the triggers, the edit is caught and named.
    conn.execute_batch("DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;")
        .unwrap();
    conn.execute("UPDATE events SET actor_id = 'mallory' WHERE seq = 2", [])
        .unwrap();
    let out = node.verify().code(1);
    assert!(out.stderr.starts_with("FAILED at seq 2:"), "{}", out.stderr);
    assert!(out.stderr.contains("hash chain broken"), "{}", out.stderr);

    // Undoing the edit restores a verifying log: the check is exact, not a flag.
    conn.execute("UPDATE events SET actor_id = 'alice' WHERE seq = 2", [])
        .unwrap();
    node.verify().ok();

    // Deleting the newest entry is caught against the signed checkpoint.
    conn.execute("DELETE FROM events WHERE seq = 4", [])
        .unwrap();
    let out = node.verify().code(1);
    assert!(out.stderr.contains("rolled back"), "{}", out.stderr);
}

/// The single-byte change at `i`: alternately a low-bit flip (digit to digit, letter to
/// letter) and a case flip (which the one-exact-form rule must catch).
fn mutate(bytes: &[u8], i: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[i] ^= if i % 2 == 0 { 0x01 } else { 0x20 };
    out
}

/// Where byte `i` of `bytes` is, for a failure message: line number and the text around it.
fn locate(bytes: &[u8], i: usize) -> String {
    let line = bytes[..i].iter().filter(|b| **b == b'\n').count() + 1;
    let from = i.saturating_sub(25);
    let to = (i + 25).min(bytes.len());
    format!(
        "byte {i} (line {line}, {:?} in …{}…)",
        bytes[i] as char,
        String::from_utf8_lossy(&bytes[from..to])
    )
}

#[test]
fn every_changed_byte_of_an_export_is_caught() {
    let node = Node::new();
    let server = Server::start(&node);
    let key = &node.owner_key;
    for actor in ["alice", "bob", "bob", "alice"] {
        append_cli(&server, key, actor, "auth.login.failed");
    }
    let vkey = run(&["public-key", "--data-dir", node.dir_str()])
        .ok()
        .stdout;
    let verifier = evident_core::NoteVerifier::parse(vkey.trim()).unwrap();
    // bob's entries 1 and 2: one run whose lines carry both markers with hashes in them; and
    // the whole log: one run with empty markers and plain lines between.
    let filtered = node.file("filtered.ndjson");
    let whole = node.file("whole.ndjson");
    let export = |file: &Path, filter: &[&str]| {
        let mut args = vec!["export", "--out", file.to_str().unwrap()];
        args.extend_from_slice(filter);
        server.cli(key, &args).ok();
    };
    export(&filtered, &["--actor", "bob"]);
    export(&whole, &[]);

    // Every byte of the filtered export, through the core's verifier (the one the CLI
    // streams the file into); each check verifies a signature, slow in a debug build.
    let original = std::fs::read(&filtered).unwrap();
    evident_core::export::verify_export(&original, verifier.clone(), None).unwrap();
    let positions: Vec<usize> = (0..original.len()).collect();
    let missed: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = positions
            .chunks(original.len().div_ceil(2))
            .map(|chunk| {
                let (original, verifier) = (&original, &verifier);
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter(|&&i| {
                            let changed = mutate(original, i);
                            evident_core::export::verify_export(&changed, verifier.clone(), None)
                                .is_ok()
                        })
                        .map(|&i| locate(original, i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });

    // A spread sample of both files, first and last bytes included, through the binary.
    let mut missed_by_cli = Vec::new();
    for file in [&filtered, &whole] {
        let bytes = std::fs::read(file).unwrap();
        let step = (bytes.len() / 40).max(1);
        let mut sample: Vec<usize> = (0..bytes.len()).step_by(step).collect();
        sample.extend([1, bytes.len() - 2, bytes.len() - 1]);
        let copies = sample
            .into_iter()
            .map(|i| (locate(&bytes, i), mutate(&bytes, i)))
            .collect();
        for (what, run) in verify_each(node.tmp.path(), vkey.trim(), copies) {
            if run.code != Some(1) || !run.stderr.starts_with("FAILED") {
                missed_by_cli.push(format!("{}: {what}: exit {:?}", file.display(), run.code));
            }
        }
    }
    assert!(
        missed_by_cli.is_empty(),
        "evident verify --export accepted changed files:\n{}",
        missed_by_cli.join("\n")
    );
    assert!(
        missed.is_empty(),
        "{} of {} single-byte changes of the filtered export were not caught:\n{}",
        missed.len(),
        original.len(),
        missed.join("\n")
    );
}
