//! The node's defence of its own history. [`Guard`] keeps, outside the store (in
//! `DATA_DIR/state/`, fsync'd), the last checkpoint this node signed and the last point it
//! verified; every signature goes through [`Guard::admit`], which refuses a checkpoint that is
//! not consistent with the last one signed. It holds the runtime read-only state ([`Damage`]:
//! what is wrong, where, found by which path) and keeps integrity findings durably until they
//! are in the log. [`check_before_extending`] is what a node runs before it appends after
//! entries it did not write in this process (at start, and after every resync with the store).

use crate::file_modes::{DirSync, WriteFailed, write_private_file_durably};
use crate::metrics::Metrics;
use crate::verification::{self, Problem, VerifyOutcome};
use evident_core::event::Millis;
use evident_core::merkle::{self, CompactRange};
use evident_core::rotation::SealEpochs;
use evident_core::verify::Anchor;
use evident_core::{ChainHead, Checkpoint, Hash, NoteVerifier};
use evident_store::{Store, StoreError, StoredCheckpoint};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Directory of the node's own integrity state inside the data directory (mode 0700).
pub const STATE_DIR: &str = "state";
/// The last signed checkpoint and the last verified point.
pub const SIGNED_STATE_FILE: &str = "signed-state.json";
/// Integrity findings not yet recorded in the log.
pub const PENDING_FILE: &str = "pending-integrity.json";
/// The action of the CRITICAL event recording a finding.
pub const INTEGRITY_ACTION: &str = "evident.integrity.damage_found";

/// Which path found a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DetectedBy {
    /// The check before the first append after start.
    Startup,
    /// A commit found the store no longer ends where this node left it.
    Commit,
    /// The check after a failed commit or a retaken writer lease.
    Resync,
    /// A checkpoint about to be signed was not consistent with the last one signed.
    Signing,
    /// The background verifier.
    Background,
    /// `GET /api/v1/verify`.
    OnDemand,
}

/// Why the node refuses writes: what is wrong with the stored log, where, and who found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Damage {
    /// Machine-readable kind: a verification kind (`chain_broken`, `seal_mismatch`,
    /// `truncated`, `merkle_node_mismatch`, `bad_checkpoint_signature`, …), or
    /// `checkpoint_mismatch` (a stored checkpoint row that is not what its note says),
    /// `head_mismatch` (the stored head is not the one verified), `inconsistent_checkpoint`
    /// (a checkpoint to sign would not extend the last one signed), `store_inconsistent`.
    pub kind: String,
    /// The first sequence number concerned (for a checkpoint, its size), when known.
    pub seq: Option<u64>,
    pub message: String,
    /// When it was found, milliseconds since the Unix epoch.
    pub detected_at: Millis,
    pub detected_by: DetectedBy,
}

impl Damage {
    pub fn new(kind: &str, seq: Option<u64>, message: String, by: DetectedBy) -> Damage {
        Damage {
            kind: kind.to_owned(),
            seq,
            message,
            detected_at: crate::now_ms(),
            detected_by: by,
        }
    }

    pub fn from_problem(problem: &Problem, by: DetectedBy) -> Damage {
        Damage::new(problem.kind(), problem.seq(), problem.to_string(), by)
    }

    /// One line for messages: `kind at entry N: message`.
    pub fn describe(&self) -> String {
        match self.seq {
            Some(seq) => format!("{} at entry {seq}: {}", self.kind, self.message),
            None => format!("{}: {}", self.kind, self.message),
        }
    }
}

/// Errors reading or writing the state files.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    BadFile { path: PathBuf, problem: String },
}

