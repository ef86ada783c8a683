//! The hub against the reference MCP server (`@modelcontextprotocol/server-everything`).

use std::io::Write as _;

use serde_json::json;

use std::path::PathBuf;
use std::process::Stdio;

use rmcp::model::CallToolResult;

use super::server::*;
use super::*;

const EVERYTHING: &str = ".cache/meshops-npm/node_modules/.bin/mcp-server-everything";

fn stdio(command: &str, args: Vec<String>) -> McpServerSettings {
    McpServerSettings { command: Some(command.to_string()), args, ..McpServerSettings::default() }
}

fn http(url: &str, headers_env: BTreeMap<String, String>) -> McpServerSettings {
    McpServerSettings {
        url: Some(url.to_string()),
        headers_env,
        timeout_ms: 3_000,
        start_timeout_ms: 3_000,
        ..McpServerSettings::default()
    }
}

fn one(name: &str, settings: McpServerSettings) -> BTreeMap<String, McpServerSettings> {
    BTreeMap::from([(name.to_string(), settings)])
}

fn args(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

/// The reference server `mcp-server-everything` (run by node), or
/// `None` after a SKIP line when node or the server is missing; under
/// CI a missing one fails the test.
fn everything(test: &str) -> Option<McpServerSettings> {
    let script = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(EVERYTHING));
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    match script {
        Some(script) if node && script.is_file() => {
            Some(stdio("node", vec![script.display().to_string(), "stdio".to_string()]))
        }
        _ => {
            let in_ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            assert!(
                !in_ci,
                "{test}: `node` or ~/{EVERYTHING} is missing, and under CI=true that is a failure"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIP {test}: `node` or ~/{EVERYTHING} is missing \
                 (npm install @modelcontextprotocol/server-everything)"
            );
            None
        }
    }
}

/// Sends SIGKILL to `pid`.
fn kill(pid: u32) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) on the pid of a child this test started; no memory is shared.
    let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(killed, 0, "kill({pid}) failed");
}

