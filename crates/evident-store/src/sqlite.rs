//! The embedded storage backend: one SQLite database file holding one node's log (entries,
//! Merkle nodes, checkpoints) and its API keys. Owns the connections (one writer behind a
//! mutex, a small pool of read-only readers that WAL lets run beside it), durability settings,
//! error mapping, and the [`Store`] implementation. The schema lives in `sqlite/schema.rs`, the
//! row encoding in `sqlite/codec.rs`, query planning in `sqlite/query.rs`, the counts behind
//! histograms in `sqlite/counts.rs`. It stores what the integrity core computed and never
//! computes a hash, seal or proof itself.

mod codec;
mod counts;
mod prune;
mod query;
mod schema;

use crate::{
    Buckets, CollectedCosignature, ConsumerCursor, Filter, KeyRecord, Order, PruneAnchor,
    SeverityCounts, Store, StoreError, StoredCheckpoint, WitnessedCheckpoint, tree,
};
use evident_core::event::Millis;
use evident_core::merkle::{self, CompactRange, NodeId};
use evident_core::{ChainHead, Hash, SealedEntry};
use rusqlite::config::DbConfig;
use rusqlite::ffi::ErrorCode;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a connection waits for another one's lock (another process's writer, a
/// checkpoint) before giving up with [`StoreError::Locked`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The writer's page cache by default, in bytes: appends touch only the newest pages of the
/// table and of each index bucket, so a larger cache buys ingestion little (issue 16, 10M
/// entries: 16 MiB loads ≈ 10 % slower than 64 MiB, and the server's peak memory is 75 MiB
/// lower). [`SqliteStore::open_with_writer_cache`] sets another size.
pub const DEFAULT_WRITER_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Page cache per reader connection, in KiB (SQLite's negative `cache_size`).
const READER_CACHE_KIB: i64 = 16 * 1024;
/// Idle readers kept open; more are opened when more threads read at once, and closed after.
const MAX_IDLE_READERS: usize = 4;
/// Page cache of the connection kept for API-key lookups (the key table is a few pages).
const KEY_READER_CACHE_KIB: i64 = 256;
/// Prepared statements kept per connection (queries are built per filter shape).
const STATEMENT_CACHE: usize = 128;
/// WAL frames between automatic checkpoints (4 KiB pages: 16 MiB), larger than SQLite's 1000
/// so that heavy ingestion checkpoints (and fsyncs the main file) less often.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 4096;
/// The WAL file is truncated back to this after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// Below this much free space an I/O error on write is taken for a full disk (SQLite reports
/// ENOSPC from `write` as SQLITE_FULL, but from `fsync` or a file extension as an I/O error).
const NEARLY_FULL_BYTES: u64 = 16 * 1024 * 1024;

const INSERT_EVENT: &str = "INSERT INTO events (seq, id, recorded_at, occurred_at, node_id, \
     tenant, actor_id, actor_kind, ip, user_agent, action, target_kind, target_id, outcome, \
     severity, context, hash, seal, appended_by) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";
const INSERT_NODE: &str = "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)";
const SELECT_NODE: &str = "SELECT hash FROM merkle_nodes WHERE level = ?1 AND idx = ?2";
const KEY_COLUMNS: &str = "id, secret_hash, role, tenant, label, created_at, revoked_at, \
     expires_at, last_used_at, last_used_ip";
const CHECKPOINT_COLUMNS: &str = "size, root, note, created_at";

/// A failure inside this backend, before it is mapped to a [`StoreError`] (which for SQLite
/// errors depends on the database's location: see [`SqliteStore::map_err`]).
#[derive(Debug)]
enum Error {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Sql(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::Store(e)
    }
}

/// A consumer cursor from its row (`consumer, next_seq, state, updated_at`).
fn cursor_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ConsumerCursor> {
    let next: i64 = row.get(1)?;
    Ok(ConsumerCursor {
        consumer: row.get(0)?,
        // The column's CHECK keeps it non-negative.
        next_seq: u64::try_from(next).unwrap_or(0),
        state: row.get(2)?,
        updated_at: row.get(3)?,
    })
}

fn backend(message: String) -> Error {
    Error::Store(StoreError::Backend(message))
}

fn to_i64(value: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| backend(format!("{what} {value} is beyond what SQLite holds")))
}

