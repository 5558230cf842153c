//! Retention pruning on PostgreSQL: the node's `evident.prune_anchor` row (where its kept log
//! starts) and the one path by which old entries are ever deleted, a transaction that sets
//! `SET LOCAL evident.pruning = 'on'` (the flag the immutability triggers consult) and deletes
//! one bounded batch below the persisted anchor.

use super::{Error, backend, corrupt, hash_from, to_i64, to_u64};
use crate::{PruneAnchor, tree};
use evident_core::Hash;
use evident_core::merkle::NodeId;
use postgres::Transaction;

/// The action of the event that records a prune (see the server's retention module).
const RECORD_ACTION: &str = "retention.pruned";

const ANCHOR_COLUMNS: &str = "from_seq, below_seq, hash, seal, recorded_at, checkpoint_size, \
     checkpoint_note, started_at, event_seq";

/// The node's stored anchor, if its log was ever pruned.
pub(super) fn anchor_in(
    tx: &mut Transaction<'_>,
    node: &str,
) -> Result<Option<PruneAnchor>, Error> {
    let Some(row) = tx.query_opt(
        &format!("SELECT {ANCHOR_COLUMNS} FROM evident.prune_anchor WHERE node_id = $1"),
        &[&node],
    )?
    else {
        return Ok(None);
    };
    let fixed = |bytes: &[u8], what: &str| {
        hash_from(bytes)
            .ok_or_else(|| corrupt(None, format!("retention anchor: {what} is not 32 bytes")))
    };
    let event: Option<i64> = row.try_get(8)?;
    let event =
        event.ok_or_else(|| corrupt(None, "retention anchor without its event".to_owned()))?;
    Ok(Some(PruneAnchor {
        from_seq: to_u64(row.try_get(0)?, "retention anchor from_seq")?,
        below_seq: to_u64(row.try_get(1)?, "retention anchor below_seq")?,
        hash: fixed(row.try_get(2)?, "hash")?,
        seal: fixed(row.try_get(3)?, "seal")?,
        recorded_at: row.try_get(4)?,
        checkpoint_size: to_u64(row.try_get(5)?, "retention anchor checkpoint size")?,
        checkpoint_note: row.try_get(6)?,
        started_at: row.try_get(7)?,
        event_seq: to_u64(event, "retention anchor event seq")?,
    }))
}

/// Persists the intent to prune below `anchor.below_seq` (see [`crate::Store::begin_prune`]).
pub(super) fn begin_in(
    tx: &mut Transaction<'_>,
    node: &str,
    anchor: &PruneAnchor,
) -> Result<(), Error> {
    let current = anchor_in(tx, node)?;
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
    let event_seq = to_i64(anchor.event_seq, "sequence number")?;
    let action: Option<String> = tx
        .query_opt(
            "SELECT action FROM evident.events WHERE node_id = $1 AND seq = $2",
            &[&node, &event_seq],
        )?
        .map(|row| row.try_get(0))
        .transpose()?;
    if action.as_deref() != Some(RECORD_ACTION) {
        return Err(backend(format!(
            "entry {} is not a stored {RECORD_ACTION} event: a prune is recorded before it is \
             anchored",
            anchor.event_seq
        )));
    }
    let below = to_i64(anchor.below_seq, "sequence number")?;
    let last: Option<i64> = tx
        .query_one(
            "SELECT max(seq) FROM evident.events WHERE node_id = $1",
            &[&node],
        )?
        .try_get(0)?;
    if last.is_none_or(|last| last < below) {
        return Err(backend(format!(
            "refusing to prune below entry {below}: the newest entry is always kept"
        )));
    }
    let prev = below - 1;
    let stored = tx.query_opt(
        "SELECT hash, seal, recorded_at FROM evident.events WHERE node_id = $1 AND seq = $2",
        &[&node, &prev],
    )?;
    match stored {
        Some(row) => {
            let hash: &[u8] = row.try_get(0)?;
            let seal: &[u8] = row.try_get(1)?;
            let recorded_at: i64 = row.try_get(2)?;
            if hash_from(hash) != Some(anchor.hash)
                || hash_from(seal) != Some(anchor.seal)
                || recorded_at != anchor.recorded_at
            {
                return Err(backend(format!(
                    "the retention anchor does not match the stored entry {prev}"
                )));
            }
        }
        None => {
            return Err(backend(format!(
                "the anchor entry {prev} is not stored (pruned already?)"
            )));
        }
    }
    let cp_size = to_i64(anchor.checkpoint_size, "checkpoint size")?;
    let has_checkpoint = tx
        .query_opt(
            "SELECT 1 FROM evident.checkpoints WHERE node_id = $1 AND size = $2",
            &[&node, &cp_size],
        )?
        .is_some();
    if anchor.checkpoint_size < anchor.below_seq || !has_checkpoint {
        return Err(backend(format!(
            "the retention anchor needs a stored checkpoint of size at least {below}"
        )));
    }
    store_anchor_in(tx, node, anchor)
}

