//! Verification of a node's stored log: walks every entry in sequence order through the core's
//! [`StreamVerifier`] with the node's seal key and every stored checkpoint trusted. The ONE
//! verification behind `GET /api/v1/verify` and `evident verify --data-dir`; it decides
//! nothing itself, the core does.

use crate::scan::scan_chunked;
use evident_core::merkle::{CompactRange, subtree_ids};
use evident_core::verify::{Anchor, VerifyReport};
use evident_core::{NoteVerifier, SealKey, StreamVerifier, Violation};
use evident_store::{Filter, Order, Store, StoreError};
use std::ops::ControlFlow;

/// Entries read per progress callback.
const PROGRESS_EVERY: u64 = 10_000;

/// What is wrong with a stored log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The integrity core found a violation.
    #[error(transparent)]
    Violation(#[from] Violation),
    /// A stored row cannot even be decoded (corruption or tampering of the database).
    #[error("entry {}: stored row cannot be decoded: {problem}", seq.map_or("?".to_owned(), |s| s.to_string()))]
    Undecodable { seq: Option<u64>, problem: String },
}

impl Problem {
    /// Stable machine-readable kind (`chain_broken`, …, `undecodable_entry`).
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Violation(v) => v.kind(),
            Problem::Undecodable { .. } => "undecodable_entry",
        }
    }

    /// The sequence number at which the problem shows, when known.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Problem::Violation(v) => v.seq(),
            Problem::Undecodable { seq, .. } => *seq,
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
}

/// Verifies the stored log from `from_seq` (default: the first entry). Starting later trusts
/// the stored chain hash and Merkle nodes just before `from_seq`; checkpoints smaller than
/// `from_seq` cannot be checked from there and are skipped.
pub fn verify_store(
    store: &dyn Store,
    seal_key: &SealKey,
    verifier: &NoteVerifier,
    node_id: &str,
    from_seq: Option<u64>,
) -> Result<VerifyOutcome, VerifyError> {
    verify_store_with_progress(store, seal_key, verifier, node_id, from_seq, &mut |_| {})
}

/// [`verify_store`], calling `progress(entries_checked_so_far)` now and then (for a progress
/// bar).
pub fn verify_store_with_progress(
    store: &dyn Store,
    seal_key: &SealKey,
    verifier: &NoteVerifier,
    node_id: &str,
    from_seq: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyOutcome, VerifyError> {
    let from = from_seq.unwrap_or(0);
    let anchor = if from == 0 {
        Anchor::genesis()
    } else {
        anchor_at(store, from)?
    };
    let mut stream = StreamVerifier::new(anchor, Some(seal_key.clone()), Some(node_id.to_owned()));
    for checkpoint in store.checkpoints()? {
        if checkpoint.size < from {
            continue;
        }
        if let Err(violation) = stream.trust_signed_checkpoint(&checkpoint.signed_note, verifier) {
            return Ok(VerifyOutcome::Broken {
                problem: violation.into(),
                entries_checked: 0,
            });
        }
    }

    let filter = Filter {
        from_seq: Some(from),
        ..Filter::default()
    };
    let mut checked = 0u64;
    let mut next_seq = from;
    let mut found: Option<Violation> = None;
    let scanned = scan_chunked(
        store,
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
        return Ok(VerifyOutcome::Broken {
            problem: violation.into(),
            entries_checked: checked,
        });
    }
    match scanned {
        Ok(()) => {}
        Err(StoreError::Corrupt { seq, problem }) => {
            return Ok(VerifyOutcome::Broken {
                // Rows come in order, so an undecodable row without a number is the next one.
                problem: Problem::Undecodable {
                    seq: seq.or(Some(next_seq)),
                    problem,
                },
                entries_checked: checked,
            });
        }
        Err(e) => return Err(e.into()),
    }
    match stream.finish() {
        Ok(report) => Ok(VerifyOutcome::Intact(report)),
        Err(violation) => Ok(VerifyOutcome::Broken {
            problem: violation.into(),
            entries_checked: checked,
        }),
    }
}

/// The chain and tree state just before entry `from`, from stored data.
fn anchor_at(store: &dyn Store, from: u64) -> Result<Anchor, VerifyError> {
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
            f.seal_key(),
            &f.verifier(),
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
}
