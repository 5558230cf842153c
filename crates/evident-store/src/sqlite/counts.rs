//! The embedded store's event counts, behind [`crate::Store::histogram`]: how many entries were
//! recorded per 100 ms, second, minute, hour and day of `recorded_at`, by tenant, action,
//! outcome and severity (the `event_counts` table, schema version 7).
//!
//! They are derived from the log and kept off the append path: [`read`] takes entries by
//! sequence number from a durable position (`event_counts_position`) and [`apply`] adds them,
//! in one transaction with the new position, in steps that a background task of the server
//! runs after commits ([`crate::Store::advance_counts`]); the pruner subtracts what it deletes
//! ([`subtract_pruned`]). A histogram ([`histogram`]) adds up the counts over the whole
//! 100 ms cells of its range and reads entries only where the counts do not reach: the parts
//! of a cell at the ends of the range, and the entries past the position (recorded since the
//! last step). All of that is read in one snapshot, so a histogram is exact however far behind the
//! counts are; only its speed depends on them. Filters the counts do not know (an actor, a
//! target, an address, occurred_at, a sequence range) read the matching entries once.

use super::codec::IpBytes;
use super::query::{self, Plan};
use super::{Error, corrupt, to_i64};
use crate::{ActionFilter, Buckets, Filter, Order, SeverityCounts};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, HashMap};

/// The widths kept (ms), finest first, each dividing the next: 100 ms, a second, a minute, an
/// hour and a day (days counted from the epoch, in UTC). The finest bounds what a histogram
/// reads from entries at the ends of its range: at most 100 ms of the log at each end.
pub(super) const WIDTHS: [i64; 5] = [100, 1_000, 60_000, 3_600_000, 86_400_000];

/// The texts of one step, each stored once and named by number.
#[derive(Debug, Default)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }
}

/// The finest cell of one key: (its start, tenant, action, outcome, severity rank).
type CellKey = (i64, u32, u32, u32, i64);

/// The finest cell of one network: (its start, network, severity rank).
type NetKey = (i64, IpBytes, i64);

/// The networks counted apart: IPv4 /16 (in the 16-byte form, /112) and IPv6 /32.
const NET_PREFIX_V4: u8 = 16;
const NET_PREFIX_V6: u8 = 32;

/// The network an address is counted under: the address with all but its first 14 bytes
/// (IPv4, which the 16-byte form maps to `::ffff:a.b.c.d`) or 4 bytes (IPv6) zeroed.
fn network(ip: &IpBytes) -> IpBytes {
    const MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    let keep = if ip[..12] == MAPPED {
        12 + usize::from(NET_PREFIX_V4 / 8)
    } else {
        usize::from(NET_PREFIX_V6 / 8)
    };
    let mut net = [0u8; 16];
    net[..keep].copy_from_slice(&ip[..keep]);
    net
}

/// What a range of entries adds to the counts (or takes from them, when pruned).
#[derive(Debug, Default)]
pub(super) struct Deltas {
    names: Names,
    per_cell: HashMap<CellKey, u64>,
    per_net: HashMap<NetKey, u64>,
    /// One past the last entry read (`None`: none was).
    pub(super) next_seq: Option<i64>,
    /// Entries read.
    pub(super) entries: u64,
}

/// Reads the entries of `[from, to)` in sequence order, at most `limit` of them.
pub(super) fn read(conn: &Connection, from: i64, to: i64, limit: u64) -> Result<Deltas, Error> {
    // No `LIMIT ?` (SQLite re-prepares a statement whose LIMIT is rebound): rows come in
    // order, and the read stops stepping.
    let mut stmt = conn.prepare_cached(
        "SELECT seq, recorded_at, tenant, action, outcome, severity, ip FROM events \
         WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![from, to])?;
    let mut deltas = Deltas::default();
    while deltas.entries < limit {
        let Some(row) = rows.next()? else { break };
        let seq: i64 = row.get(0)?;
        let text = |i: usize, what: &str| -> Result<&str, Error> {
            match row.get_ref(i)? {
                ValueRef::Text(t) => std::str::from_utf8(t)
                    .map_err(|_| corrupt(u64::try_from(seq).ok(), format!("{what} is not UTF-8"))),
                _ => Err(corrupt(
                    u64::try_from(seq).ok(),
                    format!("column {what} is not text"),
                )),
            }
        };
        let recorded_at: i64 = row.get(1)?;
        let tenant = deltas.names.id(text(2, "tenant")?);
        let action = deltas.names.id(text(3, "action")?);
        let outcome = deltas.names.id(text(4, "outcome")?);
        let severity: i64 = row.get(5)?;
        let cell = recorded_at.div_euclid(WIDTHS[0]) * WIDTHS[0];
        *deltas
            .per_cell
            .entry((cell, tenant, action, outcome, severity))
            .or_default() += 1;
        match row.get_ref(6)? {
            ValueRef::Null => {}
            ValueRef::Blob(ip) => {
                let ip: IpBytes = ip.try_into().map_err(|_| {
                    corrupt(u64::try_from(seq).ok(), "ip is not 16 bytes".to_owned())
                })?;
                *deltas
                    .per_net
                    .entry((cell, network(&ip), severity))
                    .or_default() += 1;
            }
            _ => {
                return Err(corrupt(
                    u64::try_from(seq).ok(),
                    "column ip is not a blob".to_owned(),
                ));
            }
        }
        deltas.entries += 1;
        deltas.next_seq = Some(seq.saturating_add(1));
    }
    Ok(deltas)
}

/// Whether [`apply`] adds deltas or takes them away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sign {
    Add,
    Subtract,
}

