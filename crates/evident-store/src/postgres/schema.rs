//! The PostgreSQL schema of Evident and its migrations: every table in the `evident` schema,
//! rows keyed by `node_id` so that several nodes share one database, the triggers that refuse
//! UPDATE, DELETE and TRUNCATE of the log (DELETE only passes for the retention pruner's
//! transaction-local flag), the indexes that serve every query filter, and the documented
//! grant model. Migrations run under a transaction-scoped advisory lock so that nodes starting
//! at once on a new database create it once.
//!
//! # Grant model
//!
//! Three roles, of which only the first may change the schema:
//!
//! - the **owner** (e.g. `evident_owner`) owns the `evident` schema and its tables and
//!   triggers. It is used once per upgrade: `evident serve` (or any command that opens the
//!   store) with the owner's URL creates or migrates the schema. A table owner can disable
//!   triggers, so the service never runs as the owner.
//! - the **service** role (`evident_service`), the one `evident serve` runs as day to day:
//!   `INSERT` and `SELECT` on the log tables, plus `UPDATE` of `api_keys` (revocation,
//!   expiry, last use are updated in place). No `UPDATE`, `DELETE` or `TRUNCATE` on the log.
//! - the **pruner** (`evident_pruner`, the role a node with retention runs as): the service's
//!   grants plus `DELETE` on `events` and writing `prune_anchor`; its transaction sets
//!   `SET LOCAL evident.pruning = 'on'`, without which the triggers refuse a DELETE anyway.
//!
//! ```sql
//! CREATE ROLE evident_owner LOGIN PASSWORD '…';
//! CREATE DATABASE evident OWNER evident_owner;
//! -- connected to database evident, as evident_owner, after the first start created the schema:
//! CREATE ROLE evident_service LOGIN PASSWORD '…';
//! GRANT USAGE ON SCHEMA evident TO evident_service;
//! GRANT SELECT, INSERT ON evident.events, evident.merkle_nodes, evident.checkpoints,
//!       evident.nodes TO evident_service;
//! GRANT SELECT, INSERT, UPDATE ON evident.api_keys, evident.consumer_cursors,
//!       evident.witnessed_checkpoints, evident.cosignatures TO evident_service;
//! GRANT SELECT ON evident.schema_version, evident.prune_anchor TO evident_service;
//! CREATE ROLE evident_pruner LOGIN PASSWORD '…' IN ROLE evident_service;
//! GRANT INSERT, UPDATE ON evident.prune_anchor TO evident_pruner;
//! GRANT DELETE ON evident.events TO evident_pruner;
//! ```
//!
//! What this protects against, honestly: the triggers stop any client that does not own the
//! tables from editing or removing history, whatever its grants (`evident.pruning` is an
//! ordinary setting anyone can set, so the flag alone is no boundary: the missing DELETE
//! grant is). A database superuser or the owner can still disable triggers; that is the
//! stronger attacker the hash chain, the seals and the signed checkpoints detect.

use postgres::Transaction;

/// The schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: i32 = 7;

/// Advisory lock key (transaction-scoped) serializing schema migrations: "evident" in ASCII.
const MIGRATION_LOCK: i64 = 0x0065_7669_6465_6e74;

/// Version 1. Notes on choices:
/// - Text columns that filters compare use `COLLATE "C"`: byte order, so that an action
///   prefix `p` is the range `[p., p/)` and results do not depend on the server's locale.
/// - `ip` is 16 bytes (IPv4 as its IPv4-mapped IPv6 address), as in the embedded store: a
///   CIDR block of either family is one range of the column.
/// - `severity` is a rank (0 debug … 7 emergency) so a minimum is `>=`.
/// - Every index on `events` leads with `node_id` and ends with `seq`: an equality filter
///   reads its run in sequence order from any keyset cursor, with no sort. Merkle node hashes
///   live apart from events (`merkle_nodes`), so that retention can delete old entries and
///   keep the nodes that proofs for kept entries and older checkpoints need.
pub(super) const V1: &str = r#"
CREATE SCHEMA IF NOT EXISTS evident;

CREATE TABLE evident.schema_version (
    version integer NOT NULL
);

