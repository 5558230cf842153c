//! A node's identity on disk and its running parts. [`NodeFiles`] owns the data directory
//! layout (`node.toml`, `keys/checkpoint.key`, `keys/seal.key`, `evident.db`): created once,
//! checked on every later start. [`Node`] is a started node: the directory lock, the store and
//! the sequencer thread. Nothing here speaks HTTP.
//!
//! The log lives in the embedded database (`evident.db`) or in PostgreSQL (`storage =
//! "postgres://…"`); `node.toml` records which (PostgreSQL's URL without its password), so
//! that every later command on the directory finds the log, and a start with other storage is
//! refused unless that storage already holds this node's log (moved there by `evident
//! migrate`). The keys stay in the data directory's files, mode 0600, with both backends. On
//! PostgreSQL a started node also holds its writer lease (an advisory lock on its node id),
//! and the database binds each node id to one verifier key.

use crate::config::{ConfigError, ServerConfig};
use crate::file_modes::{DirSync, WriteFailed};
use crate::guard::{CheckKeys, DetectedBy, Guard, check_before_extending};
use crate::metrics::Metrics;
use crate::sequencer::{Resume, Sequencer, SequencerSettings, WriterLease};
use evident_core::rotation::SealEpochs;
use evident_core::{NoteSigner, NoteVerifier, SealKey};
use evident_store::postgres::NodeRecord;
use evident_store::{PostgresStore, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Identity file name inside the data directory.
pub const NODE_FILE: &str = "node.toml";
/// Key directory inside the data directory (mode 0700).
pub const KEYS_DIR: &str = "keys";
/// Checkpoint signing key (C2SP note private key string), mode 0600.
pub const CHECKPOINT_KEY_FILE: &str = "checkpoint.key";
/// Seal secret (32 random bytes, hex), mode 0600.
pub const SEAL_KEY_FILE: &str = "seal.key";
/// The embedded database.
pub const DB_FILE: &str = "evident.db";
/// Lock file held (flock) by the one server using the directory.
pub const LOCK_FILE: &str = "evident.lock";

/// Errors opening or creating a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {dir} is locked: another evident server is using it (lock file {lock})"
    )]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error(
        "{dir} is not an evident data directory (no {NODE_FILE}); start `evident serve` once to create it"
    )]
    NotInitialized { dir: PathBuf },
    #[error(
        "data directory {dir} belongs to {field} {stored:?}, but the configuration says {configured:?}; \
         use the matching {field} or another data directory"
    )]
    IdentityMismatch {
        dir: PathBuf,
        field: &'static str,
        stored: String,
        configured: String,
    },
    #[error("{path}: {problem}")]
    BadFile { path: PathBuf, problem: String },
    #[error("cannot draw randomness from the operating system: {0}")]
    Random(String),
    #[error(
        "data directory {dir} keeps its log in {stored}, but the configuration says {configured}, \
         which holds no log of node {node_id:?}; to move the log there, stop the server and run \
         `evident migrate --from {dir} --to {configured}` first, then start with that storage"
    )]
    StorageMismatch {
        dir: PathBuf,
        node_id: String,
        stored: String,
        configured: String,
    },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("integrity state: {0}")]
    Guard(#[from] crate::guard::GuardError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `node.toml` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeIdentity {
    node_id: String,
    origin: String,
    /// Where the log lives: absent for the embedded database, else a PostgreSQL URL without
    /// its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    storage: Option<String>,
}

