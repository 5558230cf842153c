//! The PostgreSQL storage backend: one node's log (entries, Merkle nodes, checkpoints) and its
//! API keys, in tables that several nodes share, every row keyed by `node_id`. Owns the
//! connections (one writer behind a mutex, a small pool of readers, and the *lease*: a
//! dedicated session holding the node's advisory lock for the process lifetime), durability
//! (`synchronous_commit = on`: a batch is acknowledged after its COMMIT is durable), the
//! batched ingestion (one transaction per group-commit batch, rows sent with `COPY … BINARY`),
//! error mapping and the [`Store`] implementation. The schema and grant model live in
//! `postgres/schema.rs`, the row encoding in `postgres/codec.rs`, the queries in
//! `postgres/query.rs`, TLS to the server (`sslmode`, `sslrootcert`) in `postgres/tls.rs`. It
//! stores what the integrity core computed and never computes a hash, seal or proof itself.
//!
//! The client is the synchronous `postgres` crate (a blocking wrapper over `tokio-postgres`):
//! the [`Store`] trait is synchronous and called from blocking threads, so a blocking client
//! keeps this backend shaped like the embedded one, with no runtime of its own to manage.
//! Node keys (`checkpoint.key`, `seal.key`) are not stored here: they stay in the node's data
//! directory, files of mode 0600, whichever backend holds the log; the database only records
//! each node's public verifier key.

mod codec;
mod prune;
mod query;
mod schema;
mod tls;

use crate::{
    Buckets, CollectedCosignature, ConsumerCursor, Filter, KeyRecord, Order, PruneAnchor,
    SeverityCounts, Store, StoreError, StoredCheckpoint, WitnessedCheckpoint, tree,
};
use evident_core::event::Millis;
use evident_core::merkle::{self, CompactRange, NodeId};
use evident_core::{ChainHead, Hash, SealedEntry};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, GenericClient, IsolationLevel, Transaction};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Reader connections open at most at once. A read that finds all of them busy waits for one
/// instead of opening another: opening a connection forks a PostgreSQL backend, and under
/// many concurrent requests (each reads its API key) that churn cost more database CPU than
/// the appends themselves.
const MAX_READERS: usize = 16;
/// How long a read waits for a busy reader before opening one more.
const READER_WAIT: Duration = Duration::from_millis(200);
/// Rows fetched per round trip while scanning (memory stays bounded whatever the result).
const FETCH_ROWS: i32 = 512;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long taking the writer lease retries before the node is called taken.
const LEASE_WAIT: Duration = Duration::from_secs(3);

const KEY_COLUMNS: &str = "id, secret_hash, role, tenant, label, created_at, revoked_at, \
     expires_at, last_used_at, last_used_ip";
const CHECKPOINT_COLUMNS: &str = "size, root, note, created_at";
const COPY_EVENTS: &str = "COPY evident.events (node_id, seq, id, recorded_at, occurred_at, \
     tenant, actor_id, actor_kind, ip, user_agent, action, target_kind, target_id, outcome, \
     severity, context, hash, seal, appended_by) FROM STDIN (FORMAT binary)";
const EVENT_TYPES: [Type; 19] = [
    Type::TEXT,
    Type::INT8,
    Type::UUID,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BYTEA,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::TEXT,
    Type::BYTEA,
    Type::BYTEA,
    Type::TEXT,
];
const COPY_NODES: &str =
    "COPY evident.merkle_nodes (node_id, level, idx, hash) FROM STDIN (FORMAT binary)";
const NODE_TYPES: [Type; 4] = [Type::TEXT, Type::INT2, Type::INT8, Type::BYTEA];

/// Whether `storage` names a PostgreSQL database (`postgres://…` or `postgresql://…`).
pub fn is_postgres_url(storage: &str) -> bool {
    storage.starts_with("postgres://") || storage.starts_with("postgresql://")
}

/// `url` without its password (in the user info or a `password=` parameter), for messages
/// and for recording which database a node uses.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (rest, params) = match rest.split_once('?') {
        Some((rest, params)) => (rest, Some(params)),
        None => (rest, None),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(params) = params {
        let kept: Vec<&str> = params
            .split('&')
            .filter(|p| !p.to_ascii_lowercase().starts_with("password="))
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

/// A node's identity as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node_id: String,
    /// Checkpoint origin (and signing key name).
    pub origin: String,
    /// The C2SP verifier key of the node's checkpoints.
    pub verifier_key: String,
    pub created_at: Millis,
}

/// A failure inside this backend, before it is mapped to a [`StoreError`].
#[derive(Debug)]
enum Error {
    Sql(postgres::Error),
    Store(StoreError),
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Error {
        Error::Sql(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::Store(e)
    }
}

/// A consumer cursor from its row (`consumer, next_seq, state, updated_at`).
fn cursor_from(row: &postgres::Row) -> Result<ConsumerCursor, Error> {
    let next: i64 = row.try_get(1)?;
    Ok(ConsumerCursor {
        consumer: row.try_get(0)?,
        next_seq: u64::try_from(next)
            .map_err(|_| backend(format!("stored cursor position {next} is negative")))?,
        state: row.try_get(2)?,
        updated_at: row.try_get(3)?,
    })
}

fn backend(message: String) -> Error {
    Error::Store(StoreError::Backend(message))
}

fn corrupt(seq: Option<u64>, problem: String) -> Error {
    Error::Store(StoreError::Corrupt { seq, problem })
}

fn to_i64(value: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| {
        backend(format!(
            "{what} {value} is beyond what PostgreSQL's bigint holds"
        ))
    })
}

fn to_u64(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| corrupt(None, format!("negative {what} {value}")))
}

fn hash_from(bytes: &[u8]) -> Option<Hash> {
    <[u8; 32]>::try_from(bytes).ok().map(Hash)
}

