//! The MCP servers the mesh calls tools on (Model Context Protocol, client
//! side, through `rmcp`, the official Rust SDK), one `[mcp.<server>]` table
//! each: a child process spoken to over stdio (`command`) or a streamable
//! HTTP endpoint (`url`).
//!
//! [`McpHub::start`] starts them all at once, initializes each and reads its
//! tool list. [`McpHub::call`] calls one tool and returns its result as text;
//! a server whose connection closed (its process died) is restarted once and
//! the call retried once. [`McpHub::watch`] checks the servers in the
//! background and restarts dead ones; [`McpHub::shutdown`] stops them all.
//!
//! A child's stderr goes to `tracing` (debug), never to our stdout; lines on
//! its stdout that are not JSON-RPC are skipped by rmcp's codec.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::join_all;
use rmcp::model::Tool;
use tokio_util::sync::CancellationToken;

use crate::config::McpServerSettings;

/// How long stopping one server (closing its connection, its process
/// exiting or being killed) may take before we stop waiting for it.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed write, how often and how many times [`Server::lost`] looks
/// whether the connection has ended: a write to a process that has just died
/// fails a moment before rmcp sees the end of its output.
pub(super) const LOST_POLL: Duration = Duration::from_millis(50);
pub(super) const LOST_POLLS: u32 = 20;
/// The watcher's ping waits at most the server's `timeout_ms`, within these bounds.
pub(super) const PING_MIN_MS: u64 = 100;
pub(super) const PING_MAX_MS: u64 = 5_000;
/// Headers the streamable HTTP transport sets itself; rmcp refuses them as
/// custom headers.
pub(super) const RESERVED_HEADERS: [&str; 3] = ["accept", "mcp-session-id", "last-event-id"];
/// Redirects the HTTP client follows (same origin, 307 and 308 only).
pub(super) const MAX_REDIRECTS: usize = 10;

/// One tool a server offers, as read at start.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    /// The tool's name, as the server spells it.
    pub name: String,
    /// What the tool does (empty when the server gives no description).
    pub description: String,
    /// The JSON Schema of the tool's arguments (a JSON object).
    pub input_schema: serde_json::Value,
}

impl McpTool {
    fn from_rmcp(tool: &Tool) -> McpTool {
        McpTool {
            name: tool.name.to_string(),
            description: tool.description.as_deref().unwrap_or_default().to_string(),
            input_schema: serde_json::Value::Object((*tool.input_schema).clone()),
        }
    }
}

/// Why an MCP server could not be started or a tool call failed; every
/// message names the server (and the tool).
#[derive(Debug, Clone, thiserror::Error)]
pub enum McpError {
    /// The server could not be spawned or reached, did not initialize, or
    /// did not list its tools within its `start_timeout_ms` (also a failed
    /// restart).
    #[error("MCP server `{server}` could not start: {message}")]
    Start {
        /// The server's name (its `[mcp.<server>]` table).
        server: String,
        /// What went wrong.
        message: String,
    },
    /// The server does not offer that tool (its tool list, read again once, does not name it).
    #[error("MCP server `{server}` has no tool `{tool}`")]
    NoSuchTool {
        /// The server's name.
        server: String,
        /// The tool asked for.
        tool: String,
    },
    /// The call did not answer within its timeout.
    #[error("MCP tool `{server}/{tool}` timed out after {timeout_ms} ms")]
    Timeout {
        /// The server's name.
        server: String,
        /// The tool called.
        tool: String,
        /// The limit that was applied.
        timeout_ms: u64,
    },
    /// The call failed below the tool: unknown server, hub shut down,
    /// connection lost, transport or protocol error (a JSON-RPC error from
    /// the server included).
    #[error("MCP tool `{server}/{tool}` failed: {message}")]
    Call {
        /// The server's name.
        server: String,
        /// The tool called.
        tool: String,
        /// What went wrong.
        message: String,
    },
    /// The tool ran and reported an error (`isError: true`).
    #[error("MCP tool `{server}/{tool}` returned an error: {message}")]
    ToolError {
        /// The server's name.
        server: String,
        /// The tool called.
        tool: String,
        /// The tool's result as text (see [`McpHub::call`]).
        message: String,
    },
}

/// The MCP servers of the mesh, started together, health-checked and restarted, stopped on shutdown.
pub struct McpHub {
    servers: BTreeMap<String, Arc<Server>>,
    /// Cancelled by [`McpHub::shutdown`] and on drop: stops the watcher and
    /// refuses further calls and restarts.
    stop: CancellationToken,
}

impl std::fmt::Debug for McpHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpHub")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .field("shut_down", &self.stop.is_cancelled())
            .finish()
    }
}

impl Drop for McpHub {
    fn drop(&mut self) {
        // The watcher stops; each connection's drop guard cancels it, which
        // closes the transport (a child is shut down, or killed on drop).
        self.stop.cancel();
    }
}

