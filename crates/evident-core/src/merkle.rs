//! The RFC 6962 / RFC 9162 Merkle tree: leaf and node hashing, the compact range (the O(log n)
//! right frontier a writer keeps), and inclusion and consistency proofs. Proof generation is a
//! two-step plan (which stored nodes are needed, then assembly from their hashes) so that any
//! storage, sync or async, can back it without this crate doing I/O.

use crate::hash::Hash;

/// A complete, aligned subtree: leaves `[index << level, (index + 1) << level)`.
/// Level 0 nodes are leaf hashes. Storage keeps one hash per `NodeId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

/// Errors from tree and proof operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("consistency needs 0 < old size <= new size, got {old} and {new}")]
    BadSizes { old: u64, new: u64 },
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength { got: usize, expected: usize },
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    #[error("compact range for size {size} needs {expected} hashes, got {got}")]
    BadCompactRange { size: u64, expected: usize, got: usize },
    #[error("cannot append a level-{level} subtree at size {size}")]
    MisalignedSubtree { level: u8, size: u64 },
    #[error("expected {expected} node hashes to assemble the proof, got {got}")]
    WrongNodeCount { expected: usize, got: usize },
}

/// SHA-256(0x00 ‖ data).
pub fn leaf_hash(_data: &[u8]) -> Hash {
    todo!()
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(_left: &Hash, _right: &Hash) -> Hash {
    todo!()
}

/// Root of the empty tree: SHA-256 of no bytes.
pub fn empty_root() -> Hash {
    todo!()
}

/// The right frontier of a tree of `size` leaves: one hash per set bit of `size`, highest level
/// first (the maximal aligned subtrees covering `[0, size)`, left to right).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

impl CompactRange {
    pub fn new() -> CompactRange {
        CompactRange::default()
    }

    /// Rebuilds a frontier from stored hashes, e.g. those of [`subtree_ids`]`(0, size)`.
    pub fn from_parts(_size: u64, _hashes: Vec<Hash>) -> Result<CompactRange, MerkleError> {
        todo!()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends one leaf hash; pushes every node this completed (the leaf itself at level 0,
    /// then each parent that became complete) onto `completed`.
    pub fn append_leaf(&mut self, _leaf_hash: Hash, _completed: &mut Vec<(NodeId, Hash)>) {
        todo!()
    }

    /// Appends a complete subtree of `2^level` leaves; the size must be a multiple of `2^level`.
    pub fn append_subtree(&mut self, _level: u8, _hash: Hash) -> Result<(), MerkleError> {
        todo!()
    }

    /// The RFC 6962 root of the tree of [`Self::size`] leaves.
    pub fn root(&self) -> Hash {
        todo!()
    }
}

/// The maximal aligned complete subtrees covering `[start, end)`, left to right.
pub fn subtree_ids(_start: u64, _end: u64) -> Vec<NodeId> {
    todo!()
}

/// The stored nodes a proof needs, and how to fold them into the proof's hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofPlan {
    nodes: Vec<NodeId>,
    // How the fetched hashes fold into proof elements; private to this module.
    groups: Vec<std::ops::Range<usize>>,
}

impl ProofPlan {
    /// The nodes to fetch from storage, in this order.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Folds the fetched hashes (same order as [`Self::nodes`]) into the proof.
    pub fn assemble(&self, _hashes: &[Hash]) -> Result<Vec<Hash>, MerkleError> {
        todo!()
    }
}

/// Plan for the RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_plan(_index: u64, _size: u64) -> Result<ProofPlan, MerkleError> {
    todo!()
}

/// Plan for the RFC 9162 consistency proof from `old_size` to `new_size`.
pub fn consistency_plan(_old_size: u64, _new_size: u64) -> Result<ProofPlan, MerkleError> {
    todo!()
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    _leaf_hash: &Hash,
    _index: u64,
    _size: u64,
    _proof: &[Hash],
    _root: &Hash,
) -> Result<(), MerkleError> {
    todo!()
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    _old_size: u64,
    _old_root: &Hash,
    _new_size: u64,
    _new_root: &Hash,
    _proof: &[Hash],
) -> Result<(), MerkleError> {
    todo!()
}
