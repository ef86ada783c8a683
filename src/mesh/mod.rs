//! The agent mesh: actix actors that answer questions.
//!
//! An [`orchestrator::Orchestrator`] actor receives [`messages::Ask`], runs
//! the router agent, then the flow configured for the routed intent (for
//! example retriever → summarizer ⇄ critic), and returns an [`Answer`] with
//! one [`StepRecord`] per step. Each agent is an [`agent::AgentActor`]
//! (`replicas` instances, round robin, spread over arbiters). Handlers return
//! futures, so one actor serves many requests at once.
//!
//! The mesh knows no tonic and no proto types; it sees models and stores
//! only through the `LlmClient`, `Embedder` and `VectorStore` traits.

pub mod agent;
pub mod messages;
pub mod orchestrator;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use actix::{Actor, Addr, Arbiter};
use serde::{Deserialize, Serialize};

pub use messages::{Ask, AskInput, EventSink, MeshEvent, RunStep, StepInput, StepOutput};

use crate::config::{AgentKind, MeshSpec};
use crate::llm::{LlmError, Scores, SharedLlm};
use crate::retrieval::{RetrievalError, SharedEmbedder, SharedStore};

/// A cited passage in an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    pub doc_id: String,
    pub chunk_id: String,
    pub text: String,
    pub score: f32,
}

/// The critic's judgement of the final draft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub accepted: bool,
    pub scores: Scores,
    pub feedback: String,
}

/// One step of a request: who ran, on what model, how long, how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub agent: String,
    pub kind: String,
    pub model: String,
    pub attempt: u32,
    pub latency_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub tokens_estimated: bool,
    /// `None` when the model's price is unknown (never reported as 0).
    pub cost_usd: Option<f64>,
    pub summary: String,
    /// Model calls behind this step, retries and fallback included (0 for
    /// steps that call no model).
    pub model_attempts: u32,
    /// The error kind of each failed model call (`http_429`, `timeout`, …).
    pub failed_model_attempts: Vec<String>,
}

/// Totals over a request's steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `None` when any step's cost is unknown.
    pub cost_usd: Option<f64>,
    pub model_calls: u32,
    pub latency_ms: f64,
}

/// The mesh's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub answer: String,
    pub citations: Vec<Citation>,
    pub intent: String,
    /// `None` when the flow has no critic.
    pub verdict: Option<Verdict>,
    pub steps: Vec<StepRecord>,
    pub usage: Usage,
    pub trace_id: String,
    pub variant: String,
}

/// Why a request failed in the mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unknown variant `{variant}`; known: {known}")]
    UnknownVariant { variant: String, known: String },
    #[error("agent `{agent}` (model profile `{profile}`): {source}")]
    Model { agent: String, profile: String, source: LlmError },
    #[error("agent `{agent}`: {source}")]
    Retrieval { agent: String, source: RetrievalError },
    #[error("agent `{agent}` did not finish within {timeout_ms} ms")]
    AgentTimeout { agent: String, timeout_ms: u64 },
    #[error("request deadline exceeded")]
    DeadlineExceeded,
    #[error("request cancelled")]
    Cancelled,
    #[error("agent `{agent}` is unavailable: {message}")]
    AgentUnavailable { agent: String, message: String },
    /// The agent's code panicked while serving this request; the replica
    /// was restarted by its supervisor.
    #[error(
        "agent `{agent}` failed: it panicked while serving this request and was restarted; \
         the gateway log has the details"
    )]
    AgentPanicked { agent: String },
    #[error("no flow for intent `{intent}`")]
    NoFlow { intent: String },
    #[error("mesh failed to start: {0}")]
    Startup(String),
}

/// What agents share: the retrieval parts and one model client per profile.
#[derive(Clone)]
pub struct Resources {
    pub store: SharedStore,
    pub embedder: SharedEmbedder,
    pub models: HashMap<String, SharedLlm>,
    /// Record prompt and completion text on spans (`telemetry.capture_content`).
    pub capture_content: bool,
}

impl Resources {
    /// Builds one model client per profile in `spec`, each wired to its
    /// fallback profile's client.
    pub fn build(spec: &MeshSpec, store: SharedStore, embedder: SharedEmbedder) -> Result<Self, MeshError> {
        let models = crate::llm::build_clients(&spec.settings.models)
            .map_err(|e| MeshError::Startup(e.to_string()))?;
        Ok(Self { store, embedder, models, capture_content: spec.settings.telemetry.capture_content })
    }
}

/// Tells each mesh apart, for [`HOME`].
static NEXT_MESH_ID: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// On a mesh's worker arbiter: that mesh's id and the arbiter's index.
    static HOME: std::cell::Cell<Option<(usize, usize)>> = const { std::cell::Cell::new(None) };
}

/// A running mesh: the orchestrators' addresses and the threads behind
/// them. Any tokio runtime may send to it.
pub struct MeshHandle {
    /// This mesh's id (see [`HOME`]).
    id: usize,
    /// The worker arbiters, in the order of `orchestrators`.
    arbiters: Vec<actix::ArbiterHandle>,
    /// One orchestrator per worker arbiter, used round robin.
    orchestrators: Vec<Addr<orchestrator::Orchestrator>>,
    next: AtomicUsize,
    /// Each agent's logic, shared with its replicas: read for restart counts.
    agents: HashMap<String, Arc<agent::AgentLogic>>,
    system: actix::System,
    thread: Option<JoinHandle<()>>,
}

