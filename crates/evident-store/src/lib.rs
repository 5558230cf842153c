//! Evident's storage: one small, synchronous interface ([`Store`]) and its backends, one file
//! each (`sqlite.rs` is the embedded default, `postgres.rs` the PostgreSQL one). A backend
//! persists what the integrity core produced (sealed entries, the upper Merkle node hashes,
//! signed checkpoints) plus API keys, durably and append-only; it never computes a chain hash,
//! a seal or a proof itself, only the lower Merkle nodes it does not store ([`tree`]), with the
//! core's hashing. Callers on an async runtime call it from blocking threads.

use evident_core::event::{ActorKind, Millis, Outcome, Severity};
use evident_core::merkle::NodeId;
use evident_core::{ChainHead, Hash, SealedEntry};
use std::ops::ControlFlow;

pub mod histogram;
pub mod postgres;
pub mod sqlite;
pub mod tree;

pub use histogram::{Buckets, SeverityCounts};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// " at entry N", or nothing when the entry is not known.
fn at_entry(seq: Option<u64>) -> String {
    seq.map_or_else(String::new, |seq| format!(" at entry {seq}"))
}

/// Errors from a backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full: nothing of the failed write was stored.
    #[error("storage full: {0}")]
    Full(String),
    /// Stored data that cannot be decoded (corruption or tampering).
    #[error("corrupt stored data{}: {problem}", at_entry(*.seq))]
    Corrupt { seq: Option<u64>, problem: String },
    /// A row or node the caller asked for is not there.
    #[error("not found: {0}")]
    NotFound(String),
    /// Another process holds the writer role for this node.
    #[error("store is locked by another writer: {0}")]
    Locked(String),
    #[error("storage backend: {0}")]
    Backend(String),
    /// A consumer cursor may only move forward.
    #[error(
        "the cursor of consumer {consumer:?} is at entry {stored}; it cannot move back to {asked}"
    )]
    CursorBackwards {
        consumer: String,
        stored: u64,
        asked: u64,
    },
    /// The witness record of a log moved since the caller read it (compare-and-swap lost).
    #[error("the witnessed checkpoint of {origin:?} is at size {stored}, not {expected}")]
    WitnessMoved {
        origin: String,
        stored: u64,
        expected: u64,
    },
}

/// The check behind [`Store::append_on`]: a writer about to append entry `first_seq` on a
/// predecessor of hash `prev_hash` finds the stored log ending at `stored_next` (one past its
/// newest entry, or the retention anchor) with `stored_prev` the hash of that last entry (or
/// the anchor's; `None` when the log holds nothing).
pub fn check_append_base(
    first_seq: u64,
    prev_hash: &Hash,
    stored_next: u64,
    stored_prev: Option<Hash>,
) -> Result<(), StoreError> {
    if stored_next != first_seq {
        let (seq, what) = if stored_next < first_seq {
            (stored_next, "entries were removed at its tail")
        } else {
            (first_seq, "entries were added behind the writer's back")
        };
        return Err(StoreError::Corrupt {
            seq: Some(seq),
            problem: format!(
                "the stored log ends at {stored_next} entries, but this node wrote {first_seq}: \
                 {what}"
            ),
        });
    }
    match first_seq.checked_sub(1) {
        Some(last) if stored_prev != Some(*prev_hash) => Err(StoreError::Corrupt {
            seq: Some(last),
            problem: format!(
                "the stored hash of entry {last} is not the one this node wrote: the head row \
                 was changed"
            ),
        }),
        _ => Ok(()),
    }
}

// One definition of what an action or address filter means, the integrity core's: the export
// verifier checks entries against the same filter values the stores run in SQL.
pub use evident_core::filter::{ActionFilter, EventFilter, IpFilter};

/// Filters for queries and exports: an [`EventFilter`] (what the query parameters say, whose
/// meaning is [`EventFilter::matches`]) plus a range of sequence numbers. Every field
/// narrows; `None` means no constraint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// recorded_at >= from (ms).
    pub from: Option<Millis>,
    /// recorded_at < to (ms).
    pub to: Option<Millis>,
    /// occurred_at >= occurred_from (ms); an entry without occurred_at never matches.
    pub occurred_from: Option<Millis>,
    /// occurred_at < occurred_to (ms); an entry without occurred_at never matches.
    pub occurred_to: Option<Millis>,
    pub actor: Option<String>,
    pub actor_kind: Option<ActorKind>,
    pub action: Option<ActionFilter>,
    /// `kind:id`, or a bare id matching any kind.
    pub target: Option<String>,
    pub ip: Option<IpFilter>,
    pub tenant: Option<String>,
    pub node: Option<String>,
    /// Minimum severity.
    pub severity: Option<Severity>,
    pub outcome: Option<Outcome>,
    /// seq >= from_seq.
    pub from_seq: Option<u64>,
    /// seq < to_seq.
    pub to_seq: Option<u64>,
}