-- One row per node: the identity a node's data directory must match (its keys stay in the
-- data directory's files, mode 0600; only the public verifier key is here).
CREATE TABLE evident.nodes (
    node_id      text COLLATE "C" PRIMARY KEY,
    origin       text NOT NULL,
    verifier_key text NOT NULL,
    created_at   bigint NOT NULL
);

CREATE TABLE evident.events (
    node_id     text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 0),
    id          uuid NOT NULL,
    recorded_at bigint NOT NULL,
    occurred_at bigint,
    tenant      text COLLATE "C" NOT NULL,
    actor_id    text COLLATE "C" NOT NULL,
    actor_kind  text COLLATE "C" NOT NULL,
    ip          bytea CHECK (octet_length(ip) = 16),
    user_agent  text,
    action      text COLLATE "C" NOT NULL,
    target_kind text COLLATE "C" NOT NULL,
    target_id   text COLLATE "C" NOT NULL,
    outcome     text COLLATE "C" NOT NULL,
    severity    smallint NOT NULL CHECK (severity BETWEEN 0 AND 7),
    context     text NOT NULL,
    hash        bytea NOT NULL CHECK (octet_length(hash) = 32),
    seal        bytea NOT NULL CHECK (octet_length(seal) = 32),
    PRIMARY KEY (node_id, seq)
);

CREATE INDEX events_by_time   ON evident.events (node_id, recorded_at);
CREATE INDEX events_by_actor  ON evident.events (node_id, actor_id, seq);
CREATE INDEX events_by_target ON evident.events (node_id, target_id, seq);
CREATE INDEX events_by_ip     ON evident.events (node_id, ip, seq);
CREATE INDEX events_by_action ON evident.events (node_id, action, seq);
CREATE INDEX events_by_tenant ON evident.events (node_id, tenant, seq);
-- Only the rare values of these: a common value matches densely along the primary key.
CREATE INDEX events_severe      ON evident.events (node_id, severity, seq) WHERE severity >= 4;
CREATE INDEX events_not_success ON evident.events (node_id, outcome, seq) WHERE outcome <> 'success';
CREATE INDEX events_not_user    ON evident.events (node_id, actor_kind, seq) WHERE actor_kind <> 'user';

CREATE TABLE evident.merkle_nodes (
    node_id text COLLATE "C" NOT NULL,
    level   smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx     bigint NOT NULL CHECK (idx >= 0),
    hash    bytea NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (node_id, level, idx)
);

CREATE TABLE evident.checkpoints (
    node_id    text COLLATE "C" NOT NULL,
    size       bigint NOT NULL CHECK (size >= 0),
    root       bytea NOT NULL CHECK (octet_length(root) = 32),
    note       text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (node_id, size)
);

-- Mutable on purpose: revocation, expiry and last use are updated in place.
CREATE TABLE evident.api_keys (
    node_id      text COLLATE "C" NOT NULL,
    id           text COLLATE "C" NOT NULL,
    secret_hash  bytea NOT NULL CHECK (octet_length(secret_hash) = 32),
    role         text NOT NULL,
    tenant       text,
    label        text,
    created_at   bigint NOT NULL,
    revoked_at   bigint,
    expires_at   bigint,
    last_used_at bigint,
    last_used_ip text,
    PRIMARY KEY (node_id, id),
    UNIQUE (node_id, secret_hash)
);