/// What [`Guard::admit`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to sign a checkpoint of size {size}: it is not consistent with the checkpoint of \
     size {signed_size} this node signed before ({problem})"
)]
pub struct Inconsistent {
    pub size: u64,
    pub signed_size: u64,
    pub problem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedRecord {
    size: u64,
    root: String,
    note: String,
    created_at: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifiedRecord {
    next_seq: u64,
    prev_hash: String,
    frontier: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateRecord {
    version: u32,
    #[serde(default)]
    signed: Option<SignedRecord>,
    #[serde(default)]
    verified: Option<VerifiedRecord>,
    #[serde(default)]
    last_full_pass_at: Option<Millis>,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// Whether the file existed (absent: a new node, or one upgraded from before it).
    existed: bool,
    signed: Option<StoredCheckpoint>,
    verified: Option<Anchor>,
    last_full_pass_at: Option<Millis>,
}

/// The node's signed state, read-only state and pending findings. Shared by the sequencer,
/// the background verifier and the HTTP layer.
pub struct Guard {
    dir: PathBuf,
    /// Every signing key the node has had (docs/FORMAT.md §18).
    verifiers: Vec<NoteVerifier>,
    state: Mutex<State>,
    damage: RwLock<Option<Damage>>,
    pending: Mutex<Vec<Damage>>,
    metrics: Arc<Metrics>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GuardError + '_ {
    move |source| GuardError::Io {
        path: path.to_owned(),
        source,
    }
}

fn bad(path: &Path, problem: impl Into<String>) -> GuardError {
    GuardError::BadFile {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn hash_field(path: &Path, what: &str, hex: &str) -> Result<Hash, GuardError> {
    Hash::from_hex(hex).map_err(|_| bad(path, format!("{what} is not a 64-digit hex hash")))
}

impl Guard {
    /// Reads `data_dir/state/` (created, mode 0700, when missing).
    pub fn open(
        data_dir: &Path,
        verifiers: Vec<NoteVerifier>,
        metrics: Arc<Metrics>,
    ) -> Result<Guard, GuardError> {
        let dir = data_dir.join(STATE_DIR);
        crate::file_modes::create_private_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(SIGNED_STATE_FILE);
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => parse_state(&path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let pending_path = dir.join(PENDING_FILE);
        let pending: Vec<Damage> = match std::fs::read_to_string(&pending_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| bad(&pending_path, format!("not a list of findings: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&pending_path)(e)),
        };
        Ok(Guard {
            dir,
            verifiers,
            state: Mutex::new(state),
            damage: RwLock::new(None),
            pending: Mutex::new(pending),
            metrics,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why the node refuses writes, while it does.
    pub fn damage(&self) -> Option<Damage> {
        self.damage
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a finding: logged at ERROR at once, the node read-only from now on (the first
    /// finding stays the reason), and the finding kept in the data directory until it is in
    /// the log.
    pub fn report(&self, damage: Damage) {
        tracing::error!(
            kind = damage.kind,
            seq = damage.seq,
            detected_by = ?damage.detected_by,
            "integrity damage found: {}; the node refuses writes from now on (reads go on)",
            damage.message
        );
        {
            let mut current = self.damage.write().unwrap_or_else(PoisonError::into_inner);
            if current.is_none() {
                *current = Some(damage.clone());
            }
        }
        self.metrics.read_only.set(1);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending
            .iter()
            .any(|p| p.kind == damage.kind && p.seq == damage.seq)
        {
            return;
        }
        pending.push(damage);
        if let Err(e) = self.write_pending(&pending) {
            tracing::error!(error = %e, "cannot keep the integrity finding in the data directory");
        }
    }

    /// Findings not yet recorded in the log, oldest first.
    pub fn pending(&self) -> Vec<Damage> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the first `n` pending findings: they are in the log now.
    pub fn recorded(&self, n: usize) -> Result<(), GuardError> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let n = n.min(pending.len());
        pending.drain(..n);
        self.write_pending(&pending)
    }

    fn write_pending(&self, pending: &[Damage]) -> Result<(), GuardError> {
        let path = self.dir.join(PENDING_FILE);
        let text = serde_json::to_string_pretty(pending).map_err(|e| bad(&path, e.to_string()))?;
        write_durably(&path, &text)
    }

    /// The last checkpoint this node signed, as its state file records it.
    pub fn last_signed(&self) -> Option<StoredCheckpoint> {
        self.state().signed.clone()
    }

    /// The last signed checkpoint, opened, for verifiers to hold the log to.
    pub fn trusted(&self) -> Vec<Checkpoint> {
        self.last_signed()
            .and_then(|cp| Checkpoint::open_any(&cp.signed_note, &self.verifiers).ok())
            .into_iter()
            .collect()
    }

    /// The last verified point: every entry before it was checked (or written) by this node.
    pub fn verified(&self) -> Option<Anchor> {
        self.state().verified.clone()
    }

    /// When the background verifier last finished a full pass.
    pub fn last_full_pass_at(&self) -> Option<Millis> {
        self.state().last_full_pass_at
    }

    /// Every signing key the node has had.
    pub fn verifiers(&self) -> &[NoteVerifier] {
        &self.verifiers
    }

    /// The one check every signature goes through: a checkpoint of `size` with `root` must
    /// extend the last one signed (not smaller, the same root at the same size, and a
    /// consistency proof from it, read from `store`, that verifies).
    pub fn admit(&self, store: &dyn Store, size: u64, root: &Hash) -> Result<(), Inconsistent> {
        let Some(signed) = self.last_signed() else {
            return Ok(());
        };
        let refuse = |problem: String| Inconsistent {
            size,
            signed_size: signed.size,
            problem,
        };
        if size < signed.size {
            return Err(refuse("it is smaller".to_owned()));
        }
        if size == signed.size {
            return if *root == signed.root {
                Ok(())
            } else {
                Err(refuse("the same size with another root".to_owned()))
            };
        }
        if signed.size == 0 {
            return Ok(());
        }
        let plan =
            merkle::consistency_plan(signed.size, size).map_err(|e| refuse(e.to_string()))?;
        let hashes = store
            .read_nodes(plan.nodes())
            .map_err(|e| refuse(format!("the consistency proof cannot be read: {e}")))?;
        let proof = plan
            .assemble(&hashes)
            .map_err(|e| refuse(format!("the consistency proof cannot be built: {e}")))?;
        merkle::verify_consistency(signed.size, &signed.root, size, root, &proof)
            .map_err(|e| refuse(format!("the consistency proof does not verify: {e}")))
    }

    /// Records `checkpoint` as the last one signed and `head` (its tree) as verified, durably:
    /// called after [`Self::admit`] and before the checkpoint is stored or served.
    pub fn record_signed(
        &self,
        checkpoint: &StoredCheckpoint,
        head: &ChainHead,
    ) -> Result<(), GuardError> {
        let mut state = self.state();
        let mut next = state.clone();
        next.signed = Some(checkpoint.clone());
        next.verified = Some(anchor_of(head));
        self.write_state(&next)?;
        *state = next;
        Ok(())
    }

    /// Records `head` as verified (and `signed`, when newer than the recorded one).
    pub fn record_verified(
        &self,
        head: &ChainHead,
        signed: Option<&StoredCheckpoint>,
    ) -> Result<(), GuardError> {
        let mut state = self.state();
        let mut next = state.clone();
        next.verified = Some(anchor_of(head));
        if let Some(cp) = signed {
            if next.signed.as_ref().is_none_or(|s| s.size < cp.size) {
                next.signed = Some(cp.clone());
            }
        }
        if state.existed
            && next.verified == state.verified
            && next.signed.as_ref().map(|s| s.size) == state.signed.as_ref().map(|s| s.size)
        {
            return Ok(());
        }
        self.write_state(&next)?;
        *state = next;
        Ok(())
    }

    /// Records the end of a full background pass.
    pub fn record_full_pass(&self, at: Millis) -> Result<(), GuardError> {
        let mut state = self.state();
        let mut next = state.clone();
        next.last_full_pass_at = Some(at);
        self.write_state(&next)?;
        *state = next;
        Ok(())
    }

    fn write_state(&self, state: &State) -> Result<(), GuardError> {
        let path = self.dir.join(SIGNED_STATE_FILE);
        let record = StateRecord {
            version: 1,
            signed: state.signed.as_ref().map(|cp| SignedRecord {
                size: cp.size,
                root: cp.root.to_hex(),
                note: cp.signed_note.clone(),
                created_at: cp.created_at,
            }),
            verified: state.verified.as_ref().map(|a| VerifiedRecord {
                next_seq: a.next_seq,
                prev_hash: a.prev_hash.to_hex(),
                frontier: a.tree.hashes().iter().map(Hash::to_hex).collect(),
            }),
            last_full_pass_at: state.last_full_pass_at,
        };
        let text = serde_json::to_string_pretty(&record).map_err(|e| bad(&path, e.to_string()))?;
        write_durably(&path, &text)
    }
}

fn parse_state(path: &Path, text: &str) -> Result<State, GuardError> {
    let record: StateRecord =
        serde_json::from_str(text).map_err(|e| bad(path, format!("not a signed state: {e}")))?;
    if record.version != 1 {
        return Err(bad(path, format!("unknown version {}", record.version)));
    }
    let signed = match record.signed {
        None => None,
        Some(s) => Some(StoredCheckpoint {
            size: s.size,
            root: hash_field(path, "signed.root", &s.root)?,
            signed_note: s.note,
            created_at: s.created_at,
        }),
    };
    let verified = match record.verified {
        None => None,
        Some(v) => {
            let hashes = v
                .frontier
                .iter()
                .map(|h| hash_field(path, "verified.frontier", h))
                .collect::<Result<Vec<_>, _>>()?;
            let tree = CompactRange::from_parts(v.next_seq, hashes)
                .map_err(|e| bad(path, format!("verified.frontier: {e}")))?;
            Some(Anchor {
                next_seq: v.next_seq,
                prev_hash: hash_field(path, "verified.prev_hash", &v.prev_hash)?,
                tree,
            })
        }
    };
    Ok(State {
        existed: true,
        signed,
        verified,
        last_full_pass_at: record.last_full_pass_at,
    })
}

fn anchor_of(head: &ChainHead) -> Anchor {
    Anchor {
        next_seq: head.next_seq,
        prev_hash: head.last_hash,
        tree: head.tree.clone(),
    }
}

/// Writes durably (mode 0600); a directory that cannot be synced fails the write.
fn write_durably(path: &Path, contents: &str) -> Result<(), GuardError> {
    write_private_file_durably(path, contents, DirSync::Required)
        .map_err(|WriteFailed { path, source }| GuardError::Io { path, source })
}

/// What the check before extending needs of the node.
pub struct CheckKeys<'a> {
    pub seal_key: &'a SealEpochs,
    pub node_id: &'a str,
}

/// The check before extending: verifies the entries after the last verified point (chain,
/// seal, node), holds them to the last signed checkpoint and to every stored checkpoint
/// (signature, row against note, root), re-checks the newest entry, and compares the stored
/// head (its hash and the Merkle frontier the node will build on) with the verified one.
/// `Ok(Ok(head))`: safe to extend, `head` recorded as verified. `Ok(Err(damage))`: what is
/// wrong (not reported yet). `Err`: the store could not be read.
pub fn check_before_extending(
    store: &dyn Store,
    keys: &CheckKeys<'_>,
    guard: &Guard,
    by: DetectedBy,
) -> Result<Result<ChainHead, Damage>, StoreError> {
    let damage =
        |kind: &str, seq: Option<u64>, message: String| Damage::new(kind, seq, message, by);
    let head = match store.load_head() {
        Ok(head) => head,
        Err(StoreError::Corrupt { seq, problem }) => {
            let found = match locate(store, keys, guard, by)? {
                Some(mut found) => {
                    found.message = format!("{} (loading the head: {problem})", found.message);
                    found
                }
                None => damage("store_inconsistent", seq, problem),
            };
            return Ok(Err(found));
        }
        Err(e) => return Err(e),
    };
    let stored_signed = match stored_checkpoints(store, guard, by)? {
        Ok(list) => list,
        Err(found) => return Ok(Err(found)),
    };
    let newest_stored = stored_signed.last().map(|(s, _)| s.clone());
    let start = match guard.verified() {
        Some(anchor) => anchor,
        // A new node, or one upgraded from before the state file: start at the newest stored
        // checkpoint (the store checked its tree against it when loading the head), or at the
        // start of the log.
        None => match &newest_stored {
            Some(cp) if cp.size > 0 && cp.size <= head.next_seq => {
                match verification::anchor_at(store, cp.size) {
                    Ok(anchor) => anchor,
                    Err(verification::VerifyError::Store(e)) => return Err(e),
                    Err(e) => return Ok(Err(damage("store_inconsistent", None, e.to_string()))),
                }
            }
            _ => Anchor::genesis(),
        },
    };
    if head.next_seq < start.next_seq {
        return Ok(Err(damage(
            "truncated",
            Some(head.next_seq),
            format!(
                "the stored log ends at {} entries, but this node verified {}: entries were \
                 removed",
                head.next_seq, start.next_seq
            ),
        )));
    }
    let mut trusted = guard.trusted();
    trusted.extend(
        stored_signed
            .iter()
            .filter(|(s, _)| s.size >= start.next_seq)
            .map(|(_, c)| c.clone()),
    );
    let walked_from = start.next_seq;
    let (outcome, position) =
        match verification::verify_from(store, keys.seal_key, keys.node_id, start, &trusted) {
            Ok(done) => done,
            Err(verification::VerifyError::Store(e)) => return Err(e),
            Err(e) => return Ok(Err(damage("store_inconsistent", None, e.to_string()))),
        };
    if let VerifyOutcome::Broken { problem, .. } = &outcome {
        return Ok(Err(Damage::from_problem(problem, by)));
    }
    if let Some(problem) = recheck_newest(store, keys, head.next_seq, walked_from)? {
        return Ok(Err(Damage::from_problem(&problem, by)));
    }
    if position.next_seq != head.next_seq || position.prev_hash != head.last_hash {
        return Ok(Err(damage(
            "head_mismatch",
            head.next_seq.checked_sub(1),
            format!(
                "the stored head (entry {}) is not the one verified from the entries",
                head.next_seq.saturating_sub(1)
            ),
        )));
    }
    if position.tree != head.tree {
        let ids = merkle::subtree_ids(0, head.next_seq);
        let differing = ids
            .iter()
            .zip(position.tree.hashes().iter().zip(head.tree.hashes()))
            .find(|(_, (a, b))| a != b)
            .map(|(id, _)| *id);
        let (seq, what) = match differing {
            Some(id) => (
                evident_store::tree::span(id).map(|(s, _)| s),
                format!("(level {}, index {})", id.level, id.index),
            ),
            None => (None, String::new()),
        };
        return Ok(Err(damage(
            "merkle_node_mismatch",
            seq,
            format!(
                "the stored Merkle node {what} the node would build on is not the hash of the \
                 entries under it"
            ),
        )));
    }
    let signed = newest_stored.filter(|cp| cp.size <= head.next_seq);
    if let Err(e) = guard.record_verified(&head, signed.as_ref()) {
        tracing::error!(error = %e, "cannot record the verified point");
    }
    Ok(Ok(head))
}

/// Every stored checkpoint, each with what its note says: each must be signed by this node's
/// key and say what its row says; otherwise the first that does not, as damage.
pub fn stored_checkpoints(
    store: &dyn Store,
    guard: &Guard,
    by: DetectedBy,
) -> Result<Result<Vec<(StoredCheckpoint, Checkpoint)>, Damage>, StoreError> {
    let mut out = Vec::new();
    for stored in store.checkpoints()? {
        match Checkpoint::open_any(&stored.signed_note, guard.verifiers()) {
            Ok(c) if c.size == stored.size && c.root == stored.root => out.push((stored, c)),
            Ok(c) => {
                return Ok(Err(Damage::new(
                    "checkpoint_mismatch",
                    Some(stored.size),
                    format!(
                        "the stored checkpoint row of size {} holds a note of size {}: rows were \
                         altered",
                        stored.size, c.size
                    ),
                    by,
                )));
            }
            Err(e) => {
                return Ok(Err(Damage::new(
                    "bad_checkpoint_signature",
                    Some(stored.size),
                    format!(
                        "the stored checkpoint of size {} was not signed by this node's key: {e}",
                        stored.size
                    ),
                    by,
                )));
            }
        }
    }
    Ok(Ok(out))
}

/// Re-checks the newest stored entry against its stored predecessor when the walk from the
/// verified point did not reach it (an edit of the head row keeps its stored hash).
pub fn recheck_newest(
    store: &dyn Store,
    keys: &CheckKeys<'_>,
    size: u64,
    walked_from: u64,
) -> Result<Option<Problem>, StoreError> {
    let Some(last) = size.checked_sub(1) else {
        return Ok(None);
    };
    if walked_from <= last {
        return Ok(None);
    }
    let anchor = if last == 0 {
        Anchor::genesis()
    } else {
        match verification::anchor_at(store, last) {
            Ok(anchor) => anchor,
            Err(verification::VerifyError::Store(e)) => return Err(e),
            // The tree just before it cannot be rebuilt: the head comparison says why.
            Err(_) => return Ok(None),
        }
    };
    match verification::verify_from(store, keys.seal_key, keys.node_id, anchor, &[]) {
        Ok((VerifyOutcome::Broken { problem, .. }, _)) => Ok(Some(problem)),
        Ok(_) => Ok(None),
        Err(verification::VerifyError::Store(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

/// Pinpoints the damage of a store that will not even load its head: a full verification
/// held to the last signed checkpoint, then every stored Merkle node.
pub fn locate(
    store: &dyn Store,
    keys: &CheckKeys<'_>,
    guard: &Guard,
    by: DetectedBy,
) -> Result<Option<Damage>, StoreError> {
    match full_pass(store, keys, guard) {
        Ok(found) => Ok(found.map(|p| Damage::from_problem(&p, by))),
        Err(verification::VerifyError::Store(e)) => Err(e),
        Err(e) => Ok(Some(damage_of_error(&e, by))),
    }
}

/// A verification that could not start, as damage: a retention anchor that does not check
/// is `bad_anchor` at its entry, anything else `store_inconsistent`.
pub fn damage_of_error(e: &verification::VerifyError, by: DetectedBy) -> Damage {
    match e {
        verification::VerifyError::BadAnchor { from, problem } => Damage::new(
            "bad_anchor",
            Some(*from),
            format!("cannot start at the retention anchor (entry {from}): {problem}"),
            by,
        ),
        other => Damage::new("store_inconsistent", None, other.to_string(), by),
    }
}

/// The whole log verified (entries, every stored checkpoint, the last signed one), then every
/// stored Merkle node: the first problem, if any.
pub fn full_pass(
    store: &dyn Store,
    keys: &CheckKeys<'_>,
    guard: &Guard,
) -> Result<Option<Problem>, verification::VerifyError> {
    let outcome = verification::verify_store_against(
        store,
        keys.seal_key,
        guard.verifiers(),
        keys.node_id,
        &guard.trusted(),
    )?;
    match outcome {
        VerifyOutcome::Broken { problem, .. } => Ok(Some(problem)),
        VerifyOutcome::Intact(report) => {
            // Below a retention anchor the entries are gone: nodes are checked from genesis
            // only on a log never pruned.
            if store.prune_anchor()?.is_some() {
                return Ok(None);
            }
            verification::stored_nodes_problem(store, &Anchor::genesis(), report.size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{event_json, faulty_node, test_config};
    use evident_core::EventInput;
    use evident_store::{Filter, Order};

    fn append(node: &crate::node::Node, n: usize) {
        let inputs = (0..n)
            .map(|i| EventInput::from_json(&event_json(&format!("u{i}"), "auth.login")).unwrap())
            .collect();
        node.sequencer().append_blocking(inputs).unwrap();
    }

    /// The root of the stored tree of `size` entries.
    fn stored_root(store: &dyn Store, size: u64) -> Hash {
        let hashes = store.read_nodes(&merkle::subtree_ids(0, size)).unwrap();
        CompactRange::from_parts(size, hashes).unwrap().root()
    }

    #[test]
    fn admit_refuses_every_checkpoint_that_does_not_extend_the_last_signed_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, _) = faulty_node(test_config(tmp.path()));
        append(&node, 10);
        let signed = node.sequencer().force_checkpoint_blocking().unwrap();
        let guard = node.guard();
        assert_eq!(guard.last_signed(), Some(signed.clone()));
        let store = &**node.store();
        guard.admit(store, 10, &signed.root).unwrap();
        let smaller = guard.admit(store, 9, &stored_root(store, 9)).unwrap_err();
        assert!(smaller.problem.contains("smaller"), "{smaller}");
        let other = guard.admit(store, 10, &Hash([9; 32])).unwrap_err();
        assert!(other.problem.contains("another root"), "{other}");
        append(&node, 5);
        guard.admit(store, 15, &stored_root(store, 15)).unwrap();
        let fork = guard.admit(store, 15, &Hash([9; 32])).unwrap_err();
        assert!(fork.problem.contains("does not verify"), "{fork}");
        assert_eq!((fork.size, fork.signed_size), (15, 10));
        node.shutdown();
    }

    #[test]
    fn the_signed_state_and_pending_findings_survive_a_restart_and_reach_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let config = test_config(tmp.path());
        let (node, _) = faulty_node(config.clone());
        append(&node, 3);
        let signed = node.sequencer().force_checkpoint_blocking().unwrap();
        node.guard().report(Damage::new(
            "chain_broken",
            Some(1),
            "injected".to_owned(),
            DetectedBy::Background,
        ));
        // Read-only at once: nothing appended, nothing signed.
        let refused = node
            .sequencer()
            .append_blocking(vec![
                EventInput::from_json(&event_json("x", "auth.login")).unwrap(),
            ])
            .unwrap_err();
        assert!(
            refused.to_string().contains("chain_broken at entry 1"),
            "{refused}"
        );
        assert!(node.sequencer().force_checkpoint_blocking().is_err());
        node.shutdown();
        drop(node);

        let metrics = Arc::new(Metrics::new());
        let files = crate::node::NodeFiles::open_readonly(&config.data_dir).unwrap();
        let reread = Guard::open(&config.data_dir, files.verifiers().to_vec(), metrics).unwrap();
        assert_eq!(reread.last_signed(), Some(signed));
        assert_eq!(reread.pending().len(), 1);
        drop(reread);

        // The log itself is intact: the restarted node is writable and records the finding.
        let (node, _) = faulty_node(config);
        assert!(node.guard().damage().is_none());
        assert!(node.guard().pending().is_empty());
        let mut recorded = Vec::new();
        node.store()
            .scan(&Filter::default(), Order::Ascending, None, None, &mut |e| {
                recorded.push(e);
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(recorded.len(), 4);
        let event = &recorded[3].event;
        assert_eq!(event.action, INTEGRITY_ACTION);
        assert_eq!(event.severity, evident_core::event::Severity::Critical);
        assert!(event.context.as_str().contains("\"chain_broken\""));
        node.shutdown();
    }
}
