//! What only the embedded SQLite store has: append-only triggers, tampered rows read back,
//! frontier checks at load, schema versioning, and the bucketed indexes' edge cases (many
//! distinct values, reads across buckets). The behaviour both backends share (round trips,
//! every filter against an oracle, refused appends, checkpoints, API keys) is in contract.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use evident_core::Severity;
use evident_core::chain::recompute_hash;
use evident_store::{
    ActionFilter, Filter, Order, SqliteStore, Store, StoreError, StoredCheckpoint,
};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evident.db");
    (dir, path)
}

#[test]
fn ranges_with_many_distinct_values_are_still_exact() {
    // More distinct actions under a prefix and addresses in a block than a merge reads at once:
    // the plan reads another way, with the same results.
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    let mut w = Writer::new();
    let specs: Vec<Spec> = (0..1300u64)
        .map(|i| {
            let mut s = varied(i);
            s.action = if i % 10 == 0 {
                "other".to_owned()
            } else {
                format!("bulk.a{i}")
            };
            // A Spec holds 'static text: leak the test's addresses.
            let ip = format!("10.9.{}.{}", i / 256, i % 256);
            s.ip = Some(Box::leak(ip.into_boxed_str()));
            s
        })
        .collect();
    for chunk in specs.chunks(500) {
        w.append(&store, chunk);
    }
    let all = w.all.clone();
    let block = cidr("10.9.0.0/16");
    let small = cidr("10.9.2.0/23");
    let cases: Vec<Case<'_>> = vec![
        (
            Filter {
                ip: Some(block),
                ..Filter::default()
            },
            Box::new(move |e| in_block(e.event.actor.ip, block)),
        ),
        (
            Filter {
                action: Some(ActionFilter::Prefix("bulk".into())),
                ..Filter::default()
            },
            Box::new(|e| e.event.action.starts_with("bulk.")),
        ),
        (
            Filter {
                ip: Some(small),
                severity: Some(Severity::Error),
                ..Filter::default()
            },
            Box::new(move |e| {
                in_block(e.event.actor.ip, small) && e.event.severity >= Severity::Error
            }),
        ),
        (
            Filter {
                ip: Some(block),
                severity: Some(Severity::Critical),
                ..Filter::default()
            },
            Box::new(move |e| {
                in_block(e.event.actor.ip, block) && e.event.severity >= Severity::Critical
            }),
        ),
    ];
    for (filter, oracle) in &cases {
        let n = check_paged(&store, &all, filter, oracle.as_ref(), &[97, 1000]);
        assert!(n > 0, "{filter:?}");
    }
}

