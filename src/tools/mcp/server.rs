//! One server of the hub: its launch settings, its connection (opened,
//! restarted, closed) and the calls on it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, ContentBlock, PingRequest, ResourceContents,
};
use rmcp::service::{PeerRequestOptions, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{Peer, RoleClient, ServiceError, serve_client};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::ChildStderr;
use tokio_util::sync::CancellationToken;

use crate::config::McpServerSettings;

use super::*;

/// A server's settings, copied from its `[mcp.<server>]` table.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    pub(super) command: Option<String>,
    pub(super) args: Vec<String>,
    pub(super) env: BTreeMap<String, String>,
    pub(super) cwd: Option<PathBuf>,
    pub(super) url: Option<String>,
    pub(super) headers_env: BTreeMap<String, String>,
    pub(super) timeout_ms: u64,
    pub(super) start_timeout_ms: u64,
}

impl Launch {
    pub(super) fn from_settings(settings: &McpServerSettings) -> Launch {
        Launch {
            command: settings.command.clone(),
            args: settings.args.clone(),
            env: settings.env.clone(),
            cwd: settings.cwd.clone(),
            url: settings.url.clone(),
            headers_env: settings.headers_env.clone(),
            timeout_ms: settings.timeout_ms,
            start_timeout_ms: settings.start_timeout_ms,
        }
    }
}

/// One live connection; `generation` tells connections of one server apart
/// (0 for the first, one more for each restart).
pub(super) struct Conn {
    pub(super) service: RunningService<RoleClient, ()>,
    pub(super) generation: u64,
}

/// A connection just opened, with what was read from it.
pub(super) struct Opened {
    pub(super) service: RunningService<RoleClient, ()>,
    pub(super) pid: Option<u32>,
    pub(super) tools: Vec<McpTool>,
}

/// How the watcher found a server.
pub(super) enum Health {
    Alive,
    /// Its connection is gone (closed, or a ping failed on the transport).
    Dead(Option<u64>),
}

/// One server of the hub.
pub(super) struct Server {
    pub(super) name: String,
    pub(super) launch: Launch,
    /// The current connection; read-locked only to clone its peer.
    pub(super) conn: tokio::sync::RwLock<Option<Conn>>,
    /// Held while connecting, restarting or stopping: one at a time.
    pub(super) connect: tokio::sync::Mutex<()>,
    pub(super) tools: std::sync::RwLock<Vec<McpTool>>,
    /// The child's pid; 0 when there is none.
    pub(super) pid: AtomicU32,
    pub(super) restarts: AtomicU64,
    pub(super) generations: AtomicU64,
    /// The hub's token.
    pub(super) stop: CancellationToken,
}

impl Server {
    pub(super) fn new(name: &str, settings: &McpServerSettings, stop: CancellationToken) -> Server {
        Server {
            name: name.to_string(),
            launch: Launch::from_settings(settings),
            conn: tokio::sync::RwLock::new(None),
            connect: tokio::sync::Mutex::new(()),
            tools: std::sync::RwLock::new(Vec::new()),
            pid: AtomicU32::new(0),
            restarts: AtomicU64::new(0),
            generations: AtomicU64::new(0),
            stop,
        }
    }

    pub(super) fn start_error(&self, message: impl Into<String>) -> McpError {
        McpError::Start { server: self.name.clone(), message: message.into() }
    }

    pub(super) fn call_error(&self, tool: &str, message: impl Into<String>) -> McpError {
        McpError::Call { server: self.name.clone(), tool: tool.to_string(), message: message.into() }
    }

