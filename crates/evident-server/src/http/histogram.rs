//! `GET /api/v1/audit-log/histogram`: how many events match a filter, in total and per time
//! bucket by severity, counted by the store over its `recorded_at` and severity indexes
//! (never by loading events). The dashboard's chart and its "N events matched" line come
//! from here, so a result always says what the whole log holds, not what one page showed.

use super::AppState;
use super::error::ApiError;
use crate::audit::RequestInfo;
use crate::auth::Caller;
use axum::extract::{RawQuery, State};
use axum::{Extension, Json};
use evident_core::event::{Millis, Severity};
use evident_store::{Filter, Order};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// Default and largest number of buckets.
pub const DEFAULT_BUCKETS: u64 = 30;
pub const MAX_BUCKETS: u64 = 200;

/// One time bucket: `[start, end)` in epoch milliseconds of `recorded_at`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Bucket {
    pub start: i64,
    pub end: i64,
    pub total: u64,
    /// Events per severity name (only severities with events).
    pub by_severity: BTreeMap<String, u64>,
}

/// The histogram of a filter.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Histogram {
    /// Events matching the filter over the whole range (exact).
    pub total: u64,
    /// The range covered: the filter's `from` (else the first match) to its `to` (else now).
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub bucket_ms: i64,
    pub buckets: Vec<Bucket>,
}

/// Counts the events of `filter` in `[from, to)` per severity at or above `min`.
fn count_by_severity(
    store: &dyn evident_store::Store,
    filter: &Filter,
    from: Millis,
    to: Millis,
) -> Result<BTreeMap<String, u64>, ApiError> {
    let min = filter.severity.unwrap_or(Severity::Debug);
    let mut out = BTreeMap::new();
    // count(severity >= s) for s from the top down; each level is the difference.
    let mut above = 0u64;
    for severity in Severity::ALL.iter().rev().filter(|s| **s >= min) {
        // Every event is at least debug: no severity condition, so that an otherwise
        // unfiltered range is counted from its bounds without reading it.
        let level = (*severity > Severity::Debug).then_some(*severity);
        let at_least = store
            .count(&Filter {
                from: Some(from),
                to: Some(to),
                severity: level,
                ..filter.clone()
            })
            .map_err(ApiError::from_store)?;
        let here = at_least.saturating_sub(above);
        if here > 0 {
            out.insert(severity.as_str().to_owned(), here);
        }
        above = at_least;
    }
    Ok(out)
}

/// The histogram of the events matching the filter.
#[utoipa::path(
    get,
    path = "/api/v1/audit-log/histogram",
    tag = "log",
    params(
        super::openapi::HistogramParams,
    ),
    responses(
        (status = 200, description = "The exact number of matching events and their count per time bucket and severity", body = Histogram),
        (status = 400, description = "A bad or unknown query parameter (named in `field`)", body = super::ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read, or the key is scoped to another tenant", body = super::ErrorBody),
        (status = 500, description = "Storage failure", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn histogram(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    RawQuery(query): RawQuery,
) -> Result<Json<Histogram>, ApiError> {
    let params =
        super::log::filter_query(query.as_deref(), &["buckets"], crate::sequencer::now_ms())?;
    if let (Some(scope), Some(asked)) = (&caller.tenant, params.get("tenant")) {
        if asked != scope {
            return Err(state
                .refuse_cross_tenant(
                    &caller,
                    &info,
                    super::OutsideTenant::Named(asked),
                    "read events",
                )
                .await);
        }
    }
    let buckets = params.u64("buckets")?.unwrap_or(DEFAULT_BUCKETS);
    if !(1..=MAX_BUCKETS).contains(&buckets) {
        return Err(ApiError::bad_param(
            "buckets",
            format!("buckets {buckets}: expected 1 to {MAX_BUCKETS}"),
        ));
    }
    let filter = super::log::filter_from(&params, &caller)?;
    let now = crate::sequencer::now_ms();
    let histogram = state
        .with_store(move |store| {
            let total = store.count(&filter).map_err(ApiError::from_store)?;
            let mut first = None;
            if filter.from.is_none() && total > 0 {
                store
                    .scan(&filter, Order::Ascending, None, Some(1), &mut |entry| {
                        first = Some(entry.event.recorded_at);
                        ControlFlow::Break(())
                    })
                    .map_err(ApiError::from_store)?;
            }
            let from = filter.from.or(first);
            let to = filter.to.unwrap_or(now.saturating_add(1));
            let Some(from) = from.filter(|f| *f < to && total > 0) else {
                return Ok(Histogram {
                    total,
                    from: filter.from,
                    to: Some(to),
                    bucket_ms: 0,
                    buckets: Vec::new(),
                });
            };
            let span = to - from;
            let count = i64::try_from(buckets).unwrap_or(1).min(span.max(1));
            let bucket_ms = (span + count - 1) / count;
            let mut out = Vec::new();
            let mut start = from;
            while start < to {
                let end = start.saturating_add(bucket_ms).min(to);
                let by_severity = count_by_severity(store, &filter, start, end)?;
                out.push(Bucket {
                    start,
                    end,
                    total: by_severity.values().sum(),
                    by_severity,
                });
                start = end;
            }
            Ok(Histogram {
                total,
                from: Some(from),
                to: Some(to),
                bucket_ms,
                buckets: out,
            })
        })
        .await?;
    Ok(Json(histogram))
}
