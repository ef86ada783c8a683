//! Conversations: a request with a non-empty `session_id` is a turn of one.
//!
//! The mesh stores each finished turn and hands the earlier turns of the
//! session to the agents that call a model. Stores sit behind one trait,
//! [`SessionStore`]:
//!
//! - [`sqlite`]: one SQLite file (`sessions.db` under the data directory),
//!   which several processes may share.
//! - [`postgres`]: PostgreSQL, shared by every replica.
//!
//! Sessions are namespaced by owner (the API key's label digest, or "" when
//! the gateway checks no keys), expire after a time without activity, and
//! keep at most a configured number of turns each.

pub mod postgres;
pub mod sqlite;

pub use postgres::PgSessions;
pub use sqlite::SqliteSessions;

use futures::future::BoxFuture;

/// One finished turn of a conversation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    /// What the caller asked.
    pub query: String,
    /// What the mesh answered.
    pub answer: String,
    /// doc ids (or "doc_id#chunk_id") the answer cited, in order.
    pub citations: Vec<String>,
    /// The variant that answered ("" = base).
    pub variant: String,
    /// Unix milliseconds when the turn was stored.
    pub at_ms: i64,
}

/// Why a session store call failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The database refused a statement.
    #[error("session store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file or its directory could not be used (or holds a schema this
    /// build does not know).
    #[error("session store {path}: {message}")]
    Io {
        /// The file or directory concerned.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The store was closed (the process is shutting down).
    #[error("session store is closed")]
    Closed,
    /// The blocking task running the call panicked or was cancelled.
    #[error("session store task failed: {0}")]
    Join(String),
}

/// The conversations, by owner and session id. `owner` is the API key's
/// label digest when keys are configured, else "" (everyone shares one
/// namespace). A session of one owner is invisible to every other owner: the
/// same session_id under another owner is another, fresh, session.
pub trait SessionStore: Send + Sync {
    /// The session's last `max_turns` turns, oldest first; empty for an
    /// unknown or expired session (an expired one is deleted).
    fn load<'a>(
        &'a self,
        owner: &'a str,
        session: &'a str,
        max_turns: usize,
    ) -> BoxFuture<'a, Result<Vec<Turn>, SessionError>>;
    /// Appends a turn (creating the session), refreshing its last activity.
    fn append<'a>(
        &'a self,
        owner: &'a str,
        session: &'a str,
        turn: Turn,
    ) -> BoxFuture<'a, Result<(), SessionError>>;
    /// Forgets a session; true when it existed (for this owner).
    fn delete<'a>(&'a self, owner: &'a str, session: &'a str) -> BoxFuture<'a, Result<bool, SessionError>>;
    /// Deletes every session idle longer than the TTL; returns how many.
    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, SessionError>>;
}

/// A session store shared by the gateway and the agents.
pub type SharedSessions = std::sync::Arc<dyn SessionStore>;