/// Where a node's log lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Storage {
    /// `evident.db` in the data directory.
    Embedded,
    /// A PostgreSQL database (the URL may carry a password: never printed as is).
    Postgres(String),
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Storage {
    /// Parses a `storage` setting (`embedded`, or a postgres:// URL).
    pub fn parse(setting: &str) -> Result<Storage, ConfigError> {
        if crate::config::is_embedded(setting) {
            Ok(Storage::Embedded)
        } else if evident_store::postgres::is_postgres_url(setting) {
            Ok(Storage::Postgres(setting.to_owned()))
        } else {
            Err(ConfigError::Invalid {
                field: "storage",
                message: format!(
                    "{:?} is neither `embedded` nor a postgres:// URL",
                    evident_store::postgres::redact_url(setting)
                ),
            })
        }
    }

    /// What `node.toml` records: `None` for embedded, the URL without password otherwise.
    fn recorded(&self) -> Option<String> {
        match self {
            Storage::Embedded => None,
            Storage::Postgres(url) => Some(evident_store::postgres::redact_url(url)),
        }
    }

    fn from_recorded(recorded: Option<&str>) -> Storage {
        match recorded {
            None => Storage::Embedded,
            Some(url) => Storage::Postgres(url.to_owned()),
        }
    }

    /// For messages: `the embedded database` or the URL without password.
    pub fn describe(&self) -> String {
        match self {
            Storage::Embedded => "the embedded database".to_owned(),
            Storage::Postgres(url) => evident_store::postgres::redact_url(url),
        }
    }
}

/// A node's identity and keys, as read from its data directory.
#[derive(Clone)]
pub struct NodeFiles {
    data_dir: PathBuf,
    node_id: String,
    origin: String,
    storage: Storage,
    signing: crate::keyring::SigningKeys,
    seals: SealEpochs,
}

