//! The orchestrator: routes each request, then runs the flow configured for
//! the routed intent: its steps in order, groups of agents at once,
//! conditional steps when their condition holds, and the critic's revision
//! loop. The flow runner is a plain async function over a shared [`Plan`];
//! the actor only hands each request to it as a future.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use tokio::sync::mpsc::UnboundedSender;
use tracing::Instrument as _;

use super::agents::AgentActor;
use super::flow::Flows;
use super::flow_steps::{FlowState, run_step, unexpected};
use super::messages::{Ask, MeshEvent, RunStep, StepInput, StepOutput};
use super::{Answer, Citation, MeshError, StepRecord, Usage, Verdict};
use crate::config::{AgentKind, MeshSpec};
use crate::llm::Passage;

/// The replicas of one agent, each with the index of the arbiter (thread)
/// it runs on.
pub struct AgentPool {
    pub name: String,
    pub kind: AgentKind,
    replicas: Vec<(usize, Addr<AgentActor>)>,
    next: AtomicUsize,
}

impl AgentPool {
    pub fn new(name: String, kind: AgentKind, replicas: Vec<(usize, Addr<AgentActor>)>) -> Self {
        Self { name, kind, replicas, next: AtomicUsize::new(0) }
    }

    /// A replica on arbiter `home` when there is one (a message to an actor
    /// on the same thread needs no thread wake-up), else round robin over
    /// all replicas.
    fn pick(&self, home: usize) -> Option<&Addr<AgentActor>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let local = self.replicas.iter().filter(|(a, _)| *a == home).count();
        if local > 0 {
            return self.replicas.iter().filter(|(a, _)| *a == home).nth(n % local).map(|(_, r)| r);
        }
        if self.replicas.is_empty() {
            return None;
        }
        self.replicas.get(n % self.replicas.len()).map(|(_, r)| r)
    }
}

/// Everything the flow runner needs, shared by all requests.
pub struct Plan {
    pub spec: Arc<MeshSpec>,
    pub agents: HashMap<String, AgentPool>,
    pub router: String,
    /// Every flow (the base mesh's and the variants'), compiled at
    /// start-up against the agents.
    pub flows: Flows,
}

impl Plan {
    /// The plan of `spec` run by `agents`, its flows compiled; fails (at
    /// start-up) when a flow names an agent that did not start.
    pub fn new(
        spec: Arc<MeshSpec>,
        agents: HashMap<String, AgentPool>,
        router: String,
    ) -> Result<Plan, MeshError> {
        let flows = Flows::compile(&spec, |name| agents.get(name).map(|p| p.kind))?;
        Ok(Plan { spec, agents, router, flows })
    }
}

/// The orchestrator actor. There is one per worker arbiter; each prefers
/// the agent replicas on its own arbiter.
pub struct Orchestrator {
    plan: Arc<Plan>,
    /// The arbiter this orchestrator runs on.
    home: usize,
}

impl Orchestrator {
    pub fn new(plan: Arc<Plan>, home: usize) -> Self {
        Self { plan, home }
    }
}

impl Actor for Orchestrator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
    }
}

impl Handler<Ask> for Orchestrator {
    type Result = ResponseFuture<Result<Answer, MeshError>>;

    fn handle(&mut self, msg: Ask, _ctx: &mut Self::Context) -> Self::Result {
        let plan = self.plan.clone();
        let span = msg.span.clone();
        Box::pin(run(plan, msg, self.home).instrument(span))
    }
}

/// Runs one request under its deadline and cancellation, preferring the
/// agent replicas on arbiter `home`.
pub async fn run(plan: Arc<Plan>, ask: Ask, home: usize) -> Result<Answer, MeshError> {
    let cancel = ask.cancel.clone();
    let deadline = ask.deadline;
    let flow = run_flow(&plan, ask, home);
    let bounded = async {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, flow).await.unwrap_or(Err(MeshError::DeadlineExceeded)),
            None => flow.await,
        }
    };
    let result = tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(MeshError::Cancelled),
        r = bounded => r,
    };
    if result.is_err() {
        // Stop whatever agent work is still running for this request.
        cancel.cancel();
    }
    result
}

/// Per-request state while a flow runs.
pub(super) struct Run<'a> {
    pub(super) plan: &'a Plan,
    ask: &'a Ask,
    home: usize,
    pub(super) steps: Vec<StepRecord>,
    intent: String,
}