fn node_label(id: NodeId) -> String {
    format!("Merkle node (level {}, index {})", id.level, id.index)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A connection left mid-transaction by a panic is rolled back before reuse (the
    // `Transaction` guard's drop) or found closed and replaced: a poisoned lock is taken as is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The advisory lock key of a node: 64 bits of SHA-256 over a prefix and the node id.
fn lease_key(node_id: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"evident node lease\0")
        .chain_update(node_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// The writer connection with its prepared statements.
struct WriterConn {
    client: Client,
    last_entry: postgres::Statement,
}

/// The PostgreSQL store of one node.
pub struct PostgresStore {
    config: Config,
    /// `sslmode` and the certificate checks it means.
    tls: tls::Tls,
    /// The database, password removed, for messages.
    location: String,
    node_id: String,
    writer: Mutex<Option<WriterConn>>,
    /// Idle reader connections and how many are open (idle or in use).
    readers: Mutex<Readers>,
    /// Signalled when a reader is returned or closed.
    reader_freed: Condvar,
    /// The session holding this node's advisory lock, once [`Self::acquire_lease`] took it,
    /// with its backend pid.
    lease: Mutex<Option<(Client, i32)>>,
}

/// The reader connections of a store.
#[derive(Default)]
struct Readers {
    idle: Vec<Client>,
    /// Open reader connections, idle or in use (at most [`MAX_READERS`], but for the
    /// overflow opened after a [`READER_WAIT`]).
    open: usize,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// The parsed connection settings of `url` and its TLS settings (`sslmode`, `sslrootcert`,
/// taken out of the URL before `postgres::Config` parses the rest: see `postgres/tls.rs`); a
/// password missing from it is taken from `PGPASSWORD`, as libpq does.
fn config_of(url: &str) -> Result<(Config, tls::Tls), StoreError> {
    let (rest, tls) = tls::Tls::from_url(url)?;
    let mut config: Config = rest.parse().map_err(|e| {
        StoreError::Backend(format!(
            "storage {:?} is not a valid PostgreSQL URL: {}",
            redact_url(url),
            with_causes(&e)
        ))
    })?;
    if config.get_password().is_none() {
        if let Ok(password) = std::env::var("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok((config, tls))
}

/// A client-side error with its causes (`postgres::Error` displays only its kind, as in
/// "error performing TLS handshake", not why).
fn with_causes(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn map_pg_err(e: postgres::Error, location: &str) -> StoreError {
    let Some(db) = e.as_db_error() else {
        return StoreError::Backend(format!("PostgreSQL at {location}: {}", with_causes(&e)));
    };
    let mut text = format!("PostgreSQL at {location}: {}", db.message());
    if let Some(detail) = db.detail() {
        text.push_str(&format!(" ({detail})"));
    }
    let code = db.code();
    if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY {
        StoreError::Full(text)
    } else if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED {
        StoreError::Corrupt {
            seq: None,
            problem: text,
        }
    } else if *code == SqlState::LOCK_NOT_AVAILABLE {
        StoreError::Locked(text)
    } else {
        StoreError::Backend(text)
    }
}

fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl PostgresStore {
    /// Connects to the database at `url` as the store of node `node_id`, and brings the
    /// schema up to date. Takes no lock: see [`Self::acquire_lease`] for the writer's.
    pub fn open(url: &str, node_id: &str) -> Result<PostgresStore, StoreError> {
        let (config, tls) = config_of(url)?;
        let store = PostgresStore {
            config,
            tls,
            location: redact_url(url),
            node_id: node_id.to_owned(),
            writer: Mutex::new(None),
            readers: Mutex::new(Readers::default()),
            reader_freed: Condvar::new(),
            lease: Mutex::new(None),
        };
        let mut client = store.connect()?;
        schema::migrate(&mut client).map_err(|e| match e {
            schema::MigrateError::Sql(e) => store.map_err(Error::Sql(e)),
            schema::MigrateError::TooNew(v) => StoreError::Backend(format!(
                "{} has Evident schema version {v}, newer than this build's {}: use a newer \
                 evident",
                store.location,
                schema::SCHEMA_VERSION
            )),
        })?;
        {
            let mut readers = lock(&store.readers);
            readers.idle.push(client);
            readers.open += 1;
        }
        Ok(store)
    }

    /// The database, password removed.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn map_err(&self, e: Error) -> StoreError {
        match e {
            Error::Store(e) => e,
            Error::Sql(e) => map_pg_err(e, &self.location),
        }
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let mut config = self.config.clone();
        config.application_name(&format!("evident {}", self.node_id));
        let mut client = self.tls.connect(&config, &self.location)?;
        // Acknowledged means durable: whatever the server's default, a COMMIT returns only
        // once its WAL record is flushed.
        client
            .batch_execute("SET synchronous_commit = on")
            .map_err(|e| map_pg_err(e, &self.location))?;
        Ok(client)
    }

    /// Runs `f` in one read-only transaction (one consistent snapshot) on a pooled reader.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, Error>,
    ) -> Result<T, StoreError> {
        let mut client = self.take_reader()?;
        let result = (|| -> Result<T, Error> {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })();
        {
            let mut readers = lock(&self.readers);
            if client.is_closed() || readers.idle.len() >= MAX_READERS {
                readers.open = readers.open.saturating_sub(1);
                drop(readers);
                drop(client);
            } else {
                readers.idle.push(client);
            }
        }
        self.reader_freed.notify_one();
        result.map_err(|e| self.map_err(e))
    }

    /// An open reader connection: an idle one, a new one while fewer than [`MAX_READERS`] are
    /// open, or else the next one returned.
    fn take_reader(&self) -> Result<Client, StoreError> {
        let mut readers = lock(&self.readers);
        loop {
            while let Some(client) = readers.idle.pop() {
                if !client.is_closed() {
                    return Ok(client);
                }
                readers.open = readers.open.saturating_sub(1);
            }
            if readers.open < MAX_READERS {
                readers.open += 1;
                drop(readers);
                return self.connect().inspect_err(|_| {
                    let mut readers = lock(&self.readers);
                    readers.open = readers.open.saturating_sub(1);
                    drop(readers);
                    self.reader_freed.notify_one();
                });
            }
            // All busy: wait for one, but not forever. A reader may be held by a long scan
            // whose caller reads again inside it (an export's run markers), so a cap that
            // only ever waited could deadlock; past the wait one more is opened, and closed
            // again when returned to a full pool.
            let (guard, waited) = self
                .reader_freed
                .wait_timeout(readers, READER_WAIT)
                .unwrap_or_else(PoisonError::into_inner);
            readers = guard;
            if waited.timed_out() && readers.idle.is_empty() {
                readers.open += 1;
                drop(readers);
                return self.connect().inspect_err(|_| {
                    let mut readers = lock(&self.readers);
                    readers.open = readers.open.saturating_sub(1);
                });
            }
        }
    }

    /// Runs `f` in one write transaction on the writer; committed (durably) when this returns
    /// `Ok`, rolled back otherwise.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>, &WriterStatements<'_>) -> Result<T, Error>,
    ) -> Result<T, StoreError> {
        let mut guard = lock(&self.writer);
        if guard.as_ref().is_none_or(|w| w.client.is_closed()) {
            *guard = None;
            let mut client = self.connect()?;
            let last_entry = client
                .prepare(
                    "SELECT seq, recorded_at, hash FROM evident.events WHERE node_id = $1 \
                     ORDER BY seq DESC LIMIT 1",
                )
                .map_err(|e| map_pg_err(e, &self.location))?;
            *guard = Some(WriterConn { client, last_entry });
        }
        let Some(conn) = guard.as_mut() else {
            return Err(StoreError::Backend(format!(
                "no connection to {}",
                self.location
            )));
        };
        let statements = WriterStatements {
            last_entry: &conn.last_entry,
        };
        let result = (|| -> Result<T, Error> {
            let mut tx = conn.client.transaction()?;
            let out = f(&mut tx, &statements)?;
            tx.commit()?;
            Ok(out)
        })();
        if conn.client.is_closed() {
            *guard = None;
        }
        result.map_err(|e| self.map_err(e))
    }

    /// Takes this node's writer lease: a session-level advisory lock on a hash of the node
    /// id, held by a dedicated connection until the store is dropped (or the process dies, when
    /// PostgreSQL releases it with the session). Fails with [`StoreError::Locked`], naming the
    /// session that holds it, when another process serves this node on this database.
    pub fn acquire_lease(&self) -> Result<(), StoreError> {
        let mut lease = lock(&self.lease);
        if lease.is_some() {
            return Ok(());
        }
        let key = lease_key(&self.node_id);
        let mut client = self.connect()?;
        let fail = |e| map_pg_err(e, &self.location);
        // A process that just died may hold the lock a moment longer, until its backend sees
        // the connection close: retry briefly before calling the node taken.
        let started = std::time::Instant::now();
        loop {
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1), pg_backend_pid()", &[&key])
                .map_err(fail)?;
            let (taken, pid): (bool, i32) =
                (row.try_get(0).map_err(fail)?, row.try_get(1).map_err(fail)?);
            if taken {
                *lease = Some((client, pid));
                return Ok(());
            }
            if started.elapsed() >= LEASE_WAIT {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (classid, objid) = lease_lock_ids(key);
        let holder = client
            .query_opt(
                "SELECT a.pid, coalesce(a.application_name, ''), \
                        coalesce(host(a.client_addr), 'a local socket'), \
                        to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') \
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 \
                   AND l.objid = $2 AND l.objsubid = 1 \
                   AND l.database = (SELECT oid FROM pg_database \
                                     WHERE datname = current_database()) \
                 LIMIT 1",
                &[&classid, &objid],
            )
            .map_err(fail)?;
        let (who, pid) = match holder {
            Some(row) => {
                let pid: i32 = row.try_get(0).map_err(fail)?;
                let app: String = row.try_get(1).map_err(fail)?;
                let addr: String = row.try_get(2).map_err(fail)?;
                let since: String = row.try_get(3).map_err(fail)?;
                (
                    format!(
                        "PostgreSQL session {pid} ({app:?}) from {addr}, connected since {since}"
                    ),
                    pid.to_string(),
                )
            }
            None => ("another session".to_owned(), "PID".to_owned()),
        };
        Err(StoreError::Locked(format!(
            "node {:?} is already being served from {}: {who} holds its writer lease (an \
             advisory lock). Two processes with the same node id cannot both write one log; \
             stop the other one, or give this node another node_id. If that process is gone \
             for good (a crashed host), end its session: SELECT pg_terminate_backend({pid})",
            self.node_id, self.location
        )))
    }

    /// Whether this store holds its node's writer lease, as far as it knows: a lease session
    /// that ended is noticed by the next append, which then fails with
    /// [`StoreError::Locked`] and stores nothing until the lease is taken again.
    pub fn holds_lease(&self) -> bool {
        lock(&self.lease).is_some()
    }

    /// Records this node's identity, or checks it against the recorded one: a node id is
    /// bound to one signing key, so a second data directory claiming the same node id with
    /// other keys is refused instead of forking the log.
    pub fn register_node(&self, record: &NodeRecord) -> Result<NodeRecord, StoreError> {
        if record.node_id != self.node_id {
            return Err(StoreError::Backend(format!(
                "cannot register node {:?} through the store of node {:?}",
                record.node_id, self.node_id
            )));
        }
        let stored = self.write(|tx, _| {
            tx.execute(
                "INSERT INTO evident.nodes (node_id, origin, verifier_key, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (node_id) DO NOTHING",
                &[
                    &record.node_id,
                    &record.origin,
                    &record.verifier_key,
                    &record.created_at,
                ],
            )?;
            node_record_in(tx, &self.node_id)
        })?;
        match stored {
            Some(stored)
                if stored.origin == record.origin && stored.verifier_key == record.verifier_key =>
            {
                Ok(stored)
            }
            Some(stored) => Err(StoreError::Backend(format!(
                "node {:?} in {} belongs to another identity (origin {:?}, key {}); this one \
                 has origin {:?} and key {}: two data directories use the same node id. Give \
                 this node another node_id, or use the data directory that created it",
                self.node_id,
                self.location,
                stored.origin,
                stored.verifier_key,
                record.origin,
                record.verifier_key
            ))),
            None => Err(StoreError::Backend(format!(
                "node {:?} could not be recorded in {}",
                self.node_id, self.location
            ))),
        }
    }

    /// This node's recorded identity, if any.
    pub fn node_record(&self) -> Result<Option<NodeRecord>, StoreError> {
        self.read(|tx| node_record_in(tx, &self.node_id))
    }

    /// Every node recorded in this database.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.read(|tx| {
            tx.query(
                "SELECT node_id, origin, verifier_key, created_at FROM evident.nodes \
                 ORDER BY node_id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(NodeRecord {
                    node_id: r.try_get(0)?,
                    origin: r.try_get(1)?,
                    verifier_key: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                })
            })
            .collect()
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // A `postgres::Client` closes its connection on a small runtime of its own when
        // dropped, which panics inside an async context (a server dropping its state on a
        // runtime thread): the connections are closed on a thread of their own.
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let readers = std::mem::take(
            &mut self
                .readers
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .idle,
        );
        let lease = self
            .lease
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if writer.is_none() && readers.is_empty() && lease.is_none() {
            return;
        }
        let closing = std::thread::Builder::new()
            .name("evident-pg-close".to_owned())
            .spawn(move || drop((writer, readers, lease)));
        if let Ok(closing) = closing {
            let _ = closing.join();
        }
    }
}

fn lease_lock_ids(key: i64) -> (u32, u32) {
    let bits = u64::from_be_bytes(key.to_be_bytes());
    ((bits >> 32) as u32, (bits & 0xffff_ffff) as u32)
}

fn node_record_in(tx: &mut impl GenericClient, node_id: &str) -> Result<Option<NodeRecord>, Error> {
    let row = tx.query_opt(
        "SELECT node_id, origin, verifier_key, created_at FROM evident.nodes WHERE node_id = $1",
        &[&node_id],
    )?;
    Ok(match row {
        None => None,
        Some(r) => Some(NodeRecord {
            node_id: r.try_get(0)?,
            origin: r.try_get(1)?,
            verifier_key: r.try_get(2)?,
            created_at: r.try_get(3)?,
        }),
    })
}

/// Statements prepared once on the writer connection.
struct WriterStatements<'a> {
    last_entry: &'a postgres::Statement,
}

