//! Reading the store in bounded chunks: each chunk is one short `Store::scan`, and the caller
//! handles the rows after the scan returned. So a slow consumer (a client downloading an
//! export, a long verification) never holds the store open for long, memory stays at one
//! chunk, and the caller may read the store again while handling a row.
//!
//! [`scan_chunked_ahead`] is the same walk with the reading on a thread of its own, one chunk
//! ahead of the caller: an export's reading and decoding of rows and its formatting of them
//! then run on two cores at once.

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

/// Reads the entries matching `filter` in `order` (at most `limit`) chunk by chunk into
/// `buffer`, handing each chunk to `take` with its scan's result (the rows read before a
/// failing one come with the failure), until the rows run out, a scan fails, or `take` stops
/// by answering `None`; otherwise it answers the buffer to read the next chunk into (emptied,
/// so that one allocation serves the whole walk: a fresh one per chunk costs page faults).
fn read_chunks(
    store: &dyn Store,
    filter: &Filter,
    order: Order,
    limit: Option<u64>,
    mut buffer: Vec<SealedEntry>,
    take: &mut dyn FnMut(Vec<SealedEntry>, Result<(), StoreError>) -> Option<Vec<SealedEntry>>,
) {
    let mut remaining = limit.unwrap_or(u64::MAX);
    let mut after: Option<u64> = None;
    while remaining > 0 {
        let ask = CHUNK_ROWS.min(remaining);
        buffer.clear();
        let scanned = store.scan(filter, order, after, Some(ask), &mut |entry| {
            buffer.push(entry);
            ControlFlow::Continue(())
        });
        let got = buffer.len() as u64;
        if let Some(last) = buffer.last() {
            after = Some(last.event.seq);
        }
        remaining = remaining.saturating_sub(got);
        let failed = scanned.is_err();
        match take(buffer, scanned) {
            Some(next) if !failed && got == ask => buffer = next,
            _ => return,
        }
    }
}

/// A buffer for one chunk.
fn chunk_buffer() -> Vec<SealedEntry> {
    Vec::with_capacity(CHUNK_ROWS as usize)
}

/// Hands one chunk's entries to `visit` (leaving `chunk` empty), then its scan's failure if
/// any: `Ok(false)` when `visit` broke off.
fn hand_over<E: From<StoreError>>(
    chunk: &mut Vec<SealedEntry>,
    scanned: Result<(), StoreError>,
    visit: &mut dyn FnMut(SealedEntry) -> Result<ControlFlow<()>, E>,
) -> Result<bool, E> {
    for entry in chunk.drain(..) {
        if visit(entry)?.is_break() {
            return Ok(false);
        }
    }
    scanned?;
    Ok(true)
}

/// Calls `visit` for every entry matching `filter` in `order` (at most `limit`), until it
/// breaks or fails.
pub fn scan_chunked<E: From<StoreError>>(
    store: &dyn Store,
    filter: &Filter,
    order: Order,
    limit: Option<u64>,
    visit: &mut dyn FnMut(SealedEntry) -> Result<ControlFlow<()>, E>,
) -> Result<(), E> {
    let mut outcome = Ok(());
    let buffer = chunk_buffer();
    read_chunks(
        store,
        filter,
        order,
        limit,
        buffer,
        &mut |mut chunk, scanned| match hand_over(&mut chunk, scanned, visit) {
            Ok(true) => Some(chunk),
            Ok(false) => None,
            Err(e) => {
                outcome = Err(e);
                None
            }
        },
    );
    outcome
}

/// Chunks read ahead of the caller by [`scan_chunked_ahead`].
const AHEAD_CHUNKS: usize = 2;

