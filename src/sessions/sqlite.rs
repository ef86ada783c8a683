//! The conversation store in one SQLite file: WAL mode, `synchronous =
//! FULL` so a turn is on disk before the request that made it is answered.
//!
//! One connection, behind a mutex, serves the process; every call runs on
//! tokio's blocking pool. Unlike the batch database, the file may be shared
//! by several processes: nothing locks it exclusively, and a writer waits up
//! to 5 s (`busy_timeout`) for another's transaction. Every call runs in one
//! `IMMEDIATE` transaction, so a load that finds its session expired can
//! delete it without racing another process's append.
//!
//! A session's last activity is the time of its last append (a load does
//! not refresh it). It is expired once idle longer than the TTL: loads see
//! nothing and delete it, an append deletes its old turns first and starts
//! it again, [`SessionStore::purge_expired`] deletes all such sessions at
//! once. Turns are numbered per session (`seq`); each append deletes the
//! oldest beyond `max_stored_turns`.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{SessionError, SessionStore, Turn};

/// The file [`SqliteSessions::open_in`] uses under the data directory.
pub const FILE_NAME: &str = "sessions.db";

/// Migration `n` takes the schema from version `n` to `n + 1` (version 0 is
/// an empty file). Only ever appended to: a file records how many it has
/// had in `PRAGMA user_version`.
const MIGRATIONS: [&str; 1] = [
    // 1: sessions by owner, and their turns.
    "CREATE TABLE IF NOT EXISTS sessions (
        owner          TEXT NOT NULL,
        session_id     TEXT NOT NULL,
        last_active_ms INTEGER NOT NULL,
        PRIMARY KEY (owner, session_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS sessions_last_active ON sessions(last_active_ms);
    CREATE TABLE IF NOT EXISTS turns (
        owner          TEXT NOT NULL,
        session_id     TEXT NOT NULL,
        seq            INTEGER NOT NULL,
        at_ms          INTEGER NOT NULL,
        query_text     TEXT NOT NULL,
        answer_text    TEXT NOT NULL,
        citations_json TEXT NOT NULL,
        variant        TEXT NOT NULL,
        PRIMARY KEY (owner, session_id, seq)
    ) WITHOUT ROWID;",
];

/// The conversation store in one SQLite file.
pub struct SqliteSessions {
    /// `None` once closed; every later call answers [`SessionError::Closed`].
    conn: Arc<Mutex<Option<Connection>>>,
    /// The file, for error messages.
    path: String,
    /// Idle time after which a session is expired, in milliseconds.
    ttl_ms: i64,
    /// Turns kept per session (at least 1).
    max_stored: i64,
    /// Now, in Unix milliseconds.
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl fmt::Debug for SqliteSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSessions")
            .field("path", &self.path)
            .field("ttl_ms", &self.ttl_ms)
            .field("max_stored_turns", &self.max_stored)
            .finish_non_exhaustive()
    }
}