/// Reads stored node hashes (`None` where absent), in the order of `ids`.
fn read_stored_nodes_in(
    tx: &mut Transaction<'_>,
    node: &str,
    ids: &[NodeId],
) -> Result<Vec<Option<Hash>>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let levels: Vec<i16> = ids.iter().map(|id| i16::from(id.level)).collect();
    let indexes = ids
        .iter()
        .map(|id| to_i64(id.index, "node index"))
        .collect::<Result<Vec<i64>, Error>>()?;
    let rows = tx.query(
        "SELECT n.level, n.idx, n.hash FROM evident.merkle_nodes n \
         JOIN unnest($2::smallint[], $3::bigint[]) AS w(level, idx) \
           ON n.level = w.level AND n.idx = w.idx \
         WHERE n.node_id = $1",
        &[&node, &levels, &indexes],
    )?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in rows {
        let (level, idx): (i16, i64) = (row.try_get(0)?, row.try_get(1)?);
        let bytes: &[u8] = row.try_get(2)?;
        let id = NodeId {
            level: u8::try_from(level).unwrap_or(u8::MAX),
            index: to_u64(idx, "node index")?,
        };
        let hash = hash_from(bytes)
            .ok_or_else(|| corrupt(None, format!("{} is not 32 bytes", node_label(id))))?;
        found.insert((level, idx), hash);
    }
    Ok(levels
        .iter()
        .zip(&indexes)
        .map(|(l, i)| found.get(&(*l, *i)).copied())
        .collect())
}

/// The rows and stored nodes the tree module recomputes lower nodes from.
struct TreeRows<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    node: &'a str,
}

fn node_from(level: i16, idx: i64, bytes: &[u8]) -> Result<(NodeId, Hash), Error> {
    let id = NodeId {
        level: u8::try_from(level).map_err(|_| corrupt(None, format!("node level {level}")))?,
        index: to_u64(idx, "node index")?,
    };
    let hash = hash_from(bytes)
        .ok_or_else(|| corrupt(None, format!("{} is not 32 bytes", node_label(id))))?;
    Ok((id, hash))
}

impl tree::NodeRows for TreeRows<'_, '_> {
    type Error = Error;

    fn stored(&mut self, ids: &[NodeId]) -> Result<Vec<Option<Hash>>, Error> {
        read_stored_nodes_in(self.tx, self.node, ids)
    }

