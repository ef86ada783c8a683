//! The agent mesh: actix actors that answer questions.
//!
//! An [`orchestrator::Orchestrator`] actor receives [`messages::Ask`], runs
//! the router agent, then the flow configured for the routed intent (for
//! example retriever → summarizer ⇄ critic; flows may also run agents at
//! once and on conditions, see [`flow`]), and returns an [`Answer`] with
//! one [`StepRecord`] per step. Each agent is an [`agents::AgentActor`]
//! with at least one replica on every worker arbiter ([`MeshThreads`]), so a
//! request runs on one thread. Handlers return futures, so one actor serves
//! many requests at once. Each agent kind is a type of its own in
//! [`agents`]; errors and their classes are in [`error`].
//!
//! The mesh knows no tonic and no proto types; it sees models and stores
//! only through the `LlmClient`, `Embedder` and `VectorStore` traits.

pub mod agents;
mod conversation;
pub mod error;
pub mod flow;
mod flow_steps;
pub mod messages;
pub mod orchestrator;
mod run;
pub mod tools;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use actix::{Actor, Addr, Arbiter};
use serde::{Deserialize, Serialize};

pub use error::{ErrorClass, MeshError};
pub use messages::{Ask, AskInput, EventSink, MeshEvent, RunStep, StepInput, StepOutput, StepOutputs};

use crate::config::{AgentKind, MeshSpec};
use crate::llm::{Scores, SharedLlm};
use crate::retrieval::{SharedEmbedder, SharedStore};

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

/// What agents share: the retrieval parts and one model client per profile.
#[derive(Clone)]
pub struct Resources {
    pub store: SharedStore,
    pub embedder: SharedEmbedder,
    /// One client per model profile, traced (`llm::build_clients`).
    pub models: HashMap<String, SharedLlm>,
    /// Each profile's retries (`max_retries`, else the default): an `llm`
    /// agent also asks again this often for a reply that misses its
    /// output schema.
    pub retries: HashMap<String, u32>,
    /// Every agent's kind and description, by name: what an agent called
    /// as a tool is shown as.
    pub agents: Arc<BTreeMap<String, (AgentKind, String)>>,
    /// The `[mcp.*]` servers as configured.
    pub mcp_settings: Arc<BTreeMap<String, crate::config::McpServerSettings>>,
    /// The running MCP servers (empty unless `[mcp.*]` declares some).
    pub mcp: Arc<crate::tools::mcp::McpHub>,
    /// The started agents, set once they all run.
    pub peers: tools::Peers,
    /// Where conversations are kept; `None`: `session_id` only labels.
    pub sessions: Option<crate::sessions::SharedSessions>,
}

impl Resources {
    /// Builds one model client per profile in `spec`, each wired to its
    /// fallback profile's client and traced (with
    /// `telemetry.capture_content`).
    pub fn build(spec: &MeshSpec, store: SharedStore, embedder: SharedEmbedder) -> Result<Self, MeshError> {
        let models = crate::llm::build_clients(&spec.settings.models, &spec.settings.telemetry)
            .map_err(MeshError::ModelClients)?;
        let retries = spec
            .settings
            .models
            .iter()
            .map(|(name, p)| (name.clone(), crate::llm::retry::RetryPolicy::of(p).max_retries))
            .collect();
        let agents = spec.agents.iter().map(|(n, a)| (n.clone(), (a.kind, a.description.clone()))).collect();
        Ok(Self {
            store,
            embedder,
            models,
            retries,
            agents: Arc::new(agents),
            mcp_settings: Arc::new(spec.settings.mcp.clone()),
            mcp: crate::tools::mcp::McpHub::empty(),
            peers: Default::default(),
            sessions: None,
        })
    }
}

/// Tells each mesh apart, for [`HOME`].
static NEXT_MESH_ID: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// On a mesh's worker arbiter: that mesh's id and the arbiter's index.
    static HOME: std::cell::Cell<Option<(usize, usize)>> = const { std::cell::Cell::new(None) };
}

/// The mesh's threads: an actix system and its worker arbiters. They start
/// before the agents, so the gateway can serve on them (health, and
/// UNAVAILABLE) while the store opens; they stop when the last holder lets
/// go of them.
pub struct MeshThreads {
    /// Tells these threads apart from another mesh's (see [`HOME`]).
    id: usize,
    arbiters: Vec<actix::ArbiterHandle>,
    system: actix::System,
    thread: Option<JoinHandle<()>>,
}

impl MeshThreads {
    /// Starts the actor system on its own thread with `count` worker
    /// arbiters.
    pub fn start(count: usize) -> Result<Arc<MeshThreads>, MeshError> {
        let id = NEXT_MESH_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("meshops-mesh".into())
            .spawn(move || {
                let system = actix::System::new();
                let arbiters = system.block_on(async move {
                    (0..count.max(1))
                        .map(|home| {
                            let arbiter = Arbiter::new();
                            arbiter.spawn_fn(move || HOME.with(|h| h.set(Some((id, home)))));
                            // Arbiters stop with the system; the handle is enough.
                            arbiter.handle()
                        })
                        .collect::<Vec<_>>()
                });
                let _ = tx.send((arbiters, actix::System::current()));
                // Runs until `System::stop`; an error here means the
                // system's runtime failed, which nothing can recover.
                if let Err(e) = system.run() {
                    tracing::error!(error = %e, "mesh actor system stopped with an error");
                }
            })
            .map_err(MeshError::Thread)?;
        match rx.recv() {
            Ok((arbiters, system)) => {
                Ok(Arc::new(MeshThreads { id, arbiters, system, thread: Some(thread) }))
            }
            Err(_) => Err(MeshError::Startup("mesh thread exited during start-up".into())),
        }
    }

