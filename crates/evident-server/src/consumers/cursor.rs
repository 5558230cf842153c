//! A consumer's durable cursor: its position in the committed log and its state, one row of
//! the store (`consumer_cursors`) named `<kind>:<name>`, and the reads it makes of the log
//! from there. The stored `state` holds the runner's own part (whether a lag incident is open)
//! around the consumer's, so that neither is lost across a restart.

use evident_core::SealedEntry;
use evident_core::event::Millis;
use evident_store::{ConsumerCursor, Filter, Order, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;

/// What the runner keeps in the cursor's `state` column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SavedState {
    /// When the open lag incident started (its warning event was written), if one is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lagging_since: Option<Millis>,
    /// The consumer's own state ([`super::Consumer::save_state`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
}

/// A consumer's position as loaded or to be saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Position {
    pub next_seq: u64,
    pub saved: SavedState,
}

/// The stored position of `key`, `None` for a consumer that never saved one. A state that
/// does not parse (written by hand, or by another version) is reported, not guessed at.
pub(super) fn load(store: &dyn Store, key: &str) -> Result<Option<Position>, StoreError> {
    let Some(row) = store.consumer_cursor(key)? else {
        return Ok(None);
    };
    let saved = match row.state.as_deref() {
        None => SavedState::default(),
        Some(text) => serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
            seq: None,
            problem: format!("the stored state of consumer {key:?} is not valid: {e}"),
        })?,
    };
    Ok(Some(Position {
        next_seq: row.next_seq,
        saved,
    }))
}

/// Saves `position` durably as the cursor of `key`.
pub(super) fn save(
    store: &dyn Store,
    key: &str,
    position: &Position,
    now: Millis,
) -> Result<(), StoreError> {
    let state = if position.saved == SavedState::default() {
        None
    } else {
        serde_json::to_string(&position.saved).ok()
    };
    store.save_consumer_cursor(&ConsumerCursor {
        consumer: key.to_owned(),
        next_seq: position.next_seq,
        state,
        updated_at: now,
    })
}

/// The first entry the node still keeps: 0, or the retention anchor's first kept entry.
pub fn first_kept_seq(store: &dyn Store) -> Result<u64, StoreError> {
    Ok(store.prune_anchor()?.map_or(0, |anchor| anchor.below_seq))
}

/// What a read from the cursor found.
#[derive(Debug)]
pub enum Read {
    /// Entries `from .. from + len`, dense.
    Entries(Vec<SealedEntry>),
    /// The entries from the cursor up to `kept_from` were pruned by retention before the
    /// consumer got them: it resumes at `kept_from`.
    Pruned { kept_from: u64 },
}

/// Reads at most `max` committed entries from `from`, below `size` (what is committed). A
/// hole in the stored log that retention does not explain is corruption, named by its seq.
pub(super) fn read(
    store: &dyn Store,
    from: u64,
    size: u64,
    max: usize,
) -> Result<Read, StoreError> {
    let filter = Filter {
        from_seq: Some(from),
        to_seq: Some(size),
        ..Filter::default()
    };
    let mut entries = Vec::new();
    store.scan(
        &filter,
        Order::Ascending,
        None,
        Some(max as u64),
        &mut |entry| {
            entries.push(entry);
            ControlFlow::Continue(())
        },
    )?;
    let first = entries.first().map(|e| e.event.seq);
    if first != Some(from) {
        let kept_from = first_kept_seq(store)?;
        if kept_from > from {
            return Ok(Read::Pruned { kept_from });
        }
        return Err(StoreError::Corrupt {
            seq: Some(from),
            problem: format!(
                "committed entry {from} is missing from the store (the log has {size} entries)"
            ),
        });
    }
    for (i, entry) in entries.iter().enumerate() {
        if entry.event.seq != from + i as u64 {
            return Err(StoreError::Corrupt {
                seq: Some(from + i as u64),
                problem: "the stored log has a hole here".to_owned(),
            });
        }
    }
    Ok(Read::Entries(entries))
}