    fn leaves(&mut self, start: u64, end: u64) -> Result<Vec<Option<Hash>>, Error> {
        let mut out = tree::LeafRange::new(start, end)
            .ok_or_else(|| backend(format!("leaf range [{start}, {end}) is too wide")))?;
        let rows = self.tx.query(
            "SELECT seq, hash, seal FROM evident.events \
             WHERE node_id = $1 AND seq >= $2 AND seq < $3",
            &[
                &self.node,
                &to_i64(start, "sequence number")?,
                &to_i64(end, "sequence number")?,
            ],
        )?;
        for row in rows {
            let seq = to_u64(row.try_get(0)?, "sequence number")?;
            out.put(seq, row.try_get(1)?, row.try_get(2)?)
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
        let levels: Vec<u8> = (0..below_level.min(64)).collect();
        let lows = levels
            .iter()
            .map(|l| to_i64(start >> l, "node index"))
            .collect::<Result<Vec<i64>, Error>>()?;
        let highs = levels
            .iter()
            .map(|l| to_i64(end >> l, "node index"))
            .collect::<Result<Vec<i64>, Error>>()?;
        let levels: Vec<i16> = levels.into_iter().map(i16::from).collect();
        let rows = self.tx.query(
            "SELECT n.level, n.idx, n.hash FROM evident.merkle_nodes n \
             JOIN unnest($2::smallint[], $3::bigint[], $4::bigint[]) AS w(level, lo, hi) \
               ON n.level = w.level AND n.idx >= w.lo AND n.idx < w.hi \
             WHERE n.node_id = $1",
            &[&self.node, &levels, &lows, &highs],
        )?;
        rows.iter()
            .map(|row| node_from(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
            .collect()
    }

    fn missing(&self, id: NodeId) -> Error {
        corrupt(None, tree::unreadable(id))
    }
}

/// Reads node hashes, recomputing the lower ones ([`tree`]); `None` where neither works.
fn read_nodes_in(
    tx: &mut Transaction<'_>,
    node: &str,
    ids: &[NodeId],
) -> Result<Vec<Option<Hash>>, Error> {
    tree::read(&mut TreeRows { tx, node }, ids)
}

/// Refuses a log whose stored tree reaches past its last entry (entries were removed).
fn check_no_nodes_beyond(tx: &mut Transaction<'_>, node: &str, size: u64) -> Result<(), Error> {
    // Node (level, i) is complete in a tree of `size` leaves when (i + 1) << level <= size.
    let levels: Vec<i16> = (0..64).collect();
    let past = (0..64u32)
        .map(|l| to_i64(size >> l, "node index"))
        .collect::<Result<Vec<i64>, Error>>()?;
    let beyond = tx.query_opt(
        "SELECT n.level, n.idx, n.hash FROM evident.merkle_nodes n \
         JOIN unnest($2::smallint[], $3::bigint[]) AS w(level, past) \
           ON n.level = w.level AND n.idx >= w.past \
         WHERE n.node_id = $1 LIMIT 1",
        &[&node, &levels, &past],
    )?;
    if let Some(row) = beyond {
        let (id, _) = node_from(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)?;
        return Err(corrupt(
            None,
            format!(
                "{} covers entries beyond the last one ({}): entries were removed",
                node_label(id),
                size.saturating_sub(1)
            ),
        ));
    }
    Ok(())
}

fn load_head_in(tx: &mut Transaction<'_>, node: &str) -> Result<ChainHead, Error> {
    let last = tx.query_opt(
        "SELECT seq, hash, seal FROM evident.events WHERE node_id = $1 ORDER BY seq DESC LIMIT 1",
        &[&node],
    )?;
    let Some(last) = last else {
        let stray = tx.query_opt(
            "SELECT 1 FROM evident.merkle_nodes WHERE node_id = $1 LIMIT 1",
            &[&node],
        )?;
        if stray.is_some() {
            return Err(corrupt(
                None,
                "the log has no entries but holds Merkle nodes: entries were removed".to_owned(),
            ));
        }
        return Ok(ChainHead::genesis());
    };
    let seq: i64 = last.try_get(0)?;
    let last_seq = to_u64(seq, "sequence number")?;
    let fixed = |idx: usize, what: &str| -> Result<Hash, Error> {
        last.try_get::<_, &[u8]>(idx)
            .ok()
            .and_then(hash_from)
            .ok_or_else(|| corrupt(Some(last_seq), format!("column {what} is not 32 bytes")))
    };
    let entry_hash = fixed(1, "hash")?;
    fixed(2, "seal")?;
    let next_seq = last_seq + 1;

    let ids = merkle::subtree_ids(0, next_seq);
    let stored = read_nodes_in(tx, node, &ids)?;
    let mut frontier = Vec::with_capacity(ids.len());
    for (id, hash) in ids.iter().zip(stored) {
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
    check_no_nodes_beyond(tx, node, next_seq)?;
    let latest = tx.query_opt(
        "SELECT size, root FROM evident.checkpoints WHERE node_id = $1 \
         ORDER BY size DESC LIMIT 1",
        &[&node],
    )?;
    if let Some(row) = latest {
        let size = to_u64(row.try_get(0)?, "checkpoint size")?;
        let root = hash_from(row.try_get(1)?).ok_or_else(|| {
            corrupt(
                None,
                format!("the root of the checkpoint of size {size} is not 32 bytes"),
            )
        })?;
        // A checkpoint past the log's end is the sequencer's to report (a truncation).
        if size <= next_seq {
            let problem = tree::checkpoint_mismatch(&mut TreeRows { tx, node }, size, &root)?;
            if let Some(problem) = problem {
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

impl PostgresStore {
    fn append_in(
        &self,
        tx: &mut Transaction<'_>,
        statements: &WriterStatements<'_>,
        base: Option<&Hash>,
        entries: &[SealedEntry],
        nodes: &[(NodeId, Hash)],
    ) -> Result<(), Error> {
        let node = self.node_id.as_str();
        // A writer whose lease session ended (a database restart, a cut connection, an
        // administrator's pg_terminate_backend) stores nothing more until its caller took the
        // lease back ([`Self::acquire_lease`]) and reloaded the head: another process may have
        // served the node meanwhile, and entries sealed on the old head would not continue
        // its log. The density check below and the primary key are the last line.
        let lease_pid = lock(&self.lease).as_ref().map(|(_, pid)| *pid);
        if let Some(pid) = lease_pid {
            let (classid, objid) = lease_lock_ids(lease_key(node));
            let held = tx.query_opt(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1 \
                 AND classid = $2 AND objid = $3 AND objsubid = 1",
                &[&pid, &classid, &objid],
            )?;
            if held.is_none() {
                let lost = lock(&self.lease).take();
                drop(lost);
                return Err(StoreError::Locked(format!(
                    "the writer lease for node {node:?} on {} was lost: its PostgreSQL session \
                     (pid {pid}) ended (a database restart, a cut connection or \
                     pg_terminate_backend); nothing was stored",
                    self.location
                ))
                .into());
            }
        }
        let last = tx.query_opt(statements.last_entry, &[&node])?;
        let (next, mut last_recorded, stored_prev) = match last {
            Some(row) => {
                let seq: i64 = row.try_get(0)?;
                let hash: Vec<u8> = row.try_get(2)?;
                (seq + 1, Some(row.try_get::<_, i64>(1)?), hash_from(&hash))
            }
            // An empty log starts at 0, or where an imported pruned log's anchor says.
            None => match prune::anchor_in(tx, node)? {
                Some(anchor) => (
                    to_i64(anchor.below_seq, "sequence number")?,
                    None,
                    Some(anchor.hash),
                ),
                None => (0, None, None),
            },
        };
        if let (Some(prev_hash), Some(first)) = (base, entries.first()) {
            let stored_next = u64::try_from(next).unwrap_or(0);
            crate::check_append_base(first.event.seq, prev_hash, stored_next, stored_prev)?;
        }
        let mut ips = Vec::with_capacity(entries.len());
        for (expected, entry) in (next..).zip(entries) {
            let e = &entry.event;
            let seq = to_i64(e.seq, "sequence number")?;
            if seq != expected {
                return Err(backend(format!(
                    "refusing to append entry {} where entry {expected} is next: the log must \
                     stay dense",
                    e.seq
                )));
            }
            if e.node_id != node {
                return Err(backend(format!(
                    "refusing to append entry {} of node {:?} to the log of node {node:?}: a \
                     log holds one node's entries",
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
            last_recorded = Some(e.recorded_at);
            ips.push(match e.actor.ip {
                None => None,
                Some(ip) => Some(codec::encode_ip(ip).ok_or_else(|| {
                    backend(format!(
                        "refusing to append entry {}: actor IP {ip} is not in canonical form \
                         (IPv4-mapped addresses are held as IPv4)",
                        e.seq
                    ))
                })?),
            });
        }
        if !entries.is_empty() {
            let sink = tx.copy_in(COPY_EVENTS)?;
            let mut writer = BinaryCopyInWriter::new(sink, &EVENT_TYPES);
            for (entry, ip) in entries.iter().zip(&ips) {
                let e = &entry.event;
                let seq = to_i64(e.seq, "sequence number")?;
                let ip: Option<&[u8]> = ip.as_ref().map(|b| &b[..]);
                let severity = codec::severity_rank(e.severity);
                let row: [&(dyn ToSql + Sync); 19] = [
                    &node,
                    &seq,
                    &e.id,
                    &e.recorded_at,
                    &e.occurred_at,
                    &e.tenant,
                    &e.actor.id,
                    &e.actor.kind.as_str(),
                    &ip,
                    &e.actor.user_agent,
                    &e.action,
                    &e.target.kind,
                    &e.target.id,
                    &e.outcome.as_str(),
                    &severity,
                    &e.context.as_str(),
                    &entry.hash.as_bytes().as_slice(),
                    &entry.seal.as_bytes().as_slice(),
                    &e.appended_by,
                ];
                writer.write(&row)?;
            }
            match writer.finish() {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(backend(format!(
                        "entries from {next} on are already stored: another writer appended to \
                         node {node:?}'s log"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Only the upper nodes are stored; the lower ones are recomputed from the rows.
        let nodes: Vec<&(NodeId, Hash)> =
            nodes.iter().filter(|(id, _)| tree::is_stored(id)).collect();
        if !nodes.is_empty() {
            let sink = tx.copy_in(COPY_NODES)?;
            let mut writer = BinaryCopyInWriter::new(sink, &NODE_TYPES);
            for (id, hash) in nodes {
                let level = i16::from(id.level);
                let index = to_i64(id.index, "node index")?;
                writer.write(&[&node, &level, &index, &hash.as_bytes().as_slice()])?;
            }
            match writer.finish() {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    let which = duplicate_node(&e)
                        .map_or_else(|| "a Merkle node of this batch".to_owned(), node_label);
                    return Err(backend(format!(
                        "{which} is already stored: nodes are written once"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The node a unique violation on `merkle_nodes` names, from the error's detail
/// (`Key (node_id, level, idx)=(node-a, 0, 0) already exists.`).
fn duplicate_node(e: &postgres::Error) -> Option<NodeId> {
    let detail = e.as_db_error()?.detail()?;
    let values = detail.split_once(")=(")?.1.split_once(')')?.0;
    let mut parts = values.rsplit(", ");
    let index = parts.next()?.parse().ok()?;
    let level = parts.next()?.parse().ok()?;
    Some(NodeId { level, index })
}

fn checkpoint_from(row: &postgres::Row) -> Result<StoredCheckpoint, Error> {
    let size: i64 = row.try_get(0)?;
    let root: &[u8] = row.try_get(1)?;
    let Some(root) = hash_from(root) else {
        return Err(corrupt(
            None,
            format!("the root of the stored checkpoint of size {size} is not 32 bytes"),
        ));
    };
    Ok(StoredCheckpoint {
        size: to_u64(size, "checkpoint size")?,
        root,
        signed_note: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

fn key_from(row: &postgres::Row) -> Result<KeyRecord, Error> {
    let id: String = row.try_get(0)?;
    let secret_hash: &[u8] = row.try_get(1)?;
    let Some(secret_hash) = hash_from(secret_hash) else {
        return Err(corrupt(
            None,
            format!("the secret hash of API key {id} is not 32 bytes"),
        ));
    };
    Ok(KeyRecord {
        id,
        secret_hash,
        role: row.try_get(2)?,
        tenant: row.try_get(3)?,
        label: row.try_get(4)?,
        created_at: row.try_get(5)?,
        revoked_at: row.try_get(6)?,
        expires_at: row.try_get(7)?,
        last_used_at: row.try_get(8)?,
        last_used_ip: row.try_get(9)?,
    })
}

fn key_not_found(id: &str) -> Error {
    Error::Store(StoreError::NotFound(format!("API key {id}")))
}

impl Store for PostgresStore {
    fn load_head(&self) -> Result<ChainHead, StoreError> {
        self.read(|tx| load_head_in(tx, &self.node_id))
    }

    fn append(&self, entries: &[SealedEntry], nodes: &[(NodeId, Hash)]) -> Result<(), StoreError> {
        if entries.is_empty() && nodes.is_empty() {
            return Ok(());
        }
        self.write(|tx, statements| self.append_in(tx, statements, None, entries, nodes))
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
        self.write(|tx, statements| self.append_in(tx, statements, Some(prev_hash), entries, nodes))
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
        self.read(|tx| {
            let filter = query::time_as_seqs(tx, &self.node_id, filter)?;
            let Some(query) = query::select(&self.node_id, &filter, order, after_seq, limit)?
            else {
                return Ok(());
            };
            let statement = tx.prepare(&query.sql)?;
            let portal = tx.bind(&statement, &query.params())?;
            loop {
                let rows = tx.query_portal(&portal, FETCH_ROWS)?;
                if rows.is_empty() {
                    return Ok(());
                }
                let last_batch = rows.len() < FETCH_ROWS.unsigned_abs() as usize;
                for row in &rows {
                    if visit(codec::decode(row)?).is_break() {
                        return Ok(());
                    }
                }
                if last_batch {
                    return Ok(());
                }
            }
        })
    }

    fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
        if filter.node.as_deref().is_some_and(|n| n != self.node_id) {
            return Ok(0);
        }
        // A filter of nothing but sequence and time ranges is a plain range once the time
        // range is a sequence range too.
        let only_seqs = Filter {
            from_seq: None,
            to_seq: None,
            node: None,
            from: None,
            to: None,
            ..filter.clone()
        } == Filter::default();
        self.read(|tx| {
            if only_seqs {
                // Entries are dense from the first stored to the last (append refuses gaps,
                // and retention removes a prefix): a plain range is counted without reading
                // it.
                let Some((first, last)) = query::seq_extent(tx, &self.node_id)? else {
                    return Ok(0);
                };
                let filter = query::time_as_seqs_within(tx, &self.node_id, filter, (first, last))?;
                let lo = filter
                    .from_seq
                    .map_or(first, |s| first.max(query::clamp(s)));
                let hi = filter.to_seq.map_or(last.saturating_add(1), |s| {
                    last.saturating_add(1).min(query::clamp(s))
                });
                return Ok(u64::try_from(hi.saturating_sub(lo)).unwrap_or(0));
            }
            let filter = query::time_as_seqs(tx, &self.node_id, filter)?;
            let Some(query) = query::count(&self.node_id, &filter)? else {
                return Ok(0);
            };
            let n: i64 = tx.query_one(&query.sql, &query.params())?.try_get(0)?;
            to_u64(n, "count")
        })
    }

    fn histogram(
        &self,
        filter: &Filter,
        buckets: &Buckets,
    ) -> Result<Vec<SeverityCounts>, StoreError> {
        let mut out = vec![SeverityCounts::default(); buckets.len()];
        self.read(|tx| {
            let narrowed = buckets.narrow(filter);
            let filter = query::time_as_seqs(tx, &self.node_id, &narrowed)?;
            let Some(query) = query::histogram(&self.node_id, &filter, buckets.width())? else {
                return Ok(out);
            };
            for row in tx.query(&query.sql, &query.params())? {
                let (cell, rank, n): (i64, i64, i64) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                // The cell's start, or the grid's start for the first (partial) cell.
                let at = cell.saturating_mul(buckets.width()).max(buckets.from());
                buckets.add(&mut out, at, rank, to_u64(n, "count")?);
            }
            Ok(out)
        })
    }

    fn read_nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        self.read(|tx| {
            read_nodes_in(tx, &self.node_id, ids)?
                .into_iter()
                .zip(ids)
                .map(|(hash, id)| {
                    hash.ok_or_else(|| Error::Store(StoreError::NotFound(node_label(*id))))
                })
                .collect()
        })
    }

    fn put_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        let size = to_i64(checkpoint.size, "checkpoint size").map_err(|e| self.map_err(e))?;
        self.write(|tx, _| {
            let inserted = tx.execute(
                "INSERT INTO evident.checkpoints (node_id, size, root, note, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (node_id, size) DO NOTHING",
                &[
                    &self.node_id,
                    &size,
                    &checkpoint.root.as_bytes().as_slice(),
                    &checkpoint.signed_note,
                    &checkpoint.created_at,
                ],
            )?;
            if inserted == 1 {
                return Ok(());
            }
            // Checkpoints are written once: the same tree again is fine (the first signature
            // stays), a different root for the same size means two histories.
            let row = tx.query_one(
                "SELECT root FROM evident.checkpoints WHERE node_id = $1 AND size = $2",
                &[&self.node_id, &size],
            )?;
            let root: &[u8] = row.try_get(0)?;
            if hash_from(root) == Some(checkpoint.root) {
                Ok(())
            } else {
                Err(corrupt(
                    None,
                    format!(
                        "a checkpoint of size {} with a different root is already stored: the \
                         log was rewritten",
                        checkpoint.size
                    ),
                ))
            }
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.read(|tx| {
            let sql = format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM evident.checkpoints WHERE node_id = $1 \
                 ORDER BY size DESC LIMIT 1"
            );
            tx.query_opt(&sql, &[&self.node_id])?
                .as_ref()
                .map(checkpoint_from)
                .transpose()
        })
    }

    fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        let Ok(size) = i64::try_from(size) else {
            return Ok(None);
        };
        self.read(|tx| {
            let sql = format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM evident.checkpoints WHERE node_id = $1 \
                 AND size = $2"
            );
            tx.query_opt(&sql, &[&self.node_id, &size])?
                .as_ref()
                .map(checkpoint_from)
                .transpose()
        })
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.read(|tx| {
            let sql = format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM evident.checkpoints WHERE node_id = $1 \
                 ORDER BY size ASC"
            );
            tx.query(&sql, &[&self.node_id])?
                .iter()
                .map(checkpoint_from)
                .collect()
        })
    }

    fn put_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        self.write(|tx, _| {
            let result = tx.execute(
                &format!(
                    "INSERT INTO evident.api_keys (node_id, {KEY_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ),
                &[
                    &self.node_id,
                    &key.id,
                    &key.secret_hash.as_bytes().as_slice(),
                    &key.role,
                    &key.tenant,
                    &key.label,
                    &key.created_at,
                    &key.revoked_at,
                    &key.expires_at,
                    &key.last_used_at,
                    &key.last_used_ip,
                ],
            );
            match result {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => Err(backend(format!(
                    "an API key with id {} or the same secret is already stored",
                    key.id
                ))),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn key_by_hash(&self, secret_hash: &Hash) -> Result<Option<KeyRecord>, StoreError> {
        self.read(|tx| {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM evident.api_keys WHERE node_id = $1 \
                 AND secret_hash = $2"
            );
            tx.query_opt(&sql, &[&self.node_id, &secret_hash.as_bytes().as_slice()])?
                .as_ref()
                .map(key_from)
                .transpose()
        })
    }

    fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.read(|tx| {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM evident.api_keys WHERE node_id = $1 \
                 ORDER BY created_at, id"
            );
            tx.query(&sql, &[&self.node_id])?
                .iter()
                .map(key_from)
                .collect()
        })
    }

    fn revoke_key(&self, id: &str, at: Millis) -> Result<(), StoreError> {
        self.write(|tx, _| {
            // The first revocation time stands.
            let n = tx.execute(
                "UPDATE evident.api_keys SET revoked_at = coalesce(revoked_at, $3) \
                 WHERE node_id = $1 AND id = $2",
                &[&self.node_id, &id, &at],
            )?;
            if n == 0 {
                Err(key_not_found(id))
            } else {
                Ok(())
            }
        })
    }

    fn set_key_expiry(&self, id: &str, expires_at: Millis) -> Result<(), StoreError> {
        self.write(|tx, _| {
            let n = tx.execute(
                "UPDATE evident.api_keys SET expires_at = $3 WHERE node_id = $1 AND id = $2",
                &[&self.node_id, &id, &expires_at],
            )?;
            if n == 0 {
                Err(key_not_found(id))
            } else {
                Ok(())
            }
        })
    }

    fn touch_key(&self, id: &str, at: Millis, ip: Option<&str>) -> Result<(), StoreError> {
        self.write(|tx, _| {
            // Touches may land out of order (they are fire-and-forget): keep the latest.
            let n = tx.execute(
                "UPDATE evident.api_keys SET last_used_at = $3, last_used_ip = $4 \
                 WHERE node_id = $1 AND id = $2 \
                   AND (last_used_at IS NULL OR last_used_at <= $3)",
                &[&self.node_id, &id, &at, &ip],
            )?;
            if n == 0 {
                let known = tx.query_opt(
                    "SELECT 1 FROM evident.api_keys WHERE node_id = $1 AND id = $2",
                    &[&self.node_id, &id],
                )?;
                if known.is_none() {
                    return Err(key_not_found(id));
                }
            }
            Ok(())
        })
    }

    fn consumer_cursor(&self, consumer: &str) -> Result<Option<ConsumerCursor>, StoreError> {
        self.read(|tx| {
            tx.query_opt(
                "SELECT consumer, next_seq, state, updated_at FROM evident.consumer_cursors \
                 WHERE node_id = $1 AND consumer = $2",
                &[&self.node_id, &consumer],
            )?
            .as_ref()
            .map(cursor_from)
            .transpose()
        })
    }

    fn consumer_cursors(&self) -> Result<Vec<ConsumerCursor>, StoreError> {
        self.read(|tx| {
            tx.query(
                "SELECT consumer, next_seq, state, updated_at FROM evident.consumer_cursors \
                 WHERE node_id = $1 ORDER BY consumer",
                &[&self.node_id],
            )?
            .iter()
            .map(cursor_from)
            .collect()
        })
    }

    fn save_consumer_cursor(&self, cursor: &ConsumerCursor) -> Result<(), StoreError> {
        self.write(|tx, _| {
            let next = i64::try_from(cursor.next_seq).map_err(|_| {
                backend(format!(
                    "cursor position {} is out of range",
                    cursor.next_seq
                ))
            })?;
            let stored = tx.query_opt(
                "SELECT next_seq FROM evident.consumer_cursors \
                 WHERE node_id = $1 AND consumer = $2 FOR UPDATE",
                &[&self.node_id, &cursor.consumer],
            )?;
            if let Some(row) = stored {
                let stored: i64 = row.get(0);
                if stored > next {
                    return Err(Error::Store(StoreError::CursorBackwards {
                        consumer: cursor.consumer.clone(),
                        stored: stored as u64,
                        asked: cursor.next_seq,
                    }));
                }
            }
            tx.execute(
                "INSERT INTO evident.consumer_cursors \
                 (node_id, consumer, next_seq, state, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (node_id, consumer) DO UPDATE SET next_seq = excluded.next_seq, \
                 state = excluded.state, updated_at = excluded.updated_at",
                &[
                    &self.node_id,
                    &cursor.consumer,
                    &next,
                    &cursor.state,
                    &cursor.updated_at,
                ],
            )?;
            Ok(())
        })
    }

    fn witnessed_checkpoint(
        &self,
        origin: &str,
    ) -> Result<Option<WitnessedCheckpoint>, StoreError> {
        self.read(|tx| {
            let Some(row) = tx.query_opt(
                "SELECT origin, size, root, signed_note, updated_at \
                 FROM evident.witnessed_checkpoints WHERE node_id = $1 AND origin = $2",
                &[&self.node_id, &origin],
            )?
            else {
                return Ok(None);
            };
            let origin: String = row.try_get(0)?;
            let size: i64 = row.try_get(1)?;
            let root: Vec<u8> = row.try_get(2)?;
            let root = hash_from(&root).ok_or_else(|| {
                backend(format!(
                    "witnessed checkpoint of {origin:?}: root is not 32 bytes"
                ))
            })?;
            Ok(Some(WitnessedCheckpoint {
                size: u64::try_from(size)
                    .map_err(|_| backend(format!("witnessed size {size} is negative")))?,
                root,
                signed_note: row.try_get(3)?,
                updated_at: row.try_get(4)?,
                origin,
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
        self.write(|tx, _| {
            // Serializes concurrent submissions for one origin: the row (or, for the first
            // one, the insert's key) is what they contend on.
            let stored = tx.query_opt(
                "SELECT size FROM evident.witnessed_checkpoints \
                 WHERE node_id = $1 AND origin = $2 FOR UPDATE",
                &[&self.node_id, &checkpoint.origin],
            )?;
            let stored = match stored {
                Some(row) => u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
                None => 0,
            };
            if stored != expected_size {
                return Err(Error::Store(StoreError::WitnessMoved {
                    origin: checkpoint.origin.clone(),
                    stored,
                    expected: expected_size,
                }));
            }
            let root = checkpoint.root.as_bytes().as_slice();
            let written = if expected_size == 0 {
                // No row seen: a concurrent first insert makes this one insert nothing.
                tx.execute(
                    "INSERT INTO evident.witnessed_checkpoints \
                     (node_id, origin, size, root, signed_note, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (node_id, origin) DO UPDATE \
                     SET size = excluded.size, root = excluded.root, \
                     signed_note = excluded.signed_note, updated_at = excluded.updated_at \
                     WHERE evident.witnessed_checkpoints.size = 0",
                    &[
                        &self.node_id,
                        &checkpoint.origin,
                        &size,
                        &root,
                        &checkpoint.signed_note,
                        &checkpoint.updated_at,
                    ],
                )?
            } else {
                tx.execute(
                    "UPDATE evident.witnessed_checkpoints SET size = $3, root = $4, \
                     signed_note = $5, updated_at = $6 WHERE node_id = $1 AND origin = $2",
                    &[
                        &self.node_id,
                        &checkpoint.origin,
                        &size,
                        &root,
                        &checkpoint.signed_note,
                        &checkpoint.updated_at,
                    ],
                )?
            };
            if written != 1 {
                return Err(Error::Store(StoreError::WitnessMoved {
                    origin: checkpoint.origin.clone(),
                    stored: u64::MAX,
                    expected: expected_size,
                }));
            }
            Ok(())
        })
    }

    fn put_cosignature(&self, cosignature: &CollectedCosignature) -> Result<(), StoreError> {
        let size = i64::try_from(cosignature.size)
            .map_err(|_| StoreError::Backend("tree size out of range".into()))?;
        self.write(|tx, _| {
            tx.execute(
                "INSERT INTO evident.cosignatures (node_id, size, witness, line, received_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (node_id, size, witness) DO UPDATE \
                 SET line = excluded.line, received_at = excluded.received_at",
                &[
                    &self.node_id,
                    &size,
                    &cosignature.witness,
                    &cosignature.line,
                    &cosignature.received_at,
                ],
            )?;
            Ok(())
        })
    }

    fn cosignatures_at(&self, size: u64) -> Result<Vec<CollectedCosignature>, StoreError> {
        let Ok(at) = i64::try_from(size) else {
            return Ok(Vec::new());
        };
        self.read(|tx| {
            tx.query(
                "SELECT witness, line, received_at FROM evident.cosignatures \
                 WHERE node_id = $1 AND size = $2 ORDER BY witness",
                &[&self.node_id, &at],
            )?
            .iter()
            .map(|row| {
                Ok(CollectedCosignature {
                    size,
                    witness: row.try_get(0)?,
                    line: row.try_get(1)?,
                    received_at: row.try_get(2)?,
                })
            })
            .collect()
        })
    }

    fn prune_anchor(&self) -> Result<Option<PruneAnchor>, StoreError> {
        self.read(|tx| prune::anchor_in(tx, &self.node_id))
    }

    fn check_prune_permitted(&self) -> Result<(), StoreError> {
        self.read(prune::check_permitted_in)
    }

    fn begin_prune(&self, anchor: &PruneAnchor) -> Result<(), StoreError> {
        self.write(|tx, _| prune::begin_in(tx, &self.node_id, anchor))
    }

    fn prune_batch(&self, max_entries: u64) -> Result<u64, StoreError> {
        self.write(|tx, _| prune::batch_in(tx, &self.node_id, max_entries))
    }

    fn import_pruned_nodes(&self, nodes: &[(NodeId, Hash)]) -> Result<(), StoreError> {
        self.write(|tx, _| prune::import_nodes_in(tx, &self.node_id, nodes))
    }

    fn import_anchor(&self, anchor: &PruneAnchor) -> Result<(), StoreError> {
        self.write(|tx, _| prune::import_anchor_in(tx, &self.node_id, anchor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://evident:s3cret@db.example:5432/evident?sslmode=disable"),
            "postgres://evident@db.example:5432/evident?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://db/evident?password=x&user=y"),
            "postgresql://db/evident?user=y"
        );
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        // The TLS parameters stay: the recorded URL must reach the database the same way.
        assert_eq!(
            redact_url("postgres://u:pw@h/d?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"),
            "postgres://u@h/d?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"
        );
        assert!(is_postgres_url("postgresql://h/d"));
        assert!(!is_postgres_url("./evident-data"));
    }

    /// The `i`-th test event: every other one says when it happened.
    fn input(i: u64) -> evident_core::event::EventInput {
        use evident_core::event::{Context, EventInput};
        use evident_core::{Actor, ActorKind, Outcome, Severity, Target};
        EventInput {
            occurred_at: (i % 2 == 0).then_some(1_699_999_999_000 + i as i64),
            tenant: "default".to_owned(),
            actor: Actor {
                id: format!("user-{i}"),
                kind: ActorKind::User,
                ip: Some(std::net::IpAddr::from([10, 0, 0, i as u8])),
                user_agent: None,
            },
            action: "auth.login".to_owned(),
            target: Target {
                kind: "node".to_owned(),
                id: "n".to_owned(),
            },
            outcome: Outcome::Success,
            severity: Severity::Info,
            context: Context::from_value(&serde_json::json!({"i": i})).unwrap(),
        }
    }

    /// Every column of every `events` row but `appended_by`, as text, in `seq` order.
    fn raw_rows(client: &mut Client) -> Vec<String> {
        client
            .query(
                "SELECT (seq, id, recorded_at, occurred_at, node_id, tenant, actor_id, \
                 actor_kind, ip, user_agent, action, target_kind, target_id, outcome, severity, \
                 context, hash, seal)::text FROM evident.events ORDER BY node_id, seq",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// A database left by a build of schema version 2 (before entries recorded who appended
    /// them), holding entries: opening it migrates it in place. Its rows are not rewritten and
    /// read back as the version-1 entries they are, new entries are version 2 on top, and the
    /// log of both verifies.
    #[test]
    fn a_schema_2_database_is_migrated_in_place_and_keeps_its_version_1_entries() {
        use evident_core::SealKey;
        let cluster = evident_testpg::shared().unwrap_or_else(|e| panic!("{e}"));
        let url = cluster.url(&cluster.create_database().unwrap());
        let key = SealKey::new(&[5u8; 32]).unwrap();
        let mut head = ChainHead::genesis();
        let mut nodes = Vec::new();
        let old: Vec<SealedEntry> = (0..6)
            .map(|i| {
                let id = uuid::Uuid::from_u128(u128::from(i) + 1);
                head.append_v1(id, 1_700_000_000_000, "node-a", input(i), &key, &mut nodes)
            })
            .collect();
        let (config, tls) = config_of(&url).unwrap();
        let mut client = tls.connect(&config, "test database").unwrap();
        client.batch_execute(schema::V1).unwrap();
        client.batch_execute(schema::V2).unwrap();
        for entry in &old {
            let e = &entry.event;
            let ip: Option<Vec<u8>> = e.actor.ip.and_then(codec::encode_ip).map(Vec::from);
            // The version-2 schema's row: no appended_by column.
            client
                .execute(
                    "INSERT INTO evident.events (node_id, seq, id, recorded_at, occurred_at, \
                     tenant, actor_id, actor_kind, ip, user_agent, action, target_kind, \
                     target_id, outcome, severity, context, hash, seal) VALUES ($1, $2, $3, \
                     $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                    &[
                        &e.node_id,
                        &(e.seq as i64),
                        &e.id,
                        &e.recorded_at,
                        &e.occurred_at,
                        &e.tenant,
                        &e.actor.id,
                        &e.actor.kind.as_str(),
                        &ip,
                        &e.actor.user_agent,
                        &e.action,
                        &e.target.kind,
                        &e.target.id,
                        &e.outcome.as_str(),
                        &codec::severity_rank(e.severity),
                        &e.context.as_str(),
                        &entry.hash.as_bytes().as_slice(),
                        &entry.seal.as_bytes().as_slice(),
                    ],
                )
                .unwrap();
        }
        let before = raw_rows(&mut client);
        assert_eq!(before.len(), 6);

        let store = PostgresStore::open(&url, "node-a").unwrap();
        let version: i32 = client
            .query_one("SELECT max(version) FROM evident.schema_version", &[])
            .unwrap()
            .get(0);
        assert_eq!(version, schema::SCHEMA_VERSION);
        // Schema version 7 dropped the index on recorded_at: time ranges are read as the
        // sequence ranges they amount to.
        let time_indexes: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = 'evident' \
                 AND tablename = 'events' AND indexdef LIKE '%recorded_at%'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(time_indexes, 0);
        assert_eq!(crate::all_entries(&store), old);
        assert_eq!(store.load_head().unwrap(), head);
        // Schema version 6 indexed occurred_at: the entries stored before it are filterable
        // by it at once (entries 2 and 4 state times in the span; 1 and 3 state none).
        let span = crate::Filter {
            occurred_from: Some(1_699_999_999_001),
            occurred_to: Some(1_699_999_999_005),
            ..crate::Filter::default()
        };
        assert_eq!(
            crate::matching_entries(&store, &span),
            [old[2].clone(), old[4].clone()]
        );
        assert_eq!(store.count(&span).unwrap(), 2);
        let mut nodes = Vec::new();
        let new: Vec<SealedEntry> = (6..10)
            .map(|i| {
                let id = uuid::Uuid::from_u128(u128::from(i) + 1);
                head.append(
                    id,
                    1_700_000_000_000,
                    "node-a",
                    "evk_0123456789ab",
                    input(i),
                    &key,
                    &mut nodes,
                )
            })
            .collect();
        store.append(&new, &nodes).unwrap();
        drop(store);
        let store = PostgresStore::open(&url, "node-a").unwrap();
        assert_eq!(raw_rows(&mut client)[..6], before[..]);
        let nulls: i64 = client
            .query_one(
                "SELECT count(*) FROM evident.events WHERE appended_by IS NULL",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(nulls, 6);
        let all = crate::all_entries(&store);
        let versions: Vec<u8> = all.iter().map(|e| e.event.entry_version()).collect();
        assert_eq!(versions, [1, 1, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(all[6..], new[..]);
        let mut verifier = evident_core::verify::StreamVerifier::new(
            evident_core::verify::Anchor::genesis(),
            Some(key),
            Some("node-a".to_owned()),
        );
        for e in &all {
            verifier.push(e).unwrap();
        }
        assert_eq!(verifier.finish().unwrap().root, head.tree.root());
    }

    /// A time range is the sequence range of the entries recorded in it, with times shared by
    /// several entries, spread over several appends, bounds between and beyond stored times,
    /// and sequence bounds already given kept where tighter.
    #[test]
    fn time_ranges_become_the_sequence_ranges_they_amount_to() {
        let cluster = evident_testpg::shared().unwrap_or_else(|e| panic!("{e}"));
        let url = cluster.url(&cluster.create_database().unwrap());
        let store = PostgresStore::open(&url, "node-a").unwrap();
        let key = evident_core::SealKey::new(&[7u8; 32]).unwrap();
        let mut head = store.load_head().unwrap();
        const T: i64 = 1_700_000_000_000;
        // seq:         0  1  2  3  4  5  6  7   8   9
        let times = [T, T, T, T + 5, T + 5, T + 5, T + 5, T + 9, T + 20, T + 20];
        for batch in [0..2, 2..5, 5..10] {
            let mut nodes = Vec::new();
            let entries: Vec<SealedEntry> = batch
                .map(|i| {
                    let id = uuid::Uuid::from_u128(i as u128 + 1);
                    head.append(
                        id,
                        times[i],
                        "node-a",
                        "evk_test",
                        input(i as u64),
                        &key,
                        &mut nodes,
                    )
                })
                .collect();
            store.append(&entries, &nodes).unwrap();
        }
        let seqs = |from: Option<i64>, to: Option<i64>, from_seq: Option<u64>| {
            let filter = Filter {
                from,
                to,
                from_seq,
                ..Filter::default()
            };
            store
                .read(|tx| {
                    let narrowed = query::time_as_seqs(tx, "node-a", &filter)?;
                    assert_eq!((narrowed.from, narrowed.to), (from, to), "time kept");
                    Ok((narrowed.from_seq, narrowed.to_seq))
                })
                .unwrap()
        };
        assert_eq!(seqs(None, None, None), (None, None));
        assert_eq!(seqs(Some(T), None, None), (Some(0), None));
        assert_eq!(seqs(Some(T - 1), Some(T), None), (Some(0), Some(0)));
        assert_eq!(seqs(Some(T + 1), Some(T + 5), None), (Some(3), Some(3)));
        assert_eq!(seqs(Some(T + 5), Some(T + 6), None), (Some(3), Some(7)));
        assert_eq!(seqs(Some(T + 6), Some(T + 20), None), (Some(7), Some(8)));
        assert_eq!(seqs(None, Some(T + 21), None), (None, Some(10)));
        assert_eq!(seqs(Some(T + 21), None, None), (Some(10), None));
        assert_eq!(seqs(Some(T + 9), Some(T + 1), None), (Some(7), Some(7)));
        assert_eq!(seqs(Some(T), Some(T + 9), Some(4)), (Some(4), Some(7)));
        assert_eq!(seqs(Some(T + 5), None, Some(1)), (Some(3), None));
        // And what is read with them: exactly the entries of the range.
        let all = crate::all_entries(&store);
        let span = Filter {
            from: Some(T + 5),
            to: Some(T + 20),
            ..Filter::default()
        };
        assert_eq!(crate::matching_entries(&store, &span), all[3..8]);
        assert_eq!(store.count(&span).unwrap(), 5);
    }

    #[test]
    fn lease_keys_differ_per_node_and_split_into_lock_ids() {
        assert_ne!(lease_key("node-1"), lease_key("node-2"));
        let key = lease_key("node-1");
        let (hi, lo) = lease_lock_ids(key);
        assert_eq!((u64::from(hi) << 32) | u64::from(lo), key as u64);
    }
}
