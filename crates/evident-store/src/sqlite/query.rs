//! Queries over the `events` table: turns a [`Filter`] into a plan that reads rows in sequence
//! order, from a keyset cursor, without reading or sorting more than a bounded amount beyond
//! the rows it returns, whatever the size of the log; and runs it.
//!
//! Every index ends with `seq` (the rowid), so in a plain index `(column)` one value is a run
//! already in sequence order. The indexes of high-cardinality columns (actor, target, IP) are
//! bucketed, `(seq >> BUCKET_BITS, column)`, so that ingestion only ever touches the small
//! part of them that covers the newest entries (see `schema.rs`); there, one value's run is in
//! sequence order within each bucket, and buckets follow each other in order.
//!
//! A plan picks one filter to *drive* the read:
//! - an equality on a plain index (`action = x`): one run, read in order;
//! - a few values of a plain index (a minimum severity, the actions under a prefix, found by
//!   skipping through the index): one run per value, merged on `seq` by seeking each run's
//!   next row;
//! - a condition on a bucketed index (`actor = alice`, `ip` in a CIDR block, an occurred_at
//!   span): read bucket by
//!   bucket in order, each bucket's matches in order (sorted within the bucket for a range);
//! - nothing (no indexed filter): the table itself, in order.
//!
//! Every other filter is checked on each row (the *residual*). A time range becomes a sequence
//! range by binary search, since `recorded_at` never decreases along `seq`. Plans name their
//! index (`INDEXED BY`) rather than trusting the planner's guesses, and all user input is a
//! bound parameter: the SQL text is built from constants only.

use super::Error;
use super::codec::{self, EVENT_COLUMNS, IpBytes};
use crate::{ActionFilter, Filter, IpFilter, Order, StoreError};
use evident_core::SealedEntry;
use evident_core::event::{ActorKind, Millis, Outcome, Severity};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Statement};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::ops::ControlFlow;

/// Entries per bucket of a bucketed index: `1 << BUCKET_BITS`. The expression `seq >> 13` is
/// written out in `schema.rs` and in [`BUCKET`]; SQLite matches it by its text.
pub(super) const BUCKET_BITS: u32 = 13;
const BUCKET: &str = "seq >> 13";

/// Most runs a merge reads at once; a range with more distinct values is read otherwise.
const MAX_MERGE_RUNS: usize = 1024;

/// An index of `events`, the column it orders, and for a partial index the condition (as
/// written in `schema.rs`) that a query must state for SQLite to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Index {
    name: &'static str,
    column: &'static str,
    condition: Option<&'static str>,
    /// `(seq >> BUCKET_BITS, column)` rather than `(column)`.
    bucketed: bool,
}

impl Index {
    const fn plain(name: &'static str, column: &'static str) -> Index {
        Index {
            name,
            column,
            condition: None,
            bucketed: false,
        }
    }

    const fn partial(name: &'static str, column: &'static str, condition: &'static str) -> Index {
        Index {
            name,
            column,
            condition: Some(condition),
            bucketed: false,
        }
    }

    const fn bucketed(name: &'static str, column: &'static str) -> Index {
        Index {
            name,
            column,
            condition: None,
            bucketed: true,
        }
    }

    /// `events INDEXED BY … WHERE [<condition> AND]`, to be followed by more conditions.
    fn read(&self) -> String {
        format!(
            "events INDEXED BY {} WHERE {}",
            self.name,
            self.condition
                .map_or(String::new(), |c| format!("{c} AND "))
        )
    }

    /// The start of a read of one value's run of a plain index (the value is the first
    /// parameter).
    fn run_of_one_value(&self) -> String {
        format!("{}{} = ? AND ", self.read(), self.column)
    }
}

const BY_ACTOR: Index = Index::bucketed("events_by_actor", "actor_id");
const BY_TARGET: Index = Index::bucketed("events_by_target", "target_id");
const BY_IP: Index = Index::bucketed("events_by_ip", "ip");
/// Partial: only entries that state an occurred_at, the only ones its filters can match.
const BY_OCCURRED: Index = Index {
    name: "events_by_occurred",
    column: "occurred_at",
    condition: Some("occurred_at IS NOT NULL"),
    bucketed: true,
};
const BY_ACTION: Index = Index::plain("events_by_action", "action");
const BY_TENANT: Index = Index::plain("events_by_tenant", "tenant");
/// Rank of the least severity `events_severe` holds (error).
const SEVERE_MIN_RANK: i64 = 4;
const SEVERE: Index = Index::partial("events_severe", "severity", "severity >= 4");
const NOT_SUCCESS: Index = Index::partial("events_not_success", "outcome", "outcome <> 'success'");
const NOT_USER: Index = Index::partial("events_not_user", "actor_kind", "actor_kind <> 'user'");

/// How a filter could drive a read.
#[derive(Debug, Clone, PartialEq)]
enum Drive {
    /// One value of a plain index.
    Eq(Value),
    /// These values of a plain index.
    Set(Vec<Value>),
    /// `extra` and every distinct value in `[low, high)` of a plain index, found in the index.
    Range {
        extra: Option<Value>,
        low: Value,
        high: Value,
    },
    /// The term's own condition, bucket by bucket of a bucketed index; `sorted` when it is a
    /// range of the column, whose matches in a bucket need sorting by `seq`.
    Buckets { sorted: bool },
}

