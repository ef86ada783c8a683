//! What every agent kind is built from: the [`KindLogic`] trait, the
//! [`StepContext`] a step runs in (the model-call helper, the events sink,
//! the cancellation, the record to fill), and [`Model`], the model-calling
//! part a kind prepares once per profile.

use std::future::Future;
use std::sync::Arc;

use minijinja::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentKind, AgentProfile, AgentSpec};
use crate::llm::{
    ChatMessage, LlmError, LlmRequest, LlmResponse, ModelParams, ResponseSchema, Role, SharedLlm, TaskHint,
    ToolSpec,
};
use crate::mesh::messages::{EventSink, MeshEvent, StepInput, StepOutput};
use crate::mesh::{MeshError, Resources, StepRecord};
use crate::prompt::{PreparedPrompt, PromptFileExt as _};
use crate::sessions::Turn;

/// The logic of one agent kind, for one profile of one agent (its base
/// profile, or a variant's).
///
/// It is built once, at start-up, with everything fixed for the profile
/// resolved (the model client, the prompt with its fixed values rendered
/// in, a router's intents): a profile that cannot be served fails the
/// start, never a request. A step then only does per-request work.
///
/// Steps are called through generic code (see `actor.rs`), so a step's
/// future is not boxed on its own: it lives inside the one future the
/// actor's handler already boxes. That is why this trait is not used as
/// `dyn`, and why the future need not be `Send` (a step runs on its
/// actor's arbiter thread from start to end).
pub trait KindLogic: Send + Sync + Sized + 'static {
    /// Builds the logic of `agent` for `profile`, from the shared
    /// `resources`.
    fn prepare(agent: &AgentSpec, profile: &AgentProfile, resources: &Resources) -> Result<Self, MeshError>;

    /// Runs one step. A kind takes the [`StepInput`]s it knows and answers
    /// any other with [`StepContext::cannot_run`]: the orchestrator sent it
    /// to the wrong agent, which is a bug.
    fn step(
        &self,
        ctx: &mut StepContext<'_>,
        input: StepInput,
    ) -> impl Future<Output = Result<StepOutput, MeshError>>;
}

/// What a step runs in: who is running, where events go, when to stop,
/// and the record the step fills.
pub struct StepContext<'a> {
    /// The agent's name: model requests, errors, events and the record
    /// name it.
    agent: &'a str,
    /// The agent's kind, for the error of a step sent to the wrong kind.
    kind: AgentKind,
    /// Where a streaming caller wants events; `None` when nobody streams.
    events: &'a EventSink,
    /// Cancelled when the request is over. The step's future is dropped
    /// then anyway; a kind that loops (tool calls) can also check it.
    cancel: &'a CancellationToken,
    /// This step's record: model usage is added by [`StepContext::call`],
    /// the summary is the kind's to write.
    pub record: StepRecord,
    /// The variant the request runs under (`None`: the base mesh).
    variant: Option<&'a str>,
    /// The conversation's earlier turns, oldest first (empty: none).
    history: &'a [Turn],
}

impl<'a> StepContext<'a> {
    pub fn new(
        agent: &'a str,
        kind: AgentKind,
        attempt: u32,
        events: &'a EventSink,
        cancel: &'a CancellationToken,
    ) -> Self {
        let record = StepRecord {
            agent: agent.to_string(),
            kind: kind.as_str().to_string(),
            model: String::new(),
            attempt,
            latency_ms: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            tokens_estimated: false,
            cost_usd: Some(0.0),
            summary: String::new(),
            model_attempts: 0,
            failed_model_attempts: Vec::new(),
        };
        Self { agent, kind, events, cancel, record, variant: None, history: &[] }
    }

    /// Sets the variant the request runs under (an agent called as a
    /// tool runs under it too).
    pub fn set_variant(&mut self, variant: Option<&'a str>) {
        self.variant = variant;
    }

