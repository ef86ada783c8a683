//! The batch database: jobs, items and results in one SQLite file in WAL
//! mode, with `synchronous = FULL` so a commit is on disk before the call
//! that made it is answered.
//!
//! One connection, behind a mutex, serves the whole process; every call
//! runs on tokio's blocking pool. The file belongs to one gateway process:
//! claims are reset when it opens.
//!
//! A result's primary key is `(job_id, item_index)`: whatever races (a
//! cancel and a finishing item, a replay after a crash), an item's result is
//! committed once and the later insert is a no-op. Results are numbered per
//! job in the order they were committed (`seq`, dense from 0): that number is
//! the offset a client resumes a result stream from.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::watch;

use super::BatchError;
use crate::mesh::{Answer, AskInput, Usage};

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

/// Item states in `items.state`.
const WAITING: i64 = 0;
const CLAIMED: i64 = 1;
const FINISHED: i64 = 2;

/// gRPC's CANCELLED: the code of items a cancel answered.
pub const CODE_CANCELLED: i32 = 1;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Cancelled,
}

/// A job's state, counts and usage so far.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub job_id: String,
    pub request_id: Option<String>,
    pub state: JobState,
    pub total: u32,
    pub done: u32,
    pub failed: u32,
    pub cancelled: u32,
    pub pending: u32,
    /// Summed over answered items; `cost_usd` is `None` when any answered
    /// item's cost is unknown.
    pub usage: Usage,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
}

/// How an item ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Boxed: an answer is large, and most of a job's life is spent
    /// moving smaller values around.
    Answered(Box<Answer>),
    /// A gRPC status code and message, as `Ask` would have answered.
    Failed { code: i32, message: String },
}

/// One committed result.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    pub item_index: u32,
    /// Position in the job's results, in commit order.
    pub offset: u64,
    pub outcome: Outcome,
}

/// An item a worker took.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job_id: String,
    pub item_index: u32,
    pub input: AskInput,
}

