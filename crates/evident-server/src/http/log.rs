//! `GET /api/v1/audit-log`: query with filters, as a JSON page with an opaque cursor, or the
//! whole match streamed as the self-verifying NDJSON bundle, as CSV, or as SIEM records
//! (`ocsf`, `ecs`: NDJSON; `cef`: one CEF line per event; see `crate::formats`).
//!
//! Order: JSON pages default to newest first (`desc`), what an investigator wants to see;
//! CSV and the SIEM formats default to oldest first (`asc`); the NDJSON bundle is always ascending (its run
//! markers need it), so `order=desc` is refused there. The cursor is only for JSON pages.

use super::AppState;
use super::error::ApiError;
use super::params::Params;
use super::stream::stream_response;
use crate::audit::{AuditActor, AuditEvent, RequestInfo, action};
use crate::auth::Caller;
use crate::export::{self, BundleRequest, EntryJson};
use crate::formats::SiemFormat;
use crate::sequencer::{SequencerError, now_ms};
use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use evident_core::filter::EventFilter;
use evident_store::{Filter, Order};
use serde_json::{Map, Value};

/// Every parameter the route accepts.
pub const PARAMS: [&str; 21] = [
    "scope",
    "from",
    "since",
    "to",
    "occurred_from",
    "occurred_since",
    "occurred_to",
    "actor",
    "actor_kind",
    "action",
    "target",
    "ip",
    "tenant",
    "node",
    "severity",
    "outcome",
    "limit",
    "cursor",
    "order",
    "format",
    "consistency_from",
];

/// Default page size of JSON pages.
pub const DEFAULT_LIMIT: u64 = 100;
/// Largest page size of JSON pages.
pub const MAX_LIMIT: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Ndjson,
    Csv,
    Siem(SiemFormat),
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Siem(f) => f.as_str(),
        }
    }
}

/// One JSON page.
#[derive(serde::Serialize)]
struct PageJson<'a> {
    events: Vec<EntryJson<'a>>,
    next_cursor: Option<String>,
}

fn order_byte(order: Order) -> u8 {
    match order {
        Order::Ascending => b'a',
        Order::Descending => b'd',
    }
}

