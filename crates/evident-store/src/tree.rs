//! Which Merkle node hashes a store keeps, and how it recomputes the others.
//!
//! A log of n entries has about 2n complete tree nodes. Storing each one costs a row (and an
//! index entry) per node, about two per event, which was most of the ingestion cost of both
//! backends. So a store keeps only the nodes of level [`STORED_LEVEL`] and above (subtrees of
//! 256 leaves and more: one row per 128 entries) and recomputes a lower node when asked, from the
//! entries under it (a leaf is `entry_leaf_hash(hash, seal)` of its row): at most 255 rows, all
//! in one aligned block of 256 entries.
//!
//! Pruned entries cannot be read any more, so before the pruner deletes a range of entries it
//! stores every lower node that ends inside that range ([`nodes_ending_in`]). A node is then
//! always computable: from stored nodes, from kept rows, or from both where it straddles the
//! retention boundary. Stores written before this scheme hold every node: a stored node always
//! wins, so they read the same.
//!
//! Everything here is pure: the backends supply the rows and the stored nodes.

use evident_core::Hash;
use evident_core::merkle::{CompactRange, NodeId, entry_leaf_hash, node_hash, subtree_ids};
use std::collections::HashMap;

/// The lowest tree level whose nodes a store writes at append time.
pub const STORED_LEVEL: u8 = 8;

/// Whether a node completed by an append is written to the store.
pub fn is_stored(id: &NodeId) -> bool {
    id.level >= STORED_LEVEL
}

/// The leaves `[start, end)` a node covers; `None` when the range does not fit in `u64`.
pub fn span(id: NodeId) -> Option<(u64, u64)> {
    let width = 1u64.checked_shl(u32::from(id.level))?;
    let start = id.index.checked_mul(width)?;
    Some((start, start.checked_add(width)?))
}

/// The hashes of every node of level `0..=top` lying inside `[start, end)`, computed bottom-up.
/// `start` must be aligned to `2^top`. `leaves[i]` is the leaf of entry `start + i` when its
/// row is stored; `known` holds stored nodes, which take precedence over what their children
/// give. A node neither stored nor computable (a missing leaf under it) is absent from the
/// result.
pub fn fill(
    start: u64,
    end: u64,
    top: u8,
    leaves: &[Option<Hash>],
    known: &HashMap<NodeId, Hash>,
) -> HashMap<NodeId, Hash> {
    let mut out = HashMap::new();
    let mut level_hashes: Vec<Option<Hash>> = (start..end)
        .zip(leaves.iter().copied().chain(std::iter::repeat(None)))
        .map(|(seq, leaf)| {
            known
                .get(&NodeId {
                    level: 0,
                    index: seq,
                })
                .copied()
                .or(leaf)
        })
        .collect();
    let mut base = start;
    for level in 0..=top {
        for (i, hash) in level_hashes.iter().enumerate() {
            if let Some(hash) = hash {
                out.insert(
                    NodeId {
                        level,
                        index: base + i as u64,
                    },
                    *hash,
                );
            }
        }
        if level == top {
            break;
        }
        let parent_level = level + 1;
        let parent_base = base / 2;
        level_hashes = level_hashes
            .chunks_exact(2)
            .enumerate()
            .map(|(j, pair)| {
                let id = NodeId {
                    level: parent_level,
                    index: parent_base + j as u64,
                };
                known.get(&id).copied().or(match (pair[0], pair[1]) {
                    (Some(l), Some(r)) => Some(node_hash(&l, &r)),
                    _ => None,
                })
            })
            .collect();
        base = parent_base;
    }
    out
}

/// The nodes below [`STORED_LEVEL`] whose span ends inside `(from, to]`: what the pruner stores
/// before deleting entries `[from, to)`, so that every node over them stays computable. Their
/// spans lie inside `[block_start(from), to)`.
pub fn nodes_ending_in(from: u64, to: u64) -> impl Iterator<Item = NodeId> {
    (0..STORED_LEVEL).flat_map(move |level| {
        // Node (level, i) ends at (i + 1) << level: from < end <= to.
        ((from >> level)..(to >> level)).map(move |index| NodeId { level, index })
    })
}

/// What a backend supplies to recompute nodes: reads inside its own transaction.
pub trait NodeRows {
    type Error;
    /// The stored hashes of `ids`, `None` where absent, in the order asked.
    fn stored(&mut self, ids: &[NodeId]) -> Result<Vec<Option<Hash>>, Self::Error>;
    /// The leaf hashes of entries `[start, end)`: element `i` for entry `start + i`, `None`
    /// where no row is stored (pruned).
    fn leaves(&mut self, start: u64, end: u64) -> Result<Vec<Option<Hash>>, Self::Error>;
    /// The stored nodes of levels below `below_level` whose spans lie inside `[start, end)`.
    fn stored_below(
        &mut self,
        start: u64,
        end: u64,
        below_level: u8,
    ) -> Result<HashMap<NodeId, Hash>, Self::Error>;
    /// The error for a lower node that can be neither read nor recomputed.
    fn missing(&self, id: NodeId) -> Self::Error;
}

