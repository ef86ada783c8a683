//! What bounds a model that fails or hangs, over real HTTP to the
//! OpenAI-wire double: 429 with `Retry-After` and 5xx are retried,
//! statuses a repeat cannot fix (400, 401, 403, 404, 422, an exhausted
//! quota, malformed JSON, a stream broken after deltas) are sent once and
//! never handed to the fallback profile, a profile that stays down falls
//! back, per-call timeouts count as attempts, and an agent's `timeout_ms`
//! ends its step while the model call, its retries and its fallback are
//! still to come.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::fake_openai::{FakeOpenAi, Reply, completion, error};
use meshops::config::{ModelProfile, Provider};
use meshops::gateway::Overrides;
use meshops::llm::{
    ChatMessage, LlmError, LlmRequest, ModelParams, Role, SharedLlm, TaskHint, build_client, build_clients,
};
use meshops::proto::AskRequest;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A profile on the double, with no API key (the double asks for none),
/// two retries and a per-call timeout of `timeout_ms`.
fn remote(base_url: &str, model: &str, timeout_ms: u64) -> ModelProfile {
    ModelProfile {
        provider: Provider::OpenaiCompatible,
        model: model.into(),
        base_url: Some(base_url.into()),
        api_key_env: None,
        timeout_ms: Some(timeout_ms),
        max_retries: Some(2),
        input_price_per_mtok: None,
        output_price_per_mtok: None,
        ..ModelProfile::offline()
    }
}

fn request() -> LlmRequest {
    LlmRequest {
        agent: "summarizer".into(),
        messages: vec![
            ChatMessage::new(Role::System, "Answer from the passages."),
            ChatMessage::new(Role::User, "Which port does the gateway listen on?"),
        ],
        params: ModelParams::default(),
        hint: TaskHint::Freeform,
        response_schema: None,
        tools: Default::default(),
    }
}

fn client(name: &str, p: &ModelProfile) -> SharedLlm {
    match build_client(name, p) {
        Ok(c) => c,
        Err(e) => panic!("client for {name}: {e}"),
    }
}

fn chunk(model: &str, delta: Option<&str>, finish: Option<&str>) -> Value {
    let mut d = json!({});
    if let Some(t) = delta {
        d = json!({"role": "assistant", "content": t});
    }
    json!({
        "id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1_700_000_000u32, "model": model,
        "choices": [{"index": 0, "delta": d, "finish_reason": finish, "logprobs": null}]
    })
}

