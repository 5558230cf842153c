//! `GET /api/v1/audit-log/histogram`: how many events match a filter, in total and per time
//! bucket by severity, exactly. Buckets are round (1 s, 5 min, 6 h, 7 d …, on the UTC grid;
//! see `evident_store::Buckets`), at most `buckets` of them; the store counts them (the
//! embedded one from the counts it keeps per second, minute, hour and day, never by loading
//! events). The dashboard's chart and its "N events matched" line come from here, so a result
//! always says what the whole log holds, not what one page showed.

use super::AppState;
use super::error::ApiError;
use crate::audit::RequestInfo;
use crate::auth::Caller;
use axum::extract::{RawQuery, State};
use axum::{Extension, Json};
use evident_core::event::Severity;
use evident_store::{Buckets, Order};
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
    /// The range covered: the filter's `from` (else the start of the bucket of its first
    /// match) to its `to` (else the end of the bucket holding now).
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// The width of a bucket, a round one (1 s, 2 s, 5 s … 1 min … 1 h … 1 d, 7 d …); the
    /// first and last buckets are shorter when `from` or `to` is not on its grid.
    pub bucket_ms: i64,
    pub buckets: Vec<Bucket>,
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
            // The range: the filter's bounds, else from its first match to now (or its last
            // match, should that be later).
            let edge = |order| {
                let mut found = None;
                store
                    .scan(&filter, order, None, Some(1), &mut |entry| {
                        found = Some(entry.event.recorded_at);
                        ControlFlow::Break(())
                    })
                    .map_err(ApiError::from_store)
                    .map(|()| found)
            };
            let first = match filter.from {
                Some(from) => Some(from),
                None => edge(Order::Ascending)?,
            };
            let to = match filter.to {
                Some(to) => to,
                None => edge(Order::Descending)?.map_or(now, |last| last.max(now)) + 1,
            };
            let grid = first.and_then(|from| Buckets::covering(from, to, buckets));
            let Some(mut grid) = grid else {
                return Ok(Histogram {
                    total: 0,
                    from: filter.from,
                    to: Some(to),
                    bucket_ms: 0,
                    buckets: Vec::new(),
                });
            };
            // An open end goes out to the grid: the same buckets, whole ones at that end.
            let w = grid.width();
            let from = match filter.from {
                Some(from) => from,
                None => grid.from().div_euclid(w).saturating_mul(w),
            };
            let to = match filter.to {
                Some(to) => to,
                // The end of the cell holding the last instant (`to` is exclusive).
                None => (grid.to() - 1)
                    .div_euclid(w)
                    .saturating_add(1)
                    .saturating_mul(w),
            };
            if let Some(aligned) = Buckets::with_width(from, to, w) {
                grid = aligned;
            }
            let counts = store
                .histogram(&filter, &grid)
                .map_err(ApiError::from_store)?;
            let buckets: Vec<Bucket> = counts
                .iter()
                .enumerate()
                .map(|(i, per_rank)| {
                    let (start, end) = grid.bounds(i);
                    let by_severity = Severity::ALL
                        .iter()
                        .zip(per_rank)
                        .filter(|(_, n)| **n > 0)
                        .map(|(s, n)| (s.as_str().to_owned(), *n))
                        .collect();
                    Bucket {
                        start,
                        end,
                        total: per_rank.iter().sum(),
                        by_severity,
                    }
                })
                .collect();
            Ok(Histogram {
                total: buckets.iter().map(|b| b.total).sum(),
                from: Some(grid.from()),
                to: Some(grid.to()),
                bucket_ms: w,
                buckets,
            })
        })
        .await?;
    Ok(Json(histogram))
}