impl MeshHandle {
    /// Starts the actor system on its own threads: `mesh.arbiters` worker
    /// arbiters, each with a replica of every agent (more where `replicas`
    /// asks for more) and one orchestrator that sends to the replicas on
    /// its own arbiter, so no hop of a request wakes another thread.
    pub fn start(spec: Arc<MeshSpec>, resources: Resources) -> Result<MeshHandle, MeshError> {
        let id = NEXT_MESH_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("meshops-mesh".into())
            .spawn(move || {
                let system = actix::System::new();
                let started = system.block_on(async move { start_actors(id, spec, resources) });
                let ok = started.is_ok();
                let _ = tx.send(started.map(|addr| (addr, actix::System::current())));
                if ok {
                    // Runs until `System::stop`; an error here means the
                    // system's runtime failed, which nothing can recover.
                    if let Err(e) = system.run() {
                        tracing::error!(error = %e, "mesh actor system stopped with an error");
                    }
                }
            })
            .map_err(|e| MeshError::Startup(format!("cannot spawn mesh thread: {e}")))?;
        match rx.recv() {
            Ok(Ok(((orchestrators, arbiters, agents), system))) => Ok(MeshHandle {
                id,
                arbiters,
                orchestrators,
                next: AtomicUsize::new(0),
                agents,
                system,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MeshError::Startup("mesh thread exited during start-up".into())),
        }
    }

    /// Sends a request into the mesh and waits for its answer. Called on
    /// one of the mesh's own threads, the request runs there from start to
    /// end (no other thread is woken); called elsewhere, it goes to the
    /// arbiters round robin.
    pub async fn ask(&self, ask: Ask) -> Result<Answer, MeshError> {
        let i = match HOME.with(std::cell::Cell::get) {
            Some((mesh, home)) if mesh == self.id => home,
            _ => self.next.fetch_add(1, Ordering::Relaxed) % self.orchestrators.len().max(1),
        };
        let Some(orchestrator) = self.orchestrators.get(i) else {
            return Err(MeshError::AgentUnavailable {
                agent: "orchestrator".into(),
                message: "none started".into(),
            });
        };
        match orchestrator.send(ask).await {
            Ok(result) => result,
            Err(e) => {
                Err(MeshError::AgentUnavailable { agent: "orchestrator".into(), message: e.to_string() })
            }
        }
    }

    /// The mesh's worker threads.
    pub fn arbiters(&self) -> usize {
        self.arbiters.len()
    }

    /// Runs `future` on worker arbiter `i` (modulo their number), where
    /// [`MeshHandle::ask`] keeps a whole request on that thread. False
    /// when the arbiter has stopped.
    pub fn spawn_on<F>(&self, i: usize, future: F) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match self.arbiters.get(i % self.arbiters.len().max(1)) {
            Some(arbiter) => arbiter.spawn(future),
            None => false,
        }
    }

    /// How many times `agent`'s replicas were restarted after a panic (0
    /// for an unknown agent).
    pub fn agent_restarts(&self, agent: &str) -> u64 {
        self.agents.get(agent).map(|a| a.restarts()).unwrap_or(0)
    }

    /// Stops every actor and arbiter and waits for the mesh thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("mesh thread panicked while stopping");
            }
        }
    }
}

impl Drop for MeshHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One orchestrator per worker arbiter, the arbiters, and each agent's logic.
type Started = (
    Vec<Addr<orchestrator::Orchestrator>>,
    Vec<actix::ArbiterHandle>,
    HashMap<String, Arc<agent::AgentLogic>>,
);

fn start_actors(id: usize, spec: Arc<MeshSpec>, resources: Resources) -> Result<Started, MeshError> {
    let arbiters: Vec<Arbiter> = (0..spec.settings.mesh.arbiters.max(1)).map(|_| Arbiter::new()).collect();
    for (home, arbiter) in arbiters.iter().enumerate() {
        arbiter.spawn_fn(move || HOME.with(|h| h.set(Some((id, home)))));
    }
    let mut agents = HashMap::new();
    let mut logics = HashMap::new();
    for (name, agent_spec) in &spec.agents {
        let logic = Arc::new(agent::AgentLogic::new(agent_spec, &resources)?);
        logics.insert(name.clone(), logic.clone());
        // Every arbiter runs at least one replica of every agent, so each
        // step of a request runs on the thread that took the request;
        // replicas beyond that are spread evenly.
        let count = agent_spec.replicas.max(arbiters.len());
        let mut replicas = Vec::with_capacity(count);
        for r in 0..count {
            let home = r % arbiters.len();
            let logic = logic.clone();
            // Supervised: a replica whose step panics is restarted in
            // place, keeping its address and mailbox.
            let addr = actix::Supervisor::start_in_arbiter(&arbiters[home].handle(), move |_| {
                agent::AgentActor::new(logic)
            });
            replicas.push((home, addr));
        }
        agents.insert(name.clone(), orchestrator::AgentPool::new(name.clone(), agent_spec.kind, replicas));
    }
    let router = spec.settings.mesh.router.clone();
    if agents.get(&router).is_none_or(|p| p.kind != AgentKind::Router) {
        return Err(MeshError::Startup(format!("router agent `{router}` is missing")));
    }
    let plan = Arc::new(orchestrator::Plan { spec, agents, router });
    let orchestrators = arbiters
        .iter()
        .enumerate()
        .map(|(home, arbiter)| {
            let plan = plan.clone();
            orchestrator::Orchestrator::start_in_arbiter(&arbiter.handle(), move |_| {
                orchestrator::Orchestrator::new(plan, home)
            })
        })
        .collect();
    // Arbiters stop with the system; their handles are enough.
    let handles = arbiters.iter().map(Arbiter::handle).collect();
    Ok((orchestrators, handles, logics))
}
