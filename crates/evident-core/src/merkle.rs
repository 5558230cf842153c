//! The RFC 6962 / RFC 9162 Merkle tree: leaf and node hashing, the compact range (the O(log n)
//! right frontier a writer keeps), and inclusion and consistency proofs. Proof generation is a
//! two-step plan (which stored nodes are needed, then assembly from their hashes) so that any
//! storage, sync or async, can back it without this crate doing I/O.

use crate::hash::Hash;
use sha2::{Digest, Sha256};

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
    BadCompactRange {
        size: u64,
        expected: usize,
        got: usize,
    },
    #[error("cannot append a level-{level} subtree at size {size}")]
    MisalignedSubtree { level: u8, size: u64 },
    #[error("expected {expected} node hashes to assemble the proof, got {got}")]
    WrongNodeCount { expected: usize, got: usize },
}

/// SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    Hash(h.finalize().into())
}

/// The leaf hash of a log entry: SHA-256(0x00 ‖ entry hash ‖ seal), the same as
/// [`leaf_hash`] of the 64 bytes `hash ‖ seal`, without building them.
pub fn entry_leaf_hash(hash: &Hash, seal: &Hash) -> Hash {
    crate::hash::sha256_prefixed_pair(LEAF_PREFIX, &hash.0, &seal.0)
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    crate::hash::sha256_prefixed_pair(NODE_PREFIX, &left.0, &right.0)
}

/// Root of the empty tree: SHA-256 of no bytes.
pub fn empty_root() -> Hash {
    Hash::digest(&[])
}

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Folds the hashes of adjacent subtrees, largest (leftmost) first, into the hash of the range
/// they cover, as RFC 6962 pairs them: right to left. `None` for no hashes.
fn fold_right(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)))
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
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<CompactRange, MerkleError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(MerkleError::BadCompactRange {
                size,
                expected,
                got: hashes.len(),
            });
        }
        Ok(CompactRange { size, hashes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends one leaf hash; pushes every node this completed (the leaf itself at level 0,
    /// then each parent that became complete) onto `completed`.
    ///
    /// A tree of `u64::MAX` leaves cannot grow (its size would overflow); appending to it
    /// leaves it unchanged and completes nothing. Only [`Self::from_parts`] can build one.
    pub fn append_leaf(&mut self, leaf_hash: Hash, completed: &mut Vec<(NodeId, Hash)>) {
        // Only fails on a full tree, which the doc above covers.
        let _ = self.push(0, leaf_hash, Some(completed));
    }

    /// Appends a complete subtree of `2^level` leaves; the size must be a multiple of `2^level`.
    pub fn append_subtree(&mut self, level: u8, hash: Hash) -> Result<(), MerkleError> {
        self.push(level, hash, None)
    }

    fn push(
        &mut self,
        level: u8,
        hash: Hash,
        mut completed: Option<&mut Vec<(NodeId, Hash)>>,
    ) -> Result<(), MerkleError> {
        let misaligned = MerkleError::MisalignedSubtree {
            level,
            size: self.size,
        };
        let width = 1u64
            .checked_shl(u32::from(level))
            .ok_or(misaligned.clone())?;
        if self.size % width != 0 {
            return Err(misaligned);
        }
        let new_size = self.size.checked_add(width).ok_or(misaligned)?;
        let mut level = level;
        let mut hash = hash;
        let mut index = self.size >> level;
        if let Some(out) = completed.as_deref_mut() {
            out.push((NodeId { level, index }, hash));
        }
        // Each set bit of the old size at the current level is a left sibling waiting for this
        // node; merging carries upwards exactly like binary addition.
        while level < 64 && (self.size >> level) & 1 == 1 {
            let Some(left) = self.hashes.pop() else {
                // Unreachable: one hash per set bit is an invariant of every constructor.
                break;
            };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            if let Some(out) = completed.as_deref_mut() {
                out.push((NodeId { level, index }, hash));
            }
        }
        self.hashes.push(hash);
        self.size = new_size;
        Ok(())
    }

    /// The RFC 6962 root of the tree of [`Self::size`] leaves.
    pub fn root(&self) -> Hash {
        fold_right(&self.hashes).unwrap_or_else(empty_root)
    }
}

/// The maximal aligned complete subtrees covering `[start, end)`, left to right.
pub fn subtree_ids(start: u64, end: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        // The largest level both aligned at `pos` and still fitting below `end`.
        let align = pos.trailing_zeros(); // 64 when pos == 0
        let fit = 63 - (end - pos).leading_zeros();
        let level = align.min(fit);
        out.push(NodeId {
            level: level as u8,
            index: pos >> level,
        });
        pos += 1u64 << level;
    }
    out
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
    pub fn assemble(&self, hashes: &[Hash]) -> Result<Vec<Hash>, MerkleError> {
        if hashes.len() != self.nodes.len() {
            return Err(MerkleError::WrongNodeCount {
                expected: self.nodes.len(),
                got: hashes.len(),
            });
        }
        self.groups
            .iter()
            .map(|g| {
                hashes
                    .get(g.clone())
                    .and_then(fold_right)
                    .ok_or(MerkleError::WrongNodeCount {
                        expected: self.nodes.len(),
                        got: hashes.len(),
                    })
            })
            .collect()
    }

    fn push_complete(&mut self, id: NodeId) {
        let at = self.nodes.len();
        self.nodes.push(id);
        self.groups.push(at..at + 1);
    }

    fn push_range(&mut self, start: u64, end: u64) {
        let at = self.nodes.len();
        self.nodes.extend(subtree_ids(start, end));
        self.groups.push(at..self.nodes.len());
    }
}

/// One element of the path from a node up to the root of a tree of `size` leaves: the sibling
/// at `level`, whose leaves start at `start`; it is complete unless it is cut by the right edge.
struct Sibling {
    level: u8,
    start: u64,
    complete: bool,
}

/// The siblings of node `(level, index)` on its way up to the root of the tree of `size`
/// leaves, bottom up, as RFC 6962 includes them. The tree is seen as the perfect tree over the
/// next power of two, in which a sibling wholly beyond `size` is absent and one cut by `size`
/// stands for the range `[start, size)`. Callers ensure the node lies within `[0, size)`.
fn path(level: u8, index: u64, size: u64) -> impl Iterator<Item = Sibling> {
    // The root of the perfect tree sits at the level of the highest bit of `size - 1`.
    let top = 64 - size.saturating_sub(1).leading_zeros();
    (u32::from(level)..top).filter_map(move |l| {
        let sibling = (index >> (l - u32::from(level))) ^ 1;
        // No overflow: the sibling lies in the perfect tree of 2^top <= 2^64 leaves.
        let start = sibling << l;
        (start < size).then(|| Sibling {
            level: l as u8,
            start,
            complete: size - start >= 1u64 << l,
        })
    })
}

fn plan_path(plan: &mut ProofPlan, level: u8, index: u64, size: u64) {
    for s in path(level, index, size) {
        if s.complete {
            plan.push_complete(NodeId {
                level: s.level,
                index: s.start >> s.level,
            });
        } else {
            plan.push_range(s.start, size);
        }
    }
}

/// Plan for the RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_plan(index: u64, size: u64) -> Result<ProofPlan, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut plan = ProofPlan {
        nodes: Vec::new(),
        groups: Vec::new(),
    };
    plan_path(&mut plan, 0, index, size);
    Ok(plan)
}

