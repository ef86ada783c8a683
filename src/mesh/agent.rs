//! Agents: [`AgentLogic`] is the plain, testable logic of one agent (render
//! its prompt, call its model or store, parse the result); [`AgentActor`]
//! wraps it in an actix actor whose handler returns a future, so the
//! mailbox keeps moving while a model or the store is awaited.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext as _, AsyncContext as _, Context, Handler, ResponseFuture};
use futures::FutureExt as _;
use minijinja::context;
use opentelemetry::KeyValue;
use tracing::Instrument as _;

use super::messages::{EventSink, MeshEvent, RunStep, StepInput, StepOutput};
use super::{MeshError, Resources, StepRecord};
use crate::config::{AgentKind, AgentProfile, AgentSpec, KindSettings};
use crate::llm::{IntentChoice, LlmRequest, LlmResponse, ModelParams, Passage, Scores, SharedLlm, TaskHint};
use crate::prompt::{PreparedPrompt, PromptFileExt as _};
use crate::retrieval::{SharedEmbedder, SharedStore};
use crate::telemetry::attr;

/// An agent's profile with its model client resolved.
struct Resolved {
    /// The prompt with the agent's fixed values (a router's intents, a
    /// summarizer's sentence limit) rendered in once.
    prompt: Option<PreparedPrompt>,
    profile_name: String,
    llm: Option<SharedLlm>,
    params: ModelParams,
    settings: KindSettings,
    /// A router's intents, built once for the model hint (shared, never
    /// copied per request).
    intents: Option<Arc<[IntentChoice]>>,
    /// The model attribute of metrics, built once.
    model_attr: Option<KeyValue>,
}

/// A metric attribute whose value is shared, so cloning it per call
/// allocates nothing.
fn shared_attr(key: &'static str, value: &str) -> KeyValue {
    KeyValue::new(key, opentelemetry::Value::String(Arc::<str>::from(value).into()))
}

/// One agent's logic, shared by its replicas.
pub struct AgentLogic {
    name: String,
    kind: AgentKind,
    timeout: Duration,
    base: Resolved,
    variants: HashMap<String, Resolved>,
    store: SharedStore,
    embedder: SharedEmbedder,
    /// Record prompt and completion text on model spans.
    capture_content: bool,
    /// Restarts of this agent's replicas after a panic.
    restarts: std::sync::atomic::AtomicU64,
    /// The agent attribute of metrics, built once.
    agent_attr: KeyValue,
}

