//! Queries over `evident.events` on PostgreSQL: turns a [`Filter`] into one SQL statement over
//! one node's rows, in sequence order from a keyset cursor, with every user value a bound
//! parameter (the SQL text is built from constants only). The planner picks the index: each
//! filter has one that leads with `node_id` and ends with `seq` (see `schema.rs`), so an
//! equality filter reads its run in order with no sort.
//!
//! A time range (`recorded_at`) has no index: it is first turned into a sequence range
//! ([`time_as_seqs`]) by binary search on the primary key, since `recorded_at` never decreases
//! along `seq` (append refuses otherwise), so the planner reads a key range, whatever else
//! the filter says, instead of guessing how many rows a time condition keeps.

use super::codec::{self, EVENT_COLUMNS};
use super::{Error, corrupt};
use crate::{ActionFilter, Filter, IpFilter, Order, StoreError};
use evident_core::event::{Millis, Severity};
use postgres::Transaction;
use postgres::types::ToSql;
use std::borrow::Cow;
use std::net::IpAddr;

/// A statement and its parameters.
pub(super) struct Query {
    pub(super) sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Query {
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| &**p as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Conditions being built: `AND`-ed SQL and their parameters.
struct Conditions {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Conditions {
    /// The placeholder of a new parameter.
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    fn and(&mut self, condition: &str) {
        self.sql.push_str(" AND ");
        self.sql.push_str(condition);
    }
}

pub(super) fn clamp(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// `filter` with its time range (`from`, `to`) also stated as a sequence range (`from_seq`,
/// `to_seq`, intersected with any already given), read from `node`'s rows in `tx`. The time
/// conditions stay in the filter: redundant while `recorded_at` is monotonic, they keep
/// results in range should a row say otherwise. A filter without a time range is returned
/// as it is, with no read.
pub(super) fn time_as_seqs<'f>(
    tx: &mut Transaction<'_>,
    node: &str,
    filter: &'f Filter,
) -> Result<Cow<'f, Filter>, Error> {
    if filter.from.is_none() && filter.to.is_none() {
        return Ok(Cow::Borrowed(filter));
    }
    match seq_extent(tx, node)? {
        Some(extent) => time_as_seqs_within(tx, node, filter, extent),
        // No rows: the query finds none either way.
        None => Ok(Cow::Borrowed(filter)),
    }
}

/// The first and last sequence numbers stored for `node`, if any (two primary-key seeks).
pub(super) fn seq_extent(
    tx: &mut Transaction<'_>,
    node: &str,
) -> Result<Option<(i64, i64)>, Error> {
    let row = tx.query_one(
        "SELECT min(seq), max(seq) FROM evident.events WHERE node_id = $1",
        &[&node],
    )?;
    Ok(row
        .try_get::<_, Option<i64>>(0)?
        .zip(row.try_get::<_, Option<i64>>(1)?))
}

/// [`time_as_seqs`] over the stored entries `first..=last`, read by the caller.
pub(super) fn time_as_seqs_within<'f>(
    tx: &mut Transaction<'_>,
    node: &str,
    filter: &'f Filter,
    (first, last): (i64, i64),
) -> Result<Cow<'f, Filter>, Error> {
    if filter.from.is_none() && filter.to.is_none() {
        return Ok(Cow::Borrowed(filter));
    }
    let probe = tx.prepare(
        "SELECT seq, recorded_at FROM evident.events WHERE node_id = $1 AND seq >= $2 \
         ORDER BY seq ASC LIMIT 1",
    )?;
    let mut search = |time: Millis, from: i64| -> Result<u64, Error> {
        // The first seq in [from, last + 1) recorded at or after `time`.
        let (mut lo, mut hi) = (from, last.saturating_add(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match tx.query_opt(&probe, &[&node, &mid])? {
                // Rows past `last` appeared meanwhile: outside this read's range anyway.
                None => hi = mid,
                Some(row) => {
                    let (seq, recorded_at): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                    if recorded_at >= time {
                        hi = mid;
                    } else {
                        lo = seq.saturating_add(1);
                    }
                }
            }
        }
        u64::try_from(lo).map_err(|_| corrupt(None, format!("negative sequence number {lo}")))
    };
    let mut narrowed = filter.clone();
    let mut start = first;
    if let Some(from) = filter.from {
        let lo = search(from, first)?;
        narrowed.from_seq = Some(filter.from_seq.map_or(lo, |s| s.max(lo)));
        start = clamp(lo);
    }
    if let Some(to) = filter.to {
        let hi = search(to, start)?;
        narrowed.to_seq = Some(filter.to_seq.map_or(hi, |s| s.min(hi)));
    }
    Ok(Cow::Owned(narrowed))
}

/// The stored-form range `[low, high]` of a CIDR block (host bits of the address ignored).
fn ip_range(filter: IpFilter) -> Result<([u8; 16], [u8; 16]), StoreError> {
    let (bytes, prefix) = match filter.addr {
        IpAddr::V4(v4) if filter.prefix_len <= 32 => (
            v4.to_ipv6_mapped().octets(),
            96 + u32::from(filter.prefix_len),
        ),
        IpAddr::V6(v6) if filter.prefix_len <= 128 => (v6.octets(), u32::from(filter.prefix_len)),
        addr => {
            return Err(StoreError::Backend(format!(
                "invalid IP filter {addr}/{}: prefix length too long for the address family",
                filter.prefix_len
            )));
        }
    };
    let value = u128::from_be_bytes(bytes);
    let host_mask = u128::MAX.checked_shr(prefix).unwrap_or(0);
    Ok((
        (value & !host_mask).to_be_bytes(),
        (value | host_mask).to_be_bytes(),
    ))
}

/// The `WHERE` conditions of `filter` on `node`'s rows; `None` when nothing can match.
fn conditions(
    node: &str,
    filter: &Filter,
    order: Order,
    after_seq: Option<u64>,
) -> Result<Option<Conditions>, StoreError> {
    let mut c = Conditions {
        sql: String::new(),
        params: Vec::new(),
    };
    let p = c.param(node.to_owned());
    c.sql.push_str(&format!("node_id = {p}"));
    // A store holds one node's log: another node's filter matches nothing.
    if filter.node.as_deref().is_some_and(|n| n != node) {
        return Ok(None);
    }
    let mut lo = filter.from_seq.map_or(0, clamp);
    let mut hi = filter.to_seq.map_or(i64::MAX, clamp);
    match (after_seq, order) {
        (Some(after), Order::Ascending) => lo = lo.max(clamp(after).saturating_add(1)),
        (Some(after), Order::Descending) => hi = hi.min(clamp(after)),
        (None, _) => {}
    }
    if lo >= hi {
        return Ok(None);
    }
    if lo > 0 {
        let p = c.param(lo);
        c.and(&format!("seq >= {p}"));
    }
    if hi < i64::MAX {
        let p = c.param(hi);
        c.and(&format!("seq < {p}"));
    }
    if let Some(from) = filter.from {
        let p = c.param(from);
        c.and(&format!("recorded_at >= {p}"));
    }
    if let Some(to) = filter.to {
        let p = c.param(to);
        c.and(&format!("recorded_at < {p}"));
    }
    // Entries without occurred_at never match (NULL compares as unknown), as in the core's
    // matcher; the conditions imply `occurred_at IS NOT NULL`, so `events_by_occurred` serves.
    if let Some(from) = filter.occurred_from {
        let p = c.param(from);
        c.and(&format!("occurred_at >= {p}"));
    }
    if let Some(to) = filter.occurred_to {
        let p = c.param(to);
        c.and(&format!("occurred_at < {p}"));
    }
    if let Some(actor) = &filter.actor {
        let p = c.param(actor.clone());
        c.and(&format!("actor_id = {p}"));
    }
    if let Some(kind) = filter.actor_kind {
        let p = c.param(kind.as_str().to_owned());
        c.and(&format!("actor_kind = {p}"));
    }
    match &filter.action {
        Some(ActionFilter::Exact(action)) => {
            let p = c.param(action.clone());
            c.and(&format!("action = {p}"));
        }
        // The root of every action: no constraint.
        Some(ActionFilter::Prefix(prefix)) if prefix.is_empty() => {}
        Some(ActionFilter::Prefix(prefix)) => {
            // `p` itself, and `p.…`: every text from `p.` up to `p/` ('/' follows '.' in the
            // byte order of the C collation).
            let exact = c.param(prefix.clone());
            let low = c.param(format!("{prefix}."));
            let high = c.param(format!("{prefix}/"));
            c.and(&format!(
                "(action = {exact} OR (action >= {low} AND action < {high}))"
            ));
        }
        None => {}
    }
    if let Some(target) = &filter.target {
        // `kind:id`, or a bare id of any kind.
        let (kind, id) = match target.split_once(':') {
            Some((kind, id)) => (Some(kind), id),
            None => (None, target.as_str()),
        };
        let p = c.param(id.to_owned());
        c.and(&format!("target_id = {p}"));
        if let Some(kind) = kind {
            let p = c.param(kind.to_owned());
            c.and(&format!("target_kind = {p}"));
        }
    }
    if let Some(ip) = filter.ip {
        let (low, high) = ip_range(ip)?;
        if low == high {
            let p = c.param(low.to_vec());
            c.and(&format!("ip = {p}"));
        } else {
            let low = c.param(low.to_vec());
            let high = c.param(high.to_vec());
            c.and(&format!("ip BETWEEN {low} AND {high}"));
        }
    }
    if let Some(tenant) = &filter.tenant {
        let p = c.param(tenant.clone());
        c.and(&format!("tenant = {p}"));
    }
    // Debug is the least severity: "at least debug" is no constraint.
    if let Some(min) = filter.severity.filter(|s| *s != Severity::Debug) {
        let rank = codec::severity_rank(min);
        let p = c.param(rank);
        c.and(&format!("severity >= {p}"));
        // Lets the planner use the partial index of severe events.
        if rank >= 4 {
            c.and("severity >= 4");
        }
    }
    if let Some(outcome) = filter.outcome {
        let p = c.param(outcome.as_str().to_owned());
        c.and(&format!("outcome = {p}"));
    }
    Ok(Some(c))
}

/// The rows of `filter`, in `order`, after the cursor, at most `limit`.
pub(super) fn select(
    node: &str,
    filter: &Filter,
    order: Order,
    after_seq: Option<u64>,
    limit: Option<u64>,
) -> Result<Option<Query>, StoreError> {
    let Some(mut c) = conditions(node, filter, order, after_seq)? else {
        return Ok(None);
    };
    let direction = match order {
        Order::Ascending => "ASC",
        Order::Descending => "DESC",
    };
    let mut sql = format!(
        "SELECT {EVENT_COLUMNS} FROM evident.events WHERE {} ORDER BY seq {direction}",
        c.sql
    );
    if let Some(limit) = limit {
        let p = c.param(clamp(limit));
        sql.push_str(&format!(" LIMIT {p}"));
    }
    Ok(Some(Query {
        sql,
        params: c.params,
    }))
}

/// The number of rows of `filter`.
pub(super) fn count(node: &str, filter: &Filter) -> Result<Option<Query>, StoreError> {
    let Some(c) = conditions(node, filter, Order::Ascending, None)? else {
        return Ok(None);
    };
    Ok(Some(Query {
        sql: format!("SELECT count(*) FROM evident.events WHERE {}", c.sql),
        params: c.params,
    }))
}

/// The matching rows per cell of a `width`-millisecond grid from the epoch and per severity
/// rank: `(cell, severity, count)` rows, one pass over the matching entries.
pub(super) fn histogram(
    node: &str,
    filter: &Filter,
    width: i64,
) -> Result<Option<Query>, StoreError> {
    let Some(mut c) = conditions(node, filter, Order::Ascending, None)? else {
        return Ok(None);
    };
    let w = c.param(width);
    Ok(Some(Query {
        sql: format!(
            "SELECT floor(recorded_at::numeric / {w}::bigint)::bigint AS cell, severity::bigint, \
             count(*) FROM evident.events WHERE {} GROUP BY 1, 2",
            c.sql
        ),
        params: c.params,
    }))
}