/// The leaves of entries `[start, end)` being gathered from their rows, for
/// [`NodeRows::leaves`]: one slot per entry, `None` until its row is seen.
pub struct LeafRange {
    start: u64,
    leaves: Vec<Option<Hash>>,
}

impl LeafRange {
    /// `None` when the range is too wide to hold (it never is: at most 2^STORED_LEVEL - 1).
    pub fn new(start: u64, end: u64) -> Option<LeafRange> {
        let width = usize::try_from(end.saturating_sub(start)).ok()?;
        Some(LeafRange {
            start,
            leaves: vec![None; width],
        })
    }

    /// Records the row of entry `seq` (its stored hash and seal columns); the problem, when
    /// they are not 32 bytes each. Rows outside the range are ignored.
    pub fn put(&mut self, seq: u64, hash: &[u8], seal: &[u8]) -> Result<(), &'static str> {
        let (Ok(hash), Ok(seal)) = (<[u8; 32]>::try_from(hash), <[u8; 32]>::try_from(seal)) else {
            return Err("hash or seal is not 32 bytes");
        };
        let slot = seq
            .checked_sub(self.start)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.leaves.get_mut(i));
        if let Some(slot) = slot {
            *slot = Some(entry_leaf_hash(&Hash(hash), &Hash(seal)));
        }
        Ok(())
    }

    pub fn into_leaves(self) -> Vec<Option<Hash>> {
        self.leaves
    }
}

/// What a backend's [`NodeRows::missing`] error says about `id`.
pub fn unreadable(id: NodeId) -> String {
    format!(
        "Merkle node (level {}, index {}) can be neither read nor recomputed: an entry under it \
         is missing",
        id.level, id.index
    )
}

/// Reads the hashes of `ids` in order: stored ones as stored, lower ones recomputed from the
/// entries (and stored nodes) under them. `None` for a node that is neither (an upper node
/// not stored, or a lower one over a lost entry); the caller says what that means.
pub fn read<R: NodeRows>(rows: &mut R, ids: &[NodeId]) -> Result<Vec<Option<Hash>>, R::Error> {
    let mut found = rows.stored(ids)?;
    let mut computed: HashMap<NodeId, Hash> = HashMap::new();
    for (id, slot) in ids.iter().zip(found.iter_mut()) {
        if slot.is_some() || is_stored(id) {
            continue;
        }
        if let Some(hash) = computed.get(id) {
            *slot = Some(*hash);
            continue;
        }
        let Some((start, end)) = span(*id) else {
            continue;
        };
        let leaves = rows.leaves(start, end)?;
        let complete = leaves.iter().all(Option::is_some);
        let known = if complete {
            HashMap::new()
        } else {
            rows.stored_below(start, end, id.level)?
        };
        let nodes = fill(start, end, id.level, &leaves, &known);
        *slot = nodes.get(id).copied();
        computed.extend(nodes);
    }
    Ok(found)
}

/// The lower nodes the pruner must store before deleting entries `[from, to)` (all of
/// [`nodes_ending_in`] not stored already), computed from those entries and the nodes stored
/// by earlier prunes.
pub fn nodes_to_keep<R: NodeRows>(
    rows: &mut R,
    from: u64,
    to: u64,
) -> Result<Vec<(NodeId, Hash)>, R::Error> {
    if from >= to {
        return Ok(Vec::new());
    }
    let start = block_start(from);
    let leaves = rows.leaves(start, to)?;
    let known = rows.stored_below(start, to, STORED_LEVEL)?;
    let nodes = fill(start, to, STORED_LEVEL - 1, &leaves, &known);
    let mut out = Vec::new();
    for id in nodes_ending_in(from, to) {
        if known.contains_key(&id) {
            continue;
        }
        match nodes.get(&id) {
            Some(hash) => out.push((id, *hash)),
            None => return Err(rows.missing(id)),
        }
    }
    Ok(out)
}

