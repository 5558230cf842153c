//! `evident-bench`: measures a real `evident serve` the way a client sees it, over loopback
//! HTTP, and prints one Markdown table with each result next to its goal. It starts the server
//! on a fresh temporary data directory, creates an owner key, and runs in order: ingestion
//! throughput (batch size × concurrency), open-loop append latency, a bulk load to the target
//! size, first-page query latency per filter, CSV and NDJSON exports, online verification,
//! inclusion and consistency proof latency, then reads memory and disk figures and stops the
//! server.
//!
//! Before the servers, the ceiling baseline (`baseline.rs`): plain SQLite inserts with no
//! integrity, in the same cells (batch size × concurrent writers), printed beside Evident's
//! ingestion as a ratio. After the embedded write-path server, the PostgreSQL comparison
//! (`pg.rs`), unless `--no-postgres`: a throwaway PostgreSQL 15 cluster with fsync on, a second
//! `evident serve --storage postgres://…` run through the same ingestion cells, and the
//! hand-built hash-chain trigger table driven in the same cells from this process, each cell
//! printed with the ratio against issue 5's goal (≥ 5× the trigger table in batched mode).
//!
//! Argument parsing, the order of the phases and the report live here; the measurements are
//! in `ingest.rs`, `reads.rs`, `baseline.rs` and `pg.rs`, the server process in `server.rs`.

mod alerts;
mod baseline;
mod client;
mod cluster;
mod consumers;
mod dashboard;
mod forwarding;
mod ingest;
mod metrics;
mod pg;
mod publish;
mod reads;
mod server;
mod stats;
mod workload;

use anyhow::{Context as _, bail};
use clap::Parser;
use server::Server;
use stats::{Latencies, mib, ms, per_sec, thousands};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Benchmark a real `evident serve` over loopback HTTP and print the results against the
/// service goals as a Markdown table.
#[derive(Debug, Parser)]
#[command(name = "evident-bench", version)]
struct Args {
    /// The `evident` binary to benchmark [default: `evident` next to this binary].
    #[arg(long, value_name = "PATH")]
    evident: Option<PathBuf>,
    /// Load the log to 1,000,000 events (the default scale; kept for explicit scripts).
    #[arg(long, conflicts_with = "scale")]
    events_1m: bool,
    /// Short phases and a 100,000-event log: a smoke test, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Skip the PostgreSQL rows (Evident on PostgreSQL and the hand-built trigger table), which
    /// otherwise need PostgreSQL 15 installed (`apt-get install postgresql-15`); the table says
    /// they were skipped.
    #[arg(long)]
    no_postgres: bool,
    /// Events in the log for the query, export and verify phases [default: 1,000,000, or
    /// 100,000 with --quick].
    #[arg(long, value_name = "N")]
    scale: Option<u64>,
    /// Only the forwarding phase (issue 11): ingestion with a TCP and a TLS syslog destination
    /// (a real rsyslogd) against none, interleaved, and the forwarders' sustained rate.
    #[arg(long)]
    forwarding: bool,
    /// Directory under which the temporary data directory is created [default: the system
    /// temporary directory].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Only the alert row: CRITICAL event appended → its signed webhook received by a
    /// receiver on loopback (p50/p99 over N alerts, one at a time).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "200")]
    alerts_only: Option<usize>,
    /// Only the publishing benchmark (issue 12): ingestion with and without an attached
    /// publisher, and publishing throughput, against a throwaway SeaweedFS (`weed`, see
    /// scripts/test.sh).
    #[arg(long)]
    publish: bool,
    /// Only the cluster rows (issue 14): three nodes over mTLS, the witness round trip
    /// (add-checkpoint, p50/p99 over N) and the first page cluster-wide vs local.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "300")]
    cluster: Option<usize>,
    /// Only the dashboard rows (issue 15): a log of --scale events, then the explorer's first
    /// page and its chart (the histogram route) per filter.
    #[arg(long)]
    dashboard: bool,
    /// With --dashboard: the log in a throwaway PostgreSQL 15 cluster (fsync on) instead of
    /// the embedded store.
    #[arg(long, requires = "dashboard")]
    postgres: bool,
    /// Only the attached-consumers rows (issue 16): ingestion on a node with a syslog
    /// forwarder (a real rsyslogd), the object-storage publisher (a throwaway SeaweedFS) and a
    /// webhook endpoint running the alert rules, against a bare node, interleaved.
    #[arg(long)]
    consumers: bool,
}

/// Offered rate of the open-loop latency phase.
const OPEN_LOOP_RATE: u64 = 5_000;
/// A lower offered rate, for reference: the latency of the path when it is not saturated.
const REFERENCE_RATE: u64 = 1_000;
const BATCHES: [usize; 3] = [1, 100, 1000];
const CONCURRENCY: [usize; 3] = [1, 8, 64];

/// The goals of issue 3.
const GOAL_INGEST: f64 = 100_000.0;
const GOAL_APPEND_P99: Duration = Duration::from_millis(10);
const GOAL_FIRST_PAGE: Duration = Duration::from_millis(50);
const GOAL_FIRST_PAGE_AT: u64 = 10_000_000;
const GOAL_EXPORT: f64 = 300_000.0;
const GOAL_RSS_BYTES: u64 = 200_000_000;
/// The goal of issue 5: Evident on PostgreSQL at least this many times the hand-built trigger
/// table's ingestion, in batched mode.
const GOAL_PG_RATIO: f64 = 5.0;

struct Plan {
    cell: Duration,
    open_loop: Duration,
    scale: u64,
    query_runs: usize,
}

/// CPU, wall time and memory of one phase.
struct Phase {
    name: String,
    wall: Duration,
    server_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
    events: Option<u64>,
    rss_max_kb: u64,
    /// The server's group commits in the phase (write phases only).
    commits: Option<metrics::CommitDelta>,
    /// CPU of the PostgreSQL cluster (postmaster and backends), in the PostgreSQL phases.
    pg_cpu: Option<Duration>,
    /// Whether an Evident server ran the phase (not so for the trigger table).
    has_server: bool,
}

