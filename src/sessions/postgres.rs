//! The conversation store on PostgreSQL, shared by every replica
//! (`[sessions] backend = "postgres"`): a conversation's next turn may be
//! served by any of them.
//!
//! The same contract as the SQLite store: sessions by owner, a session's
//! last activity is its last append, expired sessions are invisible and
//! deleted, each append keeps the last `max_stored_turns`. Appends to one
//! session are serialised on its row (`INSERT … ON CONFLICT DO UPDATE`
//! locks it), so turn numbers never collide. Times are the database's
//! clock.

use std::time::Duration;

use deadpool_postgres::Pool;
use futures::future::BoxFuture;

use super::{SessionError, SessionStore, Turn};
use crate::pg::PgError;

const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

const MIGRATIONS: &[&str] = &["
CREATE TABLE sessions (
    owner          TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    last_active_ms BIGINT NOT NULL,
    next_seq       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, session_id)
);
CREATE INDEX sessions_last_active ON sessions (last_active_ms);
CREATE TABLE session_turns (
    owner       TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    at_ms       BIGINT NOT NULL,
    query_text  TEXT NOT NULL,
    answer_text TEXT NOT NULL,
    citations   TEXT NOT NULL,
    variant     TEXT NOT NULL,
    PRIMARY KEY (owner, session_id, seq),
    FOREIGN KEY (owner, session_id) REFERENCES sessions (owner, session_id) ON DELETE CASCADE
);
"];

/// Conversations in PostgreSQL.
pub struct PgSessions {
    pool: Pool,
    ttl_ms: i64,
    max_stored: i64,
}

impl std::fmt::Debug for PgSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSessions").field("ttl_ms", &self.ttl_ms).finish_non_exhaustive()
    }
}

fn db(e: impl Into<PgError>) -> SessionError {
    SessionError::Io { path: "postgres".into(), message: e.into().to_string() }
}

impl PgSessions {
    /// Connects and migrates.
    pub async fn open(url: &str, ttl: Duration, max_stored_turns: usize) -> Result<PgSessions, SessionError> {
        let pool = crate::pg::pool(url, 8, "sessions.url").map_err(db)?;
        crate::pg::migrate(&pool, "sessions", MIGRATIONS).await.map_err(db)?;
        tracing::info!(url = %crate::pg::redact(url), "conversations on postgres");
        Ok(PgSessions {
            pool,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            max_stored: i64::try_from(max_stored_turns.max(1)).unwrap_or(i64::MAX),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, SessionError> {
        self.pool.get().await.map_err(db)
    }

    /// Closes the pool; later calls answer [`SessionError::Closed`].
    pub fn close(&self) {
        self.pool.close();
    }
}

impl SessionStore for PgSessions {
    fn load<'a>(
        &'a self,
        owner: &'a str,
        session: &'a str,
        max_turns: usize,
    ) -> BoxFuture<'a, Result<Vec<Turn>, SessionError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let limit = i64::try_from(max_turns).unwrap_or(i64::MAX);
            let rows = client
                .query(
                    &format!(
                        "SELECT t.query_text, t.answer_text, t.citations, t.variant, t.at_ms FROM ( \
                           SELECT t.* FROM session_turns t JOIN sessions s \
                             ON s.owner = t.owner AND s.session_id = t.session_id \
                           WHERE t.owner = $1 AND t.session_id = $2 AND s.last_active_ms >= {NOW_MS} - $3 \
                           ORDER BY t.seq DESC LIMIT $4) t ORDER BY t.seq"
                    ),
                    &[&owner, &session, &self.ttl_ms, &limit],
                )
                .await
                .map_err(db)?;
            if rows.is_empty() {
                // Expired (or unknown): deleted, so it starts afresh.
                client
                    .execute(
                        &format!(
                            "DELETE FROM sessions WHERE owner = $1 AND session_id = $2 \
                             AND last_active_ms < {NOW_MS} - $3"
                        ),
                        &[&owner, &session, &self.ttl_ms],
                    )
                    .await
                    .map_err(db)?;
            }
            rows.iter()
                .map(|r| {
                    let citations: String = r.get(2);
                    Ok(Turn {
                        query: r.get(0),
                        answer: r.get(1),
                        citations: serde_json::from_str(&citations).map_err(|e| SessionError::Io {
                            path: "postgres".into(),
                            message: format!("stored citations: {e}"),
                        })?,
                        variant: r.get(3),
                        at_ms: r.get(4),
                    })
                })
                .collect()
        })
    }

    fn append<'a>(
        &'a self,
        owner: &'a str,
        session: &'a str,
        turn: Turn,
    ) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move {
            let citations = serde_json::to_string(&turn.citations)
                .map_err(|e| SessionError::Io { path: "postgres".into(), message: e.to_string() })?;
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db)?;
            // An expired session starts again without its old turns.
            tx.execute(
                &format!(
                    "DELETE FROM sessions WHERE owner = $1 AND session_id = $2 AND last_active_ms < {NOW_MS} - $3"
                ),
                &[&owner, &session, &self.ttl_ms],
            )
            .await
            .map_err(db)?;
            let row = tx
                .query_one(
                    &format!(
                        "INSERT INTO sessions (owner, session_id, last_active_ms, next_seq) \
                         VALUES ($1, $2, {NOW_MS}, 1) ON CONFLICT (owner, session_id) DO UPDATE \
                         SET last_active_ms = {NOW_MS}, next_seq = sessions.next_seq + 1 \
                         RETURNING next_seq - 1, {NOW_MS}"
                    ),
                    &[&owner, &session],
                )
                .await
                .map_err(db)?;
            let (seq, now): (i64, i64) = (row.get(0), row.get(1));
            let at_ms = if turn.at_ms == 0 { now } else { turn.at_ms };
            tx.execute(
                "INSERT INTO session_turns (owner, session_id, seq, at_ms, query_text, answer_text, citations, \
                 variant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&owner, &session, &seq, &at_ms, &turn.query, &turn.answer, &citations, &turn.variant],
            )
            .await
            .map_err(db)?;
            tx.execute(
                "DELETE FROM session_turns WHERE owner = $1 AND session_id = $2 AND seq <= $3::bigint - $4::bigint",
                &[&owner, &session, &seq, &self.max_stored],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)
        })
    }

    fn delete<'a>(&'a self, owner: &'a str, session: &'a str) -> BoxFuture<'a, Result<bool, SessionError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &format!(
                        "DELETE FROM sessions WHERE owner = $1 AND session_id = $2 \
                         RETURNING last_active_ms >= {NOW_MS} - $3"
                    ),
                    &[&owner, &session, &self.ttl_ms],
                )
                .await
                .map_err(db)?;
            Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
        })
    }

    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, SessionError>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute(
                    &format!("DELETE FROM sessions WHERE last_active_ms < {NOW_MS} - $1"),
                    &[&self.ttl_ms],
                )
                .await
                .map_err(db)
        })
    }
}
