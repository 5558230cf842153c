//! The streaming verifier: walks entries in sequence order in constant memory and reports the
//! first problem with its sequence number and kind, or success with counts. The one verifier
//! used by the server, the CLI and the tests.
//!
//! Per entry, in this order: the sequence number (dense, from the anchor), the node, the hash
//! chain (the stored hash is recomputed from the predecessor and the canonical bytes), the seal
//! (when the node secret is at hand), then the leaf is appended to the Merkle frontier and every
//! trusted checkpoint whose size the walk has just reached has its root compared. State is the
//! frontier (O(log n) hashes), the last hash, one reusable encode buffer and the checkpoints
//! not yet reached.
//!
//! Parallel verification (threads are the caller's business: this crate spawns none) splits
//! the log with [`split_ranges`], starts one verifier per range from an [`Anchor`] rebuilt from
//! stored data, and joins the ranges in order: a range's result stands only if the range
//! before it ended clean exactly where it starts and in the state it was anchored in
//! ([`StreamVerifier::position`] equals the next range's anchor). The first range that breaks
//! under that rule holds the first problem of the whole log, as a single walk would find it.

use crate::chain::{SealKey, SealedEntry};
use crate::checkpoint::Checkpoint;
use crate::hash::Hash;
use crate::merkle::CompactRange;
use crate::note::NoteVerifier;
use crate::rotation::SealEpochs;
use std::ops::Range;

/// The first problem found, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("entry {seq}: hash chain broken (stored hash does not match the recomputed one)")]
    ChainBroken { seq: u64 },
    #[error("entry {seq}: seal does not match (HMAC over the entry hash)")]
    SealMismatch { seq: u64 },
    #[error("entry {expected} missing: next entry present is {found}")]
    SequenceGap { expected: u64, found: u64 },
    #[error("entry {seq} appears twice")]
    DuplicateSequence { seq: u64 },
    #[error("entry {found} out of order: expected {expected}")]
    OutOfOrder { expected: u64, found: u64 },
    #[error("entry {seq}: recorded by node {found:?}, expected {expected:?}")]
    WrongNode {
        seq: u64,
        expected: String,
        found: String,
    },
    #[error("Merkle root of the first {size} entries does not match the signed checkpoint")]
    RootMismatch { size: u64 },
    #[error("checkpoint signature invalid: {reason}")]
    BadCheckpointSignature { reason: String },
    #[error("export header signature invalid: {reason}")]
    BadHeaderSignature { reason: String },
    #[error(
        "log ends at size {size} but a trusted checkpoint has size {checkpoint_size}: entries \
         were truncated or the log rolled back, or this copy is older than that checkpoint"
    )]
    Truncated { size: u64, checkpoint_size: u64 },
    /// An entry of a filtered export that the filter stated in its signed header does not
    /// keep (`param` is the first query parameter it fails): a genuine entry spliced in.
    #[error("entry {seq} does not match the export's filter (parameter {param})")]
    OutsideFilter { seq: u64, param: String },
    /// An export whose signed header states no filter leaves out entry `seq`, which its
    /// query selects (entries were removed from the file).
    #[error(
        "entry {seq} is not in the export, but the export's query (no filter) selects every \
         entry of the checkpoint's tree from its first entry on"
    )]
    OmittedEntry { seq: u64 },
    /// The export header's consistency proof does not lead from its own older tree (size
    /// `from_size`, root `from_root`) to the export's checkpoint.
    #[error(
        "the header's consistency proof does not connect the tree of size {from_size} it \
         names to the checkpoint of size {size}"
    )]
    BadConsistencyProof { from_size: u64, size: u64 },
    /// A signing-key rotation event (docs/FORMAT.md §18) that is malformed or not signed by
    /// the old key it names.
    #[error("entry {seq}: signing-key rotation refused: {reason}")]
    BadKeyRotation { seq: u64, reason: String },
    /// A seal-key rotation event that is malformed or disagrees with the seal epochs the
    /// verifier holds, an epoch boundary without its event, or an entry of an epoch whose
    /// secret the verifier lacks.
    #[error("entry {seq}: seal-key epoch problem: {reason}")]
    BadSealRotation { seq: u64, reason: String },
}