impl From<EventFilter> for Filter {
    fn from(f: EventFilter) -> Filter {
        Filter {
            from: f.from,
            to: f.to,
            occurred_from: f.occurred_from,
            occurred_to: f.occurred_to,
            actor: f.actor,
            actor_kind: f.actor_kind,
            action: f.action,
            target: f.target,
            ip: f.ip,
            tenant: f.tenant,
            node: f.node,
            severity: f.severity,
            outcome: f.outcome,
            from_seq: None,
            to_seq: None,
        }
    }
}

/// Sort order of results (by sequence number, which is also recording order on one node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Ascending,
    Descending,
}

/// A stored API key (the secret itself is never stored, only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Non-secret visible prefix that identifies the key, e.g. `evk_3f9a1c2b`.
    pub id: String,
    /// SHA-256 of the full secret key.
    pub secret_hash: Hash,
    pub role: String,
    pub tenant: Option<String>,
    pub label: Option<String>,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
    /// After this time the key stops working (set on the old key by a rotation).
    pub expires_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
    pub last_used_ip: Option<String>,
}

/// A stored signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    pub signed_note: String,
    pub created_at: Millis,
}

/// The retention anchor: where the kept log starts after pruning. Entries `[0, below_seq)` are
/// pruned (or being pruned: deletion goes in batches after the anchor is stored); every Merkle
/// node hash and every checkpoint stays. One per node; each prune moves it forward. It is
/// always recorded first by a sealed `retention.pruned` entry of the log (`event_seq`), which
/// verification checks it against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneAnchor {
    /// First entry of the latest prune's range (the previous anchor's `below_seq`, or 0).
    pub from_seq: u64,
    /// One past the last pruned entry: the first kept entry's sequence number (at least 1).
    pub below_seq: u64,
    /// Hash of entry `below_seq - 1`: the chain predecessor of the first kept entry.
    pub hash: Hash,
    /// Seal of entry `below_seq - 1` (its Merkle leaf is `leaf_hash(hash ‖ seal)`).
    pub seal: Hash,
    /// When entry `below_seq - 1` was recorded.
    pub recorded_at: Millis,
    /// The size of the signed checkpoint covering the anchor (at least `below_seq`).
    pub checkpoint_size: u64,
    /// That checkpoint, as signed.
    pub checkpoint_note: String,
    /// When this prune began.
    pub started_at: Millis,
    /// The sequence number of the `retention.pruned` event recording this prune (a kept
    /// entry: at least `below_seq`).
    pub event_seq: u64,
}

/// A consumer's durable position in the committed log (see the server's `consumers`
/// module): the next sequence number it has not yet delivered, and a small state it keeps
/// with it (JSON, the consumer's own). One row per consumer name, only ever moved forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerCursor {
    /// `<kind>:<name>`, e.g. `forwarder:siem`.
    pub consumer: String,
    /// Every entry below this sequence number is delivered.
    pub next_seq: u64,
    /// The consumer's own state, saved atomically with the position.
    pub state: Option<String>,
    /// When the cursor was saved (milliseconds since the epoch).
    pub updated_at: Millis,
}

/// What this node's witness last cosigned for one peer's log (C2SP tlog-witness state): one
/// row per log origin, only ever replaced by a checkpoint proven consistent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessedCheckpoint {
    /// The log's origin line (its key name).
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The checkpoint note as submitted, signatures included.
    pub signed_note: String,
    pub updated_at: Millis,
}

/// A cosignature a peer's witness returned for one of this node's checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedCosignature {
    /// The checkpoint's tree size.
    pub size: u64,
    /// The cosigner's key name.
    pub witness: String,
    /// The signature line, `— <name> <base64>\n`.
    pub line: String,
    pub received_at: Millis,
}

fn no_witness_state() -> StoreError {
    StoreError::Backend("this store keeps no witness state".into())
}

/// One storage backend.
pub trait Store: Send + Sync {
    /// The state a sequencer resumes from: next sequence number, last hash and Merkle frontier
    /// (rebuilt from stored nodes). Genesis for an empty log.
    fn load_head(&self) -> Result<ChainHead, StoreError>;

    /// Appends entries (dense, continuing the stored log) and the Merkle nodes they completed in
    /// one transaction, durable (fsync'd) when this returns `Ok`. On error nothing is stored.
    /// Of the nodes, only those of level [`tree::STORED_LEVEL`] and above are written; the
    /// lower ones are recomputed from the entries when read.
    fn append(&self, entries: &[SealedEntry], nodes: &[(NodeId, Hash)]) -> Result<(), StoreError>;

