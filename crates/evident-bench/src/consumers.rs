//! `--consumers` (issue 16): what the log's consumers cost ingestion when all of them are
//! attached at once. Two nodes side by side: a bare one, and one with a syslog forwarder
//! (TCP to a real rsyslogd), the object-storage publisher (a throwaway SeaweedFS, a period
//! every 20,000 entries) and a webhook endpoint running the alert rules (the built-in ones and
//! a failed-login threshold; a receiver on loopback answering 204). They take the same batched
//! load in alternating cells; after each attached cell the consumers catch up before the bare
//! cell runs, so that neither node's cell shares the machine with the other's backlog. The
//! ratio of the rates is the cost of the attached consumers.

use crate::client::Api;
use crate::forwarding::{self, log_size};
use crate::publish::node;
use crate::server::tree_cpu;
use crate::{alerts, ingest};
use anyhow::{Context as _, bail};
use evident_tests3::S3Server;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// The main bench's typical batched load.
const BATCH: usize = 1000;
const CLIENTS: usize = 8;
/// The publisher writes a period once this many entries are waiting.
const PUBLISH_EVERY: u64 = 20_000;

/// Every consumer's status, from `GET /api/v1/consumers`.
async fn statuses(api: &Api) -> anyhow::Result<Vec<serde_json::Value>> {
    let answer = api.get("/api/v1/consumers").await?;
    let list: serde_json::Value = serde_json::from_slice(&answer.bytes().await?)?;
    match list {
        serde_json::Value::Array(list) => Ok(list),
        _ => bail!("GET /api/v1/consumers did not answer a list"),
    }
}

/// `kind:name` of a consumer's status.
fn consumer_name(c: &serde_json::Value) -> String {
    let field = |f: &str| c[f].as_str().unwrap_or("?").to_owned();
    format!("{}:{}", field("kind"), field("name"))
}

/// The consumers' lag: (`kind:name`, entries behind) each.
async fn lags(api: &Api) -> anyhow::Result<Vec<(String, u64)>> {
    Ok(statuses(api)
        .await?
        .iter()
        .map(|c| (consumer_name(c), c["lag_events"].as_u64().unwrap_or(0)))
        .collect())
}

