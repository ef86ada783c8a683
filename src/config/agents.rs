//! The agent file model (`agents/<name>.toml`): an agent's kind, prompt,
//! model profile, limits and kind-specific settings; and the validated
//! agent the mesh runs ([`AgentSpec`], one [`AgentProfile`] per variant).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::prompt_file::PromptFile;

/// What an agent does in a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    Router,
    Retriever,
    Summarizer,
    Critic,
    /// A generic model-calling agent: its prompt and model are all there
    /// is to it, so a researcher adds a role with files only.
    Llm,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Router => "router",
            AgentKind::Retriever => "retriever",
            AgentKind::Summarizer => "summarizer",
            AgentKind::Critic => "critic",
            AgentKind::Llm => "llm",
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
    /// a model (router, summarizer, critic, llm); the retriever calls none.
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
    /// `[llm]`, for a generic model-calling agent: text or JSON output.
    pub llm: Option<LlmSettings>,
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

/// `[llm]`: what a generic model-calling agent returns, and the tools it
/// may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSettings {
    /// `"text"` or `"json"`. Unset: JSON when the agent's prompt declares
    /// `outputs`, else text (see [`crate::config::output_spec`]).
    pub output: Option<LlmOutput>,
    /// Tools the model may call: `retrieve`, `agent:<name>`,
    /// `mcp:<server>` (all of its tools) or `mcp:<server>/<tool>`; the
    /// prompt file's `tools:` add theirs (see [`ToolRef`]).
    pub tools: Vec<String>,
    /// Most model calls that may ask for tools in one step; the call after
    /// the last round is made without tools, so the model answers.
    pub max_tool_rounds: u32,
    /// Longest one tool call may take (an MCP server's own `timeout_ms`
    /// cuts it sooner when smaller); a call cut here is a tool error the
    /// model sees.
    pub tool_timeout_ms: u64,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self { output: None, tools: Vec::new(), max_tool_rounds: 4, tool_timeout_ms: 10_000 }
    }
}

/// A tool an `llm` agent may call, as named in its `tools`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ToolRef {
    /// `retrieve`: the retriever as a function (query, top_k, doc_ids).
    Retrieve,
    /// `agent:<name>`: another agent of the mesh, called as a function
    /// (the actor message, not HTTP).
    Agent(String),
    /// `mcp:<server>` (every tool of the server) or `mcp:<server>/<tool>`.
    Mcp { server: String, tool: Option<String> },
}

impl ToolRef {
    /// Reads one entry of `tools`.
    pub fn parse(text: &str) -> Result<ToolRef, String> {
        let t = text.trim();
        if t == "retrieve" {
            return Ok(ToolRef::Retrieve);
        }
        if let Some(agent) = t.strip_prefix("agent:") {
            return match agent.trim() {
                "" => Err(format!("`{text}` names no agent; expected agent:<name>")),
                name => Ok(ToolRef::Agent(name.to_string())),
            };
        }
        if let Some(rest) = t.strip_prefix("mcp:") {
            let (server, tool) = match rest.split_once('/') {
                Some((s, tool)) => (s.trim(), Some(tool.trim())),
                None => (rest.trim(), None),
            };
            if server.is_empty() || tool.is_some_and(str::is_empty) {
                return Err(format!("`{text}` is incomplete; expected mcp:<server> or mcp:<server>/<tool>"));
            }
            return Ok(ToolRef::Mcp { server: server.to_string(), tool: tool.map(str::to_string) });
        }
        Err(format!(
            "`{text}` is not a tool; expected retrieve, agent:<name>, mcp:<server> or mcp:<server>/<tool>"
        ))
    }

    /// The form written in `tools`.
    pub fn label(&self) -> String {
        match self {
            ToolRef::Retrieve => "retrieve".to_string(),
            ToolRef::Agent(a) => format!("agent:{a}"),
            ToolRef::Mcp { server, tool: None } => format!("mcp:{server}"),
            ToolRef::Mcp { server, tool: Some(t) } => format!("mcp:{server}/{t}"),
        }
    }
}

/// The shape of an `llm` agent's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmOutput {
    /// Free text: an answer candidate, streamed as it is written.
    Text,
    /// A JSON value, checked against the prompt's `outputs` schema when it
    /// declares one.
    Json,
}

impl LlmOutput {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmOutput::Text => "text",
            LlmOutput::Json => "json",
        }
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
    /// As written: what the output is depends on the profile's prompt too,
    /// which [`crate::config::output_spec`] combines.
    Llm(LlmSettings),
}

/// An agent as the mesh runs it for one variant (or the base mesh).
#[derive(Debug, Clone)]
pub struct AgentProfile {
    /// The prompt file, read and checked at load (the `prompt` layer
    /// compiles it when the agent starts); `None` for kinds that call no
    /// model.
    pub prompt: Option<Arc<PromptFile>>,
    /// Prompt file, for descriptions.
    pub prompt_file: Option<PathBuf>,
    /// Model profile name; `None` for kinds that call no model.
    pub model: Option<String>,
    /// The kind's settings, with the variant's overrides applied.
    pub settings: KindSettings,
}

/// One agent, validated.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The agent's name: its file stem, which flows and tools refer to.
    pub name: String,
    /// What it does in a flow.
    pub kind: AgentKind,
    /// What the agent is for, shown by `DescribeMesh`.
    pub description: String,
    /// The file the agent came from, for error messages.
    pub file: PathBuf,
    /// Actor instances serving this agent.
    pub replicas: usize,
    /// Longest one step may take.
    pub timeout_ms: u64,
    /// The profile used when the request names no variant.
    pub base: AgentProfile,
    /// Profiles by variant name, for variants that override this agent.
    pub variants: BTreeMap<String, AgentProfile>,
}

impl AgentSpec {
    /// The profile in force for `variant`.
    pub fn profile(&self, variant: Option<&str>) -> &AgentProfile {
        variant.and_then(|v| self.variants.get(v)).unwrap_or(&self.base)
    }
}
