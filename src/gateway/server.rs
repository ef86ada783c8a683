//! Starting and stopping the gateway: bind, serve health as NOT_SERVING,
//! open the store (ingesting the corpus into an empty collection), start
//! the mesh and the batch workers, hand the open store to the `Admin`
//! service, then report SERVING.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::codegen::InterceptedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_reflection::server::{v1, v1alpha};

use super::GatewayService;
use super::admin::{AdminService, Retrieval};
use super::admission::Admission;
use crate::batch::{Batch, BatchError, runner::RunnerHandle};
use crate::config::MeshSpec;
use crate::config::keys::ApiKey;
use crate::mesh::{MeshError, MeshHandle, MeshThreads};
use crate::proto::admin_server::AdminServer;
use crate::proto::batch_server::BatchServer;
use crate::proto::gateway_server::GatewayServer;
use crate::retrieval::SharedStore;

/// Why the gateway could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A mesh thread stopped before the server instance meant for it
    /// could start there.
    #[error("a mesh thread stopped before the server started")]
    ThreadStopped,
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Live(#[from] crate::live::LiveError),
    #[error("online evaluation: {0}")]
    OnlineEval(#[from] crate::eval::EvalError),
    #[error("{field}: {message}")]
    Config { field: &'static str, message: String },
}

/// Admission with its per-key budgets where `limits_backend` says: this
/// process, or Redis shared by every replica (connected on first use).
fn shared_admission(
    g: &crate::config::GatewaySettings,
    keys: Vec<crate::config::keys::ApiKey>,
) -> Result<Admission, ServeError> {
    let admission = Admission::new(g, keys);
    if g.limits_backend != crate::config::LimitsBackend::Redis {
        return Ok(admission);
    }
    let url =
        crate::config::resolve_url(g.redis_url.as_deref(), g.redis_url_env.as_deref())
            .ok_or(ServeError::Config {
            field: "gateway.redis_url",
            message:
                "limits_backend is redis but neither redis_url nor the variable redis_url_env names is set"
                    .into(),
        })?;
    let shared = super::shared_limits::SharedLimits::connect(&url)
        .map_err(|message| ServeError::Config { field: "gateway.redis_url", message })?;
    tracing::info!(fallback = ?g.limits_fallback, "per-key limits shared in redis");
    Ok(admission.with_shared(shared))
}

/// The server's TLS set-up from `[gateway.tls]`: its identity and, for
/// mutual TLS, the CA client certificates must chain to. The files were
/// checked when the configuration loaded; they are read again here.
fn tls_config(
    spec: &MeshSpec,
    tls: &crate::config::TlsSettings,
) -> Result<tonic::transport::ServerTlsConfig, ServeError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let cert = crate::config::read_pem_certs(&spec.resolve(&tls.cert_path))
        .map_err(|message| ServeError::Config { field: "gateway.tls.cert_path", message })?;
    let key = crate::config::read_pem_key(&spec.resolve(&tls.key_path))
        .map_err(|message| ServeError::Config { field: "gateway.tls.key_path", message })?;
    // A client that never finishes its handshake must not hold a
    // connection (and a task) forever.
    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(std::time::Duration::from_secs(10));
    if let Some(ca) = &tls.client_ca_path {
        let ca = crate::config::read_pem_certs(&spec.resolve(ca))
            .map_err(|message| ServeError::Config { field: "gateway.tls.client_ca_path", message })?;
        config = config.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(config)
}

/// A running gateway.
pub struct ServerHandle {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Where the OpenAI-compatible HTTP API listens, when it is served.
    pub http_addr: Option<SocketAddr>,
    /// The HTTP API's server task.
    http_task: Option<JoinHandle<std::io::Result<()>>>,
    /// Where the MCP endpoint listens, when it is served.
    pub mcp_addr: Option<SocketAddr>,
    mcp_task: Option<JoinHandle<std::io::Result<()>>>,
    /// The mesh's MCP tools (for `meshops mcp` over stdio).
    mcp_tools: super::mcp::MeshTools,
    health: HealthReporter,
    shutdown: Option<watch::Sender<bool>>,
    /// Done when the server instances on all mesh threads are.
    task: JoinHandle<Result<(), ServeError>>,
    mesh: Arc<OnceLock<Arc<MeshHandle>>>,
    /// The store, kept for tools and tests that inspect it.
    pub store: SharedStore,
    admission: Arc<Admission>,
    /// How long in-flight requests may take to finish on shutdown.
    grace: std::time::Duration,
    /// The batch database, closed on shutdown.
    batch: Arc<Batch>,
    runner: Option<RunnerHandle>,
    /// The threads the server and the mesh run on.
    threads: Arc<MeshThreads>,
    /// The MCP servers the agents call, stopped with the server.
    mcp: Arc<crate::tools::mcp::McpHub>,
    /// A/B weights (reloadable) and live records.
    quality: Arc<super::quality::Quality>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        // Not shut down gracefully: stop serving and stop the mesh's
        // threads (the server instances on them hold the mesh).
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        for task in [self.http_task.take(), self.mcp_task.take()].into_iter().flatten() {
            task.abort();
        }
        self.threads.stop();
    }
}

impl ServerHandle {
    /// Graceful stop: new requests refused with UNAVAILABLE and health
    /// NOT_SERVING; then HTTP/2 GOAWAY on every connection at once (the
    /// listener closes, clients open their next calls on another replica
    /// instead of being refused here for the whole grace period); then
    /// in-flight requests and running batch items get `shutdown_grace_ms`
    /// to finish (batch workers claim nothing more), and the batch store is
    /// closed.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        // New calls are refused before health says so: a caller that sees
        // NOT_SERVING can count on the refusal.
        self.admission.drain();
        set_health(&self.health, ServingStatus::NotServing).await;
        if let Some(tx) = self.shutdown.take() {
            // GOAWAY now; the server task ends once its connections close.
            let _ = tx.send(true);
        }
        self.batch.stopping.cancel();
        let (runner, grace) = (self.runner.take(), self.grace);
        let runner = async move {
            if let Some(r) = runner {
                r.stop(grace).await;
            }
        };
        let (drained, ()) = tokio::join!(self.admission.wait_idle(self.grace), runner);
        if !drained {
            tracing::warn!(
                in_flight = self.admission.in_flight(),
                grace_ms = self.grace.as_millis() as u64,
                "grace period over; stopping with requests in flight"
            );
        }
        // Connections still open after the grace period are not waited for.
        let served = match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(served) => served?,
            Err(_) => Ok(()),
        };
        for mut task in [self.http_task.take(), self.mcp_task.take()].into_iter().flatten() {
            // Streams still open after the grace period are cut.
            if tokio::time::timeout(self.grace, &mut task).await.is_err() {
                task.abort();
            }
        }
        // Whatever still runs on the mesh's threads (connections left open
        // past the grace period) stops with them.
        self.threads.stop();
        self.mcp.shutdown().await;
        served?;
        self.batch.close().await?;
        Ok(())
    }

    /// Puts new A/B weights in force (`[gateway.ab]` reloaded on SIGHUP);
    /// requests already assigned keep their variant.
    pub fn set_ab(&self, ab: crate::config::ab::AbSettings) {
        self.quality.set_ab(ab);
    }

    /// The A/B weights in force.
    pub fn ab(&self) -> Arc<crate::config::ab::AbSettings> {
        self.quality.ab()
    }

    /// The mesh's MCP tools, calling this gateway in process.
    pub fn mcp_tools(&self) -> super::mcp::MeshTools {
        self.mcp_tools.clone()
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> usize {
        self.admission.in_flight()
    }

    /// Callers waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.admission.queued()
    }

    /// Waits until the server stops on its own (it normally does not).
    pub async fn wait(&mut self) -> Result<(), ServeError> {
        (&mut self.task).await?
    }

    pub fn mesh_ready(&self) -> bool {
        self.mesh.get().is_some()
    }

    /// How many times `agent`'s replicas were restarted after a panic.
    pub fn agent_restarts(&self, agent: &str) -> u64 {
        self.mesh.get().map(|m| m.agent_restarts(agent)).unwrap_or(0)
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status("meshops.v1.Gateway", status).await;
    health.set_service_status("meshops.v1.Batch", status).await;
    health.set_service_status("meshops.v1.Admin", status).await;
}

