//! Live records on PostgreSQL, shared by every replica (`[live] backend =
//! "postgres"`): feedback reaches a record whichever replica answered it,
//! and `live export` / `live compare` read all replicas' traffic. One task
//! per replica writes the queue in batches, in order, as the SQLite
//! writer does; times are the recording replica's.

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use super::{ExportFilter, LiveError, Op, Record, Stored, export_row, now_ms, stored_variant};
use crate::pg::PgError;

const MIGRATIONS: &[&str] = &["
CREATE TABLE live_records (
    trace_id         TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    at_ms            BIGINT NOT NULL,
    variant          TEXT NOT NULL,
    intent           TEXT NOT NULL,
    latency_ms       DOUBLE PRECISION NOT NULL,
    input_tokens     BIGINT NOT NULL,
    output_tokens    BIGINT NOT NULL,
    cost_usd         DOUBLE PRECISION,
    model_calls      BIGINT NOT NULL,
    query            TEXT,
    answer           TEXT,
    citations        TEXT,
    feedback_score   DOUBLE PRECISION,
    feedback_comment TEXT,
    feedback_at_ms   BIGINT,
    scores           TEXT
);
CREATE INDEX live_records_at ON live_records (at_ms);
"];

async fn pool(url: &str) -> Result<Pool, LiveError> {
    let pool = crate::pg::pool(url, 4, "live.url")?;
    crate::pg::migrate(&pool, "live", MIGRATIONS).await?;
    Ok(pool)
}

/// Connects, migrates and starts the writer task on `rx`.
pub(super) async fn start(url: &str, rx: mpsc::Receiver<Op>) -> Result<(), LiveError> {
    let pool = pool(url).await?;
    tracing::info!(url = %crate::pg::redact(url), "live records on postgres");
    tokio::spawn(writer(pool, rx));
    Ok(())
}

async fn writer(pool: Pool, mut rx: mpsc::Receiver<Op>) {
    while let Some(first) = rx.recv().await {
        let mut ops = vec![first];
        while ops.len() < 256 {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        if let Err(e) = write(&pool, ops).await {
            tracing::error!(error = %e, "cannot write live records");
        }
    }
}

async fn write(pool: &Pool, ops: Vec<Op>) -> Result<(), PgError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut replies = Vec::new();
    for op in ops {
        match op {
            Op::Record(r) => insert(&tx, &r).await?,
            Op::Feedback { trace_id, owner, feedback, reply } => {
                let n = tx
                    .execute(
                        "UPDATE live_records SET feedback_score = $3, feedback_comment = $4, feedback_at_ms = $5 \
                         WHERE trace_id = $1 AND owner = $2",
                        &[&trace_id, &owner, &feedback.score, &feedback.comment, &now_ms()],
                    )
                    .await?;
                replies.push((reply, n == 1));
            }
            Op::Scores { trace_id, scores } => {
                tx.execute("UPDATE live_records SET scores = $2 WHERE trace_id = $1", &[&trace_id, &scores])
                    .await?;
            }
            Op::Purge(days) => {
                let before = now_ms() - i64::from(days) * 86_400_000;
                tx.execute("DELETE FROM live_records WHERE at_ms < $1", &[&before]).await?;
            }
        }
    }
    tx.commit().await?;
    // Answered once committed: a rating acknowledged is stored.
    for (reply, found) in replies {
        let _ = reply.send(Ok(found));
    }
    Ok(())
}

async fn insert(tx: &deadpool_postgres::Transaction<'_>, r: &Record) -> Result<(), PgError> {
    let (query, answer, citations) = r.content_columns();
    tx.execute(
        "INSERT INTO live_records (trace_id, owner, at_ms, variant, intent, latency_ms, input_tokens, \
         output_tokens, cost_usd, model_calls, query, answer, citations) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (trace_id) DO UPDATE SET owner = EXCLUDED.owner, at_ms = EXCLUDED.at_ms, \
         variant = EXCLUDED.variant, intent = EXCLUDED.intent, latency_ms = EXCLUDED.latency_ms, \
         input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens, \
         cost_usd = EXCLUDED.cost_usd, model_calls = EXCLUDED.model_calls, query = EXCLUDED.query, \
         answer = EXCLUDED.answer, citations = EXCLUDED.citations",
        &[
            &r.trace_id,
            &r.owner,
            &r.at_ms,
            &r.variant,
            &r.intent,
            &r.latency_ms,
            &(r.input_tokens as i64),
            &(r.output_tokens as i64),
            &r.cost_usd,
            &i64::from(r.model_calls),
            &query,
            &answer,
            &citations,
        ],
    )
    .await?;
    Ok(())
}

/// The records `filter` selects, oldest first, as export rows.
pub(super) async fn export(url: &str, filter: &ExportFilter) -> Result<Vec<serde_json::Value>, LiveError> {
    let pool = pool(url).await?;
    let client = pool.get().await.map_err(PgError::from)?;
    let rows = client
        .query(
            "SELECT trace_id, at_ms, variant, intent, latency_ms, input_tokens, output_tokens, cost_usd, \
             model_calls, query, answer, citations, feedback_score, feedback_comment, scores FROM live_records \
             WHERE ($1::bigint IS NULL OR at_ms >= $1) AND ($2::text IS NULL OR variant = $2) \
             AND (NOT $3 OR feedback_score IS NOT NULL) AND ($4::float8 IS NULL OR feedback_score >= $4) \
             ORDER BY at_ms, trace_id",
            &[&filter.since_ms, &stored_variant(filter), &filter.with_feedback, &filter.min_score],
        )
        .await
        .map_err(PgError::from)?;
    Ok(rows
        .iter()
        .map(|r| {
            export_row(Stored {
                trace_id: r.get(0),
                at_ms: r.get(1),
                variant: r.get(2),
                intent: r.get(3),
                latency_ms: r.get(4),
                input_tokens: r.get(5),
                output_tokens: r.get(6),
                cost_usd: r.get(7),
                model_calls: r.get(8),
                query: r.get(9),
                answer: r.get(10),
                citations: r.get(11),
                feedback_score: r.get(12),
                feedback_comment: r.get(13),
                scores: r.get(14),
            })
        })
        .collect())
}
