//! The tamper matrix, through the real binary: each attack in docs/THREAT-MODEL.md is applied
//! straight to a copy of a stopped node's SQLite file (past its triggers, as an attacker with
//! the file would), and both verification paths are run on the result:
//! - online: `evident verify --data-dir` on the tampered directory (seals checked with the
//!   node's secret, roots against the stored signed checkpoints), and the kind the server's
//!   `GET /api/v1/verify` names;
//! - offline: a server started on the tampered directory cuts an export that carries a
//!   consistency proof from a checkpoint the owner kept elsewhere before the attack, and
//!   `evident verify --export F --public-key K --checkpoint C` judges it.
//!
//! Each attack says what each path must report: the first bad sequence number and the kind,
//! or that the path cannot see it by design (and then the other one must). An attack that
//! leaves the database unable to serve (the server refuses to start) counts as detected at
//! start-up, and so does an export the node refuses naming the missing entry (a log shorter
//! than the checkpoint the node recorded signing: it signs no smaller one). A second test covers exports across a deleted row that a bundle can show (the run
//! goes on across the hole and its verification names it) and one it cannot (refused with 409
//! `log_damaged`, naming the missing entry).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    Node, Run, Server, attacker_db, copy_dir, event, run, saved_checkpoint_size, verify_export,
};
use evident_core::event::EventInput;
use evident_core::{ChainHead, SealKey, SealedEntry};
use evident_store::{Filter, Order};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Entries in the log when the owner takes the checkpoint it keeps elsewhere.
const SIZE: u64 = 12;
/// Entries in the older copy of the data directory.
const OLDER: u64 = 6;

/// Every stored entry of `dir`, in order.
fn entries(dir: &Path) -> Vec<SealedEntry> {
    let store = evident_server::NodeFiles::open_readonly(dir)
        .unwrap()
        .open_store()
        .unwrap();
    let mut out = Vec::new();
    store
        .scan(&Filter::default(), Order::Ascending, None, None, &mut |e| {
            out.push(e);
            ControlFlow::Continue(())
        })
        .unwrap();
    out
}

fn input_of(e: &SealedEntry) -> EventInput {
    let e = &e.event;
    EventInput {
        occurred_at: e.occurred_at,
        tenant: e.tenant.clone(),
        actor: e.actor.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        outcome: e.outcome,
        severity: e.severity,
        context: e.context.clone(),
    }
}

/// A key the attacker made up: not the node's secret.
fn attacker_key() -> SealKey {
    SealKey::new(&[0x66; 32]).unwrap()
}

/// Sequences `input` onto `head` with the id, time, node, appender and so encoding version of
/// entry `like`, sealed with `key`.
fn append_like(
    head: &mut ChainHead,
    like: &SealedEntry,
    input: EventInput,
    key: &SealKey,
    nodes: &mut Vec<(evident_core::merkle::NodeId, evident_core::Hash)>,
) -> SealedEntry {
    let e = &like.event;
    match &e.appended_by {
        Some(by) => head.append(e.id, e.recorded_at, &e.node_id, by, input, key, nodes),
        None => head.append_v1(e.id, e.recorded_at, &e.node_id, input, key, nodes),
    }
}

/// Rebuilds the whole log of `dir` as an attacker would after editing entry `edited` (its
/// actor becomes "mallory"): every chain hash, seal and Merkle node recomputed from the
/// start, entries before `edited` sealed with the node's secret (they come out identical to
/// the stored ones), `edited` and after sealed with `later_key`. Stored checkpoints are
/// deleted unless `keep_checkpoints`: the attacker cannot sign new ones.
fn rewrite(dir: &Path, edited: u64, later_key: &SealKey, keep_checkpoints: bool) {
    let files = evident_server::NodeFiles::open_readonly(dir).unwrap();
    let node_key = files.seal_key().clone();
    let old = entries(dir);
    let mut head = ChainHead::genesis();
    let mut nodes = Vec::new();
    let mut new = Vec::new();
    for e in &old {
        let mut input = input_of(e);
        let key = if e.event.seq < edited {
            &node_key
        } else {
            later_key
        };
        if e.event.seq == edited {
            input.actor.id = "mallory".to_owned();
        }
        let entry = append_like(&mut head, e, input, key, &mut nodes);
        if e.event.seq < edited {
            assert_eq!((entry.hash, entry.seal), (e.hash, e.seal), "replay differs");
        }
        new.push(entry);
    }
    let conn = attacker_db(dir);
    conn.execute_batch("DELETE FROM events; DELETE FROM merkle_nodes;")
        .unwrap();
    if !keep_checkpoints {
        conn.execute_batch("DELETE FROM checkpoints").unwrap();
    }
    drop(conn);
    files.open_store().unwrap().append(&new, &nodes).unwrap();
}