impl Violation {
    /// The sequence number at which the problem shows, when there is one: the entry at fault,
    /// or for a gap or misordering the entry that should have come next, or for a truncation
    /// the first missing entry. A root mismatch or a bad signature names no single entry.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Violation::ChainBroken { seq }
            | Violation::SealMismatch { seq }
            | Violation::DuplicateSequence { seq }
            | Violation::WrongNode { seq, .. }
            | Violation::OutsideFilter { seq, .. }
            | Violation::OmittedEntry { seq }
            | Violation::BadKeyRotation { seq, .. }
            | Violation::BadSealRotation { seq, .. } => Some(*seq),
            Violation::SequenceGap { expected, .. } | Violation::OutOfOrder { expected, .. } => {
                Some(*expected)
            }
            Violation::Truncated { size, .. } => Some(*size),
            Violation::RootMismatch { .. }
            | Violation::BadCheckpointSignature { .. }
            | Violation::BadHeaderSignature { .. }
            | Violation::BadConsistencyProof { .. } => None,
        }
    }

    /// A stable machine-readable name of the kind (`chain_broken`, `seal_mismatch`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::ChainBroken { .. } => "chain_broken",
            Violation::SealMismatch { .. } => "seal_mismatch",
            Violation::SequenceGap { .. } => "sequence_gap",
            Violation::DuplicateSequence { .. } => "duplicate_sequence",
            Violation::OutOfOrder { .. } => "out_of_order",
            Violation::WrongNode { .. } => "wrong_node",
            Violation::RootMismatch { .. } => "root_mismatch",
            Violation::BadCheckpointSignature { .. } => "bad_checkpoint_signature",
            Violation::BadHeaderSignature { .. } => "bad_header_signature",
            Violation::Truncated { .. } => "truncated",
            Violation::OutsideFilter { .. } => "outside_filter",
            Violation::OmittedEntry { .. } => "omitted_entry",
            Violation::BadConsistencyProof { .. } => "bad_consistency_proof",
            Violation::BadKeyRotation { .. } => "bad_key_rotation",
            Violation::BadSealRotation { .. } => "bad_seal_rotation",
        }
    }

    /// Every kind name, in declaration order.
    pub const KINDS: [&'static str; 15] = [
        "chain_broken",
        "seal_mismatch",
        "sequence_gap",
        "duplicate_sequence",
        "out_of_order",
        "wrong_node",
        "root_mismatch",
        "bad_checkpoint_signature",
        "bad_header_signature",
        "truncated",
        "outside_filter",
        "omitted_entry",
        "bad_consistency_proof",
        "bad_key_rotation",
        "bad_seal_rotation",
    ];
}

/// Where verification starts: genesis, or a recorded anchor (after pruning).
///
/// `tree` must be the frontier of the first `next_seq` leaves (`tree.size() == next_seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub next_seq: u64,
    pub prev_hash: Hash,
    pub tree: CompactRange,
}

impl Anchor {
    pub fn genesis() -> Anchor {
        Anchor {
            next_seq: 0,
            prev_hash: crate::chain::GENESIS_PREV_HASH,
            tree: CompactRange::new(),
        }
    }
}

/// What a successful run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub first_seq: Option<u64>,
    /// Tree size after the last entry (one past the last sequence number).
    pub size: u64,
    pub root: Hash,
    pub seals_checked: bool,
    pub checkpoints_checked: u64,
}

/// Constant-memory verifier fed one entry at a time.
///
/// Trusted checkpoints smaller than the anchor's size cannot be checked by the walk (their
/// leaves were pruned before the anchor) and are ignored; so are checkpoints trusted after the
/// walk has already passed their size. Those are the business of consistency proofs.
pub struct StreamVerifier {
    next_seq: u64,
    prev_hash: Hash,
    tree: CompactRange,
    seals: Option<SealEpochs>,
    node_id: Option<String>,
    entries: u64,
    first_seq: Option<u64>,
    checkpoints_checked: u64,
    // Checkpoints not reached yet, largest size first so the next one due is at the end.
    pending: Vec<Checkpoint>,
    // Reused for every entry: the canonical encoding.
    buf: Vec<u8>,
}

