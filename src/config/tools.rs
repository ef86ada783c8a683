//! Settings of what agents call besides models (`[mcp.<server>]`: the MCP
//! servers the mesh starts) and of what the mesh remembers
//! (`[sessions]`: conversations), with their checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use super::agents::{AgentKind, AgentSpec, KindSettings, LlmSettings, ToolRef};
use super::error::{ConfigError, locate_at};
use super::prompt_file::PromptFile;
use super::shared::StateBackend;

/// One MCP server (`[mcp.<server>]`): a program the mesh runs and talks to
/// over stdio (`command`, `args`, `env`), or a streamable HTTP endpoint
/// (`url`, with headers read from the environment). Exactly one of
/// `command` and `url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpServerSettings {
    /// The program to run (found on `PATH` unless it is a path).
    pub command: Option<String>,
    pub args: Vec<String>,
    /// Variables set for the program, beside the gateway's own.
    pub env: BTreeMap<String, String>,
    /// The program's working directory; unset: the gateway's.
    pub cwd: Option<PathBuf>,
    /// A streamable HTTP endpoint (`https://host/mcp`).
    pub url: Option<String>,
    /// Headers sent to `url`, by header name, each read from the
    /// environment variable named (`{ Authorization = "MCP_TOKEN" }`): a
    /// secret never sits in a file.
    pub headers_env: BTreeMap<String, String>,
    /// Longest one tool call may take; a call cut here is a tool error the
    /// model sees.
    pub timeout_ms: u64,
    /// Longest the start may take (spawn, initialize, list the tools).
    pub start_timeout_ms: u64,
}

impl Default for McpServerSettings {
    fn default() -> Self {
        Self {
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            url: None,
            headers_env: BTreeMap::new(),
            timeout_ms: 30_000,
            start_timeout_ms: 30_000,
        }
    }
}

/// Conversations (`[sessions]`): a request with a `session_id` is a turn,
/// and its agents see the earlier turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// Keep conversations at all (`false`: `session_id` only labels logs).
    pub enabled: bool,
    /// `sqlite` (the file below, one process) or `postgres` (shared by
    /// every replica; `url` or `url_env`).
    pub backend: StateBackend,
    /// The PostgreSQL URL, for `backend = "postgres"`.
    pub url: Option<String>,
    /// The environment variable holding that URL (for a Secret).
    pub url_env: Option<String>,
    /// The SQLite file; unset: `sessions.sqlite3` under
    /// `retrieval.data_dir`.
    pub db_path: Option<PathBuf>,
    /// A session idle this long is forgotten: seconds, or a duration such
    /// as `"30m"`, `"24h"`, `"7d"`.
    #[serde(deserialize_with = "seconds")]
    pub session_ttl: u64,
    /// Most earlier turns an agent is given (oldest dropped first).
    pub max_history_turns: usize,
    /// Most tokens (estimated, 4 characters each) of earlier turns an agent
    /// is given; older turns beyond it are dropped first.
    pub history_token_budget: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: StateBackend::Sqlite,
            url: None,
            url_env: None,
            db_path: None,
            session_ttl: 24 * 3600,
            max_history_turns: 8,
            history_token_budget: 2000,
        }
    }
}

impl SessionSettings {
    /// The SQLite file conversations are kept in.
    pub fn path(&self, data_dir: &Path) -> PathBuf {
        self.db_path.clone().unwrap_or_else(|| data_dir.join("sessions.sqlite3"))
    }
}

/// A duration in seconds: a number, or a number with `s`, `m`, `h` or `d`.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(t) => parse_duration_s(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{t}` is not a duration; expected seconds or a number with s, m, h or d (\"30m\")"
            ))
        }),
    }
}

/// `"90"`, `"90s"`, `"30m"`, `"24h"`, `"7d"` in seconds.
pub fn parse_duration_s(text: &str) -> Option<u64> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 's'),
    };
    let n: u64 = number.trim().parse().ok()?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// `[mcp.*]` and `[sessions]`: servers that can start, limits in range.
