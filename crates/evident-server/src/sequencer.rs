//! The sequencer (batcher and group commit): the ONE writer of the log. A dedicated thread owns
//! the chain head, loaded from the store at start (which is all crash recovery needs), takes
//! append requests from a channel, sequences every request already waiting on a copy of the
//! head, commits them in one store transaction, and only then adopts the new head and answers.
//! It also signs checkpoints, every N entries, after a time with unsigned entries, or on demand.
//! It knows nothing of HTTP.

use crate::metrics::Metrics;
use evident_core::chain::ChainHead;
use evident_core::event::Millis;
use evident_core::merkle::NodeId;
use evident_core::{Checkpoint, EventInput, Hash, NoteSigner, SealKey, SealedEntry};
use evident_store::{Filter, Order, Store, StoreError, StoredCheckpoint};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What the log assigned to one appended event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Sequence number, dense per node from 0.
    pub seq: u64,
    /// Chain hash of the entry.
    pub hash: Hash,
    /// Recording time, milliseconds since the Unix epoch (UTC).
    pub recorded_at: Millis,
}

/// Why an append or checkpoint request failed. Nothing of a failed append was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequencerError {
    /// The disk is full.
    #[error("storage full: {0}")]
    StorageFull(String),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("cannot sign checkpoint: {0}")]
    Checkpoint(String),
    /// The node is shutting down and takes no new work.
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl From<&StoreError> for SequencerError {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::Full(m) => SequencerError::StorageFull(m.clone()),
            other => SequencerError::Storage(other.to_string()),
        }
    }
}

/// The sequencer's settings.
#[derive(Debug, Clone)]
pub struct SequencerSettings {
    pub node_id: String,
    /// Checkpoint origin (equal to the signer's key name).
    pub origin: String,
    pub checkpoint_every_events: u64,
    pub checkpoint_every: Duration,
    pub max_group_commit_events: usize,
}

type AppendReply = oneshot::Sender<Result<Vec<Receipt>, SequencerError>>;
type CheckpointReply = oneshot::Sender<Result<StoredCheckpoint, SequencerError>>;

enum Command {
    Append {
        inputs: Vec<EventInput>,
        reply: AppendReply,
    },
    Checkpoint {
        reply: CheckpointReply,
    },
    Shutdown,
}