    /// The variant the request runs under.
    pub fn variant(&self) -> Option<&'a str> {
        self.variant
    }

    /// Sets the conversation's earlier turns: every model call gets them
    /// as prior messages.
    pub fn set_history(&mut self, history: &'a [Turn]) {
        self.history = history;
    }

    /// The agent's name.
    pub fn agent(&self) -> &'a str {
        self.agent
    }

    /// Where a streaming caller wants events.
    pub fn events(&self) -> &EventSink {
        self.events
    }

    /// The request's cancellation.
    pub fn cancel(&self) -> &CancellationToken {
        self.cancel
    }

    /// Renders `model`'s prompt with `vars`, calls the model and adds the
    /// call's usage to the record (a step may call more than once; usage
    /// adds up).
    pub async fn call(
        &mut self,
        model: &Model,
        vars: Value,
        hint: TaskHint,
    ) -> Result<LlmResponse, MeshError> {
        // Not through a shared helper: each `async fn` level would hold
        // and copy the request future once more.
        let request = self.request(model, vars, hint)?;
        self.complete(model, &request, false).await
    }

    /// [`StepContext::call`], also sending the model's text to the events
    /// sink as [`MeshEvent::Token`]s while it is written, when someone
    /// streams.
    pub async fn call_streaming(
        &mut self,
        model: &Model,
        vars: Value,
        hint: TaskHint,
    ) -> Result<LlmResponse, MeshError> {
        let request = self.request(model, vars, hint)?;
        self.complete(model, &request, true).await
    }

    /// The request for one call of `model`: its prompt rendered with
    /// `vars`, its parameters, schema and tools. A kind that calls in
    /// rounds (tools) adds messages to it between calls.
    pub fn request(&self, model: &Model, vars: Value, hint: TaskHint) -> Result<LlmRequest, MeshError> {
        // A conversation goes where the prompt declares a `thread` input,
        // else before the last user message.
        let thread = (!self.history.is_empty()).then(|| model.prompt.thread_inputs().first()).flatten();
        let vars = match thread {
            Some(name) => {
                let turns: Vec<Value> = history_messages(self.history)
                    .into_iter()
                    .map(|m| minijinja::context! { role => m.role.as_str(), content => m.content })
                    .collect();
                let mut thread_map = std::collections::BTreeMap::new();
                thread_map.insert(name.clone(), Value::from(turns));
                minijinja::value::merge_maps([Value::from(thread_map), vars])
            }
            None => vars,
        };
        let mut messages = model
            .prompt
            .render(vars)
            .map_err(|source| MeshError::Prompt { agent: self.agent.to_string(), source })?;
        if thread.is_none() && !self.history.is_empty() {
            let at = messages.iter().rposition(|m| m.role == Role::User).unwrap_or(messages.len());
            messages.splice(at..at, history_messages(self.history));
        }
        Ok(LlmRequest {
            agent: self.agent.to_string(),
            messages,
            params: model.params.clone(),
            hint,
            response_schema: model.response_schema.clone(),
            tools: model.tools.clone(),
        })
    }

    /// Sends `request` to `model` (streaming its text as events when
    /// `stream` and someone listens) and adds the call's usage to the
    /// record.
    pub async fn complete(
        &mut self,
        model: &Model,
        request: &LlmRequest,
        stream: bool,
    ) -> Result<LlmResponse, MeshError> {
        if self.cancel.is_cancelled() {
            return Err(MeshError::Cancelled);
        }
        let tokens = match (stream, self.events) {
            (true, Some(sink)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let (sink, agent) = (sink.clone(), self.agent.to_string());
                // Forward deltas as mesh events while the model writes.
                actix::spawn(async move {
                    while let Some(text) = rx.recv().await {
                        if sink.send(MeshEvent::Token { agent: agent.clone(), text }).is_err() {
                            break;
                        }
                    }
                });
                Some(tx)
            }
            _ => None,
        };
        let resp = model.llm.complete(request, tokens).await.map_err(|source| MeshError::Model {
            agent: self.agent.to_string(),
            profile: model.profile.clone(),
            source,
        })?;
        let r = &mut self.record;
        r.model = resp.model.clone();
        r.input_tokens += resp.usage.input_tokens;
        r.output_tokens += resp.usage.output_tokens;
        r.tokens_estimated |= resp.usage.estimated;
        // An unknown price makes the step's cost unknown, never 0.
        r.cost_usd = r.cost_usd.zip(resp.cost_usd).map(|(a, b)| a + b);
        r.model_attempts += resp.attempts;
        r.failed_model_attempts.extend(resp.failed_attempts.iter().cloned());
        Ok(resp)
    }

    /// The error for a model answer the kind cannot use (a critic's reply
    /// with no JSON in it).
    pub fn bad_response(&self, model: &Model, message: impl Into<String>) -> MeshError {
        MeshError::Model {
            agent: self.agent.to_string(),
            profile: model.profile.clone(),
            source: LlmError::BadResponse { model: self.record.model.clone(), message: message.into() },
        }
    }

    /// The error for a step this kind does not run: the orchestrator sent
    /// it to the wrong agent, a broken invariant (flows are validated at
    /// load).
    pub fn cannot_run(&self, input: &StepInput) -> MeshError {
        MeshError::internal(
            Some(self.agent),
            format!(
                "agent `{}` is a {} and cannot run a {} step",
                self.agent,
                self.kind.as_str(),
                input.name()
            ),
        )
    }

    /// The finished record: model retries noted in the summary, the
    /// latency since `started`.
    pub fn finish(self, started: std::time::Instant) -> StepRecord {
        let mut record = self.record;
        // Calls beyond one that did not fail are a tool loop's rounds,
        // which the kind's summary already counts.
        if record.model_attempts > 1 && !record.failed_model_attempts.is_empty() {
            // The proto's StepRecord has no field for retries; the summary
            // is where an operator reading a trace sees them.
            record.summary.push_str(&format!(
                " (model attempts: {}; failed: {})",
                record.model_attempts,
                record.failed_model_attempts.join(", ")
            ));
        }
        record.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        record
    }
}

