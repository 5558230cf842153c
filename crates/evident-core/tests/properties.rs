//! Property tests of the integrity core as a whole: random logs built the way the sequencer
//! builds them ([`ChainHead::append`], with a node map standing in for the store), every proof
//! the store could serve, and every kind of tampering the streaming verifier and the export
//! verifier must catch, each with the sequence number and kind it must be reported as.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use evident_core::chain::{ChainHead, GENESIS_PREV_HASH, SealKey, SealedEntry, entry_hash};
use evident_core::checkpoint::Checkpoint;
use evident_core::event::{ActorKind, Context, Event, EventInput, Outcome, Severity};
use evident_core::export::{
    self, ExportEntry, ExportError, ExportHeader, HeaderConsistency, RunEnd, RunStart,
};
use evident_core::hash::Hash;
use evident_core::merkle::{self, NodeId};
use evident_core::note::{NoteSigner, NoteVerifier};
use evident_core::verify::{Anchor, StreamVerifier, Violation};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::IpAddr;
use uuid::Uuid;

const NODE: &str = "node-a";
const ORIGIN: &str = "example.com/evident-test";
const SECRET: [u8; 32] = [7u8; 32];
const SEED: [u8; 32] = [9u8; 32];

// ---- building logs ----

fn input_strategy() -> impl Strategy<Value = EventInput> {
    let ip = prop_oneof![
        Just(None),
        any::<u32>().prop_map(|v| Some(std::net::Ipv4Addr::from(v).to_string())),
        any::<u128>().prop_map(|v| Some(std::net::Ipv6Addr::from(v).to_string())),
    ];
    let scalar = prop_oneof![
        (-1_000_000i64..1_000_000).prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|x| json!(x)),
        "\\PC{0,12}".prop_map(|s| json!(s)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(Value::Null),
    ];
    let context = proptest::collection::btree_map("[a-z_]{1,6}", scalar, 0..5);
    (
        (
            proptest::option::of(0i64..4_000_000_000_000),
            "[a-z0-9]{1,8}",
            "[a-z]{1,8}",
            0usize..4,
            ip,
            proptest::option::of("[ -~]{1,24}"),
        ),
        (
            "[a-z]{1,6}(\\.[a-z_]{1,6}){0,2}",
            "[a-z]{1,6}",
            "[a-z0-9-]{1,12}",
            0usize..3,
            0usize..8,
            context,
        ),
    )
        .prop_map(
            |(
                (occurred_at, tenant, actor_id, kind, ip, ua),
                (action, target_kind, target_id, outcome, severity, context),
            )| {
                let doc = json!({
                    "occurred_at": occurred_at,
                    "tenant": tenant,
                    "actor": {"id": actor_id, "kind": ActorKind::ALL[kind].as_str(), "ip": ip, "user_agent": ua},
                    "action": action,
                    "target": {"kind": target_kind, "id": target_id},
                    "outcome": Outcome::ALL[outcome].as_str(),
                    "severity": Severity::ALL[severity].as_str(),
                    "context": context,
                });
                EventInput::from_json(&doc).unwrap()
            },
        )
}

/// A log as the store would hold it: entries, every completed Merkle node, and the root after
/// each size.
#[derive(Debug, Clone)]
struct Log {
    entries: Vec<SealedEntry>,
    nodes: HashMap<NodeId, Hash>,
    roots: Vec<Hash>,
}

impl Log {
    /// A log of version-2 entries, all appended by one key.
    fn build(inputs: Vec<EventInput>) -> Log {
        Log::build_mixed(
            inputs
                .into_iter()
                .map(|input| (input, Some("evk_0123456789ab".to_owned())))
                .collect(),
        )
    }

    /// A log whose entries with no appender are encoding version 1 (as a log written before
    /// key ids were recorded holds them), the others version 2 appended by that key id.
    fn build_mixed(inputs: Vec<(EventInput, Option<String>)>) -> Log {
        let key = seal_key();
        let mut head = ChainHead::genesis();
        let mut completed = Vec::new();
        let mut entries = Vec::new();
        let mut roots = vec![head.tree.root()];
        for (i, (input, appended_by)) in inputs.into_iter().enumerate() {
            let seq = head.next_seq;
            let id = Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0000 | u128::from(seq));
            let recorded_at = 1_773_478_800_000 + i as i64 * 17;
            entries.push(match appended_by {
                Some(by) => head.append(id, recorded_at, NODE, &by, input, &key, &mut completed),
                None => head.append_v1(id, recorded_at, NODE, input, &key, &mut completed),
            });
            roots.push(head.tree.root());
        }
        Log {
            entries,
            nodes: completed.into_iter().collect(),
            roots,
        }
    }

    fn size(&self) -> u64 {
        self.entries.len() as u64
    }

    fn fetch(&self, ids: &[NodeId]) -> Vec<Hash> {
        ids.iter().map(|id| self.nodes[id]).collect()
    }

    fn signed_checkpoint(&self, size: u64) -> String {
        Checkpoint {
            origin: ORIGIN.to_owned(),
            size,
            root: self.roots[size as usize],
            extensions: vec![],
        }
        .sign(&signer())
        .unwrap()
    }
}

/// Who appends an entry: `None` for a version-1 entry, else the node or an API key id.
fn appender_strategy() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("system".to_owned())),
        "evk_[0-9a-f]{12}".prop_map(Some),
    ]
}

fn seal_key() -> SealKey {
    SealKey::new(&SECRET).unwrap()
}

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, SEED).unwrap()
}

fn note_verifier() -> NoteVerifier {
    signer().verifier()
}

/// Random logs; most hold version-1 entries first and version-2 entries after them (a log
/// written before and after the upgrade), some interleave the versions.
fn log_strategy(max: usize) -> impl Strategy<Value = Log> {
    (
        proptest::collection::vec((input_strategy(), appender_strategy()), 1..=max),
        any::<bool>(),
    )
        .prop_map(|(mut items, interleave)| {
            if !interleave {
                items.sort_by_key(|(_, by)| by.is_some());
            }
            Log::build_mixed(items)
        })
}

