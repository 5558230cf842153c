//! This node's witness: `add-checkpoint` for the logs of its configured cluster peers. The
//! tlog-witness decision is the core's (`evident_core::cosignature::check_add_checkpoint`);
//! this file looks up the peer and the keys trusted for it (`peer_keys.rs`: its configured key
//! and the keys its verified rotations led to), runs the decision and the store's
//! compare-and-swap as one atomic step, cosigns, and records a fork or rollback as an
//! integrity event. A checkpoint signed under the peer's origin by a key not trusted yet makes
//! the witness read the peer's rotation events and decide again.

use super::peer_keys::{self, RotationFetchError};
use crate::audit::{AuditActor, AuditEvent, RequestInfo};
use crate::cluster::{ClusterConfig, PeerConfig};
use crate::http::AppState;
use crate::node::NodeFiles;
use evident_core::NoteVerifier;
use evident_core::cosignature::{
    AddCheckpointRequest, CosignatureError, CosignatureSigner, Refusal, RequestError,
    WitnessedHead, check_add_checkpoint, signed_by_untrusted_key,
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

/// This node's cosigner (witness) key: derived (`CosignatureSigner::derived_from`) from the
/// node's ORIGINAL signing key, `keys/checkpoint.key`, so that it stays the same across the
/// node's own signing-key rotations (docs/FORMAT.md §16, §18): peers' `[witness].keys` and
/// `evident verify --witness-key` keep counting its cosignatures. Every caller (the witness,
/// `GET /api/v1/witness`, `evident public-key --witness`) uses this one function.
///
/// Retiring a compromised original key does not change this key: its seed derives it, so
/// the witness identity is compromised with it and must be dropped from every `[witness].keys`
/// (see README, key rotation).
pub fn node_cosigner(files: &NodeFiles) -> Result<CosignatureSigner, CosignatureError> {
    CosignatureSigner::derived_from(files.signing().original())
}

/// The configured peer whose `public_key` is named `origin` (a key whose name is the origin
/// of the log it signs).
fn peer_of<'c>(cluster: &'c ClusterConfig, origin: &str) -> Option<&'c PeerConfig> {
    cluster
        .peers
        .iter()
        .find(|p| NoteVerifier::parse(&p.public_key).is_ok_and(|v| v.name() == origin))
}

/// The origin line of a checkpoint note (unverified), for looking up the log's key.
fn origin_of(note: &str) -> &str {
    note.split('\n').next().unwrap_or_default()
}