impl StreamVerifier {
    /// `seal_key`: check seals when the node secret is at hand (online); `None` offline.
    /// `node_id`: when set, every entry must carry it.
    pub fn new(
        start: Anchor,
        seal_key: Option<SealKey>,
        node_id: Option<String>,
    ) -> StreamVerifier {
        StreamVerifier {
            next_seq: start.next_seq,
            prev_hash: start.prev_hash,
            tree: start.tree,
            seals: seal_key.map(SealEpochs::single),
            node_id,
            entries: 0,
            first_seq: None,
            checkpoints_checked: 0,
            pending: Vec::new(),
            buf: Vec::with_capacity(1024),
        }
    }

    /// Checks seals with the secret of each entry's seal-key epoch (a log whose seal key was
    /// rotated, docs/FORMAT.md §18) instead of one secret.
    pub fn with_seal_epochs(mut self, epochs: SealEpochs) -> StreamVerifier {
        self.seals = Some(epochs);
        self
    }

    /// Adds a checkpoint (already opened) whose root must match when the walk reaches its size.
    pub fn trust_checkpoint(&mut self, checkpoint: Checkpoint) {
        if checkpoint.size < self.tree.size() {
            return;
        }
        let at = self.pending.partition_point(|c| c.size > checkpoint.size);
        self.pending.insert(at, checkpoint);
    }

    /// Opens a signed checkpoint with `verifier` and trusts it.
    pub fn trust_signed_checkpoint(
        &mut self,
        signed_note: &str,
        verifier: &NoteVerifier,
    ) -> Result<(), Violation> {
        self.trust_checkpoint(open_checkpoint(signed_note, verifier)?);
        Ok(())
    }

    /// Checks the next entry.
    pub fn push(&mut self, entry: &SealedEntry) -> Result<(), Violation> {
        // A checkpoint of exactly the starting size is due before any leaf is added.
        self.check_due()?;
        let event = &entry.event;
        let seq = event.seq;
        if seq != self.next_seq {
            return Err(self.sequence_violation(seq));
        }
        if let Some(expected) = &self.node_id {
            if *expected != event.node_id {
                return Err(Violation::WrongNode {
                    seq,
                    expected: expected.clone(),
                    found: event.node_id.clone(),
                });
            }
        }
        let hash = crate::chain::recompute_hash(&self.prev_hash, event, &mut self.buf);
        if hash != entry.hash {
            return Err(Violation::ChainBroken { seq });
        }
        if let Some(seals) = &self.seals {
            match seals.epoch_for(seq) {
                Some(epoch) if epoch.key.check(&hash, &entry.seal) => {}
                Some(_) => return Err(Violation::SealMismatch { seq }),
                None => {
                    return Err(Violation::BadSealRotation {
                        seq,
                        reason: "no seal secret of this entry's epoch is at hand".to_owned(),
                    });
                }
            }
            seals
                .check_boundary(event)
                .map_err(|e| Violation::BadSealRotation {
                    seq,
                    reason: e.to_string(),
                })?;
        } else if let Err(e) = crate::rotation::SealRotation::from_event(event) {
            return Err(Violation::BadSealRotation {
                seq,
                reason: e.to_string(),
            });
        }
        check_signing_rotation(event)?;
        // The nodes this completes are not needed here (only a sequencer stores them). Only a
        // tree of u64::MAX leaves refuses a leaf, as `CompactRange::append_leaf` documents.
        let _ = self.tree.append_subtree(0, entry.leaf_hash());
        self.prev_hash = hash;
        self.next_seq = seq.saturating_add(1);
        self.entries += 1;
        if self.first_seq.is_none() {
            self.first_seq = Some(seq);
        }
        self.check_due()
    }

    /// Where the walk stands: the anchor a verifier of the entries after the last one checked
    /// starts from. Equal to the next range's anchor when both agree on the log so far.
    pub fn position(&self) -> Anchor {
        Anchor {
            next_seq: self.next_seq,
            prev_hash: self.prev_hash,
            tree: self.tree.clone(),
        }
    }

