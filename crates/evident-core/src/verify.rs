//! The streaming verifier: walks entries in sequence order in constant memory and reports the
//! first problem with its sequence number and kind, or success with counts. The one verifier
//! used by the server, the CLI and the tests.

use crate::chain::{SealKey, SealedEntry};
use crate::checkpoint::Checkpoint;
use crate::hash::Hash;
use crate::merkle::CompactRange;
use crate::note::NoteVerifier;

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
    WrongNode { seq: u64, expected: String, found: String },
    #[error("Merkle root of the first {size} entries does not match the signed checkpoint")]
    RootMismatch { size: u64 },
    #[error("checkpoint signature invalid: {reason}")]
    BadCheckpointSignature { reason: String },
    #[error("log ends at size {size} but a trusted checkpoint has size {checkpoint_size}: truncation or rollback")]
    Truncated { size: u64, checkpoint_size: u64 },
}

impl Violation {
    /// The sequence number at which the problem shows, when there is one.
    pub fn seq(&self) -> Option<u64> {
        todo!()
    }
    /// A stable machine-readable name of the kind (`chain_broken`, `seal_mismatch`, …).
    pub fn kind(&self) -> &'static str {
        todo!()
    }
}

/// Where verification starts: genesis, or a recorded anchor (after pruning).
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
pub struct StreamVerifier {}

impl StreamVerifier {
    /// `seal_key`: check seals when the node secret is at hand (online); `None` offline.
    /// `node_id`: when set, every entry must carry it.
    pub fn new(_start: Anchor, _seal_key: Option<SealKey>, _node_id: Option<String>) -> StreamVerifier {
        todo!()
    }

    /// Adds a checkpoint (already opened) whose root must match when the walk reaches its size.
    pub fn trust_checkpoint(&mut self, _checkpoint: Checkpoint) {
        todo!()
    }

    /// Opens a signed checkpoint with `verifier` and trusts it.
    pub fn trust_signed_checkpoint(&mut self, _signed_note: &str, _verifier: &NoteVerifier) -> Result<(), Violation> {
        todo!()
    }

    /// Checks the next entry.
    pub fn push(&mut self, _entry: &SealedEntry) -> Result<(), Violation> {
        todo!()
    }

    /// Ends the walk: any trusted checkpoint larger than what was seen is a truncation.
    pub fn finish(self) -> Result<VerifyReport, Violation> {
        todo!()
    }
}
