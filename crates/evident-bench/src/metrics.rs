//! The server's own view of the write path: scrapes `GET /api/v1/metrics` (OpenMetrics text)
//! for the group-commit histograms, so that a phase can report how many storage transactions
//! it took, how many events each held and how long each lasted, fsync included.

use crate::client::Api;
use anyhow::Context as _;
use std::time::Duration;

/// One scrape of the commit histograms.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Cumulative `(upper bound in seconds, count)` of `evident_commit_seconds`.
    commit_buckets: Vec<(f64, f64)>,
    commit_count: f64,
    commit_sum: f64,
    group_events_count: f64,
    group_events_sum: f64,
}

/// What happened between two scrapes.
#[derive(Debug, Clone, Copy)]
pub struct CommitDelta {
    pub commits: u64,
    pub events_per_commit: f64,
    pub mean: Duration,
    /// Upper bound of the bucket holding the median commit.
    pub p50_at_most: Option<f64>,
    /// Upper bound of the bucket holding the 99th percentile commit (`inf` past the last).
    pub p99_at_most: Option<f64>,
}

fn sample<'a>(line: &'a str, name: &str) -> Option<(&'a str, f64)> {
    let rest = line.strip_prefix(name)?;
    let (labels, value) = match rest.strip_prefix('{') {
        Some(r) => {
            let (labels, after) = r.split_once('}')?;
            (labels, after.trim())
        }
        None if rest.starts_with(' ') => ("", rest.trim()),
        None => return None,
    };
    let value = value.split_whitespace().next()?.parse().ok()?;
    Some((labels, value))
}

/// Parses the OpenMetrics text the server serves.
pub fn parse(text: &str) -> Snapshot {
    let mut s = Snapshot::default();
    for line in text.lines() {
        if let Some((labels, v)) = sample(line, "evident_commit_seconds_bucket") {
            let le = labels
                .split(',')
                .find_map(|l| l.trim().strip_prefix("le="))
                .map(|q| q.trim_matches('"'));
            let bound = match le {
                Some("+Inf") => f64::INFINITY,
                Some(b) => b.parse().unwrap_or(f64::NAN),
                None => f64::NAN,
            };
            if !bound.is_nan() {
                s.commit_buckets.push((bound, v));
            }
        } else if let Some((_, v)) = sample(line, "evident_commit_seconds_count") {
            s.commit_count = v;
        } else if let Some((_, v)) = sample(line, "evident_commit_seconds_sum") {
            s.commit_sum = v;
        } else if let Some((_, v)) = sample(line, "evident_group_commit_events_count") {
            s.group_events_count = v;
        } else if let Some((_, v)) = sample(line, "evident_group_commit_events_sum") {
            s.group_events_sum = v;
        }
    }
    s.commit_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    s
}

pub async fn scrape(api: &Api) -> anyhow::Result<Snapshot> {
    let text = api
        .get("/api/v1/metrics")
        .await?
        .text()
        .await
        .context("reading the metrics")?;
    Ok(parse(&text))
}

impl Snapshot {
    /// What was committed since `before`.
    pub fn since(&self, before: &Snapshot) -> CommitDelta {
        let commits = (self.commit_count - before.commit_count).max(0.0);
        let groups = (self.group_events_count - before.group_events_count).max(0.0);
        let events = (self.group_events_sum - before.group_events_sum).max(0.0);
        let seconds = (self.commit_sum - before.commit_sum).max(0.0);
        let buckets: Vec<(f64, f64)> = self
            .commit_buckets
            .iter()
            .map(|(le, n)| {
                let old = before
                    .commit_buckets
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |(_, n)| *n);
                (*le, n - old)
            })
            .collect();
        let at = |q: f64| {
            let want = q * commits;
            buckets
                .iter()
                .find(|(_, n)| *n >= want && *n > 0.0)
                .map(|(le, _)| *le)
        };
        CommitDelta {
            commits: commits as u64,
            events_per_commit: if groups > 0.0 { events / groups } else { 0.0 },
            mean: if commits > 0.0 {
                Duration::from_secs_f64(seconds / commits)
            } else {
                Duration::ZERO
            },
            p50_at_most: at(0.5),
            p99_at_most: at(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# TYPE evident_commit_seconds histogram\n\
        evident_commit_seconds_sum 0.5\n\
        evident_commit_seconds_count 10\n\
        evident_commit_seconds_bucket{le=\"0.001\"} 5\n\
        evident_commit_seconds_bucket{le=\"0.01\"} 10\n\
        evident_commit_seconds_bucket{le=\"+Inf\"} 10\n\
        evident_group_commit_events_sum 100\n\
        evident_group_commit_events_count 10\n";
    const AFTER: &str = "evident_commit_seconds_sum 2.5\n\
        evident_commit_seconds_count 110\n\
        evident_commit_seconds_bucket{le=\"0.001\"} 55\n\
        evident_commit_seconds_bucket{le=\"0.01\"} 108\n\
        evident_commit_seconds_bucket{le=\"+Inf\"} 110\n\
        evident_group_commit_events_sum 1100\n\
        evident_group_commit_events_count 110\n";

    #[test]
    fn deltas_of_the_commit_histograms() {
        let d = parse(AFTER).since(&parse(BEFORE));
        assert_eq!(d.commits, 100);
        assert!((d.events_per_commit - 10.0).abs() < 1e-9);
        assert_eq!(d.mean, Duration::from_millis(20));
        assert_eq!(d.p50_at_most, Some(0.001));
        assert_eq!(d.p99_at_most, Some(f64::INFINITY));
    }

    #[test]
    fn other_metrics_are_ignored() {
        let s = parse("evident_commit_seconds_count_other 5\nevident_log_size 3\n");
        assert_eq!(s.commit_count, 0.0);
        assert!(s.commit_buckets.is_empty());
    }
}
