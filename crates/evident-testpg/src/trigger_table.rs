//! The hand-built baseline both benchmarks compare Evident on PostgreSQL against: the SQL of a
//! plain PostgreSQL table whose `BEFORE INSERT` trigger chains every row to the previous one
//! with SHA-256, what teams build by hand for an audit table. One definition, so that the
//! store-level bench (`evident-store/benches/ingest.rs`) and the service bench
//! (`evident-bench`) measure the same thing.
//!
//! The trigger takes a transaction-scoped advisory lock (so concurrent writers serialize until
//! COMMIT), reads the last row under it, numbers the new row after it and sets
//! `hash = sha256(prev_hash || actor || action || target || host(ip) || payload::text)`.
//! Numbering under the lock matters: with a `bigserial` key (taken before the trigger runs,
//! outside the lock) concurrent writers commit out of key order and later rows chain to the
//! same "last" row, forking the chain (a first version numbered rows that way: `evident-bench`
//! found 1,192 rows sharing a predecessor after a few seconds of 8 and 64 concurrent writers).

/// Creates the table `handmade`, its trigger function and its trigger. Rows are inserted with
/// `INSERT INTO handmade (actor, action, target, ip, payload) VALUES …`.
pub const SCHEMA: &str = r#"
CREATE TABLE handmade (
    seq bigint PRIMARY KEY,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL, action text NOT NULL, target text NOT NULL, ip inet,
    payload jsonb NOT NULL,
    prev_hash bytea NOT NULL, hash bytea NOT NULL
);
CREATE FUNCTION handmade_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE last_seq bigint; last bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(42);
    SELECT seq, hash INTO last_seq, last FROM handmade ORDER BY seq DESC LIMIT 1;
    NEW.seq := coalesce(last_seq, 0) + 1;
    NEW.prev_hash := coalesce(last, '\x'::bytea);
    NEW.hash := sha256(NEW.prev_hash || convert_to(
        NEW.actor || NEW.action || NEW.target || coalesce(host(NEW.ip), '') || NEW.payload::text,
        'UTF8'));
    RETURN NEW;
END $$;
CREATE TRIGGER handmade_chain BEFORE INSERT ON handmade
    FOR EACH ROW EXECUTE FUNCTION handmade_chain();
"#;

/// Indexes a team would add to the trigger table to serve the same filters as Evident's
/// (time, actor, target, IP, action): a diagnostic variant beside the bare table.
pub const INDEXES: &str = r#"
CREATE INDEX handmade_by_time ON handmade (recorded_at);
CREATE INDEX handmade_by_actor ON handmade (actor, seq);
CREATE INDEX handmade_by_target ON handmade (target, seq);
CREATE INDEX handmade_by_ip ON handmade (ip, seq);
CREATE INDEX handmade_by_action ON handmade (action, seq);
"#;

/// The columns an `INSERT` fills, in order.
pub const INSERT_COLUMNS: &str = "INSERT INTO handmade (actor, action, target, ip, payload)";

/// Verifies the whole table in one query: `(rows, max_seq, broken)`, where `broken` counts
/// rows whose `prev_hash` is not the hash of the row before them in `seq` order or whose hash
/// does not recompute. An intact, dense chain has `max_seq = rows` and `broken = 0`.
pub const CHECK: &str = r#"
SELECT count(*), coalesce(max(seq), 0),
    count(*) FILTER (WHERE prev_hash IS DISTINCT FROM coalesce(before, '\x'::bytea)
        OR hash IS DISTINCT FROM sha256(prev_hash || convert_to(
            actor || action || target || coalesce(host(ip), '') || payload::text, 'UTF8')))
FROM (SELECT *, lag(hash) OVER (ORDER BY seq) AS before FROM handmade) AS chained
"#;

/// One multi-row `INSERT` of `rows` rows with bind parameters (`$1…$5` per row: actor, action
/// and target as text, ip and payload as text cast to `inet` and `jsonb`).
pub fn insert_statement(rows: usize) -> String {
    let mut sql = String::with_capacity(INSERT_COLUMNS.len() + 8 + rows * 56);
    sql.push_str(INSERT_COLUMNS);
    sql.push_str(" VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        let p = r * 5;
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}::text::inet, ${}::text::jsonb)",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5
        ));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_statement_numbers_five_parameters_per_row() {
        assert_eq!(
            insert_statement(2),
            "INSERT INTO handmade (actor, action, target, ip, payload) VALUES \
             ($1, $2, $3, $4::text::inet, $5::text::jsonb), \
             ($6, $7, $8, $9::text::inet, $10::text::jsonb)"
        );
        assert!(insert_statement(1000).ends_with("$5000::text::jsonb)"));
    }
}