/// Replacements for parts the gateway would otherwise build from config:
/// tests and benchmarks use them to hold on to a model client they inspect.
#[derive(Default)]
pub struct Overrides {
    /// Model clients by profile name, used instead of the configured ones.
    pub models: std::collections::HashMap<String, crate::llm::SharedLlm>,
    /// Plain API keys, instead of reading `gateway.api_keys_env` and
    /// `gateway.api_keys_file`.
    pub api_keys: Option<Vec<String>>,
}

/// Starts the gateway on `listener` and returns once it is SERVING.
pub async fn start(spec: MeshSpec, listener: TcpListener) -> Result<ServerHandle, ServeError> {
    start_with(spec, listener, Overrides::default()).await
}

/// [`start`] with some parts replaced.
///
/// The order matters: health (NOT_SERVING), admission and the batch store
/// come first and the server starts serving on the mesh's threads before
/// the store opens and the agents start, so probes and batch submissions
/// are answered during a slow start; the mesh is set once it is up.
pub async fn start_with(
    spec: MeshSpec,
    listener: TcpListener,
    overrides: Overrides,
) -> Result<ServerHandle, ServeError> {
    let spec = Arc::new(spec);
    let addr = listener.local_addr()?;
    let health = HealthReporter::new();
    set_health(&health, ServingStatus::NotServing).await;

    let mesh_cell: Arc<OnceLock<Arc<MeshHandle>>> = Arc::new(OnceLock::new());
    let retrieval_cell: Arc<OnceLock<Retrieval>> = Arc::new(OnceLock::new());
    let keys = admission_keys(&spec, overrides.api_keys.as_deref())?;
    tracing::info!(
        keys = keys.len(),
        tls = spec.settings.gateway.tls.is_some(),
        "gateway admission configured"
    );
    let admission = Arc::new(shared_admission(&spec.settings.gateway, keys)?);
    let live =
        if spec.settings.live.enabled { Some(crate::live::LiveStore::open(&spec).await?) } else { None };
    let online = crate::eval::online::OnlineEval::start(&spec, live.clone())?;
    let quality = Arc::new(super::quality::Quality::new(spec.settings.gateway.ab.clone(), live, online));
    // Opened before serving: a job is acknowledged only once it is stored,
    // and jobs may be submitted while the mesh is still starting.
    let batch = Arc::new(Batch::open(&spec).await?);
    let services = Services {
        health: HealthServer::new(HealthService::from_health_reporter(health.clone())),
        reflection_v1: reflection().build_v1()?,
        reflection_v1alpha: reflection().build_v1alpha()?,
        reflection_gate: ReflectionGate {
            admission: admission.clone(),
            public: spec.settings.gateway.public_reflection,
        },
        connections: ConnectionLimits::of(&spec.settings.gateway),
        gateway: GatewayService::new(
            mesh_cell.clone(),
            spec.settings.gateway.clone(),
            super::convert::describe(&spec),
            admission.clone(),
            quality.clone(),
        ),
        batch: super::batch::BatchService::new(batch.clone(), admission.clone(), &spec),
        admin: AdminService::new(retrieval_cell.clone(), admission.clone(), &spec),
        tls: match &spec.settings.gateway.tls {
            Some(tls) => {
                let config = tls_config(&spec, tls)?;
                // Built here once so a bad identity fails the start, not
                // only the server instances on the mesh's threads.
                Server::builder().tls_config(config.clone())?;
                Some(config)
            }
            None => None,
        },
        max_message_bytes: spec.settings.gateway.max_message_bytes,
        max_metadata_entries: spec.settings.gateway.max_metadata_entries,
    };
    let mesh_threads = {
        let count = spec.settings.mesh.arbiters;
        tokio::task::spawn_blocking(move || MeshThreads::start(count)).await??
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (http_addr, http_task) = match &spec.settings.gateway.http_listen {
        Some(http) => {
            let variants = spec.settings.variants.keys().cloned().collect();
            let api = super::openai::HttpApi::new(services.gateway.clone(), variants);
            let router = api.router(spec.settings.gateway.max_message_bytes);
            let listener = TcpListener::bind(http.as_str()).await?;
            let http_addr = listener.local_addr()?;
            let mut stop = shutdown_rx.clone();
            let task = tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                    .await
            });
            tracing::info!(%http_addr, "OpenAI-compatible HTTP API listening");
            (Some(http_addr), Some(task))
        }
        None => (None, None),
    };
    let mcp_tools = super::mcp::MeshTools::new(services.gateway.clone());
    let (mcp_addr, mcp_task) = match &spec.settings.gateway.mcp_listen {
        Some(mcp) => {
            let listener = TcpListener::bind(mcp.as_str()).await?;
            let mcp_addr = listener.local_addr()?;
            let cancel = tokio_util::sync::CancellationToken::new();
            let router = super::mcp::router(mcp_tools.clone(), mcp_addr, cancel.clone());
            let mut stop = shutdown_rx.clone();
            let task = tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                        cancel.cancel();
                    })
                    .await
            });
            tracing::info!(%mcp_addr, "MCP endpoint listening at /mcp");
            (Some(mcp_addr), Some(task))
        }
        None => (None, None),
    };
    let gateway_service = services.gateway.clone();
    let task = serve_on_threads(&mesh_threads, listener, Arc::new(services), shutdown_rx)?;

    let options = crate::runtime::Options { models: overrides.models, threads: Some(mesh_threads.clone()) };
    let crate::runtime::Runtime { mesh, store, embedder, mcp, sessions } =
        crate::runtime::start(spec.clone(), options).await?;
    gateway_service
        .set_running(super::Running { mcp_servers: super::convert::mcp_servers(&spec, &mcp), sessions });
    let mesh = Arc::new(mesh);
    // Set exactly once, here; a second set cannot happen.
    let _ = mesh_cell.set(mesh.clone());
    let _ = retrieval_cell.set(Retrieval { store: store.clone(), embedder });
    let item_timeout = std::time::Duration::from_millis(spec.settings.gateway.request_timeout_ms);
    let runner = crate::batch::runner::start(
        batch.clone(),
        mesh,
        Some(Arc::new(super::admission::KeyBudgets(admission.clone()))),
        &spec.settings.batch,
        item_timeout,
    );
    set_health(&health, ServingStatus::Serving).await;
    tracing::info!(%addr, collection = %spec.settings.retrieval.collection, "gateway serving");
    let grace = std::time::Duration::from_millis(spec.settings.gateway.shutdown_grace_ms);
    Ok(ServerHandle {
        addr,
        http_addr,
        http_task,
        mcp_addr,
        mcp_task,
        mcp_tools,
        health,
        shutdown: Some(shutdown_tx),
        task,
        mesh: mesh_cell,
        store,
        admission,
        grace,
        batch,
        runner: Some(runner),
        threads: mesh_threads,
        mcp,
        quality,
    })
}