/// Waits until `done` holds; the deadline only turns a hang into a failure.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn rate_limit_with_retry_after_then_success_takes_two_attempts() {
    let server = FakeOpenAi::start(|i, _| match i {
        0 => error(429, "Rate limit reached", &[("Retry-After", "1")]),
        _ => completion("ok", "m", Some((5, 1))),
    })
    .await;
    let resp =
        client("limited", &remote(&server.base_url(), "m", 5_000)).complete(&request(), None).await.unwrap();
    assert_eq!(resp.text, "ok");
    assert_eq!(resp.attempts, 2);
    assert_eq!(resp.failed_attempts, vec!["http_429".to_string()]);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn exhausted_quota_is_not_retried() {
    let server = FakeOpenAi::start(|_, _| Reply::Body {
        status: 429,
        headers: vec![],
        body: json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
            "param": null, "code": "insufficient_quota"}})
        .to_string(),
    })
    .await;
    let err = client("broke", &remote(&server.base_url(), "m", 5_000))
        .complete(&request(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Rejected { .. }), "{err:?}");
    assert!(err.to_string().contains("quota exhausted"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let server = FakeOpenAi::start(|i, _| match i {
        0 => Reply::Body { status: 500, headers: vec![], body: "upstream exploded".into() },
        _ => completion("recovered", "m", Some((5, 1))),
    })
    .await;
    let resp =
        client("flaky", &remote(&server.base_url(), "m", 5_000)).complete(&request(), None).await.unwrap();
    assert_eq!(resp.text, "recovered");
    assert_eq!(resp.attempts, 2);
    assert_eq!(resp.failed_attempts, vec!["http_500".to_string()]);
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_names_the_profile() {
    let server = FakeOpenAi::start(|_, _| error(401, "Incorrect API key provided", &[])).await;
    let err = client("prod-gpt", &remote(&server.base_url(), "m", 5_000))
        .complete(&request(), None)
        .await
        .unwrap_err();
    let LlmError::Status { code, ref message, .. } = err else {
        panic!("expected a status error, got {err:?}")
    };
    assert_eq!(code, 401);
    assert!(message.contains("profile `prod-gpt`"), "{message}");
    assert!(message.contains("Incorrect API key provided"), "{message}");
    assert_eq!(server.requests().len(), 1, "401 must not be retried");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn malformed_json_is_a_clear_bad_response() {
    let server = FakeOpenAi::start(|_, _| Reply::Body {
        status: 200,
        headers: vec![],
        body: "{\"id\": \"x\", \"choices\": [".into(),
    })
    .await;
    let err = client("broken", &remote(&server.base_url(), "m", 5_000))
        .complete(&request(), None)
        .await
        .unwrap_err();
    let LlmError::BadResponse { ref message, .. } = err else { panic!("expected BadResponse, got {err:?}") };
    assert!(message.contains("malformed JSON"), "{message}");
    assert!(message.contains("profile `broken`"), "{message}");
    assert_eq!(server.requests().len(), 1, "an unusable answer is not retried");
}

#[tokio::test]
async fn slower_than_the_timeout_times_out_after_the_configured_attempts() {
    let server = FakeOpenAi::start(|_, _| {
        Reply::Slow(Duration::from_secs(3), Box::new(completion("too late", "m", Some((1, 1)))))
    })
    .await;
    let mut p = remote(&server.base_url(), "m", 5_000);
    p.timeout_ms = Some(200);
    p.max_retries = Some(1);
    let err = client("slow", &p).complete(&request(), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout { timeout_ms: 200, .. }), "{err:?}");
    assert_eq!(server.requests().len(), 2, "one call and one retry");
}

#[tokio::test]
async fn a_stream_that_breaks_after_deltas_is_not_retried() {
    let server =
        FakeOpenAi::start(|_, _| Reply::SseBroken(vec![chunk("m", Some("The gateway"), None)])).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let err = client("cut", &remote(&server.base_url(), "m", 5_000))
        .complete(&request(), Some(tx))
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Unavailable { .. }), "{err:?}");
    // A retry would send the caller "The gateway" a second time.
    assert_eq!(server.requests().len(), 1);
    assert_eq!(rx.try_recv().ok().as_deref(), Some("The gateway"));
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn connection_errors_are_retried_then_the_offline_fallback_answers() {
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let mut down = remote(&format!("https://{closed}/v1"), "m", 5_000);
    down.max_retries = Some(1);
    down.fallback = Some("offline".into());
    let profiles =
        BTreeMap::from([("remote".to_string(), down), ("offline".to_string(), ModelProfile::offline())]);
    let clients = build_clients(&profiles, &Default::default()).unwrap();
    let mut req = request();
    req.hint = TaskHint::Route {
        query: "hello".into(),
        intents: vec![meshops::llm::IntentChoice {
            name: "greeting".into(),
            description: "hello, hi".into(),
            examples: vec!["hello".into()],
            min_similarity: 0.0,
        }]
        .into(),
        default_intent: "greeting".into(),
    };
    let resp = clients["remote"].complete(&req, None).await.unwrap();
    assert_eq!(resp.model, meshops::llm::offline::OFFLINE_MODEL);
    assert_eq!(resp.attempts, 3);
    assert_eq!(resp.failed_attempts, vec!["unavailable".to_string(), "unavailable".to_string()]);
}

#[tokio::test]
async fn a_profile_that_stays_down_falls_back_to_its_fallback() {
    let server = FakeOpenAi::start(|_, seen| match seen.body["model"].as_str() {
        Some("primary") => error(503, "overloaded", &[]),
        _ => completion("from the backup", "backup", Some((3, 2))),
    })
    .await;
    let mut primary = remote(&server.base_url(), "primary", 5_000);
    primary.max_retries = Some(1);
    primary.fallback = Some("backup".into());
    let profiles = BTreeMap::from([
        ("primary".to_string(), primary),
        ("backup".to_string(), remote(&server.base_url(), "backup", 5_000)),
    ]);
    let clients = build_clients(&profiles, &Default::default()).unwrap();
    let resp = clients["primary"].complete(&request(), None).await.unwrap();
    assert_eq!(resp.text, "from the backup");
    assert_eq!(resp.model, "backup");
    assert_eq!(resp.attempts, 3, "two calls to the primary, one to the backup");
    assert_eq!(resp.failed_attempts, vec!["http_503".to_string(), "http_503".to_string()]);
    let models: Vec<String> =
        server.requests().iter().map(|r| r.body["model"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(models, vec!["primary", "primary", "backup"]);
}

#[tokio::test]
async fn client_errors_from_the_model_are_sent_once_and_never_to_the_fallback() {
    for code in [400u16, 403, 404, 422] {
        let primary = FakeOpenAi::start(move |_, _| error(code, "not this request", &[])).await;
        let backup = FakeOpenAi::start(|_, _| completion("from the backup", "backup", Some((1, 1)))).await;
        let mut p = remote(&primary.base_url(), "primary", 5_000);
        p.fallback = Some("backup".into());
        let profiles = BTreeMap::from([
            ("primary".to_string(), p),
            ("backup".to_string(), remote(&backup.base_url(), "backup", 5_000)),
        ]);
        let clients = build_clients(&profiles, &Default::default()).unwrap();
        let err = clients["primary"].complete(&request(), None).await.unwrap_err();
        let LlmError::Status { code: got, ref message, .. } = err else {
            panic!("HTTP {code}: expected a status error, got {err:?}")
        };
        assert_eq!(got, code);
        assert!(message.contains("profile `primary`") && message.contains("not this request"), "{message}");
        assert!(!err.is_transient(), "HTTP {code}");
        assert_eq!(primary.requests().len(), 1, "HTTP {code} must be sent once, with no retry");
        assert_eq!(backup.requests().len(), 0, "HTTP {code} must not go to the fallback");
    }
}

/// The summarizer's model never answers (its per-call timeout is a minute,
/// with two retries and a fallback after them); the agent's `timeout_ms`
/// fails the step first, as `UNAVAILABLE` naming the agent and its bound,
/// with one call started and neither a retry nor the fallback reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_timeout_bounds_its_model_calls_retries_and_fallback() {
    // Never opened while the test runs: the double holds every answer.
    let (gate, held) = tokio::sync::watch::channel(false);
    let primary = FakeOpenAi::start(move |_, _| {
        Reply::Held(held.clone(), Box::new(completion("too late", "hung", Some((1, 1)))))
    })
    .await;
    let backup = FakeOpenAi::start(|_, _| completion("from the backup", "backup", Some((1, 1)))).await;
    let (primary_url, backup_url) = (primary.base_url(), backup.base_url());
    let mut t = common::start(
        move |spec| {
            let mut hung = remote(&primary_url, "hung", 60_000);
            hung.fallback = Some("backup".into());
            spec.settings.models.insert("hung".into(), hung);
            spec.settings.models.insert("backup".into(), remote(&backup_url, "backup", 60_000));
            let summarizer = spec.agents.get_mut("summarizer").unwrap();
            summarizer.timeout_ms = 1_000;
            summarizer.base.model = Some("hung".into());
            for v in summarizer.variants.values_mut() {
                v.model = Some("hung".into());
            }
        },
        Overrides::default(),
    )
    .await;
    let err = t
        .client
        .ask(AskRequest { query: "Which port does the gateway listen on?".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("summarizer") && err.message().contains("1000 ms"),
        "the agent's bound, not the model's: {}",
        err.message()
    );
    // The one call may still be on its way to the double; nothing follows it.
    wait_until("the summarizer's call reaches the model", || !primary.requests().is_empty()).await;
    assert_eq!(primary.requests().len(), 1, "no retry within the agent's timeout");
    assert_eq!(backup.requests().len(), 0, "no fallback within the agent's timeout");
    drop(gate);
    t.server.shutdown().await.unwrap();
}

/// A provider's error body and its URL stay in the gateway's log: the
/// caller gets the agent, the profile and the HTTP status or failure kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_error_bodies_and_urls_do_not_reach_the_caller() {
    let server =
        FakeOpenAi::start(|_, _| error(401, "secret-internal-detail: key sk-live-123 rejected", &[])).await;
    let base_url = server.base_url();
    let mut t = common::start(
        {
            let base_url = base_url.clone();
            move |spec| common::on_remote_model(spec, "summarizer", "gpt-x", base_url)
        },
        Overrides::default(),
    )
    .await;
    let ask = AskRequest { query: "Which port does the gateway listen on?".into(), ..Default::default() };
    let err = t.client.ask(ask.clone()).await.unwrap_err();
    let message = err.message();
    assert!(
        message.contains("agent `summarizer` (model profile `remote`)") && message.contains("HTTP 401"),
        "{message}"
    );
    assert!(!message.contains("secret-internal-detail") && !message.contains("sk-live"), "{message}");
    assert!(!message.contains(&server.addr.to_string()), "{message}");
    t.server.shutdown().await.unwrap();

    // Nothing listens there: the connection error names the URL, which the
    // caller does not see either.
    let unreachable = "http://127.0.0.1:9/v1".to_string();
    let mut t = common::start(
        move |spec| common::on_remote_model(spec, "summarizer", "gpt-x", unreachable),
        Overrides::default(),
    )
    .await;
    let err = t.client.ask(ask).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("the model call failed (unavailable)"), "{}", err.message());
    assert!(!err.message().contains("127.0.0.1:9"), "{}", err.message());
    t.server.shutdown().await.unwrap();
}