/// The embedded SQLite store of one node.
pub struct SqliteStore {
    path: PathBuf,
    /// The writer's page cache (also for a writer reopened after an error), in KiB.
    writer_cache_kib: i64,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// The connection of [`Store::key_by_hash_now`] (issue 16), held only for one point read
    /// on the few cached pages of the key table (no busy wait), so an async task that finds
    /// it taken waits for that read rather than hopping to the blocking pool; opened by the
    /// first [`Store::key_by_hash`] (opening is file I/O, which belongs on a blocking thread).
    key_reader: Mutex<Option<Connection>>,
    /// Held by a step of the event counts from its read to its commit, and by a prune batch,
    /// so that a prune never deletes entries a step has read but not yet counted (the
    /// pruner subtracts only what the counts held when it ran).
    counts_step: Mutex<()>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The directory holding the database file.
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a connection leaves it usable: SQLite rolls back what was open
    // (and `writer` re-checks for an open transaction), so a poisoned lock is taken as is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file (not its directory) if absent, and
    /// brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_writer_cache(path, DEFAULT_WRITER_CACHE_BYTES)
    }

    /// [`Self::open`] with a page cache of `bytes` (rounded up to whole KiB, at least 1 MiB)
    /// for the writer connection.
    pub fn open_with_writer_cache(path: &Path, bytes: usize) -> Result<SqliteStore, StoreError> {
        let writer_cache_kib = i64::try_from(bytes.div_ceil(1024))
            .unwrap_or(i64::MAX)
            .max(1024);
        let existed = path.exists();
        let dir = dir_of(path);
        let fail = |e: rusqlite::Error| map_sql_err(e, path, dir);
        let mut writer = open_writer(path, writer_cache_kib).map_err(fail)?;
        schema::migrate(&mut writer).map_err(|e| match e {
            schema::MigrateError::Sql(e) => fail(e),
            schema::MigrateError::TooNew(v) => StoreError::Backend(format!(
                "{} has schema version {v}, newer than this build's {}: use a newer evident",
                path.display(),
                schema::SCHEMA_VERSION
            )),
        })?;
        if !existed {
            // Make the new file's directory entry durable too (SQLite syncs the file, and the
            // directory only for the journal it creates).
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(SqliteStore {
            path: path.to_owned(),
            writer_cache_kib,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            key_reader: Mutex::new(None),
            counts_step: Mutex::new(()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn map_err(&self, e: Error) -> StoreError {
        match e {
            Error::Store(e) => e,
            Error::Sql(e) => map_sql_err(e, &self.path, dir_of(&self.path)),
        }
    }

    /// Runs `f` in one read transaction (one consistent snapshot) on a pooled reader.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, StoreError> {
        let pooled = lock(&self.readers).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path).map_err(|e| self.map_err(e.into()))?,
        };
        let result = (|| -> Result<T, Error> {
            let tx = conn.unchecked_transaction()?;
            let out = f(&tx)?;
            // A read-only transaction: ending it releases the snapshot.
            tx.commit()?;
            Ok(out)
        })();
        // A connection left inside a transaction (an error mid-read) is closed, not reused.
        if conn.is_autocommit() {
            let mut idle = lock(&self.readers);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
        result.map_err(|e| self.map_err(e))
    }

    /// The writer, with no transaction left open by an earlier failure.
    fn writer(&self) -> MutexGuard<'_, Connection> {
        let mut conn = lock(&self.writer);
        recover(&mut conn, &self.path, self.writer_cache_kib);
        conn
    }

    /// Runs `f` in one immediate write transaction on the writer; committed (and synced)
    /// when this returns `Ok`, rolled back otherwise.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer();
        let result = (|| -> Result<T, Error> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        if result.is_err() {
            recover(&mut conn, &self.path, self.writer_cache_kib);
        }
        result.map_err(|e| self.map_err(e))
    }

    /// A fresh read-write connection to the same file, for tests that need raw SQL.
    #[cfg(test)]
    pub(crate) fn test_connection(&self) -> Connection {
        Connection::open(&self.path).unwrap()
    }
}

fn configure(conn: &Connection, cache_kib: i64) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Plans never depend on bound values (queries name their index): without this SQLite
    // re-prepares a statement each time certain parameters (a LIMIT, a value compared with an
    // indexed column once statistics exist) are rebound, which a bucket-by-bucket read does
    // hundreds of times per query.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

fn open_writer(path: &Path, cache_kib: i64) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn, cache_kib)?;
    // WAL: readers see the last commit while the writer appends, and a commit is one
    // sequential write (plus its fsync) to the log file.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "cannot use write-ahead logging on {} (journal mode is {mode})",
                path.display()
            )),
        ));
    }
    // FULL, not NORMAL: under WAL, NORMAL fsyncs only at checkpoints, so a commit that
    // returned can still vanish on power loss. Evident acknowledges an event only once it is
    // durable, so every commit fsyncs the WAL before it returns.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn, READER_CACHE_KIB)?;
    Ok(conn)
}

/// Leaves the writer outside any transaction: after some errors (a full disk, an I/O error)
/// SQLite keeps the transaction open, or rolls it back itself. If even ROLLBACK fails, the
/// connection is replaced.
fn recover(conn: &mut Connection, path: &Path, cache_kib: i64) {
    if conn.is_autocommit() {
        return;
    }
    let _ = conn.execute_batch("ROLLBACK");
    if !conn.is_autocommit() {
        if let Ok(fresh) = open_writer(path, cache_kib) {
            *conn = fresh;
        }
    }
}

fn map_sql_err(e: rusqlite::Error, path: &Path, dir: &Path) -> StoreError {
    let Some(code) = e.sqlite_error_code() else {
        return StoreError::Backend(format!("{}: {e}", path.display()));
    };
    match code {
        ErrorCode::DiskFull => StoreError::Full(format!("{}: {e}", path.display())),
        ErrorCode::SystemIoFailure
            if fs4::available_space(dir).is_ok_and(|free| free < NEARLY_FULL_BYTES) =>
        {
            StoreError::Full(format!("{}: {e} (no space left on device)", path.display()))
        }
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Locked(format!(
            "{}: {e} (another process holds a lock for more than {}s)",
            path.display(),
            BUSY_TIMEOUT.as_secs()
        )),
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt {
            seq: None,
            problem: format!("{}: {e}", path.display()),
        },
        _ => StoreError::Backend(format!("{}: {e}", path.display())),
    }
}

fn hash_from(bytes: &[u8]) -> Option<Hash> {
    <[u8; 32]>::try_from(bytes).ok().map(Hash)
}

fn corrupt(seq: Option<u64>, problem: String) -> Error {
    Error::Store(StoreError::Corrupt { seq, problem })
}

fn node_label(id: NodeId) -> String {
    format!("Merkle node (level {}, index {})", id.level, id.index)
}

/// Reads one node hash as stored; `None` when absent.
fn read_node(conn: &Connection, id: NodeId) -> Result<Option<Hash>, Error> {
    let mut stmt = conn.prepare_cached(SELECT_NODE)?;
    let index = to_i64(id.index, "node index")?;
    let bytes: Option<Vec<u8>> = stmt
        .query_row(params![id.level, index], |r| r.get(0))
        .optional()?;
    match bytes {
        None => Ok(None),
        Some(bytes) => hash_from(&bytes)
            .map(Some)
            .ok_or_else(|| corrupt(None, format!("{} is not 32 bytes", node_label(id)))),
    }
}

/// The rows and stored nodes the tree module recomputes lower nodes from.
struct TreeRows<'a>(&'a Connection);

