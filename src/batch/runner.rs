//! The batch workers: one task claims waiting items (oldest job first,
//! skipping jobs at `batch.per_job_concurrency`) whenever one of
//! `batch.workers` slots is free, and runs each as a mesh `Ask` in its own
//! task. Batch items never take the gateway's real-time admission slots.
//!
//! On stop the claiming ends at once and running items get the grace
//! period to finish: workers stop at an item boundary. An item still
//! running after that is abandoned without a result, and the next start
//! runs it again (its claim is reset when the database opens; on
//! PostgreSQL it is handed back at close, or taken over by another replica
//! once its lease runs out). On PostgreSQL a running item's lease is
//! renewed every third of `batch.lease_ms`.
//!
//! Jobs that ended more than `batch.retention_days` ago are deleted once an
//! hour.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::store::{Claimed, Outcome};
use super::{Batch, BatchError};
use crate::config::BatchSettings;
use crate::mesh::{Ask, MeshHandle};

/// Whose budget a batch item is charged to: the gateway's per-key token
/// budgets (`gateway::admission`), seen from here as this trait so the
/// batch module does not depend on the gateway.
pub trait ItemBudget: Send + Sync {
    /// Reserves an item's tokens from `owner`'s budget. `Ok(None)`: nothing
    /// to charge; `Err(wait)`: the budget is spent for `wait` seconds.
    fn reserve<'a>(
        &'a self,
        owner: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<Box<dyn ItemCharge>>, f64>>;
}

/// An item's reservation, settled once with what its model calls used.
pub trait ItemCharge: Send {
    /// Where the mesh adds each finished step's tokens.
    fn meter(&self) -> Option<Arc<std::sync::atomic::AtomicU64>>;
    /// The item ended: charge what it used.
    fn finish(self: Box<Self>);
}

/// The running batch workers.
pub struct RunnerHandle {
    batch: Arc<Batch>,
    task: JoinHandle<JoinSet<()>>,
}

/// Starts the workers.
///
/// With `budget`, an item of a key's job is charged to that key's
/// token budget (`gateway.rate_limit_tpm`): reserved before it runs and
/// settled with what it used. A job whose owner's budget is spent waits
/// until it refills. Items do not count against the request rate: the
/// `SubmitBatch` call did.
pub fn start(
    batch: Arc<Batch>,
    mesh: Arc<MeshHandle>,
    budget: Option<Arc<dyn ItemBudget>>,
    settings: &BatchSettings,
    item_timeout: Duration,
) -> RunnerHandle {
    let workers = Arc::new(Semaphore::new(settings.workers.max(1)));
    let lease = Duration::from_millis(settings.lease_ms.max(1000));
    let task = tokio::spawn(claim_loop(batch.clone(), mesh, budget, workers, Timing { item_timeout, lease }));
    if settings.retention_days > 0 {
        tokio::spawn(retention(batch.clone(), settings.retention_days));
    }
    batch.wake();
    RunnerHandle { batch, task }
}

impl RunnerHandle {
    /// Stops claiming and waits up to `grace` for running items.
    pub async fn stop(self, grace: Duration) {
        self.batch.stopping.cancel();
        let mut items = match self.task.await {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "batch runner task failed");
                return;
            }
        };
        let waited = tokio::time::timeout(grace, async { while items.join_next().await.is_some() {} }).await;
        if waited.is_err() {
            tracing::warn!(
                items = items.len(),
                "grace period over; abandoning running batch items (they run again on the next start)"
            );
            items.shutdown().await;
        }
    }
}

