//! The write-side measurements: closed-loop ingestion throughput for a batch size and a number
//! of concurrent clients, open-loop single-event append latency at a fixed offered rate, and
//! the bulk load that fills the log for the read-side measurements.

use crate::client::Api;
use crate::stats::Latencies;
use crate::workload::{self, Rng};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a run of appends did.
#[derive(Debug, Clone, Default)]
pub struct AppendRun {
    /// Events acknowledged with a receipt.
    pub events: u64,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Latencies,
}

impl AppendRun {
    pub fn events_per_sec(&self) -> f64 {
        crate::stats::rate(self.events, self.elapsed)
    }
}

/// Pre-built request bodies, so that the measured loop spends client CPU on HTTP only.
fn body_pool(batch: usize, seed: u64, min_bodies: usize) -> Vec<Bytes> {
    const POOL_EVENTS: usize = 64_000;
    let bodies = (POOL_EVENTS / batch).clamp(min_bodies, 4096);
    let mut rng = Rng::new(seed);
    let now = now_ms();
    (0..bodies)
        .map(|_| Bytes::from(workload::body(&mut rng, batch, now)))
        .collect()
}

/// What one client (task or thread) did; [`merge`] sums them into an [`AppendRun`].
#[derive(Default)]
pub struct TaskTally {
    pub events: u64,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latencies: Vec<Duration>,
}

impl TaskTally {
    /// Counts a failed request, keeping the first error's text.
    pub fn error(&mut self, e: &anyhow::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{e:#}"));
    }

    /// A client that could not report: one error with this text.
    pub fn failed(why: &str) -> TaskTally {
        TaskTally {
            errors: 1,
            first_error: Some(why.to_owned()),
            ..TaskTally::default()
        }
    }
}

/// Sums the clients' tallies of a run that took `elapsed`.
pub fn merge(tallies: Vec<TaskTally>, elapsed: Duration) -> AppendRun {
    let mut run = AppendRun {
        elapsed,
        ..AppendRun::default()
    };
    let mut latencies = Vec::new();
    for t in tallies {
        run.events += t.events;
        run.requests += t.requests;
        run.errors += t.errors;
        if run.first_error.is_none() {
            run.first_error = t.first_error;
        }
        latencies.extend(t.latencies);
    }
    run.latency = Latencies::of(latencies);
    run
}

/// `concurrency` clients, each sending batches of `batch` events back to back for `duration`
/// (requests in flight at the deadline are waited for and counted).
pub async fn throughput(
    api: &Api,
    batch: usize,
    concurrency: usize,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<AppendRun> {
    let pool = Arc::new(body_pool(batch, seed, concurrency * 2));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for client in 0..concurrency {
        let api = api.clone();
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = TaskTally::default();
            let mut next = client;
            while Instant::now() < deadline {
                let body = pool[next % pool.len()].clone();
                next += concurrency;
                let sent = Instant::now();
                let result = api.append(body, batch).await;
                tally.latencies.push(sent.elapsed());
                tally.requests += 1;
                match result {
                    Ok(()) => tally.events += batch as u64,
                    Err(e) => tally.error(&e),
                }
            }
            tally
        }));
    }
    let mut tallies = Vec::with_capacity(concurrency);
    for t in tasks {
        tallies.push(t.await?);
    }
    Ok(merge(tallies, started.elapsed()))
}

/// Requests in flight (and so pooled keep-alive connections) of the open-loop client.
pub const OPEN_LOOP_CONNECTIONS: usize = 256;

/// Opens `n` keep-alive connections to the server (concurrent health checks), which the
/// client's pool then reuses.
async fn warm_connections(api: &Api, n: usize) -> anyhow::Result<()> {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let response = api.get("/api/v1/healthz").await?;
            response.bytes().await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Open-loop single-event appends: request `i` is due at `start + i / rate`, sent then (or as
/// soon as the client can), and its latency is measured from when it was due, so that a slow
/// answer delays no later request's clock (no coordinated omission).
pub async fn open_loop(
    api: &Api,
    rate: u64,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<AppendRun> {
    let pool = Arc::new(body_pool(1, seed, 4096));
    let total = rate * duration.as_secs_f64() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    // A bound on requests in flight, so on connections: a stalled server cannot make the
    // client open thousands (each new one a TCP handshake, beyond the server's
    // `max_connections` of 512 a wait in its backlog); waiting for a slot still counts
    // against the request's latency. The connections are opened before the clock starts
    // (keep-alive pool), as a long-running client would have them.
    let slots = Arc::new(tokio::sync::Semaphore::new(OPEN_LOOP_CONNECTIONS));
    warm_connections(api, OPEN_LOOP_CONNECTIONS).await?;
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut handles = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let permit = slots.clone().acquire_owned().await?;
        let api = api.clone();
        let body = pool[i as usize % pool.len()].clone();
        handles.push(tokio::spawn(async move {
            let result = api.append(body, 1).await;
            let latency = due.elapsed();
            drop(permit);
            (result, latency)
        }));
    }
    let mut tally = TaskTally::default();
    for h in handles {
        let (result, latency) = h.await?;
        tally.requests += 1;
        tally.latencies.push(latency);
        match result {
            Ok(()) => tally.events += 1,
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Ok(merge(vec![tally], start.elapsed()))
}

/// Appends `events` freshly generated events in batches of `batch` from `clients` concurrent
/// clients, reporting progress on stderr every few seconds.
pub async fn bulk_load(
    api: &Api,
    events: u64,
    batch: usize,
    clients: usize,
    seed: u64,
) -> anyhow::Result<AppendRun> {
    let claimed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let api = api.clone();
        let claimed = claimed.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed.wrapping_add(client as u64 * 7919));
            let mut tally = TaskTally::default();
            loop {
                let first = claimed.fetch_add(batch as u64, Ordering::Relaxed);
                if first >= events {
                    break;
                }
                let n = (events - first).min(batch as u64) as usize;
                let body = Bytes::from(workload::body(&mut rng, n, now_ms()));
                let sent = Instant::now();
                let result = api.append(body, n).await;
                tally.latencies.push(sent.elapsed());
                tally.requests += 1;
                match result {
                    Ok(()) => {
                        tally.events += n as u64;
                        done.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| format!("{e:#}"));
                        // A load that keeps failing would spin; stop this client.
                        if tally.errors > 100 {
                            break;
                        }
                    }
                }
            }
            tally
        }));
    }
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut last_at = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = done.load(Ordering::Relaxed);
                let rate = crate::stats::rate(now - last, last_at.elapsed());
                eprintln!(
                    "  loaded {} / {} events ({} events/s)",
                    crate::stats::thousands(now),
                    crate::stats::thousands(events),
                    crate::stats::per_sec(rate)
                );
                last = now;
                last_at = Instant::now();
            }
        })
    };
    let mut tallies = Vec::with_capacity(clients);
    for t in tasks {
        tallies.push(t.await?);
    }
    progress.abort();
    Ok(merge(tallies, started.elapsed()))
}
