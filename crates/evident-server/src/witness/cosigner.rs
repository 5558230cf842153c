//! This node's witness: `add-checkpoint` for the logs of its configured cluster peers. The
//! tlog-witness decision is the core's (`evident_core::cosignature::check_add_checkpoint`);
//! this file looks up the peer's key, runs the decision and the store's compare-and-swap as
//! one atomic step, cosigns, and records a fork or rollback as an integrity event.

use crate::audit::{AuditActor, AuditEvent, RequestInfo};
use crate::cluster::ClusterConfig;
use crate::http::AppState;
use evident_core::NoteSigner;
use evident_core::NoteVerifier;
use evident_core::cosignature::{
    AddCheckpointRequest, CosignatureError, CosignatureSigner, Refusal, RequestError,
    WitnessedHead, check_add_checkpoint,
};
use evident_core::event::Millis;
use evident_store::{Store, StoreError, WitnessedCheckpoint};

/// Why the witness did not cosign. The HTTP layer maps each to its tlog-witness status.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// [400] The body is not an add-checkpoint request.
    #[error(transparent)]
    Malformed(#[from] RequestError),
    /// [404] The checkpoint's origin is not a configured peer's key name.
    #[error("unknown log origin {0:?}: not a configured cluster peer")]
    UnknownOrigin(String),
    /// [400/403/409/422] The tlog-witness checks refused it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// [500] Storage failed; nothing was cosigned.
    #[error("witness storage: {0}")]
    Store(#[from] StoreError),
    /// [500] Signing failed (a clock beyond 2^63 seconds).
    #[error(transparent)]
    Cosign(#[from] CosignatureError),
}

/// This node's cosigner key, derived from its checkpoint key (see
/// `CosignatureSigner::derived_from`).
pub fn cosigner_of(signer: &NoteSigner) -> Result<CosignatureSigner, CosignatureError> {
    CosignatureSigner::derived_from(signer)
}

/// The checkpoint key of each configured peer whose `public_key` parses.
fn peer_log_keys(cluster: &ClusterConfig) -> Vec<(String, NoteVerifier)> {
    cluster
        .peers
        .iter()
        .filter_map(|p| {
            NoteVerifier::parse(&p.public_key)
                .ok()
                .map(|v| (p.node_id.clone(), v))
        })
        .collect()
}

/// The origin line of a checkpoint note (unverified), for looking up the log's key.
fn origin_of(note: &str) -> &str {
    note.split('\n').next().unwrap_or_default()
}

/// What a refused submission showed, for the integrity event.
#[derive(Debug)]
struct Conflict {
    peer: String,
    origin: String,
    submitted_size: Option<u64>,
    refusal: Refusal,
}

/// A refusal and, for a fork or rollback, what to record about it.
#[derive(Debug)]
struct Failure {
    error: WitnessError,
    conflict: Option<Conflict>,
}

/// A [`Failure`] that is only an error (nothing to record).
fn fail(error: impl Into<WitnessError>) -> Box<Failure> {
    Box::new(Failure {
        error: error.into(),
        conflict: None,
    })
}

/// The witness step, synchronous (store calls): verify, check against the stored head,
/// compare-and-swap the new head, and return the cosignature line(s).
fn witness_blocking(
    store: &dyn Store,
    cluster: &ClusterConfig,
    cosigner: &CosignatureSigner,
    body: &str,
    now: Millis,
) -> Result<String, Box<Failure>> {
    let request = AddCheckpointRequest::parse(body).map_err(fail)?;
    let origin = origin_of(&request.checkpoint).to_owned();
    let keys = peer_log_keys(cluster);
    let Some((peer, key)) = keys.iter().find(|(_, k)| k.name() == origin) else {
        return Err(fail(WitnessError::UnknownOrigin(origin)));
    };
    // A concurrent submission for the same log may move the head between the read and the
    // write; the compare-and-swap then fails and the check runs again on the new head.
    for _ in 0..4 {
        let stored = store.witnessed_checkpoint(&origin).map_err(fail)?;
        let head = stored.as_ref().map(|w| WitnessedHead {
            size: w.size,
            root: w.root,
        });
        let checkpoint = match check_add_checkpoint(&request, key, head) {
            Ok(checkpoint) => checkpoint,
            Err(refusal) => {
                let submitted_size = evident_core::Checkpoint::open(&request.checkpoint, key)
                    .ok()
                    .map(|c| c.size);
                let conflict = refusal.is_misbehaviour(submitted_size).then(|| Conflict {
                    peer: peer.clone(),
                    origin: origin.clone(),
                    submitted_size,
                    refusal: refusal.clone(),
                });
                return Err(Box::new(Failure {
                    error: refusal.into(),
                    conflict,
                }));
            }
        };
        let record = WitnessedCheckpoint {
            origin: origin.clone(),
            size: checkpoint.size,
            root: checkpoint.root,
            signed_note: request.checkpoint.clone(),
            updated_at: now,
        };
        match store.record_witnessed_checkpoint(&record, head.map_or(0, |h| h.size)) {
            Ok(()) => {}
            Err(StoreError::WitnessMoved { .. }) => continue,
            Err(e) => return Err(fail(e)),
        }
        let seconds = u64::try_from(now / 1000).unwrap_or(0);
        return cosigner
            .cosign_note(&request.checkpoint, seconds)
            .map_err(fail);
    }
    Err(fail(StoreError::Backend(
        "witness state kept moving under concurrent submissions".into(),
    )))
}

/// `add-checkpoint`: the cosignature line(s) for the submitted checkpoint, or why not. A
/// fork or rollback is recorded as [`super::CONFLICT_ACTION`] (an integrity alert) before
/// the refusal is returned.
pub async fn add_checkpoint(state: &AppState, body: String) -> Result<String, WitnessError> {
    let cosigner = cosigner_of(state.node().files().signer())?;
    let worker = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        witness_blocking(
            &**worker.store(),
            &worker.node().config().cluster,
            &cosigner,
            &body,
            crate::now_ms(),
        )
    })
    .await
    .map_err(|e| WitnessError::Store(StoreError::Backend(format!("witness task: {e}"))))?;
    match outcome {
        Ok(lines) => Ok(lines),
        Err(failure) => {
            if let Some(conflict) = &failure.conflict {
                record_conflict(state, conflict).await;
            }
            Err(failure.error)
        }
    }
}