impl SqliteSessions {
    /// Opens (creating it and its directory when needed) the store at
    /// `path`. Sessions idle longer than `ttl` are expired; each keeps its
    /// last `max_stored_turns` turns (at least 1). Blocking: call it from a
    /// blocking context.
    pub fn open(path: &Path, ttl: Duration, max_stored_turns: usize) -> Result<SqliteSessions, SessionError> {
        let label = path.display().to_string();
        let db = |source| SessionError::Sqlite { path: label.clone(), source };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| SessionError::Io {
                path: parent.display().to_string(),
                message: format!("cannot create the directory: {e}"),
            })?;
        }
        let mut conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SessionError::Io {
                path: label,
                message: format!("cannot switch the database to WAL mode (got `{mode}`)"),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        migrate(&mut conn, &label)?;
        Ok(SqliteSessions {
            conn: Arc::new(Mutex::new(Some(conn))),
            path: label,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            max_stored: i64::try_from(max_stored_turns.max(1)).unwrap_or(i64::MAX),
            clock: Box::new(system_now_ms),
        })
    }

    /// Opens the store at `data_dir/sessions.db` (see [`SqliteSessions::open`]).
    pub fn open_in(
        data_dir: &Path,
        ttl: Duration,
        max_stored_turns: usize,
    ) -> Result<SqliteSessions, SessionError> {
        SqliteSessions::open(&data_dir.join(FILE_NAME), ttl, max_stored_turns)
    }

    /// Replaces the clock (Unix milliseconds; the system time by default),
    /// so tests can move time without sleeping.
    pub fn with_clock(self, now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        SqliteSessions { clock: Box::new(now), ..self }
    }

    /// Closes the connection; later calls answer [`SessionError::Closed`].
    /// Closing again does nothing.
    pub async fn close(&self) -> Result<(), SessionError> {
        let shared = Arc::clone(&self.conn);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let taken = shared.lock().unwrap_or_else(PoisonError::into_inner).take();
            let Some(conn) = taken else { return Ok(()) };
            conn.close().map_err(|(_, source)| SessionError::Sqlite { path, source })
        })
        .await
        .map_err(|e| SessionError::Join(e.to_string()))?
    }

    /// Now, and the last activity before which a session is expired.
    fn now_and_cutoff(&self) -> (i64, i64) {
        let now = (self.clock)();
        (now, now.saturating_sub(self.ttl_ms))
    }

    /// Runs `f` on the connection on the blocking pool. A panic in an
    /// earlier call does not close the store: its transaction was rolled
    /// back when it unwound.
    async fn with<T, F>(&self, f: F) -> Result<T, SessionError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let shared = Arc::clone(&self.conn);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
            let conn = guard.as_mut().ok_or(SessionError::Closed)?;
            f(conn).map_err(|source| SessionError::Sqlite { path, source })
        })
        .await
        .map_err(|e| SessionError::Join(e.to_string()))?
    }
}

impl SessionStore for SqliteSessions {
    fn load<'a>(
        &'a self,
        owner: &'a str,
        session: &'a str,
        max_turns: usize,
    ) -> BoxFuture<'a, Result<Vec<Turn>, SessionError>> {
        Box::pin(async move {
            let (owner, session) = (owner.to_string(), session.to_string());
            let (_, cutoff) = self.now_and_cutoff();
            let limit = i64::try_from(max_turns).unwrap_or(i64::MAX);
            self.with(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let turns = match last_active(&tx, &owner, &session)? {
                    None => Vec::new(),
                    Some(last) if last < cutoff => {
                        forget(&tx, &owner, &session)?;
                        Vec::new()
                    }
                    Some(_) => recent_turns(&tx, &owner, &session, limit)?,
                };
                tx.commit()?;
                Ok(turns)
            })
            .await
        })
    }

    /// Appends a turn (creating the session), refreshing its last activity.
    /// A turn whose `at_ms` is 0 is stamped with the store's clock.
    fn append<'a>(
        &'a self,
        owner: &'a str,
        session: &'a str,
        turn: Turn,
    ) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move {
            let (owner, session) = (owner.to_string(), session.to_string());
            let (now, cutoff) = self.now_and_cutoff();
            let at_ms = if turn.at_ms == 0 { now } else { turn.at_ms };
            let max_stored = self.max_stored;
            self.with(move |conn| {
                let citations = serde_json::to_string(&turn.citations)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if last_active(&tx, &owner, &session)?.is_some_and(|last| last < cutoff) {
                    // Expired: the session starts again without its old turns.
                    tx.execute(
                        "DELETE FROM turns WHERE owner = ?1 AND session_id = ?2",
                        params![owner, session],
                    )?;
                }
                tx.execute(
                    "INSERT INTO sessions (owner, session_id, last_active_ms) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (owner, session_id) \
                     DO UPDATE SET last_active_ms = MAX(last_active_ms, excluded.last_active_ms)",
                    params![owner, session, now],
                )?;
                tx.execute(
                    "INSERT INTO turns (owner, session_id, seq, at_ms, query_text, answer_text, \
                     citations_json, variant) \
                     SELECT ?1, ?2, COALESCE(MAX(seq) + 1, 0), ?3, ?4, ?5, ?6, ?7 \
                     FROM turns WHERE owner = ?1 AND session_id = ?2",
                    params![owner, session, at_ms, turn.query, turn.answer, citations, turn.variant],
                )?;
                tx.execute(
                    "DELETE FROM turns WHERE owner = ?1 AND session_id = ?2 AND seq NOT IN \
                     (SELECT seq FROM turns WHERE owner = ?1 AND session_id = ?2 \
                      ORDER BY seq DESC LIMIT ?3)",
                    params![owner, session, max_stored],
                )?;
                tx.commit()
            })
            .await
        })
    }

    /// Forgets a session; true when it existed for this owner and had not
    /// expired (an expired one is deleted all the same).
    fn delete<'a>(&'a self, owner: &'a str, session: &'a str) -> BoxFuture<'a, Result<bool, SessionError>> {
        Box::pin(async move {
            let (owner, session) = (owner.to_string(), session.to_string());
            let (_, cutoff) = self.now_and_cutoff();
            self.with(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let live = last_active(&tx, &owner, &session)?.is_some_and(|last| last >= cutoff);
                forget(&tx, &owner, &session)?;
                tx.commit()?;
                Ok(live)
            })
            .await
        })
    }

    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, SessionError>> {
        Box::pin(async move {
            let (_, cutoff) = self.now_and_cutoff();
            self.with(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute(
                    "DELETE FROM turns WHERE EXISTS (SELECT 1 FROM sessions s \
                     WHERE s.owner = turns.owner AND s.session_id = turns.session_id \
                     AND s.last_active_ms < ?1)",
                    params![cutoff],
                )?;
                let purged = tx.execute("DELETE FROM sessions WHERE last_active_ms < ?1", params![cutoff])?;
                tx.commit()?;
                Ok(purged as u64)
            })
            .await
        })
    }
}

