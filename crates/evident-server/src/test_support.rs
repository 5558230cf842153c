//! Test helpers: a store wrapper that injects faults (a full disk, a tampered or undecodable
//! row) into a real backend, and a node in a temporary directory.

use crate::config::ServerConfig;
use crate::node::Node;
use evident_core::event::Millis;
use evident_core::merkle::NodeId;
use evident_core::{ChainHead, Hash, SealedEntry};
use evident_store::{Filter, KeyRecord, Order, Store, StoreError, StoredCheckpoint};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Delegates to a real store, with switchable faults.
pub struct FaultyStore {
    pub inner: Arc<dyn Store>,
    /// `append` fails with `StoreError::Full` while set.
    pub disk_full: AtomicBool,
    /// `append` calls so far (successful or not).
    pub appends: AtomicU64,
    /// Entries read back with this seq have their actor id changed (a tampered row).
    pub tamper_seq: Mutex<Option<u64>>,
    /// Reading the entry with this seq fails as undecodable.
    pub undecodable_seq: Mutex<Option<u64>>,
    /// `begin_prune` fails while set (a crash after the prune's event was appended).
    pub fail_begin_prune: AtomicBool,
}

impl FaultyStore {
    pub fn wrap(inner: Arc<dyn Store>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            disk_full: AtomicBool::new(false),
            appends: AtomicU64::new(0),
            tamper_seq: Mutex::new(None),
            undecodable_seq: Mutex::new(None),
            fail_begin_prune: AtomicBool::new(false),
        })
    }
}

impl Store for FaultyStore {
    fn load_head(&self) -> Result<ChainHead, StoreError> {
        self.inner.load_head()
    }
    fn append(&self, entries: &[SealedEntry], nodes: &[(NodeId, Hash)]) -> Result<(), StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(StoreError::Full(
                "no space left on device (injected)".to_owned(),
            ));
        }
        self.inner.append(entries, nodes)
    }
    fn append_on(
        &self,
        prev_hash: &Hash,
        entries: &[SealedEntry],
        nodes: &[(NodeId, Hash)],
    ) -> Result<(), StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(StoreError::Full(
                "no space left on device (injected)".to_owned(),
            ));
        }
        self.inner.append_on(prev_hash, entries, nodes)
    }
    fn scan(
        &self,
        filter: &Filter,
        order: Order,
        after_seq: Option<u64>,
        limit: Option<u64>,
        visit: &mut dyn FnMut(SealedEntry) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let tamper = *self.tamper_seq.lock().unwrap();
        let undecodable = *self.undecodable_seq.lock().unwrap();
        let mut failed = None;
        self.inner
            .scan(filter, order, after_seq, limit, &mut |mut entry| {
                if Some(entry.event.seq) == undecodable {
                    failed = Some(entry.event.seq);
                    return ControlFlow::Break(());
                }
                if Some(entry.event.seq) == tamper {
                    entry.event.actor.id.push_str("-edited");
                }
                visit(entry)
            })?;
        match failed {
            Some(seq) => Err(StoreError::Corrupt {
                seq: Some(seq),
                problem: "injected".to_owned(),
            }),
            None => Ok(()),
        }
    }
    fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
        self.inner.count(filter)
    }
    fn histogram(
        &self,
        filter: &Filter,
        buckets: &evident_store::Buckets,
    ) -> Result<Vec<evident_store::SeverityCounts>, StoreError> {
        self.inner.histogram(filter, buckets)
    }
    fn advance_counts(&self, max_entries: u64) -> Result<u64, StoreError> {
        self.inner.advance_counts(max_entries)
    }
    fn read_nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        self.inner.read_nodes(ids)
    }
    fn put_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        self.inner.put_checkpoint(checkpoint)
    }
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.inner.latest_checkpoint()
    }
    fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.inner.checkpoint_at(size)
    }
    fn consumer_cursor(
        &self,
        consumer: &str,
    ) -> Result<Option<evident_store::ConsumerCursor>, StoreError> {
        self.inner.consumer_cursor(consumer)
    }
    fn consumer_cursors(&self) -> Result<Vec<evident_store::ConsumerCursor>, StoreError> {
        self.inner.consumer_cursors()
    }
    fn save_consumer_cursor(
        &self,
        cursor: &evident_store::ConsumerCursor,
    ) -> Result<(), StoreError> {
        self.inner.save_consumer_cursor(cursor)
    }
    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.inner.checkpoints()
    }
    fn put_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        self.inner.put_key(key)
    }
    fn key_by_hash(&self, secret_hash: &Hash) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.key_by_hash(secret_hash)
    }
    fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.keys()
    }
    fn revoke_key(&self, id: &str, at: Millis) -> Result<(), StoreError> {
        self.inner.revoke_key(id, at)
    }
    fn set_key_expiry(&self, id: &str, expires_at: Millis) -> Result<(), StoreError> {
        self.inner.set_key_expiry(id, expires_at)
    }
    fn touch_key(&self, id: &str, at: Millis, ip: Option<&str>) -> Result<(), StoreError> {
        self.inner.touch_key(id, at, ip)
    }
    fn prune_anchor(&self) -> Result<Option<evident_store::PruneAnchor>, StoreError> {
        self.inner.prune_anchor()
    }
    fn check_prune_permitted(&self) -> Result<(), StoreError> {
        self.inner.check_prune_permitted()
    }
    fn begin_prune(&self, anchor: &evident_store::PruneAnchor) -> Result<(), StoreError> {
        if self.fail_begin_prune.load(Ordering::SeqCst) {
            return Err(StoreError::Backend(
                "crashed before anchoring (injected)".to_owned(),
            ));
        }
        self.inner.begin_prune(anchor)
    }
    fn prune_batch(&self, max_entries: u64) -> Result<u64, StoreError> {
        self.inner.prune_batch(max_entries)
    }
}

/// A config for a node in `dir/data` with fast checkpoints.
pub fn test_config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        data_dir: dir.join("data"),
        checkpoint_every_events: 1000,
        checkpoint_every_ms: 60_000,
        ..ServerConfig::default()
    }
}

/// A started node whose store is a [`FaultyStore`].
pub fn faulty_node(config: ServerConfig) -> (Node, Arc<FaultyStore>) {
    let mut handle = None;
    let node = Node::open_wrapped(config, |inner| {
        let faulty = FaultyStore::wrap(inner);
        handle = Some(faulty.clone());
        faulty
    })
    .unwrap();
    (node, handle.unwrap())
}

/// A valid client event.
pub fn event_json(actor: &str, action: &str) -> serde_json::Value {
    serde_json::json!({
        "actor": {"id": actor, "kind": "user", "ip": "203.0.113.7", "user_agent": "curl/8"},
        "action": action,
        "target": {"kind": "node", "id": "nyc-edge-01"},
        "outcome": "success",
        "severity": "notice",
        "context": {"old": 5, "new": 7}
    })
}