async fn record_conflict(state: &AppState, conflict: &Conflict) {
    tracing::error!(peer = %conflict.peer, origin = %conflict.origin, refusal = %conflict.refusal,
        "a cluster peer presented a checkpoint inconsistent with the one this witness cosigned");
    let mut event = AuditEvent::new(
        super::CONFLICT_ACTION,
        "failure",
        "critical",
        "node",
        conflict.peer.clone(),
    )
    .with("origin", conflict.origin.clone())
    .with("reason", conflict.refusal.to_string());
    if let Some(known) = conflict.refusal.known_size() {
        event = event.with("witnessed_size", known);
    }
    if let Some(size) = conflict.submitted_size {
        event = event.with("submitted_size", size);
    }
    state
        .record(
            &AuditActor::System("evident"),
            &RequestInfo::default(),
            event,
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PeerConfig;
    use evident_core::merkle::{self, CompactRange, leaf_hash};
    use evident_core::{Checkpoint, Hash};
    use evident_store::sqlite::SqliteStore;

    fn log() -> NoteSigner {
        NoteSigner::from_seed("evident/node-2", [2; 32]).unwrap()
    }

    /// The leaves of a history of `n` entries whose contents start with `tag`.
    fn leaves(n: u64, tag: u8) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&[tag, i as u8])).collect()
    }

    fn signed(leaves: &[Hash]) -> String {
        let mut range = CompactRange::new();
        let mut done = Vec::new();
        for leaf in leaves {
            range.append_leaf(*leaf, &mut done);
        }
        Checkpoint {
            origin: log().name().to_owned(),
            size: leaves.len() as u64,
            root: range.root(),
            extensions: vec![],
        }
        .sign(&log())
        .unwrap()
    }

    /// The hash of the complete subtree `id` over `leaves`.
    fn subtree(leaves: &[Hash], id: merkle::NodeId) -> Hash {
        if id.level == 0 {
            return leaves[id.index as usize];
        }
        let left = merkle::NodeId {
            level: id.level - 1,
            index: id.index * 2,
        };
        let right = merkle::NodeId {
            level: id.level - 1,
            index: id.index * 2 + 1,
        };
        merkle::node_hash(&subtree(leaves, left), &subtree(leaves, right))
    }

    /// `add-checkpoint` body from `old` of the history `leaves`, with a real proof.
    fn body(old: u64, leaves: &[Hash]) -> String {
        let new = leaves.len() as u64;
        let proof = if old == 0 || old >= new {
            Vec::new()
        } else {
            let plan = merkle::consistency_plan(old, new).unwrap();
            let hashes: Vec<Hash> = plan.nodes().iter().map(|n| subtree(leaves, *n)).collect();
            plan.assemble(&hashes).unwrap()
        };
        AddCheckpointRequest {
            old_size: old,
            proof,
            checkpoint: signed(leaves),
        }
        .to_body()
    }

    #[test]
    fn witness_cosigns_growth_and_refuses_rollbacks_and_forks_keeping_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("w.db")).unwrap();
        let cluster = ClusterConfig {
            peers: vec![PeerConfig {
                node_id: "node-2".into(),
                url: "https://127.0.0.1:1".into(),
                public_key: log().verifier().to_vkey_string(),
            }],
            ..ClusterConfig::default()
        };
        let me = CosignatureSigner::from_seed("evident/node-1/witness", [1; 32]).unwrap();
        let run = |body: &str| witness_blocking(&store, &cluster, &me, body, 1_700_000_000_000);
        let good = leaves(6, 0);

        let first = run(&body(0, &good[..3])).unwrap();
        let cosigned = format!("{}{first}", signed(&good[..3]));
        assert_eq!(me.verifier().verify(&cosigned), Ok(Some(1_700_000_000)));
        run(&body(3, &good[..5])).unwrap();
        // The same checkpoint again is fine (idempotent).
        run(&body(5, &good[..5])).unwrap();

        let refusal = |body: &str| match run(body).map_err(|f| *f) {
            Err(Failure {
                error: WitnessError::Refused(r),
                conflict,
            }) => (r, conflict.is_some()),
            other => panic!("expected a refusal, got {other:?}"),
        };
        // A client that is behind: 409 with the known size, not misbehaviour.
        let (stale, alert) = refusal(&body(3, &good[..6]));
        assert_eq!((stale.known_size(), alert), (Some(5), false));
        // Rollback: a smaller checkpoint.
        let (back, alert) = refusal(&body(0, &good[..4]));
        assert_eq!((back.known_size(), alert), (Some(5), true));
        // Fork at the same size, and a fork that grew (the proof cannot verify).
        let other: Vec<Hash> = good[..3].iter().copied().chain(leaves(3, 9)).collect();
        let (same, alert) = refusal(&body(5, &other[..5]));
        assert_eq!((same, alert), (Refusal::Fork { known: 5 }, true));
        let (grown, alert) = refusal(&body(5, &other));
        assert!(
            matches!(grown, Refusal::Inconsistent { old: 5, .. }) && alert,
            "{grown:?}"
        );
        // Signed by someone else under the peer's origin: 403, no alert.
        let stranger = NoteSigner::from_seed("evident/node-2", [7; 32]).unwrap();
        let forged = AddCheckpointRequest {
            old_size: 5,
            proof: vec![],
            checkpoint: Checkpoint::parse(
                &evident_core::note::open(&signed(&other[..5]), &[log().verifier()])
                    .unwrap()
                    .text,
            )
            .unwrap()
            .sign(&stranger)
            .unwrap(),
        };
        let (unsigned, alert) = refusal(&forged.to_body());
        assert!(matches!(unsigned, Refusal::Unsigned(_)) && !alert);

        // The head never moved past a refusal; growth from it still works.
        assert_eq!(
            store
                .witnessed_checkpoint("evident/node-2")
                .unwrap()
                .unwrap()
                .size,
            5
        );
        run(&body(5, &good)).unwrap();
        assert_eq!(
            store
                .witnessed_checkpoint("evident/node-2")
                .unwrap()
                .unwrap()
                .size,
            6
        );

        // Unknown origin; malformed body.
        let unknown = NoteSigner::from_seed("evident/node-9", [9; 32]).unwrap();
        let cp = Checkpoint {
            origin: "evident/node-9".into(),
            size: 1,
            root: Hash([0; 32]),
            extensions: vec![],
        };
        let body9 = format!("old 0\n\n{}", cp.sign(&unknown).unwrap());
        for (body, what) in [
            (body9.as_str(), "unknown origin"),
            ("nonsense", "malformed"),
        ] {
            let failure = run(body).unwrap_err();
            assert!(failure.conflict.is_none(), "{what}");
            assert!(
                matches!(
                    (&failure.error, what),
                    (WitnessError::UnknownOrigin(_), "unknown origin")
                        | (WitnessError::Malformed(_), "malformed")
                ),
                "{what}: {:?}",
                failure.error
            );
        }
    }
}
