//! The ceiling baseline: plain SQLite inserts with no integrity at all (no hash, no seal, no
//! Merkle tree, no secondary index), in process, with the embedded store's durability settings
//! (WAL, `synchronous=FULL`), fed the same synthetic events in the same batch sizes, one
//! transaction per batch. What Evident's ingestion is compared against as a ratio.

use crate::workload::{self, Rng};
use anyhow::Context as _;
use rusqlite::{Connection, params};
use std::path::Path;
use std::time::{Duration, Instant};

/// One batch size of the baseline.
#[derive(Debug, Clone, Copy)]
pub struct BaselineRun {
    pub batch: usize,
    pub events: u64,
    pub elapsed: Duration,
}

impl BaselineRun {
    pub fn events_per_sec(&self) -> f64 {
        crate::stats::rate(self.events, self.elapsed)
    }
}

/// One event as columns, decoded from the workload's JSON before the clock starts.
struct Row {
    occurred_at: Option<i64>,
    tenant: String,
    actor_id: String,
    actor_kind: String,
    ip: Option<String>,
    user_agent: Option<String>,
    action: String,
    target_kind: String,
    target_id: String,
    outcome: String,
    severity: String,
    context: String,
}

fn text(v: &serde_json::Value, path: &[&str]) -> Option<String> {
    let mut v = v;
    for key in path {
        v = v.get(key)?;
    }
    v.as_str().map(str::to_owned)
}

fn rows(n: usize, seed: u64) -> anyhow::Result<Vec<Row>> {
    let mut rng = Rng::new(seed);
    let now = crate::ingest::now_ms();
    let mut out = Vec::with_capacity(n);
    let mut json = String::new();
    for _ in 0..n {
        json.clear();
        workload::write_event(&mut rng, now, &mut json);
        let v: serde_json::Value =
            serde_json::from_str(&json).context("the workload wrote invalid JSON")?;
        let field = |path: &[&str]| {
            text(&v, path).with_context(|| format!("the workload event lacks {}", path.join(".")))
        };
        out.push(Row {
            occurred_at: v.get("occurred_at").and_then(serde_json::Value::as_i64),
            tenant: field(&["tenant"])?,
            actor_id: field(&["actor", "id"])?,
            actor_kind: field(&["actor", "kind"])?,
            ip: text(&v, &["actor", "ip"]),
            user_agent: text(&v, &["actor", "user_agent"]),
            action: field(&["action"])?,
            target_kind: field(&["target", "kind"])?,
            target_id: field(&["target", "id"])?,
            outcome: field(&["outcome"])?,
            severity: field(&["severity"])?,
            context: v.get("context").map(|c| c.to_string()).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// For each batch size, inserts batches into a fresh database in `dir` for about `cell`.
pub fn sqlite_inserts(
    dir: &Path,
    batches: &[usize],
    cell: Duration,
) -> anyhow::Result<Vec<BaselineRun>> {
    let pool = rows(20_000, 77)?;
    let mut runs = Vec::new();
    for &batch in batches {
        let path = dir.join(format!("baseline-{batch}.db"));
        let mut conn =
            Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "SQLite refused WAL mode");
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE events (
                seq INTEGER PRIMARY KEY, recorded_at INTEGER NOT NULL, occurred_at INTEGER,
                tenant TEXT NOT NULL, actor_id TEXT NOT NULL, actor_kind TEXT NOT NULL,
                ip TEXT, user_agent TEXT, action TEXT NOT NULL, target_kind TEXT NOT NULL,
                target_id TEXT NOT NULL, outcome TEXT NOT NULL, severity TEXT NOT NULL,
                context TEXT NOT NULL)",
        )?;
        let mut next = 0usize;
        let mut events = 0u64;
        let started = Instant::now();
        while started.elapsed() < cell {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO events (recorded_at, occurred_at, tenant, actor_id, actor_kind, \
                     ip, user_agent, action, target_kind, target_id, outcome, severity, context) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )?;
                let now = crate::ingest::now_ms();
                for _ in 0..batch {
                    let r = &pool[next % pool.len()];
                    next += 1;
                    insert.execute(params![
                        now,
                        r.occurred_at,
                        r.tenant,
                        r.actor_id,
                        r.actor_kind,
                        r.ip,
                        r.user_agent,
                        r.action,
                        r.target_kind,
                        r.target_id,
                        r.outcome,
                        r.severity,
                        r.context,
                    ])?;
                }
            }
            tx.commit()?;
            events += batch as u64;
        }
        runs.push(BaselineRun {
            batch,
            events,
            elapsed: started.elapsed(),
        });
        drop(conn);
        let _ = std::fs::remove_file(&path);
    }
    Ok(runs)
}