impl tree::NodeRows for TreeRows<'_> {
    type Error = Error;

    fn stored(&mut self, ids: &[NodeId]) -> Result<Vec<Option<Hash>>, Error> {
        ids.iter().map(|id| read_node(self.0, *id)).collect()
    }

    fn leaves(&mut self, start: u64, end: u64) -> Result<Vec<Option<Hash>>, Error> {
        let mut out = tree::LeafRange::new(start, end)
            .ok_or_else(|| backend(format!("leaf range [{start}, {end}) is too wide")))?;
        let mut stmt = self.0.prepare_cached(
            "SELECT seq, hash, seal FROM events WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
        )?;
        let mut rows = stmt.query(params![
            to_i64(start, "sequence number")?,
            to_i64(end, "sequence number")?
        ])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let (hash, seal): (Vec<u8>, Vec<u8>) = (row.get(1)?, row.get(2)?);
            let seq = u64::try_from(seq)
                .map_err(|_| corrupt(None, format!("negative sequence number {seq}")))?;
            out.put(seq, &hash, &seal)
                .map_err(|problem| corrupt(Some(seq), problem.to_owned()))?;
        }
        Ok(out.into_leaves())
    }

    fn stored_below(
        &mut self,
        start: u64,
        end: u64,
        below_level: u8,
    ) -> Result<HashMap<NodeId, Hash>, Error> {
        let mut out = HashMap::new();
        let mut stmt = self.0.prepare_cached(
            "SELECT idx, hash FROM merkle_nodes WHERE level = ?1 AND idx >= ?2 AND idx < ?3",
        )?;
        for level in 0..below_level.min(64) {
            let (first, past) = (start >> level, end >> level);
            let mut rows = stmt.query(params![
                level,
                to_i64(first, "node index")?,
                to_i64(past, "node index")?
            ])?;
            while let Some(row) = rows.next()? {
                let idx: i64 = row.get(0)?;
                let bytes: Vec<u8> = row.get(1)?;
                let id = NodeId {
                    level,
                    index: u64::try_from(idx)
                        .map_err(|_| corrupt(None, format!("negative node index {idx}")))?,
                };
                let hash = hash_from(&bytes)
                    .ok_or_else(|| corrupt(None, format!("{} is not 32 bytes", node_label(id))))?;
                out.insert(id, hash);
            }
        }
        Ok(out)
    }

    fn missing(&self, id: NodeId) -> Error {
        corrupt(None, tree::unreadable(id))
    }
}

/// Reads node hashes, recomputing the lower ones ([`tree`]); `None` where neither works.
fn read_nodes_in(conn: &Connection, ids: &[NodeId]) -> Result<Vec<Option<Hash>>, Error> {
    tree::read(&mut TreeRows(conn), ids)
}

/// Refuses a log whose stored tree reaches past its last entry (entries were removed).
fn check_no_nodes_beyond(conn: &Connection, size: u64) -> Result<(), Error> {
    let mut stmt =
        conn.prepare_cached("SELECT idx FROM merkle_nodes WHERE level = ?1 AND idx >= ?2 LIMIT 1")?;
    for level in 0u8..64 {
        // Node (level, i) is complete in a tree of `size` leaves when (i + 1) << level <= size.
        let past = to_i64(size >> level, "node index")?;
        let beyond: Option<i64> = stmt
            .query_row(params![level, past], |r| r.get(0))
            .optional()?;
        if let Some(idx) = beyond {
            return Err(corrupt(
                None,
                format!(
                    "{} covers entries beyond the last one ({}): entries were removed",
                    node_label(NodeId {
                        level,
                        index: u64::try_from(idx).unwrap_or(0)
                    }),
                    size.saturating_sub(1)
                ),
            ));
        }
    }
    Ok(())
}

fn load_head_in(conn: &Connection) -> Result<ChainHead, Error> {
    let last = conn
        .query_row(
            "SELECT seq, hash, seal FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1),
                    r.get::<_, Vec<u8>>(2),
                ))
            },
        )
        .optional()?;
    let Some((seq, hash, seal)) = last else {
        let stray: bool = conn
            .prepare_cached("SELECT 1 FROM merkle_nodes LIMIT 1")?
            .exists([])?;
        if stray {
            return Err(corrupt(
                None,
                "the log has no entries but holds Merkle nodes: entries were removed".to_owned(),
            ));
        }
        return Ok(ChainHead::genesis());
    };
    let last_seq =
        u64::try_from(seq).map_err(|_| corrupt(None, format!("negative sequence number {seq}")))?;
    let fixed = |bytes: rusqlite::Result<Vec<u8>>, what: &str| {
        bytes
            .ok()
            .and_then(|b| hash_from(&b))
            .ok_or_else(|| corrupt(Some(last_seq), format!("column {what} is not 32 bytes")))
    };
    let entry_hash = fixed(hash, "hash")?;
    fixed(seal, "seal")?;
    let next_seq = last_seq + 1;

    let ids = merkle::subtree_ids(0, next_seq);
    let mut frontier = Vec::with_capacity(ids.len());
    for (id, hash) in ids.iter().zip(read_nodes_in(conn, &ids)?) {
        frontier.push(hash.ok_or_else(|| {
            corrupt(
                None,
                format!(
                    "{} of the tree of size {next_seq} is missing",
                    node_label(*id)
                ),
            )
        })?);
    }
    let tree = CompactRange::from_parts(next_seq, frontier)
        .map_err(|e| corrupt(None, format!("stored Merkle frontier: {e}")))?;
    check_no_nodes_beyond(conn, next_seq)?;
    let latest: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT size, root FROM checkpoints ORDER BY size DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((size, root)) = latest {
        let size =
            u64::try_from(size).map_err(|_| corrupt(None, format!("checkpoint size {size}")))?;
        let root = hash_from(&root).ok_or_else(|| {
            corrupt(
                None,
                format!("the root of the checkpoint of size {size} is not 32 bytes"),
            )
        })?;
        // A checkpoint past the log's end is the sequencer's to report (a truncation).
        if size <= next_seq {
            if let Some(problem) = tree::checkpoint_mismatch(&mut TreeRows(conn), size, &root)? {
                return Err(corrupt(None, problem));
            }
        }
    }
    Ok(ChainHead {
        next_seq,
        last_hash: entry_hash,
        tree,
    })
}

