//! The read-side measurements: first-page query latency per filter, whole-log CSV and NDJSON
//! bundle export (streamed and counted, never stored), online verification, and inclusion and
//! consistency proof latency.

use crate::client::Api;
use crate::stats::Latencies;
use crate::workload::{self, ACTION_PREFIXES, ACTIONS, TENANTS};
use anyhow::{Context as _, bail};
use std::time::{Duration, Instant};

/// What the time-range filters may ask for: when the log was written (first append to the
/// end of the bulk load).
#[derive(Debug, Clone, Copy)]
pub struct LoadWindow {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// One filter to measure: a name and the query string of run `i`.
pub struct QueryCase {
    pub name: &'static str,
    pub query: Box<dyn Fn(usize) -> String + Send + Sync>,
}

fn pct(s: &str) -> String {
    s.replace('/', "%2F").replace(':', "%3A")
}

/// The filters of the benchmark; each run asks for a different value, so no one answer is
/// served from a warm cache run after run.
pub fn cases(window: LoadWindow) -> Vec<QueryCase> {
    // A 1% slice of the load's recording window, moving from run to run.
    let span = (window.to_ms - window.from_ms).max(100);
    let slice = move |i: usize| {
        let width = (span / 100).max(1);
        let offset = (i as i64 * 7919) % (span - width).max(1);
        (window.from_ms + offset, window.from_ms + offset + width)
    };
    let cidrs = [
        "10.20.0.0/16",
        "10.21.0.0/16",
        "10.22.3.0/24",
        "2001:db8::/32",
        "2001:db8:5::/48",
    ];
    let severities = ["warning", "error", "critical", "notice"];
    let outcomes = ["failure", "denied", "success"];
    vec![
        QueryCase {
            name: "none",
            query: Box::new(|_| String::new()),
        },
        QueryCase {
            name: "actor",
            query: Box::new(|i| {
                format!(
                    "&actor={}",
                    workload::actor((i as u64 * 37) % workload::ACTORS).0
                )
            }),
        },
        QueryCase {
            // The worst case of an investigation: proving that nothing matches reads the
            // whole of whatever the plan drives with.
            name: "actor (no match)",
            query: Box::new(|i| format!("&actor=user-absent-{i}")),
        },
        QueryCase {
            name: "action (exact)",
            query: Box::new(|i| format!("&action={}", ACTIONS[(i * 7) % ACTIONS.len()].0)),
        },
        QueryCase {
            name: "action (prefix)",
            query: Box::new(|i| {
                format!("&action={}.*", ACTION_PREFIXES[i % ACTION_PREFIXES.len()])
            }),
        },
        QueryCase {
            name: "target",
            query: Box::new(|i| {
                let (kind, id) = workload::target((i as u64 * 101) % workload::TARGETS);
                format!("&target={}", pct(&format!("{kind}:{id}")))
            }),
        },
        QueryCase {
            name: "ip (address)",
            query: Box::new(|i| {
                format!(
                    "&ip={}",
                    pct(&workload::address((i as u64 * 53) % workload::ADDRESSES))
                )
            }),
        },
        QueryCase {
            name: "ip (CIDR)",
            query: Box::new(move |i| format!("&ip={}", pct(cidrs[i % cidrs.len()]))),
        },
        QueryCase {
            name: "tenant",
            query: Box::new(|i| format!("&tenant={}", TENANTS[i % TENANTS.len()].0)),
        },
        QueryCase {
            name: "severity (minimum)",
            query: Box::new(move |i| format!("&severity={}", severities[i % severities.len()])),
        },
        QueryCase {
            name: "outcome",
            query: Box::new(move |i| format!("&outcome={}", outcomes[i % outcomes.len()])),
        },
        QueryCase {
            name: "time range (1% of the log's span)",
            query: Box::new(move |i| {
                let (from, to) = slice(i);
                format!("&from={from}&to={to}")
            }),
        },
        QueryCase {
            name: "combination (tenant+action prefix+outcome+severity+time)",
            query: Box::new(move |i| {
                let (from, _) = slice(i);
                format!(
                    "&tenant={}&action=auth.*&outcome=failure&severity=warning&from={from}&to={}",
                    TENANTS[i % TENANTS.len()].0,
                    window.from_ms + span
                )
            }),
        },
        QueryCase {
            name: "combination (actor+CIDR)",
            query: Box::new(|i| {
                let a = (i as u64 * 29) % 900;
                let net = if a % 4 == 3 {
                    "2001:db8::/32"
                } else {
                    ["10.20.0.0/16", "10.21.0.0/16", "10.22.0.0/16"][(a % 4) as usize % 3]
                };
                format!("&actor={}&ip={}", workload::actor(a).0, pct(net))
            }),
        },
    ]
}

/// Latencies of one filter, and how many events its pages held.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub name: &'static str,
    pub latency: Latencies,
    pub min_events: usize,
    pub max_events: usize,
    /// The query string of the slowest measured run, for looking into it.
    pub slowest: String,
}

