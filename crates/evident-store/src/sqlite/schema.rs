//! The SQLite schema of a node's log and its migrations, keyed by `PRAGMA user_version`: the
//! append-only `events`, `merkle_nodes` and `checkpoints` tables with the triggers that refuse
//! any UPDATE, DELETE or overwriting INSERT of them, the indexes that serve every query filter
//! in sequence order, and the mutable `api_keys` table.

use rusqlite::{Connection, TransactionBehavior};

/// The schema version this build writes and reads.
pub(super) const SCHEMA_VERSION: i64 = 7;

/// Version 1. Notes on choices:
/// - `STRICT` tables: SQLite refuses a value of the wrong type instead of storing it, so a
///   row's columns hold what the decoder expects unless someone rebuilt the table.
/// - `events.seq` is the rowid: the table is clustered in log order, and every secondary index
///   ends with it implicitly, so `(column)` is `(column, seq)`: an equality filter walks its
///   index in sequence order, either way, from any keyset cursor, with no sort.
/// - `ip` is 16 bytes (see `codec::IpBytes`) so a CIDR block of either family is one range
///   of that column.
/// - The indexes of high-cardinality columns lead with a bucket of `seq` (see below): with
///   plain `(actor_id)` indexes every row of a commit dirties another page of each, and at ten
///   million rows ingestion slowed several times over.
/// - `severity` is a rank (0 debug … 7 emergency) so a minimum is `>=`.
/// - Every index costs on the ingest path (a few µs per row each, most for the random ones),
///   so there are no more than the filters need:
///   - none on `recorded_at`: it never decreases along `seq` (append refuses otherwise), so a
///     time range becomes a sequence range by a binary search over the primary key;
///   - none on `node_id`: a log holds one node (append refuses another), so a node filter
///     matches all or nothing;
///   - partial ones on severity, outcome and actor kind (their rare values only);
///   - none on `id`, `user_agent` or `context`: no filter uses them (`occurred_at` got one in
///     version 6, with its filter).
pub(super) const V1: &str = r#"
-- `ON CONFLICT FAIL` here and in merkle_nodes, and RAISE(FAIL) in their INSERT triggers,
-- rather than the default ABORT: for a one-row INSERT the outcome is the same (every check
-- runs before anything is written, and `append` rolls its whole transaction back on any
-- error), but an INSERT that has a trigger and may ABORT makes SQLite copy each page it
-- touches into a statement journal first, which cost a quarter of ingestion throughput.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY ON CONFLICT FAIL,
    id           BLOB NOT NULL ON CONFLICT FAIL,
    recorded_at  INTEGER NOT NULL ON CONFLICT FAIL,
    occurred_at  INTEGER,
    node_id      TEXT NOT NULL ON CONFLICT FAIL,
    tenant       TEXT NOT NULL ON CONFLICT FAIL,
    actor_id     TEXT NOT NULL ON CONFLICT FAIL,
    actor_kind   TEXT NOT NULL ON CONFLICT FAIL,
    ip           BLOB,
    user_agent   TEXT,
    action       TEXT NOT NULL ON CONFLICT FAIL,
    target_kind  TEXT NOT NULL ON CONFLICT FAIL,
    target_id    TEXT NOT NULL ON CONFLICT FAIL,
    outcome      TEXT NOT NULL ON CONFLICT FAIL,
    severity     INTEGER NOT NULL ON CONFLICT FAIL,
    context      TEXT NOT NULL ON CONFLICT FAIL,
    hash         BLOB NOT NULL ON CONFLICT FAIL,
    seal         BLOB NOT NULL ON CONFLICT FAIL
) STRICT;