#[test]
fn reads_cross_index_buckets_in_order() {
    // The high-cardinality indexes are kept in buckets of 8192 entries: a log over three
    // buckets, with rare values in some buckets only (first, last, both sides of a boundary,
    // none in the middle of the second), read in both orders and across pages.
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    let mut w = Writer::new();
    let rare = [3u64, 8191, 8192, 20_000, 20_001];
    let specs: Vec<Spec> = (0..20_002u64)
        .map(|i| {
            let mut s = varied(i);
            if rare.contains(&i) {
                s.actor = "rare";
                s.target_kind = "node";
                s.target_id = "rare-target";
                s.ip = Some("198.51.100.7");
                s.severity = Severity::Emergency;
            }
            s
        })
        .collect();
    for chunk in specs.chunks(2500) {
        w.append(&store, chunk);
    }
    let all = w.all.clone();
    let time = |i: usize| all[i].event.recorded_at;
    let cases: Vec<Case<'_>> = vec![
        (
            Filter {
                actor: Some("rare".into()),
                ..Filter::default()
            },
            Box::new(|e| e.event.actor.id == "rare"),
        ),
        (
            Filter {
                target: Some("node:rare-target".into()),
                ..Filter::default()
            },
            Box::new(|e| e.event.target.id == "rare-target"),
        ),
        (
            Filter {
                ip: Some(cidr("198.51.100.7/32")),
                ..Filter::default()
            },
            Box::new(|e| in_block(e.event.actor.ip, cidr("198.51.100.7/32"))),
        ),
        (
            Filter {
                ip: Some(cidr("198.51.0.0/16")),
                ..Filter::default()
            },
            Box::new(|e| in_block(e.event.actor.ip, cidr("198.51.0.0/16"))),
        ),
        (
            // A block covering most rows: sorted within each bucket, in order across them.
            Filter {
                ip: Some(cidr("10.0.0.0/8")),
                ..Filter::default()
            },
            Box::new(|e| in_block(e.event.actor.ip, cidr("10.0.0.0/8"))),
        ),
        (
            Filter {
                actor: Some("alice".into()),
                from: Some(time(8000)),
                to: Some(time(16_500)),
                ..Filter::default()
            },
            Box::new(move |e| {
                e.event.actor.id == "alice"
                    && (time(8000)..time(16_500)).contains(&e.event.recorded_at)
            }),
        ),
        (
            Filter {
                actor: Some("bob".into()),
                from_seq: Some(8185),
                to_seq: Some(8200),
                ..Filter::default()
            },
            Box::new(|e| e.event.actor.id == "bob" && (8185..8200).contains(&e.event.seq)),
        ),
        (
            Filter {
                severity: Some(Severity::Emergency),
                ..Filter::default()
            },
            Box::new(|e| e.event.severity == Severity::Emergency),
        ),
    ];
    for (filter, oracle) in &cases {
        // Small pages where results are few, so that pages end inside and across buckets.
        let broad = filter.ip == Some(cidr("10.0.0.0/8"));
        let pages: &[u64] = if broad { &[3000] } else { &[2, 3000] };
        let n = check_paged(&store, &all, filter, oracle.as_ref(), pages);
        assert!(n > 0, "{filter:?}");
    }
    let got = seqs(&scan_all(
        &store,
        &Filter {
            actor: Some("rare".into()),
            ..Filter::default()
        },
        Order::Descending,
    ));
    assert_eq!(got, [20_001, 20_000, 8192, 8191, 3]);
}

// ---- immutability and tampering ----

fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

fn small_log(path: &Path) -> (SqliteStore, Writer) {
    log_of(path, 12)
}

/// A store of `n` varied entries and a checkpoint of them all.
fn log_of(path: &Path, n: u64) -> (SqliteStore, Writer) {
    let store = SqliteStore::open(path).unwrap();
    let mut w = Writer::new();
    let specs: Vec<Spec> = (0..n).map(varied).collect();
    w.append(&store, &specs);
    store
        .put_checkpoint(&StoredCheckpoint {
            size: n,
            root: w.head.tree.root(),
            signed_note: "example.org/log\n12\nroot\n".to_owned(),
            created_at: BASE_TIME,
        })
        .unwrap();
    (store, w)
}

