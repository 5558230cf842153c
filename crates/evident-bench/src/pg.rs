//! The PostgreSQL side of the bench: a throwaway PostgreSQL 15 cluster with fsync on (started
//! through `evident-testpg`, stopped when dropped, and by a watchdog if this process dies), its
//! durability settings read back before any cell, and the hand-built baseline Evident on
//! PostgreSQL is compared against: the hash-chain trigger table of
//! `evident_testpg::trigger_table`, driven from this process over `tokio-postgres` in the same
//! cells as Evident's ingestion (batch size × concurrent connections, one multi-row `INSERT`
//! per transaction, the same synthetic events, every answer's row count checked), then
//! verified whole: every acknowledged row present, numbered densely, each chained to the one
//! before it and its hash recomputing. Evident on PostgreSQL itself is a second `evident serve`, driven
//! over HTTP by `main.rs` like the embedded one.

use crate::baseline::Row;
use crate::ingest::{AppendRun, TaskTally};
use anyhow::{Context as _, anyhow, bail};
use evident_testpg::{Cluster, trigger_table};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

/// Starts the cluster, or says how to get PostgreSQL (or how to skip these rows).
pub fn start_cluster() -> anyhow::Result<Cluster> {
    let cluster = Cluster::start_with_fsync().map_err(|e| {
        anyhow!(
            "the PostgreSQL rows need a throwaway PostgreSQL 15 cluster, which could not \
             start: {e}\n(pass --no-postgres to run without the PostgreSQL rows)"
        )
    })?;
    cluster
        .watch()
        .map_err(|e| anyhow!("cannot start the PostgreSQL cluster's watchdog: {e}"))?;
    Ok(cluster)
}

/// The cluster's durability settings as the server reports them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub version: String,
    pub shared_buffers: String,
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    // The connection future does the I/O; its error, if any, also fails the client's calls.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // The default, said explicitly: a COMMIT returns once its WAL is flushed to disk.
    client.batch_execute("SET synchronous_commit = on").await?;
    Ok(client)
}

async fn show(client: &tokio_postgres::Client, setting: &str) -> anyhow::Result<String> {
    let row = client
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .with_context(|| format!("SHOW {setting}"))?;
    Ok(row.try_get(0)?)
}

/// Reads the settings back and refuses to measure without full durability (both sides of the
/// comparison run on this cluster).
pub async fn settings(url: &str) -> anyhow::Result<Settings> {
    let client = connect(url).await?;
    for (setting, want) in [
        ("fsync", "on"),
        ("synchronous_commit", "on"),
        ("full_page_writes", "on"),
    ] {
        let value = show(&client, setting).await?;
        if value != want {
            bail!("the PostgreSQL cluster runs with {setting} = {value}, not {want}");
        }
    }
    Ok(Settings {
        version: show(&client, "server_version").await?,
        shared_buffers: show(&client, "shared_buffers").await?,
    })
}

/// One event as the trigger table's columns.
pub struct TriggerRow {
    actor: String,
    action: String,
    target: String,
    ip: Option<String>,
    /// The whole event as JSON (stored as `jsonb`, covered by the row's hash).
    payload: String,
}

/// The workload's events in the trigger table's shape: `actor` is the actor id, `target` is
/// `kind:id`, and the payload is the whole event, so the chain hashes everything Evident seals.
pub fn trigger_rows(rows: &[Row]) -> Vec<TriggerRow> {
    rows.iter()
        .map(|r| TriggerRow {
            actor: r.actor_id.clone(),
            action: r.action.clone(),
            target: format!("{}:{}", r.target_kind, r.target_id),
            ip: r.ip.clone(),
            payload: r.json.clone(),
        })
        .collect()
}

/// Creates the trigger table in the (fresh) database at `url`.
pub async fn create_trigger_table(url: &str) -> anyhow::Result<()> {
    connect(url)
        .await?
        .batch_execute(trigger_table::SCHEMA)
        .await
        .context("creating the trigger table")
}

