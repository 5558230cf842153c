//! `--publish`: what publishing to object storage costs and how fast it goes, against a real
//! S3-compatible server (SeaweedFS, started by `evident-tests3`). Two nodes side by side, one
//! without a publisher and one with a publisher running continuously (`every_events`),
//! take batched appends in alternating rounds: the ratio of their ingestion rates is the cost
//! of an attached publisher. Then a node holding a log it never published publishes it all at
//! once: entries per second into the bucket.

use crate::client::Api;
use crate::ingest;
use crate::server::Server;
use anyhow::{Context as _, bail};
use evident_tests3::S3Server;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Batched appends: this many events per request, from this many clients.
const BATCH: usize = 1000;
const CLIENTS: usize = 8;

fn publish_config(
    work: &Path,
    s3: &S3Server,
    prefix: &str,
    every_events: u64,
) -> anyhow::Result<String> {
    let path = work.join(format!("publish-{prefix}.toml"));
    std::fs::write(
        &path,
        format!(
            "[publish]\ntarget = \"{}\"\nendpoint = \"{}\"\nevery_events = {every_events}\n",
            s3.target(prefix),
            s3.endpoint()
        ),
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.display().to_string())
}

/// A server on the embedded store in `dir`, started with `args` and `envs`, and a client
/// with a new owner key, once the server answers.
pub(crate) async fn node(
    evident: &Path,
    dir: &Path,
    args: &[&str],
    envs: &[(String, String)],
) -> anyhow::Result<(Server, Api)> {
    std::fs::create_dir_all(dir)?;
    let server = Server::start_with(evident, dir, None, args, envs)?;
    let key = server.create_key(evident)?;
    let api = Api::new(&server.base_url, &key)?;
    api.wait_healthy(Duration::from_secs(30)).await?;
    Ok((server, api))
}

pub async fn run(
    evident: &Path,
    work: &Path,
    rounds: usize,
    cell: Duration,
    backlog: u64,
) -> anyhow::Result<String> {
    let s3 = tokio::task::spawn_blocking(S3Server::start)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let env = s3.aws_env();
    let config = publish_config(work, &s3, "attached", 20_000)?;
    let (plain, plain_api) = node(evident, &work.join("plain"), &[], &env).await?;
    let (attached, attached_api) = node(
        evident,
        &work.join("attached"),
        &["--config", &config],
        &env,
    )
    .await?;
    let mut out = String::new();
    let (mut plain_events, mut plain_time) = (0u64, Duration::ZERO);
    let (mut attached_events, mut attached_time) = (0u64, Duration::ZERO);
    for round in 0..rounds {
        let seed = round as u64;
        let a = ingest::throughput(&plain_api, BATCH, CLIENTS, cell, seed).await?;
        let b = ingest::throughput(&attached_api, BATCH, CLIENTS, cell, seed).await?;
        eprintln!(
            "round {round}: without publisher {:.0} events/s, with {:.0} events/s",
            a.events_per_sec(),
            b.events_per_sec()
        );
        plain_events += a.events;
        plain_time += a.elapsed;
        attached_events += b.events;
        attached_time += b.elapsed;
    }
    let plain_rate = plain_events as f64 / plain_time.as_secs_f64();
    let attached_rate = attached_events as f64 / attached_time.as_secs_f64();
    // What the attached publisher got through meanwhile.
    let (status, body) = attached_api.post_empty("/api/v1/publish?wait=600").await?;
    if status != 200 {
        bail!("the attached publisher did not catch up: {status} {body}");
    }
    let published = body["status"]["publish"]["published_size"]
        .as_u64()
        .unwrap_or(0);
    plain.stop(Duration::from_secs(30))?;
    attached.stop(Duration::from_secs(30))?;

    // A backlog published at once: load it without a publisher, then restart with one.
    let dir = work.join("backlog");
    let (server, api) = node(evident, &dir, &[], &env).await?;
    ingest::bulk_load(&api, backlog, BATCH, CLIENTS, 7).await?;
    server.stop(Duration::from_secs(30))?;
    let config = publish_config(work, &s3, "backlog", 0)?;
    let server = Server::start_with(evident, &dir, None, &["--config", &config], &env)?;
    let key = server.create_key(evident)?;
    let api = Api::new(&server.base_url, &key)?;
    let started = Instant::now();
    let (status, body) = api.post_empty("/api/v1/publish?wait=600").await?;
    let elapsed = started.elapsed();
    if status != 200 {
        bail!("the backlog was not published: {status} {body}");
    }
    let size = body["status"]["publish"]["published_size"]
        .as_u64()
        .unwrap_or(0);
    let objects = s3
        .list("backlog/")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .len();
    server.stop(Duration::from_secs(30))?;

    writeln!(out, "## Publishing to object storage (issue 12)\n")?;
    writeln!(out, "| measurement | value |\n|---|---|")?;
    writeln!(
        out,
        "| ingestion without a publisher ({BATCH}-event batches, {CLIENTS} clients, {rounds} rounds of {:.1} s) | {plain_rate:.0} events/s |",
        cell.as_secs_f64()
    )?;
    writeln!(
        out,
        "| ingestion with a publisher attached (every 20,000 events), same rounds interleaved | {attached_rate:.0} events/s |"
    )?;
    writeln!(
        out,
        "| ratio with / without | **{:.2}** |",
        attached_rate / plain_rate
    )?;
    writeln!(
        out,
        "| entries the attached publisher had archived at the end (checkpoint in the bucket) | {published} of {attached_events} |"
    )?;
    writeln!(
        out,
        "| backlog published at once: {size} entries, {objects} objects | {:.1} s, **{:.0} entries/s** |",
        elapsed.as_secs_f64(),
        size as f64 / elapsed.as_secs_f64()
    )?;
    Ok(out)
}
