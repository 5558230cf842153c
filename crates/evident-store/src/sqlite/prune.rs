//! Retention pruning on the embedded store: the `prune_anchor` row (where the kept log
//! starts) and the one path by which old entries are ever deleted, a `prune_permit` row that
//! the pruner's own transaction sets and clears around its DELETE (the events DELETE trigger
//! consults it; see `schema.rs`, version 2).

use super::{Error, backend, corrupt, hash_from, to_i64};
use crate::{PruneAnchor, tree};
use evident_core::Hash;
use evident_core::merkle::NodeId;
use rusqlite::{Connection, OptionalExtension, params};

/// The action of the event that records a prune (see the server's retention module).
const RECORD_ACTION: &str = "retention.pruned";

const ANCHOR_COLUMNS: &str = "from_seq, below_seq, hash, seal, recorded_at, checkpoint_size, \
     checkpoint_note, started_at, event_seq";

fn to_u64(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| corrupt(None, format!("retention anchor: {what} {value}")))
}

/// The stored anchor, if the log was ever pruned.
pub(super) fn anchor_in(conn: &Connection) -> Result<Option<PruneAnchor>, Error> {
    type Row = (
        i64,
        i64,
        Vec<u8>,
        Vec<u8>,
        i64,
        i64,
        String,
        i64,
        Option<i64>,
    );
    let row: Option<Row> = conn
        .prepare_cached(&format!(
            "SELECT {ANCHOR_COLUMNS} FROM prune_anchor WHERE one = 1"
        ))?
        .query_row([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })
        .optional()?;
    let Some((from, below, hash, seal, recorded_at, cp_size, note, started_at, event)) = row else {
        return Ok(None);
    };
    let fixed = |bytes: &[u8], what: &str| {
        hash_from(bytes)
            .ok_or_else(|| corrupt(None, format!("retention anchor: {what} is not 32 bytes")))
    };
    Ok(Some(PruneAnchor {
        from_seq: to_u64(from, "from_seq")?,
        below_seq: to_u64(below, "below_seq")?,
        hash: fixed(&hash, "hash")?,
        seal: fixed(&seal, "seal")?,
        recorded_at,
        checkpoint_size: to_u64(cp_size, "checkpoint size")?,
        checkpoint_note: note,
        started_at,
        event_seq: to_u64(
            event.ok_or_else(|| corrupt(None, "retention anchor without its event".to_owned()))?,
            "event seq",
        )?,
    }))
}

