//! The orchestrator: routes each request, then runs the flow configured for
//! the routed intent: its steps in order, groups of agents at once,
//! conditional steps when their condition holds, and the critic's revision
//! loop. The flow runner is a plain async function over a shared [`Plan`];
//! the actor only hands each request to it as a future.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use tokio::sync::mpsc::UnboundedSender;
use tracing::Instrument as _;

use super::agents::AgentActor;
use super::flow::{self, FlowPlan, Flows, PlannedAgent, PlannedStep};
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
struct Run<'a> {
    plan: &'a Plan,
    ask: &'a Ask,
    home: usize,
    steps: Vec<StepRecord>,
    intent: String,
}

impl Run<'_> {
    /// Runs one step and records it.
    async fn step(&mut self, agent: &str, input: StepInput, attempt: u32) -> Result<StepOutput, MeshError> {
        let (output, record) = self.send(agent, input, attempt).await?;
        self.steps.push(record);
        Ok(output)
    }

    /// Runs one step on a replica of `agent` (with its events) and returns
    /// its output and record; the caller records it, so steps of a group
    /// can run at once and be recorded in the order written.
    async fn send(
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
    fn next_attempt(&self, agent: &str) -> u32 {
        self.steps.iter().filter(|r| r.agent == agent).count() as u32 + 1
    }
}

fn emit(sink: &UnboundedSender<MeshEvent>, event: MeshEvent) {
    // A closed receiver means the client stopped listening; the request is
    // cancelled separately, so nothing to do here.
    let _ = sink.send(event);
}

/// A step output of the wrong shape: every kind answers its own step with
/// its own output, so this is a bug (INTERNAL), not an outage a retry could
/// get past.
fn unexpected(agent: &str, wanted: &str) -> MeshError {
    MeshError::internal(Some(agent), format!("returned no {wanted}"))
}

/// The latest answer candidate: a summarizer's draft or an `llm` agent's
/// text, and who wrote it (a critic sends it back there).
#[derive(Clone)]
struct Draft {
    agent: String,
    kind: AgentKind,
    text: String,
}

/// What a flow has produced so far in one request.
struct FlowState<'f> {
    /// The flow being run.
    flow: &'f FlowPlan,
    query: String,
    intent: String,
    /// Every passage retrieved so far: shared by the steps that read them,
    /// one copy per request.
    passages: Arc<[Passage]>,
    /// The latest answering step's text.
    draft: Option<Draft>,
    /// The declared answer agent's latest text (only with `answer = …`).
    declared: Option<String>,
    /// The last critic's verdict.
    verdict: Option<Verdict>,
    /// Summarizer steps so far, across the flow's summarizers: their
    /// attempt numbers.
    summarizer_attempts: u32,
    /// Each step's output as JSON, in the order they ran; kept only when
    /// the flow reads it (`FlowPlan::keeps_outputs`).
    outputs: Vec<(String, serde_json::Value)>,
}