/// [`scan_chunked`] with the chunks read on a scoped thread of their own, at most
/// [`AHEAD_CHUNKS`] ahead of `visit`: the same entries in the same order, the same failure
/// after the same rows. When `visit` breaks off or fails, the reader stops after the chunk it
/// is reading. A read of at most one chunk stays on the calling thread. Chunk buffers go back
/// to the reader once handled, so the walk allocates a few of them, not one per chunk.
pub fn scan_chunked_ahead<E: From<StoreError>>(
    store: &dyn Store,
    filter: &Filter,
    order: Order,
    limit: Option<u64>,
    visit: &mut dyn FnMut(SealedEntry) -> Result<ControlFlow<()>, E>,
) -> Result<(), E> {
    if limit.is_some_and(|l| l <= CHUNK_ROWS) {
        return scan_chunked(store, filter, order, limit, visit);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(AHEAD_CHUNKS);
    let (give_back, given_back) =
        std::sync::mpsc::sync_channel::<Vec<SealedEntry>>(AHEAD_CHUNKS + 1);
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("evident-scan".to_owned())
            .spawn_scoped(scope, move || {
                // A closed channel (the caller is done) stops the reading.
                read_chunks(
                    store,
                    filter,
                    order,
                    limit,
                    chunk_buffer(),
                    &mut |chunk, scanned| {
                        tx.send((chunk, scanned)).ok()?;
                        Some(given_back.try_recv().unwrap_or_else(|_| chunk_buffer()))
                    },
                );
            });
        if reader.is_err() {
            // No thread to be had (resources): the same walk on this one.
            return scan_chunked(store, filter, order, limit, visit);
        }
        // Dropped on return, before the scope joins the reader: that is what stops it.
        let rx = rx;
        for (mut chunk, scanned) in rx.iter() {
            if !hand_over(&mut chunk, scanned, visit)? {
                break;
            }
            // Full only if the reader stopped taking buffers back: then this one just goes.
            let _ = give_back.try_send(chunk);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{FaultyStore, event_json, faulty_node, test_config};
    use evident_core::event::EventInput;

    type Walk = fn(
        &dyn Store,
        &Filter,
        Order,
        Option<u64>,
        &mut dyn FnMut(SealedEntry) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError>;

    const WALKS: [(&str, Walk); 2] = [
        ("scan_chunked", scan_chunked::<StoreError>),
        ("scan_chunked_ahead", scan_chunked_ahead::<StoreError>),
    ];

    /// A node whose log holds `n` entries (plus the node's own), behind a fault injector.
    fn filled(
        n: usize,
    ) -> (
        tempfile::TempDir,
        crate::node::Node,
        std::sync::Arc<FaultyStore>,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let (node, faulty) = faulty_node(test_config(tmp.path()));
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let inputs = chunk
                .iter()
                .map(|i| EventInput::from_json(&event_json(&format!("u{}", i % 7), "auth.login")))
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            node.sequencer().append_blocking(inputs).unwrap();
        }
        (tmp, node, faulty)
    }

    /// The seqs a walk visits, and how it ended.
    fn walk(
        walk: Walk,
        store: &dyn Store,
        filter: &Filter,
        order: Order,
        limit: Option<u64>,
        stop_after: Option<usize>,
    ) -> (Vec<u64>, Result<(), StoreError>) {
        let mut seen = Vec::new();
        let result = walk(store, filter, order, limit, &mut |entry| {
            seen.push(entry.event.seq);
            Ok(if stop_after == Some(seen.len()) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        });
        (seen, result)
    }

    /// Both walks visit exactly what one scan of the store returns, in its order, whatever the
    /// limit (within a chunk, across chunks, none), the filter and the direction.
    #[test]
    fn both_walks_visit_exactly_what_one_scan_returns() {
        let (_tmp, _node, store) = filled(3_000);
        let actor = Filter {
            actor: Some("u3".to_owned()),
            ..Filter::default()
        };
        for filter in [Filter::default(), actor] {
            for order in [Order::Ascending, Order::Descending] {
                for limit in [None, Some(10), Some(1_024), Some(1_025), Some(2_500)] {
                    let mut want = Vec::new();
                    store
                        .scan(&filter, order, None, limit, &mut |e| {
                            want.push(e.event.seq);
                            ControlFlow::Continue(())
                        })
                        .unwrap();
                    assert!(!want.is_empty());
                    for (name, w) in WALKS {
                        let (seen, result) = walk(w, &*store, &filter, order, limit, None);
                        result.unwrap();
                        assert_eq!(seen, want, "{name} {filter:?} {order:?} {limit:?}");
                    }
                }
            }
        }
    }

    /// A row that cannot be read ends both walks with its error after every row before it;
    /// a visitor that breaks off or fails ends them at once, with its own outcome.
    #[test]
    fn both_walks_stop_where_the_rows_or_the_visitor_say() {
        let (_tmp, _node, store) = filled(3_000);
        let all = Filter::default();
        *store.undecodable_seq.lock().unwrap() = Some(2_100);
        for (name, w) in WALKS {
            let (seen, result) = walk(w, &*store, &all, Order::Ascending, None, None);
            assert_eq!(seen, (0..2_100).collect::<Vec<_>>(), "{name}");
            assert!(
                matches!(
                    result,
                    Err(StoreError::Corrupt {
                        seq: Some(2_100),
                        ..
                    })
                ),
                "{name}: {result:?}"
            );
        }
        *store.undecodable_seq.lock().unwrap() = None;
        for (name, w) in WALKS {
            let (seen, result) = walk(w, &*store, &all, Order::Ascending, None, Some(1_500));
            result.unwrap();
            assert_eq!(seen, (0..1_500).collect::<Vec<_>>(), "{name}");
            let mut visited = 0;
            let result = w(&*store, &all, Order::Descending, None, &mut |_| {
                visited += 1;
                if visited == 1_200 {
                    return Err(StoreError::Backend("the visitor failed".to_owned()));
                }
                Ok(ControlFlow::Continue(()))
            });
            assert_eq!(visited, 1_200, "{name}");
            assert!(
                matches!(&result, Err(StoreError::Backend(m)) if m == "the visitor failed"),
                "{name}: {result:?}"
            );
        }
    }
}
