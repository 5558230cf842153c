//! Signing-key rotation chains and seal-key epochs (docs/FORMAT.md §18): a verifier pinned to
//! the old key follows a rotation the old key signed, and refuses one it did not sign or whose
//! new key was swapped; a walk checks each entry's seal with its epoch's secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use evident_core::chain::{ChainHead, GENESIS_PREV_HASH, SealKey, SealedEntry};
use evident_core::checkpoint::Checkpoint;
use evident_core::event::{Actor, ActorKind, Context, EventInput, Outcome, Severity, Target};
use evident_core::export::{self, ExportEntry, ExportError, ExportHeader, RunEnd, RunStart};
use evident_core::merkle::NodeId;
use evident_core::note::{NoteSigner, NoteVerifier};
use evident_core::rotation::{
    KeyChain, SEAL_ROTATION_ACTION, SIGNING_ROTATION_ACTION, SealEpoch, SealEpochs, SealRotation,
    SigningRotation, seal_key_id,
};
use evident_core::verify::{Anchor, StreamVerifier, Violation};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use uuid::Uuid;

const NODE: &str = "node-a";
const ORIGIN: &str = "example.com/rotating";

fn signer(seed: u8) -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, [seed; 32]).unwrap()
}

fn seal(secret: u8) -> SealKey {
    SealKey::new(&[secret; 32]).unwrap()
}

fn input(action: &str, context: Value) -> EventInput {
    EventInput {
        occurred_at: None,
        tenant: "default".to_owned(),
        actor: Actor {
            id: "evident".to_owned(),
            kind: ActorKind::System,
            ip: None,
            user_agent: None,
        },
        action: action.to_owned(),
        target: Target {
            kind: "node".to_owned(),
            id: NODE.to_owned(),
        },
        outcome: Outcome::Success,
        severity: Severity::Notice,
        context: Context::from_value(&context).unwrap(),
    }
}

/// What a log entry is: an ordinary event, a signing rotation, or a seal rotation.
#[derive(Clone)]
enum Step {
    Plain,
    /// Rotate from signer `from` to signer `to`; `sign_with` signs the statement (normally
    /// `from`), `claim` is the new key the event names (normally `to`).
    Signing {
        from: u8,
        to: u8,
        sign_with: u8,
        claim: u8,
    },
    /// Rotate the seal secret to `secret` (epoch numbers count up from 2).
    Seal {
        secret: u8,
    },
}

struct Log {
    entries: Vec<SealedEntry>,
    nodes: HashMap<NodeId, evident_core::Hash>,
    roots: Vec<evident_core::Hash>,
    epochs: Vec<SealEpoch>,
}

fn build(steps: &[Step]) -> Log {
    let mut head = ChainHead::genesis();
    let mut completed = Vec::new();
    let mut entries = Vec::new();
    let mut roots = vec![head.tree.root()];
    let mut epochs = vec![SealEpoch {
        epoch: 1,
        first_seq: 0,
        key: seal(1),
    }];
    for (i, step) in steps.iter().enumerate() {
        let seq = head.next_seq;
        let event = match step {
            Step::Plain => input("user.login", json!({ "n": i })),
            Step::Signing {
                from,
                to,
                sign_with,
                claim,
            } => {
                let mut rotation =
                    SigningRotation::sign(&signer(*from), &signer(*to).verifier(), seq, 5).unwrap();
                if sign_with != from {
                    // A statement naming `from` as the old key, signed by another key.
                    let forged = SigningRotation::sign(
                        &NoteSigner::from_seed(ORIGIN, [*sign_with; 32]).unwrap(),
                        &signer(*to).verifier(),
                        seq,
                        5,
                    )
                    .unwrap();
                    rotation.signature = forged.signature;
                }
                rotation.new = signer(*claim).verifier();
                input(SIGNING_ROTATION_ACTION, rotation.to_context())
            }
            Step::Seal { secret } => {
                let epoch = epochs.len() as u32 + 1;
                epochs.push(SealEpoch {
                    epoch,
                    first_seq: seq + 1,
                    key: seal(*secret),
                });
                let rotation = SealRotation {
                    epoch,
                    first_seq: seq + 1,
                    key_id: seal_key_id(&seal(*secret)),
                };
                input(SEAL_ROTATION_ACTION, rotation.to_context())
            }
        };
        // The entry is sealed with the epoch it belongs to: a seal rotation event is the
        // last entry of the old epoch.
        let key = epochs
            .iter()
            .rev()
            .find(|e| e.first_seq <= seq)
            .unwrap()
            .key
            .clone();
        let id = Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0000 | u128::from(seq));
        entries.push(head.append(
            id,
            1_773_478_800_000 + i as i64,
            NODE,
            "system",
            event,
            &key,
            &mut completed,
        ));
        roots.push(head.tree.root());
    }
    Log {
        entries,
        nodes: completed.into_iter().collect(),
        roots,
        epochs,
    }
}

