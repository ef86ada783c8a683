//! The OpenAI-compatible HTTP API, driven by the official OpenAI Python SDK
//! (pinned in scripts/validators.txt) against a real gateway over a real
//! socket: the models list, a completion, a stream with usage, and errors
//! in OpenAI's shape (unknown model, bad key, bad request).

mod common;

use meshops::gateway::Overrides;
use serde_json::Value;

/// The client: each case prints one JSON line (`case`, and what the SDK
/// returned or raised).
const CLIENT: &str = r#"
import json, os, sys
import openai

base = os.environ["BASE_URL"]
client = openai.OpenAI(base_url=base, api_key=os.environ["KEY"], max_retries=0)
out = lambda **kw: print(json.dumps(kw), flush=True)

models = client.models.list()
out(case="models", ids=[m.id for m in models.data])

c = client.chat.completions.create(
    model="meshops",
    messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": "Which port does the gateway listen on?"}],
)
extra = c.model_extra.get("meshops") or {}
out(case="completion", id=c.id, content=c.choices[0].message.content, finish=c.choices[0].finish_reason,
    usage=c.usage.model_dump(), model=c.model, citations=len(extra.get("citations") or []),
    agents=[s["agent"] for s in extra.get("steps") or []], variant=extra.get("variant"))

stream = client.chat.completions.create(
    model="meshops:concise",
    messages=[{"role": "user", "content": "Which port does the gateway listen on?"}],
    stream=True, stream_options={"include_usage": True},
)
pieces, finish, usage, ext = [], None, None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
            ext = (chunk.model_extra or {}).get("meshops")
out(case="stream", text="".join(pieces), chunks=len(pieces), finish=finish, usage=usage,
    variant=(ext or {}).get("variant"))

for case, call in [
    ("unknown_model", lambda: client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])),
    ("empty_query", lambda: client.chat.completions.create(model="meshops", messages=[{"role": "user", "content": ""}])),
    ("bad_key", lambda: openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()),
]:
    try:
        call()
        out(case=case, raised=None)
    except openai.APIStatusError as e:
        out(case=case, raised=type(e).__name__, status=e.status_code, body=e.body)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_lists_models_gets_and_streams_answers_and_reads_errors() {
    if !common::require::require_python_module("openai", "the OpenAI SDK as the HTTP API's client") {
        return;
    }
    let overrides = Overrides { api_keys: Some(vec!["sk-test".into()]), ..Default::default() };
    let t =
        common::start(|spec| spec.settings.gateway.http_listen = Some("127.0.0.1:0".into()), overrides).await;
    let http = t.server.http_addr.expect("the HTTP API is served when http_listen is set");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .env("BASE_URL", format!("http://{http}/v1"))
        .env("KEY", "sk-test")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let cases: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let case =
        |name: &str| cases.iter().find(|c| c["case"] == name).unwrap_or_else(|| panic!("{name}: {stdout}"));

    let ids: Vec<&str> = case("models")["ids"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(ids, ["meshops", "meshops:concise", "meshops:no_critic"]);

    let c = case("completion");
    let content = c["content"].as_str().unwrap();
    assert!(content.contains("50051") && content.contains("[1]"), "{c}");
    assert_eq!((c["finish"].as_str(), c["model"].as_str()), (Some("stop"), Some("meshops")));
    assert!(c["citations"].as_u64().unwrap() >= 1, "{c}");
    assert_eq!(c["agents"], serde_json::json!(["router", "retriever", "summarizer", "critic"]));
    assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let usage = &c["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0 && usage["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap())
    );

    let s = case("stream");
    let text = s["text"].as_str().unwrap();
    assert!(text.contains("50051"), "{s}");
    assert!(s["chunks"].as_u64().unwrap() > 1, "the answer arrives in pieces: {s}");
    assert_eq!((s["finish"].as_str(), s["variant"].as_str()), (Some("stop"), Some("concise")));
    assert!(s["usage"]["total_tokens"].as_u64().unwrap() > 0, "include_usage: {s}");

    let e = case("unknown_model");
    assert_eq!((e["raised"].as_str(), e["status"].as_u64()), (Some("NotFoundError"), Some(404)), "{e}");
    assert_eq!(e["body"]["code"], "model_not_found", "{e}");
    assert!(
        e["body"]["message"].as_str().unwrap().contains("meshops:concise"),
        "names the known models: {e}"
    );
    let e = case("empty_query");
    assert_eq!((e["raised"].as_str(), e["status"].as_u64()), (Some("BadRequestError"), Some(400)), "{e}");
    let e = case("bad_key");
    assert_eq!((e["raised"].as_str(), e["status"].as_u64()), (Some("AuthenticationError"), Some(401)), "{e}");
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_key_gets_429_with_retry_after_and_bad_requests_get_openai_errors() {
    let overrides = Overrides { api_keys: Some(vec!["sk-test".into()]), ..Default::default() };
    let t = common::start(
        |spec| {
            spec.settings.gateway.http_listen = Some("127.0.0.1:0".into());
            spec.settings.gateway.rate_limit_rps = 0.001;
            spec.settings.gateway.rate_limit_burst = 1;
        },
        overrides,
    )
    .await;
    let http = t.server.http_addr.unwrap();
    // reqwest is built without a default TLS provider; plain HTTP needs
    // none, but the client must have one to be built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let post = || {
        client
            .post(format!("http://{http}/v1/chat/completions"))
            .bearer_auth("sk-test")
            .body(r#"{"model": "meshops", "messages": [{"role": "user", "content": "hello"}]}"#)
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = post().await.unwrap();
    assert_eq!(second.status(), 429);
    let retry: u64 = second.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
    let body: Value = serde_json::from_str(&second.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("gateway.rate_limit_rps"), "{body}");

    let missing = client.get(format!("http://{http}/v1/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let bad = client
        .post(format!("http://{http}/v1/chat/completions"))
        .bearer_auth("sk-test")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    t.server.shutdown().await.unwrap();
}

/// OpenAI's `user` names an end user, not a conversation: two chats of one
/// user are not joined into one mesh conversation (the second carries no
/// history of the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_chats_are_not_one_conversation() {
    let t = common::start(
        |spec| spec.settings.gateway.http_listen = Some("127.0.0.1:0".into()),
        Overrides::default(),
    )
    .await;
    let http = t.server.http_addr.unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let mut routers = Vec::new();
    for question in ["Which port does the gateway listen on?", "What does the critic agent do?"] {
        let body = serde_json::json!({"model": "meshops", "user": "alice", "messages": [{"role": "user", "content": question}]});
        let response = client
            .post(format!("http://{http}/v1/chat/completions"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        let steps = answer["meshops"]["steps"].as_array().cloned().unwrap_or_default();
        let router = steps.iter().find(|s| s["kind"] == "router").cloned().unwrap_or_default();
        routers.push(router["summary"].as_str().unwrap_or_default().to_string());
    }
    assert!(routers.iter().all(|r| !r.is_empty() && !r.contains("(conversation:")), "{routers:?}");
    t.server.shutdown().await.unwrap();
}
