//! Store-level ingestion benchmark, all in one run on one machine: appends of pre-sealed
//! entries to the embedded store and to PostgreSQL (a throwaway local cluster, fsync on), in
//! batches of 1 and of 1000 (one transaction each, as the group-commit writer sends them),
//! beside what teams build by hand: a PostgreSQL table whose BEFORE INSERT trigger computes a
//! SHA-256 hash chain, fed one INSERT per event or 1000-row multi-row INSERTs. It prints the
//! ratios PostgreSQL / trigger table and PostgreSQL / embedded, and for the batched case two
//! diagnostics: Evident on PostgreSQL without its secondary indexes (and also without its Merkle
//! node rows), and the trigger table with indexes serving the same filters. It measures the
//! store alone (sealing and HTTP are measured by `evident-bench`).
//!
//! `cargo bench -p evident-store --bench ingest [-- EVENTS]` (default 20000 events per case).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use evident_core::event::{Context, EventInput};
use evident_core::merkle::NodeId;
use evident_core::{
    Actor, ActorKind, ChainHead, Hash, Outcome, SealKey, SealedEntry, Severity, Target,
};
use evident_store::{PostgresStore, SqliteStore, Store};
use evident_testpg::trigger_table;
use std::time::Instant;

fn entries(n: usize) -> Vec<(SealedEntry, Vec<(NodeId, Hash)>)> {
    let key = SealKey::new(&[3u8; 32]).unwrap();
    let mut head = ChainHead::genesis();
    (0..n)
        .map(|i| {
            let mut nodes = Vec::new();
            let input = EventInput {
                occurred_at: None,
                tenant: "default".to_owned(),
                actor: Actor {
                    id: format!("user-{}", i % 500),
                    kind: ActorKind::User,
                    ip: Some(std::net::IpAddr::from([
                        10,
                        0,
                        (i / 250 % 250) as u8,
                        (i % 250) as u8,
                    ])),
                    user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".to_owned()),
                },
                action: "config.threshold.changed".to_owned(),
                target: Target {
                    kind: "node".to_owned(),
                    id: format!("edge-{}", i % 64),
                },
                outcome: Outcome::Success,
                severity: Severity::Notice,
                context: Context::from_value(&serde_json::json!({"old": i, "new": i + 1})).unwrap(),
            };
            let id = uuid::Uuid::from_u128(i as u128 + 1);
            let entry = head.append(
                id,
                1_700_000_000_000,
                "node-a",
                "evk_0123456789ab",
                input,
                &key,
                &mut nodes,
            );
            (entry, nodes)
        })
        .collect()
}

/// Appends all `log` to `store` in batches of `batch`; events per second.
fn run_store(store: &dyn Store, log: &[(SealedEntry, Vec<(NodeId, Hash)>)], batch: usize) -> f64 {
    run_store_nodes(store, log, batch, true)
}

/// [`run_store`], optionally leaving out the Merkle nodes (a diagnostic: what they cost).
fn run_store_nodes(
    store: &dyn Store,
    log: &[(SealedEntry, Vec<(NodeId, Hash)>)],
    batch: usize,
    with_nodes: bool,
) -> f64 {
    let start = Instant::now();
    for chunk in log.chunks(batch) {
        let entries: Vec<SealedEntry> = chunk.iter().map(|(e, _)| e.clone()).collect();
        let nodes: Vec<(NodeId, Hash)> = if with_nodes {
            chunk.iter().flat_map(|(_, n)| n.clone()).collect()
        } else {
            Vec::new()
        };
        store.append(&entries, &nodes).unwrap();
    }
    log.len() as f64 / start.elapsed().as_secs_f64()
}

/// Evident's secondary indexes, dropped in a diagnostic case to show what they cost.
const DROP_EVIDENT_INDEXES: &str = "DROP INDEX evident.events_by_actor, \
    evident.events_by_target, evident.events_by_ip, evident.events_by_action, \
    evident.events_by_tenant, evident.events_severe, evident.events_not_success, \
    evident.events_not_user, evident.events_by_occurred";

/// The hand-built trigger table (its SQL is shared with `evident-bench`:
/// `evident_testpg::trigger_table`): `n` events in batches of `batch` rows per INSERT (one
/// transaction each), optionally with the indexes serving Evident's filters; events per second.
fn run_trigger_table(url: &str, n: usize, batch: usize, indexed: bool) -> f64 {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client.batch_execute(trigger_table::SCHEMA).unwrap();
    if indexed {
        client.batch_execute(trigger_table::INDEXES).unwrap();
    }
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let rows = batch.min(n - i);
        let mut sql = format!("{} VALUES ", trigger_table::INSERT_COLUMNS);
        for r in 0..rows {
            let k = i + r;
            if r > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('user-{}', 'config.threshold.changed', 'node:edge-{}', '10.0.{}.{}', \
                 '{{\"old\": {k}, \"new\": {}}}')",
                k % 500,
                k % 64,
                k / 250 % 250,
                k % 250,
                k + 1
            ));
        }
        client.batch_execute(&sql).unwrap();
        i += rows;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let log = entries(n);
    // fsync on: durability is part of what is measured.
    let cluster = evident_testpg::Cluster::start_with_fsync().unwrap_or_else(|e| panic!("{e}"));
    println!("ingestion, {n} events per case, events/s (higher is better)");
    for batch in [1usize, 1000] {
        let singles = if batch == 1 { n.min(2_000) } else { n };
        let log = &log[..singles];
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(&dir.path().join("evident.db")).unwrap();
        let embedded = run_store(&sqlite, log, batch);
        let url = cluster.create_database_url().unwrap();
        let pg = PostgresStore::open(&url, "node-a").unwrap();
        let on_pg = run_store(&pg, log, batch);
        let url = cluster.create_database_url().unwrap();
        let trigger = run_trigger_table(&url, singles, batch, false);
        println!(
            "batch {batch:>4}: embedded {embedded:>9.0}  postgres {on_pg:>9.0}  \
             hand-built trigger table {trigger:>9.0}  (postgres / trigger table: {:.2}x, \
             postgres / embedded: {:.2}x)",
            on_pg / trigger,
            on_pg / embedded
        );
        if batch > 1 {
            // Diagnostics for the batched gap: Evident on PostgreSQL without its secondary
            // indexes, and the trigger table with indexes serving the same filters.
            let url = cluster.create_database_url().unwrap();
            let pg = PostgresStore::open(&url, "node-a").unwrap();
            let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            admin.batch_execute(DROP_EVIDENT_INDEXES).unwrap();
            let bare_pg = run_store(&pg, log, batch);
            let url = cluster.create_database_url().unwrap();
            let pg = PostgresStore::open(&url, "node-a").unwrap();
            let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            admin.batch_execute(DROP_EVIDENT_INDEXES).unwrap();
            let events_only = run_store_nodes(&pg, log, batch, false);
            let nodes_per_event =
                log.iter().map(|(_, n)| n.len()).sum::<usize>() as f64 / log.len() as f64;
            let url = cluster.create_database_url().unwrap();
            let indexed_trigger = run_trigger_table(&url, singles, batch, true);
            println!(
                "  diagnostics: postgres without its 9 secondary indexes {bare_pg:>9.0}; \
                 also without its {nodes_per_event:.2} Merkle-node rows per event \
                 {events_only:>9.0}"
            );
            println!(
                "  diagnostics: trigger table with 5 secondary indexes {indexed_trigger:>9.0}  \
                 (postgres / indexed trigger table: {:.2}x)",
                on_pg / indexed_trigger
            );
        }
    }
}