/// Runs each case `warmup` times unmeasured, then `runs` times measured, one request at a time
/// (send to last byte of the answer).
pub async fn first_pages(
    api: &Api,
    cases: &[QueryCase],
    runs: usize,
    warmup: usize,
) -> anyhow::Result<Vec<QueryResult>> {
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        let mut samples = Vec::with_capacity(runs);
        let mut min_events = usize::MAX;
        let mut max_events = 0;
        let mut slowest = (Duration::ZERO, String::new());
        for i in 0..warmup + runs {
            let path = format!(
                "/api/v1/audit-log?limit=100{}",
                (case.query)(i + 1000 * usize::from(i < warmup))
            );
            let sent = Instant::now();
            let response = api.get(&path).await?;
            let body = response.bytes().await.context("reading a page")?;
            let latency = sent.elapsed();
            if i < warmup {
                continue;
            }
            samples.push(latency);
            if latency > slowest.0 {
                slowest = (latency, path.clone());
            }
            let page: serde_json::Value = serde_json::from_slice(&body)
                .with_context(|| format!("GET {path}: the answer is not JSON"))?;
            let n = page
                .get("events")
                .and_then(|e| e.as_array())
                .map(Vec::len)
                .with_context(|| format!("GET {path}: no `events` array in the answer"))?;
            min_events = min_events.min(n);
            max_events = max_events.max(n);
        }
        results.push(QueryResult {
            name: case.name,
            latency: Latencies::of(samples),
            min_events: if min_events == usize::MAX {
                0
            } else {
                min_events
            },
            max_events,
            slowest: slowest.1,
        });
    }
    Ok(results)
}

/// A whole-log export, streamed.
#[derive(Debug, Clone, Copy)]
pub struct ExportResult {
    pub rows: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Time to the first byte of the body.
    pub first_byte: Duration,
}

/// Counts CSV records (RFC 4180: a line break inside quotes is part of a field).
#[derive(Default)]
struct CsvCounter {
    in_quotes: bool,
    records: u64,
}

impl CsvCounter {
    fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match b {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => self.records += 1,
                _ => {}
            }
        }
    }
}

/// `GET /api/v1/audit-log?format=csv` of the whole log; rows exclude the header.
pub async fn export_csv(api: &Api) -> anyhow::Result<ExportResult> {
    let sent = Instant::now();
    let mut response = api.get("/api/v1/audit-log?format=csv").await?;
    let mut counter = CsvCounter::default();
    let mut bytes = 0u64;
    let mut first_byte = None;
    while let Some(chunk) = response.chunk().await.context("reading the CSV export")? {
        first_byte.get_or_insert_with(|| sent.elapsed());
        bytes += chunk.len() as u64;
        counter.feed(&chunk);
    }
    let elapsed = sent.elapsed();
    if counter.in_quotes {
        bail!("the CSV export ended inside a quoted field");
    }
    Ok(ExportResult {
        rows: counter.records.saturating_sub(1),
        bytes,
        elapsed,
        first_byte: first_byte.unwrap_or(elapsed),
    })
}

/// `GET /api/v1/audit-log?format=ndjson` of the whole log: entry lines are all lines but the
/// header and the trailer, and must match the trailer's count.
pub async fn export_ndjson(api: &Api) -> anyhow::Result<ExportResult> {
    let sent = Instant::now();
    let mut response = api.get("/api/v1/audit-log?format=ndjson").await?;
    let mut lines = 0u64;
    let mut bytes = 0u64;
    let mut last_line: Vec<u8> = Vec::new();
    let mut first_byte = None;
    while let Some(chunk) = response
        .chunk()
        .await
        .context("reading the NDJSON export")?
    {
        first_byte.get_or_insert_with(|| sent.elapsed());
        bytes += chunk.len() as u64;
        // Only the tail is kept: the trailer is the last line.
        for part in chunk.split_inclusive(|b| *b == b'\n') {
            if last_line.ends_with(b"\n") {
                last_line.clear();
            }
            last_line.extend_from_slice(part);
            if part.ends_with(b"\n") {
                lines += 1;
            }
        }
    }
    let elapsed = sent.elapsed();
    let trailer: serde_json::Value =
        serde_json::from_slice(&last_line).context("the NDJSON export's last line is not JSON")?;
    let entries = trailer
        .pointer("/end/entries")
        .and_then(serde_json::Value::as_u64)
        .context("the NDJSON export has no trailer {\"end\":{\"entries\":N}}")?;
    if lines < 2 || lines - 2 != entries {
        bail!(
            "the NDJSON export has {lines} lines but its trailer counts {entries} entries (expected lines = entries + 2)"
        );
    }
    Ok(ExportResult {
        rows: entries,
        bytes,
        elapsed,
        first_byte: first_byte.unwrap_or(elapsed),
    })
}