/// The API keys admission checks: the overrides' plain keys, else those of
/// `gateway.api_keys_env` and `gateway.api_keys_file`.
fn admission_keys(spec: &MeshSpec, plain: Option<&[String]>) -> Result<Vec<ApiKey>, ServeError> {
    if let Some(plain) = plain {
        return Ok(Admission::plain_keys(plain, "override"));
    }
    let gw = &spec.settings.gateway;
    let mut keys = Admission::keys_from_env(gw);
    if let Some(var) = &gw.api_keys_env {
        if keys.is_empty() {
            tracing::warn!(variable = %var, "gateway.api_keys_env names an unset or empty variable");
        }
    }
    if let Some(path) = &gw.api_keys_file {
        let from_file = crate::config::keys::read_key_file(&spec.resolve(path))
            .map_err(|message| ServeError::Config { field: "gateway.api_keys_file", message })?;
        keys.extend(from_file);
    }
    if keys.is_empty() && (gw.api_keys_env.is_some() || gw.api_keys_file.is_some()) {
        // Fail closed: configured keys that did not load are an outage,
        // not an open gateway.
        return Err(ServeError::Config {
            field: "gateway.api_keys_env",
            message: "API keys are configured but none were loaded (an unset or empty variable, an empty \
                      file); refusing to serve without authentication"
                .into(),
        });
    }
    Ok(keys)
}