/// Appends `entries`; with `base` (the hash the writer built on), only if the stored log ends
/// there ([`crate::check_append_base`]).
fn append_in(
    tx: &Connection,
    base: Option<&Hash>,
    entries: &[SealedEntry],
    nodes: &[(NodeId, Hash)],
) -> Result<(), Error> {
    let last: Option<(i64, i64, Vec<u8>)> = tx
        .prepare_cached("SELECT seq, recorded_at, hash FROM events ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    // An empty log starts at 0, or where an imported pruned log's anchor says.
    let (next, stored_prev) = match &last {
        Some((seq, _, hash)) => (seq + 1, hash_from(hash)),
        None => match prune::anchor_in(tx)? {
            Some(anchor) => (
                to_i64(anchor.below_seq, "sequence number")?,
                Some(anchor.hash),
            ),
            None => (0, None),
        },
    };
    if let (Some(prev_hash), Some(first)) = (base, entries.first()) {
        let stored_next = u64::try_from(next).unwrap_or(0);
        crate::check_append_base(first.event.seq, prev_hash, stored_next, stored_prev)?;
    }
    let mut last_recorded = last.map(|(_, t, _)| t);
    // One node's log: every entry names the node of the first (query plans rely on it).
    let stored_node: Option<String> = tx
        .prepare_cached("SELECT node_id FROM events ORDER BY seq ASC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    let node = stored_node
        .as_deref()
        .or(entries.first().map(|e| e.event.node_id.as_str()))
        .unwrap_or_default();
    let mut insert = tx.prepare_cached(INSERT_EVENT)?;
    for (expected, entry) in (next..).zip(entries) {
        let e = &entry.event;
        let seq = to_i64(e.seq, "sequence number")?;
        if seq != expected {
            return Err(backend(format!(
                "refusing to append entry {} where entry {expected} is next: the log must stay \
                 dense",
                e.seq
            )));
        }
        if e.node_id != node {
            return Err(backend(format!(
                "refusing to append entry {} of node {:?} to the log of node {node:?}: a log \
                 holds one node's entries",
                e.seq, e.node_id
            )));
        }
        if let Some(prev) = last_recorded.filter(|prev| e.recorded_at < *prev) {
            return Err(backend(format!(
                "refusing to append entry {} recorded at {} ms, before the previous entry \
                 ({prev} ms): recording time must not go backwards",
                e.seq, e.recorded_at
            )));
        }
        let ip = match e.actor.ip {
            None => None,
            Some(ip) => Some(codec::encode_ip(ip).ok_or_else(|| {
                backend(format!(
                    "refusing to append entry {}: actor IP {ip} is not in canonical form \
                     (IPv4-mapped addresses are held as IPv4)",
                    e.seq
                ))
            })?),
        };
        insert.execute(params![
            seq,
            e.id.as_bytes(),
            e.recorded_at,
            e.occurred_at,
            e.node_id,
            e.tenant,
            e.actor.id,
            e.actor.kind.as_str(),
            ip,
            e.actor.user_agent,
            e.action,
            e.target.kind,
            e.target.id,
            e.outcome.as_str(),
            codec::severity_rank(e.severity),
            e.context.as_str(),
            entry.hash.as_bytes(),
            entry.seal.as_bytes(),
            e.appended_by,
        ])?;
        last_recorded = Some(e.recorded_at);
    }
    let mut insert = tx.prepare_cached(INSERT_NODE)?;
    for (id, hash) in nodes.iter().filter(|(id, _)| tree::is_stored(id)) {
        let index = to_i64(id.index, "node index")?;
        match insert.execute(params![id.level, index, hash.as_bytes()]) {
            Ok(_) => {}
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                return Err(backend(format!(
                    "{} is already stored: nodes are written once",
                    node_label(*id)
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn checkpoint_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredCheckpoint, Error>> {
    let size: i64 = row.get(0)?;
    let root: Vec<u8> = row.get(1)?;
    let Some(root) = hash_from(&root) else {
        return Ok(Err(corrupt(
            None,
            format!("the root of the stored checkpoint of size {size} is not 32 bytes"),
        )));
    };
    let Ok(size) = u64::try_from(size) else {
        return Ok(Err(corrupt(None, format!("checkpoint size {size}"))));
    };
    Ok(Ok(StoredCheckpoint {
        size,
        root,
        signed_note: row.get(2)?,
        created_at: row.get(3)?,
    }))
}

fn key_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<KeyRecord, Error>> {
    let id: String = row.get(0)?;
    let secret_hash: Vec<u8> = row.get(1)?;
    let Some(secret_hash) = hash_from(&secret_hash) else {
        return Ok(Err(corrupt(
            None,
            format!("the secret hash of API key {id} is not 32 bytes"),
        )));
    };
    Ok(Ok(KeyRecord {
        id,
        secret_hash,
        role: row.get(2)?,
        tenant: row.get(3)?,
        label: row.get(4)?,
        created_at: row.get(5)?,
        revoked_at: row.get(6)?,
        expires_at: row.get(7)?,
        last_used_at: row.get(8)?,
        last_used_ip: row.get(9)?,
    }))
}

/// Collects the rows of a query whose row decoder may itself find corruption.
fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: fn(&rusqlite::Row<'_>) -> rusqlite::Result<Result<T, Error>>,
) -> Result<Vec<T>, Error> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)??);
    }
    Ok(out)
}

fn key_by_hash_in(conn: &Connection, secret_hash: &Hash) -> Result<Option<KeyRecord>, Error> {
    // KEY_COLUMNS spelled out: a literal, so no SQL text is formatted per request.
    const SQL: &str = "SELECT id, secret_hash, role, tenant, label, created_at, revoked_at, \
         expires_at, last_used_at, last_used_ip FROM api_keys WHERE secret_hash = ?1";
    Ok(collect(conn, SQL, [secret_hash.as_bytes()], key_from)?.pop())
}

fn key_not_found(id: &str) -> Error {
    Error::Store(StoreError::NotFound(format!("API key {id}")))
}

impl Store for SqliteStore {
    fn load_head(&self) -> Result<ChainHead, StoreError> {
        self.read(load_head_in)
    }

    fn append(&self, entries: &[SealedEntry], nodes: &[(NodeId, Hash)]) -> Result<(), StoreError> {
        if entries.is_empty() && nodes.is_empty() {
            return Ok(());
        }
        self.write(|tx| append_in(tx, None, entries, nodes))
    }

    fn append_on(
        &self,
        prev_hash: &Hash,
        entries: &[SealedEntry],
        nodes: &[(NodeId, Hash)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() && nodes.is_empty() {
            return Ok(());
        }
        self.write(|tx| append_in(tx, Some(prev_hash), entries, nodes))
    }

    fn scan(
        &self,
        filter: &Filter,
        order: Order,
        after_seq: Option<u64>,
        limit: Option<u64>,
        visit: &mut dyn FnMut(SealedEntry) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        if limit == Some(0) {
            return Ok(());
        }
        self.read(
            |conn| match query::Plan::new(conn, filter, order, after_seq)? {
                Some(plan) => plan.run(conn, limit, visit),
                None => Ok(()),
            },
        )
    }

    fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
        self.read(
            |conn| match query::Plan::new(conn, filter, Order::Ascending, None)? {
                Some(plan) => plan.count(conn),
                None => Ok(0),
            },
        )
    }

    fn histogram(
        &self,
        filter: &Filter,
        buckets: &Buckets,
    ) -> Result<Vec<SeverityCounts>, StoreError> {
        self.read(|conn| counts::histogram(conn, filter, buckets))
    }

    fn advance_counts(&self, max_entries: u64) -> Result<u64, StoreError> {
        let _step = lock(&self.counts_step);
        // Read on a reader (appends go on beside it); the writer only for the short write.
        let deltas = self.read(|conn| {
            let from = counts::position(conn)?;
            counts::read(conn, from, i64::MAX, max_entries)
        })?;
        let Some(next) = deltas.next_seq else {
            return Ok(0);
        };
        self.write(|tx| {
            counts::apply(tx, &deltas, counts::Sign::Add)?;
            counts::set_position(tx, next)
        })?;
        Ok(deltas.entries)
    }

    fn read_nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        self.read(|conn| {
            ids.iter()
                .zip(read_nodes_in(conn, ids)?)
                .map(|(id, hash)| {
                    hash.ok_or_else(|| Error::Store(StoreError::NotFound(node_label(*id))))
                })
                .collect()
        })
    }

    fn put_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        self.write(|tx| {
            let size = to_i64(checkpoint.size, "checkpoint size")?;
            let stored: Option<Vec<u8>> = tx
                .prepare_cached("SELECT root FROM checkpoints WHERE size = ?1")?
                .query_row([size], |r| r.get(0))
                .optional()?;
            match stored {
                None => {
                    tx.prepare_cached(
                        "INSERT INTO checkpoints (size, root, note, created_at) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        size,
                        checkpoint.root.as_bytes(),
                        checkpoint.signed_note,
                        checkpoint.created_at
                    ])?;
                    Ok(())
                }
                // Checkpoints are written once: the same tree again is fine (the first
                // signature stays), a different root for the same size means two histories.
                Some(root) if hash_from(&root) == Some(checkpoint.root) => Ok(()),
                Some(_) => Err(corrupt(
                    None,
                    format!(
                        "a checkpoint of size {} with a different root is already stored: the \
                         log was rewritten",
                        checkpoint.size
                    ),
                )),
            }
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.read(|conn| {
            let sql =
                format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY size DESC LIMIT 1");
            Ok(collect(conn, &sql, [], checkpoint_from)?.pop())
        })
    }

    fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        let Ok(size) = i64::try_from(size) else {
            return Ok(None);
        };
        self.read(|conn| {
            let sql = format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE size = ?1");
            Ok(collect(conn, &sql, [size], checkpoint_from)?.pop())
        })
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY size ASC");
            collect(conn, &sql, [], checkpoint_from)
        })
    }

    fn put_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        self.write(|tx| {
            let result = tx
                .prepare_cached(&format!(
                    "INSERT INTO api_keys ({KEY_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ))?
                .execute(params![
                    key.id,
                    key.secret_hash.as_bytes(),
                    key.role,
                    key.tenant,
                    key.label,
                    key.created_at,
                    key.revoked_at,
                    key.expires_at,
                    key.last_used_at,
                    key.last_used_ip
                ]);
            match result {
                Ok(_) => Ok(()),
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                    Err(backend(format!(
                        "an API key with id {} or the same secret is already stored",
                        key.id
                    )))
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn key_by_hash(&self, secret_hash: &Hash) -> Result<Option<KeyRecord>, StoreError> {
        if let Ok(mut slot) = self.key_reader.try_lock() {
            if slot.is_none() {
                // Small cache: the key table is a few pages. No busy wait: where a reader
                // would have to wait (a rare WAL recovery), `key_by_hash_now` declines.
                *slot = open_reader(&self.path)
                    .and_then(|c| {
                        configure(&c, KEY_READER_CACHE_KIB)?;
                        c.busy_timeout(Duration::ZERO)?;
                        Ok(c)
                    })
                    .ok();
            }
        }
        self.read(|conn| key_by_hash_in(conn, secret_hash))
    }

    fn key_by_hash_now(&self, secret_hash: &Hash) -> Option<Result<Option<KeyRecord>, StoreError>> {
        // Another task's lookup holds it for one point read at most: waiting for that costs
        // less than a hop to the blocking pool, and under many concurrent requests the hops
        // grew the pool by dozens of threads (each with its allocator cache: memory).
        let slot = self.key_reader.lock().ok()?;
        let conn = slot.as_ref()?;
        // One SELECT in autocommit mode is its own read transaction: it sees every commit of
        // every connection and process made before it started, like `key_by_hash`.
        match key_by_hash_in(conn, secret_hash) {
            Err(Error::Sql(e))
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) =>
            {
                None
            }
            result => Some(result.map_err(|e| self.map_err(e))),
        }
    }

    fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
            collect(conn, &sql, [], key_from)
        })
    }

    fn revoke_key(&self, id: &str, at: Millis) -> Result<(), StoreError> {
        self.write(|tx| {
            // The first revocation time stands.
            let n = tx
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                )?
                .execute(params![id, at])?;
            if n == 0 {
                Err(key_not_found(id))
            } else {
                Ok(())
            }
        })
    }

    fn set_key_expiry(&self, id: &str, expires_at: Millis) -> Result<(), StoreError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached("UPDATE api_keys SET expires_at = ?2 WHERE id = ?1")?
                .execute(params![id, expires_at])?;
            if n == 0 {
                Err(key_not_found(id))
            } else {
                Ok(())
            }
        })
    }

    fn touch_key(&self, id: &str, at: Millis, ip: Option<&str>) -> Result<(), StoreError> {
        self.write(|tx| {
            // Touches may land out of order (they are fire-and-forget): keep the latest.
            let n = tx
                .prepare_cached(
                    "UPDATE api_keys SET last_used_at = ?2, last_used_ip = ?3 \
                     WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2)",
                )?
                .execute(params![id, at, ip])?;
            if n == 0 {
                let known = tx
                    .prepare_cached("SELECT 1 FROM api_keys WHERE id = ?1")?
                    .exists([id])?;
                if !known {
                    return Err(key_not_found(id));
                }
            }
            Ok(())
        })
    }

    fn consumer_cursor(&self, consumer: &str) -> Result<Option<ConsumerCursor>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT consumer, next_seq, state, updated_at FROM consumer_cursors \
                     WHERE consumer = ?1",
                )?
                .query_row(params![consumer], cursor_from_row)
                .optional()?)
        })
    }

    fn consumer_cursors(&self) -> Result<Vec<ConsumerCursor>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT consumer, next_seq, state, updated_at FROM consumer_cursors \
                 ORDER BY consumer",
            )?;
            let rows = statement.query_map([], cursor_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn save_consumer_cursor(&self, cursor: &ConsumerCursor) -> Result<(), StoreError> {
        self.write(|tx| {
            let next = i64::try_from(cursor.next_seq).map_err(|_| {
                backend(format!(
                    "cursor position {} is out of range",
                    cursor.next_seq
                ))
            })?;
            let stored: Option<i64> = tx
                .prepare_cached("SELECT next_seq FROM consumer_cursors WHERE consumer = ?1")?
                .query_row(params![cursor.consumer], |r| r.get(0))
                .optional()?;
            if let Some(stored) = stored {
                if stored > next {
                    return Err(Error::Store(StoreError::CursorBackwards {
                        consumer: cursor.consumer.clone(),
                        stored: stored as u64,
                        asked: cursor.next_seq,
                    }));
                }
            }
            tx.prepare_cached(
                "INSERT INTO consumer_cursors (consumer, next_seq, state, updated_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (consumer) DO UPDATE SET \
                 next_seq = excluded.next_seq, state = excluded.state, \
                 updated_at = excluded.updated_at",
            )?
            .execute(params![
                cursor.consumer,
                next,
                cursor.state,
                cursor.updated_at
            ])?;
            Ok(())
        })
    }

    fn witnessed_checkpoint(
        &self,
        origin: &str,
    ) -> Result<Option<WitnessedCheckpoint>, StoreError> {
        self.read(|conn| {
            let row = conn
                .prepare_cached(
                    "SELECT origin, size, root, signed_note, updated_at \
                     FROM witnessed_checkpoints WHERE origin = ?1",
                )?
                .query_row(params![origin], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .optional()?;
            let Some((origin, size, root, signed_note, updated_at)) = row else {
                return Ok(None);
            };
            let root = hash_from(&root).ok_or_else(|| {
                backend(format!(
                    "witnessed checkpoint of {origin:?}: root is not 32 bytes"
                ))
            })?;
            Ok(Some(WitnessedCheckpoint {
                origin,
                // The column's CHECK keeps it non-negative.
                size: u64::try_from(size).unwrap_or(0),
                root,
                signed_note,
                updated_at,
            }))
        })
    }

    fn record_witnessed_checkpoint(
        &self,
        checkpoint: &WitnessedCheckpoint,
        expected_size: u64,
    ) -> Result<(), StoreError> {
        let size = i64::try_from(checkpoint.size)
            .map_err(|_| StoreError::Backend("tree size out of range".into()))?;
        self.write(|tx| {
            let stored: Option<i64> = tx
                .prepare_cached("SELECT size FROM witnessed_checkpoints WHERE origin = ?1")?
                .query_row(params![checkpoint.origin], |r| r.get(0))
                .optional()?;
            let stored = stored.map_or(0, |s| u64::try_from(s).unwrap_or(0));
            if stored != expected_size {
                return Err(Error::Store(StoreError::WitnessMoved {
                    origin: checkpoint.origin.clone(),
                    stored,
                    expected: expected_size,
                }));
            }
            tx.prepare_cached(
                "INSERT INTO witnessed_checkpoints (origin, size, root, signed_note, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (origin) DO UPDATE SET \
                 size = excluded.size, root = excluded.root, \
                 signed_note = excluded.signed_note, updated_at = excluded.updated_at",
            )?
            .execute(params![
                checkpoint.origin,
                size,
                checkpoint.root.as_bytes().as_slice(),
                checkpoint.signed_note,
                checkpoint.updated_at
            ])?;
            Ok(())
        })
    }

    fn put_cosignature(&self, cosignature: &CollectedCosignature) -> Result<(), StoreError> {
        let size = i64::try_from(cosignature.size)
            .map_err(|_| StoreError::Backend("tree size out of range".into()))?;
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO cosignatures (size, witness, line, received_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (size, witness) DO UPDATE SET \
                 line = excluded.line, received_at = excluded.received_at",
            )?
            .execute(params![
                size,
                cosignature.witness,
                cosignature.line,
                cosignature.received_at
            ])?;
            Ok(())
        })
    }

    fn cosignatures_at(&self, size: u64) -> Result<Vec<CollectedCosignature>, StoreError> {
        let Ok(at) = i64::try_from(size) else {
            return Ok(Vec::new());
        };
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT witness, line, received_at FROM cosignatures WHERE size = ?1 \
                 ORDER BY witness",
            )?;
            let rows = statement.query_map(params![at], |r| {
                Ok(CollectedCosignature {
                    size,
                    witness: r.get(0)?,
                    line: r.get(1)?,
                    received_at: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn prune_anchor(&self) -> Result<Option<PruneAnchor>, StoreError> {
        self.read(prune::anchor_in)
    }

    fn begin_prune(&self, anchor: &PruneAnchor) -> Result<(), StoreError> {
        self.write(|tx| prune::begin_in(tx, anchor))
    }

    fn prune_batch(&self, max_entries: u64) -> Result<u64, StoreError> {
        let _step = lock(&self.counts_step);
        self.write(|tx| prune::batch_in(tx, max_entries))
    }

    fn import_pruned_nodes(&self, nodes: &[(NodeId, Hash)]) -> Result<(), StoreError> {
        self.write(|tx| prune::import_nodes_in(tx, nodes))
    }

    fn import_anchor(&self, anchor: &PruneAnchor) -> Result<(), StoreError> {
        self.write(|tx| prune::import_anchor_in(tx, anchor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evident_core::event::{Context, EventInput};
    use evident_core::{Actor, ActorKind, Outcome, SealKey, Severity, Target};

    fn batch(head: &mut ChainHead, n: usize) -> (Vec<SealedEntry>, Vec<(NodeId, Hash)>) {
        batch_by(head, n, Some("evk_0123456789ab"))
    }

    /// `n` entries appended by `appended_by`; `None` writes entry encoding version 1.
    fn batch_by(
        head: &mut ChainHead,
        n: usize,
        appended_by: Option<&str>,
    ) -> (Vec<SealedEntry>, Vec<(NodeId, Hash)>) {
        let key = SealKey::new(&[9u8; 32]).unwrap();
        let mut nodes = Vec::new();
        let entries = (0..n)
            .map(|i| {
                let input = EventInput {
                    // Every other entry says when it happened.
                    occurred_at: (i % 2 == 0).then_some(900 + i as i64),
                    tenant: "default".to_owned(),
                    actor: Actor {
                        id: format!("user-{i}"),
                        kind: ActorKind::User,
                        ip: Some(std::net::IpAddr::from([10, 0, 0, (i % 250) as u8])),
                        user_agent: Some("x".repeat(200)),
                    },
                    action: "config.changed".to_owned(),
                    target: Target {
                        kind: "node".to_owned(),
                        id: format!("node-{i}"),
                    },
                    outcome: Outcome::Success,
                    severity: Severity::Notice,
                    context: Context::from_value(&serde_json::json!({"pad": "y".repeat(500)}))
                        .unwrap(),
                };
                let id = uuid::Uuid::from_u128(u128::from(head.next_seq));
                match appended_by {
                    Some(by) => head.append(id, 1_000, "node-a", by, input, &key, &mut nodes),
                    None => head.append_v1(id, 1_000, "node-a", input, &key, &mut nodes),
                }
            })
            .collect();
        (entries, nodes)
    }

    /// Every column of every `events` row but `appended_by`, as SQLite holds it.
    fn raw_rows(conn: &Connection) -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = conn
            .prepare(
                "SELECT seq, id, recorded_at, occurred_at, node_id, tenant, actor_id, \
                 actor_kind, ip, user_agent, action, target_kind, target_id, outcome, severity, \
                 context, hash, seal FROM events ORDER BY seq",
            )
            .unwrap();
        stmt.query_map([], |row| {
            (0..18)
                .map(|i| row.get::<_, rusqlite::types::Value>(i))
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// A database left by a build of schema version 2 (before entries recorded who appended
    /// them), holding entries: opening it migrates it in place. Its rows are not rewritten and
    /// read back as the version-1 entries they are, new entries are version 2 on top, and the
    /// log of both verifies.
    #[test]
    fn a_schema_2_database_is_migrated_in_place_and_keeps_its_version_1_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut head = ChainHead::genesis();
        let (old, _) = batch_by(&mut head, 6, None);
        let before = {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(schema::V1).unwrap();
            conn.execute_batch(schema::V2).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            // The version-2 schema's insert: no appended_by column.
            let mut insert = conn
                .prepare(
                    "INSERT INTO events (seq, id, recorded_at, occurred_at, node_id, tenant, \
                     actor_id, actor_kind, ip, user_agent, action, target_kind, target_id, \
                     outcome, severity, context, hash, seal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, \
                     ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                )
                .unwrap();
            for entry in &old {
                let e = &entry.event;
                insert
                    .execute(params![
                        e.seq as i64,
                        e.id.as_bytes(),
                        e.recorded_at,
                        e.occurred_at,
                        e.node_id,
                        e.tenant,
                        e.actor.id,
                        e.actor.kind.as_str(),
                        e.actor.ip.and_then(codec::encode_ip),
                        e.actor.user_agent,
                        e.action,
                        e.target.kind,
                        e.target.id,
                        e.outcome.as_str(),
                        codec::severity_rank(e.severity),
                        e.context.as_str(),
                        entry.hash.as_bytes(),
                        entry.seal.as_bytes(),
                    ])
                    .unwrap();
            }
            drop(insert);
            raw_rows(&conn)
        };

        let store = SqliteStore::open(&path).unwrap();
        {
            let conn = store.writer();
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, schema::SCHEMA_VERSION);
            let nulls: i64 = conn
                .query_row(
                    "SELECT count(*) FROM events WHERE appended_by IS NULL",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(nulls, 6);
        }
        assert_eq!(crate::all_entries(&store), old);
        assert_eq!(store.load_head().unwrap(), head);
        // Schema version 6 indexed occurred_at: the entries stored before it are filterable
        // by it at once (entries 2 and 4 happened at 902 and 904; 1 and 3 state no time).
        let span = crate::Filter {
            occurred_from: Some(901),
            occurred_to: Some(905),
            ..crate::Filter::default()
        };
        assert_eq!(
            crate::matching_entries(&store, &span),
            [old[2].clone(), old[4].clone()]
        );
        assert_eq!(store.count(&span).unwrap(), 2);

        let (new, nodes) = batch_by(&mut head, 4, Some("evk_0123456789ab"));
        store.append(&new, &nodes).unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(raw_rows(&store.writer())[..6], before[..]);
        let all = crate::all_entries(&store);
        let versions: Vec<u8> = all.iter().map(|e| e.event.entry_version()).collect();
        assert_eq!(versions, [1, 1, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(all[..6], old[..]);
        assert_eq!(all[6..], new[..]);
        let mut verifier = evident_core::verify::StreamVerifier::new(
            evident_core::verify::Anchor::genesis(),
            Some(SealKey::new(&[9u8; 32]).unwrap()),
            Some("node-a".to_owned()),
        );
        for e in &all {
            verifier.push(e).unwrap();
        }
        assert_eq!(verifier.finish().unwrap().root, head.tree.root());
    }

    /// A full disk, simulated by capping the database's size on the writer connection: the
    /// batch fails as `Full` with nothing of it stored, and the same connection appends again
    /// once there is room.
    #[test]
    fn a_full_disk_fails_the_batch_whole_and_the_store_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("full.db")).unwrap();
        let mut head = ChainHead::genesis();
        let (entries, nodes) = batch(&mut head, 10);
        store.append(&entries, &nodes).unwrap();
        let stored = head.clone();

        {
            let conn = store.writer();
            let pages: i64 = conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap();
            let _: i64 = conn
                .query_row(&format!("PRAGMA max_page_count = {}", pages + 3), [], |r| {
                    r.get(0)
                })
                .unwrap();
        }
        let mut next = head.clone();
        let (big, big_nodes) = batch(&mut next, 500);
        match store.append(&big, &big_nodes) {
            Err(StoreError::Full(m)) => assert!(m.contains("full"), "{m}"),
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(store.load_head().unwrap(), stored);
        assert_eq!(store.count(&Filter::default()).unwrap(), 10);
        assert!(store.writer().is_autocommit());

        {
            let conn = store.writer();
            let _: i64 = conn
                .query_row("PRAGMA max_page_count = 4294967294", [], |r| r.get(0))
                .unwrap();
        }
        store.append(&big, &big_nodes).unwrap();
        assert_eq!(store.load_head().unwrap(), next);
        assert_eq!(store.count(&Filter::default()).unwrap(), 510);
    }

    #[test]
    fn the_writer_cache_is_the_size_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let cache = |store: &SqliteStore| -> i64 {
            store
                .writer()
                .query_row("PRAGMA cache_size", [], |r| r.get(0))
                .unwrap()
        };
        let path = dir.path().join("cache.db");
        let default = SqliteStore::open(&path).unwrap();
        assert_eq!(cache(&default), -(DEFAULT_WRITER_CACHE_BYTES as i64 / 1024));
        drop(default);
        let store = SqliteStore::open_with_writer_cache(&path, 48 * 1024 * 1024 + 1).unwrap();
        assert_eq!(cache(&store), -(48 * 1024 + 1));
        let small = SqliteStore::open_with_writer_cache(&dir.path().join("s.db"), 10).unwrap();
        assert_eq!(cache(&small), -1024, "at least 1 MiB");
    }

    #[test]
    fn the_immediate_key_lookup_is_as_fresh_as_the_blocking_one_and_waits_only_for_another() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
        let hash = Hash::digest(b"evk_000000000000_secret");
        let key = KeyRecord {
            id: "evk_000000000000".to_owned(),
            secret_hash: hash,
            role: "writer".to_owned(),
            tenant: None,
            label: None,
            created_at: 1,
            revoked_at: None,
            expires_at: None,
            last_used_at: None,
            last_used_ip: None,
        };
        store.put_key(&key).unwrap();
        // Not opened yet: opening is file I/O, left to the blocking lookup.
        assert!(store.key_by_hash_now(&hash).is_none());
        assert_eq!(store.key_by_hash(&hash).unwrap(), Some(key.clone()));
        assert_eq!(
            store.key_by_hash_now(&hash).unwrap().unwrap(),
            Some(key.clone())
        );
        let unknown = Hash::digest(b"other");
        assert_eq!(store.key_by_hash_now(&unknown).unwrap().unwrap(), None);

        // Revoked by another process (here: another connection) and by this store: both seen
        // by the very next lookup.
        store
            .test_connection()
            .execute(
                "UPDATE api_keys SET revoked_at = 7 WHERE id = ?1",
                [&key.id],
            )
            .unwrap();
        let found = store.key_by_hash_now(&hash).unwrap().unwrap().unwrap();
        assert_eq!(found.revoked_at, Some(7));
        store.set_key_expiry(&key.id, 9).unwrap();
        let found = store.key_by_hash_now(&hash).unwrap().unwrap().unwrap();
        assert_eq!(found.expires_at, Some(9));

        // While another lookup holds the connection, the caller waits for it (one point read)
        // rather than being sent to the blocking pool, and then answers.
        let held = store.key_reader.lock().unwrap();
        std::thread::scope(|s| {
            let waiting = s.spawn(|| store.key_by_hash_now(&hash));
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                !waiting.is_finished(),
                "answered while the connection was held"
            );
            drop(held);
            let found = waiting.join().unwrap().unwrap().unwrap().unwrap();
            assert_eq!(found.expires_at, Some(9));
        });
    }

    #[test]
    fn relative_paths_have_a_directory() {
        assert_eq!(dir_of(Path::new("evident.db")), Path::new("."));
        assert_eq!(dir_of(Path::new("/data/evident.db")), Path::new("/data"));
    }
}