pub(super) fn validate_tools(
    mcp: &BTreeMap<String, McpServerSettings>,
    sessions: &SessionSettings,
    layers: &[PathBuf],
    errors: &mut Vec<ConfigError>,
) {
    for (name, server) in mcp {
        let at = locate_at(&["mcp", name], layers);
        let field = |f: &str| format!("mcp.{name}.{f}");
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            errors.push(ConfigError::field(
                at.clone(),
                format!("mcp.{name}"),
                "a server name is ASCII letters, digits, `_` and `-` (tools name it as `mcp:<server>`)",
            ));
        }
        match (&server.command, &server.url) {
            (Some(_), Some(_)) => errors.push(ConfigError::field(
                at.clone(),
                format!("mcp.{name}"),
                "set `command` (a stdio server) or `url` (streamable HTTP), not both",
            )),
            (None, None) => errors.push(ConfigError::field(
                at.clone(),
                format!("mcp.{name}"),
                "set `command` (a stdio server the mesh runs) or `url` (a streamable HTTP endpoint)",
            )),
            (Some(c), None) if c.trim().is_empty() => {
                errors.push(ConfigError::field(at.clone(), field("command"), "is empty"))
            }
            (None, Some(u)) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                errors.push(ConfigError::field(
                    at.clone(),
                    field("url"),
                    format!("`{u}` is not an http:// or https:// URL"),
                ))
            }
            _ => {}
        }
        if server.url.is_none() && !server.headers_env.is_empty() {
            errors.push(ConfigError::field(
                at.clone(),
                field("headers_env"),
                "only applies to a `url` server",
            ));
        }
        for (header, var) in &server.headers_env {
            if std::env::var_os(var).is_none() {
                errors.push(ConfigError::field(
                    at.clone(),
                    field("headers_env"),
                    format!("header `{header}` reads environment variable `{var}`, which is not set"),
                ));
            }
        }
        for (f, v) in [("timeout_ms", server.timeout_ms), ("start_timeout_ms", server.start_timeout_ms)] {
            if v == 0 {
                errors.push(ConfigError::field(at.clone(), field(f), "must be at least 1"));
            }
        }
    }
    let at = locate_at(&["sessions"], layers);
    if sessions.session_ttl == 0 {
        errors.push(ConfigError::field(at.clone(), "sessions.session_ttl", "must be at least 1 second"));
    }
    if sessions.history_token_budget == 0 && sessions.max_history_turns > 0 {
        errors.push(ConfigError::field(
            at,
            "sessions.history_token_budget",
            "must be at least 1 (set max_history_turns = 0 to give agents no history)",
        ));
    }
}

/// Most tool rounds an agent may allow in one step.
const MAX_TOOL_ROUNDS: u32 = 16;

/// The tools an `llm` profile offers its model: its `[llm] tools`, then
/// the tools of its prompt file that meshops can bind (a `function` named
/// `retrieve` or after an agent, an `mcp` tool whose `serverName` is a
/// declared `[mcp.<server>]`), without repeats; and, apart, the prompt's
/// tools it cannot bind, described for `meshops validate` (they are not
/// offered to the model). Entries of `tools` that do not parse are
/// skipped here: [`validate_agent_tools`] reports them.
pub fn profile_tools(
    settings: &LlmSettings,
    prompt: Option<&PromptFile>,
    is_agent: &dyn Fn(&str) -> bool,
    mcp: &BTreeMap<String, McpServerSettings>,
) -> (Vec<ToolRef>, Vec<String>) {
    let mut tools: Vec<ToolRef> = settings.tools.iter().filter_map(|t| ToolRef::parse(t).ok()).collect();
    let mut unbound = Vec::new();
    for tool in prompt.map(|p| p.tools.as_slice()).unwrap_or_default() {
        let bound: Vec<ToolRef> = match tool.kind.as_str() {
            "function" if tool.name == "retrieve" => vec![ToolRef::Retrieve],
            "function" if is_agent(&tool.name) => vec![ToolRef::Agent(tool.name.clone())],
            "function" => match ToolRef::parse(&tool.name) {
                Ok(r) if !matches!(r, ToolRef::Retrieve) => vec![r],
                _ => {
                    unbound
                        .push(format!("tool `{}` (function: no agent or built-in of that name)", tool.name));
                    continue;
                }
            },
            "mcp" => {
                let server = tool
                    .extra
                    .get("serverName")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(&tool.name)
                    .to_string();
                if !mcp.contains_key(&server) {
                    unbound
                        .push(format!("tool `{}` (mcp: no [mcp.{server}] server is configured)", tool.name));
                    continue;
                }
                match tool.extra.get("allowedTools").and_then(serde_json::Value::as_array) {
                    Some(allowed) => allowed
                        .iter()
                        .filter_map(serde_json::Value::as_str)
                        .map(|t| ToolRef::Mcp { server: server.clone(), tool: Some(t.to_string()) })
                        .collect(),
                    None => vec![ToolRef::Mcp { server, tool: None }],
                }
            }
            other => {
                unbound.push(format!("tool `{}` of kind `{other}`", tool.name));
                continue;
            }
        };
        for r in bound {
            if !tools.contains(&r) {
                tools.push(r);
            }
        }
    }
    (tools, unbound)
}

