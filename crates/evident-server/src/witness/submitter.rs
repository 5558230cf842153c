//! The submitter: one consumer (kind `witness`, named for the peer) per cluster peer. When
//! this node signs a larger checkpoint it sends it to the peer's `add-checkpoint` with the
//! size the peer last cosigned and a consistency proof from there, keeps the cosignature the
//! peer returns (store table `cosignatures`), and on a 409 starts again from the size the
//! peer states. The size last cosigned is the consumer's state, saved with its cursor.

use crate::cluster::{PeerClient, PeerConfig, PeerError};
use crate::consumers::{Consumer, ConsumerContext, ConsumerSettings, DeliveryError, StartAt};
use crate::http::AppState;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use evident_core::cosignature::{
    AddCheckpointRequest, CosignatureVerifier, SIZE_CONTENT_TYPE, parse_size_body,
};
use evident_core::{Hash, SealedEntry, merkle};
use evident_store::{CollectedCosignature, Store, StoreError, StoredCheckpoint};
use std::time::Duration;

/// The witness route of a peer.
pub const ADD_CHECKPOINT_PATH: &str = "/api/v1/witness/add-checkpoint";

/// How often a submitter retries a peer that did not cosign, at the least.
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// Rounds of "409, start from the stated size" per checkpoint before giving up until the
/// next tick (two suffice for a peer that is simply ahead of the stored state).
const MAX_ROUNDS: usize = 3;

/// Sends this node's checkpoints to one peer's witness.
pub struct Submitter {
    peer: PeerConfig,
    client: PeerClient,
    name: String,
    /// The listed witness keys (`[witness].keys`): a returned cosignature by one of them is
    /// verified before it is kept.
    known: Vec<CosignatureVerifier>,
    /// The size of the checkpoint the peer last cosigned (0: none yet).
    cosigned_size: u64,
}

impl Submitter {
    pub fn new(peer: PeerConfig, client: PeerClient, known: Vec<CosignatureVerifier>) -> Self {
        Submitter {
            name: peer.node_id.clone(),
            peer,
            client,
            known,
            cosigned_size: 0,
        }
    }

    /// Submits `checkpoint` until the peer cosigns it, refuses it for good, or is out of
    /// rounds; returns the cosignature lines.
    async fn submit(
        &mut self,
        ctx: &ConsumerContext,
        checkpoint: &StoredCheckpoint,
    ) -> Result<Vec<String>, DeliveryError> {
        for _ in 0..MAX_ROUNDS {
            let old = self.cosigned_size;
            if old > checkpoint.size {
                return Err(DeliveryError::destination(format!(
                    "witness {} cosigned a checkpoint of size {old}, larger than this node's \
                     checkpoint of size {}: this node's log is behind what it showed before \
                     (restored from an older copy?)",
                    self.peer.node_id, checkpoint.size
                )));
            }
            let proof = consistency_proof(ctx, old, checkpoint.size).await?;
            let body = AddCheckpointRequest {
                old_size: old,
                proof,
                checkpoint: checkpoint.signed_note.clone(),
            }
            .to_body();
            match self
                .client
                .post(&self.peer, ADD_CHECKPOINT_PATH, body)
                .await
            {
                Ok(answer) => {
                    let text = String::from_utf8_lossy(&answer.body).into_owned();
                    return self.cosignature_lines(&checkpoint.signed_note, &text);
                }
                Err(PeerError::Refused {
                    status: 409, body, ..
                }) => {
                    let Some(known) = parse_size_body(&body) else {
                        return Err(DeliveryError::destination(format!(
                            "witness {} answered 409 without a {SIZE_CONTENT_TYPE} size: {body:?}",
                            self.peer.node_id
                        )));
                    };
                    if known == old {
                        // Same size, other root: the peer holds another history of this log.
                        return Err(DeliveryError::destination(format!(
                            "witness {} refused the checkpoint of size {}: it witnessed a \
                             different checkpoint of size {known} (a fork)",
                            self.peer.node_id, checkpoint.size
                        )));
                    }
                    tracing::info!(peer = %self.peer.node_id, old, known,
                        "witness states another size; submitting again from it");
                    self.cosigned_size = known;
                }
                Err(e) => {
                    return Err(DeliveryError::destination(format!(
                        "witness {}: {e}",
                        self.peer.node_id
                    )));
                }
            }
        }
        Err(DeliveryError::destination(format!(
            "witness {} kept stating other sizes; trying again later",
            self.peer.node_id
        )))
    }

    /// The well-formed cosignature lines of an `add-checkpoint` answer, each checked when its
    /// witness is a listed one.
    fn cosignature_lines(&self, note: &str, answer: &str) -> Result<Vec<String>, DeliveryError> {
        let mut lines = Vec::new();
        for line in answer.lines().filter(|l| !l.is_empty()) {
            let Some(name) = cosignature_line_name(line) else {
                return Err(DeliveryError::destination(format!(
                    "witness {} answered a line that is not a cosignature: {line:?}",
                    self.peer.node_id
                )));
            };
            let line = format!("{line}\n");
            if let Some(verifier) = self.known.iter().find(|v| v.name() == name) {
                let cosigned = format!("{note}{line}");
                if !matches!(verifier.verify(&cosigned), Ok(Some(_))) {
                    return Err(DeliveryError::destination(format!(
                        "witness {}: the cosignature by {name} does not verify with its listed key",
                        self.peer.node_id
                    )));
                }
            }
            lines.push((name.to_owned(), line));
        }
        if lines.is_empty() {
            return Err(DeliveryError::destination(format!(
                "witness {} answered no cosignature",
                self.peer.node_id
            )));
        }
        Ok(lines.into_iter().map(|(_, l)| l).collect())
    }
}

