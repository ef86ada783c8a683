//! The `meshops.v1.Batch` service: durable batch jobs over the same
//! admission (API keys, drain) as the real-time calls. The work itself is
//! done by [`crate::batch::runner`], outside the real-time slots.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::admission::{Admission, Admitted, Caller};
use super::{convert, error};
use crate::batch::{Batch, BatchError, Owners};
use crate::config::{GatewaySettings, MeshSpec};
use crate::proto;
use crate::proto::batch_server;

/// Results read from the database per query while streaming.
const PAGE: u32 = 256;

/// `ListBatches` page size when the request asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The largest `ListBatches` page; larger requests get this many.
pub const MAX_PAGE_SIZE: u32 = 100;

/// The `Batch` service implementation.
#[derive(Clone)]
pub struct BatchService {
    batch: Arc<Batch>,
    admission: Arc<Admission>,
    /// Per-item validation, the same as `Ask`'s.
    limits: Arc<GatewaySettings>,
    max_items: usize,
    /// Variant names a batch item may select, checked at submission so a
    /// typo fails the call instead of every item.
    variants: Arc<Vec<String>>,
}

impl BatchService {
    pub fn new(batch: Arc<Batch>, admission: Arc<Admission>, spec: &MeshSpec) -> Self {
        Self {
            batch,
            admission,
            limits: Arc::new(spec.settings.gateway.clone()),
            max_items: spec.settings.batch.max_items,
            variants: Arc::new(spec.settings.variants.keys().cloned().collect()),
        }
    }

    /// Authenticates and takes a real-time slot for the short unary calls
    /// (the slot is held only while the call itself runs).
    async fn admit<T>(&self, request: &Request<T>) -> Result<(Admitted, Option<Caller>), Status> {
        let caller = self.admission.authenticate(request.metadata()).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.limits.request_timeout_ms);
        Ok((self.admission.admit(deadline).await?, caller))
    }

    /// With API keys, a job is only its submitter's: another key's job is
    /// NOT_FOUND, the same answer as no job at all, so ids cannot be
    /// probed.
    async fn owned(&self, id: &str, caller: Option<Caller>) -> Result<(), Status> {
        let owner = self.batch.store.owner(id).await.map_err(error::batch_status)?;
        match self.admission.identity(caller) {
            Some(me) if owner.as_deref() != Some(me.as_str()) => {
                Err(error::batch_status(BatchError::NotFound(id.to_string())))
            }
            _ => Ok(()),
        }
    }
}

/// A `ListBatches` page token: where the previous page ended. Opaque to
/// clients; a token is only a position, and the caller's own filter still
/// applies to whatever follows it.
fn page_token(position: i64) -> String {
    format!("after-{position}")
}

fn parse_page_token(token: &str) -> Result<Option<i64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix("after-")
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| Status::invalid_argument("page_token is not one ListBatches returned"))
}

/// Longest `job_id` a request may name.
const MAX_JOB_ID_CHARS: usize = 128;