/// Writes `anchor` as the node's retention anchor (the checks are the caller's).
fn store_anchor_in(
    tx: &mut Transaction<'_>,
    node: &str,
    anchor: &PruneAnchor,
) -> Result<(), Error> {
    let from = to_i64(anchor.from_seq, "sequence number")?;
    let below = to_i64(anchor.below_seq, "sequence number")?;
    let cp_size = to_i64(anchor.checkpoint_size, "checkpoint size")?;
    let event_seq = to_i64(anchor.event_seq, "sequence number")?;
    tx.execute(
        &format!(
            "INSERT INTO evident.prune_anchor (node_id, {ANCHOR_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (node_id) DO UPDATE SET from_seq = excluded.from_seq, \
             below_seq = excluded.below_seq, hash = excluded.hash, seal = excluded.seal, \
             recorded_at = excluded.recorded_at, checkpoint_size = excluded.checkpoint_size, \
             checkpoint_note = excluded.checkpoint_note, started_at = excluded.started_at, \
             event_seq = excluded.event_seq"
        ),
        &[
            &node,
            &from,
            &below,
            &anchor.hash.as_bytes().as_slice(),
            &anchor.seal.as_bytes().as_slice(),
            &anchor.recorded_at,
            &cp_size,
            &anchor.checkpoint_note,
            &anchor.started_at,
            &event_seq,
        ],
    )?;
    Ok(())
}

/// Refuses to import into a node's log that holds any entry or anchor already.
fn refuse_unless_empty(tx: &mut Transaction<'_>, node: &str) -> Result<(), Error> {
    let entries = tx
        .query_opt(
            "SELECT 1 FROM evident.events WHERE node_id = $1 LIMIT 1",
            &[&node],
        )?
        .is_some();
    if entries || anchor_in(tx, node)?.is_some() {
        return Err(backend(format!(
            "node {node:?}'s log is not empty: a pruned log can only be imported into an empty \
             one"
        )));
    }
    Ok(())
}

/// Stores Merkle nodes of an imported log's pruned prefix (see
/// [`crate::Store::import_pruned_nodes`]).
pub(super) fn import_nodes_in(
    tx: &mut Transaction<'_>,
    node: &str,
    nodes: &[(NodeId, Hash)],
) -> Result<(), Error> {
    refuse_unless_empty(tx, node)?;
    let levels: Vec<i16> = nodes.iter().map(|(id, _)| i16::from(id.level)).collect();
    let indexes = nodes
        .iter()
        .map(|(id, _)| to_i64(id.index, "node index"))
        .collect::<Result<Vec<i64>, Error>>()?;
    let hashes: Vec<&[u8]> = nodes.iter().map(|(_, h)| h.as_bytes().as_slice()).collect();
    tx.execute(
        "INSERT INTO evident.merkle_nodes (node_id, level, idx, hash) \
         SELECT $1, * FROM unnest($2::smallint[], $3::bigint[], $4::bytea[])",
        &[&node, &levels, &indexes, &hashes],
    )?;
    Ok(())
}

