//! What bounds a model that fails or hangs, over real HTTP to the
//! OpenAI-wire double: statuses a repeat cannot fix (400, 403, 404, 422)
//! are sent once and never handed to the fallback profile, and an agent's
//! `timeout_ms` ends its step while the model call, its retries and its
//! fallback are still to come.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::fake_openai::{FakeOpenAi, Reply, completion, error};
use meshops::config::{ModelProfile, Provider};
use meshops::gateway::Overrides;
use meshops::llm::{ChatMessage, LlmError, LlmRequest, ModelParams, Role, TaskHint, build_clients};
use meshops::proto::AskRequest;

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
            ChatMessage { role: Role::System, content: "Answer from the passages.".into() },
            ChatMessage { role: Role::User, content: "Which port does the gateway listen on?".into() },
        ],
        params: ModelParams::default(),
        hint: TaskHint::Freeform,
        response_schema: None,
    }
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
