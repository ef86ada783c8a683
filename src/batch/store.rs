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
//!
//! The tables and their migrations are in [`super::schema`]; reading a
//! job's summary and pages of jobs in [`super::summary`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::watch;

use super::BatchError;
pub use super::codec::{NewItem, Outcome};
use super::codec::{decode_outcome, encode_items, encode_outcome};
use super::summary::CLAIMED;
use super::summary::{self, JobPage, Owners, summary};
pub use super::summary::{CODE_CANCELLED, JobState, JobSummary};
use crate::mesh::AskInput;

/// Item states in `items.state`.
const WAITING: i64 = 0;
const FINISHED: i64 = 2;

/// One committed result.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    pub item_index: u32,
    /// Position in the job's results, in commit order.
    pub offset: u64,
    pub outcome: Outcome,
    /// The caller's id for the item, when it gave one.
    pub item_id: Option<String>,
}

/// How much one API key may have waiting (`[batch]` quotas; 0: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub max_active_jobs: u32,
    pub max_pending_items: u64,
}

impl Quota {
    /// Refuses a new job of `items` items for an owner with `active` open
    /// jobs and `pending` items without a result.
    pub fn check(&self, active: i64, pending: i64, items: usize) -> Result<(), BatchError> {
        if self.max_active_jobs > 0 && active >= i64::from(self.max_active_jobs) {
            return Err(BatchError::Quota(format!(
                "this API key has {active} unfinished batch jobs; the limit is {} (batch.max_active_jobs_per_key): \
                 wait for one to finish or cancel one",
                self.max_active_jobs
            )));
        }
        let max = self.max_pending_items;
        if max > 0 && pending.max(0) as u64 + items as u64 > max {
            return Err(BatchError::Quota(format!(
                "this API key has {pending} batch items waiting and submits {items} more; the limit is {max} \
                 (batch.max_pending_items_per_key)"
            )));
        }
        Ok(())
    }
}

/// An item a worker took.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job_id: String,
    pub item_index: u32,
    pub input: AskInput,
    /// The job's owner (the submitting key's identity), whose budget the
    /// item is charged to.
    pub owner: Option<String>,
}

