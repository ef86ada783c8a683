//! The agent file model (`agents/<name>.toml`): an agent's kind, prompt,
//! model profile, limits and kind-specific settings.

use serde::{Deserialize, Serialize};

/// What an agent does in a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    Router,
    Retriever,
    Summarizer,
    Critic,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Router => "router",
            AgentKind::Retriever => "retriever",
            AgentKind::Summarizer => "summarizer",
            AgentKind::Critic => "critic",
        }
    }
}

/// One agent file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub kind: AgentKind,
    /// What the agent is for, shown by `DescribeMesh`.
    #[serde(default)]
    pub description: String,
    /// Prompt file, relative to `prompts_dir`. Required for kinds that call
    /// a model (router, summarizer, critic); the retriever calls none.
    pub prompt: Option<String>,
    /// Model profile name from `[models.<profile>]`; required with `prompt`.
    pub model: Option<String>,
    /// Actor instances serving this agent, round robin.
    #[serde(default = "one")]
    pub replicas: usize,
    /// Upper bound on one step of this agent.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    pub router: Option<RouterSettings>,
    pub retriever: Option<RetrieverSettings>,
    pub summarizer: Option<SummarizerSettings>,
    pub critic: Option<CriticSettings>,
}

fn one() -> usize {
    1
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// `[router]`: the intents to choose from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    /// Chosen when no intent is similar enough to the query.
    pub default_intent: String,
    /// Below this similarity the router falls back to `default_intent`.
    #[serde(default = "default_min_similarity")]
    pub min_similarity: f64,
    pub intents: Vec<IntentSpec>,
}

fn default_min_similarity() -> f64 {
    0.1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentSpec {
    pub name: String,
    pub description: String,
    /// This intent is chosen only at this similarity or above (the
    /// router's `min_similarity` when absent). Set it high for intents that
    /// must not catch questions by accident (greetings, refusals).
    pub min_similarity: Option<f64>,
    #[serde(default)]
    pub examples: Vec<String>,
}

/// `[retriever]`: how many passages and how close they must be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrieverSettings {
    pub top_k: usize,
    pub score_threshold: f32,
}

impl Default for RetrieverSettings {
    fn default() -> Self {
        Self { top_k: 4, score_threshold: 0.0 }
    }
}

/// `[summarizer]`: the shape of a draft.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SummarizerSettings {
    pub max_sentences: usize,
}

impl Default for SummarizerSettings {
    fn default() -> Self {
        Self { max_sentences: 3 }
    }
}

/// `[critic]`: when a draft is good enough.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriticSettings {
    /// Minimum groundedness (support of answer sentences by passages).
    pub accept_threshold: f64,
    /// Minimum share of the query's content words the answer covers.
    pub min_coverage: f64,
}

impl Default for CriticSettings {
    fn default() -> Self {
        Self { accept_threshold: 0.6, min_coverage: 0.5 }
    }
}

/// Kind-specific settings after validation: exactly the table of the
/// agent's kind, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub enum KindSettings {
    Router(RouterSettings),
    Retriever(RetrieverSettings),
    Summarizer(SummarizerSettings),
    Critic(CriticSettings),
}