/// Waits until every consumer has delivered the log up to `size` (the publisher: up to its
/// last whole period); returns how long it took.
async fn wait_caught_up(api: &Api, size: u64, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let behind: Vec<String> = statuses(api)
            .await?
            .iter()
            .filter(|c| {
                let next = c["next_seq"].as_u64().unwrap_or(0);
                let allowed = if c["kind"] == "publisher" {
                    PUBLISH_EVERY
                } else {
                    0
                };
                next + allowed < size
            })
            .map(|c| format!("{} at {}", consumer_name(c), c["next_seq"]))
            .collect();
        if behind.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("consumers did not catch up with {size} entries within {within:?}: {behind:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Server CPU between two readings per event, as text.
fn per_event(before: Option<Duration>, after: Option<Duration>, events: u64) -> String {
    match (before, after) {
        (Some(b), Some(a)) if events > 0 => format!(
            "{:.1} µs",
            a.saturating_sub(b).as_secs_f64() * 1e6 / events as f64
        ),
        _ => "n/a".to_owned(),
    }
}

fn config(work: &Path, s3: &S3Server, tcp: u16, hook_port: u16) -> anyhow::Result<String> {
    let path = work.join("consumers.toml");
    std::fs::write(
        &path,
        format!(
            "[[forward.syslog]]\nname = \"siem\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{tcp}\"\n\n\
             [publish]\ntarget = \"{}\"\nendpoint = \"{}\"\nevery_events = {PUBLISH_EVERY}\n\n\
             [[alerts.rules]]\nname = \"failed-logins\"\naction = \"auth.login.failed\"\n\
             threshold = {{ count = 5, within_ms = 60000, per = \"actor\" }}\n\n\
             [[alerts.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
            s3.target("consumers"),
            s3.endpoint()
        ),
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.display().to_string())
}

/// Runs `rounds` pairs of cells of `cell` each; returns the Markdown report.
pub async fn run(
    evident: &Path,
    work: &Path,
    rounds: usize,
    cell: Duration,
) -> anyhow::Result<String> {
    let rsyslog_dir = work.join("rsyslog");
    std::fs::create_dir_all(&rsyslog_dir)?;
    let (rsyslog, tcp, _tls, _ca) = forwarding::start_rsyslog(&rsyslog_dir)?;
    let s3 = tokio::task::spawn_blocking(S3Server::start)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (hook_port, alerts_received) = alerts::receiver()?;
    let config = config(work, &s3, tcp, hook_port)?;
    let env = s3.aws_env();
    let (bare, bare_api) = node(evident, &work.join("bare"), &[], &env).await?;
    let (attached, attached_api) = node(
        evident,
        &work.join("attached"),
        &["--config", &config],
        &env,
    )
    .await?;
    let attached_kinds: Vec<String> = lags(&attached_api)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for api in [&bare_api, &attached_api] {
        ingest::throughput(api, BATCH, CLIENTS, Duration::from_millis(500), 1).await?;
    }
    let size = log_size(&attached_api).await?;
    wait_caught_up(&attached_api, size, Duration::from_secs(60)).await?;

    let mut rows = Vec::new();
    let (mut bare_events, mut bare_time) = (0u64, Duration::ZERO);
    let (mut attached_events, mut attached_time) = (0u64, Duration::ZERO);
    for round in 0..rounds {
        let seed = 20 + round as u64;
        eprintln!("consumers: round {round}: bare node");
        let cpu = bare.cpu();
        let a = ingest::throughput(&bare_api, BATCH, CLIENTS, cell, seed).await?;
        let bare_cpu = per_event(cpu, bare.cpu(), a.events);
        eprintln!("consumers: round {round}: forwarder, publisher and webhook attached");
        let receivers = || {
            let rsyslogd = tree_cpu(rsyslog.pid()).unwrap_or_default();
            let weed = s3.pid().and_then(tree_cpu).unwrap_or_default();
            rsyslogd + weed
        };
        let (cpu, receivers_before) = (attached.cpu(), receivers());
        let b = ingest::throughput(&attached_api, BATCH, CLIENTS, cell, seed).await?;
        let lag_at_end = lags(&attached_api).await?;
        let size = log_size(&attached_api).await?;
        let catch_up = wait_caught_up(&attached_api, size, Duration::from_secs(300)).await?;
        let attached_cpu = per_event(cpu, attached.cpu(), b.events);
        let receivers_cpu = receivers().saturating_sub(receivers_before);
        if a.errors + b.errors > 0 {
            bail!("appends failed: {:?} / {:?}", a.first_error, b.first_error);
        }
        bare_events += a.events;
        bare_time += a.elapsed;
        attached_events += b.events;
        attached_time += b.elapsed;
        let lag = lag_at_end
            .iter()
            .map(|(name, lag)| format!("{name} {lag}"))
            .collect::<Vec<_>>()
            .join(", ");
        rows.push(format!(
            "| {} | {:.0} | {:.0} | {:.3} | {lag} | {:.2} s | {bare_cpu} / {attached_cpu} | {:.2} s |",
            round + 1,
            a.events_per_sec(),
            b.events_per_sec(),
            b.events_per_sec() / a.events_per_sec(),
            catch_up.as_secs_f64(),
            receivers_cpu.as_secs_f64()
        ));
    }
    let final_size = log_size(&attached_api).await?;
    let alerts = alerts_received.try_iter().count();
    bare.stop(Duration::from_secs(60))?;
    attached.stop(Duration::from_secs(60))?;
    drop(rsyslog);
    let forwarded = std::fs::metadata(rsyslog_dir.join("tcp.log")).map_or(0, |m| m.len());
    let published = s3
        .list("consumers/")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .len();

    let bare_rate = bare_events as f64 / bare_time.as_secs_f64();
    let attached_rate = attached_events as f64 / attached_time.as_secs_f64();
    let mut out = String::new();
    writeln!(
        out,
        "## Attached consumers (issue 16)\n\nBatch {BATCH} × {CLIENTS} clients, {rounds} rounds of {:.1} s cells, interleaved (events/s); consumers on the attached node: {}.\n",
        cell.as_secs_f64(),
        attached_kinds.join(", ")
    )?;
    writeln!(
        out,
        "| round | bare node | consumers attached | ratio | lag at the end of the cell (entries) | caught up after | server CPU per event, bare / attached (cell and catch-up) | CPU of rsyslogd and weed (attached cell and catch-up) |\n|---|---|---|---|---|---|---|---|"
    )?;
    for row in rows {
        writeln!(out, "{row}")?;
    }
    writeln!(
        out,
        "| all | {bare_rate:.0} | {attached_rate:.0} | **{:.3}** | | | | |\n",
        attached_rate / bare_rate
    )?;
    writeln!(
        out,
        "Delivered by the attached node's consumers, over its {final_size} entries: {:.1} MB of syslog written by rsyslogd, {published} objects in the bucket, {alerts} signed webhooks received.",
        forwarded as f64 / 1e6
    )?;
    writeln!(
        out,
        "\nmachine: {}; load average {}",
        crate::server::machine(),
        crate::server::load_average()
    )?;
    Ok(out)
}
