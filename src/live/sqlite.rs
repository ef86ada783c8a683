//! Live records in one SQLite file, written by one thread.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::mpsc;

use super::{ExportFilter, LiveError, Op, Record, Stored, export_row, now_ms, stored_variant};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    trace_id         TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    at_ms            INTEGER NOT NULL,
    variant          TEXT NOT NULL,
    intent           TEXT NOT NULL,
    latency_ms       REAL NOT NULL,
    input_tokens     INTEGER NOT NULL,
    output_tokens    INTEGER NOT NULL,
    cost_usd         REAL,
    model_calls      INTEGER NOT NULL,
    query            TEXT,
    answer           TEXT,
    citations        TEXT,
    feedback_score   REAL,
    feedback_comment TEXT,
    feedback_at_ms   INTEGER,
    scores           TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_at ON records(at_ms);
";

/// Opens the file (creating it) with the schema, for the writer or a reader.
pub fn open_db(path: &Path) -> Result<Connection, LiveError> {
    let shown = path.display().to_string();
    let db = |source| LiveError::Db { path: shown.clone(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| LiveError::Io { path: shown.clone(), message: e.to_string() })?;
    }
    let conn = Connection::open(path).map_err(db)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).map_err(db)?;
    conn.execute_batch(SCHEMA).map_err(db)?;
    Ok(conn)
}

/// Opens the file and starts its writer thread on `rx`.
pub(super) fn start(path: &Path, rx: mpsc::Receiver<Op>) -> Result<(), LiveError> {
    let conn = open_db(path)?;
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("meshops-live".into())
        .spawn(move || writer(conn, rx, &shown))
        .map_err(|e| LiveError::Io { path: path.display().to_string(), message: e.to_string() })?;
    Ok(())
}

/// The writer thread: records in batches, feedback in order with them.
fn writer(mut conn: Connection, mut rx: mpsc::Receiver<Op>, path: &str) {
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < 256 {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        // Feedback is acknowledged once its batch is committed; a batch that
        // fails drops its replies, and the caller is told to retry.
        let mut replies = Vec::new();
        let result = (|| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            for op in ops {
                match op {
                    Op::Record(r) => insert(&tx, &r)?,
                    Op::Feedback { trace_id, owner, feedback, reply } => {
                        let updated = tx.prepare_cached(
                            "UPDATE records SET feedback_score = ?3, feedback_comment = ?4, feedback_at_ms = ?5 \
                             WHERE trace_id = ?1 AND owner = ?2",
                        )?.execute(params![trace_id, owner, feedback.score, feedback.comment, now_ms()],
                        )?;
                        replies.push((reply, updated == 1));
                    }
                    Op::Scores { trace_id, scores } => {
                        tx.prepare_cached("UPDATE records SET scores = ?2 WHERE trace_id = ?1")?
                            .execute(params![trace_id, scores])?;
                    }
                    Op::Purge(days) => {
                        let n = purge(&tx, days)?;
                        if n > 0 {
                            tracing::info!(
                                records = n,
                                days,
                                "live records past [live] retention_days deleted"
                            );
                        }
                    }
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                for (reply, found) in replies {
                    let _ = reply.send(Ok(found));
                }
            }
            Err(e) => tracing::error!(error = %e, path, "cannot write live records"),
        }
    }
}

fn insert(tx: &rusqlite::Transaction<'_>, r: &Record) -> Result<(), rusqlite::Error> {
    let (query, answer, citations) = r.content_columns();
    // Cached: one parse for the process, not one per answer.
    tx.prepare_cached(
        "INSERT OR REPLACE INTO records (trace_id, owner, at_ms, variant, intent, latency_ms, input_tokens, \
         output_tokens, cost_usd, model_calls, query, answer, citations) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        r.trace_id,
        r.owner,
        r.at_ms,
        r.variant,
        r.intent,
        r.latency_ms,
        r.input_tokens as i64,
        r.output_tokens as i64,
        r.cost_usd,
        r.model_calls,
        query,
        answer,
        citations
    ])?;
    Ok(())
}

/// The records `filter` selects, oldest first, as export rows.
pub fn export(conn: &Connection, filter: &ExportFilter) -> Result<Vec<serde_json::Value>, rusqlite::Error> {
    let mut q = conn.prepare(
        "SELECT trace_id, at_ms, variant, intent, latency_ms, input_tokens, output_tokens, cost_usd, model_calls, \
         query, answer, citations, feedback_score, feedback_comment, scores FROM records \
         WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR variant = ?2) \
         AND (?3 = 0 OR feedback_score IS NOT NULL) AND (?4 IS NULL OR feedback_score >= ?4) \
         ORDER BY at_ms, trace_id",
    )?;
    let rows = q.query_map(
        params![filter.since_ms, stored_variant(filter), i64::from(filter.with_feedback), filter.min_score],
        |r| {
            Ok(export_row(Stored {
                trace_id: r.get(0)?,
                at_ms: r.get(1)?,
                variant: r.get(2)?,
                intent: r.get(3)?,
                latency_ms: r.get(4)?,
                input_tokens: r.get(5)?,
                output_tokens: r.get(6)?,
                cost_usd: r.get(7)?,
                model_calls: r.get(8)?,
                query: r.get(9)?,
                answer: r.get(10)?,
                citations: r.get(11)?,
                feedback_score: r.get(12)?,
                feedback_comment: r.get(13)?,
                scores: r.get(14)?,
            }))
        },
    )?;
    rows.collect()
}

/// Deletes records older than `days` days; how many.
pub fn purge(conn: &Connection, days: u32) -> Result<usize, rusqlite::Error> {
    conn.execute("DELETE FROM records WHERE at_ms < ?1", params![now_ms() - i64::from(days) * 86_400_000])
}

/// Whether a record exists (tests and checks).
pub fn exists(conn: &Connection, trace_id: &str) -> Result<bool, rusqlite::Error> {
    Ok(conn
        .query_row("SELECT 1 FROM records WHERE trace_id = ?1", params![trace_id], |_| Ok(()))
        .optional()?
        .is_some())
}
