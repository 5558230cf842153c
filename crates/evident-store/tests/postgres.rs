//! PostgreSQL-only properties of the store, on a real throwaway cluster: the immutability
//! triggers against a plain SQL client (`psql`), the pruner's transaction-local flag, the
//! documented grant model, several nodes sharing one database without touching each other's
//! logs, the writer lease (advisory lock) that keeps a second process with the same node id
//! out, node identities bound to one key, and rows edited past the triggers reported as
//! corruption at their sequence number.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use evident_core::event::{Context, EventInput};
use evident_core::merkle::NodeId;
use evident_core::{
    Actor, ActorKind, ChainHead, Hash, Outcome, SealKey, SealedEntry, Severity, Target,
};
use evident_store::postgres::NodeRecord;
use evident_store::{Filter, Order, PostgresStore, Store, StoreError, StoredCheckpoint};
use std::ops::ControlFlow;

fn cluster() -> &'static evident_testpg::Cluster {
    evident_testpg::shared().unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh database: (name, URL).
fn database() -> (String, String) {
    let cluster = cluster();
    let name = cluster.create_database().unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.url(&name);
    (name, url)
}

/// Sequences `n` entries of `node` onto `head`.
fn batch(head: &mut ChainHead, node: &str, n: usize) -> (Vec<SealedEntry>, Vec<(NodeId, Hash)>) {
    let key = SealKey::new(&[5u8; 32]).unwrap();
    let mut nodes = Vec::new();
    let entries = (0..n)
        .map(|i| {
            let input = EventInput {
                occurred_at: None,
                tenant: "default".to_owned(),
                actor: Actor {
                    id: format!("user-{i}"),
                    kind: ActorKind::User,
                    ip: None,
                    user_agent: None,
                },
                action: "auth.login".to_owned(),
                target: Target {
                    kind: "node".to_owned(),
                    id: node.to_owned(),
                },
                outcome: Outcome::Success,
                severity: Severity::Info,
                context: Context::from_value(&serde_json::json!({"i": i})).unwrap(),
            };
            let id = uuid::Uuid::from_u128(u128::from(head.next_seq) + 1);
            head.append(
                id,
                1_700_000_000_000,
                node,
                "evk_0123456789ab",
                input,
                &key,
                &mut nodes,
            )
        })
        .collect();
    (entries, nodes)
}

fn all(store: &dyn Store) -> Vec<SealedEntry> {
    let mut out = Vec::new();
    store
        .scan(&Filter::default(), Order::Ascending, None, None, &mut |e| {
            out.push(e);
            ControlFlow::Continue(())
        })
        .unwrap();
    out
}

/// A store of `node` holding `n` entries and a checkpoint.
fn small_log(url: &str, node: &str, n: usize) -> (PostgresStore, ChainHead) {
    let store = PostgresStore::open(url, node).unwrap();
    let mut head = ChainHead::genesis();
    let (entries, nodes) = batch(&mut head, node, n);
    store.append(&entries, &nodes).unwrap();
    store
        .put_checkpoint(&StoredCheckpoint {
            size: n as u64,
            root: head.tree.root(),
            signed_note: "example.org/log\n".to_owned(),
            created_at: 1,
        })
        .unwrap();
    (store, head)
}

/// Runs `sql` through psql and expects PostgreSQL to refuse it with `why`.
#[track_caller]
fn refused(db: &str, sql: &str, why: &str) {
    let output = cluster().psql_raw(db, sql).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{sql:?} was accepted");
    assert!(stderr.contains(why), "{sql:?}: {stderr}");
}

