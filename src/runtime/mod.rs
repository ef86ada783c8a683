//! The one assembly: everything a running mesh needs, started in one order
//! by one function that `serve`, `eval run`, the batch runner's host and the
//! benchmarks all call.
//!
//! The order is: open retrieval (the embedder, then the store with the
//! embedder's dimension) → ingest the corpus if the collection is empty (and
//! `retrieval.auto_ingest` is on) → build the shared [`Resources`] (one
//! model client per profile) → start the agents on the mesh's threads. The
//! gateway starts the threads itself, earlier, so it can answer health
//! checks while the store opens; everyone else lets [`start`] start them.
//!
//! This layer sits above `mesh`, `retrieval` and `llm` and below the
//! gateway and the harnesses; it knows no tonic and no proto type.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::MeshSpec;
use crate::llm::SharedLlm;
use crate::llm::traced::TracedClient;
use crate::mesh::{MeshError, MeshHandle, MeshThreads, Resources};
use crate::retrieval::{self, RetrievalError, SharedEmbedder, SharedStore};
use crate::sessions::{SharedSessions, SqliteSessions};
use crate::tools::mcp::McpHub;

/// Why the mesh could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    // Not `#[from]` with `#[error(transparent)]` for retrieval: the prefix
    // says which part failed, and the source is kept for callers that look.
    #[error("retrieval: {0}")]
    Retrieval(#[source] RetrievalError),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// A blocking start-up task (actor start) panicked or was cancelled.
    #[error("mesh start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Mcp(#[from] crate::tools::mcp::McpError),
    #[error("sessions: {0}")]
    Sessions(#[from] crate::sessions::SessionError),
}

impl From<RetrievalError> for RuntimeError {
    fn from(e: RetrievalError) -> Self {
        RuntimeError::Retrieval(e)
    }
}

/// What a caller may put in place of the configured parts.
#[derive(Default)]
pub struct Options {
    /// Model clients by profile name, used instead of the ones built from
    /// config: tests and benchmarks hold on to a client they inspect.
    pub models: HashMap<String, SharedLlm>,
    /// Threads to start the agents on. The gateway starts them before the
    /// store opens (health answers meanwhile) and serves on them; `None`
    /// starts `mesh.arbiters` new ones.
    pub threads: Option<Arc<MeshThreads>>,
}

/// A started mesh and the store its retriever reads.
pub struct Runtime {
    /// The running agents; requests go in as `mesh::Ask` messages.
    pub mesh: MeshHandle,
    /// The store, kept to report on it (health, counts) and to see when
    /// the stopped mesh has let go of it (see [`Runtime::shutdown`]); the
    /// gateway's `Admin` service writes documents into it.
    pub store: SharedStore,
    /// The retriever's embedder: documents added while serving must be
    /// embedded the same way as the ones it searches.
    pub embedder: SharedEmbedder,
    /// The MCP servers the agents call (empty when none is configured).
    pub mcp: Arc<McpHub>,
    /// The conversation store (`None` when conversations are off); the
    /// gateway's `DeleteSession` forgets through it.
    pub sessions: Option<SharedSessions>,
}

/// Assembles and starts the mesh of `spec` (see the module docs for the
/// order).
pub async fn start(spec: Arc<MeshSpec>, options: Options) -> Result<Runtime, RuntimeError> {
    let (store, embedder) = retrieval::open(&spec).await?;
    retrieval::ingest::ingest_if_empty(&spec, embedder.as_ref(), store.as_ref()).await?;
    let mut resources = Resources::build(&spec, store.clone(), embedder.clone())?;
    resources.sessions = open_sessions(&spec).await?;
    // MCP servers start with the mesh, are watched (and restarted when
    // they die) while it runs, and stop with it.
    if !spec.settings.mcp.is_empty() {
        let hub = McpHub::start(&spec.settings.mcp).await?;
        hub.watch(MCP_WATCH_EVERY);
        resources.mcp = hub;
    }
    let mcp = resources.mcp.clone();
    let sessions = resources.sessions.clone();
    // Traced like the configured clients: every model call gets its span
    // and metrics, whoever built the client.
    let telemetry = &spec.settings.telemetry;
    resources
        .models
        .extend(options.models.into_iter().map(|(name, llm)| (name, TracedClient::wrap(llm, telemetry))));
    // Starting actors blocks until each arbiter has taken its replicas.
    let mesh = tokio::task::spawn_blocking(move || match options.threads {
        Some(threads) => MeshHandle::start_on(threads, spec, resources),
        None => MeshHandle::start(spec, resources),
    })
    .await??;
    Ok(Runtime { mesh, store, embedder, mcp, sessions })
}

/// How often the MCP servers are checked.
const MCP_WATCH_EVERY: Duration = Duration::from_secs(5);

/// The conversation store, when conversations are on; expired sessions
/// are purged every minute while it is open.
async fn open_sessions(spec: &MeshSpec) -> Result<Option<SharedSessions>, RuntimeError> {
    let s = &spec.settings.sessions;
    if !s.enabled {
        return Ok(None);
    }
    let ttl = Duration::from_secs(s.session_ttl);
    // Kept per session: what an agent is given, and a margin.
    let keep = s.max_history_turns.max(1) * 4;
    let store: SharedSessions = match s.backend {
        crate::config::StateBackend::Sqlite => {
            let path = spec.resolve(&s.path(&spec.settings.retrieval.data_dir));
            Arc::new(tokio::task::spawn_blocking(move || SqliteSessions::open(&path, ttl, keep)).await??)
        }
        crate::config::StateBackend::Postgres => {
            let url =
                crate::config::resolve_url(s.url.as_deref(), s.url_env.as_deref()).ok_or_else(|| {
                    crate::sessions::SessionError::Io {
                        path: "sessions.url".into(),
                        message: "backend is postgres but neither url nor the variable url_env names is set"
                            .into(),
                    }
                })?;
            Arc::new(crate::sessions::PgSessions::open(&url, ttl, keep).await?)
        }
    };
    let weak = Arc::downgrade(&store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(store) = weak.upgrade() else { break };
            if let Err(e) = store.purge_expired().await {
                tracing::warn!(error = %e, "cannot purge expired sessions");
            }
        }
    });
    Ok(Some(store))
}

impl Runtime {
    /// Stops the mesh and waits (up to 5 s) until its worker arbiters have
    /// dropped their agents' store handles: the embedded store locks its
    /// files, and a second run in the same process (a resumed evaluation, a
    /// test) must be able to open it again.
    pub async fn shutdown(self) {
        let Runtime { mesh, store, embedder, mcp, sessions } = self;
        drop(sessions);
        mcp.shutdown().await;
        // Only the store is waited for; the embedder holds no files.
        drop(embedder);
        // Joining the mesh's threads blocks.
        if let Err(e) = tokio::task::spawn_blocking(move || mesh.shutdown()).await {
            tracing::error!(error = %e, "mesh shutdown task failed");
        }
        release(store).await;
    }
}

/// Waits (up to 5 s) until `store` is the last handle on its store, then
/// drops it.
pub async fn release(store: SharedStore) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&store) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if Arc::strong_count(&store) > 1 {
        tracing::warn!("the mesh still holds the store after shutdown");
    }
    drop(store);
}