struct Probe {
    started: Instant,
    server_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
    metrics: Option<metrics::Snapshot>,
    /// The postmaster's pid and the cluster's CPU at the start.
    pg: Option<(u32, Option<Duration>)>,
}

impl Probe {
    fn start(server: &Server) -> Probe {
        Probe {
            server_cpu: server.cpu(),
            ..Probe::start_bare()
        }
    }

    /// A probe of a phase with no Evident server (client and PostgreSQL CPU only).
    fn start_bare() -> Probe {
        Probe {
            started: Instant::now(),
            server_cpu: None,
            client_cpu: server::own_cpu(),
            metrics: None,
            pg: None,
        }
    }

    /// Also measures the CPU of the PostgreSQL cluster whose postmaster is `pid`.
    fn with_pg(mut self, pid: Option<u32>) -> Probe {
        self.pg = pid.map(|pid| (pid, server::tree_cpu(pid)));
        self
    }

    /// Also scrapes the server's commit metrics, to report them per phase.
    async fn start_with_commits(server: &Server, api: &client::Api) -> anyhow::Result<Probe> {
        let before = metrics::scrape(api).await?;
        let mut probe = Probe::start(server);
        probe.metrics = Some(before);
        Ok(probe)
    }

    async fn finish_with_commits(
        self,
        server: &Server,
        api: &client::Api,
        name: impl Into<String>,
        events: Option<u64>,
    ) -> anyhow::Result<Phase> {
        let before = self.metrics.clone();
        let mut phase = self.finish(server, name, events);
        if let Some(before) = before {
            phase.commits = Some(metrics::scrape(api).await?.since(&before));
        }
        Ok(phase)
    }

    fn finish(self, server: &Server, name: impl Into<String>, events: Option<u64>) -> Phase {
        self.end(Some(server), name, events)
    }

    fn finish_bare(self, name: impl Into<String>, events: Option<u64>) -> Phase {
        self.end(None, name, events)
    }

