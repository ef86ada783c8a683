//! Language models behind one trait, [`LlmClient`].
//!
//! Agents never see a concrete model: they build an [`LlmRequest`] (rendered
//! chat messages, sampling parameters and a structured [`TaskHint`]) and get an
//! [`LlmResponse`] with text and usage. The offline engine ([`offline`]) is the
//! embedded default; OpenAI-compatible providers ([`openai`]) plug in behind
//! the same trait, wrapped in [`retry::RetryingClient`] for timeouts, retries
//! and fallback.

pub mod judge_heuristic;
pub mod offline;
mod offline_tools;
pub mod openai;
pub mod retry;
pub mod traced;
pub mod zero;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Sampling parameters are configuration (a model profile's `parameters`,
/// a prompt file's `model.parameters`); requests carry them.
pub use crate::config::ModelParams;
use crate::config::{ModelProfile, Provider};

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message of a chat prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// An assistant message's calls for tools (the model asked; the
    /// answers follow as [`Role::Tool`] messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A [`Role::Tool`] message's call: the [`ToolCall::id`] it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message of `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }

    /// The answer to tool call `id`.
    pub fn tool_result(id: &str, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(id.to_string()),
        }
    }
}

/// A function the model may call (OpenAI's `tools`, type `function`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// What the model calls it: ASCII letters, digits, `_` and `-`, at
    /// most 64.
    pub name: String,
    pub description: String,
    /// The arguments as a JSON Schema object.
    pub parameters: serde_json::Value,
}

/// A call the model asked for: which function, with which arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The model's id for the call, echoed on its result.
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: JSON text (not always
    /// valid; the tool runner checks it).
    pub arguments: String,
}

/// A passage handed to a model: what the retriever found, numbered `[n]` in
/// the prompt by its position (1-based).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub doc_id: String,
    pub chunk_id: String,
    pub text: String,
    pub score: f32,
}

/// An intent the router may choose, with what describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentChoice {
    pub name: String,
    pub description: String,
    pub examples: Vec<String>,
    /// Least similarity at which this intent may be chosen.
    pub min_similarity: f64,
}

/// What the agent is asking for, in structured form. Remote models read the
/// rendered messages and ignore this; the offline engine, which cannot read
/// free text like a model, works from it. Keeping both in one request means
/// the same agent code drives either.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskHint {
    /// Pick one intent for `query`; the answer is `{"intent": "<name>"}`.
    /// `intents` is shared: the same configured list on every request.
    Route { query: String, intents: Arc<[IntentChoice]>, default_intent: String },
    /// Answer `query` from `passages` with `[n]` markers, acting on the
    /// critic's `feedback` when revising.
    Answer {
        query: String,
        intent: String,
        passages: Arc<[Passage]>,
        feedback: Option<String>,
        previous: Option<String>,
        max_sentences: usize,
    },
    /// Judge `answer` against `passages`; the answer is JSON
    /// `{"accepted": bool, "scores": {..}, "feedback": ".."}`.
    Critique { query: String, answer: String, passages: Arc<[Passage]> },
    /// Score `response` on `criterion` (or against `rubric`) from 1 to 5;
    /// the answer is JSON `{"score": n, "reason": ".."}`. The evaluation
    /// harness's LLM judges send this.
    Judge {
        criterion: String,
        query: String,
        response: String,
        context: Option<String>,
        ground_truth: Option<String>,
        rubric: Option<String>,
    },
    /// An `llm` agent's step: whatever its prompt asks, from the query,
    /// the passages and the earlier steps' `outputs` (agent name and output
    /// as JSON, in the order they ran). The offline engine answers it
    /// extractively: see [`offline`].
    Generate {
        query: String,
        intent: String,
        passages: Arc<[Passage]>,
        outputs: Arc<[(String, serde_json::Value)]>,
        feedback: Option<String>,
        previous: Option<String>,
        /// A judge step's draft under judgment: the offline engine scores
        /// it as its critic does.
        judged: Option<String>,
        /// The answer must be JSON (fitting the request's
        /// `response_schema`, when it has one).
        json: bool,
    },
    /// Free-form completion with no structure (custom agents).
    Freeform,
}

