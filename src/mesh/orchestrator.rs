//! The orchestrator: routes each request, then runs the flow configured for
//! the routed intent: its steps in order, groups of agents at once,
//! conditional steps when their condition holds, and the critic's revision
//! loop. The flow runner is a plain async function over a shared [`Plan`];
//! the actor only hands each request to it as a future.

use std::sync::Arc;

use actix::{Actor, Context, Handler, ResponseFuture};
use tracing::Instrument as _;

use super::conversation;
use super::flow_steps::{FlowState, run_step, unexpected};
use super::messages::{Ask, StepInput, StepOutput};
use super::run::Run;
pub use super::run::{AgentPool, AgentPools, Plan};
use super::{Answer, Citation, MeshError, StepRecord, Usage, Verdict};
use crate::config::AgentKind;
use crate::llm::Passage;

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
    // The flow's future (kilobytes) is pinned here once and polled in
    // place: wrapping it in a timeout in one branch and awaiting it bare in
    // another would give this future two slots for it, and a copy of it.
    let flow = std::pin::pin!(run_flow(&plan, ask, home));
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    // The flow is polled before its deadline, as a timeout would.
    let result = tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(MeshError::Cancelled),
        r = flow => r,
        () = expired => Err(MeshError::DeadlineExceeded),
    };
    if result.is_err() {
        // Stop whatever agent work is still running for this request.
        cancel.cancel();
    }
    result
}

async fn run_flow(plan: &Plan, ask: Ask, home: usize) -> Result<Answer, MeshError> {
    let started = std::time::Instant::now();
    let variant = ask.input.variant.as_deref();
    if let Some(v) = variant {
        check_variant(plan, v)?;
    }
    let query = ask.input.query.clone();
    let mut run = Run::new(plan, &ask, home);
    if let Some(v) = variant {
        ask.span.record("meshops.variant", v);
    }
    // A turn of a conversation routes and retrieves with the earlier
    // question too, so a follow-up ("and how do I change it?") keeps its
    // subject; the answering agents see the whole history.
    let (history, dropped) = conversation::load(plan, &ask).await;
    let search_query = history.as_deref().and_then(|h| h.last()).map(|t| format!("{query} {}", t.query));
    let kept = history.as_deref().map_or(0, <[_]>::len);
    run.history = history;
    let route_query = search_query.clone().unwrap_or_else(|| query.clone());
    let routed = run.send(&plan.router, StepInput::Route { query: route_query }, 1).await?;
    let intent = match run.recorded(routed) {
        StepOutput::Routed { intent } => intent,
        _ => return Err(unexpected(&plan.router, "intent")),
    };
    if kept > 0
        && let Some(router) = run.steps.last_mut()
    {
        router.summary.push_str(&conversation::note(kept, dropped));
    }
    ask.span.record("meshops.intent", intent.as_str());
    run.set_intent(&intent);
    let flow =
        plan.flows.get(variant, &intent).ok_or_else(|| MeshError::NoFlow { intent: intent.clone() })?;

    let mut state = FlowState::new(flow, query, intent);
    state.search_query = search_query;
    for step in &flow.steps {
        run_step(&mut run, &mut state, step).await?;
    }
    let answer = state.answer();
    let answer = finish(&ask, answer, &state.passages, state.intent, state.verdict, run.steps, started);
    conversation::remember(plan, &ask, &answer).await;
    Ok(answer)
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
        model_calls: steps
            .iter()
            .filter(|s| s.kind != AgentKind::Retriever.as_str() && s.kind != super::tools::TOOL_KIND)
            .count() as u32,
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