/// One table of counts: its name and the key columns between `start` and `severity`.
struct CountsTable {
    name: &'static str,
    keys: &'static [&'static str],
}

const BY_KEY: CountsTable = CountsTable {
    name: "event_counts",
    keys: &["tenant", "action", "outcome"],
};
const BY_NETWORK: CountsTable = CountsTable {
    name: "event_counts_by_net",
    keys: &["net"],
};

/// The statements that add to (or take from) one table's rows.
struct CountsWriter<'t> {
    add: rusqlite::CachedStatement<'t>,
    take: rusqlite::CachedStatement<'t>,
    drop_empty: rusqlite::CachedStatement<'t>,
    sign: Sign,
}

impl CountsTable {
    fn writer<'t>(&self, tx: &'t Connection, sign: Sign) -> Result<CountsWriter<'t>, Error> {
        let columns = format!("width, start, {}, severity", self.keys.join(", "));
        let key_len = self.keys.len() + 3;
        let row = columns
            .split(", ")
            .enumerate()
            .map(|(i, c)| format!("{c} = ?{}", i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        let values = (1..=key_len + 1)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (name, n) = (self.name, key_len + 1);
        Ok(CountsWriter {
            add: tx.prepare_cached(&format!(
                "INSERT INTO {name} ({columns}, n) VALUES ({values}) \
                 ON CONFLICT ({columns}) DO UPDATE SET n = n + excluded.n"
            ))?,
            take: tx.prepare_cached(&format!(
                "UPDATE {name} SET n = max(n - ?{n}, 0) WHERE {row}"
            ))?,
            drop_empty: tx.prepare_cached(&format!("DELETE FROM {name} WHERE {row} AND n = 0"))?,
            sign,
        })
    }
}

impl CountsWriter<'_> {
    /// Adds (or takes) `n` at the row `key` (width, start, the table's keys, severity).
    fn write(&mut self, key: &[&dyn rusqlite::ToSql], n: u64) -> Result<(), Error> {
        let n = to_i64(n, "count")?;
        let mut with_n = key.to_vec();
        with_n.push(&n);
        match self.sign {
            Sign::Add => {
                self.add.execute(&*with_n)?;
            }
            Sign::Subtract => {
                self.take.execute(&*with_n)?;
                self.drop_empty.execute(key)?;
            }
        }
        Ok(())
    }
}

/// The row of each width holding the finest cell starting at `cell`: (width, start).
fn at_every_width(cell: i64) -> impl Iterator<Item = (i64, i64)> {
    WIDTHS.iter().map(move |w| (*w, cell.div_euclid(*w) * w))
}

