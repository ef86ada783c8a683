//! Live records: what the gateway keeps of each answered request, so users'
//! feedback has somewhere to go and production traffic can become
//! tomorrow's dataset (`meshops live export`).
//!
//! One SQLite file (`live.sqlite3` under the data dir, or `[live]
//! db_path`), written by one thread off the request path: answers hand
//! their record to a bounded queue and never wait; when the queue is full
//! the record is dropped and counted. Feedback goes through the same queue,
//! so it always finds a record handed over before it. A record keeps ids,
//! variant, intent, status, latency, tokens and cost; with `[live]
//! capture_content` also the query, the answer and its citations. Records
//! older than `retention_days` are deleted hourly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::MeshSpec;
use crate::config::ab::LiveSettings;

/// Records waiting for the writer; beyond this they are dropped.
const QUEUE: usize = 4096;

/// Why a live-store call failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("live records {path}: {source}")]
    Db { path: String, source: rusqlite::Error },
    #[error("live records {path}: {message}")]
    Io { path: String, message: String },
    #[error("the live record store is closed")]
    Closed,
}

/// One answered request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub trace_id: String,
    /// The API key's identity ("" without keys): only it may rate the
    /// answer.
    #[serde(skip)]
    pub owner: String,
    pub at_ms: i64,
    /// "" for the base mesh.
    pub variant: String,
    pub intent: String,
    pub latency_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Option<f64>,
    pub model_calls: u32,
    /// With `capture_content` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

/// What was asked and answered (kept only with `capture_content`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Content {
    pub query: String,
    pub answer: String,
    /// doc ids of the citations, in order.
    pub citations: Vec<String>,
}

/// A user's rating of an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feedback {
    /// In [0, 1]: thumbs down 0, up 1, or a rating scaled.
    pub score: f64,
    pub comment: String,
}

enum Op {
    Record(Box<Record>),
    Feedback {
        trace_id: String,
        owner: String,
        feedback: Feedback,
        reply: oneshot::Sender<Result<bool, LiveError>>,
    },
    /// Delete records older than this many days.
    Purge(u32),
    /// The online judges' scores of a record.
    Scores {
        trace_id: String,
        scores: String,
    },
}

/// The writer's queue.
pub struct LiveStore {
    tx: mpsc::Sender<Op>,
    capture: bool,
    dropped: AtomicU64,
    path: PathBuf,
}

/// The file records live in.
pub fn db_path(spec: &MeshSpec) -> PathBuf {
    match &spec.settings.live.db_path {
        Some(p) => spec.resolve(p),
        None => spec.resolve(&spec.settings.retrieval.data_dir).join("live.sqlite3"),
    }
}

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

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

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

