//! The batch store the gateway was configured with: one SQLite file (one
//! process, the default) or PostgreSQL (shared by every replica). Both
//! keep the same contract: a result committed once per item, results
//! numbered per job in commit order, jobs owned by the submitting key.

use tokio::sync::watch;

use super::BatchError;
use super::postgres::PgStore;
use super::store::{Claimed, ItemResult, NewItem, Outcome, Quota, SqliteStore};
use super::summary::{JobPage, JobSummary, Owners};

/// The configured batch store.
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Calls the same method on whichever store this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => $call,
            Store::Postgres($s) => $call,
        }
    };
}

impl Store {
    /// A receiver that changes whenever results are committed (on any
    /// replica, for PostgreSQL).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        each!(self, s => s.subscribe())
    }

    /// Stores a new job of `owner`, or returns the one already stored under
    /// its `request_id` (the flag says whether it was created now).
    pub async fn submit(
        &self,
        owner: Option<String>,
        request_id: Option<String>,
        fingerprint: String,
        items: Vec<NewItem>,
        quota: Quota,
    ) -> Result<(JobSummary, bool), BatchError> {
        each!(self, s => s.submit(owner, request_id, fingerprint, items, quota).await)
    }

    pub async fn job(&self, job_id: &str) -> Result<JobSummary, BatchError> {
        each!(self, s => s.job(job_id).await)
    }

    pub async fn owner(&self, job_id: &str) -> Result<Option<String>, BatchError> {
        each!(self, s => s.owner(job_id).await)
    }

    pub async fn list(&self, owners: Owners, after: Option<i64>, limit: u32) -> Result<JobPage, BatchError> {
        each!(self, s => s.list(owners, after, limit).await)
    }

    pub async fn cancel(&self, job_id: &str) -> Result<(JobSummary, usize), BatchError> {
        each!(self, s => s.cancel(job_id).await)
    }

    pub async fn claim(&self, busy: Vec<String>) -> Result<Option<Claimed>, BatchError> {
        each!(self, s => s.claim(busy).await)
    }

    /// Keeps a running item this replica's. SQLite has no leases (the file
    /// is one process's): always true.
    pub async fn renew(&self, job_id: &str, item_index: u32) -> Result<bool, BatchError> {
        match self {
            Store::Sqlite(_) => Ok(true),
            Store::Postgres(s) => s.renew(job_id, item_index).await,
        }
    }

    /// Whether claims are leases other processes may take over.
    pub fn leases(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    pub async fn release(&self, job_id: &str, item_index: u32) -> Result<(), BatchError> {
        each!(self, s => s.release(job_id, item_index).await)
    }

    pub async fn commit(&self, job_id: &str, item_index: u32, outcome: Outcome) -> Result<bool, BatchError> {
        each!(self, s => s.commit(job_id, item_index, outcome).await)
    }

    pub async fn results(
        &self,
        job_id: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<ItemResult>, BatchError> {
        each!(self, s => s.results(job_id, offset, limit).await)
    }

    /// Deletes jobs that ended more than `days` days ago.
    pub async fn purge(&self, days: u32) -> Result<u64, BatchError> {
        each!(self, s => s.purge(days).await)
    }

    pub async fn close(&self) -> Result<(), BatchError> {
        each!(self, s => s.close().await)
    }
}