/// `connections` connections, each inserting `batch` rows per `INSERT` (autocommit: one
/// transaction each) back to back for `duration`; statements in flight at the deadline are
/// waited for and counted. The connections are opened and their statement prepared before the
/// clock starts (a client keeps a pool). An `INSERT` counts only if PostgreSQL reports exactly
/// `batch` rows inserted; anything else is an error, counted.
pub async fn trigger_throughput(
    url: &str,
    rows: Arc<Vec<TriggerRow>>,
    batch: usize,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<AppendRun> {
    if rows.is_empty() {
        bail!("no rows to insert");
    }
    let sql = trigger_table::insert_statement(batch);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let client = connect(url).await?;
        let statement = client
            .prepare(&sql)
            .await
            .context("preparing the trigger table's INSERT")?;
        clients.push((client, statement));
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for (c, (client, statement)) in clients.into_iter().enumerate() {
        let rows = rows.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = TaskTally::default();
            let mut next = c * batch;
            while Instant::now() < deadline {
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(batch * 5);
                for k in 0..batch {
                    let r = &rows[(next + k) % rows.len()];
                    params.push(&r.actor);
                    params.push(&r.action);
                    params.push(&r.target);
                    params.push(&r.ip);
                    params.push(&r.payload);
                }
                next += connections * batch;
                let sent = Instant::now();
                let result = client.execute(&statement, &params).await;
                tally.latencies.push(sent.elapsed());
                tally.requests += 1;
                match result {
                    Ok(n) if n == batch as u64 => tally.events += n,
                    Ok(n) => tally.error(&anyhow!("INSERT of {batch} rows inserted {n}")),
                    Err(e) => tally.error(&anyhow::Error::new(e).context("INSERT failed")),
                }
            }
            tally
        }));
    }
    let mut tallies = Vec::with_capacity(connections);
    for t in tasks {
        tallies.push(t.await?);
    }
    Ok(crate::ingest::merge(tallies, started.elapsed()))
}

/// What the trigger table holds after the cells ([`trigger_table::CHECK`]).
#[derive(Debug, Clone, Copy)]
pub struct TriggerCheck {
    pub rows: u64,
    pub max_seq: u64,
    /// Rows not chained to the row before them, or whose hash does not recompute.
    pub broken: u64,
}

pub async fn check_trigger_table(url: &str) -> anyhow::Result<TriggerCheck> {
    let client = connect(url).await?;
    let row = client
        .query_one(trigger_table::CHECK, &[])
        .await
        .context("checking the trigger table")?;
    let count = |i: usize| -> anyhow::Result<u64> {
        let n: i64 = row.try_get(i)?;
        u64::try_from(n).context("a negative count")
    };
    Ok(TriggerCheck {
        rows: count(0)?,
        max_seq: count(1)?,
        broken: count(2)?,
    })
}

impl TriggerCheck {
    /// Every acknowledged row is there, no more than the failed statements could have added
    /// (a statement whose answer was lost may still have committed), numbered densely, and the
    /// chain is intact.
    pub fn holds(&self, acknowledged: u64, failed_rows: u64) -> bool {
        self.broken == 0
            && self.max_seq == self.rows
            && self.rows >= acknowledged
            && self.rows <= acknowledged + failed_rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_rows_carry_the_whole_event() {
        let rows = crate::baseline::rows(50, 3).unwrap();
        let trigger = trigger_rows(&rows);
        assert_eq!(trigger.len(), 50);
        for (r, t) in rows.iter().zip(&trigger) {
            assert_eq!(t.actor, r.actor_id);
            assert_eq!(t.target, format!("{}:{}", r.target_kind, r.target_id));
            let payload: serde_json::Value = serde_json::from_str(&t.payload).unwrap();
            assert_eq!(payload["action"], t.action.as_str());
            assert_eq!(
                payload["actor"].get("ip").and_then(|v| v.as_str()),
                t.ip.as_deref()
            );
        }
    }

    #[test]
    fn the_check_allows_only_what_failed_statements_explain() {
        let check = TriggerCheck {
            rows: 1000,
            max_seq: 1000,
            broken: 0,
        };
        assert!(check.holds(1000, 0));
        assert!(check.holds(900, 100));
        assert!(!check.holds(1001, 0));
        assert!(!check.holds(900, 0));
        assert!(!TriggerCheck { broken: 1, ..check }.holds(1000, 0));
        assert!(
            !TriggerCheck {
                max_seq: 1001,
                ..check
            }
            .holds(1000, 0)
        );
    }
}