/// `GET /api/v1/verify` of the whole log.
#[derive(Debug, Clone, Copy)]
pub struct VerifyResult {
    pub ok: bool,
    pub entries: u64,
    pub elapsed: Duration,
}

pub async fn verify(api: &Api) -> anyhow::Result<VerifyResult> {
    let sent = Instant::now();
    let response = api.get("/api/v1/verify").await?;
    let body = response
        .bytes()
        .await
        .context("reading the verify answer")?;
    let elapsed = sent.elapsed();
    let answer: serde_json::Value =
        serde_json::from_slice(&body).context("the verify answer is not JSON")?;
    let ok = answer
        .get("ok")
        .and_then(serde_json::Value::as_bool)
        .context("the verify answer has no `ok`")?;
    let entries = answer
        .get("entries")
        .and_then(serde_json::Value::as_u64)
        .context("the verify answer has no `entries`")?;
    Ok(VerifyResult {
        ok,
        entries,
        elapsed,
    })
}

/// Latencies of `GET /api/v1/proof/inclusion` and `/api/v1/proof/consistency` against the
/// tree of `size` entries, from one client, one request at a time.
#[derive(Debug, Clone, Copy)]
pub struct ProofResult {
    pub size: u64,
    pub runs: usize,
    pub inclusion: Latencies,
    pub consistency: Latencies,
}

/// `runs` inclusion proofs of entries spread over the log and `runs` consistency proofs from
/// sizes spread over it, each to `size`; every answer must carry a `proof` array.
pub async fn proofs(api: &Api, size: u64, runs: usize, seed: u64) -> anyhow::Result<ProofResult> {
    if size == 0 {
        bail!("no proofs on an empty log");
    }
    // xorshift64*: positions spread over the log, reproducible from the seed.
    let mut state = seed.max(1);
    let mut next = move |below: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    };
    let mut inclusion = Vec::with_capacity(runs);
    let mut consistency = Vec::with_capacity(runs);
    for _ in 0..runs {
        let seq = next(size);
        let path = format!("/api/v1/proof/inclusion?seq={seq}&size={size}");
        inclusion.push(timed_proof(api, &path).await?);
        let from = next(size) + 1;
        let path = format!("/api/v1/proof/consistency?from={from}&to={size}");
        consistency.push(timed_proof(api, &path).await?);
    }
    Ok(ProofResult {
        size,
        runs,
        inclusion: Latencies::of(inclusion),
        consistency: Latencies::of(consistency),
    })
}

async fn timed_proof(api: &Api, path: &str) -> anyhow::Result<Duration> {
    let sent = Instant::now();
    let body = api
        .get(path)
        .await?
        .bytes()
        .await
        .with_context(|| format!("reading the answer to {path}"))?;
    let elapsed = sent.elapsed();
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("the answer to {path} is not JSON"))?;
    if !answer.get("proof").is_some_and(serde_json::Value::is_array) {
        bail!("the answer to {path} has no `proof` array");
    }
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_counter_ignores_line_breaks_inside_quotes() {
        let mut c = CsvCounter::default();
        c.feed(b"a,b\n1,\"x\ny\"\n2,\"say \"\"hi\"\"\"\n");
        assert_eq!(c.records, 3);
        assert!(!c.in_quotes);
        let mut split = CsvCounter::default();
        split.feed(b"a,\"open");
        split.feed(b"\nstill\"\n");
        assert_eq!(split.records, 1);
    }

    #[test]
    fn every_case_builds_a_query_the_server_can_parse() {
        let window = LoadWindow {
            from_ms: 1_760_000_000_000,
            to_ms: 1_760_000_060_000,
        };
        for case in cases(window) {
            for i in 0..60 {
                let q = (case.query)(i);
                assert!(q.is_empty() || q.starts_with('&'), "{}: {q}", case.name);
                assert!(!q.contains(' ') && !q.contains('/'), "{}: {q}", case.name);
                if let Some(range) = q.split('&').find_map(|p| p.strip_prefix("from=")) {
                    let from: i64 = range.parse().unwrap();
                    assert!(from >= window.from_ms && from < window.to_ms);
                }
            }
        }
    }
}