/// Brings the file's schema up to date, in the transaction that bumps its
/// version. A file from a newer meshops (a higher version) is refused rather
/// than written with an older idea of the schema.
fn migrate(conn: &mut Connection, path: &str) -> Result<(), SessionError> {
    let db = |source| SessionError::Sqlite { path: path.to_string(), source };
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(SessionError::Io {
            path: path.to_string(),
            message: format!(
                "the file has schema version {version}; this meshops knows up to {known} \
                 (written by a newer version?)"
            ),
        });
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", n as i64 + 1).map_err(db)?;
    }
    tx.commit().map_err(db)
}

/// The session's last activity; `None` when there is no such session.
fn last_active(conn: &Connection, owner: &str, session: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT last_active_ms FROM sessions WHERE owner = ?1 AND session_id = ?2",
        params![owner, session],
        |r| r.get(0),
    )
    .optional()
}

/// Deletes a session and its turns.
fn forget(conn: &Connection, owner: &str, session: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM turns WHERE owner = ?1 AND session_id = ?2", params![owner, session])?;
    conn.execute("DELETE FROM sessions WHERE owner = ?1 AND session_id = ?2", params![owner, session])?;
    Ok(())
}

/// The session's last `limit` turns, oldest first.
fn recent_turns(conn: &Connection, owner: &str, session: &str, limit: i64) -> rusqlite::Result<Vec<Turn>> {
    let mut q = conn.prepare_cached(
        "SELECT query_text, answer_text, citations_json, variant, at_ms FROM \
         (SELECT * FROM turns WHERE owner = ?1 AND session_id = ?2 ORDER BY seq DESC LIMIT ?3) \
         ORDER BY seq",
    )?;
    let rows = q.query_map(params![owner, session, limit], read_turn)?;
    rows.collect()
}

/// A row of [`recent_turns`].
fn read_turn(row: &Row<'_>) -> rusqlite::Result<Turn> {
    let citations: String = row.get(2)?;
    let citations = serde_json::from_str(&citations)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, Type::Text, Box::new(e)))?;
    Ok(Turn { query: row.get(0)?, answer: row.get(1)?, citations, variant: row.get(3)?, at_ms: row.get(4)? })
}