impl McpHub {
    /// Starts every server (concurrently), initializes it and reads its tool
    /// list; fails with the first server that cannot start within its
    /// `start_timeout_ms` (naming it). An empty map gives an empty hub at no
    /// cost.
    ///
    /// "First" is in the order of the map (server names); the servers that
    /// did start are stopped again before the error is returned.
    pub async fn start(servers: &BTreeMap<String, McpServerSettings>) -> Result<Arc<McpHub>, McpError> {
        let stop = CancellationToken::new();
        let servers: BTreeMap<String, Arc<Server>> = servers
            .iter()
            .map(|(name, settings)| (name.clone(), Arc::new(Server::new(name, settings, stop.clone()))))
            .collect();
        let hub = McpHub { servers, stop };
        if hub.servers.is_empty() {
            return Ok(Arc::new(hub));
        }
        let started = join_all(hub.servers.values().map(|server| server.connect_first())).await;
        if let Some(error) = started.into_iter().find_map(Result::err) {
            hub.shutdown().await;
            return Err(error);
        }
        Ok(Arc::new(hub))
    }

    /// A hub with no servers: what the mesh holds when `[mcp.*]` declares
    /// none (it costs nothing).
    pub fn empty() -> Arc<McpHub> {
        Arc::new(McpHub { servers: BTreeMap::new(), stop: CancellationToken::new() })
    }

    /// The servers and their tools, by server name (as read at start, refreshed on restart).
    pub fn servers(&self) -> BTreeMap<String, Vec<McpTool>> {
        self.servers.iter().map(|(name, server)| (name.clone(), server.tools())).collect()
    }

    /// The tools of one server (as [`McpHub::servers`]); `None` when no
    /// server has that name.
    pub fn tools(&self, server: &str) -> Option<Vec<McpTool>> {
        self.servers.get(server).map(|s| s.tools())
    }

    /// Calls one tool with JSON-object arguments, cut at the server's
    /// `timeout_ms` (or `timeout` when `Some` and smaller).
    ///
    /// Returns the tool's result as text: the text content blocks joined by
    /// "\n" (non-text blocks described briefly, like `[image image/png]`;
    /// when there is structured content and no text, its JSON). A result
    /// with `isError: true` is [`McpError::ToolError`] with that text. If the
    /// server's connection is closed (its process died), the hub restarts it
    /// once and retries the call once; a transport or protocol error
    /// (malformed JSON-RPC from the server included) is [`McpError::Call`],
    /// never a panic.
    ///
    /// The timeout applies to each attempt at the call; a restart in between
    /// is bounded by the server's `start_timeout_ms` instead, runs in its own
    /// task (a caller that gives up does not cut it short), and when it fails
    /// the call fails with its [`McpError::Start`]. A tool missing from the
    /// server's list makes the hub read the list again once before it answers
    /// [`McpError::NoSuchTool`]. An unknown server, or a call after
    /// [`McpHub::shutdown`], is [`McpError::Call`].
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<String, McpError> {
        let Some(found) = self.servers.get(server) else {
            return Err(McpError::Call {
                server: server.to_string(),
                tool: tool.to_string(),
                message: "no MCP server of that name is configured".to_string(),
            });
        };
        found.call(tool, arguments, timeout).await
    }

    /// Spawns a background task (`tokio::spawn`) that every `every` checks
    /// each server (its connection closed, or a ping with a short timeout)
    /// and restarts dead ones, logging with `tracing::warn!`. The task stops
    /// when the hub is shut down or dropped.
    ///
    /// A server counts as dead when its connection has ended or a ping fails
    /// on the transport; a ping that only times out is logged, not restarted
    /// (the server may be busy). The first check is one `every` from now;
    /// `every` is at least 10 ms. The task holds the hub only weakly.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let hub = Arc::downgrade(self);
        let stop = self.stop.clone();
        let every = every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let servers: Vec<Arc<Server>> = match hub.upgrade() {
                    Some(hub) => hub.servers.values().cloned().collect(),
                    None => break,
                };
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = join_all(servers.into_iter().map(Server::check)) => {}
                }
            }
            tracing::debug!("the MCP server watcher stopped");
        });
    }

    /// Stops every server (its connection cancelled, a child process shut
    /// down gracefully or killed) and the watcher. Idempotent.
    ///
    /// A child is asked to exit (its stdin closed, then SIGTERM) and killed
    /// when it does not; each server gets at most 10 s.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        join_all(self.servers.values().map(|server| server.shut_down())).await;
    }

    /// How many times `server` has been restarted (for tests and DescribeMesh).
    pub fn restarts(&self, server: &str) -> u64 {
        self.servers.get(server).map_or(0, |s| s.restarts.load(Ordering::Relaxed))
    }

    /// The process id of a stdio server's current child process; `None` for
    /// an HTTP server, an unknown one, or after shutdown.
    pub fn child_pid(&self, server: &str) -> Option<u32> {
        let pid = self.servers.get(server)?.pid.load(Ordering::Relaxed);
        (pid != 0).then_some(pid)
    }
}

mod server;
#[cfg(test)]
mod tests;

use server::*;