/// The request in `body` and the configured peer whose log it is from.
fn resolve(
    cluster: &ClusterConfig,
    body: &str,
) -> Result<(AddCheckpointRequest, PeerConfig), WitnessError> {
    let request = AddCheckpointRequest::parse(body)?;
    let origin = origin_of(&request.checkpoint);
    let Some(peer) = peer_of(cluster, origin) else {
        return Err(WitnessError::UnknownOrigin(origin.to_owned()));
    };
    Ok((request, peer.clone()))
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

/// The witness step, synchronous (store calls): verify with the keys `trusted` for `peer`,
/// check against the stored head, compare-and-swap the new head, and return the cosignature
/// line(s).
fn witness_blocking(
    store: &dyn Store,
    peer: &str,
    trusted: &[NoteVerifier],
    cosigner: &CosignatureSigner,
    request: &AddCheckpointRequest,
    now: Millis,
) -> Result<String, Box<Failure>> {
    let origin = origin_of(&request.checkpoint).to_owned();
    // A concurrent submission for the same log may move the head between the read and the
    // write; the compare-and-swap then fails and the check runs again on the new head.
    for _ in 0..4 {
        let stored = store.witnessed_checkpoint(&origin).map_err(fail)?;
        let head = stored.as_ref().map(|w| WitnessedHead {
            size: w.size,
            root: w.root,
        });
        let checkpoint = match check_add_checkpoint(request, trusted, head) {
            Ok(checkpoint) => checkpoint,
            Err(refusal) => {
                let submitted_size =
                    evident_core::Checkpoint::open_any(&request.checkpoint, trusted)
                        .ok()
                        .map(|c| c.size);
                let conflict = refusal.is_misbehaviour(submitted_size).then(|| Conflict {
                    peer: peer.to_owned(),
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

/// Runs [`witness_blocking`] off the async runtime.
async fn witness_task(
    state: &AppState,
    peer: &PeerConfig,
    trusted: Vec<NoteVerifier>,
    cosigner: &CosignatureSigner,
    request: &AddCheckpointRequest,
) -> Result<Result<String, Box<Failure>>, WitnessError> {
    let (worker, peer, cosigner, request) = (
        state.clone(),
        peer.node_id.clone(),
        cosigner.clone(),
        request.clone(),
    );
    tokio::task::spawn_blocking(move || {
        witness_blocking(
            &**worker.store(),
            &peer,
            &trusted,
            &cosigner,
            &request,
            crate::now_ms(),
        )
    })
    .await
    .map_err(|e| WitnessError::Store(StoreError::Backend(format!("witness task: {e}"))))
}

/// Whether `outcome` is a 403 for a checkpoint signed under the peer's origin by a key not
/// in `trusted`: one the peer may have rotated to.
fn needs_rotations(
    outcome: &Result<String, Box<Failure>>,
    request: &AddCheckpointRequest,
    trusted: &[NoteVerifier],
) -> bool {
    matches!(outcome, Err(f) if matches!(f.error, WitnessError::Refused(Refusal::Unsigned(_))))
        && signed_by_untrusted_key(&request.checkpoint, origin_of(&request.checkpoint), trusted)
}

/// Reads `peer`'s rotation events and follows them from the keys trusted for it.
async fn learn_rotations(state: &AppState, peer: &PeerConfig) -> Result<(), RotationFetchError> {
    let client = state
        .peer_client()
        .map_err(|problem| RotationFetchError::Malformed {
            node: peer.node_id.clone(),
            problem: format!("no peer client: {problem}"),
        })?;
    let events = peer_keys::fetch_rotations(client, peer).await?;
    let report = state.peer_keys().learn(peer, &events)?;
    for (seq, problem) in &report.refused {
        tracing::warn!(peer = %peer.node_id, seq, %problem,
            "a peer's rotation event is not a valid rotation; it teaches this witness nothing");
    }
    for key in &report.learned {
        tracing::info!(peer = %peer.node_id, key = %key.to_vkey_string(),
            "following the peer's signing-key rotation: its new key is trusted");
    }
    Ok(())
}

/// `add-checkpoint`: the cosignature line(s) for the submitted checkpoint, or why not. A
/// checkpoint signed by a key of the peer's origin this witness does not trust yet makes it
/// learn the peer's rotations first (and decide again). A fork or rollback is recorded as
/// [`super::CONFLICT_ACTION`] (an integrity alert) before the refusal is returned.
pub async fn add_checkpoint(state: &AppState, body: String) -> Result<String, WitnessError> {
    let cosigner = node_cosigner(state.node().files())?;
    let (request, peer) = resolve(&state.node().config().cluster, &body)?;
    let trusted = state
        .peer_keys()
        .trusted(&peer)
        .map_err(|_| WitnessError::UnknownOrigin(origin_of(&request.checkpoint).to_owned()))?;
    let mut outcome = witness_task(state, &peer, trusted.clone(), &cosigner, &request).await?;
    if needs_rotations(&outcome, &request, &trusted) {
        if let Err(e) = learn_rotations(state, &peer).await {
            tracing::warn!(peer = %peer.node_id, error = %e,
                "cannot read the peer's rotation events; its checkpoint stays refused");
        }
        // Decide again if this or a concurrent submission taught a key.
        let now_trusted = state
            .peer_keys()
            .trusted(&peer)
            .map_err(|_| WitnessError::UnknownOrigin(origin_of(&request.checkpoint).to_owned()))?;
        if now_trusted.len() > trusted.len() {
            outcome = witness_task(state, &peer, now_trusted, &cosigner, &request).await?;
        }
    }
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
    use crate::witness::PeerKeys;
    use evident_core::NoteSigner;
    use evident_core::event::{Actor, ActorKind, Context, Event, Outcome, Severity, Target};
    use evident_core::merkle::{self, CompactRange, leaf_hash};
    use evident_core::rotation::{SIGNING_ROTATION_ACTION, SigningRotation};
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
        signed_by(leaves, &log())
    }

    fn signed_by(leaves: &[Hash], signer: &NoteSigner) -> String {
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
        .sign(signer)
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
        body_by(old, leaves, &log())
    }

    /// [`body`] with the checkpoint signed by `signer`.
    fn body_by(old: u64, leaves: &[Hash], signer: &NoteSigner) -> String {
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
            checkpoint: signed_by(leaves, signer),
        }
        .to_body()
    }

    /// The synchronous half of [`add_checkpoint`]: the request's peer, the keys trusted for
    /// it in `keys`, and the witness step.
    fn witness(
        store: &dyn Store,
        cluster: &ClusterConfig,
        keys: &PeerKeys,
        me: &CosignatureSigner,
        body: &str,
    ) -> Result<String, Box<Failure>> {
        let (request, peer) = resolve(cluster, body).map_err(fail)?;
        let trusted = keys.trusted(&peer).unwrap();
        witness_blocking(
            store,
            &peer.node_id,
            &trusted,
            me,
            &request,
            1_700_000_000_000,
        )
    }

    fn cluster_of_node_2() -> ClusterConfig {
        ClusterConfig {
            peers: vec![PeerConfig {
                node_id: "node-2".into(),
                url: "https://127.0.0.1:1".into(),
                public_key: log().verifier().to_vkey_string(),
            }],
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn witness_cosigns_growth_and_refuses_rollbacks_and_forks_keeping_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("w.db")).unwrap();
        let cluster = cluster_of_node_2();
        let keys = PeerKeys::default();
        let me = CosignatureSigner::from_seed("evident/node-1/witness", [1; 32]).unwrap();
        let run = |body: &str| witness(&store, &cluster, &keys, &me, body);
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

    /// `rotation` as node-2 stores it and serves it on an audit-log page (event JSON plus
    /// `hash` and `seal`), read back as the witness reads it.
    fn served(rotation: &SigningRotation) -> Event {
        let event = Event {
            seq: rotation.seq,
            id: uuid::Uuid::nil(),
            recorded_at: 1_700_000_000_000,
            occurred_at: None,
            node_id: "node-2".into(),
            tenant: "default".into(),
            actor: Actor {
                id: "evident".into(),
                kind: ActorKind::System,
                ip: None,
                user_agent: None,
            },
            action: SIGNING_ROTATION_ACTION.into(),
            target: Target {
                kind: "signing_key".into(),
                id: "k".into(),
            },
            outcome: Outcome::Success,
            severity: Severity::Notice,
            context: Context::from_value(&rotation.to_context()).unwrap(),
            appended_by: Some("system".into()),
        };
        let mut value = serde_json::to_value(&event).unwrap();
        value["hash"] = Hash([1; 32]).to_string().into();
        value["seal"] = Hash([2; 32]).to_string().into();
        let read = super::peer_keys::stored_event(&value).unwrap();
        assert_eq!(read, event);
        read
    }

    #[test]
    fn witness_follows_a_genuine_rotation_of_the_peer_and_no_forged_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("w.db")).unwrap();
        let cluster = cluster_of_node_2();
        let peer = cluster.peers[0].clone();
        let keys = PeerKeys::default();
        let me = CosignatureSigner::from_seed("evident/node-1/witness", [1; 32]).unwrap();
        let run = |body: &str| witness(&store, &cluster, &keys, &me, body);
        let history = leaves(4, 0);
        run(&body(0, &history[..2])).unwrap();

        // node-2 rotated to `new` and its transition ended: only `new` signs.
        let new = NoteSigner::from_seed("evident/node-2", [3; 32]).unwrap();
        let by_new = body_by(2, &history[..3], &new);
        let refused = |body: &str| {
            let failure = run(body).unwrap_err();
            assert!(failure.conflict.is_none(), "{:?}", failure.error);
            assert!(
                matches!(failure.error, WitnessError::Refused(Refusal::Unsigned(_))),
                "{:?}",
                failure.error
            );
        };
        refused(&by_new);
        let request = AddCheckpointRequest::parse(&by_new).unwrap();
        let trusted = keys.trusted(&peer).unwrap();
        assert!(needs_rotations(&run(&by_new), &request, &trusted));

        // Forged: a statement "old → new" by a key the witness never trusted, and one that
        // names the trusted key as old but is signed by another. Neither extends the trust.
        let mallory = NoteSigner::from_seed("evident/node-2", [6; 32]).unwrap();
        let own = SigningRotation::sign(&mallory, &new.verifier(), 7, 0).unwrap();
        let mut claimed = SigningRotation::sign(&mallory, &new.verifier(), 8, 0).unwrap();
        claimed.old = log().verifier();
        let report = keys
            .learn(&peer, &[served(&own), served(&claimed)])
            .unwrap();
        assert!(report.learned.is_empty(), "{report:?}");
        assert_eq!(report.refused.len(), 1, "{report:?}");
        assert_eq!(keys.trusted(&peer).unwrap(), vec![log().verifier()]);
        refused(&by_new);

        // Genuine: signed by the configured key. The new key's checkpoints are cosigned,
        // growing from the head the old key's checkpoint set; the old key still counts.
        let genuine = SigningRotation::sign(&log(), &new.verifier(), 9, 0).unwrap();
        let report = keys.learn(&peer, &[served(&genuine)]).unwrap();
        assert_eq!(report.learned, vec![new.verifier()]);
        assert_eq!(
            keys.trusted(&peer).unwrap(),
            vec![log().verifier(), new.verifier()]
        );
        let lines = run(&by_new).unwrap();
        let cosigned = format!("{}{lines}", signed_by(&history[..3], &new));
        assert_eq!(me.verifier().verify(&cosigned), Ok(Some(1_700_000_000)));
        run(&body(3, &history)).unwrap();
        // A key nobody's rotation named is still refused.
        refused(&body_by(4, &history, &mallory));
        assert_eq!(
            store
                .witnessed_checkpoint("evident/node-2")
                .unwrap()
                .unwrap()
                .size,
            4
        );
    }
}