    /// How many worker arbiters there are.
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

    /// Stops the actor system now: every actor and every future on the
    /// arbiters is dropped. The thread is waited for when the last holder
    /// lets go.
    pub fn stop(&self) {
        self.system.stop();
    }

    /// The index of the calling thread among these arbiters, if it is one.
    fn current(&self) -> Option<usize> {
        match HOME.with(std::cell::Cell::get) {
            Some((mesh, home)) if mesh == self.id => Some(home),
            _ => None,
        }
    }
}

impl Drop for MeshThreads {
    fn drop(&mut self) {
        self.system.stop();
        // Let go last on one of its own arbiters, the system thread is not
        // waited for (it ends on its own).
        if self.current().is_some() {
            return;
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("mesh thread panicked while stopping");
            }
        }
    }
}

/// A running mesh: the orchestrators' addresses and the threads behind
/// them. Any tokio runtime may send to it.
pub struct MeshHandle {
    threads: Arc<MeshThreads>,
    /// One orchestrator per worker arbiter, in arbiter order.
    orchestrators: Vec<Addr<orchestrator::Orchestrator>>,
    next: AtomicUsize,
    /// Each agent's logic, shared with its replicas: read for restart counts.
    agents: HashMap<String, agents::AgentLogic>,
}

impl MeshHandle {
    /// Starts the mesh on threads of its own (see [`MeshHandle::start_on`]).
    pub fn start(spec: Arc<MeshSpec>, resources: Resources) -> Result<MeshHandle, MeshError> {
        let threads = MeshThreads::start(spec.settings.mesh.arbiters)?;
        Self::start_on(threads, spec, resources)
    }

    /// Starts the agents on `threads`: each worker arbiter gets a replica of
    /// every agent (more where `replicas` asks for more) and one
    /// orchestrator that sends to the replicas on its own arbiter, so no
    /// hop of a request wakes another thread.
    pub fn start_on(
        threads: Arc<MeshThreads>,
        spec: Arc<MeshSpec>,
        resources: Resources,
    ) -> Result<MeshHandle, MeshError> {
        let (orchestrators, agents) = start_actors(&threads.arbiters, spec, resources)?;
        Ok(MeshHandle { threads, orchestrators, next: AtomicUsize::new(0), agents })
    }

    /// Sends a request into the mesh and waits for its answer. Called on
    /// one of the mesh's own threads, the request runs there from start to
    /// end (no other thread is woken); called elsewhere, it goes to the
    /// arbiters round robin.
    pub async fn ask(&self, ask: Ask) -> Result<Answer, MeshError> {
        let i = match self.threads.current() {
            Some(home) => home,
            None => self.next.fetch_add(1, Ordering::Relaxed) % self.orchestrators.len().max(1),
        };
        let Some(orchestrator) = self.orchestrators.get(i) else {
            // `start_actors` starts one per arbiter and refuses none.
            return Err(MeshError::internal(Some("orchestrator"), "none started"));
        };
        match orchestrator.send(ask).await {
            Ok(result) => result,
            Err(e) => {
                Err(MeshError::AgentUnavailable { agent: "orchestrator".into(), message: e.to_string() })
            }
        }
    }

    /// See [`MeshThreads::spawn_on`].
    pub fn spawn_on<F>(&self, i: usize, future: F) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.threads.spawn_on(i, future)
    }

    /// How many times `agent`'s replicas were restarted after a panic (0
    /// for an unknown agent).
    pub fn agent_restarts(&self, agent: &str) -> u64 {
        self.agents.get(agent).map(|a| a.restarts()).unwrap_or(0)
    }

    /// Stops the mesh: its threads stop (and are waited for) unless a
    /// gateway still serves on them, in which case they stop with it.
    pub fn shutdown(self) {
        drop(self);
    }
}

/// One orchestrator per worker arbiter, and each agent's logic.
type Started = (Vec<Addr<orchestrator::Orchestrator>>, HashMap<String, agents::AgentLogic>);

fn start_actors(
    arbiters: &[actix::ArbiterHandle],
    spec: Arc<MeshSpec>,
    resources: Resources,
) -> Result<Started, MeshError> {
    if arbiters.is_empty() {
        return Err(MeshError::Startup("no worker arbiters".into()));
    }
    let mut agents = orchestrator::AgentPools::default();
    let mut logics = HashMap::new();
    for (name, agent_spec) in &spec.agents {
        let logic = agents::AgentLogic::new(agent_spec, &resources)?;
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
            let addr =
                actix::Supervisor::start_in_arbiter(&arbiters[home], move |_| agents::AgentActor::new(logic));
            replicas.push((home, addr));
        }
        agents.insert(name.clone(), orchestrator::AgentPool::new(name.clone(), agent_spec.kind, replicas));
    }
    let router = spec.settings.mesh.router.clone();
    if agents.get(&router).is_none_or(|p| p.kind != AgentKind::Router) {
        return Err(MeshError::Startup(format!("router agent `{router}` is missing")));
    }
    let agents = Arc::new(agents);
    // Agents that call others as tools reach them from now on.
    let _ = resources.peers.set(agents.clone());
    let mut plan = orchestrator::Plan::new(spec, agents, router)?;
    plan.sessions = resources.sessions.clone().filter(|_| plan.spec.settings.sessions.enabled);
    let plan = Arc::new(plan);
    let orchestrators = arbiters
        .iter()
        .enumerate()
        .map(|(home, arbiter)| {
            let plan = plan.clone();
            orchestrator::Orchestrator::start_in_arbiter(arbiter, move |_| {
                orchestrator::Orchestrator::new(plan, home)
            })
        })
        .collect();
    Ok((orchestrators, logics))
}
