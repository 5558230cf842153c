//! The newest committed entries, kept in memory for the log's consumers: a consumer at the
//! tip of the log (the usual case: woken within milliseconds of each commit) takes them from
//! here instead of reading back and decoding what the committer has just written, once per
//! consumer. A cache of the log, not a queue: the committer puts a group here only after the
//! store committed it, nothing is ever waited for or lost, and a read this cache cannot answer
//! densely from its first seq falls back to the store.

use evident_core::SealedEntry;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// How many of the newest committed entries are kept (a few MB; about 60 ms of ingestion at
/// full speed, plenty for consumers that keep up).
pub const RECENT_CAPACITY: usize = 4096;

/// The newest committed entries, dense and in seq order.
#[derive(Debug)]
pub struct RecentEntries {
    entries: Mutex<VecDeque<Arc<SealedEntry>>>,
    capacity: usize,
}

impl Default for RecentEntries {
    fn default() -> RecentEntries {
        RecentEntries::with_capacity(RECENT_CAPACITY)
    }
}

impl RecentEntries {
    pub fn with_capacity(capacity: usize) -> RecentEntries {
        RecentEntries {
            entries: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    /// Adds a committed group (dense, in seq order). A group that does not continue what is
    /// kept (the head was reloaded from the store meanwhile) replaces it.
    pub fn push(&self, group: Vec<SealedEntry>) {
        let mut entries = self.lock();
        let continues = match (entries.back(), group.first()) {
            (Some(last), Some(first)) => last.event.seq.checked_add(1) == Some(first.event.seq),
            _ => true,
        };
        if !continues {
            entries.clear();
        }
        let skip = group.len().saturating_sub(self.capacity);
        for entry in group.into_iter().skip(skip) {
            if entries.len() == self.capacity {
                entries.pop_front();
            }
            entries.push_back(Arc::new(entry));
        }
    }

    /// Forgets everything kept (after retention pruned, or the head moved by other means).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Entries `from ..` below `size`, at most `max`, when `from` is kept here; `None` when it
    /// is not (older than what is kept, or not committed yet), so the caller reads the store.
    pub fn read(&self, from: u64, size: u64, max: usize) -> Option<Vec<SealedEntry>> {
        let shared: Vec<Arc<SealedEntry>> = {
            let entries = self.lock();
            let first = entries.front()?.event.seq;
            let offset = usize::try_from(from.checked_sub(first)?).ok()?;
            if offset >= entries.len() || from >= size {
                return None;
            }
            let below_size = usize::try_from(size - from).unwrap_or(usize::MAX);
            entries
                .iter()
                .skip(offset)
                .take(max.min(below_size))
                .cloned()
                .collect()
        };
        // Cloned outside the lock: the committer never waits on a reader's copying.
        Some(shared.iter().map(|e| SealedEntry::clone(e)).collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<SealedEntry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evident_core::{ChainHead, EventInput, SealKey};

    fn entries(n: u64) -> Vec<SealedEntry> {
        let key = SealKey::new(&[7u8; 32]).unwrap();
        let mut head = ChainHead::genesis();
        let mut completed = Vec::new();
        (0..n)
            .map(|i| {
                let json = crate::test_support::event_json(&format!("alice{i}"), "auth.login");
                let input = EventInput::from_json(&json).unwrap();
                head.append(
                    uuid::Uuid::from_u128(u128::from(i) + 1),
                    1_764_000_000_000 + i as i64,
                    "node-1",
                    "key-1",
                    input,
                    &key,
                    &mut completed,
                )
            })
            .collect()
    }

    fn seqs(read: Option<Vec<SealedEntry>>) -> Option<Vec<u64>> {
        read.map(|v| v.iter().map(|e| e.event.seq).collect())
    }

    #[test]
    fn reads_what_is_kept_below_the_committed_size_and_nothing_else() {
        let all = entries(10);
        let recent = RecentEntries::with_capacity(6);
        assert_eq!(seqs(recent.read(0, 10, 5)), None, "empty");
        recent.push(all[..3].to_vec());
        recent.push(all[3..10].to_vec());
        // Capacity 6: seqs 4..10 are kept.
        assert_eq!(
            seqs(recent.read(3, 10, 100)),
            None,
            "evicted: read the store"
        );
        assert_eq!(seqs(recent.read(4, 10, 3)), Some(vec![4, 5, 6]));
        assert_eq!(seqs(recent.read(8, 10, 100)), Some(vec![8, 9]));
        assert_eq!(
            seqs(recent.read(5, 7, 100)),
            Some(vec![5, 6]),
            "capped at size"
        );
        assert_eq!(seqs(recent.read(10, 11, 100)), None, "not committed yet");
        assert_eq!(seqs(recent.read(7, 7, 100)), None, "at the size");
        // The entries are the committed ones, whole.
        let got = recent.read(9, 10, 1).unwrap();
        assert_eq!(got[0].hash, all[9].hash);
        assert_eq!(got[0].seal, all[9].seal);
        assert_eq!(got[0].event, all[9].event);
    }

    #[test]
    fn a_group_that_does_not_continue_replaces_what_is_kept() {
        let all = entries(10);
        let recent = RecentEntries::with_capacity(100);
        recent.push(all[..4].to_vec());
        recent.push(all[6..8].to_vec());
        assert_eq!(seqs(recent.read(2, 10, 100)), None, "the old run is gone");
        assert_eq!(seqs(recent.read(6, 10, 100)), Some(vec![6, 7]));
        recent.clear();
        assert_eq!(seqs(recent.read(6, 10, 100)), None);
        // A group larger than the capacity keeps its newest entries.
        let small = RecentEntries::with_capacity(3);
        small.push(all.clone());
        assert_eq!(seqs(small.read(7, 10, 100)), Some(vec![7, 8, 9]));
        assert_eq!(seqs(small.read(6, 10, 100)), None);
    }
}