/// Stores an imported log's anchor (see [`crate::Store::import_anchor`]).
pub(super) fn import_anchor_in(
    tx: &mut Transaction<'_>,
    node: &str,
    anchor: &PruneAnchor,
) -> Result<(), Error> {
    refuse_unless_empty(tx, node)?;
    if anchor.below_seq == 0 || anchor.event_seq < anchor.below_seq {
        return Err(backend(format!(
            "a retention anchor needs 1 <= below_seq ({}) <= event_seq ({})",
            anchor.below_seq, anchor.event_seq
        )));
    }
    store_anchor_in(tx, node, anchor)
}

/// Deletes at most `max_entries` of the node's oldest entries below its anchor, with the
/// pruning flag set for this transaction only.
pub(super) fn batch_in(
    tx: &mut Transaction<'_>,
    node: &str,
    max_entries: u64,
) -> Result<u64, Error> {
    let Some(anchor) = anchor_in(tx, node)? else {
        return Ok(0);
    };
    let below = to_i64(anchor.below_seq, "sequence number")?;
    let limit = to_i64(max_entries, "batch size")?;
    let first = tx.query_opt(
        "SELECT seq FROM evident.events WHERE node_id = $1 AND seq < $2 ORDER BY seq ASC LIMIT 1",
        &[&node, &below],
    )?;
    let Some(first) = first else {
        return Ok(0);
    };
    // Entries are dense, so this batch deletes `[first, first + limit)` below the anchor.
    // The lower Merkle nodes over them are not stored (they are recomputed from the rows), so
    // the ones that end inside the range are stored now, in the same transaction.
    let from = to_u64(first.try_get(0)?, "sequence number")?;
    let to = from.saturating_add(max_entries).min(anchor.below_seq);
    let keep = tree::nodes_to_keep(&mut super::TreeRows { tx, node }, from, to)?;
    if !keep.is_empty() {
        let (levels, rest): (Vec<i16>, Vec<(i64, &[u8])>) = keep
            .iter()
            .map(|(id, hash)| {
                Ok((
                    i16::from(id.level),
                    (to_i64(id.index, "node index")?, hash.as_bytes().as_slice()),
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?
            .into_iter()
            .unzip();
        let (indexes, hashes): (Vec<i64>, Vec<&[u8]>) = rest.into_iter().unzip();
        tx.execute(
            "INSERT INTO evident.merkle_nodes (node_id, level, idx, hash) \
             SELECT $1, * FROM unnest($2::smallint[], $3::bigint[], $4::bytea[])",
            &[&node, &levels, &indexes, &hashes],
        )?;
    }
    tx.batch_execute("SET LOCAL evident.pruning = 'on'")?;
    let deleted = tx.execute(
        "DELETE FROM evident.events WHERE node_id = $1 AND seq IN \
         (SELECT seq FROM evident.events WHERE node_id = $1 AND seq < $2 \
          ORDER BY seq ASC LIMIT $3)",
        &[&node, &below, &limit],
    )?;
    // Not needed past this statement; cleared so nothing later in the transaction has it.
    tx.batch_execute("SET LOCAL evident.pruning = 'off'")?;
    Ok(deleted)
}

/// Whether the connected role holds the grants pruning needs.
pub(super) fn check_permitted_in(tx: &mut Transaction<'_>) -> Result<(), Error> {
    let row = tx.query_one(
        "SELECT has_table_privilege('evident.events', 'DELETE'), \
                has_table_privilege('evident.prune_anchor', 'INSERT'), \
                has_table_privilege('evident.prune_anchor', 'UPDATE'), current_user::text",
        &[],
    )?;
    let (delete, insert, update): (bool, bool, bool) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    if delete && insert && update {
        return Ok(());
    }
    let user: String = row.try_get(3)?;
    Err(backend(format!(
        "role {user:?} may not prune: it needs DELETE on evident.events and INSERT, UPDATE on \
         evident.prune_anchor (the pruner role of the grant model, docs/STORAGE.md)"
    )))
}
