//! Starting and stopping the gateway: bind, serve health as NOT_SERVING,
//! open the store (ingesting the corpus into an empty collection), start
//! the mesh, then report SERVING.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::GatewayService;
use super::admission::Admission;
use crate::config::{EmbedderProvider, MeshSpec, StoreBackend};
use crate::mesh::{MeshError, MeshHandle, Resources};
use crate::proto::gateway_server::GatewayServer;
use crate::retrieval::{self, RetrievalError, SharedEmbedder, SharedStore};

/// Why the gateway could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("retrieval: {0}")]
    Retrieval(#[from] RetrievalError),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server reflection: {0}")]
    Reflection(String),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("background task failed: {0}")]
    Join(String),
}

/// A running gateway.
pub struct ServerHandle {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    health: HealthReporter,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    mesh: Arc<OnceLock<Arc<MeshHandle>>>,
    /// The store, kept for tools and tests that inspect it.
    pub store: SharedStore,
    admission: Arc<Admission>,
    /// How long in-flight requests may take to finish on shutdown.
    grace: std::time::Duration,
}

impl ServerHandle {
    /// Graceful stop: health NOT_SERVING, new requests refused with
    /// UNAVAILABLE, in-flight ones given `shutdown_grace_ms` to finish, then
    /// the server and the mesh stop.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        set_health(&self.health, ServingStatus::NotServing).await;
        self.admission.drain();
        let drained = self.admission.wait_idle(self.grace).await;
        if !drained {
            tracing::warn!(
                in_flight = self.admission.in_flight(),
                grace_ms = self.grace.as_millis() as u64,
                "grace period over; stopping with requests in flight"
            );
        }
        if let Some(tx) = self.shutdown.take() {
            // The server may already have stopped; either way it is down.
            let _ = tx.send(());
        }
        // Connections still open after the grace period are not waited for.
        match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(served) => served.map_err(|e| ServeError::Join(e.to_string()))??,
            Err(_) => self.task.abort(),
        }
        Ok(())
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> usize {
        self.admission.in_flight()
    }

    /// Waits until the server stops on its own (it normally does not).
    pub async fn wait(&mut self) -> Result<(), ServeError> {
        let served = (&mut self.task).await.map_err(|e| ServeError::Join(e.to_string()))?;
        Ok(served?)
    }

    pub fn mesh_ready(&self) -> bool {
        self.mesh.get().is_some()
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status("meshops.v1.Gateway", status).await;
}

/// Opens the configured store and embedder.
pub async fn open_retrieval(spec: &MeshSpec) -> Result<(SharedStore, SharedEmbedder), ServeError> {
    let r = &spec.settings.retrieval;
    let embedder: SharedEmbedder = match r.embedder.provider {
        EmbedderProvider::Zero => Arc::new(retrieval::zero::ZeroEmbedder::new(r.embedder.dimension)),
        _ => Arc::new(retrieval::embed::OfflineEmbedder::new(r.embedder.dimension)),
    };
    if r.backend == StoreBackend::Zero {
        return Ok((Arc::new(retrieval::zero::ZeroStore::new(r.collection.clone())), embedder));
    }
    let data_dir = spec.resolve(&r.data_dir);
    let collection = r.collection.clone();
    let dimension = embedder.dimension();
    let store = tokio::task::spawn_blocking(move || {
        retrieval::edge::EdgeStore::open(&data_dir, &collection, dimension)
    })
    .await
    .map_err(|e| ServeError::Join(e.to_string()))??;
    Ok((Arc::new(store), embedder))
}

/// Ingests the configured corpus when the collection is empty.
pub async fn ingest_if_empty(
    spec: &MeshSpec,
    store: &SharedStore,
    embedder: &SharedEmbedder,
) -> Result<Option<retrieval::ingest::IngestReport>, ServeError> {
    let r = &spec.settings.retrieval;
    if !r.auto_ingest || store.count().await? > 0 {
        return Ok(None);
    }
    let paths: Vec<_> = r.corpus.iter().map(|p| spec.resolve(p)).collect();
    let opts =
        retrieval::chunk::ChunkOptions { max_chars: r.chunk_max_chars, overlap_chars: r.chunk_overlap_chars };
    let bar = indicatif::ProgressBar::hidden();
    let report =
        retrieval::ingest::ingest_paths(&paths, &opts, embedder.as_ref(), store.as_ref(), &bar).await?;
    tracing::info!(
        files = report.files,
        chunks = report.chunks,
        points = report.points,
        "ingested corpus into empty collection"
    );
    Ok(Some(report))
}