/// Checks the stored tree against a checkpoint's root: `Ok(None)` when the tree of `size`
/// leaves, read through `rows` as proofs read it, has root `root`; else what is wrong. A store
/// runs it on the latest checkpoint when it loads its head, so that stored nodes altered since
/// (or entries under a recomputed node) are refused before anything new is signed over them.
pub fn checkpoint_mismatch<R: NodeRows>(
    rows: &mut R,
    size: u64,
    root: &Hash,
) -> Result<Option<String>, R::Error> {
    let ids = subtree_ids(0, size);
    let mut hashes = Vec::with_capacity(ids.len());
    for (id, hash) in ids.iter().zip(read(rows, &ids)?) {
        match hash {
            Some(hash) => hashes.push(hash),
            None => {
                return Ok(Some(format!(
                    "Merkle node (level {}, index {}) of the checkpoint of size {size} is missing",
                    id.level, id.index
                )));
            }
        }
    }
    match CompactRange::from_parts(size, hashes) {
        Ok(range) if range.root() == *root => Ok(None),
        Ok(_) => Ok(Some(format!(
            "the stored Merkle tree does not match the latest checkpoint (size {size}): stored \
             nodes or entries were altered"
        ))),
        Err(e) => Ok(Some(format!(
            "the tree of the checkpoint of size {size}: {e}"
        ))),
    }
}

/// The start of the aligned block of lower nodes that may contain `seq`.
pub fn block_start(seq: u64) -> u64 {
    seq & !((1u64 << (STORED_LEVEL - 1)) - 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use evident_core::merkle::leaf_hash;

    fn leaf(i: u64) -> Hash {
        leaf_hash(&i.to_be_bytes())
    }

    /// Every node of a tree of `n` leaves, from the compact range's completed-node output.
    fn all_nodes(n: u64) -> HashMap<NodeId, Hash> {
        let mut tree = CompactRange::new();
        let mut done = Vec::new();
        for i in 0..n {
            tree.append_leaf(leaf(i), &mut done);
        }
        done.into_iter().collect()
    }

    #[test]
    fn entry_leaf_is_the_leaf_of_hash_and_seal() {
        let (h, s) = (Hash([7; 32]), Hash([9; 32]));
        let mut data = [0u8; 64];
        data[..32].copy_from_slice(&h.0);
        data[32..].copy_from_slice(&s.0);
        assert_eq!(entry_leaf_hash(&h, &s), leaf_hash(&data));
    }

    #[test]
    fn fill_from_leaves_gives_every_node() {
        let all = all_nodes(1000);
        let leaves: Vec<Option<Hash>> = (256..512).map(|i| Some(leaf(i))).collect();
        let got = fill(256, 512, 8, &leaves, &HashMap::new());
        let want: HashMap<NodeId, Hash> = all
            .iter()
            .filter(|(id, _)| {
                let (s, e) = span(**id).unwrap();
                s >= 256 && e <= 512
            })
            .map(|(id, h)| (*id, *h))
            .collect();
        assert_eq!(got, want);
        assert_eq!(got.len(), 511);
    }

    #[test]
    fn fill_uses_known_nodes_where_leaves_are_gone() {
        let all = all_nodes(512);
        // Entries [0, 100) pruned: the nodes ending at or below 100 are known, the rest are rows.
        let known: HashMap<NodeId, Hash> =
            nodes_ending_in(0, 100).map(|id| (id, all[&id])).collect();
        let leaves: Vec<Option<Hash>> = (0..256).map(|i| (i >= 100).then(|| leaf(i))).collect();
        let got = fill(0, 256, 8, &leaves, &known);
        assert_eq!(
            got[&NodeId { level: 8, index: 0 }],
            all[&NodeId { level: 8, index: 0 }]
        );
        for (id, h) in &got {
            assert_eq!(all[id], *h, "{id:?}");
        }
        // Without the known nodes, nothing over a pruned leaf can be computed.
        let bare = fill(0, 256, 8, &leaves, &HashMap::new());
        assert!(!bare.contains_key(&NodeId { level: 8, index: 0 }));
        assert!(!bare.contains_key(&NodeId {
            level: 1,
            index: 49
        }));
        assert!(bare.contains_key(&NodeId {
            level: 1,
            index: 50
        }));
    }

    #[test]
    fn nodes_ending_in_is_exactly_the_nodes_ending_in_the_range() {
        for (from, to) in [
            (0, 1),
            (0, 100),
            (100, 300),
            (127, 129),
            (5, 5),
            (255, 1024),
        ] {
            let got: Vec<NodeId> = nodes_ending_in(from, to).collect();
            let mut want = Vec::new();
            for level in 0..STORED_LEVEL {
                for index in 0..(2048u64 >> level) {
                    let (s, e) = span(NodeId { level, index }).unwrap();
                    if from < e && e <= to {
                        want.push(NodeId { level, index });
                        assert!(
                            s >= block_start(from),
                            "{level} {index} starts before the block"
                        );
                    }
                }
            }
            assert_eq!(got, want, "({from}, {to}]");
        }
    }

    #[test]
    fn stored_levels_are_the_high_ones() {
        assert!(!is_stored(&NodeId { level: 7, index: 3 }));
        assert!(is_stored(&NodeId { level: 8, index: 0 }));
        assert_eq!(
            span(NodeId {
                level: 63,
                index: 2
            }),
            None
        );
        assert_eq!(span(NodeId { level: 2, index: 3 }), Some((12, 16)));
    }
}