    /// [`Self::append`] for a writer that knows the head it built on: in the same transaction,
    /// refused with [`StoreError::Corrupt`] (naming the first entry that differs) unless the
    /// stored log ends exactly there, its newest entry (with none, the retention anchor)
    /// being entry `entries[0].seq - 1` with hash `prev_hash` (for entry 0: no entry at all).
    /// So rows deleted at the tail, rows added behind the writer's back and an edited head
    /// row are caught at the writer's next commit. Nothing is stored when it is refused.
    fn append_on(
        &self,
        prev_hash: &Hash,
        entries: &[SealedEntry],
        nodes: &[(NodeId, Hash)],
    ) -> Result<(), StoreError>;

    /// Calls `visit` for each entry matching `filter`, in `order`, starting after `after_seq`
    /// (exclusive, in the direction of `order`), until `visit` breaks or `limit` entries were
    /// visited. Constant memory whatever the number of rows.
    fn scan(
        &self,
        filter: &Filter,
        order: Order,
        after_seq: Option<u64>,
        limit: Option<u64>,
        visit: &mut dyn FnMut(SealedEntry) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;

    /// Number of entries matching `filter` (may be slow on big logs; for small results and tests).
    fn count(&self, filter: &Filter) -> Result<u64, StoreError>;

    /// The entries matching `filter` within the grid's range, counted exactly per bucket of
    /// `buckets` and per severity: one [`SeverityCounts`] per bucket, in order. The embedded
    /// store answers the filters of the dashboard's chart (time, tenant, node, action or
    /// prefix, outcome, minimum severity) from counts it keeps ([`Store::advance_counts`]),
    /// reading entries only where those do not reach; others read the matching entries once.
    fn histogram(
        &self,
        filter: &Filter,
        buckets: &Buckets,
    ) -> Result<Vec<SeverityCounts>, StoreError>;

    /// Takes at most `max_entries` more entries into the counts behind
    /// [`Store::histogram`], from where they stand (a durable position in the log, saved with
    /// the counts in one transaction), and returns how many it took: 0 when they are up to
    /// date, or for a backend that keeps none. Nothing depends on their being current for
    /// correctness, only for speed: a histogram reads what the counts do not cover yet.
    fn advance_counts(&self, max_entries: u64) -> Result<u64, StoreError> {
        let _ = max_entries;
        Ok(0)
    }

    /// Reads Merkle node hashes, in the order asked: the upper ones as stored, the lower ones
    /// recomputed from the entries under them (or from the nodes stored when they were pruned).
    fn read_nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError>;

    fn put_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError>;
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;
    /// The checkpoint of exactly `size`, if one was signed.
    fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError>;
    /// All checkpoints in increasing size (for verification).
    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError>;

    fn put_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    fn key_by_hash(&self, secret_hash: &Hash) -> Result<Option<KeyRecord>, StoreError>;
    /// [`Store::key_by_hash`] answered at once, from an async task, when the backend can do
    /// that without waiting on the network or on anything longer than another such lookup
    /// (SQLite: a point read on the small, always-cached key table, on a connection kept for
    /// it, which concurrent lookups take in turn); `None`
    /// when it cannot, and the caller asks [`Store::key_by_hash`] on a blocking thread. The
    /// answer is as fresh as [`Store::key_by_hash`]'s: a key revoked by any process before
    /// the call is seen revoked (no cache). Issue 16: the hop to the blocking pool was a
    /// quarter of a single-event request's server CPU.
    fn key_by_hash_now(
        &self,
        _secret_hash: &Hash,
    ) -> Option<Result<Option<KeyRecord>, StoreError>> {
        None
    }
    fn keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    fn revoke_key(&self, id: &str, at: Millis) -> Result<(), StoreError>;
    fn set_key_expiry(&self, id: &str, expires_at: Millis) -> Result<(), StoreError>;
    fn touch_key(&self, id: &str, at: Millis, ip: Option<&str>) -> Result<(), StoreError>;

    /// The stored cursor of `consumer`, `None` for a consumer that never saved one.
    fn consumer_cursor(&self, consumer: &str) -> Result<Option<ConsumerCursor>, StoreError>;

    /// Every stored consumer cursor, by name.
    fn consumer_cursors(&self) -> Result<Vec<ConsumerCursor>, StoreError>;

    /// Stores `cursor` (inserting or replacing the consumer's row), durable when this returns
    /// `Ok`. Refused with [`StoreError::CursorBackwards`] when it would move the stored
    /// position back: a consumer never delivers the same history twice by mistake.
    fn save_consumer_cursor(&self, cursor: &ConsumerCursor) -> Result<(), StoreError>;

    /// The witnessed checkpoint of the log `origin`, `None` if this witness never cosigned one.
    fn witnessed_checkpoint(
        &self,
        origin: &str,
    ) -> Result<Option<WitnessedCheckpoint>, StoreError> {
        let _ = origin;
        Err(no_witness_state())
    }

    /// Replaces the witnessed checkpoint of `checkpoint.origin`, atomically, only if the stored
    /// one still has size `expected_size` (0: none stored); else [`StoreError::WitnessMoved`].
    /// Durable when it returns, as the witness must persist before it answers.
    fn record_witnessed_checkpoint(
        &self,
        checkpoint: &WitnessedCheckpoint,
        expected_size: u64,
    ) -> Result<(), StoreError> {
        let _ = (checkpoint, expected_size);
        Err(no_witness_state())
    }

    /// Keeps a collected cosignature (replacing one by the same witness for the same size).
    fn put_cosignature(&self, cosignature: &CollectedCosignature) -> Result<(), StoreError> {
        let _ = cosignature;
        Err(no_witness_state())
    }

    /// The cosignatures collected for this node's checkpoint of `size`, by witness name.
    fn cosignatures_at(&self, size: u64) -> Result<Vec<CollectedCosignature>, StoreError> {
        let _ = size;
        Err(no_witness_state())
    }

    /// The retention anchor, `None` when the log was never pruned.
    fn prune_anchor(&self) -> Result<Option<PruneAnchor>, StoreError> {
        Ok(None)
    }

    /// Whether this store's credentials may prune (on PostgreSQL: the pruner role's grants),
    /// checked before a prune records anything. `Ok` when they may.
    fn check_prune_permitted(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Stores `anchor` (after its `retention.pruned` event was appended, before any entry is
    /// deleted), replacing the previous one. Refused when it would not move the anchor
    /// forward, when entry `event_seq` is not a stored `retention.pruned` event at or above
    /// `below_seq`, when the anchor's hash, seal and time are not those of the stored entry
    /// `below_seq - 1`, or when no stored checkpoint of `checkpoint_size >= below_seq` exists.
    /// Storing the same anchor again is a no-op.
    fn begin_prune(&self, anchor: &PruneAnchor) -> Result<(), StoreError> {
        let _ = anchor;
        Err(StoreError::Backend(
            "this store does not support retention pruning".to_owned(),
        ))
    }

    /// Migration of a pruned log, first step: stores Merkle node hashes over its pruned prefix
    /// (of any level: under them there are no entries to recompute them from). Refused unless
    /// the log holds no entry and no anchor; may be called several times (in chunks).
    fn import_pruned_nodes(&self, nodes: &[(NodeId, Hash)]) -> Result<(), StoreError> {
        let _ = nodes;
        Err(StoreError::Backend(
            "this store does not support importing a pruned log".to_owned(),
        ))
    }

    /// Migration of a pruned log, second step: stores its retention anchor, after which the
    /// first append continues at `anchor.below_seq`. Refused unless the log holds no entry and
    /// no anchor. Nothing here is checked against entries (there are none yet): whoever
    /// imports verifies the result, as `evident migrate` does.
    fn import_anchor(&self, anchor: &PruneAnchor) -> Result<(), StoreError> {
        let _ = anchor;
        Err(StoreError::Backend(
            "this store does not support importing a pruned log".to_owned(),
        ))
    }

    /// Deletes at most `max_entries` of the oldest entries below the anchor's `below_seq` in
    /// one transaction (the only path by which an entry is ever deleted) and returns how many
    /// it deleted: 0 when none is left. Merkle nodes and checkpoints are never deleted.
    fn prune_batch(&self, max_entries: u64) -> Result<u64, StoreError> {
        let _ = max_entries;
        Err(StoreError::Backend(
            "this store does not support retention pruning".to_owned(),
        ))
    }
}

/// Every stored entry of `store`, in order (for the stores' unit tests).
#[cfg(test)]
pub(crate) fn all_entries(store: &dyn Store) -> Vec<SealedEntry> {
    matching_entries(store, &Filter::default())
}

/// The entries `filter` selects, in order (tests only).
#[cfg(test)]
pub(crate) fn matching_entries(store: &dyn Store, filter: &Filter) -> Vec<SealedEntry> {
    let mut out = Vec::new();
    store
        .scan(filter, Order::Ascending, None, None, &mut |e| {
            out.push(e);
            ControlFlow::Continue(())
        })
        .unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_data_messages_name_the_entry_in_words() {
        let at = StoreError::Corrupt {
            seq: Some(52),
            problem: "actor_kind \"wizard\" is not a kind".to_owned(),
        };
        assert_eq!(
            at.to_string(),
            "corrupt stored data at entry 52: actor_kind \"wizard\" is not a kind"
        );
        let unknown = StoreError::Corrupt {
            seq: None,
            problem: "file is not a database".to_owned(),
        };
        assert_eq!(
            unknown.to_string(),
            "corrupt stored data: file is not a database"
        );
    }
}