/// One narrowing condition of a filter.
#[derive(Debug, Clone, PartialEq)]
struct Term {
    /// The condition as SQL over one row, with its parameters in order.
    sql: &'static str,
    params: Vec<Value>,
    /// The index and values that read exactly the matching rows, if any.
    drive: Option<(Index, Drive)>,
}

impl Term {
    /// `column = value`, read through a plain `index` when it drives.
    fn eq(index: Index, sql: &'static str, value: Value) -> Term {
        Term {
            sql,
            params: vec![value.clone()],
            drive: Some((index, Drive::Eq(value))),
        }
    }

    /// A condition on a bucketed `index`'s column.
    fn bucketed(index: Index, sql: &'static str, params: Vec<Value>, sorted: bool) -> Term {
        Term {
            sql,
            params,
            drive: Some((index, Drive::Buckets { sorted })),
        }
    }

    /// A condition that a merge of runs of a plain `index` can drive.
    fn merged(sql: &'static str, params: Vec<Value>, index: Index, drive: Drive) -> Term {
        Term {
            sql,
            params,
            drive: Some((index, drive)),
        }
    }

    /// A condition checked on each row only.
    fn check(sql: &'static str, params: Vec<Value>) -> Term {
        Term {
            sql,
            params,
            drive: None,
        }
    }
}

/// What reads the rows of a plan.
#[derive(Debug, Clone, PartialEq)]
enum Driver {
    /// The table, in order.
    Table,
    /// Runs of a plain index, one per value (merged when more than one).
    Runs(Index, Vec<Value>),
    /// A condition over a bucketed index, bucket by bucket.
    Buckets {
        index: Index,
        sql: &'static str,
        params: Vec<Value>,
        sorted: bool,
    },
}

/// A resolved plan: what drives the read, what is checked per row, and the sequence range.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Plan {
    driver: Driver,
    residual_sql: String,
    residual_params: Vec<Value>,
    /// Sequence numbers in `[lo, hi)`.
    lo: i64,
    hi: i64,
    descending: bool,
}