impl AgentLogic {
    pub fn new(spec: &AgentSpec, resources: &Resources) -> Result<Self, MeshError> {
        let resolve = |profile: &AgentProfile| -> Result<Resolved, MeshError> {
            let (llm, profile_name, mut params) = match &profile.model {
                Some(m) => {
                    let llm = resources.models.get(m).cloned().ok_or_else(|| {
                        MeshError::Startup(format!(
                            "agent `{}`: model profile `{m}` has no client",
                            spec.name
                        ))
                    })?;
                    (Some(llm), m.clone(), ModelParams::default())
                }
                None => (None, String::new(), ModelParams::default()),
            };
            if let Some(p) = &profile.prompt {
                params = p.model.parameters.to_model_params();
            }
            let intents = match &profile.settings {
                KindSettings::Router(rs) => {
                    let list: Arc<[IntentChoice]> = rs
                        .intents
                        .iter()
                        .map(|i| IntentChoice {
                            name: i.name.clone(),
                            description: i.description.clone(),
                            examples: i.examples.clone(),
                            min_similarity: i.min_similarity.unwrap_or(rs.min_similarity),
                        })
                        .collect();
                    Some(list)
                }
                _ => None,
            };
            let model_attr = llm.as_ref().map(|l| shared_attr(attr::GEN_AI_REQUEST_MODEL, l.model()));
            // Values that are the same on every request of this profile.
            let fixed = match (&profile.settings, &intents) {
                (KindSettings::Router(rs), Some(list)) => {
                    context! { intents => minijinja::Value::from_serialize(&**list), default_intent => rs.default_intent }
                }
                (KindSettings::Summarizer(ss), _) => context! { max_sentences => ss.max_sentences },
                _ => context! {},
            };
            let prompt = match &profile.prompt {
                Some(p) => Some(p.prepare(fixed).map_err(|e| {
                    MeshError::Startup(format!("agent `{}`: prompt {}: {e}", spec.name, p.path.display()))
                })?),
                None => None,
            };
            Ok(Resolved {
                prompt,
                profile_name,
                llm,
                params,
                settings: profile.settings.clone(),
                intents,
                model_attr,
            })
        };
        let mut variants = HashMap::new();
        for (v, profile) in &spec.variants {
            variants.insert(v.clone(), resolve(profile)?);
        }
        Ok(Self {
            name: spec.name.clone(),
            kind: spec.kind,
            timeout: Duration::from_millis(spec.timeout_ms),
            base: resolve(&spec.base)?,
            variants,
            store: resources.store.clone(),
            embedder: resources.embedder.clone(),
            capture_content: resources.capture_content,
            restarts: std::sync::atomic::AtomicU64::new(0),
            agent_attr: shared_attr(attr::AGENT, &spec.name),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> AgentKind {
        self.kind
    }

    /// How many times this agent's replicas were restarted after a panic.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs one step, bounded by the agent's timeout and the request's
    /// cancellation.
    pub async fn run(&self, msg: RunStep) -> Result<(StepOutput, StepRecord), MeshError> {
        let cancel = msg.cancel.clone();
        let timeout_ms = self.timeout.as_millis() as u64;
        let span = tracing::info_span!(
            parent: &msg.parent,
            "agent.step",
            otel.name = %format_args!("{} {}", self.kind.as_str(), self.name),
            otel.status_code = tracing::field::Empty,
            meshops.agent = %self.name,
            meshops.agent.kind = self.kind.as_str(),
            meshops.attempt = i64::from(msg.attempt),
            meshops.intent = %msg.intent,
            meshops.flow = %msg.intent,
            meshops.variant = msg.variant.as_deref().unwrap_or(""),
            error.type = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = async {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(MeshError::Cancelled),
                r = tokio::time::timeout(self.timeout, self.step(msg)) => match r {
                    Ok(result) => result,
                    Err(_) => Err(MeshError::AgentTimeout { agent: self.name.clone(), timeout_ms }),
                },
            }
        }
        .instrument(span.clone())
        .await;
        let m = crate::telemetry::metrics::get();
        let agent_attr = self.agent_attr.clone();
        m.step_duration.record(started.elapsed().as_secs_f64(), std::slice::from_ref(&agent_attr));
        if let Err(e) = &result {
            let kind = error_kind(e);
            span.record("otel.status_code", "ERROR");
            span.record("error.type", kind);
            m.errors.add(1, &[agent_attr, KeyValue::new(attr::ERROR_TYPE, kind)]);
        }
        result
    }

    async fn step(&self, msg: RunStep) -> Result<(StepOutput, StepRecord), MeshError> {
        let started = Instant::now();
        let r = msg.variant.as_deref().and_then(|v| self.variants.get(v)).unwrap_or(&self.base);
        let mut record = StepRecord {
            agent: self.name.clone(),
            kind: self.kind.as_str().to_string(),
            model: String::new(),
            attempt: msg.attempt,
            latency_ms: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            tokens_estimated: false,
            cost_usd: Some(0.0),
            summary: String::new(),
            model_attempts: 0,
            failed_model_attempts: Vec::new(),
        };
        let output = match (&msg.input, &r.settings) {
            (StepInput::Route { query }, KindSettings::Router(rs)) => {
                let Some(intents) = &r.intents else {
                    return Err(MeshError::Startup(format!("router `{}` has no intents", self.name)));
                };
                // The intents and the default are rendered in already.
                let vars = context! { query => query };
                let hint = TaskHint::Route {
                    query: query.clone(),
                    intents: intents.clone(),
                    default_intent: rs.default_intent.clone(),
                };
                let resp = self.call(r, vars, hint, None, &mut record).await?;
                let parsed = crate::llm::extract_json(&resp.text);
                let named = parsed
                    .as_ref()
                    .and_then(|m| m.get("intent"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .or_else(|| {
                        // A model may answer with the bare intent name.
                        let t = resp.text.trim().trim_matches('"');
                        rs.intents.iter().find(|i| i.name == t).map(|i| i.name.clone())
                    });
                let intent = match named {
                    Some(n) if rs.intents.iter().any(|i| i.name == n) => n,
                    _ => rs.default_intent.clone(),
                };
                let score = parsed.as_ref().and_then(|m| m.get("score")).and_then(|v| v.as_f64());
                record.summary = match score {
                    Some(s) => format!("intent={intent} similarity={s:.3}"),
                    None => format!("intent={intent}"),
                };
                StepOutput::Routed { intent }
            }
            (StepInput::Retrieve { query }, KindSettings::Retriever(rs)) => {
                record.model = self.embedder.name().to_string();
                let vectors = self
                    .embedder
                    .embed(std::slice::from_ref(query))
                    .await
                    .map_err(|e| MeshError::Retrieval { agent: self.name.clone(), source: e })?;
                let Some(vector) = vectors.into_iter().next() else {
                    return Err(MeshError::Retrieval {
                        agent: self.name.clone(),
                        source: crate::retrieval::RetrievalError::Embed {
                            embedder: self.embedder.name().to_string(),
                            message: "returned no vector".into(),
                        },
                    });
                };
                let threshold = (rs.score_threshold > 0.0).then_some(rs.score_threshold);
                let search_span = tracing::info_span!(
                    "vector.search",
                    otel.name = %format_args!("search {}", self.store.collection()),
                    otel.kind = "client",
                    otel.status_code = tracing::field::Empty,
                    db.system.name = "qdrant",
                    db.collection.name = %self.store.collection(),
                    meshops.store.backend = %self.store.backend(),
                    meshops.top_k = rs.top_k as i64,
                    meshops.hits = tracing::field::Empty,
                );
                let hits =
                    self.store.search(vector, rs.top_k, threshold).instrument(search_span.clone()).await;
                match &hits {
                    Ok(h) => search_span.record("meshops.hits", h.len() as i64),
                    Err(_) => search_span.record("otel.status_code", "ERROR"),
                };
                let hits = hits.map_err(|e| MeshError::Retrieval { agent: self.name.clone(), source: e })?;
                let passages: Vec<Passage> = hits
                    .into_iter()
                    .map(|h| Passage { doc_id: h.doc_id, chunk_id: h.chunk_id, text: h.text, score: h.score })
                    .collect();
                let mut docs: Vec<&str> = passages.iter().map(|p| p.doc_id.as_str()).collect();
                docs.dedup();
                record.summary = format!("{} passages from {}", passages.len(), docs.join(", "));
                StepOutput::Retrieved { passages }
            }
            (
                StepInput::Summarize { query, intent, passages, feedback, previous },
                KindSettings::Summarizer(ss),
            ) => {
                let numbered: Vec<minijinja::Value> = passages
                    .iter()
                    .enumerate()
                    .map(|(i, p)| context! {n => i + 1, doc_id => p.doc_id, chunk_id => p.chunk_id, text => p.text})
                    .collect();
                let vars = context! {
                    query => query, intent => intent, passages => numbered,
                    feedback => feedback, previous => previous,
                };
                let hint = TaskHint::Answer {
                    query: query.clone(),
                    intent: intent.clone(),
                    passages: passages.clone(),
                    feedback: feedback.clone(),
                    previous: previous.clone(),
                    max_sentences: ss.max_sentences,
                };
                let resp = self.call(r, vars, hint, msg.events.clone(), &mut record).await?;
                let answer = resp.text.trim().to_string();
                record.summary = format!(
                    "draft of {} chars citing {} passages{}",
                    answer.chars().count(),
                    cited_indices(&answer, passages.len()).len(),
                    if feedback.is_some() { " (revised)" } else { "" }
                );
                StepOutput::Drafted { answer }
            }
            (StepInput::Critique { query, answer, passages }, KindSettings::Critic(cs)) => {
                let numbered: Vec<minijinja::Value> = passages
                    .iter()
                    .enumerate()
                    .map(|(i, p)| context! {n => i + 1, doc_id => p.doc_id, text => p.text})
                    .collect();
                let vars = context! {query => query, answer => answer, passages => numbered};
                let hint = TaskHint::Critique {
                    query: query.clone(),
                    answer: answer.clone(),
                    passages: passages.clone(),
                };
                let resp = self.call(r, vars, hint, None, &mut record).await?;
                let parsed = crate::llm::extract_json(&resp.text).ok_or_else(|| MeshError::Model {
                    agent: self.name.clone(),
                    profile: r.profile_name.clone(),
                    source: crate::llm::LlmError::BadResponse {
                        model: resp.model.clone(),
                        message: "critic answer holds no JSON object".into(),
                    },
                })?;
                let mut scores = Scores::new();
                if let Some(obj) = parsed.get("scores").and_then(|s| s.as_object()) {
                    for (k, v) in obj {
                        if let Some(x) = v.as_f64() {
                            scores.insert(k.clone(), x);
                        }
                    }
                }
                let model_accepts = parsed.get("accepted").and_then(|v| v.as_bool()).unwrap_or(false);
                // The agent's thresholds decide where the model gave scores;
                // the model's own yes/no counts only when it gave none.
                let accepted = match (scores.get("groundedness"), scores.get("coverage")) {
                    (Some(g), Some(c)) => *g >= cs.accept_threshold && *c >= cs.min_coverage,
                    (Some(g), None) => *g >= cs.accept_threshold,
                    _ => model_accepts,
                };
                let feedback = parsed.get("feedback").and_then(|v| v.as_str()).unwrap_or("").to_string();
                record.summary = format!(
                    "{} {}",
                    if accepted { "accepted" } else { "rejected" },
                    scores.iter().map(|(k, v)| format!("{k}={v:.2}")).collect::<Vec<_>>().join(" ")
                );
                StepOutput::Judged { accepted, scores, feedback }
            }
            (input, _) => {
                return Err(MeshError::InvalidRequest(format!(
                    "agent `{}` is a {} and cannot run a {} step",
                    self.name,
                    self.kind.as_str(),
                    step_name(input)
                )));
            }
        };
        if record.model_attempts > 1 {
            // The proto's StepRecord has no field for retries; the summary
            // is where an operator reading a trace sees them.
            record.summary.push_str(&format!(
                " (model attempts: {}; failed: {})",
                record.model_attempts,
                record.failed_model_attempts.join(", ")
            ));
        }
        record.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok((output, record))
    }

    /// Renders the prompt, calls the model and records usage on `record`.
    async fn call(
        &self,
        r: &Resolved,
        vars: minijinja::Value,
        hint: TaskHint,
        events: EventSink,
        record: &mut StepRecord,
    ) -> Result<LlmResponse, MeshError> {
        let (Some(llm), Some(prompt)) = (&r.llm, &r.prompt) else {
            return Err(MeshError::Startup(format!("agent `{}` has no model or prompt", self.name)));
        };
        let messages = prompt.render(vars).map_err(|e| MeshError::Model {
            agent: self.name.clone(),
            profile: r.profile_name.clone(),
            source: crate::llm::LlmError::Rejected { model: llm.model().to_string(), message: e.to_string() },
        })?;
        let request = LlmRequest { agent: self.name.clone(), messages, params: r.params.clone(), hint };
        let tokens = events.map(|sink| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let agent = self.name.clone();
            // Forward deltas as mesh events while the model writes.
            actix::spawn(async move {
                while let Some(text) = rx.recv().await {
                    if sink.send(MeshEvent::Token { agent: agent.clone(), text }).is_err() {
                        break;
                    }
                }
            });
            tx
        });
        record.model = llm.model().to_string();
        let span = tracing::info_span!(
            "gen_ai.call",
            otel.name = %format_args!("chat {}", llm.model()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = llm.provider(),
            gen_ai.system = llm.provider(),
            gen_ai.request.model = llm.model(),
            gen_ai.request.temperature = tracing::field::Empty,
            gen_ai.request.max_tokens = tracing::field::Empty,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
            gen_ai.prompt = tracing::field::Empty,
            gen_ai.completion = tracing::field::Empty,
            meshops.tokens_estimated = tracing::field::Empty,
            meshops.cost_usd = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if let Some(t) = request.params.temperature {
            span.record("gen_ai.request.temperature", t);
        }
        if let Some(t) = request.params.max_tokens {
            // Unsigned values reach OTLP as strings; integers must be i64.
            span.record("gen_ai.request.max_tokens", i64::from(t));
        }
        if self.capture_content {
            let prompt: Vec<String> =
                request.messages.iter().map(|m| format!("{}: {}", m.role.as_str(), m.content)).collect();
            span.record("gen_ai.prompt", prompt.join("\n").as_str());
        }
        let started = std::time::Instant::now();
        let result = llm.complete(&request, tokens).instrument(span.clone()).await;
        let m = crate::telemetry::metrics::get();
        let model_attr =
            r.model_attr.clone().unwrap_or_else(|| shared_attr(attr::GEN_AI_REQUEST_MODEL, llm.model()));
        m.operation_duration.record(started.elapsed().as_secs_f64(), std::slice::from_ref(&model_attr));
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", llm_error_kind(&e));
                return Err(MeshError::Model {
                    agent: self.name.clone(),
                    profile: r.profile_name.clone(),
                    source: e,
                });
            }
        };
        span.record("gen_ai.response.model", resp.model.as_str());
        span.record("gen_ai.usage.input_tokens", i64::try_from(resp.usage.input_tokens).unwrap_or(i64::MAX));
        span.record(
            "gen_ai.usage.output_tokens",
            i64::try_from(resp.usage.output_tokens).unwrap_or(i64::MAX),
        );
        span.record("meshops.tokens_estimated", resp.usage.estimated);
        if let Some(reason) = &resp.finish_reason {
            span.record("gen_ai.response.finish_reasons", reason.as_str());
        }
        if let Some(cost) = resp.cost_usd {
            span.record("meshops.cost_usd", cost);
            m.cost.add(cost, &[self.agent_attr.clone(), model_attr.clone()]);
        }
        if self.capture_content {
            span.record("gen_ai.completion", resp.text.as_str());
        }
        for (kind, n) in [("input", resp.usage.input_tokens), ("output", resp.usage.output_tokens)] {
            m.token_usage.record(n, &[model_attr.clone(), KeyValue::new(attr::GEN_AI_TOKEN_TYPE, kind)]);
        }
        record.model = resp.model.clone();
        record.input_tokens = resp.usage.input_tokens;
        record.output_tokens = resp.usage.output_tokens;
        record.tokens_estimated = resp.usage.estimated;
        record.cost_usd = resp.cost_usd;
        record.model_attempts = resp.attempts;
        record.failed_model_attempts = resp.failed_attempts.clone();
        Ok(resp)
    }
}

/// A short, stable name for an error, for `error.type` and metrics.
fn error_kind(e: &MeshError) -> &'static str {
    match e {
        MeshError::InvalidRequest(_) => "invalid_request",
        MeshError::UnknownVariant { .. } => "unknown_variant",
        MeshError::Model { source, .. } => llm_error_kind(source),
        MeshError::Retrieval { .. } => "retrieval",
        MeshError::AgentTimeout { .. } => "agent_timeout",
        MeshError::DeadlineExceeded => "deadline_exceeded",
        MeshError::Cancelled => "cancelled",
        MeshError::AgentUnavailable { .. } => "agent_unavailable",
        MeshError::AgentPanicked { .. } => "agent_panicked",
        MeshError::NoFlow { .. } => "no_flow",
        MeshError::Startup(_) => "startup",
    }
}

fn llm_error_kind(e: &crate::llm::LlmError) -> &'static str {
    match e {
        crate::llm::LlmError::Unavailable { .. } => "model_unavailable",
        crate::llm::LlmError::Timeout { .. } => "model_timeout",
        crate::llm::LlmError::Rejected { .. } => "model_rejected",
        crate::llm::LlmError::BadResponse { .. } => "model_bad_response",
        crate::llm::LlmError::Status { code: 429, .. } => "model_rate_limited",
        crate::llm::LlmError::Status { code, .. } if *code >= 500 => "model_server_error",
        crate::llm::LlmError::Status { .. } => "model_http_error",
    }
}

fn step_name(input: &StepInput) -> &'static str {
    match input {
        StepInput::Route { .. } => "route",
        StepInput::Retrieve { .. } => "retrieve",
        StepInput::Summarize { .. } => "summarize",
        StepInput::Critique { .. } => "critique",
    }
}

/// The passage indices (0-based) an answer cites with `[n]` markers, in
/// order of first appearance; out-of-range markers are ignored.
pub fn cited_indices(answer: &str, passages: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(start) = rest.find('[') {
        let after = &rest[start + 1..];
        let Some(end) = after.find(']') else { break };
        for part in after[..end].split(',') {
            if let Ok(n) = part.trim().parse::<usize>() {
                if n >= 1 && n <= passages && !out.contains(&(n - 1)) {
                    out.push(n - 1);
                }
            }
        }
        rest = &after[end..];
    }
    out
}

/// The actor around an agent's logic.
pub struct AgentActor {
    logic: Arc<AgentLogic>,
}

impl AgentActor {
    pub fn new(logic: Arc<AgentLogic>) -> Self {
        Self { logic }
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Handlers return at once (their work runs as a spawned future), so
        // a deep mailbox only absorbs bursts; it never holds work hostage.
        ctx.set_mailbox_capacity(4096);
    }
}

impl actix::Supervised for AgentActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.logic.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(agent = %self.logic.name, "agent replica restarted after a panic");
    }
}

