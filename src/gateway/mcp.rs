//! The mesh as an MCP server (Model Context Protocol, through `rmcp`, the
//! official Rust SDK): tools `ask` and `describe_mesh`, served over stdio
//! by `meshops mcp` and over streamable HTTP on `gateway.mcp_listen`.
//!
//! Like the HTTP API, each tool call is a call on the same
//! [`GatewayService`], so keys, limits, admission, deadlines and telemetry
//! are the gateway's. Over HTTP the request's headers (`Authorization:
//! Bearer …`, `traceparent`) become the call's metadata, and with keys
//! configured a request without a valid key is refused before MCP sees it.

use std::fmt::Write as _;

use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock as Content};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use serde::Deserialize;
use serde_json::json;
use tonic::Request;

use super::GatewayService;
use super::openai::wire;
use crate::proto::gateway_server::Gateway as _;
use crate::proto::{self};

/// The MCP tools over one gateway.
#[derive(Clone)]
pub struct MeshTools {
    gateway: GatewayService,
}

/// `ask`'s arguments.
#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct AskArgs {
    /// The question.
    pub query: String,
    /// A variant of the mesh (see `describe_mesh`); unset: the base mesh.
    #[serde(default)]
    pub variant: Option<String>,
    /// An opaque conversation key, carried into logs and traces.
    #[serde(default)]
    pub session_id: Option<String>,
}

impl MeshTools {
    pub fn new(gateway: GatewayService) -> MeshTools {
        MeshTools { gateway }
    }
}

/// A gateway request with the MCP request's HTTP headers (none over stdio)
/// as metadata.
fn request<T>(ctx: &RequestContext<RoleServer>, message: T) -> Request<T> {
    let headers = ctx.extensions.get::<Parts>().map(|p| p.headers.clone()).unwrap_or_default();
    super::arrival::front_door_request(headers, message)
}

/// A failed call as a tool error the model reads: the gRPC code's name and
/// the gateway's message.
fn failed(status: &tonic::Status) -> CallToolResult {
    CallToolResult::error(vec![Content::text(format!("{:?}: {}", status.code(), status.message()))])
}

#[tool_router(server_handler)]
impl MeshTools {
    #[tool(
        name = "ask",
        description = "Ask the meshops agent mesh a question about its knowledge base; returns a grounded answer with numbered [n] citations and the sources they point to."
    )]
    async fn ask(
        &self,
        Parameters(args): Parameters<AskArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let ask = proto::AskRequest {
            query: args.query,
            session_id: args.session_id.unwrap_or_default(),
            variant: args.variant.unwrap_or_default(),
            metadata: Default::default(),
        };
        let answer = match self.gateway.ask(request(&ctx, ask)).await {
            Ok(a) => a.into_inner(),
            Err(status) => return Ok(failed(&status)),
        };
        let mut text = answer.answer.clone();
        if !answer.citations.is_empty() {
            text.push_str("\n\nSources:");
            for (i, c) in answer.citations.iter().enumerate() {
                let _ = write!(text, "\n[{}] {} ({})", i + 1, c.doc_id, c.chunk_id);
            }
        }
        let mut result = CallToolResult::success(vec![Content::text(text)]);
        result.structured_content = Some(json!({
            "answer": answer.answer, "citations": wire::citations(&answer), "intent": answer.intent,
            "variant": answer.variant, "trace_id": answer.trace_id, "verdict": wire::verdict(&answer),
        }));
        Ok(result)
    }

    #[tool(
        name = "describe_mesh",
        description = "Describe the meshops mesh: its agents (kind, prompt, model, the flows that use them), its flows, variants and model profiles."
    )]
    async fn describe_mesh(&self, ctx: RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
        let d = match self.gateway.describe_mesh(request(&ctx, proto::DescribeMeshRequest {})).await {
            Ok(d) => d.into_inner(),
            Err(status) => return Ok(failed(&status)),
        };
        let agents: Vec<serde_json::Value> = d
            .agents
            .iter()
            .map(|a| {
                json!({"name": a.name, "kind": a.kind, "prompt": a.prompt, "model_profile": a.model_profile,
                       "model": a.model, "replicas": a.replicas, "flows": a.flows})
            })
            .collect();
        let flows: Vec<serde_json::Value> = d
            .flows
            .iter()
            .map(|f| json!({"intent": f.intent, "variant": f.variant, "steps": f.steps, "answer": f.answer, "on_reject": f.on_reject}))
            .collect();
        let variants: Vec<serde_json::Value> =
            d.variants.iter().map(|v| json!({"name": v.name, "description": v.description})).collect();
        let models: Vec<serde_json::Value> = d
            .models
            .iter()
            .map(|m| json!({"profile": m.profile, "provider": m.provider, "model": m.model}))
            .collect();
        let value = json!({
            "agents": agents, "flows": flows, "variants": variants, "models": models,
            "retrieval_backend": d.retrieval_backend, "collection": d.collection, "version": d.version,
        });
        let mut result = CallToolResult::success(vec![Content::text(value.to_string())]);
        result.structured_content = Some(value);
        Ok(result)
    }
}

/// The streamable-HTTP MCP endpoint (`/mcp`), refusing requests without a
/// valid API key when keys are configured (before any MCP message is
/// read, so listing the tools needs a key too).
pub fn router(
    tools: MeshTools,
    listen: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
) -> axum::Router {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
    let mut config = StreamableHttpServerConfig::default();
    config.cancellation_token = stop;
    // Loopback listeners keep the SDK's DNS-rebinding guard (loopback
    // hosts only); a listener on another address is reached through its
    // own host names (a Service, an ingress), with API keys as the guard.
    if !listen.ip().is_loopback() {
        config = config.disable_allowed_hosts();
    }
    let admission = tools.gateway.admission.clone();
    let factory = tools.clone();
    let service = StreamableHttpService::new(
        move || Ok(factory.clone()),
        LocalSessionManager::default().into(),
        config,
    );
    axum::Router::new().nest_service("/mcp", service).layer(axum::middleware::from_fn(
        move |headers: HeaderMap, request: axum::extract::Request, next: axum::middleware::Next| {
            let admission = admission.clone();
            async move {
                let metadata = tonic::metadata::MetadataMap::from_headers(headers);
                match admission.verify_key(&metadata) {
                    Ok(()) => next.run(request).await,
                    Err(status) => (StatusCode::UNAUTHORIZED, status.message().to_string()).into_response(),
                }
            }
        },
    ))
}

/// Serves the tools over stdin/stdout until the client closes them.
pub async fn serve_stdio(tools: MeshTools) -> Result<(), rmcp::RmcpError> {
    use rmcp::ServiceExt as _;
    let running = tools.serve(rmcp::transport::stdio()).await.map_err(rmcp::RmcpError::from)?;
    running.waiting().await.map_err(rmcp::RmcpError::from)?;
    Ok(())
}
