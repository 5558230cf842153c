//! Keeps the store's event counts (behind `GET /api/v1/audit-log/histogram`) current: one task
//! that, after commits, has the store take the newly committed entries into its counts
//! ([`evident_store::Store::advance_counts`]), a bounded step at a time on a blocking thread,
//! off the append path. Like every reader of the committed log it goes by sequence number
//! from a durable position (the store's own, saved with the counts); a histogram stays exact
//! while this lags (the store reads what its counts do not cover yet), only slower.

use crate::http::AppState;
use std::time::Duration;

/// Entries per step: a step holds the writer only for its short write (a few thousand rows of
/// counts at most), so appends wait for it no longer than for a large batch.
pub const STEP_ENTRIES: u64 = 20_000;

/// Pause between rounds, so that a busy log is taken in as a few larger steps a second
/// rather than one per commit.
const ROUND_EVERY: Duration = Duration::from_millis(250);

/// Pause after a failed step before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Runs until aborted: after each commit (at most every [`ROUND_EVERY`]), steps until the
/// counts are up to date.
pub async fn run(state: AppState) {
    let mut commits = state.node().sequencer().subscribe();
    loop {
        loop {
            let store = state.store().clone();
            let step =
                tokio::task::spawn_blocking(move || store.advance_counts(STEP_ENTRIES)).await;
            match step {
                Ok(Ok(taken)) if taken == STEP_ENTRIES => continue,
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot update the event counts; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the event counts step failed; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
        tokio::time::sleep(ROUND_EVERY).await;
        if commits.changed().await.is_err() {
            return; // the sequencer is gone: the node is shutting down
        }
    }
}
