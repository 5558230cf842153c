//! The Merkle tree against the RFC 6962 reference vectors (as published by
//! certificate-transparency and transparency-dev/merkle), against a naive implementation written
//! straight from the RFC 9162 §2.1 definitions, and against tampered proofs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use evident_core::Hash;
use evident_core::merkle::{
    self, CompactRange, MerkleError, NodeId, ProofPlan, consistency_plan, inclusion_plan,
    leaf_hash, node_hash, subtree_ids, verify_consistency, verify_inclusion,
};
use proptest::prelude::*;

fn h(s: &str) -> Hash {
    Hash::from_hex(s).unwrap()
}

fn hs(v: &[&str]) -> Vec<Hash> {
    v.iter().map(|s| h(s)).collect()
}

/// The eight reference leaves.
fn leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| hex::decode(s).unwrap())
    .collect()
}

/// Roots of the reference tree at sizes 1..=8.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// A node store as a log keeps it: exactly the nodes `append_leaf` reports as completed.
struct Tree {
    range: CompactRange,
    nodes: HashMap<NodeId, Hash>,
    leaf_hashes: Vec<Hash>,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            range: CompactRange::new(),
            nodes: HashMap::new(),
            leaf_hashes: Vec::new(),
        }
    }

    fn of_leaf_hashes(leaf_hashes: &[Hash]) -> Tree {
        let mut t = Tree::new();
        for lh in leaf_hashes {
            t.push(*lh);
        }
        t
    }

    /// A tree of `n` distinct synthetic leaves.
    fn synthetic(n: u64) -> Tree {
        let hashes: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        Tree::of_leaf_hashes(&hashes)
    }

    fn push(&mut self, lh: Hash) {
        let mut completed = Vec::new();
        self.range.append_leaf(lh, &mut completed);
        for (id, hash) in completed {
            assert!(
                self.nodes.insert(id, hash).is_none(),
                "node {id:?} completed twice"
            );
        }
        self.leaf_hashes.push(lh);
    }

    fn fetch(&self, plan: &ProofPlan) -> Vec<Hash> {
        plan.nodes()
            .iter()
            .map(|id| {
                *self
                    .nodes
                    .get(id)
                    .unwrap_or_else(|| panic!("node {id:?} not stored"))
            })
            .collect()
    }

    fn inclusion(&self, index: u64, size: u64) -> Vec<Hash> {
        let plan = inclusion_plan(index, size).unwrap();
        plan.assemble(&self.fetch(&plan)).unwrap()
    }

    fn consistency(&self, old: u64, new: u64) -> Vec<Hash> {
        let plan = consistency_plan(old, new).unwrap();
        plan.assemble(&self.fetch(&plan)).unwrap()
    }

    /// Root at `size` from stored nodes only, as a server computes it.
    fn root_at(&self, size: u64) -> Hash {
        let ids = subtree_ids(0, size);
        let hashes = ids.iter().map(|id| self.nodes[id]).collect();
        CompactRange::from_parts(size, hashes).unwrap().root()
    }
}

// ---- The naive reference, straight from RFC 9162 §2.1.1 - §2.1.4.1 ----

