//! Tools, end to end: an `llm` agent configured in files only calls the
//! tools of a real MCP server (the reference `server-everything`, run by
//! node over stdio), the retriever (`retrieve`) and another agent
//! (`agent:<name>`). The model's tool calls run at once, their results go
//! back to the model as `tool` messages (failures included, as `error: …`
//! results it sees), every call is a step of kind `tool` before its
//! caller's step (and a pair of stream events), `DescribeMesh` lists the
//! servers and each agent's tools, a killed server is restarted and the
//! call still answers, and `validate` names the agent file of a tool that
//! names an unknown server or agent.
//!
//! Without `node` or the installed server, the MCP checks are skipped with
//! a SKIP line; under `CI=true` that is a failure.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use common::fake_openai::{FakeOpenAi, Reply, Seen, completion};
use common::{load_errors, start_in, wait};
use meshops::config::MeshSpec;
use meshops::proto::{AskRequest, DescribeMeshRequest, ask_event::Event};
use serde_json::{Value, json};

/// The question the offline engine answers with the server's `get-sum`.
const SUM_QUESTION: &str = "What is the get-sum of 2 and 3?";
/// What `server-everything`'s `get-sum` answers for 2 and 3.
const SUM_ANSWER: &str = "The sum of 2 and 3 is 5.";
/// The step name of a `get-sum` call.
const GET_SUM: &str = "mcp:everything/get-sum";

const CALC_PROMPT: &str = "---\nname: Calc\n---\nsystem:\nUse the tools to answer.\n\nuser:\n{{ query }}\n";

/// A headline writer, present only as another agent's tool (no flow).
const HEADLINE_AGENT: &str = "kind = \"llm\"\n\
description = \"A one-line headline of a text.\"\n\
prompt = \"headline.prompty\"\n\
model = \"offline\"\n";

const HEADLINE_PROMPT: &str = "---
name: Headline
description: A one-line headline of a text.
model:
  api: chat
  parameters:
    max_tokens: 40
---
system:
Write a one-line headline for the text below.

user:
{{ query }}
";

/// Every intent the router may choose runs the calculator alone, so the
/// test does not depend on how the offline router reads a sum.
const FLOWS: &str = "
[flows.question]
steps = [\"calc\"]
max_revisions = 0

[flows.greeting]
steps = [\"calc\"]
max_revisions = 0

[flows.out_of_scope]
steps = [\"calc\"]
max_revisions = 0
";

/// `text` as a TOML basic string (JSON string escapes are valid TOML).
fn q(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// The calculator's agent file: an offline `llm` agent with `tools` and
/// any further `[llm]` lines.
fn calc_agent(tools: &[&str], llm_extra: &str) -> String {
    let tools: Vec<String> = tools.iter().map(|t| q(t)).collect();
    format!(
        "# Answers by calling its tools.\n\
         kind = \"llm\"\n\
         description = \"Answers by calling tools.\"\n\
         prompt = \"calc.prompty\"\n\
         model = \"offline\"\n\
         \n\
         [llm]\n\
         tools = [{}]\n\
         {llm_extra}",
        tools.join(", ")
    )
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

/// A copy of the project with the calculator agent (`tools`, and further
/// `[llm]` lines) and its prompt added.
fn calc_copy(tools: &[&str], llm_extra: &str) -> tempfile::TempDir {
    let dir = common::project_copy(&["agents", "prompts", "config", "corpus"]);
    write(&dir.path().join("agents"), "calc.toml", &calc_agent(tools, llm_extra));
    write(&dir.path().join("prompts"), "calc.prompty", CALC_PROMPT);
    dir
}

/// The reference MCP server and the node that runs it.
struct Everything {
    node: PathBuf,
    script: PathBuf,
}

/// `node` and the installed `@modelcontextprotocol/server-everything`
/// (`~/.cache/meshops-npm`). Missing: the test fails under CI, and
/// elsewhere gets `None` after a SKIP line.
#[track_caller]
fn everything() -> Option<Everything> {
    let node = common::require::require_tool("node", "the MCP reference server runs on node")?;
    let modules = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/meshops-npm/node_modules"));
    let candidates: Vec<PathBuf> = modules
        .map(|m| {
            vec![
                m.join("@modelcontextprotocol/server-everything/dist/index.js"),
                m.join(".bin/mcp-server-everything"),
            ]
        })
        .unwrap_or_default();
    if let Some(script) = candidates.iter().find(|p| p.is_file()) {
        return Some(Everything { node, script: script.clone() });
    }
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let what = format!(
        "the MCP reference server is not installed (looked for {candidates:?}; \
         npm install --prefix ~/.cache/meshops-npm @modelcontextprotocol/server-everything)"
    );
    if common::require::in_ci() {
        panic!("{test}: {what}, and under CI=true a missing tool is a failure, not a skip");
    }
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {what}");
    None
}

/// The `--config` file: the `everything` server run as `command args`,
/// and the calculator's flows.
fn mcp_extra(command: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| q(a)).collect();
    format!("[mcp.everything]\ncommand = {}\nargs = [{}]\n{FLOWS}", q(command), args.join(", "))
}

/// The everything server run directly by node.
fn everything_extra(e: &Everything) -> String {
    let (node, script) = (e.node.display().to_string(), e.script.display().to_string());
    mcp_extra(&node, &[script.as_str(), "stdio"])
}

/// Points the calculator at the fake OpenAI-wire server (profile
/// `remote`), as `open_mesh.rs` does for its classifier.
fn on_remote(base_url: String) -> impl FnOnce(&mut MeshSpec) {
    move |spec: &mut MeshSpec| common::on_remote_model(spec, "calc", "fake-tools", base_url)
}

/// Whether the request asked for a streamed answer.
fn streamed(seen: &Seen) -> bool {
    seen.body["stream"].as_bool() == Some(true)
}

/// One SSE chunk of a chat completion.
fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1_700_000_000u32, "model": "fake-tools",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]
    })
}