/// The cosigner name of `— <name> <base64 of key id ‖ timestamp ‖ signature>`.
fn cosignature_line_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("\u{2014} ")?;
    let (name, sig) = rest.split_once(' ')?;
    let bytes = BASE64.decode(sig).ok()?;
    (evident_core::note::is_valid_key_name(name) && bytes.len() == 4 + 8 + 64).then_some(name)
}

/// The consistency proof from `old` to `new` from this node's Merkle nodes (empty when `old`
/// is 0 or `new`).
async fn consistency_proof(
    ctx: &ConsumerContext,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, DeliveryError> {
    if old == 0 || old >= new {
        return Ok(Vec::new());
    }
    let store = ctx.store().clone();
    tokio::task::spawn_blocking(move || {
        let plan = merkle::consistency_plan(old, new)
            .map_err(|e| StoreError::Backend(format!("consistency proof {old}..{new}: {e}")))?;
        let hashes = store.read_nodes(plan.nodes())?;
        plan.assemble(&hashes)
            .map_err(|e| StoreError::Backend(format!("stored Merkle nodes: {e}")))
    })
    .await
    .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    .map_err(DeliveryError::from)
}

impl Consumer for Submitter {
    fn kind(&self) -> &'static str {
        "witness"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn start_at(&self) -> StartAt {
        StartAt::Now
    }

    fn restore(&mut self, state: Option<&str>) -> Result<(), DeliveryError> {
        self.cosigned_size = match state {
            None => 0,
            Some(text) => text.trim().parse().map_err(|_| {
                DeliveryError::Store(StoreError::Backend(format!(
                    "witness submitter {}: saved state {text:?} is not a size",
                    self.name
                )))
            })?,
        };
        Ok(())
    }

    /// Entries themselves are not sent: the checkpoints are, on [`Consumer::tick`].
    async fn deliver(
        &mut self,
        _ctx: &ConsumerContext,
        batch: &[SealedEntry],
    ) -> Result<usize, DeliveryError> {
        Ok(batch.len())
    }

    async fn tick(&mut self, ctx: &ConsumerContext) -> Result<(), DeliveryError> {
        let Some(checkpoint) = ctx.latest_checkpoint() else {
            return Ok(());
        };
        if checkpoint.size == 0 || checkpoint.size == self.cosigned_size {
            return Ok(());
        }
        let lines = self.submit(ctx, &checkpoint).await?;
        let store = ctx.store().clone();
        let size = checkpoint.size;
        let received_at = ctx.now();
        tokio::task::spawn_blocking(move || {
            for line in lines {
                let witness = cosignature_line_name(line.trim_end())
                    .unwrap_or_default()
                    .to_owned();
                store.put_cosignature(&CollectedCosignature {
                    size,
                    witness,
                    line,
                    received_at,
                })?;
            }
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))??;
        self.cosigned_size = size;
        Ok(())
    }

    fn tick_every(&self) -> Duration {
        RETRY_EVERY
    }

    fn save_state(&self) -> Option<String> {
        Some(self.cosigned_size.to_string())
    }
}

/// Starts one submitter per configured peer when this node is part of a cluster.
pub fn spawn_all(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let cluster = &state.node().config().cluster;
    if !cluster.enabled() || cluster.peers.is_empty() {
        return Vec::new();
    }
    let client = match state.peer_client() {
        Ok(client) => client.clone(),
        Err(e) => {
            tracing::error!(error = %e, "witness submitters not started: no peer client");
            return Vec::new();
        }
    };
    let known = state
        .node()
        .config()
        .witness
        .verifiers()
        .unwrap_or_default();
    let settings = ConsumerSettings {
        batch_max: 4096,
        lag_warn_seconds: None,
        lag_warn_events: None,
        ..ConsumerSettings::default()
    };
    cluster
        .peers
        .iter()
        .map(|peer| {
            let submitter = Submitter::new(peer.clone(), client.clone(), known.clone());
            crate::consumers::spawn(state, submitter, settings.clone())
        })
        .collect()
}

/// The checkpoint note with the cosignatures collected for its size appended (after the
/// node's own signature: a verifier that does not know a witness key ignores its line).
pub fn with_cosignatures(store: &dyn Store, checkpoint: &StoredCheckpoint) -> String {
    let mut note = checkpoint.signed_note.clone();
    match store.cosignatures_at(checkpoint.size) {
        Ok(found) => {
            for cosignature in found {
                if !note.contains(cosignature.line.as_str()) {
                    note.push_str(&cosignature.line);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the collected cosignatures"),
    }
    note
}