/// The largest power of two smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => merkle::empty_root(),
        1 => d[0],
        n => {
            let k = split(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = ref_path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![mth(d)] };
    }
    let k = split(n);
    if m <= k {
        let mut p = ref_subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn ref_proof(m: usize, d: &[Hash]) -> Vec<Hash> {
    ref_subproof(m, d, true)
}

// ---- Reference vectors ----

#[test]
fn hashing_primitives() {
    assert_eq!(
        merkle::empty_root(),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(CompactRange::new().root(), merkle::empty_root());
    // The root of a one-leaf tree is the leaf hash of the empty leaf.
    assert_eq!(leaf_hash(b""), h(ROOTS[0]));
    assert_ne!(leaf_hash(b""), merkle::empty_root());
    assert_eq!(node_hash(&leaf_hash(b""), &leaf_hash(&[0x00])), h(ROOTS[1]));
}

#[test]
fn reference_roots() {
    let mut t = Tree::new();
    for (i, leaf) in leaves().iter().enumerate() {
        t.push(leaf_hash(leaf));
        let size = i as u64 + 1;
        assert_eq!(t.range.size(), size);
        assert_eq!(t.range.root(), h(ROOTS[i]), "root at size {size}");
        assert_eq!(t.root_at(size), h(ROOTS[i]), "stored root at size {size}");
        assert_eq!(
            mth(&t.leaf_hashes),
            h(ROOTS[i]),
            "naive root at size {size}"
        );
    }
}

#[test]
fn reference_inclusion_proofs() {
    let t = Tree::of_leaf_hashes(&leaves().iter().map(|l| leaf_hash(l)).collect::<Vec<_>>());
    // (index, size, proof); index is 0-based here.
    let cases: Vec<(u64, u64, Vec<Hash>)> = vec![
        (0, 1, vec![]),
        (
            0,
            8,
            hs(&[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]),
        ),
        (
            5,
            8,
            hs(&[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]),
        ),
        (
            2,
            3,
            hs(&["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        ),
        (
            1,
            5,
            hs(&[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]),
        ),
    ];
    for (index, size, want) in cases {
        let got = t.inclusion(index, size);
        assert_eq!(got, want, "inclusion proof for {index} in {size}");
        let leaf = t.leaf_hashes[index as usize];
        let root = h(ROOTS[size as usize - 1]);
        assert_eq!(verify_inclusion(&leaf, index, size, &want, &root), Ok(()));
        // The same proof must not hold for a neighbouring leaf or a wrong root.
        let other = t.leaf_hashes[(index as usize + 1) % 8];
        assert!(verify_inclusion(&other, index, size, &want, &root).is_err());
        assert!(verify_inclusion(&leaf, index, size, &want, &merkle::empty_root()).is_err());
    }
}

#[test]
fn reference_consistency_proofs() {
    let t = Tree::of_leaf_hashes(&leaves().iter().map(|l| leaf_hash(l)).collect::<Vec<_>>());
    let cases: Vec<(u64, u64, Vec<Hash>)> = vec![
        (1, 1, vec![]),
        (
            1,
            8,
            hs(&[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]),
        ),
        (
            6,
            8,
            hs(&[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]),
        ),
        (
            2,
            5,
            hs(&[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]),
        ),
        (
            6,
            7,
            hs(&[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]),
        ),
    ];
    for (old, new, want) in cases {
        let got = t.consistency(old, new);
        assert_eq!(got, want, "consistency proof {old} -> {new}");
        let old_root = h(ROOTS[old as usize - 1]);
        let new_root = h(ROOTS[new as usize - 1]);
        assert_eq!(
            verify_consistency(old, &old_root, new, &new_root, &want),
            Ok(())
        );
        if old != new {
            assert!(verify_consistency(old, &new_root, new, &old_root, &want).is_err());
        }
    }
}

// ---- Against the naive reference, exhaustively for small trees ----

const MAX_SIZE: u64 = 70;

#[test]
fn every_root_matches_reference() {
    let t = Tree::synthetic(MAX_SIZE);
    for size in 0..=MAX_SIZE {
        let want = mth(&t.leaf_hashes[..size as usize]);
        assert_eq!(t.root_at(size), want, "root at {size}");
    }
    // A log of n leaves stores each complete node once: 2n - popcount(n) of them.
    assert_eq!(
        t.nodes.len() as u64,
        2 * MAX_SIZE - u64::from(MAX_SIZE.count_ones())
    );
}

#[test]
fn every_inclusion_proof_matches_reference() {
    let t = Tree::synthetic(MAX_SIZE);
    for size in 1..=MAX_SIZE {
        let d = &t.leaf_hashes[..size as usize];
        let root = mth(d);
        for index in 0..size {
            let got = t.inclusion(index, size);
            assert_eq!(got, ref_path(index as usize, d), "PATH({index}, D[{size}])");
            let leaf = &t.leaf_hashes[index as usize];
            assert_eq!(verify_inclusion(leaf, index, size, &got, &root), Ok(()));
            if size > 1 {
                let wrong = (index + 1) % size;
                assert!(
                    verify_inclusion(leaf, wrong, size, &got, &root).is_err(),
                    "proof for {index} accepted at {wrong} in {size}"
                );
            }
        }
    }
}

#[test]
fn every_consistency_proof_matches_reference() {
    let t = Tree::synthetic(MAX_SIZE);
    for new in 1..=MAX_SIZE {
        let d = &t.leaf_hashes[..new as usize];
        let new_root = mth(d);
        for old in 1..=new {
            let got = t.consistency(old, new);
            assert_eq!(got, ref_proof(old as usize, d), "PROOF({old}, D[{new}])");
            let old_root = mth(&t.leaf_hashes[..old as usize]);
            assert_eq!(
                verify_consistency(old, &old_root, new, &new_root, &got),
                Ok(()),
                "{old} -> {new}"
            );
        }
    }
}

// ---- Compact ranges and subtree decomposition ----

#[test]
fn subtree_ids_cover_any_range_maximally() {
    for start in 0..=MAX_SIZE {
        for end in start..=MAX_SIZE + 3 {
            let ids = subtree_ids(start, end);
            let mut pos = start;
            for (i, id) in ids.iter().enumerate() {
                let width = 1u64 << id.level;
                assert_eq!(id.index << id.level, pos, "[{start},{end}) not contiguous");
                pos += width;
                assert!(pos <= end);
                // Maximal: the parent does not fit inside the range, so it cannot replace
                // this node together with a neighbour.
                let parent_start = (id.index >> 1) << (id.level + 1);
                let parent_end = parent_start + 2 * width;
                assert!(
                    parent_start < start || parent_end > end,
                    "[{start},{end}): {id:?} (#{i}) could merge with its sibling"
                );
            }
            assert_eq!(pos, end, "[{start},{end}) not covered");
        }
    }
    assert!(subtree_ids(5, 5).is_empty());
    assert!(subtree_ids(9, 3).is_empty());
    assert_eq!(
        subtree_ids(0, 13),
        vec![
            NodeId { level: 3, index: 0 },
            NodeId { level: 2, index: 2 },
            NodeId {
                level: 0,
                index: 12
            },
        ]
    );
}

#[test]
fn compact_range_joins_with_stored_subtrees() {
    let t = Tree::synthetic(MAX_SIZE);
    for a in 0..=MAX_SIZE {
        for b in a..=MAX_SIZE {
            let ids = subtree_ids(0, a);
            let hashes = ids.iter().map(|id| t.nodes[id]).collect();
            let mut range = CompactRange::from_parts(a, hashes).unwrap();
            for id in subtree_ids(a, b) {
                range.append_subtree(id.level, t.nodes[&id]).unwrap();
            }
            assert_eq!(range.size(), b);
            assert_eq!(
                range.root(),
                mth(&t.leaf_hashes[..b as usize]),
                "{a} + [{a},{b})"
            );
            assert_eq!(range.hashes().len() as u32, b.count_ones());
        }
    }
}

#[test]
fn append_leaf_reports_completed_nodes_bottom_up() {
    let mut range = CompactRange::new();
    let mut completed = Vec::new();
    for i in 0..7u64 {
        range.append_leaf(leaf_hash(&i.to_be_bytes()), &mut completed);
    }
    completed.clear();
    let last = leaf_hash(b"eighth");
    range.append_leaf(last, &mut completed);
    let ids: Vec<NodeId> = completed.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        vec![
            NodeId { level: 0, index: 7 },
            NodeId { level: 1, index: 3 },
            NodeId { level: 2, index: 1 },
            NodeId { level: 3, index: 0 },
        ]
    );
    assert_eq!(completed[0].1, last);
    assert_eq!(completed[3].1, range.root());
    assert_eq!(range.hashes(), &[range.root()]);
}

#[test]
fn compact_range_refuses_bad_parts_and_misaligned_subtrees() {
    assert_eq!(
        CompactRange::from_parts(5, vec![Hash::ZERO]),
        Err(MerkleError::BadCompactRange {
            size: 5,
            expected: 2,
            got: 1
        })
    );
    assert!(CompactRange::from_parts(0, vec![Hash::ZERO]).is_err());
    assert!(CompactRange::from_parts(0, vec![]).is_ok());

    let mut range = CompactRange::from_parts(6, vec![Hash::ZERO, Hash::ZERO]).unwrap();
    assert_eq!(
        range.append_subtree(2, Hash::ZERO),
        Err(MerkleError::MisalignedSubtree { level: 2, size: 6 })
    );
    assert!(range.append_subtree(64, Hash::ZERO).is_err());
    assert!(range.append_subtree(255, Hash::ZERO).is_err());
    // A refused append leaves the range as it was.
    assert_eq!(range.size(), 6);
    assert!(range.append_subtree(1, Hash::ZERO).is_ok());
    assert_eq!(range.size(), 8);
    assert_eq!(range.hashes().len(), 1);
}

// ---- Bad inputs and extreme sizes: errors, never panics ----

#[test]
fn bad_sizes_are_errors() {
    let x = Hash::ZERO;
    assert_eq!(
        inclusion_plan(0, 0),
        Err(MerkleError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert!(inclusion_plan(5, 5).is_err());
    assert!(inclusion_plan(u64::MAX, u64::MAX).is_err());
    assert_eq!(
        consistency_plan(0, 5),
        Err(MerkleError::BadSizes { old: 0, new: 5 })
    );
    assert!(consistency_plan(0, 0).is_err());
    assert!(consistency_plan(6, 5).is_err());
    assert!(verify_inclusion(&x, 0, 0, &[], &x).is_err());
    assert!(verify_inclusion(&x, 3, 2, &[], &x).is_err());
    assert!(verify_consistency(0, &x, 0, &x, &[]).is_err());
    assert!(verify_consistency(0, &x, 3, &x, &[]).is_err());
    assert!(verify_consistency(3, &x, 2, &x, &[]).is_err());
    // Equal sizes: the proof is empty and the roots must agree.
    assert_eq!(verify_consistency(4, &x, 4, &x, &[]), Ok(()));
    assert_eq!(
        verify_consistency(4, &x, 4, &leaf_hash(b"x"), &[]),
        Err(MerkleError::RootMismatch)
    );
    assert!(verify_consistency(4, &x, 4, &x, &[x]).is_err());
    // A proof with the wrong number of hashes is told apart from a wrong hash.
    assert_eq!(
        verify_inclusion(&x, 0, 8, &[x, x], &x),
        Err(MerkleError::WrongProofLength {
            got: 2,
            expected: 3
        })
    );
    assert_eq!(
        verify_consistency(3, &x, 8, &x, &[]),
        Err(MerkleError::WrongProofLength {
            got: 0,
            expected: 4
        })
    );
    let plan = inclusion_plan(2, 8).unwrap();
    assert_eq!(
        plan.assemble(&[x]),
        Err(MerkleError::WrongNodeCount {
            expected: 3,
            got: 1
        })
    );
}

#[test]
fn extreme_sizes_do_not_overflow() {
    let max = u64::MAX;
    let ids = subtree_ids(0, max);
    assert_eq!(ids.len(), 64);
    assert_eq!(
        ids[0],
        NodeId {
            level: 63,
            index: 0
        }
    );
    assert_eq!(
        ids[63],
        NodeId {
            level: 0,
            index: max - 1
        }
    );
    assert_eq!(
        subtree_ids(max - 1, max),
        vec![NodeId {
            level: 0,
            index: max - 1
        }]
    );
    assert_eq!(subtree_ids(1, max).len(), 126);

    for (index, size) in [
        (0, max),
        (max - 1, max),
        (1 << 63, max),
        ((1 << 63) - 1, 1 << 63),
    ] {
        let plan = inclusion_plan(index, size).unwrap();
        let n = plan.nodes().len();
        let proof = plan.assemble(&vec![Hash::ZERO; n]).unwrap();
        assert!(proof.len() <= 64);
        assert!(verify_inclusion(&Hash::ZERO, index, size, &proof, &Hash::ZERO).is_err());
    }
    for (old, new) in [
        (1, max),
        (max - 1, max),
        (max, max),
        (1 << 63, max),
        (3, 1 << 63),
    ] {
        let plan = consistency_plan(old, new).unwrap();
        let n = plan.nodes().len();
        let proof = plan.assemble(&vec![Hash::ZERO; n]).unwrap();
        assert!(proof.len() <= 65);
        let r = verify_consistency(old, &Hash::ZERO, new, &leaf_hash(b"r"), &proof);
        assert!(r.is_err());
    }
    let full = vec![Hash::ZERO; 64];
    let mut range = CompactRange::from_parts(max, full).unwrap();
    let _ = range.root();
    let mut completed = Vec::new();
    range.append_leaf(Hash::ZERO, &mut completed);
    assert_eq!(range.size(), max, "a full tree cannot grow");
    assert!(completed.is_empty());
    assert!(range.append_subtree(0, Hash::ZERO).is_err());
    let mut range = CompactRange::from_parts(1 << 63, vec![Hash::ZERO]).unwrap();
    assert!(range.append_subtree(63, Hash::ZERO).is_err());
    assert!(range.append_subtree(62, Hash::ZERO).is_ok());
}

// ---- Tampered proofs never verify ----

#[derive(Debug, Clone)]
enum Tamper {
    FlipBit { element: usize, bit: u8 },
    Drop { element: usize },
    Insert { at: usize },
    Duplicate { element: usize },
    IndexDelta(u64),
    SizeDelta(u64),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(element, bit)| Tamper::FlipBit { element, bit }),
        any::<usize>().prop_map(|element| Tamper::Drop { element }),
        any::<usize>().prop_map(|at| Tamper::Insert { at }),
        any::<usize>().prop_map(|element| Tamper::Duplicate { element }),
        (1u64..200).prop_map(Tamper::IndexDelta),
        (1u64..200).prop_map(Tamper::SizeDelta),
    ]
}

/// Applies a proof tampering; `None` when it does not apply (e.g. no element to change).
fn tamper_proof(proof: &[Hash], t: &Tamper) -> Option<Vec<Hash>> {
    let mut p = proof.to_vec();
    match *t {
        Tamper::FlipBit { element, bit } => {
            let e = p.get_mut(element.checked_rem(proof.len())?)?;
            e.0[usize::from(bit / 8) % 32] ^= 1 << (bit % 8);
        }
        Tamper::Drop { element } => {
            p.remove(element.checked_rem(proof.len())?);
        }
        Tamper::Insert { at } => p.insert(at % (proof.len() + 1), leaf_hash(b"intruder")),
        Tamper::Duplicate { element } => {
            let i = element.checked_rem(proof.len())?;
            p.insert(i, p[i]);
        }
        Tamper::IndexDelta(_) | Tamper::SizeDelta(_) => return None,
    }
    Some(p)
}

proptest! {
    #[test]
    fn tampered_inclusion_proofs_fail(size in 1u64..300, seed in any::<u64>(), t in tamper()) {
        // Leaves beyond `size` give the roots of larger trees for the size tampering.
        let tree = Tree::synthetic(size + 200);
        let index = seed % size;
        let proof = tree.inclusion(index, size);
        let root = tree.root_at(size);
        let leaf = tree.leaf_hashes[index as usize];
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        match t {
            Tamper::IndexDelta(d) => {
                let wrong = (index + d) % size;
                prop_assume!(wrong != index);
                prop_assert!(verify_inclusion(&leaf, wrong, size, &proof, &root).is_err());
            }
            Tamper::SizeDelta(d) => {
                // A size is only as good as the root it comes with (a checkpoint signs both):
                // the same hashes under another size can fold to the same root when the path
                // has the same shape, so what must fail is the proof against the root of the
                // size it claims, larger or smaller.
                let larger = size + d;
                let r = verify_inclusion(&leaf, index, larger, &proof, &tree.root_at(larger));
                prop_assert!(r.is_err());
                if let Some(smaller) = size.checked_sub(d).filter(|s| *s > index) {
                    let r = verify_inclusion(&leaf, index, smaller, &proof, &tree.root_at(smaller));
                    prop_assert!(r.is_err());
                }
            }
            ref t => {
                let p = tamper_proof(&proof, t);
                prop_assume!(p.is_some());
                let p = p.unwrap();
                prop_assert!(verify_inclusion(&leaf, index, size, &p, &root).is_err());
            }
        }
    }

    #[test]
    fn tampered_consistency_proofs_fail(new in 2u64..300, seed in any::<u64>(), t in tamper()) {
        let tree = Tree::synthetic(new + 200);
        let old = 1 + seed % (new - 1); // old < new, so the proof is not empty
        let proof = tree.consistency(old, new);
        let old_root = tree.root_at(old);
        let new_root = tree.root_at(new);
        prop_assert_eq!(verify_consistency(old, &old_root, new, &new_root, &proof), Ok(()));
        match t {
            Tamper::IndexDelta(d) => {
                // A wrong old size, either side.
                let wrong = 1 + (old - 1 + d) % new;
                prop_assume!(wrong != old);
                prop_assert!(verify_consistency(wrong, &old_root, new, &new_root, &proof).is_err());
            }
            Tamper::SizeDelta(d) => {
                // As for inclusion: a wrong new size, with the root of that size.
                let larger = new + d;
                let r = verify_consistency(old, &old_root, larger, &tree.root_at(larger), &proof);
                prop_assert!(r.is_err());
                if let Some(smaller) = new.checked_sub(d).filter(|s| *s > old) {
                    let r = verify_consistency(old, &old_root, smaller, &tree.root_at(smaller), &proof);
                    prop_assert!(r.is_err());
                }
            }
            ref t => {
                let p = tamper_proof(&proof, t);
                prop_assume!(p.is_some());
                let p = p.unwrap();
                prop_assert!(verify_consistency(old, &old_root, new, &new_root, &p).is_err());
            }
        }
    }
}
