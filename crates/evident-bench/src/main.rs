//! `evident-bench`: measures a real `evident serve` the way a client sees it, over loopback
//! HTTP, and prints one Markdown table with each result next to its goal. It starts the server
//! on a fresh temporary data directory, creates an owner key, and runs in order: ingestion
//! throughput (batch size × concurrency), open-loop append latency, a bulk load to the target
//! size, first-page query latency per filter, CSV and NDJSON exports, online verification,
//! inclusion and consistency proof latency, then reads memory and disk figures and stops the
//! server.
//!
//! Before the servers, the ceiling baseline (`baseline.rs`): plain SQLite inserts with no
//! integrity, in the same batch sizes, printed beside Evident's ingestion as a ratio.
//!
//! Argument parsing, the order of the phases and the report live here; the measurements are
//! in `ingest.rs` and `reads.rs`, the server process in `server.rs`.

mod baseline;
mod client;
mod ingest;
mod metrics;
mod reads;
mod server;
mod stats;
mod workload;

use anyhow::{Context as _, bail};
use clap::Parser;
use server::Server;
use stats::{Latencies, mib, ms, per_sec, thousands};
use std::fmt::Write as _;
use std::path::PathBuf;
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
    /// Events in the log for the query, export and verify phases [default: 1,000,000, or
    /// 100,000 with --quick].
    #[arg(long, value_name = "N")]
    scale: Option<u64>,
    /// Directory under which the temporary data directory is created [default: the system
    /// temporary directory].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
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
}

struct Probe {
    started: Instant,
    server_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
    metrics: Option<metrics::Snapshot>,
}

impl Probe {
    fn start(server: &Server) -> Probe {
        Probe {
            started: Instant::now(),
            server_cpu: server.cpu(),
            client_cpu: server::own_cpu(),
            metrics: None,
        }
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
        let now = Instant::now();
        let diff = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        Phase {
            name: name.into(),
            wall: now - self.started,
            server_cpu: diff(self.server_cpu, server.cpu()),
            client_cpu: diff(self.client_cpu, server::own_cpu()),
            events,
            rss_max_kb: server.rss_max_kb(self.started, now),
            commits: None,
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
        Some(dir) => temp.tempdir_in(dir),
        None => temp.tempdir(),
    }
    .context("cannot create a temporary directory")?;
    let mut phases = Vec::new();
    let load_before = server::load_average();

    eprintln!("baseline: plain SQLite inserts, no integrity");
    let baseline = baseline::sqlite_inserts(work.path(), &BATCHES, plan.cell)?;
    for b in &baseline {
        eprintln!(
            "  batch {}: {} events/s",
            b.batch,
            per_sec(b.events_per_sec())
        );
    }

    // Two fresh servers: the write-path phases would otherwise leave a log of unpredictable
    // size behind, and the read-path figures are meant at exactly `scale` events.
    let writes_dir = work.path().join("writes");
    let (server, api) = launch(&evident, &writes_dir).await?;
    let writes = measure_writes(&server, &api, &plan, &mut phases).await;
    let mut writes = writes.map_err(|e| with_log_tail(e, &server))?;
    writes.vm_hwm_kb = server.vm_hwm_kb();
    writes.max_threads = server.max_threads();
    let write_samples = server.rss_samples();
    stop(server);
    // Frees the disk before the bulk load.
    let _ = std::fs::remove_dir_all(&writes_dir);

    let reads_dir = work.path().join("reads");
    let (server, api) = launch(&evident, &reads_dir).await?;
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
        &phases,
        &plan,
        &load_before,
        &evident,
        args.quick,
    ))
}

/// Starts a server in `dir` and connects a client to it with a new owner key.
async fn launch(
    evident: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<(Server, client::Api)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!("starting {} serve in {}", evident.display(), dir.display());
    let server = Server::start(evident, dir)?;
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
    /// The plain-SQLite ceiling, per batch size (measured before the servers start).
    baseline: Vec<baseline::BaselineRun>,
    vm_hwm_kb: Option<u64>,
    max_threads: u64,
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

async fn measure_writes(
    server: &Server,
    api: &client::Api,
    plan: &Plan,
    phases: &mut Vec<Phase>,
) -> anyhow::Result<Writes> {
    // Opens connections and lets the server reach a steady state before the first cell.
    let warm = ingest::throughput(api, 100, 8, Duration::from_millis(500), 1).await?;
    if let Some(e) = &warm.first_error {
        bail!("warm-up appends failed: {e}");
    }

    let mut cells = Vec::new();
    for (i, &batch) in BATCHES.iter().enumerate() {
        for (j, &concurrency) in CONCURRENCY.iter().enumerate() {
            eprintln!("ingestion: batch {batch} x {concurrency} clients");
            let probe = Probe::start_with_commits(server, api).await?;
            let seed = 100 + (i * 3 + j) as u64;
            let run = ingest::throughput(api, batch, concurrency, plan.cell, seed).await?;
            phases.push(
                probe
                    .finish_with_commits(
                        server,
                        api,
                        format!("ingest batch {batch} x {concurrency}"),
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

fn report(
    w: &Writes,
    r: &Reads,
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
        "- Server: `{} serve`, loopback TCP. Two fresh servers: one for the write-path rows 1–2, \
         one loaded to exactly the stated size for rows 3–6 ({} events at the end).{}",
        evident.display(),
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
         counted against the server.\n"
    );

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
    for b in &w.baseline {
        let base = b.events_per_sec();
        let best = w
            .cells
            .iter()
            .filter(|(batch, _, _)| *batch == b.batch)
            .map(|(_, _, run)| run.events_per_sec())
            .fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "| 1 | Baseline (ceiling): plain SQLite inserts, no integrity, no index, in process, WAL + synchronous=FULL, batch {} per transaction, one writer | {} events/s; Evident's best at batch {} over HTTP = {:.2}× of it | — | — |",
            b.batch,
            per_sec(base),
            b.batch,
            if base > 0.0 { best / base } else { 0.0 },
        );
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
        "\nWhere the time went (CPU seconds from /proc; the machine has {} cores; the ingest and open-loop phases ran on the write-path server, the others on the read-path server):\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        out,
        "| Phase | Wall | Server CPU | Client CPU | Server CPU per event | Max sampled server RSS | Group commits (server metrics) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
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
            "| {} | {:.2} s | {} | {} | {} | {} | {} |",
            p.name,
            p.wall.as_secs_f64(),
            secs(p.server_cpu),
            secs(p.client_cpu),
            per_event,
            mib(p.rss_max_kb * 1024),
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
        assert!(q.quick && q.evident.is_none());
    }
}
