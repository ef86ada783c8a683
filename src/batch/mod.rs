//! Durable batch jobs: many questions submitted as one job, answered in
//! the background by the same mesh `Ask` messages the real-time RPC sends.
//!
//! - [`store`]: the SQLite database (jobs, items, results), written before
//!   a call is answered; an item's result is committed once.
//! - [`postgres`]: the same on PostgreSQL, shared by replicas: claims are
//!   leases another replica takes over when they run out.
//! - [`backend`]: whichever of the two `[batch] backend` names.
//! - [`schema`]: its tables and the migrations that bring an older file up
//!   to date.
//! - [`summary`]: a job's state and counts, and pages of jobs newest first.
//! - [`runner`]: the workers that claim waiting items and run them, within
//!   `batch.workers` overall and `batch.per_job_concurrency` per job,
//!   outside the gateway's real-time slots.
//!
//! The gateway's `Batch` service validates requests and converts them; this
//! module sees no proto type. `meshops batch submit|status|results|cancel`,
//! a gRPC client of that service, lives in the binary (`cli::batch`).

pub mod backend;
mod codec;
pub mod postgres;
pub mod runner;
pub mod schema;
pub mod store;
pub mod summary;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{MeshSpec, StateBackend};
pub use backend::Store;
pub use store::{ItemResult, JobState, JobSummary, NewItem, Outcome, Quota, SqliteStore};
pub use summary::{JobPage, Owners};

/// Why a batch call or command failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch job `{0}` not found")]
    NotFound(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// The key's batch quota (`[batch] max_active_jobs_per_key`,
    /// `max_pending_items_per_key`) would be exceeded.
    #[error("{0}")]
    Quota(String),
    /// The shared PostgreSQL store failed.
    #[error("batch store: {0}")]
    Postgres(#[from] crate::pg::PgError),
    #[error("request_id `{0}` was already used for a batch with different items; use a new request_id")]
    RequestIdReused(String),
    #[error("offset {offset} is past the {total} results job `{job_id}` will have")]
    OffsetOutOfRange { job_id: String, offset: u64, total: u32 },
    #[error("batch database {path}: {source}")]
    Db { path: String, source: rusqlite::Error },
    /// A database error not yet tagged with the file (inside the store).
    #[error("batch database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("batch database: {0}")]
    Corrupt(String),
    #[error("the batch database is closed: the gateway is shutting down")]
    Closed,
    /// Another process (or an earlier open in this one) holds the file:
    /// two would both requeue each other's claimed items and run them
    /// twice.
    #[error(
        "batch database {path} is in use by {}; one gateway process per batch file (set [batch] db_path, or stop the other)",
        holder.map(|pid| format!("process {pid}")).unwrap_or_else(|| "another process".into())
    )]
    Locked { path: String, holder: Option<u32> },
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A bad line in a batch file (`meshops batch submit`).
    #[error("{path}:{line}: {message}")]
    Input { path: String, line: usize, message: String },
    /// The gateway could not be reached or answered with an error (CLI).
    #[error("{0}")]
    Client(String),
}

/// The batch database file: `batch.db_path`, or `batch.sqlite3` under
/// `retrieval.data_dir`.
pub fn db_path(spec: &MeshSpec) -> PathBuf {
    match &spec.settings.batch.db_path {
        Some(p) => spec.resolve(p),
        None => spec.resolve(&spec.settings.retrieval.data_dir).join("batch.sqlite3"),
    }
}

/// A job whose items are running in this process.
struct Running {
    in_flight: usize,
    /// Cancelled by `CancelBatch`: its running items stop before their next
    /// model call.
    cancel: CancellationToken,
}

/// What the gRPC service and the runner share.
pub struct Batch {
    pub store: Store,
    /// Wakes the runner: new items (here or, on PostgreSQL, on another
    /// replica), or a job slot freed.
    wake: std::sync::Arc<Notify>,
    /// Jobs with items in flight, by job id.
    running: Mutex<HashMap<String, Running>>,
    /// Jobs whose owner's token budget is spent, until when.
    throttled: Mutex<HashMap<String, std::time::Instant>>,
    /// Cancelled on shutdown: the runner stops claiming, streams end.
    pub stopping: CancellationToken,
    /// The file's lock, held while the database is open (SQLite).
    lock: Mutex<Option<crate::retrieval::lock::StoreLock>>,
    per_job: usize,
    /// What one key may have waiting.
    pub quota: Quota,
}