    pub(super) fn tools(&self) -> Vec<McpTool> {
        self.tools.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(super) fn has_tool(&self, tool: &str) -> bool {
        self.tools.read().unwrap_or_else(PoisonError::into_inner).iter().any(|t| t.name == tool)
    }

    pub(super) fn set_tools(&self, tools: Vec<McpTool>) {
        *self.tools.write().unwrap_or_else(PoisonError::into_inner) = tools;
    }

    /// The live connection's peer (a clone: no lock is held while it is
    /// used) and generation; `Err` with the generation of the connection
    /// that has ended (`None` when there is none).
    pub(super) async fn peer(&self) -> Result<(Peer<RoleClient>, u64), Option<u64>> {
        let slot = self.conn.read().await;
        match slot.as_ref() {
            Some(conn) if !is_dead(&conn.service) => Ok((conn.service.peer().clone(), conn.generation)),
            Some(conn) => Err(Some(conn.generation)),
            None => Err(None),
        }
    }

    /// Spawns or reaches the server, initializes it and lists its tools,
    /// all within `start_timeout_ms`. Dropped on the way, what was opened is
    /// closed (a child process killed).
    pub(super) async fn open(&self) -> Result<Opened, McpError> {
        let limit_ms = self.launch.start_timeout_ms;
        match tokio::time::timeout(Duration::from_millis(limit_ms), self.open_unbounded()).await {
            Ok(opened) => opened,
            Err(_) => Err(self.start_error(format!(
                "it did not start, initialize and list its tools within {limit_ms} ms (start_timeout_ms)"
            ))),
        }
    }

    pub(super) async fn open_unbounded(&self) -> Result<Opened, McpError> {
        let (service, pid) = match (&self.launch.command, &self.launch.url) {
            (Some(command), _) => self.spawn_stdio(command).await?,
            (None, Some(url)) => (self.connect_http(url).await?, None),
            (None, None) => return Err(self.start_error("its table sets neither `command` nor `url`")),
        };
        match service.peer().list_all_tools().await {
            Ok(tools) => Ok(Opened { service, pid, tools: tools.iter().map(McpTool::from_rmcp).collect() }),
            Err(error) => {
                retire(&self.name, service);
                Err(self.start_error(format!("it did not list its tools: {error}")))
            }
        }
    }

    pub(super) async fn spawn_stdio(
        &self,
        command: &str,
    ) -> Result<(RunningService<RoleClient, ()>, Option<u32>), McpError> {
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(&self.launch.args).envs(&self.launch.env).kill_on_drop(true);
        if let Some(cwd) = &self.launch.cwd {
            cmd.current_dir(cwd);
        }
        let (transport, stderr) = TokioChildProcess::builder(cmd)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.start_error(format!("cannot run `{command}`: {e}")))?;
        let pid = transport.id();
        if let Some(stderr) = stderr {
            forward_stderr(self.name.clone(), stderr);
        }
        let service = serve_client((), transport).await.map_err(|e| {
            self.start_error(format!("`{command}` did not initialize as an MCP server over stdio: {e}"))
        })?;
        Ok((service, pid))
    }

    pub(super) async fn connect_http(&self, url: &str) -> Result<RunningService<RoleClient, ()>, McpError> {
        let headers = self.headers()?;
        let client =
            http_client().map_err(|e| self.start_error(format!("cannot build the HTTP client: {e}")))?;
        let config = StreamableHttpClientTransportConfig::with_uri(url.to_string()).custom_headers(headers);
        let transport = StreamableHttpClientTransport::with_client(client, config);
        // The query string is left out of the message: it may hold a key.
        let shown = url.split('?').next().unwrap_or_default();
        serve_client((), transport)
            .await
            .map_err(|e| self.start_error(format!("`{shown}` did not initialize as an MCP server: {e}")))
    }

    /// The HTTP headers, their values read from the environment now; every
    /// value is marked sensitive (kept out of debug output). `Authorization`
    /// goes as a plain header: rmcp's `auth_header` would add `Bearer `.
    pub(super) fn headers(&self) -> Result<HashMap<HeaderName, HeaderValue>, McpError> {
        let mut headers = HashMap::with_capacity(self.launch.headers_env.len());
        for (name, var) in &self.launch.headers_env {
            let header = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| self.start_error(format!("`{name}` is not a valid HTTP header name")))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(self.start_error(format!(
                    "the header `{name}` is set by the MCP transport itself and cannot be configured"
                )));
            }
            let value = std::env::var(var).map_err(|_| {
                self.start_error(format!(
                    "the environment variable `{var}` (the value of the header `{name}`) is not set \
                     or not valid Unicode"
                ))
            })?;
            let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
                self.start_error(format!(
                    "the environment variable `{var}` does not hold a valid value for the header `{name}`"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        Ok(headers)
    }

    /// Puts `opened` in place; returns the connection it replaces.
    pub(super) async fn install(&self, opened: Opened) -> Option<Conn> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        self.set_tools(opened.tools);
        self.pid.store(opened.pid.unwrap_or(0), Ordering::Relaxed);
        self.conn.write().await.replace(Conn { service: opened.service, generation })
    }

