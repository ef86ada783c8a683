//! Language models behind one trait, [`LlmClient`].
//!
//! Agents never see a concrete model: they build an [`LlmRequest`] (rendered
//! chat messages, sampling parameters and a structured [`TaskHint`]) and get an
//! [`LlmResponse`] with text and usage. The offline engine ([`offline`]) is the
//! embedded default; OpenAI-compatible providers plug in behind the same trait.

pub mod offline;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

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
}

/// Sampling parameters, merged from the Prompty file's `model.parameters` and
/// the model profile. `None` leaves the provider's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Vec<String>,
    /// `"json_object"` or `"text"`; passed to providers that support it.
    pub response_format: Option<String>,
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
    Route { query: String, intents: Vec<IntentChoice>, default_intent: String },
    /// Answer `query` from `passages` with `[n]` markers, acting on the
    /// critic's `feedback` when revising.
    Answer {
        query: String,
        intent: String,
        passages: Vec<Passage>,
        feedback: Option<String>,
        previous: Option<String>,
        max_sentences: usize,
    },
    /// Judge `answer` against `passages`; the answer is JSON
    /// `{"accepted": bool, "scores": {..}, "feedback": ".."}`.
    Critique { query: String, answer: String, passages: Vec<Passage> },
    /// Free-form completion with no structure (custom agents, judges).
    Freeform,
}

/// One call to a model.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// The agent making the call, for errors and telemetry.
    pub agent: String,
    pub messages: Vec<ChatMessage>,
    pub params: ModelParams,
    pub hint: TaskHint,
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

/// Builds the client for a model profile.
pub fn build_client(profile_name: &str, profile: &ModelProfile) -> Result<SharedLlm, LlmError> {
    match profile.provider {
        Provider::Offline => Ok(Arc::new(offline::OfflineEngine::new(
            profile.model.clone(),
            profile.latency_ms,
            profile.failure_rate,
        ))),
        other => Err(LlmError::Unavailable {
            model: profile.model.clone(),
            message: format!(
                "profile `{profile_name}`: provider `{}` is not available in this build",
                other.as_str()
            ),
        }),
    }
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
