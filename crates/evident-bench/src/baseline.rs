//! The ceiling baseline: plain SQLite inserts with no integrity at all (no hash, no seal, no
//! Merkle tree, no secondary index), in process, with the embedded store's durability settings
//! (WAL, `synchronous=FULL`), fed the same synthetic events in the same cells as Evident's
//! ingestion (batch size × concurrent writers), one transaction per batch, each writer on its
//! own connection (SQLite lets one write at a time: the others wait in its busy handler). What
//! Evident's ingestion is compared against as a ratio. Also decodes the workload's events into
//! columns ([`Row`]), which the PostgreSQL trigger-table baseline reuses.

use crate::ingest::{AppendRun, TaskTally};
use crate::workload::{self, Rng};
use anyhow::Context as _;
use rusqlite::{Connection, TransactionBehavior, params};
use std::path::Path;
use std::time::{Duration, Instant};

/// One event as columns, decoded from the workload's JSON before the clock starts.
pub struct Row {
    pub occurred_at: Option<i64>,
    pub tenant: String,
    pub actor_id: String,
    pub actor_kind: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub action: String,
    pub target_kind: String,
    pub target_id: String,
    pub outcome: String,
    pub severity: String,
    pub context: String,
    /// The whole event as the workload wrote it (what Evident is sent).
    pub json: String,
}

fn text(v: &serde_json::Value, path: &[&str]) -> Option<String> {
    let mut v = v;
    for key in path {
        v = v.get(key)?;
    }
    v.as_str().map(str::to_owned)
}

/// `n` workload events (seeded), decoded into columns.
pub fn rows(n: usize, seed: u64) -> anyhow::Result<Vec<Row>> {
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
            json: json.clone(),
        });
    }
    Ok(out)
}

const CREATE: &str = "CREATE TABLE events (
    seq INTEGER PRIMARY KEY, recorded_at INTEGER NOT NULL, occurred_at INTEGER,
    tenant TEXT NOT NULL, actor_id TEXT NOT NULL, actor_kind TEXT NOT NULL,
    ip TEXT, user_agent TEXT, action TEXT NOT NULL, target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL, outcome TEXT NOT NULL, severity TEXT NOT NULL,
    context TEXT NOT NULL)";

const INSERT: &str = "INSERT INTO events (recorded_at, occurred_at, tenant, actor_id, actor_kind, \
     ip, user_agent, action, target_kind, target_id, outcome, severity, context) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// A connection with the embedded store's durability: WAL, `synchronous=FULL`, and a busy
/// timeout long enough that a writer waits for the lock rather than failing.
fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(60))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "SQLite refused WAL mode");
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// One transaction of `batch` rows from `pool`, starting at row `next`.
fn insert_batch(
    conn: &mut Connection,
    pool: &[Row],
    next: usize,
    batch: usize,
) -> anyhow::Result<()> {
    // IMMEDIATE: take the write lock at BEGIN, so that waiting writers queue in the busy
    // handler instead of failing at their first INSERT with SQLITE_BUSY.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        let now = crate::ingest::now_ms();
        for k in 0..batch {
            let r = &pool[(next + k) % pool.len()];
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
    Ok(())
}

/// For each cell `(batch, writers)`, `writers` threads insert batches into a fresh database
/// in `dir` for about `cell`, each on its own connection, one transaction per batch; every
/// failed transaction is counted. Latencies are per transaction, lock wait included.
pub fn sqlite_inserts(
    dir: &Path,
    cells: &[(usize, usize)],
    cell: Duration,
) -> anyhow::Result<Vec<(usize, usize, AppendRun)>> {
    let pool = rows(20_000, 77)?;
    let mut runs = Vec::new();
    for &(batch, writers) in cells {
        let path = dir.join(format!("baseline-{batch}x{writers}.db"));
        open(&path)?.execute_batch(CREATE)?;
        let mut conns = Vec::with_capacity(writers);
        for _ in 0..writers {
            conns.push(open(&path)?);
        }
        let started = Instant::now();
        let deadline = started + cell;
        let pool = &pool;
        let tallies = std::thread::scope(|scope| {
            let handles: Vec<_> = conns
                .into_iter()
                .enumerate()
                .map(|(w, mut conn)| {
                    scope.spawn(move || {
                        let mut tally = TaskTally::default();
                        let mut next = w * batch;
                        while Instant::now() < deadline {
                            let sent = Instant::now();
                            let result = insert_batch(&mut conn, pool, next, batch);
                            tally.latencies.push(sent.elapsed());
                            tally.requests += 1;
                            next += writers * batch;
                            match result {
                                Ok(()) => tally.events += batch as u64,
                                Err(e) => tally.error(&e),
                            }
                        }
                        tally
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| TaskTally::failed("a writer thread panicked"))
                })
                .collect::<Vec<_>>()
        });
        let run = crate::ingest::merge(tallies, started.elapsed());
        runs.push((batch, writers, run));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    Ok(runs)
}
