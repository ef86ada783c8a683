//! The tools an `llm` agent's model may call, bound once at start-up (a
//! [`Toolbox`] per profile) and run when the model asks: the retriever as
//! a function (`retrieve`), another agent of the mesh (`agent:<name>`, the
//! actor message, not HTTP) and the tools of MCP servers (`mcp:<server>`,
//! through [`crate::tools::mcp::McpHub`]).
//!
//! A call's arguments and result are data: the result goes back to the
//! model as a `tool` message (never through a template, so it cannot open
//! messages of its own) and cannot change the flow. A call that fails,
//! hangs past its timeout or comes with arguments that are not a JSON
//! object is a result the model sees (`error: …`), not a failed request.
//! Every call is a step of its own (kind `tool`), a span
//! (`execute_tool <name>`, GenAI conventions) and, for a streaming caller,
//! a pair of events.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest as _;
use tracing::Instrument as _;

use super::agents::step::StepContext;
use super::messages::{MeshEvent, RunStep, StepInput};
use super::run::AgentPools;
use super::{MeshError, Resources, StepRecord};
use crate::config::{AgentKind, AgentProfile, AgentSpec, KindSettings, ToolRef, profile_tools};
use crate::llm::{ChatMessage, Passage, ToolCall, ToolSpec};
use crate::retrieval::{SharedEmbedder, SharedStore};
use crate::tools::mcp::McpHub;

/// The agents of the mesh, by name, once they have all started: an agent
/// called as a tool is reached through them. Set once by the mesh's start.
pub type Peers = Arc<OnceLock<Arc<AgentPools>>>;

/// The `kind` of a tool call's step record.
pub const TOOL_KIND: &str = "tool";

/// Longest tool result handed back to the model, in characters; the rest
/// is cut (and the cut said).
const MAX_RESULT_CHARS: usize = 16_000;

/// Passages a `retrieve` call returns when the model asks for no number.
const RETRIEVE_TOP_K: usize = 4;

/// One tool as bound for a profile.
struct Tool {
    /// What the model sees (its `name` is what it calls).
    spec: ToolSpec,
    /// The tool as configured (`mcp:everything/echo`): the step's name.
    label: String,
    binding: Binding,
}

/// What runs when the model calls a tool.
enum Binding {
    Retrieve,
    Agent { name: String, kind: AgentKind },
    Mcp { server: String, tool: String },
}

/// A profile's tools, bound: what the model is offered and how each call
/// runs.
pub struct Toolbox {
    tools: Vec<Tool>,
    /// Longest one call may take.
    timeout: Duration,
    /// Most model calls that may ask for tools in one step.
    max_rounds: u32,
    embedder: SharedEmbedder,
    store: SharedStore,
    mcp: Arc<McpHub>,
    peers: Peers,
}

/// What a tool call runs for: the request the calling step belongs to,
/// which an agent called as a tool serves too.
pub struct CallerContext<'a> {
    pub query: &'a str,
    pub intent: &'a str,
    pub passages: &'a Arc<[Passage]>,
    pub variant: Option<&'a str>,
}

impl Toolbox {
    /// The tools of `profile` (an `llm` profile's `tools` and its prompt's
    /// bindable tools), bound against the mesh's agents and MCP servers;
    /// `None` when it has none. Fails (at start-up) when an MCP tool it
    /// names is not offered by the running server.
    pub fn build(
        agent: &AgentSpec,
        profile: &AgentProfile,
        resources: &Resources,
    ) -> Result<Option<Toolbox>, MeshError> {
        let KindSettings::Llm(settings) = &profile.settings else { return Ok(None) };
        let is_agent = |name: &str| resources.agents.contains_key(name);
        let (refs, _unbound) =
            profile_tools(settings, profile.prompt.as_deref(), &is_agent, &resources.mcp_settings);
        if refs.is_empty() {
            return Ok(None);
        }
        let startup = |e: String| MeshError::Startup(format!("agent `{}`: {e}", agent.name));
        let mut tools: Vec<Tool> = Vec::new();
        for r in refs {
            match &r {
                ToolRef::Retrieve => {
                    tools.push(Tool { spec: retrieve_spec(), label: r.label(), binding: Binding::Retrieve })
                }
                ToolRef::Agent(name) => {
                    let Some((kind, description)) = resources.agents.get(name) else {
                        return Err(startup(format!("tool `{}`: there is no agent `{name}`", r.label())));
                    };
                    tools.push(Tool {
                        spec: agent_spec(name, *kind, description),
                        label: r.label(),
                        binding: Binding::Agent { name: name.clone(), kind: *kind },
                    });
                }
                ToolRef::Mcp { server, tool } => {
                    let Some(offered) = resources.mcp.tools(server) else {
                        // Validation lets only an agent no flow runs name
                        // a server this configuration lacks.
                        tracing::warn!(
                            agent = %agent.name,
                            tool = %r.label(),
                            "no such MCP server is configured; the agent runs without its tools"
                        );
                        continue;
                    };
                    let chosen: Vec<_> = match tool {
                        None => offered,
                        Some(t) => match offered.into_iter().find(|o| &o.name == t) {
                            Some(o) => vec![o],
                            None => {
                                return Err(startup(format!(
                                    "tool `{}`: MCP server `{server}` offers no tool `{t}`",
                                    r.label()
                                )));
                            }
                        },
                    };
                    for o in chosen {
                        tools.push(Tool {
                            spec: ToolSpec {
                                name: o.name.clone(),
                                description: o.description.clone(),
                                parameters: object_schema(o.input_schema.clone()),
                            },
                            label: format!("mcp:{server}/{}", o.name),
                            binding: Binding::Mcp { server: server.clone(), tool: o.name.clone() },
                        });
                    }
                }
            }
        }
        name_uniquely(&mut tools);
        Ok(Some(Toolbox {
            tools,
            timeout: Duration::from_millis(settings.tool_timeout_ms.max(1)),
            max_rounds: settings.max_tool_rounds,
            embedder: resources.embedder.clone(),
            store: resources.store.clone(),
            mcp: resources.mcp.clone(),
            peers: resources.peers.clone(),
        }))
    }