/// The model-calling part of a profile, resolved once: the client, the
/// prompt with the kind's fixed values rendered in, the sampling
/// parameters.
pub struct Model {
    /// The profile's client, as `llm::build_clients` made it (traced, with
    /// its retries and fallback).
    llm: SharedLlm,
    /// The model profile's name, for errors.
    profile: String,
    /// The prompt, with the parts that read only fixed values rendered.
    prompt: PreparedPrompt,
    /// From the prompt's front matter; cloned into each request, which
    /// owns its parameters.
    params: ModelParams,
    /// The schema structured answers must match, shared by every request
    /// (an `llm` agent with JSON output sets it; `None` costs nothing).
    response_schema: Option<Arc<ResponseSchema>>,
    tools: Arc<[ToolSpec]>,
}

impl Model {
    /// Resolves `profile`'s model and prompt, rendering `fixed` (the values
    /// that are the same on every request) into the prompt. Fails when the
    /// profile names no model or no prompt, or a model with no client.
    pub fn prepare(
        agent: &AgentSpec,
        profile: &AgentProfile,
        resources: &Resources,
        fixed: Value,
    ) -> Result<Model, MeshError> {
        let (Some(name), Some(prompt)) = (&profile.model, &profile.prompt) else {
            return Err(MeshError::Startup(format!(
                "agent `{}` is a {} and needs a model and a prompt",
                agent.name,
                agent.kind.as_str()
            )));
        };
        let llm = resources.models.get(name).cloned().ok_or_else(|| {
            MeshError::Startup(format!("agent `{}`: model profile `{name}` has no client", agent.name))
        })?;
        let prepared = prompt
            .prepare(fixed)
            .map_err(|source| MeshError::Prompt { agent: agent.name.clone(), source })?;
        Ok(Model {
            llm,
            profile: name.clone(),
            prompt: prepared,
            params: prompt.model.parameters.to_model_params(),
            response_schema: None,
            tools: Default::default(),
        })
    }

    /// The same model, offered `tools` on every call.
    pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Model {
        self.tools = tools.into();
        self
    }

