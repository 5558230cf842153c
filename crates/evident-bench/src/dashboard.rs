//! `--dashboard`: what the dashboard's explorer asks of the server at scale, measured on a
//! log of `--scale` events: the first page (`GET /api/v1/audit-log?limit=50`) and the chart
//! with its exact count (`GET /api/v1/audit-log/histogram?buckets=40`), per filter, one
//! request at a time on loopback, against the 200 ms goal of issue 15.

use crate::client::Api;
use crate::reads::{self, LoadWindow};
use crate::stats::{Latencies, ms, thousands};
use anyhow::Context as _;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The goal of issue 15: first page and chart each under this, at 10M events.
pub const GOAL: Duration = Duration::from_millis(200);

/// One filter's first-page and chart latencies.
pub struct Row {
    pub name: &'static str,
    pub page: Latencies,
    pub chart: Latencies,
    /// The largest `total` a chart answer reported.
    pub max_total: u64,
}

async fn timed(api: &Api, path: &str) -> anyhow::Result<(Duration, serde_json::Value)> {
    let sent = Instant::now();
    let response = api.get(path).await?;
    let body = response.bytes().await.context("reading an answer")?;
    let elapsed = sent.elapsed();
    let json = serde_json::from_slice(&body)
        .with_context(|| format!("GET {path}: the answer is not JSON"))?;
    Ok((elapsed, json))
}

/// Measures every filter of [`reads::cases`] `runs` times (after 2 unmeasured runs each).
pub async fn measure(api: &Api, window: LoadWindow, runs: usize) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for case in reads::cases(window) {
        let (mut page, mut chart, mut max_total) = (Vec::new(), Vec::new(), 0);
        for i in 0..runs + 2 {
            let query = (case.query)(i);
            let (p, _) = timed(api, &format!("/api/v1/audit-log?limit=50{query}")).await?;
            let (c, hist) = timed(
                api,
                &format!("/api/v1/audit-log/histogram?buckets=40{query}"),
            )
            .await?;
            if i >= 2 {
                page.push(p);
                chart.push(c);
                max_total = max_total.max(hist["total"].as_u64().unwrap_or(0));
            }
        }
        eprintln!("  {}: done", case.name);
        rows.push(Row {
            name: case.name,
            page: Latencies::of(page),
            chart: Latencies::of(chart),
            max_total,
        });
    }
    Ok(rows)
}

/// The Markdown table of `rows` for a log of `scale` events.
pub fn report(rows: &[Row], scale: u64, store: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Log of {} events in {store}; one request at a time on loopback (send to last byte).\n",
        thousands(scale)
    );
    let _ = writeln!(
        out,
        "| Filter | first page p50 | first page p99 | chart p50 | chart p99 | largest count | Goal | Verdict |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let met = r.page.p99 < GOAL && r.chart.p99 < GOAL;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | < 200 ms each | {} |",
            r.name,
            ms(r.page.p50),
            ms(r.page.p99),
            ms(r.chart.p50),
            ms(r.chart.p99),
            thousands(r.max_total),
            if met { "met" } else { "NOT met" }
        );
    }
    out
}