impl Batch {
    /// Opens the configured store: the SQLite file (on the blocking pool,
    /// logging how many items an earlier process left unfinished), or
    /// PostgreSQL (migrated, and listened to for other replicas' work).
    pub async fn open(spec: &MeshSpec) -> Result<Batch, BatchError> {
        let settings = &spec.settings.batch;
        let wake = std::sync::Arc::new(Notify::new());
        let (store, lock) = match settings.backend {
            StateBackend::Sqlite => {
                let path = db_path(spec);
                // Taken before the file is opened: opening requeues claimed items.
                let lock = crate::retrieval::lock::StoreLock::acquire(&path).map_err(|e| match e {
                    crate::retrieval::RetrievalError::Locked { holder, .. } => {
                        BatchError::Locked { path: path.display().to_string(), holder }
                    }
                    other => BatchError::Corrupt(other.to_string()),
                })?;
                let (store, resumed) =
                    tokio::task::spawn_blocking(move || SqliteStore::open(&path)).await??;
                if resumed > 0 {
                    tracing::info!(items = resumed, "batch items claimed before a restart are queued again");
                }
                (Store::Sqlite(store), Some(lock))
            }
            StateBackend::Postgres => {
                let url = crate::config::resolve_url(settings.url.as_deref(), settings.url_env.as_deref())
                    .ok_or_else(|| {
                        BatchError::InvalidRequest("batch.url (or batch.url_env) is not set".into())
                    })?;
                let lease = std::time::Duration::from_millis(settings.lease_ms.max(1000));
                (Store::Postgres(postgres::PgStore::open(&url, lease, wake.clone()).await?), None)
            }
        };
        Ok(Batch {
            store,
            wake,
            running: Mutex::new(HashMap::new()),
            throttled: Mutex::new(HashMap::new()),
            stopping: CancellationToken::new(),
            per_job: settings.per_job_concurrency.max(1),
            lock: Mutex::new(lock),
            quota: Quota {
                max_active_jobs: settings.max_active_jobs_per_key,
                max_pending_items: settings.max_pending_items_per_key,
            },
        })
    }

    /// Closes the database and lets go of its lock, so another process
    /// (or a restart in this one) may open the file.
    pub async fn close(&self) -> Result<(), BatchError> {
        let closed = self.store.close().await;
        match self.lock.lock() {
            Ok(mut lock) => drop(lock.take()),
            Err(poisoned) => drop(poisoned.into_inner().take()),
        }
        closed
    }

    /// Tells the runner there may be work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops the running items of a cancelled job.
    pub fn cancel_running(&self, job_id: &str) {
        if let Ok(running) = self.running.lock() {
            if let Some(r) = running.get(job_id) {
                r.cancel.cancel();
            }
        }
    }

    /// Jobs running as many items as they may, and jobs whose owner's
    /// budget is spent for now.
    fn busy_jobs(&self) -> Vec<String> {
        let mut busy: Vec<String> = self
            .running
            .lock()
            .map(|r| r.iter().filter(|(_, v)| v.in_flight >= self.per_job).map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        if let Ok(mut throttled) = self.throttled.lock() {
            let now = std::time::Instant::now();
            throttled.retain(|_, until| *until > now);
            busy.extend(throttled.keys().cloned());
        }
        busy
    }

    /// Holds a job's items back for `seconds` (its owner's token budget is
    /// spent).
    fn throttle(&self, job_id: &str, seconds: f64) {
        if let Ok(mut throttled) = self.throttled.lock() {
            let wait = std::time::Duration::from_secs_f64(seconds.clamp(0.1, 3600.0));
            throttled.insert(job_id.to_string(), std::time::Instant::now() + wait);
        }
    }

    /// Records an item starting; returns its cancellation token.
    fn started(&self, job_id: &str) -> CancellationToken {
        match self.running.lock() {
            Ok(mut running) => {
                let r = running
                    .entry(job_id.to_string())
                    .or_insert_with(|| Running { in_flight: 0, cancel: CancellationToken::new() });
                r.in_flight += 1;
                r.cancel.child_token()
            }
            Err(_) => CancellationToken::new(),
        }
    }

    /// Records an item ending and wakes the runner for the freed slot.
    fn finished(&self, job_id: &str) {
        if let Ok(mut running) = self.running.lock() {
            if let Some(r) = running.get_mut(job_id) {
                r.in_flight = r.in_flight.saturating_sub(1);
                if r.in_flight == 0 {
                    running.remove(job_id);
                }
            }
        }
        self.wake();
    }
}

/// A fingerprint of a job's items, so a reused `request_id` with other
/// items is told apart from a retry. An item's id counts only when it has
/// one, so items without ids fingerprint as they always have.
pub fn fingerprint(items: &[NewItem]) -> String {
    let mut bytes = Vec::new();
    for item in items {
        // Serializing plain strings and maps cannot fail; an empty
        // fingerprint would only weaken the reuse check.
        bytes.extend(serde_json::to_vec(&item.input).unwrap_or_default());
        if let Some(id) = &item.id {
            bytes.push(b'\t');
            bytes.extend(id.as_bytes());
        }
        bytes.push(b'\n');
    }
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &bytes).simple().to_string()
}