impl LiveStore {
    /// Opens the store and starts its writer thread and hourly retention.
    pub fn open(path: &Path, settings: &LiveSettings) -> Result<Arc<LiveStore>, LiveError> {
        let conn = open_db(path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("meshops-live".into())
            .spawn(move || writer(conn, rx, &shown))
            .map_err(|e| LiveError::Io { path: path.display().to_string(), message: e.to_string() })?;
        let store = Arc::new(LiveStore {
            tx,
            capture: settings.capture_content,
            dropped: AtomicU64::new(0),
            path: path.to_path_buf(),
        });
        if settings.retention_days > 0 {
            let tx = store.tx.clone();
            let days = settings.retention_days;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tick.tick().await;
                    if tx.send(Op::Purge(days)).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(store)
    }

    /// Whether records keep the query, answer and citations.
    pub fn captures_content(&self) -> bool {
        self.capture
    }

    /// The file, for logs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands a record to the writer; never waits. A full queue drops it
    /// (counted in [`LiveStore::dropped`]).
    pub fn record(&self, record: Record) {
        if self.tx.try_send(Op::Record(Box::new(record))).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_power_of_two() {
                tracing::warn!(dropped = n, "live record queue full; records dropped");
            }
        }
    }

    /// Stores the online judges' scores (a JSON object by judge) with a
    /// record; never waits (a full queue drops them).
    pub fn scores(&self, trace_id: &str, scores: &serde_json::Value) {
        let op = Op::Scores { trace_id: trace_id.to_string(), scores: scores.to_string() };
        if self.tx.try_send(op).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Stores feedback on `owner`'s record `trace_id`; false when there is
    /// no such record for this owner (unknown, expired, or another key's).
    pub async fn feedback(&self, trace_id: &str, owner: &str, feedback: Feedback) -> Result<bool, LiveError> {
        let (reply, answer) = oneshot::channel();
        let op = Op::Feedback { trace_id: trace_id.to_string(), owner: owner.to_string(), feedback, reply };
        self.tx.send(op).await.map_err(|_| LiveError::Closed)?;
        answer.await.map_err(|_| LiveError::Closed)?
    }
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
        let result = (|| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            for op in ops {
                match op {
                    Op::Record(r) => insert(&tx, &r)?,
                    Op::Feedback { trace_id, owner, feedback, reply } => {
                        let updated = tx.execute(
                            "UPDATE records SET feedback_score = ?3, feedback_comment = ?4, feedback_at_ms = ?5 \
                             WHERE trace_id = ?1 AND owner = ?2",
                            params![trace_id, owner, feedback.score, feedback.comment, now_ms()],
                        );
                        let _ = reply.send(
                            updated
                                .map(|n| n == 1)
                                .map_err(|source| LiveError::Db { path: path.to_string(), source }),
                        );
                    }
                    Op::Scores { trace_id, scores } => {
                        tx.execute(
                            "UPDATE records SET scores = ?2 WHERE trace_id = ?1",
                            params![trace_id, scores],
                        )?;
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
        if let Err(e) = result {
            tracing::error!(error = %e, path, "cannot write live records");
        }
    }
}

fn insert(tx: &rusqlite::Transaction<'_>, r: &Record) -> Result<(), rusqlite::Error> {
    let (query, answer, citations) = match &r.content {
        Some(c) => (
            Some(c.query.as_str()),
            Some(c.answer.as_str()),
            Some(serde_json::to_string(&c.citations).unwrap_or_else(|_| "[]".into())),
        ),
        None => (None, None, None),
    };
    tx.execute(
        "INSERT OR REPLACE INTO records (trace_id, owner, at_ms, variant, intent, latency_ms, input_tokens, \
         output_tokens, cost_usd, model_calls, query, answer, citations) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
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
        ],
    )?;
    Ok(())
}

/// What `meshops live export` selects.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Unix ms: records at or after.
    pub since_ms: Option<i64>,
    pub variant: Option<String>,
    /// Only records with feedback.
    pub with_feedback: bool,
    /// Only records whose feedback score is at least this.
    pub min_score: Option<f64>,
}

/// Rows for `eval run --dataset` / `eval score --input`: `id` (the trace
/// id), `query`, `response`, `retrieved_doc_ids` when content was captured,
/// and the record's variant, intent, timings, usage and feedback. Returns
/// the rows and how many had no content.
pub fn export(
    conn: &Connection,
    filter: &ExportFilter,
) -> Result<(Vec<serde_json::Value>, usize), rusqlite::Error> {
    let mut q = conn.prepare(
        "SELECT trace_id, at_ms, variant, intent, latency_ms, input_tokens, output_tokens, cost_usd, model_calls, \
         query, answer, citations, feedback_score, feedback_comment, scores FROM records \
         WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR variant = ?2) \
         AND (?3 = 0 OR feedback_score IS NOT NULL) AND (?4 IS NULL OR feedback_score >= ?4) \
         ORDER BY at_ms, trace_id",
    )?;
    let variant = filter.variant.as_deref().map(|v| if v == crate::config::ab::BASE { "" } else { v });
    let rows = q.query_map(
        params![filter.since_ms, variant, i64::from(filter.with_feedback), filter.min_score],
        |r| {
            let mut row = serde_json::json!({
                "id": r.get::<_, String>(0)?,
                "trace_id": r.get::<_, String>(0)?,
                "at_ms": r.get::<_, i64>(1)?,
                "variant": r.get::<_, String>(2)?,
                "intent": r.get::<_, String>(3)?,
                "latency_ms": r.get::<_, f64>(4)?,
                "input_tokens": r.get::<_, i64>(5)?,
                "output_tokens": r.get::<_, i64>(6)?,
                "cost_usd": r.get::<_, Option<f64>>(7)?,
                "model_calls": r.get::<_, i64>(8)?,
            });
            let content: (Option<String>, Option<String>, Option<String>) =
                (r.get(9)?, r.get(10)?, r.get(11)?);
            if let (Some(query), Some(answer)) = (content.0, content.1) {
                row["query"] = query.into();
                row["response"] = answer.into();
                let docs: Vec<String> =
                    content.2.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or_default();
                row["retrieved_doc_ids"] = docs.into();
            }
            if let Some(scores) = r.get::<_, Option<String>>(14)? {
                row["scores"] = serde_json::from_str(&scores).unwrap_or(serde_json::Value::Null);
            }
            if let Some(score) = r.get::<_, Option<f64>>(12)? {
                row["feedback"] = serde_json::json!({
                    "score": score,
                    "comment": r.get::<_, Option<String>>(13)?.unwrap_or_default(),
                });
            }
            Ok(row)
        },
    )?;
    let rows: Vec<serde_json::Value> = rows.collect::<Result<_, _>>()?;
    let without = rows.iter().filter(|r| r.get("query").is_none()).count();
    Ok((rows, without))
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