    /// What the walk has seen so far, without ending it: unlike [`Self::finish`], checkpoints
    /// not reached yet are not reported (for a walk over one range of a longer log).
    pub fn report_so_far(&self) -> VerifyReport {
        VerifyReport {
            entries: self.entries,
            first_seq: self.first_seq,
            size: self.next_seq,
            root: self.tree.root(),
            seals_checked: self.seals.is_some(),
            checkpoints_checked: self.checkpoints_checked,
        }
    }

    /// Ends the walk: any trusted checkpoint larger than what was seen is a truncation.
    pub fn finish(mut self) -> Result<VerifyReport, Violation> {
        self.check_due()?;
        if let Some(largest) = self.pending.first() {
            return Err(Violation::Truncated {
                size: self.tree.size(),
                checkpoint_size: largest.size,
            });
        }
        Ok(VerifyReport {
            entries: self.entries,
            first_seq: self.first_seq,
            size: self.next_seq,
            root: self.tree.root(),
            seals_checked: self.seals.is_some(),
            checkpoints_checked: self.checkpoints_checked,
        })
    }

    fn sequence_violation(&self, found: u64) -> Violation {
        let expected = self.next_seq;
        if found > expected {
            Violation::SequenceGap { expected, found }
        } else if expected.checked_sub(1) == Some(found) {
            Violation::DuplicateSequence { seq: found }
        } else {
            Violation::OutOfOrder { expected, found }
        }
    }

    /// Compares the root with every pending checkpoint of the current size.
    #[inline]
    fn check_due(&mut self) -> Result<(), Violation> {
        let size = self.tree.size();
        while let Some(next) = self.pending.last() {
            if next.size > size {
                break;
            }
            if next.size == size {
                if next.root != self.tree.root() {
                    return Err(Violation::RootMismatch { size });
                }
                self.checkpoints_checked += 1;
            }
            self.pending.pop();
        }
        Ok(())
    }
}

/// Refuses a signing-key rotation event that is malformed or not signed by the old key it
/// names (a self-contained check: the event carries both keys).
pub fn check_signing_rotation(event: &crate::event::Event) -> Result<(), Violation> {
    let refused = |e: crate::rotation::RotationError| Violation::BadKeyRotation {
        seq: event.seq,
        reason: e.to_string(),
    };
    match crate::rotation::SigningRotation::from_event(event).map_err(refused)? {
        Some(rotation) => rotation.check().map_err(refused),
        None => Ok(()),
    }
}

/// Opens a signed checkpoint with `verifier`, as [`StreamVerifier::trust_signed_checkpoint`]
/// does (for a caller that hands checkpoints to several verifiers).
pub fn open_checkpoint(
    signed_note: &str,
    verifier: &NoteVerifier,
) -> Result<Checkpoint, Violation> {
    Checkpoint::open(signed_note, verifier).map_err(|e| Violation::BadCheckpointSignature {
        reason: e.to_string(),
    })
}

/// [`open_checkpoint`] with every key the log has had (docs/FORMAT.md §18).
pub fn open_checkpoint_any(
    signed_note: &str,
    verifiers: &[NoteVerifier],
) -> Result<Checkpoint, Violation> {
    Checkpoint::open_any(signed_note, verifiers).map_err(|e| Violation::BadCheckpointSignature {
        reason: e.to_string(),
    })
}

/// Splits `range` into at most `parts` adjacent, non-empty ranges of near-equal length, in
/// order (none for an empty range; `parts` of 0 counts as 1).
pub fn split_ranges(range: Range<u64>, parts: usize) -> Vec<Range<u64>> {
    let len = range.end.saturating_sub(range.start);
    let parts = u64::try_from(parts.max(1)).unwrap_or(u64::MAX).min(len);
    let mut out = Vec::new();
    let mut start = range.start;
    for i in 0..parts {
        // The first `len % parts` ranges take one entry more.
        let size = len / parts + u64::from(i < len % parts);
        out.push(start..start + size);
        start += size;
    }
    out
}