impl std::fmt::Debug for NodeFiles {
    // Keys stay out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeFiles")
            .field("data_dir", &self.data_dir)
            .field("node_id", &self.node_id)
            .field("origin", &self.origin)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl NodeFiles {
    /// Reads an existing data directory without locking it or changing anything (for
    /// `evident verify --data-dir` and `evident keys` while a server runs).
    pub fn open_readonly(data_dir: &Path) -> Result<NodeFiles, NodeError> {
        let node_file = data_dir.join(NODE_FILE);
        if !node_file.exists() {
            return Err(NodeError::NotInitialized {
                dir: data_dir.to_owned(),
            });
        }
        let identity = read_identity(&node_file)?;
        let keys = data_dir.join(KEYS_DIR);
        let signer = read_signer(&keys.join(CHECKPOINT_KEY_FILE))?;
        let files = NodeFiles {
            data_dir: data_dir.to_owned(),
            storage: Storage::from_recorded(identity.storage.as_deref()),
            node_id: identity.node_id,
            origin: identity.origin,
            signing: crate::keyring::SigningKeys::load(&keys, signer)?,
            seals: crate::keyring::load_seal_epochs(&keys)?,
        };
        files.check_signer_name()?;
        Ok(files)
    }

    /// Creates a data directory for an existing node identity and keys (the destination of
    /// `evident migrate`): `dir` must not hold a node yet. The keys are written mode 0600.
    pub fn create_copy(
        dir: &Path,
        from: &NodeFiles,
        storage: Storage,
    ) -> Result<NodeFiles, NodeError> {
        crate::file_modes::create_private_dir(dir).map_err(io_err(dir))?;
        let _lock = lock_data_dir(dir)?;
        let node_file = dir.join(NODE_FILE);
        if node_file.exists() {
            return Err(NodeError::BadFile {
                path: node_file,
                problem: "the destination already holds a node; choose a new directory".to_owned(),
            });
        }
        let keys = dir.join(KEYS_DIR);
        create_private_dir(&keys)?;
        // Every key file (the rotated signing keys and seal epochs and their records too) is
        // copied as it is (a `SealKey` never gives its secret out).
        let source = from.data_dir.join(KEYS_DIR);
        for item in std::fs::read_dir(&source).map_err(io_err(&source))? {
            let item = item.map_err(io_err(&source))?;
            let path = item.path();
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            write_private_file(&keys.join(item.file_name()), &text)?;
        }
        let identity = NodeIdentity {
            node_id: from.node_id.clone(),
            origin: from.origin.clone(),
            storage: storage.recorded(),
        };
        let text = toml::to_string(&identity).map_err(|e| NodeError::BadFile {
            path: node_file.clone(),
            problem: e.to_string(),
        })?;
        write_private_file(&node_file, &text)?;
        Ok(NodeFiles {
            data_dir: dir.to_owned(),
            node_id: from.node_id.clone(),
            origin: from.origin.clone(),
            storage,
            signing: from.signing.clone(),
            seals: from.seals.clone(),
        })
    }

    /// Creates the directory, identity and keys on first start, or loads and checks them
    /// against `config`. The caller holds the directory lock.
    fn create_or_load(config: &ServerConfig) -> Result<NodeFiles, NodeError> {
        let dir = &config.data_dir;
        let origin = config.effective_origin();
        let node_file = dir.join(NODE_FILE);
        let keys = dir.join(KEYS_DIR);
        create_private_dir(&keys)?;

        let identity = if node_file.exists() {
            let stored = read_identity(&node_file)?;
            // Only a node id or origin set explicitly must match; the defaults follow the
            // stored ones, so a node keeps its identity without repeating it on every start.
            if let Some(configured) = &config.node_id {
                if *configured != stored.node_id {
                    return Err(NodeError::IdentityMismatch {
                        dir: dir.clone(),
                        field: "node_id",
                        stored: stored.node_id,
                        configured: configured.clone(),
                    });
                }
            }
            if let Some(configured) = &config.origin {
                if *configured != stored.origin {
                    return Err(NodeError::IdentityMismatch {
                        dir: dir.clone(),
                        field: "origin",
                        stored: stored.origin,
                        configured: configured.clone(),
                    });
                }
            }
            stored
        } else {
            NodeIdentity {
                node_id: config.effective_node_id().to_owned(),
                origin,
                storage: None,
            }
        };
        let configured = config.storage.as_deref().map(Storage::parse).transpose()?;

        let signer_path = keys.join(CHECKPOINT_KEY_FILE);
        let signer = if signer_path.exists() {
            read_signer(&signer_path)?
        } else {
            let signer = NoteSigner::from_seed(&identity.origin, random_bytes()?).map_err(|e| {
                NodeError::BadFile {
                    path: signer_path.clone(),
                    problem: format!("cannot create a signing key: {e}"),
                }
            })?;
            write_private_file(
                &signer_path,
                &format!("{}\n", signer.to_private_key_string()),
            )?;
            tracing::info!(path = %signer_path.display(), "created checkpoint signing key");
            signer
        };

        let seal_path = keys.join(SEAL_KEY_FILE);
        // A node whose seal key was rotated may have discarded its first secret.
        let rotated = keys.join(crate::keyring::SEAL_EPOCHS_FILE).exists();
        if !seal_path.exists() && !rotated {
            let secret: [u8; 32] = random_bytes()?;
            write_private_file(&seal_path, &format!("{}\n", hex::encode(secret)))?;
            tracing::info!(path = %seal_path.display(), "created seal key");
        }
        let seals = crate::keyring::load_seal_epochs(&keys)?;
        let signing = crate::keyring::SigningKeys::load(&keys, signer)?;

        let mut identity = identity;
        let existed = node_file.exists();
        let storage = if !existed {
            let storage = configured.unwrap_or(Storage::Embedded);
            identity.storage = storage.recorded();
            storage
        } else {
            let recorded = Storage::from_recorded(identity.storage.as_deref());
            match configured {
                None => recorded,
                Some(configured) if configured.recorded() == recorded.recorded() => configured,
                Some(configured) => {
                    // Another storage: only where this node's log already is (migrated).
                    let holds_log = match &configured {
                        Storage::Postgres(url) => {
                            let store = PostgresStore::open(url, &identity.node_id)?;
                            store.node_record()?.is_some_and(|r| {
                                r.verifier_key == signing.original().verifier().to_vkey_string()
                            })
                        }
                        Storage::Embedded => false,
                    };
                    if !holds_log {
                        return Err(NodeError::StorageMismatch {
                            dir: dir.clone(),
                            node_id: identity.node_id,
                            stored: recorded.describe(),
                            configured: configured.describe(),
                        });
                    }
                    tracing::info!(
                        from = %recorded.describe(),
                        to = %configured.describe(),
                        "the data directory now uses the storage its log was migrated to"
                    );
                    identity.storage = configured.recorded();
                    configured
                }
            }
        };
        if !existed || identity.storage != read_identity(&node_file)?.storage {
            // Written last: its presence means the directory is complete.
            let text = toml::to_string(&identity).map_err(|e| NodeError::BadFile {
                path: node_file.clone(),
                problem: e.to_string(),
            })?;
            write_private_file(&node_file, &text)?;
        }

        crate::file_modes::secure_data_dir(dir);
        let files = NodeFiles {
            data_dir: dir.clone(),
            node_id: identity.node_id,
            origin: identity.origin,
            storage,
            signing,
            seals,
        };
        files.check_signer_name()?;
        Ok(files)
    }

    fn check_signer_name(&self) -> Result<(), NodeError> {
        if self.signing.newest().name() != self.origin {
            return Err(NodeError::BadFile {
                path: self.data_dir.join(KEYS_DIR).join(CHECKPOINT_KEY_FILE),
                problem: format!(
                    "signing key is named {:?} but the node's origin is {:?}",
                    self.signing.newest().name(),
                    self.origin
                ),
            });
        }
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The checkpoint origin, also the signing key's name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The node's current signing key (the newest, after a rotation).
    pub fn signer(&self) -> &NoteSigner {
        self.signing.newest()
    }

    /// Every signing key the node has had, and which of them sign now.
    pub fn signing(&self) -> &crate::keyring::SigningKeys {
        &self.signing
    }

    /// The keys that sign at this moment (both keys during a rotation's transition).
    pub fn signers_now(&self) -> Vec<NoteSigner> {
        self.signing.active(crate::now_ms())
    }

    /// The public key of the current signing key.
    pub fn verifier(&self) -> NoteVerifier {
        self.signing.newest().verifier()
    }

    /// The public keys of every signing key the node has had (its original key first): what
    /// opens any checkpoint it ever signed.
    pub fn verifiers(&self) -> &[NoteVerifier] {
        self.signing.verifiers()
    }

    /// The seal secret of the current epoch, which seals new entries.
    pub fn seal_key(&self) -> &SealKey {
        &self.seals.current().key
    }

    /// The seal secrets of every epoch still kept, for verification.
    pub fn seal_epochs(&self) -> &SealEpochs {
        &self.seals
    }

    /// Path of the embedded database.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }

    /// Where this node's log lives.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Opens this node's store (the embedded database or PostgreSQL, as recorded). Safe
    /// while a server runs: the database arbitrates concurrent access, and no writer lease is
    /// taken.
    pub fn open_store(&self) -> Result<Arc<dyn Store>, NodeError> {
        self.open_store_with_cache(evident_store::sqlite::DEFAULT_WRITER_CACHE_BYTES)
    }

    /// [`Self::open_store`] with the embedded store's writer page cache of `cache_bytes`.
    fn open_store_with_cache(&self, cache_bytes: usize) -> Result<Arc<dyn Store>, NodeError> {
        match &self.storage {
            Storage::Embedded => {
                // Created private: SQLite gives its WAL and shared-memory files the mode of
                // the database file.
                let db = self.db_path();
                crate::file_modes::create_private_file(&db).map_err(io_err(&db))?;
                Ok(Arc::new(
                    evident_store::sqlite::SqliteStore::open_with_writer_cache(&db, cache_bytes)?,
                ))
            }
            Storage::Postgres(url) => Ok(Arc::new(PostgresStore::open(url, &self.node_id)?)),
        }
    }

    /// The identity PostgreSQL records for this node.
    pub fn node_record(&self) -> NodeRecord {
        NodeRecord {
            node_id: self.node_id.clone(),
            origin: self.origin.clone(),
            // The original key: a rotation does not change the node's identity.
            verifier_key: self.signing.original().verifier().to_vkey_string(),
            created_at: crate::now_ms(),
        }
    }

    /// Opens the store to write: on PostgreSQL, records (or checks) this node's identity and,
    /// when `lease`, takes the node's writer lease, refusing when another process holds it.
    /// Returns the store and, on PostgreSQL with `lease`, the lease the sequencer keeps.
    fn open_store_to_write(
        &self,
        lease: bool,
        config: &ServerConfig,
    ) -> Result<StoreToWrite, NodeError> {
        match &self.storage {
            Storage::Embedded => Ok((
                self.open_store_with_cache(config.sqlite_writer_cache_bytes)?,
                None,
            )),
            Storage::Postgres(url) => {
                let store = PostgresStore::open(url, &self.node_id)?;
                if lease {
                    store.acquire_lease()?;
                }
                store.register_node(&self.node_record())?;
                let store = Arc::new(store);
                let held: Option<Arc<dyn WriterLease>> = lease.then(|| store.clone() as _);
                Ok((store, held))
            }
        }
    }
}

/// A store opened to write, with the writer lease it holds where that can be lost.
type StoreToWrite = (Arc<dyn Store>, Option<Arc<dyn WriterLease>>);

/// Writes the integrity findings kept in the data directory (found before the log could take
/// them) into the log, as CRITICAL events, and forgets those written.
fn record_pending_findings(guard: &Guard, sequencer: &Sequencer) {
    let pending = guard.pending();
    if pending.is_empty() {
        return;
    }
    let inputs: Vec<evident_core::EventInput> =
        pending.iter().map(crate::audit::integrity_event).collect();
    match sequencer.append_blocking(inputs) {
        Ok(receipts) => {
            tracing::warn!(
                findings = receipts.len(),
                "recorded integrity findings made while the log could not take them"
            );
            if let Err(e) = guard.recorded(receipts.len()) {
                tracing::error!(error = %e, "cannot forget the recorded integrity findings");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot record the pending integrity findings"),
    }
}

/// What a damaged log appears to hold: one past its newest readable row (0 when none is).
fn apparent_size(store: &dyn Store) -> u64 {
    match crate::scan::newest_entry(store) {
        Ok(Some(entry)) => entry.event.seq.saturating_add(1),
        _ => 0,
    }
}

fn read_identity(path: &Path) -> Result<NodeIdentity, NodeError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    toml::from_str(&text).map_err(|e| NodeError::BadFile {
        path: path.to_owned(),
        problem: e.message().to_owned(),
    })
}

pub(crate) fn read_signer(path: &Path) -> Result<NoteSigner, NodeError> {
    warn_if_readable_by_others(path);
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    NoteSigner::from_private_key_string(text.trim()).map_err(|e| NodeError::BadFile {
        path: path.to_owned(),
        problem: format!("not a signing key: {e}"),
    })
}

pub(crate) fn read_seal_key(path: &Path) -> Result<SealKey, NodeError> {
    warn_if_readable_by_others(path);
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let secret = hex::decode(text.trim()).map_err(|_| NodeError::BadFile {
        path: path.to_owned(),
        problem: "expected the seal secret as hex digits".to_owned(),
    })?;
    seal_key_from(path, &secret)
}

fn seal_key_from(path: &Path, secret: &[u8]) -> Result<SealKey, NodeError> {
    SealKey::new(secret).map_err(|e| NodeError::BadFile {
        path: path.to_owned(),
        problem: e.to_string(),
    })
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], NodeError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| NodeError::Random(e.to_string()))?;
    Ok(out)
}

fn create_private_dir(path: &Path) -> Result<(), NodeError> {
    crate::file_modes::create_private_dir_all(path).map_err(io_err(path))
}

pub(crate) fn write_private_file(path: &Path, contents: &str) -> Result<(), NodeError> {
    // A directory that cannot be opened to sync (not every platform allows it) does not fail
    // the write.
    crate::file_modes::write_private_file_durably(path, contents, DirSync::BestEffort)
        .map_err(|WriteFailed { path, source }| NodeError::Io { path, source })
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "key file is accessible to other users; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Takes `dir`'s exclusive lock (as a server does), so that no server starts on it while the
/// returned file is held; fails when one runs (for `evident migrate`).
pub fn lock_existing_data_dir(dir: &Path) -> Result<File, NodeError> {
    lock_data_dir(dir)
}

/// Takes the directory's exclusive lock, or says who holds it.
fn lock_data_dir(dir: &Path) -> Result<File, NodeError> {
    use fs4::fs_std::FileExt;
    let lock = dir.join(LOCK_FILE);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(crate::file_modes::PRIVATE_FILE_MODE);
    }
    let file = options.open(&lock).map_err(io_err(&lock))?;
    match file.try_lock_exclusive() {
        Ok(true) => Ok(file),
        Ok(false) => Err(NodeError::Locked {
            dir: dir.to_owned(),
            lock,
        }),
        Err(source) => Err(NodeError::Io { path: lock, source }),
    }
}

/// A started node: it holds the data directory's lock, its store and its sequencer thread.
pub struct Node {
    config: ServerConfig,
    files: NodeFiles,
    store: Arc<dyn Store>,
    sequencer: Sequencer,
    metrics: Arc<Metrics>,
    guard: Arc<Guard>,
    self_check: crate::self_check::SelfCheck,
    // Held for the node's lifetime; the OS releases the flock when it is dropped or the
    // process dies, so a crash never leaves a stale lock behind.
    _lock: File,
}

impl Node {
    /// Validates `config`, creates the data directory on first start (identity, keys,
    /// database) or loads and checks it, locks it, and starts the sequencer from the stored
    /// chain head (this is crash recovery). Blocking: call from a blocking thread.
    pub fn open(config: ServerConfig) -> Result<Node, NodeError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        crate::file_modes::create_private_dir(&dir).map_err(io_err(&dir))?;
        let lock = lock_data_dir(&dir)?;
        let mut files = NodeFiles::create_or_load(&config)?;
        let (store, lease) = files.open_store_to_write(true, &config)?;
        let keys = files.data_dir().join(KEYS_DIR);
        if crate::keyring::finish_interrupted_seal_rotation(&keys, &files.seals, &*store)? {
            files.seals = crate::keyring::load_seal_epochs(&keys)?;
        }
        Self::start(config, files, store, lease, lock)
    }