    /// The same model asked for JSON: fitting `schema` when there is one
    /// (sent to providers that take a schema), else any JSON object (the
    /// `json_object` format, unless the prompt names a format itself).
    pub fn with_json_output(mut self, schema: Option<ResponseSchema>) -> Model {
        match schema {
            Some(s) => self.response_schema = Some(Arc::new(s)),
            None => {
                self.params.response_format.get_or_insert_with(|| "json_object".to_string());
            }
        }
        self
    }
}

/// Earlier turns as chat messages: each question and its answer.
pub fn history_messages(history: &[Turn]) -> Vec<ChatMessage> {
    history
        .iter()
        .flat_map(|t| {
            [
                ChatMessage::new(Role::User, t.query.clone()),
                ChatMessage::new(Role::Assistant, t.answer.clone()),
            ]
        })
        .collect()
}

/// The error for a profile whose settings are not its kind's: validation
/// guarantees they are, so this is a broken invariant (at start-up).
pub fn wrong_settings(agent: &AgentSpec) -> MeshError {
    MeshError::internal(
        Some(&agent.name),
        format!("its settings are not a {}'s (validated at load)", agent.kind.as_str()),
    )
}

/// The passages as a prompt sees them: numbered from 1 (the `[n]` an
/// answer cites), with their document, chunk and text.
pub fn numbered_passages(passages: &[crate::llm::Passage]) -> Vec<Value> {
    passages
        .iter()
        .enumerate()
        .map(|(i, p)| minijinja::context! {n => i + 1, doc_id => p.doc_id, chunk_id => p.chunk_id, text => p.text})
        .collect()
}

#[cfg(test)]
mod tests {
    use minijinja::context;

    use super::super::test_support::{Harness, fixed_reply};
    use super::*;

    #[tokio::test]
    async fn usage_adds_up_over_calls_and_an_unknown_price_stays_unknown() {
        let h = Harness::offline();
        let spec = h.agent("critic");
        let model = Model::prepare(spec, &spec.base, &h.resources, context! {}).unwrap();
        let (events, cancel) = (None, CancellationToken::new());
        let mut ctx = StepContext::new("critic", spec.kind, 1, &events, &cancel);
        let vars = || context! { query => "q", answer => "a", passages => Vec::<String>::new() };
        let hint =
            || TaskHint::Critique { query: "q".into(), answer: "a".into(), passages: Vec::new().into() };
        let first = ctx.call(&model, vars(), hint()).await.unwrap();
        ctx.call(&model, vars(), hint()).await.unwrap();
        assert_eq!(ctx.record.input_tokens, 2 * first.usage.input_tokens);
        assert_eq!((ctx.record.model_attempts, ctx.record.cost_usd), (2, Some(0.0)));
        let record = ctx.finish(std::time::Instant::now());
        // Two calls that both answered are rounds, not retries: no note.
        assert!(!record.summary.contains("model attempts"), "{}", record.summary);

        let h = Harness::with_model(fixed_reply("{}"));
        let model = Model::prepare(spec, &spec.base, &h.resources, context! {}).unwrap();
        let mut ctx = StepContext::new("critic", spec.kind, 1, &events, &cancel);
        ctx.call(&model, vars(), hint()).await.unwrap();
        assert_eq!((ctx.record.model.as_str(), ctx.record.cost_usd), ("fixed", None));
        cancel.cancel();
        assert!(matches!(ctx.call(&model, vars(), hint()).await, Err(MeshError::Cancelled)));
    }

    #[test]
    fn a_model_calling_kind_without_a_prompt_fails_at_start_up() {
        let h = Harness::offline();
        let mut spec = h.agent("summarizer").clone();
        spec.variants.insert("bare".into(), AgentProfile { prompt: None, ..spec.base.clone() });
        let Err(err) = crate::mesh::agents::AgentLogic::new(&spec, &h.resources) else {
            panic!("a variant with no prompt must fail the start")
        };
        assert!(
            err.to_string().contains("agent `summarizer` is a summarizer and needs a model and a prompt")
        );
    }
}