#[test]
fn a_plain_sql_client_cannot_update_delete_or_truncate_the_log() {
    let (db, url) = database();
    // 256 entries: the first stored Merkle node (level 8) exists, so every table has rows.
    let (store, head) = small_log(&url, "node-a", 256);
    store
        .register_node(&NodeRecord {
            node_id: "node-a".to_owned(),
            origin: "evident/node-a".to_owned(),
            verifier_key: "evident/node-a+01234567+AAAA".to_owned(),
            created_at: 1,
        })
        .unwrap();
    for table in ["events", "merkle_nodes", "checkpoints", "nodes"] {
        let set = match table {
            "events" => "action = 'forged'",
            "merkle_nodes" => "hash = hash",
            "checkpoints" => "note = 'forged'",
            _ => "origin = 'forged'",
        };
        refused(
            &db,
            &format!("UPDATE evident.{table} SET {set}"),
            &format!("evident: {table} is append-only: UPDATE refused"),
        );
        refused(
            &db,
            &format!("DELETE FROM evident.{table}"),
            &format!("evident: {table} is append-only: DELETE refused"),
        );
        refused(
            &db,
            &format!("TRUNCATE evident.{table}"),
            &format!("evident: {table} is append-only: TRUNCATE refused"),
        );
    }
    // An upsert that would rewrite a stored entry is an UPDATE too.
    refused(
        &db,
        "INSERT INTO evident.events SELECT * FROM evident.events WHERE seq = 0 \
         ON CONFLICT (node_id, seq) DO UPDATE SET action = 'forged'",
        "UPDATE refused",
    );
    // A plain overwriting INSERT hits the primary key.
    refused(
        &db,
        "INSERT INTO evident.events SELECT * FROM evident.events WHERE seq = 0",
        "duplicate key",
    );
    // The flag outside a transaction, or set for the session only, is not the pruner's.
    refused(
        &db,
        "SET evident.pruning = 'off'; DELETE FROM evident.events WHERE seq = 0",
        "DELETE refused",
    );
    assert_eq!(all(&store).len(), 256);
    assert_eq!(store.load_head().unwrap(), head);

    // The pruner's transaction-local flag lets a DELETE through (rolled back here: retention
    // itself is not this test's subject), and only inside that transaction.
    let out = cluster()
        .psql(
            &db,
            "BEGIN; SET LOCAL evident.pruning = 'on'; \
             DELETE FROM evident.events WHERE node_id = 'node-a' AND seq < 2; \
             SELECT count(*) FROM evident.events; ROLLBACK;",
        )
        .unwrap();
    assert_eq!(out.trim(), "254", "{out}");
    refused(
        &db,
        "DELETE FROM evident.events WHERE seq < 2",
        "DELETE refused",
    );
    assert_eq!(all(&store).len(), 256);
}

#[test]
fn the_documented_service_role_appends_and_reads_but_cannot_rewrite() {
    let (db, url) = database();
    // The owner (here the superuser) creates the schema on first open.
    drop(PostgresStore::open(&url, "node-a").unwrap());
    let role = format!("svc_{db}");
    cluster()
        .psql(
            &db,
            &format!(
                "CREATE ROLE {role} LOGIN; \
                 GRANT USAGE ON SCHEMA evident TO {role}; \
                 GRANT SELECT, INSERT ON evident.events, evident.merkle_nodes, \
                       evident.checkpoints, evident.nodes TO {role}; \
                 GRANT SELECT, INSERT, UPDATE ON evident.api_keys, evident.consumer_cursors TO {role}; \
                 GRANT SELECT ON evident.schema_version, evident.prune_anchor TO {role};"
            ),
        )
        .unwrap();
    let service_url = url.replacen("postgres@", &format!("{role}@"), 1);
    let store = PostgresStore::open(&service_url, "node-a").unwrap();
    store.acquire_lease().unwrap();
    store
        .register_node(&NodeRecord {
            node_id: "node-a".to_owned(),
            origin: "evident/node-a".to_owned(),
            verifier_key: "evident/node-a+01234567+AAAA".to_owned(),
            created_at: 1,
        })
        .unwrap();
    let mut head = ChainHead::genesis();
    let (entries, nodes) = batch(&mut head, "node-a", 3);
    store.append(&entries, &nodes).unwrap();
    assert_eq!(all(&store), entries);
    assert_eq!(store.load_head().unwrap(), head);

    // As that role, from psql: no privilege to rewrite, even with the pruner's flag.
    let as_service = |sql: &str| {
        cluster()
            .psql_raw(&db, &format!("SET ROLE {role}; {sql}"))
            .unwrap()
    };
    for sql in [
        "UPDATE evident.events SET action = 'forged'",
        "BEGIN; SET LOCAL evident.pruning = 'on'; DELETE FROM evident.events; COMMIT;",
        "TRUNCATE evident.events",
        "ALTER TABLE evident.events DISABLE TRIGGER events_append_only",
    ] {
        let output = as_service(sql);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{sql:?} was accepted");
        assert!(
            stderr.contains("permission denied") || stderr.contains("must be owner"),
            "{sql:?}: {stderr}"
        );
    }
    assert_eq!(all(&store).len(), 3);

    // Retention: the service role reads the anchor but may not prune, and the pruner knows
    // before it records anything; the documented pruner grants make it able to.
    assert_eq!(store.prune_anchor().unwrap(), None);
    let err = store.check_prune_permitted().unwrap_err().to_string();
    assert!(err.contains("may not prune"), "{err}");
    cluster()
        .psql(
            &db,
            &format!(
                "GRANT INSERT, UPDATE ON evident.prune_anchor TO {role}; \
                 GRANT DELETE ON evident.events TO {role};"
            ),
        )
        .unwrap();
    store.check_prune_permitted().unwrap();
}