/// The largest complete aligned subtree ending at the old tree's right edge: the node the
/// consistency proof starts from.
fn consistency_start(old_size: u64) -> (u8, u64) {
    let level = old_size.trailing_zeros();
    (level as u8, (old_size - 1) >> level)
}

fn check_consistency_sizes(old_size: u64, new_size: u64) -> Result<(), MerkleError> {
    if old_size == 0 || old_size > new_size {
        return Err(MerkleError::BadSizes {
            old: old_size,
            new: new_size,
        });
    }
    Ok(())
}

/// Plan for the RFC 9162 consistency proof from `old_size` to `new_size`.
pub fn consistency_plan(old_size: u64, new_size: u64) -> Result<ProofPlan, MerkleError> {
    check_consistency_sizes(old_size, new_size)?;
    let mut plan = ProofPlan {
        nodes: Vec::new(),
        groups: Vec::new(),
    };
    if old_size == new_size {
        return Ok(plan);
    }
    let (level, index) = consistency_start(old_size);
    // When the old tree is itself that subtree, the verifier already holds its hash.
    if index != 0 {
        plan.push_complete(NodeId { level, index });
    }
    plan_path(&mut plan, level, index, new_size);
    Ok(plan)
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let expected = path(0, index, size).count();
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    }
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return Err(MerkleError::RootMismatch);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            // Climb past the levels where this node has no right sibling.
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn == 0 && r == *root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    check_consistency_sizes(old_size, new_size)?;
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength {
                got: proof.len(),
                expected: 0,
            });
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        };
    }
    let (level, index) = consistency_start(old_size);
    let first_given = usize::from(index != 0);
    let expected = first_given + path(level, index, new_size).count();
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    }
    // A power-of-two old tree is the starting node itself, so its root opens the path.
    let (first, rest) = if first_given == 0 {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some(split) => split,
            None => return Err(MerkleError::RootMismatch),
        }
    };
    let mut fn_ = old_size - 1;
    let mut sn = new_size - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in rest {
        if sn == 0 {
            return Err(MerkleError::RootMismatch);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if fr == *old_root && sr == *new_root && sn == 0 {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}