/// Adds `deltas` to every width's counts (or subtracts them, dropping rows that reach 0).
/// Rows are written in key order (a `BTreeMap`): each lands next to the previous one in the
/// table's B-tree.
pub(super) fn apply(tx: &Connection, deltas: &Deltas, sign: Sign) -> Result<(), Error> {
    let names = &deltas.names;
    let mut rows: BTreeMap<(i64, i64, &str, &str, &str, i64), u64> = BTreeMap::new();
    for (&(cell, tenant, action, outcome, severity), &n) in &deltas.per_cell {
        let (tenant, action, outcome) =
            (names.name(tenant), names.name(action), names.name(outcome));
        for (width, start) in at_every_width(cell) {
            *rows
                .entry((width, start, tenant, action, outcome, severity))
                .or_default() += n;
        }
    }
    let mut writer = BY_KEY.writer(tx, sign)?;
    for ((width, start, tenant, action, outcome, severity), n) in rows {
        writer.write(&[&width, &start, &tenant, &action, &outcome, &severity], n)?;
    }
    let mut rows: BTreeMap<(i64, i64, IpBytes, i64), u64> = BTreeMap::new();
    for (&(cell, net, severity), &n) in &deltas.per_net {
        for (width, start) in at_every_width(cell) {
            *rows.entry((width, start, net, severity)).or_default() += n;
        }
    }
    let mut writer = BY_NETWORK.writer(tx, sign)?;
    for ((width, start, net, severity), n) in rows {
        writer.write(&[&width, &start, &&net[..], &severity], n)?;
    }
    Ok(())
}

