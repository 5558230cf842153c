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
//!
//! On PostgreSQL the committer also keeps the node's writer lease ([`WriterLease`]). A commit
//! refused because the lease session ended (a database restart, a cut connection,
//! `pg_terminate_backend`) is followed by one attempt to take the lease back, which succeeds only
//! if no other process holds it, and then ALWAYS by reloading the head from the store: the group
//! is stored only if the reloaded head is the one it was sealed on. Otherwise the node stores
//! nothing ([`SequencerError::LeaseLost`]), serves reads, and a background thread tries to take
//! the lease back every [`RETAKE_EVERY`]; once it has, the head is reloaded again and writing
//! resumes from it, never from the head held in memory.

use crate::guard::{CheckKeys, Damage, DetectedBy, Guard, check_before_extending};
use crate::metrics::Metrics;
use crate::recent::RecentEntries;
use evident_core::chain::ChainHead;
use evident_core::event::APPENDED_BY_SYSTEM;
use evident_core::event::Millis;
use evident_core::merkle::NodeId;
use evident_core::{Checkpoint, EventInput, Hash, NoteSigner, SealKey, SealedEntry};
use evident_store::PostgresStore;
use evident_store::{Store, StoreError, StoredCheckpoint};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

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
    /// The stored log is damaged (found at start, at a commit, by the background verifier,
    /// …): the node serves reads and verification but writes nothing on top of it.
    #[error("the log is read-only: {0}")]
    ReadOnly(String),
    /// This node lost its writer lease (PostgreSQL) and may not write: another process may be
    /// serving the node. Nothing of the request was stored; reads go on.
    #[error("{0}")]
    LeaseLost(String),
}

/// Where a sequencer resumes: the stored head as [`check_before_extending`] verified it, and
/// the guard holding the last signed checkpoint and the read-only state.
pub struct Resume {
    pub guard: Arc<Guard>,
    pub head: ChainHead,
}

/// How often a node that lost its writer lease tries to take it back.
pub const RETAKE_EVERY: Duration = Duration::from_secs(1);

/// A writer's exclusive claim on its node's log, where the backend has one that can be lost
/// while the process runs: PostgreSQL's advisory-lock lease (the embedded store's is the data
/// directory's lock, held by the process itself).
pub trait WriterLease: Send + Sync {
    /// Takes the lease, or confirms it is held. [`StoreError::Locked`], naming the holder,
    /// when another process holds it.
    fn take(&self) -> Result<(), StoreError>;
}

impl WriterLease for PostgresStore {
    fn take(&self) -> Result<(), StoreError> {
        self.acquire_lease()
    }
}

/// Why appends are refused because the lease was lost (`None` while the node may write),
/// shared by the committer (which sets and clears it) and the handle (which reads it).
type LeaseLost = Arc<Mutex<Option<String>>>;

fn lease_lost_reason(flag: &LeaseLost) -> Option<String> {
    flag.lock().unwrap_or_else(PoisonError::into_inner).clone()
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
type AppendAnswer = oneshot::Receiver<Result<Vec<Receipt>, SequencerError>>;
type CheckpointReply = oneshot::Sender<Result<StoredCheckpoint, SequencerError>>;

/// One append request: its events, all appended by the same caller.
struct AppendRequest {
    /// [`evident_core::event::APPENDED_BY_SYSTEM`] or the appending API key's id.
    appended_by: String,
    inputs: Vec<EventInput>,
    reply: AppendReply,
}

enum Command {
    Append(AppendRequest),
    Checkpoint {
        reply: CheckpointReply,
    },
    Shutdown,
    /// From the committer: it finished the group it was handed and is idle, or (only
    /// [`Outcome::Resynced`]) it reloaded the head between groups.
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
    /// Not a group's end: the committer took its writer lease back and reloaded the head from
    /// the store, which another writer had extended. Sealing goes on from `head`.
    Resynced {
        head: Box<ChainHead>,
        last_recorded_at: Millis,
    },
}

/// What the log holds committed: its size and the size of its latest signed checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Entries committed (the next sequence number).
    pub size: u64,
    /// Entries covered by the latest signed checkpoint (0 before the first).
    pub checkpoint_size: u64,
}