/// The model asks for `calls` (id, function name, arguments text) in one
/// message: a JSON body, or SSE chunks when the request streams.
fn tool_call_reply(seen: &Seen, calls: &[(&str, &str, &str)]) -> Reply {
    if streamed(seen) {
        let pieces: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, (id, name, arguments))| {
                json!({"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
            })
            .collect();
        return Reply::Sse(vec![
            chunk(json!({"role": "assistant", "content": null, "tool_calls": pieces}), None),
            chunk(json!({}), Some("tool_calls")),
        ]);
    }
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, arguments)| {
            json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
        })
        .collect();
    let body = json!({
        "id": "chatcmpl-tools",
        "object": "chat.completion",
        "created": 1_700_000_000u32,
        "model": "fake-tools",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": tool_calls},
            "finish_reason": "tool_calls",
            "logprobs": null
        }],
        "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    });
    Reply::Body { status: 200, headers: vec![], body: body.to_string() }
}

/// The model answers `text`: a JSON body, or SSE chunks when the request
/// streams.
fn text_reply(seen: &Seen, text: &str) -> Reply {
    if streamed(seen) {
        return Reply::Sse(vec![
            chunk(json!({"role": "assistant", "content": text}), None),
            chunk(json!({}), Some("stop")),
        ]);
    }
    completion(text, "fake-tools", Some((30, 5)))
}