    /// What the model is offered.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec.clone()).collect()
    }

    /// Most model calls that may ask for tools in one step.
    pub fn max_rounds(&self) -> u32 {
        self.max_rounds
    }

    /// Runs `calls` at once and returns their `tool` messages in the
    /// order of the calls; each call's record (and, for an agent called as
    /// a tool, that agent's own step) goes to `records`.
    pub async fn run_all(
        &self,
        ctx: &StepContext<'_>,
        caller: &CallerContext<'_>,
        calls: &[ToolCall],
        records: &mut Vec<StepRecord>,
    ) -> Vec<ChatMessage> {
        let runs = calls.iter().map(|call| self.run_one(ctx, caller, call));
        let done = futures::future::join_all(runs).await;
        let mut messages = Vec::with_capacity(done.len());
        for (call, (result, mut recs)) in calls.iter().zip(done) {
            records.append(&mut recs);
            messages.push(ChatMessage::tool_result(&call.id, result));
        }
        messages
    }

    /// One call: its result text (or `error: …`) and its records.
    async fn run_one(
        &self,
        ctx: &StepContext<'_>,
        caller: &CallerContext<'_>,
        call: &ToolCall,
    ) -> (String, Vec<StepRecord>) {
        let started = Instant::now();
        let tool = self.tools.iter().find(|t| t.spec.name == call.name);
        let label = tool.map(|t| t.label.clone()).unwrap_or_else(|| call.name.clone());
        if let Some(sink) = ctx.events() {
            let _ = sink.send(MeshEvent::StepStarted {
                agent: label.clone(),
                kind: TOOL_KIND.into(),
                attempt: 1,
            });
        }
        let tool_type = match tool.map(|t| &t.binding) {
            Some(Binding::Retrieve) => "datastore",
            Some(Binding::Mcp { .. }) => "extension",
            Some(Binding::Agent { .. }) | None => "function",
        };
        let span = tracing::info_span!(
            "execute_tool",
            otel.name = %format_args!("execute_tool {}", call.name),
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %call.name,
            gen_ai.tool.call.id = %call.id,
            gen_ai.tool.type = tool_type,
            meshops.agent = %ctx.agent(),
            meshops.tool = %label,
            error.type = tracing::field::Empty,
        );
        let mut inner = Vec::new();
        let outcome = async {
            let Some(tool) = tool else {
                let known: Vec<&str> = self.tools.iter().map(|t| t.spec.name.as_str()).collect();
                return Err(format!("there is no tool `{}`; the tools are: {}", call.name, known.join(", ")));
            };
            let args = parse_arguments(&call.arguments)?;
            match tokio::time::timeout(self.timeout, self.invoke(tool, args, ctx, caller, &mut inner)).await {
                Ok(result) => result,
                Err(_) => Err(format!("the tool did not answer within {} ms", self.timeout.as_millis())),
            }
        }
        .instrument(span.clone())
        .await;
        let (text, summary) = match outcome {
            Ok(text) => {
                let summary = format!("ok: {} chars", text.chars().count());
                (cut(text), summary)
            }
            Err(message) => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", "tool_error");
                let text = format!("error: {message}");
                (cut(text.clone()), text)
            }
        };
        let record = StepRecord {
            agent: label,
            kind: TOOL_KIND.into(),
            model: String::new(),
            attempt: 1,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            input_tokens: 0,
            output_tokens: 0,
            tokens_estimated: false,
            cost_usd: Some(0.0),
            summary: format!(
                "{} called {}(args sha256:{}): {summary}",
                ctx.agent(),
                call.name,
                digest(&call.arguments)
            ),
            model_attempts: 0,
            failed_model_attempts: Vec::new(),
        };
        if let Some(sink) = ctx.events() {
            let _ = sink.send(MeshEvent::StepFinished(record.clone()));
        }
        inner.push(record);
        (text, inner)
    }

    /// Runs `tool` with `args`: its result text, or what went wrong.
    async fn invoke(
        &self,
        tool: &Tool,
        args: serde_json::Map<String, Value>,
        ctx: &StepContext<'_>,
        caller: &CallerContext<'_>,
        records: &mut Vec<StepRecord>,
    ) -> Result<String, String> {
        match &tool.binding {
            Binding::Mcp { server, tool } => {
                self.mcp.call(server, tool, args, Some(self.timeout)).await.map_err(|e| e.to_string())
            }
            Binding::Retrieve => self.retrieve(&args).await,
            Binding::Agent { name, kind } => {
                let Some(pool) = self.peers.get().and_then(|p| p.get(name)) else {
                    return Err(format!("agent `{name}` is not running"));
                };
                let Some(addr) = pool.pick(usize::MAX) else {
                    return Err(format!("agent `{name}` has no replicas"));
                };
                let input = agent_input(*kind, &args, caller)?;
                let msg = RunStep {
                    variant: caller.variant.map(str::to_string),
                    input,
                    attempt: 1,
                    events: ctx.events().clone(),
                    cancel: ctx.cancel().clone(),
                    parent: tracing::Span::current(),
                    intent: caller.intent.to_string(),
                    history: None,
                };
                match addr.send(msg).await {
                    Ok(Ok((output, record))) => {
                        records.push(record);
                        Ok(match output.as_json() {
                            Value::String(s) => s,
                            other => other.to_string(),
                        })
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("agent `{name}` is unavailable: {e}")),
                }
            }
        }
    }

    /// `retrieve`: the closest passages to `query`, numbered, optionally
    /// only from `doc_ids`.
    async fn retrieve(&self, args: &serde_json::Map<String, Value>) -> Result<String, String> {
        let Some(query) = args.get("query").and_then(Value::as_str).filter(|q| !q.trim().is_empty()) else {
            return Err("`query` (a non-empty string) is required".into());
        };
        let top_k = args.get("top_k").and_then(Value::as_u64).map(|k| k.clamp(1, 20) as usize);
        let top_k = top_k.unwrap_or(RETRIEVE_TOP_K);
        let only: Vec<&str> = args
            .get("doc_ids")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let vectors = self.embedder.embed(&[query.to_string()]).await.map_err(|e| e.to_string())?;
        let Some(vector) = vectors.into_iter().next() else {
            return Err("the embedder returned no vector".into());
        };
        // A filter is applied to a wider search, so it still fills top_k.
        let wanted = if only.is_empty() { top_k } else { top_k * 8 };
        let hits = self.store.search(vector, wanted, None).await.map_err(|e| e.to_string())?;
        let lines: Vec<String> = hits
            .into_iter()
            .filter(|h| only.is_empty() || only.contains(&h.doc_id.as_str()))
            .take(top_k)
            .enumerate()
            .map(|(i, h)| format!("[{}] ({}) {}", i + 1, h.doc_id, h.text))
            .collect();
        if lines.is_empty() {
            return Ok("no passages found".into());
        }
        Ok(lines.join("\n"))
    }
}