-- High-cardinality columns, bucketed by 8192 entries: new entries land only in the newest
-- bucket's few pages, so a commit dirties (and writes to the WAL) a handful of index pages
-- instead of one random page per row of a large index. A query reads bucket by bucket.
-- `seq >> 13` must match `query::BUCKET` exactly.
CREATE INDEX events_by_actor  ON events (seq >> 13, actor_id);
CREATE INDEX events_by_target ON events (seq >> 13, target_id);
CREATE INDEX events_by_ip     ON events (seq >> 13, ip);
-- Columns with few distinct values: each value's run grows at its end, a few pages a commit.
CREATE INDEX events_by_action ON events (action);
CREATE INDEX events_by_tenant ON events (tenant);
-- Columns with a handful of values: only their rare values are indexed. A filter on a common
-- value (success, user, info) matches densely, so reading the table in order finds a page at
-- once; a filter on a rare one reads these small indexes, which cost ingestion only for their
-- rows.
CREATE INDEX events_severe      ON events (severity)   WHERE severity >= 4;
CREATE INDEX events_not_success ON events (outcome)    WHERE outcome <> 'success';
CREATE INDEX events_not_user    ON events (actor_kind) WHERE actor_kind <> 'user';

CREATE TABLE merkle_nodes (
    level INTEGER NOT NULL ON CONFLICT FAIL,
    idx   INTEGER NOT NULL ON CONFLICT FAIL,
    hash  BLOB NOT NULL ON CONFLICT FAIL,
    PRIMARY KEY (level, idx) ON CONFLICT FAIL
) STRICT, WITHOUT ROWID;

CREATE TABLE checkpoints (
    size       INTEGER PRIMARY KEY,
    root       BLOB NOT NULL,
    note       TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- Integrity layer 1: the log refuses to be edited. UPDATE and DELETE are refused outright.
-- INSERT is refused where it would land on a stored row: `INSERT OR REPLACE` deletes the old
-- row without firing DELETE triggers (unless a connection enables recursive_triggers), so
-- without these a replace would rewrite history. An entry may only follow the last one.
-- The retention pruner (a later issue) will delete old `events` rows through a flagged path:
-- a one-row `prune_permit` table that its own transaction fills and empties, with the events
-- DELETE trigger skipping rows the permit covers
-- (`WHEN NOT EXISTS (SELECT 1 FROM prune_permit WHERE OLD.seq < below_seq)`).
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'evident: events are append-only: UPDATE refused'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'evident: events are append-only: DELETE refused'); END;
CREATE TRIGGER events_no_replace BEFORE INSERT ON events
WHEN NEW.seq <= (SELECT max(seq) FROM events)
BEGIN SELECT RAISE(FAIL, 'evident: events are append-only: an entry can only follow the last one'); END;
CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'evident: merkle_nodes are append-only: UPDATE refused'); END;
CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'evident: merkle_nodes are append-only: DELETE refused'); END;
CREATE TRIGGER merkle_nodes_no_replace BEFORE INSERT ON merkle_nodes
WHEN EXISTS (SELECT 1 FROM merkle_nodes WHERE level = NEW.level AND idx = NEW.idx)
BEGIN SELECT RAISE(FAIL, 'evident: merkle_nodes are append-only: a stored node cannot be replaced'); END;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'evident: checkpoints are append-only: UPDATE refused'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'evident: checkpoints are append-only: DELETE refused'); END;
CREATE TRIGGER checkpoints_no_replace BEFORE INSERT ON checkpoints
WHEN EXISTS (SELECT 1 FROM checkpoints WHERE size = NEW.size)
BEGIN SELECT RAISE(ABORT, 'evident: checkpoints are append-only: a stored checkpoint cannot be replaced'); END;

-- Mutable on purpose: revocation, expiry and last use are updated in place.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    secret_hash  BLOB NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    tenant       TEXT,
    label        TEXT,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    expires_at   INTEGER,
    last_used_at INTEGER,
    last_used_ip TEXT
) STRICT;
"#;

