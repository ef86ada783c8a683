//! The `meshops.v1.Admin` service: documents added to and removed from the
//! gateway's own open store while it serves, behind the same admission
//! (API keys, drain, in-flight bound) as every other call. The embedded
//! store admits one process at a time, so while a gateway runs this is the
//! way to change what it knows (`meshops ingest --target`).
//!
//! Writes run one at a time: two ingests of one document at once would
//! each prune the chunks the other just wrote. A write that has started
//! finishes even if its caller goes away, so a document is never left
//! half replaced (new chunks upserted, old ones not yet pruned).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{Mutex, mpsc};
use tonic::{Request, Response, Status};

use super::admission::Admission;
use super::{convert, error};
use crate::config::MeshSpec;
use crate::proto;
use crate::proto::admin_server;
use crate::retrieval::chunk::ChunkOptions;
use crate::retrieval::ingest;
use crate::retrieval::{SharedEmbedder, SharedStore};

/// The store the mesh searches and the embedder its retriever uses, once
/// the runtime has opened them.
pub struct Retrieval {
    pub store: SharedStore,
    pub embedder: SharedEmbedder,
}

/// The `Admin` service implementation.
#[derive(Clone)]
pub struct AdminService {
    /// Set once the runtime has opened the store; until then calls get
    /// UNAVAILABLE.
    retrieval: Arc<OnceLock<Retrieval>>,
    admission: Arc<Admission>,
    /// The chunking the corpus was ingested with, so added documents are cut
    /// the same way.
    chunking: ChunkOptions,
    /// One write at a time (see the module docs).
    writes: Arc<Mutex<()>>,
    /// How long a call may wait for an admission slot.
    queue_timeout: Duration,
}

impl AdminService {
    pub fn new(retrieval: Arc<OnceLock<Retrieval>>, admission: Arc<Admission>, spec: &MeshSpec) -> Self {
        let r = &spec.settings.retrieval;
        Self {
            retrieval,
            admission,
            chunking: ChunkOptions { max_chars: r.chunk_max_chars, overlap_chars: r.chunk_overlap_chars },
            writes: Arc::new(Mutex::new(())),
            queue_timeout: Duration::from_millis(spec.settings.gateway.request_timeout_ms),
        }
    }

    /// The store and embedder, or UNAVAILABLE while they open.
    fn retrieval(&self) -> Result<(SharedStore, SharedEmbedder), Status> {
        self.retrieval
            .get()
            .map(|r| (r.store.clone(), r.embedder.clone()))
            .ok_or_else(|| Status::unavailable("the store is opening; retry shortly"))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::IngestEvent, Status>> + Send>>;

fn progress_event(stored: usize, total: usize) -> proto::IngestEvent {
    proto::IngestEvent {
        event: Some(proto::ingest_event::Event::Progress(proto::IngestProgress {
            chunks_stored: u32::try_from(stored).unwrap_or(u32::MAX),
            chunks_total: u32::try_from(total).unwrap_or(u32::MAX),
        })),
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    type IngestStream = EventStream;

    async fn ingest(&self, request: Request<proto::IngestRequest>) -> Result<Response<EventStream>, Status> {
        let caller = self.admission.authenticate(request.metadata()).await?;
        let docs = convert::ingest_documents(request.into_inner()).map_err(Status::invalid_argument)?;
        let (store, embedder) = self.retrieval()?;
        // Held until the write is done: a drain waits for it.
        let slot = self.admission.admit(tokio::time::Instant::now() + self.queue_timeout).await?;
        let who = caller.map(|c| self.admission.label(c).to_string()).unwrap_or_default();
        let (writes, chunking) = (self.writes.clone(), self.chunking.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _slot = slot;
            let _write = writes.lock().await;
            let progress = |stored: usize, total: usize| {
                // Ignored: the caller may have gone; the write goes on.
                let _ = tx.send(Ok(progress_event(stored, total)));
            };
            let result =
                ingest::ingest_documents(&docs, &chunking, embedder.as_ref(), store.as_ref(), &progress)
                    .await;
            let last = match result {
                Ok(report) => {
                    tracing::info!(
                        caller = %who,
                        documents = report.files,
                        chunks = report.chunks,
                        stale_removed = report.pruned,
                        points = report.points,
                        "documents ingested"
                    );
                    Ok(convert::ingest_summary(&report, store.collection()))
                }
                Err(e) => {
                    tracing::warn!(caller = %who, error = %e, "ingest failed");
                    Err(error::retrieval_status(e))
                }
            };
            let _ = tx.send(last);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))))
    }

    async fn delete_documents(
        &self,
        request: Request<proto::DeleteDocumentsRequest>,
    ) -> Result<Response<proto::DeleteDocumentsResponse>, Status> {
        let caller = self.admission.authenticate(request.metadata()).await?;
        let ids = convert::document_ids(request.into_inner()).map_err(Status::invalid_argument)?;
        let (store, _) = self.retrieval()?;
        let slot = self.admission.admit(tokio::time::Instant::now() + self.queue_timeout).await?;
        let who = caller.map(|c| self.admission.label(c).to_string()).unwrap_or_default();
        // In its own task, like an ingest: a caller that goes away does not
        // stop a delete halfway through its documents.
        let writes = self.writes.clone();
        let report = tokio::spawn(async move {
            let _slot = slot;
            let _write = writes.lock().await;
            ingest::delete_documents(&ids, store.as_ref()).await
        })
        .await
        .map_err(|e| Status::internal(format!("the delete task failed: {e}")))?
        .map_err(error::retrieval_status)?;
        tracing::info!(caller = %who, chunks_removed = report.removed, points = report.points, "documents deleted");
        Ok(Response::new(proto::DeleteDocumentsResponse {
            chunks_removed: report.removed as u64,
            not_found: report.not_found,
            points: report.points as u64,
        }))
    }
}