/// Handle to the sequencer thread. Cheap to share behind an `Arc`.
pub struct Sequencer {
    tx: mpsc::Sender<Command>,
    closing: Arc<AtomicBool>,
    size: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Sequencer {
    /// Loads the chain head and the latest checkpoint from `store` and starts the thread.
    pub fn start(
        store: Arc<dyn Store>,
        seal_key: SealKey,
        signer: NoteSigner,
        settings: SequencerSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Sequencer, StoreError> {
        let head = store.load_head()?;
        let last_recorded_at = last_recorded_at(&*store)?;
        let last_checkpoint = store.latest_checkpoint()?;
        if let Some(cp) = &last_checkpoint {
            if cp.size > head.next_seq {
                // The database holds fewer entries than it once signed for: a rollback or a
                // truncation. Verification reports it; the writer must not paper over it.
                tracing::error!(
                    checkpoint_size = cp.size,
                    log_size = head.next_seq,
                    "stored log is shorter than its latest checkpoint: truncation or rollback"
                );
            }
        }
        let size = Arc::new(AtomicU64::new(head.next_seq));
        metrics.log_size.set(head.next_seq);
        let (tx, rx) = mpsc::channel();
        let worker = Worker {
            store,
            seal_key,
            signer,
            settings,
            metrics,
            head,
            last_recorded_at,
            last_checkpoint,
            unsigned_since: None,
            size: size.clone(),
            stash: VecDeque::new(),
        };
        let thread = std::thread::Builder::new()
            .name("evident-sequencer".to_owned())
            .spawn(move || worker.run(rx))
            .map_err(|e| StoreError::Backend(format!("cannot start sequencer thread: {e}")))?;
        Ok(Sequencer {
            tx,
            closing: Arc::new(AtomicBool::new(false)),
            size,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Number of committed entries (the next sequence number).
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn send(&self, command: Command) -> Result<(), SequencerError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(SequencerError::ShuttingDown);
        }
        self.tx
            .send(command)
            .map_err(|_| SequencerError::ShuttingDown)
    }

    /// Appends validated events; resolves once they are durably committed, with one receipt
    /// per input in order.
    pub async fn append(&self, inputs: Vec<EventInput>) -> Result<Vec<Receipt>, SequencerError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append { inputs, reply })?;
        // A dropped reply means the thread ended before answering: nothing was committed.
        rx.await.unwrap_or(Err(SequencerError::ShuttingDown))
    }

    /// Blocking form of [`Self::append`], for callers off the async runtime.
    pub fn append_blocking(&self, inputs: Vec<EventInput>) -> Result<Vec<Receipt>, SequencerError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append { inputs, reply })?;
        rx.blocking_recv()
            .unwrap_or(Err(SequencerError::ShuttingDown))
    }

    /// A signed checkpoint covering every entry committed before this call returns (signed
    /// now unless the latest one already covers the current size).
    pub async fn force_checkpoint(&self) -> Result<StoredCheckpoint, SequencerError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Checkpoint { reply })?;
        rx.await.unwrap_or(Err(SequencerError::ShuttingDown))
    }

    /// Blocking form of [`Self::force_checkpoint`].
    pub fn force_checkpoint_blocking(&self) -> Result<StoredCheckpoint, SequencerError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Checkpoint { reply })?;
        rx.blocking_recv()
            .unwrap_or(Err(SequencerError::ShuttingDown))
    }

    /// Whether [`Self::shutdown`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Refuses new work, lets the thread commit everything already queued and sign a final
    /// checkpoint, and waits for it. Blocking; idempotent.
    pub fn shutdown(&self) {
        // Sent before `closing` is raised: whatever was queued before is still committed.
        let _ = self.tx.send(Command::Shutdown);
        self.closing.store(true, Ordering::Release);
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("sequencer thread panicked");
            }
        }
    }
}

impl Drop for Sequencer {
    fn drop(&mut self) {
        // Without a join: dropping must not block an async runtime. The thread still drains.
        let _ = self.tx.send(Command::Shutdown);
    }
}

/// The recording time of the newest entry, so that time never goes backwards across restarts.
fn last_recorded_at(store: &dyn Store) -> Result<Millis, StoreError> {
    let mut last = Millis::MIN;
    store.scan(
        &Filter::default(),
        Order::Descending,
        None,
        Some(1),
        &mut |entry| {
            last = entry.event.recorded_at;
            ControlFlow::Break(())
        },
    )?;
    Ok(last)
}

/// Milliseconds since the Unix epoch now.
pub(crate) fn now_ms() -> Millis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Millis::try_from(now.as_millis()).unwrap_or(Millis::MAX)
}

struct Worker {
    store: Arc<dyn Store>,
    seal_key: SealKey,
    signer: NoteSigner,
    settings: SequencerSettings,
    metrics: Arc<Metrics>,
    head: ChainHead,
    last_recorded_at: Millis,
    last_checkpoint: Option<StoredCheckpoint>,
    /// When the oldest entry not covered by a checkpoint was committed.
    unsigned_since: Option<Instant>,
    size: Arc<AtomicU64>,
    /// Requests taken from the channel that did not fit in the previous group commit.
    stash: VecDeque<Command>,
}

