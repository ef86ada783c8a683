//! The messages the mesh exchanges: requests into the orchestrator, steps
//! into agents, and the events a streaming caller sees.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Message;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Answer, MeshError, StepRecord};
use crate::llm::{Passage, Scores};

/// A question for the mesh: what the gateway (and the eval harness) sends
/// the orchestrator.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AskInput {
    pub query: String,
    pub session_id: String,
    /// Variant whose overrides apply; `None` is the base mesh.
    pub variant: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// What happens while a request runs, for `AskStream`.
#[derive(Debug, Clone, PartialEq)]
pub enum MeshEvent {
    StepStarted { agent: String, kind: String, attempt: u32 },
    StepFinished(StepRecord),
    Token { agent: String, text: String },
}

/// Where a request's events go; `None` when nobody streams.
pub type EventSink = Option<UnboundedSender<MeshEvent>>;

/// Runs one request through the router and its flow.
#[derive(Message)]
#[rtype(result = "Result<Answer, MeshError>")]
pub struct Ask {
    pub input: AskInput,
    pub events: EventSink,
    /// When the whole request must be done.
    pub deadline: Option<Instant>,
    /// Cancelled when the caller goes away: no further model calls happen.
    pub cancel: CancellationToken,
    /// The request's trace id, reported in the answer.
    pub trace_id: String,
    /// The request's span: agent spans nest under it, across arbiters.
    pub span: tracing::Span,
    /// Who asks: the API key's owner label (empty without keys). A
    /// conversation belongs to it: another owner's same `session_id` is
    /// another conversation.
    pub owner: String,
    /// Where each finished step's model tokens are added as it ends, so a
    /// request dropped midway is charged what it used (the gateway's
    /// per-key token budget).
    pub meter: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl Ask {
    /// A request for `input` that must be answered by `deadline`, with a
    /// fresh cancellation token, reported under `trace_id` (the gateway
    /// adopts the client's `traceparent`; others take
    /// [`crate::telemetry::propagation::new_trace_id`]), whose agent spans
    /// nest under `span`. The one way an `Ask` is built: the gateway, the
    /// batch runner, the evaluation harness and the benchmarks all call it.
    pub fn new(input: AskInput, deadline: Instant, trace_id: String, span: tracing::Span) -> Self {
        Ask {
            input,
            events: None,
            deadline: Some(deadline),
            cancel: CancellationToken::new(),
            trace_id,
            span,
            owner: String::new(),
            meter: None,
        }
    }

    /// The same request, adding its model tokens to `meter` step by step.
    pub fn with_meter(mut self, meter: Option<Arc<std::sync::atomic::AtomicU64>>) -> Self {
        self.meter = meter;
        self
    }

    /// The same request, asked by `owner` (an API key's label).
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// The same request, stopped by `cancel` rather than a token of its own
    /// (a batch item stops when its job is cancelled).
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The same request, streaming its progress to `sink`.
    pub fn with_events(mut self, sink: UnboundedSender<MeshEvent>) -> Self {
        self.events = Some(sink);
        self
    }
}

/// The work of one agent step.
#[derive(Debug, Clone)]
pub enum StepInput {
    Route {
        query: String,
    },
    Retrieve {
        query: String,
    },
    Summarize {
        query: String,
        intent: String,
        /// Shared by every summarizer and critic step of the request.
        passages: Arc<[Passage]>,
        feedback: Option<String>,
        previous: Option<String>,
    },
    Critique {
        query: String,
        answer: String,
        passages: Arc<[Passage]>,
    },
    /// An `llm` agent's step.
    Generate {
        query: String,
        intent: String,
        /// Every passage retrieved so far in the flow.
        passages: Arc<[Passage]>,
        /// The earlier steps' outputs, agent name and output as JSON, in
        /// the order they ran (see [`StepOutput::as_json`]).
        outputs: StepOutputs,
        /// The critic's feedback, when this agent's text is being revised.
        feedback: Option<String>,
        /// The text being revised.
        previous: Option<String>,
        /// A judge step's draft under judgment (its prompt's `answer`).
        judged: Option<String>,
    },
}

/// Earlier steps' outputs as an `llm` step sees them: agent name and
/// output as JSON, in the order they ran (a later output of the same agent
/// comes later).
pub type StepOutputs = Arc<[(String, serde_json::Value)]>;

impl StepInput {
    /// The step's name, for errors (`route`, `retrieve`, …).
    pub fn name(&self) -> &'static str {
        match self {
            StepInput::Route { .. } => "route",
            StepInput::Retrieve { .. } => "retrieve",
            StepInput::Summarize { .. } => "summarize",
            StepInput::Critique { .. } => "critique",
            StepInput::Generate { .. } => "generate",
        }
    }
}

/// What one agent step produced.
#[derive(Debug, Clone)]
pub enum StepOutput {
    Routed {
        intent: String,
    },
    Retrieved {
        passages: Vec<Passage>,
    },
    Drafted {
        answer: String,
    },
    Judged {
        accepted: bool,
        scores: Scores,
        feedback: String,
    },
    /// An `llm` agent's output: its text, and the parsed value when its
    /// output is JSON (validated against its schema).
    Generated {
        text: String,
        /// Boxed: most outputs are text, and a JSON value is large next to
        /// the other outputs every step moves around.
        json: Option<Box<serde_json::Value>>,
        /// The tools the step called, one record per call (and one per
        /// step of an agent called as a tool), in the order they ended;
        /// the flow records them before the step's own record.
        tools: Vec<StepRecord>,
    },
}

impl StepOutput {
    /// The output as JSON, as later `llm` steps and flow conditions see
    /// it: a draft or a text as a string, a JSON output as its value, a
    /// verdict as `{accepted, scores, feedback}`, passages as a list.
    pub fn as_json(&self) -> serde_json::Value {
        match self {
            StepOutput::Routed { intent } => serde_json::json!({ "intent": intent }),
            StepOutput::Retrieved { passages } => serde_json::to_value(passages).unwrap_or_default(),
            StepOutput::Drafted { answer } => serde_json::Value::from(answer.as_str()),
            StepOutput::Judged { accepted, scores, feedback } => {
                serde_json::json!({ "accepted": accepted, "scores": scores, "feedback": feedback })
            }
            StepOutput::Generated { json: Some(v), .. } => (**v).clone(),
            StepOutput::Generated { text, json: None, .. } => serde_json::Value::from(text.as_str()),
        }
    }
}

/// Asks an agent to run one step.
#[derive(Message)]
#[rtype(result = "Result<(StepOutput, StepRecord), MeshError>")]
pub struct RunStep {
    pub variant: Option<String>,
    pub input: StepInput,
    pub attempt: u32,
    pub events: EventSink,
    pub cancel: CancellationToken,
    /// The request's span, parent of this step's span.
    pub parent: tracing::Span,
    /// The routed intent (empty for the router's own step), for the span.
    pub intent: String,
    /// The conversation's earlier turns, oldest first, when the request
    /// is a turn of one: model-calling kinds give them to their model.
    pub history: Option<Arc<[crate::sessions::Turn]>>,
}