/// The position of the counts: every entry below it is counted.
pub(super) fn position(conn: &Connection) -> Result<i64, Error> {
    Ok(conn
        .prepare_cached("SELECT next_seq FROM event_counts_position WHERE one = 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Moves the position to `next_seq` (in the transaction that applied the entries below it).
pub(super) fn set_position(tx: &Connection, next_seq: i64) -> Result<(), Error> {
    tx.prepare_cached(
        "INSERT INTO event_counts_position (one, next_seq) VALUES (1, ?1) \
         ON CONFLICT (one) DO UPDATE SET next_seq = excluded.next_seq",
    )?
    .execute([next_seq])?;
    Ok(())
}

/// Takes the entries `[from, to)`, about to be pruned in this transaction, out of the counts
/// (those of them the counts hold: below the position).
pub(super) fn subtract_pruned(tx: &Connection, from: i64, to: i64) -> Result<(), Error> {
    let to = to.min(position(tx)?);
    if from >= to {
        return Ok(());
    }
    let deltas = read(tx, from, to, u64::MAX)?;
    apply(tx, &deltas, Sign::Subtract)
}

/// Which counts answer a filter (apart from its time range and node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// `event_counts`: any of tenant, action or prefix, outcome and minimum severity.
    ByKey,
    /// `event_counts_by_net`: an address block of IPv4 /16 or IPv6 /32 or wider, alone.
    ByNetwork,
}

/// Which counts can answer `filter`, if any.
fn counted(filter: &Filter) -> Option<Counted> {
    let Filter {
        from: _,
        to: _,
        occurred_from,
        occurred_to,
        actor,
        actor_kind,
        action,
        target,
        ip,
        tenant,
        node: _,
        severity,
        outcome,
        from_seq,
        to_seq,
    } = filter;
    let unknown = occurred_from.is_some()
        || occurred_to.is_some()
        || actor.is_some()
        || actor_kind.is_some()
        || target.is_some()
        || from_seq.is_some()
        || to_seq.is_some();
    let keyed = action.is_some() || tenant.is_some() || severity.is_some() || outcome.is_some();
    match ip {
        _ if unknown => None,
        None => Some(Counted::ByKey),
        Some(_) if keyed => None,
        Some(block) => {
            let wide = match block.addr {
                std::net::IpAddr::V4(_) => block.prefix_len <= NET_PREFIX_V4,
                std::net::IpAddr::V6(_) => block.prefix_len <= NET_PREFIX_V6,
            };
            wide.then_some(Counted::ByNetwork)
        }
    }
}

/// The histogram of `filter` over `buckets` (see the module doc).
pub(super) fn histogram(
    conn: &Connection,
    filter: &Filter,
    buckets: &Buckets,
) -> Result<Vec<SeverityCounts>, Error> {
    let mut out = vec![SeverityCounts::default(); buckets.len()];
    let narrowed = buckets.narrow(filter);
    let (from, to) = (
        narrowed.from.unwrap_or(buckets.from()),
        narrowed.to.unwrap_or(buckets.to()),
    );
    let finest = WIDTHS[0];
    // The whole cells of the finest width in the range, `[first, last)`.
    let first = from
        .div_euclid(finest)
        .saturating_add(i64::from(from % finest != 0))
        * finest;
    let last = to.div_euclid(finest) * finest;
    let counts = counted(filter).filter(|_| buckets.width() % finest == 0 && first < last);
    let Some(counts) = counts else {
        tally(conn, &narrowed, buckets, &mut out)?;
        return Ok(out);
    };
    if let Some(node) = &filter.node {
        // A log holds one node's entries (append refuses others), as in `query::Plan`.
        let Some((first_seq, _)) = query::seq_extent(conn)? else {
            return Ok(out);
        };
        if query::stored_node(conn, first_seq)?.as_deref() != Some(node.as_str()) {
            return Ok(out);
        }
    }
    let position = position(conn)?;
    // The ends finer than the finest cell, and what the counts do not hold yet, from entries.
    for part in [
        Filter {
            to: Some(first),
            ..narrowed.clone()
        },
        Filter {
            from: Some(last),
            ..narrowed.clone()
        },
        Filter {
            from: Some(first),
            to: Some(last),
            from_seq: u64::try_from(position).ok(),
            ..narrowed.clone()
        },
    ] {
        tally(conn, &part, buckets, &mut out)?;
    }
    add_counts(conn, filter, counts, first, last, buckets, &mut out)?;
    Ok(out)
}

/// Counts the entries of `filter` (within the grid's range) into `out`, in one pass. Its
/// time bounds become sequence bounds and each bucket's start a sequence number (recorded_at
/// never decreases along seq), so a match's bucket follows from its `seq`: the read needs
/// only what a covering index holds, never the rows of the table.
fn tally(
    conn: &Connection,
    filter: &Filter,
    buckets: &Buckets,
    out: &mut [SeverityCounts],
) -> Result<(), Error> {
    let Some((first, last)) = query::seq_extent(conn)? else {
        return Ok(());
    };
    let from = filter.from.unwrap_or(buckets.from()).max(buckets.from());
    let to = filter.to.unwrap_or(buckets.to()).min(buckets.to());
    if from >= to {
        return Ok(());
    }
    // Only the buckets the range touches (a histogram's sub-cell ends touch one or two).
    let (Some(first_bucket), Some(last_bucket)) =
        (buckets.index_of(from), buckets.index_of(to - 1))
    else {
        return Ok(());
    };
    let mut starts = Vec::with_capacity(last_bucket + 1 - first_bucket);
    for i in first_bucket..=last_bucket {
        let start = buckets.bounds(i).0.max(from);
        starts.push(query::first_seq_at_or_after(conn, start, first, last)?);
    }
    let end = query::first_seq_at_or_after(conn, to, first, last)?;
    let (Some(&lo), Ok(end)) = (starts.first(), u64::try_from(end)) else {
        return Ok(());
    };
    let lo = u64::try_from(lo).unwrap_or(0);
    let by_seq = Filter {
        from: None,
        to: None,
        from_seq: Some(filter.from_seq.map_or(lo, |f| f.max(lo))),
        to_seq: Some(filter.to_seq.map_or(end, |t| t.min(end))),
        ..filter.clone()
    };
    if let Some(plan) = Plan::new(conn, &by_seq, Order::Ascending, None)? {
        plan.tally(conn, &mut |seq, rank| {
            // The last bucket starting at or before `seq` (empty buckets share a start).
            let bucket = first_bucket + starts.partition_point(|s| *s <= seq).saturating_sub(1);
            let slot = out
                .get_mut(bucket)
                .and_then(|cell| usize::try_from(rank).ok().and_then(|r| cell.get_mut(r)));
            if let Some(slot) = slot {
                *slot += 1;
            }
        })?;
    }
    Ok(())
}

/// Splits `[first, last)` (whole cells of the finest width) into spans each made of whole rows of one width,
/// using widths no coarser than `top`: finer widths at the ends, up to the next boundary of the
/// coarser one.
fn spans(first: i64, last: i64, top: usize) -> Vec<(i64, i64, i64)> {
    let ceil = |t: i64, w: i64| t.div_euclid(w).saturating_add(i64::from(t % w != 0)) * w;
    let floor = |t: i64, w: i64| t.div_euclid(w) * w;
    let mut out = Vec::new();
    let (mut lo, mut hi) = (first, last);
    for level in 0..top {
        let (width, next) = (WIDTHS[level], WIDTHS[level + 1]);
        let lo_up = ceil(lo, next).min(hi);
        let hi_down = floor(hi, next).max(lo_up);
        out.push((width, lo, lo_up));
        out.push((width, hi_down, hi));
        (lo, hi) = (lo_up, hi_down);
    }
    out.push((WIDTHS[top], lo, hi));
    out.retain(|(_, lo, hi)| lo < hi);
    out
}

/// Adds the counts of `filter` over `[first, last)` (whole cells of the finest width) to `out`. Every row read
/// lies inside one bucket: its width divides the buckets' and both start on the epoch's grid.
fn add_counts(
    conn: &Connection,
    filter: &Filter,
    counts: Counted,
    first: i64,
    last: i64,
    buckets: &Buckets,
    out: &mut [SeverityCounts],
) -> Result<(), Error> {
    let top = WIDTHS
        .iter()
        .rposition(|w| buckets.width() % w == 0)
        .unwrap_or(0);
    let table = match counts {
        Counted::ByKey => "event_counts",
        Counted::ByNetwork => "event_counts_by_net",
    };
    let mut sql = format!(
        "SELECT start, severity, n FROM {table} WHERE width = ?1 AND start >= ?2 AND start < ?3"
    );
    let mut values = Vec::new();
    if let (Counted::ByNetwork, Some(block)) = (counts, filter.ip) {
        // Every network a block of this width holds lies wholly inside it.
        let (low, high) = query::ip_range(block)?;
        sql.push_str(" AND net BETWEEN ? AND ?");
        values.extend([Value::Blob(low.to_vec()), Value::Blob(high.to_vec())]);
    }
    let text = |s: &str| Value::Text(s.to_owned());
    if let Some(tenant) = &filter.tenant {
        sql.push_str(" AND tenant = ?");
        values.push(text(tenant));
    }
    match &filter.action {
        Some(ActionFilter::Exact(action)) => {
            sql.push_str(" AND action = ?");
            values.push(text(action));
        }
        // The root of every action: no constraint.
        Some(ActionFilter::Prefix(prefix)) if prefix.is_empty() => {}
        Some(ActionFilter::Prefix(prefix)) => {
            // `p` itself, and `p.…`: every text from `p.` up to `p/` ('/' follows '.').
            sql.push_str(" AND (action = ? OR (action >= ? AND action < ?))");
            values.extend([
                text(prefix),
                Value::Text(format!("{prefix}.")),
                Value::Text(format!("{prefix}/")),
            ]);
        }
        None => {}
    }
    if let Some(outcome) = filter.outcome {
        sql.push_str(" AND outcome = ?");
        values.push(text(outcome.as_str()));
    }
    if let Some(min) = filter.severity {
        sql.push_str(" AND severity >= ?");
        values.push(Value::Integer(super::codec::severity_rank(min)));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    for (i, value) in values.iter().enumerate() {
        stmt.raw_bind_parameter(i + 4, value)?;
    }
    for (width, lo, hi) in spans(first, last, top) {
        stmt.raw_bind_parameter(1, width)?;
        stmt.raw_bind_parameter(2, lo)?;
        stmt.raw_bind_parameter(3, hi)?;
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            let (start, rank, n): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
            buckets.add(out, start, rank, u64::try_from(n).unwrap_or(0));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_use_the_coarsest_whole_rows_and_cover_the_range_once() {
        let (t, s, m, h, d) = (WIDTHS[0], WIDTHS[1], WIDTHS[2], WIDTHS[3], WIDTHS[4]);
        // 10:00:04.9 to 12:01:00 of day 3, up to hours: a tenth to 10:00:05, seconds to
        // 10:01, minutes to 11:00, one hour, minutes to 12:01.
        let day3 = 3 * d;
        let (first, last) = (day3 + 10 * h + 5 * s - t, day3 + 12 * h + m);
        assert_eq!(
            spans(first, last, 3),
            vec![
                (t, first, first + t),
                (s, first + t, day3 + 10 * h + m),
                (m, day3 + 10 * h + m, day3 + 11 * h),
                (m, day3 + 12 * h, last),
                (h, day3 + 11 * h, day3 + 12 * h),
            ]
        );
        // Tenths only.
        assert_eq!(spans(first, last, 0), vec![(t, first, last)]);
        // Within one minute: no coarser row fits.
        assert_eq!(spans(5 * s, 9 * s, 4), vec![(s, 5 * s, 9 * s)]);
        // Every second of a range is covered by exactly one span, whatever the range.
        for (first, last) in [(0, 5 * d + 7 * s + t), (-2 * h - s, 3 * h), (d - t, d + s)] {
            for top in 0..WIDTHS.len() {
                let spans = spans(first, last, top);
                let mut at = first;
                let mut sorted = spans.clone();
                sorted.sort_by_key(|(_, lo, _)| *lo);
                for (width, lo, hi) in sorted {
                    assert_eq!(lo, at, "{first} {last} {top}: {spans:?}");
                    assert_eq!((lo % width, hi % width), (0, 0), "{spans:?}");
                    assert!(WIDTHS[..=top].contains(&width));
                    at = hi;
                }
                assert_eq!(at, last);
            }
        }
    }
}