/// An opaque cursor: base64url of the order and the last sequence number served.
pub fn encode_cursor(order: Order, seq: u64) -> String {
    let mut raw = [0u8; 9];
    raw[0] = order_byte(order);
    raw[1..].copy_from_slice(&seq.to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(text: &str, order: Order) -> Result<u64, ApiError> {
    let bad = || ApiError::bad_param("cursor", "cursor is not one this server issued");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| bad())?;
    let [tag, rest @ ..] = raw.as_slice() else {
        return Err(bad());
    };
    let seq: [u8; 8] = rest.try_into().map_err(|_| bad())?;
    if *tag != order_byte(order) {
        if matches!(tag, b'a' | b'd') {
            return Err(ApiError::bad_param(
                "cursor",
                "cursor was issued for the other order; keep the same order while paging",
            ));
        }
        return Err(bad());
    }
    Ok(u64::from_be_bytes(seq))
}

/// The filter the parameters describe, with the caller's tenant scope applied.
/// Parses the query of a filtered route: the core's filter parameters
/// ([`evident_core::filter::FILTER_PARAMS`]), the spans `since` and `occurred_since` (resolved
/// at `now` to the `from` / `occurred_from` they mean) and the route's own `extra` parameters;
/// anything else is refused. One list for every route that filters the log, so that none of
/// them accepts a filter it then ignores.
pub(crate) fn filter_query(
    query: Option<&str>,
    extra: &[&str],
    now: evident_core::event::Millis,
) -> Result<Params, ApiError> {
    let mut names: Vec<&str> = evident_core::filter::FILTER_PARAMS.to_vec();
    names.extend(["since", "occurred_since"]);
    names.extend_from_slice(extra);
    Params::parse(query, &names)?.resolve_since(now)
}

pub(crate) fn filter_from(params: &Params, caller: &Caller) -> Result<Filter, ApiError> {
    // The one parser of filter parameters, the core's: the export verifier reads the
    // parameters a bundle's header states with it too.
    let mut filter: Filter = EventFilter::from_params(|name| params.get(name))
        .map_err(|e| ApiError::bad_param(&e.param, e.to_string()))?
        .into();
    if let Some(scope) = &caller.tenant {
        match &filter.tenant {
            Some(asked) if asked != scope => {
                tracing::warn!(key_id = %caller.key_id, "query refused: another tenant's events");
                return Err(ApiError::forbidden(format!(
                    "API key {} may only read tenant \"{scope}\"",
                    caller.key_id
                ))
                .with_field("tenant"));
            }
            _ => filter.tenant = Some(scope.clone()),
        }
    }
    Ok(filter)
}

/// Records an export, durably, before any of it leaves.
async fn record_export(
    state: &AppState,
    caller: &Caller,
    info: &RequestInfo,
    params: &Params,
    filter: &Filter,
    format: Format,
) {
    let mut query = Map::new();
    for (name, value) in params.pairs() {
        query.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    let event = AuditEvent::new(
        action::EXPORTED,
        "success",
        "notice",
        "log",
        filter.tenant.as_deref().unwrap_or("*"),
    )
    .with("format", format.name())
    .with("query", Value::Object(query));
    state
        .record(&AuditActor::Key(caller.clone()), info, event)
        .await;
}

/// Queries or exports the log.
#[utoipa::path(
    get,
    path = "/api/v1/audit-log",
    tag = "log",
    params(super::openapi::AuditLogParams),
    responses(
        (status = 200, description = "scope=cluster: a merged page `{events, next_cursor, resume_cursor, nodes}` (nodes: `{node, status: ok|unreachable|timed_out|refused, ...}`, ok with `checkpoint`, `size`, `returned`); scope=cluster&format=ndjson: the cluster bundle (evident-cluster-export/v1, application/x-ndjson), each node's own bundle after a header naming every node's status. format=json: a page `{events, next_cursor}`, each event the stored event JSON plus `hash` and `seal`. format=ndjson: the self-verifying export bundle (application/x-ndjson), tied to a checkpoint signed for it. format=csv: RFC 4180 CSV with a header row. format=ocsf / ecs: one OCSF 1.5.0 / ECS record per line (application/x-ndjson); format=cef: one CEF line per event (text/plain); see docs/SIEM-MAPPINGS.md.",
            content(
                (super::openapi::PageDoc = "application/json"),
                (String = "application/x-ndjson"),
                (String = "text/csv"),
                (String = "text/plain"),
            )),
        (status = 400, description = "A bad or unknown query parameter (named in `field`); `scope=cluster` on a node without `[cluster]` or with a format other than json or ndjson", body = super::ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired API key", body = super::ErrorBody),
        (status = 403, description = "The key's role may not read, or the key is scoped to another tenant", body = super::ErrorBody),
        (status = 404, description = "`out_of_range`: format=ndjson with `consistency_from` beyond the export's checkpoint", body = super::ErrorBody),
        (status = 409, description = "`log_damaged`: a stored row that this answer needs cannot be decoded, or (format=ndjson) the stored log lacks an entry or a Merkle node that the bundle would need to tie its entries to the checkpoint; the message names the entry when known. An export without a filter still holds every stored entry: its verification names the gap. Damage met after the first 64 KiB of an export were sent ends the transfer without its final chunk instead (a saved bundle then fails verification as truncated)", body = super::ErrorBody),
        (status = 500, description = "Storage failure", body = super::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn audit_log(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(info): Extension<RequestInfo>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), &PARAMS)?.resolve_since(now_ms())?;
    if let (Some(scope), Some(asked)) = (&caller.tenant, params.get("tenant")) {
        if asked != scope {
            let what = if matches!(
                params.get("format"),
                Some("ndjson" | "csv" | "ocsf" | "ecs" | "cef")
            ) {
                "export events"
            } else {
                "read events"
            };
            return Err(state
                .refuse_cross_tenant(&caller, &info, super::OutsideTenant::Named(asked), what)
                .await);
        }
    }
    let format = match params.get("format").unwrap_or("json") {
        "json" => Format::Json,
        "ndjson" => Format::Ndjson,
        "csv" => Format::Csv,
        other => match other.parse::<SiemFormat>() {
            Ok(siem) => Format::Siem(siem),
            Err(_) => {
                return Err(ApiError::bad_param(
                    "format",
                    format!("format \"{other}\": expected json, ndjson, csv, ocsf, ecs or cef"),
                ));
            }
        },
    };
    let order = match params.get("order") {
        None if format == Format::Json => Order::Descending,
        None => Order::Ascending,
        Some("asc") => Order::Ascending,
        Some("desc") => Order::Descending,
        Some(other) => {
            return Err(ApiError::bad_param(
                "order",
                format!("order \"{other}\": expected asc or desc"),
            ));
        }
    };
    let limit = params.u64("limit")?;
    if limit == Some(0) {
        return Err(ApiError::bad_param("limit", "limit must be at least 1"));
    }
    let filter = filter_from(&params, &caller)?;
    match params.get("scope") {
        None | Some("local") => {}
        Some("cluster") if format == Format::Ndjson => {
            let request = ClusterExport {
                caller: &caller,
                info: &info,
                params: &params,
            };
            return cluster_bundle(state, request, filter, limit).await;
        }
        Some("cluster") => {
            if format != Format::Json {
                return Err(ApiError::bad_param(
                    "scope",
                    "scope=cluster answers format=json pages and format=ndjson (the cluster bundle)",
                ));
            }
            if params.get("consistency_from").is_some() {
                return Err(ApiError::bad_param(
                    "consistency_from",
                    "consistency_from applies to format=ndjson only",
                ));
            }
            let limit = limit.unwrap_or(DEFAULT_LIMIT);
            if limit > MAX_LIMIT {
                return Err(ApiError::bad_param(
                    "limit",
                    format!("limit {limit} is above the maximum of {MAX_LIMIT} per page"),
                ));
            }
            return cluster_page(state, &params, filter, order, limit).await;
        }
        Some(other) => {
            return Err(ApiError::bad_param(
                "scope",
                format!("scope \"{other}\": expected local or cluster"),
            ));
        }
    }
    if format != Format::Ndjson && params.get("consistency_from").is_some() {
        return Err(ApiError::bad_param(
            "consistency_from",
            "consistency_from applies to format=ndjson only",
        ));
    }
    if format != Format::Json && params.get("cursor").is_some() {
        return Err(ApiError::bad_param(
            "cursor",
            "cursor applies to format=json pages only; exports stream every match",
        ));
    }
    if format != Format::Json && !(format == Format::Ndjson && order == Order::Descending) {
        record_export(&state, &caller, &info, &params, &filter, format).await;
    }
    match format {
        Format::Json => {
            let limit = limit.unwrap_or(DEFAULT_LIMIT);
            if limit > MAX_LIMIT {
                return Err(ApiError::bad_param(
                    "limit",
                    format!(
                        "limit {limit} is above the maximum of {MAX_LIMIT} per page; page with the cursor or export as ndjson, csv, ocsf, ecs or cef"
                    ),
                ));
            }
            let after = params
                .get("cursor")
                .map(|c| decode_cursor(c, order))
                .transpose()?;
            json_page(state, filter, order, after, limit).await
        }
        Format::Ndjson => {
            if order == Order::Descending {
                return Err(ApiError::bad_param(
                    "order",
                    "the NDJSON bundle is always in ascending order",
                ));
            }
            let consistency_from = params.get("consistency_from").map(str::to_owned);
            let request =
                bundle_request(&state, &params, filter, limit, consistency_from.as_deref()).await?;
            let store = state.store().clone();
            stream_response(
                "application/x-ndjson",
                Some("attachment; filename=\"evident-export.ndjson\""),
                move |out| export::write_bundle(&*store, &request, out).map(|_| ()),
            )
            .await
        }
        Format::Csv => {
            let store = state.store().clone();
            stream_response(
                "text/csv; charset=utf-8; header=present",
                Some("attachment; filename=\"evident-export.csv\""),
                move |out| export::write_csv(&*store, &filter, order, limit, out).map(|_| ()),
            )
            .await
        }
        Format::Siem(siem) => {
            let store = state.store().clone();
            let node_id = state.node().files().node_id().to_owned();
            let (content_type, disposition) = match siem {
                SiemFormat::Ocsf => (
                    "application/x-ndjson",
                    "attachment; filename=\"evident-export.ocsf.ndjson\"",
                ),
                SiemFormat::Ecs => (
                    "application/x-ndjson",
                    "attachment; filename=\"evident-export.ecs.ndjson\"",
                ),
                SiemFormat::Cef => (
                    "text/plain; charset=utf-8",
                    "attachment; filename=\"evident-export.cef\"",
                ),
            };
            stream_response(content_type, Some(disposition), move |out| {
                export::write_siem(&*store, &filter, order, limit, siem, &node_id, out).map(|_| ())
            })
            .await
        }
    }
}

/// What this node's own export bundle covers: the query as its header states it, and the
/// checkpoint, signed for it (or the last one signed, on a read-only log).
async fn bundle_request(
    state: &AppState,
    params: &Params,
    filter: Filter,
    limit: Option<u64>,
    consistency_from: Option<&str>,
) -> Result<BundleRequest, ApiError> {
    let mut query = Map::new();
    // `scope` says which nodes answer, not which entries: a node's bundle does not state it;
    // `consistency_from` is this node's (a cluster export names one per node).
    for (name, value) in params
        .pairs()
        .filter(|(name, _)| !matches!(*name, "scope" | "consistency_from"))
    {
        query.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    if let Some(from) = consistency_from {
        query.insert(
            "consistency_from".to_owned(),
            Value::String(from.to_owned()),
        );
    }
    if let Some(tenant) = &filter.tenant {
        query.insert("tenant".to_owned(), Value::String(tenant.clone()));
    }
    let consistency_from = consistency_from
        .map(|text| {
            text.parse::<u64>().map_err(|_| {
                ApiError::bad_param(
                    "consistency_from",
                    format!("consistency_from {text:?}: expected a non-negative integer"),
                )
            })
        })
        .transpose()?;
    let checkpoint = match state.node().sequencer().force_checkpoint().await {
        Ok(checkpoint) => checkpoint,
        // A read-only (damaged) log signs nothing new: the bundle is cut at the latest
        // checkpoint it signed, so that the damage can still be exported and
        // pinpointed offline.
        // The node's own record of its last signature comes first: a store row it did
        // not sign is never an export's checkpoint.
        Err(SequencerError::ReadOnly(problem)) => match state.node().guard().last_signed() {
            Some(signed) => signed,
            None => state
                .with_store(|store| store.latest_checkpoint().map_err(ApiError::from_store))
                .await?
                .ok_or_else(|| ApiError::from_sequencer(SequencerError::ReadOnly(problem)))?,
        },
        Err(e) => return Err(ApiError::from_sequencer(e)),
    };
    if let Some(from) = consistency_from {
        if from > checkpoint.size {
            return Err(ApiError::out_of_range(
                "consistency_from",
                format!(
                    "consistency_from {from} is beyond the log, which has {} entries",
                    checkpoint.size
                ),
            ));
        }
    }
    Ok(BundleRequest {
        node_id: state.node().files().node_id().to_owned(),
        checkpoint,
        filter,
        query: Value::Object(query),
        exported_at: now_ms(),
        limit,
        consistency_from,
        signers: state.node().files().signers_now(),
    })
}

/// Who asks for a cluster export, and with what.
struct ClusterExport<'a> {
    caller: &'a Caller,
    info: &'a RequestInfo,
    params: &'a Params,
}

/// The cluster export bundle (see `crate::cluster::export`): every peer's own bundle over
/// mTLS, then the header, this node's bundle and the peers' parts streamed out.
async fn cluster_bundle(
    state: AppState,
    request: ClusterExport<'_>,
    filter: Filter,
    limit: Option<u64>,
) -> Result<Response, ApiError> {
    let ClusterExport {
        caller,
        info,
        params,
    } = request;
    use crate::cluster::export::{fetch_bundles, header, write_cluster_bundle};
    if params.get("cursor").is_some() {
        return Err(ApiError::bad_param(
            "cursor",
            "cursor applies to format=json pages only; exports stream every match",
        ));
    }
    if params.get("order") == Some("desc") {
        return Err(ApiError::bad_param(
            "order",
            "the NDJSON bundle is always in ascending order",
        ));
    }
    let client = state
        .peer_client()
        .map_err(|message| ApiError::bad_param("scope", message))?
        .clone();
    let config = state.node().config().cluster.clone();
    let own = state.node().files().node_id().to_owned();
    let mut consistency = node_sizes(params.get("consistency_from"), &own, &config)?;
    let mut query = peer_query(params, &filter);
    if let Some(limit) = limit {
        let pair = url_query([("limit", limit.to_string().as_str())].into_iter());
        query = if query.is_empty() {
            pair
        } else {
            format!("{query}&{pair}")
        };
    }
    // Recorded once the request is known to be one this node serves, before anything leaves.
    record_export(&state, caller, info, params, &filter, Format::Ndjson).await;
    let own_from = consistency.remove(&own).map(|size| size.to_string());
    let spool = state.node().files().data_dir().to_owned();
    let parts = fetch_bundles(&config, &client, &query, &consistency, &spool).await;
    let request = bundle_request(&state, params, filter, limit, own_from.as_deref()).await?;
    let mut stated = Map::new();
    for (name, value) in params.pairs() {
        stated.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    let own_key = state.node().files().verifier().to_vkey_string();
    // This node's part is labelled with the id its bundle's signed header names.
    let header = header(
        &config,
        &request.node_id,
        &own_key,
        &parts,
        Value::Object(stated),
        &evident_core::event::format_rfc3339_millis(request.exported_at),
    );
    let store = state.store().clone();
    stream_response(
        "application/x-ndjson",
        Some("attachment; filename=\"evident-cluster-export.ndjson\""),
        move |out| {
            write_cluster_bundle(
                out,
                &header,
                |out| export::write_bundle(&*store, &request, out).map(|_| ()),
                parts,
            )
        },
    )
    .await
}

/// A cluster export's `consistency_from`: `NODE:SIZE` pairs, comma-separated, each naming this
/// node (`own`) or a peer at most once.
fn node_sizes(
    text: Option<&str>,
    own: &str,
    config: &crate::cluster::ClusterConfig,
) -> Result<std::collections::BTreeMap<String, u64>, ApiError> {
    let mut sizes = std::collections::BTreeMap::new();
    let Some(text) = text else {
        return Ok(sizes);
    };
    for pair in text.split(',') {
        let bad = |problem: String| {
            ApiError::bad_param(
                "consistency_from",
                format!(
                    "consistency_from {pair:?}: {problem} (a cluster export takes NODE:SIZE pairs, comma-separated, one per node)"
                ),
            )
        };
        let (node, size) = pair
            .split_once(':')
            .ok_or_else(|| bad("expected NODE:SIZE".to_owned()))?;
        let size: u64 = size
            .parse()
            .map_err(|_| bad("the size is not a non-negative integer".to_owned()))?;
        if node != own && config.peer(node).is_none() {
            return Err(bad(format!("{node:?} is not a node of this cluster")));
        }
        if sizes.insert(node.to_owned(), size).is_some() {
            return Err(bad(format!("node {node} is named twice")));
        }
    }
    Ok(sizes)
}

/// The filter parameters the peers are asked with (as this node filters; the caller's
/// tenant scope goes along), URL-encoded, without scope, cursor, limit, order and format.
fn peer_query(params: &Params, filter: &Filter) -> String {
    let mut query = url_query(params.pairs().filter(|(name, _)| {
        !matches!(
            *name,
            "scope" | "cursor" | "limit" | "order" | "format" | "tenant" | "consistency_from"
        )
    }));
    if let Some(tenant) = &filter.tenant {
        let tenant_pair = url_query([("tenant", tenant.as_str())].into_iter());
        query = if query.is_empty() {
            tenant_pair
        } else {
            format!("{query}&{tenant_pair}")
        };
    }
    query
}

/// One page of the whole cluster (see `crate::cluster::read`): this node's page from its
/// store, the peers' over mTLS, merged.
async fn cluster_page(
    state: AppState,
    params: &Params,
    filter: Filter,
    order: Order,
    limit: u64,
) -> Result<Response, ApiError> {
    use crate::cluster::read::{ClusterCursor, ClusterRead, NodePage, NodeStatus, read_cluster};
    let client = state
        .peer_client()
        .map_err(|message| ApiError::bad_param("scope", message))?
        .clone();
    let cursor = match params.get("cursor") {
        None => ClusterCursor::start(order),
        Some(text) => ClusterCursor::decode(text, order)
            .map_err(|e| ApiError::bad_param("cursor", e.to_string()))?,
    };
    let config = state.node().config().cluster.clone();
    let own = config
        .effective_node_id(state.node().files().node_id())
        .to_owned();
    let query = peer_query(params, &filter);
    let after = cursor.position(&own);
    // The checkpoint the peers would serve for this node: its latest signed one.
    let checkpoint = super::proofs::latest_checkpoint(&state).await?;
    let local = state
        .with_store(move |store| {
            let page = export::query_page(store, &filter, order, after, limit)
                .map_err(ApiError::from_store)?;
            let entries = page
                .entries
                .iter()
                .map(|e| serde_json::to_value(EntryJson::new(e)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(Ok(NodePage {
                entries,
                more: page.next_after.is_some(),
                checkpoint: checkpoint.signed_note,
                size: checkpoint.size,
            }))
        })
        .await?;
    let local: Result<NodePage, NodeStatus> = local;
    let read = ClusterRead {
        query: &query,
        order,
        cursor: &cursor,
        limit,
    };
    let page = read_cluster(&config, &client, state.peer_keys(), &own, local, read).await;
    let body = serde_json::to_vec(&page).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `name=value&…`, percent-encoded.
fn url_query<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    pairs
        .map(|(name, value)| {
            format!(
                "{}={}",
                utf8_percent_encode(name, NON_ALPHANUMERIC),
                utf8_percent_encode(value, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn json_page(
    state: AppState,
    filter: Filter,
    order: Order,
    after: Option<u64>,
    limit: u64,
) -> Result<Response, ApiError> {
    let body = state
        .with_store(move |store| {
            let page = export::query_page(store, &filter, order, after, limit)
                .map_err(ApiError::from_store)?;
            let json = PageJson {
                events: page.entries.iter().map(EntryJson::new).collect(),
                next_cursor: page.next_after.map(|seq| encode_cursor(order, seq)),
            };
            serde_json::to_vec(&json).map_err(|e| ApiError::internal(e.to_string()))
        })
        .await?;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = encode_cursor(Order::Descending, 41);
        assert_eq!(decode_cursor(&c, Order::Descending).unwrap(), 41);
        let e = decode_cursor(&c, Order::Ascending).unwrap_err();
        assert!(
            e.detail.message.contains("other order"),
            "{}",
            e.detail.message
        );
        for garbage in [
            "",
            "!!!",
            "AAAA",
            "bm9wZQ",
            &encode_cursor(Order::Ascending, 1)[..11],
        ] {
            assert!(
                decode_cursor(garbage, Order::Ascending).is_err(),
                "{garbage:?}"
            );
        }
    }
}