fn job_id(raw: &str) -> Result<String, Status> {
    let id = raw.trim();
    if id.is_empty() {
        return Err(Status::invalid_argument("job_id must not be empty"));
    }
    // Job ids are 36-character UUIDs; anything much longer is not one.
    if id.chars().count() > MAX_JOB_ID_CHARS {
        return Err(Status::invalid_argument(format!("job_id is longer than {MAX_JOB_ID_CHARS} characters")));
    }
    Ok(id.to_string())
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<proto::BatchResult, Status>> + Send>>;

#[tonic::async_trait]
impl batch_server::Batch for BatchService {
    async fn submit_batch(
        &self,
        request: Request<proto::SubmitBatchRequest>,
    ) -> Result<Response<proto::BatchJob>, Status> {
        let (_slot, caller) = self.admit(&request).await?;
        let (items, request_id) =
            convert::batch_items(request.into_inner(), &self.limits, self.max_items, &self.variants)
                .map_err(Status::invalid_argument)?;
        let fingerprint = crate::batch::fingerprint(&items);
        let count = items.len();
        let owner = self.admission.identity(caller);
        let (job, created) = self
            .batch
            .store
            .submit(owner, request_id, fingerprint, items, self.batch.quota)
            .await
            .map_err(error::batch_status)?;
        if created {
            tracing::info!(job_id = %job.job_id, items = count, "batch job stored");
            self.batch.wake();
        }
        Ok(Response::new(convert::batch_job(job)))
    }

    async fn get_batch(
        &self,
        request: Request<proto::GetBatchRequest>,
    ) -> Result<Response<proto::BatchJob>, Status> {
        let (_slot, caller) = self.admit(&request).await?;
        let id = job_id(&request.get_ref().job_id)?;
        self.owned(&id, caller).await?;
        let job = self.batch.store.job(&id).await.map_err(error::batch_status)?;
        Ok(Response::new(convert::batch_job(job)))
    }

    async fn list_batches(
        &self,
        request: Request<proto::ListBatchesRequest>,
    ) -> Result<Response<proto::ListBatchesResponse>, Status> {
        let (_slot, caller) = self.admit(&request).await?;
        let request = request.into_inner();
        let after = parse_page_token(&request.page_token)?;
        let size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        // With keys, a caller sees only its own jobs; without, there is no
        // one to tell apart.
        let owners = match self.admission.identity(caller) {
            Some(identity) => Owners::Only(identity),
            None => Owners::All,
        };
        let page = self.batch.store.list(owners, after, size).await.map_err(error::batch_status)?;
        Ok(Response::new(proto::ListBatchesResponse {
            jobs: page.jobs.into_iter().map(convert::batch_job).collect(),
            next_page_token: page.next.map(page_token).unwrap_or_default(),
        }))
    }

    async fn cancel_batch(
        &self,
        request: Request<proto::CancelBatchRequest>,
    ) -> Result<Response<proto::BatchJob>, Status> {
        let (_slot, caller) = self.admit(&request).await?;
        let id = job_id(&request.get_ref().job_id)?;
        self.owned(&id, caller).await?;
        let (job, stopped) = self.batch.store.cancel(&id).await.map_err(error::batch_status)?;
        self.batch.cancel_running(&id);
        // Logged for what happened: a cancel of a job that had already
        // ended changes nothing and says so.
        if stopped > 0 {
            tracing::info!(job_id = %id, items = stopped, "batch job cancelled");
        } else {
            tracing::info!(job_id = %id, state = ?job.state, "cancel of a batch job that had already ended: nothing to cancel");
        }
        Ok(Response::new(convert::batch_job(job)))
    }

    type StreamBatchResultsStream = ResultStream;

    async fn stream_batch_results(
        &self,
        request: Request<proto::StreamBatchResultsRequest>,
    ) -> Result<Response<ResultStream>, Status> {
        // The slot covers opening the stream; following a long job does not
        // hold one.
        let (slot, caller) = self.admit(&request).await?;
        let request = request.into_inner();
        let id = job_id(&request.job_id)?;
        self.owned(&id, caller).await?;
        let job = self.batch.store.job(&id).await.map_err(error::batch_status)?;
        let total = u64::from(job.total);
        if request.from_offset > total {
            return Err(error::batch_status(BatchError::OffsetOutOfRange {
                job_id: id,
                offset: request.from_offset,
                total: job.total,
            }));
        }
        drop(slot);
        let (tx, rx) = mpsc::channel(64);
        let batch = self.batch.clone();
        tokio::spawn(async move {
            let mut committed = batch.store.subscribe();
            let mut next = request.from_offset;
            // Every item gets exactly one result, numbered 0..total: the
            // stream is complete once `total` results went out.
            while next < total {
                committed.borrow_and_update();
                let page = match batch.store.results(&id, next, PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(error::batch_status(e))).await;
                        return;
                    }
                };
                if page.is_empty() {
                    tokio::select! {
                        changed = committed.changed() => if changed.is_err() { return },
                        _ = batch.stopping.cancelled() => {
                            let _ = tx.send(Err(Status::unavailable(format!(
                                "the gateway is shutting down; resume with from_offset = {next}"
                            )))).await;
                            return;
                        }
                        _ = tx.closed() => return,
                    }
                    continue;
                }
                for result in page {
                    next = result.offset + 1;
                    if tx.send(Ok(convert::batch_result(result))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
