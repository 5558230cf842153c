//! `evident migrate --from DIR_OR_URL --to DIR_OR_URL`: copies one node's log (entries,
//! Merkle node hashes, signed checkpoints, API keys) and its identity from one storage to
//! another, checking it on the way, so that the copy verifies against the same checkpoints
//! and public key.
//!
//! - A DIR source is a data directory: its identity, its keys and the storage it records.
//!   A URL source is a PostgreSQL database; `--node-id` picks the node (needed only when it
//!   holds several), whose identity the database records (seals cannot be checked: the seal
//!   key is in the node's data directory).
//! - A URL destination receives the log and the node's identity; the source data directory
//!   is not changed. Start the node on it with `evident serve --data-dir DIR --storage URL`:
//!   the directory switches over, since the database now holds its log.
//! - A DIR destination must be new: it becomes a data directory with the same identity and
//!   keys (mode 0600) and the embedded store. It needs a DIR source, for the keys.
//!
//! A log pruned by retention is copied as it stands: the Merkle nodes over its pruned prefix
//! and its anchor first (the destination then continues at the first kept entry), then the
//! kept entries, so that proofs and checkpoints from before the pruning still verify on it.
//!
//! Nothing is written to a destination that already holds entries of the node. Both sides are
//! locked while copying (a data directory's lock, a PostgreSQL node's writer lease), so no
//! server writes to either meanwhile. The copy itself re-walks the chain (every entry hash
//! recomputed, every seal checked when the key is at hand), recomputes the Merkle nodes and
//! compares them with the stored ones, and checks every checkpoint's signature and root at its
//! size; with the keys at hand the destination is then verified as `evident verify` would.

use anyhow::{Context as _, bail};
use clap::Args;
use evident_core::chain::recompute_hash;
use evident_core::checkpoint::Checkpoint;
use evident_core::merkle::{CompactRange, NodeId, subtree_ids};
use evident_core::{ChainHead, Hash, NoteVerifier, SealKey, SealedEntry};
use evident_server::NodeFiles;
use evident_server::node::{Storage, lock_existing_data_dir};
use evident_server::verification::{self, VerifyOutcome};
use evident_store::postgres::{NodeRecord, is_postgres_url, redact_url};
use evident_store::{Filter, Order, PostgresStore, Store};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Entries copied per destination transaction.
const CHUNK: u64 = 5_000;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Source: a data directory, or a postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    pub from: String,
    /// Destination: a postgres:// URL, or a new data directory (embedded store).
    #[arg(long, value_name = "DIR|URL")]
    pub to: String,
    /// The node to copy from a database that holds several.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
}

/// One side's store and whatever lock keeps servers off it while copying.
struct Side {
    store: Arc<dyn Store>,
    describe: String,
    _lock: Option<std::fs::File>,
}

/// What is known of the node being copied.
struct Identity {
    record: NodeRecord,
    verifier: NoteVerifier,
    /// The data directory (with keys), when the source is one.
    files: Option<NodeFiles>,
}

fn open_postgres_side(url: &str, node_id: &str) -> anyhow::Result<(PostgresStore, String)> {
    let store = PostgresStore::open(url, node_id)
        .with_context(|| format!("opening {}", redact_url(url)))?;
    store
        .acquire_lease()
        .context("a server is running on this node: stop it before migrating")?;
    let describe = redact_url(url);
    Ok((store, describe))
}