/// The JSON schema a structured answer must match: OpenAI-compatible
/// clients send it as `response_format` `json_schema` (servers such as
/// llama.cpp's constrain their grammar by it); the caller validates the
/// answer against it in any case.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseSchema {
    /// The schema's name for the provider: ASCII letters, digits, `_` and
    /// `-`, at most 64 (what OpenAI accepts).
    pub name: String,
    /// The JSON schema.
    pub schema: serde_json::Value,
    /// Ask the provider to follow the schema exactly (only when the schema
    /// meets its strict rules: every object closed, every property
    /// required).
    pub strict: bool,
}

impl ResponseSchema {
    /// A schema named after `name`, with characters a provider refuses
    /// replaced by `_` and cut to 64.
    pub fn new(name: &str, schema: serde_json::Value, strict: bool) -> Self {
        let mut clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
            .take(64)
            .collect();
        if clean.is_empty() {
            clean.push_str("output");
        }
        Self { name: clean, schema, strict }
    }
}

/// One call to a model.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// The agent making the call, for errors and telemetry.
    pub agent: String,
    pub messages: Vec<ChatMessage>,
    pub params: ModelParams,
    pub hint: TaskHint,
    /// The schema a structured answer must match; `None` for free text or
    /// a format the agent parses itself. Shared by every request of the
    /// agent (built once, at start-up).
    pub response_schema: Option<Arc<ResponseSchema>>,
    /// Functions the model may call (empty: none); shared by every request
    /// of the agent.
    pub tools: Arc<[ToolSpec]>,
}

/// Token usage of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// True when the counts were estimated from text, not reported by the
    /// model (the offline engine always estimates).
    pub estimated: bool,
}

/// What a model answered.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmResponse {
    pub text: String,
    /// The model that actually answered (may differ from the requested one).
    pub model: String,
    pub usage: TokenUsage,
    /// Cost in USD, or `None` when the price of the model is unknown.
    pub cost_usd: Option<f64>,
    pub finish_reason: Option<String>,
    /// Calls made to produce this answer, counting retries and the fallback
    /// profile's calls (1 when the first call succeeded).
    pub attempts: u32,
    /// [`LlmError::kind`] of each failed call before the answer, in order.
    pub failed_attempts: Vec<String>,
    /// The tools the model asked to call instead of (or beside) answering.
    pub tool_calls: Vec<ToolCall>,
}

impl LlmResponse {
    /// `cost_usd` from token counts and per-million-token prices: `None`
    /// unless both prices are known, since an unknown price is not free.
    pub fn cost(
        usage: &TokenUsage,
        input_price_per_mtok: Option<f64>,
        output_price_per_mtok: Option<f64>,
    ) -> Option<f64> {
        match (input_price_per_mtok, output_price_per_mtok) {
            (Some(i), Some(o)) => {
                Some(usage.input_tokens as f64 * i / 1e6 + usage.output_tokens as f64 * o / 1e6)
            }
            _ => None,
        }
    }
}

/// Where a streaming caller wants token deltas; dropped receivers are fine.
pub type TokenSink = mpsc::UnboundedSender<String>;

/// Errors of a model call. Each says which kind of failure it is, so the
/// gateway can map it and retries can tell transient from permanent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("model {model} is unavailable: {message}")]
    Unavailable { model: String, message: String },
    #[error("model {model} timed out after {timeout_ms} ms")]
    Timeout { model: String, timeout_ms: u64 },
    #[error("model {model} rejected the request: {message}")]
    Rejected { model: String, message: String },
    #[error("model {model} returned an answer that could not be used: {message}")]
    BadResponse { model: String, message: String },
    /// The server answered with an HTTP error status (after retries, for
    /// the retryable ones).
    #[error("model {model} answered HTTP {code}: {message}")]
    Status { model: String, code: u16, message: String },
}

impl LlmError {
    /// A short name of the failure, recorded per failed attempt:
    /// `unavailable`, `timeout`, `rejected`, `bad_response` or `http_<code>`.
    pub fn kind(&self) -> String {
        match self {
            LlmError::Unavailable { .. } => "unavailable".into(),
            LlmError::Timeout { .. } => "timeout".into(),
            LlmError::Rejected { .. } => "rejected".into(),
            LlmError::BadResponse { .. } => "bad_response".into(),
            LlmError::Status { code, .. } => format!("http_{code}"),
        }
    }

    /// Whether the failure is transient (the service is down, overloaded or
    /// slow), so that a retry or the fallback profile may help.
    pub fn is_transient(&self) -> bool {
        match self {
            LlmError::Unavailable { .. } | LlmError::Timeout { .. } => true,
            LlmError::Status { code, .. } => *code == 429 || (500..=599).contains(code),
            LlmError::Rejected { .. } | LlmError::BadResponse { .. } => false,
        }
    }
}