#[test]
fn nodes_sharing_a_database_keep_separate_logs() {
    let (_db, url) = database();
    let a = PostgresStore::open(&url, "node-a").unwrap();
    let b = PostgresStore::open(&url, "node-b").unwrap();
    a.acquire_lease().unwrap();
    b.acquire_lease().unwrap();
    let (mut ha, mut hb) = (ChainHead::genesis(), ChainHead::genesis());
    let (mut wa, mut wb) = (Vec::new(), Vec::new());
    for round in 0..4 {
        let (entries, nodes) = batch(&mut ha, "node-a", round + 1);
        a.append(&entries, &nodes).unwrap();
        wa.extend(entries);
        let (entries, nodes) = batch(&mut hb, "node-b", 2);
        b.append(&entries, &nodes).unwrap();
        wb.extend(entries);
    }
    assert_eq!(all(&a), wa);
    assert_eq!(all(&b), wb);
    assert_eq!(a.load_head().unwrap(), ha);
    assert_eq!(b.load_head().unwrap(), hb);
    assert_eq!(a.count(&Filter::default()).unwrap(), 10);
    assert_eq!(b.count(&Filter::default()).unwrap(), 8);
    // Both sequences start at 0 and are dense: no chain interleaves with the other.
    assert!(wa.iter().enumerate().all(|(i, e)| e.event.seq == i as u64));
    assert!(wb.iter().enumerate().all(|(i, e)| e.event.seq == i as u64));
    let other_node = Filter {
        node: Some("node-b".to_owned()),
        ..Filter::default()
    };
    assert_eq!(a.count(&other_node).unwrap(), 0);
    // One node's entries cannot enter the other's log.
    let (foreign, nodes) = batch(&mut ha.clone(), "node-b", 1);
    match a.append(&foreign, &nodes) {
        Err(StoreError::Backend(m)) => assert!(m.contains("one node's entries"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_second_writer_for_the_same_node_is_refused_and_told_why() {
    let (_db, url) = database();
    let first = PostgresStore::open(&url, "node-a").unwrap();
    first.acquire_lease().unwrap();
    let second = PostgresStore::open(&url, "node-a").unwrap();
    match second.acquire_lease() {
        Err(StoreError::Locked(m)) => {
            assert!(m.contains("node \"node-a\" is already being served"), "{m}");
            assert!(m.contains("evident node-a"), "names the holder: {m}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(!second.holds_lease());
    // Readers need no lease.
    assert_eq!(second.load_head().unwrap(), ChainHead::genesis());
    // Another node is not affected.
    PostgresStore::open(&url, "node-b")
        .unwrap()
        .acquire_lease()
        .unwrap();
    // The lease goes with its session.
    drop(first);
    second.acquire_lease().unwrap();
    assert!(second.holds_lease());
}

#[test]
fn a_node_id_is_bound_to_one_identity() {
    let (_db, url) = database();
    let store = PostgresStore::open(&url, "node-a").unwrap();
    let record = NodeRecord {
        node_id: "node-a".to_owned(),
        origin: "evident/node-a".to_owned(),
        verifier_key: "evident/node-a+01234567+AAAA".to_owned(),
        created_at: 1,
    };
    assert_eq!(store.register_node(&record).unwrap(), record);
    // Again, the same: fine (every start registers).
    let later = NodeRecord {
        created_at: 2,
        ..record.clone()
    };
    assert_eq!(store.register_node(&later).unwrap(), record);
    let impostor = NodeRecord {
        verifier_key: "evident/node-a+89abcdef+BBBB".to_owned(),
        ..record.clone()
    };
    match store.register_node(&impostor) {
        Err(StoreError::Backend(m)) => {
            assert!(
                m.contains("two data directories use the same node id"),
                "{m}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(store.node_record().unwrap(), Some(record.clone()));
    assert_eq!(store.nodes().unwrap(), vec![record]);
}

#[test]
fn a_missing_server_is_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    match PostgresStore::open(&format!("postgres://u:secret@127.0.0.1:{port}/x"), "n") {
        Err(StoreError::Backend(m)) => {
            assert!(
                m.contains(&format!("postgres://u@127.0.0.1:{port}/x")),
                "{m}"
            );
            assert!(!m.contains("secret"), "the password leaked: {m}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn rows_edited_past_the_triggers_are_reported_as_corrupt_at_their_seq() {
    let (db, url) = database();
    let (store, head) = small_log(&url, "node-a", 6);
    let forced = |sql: &str| {
        cluster()
            .psql(
                &db,
                &format!(
                    "ALTER TABLE evident.events DISABLE TRIGGER events_append_only; \
                     ALTER TABLE evident.merkle_nodes DISABLE TRIGGER merkle_nodes_append_only; \
                     {sql}; \
                     ALTER TABLE evident.events ENABLE TRIGGER events_append_only; \
                     ALTER TABLE evident.merkle_nodes ENABLE TRIGGER merkle_nodes_append_only;"
                ),
            )
            .unwrap()
    };
    // An action the core would never have accepted: the scan stops at that entry, named.
    forced("UPDATE evident.events SET action = 'Not An Action' WHERE seq = 3");
    let mut seen = Vec::new();
    let result = store.scan(&Filter::default(), Order::Ascending, None, None, &mut |e| {
        seen.push(e.event.seq);
        ControlFlow::Continue(())
    });
    assert_eq!(seen, [0, 1, 2]);
    match result {
        Err(StoreError::Corrupt {
            seq: Some(3),
            problem,
        }) => {
            assert!(problem.contains("action"), "{problem}")
        }
        other => panic!("expected Corrupt at 3, got {other:?}"),
    }
    forced("UPDATE evident.events SET action = 'auth.login' WHERE seq = 3");
    assert_eq!(all(&store).len(), 6);

    // The newest entry's seal rewritten: the frontier recomputed from the rows no longer
    // gives the latest checkpoint's root, so the writer refuses to go on from it.
    forced("UPDATE evident.events SET seal = sha256(seal) WHERE seq = 5");
    match store.load_head() {
        Err(StoreError::Corrupt { problem, .. }) => {
            assert!(problem.contains("latest checkpoint (size 6)"), "{problem}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // Stored (upper) Merkle nodes: a second node's log of 300 entries, whose frontier is the
    // stored node (8, 0) and lower ones recomputed from its rows.
    let (store_b, head_b) = small_log(&url, "node-b", 300);
    assert_eq!(store_b.load_head().unwrap(), head_b);
    forced(
        "UPDATE evident.merkle_nodes SET hash = sha256(hash) \
         WHERE node_id = 'node-b' AND level = 8 AND idx = 0",
    );
    match store_b.load_head() {
        Err(StoreError::Corrupt { problem, .. }) => {
            assert!(
                problem.contains("does not match the latest checkpoint"),
                "{problem}"
            )
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    forced("DELETE FROM evident.merkle_nodes WHERE node_id = 'node-b' AND level = 8");
    match store_b.load_head() {
        Err(StoreError::Corrupt { problem, .. }) => {
            assert!(problem.contains("(level 8, index 0)"), "{problem}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The log cut below a stored node (through the pruner's flag): the node is left over.
    let (store_c, _) = small_log(&url, "node-c", 300);
    let mut pruning = String::from("BEGIN; SET LOCAL evident.pruning = 'on'; ");
    pruning.push_str("DELETE FROM evident.events WHERE node_id = 'node-c' AND seq >= 250; COMMIT;");
    cluster().psql(&db, &pruning).unwrap();
    match store_c.load_head() {
        Err(StoreError::Corrupt { problem, .. }) => {
            assert!(problem.contains("entries were removed"), "{problem}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(head.next_seq, 6);
}

/// The backend pid of the session holding `node`'s lease, found through psql.
fn lease_holder(db: &str, node_app: &str) -> i32 {
    let out = cluster()
        .psql(
            db,
            &format!(
                "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = '{node_app}' \
                   AND a.datname = current_database()"
            ),
        )
        .unwrap();
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no lease holder: {out:?}"))
}

#[test]
fn a_writer_whose_lease_session_ended_stores_nothing_until_it_takes_the_lease_again() {
    let (db, url) = database();
    let store = PostgresStore::open(&url, "node-a").unwrap();
    store.acquire_lease().unwrap();
    let mut head = ChainHead::genesis();
    let (entries, nodes) = batch(&mut head, "node-a", 2);
    store.append(&entries, &nodes).unwrap();

    // The lease session is cut (as by a database restart): the next append stores nothing
    // and says so; the caller takes the lease again (and reloads its head) before writing on.
    let pid = lease_holder(&db, "evident node-a");
    cluster()
        .psql(&db, &format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();
    // pg_terminate_backend only signals the backend: wait until its session has ended (the
    // case under test), or the append below may race a backend still on its way out.
    let ended = std::time::Instant::now();
    while cluster()
        .psql(
            &db,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        )
        .unwrap()
        .trim()
        != "0"
    {
        assert!(
            ended.elapsed() < std::time::Duration::from_secs(30),
            "backend {pid} did not end"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (entries, nodes) = batch(&mut head, "node-a", 2);
    match store.append(&entries, &nodes) {
        Err(StoreError::Locked(m)) => {
            assert!(
                m.contains("the writer lease for node \"node-a\"") && m.contains("was lost"),
                "{m}"
            );
            assert!(m.contains(&format!("pid {pid}")), "{m}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(!store.holds_lease());
    assert_eq!(store.count(&Filter::default()).unwrap(), 2);
    store.acquire_lease().unwrap();
    assert_ne!(lease_holder(&db, "evident node-a"), pid);
    store.append(&entries, &nodes).unwrap();
    assert_eq!(store.load_head().unwrap(), head);

    // Cut again, and this time another process takes the node first: the old writer cannot
    // take the lease back.
    let pid = lease_holder(&db, "evident node-a");
    cluster()
        .psql(&db, &format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();
    let usurper = PostgresStore::open(&url, "node-a").unwrap();
    usurper.acquire_lease().unwrap();
    let (entries, nodes) = batch(&mut head.clone(), "node-a", 1);
    match store.append(&entries, &nodes) {
        Err(StoreError::Locked(m)) => assert!(m.contains("was lost"), "{m}"),
        other => panic!("expected Locked, got {other:?}"),
    }
    match store.acquire_lease() {
        Err(StoreError::Locked(m)) => assert!(m.contains("already being served"), "{m}"),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(store.count(&Filter::default()).unwrap(), 4);
}