/// The `retrieve` function as the model sees it.
fn retrieve_spec() -> ToolSpec {
    ToolSpec {
        name: "retrieve".into(),
        description: "Searches the knowledge base and returns the closest passages, numbered.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to search for."},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 20, "description": "How many passages (default 4)."},
                "doc_ids": {"type": "array", "items": {"type": "string"}, "description": "Only passages of these documents."}
            },
            "required": ["query"]
        }),
    }
}

/// An agent called as a function: a question (and, for a critic, the
/// answer it judges).
fn agent_spec(name: &str, kind: AgentKind, description: &str) -> ToolSpec {
    let mut properties = serde_json::Map::new();
    properties.insert(
        "query".into(),
        json!({"type": "string", "description": "The question or task for the agent."}),
    );
    let mut required = vec![json!("query")];
    if kind == AgentKind::Critic {
        properties.insert("answer".into(), json!({"type": "string", "description": "The answer to judge."}));
        required.push(json!("answer"));
    }
    ToolSpec {
        name: name.to_string(),
        description: if description.is_empty() {
            format!("The `{name}` agent ({}).", kind.as_str())
        } else {
            description.to_string()
        },
        parameters: json!({"type": "object", "properties": properties, "required": required}),
    }
}

/// The step an agent called as a tool runs, by its kind.
fn agent_input(
    kind: AgentKind,
    args: &serde_json::Map<String, Value>,
    caller: &CallerContext<'_>,
) -> Result<StepInput, String> {
    let query = args.get("query").and_then(Value::as_str).unwrap_or(caller.query).to_string();
    Ok(match kind {
        AgentKind::Router => StepInput::Route { query },
        AgentKind::Retriever => StepInput::Retrieve { query },
        AgentKind::Summarizer => StepInput::Summarize {
            query,
            intent: caller.intent.to_string(),
            passages: caller.passages.clone(),
            feedback: None,
            previous: None,
        },
        AgentKind::Critic => {
            let Some(answer) = args.get("answer").and_then(Value::as_str) else {
                return Err("`answer` (a string) is required".into());
            };
            StepInput::Critique { query, answer: answer.to_string(), passages: caller.passages.clone() }
        }
        AgentKind::Llm => StepInput::Generate {
            query,
            intent: caller.intent.to_string(),
            passages: caller.passages.clone(),
            outputs: Arc::from([]),
            feedback: None,
            previous: None,
            judged: None,
        },
    })
}