    /// Creates the data directory if needed and returns its identity, without starting a
    /// server (for `evident keys create` before the first `serve`). Fails if a server holds
    /// the directory.
    pub fn init(config: &ServerConfig) -> Result<NodeFiles, NodeError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        crate::file_modes::create_private_dir(&dir).map_err(io_err(&dir))?;
        let _lock = lock_data_dir(&dir)?;
        let files = NodeFiles::create_or_load(config)?;
        // Creates the database and its schema (and on PostgreSQL records the node).
        files.open_store_to_write(false, config)?;
        Ok(files)
    }

    /// [`Self::open`] with the store wrapped by `wrap` (tests inject faults this way).
    #[cfg(test)]
    pub(crate) fn open_wrapped(
        config: ServerConfig,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        crate::file_modes::create_private_dir(&dir).map_err(io_err(&dir))?;
        let lock = lock_data_dir(&dir)?;
        let files = NodeFiles::create_or_load(&config)?;
        let (store, lease) = files.open_store_to_write(true, &config)?;
        Self::start(config, files, wrap(store), lease, lock)
    }

    fn start(
        config: ServerConfig,
        files: NodeFiles,
        store: Arc<dyn Store>,
        lease: Option<Arc<dyn WriterLease>>,
        lock: File,
    ) -> Result<Node, NodeError> {
        let metrics = Arc::new(Metrics::new());
        let settings = SequencerSettings {
            node_id: files.node_id().to_owned(),
            origin: files.origin().to_owned(),
            checkpoint_every_events: config.checkpoint_every_events,
            checkpoint_every: std::time::Duration::from_millis(config.checkpoint_every_ms),
            max_group_commit_events: config.max_group_commit_events,
        };
        let guard = Arc::new(Guard::open(
            files.data_dir(),
            files.verifiers().to_vec(),
            metrics.clone(),
        )?);
        let keys = CheckKeys {
            seal_key: files.seal_epochs(),
            node_id: files.node_id(),
        };
        // Entries this process did not write are checked before anything is built on them.
        let sequencer = match check_before_extending(&*store, &keys, &guard, DetectedBy::Startup)? {
            Ok(head) => {
                let sequencer = Sequencer::start(
                    store.clone(),
                    lease,
                    files.seal_epochs().clone(),
                    files.signing().clone(),
                    settings,
                    metrics.clone(),
                    Resume {
                        guard: guard.clone(),
                        head,
                    },
                )?;
                record_pending_findings(&guard, &sequencer);
                sequencer
            }
            // Damaged stored data: serve it read-only (queries, exports, verification find
            // out what happened), but never seal or sign on top of it.
            Err(damage) => {
                tracing::error!(
                    problem = %damage.describe(),
                    "the stored log failed its start-up checks: serving it read-only; GET \
                     /api/v1/verify/status says what was found, `evident verify` locates every \
                     problem"
                );
                guard.report(damage);
                Sequencer::read_only(guard.clone(), apparent_size(&*store), &metrics)
            }
        };
        tracing::info!(
            data_dir = %files.data_dir().display(),
            node_id = files.node_id(),
            size = sequencer.size(),
            "node started"
        );
        Ok(Node {
            config,
            files,
            store,
            sequencer,
            metrics,
            guard,
            self_check: crate::self_check::SelfCheck::default(),
            _lock: lock,
        })
    }

    /// The background verifier's state.
    pub fn self_check(&self) -> &crate::self_check::SelfCheck {
        &self.self_check
    }

    /// The node's signed state, read-only state and pending integrity findings.
    pub fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn files(&self) -> &NodeFiles {
        &self.files
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops the sequencer after it committed everything already queued and signed a final
    /// checkpoint. Blocking.
    pub fn shutdown(&self) {
        self.sequencer.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> ServerConfig {
        ServerConfig {
            data_dir: dir.join("data"),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn first_start_creates_identity_and_private_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let node = Node::open(c.clone()).unwrap();
        let dir = &c.data_dir;
        assert!(dir.join(NODE_FILE).exists());
        assert!(dir.join(DB_FILE).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(dir.join(KEYS_DIR)), 0o700);
            assert_eq!(mode(dir.join(KEYS_DIR).join(CHECKPOINT_KEY_FILE)), 0o600);
            assert_eq!(mode(dir.join(KEYS_DIR).join(SEAL_KEY_FILE)), 0o600);
        }
        let vkey = node.files().verifier().to_vkey_string();
        assert!(vkey.starts_with("evident/node-1+"), "{vkey}");
        node.shutdown();
        drop(node);

        // A restart loads the same keys.
        let again = Node::open(c.clone()).unwrap();
        assert_eq!(again.files().verifier().to_vkey_string(), vkey);
        again.shutdown();
        drop(again);

        let ro = NodeFiles::open_readonly(dir).unwrap();
        assert_eq!(ro.verifier().to_vkey_string(), vkey);
        assert_eq!(ro.node_id(), "node-1");
    }

    #[test]
    fn a_second_node_on_the_same_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let node = Node::open(c.clone()).unwrap();
        let err = Node::open(c.clone()).err().unwrap();
        assert!(matches!(err, NodeError::Locked { .. }), "{err}");
        assert!(err.to_string().contains(&c.data_dir.display().to_string()));
        // Reading the identity needs no lock.
        NodeFiles::open_readonly(&c.data_dir).unwrap();
        node.shutdown();
    }

    #[test]
    fn a_different_node_id_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        Node::init(&c).unwrap();
        let other = ServerConfig {
            node_id: Some("node-2".to_owned()),
            ..c.clone()
        };
        let err = Node::open(other).err().unwrap();
        let text = err.to_string();
        assert!(text.contains("node-1") && text.contains("node-2"), "{text}");
    }

    #[test]
    fn a_node_keeps_its_id_without_repeating_it() {
        let tmp = tempfile::tempdir().unwrap();
        let created = ServerConfig {
            node_id: Some("edge-7".to_owned()),
            ..config(tmp.path())
        };
        Node::init(&created).unwrap();
        // Started again with no node id configured: the stored one, not the default.
        let node = Node::open(config(tmp.path())).unwrap();
        assert_eq!(node.files().node_id(), "edge-7");
        assert_eq!(node.files().origin(), "evident/edge-7");
        node.shutdown();
    }

    #[test]
    fn readonly_open_of_a_missing_dir_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let err = NodeFiles::open_readonly(&tmp.path().join("nope")).unwrap_err();
        assert!(matches!(err, NodeError::NotInitialized { .. }), "{err}");
    }
}