/// RFC 6962 §2.1 MTH, written from the definition.
fn reference_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash::digest(b""),
        1 => leaves[0],
        n => {
            // The largest power of two strictly below n.
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            merkle::node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}

// ---- the streaming verifier ----

/// Online: seal key, node id, and a checkpoint of the whole log.
fn verify_online(entries: &[SealedEntry], checkpoint: &str) -> Result<u64, Violation> {
    let mut v = StreamVerifier::new(Anchor::genesis(), Some(seal_key()), Some(NODE.to_owned()));
    v.trust_signed_checkpoint(checkpoint, &note_verifier())?;
    for e in entries {
        v.push(e)?;
    }
    v.finish().map(|r| r.entries)
}

/// Offline: no seal key, no node id; only the signed checkpoint.
fn verify_offline(entries: &[SealedEntry], checkpoint: &str) -> Result<u64, Violation> {
    let mut v = StreamVerifier::new(Anchor::genesis(), None, None);
    v.trust_signed_checkpoint(checkpoint, &note_verifier())?;
    for e in entries {
        v.push(e)?;
    }
    v.finish().map(|r| r.entries)
}

fn sequence_violation(expected: u64, found: u64) -> Violation {
    if found > expected {
        Violation::SequenceGap { expected, found }
    } else if found + 1 == expected {
        Violation::DuplicateSequence { seq: found }
    } else {
        Violation::OutOfOrder { expected, found }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Seq,
    Id,
    RecordedAt,
    OccurredAt,
    NodeId,
    Tenant,
    ActorId,
    ActorKind,
    ActorIp,
    UserAgent,
    Action,
    TargetKind,
    TargetId,
    Outcome,
    Severity,
    Context,
    AppendedBy,
    Hash,
    Seal,
}

const FIELDS: [Field; 19] = [
    Field::Seq,
    Field::Id,
    Field::RecordedAt,
    Field::OccurredAt,
    Field::NodeId,
    Field::Tenant,
    Field::ActorId,
    Field::ActorKind,
    Field::ActorIp,
    Field::UserAgent,
    Field::Action,
    Field::TargetKind,
    Field::TargetId,
    Field::Outcome,
    Field::Severity,
    Field::Context,
    Field::AppendedBy,
    Field::Hash,
    Field::Seal,
];

/// Changes one byte of an ASCII string at a position chosen by `r`.
fn change_byte(s: &mut String, r: u64) {
    let mut bytes = std::mem::take(s).into_bytes();
    let at = (r as usize) % bytes.len();
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    *s = String::from_utf8(bytes).unwrap();
}

fn flip_bit(h: &mut Hash, r: u64) {
    h.0[(r as usize / 8) % 32] ^= 1 << (r % 8);
}

/// Changes `field` of `entry` (a different value, always).
fn tamper(entry: &mut SealedEntry, field: Field, r: u64) {
    let before = entry.clone();
    let e: &mut Event = &mut entry.event;
    match field {
        Field::Seq => e.seq ^= 1 << (r % 12),
        Field::Id => {
            let mut b = *e.id.as_bytes();
            b[(r as usize) % 16] ^= 1 << (r % 8);
            e.id = Uuid::from_bytes(b);
        }
        Field::RecordedAt => e.recorded_at ^= 1 << (r % 40),
        Field::OccurredAt => {
            e.occurred_at = match e.occurred_at {
                None => Some(r as i64 % 4_000_000_000_000),
                Some(t) if r % 3 == 0 => {
                    let _ = t;
                    None
                }
                Some(t) => Some(t ^ (1 << (r % 40))),
            }
        }
        Field::NodeId => change_byte(&mut e.node_id, r),
        Field::Tenant => change_byte(&mut e.tenant, r),
        Field::ActorId => change_byte(&mut e.actor.id, r),
        Field::ActorKind => {
            let i = ActorKind::ALL
                .iter()
                .position(|k| *k == e.actor.kind)
                .unwrap();
            e.actor.kind = ActorKind::ALL[(i + 1 + r as usize % 3) % 4];
        }
        Field::ActorIp => {
            e.actor.ip = match e.actor.ip {
                None => Some(IpAddr::from([10, 0, 0, (r % 256) as u8])),
                Some(IpAddr::V4(v4)) => Some(IpAddr::V4((u32::from(v4) ^ (1 << (r % 32))).into())),
                Some(IpAddr::V6(v6)) => {
                    Some(IpAddr::V6((u128::from(v6) ^ (1 << (r % 128))).into()))
                }
            }
        }
        Field::UserAgent => match &mut e.actor.user_agent {
            None => e.actor.user_agent = Some("x".to_owned()),
            Some(ua) => change_byte(ua, r),
        },
        Field::Action => change_byte(&mut e.action, r),
        Field::TargetKind => change_byte(&mut e.target.kind, r),
        Field::TargetId => change_byte(&mut e.target.id, r),
        Field::Outcome => {
            let i = Outcome::ALL.iter().position(|o| *o == e.outcome).unwrap();
            e.outcome = Outcome::ALL[(i + 1 + r as usize % 2) % 3];
        }
        Field::Severity => {
            let i = Severity::ALL.iter().position(|s| *s == e.severity).unwrap();
            e.severity = Severity::ALL[(i + 1 + r as usize % 7) % 8];
        }
        Field::Context => {
            let mut v: Value = serde_json::from_str(e.context.as_str()).unwrap();
            let obj = v.as_object_mut().unwrap();
            match obj.keys().next().cloned() {
                Some(k) if r % 2 == 0 => {
                    obj.remove(&k);
                }
                _ => {
                    obj.insert("tampered".to_owned(), json!(r % 1000));
                }
            }
            let changed = Context::from_value(&v).unwrap();
            e.context = if changed == e.context {
                Context::from_value(&json!({"tampered": "again"})).unwrap()
            } else {
                changed
            };
        }
        // Another key id, or a version-2 entry passed off as version 1 and the reverse.
        Field::AppendedBy => match &mut e.appended_by {
            None => e.appended_by = Some("evk_0123456789ab".to_owned()),
            Some(_) if r % 4 == 0 => e.appended_by = None,
            Some(by) => change_byte(by, r),
        },
        Field::Hash => flip_bit(&mut entry.hash, r),
        Field::Seal => flip_bit(&mut entry.seal, r),
    }
    assert_ne!(*entry, before, "{field:?} unchanged");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_tree_matches_rfc6962_and_every_proof_verifies(
        log in log_strategy(300),
        picks in proptest::collection::vec((any::<u64>(), any::<u64>()), 24),
    ) {
        let n = log.size();
        let leaves: Vec<Hash> = log.entries.iter().map(SealedEntry::leaf_hash).collect();
        for size in [1, n / 2 + 1, n] {
            prop_assert_eq!(log.roots[size as usize], reference_root(&leaves[..size as usize]));
        }
        prop_assert_eq!(log.roots[0], merkle::empty_root());

        // Every inclusion proof in the final tree.
        for index in 0..n {
            let plan = merkle::inclusion_plan(index, n).unwrap();
            let proof = plan.assemble(&log.fetch(plan.nodes())).unwrap();
            merkle::verify_inclusion(&leaves[index as usize], index, n, &proof, &log.roots[n as usize]).unwrap();
        }
        // Every consistency proof into the final tree.
        for old in 1..=n {
            let plan = merkle::consistency_plan(old, n).unwrap();
            let proof = plan.assemble(&log.fetch(plan.nodes())).unwrap();
            merkle::verify_consistency(old, &log.roots[old as usize], n, &log.roots[n as usize], &proof).unwrap();
        }
        // Sampled proofs between intermediate sizes.
        for (a, b) in picks {
            let size = 1 + b % n;
            let index = a % size;
            let plan = merkle::inclusion_plan(index, size).unwrap();
            let proof = plan.assemble(&log.fetch(plan.nodes())).unwrap();
            merkle::verify_inclusion(&leaves[index as usize], index, size, &proof, &log.roots[size as usize]).unwrap();
            let old = 1 + a % size;
            let plan = merkle::consistency_plan(old, size).unwrap();
            let proof = plan.assemble(&log.fetch(plan.nodes())).unwrap();
            merkle::verify_consistency(old, &log.roots[old as usize], size, &log.roots[size as usize], &proof).unwrap();
        }
    }

    #[test]
    fn tampered_proofs_fail(
        log in log_strategy(200),
        a in any::<u64>(),
        b in any::<u64>(),
        r in any::<u64>(),
    ) {
        let n = log.size();
        prop_assume!(n >= 2);
        let root = log.roots[n as usize];
        let index = a % n;
        let leaf = log.entries[index as usize].leaf_hash();
        let plan = merkle::inclusion_plan(index, n).unwrap();
        let proof = plan.assemble(&log.fetch(plan.nodes())).unwrap();
        prop_assert!(!proof.is_empty());
        let mut bad = proof.clone();
        flip_bit(&mut bad[(r as usize) % proof.len()], r >> 8);
        prop_assert!(merkle::verify_inclusion(&leaf, index, n, &bad, &root).is_err());
        let mut other_leaf = leaf;
        flip_bit(&mut other_leaf, r);
        prop_assert!(merkle::verify_inclusion(&other_leaf, index, n, &proof, &root).is_err());
        let other_index = (index + 1 + b % (n - 1)) % n;
        prop_assert!(merkle::verify_inclusion(&leaf, other_index, n, &proof, &root).is_err());
        let mut longer = proof.clone();
        longer.push(root);
        prop_assert!(merkle::verify_inclusion(&leaf, index, n, &longer, &root).is_err());
        prop_assert!(merkle::verify_inclusion(&leaf, index, n, &proof[1..], &root).is_err());

        let old = 1 + b % (n - 1);
        let plan = merkle::consistency_plan(old, n).unwrap();
        let proof = plan.assemble(&log.fetch(plan.nodes())).unwrap();
        let old_root = log.roots[old as usize];
        merkle::verify_consistency(old, &old_root, n, &root, &proof).unwrap();
        prop_assert!(!proof.is_empty());
        let mut bad = proof.clone();
        flip_bit(&mut bad[(r as usize) % proof.len()], r >> 8);
        prop_assert!(merkle::verify_consistency(old, &old_root, n, &root, &bad).is_err());
        let mut bad_old = old_root;
        flip_bit(&mut bad_old, r);
        prop_assert!(merkle::verify_consistency(old, &bad_old, n, &root, &proof).is_err());
        let mut bad_new = root;
        flip_bit(&mut bad_new, r);
        prop_assert!(merkle::verify_consistency(old, &old_root, n, &bad_new, &proof).is_err());
        prop_assert!(merkle::verify_consistency(old, &old_root, n, &root, &proof[1..]).is_err());
    }

    #[test]
    fn an_intact_log_verifies_with_every_checkpoint(
        log in log_strategy(200),
        sizes in proptest::collection::vec(any::<u64>(), 0..5),
    ) {
        let n = log.size();
        let mut v = StreamVerifier::new(Anchor::genesis(), Some(seal_key()), Some(NODE.to_owned()));
        let mut distinct: Vec<u64> = sizes.iter().map(|s| s % (n + 1)).collect();
        distinct.push(n);
        distinct.sort_unstable();
        distinct.dedup();
        for &s in &distinct {
            v.trust_signed_checkpoint(&log.signed_checkpoint(s), &note_verifier()).unwrap();
        }
        for e in &log.entries {
            v.push(e).unwrap();
        }
        let report = v.finish().unwrap();
        prop_assert_eq!(report.entries, n);
        prop_assert_eq!(report.size, n);
        prop_assert_eq!(report.first_seq, Some(0));
        prop_assert_eq!(report.root, log.roots[n as usize]);
        prop_assert!(report.seals_checked);
        prop_assert_eq!(report.checkpoints_checked, distinct.len() as u64);

        // Resuming from an anchor (as after pruning) checks the rest, and ignores checkpoints
        // below the anchor.
        let from = (sizes.first().copied().unwrap_or(0) % n) as usize;
        let mut completed = Vec::new();
        let mut tree = evident_core::CompactRange::new();
        for e in &log.entries[..from] {
            tree.append_leaf(e.leaf_hash(), &mut completed);
        }
        let anchor = Anchor {
            next_seq: from as u64,
            prev_hash: if from == 0 { GENESIS_PREV_HASH } else { log.entries[from - 1].hash },
            tree,
        };
        let mut v = StreamVerifier::new(anchor, Some(seal_key()), Some(NODE.to_owned()));
        for &s in &distinct {
            v.trust_signed_checkpoint(&log.signed_checkpoint(s), &note_verifier()).unwrap();
        }
        for e in &log.entries[from..] {
            v.push(e).unwrap();
        }
        let report = v.finish().unwrap();
        prop_assert_eq!(report.entries, n - from as u64);
        prop_assert_eq!(report.first_seq, Some(from as u64));
        prop_assert_eq!(report.checkpoints_checked, distinct.iter().filter(|&&s| s >= from as u64).count() as u64);
    }

    #[test]
    fn any_field_change_is_found_at_its_entry(
        log in log_strategy(200),
        at in any::<u64>(),
        field in 0..FIELDS.len(),
        r in any::<u64>(),
    ) {
        let n = log.size();
        let checkpoint = log.signed_checkpoint(n);
        let i = at % n;
        let field = FIELDS[field];
        let mut entries = log.entries.clone();
        tamper(&mut entries[i as usize], field, r);
        let found_seq = entries[i as usize].event.seq;

        let online = match field {
            Field::Seq => sequence_violation(i, found_seq),
            Field::NodeId => Violation::WrongNode {
                seq: i,
                expected: NODE.to_owned(),
                found: entries[i as usize].event.node_id.clone(),
            },
            Field::Seal => Violation::SealMismatch { seq: i },
            _ => Violation::ChainBroken { seq: i },
        };
        prop_assert_eq!(verify_online(&entries, &checkpoint), Err(online.clone()));
        if field != Field::Seal && field != Field::Seq {
            prop_assert_eq!(online.seq(), Some(i));
        }

        // Offline the seal is unknown but the checkpoint's tree commits to it.
        let offline = match field {
            Field::Seq => sequence_violation(i, found_seq),
            Field::Seal => Violation::RootMismatch { size: n },
            _ => Violation::ChainBroken { seq: i },
        };
        prop_assert_eq!(verify_offline(&entries, &checkpoint), Err(offline));
    }

    #[test]
    fn deletion_insertion_swap_and_truncation_are_found(
        log in log_strategy(120),
        a in any::<u64>(),
        b in any::<u64>(),
        inserted in input_strategy(),
    ) {
        let n = log.size();
        let checkpoint = log.signed_checkpoint(n);
        prop_assert_eq!(verify_online(&log.entries, &checkpoint), Ok(n));
        prop_assert_eq!(verify_offline(&log.entries, &checkpoint), Ok(n));

        // Deletion.
        let i = a % n;
        let mut entries = log.entries.clone();
        entries.remove(i as usize);
        let expected = if i + 1 < n {
            Violation::SequenceGap { expected: i, found: i + 1 }
        } else {
            Violation::Truncated { size: n - 1, checkpoint_size: n }
        };
        prop_assert_eq!(verify_online(&entries, &checkpoint), Err(expected.clone()));
        prop_assert_eq!(verify_offline(&entries, &checkpoint), Err(expected.clone()));
        prop_assert_eq!(expected.seq(), Some(i));

        // Insertion of a forged entry at position i, correctly chained but sealed without the
        // node's secret.
        let i = a % (n + 1);
        let forger = SealKey::new(&[0x66; 32]).unwrap();
        let prev = if i == 0 { GENESIS_PREV_HASH } else { log.entries[i as usize - 1].hash };
        let event = Event::new(i, Uuid::from_u128(u128::from(b)), 1_773_478_800_000, NODE.to_owned(), "evk_0123456789ab".to_owned(), inserted);
        let hash = entry_hash(&prev, &evident_core::canonical::encode(&event));
        let forged = SealedEntry { seal: forger.seal(&hash), event, hash };
        let mut entries = log.entries.clone();
        entries.insert(i as usize, forged.clone());
        prop_assert_eq!(verify_online(&entries, &checkpoint), Err(Violation::SealMismatch { seq: i }));
        if i < n {
            // Offline, the original entry i then repeats the number, unless the forged entry
            // completed the checkpoint's size first.
            let expected = if i + 1 == n {
                Violation::RootMismatch { size: n }
            } else {
                Violation::DuplicateSequence { seq: i }
            };
            prop_assert_eq!(verify_offline(&entries, &checkpoint), Err(expected));
            // A forger who renumbers and re-chains everything after it is caught by the seals
            // online and by the checkpoint's root offline.
            let mut rewritten = log.entries[..i as usize].to_vec();
            rewritten.push(forged);
            let mut prev = rewritten.last().unwrap().hash;
            for e in &log.entries[i as usize..] {
                let mut e = e.clone();
                e.event.seq += 1;
                e.hash = entry_hash(&prev, &evident_core::canonical::encode(&e.event));
                e.seal = forger.seal(&e.hash);
                prev = e.hash;
                rewritten.push(e);
            }
            prop_assert_eq!(verify_online(&rewritten, &checkpoint), Err(Violation::SealMismatch { seq: i }));
            prop_assert_eq!(verify_offline(&rewritten, &checkpoint), Err(Violation::RootMismatch { size: n }));
        }

        // Swap of two entries.
        prop_assume!(n >= 2);
        let i = a % n;
        let j = (i + 1 + b % (n - 1)) % n;
        let (i, j) = (i.min(j), i.max(j));
        let mut entries = log.entries.clone();
        entries.swap(i as usize, j as usize);
        let expected = Violation::SequenceGap { expected: i, found: j };
        prop_assert_eq!(verify_online(&entries, &checkpoint), Err(expected.clone()));
        prop_assert_eq!(verify_offline(&entries, &checkpoint), Err(expected));
        // The same swap with the sequence numbers put back in order breaks the chain.
        entries[i as usize].event.seq = i;
        entries[j as usize].event.seq = j;
        prop_assert_eq!(verify_online(&entries, &checkpoint), Err(Violation::ChainBroken { seq: i }));
        prop_assert_eq!(verify_offline(&entries, &checkpoint), Err(Violation::ChainBroken { seq: i }));

        // Truncation against a checkpoint of the whole log.
        let k = a % n;
        let expected = Violation::Truncated { size: k, checkpoint_size: n };
        prop_assert_eq!(verify_online(&log.entries[..k as usize], &checkpoint), Err(expected.clone()));
        prop_assert_eq!(verify_offline(&log.entries[..k as usize], &checkpoint), Err(expected.clone()));
        prop_assert_eq!(expected.seq(), Some(k));
        prop_assert_eq!(expected.kind(), "truncated");
    }

    #[test]
    fn tampered_checkpoint_signatures_fail(
        log in log_strategy(20),
        pos in any::<usize>(),
        replacement in 0x20u8..0x7f,
    ) {
        let n = log.size();
        let note = log.signed_checkpoint(n);
        Checkpoint::open(&note, &note_verifier()).unwrap();
        let ascii: Vec<usize> = note.bytes().enumerate().filter(|(_, b)| b.is_ascii()).map(|(i, _)| i).collect();
        let at = ascii[pos % ascii.len()];
        let mut bytes = note.clone().into_bytes();
        prop_assume!(bytes[at] != replacement);
        bytes[at] = replacement;
        let tampered = String::from_utf8(bytes).unwrap();
        prop_assert!(Checkpoint::open(&tampered, &note_verifier()).is_err(), "accepted {tampered:?}");
        let mut v = StreamVerifier::new(Anchor::genesis(), None, None);
        let got = v.trust_signed_checkpoint(&tampered, &note_verifier());
        prop_assert!(matches!(got, Err(Violation::BadCheckpointSignature { .. })), "{got:?}");
        // A checkpoint signed by another key does not open with this one.
        let other = NoteSigner::from_seed(ORIGIN, [1u8; 32]).unwrap();
        let foreign = Checkpoint::open(&note, &note_verifier()).unwrap().sign(&other).unwrap();
        prop_assert!(Checkpoint::open(&foreign, &note_verifier()).is_err());
    }
}

// ---- exports ----

/// Writes an export of the entries at `selected` (ascending positions) against the checkpoint
/// of `size`, the way the server does: runs of consecutive entries with their markers.
fn write_export(
    log: &Log,
    size: u64,
    selected: &[u64],
    consistency: Option<&HeaderConsistency>,
) -> Vec<u8> {
    let header = ExportHeader {
        node_id: NODE.to_owned(),
        checkpoint: log.signed_checkpoint(size),
        // A filter every entry matches: the random selections are not any filter's result.
        query: r#"{"severity":"debug"}"#.to_owned(),
        exported_at: 1_773_480_000_123,
    };
    let mut out = export::signed_header_line(&header, consistency, &signer())
        .unwrap()
        .into_bytes();
    let mut runs = 0;
    for (k, &seq) in selected.iter().enumerate() {
        let starts = k == 0 || selected[k - 1] + 1 != seq;
        let ends = k + 1 == selected.len() || selected[k + 1] != seq + 1;
        let run_start = starts.then(|| {
            runs += 1;
            let (left, _) = export::run_nodes(seq, seq + 1, size);
            RunStart {
                prev_hash: if seq == 0 {
                    GENESIS_PREV_HASH
                } else {
                    log.entries[seq as usize - 1].hash
                },
                left: log.fetch(&left),
            }
        });
        let run_end = ends.then(|| {
            let (_, right) = export::run_nodes(seq, seq + 1, size);
            RunEnd {
                right: log.fetch(&right),
            }
        });
        out.extend_from_slice(
            export::entry_line(&ExportEntry {
                entry: log.entries[seq as usize].clone(),
                run_start,
                run_end,
            })
            .as_bytes(),
        );
    }
    out.extend_from_slice(export::trailer_line(selected.len() as u64, runs).as_bytes());
    out
}

fn runs_of(selected: &[u64]) -> u64 {
    selected
        .iter()
        .enumerate()
        .filter(|(k, seq)| *k == 0 || selected[k - 1] + 1 != **seq)
        .count() as u64
}

fn selection_strategy() -> impl Strategy<Value = (Log, Vec<u64>)> {
    log_strategy(100).prop_flat_map(|log| {
        let n = log.entries.len();
        (proptest::collection::vec(any::<bool>(), n), Just(log)).prop_map(|(mask, log)| {
            let mut selected: Vec<u64> = (0..mask.len() as u64)
                .filter(|&i| mask[i as usize])
                .collect();
            if selected.is_empty() {
                selected.push(mask.len() as u64 / 2);
            }
            (log, selected)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn full_and_filtered_exports_verify(
        (log, selected) in selection_strategy(),
        extra in 0u64..5,
    ) {
        let n = log.size();
        let full: Vec<u64> = (0..n).collect();
        let bytes = write_export(&log, n, &full, None);
        let report = export::verify_export(&bytes, note_verifier(), None).unwrap();
        prop_assert_eq!((report.entries, report.runs, report.checkpoint_size), (n, 1, n));
        prop_assert_eq!((report.first_seq, report.last_seq), (Some(0), Some(n - 1)));
        // Against the same checkpoint held elsewhere.
        prop_assert!(export::verify_export(&bytes, note_verifier(), Some(log.signed_checkpoint(n))).is_ok());

        let bytes = write_export(&log, n, &selected, None);
        let report = export::verify_export(&bytes, note_verifier(), None).unwrap();
        prop_assert_eq!(report.entries, selected.len() as u64);
        prop_assert_eq!(report.runs, runs_of(&selected));
        prop_assert_eq!(report.first_seq, selected.first().copied());
        prop_assert_eq!(report.last_seq, selected.last().copied());

        // Fed in arbitrary chunks, line by line through push_line, the verdict is the same.
        let mut v = export::ExportVerifier::new(note_verifier(), None);
        for chunk in bytes.chunks(1 + extra as usize * 7) {
            v.push_bytes(chunk).unwrap();
        }
        prop_assert_eq!(v.finish().unwrap(), report.clone());
        let mut v = export::ExportVerifier::new(note_verifier(), None);
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            v.push_line(line).unwrap();
        }
        prop_assert_eq!(v.finish().unwrap(), report);

        // A trusted checkpoint larger than the export's: truncation, rollback or a stale export.
        let smaller = 1 + extra % n;
        if smaller < n {
            let selected: Vec<u64> = selected.iter().copied().filter(|&s| s < smaller).collect();
            let old = write_export(&log, smaller, &selected, None);
            let err = export::verify_export(&old, note_verifier(), Some(log.signed_checkpoint(n))).unwrap_err();
            prop_assert_eq!(err.violation(), Some(&Violation::Truncated { size: smaller, checkpoint_size: n }));
            prop_assert!(err.to_string().contains("older than that checkpoint"), "{err}");
            // A trusted checkpoint smaller than the export's needs a consistency proof.
            let newer = write_export(&log, n, &selected, None);
            let err = export::verify_export(&newer, note_verifier(), Some(log.signed_checkpoint(smaller))).unwrap_err();
            prop_assert!(matches!(err, ExportError::Unprovable { line: 1, .. }), "{err}");
            let plan = merkle::consistency_plan(smaller, n).unwrap();
            let proof = plan.assemble(&log.fetch(plan.nodes())).unwrap();
            let from_root = log.roots[smaller as usize];
            let good = HeaderConsistency { from_size: smaller, from_root, proof: proof.clone() };
            let with_proof = write_export(&log, n, &selected, Some(&good));
            export::verify_export(&with_proof, note_verifier(), Some(log.signed_checkpoint(smaller))).unwrap();
            prop_assert!(export::verify_export(&with_proof, note_verifier(), None).is_ok());
            // A proof that does not connect its own endpoints is refused, trusted checkpoint
            // or not: a changed proof hash, or a changed older root.
            let mut bad_proof = proof.clone();
            if let Some(h) = bad_proof.first_mut() {
                flip_bit(h, extra);
            }
            let mut bad_root = from_root;
            flip_bit(&mut bad_root, extra);
            for bad in [
                HeaderConsistency { from_size: smaller, from_root, proof: bad_proof },
                HeaderConsistency { from_size: smaller, from_root: bad_root, proof: proof.clone() },
            ] {
                let with_bad = write_export(&log, n, &selected, Some(&bad));
                for trusted in [None, Some(log.signed_checkpoint(smaller))] {
                    let err = export::verify_export(&with_bad, note_verifier(), trusted).unwrap_err();
                    prop_assert_eq!(
                        err.violation(),
                        Some(&Violation::BadConsistencyProof { from_size: smaller, size: n })
                    );
                }
            }
            // A sound proof from an older tree that is not the trusted one: a fork.
            let forked = Checkpoint {
                origin: ORIGIN.to_owned(),
                size: smaller,
                root: bad_root,
                extensions: vec![],
            }
            .sign(&signer())
            .unwrap();
            let err = export::verify_export(&with_proof, note_verifier(), Some(forked)).unwrap_err();
            prop_assert_eq!(err.violation(), Some(&Violation::RootMismatch { size: smaller }));
        }
    }

    #[test]
    fn any_byte_change_of_an_export_is_refused(
        (log, selected) in selection_strategy(),
        full in any::<bool>(),
        picks in proptest::collection::vec((any::<usize>(), 1u8..=255), 16),
    ) {
        let n = log.size();
        let selected: Vec<u64> = if full { (0..n).collect() } else { selected };
        let bytes = write_export(&log, n, &selected, None);
        export::verify_export(&bytes, note_verifier(), None).unwrap();
        for (pos, xor) in picks {
            let at = pos % bytes.len();
            let mut changed = bytes.clone();
            changed[at] ^= xor;
            let got = export::verify_export(&changed, note_verifier(), None);
            prop_assert!(got.is_err(), "byte {at} ^ {xor:#04x} accepted: {got:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Who appended an entry is covered by its hash: another key id (or `system`), or the
    /// entry passed off as version 1, is found at that entry by the streaming verifier with
    /// and without the secret, and by the export verifier, in the export as written from the
    /// tampered row and in the export's text edited afterwards.
    #[test]
    fn a_changed_key_id_is_found_at_its_entry(
        log in log_strategy(60),
        at in any::<usize>(),
        other in prop_oneof![Just("system".to_owned()), "evk_[0-9a-f]{12}"],
        downgrade in any::<bool>(),
    ) {
        let v2: Vec<usize> = (0..log.entries.len())
            .filter(|&i| log.entries[i].event.appended_by.is_some())
            .collect();
        prop_assume!(!v2.is_empty());
        let i = v2[at % v2.len()];
        let original = log.entries[i].event.appended_by.clone().unwrap();
        prop_assume!(downgrade || other != original);
        let n = log.size();
        let checkpoint = log.signed_checkpoint(n);
        let mut tampered = log.clone();
        tampered.entries[i].event.appended_by = if downgrade { None } else { Some(other.clone()) };
        let seq = i as u64;
        prop_assert_eq!(verify_online(&tampered.entries, &checkpoint), Err(Violation::ChainBroken { seq }));
        prop_assert_eq!(verify_offline(&tampered.entries, &checkpoint), Err(Violation::ChainBroken { seq }));

        let full: Vec<u64> = (0..n).collect();
        let err = export::verify_export(&write_export(&tampered, n, &full, None), note_verifier(), None).unwrap_err();
        prop_assert_eq!(err.violation(), Some(&Violation::ChainBroken { seq }));
        let err = export::verify_export(&write_export(&tampered, n, &[seq], None), note_verifier(), None).unwrap_err();
        prop_assert_eq!(err.violation(), Some(&Violation::ChainBroken { seq }));

        let text = String::from_utf8(write_export(&log, n, &full, None)).unwrap();
        let member = format!(",\"appended_by\":\"{original}\"");
        let line = text.lines().nth(i + 1).unwrap();
        prop_assert!(line.contains(&member), "{line}");
        let edited_line = line.replacen(&member, &if downgrade { String::new() } else { format!(",\"appended_by\":\"{other}\"") }, 1);
        let edited = text.replacen(line, &edited_line, 1);
        let err = export::verify_export(edited.as_bytes(), note_verifier(), None).unwrap_err();
        prop_assert_eq!(err.violation(), Some(&Violation::ChainBroken { seq }));
    }
}

/// The upgrade path: a log written with version-1 entries, then extended with version-2 ones
/// by the same chain, verifies online, offline and as an export; each entry keeps the
/// encoding it was written in.
#[test]
fn a_log_of_both_encoding_versions_verifies() {
    let input = |action: &str| {
        EventInput::from_json(&json!({
            "actor": {"id": "alice", "kind": "user"},
            "action": action,
            "target": {"kind": "node", "id": "n1"},
            "outcome": "success",
            "severity": "info"
        }))
        .unwrap()
    };
    let log = Log::build_mixed(vec![
        (input("before.upgrade"), None),
        (input("before.upgrade"), None),
        (input("before.upgrade"), None),
        (input("after.upgrade"), Some("evk_0123456789ab".to_owned())),
        (input("after.upgrade"), Some("system".to_owned())),
    ]);
    let versions: Vec<u8> = log
        .entries
        .iter()
        .map(|e| e.event.entry_version())
        .collect();
    assert_eq!(versions, [1, 1, 1, 2, 2]);
    for e in &log.entries {
        let magic = &evident_core::canonical::encode(&e.event)[..17];
        assert_eq!(
            magic,
            format!("evident/entry/v{}\0", e.event.entry_version()).as_bytes()
        );
    }
    let checkpoint = log.signed_checkpoint(5);
    assert_eq!(verify_online(&log.entries, &checkpoint), Ok(5));
    assert_eq!(verify_offline(&log.entries, &checkpoint), Ok(5));
    let bytes = write_export(&log, 5, &[0, 1, 2, 3, 4], None);
    assert_eq!(
        export::verify_export(&bytes, note_verifier(), None)
            .unwrap()
            .entries,
        5
    );
    // Version-1 lines are as they always were (no `appended_by`); version-2 lines name it.
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines[1].contains("appended_by"), "{}", lines[1]);
    assert!(
        lines[4].contains(r#""context":{},"appended_by":"evk_0123456789ab","hash":"#),
        "{}",
        lines[4]
    );
    assert!(
        lines[5].contains(r#""appended_by":"system""#),
        "{}",
        lines[5]
    );
}

#[test]
fn the_export_header_is_signed_and_its_signature_is_bound_to_it() {
    // `exported_at` and `query` say what was exported and when; the header signature covers
    // them, so editing either is refused even though no entry changes.
    let log = Log::build(vec![
        EventInput::from_json(&json!({
            "actor": {"id": "alice", "kind": "user"},
            "action": "auth.login",
            "target": {"kind": "node", "id": "n1"},
            "outcome": "success",
            "severity": "info"
        }))
        .unwrap(),
    ]);
    let bytes = write_export(&log, 1, &[0], None);
    let text = String::from_utf8(bytes).unwrap();
    export::verify_export(text.as_bytes(), note_verifier(), None).unwrap();
    let kinds = |edited: &str| {
        export::verify_export(edited.as_bytes(), note_verifier(), None)
            .unwrap_err()
            .violation()
            .map(Violation::kind)
    };
    let edited = text.replace("\"severity\":\"debug\"", "\"severity\":\"error\"");
    assert_ne!(edited, text);
    assert_eq!(kinds(&edited), Some("bad_header_signature"));
    let edited = text.replace("2026-03-14T09:20:00.123Z", "2026-03-14T09:20:00.124Z");
    assert_ne!(edited, text);
    assert_eq!(kinds(&edited), Some("bad_header_signature"));

    // A valid signature lifted from another export's header does not fit this one.
    let other_header = ExportHeader {
        node_id: NODE.to_owned(),
        checkpoint: log.signed_checkpoint(1),
        query: r#"{"actor":"bob"}"#.to_owned(),
        exported_at: 1_773_480_000_123,
    };
    let other = export::signed_header_line(&other_header, None, &signer()).unwrap();
    let sig = |t: &str| t[t.find(",\"signature\":").unwrap()..t.find('\n').unwrap()].to_owned();
    let swapped = text.replace(&sig(&text), &sig(&other));
    assert_ne!(swapped, text);
    let err = export::verify_export(swapped.as_bytes(), note_verifier(), None).unwrap_err();
    assert_eq!(
        err.violation().map(Violation::kind),
        Some("bad_header_signature")
    );
    assert!(
        err.to_string().contains("signs a different header"),
        "{err}"
    );

    // A header signed by another key is refused even when its checkpoint is genuine.
    let header_end = text.find('\n').unwrap() + 1;
    let unsigned_end = text.find(",\"signature\":").unwrap();
    let unsigned = format!("{}}}\n", &text[..unsigned_end]);
    let foreign = NoteSigner::from_seed(ORIGIN, [1u8; 32]).unwrap();
    let note = foreign.sign(&export::header_statement(&unsigned)).unwrap();
    let forged = format!(
        "{},\"signature\":{}}}\n{}",
        &text[..unsigned_end],
        serde_json::to_string(&note).unwrap(),
        &text[header_end..]
    );
    assert_eq!(kinds(&forged), Some("bad_header_signature"));

    // And a header without a signature is not an export.
    let stripped = format!("{unsigned}{}", &text[header_end..]);
    let err = export::verify_export(stripped.as_bytes(), note_verifier(), None).unwrap_err();
    assert!(
        matches!(err, ExportError::Malformed { line: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("signature"), "{err}");
}

#[test]
fn export_structure_errors_name_their_line() {
    let inputs: Vec<EventInput> = (0..6)
        .map(|i| {
            EventInput::from_json(&json!({
                "actor": {"id": format!("u{i}"), "kind": "user"},
                "action": "auth.login",
                "target": {"kind": "node", "id": "n1"},
                "outcome": "success",
                "severity": "info"
            }))
            .unwrap()
        })
        .collect();
    let log = Log::build(inputs);
    let bytes = write_export(&log, 6, &[0, 1, 3, 4], None);
    let text = String::from_utf8(bytes.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6);
    let check = |lines: &[&str]| {
        let mut joined = lines.join("\n");
        joined.push('\n');
        export::verify_export(joined.as_bytes(), note_verifier(), None)
    };
    assert!(check(&lines).is_ok());

    // Missing trailer.
    assert!(matches!(check(&lines[..5]), Err(ExportError::Truncated(_))));
    // No final newline.
    let cut = &bytes[..bytes.len() - 1];
    assert!(matches!(
        export::verify_export(cut, note_verifier(), None),
        Err(ExportError::Truncated(_))
    ));
    // Empty file.
    assert!(matches!(
        export::verify_export(b"", note_verifier(), None),
        Err(ExportError::Truncated(_))
    ));
    // A whole run dropped: the trailer counts disagree.
    let dropped = [lines[0], lines[1], lines[2], lines[5]];
    let err = check(&dropped).unwrap_err();
    assert_eq!(err.line(), Some(4), "{err}");
    // The middle line of nothing: entry 3 (starts a run) removed leaves 4 outside any run.
    let err = check(&[lines[0], lines[1], lines[2], lines[4], lines[5]]).unwrap_err();
    assert_eq!(err.line(), Some(4), "{err}");
    // Lines swapped.
    let err = check(&[lines[0], lines[2], lines[1], lines[3], lines[4], lines[5]]).unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
    // Something after the trailer.
    let err = check(&[
        lines[0], lines[1], lines[2], lines[3], lines[4], lines[5], lines[5],
    ])
    .unwrap_err();
    assert_eq!(err.line(), Some(7), "{err}");
    // Pretty-printed or re-escaped JSON is refused as non-canonical.
    let spaced = lines[1].replacen("\"seq\":0", "\"seq\": 0", 1);
    let err = check(&[lines[0], &spaced, lines[2], lines[3], lines[4], lines[5]]).unwrap_err();
    assert!(
        err.to_string().contains("line 2: not in canonical form"),
        "{err}"
    );
    // Another key's checkpoint.
    let other = NoteSigner::from_seed(ORIGIN, [1u8; 32]).unwrap().verifier();
    let err = export::verify_export(&bytes, other, None).unwrap_err();
    assert!(
        matches!(
            err.violation(),
            Some(Violation::BadCheckpointSignature { .. })
        ),
        "{err}"
    );
    // A different tree of the same size held elsewhere: a fork.
    let fork = Checkpoint {
        origin: ORIGIN.to_owned(),
        size: 6,
        root: Hash::digest(b"fork"),
        extensions: vec![],
    }
    .sign(&signer())
    .unwrap();
    let err = export::verify_export(&bytes, note_verifier(), Some(fork)).unwrap_err();
    assert_eq!(err.violation(), Some(&Violation::RootMismatch { size: 6 }));
}

#[test]
fn every_single_byte_change_of_a_small_export_is_refused() {
    // Exhaustive where the proptest above samples: every byte position; in the entry and
    // trailer lines two different changes (a low bit, which keeps letters and digits in their
    // class, and the high bit, which breaks UTF-8), in the header the low bit (each try there
    // costs a signature check).
    let inputs: Vec<EventInput> = (0..5)
        .map(|i| {
            EventInput::from_json(&json!({
                "actor": {"id": format!("u{i}"), "kind": "user", "ip": "192.0.2.1"},
                "action": "auth.login",
                "target": {"kind": "node", "id": "n1"},
                "outcome": "success",
                "severity": "info",
                "context": {"k": i, "s": "a\u{7f}\"\\é"}
            }))
            .unwrap()
        })
        .collect();
    let log = Log::build(inputs);
    let bytes = write_export(&log, 5, &[1, 3, 4], None);
    export::verify_export(&bytes, note_verifier(), None).unwrap();
    let header_len = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut after_header = export::ExportVerifier::new(note_verifier(), None);
    after_header.push_bytes(&bytes[..header_len]).unwrap();
    let mut tried = 0;
    for at in 0..bytes.len() {
        let changes: &[u8] = if at < header_len {
            &[0x01]
        } else {
            &[0x01, 0x80]
        };
        for &xor in changes {
            let mut changed = bytes.clone();
            changed[at] ^= xor;
            let got = if at < header_len {
                export::verify_export(&changed, note_verifier(), None)
            } else {
                let mut v = after_header.clone();
                v.push_bytes(&changed[header_len..])
                    .and_then(|()| v.finish())
            };
            assert!(got.is_err(), "byte {at} ^ {xor:#04x} accepted");
            tried += 1;
        }
    }
    assert!(tried > 3000, "{tried}");
}
