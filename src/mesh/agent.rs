//! Agents: [`AgentLogic`] is the plain, testable logic of one agent (render
//! its prompt, call its model or store, parse the result); [`AgentActor`]
//! wraps it in an actix actor whose handler returns a future, so the
//! mailbox keeps moving while a model or the store is awaited.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, ResponseFuture};
use serde_json::json;

use super::messages::{EventSink, MeshEvent, RunStep, StepInput, StepOutput};
use super::{MeshError, Resources, StepRecord};
use crate::config::{AgentKind, AgentProfile, AgentSpec, KindSettings};
use crate::llm::{IntentChoice, LlmRequest, LlmResponse, ModelParams, Passage, Scores, SharedLlm, TaskHint};
use crate::prompt::Prompty;
use crate::retrieval::{SharedEmbedder, SharedStore};

/// An agent's profile with its model client resolved.
struct Resolved {
    prompt: Option<Arc<Prompty>>,
    profile_name: String,
    llm: Option<SharedLlm>,
    params: ModelParams,
    settings: KindSettings,
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
            Ok(Resolved {
                prompt: profile.prompt.clone(),
                profile_name,
                llm,
                params,
                settings: profile.settings.clone(),
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
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> AgentKind {
        self.kind
    }

    /// Runs one step, bounded by the agent's timeout and the request's
    /// cancellation.
    pub async fn run(&self, msg: RunStep) -> Result<(StepOutput, StepRecord), MeshError> {
        let cancel = msg.cancel.clone();
        let timeout_ms = self.timeout.as_millis() as u64;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(MeshError::Cancelled),
            r = tokio::time::timeout(self.timeout, self.step(msg)) => match r {
                Ok(result) => result,
                Err(_) => Err(MeshError::AgentTimeout { agent: self.name.clone(), timeout_ms }),
            },
        }
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
                let intents: Vec<IntentChoice> = rs
                    .intents
                    .iter()
                    .map(|i| IntentChoice {
                        name: i.name.clone(),
                        description: i.description.clone(),
                        examples: i.examples.clone(),
                        min_similarity: i.min_similarity.unwrap_or(rs.min_similarity),
                    })
                    .collect();
                let vars = json!({"query": query, "intents": intents, "default_intent": rs.default_intent});
                let hint = TaskHint::Route {
                    query: query.clone(),
                    intents,
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
                let hits = self
                    .store
                    .search(vector, rs.top_k, threshold)
                    .await
                    .map_err(|e| MeshError::Retrieval { agent: self.name.clone(), source: e })?;
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
                let numbered: Vec<serde_json::Value> = passages
                    .iter()
                    .enumerate()
                    .map(|(i, p)| json!({"n": i + 1, "doc_id": p.doc_id, "chunk_id": p.chunk_id, "text": p.text}))
                    .collect();
                let vars = json!({
                    "query": query, "intent": intent, "passages": numbered,
                    "feedback": feedback, "previous": previous, "max_sentences": ss.max_sentences,
                });
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
                let numbered: Vec<serde_json::Value> = passages
                    .iter()
                    .enumerate()
                    .map(|(i, p)| json!({"n": i + 1, "doc_id": p.doc_id, "text": p.text}))
                    .collect();
                let vars = json!({"query": query, "answer": answer, "passages": numbered});
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
        vars: serde_json::Value,
        hint: TaskHint,
        events: EventSink,
        record: &mut StepRecord,
    ) -> Result<LlmResponse, MeshError> {
        let (Some(llm), Some(prompt)) = (&r.llm, &r.prompt) else {
            return Err(MeshError::Startup(format!("agent `{}` has no model or prompt", self.name)));
        };
        let messages = prompt.render(&vars).map_err(|e| MeshError::Model {
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
        let resp = llm.complete(&request, tokens).await.map_err(|e| MeshError::Model {
            agent: self.name.clone(),
            profile: r.profile_name.clone(),
            source: e,
        })?;
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

impl Handler<RunStep> for AgentActor {
    type Result = ResponseFuture<Result<(StepOutput, StepRecord), MeshError>>;

    fn handle(&mut self, msg: RunStep, _ctx: &mut Self::Context) -> Self::Result {
        let logic = self.logic.clone();
        Box::pin(async move { logic.run(msg).await })
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