#[tokio::test]
async fn the_everything_server_lists_and_calls_its_tools() {
    let Some(mut settings) = everything("the_everything_server_lists_and_calls_its_tools") else {
        return;
    };
    settings.env.insert("MESHOPS_MCP_TEST_ENV".to_string(), "passed-to-the-child".to_string());
    let hub = McpHub::start(&one("everything", settings)).await.unwrap();

    let tools = hub.tools("everything").unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"echo") && names.contains(&"get-sum"), "{names:?}");
    let echo = tools.iter().find(|t| t.name == "echo").unwrap();
    assert!(echo.input_schema.is_object(), "{:?}", echo.input_schema);
    assert_eq!(hub.servers().get("everything"), Some(&tools));
    assert_eq!(hub.tools("nobody"), None);
    assert!(hub.child_pid("everything").is_some());

    let hello = args(json!({"message": "hello from meshops"}));
    let text = hub.call("everything", "echo", hello, None).await.unwrap();
    assert!(text.contains("hello from meshops"), "{text}");

    let sum = hub.call("everything", "get-sum", args(json!({"a": 2, "b": 3})), None).await.unwrap();
    assert!(sum.contains('5'), "{sum}");

    let env = hub.call("everything", "get-env", serde_json::Map::new(), None).await.unwrap();
    assert!(env.contains("passed-to-the-child"), "{env}");

    let image = hub.call("everything", "get-tiny-image", serde_json::Map::new(), None).await.unwrap();
    assert!(image.contains("[image image/png]"), "{image}");

    let missing = hub.call("everything", "no-such-tool", serde_json::Map::new(), None).await.unwrap_err();
    assert!(
        matches!(
            &missing,
            McpError::NoSuchTool { server, tool } if server == "everything" && tool == "no-such-tool"
        ),
        "{missing}"
    );

    let bad_args = hub.call("everything", "echo", serde_json::Map::new(), None).await.unwrap_err();
    assert!(matches!(bad_args, McpError::ToolError { .. } | McpError::Call { .. }), "{bad_args}");

    let unknown = hub.call("nobody", "echo", serde_json::Map::new(), None).await.unwrap_err();
    assert!(matches!(unknown, McpError::Call { .. }), "{unknown}");

    let slow = hub
        .call(
            "everything",
            "trigger-long-running-operation",
            args(json!({"duration": 10, "steps": 5})),
            Some(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(matches!(slow, McpError::Timeout { timeout_ms: 300, .. }), "{slow}");

    // The server still answers after the abandoned call.
    let still = args(json!({"message": "still here"}));
    let again = hub.call("everything", "echo", still, None).await.unwrap();
    assert!(again.contains("still here"), "{again}");
    assert_eq!(hub.restarts("everything"), 0);

    hub.shutdown().await;
}

#[tokio::test]
async fn a_killed_server_is_restarted_by_the_next_call_and_shutdown_stops_it() {
    let Some(settings) = everything("a_killed_server_is_restarted_by_the_next_call_and_shutdown_stops_it")
    else {
        return;
    };
    let hub = McpHub::start(&one("everything", settings)).await.unwrap();
    let pid = hub.child_pid("everything").unwrap();
    kill(pid);

    let text =
        hub.call("everything", "echo", args(json!({"message": "after the kill"})), None).await.unwrap();
    assert!(text.contains("after the kill"), "{text}");
    assert_eq!(hub.restarts("everything"), 1);
    let new_pid = hub.child_pid("everything").unwrap();
    assert_ne!(new_pid, pid);
    assert!(hub.tools("everything").unwrap().iter().any(|t| t.name == "echo"));

    hub.shutdown().await;
    hub.shutdown().await;
    assert_eq!(hub.child_pid("everything"), None);
    let late = args(json!({"message": "too late"}));
    let after = hub.call("everything", "echo", late, None).await.unwrap_err();
    assert!(matches!(after, McpError::Call { .. }), "{after}");
    assert_eq!(hub.restarts("everything"), 1);
}

#[tokio::test]
async fn the_watcher_restarts_a_killed_server() {
    let Some(settings) = everything("the_watcher_restarts_a_killed_server") else {
        return;
    };
    let hub = McpHub::start(&one("everything", settings)).await.unwrap();
    hub.watch(Duration::from_millis(100));
    let pid = hub.child_pid("everything").unwrap();
    kill(pid);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hub.restarts("everything") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the watcher did not restart the server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(hub.child_pid("everything"), Some(pid));
    let text = hub.call("everything", "echo", args(json!({"message": "watched"})), None).await.unwrap();
    assert!(text.contains("watched"), "{text}");
    assert_eq!(hub.restarts("everything"), 1);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_command_that_does_not_exist_fails_start_naming_the_server() {
    let servers = one("ghost", stdio("/nonexistent/meshops-no-such-mcp-server", Vec::new()));
    let Err(error) = McpHub::start(&servers).await else {
        panic!("a server whose command does not exist started");
    };
    match &error {
        McpError::Start { server, message } => {
            assert_eq!(server, "ghost");
            assert!(message.contains("meshops-no-such-mcp-server"), "{message}");
        }
        other => panic!("expected McpError::Start, got {other}"),
    }
    assert!(error.to_string().contains("`ghost`"), "{error}");
}

#[tokio::test]
async fn a_command_that_is_not_an_mcp_server_fails_start() {
    // `true` exits at once: the initialize handshake meets a closed connection.
    let servers = one("mute", stdio("true", Vec::new()));
    let Err(error) = McpHub::start(&servers).await else {
        panic!("`true` started as an MCP server");
    };
    assert!(matches!(&error, McpError::Start { server, .. } if server == "mute"), "{error}");
}

#[tokio::test]
async fn an_empty_map_gives_an_empty_hub() {
    let hub = McpHub::start(&BTreeMap::new()).await.unwrap();
    assert!(hub.servers().is_empty());
    assert_eq!(hub.tools("any"), None);
    assert_eq!(hub.restarts("any"), 0);
    assert_eq!(hub.child_pid("any"), None);
    let error = hub.call("any", "tool", serde_json::Map::new(), None).await.unwrap_err();
    assert!(matches!(error, McpError::Call { .. }), "{error}");
    hub.watch(Duration::from_millis(10));
    hub.shutdown().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_header_from_a_missing_variable_fails_start_naming_it() {
    let var = "MESHOPS_TEST_MCP_TOKEN_THAT_IS_NEVER_SET";
    let headers = BTreeMap::from([("Authorization".to_string(), var.to_string())]);
    let servers = one("remote", http("http://127.0.0.1:9/mcp", headers));
    let Err(error) = McpHub::start(&servers).await else {
        panic!("started without its header's variable");
    };
    match &error {
        McpError::Start { server, message } => {
            assert_eq!(server, "remote");
            assert!(message.contains(var), "{message}");
        }
        other => panic!("expected McpError::Start, got {other}"),
    }
}

#[tokio::test]
async fn an_unreachable_http_server_fails_start() {
    // Port 9 (discard) on loopback: nothing listens there.
    let servers = one("remote", http("http://127.0.0.1:9/mcp", BTreeMap::new()));
    let Err(error) = McpHub::start(&servers).await else {
        panic!("an unreachable server started");
    };
    assert!(matches!(&error, McpError::Start { server, .. } if server == "remote"), "{error}");
}

#[test]
fn results_become_text() {
    let mixed: CallToolResult = serde_json::from_value(json!({
        "content": [
            {"type": "text", "text": "first"},
            {"type": "image", "data": "AA==", "mimeType": "image/png"},
            {"type": "audio", "data": "AA==", "mimeType": "audio/wav"},
            {"type": "text", "text": "second"}
        ]
    }))
    .unwrap();
    assert_eq!(result_text(&mixed), "first\n[image image/png]\n[audio audio/wav]\nsecond");

    let structured: CallToolResult =
        serde_json::from_value(json!({"content": [], "structuredContent": {"x": 1}})).unwrap();
    assert_eq!(result_text(&structured), r#"{"x":1}"#);

    let both: CallToolResult = serde_json::from_value(json!({
        "content": [{"type": "text", "text": "{\"x\":1}"}],
        "structuredContent": {"x": 1}
    }))
    .unwrap();
    assert_eq!(result_text(&both), r#"{"x":1}"#);

    let embedded: CallToolResult = serde_json::from_value(json!({
        "content": [
            {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "inside"}},
            {
                "type": "resource",
                "resource": {"uri": "file:///b.bin", "blob": "AA==", "mimeType": "application/zip"}
            }
        ]
    }))
    .unwrap();
    assert_eq!(result_text(&embedded), "inside\n[resource file:///b.bin application/zip]");
}

#[test]
fn an_error_result_is_a_tool_error_with_its_text() {
    let server = Server::new("s", &stdio("unused", Vec::new()), CancellationToken::new());
    let failed: CallToolResult = serde_json::from_value(json!({
        "content": [{"type": "text", "text": "it broke"}],
        "isError": true
    }))
    .unwrap();
    match server.outcome("t", &failed) {
        Err(McpError::ToolError { server, tool, message }) => {
            assert_eq!((server.as_str(), tool.as_str(), message.as_str()), ("s", "t", "it broke"));
        }
        other => panic!("expected McpError::ToolError, got {other:?}"),
    }
    let fine: CallToolResult =
        serde_json::from_value(json!({"content": [{"type": "text", "text": "ok"}]})).unwrap();
    assert_eq!(server.outcome("t", &fine).unwrap(), "ok");
}