/// The batch database.
pub struct SqliteStore {
    /// `None` once closed; every later call answers [`BatchError::Closed`].
    conn: Arc<Mutex<Option<Connection>>>,
    /// Bumped after each commit that adds results, so result streams wake.
    committed: watch::Sender<u64>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating when needed) the database at `path`, and puts items
    /// claimed by a previous process that left without answering them back
    /// in the queue. Blocking: call it from a blocking context.
    pub fn open(path: &Path) -> Result<(SqliteStore, u64), BatchError> {
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
        let mut conn = conn;
        super::schema::migrate(&mut conn).map_err(|e| match e {
            BatchError::Sqlite(source) => db(source),
            other => other,
        })?;
        let resumed = conn
            .execute("UPDATE items SET state = ?1 WHERE state = ?2", params![WAITING, CLAIMED])
            .map_err(db)? as u64;
        let (committed, _) = watch::channel(0);
        Ok((
            SqliteStore { conn: Arc::new(Mutex::new(Some(conn))), committed, path: path.to_path_buf() },
            resumed,
        ))
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

    /// Stores a new job of `owner` (the submitting key's identity; `None`
    /// when the gateway checks no keys), or returns the job already stored
    /// under `request_id` (the flag says whether it was created now). The
    /// same `request_id` with different items, or from another owner, is
    /// refused.
    pub async fn submit(
        &self,
        owner: Option<String>,
        request_id: Option<String>,
        fingerprint: String,
        items: Vec<NewItem>,
        quota: Quota,
    ) -> Result<(JobSummary, bool), BatchError> {
        let encoded = encode_items(&items)?;
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(rid) = &request_id {
                // Request ids are the owner's own: another key's job under
                // the same id is neither found nor in the way.
                let existing: Option<(String, String)> = tx
                    .query_row(
                        "SELECT job_id, fingerprint FROM jobs \
                         WHERE request_id = ?1 AND coalesce(owner, '') = coalesce(?2, '')",
                        params![rid, owner],
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
            if let Some(owner) = &owner {
                let (active, pending): (i64, i64) = tx.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(total - (SELECT COUNT(*) FROM results r WHERE r.job_id = j.job_id)), 0) \
                     FROM jobs j WHERE owner = ?1 AND state = 'open'",
                    params![owner],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                quota.check(active, pending, encoded.len())?;
            }
            let job_id = uuid::Uuid::new_v4().simple().to_string();
            tx.execute(
                "INSERT INTO jobs (job_id, request_id, fingerprint, state, total, created_ms, owner) \
                 VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6)",
                params![job_id, request_id, fingerprint, encoded.len() as i64, now_ms(), owner],
            )?;
            {
                let mut insert = tx.prepare(
                    "INSERT INTO items (job_id, item_index, input, item_id) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (i, (input, id)) in encoded.iter().enumerate() {
                    insert.execute(params![job_id, i as i64, input, id])?;
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

    /// The job's owner (the submitting key's identity; `None` when no keys
    /// were checked); [`BatchError::NotFound`] when there is no such job.
    pub async fn owner(&self, job_id: &str) -> Result<Option<String>, BatchError> {
        let job_id = job_id.to_string();
        self.with(move |conn| {
            conn.query_row("SELECT owner FROM jobs WHERE job_id = ?1", params![job_id], |r| r.get(0))
                .optional()?
                .ok_or(BatchError::NotFound(job_id))
        })
        .await
    }

    /// A page of jobs of `owners`, newest first, after the position
    /// `after` (see [`summary::page`]); at most `limit` jobs.
    pub async fn list(&self, owners: Owners, after: Option<i64>, limit: u32) -> Result<JobPage, BatchError> {
        self.with(move |conn| summary::page(conn, &owners, after, limit)).await
    }

    /// Cancels a job: every item without a result gets a CANCELLED result
    /// now (in-flight ones included, so their later answers are dropped).
    /// A finished or cancelled job is returned unchanged. Also returns how
    /// many items this cancel stopped (0: the job had already ended).
    pub async fn cancel(&self, job_id: &str) -> Result<(JobSummary, usize), BatchError> {
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
                    Some(_) => return Ok((summary(&tx, &job_id)?, 0)),
                }
                let open: Vec<i64> = {
                    let mut q = tx.prepare(
                        "SELECT item_index FROM items WHERE job_id = ?1 AND state != ?2 ORDER BY item_index",
                    )?;
                    q.query_map(params![job_id, FINISHED], |r| r.get(0))?.collect::<Result<_, _>>()?
                };
                let now = now_ms();
                let stopped = open.len();
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
                Ok((job, stopped))
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
            let jobs: Vec<(String, Option<String>)> = {
                let mut q =
                    tx.prepare("SELECT job_id, owner FROM jobs WHERE state = 'open' ORDER BY rowid")?;
                q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
            };
            for (job_id, owner) in jobs.into_iter().filter(|(j, _)| !busy.contains(j)) {
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
                    return Ok(Some(Claimed { job_id, item_index: index as u32, input, owner }));
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
                "SELECT r.item_index, r.seq, r.code, r.message, r.answer, i.item_id FROM results r \
                 LEFT JOIN items i ON i.job_id = r.job_id AND i.item_index = r.item_index \
                 WHERE r.job_id = ?1 AND r.seq >= ?2 ORDER BY r.seq LIMIT ?3",
            )?;
            let rows = q.query_map(params![job_id, offset as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i32>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (index, seq, code, message, answer, item_id) = row?;
                let outcome = decode_outcome(&job_id, index, code, message, answer)?;
                out.push(ItemResult { item_index: index as u32, offset: seq as u64, outcome, item_id });
            }
            Ok(out)
        })
        .await
    }

    /// Deletes finished and cancelled jobs (with their items and results)
    /// that ended more than `days` days ago; returns how many.
    pub async fn purge(&self, days: u32) -> Result<u64, BatchError> {
        let before = now_ms() - i64::from(days) * 86_400_000;
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let old = "SELECT job_id FROM jobs WHERE state != 'open' AND finished_ms < ?1";
            tx.execute(&format!("DELETE FROM results WHERE job_id IN ({old})"), params![before])?;
            tx.execute(&format!("DELETE FROM items WHERE job_id IN ({old})"), params![before])?;
            let deleted =
                tx.execute("DELETE FROM jobs WHERE state != 'open' AND finished_ms < ?1", params![before])?;
            tx.commit()?;
            Ok(deleted as u64)
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
    let (code, message, answer, usage) = encode_outcome(outcome)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn input(q: &str) -> NewItem {
        NewItem { id: None, input: AskInput { query: q.into(), ..Default::default() } }
    }

    fn failed(code: i32) -> Outcome {
        Outcome::Failed { code, message: "m".into() }
    }

    #[tokio::test]
    async fn claims_commit_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sqlite3");
        let (store, resumed) = SqliteStore::open(&path).unwrap();
        assert_eq!(resumed, 0);
        let (job, created) = store
            .submit(
                None,
                Some("r1".into()),
                "f".into(),
                vec![input("a"), input("b"), input("c")],
                Quota::default(),
            )
            .await
            .unwrap();
        assert!(created);
        assert_eq!((job.state, job.total, job.pending), (JobState::Queued, 3, 3));
        let (again, created) = store
            .submit(None, Some("r1".into()), "f".into(), vec![input("a")], Quota::default())
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(again.job_id, job.job_id);
        assert!(matches!(
            store.submit(None, Some("r1".into()), "other".into(), vec![input("a")], Quota::default()).await,
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
        let (store, resumed) = SqliteStore::open(&path).unwrap();
        assert_eq!(resumed, 1);
        let again = store.claim(vec![]).await.unwrap().unwrap();
        assert_eq!(again.item_index, 0);
        let results = store.results(&job.job_id, 0, 10).await.unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!((results[0].item_index, results[0].offset), (1, 0));

        let (cancelled, _) = store.cancel(&job.job_id).await.unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert_eq!((cancelled.failed, cancelled.cancelled, cancelled.pending), (1, 2, 0));
        // The in-flight item's answer after the cancel does not count.
        assert!(!store.commit(&job.job_id, 0, failed(2)).await.unwrap());
        let offsets: Vec<u64> =
            store.results(&job.job_id, 0, 10).await.unwrap().iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 1, 2]);
        assert!(matches!(store.job("nope").await, Err(BatchError::NotFound(_))));
    }

    #[tokio::test]
    async fn jobs_list_newest_first_by_owner_and_results_carry_item_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SqliteStore::open(&dir.path().join("b.sqlite3")).unwrap();
        let mut ids = Vec::new();
        for (i, owner) in ["k1", "k2", "k1", "k1"].iter().enumerate() {
            let item = NewItem { id: Some(format!("row-{i}")), ..input("q") };
            let (job, _) = store
                .submit(Some(owner.to_string()), None, "f".into(), vec![item], Quota::default())
                .await
                .unwrap();
            ids.push(job.job_id);
        }
        let k1 = Owners::Only("k1".into());
        let first = store.list(k1.clone(), None, 2).await.unwrap();
        let names = |p: &JobPage| p.jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>();
        assert_eq!(names(&first), vec![ids[3].clone(), ids[2].clone()]);
        let second = store.list(k1.clone(), first.next, 2).await.unwrap();
        assert_eq!(names(&second), vec![ids[0].clone()]);
        assert_eq!(second.next, None);
        let all = store.list(Owners::All, None, 10).await.unwrap();
        assert_eq!(all.jobs.len(), 4);
        assert_eq!(all.next, None);

        // A request id is its owner's own: another owner using it gets a
        // job of its own, never the first one (nor an error that says it
        // exists); the same owner gets its job back.
        let (mine, created) = store
            .submit(Some("k1".into()), Some("r".into()), "f".into(), vec![input("q")], Quota::default())
            .await
            .unwrap();
        assert!(created);
        let (theirs, created) = store
            .submit(Some("k2".into()), Some("r".into()), "f".into(), vec![input("q")], Quota::default())
            .await
            .unwrap();
        assert!(created && theirs.job_id != mine.job_id);
        let (again, created) = store
            .submit(Some("k1".into()), Some("r".into()), "f".into(), vec![input("q")], Quota::default())
            .await
            .unwrap();
        assert!(!created && again.job_id == mine.job_id);
        assert_eq!(store.owner(&mine.job_id).await.unwrap().as_deref(), Some("k1"));
        assert!(matches!(store.owner("nope").await, Err(BatchError::NotFound(_))));

        let claimed = store.claim(vec![]).await.unwrap().unwrap();
        assert_eq!(claimed.job_id, ids[0]);
        store.commit(&ids[0], 0, failed(14)).await.unwrap();
        let results = store.results(&ids[0], 0, 10).await.unwrap();
        assert_eq!(results[0].item_id.as_deref(), Some("row-0"));
    }

    #[tokio::test]
    async fn quotas_count_an_owners_open_work_and_retention_deletes_old_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SqliteStore::open(&dir.path().join("b.sqlite3")).unwrap();
        let quota = Quota { max_active_jobs: 2, max_pending_items: 3 };
        let k1 = || Some("k1".to_string());
        let (first, _) =
            store.submit(k1(), None, "a".into(), vec![input("a"), input("b")], quota).await.unwrap();
        // Two pending, two more would be four: over the item quota.
        let over = store.submit(k1(), None, "b".into(), vec![input("c"), input("d")], quota).await;
        assert!(
            matches!(&over, Err(BatchError::Quota(m)) if m.contains("max_pending_items_per_key")),
            "{over:?}"
        );
        store.submit(k1(), None, "c".into(), vec![input("c")], quota).await.unwrap();
        // Two open jobs: a third is refused, another key is not.
        let over = store.submit(k1(), None, "d".into(), vec![], quota).await;
        assert!(
            matches!(&over, Err(BatchError::Quota(m)) if m.contains("max_active_jobs_per_key")),
            "{over:?}"
        );
        store.submit(Some("k2".into()), None, "e".into(), vec![input("x")], quota).await.unwrap();
        // A cancelled job no longer counts.
        store.cancel(&first.job_id).await.unwrap();
        store.submit(k1(), None, "f".into(), vec![input("d"), input("e")], quota).await.unwrap();

        // Retention: nothing ended long enough ago; with 0 days, the ended
        // job goes with its items and results, open ones stay.
        assert_eq!(store.purge(1).await.unwrap(), 0);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(store.purge(0).await.unwrap(), 1);
        assert!(matches!(store.job(&first.job_id).await, Err(BatchError::NotFound(_))));
        assert!(store.results(&first.job_id, 0, 10).await.unwrap().is_empty());
        assert_eq!(store.list(Owners::All, None, 10).await.unwrap().jobs.len(), 3);
    }
}