/// Deletes old jobs once an hour (and once at start).
async fn retention(batch: Arc<Batch>, days: u32) {
    loop {
        match batch.store.purge(days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, days, "batch jobs past batch.retention_days deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot delete old batch jobs"),
        }
        tokio::select! {
            _ = batch.stopping.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// How long an item may run, and how long its claim lasts unrenewed.
#[derive(Clone, Copy)]
struct Timing {
    item_timeout: Duration,
    lease: Duration,
}

async fn claim_loop(
    batch: Arc<Batch>,
    mesh: Arc<MeshHandle>,
    budget: Option<Arc<dyn ItemBudget>>,
    workers: Arc<Semaphore>,
    timing: Timing,
) -> JoinSet<()> {
    // With leases, other replicas' expired claims are found by looking.
    let idle = if batch.store.leases() { Duration::from_secs(1) } else { Duration::from_secs(5) };
    let mut items = JoinSet::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = batch.stopping.cancelled() => break,
            permit = workers.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        // Reap finished item tasks so the set stays as small as the workers.
        while items.try_join_next().is_some() {}
        let claimed = loop {
            match batch.store.claim(batch.busy_jobs()).await {
                Ok(Some(c)) => break Some(c),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "cannot claim a batch item"),
            }
            // `notify_one` keeps a wake-up that came while we were claiming.
            tokio::select! {
                biased;
                _ = batch.stopping.cancelled() => break None,
                _ = batch.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        };
        let Some(claimed) = claimed else { break };
        let cancel = batch.started(&claimed.job_id);
        let (batch, mesh, budget) = (batch.clone(), mesh.clone(), budget.clone());
        items.spawn(async move {
            let _permit = permit;
            let settlement = match charge(&batch, budget, &claimed).await {
                Ok(s) => s,
                Err(()) => return batch.finished(&claimed.job_id),
            };
            run_item(&batch, &mesh, claimed, cancel, timing, settlement).await;
        });
    }
    items
}

/// Reserves an item's tokens from its owner's budget. A spent budget
/// puts the item back and holds its job until the budget refills.
async fn charge(
    batch: &Batch,
    budget: Option<Arc<dyn ItemBudget>>,
    claimed: &Claimed,
) -> Result<Option<Box<dyn ItemCharge>>, ()> {
    let (Some(budget), Some(owner)) = (budget, &claimed.owner) else { return Ok(None) };
    match budget.reserve(owner).await {
        Ok(charge) => Ok(charge),
        Err(wait) => {
            tracing::info!(job_id = %claimed.job_id, wait_s = wait, "the job's key has spent its token budget; its items wait");
            batch.throttle(&claimed.job_id, wait);
            if let Err(e) = batch.store.release(&claimed.job_id, claimed.item_index).await {
                tracing::error!(job_id = %claimed.job_id, error = %e, "cannot requeue a batch item");
            }
            Err(())
        }
    }
}

/// Runs one item and commits its result.
async fn run_item(
    batch: &Batch,
    mesh: &MeshHandle,
    claimed: Claimed,
    cancel: CancellationToken,
    timing: Timing,
    settlement: Option<Box<dyn ItemCharge>>,
) {
    let Claimed { job_id, item_index, input, .. } = claimed;
    let span = tracing::info_span!("batch.item", job_id = %job_id, item_index);
    let deadline = tokio::time::Instant::now() + timing.item_timeout;
    let trace_id = crate::telemetry::propagation::new_trace_id();
    // A job's items are their own conversations' owner: items of one job
    // that share a `session_id` are turns of one conversation, never
    // another job's or an interactive caller's.
    let owner = format!("batch:{job_id}");
    let ask = Ask::new(input, deadline, trace_id, span.clone())
        .with_cancel(cancel.clone())
        .with_owner(owner)
        .with_meter(settlement.as_ref().and_then(|s| s.meter()));
    // If this task is aborted (grace period over), the mesh work stops too.
    let guard = cancel.drop_guard();
    let asked = mesh.ask(ask);
    tokio::pin!(asked);
    let result = if batch.store.leases() {
        let mut renew = tokio::time::interval(timing.lease / 3);
        renew.tick().await;
        loop {
            tokio::select! {
                result = &mut asked => break result,
                _ = renew.tick() => match batch.store.renew(&job_id, item_index).await {
                    Ok(true) => {}
                    // Cancelled, or taken over: whichever result is
                    // committed first stands.
                    Ok(false) => {}
                    Err(e) => tracing::warn!(%job_id, item_index, error = %e, "cannot renew a batch item's lease"),
                },
            }
        }
    } else {
        asked.await
    };
    let outcome = match result {
        Ok(answer) => Outcome::Answered(Box::new(answer)),
        Err(e) => {
            span.in_scope(|| tracing::warn!(error = %e, "batch item failed"));
            Outcome::Failed { code: e.class().grpc_code(), message: e.public_message() }
        }
    };
    guard.disarm();
    if let Some(s) = settlement {
        s.finish();
    }
    if let Err(e) = commit(batch, &job_id, item_index, outcome).await {
        record_failure(batch, &job_id, item_index, e).await;
    }
    batch.finished(&job_id);
}

/// Commits a result, retrying for a while when the database is away (a
/// restarting server): the answer has been paid for.
async fn commit(batch: &Batch, job_id: &str, item_index: u32, outcome: Outcome) -> Result<bool, BatchError> {
    let mut wait = Duration::from_millis(250);
    for _ in 0..8 {
        match batch.store.commit(job_id, item_index, outcome.clone()).await {
            Err(BatchError::Postgres(e)) if crate::pg::is_transient(&e) => {
                tracing::warn!(%job_id, item_index, error = %e, "cannot record a batch result yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(8));
            }
            done => return done,
        }
    }
    batch.store.commit(job_id, item_index, outcome).await
}

/// The result could not be written: put the item back so it runs again
/// (on this start if the database recovers, else on the next).
async fn record_failure(batch: &Batch, job_id: &str, item_index: u32, error: BatchError) {
    tracing::error!(%job_id, item_index, %error, "cannot record a batch result; the item will run again");
    if let Err(e) = batch.store.release(job_id, item_index).await {
        tracing::error!(%job_id, item_index, error = %e, "cannot requeue a batch item");
    }
}