impl FlowState<'_> {
    /// Whether `agent`'s condition (if any) holds now.
    fn runs(&self, agent: &PlannedAgent) -> bool {
        agent.when.as_ref().is_none_or(|c| flow::holds(c, &self.outputs))
    }

    /// The input of a step of `agent` (a critic's comes from its loop).
    fn input(
        &self,
        agent: &str,
        kind: AgentKind,
        feedback: Option<String>,
        previous: Option<String>,
    ) -> Result<StepInput, MeshError> {
        Ok(match kind {
            AgentKind::Retriever => StepInput::Retrieve { query: self.query.clone() },
            AgentKind::Summarizer => StepInput::Summarize {
                query: self.query.clone(),
                intent: self.intent.clone(),
                passages: self.passages.clone(),
                feedback,
                previous,
            },
            AgentKind::Llm => StepInput::Generate {
                query: self.query.clone(),
                intent: self.intent.clone(),
                passages: self.passages.clone(),
                outputs: self.outputs.as_slice().into(),
                feedback,
                previous,
            },
            AgentKind::Router | AgentKind::Critic => {
                return Err(MeshError::internal(Some(agent), "not a step here (validated at load)"));
            }
        })
    }

    /// Takes `agent`'s output into the flow: passages, the draft, the
    /// declared answer, the outputs later steps read. The name is copied
    /// only where it is kept (a revision hands over the draft's own).
    fn take(&mut self, agent: Cow<'_, str>, kind: AgentKind, output: StepOutput) -> Result<(), MeshError> {
        if self.flow.keeps_outputs {
            self.outputs.push((agent.to_string(), output.as_json()));
        }
        match (kind, output) {
            (AgentKind::Retriever, StepOutput::Retrieved { passages: found }) => {
                self.passages = if self.passages.is_empty() {
                    found.into()
                } else {
                    self.passages.iter().cloned().chain(found).collect()
                };
            }
            (AgentKind::Summarizer, StepOutput::Drafted { answer: text })
            | (AgentKind::Llm, StepOutput::Generated { text, json: None }) => {
                if self.flow.answer.as_deref() == Some(&*agent) {
                    self.declared = Some(text.clone());
                }
                self.draft = Some(Draft { agent: agent.into_owned(), kind, text });
            }
            // A JSON output is read by later steps and conditions only.
            (AgentKind::Llm, StepOutput::Generated { json: Some(_), .. }) => {}
            (AgentKind::Retriever, _) => return Err(unexpected(&agent, "passages")),
            (AgentKind::Summarizer, _) => return Err(unexpected(&agent, "draft")),
            (AgentKind::Llm, _) => return Err(unexpected(&agent, "generated output")),
            (AgentKind::Router | AgentKind::Critic, _) => {
                return Err(MeshError::internal(Some(&*agent), "not a step here (validated at load)"));
            }
        }
        Ok(())
    }
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

    let mut state = FlowState {
        flow,
        query,
        intent,
        passages: Arc::from(Vec::new()),
        draft: None,
        declared: None,
        verdict: None,
        summarizer_attempts: 0,
        outputs: Vec::new(),
    };
    for step in &flow.steps {
        match step {
            PlannedStep::One(a) if !state.runs(a) => {}
            PlannedStep::One(a) if a.kind == AgentKind::Critic => critique(&mut run, &mut state, a).await?,
            PlannedStep::One(a) => {
                let attempt = attempt_of(&run, &mut state, a);
                let input = state.input(&a.name, a.kind, None, None)?;
                let output = run.step(&a.name, input, attempt).await?;
                state.take(Cow::Borrowed(&a.name), a.kind, output)?;
            }
            PlannedStep::Parallel(group) => fan_out(&mut run, &mut state, group).await?,
        }
    }

    let text = match &flow.answer {
        Some(_) => state.declared,
        None => state.draft.map(|d| d.text),
    };
    let answer = text.unwrap_or_else(|| {
        flow.reply.clone().unwrap_or_else(|| "I can't help with that request.".to_string())
    });
    Ok(finish(&ask, answer, &state.passages, state.intent, state.verdict, run.steps, started))
}

/// The attempt number of `agent`'s next step: summarizers count together
/// (as they always have), other agents each on their own.
fn attempt_of(run: &Run<'_>, state: &mut FlowState<'_>, agent: &PlannedAgent) -> u32 {
    match agent.kind {
        AgentKind::Summarizer => {
            state.summarizer_attempts += 1;
            state.summarizer_attempts
        }
        AgentKind::Retriever => 1,
        _ => run.next_attempt(&agent.name),
    }
}

/// A critic step: judges the latest draft and, while it rejects and
/// revisions are left, sends it back to the agent that wrote it with the
/// critic's feedback.
async fn critique(
    run: &mut Run<'_>,
    state: &mut FlowState<'_>,
    critic: &PlannedAgent,
) -> Result<(), MeshError> {
    let mut revisions = 0u32;
    while let Some(draft) = state.draft.clone() {
        let input = StepInput::Critique {
            query: state.query.clone(),
            answer: draft.text.clone(),
            passages: state.passages.clone(),
        };
        let output = run.step(&critic.name, input, revisions + 1).await?;
        if state.flow.keeps_outputs {
            state.outputs.push((critic.name.clone(), output.as_json()));
        }
        let StepOutput::Judged { accepted, scores, feedback } = output else {
            return Err(unexpected(&critic.name, "verdict"));
        };
        state.verdict = Some(Verdict { accepted, scores, feedback: feedback.clone() });
        if accepted || revisions >= state.flow.max_revisions {
            break;
        }
        revisions += 1;
        let writer = PlannedAgent { name: draft.agent, kind: draft.kind, when: None };
        let attempt = attempt_of(run, state, &writer);
        let input = state.input(&writer.name, writer.kind, Some(feedback), Some(draft.text))?;
        let output = run.step(&writer.name, input, attempt).await?;
        state.take(Cow::Owned(writer.name), writer.kind, output)?;
    }
    Ok(())
}

/// A group of agents run at once: each sees what the steps before the
/// group produced; their records and outputs are taken in the order
/// written. The first failure fails the request (the others are dropped).
async fn fan_out(
    run: &mut Run<'_>,
    state: &mut FlowState<'_>,
    group: &[PlannedAgent],
) -> Result<(), MeshError> {
    let mut calls = Vec::with_capacity(group.len());
    for a in group {
        if !state.runs(a) {
            continue;
        }
        let attempt = attempt_of(run, state, a);
        calls.push((a, state.input(&a.name, a.kind, None, None)?, attempt));
    }
    let shared: &Run<'_> = run;
    let results = futures::future::try_join_all(calls.into_iter().map(|(a, input, attempt)| async move {
        shared.send(&a.name, input, attempt).await.map(|done| (a, done))
    }))
    .await?;
    for (a, (output, record)) in results {
        run.steps.push(record);
        state.take(Cow::Borrowed(&a.name), a.kind, output)?;
    }
    Ok(())
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