/// The HTTP/2 connection settings of `[gateway]`.
#[derive(Clone, Copy)]
struct ConnectionLimits {
    max_concurrent_streams: u32,
    http2_keepalive_interval_ms: u64,
    http2_keepalive_timeout_ms: u64,
    max_connection_age_ms: u64,
}

impl ConnectionLimits {
    fn of(g: &crate::config::GatewaySettings) -> Self {
        Self {
            max_concurrent_streams: g.max_concurrent_streams,
            http2_keepalive_interval_ms: g.http2_keepalive_interval_ms,
            http2_keepalive_timeout_ms: g.http2_keepalive_timeout_ms,
            max_connection_age_ms: g.max_connection_age_ms,
        }
    }
}

/// Reflection's key check: with API keys configured, a reflection call
/// needs one (the service list is not public) unless
/// `gateway.public_reflection` opens it. Charges no rate limit.
#[derive(Clone)]
struct ReflectionGate {
    admission: Arc<Admission>,
    public: bool,
}

impl tonic::service::Interceptor for ReflectionGate {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.public {
            self.admission.verify_key(request.metadata())?;
        }
        Ok(request)
    }
}

/// Server reflection over meshops' and the health service's descriptors.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Everything one server instance serves, shared by the instances on the
/// mesh's threads (each clones the services it adds).
/// Generic over the reflection services, whose types tonic-reflection
/// does not name.
struct Services<R1, R0> {
    health: HealthServer<HealthService>,
    reflection_v1: v1::ServerReflectionServer<R1>,
    reflection_v1alpha: v1alpha::ServerReflectionServer<R0>,
    /// Checks a reflection call's key (unless reflection is public).
    reflection_gate: ReflectionGate,
    /// HTTP/2 connection limits: streams, keepalive pings, age.
    connections: ConnectionLimits,
    gateway: GatewayService,
    batch: super::batch::BatchService,
    admin: AdminService,
    /// `None` serves plaintext (h2c).
    tls: Option<tonic::transport::ServerTlsConfig>,
    max_message_bytes: usize,
    max_metadata_entries: usize,
}

