//! Verification of a node's stored log: walks every entry in sequence order through the core's
//! [`StreamVerifier`] with the node's seal key and every stored checkpoint trusted. The ONE
//! verification behind `GET /api/v1/verify` and `evident verify --data-dir`; it decides
//! nothing itself, the core does.
//!
//! A long log is verified in parallel: [`split_ranges`] cuts it into one range per core, each
//! range starts from an [`Anchor`] rebuilt from stored data (the predecessor entry's hash and
//! the stored Merkle nodes of the compact range), and the ranges run on scoped threads. They are
//! joined in order, and a range's verdict stands only if the range before it ended clean in
//! exactly the state this one was anchored in; where that fails (a missing entry at a boundary,
//! a tampered node hash), the walk continues single-threaded from the last state reached. So the
//! first problem reported, its sequence number and kind, and the counts are the same as a
//! single walk's; the stored anchors only ever save time, they are never trusted.

use crate::scan::scan_chunked;
use evident_core::checkpoint::Checkpoint;
use evident_core::merkle::{self, CompactRange, subtree_ids};
use evident_core::rotation::SealEpochs;
use evident_core::verify::{
    Anchor, VerifyReport, open_checkpoint_any, range_for_checkpoint, split_ranges,
};
use evident_core::{NoteVerifier, StreamVerifier, Violation};
use evident_store::{Filter, Order, Store, StoreError};
use std::ops::{ControlFlow, Range};
use std::sync::mpsc;

/// Entries read per progress callback.
pub const PROGRESS_EVERY: u64 = 10_000;

/// Fewest entries per range worth a thread of its own (a range's start-up reads one entry and
/// at most 64 node hashes; a thread costs tens of microseconds).
pub const MIN_RANGE_ENTRIES: u64 = 4096;

/// What is wrong with a stored log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The integrity core found a violation.
    #[error(transparent)]
    Violation(#[from] Violation),
    /// A stored row cannot even be decoded (corruption or tampering of the database).
    #[error("entry {}: stored row cannot be decoded: {problem}", seq.map_or("?".to_owned(), |s| s.to_string()))]
    Undecodable { seq: Option<u64>, problem: String },
    /// A stored Merkle node (of the upper levels a store keeps) is missing or is not the hash
    /// of the entries under it; `seq` is the first entry it covers.
    #[error("Merkle node (level {level}, index {index}) over entries from {seq}: {problem}")]
    NodeMismatch {
        seq: u64,
        level: u8,
        index: u64,
        problem: String,
    },
    /// A stored checkpoint row whose note does not open under the node's keys; `size` is the
    /// size the row claims, reported as the problem's `seq` as the guard's check of the rows
    /// reports it (whichever of the two finds a forged row first, it is named the same way).
    #[error("the stored checkpoint of size {size}: {violation}")]
    StoredCheckpoint { size: u64, violation: Violation },
}

/// Kind of a stored row that does not decode ([`Problem::Undecodable`]).
pub const UNDECODABLE_ENTRY: &str = "undecodable_entry";
/// Kind of a stored Merkle node that is missing or not the hash of the entries under it
/// ([`Problem::NodeMismatch`]).
pub const MERKLE_NODE_MISMATCH: &str = "merkle_node_mismatch";
/// Kind of a retention anchor that does not check ([`VerifyError::BadAnchor`], reported by
/// online verification as a finding).
pub const BAD_ANCHOR: &str = "bad_anchor";

impl Problem {
    /// The kinds only a walk over a store reports, beside the core's `Violation::KINDS`
    /// (docs/FORMAT.md §12, *Every failure a verifier reports*).
    pub const STORE_KINDS: [&'static str; 3] =
        [UNDECODABLE_ENTRY, MERKLE_NODE_MISMATCH, BAD_ANCHOR];

    /// Stable machine-readable kind (`chain_broken`, …, `undecodable_entry`).
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Violation(v) => v.kind(),
            Problem::Undecodable { .. } => UNDECODABLE_ENTRY,
            Problem::NodeMismatch { .. } => MERKLE_NODE_MISMATCH,
            Problem::StoredCheckpoint { violation, .. } => violation.kind(),
        }
    }

    /// The sequence number at which the problem shows, when known.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Problem::Violation(v) => v.seq(),
            Problem::Undecodable { seq, .. } => *seq,
            Problem::NodeMismatch { seq, .. } => Some(*seq),
            Problem::StoredCheckpoint { size, .. } => Some(*size),
        }
    }
}

/// The verdict on a stored log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Every entry from the start checked, and every trusted checkpoint matched.
    Intact(VerifyReport),
    /// The first problem found; `entries_checked` entries before it were fine.
    Broken {
        problem: Problem,
        entries_checked: u64,
    },
}

impl VerifyOutcome {
    pub fn is_intact(&self) -> bool {
        matches!(self, VerifyOutcome::Intact(_))
    }
}

/// Verification could not run at all (as opposed to finding a problem).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot start at entry {from}: the log has {size} entries")]
    StartBeyondEnd { from: u64, size: u64 },
    #[error("cannot rebuild the tree state at entry {from}: {problem}")]
    BadAnchor { from: u64, problem: String },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("a verification thread stopped unexpectedly")]
    Worker,
    /// A checkpoint given to check the log against (kept elsewhere, `index` from 1 in the
    /// order given) does not open with this node's key: bad input, not damage to the log.
    #[error("checkpoint {index} of those given does not open with this node's key: {problem}")]
    GivenCheckpoint { index: usize, problem: Violation },
}