#[test]
fn triggers_refuse_update_and_delete_of_the_log() {
    let (_dir, path) = temp_db();
    // 256 entries: the first stored Merkle node (level 8) exists.
    let (store, w) = log_of(&path, 256);
    let conn = raw(&path);
    for sql in [
        "UPDATE events SET actor_id = 'mallory' WHERE seq = 3",
        "UPDATE events SET seq = 100 WHERE seq = 11",
        "DELETE FROM events WHERE seq = 11",
        "DELETE FROM events",
        "UPDATE merkle_nodes SET hash = zeroblob(32) WHERE level = 8 AND idx = 0",
        "DELETE FROM merkle_nodes WHERE level = 8",
        "UPDATE checkpoints SET root = zeroblob(32)",
        "DELETE FROM checkpoints",
        "INSERT OR REPLACE INTO checkpoints VALUES (256, zeroblob(32), 'forged', 0)",
        "INSERT OR REPLACE INTO merkle_nodes VALUES (8, 0, zeroblob(32))",
        "REPLACE INTO events SELECT * FROM events WHERE seq = 4",
        // Filling in below the last entry is not appending either.
        "INSERT INTO events SELECT seq - 100, id, recorded_at, occurred_at, node_id, tenant, \
         actor_id, actor_kind, ip, user_agent, action, target_kind, target_id, outcome, \
         severity, context, hash, seal, appended_by FROM events WHERE seq = 11",
    ] {
        let err = conn.execute_batch(sql).unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(
        scan_all(&store, &Filter::default(), Order::Ascending),
        w.all
    );
    assert_eq!(store.load_head().unwrap(), w.head);
    assert_eq!(store.checkpoints().unwrap().len(), 1);
    assert_eq!(store.checkpoints().unwrap()[0].root, w.head.tree.root());
}

fn drop_triggers(conn: &rusqlite::Connection) {
    for table in ["events", "merkle_nodes", "checkpoints"] {
        for op in ["update", "delete", "replace"] {
            conn.execute_batch(&format!("DROP TRIGGER {table}_no_{op}"))
                .unwrap();
        }
    }
}

/// Scans everything, returning the seqs visited and the error.
fn scan_until_error(store: &SqliteStore) -> (Vec<u64>, Result<(), StoreError>) {
    let mut visited = Vec::new();
    let result = store.scan(&Filter::default(), Order::Ascending, None, None, &mut |e| {
        visited.push(e.event.seq);
        ControlFlow::Continue(())
    });
    (visited, result)
}

#[test]
fn tampered_rows_decode_or_fail_with_their_seq() {
    let (_dir, path) = temp_db();
    let (store, w) = small_log(&path);
    let conn = raw(&path);
    drop_triggers(&conn);

    // An edit that still decodes: the entry reads back changed, and its hash no longer
    // matches (what the verifier checks).
    conn.execute_batch("UPDATE events SET actor_id = 'mallory' WHERE seq = 3")
        .unwrap();
    let got = scan_all(&store, &Filter::default(), Order::Ascending);
    assert_eq!(got[3].event.actor.id, "mallory");
    let mut buf = Vec::new();
    assert_ne!(
        recompute_hash(&w.all[2].hash, &got[3].event, &mut buf),
        got[3].hash
    );
    assert_eq!(got[4], w.all[4]);
    // So does another key id, or none (the entry passed off as version 1).
    for (sql, seq, appended_by) in [
        (
            "UPDATE events SET appended_by = 'evk_aaaaaaaaaaaa' WHERE seq = 1",
            1,
            Some("evk_aaaaaaaaaaaa"),
        ),
        (
            "UPDATE events SET appended_by = NULL WHERE seq = 2",
            2,
            None,
        ),
    ] {
        conn.execute_batch(sql).unwrap();
        let got = scan_all(&store, &Filter::default(), Order::Ascending);
        assert_eq!(got[seq].event.appended_by.as_deref(), appended_by);
        assert_ne!(got[seq].event.appended_by, w.all[seq].event.appended_by);
        assert_ne!(
            recompute_hash(&w.all[seq - 1].hash, &got[seq].event, &mut buf),
            got[seq].hash,
            "{sql}"
        );
    }

    // Edits that cannot decode: reported at their row, after the rows before it.
    for (sql, seq) in [
        ("UPDATE events SET actor_kind = 'wizard' WHERE seq = 5", 5),
        (
            "UPDATE events SET context = '{\"b\":1, \"a\":2}' WHERE seq = 5",
            5,
        ),
        ("UPDATE events SET context = 'not json' WHERE seq = 6", 6),
        ("UPDATE events SET hash = x'0102' WHERE seq = 7", 7),
        ("UPDATE events SET seal = x'00' WHERE seq = 7", 7),
        ("UPDATE events SET id = x'00' WHERE seq = 8", 8),
        ("UPDATE events SET ip = x'0a000001' WHERE seq = 9", 9),
        ("UPDATE events SET severity = 99 WHERE seq = 9", 9),
        ("UPDATE events SET outcome = 'maybe' WHERE seq = 10", 10),
        (
            "UPDATE events SET tenant = 'not a tenant!' WHERE seq = 10",
            10,
        ),
        ("UPDATE events SET action = 'Config..X' WHERE seq = 11", 11),
        (
            "UPDATE events SET actor_id = CAST(x'ff' AS TEXT) WHERE seq = 11",
            11,
        ),
        (
            "UPDATE events SET appended_by = 'not a key!' WHERE seq = 6",
            6,
        ),
        ("UPDATE events SET appended_by = '' WHERE seq = 8", 8),
    ] {
        let backup: Vec<rusqlite::types::Value> = conn
            .query_row(
                &format!("SELECT * FROM events WHERE seq = {seq}"),
                [],
                |r| (0..19).map(|i| r.get(i)).collect(),
            )
            .unwrap();
        conn.execute_batch(sql).unwrap();
        let (visited, result) = scan_until_error(&store);
        match result {
            Err(StoreError::Corrupt {
                seq: Some(s),
                problem,
            }) => {
                assert_eq!(s, seq, "{sql}: {problem}");
            }
            other => panic!("{sql}: expected Corrupt at {seq}, got {other:?}"),
        }
        assert_eq!(visited, (0..seq).collect::<Vec<u64>>(), "{sql}");
        // Also when reached through an index.
        let by_actor = store.scan(
            &Filter {
                tenant: Some(w.all[seq as usize].event.tenant.clone()),
                ..Filter::default()
            },
            Order::Descending,
            None,
            None,
            &mut |_| ControlFlow::Continue(()),
        );
        if !sql.contains("tenant") {
            assert!(
                matches!(by_actor, Err(StoreError::Corrupt { seq: Some(s), .. }) if s == seq),
                "{sql}: {by_actor:?}"
            );
        }
        // Put the row back for the next case.
        conn.execute(&format!("DELETE FROM events WHERE seq = {seq}"), [])
            .unwrap();
        conn.execute(
            "INSERT INTO events VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)",
            rusqlite::params_from_iter(backup),
        )
        .unwrap();
    }
    let (visited, result) = scan_until_error(&store);
    result.unwrap();
    assert_eq!(visited.len(), 12);
}

#[test]
fn load_head_detects_a_frontier_that_disagrees_with_the_rows() {
    let corrupt = |store: &SqliteStore, what: &str| match store.load_head() {
        Err(StoreError::Corrupt { problem, .. }) => {
            assert!(problem.contains(what), "{problem}")
        }
        other => panic!("expected Corrupt ({what}), got {other:?}"),
    };
    // 300 = 256 + 32 + 8 + 4: the frontier is the stored node (8, 0) and three lower nodes
    // recomputed from the rows; a checkpoint of size 300 was stored.
    let fresh = || {
        let (dir, path) = temp_db();
        let (store, w) = log_of(&path, 300);
        assert_eq!(store.load_head().unwrap(), w.head);
        let conn = raw(&path);
        drop_triggers(&conn);
        (dir, store, conn)
    };

    // The last row's seal altered: its recomputed leaf changes the frontier.
    let (_d1, store, conn) = fresh();
    conn.execute_batch("UPDATE events SET seal = zeroblob(32) WHERE seq = 299")
        .unwrap();
    corrupt(&store, "does not match the latest checkpoint (size 300)");

    // The stored frontier node altered, then gone.
    let (_d2, store, conn) = fresh();
    conn.execute_batch("UPDATE merkle_nodes SET hash = zeroblob(32) WHERE level = 8 AND idx = 0")
        .unwrap();
    corrupt(&store, "does not match the latest checkpoint");
    conn.execute_batch("DELETE FROM merkle_nodes WHERE level = 8 AND idx = 0")
        .unwrap();
    corrupt(&store, "(level 8, index 0)");

    // The tail of the log cut below a stored node (rows gone, the node left), then all rows.
    let (_d3, store, conn) = fresh();
    conn.execute_batch("DELETE FROM events WHERE seq >= 250")
        .unwrap();
    corrupt(&store, "entries were removed");
    conn.execute_batch("DELETE FROM events").unwrap();
    corrupt(&store, "entries were removed");
}

// ---- refused appends ----

// ---- concurrency ----

// ---- checkpoints and keys ----

#[test]
fn a_newer_schema_is_refused() {
    let (_dir, path) = temp_db();
    drop(SqliteStore::open(&path).unwrap());
    raw(&path)
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    match SqliteStore::open(&path) {
        Err(StoreError::Backend(m)) => assert!(m.contains("schema version 99"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