impl Log {
    fn checkpoint(&self, size: u64, signers: &[NoteSigner]) -> String {
        Checkpoint {
            origin: ORIGIN.to_owned(),
            size,
            root: self.roots[size as usize],
            extensions: vec![],
        }
        .sign_all(signers)
        .unwrap()
    }

    /// An unfiltered export of every entry, checkpoint and header signed by `signers`.
    fn export(&self, signers: &[NoteSigner]) -> Vec<u8> {
        let size = self.entries.len() as u64;
        let header = ExportHeader {
            node_id: NODE.to_owned(),
            checkpoint: self.checkpoint(size, signers),
            query: "{}".to_owned(),
            exported_at: 1_773_480_000_000,
        };
        let line = export::signed_header_line_all(&header, None, signers).unwrap();
        let mut out = line.into_bytes();
        let last = self.entries.len() - 1;
        for (k, entry) in self.entries.iter().enumerate() {
            let run_start = (k == 0).then(|| RunStart {
                prev_hash: GENESIS_PREV_HASH,
                left: vec![],
            });
            let run_end = (k == last).then(|| RunEnd { right: vec![] });
            out.extend_from_slice(
                export::entry_line(&ExportEntry {
                    entry: entry.clone(),
                    run_start,
                    run_end,
                })
                .as_bytes(),
            );
        }
        let _ = &self.nodes;
        out.extend_from_slice(export::trailer_line(self.entries.len() as u64, 1).as_bytes());
        out
    }

    fn walk(&self, epochs: SealEpochs, trusted: &[NoteVerifier]) -> Result<u64, Violation> {
        let mut v = StreamVerifier::new(Anchor::genesis(), None, Some(NODE.to_owned()))
            .with_seal_epochs(epochs);
        let size = self.entries.len() as u64;
        v.trust_checkpoint(
            Checkpoint::open_any(&self.checkpoint(size, &[signer(1), signer(2)]), trusted).unwrap(),
        );
        for e in &self.entries {
            v.push(e)?;
        }
        v.finish().map(|r| r.entries)
    }
}

fn valid_rotation(from: u8, to: u8) -> Step {
    Step::Signing {
        from,
        to,
        sign_with: from,
        claim: to,
    }
}