/// Swaps every column but `seq` of entries `a` and `b`.
fn swap_rows(conn: &rusqlite::Connection, a: u64, b: u64) {
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE pair AS SELECT * FROM events WHERE seq IN ({a}, {b});
         DELETE FROM events WHERE seq IN ({a}, {b});
         UPDATE pair SET seq = CASE seq WHEN {a} THEN {b} ELSE {a} END;
         INSERT INTO events SELECT * FROM pair;
         DROP TABLE pair;"
    ))
    .unwrap();
}

/// What a verification path must report for an attack.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Fails at this sequence number (None: the problem names no single entry) with this
    /// violation kind.
    Detected(Option<u64>, &'static str),
    /// Cannot be seen on this path by design; the reason is in the threat model.
    Blind(&'static str),
    /// The node refuses to export it, naming this missing entry: it holds its own record of
    /// the checkpoint it signed, and will neither sign a smaller one nor cut the export at a
    /// checkpoint it did not sign.
    Refused(u64),
}

struct Attack {
    name: &'static str,
    apply: fn(&Ctx, &Path),
    online: Expect,
    offline: Expect,
}

/// What the attacks and checks need: the pristine stopped directory, its older copy, the
/// checkpoint kept elsewhere and the public key.
struct Ctx {
    node: Node,
    older: PathBuf,
    checkpoint: PathBuf,
    public_key: String,
}

fn attacks() -> Vec<Attack> {
    vec![
        Attack {
            name: "edit a field (actor of entry 4)",
            apply: |_, dir| {
                attacker_db(dir)
                    .execute("UPDATE events SET actor_id = 'mallory' WHERE seq = 4", [])
                    .unwrap();
            },
            online: Expect::Detected(Some(4), "chain_broken"),
            offline: Expect::Detected(Some(4), "chain_broken"),
        },
        Attack {
            name: "delete a row (entry 5)",
            apply: |_, dir| {
                attacker_db(dir)
                    .execute("DELETE FROM events WHERE seq = 5", [])
                    .unwrap();
            },
            online: Expect::Detected(Some(5), "sequence_gap"),
            // The server starts read-only (entry 5's leaf can no longer be recomputed under
            // the latest checkpoint) and exports what is stored: the run goes on across the
            // hole, so the export's own check stops there.
            offline: Expect::Detected(Some(5), "sequence_gap"),
        },
        Attack {
            name: "insert a forged row (at 3, later rows renumbered)",
            apply: |_, dir| {
                let old = entries(dir);
                let conn = attacker_db(dir);
                // Shift entries 3.. up by one, highest first.
                for seq in (3..old.len() as i64).rev() {
                    conn.execute("UPDATE events SET seq = seq + 1 WHERE seq = ?1", [seq])
                        .unwrap();
                }
                // A well-formed entry chained onto entry 2, sealed with a made-up key.
                let mut head = ChainHead {
                    next_seq: 3,
                    last_hash: old[2].hash,
                    tree: evident_core::CompactRange::new(),
                };
                let forged = append_like(
                    &mut head,
                    &old[3],
                    input_of(&old[3]),
                    &attacker_key(),
                    &mut Vec::new(),
                );
                conn.execute(
                    "INSERT INTO events SELECT 3, id, recorded_at, occurred_at, node_id, tenant, \
                     'mallory', actor_kind, ip, user_agent, action, target_kind, target_id, \
                     outcome, severity, context, ?1, ?2, appended_by FROM events WHERE seq = 4",
                    rusqlite::params![forged.hash.as_bytes(), forged.seal.as_bytes()],
                )
                .unwrap();
            },
            // The forged row's own hash is over 'alice', not 'mallory': its chain breaks.
            // The server starts read-only (its tree, recomputed from the rows, no longer has
            // the latest checkpoint's root) and exports up to that checkpoint.
            online: Expect::Detected(Some(3), "chain_broken"),
            offline: Expect::Detected(Some(3), "chain_broken"),
        },
        Attack {
            name: "swap two rows (entries 2 and 7)",
            apply: |_, dir| swap_rows(&attacker_db(dir), 2, 7),
            online: Expect::Detected(Some(2), "chain_broken"),
            offline: Expect::Detected(Some(2), "chain_broken"),
        },
        Attack {
            name: "truncate the tail (last 4 entries, their tree nodes and checkpoints)",
            apply: |_, dir| {
                let keep = SIZE - 4;
                attacker_db(dir)
                    .execute_batch(&format!(
                        "DELETE FROM events WHERE seq >= {keep};
                         DELETE FROM merkle_nodes WHERE (idx + 1) << level > {keep};
                         DELETE FROM checkpoints WHERE size > {keep};"
                    ))
                    .unwrap();
            },
            online: Expect::Blind(
                "what remains is a valid shorter log; only a checkpoint kept elsewhere remembers the lost tail",
            ),
            offline: Expect::Refused(SIZE - 4),
        },
        Attack {
            name: "truncate the tail, keeping the stored checkpoints",
            apply: |_, dir| {
                let keep = SIZE - 4;
                attacker_db(dir)
                    .execute_batch(&format!(
                        "DELETE FROM events WHERE seq >= {keep};
                         DELETE FROM merkle_nodes WHERE (idx + 1) << level > {keep};"
                    ))
                    .unwrap();
            },
            online: Expect::Detected(Some(SIZE - 4), "truncated"),
            offline: Expect::Refused(SIZE - 4),
        },
        Attack {
            name: "rewrite all hashes without the HMAC secret (edit entry 4, rechain, rebuild the tree)",
            apply: |_, dir| rewrite(dir, 4, &attacker_key(), false),
            online: Expect::Detected(Some(4), "seal_mismatch"),
            offline: Expect::Detected(None, "root_mismatch"),
        },
        Attack {
            name: "rewrite everything with the HMAC secret, without the signing key (stored checkpoints deleted)",
            apply: |_, dir| {
                let key = evident_server::NodeFiles::open_readonly(dir)
                    .unwrap()
                    .seal_key()
                    .clone();
                rewrite(dir, 4, &key, false)
            },
            online: Expect::Blind(
                "chain, seals and tree are all recomputed with the secret; no signed checkpoint of the old history is left in the store",
            ),
            offline: Expect::Detected(None, "root_mismatch"),
        },
        Attack {
            name: "rewrite everything with the HMAC secret, keeping the stored checkpoints",
            apply: |_, dir| {
                let key = evident_server::NodeFiles::open_readonly(dir)
                    .unwrap()
                    .seal_key()
                    .clone();
                rewrite(dir, 4, &key, true)
            },
            online: Expect::Detected(None, "root_mismatch"),
            offline: Expect::Detected(None, "root_mismatch"),
        },
        Attack {
            name: "restore an older copy of the data directory",
            apply: |ctx, dir| {
                std::fs::remove_dir_all(dir).unwrap();
                copy_dir(&ctx.older, dir);
            },
            online: Expect::Blind(
                "the older copy is a complete, validly signed log of its own time",
            ),
            offline: Expect::Detected(None, "truncated"),
        },
        Attack {
            name: "append a forged row at the end (tree extended, seal made up)",
            apply: |_, dir| {
                let files = evident_server::NodeFiles::open_readonly(dir).unwrap();
                let store = files.open_store().unwrap();
                let mut head = store.load_head().unwrap();
                let last = entries(dir).pop().unwrap();
                let mut input = input_of(&last);
                input.actor.id = "mallory".to_owned();
                let mut nodes = Vec::new();
                let forged = append_like(&mut head, &last, input, &attacker_key(), &mut nodes);
                store.append(&[forged], &nodes).unwrap();
            },
            online: Expect::Detected(Some(SIZE), "seal_mismatch"),
            offline: Expect::Blind(
                "an appended entry is a valid extension of the kept checkpoint, and seals need the node's secret to check",
            ),
        },
    ]
}

/// The first `FAILED at seq N` of a verdict.
fn failed_seq(stderr: &str) -> Option<u64> {
    let rest = stderr.split("FAILED at seq ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Phrases of each kind in the CLI's verdicts.
fn phrase(kind: &str) -> &'static str {
    match kind {
        "chain_broken" => "hash chain broken",
        "seal_mismatch" => "seal does not match",
        "sequence_gap" => "missing",
        "truncated" => "truncated",
        "root_mismatch" => "does not match the signed checkpoint",
        other => panic!("no phrase for {other}"),
    }
}

/// Checks a verification run against what was expected; returns a problem, if any.
fn judge(what: &str, run: &Run, expect: Expect) -> Option<String> {
    match expect {
        Expect::Blind(reason) => (run.code != Some(0)).then(|| {
            format!(
                "{what}: expected to pass (blind by design: {reason}), got exit {:?}: {}",
                run.code, run.stderr
            )
        }),
        Expect::Refused(seq) => {
            let named = format!("entry {seq} is missing");
            (run.code != Some(1)
                || !run.stderr.contains("the export was refused")
                || !run.stderr.contains(&named))
            .then(|| {
                format!(
                    "{what}: expected the export refused naming {named:?}, got exit {:?}: {}",
                    run.code, run.stderr
                )
            })
        }
        Expect::Detected(seq, kind) => {
            if run.code != Some(1) || !run.stderr.contains("FAILED") {
                return Some(format!(
                    "{what}: not detected (exit {:?})\n{}{}",
                    run.code, run.stdout, run.stderr
                ));
            }
            if let Some(seq) = seq {
                if failed_seq(&run.stderr) != Some(seq) {
                    return Some(format!("{what}: expected seq {seq}: {}", run.stderr));
                }
            }
            (!run.stderr.to_lowercase().contains(phrase(kind)))
                .then(|| format!("{what}: expected a {kind} verdict: {}", run.stderr))
        }
    }
}

fn setup() -> Ctx {
    let node = Node::new();
    let mut server = Server::start(&node);
    let api = server.api(&node.owner_key);
    for i in 0..OLDER {
        api.append(&event("alice", &format!("config.step{i}")))
            .unwrap();
    }
    assert_eq!(server.stop(), Some(0));
    let older = node.file("older");
    copy_dir(&node.dir, &older);
    server.restart();
    let api = server.api(&node.owner_key);
    for i in OLDER..SIZE {
        api.append(&event("alice", &format!("config.step{i}")))
            .unwrap();
    }
    api.wait_checkpoint(SIZE);
    let public_key = node.public_key();
    // The checkpoint the owner keeps elsewhere.
    let checkpoint = node.file("kept.checkpoint");
    server.keep_checkpoint(&node.owner_key, &checkpoint, &public_key);
    assert_eq!(server.stop(), Some(0));
    node.verify().ok();
    Ctx {
        node,
        older,
        checkpoint,
        public_key,
    }
}

/// The offline path on a tampered directory: start a server on it, export with a
/// consistency proof from the kept checkpoint, verify the export offline.
fn offline(ctx: &Ctx, dir: &Path, what: &str) -> Run {
    let server = std::panic::catch_unwind(|| Server::start_with_env(dir, &[]));
    let server = match server {
        Ok(server) => server,
        Err(panic) => {
            // The server refused the database: detected at start-up. Shown as a failed run
            // carrying the server's own log.
            let log = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            return Run {
                code: Some(1),
                stdout: String::new(),
                stderr: format!("FAILED: {what}: the server refused to start: {log}"),
            };
        }
    };
    let export = dir.parent().unwrap().join("export.ndjson");
    let file = export.to_str().unwrap();
    let kept = checkpoint_size(ctx).to_string();
    let with_proof = [
        "export",
        "--format",
        "ndjson",
        "--consistency-from",
        &kept,
        "--out",
        file,
    ];
    let mut out = server.cli(&ctx.node.owner_key, &with_proof);
    if out.stderr.contains("is beyond the log") {
        // A log shorter than the kept checkpoint cannot prove consistency with it: the
        // owner exports it as it is and the verifier compares sizes.
        out = server.cli(
            &ctx.node.owner_key,
            &["export", "--format", "ndjson", "--out", file],
        );
    }
    drop(server);
    if out.code != Some(0) {
        return Run {
            code: Some(1),
            stdout: out.stdout,
            stderr: format!("FAILED: the export was refused: {}", out.stderr),
        };
    }
    run(&[
        "verify",
        "--export",
        export.to_str().unwrap(),
        "--public-key",
        &ctx.public_key,
        "--checkpoint",
        ctx.checkpoint.to_str().unwrap(),
    ])
}

fn checkpoint_size(ctx: &Ctx) -> u64 {
    saved_checkpoint_size(&ctx.checkpoint)
}

#[test]
fn every_attack_is_detected_by_the_path_that_can_see_it() {
    let ctx = setup();
    assert_eq!(checkpoint_size(&ctx), SIZE);
    let mut problems = Vec::new();
    let mut table = Vec::new();
    for (i, attack) in attacks().into_iter().enumerate() {
        let work = ctx.node.file(&format!("attack-{i}"));
        let dir = work.join("data");
        copy_dir(&ctx.node.dir, &dir);
        (attack.apply)(&ctx, &dir);

        let online = run(&["verify", "--data-dir", dir.to_str().unwrap()]);
        problems.extend(judge(
            &format!("{} [online]", attack.name),
            &online,
            attack.online,
        ));
        let offline = offline(&ctx, &dir, attack.name);
        problems.extend(judge(
            &format!("{} [offline]", attack.name),
            &offline,
            attack.offline,
        ));
        // Every attack is caught by at least one path.
        assert!(
            matches!(attack.online, Expect::Detected(..))
                || matches!(attack.offline, Expect::Detected(..) | Expect::Refused(_)),
            "{}: blind on both paths",
            attack.name
        );
        table.push(format!(
            "{}\n  online:  {}\n  offline: {}",
            attack.name,
            online.stderr.lines().next().unwrap_or("OK"),
            offline.stderr.lines().next().unwrap_or("OK")
        ));
    }
    eprintln!("{}", table.join("\n"));
    assert!(
        problems.is_empty(),
        "tamper matrix:\n{}",
        problems.join("\n\n")
    );
}

#[test]
fn an_export_across_a_deleted_row_shows_the_gap_or_refuses_naming_it() {
    let node = Node::embedded();
    let mut server = Server::start(&node);
    let api = server.api(&node.owner_key);
    // alice at 0..=3 and 9..=11, bob at 4..=8.
    for i in 0..12 {
        let actor = if (4..=8).contains(&i) { "bob" } else { "alice" };
        api.append(&event(actor, &format!("config.step{i}")))
            .unwrap();
    }
    api.wait_checkpoint(12);
    let public_key = node.public_key();
    assert_eq!(server.stop(), Some(0));
    attacker_db(&node.dir)
        .execute("DELETE FROM events WHERE seq = 6", [])
        .unwrap();
    // Served read-only: the tree no longer gives the latest checkpoint's root.
    let server = Server::start(&node);
    let file = node.file("export.ndjson");

    // The whole log: every stored entry, one run across the hole; its verification stops
    // there and names it.
    server.export(&node.owner_key, "ndjson", &file, &[]).ok();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.lines().count(),
        1 + 11 + 1,
        "header, 11 entries, trailer"
    );
    assert!(
        text.ends_with("{\"end\":{\"entries\":11,\"runs\":1}}\n"),
        "{text}"
    );
    let out = verify_export(&file, &public_key).code(1);
    assert!(
        out.stderr.starts_with("FAILED at seq 6 ") && out.stderr.contains("entry 6 missing"),
        "{}",
        out.stderr
    );

    // bob's entries reach the hole: the same, in a filtered bundle.
    server
        .export(&node.owner_key, "ndjson", &file, &["--actor", "bob"])
        .ok();
    let out = verify_export(&file, &public_key).code(1);
    assert!(
        out.stderr.starts_with("FAILED at seq 6 ") && out.stderr.contains("entry 6 missing"),
        "{}",
        out.stderr
    );

    // alice's skip from 3 to 9 over stored entries of bob's: the hole cannot be placed in
    // that bundle, so the export is refused, naming the missing entry.
    let answer = server
        .api(&node.owner_key)
        .get("/api/v1/audit-log?format=ndjson&actor=alice");
    let body = answer.assert_error(409, "log_damaged", None);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("entry 6 is missing"), "{message}");
    assert!(message.contains("An export without a filter"), "{message}");
    let out = server
        .export(&node.owner_key, "ndjson", &file, &["--actor", "alice"])
        .code(1);
    assert!(
        out.stderr.contains("409") && out.stderr.contains("entry 6 is missing"),
        "{}",
        out.stderr
    );
}