/// Replacements for parts the gateway would otherwise build from config:
/// tests and benchmarks use them to hold on to a model client they inspect.
#[derive(Default)]
pub struct Overrides {
    /// Model clients by profile name, used instead of the configured ones.
    pub models: std::collections::HashMap<String, crate::llm::SharedLlm>,
    /// API keys, instead of reading `gateway.api_keys_env`.
    pub api_keys: Option<Vec<String>>,
}

/// Starts the gateway on `listener` and returns once it is SERVING.
pub async fn start(spec: MeshSpec, listener: TcpListener) -> Result<ServerHandle, ServeError> {
    start_with(spec, listener, Overrides::default()).await
}

/// [`start`] with some parts replaced.
pub async fn start_with(
    spec: MeshSpec,
    listener: TcpListener,
    overrides: Overrides,
) -> Result<ServerHandle, ServeError> {
    let spec = Arc::new(spec);
    let addr = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha =
        reflection().build_v1alpha().map_err(|e| ServeError::Reflection(e.to_string()))?;

    let mesh_cell: Arc<OnceLock<Arc<MeshHandle>>> = Arc::new(OnceLock::new());
    let keys = overrides.api_keys.clone().unwrap_or_else(|| Admission::keys_from_env(&spec.settings.gateway));
    if let Some(var) = &spec.settings.gateway.api_keys_env {
        if keys.is_empty() {
            tracing::warn!(variable = %var, "gateway.api_keys_env names an unset or empty variable: no authentication");
        }
    }
    let admission = Arc::new(Admission::new(&spec.settings.gateway, keys));
    let gateway = GatewayService::new(
        mesh_cell.clone(),
        spec.settings.gateway.clone(),
        super::convert::describe(&spec),
        admission.clone(),
    );
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    // Small gRPC frames wait ~40 ms for delayed ACKs under Nagle's
    // algorithm; answers must leave at once.
    let incoming =
        futures::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
            conn.and_then(|stream| {
                stream.set_nodelay(true)?;
                Ok(stream)
            })
        });
    let task = tokio::spawn(
        Server::builder()
            .layer(tower::layer::layer_fn(|inner| StampArrival { inner }))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(GatewayServer::new(gateway))
            .serve_with_incoming_shutdown(incoming, async {
                // A dropped sender also means stop.
                let _ = shutdown_rx.await;
            }),
    );

    let (store, embedder) = open_retrieval(&spec).await?;
    ingest_if_empty(&spec, &store, &embedder).await?;
    let mut resources = Resources::build(&spec, store.clone(), embedder)?;
    resources.models.extend(overrides.models);
    let mesh_spec = spec.clone();
    let mesh = tokio::task::spawn_blocking(move || MeshHandle::start(mesh_spec, resources))
        .await
        .map_err(|e| ServeError::Join(e.to_string()))??;
    // Set exactly once, here; a second set cannot happen.
    let _ = mesh_cell.set(Arc::new(mesh));
    set_health(&health, ServingStatus::Serving).await;
    tracing::info!(%addr, collection = %spec.settings.retrieval.collection, "gateway serving");
    let grace = std::time::Duration::from_millis(spec.settings.gateway.shutdown_grace_ms);
    Ok(ServerHandle {
        addr,
        health,
        shutdown: Some(shutdown_tx),
        task,
        mesh: mesh_cell,
        store,
        admission,
        grace,
    })
}

/// When a call reached the server, stamped before decoding: the deadline
/// counts from here, the same instant tonic's own `grpc-timeout` timer
/// starts, so the gateway's deadline never lands after tonic's.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub tokio::time::Instant);

/// Tower service that stamps [`Arrival`] into each request's extensions.
#[derive(Debug, Clone)]
pub struct StampArrival<S> {
    inner: S,
}

impl<S, B> tower::Service<tonic::codegen::http::Request<B>> for StampArrival<S>
where
    S: tower::Service<tonic::codegen::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: tonic::codegen::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(Arrival(tokio::time::Instant::now()));
        self.inner.call(req)
    }
}
