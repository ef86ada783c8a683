//! What the flow runner shares and how it reaches agents: the [`Plan`]
//! (the spec, each agent's replicas, the compiled flows) and a request's
//! [`Run`] (sending a step to a replica, with its events, and the steps'
//! records).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::Addr;
use tokio::sync::mpsc::UnboundedSender;

use super::agents::AgentActor;
use super::flow::Flows;
use super::messages::{Ask, MeshEvent, RunStep, StepInput, StepOutput};
use super::{MeshError, StepRecord};
use crate::config::{AgentKind, MeshSpec};

/// Every agent's replicas by agent name. Looked up once per step, so
/// hashed with FxHash: the names are the configuration's, not an
/// attacker's, and SipHash cost more than the rest of the lookup.
pub type AgentPools = HashMap<String, AgentPool, rustc_hash::FxBuildHasher>;

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
    pub(crate) fn pick(&self, home: usize) -> Option<&Addr<AgentActor>> {
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
    /// Shared with the agents that call others as tools.
    pub agents: Arc<AgentPools>,
    pub router: String,
    /// Every flow (the base mesh's and the variants'), compiled at
    /// start-up against the agents.
    pub flows: Flows,
    /// Where conversations are kept (`None`: no conversations).
    pub sessions: Option<crate::sessions::SharedSessions>,
}

impl Plan {
    /// The plan of `spec` run by `agents`, its flows compiled; fails (at
    /// start-up) when a flow names an agent that did not start.
    pub fn new(spec: Arc<MeshSpec>, agents: Arc<AgentPools>, router: String) -> Result<Plan, MeshError> {
        let flows = Flows::compile(&spec, |name| agents.get(name).map(|p| p.kind))?;
        Ok(Plan { spec, agents, router, flows, sessions: None })
    }
}

/// Per-request state while a flow runs.
pub(super) struct Run<'a> {
    pub(super) plan: &'a Plan,
    ask: &'a Ask,
    home: usize,
    pub(super) steps: Vec<StepRecord>,
    intent: String,
    /// The conversation's earlier turns, when the request is a turn.
    pub(super) history: Option<Arc<[crate::sessions::Turn]>>,
}

impl<'a> Run<'a> {
    /// A request's run over `plan`, preferring the replicas on arbiter
    /// `home`; its intent is set once the router has chosen it.
    pub(super) fn new(plan: &'a Plan, ask: &'a Ask, home: usize) -> Self {
        Run { plan, ask, home, steps: Vec::new(), intent: String::new(), history: None }
    }

    /// The routed intent, for the later steps' spans.
    pub(super) fn set_intent(&mut self, intent: &str) {
        self.intent = intent.to_string();
    }

    /// Records a step [`Run::send`] ran and gives back its output. Not an
    /// `async fn` around `send`: one more level would hold and copy the
    /// step's input and its reply once more.
    pub(super) fn recorded(&mut self, (mut output, record): (StepOutput, StepRecord)) -> StepOutput {
        self.record(&mut output, record);
        output
    }

    /// Records a step: the tools it called first (they ended before it),
    /// then the step itself.
    pub(super) fn record(&mut self, output: &mut StepOutput, record: StepRecord) {
        let before = self.steps.len();
        if let StepOutput::Generated { tools, .. } = output {
            self.steps.append(tools);
        }
        self.steps.push(record);
        if let Some(meter) = &self.ask.meter {
            let used: u64 = self.steps[before..].iter().map(|s| s.input_tokens + s.output_tokens).sum();
            meter.fetch_add(used, std::sync::atomic::Ordering::Relaxed);
        }
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
            history: self.history.clone(),
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