    /// The first connection, at [`McpHub::start`].
    pub(super) async fn connect_first(&self) -> Result<(), McpError> {
        let _one_at_a_time = self.connect.lock().await;
        let opened = self.open().await?;
        let tools = opened.tools.len();
        if let Some(old) = self.install(opened).await {
            retire(&self.name, old.service);
        }
        tracing::info!(server = %self.name, tools, "MCP server started");
        Ok(())
    }

    /// Replaces the connection of generation `seen` (`None`: whatever
    /// connection has ended) with a new one, unless another task already
    /// did; one restart at a time.
    pub(super) async fn restart(self: Arc<Self>, seen: Option<u64>) -> Result<(), McpError> {
        let _one_at_a_time = self.connect.lock().await;
        if self.stop.is_cancelled() {
            return Err(self.start_error("the MCP hub is shut down"));
        }
        if matches!(self.peer().await, Ok((_, current)) if Some(current) != seen) {
            return Ok(());
        }
        let opened = self.open().await?;
        if self.stop.is_cancelled() {
            retire(&self.name, opened.service);
            return Err(self.start_error("the MCP hub is shut down"));
        }
        let tools = opened.tools.len();
        let old = self.install(opened).await;
        let restarts = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(server = %self.name, restarts, tools, "MCP server restarted");
        if let Some(old) = old {
            retire(&self.name, old.service);
        }
        Ok(())
    }

    /// [`Server::restart`] in a task of its own, so that a caller that gives
    /// up waiting does not cut the restart short.
    pub(super) async fn restart_detached(self: &Arc<Self>, seen: Option<u64>) -> Result<(), McpError> {
        match tokio::spawn(Arc::clone(self).restart(seen)).await {
            Ok(restarted) => restarted,
            Err(e) => Err(self.start_error(format!("the restart task failed: {e}"))),
        }
    }

    /// Whether the connection of generation `generation` is gone after a
    /// call on it failed with `error`.
    pub(super) async fn lost(&self, error: &ServiceError, generation: u64) -> bool {
        let polls = match error {
            ServiceError::TransportClosed => return true,
            ServiceError::TransportSend(_) => LOST_POLLS,
            _ => 1,
        };
        for poll in 0..polls {
            if poll > 0 {
                tokio::time::sleep(LOST_POLL).await;
            }
            if !matches!(self.peer().await, Ok((_, current)) if current == generation) {
                return true;
            }
        }
        false
    }

    /// Reads the tool list again (after a call named a tool not in it).
    pub(super) async fn refresh_tools(&self) {
        let Ok((peer, _)) = self.peer().await else {
            return;
        };
        let limit = Duration::from_millis(self.launch.start_timeout_ms);
        match tokio::time::timeout(limit, peer.list_all_tools()).await {
            Ok(Ok(tools)) => self.set_tools(tools.iter().map(McpTool::from_rmcp).collect()),
            Ok(Err(error)) => tracing::debug!(server = %self.name, %error, "cannot read the tool list again"),
            Err(_) => tracing::debug!(server = %self.name, "reading the tool list again timed out"),
        }
    }

