//! Reading the store in bounded chunks: each chunk is one short `Store::scan`, and the caller
//! handles the rows after the scan returned. So a slow consumer (a client downloading an
//! export, a long verification) never holds the store open for long, memory stays at one
//! chunk, and the caller may read the store again while handling a row.

use evident_core::SealedEntry;
use evident_store::{Filter, Order, Store, StoreError};
use std::ops::ControlFlow;

/// The newest stored row, if any: one descending scan of one row (the one reading of where
/// the stored log ends, for the node, the verifiers and the sequencer).
pub fn newest_entry(store: &dyn Store) -> Result<Option<SealedEntry>, StoreError> {
    let mut newest = None;
    store.scan(
        &Filter::default(),
        Order::Descending,
        None,
        Some(1),
        &mut |entry| {
            newest = Some(entry);
            ControlFlow::Break(())
        },
    )?;
    Ok(newest)
}

/// Rows per chunk.
pub const CHUNK_ROWS: u64 = 1024;

/// Calls `visit` for every entry matching `filter` in `order` (at most `limit`), until it
/// breaks or fails.
pub fn scan_chunked<E: From<StoreError>>(
    store: &dyn Store,
    filter: &Filter,
    order: Order,
    limit: Option<u64>,
    visit: &mut dyn FnMut(SealedEntry) -> Result<ControlFlow<()>, E>,
) -> Result<(), E> {
    let mut remaining = limit.unwrap_or(u64::MAX);
    let mut after: Option<u64> = None;
    let mut chunk: Vec<SealedEntry> = Vec::new();
    while remaining > 0 {
        let ask = CHUNK_ROWS.min(remaining);
        chunk.clear();
        let scanned = store.scan(filter, order, after, Some(ask), &mut |entry| {
            chunk.push(entry);
            ControlFlow::Continue(())
        });
        let got = chunk.len() as u64;
        if let Some(last) = chunk.last() {
            after = Some(last.event.seq);
        }
        remaining = remaining.saturating_sub(got);
        // Rows read before a failing one (an undecodable row) are still handed over, so the
        // caller sees everything up to the failure, then the failure.
        for entry in chunk.drain(..) {
            if visit(entry)?.is_break() {
                return Ok(());
            }
        }
        scanned?;
        if got < ask {
            break;
        }
    }
    Ok(())
}