/// Persists the intent to prune below `anchor.below_seq` (see [`crate::Store::begin_prune`]).
pub(super) fn begin_in(tx: &Connection, anchor: &PruneAnchor) -> Result<(), Error> {
    let current = anchor_in(tx)?;
    if let Some(current) = &current {
        if current == anchor {
            return Ok(());
        }
        if anchor.below_seq <= current.below_seq {
            return Err(backend(format!(
                "entries below {} are pruned already: a prune moves the anchor forward",
                current.below_seq
            )));
        }
    }
    if anchor.below_seq == 0 || anchor.event_seq < anchor.below_seq {
        return Err(backend(format!(
            "a retention anchor needs 1 <= below_seq ({}) <= event_seq ({})",
            anchor.below_seq, anchor.event_seq
        )));
    }
    let event: Option<String> = tx
        .prepare_cached("SELECT action FROM events WHERE seq = ?1")?
        .query_row([to_i64(anchor.event_seq, "sequence number")?], |r| r.get(0))
        .optional()?;
    if event.as_deref() != Some(RECORD_ACTION) {
        return Err(backend(format!(
            "entry {} is not a stored {RECORD_ACTION} event: a prune is recorded before it is \
             anchored",
            anchor.event_seq
        )));
    }
    let below = to_i64(anchor.below_seq, "sequence number")?;
    let last: Option<i64> = tx
        .prepare_cached("SELECT max(seq) FROM events")?
        .query_row([], |r| r.get(0))?;
    if last.is_none_or(|last| last < below) {
        return Err(backend(format!(
            "refusing to prune below entry {below}: the newest entry is always kept"
        )));
    }
    let stored: Option<(Vec<u8>, Vec<u8>, i64)> = tx
        .prepare_cached("SELECT hash, seal, recorded_at FROM events WHERE seq = ?1")?
        .query_row([below - 1], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    match stored {
        Some((hash, seal, recorded_at))
            if hash_from(&hash) == Some(anchor.hash)
                && hash_from(&seal) == Some(anchor.seal)
                && recorded_at == anchor.recorded_at => {}
        Some(_) => {
            return Err(backend(format!(
                "the retention anchor does not match the stored entry {}",
                below - 1
            )));
        }
        None => {
            return Err(backend(format!(
                "the anchor entry {} is not stored (pruned already?)",
                below - 1
            )));
        }
    }
    let cp_size = to_i64(anchor.checkpoint_size, "checkpoint size")?;
    let has_checkpoint = tx
        .prepare_cached("SELECT 1 FROM checkpoints WHERE size = ?1")?
        .exists([cp_size])?;
    if anchor.checkpoint_size < anchor.below_seq || !has_checkpoint {
        return Err(backend(format!(
            "the retention anchor needs a stored checkpoint of size at least {below}"
        )));
    }
    store_anchor_in(tx, anchor)
}

/// Writes `anchor` as the log's retention anchor (the checks are the caller's).
fn store_anchor_in(tx: &Connection, anchor: &PruneAnchor) -> Result<(), Error> {
    tx.prepare_cached(&format!(
        "INSERT INTO prune_anchor (one, {ANCHOR_COLUMNS}) \
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (one) DO UPDATE SET from_seq = excluded.from_seq, \
         below_seq = excluded.below_seq, hash = excluded.hash, seal = excluded.seal, \
         recorded_at = excluded.recorded_at, checkpoint_size = excluded.checkpoint_size, \
         checkpoint_note = excluded.checkpoint_note, started_at = excluded.started_at, \
         event_seq = excluded.event_seq"
    ))?
    .execute(params![
        to_i64(anchor.from_seq, "sequence number")?,
        to_i64(anchor.below_seq, "sequence number")?,
        anchor.hash.as_bytes(),
        anchor.seal.as_bytes(),
        anchor.recorded_at,
        to_i64(anchor.checkpoint_size, "checkpoint size")?,
        anchor.checkpoint_note,
        anchor.started_at,
        to_i64(anchor.event_seq, "sequence number")?,
    ])?;
    Ok(())
}

/// Refuses to import into a log that holds any entry or anchor already.
fn refuse_unless_empty(tx: &Connection) -> Result<(), Error> {
    let entries = tx
        .prepare_cached("SELECT 1 FROM events LIMIT 1")?
        .exists([])?;
    if entries || anchor_in(tx)?.is_some() {
        return Err(backend(
            "this log is not empty: a pruned log can only be imported into an empty one".to_owned(),
        ));
    }
    Ok(())
}

/// Stores Merkle nodes of an imported log's pruned prefix (see
/// [`crate::Store::import_pruned_nodes`]).
pub(super) fn import_nodes_in(tx: &Connection, nodes: &[(NodeId, Hash)]) -> Result<(), Error> {
    refuse_unless_empty(tx)?;
    let mut insert = tx.prepare_cached(super::INSERT_NODE)?;
    for (id, hash) in nodes {
        insert.execute(params![
            id.level,
            to_i64(id.index, "node index")?,
            hash.as_bytes()
        ])?;
    }
    Ok(())
}

/// Stores an imported log's anchor (see [`crate::Store::import_anchor`]).
pub(super) fn import_anchor_in(tx: &Connection, anchor: &PruneAnchor) -> Result<(), Error> {
    refuse_unless_empty(tx)?;
    if anchor.below_seq == 0 || anchor.event_seq < anchor.below_seq {
        return Err(backend(format!(
            "a retention anchor needs 1 <= below_seq ({}) <= event_seq ({})",
            anchor.below_seq, anchor.event_seq
        )));
    }
    store_anchor_in(tx, anchor)
}

/// Deletes at most `max_entries` of the oldest entries below the anchor, under a permit that
/// lives only inside this transaction.
pub(super) fn batch_in(tx: &Connection, max_entries: u64) -> Result<u64, Error> {
    let Some(anchor) = anchor_in(tx)? else {
        return Ok(0);
    };
    let below = to_i64(anchor.below_seq, "sequence number")?;
    let limit = to_i64(max_entries, "batch size")?;
    let first: Option<i64> = tx
        .prepare_cached("SELECT seq FROM events WHERE seq < ?1 ORDER BY seq ASC LIMIT 1")?
        .query_row([below], |r| r.get(0))
        .optional()?;
    let Some(first) = first else {
        return Ok(0);
    };
    // Entries are dense, so this batch deletes `[first, first + limit)` below the anchor.
    // The lower Merkle nodes over them are not stored (they are recomputed from the rows), so
    // the ones that end inside the range are stored now, in the same transaction.
    let from = to_u64(first, "sequence number")?;
    let to = from.saturating_add(max_entries).min(anchor.below_seq);
    let mut insert = tx.prepare_cached(super::INSERT_NODE)?;
    for (id, hash) in tree::nodes_to_keep(&mut super::TreeRows(tx), from, to)? {
        insert.execute(params![
            id.level,
            to_i64(id.index, "node index")?,
            hash.as_bytes()
        ])?;
    }
    // The counts behind histograms lose what is deleted, in the same transaction.
    super::counts::subtract_pruned(tx, first, to_i64(to, "sequence number")?)?;
    tx.prepare_cached("INSERT INTO prune_permit (one, below_seq) VALUES (1, ?1)")?
        .execute([below])?;
    let deleted = tx
        .prepare_cached(
            "DELETE FROM events WHERE seq IN \
             (SELECT seq FROM events WHERE seq < ?1 ORDER BY seq ASC LIMIT ?2)",
        )?
        .execute([below, limit])?;
    tx.prepare_cached("DELETE FROM prune_permit")?.execute([])?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}