/// Handle to the sequencer thread. Cheap to share behind an `Arc`.
pub struct Sequencer {
    tx: mpsc::Sender<Command>,
    closing: Arc<AtomicBool>,
    size: Arc<AtomicU64>,
    /// What is committed and signed, for consumers of the log to wait on.
    commits: Arc<watch::Sender<Committed>>,
    /// The newest committed entries, for consumers at the tip of the log.
    recent: Arc<RecentEntries>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The node's signed state and read-only state: appends are refused while it holds damage.
    guard: Arc<Guard>,
    /// Why appends are refused because the writer lease was lost, while they are.
    lease_lost: LeaseLost,
}

impl Sequencer {
    /// Starts the threads on `head`, the stored head as [`check_before_extending`] verified
    /// it; the last checkpoint signed is the one `guard` records. `lease` is the writer lease
    /// `store` holds, where it has one that can be lost (the committer takes it back after a
    /// loss).
    pub fn start(
        store: Arc<dyn Store>,
        lease: Option<Arc<dyn WriterLease>>,
        seal_key: SealKey,
        signer: NoteSigner,
        settings: SequencerSettings,
        metrics: Arc<Metrics>,
        resume: Resume,
    ) -> Result<Sequencer, StoreError> {
        let Resume { guard, head } = resume;
        let last_recorded_at = last_recorded_at(&*store)?;
        let last_checkpoint = guard.last_signed();
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
        let commits = Arc::new(watch::Sender::new(Committed {
            size: head.next_seq,
            checkpoint_size: last_checkpoint.as_ref().map_or(0, |cp| cp.size),
        }));
        let (tx, rx) = mpsc::channel();
        let (work_tx, work_rx) = mpsc::channel();
        let lease_lost = LeaseLost::default();
        let recent = Arc::new(RecentEntries::default());
        let committer = Committer {
            commits: commits.clone(),
            recent: recent.clone(),
            store: store.clone(),
            signer,
            seal_key: seal_key.clone(),
            guard: guard.clone(),
            settings: settings.clone(),
            metrics,
            head: head.clone(),
            last_checkpoint,
            unsigned_since: None,
            size: size.clone(),
            back: tx.clone(),
            // The retaker's way back in; without a lease nothing is ever retaken.
            retaken: lease.as_ref().map(|_| work_tx.clone()),
            lease,
            lease_lost: lease_lost.clone(),
            retaker: None,
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
            commits,
            recent,
            thread: Mutex::new(Some(thread)),
            guard,
            lease_lost,
        })
    }

    /// A sequencer for a log that failed the check before extending (`guard` holds the
    /// damage): every append and checkpoint request is refused with
    /// [`SequencerError::ReadOnly`] naming it, so that nothing new is sealed or signed over
    /// damaged history, while reads, exports and verification (which pinpoint the damage) go
    /// on. `size` is what the log appears to hold.
    pub fn read_only(guard: Arc<Guard>, size: u64, metrics: &Metrics) -> Sequencer {
        metrics.log_size.set(size);
        // No thread: `send` refuses every command itself (the receiver is never read).
        let (tx, _) = mpsc::channel::<Command>();
        let checkpoint_size = guard.last_signed().map_or(0, |cp| cp.size);
        Sequencer {
            tx,
            closing: Arc::new(AtomicBool::new(false)),
            size: Arc::new(AtomicU64::new(size)),
            commits: Arc::new(watch::Sender::new(Committed {
                size,
                checkpoint_size,
            })),
            recent: Arc::new(RecentEntries::default()),
            thread: Mutex::new(None),
            guard,
            lease_lost: LeaseLost::default(),
        }
    }

    /// Why the log is served read-only, when it is.
    pub fn read_only_problem(&self) -> Option<String> {
        self.guard.damage().map(|d| d.describe())
    }

    /// The damage that makes the log read-only, when it is.
    pub fn damage(&self) -> Option<Damage> {
        self.guard.damage()
    }

    /// Why this node refuses appends because it lost its writer lease (another process may
    /// be serving the node), while it does.
    pub fn lease_lost(&self) -> Option<String> {
        lease_lost_reason(&self.lease_lost)
    }

    /// Follows what is committed: the receiver sees a new value after every commit and every
    /// checkpoint signed (consumers of the log wait on it instead of polling).
    pub fn subscribe(&self) -> watch::Receiver<Committed> {
        self.commits.subscribe()
    }

    /// The newest committed entries, for consumers at the tip of the log.
    pub fn recent(&self) -> &RecentEntries {
        &self.recent
    }

    /// Number of committed entries (the next sequence number).
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn send(&self, command: Command) -> Result<(), SequencerError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(SequencerError::ShuttingDown);
        }
        if let Some(damage) = self.guard.damage() {
            return Err(SequencerError::ReadOnly(damage.describe()));
        }
        self.tx
            .send(command)
            .map_err(|_| SequencerError::ShuttingDown)
    }

    /// Appends validated events the node writes itself (self-audit, retention): each entry
    /// records [`APPENDED_BY_SYSTEM`] as who appended it. Resolves once they are durably
    /// committed, with one receipt per input in order.
    pub async fn append(&self, inputs: Vec<EventInput>) -> Result<Vec<Receipt>, SequencerError> {
        self.append_by(APPENDED_BY_SYSTEM, inputs).await
    }

    /// Appends validated events on behalf of the API key `key_id` (a client's request): each
    /// entry records that key id as who appended it. Otherwise as [`Self::append`].
    pub async fn append_for_key(
        &self,
        key_id: &str,
        inputs: Vec<EventInput>,
    ) -> Result<Vec<Receipt>, SequencerError> {
        self.append_by(key_id, inputs).await
    }

    async fn append_by(
        &self,
        appended_by: &str,
        inputs: Vec<EventInput>,
    ) -> Result<Vec<Receipt>, SequencerError> {
        let Some(rx) = self.request(appended_by, inputs)? else {
            return Ok(Vec::new());
        };
        // A dropped reply means the thread ended before answering: nothing was committed.
        rx.await.unwrap_or(Err(SequencerError::ShuttingDown))
    }

    /// Blocking form of [`Self::append`], for callers off the async runtime.
    pub fn append_blocking(&self, inputs: Vec<EventInput>) -> Result<Vec<Receipt>, SequencerError> {
        let Some(rx) = self.request(APPENDED_BY_SYSTEM, inputs)? else {
            return Ok(Vec::new());
        };
        rx.blocking_recv()
            .unwrap_or(Err(SequencerError::ShuttingDown))
    }

    /// Queues an append request; `None` when there is nothing to append.
    fn request(
        &self,
        appended_by: &str,
        inputs: Vec<EventInput>,
    ) -> Result<Option<AppendAnswer>, SequencerError> {
        if inputs.is_empty() {
            return Ok(None);
        }
        if let Some(reason) = self.lease_lost() {
            return Err(SequencerError::LeaseLost(reason));
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append(AppendRequest {
            appended_by: appended_by.to_owned(),
            inputs,
            reply,
        }))?;
        Ok(Some(rx))
    }

    /// A signed checkpoint covering every entry committed before this call returns (signed
    /// now unless the latest one already covers the current size). While the writer lease is
    /// lost nothing is signed: the newest stored checkpoint is returned instead.
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
    Ok(crate::scan::newest_entry(store)?.map_or(Millis::MIN, |entry| entry.event.recorded_at))
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
    /// The head the group's first entry was sealed on (next sequence number, last hash):
    /// the committer stores the group only on exactly that head.
    base: Option<(u64, Hash)>,
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
    /// From the retaker thread: the writer lease is held again.
    LeaseTaken,
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
    stash: VecDeque<AppendRequest>,
    work: mpsc::Sender<Work>,
}