/// A tool's input schema as a JSON Schema object (what function calling
/// requires), whatever the server declared.
fn object_schema(schema: Value) -> Value {
    match schema {
        Value::Object(mut m) => {
            m.entry("type").or_insert_with(|| json!("object"));
            m.entry("properties").or_insert_with(|| json!({}));
            Value::Object(m)
        }
        _ => json!({"type": "object", "properties": {}}),
    }
}

/// Gives tools whose names clash (two servers' `search`) their qualified
/// names, `<server>__<tool>` or `agent_<name>`, cut to the 64 characters a
/// provider accepts; other characters a provider refuses become `_`.
fn name_uniquely(tools: &mut [Tool]) {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
            .take(64)
            .collect()
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in tools.iter_mut() {
        t.spec.name = clean(&t.spec.name);
        *counts.entry(t.spec.name.clone()).or_default() += 1;
    }
    for t in tools.iter_mut() {
        if counts.get(&t.spec.name).copied().unwrap_or(0) > 1 {
            t.spec.name = clean(&match &t.binding {
                Binding::Mcp { server, tool } => format!("{server}__{tool}"),
                Binding::Agent { name, .. } => format!("agent_{name}"),
                Binding::Retrieve => "retrieve".to_string(),
            });
        }
    }
}

/// The arguments of a call: a JSON object (an empty text is no
/// arguments).
fn parse_arguments(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("the arguments must be a JSON object, not {}", kind_of(&other))),
        Err(e) => Err(format!("the arguments are not valid JSON ({e})")),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The first 12 hex digits of the arguments' SHA-256: a call's arguments
/// identified without recording them.
fn digest(arguments: &str) -> String {
    let d = sha2::Sha256::digest(arguments.as_bytes());
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// A result cut to [`MAX_RESULT_CHARS`].
fn cut(text: String) -> String {
    match text.char_indices().nth(MAX_RESULT_CHARS) {
        Some((at, _)) => format!("{}… (cut at {MAX_RESULT_CHARS} characters)", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_must_be_a_json_object() {
        assert!(parse_arguments("").unwrap().is_empty());
        assert_eq!(parse_arguments(r#"{"a": 1}"#).unwrap()["a"], json!(1));
        assert_eq!(parse_arguments("[1]").unwrap_err(), "the arguments must be a JSON object, not a list");
        assert!(parse_arguments("{\"a\": ").unwrap_err().starts_with("the arguments are not valid JSON"));
    }

    #[test]
    fn results_are_cut_and_digests_are_short() {
        let long = "x".repeat(MAX_RESULT_CHARS + 10);
        assert!(cut(long).ends_with("(cut at 16000 characters)"));
        assert_eq!(cut("short".into()), "short");
        assert_eq!(digest("{}").len(), 12);
        assert_ne!(digest("{\"a\":1}"), digest("{\"a\":2}"));
    }

    #[test]
    fn server_schemas_become_object_schemas() {
        assert_eq!(object_schema(json!(null)), json!({"type": "object", "properties": {}}));
        let s = object_schema(json!({"properties": {"a": {"type": "number"}}}));
        assert_eq!(s["type"], "object");
    }
}
