//! The batch store on PostgreSQL, shared by every replica (`[batch]
//! backend = "postgres"`).
//!
//! - A worker claims an item with `FOR UPDATE SKIP LOCKED` and holds it by
//!   a lease (`batch.lease_ms`, renewed while the item runs). A replica that
//!   dies stops renewing; once its lease has run out another replica claims
//!   the item. Times are the database's clock, so replicas' clocks need not
//!   agree.
//! - A result is committed once per item, as on SQLite: its key is
//!   `(job_id, item_index)`, and commits to one job are serialised on the
//!   job's row, which also numbers results densely in commit order.
//! - Every commit and every new job is announced with `NOTIFY`: result
//!   streams on any replica wake, and idle workers look for work.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::BatchError;
use super::codec::{decode_outcome, encode_items, encode_outcome};
use super::store::{Claimed, ItemResult, NewItem, Outcome, Quota};
use super::summary::{self, CLAIMED, CODE_CANCELLED, JobPage, JobSummary, Owners};
use crate::mesh::AskInput;
use crate::pg::PgError;

/// The database's clock, in Unix milliseconds.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
const WAITING: i16 = 0;
const FINISHED: i16 = 2;
/// The channel commits and new jobs are announced on.
const CHANNEL: &str = "meshops_batch";

/// Migration `n` takes the batch tables from version `n` to `n + 1`; only
/// ever appended to.
const MIGRATIONS: &[&str] = &["
CREATE TABLE batch_jobs (
    job_id      TEXT PRIMARY KEY,
    pos         BIGSERIAL UNIQUE,
    owner       TEXT,
    request_id  TEXT,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL,
    total       INTEGER NOT NULL,
    next_seq    INTEGER NOT NULL DEFAULT 0,
    created_ms  BIGINT NOT NULL,
    finished_ms BIGINT
);
CREATE UNIQUE INDEX batch_jobs_owner_request_id ON batch_jobs (coalesce(owner, ''), request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX batch_jobs_open ON batch_jobs (pos) WHERE state = 'open';
CREATE INDEX batch_jobs_owner ON batch_jobs (owner, pos);
CREATE INDEX batch_jobs_ended ON batch_jobs (finished_ms) WHERE state <> 'open';
CREATE TABLE batch_items (
    job_id         TEXT NOT NULL REFERENCES batch_jobs (job_id) ON DELETE CASCADE,
    item_index     INTEGER NOT NULL,
    item_id        TEXT,
    input          TEXT NOT NULL,
    state          SMALLINT NOT NULL DEFAULT 0,
    lease_owner    TEXT,
    lease_until_ms BIGINT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, item_index)
);
CREATE INDEX batch_items_open ON batch_items (job_id, item_index) WHERE state < 2;
CREATE TABLE batch_results (
    job_id        TEXT NOT NULL REFERENCES batch_jobs (job_id) ON DELETE CASCADE,
    item_index    INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    code          INTEGER NOT NULL,
    message       TEXT NOT NULL,
    answer        TEXT,
    input_tokens  BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd      DOUBLE PRECISION,
    model_calls   INTEGER NOT NULL DEFAULT 0,
    latency_ms    DOUBLE PRECISION NOT NULL DEFAULT 0,
    finished_ms   BIGINT NOT NULL,
    PRIMARY KEY (job_id, item_index),
    UNIQUE (job_id, seq)
);
"];

/// The batch tables on PostgreSQL.
pub struct PgStore {
    pool: Pool,
    /// This process's name on the leases it holds.
    replica: String,
    lease_ms: i64,
    /// Bumped on every announced commit (this replica's or another's).
    committed: Arc<watch::Sender<u64>>,
    /// Woken when another replica announces new work.
    work: Arc<Notify>,
    stop: CancellationToken,
}

impl PgStore {
    /// Connects, migrates, and starts listening for other replicas'
    /// announcements.
    pub async fn open(url: &str, lease: Duration, work: Arc<Notify>) -> Result<PgStore, BatchError> {
        let pool = crate::pg::pool(url, 16, "batch.url")?;
        crate::pg::migrate(&pool, "batch", MIGRATIONS).await?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "meshops".into());
        let replica =
            format!("{host}:{}:{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let (committed, _) = watch::channel(0);
        let committed = Arc::new(committed);
        let stop = CancellationToken::new();
        tokio::spawn(listen(url.to_string(), committed.clone(), work.clone(), stop.clone()));
        tracing::info!(%replica, url = %crate::pg::redact(url), "batch jobs on postgres");
        Ok(PgStore { pool, replica, lease_ms: lease.as_millis() as i64, committed, work, stop })
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, BatchError> {
        if self.stop.is_cancelled() {
            return Err(BatchError::Closed);
        }
        Ok(self.pool.get().await.map_err(PgError::from)?)
    }

    pub async fn submit(
        &self,
        owner: Option<String>,
        request_id: Option<String>,
        fingerprint: String,
        items: Vec<NewItem>,
        quota: Quota,
    ) -> Result<(JobSummary, bool), BatchError> {
        let encoded = encode_items(&items)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        // One submit per owner at a time: its quota and its request ids
        // are checked against what is committed.
        let key = owner.clone().unwrap_or_default();
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('meshops.batch.' || $1))", &[&key])
            .await
            .map_err(PgError::from)?;
        if let Some(rid) = &request_id {
            let existing = tx
                .query_opt(
                    "SELECT job_id, fingerprint FROM batch_jobs \
                     WHERE request_id = $1 AND coalesce(owner, '') = $2",
                    &[rid, &key],
                )
                .await
                .map_err(PgError::from)?;
            if let Some(row) = existing {
                let (job_id, stored): (String, String) = (row.get(0), row.get(1));
                if stored != fingerprint {
                    return Err(BatchError::RequestIdReused(rid.clone()));
                }
                let job = summary_in(&tx, &job_id).await?;
                return Ok((job, false));
            }
        }
        if let Some(owner) = &owner {
            let row = tx
                .query_one(
                    "SELECT count(*), coalesce(sum(total - next_seq), 0)::bigint FROM batch_jobs \
                     WHERE owner = $1 AND state = 'open'",
                    &[owner],
                )
                .await
                .map_err(PgError::from)?;
            quota.check(row.get(0), row.get(1), encoded.len())?;
        }
        let job_id = uuid::Uuid::new_v4().simple().to_string();
        let total = encoded.len() as i32;
        tx.execute(
            &format!(
                "INSERT INTO batch_jobs (job_id, owner, request_id, fingerprint, state, total, created_ms) \
                 VALUES ($1, $2, $3, $4, 'open', $5, {NOW_MS})"
            ),
            &[&job_id, &owner, &request_id, &fingerprint, &total],
        )
        .await
        .map_err(PgError::from)?;
        let indexes: Vec<i32> = (0..total).collect();
        let inputs: Vec<&str> = encoded.iter().map(|(input, _)| input.as_str()).collect();
        let ids: Vec<Option<&str>> = encoded.iter().map(|(_, id)| id.as_deref()).collect();
        tx.execute(
            "INSERT INTO batch_items (job_id, item_index, input, item_id) \
             SELECT $1::text, i, input, id FROM unnest($2::int[], $3::text[], $4::text[]) AS u(i, input, id)",
            &[&job_id, &indexes, &inputs, &ids],
        )
        .await
        .map_err(PgError::from)?;
        tx.execute("SELECT pg_notify($1, 'job')", &[&CHANNEL]).await.map_err(PgError::from)?;
        let job = summary_in(&tx, &job_id).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok((job, true))
    }

    pub async fn job(&self, job_id: &str) -> Result<JobSummary, BatchError> {
        let client = self.client().await?;
        summary_in(&client, job_id).await
    }

    pub async fn owner(&self, job_id: &str) -> Result<Option<String>, BatchError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT owner FROM batch_jobs WHERE job_id = $1", &[&job_id])
            .await
            .map_err(PgError::from)?;
        row.map(|r| r.get(0)).ok_or_else(|| BatchError::NotFound(job_id.to_string()))
    }

    pub async fn list(&self, owners: Owners, after: Option<i64>, limit: u32) -> Result<JobPage, BatchError> {
        let owner = match &owners {
            Owners::All => None,
            Owners::Only(o) => Some(o.as_str()),
        };
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT pos, job_id FROM batch_jobs WHERE ($1::text IS NULL OR owner = $1) \
                 AND ($2::bigint IS NULL OR pos < $2) ORDER BY pos DESC LIMIT $3",
                &[&owner, &after, &(i64::from(limit) + 1)],
            )
            .await
            .map_err(PgError::from)?;
        let more = rows.len() > limit as usize;
        let mut jobs = Vec::new();
        let mut last = None;
        for row in rows.iter().take(limit as usize) {
            let job_id: String = row.get(1);
            jobs.push(summary_in(&client, &job_id).await?);
            last = Some(row.get::<_, i64>(0));
        }
        Ok(JobPage { jobs, next: if more { last } else { None } })
    }

    pub async fn cancel(&self, job_id: &str) -> Result<(JobSummary, usize), BatchError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        let row = tx
            .query_opt("SELECT state, next_seq FROM batch_jobs WHERE job_id = $1 FOR UPDATE", &[&job_id])
            .await
            .map_err(PgError::from)?;
        let Some(row) = row else { return Err(BatchError::NotFound(job_id.to_string())) };
        let (state, next_seq): (String, i32) = (row.get(0), row.get(1));
        if state != "open" {
            let job = summary_in(&tx, job_id).await?;
            return Ok((job, 0));
        }
        let message = "the batch job was cancelled before this item finished";
        let stopped = tx
            .execute(
                &format!(
                    "INSERT INTO batch_results (job_id, item_index, seq, code, message, finished_ms) \
                     SELECT job_id, item_index, $2::int + (row_number() OVER (ORDER BY item_index))::int - 1, $3::int, $4::text, \
                     {NOW_MS} FROM batch_items WHERE job_id = $1 AND state <> $5 \
                     ON CONFLICT (job_id, item_index) DO NOTHING"
                ),
                &[&job_id, &next_seq, &CODE_CANCELLED, &message, &FINISHED],
            )
            .await
            .map_err(PgError::from)?;
        tx.execute(
            "UPDATE batch_items SET state = $2, lease_owner = NULL WHERE job_id = $1 AND state <> $2",
            &[&job_id, &FINISHED],
        )
        .await
        .map_err(PgError::from)?;
        tx.execute(
            &format!(
                "UPDATE batch_jobs SET state = 'cancelled', next_seq = next_seq + $2, finished_ms = {NOW_MS} \
                 WHERE job_id = $1"
            ),
            &[&job_id, &(stopped as i32)],
        )
        .await
        .map_err(PgError::from)?;
        tx.execute("SELECT pg_notify($1, 'result')", &[&CHANNEL]).await.map_err(PgError::from)?;
        let job = summary_in(&tx, job_id).await?;
        tx.commit().await.map_err(PgError::from)?;
        self.bump();
        Ok((job, stopped as usize))
    }

    /// Takes the next waiting item, or one whose lease ran out, from the
    /// oldest open job not in `busy`.
    pub async fn claim(&self, busy: Vec<String>) -> Result<Option<Claimed>, BatchError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "WITH next AS ( \
                       SELECT i.job_id, i.item_index, j.owner FROM batch_items i \
                       JOIN batch_jobs j ON j.job_id = i.job_id \
                       WHERE j.state = 'open' AND NOT (i.job_id = ANY($2)) \
                         AND (i.state = $4 OR (i.state = $5 AND i.lease_until_ms < {NOW_MS})) \
                       ORDER BY j.pos, i.item_index LIMIT 1 \
                       FOR UPDATE OF i SKIP LOCKED) \
                     UPDATE batch_items i SET state = $5, lease_owner = $1, \
                       lease_until_ms = {NOW_MS} + $3, attempts = i.attempts + 1 \
                     FROM next WHERE i.job_id = next.job_id AND i.item_index = next.item_index \
                     RETURNING i.job_id, i.item_index, i.input, i.attempts, next.owner"
                ),
                &[&self.replica, &busy, &self.lease_ms, &WAITING, &(CLAIMED as i16)],
            )
            .await
            .map_err(PgError::from)?;
        let Some(row) = row else { return Ok(None) };
        let (job_id, index, input, attempts, owner): (String, i32, String, i32, Option<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        if attempts > 1 {
            tracing::info!(%job_id, item_index = index, attempts, "batch item taken over after its lease ran out");
        }
        let input: AskInput = serde_json::from_str(&input)
            .map_err(|e| BatchError::Corrupt(format!("job {job_id} item {index}: stored input: {e}")))?;
        Ok(Some(Claimed { job_id, item_index: index as u32, input, owner }))
    }

    /// Extends this replica's lease on a running item; false when the item
    /// is no longer this replica's (it finished, was cancelled, or another
    /// replica took it over).
    pub async fn renew(&self, job_id: &str, item_index: u32) -> Result<bool, BatchError> {
        let client = self.client().await?;
        let n = client
            .execute(
                &format!(
                    "UPDATE batch_items SET lease_until_ms = {NOW_MS} + $4 \
                     WHERE job_id = $1 AND item_index = $2 AND lease_owner = $3 AND state = $5"
                ),
                &[&job_id, &(item_index as i32), &self.replica, &self.lease_ms, &(CLAIMED as i16)],
            )
            .await
            .map_err(PgError::from)?;
        Ok(n == 1)
    }

    pub async fn release(&self, job_id: &str, item_index: u32) -> Result<(), BatchError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE batch_items SET state = $4, lease_owner = NULL, lease_until_ms = NULL \
                 WHERE job_id = $1 AND item_index = $2 AND lease_owner = $3 AND state = $5",
                &[&job_id, &(item_index as i32), &self.replica, &WAITING, &(CLAIMED as i16)],
            )
            .await
            .map_err(PgError::from)?;
        self.work.notify_one();
        Ok(())
    }

    /// Commits an item's result; false when it already had one.
    pub async fn commit(&self, job_id: &str, item_index: u32, outcome: Outcome) -> Result<bool, BatchError> {
        let (code, message, answer, usage) = encode_outcome(&outcome)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        let row = tx
            .query_opt("SELECT next_seq FROM batch_jobs WHERE job_id = $1 FOR UPDATE", &[&job_id])
            .await
            .map_err(PgError::from)?;
        // Deleted (retention) while the item ran: nothing to record into.
        let Some(row) = row else { return Ok(false) };
        let seq: i32 = row.get(0);
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO batch_results (job_id, item_index, seq, code, message, answer, input_tokens, \
                     output_tokens, cost_usd, model_calls, latency_ms, finished_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, {NOW_MS}) \
                     ON CONFLICT (job_id, item_index) DO NOTHING"
                ),
                &[
                    &job_id,
                    &(item_index as i32),
                    &seq,
                    &code,
                    &message,
                    &answer,
                    &(usage.input_tokens as i64),
                    &(usage.output_tokens as i64),
                    &usage.cost_usd,
                    &(usage.model_calls as i32),
                    &usage.latency_ms,
                ],
            )
            .await
            .map_err(PgError::from)?
            == 1;
        if inserted {
            tx.execute(
                &format!(
                    "UPDATE batch_jobs SET next_seq = next_seq + 1, \
                     state = CASE WHEN state = 'open' AND next_seq + 1 >= total THEN 'completed' ELSE state END, \
                     finished_ms = CASE WHEN state = 'open' AND next_seq + 1 >= total THEN {NOW_MS} \
                                   ELSE finished_ms END \
                     WHERE job_id = $1"
                ),
                &[&job_id],
            )
            .await
            .map_err(PgError::from)?;
            tx.execute(
                "UPDATE batch_items SET state = $3, lease_owner = NULL WHERE job_id = $1 AND item_index = $2",
                &[&job_id, &(item_index as i32), &FINISHED],
            )
            .await
            .map_err(PgError::from)?;
            tx.execute("SELECT pg_notify($1, 'result')", &[&CHANNEL]).await.map_err(PgError::from)?;
        }
        tx.commit().await.map_err(PgError::from)?;
        if inserted {
            self.bump();
        }
        Ok(inserted)
    }

    pub async fn results(
        &self,
        job_id: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<ItemResult>, BatchError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT r.item_index, r.seq, r.code, r.message, r.answer, i.item_id FROM batch_results r \
                 LEFT JOIN batch_items i ON i.job_id = r.job_id AND i.item_index = r.item_index \
                 WHERE r.job_id = $1 AND r.seq >= $2 ORDER BY r.seq LIMIT $3",
                &[&job_id, &(offset as i32), &i64::from(limit)],
            )
            .await
            .map_err(PgError::from)?;
        rows.iter()
            .map(|r| {
                let (index, seq, code): (i32, i32, i32) = (r.get(0), r.get(1), r.get(2));
                let outcome = decode_outcome(job_id, i64::from(index), code, r.get(3), r.get(4))?;
                Ok(ItemResult { item_index: index as u32, offset: seq as u64, outcome, item_id: r.get(5) })
            })
            .collect()
    }

    /// Deletes jobs that ended more than `days` days ago (items and results
    /// go with them); returns how many.
    pub async fn purge(&self, days: u32) -> Result<u64, BatchError> {
        let client = self.client().await?;
        let n = client
            .execute(
                &format!("DELETE FROM batch_jobs WHERE state <> 'open' AND finished_ms < {NOW_MS} - $1"),
                &[&(i64::from(days) * 86_400_000)],
            )
            .await
            .map_err(PgError::from)?;
        Ok(n)
    }

    /// Gives back this replica's claims (another replica, or this one's
    /// next start, runs them) and stops listening.
    pub async fn close(&self) -> Result<(), BatchError> {
        if let Ok(client) = self.pool.get().await {
            let released = client
                .execute(
                    "UPDATE batch_items SET state = $2, lease_owner = NULL, lease_until_ms = NULL \
                     WHERE lease_owner = $1 AND state = $3",
                    &[&self.replica, &WAITING, &(CLAIMED as i16)],
                )
                .await
                .map_err(PgError::from)?;
            if released > 0 {
                let _ = client.execute("SELECT pg_notify($1, 'job')", &[&CHANNEL]).await;
                tracing::info!(items = released, "unfinished batch items handed back to the other replicas");
            }
        }
        self.stop.cancel();
        self.pool.close();
        Ok(())
    }

    fn bump(&self) {
        self.committed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A job's summary, read through any client or transaction.
async fn summary_in<C: deadpool_postgres::GenericClient>(
    c: &C,
    job_id: &str,
) -> Result<JobSummary, BatchError> {
    let row = c
        .query_opt(
            "SELECT j.request_id, j.state, j.total, j.created_ms, j.finished_ms, \
             count(r.code) FILTER (WHERE r.code = 0), \
             count(r.code) FILTER (WHERE r.code NOT IN (0, $2)), \
             count(r.code) FILTER (WHERE r.code = $2), \
             count(r.code) FILTER (WHERE r.code = 0 AND r.cost_usd IS NULL), \
             coalesce(sum(r.input_tokens), 0)::bigint, coalesce(sum(r.output_tokens), 0)::bigint, \
             coalesce(sum(r.cost_usd), 0)::float8, coalesce(sum(r.model_calls), 0)::bigint, \
             coalesce(sum(r.latency_ms), 0)::float8, \
             (SELECT count(*) FROM batch_items i WHERE i.job_id = j.job_id AND i.state = $3) \
             FROM batch_jobs j LEFT JOIN batch_results r ON r.job_id = j.job_id \
             WHERE j.job_id = $1 GROUP BY j.job_id",
            &[&job_id, &CODE_CANCELLED, &(CLAIMED as i16)],
        )
        .await
        .map_err(PgError::from)?;
    let Some(r) = row else { return Err(BatchError::NotFound(job_id.to_string())) };
    let job = summary::JobRow {
        request_id: r.get(0),
        state: r.get(1),
        total: i64::from(r.get::<_, i32>(2)),
        created_ms: r.get(3),
        finished_ms: r.get(4),
    };
    let tally = summary::Tally {
        done: r.get(5),
        failed: r.get(6),
        cancelled: r.get(7),
        unknown_cost: r.get(8),
        input_tokens: r.get(9),
        output_tokens: r.get(10),
        cost: r.get(11),
        calls: r.get(12),
        latency: r.get(13),
    };
    Ok(summary::assemble(job_id, job, tally, r.get(14)))
}

/// Listens for other replicas' announcements on a connection of its own,
/// reconnecting after a failure (and then waking everyone, since
/// announcements made meanwhile were missed).
async fn listen(url: String, committed: Arc<watch::Sender<u64>>, work: Arc<Notify>, stop: CancellationToken) {
    let bump = || {
        committed.send_modify(|n| *n = n.wrapping_add(1));
        work.notify_one();
    };
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        match listen_once(&url, &bump, &stop).await {
            Ok(()) => break,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures % 30 == 0 {
                    tracing::warn!(error = %e, "batch: lost the postgres notification connection; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        bump();
    }
}

async fn listen_once(url: &str, bump: &impl Fn(), stop: &CancellationToken) -> Result<(), PgError> {
    let config: tokio_postgres::Config =
        url.parse().map_err(|e| PgError::Config { what: "batch.url".into(), message: format!("{e}") })?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(crate::pg::tls_config());
    let (client, mut connection) = config.connect(tls).await?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    // The LISTEN only completes while the connection is being driven.
    loop {
        tokio::select! {
            done = &mut listen => { done?; break; }
            msg = messages.next() => match msg {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(PgError::Pool("the connection closed".into())),
            },
        }
    }
    bump();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            msg = messages.next() => match msg {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => bump(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(PgError::Pool("the connection closed".into())),
            },
        }
    }
}