/// The system time in Unix milliseconds (0 before the epoch).
fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const START_MS: i64 = 1_700_000_000_000;

    fn turn(query: &str, at_ms: i64) -> Turn {
        Turn {
            query: query.to_string(),
            answer: format!("answer to {query}"),
            citations: vec![format!("doc-{query}"), format!("doc-{query}#2")],
            variant: "v2".to_string(),
            at_ms,
        }
    }

    fn queries(turns: &[Turn]) -> Vec<&str> {
        turns.iter().map(|t| t.query.as_str()).collect()
    }

    /// A store whose clock the test moves (it starts at `START_MS`).
    fn clocked(path: &Path, ttl: Duration, max_stored: usize) -> (SqliteSessions, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(START_MS));
        let clock = Arc::clone(&now);
        let store = SqliteSessions::open(path, ttl, max_stored)
            .unwrap()
            .with_clock(move || clock.load(Ordering::SeqCst));
        (store, now)
    }

    #[tokio::test]
    async fn two_appends_load_back_in_order_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let (store, now) = clocked(&dir.path().join("s.db"), HOUR, 50);
        let first = Turn {
            query: "what is WAL?".to_string(),
            answer: "A write-ahead log [1].".to_string(),
            citations: vec!["sqlite-docs#3".to_string(), "wal-paper".to_string()],
            variant: String::new(),
            at_ms: START_MS - 250,
        };
        store.append("", "s1", first.clone()).await.unwrap();
        now.store(START_MS + 1_000, Ordering::SeqCst);
        // No time given: the store's clock stamps it.
        store.append("", "s1", turn("and checkpoints?", 0)).await.unwrap();

        let loaded = store.load("", "s1", 10).await.unwrap();
        assert_eq!(loaded, vec![first, turn("and checkpoints?", START_MS + 1_000)]);
        assert_eq!(loaded[1].citations, vec!["doc-and checkpoints?", "doc-and checkpoints?#2"]);
        assert_eq!(loaded[1].variant, "v2");
        assert!(store.load("", "s2", 10).await.unwrap().is_empty(), "an unknown session is empty");
    }

    #[tokio::test]
    async fn max_turns_returns_the_last_ones_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = clocked(&dir.path().join("s.db"), HOUR, 50);
        for i in 0..5 {
            store.append("k", "s", turn(&format!("q{i}"), 10 + i)).await.unwrap();
        }
        let last_two = store.load("k", "s", 2).await.unwrap();
        assert_eq!(queries(&last_two), ["q3", "q4"]);
        assert_eq!(last_two.iter().map(|t| t.at_ms).collect::<Vec<_>>(), [13, 14]);
        assert!(store.load("k", "s", 0).await.unwrap().is_empty());
        assert_eq!(queries(&store.load("k", "s", 100).await.unwrap()), ["q0", "q1", "q2", "q3", "q4"]);
    }

    #[tokio::test]
    async fn another_owner_sees_nothing_and_cannot_delete() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = clocked(&dir.path().join("s.db"), HOUR, 50);
        store.append("alice", "s", turn("alice asks", 1)).await.unwrap();

        assert!(store.load("bob", "s", 10).await.unwrap().is_empty());
        assert!(store.load("", "s", 10).await.unwrap().is_empty());
        assert!(!store.delete("bob", "s").await.unwrap());
        assert_eq!(queries(&store.load("alice", "s", 10).await.unwrap()), ["alice asks"]);

        // The same session id under bob is bob's own, fresh, session.
        store.append("bob", "s", turn("bob asks", 2)).await.unwrap();
        assert_eq!(queries(&store.load("bob", "s", 10).await.unwrap()), ["bob asks"]);
        assert_eq!(queries(&store.load("alice", "s", 10).await.unwrap()), ["alice asks"]);
    }

    #[tokio::test]
    async fn a_deleted_session_is_empty_and_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = clocked(&dir.path().join("s.db"), HOUR, 50);
        store.append("k", "s", turn("a", 1)).await.unwrap();
        store.append("k", "s", turn("b", 2)).await.unwrap();
        store.append("k", "kept", turn("c", 3)).await.unwrap();

        assert!(store.delete("k", "s").await.unwrap());
        assert!(store.load("k", "s", 10).await.unwrap().is_empty());
        assert!(!store.delete("k", "s").await.unwrap(), "already gone");
        assert_eq!(queries(&store.load("k", "kept", 10).await.unwrap()), ["c"]);

        store.append("k", "s", turn("d", 4)).await.unwrap();
        assert_eq!(store.load("k", "s", 10).await.unwrap(), vec![turn("d", 4)]);
    }

    #[tokio::test]
    async fn idle_sessions_expire_and_an_append_starts_them_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let (store, now) = clocked(&dir.path().join("s.db"), ttl, 50);
        store.append("", "old", turn("a", 0)).await.unwrap();
        store.append("", "old", turn("b", 0)).await.unwrap();
        store.append("", "stale", turn("x", 0)).await.unwrap();

        // Idle exactly the TTL: not yet expired.
        now.store(START_MS + 60_000, Ordering::SeqCst);
        assert_eq!(queries(&store.load("", "old", 10).await.unwrap()), ["a", "b"]);

        // A millisecond more: expired, and the load deletes it.
        now.store(START_MS + 60_001, Ordering::SeqCst);
        assert!(store.load("", "old", 10).await.unwrap().is_empty());
        assert!(!store.delete("", "old").await.unwrap(), "the load deleted it");

        // An append to an expired session starts it again with one turn.
        store.append("", "stale", turn("y", 0)).await.unwrap();
        assert_eq!(store.load("", "stale", 10).await.unwrap(), vec![turn("y", START_MS + 60_001)]);
        assert_eq!(store.purge_expired().await.unwrap(), 0, "nothing idle is left");

        store.append("", "other", turn("z", 0)).await.unwrap();
        now.store(START_MS + 120_002, Ordering::SeqCst);
        assert_eq!(store.purge_expired().await.unwrap(), 2);
        assert!(store.load("", "stale", 10).await.unwrap().is_empty());
        assert!(store.load("", "other", 10).await.unwrap().is_empty());
        assert_eq!(store.purge_expired().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn sessions_survive_closing_and_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested").join("data");
        let store = SqliteSessions::open_in(&data_dir, HOUR, 50).unwrap();
        let (a, b) = (turn("a", system_now_ms()), turn("b", system_now_ms()));
        store.append("k", "s", a.clone()).await.unwrap();
        store.append("k", "s", b.clone()).await.unwrap();
        store.close().await.unwrap();
        assert!(matches!(store.load("k", "s", 10).await, Err(SessionError::Closed)));
        assert!(matches!(store.append("k", "s", turn("c", 1)).await, Err(SessionError::Closed)));
        store.close().await.unwrap();
        assert!(data_dir.join(FILE_NAME).is_file());

        let reopened = SqliteSessions::open_in(&data_dir, HOUR, 50).unwrap();
        assert_eq!(reopened.load("k", "s", 10).await.unwrap(), vec![a, b]);
    }

    #[tokio::test]
    async fn only_the_last_max_stored_turns_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (store, _) = clocked(&path, HOUR, 3);
        for i in 0..5 {
            store.append("k", "s", turn(&format!("q{i}"), i + 1)).await.unwrap();
        }
        assert_eq!(queries(&store.load("k", "s", 10).await.unwrap()), ["q2", "q3", "q4"]);
        store.append("k", "s", turn("q5", 6)).await.unwrap();
        assert_eq!(queries(&store.load("k", "s", 10).await.unwrap()), ["q3", "q4", "q5"]);

        let raw = Connection::open(&path).unwrap();
        let rows: i64 = raw.query_row("SELECT COUNT(*) FROM turns", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 3);
    }

    #[tokio::test]
    async fn two_stores_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let one = SqliteSessions::open(&path, HOUR, 50).unwrap();
        let two = SqliteSessions::open(&path, HOUR, 50).unwrap();
        one.append("k", "s", turn("a", 1)).await.unwrap();
        assert_eq!(two.load("k", "s", 10).await.unwrap(), vec![turn("a", 1)]);
        two.append("k", "s", turn("b", 2)).await.unwrap();
        assert_eq!(queries(&one.load("k", "s", 10).await.unwrap()), ["a", "b"]);
        assert!(two.delete("k", "s").await.unwrap());
        assert!(one.load("k", "s", 10).await.unwrap().is_empty());
    }

    #[test]
    fn a_file_from_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let err = SqliteSessions::open(&path, HOUR, 50).unwrap_err();
        assert!(matches!(err, SessionError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("schema version 99"), "{err}");

        // A current file opens again without migrating twice.
        let fresh = dir.path().join("fresh.db");
        drop(SqliteSessions::open(&fresh, HOUR, 50).unwrap());
        drop(SqliteSessions::open(&fresh, HOUR, 50).unwrap());
        let version: i64 =
            Connection::open(&fresh).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }
}