impl Batcher {
    fn run(mut self, rx: mpsc::Receiver<Command>, committer: JoinHandle<()>) {
        loop {
            if self.committer_idle && !self.open.is_empty() {
                self.hand_off();
            }
            if let Some(request) = self.next_stashed() {
                // Fits now, and is the oldest waiting request: sealed without queueing again.
                self.seal(request);
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
    fn next_stashed(&mut self) -> Option<AppendRequest> {
        let inputs = &self.stash.front()?.inputs;
        let fits = self.open.entries.is_empty()
            || self.open.entries.len() + inputs.len() <= self.settings.max_group_commit_events;
        if fits { self.stash.pop_front() } else { None }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Append(request) => {
                let full = !self.open.entries.is_empty()
                    && self.open.entries.len() + request.inputs.len()
                        > self.settings.max_group_commit_events;
                if full || !self.stash.is_empty() {
                    self.stash.push_back(request);
                } else {
                    self.seal(request);
                }
            }
            Command::Checkpoint { reply } => self.open.checkpoints.push(reply),
            Command::Shutdown => self.shutting_down = true,
            Command::Committed(Outcome::Stored) => self.committer_idle = true,
            Command::Committed(Outcome::Failed {
                error,
                head,
                last_recorded_at,
            }) => {
                self.committer_idle = true;
                // The open group was sealed on entries that were not stored: fail it (it was
                // not stored either) and continue from the store's head.
                let open = std::mem::take(&mut self.open);
                for p in open.pending {
                    let _ = p.reply.send(Err(error.clone()));
                }
                self.open.checkpoints = open.checkpoints;
                self.head = *head;
                self.last_recorded_at = self.last_recorded_at.max(last_recorded_at);
            }
            Command::Committed(Outcome::Resynced {
                head,
                last_recorded_at,
            }) => {
                // Idle, nothing is sealed on the old head: go on from the reloaded one. A
                // group in flight was sealed on the old head; the committer refuses it and
                // its outcome carries the reloaded head.
                if self.committer_idle && self.open.pending.is_empty() {
                    self.head = *head;
                    self.last_recorded_at = self.last_recorded_at.max(last_recorded_at);
                }
            }
        }
    }

    /// Seals one request's events onto the head, into the open group.
    fn seal(&mut self, request: AppendRequest) {
        let AppendRequest {
            appended_by,
            inputs,
            reply,
        } = request;
        let recorded_at = now_ms().max(self.last_recorded_at);
        self.last_recorded_at = recorded_at;
        let ids = new_ids(recorded_at, inputs.len());
        let group = &mut self.open;
        if group.entries.is_empty() {
            group.base = Some((self.head.next_seq, self.head.last_hash));
        }
        let start = group.entries.len();
        group.entries.reserve(inputs.len());
        for (input, id) in inputs.into_iter().zip(ids) {
            group.entries.push(self.head.append(
                id,
                recorded_at,
                &self.settings.node_id,
                &appended_by,
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
    /// Told the new size after each commit and the new checkpoint after each signature.
    commits: Arc<watch::Sender<Committed>>,
    /// Given each committed group before consumers are told the new size.
    recent: Arc<RecentEntries>,
    store: Arc<dyn Store>,
    signer: NoteSigner,
    /// For the check before extending after a resync.
    seal_key: SealKey,
    /// The last signed checkpoint (every signature is admitted by it) and the read-only state.
    guard: Arc<Guard>,
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
    /// The writer lease the store holds, where it has one that can be lost.
    lease: Option<Arc<dyn WriterLease>>,
    /// Set while the lease is lost (appends are refused), shared with the handle.
    lease_lost: LeaseLost,
    /// To this committer's own queue, for the retaker (`Some` only with a lease).
    retaken: Option<mpsc::Sender<Work>>,
    /// The thread trying to take a lost lease back, and the sender whose drop stops it.
    retaker: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Committer {
    fn run(mut self, rx: mpsc::Receiver<Work>) {
        loop {
            // Without the lease nothing is signed, so the time rule waits too.
            let timer = match self.lost() {
                None => self.unsigned_since,
                Some(_) => None,
            };
            let work = match timer {
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
                Work::LeaseTaken => {
                    if self.lost().is_some() {
                        let _ = self.reload_after_retake();
                    }
                    continue;
                }
                Work::Shutdown => break,
            };
            if group.pending.is_empty() {
                let _ = self.back.send(Command::Committed(Outcome::Stored));
            } else {
                self.commit(group.base, group.entries, group.nodes, group.pending, *head);
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
        if self.unsigned_since.is_some() && self.lost().is_none() {
            self.sign_checkpoint_logged();
        }
        // Dropping the sender stops the retaker at its next wait.
        if let Some((stop, thread)) = self.retaker.take() {
            drop(stop);
            let _ = thread.join();
        }
    }

    /// Stores one group in one transaction, tells the batcher, and answers the group's
    /// requests. The committed head becomes `head` only if the store committed. The batcher is
    /// told first: a client that reacts to its answer with a new request must find the batcher
    /// already past this group (after a failure, resumed from the store's head).
    fn commit(
        &mut self,
        base: Option<(u64, Hash)>,
        entries: Vec<SealedEntry>,
        nodes: Vec<(NodeId, Hash)>,
        pending: Vec<Pending>,
        head: ChainHead,
    ) {
        let total = entries.len();
        if let Some(reason) = self.lost() {
            self.refuse(pending, SequencerError::LeaseLost(reason), Millis::MIN);
            return;
        }
        if base.is_some_and(|base| base != (self.head.next_seq, self.head.last_hash)) {
            // Sealed before the head was reloaded (the lease was taken back meanwhile): it
            // does not continue the stored log.
            let error = SequencerError::LeaseLost(format!(
                "node {:?} took its writer lease back and reloaded its log from the store \
                 while this request waited; retry",
                self.settings.node_id
            ));
            self.refuse(pending, error, Millis::MIN);
            return;
        }
        if let Some(damage) = self.guard.damage() {
            self.refuse(
                pending,
                SequencerError::ReadOnly(damage.describe()),
                Millis::MIN,
            );
            return;
        }
        let mut result = self.timed_append(&entries, &nodes);
        if let (Err(StoreError::Locked(lost)), Some(_)) = (&result, &self.lease) {
            let lost = lost.clone();
            match self.take_lease_back(&lost) {
                // The head reloaded from the store is the one this group was sealed on: it
                // continues the stored log.
                Ok(true) => result = self.timed_append(&entries, &nodes),
                Ok(false) => {
                    let error = SequencerError::LeaseLost(format!(
                        "the writer lease for node {:?} was lost, and another process \
                         appended to the log meanwhile; this node took the lease back and goes \
                         on from the log as stored ({} entries): retry",
                        self.settings.node_id, self.head.next_seq
                    ));
                    let last = last_recorded_at(&*self.store).unwrap_or(Millis::MIN);
                    self.refuse(pending, error, last);
                    return;
                }
                Err(reason) => {
                    self.refuse(pending, SequencerError::LeaseLost(reason), Millis::MIN);
                    return;
                }
            }
        }
        match result {
            Ok(()) => {
                self.head = head;
                self.metrics.events_appended.inc_by(total as u64);
                self.metrics.batch_events.observe(total as f64);
                let answers: Vec<(Pending, Vec<Receipt>)> = pending
                    .into_iter()
                    .map(|p| {
                        let receipts = entries[p.start..p.end]
                            .iter()
                            .map(|e| Receipt {
                                seq: e.event.seq,
                                hash: e.hash,
                                recorded_at: e.event.recorded_at,
                            })
                            .collect();
                        (p, receipts)
                    })
                    .collect();
                // Kept for the consumers before they are told: they find the group here.
                self.recent.push(entries);
                self.publish_size();
                if self.unsigned_since.is_none() {
                    self.unsigned_since = Some(Instant::now());
                }
                let _ = self.back.send(Command::Committed(Outcome::Stored));
                for (p, receipts) in answers {
                    // The client may have gone; its events are committed either way.
                    let _ = p.reply.send(Ok(receipts));
                }
                let signed = self.last_checkpoint.as_ref().map_or(0, |c| c.size);
                let since = self.head.next_seq.saturating_sub(signed);
                if since >= self.settings.checkpoint_every_events {
                    self.sign_checkpoint_logged();
                }
            }
            Err(StoreError::Corrupt { seq, problem }) => {
                // The store no longer ends where this node left it: never adopt what it holds.
                let damage = self.pinpoint(DetectedBy::Commit).unwrap_or_else(|| {
                    Damage::new("head_mismatch", seq, problem, DetectedBy::Commit)
                });
                let error = SequencerError::ReadOnly(damage.describe());
                self.guard.report(damage);
                self.refuse(pending, error, Millis::MIN);
            }
            Err(e) => {
                tracing::error!(error = %e, events = total, "group commit failed; nothing stored");
                let error = match &e {
                    // Lost again right after it was taken back.
                    StoreError::Locked(why) if self.lease.is_some() => {
                        SequencerError::LeaseLost(self.lose_lease(why))
                    }
                    other => SequencerError::from(other),
                };
                let last_recorded_at = self.resync_head();
                self.refuse(pending, error, last_recorded_at);
            }
        }
    }

    fn timed_append(
        &self,
        entries: &[SealedEntry],
        nodes: &[(NodeId, Hash)],
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.store.append_on(&self.head.last_hash, entries, nodes);
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Fails a group that was not stored, and hands the batcher the committed head to go on
    /// from.
    fn refuse(&mut self, pending: Vec<Pending>, error: SequencerError, last_recorded_at: Millis) {
        self.metrics.append_failures.inc_by(pending.len() as u64);
        let _ = self.back.send(Command::Committed(Outcome::Failed {
            error: error.clone(),
            head: Box::new(self.head.clone()),
            last_recorded_at,
        }));
        for p in pending {
            let _ = p.reply.send(Err(error.clone()));
        }
    }

    /// Why appends are refused for a lost lease, while they are.
    fn lost(&self) -> Option<String> {
        lease_lost_reason(&self.lease_lost)
    }

    /// After a commit refused because the lease session ended (`lost`, the store's words):
    /// takes the lease back if no other process holds it, then reloads the head. `Ok(true)`
    /// when the reloaded head is the one held here, `Ok(false)` when another writer had
    /// extended the log (the reloaded head is adopted). `Err` with the reason appends are
    /// refused from now on, until the retaker takes the lease back.
    fn take_lease_back(&mut self, lost: &str) -> Result<bool, String> {
        let Some(lease) = self.lease.clone() else {
            return Ok(true);
        };
        tracing::error!(
            node_id = self.settings.node_id,
            problem = lost,
            "the writer lease was lost; taking it back unless another process holds it"
        );
        match lease.take() {
            Ok(()) => self.reload_after_retake(),
            Err(StoreError::Locked(holder)) => Err(self.lose_lease(&holder)),
            Err(e) => Err(self.lose_lease(&e.to_string())),
        }
    }

    /// With the lease held again: reloads the head (and the latest checkpoint) from the
    /// store, never trusting the one held here, tells the batcher when it changed, and lets
    /// appends in again. `Ok(same)` as [`Self::take_lease_back`].
    fn reload_after_retake(&mut self) -> Result<bool, String> {
        let stored = match self.store.load_head() {
            Ok(stored) => stored,
            Err(e) => {
                return Err(self.lose_lease(&format!(
                    "the lease was taken back, but the log head cannot be reloaded from the \
                     store: {e}"
                )));
            }
        };
        match self.store.latest_checkpoint() {
            Ok(latest) => self.last_checkpoint = latest,
            Err(e) => tracing::warn!(error = %e, "cannot reload the latest checkpoint"),
        }
        let same = stored == self.head;
        if !same {
            // Entries this process did not write: checked before anything is built on them.
            let stored = self.verified_store_head(DetectedBy::Resync)?;
            tracing::warn!(
                node_id = self.settings.node_id,
                in_memory = self.head.next_seq,
                stored = stored.next_seq,
                "another writer extended the log while the writer lease was lost; going on \
                 from the stored head"
            );
            self.head = stored;
            self.publish_size();
            let last_recorded_at = last_recorded_at(&*self.store).unwrap_or(Millis::MIN);
            let _ = self.back.send(Command::Committed(Outcome::Resynced {
                head: Box::new(self.head.clone()),
                last_recorded_at,
            }));
        }
        let signed = self.last_checkpoint.as_ref().map_or(0, |c| c.size);
        self.unsigned_since = (signed < self.head.next_seq).then(Instant::now);
        *self
            .lease_lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        tracing::warn!(
            node_id = self.settings.node_id,
            size = self.head.next_seq,
            "took the writer lease back; the log head was reloaded from the store; appends \
             resume"
        );
        Ok(same)
    }

    /// Refuses appends from now on, for `why` the lease cannot be taken back, and starts the
    /// retaker. Returns the reason appends get.
    fn lose_lease(&mut self, why: &str) -> String {
        let reason = format!(
            "the writer lease for node {:?} was lost and cannot be taken back now: {why}. This \
             node stores nothing until it holds the lease again (it tries every {} s); reads \
             go on",
            self.settings.node_id,
            RETAKE_EVERY.as_secs()
        );
        tracing::error!(node_id = self.settings.node_id, problem = why, "{reason}");
        *self
            .lease_lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
        self.start_retaker();
        reason
    }

    /// Starts the thread that takes the lease back as soon as it is free, unless one runs.
    fn start_retaker(&mut self) {
        if self
            .retaker
            .as_ref()
            .is_some_and(|(_, thread)| !thread.is_finished())
        {
            return;
        }
        if let Some((_, finished)) = self.retaker.take() {
            let _ = finished.join();
        }
        let (Some(lease), Some(retaken)) = (self.lease.clone(), self.retaken.clone()) else {
            return;
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("evident-lease".to_owned())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(RETAKE_EVERY)
                {
                    match lease.take() {
                        Ok(()) => {
                            let _ = retaken.send(Work::LeaseTaken);
                            return;
                        }
                        Err(e) => tracing::debug!(error = %e, "the writer lease is not free yet"),
                    }
                }
            });
        match spawned {
            Ok(thread) => self.retaker = Some((stop, thread)),
            Err(e) => tracing::error!(error = %e, "cannot start the lease retaker thread"),
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
                    "store and sequencer disagree after a failed commit; checking the stored \
                     entries before going on from them"
                );
                if let Ok(stored) = self.verified_store_head(DetectedBy::Resync) {
                    self.head = stored;
                    self.publish_size();
                }
            }
            Err(StoreError::Corrupt { .. }) => {
                let _ = self.verified_store_head(DetectedBy::Resync);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the chain head after a failed commit")
            }
        }
        last_recorded_at(&*self.store).unwrap_or(Millis::MIN)
    }

    /// The stored head, once [`check_before_extending`] verified the entries this process did
    /// not write; otherwise the damage is reported (the node is read-only from now on) and
    /// its description returned.
    fn verified_store_head(&mut self, by: DetectedBy) -> Result<ChainHead, String> {
        let keys = CheckKeys {
            seal_key: &self.seal_key,
            node_id: &self.settings.node_id,
        };
        match check_before_extending(&*self.store, &keys, &self.guard, by) {
            Ok(Ok(head)) => {
                if let Some(signed) = self.guard.last_signed() {
                    if self
                        .last_checkpoint
                        .as_ref()
                        .is_none_or(|c| c.size < signed.size)
                    {
                        self.last_checkpoint = Some(signed);
                    }
                }
                Ok(head)
            }
            Ok(Err(damage)) => {
                let reason = damage.describe();
                self.guard.report(damage);
                Err(reason)
            }
            Err(e) => Err(format!("the stored log cannot be checked: {e}")),
        }
    }

    /// What is wrong with the store, after a commit found it changed behind this node's
    /// back: the check before extending's finding, `None` when it found nothing precise.
    fn pinpoint(&mut self, by: DetectedBy) -> Option<Damage> {
        let keys = CheckKeys {
            seal_key: &self.seal_key,
            node_id: &self.settings.node_id,
        };
        match check_before_extending(&*self.store, &keys, &self.guard, by) {
            Ok(Err(damage)) => Some(damage),
            _ => None,
        }
    }

    /// Makes the head's size what readers see: the size counter, the metric and the watch.
    fn publish_size(&self) {
        let size = self.head.next_seq;
        self.size.store(size, Ordering::Release);
        self.metrics.log_size.set(size);
        self.commits.send_modify(|committed| committed.size = size);
    }

    fn sign_checkpoint_logged(&mut self) {
        if let Err(e) = self.checkpoint_now() {
            tracing::error!(error = %e, "cannot sign checkpoint");
        }
    }

    /// Signs and stores a checkpoint of the committed head, unless the latest one already
    /// covers it.
    fn checkpoint_now(&mut self) -> Result<StoredCheckpoint, SequencerError> {
        if let Some(reason) = self.lost() {
            // Nothing is signed without the lease: the newest stored checkpoint (another
            // process may have signed past this node's head) is what there is.
            return match self.store.latest_checkpoint() {
                Ok(Some(latest)) => Ok(latest),
                Ok(None) => Err(SequencerError::LeaseLost(reason)),
                Err(e) => Err(SequencerError::from(&e)),
            };
        }
        if let Some(damage) = self.guard.damage() {
            return Err(SequencerError::ReadOnly(damage.describe()));
        }
        let size = self.head.next_seq;
        if let Some(cp) = &self.last_checkpoint {
            if cp.size == size {
                self.unsigned_since = None;
                return Ok(cp.clone());
            }
        }
        let root = self.head.tree.root();
        // The one check every signature goes through.
        if let Err(refused) = self.guard.admit(&*self.store, size, &root) {
            let damage = Damage::new(
                "inconsistent_checkpoint",
                Some(refused.signed_size),
                refused.to_string(),
                DetectedBy::Signing,
            );
            let error = SequencerError::ReadOnly(damage.describe());
            self.guard.report(damage);
            return Err(error);
        }
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
        // Durable before the checkpoint is stored or served.
        self.guard
            .record_signed(&stored, &self.head)
            .map_err(|e| SequencerError::Checkpoint(e.to_string()))?;
        self.store
            .put_checkpoint(&stored)
            .map_err(|e| SequencerError::from(&e))?;
        self.metrics.checkpoints_signed.inc();
        self.commits
            .send_modify(|committed| committed.checkpoint_size = stored.size);
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
    use evident_store::Filter;

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