struct Pending {
    reply: AppendReply,
    /// Range of this request's entries in the batch.
    start: usize,
    end: usize,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut shutting_down = false;
        loop {
            let first = match self.stash.pop_front() {
                Some(command) => command,
                None if shutting_down => match rx.try_recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
                None => match self.unsigned_since {
                    Some(since) => {
                        let wait = self
                            .settings
                            .checkpoint_every
                            .saturating_sub(since.elapsed());
                        match rx.recv_timeout(wait) {
                            Ok(command) => command,
                            Err(mpsc::RecvTimeoutError::Timeout) => {
                                self.sign_checkpoint_logged();
                                continue;
                            }
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    None => match rx.recv() {
                        Ok(command) => command,
                        Err(_) => break,
                    },
                },
            };
            let mut appends: Vec<(Vec<EventInput>, AppendReply)> = Vec::new();
            let mut checkpoints: Vec<CheckpointReply> = Vec::new();
            let mut events = 0usize;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append { inputs, reply } => {
                        if events > 0
                            && events + inputs.len() > self.settings.max_group_commit_events
                        {
                            self.stash.push_back(Command::Append { inputs, reply });
                            break;
                        }
                        events += inputs.len();
                        appends.push((inputs, reply));
                    }
                    Command::Checkpoint { reply } => checkpoints.push(reply),
                    Command::Shutdown => shutting_down = true,
                }
                if events >= self.settings.max_group_commit_events {
                    break;
                }
                next = self.stash.pop_front().or_else(|| rx.try_recv().ok());
            }
            if !appends.is_empty() {
                self.commit(appends);
            }
            // Under steady traffic the receive never times out, so the time rule is checked
            // here too.
            if self
                .unsigned_since
                .is_some_and(|since| since.elapsed() >= self.settings.checkpoint_every)
            {
                self.sign_checkpoint_logged();
            }
            for reply in checkpoints {
                let _ = reply.send(self.checkpoint_now());
            }
        }
        // Everything queued was committed; leave no entry unsigned behind.
        if self.unsigned_since.is_some() {
            self.sign_checkpoint_logged();
        }
        tracing::info!(size = self.head.next_seq, "sequencer stopped");
    }

    /// Sequences every request on a copy of the head, stores them in one transaction, and
    /// answers each request. The head moves only if the store committed.
    fn commit(&mut self, appends: Vec<(Vec<EventInput>, AppendReply)>) {
        let mut head = self.head.clone();
        let recorded_at = now_ms().max(self.last_recorded_at);
        let total: usize = appends.iter().map(|(inputs, _)| inputs.len()).sum();
        let mut entries: Vec<SealedEntry> = Vec::with_capacity(total);
        let mut nodes: Vec<(NodeId, Hash)> = Vec::with_capacity(total * 2);
        let mut pending = Vec::with_capacity(appends.len());
        for (inputs, reply) in appends {
            let start = entries.len();
            for input in inputs {
                let id = uuid::Uuid::now_v7();
                entries.push(head.append(
                    id,
                    recorded_at,
                    &self.settings.node_id,
                    input,
                    &self.seal_key,
                    &mut nodes,
                ));
            }
            pending.push(Pending {
                reply,
                start,
                end: entries.len(),
            });
        }

        let started = Instant::now();
        let result = self.store.append(&entries, &nodes);
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.head = head;
                self.last_recorded_at = recorded_at;
                self.size.store(self.head.next_seq, Ordering::Release);
                self.metrics.events_appended.inc_by(total as u64);
                self.metrics.batch_events.observe(total as f64);
                self.metrics.log_size.set(self.head.next_seq);
                if self.unsigned_since.is_none() {
                    self.unsigned_since = Some(Instant::now());
                }
                for p in pending {
                    let receipts = entries[p.start..p.end]
                        .iter()
                        .map(|e| Receipt {
                            seq: e.event.seq,
                            hash: e.hash,
                            recorded_at: e.event.recorded_at,
                        })
                        .collect();
                    // The client may have gone; its events are committed either way.
                    let _ = p.reply.send(Ok(receipts));
                }
                let signed = self.last_checkpoint.as_ref().map_or(0, |c| c.size);
                let since = self.head.next_seq.saturating_sub(signed);
                if since >= self.settings.checkpoint_every_events {
                    self.sign_checkpoint_logged();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = total, "group commit failed; nothing stored");
                self.metrics.append_failures.inc_by(pending.len() as u64);
                let error = SequencerError::from(&e);
                for p in pending {
                    let _ = p.reply.send(Err(error.clone()));
                }
                self.resync_head();
            }
        }
    }

    /// After a failed commit the store is the authority on what the head is; a head that
    /// disagreed with it would fork the chain on the next append.
    fn resync_head(&mut self) {
        match self.store.load_head() {
            Ok(stored) if stored != self.head => {
                tracing::error!(
                    in_memory = self.head.next_seq,
                    stored = stored.next_seq,
                    "store and sequencer disagree after a failed commit; adopting the stored head"
                );
                self.head = stored;
                self.size.store(self.head.next_seq, Ordering::Release);
                self.metrics.log_size.set(self.head.next_seq);
                if let Ok(t) = last_recorded_at(&*self.store) {
                    self.last_recorded_at = self.last_recorded_at.max(t);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the chain head after a failed commit")
            }
        }
    }

    fn sign_checkpoint_logged(&mut self) {
        if let Err(e) = self.checkpoint_now() {
            tracing::error!(error = %e, "cannot sign checkpoint");
        }
    }

    /// Signs and stores a checkpoint of the current head, unless the latest one already
    /// covers it.
    fn checkpoint_now(&mut self) -> Result<StoredCheckpoint, SequencerError> {
        let size = self.head.next_seq;
        if let Some(cp) = &self.last_checkpoint {
            if cp.size == size {
                self.unsigned_since = None;
                return Ok(cp.clone());
            }
        }
        let root = self.head.tree.root();
        let checkpoint = Checkpoint {
            origin: self.settings.origin.clone(),
            size,
            root,
            extensions: Vec::new(),
        };
        let signed_note = checkpoint
            .sign(&self.signer)
            .map_err(|e| SequencerError::Checkpoint(e.to_string()))?;
        let stored = StoredCheckpoint {
            size,
            root,
            signed_note,
            created_at: now_ms(),
        };
        self.store
            .put_checkpoint(&stored)
            .map_err(|e| SequencerError::from(&e))?;
        self.metrics.checkpoints_signed.inc();
        self.last_checkpoint = Some(stored.clone());
        self.unsigned_since = None;
        tracing::debug!(size, "checkpoint signed");
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use crate::test_support::{event_json, faulty_node, test_config};
    use crate::verification::{VerifyOutcome, verify_store};

    fn input(actor: &str) -> EventInput {
        EventInput::from_json(&event_json(actor, "auth.login")).unwrap()
    }

    fn verify(node: &crate::node::Node) -> VerifyOutcome {
        let f = node.files();
        verify_store(
            &**node.store(),
            f.seal_key(),
            &f.verifier(),
            f.node_id(),
            None,
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_get_dense_contiguous_sequence_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, faulty) = faulty_node(test_config(tmp.path()));
        let node = Arc::new(node);
        let mut tasks = Vec::new();
        for t in 0..40 {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let inputs = (0..3).map(|i| input(&format!("u{t}-{i}"))).collect();
                node.sequencer().append(inputs).await.unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            let receipts = task.await.unwrap();
            assert_eq!(receipts.len(), 3);
            // One request's events are sequenced together, in order.
            assert_eq!(receipts[1].seq, receipts[0].seq + 1);
            assert_eq!(receipts[2].seq, receipts[0].seq + 2);
            seqs.extend(receipts.iter().map(|r| r.seq));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (0..120).collect::<Vec<u64>>());
        assert_eq!(node.sequencer().size(), 120);
        // Group commit: fewer transactions than requests is allowed, more is not.
        assert!(faulty.appends.load(Ordering::SeqCst) <= 40);
        assert!(verify(&node).is_intact(), "{:?}", verify(&node));
        node.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_commit_stores_nothing_and_keeps_the_head() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, faulty) = faulty_node(test_config(tmp.path()));
        let first = node.sequencer().append(vec![input("a")]).await.unwrap();
        assert_eq!(first[0].seq, 0);
        faulty.disk_full.store(true, Ordering::SeqCst);
        let err = node
            .sequencer()
            .append(vec![input("b"), input("c")])
            .await
            .unwrap_err();
        assert!(matches!(err, SequencerError::StorageFull(_)), "{err:?}");
        assert_eq!(node.sequencer().size(), 1);
        faulty.disk_full.store(false, Ordering::SeqCst);
        let next = node.sequencer().append(vec![input("d")]).await.unwrap();
        assert_eq!(next[0].seq, 1);
        assert_eq!(node.store().count(&Filter::default()).unwrap(), 2);
        assert!(verify(&node).is_intact());
        node.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_restart_resumes_the_chain_where_it_ended() {
        let tmp = tempfile::tempdir().unwrap();
        let config = test_config(tmp.path());
        let (node, _) = faulty_node(config.clone());
        let before = node
            .sequencer()
            .append((0..10).map(|i| input(&format!("u{i}"))).collect())
            .await
            .unwrap();
        node.shutdown();
        drop(node);

        let (node, _) = faulty_node(config);
        assert_eq!(node.sequencer().size(), 10);
        let after = node.sequencer().append(vec![input("late")]).await.unwrap();
        assert_eq!(after[0].seq, 10);
        assert!(after[0].recorded_at >= before[9].recorded_at);
        assert!(verify(&node).is_intact(), "{:?}", verify(&node));
        node.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn checkpoints_every_n_events_on_demand_and_at_shutdown() {
        let tmp = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            checkpoint_every_events: 4,
            ..test_config(tmp.path())
        };
        let (node, _) = faulty_node(config);
        for i in 0..10 {
            node.sequencer()
                .append(vec![input(&format!("u{i}"))])
                .await
                .unwrap();
        }
        let sizes: Vec<u64> = node
            .store()
            .checkpoints()
            .unwrap()
            .iter()
            .map(|c| c.size)
            .collect();
        assert_eq!(sizes, vec![4, 8]);
        let forced = node.sequencer().force_checkpoint().await.unwrap();
        assert_eq!(forced.size, 10);
        // Asking again without new entries returns the same checkpoint, unsigned anew.
        let again = node.sequencer().force_checkpoint().await.unwrap();
        assert_eq!(again, forced);
        node.sequencer().append(vec![input("x")]).await.unwrap();
        node.shutdown();
        assert_eq!(node.store().latest_checkpoint().unwrap().unwrap().size, 11);
        let err = node
            .sequencer()
            .append(vec![input("too late")])
            .await
            .unwrap_err();
        assert_eq!(err, SequencerError::ShuttingDown);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_timer_signs_waiting_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            checkpoint_every_ms: 50,
            ..test_config(tmp.path())
        };
        let (node, _) = faulty_node(config);
        node.sequencer()
            .append(vec![input("a"), input("b")])
            .await
            .unwrap();
        let mut signed = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            signed = node.store().latest_checkpoint().unwrap();
            if signed.is_some() {
                break;
            }
        }
        assert_eq!(signed.map(|c| c.size), Some(2));
        node.shutdown();
    }

    #[test]
    fn recorded_at_never_goes_backwards() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, _) = faulty_node(test_config(tmp.path()));
        let mut last = Millis::MIN;
        for i in 0..20 {
            let r = node
                .sequencer()
                .append_blocking(vec![input(&format!("u{i}"))])
                .unwrap();
            assert!(r[0].recorded_at >= last);
            last = r[0].recorded_at;
        }
        node.shutdown();
    }
}