/// A message's content as text (a string, or the text of its parts).
fn content(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

/// The messages of a request to the model.
fn messages(seen: &Seen) -> Vec<Value> {
    seen.body["messages"].as_array().cloned().unwrap_or_default()
}

/// The `tool` messages of a request, in order.
fn tool_messages(seen: &Seen) -> Vec<Value> {
    messages(seen).into_iter().filter(|m| m["role"] == "tool").collect()
}

/// The names of the functions a request offers.
fn offered(seen: &Seen) -> Vec<String> {
    seen.body["tools"]
        .as_array()
        .map(|tools| {
            tools.iter().filter_map(|t| t["function"]["name"].as_str().map(str::to_string)).collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_agent_answers_through_a_real_mcp_server_configured_in_files() {
    let Some(e) = everything() else { return };
    let dir = calc_copy(&["mcp:everything"], "");
    let mut t = start_in(dir.path(), &everything_extra(&e), |_| {}).await;

    let request = AskRequest { query: SUM_QUESTION.into(), ..Default::default() };
    let a = t.client.ask(request.clone()).await.unwrap().into_inner();
    assert!(a.answer.contains(SUM_ANSWER), "the server's own text is the answer: {a:?}");
    let tool = a.steps.iter().position(|s| s.kind == "tool" && s.agent == GET_SUM);
    let Some(tool) = tool else { panic!("no {GET_SUM} tool step: {:?}", a.steps) };
    let summary = &a.steps[tool].summary;
    assert!(summary.contains("calc called get-sum(args sha256:"), "{summary}");
    assert!(summary.contains(": ok"), "{summary}");
    let calc = a.steps.iter().position(|s| s.agent == "calc").expect("the calculator's own step");
    assert!(tool < calc, "the tool step comes before its caller's: {:?}", a.steps);
    assert_eq!(a.steps[calc].kind, "llm");

    let d = t.client.describe_mesh(DescribeMeshRequest {}).await.unwrap().into_inner();
    let server = d.mcp_servers.iter().find(|s| s.name == "everything");
    let Some(server) = server else { panic!("no `everything` server: {:?}", d.mcp_servers) };
    assert_eq!(server.transport, "stdio");
    let names: Vec<&str> = server.tools.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"echo") && names.contains(&"get-sum"), "{names:?}");
    let agent = d.agents.iter().find(|a| a.name == "calc").expect("the calculator in DescribeMesh");
    assert_eq!(agent.tools, vec!["mcp:everything".to_string()]);

    let mut stream = t.client.ask_stream(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event.event.unwrap());
    }
    let last = events.len() - 1;
    let Some(Event::Final(last_answer)) = events.last() else { panic!("no final answer: {events:?}") };
    assert!(last_answer.answer.contains(SUM_ANSWER), "{last_answer:?}");
    let started = events
        .iter()
        .position(|ev| matches!(ev, Event::StepStarted(s) if s.kind == "tool" && s.agent == GET_SUM));
    let finished = events.iter().position(|ev| {
        matches!(ev, Event::StepFinished(f) if f.step.as_ref().is_some_and(|s| s.kind == "tool" && s.agent == GET_SUM))
    });
    let (Some(started), Some(finished)) = (started, finished) else {
        panic!("the tool call's start and finish events: {events:?}")
    };
    assert!(started < finished && finished < last, "start {started}, finish {finished}, final {last}");
    if let Event::StepFinished(f) = &events[finished] {
        let step = f.step.as_ref().unwrap();
        assert!(step.summary.contains("calc called get-sum(args sha256:"), "{}", step.summary);
    }
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_asks_for_a_tool_and_its_next_request_carries_the_servers_reply() {
    let Some(e) = everything() else { return };
    const ANSWER: &str = "The server said: Echo: hello mesh";
    let fake = FakeOpenAi::start(|i, seen| match i {
        0 => tool_call_reply(seen, &[("call_1", "echo", r#"{"message":"hello mesh"}"#)]),
        _ => text_reply(seen, ANSWER),
    })
    .await;
    let dir = calc_copy(&["mcp:everything"], "");
    let mut t = start_in(dir.path(), &everything_extra(&e), on_remote(fake.base_url())).await;

    let request = AskRequest { query: "Say hello to the mesh.".into(), ..Default::default() };
    let a = t.client.ask(request).await.unwrap().into_inner();
    assert_eq!(a.answer, ANSWER);

    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "one call asks for the tool, the next answers: {seen:?}");
    let tools = offered(&seen[0]);
    assert!(tools.iter().any(|t| t == "echo") && tools.iter().any(|t| t == "get-sum"), "{tools:?}");
    let all_functions = seen[0].body["tools"].as_array().unwrap().iter().all(|t| t["type"] == "function");
    assert!(all_functions, "{}", seen[0].body["tools"]);

    let sent = messages(&seen[1]);
    let asked = sent.iter().find(|m| m["role"] == "assistant" && m["tool_calls"][0]["id"] == "call_1");
    let Some(asked) = asked else { panic!("no assistant message with the tool call: {sent:?}") };
    assert_eq!(asked["tool_calls"][0]["function"]["name"], "echo");
    let result = sent.iter().find(|m| m["role"] == "tool" && m["tool_call_id"] == "call_1");
    let Some(result) = result else { panic!("no tool message for call_1: {sent:?}") };
    assert!(content(result).contains("Echo: hello mesh"), "{result}");

    let step = a.steps.iter().find(|s| s.kind == "tool" && s.agent == "mcp:everything/echo");
    let Some(step) = step else { panic!("no echo tool step: {:?}", a.steps) };
    assert!(step.summary.contains("calc called echo(args sha256:"), "{}", step.summary);
    assert!(step.summary.contains(": ok"), "{}", step.summary);
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_failures_are_results_the_model_sees() {
    let Some(e) = everything() else { return };
    let fake = FakeOpenAi::start(|i, seen| match i {
        0 => tool_call_reply(
            seen,
            &[
                ("call_a", "echo", r#"{"message": "#),
                ("call_b", "no-such-tool", "{}"),
                ("call_c", "trigger-long-running-operation", r#"{"duration": 30, "steps": 1}"#),
            ],
        ),
        _ => text_reply(seen, "ok"),
    })
    .await;
    let dir = calc_copy(&["mcp:everything"], "tool_timeout_ms = 500\n");
    let mut t = start_in(dir.path(), &everything_extra(&e), on_remote(fake.base_url())).await;

    let request = AskRequest { query: "Try the tools.".into(), ..Default::default() };
    let a = t.client.ask(request).await.unwrap().into_inner();
    assert_eq!(a.answer, "ok", "failed tools do not fail the request");

    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let results = tool_messages(&seen[1]);
    let ids: Vec<&str> = results.iter().map(|m| m["tool_call_id"].as_str().unwrap_or("")).collect();
    assert_eq!(ids, ["call_a", "call_b", "call_c"], "one tool message per call, in call order");
    for (message, wanted) in results.iter().zip(["not valid JSON", "no tool `no-such-tool`", "500 ms"]) {
        let text = content(message);
        assert!(text.starts_with("error: "), "{text}");
        assert!(text.contains(wanted), "{wanted:?} in {text}");
    }

    let tool_steps: Vec<_> = a.steps.iter().filter(|s| s.kind == "tool").collect();
    assert_eq!(tool_steps.len(), 3, "{:?}", a.steps);
    for s in &tool_steps {
        assert!(s.summary.contains("error:"), "{}: {}", s.agent, s.summary);
    }
    t.server.shutdown().await.unwrap();
}

/// Whether process `pid` still runs (a zombie, killed but not yet
/// reaped, does not).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (comm) state …`: the state follows the last `)`.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// The pid the wrapper wrote, once the file holds one.
fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_restarted_and_the_call_still_answers() {
    let Some(e) = everything() else { return };
    let dir = calc_copy(&["mcp:everything"], "");
    // The server through a wrapper that writes its pid (exec keeps it).
    let pid_file = dir.path().join("everything.pid");
    let script = format!(
        "echo $$ > '{}'; exec '{}' '{}' stdio",
        pid_file.display(),
        e.node.display(),
        e.script.display()
    );
    let mut t = start_in(dir.path(), &mcp_extra("sh", &["-c", script.as_str()]), |_| {}).await;

    wait::wait_until("the MCP server's pid file", wait::PATIENCE, || read_pid(&pid_file).is_some());
    let pid = read_pid(&pid_file).unwrap();
    assert!(alive(pid), "the server {pid} runs");
    // SAFETY: kill(2) on the pid of the server this test's gateway started.
    let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(killed, 0, "kill({pid}) failed");
    wait::wait_until("the killed server to be gone", wait::PATIENCE, || !alive(pid));

    let request = AskRequest { query: SUM_QUESTION.into(), ..Default::default() };
    let a = t.client.ask(request).await.unwrap().into_inner();
    assert!(a.answer.contains(SUM_ANSWER), "the call still answers after the kill: {a:?}");
    let step = a.steps.iter().find(|s| s.kind == "tool" && s.agent == GET_SUM);
    let Some(step) = step else { panic!("no {GET_SUM} tool step: {:?}", a.steps) };
    assert!(step.summary.contains(": ok"), "{}", step.summary);
    let restarted = read_pid(&pid_file);
    assert!(restarted.is_some_and(|p| p != pid), "a new server was started: {restarted:?} after {pid}");
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_retrieval_are_tools_too_and_parallel_calls_answer_in_one_round() {
    // One model message asks for both calls; both answers go back in the
    // next request.
    let fake = FakeOpenAi::start(|i, seen| match i {
        0 => tool_call_reply(
            seen,
            &[
                ("call_h", "headline", r#"{"query": "Summarize the gateway"}"#),
                ("call_r", "retrieve", r#"{"query": "Which port does the gateway listen on?", "top_k": 2}"#),
            ],
        ),
        _ => text_reply(seen, "done"),
    })
    .await;
    let dir = calc_copy(&["retrieve", "agent:headline"], "");
    write(&dir.path().join("agents"), "headline.toml", HEADLINE_AGENT);
    write(&dir.path().join("prompts"), "headline.prompty", HEADLINE_PROMPT);
    let mut t = start_in(dir.path(), FLOWS, on_remote(fake.base_url())).await;

    let request = AskRequest { query: "Tell me about the gateway.".into(), ..Default::default() };
    let mut stream = t.client.ask_stream(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event.event.unwrap());
    }
    let Some(Event::Final(a)) = events.last() else { panic!("no final answer: {events:?}") };
    assert_eq!(a.answer, "done");

    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let tools = offered(&seen[0]);
    assert!(tools.iter().any(|t| t == "retrieve") && tools.iter().any(|t| t == "headline"), "{tools:?}");
    let results = tool_messages(&seen[1]);
    assert_eq!(results.len(), 2, "{results:?}");
    let of = |id: &str| {
        let found = results.iter().find(|m| m["tool_call_id"] == id);
        content(found.unwrap_or_else(|| panic!("no tool message for {id}: {results:?}")))
    };
    let passages = of("call_r");
    assert!(passages.contains("[1] ("), "numbered passages with their doc ids: {passages}");
    assert!(!passages.starts_with("error:"), "{passages}");
    let headline = of("call_h");
    assert!(!headline.trim().is_empty() && !headline.starts_with("error:"), "{headline:?}");

    for (agent, caller_called) in
        [("retrieve", "calc called retrieve("), ("agent:headline", "calc called headline(")]
    {
        let step = a.steps.iter().find(|s| s.kind == "tool" && s.agent == agent);
        let Some(step) = step else { panic!("no {agent} tool step: {:?}", a.steps) };
        assert!(step.summary.contains(caller_called) && step.summary.contains(": ok"), "{}", step.summary);
    }
    assert!(
        a.steps.iter().any(|s| s.agent == "headline" && s.kind == "llm"),
        "the called agent's own step: {:?}",
        a.steps
    );

    // Both calls of the one model message ran in that round, each with its
    // start and finish event on the stream.
    let order: Vec<String> = events
        .iter()
        .filter_map(|ev| match ev {
            Event::StepStarted(s) if s.kind == "tool" => Some(format!("start {}", s.agent)),
            Event::StepFinished(f) => {
                f.step.as_ref().filter(|s| s.kind == "tool").map(|s| format!("finish {}", s.agent))
            }
            _ => None,
        })
        .collect();
    assert_eq!(order.len(), 4, "{order:?}");
    for call in ["agent:headline", "retrieve"] {
        let started = order.iter().position(|e| e == &format!("start {call}"));
        let finished = order.iter().position(|e| e == &format!("finish {call}"));
        assert!(matches!((started, finished), (Some(a), Some(b)) if a < b), "{order:?}");
    }
    t.server.shutdown().await.unwrap();
}

#[test]
fn a_tool_that_names_an_unknown_server_or_agent_fails_validation_naming_the_file() {
    let dir = calc_copy(&["mcp:nowhere", "agent:ghost"], "");
    let err = load_errors(dir.path(), FLOWS);
    for wanted in ["no MCP server `nowhere`", "there is no agent `ghost`"] {
        let line = err.lines().find(|l| l.contains(wanted));
        let Some(line) = line else { panic!("{wanted:?} in:\n{err}") };
        assert!(line.contains("calc.toml") && line.contains("llm.tools"), "{line}");
    }
    // An agent no flow runs may name a server this configuration lacks (an
    // example's agent beside the `--config` that declares it); an unknown
    // agent is still an error.
    let err = load_errors(dir.path(), "");
    assert!(!err.contains("nowhere"), "{err}");
    assert!(err.contains("there is no agent `ghost`"), "{err}");
}
