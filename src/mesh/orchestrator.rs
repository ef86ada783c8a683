//! The orchestrator: routes each request, then runs the flow configured for
//! the routed intent, with the critic's revision loop. The flow runner is a
//! plain async function over a shared [`Plan`]; the actor only hands each
//! request to it as a future.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use tokio::sync::mpsc::UnboundedSender;
use tracing::Instrument as _;

use super::agents::AgentActor;
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
    async fn step(&mut self, agent: &str, input: StepInput, attempt: u32) -> Result<StepOutput, MeshError> {
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
        self.steps.push(record);
        Ok(output)
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
        plan.spec.flow(variant, &intent).ok_or_else(|| MeshError::NoFlow { intent: intent.clone() })?;

    // Shared by the summarizer and critic steps: one copy per request.
    let mut passages: Arc<[Passage]> = Arc::from(Vec::new());
    let mut draft: Option<(String, String)> = None; // (summarizer agent, answer)
    let mut verdict: Option<Verdict> = None;
    let mut summarizer_attempts = 0u32;
    for step in &flow.steps {
        let kind = plan.agents.get(step).map(|p| p.kind);
        match kind {
            Some(AgentKind::Retriever) => {
                match run.step(step, StepInput::Retrieve { query: query.clone() }, 1).await? {
                    StepOutput::Retrieved { passages: found } => {
                        passages = if passages.is_empty() {
                            found.into()
                        } else {
                            passages.iter().cloned().chain(found).collect()
                        };
                    }
                    _ => return Err(unexpected(step, "passages")),
                }
            }
            Some(AgentKind::Summarizer) => {
                summarizer_attempts += 1;
                let input = StepInput::Summarize {
                    query: query.clone(),
                    intent: intent.clone(),
                    passages: passages.clone(),
                    feedback: None,
                    previous: None,
                };
                match run.step(step, input, summarizer_attempts).await? {
                    StepOutput::Drafted { answer } => draft = Some((step.clone(), answer)),
                    _ => return Err(unexpected(step, "draft")),
                }
            }
            Some(AgentKind::Critic) => {
                let mut revisions = 0u32;
                while let Some((summarizer, answer)) = draft.clone() {
                    let input = StepInput::Critique {
                        query: query.clone(),
                        answer: answer.clone(),
                        passages: passages.clone(),
                    };
                    let (accepted, scores, feedback) = match run.step(step, input, revisions + 1).await? {
                        StepOutput::Judged { accepted, scores, feedback } => (accepted, scores, feedback),
                        _ => return Err(unexpected(step, "verdict")),
                    };
                    verdict = Some(Verdict { accepted, scores, feedback: feedback.clone() });
                    if accepted || revisions >= flow.max_revisions {
                        break;
                    }
                    revisions += 1;
                    summarizer_attempts += 1;
                    let input = StepInput::Summarize {
                        query: query.clone(),
                        intent: intent.clone(),
                        passages: passages.clone(),
                        feedback: Some(feedback),
                        previous: Some(answer),
                    };
                    match run.step(&summarizer, input, summarizer_attempts).await? {
                        StepOutput::Drafted { answer } => draft = Some((summarizer, answer)),
                        _ => return Err(unexpected(&summarizer, "draft")),
                    }
                }
            }
            Some(AgentKind::Router) | None => {
                return Err(MeshError::internal(Some(step), "not a flow step (validated at load)"));
            }
        }
    }

    let answer = match draft {
        Some((_, a)) => a,
        None => flow.reply.clone().unwrap_or_else(|| "I can't help with that request.".to_string()),
    };
    Ok(finish(&ask, answer, &passages, intent, verdict, run.steps, started))
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