/// Version 2: retention. The `prune_anchor` row (where the kept log starts, see
/// [`crate::PruneAnchor`]) and the one path by which an entry is ever deleted: the pruner's
/// own transaction fills the one-row `prune_permit` table, deletes, and empties it again
/// before it commits, and the events DELETE trigger lets a row go only while a permit covers
/// it and the permit does not reach past the recorded anchor. Chosen over dropping and
/// recreating the trigger inside the pruner's transaction: the trigger is never absent (a
/// schema change would also invalidate every connection's prepared statements), and a permit
/// reaches only the rows below the anchor that was persisted first. `merkle_nodes` and
/// `checkpoints` stay undeletable: proofs for kept entries and consistency proofs from older
/// checkpoints need them.
pub(super) const V2: &str = r#"
CREATE TABLE prune_anchor (
    one             INTEGER PRIMARY KEY CHECK (one = 1),
    from_seq        INTEGER NOT NULL,
    below_seq       INTEGER NOT NULL CHECK (below_seq >= 1),
    hash            BLOB NOT NULL,
    seal            BLOB NOT NULL,
    recorded_at     INTEGER NOT NULL,
    checkpoint_size INTEGER NOT NULL,
    checkpoint_note TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    event_seq       INTEGER NOT NULL
) STRICT;
CREATE TRIGGER prune_anchor_forward BEFORE UPDATE ON prune_anchor
WHEN NEW.below_seq <= OLD.below_seq
BEGIN SELECT RAISE(ABORT, 'evident: the retention anchor only moves forward'); END;
CREATE TRIGGER prune_anchor_no_delete BEFORE DELETE ON prune_anchor
BEGIN SELECT RAISE(ABORT, 'evident: the retention anchor cannot be deleted'); END;

CREATE TABLE prune_permit (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    below_seq INTEGER NOT NULL
) STRICT;

DROP TRIGGER events_no_delete;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN NOT EXISTS (
    SELECT 1 FROM prune_permit p, prune_anchor a
    WHERE OLD.seq < p.below_seq AND p.below_seq <= a.below_seq
)
BEGIN SELECT RAISE(ABORT, 'evident: events are append-only: DELETE refused (only the retention pruner deletes, below its anchor)'); END;
"#;

/// Version 3: who appended each entry (entry encoding version 2, docs/FORMAT.md §3). A new
/// nullable column: SQLite adds it to the table's definition only, so the rows already stored
/// are not rewritten and read back with NULL, which is what they are: version-1 entries, whose
/// hashes cover no such field. Every entry appended from now on fills it. No index: no query
/// filter uses it.
const V3: &str = r#"
ALTER TABLE events ADD COLUMN appended_by TEXT;
"#;

/// Version 4: consumer cursors. One row per consumer of the committed log (a forwarder, the
/// publisher, a webhook endpoint …): the next sequence number it has to deliver and its small
/// state. Mutable (a cursor moves on every delivery), never part of what is verified: losing
/// a row re-delivers from the start, which at-least-once delivery allows.
const V4: &str = r#"
CREATE TABLE consumer_cursors (
    consumer   TEXT PRIMARY KEY,
    next_seq   INTEGER NOT NULL CHECK (next_seq >= 0),
    state      TEXT,
    updated_at INTEGER NOT NULL
) STRICT;
"#;