/// Which range of a split verifies a checkpoint of `size`: the one whose walk reaches that
/// size, i.e. `start < size <= end`, or the first range for a checkpoint of exactly its start
/// (due before any entry is added). `None` below the first start (not checkable by the walk)
/// and beyond the last end (the caller's last range, which runs open-ended, takes those).
pub fn range_for_checkpoint(ranges: &[Range<u64>], size: u64) -> Option<usize> {
    let first = ranges.first()?;
    if size == first.start {
        return Some(0);
    }
    ranges.iter().position(|r| r.start < size && size <= r.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_evenly_and_cover_everything() {
        assert_eq!(split_ranges(0..10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(split_ranges(5..7, 4), vec![5..6, 6..7]);
        assert_eq!(split_ranges(3..3, 2), Vec::<Range<u64>>::new());
        assert_eq!(split_ranges(0..9, 0), vec![0..9]);
        for parts in 1..9 {
            for len in 0..40u64 {
                let ranges = split_ranges(7..7 + len, parts);
                assert_eq!(ranges.len() as u64, len.min(parts as u64));
                let mut at = 7;
                for r in &ranges {
                    assert_eq!(r.start, at);
                    assert!(r.end > r.start);
                    at = r.end;
                }
                if len > 0 {
                    assert_eq!(at, 7 + len);
                }
            }
        }
    }

    #[test]
    fn each_checkpoint_belongs_to_the_range_that_reaches_it() {
        let ranges = split_ranges(4..10, 2); // 4..7, 7..10
        assert_eq!(range_for_checkpoint(&ranges, 3), None);
        assert_eq!(range_for_checkpoint(&ranges, 4), Some(0));
        assert_eq!(range_for_checkpoint(&ranges, 7), Some(0));
        assert_eq!(range_for_checkpoint(&ranges, 8), Some(1));
        assert_eq!(range_for_checkpoint(&ranges, 10), Some(1));
        assert_eq!(range_for_checkpoint(&ranges, 11), None);
        assert_eq!(range_for_checkpoint(&[], 0), None);
    }

    #[test]
    fn every_kind_has_its_name_and_seq() {
        let cases = [
            (Violation::ChainBroken { seq: 3 }, Some(3)),
            (Violation::SealMismatch { seq: 4 }, Some(4)),
            (
                Violation::SequenceGap {
                    expected: 5,
                    found: 9,
                },
                Some(5),
            ),
            (Violation::DuplicateSequence { seq: 6 }, Some(6)),
            (
                Violation::OutOfOrder {
                    expected: 7,
                    found: 2,
                },
                Some(7),
            ),
            (
                Violation::WrongNode {
                    seq: 8,
                    expected: "a".into(),
                    found: "b".into(),
                },
                Some(8),
            ),
            (Violation::RootMismatch { size: 9 }, None),
            (
                Violation::BadCheckpointSignature { reason: "x".into() },
                None,
            ),
            (Violation::BadHeaderSignature { reason: "x".into() }, None),
            (
                Violation::Truncated {
                    size: 10,
                    checkpoint_size: 12,
                },
                Some(10),
            ),
            (
                Violation::OutsideFilter {
                    seq: 11,
                    param: "actor".into(),
                },
                Some(11),
            ),
            (Violation::OmittedEntry { seq: 12 }, Some(12)),
            (
                Violation::BadConsistencyProof {
                    from_size: 3,
                    size: 9,
                },
                None,
            ),
            (
                Violation::BadKeyRotation {
                    seq: 13,
                    reason: "x".into(),
                },
                Some(13),
            ),
            (
                Violation::BadSealRotation {
                    seq: 14,
                    reason: "x".into(),
                },
                Some(14),
            ),
        ];
        // Every variant has a case (KINDS is complete), in declaration order.
        assert_eq!(cases.len(), Violation::KINDS.len());
        for (i, (v, seq)) in cases.iter().enumerate() {
            assert_eq!(v.seq(), *seq, "{v}");
            assert_eq!(v.kind(), Violation::KINDS[i]);
        }
    }
}
