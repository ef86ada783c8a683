//! Live records: what the gateway keeps of each answered request, so users'
//! feedback has somewhere to go and production traffic can become
//! tomorrow's dataset (`meshops live export`).
//!
//! One SQLite file (`live.sqlite3` under the data dir, or `[live]
//! db_path`; [`sqlite`]), or PostgreSQL shared by every replica (`[live]
//! backend = "postgres"`; [`postgres`]), written off the request path: answers hand
//! their record to a bounded queue and never wait; when the queue is full
//! the record is dropped and counted. Feedback goes through the same queue,
//! so it always finds a record handed over before it. A record keeps ids,
//! variant, intent, status, latency, tokens and cost; with `[live]
//! capture_content` also the query, the answer and its citations. Records
//! older than `retention_days` are deleted hourly.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::MeshSpec;
use crate::config::StateBackend;

pub mod postgres;
pub mod sqlite;

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
    #[error("live records: {0}")]
    Postgres(#[from] crate::pg::PgError),
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

impl Record {
    /// The content columns as stored: query, answer, citations as JSON
    /// (all `None` without captured content).
    pub(crate) fn content_columns(&self) -> (Option<&str>, Option<&str>, Option<String>) {
        match &self.content {
            Some(c) => (
                Some(c.query.as_str()),
                Some(c.answer.as_str()),
                Some(serde_json::to_string(&c.citations).unwrap_or_else(|_| "[]".into())),
            ),
            None => (None, None, None),
        }
    }
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

pub(crate) enum Op {
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
}

/// The file records live in.
pub fn db_path(spec: &MeshSpec) -> PathBuf {
    match &spec.settings.live.db_path {
        Some(p) => spec.resolve(p),
        None => spec.resolve(&spec.settings.retrieval.data_dir).join("live.sqlite3"),
    }
}

impl LiveStore {
    /// Opens the configured store and starts its writer and hourly
    /// retention.
    pub async fn open(spec: &MeshSpec) -> Result<Arc<LiveStore>, LiveError> {
        let settings = &spec.settings.live;
        let (tx, rx) = mpsc::channel(QUEUE);
        match settings.backend {
            StateBackend::Sqlite => sqlite::start(&db_path(spec), rx)?,
            StateBackend::Postgres => postgres::start(&url(spec)?, rx).await?,
        }
        let store = Arc::new(LiveStore { tx, capture: settings.capture_content, dropped: AtomicU64::new(0) });
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

/// The PostgreSQL URL of `[live] backend = "postgres"`.
fn url(spec: &MeshSpec) -> Result<String, LiveError> {
    let l = &spec.settings.live;
    crate::config::resolve_url(l.url.as_deref(), l.url_env.as_deref()).ok_or_else(|| LiveError::Io {
        path: "live.url".into(),
        message: "backend is postgres but neither url nor the variable url_env names is set".into(),
    })
}

/// Reads the records `filter` selects from the configured store, as
/// export rows (see [`export_row`]); also how many have no content.
pub async fn read(
    spec: &MeshSpec,
    filter: &ExportFilter,
) -> Result<(Vec<serde_json::Value>, usize), LiveError> {
    let rows = match spec.settings.live.backend {
        StateBackend::Sqlite => {
            let path = db_path(spec);
            if !path.exists() {
                return Err(LiveError::Io {
                    path: path.display().to_string(),
                    message: "no live records here (a gateway with [live] enabled writes them)".into(),
                });
            }
            let conn = sqlite::open_db(&path)?;
            sqlite::export(&conn, filter)
                .map_err(|source| LiveError::Db { path: path.display().to_string(), source })?
        }
        StateBackend::Postgres => postgres::export(&url(spec)?, filter).await?,
    };
    let without = rows.iter().filter(|r| r.get("query").is_none()).count();
    Ok((rows, without))
}

/// A stored record as the store gives it back.
pub(crate) struct Stored {
    pub trace_id: String,
    pub at_ms: i64,
    pub variant: String,
    pub intent: String,
    pub latency_ms: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: Option<f64>,
    pub model_calls: i64,
    pub query: Option<String>,
    pub answer: Option<String>,
    pub citations: Option<String>,
    pub feedback_score: Option<f64>,
    pub feedback_comment: Option<String>,
    pub scores: Option<String>,
}

/// An export row: for `eval run --dataset` / `eval score --input`, `id`
/// (the trace id), `query`, `response`, `retrieved_doc_ids` when content
/// was captured; and the record's variant, intent, timings, usage,
/// feedback and online scores.
pub(crate) fn export_row(s: Stored) -> serde_json::Value {
    let mut row = serde_json::json!({
        "id": s.trace_id,
        "trace_id": s.trace_id,
        "at_ms": s.at_ms,
        "variant": s.variant,
        "intent": s.intent,
        "latency_ms": s.latency_ms,
        "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens,
        "cost_usd": s.cost_usd,
        "model_calls": s.model_calls,
    });
    if let (Some(query), Some(answer)) = (s.query, s.answer) {
        row["query"] = query.into();
        row["response"] = answer.into();
        let docs: Vec<String> = s.citations.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or_default();
        row["retrieved_doc_ids"] = docs.into();
    }
    if let Some(scores) = s.scores {
        row["scores"] = serde_json::from_str(&scores).unwrap_or(serde_json::Value::Null);
    }
    if let Some(score) = s.feedback_score {
        row["feedback"] =
            serde_json::json!({"score": score, "comment": s.feedback_comment.unwrap_or_default()});
    }
    row
}

/// The variant filter as stored ("" for `base`).
pub(crate) fn stored_variant(filter: &ExportFilter) -> Option<&str> {
    filter.variant.as_deref().map(|v| if v == crate::config::ab::BASE { "" } else { v })
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
