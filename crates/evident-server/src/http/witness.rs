//! The witness routes: `POST /api/v1/witness/add-checkpoint` (C2SP tlog-witness, cluster
//! peers only), mapping the witness's typed refusals to the statuses the spec names, and
//! `GET /api/v1/witness` (this node's cosigner key, its witness policy, the cosignatures its
//! latest checkpoint collected and what it witnessed of each peer).

use super::AppState;
use super::error::ApiError;
use super::params::Params;
use crate::witness::{self, WitnessError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use evident_core::NoteVerifier;
use evident_core::cosignature::{Refusal, SIZE_CONTENT_TYPE, size_body};
use serde::Serialize;
use utoipa::ToSchema;

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The tlog-witness status of each refusal.
fn refusal_response(error: WitnessError) -> Response {
    match error {
        WitnessError::Malformed(e) => {
            ApiError::bad_request("bad_request", e.to_string()).into_response()
        }
        WitnessError::UnknownOrigin(_) => ApiError::not_found(error.to_string()).into_response(),
        WitnessError::Refused(refusal) => match &refusal {
            Refusal::Unsigned(_) => ApiError::forbidden(refusal.to_string()).into_response(),
            Refusal::OldSizeTooLarge { .. } => {
                ApiError::bad_request("bad_request", refusal.to_string()).into_response()
            }
            Refusal::SizeMismatch { known, .. } | Refusal::Fork { known } => {
                text(StatusCode::CONFLICT, SIZE_CONTENT_TYPE, size_body(*known))
            }
            Refusal::Inconsistent { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "inconsistent",
                refusal.to_string(),
            )
            .into_response(),
        },
        WitnessError::Store(e) => ApiError::from_store(e).into_response(),
        WitnessError::Cosign(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

/// C2SP tlog-witness `add-checkpoint`: cosign a peer's checkpoint.
#[utoipa::path(
    post,
    path = "/api/v1/witness/add-checkpoint",
    tag = "witness",
    request_body(content = String, content_type = "text/plain", description = "`old <size>`, the consistency proof from that size (base64 hashes, one a line), an empty line, then the signed checkpoint note"),
    responses(
        (status = 200, description = "The `cosignature/v1` signature line(s) (`— <name> base64(key id ‖ timestamp ‖ signature)`), each ending in a newline", body = String, content_type = "text/plain"),
        (status = 400, description = "The body is not an add-checkpoint request, or the old size exceeds the checkpoint's", body = super::ErrorBody),
        (status = 401, description = "No peer certificate and no valid API key", body = super::ErrorBody),
        (status = 403, description = "Not a cluster peer (or owner), or the checkpoint is signed by no key this witness trusts for its origin (the configured key, or one the peer's verified signing-key rotations led to)", body = super::ErrorBody),
        (status = 404, description = "The origin is not a configured peer's log", body = super::ErrorBody),
        (status = 409, description = "The old size is not the size this witness cosigned last (also a rollback), or a checkpoint of that size with another root (a fork): the body is that size in decimal and a newline", body = String, content_type = "text/x.tlog.size"),
        (status = 422, description = "The consistency proof from the witnessed checkpoint does not verify", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn add_checkpoint(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let body = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("bad_request", "the body is not UTF-8 text"))?;
    Ok(match witness::add_checkpoint(&state, body).await {
        Ok(lines) => text(StatusCode::OK, "text/plain; charset=utf-8", lines),
        Err(error) => refusal_response(error),
    })
}

/// One cosignature the latest checkpoint collected.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CollectedJson {
    /// The witness's key name.
    pub witness: String,
    /// When the peer cosigned it (milliseconds since the epoch, as received).
    pub received_at: i64,
    /// Whether it counts for the policy (a listed witness, and the signature verifies).
    pub counted: bool,
}

/// What this node witnessed of one peer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WitnessedJson {
    pub node_id: String,
    /// The peer's log origin.
    pub origin: String,
    /// The size of the peer's checkpoint this node cosigned last (`None`: none yet).
    pub size: Option<u64>,
    pub updated_at: Option<i64>,
    /// The peer's signing keys this witness trusts: its configured `public_key` first, then
    /// each key a verified rotation of the peer led to (learned when a checkpoint needed it;
    /// kept in memory, learned again after a restart).
    pub trusted_keys: Vec<String>,
}

/// `GET /api/v1/witness`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WitnessStatus {
    /// This node's cosigner verifier key (list it in peers' `[witness].keys` and pass it to
    /// `evident verify --witness-key`).
    pub cosigner_key: String,
    /// `[witness].policy_k`: cosignatures a checkpoint needs (0: no policy).
    pub policy_k: usize,
    /// `[witness].keys`: the witnesses that count.
    pub witness_keys: Vec<String>,
    /// The latest checkpoint's size.
    pub checkpoint_size: u64,
    pub cosignatures: Vec<CollectedJson>,
    /// Whether the latest checkpoint meets the policy (`None`: no policy).
    pub policy_met: Option<bool>,
    pub peers: Vec<WitnessedJson>,
}

/// This node's witness: its cosigner key, policy, collected cosignatures and witnessed peers.
#[utoipa::path(
    get,
    path = "/api/v1/witness",
    tag = "witness",
    responses(
        (status = 200, description = "The cosigner key, the witness policy, the cosignatures of the latest checkpoint (and whether each counts), whether the policy is met, and for each peer the size this node last cosigned and the signing keys it trusts for it", body = WitnessStatus),
        (status = 400, description = "An unknown query parameter (this route takes none)", body = super::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn status(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<WitnessStatus>, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let cosigner = witness::node_cosigner(state.node().files())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let checkpoint = super::proofs::latest_checkpoint(&state).await?;
    let config = state.node().config();
    let policy = config.witness.clone();
    let listed = policy.verifiers().unwrap_or_default();
    let peers: Vec<(crate::cluster::PeerConfig, Vec<String>)> = config
        .cluster
        .peers
        .iter()
        .map(|peer| {
            let keys = state.peer_keys().trusted(peer).unwrap_or_default();
            let keys = keys.iter().map(NoteVerifier::to_vkey_string).collect();
            (peer.clone(), keys)
        })
        .collect();
    let (collected, witnessed) = state
        .with_store(move |store| {
            let collected = store
                .cosignatures_at(checkpoint.size)
                .map_err(ApiError::from_store)?;
            let mut witnessed = Vec::new();
            for (peer, trusted_keys) in peers {
                let origin = NoteVerifier::parse(&peer.public_key)
                    .map(|v| v.name().to_owned())
                    .unwrap_or_default();
                let head = store
                    .witnessed_checkpoint(&origin)
                    .map_err(ApiError::from_store)?;
                witnessed.push(WitnessedJson {
                    node_id: peer.node_id,
                    origin,
                    size: head.as_ref().map(|h| h.size),
                    updated_at: head.map(|h| h.updated_at),
                    trusted_keys,
                });
            }
            Ok((collected, witnessed))
        })
        .await?;
    let note = &checkpoint.signed_note;
    let cosignatures: Vec<CollectedJson> = collected
        .into_iter()
        .map(|c| {
            let cosigned = format!("{note}{}", c.line);
            let counted = listed
                .iter()
                .any(|v| v.name() == c.witness && matches!(v.verify(&cosigned), Ok(Some(_))));
            CollectedJson {
                witness: c.witness,
                received_at: c.received_at,
                counted,
            }
        })
        .collect();
    let counted = cosignatures.iter().filter(|c| c.counted).count();
    Ok(Json(WitnessStatus {
        cosigner_key: cosigner.verifier().to_vkey_string(),
        policy_k: policy.policy_k,
        witness_keys: policy.keys.clone(),
        checkpoint_size: checkpoint.size,
        cosignatures,
        policy_met: policy.enabled().then_some(counted >= policy.policy_k),
        peers: witnessed,
    }))
}