/// A chat model. Implementations must be cheap to share (`Arc`) and safe to
/// call from many requests at once.
pub trait LlmClient: Send + Sync {
    /// The model name reported in steps and telemetry.
    fn model(&self) -> &str;
    /// The provider name (`offline`, `openai`, `azure`, …).
    fn provider(&self) -> &str;
    /// Runs one completion. When `tokens` is given, text is also sent there
    /// as it is produced; the full text is still returned.
    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
        tokens: Option<TokenSink>,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>>;
}

/// A shared model client.
pub type SharedLlm = Arc<dyn LlmClient>;

/// Builds the client for one model profile, without its fallback (see
/// [`build_clients`] for the whole set).
pub fn build_client(profile_name: &str, profile: &ModelProfile) -> Result<SharedLlm, LlmError> {
    build_client_with(profile_name, profile, None)
}

/// Builds the client for a model profile; remote providers are wrapped in
/// [`retry::RetryingClient`] with `fallback` as the client of last resort.
pub fn build_client_with(
    profile_name: &str,
    profile: &ModelProfile,
    fallback: Option<SharedLlm>,
) -> Result<SharedLlm, LlmError> {
    match profile.provider {
        Provider::Offline => Ok(Arc::new(
            offline::OfflineEngine::new(profile.model.clone(), profile.latency_ms, profile.failure_rate)
                .with_panic_on_query(profile.panic_on_query.clone()),
        )),
        Provider::Zero => Ok(Arc::new(zero::ZeroModel::new(profile.model.clone(), profile.latency_ms))),
        Provider::Openai | Provider::Azure | Provider::OpenaiCompatible => {
            let client = openai::OpenAiClient::new(profile_name, profile)?;
            Ok(Arc::new(retry::RetryingClient::new(profile_name, profile, Arc::new(client), fallback)))
        }
    }
}

/// Builds one client per profile, each wired to its `fallback` profile's
/// client and wrapped, outermost, in [`traced::TracedClient`] (one span and
/// one set of metric samples per call, retries and fallback inside it;
/// `telemetry.capture_content` decides whether text is recorded). Fails on
/// the first profile that cannot be built, or on a fallback cycle
/// (validation rejects those first; this guards callers that skip it).
pub fn build_clients(
    profiles: &BTreeMap<String, ModelProfile>,
    telemetry: &crate::config::TelemetrySettings,
) -> Result<HashMap<String, SharedLlm>, LlmError> {
    // Fallbacks are wired to the untraced clients: a fallback call runs
    // inside the span of the call that fell back, as one logical call.
    let mut built: HashMap<String, SharedLlm> = HashMap::new();
    // Profiles whose fallback is built go first; at most one pass per
    // profile is needed when there is no cycle.
    for _ in 0..=profiles.len() {
        let mut progressed = false;
        for (name, profile) in profiles {
            if built.contains_key(name) {
                continue;
            }
            let fallback = match &profile.fallback {
                None => None,
                Some(fb) => match built.get(fb) {
                    Some(client) => Some(client.clone()),
                    None if profiles.contains_key(fb) => continue,
                    None => {
                        return Err(LlmError::Unavailable {
                            model: profile.model.clone(),
                            message: format!("profile `{name}`: fallback profile `{fb}` does not exist"),
                        });
                    }
                },
            };
            built.insert(name.clone(), build_client_with(name, profile, fallback)?);
            progressed = true;
        }
        if built.len() == profiles.len() {
            return Ok(built
                .into_iter()
                .map(|(name, client)| (name, traced::TracedClient::wrap(client, telemetry)))
                .collect());
        }
        if !progressed {
            break;
        }
    }
    let stuck: Vec<&str> = profiles.keys().filter(|k| !built.contains_key(*k)).map(String::as_str).collect();
    Err(LlmError::Unavailable {
        model: String::new(),
        message: format!("model profiles {} name each other as fallback in a cycle", stuck.join(", ")),
    })
}

/// Parses a JSON object out of a model's answer, tolerating text or code
/// fences around it (real models add them).
pub fn extract_json(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    if end < start {
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(&text[start..=end]) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// Named scores, ordered for stable output.
pub type Scores = BTreeMap<String, f64>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_json_tolerates_fences() {
        let m = extract_json("```json\n{\"intent\": \"question\"}\n```").unwrap();
        assert_eq!(m["intent"], "question");
        assert!(extract_json("no json here").is_none());
    }
}