fn open_source(args: &MigrateArgs) -> anyhow::Result<(Side, Identity)> {
    if is_postgres_url(&args.from) {
        let node_id = match &args.node_id {
            Some(id) => id.clone(),
            None => {
                let any = PostgresStore::open(&args.from, "")
                    .with_context(|| format!("opening {}", redact_url(&args.from)))?;
                let nodes = any.nodes()?;
                match nodes.as_slice() {
                    [only] => only.node_id.clone(),
                    [] => bail!("{} holds no Evident node", redact_url(&args.from)),
                    many => bail!(
                        "{} holds several nodes ({}): choose one with --node-id",
                        redact_url(&args.from),
                        many.iter()
                            .map(|n| n.node_id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        };
        let (store, describe) = open_postgres_side(&args.from, &node_id)?;
        let record = store
            .node_record()?
            .with_context(|| format!("{describe} holds no node {node_id:?}"))?;
        let verifier = NoteVerifier::parse(&record.verifier_key)
            .with_context(|| format!("the verifier key {describe} records for {node_id:?}"))?;
        let side = Side {
            store: Arc::new(store),
            describe,
            _lock: None,
        };
        return Ok((
            side,
            Identity {
                record,
                verifier,
                files: None,
            },
        ));
    }
    let dir = PathBuf::from(&args.from);
    let files = NodeFiles::open_readonly(&dir)
        .with_context(|| format!("opening data directory {}", dir.display()))?;
    if let Some(id) = &args.node_id {
        if id != files.node_id() {
            bail!(
                "{} is the data directory of node {:?}, not {id:?}",
                dir.display(),
                files.node_id()
            );
        }
    }
    let lock = lock_existing_data_dir(&dir)
        .context("a server is running on this data directory: stop it before migrating")?;
    let (store, describe): (Arc<dyn Store>, String) = match files.storage() {
        Storage::Embedded => (files.open_store()?, format!("{} (embedded)", dir.display())),
        Storage::Postgres(url) => {
            let (store, describe) = open_postgres_side(url, files.node_id())?;
            (Arc::new(store), describe)
        }
    };
    let identity = Identity {
        record: files.node_record(),
        verifier: files.verifier(),
        files: Some(files),
    };
    Ok((
        Side {
            store,
            describe,
            _lock: Some(lock),
        },
        identity,
    ))
}

fn open_destination(to: &str, identity: &Identity) -> anyhow::Result<(Side, Option<NodeFiles>)> {
    let node_id = &identity.record.node_id;
    if is_postgres_url(to) {
        let (store, describe) = open_postgres_side(to, node_id)?;
        store
            .register_node(&identity.record)
            .with_context(|| format!("recording node {node_id:?} in {describe}"))?;
        let side = Side {
            store: Arc::new(store),
            describe,
            _lock: None,
        };
        return Ok((side, None));
    }
    let Some(source) = &identity.files else {
        bail!(
            "a new data directory needs the node's keys, which are in its data directory, not \
             in the database: pass --from the node's data directory"
        );
    };
    let dir = Path::new(to);
    if dir.exists() && dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} exists and is not empty: the destination must be a new directory",
            dir.display()
        );
    }
    let files = NodeFiles::create_copy(dir, source, Storage::Embedded)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let lock = lock_existing_data_dir(dir)?;
    let store = files.open_store()?;
    let side = Side {
        store,
        describe: format!("{} (embedded)", dir.display()),
        _lock: Some(lock),
    };
    Ok((side, Some(files)))
}

/// Reads entries `[after+1 …]`, at most `CHUNK`.
fn read_chunk(store: &dyn Store, after: Option<u64>) -> anyhow::Result<Vec<SealedEntry>> {
    let mut out = Vec::new();
    store.scan(
        &Filter::default(),
        Order::Ascending,
        after,
        Some(CHUNK),
        &mut |e| {
            out.push(e);
            ControlFlow::Continue(())
        },
    )?;
    Ok(out)
}

/// Merkle nodes copied per destination transaction.
const NODE_CHUNK: usize = 50_000;

/// Copies a pruned log's prefix into the empty destination: every Merkle node over the pruned
/// entries `[0, k)` (what the source's proofs and its later tree are built from; none can be
/// recomputed there), then the anchor. Returns the tree of `[0, k)` the walk continues from.
fn copy_pruned_prefix(
    source: &dyn Store,
    dest: &Side,
    anchor: &evident_store::PruneAnchor,
) -> anyhow::Result<CompactRange> {
    let k = anchor.below_seq;
    let mut ids = Vec::with_capacity(NODE_CHUNK);
    let flush = |ids: &mut Vec<NodeId>| -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let hashes = source
            .read_nodes(ids)
            .context("reading the Merkle nodes of the source's pruned prefix")?;
        let nodes: Vec<(NodeId, Hash)> = ids.iter().copied().zip(hashes).collect();
        dest.store
            .import_pruned_nodes(&nodes)
            .with_context(|| format!("writing to {}", dest.describe))?;
        ids.clear();
        Ok(())
    };
    for level in 0u8..64 {
        let count = k >> level;
        if count == 0 {
            break;
        }
        for index in 0..count {
            ids.push(NodeId { level, index });
            if ids.len() == NODE_CHUNK {
                flush(&mut ids)?;
            }
        }
    }
    flush(&mut ids)?;
    dest.store
        .import_anchor(anchor)
        .with_context(|| format!("writing the retention anchor to {}", dest.describe))?;
    let hashes = source.read_nodes(&subtree_ids(0, k))?;
    CompactRange::from_parts(k, hashes)
        .with_context(|| format!("the source's tree of its pruned prefix [0, {k})"))
}