impl Run<'_> {
    /// Runs one step and records it.
    pub(super) async fn step(
        &mut self,
        agent: &str,
        input: StepInput,
        attempt: u32,
    ) -> Result<StepOutput, MeshError> {
        let (output, record) = self.send(agent, input, attempt).await?;
        self.steps.push(record);
        Ok(output)
    }

    /// Runs one step on a replica of `agent` (with its events) and returns
    /// its output and record; the caller records it, so steps of a group
    /// can run at once and be recorded in the order written.
    pub(super) async fn send(
        &self,
        agent: &str,
        input: StepInput,
        attempt: u32,
    ) -> Result<(StepOutput, StepRecord), MeshError> {
        // Flows are validated against the agents at load, and every agent
        // gets a replica per arbiter: a miss here is a bug, not an outage.
        let pool = self
            .plan
            .agents
            .get(agent)
            .ok_or_else(|| MeshError::internal(Some(agent), "no such agent in the mesh"))?;
        let addr = pool.pick(self.home).ok_or_else(|| MeshError::internal(Some(agent), "no replicas"))?;
        // Events are built only when someone streams.
        if let Some(sink) = &self.ask.events {
            emit(
                sink,
                MeshEvent::StepStarted {
                    agent: agent.to_string(),
                    kind: pool.kind.as_str().to_string(),
                    attempt,
                },
            );
        }
        let msg = RunStep {
            variant: self.ask.input.variant.clone(),
            input,
            attempt,
            events: self.ask.events.clone(),
            cancel: self.ask.cancel.clone(),
            parent: self.ask.span.clone(),
            intent: self.intent.clone(),
        };
        let (output, record) = match addr.send(msg).await {
            Ok(result) => result?,
            Err(e) => {
                return Err(MeshError::AgentUnavailable { agent: agent.to_string(), message: e.to_string() });
            }
        };
        if let Some(sink) = &self.ask.events {
            emit(sink, MeshEvent::StepFinished(record.clone()));
        }
        Ok((output, record))
    }

    /// The attempt number of `agent`'s next step: one more than its steps
    /// so far.
    pub(super) fn next_attempt(&self, agent: &str) -> u32 {
        self.steps.iter().filter(|r| r.agent == agent).count() as u32 + 1
    }
}

fn emit(sink: &UnboundedSender<MeshEvent>, event: MeshEvent) {
    // A closed receiver means the client stopped listening; the request is
    // cancelled separately, so nothing to do here.
    let _ = sink.send(event);
}

async fn run_flow(plan: &Plan, ask: Ask, home: usize) -> Result<Answer, MeshError> {
    let started = std::time::Instant::now();
    let variant = ask.input.variant.as_deref();
    if let Some(v) = variant {
        check_variant(plan, v)?;
    }
    let query = ask.input.query.clone();
    let mut run = Run { plan, ask: &ask, home, steps: Vec::new(), intent: String::new() };
    if let Some(v) = variant {
        ask.span.record("meshops.variant", v);
    }

    let intent = match run.step(&plan.router, StepInput::Route { query: query.clone() }, 1).await? {
        StepOutput::Routed { intent } => intent,
        _ => return Err(unexpected(&plan.router, "intent")),
    };
    ask.span.record("meshops.intent", intent.as_str());
    run.intent = intent.clone();
    let flow =
        plan.flows.get(variant, &intent).ok_or_else(|| MeshError::NoFlow { intent: intent.clone() })?;

    let mut state = FlowState::new(flow, query, intent);
    for step in &flow.steps {
        run_step(&mut run, &mut state, step).await?;
    }
    let answer = state.answer();
    Ok(finish(&ask, answer, &state.passages, state.intent, state.verdict, run.steps, started))
}

/// An unknown variant is the caller's mistake, named with the known ones.
fn check_variant(plan: &Plan, variant: &str) -> Result<(), MeshError> {
    if plan.spec.settings.variants.contains_key(variant) {
        return Ok(());
    }
    let known: Vec<&str> = plan.spec.settings.variants.keys().map(String::as_str).collect();
    Err(MeshError::UnknownVariant {
        variant: variant.to_string(),
        known: if known.is_empty() { "(none)".into() } else { known.join(", ") },
    })
}

/// The answer to `ask`: the final text with the passages it cites, and the
/// steps' totals.
fn finish(
    ask: &Ask,
    answer: String,
    passages: &[Passage],
    intent: String,
    verdict: Option<Verdict>,
    steps: Vec<StepRecord>,
    started: std::time::Instant,
) -> Answer {
    // The answer's `[n]` markers are renumbered to index the citations the
    // response carries (only the cited passages, in order of first citation).
    let (answer, cited) = crate::text::renumber_citations(&answer, passages.len());
    let citations = cited
        .into_iter()
        .filter_map(|i| passages.get(i))
        .map(|p| Citation {
            doc_id: p.doc_id.clone(),
            chunk_id: p.chunk_id.clone(),
            text: p.text.clone(),
            score: p.score,
        })
        .collect();
    let usage = Usage {
        input_tokens: steps.iter().map(|s| s.input_tokens).sum(),
        output_tokens: steps.iter().map(|s| s.output_tokens).sum(),
        cost_usd: steps.iter().try_fold(0.0, |acc, s| s.cost_usd.map(|c| acc + c)),
        model_calls: steps.iter().filter(|s| s.kind != AgentKind::Retriever.as_str()).count() as u32,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    Answer {
        answer,
        citations,
        intent,
        verdict,
        steps,
        usage,
        trace_id: ask.trace_id.clone(),
        variant: ask.input.variant.clone().unwrap_or_default(),
    }
}
