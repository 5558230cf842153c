//! The routes a verifier needs: the latest signed checkpoint, the node's public key, and
//! Merkle inclusion and consistency proofs assembled from stored nodes by the core's proof
//! plans.

use super::AppState;
use super::error::ApiError;
use super::params::Params;
use crate::audit::RequestInfo;
use crate::auth::Caller;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use evident_core::Hash;
use evident_core::merkle::{self, CompactRange};
use evident_store::{Filter, Order, Store, StoredCheckpoint};
use std::ops::ControlFlow;

fn text_plain(body: String) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The last checkpoint this node signed, as its own signed state records it (never a row
/// the store holds that the node did not sign), else the latest stored one, or one signed now
/// if none was yet.
pub(crate) async fn latest_checkpoint(state: &AppState) -> Result<StoredCheckpoint, ApiError> {
    if let Some(signed) = state.node().guard().last_signed() {
        return Ok(signed);
    }
    let stored = state
        .with_store(|store| store.latest_checkpoint().map_err(ApiError::from_store))
        .await?;
    match stored {
        Some(cp) => Ok(cp),
        None => state
            .node()
            .sequencer()
            .force_checkpoint()
            .await
            .map_err(ApiError::from_sequencer),
    }
}

/// The latest signed checkpoint.
#[utoipa::path(
    get,
    path = "/api/v1/checkpoint",
    tag = "proofs",
    responses(
        (status = 200, description = "The latest signed checkpoint: a C2SP tlog-checkpoint as a C2SP signed note (origin, size, base64 root hash, blank line, signature lines)", body = String, content_type = "text/plain"),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
        (status = 409, description = "`log_damaged`: the stored checkpoint cannot be decoded", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn checkpoint(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let checkpoint = latest_checkpoint(&state).await?;
    let note = state
        .with_store(move |store| {
            Ok(crate::witness::submitter::with_cosignatures(
                store,
                &checkpoint,
            ))
        })
        .await?;
    Ok(text_plain(note))
}

/// The key that verifies this node's checkpoints.
#[utoipa::path(
    get,
    path = "/api/v1/public-key",
    tag = "proofs",
    responses(
        (status = 200, description = "The C2SP verifier key string `<origin>+<key id hex>+<base64 key>`, followed by a newline", body = String, content_type = "text/plain"),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn public_key(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    Ok(text_plain(format!(
        "{}\n",
        state.node().files().verifier().to_vkey_string()
    )))
}

/// An inclusion proof.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct InclusionProof {
    pub seq: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// RFC 6962 leaf hash of the entry (over entry hash ‖ seal).
    #[schema(value_type = String)]
    pub leaf_hash: Hash,
    /// The entry's chain hash.
    #[schema(value_type = String)]
    pub hash: Hash,
    /// The entry's seal.
    #[schema(value_type = String)]
    pub seal: Hash,
    /// The hash of entry `seq - 1` (zeros for entry 0), so that a verifier can recompute this
    /// entry's hash from its fields; absent when that entry is no longer stored (pruned).
    #[schema(value_type = Option<String>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<Hash>,
    /// The audit path, leaf to root (RFC 9162 §2.1.3).
    #[schema(value_type = Vec<String>)]
    pub proof: Vec<Hash>,
    /// Root hash of the tree of `size` entries.
    #[schema(value_type = String)]
    pub root: Hash,
    /// The signed checkpoint of exactly `size`, when one was signed.
    pub checkpoint: Option<String>,
}

/// A consistency proof.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    #[schema(value_type = String)]
    pub from_root: Hash,
    #[schema(value_type = String)]
    pub to_root: Hash,
    /// RFC 9162 §2.1.4 consistency proof hashes.
    #[schema(value_type = Vec<String>)]
    pub proof: Vec<Hash>,
    /// The signed checkpoints of exactly `from` and `to`, when signed.
    pub from_checkpoint: Option<String>,
    pub to_checkpoint: Option<String>,
}

/// Root hash of the first `size` entries, from stored nodes.
fn root_at(store: &dyn Store, size: u64) -> Result<Hash, ApiError> {
    if size == 0 {
        return Ok(merkle::empty_root());
    }
    let hashes = store
        .read_nodes(&merkle::subtree_ids(0, size))
        .map_err(ApiError::from_store_damage)?;
    CompactRange::from_parts(size, hashes)
        .map(|range| range.root())
        .map_err(|e| ApiError::log_damaged(None, format!("stored Merkle nodes: {e}")))
}

fn proof_hashes(store: &dyn Store, plan: &merkle::ProofPlan) -> Result<Vec<Hash>, ApiError> {
    let hashes = store
        .read_nodes(plan.nodes())
        .map_err(ApiError::from_store_damage)?;
    plan.assemble(&hashes)
        .map_err(|e| ApiError::log_damaged(None, format!("stored Merkle nodes: {e}")))
}

/// Checks a requested tree size against the log.
fn check_size(name: &str, size: u64, log_size: u64) -> Result<(), ApiError> {
    if size > log_size {
        return Err(ApiError::out_of_range(
            name,
            format!("{name} {size} is beyond the log, which has {log_size} entries"),
        ));
    }
    Ok(())
}

/// Proves that entry `seq` is in the tree of `size` entries.
#[utoipa::path(
    get,
    path = "/api/v1/proof/inclusion",
    tag = "proofs",
    params(
        ("seq" = u64, Query, description = "Sequence number of the entry"),
        ("size" = Option<u64>, Query, description = "Tree size to prove against (default: the latest checkpoint's size); must be above `seq`"),
    ),
    responses(
        (status = 200, description = "The proof", body = InclusionProof),
        (status = 400, description = "Missing or bad `seq` or `size`, or an unknown parameter", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read, or the entry is not of the tenant the key is scoped to (the same answer whichever tenant owns it)", body = super::ErrorBody),
        (status = 404, description = "`out_of_range`: `size` beyond the log, or `seq` not below `size`; `not_found`: no such entry", body = super::ErrorBody),
        (status = 409, description = "`log_damaged`: the stored entry or a Merkle node the proof needs is missing or cannot be decoded (the message names the entry when known)", body = super::ErrorBody),
        (status = 410, description = "The entry was pruned by retention (code `pruned`)", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn inclusion(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    RawQuery(query): RawQuery,
) -> Result<Json<InclusionProof>, ApiError> {
    let params = Params::parse(query.as_deref(), &["seq", "size"])?;
    let seq = params
        .u64("seq")?
        .ok_or_else(|| ApiError::bad_param("seq", "seq is required"))?;
    let size = match params.u64("size")? {
        Some(size) => size,
        None => latest_checkpoint(&state).await?.size,
    };
    check_size("size", size, state.node().sequencer().size())?;
    if seq >= size {
        return Err(ApiError::out_of_range(
            "seq",
            format!("entry {seq} is not in the tree of size {size}"),
        ));
    }
    let scope = caller.tenant.clone();
    // Where a pruned entry is archived, when the node publishes.
    let archived = state
        .publisher()
        .map(|publisher| publisher.archive_location(seq));
    let proof = state
        .with_store(move |store| {
            let mut found = None;
            let filter = Filter {
                from_seq: Some(seq),
                to_seq: Some(seq + 1),
                ..Filter::default()
            };
            store
                .scan(&filter, Order::Ascending, None, Some(1), &mut |entry| {
                    found = Some(entry);
                    ControlFlow::Break(())
                })
                .map_err(ApiError::from_store)?;
            let Some(entry) = found else {
                return Err(match store.prune_anchor().map_err(ApiError::from_store)? {
                    Some(anchor) if seq < anchor.below_seq => ApiError::new(
                        axum::http::StatusCode::GONE,
                        "pruned",
                        format!(
                            "entry {seq} was pruned by retention (entries below {} are no \
                             longer kept); its inclusion can no longer be proven here{}",
                            anchor.below_seq,
                            match &archived {
                                Some(Some(object)) => format!("; it is archived in {object}"),
                                Some(None) => "; it was not published to the archive".to_owned(),
                                None => String::new(),
                            }
                        ),
                    )
                    .with_field("seq"),
                    // Below the log's size, so it was written: it is gone.
                    _ => ApiError::log_damaged(
                        Some(seq),
                        "the entry is missing from the store (deleted or lost)",
                    ),
                });
            };
            if let Some(scope) = &scope {
                if entry.event.tenant != *scope {
                    return Ok(Err(()));
                }
            }
            let plan = merkle::inclusion_plan(seq, size)
                .map_err(|e| ApiError::bad_param("seq", e.to_string()))?;
            let proof = proof_hashes(store, &plan)?;
            let prev_hash = match seq.checked_sub(1) {
                None => Some(evident_core::chain::GENESIS_PREV_HASH),
                Some(prev) => {
                    let mut hash = None;
                    let filter = Filter {
                        from_seq: Some(prev),
                        to_seq: Some(seq),
                        ..Filter::default()
                    };
                    store
                        .scan(&filter, Order::Ascending, None, Some(1), &mut |entry| {
                            hash = Some(entry.hash);
                            ControlFlow::Break(())
                        })
                        .map_err(ApiError::from_store)?;
                    hash
                }
            };
            let checkpoint = store.checkpoint_at(size).map_err(ApiError::from_store)?;
            let root = match &checkpoint {
                Some(cp) => cp.root,
                None => root_at(store, size)?,
            };
            Ok(Ok(InclusionProof {
                seq,
                size,
                leaf_hash: entry.leaf_hash(),
                hash: entry.hash,
                seal: entry.seal,
                prev_hash,
                proof,
                root,
                checkpoint: checkpoint.map(|c| c.signed_note),
            }))
        })
        .await?;
    match proof {
        Ok(proof) => Ok(Json(proof)),
        Err(()) => Err(state
            .refuse_cross_tenant(
                &caller,
                &info,
                super::OutsideTenant::Entry(seq),
                "prove its inclusion",
            )
            .await),
    }
}

/// Proves that the tree of `from` entries is a prefix of the tree of `to` entries.
#[utoipa::path(
    get,
    path = "/api/v1/proof/consistency",
    tag = "proofs",
    params(
        ("from" = u64, Query, minimum = 1, description = "The older tree size, at least 1"),
        ("to" = Option<u64>, Query, description = "The newer tree size (default: the latest checkpoint's size)"),
    ),
    responses(
        (status = 200, description = "The proof", body = ConsistencyProof),
        (status = 400, description = "Missing or bad `from` or `to`, or an unknown parameter", body = super::ErrorBody),
        (status = 404, description = "`out_of_range`: `to` beyond the log, or `from` above `to`", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
        (status = 409, description = "`log_damaged`: a Merkle node the proof needs is missing or cannot be read from the stored log", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn consistency(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let params = Params::parse(query.as_deref(), &["from", "to"])?;
    let from = params
        .u64("from")?
        .ok_or_else(|| ApiError::bad_param("from", "from is required"))?;
    let to = match params.u64("to")? {
        Some(to) => to,
        None => latest_checkpoint(&state).await?.size,
    };
    if from == 0 {
        return Err(ApiError::bad_param("from", "from must be at least 1"));
    }
    if from > to {
        return Err(ApiError::out_of_range(
            "from",
            format!("from {from} is larger than to {to}: no tree shrinks"),
        ));
    }
    check_size("to", to, state.node().sequencer().size())?;
    let proof = state
        .with_store(move |store| {
            let plan = merkle::consistency_plan(from, to)
                .map_err(|e| ApiError::bad_param("from", e.to_string()))?;
            let proof = proof_hashes(store, &plan)?;
            let from_checkpoint = store.checkpoint_at(from).map_err(ApiError::from_store)?;
            let to_checkpoint = store.checkpoint_at(to).map_err(ApiError::from_store)?;
            let root = |cp: &Option<StoredCheckpoint>, size| match cp {
                Some(cp) => Ok(cp.root),
                None => root_at(store, size),
            };
            Ok(ConsistencyProof {
                from,
                to,
                from_root: root(&from_checkpoint, from)?,
                to_root: root(&to_checkpoint, to)?,
                proof,
                from_checkpoint: from_checkpoint.map(|c| c.signed_note),
                to_checkpoint: to_checkpoint.map(|c| c.signed_note),
            })
        })
        .await?;
    Ok(Json(proof))
}