/// The batch database.
pub struct Store {
    /// `None` once closed; every later call answers [`BatchError::Closed`].
    conn: Arc<Mutex<Option<Connection>>>,
    /// Bumped after each commit that adds results, so result streams wake.
    committed: watch::Sender<u64>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating when needed) the database at `path`, and puts items
    /// claimed by a previous process that left without answering them back
    /// in the queue. Blocking: call it from a blocking context.
    pub fn open(path: &Path) -> Result<(Store, u64), BatchError> {
        let db = |source| BatchError::Db { path: path.display().to_string(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|source| BatchError::Io { path: parent.display().to_string(), source })?;
        }
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(BatchError::Corrupt(format!(
                "{}: cannot switch the database to WAL mode (got `{mode}`)",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        let resumed = conn
            .execute("UPDATE items SET state = ?1 WHERE state = ?2", params![WAITING, CLAIMED])
            .map_err(db)? as u64;
        let (committed, _) = watch::channel(0);
        Ok((Store { conn: Arc::new(Mutex::new(Some(conn))), committed, path: path.to_path_buf() }, resumed))
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, BatchError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, BatchError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let path = self.path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| BatchError::Corrupt(format!("{path}: lock poisoned")))?;
            let conn = guard.as_mut().ok_or(BatchError::Closed)?;
            f(conn).map_err(|e| match e {
                BatchError::Sqlite(source) => BatchError::Db { path: path.clone(), source },
                other => other,
            })
        })
        .await?
    }

    /// A receiver that changes whenever results are committed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    fn bump(&self) {
        self.committed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Stores a new job, or returns the job already stored under
    /// `request_id` (the flag says whether it was created now). The same
    /// `request_id` with different items is refused.
    pub async fn submit(
        &self,
        request_id: Option<String>,
        fingerprint: String,
        items: Vec<AskInput>,
    ) -> Result<(JobSummary, bool), BatchError> {
        let encoded = items
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BatchError::Corrupt(format!("cannot encode an item: {e}")))?;
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(rid) = &request_id {
                let existing: Option<(String, String)> = tx
                    .query_row(
                        "SELECT job_id, fingerprint FROM jobs WHERE request_id = ?1",
                        params![rid],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((job_id, stored)) = existing {
                    if stored != fingerprint {
                        return Err(BatchError::RequestIdReused(rid.clone()));
                    }
                    let job = summary(&tx, &job_id)?;
                    return Ok((job, false));
                }
            }
            let job_id = uuid::Uuid::new_v4().simple().to_string();
            tx.execute(
                "INSERT INTO jobs (job_id, request_id, fingerprint, state, total, created_ms) \
                 VALUES (?1, ?2, ?3, 'open', ?4, ?5)",
                params![job_id, request_id, fingerprint, encoded.len() as i64, now_ms()],
            )?;
            {
                let mut insert =
                    tx.prepare("INSERT INTO items (job_id, item_index, input) VALUES (?1, ?2, ?3)")?;
                for (i, input) in encoded.iter().enumerate() {
                    insert.execute(params![job_id, i as i64, input])?;
                }
            }
            let job = summary(&tx, &job_id)?;
            tx.commit()?;
            Ok((job, true))
        })
        .await
    }

    /// The job's summary; [`BatchError::NotFound`] when there is none.
    pub async fn job(&self, job_id: &str) -> Result<JobSummary, BatchError> {
        let job_id = job_id.to_string();
        self.with(move |conn| summary(conn, &job_id)).await
    }

    /// Cancels a job: every item without a result gets a CANCELLED result
    /// now (in-flight ones included, so their later answers are dropped).
    /// A finished or cancelled job is returned unchanged.
    pub async fn cancel(&self, job_id: &str) -> Result<JobSummary, BatchError> {
        let job_id = job_id.to_string();
        let job = self
            .with(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let state: Option<String> = tx
                    .query_row("SELECT state FROM jobs WHERE job_id = ?1", params![job_id], |r| r.get(0))
                    .optional()?;
                match state.as_deref() {
                    None => return Err(BatchError::NotFound(job_id)),
                    Some("open") => {}
                    Some(_) => return summary(&tx, &job_id),
                }
                let open: Vec<i64> = {
                    let mut q = tx.prepare(
                        "SELECT item_index FROM items WHERE job_id = ?1 AND state != ?2 ORDER BY item_index",
                    )?;
                    q.query_map(params![job_id, FINISHED], |r| r.get(0))?.collect::<Result<_, _>>()?
                };
                let now = now_ms();
                for index in open {
                    insert_result(
                        &tx,
                        &job_id,
                        index,
                        &Outcome::Failed {
                            code: CODE_CANCELLED,
                            message: "the batch job was cancelled before this item finished".into(),
                        },
                        now,
                    )?;
                }
                tx.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_ms = ?2 WHERE job_id = ?1",
                    params![job_id, now],
                )?;
                let job = summary(&tx, &job_id)?;
                tx.commit()?;
                Ok(job)
            })
            .await?;
        self.bump();
        Ok(job)
    }

    /// Takes the next waiting item, from the oldest open job not in `busy`
    /// (jobs already running as many items as they may).
    pub async fn claim(&self, busy: Vec<String>) -> Result<Option<Claimed>, BatchError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let jobs: Vec<String> = {
                let mut q = tx.prepare("SELECT job_id FROM jobs WHERE state = 'open' ORDER BY rowid")?;
                q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            for job_id in jobs.into_iter().filter(|j| !busy.contains(j)) {
                let claimed: Option<(i64, String)> = tx
                    .query_row(
                        "UPDATE items SET state = ?2 WHERE job_id = ?1 AND item_index = \
                         (SELECT MIN(item_index) FROM items WHERE job_id = ?1 AND state = ?3) \
                         RETURNING item_index, input",
                        params![job_id, CLAIMED, WAITING],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((index, input)) = claimed {
                    let input: AskInput = serde_json::from_str(&input).map_err(|e| {
                        BatchError::Corrupt(format!("job {job_id} item {index}: stored input: {e}"))
                    })?;
                    tx.commit()?;
                    return Ok(Some(Claimed { job_id, item_index: index as u32, input }));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Puts a claimed item back in the queue (its worker could not record
    /// a result).
    pub async fn release(&self, job_id: &str, item_index: u32) -> Result<(), BatchError> {
        let job_id = job_id.to_string();
        self.with(move |conn| {
            conn.execute(
                "UPDATE items SET state = ?3 WHERE job_id = ?1 AND item_index = ?2 AND state = ?4",
                params![job_id, item_index as i64, WAITING, CLAIMED],
            )?;
            Ok(())
        })
        .await
    }

    /// Commits an item's result. Returns false when the item already had
    /// one (the job was cancelled meanwhile): the first result stands.
    pub async fn commit(&self, job_id: &str, item_index: u32, outcome: Outcome) -> Result<bool, BatchError> {
        let job_id = job_id.to_string();
        let inserted = self
            .with(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = now_ms();
                let inserted = insert_result(&tx, &job_id, item_index as i64, &outcome, now)?;
                if inserted {
                    tx.execute(
                        "UPDATE jobs SET state = 'completed', finished_ms = ?2 WHERE job_id = ?1 \
                         AND state = 'open' AND total = (SELECT COUNT(*) FROM results WHERE job_id = ?1)",
                        params![job_id, now],
                    )?;
                }
                tx.commit()?;
                Ok(inserted)
            })
            .await?;
        if inserted {
            self.bump();
        }
        Ok(inserted)
    }

    /// Up to `limit` results of a job from `offset` on, in commit order.
    pub async fn results(
        &self,
        job_id: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<ItemResult>, BatchError> {
        let job_id = job_id.to_string();
        self.with(move |conn| {
            let mut q = conn.prepare_cached(
                "SELECT item_index, seq, code, message, answer FROM results \
                 WHERE job_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = q.query_map(params![job_id, offset as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i32>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (index, seq, code, message, answer) = row?;
                let outcome = match (code, answer) {
                    (0, Some(json)) => Outcome::Answered(serde_json::from_str(&json).map_err(|e| {
                        BatchError::Corrupt(format!("job {job_id} item {index}: stored answer: {e}"))
                    })?),
                    (0, None) => {
                        return Err(BatchError::Corrupt(format!(
                            "job {job_id} item {index}: result has no answer"
                        )));
                    }
                    (code, _) => Outcome::Failed { code, message },
                };
                out.push(ItemResult { item_index: index as u32, offset: seq as u64, outcome });
            }
            Ok(out)
        })
        .await
    }

    /// Checkpoints the WAL into the main file and closes the connection.
    /// Later calls answer [`BatchError::Closed`].
    pub async fn close(&self) -> Result<(), BatchError> {
        let conn = self.conn.clone();
        let path = self.path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let taken =
                conn.lock().map_err(|_| BatchError::Corrupt(format!("{path}: lock poisoned")))?.take();
            let Some(conn) = taken else { return Ok(()) };
            let db = |source| BatchError::Db { path: path.clone(), source };
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(db)?;
            conn.close().map_err(|(_, e)| db(e))
        })
        .await?
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Inserts a result with the job's next offset; false when the item
/// already has one.
fn insert_result(
    conn: &Connection,
    job_id: &str,
    index: i64,
    outcome: &Outcome,
    now: i64,
) -> Result<bool, BatchError> {
    let (code, message, answer, usage) = match outcome {
        Outcome::Answered(a) => {
            let json = serde_json::to_string(a)
                .map_err(|e| BatchError::Corrupt(format!("cannot encode an answer: {e}")))?;
            (0, String::new(), Some(json), a.usage.clone())
        }
        Outcome::Failed { code, message } => (*code, message.clone(), None, Usage::default()),
    };
    let inserted = conn.execute(
        "INSERT INTO results (job_id, item_index, seq, code, message, answer, input_tokens, output_tokens, \
         cost_usd, model_calls, latency_ms, finished_ms) \
         SELECT ?1, ?2, COALESCE(MAX(seq) + 1, 0), ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 \
         FROM results WHERE job_id = ?1 \
         ON CONFLICT (job_id, item_index) DO NOTHING",
        params![
            job_id,
            index,
            code,
            message,
            answer,
            usage.input_tokens as i64,
            usage.output_tokens as i64,
            usage.cost_usd,
            usage.model_calls as i64,
            usage.latency_ms,
            now
        ],
    )?;
    if inserted == 1 {
        conn.execute(
            "UPDATE items SET state = ?3 WHERE job_id = ?1 AND item_index = ?2",
            params![job_id, index, FINISHED],
        )?;
    }
    Ok(inserted == 1)
}

/// A job's row in `jobs`.
struct JobRow {
    request_id: Option<String>,
    state: String,
    total: i64,
    created_ms: i64,
    finished_ms: Option<i64>,
}

/// Counts and sums over a job's results.
struct Tally {
    done: i64,
    failed: i64,
    cancelled: i64,
    /// Answered items whose cost is unknown.
    unknown_cost: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost: f64,
    calls: i64,
    latency: f64,
}

/// Reads a job's summary.
fn summary(conn: &Connection, job_id: &str) -> Result<JobSummary, BatchError> {
    let job = conn
        .query_row(
            "SELECT request_id, state, total, created_ms, finished_ms FROM jobs WHERE job_id = ?1",
            params![job_id],
            |r| {
                Ok(JobRow {
                    request_id: r.get(0)?,
                    state: r.get(1)?,
                    total: r.get(2)?,
                    created_ms: r.get(3)?,
                    finished_ms: r.get(4)?,
                })
            },
        )
        .optional()?;
    let Some(job) = job else {
        return Err(BatchError::NotFound(job_id.to_string()));
    };
    let t = conn.query_row(
        "SELECT COALESCE(SUM(code = 0), 0), COALESCE(SUM(code NOT IN (0, ?2)), 0), \
         COALESCE(SUM(code = ?2), 0), COALESCE(SUM(code = 0 AND cost_usd IS NULL), 0), \
         COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost_usd), 0.0), \
         COALESCE(SUM(model_calls), 0), COALESCE(SUM(latency_ms), 0.0) \
         FROM results WHERE job_id = ?1",
        params![job_id, CODE_CANCELLED],
        |r| {
            Ok(Tally {
                done: r.get(0)?,
                failed: r.get(1)?,
                cancelled: r.get(2)?,
                unknown_cost: r.get(3)?,
                input_tokens: r.get(4)?,
                output_tokens: r.get(5)?,
                cost: r.get(6)?,
                calls: r.get(7)?,
                latency: r.get(8)?,
            })
        },
    )?;
    let claimed: i64 = conn.query_row(
        "SELECT COUNT(*) FROM items WHERE job_id = ?1 AND state = ?2",
        params![job_id, CLAIMED],
        |r| r.get(0),
    )?;
    let finished = t.done + t.failed + t.cancelled;
    let state = match job.state.as_str() {
        "cancelled" => JobState::Cancelled,
        "completed" => JobState::Completed,
        _ if finished > 0 || claimed > 0 => JobState::Running,
        _ => JobState::Queued,
    };
    Ok(JobSummary {
        job_id: job_id.to_string(),
        request_id: job.request_id,
        state,
        total: job.total as u32,
        done: t.done as u32,
        failed: t.failed as u32,
        cancelled: t.cancelled as u32,
        pending: (job.total - finished).max(0) as u32,
        usage: Usage {
            input_tokens: t.input_tokens as u64,
            output_tokens: t.output_tokens as u64,
            cost_usd: (t.unknown_cost == 0).then_some(t.cost),
            model_calls: t.calls as u32,
            latency_ms: t.latency,
        },
        created_ms: job.created_ms as u64,
        finished_ms: job.finished_ms.map(|f| f as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(q: &str) -> AskInput {
        AskInput { query: q.into(), ..Default::default() }
    }

    fn failed(code: i32) -> Outcome {
        Outcome::Failed { code, message: "m".into() }
    }

    #[tokio::test]
    async fn claims_commit_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sqlite3");
        let (store, resumed) = Store::open(&path).unwrap();
        assert_eq!(resumed, 0);
        let (job, created) = store
            .submit(Some("r1".into()), "f".into(), vec![input("a"), input("b"), input("c")])
            .await
            .unwrap();
        assert!(created);
        assert_eq!((job.state, job.total, job.pending), (JobState::Queued, 3, 3));
        let (again, created) = store.submit(Some("r1".into()), "f".into(), vec![input("a")]).await.unwrap();
        assert!(!created);
        assert_eq!(again.job_id, job.job_id);
        assert!(matches!(
            store.submit(Some("r1".into()), "other".into(), vec![input("a")]).await,
            Err(BatchError::RequestIdReused(_))
        ));

        let first = store.claim(vec![]).await.unwrap().unwrap();
        assert_eq!((first.item_index, first.input.query.as_str()), (0, "a"));
        assert!(store.claim(vec![job.job_id.clone()]).await.unwrap().is_none(), "busy jobs are skipped");
        let second = store.claim(vec![]).await.unwrap().unwrap();
        assert_eq!(second.item_index, 1);
        assert!(store.commit(&job.job_id, 1, failed(14)).await.unwrap());
        assert!(!store.commit(&job.job_id, 1, failed(14)).await.unwrap(), "second result ignored");
        assert_eq!(store.job(&job.job_id).await.unwrap().state, JobState::Running);
        store.close().await.unwrap();
        assert!(matches!(store.job(&job.job_id).await, Err(BatchError::Closed)));

        // Item 0 was claimed when the store closed: reopening puts it back.
        let (store, resumed) = Store::open(&path).unwrap();
        assert_eq!(resumed, 1);
        let again = store.claim(vec![]).await.unwrap().unwrap();
        assert_eq!(again.item_index, 0);
        let results = store.results(&job.job_id, 0, 10).await.unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!((results[0].item_index, results[0].offset), (1, 0));

        let cancelled = store.cancel(&job.job_id).await.unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert_eq!((cancelled.failed, cancelled.cancelled, cancelled.pending), (1, 2, 0));
        // The in-flight item's answer after the cancel does not count.
        assert!(!store.commit(&job.job_id, 0, failed(2)).await.unwrap());
        let offsets: Vec<u64> =
            store.results(&job.job_id, 0, 10).await.unwrap().iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 1, 2]);
        assert!(matches!(store.job("nope").await, Err(BatchError::NotFound(_))));
    }
}