/// Each `llm` agent's `tools`: entries that parse, agents that exist (not
/// itself), MCP servers that are declared; rounds and timeouts in range.
/// An agent that no flow runs (directly, or as another running agent's
/// tool) may name a server this configuration does not declare — an
/// example's agent file beside a `--config` that declares it — and is
/// started without that server's tools; every agent that runs must have
/// them.
pub(super) fn validate_agent_tools(
    settings: &super::Settings,
    agents: &BTreeMap<String, AgentSpec>,
    errors: &mut Vec<ConfigError>,
) {
    let mcp = &settings.mcp;
    let running = running_agents(settings, agents);
    for agent in agents.values().filter(|a| a.kind == AgentKind::Llm) {
        let file = agent.file.display().to_string();
        for profile in std::iter::once(&agent.base).chain(agent.variants.values()) {
            let KindSettings::Llm(settings) = &profile.settings else { continue };
            for entry in &settings.tools {
                let problem = match ToolRef::parse(entry) {
                    Err(e) => Some(e),
                    Ok(ToolRef::Agent(a)) if a == agent.name => {
                        Some(format!("`{entry}`: an agent cannot call itself as a tool"))
                    }
                    Ok(ToolRef::Agent(a)) if !agents.contains_key(&a) => Some(format!(
                        "`{entry}`: there is no agent `{a}` (agents: {})",
                        agents.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                    Ok(ToolRef::Mcp { server, .. })
                        if !mcp.contains_key(&server) && running.contains(agent.name.as_str()) =>
                    {
                        Some(format!(
                            "`{entry}`: no MCP server `{server}` is configured; declare [mcp.{server}] with a \
                         `command` or a `url`"
                        ))
                    }
                    Ok(_) => None,
                };
                if let Some(p) = problem {
                    errors.push(ConfigError::field(&file, "llm.tools", p));
                }
            }
            if !(1..=MAX_TOOL_ROUNDS).contains(&settings.max_tool_rounds) {
                errors.push(ConfigError::field(
                    &file,
                    "llm.max_tool_rounds",
                    format!("must be between 1 and {MAX_TOOL_ROUNDS}"),
                ));
            }
            if settings.tool_timeout_ms == 0 {
                errors.push(ConfigError::field(&file, "llm.tool_timeout_ms", "must be at least 1"));
            }
        }
    }
}

/// The agents some flow runs (the base mesh's or a variant's), and the
/// agents those call as tools, transitively.
fn running_agents<'a>(
    settings: &'a super::Settings,
    agents: &'a BTreeMap<String, AgentSpec>,
) -> std::collections::BTreeSet<&'a str> {
    let flows = settings.flows.values().chain(settings.variants.values().flat_map(|v| v.flows.values()));
    let mut running: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for flow in flows {
        for step in flow.agents() {
            running.insert(step.agent.as_str());
        }
    }
    running.insert(settings.mesh.router.as_str());
    let mut todo: Vec<&str> = running.iter().copied().collect();
    while let Some(name) = todo.pop() {
        let Some(agent) = agents.get(name) else { continue };
        for profile in std::iter::once(&agent.base).chain(agent.variants.values()) {
            let KindSettings::Llm(s) = &profile.settings else { continue };
            for entry in &s.tools {
                if let Ok(ToolRef::Agent(callee)) = ToolRef::parse(entry)
                    && let Some((key, _)) = agents.get_key_value(&callee)
                    && running.insert(key.as_str())
                {
                    todo.push(key.as_str());
                }
            }
        }
    }
    running
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_seconds() {
        assert_eq!(parse_duration_s("90"), Some(90));
        assert_eq!(parse_duration_s("30m"), Some(1800));
        assert_eq!(parse_duration_s(" 24h "), Some(86_400));
        assert_eq!(parse_duration_s("7d"), Some(604_800));
        assert_eq!(parse_duration_s("3w"), None);
        assert_eq!(parse_duration_s("soon"), None);
    }
}
