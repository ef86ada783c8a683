//! The mesh as an MCP server, driven by the official MCP Python SDK (pinned
//! in scripts/validators.txt): over stdio (`meshops mcp`, the shipped
//! binary started by the SDK) and over streamable HTTP
//! (`gateway.mcp_listen`, with an API key required).

mod common;

use meshops::gateway::Overrides;
use serde_json::Value;

/// The client: `stdio BIN ROOT DATA` or `http URL KEY`; prints one JSON
/// line of what it saw.
const CLIENT: &str = r#"
import asyncio, json, sys
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client, create_mcp_http_client

def field(obj, *names):
    for n in names:
        if hasattr(obj, n):
            return getattr(obj, n)
    return None

async def exercise(read, write):
    async with ClientSession(read, write) as s:
        await s.initialize()
        tools = await s.list_tools()
        ask = await s.call_tool("ask", {"query": "Which port does the gateway listen on?"})
        described = await s.call_tool("describe_mesh", {})
        empty = await s.call_tool("ask", {"query": ""})
        return {
            "tools": sorted(t.name for t in tools.tools),
            "ask_text": ask.content[0].text,
            "ask_structured": field(ask, "structuredContent", "structured_content"),
            "ask_error": field(ask, "isError", "is_error"),
            "describe": field(described, "structuredContent", "structured_content"),
            "empty_error": field(empty, "isError", "is_error"),
            "empty_text": empty.content[0].text,
        }

async def main():
    if sys.argv[1] == "stdio":
        params = StdioServerParameters(command=sys.argv[2], args=["mcp"], cwd=sys.argv[3],
                                       env={"MESHOPS__RETRIEVAL__DATA_DIR": sys.argv[4], "MESHOPS_ROOT": sys.argv[3]})
        async with stdio_client(params) as (read, write):
            print(json.dumps(await exercise(read, write)), flush=True)
    else:
        url, key = sys.argv[2], sys.argv[3]
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {key}"}) as http:
            async with streamable_http_client(url, http_client=http) as streams:
                print(json.dumps(await exercise(streams[0], streams[1])), flush=True)

asyncio.run(main())
"#;

/// Runs the client with `args`; its JSON line, or a panic with its output.
async fn client(dir: &std::path::Path, args: &[&str]) -> Value {
    let script = dir.join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let run = tokio::process::Command::new("python3").arg(&script).args(args).output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(180), run).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

fn check_session(seen: &Value) {
    assert_eq!(seen["tools"], serde_json::json!(["ask", "describe_mesh"]), "{seen}");
    let text = seen["ask_text"].as_str().unwrap();
    assert!(text.contains("50051") && text.contains("Sources:\n[1] "), "{seen}");
    assert_ne!(seen["ask_error"], true);
    let s = &seen["ask_structured"];
    assert!(s["citations"].as_array().is_some_and(|c| !c.is_empty()), "{seen}");
    assert_eq!(s["trace_id"].as_str().map(str::len), Some(32), "{seen}");
    let agents: Vec<&str> =
        seen["describe"]["agents"].as_array().unwrap().iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(agents, ["critic", "retriever", "router", "summarizer"], "{seen}");
    // A bad request is the tool's error, with the gateway's code.
    assert_eq!(seen["empty_error"], true, "{seen}");
    assert!(seen["empty_text"].as_str().unwrap().starts_with("InvalidArgument: "), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_python_sdk_asks_the_mesh_over_stdio() {
    if !common::require::require_python_module("mcp", "the MCP SDK as the MCP server's client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root = common::root();
    let seen = client(
        dir.path(),
        &["stdio", env!("CARGO_BIN_EXE_meshops"), root.to_str().unwrap(), data.to_str().unwrap()],
    )
    .await;
    check_session(&seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_python_sdk_asks_the_mesh_over_http_with_a_key() {
    if !common::require::require_python_module("mcp", "the MCP SDK as the MCP server's client") {
        return;
    }
    let overrides = Overrides { api_keys: Some(vec!["sk-mcp".into()]), ..Default::default() };
    let t =
        common::start(|spec| spec.settings.gateway.mcp_listen = Some("127.0.0.1:0".into()), overrides).await;
    let url = format!("http://{}/mcp", t.server.mcp_addr.expect("served when mcp_listen is set"));
    let dir = tempfile::tempdir().unwrap();
    check_session(&client(dir.path(), &["http", &url, "sk-mcp"]).await);

    // Without the key nothing is served, not even the tool list: the SDK
    // gets an error response and prints nothing; the HTTP status is 401.
    let script = dir.path().join("client.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .args(["http", &url, "wrong"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success() && output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MCPError"), "{stderr}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let initialize = r#"{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}"#;
    let http = reqwest::Client::new();
    let post = |key: &str| {
        http.post(&url)
            .bearer_auth(key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(initialize)
            .send()
    };
    assert_eq!(post("wrong").await.unwrap().status(), 401);
    assert_eq!(post("sk-mcp").await.unwrap().status(), 200);
    t.server.shutdown().await.unwrap();
}