impl<R1: v1::ServerReflection, R0: v1alpha::ServerReflection> Services<R1, R0> {
    /// One server instance accepting from `listener` until `stop` says so.
    async fn serve(
        &self,
        listener: std::net::TcpListener,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ServeError> {
        let c = &self.connections;
        let ms = |v: u64| (v > 0).then(|| std::time::Duration::from_millis(v));
        let mut builder = Server::builder()
            .max_concurrent_streams(c.max_concurrent_streams)
            .http2_keepalive_interval(ms(c.http2_keepalive_interval_ms))
            .http2_keepalive_timeout(ms(c.http2_keepalive_timeout_ms));
        if let Some(age) = ms(c.max_connection_age_ms) {
            builder = builder.max_connection_age(age);
        }
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.clone())?;
        }
        let listener = TcpListener::from_std(listener)?;
        // Small gRPC frames wait ~40 ms for delayed ACKs under Nagle's
        // algorithm; answers must leave at once.
        let incoming =
            futures::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
                conn.and_then(|stream| {
                    stream.set_nodelay(true)?;
                    Ok(stream)
                })
            });
        let (max_message_bytes, max_metadata_entries) = (self.max_message_bytes, self.max_metadata_entries);
        builder
            .layer(tower::layer::layer_fn(|inner| super::arrival::StampArrival { inner }))
            .layer(tower::layer::layer_fn(move |inner| super::limits::InputLimits {
                inner,
                max_message_bytes,
                max_metadata_entries,
            }))
            .add_service(self.health.clone())
            .add_service(InterceptedService::new(self.reflection_v1.clone(), self.reflection_gate.clone()))
            .add_service(InterceptedService::new(
                self.reflection_v1alpha.clone(),
                self.reflection_gate.clone(),
            ))
            .add_service(
                GatewayServer::new(self.gateway.clone()).max_decoding_message_size(max_message_bytes),
            )
            .add_service(BatchServer::new(self.batch.clone()).max_decoding_message_size(max_message_bytes))
            .add_service(AdminServer::new(self.admin.clone()).max_decoding_message_size(max_message_bytes))
            .serve_with_incoming_shutdown(incoming, async move {
                // A dropped sender also means stop.
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await?;
        Ok(())
    }
}

/// Starts one server instance per worker arbiter of `threads`, all
/// accepting from `listener`: a call is decoded, run through the mesh and
/// answered on the thread that accepted its connection, without waking
/// another thread. The task ends when every instance has, with the first
/// error if any.
fn serve_on_threads<R1: v1::ServerReflection, R0: v1alpha::ServerReflection>(
    threads: &MeshThreads,
    listener: TcpListener,
    services: Arc<Services<R1, R0>>,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<Result<(), ServeError>>, ServeError> {
    let listener = listener.into_std()?;
    let mut served = Vec::with_capacity(threads.arbiters());
    for i in 0..threads.arbiters() {
        let (done_tx, done_rx) = oneshot::channel();
        let (services, listener, stop) = (services.clone(), listener.try_clone()?, stop.clone());
        let spawned = threads.spawn_on(i, async move {
            let _ = done_tx.send(services.serve(listener, stop).await);
        });
        if !spawned {
            return Err(ServeError::ThreadStopped);
        }
        served.push(done_rx);
    }
    Ok(tokio::spawn(async move {
        let mut result = Ok(());
        for done in served {
            if let Ok(Err(e)) = done.await {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }))
}
