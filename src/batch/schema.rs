//! The batch database's schema and its migrations.
//!
//! A new file gets the first schema and then every migration, exactly like
//! a file written by an older meshops, so the two cannot drift apart. The
//! version applied is SQLite's `user_version`; each migration runs in the
//! transaction that bumps it, so a crash leaves a file at one version or
//! the next, never between.

use rusqlite::{Connection, TransactionBehavior};

use super::BatchError;

/// The first schema (version 0), as every database began; later versions
/// are [`MIGRATIONS`] applied on top, so a new file and an old one end the
/// same.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY,
    request_id  TEXT,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL,
    total       INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    finished_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_request_id ON jobs(request_id) WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_open ON jobs(state) WHERE state = 'open';
CREATE TABLE IF NOT EXISTS items (
    job_id     TEXT NOT NULL REFERENCES jobs(job_id),
    item_index INTEGER NOT NULL,
    input      TEXT NOT NULL,
    state      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, item_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_waiting ON items(job_id, item_index) WHERE state = 0;
CREATE TABLE IF NOT EXISTS results (
    job_id        TEXT NOT NULL REFERENCES jobs(job_id),
    item_index    INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    code          INTEGER NOT NULL,
    message       TEXT NOT NULL,
    answer        TEXT,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL,
    model_calls   INTEGER NOT NULL DEFAULT 0,
    latency_ms    REAL NOT NULL DEFAULT 0,
    finished_ms   INTEGER NOT NULL,
    PRIMARY KEY (job_id, item_index)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS results_seq ON results(job_id, seq);
";

/// Migration `n` takes the schema from version `n` to `n + 1`. Only ever
/// appended to: a file records how many it has had.
const MIGRATIONS: [&str; 2] = [
    // 1: who submitted a job (the API key's identity; NULL when the gateway
    // checked no keys), for ListBatches; and the caller's id for each item,
    // carried back on its result. Newest-first listing walks `rowid`.
    "ALTER TABLE jobs ADD COLUMN owner TEXT;
     ALTER TABLE items ADD COLUMN item_id TEXT;
     CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner);",
    // 2: a `request_id` is unique per owner, not across owners: one key
    // can neither squat another's id nor find its job through it.
    "DROP INDEX IF EXISTS jobs_request_id;
     CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_request_id ON jobs(coalesce(owner, ''), request_id)
         WHERE request_id IS NOT NULL;",
];

/// Creates the tables when missing and applies the migrations the file
/// has not had. A file from a newer meshops (a higher version) is refused
/// rather than written with an older idea of the schema.
pub fn migrate(conn: &mut Connection) -> Result<(), BatchError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    // Only a file at version 0 (new, or from the first meshops) takes the
    // first schema: run on a later file it would bring back what a
    // migration dropped.
    if version == 0 {
        tx.execute_batch(SCHEMA)?;
    }
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(BatchError::Corrupt(format!(
            "the file has schema version {version}; this meshops knows up to {known} (written by a newer version?)"
        )));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", n as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(conn: &Connection, table: &str) -> Vec<String> {
        let mut q = conn.prepare(&format!("PRAGMA table_info({table})")).unwrap();
        q.query_map([], |r| r.get::<_, String>(1)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_file_of_the_first_schema_keeps_its_jobs_and_gains_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite3");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO jobs (job_id, fingerprint, state, total, created_ms) VALUES ('j', 'f', 'open', 1, 5)",
                [],
            )
            .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        assert!(columns(&conn, "jobs").contains(&"owner".to_string()));
        assert!(columns(&conn, "items").contains(&"item_id".to_string()));
        let kept: (String, Option<String>) =
            conn.query_row("SELECT job_id, owner FROM jobs", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!(kept, ("j".to_string(), None));
        // Again: nothing to do, nothing fails.
        migrate(&mut conn).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        // Request ids are unique per owner: two owners may use one.
        for owner in ["a", "b"] {
            conn.execute(
                "INSERT INTO jobs (job_id, request_id, fingerprint, state, total, created_ms, owner) \
                 VALUES (?1, 'r', 'f', 'open', 1, 5, ?2)",
                rusqlite::params![format!("job-{owner}"), owner],
            )
            .unwrap();
        }
        let again = conn.execute(
            "INSERT INTO jobs (job_id, request_id, fingerprint, state, total, created_ms, owner) \
             VALUES ('job-a2', 'r', 'f', 'open', 1, 5, 'a')",
            [],
        );
        assert!(again.is_err(), "one owner cannot use a request id twice");

        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }
}