    pub(super) async fn call(
        self: &Arc<Self>,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<String, McpError> {
        if self.stop.is_cancelled() {
            return Err(self.call_error(tool, "the MCP hub is shut down"));
        }
        if !self.has_tool(tool) {
            self.refresh_tools().await;
            if !self.has_tool(tool) {
                return Err(McpError::NoSuchTool { server: self.name.clone(), tool: tool.to_string() });
            }
        }
        let mut timeout_ms = self.launch.timeout_ms;
        if let Some(asked) = timeout {
            timeout_ms = timeout_ms.min(u64::try_from(asked.as_millis()).unwrap_or(u64::MAX));
        }
        let limit = Duration::from_millis(timeout_ms);
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        let mut restarted = false;
        loop {
            let (peer, generation) = match self.peer().await {
                Ok(live) => live,
                Err(seen) => {
                    if restarted || self.stop.is_cancelled() {
                        return Err(self.call_error(tool, "the connection to the server is closed"));
                    }
                    tracing::warn!(
                        server = %self.name,
                        tool,
                        "MCP server connection is closed; restarting it"
                    );
                    self.restart_detached(seen).await?;
                    restarted = true;
                    continue;
                }
            };
            match tokio::time::timeout(limit, peer.call_tool(params.clone())).await {
                Err(_) => {
                    return Err(McpError::Timeout {
                        server: self.name.clone(),
                        tool: tool.to_string(),
                        timeout_ms,
                    });
                }
                Ok(Ok(result)) => return self.outcome(tool, &result),
                Ok(Err(error)) => {
                    if !restarted && !self.stop.is_cancelled() && self.lost(&error, generation).await {
                        tracing::warn!(
                            server = %self.name,
                            tool,
                            %error,
                            "MCP server connection lost during a call; restarting it, retrying once"
                        );
                        self.restart_detached(Some(generation)).await?;
                        restarted = true;
                        continue;
                    }
                    return Err(self.call_error(tool, error.to_string()));
                }
            }
        }
    }

    pub(super) fn outcome(&self, tool: &str, result: &CallToolResult) -> Result<String, McpError> {
        let text = result_text(result);
        if result.is_error == Some(true) {
            return Err(McpError::ToolError {
                server: self.name.clone(),
                tool: tool.to_string(),
                message: text,
            });
        }
        Ok(text)
    }

    /// The watcher's look at this server, restarting it when dead.
    pub(super) async fn check(self: Arc<Self>) {
        if self.stop.is_cancelled() {
            return;
        }
        let health = match self.peer().await {
            Ok((peer, generation)) => self.ping(&peer, generation).await,
            Err(seen) => Health::Dead(seen),
        };
        let Health::Dead(seen) = health else {
            return;
        };
        if self.stop.is_cancelled() {
            return;
        }
        tracing::warn!(server = %self.name, "MCP server is down (its connection has ended); restarting it");
        if let Err(error) = Arc::clone(&self).restart(seen).await {
            tracing::warn!(
                server = %self.name,
                %error,
                "MCP server could not be restarted; the watcher tries again"
            );
        }
    }

    pub(super) async fn ping(&self, peer: &Peer<RoleClient>, generation: u64) -> Health {
        let limit = Duration::from_millis(self.launch.timeout_ms.clamp(PING_MIN_MS, PING_MAX_MS));
        let request = ClientRequest::PingRequest(PingRequest::default());
        let answered = tokio::time::timeout(limit, async move {
            match peer.send_request_with_option(request, PeerRequestOptions::with_timeout(limit)).await {
                Ok(handle) => handle.await_response().await,
                Err(error) => Err(error),
            }
        })
        .await;
        match answered {
            Ok(Ok(_)) => Health::Alive,
            Ok(Err(ServiceError::TransportClosed | ServiceError::TransportSend(_))) => {
                Health::Dead(Some(generation))
            }
            Ok(Err(ServiceError::Timeout { .. })) | Err(_) => {
                tracing::warn!(server = %self.name, "MCP server did not answer a ping within {limit:?}");
                Health::Alive
            }
            Ok(Err(error)) => {
                // It answered, if only with an error (a server without ping).
                tracing::debug!(server = %self.name, %error, "MCP server answered a ping with an error");
                Health::Alive
            }
        }
    }

    /// Closes the connection (for [`McpHub::shutdown`]); waits for a
    /// connect or restart in progress first.
    pub(super) async fn shut_down(&self) {
        let _one_at_a_time = self.connect.lock().await;
        let conn = self.conn.write().await.take();
        self.pid.store(0, Ordering::Relaxed);
        if let Some(conn) = conn {
            close(&self.name, conn.service).await;
        }
    }
}

/// Whether a connection has ended: cancelled, or its service task finished
/// (a child that exits ends the task without cancelling it, so
/// `is_closed()` alone does not see it).
pub(super) fn is_dead(service: &RunningService<RoleClient, ()>) -> bool {
    service.is_closed() || service.peer().is_transport_closed()
}

/// Cancels a connection and waits (at most [`CLOSE_TIMEOUT`]) for it to
/// close: a child process has its stdin closed, then SIGTERM, then is killed.
pub(super) async fn close(server: &str, service: RunningService<RoleClient, ()>) {
    match tokio::time::timeout(CLOSE_TIMEOUT, service.cancel()).await {
        Ok(Ok(reason)) => tracing::debug!(server, ?reason, "MCP server connection closed"),
        Ok(Err(error)) => tracing::warn!(server, %error, "MCP server connection task failed while closing"),
        Err(_) => {
            tracing::warn!(server, "MCP server connection did not close in time; its process is killed");
        }
    }
}

/// [`close`] in the background.
pub(super) fn retire(server: &str, service: RunningService<RoleClient, ()>) {
    let server = server.to_string();
    tokio::spawn(async move { close(&server, service).await });
}

/// Forwards a child's stderr to `tracing` (debug), line by line, until it closes.
pub(super) fn forward_stderr(server: String, stderr: ChildStderr) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    tracing::debug!(server = %server, "stderr: {}", text.trim_end());
                }
                Err(error) => {
                    tracing::debug!(server = %server, %error, "cannot read the MCP server's stderr");
                    break;
                }
            }
        }
    });
}