/// Asks a replica to restart (sent by its own step that panicked).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Restart;

impl Handler<Restart> for AgentActor {
    type Result = ();

    fn handle(&mut self, _msg: Restart, ctx: &mut Self::Context) {
        // Under its `Supervisor`, a stopped actor is restarted in place.
        ctx.stop();
    }
}

impl Handler<RunStep> for AgentActor {
    type Result = ResponseFuture<Result<(StepOutput, StepRecord), MeshError>>;

    fn handle(&mut self, msg: RunStep, ctx: &mut Self::Context) -> Self::Result {
        let logic = self.logic.clone();
        let me = ctx.address();
        Box::pin(async move {
            // Each step runs as its own task, so a panic can only take this
            // step down: it is caught here, the request gets a status naming
            // the agent, and the replica is restarted. Steps of other
            // requests on the same replica are separate tasks and go on.
            match std::panic::AssertUnwindSafe(logic.run(msg)).catch_unwind().await {
                Ok(result) => result,
                Err(payload) => {
                    let what = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".into());
                    tracing::error!(agent = %logic.name, panic = %what, "agent step panicked; restarting the replica");
                    me.do_send(Restart);
                    Err(MeshError::AgentPanicked { agent: logic.name.clone() })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cited_indices_parse_markers() {
        assert_eq!(cited_indices("a [2]. b [1,2]. c [9]. d [x].", 3), vec![1, 0]);
    }
}