fn violation_kind(e: ExportError) -> (&'static str, Option<u64>) {
    match e {
        ExportError::Violation { violation, .. } => (violation.kind(), violation.seq()),
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn a_verifier_pinned_to_the_old_key_follows_the_rotation() {
    let log = build(&[Step::Plain, valid_rotation(1, 2), Step::Plain, Step::Plain]);
    // After the transition only the new key signs: pinned to the old one, the export verifies
    // through the rotation event it holds.
    let report = export::verify_export(&log.export(&[signer(2)]), signer(1).verifier(), None)
        .expect("the rotation chain leads to the new key");
    assert_eq!(report.entries, 4);
    assert_eq!(
        report.rotated_to,
        vec![signer(2).verifier().to_vkey_string()]
    );
    // During the transition both keys sign: nothing to follow for the old key's verifier,
    // and the new key's verifier accepts it too.
    let both = log.export(&[signer(1), signer(2)]);
    for pinned in [signer(1), signer(2)] {
        export::verify_export(&both, pinned.verifier(), None).unwrap();
    }
    // Pinned to the new key, a log whose old part is signed by the old key only is refused:
    // trust only flows forward.
    let old_only = log.export(&[signer(1)]);
    let (kind, _) =
        violation_kind(export::verify_export(&old_only, signer(2).verifier(), None).unwrap_err());
    assert_eq!(kind, "bad_checkpoint_signature");
}

#[test]
fn a_trusted_checkpoint_by_the_new_key_is_checked_once_the_rotation_is_read() {
    let log = build(&[Step::Plain, valid_rotation(1, 2), Step::Plain]);
    let size = log.entries.len() as u64;
    // Held elsewhere, signed by the new key alone; the export by both.
    let kept = log.checkpoint(size, &[signer(2)]);
    let both = log.export(&[signer(1), signer(2)]);
    export::verify_export(&both, signer(1).verifier(), Some(kept)).unwrap();
    // A kept checkpoint of another tree of that size is still a fork, once it can be read.
    let other = build(&[Step::Plain, valid_rotation(1, 2), Step::Seal { secret: 4 }]);
    let forked = other.checkpoint(size, &[signer(2)]);
    let (kind, _) = violation_kind(
        export::verify_export(&both, signer(1).verifier(), Some(forked)).unwrap_err(),
    );
    assert_eq!(kind, "root_mismatch");
    // Without the rotation in the export, the kept checkpoint cannot be opened.
    let plain = build(&[Step::Plain, Step::Plain, Step::Plain]);
    let (kind, _) = violation_kind(
        export::verify_export(
            &plain.export(&[signer(1)]),
            signer(1).verifier(),
            Some(plain.checkpoint(size, &[signer(2)])),
        )
        .unwrap_err(),
    );
    assert_eq!(kind, "bad_checkpoint_signature");
}

#[test]
fn a_chain_of_two_rotations_is_followed_to_its_end() {
    let log = build(&[valid_rotation(1, 2), Step::Plain, valid_rotation(2, 3)]);
    let report =
        export::verify_export(&log.export(&[signer(3)]), signer(1).verifier(), None).unwrap();
    assert_eq!(report.rotated_to.len(), 2);
    // Skipping a link breaks the chain: from key 1, a rotation 2 → 3 teaches nothing.
    let gap = build(&[Step::Plain, valid_rotation(2, 3)]);
    let (kind, _) = violation_kind(
        export::verify_export(&gap.export(&[signer(3)]), signer(1).verifier(), None).unwrap_err(),
    );
    assert_eq!(kind, "bad_checkpoint_signature");
}

#[test]
fn a_rotation_not_signed_by_the_old_key_is_refused() {
    // The attacker's key 9 signs a statement that names key 1 as the old key.
    let log = build(&[
        Step::Plain,
        Step::Signing {
            from: 1,
            to: 2,
            sign_with: 9,
            claim: 2,
        },
        Step::Plain,
    ]);
    let (kind, seq) = violation_kind(
        export::verify_export(&log.export(&[signer(2)]), signer(1).verifier(), None).unwrap_err(),
    );
    assert_eq!((kind, seq), ("bad_key_rotation", Some(1)));
    // The walk over stored entries refuses it too, whatever key it trusts.
    let err = log
        .walk(
            SealEpochs::single(seal(1)),
            &[signer(1).verifier(), signer(2).verifier()],
        )
        .unwrap_err();
    assert_eq!((err.kind(), err.seq()), ("bad_key_rotation", Some(1)));
    let mut chain = KeyChain::new(signer(1).verifier());
    assert!(chain.follow(&log.entries[1].event).is_err());
    assert_eq!(chain.trusted().len(), 1);
}

#[test]
fn a_forged_new_key_is_refused() {
    // The old key signed a rotation to key 2; the event claims key 9 instead.
    let log = build(&[
        Step::Signing {
            from: 1,
            to: 2,
            sign_with: 1,
            claim: 9,
        },
        Step::Plain,
    ]);
    let (kind, seq) = violation_kind(
        export::verify_export(&log.export(&[signer(9)]), signer(1).verifier(), None).unwrap_err(),
    );
    assert_eq!((kind, seq), ("bad_key_rotation", Some(0)));
}

#[test]
fn seals_are_checked_with_each_epochs_secret() {
    let log = build(&[
        Step::Plain,
        Step::Seal { secret: 2 },
        Step::Plain,
        Step::Seal { secret: 3 },
        Step::Plain,
    ]);
    let trusted = [signer(1).verifier()];
    let all = SealEpochs::new(log.epochs.clone()).unwrap();
    assert_eq!(log.walk(all, &trusted).unwrap(), 5);
    // The first secret alone does not verify the later epochs.
    let err = log.walk(SealEpochs::single(seal(1)), &trusted).unwrap_err();
    assert_eq!((err.kind(), err.seq()), ("bad_seal_rotation", Some(1)));
    // An epoch's wrong secret is a seal mismatch at its first entry.
    let mut wrong = log.epochs.clone();
    wrong[1].key = seal(7);
    let err = log
        .walk(SealEpochs::new(wrong).unwrap(), &trusted)
        .unwrap_err();
    assert_eq!(err.kind(), "bad_seal_rotation", "{err}");
    // Secrets that place a boundary where the log has no rotation event are refused.
    let mut shifted = log.epochs.clone();
    shifted[2].first_seq = 3;
    let err = log
        .walk(SealEpochs::new(shifted).unwrap(), &trusted)
        .unwrap_err();
    assert_eq!(err.kind(), "bad_seal_rotation");
    // Offline (no secrets), the log verifies against its checkpoint.
    let offline = export::verify_export(&log.export(&[signer(1)]), signer(1).verifier(), None);
    assert!(offline.is_ok());
}

#[test]
fn old_seal_secrets_are_needed_until_retention_pruned_their_epoch() {
    let log = build(&[
        Step::Plain,
        Step::Seal { secret: 2 },
        Step::Plain,
        Step::Seal { secret: 3 },
        Step::Plain,
    ]);
    let epochs = SealEpochs::new(log.epochs.clone()).unwrap();
    // Epoch 1 is entries 0–1, epoch 2 entries 2–3, epoch 3 from 4.
    assert_eq!(epochs.needed_from(0), vec![1, 2, 3]);
    // Pruned below 2: the anchor (entry 1) is still checked with epoch 1's secret.
    assert_eq!(epochs.needed_from(2), vec![1, 2, 3]);
    assert_eq!(epochs.needed_from(3), vec![2, 3]);
    assert_eq!(epochs.needed_from(5), vec![3]);
    // Without epoch 1, entries from 2 still verify.
    let kept = SealEpochs::new(log.epochs[1..].to_vec()).unwrap();
    assert!(kept.epoch_for(1).is_none());
    assert!(kept.check(2, &log.entries[2].hash, &log.entries[2].seal));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Wherever the rotation falls, the old key's verifier accepts the log signed by the new
    /// key, and refuses it when the event's new key is swapped for any other.
    #[test]
    fn rotations_are_followed_and_forgeries_refused(
        before in 0usize..4,
        after in 0usize..4,
        claim in 3u8..=255,
    ) {
        let mut steps = vec![Step::Plain; before];
        steps.push(valid_rotation(1, 2));
        steps.extend(vec![Step::Plain; after]);
        let log = build(&steps);
        prop_assert!(export::verify_export(&log.export(&[signer(2)]), signer(1).verifier(), None).is_ok());
        steps[before] = Step::Signing { from: 1, to: 2, sign_with: 1, claim };
        let forged = build(&steps);
        let err = export::verify_export(&forged.export(&[signer(claim)]), signer(1).verifier(), None).unwrap_err();
        prop_assert_eq!(violation_kind(err), ("bad_key_rotation", Some(before as u64)));
    }
}
