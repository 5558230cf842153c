//! The sequencer (batcher and group commit): the ONE writer of the log, as two threads in a
//! pipeline. The batcher owns the chain head, loaded from the store at start (which is all crash
//! recovery needs): it takes append requests from a channel and seals each one onto the head as
//! it arrives (sequence number, id, recording time, chain hash, seal, Merkle nodes). The
//! committer stores everything the batcher sealed since the previous commit in one store
//! transaction (one fsync), and only then answers those requests. While the committer waits on
//! the disk, the batcher seals the next group, so sealing and committing overlap; a group is
//! handed over only when the committer is idle, so groups grow with the load exactly as a
//! single-threaded group commit does. If a commit fails, the group sealed on top of it is
//! failed too (nothing of it was stored) and the batcher resumes from the store's head. The
//! committer also signs checkpoints, every N entries, after a time with unsigned entries, or on
//! demand, always of committed entries only. It knows nothing of HTTP.

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
    /// The stored log failed its start-up checks: the node serves reads and verification
    /// but writes nothing on top of it.
    #[error("the log is read-only: {0}")]
    ReadOnly(String),
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
    /// From the committer: it finished the group it was handed and is idle.
    Committed(Outcome),
}

/// How the committer's last group ended.
enum Outcome {
    Stored,
    /// Nothing of the group was stored; the batcher resumes from `head`, the store's.
    Failed {
        error: SequencerError,
        head: Box<ChainHead>,
        last_recorded_at: Millis,
    },
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
        let (work_tx, work_rx) = mpsc::channel();
        let committer = Committer {
            store: store.clone(),
            signer,
            settings: settings.clone(),
            metrics,
            head: head.clone(),
            last_checkpoint,
            unsigned_since: None,
            size: size.clone(),
            back: tx.clone(),
        };
        let committer = std::thread::Builder::new()
            .name("evident-committer".to_owned())
            .spawn(move || committer.run(work_rx))
            .map_err(|e| StoreError::Backend(format!("cannot start committer thread: {e}")))?;
        let batcher = Batcher {
            seal_key,
            settings,
            head,
            last_recorded_at,
            open: Group::default(),
            committer_idle: true,
            shutting_down: false,
            stash: VecDeque::new(),
            work: work_tx,
        };
        let thread = std::thread::Builder::new()
            .name("evident-sequencer".to_owned())
            .spawn(move || batcher.run(rx, committer))
            .map_err(|e| StoreError::Backend(format!("cannot start sequencer thread: {e}")))?;
        Ok(Sequencer {
            tx,
            closing: Arc::new(AtomicBool::new(false)),
            size,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A sequencer for a log that failed its start-up checks ([`StoreError::Corrupt`] from
    /// loading its head: a tree that does not match its rows or its latest checkpoint, rows
    /// gone from under stored nodes, an undecodable row): every append and checkpoint request
    /// is refused with [`SequencerError::ReadOnly`] naming `problem`, so that nothing new is
    /// sealed or signed over damaged history, while reads, exports and verification (which
    /// pinpoint the damage) go on. `size` is what the log appears to hold.
    pub fn read_only(
        problem: String,
        size: u64,
        metrics: &Metrics,
    ) -> Result<Sequencer, StoreError> {
        metrics.log_size.set(size);
        let (tx, rx) = mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("evident-sequencer".to_owned())
            .spawn(move || {
                for command in rx {
                    match command {
                        Command::Append { reply, .. } => {
                            let _ = reply.send(Err(SequencerError::ReadOnly(problem.clone())));
                        }
                        Command::Checkpoint { reply } => {
                            let _ = reply.send(Err(SequencerError::ReadOnly(problem.clone())));
                        }
                        Command::Shutdown => break,
                        Command::Committed(_) => {}
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start sequencer thread: {e}")))?;
        Ok(Sequencer {
            tx,
            closing: Arc::new(AtomicBool::new(false)),
            size: Arc::new(AtomicU64::new(size)),
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

/// Requests sealed since the last hand-over, with what the committer needs to store and answer
/// them.
#[derive(Default)]
struct Group {
    entries: Vec<SealedEntry>,
    nodes: Vec<(NodeId, Hash)>,
    pending: Vec<Pending>,
    /// Checkpoint requests to answer after this group's commit.
    checkpoints: Vec<CheckpointReply>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.checkpoints.is_empty()
    }
}

struct Pending {
    reply: AppendReply,
    /// Range of this request's entries in the group.
    start: usize,
    end: usize,
}

/// What the committer is handed.
enum Work {
    /// A sealed group, and the head after it.
    Group(Group, Box<ChainHead>),
    Shutdown,
}

/// The first pipeline stage: takes requests, seals them onto the (not yet committed) head, and
/// hands each group to the committer when it is idle.
struct Batcher {
    seal_key: SealKey,
    settings: SequencerSettings,
    /// The head after every sealed entry, committed or not.
    head: ChainHead,
    last_recorded_at: Millis,
    /// Sealed, not yet handed over.
    open: Group,
    committer_idle: bool,
    shutting_down: bool,
    /// Append requests taken from the channel that did not fit in the open group, oldest
    /// first.
    stash: VecDeque<(Vec<EventInput>, AppendReply)>,
    work: mpsc::Sender<Work>,
}

impl Batcher {
    fn run(mut self, rx: mpsc::Receiver<Command>, committer: JoinHandle<()>) {
        loop {
            if self.committer_idle && !self.open.is_empty() {
                self.hand_off();
            }
            if let Some((inputs, reply)) = self.next_stashed() {
                // Fits now, and is the oldest waiting request: sealed without queueing again.
                self.seal(inputs, reply);
                continue;
            }
            let command = if self.shutting_down {
                match rx.try_recv() {
                    Ok(command) => command,
                    Err(_) if self.open.is_empty() && self.committer_idle => break,
                    // The committer's answer is still due.
                    Err(_) => match rx.recv() {
                        Ok(command) => command,
                        Err(_) => break,
                    },
                }
            } else {
                match rx.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                }
            };
            self.handle(command);
        }
        // Everything queued was committed; the committer signs what is unsigned and stops.
        let _ = self.work.send(Work::Shutdown);
        if committer.join().is_err() {
            tracing::error!("committer thread panicked");
        }
        tracing::info!(size = self.head.next_seq, "sequencer stopped");
    }

    /// The oldest stashed request, if it fits in the open group now.
    fn next_stashed(&mut self) -> Option<(Vec<EventInput>, AppendReply)> {
        let (inputs, _) = self.stash.front()?;
        let fits = self.open.entries.is_empty()
            || self.open.entries.len() + inputs.len() <= self.settings.max_group_commit_events;
        if fits { self.stash.pop_front() } else { None }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Append { inputs, reply } => {
                let full = !self.open.entries.is_empty()
                    && self.open.entries.len() + inputs.len()
                        > self.settings.max_group_commit_events;
                if full || !self.stash.is_empty() {
                    self.stash.push_back((inputs, reply));
                } else {
                    self.seal(inputs, reply);
                }
            }
            Command::Checkpoint { reply } => self.open.checkpoints.push(reply),
            Command::Shutdown => self.shutting_down = true,
            Command::Committed(outcome) => {
                self.committer_idle = true;
                if let Outcome::Failed {
                    error,
                    head,
                    last_recorded_at,
                } = outcome
                {
                    // The open group was sealed on entries that were not stored: fail it (it
                    // was not stored either) and continue from the store's head.
                    let open = std::mem::take(&mut self.open);
                    for p in open.pending {
                        let _ = p.reply.send(Err(error.clone()));
                    }
                    self.open.checkpoints = open.checkpoints;
                    self.head = *head;
                    self.last_recorded_at = self.last_recorded_at.max(last_recorded_at);
                }
            }
        }
    }

    /// Seals one request's events onto the head, into the open group.
    fn seal(&mut self, inputs: Vec<EventInput>, reply: AppendReply) {
        let recorded_at = now_ms().max(self.last_recorded_at);
        self.last_recorded_at = recorded_at;
        let ids = new_ids(recorded_at, inputs.len());
        let group = &mut self.open;
        let start = group.entries.len();
        group.entries.reserve(inputs.len());
        for (input, id) in inputs.into_iter().zip(ids) {
            group.entries.push(self.head.append(
                id,
                recorded_at,
                &self.settings.node_id,
                input,
                &self.seal_key,
                &mut group.nodes,
            ));
        }
        group.pending.push(Pending {
            reply,
            start,
            end: group.entries.len(),
        });
    }

    fn hand_off(&mut self) {
        let group = std::mem::take(&mut self.open);
        match self
            .work
            .send(Work::Group(group, Box::new(self.head.clone())))
        {
            Ok(()) => self.committer_idle = false,
            Err(mpsc::SendError(work)) => {
                // The committer is gone: nothing of this group can be stored.
                tracing::error!("the committer thread has stopped");
                if let Work::Group(group, _) = work {
                    for p in group.pending {
                        let _ = p.reply.send(Err(SequencerError::ShuttingDown));
                    }
                    for reply in group.checkpoints {
                        let _ = reply.send(Err(SequencerError::ShuttingDown));
                    }
                }
            }
        }
    }
}

/// `n` version 7 UUIDs for entries recorded at `recorded_at`: the timestamp, then random bits
/// drawn from the OS in one call for the whole request.
fn new_ids(recorded_at: Millis, n: usize) -> Vec<uuid::Uuid> {
    let mut random = vec![0u8; n * 10];
    if getrandom::fill(&mut random).is_err() {
        return (0..n).map(|_| uuid::Uuid::now_v7()).collect();
    }
    let millis = u64::try_from(recorded_at).unwrap_or(0);
    random
        .chunks_exact(10)
        .map(|bytes| {
            let mut r = [0u8; 10];
            r.copy_from_slice(bytes);
            uuid::Builder::from_unix_timestamp_millis(millis, &r).into_uuid()
        })
        .collect()
}

/// The second pipeline stage: stores each sealed group in one transaction, answers its
/// requests, and signs checkpoints of what is committed.
struct Committer {
    store: Arc<dyn Store>,
    signer: NoteSigner,
    settings: SequencerSettings,
    metrics: Arc<Metrics>,
    /// The head after the last committed entry.
    head: ChainHead,
    last_checkpoint: Option<StoredCheckpoint>,
    /// When the oldest entry not covered by a checkpoint was committed.
    unsigned_since: Option<Instant>,
    size: Arc<AtomicU64>,
    /// To the batcher: a group is done.
    back: mpsc::Sender<Command>,
}

impl Committer {
    fn run(mut self, rx: mpsc::Receiver<Work>) {
        loop {
            let work = match self.unsigned_since {
                Some(since) => {
                    let wait = self
                        .settings
                        .checkpoint_every
                        .saturating_sub(since.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(work) => work,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.sign_checkpoint_logged();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(work) => work,
                    Err(_) => break,
                },
            };
            let (group, head) = match work {
                Work::Group(group, head) => (group, head),
                Work::Shutdown => break,
            };
            if group.pending.is_empty() {
                let _ = self.back.send(Command::Committed(Outcome::Stored));
            } else {
                self.commit(group.entries, group.nodes, group.pending, *head);
            }
            // Under steady traffic the receive never times out, so the time rule is checked
            // here too.
            if self
                .unsigned_since
                .is_some_and(|since| since.elapsed() >= self.settings.checkpoint_every)
            {
                self.sign_checkpoint_logged();
            }
            for reply in group.checkpoints {
                let _ = reply.send(self.checkpoint_now());
            }
        }
        // Everything handed over was committed; leave no entry unsigned behind.
        if self.unsigned_since.is_some() {
            self.sign_checkpoint_logged();
        }
    }

    /// Stores one group in one transaction, tells the batcher, and answers the group's
    /// requests. The committed head becomes `head` only if the store committed. The batcher is
    /// told first: a client that reacts to its answer with a new request must find the batcher
    /// already past this group (after a failure, resumed from the store's head).
    fn commit(
        &mut self,
        entries: Vec<SealedEntry>,
        nodes: Vec<(NodeId, Hash)>,
        pending: Vec<Pending>,
        head: ChainHead,
    ) {
        let total = entries.len();
        let started = Instant::now();
        let result = self.store.append(&entries, &nodes);
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.head = head;
                self.size.store(self.head.next_seq, Ordering::Release);
                self.metrics.events_appended.inc_by(total as u64);
                self.metrics.batch_events.observe(total as f64);
                self.metrics.log_size.set(self.head.next_seq);
                if self.unsigned_since.is_none() {
                    self.unsigned_since = Some(Instant::now());
                }
                let _ = self.back.send(Command::Committed(Outcome::Stored));
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
                let last_recorded_at = self.resync_head();
                let _ = self.back.send(Command::Committed(Outcome::Failed {
                    error: error.clone(),
                    head: Box::new(self.head.clone()),
                    last_recorded_at,
                }));
                for p in pending {
                    let _ = p.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// After a failed commit the store is the authority on what the head is; a head that
    /// disagreed with it would fork the chain on the next append. Returns the recording time
    /// of the last stored entry (as far as known).
    fn resync_head(&mut self) -> Millis {
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
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the chain head after a failed commit")
            }
        }
        last_recorded_at(&*self.store).unwrap_or(Millis::MIN)
    }

    fn sign_checkpoint_logged(&mut self) {
        if let Err(e) = self.checkpoint_now() {
            tracing::error!(error = %e, "cannot sign checkpoint");
        }
    }

    /// Signs and stores a checkpoint of the committed head, unless the latest one already
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn groups_larger_than_the_cap_wait_their_turn_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            max_group_commit_events: 4,
            ..test_config(tmp.path())
        };
        let (node, _) = faulty_node(config);
        let node = Arc::new(node);
        let mut tasks = Vec::new();
        for t in 0..30 {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let inputs = (0..3).map(|i| input(&format!("u{t}-{i}"))).collect();
                node.sequencer().append(inputs).await.unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            let receipts = task.await.unwrap();
            assert_eq!(receipts[2].seq, receipts[0].seq + 2);
            seqs.extend(receipts.iter().map(|r| r.seq));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (0..90).collect::<Vec<u64>>());
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