/// Verifies the stored log from `from_seq` (default: the first entry). Starting later trusts
/// the stored chain hash and Merkle nodes just before `from_seq`; checkpoints smaller than
/// `from_seq` cannot be checked from there and are skipped. Uses one thread per core on a long
/// log.
pub fn verify_store(
    store: &dyn Store,
    seal_key: &SealEpochs,
    verifier: &[NoteVerifier],
    node_id: &str,
    from_seq: Option<u64>,
) -> Result<VerifyOutcome, VerifyError> {
    verify_store_with_progress(store, seal_key, verifier, node_id, from_seq, &mut |_| {})
}

/// [`verify_store`], calling `progress(entries_checked_so_far)` now and then (for a progress
/// bar).
pub fn verify_store_with_progress(
    store: &dyn Store,
    seal_key: &SealEpochs,
    verifier: &[NoteVerifier],
    node_id: &str,
    from_seq: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyOutcome, VerifyError> {
    verify_store_trusting(store, seal_key, verifier, node_id, from_seq, &[], progress)
}

/// [`verify_store_with_progress`] that also checks the log against `trusted_checkpoints`:
/// signed checkpoint notes kept elsewhere (by an auditor, a witness, a syslog archive). Each
/// must carry the node's signature (else `bad_checkpoint_signature`); one the walk reaches must
/// match the root there (else `root_mismatch`: the stored log was rewritten or forked), and one
/// larger than the stored log is `truncated` (its tail was cut, or it was rolled back to an
/// older copy), which the store's own checkpoints cannot show once they were cut too.
pub fn verify_store_trusting(
    store: &dyn Store,
    seal_key: &SealEpochs,
    verifier: &[NoteVerifier],
    node_id: &str,
    from_seq: Option<u64>,
    trusted_checkpoints: &[String],
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyOutcome, VerifyError> {
    let job = Job {
        store,
        seal_key,
        node_id,
        trusted: &[],
        given: trusted_checkpoints,
    };
    job.run(verifier, from_seq, Ranges::per_core(), progress)
}

/// How a verification splits the log into ranges verified at once, one thread each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranges {
    /// At most this many ranges (1: one single-threaded walk).
    pub max: usize,
    /// Each range holds at least this many entries (fewer ranges on a shorter log).
    pub min_entries: u64,
}

impl Ranges {
    /// One range per core, each of at least [`MIN_RANGE_ENTRIES`].
    pub fn per_core() -> Ranges {
        Ranges {
            max: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            min_entries: MIN_RANGE_ENTRIES,
        }
    }
}

/// [`verify_store_with_progress`] with an explicit split (for tests and benchmarks).
pub fn verify_store_in_ranges(
    store: &dyn Store,
    seal_key: &SealEpochs,
    verifier: &[NoteVerifier],
    node_id: &str,
    from_seq: Option<u64>,
    ranges: Ranges,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyOutcome, VerifyError> {
    let job = Job {
        store,
        seal_key,
        node_id,
        trusted: &[],
        given: &[],
    };
    job.run(verifier, from_seq, ranges, progress)
}

/// [`verify_store`] that also holds the log to `trusted`, checkpoints kept outside the store
/// (the node's own record of what it signed): a log shorter than one of them is truncated,
/// a different root at its size is a fork.
pub fn verify_store_against(
    store: &dyn Store,
    seal_key: &SealEpochs,
    verifier: &[NoteVerifier],
    node_id: &str,
    trusted: &[Checkpoint],
) -> Result<VerifyOutcome, VerifyError> {
    let job = Job {
        store,
        seal_key,
        node_id,
        trusted,
        given: &[],
    };
    job.run(verifier, None, Ranges::per_core(), &mut |_| {})
}

/// Verifies the stored entries after `start` (a state already verified, not read from the
/// store) to the end of the log in one walk, holding them to `trusted`. Returns the verdict
/// and where the walk stood at its end (or at the problem).
pub fn verify_from(
    store: &dyn Store,
    seal_key: &SealEpochs,
    node_id: &str,
    start: Anchor,
    trusted: &[Checkpoint],
) -> Result<(VerifyOutcome, Anchor), VerifyError> {
    let job = Job {
        store,
        seal_key,
        node_id,
        trusted: &[],
        given: &[],
    };
    let mut stream = job.stream(start);
    for checkpoint in trusted {
        stream.trust_checkpoint(checkpoint.clone());
    }
    let walk = job.walk(&mut stream, None, &mut |_| {})?;
    let position = stream.position();
    if let Some(problem) = walk.problem {
        let outcome = VerifyOutcome::Broken {
            problem,
            entries_checked: walk.checked,
        };
        return Ok((outcome, position));
    }
    let outcome = match stream.finish() {
        Ok(report) => VerifyOutcome::Intact(report),
        Err(violation) => VerifyOutcome::Broken {
            problem: violation.into(),
            entries_checked: walk.checked,
        },
    };
    Ok((outcome, position))
}

/// Entries read per batch of stored-node comparisons.
const NODE_BATCH: usize = 512;

/// Checks every stored Merkle node (level [`evident_store::tree::STORED_LEVEL`] and above)
/// completed by the entries after `start` up to `end` against the hashes recomputed from
/// those entries and `start`'s frontier: the first one missing or different, if any. The
/// entries themselves are the walk's to check.
pub fn stored_nodes_problem(
    store: &dyn Store,
    start: &Anchor,
    end: u64,
) -> Result<Option<Problem>, VerifyError> {
    let mut tree = start.tree.clone();
    let mut completed = Vec::new();
    let mut pending: Vec<(merkle::NodeId, evident_core::Hash)> = Vec::new();
    let mut found = None;
    let filter = Filter {
        from_seq: Some(start.next_seq),
        to_seq: Some(end),
        ..Filter::default()
    };
    let compare = |pending: &mut Vec<(merkle::NodeId, evident_core::Hash)>|
     -> Result<Option<Problem>, StoreError> {
        let ids: Vec<merkle::NodeId> = pending.iter().map(|(id, _)| *id).collect();
        let batch = std::mem::take(pending);
        let stored = match store.read_nodes(&ids) {
            Ok(stored) => stored,
            Err(StoreError::NotFound(what)) => {
                // One of them is missing: find which.
                for (id, _) in &batch {
                    if store.read_nodes(&[*id]).is_err() {
                        return Ok(Some(node_problem(*id, format!("missing ({what})"))));
                    }
                }
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        for ((id, want), got) in batch.iter().zip(stored) {
            if got != *want {
                return Ok(Some(node_problem(
                    *id,
                    "the stored hash is not the hash of the entries under it".to_owned(),
                )));
            }
        }
        Ok(None)
    };
    scan_chunked::<StoreError>(
        store,
        &filter,
        Order::Ascending,
        None,
        &mut |entry| -> Result<ControlFlow<()>, StoreError> {
            completed.clear();
            tree.append_leaf(entry.leaf_hash(), &mut completed);
            pending.extend(
                completed
                    .iter()
                    .filter(|(id, _)| evident_store::tree::is_stored(id)),
            );
            if pending.len() >= NODE_BATCH {
                if let Some(problem) = compare(&mut pending)? {
                    found = Some(problem);
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        },
    )?;
    if found.is_none() && !pending.is_empty() {
        found = compare(&mut pending)?;
    }
    Ok(found)
}

fn node_problem(id: merkle::NodeId, problem: String) -> Problem {
    let seq = evident_store::tree::span(id).map_or(0, |(start, _)| start);
    Problem::NodeMismatch {
        seq,
        level: id.level,
        index: id.index,
        problem,
    }
}

/// What every walk of one verification shares.
#[derive(Clone, Copy)]
struct Job<'a> {
    store: &'a dyn Store,
    seal_key: &'a SealEpochs,
    node_id: &'a str,
    /// Checkpoints kept outside the store, held to like the stored ones.
    trusted: &'a [Checkpoint],
    /// Signed checkpoint notes given by the caller, opened (after the start is known to be
    /// in the log) and then held to like `trusted`.
    given: &'a [String],
}

/// How a walk over stored entries ended (storage failures aside).
struct Walk {
    /// Entries that passed.
    checked: u64,
    /// The first problem, if any.
    problem: Option<Problem>,
}

/// One range's walk, as the thread that ran it left it.
struct RangeRun {
    /// The state the range started from (`None`: no anchor could be rebuilt from storage).
    anchor: Option<Anchor>,
    /// The walk and the verifier after it (absent without an anchor).
    walked: Option<(Walk, StreamVerifier)>,
}

impl Job<'_> {
    fn run(
        self,
        verifier: &[NoteVerifier],
        from_seq: Option<u64>,
        ranges: Ranges,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyOutcome, VerifyError> {
        // After retention pruning the log starts at the recorded anchor (see `retention_start`).
        let pruned = self.store.prune_anchor()?;
        let floor = pruned.as_ref().map_or(0, |a| a.below_seq);
        let from = from_seq.unwrap_or(0).max(floor);
        let start = match &pruned {
            Some(anchor) if from == floor => retention_start(self.store, self.seal_key, anchor)?,
            _ if from == 0 => Anchor::genesis(),
            _ => anchor_at(self.store, from)?,
        };
        let mut checkpoints = Vec::new();
        let stored = self.store.checkpoints()?;
        for row in &stored {
            if row.size < from {
                continue;
            }
            match open_checkpoint_any(&row.signed_note, verifier) {
                Ok(checkpoint) if checkpoint.size < from => {}
                Ok(checkpoint) => checkpoints.push(checkpoint),
                Err(violation) => {
                    return Ok(VerifyOutcome::Broken {
                        problem: Problem::StoredCheckpoint {
                            size: row.size,
                            violation,
                        },
                        entries_checked: 0,
                    });
                }
            }
        }
        checkpoints.extend(self.trusted.iter().filter(|c| c.size >= from).cloned());
        for (i, note) in self.given.iter().enumerate() {
            match open_checkpoint_any(note, verifier) {
                Ok(checkpoint) if checkpoint.size < from => {}
                Ok(checkpoint) => checkpoints.push(checkpoint),
                Err(problem) => {
                    return Err(VerifyError::GivenCheckpoint {
                        index: i + 1,
                        problem,
                    });
                }
            }
        }
        checkpoints.sort_by_key(|c| c.size);
        // The log's extent now (entries appended from here on are walked by the last range,
        // which runs to the end of the log as a single walk would). Read from the newest row,
        // not from the head, which refuses to load from a damaged store: finding what is wrong
        // with one is the walk's job. If even that row cannot be read, one walk finds out why.
        let Some(size) = self.newest_seq().map(|seq| seq.saturating_add(1)) else {
            return self.walk_to_end(start, &checkpoints, Totals::default(), progress);
        };
        let parts = usize::try_from(size.saturating_sub(from) / ranges.min_entries.max(1))
            .unwrap_or(usize::MAX)
            .min(ranges.max);
        let split = split_ranges(from..size, parts);
        if split.len() < 2 {
            return self.walk_to_end(start, &checkpoints, Totals::default(), progress);
        }
        self.run_ranges(start, &checkpoints, &split, progress)
    }

    /// Verifies `split` (adjacent ranges from `start`, the last one open-ended) on one thread
    /// each, then joins the results in order.
    fn run_ranges(
        self,
        start: Anchor,
        checkpoints: &[Checkpoint],
        split: &[Range<u64>],
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyOutcome, VerifyError> {
        let last = split.len() - 1;
        let mut assigned: Vec<Vec<Checkpoint>> = vec![Vec::new(); split.len()];
        for checkpoint in checkpoints {
            let at = range_for_checkpoint(split, checkpoint.size).unwrap_or(last);
            if let Some(list) = assigned.get_mut(at) {
                list.push(checkpoint.clone());
            }
        }
        let (tick, ticks) = mpsc::channel::<u64>();
        let runs: Vec<Result<RangeRun, VerifyError>> = std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(split.len());
            for (i, (range, trusted)) in split.iter().zip(assigned).enumerate() {
                let tick = tick.clone();
                let first = (i == 0).then(|| start.clone());
                let end = (i != last).then_some(range.end);
                let range_start = range.start;
                handles.push(scope.spawn(move || {
                    let anchor = match first {
                        Some(anchor) => Some(anchor),
                        // No anchor: the join falls back to a single walk from the range before.
                        None => anchor_at(self.store, range_start).ok(),
                    };
                    let Some(anchor) = anchor else {
                        return Ok(RangeRun {
                            anchor: None,
                            walked: None,
                        });
                    };
                    let mut stream = self.stream(anchor.clone());
                    for checkpoint in trusted {
                        stream.trust_checkpoint(checkpoint);
                    }
                    let mut reported = 0;
                    let walk = self.walk(&mut stream, end, &mut |checked| {
                        // The receiver lives until every range is done.
                        let _ = tick.send(checked - reported);
                        reported = checked;
                    })?;
                    Ok(RangeRun {
                        anchor: Some(anchor),
                        walked: Some((walk, stream)),
                    })
                }));
            }
            drop(tick);
            let mut total = 0;
            for delta in ticks {
                total += delta;
                progress(total);
            }
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(VerifyError::Worker)))
                .collect()
        });

        // Join in order. `state` is where the single walk would stand after the ranges so far.
        let mut totals = Totals::default();
        let mut state = start;
        for (i, run) in runs.into_iter().enumerate() {
            let run = run?;
            let joined = run.anchor.as_ref() == Some(&state);
            let walked = match run.walked {
                Some(walked) if joined => walked,
                // This range did not start where the one before ended: walk on from there.
                _ => {
                    let later: Vec<Checkpoint> = checkpoints
                        .iter()
                        .filter(|c| c.size > state.next_seq)
                        .cloned()
                        .collect();
                    return self.walk_to_end(state, &later, totals, progress);
                }
            };
            let (walk, stream) = walked;
            if let Some(problem) = walk.problem {
                return Ok(VerifyOutcome::Broken {
                    problem,
                    entries_checked: totals.entries + walk.checked,
                });
            }
            let position = stream.position();
            if i == last {
                return match stream.finish() {
                    Ok(report) => {
                        totals.add(&report);
                        Ok(VerifyOutcome::Intact(totals.report(&position)))
                    }
                    Err(violation) => Ok(VerifyOutcome::Broken {
                        problem: violation.into(),
                        entries_checked: totals.entries + walk.checked,
                    }),
                };
            }
            // Not the end of the log: checkpoints past this range belong to the next ones.
            totals.add(&stream.report_so_far());
            state = position;
        }
        // Unreachable: the last range returns above.
        Err(VerifyError::Worker)
    }

    /// One walk from `start` to the end of the log, trusting `checkpoints`: the whole
    /// verification when the log is short, and the rest of it when ranges did not join.
    fn walk_to_end(
        self,
        start: Anchor,
        checkpoints: &[Checkpoint],
        before: Totals,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyOutcome, VerifyError> {
        let mut stream = self.stream(start);
        for checkpoint in checkpoints {
            stream.trust_checkpoint(checkpoint.clone());
        }
        let walk = self.walk(&mut stream, None, &mut |checked| {
            progress(before.entries + checked)
        })?;
        let entries_checked = before.entries + walk.checked;
        if let Some(problem) = walk.problem {
            return Ok(VerifyOutcome::Broken {
                problem,
                entries_checked,
            });
        }
        let position = stream.position();
        match stream.finish() {
            Ok(report) => {
                let mut totals = before;
                totals.add(&report);
                Ok(VerifyOutcome::Intact(totals.report(&position)))
            }
            Err(violation) => Ok(VerifyOutcome::Broken {
                problem: violation.into(),
                entries_checked,
            }),
        }
    }

    /// The sequence number of the newest stored row, if one can be read.
    fn newest_seq(&self) -> Option<u64> {
        crate::scan::newest_entry(self.store)
            .ok()
            .flatten()
            .map(|entry| entry.event.seq)
    }

    fn stream(&self, start: Anchor) -> StreamVerifier {
        StreamVerifier::new(start, None, Some(self.node_id.to_owned()))
            .with_seal_epochs(self.seal_key.clone())
    }

    /// Pushes the stored entries from where `stream` stands up to `end` (exclusive; `None`: to
    /// the end of the log) until the first problem. `progress` gets the running count.
    fn walk(
        &self,
        stream: &mut StreamVerifier,
        end: Option<u64>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Walk, VerifyError> {
        let from = stream.position().next_seq;
        let filter = Filter {
            from_seq: Some(from),
            to_seq: end,
            ..Filter::default()
        };
        let mut checked = 0u64;
        let mut next_seq = from;
        let mut found: Option<Violation> = None;
        let scanned = scan_chunked(
            self.store,
            &filter,
            Order::Ascending,
            None,
            &mut |entry| -> Result<ControlFlow<()>, StoreError> {
                let seq = entry.event.seq;
                match stream.push(&entry) {
                    Ok(()) => {
                        checked += 1;
                        next_seq = seq.saturating_add(1);
                        if checked % PROGRESS_EVERY == 0 {
                            progress(checked);
                        }
                        Ok(ControlFlow::Continue(()))
                    }
                    Err(v) => {
                        found = Some(v);
                        Ok(ControlFlow::Break(()))
                    }
                }
            },
        );
        progress(checked);
        if let Some(violation) = found {
            return Ok(Walk {
                checked,
                problem: Some(violation.into()),
            });
        }
        match scanned {
            Ok(()) => Ok(Walk {
                checked,
                problem: None,
            }),
            Err(StoreError::Corrupt { seq, problem }) => Ok(Walk {
                checked,
                // Rows come in order, so an undecodable row without a number is the next one.
                problem: Some(Problem::Undecodable {
                    seq: seq.or(Some(next_seq)),
                    problem,
                }),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// Counts of the ranges joined so far.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    entries: u64,
    first_seq: Option<u64>,
    checkpoints_checked: u64,
}

impl Totals {
    fn add(&mut self, report: &VerifyReport) {
        self.entries += report.entries;
        self.first_seq = self.first_seq.or(report.first_seq);
        self.checkpoints_checked += report.checkpoints_checked;
    }

    /// The report of the whole walk, ending at `end`.
    fn report(&self, end: &Anchor) -> VerifyReport {
        VerifyReport {
            entries: self.entries,
            first_seq: self.first_seq,
            size: end.next_seq,
            root: end.tree.root(),
            seals_checked: true,
            checkpoints_checked: self.checkpoints_checked,
        }
    }
}

/// The state a pruned log is verified from: the retention anchor's hash as the first kept
/// entry's predecessor, and the compact range of the pruned prefix from the stored Merkle
/// nodes. The anchor is checked, not trusted: its seal under the node's key, and its Merkle
/// leaf against the stored tree (appending that leaf to the stored range of `[0, k - 1)` must
/// give the stored range of `[0, k)`, which the walk then checks against the signed
/// checkpoints).
fn retention_start(
    store: &dyn Store,
    seal_key: &SealEpochs,
    anchor: &evident_store::PruneAnchor,
) -> Result<Anchor, VerifyError> {
    let k = anchor.below_seq;
    let bad = |problem: String| VerifyError::BadAnchor { from: k, problem };
    if !seal_key.check(k.saturating_sub(1), &anchor.hash, &anchor.seal) {
        return Err(bad(
            "the retention anchor's seal does not match its hash under this node's key".into(),
        ));
    }
    // Every prune is recorded by a sealed `retention.pruned` entry (kept: at or above `k`,
    // so the walk checks its seal and chain) before its anchor is stored: the anchor must be
    // the one it records, so it cannot be forged or moved forward over kept entries.
    let event_seq = anchor.event_seq;
    let mut recorded = None;
    let filter = Filter {
        from_seq: Some(event_seq),
        to_seq: Some(event_seq.saturating_add(1)),
        ..Filter::default()
    };
    store.scan(&filter, Order::Ascending, None, Some(1), &mut |entry| {
        recorded = Some(entry);
        ControlFlow::Break(())
    })?;
    let context: Option<serde_json::Value> = recorded
        .as_ref()
        .filter(|e| e.event.action == crate::retention::PRUNED_ACTION)
        .and_then(|e| serde_json::from_str(e.event.context.as_str()).ok());
    let matches = context.is_some_and(|c| {
        c["to_seq"].as_u64() == Some(k)
            && c["anchor"]["hash"].as_str() == Some(anchor.hash.to_hex().as_str())
    });
    if event_seq < k || !matches {
        return Err(bad(format!(
            "the retention anchor is not the one recorded by the retention.pruned event at \
             entry {event_seq}"
        )));
    }
    // Nodes that cannot be read here are a finding about the stored data (the pruned prefix's
    // nodes are stored by the pruner, the rest recomputed from kept rows), not an I/O failure.
    let range = |size: u64| -> Result<CompactRange, VerifyError> {
        let hashes = match store.read_nodes(&subtree_ids(0, size)) {
            Ok(hashes) => hashes,
            Err(e @ (StoreError::NotFound(_) | StoreError::Corrupt { .. })) => {
                return Err(bad(format!(
                    "the Merkle tree of the pruned prefix [0, {size}) cannot be read: {e}"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        CompactRange::from_parts(size, hashes).map_err(|e| bad(e.to_string()))
    };
    let tree = range(k)?;
    let mut before = range(k - 1)?;
    let mut leaf = [0u8; 64];
    leaf[..32].copy_from_slice(&anchor.hash.0);
    leaf[32..].copy_from_slice(&anchor.seal.0);
    before.append_leaf(evident_core::merkle::leaf_hash(&leaf), &mut Vec::new());
    if before != tree {
        return Err(bad(
            "the retention anchor's Merkle leaf does not match the stored tree".into(),
        ));
    }
    Ok(Anchor {
        next_seq: k,
        prev_hash: anchor.hash,
        tree,
    })
}

/// The chain and tree state just before entry `from`, from stored data.
pub fn anchor_at(store: &dyn Store, from: u64) -> Result<Anchor, VerifyError> {
    let mut prev = None;
    let filter = Filter {
        from_seq: Some(from - 1),
        to_seq: Some(from),
        ..Filter::default()
    };
    store.scan(&filter, Order::Ascending, None, Some(1), &mut |entry| {
        prev = Some(entry.hash);
        ControlFlow::Break(())
    })?;
    let Some(prev_hash) = prev else {
        let size = store.load_head()?.next_seq;
        return Err(VerifyError::StartBeyondEnd { from, size });
    };
    let ids = subtree_ids(0, from);
    let hashes = store.read_nodes(&ids)?;
    let tree = CompactRange::from_parts(from, hashes).map_err(|e| VerifyError::BadAnchor {
        from,
        problem: e.to_string(),
    })?;
    Ok(Anchor {
        next_seq: from,
        prev_hash,
        tree,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Node;
    use crate::test_support::{event_json, faulty_node, test_config};
    use evident_core::EventInput;

    fn filled_node(
        n: usize,
    ) -> (
        tempfile::TempDir,
        Node,
        std::sync::Arc<crate::test_support::FaultyStore>,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let config = crate::config::ServerConfig {
            checkpoint_every_events: 4,
            ..test_config(tmp.path())
        };
        let (node, faulty) = faulty_node(config);
        for i in 0..n {
            let input = EventInput::from_json(&event_json(&format!("u{i}"), "auth.login")).unwrap();
            node.sequencer().append_blocking(vec![input]).unwrap();
        }
        (tmp, node, faulty)
    }

    fn run(node: &Node, from: Option<u64>) -> Result<VerifyOutcome, VerifyError> {
        let f = node.files();
        verify_store(
            &**node.store(),
            f.seal_epochs(),
            f.verifiers(),
            f.node_id(),
            from,
        )
    }

    #[test]
    fn an_intact_log_verifies_with_its_checkpoints() {
        let (_tmp, node, _) = filled_node(10);
        match run(&node, None).unwrap() {
            VerifyOutcome::Intact(report) => {
                assert_eq!(report.entries, 10);
                assert_eq!(report.size, 10);
                assert!(report.seals_checked);
                assert_eq!(report.checkpoints_checked, 2);
            }
            other => panic!("{other:?}"),
        }
        node.shutdown();
    }

    #[test]
    fn a_tampered_row_is_reported_at_its_seq() {
        let (_tmp, node, faulty) = filled_node(10);
        *faulty.tamper_seq.lock().unwrap() = Some(6);
        match run(&node, None).unwrap() {
            VerifyOutcome::Broken {
                problem,
                entries_checked,
            } => {
                assert_eq!(problem.kind(), "chain_broken");
                assert_eq!(problem.seq(), Some(6));
                assert_eq!(entries_checked, 6);
            }
            other => panic!("{other:?}"),
        }
        node.shutdown();
    }

    #[test]
    fn an_undecodable_row_is_reported_at_its_seq() {
        let (_tmp, node, faulty) = filled_node(5);
        *faulty.undecodable_seq.lock().unwrap() = Some(3);
        match run(&node, None).unwrap() {
            VerifyOutcome::Broken {
                problem,
                entries_checked,
            } => {
                assert_eq!(problem.kind(), "undecodable_entry");
                assert_eq!(problem.seq(), Some(3));
                assert_eq!(entries_checked, 3);
            }
            other => panic!("{other:?}"),
        }
        node.shutdown();
    }

    #[test]
    fn verification_can_start_part_way() {
        let (_tmp, node, _) = filled_node(10);
        match run(&node, Some(5)).unwrap() {
            VerifyOutcome::Intact(report) => {
                assert_eq!(report.entries, 5);
                assert_eq!(report.first_seq, Some(5));
                assert_eq!(report.size, 10);
                // Only the size-8 checkpoint lies past entry 5.
                assert_eq!(report.checkpoints_checked, 1);
            }
            other => panic!("{other:?}"),
        }
        let err = run(&node, Some(11)).unwrap_err();
        assert!(
            matches!(err, VerifyError::StartBeyondEnd { from: 11, size: 10 }),
            "{err}"
        );
        node.shutdown();
    }

    // ---- parallel verification: the same verdict as one walk ----

    use evident_core::event::Millis;
    use evident_core::merkle::NodeId;
    use evident_core::{ChainHead, Hash, SealedEntry};
    use evident_store::{KeyRecord, StoredCheckpoint};
    use std::sync::Arc;

    /// One way to damage what the store hands back.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Damage {
        /// The entry's actor id is changed (its stored hash no longer matches).
        Actor(u64),
        /// The stored seal has a bit flipped.
        Seal(u64),
        /// The stored hash has a bit flipped.
        StoredHash(u64),
        /// The row is gone.
        Missing(u64),
        /// Reading the row fails as undecodable, naming its seq or not.
        Undecodable { seq: u64, named: bool },
        /// Every stored Merkle node hash read has a bit flipped (anchors are wrong).
        Nodes,
        /// The signed note of the checkpoint of this size is altered.
        CheckpointNote(u64),
    }

    /// A store that reads through to a real one and applies one [`Damage`].
    struct Damaged {
        inner: Arc<dyn Store>,
        damage: Damage,
    }

    impl Store for Damaged {
        fn load_head(&self) -> Result<ChainHead, StoreError> {
            self.inner.load_head()
        }
        fn append(
            &self,
            entries: &[SealedEntry],
            nodes: &[(NodeId, Hash)],
        ) -> Result<(), StoreError> {
            self.inner.append(entries, nodes)
        }
        fn append_on(
            &self,
            prev_hash: &Hash,
            entries: &[SealedEntry],
            nodes: &[(NodeId, Hash)],
        ) -> Result<(), StoreError> {
            self.inner.append_on(prev_hash, entries, nodes)
        }
        fn scan(
            &self,
            filter: &Filter,
            order: Order,
            after_seq: Option<u64>,
            limit: Option<u64>,
            visit: &mut dyn FnMut(SealedEntry) -> ControlFlow<()>,
        ) -> Result<(), StoreError> {
            let mut delivered = 0u64;
            let mut failed = None;
            // One more row than asked, so that a missing row does not shorten the page.
            self.inner.scan(
                filter,
                order,
                after_seq,
                limit.map(|l| l + 1),
                &mut |mut entry| {
                    if limit.is_some_and(|l| delivered >= l) {
                        return ControlFlow::Break(());
                    }
                    let seq = entry.event.seq;
                    match self.damage {
                        Damage::Actor(s) if s == seq => entry.event.actor.id.push_str("-edited"),
                        Damage::Seal(s) if s == seq => entry.seal.0[7] ^= 1,
                        Damage::StoredHash(s) if s == seq => entry.hash.0[31] ^= 0x80,
                        Damage::Missing(s) if s == seq => return ControlFlow::Continue(()),
                        Damage::Undecodable { seq: s, named } if s == seq => {
                            failed = Some(named.then_some(seq));
                            return ControlFlow::Break(());
                        }
                        _ => {}
                    }
                    delivered += 1;
                    visit(entry)
                },
            )?;
            match failed {
                Some(seq) => Err(StoreError::Corrupt {
                    seq,
                    problem: "injected".to_owned(),
                }),
                None => Ok(()),
            }
        }
        fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
            self.inner.count(filter)
        }
        fn histogram(
            &self,
            filter: &Filter,
            buckets: &evident_store::Buckets,
        ) -> Result<Vec<evident_store::SeverityCounts>, StoreError> {
            self.inner.histogram(filter, buckets)
        }
        fn advance_counts(&self, max_entries: u64) -> Result<u64, StoreError> {
            self.inner.advance_counts(max_entries)
        }
        fn read_nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
            let mut hashes = self.inner.read_nodes(ids)?;
            if self.damage == Damage::Nodes {
                for h in &mut hashes {
                    h.0[0] ^= 1;
                }
            }
            Ok(hashes)
        }
        fn put_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
            self.inner.put_checkpoint(checkpoint)
        }
        fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
            self.inner.latest_checkpoint()
        }
        fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
            self.inner.checkpoint_at(size)
        }
        fn consumer_cursor(
            &self,
            consumer: &str,
        ) -> Result<Option<evident_store::ConsumerCursor>, StoreError> {
            self.inner.consumer_cursor(consumer)
        }
        fn consumer_cursors(&self) -> Result<Vec<evident_store::ConsumerCursor>, StoreError> {
            self.inner.consumer_cursors()
        }
        fn save_consumer_cursor(
            &self,
            cursor: &evident_store::ConsumerCursor,
        ) -> Result<(), StoreError> {
            self.inner.save_consumer_cursor(cursor)
        }
        fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
            let mut all = self.inner.checkpoints()?;
            for c in &mut all {
                if self.damage == Damage::CheckpointNote(c.size) {
                    // The note's second line is the size: claim one entry more.
                    c.signed_note = c.signed_note.replacen(
                        &format!("\n{}\n", c.size),
                        &format!("\n{}\n", c.size + 1),
                        1,
                    );
                }
            }
            Ok(all)
        }
        fn put_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
            self.inner.put_key(key)
        }
        fn key_by_hash(&self, secret_hash: &Hash) -> Result<Option<KeyRecord>, StoreError> {
            self.inner.key_by_hash(secret_hash)
        }
        fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
            self.inner.keys()
        }
        fn revoke_key(&self, id: &str, at: Millis) -> Result<(), StoreError> {
            self.inner.revoke_key(id, at)
        }
        fn set_key_expiry(&self, id: &str, expires_at: Millis) -> Result<(), StoreError> {
            self.inner.set_key_expiry(id, expires_at)
        }
        fn touch_key(&self, id: &str, at: Millis, ip: Option<&str>) -> Result<(), StoreError> {
            self.inner.touch_key(id, at, ip)
        }
    }

    /// Verifies `store` as one walk and in `ranges` ranges (at least one entry each).
    fn both(
        node: &Node,
        store: &dyn Store,
        from: Option<u64>,
        ranges: usize,
    ) -> (VerifyOutcome, VerifyOutcome) {
        let f = node.files();
        let verifier = f.verifier();
        let go = |ranges| {
            let mut last_progress = 0;
            let outcome = verify_store_in_ranges(
                store,
                f.seal_epochs(),
                std::slice::from_ref(&verifier),
                f.node_id(),
                from,
                Ranges {
                    max: ranges,
                    min_entries: 1,
                },
                &mut |n| last_progress = n,
            )
            .unwrap();
            if let VerifyOutcome::Intact(report) = &outcome {
                assert_eq!(last_progress, report.entries);
            }
            outcome
        };
        (go(1), go(ranges))
    }

    /// 40 entries, checkpoints every 4; in 3 ranges the boundaries are 14 and 27, in 2 it is 20.
    const N: u64 = 40;

    #[test]
    fn ranges_verify_an_intact_log_like_one_walk() {
        let (_tmp, node, _) = filled_node(N as usize);
        // Every checkpoint of the log signed before verifying, so both walks see the same ones.
        assert_eq!(
            node.sequencer().force_checkpoint_blocking().unwrap().size,
            N
        );
        let store = node.store().clone();
        for ranges in [2, 3, 7, 40, 64] {
            let (one, many) = both(&node, &*store, None, ranges);
            assert_eq!(one, many, "{ranges} ranges");
            let VerifyOutcome::Intact(report) = many else {
                panic!("{many:?}");
            };
            assert_eq!(
                (report.entries, report.size, report.first_seq),
                (N, N, Some(0))
            );
            assert_eq!(report.checkpoints_checked, N / 4);
            let (one, many) = both(&node, &*store, Some(9), ranges);
            assert_eq!(one, many, "from 9, {ranges} ranges");
            assert!(one.is_intact());
        }
        // Wrong stored node hashes make every anchor wrong: the ranges do not join and the walk
        // goes on from the first range's end, to the same verdict.
        let damaged = Damaged {
            inner: store.clone(),
            damage: Damage::Nodes,
        };
        let (one, many) = both(&node, &damaged, None, 3);
        assert_eq!(one, many);
        assert!(one.is_intact(), "{one:?}");
        node.shutdown();
    }

    #[test]
    fn ranges_report_the_same_first_problem_as_one_walk() {
        let (_tmp, node, _) = filled_node(N as usize);
        // Every checkpoint of the log signed before verifying, so both walks see the same ones.
        assert_eq!(
            node.sequencer().force_checkpoint_blocking().unwrap().size,
            N
        );
        let store = node.store().clone();
        // Inside each range, and on both sides of every boundary of 2 and 3 ranges.
        let seqs = [0, 1, 5, 13, 14, 15, 19, 20, 21, 26, 27, 28, 33, 38, 39];
        let mut kinds_seen = std::collections::BTreeSet::new();
        for &seq in &seqs {
            let damages = [
                Damage::Actor(seq),
                Damage::Seal(seq),
                Damage::StoredHash(seq),
                Damage::Missing(seq),
                Damage::Undecodable { seq, named: true },
                Damage::Undecodable { seq, named: false },
            ];
            for damage in damages {
                let damaged = Damaged {
                    inner: store.clone(),
                    damage,
                };
                for ranges in [2, 3] {
                    let (one, many) = both(&node, &damaged, None, ranges);
                    assert_eq!(one, many, "{damage:?} in {ranges} ranges");
                    let VerifyOutcome::Broken {
                        problem,
                        entries_checked,
                    } = &many
                    else {
                        panic!("{damage:?}: {many:?}");
                    };
                    kinds_seen.insert(problem.kind());
                    let expected = match damage {
                        Damage::Actor(_) | Damage::StoredHash(_) => ("chain_broken", seq),
                        Damage::Seal(_) => ("seal_mismatch", seq),
                        // The last entry gone: the log ends before the checkpoint of size 40.
                        Damage::Missing(s) if s == N - 1 => ("truncated", seq),
                        Damage::Missing(_) => ("sequence_gap", seq),
                        Damage::Undecodable { .. } => ("undecodable_entry", seq),
                        _ => unreachable!(),
                    };
                    assert_eq!(
                        (problem.kind(), problem.seq()),
                        (expected.0, Some(expected.1))
                    );
                    assert_eq!(*entries_checked, seq, "{damage:?}");
                }
            }
        }
        assert_eq!(kinds_seen.len(), 5, "{kinds_seen:?}");

        // A checkpoint whose signature fails is reported before any entry, either way.
        for size in [4, 20, 40] {
            let damaged = Damaged {
                inner: store.clone(),
                damage: Damage::CheckpointNote(size),
            };
            let (one, many) = both(&node, &damaged, None, 3);
            assert_eq!(one, many);
            assert!(
                matches!(&many, VerifyOutcome::Broken { problem, entries_checked: 0 }
                    if problem.kind() == "bad_checkpoint_signature"
                        && problem.seq() == Some(size)),
                "{many:?}"
            );
        }
        node.shutdown();
    }
}