/// The HTTP client of a streamable HTTP server: like rmcp's default one (no
/// idle connection pool, same-origin 307/308 redirects only), but built here
/// so that a failure is an error, not a panic.
pub(super) fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a bundled crypto provider; installing fails
    // only when one is installed already, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().pool_max_idle_per_host(0).redirect(same_origin_redirects()).build()
}

/// Follows only same-origin 307 and 308 redirects (they keep the method and
/// the body; another origin would get our headers), at most [`MAX_REDIRECTS`].
pub(super) fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let keeps_body = matches!(
            attempt.status(),
            reqwest::StatusCode::TEMPORARY_REDIRECT | reqwest::StatusCode::PERMANENT_REDIRECT
        );
        let same_origin =
            attempt.previous().first().is_some_and(|first| first.origin() == attempt.url().origin());
        if !keeps_body || !same_origin {
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

/// A tool's result as text: its text blocks (an embedded text resource
/// counts as text) joined by "\n", other blocks as a short bracketed
/// description; with no text at all, the structured content's JSON first.
pub(super) fn result_text(result: &CallToolResult) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(result.content.len() + 1);
    let mut any_text = false;
    for block in &result.content {
        match block {
            ContentBlock::Text(text) => {
                any_text = true;
                parts.push(text.text.clone());
            }
            ContentBlock::Image(image) => parts.push(format!("[image {}]", image.mime_type)),
            ContentBlock::Audio(audio) => parts.push(format!("[audio {}]", audio.mime_type)),
            ContentBlock::Resource(embedded) => match &embedded.resource {
                ResourceContents::TextResourceContents { text, .. } => {
                    any_text = true;
                    parts.push(text.clone());
                }
                ResourceContents::BlobResourceContents { uri, mime_type, .. } => match mime_type {
                    Some(mime) => parts.push(format!("[resource {uri} {mime}]")),
                    None => parts.push(format!("[resource {uri}]")),
                },
                _ => parts.push("[resource]".to_string()),
            },
            ContentBlock::ResourceLink(link) => parts.push(format!("[resource link {}]", link.uri)),
            _ => parts.push("[content]".to_string()),
        }
    }
    if let Some(structured) = result.structured_content.as_ref().filter(|_| !any_text) {
        parts.insert(0, structured.to_string());
    }
    parts.join("\n")
}