-- Integrity layer 1: the log refuses to be edited. UPDATE (including INSERT … ON CONFLICT DO
-- UPDATE) and TRUNCATE are refused always; DELETE only inside a transaction that ran
-- `SET LOCAL evident.pruning = 'on'` (the retention pruner's, whose role alone holds the
-- DELETE grant). Overwriting INSERTs are stopped by the primary keys.
CREATE FUNCTION evident.refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('evident.pruning', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'evident: % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Evident''s log is immutable; only the retention pruner deletes old entries.';
END;
$fn$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON evident.events
    FOR EACH ROW EXECUTE FUNCTION evident.refuse_rewrite();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON evident.events
    FOR EACH STATEMENT EXECUTE FUNCTION evident.refuse_rewrite();
CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE OR DELETE ON evident.merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION evident.refuse_rewrite();
CREATE TRIGGER merkle_nodes_no_truncate BEFORE TRUNCATE ON evident.merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION evident.refuse_rewrite();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON evident.checkpoints
    FOR EACH ROW EXECUTE FUNCTION evident.refuse_rewrite();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON evident.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION evident.refuse_rewrite();
CREATE TRIGGER nodes_append_only BEFORE UPDATE OR DELETE ON evident.nodes
    FOR EACH ROW EXECUTE FUNCTION evident.refuse_rewrite();
CREATE TRIGGER nodes_no_truncate BEFORE TRUNCATE ON evident.nodes
    FOR EACH STATEMENT EXECUTE FUNCTION evident.refuse_rewrite();

INSERT INTO evident.schema_version (version) VALUES (1);
"#;

/// Version 2: retention. One `prune_anchor` row per node (where its kept log starts, see
/// [`crate::PruneAnchor`]), updated in place by the pruner but only ever forward (a trigger),
/// never deleted. Entries are deleted only by the pruner's transaction (the flag above);
/// Merkle nodes and checkpoints stay, for proofs of kept entries and older checkpoints.
pub(super) const V2: &str = r#"
CREATE TABLE evident.prune_anchor (
    node_id         text COLLATE "C" PRIMARY KEY,
    from_seq        bigint NOT NULL CHECK (from_seq >= 0),
    below_seq       bigint NOT NULL CHECK (below_seq >= 1),
    hash            bytea NOT NULL CHECK (octet_length(hash) = 32),
    seal            bytea NOT NULL CHECK (octet_length(seal) = 32),
    recorded_at     bigint NOT NULL,
    checkpoint_size bigint NOT NULL,
    checkpoint_note text NOT NULL,
    started_at      bigint NOT NULL,
    event_seq       bigint NOT NULL
);

CREATE FUNCTION evident.prune_anchor_forward() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' AND NOT (NEW.node_id = OLD.node_id AND NEW.below_seq > OLD.below_seq) THEN
        RAISE EXCEPTION 'evident: the retention anchor only moves forward'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'evident: the retention anchor cannot be deleted'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$fn$;
CREATE TRIGGER prune_anchor_forward BEFORE UPDATE OR DELETE ON evident.prune_anchor
    FOR EACH ROW EXECUTE FUNCTION evident.prune_anchor_forward();

INSERT INTO evident.schema_version (version) VALUES (2);
"#;

/// Version 3: who appended each entry (entry encoding version 2, docs/FORMAT.md §3). A new
/// nullable column without a default: PostgreSQL changes only the catalog, no stored row is
/// rewritten, and the rows already stored read back NULL, which is what they are: version-1
/// entries, whose hashes cover no such field. Every entry appended from now on fills it. The
/// table-level grants cover the new column. No index: no query filter uses it.
const V3: &str = r#"
ALTER TABLE evident.events ADD COLUMN appended_by text COLLATE "C";

INSERT INTO evident.schema_version (version) VALUES (3);
"#;

/// Version 4: consumer cursors, one row per node and consumer of its committed log (a
/// forwarder, the publisher, a webhook endpoint …): the next sequence number it has to deliver
/// and its small state. Mutable (the service role updates it on every delivery) and never
/// part of what is verified: a lost or reset row only re-delivers, which at-least-once
/// delivery allows.
const V4: &str = r#"
CREATE TABLE evident.consumer_cursors (
    node_id    text COLLATE "C" NOT NULL,
    consumer   text COLLATE "C" NOT NULL,
    next_seq   bigint NOT NULL CHECK (next_seq >= 0),
    state      text,
    updated_at bigint NOT NULL,
    PRIMARY KEY (node_id, consumer)
);

INSERT INTO evident.schema_version (version) VALUES (4);
"#;

/// Version 5: witnessing (C2SP tlog-witness), per node: the latest checkpoint this node's
/// witness cosigned per peer log origin, and the cosignatures peers returned for this node's
/// checkpoints. Mutable state, checked again wherever used, never part of what is verified.
const V5: &str = r#"
CREATE TABLE evident.witnessed_checkpoints (
    node_id     text COLLATE "C" NOT NULL,
    origin      text COLLATE "C" NOT NULL,
    size        bigint NOT NULL CHECK (size >= 0),
    root        bytea NOT NULL CHECK (length(root) = 32),
    signed_note text NOT NULL,
    updated_at  bigint NOT NULL,
    PRIMARY KEY (node_id, origin)
);

CREATE TABLE evident.cosignatures (
    node_id     text COLLATE "C" NOT NULL,
    size        bigint NOT NULL CHECK (size >= 0),
    witness     text COLLATE "C" NOT NULL,
    line        text NOT NULL,
    received_at bigint NOT NULL,
    PRIMARY KEY (node_id, size, witness)
);

INSERT INTO evident.schema_version (version) VALUES (5);
"#;

/// Version 6: the `occurred_from` / `occurred_to` filters (when the client says the event
/// happened). Nothing is backfilled because nothing needs to be: `occurred_at` has been a
/// column since version 1, filled by every INSERT and COPY from the entry's event, and it is
/// the very value the entry's hash covers (rows are decoded from their columns and verified),
/// so the index built here covers every entry already stored. Partial: an entry that states
/// no occurred_at is never matched by an occurred_at filter (a range condition implies
/// `IS NOT NULL`, so the planner may use it), and costs the index nothing. Building it scans
/// the events table once, inside the migration's transaction.
const V6: &str = r#"
CREATE INDEX events_by_occurred ON evident.events (node_id, occurred_at, seq)
    WHERE occurred_at IS NOT NULL;

INSERT INTO evident.schema_version (version) VALUES (6);
"#;

/// Version 7: no index on `recorded_at`. A time range is read as the sequence range it
/// amounts to (`recorded_at` never decreases along `seq`, append refuses otherwise), found by
/// binary search on the primary key (see `query.rs`), so this index served no query: it only
/// cost every append an insert, and misled the planner into walking the primary key with a
/// time condition as a filter (2 s for a first page at 10M entries).
const V7: &str = r#"
DROP INDEX IF EXISTS evident.events_by_time;

INSERT INTO evident.schema_version (version) VALUES (7);
"#;

/// What a migration found wrong.
#[derive(Debug)]
pub(crate) enum MigrateError {
    Sql(postgres::Error),
    /// The database was written by a newer build.
    TooNew(i32),
}

impl From<postgres::Error> for MigrateError {
    fn from(e: postgres::Error) -> MigrateError {
        MigrateError::Sql(e)
    }
}

/// The schema version stored, or `None` when the database has no Evident schema yet.
fn stored_version(tx: &mut Transaction<'_>) -> Result<Option<i32>, postgres::Error> {
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass('evident.schema_version') IS NOT NULL",
            &[],
        )?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = tx.query_opt("SELECT max(version) FROM evident.schema_version", &[])?;
    Ok(row.and_then(|r| r.get::<_, Option<i32>>(0)))
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, serialized with every other
/// process migrating the same database. Nothing is written when it is current already.
pub(crate) fn migrate(client: &mut postgres::Client) -> Result<(), MigrateError> {
    // Most starts find the schema current: check without taking the lock or writing.
    {
        let mut tx = client.transaction()?;
        let version = stored_version(&mut tx)?;
        tx.commit()?;
        match version {
            Some(v) if v > SCHEMA_VERSION => return Err(MigrateError::TooNew(v)),
            Some(v) if v == SCHEMA_VERSION => return Ok(()),
            _ => {}
        }
    }
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let version = stored_version(&mut tx)?;
    match version {
        Some(v) if v > SCHEMA_VERSION => return Err(MigrateError::TooNew(v)),
        Some(v) if v == SCHEMA_VERSION => {}
        None => {
            tx.batch_execute(V1)?;
            tx.batch_execute(V2)?;
            tx.batch_execute(V3)?;
            tx.batch_execute(V4)?;
            tx.batch_execute(V5)?;
            tx.batch_execute(V6)?;
            tx.batch_execute(V7)?;
        }
        Some(v) => {
            // Each version's migration after the stored one, in order.
            for (version, sql) in [(2, V2), (3, V3), (4, V4), (5, V5), (6, V6), (7, V7)] {
                if v < version {
                    tx.batch_execute(sql)?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}