fn clamp(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The filter's conditions, most selective drivers first: a plan drives with the first one
/// that can drive. Order reflects typical selectivity in an audit log: a target, an actor or
/// an address has few events, an action more, failures and severe events are rare, an
/// address block or an action prefix may cover much of the log, a tenant most of it.
fn terms(filter: &Filter) -> Result<Vec<Term>, StoreError> {
    let mut out = Vec::new();
    let text = |s: &str| Value::Text(s.to_owned());
    if let Some(target) = &filter.target {
        // `kind:id`, or a bare id of any kind. The id drives (kinds are few per id).
        let (kind, id) = match target.split_once(':') {
            Some((kind, id)) => (Some(kind), id),
            None => (None, target.as_str()),
        };
        out.push(Term::bucketed(
            BY_TARGET,
            "target_id = ?",
            vec![text(id)],
            false,
        ));
        if let Some(kind) = kind {
            out.push(Term::check("target_kind = ?", vec![text(kind)]));
        }
    }
    if let Some(actor) = &filter.actor {
        out.push(Term::bucketed(
            BY_ACTOR,
            "actor_id = ?",
            vec![text(actor)],
            false,
        ));
    }
    let ip = filter.ip.map(ip_range).transpose()?;
    if let Some((low, high)) = ip {
        if low == high {
            out.push(Term::bucketed(
                BY_IP,
                "ip = ?",
                vec![Value::Blob(low.to_vec())],
                false,
            ));
        }
    }
    if let Some(ActionFilter::Exact(action)) = &filter.action {
        out.push(Term::eq(BY_ACTION, "action = ?", text(action)));
    }
    // Only the rare values of these are indexed (a common one is dense in the table): a
    // selective read, before ranges that may cover much of the log.
    if let Some(outcome) = filter.outcome {
        let (sql, value) = ("outcome = ?", text(outcome.as_str()));
        out.push(match outcome {
            Outcome::Success => Term::check(sql, vec![value]),
            _ => Term::eq(NOT_SUCCESS, sql, value),
        });
    }
    if let Some(kind) = filter.actor_kind {
        let (sql, value) = ("actor_kind = ?", text(kind.as_str()));
        out.push(match kind {
            ActorKind::User => Term::check(sql, vec![value]),
            _ => Term::eq(NOT_USER, sql, value),
        });
    }
    // Debug is the least severity: "at least debug" is no constraint.
    if let Some(min) = filter.severity.filter(|s| *s != Severity::Debug) {
        let rank = codec::severity_rank(min);
        let (sql, params) = ("severity >= ?", vec![Value::Integer(rank)]);
        out.push(if rank >= SEVERE_MIN_RANK {
            let ranks = (rank..Severity::ALL.len() as i64).map(Value::Integer);
            Term::merged(sql, params, SEVERE, Drive::Set(ranks.collect()))
        } else {
            Term::check(sql, params)
        });
    }
    if let Some((low, high)) = ip {
        if low != high {
            out.push(Term::bucketed(
                BY_IP,
                "ip BETWEEN ? AND ?",
                vec![Value::Blob(low.to_vec()), Value::Blob(high.to_vec())],
                true,
            ));
        }
    }
    // A span of when events happened, per their clients: often narrow, but it may cover much
    // of the log, like an address block. Entries without occurred_at never match (NULL
    // compares as unknown), as in the core's matcher.
    let occurred = match (filter.occurred_from, filter.occurred_to) {
        (Some(from), Some(to)) => Some((
            "occurred_at >= ? AND occurred_at < ?",
            vec![Value::Integer(from), Value::Integer(to)],
        )),
        (Some(from), None) => Some(("occurred_at >= ?", vec![Value::Integer(from)])),
        (None, Some(to)) => Some(("occurred_at < ?", vec![Value::Integer(to)])),
        (None, None) => None,
    };
    if let Some((sql, params)) = occurred {
        out.push(Term::bucketed(BY_OCCURRED, sql, params, true));
    }
    match &filter.action {
        // The root of every action: no constraint.
        Some(ActionFilter::Prefix(prefix)) if prefix.is_empty() => {}
        Some(ActionFilter::Prefix(prefix)) => {
            // `p` itself, and `p.…`: every text from `p.` up to `p/` ('/' follows '.').
            let (exact, low, high) = (
                text(prefix),
                Value::Text(format!("{prefix}.")),
                Value::Text(format!("{prefix}/")),
            );
            out.push(Term::merged(
                "(action = ? OR (action >= ? AND action < ?))",
                vec![exact.clone(), low.clone(), high.clone()],
                BY_ACTION,
                Drive::Range {
                    extra: Some(exact),
                    low,
                    high,
                },
            ));
        }
        Some(ActionFilter::Exact(_)) | None => {}
    }
    if let Some(tenant) = &filter.tenant {
        out.push(Term::eq(BY_TENANT, "tenant = ?", text(tenant)));
    }
    Ok(out)
}

/// The stored-form range `[low, high]` of a CIDR block (host bits of the address ignored).
pub(super) fn ip_range(filter: IpFilter) -> Result<(IpBytes, IpBytes), StoreError> {
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

/// Binds `params` from parameter number `first` on.
fn bind_all<'a>(
    stmt: &mut Statement<'_>,
    first: usize,
    params: impl IntoIterator<Item = &'a Value>,
) -> Result<usize, Error> {
    let mut next = first;
    for param in params {
        stmt.raw_bind_parameter(next, param)?;
        next += 1;
    }
    Ok(next)
}

impl Plan {
    /// Resolves `filter` against the stored log. `None`: nothing can match.
    pub(super) fn new(
        conn: &Connection,
        filter: &Filter,
        order: Order,
        after_seq: Option<u64>,
    ) -> Result<Option<Plan>, Error> {
        let descending = order == Order::Descending;
        let mut lo = filter.from_seq.map_or(0, clamp);
        let mut hi = filter.to_seq.map_or(i64::MAX, clamp);
        match (after_seq, descending) {
            (Some(after), false) => lo = lo.max(clamp(after).saturating_add(1)),
            (Some(after), true) => hi = hi.min(clamp(after)),
            (None, _) => {}
        }
        let Some((first, last)) = seq_extent(conn)? else {
            return Ok(None);
        };
        lo = lo.max(first);
        hi = hi.min(last.saturating_add(1));
        if let Some(from) = filter.from {
            lo = lo.max(first_seq_at_or_after(conn, from, first, last)?);
        }
        if let Some(to) = filter.to {
            hi = hi.min(first_seq_at_or_after(conn, to, first, last)?);
        }
        if lo >= hi {
            return Ok(None);
        }

        let mut driver = Driver::Table;
        let mut residual_sql = String::new();
        let mut residual_params = Vec::new();
        if let Some(node) = &filter.node {
            // A log holds one node's entries (append refuses others): its first entry tells
            // whether this matches all or nothing. The check stays, should a row say otherwise.
            if stored_node(conn, first)?.as_deref() != Some(node.as_str()) {
                return Ok(None);
            }
            residual_sql.push_str(" AND node_id = ?");
            residual_params.push(Value::Text(node.clone()));
        }
        for term in terms(filter)? {
            if let (Driver::Table, Some((index, drive))) = (&driver, &term.drive) {
                if let Drive::Buckets { sorted } = drive {
                    driver = Driver::Buckets {
                        index: *index,
                        sql: term.sql,
                        params: term.params,
                        sorted: *sorted,
                    };
                    continue;
                }
                if let Some(values) = resolve(conn, *index, drive)? {
                    if values.is_empty() {
                        return Ok(None);
                    }
                    driver = Driver::Runs(*index, values);
                    continue;
                }
            }
            if let Some((index, Drive::Eq(value))) = &term.drive {
                // A residual equality that matches no row at all would make the read walk its
                // whole driver for nothing; one seek rules that out.
                if !exists(conn, *index, value)? {
                    return Ok(None);
                }
            }
            residual_sql.push_str(" AND ");
            residual_sql.push_str(term.sql);
            residual_params.extend(term.params);
        }
        if let Some(from) = filter.from {
            // Redundant while recorded_at is monotonic; keeps results in range if it is not.
            residual_sql.push_str(" AND recorded_at >= ?");
            residual_params.push(Value::Integer(from));
        }
        if let Some(to) = filter.to {
            residual_sql.push_str(" AND recorded_at < ?");
            residual_params.push(Value::Integer(to));
        }
        Ok(Some(Plan {
            driver,
            residual_sql,
            residual_params,
            lo,
            hi,
            descending,
        }))
    }

    fn direction(&self) -> &'static str {
        if self.descending { "DESC" } else { "ASC" }
    }

    // No `LIMIT ?` in these: SQLite re-prepares a statement whenever a LIMIT parameter is
    // rebound (its value may change the plan), and rows come in order without one anyway, so
    // the read simply stops stepping.

    /// Rows of the table or of one run. Parameters: [value], lo, hi, residual.
    fn rows_sql(&self, index: Option<Index>) -> String {
        let source = match index {
            Some(index) => index.run_of_one_value(),
            None => "events NOT INDEXED WHERE ".to_owned(),
        };
        format!(
            "SELECT {EVENT_COLUMNS} FROM {source}seq >= ? AND seq < ?{} ORDER BY seq {}",
            self.residual_sql,
            self.direction()
        )
    }

    /// The next matching `seq` of one run. Parameters: value, lo, hi, residual.
    fn seek_sql(&self, index: Index) -> String {
        format!(
            "SELECT seq FROM {}seq >= ? AND seq < ?{} ORDER BY seq {} LIMIT 1",
            index.run_of_one_value(),
            self.residual_sql,
            self.direction()
        )
    }

    /// Rows of one bucket (for a range, their `seq` only: a sort of whole rows costs many
    /// times a sort of numbers and the fetch of the few rows a page needs). Parameters:
    /// bucket, condition, lo, hi, residual.
    fn bucket_sql(&self, index: Index, condition: &str, sorted: bool) -> String {
        let columns = if sorted { "seq" } else { EVENT_COLUMNS };
        format!(
            "SELECT {columns} FROM {}{BUCKET} = ? AND {condition} AND seq >= ? AND seq < ?{} \
             ORDER BY seq {}",
            index.read(),
            self.residual_sql,
            self.direction()
        )
    }

    /// The buckets covering `[lo, hi)`, in the order of the read.
    fn buckets(&self) -> Box<dyn Iterator<Item = i64>> {
        let (first, last) = (self.lo >> BUCKET_BITS, (self.hi - 1) >> BUCKET_BITS);
        if self.descending {
            Box::new((first..=last).rev())
        } else {
            Box::new(first..=last)
        }
    }

    /// Reads the matching entries in order, at most `limit`, until `visit` breaks.
    pub(super) fn run(
        &self,
        conn: &Connection,
        limit: Option<u64>,
        visit: &mut dyn FnMut(SealedEntry) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        let mut remaining = limit.unwrap_or(u64::MAX);
        match &self.driver {
            Driver::Runs(index, values) if values.len() > 1 => {
                self.run_merge(conn, *index, values, remaining, visit)
            }
            Driver::Table | Driver::Runs(..) => {
                let (index, value) = match &self.driver {
                    Driver::Runs(index, values) => (Some(*index), values.first()),
                    _ => (None, None),
                };
                let mut stmt = conn.prepare_cached(&self.rows_sql(index))?;
                let bounds = [Value::Integer(self.lo), Value::Integer(self.hi)];
                let next = bind_all(&mut stmt, 1, value.into_iter().chain(&bounds))?;
                bind_all(&mut stmt, next, &self.residual_params)?;
                let mut rows = stmt.raw_query();
                while remaining > 0 {
                    let Some(row) = rows.next()? else { break };
                    remaining -= 1;
                    if visit(codec::decode(row)?).is_break() {
                        break;
                    }
                }
                Ok(())
            }
            Driver::Buckets {
                index,
                sql,
                params,
                sorted,
            } => {
                let mut stmt = conn.prepare_cached(&self.bucket_sql(*index, sql, *sorted))?;
                let mut fetch = match sorted {
                    true => Some(conn.prepare_cached(&fetch_sql())?),
                    false => None,
                };
                // Bindings outlive each query's reset: all but the bucket once.
                let bounds = [Value::Integer(self.lo), Value::Integer(self.hi)];
                let next = bind_all(&mut stmt, 2, params.iter().chain(&bounds))?;
                bind_all(&mut stmt, next, &self.residual_params)?;
                for bucket in self.buckets() {
                    stmt.raw_bind_parameter(1, bucket)?;
                    let mut rows = stmt.raw_query();
                    while remaining > 0 {
                        let Some(row) = rows.next()? else { break };
                        remaining -= 1;
                        let entry = match &mut fetch {
                            Some(fetch) => fetch_entry(fetch, row.get(0)?)?,
                            None => codec::decode(row)?,
                        };
                        if visit(entry).is_break() {
                            return Ok(());
                        }
                    }
                    if remaining == 0 {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Merges one run per value: each run's next matching `seq` sits in a heap; the smallest
    /// (largest, descending) is read and its run advanced by one more seek.
    fn run_merge(
        &self,
        conn: &Connection,
        index: Index,
        values: &[Value],
        mut remaining: u64,
        visit: &mut dyn FnMut(SealedEntry) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        let mut seek = conn.prepare_cached(&self.seek_sql(index))?;
        // Bindings outlive each query's reset: the residual is bound once.
        bind_all(&mut seek, 4, &self.residual_params)?;
        let mut next_in_run = |value: &Value, lo: i64, hi: i64| -> Result<Option<i64>, Error> {
            seek.raw_bind_parameter(1, value)?;
            seek.raw_bind_parameter(2, lo)?;
            seek.raw_bind_parameter(3, hi)?;
            let mut rows = seek.raw_query();
            match rows.next()? {
                Some(row) => Ok(Some(row.get(0)?)),
                None => Ok(None),
            }
        };
        // Keyed so that the heap's maximum is the next row in the order asked.
        let key = |seq: i64| if self.descending { seq } else { -seq };
        let mut heap = BinaryHeap::with_capacity(values.len());
        for (run, value) in values.iter().enumerate() {
            if let Some(seq) = next_in_run(value, self.lo, self.hi)? {
                heap.push((key(seq), Reverse(run)));
            }
        }
        let mut fetch = conn.prepare_cached(&fetch_sql())?;
        while remaining > 0 {
            let Some((k, Reverse(run))) = heap.pop() else {
                break;
            };
            let seq = if self.descending { k } else { -k };
            let entry = fetch_entry(&mut fetch, seq)?;
            remaining -= 1;
            if visit(entry).is_break() {
                break;
            }
            let (lo, hi) = if self.descending {
                (self.lo, seq)
            } else {
                (seq + 1, self.hi)
            };
            if let Some(next) = next_in_run(&values[run], lo, hi)? {
                heap.push((key(next), Reverse(run)));
            }
        }
        Ok(())
    }

    /// Number of matching entries: the table's, or each run's or bucket's, added up.
    pub(super) fn count(&self, conn: &Connection) -> Result<u64, Error> {
        // Entries are dense from the first stored to the last (append refuses gaps, and
        // retention removes a prefix): a plain range is counted without reading it.
        if self.driver == Driver::Table && self.residual_params.is_empty() {
            return Ok(u64::try_from(self.hi - self.lo).unwrap_or(0));
        }
        let mut total = 0u64;
        self.each_row(conn, "count(*)", &mut |row| {
            let n: i64 = row.get(0)?;
            total = total.saturating_add(u64::try_from(n).unwrap_or(0));
            Ok(())
        })?;
        Ok(total)
    }

    /// Calls `visit` with the sequence number and severity rank of every matching entry, in
    /// no particular order (a histogram's one pass over what it cannot count otherwise). A
    /// plan driven by a bucketed index without other conditions reads that index alone.
    pub(super) fn tally(
        &self,
        conn: &Connection,
        visit: &mut dyn FnMut(i64, i64),
    ) -> Result<(), Error> {
        self.each_row(conn, "seq, severity", &mut |row| {
            visit(row.get(0)?, row.get(1)?);
            Ok(())
        })
    }

    /// Runs `SELECT <select>` over the matching rows once per run or bucket of the driver
    /// (an aggregate gives one row per run or bucket), calling `visit` with each result row.
    fn each_row(
        &self,
        conn: &Connection,
        select: &str,
        visit: &mut dyn FnMut(&rusqlite::Row<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let bounds = [Value::Integer(self.lo), Value::Integer(self.hi)];
        let mut each = |stmt: &mut Statement<'_>| -> Result<(), Error> {
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next()? {
                visit(row)?;
            }
            Ok(())
        };
        let mut stmt = conn.prepare_cached(&self.select_sql(select))?;
        match &self.driver {
            Driver::Table => {
                let next = bind_all(&mut stmt, 1, &bounds)?;
                bind_all(&mut stmt, next, &self.residual_params)?;
                each(&mut stmt)
            }
            Driver::Runs(_, values) => {
                let next = bind_all(&mut stmt, 2, &bounds)?;
                bind_all(&mut stmt, next, &self.residual_params)?;
                for value in values {
                    stmt.raw_bind_parameter(1, value)?;
                    each(&mut stmt)?;
                }
                Ok(())
            }
            Driver::Buckets { params, .. } => {
                let next = bind_all(&mut stmt, 2, params.iter().chain(&bounds))?;
                bind_all(&mut stmt, next, &self.residual_params)?;
                for bucket in self.buckets() {
                    stmt.raw_bind_parameter(1, bucket)?;
                    each(&mut stmt)?;
                }
                Ok(())
            }
        }
    }

    /// The statement of [`Plan::each_row`]: `SELECT <select>` over one run or bucket of the
    /// driver. Parameters: [value or bucket, condition], lo, hi, residual.
    fn select_sql(&self, select: &str) -> String {
        let tail = format!("seq >= ? AND seq < ?{}", self.residual_sql);
        match &self.driver {
            Driver::Table => format!("SELECT {select} FROM events NOT INDEXED WHERE {tail}"),
            Driver::Runs(index, _) => {
                format!("SELECT {select} FROM {}{tail}", index.run_of_one_value())
            }
            Driver::Buckets { index, sql, .. } => format!(
                "SELECT {select} FROM {}{BUCKET} = ? AND {sql} AND {tail}",
                index.read()
            ),
        }
    }

    /// The SQL text a plan's read runs, for plan checks in tests.
    #[cfg(test)]
    fn sql(&self) -> String {
        match &self.driver {
            Driver::Table => self.rows_sql(None),
            Driver::Runs(index, values) if values.len() > 1 => self.seek_sql(*index),
            Driver::Runs(index, _) => self.rows_sql(Some(*index)),
            Driver::Buckets {
                index, sql, sorted, ..
            } => self.bucket_sql(*index, sql, *sorted),
        }
    }
}

/// Reads one entry by `seq`.
fn fetch_sql() -> String {
    format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?")
}

/// Reads the entry `seq`, found in an index: it must be in the table.
fn fetch_entry(fetch: &mut Statement<'_>, seq: i64) -> Result<SealedEntry, Error> {
    let mut rows = fetch.query([seq])?;
    match rows.next()? {
        Some(row) => Ok(codec::decode(row)?),
        None => Err(Error::Store(StoreError::Corrupt {
            seq: u64::try_from(seq).ok(),
            problem: "entry listed in an index is missing from the table".to_owned(),
        })),
    }
}

/// The values a drive reads, or `None` when it should not drive (too many distinct values).
fn resolve(conn: &Connection, index: Index, drive: &Drive) -> Result<Option<Vec<Value>>, Error> {
    match drive {
        Drive::Eq(value) => Ok(Some(vec![value.clone()])),
        Drive::Set(values) => Ok(Some(values.clone())),
        Drive::Buckets { .. } => Ok(None),
        Drive::Range { extra, low, high } => {
            let sql = |low_op: &str| {
                format!(
                    "SELECT {col} FROM {read}{col} {low_op} ? AND {col} < ? ORDER BY {col} LIMIT 1",
                    col = index.column,
                    read = index.read()
                )
            };
            let mut first = conn.prepare_cached(&sql(">="))?;
            let mut next = conn.prepare_cached(&sql(">"))?;
            let mut values: Vec<Value> = Vec::new();
            if let Some(extra) = extra {
                if exists(conn, index, extra)? {
                    values.push(extra.clone());
                }
            }
            let mut found: Option<Value> = first
                .query_row([low, high], |r| r.get::<_, Value>(0))
                .optional()?;
            while let Some(value) = found {
                if values.len() >= MAX_MERGE_RUNS {
                    return Ok(None);
                }
                found = next
                    .query_row([&value, high], |r| r.get::<_, Value>(0))
                    .optional()?;
                values.push(value);
            }
            Ok(Some(values))
        }
    }
}

/// Whether any row has `value` in a plain index's column.
fn exists(conn: &Connection, index: Index, value: &Value) -> Result<bool, Error> {
    let sql = format!("SELECT 1 FROM {}1 LIMIT 1", index.run_of_one_value());
    Ok(conn.prepare_cached(&sql)?.exists([value])?)
}

/// The node of the entry `seq`, if it is stored and its node is text.
pub(super) fn stored_node(conn: &Connection, seq: i64) -> Result<Option<String>, Error> {
    let mut stmt = conn.prepare_cached("SELECT node_id FROM events WHERE seq = ?")?;
    Ok(stmt
        .query_row([seq], |r| r.get::<_, Value>(0))
        .optional()?
        .and_then(|v| match v {
            Value::Text(t) => Some(t),
            _ => None,
        }))
}

/// The first and last stored sequence numbers, `None` for an empty log.
pub(super) fn seq_extent(conn: &Connection) -> Result<Option<(i64, i64)>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT (SELECT seq FROM events ORDER BY seq ASC LIMIT 1), \
                (SELECT seq FROM events ORDER BY seq DESC LIMIT 1)",
    )?;
    let (first, last): (Option<i64>, Option<i64>) =
        stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(first.zip(last))
}

/// The sequence number from which entries were recorded at or after `time`: every stored
/// entry below it is earlier, every one from it on is not (recorded_at never decreases along
/// seq). A binary search over the primary key, O(log n) seeks, tolerant of missing numbers.
pub(super) fn first_seq_at_or_after(
    conn: &Connection,
    time: Millis,
    first: i64,
    last: i64,
) -> Result<i64, Error> {
    let mut probe = conn.prepare_cached(
        "SELECT seq, recorded_at FROM events WHERE seq >= ? ORDER BY seq ASC LIMIT 1",
    )?;
    let (mut lo, mut hi) = (first, last.saturating_add(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let found = probe
            .query_row([mid], |r| {
                Ok((r.get::<_, i64>(0)?, r.get_ref(1)?.as_i64().ok()))
            })
            .optional()?;
        match found {
            // Rows past `last` appeared meanwhile: outside this read's range anyway.
            None => hi = mid,
            Some((seq, None)) => {
                return Err(Error::Store(StoreError::Corrupt {
                    seq: u64::try_from(seq).ok(),
                    problem: "column recorded_at is not an integer".to_owned(),
                }));
            }
            Some((_, Some(recorded_at))) if recorded_at >= time => hi = mid,
            Some((seq, Some(_))) => lo = seq.saturating_add(1),
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IpFilter;
    use rusqlite::params_from_iter;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn cidr_ranges_cover_exactly_the_block() {
        let v4 = |a, b, c, d, p| IpFilter {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix_len: p,
        };
        let (lo, hi) = ip_range(v4(10, 1, 2, 3, 16)).unwrap();
        assert_eq!(codec::decode_ip(lo), IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)));
        assert_eq!(
            codec::decode_ip(hi),
            IpAddr::V4(Ipv4Addr::new(10, 1, 255, 255))
        );
        let (lo, hi) = ip_range(v4(10, 1, 2, 3, 32)).unwrap();
        assert_eq!(lo, hi);
        let (lo, hi) = ip_range(v4(10, 1, 2, 3, 0)).unwrap();
        assert_eq!(codec::decode_ip(lo), IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)));
        assert_eq!(
            codec::decode_ip(hi),
            IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255))
        );
        assert!(ip_range(v4(10, 1, 2, 3, 33)).is_err());
        let v6: Ipv6Addr = "2001:db8:1:2::5".parse().unwrap();
        let (lo, hi) = ip_range(IpFilter {
            addr: IpAddr::V6(v6),
            prefix_len: 48,
        })
        .unwrap();
        assert_eq!(
            codec::decode_ip(lo),
            "2001:db8:1::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            codec::decode_ip(hi),
            "2001:db8:1:ffff:ffff:ffff:ffff:ffff"
                .parse::<IpAddr>()
                .unwrap()
        );
        let (lo, hi) = ip_range(IpFilter {
            addr: IpAddr::V6(v6),
            prefix_len: 0,
        })
        .unwrap();
        assert_eq!((lo, hi), ([0; 16], [0xff; 16]));
        assert!(
            ip_range(IpFilter {
                addr: IpAddr::V6(v6),
                prefix_len: 129
            })
            .is_err()
        );
    }

    fn explain(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let n = stmt.parameter_count();
        let params = vec![Value::Null; n];
        let mut rows = stmt.query(params_from_iter(params)).unwrap();
        let mut out = String::new();
        while let Some(row) = rows.next().unwrap() {
            out.push_str(&row.get::<_, String>(3).unwrap());
            out.push('\n');
        }
        out
    }

    /// Every filter reads an index (or the table) in sequence order from its cursor: no sort
    /// (except within one bucket for an address range), no full scan where an index applies,
    /// in both directions.
    #[test]
    fn every_filter_reads_in_order_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(&dir.path().join("q.db")).unwrap();
        let conn = store.test_connection();
        // A few rows so that the plan has something to resolve ranges and existence against.
        conn.execute_batch(
            "INSERT INTO events VALUES (0, x'00', 5, NULL, 'n1', 't1', 'alice', 'user', \
               x'00000000000000000000ffff0a010203', NULL, 'config.threshold.changed', 'node', \
               'edge', 'success', 4, '{}', x'00', x'00', NULL); \
             INSERT INTO events VALUES (1, x'00', 6, NULL, 'n1', 't1', 'bob', 'system', \
               x'00000000000000000000ffff0a010204', NULL, 'config', 'node', \
               'edge', 'failure', 5, '{}', x'00', x'00', NULL);",
        )
        .unwrap();
        let ip = |s: &str, p| IpFilter {
            addr: s.parse().unwrap(),
            prefix_len: p,
        };
        let f = Filter::default;
        // Each filter, and the index that should drive it (None: the table).
        let cases = [
            (f(), None),
            (
                Filter {
                    actor: Some("alice".into()),
                    ..f()
                },
                Some("events_by_actor"),
            ),
            (
                Filter {
                    action: Some(ActionFilter::Exact("config".into())),
                    ..f()
                },
                Some("events_by_action"),
            ),
            (
                Filter {
                    action: Some(ActionFilter::Prefix("config".into())),
                    ..f()
                },
                Some("events_by_action"),
            ),
            (
                Filter {
                    target: Some("node:edge".into()),
                    ..f()
                },
                Some("events_by_target"),
            ),
            (
                Filter {
                    target: Some("edge".into()),
                    ..f()
                },
                Some("events_by_target"),
            ),
            (
                Filter {
                    ip: Some(ip("10.1.2.3", 32)),
                    ..f()
                },
                Some("events_by_ip"),
            ),
            (
                Filter {
                    ip: Some(ip("10.1.0.0", 16)),
                    ..f()
                },
                Some("events_by_ip"),
            ),
            (
                Filter {
                    tenant: Some("t1".into()),
                    ..f()
                },
                Some("events_by_tenant"),
            ),
            (
                Filter {
                    node: Some("n1".into()),
                    ..f()
                },
                None,
            ),
            (
                Filter {
                    severity: Some(Severity::Warning),
                    ..f()
                },
                None,
            ),
            (
                Filter {
                    severity: Some(Severity::Error),
                    ..f()
                },
                Some("events_severe"),
            ),
            (
                Filter {
                    severity: Some(Severity::Critical),
                    ..f()
                },
                Some("events_severe"),
            ),
            (
                Filter {
                    outcome: Some(Outcome::Failure),
                    ..f()
                },
                Some("events_not_success"),
            ),
            (
                Filter {
                    outcome: Some(Outcome::Success),
                    ..f()
                },
                None,
            ),
            (
                Filter {
                    actor_kind: Some(ActorKind::User),
                    ..f()
                },
                None,
            ),
            (
                Filter {
                    actor_kind: Some(ActorKind::System),
                    ..f()
                },
                Some("events_not_user"),
            ),
            (
                Filter {
                    from: Some(5),
                    to: Some(7),
                    ..f()
                },
                None,
            ),
            (
                Filter {
                    occurred_from: Some(1),
                    occurred_to: Some(9),
                    ..f()
                },
                Some("events_by_occurred"),
            ),
            (
                Filter {
                    occurred_from: Some(1),
                    ..f()
                },
                Some("events_by_occurred"),
            ),
            (
                Filter {
                    occurred_to: Some(9),
                    tenant: Some("t1".into()),
                    ..f()
                },
                Some("events_by_occurred"),
            ),
            (
                Filter {
                    tenant: Some("t1".into()),
                    actor: Some("alice".into()),
                    severity: Some(Severity::Info),
                    from: Some(1),
                    ..f()
                },
                Some("events_by_actor"),
            ),
        ];
        for (filter, index) in cases {
            for order in [Order::Ascending, Order::Descending] {
                let plan = Plan::new(&conn, &filter, order, None).unwrap();
                let plan = plan.unwrap_or_else(|| panic!("{filter:?} planned as empty"));
                let text = explain(&conn, &plan.sql());
                let occurred = filter.occurred_from.is_some() || filter.occurred_to.is_some();
                let ranged = filter.ip.is_some_and(|i| i.prefix_len < 32) || occurred;
                assert_eq!(
                    text.contains("TEMP B-TREE"),
                    ranged,
                    "{filter:?} sorts:\n{text}"
                );
                match index {
                    Some(name) => assert!(
                        text.contains(&format!("SEARCH events USING INDEX {name} ("))
                            || text
                                .contains(&format!("SEARCH events USING COVERING INDEX {name} (")),
                        "{filter:?}:\n{text}"
                    ),
                    None => assert!(
                        text.contains(
                            "SEARCH events USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"
                        ),
                        "{filter:?}:\n{text}"
                    ),
                }
                // The read is bounded by the cursor in the index itself (in a bucketed index
                // by its `seq` column, schema version 7), or for an address range by the
                // bucket (then sorted: at most one bucket's rows).
                let bucketed = index.is_some_and(|name| {
                    ["events_by_actor", "events_by_target", "events_by_ip"].contains(&name)
                });
                let bound = if occurred {
                    "(<expr>=? AND occurred_at"
                } else if ranged {
                    "(<expr>=? AND ip>? AND ip<?)"
                } else if bucketed {
                    "=? AND seq>? AND seq<?)"
                } else {
                    "rowid>? AND rowid<?)"
                };
                assert!(text.contains(bound), "{filter:?}:\n{text}");
            }
        }
    }

    /// A histogram of an actor, a target, an address or block or an occurred_at span reads
    /// its bucketed index alone (schema version 7 put `seq` and `severity` in them): reading
    /// each match's row made such a chart cost ~20 µs a match at 10M entries.
    #[test]
    fn a_tally_of_a_bucketed_filter_reads_the_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(&dir.path().join("q.db")).unwrap();
        let conn = store.test_connection();
        conn.execute_batch(
            "INSERT INTO events VALUES (0, x'00', 5, 3, 'n1', 't1', 'alice', 'user', \
               NULL, NULL, 'config', 'node', 'edge', 'success', 4, '{}', x'00', x'00', NULL);",
        )
        .unwrap();
        let ip = |text: &str, prefix_len| IpFilter {
            addr: text.parse().unwrap(),
            prefix_len,
        };
        let filters = [
            Filter {
                actor: Some("alice".into()),
                ..Filter::default()
            },
            Filter {
                target: Some("edge".into()),
                ..Filter::default()
            },
            Filter {
                ip: Some(ip("10.0.0.1", 32)),
                ..Filter::default()
            },
            Filter {
                ip: Some(ip("10.0.0.0", 16)),
                ..Filter::default()
            },
            Filter {
                occurred_from: Some(1),
                ..Filter::default()
            },
            // Who, or what, from where: the actor and target indexes carry the address.
            Filter {
                actor: Some("alice".into()),
                ip: Some(ip("10.0.0.0", 16)),
                ..Filter::default()
            },
            Filter {
                target: Some("edge".into()),
                ip: Some(ip("10.0.0.1", 32)),
                ..Filter::default()
            },
        ];
        for filter in filters {
            let plan = Plan::new(&conn, &filter, Order::Ascending, None)
                .unwrap()
                .unwrap_or_else(|| panic!("{filter:?} planned as empty"));
            let text = explain(&conn, &plan.select_sql("seq, severity"));
            assert!(text.contains("USING COVERING INDEX"), "{filter:?}:\n{text}");
        }
    }

    #[test]
    fn drivers_follow_selectivity() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(&dir.path().join("q.db")).unwrap();
        let conn = store.test_connection();
        conn.execute_batch(
            "INSERT INTO events VALUES (0, x'00', 5, NULL, 'n1', 't1', 'alice', 'user', \
               NULL, NULL, 'config', 'node', 'edge', 'success', 4, '{}', x'00', x'00', NULL);",
        )
        .unwrap();
        let plan = |filter: Filter| {
            Plan::new(&conn, &filter, Order::Ascending, None)
                .unwrap()
                .map(|p| match p.driver {
                    Driver::Table => ("table", 0),
                    Driver::Runs(index, values) => (index.name, values.len()),
                    Driver::Buckets { index, .. } => (index.name, 0),
                })
        };
        assert_eq!(
            plan(Filter {
                tenant: Some("t1".into()),
                actor: Some("alice".into()),
                ..Filter::default()
            }),
            Some(("events_by_actor", 0))
        );
        assert_eq!(
            plan(Filter {
                severity: Some(Severity::Error),
                ..Filter::default()
            }),
            Some(("events_severe", 4))
        );
        // A residual equality that matches nothing empties the plan at once, and so does a
        // node other than the log's.
        assert_eq!(
            plan(Filter {
                actor: Some("alice".into()),
                tenant: Some("t2".into()),
                ..Filter::default()
            }),
            None
        );
        assert_eq!(
            plan(Filter {
                node: Some("elsewhere".into()),
                ..Filter::default()
            }),
            None
        );
        assert_eq!(
            plan(Filter {
                action: Some(ActionFilter::Prefix("auth".into())),
                ..Filter::default()
            }),
            None
        );
        assert_eq!(plan(Filter::default()), Some(("table", 0)));
    }

    #[test]
    fn bucket_expression_matches_the_schema() {
        assert_eq!(BUCKET, format!("seq >> {BUCKET_BITS}"));
        assert_eq!(SEVERE_MIN_RANK, codec::severity_rank(Severity::Error));
    }
}