/// Version 5: witnessing (C2SP tlog-witness). `witnessed_checkpoints`: the latest checkpoint
/// this node's witness cosigned per peer log origin, replaced only by a consistent successor.
/// `cosignatures`: the cosignatures peers returned for this node's checkpoints, by size and
/// witness. Neither is part of what is verified: both are checked again wherever used.
const V5: &str = r#"
CREATE TABLE witnessed_checkpoints (
    origin      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL CHECK (size >= 0),
    root        BLOB NOT NULL CHECK (length(root) = 32),
    signed_note TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE cosignatures (
    size        INTEGER NOT NULL CHECK (size >= 0),
    witness     TEXT NOT NULL,
    line        TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (size, witness)
) STRICT;
"#;

/// Version 6: the `occurred_from` / `occurred_to` filters (when the client says the event
/// happened). Nothing is backfilled because nothing needs to be: `occurred_at` has been a
/// column since version 1, filled by every INSERT from the entry's event, and it is the very
/// value the entry's hash covers (rows are decoded from their columns and verified), so the
/// index built here covers every entry already stored, of either encoding version. Bucketed
/// like the high-cardinality indexes: client clocks are close to log order but not in it, and
/// a plain index would take new rows at scattered pages. Partial: an entry that states no
/// occurred_at is never matched by an occurred_at filter, and costs the index nothing.
/// `seq >> 13` must match `query::BUCKET` exactly.
const V6: &str = r#"
CREATE INDEX events_by_occurred ON events (seq >> 13, occurred_at) WHERE occurred_at IS NOT NULL;
"#;

/// Version 7: histograms at scale (issue 15).
/// - The event counts (see `counts.rs`): entries per bucket of `recorded_at` (`width` 100 ms,
///   1 s, 1 min, 1 h or 1 d, `start` a multiple of it), tenant, action, outcome and severity, and
///   the position in the log up to which they are kept. Derived and mutable, never part of
///   what is verified: rebuilt from the log if lost (a log migrated to this version starts at
///   position 0 and is counted in the background). Clustered by `(width, start)` so that a
///   histogram reads one run of rows per span of time. Beside them, the same per IPv4 /16
///   and IPv6 /32 network (`event_counts_by_net`), for charts of an address block.
/// - The bucketed indexes (actor, target, address, occurred_at) carry `seq` and `severity`
///   after their column: a histogram of such a filter then reads the index alone (its entries'
///   sequence numbers give their time buckets, see `counts::tally`), where reading each
///   match's row of the table cost ~20 µs a match at 10M entries. `seq` is written out so that
///   one value's entries stay in sequence order (the rowid alone would come after
///   `severity`). The actor and target indexes also carry the address: an actor or a target
///   combined with an address or block (who, or what, from where: a common investigation)
///   is then checked on the index entry too, where each match's row cost ~20 µs at 10M
///   (17 bytes more per entry of those two). Rebuilding them reads the table once (tens of
///   seconds at 10M entries).
const V7: &str = r#"
DROP INDEX events_by_actor;
DROP INDEX events_by_target;
DROP INDEX events_by_ip;
DROP INDEX events_by_occurred;
CREATE INDEX events_by_actor  ON events (seq >> 13, actor_id, seq, severity, ip);
CREATE INDEX events_by_target ON events (seq >> 13, target_id, seq, severity, ip);
CREATE INDEX events_by_ip     ON events (seq >> 13, ip, seq, severity);
CREATE INDEX events_by_occurred ON events (seq >> 13, occurred_at, seq, severity)
    WHERE occurred_at IS NOT NULL;

CREATE TABLE event_counts (
    width    INTEGER NOT NULL,
    start    INTEGER NOT NULL,
    tenant   TEXT NOT NULL,
    action   TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    severity INTEGER NOT NULL,
    n        INTEGER NOT NULL CHECK (n >= 0),
    PRIMARY KEY (width, start, tenant, action, outcome, severity)
) STRICT, WITHOUT ROWID;

-- Per network, for a chart of an address block alone: IPv4 /16 and IPv6 /32 networks (`net`
-- is the entry's 16-byte address with the rest zeroed, see `counts::network`).
CREATE TABLE event_counts_by_net (
    width    INTEGER NOT NULL,
    start    INTEGER NOT NULL,
    net      BLOB NOT NULL CHECK (length(net) = 16),
    severity INTEGER NOT NULL,
    n        INTEGER NOT NULL CHECK (n >= 0),
    PRIMARY KEY (width, start, net, severity)
) STRICT, WITHOUT ROWID;

CREATE TABLE event_counts_position (
    one      INTEGER PRIMARY KEY CHECK (one = 1),
    next_seq INTEGER NOT NULL CHECK (next_seq >= 0)
) STRICT;
"#;

/// What a migration found wrong.
#[derive(Debug)]
pub(super) enum MigrateError {
    Sql(rusqlite::Error),
    /// The file was written by a newer build.
    TooNew(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> MigrateError {
        MigrateError::Sql(e)
    }
}

/// Brings the schema to [`SCHEMA_VERSION`], in one immediate transaction so that two processes
/// opening a new file at once cannot both create it.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(MigrateError::TooNew(version));
    }
    if version < 1 {
        tx.execute_batch(V1)?;
    }
    if version < 2 {
        tx.execute_batch(V2)?;
    }
    if version < 3 {
        tx.execute_batch(V3)?;
    }
    if version < 4 {
        tx.execute_batch(V4)?;
    }
    if version < 5 {
        tx.execute_batch(V5)?;
    }
    if version < 6 {
        tx.execute_batch(V6)?;
    }
    if version < 7 {
        tx.execute_batch(V7)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}