/// Checks a source checkpoint inside the pruned prefix: signed by the node, and the root of
/// the stored tree at its size.
fn check_prefix_checkpoint(
    source: &dyn Store,
    cp: &evident_store::StoredCheckpoint,
    verifier: &NoteVerifier,
) -> anyhow::Result<()> {
    let opened = Checkpoint::open(&cp.signed_note, verifier)
        .with_context(|| format!("source checkpoint of size {}", cp.size))?;
    let hashes = source.read_nodes(&subtree_ids(0, cp.size))?;
    let root = CompactRange::from_parts(cp.size, hashes)
        .with_context(|| format!("the source's tree at size {}", cp.size))?
        .root();
    if opened.size != cp.size || opened.root != root || cp.root != root {
        bail!(
            "source checkpoint of size {} does not match the log's tree at that size",
            cp.size
        );
    }
    Ok(())
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let (source, identity) = open_source(&args)?;
    let node_id = identity.record.node_id.clone();
    let source_head = source
        .store
        .load_head()
        .with_context(|| format!("reading the log in {}", source.describe))?;
    let anchor = source.store.prune_anchor()?;
    let (dest, dest_files) = open_destination(&args.to, &identity)?;
    let dest_head = dest.store.load_head()?;
    if dest_head.next_seq > 0 || !dest.store.checkpoints()?.is_empty() {
        bail!(
            "{} already holds {} entries of node {node_id:?}: refusing to copy over a log",
            dest.describe,
            dest_head.next_seq
        );
    }
    let seal_key: Option<&SealKey> = identity.files.as_ref().map(NodeFiles::seal_key);
    let checkpoints = source.store.checkpoints()?;
    let mut pending = checkpoints.iter().peekable();

    let mut tree = CompactRange::new();
    let mut prev = ChainHead::genesis().last_hash;
    let mut buf = Vec::new();
    let mut after = None;
    let mut copied = 0u64;
    let bar = crate::output::count_progress(
        Some(
            source_head
                .next_seq
                .saturating_sub(anchor.as_ref().map_or(0, |a| a.below_seq)),
        ),
        "copying",
    );
    // A pruned log: its prefix's Merkle nodes and its anchor first; the walk then starts at
    // the first kept entry, from the anchor's hash and the prefix's tree.
    let first_kept = anchor.as_ref().map_or(0, |a| a.below_seq);
    if let Some(anchor) = &anchor {
        tree = copy_pruned_prefix(&*source.store, &dest, anchor)?;
        prev = anchor.hash;
        after = Some(anchor.below_seq - 1);
        while let Some(cp) = pending.next_if(|cp| cp.size <= first_kept) {
            check_prefix_checkpoint(&*source.store, cp, &identity.verifier)?;
        }
    }
    loop {
        let entries = read_chunk(&*source.store, after)?;
        let Some(last) = entries.last() else { break };
        after = Some(last.event.seq);
        let mut nodes: Vec<(NodeId, Hash)> = Vec::new();
        for entry in &entries {
            let seq = entry.event.seq;
            if seq != tree.size() {
                bail!(
                    "source entry {seq} follows entry {}: the log has a gap",
                    tree.size()
                );
            }
            if recompute_hash(&prev, &entry.event, &mut buf) != entry.hash {
                bail!("source entry {seq}: its hash does not match its content and predecessor");
            }
            if let Some(key) = seal_key {
                if !key.check(&entry.hash, &entry.seal) {
                    bail!("source entry {seq}: bad seal");
                }
            }
            prev = entry.hash;
            tree.append_leaf(entry.leaf_hash(), &mut nodes);
            while let Some(cp) = pending.next_if(|cp| cp.size <= tree.size()) {
                let opened = Checkpoint::open(&cp.signed_note, &identity.verifier)
                    .with_context(|| format!("source checkpoint of size {}", cp.size))?;
                if cp.size != tree.size()
                    || opened.size != cp.size
                    || opened.root != tree.root()
                    || cp.root != tree.root()
                {
                    bail!(
                        "source checkpoint of size {} does not match the log's tree at that size",
                        cp.size
                    );
                }
            }
        }
        // The recomputed nodes must be the stored ones: a copy of exactly what was there.
        let ids: Vec<NodeId> = nodes.iter().map(|(id, _)| *id).collect();
        let stored = source.store.read_nodes(&ids)?;
        if let Some(((id, _), _)) = nodes.iter().zip(&stored).find(|((_, h), s)| h != *s) {
            bail!(
                "source Merkle node (level {}, index {}) differs from the one its entries give",
                id.level,
                id.index
            );
        }
        dest.store
            .append(&entries, &nodes)
            .with_context(|| format!("writing to {}", dest.describe))?;
        copied += entries.len() as u64;
        bar.inc(entries.len() as u64);
    }
    bar.finish_and_clear();
    if copied != source_head.next_seq - first_kept {
        bail!(
            "copied {copied} entries but the source log holds {}: was a server writing to it?",
            source_head.next_seq - first_kept
        );
    }
    if let Some(cp) = pending.next() {
        bail!(
            "source checkpoint of size {} is beyond the log's {} entries",
            cp.size,
            copied
        );
    }
    for cp in &checkpoints {
        dest.store.put_checkpoint(cp)?;
    }
    let keys = source.store.keys()?;
    for key in &keys {
        dest.store.put_key(key)?;
    }
    if dest.store.load_head()? != source_head {
        bail!("the copy's chain head differs from the source's");
    }

    let mut out = std::io::stdout().lock();
    if let Some(files) = identity.files.as_ref() {
        let verify_files = dest_files.as_ref().unwrap_or(files);
        match verification::verify_store(
            &*dest.store,
            verify_files.seal_key(),
            &identity.verifier,
            &node_id,
            None,
        )? {
            VerifyOutcome::Intact(report) => writeln!(
                out,
                "OK: copy verified: {} entries, seals checked, {} signed checkpoint(s) matched",
                report.entries, report.checkpoints_checked
            )?,
            VerifyOutcome::Broken { problem, .. } => {
                bail!("the copy in {} does not verify: {problem}", dest.describe)
            }
        }
    }
    let pruned = match &anchor {
        Some(a) => format!(" (entries below {} were pruned by retention)", a.below_seq),
        None => String::new(),
    };
    writeln!(
        out,
        "migrated node {node_id:?}: {copied} entries{pruned}, {} checkpoint(s), {} API key(s) \
         from {} to {}",
        checkpoints.len(),
        keys.len(),
        source.describe,
        dest.describe
    )?;
    writeln!(
        out,
        "public key (unchanged): {}",
        identity.verifier.to_vkey_string()
    )?;
    if is_postgres_url(&args.to) && !is_postgres_url(&args.from) {
        writeln!(
            out,
            "to serve from it: evident serve --data-dir {} --storage {}",
            args.from,
            redact_url(&args.to)
        )?;
    }
    Ok(())
}
