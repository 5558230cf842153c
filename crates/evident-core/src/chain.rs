//! The hash chain and the per-node HMAC seal, and [`ChainHead`], the O(log n) state a sequencer
//! keeps to append the next entry (next sequence number, last hash, Merkle frontier).

use crate::event::{Event, EventInput, Millis};
use crate::hash::Hash;
use crate::merkle::{CompactRange, NodeId};
use uuid::Uuid;

/// The predecessor hash of entry 0.
pub const GENESIS_PREV_HASH: Hash = Hash::ZERO;

/// An HMAC-SHA256 seal over an entry hash.
pub type Seal = Hash;

/// entry hash = SHA-256(prev_hash ‖ canonical bytes).
pub fn entry_hash(_prev: &Hash, _canonical: &[u8]) -> Hash {
    todo!()
}

/// A node's HMAC secret, keyed once so that sealing costs two compressions.
#[derive(Clone)]
pub struct SealKey {}

/// A seal secret shorter than 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seal secret must be at least 32 bytes, got {0}")]
pub struct WeakSealSecret(pub usize);

impl SealKey {
    pub fn new(_secret: &[u8]) -> Result<SealKey, WeakSealSecret> {
        todo!()
    }
    pub fn seal(&self, _entry_hash: &Hash) -> Seal {
        todo!()
    }
    /// Constant-time check of a seal.
    pub fn check(&self, _entry_hash: &Hash, _seal: &Seal) -> bool {
        todo!()
    }
}

/// An event with its chain hash and seal: one row of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEntry {
    pub event: Event,
    pub hash: Hash,
    pub seal: Seal,
}

impl SealedEntry {
    /// The Merkle leaf data: entry hash ‖ seal (64 bytes).
    pub fn leaf_data(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.hash.0);
        out[32..].copy_from_slice(&self.seal.0);
        out
    }
    /// RFC 6962 leaf hash of [`Self::leaf_data`].
    pub fn leaf_hash(&self) -> Hash {
        crate::merkle::leaf_hash(&self.leaf_data())
    }
}

/// What a sequencer needs to append the next entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub next_seq: u64,
    pub last_hash: Hash,
    pub tree: CompactRange,
}

impl ChainHead {
    /// The head of an empty log.
    pub fn genesis() -> ChainHead {
        ChainHead {
            next_seq: 0,
            last_hash: GENESIS_PREV_HASH,
            tree: CompactRange::new(),
        }
    }

    /// Sequences one event: assigns the next sequence number, hashes, seals, appends the leaf to
    /// the tree, and pushes every Merkle node this append completed onto `completed_nodes` (for
    /// the storage layer to keep).
    pub fn append(
        &mut self,
        _id: Uuid,
        _recorded_at: Millis,
        _node_id: &str,
        _input: EventInput,
        _key: &SealKey,
        _completed_nodes: &mut Vec<(NodeId, Hash)>,
    ) -> SealedEntry {
        todo!()
    }
}
