//! What answers a row: the in-process mesh (rows go in as `mesh::Ask`
//! messages) or a deployed gateway (`--target`, over gRPC), started once
//! per run and shut down after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::options::{BASE_VARIANT, RunOptions};
use crate::config::MeshSpec;
use crate::eval::EvalError;
use crate::eval::dataset::Row;
use crate::mesh::{Answer, Ask, AskInput, MeshHandle, Resources};
use crate::proto::gateway_client::GatewayClient;
use crate::retrieval::{SharedEmbedder, SharedStore};

/// Where a run's rows are answered.
pub enum Driver {
    /// The mesh and a handle on its store, kept to see when the mesh has
    /// let go of it.
    Mesh(MeshHandle, SharedStore),
    /// A deployed gateway's client (`--target`).
    Grpc(GatewayClient<tonic::transport::Channel>),
}

impl Driver {
    /// Asks one row (as `variant`, repeat `repeat`) within `timeout`; the
    /// error is the mesh's message or the gRPC code and message.
    pub async fn ask(
        &self,
        row: &Row,
        repeat: u32,
        variant: &str,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let variant_opt = (variant != BASE_VARIANT).then(|| variant.to_string());
        let session_id = format!("eval-{}-{repeat}", row.id);
        match self {
            Driver::Mesh(mesh, _) => {
                let cancel = CancellationToken::new();
                let ask = Ask {
                    input: AskInput {
                        query: row.query.clone(),
                        session_id,
                        variant: variant_opt,
                        metadata: BTreeMap::from([("source".to_string(), "eval".to_string())]),
                    },
                    events: None,
                    deadline: Some(tokio::time::Instant::now() + timeout),
                    cancel: cancel.clone(),
                    trace_id: uuid::Uuid::new_v4().simple().to_string(),
                    span: tracing::info_span!("eval.row", row = %row.id, repeat, variant = %variant),
                };
                // Cancelled if this future is dropped (e.g. the run stops).
                let _guard = cancel.drop_guard();
                mesh.ask(ask).await.map_err(|e| e.to_string())
            }
            Driver::Grpc(client) => {
                let mut client = client.clone();
                let mut req = tonic::Request::new(crate::proto::AskRequest {
                    query: row.query.clone(),
                    session_id,
                    variant: variant_opt.unwrap_or_default(),
                    metadata: [("source".to_string(), "eval".to_string())].into(),
                });
                req.set_timeout(timeout);
                match client.ask(req).await {
                    Ok(resp) => Ok(crate::client::answer_from_proto(resp.into_inner())),
                    Err(s) => Err(format!("gRPC {:?}: {}", s.code(), s.message())),
                }
            }
        }
    }

    /// Stops the mesh once nothing else holds the driver, and waits until
    /// it has let go of the store; a gRPC client just closes.
    pub async fn shutdown(driver: Arc<Driver>) {
        if let Ok(Driver::Mesh(mesh, store)) = Arc::try_unwrap(driver) {
            // Joining the mesh thread blocks; keep it off the runtime.
            let _ = tokio::task::spawn_blocking(move || mesh.shutdown()).await;
            release(store).await;
        }
    }
}

/// Connects to `opts.target`, or assembles and starts the mesh `spec`
/// describes: the one place a run builds what answers it (the shared
/// runtime assembly replaces this body once it exists).
pub async fn start_driver(spec: &MeshSpec, opts: &RunOptions) -> Result<Driver, EvalError> {
    if let Some(target) = &opts.target {
        let client = GatewayClient::connect(target.clone())
            .await
            .map_err(|e| EvalError::Run(format!("cannot connect to {target}: {e}")))?;
        return Ok(Driver::Grpc(client));
    }
    let startup = |e: String| EvalError::Run(format!("starting the mesh: {e}"));
    // Worded as the gateway's start-up words a store failure.
    let retrieval = |e: crate::retrieval::RetrievalError| startup(format!("retrieval: {e}"));
    let (store, embedder) = crate::retrieval::open(spec).await.map_err(retrieval)?;
    ingest_if_empty(spec, &store, &embedder).await.map_err(retrieval)?;
    let mut resources =
        Resources::build(spec, store.clone(), embedder).map_err(|e| startup(e.to_string()))?;
    resources.models.extend(opts.model_overrides.clone());
    let spec = Arc::new(spec.clone());
    let mesh = tokio::task::spawn_blocking(move || MeshHandle::start(spec, resources))
        .await
        .map_err(|e| startup(e.to_string()))?
        .map_err(|e| startup(e.to_string()))?;
    Ok(Driver::Mesh(mesh, store))
}

/// Ingests the configured corpus when the collection is empty, as `meshops
/// serve` does on start, so a run on a fresh data folder has passages to
/// cite. The same steps as the gateway's start-up; both go when the shared
/// runtime assembly owns them.
async fn ingest_if_empty(
    spec: &MeshSpec,
    store: &SharedStore,
    embedder: &SharedEmbedder,
) -> Result<(), crate::retrieval::RetrievalError> {
    let r = &spec.settings.retrieval;
    if !r.auto_ingest || store.count().await? > 0 {
        return Ok(());
    }
    let paths: Vec<_> = r.corpus.iter().map(|p| spec.resolve(p)).collect();
    let opts = crate::retrieval::chunk::ChunkOptions {
        max_chars: r.chunk_max_chars,
        overlap_chars: r.chunk_overlap_chars,
    };
    let bar = indicatif::ProgressBar::hidden();
    let report =
        crate::retrieval::ingest::ingest_paths(&paths, &opts, embedder.as_ref(), store.as_ref(), &bar)
            .await?;
    tracing::info!(
        files = report.files,
        chunks = report.chunks,
        points = report.points,
        "ingested corpus into empty collection"
    );
    Ok(())
}

/// Waits (up to 5 s) until the stopped mesh's worker arbiters have dropped
/// their agents' store handles: the embedded store locks its files, and a
/// second run in the same process (a resume, a test) must be able to open
/// it again.
async fn release(store: SharedStore) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&store) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if Arc::strong_count(&store) > 1 {
        tracing::warn!("the mesh still holds the store after shutdown");
    }
    drop(store);
}