    fn end(self, server: Option<&Server>, name: impl Into<String>, events: Option<u64>) -> Phase {
        let now = Instant::now();
        let diff = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        Phase {
            name: name.into(),
            wall: now - self.started,
            server_cpu: server.and_then(|s| diff(self.server_cpu, s.cpu())),
            client_cpu: diff(self.client_cpu, server::own_cpu()),
            events,
            rss_max_kb: server.map_or(0, |s| s.rss_max_kb(self.started, now)),
            commits: None,
            pg_cpu: self
                .pg
                .and_then(|(pid, before)| diff(before, server::tree_cpu(pid))),
            has_server: server.is_some(),
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // reqwest is built with rustls but no crypto provider; plain HTTP never uses it, but the
    // client builder wants one installed. It can only fail if one is set already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("evident-bench: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            print!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("evident-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn default_evident() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    let dir = exe
        .parent()
        .context("this binary's path has no parent directory")?;
    Ok(dir.join("evident"))
}

async fn run(args: Args) -> anyhow::Result<String> {
    let evident = match args.evident {
        Some(p) => p,
        None => default_evident()?,
    };
    if !evident.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p evident` or pass --evident PATH",
            evident.display()
        );
    }
    let plan = if args.quick {
        Plan {
            cell: Duration::from_millis(1500),
            open_loop: Duration::from_secs(3),
            scale: args.scale.unwrap_or(100_000),
            query_runs: 20,
        }
    } else {
        Plan {
            cell: Duration::from_secs(4),
            open_loop: Duration::from_secs(10),
            scale: args.scale.unwrap_or(1_000_000),
            query_runs: 50,
        }
    };
    let mut temp = tempfile::Builder::new();
    temp.prefix("evident-bench-");
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --work-dir {}", dir.display()))?;
            temp.tempdir_in(dir)
        }
        None => temp.tempdir(),
    }
    .context("cannot create a temporary directory")?;
    if let Some(samples) = args.cluster {
        let per_node = if args.quick {
            2_000
        } else {
            plan.scale.min(100_000)
        };
        eprintln!("cluster: 3 nodes over mTLS, {per_node} events each, {samples} samples per row");
        let c = cluster::run(&evident, work.path(), per_node, samples.max(1)).await?;
        let mut out = String::new();
        let _ = writeln!(out, "| Measurement | p50 | p99 | max |");
        let _ = writeln!(out, "|---|---|---|---|");
        let _ = writeln!(
            out,
            "| witness round trip: add-checkpoint as a peer over mTLS ({} requests) | {} | {} | {} |",
            c.samples,
            ms(c.witness.p50),
            ms(c.witness.p99),
            ms(c.witness.max),
        );
        let _ = writeln!(
            out,
            "| first page (limit 100), 1 node: node-1's own log ({} events) | {} | {} | {} |",
            thousands(c.events_per_node),
            ms(c.local_page.p50),
            ms(c.local_page.p99),
            ms(c.local_page.max),
        );
        let _ = writeln!(
            out,
            "| first page (limit 100), 3 nodes: `scope=cluster` on node-1, merged | {} | {} | {} |",
            ms(c.cluster_page.p50),
            ms(c.cluster_page.p99),
            ms(c.cluster_page.max),
        );
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        let _ = writeln!(
            out,
            "| ratio 3 nodes / 1 node (same run, interleaved) | {:.2}× | {:.2}× | |",
            ratio(c.cluster_page.p50, c.local_page.p50),
            ratio(c.cluster_page.p99, c.local_page.p99),
        );
        return Ok(out);
    }
    if let Some(samples) = args.alerts_only {
        eprintln!(
            "alerts: {samples} CRITICAL events, one at a time, each to a webhook on loopback"
        );
        let a = alerts::run(&evident, work.path(), samples.max(1)).await?;
        let mut out = String::new();
        let _ = writeln!(out, "| Measurement | p50 | p99 | max | Goal | Verdict |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        let verdict = if a.delivered.p99 < Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        };
        let _ = writeln!(
            out,
            "| CRITICAL event append sent → signed webhook received ({} alerts) | {} | {} | {} | < 1 s | {verdict} |",
            a.samples,
            ms(a.delivered.p50),
            ms(a.delivered.p99),
            ms(a.delivered.max),
        );
        let _ = writeln!(
            out,
            "| the same appends: sent → 201 (commit acknowledged) | {} | {} | {} | | |",
            ms(a.append.p50),
            ms(a.append.p99),
            ms(a.append.max),
        );
        return Ok(out);
    }
    if args.publish {
        let (rounds, cell, backlog) = if args.quick {
            (2, Duration::from_secs(2), 20_000)
        } else {
            (5, Duration::from_secs(4), plan.scale.min(200_000))
        };
        let mut report = publish::run(&evident, work.path(), rounds, cell, backlog).await?;
        let _ = writeln!(
            report,
            "\nmachine: {}; load average {}",
            server::machine(),
            server::load_average()
        );
        return Ok(report);
    }
    if args.consumers {
        let (rounds, cell) = if args.quick {
            (2, Duration::from_secs(2))
        } else {
            (5, Duration::from_secs(5))
        };
        return consumers::run(&evident, work.path(), rounds, cell).await;
    }
    if args.dashboard {
        let dir = work.path().join("dashboard");
        let mut cluster = None;
        let storage = if args.postgres {
            eprintln!("starting a throwaway PostgreSQL 15 cluster (fsync on)");
            let c = cluster.insert(pg::start_cluster()?);
            Some(c.create_database_url()?)
        } else {
            None
        };
        let (server, api) = launch(&evident, &dir, storage.as_deref()).await?;
        eprintln!("bulk load: {} events", thousands(plan.scale));
        let from_ms = ingest::now_ms();
        let load = ingest::bulk_load(&api, plan.scale, 1000, 8, 300).await?;
        let window = reads::LoadWindow {
            from_ms,
            to_ms: ingest::now_ms(),
        };
        if load.errors > 0 {
            bail!("the bulk load had {} failed requests", load.errors);
        }
        eprintln!(
            "dashboard: first page and chart, {} runs per filter",
            plan.query_runs
        );
        let rows = dashboard::measure(&api, window, plan.query_runs).await;
        let rows = rows.map_err(|e| with_log_tail(e, &server))?;
        stop(server);
        if let Some(c) = cluster.as_mut() {
            c.stop();
        }
        let store = if args.postgres {
            "PostgreSQL 15"
        } else {
            "the embedded store"
        };
        let mut out = dashboard::report(&rows, plan.scale, store);
        let _ = writeln!(
            out,
            "\nmachine: {}; load average {}",
            server::machine(),
            server::load_average()
        );
        return Ok(out);
    }
    if args.forwarding {
        let cell = if args.quick {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(5)
        };
        return forwarding::run(&evident, work.path(), cell).await;
    }
    let mut phases = Vec::new();
    let load_before = server::load_average();

    // PostgreSQL first, so that a missing installation fails the bench before anything long.
    let mut cluster = if args.no_postgres {
        None
    } else {
        eprintln!("starting a throwaway PostgreSQL 15 cluster (fsync on)");
        Some(pg::start_cluster()?)
    };
    let pg_settings = match &cluster {
        Some(c) => Some(pg::settings(&c.url("postgres")).await?),
        None => None,
    };

    let cells: Vec<(usize, usize)> = BATCHES
        .iter()
        .flat_map(|&b| CONCURRENCY.iter().map(move |&c| (b, c)))
        .collect();
    eprintln!("baseline: plain SQLite inserts, no integrity");
    let baseline = baseline::sqlite_inserts(work.path(), &cells, plan.cell)?;
    for (batch, writers, run) in &baseline {
        eprintln!(
            "  batch {batch} x {writers} writers: {} events/s ({} errors)",
            per_sec(run.events_per_sec()),
            run.errors
        );
    }

    // Fresh servers: the write-path phases would otherwise leave a log of unpredictable size
    // behind, and the read-path figures are meant at exactly `scale` events.
    let writes_dir = work.path().join("writes");
    let (server, api) = launch(&evident, &writes_dir, None).await?;
    let writes = measure_writes(&server, &api, &plan, &mut phases).await;
    let mut writes = writes.map_err(|e| with_log_tail(e, &server))?;
    writes.vm_hwm_kb = server.vm_hwm_kb();
    writes.max_threads = server.max_threads();
    let write_samples = server.rss_samples();
    stop(server);
    // Frees the disk before the bulk load.
    let _ = std::fs::remove_dir_all(&writes_dir);

    let postgres = match (&cluster, pg_settings) {
        (Some(c), Some(settings)) => {
            Some(measure_postgres(&evident, c, settings, work.path(), &plan, &mut phases).await?)
        }
        _ => None,
    };
    if let Some(c) = cluster.as_mut() {
        eprintln!("stopping the PostgreSQL cluster");
        c.stop();
    }
    drop(cluster);

    let reads_dir = work.path().join("reads");
    let (server, api) = launch(&evident, &reads_dir, None).await?;
    let reads = measure_reads(&server, &api, &plan, &mut phases).await;
    let mut reads = reads.map_err(|e| with_log_tail(e, &server))?;
    reads.vm_hwm_kb = server.vm_hwm_kb();
    reads.max_threads = server.max_threads();
    reads.rss_samples = server.rss_samples() + write_samples;
    let data_dir = server.data_dir.clone();
    stop(server);
    reads.disk_stopped = server::disk_usage(&data_dir).ok();
    writes.baseline = baseline;
    Ok(report(
        &writes,
        &reads,
        postgres.as_ref(),
        &phases,
        &plan,
        &load_before,
        &evident,
        args.quick,
    ))
}

/// Starts a server in `dir` and connects a client to it with a new owner key.
/// With `storage`, the log is in that PostgreSQL database.
async fn launch(
    evident: &Path,
    dir: &Path,
    storage: Option<&str>,
) -> anyhow::Result<(Server, client::Api)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!("starting {} serve in {}", evident.display(), dir.display());
    let server = Server::start(evident, dir, storage)?;
    let key = server.create_key(evident)?;
    let api = client::Api::new(&server.base_url, &key)?;
    api.wait_healthy(Duration::from_secs(30)).await?;
    eprintln!("server pid {} on {}", server.pid, server.base_url);
    Ok((server, api))
}

fn stop(server: Server) {
    eprintln!("stopping the server");
    if let Err(e) = server.stop(Duration::from_secs(60)) {
        eprintln!("warning: {e:#}");
    }
}

fn with_log_tail(e: anyhow::Error, server: &Server) -> anyhow::Error {
    let text = std::fs::read_to_string(&server.log_path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    e.context(format!("server log ends:\n{tail}"))
}

/// What the write-path server measured.
struct Writes {
    cells: Vec<(usize, usize, ingest::AppendRun)>,
    open_loop: ingest::AppendRun,
    reference: ingest::AppendRun,
    /// The plain-SQLite ceiling, per cell (measured before the servers start).
    baseline: Vec<(usize, usize, ingest::AppendRun)>,
    vm_hwm_kb: Option<u64>,
    max_threads: u64,
}

/// What the PostgreSQL phases measured.
struct Postgres {
    settings: pg::Settings,
    /// Per cell: Evident on PostgreSQL over HTTP, and the trigger table.
    cells: Vec<(usize, usize, ingest::AppendRun, ingest::AppendRun)>,
    /// `GET /api/v1/verify` of the PostgreSQL-backed log after its cells.
    verify: reads::VerifyResult,
    /// The trigger table after its cells, with the events it acknowledged (warm-up included)
    /// and the rows of its failed statements.
    check: pg::TriggerCheck,
    acknowledged: u64,
    failed_rows: u64,
}

/// What the read-path server measured.
struct Reads {
    load: ingest::AppendRun,
    queries: Vec<reads::QueryResult>,
    csv: reads::ExportResult,
    ndjson: reads::ExportResult,
    verify: reads::VerifyResult,
    proofs: reads::ProofResult,
    vm_hwm_kb: Option<u64>,
    max_threads: u64,
    rss_samples: usize,
    disk_running: (u64, u64),
    disk_stopped: Option<(u64, u64)>,
    log_size: u64,
}

/// A warm-up, then every ingestion cell (batch size × concurrent clients) against `server`,
/// each recorded as a phase named with `label` in front; `pg` is the postmaster whose CPU the
/// phases also report.
async fn ingestion_cells(
    server: &Server,
    api: &client::Api,
    plan: &Plan,
    phases: &mut Vec<Phase>,
    label: &str,
    pg: Option<u32>,
) -> anyhow::Result<Vec<(usize, usize, ingest::AppendRun)>> {
    // Opens connections and lets the server reach a steady state before the first cell.
    let warm = ingest::throughput(api, 100, 8, Duration::from_millis(500), 1).await?;
    if let Some(e) = &warm.first_error {
        bail!("warm-up appends failed: {e}");
    }

    let mut cells = Vec::new();
    for (i, &batch) in BATCHES.iter().enumerate() {
        for (j, &concurrency) in CONCURRENCY.iter().enumerate() {
            eprintln!("{label}ingestion: batch {batch} x {concurrency} clients");
            let probe = Probe::start_with_commits(server, api).await?.with_pg(pg);
            let seed = 100 + (i * 3 + j) as u64;
            let run = ingest::throughput(api, batch, concurrency, plan.cell, seed).await?;
            phases.push(
                probe
                    .finish_with_commits(
                        server,
                        api,
                        format!("{label}ingest batch {batch} x {concurrency}"),
                        Some(run.events),
                    )
                    .await?,
            );
            eprintln!(
                "  {} events/s ({} errors)",
                per_sec(run.events_per_sec()),
                run.errors
            );
            cells.push((batch, concurrency, run));
        }
    }
    Ok(cells)
}

/// Evident on PostgreSQL (a second server, its log in a fresh database of `cluster`) through
/// the ingestion cells, then the hand-built trigger table (another fresh database) through the
/// same cells from this process.
async fn measure_postgres(
    evident: &Path,
    cluster: &evident_testpg::Cluster,
    settings: pg::Settings,
    work: &Path,
    plan: &Plan,
    phases: &mut Vec<Phase>,
) -> anyhow::Result<Postgres> {
    let postmaster = cluster.server_pid();
    let url = cluster.create_database_url()?;
    let dir = work.join("postgres");
    let (server, api) = launch(evident, &dir, Some(&url)).await?;
    let measured = async {
        let cells = ingestion_cells(&server, &api, plan, phases, "PG: ", postmaster).await?;
        eprintln!("PG: verify");
        let probe = Probe::start(&server).with_pg(postmaster);
        let verify = reads::verify(&api).await?;
        phases.push(probe.finish(&server, "PG: verify", Some(verify.entries)));
        anyhow::Ok((cells, verify))
    }
    .await;
    let (evident_cells, verify) = measured.map_err(|e| with_log_tail(e, &server))?;
    stop(server);
    let _ = std::fs::remove_dir_all(&dir);

    let url = cluster.create_database_url()?;
    pg::create_trigger_table(&url).await?;
    let rows = Arc::new(pg::trigger_rows(&baseline::rows(20_000, 78)?));
    let mut acknowledged = 0;
    let mut failed_rows = 0;
    // The same warm-up as the servers get.
    let warm =
        pg::trigger_throughput(&url, rows.clone(), 100, 8, Duration::from_millis(500)).await?;
    if let Some(e) = &warm.first_error {
        bail!("warm-up inserts into the trigger table failed: {e}");
    }
    acknowledged += warm.events;
    let mut cells = Vec::new();
    for (batch, concurrency, on_pg) in evident_cells {
        eprintln!("trigger table: batch {batch} x {concurrency} connections");
        let probe = Probe::start_bare().with_pg(postmaster);
        let run = pg::trigger_throughput(&url, rows.clone(), batch, concurrency, plan.cell).await?;
        phases.push(probe.finish_bare(
            format!("trigger table batch {batch} x {concurrency}"),
            Some(run.events),
        ));
        eprintln!(
            "  {} events/s ({} errors)",
            per_sec(run.events_per_sec()),
            run.errors
        );
        acknowledged += run.events;
        failed_rows += run.errors * batch as u64;
        cells.push((batch, concurrency, on_pg, run));
    }
    let check = pg::check_trigger_table(&url).await?;
    Ok(Postgres {
        settings,
        cells,
        verify,
        check,
        acknowledged,
        failed_rows,
    })
}

async fn measure_writes(
    server: &Server,
    api: &client::Api,
    plan: &Plan,
    phases: &mut Vec<Phase>,
) -> anyhow::Result<Writes> {
    let cells = ingestion_cells(server, api, plan, phases, "", None).await?;

    eprintln!(
        "append latency: open loop at {OPEN_LOOP_RATE}/s for {:?}",
        plan.open_loop
    );
    let probe = Probe::start_with_commits(server, api).await?;
    let open_loop = ingest::open_loop(api, OPEN_LOOP_RATE, plan.open_loop, 200).await?;
    phases.push(
        probe
            .finish_with_commits(
                server,
                api,
                format!("open loop {OPEN_LOOP_RATE}/s"),
                Some(open_loop.events),
            )
            .await?,
    );
    eprintln!(
        "  p50 {}, p99 {}, max {}",
        ms(open_loop.latency.p50),
        ms(open_loop.latency.p99),
        ms(open_loop.latency.max)
    );

    eprintln!(
        "append latency, for reference: open loop at {REFERENCE_RATE}/s for {:?}",
        plan.open_loop
    );
    let probe = Probe::start_with_commits(server, api).await?;
    let reference = ingest::open_loop(api, REFERENCE_RATE, plan.open_loop, 201).await?;
    phases.push(
        probe
            .finish_with_commits(
                server,
                api,
                format!("open loop {REFERENCE_RATE}/s"),
                Some(reference.events),
            )
            .await?,
    );
    eprintln!(
        "  p50 {}, p99 {}, max {}",
        ms(reference.latency.p50),
        ms(reference.latency.p99),
        ms(reference.latency.max)
    );
    Ok(Writes {
        cells,
        open_loop,
        reference,
        baseline: Vec::new(),
        vm_hwm_kb: None,
        max_threads: 0,
    })
}

async fn measure_reads(
    server: &Server,
    api: &client::Api,
    plan: &Plan,
    phases: &mut Vec<Phase>,
) -> anyhow::Result<Reads> {
    eprintln!(
        "bulk load: {} events (batch 1000 x 8 clients)",
        thousands(plan.scale)
    );
    let window_from = ingest::now_ms();
    let probe = Probe::start_with_commits(server, api).await?;
    let load = ingest::bulk_load(api, plan.scale, 1000, 8, 300).await?;
    phases.push(
        probe
            .finish_with_commits(server, api, "bulk load", Some(load.events))
            .await?,
    );
    let window = reads::LoadWindow {
        from_ms: window_from,
        to_ms: ingest::now_ms(),
    };
    if load.errors > 0 {
        bail!(
            "the bulk load had {} failed requests; first: {}",
            load.errors,
            load.first_error.as_deref().unwrap_or("?")
        );
    }

    eprintln!("queries: first page, {} runs per filter", plan.query_runs);
    let cases = reads::cases(window);
    let probe = Probe::start(server);
    let queries = reads::first_pages(api, &cases, plan.query_runs, 3).await?;
    phases.push(probe.finish(server, "first-page queries", None));

    eprintln!("export: CSV");
    let probe = Probe::start(server);
    let csv = reads::export_csv(api).await?;
    phases.push(probe.finish(server, "CSV export", Some(csv.rows)));

    eprintln!("export: NDJSON bundle");
    let probe = Probe::start(server);
    let ndjson = reads::export_ndjson(api).await?;
    phases.push(probe.finish(server, "NDJSON export", Some(ndjson.rows)));

    eprintln!("verify");
    let probe = Probe::start(server);
    let verify = reads::verify(api).await?;
    phases.push(probe.finish(server, "verify", Some(verify.entries)));

    let runs = plan.query_runs * 4;
    eprintln!("proofs: {runs} inclusion and {runs} consistency proofs");
    let probe = Probe::start(server);
    let proofs = reads::proofs(api, verify.entries, runs, 7).await?;
    phases.push(probe.finish(server, "proofs", None));

    let disk_running = server::disk_usage(&server.data_dir)?;
    Ok(Reads {
        load,
        queries,
        csv,
        ndjson,
        verify,
        proofs,
        vm_hwm_kb: None,
        max_threads: 0,
        rss_samples: 0,
        disk_running,
        disk_stopped: None,
        log_size: verify.entries,
    })
}

/// PASS, or MISS with the shortfall, for a goal that is a floor.
fn at_least(value: f64, goal: f64) -> String {
    if value >= goal {
        "PASS".to_owned()
    } else {
        format!("MISS ({:.0}% below)", (1.0 - value / goal) * 100.0)
    }
}

/// PASS, or MISS with the excess, for a goal that is a ceiling.
fn at_most(value: f64, goal: f64) -> String {
    if value <= goal {
        "PASS".to_owned()
    } else {
        format!("MISS ({:.1}x the goal)", value / goal)
    }
}

/// `a / b` as a ratio, or n/a when `b` is zero.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "n/a (nothing to compare with)".to_owned()
    }
}

/// Issue 5's goal for a PostgreSQL cell: Evident on PostgreSQL ≥ 5× the trigger table in
/// batched mode (single events have no goal); a cell with failed requests on either side is
/// not a valid comparison.
fn pg_verdict(
    batch: usize,
    on_pg: &ingest::AppendRun,
    trigger: &ingest::AppendRun,
) -> (String, String) {
    let goal = if batch > 1 {
        format!("≥ {GOAL_PG_RATIO:.0}× the trigger table (issue 5, batched)")
    } else {
        format!("— (issue 5's ≥ {GOAL_PG_RATIO:.0}× is for batches)")
    };
    let verdict = if on_pg.errors > 0 || trigger.errors > 0 {
        "INVALID (failed requests)".to_owned()
    } else if batch == 1 {
        "—".to_owned()
    } else {
        let (a, b) = (on_pg.events_per_sec(), trigger.events_per_sec());
        if b > 0.0 && a / b >= GOAL_PG_RATIO {
            format!("PASS ({:.2}×)", a / b)
        } else if b > 0.0 {
            format!("MISS ({:.2}×, goal {GOAL_PG_RATIO:.0}×)", a / b)
        } else {
            "INVALID (the trigger table inserted nothing)".to_owned()
        }
    };
    (goal, verdict)
}

fn errors_note(run: &ingest::AppendRun) -> String {
    if run.errors == 0 {
        String::new()
    } else {
        format!(
            "; **{} failed requests** (first: {})",
            run.errors,
            run.first_error.as_deref().unwrap_or("?")
        )
    }
}

fn commits_text(c: &metrics::CommitDelta) -> String {
    let bound = |b: Option<f64>| match b {
        Some(b) if b.is_finite() => format!("≤ {}", ms(Duration::from_secs_f64(b))),
        Some(_) => "> largest bucket".to_owned(),
        None => "?".to_owned(),
    };
    format!(
        "{} commits, {:.1} events each, mean {}, p50 {}, p99 {}",
        thousands(c.commits),
        c.events_per_commit,
        ms(c.mean),
        bound(c.p50_at_most),
        bound(c.p99_at_most),
    )
}

fn latency_text(l: &Latencies) -> String {
    format!(
        "p50 {}, p99 {}, p99.9 {}, max {}",
        ms(l.p50),
        ms(l.p99),
        ms(l.p999),
        ms(l.max)
    )
}

#[allow(clippy::too_many_arguments)]
fn report(
    w: &Writes,
    r: &Reads,
    postgres: Option<&Postgres>,
    phases: &[Phase],
    plan: &Plan,
    load_before: &str,
    evident: &std::path::Path,
    quick: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## evident-bench results\n");
    let _ = writeln!(out, "- Machine: {}.", server::machine());
    let _ = writeln!(
        out,
        "- Load average before the bench started: {} (anything well above 0 means other work \
         shared the cores).",
        load_before
    );
    let _ = writeln!(
        out,
        "- Client and server share this machine: the load generator (tokio, 2 worker threads, \
         reqwest HTTP/1.1 keep-alive) competes with the server for the same cores, so every \
         figure is a lower bound of what the server does with the machine to itself."
    );
    let _ = writeln!(
        out,
        "- Server: `{} serve`, loopback TCP. Fresh servers: one (embedded store) for the \
         write-path rows 1–2, {}one loaded to exactly the stated size for rows 3–6 ({} events at \
         the end).{}",
        evident.display(),
        if postgres.is_some() {
            "one with `--storage postgres://…` for the PostgreSQL rows, "
        } else {
            ""
        },
        thousands(r.log_size),
        if quick {
            " **--quick run: a smoke test, not a measurement.**"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "- An append is acknowledged only after the server committed it (the API's contract); \
         each answer is checked for status 201 and one receipt per event."
    );
    let _ = writeln!(
        out,
        "- Open-loop latency counts from each request's scheduled send time; the client's timer \
         has 1 ms resolution, so a send can start up to ~1 ms late, and that lateness is \
         counted against the server."
    );
    let _ = writeln!(
        out,
        "- Ceiling rows: plain SQLite in this process, no integrity (no hash, seal, tree or \
         secondary index), WAL + synchronous=FULL like the embedded store, the same synthetic \
         events, one transaction per batch, each of the cell's writers on its own connection \
         (SQLite admits one writer at a time: the others wait for the lock in its busy handler)."
    );
    match postgres {
        Some(pg) => {
            let _ = writeln!(
                out,
                "- PostgreSQL rows: one throwaway PostgreSQL {} cluster on this machine \
                 (evident-testpg: loopback TCP, shared_buffers {}, fsync, full_page_writes and \
                 synchronous_commit on, read back before the cells), a fresh database for each \
                 side. Evident on PostgreSQL: the same HTTP client, cells, events and answer \
                 checks as the embedded rows. Trigger table: `evident_testpg::trigger_table` \
                 (BEFORE INSERT trigger: transaction advisory lock held to COMMIT, then \
                 the last row's number and hash, the row numbered after it, \
                 `sha256(prev_hash || row)`; primary key only), fed from this process over \
                 tokio-postgres, one prepared multi-row INSERT of the batch per transaction per \
                 connection, the same synthetic events (payload = the whole event as jsonb), \
                 each answer checked for the batch's row count.\n",
                pg.settings.version, pg.settings.shared_buffers,
            );
        }
        None => {
            let _ = writeln!(out, "- **PostgreSQL rows skipped (--no-postgres).**\n");
        }
    }

    let _ = writeln!(out, "| # | Measurement | Result | Goal | Verdict |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (batch, concurrency, run) in &w.cells {
        let rate = run.events_per_sec();
        let (goal, verdict) = if *batch > 1 {
            ("≥ 100,000 events/s".to_owned(), at_least(rate, GOAL_INGEST))
        } else {
            ("— (goal is for batches)".to_owned(), "—".to_owned())
        };
        let _ = writeln!(
            out,
            "| 1 | Durable ingestion, batch {batch} × {concurrency} client{} | {} events/s (request p50 {}, p99 {}){} | {goal} | {verdict} |",
            if *concurrency == 1 { "" } else { "s" },
            per_sec(rate),
            ms(run.latency.p50),
            ms(run.latency.p99),
            errors_note(run),
        );
    }
    for (batch, writers, base) in &w.baseline {
        let embedded = w
            .cells
            .iter()
            .find(|(b, c, _)| b == batch && c == writers)
            .map(|(_, _, run)| run.events_per_sec());
        let _ = writeln!(
            out,
            "| 1 | Ceiling: plain SQLite inserts (no integrity, no index, in process, WAL + synchronous=FULL), batch {batch} per transaction × {writers} writer connection{} | {} events/s (transaction p50 {}, p99 {}){}; Evident embedded at batch {batch} × {writers} over HTTP = {} of it | — | — |",
            if *writers == 1 { "" } else { "s" },
            per_sec(base.events_per_sec()),
            ms(base.latency.p50),
            ms(base.latency.p99),
            errors_note(base),
            embedded.map_or("?".to_owned(), |e| ratio(e, base.events_per_sec())),
        );
    }
    match postgres {
        Some(pg) => {
            for (batch, concurrency, on_pg, trigger) in &pg.cells {
                let (goal, verdict) = pg_verdict(*batch, on_pg, trigger);
                let _ = writeln!(
                    out,
                    "| 1 | PostgreSQL, batch {batch} × {concurrency} client{}: Evident on PostgreSQL over HTTP vs the hand-built trigger table ({batch}-row INSERT per transaction, {concurrency} connection{}) | Evident {} events/s (request p50 {}, p99 {}){}; trigger table {} events/s (transaction p50 {}, p99 {}){}; Evident = **{}** the trigger table | {goal} | {verdict} |",
                    if *concurrency == 1 { "" } else { "s" },
                    if *concurrency == 1 { "" } else { "s" },
                    per_sec(on_pg.events_per_sec()),
                    ms(on_pg.latency.p50),
                    ms(on_pg.latency.p99),
                    errors_note(on_pg),
                    per_sec(trigger.events_per_sec()),
                    ms(trigger.latency.p50),
                    ms(trigger.latency.p99),
                    errors_note(trigger),
                    ratio(on_pg.events_per_sec(), trigger.events_per_sec()),
                );
            }
            let holds = pg.check.holds(pg.acknowledged, pg.failed_rows);
            let _ = writeln!(
                out,
                "| 1 | PostgreSQL: both logs checked after the cells | Evident on PostgreSQL: `GET /api/v1/verify` {} ({} entries); trigger table (one SQL query recomputing every hash and link): {} rows for {} acknowledged{}, numbered 1–{}, {} broken link{} | every acknowledged event kept, logs intact | {} |",
                if pg.verify.ok {
                    "intact"
                } else {
                    "**NOT intact**"
                },
                thousands(pg.verify.entries),
                thousands(pg.check.rows),
                thousands(pg.acknowledged),
                if pg.failed_rows > 0 {
                    format!(
                        " (+ up to {} from failed statements)",
                        thousands(pg.failed_rows)
                    )
                } else {
                    String::new()
                },
                thousands(pg.check.max_seq),
                pg.check.broken,
                if pg.check.broken == 1 { "" } else { "s" },
                if pg.verify.ok && holds {
                    "PASS"
                } else {
                    "FAIL"
                },
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| 1 | PostgreSQL: Evident on PostgreSQL over HTTP vs the hand-built trigger table | **skipped (--no-postgres)** | ≥ 5× the trigger table in batched mode (issue 5) | NOT MEASURED |"
            );
        }
    }
    let ol = &w.open_loop;
    let _ = writeln!(
        out,
        "| 2 | Single-event append latency, open loop at {} events/s offered for {} s ({} requests; latency from the scheduled send time) | {}; achieved {} events/s{} | p99 ≤ 10 ms | {} |",
        thousands(OPEN_LOOP_RATE),
        plan.open_loop.as_secs(),
        thousands(ol.requests),
        latency_text(&ol.latency),
        per_sec(ol.events_per_sec()),
        errors_note(ol),
        if ol.errors > 0 {
            "MISS (failed requests)".to_owned()
        } else {
            at_most(ol.latency.p99.as_secs_f64(), GOAL_APPEND_P99.as_secs_f64())
        },
    );
    let rf = &w.reference;
    let _ = writeln!(
        out,
        "| 2 | For reference: the same at {} events/s offered ({} requests) | {}; achieved {} events/s{} | — | — |",
        thousands(REFERENCE_RATE),
        thousands(rf.requests),
        latency_text(&rf.latency),
        per_sec(rf.events_per_sec()),
        errors_note(rf),
    );
    let _ = writeln!(
        out,
        "| 3 | Bulk load of {} events (batch 1000 × 8 clients, varied events) | {} events/s in {:.1} s | — | — |",
        thousands(r.load.events),
        per_sec(r.load.events_per_sec()),
        r.load.elapsed.as_secs_f64(),
    );
    let scale_note = if r.log_size >= GOAL_FIRST_PAGE_AT {
        String::new()
    } else {
        format!(" (at {}; the goal is at 10M)", thousands(r.log_size))
    };
    for q in &r.queries {
        let _ = writeln!(
            out,
            "| 3 | First page (limit 100) at {} events, filter: {} | p50 {}, p99 {}, max {} ({}–{} events per page) | p99 ≤ 50 ms at 10M events | {}{} |",
            thousands(r.log_size),
            q.name,
            ms(q.latency.p50),
            ms(q.latency.p99),
            ms(q.latency.max),
            q.min_events,
            q.max_events,
            at_most(q.latency.p99.as_secs_f64(), GOAL_FIRST_PAGE.as_secs_f64()),
            scale_note,
        );
    }
    for (name, e) in [("CSV", &r.csv), ("NDJSON bundle", &r.ndjson)] {
        let rate = stats::rate(e.rows, e.elapsed);
        let _ = writeln!(
            out,
            "| 4 | {name} export of the whole log | {} rows/s ({} rows, {} in {:.1} s; first byte after {}) | ≥ 300,000 rows/s | {} |",
            per_sec(rate),
            thousands(e.rows),
            mib(e.bytes),
            e.elapsed.as_secs_f64(),
            ms(e.first_byte),
            at_least(rate, GOAL_EXPORT),
        );
    }
    let _ = writeln!(
        out,
        "| 5 | Online verification (`GET /api/v1/verify`) of the whole log | {} events/s ({} events in {:.1} s, {}) | — | {} |",
        per_sec(stats::rate(r.verify.entries, r.verify.elapsed)),
        thousands(r.verify.entries),
        r.verify.elapsed.as_secs_f64(),
        if r.verify.ok {
            "intact"
        } else {
            "**NOT intact**"
        },
        if r.verify.ok { "—" } else { "FAIL" },
    );
    let p = &r.proofs;
    for (name, route, l) in [
        ("Inclusion", "inclusion", &p.inclusion),
        ("Consistency", "consistency", &p.consistency),
    ] {
        let _ = writeln!(
            out,
            "| 5 | {name} proof latency (`GET /api/v1/proof/{route}`, to size {}, {} requests, one at a time) | p50 {}, p99 {} | — | — |",
            thousands(p.size),
            p.runs,
            ms(l.p50),
            ms(l.p99),
        );
    }
    let peak_sampled = phases.iter().map(|p| p.rss_max_kb).max().unwrap_or(0);
    let hwm = match (w.vm_hwm_kb, r.vm_hwm_kb) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let kib = |v: Option<u64>| v.map_or("?".to_owned(), |kb| mib(kb * 1024));
    match hwm {
        Some(kb) => {
            let _ = writeln!(
                out,
                "| 6 | Peak RSS of the server (VmHWM before stopping; write-path server {} with up to {} threads, read-path server {} with up to {} threads) | {:.1} MB ({}; largest of {} VmRSS samples: {}) | ≤ 200 MB | {} |",
                kib(w.vm_hwm_kb),
                w.max_threads,
                kib(r.vm_hwm_kb),
                r.max_threads,
                (kb * 1024) as f64 / 1e6,
                mib(kb * 1024),
                r.rss_samples,
                mib(peak_sampled * 1024),
                at_most((kb * 1024) as f64, GOAL_RSS_BYTES as f64),
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| 6 | Peak RSS of the server | VmHWM unreadable; largest VmRSS sample {} | ≤ 200 MB | {} |",
                mib(peak_sampled * 1024),
                at_most((peak_sampled * 1024) as f64, GOAL_RSS_BYTES as f64),
            );
        }
    }
    let per_event = |bytes: u64| bytes as f64 / r.log_size.max(1) as f64;
    let stopped = r.disk_stopped.map_or_else(String::new, |(alloc, _)| {
        format!(
            "; after a clean stop {:.0} B/event ({})",
            per_event(alloc),
            mib(alloc)
        )
    });
    let _ = writeln!(
        out,
        "| 6 | Bytes on disk per event (data directory ÷ events) | {:.0} B/event while running ({} allocated, {} apparent){stopped} | — | — |",
        per_event(r.disk_running.0),
        mib(r.disk_running.0),
        mib(r.disk_running.1),
    );

    let _ = writeln!(out, "\nSlowest first-page request per filter:\n");
    for q in &r.queries {
        let _ = writeln!(out, "- {}: {} `{}`", q.name, ms(q.latency.max), q.slowest);
    }
    let _ = writeln!(
        out,
        "\nWhere the time went (CPU seconds from /proc; the machine has {} cores; the ingest and open-loop phases ran on the write-path server, `PG:` phases on the PostgreSQL-backed server, `trigger table` phases had no Evident server (this process's connections to PostgreSQL), the others ran on the read-path server; PostgreSQL CPU is the cluster's postmaster and all its backends):\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        out,
        "| Phase | Wall | Server CPU | Client CPU | PostgreSQL CPU | Server CPU per event | Max sampled server RSS | Group commits (server metrics) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let secs =
        |d: Option<Duration>| d.map_or("?".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    for p in phases {
        let per_event = match (p.server_cpu, p.events) {
            (Some(cpu), Some(n)) if n > 0 => {
                format!("{:.1} µs", cpu.as_secs_f64() * 1e6 / n as f64)
            }
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.2} s | {} | {} | {} | {} | {} | {} |",
            p.name,
            p.wall.as_secs_f64(),
            if p.has_server {
                secs(p.server_cpu)
            } else {
                "—".to_owned()
            },
            secs(p.client_cpu),
            p.pg_cpu.map_or("—".to_owned(), |d| secs(Some(d))),
            per_event,
            if p.has_server {
                mib(p.rss_max_kb * 1024)
            } else {
                "—".to_owned()
            },
            p.commits.as_ref().map_or("—".to_owned(), commits_text),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_say_by_how_much() {
        assert_eq!(at_least(120.0, 100.0), "PASS");
        assert_eq!(at_least(75.0, 100.0), "MISS (25% below)");
        assert_eq!(at_most(0.009, 0.010), "PASS");
        assert_eq!(at_most(0.025, 0.010), "MISS (2.5x the goal)");
    }

    #[test]
    fn arguments_parse() {
        let a = Args::try_parse_from(["evident-bench", "--scale", "10000000"]).unwrap();
        assert_eq!(a.scale, Some(10_000_000));
        assert!(Args::try_parse_from(["evident-bench", "--events-1m", "--scale", "5"]).is_err());
        let q = Args::try_parse_from(["evident-bench", "--quick"]).unwrap();
        assert!(q.quick && q.evident.is_none() && !q.no_postgres);
        let n = Args::try_parse_from(["evident-bench", "--quick", "--no-postgres"]).unwrap();
        assert!(n.no_postgres);
    }

    fn run(events: u64, errors: u64) -> ingest::AppendRun {
        ingest::AppendRun {
            events,
            errors,
            elapsed: Duration::from_secs(1),
            ..ingest::AppendRun::default()
        }
    }

    #[test]
    fn the_postgres_goal_is_judged_on_batched_cells_only() {
        let (goal, verdict) = pg_verdict(1000, &run(60_000, 0), &run(10_000, 0));
        assert!(goal.starts_with("≥ 5×"), "{goal}");
        assert_eq!(verdict, "PASS (6.00×)");
        let (_, verdict) = pg_verdict(100, &run(30_000, 0), &run(40_000, 0));
        assert_eq!(verdict, "MISS (0.75×, goal 5×)");
        let (goal, verdict) = pg_verdict(1, &run(9_000, 0), &run(1_000, 0));
        assert!(goal.starts_with("—"), "{goal}");
        assert_eq!(verdict, "—");
        let (_, verdict) = pg_verdict(1000, &run(60_000, 0), &run(10_000, 3));
        assert_eq!(verdict, "INVALID (failed requests)");
        assert_eq!(ratio(3.0, 2.0), "1.50×");
        assert!(ratio(3.0, 0.0).starts_with("n/a"));
    }
}
